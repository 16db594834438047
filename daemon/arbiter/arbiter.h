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

#define ARB_NAME_LEN 64
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
 * placed; -ENOMEM. */
int arb_create(const struct arb_inventory *inv, struct arb **out);
void arb_destroy(struct arb *a);

/*
 * Consumer changes. Return 0, or: -EINVAL bad spec, -EEXIST id taken (add),
 * -ENOENT unknown id (update/remove), -ENOMEM, -EBUSY refused: a guaranteed
 * consumer cannot be fully satisfied, or would take from an equal or higher
 * priority one. On -EBUSY and -EINVAL, why (if not NULL) says why, e.g.
 * "guaranteed vm 'db1' vcpu 2 needs PMC 5 on cpu 7, held by guaranteed vm
 * 'web' vcpu 0 (priority 50)". An update keeps the consumer's arrival rank.
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
};

struct arb_cpu_view {
	int cpu;                /* logical CPU number */
	uint32_t guest_gp_mask;
	uint32_t guest_fixed_mask;
	unsigned n_placements;  /* foreign first, then sessions in arbitration order */
	const struct arb_placement *placements; /* valid until the next change */
};
int arb_cpu_plan(const struct arb *a, unsigned idx, struct arb_cpu_view *out);

/* Routes of one vCPU, as enum pmc_route values. -ENOENT if unknown. */
int arb_vcpu_routes(const struct arb *a, uint64_t vm_id, unsigned vcpu,
		    uint8_t gp_route[TRANSITION_MAX_GP], uint8_t fixed_route[TRANSITION_MAX_FIXED]);

struct arb_event_grant {
	bool dedicated;         /* dedicated on every CPU of the session */
	unsigned n_cpus;
	unsigned n_dedicated;   /* CPUs where it holds a counter */
	double share;           /* lowest expected time share over its CPUs */
};
int arb_session_event(const struct arb *a, uint64_t session_id, unsigned event,
		      struct arb_event_grant *out);

/* The transitions of the last accepted change, in application order (phase
 * 1 route downgrades, phase 1 partition shrinks, phase 2 partition grows,
 * phase 2 route upgrades). Valid until the next change. */
size_t arb_transitions(const struct arb *a, const struct transition **out);

/* Recomputes every CPU from scratch and commits the result (it equals the
 * incremental plan; transitions then describe any difference). */
int arb_recompute_full(struct arb *a);

/* Recomputes from scratch on the side and compares with the current plan:
 * 0 equal, 1 different (first difference in why), -ENOMEM. */
int arb_check_full(struct arb *a, char *why, size_t whylen);

#endif
