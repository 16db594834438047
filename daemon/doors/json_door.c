/* SPDX-License-Identifier: MIT */
#include "doors/json_door.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/cleanup.h"
#include "proto/cpulist.h"

/* ------------------------------------------------------------------ text */

void json_door_text_fini(struct json_door_text *t)
{
	free(t->data);
	*t = (struct json_door_text){0};
}

void json_door_text_truncate(struct json_door_text *t, size_t len)
{
	if (len < t->len) {
		t->len = len;
		if (t->data)
			t->data[len] = '\0';
	}
	t->error = 0;
}

/* Room for n more bytes and a NUL. */
static int reserve(struct json_door_text *t, size_t n)
{
	if (t->error)
		return t->error;
	if (t->max && t->len + n > t->max)
		return t->error = -EMSGSIZE;
	if (t->len + n + 1 <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap : 256;
	while (cap < t->len + n + 1)
		cap *= 2;
	char *d = realloc(t->data, cap);
	if (!d)
		return t->error = -ENOMEM;
	t->data = d;
	t->cap = cap;
	return 0;
}

int json_door_text_append(struct json_door_text *t, const char *s, size_t n)
{
	if (reserve(t, n) < 0)
		return t->error;
	memcpy(t->data + t->len, s, n);
	t->len += n;
	t->data[t->len] = '\0';
	return 0;
}

static void put(struct json_door_text *t, const char *s)
{
	json_door_text_append(t, s, strlen(s));
}

static void putf(struct json_door_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct json_door_text *t, const char *fmt, ...)
{
	va_list ap, again;
	va_start(ap, fmt);
	va_copy(again, ap);
	char buf[64];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(buf))
		json_door_text_append(t, buf, (size_t)n);
	else if (n >= 0 && reserve(t, (size_t)n) == 0) {
		vsnprintf(t->data + t->len, (size_t)n + 1, fmt, again);
		t->len += (size_t)n;
	}
	va_end(again);
}

static void put_u64(struct json_door_text *t, uint64_t v)
{
	putf(t, "%" PRIu64, v);
}

static void put_i64(struct json_door_text *t, int64_t v)
{
	putf(t, "%" PRId64, v);
}

static void put_bool(struct json_door_text *t, bool v)
{
	put(t, v ? "true" : "false");
}

/* The comma between members of a list, none before the first. */
static void sep(struct json_door_text *t, bool *first)
{
	if (!*first)
		put(t, ",");
	*first = false;
}

/* "0x3": masks are hex strings for readers. */
static void put_hex32(struct json_door_text *t, uint32_t v)
{
	putf(t, "\"0x%" PRIx32 "\"", v);
}

/* As json-c prints a double: %.17g, and ".0" when that looks like an
 * integer, so that a reader keeps it a double. */
static void put_double(struct json_door_text *t, double d)
{
	if (isnan(d)) {
		put(t, "NaN");
		return;
	}
	if (isinf(d)) {
		put(t, d > 0 ? "Infinity" : "-Infinity");
		return;
	}
	char buf[128];
	int n = snprintf(buf, sizeof(buf), "%.17g", d);
	if (n < 0)
		return;
	bool looks_numeric = isdigit((unsigned char)buf[0]) || (n > 1 && buf[0] == '-' && isdigit((unsigned char)buf[1]));
	if (n < (int)sizeof(buf) - 2 && looks_numeric && !strchr(buf, '.') && !strchr(buf, ',') && !strchr(buf, 'e')) {
		memcpy(buf + n, ".0", 3);
		n += 2;
	}
	char *comma = strchr(buf, ',');
	if (comma)
		*comma = '.'; /* a decimal comma from the locale */
	json_door_text_append(t, buf, (size_t)n);
}

/* A JSON string, escaped as json-c escapes (no slash escaping). */
static void put_str(struct json_door_text *t, const char *s)
{
	/* Exactly what the escaped text takes: a size-capped answer must not
	 * be refused for room it never uses. */
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += *p == '"' || *p == '\\' || *p == '\b' || *p == '\n' || *p == '\r' || *p == '\t' || *p == '\f'
			     ? 2
			     : *p < ' ' ? 6 : 1;
	if (reserve(t, n + 2) < 0)
		return;
	char *o = t->data + t->len;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		switch (c) {
		case '\b': *o++ = '\\'; *o++ = 'b'; break;
		case '\n': *o++ = '\\'; *o++ = 'n'; break;
		case '\r': *o++ = '\\'; *o++ = 'r'; break;
		case '\t': *o++ = '\\'; *o++ = 't'; break;
		case '\f': *o++ = '\\'; *o++ = 'f'; break;
		case '"': *o++ = '\\'; *o++ = '"'; break;
		case '\\': *o++ = '\\'; *o++ = '\\'; break;
		default:
			if (c < ' ') {
				static const char hex[] = "0123456789abcdef";
				memcpy(o, "\\u00", 4);
				o += 4;
				*o++ = hex[c >> 4];
				*o++ = hex[c & 0xf];
			} else {
				*o++ = (char)c;
			}
		}
	}
	*o++ = '"';
	t->len = (size_t)(o - t->data);
	t->data[t->len] = '\0';
}

/* "0-3,8". Reserves only what the text takes (a size-capped answer must
 * not be refused for room it never uses): most lists fit the stack buffer,
 * the rare long one is formatted on the heap. */
static void put_cpus(struct json_door_text *t, const struct cpulist *l)
{
	char small[256];
	_cleanup_free_ char *big = NULL;
	const char *text = small;
	int n = cpulist_format(l, small, sizeof(small));
	if (n < 0) {
		if (!(big = cpulist_to_text(l))) {
			t->error = -ENOMEM;
			return;
		}
		text = big;
		n = (int)strlen(big);
	}
	if (reserve(t, (size_t)n + 2) < 0)
		return;
	t->data[t->len++] = '"';
	memcpy(t->data + t->len, text, (size_t)n);
	t->len += (size_t)n;
	t->data[t->len++] = '"';
	t->data[t->len] = '\0';
}

static int text_error(const struct json_door_text *t, struct proto_error *err)
{
	if (t->error == -EMSGSIZE)
		return proto_error_set(err, PROTO_E_TOO_LARGE, EMSGSIZE, NULL,
				       "the result exceeds %zu bytes; ask for less (plan: params.cpus)", t->max);
	return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
}

/* ------------------------------------------------------------------ views */

static void put_routes(struct json_door_text *t, const uint8_t *gp, unsigned n_gp, const uint8_t *fixed,
		       uint32_t pmu_fixed_mask)
{
	put(t, ",\"gp\":[");
	for (unsigned j = 0; j < n_gp; j++) {
		if (j)
			put(t, ",");
		put_str(t, broker_route_name((enum broker_route)gp[j]));
	}
	put(t, "],\"fixed\":[");
	bool first = true;
	for (unsigned j = 0; j < 16; j++) {
		if (!(pmu_fixed_mask & (1u << j)))
			continue;
		sep(t, &first);
		put_str(t, broker_route_name((enum broker_route)fixed[j]));
	}
	put(t, "]");
}

/* ,"flavour":"perf-based","routes":"advisory": what every route in the
 * answer means, and whether it holds. */
static void put_flavour(struct json_door_text *t, const char *flavour, const char *routes)
{
	put(t, ",\"flavour\":");
	put_str(t, flavour);
	put(t, ",\"routes\":");
	put_str(t, routes);
}

static void put_broker_flavour(struct json_door_text *t, const struct broker *b)
{
	put_flavour(t, broker_flavour_name(broker_flavour(b)), broker_routes_kind(b));
}

/* ,"reserved_vcpus":2,"at_risk_vcpus":0: the vCPUs that asked for PMCs,
 * by the weakest route they got, for each route of the flavour. */
static void put_vcpu_grants(struct json_door_text *t, const struct broker *b, const unsigned *by_route, bool first)
{
	enum broker_route routes[2];
	size_t n = broker_flavour_routes(broker_flavour(b), routes);
	for (size_t i = 0; i < n; i++) {
		sep(t, &first);
		put_str(t, broker_route_count_key(routes[i]));
		put(t, ":");
		put_u64(t, by_route[routes[i]]);
	}
}

static void put_guest(struct json_door_text *t, const struct broker *b, uint64_t vm_id)
{
	struct broker_guest_view g;
	if (broker_vm_guest(b, vm_id, &g) < 0 || !g.ok) {
		put(t, "{\"error\":");
		put_str(t, g.error);
		put(t, "}");
		return;
	}
	putf(t, "{\"version\":%u,\"eax\":\"0x%08" PRIx32 "\",\"ebx\":\"0x%08" PRIx32 "\"", g.version, g.eax, g.ebx);
	putf(t, ",\"ecx\":\"0x%08" PRIx32 "\",\"edx\":\"0x%08" PRIx32 "\"", g.ecx, g.edx);
	if (g.boot_block[0]) {
		put(t, ",\"boot_block\":");
		put_str(t, g.boot_block);
	}
	put(t, "}");
}

/* ,"routes":"advisory","routes_why":"the VMM handed no route fd": whether
 * this VM's routes reach the kernel, which depends on the VM (a VMM that
 * handed no route fd is advisory whatever the backend), not only on the
 * daemon: the broker's view says, always. */
static void put_vm_routes(struct json_door_text *t, const struct broker_vm_view *v)
{
	put(t, ",\"routes\":");
	put_str(t, v->routes);
	if (v->routes_why) {
		put(t, ",\"routes_why\":");
		put_str(t, v->routes_why);
	}
}

/* top: the whole answer (vm.show), which names its flavour. */
static void put_vm(struct json_door_text *t, const struct broker *b, const struct broker_vm_view *v, bool full,
		   bool top)
{
	put(t, "{\"name\":");
	put_str(t, v->name);
	/* vm.show names its flavour; whether routes hold is the VM's own
	 * (its VMM handed a route fd or not), in every view of it */
	if (top) {
		put(t, ",\"flavour\":");
		put_str(t, broker_flavour_name(broker_flavour(b)));
	}
	put_vm_routes(t, v);
	put(t, ",\"priority\":");
	put_u64(t, v->priority);
	put(t, ",\"class\":");
	put_str(t, proto_class_name(v->cls));
	put(t, ",\"gp\":");
	put_u64(t, v->gp);
	put(t, ",\"fixed_mask\":");
	put_hex32(t, v->fixed_mask);
	/* Another user's VM: who made it and which process holds it are
	 * left out, and said so (docs/protocol.md, "What a caller sees"). */
	if (v->withheld) {
		put(t, ",\"withheld\":true");
	} else {
		put(t, ",\"origin\":");
		put_str(t, v->origin);
		if (v->follows_connection)
			put(t, ",\"follows_connection\":true");
		if (v->bound)
			putf(t, ",\"owner\":{\"pid\":%d,\"vm_fd\":%d}", (int)v->vmm_pid, v->vm_fd);
		else
			put(t, ",\"owner\":null");
	}
	/* The extension's views have always counted only the vCPUs passed
	 * through whole; the other flavours count by their own routes. */
	if (broker_flavour(b) == BROKER_FLAVOUR_EXTENSION) {
		put(t, ",\"passthrough_vcpus\":");
		put_u64(t, v->passthrough_vcpus);
	} else {
		put_vcpu_grants(t, b, v->vcpus_by_route, false);
	}
	if (!full) {
		put(t, ",\"vcpus\":");
		put_u64(t, v->n_vcpus);
		put(t, "}");
		return;
	}
	put(t, ",\"vcpus\":[");
	for (uint32_t i = 0; i < v->n_vcpus; i++) {
		struct broker_vcpu_view vc;
		if (broker_vm_vcpu(b, v->id, i, &vc) < 0)
			continue;
		putf(t, "%s{\"vcpu\":%u,\"cpus\":", i ? "," : "", i);
		put_cpus(t, vc.cpus);
		put_routes(t, vc.gp, vc.n_gp, vc.fixed, vc.pmu_fixed_mask);
		put(t, "}");
	}
	put(t, "],\"guest_pmu\":");
	put_guest(t, b, v->id);
	put(t, "}");
}

static void put_event_plan(struct json_door_text *t, const struct broker *b, const struct broker_session_view *s)
{
	put(t, "[");
	for (uint32_t e = 0; e < s->n_events; e++) {
		struct broker_event_view ev;
		if (broker_session_event(b, s->id, e, &ev) < 0)
			continue;
		put(t, e ? ",{\"event\":" : "{\"event\":");
		put_str(t, ev.event);
		put(t, ",\"placement\":");
		put_str(t, broker_placement_name(ev.placement));
		put(t, ",\"share\":");
		put_double(t, ev.share);
		if (ev.placement != BROKER_PLACEMENT_SOFTWARE) {
			put(t, ",\"dedicated_cpus\":");
			put_u64(t, ev.dedicated_cpus);
		}
		if (ev.reason[0]) {
			put(t, ",\"reason\":");
			put_str(t, ev.reason);
		}
		put(t, "}");
	}
	put(t, "]");
}

/* with_events: the plan's per-event placements; without, their count. */
static void put_session(struct json_door_text *t, const struct broker *b, const struct broker_session_view *s,
			bool with_events)
{
	put(t, "{\"name\":");
	put_str(t, s->name);
	put(t, ",\"priority\":");
	put_u64(t, s->priority);
	put(t, ",\"class\":");
	put_str(t, proto_class_name(s->cls));
	if (s->has_cpus) {
		put(t, ",\"cpus\":");
		put_cpus(t, s->cpus);
	}
	/* Another user's session: its events, the task it counts and who
	 * started it are left out, and said so. */
	if (s->withheld) {
		/* the same for every session: nothing of the owner's */
		if (with_events && s->note) {
			put(t, ",\"note\":");
			put_str(t, s->note);
		}
		put(t, ",\"withheld\":true}");
		return;
	}
	put(t, ",\"events\":");
	if (with_events)
		put_event_plan(t, b, s);
	else
		put_u64(t, s->n_events);
	if (!s->has_cpus) {
		put(t, ",\"pid\":");
		put_i64(t, s->pid);
	}
	put(t, ",\"owner_pid\":");
	put_i64(t, s->owner_pid);
	put(t, ",\"uid\":");
	put_i64(t, (int)s->uid);
	/* The plan says what its counts will not hold (host time only on a
	 * mediated vPMU). */
	if (with_events && s->note) {
		put(t, ",\"note\":");
		put_str(t, s->note);
	}
	put(t, "}");
}

static void put_counter(struct json_door_text *t, int counter)
{
	if (counter < 0)
		put(t, "null");
	else if (counter >= 32)
		putf(t, "\"fixed%d\"", counter - 32);
	else
		putf(t, "\"gp%d\"", counter);
}

static void put_cpu(struct json_door_text *t, const struct broker_viewer *w, const struct broker_cpu_view *cv)
{
	putf(t, "{\"cpu\":%d,\"guest_gp_mask\":", cv->cpu);
	put_hex32(t, cv->guest_gp_mask);
	put(t, ",\"guest_fixed_mask\":");
	put_hex32(t, cv->guest_fixed_mask);
	put(t, ",\"host\":[");
	for (unsigned k = 0; k < cv->n_host; k++) {
		struct broker_host_placement p = cv->host[k];
		broker_placement_withhold(w, &p);
		put(t, k ? ",{" : "{");
		put(t, p.holder == BROKER_HOLDER_FOREIGN ? "\"foreign\":" : "\"session\":");
		put_str(t, p.holder_name);
		if (p.withheld) {
			put(t, ",\"withheld\":true");
		} else {
			put(t, ",\"event\":");
			put_str(t, p.event);
		}
		put(t, ",\"counter\":");
		put_counter(t, p.counter);
		put(t, ",\"share\":");
		put_double(t, p.share);
		put(t, "}");
	}
	put(t, "]}");
}

static void put_plan(struct json_door_text *t, struct broker *b, const struct broker_viewer *w,
		     const struct proto_plan_req *q)
{
	struct broker_status st;
	broker_status(b, &st);
	const struct cpulist *only = q && q->has_cpus ? &q->cpus : NULL;
	put(t, "{\"generation\":");
	put_u64(t, st.generation);
	put(t, ",\"simulated_pmu\":");
	put_bool(t, st.pmu_simulated);
	put(t, ",\"kvm_enforced\":");
	put_bool(t, st.kvm_enforced);
	put_flavour(t, st.flavour, st.routes);
	put(t, ",\"cpus\":[");
	bool first = true;
	for (unsigned i = 0, n = broker_cpu_count(b); i < n && !t->error; i++) {
		struct broker_cpu_view cv;
		if (broker_cpu_at(b, i, &cv) < 0)
			continue;
		if (only && (cv.cpu < 0 || !cpulist_test(only, (unsigned)cv.cpu)))
			continue;
		sep(t, &first);
		put_cpu(t, w, &cv);
	}
	put(t, "],\"vms\":[");
	first = true;
	for (size_t i = 0, n = broker_vm_count(b); i < n && !t->error; i++) {
		struct broker_vm_view v;
		broker_vm_at(b, i, &v);
		if (only && !broker_vm_on_cpus(b, v.id, only))
			continue;
		broker_vm_view_withhold(w, &v);
		sep(t, &first);
		put_vm(t, b, &v, true, false);
	}
	put(t, "],\"sessions\":[");
	first = true;
	for (size_t i = 0, n = broker_session_count(b); i < n && !t->error; i++) {
		struct broker_session_view s;
		broker_session_at(b, i, &s);
		if (only && !broker_session_on_cpus(b, s.id, only))
			continue;
		broker_session_view_withhold(w, &s);
		sep(t, &first);
		put_session(t, b, &s, true);
	}
	put(t, "]}");
}

/* "vms_by_routes":{"enforced":0,"simulated":1,"advisory":1},
 * "advisory_vms":["db"]: how many VMs' routes reach the kernel, and by name
 * those whose do not, so that no output leaves an advisory VM unsaid. */
static void put_vms_by_routes(struct json_door_text *t, const struct broker *b, const struct broker_status *st)
{
	putf(t, "\"vms_by_routes\":{\"enforced\":%zu,\"simulated\":%zu,\"advisory\":%zu}", st->vms_enforced,
	     st->vms_simulated, st->vms_advisory);
	put(t, ",\"advisory_vms\":[");
	bool first = true;
	for (size_t i = 0, n = broker_vm_count(b); i < n && !t->error; i++) {
		struct broker_vm_view v;
		broker_vm_at(b, i, &v);
		if (strcmp(v.routes, "advisory"))
			continue;
		sep(t, &first);
		put_str(t, v.name);
	}
	put(t, "]");
}

static void put_status(struct json_door_text *t, struct broker *b)
{
	struct broker_status st;
	broker_status(b, &st);
	put(t, "{\"server\":");
	put_str(t, st.server);
	putf(t, ",\"protocol\":%d,\"backends\":{\"pmu\":", st.protocol);
	put_str(t, st.pmu_model);
	put(t, ",\"pmu_source\":");
	put_str(t, st.pmu_source);
	put(t, ",\"pmu_simulated\":");
	put_bool(t, st.pmu_simulated);
	if (st.pmu_why) {
		put(t, ",\"pmu_why\":");
		put_str(t, st.pmu_why);
	}
	put(t, ",\"kvm\":");
	put_str(t, st.kvm_backend);
	put(t, ",\"kvm_enforced\":");
	put_bool(t, st.kvm_enforced);
	put(t, ",\"kvm_why\":");
	put_str(t, st.kvm_why ? st.kvm_why : "");
	if (st.kvm_host) {
		put(t, ",\"kvm_host\":");
		put_str(t, st.kvm_host);
	}
	put(t, ",\"kvm_flavour\":");
	put_str(t, st.flavour);
	put(t, ",\"kvm_routes\":");
	put_str(t, st.routes);
	put(t, ",\"kvm_flavour_effect\":");
	put_str(t, st.flavour_effect);
	if (st.reservation) {
		put(t, ",\"kvm_reservation\":");
		put_str(t, st.reservation);
	}
	if (st.warnings[0]) {
		put(t, ",\"kvm_warnings\":[");
		for (size_t i = 0; st.warnings[i]; i++) {
			if (i)
				put(t, ",");
			put_str(t, st.warnings[i]);
		}
		put(t, "]");
	}
	put(t, "},\"generation\":");
	put_u64(t, st.generation);
	putf(t, ",\"cpus\":%u,\"vms\":%zu,", st.cpus, st.vms);
	put_vms_by_routes(t, b, &st);
	putf(t, ",\"sessions\":%zu,\"watchers\":%zu,\"uptime_s\":", st.sessions, st.watchers);
	put_u64(t, st.uptime_s);
	put(t, "}");
}

static void put_pmu(struct json_door_text *t, struct broker *b)
{
	struct broker_pmu_view p;
	broker_pmu(b, &p);
	put(t, "{\"source\":");
	put_str(t, p.source);
	put(t, ",\"simulated\":");
	put_bool(t, p.simulated);
	put(t, ",\"model\":");
	put_str(t, p.model);
	put(t, ",\"vendor\":");
	put_str(t, p.vendor);
	putf(t, ",\"version\":%u,\"gp\":%u,\"gp_width\":%u,\"fixed_mask\":", p.version, p.gp, p.gp_width);
	put_hex32(t, p.fixed_mask);
	putf(t, ",\"fixed\":%u,\"fixed_width\":%u,\"perf_metrics\":", p.fixed, p.fixed_width);
	put_bool(t, p.perf_metrics);
	putf(t, ",\"pebs_format\":%d,\"global_ctrl_mask\":\"0x%016" PRIx64 "\",\"cpus\":%u,\"boot_block\":",
	     p.pebs_format, p.global_ctrl_mask, p.cpus);
	put_str(t, p.boot_block ? p.boot_block : "");
	if (p.nmi_watchdog)
		put(t, ",\"taken\":{\"nmi_watchdog\":\"one cycles-capable counter on every CPU\"}");
	put(t, "}");
}

static void put_reading(struct json_door_text *t, const struct broker *b, const struct broker_reading *r)
{
	put(t, "{\"name\":");
	put_str(t, r->name);
	put_broker_flavour(t, b);
	put(t, ",\"since_usec\":");
	put_u64(t, r->since_usec);
	put(t, ",\"read_usec\":");
	put_u64(t, r->read_usec);
	if (r->note) {
		put(t, ",\"note\":");
		put_str(t, r->note);
	}
	put(t, ",\"events\":[");
	for (uint32_t i = 0; i < r->n_events; i++) {
		const struct broker_event_reading *e = &r->events[i];
		put(t, i ? ",{\"event\":" : "{\"event\":");
		put_str(t, e->event);
		put(t, ",\"placement\":");
		put_str(t, broker_placement_name(e->placement));
		put(t, ",\"counted\":");
		put_bool(t, e->counted);
		if (!e->counted) {
			put(t, ",\"reason\":");
			put_str(t, e->reason ? e->reason : "not counted");
		} else {
			put(t, ",\"value\":");
			put_u64(t, e->value);
			put(t, ",\"time_enabled\":");
			put_u64(t, e->time_enabled);
			put(t, ",\"time_running\":");
			put_u64(t, e->time_running);
			put(t, ",\"scaled\":");
			put_double(t, e->scaled);
			put(t, ",\"multiplexed\":");
			put_bool(t, e->multiplexed);
			put(t, ",\"never_ran\":");
			put_bool(t, e->never_ran);
		}
		put(t, "}");
	}
	put(t, "]}");
}

static void put_generation(struct json_door_text *t, const char *name, uint64_t generation)
{
	if (name) {
		put(t, "{\"name\":");
		put_str(t, name);
		put(t, ",\"generation\":");
	} else {
		put(t, "{\"generation\":");
	}
	put_u64(t, generation);
	put(t, "}");
}

/* ------------------------------------------------------------------ requests */

int json_door_check_fd(const struct proto_request *req, int fd, struct proto_error *err)
{
	bool takes = req->method == PROTO_M_VM_BIND && req->u.vm_bind.route_fd;
	if (takes && fd < 0)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
				       "params.route_fd: no descriptor came with the request");
	if (!takes && fd >= 0)
		/* vm.bind could have taken it: say which member would */
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL,
				       req->method == PROTO_M_VM_BIND ? "params.route_fd" : NULL,
				       "a descriptor came with a request that takes none%s",
				       req->method == PROTO_M_VM_BIND ? " (vm.bind takes one with route_fd true)"
								       : "");
	return 0;
}

int json_door_result(struct broker *b, const struct broker_caller *c, const struct proto_request *req,
		     struct json_door_text *out, struct proto_error *err)
{
	return json_door_result_fd(b, c, req, -1, out, err);
}

int json_door_result_fd(struct broker *b, const struct broker_caller *c, const struct proto_request *req, int fd,
			struct json_door_text *out, struct proto_error *err)
{
	_cleanup_close_ int owned = fd;
	uint64_t gen = 0;
	int r = json_door_check_fd(req, fd, err);
	if (r < 0)
		return r;
	/* only vm.bind gets this far with a descriptor, and takes it */
	switch (req->method) {
	case PROTO_M_STATUS:
		put_status(out, b);
		break;
	case PROTO_M_PMU:
		put_pmu(out, b);
		break;
	case PROTO_M_PLAN: {
		struct broker_viewer w = broker_viewer(b, c);
		put_plan(out, b, &w, &req->u.plan);
		break;
	}
	case PROTO_M_VM_ATTACH: {
		struct broker_attach_result res;
		if ((r = broker_vm_attach(b, c, &req->u.vm_attach, &res, err)) < 0)
			return r;
		put(out, "{\"name\":");
		put_str(out, req->u.vm_attach.name);
		putf(out, ",\"generation\":%" PRIu64, res.generation);
		/* routes: this VM's own kind, as in vm.show (advisory until its
		 * VMM hands a route fd, whatever the backend) */
		struct broker_vm_view av;
		if (broker_vm_find(b, req->u.vm_attach.name, &av) == 0) {
			put(out, ",\"flavour\":");
			put_str(out, broker_flavour_name(broker_flavour(b)));
			put_vm_routes(out, &av);
		} else {
			put_broker_flavour(out, b);
		}
		put(out, ",\"granted\":{");
		put_vcpu_grants(out, b, res.vcpus_by_route, true);
		put(out, "},\"bound\":");
		put_bool(out, res.bound);
		put(out, "}");
		break;
	}
	case PROTO_M_VM_DETACH:
		if ((r = broker_vm_detach(b, c, req->u.vm_detach.name, &gen, err)) < 0)
			return r;
		put_generation(out, NULL, gen);
		break;
	case PROTO_M_VM_UPDATE:
		if ((r = broker_vm_update(b, c, &req->u.vm_update, &gen, err)) < 0)
			return r;
		put_generation(out, req->u.vm_update.name, gen);
		break;
	case PROTO_M_VM_BIND: {
		/* the broker owns the route fd from here on, whatever it answers */
		if ((r = broker_vm_bind(b, c, &req->u.vm_bind, TAKE_FD(owned), &gen, err)) < 0)
			return r;
		struct broker_vm_view v;
		put(out, "{\"name\":");
		put_str(out, req->u.vm_bind.name);
		put(out, ",\"generation\":");
		put_u64(out, gen);
		/* what the VMM handed (or did not) made of this VM's routes */
		if (broker_vm_find(b, req->u.vm_bind.name, &v) == 0)
			put_vm_routes(out, &v);
		put(out, "}");
		break;
	}
	case PROTO_M_VM_LIST: {
		struct broker_viewer w = broker_viewer(b, c);
		put(out, "{\"vms\":[");
		for (size_t i = 0, n = broker_vm_count(b); i < n && !out->error; i++) {
			struct broker_vm_view v;
			broker_vm_at(b, i, &v);
			broker_vm_view_withhold(&w, &v);
			if (i)
				put(out, ",");
			put_vm(out, b, &v, false, false);
		}
		put(out, "]");
		put_broker_flavour(out, b);
		put(out, "}");
		break;
	}
	case PROTO_M_VM_SHOW: {
		struct broker_vm_view v;
		if (broker_vm_find(b, req->u.vm_show.name, &v) < 0)
			return proto_error_set(err, PROTO_E_NOT_FOUND, ENOENT, "params.name", "no vm named %s",
					       req->u.vm_show.name);
		struct broker_viewer w = broker_viewer(b, c);
		broker_vm_view_withhold(&w, &v);
		put_vm(out, b, &v, true, true);
		break;
	}
	case PROTO_M_SESSION_START: {
		const struct proto_session_start *q = &req->u.session_start;
		struct broker_session_view s;
		if ((r = broker_session_start(b, c, q, &gen, err)) < 0)
			return r;
		put(out, "{\"name\":");
		put_str(out, q->name);
		put(out, ",\"generation\":");
		put_u64(out, gen);
		put_broker_flavour(out, b);
		put(out, ",\"events\":");
		bool found = broker_session_find(b, q->name, &s) == 0;
		if (found)
			put_event_plan(out, b, &s);
		else
			put(out, "[]");
		if (found && s.note) {
			put(out, ",\"note\":");
			put_str(out, s.note);
		}
		put(out, "}");
		break;
	}
	case PROTO_M_SESSION_STOP:
		if ((r = broker_session_stop(b, c, req->u.session_stop.name, &gen, err)) < 0)
			return r;
		put_generation(out, NULL, gen);
		break;
	case PROTO_M_SESSION_READ: {
		struct broker_reading *rd = NULL;
		if ((r = broker_session_read(b, c, req->u.session_read.name, &rd, err)) < 0)
			return r;
		put_reading(out, b, rd);
		broker_reading_free(rd);
		break;
	}
	case PROTO_M_SESSION_LIST: {
		struct broker_viewer w = broker_viewer(b, c);
		put(out, "{\"sessions\":[");
		bool first = true;
		for (size_t i = 0, n = broker_session_count(b); i < n && !out->error; i++) {
			struct broker_session_view s;
			broker_session_at(b, i, &s);
			broker_session_view_withhold(&w, &s);
			sep(out, &first);
			put_session(out, b, &s, false);
		}
		put(out, "]}");
		break;
	}
	case PROTO_M_METRICS: {
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		if ((r = broker_metrics(b, c, &text, &len, err)) < 0)
			return r;
		put(out, "{\"format\":\"prometheus-text-0.0.4\",\"text\":");
		put_str(out, text);
		put(out, "}");
		break;
	}
	default:
		return proto_error_set(err, PROTO_E_UNKNOWN_METHOD, ENOSYS, "method",
				       "method %s is handled by the transport, not the broker",
				       proto_method_name(req->method));
	}
	return out->error ? text_error(out, err) : 0;
}

int json_door_event(const struct broker_event *ev, struct json_door_text *t)
{
	put(t, "{\"event\":\"plan\",\"generation\":");
	put_u64(t, ev->generation);
	if (ev->flavour)
		put_flavour(t, ev->flavour, ev->routes ? ev->routes : "?");
	put(t, ",\"reason\":");
	put_str(t, ev->reason ? ev->reason : "");
	put(t, ",\"changes\":[");
	for (size_t i = 0; i < ev->n_changes; i++) {
		const struct broker_change *c = &ev->changes[i];
		putf(t, "%s{\"phase\":%u", i ? "," : "", c->phase);
		if (c->partition) {
			putf(t, ",\"cpu\":%d,\"guest_gp_mask\":", c->cpu);
			put_hex32(t, c->guest_gp_mask);
			put(t, ",\"guest_fixed_mask\":");
			put_hex32(t, c->guest_fixed_mask);
		} else {
			put(t, ",\"vm\":");
			put_str(t, c->vm ? c->vm : "?");
			putf(t, ",\"vcpu\":%u", c->vcpu);
			put_routes(t, c->gp, c->n_gp, c->fixed, c->pmu_fixed_mask);
		}
		if (c->scrub_gp_mask || c->scrub_fixed_mask) {
			put(t, ",\"scrub_gp_mask\":");
			put_hex32(t, c->scrub_gp_mask);
			put(t, ",\"scrub_fixed_mask\":");
			put_hex32(t, c->scrub_fixed_mask);
		}
		put(t, "}");
	}
	put(t, "]}");
	return t->error;
}

/* ------------------------------------------------------------------ objects */

static struct json_object *parse_text(const struct json_door_text *t)
{
	struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
	if (!tok)
		return NULL;
	struct json_object *o = json_tokener_parse_ex(tok, t->data, (int)t->len);
	if (json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

int json_door_call(struct broker *b, const struct broker_caller *c, const struct proto_request *req,
		   struct json_object **result, struct proto_error *err)
{
	_cleanup_(json_door_text_fini) struct json_door_text t = {0};
	*result = NULL;
	int r = json_door_result(b, c, req, &t, err);
	if (r < 0)
		return r;
	if (t.len > INT32_MAX || !(*result = parse_text(&t)))
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	return 0;
}

struct json_object *json_door_event_object(const struct broker_event *ev)
{
	_cleanup_(json_door_text_fini) struct json_door_text t = {0};
	if (json_door_event(ev, &t) < 0 || t.len > INT32_MAX)
		return NULL;
	return parse_text(&t);
}
