/* SPDX-License-Identifier: MIT */
#include "broker/broker.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <linux/kcmp.h>

#include "arbiter/arbiter.h"
#include "base/log.h"
#include "broker/lease.h"
#include "broker/owner.h"
#include "broker/state.h"
#include "kvm/kvm_port.h"
#include "kvm/vmm_discover.h"
#include "perf/perf_event.h"
#include "perf/perf_session.h"
#include "pmu/pmu.h"
#include "proto/cleanup.h"
#include "proto/cpulist.h"
#include "broker/metrics.h"

#define BROKER_WHY 512

/* A name the protocol accepts is one the arbiter takes. */
_Static_assert(ARB_NAME_LEN == PROTO_NAME_MAX + 1, "arbiter and protocol name lengths differ");
/* The arbiter keeps its own copy of the counter bounds (it is the lowest
 * layer); they must be the PMU layer's. */
_Static_assert(PMU_MAX_GP == TRANSITION_MAX_GP && PMU_MAX_FIXED == TRANSITION_MAX_FIXED &&
		       PMU_MAX_CPUS == TRANSITION_MAX_CPUS, "counter bounds of pmu and arbiter differ");
/* Views carry routes as the arbiter writes them. */
_Static_assert((int)BROKER_ROUTE_DISABLED == PMC_ROUTE_DISABLED &&
		       (int)BROKER_ROUTE_MULTIPLEXED == PMC_ROUTE_MULTIPLEXED &&
		       (int)BROKER_ROUTE_PASSTHROUGH == PMC_ROUTE_PASSTHROUGH &&
		       (int)BROKER_ROUTE_RESERVED == PMC_ROUTE_RESERVED && (int)BROKER_ROUTE_AT_RISK == PMC_ROUTE_AT_RISK,
	       "route values differ");
_Static_assert(sizeof(((struct broker_vcpu_view *)0)->gp) == PMU_MAX_GP &&
		       sizeof(((struct broker_vcpu_view *)0)->fixed) == PMU_MAX_FIXED, "view route arrays");
_Static_assert(PMU_MAX_CPUS <= CPULIST_MAX_CPUS, "a cpulist holds every CPU number");

struct broker_conn {
	struct broker *b;
	unsigned refs;
	bool leases_follow;
	bool closed;
};

struct broker_vm {
	uint64_t id;                   /* the lease's sequence number: arrival order */
	char name[PROTO_NAME_MAX + 1];
	uint32_t priority;
	enum proto_class cls;
	uint32_t gp, fixed_mask;
	uint32_t n_vcpus;
	const struct cpulist **vcpus;  /* where each vCPU may run: interned, see cpus_intern */
	uid_t uid;                     /* who attached it */
	char origin[LEASE_ORIGIN_LEN];
	struct broker_conn *conn;      /* the connection it follows (a reference), or NULL */
	bool bound;                    /* registered with the kvm port */
	bool routed;                   /* ... with a route fd its VMM handed over */
	/* Bound again at a restore: a route fd does not survive vpmud, so the
	 * VMM must hand it again. */
	bool rebound_at_restore;
	pid_t vmm_pid;
	int vm_fd;
	uint64_t vmm_start;            /* process start time, against pid reuse */
	struct owner_watch *watch;
	struct broker *b;
};

struct broker_session {
	uint64_t id;
	struct proto_session_start spec; /* events owned; owner_pid as asked */
	uid_t uid;
	char origin[LEASE_ORIGIN_LEN];
	struct broker_conn *conn;        /* as for VMs */
	pid_t owner_pid;                 /* the process it follows */
	uint64_t owner_start;
	struct owner_watch *watch;
	struct perf_event_desc *events;  /* spec.n_events */
	int *arb_index;                  /* per event: index among hardware events, -1 software */
	unsigned n_hw;
	/* Per hardware event, what the plan gave it when watchers last heard:
	 * a session whose grants differ after a change is named in the event
	 * (struct broker_event), one whose grants are the same is not. */
	struct grant_sig *seen;
	bool seen_valid;
	struct psess *ps;
	uint64_t started_usec;           /* CLOCK_REALTIME */
	struct broker *b;
};

/*
 * A hash index from a name or an id to a lease, so that a request costs the
 * same with 5 leases or 5000. Open addressing, linear probing, deletion by
 * shifting back; keys point into the leases themselves.
 */
struct index_slot {
	uint64_t hash;
	const char *name;  /* name keys */
	uint64_t id;       /* id keys */
	void *val;         /* NULL: empty */
};
struct index {
	struct index_slot *slots;
	size_t cap, n;     /* cap: 0 or a power of two */
	bool by_name;
};

/* One copy of each distinct CPU list the VM leases name: leases pinned
 * alike (most are) share it, so that a vCPU costs a pointer, not the 512
 * bytes of a cpulist. */
struct cpus_entry {
	struct cpulist set;            /* first: leases point here */
	uint64_t hash;
	unsigned refs;
	struct cpus_entry *next;
};
struct cpus_table {
	struct cpus_entry **buckets;
	size_t cap, n;                 /* cap: 0 or a power of two */
};

/* What a session event's view is made of (broker_session_event): equal
 * signatures, equal views. */
struct grant_sig {
	bool dedicated;
	unsigned n_dedicated, n_kept_for_guests;
	int kept_cpu;
	uint64_t kept_vm_id;
	double share;
};

/* The leases a change touched, as its caller knows them; 0: none. Route
 * changes of other VMs and grant changes of sessions are found by
 * emit_event itself. */
struct touched {
	uint64_t vm_added, vm_removed, vm_changed;
	uint64_t session_added, session_removed;
};

/* The log field that names a lease of either kind. */
#define LEASE_FIELD(kind, name) .vm = (kind) == STATE_VM ? (name) : NULL, .session = (kind) == STATE_VM ? NULL : (name)

/* A growable array of ids. */
struct ids {
	uint64_t *v;
	size_t n, cap;
};

struct broker_sub {
	uint64_t id;
	broker_event_fn fn;
	void *userdata;
};

/* A lease file that lags behind memory after a failed save nobody could
 * refuse: written again (or deleted) until the store takes it. */
struct resync {
	enum state_kind kind;
	char name[PROTO_NAME_MAX + 1];
};

struct guest_cache_entry {
	bool valid;
	uint32_t gp, fixed_mask;
	struct broker_guest_view view;
};
#define GUEST_CACHE 8

struct admin_gid_cache;

struct broker {
	struct admin_gid_cache *admin_gid; /* see admin_gid(); NULL: looked up at each use */
	enum broker_flavour flavour;
	bool host_mediated;             /* see broker_opts */
	bool nmi_watchdog_perf;
	broker_perf_open_fn perf_open;
	void *perf_open_ctx;
	broker_event_fn change_hook;
	void *change_hook_ud;
	sd_event *event;
	const struct config *cfg;
	struct pmu_desc pmu;
	char *pmu_note;
	char *kvm_host_summary;
	char *kvm_note;
	char *pmu_boot_block;            /* what the host kernel prints for this PMU */
	struct kvm_port *port;
	struct state *state;
	char *sysfs_root;                /* NULL: the host's */
	struct arb *arb;
	int cpu_ids[PMU_MAX_CPUS];
	int cpu_index[PMU_MAX_CPUS];     /* CPU number -> inventory index, -1 */
	struct arb_foreign foreign[1];
	unsigned n_foreign;

	struct broker_vm **vms;          /* arrival order */
	size_t n_vms, cap_vms;
	struct broker_session **sessions;
	size_t n_sessions, cap_sessions;
	struct index vm_names, vm_ids, session_names, session_ids;
	struct cpus_table cpus;
	uint64_t next_id;

	struct broker_sub *subs;
	size_t n_subs;
	uint64_t next_sub;
	uint64_t event_seq;
	struct broker_change *changes;   /* the event being delivered */
	size_t cap_changes;
	/* Sessions whose grants changed since the last event (sync_sessions),
	 * and the id arrays of the event being delivered. */
	struct ids sessions_regranted;
	struct ids ev_vms_changed, ev_sessions_changed;

	uint64_t started_usec;
	bool restoring;                  /* replaying the store: nothing saved, nobody told */
	struct resync *resync;
	size_t n_resync;
	sd_event_source *resync_timer;

	/* Scratch for views the caller borrows (broker_cpu_at, guest views):
	 * const views write only behind these pointers. */
	struct broker_host_placement *host;
	size_t cap_host;
	struct guest_cache_entry *guest_cache;
	unsigned *guest_next;

	struct broker_counters counters; /* broker_counters */
	void (*counters_hook)(void *userdata);
	void *counters_hook_ud;
};

/* ------------------------------------------------------------------ helpers */

static void session_free(struct broker_session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct broker_session *, session_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct broker *, broker_free)

static uint64_t now_usec(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static enum arb_class arb_class_of(enum proto_class c)
{
	switch (c) {
	case PROTO_CLASS_GUARANTEED: return ARB_CLASS_GUARANTEED;
	case PROTO_CLASS_SHARED: return ARB_CLASS_SHARED;
	default: return ARB_CLASS_PREFERRED;
	}
}

static enum proto_class default_class(const struct broker *b)
{
	int c = proto_class_from_name(b->cfg->default_class);
	return c < 0 ? PROTO_CLASS_PREFERRED : (enum proto_class)c;
}

/* Partitions and routes are the extension's: a stock kernel has nothing
 * to take them (perf places KVM's events; the mediated vPMU switches the
 * whole PMU). */
static bool port_takes_plan(const struct broker *b)
{
	return b->flavour == BROKER_FLAVOUR_EXTENSION;
}

/* Only the kernel enforces routes on real guests; the model simulates. */
static bool routes_enforced(const struct broker *b)
{
	return kvm_port_backend(b->port) == KVM_BACKEND_IOCTL && kvm_port_enforced(b->port);
}

/* Whether one VM's routes reach the kernel (broker_vm_view.routes). */
enum vm_routes {
	VM_ROUTES_ADVISORY = 0,
	VM_ROUTES_SIMULATED,
	VM_ROUTES_ENFORCED,
};

static const char *vm_routes_name(enum vm_routes r)
{
	switch (r) {
	case VM_ROUTES_ENFORCED: return "enforced";
	case VM_ROUTES_SIMULATED: return "simulated";
	default: return "advisory";
	}
}

/* Why a stock kernel's flavour enforces no route, for every VM. */
static const char *flavour_advisory_why(enum broker_flavour f)
{
	switch (f) {
	case BROKER_FLAVOUR_PERF:
		return "vPMU flavour perf-based (a stock kernel): KVM's perf events back guest PMCs; the routes say "
		       "what vpmud reasons, no kernel takes them";
	case BROKER_FLAVOUR_MEDIATED:
		return "vPMU flavour mediated (a stock kernel): the guest owns the whole PMU while it runs; the "
		       "routes say what vpmud reasons, no kernel takes them";
	case BROKER_FLAVOUR_NONE:
		return "vPMU flavour none: KVM gives guests no PMU; nothing to route";
	default:
		return "no kernel takes routes on this host";
	}
}

/*
 * Without why (counting every VM, at each change for the summary), the
 * registration is trusted: the port's per-VM answer is a lookup, and the
 * one thing it knows more (a VM the kernel reported dead) ends with the
 * lease when its VMM's exit is seen. With why (one VM's view), the port
 * is asked.
 */
static enum vm_routes vm_routes(const struct broker *b, const struct broker_vm *v, const char **why)
{
	const char *w;
	bool ask_port = why != NULL;
	if (!why)
		why = &w;
	if (!port_takes_plan(b)) {
		*why = flavour_advisory_why(b->flavour);
		return VM_ROUTES_ADVISORY;
	}
	if (!v->bound) {
		*why = "not bound to its VMM yet: its routes are planned, nothing reaches the kernel";
		return VM_ROUTES_ADVISORY;
	}
	const char *port_why = NULL;
	if (!v->routed || (ask_port && !kvm_port_vm_enforced(b->port, v->id, &port_why))) {
		*why = v->rebound_at_restore
			       ? "bound again after a restart of vpmud, which closed its route fd: the VMM must hand it "
				 "again (vm.bind with route_fd)"
		       : port_why ? port_why
				  : "the VMM handed no route fd";
		return VM_ROUTES_ADVISORY;
	}
	if (kvm_port_backend(b->port) == KVM_BACKEND_MODEL) {
		*why = "the VMM handed a route fd; its routes go to the model of the extension (simulated), not to KVM";
		return VM_ROUTES_SIMULATED;
	}
	*why = "the VMM handed a route fd; KVM enforces its routes";
	return VM_ROUTES_ENFORCED;
}

/* The lease's PMCs as a guest PMU shape, PERF_GLOBAL_CTRL layout, within
 * what the kernel may reserve (build_vm_spec refuses leases beyond it). */
static uint64_t lease_shape(const struct broker *b, uint32_t gp, uint32_t fixed_mask)
{
	uint64_t g = gp >= 32 ? VPMU_GP_MASK : (1ULL << gp) - 1;
	return g | (((uint64_t)fixed_mask << VPMU_FIXED_SHIFT) & kvm_port_reservable(b->port) & VPMU_FIXED_MASK);
}

static char *strdup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

/* An array with room for n + 1 elements of size elem: arr itself, or a
 * grown copy (doubling, *cap updated); NULL when out of memory, arr then
 * left as it was. */
static void *grow(void *arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return arr;
	size_t ncap = *cap ? *cap * 2 : 16;
	void *a = realloc(arr, ncap * elem);
	if (a)
		*cap = ncap;
	return a;
}

/* Removes element i of n, keeping the order. */
static void remove_at(void *arr, size_t *n, size_t i, size_t elem)
{
	char *a = arr;
	memmove(a + i * elem, a + (i + 1) * elem, (*n - i - 1) * elem);
	(*n)--;
}

static int oom(struct proto_error *err)
{
	return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
}

const char *broker_door_name(enum broker_door d)
{
	switch (d) {
	case BROKER_DOOR_SOCKET: return "socket";
	case BROKER_DOOR_DBUS: return "dbus";
	case BROKER_DOOR_LIBVIRT: return "libvirt";
	case BROKER_DOOR_STATE: return "state";
	}
	return "?";
}

const char *broker_route_count_key(enum broker_route r)
{
	switch (r) {
	case BROKER_ROUTE_DISABLED: return "disabled_vcpus";
	case BROKER_ROUTE_MULTIPLEXED: return "multiplexed_vcpus";
	case BROKER_ROUTE_PASSTHROUGH: return "passthrough_vcpus";
	case BROKER_ROUTE_RESERVED: return "reserved_vcpus";
	case BROKER_ROUTE_AT_RISK: return "at_risk_vcpus";
	case BROKER_ROUTE_MEDIATED: return "mediated_vcpus";
	case BROKER_ROUTE_NONE: return "none_vcpus";
	default: return "unknown_vcpus";
	}
}

const char *broker_route_name(enum broker_route r)
{
	switch (r) {
	case BROKER_ROUTE_DISABLED: return "disabled";
	case BROKER_ROUTE_MULTIPLEXED: return "multiplexed";
	case BROKER_ROUTE_PASSTHROUGH: return "passthrough";
	case BROKER_ROUTE_RESERVED: return "reserved";
	case BROKER_ROUTE_AT_RISK: return "at-risk";
	case BROKER_ROUTE_MEDIATED: return "mediated";
	case BROKER_ROUTE_NONE: return "none";
	default: return "?";
	}
}

const char *broker_flavour_name(enum broker_flavour f)
{
	switch (f) {
	case BROKER_FLAVOUR_EXTENSION: return "extension";
	case BROKER_FLAVOUR_PERF: return "perf-based";
	case BROKER_FLAVOUR_MEDIATED: return "mediated";
	case BROKER_FLAVOUR_NONE: return "none";
	default: return "?";
	}
}

size_t broker_flavour_routes(enum broker_flavour f, enum broker_route out[2])
{
	switch (f) {
	case BROKER_FLAVOUR_EXTENSION:
		out[0] = BROKER_ROUTE_PASSTHROUGH;
		out[1] = BROKER_ROUTE_MULTIPLEXED;
		return 2;
	case BROKER_FLAVOUR_PERF:
		out[0] = BROKER_ROUTE_RESERVED;
		out[1] = BROKER_ROUTE_AT_RISK;
		return 2;
	case BROKER_FLAVOUR_MEDIATED:
		out[0] = BROKER_ROUTE_MEDIATED;
		return 1;
	case BROKER_FLAVOUR_NONE:
		out[0] = BROKER_ROUTE_NONE;
		return 1;
	default:
		return 0;
	}
}

enum broker_flavour broker_flavour(const struct broker *b)
{
	return b->flavour;
}

const char *broker_routes_kind(const struct broker *b)
{
	if (b->flavour != BROKER_FLAVOUR_EXTENSION)
		return "advisory";
	return routes_enforced(b) ? "enforced" : "simulated";
}

/* One line per flavour, for status: what a guest PMC is, and what host
 * sessions get. */
static const char *flavour_effect(enum broker_flavour f)
{
	switch (f) {
	case BROKER_FLAVOUR_EXTENSION:
		return "guests: a PMC passes through to the physical counter of its index or is multiplexed, as "
		       "the plan says; host sessions: the counters the plan gives them, guest time included";
	case BROKER_FLAVOUR_PERF:
		return "guests: each PMC a guest enables is a task-pinned perf event KVM puts on the vCPU thread "
		       "and perf places, reserved where vpmud keeps room free of CPU-pinned host events, at-risk "
		       "(counts may stop) where not; host sessions: flexible events where guests hold room, guest "
		       "time included";
	case BROKER_FLAVOUR_MEDIATED:
		return "guests: a guest owns the whole PMU while its vCPU runs (switched at VM entry and exit); "
		       "host sessions: hardware events count host time only (exclude_guest), count_guest is refused";
	case BROKER_FLAVOUR_NONE:
		return "guests: no PMU (KVM gives them none); host sessions: every counter, guest time included";
	default:
		return "?";
	}
}

#define WARN_NMI_WATCHDOG \
	"the perf NMI watchdog holds a core-PMU event that counts guest time on every CPU: under the mediated " \
	"vPMU the first KVM_CREATE_VCPU of every VM fails with EBUSY; fix: sysctl kernel.nmi_watchdog=0"
#define WARN_NO_IRQCHIP \
	"a VM without an in-kernel irqchip (local APIC) silently gets no PMU under the mediated vPMU"

/* What the arbiter's route for one guest PMC means in this flavour: the
 * extension's and the perf-based ones are the arbiter's own; a PMC the
 * arbiter leaves unmanaged is the mediated vPMU's, or one the host does
 * not give at all. */
static uint8_t present_route(const struct broker *b, uint8_t arb_route)
{
	if (arb_route != PMC_ROUTE_UNMANAGED)
		return arb_route;
	return b->flavour == BROKER_FLAVOUR_MEDIATED ? BROKER_ROUTE_MEDIATED : BROKER_ROUTE_NONE;
}

/* A vCPU's routes as the arbiter holds them, in this flavour's terms. */
static void present_routes(const struct broker *b, const uint8_t *arb_gp, const uint8_t *arb_fixed, uint8_t *gp,
			   uint8_t *fixed)
{
	for (unsigned j = 0; j < PMU_MAX_GP; j++)
		gp[j] = present_route(b, arb_gp[j]);
	for (unsigned j = 0; j < PMU_MAX_FIXED; j++)
		fixed[j] = present_route(b, arb_fixed[j]);
}

/* Routes from weakest to strongest: a vCPU is as well off as its worst
 * asked PMC. */
static unsigned route_rank(uint8_t r)
{
	switch (r) {
	case BROKER_ROUTE_PASSTHROUGH: return 3;
	case BROKER_ROUTE_RESERVED:
	case BROKER_ROUTE_MEDIATED: return 2;
	case BROKER_ROUTE_MULTIPLEXED:
	case BROKER_ROUTE_AT_RISK: return 1;
	default: return 0;
	}
}

const char *broker_placement_name(enum broker_placement p)
{
	switch (p) {
	case BROKER_PLACEMENT_SOFTWARE: return "software";
	case BROKER_PLACEMENT_DEDICATED: return "dedicated";
	case BROKER_PLACEMENT_MULTIPLEXED: return "multiplexed";
	default: return "?";
	}
}

static void set_origin(char *dst, size_t len, const struct broker_caller *c)
{
	const char *o = c->origin && c->origin[0] ? c->origin : broker_door_name(c->door);
	/* "vpmuctl/0.1" -> "vpmuctl": the version is not part of who it is. */
	size_t n = strcspn(o, "/");
	if (n >= len)
		n = len - 1;
	memcpy(dst, o, n);
	dst[n] = '\0';
}

/* ------------------------------------------------------------------ index */

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static uint64_t hash_id(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return id;
}

static bool slot_matches(const struct index *x, const struct index_slot *s, uint64_t h, const char *name,
			 uint64_t id)
{
	if (!s->val || s->hash != h)
		return false;
	return x->by_name ? name && !strcmp(s->name, name) : s->id == id;
}

static void *index_get(const struct index *x, const char *name, uint64_t id)
{
	if (!x->cap)
		return NULL;
	uint64_t h = x->by_name ? hash_name(name) : hash_id(id);
	for (size_t i = h & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
		const struct index_slot *s = &x->slots[i];
		if (!s->val)
			return NULL;
		if (slot_matches(x, s, h, name, id))
			return s->val;
	}
}

static void index_insert_slot(struct index *x, const struct index_slot *in)
{
	size_t i = in->hash & (x->cap - 1);
	while (x->slots[i].val)
		i = (i + 1) & (x->cap - 1);
	x->slots[i] = *in;
}

/* The key must be unique (callers check first). */
static int index_put(struct index *x, const char *name, uint64_t id, void *val)
{
	if ((x->n + 1) * 2 > x->cap) {
		size_t ncap = x->cap ? x->cap * 2 : 64;
		struct index_slot *old = x->slots;
		size_t ocap = x->cap;
		x->slots = calloc(ncap, sizeof(*x->slots));
		if (!x->slots) {
			x->slots = old;
			return -ENOMEM;
		}
		x->cap = ncap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i].val)
				index_insert_slot(x, &old[i]);
		free(old);
	}
	struct index_slot s = { .hash = x->by_name ? hash_name(name) : hash_id(id), .name = name, .id = id,
				.val = val };
	index_insert_slot(x, &s);
	x->n++;
	return 0;
}

static void index_del(struct index *x, const char *name, uint64_t id)
{
	if (!x->cap)
		return;
	uint64_t h = x->by_name ? hash_name(name) : hash_id(id);
	size_t mask = x->cap - 1, i = h & mask;
	for (;; i = (i + 1) & mask) {
		if (!x->slots[i].val)
			return;
		if (slot_matches(x, &x->slots[i], h, name, id))
			break;
	}
	/* Shift back every later entry of the run that may move into the gap. */
	size_t gap = i;
	for (size_t j = (i + 1) & mask; x->slots[j].val; j = (j + 1) & mask) {
		size_t home = x->slots[j].hash & mask;
		bool movable = gap <= j ? (home <= gap || home > j) : (home <= gap && home > j);
		if (movable) {
			x->slots[gap] = x->slots[j];
			gap = j;
		}
	}
	x->slots[gap] = (struct index_slot){0};
	x->n--;
}

static struct broker_vm *find_vm(const struct broker *b, const char *name)
{
	return index_get(&b->vm_names, name, 0);
}

static struct broker_vm *vm_by_id(const struct broker *b, uint64_t id)
{
	return index_get(&b->vm_ids, NULL, id);
}

static struct broker_session *find_session(const struct broker *b, const char *name)
{
	return index_get(&b->session_names, name, 0);
}

static struct broker_session *session_by_id(const struct broker *b, uint64_t id)
{
	return index_get(&b->session_ids, NULL, id);
}

/* ------------------------------------------------------------- CPU lists */

static uint64_t hash_cpus(const struct cpulist *l)
{
	uint64_t h = 1469598103934665603ull;
	for (unsigned w = 0; w < CPULIST_WORDS; w++)
		h = (h ^ l->bits[w]) * 1099511628211ull;
	return hash_id(h);
}

static int cpus_grow(struct cpus_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64;
	struct cpus_entry **nb = calloc(cap, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++)
		for (struct cpus_entry *e = t->buckets[i], *next; e; e = next) {
			next = e->next;
			e->next = nb[e->hash & (cap - 1)];
			nb[e->hash & (cap - 1)] = e;
		}
	free(t->buckets);
	t->buckets = nb;
	t->cap = cap;
	return 0;
}

/* The shared copy of l, one reference more; NULL when out of memory. */
static const struct cpulist *cpus_intern(struct broker *b, const struct cpulist *l)
{
	struct cpus_table *t = &b->cpus;
	uint64_t h = hash_cpus(l);
	for (struct cpus_entry *e = t->cap ? t->buckets[h & (t->cap - 1)] : NULL; e; e = e->next)
		if (e->hash == h && cpulist_equal(&e->set, l)) {
			e->refs++;
			return &e->set;
		}
	if (t->n + 1 > t->cap && cpus_grow(t) < 0)
		return NULL;
	struct cpus_entry *e = malloc(sizeof(*e));
	if (!e)
		return NULL;
	*e = (struct cpus_entry){ .set = *l, .hash = h, .refs = 1, .next = t->buckets[h & (t->cap - 1)] };
	t->buckets[h & (t->cap - 1)] = e;
	t->n++;
	return &e->set;
}

static void cpus_release(struct broker *b, const struct cpulist *l)
{
	struct cpus_table *t = &b->cpus;
	if (!l || !t->cap)
		return;
	const struct cpus_entry *want = (const struct cpus_entry *)l;
	for (struct cpus_entry **pp = &t->buckets[want->hash & (t->cap - 1)]; *pp; pp = &(*pp)->next)
		if (*pp == want) {
			struct cpus_entry *e = *pp;
			if (--e->refs == 0) {
				*pp = e->next;
				free(e);
				t->n--;
			}
			return;
		}
}

static void cpus_release_all(struct broker *b, const struct cpulist **v, uint32_t n)
{
	for (uint32_t i = 0; v && i < n; i++)
		cpus_release(b, v[i]);
	free(v);
}

/* Interned copies of n contiguous lists, or NULL when out of memory. */
static const struct cpulist **cpus_intern_all(struct broker *b, const struct cpulist *src, uint32_t n)
{
	const struct cpulist **v = calloc(n ? n : 1, sizeof(*v));
	for (uint32_t i = 0; v && i < n; i++)
		if (!(v[i] = cpus_intern(b, &src[i]))) {
			cpus_release_all(b, v, i);
			return NULL;
		}
	return v;
}

/* ------------------------------------------------------------------ rights */

enum broker_right broker_method_right(enum proto_method m)
{
	switch (m) {
	case PROTO_M_VM_ATTACH:
	case PROTO_M_VM_DETACH:
	case PROTO_M_VM_UPDATE:
	case PROTO_M_VM_BIND:
	case PROTO_M_SESSION_START:
		return BROKER_RIGHT_ADMIN;
	case PROTO_M_SESSION_STOP:
	case PROTO_M_SESSION_READ:
		return BROKER_RIGHT_OWNER_OR_ADMIN;
	default:
		return BROKER_RIGHT_ANYONE;
	}
}

/*
 * The admin group's gid, looked up again when the name changes (a reload)
 * or the last answer is ADMIN_GID_TTL_USEC old (an administrator may
 * create the group while vpmud runs), not at every use: any local user
 * can make vpmud judge a caller (each connect), and a lookup may read
 * /etc/group or ask a directory service. A lookup that fails for another
 * reason than "no such group" (out of descriptors, say) keeps the last
 * answer for that name.
 */
#define ADMIN_GID_TTL_USEC (2 * 1000000ULL)

struct admin_gid_cache {
	char name[sizeof(((struct config *)0)->admin_group)];
	int r;                 /* 0: gid holds it; -ENOENT: no such group */
	gid_t gid;
	uint64_t at_usec;      /* CLOCK_MONOTONIC of the answer; 0: none yet */
};

static uint64_t monotonic_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

static int lookup_gid(const char *name, gid_t *gid)
{
	long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
	size_t len = hint > 0 ? (size_t)hint : 4096;
	for (;;) {
		_cleanup_free_ char *buf = malloc(len);
		struct group grp, *gr = NULL;
		if (!buf)
			return -ENOMEM;
		int r = getgrnam_r(name, &grp, buf, len, &gr);
		if (r == ERANGE && len < (1u << 24)) {
			len *= 2;
			continue;
		}
		if (r != 0)
			return -r;
		if (!gr)
			return -ENOENT;
		*gid = gr->gr_gid;
		return 0;
	}
}

static int admin_gid(const struct broker *b, gid_t *gid)
{
	const char *name = b->cfg->admin_group;
	struct admin_gid_cache *c = b->admin_gid;
	if (!name[0])
		return -ENOENT;
	uint64_t now = monotonic_usec();
	bool same = c && !strcmp(c->name, name);
	if (!same || !c->at_usec || now - c->at_usec >= ADMIN_GID_TTL_USEC) {
		gid_t g = 0;
		int r = lookup_gid(name, &g);
		if (!c || r == 0 || r == -ENOENT || !same) {
			if (!c)
				return r == 0 ? (*gid = g, 0) : -ENOENT;
			snprintf(c->name, sizeof(c->name), "%s", name);
			c->r = r == 0 ? 0 : -ENOENT;
			c->gid = g;
			c->at_usec = now;
		}
	}
	if (c->r < 0)
		return c->r;
	*gid = c->gid;
	return 0;
}

bool broker_caller_is_admin(const struct broker *b, const struct broker_caller *c)
{
	if (c->door == BROKER_DOOR_LIBVIRT || c->door == BROKER_DOOR_STATE)
		return true;
	if (c->uid == 0)
		return true;
	gid_t g;
	if (admin_gid(b, &g) < 0)
		return false;
	if (c->gid == g)
		return true;
	for (size_t i = 0; c->groups && i < c->n_groups; i++)
		if (c->groups[i] == g)
			return true;
	return false;
}

int broker_authorize(const struct broker *b, const struct broker_caller *c, enum proto_method m,
		     uid_t owner_uid, struct proto_error *err)
{
	enum broker_right right = broker_method_right(m);
	if (right == BROKER_RIGHT_ANYONE)
		return 0;
	if (right == BROKER_RIGHT_OWNER_OR_ADMIN && owner_uid != (uid_t)-1 && c->uid == owner_uid)
		return 0;
	if (broker_caller_is_admin(b, c))
		return 0;
	if (c->door == BROKER_DOOR_DBUS && c->polkit_allowed)
		return 0;
	if (!err)
		return -EPERM;
	const char *what = proto_method_name(m), *group = b->cfg->admin_group;
	const char *owner = right == BROKER_RIGHT_OWNER_OR_ADMIN ? "the session's owner, " : "";
	switch (c->door) {
	case BROKER_DOOR_DBUS:
		return proto_error_set(err, PROTO_E_PERMISSION_DENIED, EPERM, NULL,
				       "%s needs %sroot, membership in group %s, or polkit authorization for %s "
				       "(caller uid %u)",
				       what, owner, group, BROKER_POLKIT_ACTION, (unsigned)c->uid);
	case BROKER_DOOR_SOCKET:
		return proto_error_set(err, PROTO_E_PERMISSION_DENIED, EPERM, NULL,
				       "%s needs %sroot or membership in group %s (caller uid %u)", what, owner,
				       group, (unsigned)c->uid);
	default:
		return proto_error_set(err, PROTO_E_PERMISSION_DENIED, EPERM, NULL,
				       "%s: refused for internal caller %s (uid %u)", what,
				       broker_door_name(c->door), (unsigned)c->uid);
	}
}

/* ---------------------------------------------------------------- visibility */

struct broker_viewer broker_viewer(const struct broker *b, const struct broker_caller *c)
{
	return (struct broker_viewer){ .uid = c->uid, .sees_all = broker_caller_is_admin(b, c) };
}

bool broker_viewer_sees(const struct broker_viewer *w, uid_t owner_uid)
{
	return w->sees_all || w->uid == owner_uid;
}

void broker_vm_view_withhold(const struct broker_viewer *w, struct broker_vm_view *v)
{
	if (broker_viewer_sees(w, v->uid))
		return;
	v->withheld = true;
	v->origin = NULL;
	v->uid = (uid_t)-1;
	v->vmm_pid = 0;
	v->vm_fd = -1;
	v->follows_connection = false;
}

void broker_session_view_withhold(const struct broker_viewer *w, struct broker_session_view *v)
{
	if (broker_viewer_sees(w, v->uid))
		return;
	v->withheld = true;
	v->n_events = 0;
	v->pid = 0;
	v->owner_pid = 0;
	v->started_usec = 0;
	v->uid = (uid_t)-1;
	v->origin = NULL;
	v->follows_connection = false;
}

void broker_placement_withhold(const struct broker_viewer *w, struct broker_host_placement *p)
{
	if (p->holder != BROKER_HOLDER_SESSION || broker_viewer_sees(w, p->owner_uid))
		return;
	p->withheld = true;
	p->event = NULL;
}

/* The checks every request carrying a caller goes through. */
static int check_caller(struct broker *b, const struct broker_caller *c, enum proto_method m,
			struct proto_error *err)
{
	if (c->conn && c->conn->closed)
		return proto_error_set(err, PROTO_E_REFUSED, ECONNRESET, NULL,
				       "%s: the caller's connection is gone: nothing created", proto_method_name(m));
	if (broker_method_right(m) == BROKER_RIGHT_ADMIN)
		return broker_authorize(b, c, m, (uid_t)-1, err);
	return 0;
}

/* ------------------------------------------------------------- connections */

int broker_conn_open(struct broker *b, bool leases_follow, struct broker_conn **out)
{
	struct broker_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->b = b;
	c->refs = 1;
	c->leases_follow = leases_follow;
	*out = c;
	return 0;
}

struct broker_conn *broker_conn_ref(struct broker_conn *conn)
{
	if (conn)
		conn->refs++;
	return conn;
}

struct broker_conn *broker_conn_unref(struct broker_conn *conn)
{
	if (conn && --conn->refs == 0)
		free(conn);
	return NULL;
}

bool broker_conn_closed(const struct broker_conn *conn)
{
	return conn && conn->closed;
}

/* A lease made on c follows it when c says so and no process owns it. */
static struct broker_conn *follow_conn(const struct broker_caller *c, bool process_owned)
{
	if (process_owned || !c->conn || !c->conn->leases_follow)
		return NULL;
	return broker_conn_ref(c->conn);
}

/* ---------------------------------------------------------------- watchers */

static size_t transitions_of(const struct broker *b, const struct transition **t)
{
	return arb_transitions(b->arb, t);
}

static int ids_add(struct ids *x, uint64_t id)
{
	uint64_t *v = grow(x->v, &x->cap, x->n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	x->v = v;
	x->v[x->n++] = id;
	return 0;
}

static int cmp_u64(const void *pa, const void *pb)
{
	uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
	return a < b ? -1 : a > b;
}

/* Sorts, drops repeats and the ids a and b (0: none). */
static void ids_settle(struct ids *x, uint64_t a, uint64_t b)
{
	if (x->n == 0)
		return;
	qsort(x->v, x->n, sizeof(*x->v), cmp_u64);
	size_t k = 0;
	for (size_t i = 0; i < x->n; i++)
		if (x->v[i] != a && x->v[i] != b && (k == 0 || x->v[k - 1] != x->v[i]))
			x->v[k++] = x->v[i];
	x->n = k;
}

/*
 * with_plan: the event carries the arbiter's last transitions; without,
 * it says a lease changed (bound to its VMM, or a session without
 * hardware events came or went) while the plan did not. what names the
 * leases the caller added, removed or changed; gone_name is the name of
 * the VM removed just before, so that its route steps still carry it.
 */
static void emit_event(struct broker *b, const char *reason, bool with_plan, const struct touched *what,
		       const char *gone_name)
{
	static const struct touched nothing;
	struct ids *regranted = &b->sessions_regranted;
	struct ids *vms_changed = &b->ev_vms_changed, *sessions_changed = &b->ev_sessions_changed;
	if (!what)
		what = &nothing;
	if (b->restoring || (b->n_subs == 0 && !b->change_hook)) {
		regranted->n = 0;
		return;
	}
	const struct transition *t;
	size_t n = with_plan ? transitions_of(b, &t) : 0;
	if (n > b->cap_changes) {
		struct broker_change *c = realloc(b->changes, n * sizeof(*c));
		if (!c) {
			log_err("%s: out of memory: watchers miss this change", reason);
			return;
		}
		b->changes = c;
		b->cap_changes = n;
	}
	vms_changed->n = 0;
	int r = what->vm_changed ? ids_add(vms_changed, what->vm_changed) : 0;
	for (size_t i = 0; i < n; i++) {
		struct broker_change *c = &b->changes[i];
		*c = (struct broker_change){ .phase = t[i].phase, .partition = t[i].kind == TRANSITION_PARTITION,
					     .cpu = t[i].cpu, .n_gp = b->pmu.num_gp,
					     .pmu_fixed_mask = b->pmu.fixed_mask,
					     .scrub_gp_mask = t[i].scrub_gp_mask,
					     .scrub_fixed_mask = t[i].scrub_fixed_mask };
		if (c->partition) {
			c->guest_gp_mask = t[i].guest_gp_mask;
			c->guest_fixed_mask = t[i].guest_fixed_mask;
			continue;
		}
		const struct broker_vm *v = vm_by_id(b, t[i].vm_id);
		c->vm = v ? v->name : t[i].vm_id == what->vm_removed && gone_name ? gone_name : "?";
		c->vcpu = t[i].vcpu;
		present_routes(b, t[i].gp_route, t[i].fixed_route, c->gp, c->fixed);
		if (r >= 0 && (i == 0 || t[i - 1].kind != TRANSITION_ROUTES || t[i - 1].vm_id != t[i].vm_id))
			r = ids_add(vms_changed, t[i].vm_id);
	}
	/* Takes the regranted sessions over: the next event starts afresh. */
	struct ids tmp = *sessions_changed;
	*sessions_changed = *regranted;
	*regranted = tmp;
	regranted->n = 0;
	if (r < 0) {
		log_err("%s: out of memory: watchers miss this change", reason);
		return;
	}
	ids_settle(vms_changed, what->vm_added, what->vm_removed);
	ids_settle(sessions_changed, what->session_added, what->session_removed);
	struct broker_event ev = { .seq = ++b->event_seq, .generation = arb_generation(b->arb),
				   .flavour = broker_flavour_name(b->flavour), .routes = broker_routes_kind(b),
				   .reason = reason, .n_changes = n, .changes = b->changes,
				   .vms_added = &what->vm_added, .n_vms_added = what->vm_added != 0,
				   .vms_removed = &what->vm_removed, .n_vms_removed = what->vm_removed != 0,
				   .vms_changed = vms_changed->v, .n_vms_changed = vms_changed->n,
				   .sessions_added = &what->session_added, .n_sessions_added = what->session_added != 0,
				   .sessions_removed = &what->session_removed,
				   .n_sessions_removed = what->session_removed != 0,
				   .sessions_changed = sessions_changed->v, .n_sessions_changed = sessions_changed->n };
	if (b->change_hook)
		b->change_hook(&ev, b->change_hook_ud);
	/* A subscriber may unsubscribe itself or others from inside its
	 * callback: deliver by id to those still subscribed. */
	size_t n_ids = b->n_subs;
	_cleanup_free_ uint64_t *ids = n_ids ? malloc(n_ids * sizeof(*ids)) : NULL;
	if (n_ids && !ids) {
		log_err("%s: out of memory: watchers miss this change", reason);
		return;
	}
	for (size_t i = 0; i < n_ids; i++)
		ids[i] = b->subs[i].id;
	for (size_t i = 0; i < n_ids; i++)
		for (size_t j = 0; j < b->n_subs; j++)
			if (b->subs[j].id == ids[i]) {
				struct broker_sub s = b->subs[j];
				s.fn(&ev, s.userdata);
				break;
			}
}

static void emit(struct broker *b, const char *reason, const struct touched *what)
{
	emit_event(b, reason, true, what, NULL);
}

int broker_subscribe(struct broker *b, broker_event_fn fn, void *userdata, uint64_t *sub_id)
{
	struct broker_sub *s = realloc(b->subs, (b->n_subs + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	b->subs = s;
	b->subs[b->n_subs] = (struct broker_sub){ .id = ++b->next_sub, .fn = fn, .userdata = userdata };
	*sub_id = b->subs[b->n_subs].id;
	b->n_subs++;
	return 0;
}

void broker_unsubscribe(struct broker *b, uint64_t sub_id)
{
	for (size_t i = 0; i < b->n_subs; i++)
		if (b->subs[i].id == sub_id) {
			memmove(&b->subs[i], &b->subs[i + 1], (b->n_subs - i - 1) * sizeof(*b->subs));
			b->n_subs--;
			return;
		}
}

void broker_set_change_hook(struct broker *b, broker_event_fn fn, void *userdata)
{
	b->change_hook = fn;
	b->change_hook_ud = userdata;
}

/* --------------------------------------------------------- arbiter feeding */

/* CPU sets over inventory indices, refusing CPUs the inventory lacks. */
static int to_cpuset(const struct broker *b, const struct cpulist *l, uint64_t *set, const char *field,
		     struct proto_error *err)
{
	unsigned n = b->pmu.n_cpus;
	memset(set, 0, ARB_CPUSET_WORDS(n) * sizeof(uint64_t));
	bool any = false;
	for (int c = cpulist_next(l, -1); c >= 0; c = cpulist_next(l, c)) {
		if (c >= PMU_MAX_CPUS || b->cpu_index[c] < 0)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field,
					       "%s: CPU %d is not in the PMU inventory (%u CPUs, %d..%d)", field, c,
					       n, b->cpu_ids[0], b->cpu_ids[n - 1]);
		arb_cpuset_add(set, (unsigned)b->cpu_index[c]);
		any = true;
	}
	if (!any)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field, "%s: no CPU", field);
	return 0;
}

/* What the arbiter needs of a VM lease, with the storage it points into. */
struct vm_arb_spec {
	struct arb_vm_spec vm;
	struct arb_vcpu_spec *vcpus;
	uint64_t *sets;
};

static void vm_arb_spec_fini(struct vm_arb_spec *s)
{
	free(s->vcpus);
	free(s->sets);
	s->vcpus = NULL;
	s->sets = NULL;
}

/* The shape of a VM lease, as attach and update give it. */
struct vm_shape {
	const char *name;
	uint32_t priority;
	enum proto_class cls;
	uint32_t gp, fixed_mask;
	uint32_t n_vcpus;
	const struct cpulist *const *vcpus;
};

static int build_vm_spec(const struct broker *b, uint64_t id, const struct vm_shape *a, struct vm_arb_spec *out,
			 struct proto_error *err)
{
	size_t words = ARB_CPUSET_WORDS(b->pmu.n_cpus);
	*out = (struct vm_arb_spec){0};
	if (a->gp > b->pmu.num_gp)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.gp",
				       "params.gp: %u general PMCs asked, the PMU has %u", a->gp, b->pmu.num_gp);
	if (a->fixed_mask & ~b->pmu.fixed_mask)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.fixed_mask",
				       "params.fixed_mask: 0x%x names fixed counters the PMU lacks (it has 0x%x)",
				       a->fixed_mask, b->pmu.fixed_mask);
	/* The extension reserves and routes only what the kernel may reserve
	 * (caps/guest_reservable: the fixed counters KVM can give a guest). */
	uint32_t guest_fixed = (uint32_t)((kvm_port_reservable(b->port) & VPMU_FIXED_MASK) >> VPMU_FIXED_SHIFT);
	if (port_takes_plan(b) && (a->fixed_mask & ~guest_fixed))
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.fixed_mask",
				       "params.fixed_mask: 0x%x: the kernel cannot reserve these fixed counters for a "
				       "guest (caps/guest_reservable allows fixed 0x%x)",
				       a->fixed_mask, guest_fixed);
	if (a->n_vcpus == 0 || a->n_vcpus > PROTO_MAX_VCPUS)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
				       "params.vcpus: 1..%d vCPUs", PROTO_MAX_VCPUS);
	out->vcpus = calloc(a->n_vcpus, sizeof(*out->vcpus));
	out->sets = calloc(a->n_vcpus * words, sizeof(uint64_t));
	if (!out->vcpus || !out->sets) {
		vm_arb_spec_fini(out);
		return oom(err);
	}
	for (uint32_t i = 0; i < a->n_vcpus; i++) {
		char field[64];
		snprintf(field, sizeof(field), "params.vcpus[%u].cpus", i);
		int r = to_cpuset(b, a->vcpus[i], out->sets + i * words, field, err);
		if (r < 0) {
			vm_arb_spec_fini(out);
			return r;
		}
		out->vcpus[i] = (struct arb_vcpu_spec){ .cpus = out->sets + i * words, .num_gp = a->gp,
							.fixed_mask = a->fixed_mask };
	}
	out->vm = (struct arb_vm_spec){ .id = id, .name = a->name, .priority = (int)a->priority,
					.cls = arb_class_of(a->cls), .n_vcpus = a->n_vcpus, .vcpus = out->vcpus };
	return 0;
}

static struct vm_shape shape_of(const struct broker_vm *v)
{
	return (struct vm_shape){ .name = v->name, .priority = v->priority, .cls = v->cls, .gp = v->gp,
				  .fixed_mask = v->fixed_mask, .n_vcpus = v->n_vcpus, .vcpus = v->vcpus };
}

/* ------------------------------------------------------------- lease texts */

static int vm_lease_text(const struct broker_vm *v, char **text, size_t *len)
{
	/* The request's form: one contiguous list per vCPU. */
	_cleanup_free_ struct cpulist *cpus = malloc((v->n_vcpus ? v->n_vcpus : 1) * sizeof(*cpus));
	if (!cpus)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->n_vcpus; i++)
		cpus[i] = *v->vcpus[i];
	struct proto_request req = { .method = PROTO_M_VM_ATTACH };
	struct proto_vm_attach *a = &req.u.vm_attach;
	snprintf(a->name, sizeof(a->name), "%s", v->name);
	a->has_priority = a->has_class = true;
	a->priority = v->priority;
	a->cls = v->cls;
	a->gp = v->gp;
	a->fixed_mask = v->fixed_mask;
	a->vcpus = (struct proto_vcpus){ .count = v->n_vcpus, .cpus = cpus };
	a->has_owner = v->bound;
	a->owner = (struct proto_owner){ .pid = v->vmm_pid, .vm_fd = v->vm_fd };
	return lease_encode(v->id, &req, v->uid, v->origin, v->conn && !v->bound, v->bound, v->vmm_start, text, len);
}

static int session_lease_text(const struct broker_session *s, char **text, size_t *len)
{
	struct proto_request req = { .method = PROTO_M_SESSION_START };
	req.u.session_start = s->spec;
	req.u.session_start.owner_pid = s->owner_pid;
	return lease_encode(s->id, &req, s->uid, s->origin, s->conn != NULL, true, s->owner_start, text, len);
}

/*
 * Whatever is acknowledged must reload: a text the restore would refuse
 * (too large for the store, or a request its validation rejects, as a
 * door's typed request may be) is refused now, before anything changes.
 */
static int check_reloads(enum state_kind kind, const char *name, const char *text, size_t len,
			 struct proto_error *err)
{
	if (len > STATE_LEASE_MAX)
		return proto_error_set(err, PROTO_E_TOO_LARGE, EFBIG, NULL,
				       "the lease's saved form would take %zu bytes, more than the %u a lease may have",
				       len, STATE_LEASE_MAX);
	struct lease_rec rec;
	char why[LEASE_WHY];
	struct proto_error perr = {0};
	int r = lease_parse(kind, name, text, len, &rec, why, sizeof(why), &perr);
	if (r == -ENOMEM)
		return oom(err);
	if (r < 0 && perr.message[0]) {
		/* The request as the protocol's validation refuses it. */
		*err = perr;
		return -(perr.err ? perr.err : EINVAL);
	}
	if (r < 0)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, NULL, "%s", why);
	proto_request_fini(&rec.req);
	return 0;
}

/* ------------------------------------------------------------- persistence */

static void resync_forget(struct broker *b, enum state_kind kind, const char *name)
{
	for (size_t i = 0; i < b->n_resync; i++)
		if (b->resync[i].kind == kind && !strcmp(b->resync[i].name, name)) {
			b->resync[i] = b->resync[--b->n_resync];
			return;
		}
}

static int put_text(struct broker *b, enum state_kind kind, const char *name, const char *text, size_t len)
{
	int r = state_put(b->state, kind, name, text, len);
	if (r < 0)
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ LEASE_FIELD(kind, name) },
			  "state: saving %s %s in %s failed: %s", kind == STATE_VM ? "vm" : "session", name,
			  state_dir(b->state), strerror(-r));
	else
		resync_forget(b, kind, name);
	return r;
}

static int save_vm(struct broker *b, const struct broker_vm *v)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = vm_lease_text(v, &text, &len);
	return r < 0 ? r : put_text(b, STATE_VM, v->name, text, len);
}

static int save_session(struct broker *b, const struct broker_session *s)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r = session_lease_text(s, &text, &len);
	return r < 0 ? r : put_text(b, STATE_SESSION, s->spec.name, text, len);
}

/* A lease that was never saved has no file: that is no failure here. */
static int forget_file(struct broker *b, enum state_kind kind, const char *name)
{
	int r = state_delete(b->state, kind, name);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ LEASE_FIELD(kind, name) },
			  "state: removing %s %s from %s failed: %s", kind == STATE_VM ? "vm" : "session", name,
			  state_dir(b->state), strerror(-r));
	else
		resync_forget(b, kind, name);
	return r;
}

static int on_resync(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct broker *b = userdata;
	(void)usec;
	for (size_t i = b->n_resync; i-- > 0;) {
		struct resync rs = b->resync[i];
		int r;
		if (rs.kind == STATE_VM) {
			const struct broker_vm *v = find_vm(b, rs.name);
			r = v ? save_vm(b, v) : forget_file(b, STATE_VM, rs.name);
		} else {
			const struct broker_session *s = find_session(b, rs.name);
			r = s ? save_session(b, s) : forget_file(b, STATE_SESSION, rs.name);
		}
		(void)r; /* success takes it off the list */
	}
	/* A oneshot source: armed again only while files still lag. */
	if (b->n_resync) {
		sd_event_source_set_time_relative(src, 1000000);
		sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
	}
	return 0;
}

/*
 * For changes nobody can refuse (a VMM or an owner died, libvirt says a
 * domain stopped, a connection left): the change stands; the lease's file
 * is brought in line every second until the store takes it.
 */
static void resync_later(struct broker *b, enum state_kind kind, const char *name)
{
	bool known = false;
	for (size_t i = 0; i < b->n_resync; i++)
		known = known || (b->resync[i].kind == kind && !strcmp(b->resync[i].name, name));
	if (!known) {
		struct resync *n = realloc(b->resync, (b->n_resync + 1) * sizeof(*n));
		if (!n) {
			log_err("state: out of memory: %s %s may come back at restart", kind == STATE_VM ? "vm" : "session",
				name);
			return;
		}
		b->resync = n;
		b->resync[b->n_resync].kind = kind;
		snprintf(b->resync[b->n_resync].name, sizeof(b->resync[0].name), "%s", name);
		b->n_resync++;
	}
	if (!b->resync_timer &&
	    sd_event_add_time_relative(b->event, &b->resync_timer, CLOCK_MONOTONIC, 1000000, 0, on_resync, b) < 0)
		return;
	sd_event_source_set_time_relative(b->resync_timer, 1000000);
	sd_event_source_set_enabled(b->resync_timer, SD_EVENT_ONESHOT);
}

static int save_error(struct broker *b, int r, struct proto_error *err)
{
	return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "could not save the state to %s: %s",
			       state_dir(b->state), strerror(-r));
}

/* ---------------------------------------------------------------- applying */

/*
 * Hands the arbiter's last transitions to the port. Route steps of VMs not
 * yet bound to a VMM have nowhere to go: their routes are applied when the
 * VMM binds (apply_vm_routes), so they are left out here. Those of VMs
 * bound without a route fd go: the port records them (advisory).
 */
static int apply_last(struct broker *b, char *why, size_t whylen)
{
	const struct transition *t;
	size_t n = transitions_of(b, &t);
	if (n == 0 || !port_takes_plan(b))
		return 0;
	_cleanup_free_ struct transition *keep = calloc(n, sizeof(*keep));
	size_t k = 0;
	if (!keep) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct broker_vm *v = t[i].kind == TRANSITION_ROUTES ? vm_by_id(b, t[i].vm_id) : NULL;
		if (t[i].kind != TRANSITION_ROUTES || (v && v->bound))
			keep[k++] = t[i];
	}
	struct kvm_apply_result res = {0};
	int r = k ? kvm_port_apply(b->port, keep, k, &res) : 0;
	if (r < 0)
		snprintf(why, whylen, "kvm port applied %zu of %zu steps, then: %s", res.applied, k, res.why);
	return r;
}

/* ---------------------------------------------------------------- counters */

static void count_refusal(struct broker *b, enum broker_lease_kind kind, enum proto_class cls)
{
	if (b->restoring || (unsigned)cls >= PROTO_CLASS__COUNT)
		return;
	b->counters.refusals[kind][cls]++;
	if (b->counters_hook)
		b->counters_hook(b->counters_hook_ud);
}

/* A VM admitted with vCPUs on the flavour's weaker route. */
static void vcpu_grants(const struct broker *b, const struct broker_vm *v, unsigned by_route[BROKER_ROUTE__COUNT]);
static void count_vm_fallback(struct broker *b, const struct broker_vm *v)
{
	enum broker_route routes[2];
	unsigned by_route[BROKER_ROUTE__COUNT];
	if (b->restoring || broker_flavour_routes(b->flavour, routes) < 2)
		return;
	vcpu_grants(b, v, by_route);
	if (!by_route[routes[1]])
		return;
	if (routes[1] == BROKER_ROUTE_MULTIPLEXED)
		b->counters.fallbacks[BROKER_LEASE_VM][BROKER_FALLBACK_MULTIPLEXED]++;
	else if (routes[1] == BROKER_ROUTE_AT_RISK)
		b->counters.fallbacks[BROKER_LEASE_VM][BROKER_FALLBACK_AT_RISK]++;
}

/* A session started with hardware events that hold no counter. */
static void count_session_fallback(struct broker *b, const struct broker_session *s)
{
	if (b->restoring)
		return;
	for (uint32_t e = 0; e < s->spec.n_events; e++) {
		struct arb_event_grant g;
		if (s->arb_index[e] >= 0 && arb_session_event(b->arb, s->id, (unsigned)s->arb_index[e], &g) == 0 &&
		    !g.dedicated) {
			b->counters.fallbacks[BROKER_LEASE_SESSION][BROKER_FALLBACK_MULTIPLEXED]++;
			return;
		}
	}
}

/* Field by field: the struct has padding. */
static bool grant_sig_equal(const struct grant_sig *a, const struct grant_sig *b)
{
	return a->dedicated == b->dedicated && a->n_dedicated == b->n_dedicated &&
	       a->n_kept_for_guests == b->n_kept_for_guests && a->kept_cpu == b->kept_cpu &&
	       a->kept_vm_id == b->kept_vm_id && a->share == b->share;
}

/* Keeps every session's events on the placements the plan now gives, and
 * notes the sessions whose grants changed for the next event. */
static void sync_sessions(struct broker *b)
{
	for (size_t i = 0; i < b->n_sessions; i++) {
		struct broker_session *s = b->sessions[i];
		if (s->n_hw == 0)
			continue;
		bool regranted = false, demoted = false;
		for (uint32_t e = 0; e < s->spec.n_events; e++) {
			if (s->arb_index[e] < 0)
				continue;
			struct arb_event_grant g;
			if (arb_session_event(b->arb, s->id, (unsigned)s->arb_index[e], &g) < 0)
				continue;
			struct grant_sig sig = { .dedicated = g.dedicated, .n_dedicated = g.n_dedicated,
						 .n_kept_for_guests = g.n_kept_for_guests, .kept_cpu = g.kept_cpu,
						 .kept_vm_id = g.kept_vm_id, .share = g.share };
			struct grant_sig *seen = &s->seen[s->arb_index[e]];
			if (s->seen_valid && !grant_sig_equal(seen, &sig))
				regranted = true;
			if (s->seen_valid && seen->dedicated && !sig.dedicated)
				demoted = true;
			*seen = sig;
			if (!s->ps)
				continue;
			enum perf_session_placement want = g.dedicated ? PERF_SESSION_DEDICATED : PERF_SESSION_MULTIPLEXED;
			int r = perf_session_set_placement(s->ps, e, want);
			if (r < 0)
				log_event(LOG_WARNING, VPMU_MSG_NONE, &(struct log_fields){ .session = s->spec.name },
					  "session %s: moving %s to %s failed: %s", s->spec.name, s->spec.events[e],
					  perf_session_placement_name(want), strerror(-r));
		}
		s->seen_valid = true;
		if (demoted && !b->restoring)
			b->counters.preemptions[BROKER_LEASE_SESSION]++;
		/* Out of memory: the session is not named, as if unchanged;
		 * the log says so. */
		if (regranted && ids_add(&b->sessions_regranted, s->id) < 0)
			log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .session = s->spec.name },
				  "session %s: out of memory: watchers may miss its new placements", s->spec.name);
	}
}

/*
 * Names the VMs whose routes another lease's change just downgraded. Phase 1
 * route steps are downgrades (transition.h) except for the lease that
 * changed itself, so any other VM named there was preempted. The arbiter
 * emits a VM's steps together: one line (and one count of
 * vpmu_preemptions_total) per run of them; its own update's shrinks are no
 * preemption. The event to watchers carries the steps themselves.
 */
static void note_preemptions(struct broker *b, const char *reason, const struct touched *what)
{
	const struct transition *t;
	/* A replay at start rebuilds the plan lease by lease: its downgrades
	 * are steps on the way back, not news. */
	size_t n = b->restoring ? 0 : transitions_of(b, &t);
	for (size_t i = 0; i < n;) {
		if (t[i].kind != TRANSITION_ROUTES || t[i].phase != 1 || t[i].vm_id == what->vm_added ||
		    t[i].vm_id == what->vm_changed || t[i].vm_id == what->vm_removed) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && t[j].kind == TRANSITION_ROUTES && t[j].phase == 1 && t[j].vm_id == t[i].vm_id)
			j++;
		const struct broker_vm *v = vm_by_id(b, t[i].vm_id);
		const struct broker_session *s = what->session_added ? session_by_id(b, what->session_added) : NULL;
		/* one walk for the journal's line and the metrics' counter */
		b->counters.preemptions[BROKER_LEASE_VM]++;
		if (v)
			log_event(LOG_NOTICE, VPMU_MSG_PREEMPTED,
				  &(struct log_fields){ .vm = v->name, .session = s ? s->spec.name : NULL,
							.generation = arb_generation(b->arb) },
				  "vm %s preempted by %s: the PMC routes of %zu vCPU%s downgraded", v->name, reason,
				  j - i, j - i == 1 ? "" : "s");
		i = j;
	}
}

/* After an accepted arbiter change that is durable already: KVM, then
 * sessions, then watchers. On failure the caller undoes the change. */
static int apply_change(struct broker *b, const char *reason, const struct touched *what,
			struct proto_error *err)
{
	char why[BROKER_WHY];
	int r = apply_last(b, why, sizeof(why));
	if (r < 0) {
		log_err("%s: %s", reason, why);
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "%s", why);
	}
	sync_sessions(b);
	emit(b, reason, what);
	note_preemptions(b, reason, what);
	log_event(LOG_INFO, VPMU_MSG_PLAN_APPLIED, &(struct log_fields){ .generation = arb_generation(b->arb) },
		  "%s: generation %" PRIu64 ", %zu transitions", reason, arb_generation(b->arb),
		  transitions_of(b, &(const struct transition *){0}));
	return 0;
}

/* Puts the port and the sessions back in line after the arbiter undid a
 * change the port had seen part of. */
static void follow_undo(struct broker *b, const char *what)
{
	char why[BROKER_WHY];
	if (apply_last(b, why, sizeof(why)) < 0)
		log_err("undo of %s left the kvm port behind: %s", what, why);
	sync_sessions(b);
}

/* ---------------------------------------------------------------- leases */

/* Arrival-order lists: append, and remove wherever the lease sits. */
static int vm_list_add(struct broker *b, struct broker_vm *v)
{
	struct broker_vm **a = grow(b->vms, &b->cap_vms, b->n_vms, sizeof(*a));
	if (!a)
		return -ENOMEM;
	b->vms = a;
	b->vms[b->n_vms++] = v;
	return 0;
}

static void vm_list_remove(struct broker *b, const struct broker_vm *v)
{
	for (size_t i = b->n_vms; i-- > 0;)
		if (b->vms[i] == v)
			return remove_at(b->vms, &b->n_vms, i, sizeof(*b->vms));
}

static int session_list_add(struct broker *b, struct broker_session *s)
{
	struct broker_session **a = grow(b->sessions, &b->cap_sessions, b->n_sessions, sizeof(*a));
	if (!a)
		return -ENOMEM;
	b->sessions = a;
	b->sessions[b->n_sessions++] = s;
	return 0;
}

static void session_list_remove(struct broker *b, const struct broker_session *s)
{
	for (size_t i = b->n_sessions; i-- > 0;)
		if (b->sessions[i] == s)
			return remove_at(b->sessions, &b->n_sessions, i, sizeof(*b->sessions));
}

/* ---------------------------------------------------------------- VMs */

static void vm_free(struct broker_vm *v)
{
	if (!v)
		return;
	owner_watch_free(v->watch);
	broker_conn_unref(v->conn);
	cpus_release_all(v->b, v->vcpus, v->n_vcpus);
	free(v);
}

static int vm_insert(struct broker *b, struct broker_vm *v)
{
	if (vm_list_add(b, v) < 0)
		return -ENOMEM;
	if (index_put(&b->vm_names, v->name, 0, v) < 0) {
		b->n_vms--;
		return -ENOMEM;
	}
	if (index_put(&b->vm_ids, NULL, v->id, v) < 0) {
		index_del(&b->vm_names, v->name, 0);
		b->n_vms--;
		return -ENOMEM;
	}
	return 0;
}

/* Takes the VM out of the broker's lists (not the arbiter's, not the port's). */
static void vm_unlist(struct broker *b, struct broker_vm *v)
{
	index_del(&b->vm_names, v->name, 0);
	index_del(&b->vm_ids, NULL, v->id);
	vm_list_remove(b, v);
}

static void on_vmm_gone(struct owner_watch *w, void *userdata)
{
	struct broker_vm *v = userdata;
	char reason[160];
	(void)w;
	snprintf(reason, sizeof(reason), "VMM pid %d exited", (int)v->vmm_pid);
	broker_vm_release(v->b, v->name, reason);
}

/* The lease's CPUs are what the routes promise: the port checks pass-through
 * against them (and keeps vCPU threads within them). */
static void declare_vcpu_cpus(struct broker *b, const struct broker_vm *v)
{
	_cleanup_free_ unsigned *cpus = malloc(PMU_MAX_CPUS * sizeof(*cpus));
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		size_t n = 0;
		const struct cpulist *l = v->vcpus[i];
		for (int c = cpulist_next(l, -1); cpus && c >= 0 && n < PMU_MAX_CPUS; c = cpulist_next(l, c))
			cpus[n++] = (unsigned)c;
		/* Out of memory: the port falls back to the thread's affinity. */
		int r = kvm_port_set_vcpu_cpus(b->port, v->id, i, cpus, n);
		if (r < 0)
			log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = v->name },
				  "vm %s: declaring the CPUs of vCPU %u to the kvm port: %s", v->name, i, strerror(-r));
	}
	if (!cpus)
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = v->name },
			  "vm %s: out of memory: the kvm port checks routes against the vCPU threads' affinity", v->name);
}

/* Whether our fd is the open file fd vmm_fd of process pid is: 1 yes, 0
 * no, -errno when kcmp cannot tell. */
static int same_open_file(pid_t pid, int vmm_fd, int fd)
{
	long r = syscall(SYS_kcmp, pid, getpid(), KCMP_FILE, (unsigned long)vmm_fd, (unsigned long)fd);
	if (r < 0)
		return -errno;
	return r == 0;
}

/* A VMM's VM as discovery found it, with what the port needs of the
 * lease's vCPUs: lease vCPU i is the VMM's vCPU of the i-th smallest id
 * (QEMU creates vCPUs in id order, so this is creation order there). */
struct vmm_found {
	struct vmm_vm vm;
	pid_t *tids;
	uint32_t *ids;
};

static void vmm_found_release(struct vmm_found *f)
{
	vmm_discover_release(&f->vm);
	free(f->tids);
	free(f->ids);
	f->tids = NULL;
	f->ids = NULL;
}

/*
 * Finds pid's VM and checks that it can carry the lease v: enough vCPUs,
 * bound to no other lease, and (model backend) that route_fd, if any, is
 * that VM's file. Changes nothing.
 */
static int vmm_check(struct broker *b, const struct broker_vm *v, pid_t pid, int vm_fd, bool has_vm_fd,
		     int route_fd, const char *field, struct vmm_found *out, struct proto_error *err)
{
	char why[BROKER_WHY];
	struct vmm_discover_opts dopts = { .vm_fd = has_vm_fd ? vm_fd : -1 };
	int r = vmm_discover(pid, &dopts, &out->vm, why, sizeof(why));
	/* Gone, or no VM to be found: not_found. A VM fd named by the caller
	 * that is not one: the parameter is wrong. */
	if (r < 0)
		return proto_error_set(err, r == -ESRCH || (r == -ENOENT && !has_vm_fd) ? PROTO_E_NOT_FOUND
											 : PROTO_E_INVALID_PARAM,
				       -r, field, "VMM pid %d: %s", (int)pid, why);
	/* Routes are per vCPU: the VMM must hold as many vCPUs as the lease
	 * declares (it may add vCPUs later: bind again then). */
	uint32_t n = v->n_vcpus;
	if (out->vm.n_vcpus < n) {
		unsigned nv = out->vm.n_vcpus;
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field,
				       "VMM pid %d has %u vCPU%s; vm %s declares %u", (int)pid, nv, nv == 1 ? "" : "s",
				       v->name, n);
	}
	/* One KVM VM, one lease: two leases would program the same vCPUs.
	 * Bound leases are few next to unbound ones; a scan is fine here. */
	for (size_t i = 0; i < b->n_vms; i++) {
		const struct broker_vm *o = b->vms[i];
		if (o != v && o->bound && o->vmm_pid == pid && o->vm_fd == out->vm.vm_fd)
			return proto_error_set(err, PROTO_E_EXISTS, EEXIST, field,
					       "VMM pid %d's VM (fd %d) is already bound to vm %s", (int)pid, o->vm_fd,
					       o->name);
	}
	/* The model makes its route fd from the VM file the VMM handed over
	 * (what KVM_CREATE_VPMU_ROUTE_FD would do in the VMM): that must be
	 * the VM this VMM holds, not any VM file, nor another VMM's. A
	 * kernel's route fd names its VM itself. */
	if (route_fd >= 0 && kvm_port_backend(b->port) == KVM_BACKEND_MODEL) {
		r = same_open_file(pid, out->vm.vm_fd, route_fd);
		if (r == 0)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
					       "params.route_fd: the route fd is not VMM pid %d's VM (its VM fd %d)",
					       (int)pid, out->vm.vm_fd);
		if (r < 0)
			return proto_error_set(err, r == -ESRCH ? PROTO_E_NOT_FOUND : PROTO_E_INTERNAL, -r,
					       "params.route_fd",
					       "params.route_fd: cannot tell whether it is VMM pid %d's VM (kcmp: %s)",
					       (int)pid, strerror(-r));
		/* kcmp named the process by pid: it must still be the one the
		 * pidfd holds. */
		if (vmm_discover_pidfd_alive(out->vm.pidfd) <= 0)
			return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, field, "VMM pid %d is gone", (int)pid);
	}
	out->tids = calloc(n, sizeof(*out->tids));
	out->ids = calloc(n, sizeof(*out->ids));
	if (!out->tids || !out->ids)
		return oom(err);
	/* Discovery sorts the vCPUs by id. */
	for (uint32_t i = 0; i < n; i++) {
		out->tids[i] = out->vm.vcpus[i].tid;
		out->ids[i] = out->vm.vcpus[i].id;
	}
	return 0;
}

/* The port's refusal of a VM, as the request's error: with a route fd the
 * fd is what was wrong. */
static int port_error(int r, pid_t pid, bool routed, const char *field, const char *why, struct proto_error *err)
{
	if (!routed)
		return proto_error_set(err, r == -ENOMEM ? PROTO_E_INTERNAL : PROTO_E_INVALID_PARAM, -r, field,
				       "VMM pid %d: %s", (int)pid, why[0] ? why : strerror(-r));
	enum proto_errcode code;
	switch (r) {
	case -EEXIST: code = PROTO_E_EXISTS; break;
	case -ESRCH:
	case -EIO: code = PROTO_E_NOT_FOUND; break;
	case -ENOMEM: code = PROTO_E_INTERNAL; break;
	default: code = PROTO_E_INVALID_PARAM; break;
	}
	const char *what = r == -ENOTTY ? "not a route fd"
			   : r == -EBADF ? "not an open descriptor"
			   : r == -EIO	 ? "the VM is dead"
			   : r == -EEXIST ? "its VM is bound already"
					  : strerror(-r);
	return proto_error_set(err, code, -r, "params.route_fd", "params.route_fd: VMM pid %d: %s%s%s", (int)pid, what,
			       why[0] ? ": " : "", why);
}

/* Registers v's VM with the port, taking *route_fd over on success (-1:
 * advisory VM). */
static int port_register(struct broker *b, struct broker_vm *v, pid_t pid, const struct vmm_found *found,
			 int *route_fd, const char *field, struct proto_error *err)
{
	char why[BROKER_WHY] = "";
	/* The shape is what KVM would know from the VMM's KVM_SET_CPUID2 (the
	 * model takes it; a kernel's own is read back): the lease's. An
	 * advisory VM has no CPUID anyone checks (0: any the host has), so
	 * that its lease may grow. */
	struct kvm_port_vm pv = { .vm_id = v->id, .vmm_pid = pid, .vmm_pidfd = found->vm.pidfd, .route_fd = *route_fd,
				  .n_vcpus = v->n_vcpus, .vcpu_tids = found->tids, .vcpu_ids = found->ids,
				  .shape = *route_fd >= 0 ? lease_shape(b, v->gp, v->fixed_mask) : 0 };
	int r = kvm_port_register_vm(b->port, &pv, why, sizeof(why));
	if (r < 0)
		return port_error(r, pid, *route_fd >= 0, field, why, err);
	v->routed = *route_fd >= 0;
	*route_fd = -1;
	return 0;
}

/*
 * Ties the lease to its VMM: finds the VM, checks it can carry the lease,
 * registers it with the kvm port (with the route fd the VMM handed over,
 * taken over on success; or -1) and watches the process. Applies no
 * route: at attach the arbiter's transitions do that, at vm.bind
 * apply_routes. On failure nothing is left registered.
 */
static int register_vmm(struct broker *b, struct broker_vm *v, pid_t pid, int vm_fd, bool has_vm_fd,
			int *route_fd, const char *field, struct proto_error *err)
{
	_cleanup_(vmm_found_release) struct vmm_found found = { .vm = { .pidfd = -1 } };
	int r = vmm_check(b, v, pid, vm_fd, has_vm_fd, *route_fd, field, &found, err);
	if (r < 0)
		return r;
	uint64_t start = 0;
	/* The watch gets its own copy of the pidfd discovery opened, so no pid
	 * reuse can slip in between. */
	if (owner_start_time(pid, &start) < 0)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, field, "VMM pid %d is gone", (int)pid);
	_cleanup_close_ int watch_fd = fcntl(found.vm.pidfd, F_DUPFD_CLOEXEC, 3);
	/* Out of descriptors is vpmud's trouble, not the VMM's: never "not
	 * found", which a restore takes for a VMM that is gone. */
	if (watch_fd < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, errno, field, "VMM pid %d: watching it: %s", (int)pid,
				       strerror(errno));
	if ((r = port_register(b, v, pid, &found, route_fd, field, err)) < 0)
		return r;
	struct owner_watch *w = NULL;
	r = owner_watch_new(b->event, pid, TAKE_FD(watch_fd), on_vmm_gone, v, &w);
	if (r < 0) {
		kvm_port_unregister_vm(b->port, v->id);
		v->routed = false;
		return proto_error_set(err, r == -ESRCH ? PROTO_E_NOT_FOUND : PROTO_E_INTERNAL, -r, field,
				       "VMM pid %d: %s", (int)pid, strerror(-r));
	}
	declare_vcpu_cpus(b, v);
	/* A lease the port refused back (take_route_fd) still has its watch. */
	owner_watch_free(v->watch);
	v->bound = true;
	v->rebound_at_restore = b->restoring && !v->routed;
	v->vmm_pid = pid;
	v->vm_fd = found.vm.vm_fd;
	v->vmm_start = start;
	v->watch = w;
	return 0;
}

static void unbind_vm(struct broker *b, struct broker_vm *v)
{
	if (!v->bound)
		return;
	owner_watch_free(v->watch);
	v->watch = NULL;
	/* The port closes the route fd: the VM reference goes with it. */
	kvm_port_unregister_vm(b->port, v->id);
	v->bound = false;
	v->routed = false;
	v->rebound_at_restore = false;
}

/* The routes of every vCPU, one phase, for a lease bound (2) or taken back
 * (1) after its attach. */
static int apply_vm_routes(struct broker *b, struct broker_vm *v, unsigned phase, char *why, size_t whylen)
{
	if (!port_takes_plan(b))
		return 0;
	_cleanup_free_ struct transition *t = calloc(v->n_vcpus, sizeof(*t));
	if (!t) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		t[i] = (struct transition){ .kind = TRANSITION_ROUTES, .phase = phase, .vm_id = v->id, .vcpu = i,
					    .cpu = -1 };
		if (phase == 2) {
			arb_vcpu_routes(b->arb, v->id, i, t[i].gp_route, t[i].fixed_route);
			continue;
		}
		/* taken back: nothing passes through, and the guest's PMCs
		 * stay multiplexed (in its shape a PMC is never disabled) */
		for (uint32_t g = 0; g < v->gp && g < TRANSITION_MAX_GP; g++)
			t[i].gp_route[g] = PMC_ROUTE_MULTIPLEXED;
		for (unsigned x = 0; x < TRANSITION_MAX_FIXED; x++)
			if ((v->fixed_mask >> x) & 1)
				t[i].fixed_route[x] = PMC_ROUTE_MULTIPLEXED;
	}
	struct kvm_apply_result res = {0};
	int r = kvm_port_apply(b->port, t, v->n_vcpus, &res);
	if (r < 0)
		snprintf(why, whylen, "%s", res.why);
	return r;
}

/* One vCPU's routes in this flavour's terms. */
static int vcpu_routes(const struct broker *b, const struct broker_vm *v, uint32_t vcpu, uint8_t *gp,
		       uint8_t *fixed)
{
	uint8_t agp[PMU_MAX_GP], afx[PMU_MAX_FIXED];
	int r = arb_vcpu_routes(b->arb, v->id, vcpu, agp, afx);
	if (r < 0)
		return r;
	present_routes(b, agp, afx, gp, fixed);
	return 0;
}

/* The vCPUs that asked for PMCs, each counted under the weakest route of
 * the PMCs it asked for; a VM that asked for none counts nowhere. */
static void vcpu_grants(const struct broker *b, const struct broker_vm *v, unsigned by_route[BROKER_ROUTE__COUNT])
{
	memset(by_route, 0, BROKER_ROUTE__COUNT * sizeof(*by_route));
	if (!v->gp && !v->fixed_mask)
		return;
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		uint8_t gp[PMU_MAX_GP], fx[PMU_MAX_FIXED];
		if (vcpu_routes(b, v, i, gp, fx) < 0)
			continue;
		uint8_t worst = BROKER_ROUTE_PASSTHROUGH;
		for (unsigned j = 0; j < PMU_MAX_GP + PMU_MAX_FIXED; j++) {
			bool asked = j < PMU_MAX_GP ? j < v->gp : (v->fixed_mask >> (j - PMU_MAX_GP)) & 1;
			uint8_t r = j < PMU_MAX_GP ? gp[j] : fx[j - PMU_MAX_GP];
			if (asked && route_rank(r) < route_rank(worst))
				worst = r;
		}
		if (worst < BROKER_ROUTE__COUNT)
			by_route[worst]++;
	}
}

static int vm_attach(struct broker *b, const struct broker_caller *c, const struct proto_vm_attach *a,
		     uint64_t id, uint64_t owner_start, struct broker_attach_result *res, struct proto_error *err)
{
	int r = check_caller(b, c, PROTO_M_VM_ATTACH, err);
	if (r < 0)
		return r;
	if (find_vm(b, a->name))
		return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.name", "vm %s is already attached",
				       a->name);
	struct broker_vm *v = calloc(1, sizeof(*v));
	if (!v)
		return oom(err);
	v->b = b;
	v->id = id;
	v->uid = c->uid;
	set_origin(v->origin, sizeof(v->origin), c);
	snprintf(v->name, sizeof(v->name), "%s", a->name);
	v->priority = a->has_priority ? a->priority : (uint32_t)b->cfg->default_priority;
	v->cls = a->has_class ? a->cls : default_class(b);
	v->gp = a->gp;
	v->fixed_mask = a->fixed_mask;
	v->vm_fd = -1;
	v->n_vcpus = a->vcpus.count;
	if (v->n_vcpus > PROTO_MAX_VCPUS || !a->vcpus.cpus) {
		vm_free(v);
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus", "params.vcpus: 1..%d vCPUs",
				       PROTO_MAX_VCPUS);
	}
	if (!(v->vcpus = cpus_intern_all(b, a->vcpus.cpus, v->n_vcpus))) {
		v->n_vcpus = 0;
		vm_free(v);
		return oom(err);
	}

	struct vm_arb_spec spec;
	struct vm_shape shape = shape_of(v);
	r = build_vm_spec(b, v->id, &shape, &spec, err);
	if (r < 0) {
		vm_free(v);
		return r;
	}
	/* A VMM given at attach must already be a live KVM VMM that can carry
	 * the lease (and a reloaded lease's VMM the same process as before):
	 * checked before the arbiter, so that a bad owner changes nothing. */
	if (a->has_owner) {
		if (owner_start && !owner_alive(a->owner.pid, owner_start)) {
			vm_arb_spec_fini(&spec);
			vm_free(v);
			return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, "params.owner", "VMM pid %d is gone",
					       a->owner.pid);
		}
		/* An owner named at attach hands no route fd: advisory until
		 * the VMM binds with one. */
		int no_route_fd = -1;
		r = register_vmm(b, v, a->owner.pid, a->owner.vm_fd, true, &no_route_fd, "params.owner", err);
		if (r < 0) {
			vm_arb_spec_fini(&spec);
			vm_free(v);
			return r;
		}
	}
	v->conn = follow_conn(c, v->bound);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (!b->restoring) {
		r = vm_lease_text(v, &text, &len);
		r = r < 0 ? oom(err) : check_reloads(STATE_VM, v->name, text, len, err);
		if (r < 0) {
			vm_arb_spec_fini(&spec);
			unbind_vm(b, v);
			vm_free(v);
			return r;
		}
	}
	char why[BROKER_WHY];
	r = arb_vm_add(b->arb, &spec.vm, why, sizeof(why));
	vm_arb_spec_fini(&spec);
	if (r < 0) {
		if (r == -EBUSY) {
			log_event(LOG_WARNING, VPMU_MSG_REFUSED,
				  &(struct log_fields){ .vm = v->name, .has_uid = true, .uid = v->uid,
							.via = broker_door_name(c->door), .origin = v->origin },
				  "vm %s refused: %s", v->name, why);
			count_refusal(b, BROKER_LEASE_VM, v->cls);
		}
		unbind_vm(b, v);
		vm_free(v);
		if (r == -EBUSY)
			return proto_error_set(err, PROTO_E_REFUSED, EBUSY, NULL, "%s", why);
		return proto_error_set(err, r == -ENOMEM ? PROTO_E_INTERNAL : PROTO_E_INVALID_PARAM, -r, NULL, "%s",
				       r == -ENOMEM ? "out of memory" : why);
	}
	if (vm_insert(b, v) < 0) {
		arb_vm_remove(b->arb, v->id);
		unbind_vm(b, v);
		vm_free(v);
		return oom(err);
	}
	/* Durable first; a refused attach leaves nothing on disk. */
	if (!b->restoring && (r = put_text(b, STATE_VM, v->name, text, len)) < 0) {
		arb_vm_remove(b->arb, v->id);
		vm_unlist(b, v);
		unbind_vm(b, v);
		vm_free(v);
		return save_error(b, r, err);
	}
	char reason[128];
	snprintf(reason, sizeof(reason), "vm.attach %s", a->name);
	r = apply_change(b, reason, &(struct touched){ .vm_added = v->id }, err);
	if (r < 0) {
		/* The port may hold part of it: follow the undo back, then take
		 * the lease off the disk again. */
		arb_vm_remove(b->arb, v->id);
		follow_undo(b, reason);
		vm_unlist(b, v);
		unbind_vm(b, v);
		if (!b->restoring && forget_file(b, STATE_VM, v->name) < 0) {
			log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = v->name },
				  "vm %s: the refused attach may come back at restart: the state could not be saved",
				  v->name);
			resync_later(b, STATE_VM, v->name);
		}
		vm_free(v);
		return r;
	}
	/* A replayed lease is not a new admission: restore_one says "restored". */
	log_event(LOG_NOTICE, b->restoring ? VPMU_MSG_NONE : VPMU_MSG_ADMITTED,
		  &(struct log_fields){ .vm = v->name, .has_uid = true, .uid = v->uid, .via = broker_door_name(c->door),
					.generation = arb_generation(b->arb),
					.origin = b->restoring ? "restore" : v->origin },
		  "vm %s attached: priority %u, class %s, %u vCPUs, gp %u, fixed 0x%x%s", v->name, v->priority,
		  proto_class_name(v->cls), v->n_vcpus, v->gp, v->fixed_mask,
		  v->bound ? ", bound to its VMM (routes advisory until it hands a route fd)" : ", not bound to a VMM yet");
	if (res) {
		*res = (struct broker_attach_result){ .generation = arb_generation(b->arb), .bound = v->bound };
		vcpu_grants(b, v, res->vcpus_by_route);
		unsigned n_asked = v->gp || v->fixed_mask ? v->n_vcpus : 0;
		res->passthrough_vcpus = res->vcpus_by_route[BROKER_ROUTE_PASSTHROUGH];
		res->multiplexed_vcpus =
			b->flavour == BROKER_FLAVOUR_EXTENSION ? n_asked - res->passthrough_vcpus : 0;
	}
	count_vm_fallback(b, v);
	return 0;
}

int broker_vm_attach(struct broker *b, const struct broker_caller *c, const struct proto_vm_attach *a,
		     struct broker_attach_result *res, struct proto_error *err)
{
	int r = vm_attach(b, c, a, b->next_id, 0, res, err);
	if (r == 0)
		b->next_id++;
	return r;
}

/*
 * Takes a VM lease away. A request (vm.detach) is saved before it is
 * carried out, and refused whole when it cannot be; a release nobody can
 * refuse (its VMM died, libvirt stopped the domain, its connection left)
 * is carried out and its save retried until it succeeds.
 */
static int vm_release(struct broker *b, struct broker_vm *v, const char *reason, bool refuse_unsaved)
{
	uint64_t id = v->id;
	char why[BROKER_WHY], ev[160], name[PROTO_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", v->name);
	int saved = forget_file(b, STATE_VM, name);
	if (saved < 0 && refuse_unsaved)
		return saved;
	/*
	 * Two phases, as for any change: the VM's routes go to disabled while
	 * its VMM is still registered, then partitions shrink, then the VM
	 * leaves the port. A VMM that is already dead has no routes to change
	 * (the kernel drops them with the VM), so it leaves the port first.
	 */
	if (v->bound && (!v->watch || vmm_discover_pidfd_alive(owner_watch_pidfd(v->watch)) <= 0))
		unbind_vm(b, v);
	arb_vm_remove(b->arb, id);
	if (apply_last(b, why, sizeof(why)) < 0)
		log_err("releasing vm %s: %s", name, why);
	unbind_vm(b, v);
	vm_unlist(b, v);
	vm_free(v);
	if (saved < 0)
		resync_later(b, STATE_VM, name);
	sync_sessions(b);
	snprintf(ev, sizeof(ev), "vm released %s", name);
	emit_event(b, ev, true, &(struct touched){ .vm_removed = id }, name);
	log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = name, .generation = arb_generation(b->arb) },
		  "vm %s released: %s", name, reason);
	return 0;
}

int broker_vm_release(struct broker *b, const char *name, const char *reason)
{
	struct broker_vm *v = find_vm(b, name);
	if (!v)
		return -ENOENT;
	return vm_release(b, v, reason, false);
}

int broker_vm_detach(struct broker *b, const struct broker_caller *c, const char *name, uint64_t *generation,
		     struct proto_error *err)
{
	int r = check_caller(b, c, PROTO_M_VM_DETACH, err);
	if (r < 0)
		return r;
	struct broker_vm *v = find_vm(b, name);
	if (!v)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s", name);
	char reason[160];
	snprintf(reason, sizeof(reason), "detached by uid %u via %s", (unsigned)c->uid, broker_door_name(c->door));
	r = vm_release(b, v, reason, true);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL,
				       "could not save the state to %s: %s; vm %s stays attached", state_dir(b->state),
				       strerror(-r), name);
	if (generation)
		*generation = arb_generation(b->arb);
	return 0;
}

/*
 * CPUID leaf 0xA fixed the guest's PMU before its vCPUs ran, and routes
 * only switch PMCs of that shape between pass-through and multiplexed: a
 * VM whose routes reach the kernel keeps exactly that shape (more is not
 * there; less would leave PMCs the plan does not count running as
 * flexible events on the host side).
 */
static int check_guest_shape(const struct broker *b, const struct broker_vm *v, uint32_t gp, uint32_t fixed_mask,
			     struct proto_error *err)
{
	uint64_t want = lease_shape(b, gp, fixed_mask);
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		uint64_t shape;
		int r = kvm_port_vcpu_shape(b->port, v->id, i, &shape);
		if (r < 0)
			return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "vm %s: the shape of vCPU %u: %s", v->name,
					       i, strerror(-r));
		if (want == shape)
			continue;
		const char *field = (want ^ shape) & VPMU_GP_MASK ? "params.gp" : "params.fixed_mask";
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field,
				       "%s: the guest's PMU shape is fixed by CPUID (gp %d fixed 0x%x): vm %s cannot "
				       "have gp %u fixed 0x%x",
				       field, __builtin_popcountll(shape & VPMU_GP_MASK),
				       (unsigned)((shape & VPMU_FIXED_MASK) >> VPMU_FIXED_SHIFT), v->name, gp, fixed_mask);
	}
	return 0;
}

int broker_vm_update(struct broker *b, const struct broker_caller *c, const struct proto_vm_update *u,
		     uint64_t *generation, struct proto_error *err)
{
	int r = check_caller(b, c, PROTO_M_VM_UPDATE, err);
	if (r < 0)
		return r;
	struct broker_vm *v = find_vm(b, u->name);
	if (!v)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s", u->name);
	struct broker_vm next = *v;
	if (u->has_priority)
		next.priority = u->priority;
	if (u->has_class)
		next.cls = u->cls;
	if (u->has_gp)
		next.gp = u->gp;
	if (u->has_fixed_mask)
		next.fixed_mask = u->fixed_mask;
	if (u->has_vcpus) {
		if (v->bound && u->vcpus.count != v->n_vcpus)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
					       "params.vcpus: vm %s is bound to its VMM with %u vCPUs; the count cannot change",
					       u->name, v->n_vcpus);
		if (!u->vcpus.cpus || u->vcpus.count == 0 || u->vcpus.count > PROTO_MAX_VCPUS)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
					       "params.vcpus: 1..%d vCPUs", PROTO_MAX_VCPUS);
		next.n_vcpus = u->vcpus.count;
	}
	/* The request's lists, borrowed for the checks; interned once they pass. */
	_cleanup_free_ const struct cpulist **asked = NULL;
	if (u->has_vcpus) {
		if (!(asked = calloc(next.n_vcpus, sizeof(*asked))))
			return oom(err);
		for (uint32_t i = 0; i < next.n_vcpus; i++)
			asked[i] = &u->vcpus.cpus[i];
		next.vcpus = asked;
	}
	if (v->routed && (r = check_guest_shape(b, v, next.gp, next.fixed_mask, err)) < 0)
		return r;
	struct vm_arb_spec spec;
	struct vm_shape shape = shape_of(&next);
	r = build_vm_spec(b, v->id, &shape, &spec, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	r = vm_lease_text(&next, &text, &len);
	r = r < 0 ? oom(err) : check_reloads(STATE_VM, v->name, text, len, err);
	if (r < 0) {
		vm_arb_spec_fini(&spec);
		return r;
	}
	const struct cpulist **interned = NULL;
	if (u->has_vcpus && !(interned = cpus_intern_all(b, u->vcpus.cpus, next.n_vcpus))) {
		vm_arb_spec_fini(&spec);
		return oom(err);
	}
	char why[BROKER_WHY];
	r = arb_vm_update(b->arb, &spec.vm, why, sizeof(why));
	vm_arb_spec_fini(&spec);
	if (r < 0) {
		char origin[LEASE_ORIGIN_LEN];
		set_origin(origin, sizeof(origin), c);
		if (r == -EBUSY)
			log_event(LOG_WARNING, VPMU_MSG_REFUSED,
				  &(struct log_fields){ .vm = v->name, .has_uid = true, .uid = c->uid,
							.via = broker_door_name(c->door), .origin = origin },
				  "vm %s update refused: %s", v->name, why);
		cpus_release_all(b, interned, next.n_vcpus);
		if (r == -EBUSY) {
			count_refusal(b, BROKER_LEASE_VM, next.cls);
			return proto_error_set(err, PROTO_E_REFUSED, EBUSY, NULL, "%s", why);
		}
		return proto_error_set(err, r == -ENOMEM ? PROTO_E_INTERNAL : PROTO_E_INVALID_PARAM, -r, NULL, "%s",
				       r == -ENOMEM ? "out of memory" : why);
	}
	struct broker_vm old = *v;
	struct vm_shape old_shape = shape_of(&old);
	/* Durable first: a failed save puts the arbiter back and changes nothing. */
	r = put_text(b, STATE_VM, v->name, text, len);
	if (r < 0) {
		if (build_vm_spec(b, v->id, &old_shape, &spec, &(struct proto_error){0}) == 0) {
			arb_vm_update(b->arb, &spec.vm, NULL, 0);
			vm_arb_spec_fini(&spec);
		}
		cpus_release_all(b, interned, next.n_vcpus);
		return save_error(b, r, err);
	}
	v->priority = next.priority;
	v->cls = next.cls;
	v->gp = next.gp;
	v->fixed_mask = next.fixed_mask;
	if (u->has_vcpus) {
		v->n_vcpus = next.n_vcpus;
		v->vcpus = interned;
	}
	/* The port checks each route against the CPUs declared for its vCPU:
	 * a re-pinned vCPU's new routes must meet its new CPUs, not the old. */
	if (u->has_vcpus && v->bound)
		declare_vcpu_cpus(b, v);
	char reason[128];
	snprintf(reason, sizeof(reason), "vm.update %s", u->name);
	r = apply_change(b, reason, &(struct touched){ .vm_changed = v->id }, err);
	if (r < 0) {
		if (u->has_vcpus)
			cpus_release_all(b, v->vcpus, v->n_vcpus);
		v->priority = old.priority;
		v->cls = old.cls;
		v->gp = old.gp;
		v->fixed_mask = old.fixed_mask;
		v->n_vcpus = old.n_vcpus;
		v->vcpus = old.vcpus;
		if (u->has_vcpus && v->bound)
			declare_vcpu_cpus(b, v);
		if (build_vm_spec(b, v->id, &old_shape, &spec, &(struct proto_error){0}) == 0) {
			arb_vm_update(b->arb, &spec.vm, NULL, 0);
			vm_arb_spec_fini(&spec);
			follow_undo(b, reason);
		}
		if (save_vm(b, v) < 0) {
			log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = u->name },
				  "vm %s: the refused update may come back at restart: the state could not be saved",
				  u->name);
			resync_later(b, STATE_VM, v->name);
		}
		return r;
	}
	if (u->has_vcpus)
		cpus_release_all(b, old.vcpus, old.n_vcpus);
	log_event(LOG_NOTICE, VPMU_MSG_NONE, &(struct log_fields){ .vm = u->name, .generation = arb_generation(b->arb) },
		  "vm %s updated: priority %u, class %s, gp %u, fixed 0x%x", u->name, v->priority,
		  proto_class_name(v->cls), v->gp, v->fixed_mask);
	if (generation)
		*generation = arb_generation(b->arb);
	return 0;
}

/*
 * A VM bound without a route fd takes the one its VMM hands over now (a
 * libvirt follower bound it first, or vpmud restarted): checked as at
 * bind, then the port's registration is swapped and the VM's routes are
 * sent. On failure the VM stays bound, advisory, as it was.
 */
static int take_route_fd(struct broker *b, struct broker_vm *v, int *route_fd, struct proto_error *err)
{
	_cleanup_(vmm_found_release) struct vmm_found found = { .vm = { .pidfd = -1 } };
	int r = vmm_check(b, v, v->vmm_pid, v->vm_fd, true, *route_fd, "params.pid", &found, err);
	if (r < 0)
		return r;
	kvm_port_unregister_vm(b->port, v->id);
	v->routed = false;
	r = port_register(b, v, v->vmm_pid, &found, route_fd, "params.pid", err);
	char why[BROKER_WHY];
	if (r == 0) {
		declare_vcpu_cpus(b, v);
		int a = apply_vm_routes(b, v, 2, why, sizeof(why));
		if (a == 0) {
			v->rebound_at_restore = false;
			return 0;
		}
		/* Take back what reached the port; the route fd goes with the
		 * registration. */
		char ignored[BROKER_WHY];
		apply_vm_routes(b, v, 1, ignored, sizeof(ignored));
		kvm_port_unregister_vm(b->port, v->id);
		v->routed = false;
		r = proto_error_set(err, PROTO_E_INTERNAL, -a, NULL, "applying the routes of vm %s: %s", v->name, why);
	}
	/* Back to advisory, its routes recorded again. */
	b->counters.fallbacks[BROKER_LEASE_VM][BROKER_FALLBACK_ADVISORY]++;
	if (b->counters_hook)
		b->counters_hook(b->counters_hook_ud);
	int none = -1;
	struct proto_error again = {0};
	if (port_register(b, v, v->vmm_pid, &found, &none, "params.pid", &again) < 0) {
		/* Only a VMM that just left makes the port refuse it: the lease
		 * keeps its watch, whose wakeup releases it. */
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = v->name },
			  "vm %s: the kvm port refused it back without a route fd: %s", v->name, again.message);
		v->bound = false;
		return r;
	}
	declare_vcpu_cpus(b, v);
	if (apply_vm_routes(b, v, 2, why, sizeof(why)) < 0)
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = v->name },
			  "vm %s: recording its routes again: %s", v->name, why);
	return r;
}

int broker_vm_bind(struct broker *b, const struct broker_caller *c, const struct proto_vm_bind *q, int route_fd,
		   uint64_t *generation, struct proto_error *err)
{
	/* Ours whatever happens: closed on every way out but into the port.
	 * A number that is not open is no descriptor of ours to close later
	 * (by then it may be one vpmud opened). */
	bool closed = route_fd >= 0 && fcntl(route_fd, F_GETFD) < 0;
	_cleanup_close_ int fd = closed ? -1 : route_fd;
	int r = check_caller(b, c, PROTO_M_VM_BIND, err);
	if (r < 0)
		return r;
	if (q->route_fd && closed)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EBADF, "params.route_fd",
				       "params.route_fd: fd %d is not an open descriptor", route_fd);
	if (q->route_fd && fd < 0)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
				       "params.route_fd: true, and no descriptor came with the request");
	if (!q->route_fd && fd >= 0)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
				       "params.route_fd: a descriptor came with a request that does not claim it");
	struct broker_vm *v = find_vm(b, q->name);
	if (!v)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s", q->name);
	char ev[160];
	snprintf(ev, sizeof(ev), "vm.bind %s", q->name);
	if (v->bound) {
		if (v->vmm_pid != q->pid)
			return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.pid",
					       "vm %s is already bound to VMM pid %d", q->name, (int)v->vmm_pid);
		/* The hook may run twice (reconnect): same answer. A VM that
		 * has its route fd keeps it: KVM gives one per VM, so another
		 * descriptor is not this VM's (it is closed, and said so); one
		 * that has none takes it. */
		if (fd >= 0 && v->routed)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
					       "vm %s already holds its VM's route fd (KVM makes one per VM), so "
					       "this descriptor is not that VM's; it was closed, nothing changed",
					       q->name);
		if (fd >= 0 && !v->routed) {
			if ((r = take_route_fd(b, v, &fd, err)) < 0)
				return r;
			log_event(LOG_NOTICE, VPMU_MSG_NONE, &(struct log_fields){ .vm = q->name },
				  "vm %s: VMM pid %d handed its route fd: routes %s", q->name, (int)q->pid,
				  vm_routes_name(vm_routes(b, v, NULL)));
			emit_event(b, ev, false, &(struct touched){ .vm_changed = v->id }, NULL);
		}
		if (generation)
			*generation = arb_generation(b->arb);
		return 0;
	}
	r = register_vmm(b, v, q->pid, q->vm_fd, q->has_vm_fd, &fd, "params.pid", err);
	if (r < 0)
		return r;
	/* Durable first: the lease now names its VMM, and follows it rather
	 * than the connection it was made on. */
	if ((r = save_vm(b, v)) < 0) {
		unbind_vm(b, v);
		return save_error(b, r, err);
	}
	char why[BROKER_WHY];
	r = apply_vm_routes(b, v, 2, why, sizeof(why));
	if (r < 0) {
		/* Take back what reached the port before the VM leaves it, then
		 * save the lease unbound again. */
		char ignored[BROKER_WHY];
		apply_vm_routes(b, v, 1, ignored, sizeof(ignored));
		unbind_vm(b, v);
		if (save_vm(b, v) < 0)
			resync_later(b, STATE_VM, v->name);
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "applying the routes of vm %s: %s", v->name,
				       why);
	}
	v->conn = broker_conn_unref(v->conn);
	const char *routes_why;
	enum vm_routes routes = vm_routes(b, v, &routes_why);
	log_event(LOG_NOTICE, VPMU_MSG_NONE, &(struct log_fields){ .vm = q->name },
		  "vm %s bound to VMM pid %d (VM fd %d), routes %s (%s)", q->name, (int)q->pid, v->vm_fd,
		  vm_routes_name(routes), routes_why);
	/* Doors that mirror leases (D-Bus Owner) learn of it. */
	emit_event(b, ev, false, &(struct touched){ .vm_changed = v->id }, NULL);
	if (generation)
		*generation = arb_generation(b->arb);
	return 0;
}

/* ---------------------------------------------------------------- sessions */

static void session_free(struct broker_session *s)
{
	if (!s)
		return;
	owner_watch_free(s->watch);
	broker_conn_unref(s->conn);
	if (s->ps)
		perf_session_destroy(s->ps);
	for (uint32_t i = 0; s->spec.events && i < s->spec.n_events; i++)
		free(s->spec.events[i]);
	free(s->spec.events);
	free(s->events);
	free(s->arb_index);
	free(s->seen);
	free(s);
}

static int session_insert(struct broker *b, struct broker_session *s)
{
	if (session_list_add(b, s) < 0)
		return -ENOMEM;
	if (index_put(&b->session_names, s->spec.name, 0, s) < 0) {
		b->n_sessions--;
		return -ENOMEM;
	}
	if (index_put(&b->session_ids, NULL, s->id, s) < 0) {
		index_del(&b->session_names, s->spec.name, 0);
		b->n_sessions--;
		return -ENOMEM;
	}
	return 0;
}

static void session_unlist(struct broker *b, struct broker_session *s)
{
	index_del(&b->session_names, s->spec.name, 0);
	index_del(&b->session_ids, NULL, s->id);
	session_list_remove(b, s);
}

/* As vm_release: a request is refused whole when it cannot be saved. */
static int session_stop_internal(struct broker *b, struct broker_session *s, const char *reason,
				 bool refuse_unsaved)
{
	char why[BROKER_WHY], ev[160], name[PROTO_NAME_MAX + 1];
	uint64_t id = s->id;
	bool in_arb = s->n_hw > 0;
	snprintf(name, sizeof(name), "%s", s->spec.name);
	int saved = forget_file(b, STATE_SESSION, name);
	if (saved < 0 && refuse_unsaved)
		return saved;
	session_unlist(b, s);
	session_free(s);
	if (in_arb && arb_session_remove(b->arb, id) == 0 && apply_last(b, why, sizeof(why)) < 0)
		log_err("stopping session %s: %s", name, why);
	if (saved < 0)
		resync_later(b, STATE_SESSION, name);
	sync_sessions(b);
	snprintf(ev, sizeof(ev), "session stopped %s", name);
	/* Without hardware events the plan did not change: the arbiter's
	 * last transitions are another change's. */
	emit_event(b, ev, in_arb, &(struct touched){ .session_removed = id }, NULL);
	log_event(LOG_NOTICE, VPMU_MSG_RELEASED,
		  &(struct log_fields){ .session = name, .generation = in_arb ? arb_generation(b->arb) : 0 },
		  "session %s stopped: %s", name, reason);
	return 0;
}

static void on_session_owner_gone(struct owner_watch *w, void *userdata)
{
	struct broker_session *s = userdata;
	char reason[96];
	(void)w;
	snprintf(reason, sizeof(reason), "owner pid %d exited", (int)s->owner_pid);
	session_stop_internal(s->b, s, reason, false);
}

static int session_start(struct broker *b, const struct broker_caller *c, const struct proto_session_start *q,
			 uint64_t id, uint64_t owner_start, struct proto_error *err)
{
	int r = check_caller(b, c, PROTO_M_SESSION_START, err);
	if (r < 0)
		return r;
	if (find_session(b, q->name))
		return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.name", "session %s already exists",
				       q->name);
	if (q->n_events == 0 || q->n_events > PROTO_MAX_EVENTS || !q->events)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.events",
				       "params.events: 1..%d events", PROTO_MAX_EVENTS);
	if (q->count_guest && b->host_mediated)
		return proto_error_set(err, PROTO_E_REFUSED, EOPNOTSUPP, "params.count_guest",
				       "params.count_guest: not on the mediated vPMU: the kernel refuses a host hardware "
				       "event that counts guest time while a VM exists (EOPNOTSUPP), and one that exists "
				       "first makes every VM's first vCPU fail (EBUSY)");
	_cleanup_(session_freep) struct broker_session *s = calloc(1, sizeof(*s));
	if (!s)
		return oom(err);
	s->b = b;
	s->id = id;
	s->uid = c->uid;
	set_origin(s->origin, sizeof(s->origin), c);
	s->spec = *q;
	s->spec.n_events = 0;
	s->spec.events = calloc(q->n_events, sizeof(char *));
	s->events = calloc(q->n_events, sizeof(*s->events));
	s->arb_index = calloc(q->n_events, sizeof(int));
	s->seen = calloc(q->n_events, sizeof(*s->seen));
	s->owner_pid = q->owner_pid ? q->owner_pid : c->pid;
	s->started_usec = now_usec(CLOCK_REALTIME);
	if (!s->spec.events || !s->events || !s->arb_index || !s->seen)
		return oom(err);
	for (uint32_t i = 0; i < q->n_events; i++) {
		if (!(s->spec.events[i] = strdup(q->events[i] ? q->events[i] : "")))
			return oom(err);
		s->spec.n_events++;
	}
	s->conn = follow_conn(c, q->owner_pid != 0);

	/* Events: parse, and give the hardware ones their counter constraints. */
	_cleanup_free_ struct arb_event_spec *aev = calloc(q->n_events, sizeof(*aev));
	_cleanup_free_ uint64_t *set = calloc(ARB_CPUSET_WORDS(b->pmu.n_cpus), sizeof(uint64_t));
	if (!aev || !set)
		return oom(err);
	struct perf_event_opts popts = { .sysfs_root = b->sysfs_root };
	for (uint32_t i = 0; i < q->n_events; i++) {
		char msg[256], field[48];
		snprintf(field, sizeof(field), "params.events[%u]", i);
		r = perf_event_parse(s->spec.events[i], &popts, &s->events[i], msg, sizeof(msg));
		if (r < 0)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, -r, field, "%s: %s", field, msg);
		s->arb_index[i] = -1;
		if (!s->events[i].hardware)
			continue;
		uint32_t gp = (uint32_t)pmu_gp_bits(b->pmu.num_gp), fx = 0;
		if (s->events[i].has_evtsel)
			pmu_event_counters(&b->pmu, s->events[i].evtsel_config, &gp, &fx);
		aev[s->n_hw] = (struct arb_event_spec){ .name = s->spec.events[i], .gp_mask = gp, .fixed_mask = fx };
		s->arb_index[i] = (int)s->n_hw++;
	}
	if (s->spec.has_cpus) {
		r = to_cpuset(b, &s->spec.cpus, set, "params.cpus", err);
		if (r < 0)
			return r;
	} else {
		/* A task may run on any CPU: its events need room everywhere. */
		for (unsigned i = 0; i < b->pmu.n_cpus; i++)
			arb_cpuset_add(set, i);
	}
	/* The owner's start time goes with the lease, against pid reuse
	 * across a restart (and a restored lease's owner must be the same
	 * process as before). */
	uint64_t st = 0;
	if (s->owner_pid <= 0 || owner_start_time(s->owner_pid, &st) < 0)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, "params.owner_pid", "session owner pid %d: %s",
				       (int)s->owner_pid, strerror(s->owner_pid <= 0 ? EINVAL : ESRCH));
	if (owner_start && st != owner_start)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, "params.owner_pid",
				       "session owner pid %d is a different process now", (int)s->owner_pid);
	s->owner_start = st;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (!b->restoring) {
		r = session_lease_text(s, &text, &len);
		r = r < 0 ? oom(err) : check_reloads(STATE_SESSION, s->spec.name, text, len, err);
		if (r < 0)
			return r;
	}
	char why[BROKER_WHY];
	if (s->n_hw) {
		struct arb_session_spec as = { .id = s->id, .name = s->spec.name, .priority = (int)q->priority,
					       .cls = arb_class_of(q->cls), .cpus = set, .n_events = s->n_hw,
					       .events = aev };
		r = arb_session_add(b->arb, &as, why, sizeof(why));
		if (r < 0) {
			if (r == -EBUSY)
				log_event(LOG_WARNING, VPMU_MSG_REFUSED,
					  &(struct log_fields){ .session = s->spec.name, .has_uid = true, .uid = s->uid,
								.via = broker_door_name(c->door), .origin = s->origin },
					  "session %s refused: %s", s->spec.name, why);
			s->n_hw = 0; /* not in the arbiter */
			if (r == -EBUSY)
				count_refusal(b, BROKER_LEASE_SESSION, q->cls);
			return proto_error_set(err, r == -EBUSY ? PROTO_E_REFUSED : PROTO_E_INVALID_PARAM, -r, NULL,
					       "%s", why);
		}
	}
	/* From here on, a failure takes the session out of the arbiter: the
	 * port never saw it, so nothing is scrubbed for a refused request. */

	/* Counting: each event opened on the placement the plan gives it. */
	struct perf_session_opts so = { .cpus = s->spec.has_cpus ? &s->spec.cpus : NULL,
					.pid = s->spec.has_cpus ? 0 : s->spec.pid,
					.model_pmu = b->pmu.source == PMU_SOURCE_BUILTIN ||
						     b->pmu.source == PMU_SOURCE_FILE,
					.sysfs_root = b->sysfs_root,
					.exclude_guest = b->host_mediated,
					.open = b->perf_open,
					.open_ctx = b->perf_open_ctx };
	char msg[512];
	r = perf_session_create(&so, &s->ps, msg, sizeof(msg));
	if (r < 0) {
		r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, NULL, "%s", msg);
		goto out_arb;
	}
	for (uint32_t i = 0; i < q->n_events; i++) {
		enum perf_session_placement p = PERF_SESSION_DEDICATED;
		unsigned group = 0;
		if (s->arb_index[i] >= 0) {
			struct arb_event_grant g;
			arb_session_event(b->arb, s->id, (unsigned)s->arb_index[i], &g);
			p = g.dedicated ? PERF_SESSION_DEDICATED : PERF_SESSION_MULTIPLEXED;
			/* Dedicated hardware events always fit together: one group,
			 * one read. Multiplexed ones rotate on their own. */
			group = g.dedicated ? 1 : 0;
		}
		r = perf_session_add_event(s->ps, &s->events[i], p, group);
		if (r < 0) {
			r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, "params.events", "params.events[%u] %s: %s", i,
					    s->spec.events[i], perf_session_error(s->ps));
			goto out_arb;
		}
	}
	r = perf_session_open(s->ps);
	if (r < 0) {
		r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, "params.events", "%s", perf_session_error(s->ps));
		goto out_arb;
	}
	r = owner_watch_new(b->event, s->owner_pid, -1, on_session_owner_gone, s, &s->watch);
	if (r < 0) {
		r = proto_error_set(err, r == -ESRCH ? PROTO_E_NOT_FOUND : PROTO_E_INTERNAL, -r, "params.owner_pid",
				    "session owner pid %d: %s", (int)s->owner_pid, strerror(-r));
		goto out_arb;
	}
	if (session_insert(b, s) < 0) {
		r = oom(err);
		goto out_arb;
	}
	if (!b->restoring && (r = put_text(b, STATE_SESSION, s->spec.name, text, len)) < 0) {
		session_unlist(b, s);
		r = save_error(b, r, err);
		goto out_arb;
	}
	char reason[128];
	snprintf(reason, sizeof(reason), "session.start %s", q->name);
	if (s->n_hw && (r = apply_change(b, reason, &(struct touched){ .session_added = s->id }, err)) < 0) {
		/* Saved, then the port failed: follow the undo back and take the
		 * lease off the disk again. */
		session_unlist(b, s);
		arb_session_remove(b->arb, s->id);
		s->n_hw = 0;
		follow_undo(b, reason);
		if (!b->restoring && forget_file(b, STATE_SESSION, s->spec.name) < 0)
			resync_later(b, STATE_SESSION, s->spec.name);
		return r;
	}
	/* Software events only: the plan is as it was, the session is new. */
	if (!s->n_hw)
		emit_event(b, reason, false, &(struct touched){ .session_added = s->id }, NULL);
	{
		_cleanup_free_ char *cpus_text = s->spec.has_cpus ? cpulist_to_text(&s->spec.cpus) : NULL;
		/* A replayed lease is not a new admission: restore_one says "restored". */
		log_event(LOG_NOTICE, b->restoring ? VPMU_MSG_NONE : VPMU_MSG_ADMITTED,
			  &(struct log_fields){ .session = q->name, .has_uid = true, .uid = s->uid,
						.generation = s->n_hw ? arb_generation(b->arb) : 0,
						.origin = b->restoring ? "restore" : s->origin },
			  "session %s started: %u events (%u on hardware counters), %s%s, owner pid %d", q->name,
			  q->n_events, s->n_hw, s->spec.has_cpus ? "cpus " : "pid ", cpus_text ? cpus_text : "",
			  (int)s->owner_pid);
	}
	count_session_fallback(b, s);
	for (uint32_t i = 0; i < q->n_events; i++) {
		struct broker_event_view ev;
		if (broker_session_event(b, s->id, i, &ev) == 0 && ev.reason[0])
			log_event(LOG_INFO, VPMU_MSG_NONE, &(struct log_fields){ .session = q->name },
				  "session %s: %s %s", q->name, s->spec.events[i], ev.reason);
	}
	TAKE_PTR(s);
	return 0;

out_arb:
	if (s->n_hw)
		arb_session_remove(b->arb, s->id);
	s->n_hw = 0;
	return r;
}

int broker_session_start(struct broker *b, const struct broker_caller *c, const struct proto_session_start *q,
			 uint64_t *generation, struct proto_error *err)
{
	int r = session_start(b, c, q, b->next_id, 0, err);
	if (r < 0)
		return r;
	b->next_id++;
	if (generation)
		*generation = arb_generation(b->arb);
	return 0;
}

/* Every caller sees another user's session by name (session.list, plan),
 * so a refusal says what this door requires rather than hiding it. */
static int session_for(struct broker *b, const struct broker_caller *c, const char *name, enum proto_method m,
		       struct broker_session **out, struct proto_error *err)
{
	int r = check_caller(b, c, m, err);
	if (r < 0)
		return r;
	struct broker_session *s = find_session(b, name);
	if (!s)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no session named %s", name);
	if ((r = broker_authorize(b, c, m, s->uid, err)) < 0)
		return r;
	*out = s;
	return 0;
}

int broker_session_stop(struct broker *b, const struct broker_caller *c, const char *name, uint64_t *generation,
			struct proto_error *err)
{
	struct broker_session *s = NULL;
	int r = session_for(b, c, name, PROTO_M_SESSION_STOP, &s, err);
	if (r < 0)
		return r;
	char reason[96];
	snprintf(reason, sizeof(reason), "stopped by uid %u", (unsigned)c->uid);
	r = session_stop_internal(b, s, reason, true);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL,
				       "could not save the state to %s: %s; session %s keeps running",
				       state_dir(b->state), strerror(-r), name);
	if (generation)
		*generation = arb_generation(b->arb);
	return 0;
}

#define BROKER_MODEL_NOTE \
	"the PMU is a model (simulated): hardware events are placed by the plan but nothing is counted for them"
#define BROKER_HOST_TIME_NOTE \
	"mediated vPMU: hardware events count host time only (exclude_guest): guest time is not counted"
#define BROKER_MODEL_HOST_TIME_NOTE \
	BROKER_MODEL_NOTE "; on this mediated vPMU they would count host time only (exclude_guest)"

/* What a session's numbers do not hold, the same for every session. */
static const char *session_note(const struct broker *b)
{
	bool model = b->pmu.source != PMU_SOURCE_HOST, mediated = b->host_mediated;
	return model && mediated ? BROKER_MODEL_HOST_TIME_NOTE
	       : model		 ? BROKER_MODEL_NOTE
	       : mediated	 ? BROKER_HOST_TIME_NOTE
				 : NULL;
}

int broker_session_read(struct broker *b, const struct broker_caller *c, const char *name,
			struct broker_reading **out, struct proto_error *err)
{
	struct broker_session *s = NULL;
	int r = session_for(b, c, name, PROTO_M_SESSION_READ, &s, err);
	if (r < 0)
		return r;
	uint32_t n = s->spec.n_events;
	_cleanup_free_ struct perf_session_reading *rd = calloc(n, sizeof(*rd));
	if (!rd)
		return oom(err);
	r = perf_session_read(s->ps, rd, n);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "reading session %s: %s", name,
				       perf_session_error(s->ps));
	/* One block: the reading, its events, then the event names, so that
	 * it outlives the session it was read from. */
	size_t pool = 0;
	for (uint32_t i = 0; i < n; i++)
		pool += strlen(s->spec.events[i]) + 1;
	struct broker_reading *rdg = calloc(1, sizeof(*rdg) + n * sizeof(struct broker_event_reading) + pool);
	if (!rdg)
		return oom(err);
	rdg->events = (struct broker_event_reading *)(rdg + 1);
	char *names = (char *)(rdg->events + n);
	snprintf(rdg->name, sizeof(rdg->name), "%s", name);
	rdg->since_usec = s->started_usec;
	rdg->read_usec = now_usec(CLOCK_REALTIME);
	rdg->note = session_note(b);
	rdg->n_events = n;
	for (uint32_t i = 0; i < n; i++) {
		struct broker_event_reading *e = &rdg->events[i];
		size_t l = strlen(s->spec.events[i]) + 1;
		memcpy(names, s->spec.events[i], l);
		e->event = names;
		names += l;
		e->placement = s->arb_index[i] < 0 ? BROKER_PLACEMENT_SOFTWARE
			       : rd[i].placement == PERF_SESSION_DEDICATED ? BROKER_PLACEMENT_DEDICATED
									   : BROKER_PLACEMENT_MULTIPLEXED;
		e->counted = rd[i].status == PERF_SESSION_COUNTED;
		/* perf_session's reasons are static strings */
		e->reason = e->counted ? NULL : rd[i].reason ? rd[i].reason : "not counted";
		e->value = rd[i].value;
		e->time_enabled = rd[i].time_enabled;
		e->time_running = rd[i].time_running;
		e->scaled = rd[i].scaled;
		e->multiplexed = rd[i].multiplexed;
		e->never_ran = rd[i].never_ran;
	}
	*out = rdg;
	return 0;
}

void broker_reading_free(struct broker_reading *r)
{
	free(r);
}

/* ------------------------------------------------------------- connections */

void broker_conn_close(struct broker_conn *conn, const char *reason)
{
	if (!conn || conn->closed)
		return;
	conn->closed = true;
	struct broker *b = conn->b;
	if (!conn->leases_follow)
		return;
	const char *why = reason && reason[0] ? reason : "its connection closed";
	/* Releasing changes the lists: collect first. */
	size_t n = 0;
	for (size_t i = 0; i < b->n_vms; i++)
		n += b->vms[i]->conn == conn;
	for (size_t i = 0; i < b->n_sessions; i++)
		n += b->sessions[i]->conn == conn;
	if (n == 0)
		return;
	_cleanup_free_ uint64_t *ids = calloc(n, sizeof(*ids));
	_cleanup_free_ bool *is_vm = calloc(n, sizeof(*is_vm));
	if (!ids || !is_vm) {
		log_err("out of memory: the leases of a closed connection stay until detached (%s)", why);
		return;
	}
	size_t k = 0;
	for (size_t i = 0; i < b->n_sessions; i++)
		if (b->sessions[i]->conn == conn)
			ids[k++] = b->sessions[i]->id;
	for (size_t i = 0; i < b->n_vms; i++)
		if (b->vms[i]->conn == conn) {
			is_vm[k] = true;
			ids[k++] = b->vms[i]->id;
		}
	for (size_t i = 0; i < k; i++) {
		if (is_vm[i]) {
			struct broker_vm *v = vm_by_id(b, ids[i]);
			if (v && v->conn == conn && !v->bound)
				vm_release(b, v, why, false);
		} else {
			struct broker_session *s = session_by_id(b, ids[i]);
			if (s && s->conn == conn)
				session_stop_internal(b, s, why, false);
		}
	}
}

/* ------------------------------------------------------------------ views */

/* What the guest reservation is planned as (broker_status.reservation). */
static const char *reservation_name(const struct broker *b)
{
	if (b->flavour == BROKER_FLAVOUR_MEDIATED || b->flavour == BROKER_FLAVOUR_NONE)
		return "none";
	return arb_partition_name(arb_partition(b->arb));
}

void broker_status(const struct broker *b, struct broker_status *out)
{
	*out = (struct broker_status){
		.server = "vpmud/" VPMU_VERSION,
		.protocol = PROTO_VERSION,
		.pmu_model = b->pmu.model,
		.pmu_source = pmu_source_name(b->pmu.source),
		.pmu_simulated = b->pmu.source != PMU_SOURCE_HOST,
		.pmu_why = b->pmu_note[0] ? b->pmu_note : NULL,
		.kvm_backend = kvm_port_backend_name(kvm_port_backend(b->port)),
		.kvm_enforced = routes_enforced(b),
		.kvm_why = b->kvm_note[0] ? b->kvm_note : kvm_port_why(b->port),
		.kvm_host = b->kvm_host_summary[0] ? b->kvm_host_summary : NULL,
		.flavour = broker_flavour_name(b->flavour),
		.routes = broker_routes_kind(b),
		.flavour_effect = flavour_effect(b->flavour),
		.reservation = reservation_name(b),
		.generation = arb_generation(b->arb),
		.cpus = b->pmu.n_cpus,
		.vms = b->n_vms,
		.sessions = b->n_sessions,
		.watchers = b->n_subs,
		.uptime_s = (now_usec(CLOCK_MONOTONIC) - b->started_usec) / 1000000,
	};
	size_t by_kind[3] = {0};
	for (size_t i = 0; i < b->n_vms; i++)
		by_kind[vm_routes(b, b->vms[i], NULL)]++;
	out->vms_enforced = by_kind[VM_ROUTES_ENFORCED];
	out->vms_simulated = by_kind[VM_ROUTES_SIMULATED];
	out->vms_advisory = by_kind[VM_ROUTES_ADVISORY];
	size_t w = 0;
	if (b->host_mediated) {
		if (b->nmi_watchdog_perf)
			out->warnings[w++] = WARN_NMI_WATCHDOG;
		out->warnings[w++] = WARN_NO_IRQCHIP;
	}
	out->warnings[w] = NULL;
}

void broker_pmu(const struct broker *b, struct broker_pmu_view *out)
{
	const struct pmu_desc *p = &b->pmu;
	*out = (struct broker_pmu_view){
		.source = pmu_source_name(p->source),
		.simulated = p->source != PMU_SOURCE_HOST,
		.model = p->model,
		.vendor = pmu_vendor_name(p->vendor),
		.version = p->version,
		.gp = p->num_gp,
		.gp_width = p->gp_width,
		.fixed_mask = p->fixed_mask,
		.fixed = pmu_num_fixed(p),
		.fixed_width = p->fixed_width,
		.perf_metrics = p->perf_metrics,
		.pebs_format = p->pebs_format,
		.global_ctrl_mask = pmu_global_ctrl_mask(p),
		.cpus = p->n_cpus,
		.boot_block = b->pmu_boot_block,
		.nmi_watchdog = p->nmi_watchdog,
	};
}

static void vm_view(const struct broker *b, const struct broker_vm *v, struct broker_vm_view *out)
{
	*out = (struct broker_vm_view){
		.id = v->id,
		.name = v->name,
		.priority = v->priority,
		.cls = v->cls,
		.gp = v->gp,
		.fixed_mask = v->fixed_mask,
		.origin = v->origin,
		.uid = v->uid,
		.follows_connection = v->conn && !v->bound,
		.bound = v->bound,
		.vmm_pid = v->bound ? v->vmm_pid : 0,
		.vm_fd = v->bound ? v->vm_fd : -1,
		.n_vcpus = v->n_vcpus,
	};
	out->routes = vm_routes_name(vm_routes(b, v, &out->routes_why));
	vcpu_grants(b, v, out->vcpus_by_route);
	out->passthrough_vcpus = out->vcpus_by_route[BROKER_ROUTE_PASSTHROUGH];
}

size_t broker_vm_count(const struct broker *b)
{
	return b->n_vms;
}

void broker_vm_at(const struct broker *b, size_t i, struct broker_vm_view *out)
{
	vm_view(b, b->vms[i], out);
}

int broker_vm_find(const struct broker *b, const char *name, struct broker_vm_view *out)
{
	const struct broker_vm *v = find_vm(b, name);
	if (!v)
		return -ENOENT;
	if (out)
		vm_view(b, v, out);
	return 0;
}

int broker_vm_find_id(const struct broker *b, uint64_t id, struct broker_vm_view *out)
{
	const struct broker_vm *v = vm_by_id(b, id);
	if (!v)
		return -ENOENT;
	if (out)
		vm_view(b, v, out);
	return 0;
}

int broker_vm_vcpu(const struct broker *b, uint64_t vm_id, uint32_t vcpu, struct broker_vcpu_view *out)
{
	const struct broker_vm *v = vm_by_id(b, vm_id);
	if (!v || vcpu >= v->n_vcpus)
		return -ENOENT;
	*out = (struct broker_vcpu_view){ .vcpu = vcpu, .cpus = v->vcpus[vcpu], .n_gp = b->pmu.num_gp,
					  .pmu_fixed_mask = b->pmu.fixed_mask };
	return vcpu_routes(b, v, vcpu, out->gp, out->fixed);
}

static void guest_view(const struct broker *b, uint32_t gp, uint32_t fixed_mask, struct broker_guest_view *out)
{
	struct pmu_guest_shape shape;
	struct pmu_cpuid_regs regs;
	*out = (struct broker_guest_view){0};
	if (b->flavour == BROKER_FLAVOUR_NONE) {
		snprintf(out->error, sizeof(out->error),
			 "no PMU: this host's KVM gives guests none (vPMU flavour none), whatever the lease asks");
		return;
	}
	pmu_guest_default_shape(&b->pmu, &shape);
	shape.num_gp = gp;
	shape.fixed_mask = fixed_mask;
	if (pmu_guest_cpuid(&b->pmu, &shape, &regs, out->error, sizeof(out->error)) < 0)
		return;
	out->ok = true;
	out->version = shape.version;
	out->eax = regs.eax;
	out->ebx = regs.ebx;
	out->ecx = regs.ecx;
	out->edx = regs.edx;
	_cleanup_free_ struct pmu_desc *gd = malloc(sizeof(*gd));
	if (gd && pmu_guest_desc(&b->pmu, &regs, gd) == 0)
		pmu_format_boot_block(gd, out->boot_block, sizeof(out->boot_block));
}

int broker_vm_guest(const struct broker *b, uint64_t vm_id, struct broker_guest_view *out)
{
	const struct broker_vm *v = vm_by_id(b, vm_id);
	if (!v)
		return -ENOENT;
	/* The guest's PMU depends on its shape alone: VMs of one shape share
	 * the computation (it builds a whole PMU description). */
	for (unsigned i = 0; i < GUEST_CACHE; i++) {
		const struct guest_cache_entry *e = &b->guest_cache[i];
		if (e->valid && e->gp == v->gp && e->fixed_mask == v->fixed_mask) {
			*out = e->view;
			return 0;
		}
	}
	struct guest_cache_entry *e = &b->guest_cache[*b->guest_next % GUEST_CACHE];
	(*b->guest_next)++;
	guest_view(b, v->gp, v->fixed_mask, &e->view);
	e->gp = v->gp;
	e->fixed_mask = v->fixed_mask;
	e->valid = true;
	*out = e->view;
	return 0;
}

static bool cpulist_meets(const struct cpulist *a, const struct cpulist *b)
{
	for (unsigned w = 0; w < CPULIST_WORDS; w++)
		if (a->bits[w] & b->bits[w])
			return true;
	return false;
}

bool broker_vm_on_cpus(const struct broker *b, uint64_t vm_id, const struct cpulist *cpus)
{
	const struct broker_vm *v = vm_by_id(b, vm_id);
	for (uint32_t i = 0; v && i < v->n_vcpus; i++)
		if (cpulist_meets(v->vcpus[i], cpus))
			return true;
	return false;
}

int broker_vm_names(const struct broker *b, const char *origin, char ***names)
{
	_cleanup_strv_free_ char **out = calloc(b->n_vms + 1, sizeof(*out));
	size_t k = 0;
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_vms; i++) {
		if (origin && strcmp(origin, b->vms[i]->origin))
			continue;
		if (!(out[k] = strdup(b->vms[i]->name)))
			return -ENOMEM;
		k++;
	}
	*names = TAKE_PTR(out);
	return (int)k;
}

static void session_view(const struct broker_session *s, struct broker_session_view *out)
{
	*out = (struct broker_session_view){
		.id = s->id,
		.name = s->spec.name,
		.priority = s->spec.priority,
		.cls = s->spec.cls,
		.n_events = s->spec.n_events,
		.has_cpus = s->spec.has_cpus,
		.cpus = s->spec.has_cpus ? &s->spec.cpus : NULL,
		.pid = s->spec.has_cpus ? 0 : s->spec.pid,
		.owner_pid = s->owner_pid,
		.uid = s->uid,
		.origin = s->origin,
		.follows_connection = s->conn != NULL,
		.started_usec = s->started_usec,
		.note = session_note(s->b),
	};
}

size_t broker_session_count(const struct broker *b)
{
	return b->n_sessions;
}

void broker_session_at(const struct broker *b, size_t i, struct broker_session_view *out)
{
	session_view(b->sessions[i], out);
}

int broker_session_find(const struct broker *b, const char *name, struct broker_session_view *out)
{
	const struct broker_session *s = find_session(b, name);
	if (!s)
		return -ENOENT;
	if (out)
		session_view(s, out);
	return 0;
}

int broker_session_find_id(const struct broker *b, uint64_t id, struct broker_session_view *out)
{
	const struct broker_session *s = session_by_id(b, id);
	if (!s)
		return -ENOENT;
	if (out)
		session_view(s, out);
	return 0;
}

int broker_session_event(const struct broker *b, uint64_t session_id, uint32_t e, struct broker_event_view *out)
{
	const struct broker_session *s = session_by_id(b, session_id);
	if (!s || e >= s->spec.n_events)
		return -ENOENT;
	*out = (struct broker_event_view){ .event = s->spec.events[e], .placement = BROKER_PLACEMENT_SOFTWARE,
					   .share = 1.0 };
	if (s->arb_index[e] < 0)
		return 0;
	struct arb_event_grant g = {0};
	arb_session_event(b->arb, s->id, (unsigned)s->arb_index[e], &g);
	out->placement = g.dedicated ? BROKER_PLACEMENT_DEDICATED : BROKER_PLACEMENT_MULTIPLEXED;
	out->share = g.share;
	out->dedicated_cpus = g.n_dedicated;
	if (arb_session_event_why(b->arb, s->id, (unsigned)s->arb_index[e], out->reason, sizeof(out->reason)) <= 0)
		out->reason[0] = '\0';
	return 0;
}

bool broker_session_on_cpus(const struct broker *b, uint64_t session_id, const struct cpulist *cpus)
{
	const struct broker_session *s = session_by_id(b, session_id);
	if (!s)
		return false;
	/* A task's events may run anywhere: they need room on every CPU. */
	return !s->spec.has_cpus || cpulist_meets(&s->spec.cpus, cpus);
}

unsigned broker_cpu_count(const struct broker *b)
{
	return b->pmu.n_cpus;
}

int broker_cpu_at(const struct broker *b, unsigned i, struct broker_cpu_view *out)
{
	struct arb_cpu_view cv;
	int r = arb_cpu_plan(b->arb, i, &cv);
	if (r < 0)
		return r;
	/* The scratch is the broker's, written behind a pointer: this is a
	 * view, valid until the next call. */
	struct broker *mb = (struct broker *)b;
	if (cv.n_placements > mb->cap_host) {
		size_t cap = cv.n_placements * 2;
		struct broker_host_placement *h = realloc(mb->host, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		mb->host = h;
		mb->cap_host = cap;
	}
	for (unsigned k = 0; k < cv.n_placements; k++) {
		const struct arb_placement *p = &cv.placements[k];
		struct broker_host_placement *h = &mb->host[k];
		if (p->holder == ARB_HOLDER_FOREIGN) {
			/* The only foreign user we know of counts core cycles. */
			*h = (struct broker_host_placement){ .holder = BROKER_HOLDER_FOREIGN,
							     .holder_name = b->foreign[p->id].name, .event = "cycles",
							     .counter = p->counter, .share = p->share,
							     .owner_uid = (uid_t)-1 };
		} else {
			const struct broker_session *s = session_by_id(b, p->id);
			*h = (struct broker_host_placement){ .holder = BROKER_HOLDER_SESSION,
							     .holder_name = s ? s->spec.name : "?", .session_id = p->id,
							     .event = p->name ? p->name : "?", .counter = p->counter,
							     .share = p->share, .owner_uid = s ? s->uid : (uid_t)-1 };
		}
	}
	*out = (struct broker_cpu_view){ .cpu = cv.cpu, .guest_gp_mask = cv.guest_gp_mask,
					 .guest_fixed_mask = cv.guest_fixed_mask, .n_host = cv.n_placements,
					 .host = mb->host };
	return 0;
}

uint64_t broker_generation(const struct broker *b)
{
	return arb_generation(b->arb);
}

/* snprintf at *at of buf[len], *at kept within the buffer. */
static __attribute__((format(printf, 4, 5))) void put_at(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	if (*at >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	*at = n < 0 ? len : *at + (size_t)n;
}

void broker_summary(const struct broker *b, char *buf, size_t len)
{
	size_t by_kind[3] = {0}, at = 0;
	if (!len)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < b->n_vms; i++)
		by_kind[vm_routes(b, b->vms[i], NULL)]++;
	put_at(buf, len, &at, "%zu VMs", b->n_vms);
	if (b->n_vms)
		put_at(buf, len, &at, " (%zu enforced, %zu simulated, %zu advisory)", by_kind[VM_ROUTES_ENFORCED],
		       by_kind[VM_ROUTES_SIMULATED], by_kind[VM_ROUTES_ADVISORY]);
	put_at(buf, len, &at, ", %zu sessions, plan generation %" PRIu64 "; PMU %s%s, KVM %s, vPMU %s%s",
	       b->n_sessions, arb_generation(b->arb), b->pmu.model, b->pmu.source == PMU_SOURCE_HOST ? "" : " (simulated)",
	       kvm_port_backend_name(kvm_port_backend(b->port)), broker_flavour_name(b->flavour),
	       routes_enforced(b) ? ""
	       : kvm_port_backend(b->port) == KVM_BACKEND_MODEL ? " (simulated: routes go to the model)"
								: " (routes advisory, not enforced)");
	if (port_takes_plan(b))
		put_at(buf, len, &at, ", reservation %s", reservation_name(b));
	if (!by_kind[VM_ROUTES_ADVISORY] || !port_takes_plan(b))
		return;
	/* Which VMs nothing enforces, as many as the line holds; room is
	 * kept for saying how many more. */
	const size_t more_room = sizeof(" and 18446744073709551615 more");
	size_t listed = 0;
	if (at + sizeof("; advisory:") + more_room > len)
		return;
	put_at(buf, len, &at, "; advisory:");
	for (size_t i = 0; i < b->n_vms && at < len; i++) {
		const struct broker_vm *v = b->vms[i];
		if (vm_routes(b, v, NULL) != VM_ROUTES_ADVISORY)
			continue;
		if (at + strlen(v->name) + 2 + more_room > len)
			break;
		put_at(buf, len, &at, "%s %s", listed ? "," : "", v->name);
		listed++;
	}
	if (listed < by_kind[VM_ROUTES_ADVISORY])
		put_at(buf, len, &at, " and %zu more", by_kind[VM_ROUTES_ADVISORY] - listed);
}

/* ---------------------------------------------------------------- life */

int broker_new(const struct broker_opts *o, struct broker **out, struct proto_error *err)
{
	_cleanup_(broker_freep) struct broker *b = calloc(1, sizeof(*b));
	if (!b)
		return oom(err);
	b->event = o->event;
	b->cfg = o->cfg;
	b->admin_gid = calloc(1, sizeof(*b->admin_gid));
	b->pmu = *o->pmu;
	b->port = o->port;
	b->flavour = o->flavour;
	b->nmi_watchdog_perf = o->nmi_watchdog_perf;
	b->host_mediated = o->host_mediated || o->flavour == BROKER_FLAVOUR_MEDIATED;
	b->perf_open = o->perf_open;
	b->perf_open_ctx = o->perf_open_ctx;
	/* The extension's routes need its port; a stock kernel's flavour has
	 * no port to take them, and an advisory one only records. */
	enum kvm_backend kb = kvm_port_backend(o->port);
	bool ext_port = kb == KVM_BACKEND_IOCTL || kb == KVM_BACKEND_MODEL;
	if ((unsigned)o->flavour >= BROKER_FLAVOUR__COUNT || (o->flavour == BROKER_FLAVOUR_EXTENSION) != ext_port)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL,
				       "vPMU flavour %s cannot go with the %s kvm backend (the extension needs ioctl or "
				       "model, a stock kernel's flavour advisory)",
				       broker_flavour_name(o->flavour), kvm_port_backend_name(kb));
	b->next_id = 1;
	b->started_usec = now_usec(CLOCK_MONOTONIC);
	b->vm_names.by_name = b->session_names.by_name = true;
	b->pmu_note = strdup_or_empty(o->pmu_note);
	b->kvm_host_summary = strdup_or_empty(o->kvm_host_summary);
	b->kvm_note = strdup_or_empty(o->kvm_note);
	b->sysfs_root = o->sysfs_root ? strdup(o->sysfs_root) : NULL;
	b->guest_cache = calloc(GUEST_CACHE, sizeof(*b->guest_cache));
	b->guest_next = calloc(1, sizeof(*b->guest_next));
	if (!b->pmu_note || !b->kvm_host_summary || !b->kvm_note || (o->sysfs_root && !b->sysfs_root) ||
	    !b->guest_cache || !b->guest_next)
		return oom(err);
	if (b->pmu.n_cpus == 0)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "the PMU description lists no CPUs");
	char block[1024];
	pmu_format_boot_block(&b->pmu, block, sizeof(block));
	if (!(b->pmu_boot_block = strdup(block)))
		return oom(err);
	for (unsigned i = 0; i < PMU_MAX_CPUS; i++)
		b->cpu_index[i] = -1;
	for (unsigned i = 0; i < b->pmu.n_cpus; i++) {
		b->cpu_ids[i] = b->pmu.cpus[i].cpu;
		b->cpu_index[b->pmu.cpus[i].cpu] = (int)i;
	}
	if (b->pmu.nmi_watchdog) {
		uint32_t gp = (uint32_t)pmu_gp_bits(b->pmu.num_gp), fx = 0;
		/* The watchdog counts core cycles: Intel 0x3c, AMD 0x76. */
		pmu_event_counters(&b->pmu, b->pmu.vendor == PMU_VENDOR_AMD ? 0x76 : 0x3c, &gp, &fx);
		b->foreign[0] = (struct arb_foreign){ .name = "nmi_watchdog", .cpu = -1, .gp_mask = gp, .fixed_mask = fx };
		b->n_foreign = 1;
	}
	/* What a VM claims: the extension's identity partition, room for
	 * perf's task-pinned guest events, or nothing where the kernel gives
	 * guests the whole PMU at VM entry (mediated) or no PMU at all. */
	static const enum arb_guest_mode modes[BROKER_FLAVOUR__COUNT] = {
		[BROKER_FLAVOUR_EXTENSION] = ARB_GUEST_IDENTITY,
		[BROKER_FLAVOUR_PERF] = ARB_GUEST_PERF_PINNED,
		[BROKER_FLAVOUR_MEDIATED] = ARB_GUEST_NONE,
		[BROKER_FLAVOUR_NONE] = ARB_GUEST_NONE,
	};
	struct arb_inventory inv = { .n_cpus = b->pmu.n_cpus, .cpu_ids = b->cpu_ids, .num_gp = b->pmu.num_gp,
				     .fixed_mask = b->pmu.fixed_mask, .foreign = b->foreign,
				     .n_foreign = b->n_foreign, .guest_mode = modes[b->flavour] };
	/* The reservation is perf's: a kernel that takes one mask for every
	 * CPU gets a plan with one (docs/arbiter.md, "Uniform partition"). */
	if (b->flavour == BROKER_FLAVOUR_EXTENSION && !(kvm_port_reserve_caps(b->port) & VPMU_RESERVE_CAP_PER_CPU))
		inv.partition = ARB_PARTITION_UNIFORM;
	int r = arb_create(&inv, &b->arb);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "the arbiter refused the inventory: %s",
				       strerror(-r));
	char why[1024];
	r = state_open(o->state_dir, &b->state, why, sizeof(why));
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "state: %s", why);
	if (why[0])
		log_notice("state: %s", why);
	*out = TAKE_PTR(b);
	return 0;
}

struct broker *broker_free(struct broker *b)
{
	if (!b)
		return NULL;
	/* A file that still lags gets one last try; leases stay on disk
	 * otherwise: a stop is not a release. */
	if (b->n_resync && b->resync_timer)
		on_resync(b->resync_timer, 0, b);
	while (b->n_sessions) {
		struct broker_session *s = b->sessions[b->n_sessions - 1];
		session_unlist(b, s);
		session_free(s);
	}
	while (b->n_vms) {
		struct broker_vm *v = b->vms[b->n_vms - 1];
		if (v->bound)
			kvm_port_unregister_vm(b->port, v->id);
		vm_unlist(b, v);
		vm_free(v);
	}
	sd_event_source_disable_unref(b->resync_timer);
	free(b->resync);
	free(b->vms);
	free(b->sessions);
	free(b->vm_names.slots);
	free(b->vm_ids.slots);
	free(b->session_names.slots);
	free(b->session_ids.slots);
	free(b->cpus.buckets); /* every entry went with its last lease */
	free(b->subs);
	free(b->changes);
	free(b->sessions_regranted.v);
	free(b->ev_vms_changed.v);
	free(b->ev_sessions_changed.v);
	free(b->host);
	free(b->guest_cache);
	free(b->guest_next);
	arb_destroy(b->arb);
	state_close(b->state);
	free(b->admin_gid);
	free(b->pmu_note);
	free(b->kvm_host_summary);
	free(b->kvm_note);
	free(b->pmu_boot_block);
	free(b->sysfs_root);
	free(b);
	return NULL;
}

/* ---------------------------------------------------------------- restore */

struct restore {
	struct broker *b;
	struct lease_rec *recs;
	size_t n, cap;
	/* invalid texts, moved aside once the load is done */
	struct { enum state_kind kind; char name[PROTO_NAME_MAX + 1]; char why[LEASE_WHY]; } *bad;
	size_t n_bad, cap_bad;
};

static int on_load_lease(enum state_kind kind, const char *name, const char *text, size_t len, void *userdata)
{
	struct restore *rs = userdata;
	struct lease_rec *recs = grow(rs->recs, &rs->cap, rs->n, sizeof(*recs));
	if (!recs)
		return -ENOMEM;
	rs->recs = recs;
	char why[LEASE_WHY];
	int r = lease_parse(kind, name, text, len, &rs->recs[rs->n], why, sizeof(why), NULL);
	if (r == -ENOMEM)
		return r;
	if (r == 0) {
		rs->n++;
		return 0;
	}
	void *bad = grow(rs->bad, &rs->cap_bad, rs->n_bad, sizeof(*rs->bad));
	if (!bad)
		return -ENOMEM;
	rs->bad = bad;
	rs->bad[rs->n_bad].kind = kind;
	snprintf(rs->bad[rs->n_bad].name, sizeof(rs->bad[0].name), "%s", name);
	snprintf(rs->bad[rs->n_bad].why, sizeof(rs->bad[0].why), "%s", why);
	rs->n_bad++;
	return 0;
}

static void on_load_rejected(const char *path, const char *moved_to, const char *why, void *userdata)
{
	(void)userdata;
	if (moved_to[0])
		log_err("state: %s: %s; moved aside to %s", path, why, moved_to);
	else
		log_err("state: %s: %s", path, why);
}

static int rec_cmp(const void *pa, const void *pb)
{
	const struct lease_rec *a = pa, *b = pb;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	return strcmp(a->name, b->name);
}

static const char *kind_word(enum state_kind k)
{
	return k == STATE_VM ? "vm" : "session";
}

static void reject_lease(struct broker *b, enum state_kind kind, const char *name, const char *why)
{
	char moved[700];
	int r = state_reject(b->state, kind, name, why, moved, sizeof(moved));
	if (r < 0)
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ LEASE_FIELD(kind, name), .origin = "restore" },
			  "state: %s %s: %s; it could not be moved aside (%s)", kind_word(kind), name, why, strerror(-r));
	else
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ LEASE_FIELD(kind, name), .origin = "restore" },
			  "state: %s %s: %s; moved aside to %s", kind_word(kind), name, why, moved);
}

static void drop_lease(struct broker *b, enum state_kind kind, const char *name)
{
	if (forget_file(b, kind, name) < 0)
		resync_later(b, kind, name);
}

/* Replays one saved lease. 1: restored, 0: dropped or moved aside. */
static int restore_one(struct broker *b, struct lease_rec *rec)
{
	struct broker_caller self = { .door = BROKER_DOOR_STATE, .uid = rec->uid,
				      .origin = rec->origin[0] ? rec->origin : NULL };
	struct proto_error err = {0};
	const char *origin = rec->origin[0] ? rec->origin : "client";
	int r;
	if (rec->kind == STATE_VM) {
		const struct proto_vm_attach *a = &rec->req.u.vm_attach;
		const char *name = a->name;
		if (rec->follows && !a->has_owner) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = name, .origin = "restore" },
				  "state: vm %s: it followed a %s connection, which the restart closed: lease released",
				  name, origin);
			drop_lease(b, STATE_VM, name);
			return 0;
		}
		if (a->has_owner && !owner_alive(a->owner.pid, rec->owner_start)) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = name, .origin = "restore" },
				  "state: vm %s: its VMM (pid %d) exited while vpmud was down: lease released", name,
				  a->owner.pid);
			drop_lease(b, STATE_VM, name);
			return 0;
		}
		r = vm_attach(b, &self, a, rec->seq, rec->owner_start, NULL, &err);
		if (r < 0 && err.code == PROTO_E_NOT_FOUND && a->has_owner) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = name, .origin = "restore" },
				  "state: vm %s: its VMM (pid %d) is gone (%s): lease released", name, a->owner.pid,
				  err.message);
			drop_lease(b, STATE_VM, name);
			return 0;
		}
		if (r < 0) {
			char why[LEASE_WHY];
			snprintf(why, sizeof(why), "could not be restored: %s", err.message);
			reject_lease(b, STATE_VM, name, why);
			return 0;
		}
		log_event(LOG_NOTICE, VPMU_MSG_RESTORED,
			  &(struct log_fields){ .vm = name, .generation = arb_generation(b->arb), .origin = "restore" },
			  "state: vm %s restored%s", name, a->has_owner ? " and re-bound to its VMM" : "");
	} else {
		const struct proto_session_start *q = &rec->req.u.session_start;
		if (rec->follows) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .session = q->name, .origin = "restore" },
				  "state: session %s: it followed a %s connection, which the restart closed: stopped",
				  q->name, origin);
			drop_lease(b, STATE_SESSION, q->name);
			return 0;
		}
		if (q->owner_pid && !owner_alive(q->owner_pid, rec->owner_start)) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .session = q->name, .origin = "restore" },
				  "state: session %s: its owner (pid %d) exited while vpmud was down: stopped", q->name,
				  q->owner_pid);
			drop_lease(b, STATE_SESSION, q->name);
			return 0;
		}
		self.pid = q->owner_pid;
		r = session_start(b, &self, q, rec->seq, rec->owner_start, &err);
		if (r < 0 && err.code == PROTO_E_NOT_FOUND && !strcmp(err.field, "params.owner_pid")) {
			log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .session = q->name, .origin = "restore" },
				  "state: session %s: its owner (pid %d) is gone (%s): stopped", q->name, q->owner_pid,
				  err.message);
			drop_lease(b, STATE_SESSION, q->name);
			return 0;
		}
		if (r < 0) {
			char why[LEASE_WHY];
			snprintf(why, sizeof(why), "could not be restored: %s", err.message);
			reject_lease(b, STATE_SESSION, q->name, why);
			return 0;
		}
		log_event(LOG_NOTICE, VPMU_MSG_RESTORED,
			  &(struct log_fields){ .session = q->name, .generation = arb_generation(b->arb), .origin = "restore" },
			  "state: session %s restored (counts restart from zero)", q->name);
	}
	return 1;
}

int broker_restore(struct broker *b)
{
	struct restore rs = { .b = b };
	int r = state_load(b->state, on_load_lease, on_load_rejected, &rs);
	if (r < 0) {
		log_err("state: cannot read the leases in %s: %s", state_dir(b->state), strerror(-r));
		for (size_t i = 0; i < rs.n; i++)
			proto_request_fini(&rs.recs[i].req);
		free(rs.recs);
		free(rs.bad);
		return r;
	}
	for (size_t i = 0; i < rs.n_bad; i++)
		reject_lease(b, rs.bad[i].kind, rs.bad[i].name, rs.bad[i].why);
	free(rs.bad);
	if (rs.n == 0 && rs.n_bad == 0)
		log_info("state: nothing to restore in %s", state_dir(b->state));
	/* Arrival order: arbitration breaks ties by it. */
	if (rs.n > 1)
		qsort(rs.recs, rs.n, sizeof(*rs.recs), rec_cmp);
	uint64_t max = 0;
	for (size_t i = 0; i < rs.n; i++)
		if (rs.recs[i].seq > max)
			max = rs.recs[i].seq;
	bool moved = false;
	for (size_t i = 1, prev = rs.n ? rs.recs[0].seq : 0; i < rs.n; i++) {
		uint64_t seq = rs.recs[i].seq;
		if (seq == prev) {
			/* Two leases cannot share an id: the later one (by kind and
			 * name) gets a new one, and is saved with it. */
			rs.recs[i].seq = ++max;
			rs.recs[i].resave = moved = true;
		}
		prev = seq;
	}
	if (moved)
		qsort(rs.recs, rs.n, sizeof(*rs.recs), rec_cmp);
	if (max >= b->next_id)
		b->next_id = max + 1;
	size_t kept = 0, dropped = 0;
	b->restoring = true;
	/* Every lease here was admitted when it came; replayed in arrival order
	 * without the gate, the set comes back as it was acknowledged (a VM
	 * updated after a guaranteed session would otherwise keep it out). */
	arb_set_admission(b->arb, false);
	for (size_t i = 0; i < rs.n; i++) {
		if (restore_one(b, &rs.recs[i]) == 1) {
			kept++;
			if (rs.recs[i].resave) {
				const struct broker_vm *v = rs.recs[i].kind == STATE_VM ? find_vm(b, rs.recs[i].name) : NULL;
				const struct broker_session *s =
					rs.recs[i].kind == STATE_SESSION ? find_session(b, rs.recs[i].name) : NULL;
				if ((v && save_vm(b, v) < 0) || (s && save_session(b, s) < 0))
					resync_later(b, rs.recs[i].kind, rs.recs[i].name);
			}
		} else {
			dropped++;
		}
		proto_request_fini(&rs.recs[i].req);
	}
	arb_set_admission(b->arb, true);
	b->restoring = false;
	free(rs.recs);
	if (rs.n)
		log_notice("state: restored %zu leases, released %zu", kept, dropped);
	return 0;
}

/* ---------------------------------------------------------------- metrics */

const char *broker_lease_kind_name(enum broker_lease_kind k)
{
	switch (k) {
	case BROKER_LEASE_VM: return "vm";
	case BROKER_LEASE_SESSION: return "session";
	default: return NULL;
	}
}

const char *broker_fallback_name(enum broker_fallback f)
{
	switch (f) {
	case BROKER_FALLBACK_MULTIPLEXED: return "multiplexed";
	case BROKER_FALLBACK_AT_RISK: return "at-risk";
	case BROKER_FALLBACK_ADVISORY: return "advisory";
	default: return NULL;
	}
}

void broker_counters(const struct broker *b, struct broker_counters *out)
{
	*out = b->counters;
}

void broker_set_counters_hook(struct broker *b, void (*fn)(void *userdata), void *userdata)
{
	b->counters_hook = fn;
	b->counters_hook_ud = userdata;
}

int broker_metrics(struct broker *b, const struct broker_caller *c, char **text, size_t *len,
		   struct proto_error *err)
{
	int r = check_caller(b, c, PROTO_M_METRICS, err);
	if (r < 0)
		return r;
	struct broker_viewer w = broker_viewer(b, c);
	r = metrics_render(b, &w, text, len);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "rendering the metrics: %s", strerror(-r));
	return 0;
}
