/* SPDX-License-Identifier: MIT */
#include "doors/dbus_service.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "base/log.h"
#include "proto/cleanup.h"

#define IFACE_MANAGER DBUS_SERVICE_NAME ".Manager"
#define IFACE_VM DBUS_SERVICE_NAME ".VM"
#define IFACE_SESSION DBUS_SERVICE_NAME ".Session"
#define PATH_VM DBUS_SERVICE_PATH "/vm"
#define PATH_SESSION DBUS_SERVICE_PATH "/session"
#define ERROR_PREFIX DBUS_SERVICE_NAME ".Error."

/*
 * Unsigned enums on the bus, 0 = unknown, as the D-Bus API guidelines ask:
 * clients map values they do not know to "unknown" instead of failing. The
 * index is the wire value; the strings are the broker's names, so the
 * mapping never depends on the broker's own numbering.
 */
static const char *const class_names[] = { NULL, "guaranteed", "preferred", "shared", NULL };
/* Routes: the extension's first, then each stock flavour's, appended as the
 * flavours came (docs/dbus-api.md: values are only ever added). */
static const char *const route_names[] = { NULL, "disabled", "multiplexed", "passthrough", "reserved",
					   "at-risk", "mediated", "none", NULL };
static const char *const placement_names[] = { NULL, "software", "multiplexed", "dedicated", NULL };
static const char *const backend_names[] = { NULL, "ioctl", "advisory", "model", NULL };
/* The vPMU flavour the broker reasons about, and whether its routes hold. */
static const char *const flavour_names[] = { NULL, "extension", "perf-based", "mediated", "none", NULL };
static const char *const routes_kind_names[] = { NULL, "enforced", "simulated", "advisory", NULL };

/* A bus peer is one broker connection: what it makes without a process
 * owner ends when it leaves the bus, which sd_bus_track reports. */
struct peer {
	struct dbus_service *svc;
	char *name;                 /* unique bus name */
	sd_bus_track *track;
	struct broker_conn *conn;
};

/* One method call from its arguments to its answer; lives on while polkit
 * is asked. */
struct call {
	struct dbus_service *svc;
	sd_bus_message *msg;
	struct proto_request req;
	char *sender;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	gid_t *groups;
	size_t n_groups;
	struct broker_conn *conn;   /* a reference: the broker refuses once it is closed */
	sd_bus_slot *slot;          /* the polkit question, while it is open */
	int route_fd;               /* BindVM's route_fd (our dup), until the broker takes it; -1 */
};

struct id_set {
	uint64_t *v;
	size_t n, cap;
};

/* Snapshots by lease id: pointers sorted by id (snap_pos). */
struct snap_map {
	void **v;
	size_t n, cap;
};

/* What an exported object showed when its signals were last sent: only to
 * tell which properties changed, never read by a getter. */
struct vm_snap {
	uint64_t id;
	char name[PROTO_NAME_MAX + 1];
	uint32_t priority, gp, fixed_mask;
	enum proto_class cls;
	bool bound;
	pid_t vmm_pid;
	int vm_fd;
	unsigned passthrough_vcpus;
	unsigned vcpus_by_route[BROKER_ROUTE__COUNT];
	uint32_t routes_kind;       /* RoutesKind: the VM's own */
	char *routes_why;           /* RoutesWhy */
	size_t routes_len;
	uint8_t *routes;            /* the Routes property's content, flattened */
};

struct event_snap {
	enum broker_placement placement;
	unsigned dedicated_cpus;
	double share;
	char reason[sizeof(((struct broker_event_view *)0)->reason)];
};

struct session_snap {
	uint64_t id;
	char name[PROTO_NAME_MAX + 1];
	uint32_t n_events;
	struct event_snap *events;
};

struct dbus_service {
	sd_bus *bus;
	sd_event *event;
	struct broker *broker;
	unsigned max_cpus;
	uint64_t sub_id;
	bool subscribed;
	sd_event_source *flush_src;
	sd_bus_message **signals;   /* PlanChanged, built from each broker event, not sent yet */
	size_t n_signals;
	struct peer **peers;
	size_t n_peers;
	struct call **pending;      /* waiting for polkit */
	size_t n_pending;
	bool synced;                /* the snapshots below exist */
	/* Maps from lease id to what its object showed, sorted by id: an
	 * event names the leases it touched, and only those are read again
	 * from the broker and compared, whatever the number of leases. */
	struct snap_map vms;        /* of struct vm_snap */
	struct snap_map sessions;   /* of struct session_snap */
	uint64_t generation;
	/* The leases broker events named since the last flush. */
	struct id_set dirty_vms, dirty_sessions;
	bool dirty_all;             /* a name was lost (out of memory): walk every lease */
	/* What the broker lets the caller being answered see: GetManagedObjects
	 * asks every getter of every object, the credentials are read once per
	 * incoming message. Keyed by a count of incoming messages (a filter
	 * counts them), not by the client's cookie: a client picks its cookies
	 * and could keep one view alive across a reload of admin_group.
	 * Holding the message itself would hold what it carries. */
	uint64_t incoming;
	uint64_t viewer_of;         /* the value of incoming it was read for; 0: none */
	struct broker_viewer viewer;
	uint64_t creds_warned_usec; /* last "credentials unreadable" log line */
};

static void flush(struct dbus_service *s);

/* ------------------------------------------------------------ helpers */

static uint32_t wire_enum(const char *const *names, const char *s)
{
	for (uint32_t i = 1; s && names[i]; i++)
		if (!strcmp(names[i], s))
			return i;
	return 0;
}

static uint32_t wire_class(enum proto_class c)
{
	return wire_enum(class_names, proto_class_name(c));
}

static uint32_t wire_route(uint8_t r)
{
	return wire_enum(route_names, broker_route_name((enum broker_route)r));
}

static uint32_t wire_placement(enum broker_placement p)
{
	return wire_enum(placement_names, broker_placement_name(p));
}

static uint32_t wire_flavour(const struct broker *b)
{
	return wire_enum(flavour_names, broker_flavour_name(broker_flavour(b)));
}

static uint32_t wire_routes_kind(const struct broker *b)
{
	return wire_enum(routes_kind_names, broker_routes_kind(b));
}

static void request_finip(struct proto_request *r)
{
	proto_request_fini(r);
}

/* --------------------------------------------- typed views -> D-Bus values */

/*
 * Marshalling with a sticky error: the first failure is kept and every
 * later step does nothing, so that a rendering reads as its list of keys.
 * Keys and types are those of the socket protocol's results, as
 * docs/dbus-api.md says: integers x, generation t, masks t, enums u.
 */
struct out {
	sd_bus_message *m;
	int r;
};

static void open_c(struct out *o, char type, const char *contents)
{
	if (o->r >= 0)
		o->r = sd_bus_message_open_container(o->m, type, contents);
}

static void close_c(struct out *o)
{
	if (o->r >= 0)
		o->r = sd_bus_message_close_container(o->m);
}

static void put_s(struct out *o, const char *key, const char *v)
{
	if (o->r >= 0)
		o->r = sd_bus_message_append(o->m, "{sv}", key, "s", v ? v : "");
}

/* put_x(o, key, v) and its kin: key -> one value of a basic type. */
#define DEFINE_PUT(name, ctype, sig)                                            \
	static void name(struct out *o, const char *key, ctype v)               \
	{                                                                       \
		if (o->r >= 0)                                                  \
			o->r = sd_bus_message_append(o->m, "{sv}", key, sig, v); \
	}
DEFINE_PUT(put_x, int64_t, "x")
DEFINE_PUT(put_t, uint64_t, "t")
DEFINE_PUT(put_u, uint32_t, "u")
DEFINE_PUT(put_b, int, "b")
DEFINE_PUT(put_d, double, "d")

static void put_cpus(struct out *o, const char *key, const struct cpulist *l)
{
	_cleanup_free_ char *text = cpulist_to_text(l);
	if (!text && o->r >= 0)
		o->r = -ENOMEM;
	put_s(o, key, text);
}

/* key -> value of signature sig, opened for its content. */
static void entry_begin(struct out *o, const char *key, const char *sig)
{
	open_c(o, 'e', "sv");
	if (o->r >= 0)
		o->r = sd_bus_message_append(o->m, "s", key);
	open_c(o, 'v', sig);
}

static void entry_end(struct out *o)
{
	close_c(o);
	close_c(o);
}

/* key -> a{sv} (sig "a{sv}", then one put per key) or aa{sv} (sig
 * "aa{sv}", then item_begin/item_end per element). */
static void nested_begin(struct out *o, const char *key, const char *sig)
{
	entry_begin(o, key, sig);
	open_c(o, 'a', sig + 1);
}

static void nested_end(struct out *o)
{
	close_c(o);
	entry_end(o);
}

static void item_begin(struct out *o)
{
	open_c(o, 'a', "{sv}");
}

static void item_end(struct out *o)
{
	close_c(o);
}

/* The route enums of a vCPU's general counters, then of the fixed counters
 * the PMU has, by index (as the socket's "gp" and "fixed" arrays). */
static void append_routes(struct out *o, unsigned n_gp, const uint8_t *gp, uint32_t pmu_fixed_mask,
			  const uint8_t *fixed, bool want_gp)
{
	open_c(o, 'a', "u");
	if (want_gp) {
		for (unsigned j = 0; j < n_gp && j < 32 && o->r >= 0; j++)
			o->r = sd_bus_message_append(o->m, "u", wire_route(gp[j]));
	} else {
		for (unsigned j = 0; j < 16 && o->r >= 0; j++)
			if (pmu_fixed_mask & (1u << j))
				o->r = sd_bus_message_append(o->m, "u", wire_route(fixed[j]));
	}
	close_c(o);
}

static void put_routes(struct out *o, unsigned n_gp, const uint8_t *gp, uint32_t pmu_fixed_mask,
		       const uint8_t *fixed)
{
	entry_begin(o, "gp", "au");
	append_routes(o, n_gp, gp, pmu_fixed_mask, fixed, true);
	entry_end(o);
	entry_begin(o, "fixed", "au");
	append_routes(o, n_gp, gp, pmu_fixed_mask, fixed, false);
	entry_end(o);
}

/* flavour and routes: what every route in the answer means, and whether
 * it holds (the socket's "flavour" and "routes"). */
static void put_flavour(struct out *o, const struct broker *b)
{
	put_u(o, "flavour", wire_flavour(b));
	put_u(o, "routes", wire_routes_kind(b));
}

/* reserved_vcpus, at_risk_vcpus, …: the vCPUs that asked for PMCs, by the
 * weakest route they got, for each route of the flavour, named as the
 * socket names them. */
static void put_grants(struct out *o, const struct broker *b, const unsigned *by_route)
{
	enum broker_route routes[2];
	size_t n = broker_flavour_routes(broker_flavour(b), routes);
	for (size_t i = 0; i < n; i++)
		put_x(o, broker_route_count_key(routes[i]), by_route[routes[i]]);
}

/* A NULL-terminated list of strings as key -> as. */
static void put_strv(struct out *o, const char *key, const char *const *v)
{
	entry_begin(o, key, "as");
	open_c(o, 'a', "s");
	for (size_t i = 0; v[i] && o->r >= 0; i++)
		o->r = sd_bus_message_append_basic(o->m, 's', v[i]);
	close_c(o);
	entry_end(o);
}

static void put_backends(struct out *o, const struct broker_status *st)
{
	put_s(o, "pmu", st->pmu_model);
	put_s(o, "pmu_source", st->pmu_source);
	put_b(o, "pmu_simulated", st->pmu_simulated);
	if (st->pmu_why && st->pmu_why[0])
		put_s(o, "pmu_why", st->pmu_why);
	put_u(o, "kvm", wire_enum(backend_names, st->kvm_backend));
	put_b(o, "kvm_enforced", st->kvm_enforced);
	put_s(o, "kvm_why", st->kvm_why);
	if (st->kvm_host && st->kvm_host[0])
		put_s(o, "kvm_host", st->kvm_host);
	put_u(o, "kvm_flavour", wire_enum(flavour_names, st->flavour));
	put_u(o, "kvm_routes", wire_enum(routes_kind_names, st->routes));
	put_s(o, "kvm_flavour_effect", st->flavour_effect);
	if (st->reservation)
		put_s(o, "kvm_reservation", st->reservation);
	if (st->warnings[0])
		put_strv(o, "kvm_warnings", st->warnings);
}

/* vms_by_routes {enforced, simulated, advisory: x} and advisory_vms (as):
 * the socket's status fields of the same names. */
static void put_vms_by_routes(struct out *o, const struct broker *b, const struct broker_status *st)
{
	size_t n = broker_vm_count(b);
	nested_begin(o, "vms_by_routes", "a{sv}");
	put_x(o, "enforced", (int64_t)st->vms_enforced);
	put_x(o, "simulated", (int64_t)st->vms_simulated);
	put_x(o, "advisory", (int64_t)st->vms_advisory);
	nested_end(o);
	entry_begin(o, "advisory_vms", "as");
	open_c(o, 'a', "s");
	for (size_t i = 0; i < n && o->r >= 0; i++) {
		struct broker_vm_view v;
		broker_vm_at(b, i, &v);
		if (!strcmp(v.routes, "advisory"))
			o->r = sd_bus_message_append_basic(o->m, 's', v.name);
	}
	close_c(o);
	entry_end(o);
}

static void put_status(struct out *o, const struct broker *b, const struct broker_status *st)
{
	put_s(o, "server", st->server);
	put_x(o, "protocol", st->protocol);
	nested_begin(o, "backends", "a{sv}");
	put_backends(o, st);
	nested_end(o);
	put_t(o, "generation", st->generation);
	put_x(o, "cpus", st->cpus);
	put_x(o, "vms", (int64_t)st->vms);
	put_vms_by_routes(o, b, st);
	put_x(o, "sessions", (int64_t)st->sessions);
	put_x(o, "watchers", (int64_t)st->watchers);
	put_x(o, "uptime_s", (int64_t)st->uptime_s);
}

static void put_pmu(struct out *o, const struct broker_pmu_view *p)
{
	put_s(o, "source", p->source);
	put_b(o, "simulated", p->simulated);
	put_s(o, "model", p->model);
	put_s(o, "vendor", p->vendor);
	put_x(o, "version", p->version);
	put_x(o, "gp", p->gp);
	put_x(o, "gp_width", p->gp_width);
	put_t(o, "fixed_mask", p->fixed_mask);
	put_x(o, "fixed", p->fixed);
	put_x(o, "fixed_width", p->fixed_width);
	put_b(o, "perf_metrics", p->perf_metrics);
	put_x(o, "pebs_format", p->pebs_format);
	put_t(o, "global_ctrl_mask", p->global_ctrl_mask);
	put_x(o, "cpus", p->cpus);
	put_s(o, "boot_block", p->boot_block);
	if (p->nmi_watchdog) {
		nested_begin(o, "taken", "a{sv}");
		put_s(o, "nmi_watchdog", "one cycles-capable counter on every CPU");
		nested_end(o);
	}
}

static void put_guest(struct out *o, const struct broker_guest_view *g)
{
	char reg[16];
	nested_begin(o, "guest_pmu", "a{sv}");
	if (!g->ok) {
		put_s(o, "error", g->error);
	} else {
		put_x(o, "version", g->version);
		/* CPUID registers read as the kernel and cpuid(1) print them. */
		snprintf(reg, sizeof(reg), "0x%08" PRIx32, g->eax);
		put_s(o, "eax", reg);
		snprintf(reg, sizeof(reg), "0x%08" PRIx32, g->ebx);
		put_s(o, "ebx", reg);
		snprintf(reg, sizeof(reg), "0x%08" PRIx32, g->ecx);
		put_s(o, "ecx", reg);
		snprintf(reg, sizeof(reg), "0x%08" PRIx32, g->edx);
		put_s(o, "edx", reg);
		if (g->boot_block[0])
			put_s(o, "boot_block", g->boot_block);
	}
	nested_end(o);
}

/* routes (the routes kind enum) and routes_why: the socket's per-VM
 * "routes" and "routes_why". */
static void put_vm_routes(struct out *o, const struct broker_vm_view *v)
{
	put_u(o, "routes", wire_enum(routes_kind_names, v->routes));
	if (v->routes_why)
		put_s(o, "routes_why", v->routes_why);
}

/* A VM as vm.show shows it: its lease, each vCPU's routes and the PMU its
 * guest sees. */
static void put_vm(struct out *o, const struct broker *b, const struct broker_vm_view *v)
{
	put_s(o, "name", v->name);
	put_x(o, "priority", v->priority);
	put_u(o, "class", wire_class(v->cls));
	put_x(o, "gp", v->gp);
	put_t(o, "fixed_mask", v->fixed_mask);
	/* Another user's VM (the broker's viewer withheld it): its origin
	 * and owner are left out, as on the socket. */
	if (v->withheld)
		put_b(o, "withheld", true);
	else
		put_s(o, "origin", v->origin);
	put_vm_routes(o, v);
	if (v->follows_connection && !v->bound)
		put_b(o, "follows_connection", true);
	if (v->bound && !v->withheld) {
		nested_begin(o, "owner", "a{sv}");
		put_x(o, "pid", v->vmm_pid);
		put_x(o, "vm_fd", v->vm_fd);
		nested_end(o);
	}
	/* Kept on every flavour (0 outside the extension, which alone passes
	 * PMCs through): the other flavours add their own counts. */
	put_x(o, "passthrough_vcpus", v->passthrough_vcpus);
	if (broker_flavour(b) != BROKER_FLAVOUR_EXTENSION)
		put_grants(o, b, v->vcpus_by_route);
	nested_begin(o, "vcpus", "aa{sv}");
	for (uint32_t i = 0; i < v->n_vcpus && o->r >= 0; i++) {
		struct broker_vcpu_view vc;
		int r = broker_vm_vcpu(b, v->id, i, &vc);
		if (r < 0) {
			o->r = r;
			break;
		}
		item_begin(o);
		put_x(o, "vcpu", vc.vcpu);
		put_cpus(o, "cpus", vc.cpus);
		put_routes(o, vc.n_gp, vc.gp, vc.pmu_fixed_mask, vc.fixed);
		item_end(o);
	}
	nested_end(o);
	struct broker_guest_view g;
	int r = broker_vm_guest(b, v->id, &g);
	if (r < 0 && o->r >= 0)
		o->r = r;
	put_guest(o, &g);
}

static void put_session_events(struct out *o, const struct broker *b, const struct broker_session_view *sv)
{
	nested_begin(o, "events", "aa{sv}");
	for (uint32_t e = 0; e < sv->n_events && o->r >= 0; e++) {
		struct broker_event_view ev;
		int r = broker_session_event(b, sv->id, e, &ev);
		if (r < 0) {
			o->r = r;
			break;
		}
		item_begin(o);
		put_s(o, "event", ev.event);
		put_u(o, "placement", wire_placement(ev.placement));
		put_d(o, "share", ev.share);
		if (ev.placement != BROKER_PLACEMENT_SOFTWARE)
			put_x(o, "dedicated_cpus", ev.dedicated_cpus);
		if (ev.reason[0])
			put_s(o, "reason", ev.reason);
		item_end(o);
	}
	nested_end(o);
}

/* What the session's numbers will not hold (guest time on a mediated vPMU,
 * anything for hardware events on a model PMU), when the broker says. */
static void put_note(struct out *o, const struct broker_session_view *sv)
{
	if (sv->note)
		put_s(o, "note", sv->note);
}

static void put_session(struct out *o, const struct broker *b, const struct broker_session_view *sv)
{
	put_s(o, "name", sv->name);
	put_x(o, "priority", sv->priority);
	put_u(o, "class", wire_class(sv->cls));
	if (sv->has_cpus)
		put_cpus(o, "cpus", sv->cpus);
	/* Another user's session: its events, task and owner are left out. */
	if (sv->withheld) {
		put_note(o, sv);
		put_b(o, "withheld", true);
		return;
	}
	put_session_events(o, b, sv);
	if (!sv->has_cpus)
		put_x(o, "pid", sv->pid);
	put_x(o, "owner_pid", sv->owner_pid);
	put_x(o, "uid", sv->uid);
	put_note(o, sv);
}

static void put_host_placement(struct out *o, const struct broker_viewer *w, const struct broker_host_placement *hp)
{
	char counter[24]; /* room for "fixed" and any int, as a Debug build checks */
	struct broker_host_placement copy = *hp, *h = &copy;
	broker_placement_withhold(w, h);
	item_begin(o);
	put_s(o, h->holder == BROKER_HOLDER_FOREIGN ? "foreign" : "session", h->holder_name);
	if (h->withheld)
		put_b(o, "withheld", true);
	else
		put_s(o, "event", h->event);
	if (h->counter >= 32)
		snprintf(counter, sizeof(counter), "fixed%d", h->counter - 32);
	else
		snprintf(counter, sizeof(counter), "gp%d", h->counter);
	if (h->counter >= 0)
		put_s(o, "counter", counter);
	put_d(o, "share", h->share);
	item_end(o);
}

/* The plan: per CPU, then the VMs and sessions; a CPU filter keeps only
 * the CPUs, VMs and sessions on those CPUs. */
static void put_plan(struct out *o, const struct broker *b, const struct broker_viewer *w,
		     const struct proto_plan_req *q)
{
	struct broker_status st;
	broker_status(b, &st);
	put_t(o, "generation", st.generation);
	put_b(o, "simulated_pmu", st.pmu_simulated);
	put_b(o, "kvm_enforced", st.kvm_enforced);
	put_flavour(o, b);
	nested_begin(o, "cpus", "aa{sv}");
	for (unsigned i = 0; i < broker_cpu_count(b) && o->r >= 0; i++) {
		struct broker_cpu_view cv;
		if (broker_cpu_at(b, i, &cv) < 0 || (q->has_cpus && !cpulist_test(&q->cpus, (unsigned)cv.cpu)))
			continue;
		item_begin(o);
		put_x(o, "cpu", cv.cpu);
		put_t(o, "guest_gp_mask", cv.guest_gp_mask);
		put_t(o, "guest_fixed_mask", cv.guest_fixed_mask);
		nested_begin(o, "host", "aa{sv}");
		for (unsigned k = 0; k < cv.n_host; k++)
			put_host_placement(o, w, &cv.host[k]);
		nested_end(o);
		item_end(o);
	}
	nested_end(o);
	nested_begin(o, "vms", "aa{sv}");
	for (size_t i = 0; i < broker_vm_count(b) && o->r >= 0; i++) {
		struct broker_vm_view v;
		broker_vm_at(b, i, &v);
		if (q->has_cpus && !broker_vm_on_cpus(b, v.id, &q->cpus))
			continue;
		broker_vm_view_withhold(w, &v);
		item_begin(o);
		put_vm(o, b, &v);
		item_end(o);
	}
	nested_end(o);
	nested_begin(o, "sessions", "aa{sv}");
	for (size_t i = 0; i < broker_session_count(b) && o->r >= 0; i++) {
		struct broker_session_view sv;
		broker_session_at(b, i, &sv);
		if (q->has_cpus && !broker_session_on_cpus(b, sv.id, &q->cpus))
			continue;
		broker_session_view_withhold(w, &sv);
		item_begin(o);
		put_session(o, b, &sv);
		item_end(o);
	}
	nested_end(o);
}

static void put_reading(struct out *o, const struct broker *b, const struct broker_reading *rd)
{
	put_s(o, "name", rd->name);
	put_flavour(o, b);
	put_x(o, "since_usec", (int64_t)rd->since_usec);
	put_x(o, "read_usec", (int64_t)rd->read_usec);
	if (rd->note)
		put_s(o, "note", rd->note);
	nested_begin(o, "events", "aa{sv}");
	for (uint32_t i = 0; i < rd->n_events; i++) {
		const struct broker_event_reading *e = &rd->events[i];
		item_begin(o);
		put_s(o, "event", e->event);
		put_u(o, "placement", wire_placement(e->placement));
		put_b(o, "counted", e->counted);
		if (!e->counted) {
			put_s(o, "reason", e->reason ? e->reason : "not counted");
		} else {
			put_x(o, "value", (int64_t)e->value);
			put_x(o, "time_enabled", (int64_t)e->time_enabled);
			put_x(o, "time_running", (int64_t)e->time_running);
			put_d(o, "scaled", e->scaled);
			put_b(o, "multiplexed", e->multiplexed);
			put_b(o, "never_ran", e->never_ran);
		}
		item_end(o);
	}
	nested_end(o);
}

static void put_change(struct out *o, const struct broker_change *c)
{
	item_begin(o);
	put_x(o, "phase", c->phase);
	if (c->partition) {
		put_x(o, "cpu", c->cpu);
		put_t(o, "guest_gp_mask", c->guest_gp_mask);
		put_t(o, "guest_fixed_mask", c->guest_fixed_mask);
	} else {
		put_s(o, "vm", c->vm);
		put_x(o, "vcpu", c->vcpu);
		put_routes(o, c->n_gp, c->gp, c->pmu_fixed_mask, c->fixed);
	}
	if (c->scrub_gp_mask || c->scrub_fixed_mask) {
		put_t(o, "scrub_gp_mask", c->scrub_gp_mask);
		put_t(o, "scrub_fixed_mask", c->scrub_fixed_mask);
	}
	item_end(o);
}

/* ------------------------------------------------------------- errors */

/* "not_found" -> "org.vpmu.Broker1.Error.NotFound": the D-Bus error names
 * the same stable code. Codes are short protocol constants. */
static void error_name(enum proto_errcode code, char *buf, size_t len)
{
	const char *src = proto_errcode_name(code);
	size_t n = (size_t)snprintf(buf, len, "%s", ERROR_PREFIX);
	bool up = true;
	for (; *src && n + 1 < len; src++) {
		if (*src == '_') {
			up = true;
			continue;
		}
		buf[n++] = up && *src >= 'a' && *src <= 'z' ? (char)(*src - 'a' + 'A') : *src;
		up = false;
	}
	buf[n < len ? n : len - 1] = '\0';
}

/* Answers with the broker's (or proto's) refusal; returns what an sd-bus
 * method handler returns. */
static int reply_error(sd_bus_message *call, const struct proto_error *pe)
{
	char name[sizeof(ERROR_PREFIX) + 32];
	error_name(pe->code, name, sizeof(name));
	int r;
	if (pe->field[0] && !strstr(pe->message, pe->field))
		r = sd_bus_reply_method_errorf(call, name, "%s: %s", pe->field, pe->message);
	else
		r = sd_bus_reply_method_errorf(call, name, "%s", pe->message);
	return r < 0 ? r : 1;
}

/* ------------------------------------------ D-Bus arguments -> typed requests */

/* Option keys are the socket protocol's parameter names. */
enum opt {
	OPT_PRIORITY,
	OPT_CLASS,
	OPT_GP,
	OPT_FIXED_MASK,
	OPT_VCPUS,
	OPT_VCPU_COUNT,
	OPT_CPUS,
	OPT_OWNER,
	OPT_PID,
	OPT_OWNER_PID,
	OPT_VM_FD,
	OPT_COUNT_GUEST,
	OPT_ROUTE_FD,
	OPT__COUNT
};
static const char *const opt_names[OPT__COUNT] = {
	[OPT_PRIORITY] = "priority", [OPT_CLASS] = "class",   [OPT_GP] = "gp",
	[OPT_FIXED_MASK] = "fixed_mask", [OPT_VCPUS] = "vcpus", [OPT_VCPU_COUNT] = "vcpu_count",
	[OPT_CPUS] = "cpus",         [OPT_OWNER] = "owner",   [OPT_PID] = "pid",
	[OPT_OWNER_PID] = "owner_pid", [OPT_VM_FD] = "vm_fd", [OPT_COUNT_GUEST] = "count_guest",
	[OPT_ROUTE_FD] = "route_fd",
};
#define OPT(x) (1u << (x))
#define OPTS_SHAPE (OPT(OPT_PRIORITY) | OPT(OPT_CLASS) | OPT(OPT_GP) | OPT(OPT_FIXED_MASK) | \
		    OPT(OPT_VCPUS) | OPT(OPT_VCPU_COUNT) | OPT(OPT_CPUS))
#define OPTS_ATTACH (OPTS_SHAPE | OPT(OPT_OWNER))
#define OPTS_UPDATE OPTS_SHAPE
#define OPTS_BIND (OPT(OPT_VM_FD) | OPT(OPT_ROUTE_FD))
#define OPTS_SESSION (OPT(OPT_CPUS) | OPT(OPT_PID) | OPT(OPT_PRIORITY) | OPT(OPT_CLASS) | OPT(OPT_OWNER_PID) | \
		      OPT(OPT_COUNT_GUEST))
#define OPTS_PLAN OPT(OPT_CPUS)

/* The options as read, before they become one method's request. */
struct options {
	unsigned seen;
	uint32_t priority, gp, fixed_mask, vcpu_count;
	enum proto_class cls;
	struct cpulist cpus;
	struct proto_vcpus vcpus;
	struct proto_owner owner;
	int32_t pid, owner_pid, vm_fd;
	bool count_guest;
	bool has_route_fd;          /* route_fd holds our own dup */
	int route_fd;
};

static void options_fini(struct options *o)
{
	free(o->vcpus.cpus);
	o->vcpus.cpus = NULL;
	if (o->has_route_fd)
		close(o->route_fd);
	o->has_route_fd = false;
}

/* "params.<key>" for a key from outside: printable ASCII only, cut to fit,
 * like proto's own field paths. */
static void field_of(char *buf, size_t len, const char *base, const char *key)
{
	size_t n = (size_t)snprintf(buf, len, "%s.", base);
	for (; *key && n + 1 < len; key++)
		buf[n++] = *key >= 0x20 && *key <= 0x7e ? *key : '?';
	buf[n < len ? n : len - 1] = '\0';
}

static int unreadable(struct proto_error *pe, const char *field, int r)
{
	return proto_error_set(pe, PROTO_E_BAD_REQUEST, -r, field, "%s: cannot be read: %s", field, strerror(-r));
}

static int wrong_type(struct proto_error *pe, const char *field, const char *want, const char *got)
{
	return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field, "%s: expected %s, got D-Bus type %s",
			       field, want, got);
}

static int missing(struct proto_error *pe, const char *field)
{
	return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field, "missing required field %s", field);
}

static int enter_variant(sd_bus_message *m, const char *field, const char **contents, struct proto_error *pe)
{
	char type;
	int r = sd_bus_message_peek_type(m, &type, contents);
	if (r <= 0 || type != 'v')
		return unreadable(pe, field, r < 0 ? r : -EBADMSG);
	r = sd_bus_message_enter_container(m, 'v', *contents);
	return r < 0 ? unreadable(pe, field, r) : 0;
}

static int exit_container(sd_bus_message *m, const char *field, struct proto_error *pe)
{
	int r = sd_bus_message_exit_container(m);
	return r < 0 ? unreadable(pe, field, r) : 0;
}

/*
 * An integer of any D-Bus integer type (agents in dynamic languages send
 * what their binding picks), within what the request field can hold; the
 * protocol's own ranges are proto_request_validate's to check.
 */
static int read_int(sd_bus_message *m, const char *sig, const char *field, int64_t min, int64_t max,
		    int64_t *out, struct proto_error *pe)
{
	union {
		uint8_t y;
		int16_t n;
		uint16_t q;
		int32_t i;
		uint32_t u;
		int64_t x;
		uint64_t t;
	} v;
	int64_t x;
	if (!sig[0] || sig[1] || !strchr("ynqiuxt", sig[0]))
		return wrong_type(pe, field, "an integer", sig);
	int r = sd_bus_message_read_basic(m, sig[0], &v);
	if (r < 0)
		return unreadable(pe, field, r);
	switch (sig[0]) {
	case 'y': x = v.y; break;
	case 'n': x = v.n; break;
	case 'q': x = v.q; break;
	case 'i': x = v.i; break;
	case 'u': x = v.u; break;
	case 'x': x = v.x; break;
	default: x = v.t > INT64_MAX ? INT64_MAX : (int64_t)v.t; break;
	}
	if (x < min || x > max)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, ERANGE, field, "%s: must be %" PRId64 "..%" PRId64,
				       field, min, max);
	*out = x;
	return 0;
}

static int read_u32(sd_bus_message *m, const char *sig, const char *field, uint32_t *out, struct proto_error *pe)
{
	int64_t x;
	int r = read_int(m, sig, field, 0, UINT32_MAX, &x, pe);
	if (r == 0)
		*out = (uint32_t)x;
	return r;
}

static int read_i32(sd_bus_message *m, const char *sig, const char *field, int32_t *out, struct proto_error *pe)
{
	int64_t x;
	int r = read_int(m, sig, field, INT32_MIN, INT32_MAX, &x, pe);
	if (r == 0)
		*out = (int32_t)x;
	return r;
}

/* A boolean is a D-Bus boolean, as it is a JSON boolean on the socket: an
 * integer would leave "is 2 true?" to guessing. */
static int read_bool(sd_bus_message *m, const char *sig, const char *field, bool *out, struct proto_error *pe)
{
	int v;
	if (strcmp(sig, "b"))
		return wrong_type(pe, field, "a boolean (b)", sig);
	int r = sd_bus_message_read_basic(m, 'b', &v);
	if (r < 0)
		return unreadable(pe, field, r);
	*out = v;
	return 0;
}

/* class: the bus enum (u) or the protocol's name (s). */
static int read_class(sd_bus_message *m, const char *sig, const char *field, enum proto_class *out,
		      struct proto_error *pe)
{
	if (!strcmp(sig, "s")) {
		const char *name;
		int r = sd_bus_message_read_basic(m, 's', &name);
		if (r < 0)
			return unreadable(pe, field, r);
		int c = proto_class_from_name(name);
		if (c < 0)
			return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field,
					       "%s: must be \"guaranteed\", \"preferred\" or \"shared\"", field);
		*out = (enum proto_class)c;
		return 0;
	}
	int64_t x;
	int r = read_int(m, sig, field, 0, UINT32_MAX, &x, pe);
	if (r < 0)
		return r;
	int c = x >= 1 && x <= 3 ? proto_class_from_name(class_names[x]) : -ENOENT;
	if (c < 0)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field,
				       "%s: 1 (guaranteed), 2 (preferred) or 3 (shared), got %" PRId64, field, x);
	*out = (enum proto_class)c;
	return 0;
}

/* CPU-list text to a set, with the socket decoder's errors. */
static int parse_cpus(const char *text, const char *field, unsigned max_cpus, struct cpulist *out,
		      struct proto_error *pe)
{
	int r = cpulist_parse(text, max_cpus, out);
	if (r == -ERANGE)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, ERANGE, field, "%s: CPU numbers must be below %u",
				       field, max_cpus);
	if (r < 0)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field, "%s: not a CPU list (like \"0-3,8\")",
				       field);
	return 0;
}

static int read_cpus(sd_bus_message *m, const char *sig, const char *field, unsigned max_cpus,
		     struct cpulist *out, struct proto_error *pe)
{
	const char *text;
	if (strcmp(sig, "s"))
		return wrong_type(pe, field, "a CPU list (s)", sig);
	int r = sd_bus_message_read_basic(m, 's', &text);
	return r < 0 ? unreadable(pe, field, r) : parse_cpus(text, field, max_cpus, out, pe);
}

/* vcpus: one CPU list per vCPU. Past PROTO_MAX_VCPUS nothing more is kept
 * (the bus allows far larger arrays): the count then says "too many" to
 * proto_request_validate. */
static int read_vcpu_lists(sd_bus_message *m, const char *sig, const char *field, unsigned max_cpus,
			   struct proto_vcpus *out, struct proto_error *pe)
{
	const char *text;
	size_t n = 0;
	int r;
	if (strcmp(sig, "as"))
		return wrong_type(pe, field, "one CPU list per vCPU (as)", sig);
	free(out->cpus);
	out->cpus = calloc(PROTO_MAX_VCPUS + 1, sizeof(*out->cpus));
	out->count = 0;
	if (!out->cpus)
		return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0)
		return unreadable(pe, field, r);
	while ((r = sd_bus_message_read_basic(m, 's', &text)) > 0) {
		char item[PROTO_FIELD_MAX];
		if (n > PROTO_MAX_VCPUS)
			continue;
		/* A path that does not fit is cut: it only labels an error. */
		if (snprintf(item, sizeof(item), "%s[%zu]", field, n) >= (int)sizeof(item))
			item[sizeof(item) - 1] = '\0';
		if ((r = parse_cpus(text, item, max_cpus, &out->cpus[n], pe)) < 0)
			return r;
		n++;
	}
	if (r < 0)
		return unreadable(pe, field, r);
	out->count = (uint32_t)n;
	return exit_container(m, field, pe);
}

/* owner: {pid, vm_fd}, both required, as on the socket. */
static int read_owner(sd_bus_message *m, const char *sig, const char *field, struct proto_owner *out,
		      struct proto_error *pe)
{
	bool has_pid = false, has_fd = false;
	int r;
	if (strcmp(sig, "a{sv}"))
		return wrong_type(pe, field, "a{sv} with pid and vm_fd", sig);
	if ((r = sd_bus_message_enter_container(m, 'a', "{sv}")) < 0)
		return unreadable(pe, field, r);
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key, *contents;
		char sub[PROTO_FIELD_MAX];
		if ((r = sd_bus_message_read_basic(m, 's', &key)) < 0)
			return unreadable(pe, field, r);
		field_of(sub, sizeof(sub), field, key);
		bool pid = !strcmp(key, "pid");
		if (!pid && strcmp(key, "vm_fd"))
			return proto_error_set(pe, PROTO_E_UNKNOWN_FIELD, EINVAL, sub, "unknown field %s", sub);
		if (pid ? has_pid : has_fd)
			return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, sub, "%s: given twice", sub);
		if ((r = enter_variant(m, sub, &contents, pe)) < 0 ||
		    (r = read_i32(m, contents, sub, pid ? &out->pid : &out->vm_fd, pe)) < 0 ||
		    (r = exit_container(m, sub, pe)) < 0 || (r = exit_container(m, sub, pe)) < 0)
			return r;
		*(pid ? &has_pid : &has_fd) = true;
	}
	if (r < 0)
		return unreadable(pe, field, r);
	if ((r = exit_container(m, field, pe)) < 0)
		return r;
	char sub[PROTO_FIELD_MAX];
	if (!has_pid || !has_fd) {
		field_of(sub, sizeof(sub), field, has_pid ? "vm_fd" : "pid");
		return missing(pe, sub);
	}
	return 0;
}

/* route_fd: a unix fd (h). sd-bus owns the message's descriptor and closes
 * it with the message; the broker keeps the route fd for the VM's life, so
 * it gets a duplicate of its own (close-on-exec: vpmud runs helpers). */
static int read_route_fd(sd_bus_message *m, const char *sig, const char *field, struct options *o,
			 struct proto_error *pe)
{
	int fd;
	if (strcmp(sig, "h"))
		return wrong_type(pe, field, "a unix fd (h)", sig);
	int r = sd_bus_message_read_basic(m, 'h', &fd);
	if (r < 0)
		return unreadable(pe, field, r);
	int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup < 0)
		return proto_error_set(pe, PROTO_E_INTERNAL, errno, field, "%s: cannot keep the descriptor: %s", field,
				       strerror(errno));
	o->route_fd = dup;
	o->has_route_fd = true;
	return 0;
}

static int read_option(struct dbus_service *s, sd_bus_message *m, enum opt k, const char *sig,
		       const char *field, struct options *o, struct proto_error *pe)
{
	switch (k) {
	case OPT_PRIORITY: return read_u32(m, sig, field, &o->priority, pe);
	case OPT_CLASS: return read_class(m, sig, field, &o->cls, pe);
	case OPT_GP: return read_u32(m, sig, field, &o->gp, pe);
	case OPT_FIXED_MASK: return read_u32(m, sig, field, &o->fixed_mask, pe);
	case OPT_VCPUS: return read_vcpu_lists(m, sig, field, s->max_cpus, &o->vcpus, pe);
	case OPT_VCPU_COUNT: return read_u32(m, sig, field, &o->vcpu_count, pe);
	case OPT_CPUS: return read_cpus(m, sig, field, s->max_cpus, &o->cpus, pe);
	case OPT_OWNER: return read_owner(m, sig, field, &o->owner, pe);
	case OPT_PID: return read_i32(m, sig, field, &o->pid, pe);
	case OPT_OWNER_PID: return read_i32(m, sig, field, &o->owner_pid, pe);
	case OPT_VM_FD: return read_i32(m, sig, field, &o->vm_fd, pe);
	case OPT_COUNT_GUEST: return read_bool(m, sig, field, &o->count_guest, pe);
	case OPT_ROUTE_FD: return read_route_fd(m, sig, field, o, pe);
	default: return proto_error_set(pe, PROTO_E_INTERNAL, EINVAL, NULL, "option %d", (int)k);
	}
}

/* The a{sv} options of a method: keys in allowed only, each once. */
static int read_options(struct dbus_service *s, sd_bus_message *m, unsigned allowed, struct options *o,
			struct proto_error *pe)
{
	int r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return unreadable(pe, "params", r);
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key, *sig;
		char field[PROTO_FIELD_MAX];
		if ((r = sd_bus_message_read_basic(m, 's', &key)) < 0)
			return unreadable(pe, "params", r);
		field_of(field, sizeof(field), "params", key);
		int k = 0;
		while (k < OPT__COUNT && strcmp(opt_names[k], key))
			k++;
		if (k == OPT__COUNT || !(allowed & OPT(k)))
			return proto_error_set(pe, PROTO_E_UNKNOWN_FIELD, EINVAL, field, "unknown field %s", field);
		if (o->seen & OPT(k))
			return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, field, "%s: given twice", field);
		o->seen |= OPT(k);
		if ((r = enter_variant(m, field, &sig, pe)) < 0 ||
		    (r = read_option(s, m, (enum opt)k, sig, field, o, pe)) < 0 ||
		    (r = exit_container(m, field, pe)) < 0 || (r = exit_container(m, field, pe)) < 0)
			return r;
	}
	if (r < 0)
		return unreadable(pe, "params", r);
	return exit_container(m, "params", pe);
}

/* Both vCPU forms of the socket protocol: vcpus (as), or vcpu_count + cpus.
 * Returns 1 when given, 0 when neither form is. */
static int take_vcpus(struct options *o, struct proto_vcpus *out, struct proto_error *pe)
{
	bool list = o->seen & OPT(OPT_VCPUS), count = o->seen & OPT(OPT_VCPU_COUNT), cpus = o->seen & OPT(OPT_CPUS);
	if (list && (count || cpus))
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
				       "params.vcpus: give either vcpus or vcpu_count + cpus, not both");
	if (list) {
		*out = o->vcpus;
		o->vcpus = (struct proto_vcpus){ 0 };
		return 1;
	}
	if (!count && !cpus)
		return 0;
	if (!count)
		return missing(pe, "params.vcpu_count");
	if (!cpus)
		return missing(pe, "params.cpus");
	if (o->vcpu_count < 1 || o->vcpu_count > PROTO_MAX_VCPUS)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, ERANGE, "params.vcpu_count",
				       "params.vcpu_count: must be 1..%d", PROTO_MAX_VCPUS);
	out->cpus = calloc(o->vcpu_count, sizeof(*out->cpus));
	if (!out->cpus)
		return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	out->count = o->vcpu_count;
	for (uint32_t i = 0; i < o->vcpu_count; i++)
		out->cpus[i] = o->cpus;
	return 1;
}

/* Names are bounded by the protocol; a longer one cannot even be held. */
static int take_name(char *dst, const char *name, struct proto_error *pe)
{
	size_t n = strlen(name);
	if (n > PROTO_NAME_MAX)
		return proto_error_set(pe, PROTO_E_INVALID_PARAM, EINVAL, "params.name",
				       "params.name: must be 1..%d characters", PROTO_NAME_MAX);
	memcpy(dst, name, n + 1);
	return 0;
}

/* ------------------------------------------------------------- peers */

static void peer_free(struct peer *p)
{
	if (!p)
		return;
	sd_bus_track_unref(p->track);
	broker_conn_unref(p->conn);
	free(p->name);
	free(p);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct peer *, peer_free)

static void peer_forget(struct dbus_service *s, struct peer *p)
{
	for (size_t i = 0; i < s->n_peers; i++)
		if (s->peers[i] == p) {
			s->peers[i] = s->peers[--s->n_peers];
			return;
		}
}

/* The peer left the bus: the broker ends what follows its connection. */
static int on_peer_gone(sd_bus_track *t, void *userdata)
{
	struct peer *p = userdata;
	/* Out of memory, the broker says "its connection closed" instead. */
	_cleanup_free_ char *reason = alloc_printf("its D-Bus peer %s left the bus", p->name);
	(void)t;
	log_info("dbus: peer %s left the bus", p->name);
	broker_conn_close(p->conn, reason);
	peer_forget(p->svc, p);
	peer_free(p);
	return 0;
}

/*
 * The broker connection of the peer that sent a call (a new reference),
 * opened and tracked at its first call. A peer that is gone already gets a
 * closed connection: the broker then refuses whatever would outlive it.
 */
static int peer_conn(struct dbus_service *s, const char *sender, struct broker_conn **out, struct proto_error *pe)
{
	for (size_t i = 0; i < s->n_peers; i++)
		if (!strcmp(s->peers[i]->name, sender)) {
			*out = broker_conn_ref(s->peers[i]->conn);
			return 0;
		}
	_cleanup_(peer_freep) struct peer *p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(sender)))
		return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	p->svc = s;
	int r = broker_conn_open(s->broker, true, &p->conn);
	if (r < 0)
		return proto_error_set(pe, PROTO_E_INTERNAL, -r, NULL, "cannot open a broker connection: %s",
				       strerror(-r));
	struct peer **grown = realloc(s->peers, (s->n_peers + 1) * sizeof(*grown));
	if (!grown)
		return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	s->peers = grown;
	r = sd_bus_track_new(s->bus, &p->track, on_peer_gone, p);
	if (r >= 0)
		r = sd_bus_track_add_name(p->track, sender);
	if (r < 0) {
		log_notice("dbus: cannot follow peer %s (%s): nothing it asks for may outlive this call", sender,
			   strerror(-r));
		broker_conn_close(p->conn, "its D-Bus peer could not be followed");
		*out = broker_conn_ref(p->conn);
		return 0;
	}
	*out = broker_conn_ref(p->conn);
	s->peers[s->n_peers++] = TAKE_PTR(p);
	return 0;
}

/* ------------------------------------------------------------- calls */

static void call_free(struct call *c)
{
	if (!c)
		return;
	sd_bus_slot_unref(c->slot);
	broker_conn_unref(c->conn);
	free(c->groups);
	free(c->sender);
	proto_request_fini(&c->req);
	sd_bus_message_unref(c->msg);
	if (c->route_fd >= 0)
		close(c->route_fd);
	free(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct call *, call_free)

static void pending_forget(struct dbus_service *s, struct call *c)
{
	for (size_t i = 0; i < s->n_pending; i++)
		if (s->pending[i] == c) {
			s->pending[i] = s->pending[--s->n_pending];
			return;
		}
}

static struct broker_caller caller_of(const struct call *c, bool polkit_allowed)
{
	return (struct broker_caller){
		.door = BROKER_DOOR_DBUS,
		.uid = c->uid,
		.gid = c->gid,
		.pid = c->pid,
		.groups = c->groups,
		.n_groups = c->n_groups,
		.polkit_allowed = polkit_allowed,
		.origin = "dbus",
		.conn = c->conn,
	};
}

/* The groups of a uid from the user database, for a bus that does not say
 * them; also its primary group when the bus did not give one. */
static int groups_of_uid(struct call *c, struct proto_error *pe)
{
	struct passwd pw, *found = NULL;
	_cleanup_free_ char *buf = NULL;
	long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
	int r;
	/* A passwd entry larger than 16 MiB is no user's: treated as none. */
	for (size_t len = hint > 0 ? (size_t)hint : 1024;; len *= 2) {
		free(buf);
		if (!(buf = malloc(len)))
			return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		if ((r = getpwuid_r(c->uid, &pw, buf, len, &found)) != ERANGE || len >= (1u << 24))
			break;
	}
	/* A uid without a user has no supplementary groups to speak of. */
	if (r != 0 || !found)
		return 0;
	if (c->gid == (gid_t)-1)
		c->gid = pw.pw_gid;
	for (int n = 32;;) {
		int got = n;
		_cleanup_free_ gid_t *g = malloc((size_t)n * sizeof(*g));
		if (!g)
			return proto_error_set(pe, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		if (getgrouplist(pw.pw_name, pw.pw_gid, g, &got) >= 0) {
			c->groups = TAKE_PTR(g);
			c->n_groups = (size_t)got;
			return 0;
		}
		n = got > n ? got : n * 2;
	}
}

_Static_assert(sizeof(gid_t) == sizeof(uint32_t), "UnixGroupIDs are gid_t");

/* The answer of GetConnectionCredentials: a{sv} with UnixUserID u,
 * ProcessID u, UnixGroupIDs au and keys this door does not need. */
static int creds_from_reply(sd_bus_message *reply, struct call *c, bool *has_uid, bool *has_groups)
{
	int r = sd_bus_message_enter_container(reply, 'a', "{sv}");
	if (r < 0)
		return r;
	while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
		const char *key;
		uint32_t u;
		if ((r = sd_bus_message_read_basic(reply, 's', &key)) < 0)
			return r;
		if (!strcmp(key, "UnixUserID") || !strcmp(key, "ProcessID")) {
			if ((r = sd_bus_message_read(reply, "v", "u", &u)) < 0)
				return r;
			if (key[0] == 'U') {
				c->uid = (uid_t)u;
				*has_uid = true;
			} else {
				c->pid = (pid_t)u;
			}
		} else if (!strcmp(key, "UnixGroupIDs")) {
			const void *gids;
			size_t size;
			if ((r = sd_bus_message_enter_container(reply, 'v', "au")) < 0 ||
			    (r = sd_bus_message_read_array(reply, 'u', &gids, &size)) < 0 ||
			    (r = sd_bus_message_exit_container(reply)) < 0)
				return r;
			free(c->groups);
			c->n_groups = size / sizeof(gid_t);
			if (!(c->groups = malloc(size ? size : 1)))
				return -ENOMEM;
			memcpy(c->groups, gids, size);
			*has_groups = true;
		} else if ((r = sd_bus_message_skip(reply, "v")) < 0) {
			return r;
		}
		if ((r = sd_bus_message_exit_container(reply)) < 0)
			return r;
	}
	return r < 0 ? r : sd_bus_message_exit_container(reply);
}

/*
 * Who sent the call, as the bus daemon says: uid, pid and groups. The
 * groups are dbus-daemon's UnixGroupIDs, taken from the connection as the
 * socket door takes SO_PEERGROUPS (sd-bus does not read them, hence the
 * call of our own). A bus that gives none gets the user database's groups
 * of the uid.
 */
static int read_creds(struct dbus_service *s, struct call *c, struct proto_error *pe)
{
	_cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	bool has_uid = false, has_groups = false;
	int r = sd_bus_call_method(s->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
				   "GetConnectionCredentials", &e, &reply, "s", c->sender);
	if (r >= 0)
		r = creds_from_reply(reply, c, &has_uid, &has_groups);
	if (r < 0)
		return proto_error_set(pe, PROTO_E_INTERNAL, -r, NULL, "cannot read the caller's credentials: %s",
				       e.message ? e.message : strerror(-r));
	if (!has_uid)
		return proto_error_set(pe, PROTO_E_INTERNAL, ENODATA, NULL, "the bus did not say which user %s is",
				       c->sender);
	/* The bus names no primary group; its list holds it. */
	c->gid = (gid_t)-1;
	return has_groups ? 0 : groups_of_uid(c, pe);
}

static bool changes_state(enum proto_method m)
{
	return m == PROTO_M_VM_ATTACH || m == PROTO_M_VM_DETACH || m == PROTO_M_VM_UPDATE ||
	       m == PROTO_M_VM_BIND || m == PROTO_M_SESSION_START || m == PROTO_M_SESSION_STOP;
}

/* The uid that holds the lease a request names, (uid_t)-1 when there is
 * none (or the method names none). */
static uid_t lease_owner(const struct broker *b, const struct proto_request *req)
{
	struct broker_vm_view v;
	struct broker_session_view sv;
	switch (req->method) {
	case PROTO_M_VM_DETACH: return broker_vm_find(b, req->u.vm_detach.name, &v) < 0 ? (uid_t)-1 : v.uid;
	case PROTO_M_VM_UPDATE: return broker_vm_find(b, req->u.vm_update.name, &v) < 0 ? (uid_t)-1 : v.uid;
	case PROTO_M_VM_BIND: return broker_vm_find(b, req->u.vm_bind.name, &v) < 0 ? (uid_t)-1 : v.uid;
	case PROTO_M_VM_SHOW: return broker_vm_find(b, req->u.vm_show.name, &v) < 0 ? (uid_t)-1 : v.uid;
	case PROTO_M_SESSION_STOP:
		return broker_session_find(b, req->u.session_stop.name, &sv) < 0 ? (uid_t)-1 : sv.uid;
	case PROTO_M_SESSION_READ:
		return broker_session_find(b, req->u.session_read.name, &sv) < 0 ? (uid_t)-1 : sv.uid;
	default: return (uid_t)-1;
	}
}

static void put_object_path(struct out *o, const char *prefix, const char *name)
{
	_cleanup_free_ char *path = NULL;
	if (o->r >= 0)
		o->r = sd_bus_path_encode(prefix, name, &path);
	if (o->r >= 0)
		o->r = sd_bus_message_append(o->m, "o", path);
}

/*
 * Calls the broker for req and renders the result into o, at once: views
 * are borrowed until the broker's next change. Returns the broker's answer
 * (pe filled on refusal); o->r says whether the rendering worked.
 */
static int perform(struct dbus_service *s, const struct broker_caller *c, const struct proto_request *req,
		   int route_fd, struct out *o, struct proto_error *pe)
{
	/* only BindVM reads one; the broker owns it from broker_vm_bind on */
	_cleanup_close_ int owned = route_fd;
	struct broker *b = s->broker;
	uint64_t gen = 0;
	int r = 0;
	switch (req->method) {
	case PROTO_M_STATUS: {
		struct broker_status st;
		broker_status(b, &st);
		open_c(o, 'a', "{sv}");
		put_status(o, b, &st);
		close_c(o);
		return 0;
	}
	case PROTO_M_PMU: {
		struct broker_pmu_view p;
		broker_pmu(b, &p);
		open_c(o, 'a', "{sv}");
		put_pmu(o, &p);
		close_c(o);
		return 0;
	}
	case PROTO_M_PLAN: {
		struct broker_viewer w = broker_viewer(b, c);
		open_c(o, 'a', "{sv}");
		put_plan(o, b, &w, &req->u.plan);
		close_c(o);
		return 0;
	}
	case PROTO_M_VM_ATTACH: {
		struct broker_attach_result res = { 0 };
		if ((r = broker_vm_attach(b, c, &req->u.vm_attach, &res, pe)) < 0)
			return r;
		put_object_path(o, PATH_VM, req->u.vm_attach.name);
		open_c(o, 'a', "{sv}");
		put_s(o, "name", req->u.vm_attach.name);
		put_t(o, "generation", res.generation);
		put_flavour(o, b);
		/* The extension's passthrough_vcpus and multiplexed_vcpus, or the
		 * flavour's own counts, as on the socket. */
		nested_begin(o, "granted", "a{sv}");
		put_grants(o, b, res.vcpus_by_route);
		nested_end(o);
		put_b(o, "bound", res.bound);
		close_c(o);
		return 0;
	}
	case PROTO_M_VM_UPDATE:
	case PROTO_M_VM_BIND: {
		bool update = req->method == PROTO_M_VM_UPDATE;
		const char *name = update ? req->u.vm_update.name : req->u.vm_bind.name;
		struct broker_vm_view v;
		r = update ? broker_vm_update(b, c, &req->u.vm_update, &gen, pe)
			   : broker_vm_bind(b, c, &req->u.vm_bind, TAKE_FD(owned), &gen, pe);
		if (r < 0)
			return r;
		open_c(o, 'a', "{sv}");
		put_s(o, "name", name);
		put_t(o, "generation", gen);
		/* what the VMM handed (or did not) made of the VM's routes */
		if (!update && broker_vm_find(b, name, &v) == 0)
			put_vm_routes(o, &v);
		close_c(o);
		return 0;
	}
	case PROTO_M_VM_DETACH:
	case PROTO_M_SESSION_STOP:
		r = req->method == PROTO_M_VM_DETACH ? broker_vm_detach(b, c, req->u.vm_detach.name, &gen, pe)
						     : broker_session_stop(b, c, req->u.session_stop.name, &gen, pe);
		if (r < 0)
			return r;
		if (o->r >= 0)
			o->r = sd_bus_message_append(o->m, "t", gen);
		return 0;
	case PROTO_M_SESSION_START: {
		struct broker_session_view sv;
		if ((r = broker_session_start(b, c, &req->u.session_start, &gen, pe)) < 0)
			return r;
		put_object_path(o, PATH_SESSION, req->u.session_start.name);
		open_c(o, 'a', "{sv}");
		put_s(o, "name", req->u.session_start.name);
		put_t(o, "generation", gen);
		put_flavour(o, b);
		if ((r = broker_session_find(b, req->u.session_start.name, &sv)) < 0 && o->r >= 0)
			o->r = r;
		if (r == 0) {
			put_session_events(o, b, &sv);
			put_note(o, &sv);
		}
		close_c(o);
		return 0;
	}
	case PROTO_M_SESSION_READ: {
		struct broker_reading *rd = NULL;
		if ((r = broker_session_read(b, c, req->u.session_read.name, &rd, pe)) < 0)
			return r;
		open_c(o, 'a', "{sv}");
		put_reading(o, b, rd);
		close_c(o);
		broker_reading_free(rd);
		return 0;
	}
	default:
		return proto_error_set(pe, PROTO_E_UNKNOWN_METHOD, EOPNOTSUPP, NULL,
				       "%s is not served on the bus", proto_method_name(req->method));
	}
}

/* Runs the call through the broker and answers it. */
static void run(struct call *c, bool polkit_allowed)
{
	struct dbus_service *s = c->svc;
	struct broker_caller caller = caller_of(c, polkit_allowed);
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct proto_error pe = { 0 };
	int r = sd_bus_message_new_method_return(c->msg, &reply);
	if (r < 0) {
		/* Nothing done: without a reply the caller would not learn the outcome. */
		r = sd_bus_reply_method_errorf(c->msg, ERROR_PREFIX "Internal", "cannot build a reply: %s",
					       strerror(-r));
	} else {
		struct out o = { .m = reply };
		r = perform(s, &caller, &c->req, TAKE_FD(c->route_fd), &o, &pe);
		if (r >= 0 && changes_state(c->req.method))
			flush(s); /* signals before the answer: a caller reads what it caused */
		if (r < 0)
			r = reply_error(c->msg, &pe);
		else if (o.r < 0)
			/* The change is done; the caller must still hear of it. */
			r = sd_bus_reply_method_errorf(c->msg, ERROR_PREFIX "Internal",
						       "done, but the result could not be sent: %s", strerror(-o.r));
		else
			r = sd_bus_send(NULL, reply, NULL);
	}
	if (r < 0)
		log_warn("dbus: cannot answer %s: %s", c->sender, strerror(-r));
}

static int on_polkit(sd_bus_message *reply, void *userdata, sd_bus_error *e)
{
	_cleanup_(call_freep) struct call *c = userdata;
	const sd_bus_error *pe = sd_bus_message_get_error(reply);
	int authorized = 0, challenge = 0;
	(void)e;
	pending_forget(c->svc, c);
	c->slot = sd_bus_slot_unref(c->slot);
	if (pe) {
		/* No polkit, polkit failing or not answering in time grants nothing. */
		log_notice("dbus: polkit could not check %s (uid %u): %s: treated as not authorized", c->sender,
			   (unsigned)c->uid, pe->message ? pe->message : pe->name);
	} else if (sd_bus_message_enter_container(reply, 'r', "bba{ss}") < 0 ||
		   sd_bus_message_read(reply, "bb", &authorized, &challenge) < 0) {
		log_warn("dbus: unreadable polkit answer for %s: treated as not authorized", c->sender);
		authorized = 0;
	}
	log_info("dbus: polkit: %s (uid %u) %s for " DBUS_SERVICE_POLKIT_ACTION " (%s)", c->sender,
		 (unsigned)c->uid, authorized ? "authorized" : "not authorized", proto_method_name(c->req.method));
	run(c, authorized);
	return 1;
}

/* Asks polkit about the caller, without interaction; the call is answered
 * when polkit answers. Takes c. */
static int ask_polkit(struct call *c)
{
	struct dbus_service *s = c->svc;
	_cleanup_(call_freep) struct call *owned = c;
	struct call **grown = realloc(s->pending, (s->n_pending + 1) * sizeof(*grown));
	int r = grown ? 0 : -ENOMEM;
	if (grown)
		s->pending = grown;
	if (r >= 0)
		r = sd_bus_call_method_async(s->bus, &c->slot, "org.freedesktop.PolicyKit1",
					     "/org/freedesktop/PolicyKit1/Authority",
					     "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization", on_polkit, c,
					     "(sa{sv})sa{ss}us", "system-bus-name", 1, "name", "s", c->sender,
					     DBUS_SERVICE_POLKIT_ACTION, 0, 0, "");
	if (r < 0) {
		log_notice("dbus: cannot ask polkit about %s: %s: treated as not authorized", c->sender,
			   strerror(-r));
		run(c, false);
		return 1;
	}
	s->pending[s->n_pending++] = TAKE_PTR(owned);
	return 1;
}

/*
 * The common path of every method: validate as the socket does, learn who
 * asks, let the broker say whether the caller may; only when it may not,
 * and the caller is no admin by credentials, ask polkit. The broker checks
 * again in the operation itself, with polkit's answer. Takes req and
 * route_fd (BindVM's, or -1), which waits with the call.
 */
static int dispatch_fd(struct dbus_service *s, sd_bus_message *m, struct proto_request *req, int route_fd)
{
	_cleanup_close_ int owned = route_fd;
	struct proto_error pe = { 0 };
	int r = proto_request_validate(req, s->max_cpus, &pe);
	if (r < 0)
		return reply_error(m, &pe);
	_cleanup_(call_freep) struct call *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->route_fd = TAKE_FD(owned);
	const char *sender = sd_bus_message_get_sender(m);
	if (!(c->sender = strdup(sender ? sender : "?")))
		return -ENOMEM;
	c->svc = s;
	c->msg = sd_bus_message_ref(m);
	c->req = *req;
	*req = (struct proto_request){ 0 };
	if ((r = read_creds(s, c, &pe)) < 0 || (r = peer_conn(s, c->sender, &c->conn, &pe)) < 0)
		return reply_error(m, &pe);

	struct broker_caller caller = caller_of(c, false);
	enum broker_right right = broker_method_right(c->req.method);
	uid_t owner = lease_owner(s->broker, &c->req);
	/* No such lease: the operation itself says so, polkit could not help. */
	bool nothing_to_own = right == BROKER_RIGHT_OWNER_OR_ADMIN && owner == (uid_t)-1;
	if (right == BROKER_RIGHT_ANYONE || nothing_to_own ||
	    broker_authorize(s->broker, &caller, c->req.method, owner, &pe) == 0) {
		run(c, false);
		return 1;
	}
	if (broker_caller_is_admin(s->broker, &caller))
		return reply_error(m, &pe);
	return ask_polkit(TAKE_PTR(c));
}

static int dispatch(struct dbus_service *s, sd_bus_message *m, struct proto_request *req)
{
	return dispatch_fd(s, m, req, -1);
}

/* ------------------------------------------------------------- methods */

static int m_attach_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_(request_finip) struct proto_request req = { .method = PROTO_M_VM_ATTACH };
	_cleanup_(options_fini) struct options o = { 0 };
	struct proto_vm_attach *a = &req.u.vm_attach;
	struct proto_error pe = { 0 };
	const char *name;
	(void)e;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	if (take_name(a->name, name, &pe) < 0 || read_options(userdata, m, OPTS_ATTACH, &o, &pe) < 0)
		return reply_error(m, &pe);
	/* Absent priority and class: the daemon's configured defaults apply. */
	a->priority = PROTO_DEFAULT_PRIORITY;
	a->cls = PROTO_CLASS_PREFERRED;
	if ((a->has_priority = o.seen & OPT(OPT_PRIORITY)))
		a->priority = o.priority;
	if ((a->has_class = o.seen & OPT(OPT_CLASS)))
		a->cls = o.cls;
	a->gp = o.gp;
	a->fixed_mask = o.fixed_mask;
	if ((a->has_owner = o.seen & OPT(OPT_OWNER)))
		a->owner = o.owner;
	if ((r = take_vcpus(&o, &a->vcpus, &pe)) == 0)
		r = missing(&pe, "params.vcpus");
	if (r < 0)
		return reply_error(m, &pe);
	return dispatch(userdata, m, &req);
}

static int m_update_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_(request_finip) struct proto_request req = { .method = PROTO_M_VM_UPDATE };
	_cleanup_(options_fini) struct options o = { 0 };
	struct proto_vm_update *u = &req.u.vm_update;
	struct proto_error pe = { 0 };
	const char *name;
	(void)e;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	if (take_name(u->name, name, &pe) < 0 || read_options(userdata, m, OPTS_UPDATE, &o, &pe) < 0)
		return reply_error(m, &pe);
	u->has_priority = o.seen & OPT(OPT_PRIORITY);
	u->priority = o.priority;
	u->has_class = o.seen & OPT(OPT_CLASS);
	u->cls = o.cls;
	u->has_gp = o.seen & OPT(OPT_GP);
	u->gp = o.gp;
	u->has_fixed_mask = o.seen & OPT(OPT_FIXED_MASK);
	u->fixed_mask = o.fixed_mask;
	if ((r = take_vcpus(&o, &u->vcpus, &pe)) < 0)
		return reply_error(m, &pe);
	u->has_vcpus = r > 0;
	return dispatch(userdata, m, &req);
}

static int m_bind_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_(request_finip) struct proto_request req = { .method = PROTO_M_VM_BIND };
	_cleanup_(options_fini) struct options o = { 0 };
	struct proto_vm_bind *q = &req.u.vm_bind;
	struct proto_error pe = { 0 };
	const char *name;
	uint32_t pid;
	(void)e;
	int r = sd_bus_message_read(m, "su", &name, &pid);
	if (r < 0)
		return r;
	if (take_name(q->name, name, &pe) < 0 || read_options(userdata, m, OPTS_BIND, &o, &pe) < 0)
		return reply_error(m, &pe);
	if (pid > INT32_MAX) {
		proto_error_set(&pe, PROTO_E_INVALID_PARAM, ERANGE, "params.pid", "params.pid: must be 1..%d",
				PROTO_MAX_PID);
		return reply_error(m, &pe);
	}
	q->pid = (int32_t)pid;
	if ((q->has_vm_fd = o.seen & OPT(OPT_VM_FD)))
		q->vm_fd = o.vm_fd;
	q->route_fd = o.has_route_fd;
	o.has_route_fd = false;
	return dispatch_fd(userdata, m, &req, q->route_fd ? o.route_fd : -1);
}

static int m_start_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_(request_finip) struct proto_request req = { .method = PROTO_M_SESSION_START };
	_cleanup_(options_fini) struct options o = { 0 };
	struct proto_session_start *q = &req.u.session_start;
	struct proto_error pe = { 0 };
	const char *name, *event;
	(void)e;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	if (take_name(q->name, name, &pe) < 0)
		return reply_error(m, &pe);
	/* Past PROTO_MAX_EVENTS nothing more is kept: the count then says
	 * "too many" to proto_request_validate. */
	q->events = calloc(PROTO_MAX_EVENTS + 1, sizeof(*q->events));
	if (!q->events)
		return -ENOMEM;
	if ((r = sd_bus_message_enter_container(m, 'a', "s")) < 0)
		return r;
	while ((r = sd_bus_message_read_basic(m, 's', &event)) > 0) {
		if (q->n_events > PROTO_MAX_EVENTS)
			continue;
		if (!(q->events[q->n_events] = strdup(event)))
			return -ENOMEM;
		q->n_events++;
	}
	if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
		return r;
	if (read_options(userdata, m, OPTS_SESSION, &o, &pe) < 0)
		return reply_error(m, &pe);
	q->priority = o.seen & OPT(OPT_PRIORITY) ? o.priority : PROTO_DEFAULT_PRIORITY;
	q->cls = o.seen & OPT(OPT_CLASS) ? o.cls : PROTO_CLASS_PREFERRED;
	if ((q->has_cpus = o.seen & OPT(OPT_CPUS)))
		q->cpus = o.cpus;
	q->pid = o.pid;
	q->owner_pid = o.owner_pid;
	/* Refused by the broker on a mediated vPMU, with its reason. */
	q->count_guest = o.count_guest;
	return dispatch(userdata, m, &req);
}

static int name_only(sd_bus_message *m, void *userdata, enum proto_method method)
{
	_cleanup_(request_finip) struct proto_request req = { .method = method };
	struct proto_error pe = { 0 };
	const char *name;
	char *dst = method == PROTO_M_VM_DETACH ? req.u.vm_detach.name
		    : method == PROTO_M_SESSION_STOP ? req.u.session_stop.name : req.u.session_read.name;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	if (take_name(dst, name, &pe) < 0)
		return reply_error(m, &pe);
	return dispatch(userdata, m, &req);
}

static int m_detach_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	(void)e;
	return name_only(m, userdata, PROTO_M_VM_DETACH);
}

static int m_read_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	(void)e;
	return name_only(m, userdata, PROTO_M_SESSION_READ);
}

static int m_stop_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	(void)e;
	return name_only(m, userdata, PROTO_M_SESSION_STOP);
}

static int m_get_plan(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	_cleanup_(request_finip) struct proto_request req = { .method = PROTO_M_PLAN };
	_cleanup_(options_fini) struct options o = { 0 };
	struct proto_error pe = { 0 };
	(void)e;
	if (read_options(userdata, m, OPTS_PLAN, &o, &pe) < 0)
		return reply_error(m, &pe);
	if ((req.u.plan.has_cpus = o.seen & OPT(OPT_CPUS)))
		req.u.plan.cpus = o.cpus;
	return dispatch(userdata, m, &req);
}

static int m_get_pmu(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct proto_request req = { .method = PROTO_M_PMU };
	(void)e;
	return dispatch(userdata, m, &req);
}

static int m_get_status(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct proto_request req = { .method = PROTO_M_STATUS };
	(void)e;
	return dispatch(userdata, m, &req);
}

/* ------------------------------------------------------------ objects */

#define PROP_ARGS sd_bus *bus, const char *path, const char *iface, const char *prop, \
		  sd_bus_message *reply, void *userdata, sd_bus_error *e
#define PROP_UNUSED (void)bus, (void)iface

/* VM and session objects share their plumbing; the kind says which. */
enum kind { KIND_VM, KIND_SESSION };
static const char *const kind_prefix[] = { [KIND_VM] = PATH_VM, [KIND_SESSION] = PATH_SESSION };

/* The lease name in an object path; -ENOENT when it names none. */
static int name_of_path(const char *path, enum kind k, char **name)
{
	int r = sd_bus_path_decode(path, kind_prefix[k], name);
	if (r <= 0)
		return r < 0 ? r : -ENOENT;
	if (strlen(*name) <= PROTO_NAME_MAX)
		return 0;
	free(*name);
	*name = NULL;
	return -ENOENT;
}

/* The VM or session an object path names, read from the broker now. */
static int vm_of_path(const struct dbus_service *s, const char *path, struct broker_vm_view *v)
{
	_cleanup_free_ char *name = NULL;
	int r = name_of_path(path, KIND_VM, &name);
	return r < 0 ? r : broker_vm_find(s->broker, name, v);
}

static int session_of_path(const struct dbus_service *s, const char *path, struct broker_session_view *v)
{
	_cleanup_free_ char *name = NULL;
	int r = name_of_path(path, KIND_SESSION, &name);
	return r < 0 ? r : broker_session_find(s->broker, name, v);
}

/* sd-bus's object lookup: 1 when the path names a lease now. */
static int object_find(const struct dbus_service *s, enum kind k, const char *path)
{
	_cleanup_free_ char *name = NULL;
	int r = name_of_path(path, k, &name);
	if (r >= 0)
		r = k == KIND_VM ? broker_vm_find(s->broker, name, NULL) : broker_session_find(s->broker, name, NULL);
	return r == -ENOENT ? 0 : r < 0 ? r : 1;
}

static int vm_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
		   sd_bus_error *e)
{
	(void)bus, (void)iface, (void)e;
	int r = object_find(userdata, KIND_VM, path);
	if (r > 0)
		*found = userdata;
	return r;
}

static int session_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
			sd_bus_error *e)
{
	(void)bus, (void)iface, (void)e;
	int r = object_find(userdata, KIND_SESSION, path);
	if (r > 0)
		*found = userdata;
	return r;
}

/* Every VM's or session's object path, in arrival order. */
static int enumerate(const struct dbus_service *s, enum kind k, char ***nodes)
{
	size_t n = k == KIND_VM ? broker_vm_count(s->broker) : broker_session_count(s->broker);
	_cleanup_strv_free_ char **v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct broker_vm_view vv;
		struct broker_session_view sv;
		if (k == KIND_VM)
			broker_vm_at(s->broker, i, &vv);
		else
			broker_session_at(s->broker, i, &sv);
		int r = sd_bus_path_encode(kind_prefix[k], k == KIND_VM ? vv.name : sv.name, &v[i]);
		if (r < 0)
			return r;
	}
	*nodes = TAKE_PTR(v);
	return 1;
}

static int vm_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *e)
{
	(void)bus, (void)prefix, (void)e;
	return enumerate(userdata, KIND_VM, nodes);
}

static int session_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
			     sd_bus_error *e)
{
	(void)bus, (void)prefix, (void)e;
	return enumerate(userdata, KIND_SESSION, nodes);
}

/*
 * Who reads the properties being answered: the sender of the call that
 * asked (Get, GetAll, GetManagedObjects), as the broker lets it see other
 * users' leases (broker_viewer), from its bus credentials as a method's
 * caller. A property that depends on the viewer is never put in a signal
 * (EMITS_INVALIDATION: sd-bus leaves it out of InterfacesAdded and names it
 * only in PropertiesChanged's invalidated list); should one be asked for
 * anything but a method's reply, or the credentials be unreadable, the
 * viewer sees nobody's lease whole.
 */
static int count_incoming(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct dbus_service *s = userdata;
	(void)m;
	(void)e;
	/* never 0, which says "no view read" */
	if (++s->incoming == 0)
		s->incoming = 1;
	return 0;
}

static struct broker_viewer getter_viewer(struct dbus_service *s, sd_bus *bus, sd_bus_message *reply)
{
	const struct broker_viewer nobody = { .uid = (uid_t)-1, .sees_all = false };
	uint8_t type = 0;
	sd_bus_message *call = sd_bus_get_current_message(bus);
	if (!call || sd_bus_message_get_type(reply, &type) < 0 || type != SD_BUS_MESSAGE_METHOD_RETURN ||
	    !sd_bus_message_get_sender(call))
		return nobody;
	const char *sender = sd_bus_message_get_sender(call);
	if (s->viewer_of && s->viewer_of == s->incoming)
		return s->viewer;
	struct call probe = { .svc = s, .sender = (char *)sender };
	struct proto_error pe = { 0 };
	int r = read_creds(s, &probe, &pe);
	struct broker_caller caller = caller_of(&probe, false);
	struct broker_viewer w = r < 0 ? nobody : broker_viewer(s->broker, &caller);
	free(probe.groups);
	/* Any caller can make this happen (ask, then leave the bus before the
	 * credentials are read): at most one line a minute. */
	uint64_t now = 0;
	if (r < 0 && sd_event_now(s->event, CLOCK_MONOTONIC, &now) >= 0 &&
	    (!s->creds_warned_usec || now - s->creds_warned_usec >= 60 * 1000000ULL)) {
		s->creds_warned_usec = now;
		log_warn("dbus: %s: properties of other users' leases withheld (logged once a minute)", pe.message);
	}
	s->viewer_of = s->incoming;
	s->viewer = w;
	return w;
}

static int vm_prop(PROP_ARGS)
{
	struct dbus_service *s = userdata;
	struct broker_vm_view v;
	PROP_UNUSED;
	if (vm_of_path(s, path, &v) < 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_UNKNOWN_OBJECT, "no VM at %s", path);
	if (!strcmp(prop, "Name"))
		return sd_bus_message_append(reply, "s", v.name);
	/* The properties that depend on who asks (vm_vtable: invalidation only). */
	if (!strcmp(prop, "Origin") || !strcmp(prop, "Owner") || !strcmp(prop, "Withheld")) {
		struct broker_viewer w = getter_viewer(s, bus, reply);
		broker_vm_view_withhold(&w, &v);
		if (!strcmp(prop, "Withheld"))
			return sd_bus_message_append(reply, "b", v.withheld);
		if (!strcmp(prop, "Origin"))
			return sd_bus_message_append(reply, "s", v.origin ? v.origin : "");
		return sd_bus_message_append(reply, "(ii)", (int32_t)(v.bound ? v.vmm_pid : 0),
					     (int32_t)(v.bound ? v.vm_fd : -1));
	}
	if (!strcmp(prop, "Priority"))
		return sd_bus_message_append(reply, "u", v.priority);
	if (!strcmp(prop, "Class"))
		return sd_bus_message_append(reply, "u", wire_class(v.cls));
	if (!strcmp(prop, "GeneralCounters"))
		return sd_bus_message_append(reply, "u", v.gp);
	if (!strcmp(prop, "FixedCounterMask"))
		return sd_bus_message_append(reply, "u", v.fixed_mask);
	if (!strcmp(prop, "PassthroughVcpus"))
		return sd_bus_message_append(reply, "u", (uint32_t)v.passthrough_vcpus);
	if (!strcmp(prop, "RoutesKind"))
		return sd_bus_message_append(reply, "u", wire_enum(routes_kind_names, v.routes));
	if (!strcmp(prop, "RoutesWhy"))
		return sd_bus_message_append(reply, "s", v.routes_why ? v.routes_why : "");
	struct out o = { .m = reply };
	if (!strcmp(prop, "Granted")) {
		open_c(&o, 'a', "{sv}");
		put_grants(&o, s->broker, v.vcpus_by_route);
		close_c(&o);
		return o.r;
	}
	/* Routes: per vCPU, its index, CPU list, gp routes, fixed routes. */
	open_c(&o, 'a', "(usauau)");
	for (uint32_t i = 0; i < v.n_vcpus && o.r >= 0; i++) {
		struct broker_vcpu_view vc;
		int r = broker_vm_vcpu(s->broker, v.id, i, &vc);
		if (r < 0)
			return r;
		_cleanup_free_ char *cpus = cpulist_to_text(vc.cpus);
		if (!cpus)
			return -ENOMEM;
		open_c(&o, 'r', "usauau");
		if (o.r >= 0)
			o.r = sd_bus_message_append(reply, "us", vc.vcpu, cpus);
		append_routes(&o, vc.n_gp, vc.gp, vc.pmu_fixed_mask, vc.fixed, true);
		append_routes(&o, vc.n_gp, vc.gp, vc.pmu_fixed_mask, vc.fixed, false);
		close_c(&o);
	}
	close_c(&o);
	return o.r;
}

static int session_prop(PROP_ARGS)
{
	struct dbus_service *s = userdata;
	struct broker_session_view v;
	PROP_UNUSED;
	if (session_of_path(s, path, &v) < 0)
		return sd_bus_error_setf(e, SD_BUS_ERROR_UNKNOWN_OBJECT, "no session at %s", path);
	/* The properties that depend on who asks (session_vtable: invalidation
	 * only); withheld, the events are none and the pids 0. */
	if (!strcmp(prop, "Pid") || !strcmp(prop, "OwnerPid") || !strcmp(prop, "Events") ||
	    !strcmp(prop, "EventReasons") || !strcmp(prop, "Withheld")) {
		struct broker_viewer w = getter_viewer(s, bus, reply);
		broker_session_view_withhold(&w, &v);
	}
	if (!strcmp(prop, "Withheld"))
		return sd_bus_message_append(reply, "b", v.withheld);
	if (!strcmp(prop, "Name"))
		return sd_bus_message_append(reply, "s", v.name);
	if (!strcmp(prop, "Priority"))
		return sd_bus_message_append(reply, "u", v.priority);
	if (!strcmp(prop, "Class"))
		return sd_bus_message_append(reply, "u", wire_class(v.cls));
	if (!strcmp(prop, "Cpus")) {
		_cleanup_free_ char *cpus = v.has_cpus ? cpulist_to_text(v.cpus) : strdup("");
		return cpus ? sd_bus_message_append(reply, "s", cpus) : -ENOMEM;
	}
	if (!strcmp(prop, "Pid"))
		return sd_bus_message_append(reply, "i", (int32_t)(v.has_cpus ? 0 : v.pid));
	if (!strcmp(prop, "OwnerPid"))
		return sd_bus_message_append(reply, "i", (int32_t)v.owner_pid);
	if (!strcmp(prop, "Note"))
		return sd_bus_message_append(reply, "s", v.note ? v.note : "");
	if (!strcmp(prop, "EventReasons")) {
		/* One per event, as Events, "" where there is nothing to explain:
		 * Events' struct cannot grow without changing its type. */
		int r = sd_bus_message_open_container(reply, 'a', "s");
		for (uint32_t i = 0; r >= 0 && i < v.n_events; i++) {
			struct broker_event_view ev;
			if ((r = broker_session_event(s->broker, v.id, i, &ev)) < 0)
				return r;
			r = sd_bus_message_append_basic(reply, 's', ev.reason);
		}
		return r < 0 ? r : sd_bus_message_close_container(reply);
	}
	/* Events: event, placement, CPUs with a dedicated counter, time share. */
	int r = sd_bus_message_open_container(reply, 'a', "(suud)");
	for (uint32_t i = 0; r >= 0 && i < v.n_events; i++) {
		struct broker_event_view ev;
		if ((r = broker_session_event(s->broker, v.id, i, &ev)) < 0)
			return r;
		r = sd_bus_message_append(reply, "(suud)", ev.event, wire_placement(ev.placement),
					  (uint32_t)ev.dedicated_cpus, ev.share);
	}
	return r < 0 ? r : sd_bus_message_close_container(reply);
}

static const sd_bus_vtable vm_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	/* Origin, Owner and Withheld depend on who asks: never in a signal. */
	SD_BUS_PROPERTY("Origin", "s", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("Priority", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Class", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("GeneralCounters", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("FixedCounterMask", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Owner", "(ii)", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("PassthroughVcpus", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Routes", "a(usauau)", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Granted", "a{sv}", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("RoutesKind", "u", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("RoutesWhy", "s", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Withheld", "b", vm_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_VTABLE_END
};

static const sd_bus_vtable session_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", session_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Priority", "u", session_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Class", "u", session_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Cpus", "s", session_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	/* Pid, OwnerPid, Events, EventReasons and Withheld depend on who
	 * asks: never in a signal. */
	SD_BUS_PROPERTY("Pid", "i", session_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("OwnerPid", "i", session_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("Events", "a(suud)", session_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("EventReasons", "as", session_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_PROPERTY("Note", "s", session_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Withheld", "b", session_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
	SD_BUS_VTABLE_END
};

static int mgr_prop(PROP_ARGS)
{
	const struct dbus_service *s = userdata;
	PROP_UNUSED, (void)path, (void)e;
	if (!strcmp(prop, "Generation"))
		return sd_bus_message_append(reply, "t", broker_generation(s->broker));
	if (!strcmp(prop, "VmCount"))
		return sd_bus_message_append(reply, "u", (uint32_t)broker_vm_count(s->broker));
	if (!strcmp(prop, "SessionCount"))
		return sd_bus_message_append(reply, "u", (uint32_t)broker_session_count(s->broker));
	struct out o = { .m = reply };
	if (!strcmp(prop, "Pmu")) {
		struct broker_pmu_view p;
		broker_pmu(s->broker, &p);
		open_c(&o, 'a', "{sv}");
		put_pmu(&o, &p);
		close_c(&o);
		return o.r;
	}
	struct broker_status st;
	broker_status(s->broker, &st);
	if (!strcmp(prop, "Version"))
		return sd_bus_message_append(reply, "s", st.server);
	if (!strcmp(prop, "Backend"))
		return sd_bus_message_append(reply, "u", wire_enum(backend_names, st.kvm_backend));
	if (!strcmp(prop, "BackendEnforced"))
		return sd_bus_message_append(reply, "b", (int)st.kvm_enforced);
	if (!strcmp(prop, "Flavour"))
		return sd_bus_message_append(reply, "u", wire_enum(flavour_names, st.flavour));
	if (!strcmp(prop, "RoutesKind"))
		return sd_bus_message_append(reply, "u", wire_enum(routes_kind_names, st.routes));
	if (!strcmp(prop, "FlavourEffect"))
		return sd_bus_message_append(reply, "s", st.flavour_effect);
	if (!strcmp(prop, "Warnings"))
		return sd_bus_message_append_strv(reply, (char **)st.warnings);
	open_c(&o, 'a', "{sv}");
	put_backends(&o, &st);
	close_c(&o);
	return o.r;
}

static const sd_bus_vtable manager_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Version", "s", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backend", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("BackendEnforced", "b", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backends", "a{sv}", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	/* The broker's flavour and its warnings are fixed at start. */
	SD_BUS_PROPERTY("Flavour", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("RoutesKind", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("FlavourEffect", "s", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Warnings", "as", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Pmu", "a{sv}", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Generation", "t", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("VmCount", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("SessionCount", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	/* Authorization happens inside (the broker, with polkit's answer when
	 * credentials are not enough): sd-bus's own CAP_SYS_ADMIN check would
	 * refuse admin-group members and polkit-authorized users. */
	SD_BUS_METHOD_WITH_ARGS("AttachVM", SD_BUS_ARGS("s", name, "a{sv}", options),
				SD_BUS_RESULT("o", vm, "a{sv}", result), m_attach_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("UpdateVM", SD_BUS_ARGS("s", name, "a{sv}", changes),
				SD_BUS_RESULT("a{sv}", result), m_update_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("BindVM", SD_BUS_ARGS("s", name, "u", pid, "a{sv}", options),
				SD_BUS_RESULT("a{sv}", result), m_bind_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("DetachVM", SD_BUS_ARGS("s", name), SD_BUS_RESULT("t", generation),
				m_detach_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("StartSession", SD_BUS_ARGS("s", name, "as", events, "a{sv}", options),
				SD_BUS_RESULT("o", session, "a{sv}", result), m_start_session,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("ReadSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a{sv}", result),
				m_read_session, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("StopSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("t", generation),
				m_stop_session, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetPlan", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("a{sv}", plan),
				m_get_plan, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetPmu", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", pmu), m_get_pmu,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetStatus", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", status), m_get_status,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL_WITH_ARGS("PlanChanged", SD_BUS_ARGS("t", generation, "s", reason, "aa{sv}", changes), 0),
	SD_BUS_VTABLE_END
};

/* ------------------------------------------------- snapshots and signals */

static int id_set_add(struct id_set *x, const uint64_t *ids, size_t n)
{
	if (n == 0)
		return 0;
	if (x->n + n > x->cap) {
		size_t cap = x->cap ? x->cap : 16;
		while (cap < x->n + n)
			cap *= 2;
		uint64_t *v = realloc(x->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		x->v = v;
		x->cap = cap;
	}
	memcpy(x->v + x->n, ids, n * sizeof(*ids));
	x->n += n;
	return 0;
}

static int cmp_u64(const void *pa, const void *pb)
{
	uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
	return a < b ? -1 : a > b;
}

/* Sorted, without repeats. */
static void id_set_settle(struct id_set *x)
{
	if (x->n == 0)
		return;
	qsort(x->v, x->n, sizeof(*x->v), cmp_u64);
	size_t k = 0;
	for (size_t i = 0; i < x->n; i++)
		if (k == 0 || x->v[k - 1] != x->v[i])
			x->v[k++] = x->v[i];
	x->n = k;
}

static void id_set_drop_front(struct id_set *x, size_t k)
{
	if (k == 0)
		return;
	memmove(x->v, x->v + k, (x->n - k) * sizeof(*x->v));
	x->n -= k;
}

static void vm_snap_free(struct vm_snap *v)
{
	if (v) {
		free(v->routes);
		free(v->routes_why);
	}
	free(v);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct vm_snap *, vm_snap_free)

static void session_snap_free(struct session_snap *v)
{
	if (v)
		free(v->events);
	free(v);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct session_snap *, session_snap_free)

/*
 * Leases arrive with increasing ids, so adding one appends; removing one
 * moves pointers only. *pos: where id is, or where it would go.
 */
static bool snap_pos(const struct snap_map *m, uint64_t id, uint64_t (*id_of)(const void *), size_t *pos)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (id_of(m->v[mid]) < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*pos = lo;
	return lo < m->n && id_of(m->v[lo]) == id;
}

static uint64_t vm_snap_id(const void *p)
{
	return ((const struct vm_snap *)p)->id;
}

static uint64_t session_snap_id(const void *p)
{
	return ((const struct session_snap *)p)->id;
}

static int snap_insert(struct snap_map *m, size_t pos, void *item)
{
	if (m->n == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 64;
		void **a = realloc(m->v, ncap * sizeof(*a));
		if (!a)
			return -ENOMEM;
		m->v = a;
		m->cap = ncap;
	}
	memmove(m->v + pos + 1, m->v + pos, (m->n - pos) * sizeof(*m->v));
	m->v[pos] = item;
	m->n++;
	return 0;
}

static void snap_remove(struct snap_map *m, size_t pos)
{
	memmove(m->v + pos, m->v + pos + 1, (m->n - pos - 1) * sizeof(*m->v));
	m->n--;
}

/* The Routes property's content as bytes, per vCPU: its CPUs (as far as
 * CPU numbers go on this host), then its routes. Equal bytes, equal value. */
static int routes_bytes(const struct dbus_service *s, const struct broker_vm_view *v, struct vm_snap *out)
{
	size_t words = ((size_t)s->max_cpus + 63) / 64;
	if (words > CPULIST_WORDS)
		words = CPULIST_WORDS;
	const size_t per = words * sizeof(uint64_t) + 32 + 16 + 2 * sizeof(uint32_t);
	_cleanup_free_ uint8_t *buf = calloc(v->n_vcpus ? v->n_vcpus : 1, per);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		struct broker_vcpu_view vc;
		uint8_t *p = buf + (size_t)i * per;
		int r = broker_vm_vcpu(s->broker, v->id, i, &vc);
		if (r < 0)
			return r;
		memcpy(p, vc.cpus->bits, words * sizeof(uint64_t));
		p += words * sizeof(uint64_t);
		for (unsigned j = 0; j < vc.n_gp && j < 32; j++)
			p[j] = vc.gp[j];
		for (unsigned j = 0; j < 16; j++)
			if (vc.pmu_fixed_mask & (1u << j))
				p[32 + j] = vc.fixed[j];
		uint32_t shape[2] = { vc.n_gp, vc.pmu_fixed_mask };
		memcpy(p + 48, shape, sizeof(shape));
	}
	out->routes = TAKE_PTR(buf);
	out->routes_len = (size_t)v->n_vcpus * per;
	return 0;
}

static int snap_vm(const struct dbus_service *s, const struct broker_vm_view *vv, struct vm_snap **out)
{
	_cleanup_(vm_snap_freep) struct vm_snap *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	*v = (struct vm_snap){ .id = vv->id, .priority = vv->priority, .gp = vv->gp, .fixed_mask = vv->fixed_mask,
			       .cls = vv->cls, .bound = vv->bound, .vmm_pid = vv->bound ? vv->vmm_pid : 0,
			       .vm_fd = vv->bound ? vv->vm_fd : -1, .passthrough_vcpus = vv->passthrough_vcpus };
	memcpy(v->vcpus_by_route, vv->vcpus_by_route, sizeof(v->vcpus_by_route));
	snprintf(v->name, sizeof(v->name), "%s", vv->name);
	v->routes_kind = wire_enum(routes_kind_names, vv->routes);
	if (!(v->routes_why = strdup(vv->routes_why ? vv->routes_why : "")))
		return -ENOMEM;
	int r = routes_bytes(s, vv, v);
	if (r < 0)
		return r;
	*out = TAKE_PTR(v);
	return 0;
}

static int snap_session(const struct dbus_service *s, const struct broker_session_view *sv,
			struct session_snap **out)
{
	_cleanup_(session_snap_freep) struct session_snap *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->id = sv->id;
	snprintf(v->name, sizeof(v->name), "%s", sv->name);
	if (!(v->events = calloc(sv->n_events ? sv->n_events : 1, sizeof(*v->events))))
		return -ENOMEM;
	v->n_events = sv->n_events;
	for (uint32_t e = 0; e < sv->n_events; e++) {
		struct broker_event_view ev;
		if (broker_session_event(s->broker, sv->id, e, &ev) < 0)
			continue;
		v->events[e] = (struct event_snap){ .placement = ev.placement, .dedicated_cpus = ev.dedicated_cpus,
						    .share = ev.share };
		snprintf(v->events[e].reason, sizeof(v->events[e].reason), "%s", ev.reason);
	}
	*out = TAKE_PTR(v);
	return 0;
}

static void emit_objects(struct dbus_service *s, const char *prefix, const char *name, const char *iface,
			 bool added)
{
	_cleanup_free_ char *path = NULL;
	int r = sd_bus_path_encode(prefix, name, &path);
	if (r >= 0)
		r = added ? sd_bus_emit_interfaces_added(s->bus, path, iface, NULL)
			  : sd_bus_emit_interfaces_removed(s->bus, path, iface, NULL);
	if (r < 0)
		log_warn("dbus: cannot announce %s %s: %s", name, added ? "added" : "removed", strerror(-r));
}

static void emit_changed(struct dbus_service *s, const char *prefix, const char *name, const char *iface,
			 char **props)
{
	_cleanup_free_ char *path = NULL;
	if (!props[0])
		return;
	int r = sd_bus_path_encode(prefix, name, &path);
	if (r >= 0)
		r = sd_bus_emit_properties_changed_strv(s->bus, path, iface, props);
	if (r < 0)
		log_warn("dbus: cannot announce changes of %s: %s", name, strerror(-r));
}

static void diff_vm(struct dbus_service *s, const struct vm_snap *a, const struct vm_snap *b)
{
	char *props[11];
	size_t k = 0;
	if (a->priority != b->priority)
		props[k++] = "Priority";
	if (a->cls != b->cls)
		props[k++] = "Class";
	if (a->gp != b->gp)
		props[k++] = "GeneralCounters";
	if (a->fixed_mask != b->fixed_mask)
		props[k++] = "FixedCounterMask";
	if (a->bound != b->bound || a->vmm_pid != b->vmm_pid || a->vm_fd != b->vm_fd)
		props[k++] = "Owner";
	if (a->passthrough_vcpus != b->passthrough_vcpus)
		props[k++] = "PassthroughVcpus";
	if (memcmp(a->vcpus_by_route, b->vcpus_by_route, sizeof(a->vcpus_by_route)))
		props[k++] = "Granted";
	if (a->routes_len != b->routes_len || memcmp(a->routes, b->routes, a->routes_len))
		props[k++] = "Routes";
	if (a->routes_kind != b->routes_kind)
		props[k++] = "RoutesKind";
	if (strcmp(a->routes_why, b->routes_why))
		props[k++] = "RoutesWhy";
	props[k] = NULL;
	emit_changed(s, PATH_VM, b->name, IFACE_VM, props);
}

static void diff_session(struct dbus_service *s, const struct session_snap *a, const struct session_snap *b)
{
	char *props[3];
	size_t k = 0;
	bool same = a->n_events == b->n_events, same_reasons = same;
	for (uint32_t e = 0; a->n_events == b->n_events && e < b->n_events; e++) {
		same = same && a->events[e].placement == b->events[e].placement &&
		       a->events[e].dedicated_cpus == b->events[e].dedicated_cpus &&
		       a->events[e].share == b->events[e].share;
		same_reasons = same_reasons && !strcmp(a->events[e].reason, b->events[e].reason);
	}
	if (!same)
		props[k++] = "Events";
	if (!same_reasons)
		props[k++] = "EventReasons";
	props[k] = NULL;
	emit_changed(s, PATH_SESSION, b->name, IFACE_SESSION, props);
}

/*
 * Brings one VM's object in line with the broker: added, removed, or
 * PropertiesChanged for what differs from its snapshot; announce false
 * (the first sync) only takes the snapshot. Idempotent.
 */
static int sync_vm(struct dbus_service *s, uint64_t id, bool announce)
{
	size_t pos;
	bool known = snap_pos(&s->vms, id, vm_snap_id, &pos);
	struct vm_snap *was = known ? s->vms.v[pos] : NULL;
	struct broker_vm_view vv;
	if (broker_vm_find_id(s->broker, id, &vv) < 0) {
		if (!known)
			return 0;
		if (announce)
			emit_objects(s, PATH_VM, was->name, IFACE_VM, false);
		vm_snap_free(was);
		snap_remove(&s->vms, pos);
		return 0;
	}
	_cleanup_(vm_snap_freep) struct vm_snap *now = NULL;
	int r = snap_vm(s, &vv, &now);
	if (r < 0)
		return r;
	if (known) {
		if (announce)
			diff_vm(s, was, now);
		vm_snap_free(was);
		s->vms.v[pos] = TAKE_PTR(now);
		return 0;
	}
	if ((r = snap_insert(&s->vms, pos, now)) < 0)
		return r;
	if (announce)
		emit_objects(s, PATH_VM, now->name, IFACE_VM, true);
	TAKE_PTR(now);
	return 0;
}

static int sync_session(struct dbus_service *s, uint64_t id, bool announce)
{
	size_t pos;
	bool known = snap_pos(&s->sessions, id, session_snap_id, &pos);
	struct session_snap *was = known ? s->sessions.v[pos] : NULL;
	struct broker_session_view sv;
	if (broker_session_find_id(s->broker, id, &sv) < 0) {
		if (!known)
			return 0;
		if (announce)
			emit_objects(s, PATH_SESSION, was->name, IFACE_SESSION, false);
		session_snap_free(was);
		snap_remove(&s->sessions, pos);
		return 0;
	}
	_cleanup_(session_snap_freep) struct session_snap *now = NULL;
	int r = snap_session(s, &sv, &now);
	if (r < 0)
		return r;
	if (known) {
		if (announce)
			diff_session(s, was, now);
		session_snap_free(was);
		s->sessions.v[pos] = TAKE_PTR(now);
		return 0;
	}
	if ((r = snap_insert(&s->sessions, pos, now)) < 0)
		return r;
	if (announce)
		emit_objects(s, PATH_SESSION, now->name, IFACE_SESSION, true);
	TAKE_PTR(now);
	return 0;
}

/* Every lease the broker holds or the snapshots remember, as ids. */
static int every_lease(struct dbus_service *s)
{
	int r = 0;
	for (size_t i = 0; r >= 0 && i < broker_vm_count(s->broker); i++) {
		struct broker_vm_view vv;
		broker_vm_at(s->broker, i, &vv);
		r = id_set_add(&s->dirty_vms, &vv.id, 1);
	}
	for (size_t i = 0; r >= 0 && i < s->vms.n; i++)
		r = id_set_add(&s->dirty_vms, &((const struct vm_snap *)s->vms.v[i])->id, 1);
	for (size_t i = 0; r >= 0 && i < broker_session_count(s->broker); i++) {
		struct broker_session_view sv;
		broker_session_at(s->broker, i, &sv);
		r = id_set_add(&s->dirty_sessions, &sv.id, 1);
	}
	for (size_t i = 0; r >= 0 && i < s->sessions.n; i++)
		r = id_set_add(&s->dirty_sessions, &((const struct session_snap *)s->sessions.v[i])->id, 1);
	return r;
}

/*
 * Brings the bus in line with the broker for the leases events named
 * since the last call (every lease at the first call, or after a name
 * was lost): objects added and removed, PropertiesChanged for what
 * differs from their snapshots, and the manager's counts. Idempotent: a
 * second call with no change in between emits nothing.
 */
static void sync_objects(struct dbus_service *s)
{
	bool announce = s->synced;
	size_t n_vms = s->vms.n, n_sessions = s->sessions.n;
	int r = 0;
	if (!s->synced || s->dirty_all) {
		r = every_lease(s);
		s->dirty_all = r < 0; /* the next flush tries the walk again */
	}
	id_set_settle(&s->dirty_vms);
	id_set_settle(&s->dirty_sessions);
	/* done_*: how many are in line; on failure the rest, the failed
	 * one first, wait for the next change. */
	size_t done_vms = 0, done_sessions = 0;
	while (r >= 0 && done_vms < s->dirty_vms.n)
		if ((r = sync_vm(s, s->dirty_vms.v[done_vms], announce)) >= 0)
			done_vms++;
	while (r >= 0 && done_sessions < s->dirty_sessions.n)
		if ((r = sync_session(s, s->dirty_sessions.v[done_sessions], announce)) >= 0)
			done_sessions++;
	if (r < 0) {
		id_set_drop_front(&s->dirty_vms, done_vms);
		id_set_drop_front(&s->dirty_sessions, done_sessions);
		log_warn("dbus: cannot follow the broker's objects (%s): their signals wait for the next change",
			 strerror(-r));
	} else {
		s->dirty_vms.n = s->dirty_sessions.n = 0;
	}
	uint64_t generation = broker_generation(s->broker);
	if (announce) {
		char *props[4];
		size_t k = 0;
		if (generation != s->generation)
			props[k++] = "Generation";
		if (n_vms != s->vms.n)
			props[k++] = "VmCount";
		if (n_sessions != s->sessions.n)
			props[k++] = "SessionCount";
		props[k] = NULL;
		if (k && (r = sd_bus_emit_properties_changed_strv(s->bus, DBUS_SERVICE_PATH, IFACE_MANAGER, props)) < 0)
			log_warn("dbus: cannot announce the manager's changes: %s", strerror(-r));
	}
	s->generation = generation;
	s->synced = true;
}

/* Objects first, so that an agent reacting to PlanChanged reads the new
 * properties. */
static void flush(struct dbus_service *s)
{
	sd_event_source_set_enabled(s->flush_src, SD_EVENT_OFF);
	sync_objects(s);
	for (size_t i = 0; i < s->n_signals; i++) {
		int r = sd_bus_send(s->bus, s->signals[i], NULL);
		if (r < 0)
			log_warn("dbus: cannot emit PlanChanged: %s", strerror(-r));
		sd_bus_message_unref(s->signals[i]);
	}
	s->n_signals = 0;
}

static int on_flush(sd_event_source *src, void *userdata)
{
	(void)src;
	flush(userdata);
	return 0;
}

/* Broker events arrive from inside broker calls, with borrowed data: the
 * signal is built now, and sent from the event loop (or right after the
 * D-Bus call that caused it), after the objects' own signals. */
static void on_broker_event(const struct broker_event *ev, void *userdata)
{
	struct dbus_service *s = userdata;
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
	struct out o = { 0 };
	o.r = sd_bus_message_new_signal(s->bus, &sig, DBUS_SERVICE_PATH, IFACE_MANAGER, "PlanChanged");
	o.m = sig;
	if (o.r >= 0)
		o.r = sd_bus_message_append(sig, "ts", ev->generation, ev->reason ? ev->reason : "");
	open_c(&o, 'a', "a{sv}");
	for (size_t i = 0; i < ev->n_changes; i++)
		put_change(&o, &ev->changes[i]);
	close_c(&o);
	sd_bus_message **grown = o.r < 0 ? NULL : realloc(s->signals, (s->n_signals + 1) * sizeof(*grown));
	if (!grown) {
		log_warn("dbus: cannot build PlanChanged for generation %" PRIu64 ": %s", ev->generation,
			 strerror(o.r < 0 ? -o.r : ENOMEM));
	} else {
		s->signals = grown;
		s->signals[s->n_signals++] = TAKE_PTR(sig);
	}
	/* What to look at when flushing: the leases the event names. */
	const uint64_t *vms[] = { ev->vms_added, ev->vms_removed, ev->vms_changed };
	const size_t n_vms[] = { ev->n_vms_added, ev->n_vms_removed, ev->n_vms_changed };
	const uint64_t *sessions[] = { ev->sessions_added, ev->sessions_removed, ev->sessions_changed };
	const size_t n_sessions[] = { ev->n_sessions_added, ev->n_sessions_removed, ev->n_sessions_changed };
	for (size_t i = 0; i < 3 && !s->dirty_all; i++)
		if (id_set_add(&s->dirty_vms, vms[i], n_vms[i]) < 0 ||
		    id_set_add(&s->dirty_sessions, sessions[i], n_sessions[i]) < 0)
			s->dirty_all = true;
	sd_event_source_set_enabled(s->flush_src, SD_EVENT_ONESHOT);
}

/* ------------------------------------------------------------ lifecycle */

int dbus_service_new(sd_event *event, struct broker *broker, const struct config *cfg,
		     const char *bus_address, unsigned max_cpus, struct dbus_service **out, char *why,
		     size_t whylen)
{
	struct dbus_service *s = calloc(1, sizeof(*s));
	const char *step = "";
	int r;
	if (!s)
		return -ENOMEM;
	s->event = event;
	s->broker = broker;
	/* Who is an admin is the broker's to know from its own configuration. */
	(void)cfg;
	s->max_cpus = max_cpus;
	if (bus_address) {
		step = "connecting to the bus";
		if ((r = sd_bus_new(&s->bus)) < 0 || (r = sd_bus_set_address(s->bus, bus_address)) < 0 ||
		    (r = sd_bus_set_bus_client(s->bus, 1)) < 0 || (r = sd_bus_start(s->bus)) < 0)
			goto fail;
	} else {
		step = "connecting to the system bus";
		if ((r = sd_bus_open_system(&s->bus)) < 0)
			goto fail;
	}
	sd_bus_set_description(s->bus, "vpmud-dbus");
	step = "exporting objects";
	if ((r = sd_bus_add_filter(s->bus, NULL, count_incoming, s)) < 0)
		goto fail;
	if ((r = sd_bus_add_object_vtable(s->bus, NULL, DBUS_SERVICE_PATH, IFACE_MANAGER, manager_vtable, s)) < 0 ||
	    (r = sd_bus_add_fallback_vtable(s->bus, NULL, PATH_VM, IFACE_VM, vm_vtable, vm_find, s)) < 0 ||
	    (r = sd_bus_add_node_enumerator(s->bus, NULL, PATH_VM, vm_enumerate, s)) < 0 ||
	    (r = sd_bus_add_fallback_vtable(s->bus, NULL, PATH_SESSION, IFACE_SESSION, session_vtable,
					    session_find, s)) < 0 ||
	    (r = sd_bus_add_node_enumerator(s->bus, NULL, PATH_SESSION, session_enumerate, s)) < 0 ||
	    (r = sd_bus_add_object_manager(s->bus, NULL, DBUS_SERVICE_PATH)) < 0)
		goto fail;
	step = "following the broker";
	if ((r = sd_event_add_defer(event, &s->flush_src, on_flush, s)) < 0 ||
	    (r = sd_event_source_set_enabled(s->flush_src, SD_EVENT_OFF)) < 0 ||
	    (r = broker_subscribe(broker, on_broker_event, s, &s->sub_id)) < 0)
		goto fail;
	s->subscribed = true;
	sync_objects(s);
	step = "attaching to the event loop";
	if ((r = sd_bus_attach_event(s->bus, event, SD_EVENT_PRIORITY_NORMAL)) < 0)
		goto fail;
	/* Last: once the name is ours, callers may arrive. */
	step = "taking the name " DBUS_SERVICE_NAME;
	if ((r = sd_bus_request_name(s->bus, DBUS_SERVICE_NAME, 0)) < 0)
		goto fail;
	log_notice("dbus: serving %s at %s on %s", DBUS_SERVICE_NAME, DBUS_SERVICE_PATH,
		   bus_address ? bus_address : "the system bus");
	*out = s;
	return 0;
fail:
	snprintf(why, whylen, "%s: %s", step, strerror(-r));
	dbus_service_free(s);
	return r;
}

void dbus_service_free(struct dbus_service *s)
{
	if (!s)
		return;
	if (s->subscribed)
		broker_unsubscribe(s->broker, s->sub_id);
	/* Unanswered calls and tracked peers hold the bus: release them
	 * first. A peer's connection is not closed: the daemon stops, its
	 * agents did not leave. */
	for (size_t i = 0; i < s->n_pending; i++)
		call_free(s->pending[i]);
	free(s->pending);
	for (size_t i = 0; i < s->n_peers; i++)
		peer_free(s->peers[i]);
	free(s->peers);
	for (size_t i = 0; i < s->n_signals; i++)
		sd_bus_message_unref(s->signals[i]);
	free(s->signals);
	sd_event_source_disable_unref(s->flush_src);
	if (s->bus) {
		sd_bus_flush(s->bus);
		sd_bus_detach_event(s->bus);
		sd_bus_flush_close_unref(s->bus);
	}
	for (size_t i = 0; i < s->vms.n; i++)
		vm_snap_free(s->vms.v[i]);
	free(s->vms.v);
	for (size_t i = 0; i < s->sessions.n; i++)
		session_snap_free(s->sessions.v[i]);
	free(s->sessions.v);
	free(s->dirty_vms.v);
	free(s->dirty_sessions.v);
	free(s);
}
