/* SPDX-License-Identifier: MIT */
/*
 * pmu_discover: host PMU discovery.
 *
 * The kernel is the judge of whether a PMU is usable: it registers the core
 * PMU as /sys/bus/event_source/devices/cpu only when its probe of the
 * counters succeeded. Under a hypervisor CPUID may still describe counters
 * the hypervisor does not back, so CPUID alone never makes a PMU: without
 * the sysfs device the answer is PMU_SOURCE_NONE. CPUID then only supplies
 * the layout (sysfs does not publish counter counts).
 *
 * sysfs layout: facts file section 8 (caps/ is documented ABI since 5.19,
 * Documentation/ABI/testing/sysfs-bus-event_source-devices-caps); topology
 * files: Documentation/ABI/stable/sysfs-devices-system-cpu.
 */
#include "pmu/pmu_discover.h"

#include <cpuid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/cleanup.h"
#include "proto/cpulist.h"
#include "proto/fileio.h"

#define MSR_IA32_PERF_CAPABILITIES 0x345

int pmu_discover_read_host_cpuid(struct pmu_host_cpuid *out)
{
	unsigned a, b, c, d;

	memset(out, 0, sizeof(*out));
	if (!__get_cpuid_count(0, 0, &a, &b, &c, &d))
		return -ENOTSUP;
	out->max_leaf = a;
	/* The vendor string is EBX, EDX, ECX in that order. */
	memcpy(out->vendor, &b, 4);
	memcpy(out->vendor + 4, &d, 4);
	memcpy(out->vendor + 8, &c, 4);
	out->vendor[12] = '\0';
	if (out->max_leaf >= 1)
		__get_cpuid_count(1, 0, &out->leaf1.eax, &out->leaf1.ebx, &out->leaf1.ecx,
				  &out->leaf1.edx);
	if (out->max_leaf >= 0xa)
		__get_cpuid_count(0xa, 0, &out->leaf0a.eax, &out->leaf0a.ebx, &out->leaf0a.ecx,
				  &out->leaf0a.edx);
	if (__get_cpuid_count(0x80000000, 0, &a, &b, &c, &d))
		out->max_ext_leaf = a;
	if (out->max_ext_leaf >= 0x80000001)
		__get_cpuid_count(0x80000001, 0, &out->ext80000001.eax, &out->ext80000001.ebx,
				  &out->ext80000001.ecx, &out->ext80000001.edx);
	if (out->max_ext_leaf >= 0x80000022)
		__get_cpuid_count(0x80000022, 0, &out->ext80000022.eax, &out->ext80000022.ebx,
				  &out->ext80000022.ecx, &out->ext80000022.edx);
	return 0;
}

/* root + "/" + rel in a malloc'd string; NULL on ENOMEM. */
static char *path_of(const char *root, const char *rel)
{
	size_t rl = strlen(root);

	while (rl > 0 && root[rl - 1] == '/')
		rl--;
	return alloc_printf("%.*s/%s", (int)rl, root, rel);
}

/* Longest sysfs/procfs text read here: a CPU list of every other CPU of
 * PMU_MAX_CPUS fits many times over. */
#define SMALL_FILE_MAX (64 * 1024)

/* Reads a small sysfs/procfs file into a malloc'd string, trailing
 * newlines and blanks removed. -EFBIG beyond SMALL_FILE_MAX. */
static int read_text(const char *root, const char *rel, char **out)
{
	_cleanup_free_ char *path = path_of(root, rel), *buf = NULL;
	size_t got = 0;

	if (!path)
		return -ENOMEM;
	int r = fileio_read_all(AT_FDCWD, path, SMALL_FILE_MAX, 0, &buf, &got);
	if (r < 0)
		return r;
	while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' '))
		got--;
	buf[got] = '\0';
	*out = TAKE_PTR(buf);
	return 0;
}

static int read_int(const char *root, const char *rel, long *out)
{
	_cleanup_free_ char *buf = NULL;
	char *end;
	int rc = read_text(root, rel, &buf);

	if (rc)
		return rc;
	errno = 0;
	*out = strtol(buf, &end, 10);
	if (buf[0] == '\0' || *end != '\0' || errno == ERANGE)
		return -EINVAL;
	return 0;
}

static bool exists(const char *root, const char *rel)
{
	_cleanup_free_ char *path = path_of(root, rel);
	struct stat st;

	return path && stat(path, &st) == 0;
}

#define EVENT_SOURCE "sys/bus/event_source/devices"

/* The PMU names present, for the "why" of a host without a core PMU, in a
 * malloc'd string; NULL on ENOMEM. */
static char *event_sources(const char *root)
{
	_cleanup_free_ char *path = path_of(root, EVENT_SOURCE), *list = strdup("");
	struct dirent **ents = NULL;
	int n;

	if (!path || !list)
		return NULL;
	n = scandir(path, &ents, NULL, alphasort);
	if (n < 0)
		return strdup("directory missing");
	for (int i = 0; i < n; i++) {
		if (list && ents[i]->d_name[0] != '.') {
			char *longer = alloc_printf("%s%s%s", list, list[0] ? ", " : "", ents[i]->d_name);

			free(list);
			list = longer;
		}
		free(ents[i]);
	}
	free(ents);
	if (list && !list[0]) {
		free(list);
		return strdup("empty");
	}
	return TAKE_PTR(list);
}

/* Gives SMT siblings one core id, dense from 0 in CPU order: the lowest
 * CPU of thread_siblings_list identifies a core, because core_id alone
 * repeats across packages (and dies). */
static int read_topology(const char *root, struct pmu_desc *out, char *why, size_t whylen)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ long *core_keys = NULL;
	struct cpulist online, siblings;
	unsigned n, n_cores = 0;
	int rc;

	rc = read_text(root, "sys/devices/system/cpu/online", &buf);
	if (rc) {
		snprintf(why, whylen, "cannot read %s/sys/devices/system/cpu/online: %s", root,
			 strerror(-rc));
		return rc;
	}
	core_keys = calloc(PMU_MAX_CPUS, sizeof(long));
	if (!core_keys)
		return -ENOMEM;
	rc = cpulist_parse(buf, PMU_MAX_CPUS, &online);
	if (rc) {
		snprintf(why, whylen, "cannot parse the online CPU list \"%.64s\"%s", buf,
			 rc == -ERANGE ? ": more CPUs than supported" : "");
		return rc;
	}
	n = 0;
	for (int cpu = cpulist_next(&online, -1); cpu >= 0; cpu = cpulist_next(&online, cpu), n++) {
		/* "sys/devices/system/cpu/cpuNNNN/topology/physical_package_id" */
		char rel[128];
		_cleanup_free_ char *sib = NULL;
		long pkg = 0, core_id = 0, key;

		snprintf(rel, sizeof(rel), "sys/devices/system/cpu/cpu%d/topology/physical_package_id",
			 cpu);
		if (read_int(root, rel, &pkg))
			pkg = 0;
		snprintf(rel, sizeof(rel), "sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
		if (read_int(root, rel, &core_id))
			core_id = cpu;
		snprintf(rel, sizeof(rel), "sys/devices/system/cpu/cpu%d/topology/thread_siblings_list",
			 cpu);
		/* The first (lowest) sibling names the core. */
		if (read_text(root, rel, &sib) == 0 &&
		    cpulist_parse(sib, PMU_MAX_CPUS, &siblings) == 0 && !cpulist_empty(&siblings))
			key = cpulist_next(&siblings, -1);
		else
			key = -1 - (pkg * 65536 + core_id); /* disjoint from CPU numbers */

		unsigned core = n_cores;
		for (unsigned k = 0; k < n_cores; k++) {
			if (core_keys[k] == key) {
				core = k;
				break;
			}
		}
		if (core == n_cores)
			core_keys[n_cores++] = key;
		out->cpus[n].cpu = cpu;
		out->cpus[n].core = (int)core;
		out->cpus[n].package = (int)pkg;
	}
	out->n_cpus = n;
	return 0;
}

static void read_caps(const char *root, struct pmu_desc *out)
{
	_cleanup_free_ char *name = NULL;
	long v;

	/* a longer name is cut to what the description holds */
	if (read_text(root, EVENT_SOURCE "/cpu/caps/pmu_name", &name) == 0)
		snprintf(out->pmu_name, sizeof(out->pmu_name), "%s", name);
	if (read_int(root, EVENT_SOURCE "/cpu/caps/max_precise", &v) == 0 && v >= 0 && v <= 3)
		out->max_precise = (int)v;
	if (read_int(root, EVENT_SOURCE "/cpu/caps/branches", &v) == 0 && v > 0 && v <= 1024)
		out->lbr_depth = (unsigned)v;
}

static int read_msr(const char *path, uint32_t msr, uint64_t *val)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, val, sizeof(*val), msr);
	if (n != (ssize_t)sizeof(*val))
		return n < 0 ? -errno : -EIO;
	return 0;
}

static bool is_intel_like(const char *vendor)
{
	return strcmp(vendor, "GenuineIntel") == 0;
}

static bool is_amd_like(const char *vendor)
{
	/* Hygon's Dhyana is a Zen derivative driven by the same perf code. */
	return strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0;
}

static void describe_cpuid(const struct pmu_host_cpuid *c, char *buf, size_t len)
{
	bool hv = c->leaf1.ecx & (1u << 31);

	if (is_amd_like(c->vendor))
		snprintf(buf, len, "CPUID: %s family 0x%x, perfctr_core %s, PerfMonV2 %s%s", c->vendor,
			 pmu_cpuid_family(c->leaf1.eax),
			 (c->ext80000001.ecx & (1u << 23)) ? "set" : "clear",
			 (c->ext80000022.eax & 1u) ? "set" : "clear",
			 hv ? ", running under a hypervisor" : "");
	else
		snprintf(buf, len, "CPUID: %s, leaf 0xA version %u with %u counters%s", c->vendor,
			 c->leaf0a.eax & 0xff, (c->leaf0a.eax >> 8) & 0xff,
			 hv ? ", running under a hypervisor" : "");
}

static int decode_cpuid(const struct pmu_host_cpuid *c, struct pmu_desc *out)
{
	if (is_intel_like(c->vendor)) {
		if (c->max_leaf < 0xa)
			return -ENODEV;
		return pmu_decode_intel_0a(&c->leaf0a, out);
	}
	if (is_amd_like(c->vendor))
		return pmu_decode_amd(c->max_ext_leaf >= 0x80000001 ? &c->ext80000001 : NULL,
				      c->max_ext_leaf >= 0x80000022 ? &c->ext80000022 : NULL,
				      pmu_cpuid_family(c->leaf1.eax), out);
	return -EOPNOTSUPP;
}

/* PERF_CAPABILITIES, where it exists (CPUID.1:ECX.PDCM) and can be read. When
 * it cannot, perf metrics are still visible through sysfs: only PMUs with
 * PERF_METRICS publish the topdown-retiring event (the pre-Ice Lake topdown
 * events have other names); PEBS and full-width writes stay unclaimed. */
static void apply_capabilities(const struct pmu_discover_opts *opts, const struct pmu_host_cpuid *c,
			       struct pmu_desc *out, char *note, size_t notelen)
{
	uint64_t caps;
	int rc;

	note[0] = '\0';
	if (out->vendor != PMU_VENDOR_INTEL)
		return;
	if (!(c->leaf1.ecx & (1u << 15))) {
		snprintf(note, notelen, "no PERF_CAPABILITIES MSR (CPUID.1:ECX.PDCM clear)");
		return;
	}
	rc = opts->msr_path ? read_msr(opts->msr_path, MSR_IA32_PERF_CAPABILITIES, &caps) : -ENOENT;
	if (rc == 0) {
		pmu_apply_perf_capabilities(caps, out);
		if (!(c->leaf1.edx & (1u << 21))) /* no DS area, no PEBS */
			out->pebs_format = -1;
		return;
	}
	out->perf_metrics = exists(opts->sysfs_root, EVENT_SOURCE "/cpu/events/topdown-retiring");
	snprintf(note, notelen, "PERF_CAPABILITIES not read (%s%s%s): PEBS and full-width writes unknown, perf metrics inferred from sysfs",
		 opts->msr_path ? opts->msr_path : "no MSR device given",
		 opts->msr_path ? ": " : "", opts->msr_path ? strerror(-rc) : "");
}

int pmu_discover_host(const struct pmu_discover_opts *opts, struct pmu_desc *out,
		      char *why, size_t whylen)
{
	const char *sroot = opts->sysfs_root ? opts->sysfs_root : "/";
	const char *proot = opts->procfs_root ? opts->procfs_root : "/";
	struct pmu_discover_opts o = *opts;
	struct pmu_host_cpuid cpuid;
	const struct pmu_host_cpuid *c = NULL;
	/* vendor (12 characters) and a few numbers */
	char cpuid_text[192] = "CPUID not read";
	long wd;
	int rc;

	o.sysfs_root = sroot;
	why[0] = '\0';
	pmu_desc_init(out);
	snprintf(out->model, sizeof(out->model), "host");
	out->source = PMU_SOURCE_NONE;

	rc = read_topology(sroot, out, why, whylen);
	if (rc)
		return rc;
	/* The hard-lockup detector holds a counter on every CPU only while it
	 * is enabled; a missing file means a kernel built without it. */
	out->nmi_watchdog = read_int(proot, "proc/sys/kernel/nmi_watchdog", &wd) == 0 && wd != 0;

	if (opts->use_cpuid) {
		if (pmu_discover_read_host_cpuid(&cpuid) == 0)
			c = &cpuid;
	} else {
		c = opts->cpuid;
	}
	if (c) {
		describe_cpuid(c, cpuid_text, sizeof(cpuid_text));
		if (is_intel_like(c->vendor))
			out->vendor = PMU_VENDOR_INTEL;
		else if (is_amd_like(c->vendor))
			out->vendor = PMU_VENDOR_AMD;
	}

	if (!exists(sroot, EVENT_SOURCE "/cpu")) {
		_cleanup_free_ char *found = NULL;

		if (exists(sroot, EVENT_SOURCE "/cpu_core") || exists(sroot, EVENT_SOURCE "/cpu_atom")) {
			snprintf(why, whylen, "hybrid PMU (cpu_core/cpu_atom): core types with different counters are not supported, and KVM disables its vPMU on hybrid hosts; %s",
				 cpuid_text);
			return 0;
		}
		found = event_sources(sroot);
		snprintf(why, whylen, "the kernel registered no core PMU (no \"cpu\" in %s/%s; found: %s), so hardware perf events cannot be opened; %s",
			 strcmp(sroot, "/") ? sroot : "", EVENT_SOURCE, found ? found : "?", cpuid_text);
		return 0;
	}
	if (!c) {
		snprintf(why, whylen, "sysfs shows a core PMU but CPUID was not read, so its counters are unknown");
		return -ENODATA;
	}
	rc = decode_cpuid(c, out);
	if (rc) {
		snprintf(why, whylen, "sysfs shows a core PMU but CPUID does not describe one the daemon can use (%s): %s",
			 strerror(-rc), cpuid_text);
		out->num_gp = 0;
		out->fixed_mask = 0;
		out->version = 0;
		return 0;
	}
	out->source = PMU_SOURCE_HOST;
	read_caps(sroot, out);
	/* On success why carries notes, not a reason: what could not be
	 * learnt and was therefore left unclaimed. */
	apply_capabilities(&o, c, out, why, whylen);
	return 0;
}
