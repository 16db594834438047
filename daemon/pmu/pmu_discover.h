/* SPDX-License-Identifier: MIT */
/*
 * pmu_discover: what this machine's PMU is, from CPUID, sysfs and procfs.
 * The entry point pmu_discover_host() is declared in pmu.h; this header
 * holds the pieces tests drive directly.
 */
#ifndef VPMU_PMU_DISCOVER_H
#define VPMU_PMU_DISCOVER_H

#include <stddef.h>
#include <stdint.h>

#include "pmu/pmu.h"

/* The CPUID leaves discovery looks at. Leaves beyond the reported maximum
 * are left zero, as the instruction would not define them. */
/*
 * Host discovery. sysfs_root is normally "/" (tests pass a fixture tree);
 * use_cpuid=false skips the instruction (fixture tests). Sets source to
 * PMU_SOURCE_NONE with a reason in why when the host exposes no PMU (no
 * "cpu" device in sysfs: CPUID alone, e.g. under a hypervisor, is not
 * trusted). With PMU_SOURCE_HOST, why holds notes on what could not be read
 * (empty if none). Returns 0 in both cases; negative errno when the trees
 * cannot be read, or -ENODATA when sysfs shows a PMU but no CPUID is given.
 */
struct pmu_host_cpuid; /* pmu_discover.h: CPUID registers injected by tests */
struct pmu_discover_opts {
	const char *sysfs_root;
	const char *procfs_root;
	bool use_cpuid;
	/* Optional, may stay zero-initialised: */
	const struct pmu_host_cpuid *cpuid; /* registers to use when !use_cpuid */
	const char *msr_path;  /* e.g. /dev/cpu/0/msr for PERF_CAPABILITIES; NULL: skip */
};
int pmu_discover_host(const struct pmu_discover_opts *opts, struct pmu_desc *out,
		      char *why, size_t whylen);


struct pmu_host_cpuid {
	char vendor[13];                 /* "GenuineIntel", "AuthenticAMD", ... */
	uint32_t max_leaf, max_ext_leaf;
	struct pmu_cpuid_regs leaf1;     /* family, PDCM (ECX[15]), DS (EDX[21]), hypervisor (ECX[31]) */
	struct pmu_cpuid_regs leaf0a;
	struct pmu_cpuid_regs ext80000001;
	struct pmu_cpuid_regs ext80000022;
};

/* Executes CPUID on the calling CPU. -ENOTSUP where the instruction or
 * leaf 0 is unavailable. */
int pmu_discover_read_host_cpuid(struct pmu_host_cpuid *out);


#endif
