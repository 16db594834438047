/* SPDX-License-Identifier: MIT */
#include "arbiter/matching.h"

#include <errno.h>
#include <string.h>

void matching_init(struct match *m, uint64_t avail)
{
	m->avail = avail;
	m->used = 0;
	memset(m->owner, -1, sizeof(m->owner));
	m->n = 0;
	m->n_failed = 0;
}

/* Kuhn's augmenting path from slot; visited holds counters already tried in
 * this search so that each counter is explored once (O(counters^2)). */
static bool augment(struct match *m, unsigned slot, uint64_t *visited)
{
	uint64_t cand = m->mask[slot] & m->avail & ~*visited;
	uint64_t free_c = cand & ~m->used;

	/* A free counter ends the path at once. Fixed counters first, as perf
	 * does: they count one event only, and general ones are what guests
	 * ask for. Lowest index keeps the result a function of the calls. */
	if (free_c) {
		uint64_t fixed = free_c & ~0xffffffffULL;
		unsigned c = (unsigned)__builtin_ctzll(fixed ? fixed : free_c);
		m->owner[c] = (int8_t)slot;
		m->at[slot] = (int8_t)c;
		m->used |= 1ULL << c;
		return true;
	}
	while (cand) {
		unsigned c = (unsigned)__builtin_ctzll(cand);
		cand &= cand - 1;
		if (*visited & (1ULL << c))
			continue; /* reached meanwhile by a deeper search */
		*visited |= 1ULL << c;
		if (augment(m, (unsigned)m->owner[c], visited)) {
			m->owner[c] = (int8_t)slot;
			m->at[slot] = (int8_t)c;
			return true;
		}
	}
	return false;
}

int matching_add(struct match *m, uint64_t mask)
{
	if (m->n >= MATCHING_MAX_SLOTS)
		return -ENOSPC;
	for (unsigned i = 0; i < m->n_failed; i++)
		if ((mask & ~m->failed[i]) == 0)
			return -ENOSPC;
	unsigned slot = m->n;
	uint64_t visited = 0;
	m->mask[slot] = mask;
	if (!augment(m, slot, &visited)) {
		/* The cache only short-cuts searches that would fail anyway, so
		 * dropping failures once it is full changes no result. */
		if (m->n_failed < MATCHING_FAIL_CACHE)
			m->failed[m->n_failed++] = mask;
		return -ENOSPC;
	}
	m->n++;
	return (int)slot;
}

int matching_withdraw(struct match *m, unsigned counter)
{
	uint64_t bit = 1ULL << counter;

	if (!(m->avail & bit))
		return 0;
	if (!(m->used & bit)) {
		m->avail &= ~bit;
		return 0;
	}
	unsigned slot = (unsigned)m->owner[counter];
	uint64_t visited = 0;
	m->avail &= ~bit;
	m->used &= ~bit;
	m->owner[counter] = -1;
	/* A failed search moves nothing, so restoring these three is enough. */
	if (!augment(m, slot, &visited)) {
		m->avail |= bit;
		m->used |= bit;
		m->owner[counter] = (int8_t)slot;
		return -EBUSY;
	}
	return 0;
}

/* The search augment() would make after withdrawing a counter, read-only:
 * avail already lacks that counter, so no path ends on or passes it. It
 * visits counters in augment()'s order and finds a path exactly when
 * augment() would, but writes nothing, so the caller needs no copy. */
static bool reachable(const struct match *m, uint64_t mask, uint64_t avail, uint64_t *visited)
{
	uint64_t cand = mask & avail & ~*visited;

	if (cand & ~m->used)
		return true;
	while (cand) {
		unsigned c = (unsigned)__builtin_ctzll(cand);
		cand &= cand - 1;
		if (*visited & (1ULL << c))
			continue;
		*visited |= 1ULL << c;
		if (reachable(m, m->mask[(unsigned)m->owner[c]], avail, visited))
			return true;
	}
	return false;
}

bool matching_can_withdraw(const struct match *m, unsigned counter)
{
	uint64_t bit = 1ULL << counter;

	if (!(m->avail & bit) || !(m->used & bit))
		return true;
	uint64_t visited = 0;
	return reachable(m, m->mask[(unsigned)m->owner[counter]], m->avail & ~bit, &visited);
}

/* An augmenting path for a new event exists exactly when all placed events
 * and it have an assignment (Berge); `more` holds no event, so its counters
 * are free ends of such a path. The failure cache is not consulted: it was
 * learnt without `more`. */
bool matching_fits_with(const struct match *m, uint64_t more, uint64_t mask)
{
	if (m->n >= MATCHING_MAX_SLOTS)
		return false;
	uint64_t visited = 0;
	return reachable(m, mask, m->avail | (more & ~m->used), &visited);
}
