/* SPDX-License-Identifier: MIT */
/*
 * transition: one step of a plan change, as the arbiter emits it and the kvm
 * port applies it. Shared by both so that nothing translates between them.
 *
 * A plan change is an ordered list. Phase 1 holds route downgrades (to
 * multiplexed or disabled) followed by partition shrinks; phase 2 holds
 * partition grows followed by route upgrades (to pass-through). Applied in
 * order, no counter is ever both in a host placement and passed through.
 */
#ifndef VPMU_TRANSITION_H
#define VPMU_TRANSITION_H

#include <stdint.h>


/* Counter bounds of the PERF_GLOBAL_CTRL layout (GP bits 0..31, fixed bits
 * 32..47) and of CPU numbers; pmu/pmu.h has the same bounds and the broker
 * checks at build time that they agree. The arbiter is the lowest layer, so
 * it owns its own copy rather than including the PMU layer. */
#define TRANSITION_MAX_GP 32
#define TRANSITION_MAX_FIXED 16
#define TRANSITION_MAX_CPUS 4096

/* Values match the KVM extension uapi (include/linux/vpmu_kvm.h). */
enum pmc_route {
	PMC_ROUTE_DISABLED = 0,     /* the guest does not have this PMC */
	PMC_ROUTE_MULTIPLEXED = 1,  /* emulated by KVM with a host perf event */
	PMC_ROUTE_PASSTHROUGH = 2,  /* guest PMC i is physical PMC i */
};

enum transition_kind {
	TRANSITION_ROUTES = 1,      /* set every PMC route of one vCPU */
	TRANSITION_PARTITION = 2,   /* set the guest partition of one CPU */
};

struct transition {
	enum transition_kind kind;
	unsigned phase;             /* 1 or 2, see above */

	/* TRANSITION_PARTITION: the new guest partition of cpu (whole masks). */
	int cpu;
	uint32_t guest_gp_mask;
	uint32_t guest_fixed_mask;

	/* TRANSITION_ROUTES: the new routes of vCPU vcpu of VM consumer vm_id. */
	uint64_t vm_id;
	unsigned vcpu;
	uint8_t gp_route[TRANSITION_MAX_GP];       /* enum pmc_route */
	uint8_t fixed_route[TRANSITION_MAX_FIXED]; /* enum pmc_route */

	/* Counters whose values must be cleared because they change owner
	 * (guest <-> host) in this step. For a partition step: physical
	 * counters on cpu; for a route step: the vCPU's guest PMCs. */
	uint32_t scrub_gp_mask;
	uint32_t scrub_fixed_mask;
};

const char *transition_route_name(enum pmc_route r);

#endif
