/* SPDX-License-Identifier: MIT */
/*
 * transition: one step of a plan change, as the arbiter emits it and the kvm
 * port applies it. Shared by both so that nothing translates between them.
 *
 * A plan change is an ordered list. Phase 1 holds route downgrades (to
 * multiplexed or disabled) followed by partition shrinks; phase 2 holds
 * partition grows followed by route upgrades (to pass-through). Applied in
 * order, no counter is ever both in a host placement and passed through.
 * In the arbiter's perf-based mode the same steps carry reserved and
 * at-risk routes and the partition is room (arbiter.h); in its mode for
 * mediated or absent vPMUs there are no steps.
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

/*
 * Only 0..2 reach the kvm port's extension (arbiter mode
 * ARB_GUEST_IDENTITY), which sends the pass-through set of each vCPU
 * (include/linux/vpmu_kvm.h): multiplexed and disabled both mean "not
 * passed through" there, and disabled PMCs are outside the guest's shape.
 * The others describe guests the extension does not drive: the arbiter
 * reports them in the other guest modes (arbiter.h, enum arb_guest_mode),
 * for plans and watchers, and the kvm port refuses them.
 */
enum pmc_route {
	PMC_ROUTE_DISABLED = 0,     /* the guest does not have this PMC */
	PMC_ROUTE_MULTIPLEXED = 1,  /* emulated by KVM with a host perf event */
	PMC_ROUTE_PASSTHROUGH = 2,  /* guest PMC i is physical PMC i */
	/* perf-based vPMU (ARB_GUEST_PERF_PINNED): KVM's task-pinned perf
	 * event for this PMC has room: on every CPU the vCPU may run on, a
	 * counter is kept free of CPU-pinned host events for it. perf picks
	 * the counter; no identity. */
	PMC_ROUTE_RESERVED = 3,
	/* perf-based vPMU: no room is kept; a CPU-pinned host event may take
	 * the counter, and the guest's counts may then stop (the event goes
	 * to ERROR until the guest reprograms the PMC). */
	PMC_ROUTE_AT_RISK = 4,
	/* mediated vPMU or no vPMU (ARB_GUEST_NONE): the arbiter claims no
	 * counter for this PMC; what the guest gets is the kernel's doing
	 * (the whole PMU while the vCPU runs, or nothing). */
	PMC_ROUTE_UNMANAGED = 5,
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

	/* TRANSITION_PARTITION only: physical counters of cpu that change
	 * owner (guest <-> host) in this step, whose values must be cleared.
	 * A route step has none: guest PMC values survive a route change
	 * (docs/kvm-api.md, rule K12). */
	uint32_t scrub_gp_mask;
	uint32_t scrub_fixed_mask;
};

const char *transition_route_name(enum pmc_route r);

#endif
