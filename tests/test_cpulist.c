// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cpulist.h"

static void expect_list(const char *in, unsigned int max, const char *canonical, unsigned int count)
{
	struct cpulist s;
	char buf[256];

	assert_int_equal(cpulist_parse(in, max, &s), 0);
	assert_int_equal(cpulist_count(&s), count);
	assert_int_equal(cpulist_format(&s, buf, sizeof(buf)), (int)strlen(canonical));
	assert_string_equal(buf, canonical);
}

static void test_parse_valid(void **state)
{
	(void)state;
	expect_list("0", 8, "0", 1);
	expect_list("0-3,8", 16, "0-3,8", 5);
	expect_list("8,0-3", 16, "0-3,8", 5);
	expect_list("3-3", 8, "3", 1);
	expect_list("0,1,2,5,6", 8, "0-2,5-6", 5);
	expect_list("1-2,2-3", 8, "1-3", 3);
	expect_list("4095", CPULIST_MAX_CPUS, "4095", 1);
	expect_list("0-4095", CPULIST_MAX_CPUS, "0-4095", 4096);
	expect_list("63,64", 128, "63-64", 2);
	expect_list("007", 8, "7", 1);
}

static void expect_fail(const char *in, unsigned int max, int err)
{
	struct cpulist s;

	cpulist_clear(&s);
	cpulist_set(&s, 5);
	assert_int_equal(cpulist_parse(in, max, &s), err);
	/* the output is untouched on failure */
	assert_int_equal(cpulist_count(&s), 1);
	assert_true(cpulist_test(&s, 5));
}

static void test_parse_invalid(void **state)
{
	(void)state;
	expect_fail("", 8, -EINVAL);
	expect_fail("3-1", 8, -EINVAL);
	expect_fail("a", 8, -EINVAL);
	expect_fail("1,,2", 8, -EINVAL);
	expect_fail(",1", 8, -EINVAL);
	expect_fail("1,", 8, -EINVAL);
	expect_fail("-1", 8, -EINVAL);
	expect_fail("1-", 8, -EINVAL);
	expect_fail("1--2", 8, -EINVAL);
	expect_fail("+1", 8, -EINVAL);
	expect_fail(" 1", 8, -EINVAL);
	expect_fail("1 ", 8, -EINVAL);
	expect_fail("1\n", 8, -EINVAL);
	expect_fail("0x1", 8, -EINVAL);
	expect_fail("0-7:2", 8, -EINVAL);
	expect_fail("8", 8, -ERANGE);
	expect_fail("0-8", 8, -ERANGE);
	expect_fail("99999999999999999999999", 8, -ERANGE);
	/* junk wins over range so the operator fixes the syntax first */
	expect_fail("99,a", 8, -EINVAL);
	expect_fail("0", 0, -EINVAL);
	expect_fail("0", CPULIST_MAX_CPUS + 1, -EINVAL);
	expect_fail(NULL, 8, -EINVAL);
}

static void test_bitmap_ops(void **state)
{
	struct cpulist a, b;

	(void)state;
	cpulist_clear(&a);
	assert_true(cpulist_empty(&a));
	assert_int_equal(cpulist_next(&a, -1), -1);
	assert_int_equal(cpulist_set(&a, CPULIST_MAX_CPUS), -ERANGE);
	assert_false(cpulist_test(&a, CPULIST_MAX_CPUS));
	assert_int_equal(cpulist_set(&a, 0), 0);
	assert_int_equal(cpulist_set(&a, 64), 0);
	assert_int_equal(cpulist_set(&a, 4095), 0);
	assert_int_equal(cpulist_next(&a, -1), 0);
	assert_int_equal(cpulist_next(&a, 0), 64);
	assert_int_equal(cpulist_next(&a, 64), 4095);
	assert_int_equal(cpulist_next(&a, 4095), -1);
	b = a;
	assert_true(cpulist_equal(&a, &b));
	cpulist_set(&b, 1);
	assert_false(cpulist_equal(&a, &b));
}

static void test_format_space(void **state)
{
	struct cpulist s;
	char small[4];
	char big[CPULIST_MAX_CPUS * 5 + 1];

	(void)state;
	assert_int_equal(cpulist_parse("0-3,100", 128, &s), 0);
	assert_int_equal(cpulist_format(&s, small, sizeof(small)), -ENOSPC);
	assert_string_equal(small, "");
	assert_int_equal(cpulist_format(&s, small, 0), -ENOSPC);
	cpulist_clear(&s);
	assert_int_equal(cpulist_format(&s, small, sizeof(small)), 0);
	assert_string_equal(small, "");
	/* the longest text (pairs with gaps: "0-1,3-4,...") fits 5 bytes a CPU */
	for (unsigned int c = 0; c < CPULIST_MAX_CPUS; c++)
		if (c % 3 != 2)
			cpulist_set(&s, c);
	assert_true(cpulist_format(&s, big, sizeof(big)) > 0);
}

static void test_round_trip(void **state)
{
	/* a fixed pseudo-random walk, so a failure is reproducible */
	uint32_t x = 12345;

	(void)state;
	for (int iter = 0; iter < 200; iter++) {
		struct cpulist a, b;
		static char buf[CPULIST_MAX_CPUS * 5 + 1];

		cpulist_clear(&a);
		for (int k = 0; k < 40; k++) {
			x = x * 1103515245u + 12345u;
			cpulist_set(&a, (x >> 8) % 300);
		}
		assert_true(cpulist_format(&a, buf, sizeof(buf)) > 0);
		assert_int_equal(cpulist_parse(buf, 300, &b), 0);
		assert_true(cpulist_equal(&a, &b));
	}
}

/* libvirt's cpuset attribute: exclusions and blanks, first problem named */
static void expect_libvirt(const char *in, unsigned int max, const char *canonical)
{
	struct cpulist s;
	char why[128] = "", buf[256];

	if (cpulist_parse_libvirt(in, max, &s, why, sizeof(why)) != 0)
		fail_msg("\"%s\": %s", in, why);
	assert_int_equal(cpulist_format(&s, buf, sizeof(buf)), (int)strlen(canonical));
	assert_string_equal(buf, canonical);
}

static void expect_libvirt_fail(const char *in, unsigned int max, const char *why_part)
{
	struct cpulist s;
	char why[128] = "";

	cpulist_clear(&s);
	cpulist_set(&s, 5);
	if (cpulist_parse_libvirt(in, max, &s, why, sizeof(why)) != -EINVAL)
		fail_msg("cpuset \"%s\" accepted", in);
	if (!strstr(why, why_part))
		fail_msg("cpuset \"%s\": \"%s\" does not say \"%s\"", in, why, why_part);
	assert_int_equal(cpulist_count(&s), 1);
}

static void test_parse_libvirt(void **state)
{
	(void)state;
	expect_libvirt("0-3,^2,8", 16, "0-1,3,8");
	expect_libvirt(" 0 - 3 , ^1 ,\t5 ", 16, "0,2-3,5");
	expect_libvirt("4095", 4096, "4095");
	expect_libvirt("63,0-1", 64, "0-1,63");
	expect_libvirt("^3,1", 64, "1"); /* an exclusion applies to what came before */

	expect_libvirt_fail("", 64, "empty cpuset");
	expect_libvirt_fail(" ", 64, "empty cpuset");
	expect_libvirt_fail("^1", 64, "selects no CPU");
	expect_libvirt_fail("1,^1", 64, "selects no CPU");
	expect_libvirt_fail("3-1", 64, "range 3-1 runs backwards");
	expect_libvirt_fail("^1-2", 64, "\"^\" takes a single CPU");
	expect_libvirt_fail("a", 64, "expected a CPU number at \"a\"");
	expect_libvirt_fail("1,", 64, "expected a CPU number");
	expect_libvirt_fail(",1", 64, "expected a CPU number");
	expect_libvirt_fail("1-", 64, "expected a CPU number");
	expect_libvirt_fail("-1", 64, "expected a CPU number");
	expect_libvirt_fail("+1", 64, "expected a CPU number");
	expect_libvirt_fail("1;2", 64, "unexpected \";\"");
	expect_libvirt_fail("0x1", 64, "unexpected \"x\"");
	expect_libvirt_fail("64", 64, "CPU 64 is beyond the host's 64 CPUs");
	expect_libvirt_fail("0-64", 64, "CPU 64 is beyond");
	/* the first problem is the one named, range or syntax */
	expect_libvirt_fail("99,a", 64, "CPU 99 is beyond");
	expect_libvirt_fail("99999999999999999999", 64, "CPU >");
	expect_libvirt_fail("0", 0, "out of range");
	expect_libvirt_fail("0", CPULIST_MAX_CPUS + 1, "out of range");
}

static void test_to_text(void **state)
{
	struct cpulist s;
	char *t;

	(void)state;
	cpulist_clear(&s);
	t = cpulist_to_text(&s);
	assert_non_null(t);
	assert_string_equal(t, "");
	free(t);
	/* the longest text there is: pairs with gaps ("0-1,3-4,...") */
	for (unsigned int c = 0; c < CPULIST_MAX_CPUS; c++)
		if (c % 3 != 2)
			cpulist_set(&s, c);
	t = cpulist_to_text(&s);
	assert_non_null(t);
	assert_true(strlen(t) > 12000);
	assert_int_equal(strncmp(t, "0-1,3-4,", 8), 0);
	{
		struct cpulist back;

		assert_int_equal(cpulist_parse(t, CPULIST_MAX_CPUS, &back), 0);
		assert_true(cpulist_equal(&s, &back));
	}
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid),
		cmocka_unit_test(test_bitmap_ops),
		cmocka_unit_test(test_format_space),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_parse_libvirt),
		cmocka_unit_test(test_to_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
