/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_detect.h"
#include "kvm/kvm_text.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/vpmu_kvm.h>

#include "proto/cleanup.h"

#define EVENT_SOURCE "sys/bus/event_source/devices"
/* The vpmu extension's perf half, an attribute of the core PMU "cpu"
 * (docs/kvm-api.md, part 1; not in the uapi header: sysfs paths are ABI
 * documentation, not C): the reservation modes, decimal VPMU_RESERVE_CAP_*. */
#define RESERVE_CAPS_ATTR "caps/guest_reserve"

/* CPUID bits KVM uses to describe a guest PMU. */
#define LEAF_AMD_EXT 0x80000001u
#define LEAF_AMD_PERFMON 0x80000022u
#define AMD_ECX_PERFCTR_CORE (1u << 23)

int kvm_detect_parse_bool(const char *s, bool *out)
{
	if (!s || !out)
		return -EINVAL;
	size_t n = strcspn(s, "\n");
	if (n != 1 || (s[n] && s[n + 1]))
		return -EINVAL;
	switch (s[0]) {
	case 'Y': case 'y': case '1': *out = true; return 0;
	case 'N': case 'n': case '0': *out = false; return 0;
	}
	return -EINVAL;
}

/* --- facts from files ------------------------------------------------- */

/* A file holding one short value (a bool or a number): longer content is
 * not what the kernel writes there, so it is refused rather than cut. */
static int read_short(const char *root, const char *rel, char *buf, size_t len)
{
	_cleanup_free_ char *path = alloc_printf("%s/%s", root, rel);
	if (!path)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, len);
	if (n < 0)
		return -errno;
	if ((size_t)n >= len)
		return -EINVAL;
	buf[n] = '\0';
	return 0;
}

static struct kvm_detect_param read_param(const char *root, const char *mod, const char *name)
{
	struct kvm_detect_param p = { .value = KVM_ABSENT };
	char buf[16]; /* "Y\n", "N\n": a boolean parameter */
	_cleanup_free_ char *rel = alloc_printf("sys/module/%s/parameters/%s", mod, name);
	bool v;

	if (!rel) {
		p.err = -ENOMEM;
		return p;
	}
	p.err = read_short(root, rel, buf, sizeof(buf));
	if (p.err == 0)
		p.err = kvm_detect_parse_bool(buf, &v);
	if (p.err == 0)
		p.value = v ? KVM_YES : KVM_NO;
	return p;
}

static struct kvm_detect_number read_number(const char *root, const char *rel)
{
	struct kvm_detect_number n = { 0 };
	char buf[32]; /* a sysctl integer */
	char *end;

	n.err = read_short(root, rel, buf, sizeof(buf));
	if (n.err)
		return n;
	errno = 0;
	n.value = strtol(buf, &end, 10);
	if (errno || end == buf || (*end && strcmp(end, "\n") != 0))
		n.err = -EINVAL;
	return n;
}

static bool exists(const char *root, const char *rel)
{
	_cleanup_free_ char *path = alloc_printf("%s/%s", root, rel);
	struct stat st;

	return path && stat(path, &st) == 0;
}

/* --- facts from ioctls -------------------------------------------------- */

static bool is_amd_like(const char *vendor)
{
	return strcmp(vendor, "AuthenticAMD") == 0 || strcmp(vendor, "HygonGenuine") == 0;
}

/* One entry of KVM_GET_SUPPORTED_CPUID (index 0), from the device or a
 * fixture; the decoding is the same for both. */
static void take_leaf(struct kvm_detect *d, uint32_t function, const uint32_t regs[4])
{
	switch (function) {
	case 0:
		/* The vendor string is EBX, EDX, ECX. */
		memcpy(d->vendor, &regs[1], 4);
		memcpy(d->vendor + 4, &regs[3], 4);
		memcpy(d->vendor + 8, &regs[2], 4);
		d->vendor[12] = '\0';
		break;
	case 0xa: {
		uint32_t a = regs[0], dx = regs[3];
		d->leaf0a_present = true;
		memcpy(d->leaf0a, regs, sizeof(d->leaf0a));
		d->guest_version = a & 0xff;
		d->guest_gp = (a >> 8) & 0xff;
		d->guest_gp_width = (a >> 16) & 0xff;
		/* Fixed counters are only architectural from version 2. */
		d->guest_fixed = d->guest_version >= 2 ? (dx & 0x1f) : 0;
		d->guest_fixed_width = d->guest_version >= 2 ? ((dx >> 5) & 0xff) : 0;
		break;
	}
	case LEAF_AMD_EXT:
		d->leaf_80000001.present = true;
		memcpy(d->leaf_80000001.regs, regs, sizeof(d->leaf_80000001.regs));
		d->amd_perfctr_core = regs[2] & AMD_ECX_PERFCTR_CORE;
		break;
	case LEAF_AMD_PERFMON:
		d->leaf_80000022.present = true;
		memcpy(d->leaf_80000022.regs, regs, sizeof(d->leaf_80000022.regs));
		/* EAX bit 0 is PerfMonV2; KVM fills EBX only with it. */
		d->amd_core_counters = (regs[0] & 1) ? (regs[1] & 0xf) : 0;
		break;
	}
}

static int check_ext(int fd, long cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? -errno : r;
}

static void read_supported_cpuid(int fd, struct kvm_detect *d)
{
	/* KVM says E2BIG until the buffer holds every entry, so grow until it
	 * fits; the bound keeps a misbehaving kernel from growing us forever. */
	for (unsigned nent = 128; nent <= 4096; nent *= 2) {
		_cleanup_free_ struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		if (!c) {
			d->cpuid_err = -ENOMEM;
			return;
		}
		c->nent = nent;
		if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
			d->cpuid_err = -errno;
			if (d->cpuid_err == -E2BIG)
				continue;
			return;
		}
		d->cpuid_err = 0;
		for (unsigned i = 0; i < c->nent && i < nent; i++) {
			const struct kvm_cpuid_entry2 *e = &c->entries[i];
			if (e->index != 0)
				continue;
			const uint32_t regs[4] = { e->eax, e->ebx, e->ecx, e->edx };
			take_leaf(d, e->function, regs);
		}
		return;
	}
}

static void ask_device(const char *dev, struct kvm_detect *d)
{
	_cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		d->dev_errno = errno;
		return;
	}
	d->dev_ok = true;
	d->api_version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (d->api_version < 0)
		d->api_version = -errno;
	d->cap_pmu_event_filter = check_ext(fd, KVM_DETECT_CAP_PMU_EVENT_FILTER);
	d->cap_masked_events = check_ext(fd, KVM_DETECT_CAP_PMU_EVENT_MASKED_EVENTS);
	d->cap_pmu_capability = check_ext(fd, KVM_DETECT_CAP_PMU_CAPABILITY);
	d->cap_vpmu_routes = check_ext(fd, KVM_CAP_VPMU_ROUTES);
	read_supported_cpuid(fd, d);
}

/* --- the ioctl fact file (tests) ----------------------------------------- */

static const struct {
	const char *name;
	int err;
} errno_names[] = {
	{ "ENOENT", ENOENT }, { "EACCES", EACCES }, { "EPERM", EPERM },   { "ENODEV", ENODEV },
	{ "ENXIO", ENXIO },   { "EINVAL", EINVAL }, { "ENOTTY", ENOTTY }, { "E2BIG", E2BIG },
	{ "ENOMEM", ENOMEM }, { "EIO", EIO },
};

static int parse_errno(const char *s, int *out)
{
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
		if (strcmp(s, errno_names[i].name) == 0) {
			*out = errno_names[i].err;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* An ioctl's answer: a non-negative number, or "error ENAME" as -errno. */
static int parse_answer(char **tok, int ntok, int *out)
{
	uint32_t v;
	int e;

	if (ntok == 1 && parse_u32(tok[0], &v) == 0 && v <= INT_MAX) {
		*out = (int)v;
		return 0;
	}
	if (ntok == 2 && strcmp(tok[0], "error") == 0 && parse_errno(tok[1], &e) == 0) {
		*out = -e;
		return 0;
	}
	return -EINVAL;
}

static int set_cap(struct kvm_detect *d, uint32_t cap, int answer)
{
	switch (cap) {
	case KVM_DETECT_CAP_PMU_EVENT_FILTER: d->cap_pmu_event_filter = answer; return 0;
	case KVM_DETECT_CAP_PMU_EVENT_MASKED_EVENTS: d->cap_masked_events = answer; return 0;
	case KVM_DETECT_CAP_PMU_CAPABILITY: d->cap_pmu_capability = answer; return 0;
	case KVM_CAP_VPMU_ROUTES: d->cap_vpmu_routes = answer; return 0;
	}
	/* A capability nobody asks about would only hide a typo. */
	return -EINVAL;
}

/* One line: "open ok|error ENAME", "api_version N|error ENAME",
 * "cap NUMBER N|error ENAME", "cpuid error ENAME",
 * "cpuid LEAF EAX EBX ECX EDX", "cpuid LEAF absent". */
static int parse_fact_line(struct kvm_detect *d, char *line, bool *opened)
{
	char *tok[8];
	int ntok = 0;
	uint32_t leaf, regs[4];

	line[strcspn(line, "#")] = '\0';
	for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
		if (ntok == (int)(sizeof(tok) / sizeof(tok[0])))
			return -EINVAL;
		tok[ntok++] = t;
	}
	if (ntok == 0)
		return 0;
	if (strcmp(tok[0], "open") == 0) {
		int e;
		if (ntok == 2 && strcmp(tok[1], "ok") == 0) {
			d->dev_ok = true;
			d->dev_errno = 0;
		} else if (ntok == 3 && strcmp(tok[1], "error") == 0 && parse_errno(tok[2], &e) == 0) {
			d->dev_ok = false;
			d->dev_errno = e;
		} else {
			return -EINVAL;
		}
		*opened = true;
		return 0;
	}
	if (strcmp(tok[0], "api_version") == 0)
		return parse_answer(tok + 1, ntok - 1, &d->api_version);
	if (strcmp(tok[0], "cap") == 0) {
		uint32_t cap;
		int answer;
		if (ntok < 3 || parse_u32(tok[1], &cap) < 0 || parse_answer(tok + 2, ntok - 2, &answer) < 0)
			return -EINVAL;
		return set_cap(d, cap, answer);
	}
	if (strcmp(tok[0], "cpuid") != 0)
		return -EINVAL;
	if (ntok == 3 && strcmp(tok[1], "error") == 0) {
		int e;
		if (parse_errno(tok[2], &e) < 0)
			return -EINVAL;
		d->cpuid_err = -e;
		return 0;
	}
	if (ntok < 2 || parse_u32(tok[1], &leaf) < 0)
		return -EINVAL;
	if (ntok == 3 && strcmp(tok[2], "absent") == 0)
		return 0;
	if (ntok != 6)
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		if (parse_u32(tok[2 + i], &regs[i]) < 0)
			return -EINVAL;
	}
	take_leaf(d, leaf, regs);
	return 0;
}

int kvm_detect_read_ioctl_facts(const char *path, struct kvm_detect *d, unsigned *bad_line)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	unsigned n = 0;
	bool opened = false;

	if (bad_line)
		*bad_line = 0;
	if (!f)
		return -errno;
	d->ioctls_from_fixture = true;
	/* What a kernel answers when asked nothing more: unknown capabilities
	 * are 0, and a fixture lists what its kernel says. */
	d->cap_pmu_event_filter = d->cap_masked_events = d->cap_pmu_capability = d->cap_vpmu_routes = 0;
	d->api_version = -ENODEV;
	d->cpuid_err = 0;
	while (getline(&line, &cap, f) >= 0) {
		n++;
		if (parse_fact_line(d, line, &opened) < 0) {
			if (bad_line)
				*bad_line = n;
			return -EINVAL;
		}
	}
	/* A file that forgets to say whether /dev/kvm opened is broken, not a
	 * host without KVM. */
	if (!opened) {
		if (bad_line)
			*bad_line = n + 1;
		return -EINVAL;
	}
	return 0;
}

/* --- deriving and deciding -------------------------------------------- */

static const char *mediated_param_name(const struct kvm_detect *d)
{
	if (d->mediated_intel.value == KVM_YES)
		return "kvm_intel.enable_mediated_pmu";
	if (d->mediated_amd.value == KVM_YES)
		return "kvm_amd.enable_mediated_pmu";
	if (d->mediated_kvm.value == KVM_YES)
		return "kvm.enable_mediated_pmu";
	return NULL;
}

enum offered { OFFERED_NO, OFFERED_YES, OFFERED_UNSURE };

/* Whether KVM gives guests a PMU at all, from what KVM_GET_SUPPORTED_CPUID
 * says first: leaf 0xA is what a VMM copies into its guests. */
static enum offered vpmu_offered(const struct kvm_detect *d, char *why, size_t len)
{
	if (d->cpuid_err < 0) {
		if (d->cap_pmu_capability > 0) {
			snprintf(why, len, "KVM_GET_SUPPORTED_CPUID failed, but KVM_CAP_PMU_CAPABILITY=%d says enable_pmu is on",
				 d->cap_pmu_capability);
			return OFFERED_YES;
		}
		if (d->enable_pmu.value == KVM_YES) {
			snprintf(why, len, "KVM_GET_SUPPORTED_CPUID failed, but kvm.enable_pmu=Y");
			return OFFERED_YES;
		}
		snprintf(why, len, "KVM_GET_SUPPORTED_CPUID failed and neither kvm.enable_pmu nor KVM_CAP_PMU_CAPABILITY says a vPMU is on");
		return OFFERED_UNSURE;
	}
	if (d->leaf0a_present && d->guest_version > 0 && d->guest_gp > 0) {
		snprintf(why, len, "KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests PMU version %u with %u general counters",
			 d->guest_version, d->guest_gp);
		return OFFERED_YES;
	}
	/* AMD has no leaf 0xA (KVM zeroes it without ARCH_PERFMON). */
	if (is_amd_like(d->vendor)) {
		if (d->amd_core_counters > 0) {
			snprintf(why, len, "KVM_GET_SUPPORTED_CPUID leaf 0x80000022 offers guests PerfMonV2 with %u core counters",
				 d->amd_core_counters);
			return OFFERED_YES;
		}
		if (d->amd_perfctr_core) {
			snprintf(why, len, "KVM_GET_SUPPORTED_CPUID leaf 0x80000001 offers guests the 6 core counters (PerfCtrExtCore)");
			return OFFERED_YES;
		}
		/* The 4 legacy counters are not enumerated in CPUID. */
		if (d->cap_pmu_capability > 0 || d->enable_pmu.value == KVM_YES) {
			snprintf(why, len, "%s: KVM gives AMD guests the 4 legacy counters, which CPUID does not enumerate",
				 d->cap_pmu_capability > 0 ? "KVM_CAP_PMU_CAPABILITY is set" : "kvm.enable_pmu=Y");
			return OFFERED_YES;
		}
		snprintf(why, len, "KVM_GET_SUPPORTED_CPUID offers AMD guests no counters (no PerfCtrExtCore, no PerfMonV2) and nothing says enable_pmu is on");
		return OFFERED_NO;
	}
	if (d->leaf0a_present) {
		snprintf(why, len, "KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests no PMU (version %u, %u general counters)",
			 d->guest_version, d->guest_gp);
		return OFFERED_NO;
	}
	snprintf(why, len, "KVM_GET_SUPPORTED_CPUID lists no leaf 0xA: KVM has no PMU to describe to guests");
	return OFFERED_NO;
}

enum kvm_vpmu_flavour kvm_detect_decide(const struct kvm_detect *d, char *why, size_t whylen)
{
	char scratch[KVM_DETECT_WHY_MAX];

	if (!why || !whylen) {
		why = scratch;
		whylen = sizeof(scratch);
	}
	if (!d->dev_ok) {
		/* A readable parameter still says what KVM would do. */
		if (d->enable_pmu.value == KVM_NO) {
			snprintf(why, whylen, "kvm.enable_pmu=N (and /dev/kvm could not be opened)");
			return KVM_VPMU_FLAVOUR_NONE;
		}
		snprintf(why, whylen, "/dev/kvm could not be opened: %s", strerror(d->dev_errno));
		return KVM_VPMU_FLAVOUR_UNKNOWN;
	}
	if (d->hybrid) {
		snprintf(why, whylen, "hybrid CPU (perf PMUs cpu_core/cpu_atom instead of cpu): KVM disables its vPMU");
		return KVM_VPMU_FLAVOUR_NONE;
	}
	if (d->enable_pmu.value == KVM_NO) {
		snprintf(why, whylen, "kvm.enable_pmu=N");
		return KVM_VPMU_FLAVOUR_NONE;
	}
	switch (vpmu_offered(d, why, whylen)) {
	case OFFERED_NO:
		return KVM_VPMU_FLAVOUR_NONE;
	case OFFERED_UNSURE:
		return KVM_VPMU_FLAVOUR_UNKNOWN;
	case OFFERED_YES:
		break;
	}
	size_t n = strlen(why);
	const char *param = mediated_param_name(d);
	if (param) {
		snprintf(why + n, whylen - n, "; %s=Y", param);
		return KVM_VPMU_FLAVOUR_MEDIATED;
	}
	snprintf(why + n, whylen - n, "; no enable_mediated_pmu is Y");
	return KVM_VPMU_FLAVOUR_PERF;
}

enum kvm_vpmu_flavour kvm_detect_flavour(const struct kvm_detect *d)
{
	return kvm_detect_decide(d, NULL, 0);
}

/* The hard-lockup detector runs only while both sysctls allow it. Which one
 * runs is not shown anywhere; with a core PMU registered it is the perf one
 * unless the kernel was built with HARDLOCKUP_DETECTOR_PREFER_BUDDY (off by
 * default), so that is what we assume. */
static bool perf_nmi_watchdog(const struct kvm_detect *d)
{
	bool hard = d->nmi_watchdog.err == 0 && d->nmi_watchdog.value != 0;
	bool all = d->watchdog.err != 0 || d->watchdog.value != 0;
	return hard && all && (d->pmu_cpu || d->pmu_cpu_core || d->pmu_cpu_atom);
}

int kvm_detect_run(const struct kvm_detect_opts *opts, struct kvm_detect *d)
{
	const char *dev = opts && opts->dev_path ? opts->dev_path : "/dev/kvm";
	const char *sys = opts && opts->sysfs_root ? opts->sysfs_root : "/";
	const char *proc = opts && opts->procfs_root ? opts->procfs_root : "/";
	const char *facts = opts ? opts->ioctl_facts_path : NULL;
	int r = 0;

	memset(d, 0, sizeof(*d));
	d->api_version = d->cap_pmu_event_filter = d->cap_masked_events = -ENODEV;
	d->cap_pmu_capability = d->cap_vpmu_routes = d->cpuid_err = -ENODEV;

	d->enable_pmu = read_param(sys, "kvm", "enable_pmu");
	d->mediated_kvm = read_param(sys, "kvm", "enable_mediated_pmu");
	d->mediated_intel = read_param(sys, "kvm_intel", "enable_mediated_pmu");
	d->mediated_amd = read_param(sys, "kvm_amd", "enable_mediated_pmu");
	d->mediated_param = mediated_param_name(d);
	d->pmu_cpu = exists(sys, EVENT_SOURCE "/cpu");
	d->pmu_cpu_core = exists(sys, EVENT_SOURCE "/cpu_core");
	d->pmu_cpu_atom = exists(sys, EVENT_SOURCE "/cpu_atom");
	d->hybrid = !d->pmu_cpu && (d->pmu_cpu_core || d->pmu_cpu_atom);
	d->reserve_caps = read_number(sys, EVENT_SOURCE "/cpu/" RESERVE_CAPS_ATTR);
	if (d->reserve_caps.err == 0 && d->reserve_caps.value < 0)
		d->reserve_caps.err = -EINVAL;
	d->nmi_watchdog = read_number(proc, "proc/sys/kernel/nmi_watchdog");
	d->watchdog = read_number(proc, "proc/sys/kernel/watchdog");
	d->nmi_watchdog_perf = perf_nmi_watchdog(d);

	if (facts) {
		unsigned bad = 0;
		r = kvm_detect_read_ioctl_facts(facts, d, &bad);
		if (r < 0) {
			d->dev_ok = false;
			d->dev_errno = -r;
			d->flavour = KVM_VPMU_FLAVOUR_UNKNOWN;
			if (bad)
				snprintf(d->why, sizeof(d->why), "ioctl fact file line %u not understood", bad);
			else
				snprintf(d->why, sizeof(d->why), "ioctl fact file unreadable: %s", strerror(-r));
			return r;
		}
	} else {
		ask_device(dev, d);
	}
	d->flavour = kvm_detect_decide(d, d->why, sizeof(d->why));
	return d->dev_ok ? 0 : -d->dev_errno;
}

static bool reserve_caps_usable(const struct kvm_detect *d)
{
	/* Every perf half takes the uniform mask; a value without UNIFORM is
	 * no kernel the spec describes, so no perf half (D12). */
	return d->reserve_caps.err == 0 && (d->reserve_caps.value & VPMU_RESERVE_CAP_UNIFORM);
}

bool kvm_detect_has_extension(const struct kvm_detect *d)
{
	return d && d->dev_ok && d->cap_vpmu_routes > 0 && reserve_caps_usable(d);
}

/* --- words ------------------------------------------------------------- */

const char *kvm_detect_flavour_name(enum kvm_vpmu_flavour f)
{
	switch (f) {
	case KVM_VPMU_FLAVOUR_UNKNOWN: return "unknown";
	case KVM_VPMU_FLAVOUR_NONE: return "none";
	case KVM_VPMU_FLAVOUR_PERF: return "perf-based";
	case KVM_VPMU_FLAVOUR_MEDIATED: return "mediated";
	}
	return "invalid";
}

const char *kvm_detect_flavour_guest_impact(enum kvm_vpmu_flavour f)
{
	switch (f) {
	case KVM_VPMU_FLAVOUR_UNKNOWN:
		return "nothing is known about guest PMUs: no KVM could be asked";
	case KVM_VPMU_FLAVOUR_NONE:
		return "guests get no PMU: KVM gives them no counters";
	case KVM_VPMU_FLAVOUR_PERF:
		return "each guest PMC the guest enables is a task-pinned perf event on its vCPU thread; perf picks "
		       "the counter, and with none free the guest silently counts nothing until it reprograms the PMC";
	case KVM_VPMU_FLAVOUR_MEDIATED:
		return "the guest owns the whole PMU while its vCPU runs (switched at VM entry and exit); a VM "
		       "without an in-kernel irqchip silently gets no PMU";
	}
	return "invalid";
}

const char *kvm_detect_flavour_host_impact(enum kvm_vpmu_flavour f)
{
	switch (f) {
	case KVM_VPMU_FLAVOUR_UNKNOWN:
		return "no KVM to share with: every counter is the host's";
	case KVM_VPMU_FLAVOUR_NONE:
		return "every counter is the host's, guest time included";
	case KVM_VPMU_FLAVOUR_PERF:
		return "guest PMCs are task-pinned perf events perf places itself; vpmud keeps room for them and "
		       "never adds a pinned event that would displace one";
	case KVM_VPMU_FLAVOUR_MEDIATED:
		return "host events count host time only (vpmud opens them with exclude_guest); the guest owns "
		       "the whole PMU while its vCPU runs";
	}
	return "invalid";
}

/* --- the report -------------------------------------------------------- */

static void say_answer(struct kvm_text *r, const char *what, int v, const char *meaning)
{
	if (v >= 0)
		kvm_text_add(r, "kvm:   %s: %d%s%s%s\n", what, v, meaning ? " (" : "", meaning ? meaning : "", meaning ? ")" : "");
	else
		kvm_text_add(r, "kvm:   %s: failed (%s)\n", what, strerror(-v));
}

static void say_param(struct kvm_text *r, const char *mod, const char *name, const struct kvm_detect_param *p)
{
	const char *v = p->value == KVM_YES ? "Y" : "N";

	if (p->err == 0)
		kvm_text_add(r, "kvm:   /sys/module/%s/parameters/%s: %s\n", mod, name, v);
	else if (p->err == -ENOENT)
		kvm_text_add(r, "kvm:   /sys/module/%s/parameters/%s: absent\n", mod, name);
	else if (p->err == -EINVAL)
		kvm_text_add(r, "kvm:   /sys/module/%s/parameters/%s: not understood (not Y/N)\n", mod, name);
	else
		kvm_text_add(r, "kvm:   /sys/module/%s/parameters/%s: unreadable (%s)\n", mod, name, strerror(-p->err));
}

static void say_number(struct kvm_text *r, const char *path, const struct kvm_detect_number *n)
{
	if (n->err == 0)
		kvm_text_add(r, "kvm:   %s: %ld\n", path, n->value);
	else if (n->err == -ENOENT)
		kvm_text_add(r, "kvm:   %s: absent\n", path);
	else if (n->err == -EINVAL)
		kvm_text_add(r, "kvm:   %s: not understood (not a number)\n", path);
	else
		kvm_text_add(r, "kvm:   %s: unreadable (%s)\n", path, strerror(-n->err));
}

static void say_reserve_caps(struct kvm_text *r, const struct kvm_detect_number *n)
{
	const char *path = "/" EVENT_SOURCE "/cpu/" RESERVE_CAPS_ATTR;

	if (n->err == 0)
		kvm_text_add(r, "kvm:   %s: %ld (%s)\n", path, n->value,
		    !(n->value & VPMU_RESERVE_CAP_UNIFORM) ? "no uniform mode: not a perf half vpmu knows"
		    : n->value & VPMU_RESERVE_CAP_PER_CPU ? "perf can reserve counters for guests, per CPU"
							  : "perf can reserve counters for guests, one mask for every CPU");
	else if (n->err == -ENOENT)
		kvm_text_add(r, "kvm:   %s: absent (perf cannot reserve counters for guests)\n", path);
	else if (n->err == -EINVAL)
		kvm_text_add(r, "kvm:   %s: not understood (not a decimal mask)\n", path);
	else
		kvm_text_add(r, "kvm:   %s: unreadable (%s)\n", path, strerror(-n->err));
}

static void say_leaf(struct kvm_text *r, uint32_t function, const struct kvm_detect_leaf *l, const char *meaning)
{
	if (!l->present) {
		kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x%X: not listed\n", function);
		return;
	}
	kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x%X: eax=%08x ebx=%08x ecx=%08x edx=%08x (%s)\n", function,
	    l->regs[0], l->regs[1], l->regs[2], l->regs[3], meaning);
}

static void say_ioctls(struct kvm_text *r, const struct kvm_detect *d)
{
	say_answer(r, "KVM_GET_API_VERSION", d->api_version, NULL);
	if (d->cpuid_err < 0) {
		kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID: failed (%s)\n", strerror(-d->cpuid_err));
	} else {
		if (d->vendor[0])
			kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x0: vendor %s\n", d->vendor);
		else
			kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x0: not listed\n");
		if (d->leaf0a_present)
			kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0xA: eax=%08x ebx=%08x ecx=%08x edx=%08x "
			       "(version %u, %u general x %u bits, %u fixed x %u bits)\n",
			    d->leaf0a[0], d->leaf0a[1], d->leaf0a[2], d->leaf0a[3], d->guest_version, d->guest_gp,
			    d->guest_gp_width, d->guest_fixed, d->guest_fixed_width);
		else
			kvm_text_add(r, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0xA: not listed\n");
		/* AMD's leaves matter only where leaf 0xA cannot speak. */
		if (is_amd_like(d->vendor)) {
			say_leaf(r, LEAF_AMD_EXT, &d->leaf_80000001,
				 d->amd_perfctr_core ? "PerfCtrExtCore: 6 core counters" : "no PerfCtrExtCore");
			char m[64]; /* a short phrase and one small number */
			snprintf(m, sizeof(m), d->amd_core_counters ? "PerfMonV2, %u core counters" : "no PerfMonV2",
				 d->amd_core_counters);
			say_leaf(r, LEAF_AMD_PERFMON, &d->leaf_80000022, m);
		}
	}
	say_answer(r, "KVM_CHECK_EXTENSION(KVM_CAP_PMU_CAPABILITY=212)", d->cap_pmu_capability,
		   d->cap_pmu_capability > 0 ? "a VMM may opt a VM out of the vPMU"
					     : "no per-VM opt-out: enable_pmu is off, or the kernel predates 5.18; "
					       "not by itself a sign of no vPMU");
	say_answer(r, "KVM_CHECK_EXTENSION(KVM_CAP_PMU_EVENT_FILTER=173)", d->cap_pmu_event_filter, NULL);
	say_answer(r, "KVM_CHECK_EXTENSION(KVM_CAP_PMU_EVENT_MASKED_EVENTS=226)", d->cap_masked_events, NULL);
	char what[64]; /* the ioctl and one number */
	snprintf(what, sizeof(what), "KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES=0x%x)", (unsigned)KVM_CAP_VPMU_ROUTES);
	say_answer(r, what, d->cap_vpmu_routes,
		   d->cap_vpmu_routes > 0 ? "the vpmu extension's KVM half: route fds" : "no KVM half of the vpmu extension");
}

int kvm_detect_format(const struct kvm_detect *d, char *buf, size_t len)
{
	struct kvm_text r = { .buf = buf, .len = buf ? len : 0 };

	if (buf && len)
		buf[0] = '\0';
	kvm_text_add(&r, "kvm: vPMU flavour: %s (%s)\n", kvm_detect_flavour_name(d->flavour), d->why);
	kvm_text_add(&r, "kvm: evidence%s:\n",
	    d->ioctls_from_fixture ? " (ioctl answers from a test fixture file, not this host's /dev/kvm)" : "");
	if (d->dev_ok) {
		kvm_text_add(&r, "kvm:   open /dev/kvm: ok\n");
		say_ioctls(&r, d);
	} else {
		kvm_text_add(&r, "kvm:   open /dev/kvm: failed (%s)\n", strerror(d->dev_errno));
	}
	say_param(&r, "kvm", "enable_pmu", &d->enable_pmu);
	say_param(&r, "kvm", "enable_mediated_pmu", &d->mediated_kvm);
	say_param(&r, "kvm_intel", "enable_mediated_pmu", &d->mediated_intel);
	say_param(&r, "kvm_amd", "enable_mediated_pmu", &d->mediated_amd);
	kvm_text_add(&r, "kvm:   /" EVENT_SOURCE "/cpu: %s\n", d->pmu_cpu ? "present (a core PMU)" : "absent");
	kvm_text_add(&r, "kvm:   /" EVENT_SOURCE "/cpu_core: %s\n", d->pmu_cpu_core ? "present (hybrid)" : "absent");
	kvm_text_add(&r, "kvm:   /" EVENT_SOURCE "/cpu_atom: %s\n", d->pmu_cpu_atom ? "present (hybrid)" : "absent");
	say_reserve_caps(&r, &d->reserve_caps);
	say_number(&r, "/proc/sys/kernel/nmi_watchdog", &d->nmi_watchdog);
	say_number(&r, "/proc/sys/kernel/watchdog", &d->watchdog);
	if (d->nmi_watchdog_perf)
		kvm_text_add(&r, "kvm:   NMI watchdog: the perf one (inferred: nmi_watchdog on, a core PMU): a CPU-pinned cycles "
			"event holds a counter on every CPU\n");
	else
		kvm_text_add(&r, "kvm:   NMI watchdog: holds no counter (%s)\n",
		    d->nmi_watchdog.err ? "no nmi_watchdog sysctl"
		    : !d->nmi_watchdog.value ? "nmi_watchdog=0"
		    : (d->watchdog.err == 0 && !d->watchdog.value) ? "watchdog=0"
								     : "no core PMU to count on");
	kvm_text_add(&r, "kvm: for guests: %s\n", kvm_detect_flavour_guest_impact(d->flavour));
	kvm_text_add(&r, "kvm: for host sessions: %s\n", kvm_detect_flavour_host_impact(d->flavour));
	if (d->flavour == KVM_VPMU_FLAVOUR_MEDIATED && d->nmi_watchdog_perf)
		kvm_text_add(&r, "kvm: warning: the perf NMI watchdog holds a counter on every CPU: the first vCPU of every VM "
			"fails with EBUSY until kernel.nmi_watchdog=0\n");
	if (d->flavour == KVM_VPMU_FLAVOUR_PERF && d->nmi_watchdog_perf)
		kvm_text_add(&r, "kvm: note: the perf NMI watchdog is CPU-pinned: it outranks guest PMCs for one counter on "
			"every CPU\n");
	if (d->dev_ok) {
		bool kvm_half = d->cap_vpmu_routes > 0, perf_half = reserve_caps_usable(d);
		if (kvm_half && perf_half)
			kvm_text_add(&r, "kvm: vpmu extension: present (guest routes can be enforced)\n");
		else if (kvm_half || perf_half)
			kvm_text_add(&r, "kvm: vpmu extension: incomplete (%s without %s: guest routes are advisory)\n",
			    kvm_half ? "KVM_CAP_VPMU_ROUTES" : "perf's guest_reserve",
			    kvm_half ? "perf's guest_reserve" : "KVM_CAP_VPMU_ROUTES");
		else
			kvm_text_add(&r, "kvm: vpmu extension: absent (stock kernel: guest routes are advisory)\n");
	}
	int n = kvm_text_result(&r);
	return n < 0 ? -EINVAL : n;
}
