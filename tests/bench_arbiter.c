/* SPDX-License-Identifier: MIT */
/*
 * vpmu-bench-arbiter: figures for the arbiter, measured on this machine
 * with synthetic (seeded) inputs on the Ice Lake 8360Y model:
 *  1. replan latency after one attach or detach on 512 CPUs, 2000 vCPUs,
 *     200 host sessions, and a full replan;
 *  2. share of feasible random Ice Lake event sets placed by our matching
 *     and by a perf-style greedy pass;
 *  3. one seeded trace of VM and session arrivals/departures: priority-
 *     weighted pass-through coverage and grant changes, for the arbiter and
 *     three baselines (static split, all-or-nothing, all-multiplexed);
 *  4. the replan of 1. with the same seed in the other guest modes
 *     (perf-based guests, unmanaged guests), run last so that 1.-3. keep
 *     their inputs.
 * --json prints one object; --smoke runs small sizes (CI).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arbiter/arbiter.h"
#include "icl_events.h"
#include "arbiter/matching.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *x, const void *y)
{
	double p = *(const double *)x, q = *(const double *)y;
	return p < q ? -1 : p > q;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "vpmu-bench-arbiter: %s: %s\n", what, strerror(-r));
	exit(1);
}

static void random_event(struct arb_event_spec *e)
{
	e->name = "ev";
	icl_event_masks(icl_event_pool[below(ICL_EVENT_POOL_N)], &e->gp_mask, &e->fixed_mask);
}

/* ---- 1. replan latency ---- */

#define BIG_CPUS 512
#define BIG_WORDS (BIG_CPUS / 64)
#define NODE 16 /* floating vCPUs roam over one 16-CPU node */

struct big_vm {
	uint64_t sets[4][BIG_WORDS];
	struct arb_vcpu_spec v[4];
	struct arb_vm_spec s;
	char name[16];
};

static void big_vm_make(struct big_vm *m, uint64_t id)
{
	unsigned n = 4;
	bool pinned = below(2);
	unsigned node = below(BIG_CPUS / NODE);
	memset(m->sets, 0, sizeof(m->sets));
	for (unsigned i = 0; i < n; i++) {
		if (pinned) {
			arb_cpuset_add(m->sets[i], below(BIG_CPUS));
		} else {
			for (unsigned c = 0; c < NODE; c++)
				arb_cpuset_add(m->sets[i], node * NODE + c);
		}
		m->v[i] = (struct arb_vcpu_spec){ m->sets[i], below(4) ? 8 : 4, 0x7 };
	}
	unsigned k = below(20);
	snprintf(m->name, sizeof(m->name), "vm%llu", (unsigned long long)id);
	m->s = (struct arb_vm_spec){ id, m->name, (int)below(100),
				     k == 0 ? ARB_CLASS_GUARANTEED : k == 1 ? ARB_CLASS_SHARED
									 : ARB_CLASS_PREFERRED,
				     n, m->v };
}

static int add_vm(struct arb *a, struct big_vm *m)
{
	char why[ARB_REASON_LEN];
	int r = arb_vm_add(a, &m->s, why, sizeof(why));
	if (r == -EBUSY) { /* a refused guaranteed VM comes back as preferred */
		m->s.cls = ARB_CLASS_PREFERRED;
		r = arb_vm_add(a, &m->s, why, sizeof(why));
	}
	return r;
}

struct latency {
	double p50_us, p99_us, full_ms;
	unsigned ops;
};

static struct latency bench_replan(enum arb_guest_mode mode, enum arb_partition part,
				   unsigned n_vms, unsigned n_sessions, unsigned ops)
{
	int ids[BIG_CPUS];
	for (unsigned c = 0; c < BIG_CPUS; c++)
		ids[c] = (int)c;
	struct arb_foreign wd = { "nmi_watchdog", -1, 0xff, 1u << 1 };
	struct arb_inventory inv = { BIG_CPUS, ids, ICL_NUM_GP, ICL_FIXED_MASK, &wd, 1, mode, part };
	struct arb *a;
	int r;

	if ((r = arb_create(&inv, &a)))
		die("arb_create", r);
	struct big_vm *vms = calloc(n_vms, sizeof(*vms));
	for (unsigned i = 0; i < n_vms; i++) {
		big_vm_make(&vms[i], i + 1);
		if ((r = add_vm(a, &vms[i])))
			die("add vm", r);
	}
	/* Sessions: 5% system-wide, the rest on 1..16 CPUs of one node. */
	for (unsigned i = 0; i < n_sessions; i++) {
		uint64_t set[BIG_WORDS] = { 0 };
		struct arb_event_spec ev[6];
		unsigned n_ev = 1 + below(6);
		if (i % 20 == 0) {
			memset(set, 0xff, sizeof(set));
		} else {
			unsigned node = below(BIG_CPUS / NODE), w = 1 + below(NODE);
			for (unsigned c = 0; c < w; c++)
				arb_cpuset_add(set, node * NODE + c);
		}
		for (unsigned e = 0; e < n_ev; e++)
			random_event(&ev[e]);
		struct arb_session_spec s = { i + 1, "perf", (int)below(100),
					      below(20) ? ARB_CLASS_PREFERRED : ARB_CLASS_SHARED,
					      set, n_ev, ev };
		char why[ARB_REASON_LEN];
		if ((r = arb_session_add(a, &s, why, sizeof(why))))
			die("add session", r);
	}

	double *t = malloc(2 * ops * sizeof(double));
	for (unsigned i = 0; i < ops; i++) {
		struct big_vm *m = &vms[below(n_vms)];
		double t0 = now_us();
		if ((r = arb_vm_remove(a, m->s.id)))
			die("detach", r);
		double t1 = now_us();
		if ((r = add_vm(a, m)))
			die("attach", r);
		double t2 = now_us();
		t[2 * i] = t1 - t0;
		t[2 * i + 1] = t2 - t1;
	}
	qsort(t, 2 * ops, sizeof(double), cmp_double);
	struct latency L = { t[ops], t[(size_t)(2 * ops * 0.99)], 0, 2 * ops };

	double full[5];
	for (unsigned i = 0; i < 5; i++) {
		double t0 = now_us();
		if ((r = arb_recompute_full(a)))
			die("full replan", r);
		full[i] = (now_us() - t0) / 1000;
	}
	qsort(full, 5, sizeof(double), cmp_double);
	L.full_ms = full[2];
	char why[256];
	if (arb_check_full(a, why, sizeof(why)) != 0) {
		fprintf(stderr, "vpmu-bench-arbiter: incremental != full: %s\n", why);
		exit(1);
	}
	free(t);
	free(vms);
	arb_destroy(a);
	return L;
}

/* ---- 2. matching vs greedy ---- */

/* Hall's condition over every subset of events: the independent oracle. */
static bool feasible(const uint64_t *m, unsigned n, uint64_t avail)
{
	for (unsigned s = 1; s < (1u << n); s++) {
		uint64_t nb = 0;
		for (unsigned i = 0; i < n; i++)
			if (s & (1u << i))
				nb |= m[i] & avail;
		if (__builtin_popcountll(nb) < __builtin_popcount(s))
			return false;
	}
	return true;
}

/* perf's x86 scheduler without its fast path: events by increasing weight
 * (counters allowed), each taking a fixed counter if it can, else the
 * lowest free general one. No backtracking. */
static bool greedy(const uint64_t *m, unsigned n, uint64_t avail)
{
	uint64_t used = 0;
	for (int wgt = 1; wgt <= 64; wgt++)
		for (unsigned i = 0; i < n; i++) {
			uint64_t mm = m[i] & avail;
			if (__builtin_popcountll(mm) != wgt)
				continue;
			uint64_t free_c = mm & ~used;
			if (!free_c)
				return false;
			uint64_t fx = free_c & ~0xffffffffULL;
			used |= 1ULL << __builtin_ctzll(fx ? fx : free_c);
		}
	for (unsigned i = 0; i < n; i++)
		if (!(m[i] & avail))
			return false;
	return true;
}

/* First fit in arrival order, no weight sort: what an incremental
 * scheduler without perf's reordering does. */
static bool first_fit(const uint64_t *m, unsigned n, uint64_t avail)
{
	uint64_t used = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t free_c = m[i] & avail & ~used;
		if (!free_c)
			return false;
		uint64_t fx = free_c & ~0xffffffffULL;
		used |= 1ULL << __builtin_ctzll(fx ? fx : free_c);
	}
	return true;
}

struct placed {
	unsigned sets, feasible;
	double matching_pct, greedy_pct, first_fit_pct;
};

static struct placed bench_matching(unsigned sets)
{
	struct placed p = { sets, 0, 0, 0, 0 };
	unsigned by_match = 0, by_greedy = 0, by_ff = 0;
	for (unsigned k = 0; k < sets; k++) {
		unsigned n = 2 + below(11);
		uint64_t m[12];
		/* Host partition: all counters, or what a guest partition left. */
		uint64_t avail = matching_counters(0xff, 0xf);
		if (below(2))
			avail &= ~matching_counters((uint32_t)rnd() & 0xff, (uint32_t)rnd() & 0x5);
		for (unsigned i = 0; i < n; i++) {
			uint32_t gp, fx;
			icl_event_masks(icl_event_pool[below(ICL_EVENT_POOL_N)], &gp, &fx);
			m[i] = matching_counters(gp, fx);
		}
		if (!feasible(m, n, avail))
			continue;
		p.feasible++;
		struct match mt;
		matching_init(&mt, avail);
		bool ok = true;
		for (unsigned i = 0; i < n && ok; i++)
			ok = matching_add(&mt, m[i]) >= 0;
		by_match += ok;
		by_greedy += greedy(m, n, avail);
		by_ff += first_fit(m, n, avail);
	}
	p.matching_pct = p.feasible ? 100.0 * by_match / p.feasible : 0;
	p.greedy_pct = p.feasible ? 100.0 * by_greedy / p.feasible : 0;
	p.first_fit_pct = p.feasible ? 100.0 * by_ff / p.feasible : 0;
	return p;
}

/* ---- 3. trace: vpmu against baselines ---- */

#define TR_CPUS 64
#define TR_MAX 96
#define TR_EV 6

enum policy { POL_VPMU, POL_STATIC, POL_AON, POL_MUX, N_POL };
static const char *pol_name[N_POL] = { "vpmu", "static_split", "all_or_nothing",
				       "all_multiplexed" };

struct tc {
	bool vm;
	uint64_t id;
	int prio;
	uint64_t seq;
	unsigned n;                 /* vCPUs or events */
	uint64_t set[4];            /* vCPU sets; set[0] for a session */
	uint64_t want;              /* per vCPU (same shape for all) */
	uint64_t ev[TR_EV];
};

/* What each consumer holds under one policy. */
struct grants {
	uint64_t id[TR_MAX];
	bool vm[TR_MAX];
	uint64_t pt[TR_MAX][4];         /* vCPU pass-through masks */
	uint64_t ded[TR_MAX][TR_CPUS];  /* session: dedicated events per CPU */
	unsigned n;
};

static int tc_order(const void *x, const void *y)
{
	const struct tc *p = *(struct tc *const *)x, *q = *(struct tc *const *)y;
	if (p->prio != q->prio)
		return p->prio > q->prio ? -1 : 1;
	return p->seq < q->seq ? -1 : p->seq > q->seq;
}

/* Baselines, each recomputed from scratch in priority order. */
static void baseline(enum policy pol, struct tc *live, unsigned n, struct grants *g)
{
	struct tc *ord[TR_MAX];
	struct match m[TR_CPUS];
	bool guest_owned[TR_CPUS] = { false }, host_owned[TR_CPUS] = { false };
	uint64_t host = matching_counters(0xff, 0xf);

	if (pol == POL_STATIC)
		host = matching_counters(0xf0, 0xf); /* guests get GP 0-3 everywhere */
	for (unsigned c = 0; c < TR_CPUS; c++)
		matching_init(&m[c], host);
	for (unsigned i = 0; i < n; i++)
		ord[i] = &live[i];
	qsort(ord, n, sizeof(*ord), tc_order);
	memset(g, 0, sizeof(*g));
	g->n = n;
	for (unsigned i = 0; i < n; i++) {
		struct tc *t = ord[i];
		unsigned k = (unsigned)(t - live);
		g->id[k] = t->id;
		g->vm[k] = t->vm;
		if (t->vm) {
			for (unsigned v = 0; v < t->n; v++) {
				if (pol == POL_STATIC) {
					g->pt[k][v] = t->want & matching_counters(0x0f, 0);
				} else if (pol == POL_AON) {
					bool free_cpus = true;
					for (unsigned c = 0; c < TR_CPUS; c++)
						if (((t->set[v] >> c) & 1) && host_owned[c])
							free_cpus = false;
					if (free_cpus) {
						g->pt[k][v] = t->want;
						for (unsigned c = 0; c < TR_CPUS; c++)
							if ((t->set[v] >> c) & 1)
								guest_owned[c] = true;
					}
				}
			}
			continue;
		}
		for (unsigned c = 0; c < TR_CPUS; c++) {
			if (!((t->set[0] >> c) & 1))
				continue;
			/* all-or-nothing: on a guest-owned CPU host events must
			 * exclude guest time, so none is truly dedicated there */
			if (pol == POL_AON && guest_owned[c])
				continue;
			for (unsigned e = 0; e < t->n; e++)
				if (matching_add(&m[c], t->ev[e]) >= 0) {
					g->ded[k][c] |= 1ULL << e;
					host_owned[c] = true;
				}
		}
	}
}

static void from_arbiter(struct arb *a, struct tc *live, unsigned n, struct grants *g)
{
	memset(g, 0, sizeof(*g));
	g->n = n;
	for (unsigned k = 0; k < n; k++) {
		g->id[k] = live[k].id;
		g->vm[k] = live[k].vm;
		if (live[k].vm) {
			for (unsigned v = 0; v < live[k].n; v++) {
				uint8_t gp[TRANSITION_MAX_GP], fx[TRANSITION_MAX_FIXED];
				arb_vcpu_routes(a, live[k].id, v, gp, fx);
				for (unsigned i = 0; i < 8; i++)
					if (gp[i] == PMC_ROUTE_PASSTHROUGH)
						g->pt[k][v] |= 1ULL << i;
				for (unsigned i = 0; i < 4; i++)
					if (fx[i] == PMC_ROUTE_PASSTHROUGH)
						g->pt[k][v] |= 1ULL << (32 + i);
			}
		}
	}
	for (unsigned c = 0; c < TR_CPUS; c++) {
		struct arb_cpu_view cv;
		arb_cpu_plan(a, c, &cv);
		for (unsigned i = 0; i < cv.n_placements; i++) {
			const struct arb_placement *p = &cv.placements[i];
			if (p->holder != ARB_HOLDER_SESSION || p->counter < 0)
				continue;
			for (unsigned k = 0; k < n; k++)
				if (!live[k].vm && live[k].id == p->id)
					g->ded[k][c] |= 1ULL << p->event;
		}
	}
}

static double coverage_of(const struct tc *live, unsigned n, const struct grants *g)
{
	double num = 0, den = 0;
	for (unsigned k = 0; k < n; k++) {
		if (!live[k].vm)
			continue;
		for (unsigned v = 0; v < live[k].n; v++) {
			double w = live[k].prio;
			num += w * __builtin_popcountll(g->pt[k][v]) / __builtin_popcountll(live[k].want);
			den += w;
		}
	}
	return den > 0 ? num / den : 0;
}

/* Grant changes of consumers other than the one that arrived or left. */
static unsigned changes(const struct grants *o, const struct grants *n, uint64_t except_id,
			bool except_vm)
{
	unsigned d = 0;
	for (unsigned i = 0; i < n->n; i++) {
		if (n->id[i] == except_id && n->vm[i] == except_vm)
			continue;
		for (unsigned j = 0; j < o->n; j++) {
			if (o->id[j] != n->id[i] || o->vm[j] != n->vm[i])
				continue;
			for (unsigned v = 0; v < 4; v++)
				d += (unsigned)__builtin_popcountll(o->pt[j][v] ^ n->pt[i][v]);
			for (unsigned c = 0; c < TR_CPUS; c++)
				d += (unsigned)__builtin_popcountll(o->ded[j][c] ^ n->ded[i][c]);
		}
	}
	return d;
}

struct trace_result {
	unsigned steps;
	double coverage[N_POL];
	unsigned grant_changes[N_POL];
};

static int arb_apply(struct arb *a, const struct tc *t, bool add)
{
	char why[ARB_REASON_LEN];
	if (!add)
		return t->vm ? arb_vm_remove(a, t->id) : arb_session_remove(a, t->id);
	if (t->vm) {
		struct arb_vcpu_spec v[4];
		for (unsigned i = 0; i < t->n; i++)
			v[i] = (struct arb_vcpu_spec){ &t->set[i], 8, 0x7 };
		struct arb_vm_spec s = { t->id, "vm", t->prio, ARB_CLASS_PREFERRED, t->n, v };
		return arb_vm_add(a, &s, why, sizeof(why));
	}
	struct arb_event_spec ev[TR_EV];
	for (unsigned e = 0; e < t->n; e++)
		ev[e] = (struct arb_event_spec){ "ev", (uint32_t)t->ev[e],
						 (uint32_t)(t->ev[e] >> 32) };
	struct arb_session_spec s = { t->id, "perf", t->prio, ARB_CLASS_PREFERRED, &t->set[0],
				      t->n, ev };
	return arb_session_add(a, &s, why, sizeof(why));
}

static struct trace_result bench_trace(enum arb_partition part, unsigned steps)
{
	int ids[TR_CPUS];
	for (unsigned c = 0; c < TR_CPUS; c++)
		ids[c] = (int)c;
	struct arb_inventory inv = { TR_CPUS, ids, ICL_NUM_GP, ICL_FIXED_MASK, NULL, 0,
				     ARB_GUEST_IDENTITY, part };
	struct arb *a;
	int r;
	if ((r = arb_create(&inv, &a)))
		die("arb_create", r);
	struct tc *live = calloc(TR_MAX, sizeof(*live));
	struct grants *prev = calloc(N_POL, sizeof(*prev)), *cur = calloc(N_POL, sizeof(*cur));
	struct trace_result res = { steps, { 0 }, { 0 } };
	unsigned n = 0;
	uint64_t next_id = 1;

	for (unsigned s = 0; s < steps; s++) {
		bool add = n == 0 || (n < TR_MAX && below(100) < 55);
		struct tc t;
		if (add) {
			memset(&t, 0, sizeof(t));
			t.vm = below(2);
			t.id = next_id++;
			t.seq = t.id;
			t.prio = 1 + (int)below(100);
			if (t.vm) {
				t.n = 1 + below(4);
				t.want = matching_counters(0xff, 0x7);
				unsigned node = below(TR_CPUS / 8);
				for (unsigned v = 0; v < t.n; v++)
					t.set[v] = below(2) ? 1ULL << below(TR_CPUS)
							    : 0xffULL << (node * 8);
			} else {
				t.n = 1 + below(TR_EV);
				t.set[0] = below(4) ? 0xffULL << (below(TR_CPUS / 8) * 8) : ~0ULL;
				for (unsigned e = 0; e < t.n; e++) {
					uint32_t gp, fx;
					icl_event_masks(icl_event_pool[below(ICL_EVENT_POOL_N)], &gp, &fx);
					t.ev[e] = matching_counters(gp, fx);
				}
			}
			if ((r = arb_apply(a, &t, true)))
				die("trace attach", r);
			live[n++] = t;
		} else {
			unsigned k = below(n);
			t = live[k];
			if ((r = arb_apply(a, &t, false)))
				die("trace detach", r);
			live[k] = live[--n];
		}
		for (int p = 0; p < N_POL; p++) {
			if (p == POL_VPMU)
				from_arbiter(a, live, n, &cur[p]);
			else
				baseline((enum policy)p, live, n, &cur[p]);
			res.coverage[p] += coverage_of(live, n, &cur[p]);
			if (s)
				res.grant_changes[p] += changes(&prev[p], &cur[p], t.id, t.vm);
			prev[p] = cur[p];
		}
	}
	for (int p = 0; p < N_POL; p++)
		res.coverage[p] = 100 * res.coverage[p] / steps;
	free(live);
	free(prev);
	free(cur);
	arb_destroy(a);
	return res;
}

int main(int argc, char **argv)
{
	bool json = false, smoke = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--smoke"))
			smoke = true;
		else {
			fprintf(stderr, "usage: vpmu-bench-arbiter [--json] [--smoke]\n");
			return 2;
		}
	}
	rng_state = 0x8360;
	unsigned n_vms = smoke ? 120 : 500, n_sessions = smoke ? 20 : 200, ops = smoke ? 30 : 2000;
	struct latency L = bench_replan(ARB_GUEST_IDENTITY, ARB_PARTITION_PER_CPU, n_vms, n_sessions,
					ops);
	struct placed P = bench_matching(smoke ? 2000 : 50000);
	uint64_t trace_seed = rng_state;
	struct trace_result T = bench_trace(ARB_PARTITION_PER_CPU, smoke ? 60 : 600);
	/* The same trace with one partition for every CPU; the baselines do
	 * not depend on it, only the arbiter's row does. */
	rng_state = trace_seed;
	struct trace_result TU = bench_trace(ARB_PARTITION_UNIFORM, smoke ? 60 : 600);
	/* The same replan scenario (same seed) in the other guest modes and
	 * with a uniform partition, run last so that the figures above keep
	 * their inputs. */
	static const enum arb_guest_mode other_modes[] = { ARB_GUEST_PERF_PINNED, ARB_GUEST_NONE,
							   ARB_GUEST_IDENTITY };
	static const enum arb_partition other_parts[] = { ARB_PARTITION_PER_CPU,
							  ARB_PARTITION_PER_CPU,
							  ARB_PARTITION_UNIFORM };
	static const char *other_names[] = { "perf-pinned", "none", "identity-uniform" };
	struct latency M[3];
	for (unsigned i = 0; i < 3; i++) {
		rng_state = 0x8360;
		M[i] = bench_replan(other_modes[i], other_parts[i], n_vms, n_sessions, ops);
	}

	if (json) {
		printf("{\"cpus\": %d, \"vcpus\": %u, \"sessions\": %u, \"replan_ops\": %u, "
		       "\"replan_one_p50_us\": %.2f, \"replan_one_p99_us\": %.2f, "
		       "\"replan_full_ms\": %.3f, \"event_sets\": %u, \"feasible_sets\": %u, "
		       "\"matching_placed_pct\": %.2f, \"greedy_placed_pct\": %.2f, "
		       "\"first_fit_placed_pct\": %.2f, "
		       "\"trace_steps\": %u, \"coverage\": {",
		       BIG_CPUS, smoke ? 480u : 2000u, smoke ? 20u : 200u, L.ops, L.p50_us, L.p99_us,
		       L.full_ms, P.sets, P.feasible, P.matching_pct, P.greedy_pct, P.first_fit_pct,
		       T.steps);
		for (int p = 0; p < N_POL; p++)
			printf("%s\"%s\": %.2f", p ? ", " : "", pol_name[p], T.coverage[p]);
		printf("}, \"grant_changes\": {");
		for (int p = 0; p < N_POL; p++)
			printf("%s\"%s\": %u", p ? ", " : "", pol_name[p], T.grant_changes[p]);
		printf("}, \"coverage_by_partition\": {\"per-cpu\": %.2f, \"uniform\": %.2f}, "
		       "\"grant_changes_by_partition\": {\"per-cpu\": %u, \"uniform\": %u}",
		       T.coverage[POL_VPMU], TU.coverage[POL_VPMU], T.grant_changes[POL_VPMU],
		       TU.grant_changes[POL_VPMU]);
		printf(", \"replan_by_guest_mode\": {");
		for (unsigned i = 0; i < 3; i++)
			printf("%s\"%s\": {\"one_p50_us\": %.2f, \"one_p99_us\": %.2f, "
			       "\"full_ms\": %.3f}", i ? ", " : "", other_names[i],
			       M[i].p50_us, M[i].p99_us, M[i].full_ms);
		printf("}, \"smoke\": %s}\n", smoke ? "true" : "false");
		return 0;
	}
	printf("vpmu-bench-arbiter%s (Ice Lake 8360Y model, seeded synthetic inputs)\n",
	       smoke ? " --smoke" : "");
	printf("replan, %d CPUs, %u vCPUs, %u sessions, %u attach/detach:\n", BIG_CPUS,
	       smoke ? 480u : 2000u, smoke ? 20u : 200u, L.ops);
	printf("  one change p50 %10.2f us   (target <= 20)\n", L.p50_us);
	printf("  one change p99 %10.2f us   (target <= 200)\n", L.p99_us);
	printf("  full replan    %10.3f ms   (target <= 2)\n", L.full_ms);
	printf("placement, %u random event sets, %u feasible:\n", P.sets, P.feasible);
	printf("  matching %6.2f %%   greedy (perf-style) %6.2f %%   first fit %6.2f %%\n",
	       P.matching_pct, P.greedy_pct, P.first_fit_pct);
	printf("trace, %u steps, %d CPUs:\n  %-16s %10s %14s\n", T.steps, TR_CPUS, "policy",
	       "coverage%", "grant changes");
	for (int p = 0; p < N_POL; p++)
		printf("  %-16s %10.2f %14u\n", pol_name[p], T.coverage[p], T.grant_changes[p]);
	printf("  %-16s %10.2f %14u\n", "vpmu (uniform)", TU.coverage[POL_VPMU],
	       TU.grant_changes[POL_VPMU]);
	printf("replan, same scenario, other guest and partition modes:\n");
	for (unsigned i = 0; i < 3; i++)
		printf("  %-16s p50 %8.2f us   p99 %8.2f us   full %7.3f ms\n", other_names[i],
		       M[i].p50_us, M[i].p99_us, M[i].full_ms);
	return 0;
}
