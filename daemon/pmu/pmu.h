/* SPDX-License-Identifier: MIT */
/*
 * pmu: one description of a core PMU, whether read from the host (CPUID,
 * sysfs) or taken from a model (built in or JSON). Every other module sees
 * the PMU only through struct pmu_desc.
 */
#ifndef VPMU_PMU_H
#define VPMU_PMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PMU_MAX_GP 32          /* PERF_GLOBAL_CTRL bits 0..31 */
#define PMU_MAX_FIXED 16       /* PERF_GLOBAL_CTRL bits 32..47 */
#define PMU_MAX_CONSTRAINTS 64
#define PMU_MAX_CPUS 4096
#define PMU_NAME_LEN 64

enum pmu_vendor {
	PMU_VENDOR_UNKNOWN = 0,
	PMU_VENDOR_INTEL,
	PMU_VENDOR_AMD,
};

/* Where a description came from: an operator must always be able to tell a
 * simulated PMU from a real one. */
enum pmu_source {
	PMU_SOURCE_NONE = 0,   /* host exposes no PMU; desc holds no counters */
	PMU_SOURCE_HOST,       /* read from this machine's CPUID and sysfs */
	PMU_SOURCE_BUILTIN,    /* a built-in model: simulated */
	PMU_SOURCE_FILE,       /* a model loaded from JSON: simulated */
};

/*
 * Which counters an event may use. Matching is on the event select (12 bits,
 * AMD's bits 35:32 folded into 11:8) and optionally the umask; the first
 * matching entry in pmu_desc.constraints wins, so umask-specific exceptions
 * are listed before the range they carve out of. An event no entry matches
 * may use every general counter and no fixed counter.
 */
struct pmu_event_constraint {
	uint16_t event_lo;     /* event select range, inclusive */
	uint16_t event_hi;
	int16_t umask;         /* -1: any umask */
	uint32_t gp_mask;      /* general counters allowed (bit i = PMC i) */
	uint32_t fixed_mask;   /* fixed counters that count this event */
};

/* One logical CPU of the inventory. */
struct pmu_cpu {
	int cpu;               /* logical CPU number as the kernel numbers it */
	int core;              /* SMT siblings share a core id */
	int package;
};

struct pmu_desc {
	char model[PMU_NAME_LEN];     /* model name, or "host" */
	char pmu_name[PMU_NAME_LEN];  /* sysfs caps/pmu_name style: "icelake" */
	enum pmu_source source;
	enum pmu_vendor vendor;

	unsigned version;             /* architectural perfmon version (AMD: 2 = PerfMonV2) */
	unsigned num_gp;
	unsigned gp_width;
	uint32_t fixed_mask;          /* bit i: fixed counter i exists */
	unsigned fixed_width;
	unsigned events_mask_len;     /* CPUID.0AH EAX[31:24] */
	uint32_t arch_events_unavailable; /* CPUID.0AH EBX: bit set = event missing */
	bool anythread_deprecated;
	bool perf_metrics;            /* PERF_CAPABILITIES[15]: GLOBAL_CTRL bit 48 */
	bool full_width_write;        /* PERF_CAPABILITIES[13] */
	int pebs_format;              /* PERF_CAPABILITIES[11:8]; -1 = no PEBS */
	bool pebs_baseline;

	struct pmu_event_constraint constraints[PMU_MAX_CONSTRAINTS];
	size_t n_constraints;

	/* Counters held by others on every CPU. The x86 NMI watchdog holds one
	 * pinned cycles event per CPU, placed under the cycles constraint. */
	bool nmi_watchdog;

	/* Topology: the logical CPUs the inventory covers. */
	struct pmu_cpu cpus[PMU_MAX_CPUS];
	unsigned n_cpus;

	/* Added after the first cut; new fields go here so that code written
	 * against the fields above keeps compiling. */
	int max_precise;              /* sysfs caps/max_precise; -1 = unknown */
	unsigned lbr_depth;           /* sysfs caps/branches; 0 = no LBR / unknown */
};

/* Raw CPUID registers, as the instruction returns them. */
struct pmu_cpuid_regs {
	uint32_t eax, ebx, ecx, edx;
};

/*
 * What a guest is granted, from which its CPUID.0AH is computed. This mirrors
 * the knobs KVM and QEMU expose: the number of general PMCs, the fixed
 * counters, and the perfmon version reported.
 */
struct pmu_guest_shape {
	unsigned num_gp;
	uint32_t fixed_mask;
	unsigned version;
};

/* A description with no counters and every "unknown" sentinel set (PEBS and
 * max_precise at -1). Start from this rather than memset(0), because 0 is a
 * valid PEBS format. */
void pmu_desc_init(struct pmu_desc *d);

static inline unsigned pmu_num_fixed(const struct pmu_desc *d)
{
	return (unsigned)__builtin_popcount(d->fixed_mask);
}

static inline uint64_t pmu_gp_bits(unsigned n)
{
	return n >= 64 ? ~0ULL : (1ULL << n) - 1;
}

/* One past the highest CPU number of the inventory: the size of anything
 * indexed by CPU number (CPUs may be offline, so numbers can have gaps). */
unsigned pmu_cpu_span(const struct pmu_desc *d);

/* PERF_GLOBAL_CTRL enable bits: GP in 0..31, fixed at 32+i, metrics at 48. */
uint64_t pmu_global_ctrl_mask(const struct pmu_desc *d);

/* The lines Linux prints at boot for this PMU (x86_pmu_show_pmu_cap, pre-6.18
 * format). Returns the number of bytes written as snprintf does. */
int pmu_format_boot_block(const struct pmu_desc *d, char *buf, size_t len);

/* Decoding: Intel CPUID.0AH and AMD 0x80000022 into a description. */
int pmu_decode_intel_0a(const struct pmu_cpuid_regs *leaf0a, struct pmu_desc *out);
int pmu_decode_amd(const struct pmu_cpuid_regs *ext80000001,
		   const struct pmu_cpuid_regs *ext80000022, unsigned family,
		   struct pmu_desc *out);
/* Raw EAX of CPUID leaf 1 to the displayed family (base + extended), as
 * pmu_decode_amd wants it. */
unsigned pmu_cpuid_family(uint32_t leaf1_eax);
/* PERF_CAPABILITIES (MSR 0x345) fields into the description. */
void pmu_apply_perf_capabilities(uint64_t caps, struct pmu_desc *out);

/* Per-event constraint lookup: config in PERFEVTSEL layout. */
void pmu_event_counters(const struct pmu_desc *d, uint64_t config,
			uint32_t *gp_mask, uint32_t *fixed_mask);

/* Guest view: CPUID.0AH as the guest sees it for a shape granted on host d.
 * Refuses (-EINVAL, message in err) shapes the host cannot back.
 * On an AMD host there is no leaf 0xA: out is leaf 0x80000022 instead
 * (PerfMonV2 bit and counter count; all zero for a version 0 guest, which
 * then finds its counters through perfctr_core). -ENODEV when the host has
 * no counters at all. */
int pmu_guest_cpuid(const struct pmu_desc *host, const struct pmu_guest_shape *shape,
		    struct pmu_cpuid_regs *out, char *err, size_t errlen);
/* What a guest kernel makes of the CPUID computed by pmu_guest_cpuid, so the
 * boot-block printer shows what a Linux guest would print. Intel: regs is
 * leaf 0xA; AMD: regs is leaf 0x80000022 (see pmu_guest_cpuid). Perf metrics,
 * PEBS and full-width writes stay off: the perf-based vPMU does not offer
 * PERF_METRICS, and a guest shape does not describe the rest. */
int pmu_guest_desc(const struct pmu_desc *host, const struct pmu_cpuid_regs *regs,
		   struct pmu_desc *out);
/* The shape KVM's perf-based vPMU gives guests on host d (version <= 2,
 * at most 8 GP on Intel / 6 on AMD, at most 3 fixed). */
void pmu_guest_default_shape(const struct pmu_desc *host, struct pmu_guest_shape *out);

const char *pmu_vendor_name(enum pmu_vendor v);
const char *pmu_source_name(enum pmu_source s);

#endif
