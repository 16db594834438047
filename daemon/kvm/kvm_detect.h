/* SPDX-License-Identifier: MIT */
/*
 * kvm_detect: which vPMU flavour this host's KVM gives guests, and the
 * evidence for it.
 *
 * Two steps. Gathering reads the facts: system ioctls on /dev/kvm (they
 * work from any process), KVM's module parameters in sysfs, the perf PMUs
 * the kernel registered, and the NMI watchdog's sysctls. Deciding is pure:
 * a flavour and the reason for it, from the facts alone, so that every
 * kernel's answers can be tested as fixture trees (tests/fixtures/kvm/).
 *
 * Facts keep no pointer to the caller's strings and own no memory: a
 * struct kvm_detect may be copied, kept and dropped freely. Paths in the
 * evidence are the kernel's (/sys/..., /proc/...); a caller that read them
 * below another root says so itself.
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
	KVM_VPMU_FLAVOUR_UNKNOWN = 0, /* no /dev/kvm, or nothing says: nothing to say */
	KVM_VPMU_FLAVOUR_NONE,        /* KVM gives guests no PMU */
	KVM_VPMU_FLAVOUR_PERF,        /* guest PMCs are host perf events */
	KVM_VPMU_FLAVOUR_MEDIATED,    /* Linux 7.0+ mediated vPMU */
};

/* Room for kvm_detect.why. */
#define KVM_DETECT_WHY_MAX 320

/* A tri-state for sysfs booleans that may be absent. */
enum kvm_tristate { KVM_NO = 0, KVM_YES = 1, KVM_ABSENT = -1 };

/* A boolean module parameter as read. */
struct kvm_detect_param {
	enum kvm_tristate value; /* KVM_ABSENT unless read and understood */
	int err;                 /* 0 when read; -ENOENT: no such file; -EINVAL: not Y/N/1/0 */
};

/* A number read from /proc. */
struct kvm_detect_number {
	long value; /* valid when err == 0 */
	int err;    /* 0 when read; -ENOENT: no such file; -EINVAL: not a number */
};

/* A leaf of KVM_GET_SUPPORTED_CPUID (index 0). */
struct kvm_detect_leaf {
	bool present;      /* KVM listed it */
	uint32_t regs[4];  /* eax, ebx, ecx, edx */
};

struct kvm_detect {
	/* --- ioctls on /dev/kvm ---------------------------------------- */
	bool ioctls_from_fixture;    /* the answers below come from a test fixture file */
	bool dev_ok;                 /* /dev/kvm opened */
	int dev_errno;               /* why not, when !dev_ok (positive errno) */
	int api_version;             /* KVM_GET_API_VERSION, -errno on failure */
	/* KVM_CHECK_EXTENSION results (>= 0), or -errno. */
	int cap_pmu_event_filter;
	int cap_masked_events;
	/* KVM_PMU_CAP_* mask. A switch, not a probe: 1 means a VMM may opt a VM
	 * out of the vPMU; 0 means enable_pmu is off *or* the kernel predates
	 * the capability (5.18), so it never alone says "no vPMU". */
	int cap_pmu_capability;
	int cap_vpmu_routes;         /* KVM_CAP_VPMU_ROUTES: the vpmu extension's KVM half */
	/* KVM_GET_SUPPORTED_CPUID: what KVM would give a guest. */
	int cpuid_err;               /* 0, or -errno */
	char vendor[13];             /* leaf 0's vendor string, "" when absent */
	bool leaf0a_present;
	uint32_t leaf0a[4];          /* eax, ebx, ecx, edx */
	unsigned guest_version, guest_gp, guest_gp_width, guest_fixed, guest_fixed_width;
	/* AMD enumerates its counters elsewhere: 0x80000001 ECX bit 23
	 * (PerfCtrExtCore: 6 counters) and 0x80000022 (PerfMonV2: EBX[3:0]). */
	struct kvm_detect_leaf leaf_80000001, leaf_80000022;
	bool amd_perfctr_core;       /* 0x80000001 ECX[23] */
	unsigned amd_core_counters;  /* 0x80000022 EBX[3:0], 0 when not enumerated */

	/* --- sysfs: KVM module parameters -------------------------------- */
	struct kvm_detect_param enable_pmu;     /* /sys/module/kvm/parameters/enable_pmu */
	/* enable_mediated_pmu: kvm_intel/kvm_amd in 7.0, may move to kvm. */
	struct kvm_detect_param mediated_kvm;   /* kvm.enable_mediated_pmu */
	struct kvm_detect_param mediated_intel; /* kvm_intel.enable_mediated_pmu */
	struct kvm_detect_param mediated_amd;   /* kvm_amd.enable_mediated_pmu */
	const char *mediated_param;  /* "kvm_intel.enable_mediated_pmu" etc. that is Y, or NULL */

	/* --- sysfs: perf PMUs (/sys/bus/event_source/devices/) -------- */
	bool pmu_cpu;                /* "cpu": one core PMU */
	bool pmu_cpu_core, pmu_cpu_atom; /* hybrid core types */
	/* Hybrid CPU (cpu_core/cpu_atom instead of cpu): KVM disables its
	 * vPMU there, so the flavour is none. */
	bool hybrid;
	/* The vpmu extension's perf half: cpu/caps/guest_reserve, a decimal
	 * mask of VPMU_RESERVE_CAP_* (-ENOENT: a kernel without it). */
	struct kvm_detect_number reserve_caps;

	/* --- procfs: the hard-lockup (NMI) watchdog ---------------------- */
	struct kvm_detect_number nmi_watchdog;   /* /proc/sys/kernel/nmi_watchdog */
	struct kvm_detect_number watchdog;       /* /proc/sys/kernel/watchdog (0 stops both detectors) */
	/* The perf NMI watchdog runs: nmi_watchdog != 0, watchdog not 0, and a
	 * core PMU is registered (the hard-lockup detector is then the perf
	 * one, a CPU-pinned cycles event holding a counter on every CPU, unless
	 * the kernel was built to prefer the buddy detector; an inference).
	 * Under the perf-based vPMU it outranks guest PMCs; under the mediated
	 * vPMU every VM's first vCPU fails with EBUSY until
	 * kernel.nmi_watchdog=0. */
	bool nmi_watchdog_perf;

	/* --- the decision ----------------------------------------------- */
	enum kvm_vpmu_flavour flavour;
	/* The facts that decided, in one clause; bounded: it is composed of
	 * fixed phrases and a few small numbers. */
	char why[KVM_DETECT_WHY_MAX];
};

struct kvm_detect_opts {
	const char *dev_path;     /* NULL: "/dev/kvm" */
	/* Roots that stand in for "/" (as for pmu_discover): sysfs is read
	 * from <sysfs_root>/sys/..., procfs from <procfs_root>/proc/... NULL:
	 * "/". */
	const char *sysfs_root;
	const char *procfs_root;
	/* Tests only: take the /dev/kvm answers from this text file instead of
	 * asking the device (format in tests/fixtures/kvm/README.md). The
	 * daemon leaves it NULL and always asks the real /dev/kvm. */
	const char *ioctl_facts_path;
};

/*
 * Gathers the facts and decides. Always fills out; returns 0, or -errno
 * when /dev/kvm cannot be opened (out->flavour is then UNKNOWN unless
 * sysfs says enable_pmu=N), or when ioctl_facts_path cannot be read or is
 * malformed (-EINVAL or its -errno; out->flavour is UNKNOWN and out->why
 * says so).
 */
int kvm_detect_run(const struct kvm_detect_opts *opts, struct kvm_detect *out);

/* Reads a fact file (the format of opts.ioctl_facts_path) into the ioctl
 * fields of *out, which the caller zeroed (leaves it does not list stay as
 * they were). 0, -errno, or -EINVAL for a malformed line (its number in
 * *bad_line when not NULL; one past the end when no line says whether
 * /dev/kvm opened). For tests. */
int kvm_detect_read_ioctl_facts(const char *path, struct kvm_detect *out, unsigned *bad_line);

/* The decision (pure): the flavour, and in why (when not NULL) the facts
 * that decided, in one clause. Reads only the fact fields. */
enum kvm_vpmu_flavour kvm_detect_decide(const struct kvm_detect *d, char *why, size_t whylen);
/* kvm_detect_decide without the reason. */
enum kvm_vpmu_flavour kvm_detect_flavour(const struct kvm_detect *d);

const char *kvm_detect_flavour_name(enum kvm_vpmu_flavour f);
/* One sentence each: what the flavour means for guests, and for host perf
 * sessions (what vpmud does about it). */
const char *kvm_detect_flavour_guest_impact(enum kvm_vpmu_flavour f);
const char *kvm_detect_flavour_host_impact(enum kvm_vpmu_flavour f);

/* The decision, then the evidence line by line (what was read, where, and
 * what it says), then the flavour's meaning for guests and for host
 * sessions. snprintf semantics: returns the length it needs. */
int kvm_detect_format(const struct kvm_detect *d, char *buf, size_t len);

/* Both halves of the vpmu extension are there (KVM_CAP_VPMU_ROUTES > 0 and
 * perf's caps/guest_reserve names a mode): guest routes can be enforced. */
bool kvm_detect_has_extension(const struct kvm_detect *d);

/* Parses a sysfs bool ("Y", "N", "1", "0", with optional newline). */
int kvm_detect_parse_bool(const char *s, bool *out);

#endif
