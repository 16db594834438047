/* SPDX-License-Identifier: MIT */
/* The arbiter's rules on the Ice Lake 8360Y (8 GP, 4 fixed), with plans
 * worked out by hand (docs/arbiter.md walks through the first two). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arbiter/arbiter.h"
#include "icl_events.h"

#define NCPU 8
#define P PMC_ROUTE_PASSTHROUGH
#define M PMC_ROUTE_MULTIPLEXED
#define D PMC_ROUTE_DISABLED
#define R PMC_ROUTE_RESERVED
#define A PMC_ROUTE_AT_RISK
#define U PMC_ROUTE_UNMANAGED

static const int cpu_ids[NCPU] = { 0, 1, 2, 3, 4, 5, 6, 7 };
static const struct arb_foreign watchdog = { "nmi_watchdog", -1, 0xff, 1u << 1 };

static struct arb *mk_inv(enum arb_guest_mode mode, enum arb_partition part, bool with_watchdog)
{
	struct arb_inventory inv = { NCPU, cpu_ids, ICL_NUM_GP, ICL_FIXED_MASK,
				     with_watchdog ? &watchdog : NULL, with_watchdog, mode, part };
	struct arb *a = NULL;
	assert_int_equal(arb_create(&inv, &a), 0);
	return a;
}

static struct arb *mk_mode(enum arb_guest_mode mode, bool with_watchdog)
{
	struct arb_inventory inv = { NCPU, cpu_ids, ICL_NUM_GP, ICL_FIXED_MASK,
				     with_watchdog ? &watchdog : NULL, with_watchdog, mode,
				     ARB_PARTITION_PER_CPU };
	struct arb *a = NULL;
	assert_int_equal(arb_create(&inv, &a), 0);
	return a;
}

static struct arb *mk(bool with_watchdog)
{
	return mk_mode(ARB_GUEST_IDENTITY, with_watchdog);
}

static uint64_t one(unsigned cpu)
{
	return 1ULL << cpu;
}

static int vm(struct arb *a, uint64_t id, const char *name, int prio, enum arb_class cls,
	      uint64_t cpus, unsigned gp, uint32_t fixed, char *why)
{
	struct arb_vcpu_spec v = { &cpus, gp, fixed };
	struct arb_vm_spec s = { id, name, prio, cls, 1, &v };
	return arb_vm_add(a, &s, why, ARB_REASON_LEN);
}

/* A session of n events of one Ice Lake code each. */
static int sess(struct arb *a, uint64_t id, const char *name, int prio, enum arb_class cls,
		uint64_t cpus, unsigned n, const unsigned *codes, char *why)
{
	struct arb_event_spec ev[16];
	static const char *names[16] = { "e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7",
					 "e8", "e9", "e10", "e11", "e12", "e13", "e14", "e15" };
	for (unsigned i = 0; i < n; i++) {
		ev[i].name = names[i];
		icl_event_masks(codes[i], &ev[i].gp_mask, &ev[i].fixed_mask);
	}
	struct arb_session_spec s = { id, name, prio, cls, &cpus, n, ev };
	return arb_session_add(a, &s, why, ARB_REASON_LEN);
}

static void expect_routes(struct arb *a, uint64_t id, const uint8_t gp[8], const uint8_t fx[4])
{
	uint8_t g[TRANSITION_MAX_GP], f[TRANSITION_MAX_FIXED];
	assert_int_equal(arb_vcpu_routes(a, id, 0, g, f), 0);
	assert_memory_equal(g, gp, 8);
	assert_memory_equal(f, fx, 4);
	for (unsigned i = 8; i < TRANSITION_MAX_GP; i++)
		assert_int_equal(g[i], D);
}

static void expect_partition(struct arb *a, unsigned cpu, uint32_t gp, uint32_t fixed)
{
	struct arb_cpu_view v;
	assert_int_equal(arb_cpu_plan(a, cpu, &v), 0);
	assert_int_equal(v.guest_gp_mask, gp);
	assert_int_equal(v.guest_fixed_mask, fixed);
}

static void expect_full_equal(struct arb *a)
{
	char why[256] = "";
	int r = arb_check_full(a, why, sizeof(why));
	if (r)
		fail_msg("incremental plan differs from full: %s", why);
}

static void empty_plan_places_watchdog_on_fixed1(void **state)
{
	(void)state;
	struct arb *a = mk(true);
	struct arb_cpu_view v;
	assert_int_equal(arb_cpu_plan(a, 3, &v), 0);
	assert_int_equal(v.cpu, 3);
	assert_int_equal(v.n_placements, 1);
	assert_int_equal(v.placements[0].holder, ARB_HOLDER_FOREIGN);
	assert_string_equal(v.placements[0].name, "nmi_watchdog");
	assert_int_equal(v.placements[0].counter, ARB_COUNTER_FIXED(1));
	assert_int_equal(arb_generation(a), 0);
	arb_destroy(a);
}

/* Worked example 1 in docs/arbiter.md. */
static void vm_gets_all_but_watchdog_counter(void **state)
{
	(void)state;
	struct arb *a = mk(true);
	char why[ARB_REASON_LEN];
	assert_int_equal(vm(a, 1, "web", 50, ARB_CLASS_PREFERRED, one(2), 8, 0x7, why), 0);
	/* GP 0-7 go first; then fixed1 cannot be had: the watchdog has nowhere
	 * else to go once every GP is in the guest partition. */
	expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, P, P }, (uint8_t[]){ P, M, P, D });
	expect_partition(a, 2, 0xff, 0x5);
	expect_partition(a, 3, 0, 0);

	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	/* Multiplexed routes need no partition: they come in phase 1. */
	assert_int_equal(n, 3);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES);
	assert_int_equal(t[0].phase, 1);
	assert_int_equal(t[0].gp_route[0], D);
	assert_int_equal(t[0].fixed_route[1], M);
	assert_int_equal(t[1].kind, TRANSITION_PARTITION);
	assert_int_equal(t[1].phase, 2);
	assert_int_equal(t[1].cpu, 2);
	assert_int_equal(t[1].guest_gp_mask, 0xff);
	assert_int_equal(t[1].scrub_gp_mask, 0xff);
	assert_int_equal(t[1].scrub_fixed_mask, 0x5);
	assert_int_equal(t[2].kind, TRANSITION_ROUTES);
	assert_int_equal(t[2].phase, 2);
	assert_int_equal(t[2].vm_id, 1);
	assert_int_equal(t[2].gp_route[0], P);
	assert_int_equal(t[2].fixed_route[1], M);
	assert_int_equal(arb_generation(a), 1);
	expect_full_equal(a);
	arb_destroy(a);
}

static void vcpus_on_one_cpu_share_the_partition(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN];
	assert_int_equal(vm(a, 1, "a", 10, ARB_CLASS_GUARANTEED, one(0), 8, 0xf, why), 0);
	assert_int_equal(vm(a, 2, "b", 10, ARB_CLASS_GUARANTEED, one(0), 4, 0x1, why), 0);
	expect_routes(a, 2, (uint8_t[]){ P, P, P, P, D, D, D, D }, (uint8_t[]){ P, D, D, D });
	expect_partition(a, 0, 0xff, 0xf);
	/* Nothing moved for b: its counters were in the partition already. */
	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	assert_int_equal(n, 1);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES);
	arb_destroy(a);
}

static void guaranteed_refused_names_cpu_counter_and_holder(void **state)
{
	(void)state;
	struct arb *a = mk(true);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(vm(a, 1, "web", 50, ARB_CLASS_GUARANTEED, one(7), 8, 0, why), 0);
	uint64_t gen = arb_generation(a);
	const struct transition *t0;
	size_t n0 = arb_transitions(a, &t0);

	/* The watchdog sits on fixed1 and cannot move: every GP is guest. */
	assert_int_equal(vm(a, 2, "db1", 90, ARB_CLASS_GUARANTEED, one(7), 2, 0x2, why), -EBUSY);
	assert_string_equal(why, "guaranteed vm 'db1' vcpu 0 needs fixed 1 on cpu 7, "
				 "held by foreign event 'nmi_watchdog'");

	/* A guaranteed session cannot have a GP 0-3 counter either. */
	unsigned code = 0x0148;
	assert_int_equal(sess(a, 5, "perf", 90, ARB_CLASS_GUARANTEED, one(7), 1, &code, why),
			 -EBUSY);
	assert_string_equal(why, "guaranteed session 'perf' event 'e0' needs PMC 0 on cpu 7, "
				 "held by guaranteed vm 'web' vcpu 0 (priority 50)");

	/* Refusals change nothing. */
	assert_int_equal(arb_generation(a), gen);
	const struct transition *t1;
	assert_int_equal(arb_transitions(a, &t1), n0);
	uint8_t g[TRANSITION_MAX_GP], f[TRANSITION_MAX_FIXED];
	assert_int_equal(arb_vcpu_routes(a, 2, 0, g, f), -ENOENT);
	expect_partition(a, 7, 0xff, 0);
	expect_full_equal(a);
	arb_destroy(a);
}

static void guaranteed_vm_blocked_by_guaranteed_session(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN] = "";
	unsigned codes[8] = { 0x00c4, 0x00c5, 0x010e, 0x0114, 0x02c7, 0x01c2, 0x04a3, 0x10a3 };
	assert_int_equal(sess(a, 9, "web", 50, ARB_CLASS_GUARANTEED, one(7), 6, codes, why), 0);
	/* Three vCPUs; vcpu 2 runs on cpu 7 where six GP are held. */
	uint64_t c0 = one(0), c1 = one(1), c7 = one(7);
	struct arb_vcpu_spec v[3] = { { &c0, 6, 0 }, { &c1, 6, 0 }, { &c7, 6, 0 } };
	struct arb_vm_spec s = { 3, "db1", 80, ARB_CLASS_GUARANTEED, 3, v };
	assert_int_equal(arb_vm_add(a, &s, why, sizeof(why)), -EBUSY);
	/* Two GP are free on cpu 7: PMC 0 and 1 are granted by moving events,
	 * PMC 2 cannot be. */
	assert_string_equal(why, "guaranteed vm 'db1' vcpu 2 needs PMC 2 on cpu 7, "
				 "held by guaranteed session 'web' event 'e2' (priority 50)");
	/* As preferred it is admitted with what is free. */
	s.cls = ARB_CLASS_PREFERRED;
	assert_int_equal(arb_vm_add(a, &s, why, sizeof(why)), 0);
	uint8_t g[TRANSITION_MAX_GP], f[TRANSITION_MAX_FIXED];
	assert_int_equal(arb_vcpu_routes(a, 3, 2, g, f), 0);
	assert_memory_equal(g, ((uint8_t[]){ P, P, M, M, M, M, D, D }), 8);
	assert_int_equal(arb_vcpu_routes(a, 3, 0, g, f), 0);
	assert_memory_equal(g, ((uint8_t[]){ P, P, P, P, P, P, D, D }), 8);
	expect_full_equal(a);
	arb_destroy(a);
}

/* Worked example 2 in docs/arbiter.md. */
static void guaranteed_session_preempts_lower_preferred_vm(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(vm(a, 1, "batch", 10, ARB_CLASS_PREFERRED, one(1), 8, 0, why), 0);
	unsigned codes[2] = { 0x0148, 0x00c4 }; /* GP 0-3 only, any GP */
	assert_int_equal(sess(a, 7, "sre", 50, ARB_CLASS_GUARANTEED, one(1), 2, codes, why), 0);
	/* The session is placed first (GP 0, 1); the VM then claims PMC by PMC
	 * what can be freed by moving it: the GP 0-3 event ends on PMC 3, the
	 * other one on PMC 7. */
	expect_routes(a, 1, (uint8_t[]){ P, P, P, M, P, P, P, M }, (uint8_t[]){ D, D, D, D });
	expect_partition(a, 1, 0x77, 0);
	struct arb_cpu_view v;
	arb_cpu_plan(a, 1, &v);
	assert_int_equal(v.n_placements, 2);
	assert_int_equal(v.placements[0].counter, 3);
	assert_int_equal(v.placements[1].counter, 7);

	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	assert_int_equal(n, 2);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES);
	assert_int_equal(t[0].phase, 1);
	assert_int_equal(t[0].gp_route[3], M);
	assert_int_equal(t[0].gp_route[7], M);
	assert_int_equal(t[0].gp_route[6], P);
	assert_int_equal(t[0].scrub_gp_mask, 0); /* the guest keeps its values */
	assert_int_equal(t[1].kind, TRANSITION_PARTITION);
	assert_int_equal(t[1].phase, 1);
	assert_int_equal(t[1].guest_gp_mask, 0x77);
	assert_int_equal(t[1].scrub_gp_mask, 0x88);
	expect_full_equal(a);

	/* Removing the session gives the counters back, grow before route. */
	assert_int_equal(arb_session_remove(a, 7), 0);
	n = arb_transitions(a, &t);
	assert_int_equal(n, 2);
	assert_int_equal(t[0].kind, TRANSITION_PARTITION);
	assert_int_equal(t[0].phase, 2);
	assert_int_equal(t[1].kind, TRANSITION_ROUTES);
	assert_int_equal(t[1].phase, 2);
	expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, P, P }, (uint8_t[]){ D, D, D, D });
	arb_destroy(a);
}

static void guaranteed_cannot_take_from_higher_preferred(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(vm(a, 1, "big", 60, ARB_CLASS_PREFERRED, one(1), 8, 0, why), 0);
	unsigned codes[2] = { 0x00c4, 0x00c5 };
	assert_int_equal(sess(a, 7, "sre", 60, ARB_CLASS_GUARANTEED, one(1), 2, codes, why), -EBUSY);
	assert_string_equal(why, "guaranteed session 'sre' needs PMC 6 on cpu 1, "
				 "held by preferred vm 'big' vcpu 0 (priority 60)");
	/* Lower priority than the holder: refused too; higher: admitted. */
	assert_int_equal(sess(a, 7, "sre", 59, ARB_CLASS_GUARANTEED, one(1), 2, codes, why), -EBUSY);
	assert_int_equal(sess(a, 7, "sre", 61, ARB_CLASS_GUARANTEED, one(1), 2, codes, why), 0);
	expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, M, M }, (uint8_t[]){ D, D, D, D });
	/* A guaranteed grant is never preempted, whatever comes later. */
	assert_int_equal(vm(a, 2, "vip", 99, ARB_CLASS_PREFERRED, one(1), 8, 0, why), 0);
	expect_routes(a, 2, (uint8_t[]){ P, P, P, P, P, P, M, M }, (uint8_t[]){ D, D, D, D });
	struct arb_event_grant g;
	assert_int_equal(arb_session_event(a, 7, 1, &g), 0);
	assert_true(g.dedicated);
	assert_true(g.share == 1.0);
	expect_full_equal(a);
	arb_destroy(a);
}

static void preferred_sessions_by_priority_then_arrival(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN];
	unsigned six[6] = { 0x00c4, 0x00c5, 0x010e, 0x0114, 0x02c7, 0x01c2 };
	unsigned four[4] = { 0x00c4, 0x00c5, 0x010e, 0x0114 };
	assert_int_equal(sess(a, 1, "low", 10, ARB_CLASS_PREFERRED, one(0), 6, six, why), 0);
	assert_int_equal(sess(a, 2, "high", 20, ARB_CLASS_PREFERRED, one(0), 4, four, why), 0);
	assert_int_equal(sess(a, 3, "tie", 20, ARB_CLASS_PREFERRED, one(0), 1, four, why), 0);
	struct arb_event_grant g;
	for (unsigned e = 0; e < 4; e++) {
		assert_int_equal(arb_session_event(a, 2, e, &g), 0);
		assert_true(g.dedicated);
	}
	/* Equal priority, later arrival: after "high", before "low". */
	assert_int_equal(arb_session_event(a, 3, 0, &g), 0);
	assert_true(g.dedicated);
	unsigned dedicated = 0;
	for (unsigned e = 0; e < 6; e++) {
		assert_int_equal(arb_session_event(a, 1, e, &g), 0);
		dedicated += g.dedicated;
		if (!g.dedicated) /* no GP left beside the dedicated ones */
			assert_true(g.share == 0.0);
	}
	assert_int_equal(dedicated, 3);
	/* Lowering "high" below "low" reorders, arrival rank kept for ties. */
	struct arb_event_spec ev[4];
	for (unsigned i = 0; i < 4; i++) {
		ev[i].name = "x";
		icl_event_masks(four[i], &ev[i].gp_mask, &ev[i].fixed_mask);
	}
	uint64_t c0 = one(0);
	struct arb_session_spec s = { 2, "high", 5, ARB_CLASS_PREFERRED, &c0, 4, ev };
	assert_int_equal(arb_session_update(a, &s, why, sizeof(why)), 0);
	assert_int_equal(arb_session_event(a, 1, 5, &g), 0);
	assert_true(g.dedicated);
	assert_int_equal(arb_session_event(a, 2, 3, &g), 0);
	assert_false(g.dedicated);
	expect_full_equal(a);
	arb_destroy(a);
}

static void matching_finds_what_first_fit_misses(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN];
	/* Four unconstrained events take GP 0-3 first-fit; the four GP 0-3
	 * events after them only fit if those move to GP 4-7. */
	unsigned codes[8] = { 0x00c4, 0x00c5, 0x010e, 0x0114, 0x0148, 0x0160, 0x01d0, 0x01a8 };
	assert_int_equal(sess(a, 1, "s", 10, ARB_CLASS_GUARANTEED, one(0), 8, codes, why), 0);
	struct arb_cpu_view v;
	arb_cpu_plan(a, 0, &v);
	for (unsigned i = 4; i < 8; i++)
		assert_in_range(v.placements[i].counter, 0, 3);
	for (unsigned i = 0; i < 4; i++)
		assert_in_range(v.placements[i].counter, 4, 7);
	/* ref-cycles and slots only fit their fixed counters; a second slots
	 * event cannot be placed anywhere. */
	unsigned fx[3] = { ICL_REF_CYCLES, ICL_SLOTS, ICL_SLOTS };
	assert_int_equal(sess(a, 2, "fx", 5, ARB_CLASS_PREFERRED, one(0), 3, fx, why), 0);
	arb_cpu_plan(a, 0, &v);
	assert_int_equal(v.placements[8].counter, ARB_COUNTER_FIXED(2));
	assert_int_equal(v.placements[9].counter, ARB_COUNTER_FIXED(3));
	assert_int_equal(v.placements[10].counter, -1);
	arb_destroy(a);
}

static void floating_vcpu_needs_counter_on_every_cpu(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN];
	unsigned codes[2] = { 0x0148, 0x0160 }; /* GP 0-3 */
	assert_int_equal(sess(a, 1, "top", 90, ARB_CLASS_PREFERRED, one(1), 2, codes, why), 0);
	/* 4 PMCs; cpu 1 can give only two of GP 0-3. */
	assert_int_equal(vm(a, 2, "f", 50, ARB_CLASS_PREFERRED, one(0) | one(1), 4, 0x1, why), 0);
	expect_routes(a, 2, (uint8_t[]){ P, P, M, M, D, D, D, D }, (uint8_t[]){ P, D, D, D });
	/* Identical partitions on both CPUs, though cpu 0 has room. */
	expect_partition(a, 0, 0x3, 0x1);
	expect_partition(a, 1, 0x3, 0x1);
	/* A pinned vCPU on cpu 0 gets all four and shares GP 0-1. */
	assert_int_equal(vm(a, 3, "p", 40, ARB_CLASS_PREFERRED, one(0), 4, 0, why), 0);
	expect_routes(a, 3, (uint8_t[]){ P, P, P, P, D, D, D, D }, (uint8_t[]){ D, D, D, D });
	expect_partition(a, 0, 0xf, 0x1);
	/* Widening the floating vCPU to cpu 2 changes nothing for it. */
	uint64_t set = one(0) | one(1) | one(2);
	struct arb_vcpu_spec vs = { &set, 4, 0x1 };
	struct arb_vm_spec s = { 2, "f", 50, ARB_CLASS_PREFERRED, 1, &vs };
	assert_int_equal(arb_vm_update(a, &s, why, sizeof(why)), 0);
	expect_routes(a, 2, (uint8_t[]){ P, P, M, M, D, D, D, D }, (uint8_t[]){ P, D, D, D });
	expect_partition(a, 2, 0x3, 0x1);
	expect_full_equal(a);
	arb_destroy(a);
}

static void shared_class_never_holds_a_counter(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN];
	assert_int_equal(vm(a, 1, "s", 99, ARB_CLASS_SHARED, one(0), 8, 0x7, why), 0);
	expect_routes(a, 1, (uint8_t[]){ M, M, M, M, M, M, M, M }, (uint8_t[]){ M, M, M, D });
	expect_partition(a, 0, 0, 0);
	assert_int_equal(arb_transitions(a, &(const struct transition *){ NULL }), 1);
	unsigned code = 0x00c4;
	assert_int_equal(sess(a, 2, "bg", 99, ARB_CLASS_SHARED, one(0), 1, &code, why), 0);
	struct arb_event_grant g;
	assert_int_equal(arb_session_event(a, 2, 0, &g), 0);
	assert_false(g.dedicated);
	/* 12 free counters (8 usable by it) against 11 multiplexed PMCs + 1. */
	assert_true(g.share > 0.66 && g.share < 0.67);
	arb_destroy(a);
}

static void lower_priority_changes_leave_higher_grants_alone(void **state)
{
	(void)state;
	struct arb *a = mk(true);
	char why[ARB_REASON_LEN];
	unsigned codes[3] = { 0x0148, ICL_CYCLES, 0x00c4 };
	assert_int_equal(vm(a, 1, "hi", 80, ARB_CLASS_PREFERRED, one(3) | one(4), 6, 0x1, why), 0);
	uint8_t g0[TRANSITION_MAX_GP], f0[TRANSITION_MAX_FIXED], g1[TRANSITION_MAX_GP], f1[TRANSITION_MAX_FIXED];
	arb_vcpu_routes(a, 1, 0, g0, f0);
	assert_int_equal(sess(a, 2, "lo", 10, ARB_CLASS_PREFERRED, one(3), 3, codes, why), 0);
	assert_int_equal(vm(a, 3, "lo-vm", 10, ARB_CLASS_PREFERRED, one(4), 8, 0xf, why), 0);
	arb_vcpu_routes(a, 1, 0, g1, f1);
	assert_memory_equal(g0, g1, sizeof(g0));
	assert_memory_equal(f0, f1, sizeof(f0));
	assert_int_equal(arb_session_remove(a, 2), 0);
	assert_int_equal(arb_vm_remove(a, 3), 0);
	arb_vcpu_routes(a, 1, 0, g1, f1);
	assert_memory_equal(g0, g1, sizeof(g0));
	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	for (size_t i = 0; i < n; i++)
		if (t[i].kind == TRANSITION_ROUTES)
			assert_int_equal(t[i].vm_id, 3); /* only the one leaving */
	expect_full_equal(a);
	arb_destroy(a);
}

static void bad_input_changes_nothing(void **state)
{
	(void)state;
	struct arb *a = mk(false);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(vm(a, 1, "ok", 1, ARB_CLASS_PREFERRED, one(0), 2, 0, why), 0);
	uint64_t gen = arb_generation(a);
	assert_int_equal(vm(a, 2, "big", 1, ARB_CLASS_PREFERRED, one(0), 9, 0, why), -EINVAL);
	assert_non_null(strstr(why, "exceed the host PMU"));
	assert_int_equal(vm(a, 2, "nofix", 1, ARB_CLASS_PREFERRED, one(0), 1, 0x10, why), -EINVAL);
	assert_int_equal(vm(a, 2, "nocpu", 1, ARB_CLASS_PREFERRED, 0, 1, 0, why), -EINVAL);
	assert_int_equal(vm(a, 2, "far", 1, ARB_CLASS_PREFERRED, one(9), 1, 0, why), -EINVAL);
	assert_int_equal(vm(a, 2, "", 1, ARB_CLASS_PREFERRED, one(0), 1, 0, why), -EINVAL);
	assert_int_equal(vm(a, 2, "cls", 1, (enum arb_class)7, one(0), 1, 0, why), -EINVAL);
	assert_int_equal(vm(a, 1, "dup", 1, ARB_CLASS_PREFERRED, one(0), 1, 0, why), -EEXIST);
	struct arb_event_spec ev = { "none", 0, 0x10 };
	uint64_t c0 = one(0);
	struct arb_session_spec s = { 1, "s", 1, ARB_CLASS_PREFERRED, &c0, 1, &ev };
	assert_int_equal(arb_session_add(a, &s, why, sizeof(why)), -EINVAL);
	assert_int_equal(arb_session_update(a, &s, why, sizeof(why)), -EINVAL);
	ev.gp_mask = 1;
	assert_int_equal(arb_session_update(a, &s, why, sizeof(why)), -ENOENT);
	assert_int_equal(arb_vm_remove(a, 42), -ENOENT);
	assert_int_equal(arb_session_remove(a, 1), -ENOENT);
	assert_int_equal(arb_generation(a), gen);
	expect_partition(a, 0, 0x3, 0);

	/* An inventory whose foreign events cannot all be placed. */
	struct arb_foreign two[2] = { { "a", 0, 0, 0x4 }, { "b", 0, 0, 0x4 } };
	struct arb_inventory inv = { NCPU, cpu_ids, 8, 0xf, two, 2, ARB_GUEST_IDENTITY,
				     ARB_PARTITION_PER_CPU };
	struct arb *b = NULL;
	assert_int_equal(arb_create(&inv, &b), -EINVAL);
	assert_null(b);
	arb_destroy(a);
}

/* ---- perf-based guests (ARB_GUEST_PERF_PINNED) ---- */

static void expect_placement(struct arb *a, unsigned cpu, unsigned i, uint64_t id, int counter,
			     bool kept)
{
	struct arb_cpu_view v;
	assert_int_equal(arb_cpu_plan(a, cpu, &v), 0);
	assert_true(i < v.n_placements);
	assert_int_equal(v.placements[i].id, id);
	assert_int_equal(v.placements[i].counter, counter);
	assert_int_equal(v.placements[i].kept_for_guests, kept);
}

/* Worked example 3 in docs/arbiter.md. */
static void perf_pinned_session_yields_to_vm_room(void **state)
{
	(void)state;
	struct arb *a = mk_mode(ARB_GUEST_PERF_PINNED, true);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(arb_guest_mode(a), ARB_GUEST_PERF_PINNED);

	/* Room for 4 GP PMCs and fixed0 on cpu 2; perf places the events. */
	assert_int_equal(vm(a, 1, "web", 10, ARB_CLASS_PREFERRED, one(2), 4, 0x1, why), 0);
	expect_routes(a, 1, (uint8_t[]){ R, R, R, R, D, D, D, D }, (uint8_t[]){ R, D, D, D });
	expect_partition(a, 2, 0x0f, 0x1);
	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	assert_int_equal(n, 2);
	assert_int_equal(t[0].kind, TRANSITION_PARTITION);
	assert_int_equal(t[0].phase, 2);
	assert_int_equal(t[0].guest_gp_mask, 0x0f);
	assert_int_equal(t[0].scrub_gp_mask, 0); /* perf loads its counters */
	assert_int_equal(t[0].scrub_fixed_mask, 0);
	assert_int_equal(t[1].kind, TRANSITION_ROUTES);
	assert_int_equal(t[1].gp_route[3], R);
	assert_int_equal(t[1].scrub_gp_mask, 0);

	/* A preferred session of higher priority comes after the VM: its GP
	 * 0-3 event would take a counter of the room, so it is multiplexed,
	 * and says why; the others fit beside the room. */
	unsigned codes[3] = { 0x0148, 0x00c4, ICL_INSTRUCTIONS };
	assert_int_equal(sess(a, 7, "prof", 90, ARB_CLASS_PREFERRED, one(2), 3, codes, why), 0);
	expect_placement(a, 2, 1, 7, -1, true);
	expect_placement(a, 2, 2, 7, 4, false);
	expect_placement(a, 2, 3, 7, 5, false);
	expect_routes(a, 1, (uint8_t[]){ R, R, R, R, D, D, D, D }, (uint8_t[]){ R, D, D, D });
	struct arb_event_grant g;
	assert_int_equal(arb_session_event(a, 7, 0, &g), 0);
	assert_false(g.dedicated);
	assert_int_equal(g.n_kept_for_guests, 1);
	assert_int_equal(g.kept_cpu, 2);
	assert_int_equal(g.kept_vm_id, 1);
	assert_string_equal(g.kept_vm, "web");
	assert_true(g.share == 0.0); /* GP 0-3 are all room */
	assert_int_equal(arb_session_event_why(a, 7, 0, why, sizeof(why)), 1);
	assert_string_equal(why, "multiplexed: cpu 2's counters are kept for the perf-based "
				 "PMCs of vm 'web'");
	assert_int_equal(arb_session_event(a, 7, 1, &g), 0);
	assert_true(g.dedicated);
	assert_int_equal(g.n_kept_for_guests, 0);
	assert_int_equal(g.kept_cpu, -1);
	assert_null(g.kept_vm);
	assert_int_equal(arb_session_event_why(a, 7, 1, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	assert_int_equal(arb_session_event_why(a, 7, 3, why, sizeof(why)), -ENOENT);

	/* A guaranteed session comes before every preferred VM, so its GP 0-3
	 * event would displace web's room: refused, whatever its priority. */
	uint64_t gen = arb_generation(a);
	unsigned low4 = 0x0148, any = 0x00c4;
	assert_int_equal(sess(a, 8, "sre", 99, ARB_CLASS_GUARANTEED, one(2), 1, &low4, why), -EBUSY);
	assert_string_equal(why, "guaranteed session 'sre' needs PMC 3 on cpu 2, kept for the "
				 "perf-based PMCs of preferred vm 'web' vcpu 0 (priority 10)");
	assert_int_equal(arb_generation(a), gen);
	/* One that fits beside the room is admitted; the room stays. */
	assert_int_equal(sess(a, 8, "sre", 99, ARB_CLASS_GUARANTEED, one(2), 1, &any, why), 0);
	expect_routes(a, 1, (uint8_t[]){ R, R, R, R, D, D, D, D }, (uint8_t[]){ R, D, D, D });
	expect_placement(a, 2, 1, 8, 4, false);
	assert_int_equal(arb_transitions(a, &t), 0);

	/* A guaranteed VM needs room for all eight GP: sre's event cannot go
	 * anywhere else, so it is refused, naming the PMC it lacks room for. */
	assert_int_equal(vm(a, 2, "db", 50, ARB_CLASS_GUARANTEED, one(2), 8, 0, why), -EBUSY);
	assert_string_equal(why, "guaranteed vm 'db' vcpu 0 needs room for its PMC 7 on cpu 2, "
				 "held by guaranteed session 'sre' event 'e0' (priority 99)");
	expect_full_equal(a);

	/* The same inputs with the extension: the session comes first by
	 * priority and takes a counter the guest would pass through. */
	struct arb *b = mk(true);
	assert_int_equal(vm(b, 1, "web", 10, ARB_CLASS_PREFERRED, one(2), 4, 0x1, why), 0);
	assert_int_equal(sess(b, 7, "prof", 90, ARB_CLASS_PREFERRED, one(2), 3, codes, why), 0);
	expect_routes(b, 1, (uint8_t[]){ P, P, P, M, D, D, D, D }, (uint8_t[]){ P, D, D, D });
	assert_int_equal(arb_session_event_why(b, 7, 0, why, sizeof(why)), 0);
	arb_destroy(b);
	arb_destroy(a);
}

/* Worked example 4 in docs/arbiter.md. */
static void perf_pinned_guaranteed_vm_takes_room_from_lower_preferred_vm(void **state)
{
	(void)state;
	struct arb *a = mk_mode(ARB_GUEST_PERF_PINNED, false);
	char why[ARB_REASON_LEN] = "";
	unsigned ins = ICL_INSTRUCTIONS;
	assert_int_equal(sess(a, 9, "sre", 50, ARB_CLASS_GUARANTEED, one(3), 1, &ins, why), 0);
	assert_int_equal(vm(a, 1, "web", 60, ARB_CLASS_PREFERRED, one(3), 8, 0, why), 0);
	expect_routes(a, 1, (uint8_t[]){ R, R, R, R, R, R, R, R }, (uint8_t[]){ D, D, D, D });
	expect_placement(a, 3, 0, 9, ARB_COUNTER_FIXED(0), false);

	/* db wants room for fixed0: instructions would move to a GP counter,
	 * and web would lose the room for its PMC 7. web's priority is higher
	 * than db's, so db is refused. */
	uint64_t c3 = one(3);
	struct arb_vcpu_spec dv = { &c3, 0, 0x1 };
	struct arb_vm_spec db = { 2, "db", 50, ARB_CLASS_GUARANTEED, 1, &dv };
	assert_int_equal(arb_vm_add(a, &db, why, sizeof(why)), -EBUSY);
	assert_string_equal(why, "guaranteed vm 'db' needs PMC 7 on cpu 3, kept for the "
				 "perf-based PMCs of preferred vm 'web' vcpu 0 (priority 60)");

	/* With web below db's priority, db is admitted and web's PMC 7 is at
	 * risk: the session's pinned event there may stop the guest's count. */
	uint64_t set = one(3);
	struct arb_vcpu_spec wv = { &set, 8, 0 };
	struct arb_vm_spec web = { 1, "web", 10, ARB_CLASS_PREFERRED, 1, &wv };
	assert_int_equal(arb_vm_update(a, &web, why, sizeof(why)), 0);
	assert_int_equal(arb_vm_add(a, &db, why, sizeof(why)), 0);
	expect_routes(a, 1, (uint8_t[]){ R, R, R, R, R, R, R, A }, (uint8_t[]){ D, D, D, D });
	expect_partition(a, 3, 0x7f, 0x1);
	expect_placement(a, 3, 0, 9, 7, false);
	const struct transition *t;
	size_t n = arb_transitions(a, &t);
	assert_int_equal(n, 4);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES); /* web: PMC 7 at risk */
	assert_int_equal(t[0].phase, 1);
	assert_int_equal(t[0].vm_id, 1);
	assert_int_equal(t[0].gp_route[7], A);
	assert_int_equal(t[0].gp_route[6], R);
	assert_int_equal(t[0].scrub_gp_mask, 0);
	assert_int_equal(t[1].kind, TRANSITION_PARTITION); /* room shrinks */
	assert_int_equal(t[1].phase, 1);
	assert_int_equal(t[1].guest_gp_mask, 0x7f);
	assert_int_equal(t[1].guest_fixed_mask, 0);
	assert_int_equal(t[2].kind, TRANSITION_PARTITION); /* then grows */
	assert_int_equal(t[2].phase, 2);
	assert_int_equal(t[2].guest_fixed_mask, 0x1);
	assert_int_equal(t[3].kind, TRANSITION_ROUTES); /* db: fixed0 reserved */
	assert_int_equal(t[3].vm_id, 2);
	assert_int_equal(t[3].fixed_route[0], R);
	expect_full_equal(a);
	arb_destroy(a);
}

/* At-risk guest PMCs are task-pinned: they take free counters before the
 * flexible events instead of rotating with them. */
static void perf_pinned_at_risk_pmcs_come_before_flexible_events(void **state)
{
	(void)state;
	char why[ARB_REASON_LEN] = "";
	unsigned two[2] = { 0x00c4, 0x00c5 }, three[3] = { 0x00c4, 0x00c5, 0x010e };
	double share[2];
	for (int mode = 0; mode < 2; mode++) {
		struct arb *a = mk_mode(mode ? ARB_GUEST_PERF_PINNED : ARB_GUEST_IDENTITY, false);
		assert_int_equal(sess(a, 9, "sre", 50, ARB_CLASS_GUARANTEED, one(3), 2, two, why), 0);
		/* A vCPU floating over cpus 2 and 3 gets 6 of its 8 PMCs: the
		 * session keeps two GP counters on cpu 3. */
		assert_int_equal(vm(a, 1, "float", 10, ARB_CLASS_PREFERRED, one(2) | one(3), 8, 0,
				    why), 0);
		if (mode)
			expect_routes(a, 1, (uint8_t[]){ R, R, R, R, R, R, A, A },
				      (uint8_t[]){ D, D, D, D });
		else
			expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, M, M },
				      (uint8_t[]){ D, D, D, D });
		/* Three flexible events on cpu 2, where GP 6 and 7 are free. */
		assert_int_equal(sess(a, 5, "bg", 1, ARB_CLASS_SHARED, one(2), 3, three, why), 0);
		struct arb_event_grant g;
		assert_int_equal(arb_session_event(a, 5, 2, &g), 0);
		assert_false(g.dedicated);
		share[mode] = g.share;
		expect_full_equal(a);
		arb_destroy(a);
	}
	/* Identity: 2 free counters over 3 events + 2 PMCs spending half
	 * their time here. Perf-based: the at-risk PMCs take 2 x 1/2
	 * counter first, 1 counter is left for 3 events. */
	assert_true(share[0] == 2.0 / 4);
	assert_true(share[1] == 1.0 / 3);
}

/* A preferred VM of any priority comes before preferred sessions: its
 * room is kept from a session of higher priority, the session's event
 * moves to multiplexed and says why, and it gets the counter back when
 * the VM leaves. */
static void perf_pinned_vm_downgrades_preferred_session(void **state)
{
	(void)state;
	struct arb *a = mk_mode(ARB_GUEST_PERF_PINNED, false);
	char why[ARB_REASON_LEN] = "";
	unsigned codes[8] = { 0x00c4, 0x00c5, 0x010e, 0x0114, 0x02c7, 0x01c2, 0x04a3, 0x10a3 };
	/* Spans cpus 0 and 1, all eight GP counters. */
	assert_int_equal(sess(a, 7, "all", 90, ARB_CLASS_PREFERRED, one(0) | one(1), 8, codes, why),
			 0);
	struct arb_event_grant g;
	assert_int_equal(arb_session_event(a, 7, 7, &g), 0);
	assert_true(g.dedicated);
	assert_int_equal(vm(a, 1, "low", 1, ARB_CLASS_PREFERRED, one(0), 2, 0, why), 0);
	expect_routes(a, 1, (uint8_t[]){ R, R, D, D, D, D, D, D }, (uint8_t[]){ D, D, D, D });
	unsigned kept = 0;
	for (unsigned e = 0; e < 8; e++) {
		assert_int_equal(arb_session_event(a, 7, e, &g), 0);
		assert_int_equal(g.n_dedicated, g.n_kept_for_guests ? 1 : 2);
		kept += g.n_kept_for_guests;
	}
	assert_int_equal(kept, 2); /* two events lost cpu 0 to the room */
	assert_int_equal(arb_session_event(a, 7, 6, &g), 0);
	assert_int_equal(g.kept_cpu, 0);
	assert_string_equal(g.kept_vm, "low");
	expect_full_equal(a);
	assert_int_equal(arb_vm_remove(a, 1), 0);
	for (unsigned e = 0; e < 8; e++) {
		assert_int_equal(arb_session_event(a, 7, e, &g), 0);
		assert_true(g.dedicated);
		assert_int_equal(g.n_kept_for_guests, 0);
	}
	expect_full_equal(a);
	arb_destroy(a);
}

/* ---- mediated vPMU or none (ARB_GUEST_NONE) ---- */

static void none_mode_vms_take_nothing(void **state)
{
	(void)state;
	struct arb *a = mk_mode(ARB_GUEST_NONE, true);
	char why[ARB_REASON_LEN] = "";
	assert_int_equal(vm(a, 1, "web", 50, ARB_CLASS_GUARANTEED, one(2), 8, 0x7, why), 0);
	assert_int_equal(arb_generation(a), 1);
	expect_routes(a, 1, (uint8_t[]){ U, U, U, U, U, U, U, U }, (uint8_t[]){ U, U, U, D });
	expect_partition(a, 2, 0, 0);
	const struct transition *t;
	assert_int_equal(arb_transitions(a, &t), 0);
	/* Eight events on eight GP counters, as if web were not there; with
	 * the extension web would have them. */
	unsigned codes[8] = { 0x00c4, 0x00c5, 0x010e, 0x0114, 0x02c7, 0x01c2, 0x04a3, 0x10a3 };
	assert_int_equal(sess(a, 7, "all", 10, ARB_CLASS_GUARANTEED, one(2), 8, codes, why), 0);
	struct arb_event_grant g;
	for (unsigned e = 0; e < 8; e++) {
		assert_int_equal(arb_session_event(a, 7, e, &g), 0);
		assert_true(g.dedicated);
	}
	/* Updates and removals: no step either. */
	uint64_t set = one(2) | one(3);
	struct arb_vcpu_spec vs = { &set, 2, 0 };
	struct arb_vm_spec s = { 1, "web", 50, ARB_CLASS_PREFERRED, 1, &vs };
	assert_int_equal(arb_vm_update(a, &s, why, sizeof(why)), 0);
	expect_routes(a, 1, (uint8_t[]){ U, U, D, D, D, D, D, D }, (uint8_t[]){ D, D, D, D });
	assert_int_equal(arb_transitions(a, &t), 0);
	assert_int_equal(arb_vm_remove(a, 1), 0);
	assert_int_equal(arb_transitions(a, &t), 0);
	assert_int_equal(arb_generation(a), 4);
	uint8_t gr[TRANSITION_MAX_GP], fr[TRANSITION_MAX_FIXED];
	assert_int_equal(arb_vcpu_routes(a, 1, 0, gr, fr), -ENOENT);
	/* Bad shapes are still refused. */
	assert_int_equal(vm(a, 2, "big", 1, ARB_CLASS_PREFERRED, one(0), 9, 0, why), -EINVAL);
	expect_full_equal(a);

	struct arb_inventory inv = { NCPU, cpu_ids, 8, 0xf, NULL, 0, (enum arb_guest_mode)3,
				     ARB_PARTITION_PER_CPU };
	struct arb *b = NULL;
	assert_int_equal(arb_create(&inv, &b), -EINVAL);
	assert_string_equal(arb_guest_mode_name(ARB_GUEST_NONE), "none");
	assert_string_equal(arb_guest_mode_name(ARB_GUEST_PERF_PINNED), "perf-pinned");
	assert_string_equal(transition_route_name(PMC_ROUTE_RESERVED), "reserved");
	assert_string_equal(transition_route_name(PMC_ROUTE_AT_RISK), "at-risk");
	assert_string_equal(transition_route_name(PMC_ROUTE_UNMANAGED), "unmanaged");
	arb_destroy(a);
}

/* Worked example 7 in docs/arbiter.md: one partition for every CPU. */
static void uniform_partition_is_one_mask_for_every_cpu(void **state)
{
	(void)state;
	struct arb *a = mk_inv(ARB_GUEST_IDENTITY, ARB_PARTITION_UNIFORM, true);
	char why[ARB_REASON_LEN] = "";
	const struct transition *t;
	assert_int_equal(arb_partition(a), ARB_PARTITION_UNIFORM);

	/* As in example 1, but the partition is the same on every CPU. */
	assert_int_equal(vm(a, 1, "web", 50, ARB_CLASS_PREFERRED, one(2), 8, 0x7, why), 0);
	expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, P, P }, (uint8_t[]){ P, M, P, D });
	for (unsigned c = 0; c < NCPU; c++)
		expect_partition(a, c, 0xff, 0x5);
	size_t n = arb_transitions(a, &t);
	assert_int_equal(n, 2 + NCPU); /* routes, a partition step per CPU, routes */
	assert_int_equal(t[0].phase, 1);
	for (unsigned c = 0; c < NCPU; c++) {
		assert_int_equal(t[1 + c].kind, TRANSITION_PARTITION);
		assert_int_equal(t[1 + c].cpu, (int)c);
		assert_int_equal(t[1 + c].scrub_gp_mask, 0xff);
	}
	assert_int_equal(t[n - 1].kind, TRANSITION_ROUTES);
	expect_full_equal(a);

	/* A higher-priority session on cpu 5 keeps a GP 0-3 event there: the
	 * prefix ends at GP 3 on every CPU, and the watchdog, free to take a
	 * GP counter again, gives fixed1 up. */
	unsigned codes[2] = { 0x0148, 0x00c4 };
	assert_int_equal(sess(a, 7, "prof", 90, ARB_CLASS_PREFERRED, one(5), 2, codes, why), 0);
	expect_routes(a, 1, (uint8_t[]){ P, P, P, M, M, M, M, M }, (uint8_t[]){ P, P, P, D });
	for (unsigned c = 0; c < NCPU; c++)
		expect_partition(a, c, 0x7, 0x7);
	n = arb_transitions(a, &t);
	assert_int_equal(n, 2 + 2 * NCPU);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES);
	assert_int_equal(t[0].phase, 1);
	assert_int_equal(t[0].gp_route[3], M);
	assert_int_equal(t[0].fixed_route[1], M);
	assert_int_equal(t[0].scrub_gp_mask, 0); /* route steps keep guest values */
	for (unsigned c = 0; c < NCPU; c++) {
		assert_int_equal(t[1 + c].phase, 1);
		assert_int_equal(t[1 + c].guest_gp_mask, 0x7);
		assert_int_equal(t[1 + c].guest_fixed_mask, 0x5);
		assert_int_equal(t[1 + c].scrub_gp_mask, 0xf8);
		assert_int_equal(t[1 + NCPU + c].phase, 2);
		assert_int_equal(t[1 + NCPU + c].guest_fixed_mask, 0x7);
		assert_int_equal(t[1 + NCPU + c].scrub_fixed_mask, 0x2);
	}
	assert_int_equal(t[n - 1].fixed_route[1], P);
	assert_int_equal(t[n - 1].scrub_fixed_mask, 0);
	expect_full_equal(a);

	/* A guaranteed VM on cpu 7 comes first and takes GP 0-3 everywhere:
	 * web would grow the prefix to GP 7 and lose fixed1 to the watchdog,
	 * and prof would lose GP 3 on cpu 5. Refused, naming the first. */
	assert_int_equal(vm(a, 2, "db", 10, ARB_CLASS_GUARANTEED, one(7), 4, 0, why), -EBUSY);
	assert_string_equal(why, "guaranteed vm 'db' needs fixed 1 on cpu 2, held by preferred "
				 "vm 'web' vcpu 0 (priority 50)");
	/* One that wants nothing the partition lacks is admitted, no partition
	 * step. */
	assert_int_equal(vm(a, 2, "db", 10, ARB_CLASS_GUARANTEED, one(7), 3, 0x1, why), 0);
	n = arb_transitions(a, &t);
	assert_int_equal(n, 1);
	assert_int_equal(t[0].kind, TRANSITION_ROUTES);
	assert_int_equal(t[0].phase, 2);
	expect_full_equal(a);

	/* The session leaving gives GP 3-7 back; the watchdog then needs
	 * fixed1 again, so fixed1 leaves the partition first. */
	assert_int_equal(arb_session_remove(a, 7), 0);
	expect_routes(a, 1, (uint8_t[]){ P, P, P, P, P, P, P, P }, (uint8_t[]){ P, M, P, D });
	for (unsigned c = 0; c < NCPU; c++)
		expect_partition(a, c, 0xff, 0x5);
	n = arb_transitions(a, &t);
	assert_int_equal(n, 2 + 2 * NCPU); /* db keeps its routes: no step */
	assert_int_equal(t[0].fixed_route[1], M);
	assert_int_equal(t[1].guest_gp_mask, 0x7);
	assert_int_equal(t[1].guest_fixed_mask, 0x5);
	assert_int_equal(t[1 + NCPU].guest_gp_mask, 0xff);
	expect_full_equal(a);

	/* A guaranteed VM refused for a counter another CPU's events keep. */
	assert_int_equal(arb_vm_remove(a, 2), 0);
	assert_int_equal(arb_vm_remove(a, 1), 0);
	for (unsigned c = 0; c < NCPU; c++)
		expect_partition(a, c, 0, 0);
	unsigned sre_codes[6] = { 0x00c4, 0x00c4, 0x00c4, 0x00c4, 0x00c4, 0x00c4 };
	assert_int_equal(sess(a, 8, "sre", 1, ARB_CLASS_GUARANTEED, one(0), 6, sre_codes, why), 0);
	assert_int_equal(vm(a, 3, "db", 10, ARB_CLASS_GUARANTEED, one(7), 4, 0, why), -EBUSY);
	assert_string_equal(why, "guaranteed vm 'db' vcpu 0 needs PMC 2 in the guest partition of "
				 "every CPU (uniform), and on cpu 0 it is held by guaranteed "
				 "session 'sre' event 'e2' (priority 1)");
	assert_int_equal(vm(a, 3, "db", 10, ARB_CLASS_GUARANTEED, one(7), 2, 0, why), 0);
	for (unsigned c = 0; c < NCPU; c++)
		expect_partition(a, c, 0x3, 0);
	expect_full_equal(a);
	arb_destroy(a);

	/* Only the extension has a reservation to make uniform. */
	struct arb_inventory inv = { NCPU, cpu_ids, 8, 0xf, NULL, 0, ARB_GUEST_PERF_PINNED,
				     ARB_PARTITION_UNIFORM };
	struct arb *b = NULL;
	assert_int_equal(arb_create(&inv, &b), -EINVAL);
	inv.guest_mode = ARB_GUEST_NONE;
	assert_int_equal(arb_create(&inv, &b), -EINVAL);
	inv.partition = (enum arb_partition)2;
	inv.guest_mode = ARB_GUEST_IDENTITY;
	assert_int_equal(arb_create(&inv, &b), -EINVAL);
	assert_null(b);
	assert_string_equal(arb_partition_name(ARB_PARTITION_UNIFORM), "uniform");
	assert_string_equal(arb_partition_name(ARB_PARTITION_PER_CPU), "per-cpu");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_plan_places_watchdog_on_fixed1),
		cmocka_unit_test(vm_gets_all_but_watchdog_counter),
		cmocka_unit_test(vcpus_on_one_cpu_share_the_partition),
		cmocka_unit_test(guaranteed_refused_names_cpu_counter_and_holder),
		cmocka_unit_test(guaranteed_vm_blocked_by_guaranteed_session),
		cmocka_unit_test(guaranteed_session_preempts_lower_preferred_vm),
		cmocka_unit_test(guaranteed_cannot_take_from_higher_preferred),
		cmocka_unit_test(preferred_sessions_by_priority_then_arrival),
		cmocka_unit_test(matching_finds_what_first_fit_misses),
		cmocka_unit_test(floating_vcpu_needs_counter_on_every_cpu),
		cmocka_unit_test(shared_class_never_holds_a_counter),
		cmocka_unit_test(lower_priority_changes_leave_higher_grants_alone),
		cmocka_unit_test(bad_input_changes_nothing),
		cmocka_unit_test(perf_pinned_session_yields_to_vm_room),
		cmocka_unit_test(perf_pinned_guaranteed_vm_takes_room_from_lower_preferred_vm),
		cmocka_unit_test(perf_pinned_at_risk_pmcs_come_before_flexible_events),
		cmocka_unit_test(perf_pinned_vm_downgrades_preferred_session),
		cmocka_unit_test(none_mode_vms_take_nothing),
		cmocka_unit_test(uniform_partition_is_one_mask_for_every_cpu),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
