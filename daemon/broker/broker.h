/* SPDX-License-Identifier: MIT */
/*
 * broker: the one core every door (socket, D-Bus, libvirt) calls. It owns
 * the leases and every lifetime (a lease follows its VMM, its owner process,
 * or the connection it was made on), decides who may do what from the
 * credentials a door supplies, feeds the arbiter, persists each changed
 * lease before answering, hands transitions to the kvm port, keeps host
 * sessions on the placements the plan gives them, and tells watchers what
 * changed.
 *
 * The core speaks C types: requests are the typed structs proto decodes,
 * results are typed, read-only views of the broker's state. Each door
 * renders views in its own encoding (JSON at the socket, D-Bus types on the
 * bus). A view's pointers are borrowed: valid until the next change of the
 * broker (the next call that is not a view, or the next event-loop
 * dispatch), never to be freed by the caller.
 *
 * A door includes nothing of the core but this header.
 */
#ifndef VPMU_BROKER_H
#define VPMU_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "proto/config.h"
#include "proto/cpulist.h"
#include "proto/proto.h"

struct broker;
struct broker_conn;
struct pmu_desc;   /* pmu/pmu.h: for vpmud's wiring only */
struct kvm_port;   /* kvm/kvm_port.h: for vpmud's wiring only */

/* ------------------------------------------------------------ callers */

/* Which door a request came through: the same rights everywhere, but a
 * refusal names what this door accepts (polkit exists only on the bus). */
enum broker_door {
	BROKER_DOOR_SOCKET = 0,
	BROKER_DOOR_DBUS,
	BROKER_DOOR_LIBVIRT,   /* vpmud's own libvirt follower */
	BROKER_DOOR_STATE,     /* restore at start */
};
const char *broker_door_name(enum broker_door d);

/* Who asks, as the door learnt it from the kernel or the bus. The broker
 * decides from this alone whether the caller may do what it asks
 * (broker_authorize); doors never decide. */
struct broker_caller {
	enum broker_door door;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	/* Supplementary groups (SO_PEERGROUPS, or the bus's credentials);
	 * borrowed, may be NULL with n_groups 0. */
	const gid_t *groups;
	size_t n_groups;
	/* D-Bus only: polkit answered yes for this caller and action. */
	bool polkit_allowed;
	/* Who makes leases ("vpmuctl", "vpmu-libvirt-hook", "dbus",
	 * "libvirt"), kept with each lease across restarts so that each door
	 * reconciles its own. NULL: the door's name. A "/version" suffix is
	 * dropped. */
	const char *origin;
	/* The connection the request came on, or NULL. A lease made on a
	 * connection opened with leases_follow, and owned by no process (no
	 * VMM, no owner_pid), is released by the broker when the door closes
	 * the connection; such a lease is not restored after a restart (the
	 * restart closed the connection). A request on a connection already
	 * closed is refused: nothing outlives the caller that asked. */
	struct broker_conn *conn;
};

/* What a method needs; one table for every door (docs/protocol.md,
 * "Who may call what"). */
enum broker_right {
	BROKER_RIGHT_ANYONE = 0,   /* reads: status, pmu, plan, lists, show */
	BROKER_RIGHT_ADMIN,        /* root, the admin group, or polkit on D-Bus */
	BROKER_RIGHT_OWNER_OR_ADMIN, /* the lease's own uid, or an admin */
};
enum broker_right broker_method_right(enum proto_method m);

/* The polkit action a D-Bus caller needs for ADMIN methods
 * (systemd/org.vpmu.broker1.policy). */
#define BROKER_POLKIT_ACTION "org.vpmu.broker1.manage"

/*
 * The one decision of who may do what. Returns 0 when the caller may call
 * method m (on a lease owned by owner_uid, for OWNER_OR_ADMIN methods;
 * pass (uid_t)-1 when there is no such lease), or -EPERM with err (may be
 * NULL) set to a message that names what this door accepts. The libvirt
 * and state doors are vpmud itself and may do anything. Doors call it up
 * front only to learn whether asking polkit could help (and the socket to
 * leave other users' sessions out of session.list); every operation below
 * checks again itself.
 */
int broker_authorize(const struct broker *b, const struct broker_caller *c, enum proto_method m,
		     uid_t owner_uid, struct proto_error *err);
/* Whether the caller is an admin by credentials alone (root or the admin
 * group), without polkit. */
bool broker_caller_is_admin(const struct broker *b, const struct broker_caller *c);

/*
 * What a caller sees of the leases (docs/protocol.md, "What a caller
 * sees"): its own leases (same uid) whole, and whole every lease when it is
 * an admin by credentials (broker_caller_is_admin: root or the admin group,
 * as the door learnt them; polkit is never asked for a read). Of another
 * user's lease anyone else sees what describes the allocation (name,
 * priority, class, the counters asked for, CPUs, routes, counters held)
 * but nothing that identifies or describes its owner's work: owner uid,
 * owner and VMM pids, the VM fd, the counted task, origin, whether it
 * follows a connection, the events (their specs and how many). Decided
 * once per request (broker_viewer) and applied to each view; the doors
 * render what is left, and say withheld.
 */
struct broker_viewer {
	uid_t uid;
	bool sees_all;
};
struct broker_viewer broker_viewer(const struct broker *b, const struct broker_caller *c);
/* Whether the viewer sees a lease owned by owner_uid whole. */
bool broker_viewer_sees(const struct broker_viewer *w, uid_t owner_uid);

/* ------------------------------------------------------------ connections */

/* A door opens one per client connection (socket client, bus peer).
 * leases_follow: leases made on it without a process owner end with it (a
 * bus peer's); false for clients whose leases outlive them (vpmuctl). */
int broker_conn_open(struct broker *b, bool leases_follow, struct broker_conn **out);
/*
 * The door reports the connection gone: the broker marks it closed and
 * releases (once) every lease made on it that still follows it, each as
 * broker_vm_release or a session's stop does, logging reason ("its D-Bus
 * peer :1.42 left the bus"; NULL: "its connection closed"). The object
 * itself lives on until the last reference is dropped (a lease holds one
 * while it follows the connection), so that a request still waiting (for
 * polkit, say) is refused when it finally arrives instead of creating a
 * lease nobody holds.
 */
void broker_conn_close(struct broker_conn *conn, const char *reason);
struct broker_conn *broker_conn_ref(struct broker_conn *conn);
struct broker_conn *broker_conn_unref(struct broker_conn *conn); /* returns NULL */
bool broker_conn_closed(const struct broker_conn *conn);

/* ------------------------------------------------------------ flavour */

/*
 * The host's vPMU flavour the broker reasons about (DESIGN.md, "On the
 * kernels that exist today"): what a guest PMC is, hence what a route
 * promises and how host sessions are opened. vpmud takes it from its
 * detection, or EXTENSION when the kvm port drives the vpmu extension
 * (ioctl) or its model.
 */
enum broker_flavour {
	BROKER_FLAVOUR_EXTENSION = 0, /* the vpmu extension: routes are the kvm port's (ioctl or model) */
	BROKER_FLAVOUR_PERF,          /* stock perf-based vPMU: guest PMCs are KVM's task-pinned perf events */
	BROKER_FLAVOUR_MEDIATED,      /* Linux 7.0+ mediated vPMU: a guest owns the whole PMU while it runs */
	BROKER_FLAVOUR_NONE,          /* KVM gives guests no PMU (enable_pmu=0, hybrid CPUs) */
	BROKER_FLAVOUR__COUNT
};
/* "extension", "perf-based", "mediated", "none" */
const char *broker_flavour_name(enum broker_flavour f);

/* Whether guest routes hold: "enforced" (the extension's ioctls),
 * "simulated" (the model of the extension), "advisory" (a stock kernel:
 * reserved, at-risk, mediated and none routes say what vpmud reasons, not
 * what it can make KVM do). */
const char *broker_routes_kind(const struct broker *b);
enum broker_flavour broker_flavour(const struct broker *b);

/* What a guest PMC is. Each flavour has its own routes and never shows
 * another's (docs/protocol.md, "Routes"). */
enum broker_route {
	BROKER_ROUTE_DISABLED = 0,     /* the guest does not have this PMC */
	/* extension */
	BROKER_ROUTE_MULTIPLEXED,      /* backed by a host perf event */
	BROKER_ROUTE_PASSTHROUGH,      /* guest PMC i is physical PMC i */
	/* perf-based: KVM's task-pinned perf event; perf picks the counter */
	BROKER_ROUTE_RESERVED,         /* room kept free of CPU-pinned host events on every CPU it may run on */
	BROKER_ROUTE_AT_RISK,          /* no room kept: the guest's counts may stop until it reprograms the PMC */
	/* mediated: the guest owns the whole PMU while its vCPU runs,
	 * switched at VM entry and exit */
	BROKER_ROUTE_MEDIATED,
	/* no vPMU: asked for, and the host gives guests no PMU */
	BROKER_ROUTE_NONE,
	BROKER_ROUTE__COUNT
};
/* "disabled", "multiplexed", "passthrough", "reserved", "at-risk",
 * "mediated", "none" */
const char *broker_route_name(enum broker_route r);
/* The result key counting the vCPUs whose weakest route is r
 * ("reserved_vcpus", "at_risk_vcpus", ...): one name for every door. */
const char *broker_route_count_key(enum broker_route r);
/* The routes a PMC a lease asked for may have in flavour f, strongest
 * first (extension: passthrough, multiplexed; perf-based: reserved,
 * at-risk; mediated: mediated; none: none). Returns how many. */
size_t broker_flavour_routes(enum broker_flavour f, enum broker_route out[2]);

/* ------------------------------------------------------------ life */

struct perf_event_attr;
/* perf_session's open seam (perf/perf_session.h), for tests: an fd, or -1
 * with errno set. */
typedef int (*broker_perf_open_fn)(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
				   unsigned long flags);

struct broker_opts {
	sd_event *event;
	const struct config *cfg;     /* read at each request: reload changes defaults */
	const struct pmu_desc *pmu;   /* copied */
	const char *pmu_note;         /* why this PMU (fallback reason), may be NULL; copied */
	struct kvm_port *port;        /* owned by the caller, outlives the broker */
	const char *kvm_host_summary; /* stock-kernel detection, one line, may be NULL; copied */
	const char *kvm_note;         /* why this KVM backend, may be NULL (then the port's); copied */
	const char *state_dir;
	const char *sysfs_root;       /* NULL: "/" (tests pass fixture trees) */
	/* What the broker reasons about. EXTENSION needs an ioctl or model
	 * port, every other flavour an advisory one. */
	enum broker_flavour flavour;
	/* The perf NMI watchdog holds a core-PMU event without exclude_guest
	 * on every CPU: under the mediated vPMU it stops every VM's first
	 * vCPU (status and the log say so, with the fix). */
	bool nmi_watchdog_perf;
	/* The host kernel runs the mediated vPMU, whatever flavour the routes
	 * follow (the model of the extension on a mediated host): perf then
	 * refuses host events that count guest time, so every hardware event
	 * excludes it, count_guest is refused and the warnings are given. */
	bool host_mediated;
	/* Tests: how session events are opened (NULL: perf_event_open). */
	broker_perf_open_fn perf_open;
	void *perf_open_ctx;
};

int broker_new(const struct broker_opts *opts, struct broker **out, struct proto_error *err);
struct broker *broker_free(struct broker *b); /* returns NULL */

/* Reloads the state directory and reconciles it with what is alive. Logs
 * every lease it restores, drops or moves aside, and why. */
int broker_restore(struct broker *b);

uint64_t broker_generation(const struct broker *b);
/* One line for sd_notify STATUS= and the log: counts, backends, VMs by
 * routes kind and the names of advisory VMs (as many as fit). */
void broker_summary(const struct broker *b, char *buf, size_t len);

/* ------------------------------------------------------------ changes */

/*
 * Each returns 0 or a negative errno with err filled; a refused or failed
 * request changes nothing. Every accepted change is durable before the
 * call returns. *generation (may be NULL) is the plan generation after the
 * change.
 */
struct broker_attach_result {
	uint64_t generation;
	unsigned passthrough_vcpus;   /* vCPUs whose every PMC passes through */
	unsigned multiplexed_vcpus;   /* extension: vCPUs that asked for PMCs and got less */
	/* vCPUs that asked for PMCs, each by the weakest route among the
	 * PMCs it asked for; only the flavour's routes occur. */
	unsigned vcpus_by_route[BROKER_ROUTE__COUNT];
	bool bound;                   /* tied to its VMM already */
};
int broker_vm_attach(struct broker *b, const struct broker_caller *c, const struct proto_vm_attach *a,
		     struct broker_attach_result *res, struct proto_error *err);
int broker_vm_detach(struct broker *b, const struct broker_caller *c, const char *name,
		     uint64_t *generation, struct proto_error *err);
/* A VM bound with a route fd cannot grow gp or fixed_mask beyond its
 * guest's PMU shape, which CPUID fixed (invalid_param). */
int broker_vm_update(struct broker *b, const struct broker_caller *c, const struct proto_vm_update *u,
		     uint64_t *generation, struct proto_error *err);
/* route_fd: the route fd the VMM handed over with the request (q->route_fd
 * true), or -1. The broker owns it from the call on, whatever the outcome:
 * kept by the kvm port for the VM's lifetime, or closed. q->route_fd and
 * route_fd must agree (invalid_param, field params.route_fd). With a route
 * fd the VM's routes are enforced (ioctl) or simulated (model); without,
 * advisory. A VM already bound to the same VMM without a route fd takes
 * one (advisory -> enforced or simulated); one bound with a route fd
 * keeps it and the new one is closed (same answer: the hook may run
 * twice). Model backend: the route fd must be the VMM's VM file (kcmp). */
int broker_vm_bind(struct broker *b, const struct broker_caller *c, const struct proto_vm_bind *q,
		   int route_fd, uint64_t *generation, struct proto_error *err);
/* After success the session's view (broker_session_find) has its events'
 * placements. */
int broker_session_start(struct broker *b, const struct broker_caller *c,
			 const struct proto_session_start *q, uint64_t *generation,
			 struct proto_error *err);
int broker_session_stop(struct broker *b, const struct broker_caller *c, const char *name,
			uint64_t *generation, struct proto_error *err);

/* Lease removal from inside the daemon (the libvirt follower, an owner's
 * death); logs reason. -ENOENT if there is no such VM. */
int broker_vm_release(struct broker *b, const char *name, const char *reason);

/* ------------------------------------------------------------ views */


struct broker_status {
	const char *server;            /* "vpmud/VERSION" */
	int protocol;
	const char *pmu_model;
	const char *pmu_source;        /* host, builtin, file, none */
	bool pmu_simulated;
	const char *pmu_why;           /* NULL when nothing to say */
	const char *kvm_backend;       /* ioctl, advisory, model */
	bool kvm_enforced;
	const char *kvm_why;
	const char *kvm_host;          /* NULL when not detected */
	const char *flavour;           /* broker_flavour_name */
	const char *routes;            /* broker_routes_kind */
	const char *flavour_effect;    /* one line: what it means for guests and for host sessions */
	/* How the guest reservation is planned: "uniform" (one mask for every
	 * CPU, because the kernel lacks VPMU_RESERVE_CAP_PER_CPU), "per-cpu",
	 * or "none" (flavours that reserve nothing: mediated, none). */
	const char *reservation;
	/* The VMs by broker_vm_view.routes; they add up to vms. */
	size_t vms_enforced, vms_simulated, vms_advisory;
	/* What stops guests or sessions on this host and how to fix it
	 * (the NMI watchdog under the mediated vPMU); NULL-terminated. */
	const char *warnings[4];
	uint64_t generation;
	unsigned cpus;
	size_t vms, sessions, watchers;
	uint64_t uptime_s;
};
void broker_status(const struct broker *b, struct broker_status *out);

struct broker_pmu_view {
	const char *source;
	bool simulated;
	const char *model;
	const char *vendor;
	unsigned version;
	unsigned gp, gp_width;
	uint32_t fixed_mask;
	unsigned fixed, fixed_width;
	bool perf_metrics;
	int pebs_format;
	uint64_t global_ctrl_mask;
	unsigned cpus;
	const char *boot_block;        /* the kernel's boot lines for this PMU */
	bool nmi_watchdog;             /* one cycles-capable counter taken on every CPU */
};
void broker_pmu(const struct broker *b, struct broker_pmu_view *out);

struct broker_vm_view {
	/* The lease's sequence number (its arrival rank), kept across
	 * restarts. Never reused while vpmud runs, so a name detached and
	 * attached again is another lease; after a restart, the numbers of
	 * leases removed before it may be given again (no high-water mark is
	 * stored: that would cost a second durable write per change). */
	uint64_t id;
	const char *name;
	uint32_t priority;
	enum proto_class cls;
	uint32_t gp;
	uint32_t fixed_mask;
	const char *origin;
	uid_t uid;                     /* who attached it */
	bool follows_connection;       /* released when its connection closes */
	bool bound;
	pid_t vmm_pid;                 /* when bound; 0 otherwise */
	int vm_fd;                     /* when bound; -1 otherwise */
	/* Always set. Whether this VM's routes reach the kernel: "enforced" (its VMM
	 * handed a route fd, ioctl backend), "simulated" (route fd, model
	 * backend), "advisory" (no route fd, or a backend or flavour that
	 * enforces nothing); routes_why says why in words, for operators. */
	const char *routes;
	const char *routes_why;
	uint32_t n_vcpus;
	/* Another user's lease seen by a viewer who may not see it whole
	 * (broker_vm_view_withhold): origin is NULL, uid (uid_t)-1, vmm_pid
	 * 0, vm_fd -1, follows_connection false. */
	bool withheld;
	unsigned passthrough_vcpus;    /* vCPUs whose every asked PMC passes through */
	unsigned vcpus_by_route[BROKER_ROUTE__COUNT];    /* as in broker_attach_result */
};
struct broker_vcpu_view {
	uint32_t vcpu;
	const struct cpulist *cpus;    /* where it may run */
	unsigned n_gp;                 /* the PMU's general counters */
	uint8_t gp[32];                /* enum broker_route, n_gp of them */
	uint32_t pmu_fixed_mask;       /* which fixed counters the PMU has */
	uint8_t fixed[16];             /* enum broker_route, by fixed index */
};
struct broker_guest_view {
	bool ok;                       /* false: error says why */
	char error[256];
	unsigned version;
	uint32_t eax, ebx, ecx, edx;   /* CPUID leaf 0xA (Intel) or 0x80000022 (AMD) */
	char boot_block[1024];         /* what a Linux guest would print */
};

size_t broker_vm_count(const struct broker *b);
/* i < broker_vm_count(); in arrival order. */
void broker_vm_at(const struct broker *b, size_t i, struct broker_vm_view *out);
/* -ENOENT; out may be NULL to ask whether the lease exists. */
int broker_vm_find(const struct broker *b, const char *name, struct broker_vm_view *out);
/* The same by lease id (as events name leases). */
int broker_vm_find_id(const struct broker *b, uint64_t id, struct broker_vm_view *out);
int broker_vm_vcpu(const struct broker *b, uint64_t vm_id, uint32_t vcpu, struct broker_vcpu_view *out);
int broker_vm_guest(const struct broker *b, uint64_t vm_id, struct broker_guest_view *out);
/* Whether any vCPU of the VM may run on one of cpus. */
bool broker_vm_on_cpus(const struct broker *b, uint64_t vm_id, const struct cpulist *cpus);
/* Names of the VM leases made by origin (all if NULL): a NULL-terminated
 * array the caller frees with strv_free (proto/cleanup.h). */
int broker_vm_names(const struct broker *b, const char *origin, char ***names);

enum broker_placement {
	BROKER_PLACEMENT_SOFTWARE = 0, /* a software event: no counter needed */
	BROKER_PLACEMENT_DEDICATED,    /* its own counter on every CPU */
	BROKER_PLACEMENT_MULTIPLEXED,  /* rotates with others */
	BROKER_PLACEMENT__COUNT
};
const char *broker_placement_name(enum broker_placement p);

struct broker_session_view {
	uint64_t id;
	const char *name;
	uint32_t priority;
	enum proto_class cls;
	uint32_t n_events;
	bool has_cpus;
	const struct cpulist *cpus;    /* when has_cpus */
	pid_t pid;                     /* when !has_cpus: the counted task */
	pid_t owner_pid;
	uid_t uid;
	const char *origin;
	bool follows_connection;
	uint64_t started_usec;         /* CLOCK_REALTIME */
	const char *note;              /* as broker_reading's */
	/* Another user's session seen by a viewer who may not see it whole
	 * (broker_session_view_withhold): n_events 0 (its events are not
	 * shown), pid, owner_pid and started_usec 0, uid (uid_t)-1, origin
	 * NULL, follows_connection false. */
	bool withheld;
};
struct broker_event_view {
	const char *event;             /* the spec as given */
	enum broker_placement placement;
	double share;                  /* expected fraction of time counted */
	unsigned dedicated_cpus;       /* CPUs where it holds a counter */
	/* Why it is multiplexed where the session cannot see why (perf-based:
	 * counters there are kept for guest PMCs), or "". */
	char reason[256];
};

/* Withhold from a view what w may not see (broker_viewer); a lease w sees
 * whole is left as it is. */
void broker_vm_view_withhold(const struct broker_viewer *w, struct broker_vm_view *v);
void broker_session_view_withhold(const struct broker_viewer *w, struct broker_session_view *v);

size_t broker_session_count(const struct broker *b);
void broker_session_at(const struct broker *b, size_t i, struct broker_session_view *out);
/* -ENOENT; out may be NULL. */
int broker_session_find(const struct broker *b, const char *name, struct broker_session_view *out);
int broker_session_find_id(const struct broker *b, uint64_t id, struct broker_session_view *out);
int broker_session_event(const struct broker *b, uint64_t session_id, uint32_t e,
			 struct broker_event_view *out);
bool broker_session_on_cpus(const struct broker *b, uint64_t session_id, const struct cpulist *cpus);

/* One reading of a session: owned by the caller (broker_reading_free). */
struct broker_event_reading {
	const char *event;
	enum broker_placement placement;
	bool counted;
	const char *reason;            /* when !counted */
	uint64_t value, time_enabled, time_running;
	double scaled;
	bool multiplexed, never_ran;
};
struct broker_reading {
	char name[PROTO_NAME_MAX + 1];
	uint64_t since_usec, read_usec;
	/* NULL, or what the numbers do not hold: nothing for hardware
	 * events (model PMU), guest time (mediated vPMU). */
	const char *note;
	uint32_t n_events;
	struct broker_event_reading *events;
};
int broker_session_read(struct broker *b, const struct broker_caller *c, const char *name,
			struct broker_reading **out, struct proto_error *err);
void broker_reading_free(struct broker_reading *r);

/* The plan, per CPU of the inventory. */
enum broker_holder {
	BROKER_HOLDER_SESSION = 0,
	BROKER_HOLDER_FOREIGN,         /* the NMI watchdog, other perf users */
};
struct broker_host_placement {
	enum broker_holder holder;
	const char *holder_name;       /* session name, or "nmi_watchdog" */
	uint64_t session_id;           /* when a session */
	const char *event;             /* NULL when withheld */
	int counter;                   /* -1: none; 0..31 gp; 32+j fixed j */
	double share;
	uid_t owner_uid;               /* the session's; (uid_t)-1 for a foreign holder */
	/* The event of another user's session, for a viewer who may not see
	 * it (broker_placement_withhold): event is NULL. */
	bool withheld;
};
/* On a copy of a placement: withholds the event of another user's session
 * from w. The holder (a session's name) and the counter stay. */
void broker_placement_withhold(const struct broker_viewer *w, struct broker_host_placement *p);
struct broker_cpu_view {
	int cpu;
	uint32_t guest_gp_mask;
	uint32_t guest_fixed_mask;
	unsigned n_host;
	const struct broker_host_placement *host; /* valid until the next broker_cpu_at */
};
unsigned broker_cpu_count(const struct broker *b);
int broker_cpu_at(const struct broker *b, unsigned i, struct broker_cpu_view *out);

/* ------------------------------------------------------------ counters */

/*
 * What happened to leases since vpmud started, for monitoring
 * (docs/metrics.md): monotonic, never reset while vpmud runs, not counted
 * while the state is replayed at start (a restore is no new request).
 */
enum broker_lease_kind {
	BROKER_LEASE_VM = 0,
	BROKER_LEASE_SESSION,
	BROKER_LEASE__COUNT
};
/* "vm", "session" */
const char *broker_lease_kind_name(enum broker_lease_kind k);

/* Where a lease ended up when it did not get what it asked for. */
enum broker_fallback {
	/* extension: a VM admitted with vCPUs whose PMCs are backed by host
	 * perf events instead of passed through; a session started with
	 * hardware events that rotate instead of holding a counter */
	BROKER_FALLBACK_MULTIPLEXED = 0,
	/* perf-based: a VM admitted with vCPUs for which no room is kept */
	BROKER_FALLBACK_AT_RISK,
	/* a route fd the VMM handed over could not be used: the VM stays
	 * bound without it, its routes advisory */
	BROKER_FALLBACK_ADVISORY,
	BROKER_FALLBACK__COUNT
};
/* "multiplexed", "at-risk", "advisory" */
const char *broker_fallback_name(enum broker_fallback f);

struct broker_counters {
	/* Requests (attach, update, session start) the arbiter refused
	 * admission (refused, EBUSY), by the class the lease asked for. */
	uint64_t refusals[BROKER_LEASE__COUNT][PROTO_CLASS__COUNT];
	/* Leases that lost counters to another lease's change: a VM whose
	 * vCPUs' routes were downgraded, a session whose events lost their
	 * dedicated counters; one per lease and change. */
	uint64_t preemptions[BROKER_LEASE__COUNT];
	uint64_t fallbacks[BROKER_LEASE__COUNT][BROKER_FALLBACK__COUNT];
};
void broker_counters(const struct broker *b, struct broker_counters *out);
/* fn is called after a counter moved outside a plan change (a refusal
 * changes no plan, so no event tells of it): the metrics file follows. */
void broker_set_counters_hook(struct broker *b, void (*fn)(void *userdata), void *userdata);

/*
 * The metrics text (docs/metrics.md; rendered by broker/metrics.c) as c may
 * see it: sessions of other users keep their name, class, scope and
 * priority, and lose their events and readings, unless c is an admin by
 * credentials (the rule of broker_viewer). *text is the caller's to free.
 */
int broker_metrics(struct broker *b, const struct broker_caller *c, char **text, size_t *len,
		   struct proto_error *err);

/* ------------------------------------------------------------ watchers */

/* One step of a plan change, as watchers see it. */
struct broker_change {
	unsigned phase;                /* 1: downgrades and shrinks; 2: grows and upgrades */
	bool partition;                /* true: a CPU's guest partition; false: a vCPU's routes */
	int cpu;                       /* partition */
	uint32_t guest_gp_mask, guest_fixed_mask; /* partition */
	const char *vm;                /* routes */
	uint32_t vcpu;                 /* routes */
	unsigned n_gp;
	uint8_t gp[32];                /* enum broker_route */
	uint32_t pmu_fixed_mask;
	uint8_t fixed[16];             /* enum broker_route, by fixed index */
	uint32_t scrub_gp_mask, scrub_fixed_mask;
};
struct broker_event {
	uint64_t seq;                  /* increases by one per event: doors cache renderings by it */
	uint64_t generation;
	const char *flavour;           /* as in broker_status: what the routes below mean */
	const char *routes;
	const char *reason;
	size_t n_changes;              /* 0: a lease changed (bound, or a session without hardware
					* events came or went) and the plan did not */
	const struct broker_change *changes;
	/*
	 * The leases this event touched, by id (broker_vm_view.id,
	 * broker_session_view.id), so that a watcher that mirrors leases
	 * (the D-Bus door) looks at these alone: a lease named in none of
	 * the arrays looks as it did at the previous event. Each array is
	 * sorted and without repeats, and an id is in at most one of a
	 * kind's three arrays. Borrowed for the duration of the callback.
	 *  - added: attached or started by this change; removed: detached,
	 *    released or stopped (no longer found by id).
	 *  - vms_changed: its view (update, bind) or the routes of one of
	 *    its vCPUs changed; a plan change names every VM its route steps
	 *    name, whichever lease's change caused them (a session
	 *    preempting a VM's counters names that VM).
	 *  - sessions_changed: the placement, dedicated CPUs, share or
	 *    reason of one of its events changed (broker_session_event),
	 *    whichever lease's change caused it.
	 */
	const uint64_t *vms_added, *vms_removed, *vms_changed;
	size_t n_vms_added, n_vms_removed, n_vms_changed;
	const uint64_t *sessions_added, *sessions_removed, *sessions_changed;
	size_t n_sessions_added, n_sessions_removed, n_sessions_changed;
};
/* fn gets each event, borrowed for the duration of the call. A subscriber
 * may unsubscribe from inside its callback. */
typedef void (*broker_event_fn)(const struct broker_event *ev, void *userdata);
int broker_subscribe(struct broker *b, broker_event_fn fn, void *userdata, uint64_t *sub_id);
void broker_unsubscribe(struct broker *b, uint64_t sub_id);

/* Called with every event before the watchers, and not counted as one:
 * the daemon's own bookkeeping (sd_notify STATUS). */
void broker_set_change_hook(struct broker *b, broker_event_fn fn, void *userdata);

#endif
