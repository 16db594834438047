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

#include "pmu.h"

/* The CPUID leaves discovery looks at. Leaves beyond the reported maximum
 * are left zero, as the instruction would not define them. */
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
int pmu_read_host_cpuid(struct pmu_host_cpuid *out);

/* Parses a kernel CPU list ("0-3,8,10-11\n") into ascending CPU numbers.
 * -EINVAL on syntax errors or descending ranges, -E2BIG beyond max. */
int pmu_parse_cpulist(const char *s, int *cpus, unsigned max, unsigned *n);

#endif
