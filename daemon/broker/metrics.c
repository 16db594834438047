/* SPDX-License-Identifier: MIT */
#include "broker/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cleanup.h"

/* The text grows in memory; a failed write (out of memory) sticks and is
 * reported once at the end. */
struct out {
	FILE *f;
	char *data;
	size_t len;
	bool failed;
};

static void out_closep(struct out *o)
{
	if (o->f)
		fclose(o->f);
	free(o->data);
}

char *metrics_escape_label(const char *value)
{
	size_t n = 0;
	for (const char *p = value; *p; p++)
		n += *p == '\\' || *p == '"' || *p == '\n' ? 2 : 1;
	char *s = malloc(n + 1), *o = s;
	if (!s)
		return NULL;
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			*o++ = '\\';
		if (*p == '\n') {
			*o++ = '\\';
			*o++ = 'n';
			continue;
		}
		*o++ = *p;
	}
	*o = '\0';
	return s;
}

/* One family's header. unit: NULL, or the OpenMetrics unit its name ends in. */
static void family(struct out *o, const char *name, const char *type, const char *unit, const char *help)
{
	fprintf(o->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	if (unit)
		fprintf(o->f, "# UNIT %s %s\n", name, unit);
}

/* name{k1="v1",k2="v2"} value, labels from a NULL-terminated key/value
 * list; values escaped. */
static void sample(struct out *o, const char *name, const char *const *labels, const char *value)
{
	fputs(name, o->f);
	for (size_t i = 0; labels && labels[i]; i += 2) {
		_cleanup_free_ char *v = metrics_escape_label(labels[i + 1] ? labels[i + 1] : "");
		if (!v) {
			o->failed = true;
			return;
		}
		fprintf(o->f, "%s%s=\"%s\"", i ? "," : "{", labels[i], v);
	}
	fprintf(o->f, "%s %s\n", labels && labels[0] ? "}" : "", value);
}

static void sample_u64(struct out *o, const char *name, const char *const *labels, uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	sample(o, name, labels, buf);
}

static void sample_double(struct out *o, const char *name, const char *const *labels, double v)
{
	char buf[40];
	snprintf(buf, sizeof(buf), "%.6g", v);
	sample(o, name, labels, buf);
}

static unsigned popcount32(uint32_t x)
{
	return (unsigned)__builtin_popcount(x);
}

/* ------------------------------------------------------------ host */

static void render_host(struct out *o, struct broker *b)
{
	struct broker_status st;
	broker_status(b, &st);
	const char *version = strchr(st.server, '/') ? strchr(st.server, '/') + 1 : st.server;

	family(o, "vpmu_build_info", "gauge", NULL, "vpmud's version; always 1.");
	sample(o, "vpmu_build_info", (const char *[]){ "version", version, NULL }, "1");

	family(o, "vpmu_host_info", "gauge", NULL,
	       "The PMU and KVM backend vpmud manages, and the vPMU flavour its routes follow; always 1.");
	char proto[16];
	snprintf(proto, sizeof(proto), "%d", st.protocol);
	sample(o, "vpmu_host_info",
	       (const char *[]){ "pmu_model", st.pmu_model, "pmu_source", st.pmu_source, "kvm_backend", st.kvm_backend,
				 "flavour", st.flavour, "routes", st.routes, "protocol", proto, NULL },
	       "1");

	family(o, "vpmu_pmu_simulated", "gauge", NULL,
	       "1 when the PMU is a model (no hardware PMU behind it: hardware events are not counted), 0 for the host's PMU.");
	sample(o, "vpmu_pmu_simulated", NULL, st.pmu_simulated ? "1" : "0");

	family(o, "vpmu_kvm_simulated", "gauge", NULL,
	       "1 when guest routes go to vpmud's model of the vpmu extension instead of KVM, 0 otherwise.");
	sample(o, "vpmu_kvm_simulated", NULL, !strcmp(st.kvm_backend, "model") ? "1" : "0");

	family(o, "vpmu_kvm_enforced", "gauge", NULL,
	       "1 when KVM enforces the routes (the vpmu extension's ioctls), 0 when they are simulated or advisory.");
	sample(o, "vpmu_kvm_enforced", NULL, st.kvm_enforced ? "1" : "0");

	family(o, "vpmu_plan_generation", "gauge", NULL,
	       "The plan's generation: grows with every change of the plan, starts again at each vpmud start.");
	sample_u64(o, "vpmu_plan_generation", NULL, st.generation);

	family(o, "vpmu_vms", "gauge", NULL, "VM leases, by whether their routes are enforced, simulated or advisory.");
	sample_u64(o, "vpmu_vms", (const char *[]){ "routes", "enforced", NULL }, st.vms_enforced);
	sample_u64(o, "vpmu_vms", (const char *[]){ "routes", "simulated", NULL }, st.vms_simulated);
	sample_u64(o, "vpmu_vms", (const char *[]){ "routes", "advisory", NULL }, st.vms_advisory);

	family(o, "vpmu_sessions", "gauge", NULL, "Host counting sessions.");
	sample_u64(o, "vpmu_sessions", NULL, st.sessions);
}

/* ------------------------------------------------------------ CPUs */

enum { PART_GUEST, PART_HOST, PART_FREE, PART__COUNT };
static const char *const part_names[PART__COUNT] = { "guest", "host", "free" };

static int render_cpus(struct out *o, struct broker *b)
{
	struct broker_pmu_view pmu;
	broker_pmu(b, &pmu);
	unsigned total[2] = { pmu.gp, popcount32(pmu.fixed_mask) };
	family(o, "vpmu_cpu_counters", "gauge", NULL,
	       "Physical counters of a CPU (kind gp or fixed) in the guest partition, held by host events "
	       "(sessions, the NMI watchdog), or free.");
	for (unsigned i = 0, n = broker_cpu_count(b); i < n; i++) {
		struct broker_cpu_view cv;
		int r = broker_cpu_at(b, i, &cv);
		if (r < 0)
			return r;
		uint32_t guest[2] = { cv.guest_gp_mask, cv.guest_fixed_mask }, host[2] = { 0, 0 };
		for (unsigned k = 0; k < cv.n_host; k++) {
			int c = cv.host[k].counter;
			if (c >= 0 && c < 32)
				host[0] |= 1u << c;
			else if (c >= 32 && c < 64)
				host[1] |= 1u << (c - 32);
		}
		char cpu[16];
		snprintf(cpu, sizeof(cpu), "%d", cv.cpu);
		for (unsigned kind = 0; kind < 2; kind++) {
			unsigned g = popcount32(guest[kind]), h = popcount32(host[kind] & ~guest[kind]);
			unsigned v[PART__COUNT] = { g, h, total[kind] > g + h ? total[kind] - g - h : 0 };
			for (unsigned p = 0; p < PART__COUNT; p++)
				sample_u64(o, "vpmu_cpu_counters",
					   (const char *[]){ "cpu", cpu, "kind", kind ? "fixed" : "gp", "partition",
							     part_names[p], NULL },
					   v[p]);
		}
	}
	return 0;
}

/* ------------------------------------------------------------ VMs */

struct vm_row {
	const char *name;               /* borrowed from the view: valid while nothing changes */
	enum proto_class cls;
	const char *routes;
	uint32_t priority, n_vcpus;
	uint64_t pmcs[BROKER_ROUTE__COUNT];
};

/* A view costs a walk of the VM's vCPUs (and so do its PMCs): each VM is
 * viewed once per rendering, not once per family. */
static void vm_row(struct broker *b, size_t i, struct vm_row *row)
{
	struct broker_vm_view v;
	broker_vm_at(b, i, &v);
	*row = (struct vm_row){ .name = v.name, .cls = v.cls, .routes = v.routes, .priority = v.priority,
				.n_vcpus = v.n_vcpus };
	for (uint32_t c = 0; c < v.n_vcpus; c++) {
		struct broker_vcpu_view vc;
		if (broker_vm_vcpu(b, v.id, c, &vc) < 0)
			continue;
		for (unsigned j = 0; j < vc.n_gp && j < sizeof(vc.gp); j++)
			row->pmcs[vc.gp[j] < BROKER_ROUTE__COUNT ? vc.gp[j] : BROKER_ROUTE_DISABLED]++;
		for (unsigned j = 0; j < sizeof(vc.fixed); j++)
			if (vc.pmu_fixed_mask >> j & 1)
				row->pmcs[vc.fixed[j] < BROKER_ROUTE__COUNT ? vc.fixed[j] : BROKER_ROUTE_DISABLED]++;
	}
}

static int render_vms(struct out *o, struct broker *b)
{
	size_t n = broker_vm_count(b);
	enum broker_route routes[2];
	size_t n_routes = broker_flavour_routes(broker_flavour(b), routes);
	_cleanup_free_ struct vm_row *rows = n ? calloc(n, sizeof(*rows)) : NULL;
	if (n && !rows)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		vm_row(b, i, &rows[i]);

	family(o, "vpmu_vm_info", "gauge", NULL,
	       "A VM lease, its class and whether its routes are enforced, simulated or advisory; always 1.");
	for (size_t i = 0; i < n; i++)
		sample(o, "vpmu_vm_info",
		       (const char *[]){ "vm", rows[i].name, "class", proto_class_name(rows[i].cls), "routes",
					 rows[i].routes, NULL },
		       "1");
	family(o, "vpmu_vm_priority", "gauge", NULL, "A VM lease's priority (0..1000).");
	for (size_t i = 0; i < n; i++)
		sample_u64(o, "vpmu_vm_priority", (const char *[]){ "vm", rows[i].name, NULL }, rows[i].priority);
	family(o, "vpmu_vm_vcpus", "gauge", NULL, "A VM lease's vCPUs.");
	for (size_t i = 0; i < n; i++)
		sample_u64(o, "vpmu_vm_vcpus", (const char *[]){ "vm", rows[i].name, NULL }, rows[i].n_vcpus);
	family(o, "vpmu_vm_pmcs", "gauge", NULL,
	       "Guest PMCs a VM asked for, summed over its vCPUs, by route (the flavour's: passthrough and "
	       "multiplexed for the vpmu extension, reserved and at-risk for the perf-based vPMU, mediated, none).");
	for (size_t i = 0; i < n; i++)
		for (size_t r = 0; r < n_routes; r++)
			sample_u64(o, "vpmu_vm_pmcs",
				   (const char *[]){ "vm", rows[i].name, "route", broker_route_name(routes[r]), NULL },
				   rows[i].pmcs[routes[r]]);
	return 0;
}

/* ------------------------------------------------------------ sessions */

struct session_row {
	struct broker_session_view v;
	bool whole;                 /* the viewer sees its events and readings */
	unsigned by_placement[BROKER_PLACEMENT__COUNT];
	unsigned not_counted;       /* events the reading has no number for */
	bool has_ratio;
	double ratio;               /* lowest running/enabled of its counted hardware events */
};

/* The daemon itself reads sessions for the file: it may read any. */
static const struct broker_caller self = { .door = BROKER_DOOR_STATE };

static void session_row(struct broker *b, const struct broker_viewer *w, size_t i, struct session_row *row)
{
	*row = (struct session_row){0};
	broker_session_at(b, i, &row->v);
	row->whole = !w || broker_viewer_sees(w, row->v.uid);
	if (!row->whole)
		return;
	for (uint32_t e = 0; e < row->v.n_events; e++) {
		struct broker_event_view ev;
		if (broker_session_event(b, row->v.id, e, &ev) == 0 && ev.placement < BROKER_PLACEMENT__COUNT)
			row->by_placement[ev.placement]++;
	}
	struct broker_reading *rd = NULL;
	struct proto_error err = {0};
	if (broker_session_read(b, &self, row->v.name, &rd, &err) < 0) {
		row->not_counted = row->v.n_events;
		return;
	}
	for (uint32_t e = 0; e < rd->n_events; e++) {
		const struct broker_event_reading *er = &rd->events[e];
		if (!er->counted) {
			row->not_counted++;
			continue;
		}
		if (er->placement == BROKER_PLACEMENT_SOFTWARE || !er->time_enabled)
			continue;
		double ratio = (double)er->time_running / (double)er->time_enabled;
		if (!row->has_ratio || ratio < row->ratio)
			row->ratio = ratio;
		row->has_ratio = true;
	}
	broker_reading_free(rd);
}

static int render_sessions(struct out *o, struct broker *b, const struct broker_viewer *w)
{
	size_t n = broker_session_count(b);
	_cleanup_free_ struct session_row *rows = n ? calloc(n, sizeof(*rows)) : NULL;
	if (n && !rows)
		return -ENOMEM;
	/* Each session once (its events and its reading), then family by
	 * family: a family's samples must follow its header together. */
	for (size_t i = 0; i < n; i++)
		session_row(b, w, i, &rows[i]);

	family(o, "vpmu_session_info", "gauge", NULL,
	       "A host counting session, its class and scope (cpus: system-wide on CPUs; task: one process); always 1.");
	for (size_t i = 0; i < n; i++)
		sample(o, "vpmu_session_info",
		       (const char *[]){ "session", rows[i].v.name, "class", proto_class_name(rows[i].v.cls), "scope",
					 rows[i].v.has_cpus ? "cpus" : "task", NULL },
		       "1");
	family(o, "vpmu_session_priority", "gauge", NULL, "A session's priority (0..1000).");
	for (size_t i = 0; i < n; i++)
		sample_u64(o, "vpmu_session_priority", (const char *[]){ "session", rows[i].v.name, NULL },
			   rows[i].v.priority);
	family(o, "vpmu_session_events", "gauge", NULL,
	       "A session's events by placement: dedicated (its own counter), multiplexed (rotating), software "
	       "(no counter needed).");
	for (size_t i = 0; i < n; i++) {
		if (!rows[i].whole)
			continue;
		for (unsigned p = 0; p < BROKER_PLACEMENT__COUNT; p++)
			sample_u64(o, "vpmu_session_events",
				   (const char *[]){ "session", rows[i].v.name, "placement",
						     broker_placement_name((enum broker_placement)p), NULL },
				   rows[i].by_placement[p]);
	}
	family(o, "vpmu_session_events_not_counted", "gauge", NULL,
	       "A session's events its reading has no number for (hardware events on a model PMU, an event "
	       "waiting to be reopened).");
	for (size_t i = 0; i < n; i++)
		if (rows[i].whole)
			sample_u64(o, "vpmu_session_events_not_counted", (const char *[]){ "session", rows[i].v.name, NULL },
				   rows[i].not_counted);
	family(o, "vpmu_session_running_ratio", "gauge", "ratio",
	       "Measured time running over time enabled of a session's counted hardware events, the lowest of "
	       "them (1: never multiplexed); absent when no hardware event is counted.");
	for (size_t i = 0; i < n; i++)
		if (rows[i].whole && rows[i].has_ratio)
			sample_double(o, "vpmu_session_running_ratio", (const char *[]){ "session", rows[i].v.name, NULL },
				      rows[i].ratio);
	bool any_withheld = false;
	for (size_t i = 0; i < n; i++)
		any_withheld |= !rows[i].whole;
	if (any_withheld) {
		family(o, "vpmu_session_withheld", "gauge", NULL,
		       "1 for another user's session whose events and readings this caller may not see.");
		for (size_t i = 0; i < n; i++)
			if (!rows[i].whole)
				sample(o, "vpmu_session_withheld", (const char *[]){ "session", rows[i].v.name, NULL }, "1");
	}
	return 0;
}

/* ------------------------------------------------------------ counters */

static void render_counters(struct out *o, struct broker *b)
{
	struct broker_counters c;
	broker_counters(b, &c);

	family(o, "vpmu_refusals_total", "counter", NULL,
	       "Requests refused admission (VM attach or update, session start), by lease kind and the class asked "
	       "for, since vpmud started.");
	for (unsigned k = 0; k < BROKER_LEASE__COUNT; k++)
		for (unsigned cls = 0; cls < PROTO_CLASS__COUNT; cls++)
			sample_u64(o, "vpmu_refusals_total",
				   (const char *[]){ "lease", broker_lease_kind_name((enum broker_lease_kind)k), "class",
						     proto_class_name((enum proto_class)cls), NULL },
				   c.refusals[k][cls]);

	family(o, "vpmu_preemptions_total", "counter", NULL,
	       "Leases that lost counters to another lease's change (a VM's routes downgraded, a session's events "
	       "moved off their counters), by lease kind, since vpmud started.");
	for (unsigned k = 0; k < BROKER_LEASE__COUNT; k++)
		sample_u64(o, "vpmu_preemptions_total",
			   (const char *[]){ "lease", broker_lease_kind_name((enum broker_lease_kind)k), NULL },
			   c.preemptions[k]);

	family(o, "vpmu_fallbacks_total", "counter", NULL,
	       "Leases admitted with less than they asked for, by what they fell back to (multiplexed, at-risk, "
	       "advisory), since vpmud started.");
	for (unsigned k = 0; k < BROKER_LEASE__COUNT; k++)
		for (unsigned f = 0; f < BROKER_FALLBACK__COUNT; f++) {
			/* a session only ever falls back to multiplexing */
			if (k == BROKER_LEASE_SESSION && f != BROKER_FALLBACK_MULTIPLEXED)
				continue;
			sample_u64(o, "vpmu_fallbacks_total",
				   (const char *[]){ "lease", broker_lease_kind_name((enum broker_lease_kind)k), "to",
						     broker_fallback_name((enum broker_fallback)f), NULL },
				   c.fallbacks[k][f]);
		}
}

int metrics_render(struct broker *b, const struct broker_viewer *w, char **text, size_t *len)
{
	_cleanup_(out_closep) struct out o = {0};
	o.f = open_memstream(&o.data, &o.len);
	if (!o.f)
		return -ENOMEM;
	render_host(&o, b);
	int r = render_cpus(&o, b);
	if (r < 0)
		return r;
	if ((r = render_vms(&o, b)) < 0 || (r = render_sessions(&o, b, w)) < 0)
		return r;
	render_counters(&o, b);
	fputs("# EOF\n", o.f);
	bool failed = o.failed || ferror(o.f);
	r = fclose(o.f);
	o.f = NULL;
	if (failed || r != 0)
		return -ENOMEM;
	*text = TAKE_PTR(o.data);
	*len = o.len;
	return 0;
}
