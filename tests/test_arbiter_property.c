/* SPDX-License-Identifier: MIT */
/*
 * Property test: seeded random scenarios (attach, detach, priority change,
 * constrained host sessions, floating and pinned vCPUs) on Ice Lake CPUs,
 * in each guest mode, checking after every step:
 *  - no counter is both in a guest partition (room, with perf-based
 *    guests) and under a host placement;
 *  - every admitted guaranteed consumer is fully satisfied;
 *  - priority: a preferred consumer gets exactly what it gets when every
 *    consumer ordered after it is absent (so nothing lower holds what it
 *    wanted and lacks);
 *  - the incremental plan equals a full recomputation;
 *  - the transitions, replayed on the previous plan, give the new one and
 *    never pass through a counter that is both guest and host;
 *  - a refused request changes nothing;
 *  - perf-based guests: no session add or update takes room a vCPU had,
 *    and an event marked as starved by guest room is multiplexed where
 *    there is room;
 *  - no managed guests: no partition, no step, and the sessions' plan is
 *    the one they get with no VM at all.
 *  - uniform partition (identity guests): every CPU has the same guest
 *    partition, GP 0..k-1 plus fixed counters, and a vCPU that is not
 *    shared passes through exactly what it wants of it.
 * VPMU_PROPERTY_SEEDS=n runs n seeds per mode; VPMU_PROPERTY_SEED=s replays
 * seed s; VPMU_PROPERTY_MODE=identity|identity-uniform|perf-pinned|none
 * runs one mode.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arbiter/arbiter.h"
#include "icl_events.h"

#define MAXC 32     /* consumers alive at once */
#define MAXV 3
#define MAXE 5
#define MAXCPU 12
#define STEPS 40

struct spec {
	bool vm;
	uint64_t id;
	char name[16];
	int prio;
	enum arb_class cls;
	uint64_t seq;       /* arrival in the harness */
	unsigned n;         /* vCPUs or events */
	uint64_t set[MAXV]; /* vCPU sets; set[0] for a session */
	unsigned gp[MAXV];
	uint32_t fixed[MAXV];
	struct arb_event_spec ev[MAXE];
};

struct world {
	enum arb_guest_mode mode;
	enum arb_partition part;
	uint64_t rng;
	unsigned n_cpus;
	bool watchdog;
	struct spec live[MAXC];
	unsigned n_live;
	uint64_t next_id, next_seq;
	char msg[512];
};

/* What the kvm port and perf would see of a plan. */
struct snap {
	uint64_t guest[MAXCPU];
	uint64_t host[MAXCPU];           /* counters under host placements */
	uint8_t route[MAXC][MAXV][64];   /* by live index */
};

static const int cpu_ids[MAXCPU] = { 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22 };
static const struct arb_foreign watchdog = { "nmi_watchdog", -1, 0xff, 1u << 1 };

static uint64_t rnd(struct world *w)
{
	/* splitmix64: a seed fully determines the scenario */
	uint64_t z = (w->rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned below(struct world *w, unsigned n)
{
	return (unsigned)(rnd(w) % n);
}

static struct arb *make(const struct world *w)
{
	struct arb_inventory inv = { w->n_cpus, cpu_ids, ICL_NUM_GP, ICL_FIXED_MASK,
				     w->watchdog ? &watchdog : NULL, w->watchdog, w->mode, w->part };
	struct arb *a = NULL;
	assert_int_equal(arb_create(&inv, &a), 0);
	return a;
}

static int apply_spec(struct arb *a, const struct spec *s, bool update, char *why)
{
	if (s->vm) {
		struct arb_vcpu_spec v[MAXV];
		for (unsigned i = 0; i < s->n; i++)
			v[i] = (struct arb_vcpu_spec){ &s->set[i], s->gp[i], s->fixed[i] };
		struct arb_vm_spec vm = { s->id, s->name, s->prio, s->cls, s->n, v };
		return update ? arb_vm_update(a, &vm, why, ARB_REASON_LEN)
			      : arb_vm_add(a, &vm, why, ARB_REASON_LEN);
	}
	struct arb_session_spec ss = { s->id, s->name, s->prio, s->cls, &s->set[0], s->n, s->ev };
	return update ? arb_session_update(a, &ss, why, ARB_REASON_LEN)
		      : arb_session_add(a, &ss, why, ARB_REASON_LEN);
}

static uint64_t cpus(struct world *w, bool pinned)
{
	if (pinned)
		return 1ULL << below(w, w->n_cpus);
	uint64_t s = 0;
	while (__builtin_popcountll(s) < 2)
		s |= 1ULL << below(w, w->n_cpus);
	return s;
}

static void random_spec(struct world *w, struct spec *s)
{
	static const char *evn[MAXE] = { "a", "b", "c", "d", "e" };
	unsigned k = below(w, 10);

	memset(s, 0, sizeof(*s));
	s->vm = below(w, 2);
	s->id = w->next_id++;
	snprintf(s->name, sizeof(s->name), "%s%llu", s->vm ? "vm" : "s",
		 (unsigned long long)s->id);
	s->prio = (int)below(w, 6); /* few values: ties are common */
	s->cls = k < 3 ? ARB_CLASS_GUARANTEED : k < 9 ? ARB_CLASS_PREFERRED : ARB_CLASS_SHARED;
	if (s->vm) {
		s->n = 1 + below(w, MAXV);
		for (unsigned i = 0; i < s->n; i++) {
			s->set[i] = cpus(w, below(w, 2));
			s->gp[i] = below(w, 9);
			s->fixed[i] = (uint32_t)below(w, 8);
			if (!s->gp[i] && !s->fixed[i])
				s->gp[i] = 1;
		}
	} else {
		s->n = 1 + below(w, MAXE);
		s->set[0] = below(w, 4) ? cpus(w, below(w, 2)) : (1ULL << w->n_cpus) - 1;
		for (unsigned i = 0; i < s->n; i++) {
			s->ev[i].name = evn[i];
			icl_event_masks(icl_event_pool[below(w, ICL_EVENT_POOL_N)],
					&s->ev[i].gp_mask, &s->ev[i].fixed_mask);
		}
	}
}

static bool snap_take(const struct world *w, struct arb *a, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned c = 0; c < w->n_cpus; c++) {
		struct arb_cpu_view v;
		if (arb_cpu_plan(a, c, &v))
			return false;
		s->guest[c] = v.guest_gp_mask | ((uint64_t)v.guest_fixed_mask << 32);
		for (unsigned i = 0; i < v.n_placements; i++)
			if (v.placements[i].counter >= 0)
				s->host[c] |= 1ULL << v.placements[i].counter;
	}
	for (unsigned k = 0; k < w->n_live; k++) {
		const struct spec *sp = &w->live[k];
		for (unsigned i = 0; sp->vm && i < sp->n; i++) {
			uint8_t g[TRANSITION_MAX_GP], f[TRANSITION_MAX_FIXED];
			if (arb_vcpu_routes(a, sp->id, i, g, f))
				return false;
			memcpy(s->route[k][i], g, 32);
			memcpy(&s->route[k][i][32], f, 16);
		}
	}
	return true;
}

#define FAIL(...) do { snprintf(w->msg, sizeof(w->msg), __VA_ARGS__); return false; } while (0)

/* The route of a granted PMC, and of one that is wanted but not granted. */
static uint8_t granted_route(const struct world *w)
{
	return w->mode == ARB_GUEST_IDENTITY ? PMC_ROUTE_PASSTHROUGH
	       : w->mode == ARB_GUEST_PERF_PINNED ? PMC_ROUTE_RESERVED : PMC_ROUTE_UNMANAGED;
}

static uint8_t other_route(const struct world *w)
{
	return w->mode == ARB_GUEST_IDENTITY ? PMC_ROUTE_MULTIPLEXED
	       : w->mode == ARB_GUEST_PERF_PINNED ? PMC_ROUTE_AT_RISK : PMC_ROUTE_UNMANAGED;
}

static bool before(const struct world *w, const struct spec *x, const struct spec *y);
static bool arrival_before(const struct spec *x, const struct spec *y);

/* Sessions only, in arrival order (guaranteed first), on a fresh arbiter. */
static struct arb *without_vms(struct world *w);

static bool check_plan(struct world *w, struct arb *a, const struct snap *s)
{
	char why[256];
	int r = arb_check_full(a, why, sizeof(why));
	if (r)
		FAIL("incremental != full: %s", r > 0 ? why : "error");
	for (unsigned c = 0; c < w->n_cpus; c++) {
		if (s->guest[c] & s->host[c])
			FAIL("cpu %u: counters 0x%llx both guest and host", c,
			     (unsigned long long)(s->guest[c] & s->host[c]));
		if (w->mode == ARB_GUEST_NONE && s->guest[c])
			FAIL("cpu %u: partition 0x%llx with no managed guests", c,
			     (unsigned long long)s->guest[c]);
		/* uniform: one mask, GP 0..k-1 plus fixed counters */
		uint32_t gp = (uint32_t)s->guest[c];
		if (w->part == ARB_PARTITION_UNIFORM &&
		    (s->guest[c] != s->guest[0] || (gp & (gp + 1))))
			FAIL("uniform: cpu %u partition 0x%llx, cpu 0 0x%llx", c,
			     (unsigned long long)s->guest[c], (unsigned long long)s->guest[0]);
	}
	uint8_t granted = granted_route(w), other = other_route(w);
	for (unsigned k = 0; k < w->n_live; k++) {
		const struct spec *sp = &w->live[k];
		for (unsigned i = 0; sp->vm && i < sp->n; i++)
			for (unsigned p = 0; p < 64; p++) {
				bool want = p < 32 ? p < sp->gp[i] : (sp->fixed[i] >> (p - 32)) & 1;
				uint8_t rt = s->route[k][i][p];
				if (want ? rt != granted && rt != other : rt != PMC_ROUTE_DISABLED)
					FAIL("%s vcpu %u: PMC bit %u route %u against shape", sp->name,
					     i, p, rt);
				if (rt == granted)
					for (unsigned c = 0; c < w->n_cpus; c++)
						if (((sp->set[i] >> c) & 1) && !((s->guest[c] >> p) & 1) &&
						    w->mode != ARB_GUEST_NONE)
							FAIL("%s vcpu %u passes bit %u through, cpu %u "
							     "partition lacks it", sp->name, i, p, c);
				if (sp->cls == ARB_CLASS_GUARANTEED && want && rt != granted)
					FAIL("guaranteed %s vcpu %u lacks bit %u", sp->name, i, p);
				if (sp->cls == ARB_CLASS_SHARED && rt == granted &&
				    w->mode != ARB_GUEST_NONE)
					FAIL("shared %s holds bit %u", sp->name, p);
				/* uniform: what it wants of the one partition */
				if (w->part == ARB_PARTITION_UNIFORM && want &&
				    sp->cls != ARB_CLASS_SHARED &&
				    (rt == granted) != ((s->guest[0] >> p) & 1))
					FAIL("uniform: %s vcpu %u bit %u route %u, partition 0x%llx",
					     sp->name, i, p, rt, (unsigned long long)s->guest[0]);
			}
		for (unsigned e = 0; !sp->vm && e < sp->n; e++) {
			struct arb_event_grant g;
			if (arb_session_event(a, sp->id, e, &g))
				FAIL("%s event %u missing", sp->name, e);
			if (sp->cls == ARB_CLASS_GUARANTEED && !g.dedicated)
				FAIL("guaranteed %s event %u not dedicated", sp->name, e);
			if (sp->cls == ARB_CLASS_SHARED && g.n_dedicated)
				FAIL("shared %s event %u holds a counter", sp->name, e);
			char reason[ARB_REASON_LEN];
			int r = arb_session_event_why(a, sp->id, e, reason, sizeof(reason));
			if (r != (g.n_kept_for_guests > 0) || (r && !strstr(reason, g.kept_vm)))
				FAIL("%s event %u: kept on %u CPUs, reason %d '%s'", sp->name, e,
				     g.n_kept_for_guests, r, reason);
			if (g.n_kept_for_guests && (w->mode != ARB_GUEST_PERF_PINNED ||
						    g.n_kept_for_guests > g.n_cpus - g.n_dedicated))
				FAIL("%s event %u: kept for guests on %u CPUs", sp->name, e,
				     g.n_kept_for_guests);
		}
	}
	/* A placement starved by room is multiplexed, on a CPU with room. */
	for (unsigned c = 0; c < w->n_cpus; c++) {
		struct arb_cpu_view v;
		arb_cpu_plan(a, c, &v);
		for (unsigned i = 0; i < v.n_placements; i++)
			if (v.placements[i].kept_for_guests &&
			    (v.placements[i].counter >= 0 || !s->guest[c]))
				FAIL("cpu %u placement %u: kept for guests, counter %d, room 0x%llx", c,
				     i, v.placements[i].counter, (unsigned long long)s->guest[c]);
	}
	if (w->mode == ARB_GUEST_NONE) {
		/* The sessions' plan is the one they get without any VM. */
		struct arb *b = without_vms(w);
		if (!b)
			return false;
		for (unsigned c = 0; c < w->n_cpus; c++) {
			struct arb_cpu_view x, y;
			arb_cpu_plan(a, c, &x);
			arb_cpu_plan(b, c, &y);
			bool same = x.n_placements == y.n_placements;
			for (unsigned i = 0; same && i < x.n_placements; i++)
				same = x.placements[i].id == y.placements[i].id &&
				       x.placements[i].event == y.placements[i].event &&
				       x.placements[i].counter == y.placements[i].counter &&
				       x.placements[i].share == y.placements[i].share;
			if (!same) {
				arb_destroy(b);
				FAIL("cpu %u: placements differ from the plan without VMs", c);
			}
		}
		arb_destroy(b);
	}
	return true;
}

static struct arb *without_vms(struct world *w)
{
	struct arb *b = make(w);
	unsigned idx[MAXC], n = 0;
	char why[ARB_REASON_LEN];
	for (unsigned k = 0; k < w->n_live; k++)
		if (!w->live[k].vm)
			idx[n++] = k;
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && arrival_before(&w->live[idx[j]], &w->live[idx[j - 1]]);
		     j--) {
			unsigned t = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	for (unsigned i = 0; i < n; i++)
		if (apply_spec(b, &w->live[idx[i]], false, why)) {
			snprintf(w->msg, sizeof(w->msg), "plan without VMs refused %s: %s",
				 w->live[idx[i]].name, why);
			arb_destroy(b);
			return NULL;
		}
	return b;
}

static bool before(const struct world *w, const struct spec *x, const struct spec *y)
{
	if (x->cls != y->cls)
		return x->cls < y->cls;
	/* perf-based guests: VMs before the sessions of their class */
	if (w->mode == ARB_GUEST_PERF_PINNED && x->cls != ARB_CLASS_GUARANTEED && x->vm != y->vm)
		return x->vm;
	if (x->cls != ARB_CLASS_GUARANTEED && x->prio != y->prio)
		return x->prio > y->prio;
	return x->seq < y->seq;
}

static bool arrival_before(const struct spec *x, const struct spec *y)
{
	bool gx = x->cls == ARB_CLASS_GUARANTEED, gy = y->cls == ARB_CLASS_GUARANTEED;
	return gx != gy ? gx : x->seq < y->seq;
}

/* X's grant with every consumer ordered after it gone must be its grant. */
static bool check_priority(struct world *w, struct arb *a, unsigned x)
{
	const struct spec *sx = &w->live[x];
	if (sx->cls != ARB_CLASS_PREFERRED)
		return true;
	struct arb *b = make(w);
	char why[ARB_REASON_LEN];
	bool ok = true;
	/* Guaranteed first: they were admitted against the priorities of their
	 * time, and come first in the order anyway. Within a class, harness
	 * arrival order is the arbiter's arrival order. */
	unsigned idx[MAXC], n = 0;
	for (unsigned k = 0; k < w->n_live; k++)
		if (k == x || before(w, &w->live[k], sx))
			idx[n++] = k;
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && arrival_before(&w->live[idx[j]], &w->live[idx[j - 1]]);
		     j--) {
			unsigned t = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	for (unsigned i = 0; i < n && ok; i++)
		if (apply_spec(b, &w->live[idx[i]], false, why)) {
			snprintf(w->msg, sizeof(w->msg), "subset plan refused %s: %s",
				 w->live[idx[i]].name, why);
			ok = false;
		}
	for (unsigned i = 0; ok && sx->vm && i < sx->n; i++) {
		uint8_t g1[TRANSITION_MAX_GP], f1[TRANSITION_MAX_FIXED], g2[TRANSITION_MAX_GP], f2[TRANSITION_MAX_FIXED];
		arb_vcpu_routes(a, sx->id, i, g1, f1);
		arb_vcpu_routes(b, sx->id, i, g2, f2);
		if (memcmp(g1, g2, sizeof(g1)) || memcmp(f1, f2, sizeof(f1))) {
			snprintf(w->msg, sizeof(w->msg),
				 "%s vcpu %u: lower-ordered consumers change its grant", sx->name, i);
			ok = false;
		}
	}
	for (unsigned e = 0; ok && !sx->vm && e < sx->n; e++) {
		struct arb_event_grant g1, g2;
		arb_session_event(a, sx->id, e, &g1);
		arb_session_event(b, sx->id, e, &g2);
		if (g1.n_dedicated != g2.n_dedicated) {
			snprintf(w->msg, sizeof(w->msg),
				 "%s event %u: dedicated on %u CPUs, %u without lower consumers",
				 sx->name, e, g1.n_dedicated, g2.n_dedicated);
			ok = false;
		}
	}
	arb_destroy(b);
	return ok;
}

static int live_of_vm(const struct world *w, uint64_t id)
{
	for (unsigned k = 0; k < w->n_live; k++)
		if (w->live[k].vm && w->live[k].id == id)
			return (int)k;
	return -1;
}

/*
 * Replays the transitions on the old plan. A vCPU whose CPU set changes runs
 * in its old set until its phase-1 route step (the broker lets the VMM move
 * it only after that), then anywhere in old or new, and in phase 2 only in
 * the new set. Host placements are the old ones during phase 1 and the new
 * ones in phase 2.
 */
static bool check_replay(struct world *w, struct arb *a, const struct snap *o,
			 const struct spec *old_live, unsigned old_n, const struct snap *n)
{
	const struct transition *t;
	size_t nt = arb_transitions(a, &t);
	uint64_t part[MAXCPU];
	uint8_t rt[MAXC][MAXV][64];
	uint64_t set[MAXC][MAXV], nset[MAXC][MAXV], oset[MAXC][MAXV];
	bool stepped[MAXC][MAXV], has_step[MAXC][MAXV];
	unsigned nv[MAXC];
	uint64_t ids[MAXC];
	int oldk[MAXC]; /* the slot's index in the old plan, -1 if new */
	unsigned slots = 0;

	memcpy(part, o->guest, sizeof(part));
	/* vCPUs by VM id, old and new together */
	memset(set, 0, sizeof(set));
	memset(nset, 0, sizeof(nset));
	memset(oset, 0, sizeof(oset));
	memset(stepped, 0, sizeof(stepped));
	memset(has_step, 0, sizeof(has_step));
	for (unsigned k = 0; k < old_n; k++) {
		if (!old_live[k].vm)
			continue;
		ids[slots] = old_live[k].id;
		nv[slots] = old_live[k].n;
		oldk[slots] = (int)k;
		for (unsigned i = 0; i < old_live[k].n; i++) {
			set[slots][i] = old_live[k].set[i];
			oset[slots][i] = old_live[k].set[i];
			memcpy(rt[slots][i], o->route[k][i], 64);
		}
		slots++;
	}
	for (unsigned k = 0; k < w->n_live; k++) {
		const struct spec *sp = &w->live[k];
		if (!sp->vm)
			continue;
		unsigned s = 0;
		while (s < slots && ids[s] != sp->id)
			s++;
		if (s == slots) {
			ids[s] = sp->id;
			nv[s] = 0;
			oldk[s] = -1;
			slots++;
		}
		for (unsigned i = 0; i < sp->n; i++) {
			if (i >= nv[s])
				memset(rt[s][i], PMC_ROUTE_DISABLED, 64);
			set[s][i] |= sp->set[i];
			nset[s][i] = sp->set[i];
		}
		if (sp->n > nv[s])
			nv[s] = sp->n;
	}
	if (getenv("VPMU_PROPERTY_VERBOSE"))
		for (size_t i = 0; i < nt; i++)
			fprintf(stderr, "  t%zu phase %u %s cpu %d part 0x%x/0x%x vm %llu vcpu %u "
				"gp %u%u%u%u%u%u%u%u fx %u%u%u%u scrub 0x%x/0x%x\n", i, t[i].phase,
				t[i].kind == TRANSITION_ROUTES ? "routes" : "partition", t[i].cpu,
				t[i].guest_gp_mask, t[i].guest_fixed_mask,
				(unsigned long long)t[i].vm_id, t[i].vcpu, t[i].gp_route[0],
				t[i].gp_route[1], t[i].gp_route[2], t[i].gp_route[3], t[i].gp_route[4],
				t[i].gp_route[5], t[i].gp_route[6], t[i].gp_route[7],
				t[i].fixed_route[0], t[i].fixed_route[1], t[i].fixed_route[2],
				t[i].fixed_route[3], t[i].scrub_gp_mask, t[i].scrub_fixed_mask);
	for (size_t i = 0; i < nt; i++)
		for (unsigned s = 0; s < slots; s++)
			if (t[i].kind == TRANSITION_ROUTES && t[i].phase == 1 && ids[s] == t[i].vm_id &&
			    t[i].vcpu < MAXV)
				has_step[s][t[i].vcpu] = true;
	if (w->mode == ARB_GUEST_NONE && nt)
		FAIL("%zu transitions with no managed guests", nt);
	uint8_t granted = granted_route(w);
	int last = 0; /* 0 p1 routes, 1 p1 partition, 2 p2 partition, 3 p2 routes */
	for (size_t i = 0; i < nt; i++) {
		int kind = t[i].phase == 1 ? (t[i].kind == TRANSITION_ROUTES ? 0 : 1)
					   : (t[i].kind == TRANSITION_PARTITION ? 2 : 3);
		if (t[i].phase < 1 || t[i].phase > 2 || kind < last)
			FAIL("transition %zu out of two-phase order", i);
		last = kind;
		if (t[i].kind == TRANSITION_PARTITION) {
			unsigned c = 0;
			while (c < w->n_cpus && cpu_ids[c] != t[i].cpu)
				c++;
			if (c == w->n_cpus)
				FAIL("transition %zu names unknown cpu %d", i, t[i].cpu);
			uint64_t np = t[i].guest_gp_mask | ((uint64_t)t[i].guest_fixed_mask << 32);
			uint64_t scrub = t[i].scrub_gp_mask | ((uint64_t)t[i].scrub_fixed_mask << 32);
			/* perf loads counters itself: room changes scrub nothing */
			uint64_t owner = w->mode == ARB_GUEST_IDENTITY ? np ^ part[c] : 0;
			if (scrub != owner)
				FAIL("transition %zu: scrub 0x%llx, owner changes 0x%llx", i,
				     (unsigned long long)scrub, (unsigned long long)owner);
			if (t[i].phase == 1 ? (np & ~part[c]) : (part[c] & ~np))
				FAIL("transition %zu: phase %u partition moves the wrong way", i,
				     t[i].phase);
			part[c] = np;
		} else {
			unsigned s = 0;
			while (s < slots && ids[s] != t[i].vm_id)
				s++;
			if (s == slots || t[i].vcpu >= nv[s])
				FAIL("transition %zu names unknown vcpu", i);
			/* the guest keeps its values through any route change */
			if (t[i].scrub_gp_mask || t[i].scrub_fixed_mask)
				FAIL("transition %zu scrubs guest PMCs", i);
			stepped[s][t[i].vcpu] |= t[i].phase == 1;
			memcpy(rt[s][t[i].vcpu], t[i].gp_route, 32);
			memcpy(&rt[s][t[i].vcpu][32], t[i].fixed_route, 16);
		}
		/* the invariant, after every step */
		for (unsigned c = 0; c < w->n_cpus; c++) {
			uint64_t host = t[i].phase == 1 ? o->host[c] : n->host[c];
			if (part[c] & host)
				FAIL("after transition %zu cpu %u: 0x%llx guest and host", i, c,
				     (unsigned long long)(part[c] & host));
		}
		for (unsigned s = 0; s < slots; s++)
			for (unsigned v = 0; v < nv[s]; v++)
				for (unsigned p = 0; p < 64; p++) {
					uint64_t where = t[i].phase == 2 && nset[s][v] ? nset[s][v]
							 : has_step[s][v] && !stepped[s][v] && oset[s][v]
							 ? oset[s][v] : set[s][v];
					for (unsigned c = 0; rt[s][v][p] == granted &&
							     c < w->n_cpus; c++)
						if (((where >> c) & 1) && !((part[c] >> p) & 1))
							FAIL("after transition %zu: vm %llu vcpu %u "
							     "passes bit %u through, cpu %u lacks it",
							     i, (unsigned long long)ids[s], v, p, c);
				}
	}
	for (unsigned c = 0; c < w->n_cpus; c++)
		if (part[c] != n->guest[c])
			FAIL("replay: cpu %u partition 0x%llx, plan 0x%llx", c,
			     (unsigned long long)part[c], (unsigned long long)n->guest[c]);
	/* With no managed guests routes follow the shape and no step says so. */
	for (unsigned s = 0; s < slots && w->mode != ARB_GUEST_NONE; s++) {
		int k = live_of_vm(w, ids[s]);
		for (unsigned v = 0; v < nv[s]; v++) {
			uint8_t want[64];
			if (k >= 0 && v < w->live[k].n) {
				memcpy(want, n->route[k][v], 64);
			} else {
				/* a removed VM's guest keeps its shape: what it had
				 * is no longer granted (multiplexed, at risk) */
				for (unsigned p = 0; p < 64; p++)
					want[p] = oldk[s] >= 0 && o->route[oldk[s]][v][p] != PMC_ROUTE_DISABLED
							  ? other_route(w) : PMC_ROUTE_DISABLED;
			}
			if (memcmp(want, rt[s][v], 64))
				FAIL("replay: vm %llu vcpu %u routes differ from the plan",
				     (unsigned long long)ids[s], v);
		}
	}
	return true;
}

/* perf-based guests: a session add or update takes no room from a vCPU
 * (live indices are those of the old snapshot: sessions add at the end). */
static bool check_room_kept(struct world *w, const struct snap *o, const struct snap *n,
			    unsigned old_n)
{
	for (unsigned k = 0; k < old_n && k < w->n_live; k++)
		for (unsigned i = 0; w->live[k].vm && i < w->live[k].n; i++)
			for (unsigned p = 0; p < 64; p++)
				if (o->route[k][i][p] == PMC_ROUTE_RESERVED &&
				    n->route[k][i][p] != PMC_ROUTE_RESERVED)
					FAIL("a session took room of %s vcpu %u PMC bit %u",
					     w->live[k].name, i, p);
	return true;
}

static bool run_seed(enum arb_guest_mode mode, enum arb_partition part, uint64_t seed, char *msg,
		     size_t len)
{
	struct world *w = calloc(1, sizeof(*w));
	struct snap *o = malloc(sizeof(*o)), *n = malloc(sizeof(*n));
	struct spec *old_live = malloc(sizeof(w->live));
	assert_non_null(w);
	assert_non_null(o);
	assert_non_null(n);
	assert_non_null(old_live);
	w->mode = mode;
	w->part = part;
	w->rng = seed;
	w->n_cpus = 2 + below(w, MAXCPU - 1);
	w->watchdog = below(w, 2);
	w->next_id = 1;
	struct arb *a = make(w);
	bool ok = snap_take(w, a, o);
	unsigned step;

	for (step = 0; step < STEPS; step++) {
		char why[ARB_REASON_LEN] = "";
		unsigned op = below(w, 10);
		unsigned old_n = w->n_live;
		uint64_t gen = arb_generation(a);
		bool session_came = false;
		int r;

		memcpy(old_live, w->live, sizeof(w->live));
		if (getenv("VPMU_PROPERTY_VERBOSE"))
			fprintf(stderr, "step %u op %u live %u\n", step, op, w->n_live);
		if (w->n_live && (op < 3 || w->n_live == MAXC)) {
			unsigned k = below(w, w->n_live);
			struct spec *sp = &w->live[k];
			r = sp->vm ? arb_vm_remove(a, sp->id) : arb_session_remove(a, sp->id);
			if (r) {
				snprintf(w->msg, sizeof(w->msg), "remove %s: %d", sp->name, r);
				ok = false;
				break;
			}
			/* Swap the leaver to the end, in the old snapshot too, so
			 * that indices stay aligned with live[]. */
			unsigned last = --w->n_live;
			uint8_t tmp[MAXV][64];
			memcpy(tmp, o->route[k], sizeof(tmp));
			memcpy(o->route[k], o->route[last], sizeof(tmp));
			memcpy(o->route[last], tmp, sizeof(tmp));
			struct spec gone = old_live[k];
			old_live[k] = old_live[last];
			old_live[last] = gone;
			w->live[k] = w->live[last];
		} else if (w->n_live && op < 5) {
			unsigned k = below(w, w->n_live);
			struct spec up = w->live[k];
			up.prio = (int)below(w, 6);
			if (below(w, 3) == 0 && up.vm) /* and move a vCPU */
				up.set[0] = cpus(w, below(w, 2));
			r = apply_spec(a, &up, true, why);
			if (r && r != -EBUSY) {
				snprintf(w->msg, sizeof(w->msg), "update %s: %d", up.name, r);
				ok = false;
				break;
			}
			session_came = !up.vm;
			if (!r)
				w->live[k] = up;
		} else {
			struct spec sp;
			random_spec(w, &sp);
			sp.seq = w->next_seq++;
			r = apply_spec(a, &sp, false, why);
			session_came = !sp.vm;
			if (r && r != -EBUSY) {
				snprintf(w->msg, sizeof(w->msg), "add %s: %d %s", sp.name, r, why);
				ok = false;
				break;
			}
			if (r == -EBUSY && (sp.cls != ARB_CLASS_GUARANTEED || !why[0])) {
				snprintf(w->msg, sizeof(w->msg), "%s refused without cause", sp.name);
				ok = false;
				break;
			}
			if (!r)
				w->live[w->n_live++] = sp;
		}
		if (!snap_take(w, a, n)) {
			snprintf(w->msg, sizeof(w->msg), "plan unreadable");
			ok = false;
			break;
		}
		if (r) { /* refused: nothing moved */
			ok = arb_generation(a) == gen && !memcmp(o->guest, n->guest, sizeof(o->guest)) &&
			     !memcmp(o->host, n->host, sizeof(o->host)) &&
			     !memcmp(o->route, n->route, sizeof(o->route));
			if (!ok)
				snprintf(w->msg, sizeof(w->msg), "refusal changed the plan");
		} else {
			ok = check_plan(w, a, n) && check_replay(w, a, o, old_live, old_n, n);
			if (ok && session_came && mode == ARB_GUEST_PERF_PINNED)
				ok = check_room_kept(w, o, n, old_n);
			if (ok && w->n_live)
				ok = check_priority(w, a, below(w, w->n_live));
		}
		struct snap *t = o;
		o = n;
		n = t;
		if (!ok)
			break;
	}
	if (!ok)
		snprintf(msg, len, "seed %llu step %u: %s", (unsigned long long)seed, step, w->msg);
	arb_destroy(a);
	free(w);
	free(o);
	free(n);
	free(old_live);
	return ok;
}

/* Seeds per mode by default: the identity mode's count as before, fewer
 * in the other modes, where most of the machinery is the same. */
static void scenarios(enum arb_guest_mode mode, enum arb_partition part, uint64_t default_count)
{
	char name[48];
	snprintf(name, sizeof(name), "%s%s", arb_guest_mode_name(mode),
		 part == ARB_PARTITION_UNIFORM ? "-uniform" : "");
	const char *one = getenv("VPMU_PROPERTY_SEED");
	const char *many = getenv("VPMU_PROPERTY_SEEDS");
	const char *only = getenv("VPMU_PROPERTY_MODE");
	uint64_t first = 1, count = default_count;
	char msg[768];

	if (only && strcmp(only, name)) {
		print_message("%s: skipped (VPMU_PROPERTY_MODE=%s)\n", name, only);
		return;
	}
	if (one) {
		first = strtoull(one, NULL, 0);
		count = 1;
	} else if (many) {
		count = strtoull(many, NULL, 0);
	}
	for (uint64_t s = first; s < first + count; s++)
		if (!run_seed(mode, part, s, msg, sizeof(msg))) {
			print_error("%s: %s\nreplay: VPMU_PROPERTY_MODE=%s VPMU_PROPERTY_SEED=%llu %s\n",
				    name, msg, name,
				    (unsigned long long)s, "test_arbiter_property");
			fail();
		}
	print_message("%s: %llu seeds x %d steps passed\n", name,
		      (unsigned long long)count, STEPS);
}

static void random_scenarios_identity(void **state)
{
	(void)state;
	scenarios(ARB_GUEST_IDENTITY, ARB_PARTITION_PER_CPU, 8000);
}

static void random_scenarios_identity_uniform(void **state)
{
	(void)state;
	scenarios(ARB_GUEST_IDENTITY, ARB_PARTITION_UNIFORM, 4000);
}

static void random_scenarios_perf_pinned(void **state)
{
	(void)state;
	scenarios(ARB_GUEST_PERF_PINNED, ARB_PARTITION_PER_CPU, 4000);
}

static void random_scenarios_none(void **state)
{
	(void)state;
	scenarios(ARB_GUEST_NONE, ARB_PARTITION_PER_CPU, 2000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(random_scenarios_identity),
		cmocka_unit_test(random_scenarios_identity_uniform),
		cmocka_unit_test(random_scenarios_perf_pinned),
		cmocka_unit_test(random_scenarios_none),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
