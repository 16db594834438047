/* SPDX-License-Identifier: MIT */
#include "broker/broker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arbiter/arbiter.h"
#include "proto/cpulist.h"
#include "base/log.h"
#include "broker/owner.h"
#include "perf/perf_event.h"
#include "perf/perf_session.h"
#include "broker/state.h"
#include "kvm/vmm_discover.h"

#define BROKER_WHY 512

/* The arbiter keeps its own copy of the counter bounds (it is the lowest
 * layer); they must be the PMU layer's. */
_Static_assert(PMU_MAX_GP == TRANSITION_MAX_GP && PMU_MAX_FIXED == TRANSITION_MAX_FIXED &&
		       PMU_MAX_CPUS == TRANSITION_MAX_CPUS, "counter bounds of pmu and arbiter differ");

struct broker_vm {
	uint64_t id;
	struct proto_vm_attach spec;   /* as attached, updates folded in; vcpus owned */
	uid_t uid;                     /* who attached it */
	char origin[32];               /* see broker_caller.origin */
	bool follows_connection;       /* see broker_caller; false once bound */
	bool bound;                    /* registered with the kvm port */
	pid_t vmm_pid;
	int vm_fd;
	uint64_t vmm_start;            /* process start time, against pid reuse */
	struct owner_watch *watch;
	struct broker *b;
};

struct broker_session {
	uint64_t id;
	struct proto_session_start spec; /* events owned */
	uid_t uid;
	char origin[32];
	bool follows_connection;         /* see broker_caller */
	pid_t owner_pid;
	uint64_t owner_start;
	struct owner_watch *watch;
	struct perf_event_desc *events;        /* spec.n_events */
	int *arb_index;                  /* per event: index among hardware events, -1 software */
	unsigned n_hw;
	struct psess *ps;
	uint64_t started_usec;           /* CLOCK_REALTIME */
	struct broker *b;
};

struct broker_sub {
	uint64_t id;
	broker_event_fn fn;
	void *userdata;
};

struct broker {
	broker_event_fn change_hook;
	void *change_hook_ud;
	sd_event *event;
	const struct config *cfg;
	struct pmu_desc pmu;
	char pmu_note[1600];
	char kvm_host_summary[512];
	char kvm_note[512];
	struct kvm_port *port;
	char state_dir[512];
	char sysfs_root[512];
	struct arb *arb;
	int cpu_ids[PMU_MAX_CPUS];
	int cpu_index[PMU_MAX_CPUS];     /* CPU number -> inventory index, -1 */
	struct arb_foreign foreign[1];
	unsigned n_foreign;

	struct broker_vm **vms;
	size_t n_vms;
	struct broker_session **sessions;
	size_t n_sessions;
	uint64_t next_id;

	struct broker_sub *subs;
	size_t n_subs;
	uint64_t next_sub;
	uint64_t started_usec;
	bool restoring;                  /* no persisting per lease while reloading */
	bool state_dirty;                /* the file lags behind: retrying */
	sd_event_source *persist_retry;
};

/* ------------------------------------------------------------------ helpers */

static uint64_t now_usec(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static struct json_object *hex32(uint32_t v)
{
	char buf[16];
	snprintf(buf, sizeof(buf), "0x%" PRIx32, v);
	return json_object_new_string(buf);
}

static struct json_object *cpus_string(const struct cpulist *l)
{
	char buf[8192];
	if (cpulist_format(l, buf, sizeof(buf)) < 0)
		return json_object_new_string("?");
	return json_object_new_string(buf);
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

static const char *counter_name(int counter, char *buf, size_t len)
{
	if (counter < 0)
		return NULL;
	if (counter >= 32)
		snprintf(buf, len, "fixed%d", counter - 32);
	else
		snprintf(buf, len, "gp%d", counter);
	return buf;
}

/* Only the kernel enforces routes on real guests; the model simulates. */
static bool routes_enforced(const struct broker *b)
{
	return kvm_port_backend(b->port) == KVM_BACKEND_IOCTL && kvm_port_enforced(b->port);
}

static void set_origin(char *dst, size_t len, const struct broker_caller *c)
{
	const char *o = c->origin && c->origin[0] ? c->origin : c->transport ? c->transport : "?";
	/* "vpmuctl/0.1" -> "vpmuctl": the version is not part of who it is. */
	size_t n = strcspn(o, "/");
	if (n >= len)
		n = len - 1;
	memcpy(dst, o, n);
	dst[n] = '\0';
}

static bool may_see(const struct broker_caller *c, uid_t owner)
{
	return c->privileged || c->uid == owner;
}

static int deny(struct proto_error *err, const struct broker_caller *c, const char *what)
{
	return proto_error_set(err, PROTO_E_PERMISSION_DENIED, EPERM, NULL,
			       "%s needs root or membership in the admin group (caller uid %u)", what,
			       (unsigned)c->uid);
}

static struct broker_vm *find_vm(const struct broker *b, const char *name)
{
	for (size_t i = 0; i < b->n_vms; i++)
		if (!strcmp(b->vms[i]->spec.name, name))
			return b->vms[i];
	return NULL;
}

static struct broker_session *find_session(const struct broker *b, const char *name)
{
	for (size_t i = 0; i < b->n_sessions; i++)
		if (!strcmp(b->sessions[i]->spec.name, name))
			return b->sessions[i];
	return NULL;
}

static int copy_vcpus(struct proto_vcpus *dst, const struct proto_vcpus *src)
{
	dst->count = src->count;
	dst->cpus = calloc(src->count ? src->count : 1, sizeof(*dst->cpus));
	if (!dst->cpus)
		return -ENOMEM;
	memcpy(dst->cpus, src->cpus, src->count * sizeof(*dst->cpus));
	return 0;
}

/* --------------------------------------------------------- arbiter feeding */

/* CPU sets over inventory indices, refusing CPUs the inventory lacks. */
static int to_cpuset(const struct broker *b, const struct cpulist *l, uint64_t *set,
		     const char *field, struct proto_error *err)
{
	unsigned n = b->pmu.n_cpus;
	memset(set, 0, ARB_CPUSET_WORDS(n) * sizeof(uint64_t));
	bool any = false;
	for (int c = cpulist_next(l, -1); c >= 0; c = cpulist_next(l, c)) {
		if (c >= PMU_MAX_CPUS || b->cpu_index[c] < 0)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field,
					       "%s: CPU %d is not in the PMU inventory (%u CPUs, %d..%d)",
					       field, c, n, b->cpu_ids[0], b->cpu_ids[n - 1]);
		arb_cpuset_add(set, (unsigned)b->cpu_index[c]);
		any = true;
	}
	if (!any)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field, "%s: no CPU", field);
	return 0;
}

struct vm_arb_spec {
	struct arb_vm_spec vm;
	struct arb_vcpu_spec *vcpus;
	uint64_t *sets;
};

static void vm_arb_spec_free(struct vm_arb_spec *s)
{
	free(s->vcpus);
	free(s->sets);
}

static int build_vm_spec(const struct broker *b, uint64_t id, const struct proto_vm_attach *a,
			 struct vm_arb_spec *out, struct proto_error *err)
{
	size_t words = ARB_CPUSET_WORDS(b->pmu.n_cpus);
	memset(out, 0, sizeof(*out));
	if (a->gp > b->pmu.num_gp)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.gp",
				       "params.gp: %u general PMCs asked, the PMU has %u", a->gp,
				       b->pmu.num_gp);
	if (a->fixed_mask & ~b->pmu.fixed_mask)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.fixed_mask",
				       "params.fixed_mask: 0x%x names fixed counters the PMU lacks (it has 0x%x)",
				       a->fixed_mask, b->pmu.fixed_mask);
	if (a->vcpus.count == 0 || a->vcpus.count > ARB_MAX_VCPUS)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
				       "params.vcpus: 1..%d vCPUs", ARB_MAX_VCPUS);
	out->vcpus = calloc(a->vcpus.count, sizeof(*out->vcpus));
	out->sets = calloc(a->vcpus.count * words, sizeof(uint64_t));
	if (!out->vcpus || !out->sets) {
		vm_arb_spec_free(out);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	for (uint32_t i = 0; i < a->vcpus.count; i++) {
		char field[64];
		snprintf(field, sizeof(field), "params.vcpus[%u].cpus", i);
		int r = to_cpuset(b, &a->vcpus.cpus[i], out->sets + i * words, field, err);
		if (r < 0) {
			vm_arb_spec_free(out);
			return r;
		}
		out->vcpus[i] = (struct arb_vcpu_spec){ .cpus = out->sets + i * words,
							.num_gp = a->gp,
							.fixed_mask = a->fixed_mask };
	}
	out->vm = (struct arb_vm_spec){ .id = id, .name = a->name, .priority = (int)a->priority,
					.cls = arb_class_of(a->cls), .n_vcpus = a->vcpus.count,
					.vcpus = out->vcpus };
	return 0;
}

/* ------------------------------------------------------------- persistence */

static struct json_object *vm_state(const struct broker_vm *v)
{
	struct proto_request req = { .method = PROTO_M_VM_ATTACH };
	req.u.vm_attach = v->spec;
	req.u.vm_attach.has_owner = v->bound;
	req.u.vm_attach.owner = (struct proto_owner){ .pid = v->vmm_pid, .vm_fd = v->vm_fd };
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "request", proto_request_encode(&req));
	json_object_object_add(o, "uid", json_object_new_int64(v->uid));
	json_object_object_add(o, "origin", json_object_new_string(v->origin));
	if (v->follows_connection && !v->bound)
		json_object_object_add(o, "follows_connection", json_object_new_boolean(true));
	if (v->bound)
		json_object_object_add(o, "owner_start", json_object_new_uint64(v->vmm_start));
	return o;
}

static struct json_object *session_state(const struct broker_session *s)
{
	struct proto_request req = { .method = PROTO_M_SESSION_START };
	req.u.session_start = s->spec;
	req.u.session_start.owner_pid = s->owner_pid;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "request", proto_request_encode(&req));
	json_object_object_add(o, "uid", json_object_new_int64(s->uid));
	json_object_object_add(o, "origin", json_object_new_string(s->origin));
	if (s->follows_connection)
		json_object_object_add(o, "follows_connection", json_object_new_boolean(true));
	json_object_object_add(o, "owner_start", json_object_new_uint64(s->owner_start));
	return o;
}

/*
 * Writes the state as it is, leaving out skip_vm / skip_session: a removal
 * is saved before it is carried out, so a failed save refuses it whole.
 */
static int persist_excluding(struct broker *b, const struct broker_vm *skip_vm,
			     const struct broker_session *skip_session)
{
	if (b->restoring)
		return 0;
	struct json_object *doc = json_object_new_object(), *vms = json_object_new_array(),
			   *sessions = json_object_new_array();
	for (size_t i = 0; i < b->n_vms; i++)
		if (b->vms[i] != skip_vm)
			json_object_array_add(vms, vm_state(b->vms[i]));
	for (size_t i = 0; i < b->n_sessions; i++)
		if (b->sessions[i] != skip_session)
			json_object_array_add(sessions, session_state(b->sessions[i]));
	json_object_object_add(doc, "vms", vms);
	json_object_object_add(doc, "sessions", sessions);
	int r = state_save(b->state_dir, doc);
	json_object_put(doc);
	if (r < 0)
		log_err("state: saving %s/%s failed: %s", b->state_dir, STATE_FILE, strerror(-r));
	else
		b->state_dirty = false;
	return r;
}

static int persist(struct broker *b)
{
	return persist_excluding(b, NULL, NULL);
}

static int on_persist_retry(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct broker *b = userdata;
	(void)usec;
	/* A oneshot source: armed again only while the file still lags. */
	if (b->state_dirty && persist(b) < 0) {
		sd_event_source_set_time_relative(src, 1000000);
		sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
	}
	return 0;
}

/*
 * For changes nobody can refuse (a VMM or an owner died, libvirt says a
 * domain stopped): the change stands; a failed save is retried every second
 * until it succeeds, so what is on disk catches up.
 */
static void persist_or_retry(struct broker *b)
{
	if (persist(b) == 0 || b->restoring)
		return;
	b->state_dirty = true;
	if (!b->persist_retry &&
	    sd_event_add_time_relative(b->event, &b->persist_retry, CLOCK_MONOTONIC, 1000000, 0,
				       on_persist_retry, b) < 0)
		return;
	sd_event_source_set_time_relative(b->persist_retry, 1000000);
	sd_event_source_set_enabled(b->persist_retry, SD_EVENT_ONESHOT);
}

/* ---------------------------------------------------------------- applying */

static bool vm_bound(const struct broker *b, uint64_t id)
{
	for (size_t i = 0; i < b->n_vms; i++)
		if (b->vms[i]->id == id)
			return b->vms[i]->bound;
	return false;
}

static const char *vm_name_of(const struct broker *b, uint64_t id)
{
	for (size_t i = 0; i < b->n_vms; i++)
		if (b->vms[i]->id == id)
			return b->vms[i]->spec.name;
	return "?";
}

/*
 * Hands the arbiter's last transitions to the port. Route steps of VMs not
 * yet bound to a VMM have nowhere to go: their routes are applied when the
 * VMM binds (bind_vm), so they are left out here.
 */
static int apply_last(struct broker *b, char *why, size_t whylen)
{
	const struct transition *t;
	size_t n = arb_transitions(b->arb, &t);
	if (n == 0)
		return 0;
	struct transition *keep = calloc(n, sizeof(*keep));
	size_t k = 0;
	if (!keep)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (t[i].kind != TRANSITION_ROUTES || vm_bound(b, t[i].vm_id))
			keep[k++] = t[i];
	struct kvm_apply_result res = {0};
	int r = k ? kvm_port_apply(b->port, keep, k, &res) : 0;
	free(keep);
	if (r < 0)
		snprintf(why, whylen, "kvm port applied %zu of %zu steps, then: %s", res.applied, k,
			 res.why);
	return r;
}

static struct json_object *transitions_json(const struct broker *b)
{
	const struct transition *t;
	size_t n = arb_transitions(b->arb, &t);
	struct json_object *arr = json_object_new_array();
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "phase", json_object_new_int((int)t[i].phase));
		if (t[i].kind == TRANSITION_PARTITION) {
			json_object_object_add(o, "cpu", json_object_new_int(t[i].cpu));
			json_object_object_add(o, "guest_gp_mask", hex32(t[i].guest_gp_mask));
			json_object_object_add(o, "guest_fixed_mask", hex32(t[i].guest_fixed_mask));
		} else {
			json_object_object_add(o, "vm", json_object_new_string(vm_name_of(b, t[i].vm_id)));
			json_object_object_add(o, "vcpu", json_object_new_int((int)t[i].vcpu));
			struct json_object *gp = json_object_new_array(), *fx = json_object_new_array();
			for (unsigned j = 0; j < b->pmu.num_gp; j++)
				json_object_array_add(gp, json_object_new_string(transition_route_name(t[i].gp_route[j])));
			for (unsigned j = 0; j < PMU_MAX_FIXED; j++)
				if (b->pmu.fixed_mask & (1u << j))
					json_object_array_add(fx, json_object_new_string(transition_route_name(t[i].fixed_route[j])));
			json_object_object_add(o, "gp", gp);
			json_object_object_add(o, "fixed", fx);
		}
		if (t[i].scrub_gp_mask || t[i].scrub_fixed_mask) {
			json_object_object_add(o, "scrub_gp_mask", hex32(t[i].scrub_gp_mask));
			json_object_object_add(o, "scrub_fixed_mask", hex32(t[i].scrub_fixed_mask));
		}
		json_object_array_add(arr, o);
	}
	return arr;
}

/* with_plan: the event carries the arbiter's last transitions; without,
 * it says a lease changed (bound to its VMM) while the plan did not. */
static void emit_event(struct broker *b, const char *reason, bool with_plan)
{
	if (b->change_hook && !b->restoring)
		b->change_hook(NULL, b->change_hook_ud);
	if (b->n_subs == 0 || b->restoring)
		return;
	struct json_object *ev = json_object_new_object();
	json_object_object_add(ev, "event", json_object_new_string("plan"));
	json_object_object_add(ev, "generation", json_object_new_uint64(arb_generation(b->arb)));
	json_object_object_add(ev, "reason", json_object_new_string(reason));
	json_object_object_add(ev, "changes", with_plan ? transitions_json(b) : json_object_new_array());
	/* A subscriber may unsubscribe from inside its callback: iterate a copy. */
	size_t n = b->n_subs;
	struct broker_sub *copy = malloc(n * sizeof(*copy));
	if (copy) {
		memcpy(copy, b->subs, n * sizeof(*copy));
		for (size_t i = 0; i < n; i++)
			copy[i].fn(ev, copy[i].userdata);
		free(copy);
	}
	json_object_put(ev);
}

static void emit(struct broker *b, const char *reason)
{
	emit_event(b, reason, true);
}

/* Keeps every session's events on the placements the plan now gives. */
static void sync_sessions(struct broker *b)
{
	for (size_t i = 0; i < b->n_sessions; i++) {
		struct broker_session *s = b->sessions[i];
		if (!s->ps || s->n_hw == 0)
			continue;
		for (uint32_t e = 0; e < s->spec.n_events; e++) {
			if (s->arb_index[e] < 0)
				continue;
			struct arb_event_grant g;
			if (arb_session_event(b->arb, s->id, (unsigned)s->arb_index[e], &g) < 0)
				continue;
			enum perf_session_placement want = g.dedicated ? PERF_SESSION_DEDICATED : PERF_SESSION_MULTIPLEXED;
			int r = perf_session_set_placement(s->ps, e, want);
			if (r < 0)
				log_warn("session %s: moving %s to %s failed: %s session=%s",
					 s->spec.name, s->spec.events[e], perf_session_placement_name(want),
					 strerror(-r), s->spec.name);
		}
	}
}

/* After an accepted arbiter change: durable first, then KVM, then sessions,
 * then watchers. On failure the caller undoes the arbiter change;
 * *port_touched says whether the port may hold part of it. */
static int commit_change(struct broker *b, const char *reason, struct proto_error *err,
			 bool *port_touched)
{
	char why[BROKER_WHY];
	*port_touched = false;
	int r = persist(b);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL,
				       "could not save the state to %s: %s", b->state_dir, strerror(-r));
	*port_touched = true;
	r = apply_last(b, why, sizeof(why));
	if (r < 0) {
		log_err("%s: %s", reason, why);
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "%s", why);
	}
	sync_sessions(b);
	emit(b, reason);
	log_info("%s: generation %" PRIu64 ", %zu transitions", reason, arb_generation(b->arb),
		 arb_transitions(b->arb, &(const struct transition *){0}));
	return 0;
}

/* Undo after a failed commit: take the consumer out again; if the port saw
 * part of the change, let it follow back as far as it can. Nothing of a
 * change the port never saw is sent to it (no counter is scrubbed for a
 * refused request). */
static void undo_vm(struct broker *b, uint64_t id, bool port_touched)
{
	char why[BROKER_WHY];
	if (arb_vm_remove(b->arb, id) < 0 || !port_touched)
		return;
	if (apply_last(b, why, sizeof(why)) < 0)
		log_err("undo of vm %" PRIu64 " left the kvm port behind: %s", id, why);
	sync_sessions(b);
}

/* ---------------------------------------------------------------- VMs */

static void vm_free(struct broker_vm *v)
{
	if (!v)
		return;
	owner_watch_free(v->watch);
	free(v->spec.vcpus.cpus);
	free(v);
}

static void remove_vm_at(struct broker *b, size_t i)
{
	struct broker_vm *v = b->vms[i];
	if (v->bound)
		kvm_port_unregister_vm(b->port, v->id);
	memmove(&b->vms[i], &b->vms[i + 1], (b->n_vms - i - 1) * sizeof(*b->vms));
	b->n_vms--;
	vm_free(v);
}

static size_t vm_pos(const struct broker *b, const struct broker_vm *v)
{
	for (size_t i = 0; i < b->n_vms; i++)
		if (b->vms[i] == v)
			return i;
	return b->n_vms;
}

static void on_vmm_gone(struct owner_watch *w, void *userdata)
{
	struct broker_vm *v = userdata;
	char reason[160];
	(void)w;
	snprintf(reason, sizeof(reason), "VMM pid %d exited", (int)v->vmm_pid);
	broker_vm_release(v->b, v->spec.name, reason);
}

/* The lease's CPUs are what the routes promise: the port checks pass-through
 * against them (and a kernel would carry them in the routes ioctl). */
static void declare_vcpu_cpus(struct broker *b, const struct broker_vm *v)
{
	for (uint32_t i = 0; i < v->spec.vcpus.count; i++) {
		uint64_t set[KVM_VPMU_CPU_WORDS] = {0};
		const struct cpulist *l = &v->spec.vcpus.cpus[i];
		for (int c = cpulist_next(l, -1); c >= 0 && c < KVM_VPMU_MAX_CPUS; c = cpulist_next(l, c))
			set[c / 64] |= 1ull << (c % 64);
		kvm_port_set_vcpu_cpus(b->port, v->id, i, set);
	}
}

/*
 * Ties the lease to its VMM: finds the VM, checks it can carry the lease,
 * registers it with the kvm port and watches the process. Applies no route:
 * at attach the arbiter's transitions do that, at vm.bind apply_routes.
 * On failure nothing is left registered.
 */
static int register_vmm(struct broker *b, struct broker_vm *v, pid_t pid, int vm_fd, bool has_vm_fd,
			const char *field, struct proto_error *err)
{
	struct vmm_vm found;
	char why[BROKER_WHY];
	struct vmm_discover_opts dopts = { .vm_fd = has_vm_fd ? vm_fd : -1 };
	int r = vmm_discover(pid, &dopts, &found, why, sizeof(why));
	/* Gone, or no VM to be found: not_found. A VM fd named by the caller
	 * that is not one: the parameter is wrong. */
	if (r < 0)
		return proto_error_set(err, r == -ESRCH || (r == -ENOENT && !has_vm_fd) ? PROTO_E_NOT_FOUND
											 : PROTO_E_INVALID_PARAM,
				       -r, field, "VMM pid %d: %s", (int)pid, why);
	/* Routes are per vCPU: the VMM must hold every vCPU id the lease
	 * declares (it may add vCPUs later: bind again then). */
	uint32_t n = v->spec.vcpus.count;
	pid_t *tids = calloc(n, sizeof(*tids));
	bool *have = calloc(n, sizeof(*have));
	if (!tids || !have) {
		free(tids);
		free(have);
		vmm_discover_release(&found);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	for (unsigned i = 0; i < found.n_vcpus; i++)
		if (found.vcpus[i].id < n) {
			tids[found.vcpus[i].id] = found.vcpus[i].tid;
			have[found.vcpus[i].id] = true;
		}
	for (uint32_t i = 0; i < n; i++)
		if (!have[i]) {
			unsigned nv = found.n_vcpus;
			free(tids);
			free(have);
			vmm_discover_release(&found);
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, field,
					       "VMM pid %d has %u vCPU%s and no vCPU %u; vm %s declares %u",
					       (int)pid, nv, nv == 1 ? "" : "s", i, v->spec.name, n);
		}
	free(have);
	/* One KVM VM, one lease: two leases would program the same vCPUs. */
	for (size_t i = 0; i < b->n_vms; i++) {
		const struct broker_vm *o = b->vms[i];
		if (o != v && o->bound && o->vmm_pid == pid && o->vm_fd == found.vm_fd) {
			free(tids);
			vmm_discover_release(&found);
			return proto_error_set(err, PROTO_E_EXISTS, EEXIST, field,
					       "VMM pid %d's VM (fd %d) is already bound to vm %s", (int)pid,
					       o->vm_fd, o->spec.name);
		}
	}
	uint64_t start = 0;
	r = owner_start_time(pid, &start);
	/* The watch gets its own copy of the pidfd discovery opened, so no pid
	 * reuse can slip in between. */
	int watch_fd = r < 0 ? -1 : fcntl(found.pidfd, F_DUPFD_CLOEXEC, 3);
	if (r < 0 || watch_fd < 0) {
		free(tids);
		vmm_discover_release(&found);
		return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, field, "VMM pid %d is gone", (int)pid);
	}
	struct kvm_port_vm pv = { .vm_id = v->id, .vmm_pid = pid, .vmm_pidfd = found.pidfd,
				  .vm_fd = found.vm_fd, .n_vcpus = n, .vcpu_tids = tids };
	r = kvm_port_register_vm(b->port, &pv, why, sizeof(why));
	free(tids);
	int got_fd = found.vm_fd;
	vmm_discover_release(&found);
	if (r < 0) {
		close(watch_fd);
		return proto_error_set(err, PROTO_E_INVALID_PARAM, -r, field, "VMM pid %d: %s", (int)pid, why);
	}
	struct owner_watch *w = NULL;
	r = owner_watch_new(b->event, pid, watch_fd, on_vmm_gone, v, &w);
	if (r < 0) {
		kvm_port_unregister_vm(b->port, v->id);
		return proto_error_set(err, PROTO_E_NOT_FOUND, -r, field, "VMM pid %d: %s", (int)pid,
				       strerror(-r));
	}
	declare_vcpu_cpus(b, v);
	v->bound = true;
	v->vmm_pid = pid;
	v->vm_fd = got_fd;
	v->vmm_start = start;
	v->watch = w;
	return 0;
}

/* A lease bound after its attach: partitions are in place already, only
 * route upgrades remain (phase 2). */
static int apply_routes(struct broker *b, struct broker_vm *v, struct proto_error *err)
{
	struct transition *t = calloc(v->spec.vcpus.count, sizeof(*t));
	if (!t)
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	for (uint32_t i = 0; i < v->spec.vcpus.count; i++) {
		t[i] = (struct transition){ .kind = TRANSITION_ROUTES, .phase = 2, .vm_id = v->id, .vcpu = i, .cpu = -1 };
		arb_vcpu_routes(b->arb, v->id, i, t[i].gp_route, t[i].fixed_route);
	}
	struct kvm_apply_result res = {0};
	int r = kvm_port_apply(b->port, t, v->spec.vcpus.count, &res);
	free(t);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "applying the routes of vm %s: %s",
				       v->spec.name, res.why);
	return 0;
}

static void unbind_vm(struct broker *b, struct broker_vm *v)
{
	if (!v->bound)
		return;
	owner_watch_free(v->watch);
	v->watch = NULL;
	kvm_port_unregister_vm(b->port, v->id);
	v->bound = false;
}

static struct json_object *vcpu_routes_json(const struct broker *b, const struct broker_vm *v,
					    uint32_t i, unsigned *n_pass)
{
	uint8_t gp[PMU_MAX_GP], fx[PMU_MAX_FIXED];
	struct json_object *o = json_object_new_object(), *ga = json_object_new_array(),
			   *fa = json_object_new_array();
	bool all_pass = true;
	arb_vcpu_routes(b->arb, v->id, i, gp, fx);
	json_object_object_add(o, "vcpu", json_object_new_int((int)i));
	json_object_object_add(o, "cpus", cpus_string(&v->spec.vcpus.cpus[i]));
	for (unsigned j = 0; j < b->pmu.num_gp; j++) {
		json_object_array_add(ga, json_object_new_string(transition_route_name(gp[j])));
		if (j < v->spec.gp && gp[j] != PMC_ROUTE_PASSTHROUGH)
			all_pass = false;
	}
	for (unsigned j = 0; j < PMU_MAX_FIXED; j++) {
		if (!(b->pmu.fixed_mask & (1u << j)))
			continue;
		json_object_array_add(fa, json_object_new_string(transition_route_name(fx[j])));
		if ((v->spec.fixed_mask & (1u << j)) && fx[j] != PMC_ROUTE_PASSTHROUGH)
			all_pass = false;
	}
	json_object_object_add(o, "gp", ga);
	json_object_object_add(o, "fixed", fa);
	if (n_pass && all_pass && (v->spec.gp || v->spec.fixed_mask))
		(*n_pass)++;
	return o;
}

static int vm_attach(struct broker *b, const struct broker_caller *c, const struct proto_vm_attach *a,
		     uid_t uid, uint64_t owner_start, struct json_object **result, struct proto_error *err)
{
	if (!c->privileged)
		return deny(err, c, "vm.attach");
	if (find_vm(b, a->name))
		return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.name",
				       "vm %s is already attached", a->name);
	struct broker_vm *v = calloc(1, sizeof(*v));
	if (!v)
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	v->b = b;
	v->id = b->next_id++;
	v->uid = uid;
	set_origin(v->origin, sizeof(v->origin), c);
	v->follows_connection = c->follows_connection && !a->has_owner;
	v->spec = *a;
	if (!a->has_priority)
		v->spec.priority = (uint32_t)b->cfg->default_priority;
	if (!a->has_class)
		v->spec.cls = default_class(b);
	v->spec.has_priority = v->spec.has_class = true;
	v->vm_fd = -1;
	if (copy_vcpus(&v->spec.vcpus, &a->vcpus) < 0) {
		free(v);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	v->spec.has_owner = false;

	struct vm_arb_spec spec;
	int r = build_vm_spec(b, v->id, &v->spec, &spec, err);
	if (r < 0) {
		vm_free(v);
		return r;
	}
	/* A VMM given at attach must already be a live KVM VMM that can carry
	 * the lease (and a reloaded lease's VMM the same process as before):
	 * checked before the arbiter, so that a bad owner changes nothing. */
	if (a->has_owner) {
		if (owner_start && !owner_alive(a->owner.pid, owner_start)) {
			vm_arb_spec_free(&spec);
			vm_free(v);
			return proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, "params.owner",
					       "VMM pid %d is gone", a->owner.pid);
		}
		r = register_vmm(b, v, a->owner.pid, a->owner.vm_fd, true, "params.owner", err);
		if (r < 0) {
			vm_arb_spec_free(&spec);
			vm_free(v);
			return r;
		}
	}
	char why[BROKER_WHY];
	r = arb_vm_add(b->arb, &spec.vm, why, sizeof(why));
	vm_arb_spec_free(&spec);
	if (r < 0) {
		unbind_vm(b, v);
		vm_free(v);
		if (r == -EBUSY)
			return proto_error_set(err, PROTO_E_REFUSED, EBUSY, NULL, "%s", why);
		return proto_error_set(err, PROTO_E_INVALID_PARAM, -r, NULL, "%s", why);
	}
	struct broker_vm **vms = realloc(b->vms, (b->n_vms + 1) * sizeof(*vms));
	if (!vms) {
		undo_vm(b, v->id, false);
		unbind_vm(b, v);
		vm_free(v);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	b->vms = vms;
	b->vms[b->n_vms++] = v;

	char reason[128];
	bool touched;
	snprintf(reason, sizeof(reason), "vm.attach %s", a->name);
	r = commit_change(b, reason, err, &touched);
	if (r < 0) {
		undo_vm(b, v->id, touched);
		unbind_vm(b, v);
		remove_vm_at(b, vm_pos(b, v));
		if (touched && persist(b) < 0)
			log_err("vm %s: the refused attach may come back at restart: the state could not be saved", a->name);
		return r;
	}
	log_notice("vm %s attached: priority %u, class %s, %u vCPUs, gp %u, fixed 0x%x%s vm=%s uid=%u via=%s",
		   a->name, v->spec.priority, proto_class_name(v->spec.cls), a->vcpus.count, a->gp, a->fixed_mask,
		   v->bound ? ", bound to its VMM" : ", not bound to a VMM yet", a->name, (unsigned)uid,
		   c->transport ? c->transport : "?");
	if (result) {
		unsigned n_pass = 0;
		for (uint32_t i = 0; i < v->spec.vcpus.count; i++)
			json_object_put(vcpu_routes_json(b, v, i, &n_pass));
		/* A VM that asked for no PMC has nothing to pass through or
		 * multiplex. */
		unsigned n_asked = v->spec.gp || v->spec.fixed_mask ? v->spec.vcpus.count : 0;
		struct json_object *o = json_object_new_object(), *g = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(a->name));
		json_object_object_add(o, "generation", json_object_new_uint64(arb_generation(b->arb)));
		json_object_object_add(g, "passthrough_vcpus", json_object_new_int((int)n_pass));
		json_object_object_add(g, "multiplexed_vcpus", json_object_new_int((int)(n_asked - n_pass)));
		json_object_object_add(o, "granted", g);
		json_object_object_add(o, "bound", json_object_new_boolean(v->bound));
		*result = o;
	}
	return 0;
}

/*
 * Takes a VM lease away. A request (vm.detach) must be saved before it is
 * carried out, and is refused whole when it cannot be; a release nobody can
 * refuse (its VMM died, libvirt stopped the domain, the D-Bus peer left) is
 * carried out and its save retried until it succeeds.
 */
static int vm_release(struct broker *b, struct broker_vm *v, const char *reason, bool refuse_unsaved)
{
	uint64_t id = v->id;
	char why[BROKER_WHY], ev[160], name[PROTO_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", v->spec.name);
	int r = persist_excluding(b, v, NULL);
	if (r < 0 && refuse_unsaved)
		return r;
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
	remove_vm_at(b, vm_pos(b, v));
	if (r < 0)
		persist_or_retry(b);
	sync_sessions(b);
	snprintf(ev, sizeof(ev), "vm released %s", name);
	emit(b, ev);
	log_notice("vm %s released: %s vm=%s", name, reason, name);
	return 0;
}

int broker_vm_release(struct broker *b, const char *vm_name, const char *reason)
{
	struct broker_vm *v = find_vm(b, vm_name);
	if (!v)
		return -ENOENT;
	return vm_release(b, v, reason, false);
}

static int vm_detach(struct broker *b, const struct broker_caller *c, const char *name,
		     struct json_object **result, struct proto_error *err)
{
	if (!c->privileged)
		return deny(err, c, "vm.detach");
	if (!find_vm(b, name))
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name",
				       "no vm named %s", name);
	char reason[160];
	snprintf(reason, sizeof(reason), "detached by uid %u via %s", (unsigned)c->uid,
		 c->transport ? c->transport : "?");
	int r = vm_release(b, find_vm(b, name), reason, true);
	if (r < 0)
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL,
				       "could not save the state to %s: %s; vm %s stays attached", b->state_dir,
				       strerror(-r), name);
	*result = json_object_new_object();
	json_object_object_add(*result, "generation", json_object_new_uint64(arb_generation(b->arb)));
	return 0;
}

static int vm_update(struct broker *b, const struct broker_caller *c, const struct proto_vm_update *u,
		     struct json_object **result, struct proto_error *err)
{
	if (!c->privileged)
		return deny(err, c, "vm.update");
	struct broker_vm *v = find_vm(b, u->name);
	if (!v)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s",
				       u->name);
	struct proto_vm_attach next = v->spec;
	if (u->has_priority)
		next.priority = u->priority;
	if (u->has_class)
		next.cls = u->cls;
	if (u->has_gp)
		next.gp = u->gp;
	if (u->has_fixed_mask)
		next.fixed_mask = u->fixed_mask;
	if (u->has_vcpus) {
		if (v->bound && u->vcpus.count != v->spec.vcpus.count)
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
					       "params.vcpus: vm %s is bound to its VMM with %u vCPUs; the count cannot change",
					       u->name, v->spec.vcpus.count);
		next.vcpus = u->vcpus;
	}
	struct vm_arb_spec spec;
	int r = build_vm_spec(b, v->id, &next, &spec, err);
	if (r < 0)
		return r;
	char why[BROKER_WHY];
	r = arb_vm_update(b->arb, &spec.vm, why, sizeof(why));
	vm_arb_spec_free(&spec);
	if (r < 0) {
		if (r == -EBUSY)
			return proto_error_set(err, PROTO_E_REFUSED, EBUSY, NULL, "%s", why);
		return proto_error_set(err, PROTO_E_INVALID_PARAM, -r, NULL, "%s", why);
	}
	struct proto_vm_attach old = v->spec;
	if (u->has_vcpus && copy_vcpus(&next.vcpus, &u->vcpus) < 0) {
		/* Put the arbiter back to the old spec. */
		build_vm_spec(b, v->id, &old, &spec, err);
		arb_vm_update(b->arb, &spec.vm, NULL, 0);
		vm_arb_spec_free(&spec);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	v->spec = next;
	/* The port checks each route against the CPUs declared for its vCPU:
	 * a re-pinned vCPU's new routes must meet its new CPUs, not the old. */
	if (u->has_vcpus && v->bound)
		declare_vcpu_cpus(b, v);
	char reason[128];
	snprintf(reason, sizeof(reason), "vm.update %s", u->name);
	bool touched;
	r = commit_change(b, reason, err, &touched);
	if (r < 0) {
		struct proto_error ignored;
		if (u->has_vcpus)
			free(v->spec.vcpus.cpus);
		v->spec = old;
		if (u->has_vcpus && v->bound)
			declare_vcpu_cpus(b, v);
		if (build_vm_spec(b, v->id, &old, &spec, &ignored) == 0) {
			arb_vm_update(b->arb, &spec.vm, NULL, 0);
			vm_arb_spec_free(&spec);
			if (touched) {
				apply_last(b, why, sizeof(why));
				sync_sessions(b);
			}
		}
		if (touched && persist(b) < 0)
			log_err("vm %s: the refused update may come back at restart: the state could not be saved",
				u->name);
		return r;
	}
	if (u->has_vcpus)
		free(old.vcpus.cpus);
	log_notice("vm %s updated: priority %u, class %s, gp %u, fixed 0x%x vm=%s", u->name,
		   v->spec.priority, proto_class_name(v->spec.cls), v->spec.gp, v->spec.fixed_mask, u->name);
	*result = json_object_new_object();
	json_object_object_add(*result, "name", json_object_new_string(u->name));
	json_object_object_add(*result, "generation", json_object_new_uint64(arb_generation(b->arb)));
	return 0;
}

static int vm_bind(struct broker *b, const struct broker_caller *c, const struct proto_vm_bind *q,
		   struct json_object **result, struct proto_error *err)
{
	if (!c->privileged)
		return deny(err, c, "vm.bind");
	struct broker_vm *v = find_vm(b, q->name);
	if (!v)
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s",
				       q->name);
	if (v->bound) {
		if (v->vmm_pid == q->pid)
			goto done; /* the hook may run twice (reconnect): same answer */
		return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.pid",
				       "vm %s is already bound to VMM pid %d", q->name, (int)v->vmm_pid);
	}
	int r = register_vmm(b, v, q->pid, q->vm_fd, q->has_vm_fd, "params.pid", err);
	if (r < 0)
		return r;
	/* Durable first: the lease now names its VMM. */
	if ((r = persist(b)) < 0) {
		unbind_vm(b, v);
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "could not save the state to %s: %s",
				       b->state_dir, strerror(-r));
	}
	r = apply_routes(b, v, err);
	if (r < 0) {
		/* Take back what reached the port before the VM leaves it, then
		 * save the lease unbound again. */
		struct transition *t = calloc(v->spec.vcpus.count, sizeof(*t));
		struct kvm_apply_result res = {0};
		for (uint32_t i = 0; t && i < v->spec.vcpus.count; i++)
			t[i] = (struct transition){ .kind = TRANSITION_ROUTES, .phase = 1, .vm_id = v->id,
						    .vcpu = i, .cpu = -1 };
		if (t)
			kvm_port_apply(b->port, t, v->spec.vcpus.count, &res);
		free(t);
		unbind_vm(b, v);
		persist_or_retry(b);
		return r;
	}
	log_notice("vm %s bound to VMM pid %d (VM fd %d) vm=%s", q->name, (int)q->pid, v->vm_fd, q->name);
	{
		/* Doors that mirror leases (D-Bus Owner) learn of it. */
		char ev[160];
		snprintf(ev, sizeof(ev), "vm.bind %s", q->name);
		emit_event(b, ev, false);
	}
done:
	*result = json_object_new_object();
	json_object_object_add(*result, "name", json_object_new_string(q->name));
	json_object_object_add(*result, "generation", json_object_new_uint64(arb_generation(b->arb)));
	return 0;
}

static struct json_object *guest_view_json(const struct broker *b, const struct broker_vm *v)
{
	struct pmu_guest_shape shape;
	struct pmu_cpuid_regs regs;
	char err[256];
	pmu_guest_default_shape(&b->pmu, &shape);
	shape.num_gp = v->spec.gp;
	shape.fixed_mask = v->spec.fixed_mask;
	struct json_object *o = json_object_new_object();
	if (pmu_guest_cpuid(&b->pmu, &shape, &regs, err, sizeof(err)) < 0) {
		json_object_object_add(o, "error", json_object_new_string(err));
		return o;
	}
	char buf[64];
	json_object_object_add(o, "version", json_object_new_int((int)shape.version));
	snprintf(buf, sizeof(buf), "0x%08x", regs.eax);
	json_object_object_add(o, "eax", json_object_new_string(buf));
	snprintf(buf, sizeof(buf), "0x%08x", regs.ebx);
	json_object_object_add(o, "ebx", json_object_new_string(buf));
	snprintf(buf, sizeof(buf), "0x%08x", regs.ecx);
	json_object_object_add(o, "ecx", json_object_new_string(buf));
	snprintf(buf, sizeof(buf), "0x%08x", regs.edx);
	json_object_object_add(o, "edx", json_object_new_string(buf));
	struct pmu_desc *gd = malloc(sizeof(*gd));
	if (gd && pmu_guest_desc(&b->pmu, &regs, gd) == 0) {
		char block[1024];
		pmu_format_boot_block(gd, block, sizeof(block));
		json_object_object_add(o, "boot_block", json_object_new_string(block));
	}
	free(gd);
	return o;
}

static struct json_object *vm_json(const struct broker *b, const struct broker_vm *v, bool full)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(v->spec.name));
	json_object_object_add(o, "priority", json_object_new_int((int)v->spec.priority));
	json_object_object_add(o, "class", json_object_new_string(proto_class_name(v->spec.cls)));
	json_object_object_add(o, "gp", json_object_new_int((int)v->spec.gp));
	json_object_object_add(o, "fixed_mask", hex32(v->spec.fixed_mask));
	json_object_object_add(o, "origin", json_object_new_string(v->origin));
	if (v->follows_connection && !v->bound)
		json_object_object_add(o, "follows_connection", json_object_new_boolean(true));
	if (v->bound) {
		struct json_object *ow = json_object_new_object();
		json_object_object_add(ow, "pid", json_object_new_int(v->vmm_pid));
		json_object_object_add(ow, "vm_fd", json_object_new_int(v->vm_fd));
		json_object_object_add(o, "owner", ow);
	} else {
		json_object_object_add(o, "owner", NULL);
	}
	unsigned n_pass = 0;
	struct json_object *vc = json_object_new_array();
	for (uint32_t i = 0; i < v->spec.vcpus.count; i++)
		json_object_array_add(vc, vcpu_routes_json(b, v, i, &n_pass));
	json_object_object_add(o, "passthrough_vcpus", json_object_new_int((int)n_pass));
	if (full) {
		json_object_object_add(o, "vcpus", vc);
		json_object_object_add(o, "guest_pmu", guest_view_json(b, v));
	} else {
		json_object_object_add(o, "vcpus", json_object_new_int((int)v->spec.vcpus.count));
		json_object_put(vc);
	}
	return o;
}

/* ---------------------------------------------------------------- sessions */

static void session_free(struct broker_session *s)
{
	if (!s)
		return;
	owner_watch_free(s->watch);
	if (s->ps)
		perf_session_destroy(s->ps);
	for (uint32_t i = 0; s->spec.events && i < s->spec.n_events; i++)
		free(s->spec.events[i]);
	free(s->spec.events);
	free(s->events);
	free(s->arb_index);
	free(s);
}

static void remove_session(struct broker *b, struct broker_session *s)
{
	for (size_t i = 0; i < b->n_sessions; i++)
		if (b->sessions[i] == s) {
			memmove(&b->sessions[i], &b->sessions[i + 1],
				(b->n_sessions - i - 1) * sizeof(*b->sessions));
			b->n_sessions--;
			break;
		}
	session_free(s);
}

/* As vm_release: a request is refused whole when it cannot be saved. */
static int session_stop_internal(struct broker *b, struct broker_session *s, const char *reason,
				 bool refuse_unsaved)
{
	char why[BROKER_WHY], ev[160], name[PROTO_NAME_MAX + 1];
	uint64_t id = s->id;
	bool in_arb = s->n_hw > 0;
	int saved = persist_excluding(b, NULL, s);
	if (saved < 0 && refuse_unsaved)
		return saved;
	snprintf(name, sizeof(name), "%s", s->spec.name);
	remove_session(b, s);
	if (in_arb && arb_session_remove(b->arb, id) == 0 && apply_last(b, why, sizeof(why)) < 0)
		log_err("stopping session %s: %s", name, why);
	if (saved < 0)
		persist_or_retry(b);
	sync_sessions(b);
	snprintf(ev, sizeof(ev), "session stopped %s", name);
	emit(b, ev);
	log_notice("session %s stopped: %s session=%s", name, reason, name);
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

static struct json_object *session_events_plan(const struct broker *b, const struct broker_session *s)
{
	struct json_object *evs = json_object_new_array();
	for (uint32_t i = 0; i < s->spec.n_events; i++) {
		struct json_object *e = json_object_new_object();
		json_object_object_add(e, "event", json_object_new_string(s->spec.events[i]));
		if (s->arb_index[i] < 0) {
			json_object_object_add(e, "placement", json_object_new_string("software"));
			json_object_object_add(e, "share", json_object_new_double(1.0));
		} else {
			struct arb_event_grant g;
			arb_session_event(b->arb, s->id, (unsigned)s->arb_index[i], &g);
			json_object_object_add(e, "placement", json_object_new_string(g.dedicated ? "dedicated" : "multiplexed"));
			json_object_object_add(e, "share", json_object_new_double(g.share));
			json_object_object_add(e, "dedicated_cpus", json_object_new_int((int)g.n_dedicated));
		}
		json_object_array_add(evs, e);
	}
	return evs;
}

static int session_start(struct broker *b, const struct broker_caller *c,
			 const struct proto_session_start *q, uid_t uid, uint64_t owner_start,
			 struct json_object **result, struct proto_error *err)
{
	if (!c->privileged)
		return deny(err, c, "session.start");
	if (find_session(b, q->name))
		return proto_error_set(err, PROTO_E_EXISTS, EEXIST, "params.name",
				       "session %s already exists", q->name);
	struct broker_session *s = calloc(1, sizeof(*s));
	if (!s)
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	s->b = b;
	s->id = b->next_id++;
	s->uid = uid;
	set_origin(s->origin, sizeof(s->origin), c);
	s->follows_connection = c->follows_connection && !q->owner_pid;
	s->spec = *q;
	s->spec.events = calloc(q->n_events, sizeof(char *));
	s->events = calloc(q->n_events, sizeof(*s->events));
	s->arb_index = calloc(q->n_events, sizeof(int));
	s->owner_pid = q->owner_pid ? q->owner_pid : c->pid;
	s->started_usec = now_usec(CLOCK_REALTIME);
	int r = 0;
	if (!s->spec.events || !s->events || !s->arb_index) {
		s->spec.n_events = 0;
		session_free(s);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	for (uint32_t i = 0; i < q->n_events; i++)
		s->spec.events[i] = strdup(q->events[i]);

	/* Events: parse, and give the hardware ones their counter constraints. */
	struct arb_event_spec *aev = calloc(q->n_events, sizeof(*aev));
	uint64_t *set = calloc(ARB_CPUSET_WORDS(b->pmu.n_cpus), sizeof(uint64_t));
	if (!aev || !set) {
		free(aev);
		free(set);
		session_free(s);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	struct perf_event_opts popts = { .sysfs_root = b->sysfs_root[0] ? b->sysfs_root : NULL };
	for (uint32_t i = 0; i < q->n_events; i++) {
		char msg[256], field[48];
		snprintf(field, sizeof(field), "params.events[%u]", i);
		r = perf_event_parse(q->events[i], &popts, &s->events[i], msg, sizeof(msg));
		if (r < 0) {
			r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, field, "%s: %s", field, msg);
			goto fail;
		}
		s->arb_index[i] = -1;
		if (!s->events[i].hardware)
			continue;
		uint32_t gp = (uint32_t)pmu_gp_bits(b->pmu.num_gp), fx = 0;
		if (s->events[i].has_evtsel)
			pmu_event_counters(&b->pmu, s->events[i].evtsel_config, &gp, &fx);
		aev[s->n_hw] = (struct arb_event_spec){ .name = s->spec.events[i], .gp_mask = gp,
							.fixed_mask = fx };
		s->arb_index[i] = (int)s->n_hw++;
	}
	if (s->spec.has_cpus) {
		r = to_cpuset(b, &s->spec.cpus, set, "params.cpus", err);
		if (r < 0)
			goto fail;
	} else {
		/* A task may run on any CPU: its events need room everywhere. */
		for (unsigned i = 0; i < b->pmu.n_cpus; i++)
			arb_cpuset_add(set, i);
	}
	char why[BROKER_WHY];
	if (s->n_hw) {
		struct arb_session_spec as = { .id = s->id, .name = s->spec.name,
					       .priority = (int)q->priority, .cls = arb_class_of(q->cls),
					       .cpus = set, .n_events = s->n_hw, .events = aev };
		r = arb_session_add(b->arb, &as, why, sizeof(why));
		if (r < 0) {
			r = proto_error_set(err, r == -EBUSY ? PROTO_E_REFUSED : PROTO_E_INVALID_PARAM, -r,
					    NULL, "%s", why);
			goto fail;
		}
	}

	/* Counting: each event opened on the placement the plan gives it. */
	char cpus_text[8192] = "";
	if (s->spec.has_cpus)
		cpulist_format(&s->spec.cpus, cpus_text, sizeof(cpus_text));
	struct perf_session_opts so = { .cpus = s->spec.has_cpus ? &s->spec.cpus : NULL,
				 .pid = s->spec.has_cpus ? 0 : s->spec.pid,
				 .model_pmu = b->pmu.source == PMU_SOURCE_BUILTIN ||
					      b->pmu.source == PMU_SOURCE_FILE,
				 .sysfs_root = b->sysfs_root[0] ? b->sysfs_root : NULL };
	char msg[512];
	r = perf_session_create(&so, &s->ps, msg, sizeof(msg));
	if (r < 0) {
		r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, NULL, "%s", msg);
		goto fail_arb;
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
			r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, "params.events",
					    "params.events[%u] %s: %s", i, q->events[i], perf_session_error(s->ps));
			goto fail_arb;
		}
	}
	r = perf_session_open(s->ps);
	if (r < 0) {
		r = proto_error_set(err, PROTO_E_INVALID_PARAM, -r, "params.events", "%s",
				    perf_session_error(s->ps));
		goto fail_arb;
	}
	r = owner_watch_new(b->event, s->owner_pid, -1, on_session_owner_gone, s, &s->watch);
	if (r < 0) {
		r = proto_error_set(err, PROTO_E_NOT_FOUND, -r, "params.owner_pid",
				    "session owner pid %d: %s", (int)s->owner_pid, strerror(-r));
		goto fail_arb;
	}
	uint64_t st = 0;
	owner_start_time(s->owner_pid, &st);
	if (owner_start && st != owner_start) {
		r = proto_error_set(err, PROTO_E_NOT_FOUND, ESRCH, "params.owner_pid",
				    "session owner pid %d is a different process now", (int)s->owner_pid);
		goto fail_arb;
	}
	s->owner_start = st;
	struct broker_session **ss = realloc(b->sessions, (b->n_sessions + 1) * sizeof(*ss));
	if (!ss) {
		r = proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		goto fail_arb;
	}
	b->sessions = ss;
	b->sessions[b->n_sessions++] = s;
	char reason[128];
	snprintf(reason, sizeof(reason), "session.start %s", q->name);
	bool touched = false;
	if (s->n_hw)
		r = commit_change(b, reason, err, &touched);
	else
		r = persist(b) < 0 ? proto_error_set(err, PROTO_E_INTERNAL, EIO, NULL,
						     "could not save the state") : 0;
	if (r < 0) {
		b->n_sessions--;
		if (touched) {
			/* Saved, then the port failed: save again without it. */
			if (s->n_hw && arb_session_remove(b->arb, s->id) == 0) {
				apply_last(b, why, sizeof(why));
				sync_sessions(b);
			}
			persist_or_retry(b);
			s->n_hw = 0; /* already out of the arbiter */
		}
		goto fail_arb;
	}
	free(aev);
	free(set);
	log_notice("session %s started: %u events (%u on hardware counters), %s%s, owner pid %d session=%s uid=%u",
		   q->name, q->n_events, s->n_hw, s->spec.has_cpus ? "cpus " : "pid ",
		   s->spec.has_cpus ? cpus_text : "", (int)s->owner_pid, q->name, (unsigned)uid);
	if (result) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(q->name));
		json_object_object_add(o, "generation", json_object_new_uint64(arb_generation(b->arb)));
		json_object_object_add(o, "events", session_events_plan(b, s));
		*result = o;
	}
	return 0;

fail_arb:
	/* The port never saw the add (a commit that reached it undid itself
	 * above): take it out of the arbiter only, scrubbing nothing. */
	if (s->n_hw)
		arb_session_remove(b->arb, s->id);
fail:
	free(aev);
	free(set);
	session_free(s);
	return r;
}

static int session_read(struct broker *b, const struct broker_caller *c, const char *name,
			struct json_object **result, struct proto_error *err)
{
	struct broker_session *s = find_session(b, name);
	if (!s || !may_see(c, s->uid))
		return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name",
				       "no session named %s%s", name,
				       s ? " that this caller may read" : "");
	struct perf_session_reading *rd = calloc(s->spec.n_events, sizeof(*rd));
	if (!rd)
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	int r = perf_session_read(s->ps, rd, s->spec.n_events);
	if (r < 0) {
		free(rd);
		return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL, "reading session %s: %s", name,
				       perf_session_error(s->ps));
	}
	struct json_object *o = json_object_new_object(), *evs = json_object_new_array();
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "since_usec", json_object_new_uint64(s->started_usec));
	json_object_object_add(o, "read_usec", json_object_new_uint64(now_usec(CLOCK_REALTIME)));
	if (b->pmu.source != PMU_SOURCE_HOST)
		json_object_object_add(o, "note", json_object_new_string(
			"the PMU is a model (simulated): hardware events are placed by the plan but nothing is counted for them"));
	for (uint32_t i = 0; i < s->spec.n_events; i++) {
		struct json_object *e = json_object_new_object();
		json_object_object_add(e, "event", json_object_new_string(s->spec.events[i]));
		json_object_object_add(e, "placement",
				       json_object_new_string(s->arb_index[i] < 0 ? "software" : perf_session_placement_name(rd[i].placement)));
		bool counted = rd[i].status == PERF_SESSION_COUNTED;
		json_object_object_add(e, "counted", json_object_new_boolean(counted));
		if (!counted) {
			json_object_object_add(e, "reason", json_object_new_string(rd[i].reason ? rd[i].reason : "not counted"));
		} else {
			json_object_object_add(e, "value", json_object_new_uint64(rd[i].value));
			json_object_object_add(e, "time_enabled", json_object_new_uint64(rd[i].time_enabled));
			json_object_object_add(e, "time_running", json_object_new_uint64(rd[i].time_running));
			json_object_object_add(e, "scaled", json_object_new_double(rd[i].scaled));
			json_object_object_add(e, "multiplexed", json_object_new_boolean(rd[i].multiplexed));
			json_object_object_add(e, "never_ran", json_object_new_boolean(rd[i].never_ran));
		}
		json_object_array_add(evs, e);
	}
	free(rd);
	json_object_object_add(o, "events", evs);
	*result = o;
	return 0;
}

static struct json_object *session_json(const struct broker *b, const struct broker_session *s)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "name", json_object_new_string(s->spec.name));
	json_object_object_add(o, "priority", json_object_new_int((int)s->spec.priority));
	json_object_object_add(o, "class", json_object_new_string(proto_class_name(s->spec.cls)));
	json_object_object_add(o, "events", json_object_new_int((int)s->spec.n_events));
	if (s->spec.has_cpus)
		json_object_object_add(o, "cpus", cpus_string(&s->spec.cpus));
	else
		json_object_object_add(o, "pid", json_object_new_int(s->spec.pid));
	json_object_object_add(o, "owner_pid", json_object_new_int(s->owner_pid));
	json_object_object_add(o, "uid", json_object_new_int((int)s->uid));
	(void)b;
	return o;
}

/* ------------------------------------------------------------ read views */

static struct json_object *status_json(const struct broker *b)
{
	struct json_object *o = json_object_new_object(), *be = json_object_new_object();
	json_object_object_add(o, "server", json_object_new_string("vpmud/" VPMU_VERSION));
	json_object_object_add(o, "protocol", json_object_new_int(PROTO_VERSION));
	json_object_object_add(be, "pmu", json_object_new_string(b->pmu.model));
	json_object_object_add(be, "pmu_source", json_object_new_string(pmu_source_name(b->pmu.source)));
	json_object_object_add(be, "pmu_simulated", json_object_new_boolean(b->pmu.source != PMU_SOURCE_HOST));
	if (b->pmu_note[0])
		json_object_object_add(be, "pmu_why", json_object_new_string(b->pmu_note));
	json_object_object_add(be, "kvm", json_object_new_string(kvm_port_backend_name(kvm_port_backend(b->port))));
	json_object_object_add(be, "kvm_enforced", json_object_new_boolean(routes_enforced(b)));
	json_object_object_add(be, "kvm_why", json_object_new_string(b->kvm_note[0] ? b->kvm_note : kvm_port_why(b->port)));
	if (b->kvm_host_summary[0])
		json_object_object_add(be, "kvm_host", json_object_new_string(b->kvm_host_summary));
	json_object_object_add(o, "backends", be);
	json_object_object_add(o, "generation", json_object_new_uint64(arb_generation(b->arb)));
	json_object_object_add(o, "cpus", json_object_new_int((int)b->pmu.n_cpus));
	json_object_object_add(o, "vms", json_object_new_int((int)b->n_vms));
	json_object_object_add(o, "sessions", json_object_new_int((int)b->n_sessions));
	json_object_object_add(o, "watchers", json_object_new_int((int)b->n_subs));
	json_object_object_add(o, "uptime_s",
			       json_object_new_uint64((now_usec(CLOCK_MONOTONIC) - b->started_usec) / 1000000));
	return o;
}

static struct json_object *pmu_json(const struct broker *b)
{
	const struct pmu_desc *p = &b->pmu;
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "source", json_object_new_string(pmu_source_name(p->source)));
	json_object_object_add(o, "simulated", json_object_new_boolean(p->source != PMU_SOURCE_HOST));
	json_object_object_add(o, "model", json_object_new_string(p->model));
	json_object_object_add(o, "vendor", json_object_new_string(pmu_vendor_name(p->vendor)));
	json_object_object_add(o, "version", json_object_new_int((int)p->version));
	json_object_object_add(o, "gp", json_object_new_int((int)p->num_gp));
	json_object_object_add(o, "gp_width", json_object_new_int((int)p->gp_width));
	json_object_object_add(o, "fixed_mask", hex32(p->fixed_mask));
	json_object_object_add(o, "fixed", json_object_new_int((int)pmu_num_fixed(p)));
	json_object_object_add(o, "fixed_width", json_object_new_int((int)p->fixed_width));
	json_object_object_add(o, "perf_metrics", json_object_new_boolean(p->perf_metrics));
	json_object_object_add(o, "pebs_format", json_object_new_int(p->pebs_format));
	char buf[32];
	snprintf(buf, sizeof(buf), "0x%016" PRIx64, pmu_global_ctrl_mask(p));
	json_object_object_add(o, "global_ctrl_mask", json_object_new_string(buf));
	json_object_object_add(o, "cpus", json_object_new_int((int)p->n_cpus));
	char block[1024];
	pmu_format_boot_block(p, block, sizeof(block));
	json_object_object_add(o, "boot_block", json_object_new_string(block));
	if (p->nmi_watchdog) {
		struct json_object *t = json_object_new_object();
		json_object_object_add(t, "nmi_watchdog", json_object_new_string("one cycles-capable counter on every CPU"));
		json_object_object_add(o, "taken", t);
	}
	return o;
}

static struct json_object *plan_json(const struct broker *b, const struct proto_plan_req *q)
{
	struct json_object *o = json_object_new_object(), *cpus = json_object_new_array();
	json_object_object_add(o, "generation", json_object_new_uint64(arb_generation(b->arb)));
	json_object_object_add(o, "simulated_pmu", json_object_new_boolean(b->pmu.source != PMU_SOURCE_HOST));
	json_object_object_add(o, "kvm_enforced", json_object_new_boolean(routes_enforced(b)));
	for (unsigned i = 0; i < b->pmu.n_cpus; i++) {
		struct arb_cpu_view cv;
		if (q && q->has_cpus && !cpulist_test(&q->cpus, (unsigned)b->cpu_ids[i]))
			continue;
		if (arb_cpu_plan(b->arb, i, &cv) < 0)
			continue;
		struct json_object *c = json_object_new_object(), *host = json_object_new_array();
		json_object_object_add(c, "cpu", json_object_new_int(cv.cpu));
		json_object_object_add(c, "guest_gp_mask", hex32(cv.guest_gp_mask));
		json_object_object_add(c, "guest_fixed_mask", hex32(cv.guest_fixed_mask));
		for (unsigned k = 0; k < cv.n_placements; k++) {
			const struct arb_placement *p = &cv.placements[k];
			struct json_object *h = json_object_new_object();
			char cn[16];
			if (p->holder == ARB_HOLDER_FOREIGN) {
				json_object_object_add(h, "foreign", json_object_new_string(b->foreign[p->id].name));
				/* The only foreign user we know of counts core cycles. */
				json_object_object_add(h, "event", json_object_new_string("cycles"));
			} else {
				const char *sn = "?";
				for (size_t s = 0; s < b->n_sessions; s++)
					if (b->sessions[s]->id == p->id)
						sn = b->sessions[s]->spec.name;
				json_object_object_add(h, "session", json_object_new_string(sn));
				json_object_object_add(h, "event", json_object_new_string(p->name ? p->name : "?"));
			}
			const char *cname = counter_name(p->counter, cn, sizeof(cn));
			json_object_object_add(h, "counter", cname ? json_object_new_string(cname) : NULL);
			json_object_object_add(h, "share", json_object_new_double(p->share));
			json_object_array_add(host, h);
		}
		json_object_object_add(c, "host", host);
		json_object_array_add(cpus, c);
	}
	json_object_object_add(o, "cpus", cpus);
	struct json_object *vms = json_object_new_array();
	for (size_t i = 0; i < b->n_vms; i++)
		json_object_array_add(vms, vm_json(b, b->vms[i], true));
	json_object_object_add(o, "vms", vms);
	struct json_object *ss = json_object_new_array();
	for (size_t i = 0; i < b->n_sessions; i++) {
		struct json_object *so = session_json(b, b->sessions[i]);
		json_object_object_add(so, "events", session_events_plan(b, b->sessions[i]));
		json_object_array_add(ss, so);
	}
	json_object_object_add(o, "sessions", ss);
	return o;
}

/* ---------------------------------------------------------------- dispatch */

int broker_handle(struct broker *b, const struct broker_caller *c, const struct proto_request *req,
		  struct json_object **result, struct proto_error *err)
{
	*result = NULL;
	switch (req->method) {
	case PROTO_M_STATUS:
		*result = status_json(b);
		return 0;
	case PROTO_M_PMU:
		*result = pmu_json(b);
		return 0;
	case PROTO_M_PLAN:
		*result = plan_json(b, &req->u.plan);
		return 0;
	case PROTO_M_VM_ATTACH: {
		struct proto_vm_attach a = req->u.vm_attach;
		return vm_attach(b, c, &a, c->uid, 0, result, err);
	}
	case PROTO_M_VM_DETACH:
		return vm_detach(b, c, req->u.vm_detach.name, result, err);
	case PROTO_M_VM_UPDATE:
		return vm_update(b, c, &req->u.vm_update, result, err);
	case PROTO_M_VM_BIND:
		return vm_bind(b, c, &req->u.vm_bind, result, err);
	case PROTO_M_VM_LIST: {
		struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
		for (size_t i = 0; i < b->n_vms; i++)
			json_object_array_add(arr, vm_json(b, b->vms[i], false));
		json_object_object_add(o, "vms", arr);
		*result = o;
		return 0;
	}
	case PROTO_M_VM_SHOW: {
		struct broker_vm *v = find_vm(b, req->u.vm_show.name);
		if (!v)
			return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name",
					       "no vm named %s", req->u.vm_show.name);
		*result = vm_json(b, v, true);
		return 0;
	}
	case PROTO_M_SESSION_START:
		return session_start(b, c, &req->u.session_start, c->uid, 0, result, err);
	case PROTO_M_SESSION_STOP: {
		struct broker_session *s = find_session(b, req->u.session_stop.name);
		if (!s || !may_see(c, s->uid))
			return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name",
					       "no session named %s%s", req->u.session_stop.name,
					       s ? " that this caller may stop" : "");
		char reason[96];
		snprintf(reason, sizeof(reason), "stopped by uid %u", (unsigned)c->uid);
		int r = session_stop_internal(b, s, reason, true);
		if (r < 0)
			return proto_error_set(err, PROTO_E_INTERNAL, -r, NULL,
					       "could not save the state to %s: %s; session %s keeps running",
					       b->state_dir, strerror(-r), req->u.session_stop.name);
		*result = json_object_new_object();
		json_object_object_add(*result, "generation", json_object_new_uint64(arb_generation(b->arb)));
		return 0;
	}
	case PROTO_M_SESSION_READ:
		return session_read(b, c, req->u.session_read.name, result, err);
	case PROTO_M_SESSION_LIST: {
		struct json_object *o = json_object_new_object(), *arr = json_object_new_array();
		for (size_t i = 0; i < b->n_sessions; i++)
			if (may_see(c, b->sessions[i]->uid))
				json_object_array_add(arr, session_json(b, b->sessions[i]));
		json_object_object_add(o, "sessions", arr);
		*result = o;
		return 0;
	}
	default:
		return proto_error_set(err, PROTO_E_UNKNOWN_METHOD, ENOSYS, "method",
				       "method %s is handled by the transport, not the broker",
				       proto_method_name(req->method));
	}
}

/* ---------------------------------------------------------------- watchers */

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

uint64_t broker_generation(const struct broker *b)
{
	return arb_generation(b->arb);
}

void broker_summary(const struct broker *b, char *buf, size_t len)
{
	snprintf(buf, len, "%zu VMs, %zu sessions, plan generation %" PRIu64 "; PMU %s%s, KVM %s%s",
		 b->n_vms, b->n_sessions, arb_generation(b->arb), b->pmu.model,
		 b->pmu.source == PMU_SOURCE_HOST ? "" : " (simulated)",
		 kvm_port_backend_name(kvm_port_backend(b->port)),
		 routes_enforced(b) ? "" : kvm_port_backend(b->port) == KVM_BACKEND_MODEL
						   ? " (simulated: routes go to the model)"
						   : " (routes not enforced)");
}

/* ---------------------------------------------------------------- life */

int broker_new(const struct broker_opts *o, struct broker **out, char *why, size_t whylen)
{
	struct broker *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->event = o->event;
	b->cfg = o->cfg;
	b->pmu = *o->pmu;
	b->port = o->port;
	b->next_id = 1;
	b->started_usec = now_usec(CLOCK_MONOTONIC);
	snprintf(b->pmu_note, sizeof(b->pmu_note), "%s", o->pmu_note ? o->pmu_note : "");
	snprintf(b->kvm_host_summary, sizeof(b->kvm_host_summary), "%s",
		 o->kvm_host_summary ? o->kvm_host_summary : "");
	snprintf(b->kvm_note, sizeof(b->kvm_note), "%s", o->kvm_note ? o->kvm_note : "");
	snprintf(b->state_dir, sizeof(b->state_dir), "%s", o->state_dir);
	snprintf(b->sysfs_root, sizeof(b->sysfs_root), "%s", o->sysfs_root ? o->sysfs_root : "");

	if (b->pmu.n_cpus == 0) {
		snprintf(why, whylen, "the PMU description lists no CPUs");
		free(b);
		return -EINVAL;
	}
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
		b->foreign[0] = (struct arb_foreign){ .name = "nmi_watchdog", .cpu = -1, .gp_mask = gp,
						      .fixed_mask = fx };
		b->n_foreign = 1;
	}
	struct arb_inventory inv = { .n_cpus = b->pmu.n_cpus, .cpu_ids = b->cpu_ids,
				     .num_gp = b->pmu.num_gp, .fixed_mask = b->pmu.fixed_mask,
				     .foreign = b->foreign, .n_foreign = b->n_foreign };
	int r = arb_create(&inv, &b->arb);
	if (r < 0) {
		snprintf(why, whylen, "the arbiter refused the inventory: %s", strerror(-r));
		free(b);
		return r;
	}
	*out = b;
	return 0;
}

void broker_free(struct broker *b)
{
	if (!b)
		return;
	while (b->n_sessions)
		remove_session(b, b->sessions[b->n_sessions - 1]);
	while (b->n_vms) {
		struct broker_vm *v = b->vms[b->n_vms - 1];
		if (v->bound)
			kvm_port_unregister_vm(b->port, v->id);
		b->n_vms--;
		vm_free(v);
	}
	sd_event_source_disable_unref(b->persist_retry);
	free(b->vms);
	free(b->sessions);
	free(b->subs);
	arb_destroy(b->arb);
	free(b);
}

/* ---------------------------------------------------------------- restore */

static int restore_one(struct broker *b, struct json_object *entry, enum proto_method want,
		       const char *kind, size_t idx)
{
	struct json_object *rq, *uidj, *startj;
	struct proto_request req;
	struct proto_error err = {0};
	bool id_known;
	uint64_t id;

	memset(&req, 0, sizeof(req));
	if (!json_object_is_type(entry, json_type_object) ||
	    !json_object_object_get_ex(entry, "request", &rq) ||
	    !json_object_object_get_ex(entry, "uid", &uidj) || !json_object_is_type(uidj, json_type_int)) {
		log_err("state: %s[%zu]: not an object with \"request\" and integer \"uid\": dropped", kind, idx);
		return -EINVAL;
	}
	/* The saved request goes through the same validation as a live one, in
	 * a fresh envelope: the stored document is not ours to change. */
	struct json_object *method, *params;
	if (!json_object_is_type(rq, json_type_object) ||
	    !json_object_object_get_ex(rq, "method", &method) ||
	    !json_object_object_get_ex(rq, "params", &params)) {
		log_err("state: %s[%zu]: \"request\" is not an object with method and params: dropped", kind, idx);
		return -EINVAL;
	}
	struct json_object *envelope = json_object_new_object();
	json_object_object_add(envelope, "id", json_object_new_int(0));
	json_object_object_add(envelope, "method", json_object_get(method));
	json_object_object_add(envelope, "params", json_object_get(params));
	int r = proto_request_from_json(envelope, PMU_MAX_CPUS, &req, &id_known, &id, &err);
	json_object_put(envelope);
	if (r < 0 || req.method != want) {
		log_err("state: %s[%zu]: invalid saved request (%s): dropped", kind, idx,
			r < 0 ? err.message : "wrong method");
		proto_request_fini(&req);
		return -EINVAL;
	}
	uint64_t start = 0;
	if (json_object_object_get_ex(entry, "owner_start", &startj))
		start = json_object_get_uint64(startj);
	uid_t uid = (uid_t)json_object_get_int64(uidj);
	char origin[32] = "";
	struct json_object *oj;
	if (json_object_object_get_ex(entry, "origin", &oj) && json_object_is_type(oj, json_type_string))
		snprintf(origin, sizeof(origin), "%s", json_object_get_string(oj));
	struct json_object *fj;
	bool follows_connection = json_object_object_get_ex(entry, "follows_connection", &fj) &&
				  json_object_get_boolean(fj);
	struct broker_caller self = { .uid = uid, .privileged = true, .transport = "state",
				      .origin = origin[0] ? origin : NULL };
	struct json_object *res = NULL;
	memset(&err, 0, sizeof(err));
	if (want == PROTO_M_VM_ATTACH) {
		const char *name = req.u.vm_attach.name;
		if (follows_connection && !req.u.vm_attach.has_owner) {
			log_notice("state: vm %s: it followed a %s connection, which the restart closed: lease released vm=%s",
				   name, origin[0] ? origin : "client", name);
			proto_request_fini(&req);
			return -ESRCH;
		}
		if (req.u.vm_attach.has_owner && !owner_alive(req.u.vm_attach.owner.pid, start)) {
			log_notice("state: vm %s: its VMM (pid %d) exited while vpmud was down: lease released vm=%s",
				   name, req.u.vm_attach.owner.pid, name);
			proto_request_fini(&req);
			return -ESRCH;
		}
		r = vm_attach(b, &self, &req.u.vm_attach, uid, start, &res, &err);
		if (r < 0)
			log_err("state: vm %s could not be restored: %s vm=%s", name, err.message, name);
		else
			log_notice("state: vm %s restored%s vm=%s", name,
				   req.u.vm_attach.has_owner ? " and re-bound to its VMM" : "", name);
	} else {
		struct proto_session_start *q = &req.u.session_start;
		if (follows_connection) {
			log_notice("state: session %s: it followed a %s connection, which the restart closed: stopped session=%s",
				   q->name, origin[0] ? origin : "client", q->name);
			proto_request_fini(&req);
			return -ESRCH;
		}
		if (q->owner_pid && !owner_alive(q->owner_pid, start)) {
			log_notice("state: session %s: its owner (pid %d) exited while vpmud was down: stopped session=%s",
				   q->name, q->owner_pid, q->name);
			proto_request_fini(&req);
			return -ESRCH;
		}
		self.pid = q->owner_pid;
		r = session_start(b, &self, q, uid, start, &res, &err);
		if (r < 0)
			log_err("state: session %s could not be restored: %s session=%s", q->name, err.message, q->name);
		else
			log_notice("state: session %s restored (counts restart from zero) session=%s", q->name, q->name);
	}
	json_object_put(res);
	proto_request_fini(&req);
	return r;
}

int broker_restore(struct broker *b)
{
	struct json_object *doc = NULL, *arr;
	char moved[1024], why[512];
	int r = state_load(b->state_dir, &doc, moved, sizeof(moved), why, sizeof(why));
	if (r < 0) {
		log_err("state: cannot read %s/%s: %s", b->state_dir, STATE_FILE, strerror(-r));
		return r;
	}
	if (moved[0])
		log_err("state: %s; moved it aside to %s and started empty", why, moved);
	if (!doc) {
		log_info("state: nothing to restore in %s", b->state_dir);
		return 0;
	}
	b->restoring = true;
	size_t kept = 0, dropped = 0;
	if (json_object_object_get_ex(doc, "vms", &arr) && json_object_is_type(arr, json_type_array))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			restore_one(b, json_object_array_get_idx(arr, i), PROTO_M_VM_ATTACH, "vms", i) == 0
				? kept++ : dropped++;
	if (json_object_object_get_ex(doc, "sessions", &arr) && json_object_is_type(arr, json_type_array))
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			restore_one(b, json_object_array_get_idx(arr, i), PROTO_M_SESSION_START, "sessions", i) == 0
				? kept++ : dropped++;
	b->restoring = false;
	json_object_put(doc);
	log_notice("state: restored %zu leases, released %zu", kept, dropped);
	/* What was dropped must not come back at the next start. */
	return persist(b);
}

const char *broker_vm_origin(const struct broker *b, const char *name)
{
	const struct broker_vm *v = find_vm(b, name);
	return v ? v->origin : NULL;
}

int broker_vm_names(const struct broker *b, const char *origin, char ***names)
{
	char **out = calloc(b->n_vms + 1, sizeof(*out));
	size_t k = 0;
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < b->n_vms; i++) {
		if (origin && strcmp(origin, b->vms[i]->origin))
			continue;
		out[k] = strdup(b->vms[i]->spec.name);
		if (!out[k]) {
			while (k)
				free(out[--k]);
			free(out);
			return -ENOMEM;
		}
		k++;
	}
	*names = out;
	return (int)k;
}

uint64_t broker_vm_id(const struct broker *b, const char *name)
{
	const struct broker_vm *v = find_vm(b, name);
	return v ? v->id : 0;
}

bool broker_vm_bound(const struct broker *b, const char *name)
{
	const struct broker_vm *v = find_vm(b, name);
	return v && v->bound;
}
