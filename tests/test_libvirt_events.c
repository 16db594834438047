/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/domain_policy.h"
#include "doors/libvirt_events.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Runs the loop until *flag becomes true or 3 s pass; returns *flag. */
static bool run_until(sd_event *e, const int *counter, int want)
{
	uint64_t end = now_usec() + 3000000u;
	while (*counter < want && now_usec() < end)
		assert_true(sd_event_run(e, 20000) >= 0);
	return *counter >= want;
}

static void run_for(sd_event *e, uint64_t usec)
{
	uint64_t end = now_usec() + usec;
	while (now_usec() < end)
		assert_true(sd_event_run(e, 5000) >= 0);
}

static int group_setup(void **st)
{
	sd_event *e;
	if (sd_event_new(&e) < 0)
		return -1;
	if (libvirt_events_bridge_register(e) < 0)
		return -1;
	*st = e;
	return 0;
}

static int group_teardown(void **st)
{
	/* The bridge keeps its reference for the life of the process, as
	 * libvirt keeps the registration. */
	sd_event_unref(*st);
	return 0;
}

/* ----------------------------------------------------------------- bridge */

struct probe {
	int calls;
	int last_events;
	int freed;
	int free_calls_inside_remove;
	bool in_remove;
};

static void probe_free(void *opaque)
{
	struct probe *p = opaque;
	p->freed++;
	if (p->in_remove)
		p->free_calls_inside_remove++;
}

static void on_handle(int watch, int fd, int events, void *opaque)
{
	(void)watch;
	(void)fd;
	struct probe *p = opaque;
	p->calls++;
	p->last_events = events;
}

static void on_timeout(int timer, void *opaque)
{
	(void)timer;
	struct probe *p = opaque;
	p->calls++;
}

static void test_register_idempotent(void **st)
{
	sd_event *e = *st, *other;
	assert_int_equal(libvirt_events_bridge_register(e), 0);
	assert_ptr_equal(libvirt_events_bridge_loop(), e);
	assert_int_equal(sd_event_new(&other), 0);
	assert_int_equal(libvirt_events_bridge_register(other), -EBUSY);
	sd_event_unref(other);
}

static void test_handles(void **st)
{
	sd_event *e = *st;
	struct probe p = { 0 };
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);

	int id = virEventAddHandle(fds[0], VIR_EVENT_HANDLE_READABLE, on_handle, &p, probe_free);
	assert_true(id > 0);
	run_for(e, 20000);
	assert_int_equal(p.calls, 0);

	assert_int_equal(write(fds[1], "x", 1), 1);
	assert_true(run_until(e, &p.calls, 1));
	assert_int_equal(p.last_events & VIR_EVENT_HANDLE_READABLE, VIR_EVENT_HANDLE_READABLE);

	/* events 0: no callback although the pipe is still readable */
	virEventUpdateHandle(id, 0);
	int before = p.calls;
	run_for(e, 30000);
	assert_int_equal(p.calls, before);

	/* back on: level-triggered, fires again for the same byte */
	virEventUpdateHandle(id, VIR_EVENT_HANDLE_READABLE);
	assert_true(run_until(e, &p.calls, before + 1));

	/* hang-up is reported as such */
	virEventUpdateHandle(id, 0);
	close(fds[1]);
	char c;
	assert_int_equal(read(fds[0], &c, 1), 1);
	virEventUpdateHandle(id, VIR_EVENT_HANDLE_READABLE);
	before = p.calls;
	assert_true(run_until(e, &p.calls, before + 1));
	assert_true(p.last_events & VIR_EVENT_HANDLE_HANGUP);
	virEventUpdateHandle(id, 0);

	/* the free callback is deferred, never run inside remove */
	p.in_remove = true;
	assert_int_equal(virEventRemoveHandle(id), 0);
	p.in_remove = false;
	assert_int_equal(p.freed, 0);
	assert_true(run_until(e, &p.freed, 1));
	assert_int_equal(p.free_calls_inside_remove, 0);
	/* removing twice fails, and an unknown id too */
	assert_int_equal(virEventRemoveHandle(id), -1);
	close(fds[0]);
}

static void test_timeouts(void **st)
{
	sd_event *e = *st;
	struct probe p = { 0 };

	/* periodic: 10 ms fires repeatedly until changed */
	uint64_t t0 = now_usec();
	int id = virEventAddTimeout(10, on_timeout, &p, probe_free);
	assert_true(id > 0);
	assert_true(run_until(e, &p.calls, 3));
	assert_true(now_usec() - t0 >= 25000);

	/* -1 disables */
	virEventUpdateTimeout(id, -1);
	int before = p.calls;
	run_for(e, 40000);
	assert_int_equal(p.calls, before);

	/* 0 fires on every iteration */
	virEventUpdateTimeout(id, 0);
	for (int i = 0; i < 5; i++)
		assert_true(sd_event_run(e, 0) >= 0);
	assert_int_equal(p.calls, before + 5);

	/* a long interval does not fire early */
	virEventUpdateTimeout(id, 1000);
	before = p.calls;
	run_for(e, 50000);
	assert_int_equal(p.calls, before);

	p.in_remove = true;
	assert_int_equal(virEventRemoveTimeout(id), 0);
	p.in_remove = false;
	assert_int_equal(p.freed, 0);
	assert_true(run_until(e, &p.freed, 1));
	assert_int_equal(p.free_calls_inside_remove, 0);
	assert_int_equal(p.calls, before);
	assert_int_equal(virEventRemoveTimeout(id), -1);
}

/* A timer that removes itself from its own callback, as libvirt does. */
static void self_removing(int timer, void *opaque)
{
	struct probe *p = opaque;
	p->calls++;
	p->in_remove = true;
	virEventRemoveTimeout(timer);
	p->in_remove = false;
}

static void test_timeout_removed_from_callback(void **st)
{
	sd_event *e = *st;
	struct probe p = { 0 };
	int id = virEventAddTimeout(0, self_removing, &p, probe_free);
	assert_true(id > 0);
	assert_true(run_until(e, &p.freed, 1));
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.free_calls_inside_remove, 0);
}

/* --------------------------------------------------------------- follower */

struct seen {
	int begins, ends, running, stopped, changed, ups, downs;
	char last_running[64], last_stopped[64], last_changed[64];
	char last_uuid[VIR_UUID_STRING_BUFLEN];
	char *last_xml;
	char running_names[256];
	uint64_t down_at[8];
	uint64_t down_delay[8];         /* the retry delay the follower chose */
	struct libvirt_events_follower **follower; /* set once libvirt_events_follower_new returned */
};

static void set_xml(struct seen *s, const char *xml)
{
	free(s->last_xml);
	s->last_xml = xml ? strdup(xml) : NULL;
}

static void cb_begin(void *ud)
{
	struct seen *s = ud;
	s->begins++;
	s->running_names[0] = 0;
}

static void cb_running(void *ud, const char *name, const char *uuid, const char *xml)
{
	struct seen *s = ud;
	s->running++;
	snprintf(s->last_running, sizeof(s->last_running), "%s", name);
	snprintf(s->last_uuid, sizeof(s->last_uuid), "%s", uuid);
	size_t n = strlen(s->running_names);
	snprintf(s->running_names + n, sizeof(s->running_names) - n, "%s%s", n ? "," : "", name);
	set_xml(s, xml);
}

static void cb_end(void *ud)
{
	((struct seen *)ud)->ends++;
}

static void cb_stopped(void *ud, const char *name, const char *uuid)
{
	struct seen *s = ud;
	s->stopped++;
	snprintf(s->last_stopped, sizeof(s->last_stopped), "%s", name);
	snprintf(s->last_uuid, sizeof(s->last_uuid), "%s", uuid);
}

static void cb_changed(void *ud, const char *name, const char *uuid, const char *xml)
{
	struct seen *s = ud;
	s->changed++;
	snprintf(s->last_changed, sizeof(s->last_changed), "%s", name);
	snprintf(s->last_uuid, sizeof(s->last_uuid), "%s", uuid);
	set_xml(s, xml);
}

static void cb_connection(void *ud, bool up, const char *why)
{
	struct seen *s = ud;
	if (up) {
		s->ups++;
	} else {
		assert_non_null(why);
		if (s->downs < 8) {
			s->down_at[s->downs] = now_usec();
			s->down_delay[s->downs] = s->follower && *s->follower
							  ? libvirt_events_follower_retry_delay(*s->follower) : 0;
		}
		s->downs++;
	}
}

static const struct libvirt_events_ops ops = {
	.on_reconcile_begin = cb_begin,
	.on_domain_running = cb_running,
	.on_reconcile_end = cb_end,
	.on_domain_stopped = cb_stopped,
	.on_domain_changed = cb_changed,
	.on_connection = cb_connection,
};

static char *node_uri(void)
{
	const char *src = getenv("VPMU_SOURCE_DIR");
	char cwd[512], *uri;
	if (!src)
		src = getcwd(cwd, sizeof(cwd)) ? cwd : ".";
	/* without VPMU_SOURCE_DIR we run from tests/ (ctest's working dir) */
	assert_true(asprintf(&uri, "test://%s%s/fixtures/libvirt/testnode.xml", src,
			     getenv("VPMU_SOURCE_DIR") ? "/tests" : "") > 0);
	return uri;
}

/* The parsed policy of the last XML seen, through the real parser. */
static void policy_of(const struct seen *s, struct dompol *p)
{
	static const struct domain_policy_defaults d = { .priority = 100, .cls = "preferred" };
	char err[256];
	assert_non_null(s->last_xml);
	if (domain_policy_parse(s->last_xml, strlen(s->last_xml), &d, 64, p, err, sizeof(err)) < 0)
		fail_msg("policy of %s: %s", s->last_running, err);
}

static void test_follower(void **st)
{
	sd_event *e = *st;
	struct seen s = { 0 };
	struct libvirt_events_follower *f;
	struct dompol pol;
	char *uri = node_uri();

	assert_int_equal(libvirt_events_follower_new(e, uri, &ops, &s, NULL, &f), 0);
	/* nothing happens before the loop runs */
	assert_int_equal(s.begins, 0);
	assert_true(run_until(e, &s.ends, 1));
	assert_true(libvirt_events_follower_connected(f));
	assert_int_equal(s.ups, 1);
	assert_int_equal(s.begins, 1);
	assert_string_equal(s.running_names, "alpha");
	assert_string_equal(s.last_uuid, "a1a1a1a1-0000-4000-8000-000000000001");
	policy_of(&s, &pol);
	assert_true(pol.metadata_present);
	assert_int_equal(pol.priority, 300);
	assert_true(pol.guaranteed);
	assert_int_equal(pol.gp, 4);
	assert_int_equal(pol.fixed_mask, 7);
	assert_int_equal(pol.n_vcpus, 4);
	char buf[64];
	assert_true(cpulist_format(&pol.vcpu_cpus[3], buf, sizeof(buf)) >= 0);
	assert_string_equal(buf, "40,42-43");
	domain_policy_clear(&pol);

	/* The test driver is private per connection: act on the follower's. */
	virConnectPtr conn = libvirt_events_follower_conn(f);
	assert_non_null(conn);
	virNodeInfo ni;
	assert_int_equal(virNodeGetInfo(conn, &ni), 0);
	assert_int_equal(VIR_NODEINFO_MAXCPUS(ni), 64);

	/* start */
	virDomainPtr beta = virDomainLookupByName(conn, "beta");
	assert_non_null(beta);
	assert_int_equal(virDomainCreate(beta), 0);
	assert_true(run_until(e, &s.running, 2));
	assert_string_equal(s.last_running, "beta");
	policy_of(&s, &pol);
	assert_true(pol.pmu_off);
	assert_false(pol.metadata_present);
	domain_policy_clear(&pol);

	/* metadata in our namespace on a running domain */
	assert_int_equal(virDomainSetMetadata(beta, VIR_DOMAIN_METADATA_ELEMENT,
					      "<pmu class='shared' gp='1'/>", "vpmu", DOMAIN_POLICY_NS_URI,
					      VIR_DOMAIN_AFFECT_LIVE),
			 0);
	assert_true(run_until(e, &s.changed, 1));
	assert_string_equal(s.last_changed, "beta");
	assert_string_equal(s.last_uuid, "b2b2b2b2-0000-4000-8000-000000000002");
	policy_of(&s, &pol);
	assert_true(pol.metadata_present);
	assert_string_equal(pol.cls, "shared");
	/* beta has <pmu state='off'/>: the metadata is read, nothing requested */
	assert_true(pol.pmu_off);
	assert_int_equal(pol.gp, 0);
	domain_policy_clear(&pol);

	/* Another application's metadata is not our business, and the test
	 * driver's virDomainPinVcpu emits no tunable event (libvirt 9.0's
	 * testDomainPinVcpuFlags queues none; the QEMU driver does). A marker
	 * change in our namespace afterwards proves that exactly one event
	 * arrived for the three calls. */
	assert_int_equal(virDomainSetMetadata(beta, VIR_DOMAIN_METADATA_ELEMENT, "<x/>", "o",
					      "http://example.org/other/1", VIR_DOMAIN_AFFECT_LIVE),
			 0);
	unsigned char map[VIR_CPU_MAPLEN(64)] = { 0 };
	VIR_USE_CPU(map, 50);
	assert_int_equal(virDomainPinVcpu(beta, 1, map, sizeof(map)), 0);
	assert_int_equal(virDomainSetMetadata(beta, VIR_DOMAIN_METADATA_ELEMENT, "<pmu gp='2'/>", "vpmu",
					      DOMAIN_POLICY_NS_URI, VIR_DOMAIN_AFFECT_LIVE),
			 0);
	assert_true(run_until(e, &s.changed, 2));
	run_for(e, 30000);
	assert_int_equal(s.changed, 2);
	/* the pin shows in the XML the marker event delivered */
	policy_of(&s, &pol);
	assert_true(cpulist_format(&pol.vcpu_cpus[1], buf, sizeof(buf)) >= 0);
	assert_string_equal(buf, "50");
	assert_true(cpulist_format(&pol.vcpu_cpus[0], buf, sizeof(buf)) >= 0);
	assert_string_equal(buf, "16-31");
	domain_policy_clear(&pol);

	/* a change on a stopped domain is not reported */
	virDomainPtr alpha = virDomainLookupByName(conn, "alpha");
	assert_non_null(alpha);
	assert_int_equal(virDomainDestroy(alpha), 0);
	assert_true(run_until(e, &s.stopped, 1));
	assert_string_equal(s.last_stopped, "alpha");
	assert_string_equal(s.last_uuid, "a1a1a1a1-0000-4000-8000-000000000001");
	assert_int_equal(virDomainSetMetadata(alpha, VIR_DOMAIN_METADATA_ELEMENT, "<pmu gp='3'/>", "vpmu",
					      DOMAIN_POLICY_NS_URI, VIR_DOMAIN_AFFECT_CONFIG),
			 0);
	run_for(e, 30000);
	assert_int_equal(s.changed, 2);
	virDomainFree(alpha);
	virDomainFree(beta);

	/* Reconnect: a fresh test-driver connection re-reads the node file,
	 * so alpha runs again and beta is off; the reconcile says so. */
	int running_before = s.running;
	assert_int_equal(libvirt_events_follower_reconnect(f), 0);
	assert_false(libvirt_events_follower_connected(f));
	assert_true(run_until(e, &s.ends, 2));
	assert_int_equal(s.begins, 2);
	assert_int_equal(s.ups, 2);
	assert_string_equal(s.running_names, "alpha");
	assert_int_equal(s.running, running_before + 1);

	/* events are followed on the new connection too */
	conn = libvirt_events_follower_conn(f);
	alpha = virDomainLookupByName(conn, "alpha");
	assert_int_equal(virDomainDestroy(alpha), 0);
	assert_true(run_until(e, &s.stopped, 2));
	virDomainFree(alpha);

	libvirt_events_follower_free(f);
	assert_int_equal(s.downs, 0);
	free(s.last_xml);
	free(uri);
}

static void test_follower_backoff(void **st)
{
	sd_event *e = *st;
	struct seen s = { 0 };
	struct libvirt_events_follower *f;
	const struct libvirt_events_follower_opts o = { .backoff_min_usec = 20000, .backoff_max_usec = 80000 };

	f = NULL;
	s.follower = &f;
	assert_int_equal(libvirt_events_follower_new(e, "test:///nonexistent/vpmu-node.xml", &ops, &s, &o, &f), 0);
	assert_true(run_until(e, &s.downs, 5));
	assert_false(libvirt_events_follower_connected(f));
	assert_int_equal(s.begins, 0);
	/* The delays the follower chose: 20, 40, 80, 80, 80 ms — doubling, then
	 * capped. (The first failure may happen inside libvirt_events_follower_new,
	 * before the test knows the follower: it is not checked.) */
	static const uint64_t want[5] = { 20000, 40000, 80000, 80000, 80000 };
	for (int i = 1; i < 5; i++)
		if (s.down_delay[i] != want[i])
			fail_msg("retry %d: delay %llu us, want %llu", i, (unsigned long long)s.down_delay[i],
				 (unsigned long long)want[i]);
	/* And the loop really waited: never less than half the delay (the
	 * gaps are measured between failure callbacks, which connect attempts
	 * and a loaded machine shift; this only catches a retry without wait). */
	for (int i = 1; i < 5; i++)
		if (s.down_at[i] - s.down_at[i - 1] < want[i - 1] / 2)
			fail_msg("retry %d came %llu us after the previous one, want >= %llu", i,
				 (unsigned long long)(s.down_at[i] - s.down_at[i - 1]),
				 (unsigned long long)want[i - 1] / 2);
	libvirt_events_follower_free(f);
}

static void test_follower_args(void **st)
{
	sd_event *e = *st, *other;
	struct libvirt_events_follower *f;
	struct libvirt_events_ops partial = ops;
	partial.on_domain_changed = NULL;
	assert_int_equal(libvirt_events_follower_new(e, "test:///default", &partial, NULL, NULL, &f), -EINVAL);
	assert_int_equal(libvirt_events_follower_new(e, "", &ops, NULL, NULL, &f), -EINVAL);
	assert_int_equal(sd_event_new(&other), 0);
	assert_int_equal(libvirt_events_follower_new(other, "test:///default", &ops, NULL, NULL, &f), -ENXIO);
	sd_event_unref(other);
}

static void test_tunable_filter(void **st)
{
	(void)st;
	virTypedParameter p[2];
	memset(p, 0, sizeof(p));
	snprintf(p[0].field, sizeof(p[0].field), "cputune.emulatorpin");
	snprintf(p[1].field, sizeof(p[1].field), "cputune.vcpu_quota");
	assert_false(libvirt_events_tunable_touches_vcpupin(p, 2));
	snprintf(p[1].field, sizeof(p[1].field), "cputune.vcpupin");
	assert_false(libvirt_events_tunable_touches_vcpupin(p, 2));
	snprintf(p[1].field, sizeof(p[1].field), "cputune.vcpupin3x");
	assert_false(libvirt_events_tunable_touches_vcpupin(p, 2));
	snprintf(p[1].field, sizeof(p[1].field), VIR_DOMAIN_TUNABLE_CPU_VCPUPIN, 12u);
	assert_true(libvirt_events_tunable_touches_vcpupin(p, 2));
	assert_false(libvirt_events_tunable_touches_vcpupin(p, 1));
	assert_false(libvirt_events_tunable_touches_vcpupin(p, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_idempotent),
		cmocka_unit_test(test_handles),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_timeout_removed_from_callback),
		cmocka_unit_test(test_tunable_filter),
		cmocka_unit_test(test_follower_args),
		cmocka_unit_test(test_follower),
		cmocka_unit_test(test_follower_backoff),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
