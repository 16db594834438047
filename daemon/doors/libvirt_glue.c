/* SPDX-License-Identifier: MIT */
#include "doors/libvirt_glue.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/cleanup.h"
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

static void to_cpulist(const struct cpulist *s, struct cpulist *l)
{
	*l = *s;
}

/* One CPU set per vCPU, as the broker takes them; the caller frees. */
static struct cpulist *vcpu_cpus(const struct dompol *p)
{
	struct cpulist *l = calloc(p->n_vcpus ? p->n_vcpus : 1, sizeof(*l));
	for (unsigned v = 0; l && v < p->n_vcpus; v++)
		to_cpulist(&p->vcpu_cpus[v], &l[v]);
	return l;
}

/* Whether the lease the broker holds differs from what the domain asks. */
static bool policy_differs(const struct lvglue *g, const struct broker_vm_view *v, const struct dompol *p)
{
	if ((int64_t)v->priority != p->priority || strcmp(proto_class_name(v->cls), p->cls) || v->gp != p->gp ||
	    v->fixed_mask != p->fixed_mask || v->n_vcpus != p->n_vcpus)
		return true;
	for (unsigned i = 0; i < p->n_vcpus; i++) {
		struct broker_vcpu_view vc;
		struct cpulist want;
		to_cpulist(&p->vcpu_cpus[i], &want);
		if (broker_vm_vcpu(g->b, v->id, i, &vc) < 0 || !cpulist_equal(vc.cpus, &want))
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
	struct proto_error err = {0};
	int r = read_qemu_pid(g->pid_dir, name, &pid, path, sizeof(path));

	if (r < 0) {
		/* QEMU not spawned yet (the hook's started binds it then), or not a
		 * QEMU domain: the lease waits unbound */
		log_event(LOG_INFO, VPMU_MSG_NONE, &(struct log_fields){ .vm = name }, "libvirt: domain %s: no QEMU pid in %s (%s); lease left unbound",
			  name, path, r == -EINVAL ? "not a pid" : strerror(-r));
		return;
	}
	struct proto_vm_bind q = { .pid = pid };
	snprintf(q.name, sizeof(q.name), "%s", name);
	/* libvirt holds no route fd: QEMU hands it with its own vm.bind. */
	if (broker_vm_bind(g->b, &g->caller, &q, -1, NULL, &err) < 0)
		log_event(LOG_WARNING, VPMU_MSG_NONE, &(struct log_fields){ .vm = name }, "libvirt: domain %s: cannot bind its lease to QEMU pid %d: %s",
			  name, (int)pid, err.message);
	else
		log_event(LOG_INFO, VPMU_MSG_NONE, &(struct log_fields){ .vm = name }, "libvirt: domain %s: lease bound to QEMU pid %d", name,
			  (int)pid);
}

/* -------------------------------------------------------------- the rules */

static void say_refused(const char *name, const struct dompol *p, const char *method, const struct proto_error *e)
{
	if (e->code == PROTO_E_REFUSED && p->guaranteed)
		/* The hook refuses such a VM at prepare; one found running got
		 * past it (hook not installed, vpmud down at the time). The
		 * follower cannot stop a running VM: say it loudly. */
		log_event(LOG_ERR, VPMU_MSG_NONE, &(struct log_fields){ .vm = name },
			  "libvirt: domain %s runs with a GUARANTEED PMU request (gp %u, fixed 0x%x) that vpmud "
			  "refuses (%s: %s); it runs WITHOUT its guarantee",
			  name, p->gp, p->fixed_mask, method, e->message);
	else
		log_event(LOG_WARNING, VPMU_MSG_NONE, &(struct log_fields){ .vm = name }, "libvirt: domain %s: %s refused: %s: %s", name, method,
			  proto_errcode_name(e->code), e->message);
}

/* priority and class only with_policy: a domain without our metadata
 * gets the broker's own defaults, as the hook's requests do. */
static void attach(struct lvglue *g, const char *name, const struct dompol *p)
{
	struct proto_error err = {0};
	struct proto_vm_attach a = { .has_priority = p->metadata_present, .has_class = p->metadata_present,
				     .priority = (uint32_t)p->priority, .gp = p->gp, .fixed_mask = p->fixed_mask };
	int cls = proto_class_from_name(p->cls);
	_cleanup_free_ struct cpulist *cpus = vcpu_cpus(p);
	snprintf(a.name, sizeof(a.name), "%s", name);
	a.cls = cls < 0 ? PROTO_CLASS_PREFERRED : (enum proto_class)cls;
	a.vcpus = (struct proto_vcpus){ .count = p->n_vcpus, .cpus = cpus };
	/* A domain name the protocol cannot carry gets the refusal a request
	 * with that name would get, instead of a lease under a cut name. */
	int r = proto_name_check("params.name", name, &err);
	if (r == 0 && !cpus)
		r = proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	if (r == 0)
		r = broker_vm_attach(g->b, &g->caller, &a, NULL, &err);
	if (r < 0) {
		say_refused(name, p, "vm.attach", &err);
		return;
	}
	log_event(LOG_NOTICE, VPMU_MSG_NONE, &(struct log_fields){ .vm = name },
		  "libvirt: domain %s runs without a lease: attached (%s, priority %d, gp %u, fixed 0x%x, %u vCPUs)",
		  name, p->cls, p->priority, p->gp, p->fixed_mask, p->n_vcpus);
	bind_to_qemu(g, name);
}

static void update(struct lvglue *g, const char *name, const struct dompol *p)
{
	struct proto_error err = {0};
	struct proto_vm_update u = { .has_priority = true, .has_class = true, .has_gp = true, .has_fixed_mask = true,
				     .has_vcpus = true, .priority = (uint32_t)p->priority, .gp = p->gp,
				     .fixed_mask = p->fixed_mask };
	int cls = proto_class_from_name(p->cls);
	_cleanup_free_ struct cpulist *cpus = vcpu_cpus(p);
	snprintf(u.name, sizeof(u.name), "%s", name);
	u.cls = cls < 0 ? PROTO_CLASS_PREFERRED : (enum proto_class)cls;
	u.vcpus = (struct proto_vcpus){ .count = p->n_vcpus, .cpus = cpus };
	int r = cpus ? broker_vm_update(g->b, &g->caller, &u, NULL, &err)
		     : proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	if (r < 0)
		say_refused(name, p, "vm.update", &err);
	else
		log_event(LOG_NOTICE, VPMU_MSG_NONE, &(struct log_fields){ .vm = name },
			  "libvirt: domain %s: lease updated to its XML (%s, priority %d, gp %u, fixed 0x%x)", name,
			  p->cls, p->priority, p->gp, p->fixed_mask);
}

static int parse_policy(struct lvglue *g, const char *name, const char *xml, struct dompol *p)
{
	/* gp/fixed 0 without metadata: what the hook asks (see the header) */
	const struct domain_policy_defaults d = { .priority = g->cfg->default_priority, .cls = g->cfg->default_class };
	char msg[512];
	int r = domain_policy_parse(xml, strlen(xml), &d, g->host_cpus, p, msg, sizeof(msg));

	if (r < 0)
		log_event(p->guaranteed ? LOG_ERR : LOG_WARNING, VPMU_MSG_NONE, &(struct log_fields){ .vm = name },
			  "libvirt: domain %s: %s; its lease (if any) is left as it is", name, msg);
	return r;
}

/* A running domain, found by a reconcile, a start or a change. */
static void follow(struct lvglue *g, const char *name, const char *xml)
{
	struct dompol p;
	struct broker_vm_view v;

	if (parse_policy(g, name, xml, &p) < 0)
		goto out;
	bool leased = broker_vm_find(g->b, name, &v) == 0;
	if (leased && !origin_is_ours(v.origin)) {
		log_event(LOG_INFO, VPMU_MSG_NONE, &(struct log_fields){ .vm = name }, "libvirt: domain %s runs; its lease was made by %s and is left to it",
			  name, v.origin);
		goto out;
	}
	if (p.pmu_off) {
		if (leased)
			broker_vm_release(g->b, name, "libvirt: the domain has <pmu state='off'/>");
		goto out;
	}
	if (!leased) {
		attach(g, name, &p);
		goto out;
	}
	/* The view's pointers do not outlive the update; bound is a value. */
	bool bound = v.bound;
	if (policy_differs(g, &v, &p))
		update(g, name, &p);
	if (!bound)
		bind_to_qemu(g, name);
out:
	domain_policy_clear(&p);
}

static void release_ours(struct lvglue *g, const char *name, const char *reason)
{
	struct broker_vm_view v;
	if (broker_vm_find(g->b, name, &v) == 0 && origin_is_ours(v.origin))
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
	/* vpmud's own door: the broker lets it do what the domains ask. */
	g->caller = (struct broker_caller){ .door = BROKER_DOOR_LIBVIRT, .uid = 0, .gid = 0, .pid = getpid(),
					    .origin = LIBVIRT_GLUE_ORIGIN };
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
