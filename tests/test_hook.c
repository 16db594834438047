/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hook.h"

/* ------------------------------------------------------- the fake daemon */

enum fake_mode { FAKE_OK, FAKE_REFUSE, FAKE_DOWN, FAKE_SLOW, FAKE_BROKEN };

struct fake {
	enum fake_mode mode;
	int admits, binds, releases;
	char name[64], uuid[40], cls[16];
	unsigned gp;
	uint32_t fixed;
	bool metadata_present;
	pid_t pid;
	uint64_t deadline;
};

static int fake_result(struct fake *f, uint64_t deadline)
{
	f->deadline = deadline;
	switch (f->mode) {
	case FAKE_DOWN:
		return -ECONNREFUSED;
	case FAKE_SLOW:
		/* a daemon that never answers: a transport waits until the deadline */
		while (hook_now_usec() < deadline)
			usleep(1000);
		return -ETIMEDOUT;
	case FAKE_BROKEN:
		return -EPROTO;
	default:
		return 0;
	}
}

static int fake_admit(void *ctx, const struct dompol *req, uint64_t deadline, struct hook_admission *out)
{
	struct fake *f = ctx;
	f->admits++;
	snprintf(f->name, sizeof(f->name), "%s", req->name);
	snprintf(f->uuid, sizeof(f->uuid), "%s", req->uuid);
	snprintf(f->cls, sizeof(f->cls), "%s", req->cls);
	f->gp = req->gp;
	f->fixed = req->fixed_mask;
	f->metadata_present = req->metadata_present;
	int r = fake_result(f, deadline);
	if (r == 0) {
		out->admitted = f->mode != FAKE_REFUSE;
		if (!out->admitted)
			snprintf(out->reason, sizeof(out->reason), "CPU 9: 2 of 4 general counters held by priority 500");
	}
	return r;
}

static int fake_bind(void *ctx, const struct dompol *req, pid_t pid, uint64_t deadline)
{
	struct fake *f = ctx;
	f->binds++;
	snprintf(f->name, sizeof(f->name), "%s", req->name);
	f->pid = pid;
	return fake_result(f, deadline);
}

static int fake_release(void *ctx, const char *name, const char *uuid, uint64_t deadline)
{
	struct fake *f = ctx;
	f->releases++;
	snprintf(f->name, sizeof(f->name), "%s", name);
	snprintf(f->uuid, sizeof(f->uuid), "%s", uuid);
	return fake_result(f, deadline);
}

/* ------------------------------------------------------------- harness */

struct run {
	int rc;
	char *out, *err;
	size_t out_len, err_len;
	uint64_t started, elapsed;
};

static char pid_dir[] = "/tmp/vpmu-test-hook.XXXXXX";

static char *fixture(const char *name, size_t *len)
{
	char rel[256];
	snprintf(rel, sizeof(rel), "libvirt/%s", name);
	return fixture_read(rel, len);
}

static struct hook_opts opts(const char *dflt_class, uint64_t budget)
{
	struct hook_opts o = {
		.pid_dir = pid_dir,
		.budget_usec = budget,
		.defaults = { .priority = 100, .cls = dflt_class, .gp = 0, .fixed_mask = 0 },
		.host_cpus = 64,
	};
	return o;
}

static struct run run_hook(struct fake *f, const struct hook_opts *o, const char *name, const char *op,
			   const char *subop, const char *xml, size_t xml_len)
{
	struct run r = { 0 };
	const struct hook_transport t = { .admit = fake_admit, .bind = fake_bind, .release = fake_release, .ctx = f };
	char *argv[] = { "vpmu", (char *)name, (char *)op, (char *)subop, "-", NULL };
	FILE *out = open_memstream(&r.out, &r.out_len);
	FILE *err = open_memstream(&r.err, &r.err_len);
	assert_non_null(out);
	assert_non_null(err);
	r.started = hook_now_usec();
	r.rc = hook_run(5, argv, xml, xml_len, o, &t, out, err);
	r.elapsed = hook_now_usec() - r.started;
	fclose(out);
	fclose(err);
	return r;
}

static struct run run_fixture(struct fake *f, const struct hook_opts *o, const char *name, const char *op,
			      const char *subop, const char *file)
{
	size_t len;
	char *xml = fixture(file, &len);
	struct run r = run_hook(f, o, name, op, subop, xml, len);
	free(xml);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static void write_pid_file(const char *name, const char *content)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s.pid", pid_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static int setup(void **st)
{
	(void)st;
	return mkdtemp(pid_dir) ? 0 : -1;
}

static int teardown(void **st)
{
	(void)st;
	char path[256];
	static const char *const names[] = { "web", "plain", "bad" };
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s.pid", pid_dir, names[i]);
		unlink(path);
	}
	return rmdir(pid_dir);
}

/* --------------------------------------------------------------- prepare */

static void test_prepare_admitted(void **st)
{
	(void)st;
	struct fake f = { .mode = FAKE_OK };
	struct hook_opts o = opts("preferred", 0);
	struct run r = run_fixture(&f, &o, "web", "prepare", "begin", "with-metadata.xml");
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.admits, 1);
	assert_string_equal(f.name, "web");
	assert_string_equal(f.uuid, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
	assert_string_equal(f.cls, "guaranteed");
	assert_int_equal(f.gp, 4);
	assert_int_equal(f.fixed, 3);
	/* the default budget: 2 s from the start of the run */
	assert_true(f.deadline >= r.started + HOOK_DEFAULT_BUDGET_USEC);
	assert_true(f.deadline <= r.started + r.elapsed + HOOK_DEFAULT_BUDGET_USEC);
	assert_int_equal(r.err_len, 0);
	assert_int_equal(r.out_len, 0);
	run_free(&r);
}

static void test_prepare_refused_guaranteed(void **st)
{
	(void)st;
	struct fake f = { .mode = FAKE_REFUSE };
	struct hook_opts o = opts("preferred", 0);
	struct run r = run_fixture(&f, &o, "web", "prepare", "begin", "with-metadata.xml");
	assert_int_equal(r.rc, 1);
	assert_non_null(strstr(r.err, "refusing to start web"));
	assert_non_null(strstr(r.err, "4 general counters, fixed counters 0x3"));
	/* vCPU 0 on 8, vCPU 1 on 9,11, vCPUs 2-3 on 0-7 */
	assert_non_null(strstr(r.err, "on CPUs 0-9,11"));
	assert_non_null(strstr(r.err, "CPU 9: 2 of 4 general counters held by priority 500"));
	run_free(&r);
}

static void test_prepare_refused_not_guaranteed(void **st)
{
	(void)st;
	struct fake f = { .mode = FAKE_REFUSE };
	struct hook_opts o = opts("preferred", 0);
	struct run r = run_fixture(&f, &o, "plain", "prepare", "begin", "without-metadata.xml");
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.admits, 1);
	assert_false(f.metadata_present);
	assert_string_equal(f.cls, "preferred");
	assert_non_null(strstr(r.err, "starting anyway"));
	run_free(&r);
}

static void test_prepare_guaranteed_by_default(void **st)
{
	(void)st;
	struct fake f = { .mode = FAKE_REFUSE };
	struct hook_opts o = opts("guaranteed", 0);
	struct run r = run_fixture(&f, &o, "plain", "prepare", "begin", "without-metadata.xml");
	assert_int_equal(r.rc, 1);
	assert_non_null(strstr(r.err, "refusing to start plain"));
	assert_non_null(strstr(r.err, "on CPUs 0-63"));
	run_free(&r);
}

static void test_prepare_fail_open(void **st)
{
	(void)st;
	static const struct {
		enum fake_mode mode;
		const char *needle;
	} cases[] = {
		{ FAKE_DOWN, "vpmud is not running" },
		{ FAKE_BROKEN, "Protocol error" },
	};
	for (size_t i = 0; i < 2; i++) {
		struct fake f = { .mode = cases[i].mode };
		struct hook_opts o = opts("guaranteed", 0);
		struct run r = run_fixture(&f, &o, "web", "prepare", "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.admits, 1);
		if (!strstr(r.err, cases[i].needle) || !strstr(r.err, "without PMU arbitration"))
			fail_msg("case %zu: \"%s\"", i, r.err);
		run_free(&r);
	}
}

static void test_prepare_slow_daemon_is_bounded(void **st)
{
	(void)st;
	struct fake f = { .mode = FAKE_SLOW };
	struct hook_opts o = opts("guaranteed", 150000);
	struct run r = run_fixture(&f, &o, "web", "prepare", "begin", "with-metadata.xml");
	assert_int_equal(r.rc, 0);
	assert_non_null(strstr(r.err, "did not answer in time"));
	assert_true(f.deadline <= r.started + r.elapsed);
	assert_true(f.deadline >= r.started + 150000);
	/* the whole run ends at the deadline, not much later */
	assert_true(r.elapsed >= 150000 && r.elapsed < 150000 + 100000);
	run_free(&r);
}

static void test_prepare_malformed_metadata(void **st)
{
	(void)st;
	static const struct {
		const char *file;
		int rc;
		const char *needle;
	} cases[] = {
		/* guaranteed and unreadable: refused without asking the daemon */
		{ "bad-gp.xml", 1, "<vpmu:pmu> attribute \"gp\": must be an integer 0..32, got \"lots\"" },
		{ "bad-fixed.xml", 1, "<vpmu:pmu> attribute \"fixed\"" },
		{ "bad-unknown-attr.xml", 1, "unknown attribute \"gpp\"" },
		/* not guaranteed: started, with the error logged */
		{ "bad-gp-range.xml", 0, "got \"33\"" },
		{ "bad-class.xml", 0, "got \"gold\"" },
		/* a version we cannot read: its class is unknown, so fail open */
		{ "wrong-version.xml", 0, "https://vpmu.org/xmlns/libvirt/2" },
		{ "not-xml.xml", 0, "domain XML: line 1" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake f = { .mode = FAKE_OK };
		struct hook_opts o = opts("preferred", 0);
		struct run r = run_fixture(&f, &o, "bad", "prepare", "begin", cases[i].file);
		if (r.rc != cases[i].rc || !strstr(r.err, cases[i].needle))
			fail_msg("%s: rc %d, stderr \"%s\"", cases[i].file, r.rc, r.err);
		assert_int_equal(f.admits, 0);
		if (cases[i].rc)
			assert_non_null(strstr(r.err, "refusing to start bad"));
		run_free(&r);
	}
}

/* ------------------------------------------------------ started, reconnect */

static void test_pmu_off_asks_nothing(void **st)
{
	(void)st;
	/* A guest without a vPMU has no counters to arbitrate: neither an
	 * admission at prepare nor a bind at started. */
	struct fake f = { .mode = FAKE_OK };
	struct hook_opts o = opts("guaranteed", 0);
	struct run r = run_fixture(&f, &o, "nopmu", "prepare", "begin", "pmu-off.xml");
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.admits, 0);
	run_free(&r);
	write_pid_file("nopmu", "4242\n");
	r = run_fixture(&f, &o, "nopmu", "started", "begin", "pmu-off.xml");
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.binds, 0);
	run_free(&r);
}

static void test_started_binds_pid(void **st)
{
	(void)st;
	static const char *const ops[] = { "started", "reconnect" };
	for (size_t i = 0; i < 2; i++) {
		struct fake f = { .mode = FAKE_OK };
		struct hook_opts o = opts("preferred", 0);
		write_pid_file("web", "4242\n");
		struct run r = run_fixture(&f, &o, "web", ops[i], "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.binds, 1);
		assert_int_equal(f.pid, 4242);
		assert_string_equal(f.name, "web");
		assert_int_equal(r.err_len, 0);
		run_free(&r);
	}
}

static void test_started_never_fails(void **st)
{
	(void)st;
	static const char *const ops[] = { "started", "reconnect" };
	for (size_t i = 0; i < 2; i++) {
		struct hook_opts o = opts("guaranteed", 0);
		/* daemon down */
		struct fake f = { .mode = FAKE_DOWN };
		write_pid_file("web", "4242\n");
		struct run r = run_fixture(&f, &o, "web", ops[i], "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_non_null(strstr(r.err, "cannot bind its PMU lease to pid 4242"));
		run_free(&r);
		/* no pid file */
		f = (struct fake){ .mode = FAKE_OK };
		r = run_fixture(&f, &o, "plain", ops[i], "begin", "without-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.binds, 0);
		assert_non_null(strstr(r.err, "plain.pid"));
		run_free(&r);
		/* garbage in the pid file */
		write_pid_file("web", "12ab\n");
		r = run_fixture(&f, &o, "web", ops[i], "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.binds, 0);
		assert_non_null(strstr(r.err, "not a pid"));
		run_free(&r);
		/* malformed metadata of a guaranteed VM: still exit 0 */
		write_pid_file("bad", "77\n");
		r = run_fixture(&f, &o, "bad", ops[i], "begin", "bad-gp.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.binds, 0);
		run_free(&r);
	}
}

static void test_read_pid(void **st)
{
	(void)st;
	static const struct {
		const char *content;
		int rc;
		pid_t pid;
	} cases[] = {
		{ "1\n", 0, 1 }, { "4194304", 0, 4194304 }, { "4194305\n", -EINVAL, 0 }, { "0\n", -EINVAL, 0 },
		{ "-5\n", -EINVAL, 0 }, { " 5\n", -EINVAL, 0 }, { "5\n\n", -EINVAL, 0 }, { "", -EINVAL, 0 },
	};
	char path[256];
	snprintf(path, sizeof(path), "%s/web.pid", pid_dir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid_t pid = 0;
		write_pid_file("web", cases[i].content);
		int r = hook_read_pid(path, &pid);
		if (r != cases[i].rc || (r == 0 && pid != cases[i].pid))
			fail_msg("\"%s\": rc %d pid %d", cases[i].content, r, (int)pid);
	}
	pid_t pid;
	assert_int_equal(hook_read_pid("/nonexistent/vpmu.pid", &pid), -ENOENT);
}

/* ------------------------------------------------------- stopped, release */

static void test_stop_releases(void **st)
{
	(void)st;
	static const char *const ops[] = { "stopped", "release" };
	for (size_t i = 0; i < 2; i++) {
		struct hook_opts o = opts("guaranteed", 0);
		struct fake f = { .mode = FAKE_OK };
		struct run r = run_fixture(&f, &o, "web", ops[i], "end", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.releases, 1);
		assert_string_equal(f.name, "web");
		assert_string_equal(f.uuid, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
		run_free(&r);

		f = (struct fake){ .mode = FAKE_DOWN };
		r = run_fixture(&f, &o, "web", ops[i], "end", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_non_null(strstr(r.err, "cannot release"));
		run_free(&r);

		/* unreadable XML: released by name */
		f = (struct fake){ .mode = FAKE_OK };
		r = run_fixture(&f, &o, "bad", ops[i], "end", "not-xml.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.releases, 1);
		assert_string_equal(f.name, "bad");
		assert_string_equal(f.uuid, "");
		run_free(&r);
	}
}

/* libvirt allows domain names the protocol refuses ("my vm"); the lease is
 * named after the domain, so such a VM cannot be arbitrated: a guaranteed
 * one is refused at prepare (before, vpmud's invalid_param made the hook
 * start it without its guarantee), any other starts without arbitration,
 * and no release is sent for a lease that cannot exist. */
static void test_name_the_protocol_refuses(void **st)
{
	(void)st;
	static const char xml[] =
		"<domain><name>my vm</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>"
		"<metadata><vpmu:pmu xmlns:vpmu='https://vpmu.org/xmlns/libvirt/1' class='guaranteed' gp='2'/>"
		"</metadata></domain>";
	static const char plain[] = "<domain><name>my vm</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid></domain>";
	struct hook_opts o = opts("preferred", 0);
	struct fake f = { .mode = FAKE_OK };
	struct run r = run_hook(&f, &o, "my vm", "prepare", "begin", xml, strlen(xml));

	assert_int_equal(r.rc, 1);
	assert_int_equal(f.admits, 0);
	assert_non_null(strstr(r.err, "<name>: only A-Z a-z 0-9 . _ - allowed"));
	assert_non_null(strstr(r.err, "refusing to start my vm"));
	run_free(&r);

	r = run_hook(&f, &o, "my vm", "prepare", "begin", plain, strlen(plain));
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.admits, 0);
	assert_non_null(strstr(r.err, "starting my vm without PMU arbitration"));
	run_free(&r);

	r = run_hook(&f, &o, "my vm", "stopped", "end", plain, strlen(plain));
	assert_int_equal(r.rc, 0);
	assert_int_equal(f.releases, 0);
	run_free(&r);
}

/* ------------------------------------------------------ filters, the rest */

static void test_filters_echo(void **st)
{
	(void)st;
	static const char *const ops[] = { "migrate", "restore" };
	static const char *const files[] = { "with-metadata.xml", "bad-gp.xml", "not-xml.xml" };
	for (size_t i = 0; i < 2; i++)
		for (size_t j = 0; j < 3; j++) {
			struct hook_opts o = opts("guaranteed", 0);
			struct fake f = { .mode = FAKE_REFUSE };
			size_t len;
			char *xml = fixture(files[j], &len);
			struct run r = run_hook(&f, &o, "web", ops[i], "begin", xml, len);
			assert_int_equal(r.rc, 0);
			assert_int_equal(r.out_len, len);
			assert_memory_equal(r.out, xml, len);
			assert_int_equal(f.admits + f.binds + f.releases, 0);
			free(xml);
			run_free(&r);
		}
}

static void test_other_operations(void **st)
{
	(void)st;
	static const char *const ops[] = { "start", "attach", "shutdown", "" };
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		struct hook_opts o = opts("guaranteed", 0);
		struct fake f = { .mode = FAKE_REFUSE };
		struct run r = run_fixture(&f, &o, "web", ops[i], "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_int_equal(f.admits + f.binds + f.releases, 0);
		assert_int_equal(r.out_len, 0);
		run_free(&r);
	}
}

static void test_bad_arguments(void **st)
{
	(void)st;
	struct hook_opts o = opts("guaranteed", 0);
	struct fake f = { .mode = FAKE_REFUSE };
	const struct hook_transport t = { .admit = fake_admit, .bind = fake_bind, .release = fake_release, .ctx = &f };
	char *argv[] = { "vpmu", "web", NULL };
	char *buf;
	size_t len;
	FILE *err = open_memstream(&buf, &len);
	assert_int_equal(hook_run(2, argv, "", 0, &o, &t, stdout, err), 0);
	fclose(err);
	assert_non_null(strstr(buf, "usage"));
	free(buf);

	/* a name that would escape the pid directory */
	static const char *const names[] = { "../etc/x", ".", "..", "" };
	for (size_t i = 0; i < 4; i++) {
		struct run r = run_fixture(&f, &o, names[i], "prepare", "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		assert_non_null(strstr(r.err, "invalid domain name"));
		run_free(&r);
		r = run_fixture(&f, &o, names[i], "started", "begin", "with-metadata.xml");
		assert_int_equal(r.rc, 0);
		run_free(&r);
	}
	assert_int_equal(f.admits + f.binds + f.releases, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prepare_admitted),
		cmocka_unit_test(test_prepare_refused_guaranteed),
		cmocka_unit_test(test_prepare_refused_not_guaranteed),
		cmocka_unit_test(test_prepare_guaranteed_by_default),
		cmocka_unit_test(test_prepare_fail_open),
		cmocka_unit_test(test_prepare_slow_daemon_is_bounded),
		cmocka_unit_test(test_prepare_malformed_metadata),
		cmocka_unit_test(test_pmu_off_asks_nothing),
		cmocka_unit_test(test_started_binds_pid),
		cmocka_unit_test(test_started_never_fails),
		cmocka_unit_test(test_read_pid),
		cmocka_unit_test(test_stop_releases),
		cmocka_unit_test(test_name_the_protocol_refuses),
		cmocka_unit_test(test_filters_echo),
		cmocka_unit_test(test_other_operations),
		cmocka_unit_test(test_bad_arguments),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
