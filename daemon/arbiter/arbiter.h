/* SPDX-License-Identifier: MIT */
/*
 * arbiter: priority allocation of PMU counters between KVM guests and host
 * perf sessions (docs/arbiter.md has the rules and worked examples).
 *
 * Pure C: no I/O, no globals. The broker fills a struct arb_inventory from
 * pmu_desc, feeds consumer changes one at a time and reads back the plan and
 * the transitions of the last change. Every request is all-or-nothing: a
 * request that fails (refusal or bad input) leaves the plan as it was.
 *
 * Counter numbering in placements: 0..31 general PMC i, 32 + j fixed j.
 * CPU sets are bitmaps over inventory indices 0..n_cpus-1 (not CPU numbers),
 * ARB_CPUSET_WORDS(n_cpus) words long.
 */
#ifndef VPMU_ARBITER_H
#define VPMU_ARBITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arbiter/transition.h"

#define ARB_NAME_LEN 65        /* names of 1..64 bytes (the protocol's), and the NUL */
#define ARB_MAX_EVENTS 64       /* per session */
#define ARB_MAX_VCPUS 4096      /* per VM */
#define ARB_COUNTER_FIXED(j) (32 + (j))
#define ARB_REASON_LEN 256      /* enough for any refusal reason */

#define ARB_CPUSET_WORDS(n) (((size_t)(n) + 63) / 64)
static inline void arb_cpuset_add(uint64_t *set, unsigned idx)
{
	set[idx / 64] |= 1ULL << (idx % 64);
}
static inline bool arb_cpuset_has(const uint64_t *set, unsigned idx)
{
	return (set[idx / 64] >> (idx % 64)) & 1;
}

enum arb_class {
	ARB_CLASS_GUARANTEED = 0, /* admitted only if fully satisfied; never preempted */
	ARB_CLASS_PREFERRED = 1,  /* what is free, by priority; may be downgraded */
	ARB_CLASS_SHARED = 2,     /* always multiplexed */
};
const char *arb_class_name(enum arb_class c);

/*
 * What a VM claims, by the vPMU flavour of the host kernel
 * (docs/arbiter.md, "Guest modes"). Sessions follow the same rules in every
 * mode; only what a VM takes, and how its PMCs are routed, differs.
 */
enum arb_guest_mode {
	/* The vpmu extension and its model: guest PMC i passes through as
	 * physical PMC i on every CPU of its vCPU (the guest partition).
	 * Routes: passthrough, multiplexed, disabled. */
	ARB_GUEST_IDENTITY = 0,
	/* The perf-based vPMU: every guest PMC the guest enables is a
	 * task-pinned perf event on the vCPU thread, which perf places on any
	 * free counter, after CPU-pinned events (dedicated session events,
	 * foreign ones) and before flexible ones. The guest partition is room:
	 * counters kept free of CPU-pinned events; an identity partition of n
	 * counters is the witness that any n guest events the guest may
	 * program fit. VMs come before non-guaranteed sessions of their class;
	 * a guaranteed session that would take room a VM has is refused.
	 * Routes: reserved (room kept), at-risk (none), disabled. */
	ARB_GUEST_PERF_PINNED = 1,
	/* The mediated vPMU (the guest owns the whole PMU while its vCPU runs;
	 * host events exclude guest time) or no vPMU: VMs are listed but
	 * claim nothing, have no partition and no route steps; sessions are
	 * arbitrated as if no VM existed. Routes: unmanaged, disabled. */
	ARB_GUEST_NONE = 2,
};
const char *arb_guest_mode_name(enum arb_guest_mode m);

/*
 * Whether the guest partition may differ between CPUs (docs/arbiter.md,
 * "Uniform partition"). The reservation is perf's: a kernel says whether
 * it accepts per-CPU masks, and a first implementation may take only one
 * mask for every CPU. Only ARB_GUEST_IDENTITY has a reservation to make;
 * ARB_PARTITION_UNIFORM with another guest mode is -EINVAL.
 */
enum arb_partition {
	/* Each CPU's guest partition is what the vCPUs that may run there
	 * claimed (the rules of docs/arbiter.md). */
	ARB_PARTITION_PER_CPU = 0,
	/* One guest partition for every CPU: GP 0..k-1 plus the fixed
	 * counters granted, grown in the global order by the vCPUs that want
	 * them, each counter only while the host events placed so far still
	 * fit without it on every CPU. A vCPU passes through exactly the PMCs
	 * of its shape inside that mask, wherever it runs, so no vCPU can
	 * run on a CPU whose reservation lacks one of its pass-through PMCs. */
	ARB_PARTITION_UNIFORM = 1,
};
const char *arb_partition_name(enum arb_partition p);

/* A counter user the arbiter does not manage (NMI watchdog, foreign perf
 * users): always placed first, and nothing may displace it. */
struct arb_foreign {
	const char *name;
	int cpu;                /* inventory index, or -1 for every CPU */
	uint32_t gp_mask;
	uint32_t fixed_mask;
};

struct arb_inventory {
	unsigned n_cpus;
	const int *cpu_ids;     /* logical CPU number of each inventory index */
	unsigned num_gp;        /* general counters per CPU (<= 32) */
	uint32_t fixed_mask;    /* fixed counters per CPU (bits < 16) */
	const struct arb_foreign *foreign;
	unsigned n_foreign;
	enum arb_guest_mode guest_mode; /* 0: ARB_GUEST_IDENTITY */
	enum arb_partition partition;   /* 0: ARB_PARTITION_PER_CPU */
};

struct arb_vcpu_spec {
	const uint64_t *cpus;   /* where this vCPU may run */
	unsigned num_gp;        /* guest PMCs 0..num_gp-1 */
	uint32_t fixed_mask;    /* guest fixed counters */
};

struct arb_vm_spec {
	uint64_t id;
	const char *name;
	int priority;           /* higher wins */
	enum arb_class cls;
	unsigned n_vcpus;
	const struct arb_vcpu_spec *vcpus;
};

struct arb_event_spec {
	const char *name;
	uint32_t gp_mask;       /* general counters the event may use */
	uint32_t fixed_mask;    /* fixed counters that count it */
};

struct arb_session_spec {
	uint64_t id;
	const char *name;
	int priority;
	enum arb_class cls;
	const uint64_t *cpus;   /* one instance of every event on each CPU */
	unsigned n_events;
	const struct arb_event_spec *events;
};

struct arb;

/* -EINVAL on a bad inventory, including foreign events that cannot all be
 * placed, an unknown guest mode or partition mode, or a uniform partition
 * with a guest mode other than ARB_GUEST_IDENTITY; -ENOMEM. */
int arb_create(const struct arb_inventory *inv, struct arb **out);
void arb_destroy(struct arb *a);
enum arb_guest_mode arb_guest_mode(const struct arb *a);
enum arb_partition arb_partition(const struct arb *a);

/*
 * Consumer changes. Return 0, or: -EINVAL bad spec, -EEXIST id taken (add),
 * -ENOENT unknown id (update/remove), -ENOMEM, -EBUSY refused: a guaranteed
 * consumer cannot be fully satisfied, or would take from an equal or higher
 * priority one. On -EBUSY and -EINVAL, why (if not NULL) says why, e.g.
 * "guaranteed vm 'db1' vcpu 2 needs PMC 5 on cpu 7, held by guaranteed vm
 * 'web' vcpu 0 (priority 50)". With ARB_GUEST_PERF_PINNED a vCPU "needs
 * room for its PMC 5", and room a VM has is "kept for the perf-based PMCs
 * of" it. An update keeps the consumer's arrival rank.
 */
int arb_vm_add(struct arb *a, const struct arb_vm_spec *vm, char *why, size_t whylen);
int arb_vm_update(struct arb *a, const struct arb_vm_spec *vm, char *why, size_t whylen);
int arb_vm_remove(struct arb *a, uint64_t id);
int arb_session_add(struct arb *a, const struct arb_session_spec *s, char *why, size_t whylen);
int arb_session_update(struct arb *a, const struct arb_session_spec *s, char *why, size_t whylen);
int arb_session_remove(struct arb *a, uint64_t id);

/*
 * Whether adds and updates go through admission (default: yes). Admission
 * is a gate on arrival, not part of the plan: the plan is a function of the
 * ordered set of consumers alone. A set that was admitted one change at a
 * time (a guaranteed session admitted, then a VM updated to a priority that
 * would have kept the session out) is therefore replayed at restart with
 * the gate off, so that it comes back exactly as it was acknowledged.
 */
void arb_set_admission(struct arb *a, bool enforce);

/* Counts accepted changes; a refused request leaves it unchanged. */
uint64_t arb_generation(const struct arb *a);
unsigned arb_n_cpus(const struct arb *a);

enum arb_holder {
	ARB_HOLDER_FOREIGN = 1, /* id: index in the inventory's foreign list */
	ARB_HOLDER_SESSION = 2, /* id: session id */
};

struct arb_placement {
	enum arb_holder holder;
	uint64_t id;
	unsigned event;         /* index in the session's events */
	const char *name;       /* event name; valid while the plan is */
	int counter;            /* -1: multiplexed */
	double share;           /* expected time share: 1 when dedicated */
	/* ARB_GUEST_PERF_PINNED: multiplexed only because counters on this
	 * CPU are kept for guest PMCs (it would have been dedicated, in its
	 * place in the order, without that room). */
	bool kept_for_guests;
};

struct arb_cpu_view {
	int cpu;                /* logical CPU number */
	/* The guest partition; in ARB_GUEST_PERF_PINNED the room kept free of
	 * CPU-pinned host events (perf, not these bits, places the guest's
	 * events); always 0 in ARB_GUEST_NONE; with ARB_PARTITION_UNIFORM
	 * the same on every CPU. */
	uint32_t guest_gp_mask;
	uint32_t guest_fixed_mask;
	unsigned n_placements;  /* foreign first, then sessions in arbitration order */
	const struct arb_placement *placements; /* valid until the next change */
};
int arb_cpu_plan(const struct arb *a, unsigned idx, struct arb_cpu_view *out);

/* Routes of one vCPU, as enum pmc_route values: by guest mode, granted
 * PMCs are passthrough (identity) or reserved (perf-pinned), others it has
 * multiplexed or at-risk; with ARB_GUEST_NONE every PMC it has is
 * unmanaged. PMCs it lacks are disabled. -ENOENT if unknown. */
int arb_vcpu_routes(const struct arb *a, uint64_t vm_id, unsigned vcpu,
		    uint8_t gp_route[TRANSITION_MAX_GP], uint8_t fixed_route[TRANSITION_MAX_FIXED]);

struct arb_event_grant {
	bool dedicated;         /* dedicated on every CPU of the session */
	unsigned n_cpus;
	unsigned n_dedicated;   /* CPUs where it holds a counter */
	double share;           /* lowest expected time share over its CPUs */
	/* ARB_GUEST_PERF_PINNED: CPUs where it is multiplexed only because
	 * counters there are kept for guest PMCs (placement kept_for_guests),
	 * the first of them and a VM they are kept for: the first VM in the
	 * order, before the session, whose room there the event could use
	 * (else any room there). 0, -1, 0 and NULL when there is none. */
	unsigned n_kept_for_guests;
	int kept_cpu;           /* logical CPU number */
	uint64_t kept_vm_id;
	const char *kept_vm;    /* VM name; valid until the next change */
};
int arb_session_event(const struct arb *a, uint64_t session_id, unsigned event,
		      struct arb_event_grant *out);

/* Why a session event is multiplexed, when the arbiter knows a reason the
 * session cannot see: today, counters kept for perf-based guest PMCs, e.g.
 * "multiplexed: cpu 3's counters are kept for the perf-based PMCs of vm
 * 'web'" (with " (and on N more CPUs)" when it applies to several).
 * Returns 1 with the reason in why, 0 with "" when there is none, -ENOENT
 * for an unknown session or event. */
int arb_session_event_why(const struct arb *a, uint64_t session_id, unsigned event, char *why,
			  size_t whylen);

/* The transitions of the last accepted change, in application order (phase
 * 1 route downgrades, phase 1 partition shrinks, phase 2 partition grows,
 * phase 2 route upgrades). Valid until the next change. Only those of
 * ARB_GUEST_IDENTITY are for the kvm port's extension. In
 * ARB_GUEST_PERF_PINNED they carry reserved and at-risk routes and room
 * partitions, and scrub nothing (perf loads a counter when it places an
 * event there); they tell watchers, nothing applies them. In
 * ARB_GUEST_NONE there are none. With ARB_PARTITION_UNIFORM a change of
 * the partition has a partition step for every CPU. */
size_t arb_transitions(const struct arb *a, const struct transition **out);

/* Recomputes every CPU from scratch and commits the result (it equals the
 * incremental plan; transitions then describe any difference). */
int arb_recompute_full(struct arb *a);

/* Recomputes from scratch on the side and compares with the current plan:
 * 0 equal, 1 different (first difference in why), -ENOMEM. */
int arb_check_full(struct arb *a, char *why, size_t whylen);

#endif
