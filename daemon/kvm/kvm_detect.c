/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_detect.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vpmu_kvm.h>

#include "proto/cleanup.h"

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

static enum kvm_tristate read_param(const char *root, const char *mod, const char *name)
{
	char buf[16]; /* "Y\n", "N\n", "1\n": a boolean parameter */
	_cleanup_free_ char *path = alloc_printf("%s/module/%s/parameters/%s", root, mod, name);
	if (!path)
		return KVM_ABSENT;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return KVM_ABSENT;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return KVM_ABSENT;
	buf[n] = '\0';
	bool v;
	if (kvm_detect_parse_bool(buf, &v) < 0)
		return KVM_ABSENT;
	return v ? KVM_YES : KVM_NO;
}

static int check_ext(int fd, long cap)
{
	int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? -errno : r;
}

static void read_leaf0a(int fd, struct kvm_detect *d)
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
			if (e->function != 0xa)
				continue;
			d->leaf0a_present = true;
			d->leaf0a[0] = e->eax;
			d->leaf0a[1] = e->ebx;
			d->leaf0a[2] = e->ecx;
			d->leaf0a[3] = e->edx;
		}
		if (d->leaf0a_present) {
			uint32_t a = d->leaf0a[0], dx = d->leaf0a[3];
			d->guest_version = a & 0xff;
			d->guest_gp = (a >> 8) & 0xff;
			d->guest_gp_width = (a >> 16) & 0xff;
			/* Fixed counters are only architectural from version 2. */
			if (d->guest_version >= 2) {
				d->guest_fixed = dx & 0x1f;
				d->guest_fixed_width = (dx >> 5) & 0xff;
			}
		}
		return;
	}
}

enum kvm_vpmu_flavour kvm_detect_flavour(const struct kvm_detect *d)
{
	if (d->enable_pmu == KVM_NO)
		return KVM_VPMU_FLAVOUR_NONE;
	if (!d->dev_ok)
		return KVM_VPMU_FLAVOUR_UNKNOWN;
	/* KVM_CAP_PMU_CAPABILITY answers 0 exactly when enable_pmu is off,
	 * which covers kernels whose parameter moved or is unreadable. */
	if (d->cap_pmu_capability == 0)
		return KVM_VPMU_FLAVOUR_NONE;
	if (d->leaf0a_present && d->guest_version == 0 && d->guest_gp == 0)
		return KVM_VPMU_FLAVOUR_NONE;
	if (d->mediated_intel == KVM_YES || d->mediated_amd == KVM_YES)
		return KVM_VPMU_FLAVOUR_MEDIATED;
	return KVM_VPMU_FLAVOUR_PERF;
}

int kvm_detect_run(const struct kvm_detect_opts *opts, struct kvm_detect *d)
{
	const char *dev = opts && opts->dev_path ? opts->dev_path : "/dev/kvm";
	const char *sys = opts && opts->sysfs_root ? opts->sysfs_root : "/sys";

	memset(d, 0, sizeof(*d));
	d->api_version = d->cap_pmu_event_filter = d->cap_masked_events = -ENODEV;
	d->cap_pmu_capability = d->cap_vpmu = d->cpuid_err = -ENODEV;
	d->enable_pmu = read_param(sys, "kvm", "enable_pmu");
	d->mediated_intel = read_param(sys, "kvm_intel", "enable_mediated_pmu");
	d->mediated_amd = read_param(sys, "kvm_amd", "enable_mediated_pmu");

	_cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		d->dev_errno = errno;
		d->flavour = kvm_detect_flavour(d);
		return -d->dev_errno;
	}
	d->dev_ok = true;
	d->api_version = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (d->api_version < 0)
		d->api_version = -errno;
	d->cap_pmu_event_filter = check_ext(fd, KVM_DETECT_CAP_PMU_EVENT_FILTER);
	d->cap_masked_events = check_ext(fd, KVM_DETECT_CAP_PMU_EVENT_MASKED_EVENTS);
	d->cap_pmu_capability = check_ext(fd, KVM_DETECT_CAP_PMU_CAPABILITY);
	d->cap_vpmu = check_ext(fd, KVM_CAP_VPMU_PARTITION);
	read_leaf0a(fd, d);
	d->flavour = kvm_detect_flavour(d);
	return 0;
}

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

const char *kvm_detect_flavour_host_impact(enum kvm_vpmu_flavour f)
{
	switch (f) {
	case KVM_VPMU_FLAVOUR_UNKNOWN:
		return "no KVM on this host: host sessions have every counter";
	case KVM_VPMU_FLAVOUR_NONE:
		return "guests get no PMU: host sessions have every counter, guest time included";
	case KVM_VPMU_FLAVOUR_PERF:
		return "guest PMCs are task-pinned host perf events on vCPU threads: they compete with "
		       "host sessions, and CPU-pinned host events win (the guest silently loses counts)";
	case KVM_VPMU_FLAVOUR_MEDIATED:
		return "while a mediated VM exists, host events must set exclude_guest (others fail with "
		       "EOPNOTSUPP, and an existing one makes new mediated vCPUs fail with EBUSY; the NMI "
		       "watchdog counts); host events stop counting during guest time";
	}
	return "invalid";
}

static const char *tri(enum kvm_tristate t)
{
	return t == KVM_YES ? "Y" : t == KVM_NO ? "N" : "absent";
}

static void fmt_cap(char *b, size_t n, int v)
{
	if (v >= 0)
		snprintf(b, n, "%d", v);
	else
		snprintf(b, n, "error (%s)", strerror(-v));
}

int kvm_detect_format(const struct kvm_detect *d, char *buf, size_t len)
{
	/* a number, or "error (strerror)" */
	char api[48], filt[48], mask[48], pcap[48], ours[48];
	fmt_cap(api, sizeof(api), d->api_version);
	fmt_cap(filt, sizeof(filt), d->cap_pmu_event_filter);
	fmt_cap(mask, sizeof(mask), d->cap_masked_events);
	fmt_cap(pcap, sizeof(pcap), d->cap_pmu_capability);
	fmt_cap(ours, sizeof(ours), d->cap_vpmu);
	char leaf[160]; /* four registers and five small numbers */
	if (d->cpuid_err < 0)
		snprintf(leaf, sizeof(leaf), "error (%s)", strerror(-d->cpuid_err));
	else if (!d->leaf0a_present)
		snprintf(leaf, sizeof(leaf), "not reported");
	else
		snprintf(leaf, sizeof(leaf),
			 "eax=%08x ebx=%08x ecx=%08x edx=%08x (version %u, %u gp x %u bits, %u fixed x %u bits)",
			 d->leaf0a[0], d->leaf0a[1], d->leaf0a[2], d->leaf0a[3], d->guest_version,
			 d->guest_gp, d->guest_gp_width, d->guest_fixed, d->guest_fixed_width);
	if (!d->dev_ok)
		return snprintf(buf, len,
				"kvm: /dev/kvm unavailable (%s)\n"
				"kvm: kvm.enable_pmu=%s kvm_intel.enable_mediated_pmu=%s "
				"kvm_amd.enable_mediated_pmu=%s\n"
				"kvm: vPMU flavour: %s: %s\n",
				strerror(d->dev_errno), tri(d->enable_pmu), tri(d->mediated_intel),
				tri(d->mediated_amd), kvm_detect_flavour_name(d->flavour),
				kvm_detect_flavour_host_impact(d->flavour));
	return snprintf(buf, len,
			"kvm: API version %s\n"
			"kvm: KVM_CAP_PMU_EVENT_FILTER=%s KVM_CAP_PMU_EVENT_MASKED_EVENTS=%s "
			"KVM_CAP_PMU_CAPABILITY=%s KVM_CAP_VPMU_PARTITION=%s\n"
			"kvm: KVM_GET_SUPPORTED_CPUID leaf 0xA: %s\n"
			"kvm: kvm.enable_pmu=%s kvm_intel.enable_mediated_pmu=%s "
			"kvm_amd.enable_mediated_pmu=%s\n"
			"kvm: vPMU flavour: %s: %s\n"
			"kvm: vpmu extension: %s\n",
			api, filt, mask, pcap, ours, leaf, tri(d->enable_pmu), tri(d->mediated_intel),
			tri(d->mediated_amd), kvm_detect_flavour_name(d->flavour),
			kvm_detect_flavour_host_impact(d->flavour),
			d->cap_vpmu > 0 ? "present (guest routes can be enforced)"
					: "absent (stock kernel: guest routes are advisory)");
}
