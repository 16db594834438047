/* SPDX-License-Identifier: MIT */
#include "doors/libvirt_glue.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/cpulist.h"
#include "proto/domain_policy.h"
#include "base/log.h"
#include "proto/proto.h"

struct lvglue {
	struct broker *b;
	const struct config *cfg;
	char *pid_dir;
	unsigned host_cpus;
	struct broker_caller caller;
	struct libvirt_events_follower *f;
	/* names listed by the reconcile in progress */
	char **seen;
	size_t n_seen, cap_seen;
	bool reconciling;
	unsigned reconciles;
};

static bool origin_is_ours(const char *origin)
{
	return origin && (!strcmp(origin, LIBVIRT_GLUE_ORIGIN) || !strcmp(origin, LIBVIRT_GLUE_HOOK_ORIGIN));
}

/* ------------------------------------------------------------ broker calls */

/*
 * Runs one request through the socket's own validation, so that nothing a
 * domain XML carries reaches the broker unchecked (names, CPU numbers).
 * params is consumed.
 */
static int call(struct lvglue *g, const char *method, struct json_object *params, struct json_object **res,
		struct proto_error *err)
{
	struct json_object *rq = json_object_new_object();
	struct proto_request req;
	bool id_known;
	uint64_t id;
	int r;

	memset(&req, 0, sizeof(req));
	memset(err, 0, sizeof(*err));
	*res = NULL;
	if (!rq || !params || json_object_object_add(rq, "id", json_object_new_int(0)) < 0 ||
	    json_object_object_add(rq, "method", json_object_new_string(method)) < 0) {
		json_object_put(rq);
		json_object_put(params);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	if (json_object_object_add(rq, "params", params) < 0) {
		json_object_put(rq);
		json_object_put(params);
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	r = proto_request_from_json(rq, g->host_cpus, &req, &id_known, &id, err);
	json_object_put(rq);
	if (r == 0)
		r = broker_handle(g->b, &g->caller, &req, res, err);
	proto_request_fini(&req);
	return r;
}

static struct json_object *name_params(const char *name)
{
	struct json_object *p = json_object_new_object();
	if (p && json_object_object_add(p, "name", json_object_new_string(name)) < 0) {
		json_object_put(p);
		return NULL;
	}
	return p;
}

/* The lease as the broker holds it, or NULL when there is none. */
static struct json_object *vm_show(struct lvglue *g, const char *name)
{
	struct json_object *res;
	struct proto_error err;
	if (call(g, "vm.show", name_params(name), &res, &err) < 0) {
		if (err.code != PROTO_E_NOT_FOUND)
			log_err("libvirt: vm.show %s: %s vm=%s", name, err.message, name);
		json_object_put(res);
		return NULL;
	}
	return res;
}

static void to_cpulist(const struct cpulist *s, struct cpulist *l)
{
	*l = *s;
}

/* name, gp, fixed_mask and one CPU set per vCPU; priority and class when
 * with_policy (attach leaves them out for a domain without our metadata, so
 * the broker applies its own defaults, as it does for the hook). */
static struct json_object *request_params(const struct dompol *p, const char *name, bool with_policy)
{
	/* room for the worst case, every other CPU: "0,2,4,...,4094" */
	const size_t buflen = CPULIST_MAX_CPUS * 3;
	char *buf = malloc(buflen);
	struct json_object *o = name_params(name), *arr = json_object_new_array();
	bool ok = o && arr && buf;

	for (unsigned v = 0; ok && v < p->n_vcpus; v++) {
		struct cpulist l;
		struct json_object *e = json_object_new_object();
		to_cpulist(&p->vcpu_cpus[v], &l);
		ok = e && cpulist_format(&l, buf, buflen) >= 0 &&
		     json_object_object_add(e, "cpus", json_object_new_string(buf)) == 0 &&
		     json_object_array_add(arr, e) == 0;
		if (!ok)
			json_object_put(e);
	}
	free(buf);
	ok = ok && json_object_object_add(o, "vcpus", arr) == 0;
	if (!ok)
		json_object_put(arr);
	ok = ok && json_object_object_add(o, "gp", json_object_new_int((int)p->gp)) == 0 &&
	     json_object_object_add(o, "fixed_mask", json_object_new_int64(p->fixed_mask)) == 0;
	if (ok && with_policy)
		ok = json_object_object_add(o, "priority", json_object_new_int(p->priority)) == 0 &&
		     json_object_object_add(o, "class", json_object_new_string(p->cls)) == 0;
	if (!ok) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static const char *str_of(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return "";
	return json_object_get_string(v);
}

static int64_t int_of(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return -1;
	return json_object_get_int64(v);
}

/* Whether the lease the broker holds differs from what the domain asks. */
static bool policy_differs(const struct lvglue *g, struct json_object *show, const struct dompol *p)
{
	struct json_object *vc;
	char *end;
	const char *fx = str_of(show, "fixed_mask");
	unsigned long fixed = strtoul(fx, &end, 16);

	if (int_of(show, "priority") != p->priority || strcmp(str_of(show, "class"), p->cls) ||
	    int_of(show, "gp") != (int64_t)p->gp || end == fx || *end || fixed != p->fixed_mask)
		return true;
	if (!json_object_object_get_ex(show, "vcpus", &vc) || !json_object_is_type(vc, json_type_array) ||
	    json_object_array_length(vc) != p->n_vcpus)
		return true;
	for (unsigned v = 0; v < p->n_vcpus; v++) {
		struct cpulist have, want;
		to_cpulist(&p->vcpu_cpus[v], &want);
		if (cpulist_parse(str_of(json_object_array_get_idx(vc, v), "cpus"), g->host_cpus, &have) < 0 ||
		    !cpulist_equal(&have, &want))
			return true;
	}
	return false;
}

/* ------------------------------------------------------------- QEMU's pid */

/* libvirt writes "PID\n" to PID_DIR/NAME.pid while QEMU runs. The name
 * was accepted by the protocol's name check, so it stays inside dir. */
static int read_qemu_pid(const char *dir, const char *name, pid_t *pid, char *path, size_t pathlen)
{
	char buf[24];
	int n = snprintf(path, pathlen, "%s/%s.pid", dir, name);
	if (n < 0 || (size_t)n >= pathlen)
		return -ENAMETOOLONG;
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t len = fread(buf, 1, sizeof(buf) - 1, f);
	bool err = ferror(f);
	fclose(f);
	if (err)
		return -EIO;
	buf[len] = 0;
	if (len && buf[len - 1] == '\n')
		buf[--len] = 0;
	long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (buf[i] < '0' || buf[i] > '9' || v > PROTO_MAX_PID)
			return -EINVAL;
		v = v * 10 + (buf[i] - '0');
	}
	if (len == 0 || v < 1 || v > PROTO_MAX_PID)
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

static void bind_to_qemu(struct lvglue *g, const char *name)
{
	char path[PATH_MAX];
	pid_t pid = 0;
	struct json_object *res, *p;
	struct proto_error err;
	int r = read_qemu_pid(g->pid_dir, name, &pid, path, sizeof(path));

	if (r < 0) {
		/* QEMU not spawned yet (the hook's started binds it then), or not a
		 * QEMU domain: the lease waits unbound */
		log_info("libvirt: domain %s: no QEMU pid in %s (%s); lease left unbound vm=%s", name, path,
			 r == -EINVAL ? "not a pid" : strerror(-r), name);
		return;
	}
	if (!(p = name_params(name)) || json_object_object_add(p, "pid", json_object_new_int(pid)) < 0) {
		json_object_put(p);
		log_err("libvirt: domain %s: out of memory vm=%s", name, name);
		return;
	}
	if (call(g, "vm.bind", p, &res, &err) < 0)
		log_warn("libvirt: domain %s: cannot bind its lease to QEMU pid %d: %s vm=%s", name, (int)pid,
			 err.message, name);
	else
		log_info("libvirt: domain %s: lease bound to QEMU pid %d vm=%s", name, (int)pid, name);
	json_object_put(res);
}

static bool is_bound(struct json_object *show)
{
	struct json_object *o;
	return json_object_object_get_ex(show, "owner", &o) && json_object_is_type(o, json_type_object);
}

/* -------------------------------------------------------------- the rules */

static void say_refused(const char *name, const struct dompol *p, const char *method, const struct proto_error *e)
{
	if (e->code == PROTO_E_REFUSED && p->guaranteed)
		/* The hook refuses such a VM at prepare; one found running got
		 * past it (hook not installed, vpmud down at the time). The
		 * follower cannot stop a running VM: say it loudly. */
		log_err("libvirt: domain %s runs with a GUARANTEED PMU request (gp %u, fixed 0x%x) that vpmud "
			"refuses (%s: %s); it runs WITHOUT its guarantee vm=%s",
			name, p->gp, p->fixed_mask, method, e->message, name);
	else
		log_warn("libvirt: domain %s: %s refused: %s: %s vm=%s", name, method, proto_errcode_name(e->code),
			 e->message, name);
}

static void attach(struct lvglue *g, const char *name, const struct dompol *p)
{
	struct json_object *res;
	struct proto_error err;
	struct json_object *params = request_params(p, name, p->metadata_present);

	if (call(g, "vm.attach", params, &res, &err) < 0) {
		say_refused(name, p, "vm.attach", &err);
		json_object_put(res);
		return;
	}
	json_object_put(res);
	log_notice("libvirt: domain %s runs without a lease: attached (%s, priority %d, gp %u, fixed 0x%x, %u vCPUs) vm=%s",
		   name, p->cls, p->priority, p->gp, p->fixed_mask, p->n_vcpus, name);
	bind_to_qemu(g, name);
}

static void update(struct lvglue *g, const char *name, const struct dompol *p)
{
	struct json_object *res;
	struct proto_error err;

	if (call(g, "vm.update", request_params(p, name, true), &res, &err) < 0)
		say_refused(name, p, "vm.update", &err);
	else
		log_notice("libvirt: domain %s: lease updated to its XML (%s, priority %d, gp %u, fixed 0x%x) vm=%s",
			   name, p->cls, p->priority, p->gp, p->fixed_mask, name);
	json_object_put(res);
}

static int parse_policy(struct lvglue *g, const char *name, const char *xml, struct dompol *p)
{
	/* gp/fixed 0 without metadata: what the hook asks (see the header) */
	const struct domain_policy_defaults d = { .priority = g->cfg->default_priority, .cls = g->cfg->default_class };
	char msg[512];
	int r = domain_policy_parse(xml, strlen(xml), &d, g->host_cpus, p, msg, sizeof(msg));

	if (r < 0)
		log_write(p->guaranteed ? LOG_ERR : LOG_WARNING,
		     "libvirt: domain %s: %s; its lease (if any) is left as it is vm=%s", name, msg, name);
	return r;
}

/* A running domain, found by a reconcile, a start or a change. */
static void follow(struct lvglue *g, const char *name, const char *xml)
{
	struct dompol p;
	struct json_object *show = NULL;

	if (parse_policy(g, name, xml, &p) < 0)
		goto out;
	const char *origin = broker_vm_origin(g->b, name);
	if (origin && !origin_is_ours(origin)) {
		log_info("libvirt: domain %s runs; its lease was made by %s and is left to it vm=%s", name, origin,
			 name);
		goto out;
	}
	if (p.pmu_off) {
		if (origin)
			broker_vm_release(g->b, name, "libvirt: the domain has <pmu state='off'/>");
		goto out;
	}
	if (!origin) {
		attach(g, name, &p);
		goto out;
	}
	if (!(show = vm_show(g, name)))
		goto out;
	if (policy_differs(g, show, &p))
		update(g, name, &p);
	if (!is_bound(show))
		bind_to_qemu(g, name);
out:
	json_object_put(show);
	domain_policy_clear(&p);
}

static void release_ours(struct lvglue *g, const char *name, const char *reason)
{
	if (origin_is_ours(broker_vm_origin(g->b, name)))
		broker_vm_release(g->b, name, reason);
}

/* ------------------------------------------------------ follower callbacks */

static void forget_seen(struct lvglue *g)
{
	for (size_t i = 0; i < g->n_seen; i++)
		free(g->seen[i]);
	g->n_seen = 0;
}

static bool was_seen(const struct lvglue *g, const char *name)
{
	for (size_t i = 0; i < g->n_seen; i++)
		if (!strcmp(g->seen[i], name))
			return true;
	return false;
}

static int remember(struct lvglue *g, const char *name)
{
	if (was_seen(g, name))
		return 0;
	if (g->n_seen == g->cap_seen) {
		size_t cap = g->cap_seen ? g->cap_seen * 2 : 16;
		char **n = realloc(g->seen, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		g->seen = n;
		g->cap_seen = cap;
	}
	if (!(g->seen[g->n_seen] = strdup(name)))
		return -ENOMEM;
	g->n_seen++;
	return 0;
}

static void on_reconcile_begin(void *ud)
{
	struct lvglue *g = ud;
	forget_seen(g);
	g->reconciling = true;
}

static void on_domain_running(void *ud, const char *name, const char *uuid, const char *xml)
{
	struct lvglue *g = ud;
	(void)uuid;
	if (g->reconciling && remember(g, name) < 0) {
		/* Without the full list, the end of this reconcile could release
		 * a running domain's lease: give up on releasing this round. */
		log_err("libvirt: out of memory while listing domains; no lease released this time");
		g->reconciling = false;
	}
	/* NULL: running, but its XML could not be read; keep what we have. */
	if (xml)
		follow(g, name, xml);
}

static void on_reconcile_end(void *ud)
{
	struct lvglue *g = ud;
	char **names = NULL;
	char reason[160];
	int n;

	if (g->reconciling && (n = broker_vm_names(g->b, NULL, &names)) >= 0) {
		for (int i = 0; i < n; i++) {
			if (!was_seen(g, names[i])) {
				snprintf(reason, sizeof(reason),
					 "libvirt: domain %.64s is not running (reconcile after connecting)", names[i]);
				release_ours(g, names[i], reason);
			}
			free(names[i]);
		}
		free(names);
	}
	g->reconciling = false;
	forget_seen(g);
	g->reconciles++;
}

static void on_domain_stopped(void *ud, const char *name, const char *uuid)
{
	(void)uuid;
	if (name)
		release_ours(ud, name, "libvirt: domain stopped");
}

static void on_domain_changed(void *ud, const char *name, const char *uuid, const char *xml)
{
	(void)uuid;
	follow(ud, name, xml);
}

/* ------------------------------------------------------------------ life */

int libvirt_glue_new(const struct libvirt_glue_opts *o, struct lvglue **out)
{
	static const struct libvirt_events_ops ops = {
		.on_reconcile_begin = on_reconcile_begin,
		.on_domain_running = on_domain_running,
		.on_reconcile_end = on_reconcile_end,
		.on_domain_stopped = on_domain_stopped,
		.on_domain_changed = on_domain_changed,
	};
	int r;

	*out = NULL;
	if (!o || !o->event || !o->broker || !o->cfg || !o->uri || !*o->uri || o->host_cpus < 1 ||
	    o->host_cpus > DOMAIN_POLICY_MAX_CPUS)
		return -EINVAL;
	if ((r = libvirt_events_bridge_register(o->event)) < 0)
		return r;
	struct lvglue *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->b = o->broker;
	g->cfg = o->cfg;
	g->host_cpus = o->host_cpus;
	g->caller = (struct broker_caller){ .uid = 0, .gid = 0, .pid = getpid(), .privileged = true,
					    .transport = "libvirt", .origin = LIBVIRT_GLUE_ORIGIN };
	if (!(g->pid_dir = strdup(o->pid_dir ? o->pid_dir : LIBVIRT_GLUE_DEFAULT_PID_DIR))) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = libvirt_events_follower_new(o->event, o->uri, &ops, g, o->follower, &g->f)) < 0)
		goto fail;
	*out = g;
	return 0;
fail:
	libvirt_glue_free(g);
	return r;
}

void libvirt_glue_free(struct lvglue *g)
{
	if (!g)
		return;
	libvirt_events_follower_free(g->f);
	forget_seen(g);
	free(g->seen);
	free(g->pid_dir);
	free(g);
}

int libvirt_glue_reconnect(struct lvglue *g)
{
	return libvirt_events_follower_reconnect(g->f);
}

struct libvirt_events_follower *libvirt_glue_follower(const struct lvglue *g)
{
	return g->f;
}

unsigned libvirt_glue_reconciles(const struct lvglue *g)
{
	return g->reconciles;
}
