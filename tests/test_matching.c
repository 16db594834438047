/* SPDX-License-Identifier: MIT */
/*
 * matching: matching_can_withdraw() must answer what matching_withdraw() does,
 * without touching the matching, on random constrained event sets and
 * partly withdrawn counters (the arbiter relies on both to agree).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "arbiter/matching.h"

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void can_withdraw_agrees_with_withdraw(void **state)
{
	(void)state;
	uint64_t s = 0x8360;
	unsigned yes = 0, no = 0;

	for (unsigned round = 0; round < 20000; round++) {
		struct match m;
		/* 8 GP and 4 fixed counters, as on Ice Lake */
		matching_init(&m, matching_counters(0xff, 0xf));
		unsigned n = 1 + (unsigned)(rnd(&s) % 12);
		for (unsigned i = 0; i < n; i++) {
			uint64_t mask = matching_counters((uint32_t)rnd(&s) & 0xff,
						       (uint32_t)rnd(&s) & 0xf);
			if (rnd(&s) % 3 == 0) /* often a narrow constraint */
				mask &= matching_counters(0x0f, 0x2);
			(void)matching_add(&m, mask ? mask : 1);
			if (rnd(&s) % 4 == 0)
				(void)matching_withdraw(&m, (unsigned)(rnd(&s) % 8));
		}
		for (unsigned c = 0; c < 64; c++) {
			struct match before = m, tried = m;
			bool can = matching_can_withdraw(&m, c);
			assert_memory_equal(&m, &before, sizeof(m));
			assert_int_equal(can, matching_withdraw(&tried, c) == 0);
			if ((m.used >> c) & 1)
				can ? yes++ : no++;
		}
	}
	/* both answers must have been exercised on held counters */
	assert_true(yes > 1000);
	assert_true(no > 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(can_withdraw_agrees_with_withdraw),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
