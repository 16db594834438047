/* SPDX-License-Identifier: MIT */
/*
 * The arbiter. Consumers are cut into items: one per vCPU, and one per
 * (session, CPU). Items are processed in one global order: guaranteed
 * consumers by arrival, then preferred by priority (ties by arrival), then
 * shared. Each item only reads state left by earlier items, so a grant never
 * depends on anything ordered after it (stability, priority).
 *
 * Per CPU the state is a guest partition and a matching of the dedicated
 * host events on the remaining counters. A vCPU is granted guest PMC p when,
 * on every CPU it may run on, p is already in the guest partition or the
 * dedicated events there can all be kept without p. A session event is
 * dedicated on a CPU when the matching can take it.
 *
 * Only vCPUs couple CPUs. An incremental change marks the CPUs the consumer
 * touches dirty and recomputes their items in global order; a vCPU spanning
 * a clean CPU reads what the committed computation learnt there, or that
 * CPU's state rebuilt from the committed decisions when that is not enough,
 * and when its own grant changes, its CPUs become dirty from there on. A
 * dirty CPU found back in its committed state past the change is clean
 * again (back_to_committed). This gives exactly what a full pass gives
 * (arb_check_full).
 *
 * The guest mode changes only what a VM is: with perf-based guests its
 * partition is room kept free of CPU-pinned events, VMs come before the
 * sessions of their class, and a failing session event notes whether the
 * room is what it misses; with unmanaged guests a VM has no items at all
 * (cons_placed).
 *
 * With a uniform partition (ARB_PARTITION_UNIFORM) a vCPU's claims are made
 * on every CPU at its place in the order, not by its items: see
 * compute_uniform.
 */
#include "arbiter/arbiter.h"
#include "arbiter/matching.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cleanup.h"

enum cons_kind { CONS_VM = 1, CONS_SESSION = 2 };

struct cons;

struct vcpu {
	struct cons *vm;
	unsigned idx;
	uint64_t *set;
	unsigned *cpus;         /* inventory indices, ascending */
	unsigned n_cpus;
	uint64_t want;          /* counters bits, matching.h layout */
	uint64_t grant;         /* committed pass-through */
	uint64_t ngrant;        /* computed in epoch `stamp` */
	uint32_t stamp;
	bool fresh;             /* not committed yet */
	/* What the committed computation learnt on each CPU of the set, two
	 * masks per CPU: [2i] counters that were guest or withdrawable there
	 * when the vCPU tried them, [2i+1] counters found not withdrawable.
	 * A counter in neither was not tried there (a CPU before it failed).
	 * nknown is the same for the computation in progress. */
	uint64_t *known, *nknown;
	/* The state of each CPU of the set just before this vCPU's item in
	 * the committed computation (snap_put), and in the one in progress:
	 * a dirty CPU found back in that state here is clean again. */
	uint64_t *snap, *nsnap;
};

struct sev {
	char name[ARB_NAME_LEN];
	uint64_t mask;
};

struct cons {
	enum cons_kind kind;
	uint64_t id;
	char name[ARB_NAME_LEN];
	int prio;
	enum arb_class cls;
	uint64_t seq;           /* arrival rank */
	uint64_t key;           /* class, then priority (not for guaranteed) */
	/* VM */
	struct vcpu *vcpus;
	unsigned n_vcpus;
	/* session */
	uint64_t *set;
	unsigned *cpus;
	unsigned n_cpus;
	struct sev *ev;
	unsigned n_ev;
};

struct item {
	struct cons *c;
	unsigned sub;           /* vCPU index; 0 for a session */
	/* A vCPU's snap_hash where its snapshot of this CPU was last taken.
	 * Only a hint: a refused computation leaves its own here, so a match
	 * is confirmed against the committed snapshot, but the snapshot (far
	 * from the item lists in memory) is read only on a match. */
	uint32_t hint;
};

struct cpu_items {
	struct item *v;
	unsigned n, cap;
	unsigned n_ev;          /* session events linked here */
};

struct cpu_plan {
	uint64_t guest;
	struct arb_placement *pl;
	unsigned n_pl, cap_pl;
	/* the next plan, built by a computation */
	uint64_t nguest;
	struct arb_placement *npl;
	unsigned n_npl, cap_npl;
};

struct work {
	uint32_t epoch;
	bool dirty;
	bool listed;            /* in a->dirty: gets a new plan */
	/* Committed placement index minus this one, for replaying a CPU that
	 * became clean again after the changed consumer's items. */
	int pshift;
	unsigned pos;           /* next item in the CPU's list */
	unsigned pcount;        /* placements so far (foreign, then sessions) */
	uint64_t guest;
	/* Counters found not withdrawable. By Hall's theorem that stays so for
	 * the rest of the computation: events are only added and counters
	 * only withdrawn, so a vCPU after another need not search again. */
	uint64_t stuck;
	struct match m;
	/* ARB_GUEST_PERF_PINNED: placements multiplexed only because of the
	 * room kept for guests (kept_for_guests). Room for one per session
	 * event linked here is made at link time, so that deciding needs no
	 * memory. */
	unsigned *kept;
	unsigned n_kept, cap_kept;
	/* ARB_PARTITION_UNIFORM: committed claims (a->at) applied so far. */
	unsigned ci;
	int16_t slot_pl[MATCHING_MAX_SLOTS];        /* slot -> placement index */
	struct cons *slot_cons[MATCHING_MAX_SLOTS]; /* NULL: foreign */
	uint16_t slot_ev[MATCHING_MAX_SLOTS];       /* event or foreign index */
};

struct foreign {
	char name[ARB_NAME_LEN];
	int cpu;
	uint64_t mask;
};

/* The item's order key is copied in, so that comparing two entries reads
 * neither the item lists nor the consumers. */
struct heap_ent {
	uint64_t key, seq;
	unsigned sub;
	unsigned cpu, pos;
};

/* A place in the global order: a consumer's (key, seq) and a vCPU index
 * (0 for a session). Copied, so that it outlives a removed consumer. */
struct upos {
	uint64_t key, seq;
	unsigned sub;
};

/*
 * ARB_PARTITION_UNIFORM: a vCPU trying to add a counter to the one guest
 * partition. Each counter is tried at most once per computation (it joins,
 * or it can never join later: events are only added and counters only
 * withdrawn), so there are at most 64. fail_at words of the CPU bitmap pool
 * name every CPU where the host events could not be kept without it.
 */
#define UNI_MAX_ATTEMPTS 64
struct attempt {
	struct upos pos;
	unsigned counter;
	uint64_t g_before;      /* the partition when it was tried */
	bool ok;
};

/* First reason an admission failed, found while computing. */
struct fail {
	bool set;
	unsigned cpu;
	int counter;
	struct cons *need;      /* the consumer under admission */
	unsigned need_sub;
	bool need_is_event;
	struct cons *holder;    /* NULL: foreign or nobody */
	unsigned holder_sub;
	bool holder_is_event;
	const char *foreign;
};

struct arb {
	enum arb_guest_mode mode;
	bool uniform;           /* ARB_PARTITION_UNIFORM */
	unsigned n_cpus;
	int *cpu_ids;
	uint64_t inv_mask;
	struct foreign *foreign;
	unsigned n_foreign;

	struct cpu_plan *plan;
	struct cpu_items *items;
	struct work *work;

	struct cons **cons;
	unsigned n_cons;
	size_t cap_cons;
	uint64_t next_seq;
	uint64_t generation;

	struct transition *tr, *ntr;
	size_t n_tr, cap_tr, n_ntr, cap_ntr;

	/* scratch of one computation */
	uint32_t epoch;
	bool full;
	unsigned *dirty;
	unsigned n_dirty;
	unsigned *didx;         /* decide_vcpu: indices of a vCPU's dirty CPUs */
	uint64_t *fp;           /* change: CPUs the consumer touches */
	struct heap_ent *heap;
	size_t n_heap, cap_heap;
	struct vcpu **recomp;
	size_t n_recomp, cap_recomp;
	size_t n_moved;         /* recomp[0..n_moved): vCPUs whose routes may change */
	struct cons *adm;
	struct cons *gone;      /* the consumer being replaced or removed */
	bool no_admission;      /* arb_set_admission(false): replaying an admitted set */
	struct fail fail;

	/* ARB_PARTITION_UNIFORM: VMs in global order, the committed attempts
	 * (at, afail) and those of the computation in progress (nat, nafail). */
	struct cons **vms;
	size_t n_vms, cap_vms;
	struct attempt *at, *nat;
	unsigned n_at, n_nat;
	uint64_t *afail, *nafail;
	bool diverged;          /* the partition's history departs from the committed one */
};

const char *arb_guest_mode_name(enum arb_guest_mode m)
{
	switch (m) {
	case ARB_GUEST_IDENTITY: return "identity";
	case ARB_GUEST_PERF_PINNED: return "perf-pinned";
	case ARB_GUEST_NONE: return "none";
	}
	return "unknown";
}

const char *arb_partition_name(enum arb_partition p)
{
	switch (p) {
	case ARB_PARTITION_PER_CPU: return "per-cpu";
	case ARB_PARTITION_UNIFORM: return "uniform";
	}
	return "unknown";
}

const char *arb_class_name(enum arb_class c)
{
	switch (c) {
	case ARB_CLASS_GUARANTEED: return "guaranteed";
	case ARB_CLASS_PREFERRED: return "preferred";
	case ARB_CLASS_SHARED: return "shared";
	}
	return "unknown";
}

/* Without -mpopcnt (the x86-64 baseline) __builtin_popcountll is a libgcc
 * call, and finalize_cpu makes one per vCPU and per multiplexed event of
 * every dirty CPU. Inline bit arithmetic costs less than the call. */
static inline unsigned pop64(uint64_t x)
{
#ifdef __POPCNT__
	return (unsigned)__builtin_popcountll(x);
#else
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (unsigned)((x * 0x0101010101010101ULL) >> 56);
#endif
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap * 2 : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * elem);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/* ---- order ---- */

/* Guaranteed grants are reservations: by arrival only, so that a newcomer
 * can never displace an admitted one. The rest: higher priority first.
 * With perf-based guests, a CPU-pinned host event would displace KVM's
 * task-pinned ones, so within a class that is not guaranteed every VM
 * comes before every session: a session there gets what the guests leave
 * (flexible events), whatever its priority. */
static uint64_t order_key(enum arb_guest_mode mode, enum cons_kind kind, enum arb_class cls,
			  int prio)
{
	uint32_t rank = cls == ARB_CLASS_GUARANTEED ? 0 : (uint32_t)(INT_MAX - (int64_t)prio);
	uint64_t after_vms = mode == ARB_GUEST_PERF_PINNED && cls != ARB_CLASS_GUARANTEED &&
			     kind == CONS_SESSION;
	return ((uint64_t)cls << 33) | (after_vms << 32) | rank;
}

static int cons_cmp(const struct cons *x, const struct cons *y)
{
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return 0;
}

static int item_cmp(const struct item *x, const struct item *y)
{
	int r = cons_cmp(x->c, y->c);
	if (r)
		return r;
	return x->sub < y->sub ? -1 : x->sub > y->sub;
}

static int items_insert(struct cpu_items *l, struct item it)
{
	size_t cap = l->cap;
	if (grow((void **)&l->v, &cap, l->n + 1, sizeof(*l->v)))
		return -ENOMEM;
	l->cap = (unsigned)cap;
	unsigned lo = 0, hi = l->n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (item_cmp(&l->v[mid], &it) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&l->v[lo + 1], &l->v[lo], (l->n - lo) * sizeof(*l->v));
	l->v[lo] = it;
	l->n++;
	return 0;
}

static void items_remove(struct cpu_items *l, const struct cons *c)
{
	unsigned j = 0;
	for (unsigned i = 0; i < l->n; i++)
		if (l->v[i].c != c)
			l->v[j++] = l->v[i];
	l->n = j;
}

/* Whether an earlier vCPU of the same VM names cpu too. */
static bool seen_cpu(const struct cons *c, unsigned v, unsigned cpu)
{
	for (unsigned k = 0; k < v; k++)
		if (arb_cpuset_has(c->vcpus[k].set, cpu))
			return true;
	return false;
}

/* Whether c has items: a VM that claims nothing (ARB_GUEST_NONE) has none,
 * so no computation ever sees it. */
static bool cons_placed(const struct arb *a, const struct cons *c)
{
	return c->kind == CONS_SESSION || a->mode != ARB_GUEST_NONE;
}

static void session_unlink_cpu(struct arb *a, struct cons *c, unsigned cpu)
{
	struct cpu_items *l = &a->items[cpu];
	unsigned n = l->n;
	items_remove(l, c);
	if (l->n != n)
		l->n_ev -= c->n_ev;
}

/* ARB_PARTITION_UNIFORM keeps the VMs in global order: a computation walks
 * them to grow the one partition. */
static int vms_insert(struct arb *a, struct cons *c)
{
	if (grow((void **)&a->vms, &a->cap_vms, a->n_vms + 1, sizeof(*a->vms)))
		return -ENOMEM;
	size_t lo = 0, hi = a->n_vms;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cons_cmp(a->vms[mid], c) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&a->vms[lo + 1], &a->vms[lo], (a->n_vms - lo) * sizeof(*a->vms));
	a->vms[lo] = c;
	a->n_vms++;
	return 0;
}

static void vms_remove(struct arb *a, const struct cons *c)
{
	size_t j = 0;
	for (size_t i = 0; i < a->n_vms; i++)
		if (a->vms[i] != c)
			a->vms[j++] = a->vms[i];
	a->n_vms = j;
}

static void cons_unlink(struct arb *a, struct cons *c)
{
	if (!cons_placed(a, c))
		return;
	if (c->kind == CONS_VM && a->uniform)
		vms_remove(a, c);
	if (c->kind == CONS_VM) {
		/* items_remove drops all of c's items on a CPU at once */
		for (unsigned v = 0; v < c->n_vcpus; v++)
			for (unsigned i = 0; i < c->vcpus[v].n_cpus; i++)
				if (!seen_cpu(c, v, c->vcpus[v].cpus[i]))
					items_remove(&a->items[c->vcpus[v].cpus[i]], c);
	} else {
		for (unsigned i = 0; i < c->n_cpus; i++)
			session_unlink_cpu(a, c, c->cpus[i]);
	}
}

/* A session's item on cpu, and room for its kept_for_guests marks. The
 * count of events linked only grows back to a value seen before when a
 * refused change puts the old consumer back, so that needs no memory. */
static int session_link_cpu(struct arb *a, struct cons *c, unsigned cpu)
{
	struct cpu_items *l = &a->items[cpu];
	struct work *w = &a->work[cpu];

	if (a->mode == ARB_GUEST_PERF_PINNED) {
		size_t cap = w->cap_kept;
		if (grow((void **)&w->kept, &cap, (size_t)l->n_ev + c->n_ev, sizeof(*w->kept)))
			return -ENOMEM;
		w->cap_kept = (unsigned)cap;
	}
	if (items_insert(l, (struct item){ c, 0, 0 }))
		return -ENOMEM;
	l->n_ev += c->n_ev;
	return 0;
}

/* Adds c to the item list of every CPU it names; all or nothing. */
static int cons_link(struct arb *a, struct cons *c)
{
	bool ok = true;

	if (!cons_placed(a, c))
		return 0;
	if (c->kind == CONS_VM) {
		ok = !a->uniform || !vms_insert(a, c);
		for (unsigned v = 0; ok && v < c->n_vcpus; v++)
			for (unsigned i = 0; ok && i < c->vcpus[v].n_cpus; i++)
				ok = !items_insert(&a->items[c->vcpus[v].cpus[i]], (struct item){ c, v, 0 });
	} else {
		for (unsigned i = 0; ok && i < c->n_cpus; i++)
			ok = !session_link_cpu(a, c, c->cpus[i]);
	}
	if (ok)
		return 0;
	cons_unlink(a, c);
	return -ENOMEM;
}

/* ---- consumers ---- */

static void cons_free(struct cons *c)
{
	if (!c)
		return;
	for (unsigned v = 0; c->vcpus && v < c->n_vcpus; v++) {
		free(c->vcpus[v].set);
		free(c->vcpus[v].cpus);
		free(c->vcpus[v].known);
		free(c->vcpus[v].nknown);
		free(c->vcpus[v].snap);
		free(c->vcpus[v].nsnap);
	}
	free(c->vcpus);
	free(c->set);
	free(c->cpus);
	free(c->ev);
	free(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct cons *, cons_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct arb *, arb_destroy)

static int reason(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int reason(char *why, size_t len, const char *fmt, ...)
{
	if (why && len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int set_to_list(const struct arb *a, const uint64_t *in, uint64_t **set,
		       unsigned **list, unsigned *n)
{
	size_t words = ARB_CPUSET_WORDS(a->n_cpus);
	unsigned cnt = 0;

	*set = calloc(words, sizeof(uint64_t));
	if (!*set)
		return -ENOMEM;
	memcpy(*set, in, words * sizeof(uint64_t));
	if (a->n_cpus % 64)
		(*set)[words - 1] &= (1ULL << (a->n_cpus % 64)) - 1;
	for (size_t w = 0; w < words; w++)
		cnt += pop64((*set)[w]);
	*list = malloc((cnt ? cnt : 1) * sizeof(unsigned));
	if (!*list)
		return -ENOMEM;
	*n = 0;
	for (size_t w = 0; w < words; w++)
		for (uint64_t b = (*set)[w]; b; b &= b - 1)
			(*list)[(*n)++] = (unsigned)(w * 64 + (unsigned)__builtin_ctzll(b));
	return 0;
}

static bool set_outside(const struct arb *a, const uint64_t *in)
{
	size_t words = ARB_CPUSET_WORDS(a->n_cpus);
	if (a->n_cpus % 64 == 0)
		return false;
	return in[words - 1] & ~((1ULL << (a->n_cpus % 64)) - 1);
}

static int check_name(const char *name, char *why, size_t whylen)
{
	if (!name || !name[0])
		return reason(why, whylen, "a name is required");
	if (strlen(name) >= ARB_NAME_LEN)
		return reason(why, whylen, "name '%.20s...' is longer than %d bytes",
			      name, ARB_NAME_LEN - 1);
	return 0;
}

static int check_common(const char *name, enum arb_class cls, char *why, size_t whylen)
{
	int r = check_name(name, why, whylen);
	if (r)
		return r;
	if (cls != ARB_CLASS_GUARANTEED && cls != ARB_CLASS_PREFERRED &&
	    cls != ARB_CLASS_SHARED)
		return reason(why, whylen, "'%s': unknown class %d", name, (int)cls);
	return 0;
}

/* A CPU's state for snap_put: guest partition, counters holding an event,
 * then the allowed counters of each of these events. */
static size_t snap_words(const struct arb *a)
{
	return 2 + pop64(a->inv_mask);
}

static int vm_build(const struct arb *a, const struct arb_vm_spec *s, struct cons **out,
		    char *why, size_t whylen)
{
	int r;

	if (!s)
		return reason(why, whylen, "no VM given");
	if ((r = check_common(s->name, s->cls, why, whylen)))
		return r;
	if (s->n_vcpus == 0 || s->n_vcpus > ARB_MAX_VCPUS || !s->vcpus)
		return reason(why, whylen, "vm '%s': %u vCPUs (1..%d)", s->name,
			      s->n_vcpus, ARB_MAX_VCPUS);
	for (unsigned v = 0; v < s->n_vcpus; v++) {
		const struct arb_vcpu_spec *vs = &s->vcpus[v];
		if (!vs->cpus || set_outside(a, vs->cpus))
			return reason(why, whylen, "vm '%s' vcpu %u: CPU set outside the inventory",
				      s->name, v);
		bool any = false;
		for (size_t w = 0; w < ARB_CPUSET_WORDS(a->n_cpus); w++)
			any |= vs->cpus[w] != 0;
		if (!any)
			return reason(why, whylen, "vm '%s' vcpu %u: empty CPU set", s->name, v);
		if (vs->num_gp > 32 ||
		    (matching_counters((uint32_t)((1ULL << vs->num_gp) - 1), vs->fixed_mask) &
		     ~a->inv_mask))
			return reason(why, whylen,
				      "vm '%s' vcpu %u: %u PMCs and fixed mask 0x%x exceed the host PMU",
				      s->name, v, vs->num_gp, vs->fixed_mask);
	}

	_cleanup_(cons_freep) struct cons *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->kind = CONS_VM;
	c->key = order_key(a->mode, CONS_VM, s->cls, s->priority);
	c->id = s->id;
	snprintf(c->name, sizeof(c->name), "%s", s->name);
	c->prio = s->priority;
	c->cls = s->cls;
	c->n_vcpus = s->n_vcpus;
	c->vcpus = calloc(s->n_vcpus, sizeof(*c->vcpus));
	if (!c->vcpus)
		return -ENOMEM;
	for (unsigned v = 0; v < s->n_vcpus; v++) {
		struct vcpu *vc = &c->vcpus[v];
		vc->vm = c;
		vc->idx = v;
		vc->fresh = true;
		vc->want = matching_counters((uint32_t)((1ULL << s->vcpus[v].num_gp) - 1),
					  s->vcpus[v].fixed_mask);
		if (set_to_list(a, s->vcpus[v].cpus, &vc->set, &vc->cpus, &vc->n_cpus))
			return -ENOMEM;
		vc->known = calloc(2 * (size_t)vc->n_cpus, sizeof(uint64_t));
		vc->nknown = calloc(2 * (size_t)vc->n_cpus, sizeof(uint64_t));
		vc->snap = calloc(snap_words(a) * vc->n_cpus, sizeof(uint64_t));
		vc->nsnap = calloc(snap_words(a) * vc->n_cpus, sizeof(uint64_t));
		if (!vc->known || !vc->nknown || !vc->snap || !vc->nsnap)
			return -ENOMEM;
	}
	*out = TAKE_PTR(c);
	return 0;
}

static int session_build(const struct arb *a, const struct arb_session_spec *s,
			 struct cons **out, char *why, size_t whylen)
{
	int r;

	if (!s)
		return reason(why, whylen, "no session given");
	if ((r = check_common(s->name, s->cls, why, whylen)))
		return r;
	if (s->n_events == 0 || s->n_events > ARB_MAX_EVENTS || !s->events)
		return reason(why, whylen, "session '%s': %u events (1..%d)", s->name,
			      s->n_events, ARB_MAX_EVENTS);
	if (!s->cpus || set_outside(a, s->cpus))
		return reason(why, whylen, "session '%s': CPU set outside the inventory", s->name);
	bool any = false;
	for (size_t w = 0; w < ARB_CPUSET_WORDS(a->n_cpus); w++)
		any |= s->cpus[w] != 0;
	if (!any)
		return reason(why, whylen, "session '%s': empty CPU set", s->name);
	for (unsigned e = 0; e < s->n_events; e++) {
		const struct arb_event_spec *ev = &s->events[e];
		if ((r = check_name(ev->name, why, whylen)))
			return r;
		if (!(matching_counters(ev->gp_mask, ev->fixed_mask) & a->inv_mask))
			return reason(why, whylen,
				      "session '%s' event '%s': no counter of this PMU can count it",
				      s->name, ev->name);
	}

	_cleanup_(cons_freep) struct cons *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->kind = CONS_SESSION;
	c->key = order_key(a->mode, CONS_SESSION, s->cls, s->priority);
	c->id = s->id;
	snprintf(c->name, sizeof(c->name), "%s", s->name);
	c->prio = s->priority;
	c->cls = s->cls;
	c->n_ev = s->n_events;
	c->ev = calloc(s->n_events, sizeof(*c->ev));
	if (!c->ev || set_to_list(a, s->cpus, &c->set, &c->cpus, &c->n_cpus))
		return -ENOMEM;
	for (unsigned e = 0; e < s->n_events; e++) {
		snprintf(c->ev[e].name, sizeof(c->ev[e].name), "%s", s->events[e].name);
		c->ev[e].mask = matching_counters(s->events[e].gp_mask, s->events[e].fixed_mask) &
				a->inv_mask;
	}
	*out = TAKE_PTR(c);
	return 0;
}

static struct cons *cons_find(const struct arb *a, enum cons_kind kind, uint64_t id,
			      unsigned *at)
{
	for (unsigned i = 0; i < a->n_cons; i++)
		if (a->cons[i]->kind == kind && a->cons[i]->id == id) {
			if (at)
				*at = i;
			return a->cons[i];
		}
	return NULL;
}

/* ---- per-CPU computation ---- */

static uint64_t cur_grant(const struct arb *a, const struct vcpu *v)
{
	return v->stamp == a->epoch ? v->ngrant : v->grant;
}

static int work_init(struct arb *a, unsigned cpu)
{
	struct work *w = &a->work[cpu];

	w->epoch = a->epoch;
	w->dirty = false;
	w->listed = false;
	w->pshift = 0;
	w->pos = 0;
	w->pcount = 0;
	w->guest = 0;
	w->stuck = 0;
	w->n_kept = 0;
	w->ci = 0;
	matching_init(&w->m, a->inv_mask);
	for (unsigned f = 0; f < a->n_foreign; f++) {
		if (a->foreign[f].cpu >= 0 && (unsigned)a->foreign[f].cpu != cpu)
			continue;
		int slot = matching_add(&w->m, a->foreign[f].mask);
		if (slot < 0)
			return slot; /* only arb_create can meet this */
		w->slot_pl[slot] = (int16_t)w->pcount++;
		w->slot_cons[slot] = NULL;
		w->slot_ev[slot] = (uint16_t)f;
	}
	return 0;
}

static struct work *work_get(struct arb *a, unsigned cpu)
{
	if (a->work[cpu].epoch != a->epoch) {
		int r = work_init(a, cpu);
		assert(r == 0); /* arb_create placed the foreign events already */
		(void)r;
	}
	return &a->work[cpu];
}

/* Moves counter bit p into the guest partition; the caller knows the host
 * events can all be kept without it. */
static void guest_claim(struct work *w, unsigned p)
{
	uint64_t bit = 1ULL << p;
	if (w->guest & bit)
		return;
	int r = matching_withdraw(&w->m, p);
	assert(r == 0);
	(void)r;
	w->guest |= bit;
}

static void place_event(struct work *w, int slot, struct cons *c, unsigned e)
{
	w->slot_pl[slot] = (int16_t)(w->pcount + e);
	w->slot_cons[slot] = c;
	w->slot_ev[slot] = (uint16_t)e;
}

/* Replays a clean item from the committed plan. */
static void replay_item(struct arb *a, unsigned cpu, const struct item *it)
{
	struct work *w = &a->work[cpu];

	if (it->c->kind == CONS_VM && a->uniform) {
		/* the one partition grows at committed attempts (ubring) */
	} else if (it->c->kind == CONS_VM) {
		/* counters already guest need no withdrawal */
		uint64_t g = it->c->vcpus[it->sub].grant & ~w->guest;
		while (g) {
			guest_claim(w, (unsigned)__builtin_ctzll(g));
			g &= g - 1;
		}
	} else {
		const struct arb_placement *pl = a->plan[cpu].pl;
		for (unsigned e = 0; e < it->c->n_ev; e++) {
			const struct arb_placement *was = &pl[(int)w->pcount + w->pshift + (int)e];
			if (was->counter < 0) {
				if (was->kept_for_guests)
					w->kept[w->n_kept++] = w->pcount + e;
				continue;
			}
			int slot = matching_add(&w->m, it->c->ev[e].mask);
			assert(slot >= 0);
			place_event(w, slot, it->c, e);
		}
		w->pcount += it->c->n_ev;
	}
	w->pos++;
}

/* Brings a clean CPU's state up to (not including) item `upto`. */
static void bring(struct arb *a, unsigned cpu, const struct item *upto)
{
	struct work *w = work_get(a, cpu);
	const struct cpu_items *l = &a->items[cpu];

	if (w->dirty)
		return;
	while (w->pos < l->n && item_cmp(&l->v[w->pos], upto) < 0)
		replay_item(a, cpu, &l->v[w->pos]);
}

static void note_holder(struct arb *a, struct work *w, unsigned cpu, unsigned counter)
{
	struct fail *f = &a->fail;
	uint64_t bit = 1ULL << counter;

	f->cpu = cpu;
	f->counter = (int)counter;
	f->holder = NULL;
	f->foreign = NULL;
	if (w->guest & bit) {
		const struct cpu_items *l = &a->items[cpu];
		for (unsigned i = 0; i < w->pos && i < l->n; i++) {
			const struct item *it = &l->v[i];
			if (it->c->kind == CONS_VM &&
			    (cur_grant(a, &it->c->vcpus[it->sub]) & bit)) {
				f->holder = it->c;
				f->holder_sub = it->sub;
				f->holder_is_event = false;
				return;
			}
		}
	} else if (w->m.used & bit) {
		int slot = w->m.owner[counter];
		if (w->slot_cons[slot]) {
			f->holder = w->slot_cons[slot];
			f->holder_sub = w->slot_ev[slot];
			f->holder_is_event = true;
		} else {
			f->foreign = a->foreign[w->slot_ev[slot]].name;
		}
	}
}

static void decide_session(struct arb *a, unsigned cpu, const struct item *it)
{
	struct work *w = &a->work[cpu];
	struct cons *c = it->c;

	assert(w->pos < a->items[cpu].n && a->items[cpu].v[w->pos].c == c);
	for (unsigned e = 0; e < c->n_ev && c->cls != ARB_CLASS_SHARED; e++) {
		int slot = matching_add(&w->m, c->ev[e].mask);
		if (slot >= 0) {
			place_event(w, slot, c, e);
			continue;
		}
		/* Room kept for perf-based guests is what the event misses when
		 * it would fit with those counters: say so. */
		if (a->mode == ARB_GUEST_PERF_PINNED && w->guest &&
		    matching_fits_with(&w->m, w->guest, c->ev[e].mask)) {
			assert(w->n_kept < w->cap_kept);
			w->kept[w->n_kept++] = w->pcount + e;
		}
		if (c == a->adm && !a->fail.set) {
			a->fail.set = true;
			a->fail.need = c;
			a->fail.need_sub = e;
			a->fail.need_is_event = true;
			note_holder(a, w, cpu, (unsigned)__builtin_ctzll(c->ev[e].mask));
		}
	}
	w->pcount += c->n_ev;
	w->pos++;
}

/* The rest of a CPU's computation reads only the guest partition, which
 * counters hold an event and which counters that event allows: avail is
 * what the guest does not hold, and a search goes from counter to owner to
 * mask, so slot numbers are mere labels. stuck and the matching's failure
 * cache are short cuts that hold for any computation reaching this state.
 * Only the first 2 + popcount(used) words are written. */
static void snap_put(const struct work *w, uint64_t *dst)
{
	uint64_t *d = dst + 2;
	dst[0] = w->guest;
	dst[1] = w->m.used;
	for (uint64_t u = w->m.used; u; u &= u - 1)
		*d++ = w->m.mask[w->m.owner[__builtin_ctzll(u)]];
}

static uint32_t snap_hash(const struct work *w)
{
	uint64_t h = w->guest * 0x9e3779b97f4a7c15ULL ^ w->m.used;
	for (uint64_t u = w->m.used; u; u &= u - 1)
		h = (h ^ w->m.mask[w->m.owner[__builtin_ctzll(u)]]) * 0xff51afd7ed558ccdULL;
	return (uint32_t)(h ^ (h >> 32));
}

static bool snap_same(const struct work *w, const uint64_t *src)
{
	const uint64_t *d = src + 2;
	if (src[0] != w->guest || src[1] != w->m.used)
		return false;
	for (uint64_t u = w->m.used; u; u &= u - 1)
		if (*d++ != w->m.mask[w->m.owner[__builtin_ctzll(u)]])
			return false;
	return true;
}

static unsigned cpu_index(const struct vcpu *v, unsigned cpu)
{
	unsigned lo = 0, hi = v->n_cpus;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (v->cpus[mid] < cpu)
			lo = mid + 1;
		else
			hi = mid;
	}
	assert(lo < v->n_cpus && v->cpus[lo] == cpu);
	return lo;
}

static int session_pl(const struct cons *c, unsigned cpu)
{
	return c && c->kind == CONS_SESSION && arb_cpuset_has(c->set, cpu) ? (int)c->n_ev : 0;
}

/*
 * Whether a dirty CPU, about to decide the vCPU item `it`, is back in the
 * state the committed computation had there. Past every item of the
 * changed consumer, the items left are the committed ones, so from there
 * the committed computation is this one: the CPU is clean again and is
 * replayed, or re-dirtied by a vCPU whose grant changes, like any other.
 * This is what keeps a change that a few items absorb from recomputing
 * every floating vCPU of the node after them.
 */
static bool back_to_committed(struct arb *a, unsigned cpu, const struct item *it)
{
	struct work *w = &a->work[cpu];
	const struct vcpu *v = &it->c->vcpus[it->sub];

	if (v->fresh || (a->adm && cons_cmp(it->c, a->adm) <= 0) ||
	    (a->gone && cons_cmp(it->c, a->gone) <= 0))
		return false;
	if (it->hint != snap_hash(w) ||
	    !snap_same(w, v->snap + cpu_index(v, cpu) * snap_words(a)))
		return false;
	w->dirty = false;
	w->pshift = session_pl(a->gone, cpu) - session_pl(a->adm, cpu);
	return true;
}

/* item_cmp on the copied keys */
static inline bool heap_less(const struct heap_ent *x, const struct heap_ent *y)
{
	if (x->key != y->key)
		return x->key < y->key;
	if (x->seq != y->seq)
		return x->seq < y->seq;
	return x->sub < y->sub;
}

/*
 * Queues a dirty CPU at its next item. A session item reads and writes its
 * own CPU only, so the session items up to the CPU's next vCPU are decided
 * here at once, without a round through the heap. That changes the order
 * in which the same session is decided on different CPUs, which is seen
 * only in the refusal reason of a session under admission (the first
 * failure found): then every item goes through the heap as before.
 */
static int heap_push(struct arb *a, unsigned cpu)
{
	const struct cpu_items *l = &a->items[cpu];
	struct work *w = &a->work[cpu];

	if (a->full && !a->uniform)
		return 0;
	/* With one partition, a session item after a vCPU of another CPU may
	 * see that vCPU's claims: every item goes through the heap. */
	if ((!a->adm || a->adm->kind != CONS_SESSION) && !a->uniform)
		while (w->pos < l->n && l->v[w->pos].c->kind == CONS_SESSION)
			decide_session(a, cpu, &l->v[w->pos]);
	unsigned pos = w->pos;
	if (pos >= l->n)
		return 0;
	const struct item *it = &a->items[cpu].v[pos];
	if (it->c->kind == CONS_VM && !a->uniform && back_to_committed(a, cpu, it))
		return 0;
	struct heap_ent e = { it->c->key, it->c->seq, it->sub, cpu, pos };
	if (grow((void **)&a->heap, &a->cap_heap, a->n_heap + 1, sizeof(*a->heap)))
		return -ENOMEM;
	size_t i = a->n_heap++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(&e, &a->heap[p]))
			break;
		a->heap[i] = a->heap[p];
		i = p;
	}
	a->heap[i] = e;
	return 0;
}

static struct heap_ent heap_pop(struct arb *a)
{
	struct heap_ent top = a->heap[0];
	struct heap_ent last = a->heap[--a->n_heap];
	size_t i = 0, n = a->n_heap;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const struct heap_ent *best = &last;
		if (l < n && heap_less(&a->heap[l], best)) {
			m = l;
			best = &a->heap[l];
		}
		if (l + 1 < n && heap_less(&a->heap[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		a->heap[i] = a->heap[m];
		i = m;
	}
	if (n)
		a->heap[i] = last;
	return top;
}

static int mark_dirty(struct arb *a, unsigned cpu)
{
	struct work *w = work_get(a, cpu);
	if (w->dirty)
		return 0;
	w->dirty = true;
	if (!w->listed) {
		w->listed = true;
		a->dirty[a->n_dirty++] = cpu;
	}
	return heap_push(a, cpu);
}

static bool is_dirty(const struct arb *a, unsigned cpu)
{
	return a->work[cpu].epoch == a->epoch && a->work[cpu].dirty;
}

/* Whether counter p can join the guest partition of CPU i of v (guest
 * already, or the host events there can all be kept without it); records
 * the answer in v->nknown. */
static bool try_counter(struct arb *a, struct vcpu *v, unsigned i, unsigned p)
{
	struct work *w = &a->work[v->cpus[i]];
	uint64_t bit = 1ULL << p;

	if ((w->guest & bit) || (!(w->stuck & bit) && matching_can_withdraw(&w->m, p))) {
		v->nknown[2 * i] |= bit;
		return true;
	}
	w->stuck |= bit;
	v->nknown[2 * i + 1] |= bit;
	return false;
}

/*
 * A clean CPU of v holds the committed state up to v, so what the committed
 * computation learnt there (v->known) still holds for as long as v's grant
 * agrees with the committed one bit by bit: the state a counter is tried in
 * is the start state plus the claims of the granted counters below it.
 * Counters are therefore decided on the dirty CPUs only, reading the clean
 * ones from v->known, and the clean CPUs are rebuilt (bring) only when that
 * is not enough: an answer there is unknown, or the grant departs from the
 * committed one. Rebuilding replays every item before v on those CPUs,
 * which is most of the cost of a change when a pinned vCPU's CPU is dirty
 * and floating vCPUs span its node.
 *
 * Counters are tried in ascending order. A counter in every CPU's guest
 * partition succeeds without a search and changes nothing, so this is the
 * order of the full computation too.
 */
static int decide_vcpu(struct arb *a, struct vcpu *v)
{
	const struct item it = { v->vm, v->idx, 0 };
	uint64_t ng = 0, cok = ~0ULL, cfail = 0;
	unsigned n_dirty = 0;
	int r;

	for (unsigned i = 0; i < v->n_cpus; i++) {
		if (is_dirty(a, v->cpus[i])) {
			a->didx[n_dirty++] = i;
			v->nknown[2 * i] = v->nknown[2 * i + 1] = 0;
			continue;
		}
		v->nknown[2 * i] = v->fresh ? 0 : v->known[2 * i];
		v->nknown[2 * i + 1] = v->fresh ? 0 : v->known[2 * i + 1];
		cok &= v->nknown[2 * i];
		cfail |= v->nknown[2 * i + 1];
	}
	/* A fresh vCPU has nothing known; the one under admission must also
	 * name the first CPU that refuses it, in CPU order. */
	bool lazy = n_dirty < v->n_cpus && !v->fresh;
	if (!lazy) {
		for (unsigned i = 0; i < v->n_cpus; i++)
			bring(a, v->cpus[i], &it);
	}
	/* A full computation gives the committed states again (it equals
	 * the incremental one), so only an incremental one writes them. */
	size_t sw = snap_words(a);
	for (unsigned i = 0; i < v->n_cpus && !a->full; i++) {
		uint64_t *d = v->nsnap + i * sw;
		const uint64_t *s = v->snap + i * sw;
		if (lazy && !is_dirty(a, v->cpus[i])) {
			memcpy(d, s, (2 + pop64(s[1])) * sizeof(*s));
		} else {
			struct work *w = &a->work[v->cpus[i]];
			snap_put(w, d);
			a->items[v->cpus[i]].v[w->pos].hint = snap_hash(w);
		}
	}
	for (unsigned i = 0; i < v->n_cpus; i++)
		assert(!is_dirty(a, v->cpus[i]) ||
		       (a->work[v->cpus[i]].pos < a->items[v->cpus[i]].n &&
			a->items[v->cpus[i]].v[a->work[v->cpus[i]].pos].c == v->vm &&
			a->items[v->cpus[i]].v[a->work[v->cpus[i]].pos].sub == v->idx));

	uint64_t todo = v->vm->cls == ARB_CLASS_SHARED ? 0 : v->want;
	while (todo && lazy) {
		unsigned p = (unsigned)__builtin_ctzll(todo);
		uint64_t bit = 1ULL << p;
		bool fail = cfail & bit, unknown = !fail && !(cok & bit);

		for (unsigned k = 0; k < n_dirty && !fail; k++)
			fail = !try_counter(a, v, a->didx[k], p);
		if ((!unknown || fail) && fail == !(v->grant & bit)) {
			/* as committed: the clean CPUs stay as they are */
			todo &= todo - 1;
			if (fail)
				continue;
			ng |= bit;
			for (unsigned k = 0; k < n_dirty; k++)
				guest_claim(&a->work[v->cpus[a->didx[k]]], p);
			continue;
		}
		/* Rebuild the clean CPUs as the full computation has them at
		 * counter p, and decide the rest everywhere. */
		lazy = false;
		for (unsigned i = 0; i < v->n_cpus; i++) {
			unsigned cpu = v->cpus[i];
			v->nknown[2 * i] &= ~todo;
			v->nknown[2 * i + 1] &= ~todo;
			if (is_dirty(a, cpu))
				continue;
			bring(a, cpu, &it);
			for (uint64_t g = ng; g; g &= g - 1)
				guest_claim(&a->work[cpu], (unsigned)__builtin_ctzll(g));
		}
	}
	/* Counters already in the guest partition of every CPU are shared at
	 * no cost: granting them first changes nothing for the others. */
	uint64_t common = todo;
	for (unsigned i = 0; i < v->n_cpus && common; i++)
		common &= a->work[v->cpus[i]].guest;
	if (common) {
		for (unsigned i = 0; i < v->n_cpus; i++)
			v->nknown[2 * i] |= common;
		ng |= common;
		todo &= ~common;
	}
	while (todo) {
		unsigned p = (unsigned)__builtin_ctzll(todo);
		uint64_t bit = 1ULL << p;
		bool ok = true;
		todo &= todo - 1;
		for (unsigned i = 0; i < v->n_cpus && ok; i++) {
			if (try_counter(a, v, i, p))
				continue;
			ok = false;
			if (v->vm == a->adm && !a->fail.set) {
				a->fail.set = true;
				a->fail.need = v->vm;
				a->fail.need_sub = v->idx;
				a->fail.need_is_event = false;
				note_holder(a, &a->work[v->cpus[i]], v->cpus[i], p);
			}
		}
		if (!ok)
			continue;
		ng |= bit;
		for (unsigned i = 0; i < v->n_cpus; i++)
			guest_claim(&a->work[v->cpus[i]], p);
	}

	bool changed = v->fresh || ng != v->grant;
	/* Clean CPUs left alone: the grant is the committed one, so a later
	 * bring() replays it from there. */
	assert(!lazy || !changed);
	v->ngrant = ng;
	v->stamp = a->epoch;
	if (grow((void **)&a->recomp, &a->cap_recomp, a->n_recomp + 1, sizeof(*a->recomp)))
		return -ENOMEM;
	a->recomp[a->n_recomp++] = v;
	for (unsigned i = 0; i < v->n_cpus; i++) {
		unsigned cpu = v->cpus[i];
		struct work *w = &a->work[cpu];
		if (is_dirty(a, cpu)) {
			w->pos++;
			if ((r = heap_push(a, cpu)))
				return r;
		} else if (!lazy) {
			w->pos++;
			if (changed && (r = mark_dirty(a, cpu)))
				return r;
		}
	}
	return 0;
}

/* Counters of free_c a flexible event may expect, after the at-risk guest
 * PMCs took theirs: general ones take general counters, fixed j fixed j. */
static double counters_left(uint64_t free_c, double risk_gp,
			    const double risk_fixed[TRANSITION_MAX_FIXED])
{
	double gp = pop64(free_c & 0xffffffffULL) - risk_gp;
	double left = gp > 0 ? gp : 0;
	for (uint64_t f = free_c >> MATCHING_FIXED_SHIFT; f; f &= f - 1) {
		double x = 1 - risk_fixed[__builtin_ctzll(f)];
		left += x > 0 ? x : 0;
	}
	return left;
}

/* The CPU's next plan from its final state. */
static int finalize_cpu(struct arb *a, unsigned cpu)
{
	struct work *w = &a->work[cpu];
	struct cpu_plan *p = &a->plan[cpu];
	const struct cpu_items *l = &a->items[cpu];
	size_t cap = p->cap_npl;
	unsigned n = 0;

	assert(w->pos == l->n);
	if (grow((void **)&p->npl, &cap, w->pcount ? w->pcount : 1, sizeof(*p->npl)))
		return -ENOMEM;
	p->cap_npl = (unsigned)cap;
	for (unsigned f = 0; f < a->n_foreign; f++)
		if (a->foreign[f].cpu < 0 || (unsigned)a->foreign[f].cpu == cpu)
			p->npl[n++] = (struct arb_placement){ ARB_HOLDER_FOREIGN, f, 0,
							      a->foreign[f].name, -1, 1.0, false };
	/* Demand competing for the host counters left after dedicated events:
	 * multiplexed session events, and multiplexed guest PMCs of the vCPUs
	 * that may run here, weighted by the share of time a floating vCPU is
	 * expected to spend on this CPU. At-risk perf-based guest PMCs are
	 * task-pinned events instead: they do not rotate with the flexible
	 * ones but take free counters before them, so they are taken off the
	 * counters left (risk_gp: general counters, risk_fixed: each fixed
	 * one), with the same weight. */
	double demand = 0, risk_gp = 0, risk_fixed[TRANSITION_MAX_FIXED];
	bool risk = false;
	for (unsigned i = 0; i < l->n; i++) {
		const struct item *it = &l->v[i];
		if (it->c->kind == CONS_VM) {
			const struct vcpu *v = &it->c->vcpus[it->sub];
			uint64_t mux = v->want & ~cur_grant(a, v);
			if (a->mode == ARB_GUEST_IDENTITY) {
				demand += (double)pop64(mux) / v->n_cpus;
				continue;
			}
			if (!mux)
				continue;
			if (!risk)
				memset(risk_fixed, 0, sizeof(risk_fixed));
			risk = true;
			risk_gp += (double)pop64(mux & 0xffffffffULL) / v->n_cpus;
			for (uint64_t f = mux >> MATCHING_FIXED_SHIFT; f; f &= f - 1)
				risk_fixed[__builtin_ctzll(f)] += 1.0 / v->n_cpus;
			continue;
		}
		for (unsigned e = 0; e < it->c->n_ev; e++)
			p->npl[n++] = (struct arb_placement){ ARB_HOLDER_SESSION, it->c->id, e,
							      it->c->ev[e].name, -1, 0, false };
	}
	assert(n == w->pcount);
	for (unsigned s = 0; s < w->m.n; s++) {
		p->npl[w->slot_pl[s]].counter = w->m.at[s];
		p->npl[w->slot_pl[s]].share = 1.0;
	}
	/* Every slot holds a distinct placement, so the others are the
	 * multiplexed ones; adding them one by one keeps the rounding. */
	for (unsigned i = w->m.n; i < n; i++)
		demand += 1;
	uint64_t spare = w->m.avail & ~w->m.used;
	unsigned k = 0;
	for (unsigned i = 0; i < l->n; i++) {
		const struct cons *c = l->v[i].c;
		if (c->kind != CONS_SESSION)
			continue;
		while (p->npl[k].holder != ARB_HOLDER_SESSION)
			k++;
		for (unsigned e = 0; e < c->n_ev; e++, k++) {
			if (p->npl[k].counter >= 0)
				continue;
			uint64_t free_c = spare & c->ev[e].mask;
			double s = (risk ? counters_left(free_c, risk_gp, risk_fixed)
				    : pop64(free_c)) / demand;
			p->npl[k].share = s > 1 ? 1 : s;
		}
	}
	for (unsigned i = 0; i < w->n_kept; i++)
		p->npl[w->kept[i]].kept_for_guests = true;
	p->n_npl = n;
	p->nguest = w->guest;
	return 0;
}

/* Starts a new epoch, so that every scratch value of the previous
 * computation is ignored. 0 is never an epoch: it marks "never computed". */
static void next_epoch(struct arb *a)
{
	if (++a->epoch != 0)
		return;
	for (unsigned c = 0; c < a->n_cpus; c++)
		a->work[c].epoch = 0;
	for (unsigned i = 0; i < a->n_cons; i++)
		for (unsigned v = 0; v < a->cons[i]->n_vcpus; v++)
			a->cons[i]->vcpus[v].stamp = 0;
	a->epoch = 1;
}

static void begin(struct arb *a, bool full)
{
	next_epoch(a);
	a->full = full;
	a->n_dirty = 0;
	a->n_heap = 0;
	a->n_recomp = 0;
	memset(&a->fail, 0, sizeof(a->fail));
}

static int finalize_dirty(struct arb *a)
{
	for (unsigned i = 0; i < a->n_dirty; i++) {
		unsigned cpu = a->dirty[i];
		struct work *w = &a->work[cpu];
		/* clean again before its end (back_to_committed) */
		while (!w->dirty && w->pos < a->items[cpu].n)
			replay_item(a, cpu, &a->items[cpu].v[w->pos]);
		int r = finalize_cpu(a, cpu);
		if (r)
			return r;
	}
	return 0;
}

/*
 * Recomputes the CPUs in footprint (and whatever their vCPUs drag in) from
 * item `from` on: what is ordered before the change cannot depend on it, so
 * it is replayed from the committed plan, whose placements still line up
 * with the items before `from`.
 */
static int compute_uniform(struct arb *a, const uint64_t *footprint, const struct cons *from);

static int compute_incremental(struct arb *a, const uint64_t *footprint,
			       const struct item *from)
{
	int r;

	if (a->uniform)
		return compute_uniform(a, footprint, from->c);
	begin(a, false);
	for (size_t wd = 0; wd < ARB_CPUSET_WORDS(a->n_cpus); wd++)
		for (uint64_t b = footprint[wd]; b; b &= b - 1) {
			unsigned c = (unsigned)(wd * 64 + (unsigned)__builtin_ctzll(b));
			bring(a, c, from);
			if ((r = mark_dirty(a, c)))
				return r;
		}
	while (a->n_heap) {
		struct heap_ent e = heap_pop(a);
		struct work *w = &a->work[e.cpu];
		if (w->pos != e.pos || !w->dirty)
			continue; /* advanced by a vCPU spanning several dirty CPUs */
		const struct item *it = &a->items[e.cpu].v[e.pos];
		if (it->c->kind == CONS_SESSION) {
			decide_session(a, e.cpu, it);
			if ((r = heap_push(a, e.cpu)))
				return r;
		} else if ((r = decide_vcpu(a, &it->c->vcpus[it->sub]))) {
			return r;
		}
	}
	/* CPUs rebuilt only to serve a vCPU kept their committed plan. */
	return finalize_dirty(a);
}

static int cmp_cons_ptr(const void *x, const void *y)
{
	return cons_cmp(*(struct cons *const *)x, *(struct cons *const *)y);
}

/* The reference: every item, in global order, from nothing. */
static int compute_full(struct arb *a)
{
	int r;

	if (a->uniform)
		return compute_uniform(a, NULL, NULL);
	begin(a, true);
	struct cons **order = malloc((a->n_cons ? a->n_cons : 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	if (a->n_cons) {
		memcpy(order, a->cons, a->n_cons * sizeof(*order));
		qsort(order, a->n_cons, sizeof(*order), cmp_cons_ptr);
	}
	for (unsigned c = 0; c < a->n_cpus; c++) {
		work_get(a, c)->dirty = true;
		a->work[c].listed = true;
		a->dirty[a->n_dirty++] = c;
	}
	for (unsigned i = 0; i < a->n_cons; i++) {
		struct cons *c = order[i];
		if (!cons_placed(a, c))
			continue;
		if (c->kind == CONS_VM) {
			for (unsigned v = 0; v < c->n_vcpus; v++)
				if ((r = decide_vcpu(a, &c->vcpus[v]))) {
					free(order);
					return r;
				}
		} else {
			for (unsigned k = 0; k < c->n_cpus; k++)
				decide_session(a, c->cpus[k], &(struct item){ c, 0, 0 });
		}
	}
	free(order);
	return finalize_dirty(a);
}

/* ---- one partition for every CPU (ARB_PARTITION_UNIFORM) ----
 *
 * The partition is GP 0..k-1 plus some fixed counters, the same on every
 * CPU. It grows at vCPUs, in the global order: a vCPU tries the counters it
 * wants that are not in it yet (the next GP counters of the prefix, its
 * fixed ones), lowest first, and a counter joins when the host events
 * placed so far can be kept without it on every CPU. A counter that fails
 * can never join later (events are only added, counters only withdrawn),
 * and a GP counter that fails ends the prefix, so the whole computation
 * makes at most one attempt per counter. A vCPU passes through what it
 * wants of the partition as it stands after its own attempts, which is
 * what it wants of the final partition.
 *
 * Incrementally, sessions are still decided per CPU, on the CPUs the
 * change touches. Each attempt is tried on those CPUs; the other CPUs
 * answer as they did in the committed computation (every attempt records
 * the CPUs where it failed), which holds as long as the partition's
 * history is the committed one. Where it departs (an attempt turns out
 * differently, or one is made or lost), every CPU is recomputed from that
 * place on (uni_diverge): the partition changed for all of them.
 */

static struct upos upos_of(const struct cons *c, unsigned sub)
{
	return (struct upos){ c->key, c->seq, sub };
}

static int upos_cmp(const struct upos *x, const struct upos *y)
{
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->sub < y->sub ? -1 : x->sub > y->sub;
}

static size_t uni_words(const struct arb *a)
{
	return ARB_CPUSET_WORDS(a->n_cpus);
}

/* Applies the committed claims ordered before p (and at p too, when
 * at_too) to a CPU that follows the committed computation. */
static void uni_committed_claims(struct arb *a, struct work *w, const struct upos *p, bool at_too)
{
	while (w->ci < a->n_at) {
		const struct attempt *t = &a->at[w->ci];
		int c = upos_cmp(&t->pos, p);
		if (c > 0 || (c == 0 && !at_too))
			break;
		if (t->ok)
			guest_claim(w, t->counter);
		w->ci++;
	}
}

/* Brings a clean CPU to just before p: the committed items and claims
 * ordered before it, interleaved as computed (a claim at a vCPU's place
 * precedes its items), so that the matching is the committed one. */
static void ubring(struct arb *a, unsigned cpu, const struct upos *p)
{
	struct work *w = work_get(a, cpu);
	const struct cpu_items *l = &a->items[cpu];

	if (w->dirty)
		return;
	while (w->pos < l->n) {
		struct upos ip = upos_of(l->v[w->pos].c, l->v[w->pos].sub);
		if (upos_cmp(&ip, p) >= 0)
			break;
		uni_committed_claims(a, w, &ip, true);
		replay_item(a, cpu, &l->v[w->pos]);
	}
	uni_committed_claims(a, w, p, false);
}

/* ubring, then the claims made at p so far by this computation. */
static struct work *usync(struct arb *a, unsigned cpu, const struct upos *p, uint64_t g)
{
	ubring(a, cpu, p);
	struct work *w = &a->work[cpu];
	for (uint64_t b = g & ~w->guest; b; b &= b - 1)
		guest_claim(w, (unsigned)__builtin_ctzll(b));
	return w;
}

static bool uni_withdrawable(struct work *w, unsigned counter)
{
	uint64_t bit = 1ULL << counter;
	if ((w->guest & bit) || (!(w->stuck & bit) && matching_can_withdraw(&w->m, counter)))
		return true;
	w->stuck |= bit;
	return false;
}

/* Every CPU follows the new partition from p on. */
static int uni_diverge(struct arb *a, const struct upos *p, uint64_t g)
{
	int r;
	a->diverged = true;
	for (unsigned cpu = 0; cpu < a->n_cpus; cpu++) {
		if (is_dirty(a, cpu))
			continue;
		usync(a, cpu, p, g);
		if ((r = mark_dirty(a, cpu)))
			return r;
	}
	return 0;
}

/* Decides the dirty CPUs' items ordered before p (all of them: NULL). */
static int uni_drain(struct arb *a, const struct upos *p)
{
	int r;
	while (a->n_heap) {
		struct upos top = { a->heap[0].key, a->heap[0].seq, a->heap[0].sub };
		if (p && upos_cmp(&top, p) >= 0)
			break;
		struct heap_ent e = heap_pop(a);
		struct work *w = &a->work[e.cpu];
		if (w->pos != e.pos || !w->dirty)
			continue;
		const struct item *it = &a->items[e.cpu].v[e.pos];
		if (it->c->kind == CONS_SESSION)
			decide_session(a, e.cpu, it);
		else
			w->pos++; /* its claims were made at its place, on every CPU */
		if ((r = heap_push(a, e.cpu)))
			return r;
	}
	return 0;
}

/* The counters v tries with partition g: the GP counters from the end of
 * the prefix up to its own, and its fixed ones; none that failed before. */
static uint64_t uni_wanted(const struct vcpu *v, uint64_t g, uint64_t dead)
{
	if (v->vm->cls == ARB_CLASS_SHARED)
		return 0;
	uint64_t t = v->want & ~g & ~dead & ~0xffffffffULL;
	unsigned k = (uint32_t)g == UINT32_MAX ? 32 : (unsigned)__builtin_ctz(~(uint32_t)g);
	if (k < 32 && (v->want & (1ULL << k)) && !(dead & (1ULL << k)))
		t |= v->want & 0xffffffffULL & ~((1ULL << k) - 1);
	return t;
}

/* Whether v belongs to a guaranteed consumer under admission that lacks a
 * counter, with no reason noted yet. */
static bool uni_short_adm(const struct arb *a, const struct vcpu *v, uint64_t g)
{
	return v->vm == a->adm && !a->fail.set && a->adm->cls == ARB_CLASS_GUARANTEED &&
	       (v->want & ~g);
}

/*
 * Tries counter for the vCPU at p, given partition *g. Committed attempts
 * at p are a->at[clo..chi): one for the same counter and partition answers
 * for the clean CPUs. Records the attempt in a->nat.
 */
static bool uni_attempt(struct arb *a, const struct upos *p, unsigned counter, uint64_t *g,
			uint64_t *dead, unsigned clo, unsigned chi)
{
	size_t words = uni_words(a);
	uint64_t bit = 1ULL << counter;
	int was = -1;

	assert(a->n_nat < UNI_MAX_ATTEMPTS);
	struct attempt *t = &a->nat[a->n_nat];
	uint64_t *fs = a->nafail + a->n_nat * words;
	*t = (struct attempt){ *p, counter, *g, false };
	memset(fs, 0, words * sizeof(*fs));
	for (unsigned i = clo; !a->diverged && i < chi && was < 0; i++)
		if (a->at[i].counter == counter && a->at[i].g_before == *g)
			was = (int)i;
	if (was >= 0) {
		if (!a->at[was].ok)
			memcpy(fs, a->afail + (size_t)was * words, words * sizeof(*fs));
		for (unsigned d = 0; d < a->n_dirty; d++) {
			unsigned cpu = a->dirty[d];
			fs[cpu / 64] &= ~(1ULL << (cpu % 64));
			if (!uni_withdrawable(&a->work[cpu], counter))
				arb_cpuset_add(fs, cpu);
		}
	} else {
		for (unsigned cpu = 0; cpu < a->n_cpus; cpu++) {
			struct work *w = is_dirty(a, cpu) ? &a->work[cpu] : usync(a, cpu, p, *g);
			if (!uni_withdrawable(w, counter))
				arb_cpuset_add(fs, cpu);
		}
	}
	bool ok = true;
	for (size_t i = 0; i < words; i++)
		ok &= !fs[i];
	t->ok = ok;
	a->n_nat++;
	if (!ok) {
		*dead |= bit;
		return false;
	}
	*g |= bit;
	for (unsigned d = 0; d < a->n_dirty; d++)
		guest_claim(&a->work[a->dirty[d]], counter);
	return true;
}

/* The reason of a guaranteed vCPU under admission that lacks counters: its
 * lowest missing counter failed at some attempt, and by the same argument
 * still fails on the first CPU where it failed. */
static void uni_note_short(struct arb *a, const struct vcpu *v, const struct upos *p, uint64_t g)
{
	if (!uni_short_adm(a, v, g))
		return;
	size_t words = uni_words(a);
	unsigned q = (unsigned)__builtin_ctzll(v->want & ~g);
	for (unsigned i = 0; i < a->n_nat; i++) {
		if (a->nat[i].counter != q || a->nat[i].ok)
			continue;
		const uint64_t *fs = a->nafail + (size_t)i * words;
		unsigned cpu = 0;
		while (!arb_cpuset_has(fs, cpu))
			cpu++;
		struct work *w = is_dirty(a, cpu) ? &a->work[cpu] : usync(a, cpu, p, g);
		a->fail.set = true;
		a->fail.need = v->vm;
		a->fail.need_sub = v->idx;
		a->fail.need_is_event = false;
		note_holder(a, w, cpu, q);
		return;
	}
}

static int uni_grant(struct arb *a, struct vcpu *v, uint64_t g)
{
	v->ngrant = v->vm->cls == ARB_CLASS_SHARED ? 0 : v->want & g;
	v->stamp = a->epoch;
	if (!a->full && !v->fresh && v->ngrant == v->grant)
		return 0;
	if (grow((void **)&a->recomp, &a->cap_recomp, a->n_recomp + 1, sizeof(*a->recomp)))
		return -ENOMEM;
	a->recomp[a->n_recomp++] = v;
	return 0;
}

/* The whole plan (footprint NULL), or from consumer `from` on for a change
 * touching footprint. */
static int compute_uniform(struct arb *a, const uint64_t *footprint, const struct cons *from)
{
	size_t words = uni_words(a), vi = 0;
	uint64_t g = 0, gc = 0, dead = 0;
	unsigned cj = 0, vv = 0;
	int r;

	begin(a, !footprint);
	a->n_nat = 0;
	a->diverged = !footprint;
	if (!footprint) {
		for (unsigned c = 0; c < a->n_cpus; c++)
			if ((r = mark_dirty(a, c)))
				return r;
	} else {
		/* Before the change everything is as committed. */
		struct upos start = upos_of(from, 0);
		for (; cj < a->n_at && upos_cmp(&a->at[cj].pos, &start) < 0; cj++) {
			a->nat[a->n_nat] = a->at[cj];
			memcpy(a->nafail + (size_t)a->n_nat * words, a->afail + (size_t)cj * words,
			       words * sizeof(uint64_t));
			a->n_nat++;
			if (a->at[cj].ok)
				g |= 1ULL << a->at[cj].counter;
			else
				dead |= 1ULL << a->at[cj].counter;
		}
		gc = g;
		for (size_t wd = 0; wd < words; wd++)
			for (uint64_t b = footprint[wd]; b; b &= b - 1) {
				unsigned c = (unsigned)(wd * 64 + (unsigned)__builtin_ctzll(b));
				ubring(a, c, &start);
				if ((r = mark_dirty(a, c)))
					return r;
			}
		size_t hi = a->n_vms;
		while (vi < hi) {
			size_t mid = (vi + hi) / 2;
			if (cons_cmp(a->vms[mid], from) < 0)
				vi = mid + 1;
			else
				hi = mid;
		}
	}
	for (;;) {
		struct vcpu *v = NULL;
		while (vi < a->n_vms) {
			struct cons *c = a->vms[vi];
			if (vv == c->n_vcpus) {
				vi++;
				vv = 0;
				continue;
			}
			struct vcpu *x = &c->vcpus[vv];
			if (uni_wanted(x, g, dead) || uni_short_adm(a, x, g)) {
				v = x;
				break;
			}
			if ((r = uni_grant(a, x, g)))
				return r;
			vv++;
		}
		bool more_c = !a->diverged && cj < a->n_at;
		if (!v && !more_c)
			break;
		struct upos p = v ? upos_of(v->vm, v->idx) : a->at[cj].pos;
		if (more_c && upos_cmp(&a->at[cj].pos, &p) < 0)
			p = a->at[cj].pos;
		if ((r = uni_drain(a, &p)))
			return r;
		unsigned clo = cj, chi = cj;
		while (!a->diverged && chi < a->n_at && upos_cmp(&a->at[chi].pos, &p) == 0)
			chi++;
		struct upos vp = v ? upos_of(v->vm, v->idx) : p;
		if (v && upos_cmp(&vp, &p) == 0) {
			uint64_t todo = uni_wanted(v, g, dead);
			while (todo) {
				unsigned q = (unsigned)__builtin_ctzll(todo);
				todo &= todo - 1;
				if (!uni_attempt(a, &p, q, &g, &dead, clo, chi) && q < 32)
					todo &= ~0xffffffffULL; /* the prefix ends here */
			}
			uni_note_short(a, v, &p, g);
			if ((r = uni_grant(a, v, g)))
				return r;
			vv++;
		}
		if (!a->diverged) {
			for (unsigned i = clo; i < chi; i++)
				if (a->at[i].ok)
					gc |= 1ULL << a->at[i].counter;
			cj = chi;
			if (gc != g && (r = uni_diverge(a, &p, g)))
				return r;
		}
	}
	if ((r = uni_drain(a, NULL)))
		return r;
	return finalize_dirty(a);
}

/* ---- admission ---- */

static void counter_name(char *buf, size_t len, int counter)
{
	if (counter >= MATCHING_FIXED_SHIFT)
		snprintf(buf, len, "fixed %d", counter - MATCHING_FIXED_SHIFT);
	else
		snprintf(buf, len, "PMC %d", counter);
}

static void item_name(char *buf, size_t len, const struct cons *c, unsigned sub,
		      bool is_event, bool with_prio)
{
	int n = snprintf(buf, len, "%s %s '%s'", arb_class_name(c->cls),
			 c->kind == CONS_VM ? "vm" : "session", c->name);
	if (n < 0 || (size_t)n >= len)
		return;
	if (is_event)
		n += snprintf(buf + n, len - (size_t)n, " event '%s'", c->ev[sub].name);
	else if (c->kind == CONS_VM && sub != UINT32_MAX)
		n += snprintf(buf + n, len - (size_t)n, " vcpu %u", sub);
	if (with_prio && n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " (priority %d)", c->prio);
}

/* With perf-based guests a VM holds room, not a counter: perf places its
 * events, so a vCPU "needs room for its PMC p" and room is "kept for" one.
 * need_sub UINT32_MAX: the newcomer as a whole, naming the counter another
 * consumer would lose. */
static void say_refusal(const struct arb *a, char *why, size_t whylen, const struct cons *need,
			unsigned need_sub, bool need_is_event, unsigned cpu, int counter,
			const struct cons *holder, unsigned holder_sub, bool holder_is_event,
			const char *foreign)
{
	/* "vm 'NAME' vcpu N (priority P)": names are below ARB_NAME_LEN */
	char n[ARB_NAME_LEN + 96], h[ARB_NAME_LEN + 96], k[24];
	bool room = a->mode == ARB_GUEST_PERF_PINNED;
	const char *held = room && holder && holder->kind == CONS_VM
				   ? "kept for the perf-based PMCs of" : "held by";

	if (!why || !whylen)
		return;
	item_name(n, sizeof(n), need, need_sub, need_is_event, false);
	if (holder)
		item_name(h, sizeof(h), holder, holder_sub, holder_is_event, true);
	else if (foreign)
		snprintf(h, sizeof(h), "foreign event '%s'", foreign);
	else
		snprintf(h, sizeof(h), "the host events placed there");
	if (counter < 0) {
		snprintf(why, whylen, "%s needs a counter on cpu %d, %s %s", n,
			 a->cpu_ids[cpu], held, h);
		return;
	}
	counter_name(k, sizeof(k), counter);
	/* One partition: the CPU that refuses may be none of the vCPU's. */
	if (a->uniform && need->kind == CONS_VM && need_sub != UINT32_MAX) {
		snprintf(why, whylen,
			 "%s needs %s in the guest partition of every CPU (uniform), "
			 "and on cpu %d it is %s %s", n, k, a->cpu_ids[cpu], held, h);
		return;
	}
	snprintf(why, whylen, "%s needs %s%s on cpu %d, %s %s", n,
		 room && need->kind == CONS_VM && need_sub != UINT32_MAX ? "room for its " : "", k,
		 a->cpu_ids[cpu], held, h);
}

static const struct arb_placement *find_pl(const struct arb_placement *pl, unsigned n,
					   uint64_t id, unsigned ev)
{
	for (unsigned i = 0; i < n; i++)
		if (pl[i].holder == ARB_HOLDER_SESSION && pl[i].id == id && pl[i].event == ev)
			return &pl[i];
	return NULL;
}

/* Whether consumer x may not lose anything to the admission of c. With
 * perf-based guests no session takes room a VM has (a CPU-pinned event
 * would displace KVM's task-pinned ones), and a VM of any class takes
 * counters from sessions that are not guaranteed, as preferred VMs do by
 * their place in the order. Between VMs, and between sessions, the rules
 * are the same in every mode. */
static bool protected_from(const struct arb *a, const struct cons *x, const struct cons *c)
{
	if (x == c)
		return false;
	if (x->cls == ARB_CLASS_GUARANTEED)
		return true;
	if (a->mode == ARB_GUEST_PERF_PINNED && x->kind != c->kind)
		return x->kind == CONS_VM;
	return c->cls == ARB_CLASS_GUARANTEED && x->cls == ARB_CLASS_PREFERRED &&
	       x->prio >= c->prio;
}

/* After computing with c in place: 0, or -EBUSY with the reason. */
static int admission(struct arb *a, struct cons *c, char *why, size_t whylen)
{
	if (c->cls == ARB_CLASS_GUARANTEED && cons_placed(a, c)) {
		bool short_of = false;
		for (unsigned v = 0; v < c->n_vcpus; v++)
			short_of |= c->vcpus[v].ngrant != c->vcpus[v].want;
		for (unsigned i = 0; i < c->n_cpus && !short_of; i++) {
			const struct cpu_plan *p = &a->plan[c->cpus[i]];
			for (unsigned e = 0; e < c->n_ev; e++) {
				const struct arb_placement *pl = find_pl(p->npl, p->n_npl, c->id, e);
				short_of |= !pl || pl->counter < 0;
			}
		}
		if (short_of) {
			const struct fail *f = &a->fail;
			if (f->set)
				say_refusal(a, why, whylen, c, f->need_sub, f->need_is_event, f->cpu,
					    f->counter, f->holder, f->holder_sub,
					    f->holder_is_event, f->foreign);
			else
				snprintf(why, whylen, "guaranteed %s '%s' cannot be fully satisfied",
					 c->kind == CONS_VM ? "vm" : "session", c->name);
			return -EBUSY;
		}
	}
	/* Protected vCPUs that lost pass-through. */
	for (size_t i = 0; i < a->n_recomp; i++) {
		const struct vcpu *v = a->recomp[i];
		uint64_t lost = v->fresh ? 0 : v->grant & ~v->ngrant;
		if (!lost || !protected_from(a, v->vm, c))
			continue;
		unsigned p = (unsigned)__builtin_ctzll(lost), cpu = v->cpus[0];
		for (unsigned k = 0; k < v->n_cpus; k++)
			if (!(a->plan[v->cpus[k]].nguest & (1ULL << p))) {
				cpu = v->cpus[k];
				break;
			}
		say_refusal(a, why, whylen, c, UINT32_MAX, false, cpu, (int)p, v->vm, v->idx,
			    false, NULL);
		return -EBUSY;
	}
	/* Protected session events that lost their counter. */
	for (unsigned d = 0; d < a->n_dirty; d++) {
		unsigned cpu = a->dirty[d];
		const struct cpu_plan *p = &a->plan[cpu];
		const struct cpu_items *l = &a->items[cpu];
		for (unsigned i = 0; i < l->n; i++) {
			const struct cons *x = l->v[i].c;
			if (x->kind != CONS_SESSION || !protected_from(a, x, c))
				continue;
			for (unsigned e = 0; e < x->n_ev; e++) {
				const struct arb_placement *np = find_pl(p->npl, p->n_npl, x->id, e);
				const struct arb_placement *op = find_pl(p->pl, p->n_pl, x->id, e);
				if (np && np->counter < 0 && op && op->counter >= 0) {
					say_refusal(a, why, whylen, c, UINT32_MAX, false, cpu,
						    op->counter, x, e, true, NULL);
					return -EBUSY;
				}
			}
		}
	}
	return 0;
}

/* ---- transitions and commit ---- */

static enum pmc_route route_of(enum arb_guest_mode mode, uint64_t want, uint64_t grant, unsigned p)
{
	static const enum pmc_route granted[] = {
		[ARB_GUEST_IDENTITY] = PMC_ROUTE_PASSTHROUGH,
		[ARB_GUEST_PERF_PINNED] = PMC_ROUTE_RESERVED,
		[ARB_GUEST_NONE] = PMC_ROUTE_UNMANAGED,
	};
	static const enum pmc_route not_granted[] = {
		[ARB_GUEST_IDENTITY] = PMC_ROUTE_MULTIPLEXED,
		[ARB_GUEST_PERF_PINNED] = PMC_ROUTE_AT_RISK,
		[ARB_GUEST_NONE] = PMC_ROUTE_UNMANAGED,
	};
	if (grant & (1ULL << p))
		return granted[mode];
	if (want & (1ULL << p))
		return not_granted[mode];
	return PMC_ROUTE_DISABLED;
}

static uint64_t new_guest(const struct arb *a, unsigned cpu)
{
	const struct work *w = &a->work[cpu];
	return w->epoch == a->epoch && w->listed ? a->plan[cpu].nguest : a->plan[cpu].guest;
}

static int push_tr(struct arb *a, const struct transition *t)
{
	if (grow((void **)&a->ntr, &a->cap_ntr, a->n_ntr + 1, sizeof(*a->ntr)))
		return -ENOMEM;
	a->ntr[a->n_ntr++] = *t;
	return 0;
}

/* Routes from two disjoint masks, as route_of reads want and grant. */
static void fill_routes(enum arb_guest_mode mode, uint8_t gp[TRANSITION_MAX_GP],
			uint8_t fixed[TRANSITION_MAX_FIXED], uint64_t want, uint64_t grant)
{
	for (unsigned i = 0; i < TRANSITION_MAX_GP; i++)
		gp[i] = (uint8_t)route_of(mode, want, grant, i);
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		fixed[i] = (uint8_t)route_of(mode, want, grant, MATCHING_FIXED_SHIFT + i);
}

static void split_mask(uint64_t m, uint32_t *gp, uint32_t *fixed)
{
	*gp = (uint32_t)m;
	*fixed = (uint32_t)(m >> MATCHING_FIXED_SHIFT);
}

/* One vCPU's route steps: old (want, grant on oset) to new (on nset). A
 * pass-through route survives phase 1 only if its counter stays in the
 * guest partition, before and after, on every CPU either set names. */
static int vcpu_steps(struct arb *a, uint64_t vm_id, unsigned idx, uint64_t ow, uint64_t og,
		      const struct vcpu *ov, uint64_t nw, uint64_t ng, const struct vcpu *nv,
		      int phase)
{
	uint64_t kept = og & ng;
	const struct vcpu *sets[2] = { ov, nv };
	for (int s = 0; s < 2 && kept; s++)
		for (unsigned i = 0; sets[s] && i < sets[s]->n_cpus; i++) {
			unsigned cpu = sets[s]->cpus[i];
			kept &= a->plan[cpu].guest & new_guest(a, cpu);
		}
	/* A route is a pair of disjoint masks: pass-through, multiplexed; the
	 * rest is disabled. The middle route: kept pass-through stays, else
	 * the new route unless that is pass-through, else the old one unless
	 * that is, else multiplexed. */
	uint64_t o_mux = ow & ~og, n_mux = nw & ~ng;
	uint64_t m_mux = ~kept & (n_mux | (ng & ~og & ow) | (ng & og));
	bool down = kept != og || m_mux != o_mux;
	bool up = kept != ng || m_mux != n_mux;
	struct transition t = { .kind = TRANSITION_ROUTES, .vm_id = vm_id, .vcpu = idx, .cpu = -1 };
	/* No scrub on a route step: the guest keeps its PMC values when a
	 * route changes (the kernel moves them between the counter and the
	 * perf event); only physical counters changing owner are cleared,
	 * by the partition steps. */
	if (phase == 1 && down) {
		t.phase = 1;
		fill_routes(a->mode, t.gp_route, t.fixed_route, kept | m_mux, kept);
		return push_tr(a, &t);
	}
	if (phase == 2 && up) {
		t.phase = 2;
		fill_routes(a->mode, t.gp_route, t.fixed_route, nw, ng);
		return push_tr(a, &t);
	}
	return 0;
}

static int cmp_vcpu_ptr(const void *x, const void *y)
{
	const struct vcpu *p = *(struct vcpu *const *)x, *q = *(struct vcpu *const *)y;
	if (p->vm->id != q->vm->id)
		return p->vm->id < q->vm->id ? -1 : 1;
	return p->idx < q->idx ? -1 : p->idx > q->idx;
}

/* Route steps of one phase. gone/old_of: a removed or replaced VM whose
 * vCPUs are not in recomp. */
static int route_steps(struct arb *a, int phase, const struct cons *gone,
		       const struct cons *replaced_by)
{
	int r;
	for (size_t i = 0; i < a->n_moved; i++) {
		const struct vcpu *v = a->recomp[i];
		const struct vcpu *ov = NULL;
		if (v->vm == replaced_by && gone && v->idx < gone->n_vcpus)
			ov = &gone->vcpus[v->idx];
		if (!ov && !v->fresh && v->grant == v->ngrant)
			continue; /* same routes, same CPUs */
		uint64_t ow = ov ? ov->want : v->fresh ? 0 : v->want;
		uint64_t og = ov ? ov->grant : v->fresh ? 0 : v->grant;
		if ((r = vcpu_steps(a, v->vm->id, v->idx, ow, og, ov ? ov : v, v->want, v->ngrant,
				    v, phase)))
			return r;
	}
	for (unsigned k = 0; gone && gone->kind == CONS_VM && cons_placed(a, gone) &&
			     k < gone->n_vcpus; k++) {
		const struct vcpu *ov = &gone->vcpus[k];
		if (replaced_by && k < replaced_by->n_vcpus)
			continue;
		/* A removed VM's guest keeps its PMU (its shape is CPUID's):
		 * nothing passes through any more, what it had is
		 * multiplexed. */
		if ((r = vcpu_steps(a, gone->id, k, ov->want, ov->grant, ov, ov->want, 0, NULL, phase)))
			return r;
	}
	return 0;
}

static int cmp_unsigned(const void *x, const void *y)
{
	unsigned p = *(const unsigned *)x, q = *(const unsigned *)y;
	return p < q ? -1 : p > q;
}

static int build_transitions(struct arb *a, const struct cons *gone,
			     const struct cons *replaced_by)
{
	int r;

	a->n_ntr = 0;
	/* Most recomputed vCPUs keep their grant and have no step: sort only
	 * the others, which route_steps would pick out of the same order. */
	a->n_moved = 0;
	for (size_t i = 0; i < a->n_recomp; i++) {
		struct vcpu *v = a->recomp[i];
		if (v->fresh || v->grant != v->ngrant) {
			a->recomp[i] = a->recomp[a->n_moved];
			a->recomp[a->n_moved++] = v;
		}
	}
	if (a->n_moved)
		qsort(a->recomp, a->n_moved, sizeof(*a->recomp), cmp_vcpu_ptr);
	qsort(a->dirty, a->n_dirty, sizeof(*a->dirty), cmp_unsigned);
	if ((r = route_steps(a, 1, gone, replaced_by)))
		return r;
	for (int phase = 1; phase <= 2; phase++)
		for (unsigned d = 0; d < a->n_dirty; d++) {
			unsigned cpu = a->dirty[d];
			uint64_t o = a->plan[cpu].guest, n = a->plan[cpu].nguest;
			uint64_t moved = phase == 1 ? o & ~n : n & ~o;
			if (!moved)
				continue;
			struct transition t = { .kind = TRANSITION_PARTITION, .phase = (unsigned)phase,
						.cpu = a->cpu_ids[cpu] };
			split_mask(phase == 1 ? o & n : n, &t.guest_gp_mask, &t.guest_fixed_mask);
			if (a->mode == ARB_GUEST_IDENTITY)
				split_mask(moved, &t.scrub_gp_mask, &t.scrub_fixed_mask);
			if ((r = push_tr(a, &t)))
				return r;
		}
	return route_steps(a, 2, gone, replaced_by);
}

static void commit(struct arb *a)
{
	for (unsigned d = 0; d < a->n_dirty; d++) {
		struct cpu_plan *p = &a->plan[a->dirty[d]];
		struct arb_placement *t = p->pl;
		unsigned cap = p->cap_pl;
		p->pl = p->npl;
		p->cap_pl = p->cap_npl;
		p->n_pl = p->n_npl;
		p->npl = t;
		p->cap_npl = cap;
		p->guest = p->nguest;
	}
	for (size_t i = 0; i < a->n_recomp; i++) {
		struct vcpu *v = a->recomp[i];
		uint64_t *t = v->known;
		v->grant = v->ngrant;
		v->fresh = false;
		v->known = v->nknown;
		v->nknown = t;
		if (a->full)
			continue;
		t = v->snap;
		v->snap = v->nsnap;
		v->nsnap = t;
	}
	if (a->uniform) {
		struct attempt *x = a->at;
		uint64_t *f = a->afail;
		a->at = a->nat;
		a->nat = x;
		a->afail = a->nafail;
		a->nafail = f;
		a->n_at = a->n_nat;
	}
	struct transition *t = a->tr;
	size_t cap = a->cap_tr;
	a->tr = a->ntr;
	a->cap_tr = a->cap_ntr;
	a->n_tr = a->n_ntr;
	a->ntr = t;
	a->cap_ntr = cap;
	a->generation++;
}

static void footprint_of(const struct arb *a, const struct cons *c, uint64_t *fp)
{
	if (!c || !cons_placed(a, c))
		return;
	if (c->kind == CONS_SESSION) {
		for (size_t w = 0; w < ARB_CPUSET_WORDS(a->n_cpus); w++)
			fp[w] |= c->set[w];
		return;
	}
	for (unsigned v = 0; v < c->n_vcpus; v++)
		for (size_t w = 0; w < ARB_CPUSET_WORDS(a->n_cpus); w++)
			fp[w] |= c->vcpus[v].set[w];
}

/* Puts a refused change back: nw out (when it was linked), old in again at
 * index at, and a new epoch so nothing cached from the attempt survives. */
static int undo_change(struct arb *a, struct cons *old, unsigned at, struct cons *nw, int r)
{
	if (nw) {
		cons_unlink(a, nw);
		a->n_cons--;
	}
	if (old) {
		/* Re-linking needs no memory: the lists had room for it. */
		cons_link(a, old);
		a->cons[a->n_cons++] = a->cons[at];
		a->cons[at] = old;
	}
	next_epoch(a);
	return r;
}

/*
 * The one path for every change: unlink old (if any, at index `at` in
 * a->cons), link new (if any), recompute what they touch, check admission,
 * then commit or put everything back. Nothing committed is written before
 * the decision.
 */
static int change(struct arb *a, struct cons *old, unsigned at, struct cons *nw, char *why,
		  size_t whylen)
{
	uint64_t *fp = a->fp;
	int r;

	if (grow((void **)&a->cons, &a->cap_cons, a->n_cons + 1, sizeof(*a->cons)))
		return -ENOMEM;
	memset(fp, 0, ARB_CPUSET_WORDS(a->n_cpus) * sizeof(*fp));
	footprint_of(a, old, fp);
	footprint_of(a, nw, fp);
	if (old) {
		cons_unlink(a, old);
		a->cons[at] = a->cons[--a->n_cons];
	}
	if (nw) {
		if ((r = cons_link(a, nw)))
			return undo_change(a, old, at, NULL, r);
		a->cons[a->n_cons++] = nw;
	}
	a->adm = nw;
	a->gone = old;
	struct item from = { old ? old : nw, 0, 0 };
	if (old && nw && cons_cmp(nw, old) < 0)
		from.c = nw;
	r = compute_incremental(a, fp, &from);
	if (!r && nw && !a->no_admission)
		r = admission(a, nw, why, whylen);
	if (!r)
		r = build_transitions(a, old, nw);
	a->adm = NULL;
	a->gone = NULL;
	if (r)
		return undo_change(a, old, at, nw, r);
	commit(a);
	cons_free(old);
	return 0;
}

/* ---- public ---- */

void arb_set_admission(struct arb *a, bool enforce)
{
	a->no_admission = !enforce;
}

int arb_create(const struct arb_inventory *inv, struct arb **out)
{
	if (!inv || !out || inv->n_cpus == 0 || inv->n_cpus > TRANSITION_MAX_CPUS || !inv->cpu_ids ||
	    inv->num_gp > TRANSITION_MAX_GP || (inv->fixed_mask >> TRANSITION_MAX_FIXED) ||
	    (inv->n_foreign && !inv->foreign) ||
	    (inv->guest_mode != ARB_GUEST_IDENTITY && inv->guest_mode != ARB_GUEST_PERF_PINNED &&
	     inv->guest_mode != ARB_GUEST_NONE) ||
	    (inv->partition != ARB_PARTITION_PER_CPU && inv->partition != ARB_PARTITION_UNIFORM))
		return -EINVAL;
	/* Only the extension has a reservation for perf to keep: room for
	 * perf-based guests is vpmud's own restraint, and unmanaged guests
	 * have no partition at all. */
	if (inv->partition == ARB_PARTITION_UNIFORM && inv->guest_mode != ARB_GUEST_IDENTITY)
		return -EINVAL;
	_cleanup_(arb_destroyp) struct arb *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->mode = inv->guest_mode;
	a->uniform = inv->partition == ARB_PARTITION_UNIFORM;
	a->n_cpus = inv->n_cpus;
	if (a->uniform) {
		size_t words = ARB_CPUSET_WORDS(inv->n_cpus) * UNI_MAX_ATTEMPTS;
		a->at = calloc(UNI_MAX_ATTEMPTS, sizeof(*a->at));
		a->nat = calloc(UNI_MAX_ATTEMPTS, sizeof(*a->nat));
		a->afail = calloc(words, sizeof(uint64_t));
		a->nafail = calloc(words, sizeof(uint64_t));
		if (!a->at || !a->nat || !a->afail || !a->nafail)
			return -ENOMEM;
	}
	a->inv_mask = matching_counters((uint32_t)((1ULL << inv->num_gp) - 1), inv->fixed_mask);
	a->cpu_ids = malloc(inv->n_cpus * sizeof(int));
	a->plan = calloc(inv->n_cpus, sizeof(*a->plan));
	a->items = calloc(inv->n_cpus, sizeof(*a->items));
	a->work = calloc(inv->n_cpus, sizeof(*a->work));
	a->dirty = malloc(inv->n_cpus * sizeof(unsigned));
	a->didx = malloc(inv->n_cpus * sizeof(unsigned));
	a->fp = malloc(ARB_CPUSET_WORDS(inv->n_cpus) * sizeof(uint64_t));
	a->foreign = calloc(inv->n_foreign ? inv->n_foreign : 1, sizeof(*a->foreign));
	if (!a->cpu_ids || !a->plan || !a->items || !a->work || !a->dirty || !a->didx || !a->fp ||
	    !a->foreign)
		return -ENOMEM;
	memcpy(a->cpu_ids, inv->cpu_ids, inv->n_cpus * sizeof(int));
	a->n_foreign = inv->n_foreign;
	for (unsigned f = 0; f < inv->n_foreign; f++) {
		const struct arb_foreign *s = &inv->foreign[f];
		uint64_t mask = matching_counters(s->gp_mask, s->fixed_mask) & a->inv_mask;
		if (!s->name || strlen(s->name) >= ARB_NAME_LEN || s->cpu < -1 ||
		    s->cpu >= (int)inv->n_cpus || !mask)
			return -EINVAL;
		snprintf(a->foreign[f].name, ARB_NAME_LEN, "%s", s->name);
		a->foreign[f].cpu = s->cpu;
		a->foreign[f].mask = mask;
	}
	/* The empty plan: foreign events only. They must fit. */
	int r = 0;
	begin(a, true);
	for (unsigned c = 0; c < a->n_cpus && !r; c++) {
		r = work_init(a, c) ? -EINVAL : 0;
		a->work[c].dirty = true;
		a->work[c].listed = true;
		a->dirty[a->n_dirty++] = c;
		if (!r)
			r = finalize_cpu(a, c);
	}
	if (r)
		return r;
	a->n_ntr = 0;
	commit(a);
	a->generation = 0;
	*out = TAKE_PTR(a);
	return 0;
}

void arb_destroy(struct arb *a)
{
	if (!a)
		return;
	for (unsigned i = 0; i < a->n_cons; i++)
		cons_free(a->cons[i]);
	for (unsigned c = 0; a->plan && c < a->n_cpus; c++) {
		free(a->plan[c].pl);
		free(a->plan[c].npl);
	}
	for (unsigned c = 0; a->items && c < a->n_cpus; c++)
		free(a->items[c].v);
	for (unsigned c = 0; a->work && c < a->n_cpus; c++)
		free(a->work[c].kept);
	free(a->cons);
	free(a->cpu_ids);
	free(a->plan);
	free(a->items);
	free(a->work);
	free(a->dirty);
	free(a->didx);
	free(a->fp);
	free(a->foreign);
	free(a->heap);
	free(a->recomp);
	free(a->tr);
	free(a->ntr);
	free(a->vms);
	free(a->at);
	free(a->nat);
	free(a->afail);
	free(a->nafail);
	free(a);
}

static int add(struct arb *a, struct cons *c, char *why, size_t whylen)
{
	if (cons_find(a, c->kind, c->id, NULL)) {
		reason(why, whylen, "%s id %llu is already attached",
		       c->kind == CONS_VM ? "vm" : "session", (unsigned long long)c->id);
		cons_free(c);
		return -EEXIST;
	}
	c->seq = a->next_seq++;
	int r = change(a, NULL, 0, c, why, whylen);
	if (r)
		cons_free(c);
	return r;
}

static int update(struct arb *a, struct cons *c, char *why, size_t whylen)
{
	unsigned at;
	struct cons *old = cons_find(a, c->kind, c->id, &at);
	if (!old) {
		reason(why, whylen, "%s id %llu is not attached",
		       c->kind == CONS_VM ? "vm" : "session", (unsigned long long)c->id);
		cons_free(c);
		return -ENOENT;
	}
	c->seq = old->seq;
	int r = change(a, old, at, c, why, whylen);
	if (r)
		cons_free(c);
	return r;
}

static int remove_cons(struct arb *a, enum cons_kind kind, uint64_t id)
{
	unsigned at;
	struct cons *old = cons_find(a, kind, id, &at);
	if (!old)
		return -ENOENT;
	return change(a, old, at, NULL, NULL, 0);
}

int arb_vm_add(struct arb *a, const struct arb_vm_spec *vm, char *why, size_t whylen)
{
	struct cons *c;
	int r = vm_build(a, vm, &c, why, whylen);
	return r ? r : add(a, c, why, whylen);
}

int arb_vm_update(struct arb *a, const struct arb_vm_spec *vm, char *why, size_t whylen)
{
	struct cons *c;
	int r = vm_build(a, vm, &c, why, whylen);
	return r ? r : update(a, c, why, whylen);
}

int arb_vm_remove(struct arb *a, uint64_t id)
{
	return remove_cons(a, CONS_VM, id);
}

int arb_session_add(struct arb *a, const struct arb_session_spec *s, char *why, size_t whylen)
{
	struct cons *c;
	int r = session_build(a, s, &c, why, whylen);
	return r ? r : add(a, c, why, whylen);
}

int arb_session_update(struct arb *a, const struct arb_session_spec *s, char *why,
		       size_t whylen)
{
	struct cons *c;
	int r = session_build(a, s, &c, why, whylen);
	return r ? r : update(a, c, why, whylen);
}

int arb_session_remove(struct arb *a, uint64_t id)
{
	return remove_cons(a, CONS_SESSION, id);
}

enum arb_guest_mode arb_guest_mode(const struct arb *a)
{
	return a->mode;
}

enum arb_partition arb_partition(const struct arb *a)
{
	return a->uniform ? ARB_PARTITION_UNIFORM : ARB_PARTITION_PER_CPU;
}

uint64_t arb_generation(const struct arb *a)
{
	return a->generation;
}

unsigned arb_n_cpus(const struct arb *a)
{
	return a->n_cpus;
}

int arb_cpu_plan(const struct arb *a, unsigned idx, struct arb_cpu_view *out)
{
	if (idx >= a->n_cpus)
		return -EINVAL;
	const struct cpu_plan *p = &a->plan[idx];
	out->cpu = a->cpu_ids[idx];
	split_mask(p->guest, &out->guest_gp_mask, &out->guest_fixed_mask);
	out->n_placements = p->n_pl;
	out->placements = p->pl;
	return 0;
}

int arb_vcpu_routes(const struct arb *a, uint64_t vm_id, unsigned vcpu,
		    uint8_t gp_route[TRANSITION_MAX_GP], uint8_t fixed_route[TRANSITION_MAX_FIXED])
{
	const struct cons *c = cons_find(a, CONS_VM, vm_id, NULL);
	if (!c || vcpu >= c->n_vcpus)
		return -ENOENT;
	const struct vcpu *v = &c->vcpus[vcpu];
	fill_routes(a->mode, gp_route, fixed_route, v->want, v->grant);
	return 0;
}

/* The VM a session's room-starved event on cpu names: among the vCPUs
 * ordered before the session there, whose grants make up the room the
 * event met, the first whose room the event could use, else the first
 * with any room. */
static const struct cons *room_holder(const struct arb *a, unsigned cpu, const struct cons *s,
				      uint64_t mask)
{
	const struct cpu_items *l = &a->items[cpu];
	const struct cons *any = NULL;
	for (unsigned i = 0; i < l->n && l->v[i].c != s; i++) {
		const struct item *it = &l->v[i];
		if (it->c->kind != CONS_VM)
			continue;
		uint64_t g = it->c->vcpus[it->sub].grant;
		if (g & mask)
			return it->c;
		if (g && !any)
			any = it->c;
	}
	return any;
}

int arb_session_event(const struct arb *a, uint64_t session_id, unsigned event,
		      struct arb_event_grant *out)
{
	const struct cons *c = cons_find(a, CONS_SESSION, session_id, NULL);
	if (!c || event >= c->n_ev)
		return -ENOENT;
	*out = (struct arb_event_grant){ .n_cpus = c->n_cpus, .share = 1.0, .kept_cpu = -1 };
	unsigned kept_at = 0;
	for (unsigned i = 0; i < c->n_cpus; i++) {
		const struct cpu_plan *p = &a->plan[c->cpus[i]];
		const struct arb_placement *pl = find_pl(p->pl, p->n_pl, session_id, event);
		if (!pl)
			continue;
		if (pl->counter >= 0)
			out->n_dedicated++;
		if (pl->share < out->share)
			out->share = pl->share;
		if (pl->kept_for_guests && !out->n_kept_for_guests++)
			kept_at = c->cpus[i];
	}
	out->dedicated = out->n_dedicated == out->n_cpus;
	if (out->n_kept_for_guests) {
		const struct cons *vm = room_holder(a, kept_at, c, c->ev[event].mask);
		out->kept_cpu = a->cpu_ids[kept_at];
		out->kept_vm_id = vm ? vm->id : 0;
		out->kept_vm = vm ? vm->name : NULL;
	}
	return 0;
}

int arb_session_event_why(const struct arb *a, uint64_t session_id, unsigned event, char *why,
			  size_t whylen)
{
	struct arb_event_grant g;
	int r = arb_session_event(a, session_id, event, &g);
	if (why && whylen)
		why[0] = '\0';
	if (r < 0)
		return r;
	if (!g.n_kept_for_guests || !g.kept_vm)
		return 0;
	if (!why || !whylen)
		return 1;
	int n = snprintf(why, whylen,
			 "multiplexed: cpu %d's counters are kept for the perf-based PMCs of vm '%s'",
			 g.kept_cpu, g.kept_vm);
	if (g.n_kept_for_guests > 1 && n >= 0 && (size_t)n < whylen)
		snprintf(why + n, whylen - (size_t)n, " (and on %u more CPUs)",
			 g.n_kept_for_guests - 1);
	return 1;
}

size_t arb_transitions(const struct arb *a, const struct transition **out)
{
	*out = a->tr;
	return a->n_tr;
}

int arb_recompute_full(struct arb *a)
{
	int r = compute_full(a);
	if (!r)
		r = build_transitions(a, NULL, NULL);
	if (r) {
		next_epoch(a);
		return r;
	}
	commit(a);
	return 0;
}

int arb_check_full(struct arb *a, char *why, size_t whylen)
{
	int r = compute_full(a), diff = 0;
	if (r) {
		next_epoch(a);
		return r;
	}
	for (unsigned c = 0; c < a->n_cpus && !diff; c++) {
		const struct cpu_plan *p = &a->plan[c];
		if (p->guest != p->nguest) {
			snprintf(why, whylen, "cpu %d: guest partition 0x%llx, full 0x%llx",
				 a->cpu_ids[c], (unsigned long long)p->guest,
				 (unsigned long long)p->nguest);
			diff = 1;
		} else if (p->n_pl != p->n_npl) {
			snprintf(why, whylen, "cpu %d: %u placements, full %u", a->cpu_ids[c],
				 p->n_pl, p->n_npl);
			diff = 1;
		}
		for (unsigned i = 0; i < p->n_pl && !diff; i++) {
			const struct arb_placement *x = &p->pl[i], *y = &p->npl[i];
			if (x->holder != y->holder || x->id != y->id || x->event != y->event ||
			    x->counter != y->counter || x->share != y->share ||
			    x->kept_for_guests != y->kept_for_guests) {
				snprintf(why, whylen,
					 "cpu %d placement %u: id %llu ev %u counter %d share %g kept %d,"
					 " full id %llu ev %u counter %d share %g kept %d",
					 a->cpu_ids[c], i, (unsigned long long)x->id, x->event,
					 x->counter, x->share, x->kept_for_guests,
					 (unsigned long long)y->id, y->event, y->counter, y->share,
					 y->kept_for_guests);
				diff = 1;
			}
		}
	}
	for (size_t i = 0; i < a->n_recomp && !diff; i++) {
		const struct vcpu *v = a->recomp[i];
		if (v->grant != v->ngrant) {
			snprintf(why, whylen, "vm '%s' vcpu %u: grant 0x%llx, full 0x%llx",
				 v->vm->name, v->idx, (unsigned long long)v->grant,
				 (unsigned long long)v->ngrant);
			diff = 1;
		}
	}
	next_epoch(a);
	return diff;
}
