/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/perf_event.h>
#include <string.h>

#include "perf/perf_event.h"

/* ctest runs us in tests/, so the fixture path is relative to it. */
static const struct perf_event_opts icl = { .sysfs_root = "fixtures/perf-sysfs/icelake" };
static const struct perf_event_opts nopmu = { .sysfs_root = "fixtures/perf-sysfs/nopmu" };

static void parse_ok(const char *spec, const struct perf_event_opts *o, struct perf_event_desc *ev)
{
	char err[256] = "";
	int rc = perf_event_parse(spec, o, ev, err, sizeof(err));
	if (rc != 0)
		fail_msg("%s: rc %d: %s", spec, rc, err);
	assert_string_equal(ev->name, spec);
}

/* Returns the error and checks the message mentions needle. */
static int parse_fail(const char *spec, const struct perf_event_opts *o, const char *needle)
{
	struct perf_event_desc ev;
	char err[256] = "";
	int rc = perf_event_parse(spec, o, &ev, err, sizeof(err));
	if (rc == 0)
		fail_msg("%s: accepted", spec);
	if (!strstr(err, needle))
		fail_msg("%s: message '%s' does not mention '%s'", spec, err, needle);
	return rc;
}

static void test_software(void **state)
{
	(void)state;
	static const struct { const char *n; uint64_t c; } t[] = {
		{ "task-clock", PERF_COUNT_SW_TASK_CLOCK },
		{ "cpu-clock", PERF_COUNT_SW_CPU_CLOCK },
		{ "context-switches", PERF_COUNT_SW_CONTEXT_SWITCHES },
		{ "cs", PERF_COUNT_SW_CONTEXT_SWITCHES },
		{ "cpu-migrations", PERF_COUNT_SW_CPU_MIGRATIONS },
		{ "page-faults", PERF_COUNT_SW_PAGE_FAULTS },
		{ "faults", PERF_COUNT_SW_PAGE_FAULTS },
		{ "minor-faults", PERF_COUNT_SW_PAGE_FAULTS_MIN },
		{ "major-faults", PERF_COUNT_SW_PAGE_FAULTS_MAJ },
		{ "alignment-faults", PERF_COUNT_SW_ALIGNMENT_FAULTS },
		{ "emulation-faults", PERF_COUNT_SW_EMULATION_FAULTS },
		{ "dummy", PERF_COUNT_SW_DUMMY },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct perf_event_desc ev;
		parse_ok(t[i].n, &icl, &ev);
		assert_int_equal(ev.type, PERF_TYPE_SOFTWARE);
		assert_int_equal(ev.config, t[i].c);
		assert_false(ev.hardware);
		assert_false(ev.has_evtsel);
	}
}

static void test_generic_hardware(void **state)
{
	(void)state;
	static const struct {
		const char *n;
		uint64_t c;
		int ev, um; /* -1: no architectural encoding */
	} t[] = {
		{ "cycles", PERF_COUNT_HW_CPU_CYCLES, 0x3c, 0 },
		{ "instructions", PERF_COUNT_HW_INSTRUCTIONS, 0xc0, 0 },
		{ "ref-cycles", PERF_COUNT_HW_REF_CPU_CYCLES, 0x00, 0x03 },
		{ "branches", PERF_COUNT_HW_BRANCH_INSTRUCTIONS, 0xc4, 0 },
		{ "branch-instructions", PERF_COUNT_HW_BRANCH_INSTRUCTIONS, 0xc4, 0 },
		{ "branch-misses", PERF_COUNT_HW_BRANCH_MISSES, 0xc5, 0 },
		{ "cache-references", PERF_COUNT_HW_CACHE_REFERENCES, 0x2e, 0x4f },
		{ "cache-misses", PERF_COUNT_HW_CACHE_MISSES, 0x2e, 0x41 },
		{ "bus-cycles", PERF_COUNT_HW_BUS_CYCLES, 0x3c, 0x01 },
		{ "stalled-cycles-frontend", PERF_COUNT_HW_STALLED_CYCLES_FRONTEND, -1, -1 },
		{ "stalled-cycles-backend", PERF_COUNT_HW_STALLED_CYCLES_BACKEND, -1, -1 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct perf_event_desc ev;
		parse_ok(t[i].n, &nopmu, &ev);
		assert_int_equal(ev.type, PERF_TYPE_HARDWARE);
		assert_int_equal(ev.config, t[i].c);
		assert_true(ev.hardware);
		if (t[i].ev < 0) {
			assert_false(ev.has_evtsel);
			continue;
		}
		assert_true(ev.has_evtsel);
		assert_int_equal(ev.evtsel_event, t[i].ev);
		assert_int_equal(ev.evtsel_umask, t[i].um);
		assert_int_equal(ev.evtsel_config, (uint64_t)t[i].um << 8 | (uint64_t)t[i].ev);
	}
}

static void test_raw(void **state)
{
	(void)state;
	struct perf_event_desc ev;
	parse_ok("r01c2", &icl, &ev);
	assert_int_equal(ev.type, 4);
	assert_int_equal(ev.config, 0x01c2);
	assert_true(ev.hardware);
	assert_int_equal(ev.evtsel_event, 0xc2);
	assert_int_equal(ev.evtsel_umask, 0x01);

	/* cmask, inv and edge bits stay in config but not in the selector. */
	parse_ok("r1d300c2", &icl, &ev);
	assert_int_equal(ev.config, 0x1d300c2);
	assert_int_equal(ev.evtsel_event, 0xc2);
	assert_int_equal(ev.evtsel_umask, 0x00);
	assert_int_equal(ev.evtsel_config, 0xc2);

	/* AMD extended event select: bits 35:32 are event 11:8. */
	parse_ok("r4000000c0", &icl, &ev);
	assert_int_equal(ev.evtsel_event, 0x4c0);
	assert_int_equal(ev.evtsel_config, 0x4000000c0ULL);

	/* No cpu PMU in sysfs: raw specs still parse, as PERF_TYPE_RAW. */
	parse_ok("rc0", &nopmu, &ev);
	assert_int_equal(ev.type, PERF_TYPE_RAW);

	assert_int_equal(parse_fail("r12345678901234567", &icl, "64 bits"), -EINVAL);
	assert_int_equal(parse_fail("r12g4", &icl, "malformed raw"), -ENOENT);
}

static void test_terms(void **state)
{
	(void)state;
	struct perf_event_desc ev;
	parse_ok("event=0xc0,umask=0x01", &icl, &ev);
	assert_int_equal(ev.type, 4);
	assert_int_equal(ev.config, 0x01c0);
	assert_int_equal(ev.evtsel_event, 0xc0);
	assert_int_equal(ev.evtsel_umask, 0x01);

	/* PERFEVTSEL: edge bit 18, inv bit 23, cmask 31:24. */
	parse_ok("umask=0x1,cmask=2,inv,edge,event=0xa3", &icl, &ev);
	assert_int_equal(ev.config, 0xa3u | 0x1u << 8 | 1u << 18 | 1u << 23 | 2u << 24);

	parse_ok("cpu/event=0x3c,umask=0x00/", &icl, &ev);
	assert_int_equal(ev.config, 0x3c);
	assert_true(ev.hardware);

	parse_ok("event=0x1c0", &icl, &ev);
	assert_int_equal(ev.config, 0x1000000c0ULL);
	assert_int_equal(ev.evtsel_event, 0x1c0);

	parse_ok("event=0xfff,umask=0xff,cmask=0xff", &icl, &ev);
	assert_int_equal(ev.evtsel_event, 0xfff);

	assert_int_equal(parse_fail("event=0x1000", &icl, "event=0x1000 is out of range"), -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,umask=0x100", &icl, "umask=0x100 is out of range"),
			 -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,cmask=256", &icl, "cmask=256 is out of range"),
			 -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,period=1000", &icl, "unknown term 'period'"), -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,event=0xc4", &icl, "duplicate term 'event'"), -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,,umask=1", &icl, "empty term"), -EINVAL);
	assert_int_equal(parse_fail("umask=0x01", &icl, "no event= term"), -EINVAL);
	assert_int_equal(parse_fail("event=", &icl, "malformed value"), -EINVAL);
	assert_int_equal(parse_fail("event=-1", &icl, "malformed value"), -EINVAL);
	assert_int_equal(parse_fail("event=0xc0,inv=2", &icl, "inv=2 is out of range"), -EINVAL);
	assert_int_equal(parse_fail("event", &icl, "unknown event 'event'"), -ENOENT);
	assert_int_equal(parse_fail("event=0xc0,umask", &icl, "needs a value"), -EINVAL);
	assert_int_equal(parse_fail("cpu/event=0xc0", &icl, "closing '/'"), -EINVAL);
	assert_int_equal(parse_fail("cpu/event=0xc0/u", &icl, "closing '/'"), -EINVAL);
	assert_int_equal(parse_fail("cpu//", &icl, "closing '/'"), -EINVAL);
}

static void test_sysfs_names(void **state)
{
	(void)state;
	struct perf_event_desc ev;
	parse_ok("slots", &icl, &ev);
	assert_int_equal(ev.type, 4);
	assert_int_equal(ev.config, 0x0400);
	assert_int_equal(ev.evtsel_event, 0x00);
	assert_int_equal(ev.evtsel_umask, 0x04);
	assert_true(ev.hardware);

	parse_ok("topdown-retiring", &icl, &ev);
	assert_int_equal(ev.config, 0x8000);

	parse_ok("cpu/cpu-cycles/", &icl, &ev);
	assert_int_equal(ev.config, 0x3c);

	/* The generic name wins over the sysfs file of the same name. */
	parse_ok("ref-cycles", &icl, &ev);
	assert_int_equal(ev.type, PERF_TYPE_HARDWARE);

	/* Real content with a term we do not handle is refused, naming it. */
	assert_int_equal(parse_fail("mem-loads", &icl, "unknown term 'ldlat'"), -EINVAL);
	assert_int_equal(parse_fail("broken-dup", &icl, "duplicate term 'event'"), -EINVAL);
	assert_int_equal(parse_fail("broken-range", &icl, "out of range"), -EINVAL);

	/* Same names on a host without a cpu PMU are unknown. */
	assert_int_equal(parse_fail("slots", &nopmu, "unknown event 'slots'"), -ENOENT);
	assert_int_equal(parse_fail("no-such-event", &icl, "unknown event 'no-such-event'"), -ENOENT);
	/* Names never escape the events directory. */
	assert_int_equal(parse_fail("cpu/../", &icl, "not a valid event name"), -EINVAL);
	assert_int_equal(parse_fail("cpu/..%2f/", &icl, "not a valid event name"), -EINVAL);
}

static void test_malformed(void **state)
{
	(void)state;
	struct perf_event_desc ev;
	char err[256];
	assert_int_equal(perf_event_parse("", &icl, &ev, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "empty event spec");
	assert_int_equal(perf_event_parse(NULL, &icl, &ev, err, sizeof(err)), -EINVAL);
	assert_int_equal(parse_fail("cycles:u", &icl, "modifiers"), -EINVAL);
	char big[300];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(parse_fail(big, &icl, "longer than"), -EINVAL);
}

static void test_attr(void **state)
{
	(void)state;
	struct perf_event_desc ev;
	struct perf_event_attr attr;
	parse_ok("event=0xc0,umask=0x01", &icl, &ev);
	memset(&attr, 0, sizeof(attr));
	perf_event_to_attr(&ev, &attr);
	assert_int_equal(attr.type, 4);
	assert_int_equal(attr.config, 0x01c0);
	assert_int_equal(attr.size, sizeof(attr));
	assert_string_equal(perf_event_pmu(&ev), "cpu");
	parse_ok("cpu-clock", &icl, &ev);
	assert_string_equal(perf_event_pmu(&ev), "cpu-clock");
	parse_ok("task-clock", &icl, &ev);
	assert_string_equal(perf_event_pmu(&ev), "task-clock");
	parse_ok("cs", &icl, &ev);
	assert_string_equal(perf_event_pmu(&ev), "software");
	parse_ok("cycles", &icl, &ev);
	assert_string_equal(perf_event_pmu(&ev), "cpu");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_software),
		cmocka_unit_test(test_generic_hardware),
		cmocka_unit_test(test_raw),
		cmocka_unit_test(test_terms),
		cmocka_unit_test(test_sysfs_names),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_attr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
