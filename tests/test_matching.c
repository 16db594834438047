/* SPDX-License-Identifier: MIT */
/*
 * matching: matching_can_withdraw() must answer what matching_withdraw() does,
 * without touching the matching, on random constrained event sets and
 * partly withdrawn counters (the arbiter relies on both to agree); and
 * matching_fits_with() what matching_add() does once withdrawn counters are
 * available again, checked against Hall's condition.
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

/* Hall's condition over every subset of the events: the independent oracle. */
static bool hall(const uint64_t *mask, unsigned n, uint64_t avail)
{
	for (unsigned set = 1; set < (1u << n); set++) {
		uint64_t nb = 0;
		for (unsigned i = 0; i < n; i++)
			if (set & (1u << i))
				nb |= mask[i] & avail;
		if (__builtin_popcountll(nb) < __builtin_popcount(set))
			return false;
	}
	return true;
}

static void fits_with_agrees_with_hall(void **state)
{
	(void)state;
	uint64_t s = 0x1c3;
	const uint64_t all = matching_counters(0xff, 0xf);
	unsigned yes = 0, only_with_more = 0;

	for (unsigned round = 0; round < 5000; round++) {
		struct match m;
		matching_init(&m, all);
		/* Withdraw some counters first (room kept for guests), then
		 * place what fits on the rest. */
		for (unsigned c = 0; c < 8; c++)
			if (rnd(&s) % 3 == 0)
				(void)matching_withdraw(&m, c);
		if (rnd(&s) % 2)
			(void)matching_withdraw(&m, 32 + (unsigned)(rnd(&s) % 4));
		unsigned n = (unsigned)(rnd(&s) % 9);
		for (unsigned i = 0; i < n; i++) {
			uint64_t mask = matching_counters((uint32_t)rnd(&s) & 0xff,
						       (uint32_t)rnd(&s) & 0xf);
			if (rnd(&s) % 3 == 0)
				mask &= matching_counters(0x0f, 0x2);
			(void)matching_add(&m, mask ? mask : 1);
		}
		uint64_t withdrawn = all & ~m.avail;
		uint64_t more = withdrawn & rnd(&s);
		uint64_t mask = matching_counters((uint32_t)rnd(&s) & 0xff, (uint32_t)rnd(&s) & 0x3);
		if (rnd(&s) % 2)
			mask &= matching_counters(0x0f, 0);
		if (!mask)
			mask = 1;

		struct match before = m;
		bool fits = matching_fits_with(&m, more, mask);
		assert_memory_equal(&m, &before, sizeof(m));
		uint64_t masks[MATCHING_MAX_SLOTS + 1];
		memcpy(masks, m.mask, m.n * sizeof(*masks));
		masks[m.n] = mask;
		assert_int_equal(fits, hall(masks, m.n + 1, m.avail | more));
		yes += fits;
		only_with_more += fits && !hall(masks, m.n + 1, m.avail);
	}
	assert_true(yes > 500);
	assert_true(only_with_more > 200);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(can_withdraw_agrees_with_withdraw),
		cmocka_unit_test(fits_with_agrees_with_hall),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
