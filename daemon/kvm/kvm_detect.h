/* SPDX-License-Identifier: MIT */
/*
 * kvm_detect: what a stock kernel's KVM offers for guest PMUs, read through
 * system ioctls on /dev/kvm (which work from any process) and the kvm
 * module parameters in sysfs. From that, which vPMU flavour the host runs
 * and what it means for host perf sessions.
 */
#ifndef VPMU_KVM_DETECT_H
#define VPMU_KVM_DETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Capability numbers missing from older linux/kvm.h (Debian 12 has 6.1). */
#define KVM_DETECT_CAP_PMU_EVENT_FILTER 173
#define KVM_DETECT_CAP_PMU_CAPABILITY 212
#define KVM_DETECT_CAP_PMU_EVENT_MASKED_EVENTS 226

enum kvm_vpmu_flavour {
	KVM_VPMU_FLAVOUR_UNKNOWN = 0, /* no /dev/kvm: nothing to say */
	KVM_VPMU_FLAVOUR_NONE,        /* KVM gives guests no PMU */
	KVM_VPMU_FLAVOUR_PERF,        /* guest PMCs are host perf events */
	KVM_VPMU_FLAVOUR_MEDIATED,    /* Linux 7.0+ mediated vPMU */
};

/* A tri-state for sysfs booleans that may be absent. */
enum kvm_tristate { KVM_NO = 0, KVM_YES = 1, KVM_ABSENT = -1 };

struct kvm_detect {
	bool dev_ok;                 /* /dev/kvm opened */
	int dev_errno;               /* why not, when !dev_ok */
	int api_version;             /* KVM_GET_API_VERSION, -errno on failure */
	/* KVM_CHECK_EXTENSION results (>= 0), or -errno. */
	int cap_pmu_event_filter;
	int cap_masked_events;
	int cap_pmu_capability;      /* KVM_PMU_CAP_* mask: 0 when enable_pmu=N */
	int cap_vpmu;                /* KVM_CAP_VPMU_PARTITION: the extension */
	/* KVM_GET_SUPPORTED_CPUID leaf 0xA: what KVM would give a guest. */
	int cpuid_err;               /* 0, or -errno */
	bool leaf0a_present;
	uint32_t leaf0a[4];          /* eax, ebx, ecx, edx */
	unsigned guest_version, guest_gp, guest_gp_width, guest_fixed, guest_fixed_width;
	/* Module parameters. */
	enum kvm_tristate enable_pmu;            /* kvm.enable_pmu */
	enum kvm_tristate mediated_intel;        /* kvm_intel.enable_mediated_pmu */
	enum kvm_tristate mediated_amd;          /* kvm_amd.enable_mediated_pmu */
	enum kvm_vpmu_flavour flavour;
};

struct kvm_detect_opts {
	const char *dev_path;     /* NULL: "/dev/kvm" */
	const char *sysfs_root;   /* NULL: "/sys" */
};

/* Always fills out; returns 0, or -errno when /dev/kvm cannot be opened
 * (out->flavour is then UNKNOWN unless sysfs says enable_pmu=N). */
int kvm_detect_run(const struct kvm_detect_opts *opts, struct kvm_detect *out);

/* Flavour from the raw facts (pure, for tests with synthetic input). */
enum kvm_vpmu_flavour kvm_detect_flavour(const struct kvm_detect *d);
const char *kvm_detect_flavour_name(enum kvm_vpmu_flavour f);
/* One sentence: what the flavour means for host perf sessions. */
const char *kvm_detect_flavour_host_impact(enum kvm_vpmu_flavour f);

/* Human-readable report, snprintf semantics. */
int kvm_detect_format(const struct kvm_detect *d, char *buf, size_t len);

/* Parses a sysfs bool ("Y", "N", "1", "0", with optional newline). */
int kvm_detect_parse_bool(const char *s, bool *out);

#endif
