// SPDX-License-Identifier: MIT
#include "proto/cpulist.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void cpulist_clear(struct cpulist *set)
{
	memset(set, 0, sizeof(*set));
}

int cpulist_set(struct cpulist *set, unsigned int cpu)
{
	if (cpu >= CPULIST_MAX_CPUS)
		return -ERANGE;
	set->bits[cpu / 64] |= UINT64_C(1) << (cpu % 64);
	return 0;
}

bool cpulist_test(const struct cpulist *set, unsigned int cpu)
{
	if (cpu >= CPULIST_MAX_CPUS)
		return false;
	return (set->bits[cpu / 64] >> (cpu % 64)) & 1;
}

unsigned int cpulist_count(const struct cpulist *set)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < CPULIST_WORDS; i++)
		n += (unsigned int)__builtin_popcountll(set->bits[i]);
	return n;
}

bool cpulist_empty(const struct cpulist *set)
{
	for (unsigned int i = 0; i < CPULIST_WORDS; i++)
		if (set->bits[i])
			return false;
	return true;
}

bool cpulist_equal(const struct cpulist *a, const struct cpulist *b)
{
	return memcmp(a->bits, b->bits, sizeof(a->bits)) == 0;
}

int cpulist_next(const struct cpulist *set, int prev)
{
	unsigned int cpu = prev < 0 ? 0 : (unsigned int)prev + 1;

	while (cpu < CPULIST_MAX_CPUS) {
		uint64_t w = set->bits[cpu / 64] >> (cpu % 64);

		if (w)
			return (int)(cpu + (unsigned int)__builtin_ctzll(w));
		cpu = (cpu / 64 + 1) * 64;
	}
	return -1;
}

/* Digits only: strtoul would accept signs, spaces and hex prefixes that no
 * kernel interface prints, so a typo would silently mean something else. */
static int parse_number(const char **p, unsigned int max_cpus, unsigned int *out)
{
	unsigned long v = 0;
	const char *s = *p;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (unsigned long)(*s - '0');
		/* stop accumulating before overflow; the value is already out of range */
		if (v >= max_cpus) {
			while (*s >= '0' && *s <= '9')
				s++;
			*p = s;
			return -ERANGE;
		}
		s++;
	}
	*p = s;
	*out = (unsigned int)v;
	return 0;
}

int cpulist_parse(const char *text, unsigned int max_cpus, struct cpulist *out)
{
	struct cpulist set;
	const char *p = text;
	int range_err = 0;

	if (!text || !out || max_cpus == 0 || max_cpus > CPULIST_MAX_CPUS)
		return -EINVAL;
	cpulist_clear(&set);
	for (;;) {
		unsigned int lo = 0, hi;
		int r = parse_number(&p, max_cpus, &lo);

		if (r == -EINVAL)
			return r;
		/* keep checking syntax so "99999,a" reports the junk, not the range */
		if (r == -ERANGE)
			range_err = r;
		hi = lo;
		if (*p == '-') {
			p++;
			r = parse_number(&p, max_cpus, &hi);
			if (r == -EINVAL)
				return r;
			if (r == -ERANGE)
				range_err = r;
			else if (!range_err && hi < lo)
				return -EINVAL;
		}
		if (!range_err)
			for (unsigned int c = lo; c <= hi; c++)
				set.bits[c / 64] |= UINT64_C(1) << (c % 64);
		if (*p == '\0')
			break;
		if (*p != ',')
			return -EINVAL;
		p++;
	}
	if (range_err)
		return range_err;
	*out = set;
	return 0;
}

int cpulist_format(const struct cpulist *set, char *buf, size_t len)
{
	size_t used = 0;
	int cpu = cpulist_next(set, -1);

	if (!buf || len == 0)
		return -ENOSPC;
	buf[0] = '\0';
	while (cpu >= 0) {
		int end = cpu, next;
		int n;

		while ((next = cpulist_next(set, end)) == end + 1)
			end = next;
		if (end == cpu)
			n = snprintf(buf + used, len - used, "%s%d", used ? "," : "", cpu);
		else
			n = snprintf(buf + used, len - used, "%s%d-%d", used ? "," : "", cpu, end);
		if (n < 0 || (size_t)n >= len - used) {
			buf[0] = '\0';
			return -ENOSPC;
		}
		used += (size_t)n;
		cpu = next;
	}
	return (int)used;
}
