/* SPDX-License-Identifier: MIT */
/*
 * matching: exact placement of events onto counters (bipartite matching).
 *
 * Counters are bits of a 64-bit mask: bit i < 32 is general PMC i, bit 32 + j
 * is fixed counter j (the PERF_GLOBAL_CTRL layout). An event may go to any
 * counter in its mask. matching_add() places an event whenever the events
 * already placed plus the new one have an assignment at all (augmenting
 * paths), which a greedy first-fit pass does not guarantee.
 *
 * Pure: no allocation, no I/O. The struct is plain data and may be copied.
 */
#ifndef VPMU_MATCHING_H
#define VPMU_MATCHING_H

#include <stdbool.h>
#include <stdint.h>

#define MATCHING_MAX_SLOTS 48      /* 32 general + 16 fixed: one event per counter */
#define MATCHING_FAIL_CACHE 8

#define MATCHING_FIXED_SHIFT 32
static inline uint64_t matching_counters(uint32_t gp_mask, uint32_t fixed_mask)
{
	return (uint64_t)gp_mask | ((uint64_t)fixed_mask << MATCHING_FIXED_SHIFT);
}

struct match {
	uint64_t avail;                 /* counters events may be placed on */
	uint64_t used;                  /* counters holding an event */
	int8_t owner[64];               /* counter -> slot, -1 when free */
	int8_t at[MATCHING_MAX_SLOTS];     /* slot -> counter */
	uint64_t mask[MATCHING_MAX_SLOTS]; /* slot -> allowed counters */
	unsigned n;                     /* slots in use */
	/* Masks that failed to place. By Hall's theorem an event whose mask is
	 * a subset of one of these can never be placed either, because events
	 * are only added and counters only withdrawn. */
	uint64_t failed[MATCHING_FAIL_CACHE];
	unsigned n_failed;
};

void matching_init(struct match *m, uint64_t avail);

/* Places an event allowed on mask. Returns its slot (>= 0), or -ENOSPC when
 * no assignment of all placed events plus this one exists; then nothing
 * changed. Events already placed may move to other counters. */
int matching_add(struct match *m, uint64_t mask);

/* Takes counter bit `counter` out of avail, moving its event elsewhere.
 * Returns 0, or -EBUSY when the placed events cannot all be kept without
 * it; then nothing changed. */
int matching_withdraw(struct match *m, unsigned counter);

/* Whether matching_withdraw() would succeed, without changing m. */
bool matching_can_withdraw(const struct match *m, unsigned counter);

/* Whether matching_add(mask) would succeed if the counters in `more`, which
 * hold no event (withdrawn ones), were available again; m is not changed.
 * The arbiter asks it to tell an event that counters kept for guests keep
 * from a counter from one that would not fit anyway. */
bool matching_fits_with(const struct match *m, uint64_t more, uint64_t mask);

#endif
