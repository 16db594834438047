// SPDX-License-Identifier: MIT
#include "proto/cpulist.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

enum syntax {
	SYNTAX_KERNEL,
	SYNTAX_LIBVIRT,
};

/* Say what is wrong, for the syntaxes that explain themselves. */
static int __attribute__((format(printf, 4, 5)))
fail(char *why, size_t whylen, int err, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return err;
}

static void skip_blanks(const char **p, enum syntax syn)
{
	while (syn == SYNTAX_LIBVIRT && (**p == ' ' || **p == '\t' || **p == '\n'))
		(*p)++;
}

/*
 * Digits only: strtoul would accept signs, spaces and hex prefixes that no
 * kernel interface prints, so a typo would silently mean something else.
 * A number too long to matter stops being accumulated (*huge), so it can
 * neither overflow nor look small.
 */
static int parse_number(const char **p, unsigned long *out, bool *huge)
{
	const char *s = *p;
	unsigned long v = 0;

	*huge = false;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > CPULIST_MAX_CPUS * 10ul)
			*huge = true;
		else
			v = v * 10 + (unsigned long)(*s - '0');
	}
	*p = s;
	*out = v;
	return 0;
}

/*
 * One CPU number below max_cpus. The kernel syntax reports a number out of
 * range only once the whole text is known to be well formed (*range_err),
 * so "99999,a" names the junk; libvirt's reports the first problem.
 */
static int parse_cpu(const char **p, unsigned int max_cpus, enum syntax syn, unsigned int *out, int *range_err,
		     char *why, size_t whylen)
{
	const char *at = *p;
	unsigned long v;
	bool huge;

	if (parse_number(p, &v, &huge) < 0)
		return fail(why, whylen, -EINVAL, "expected a CPU number at \"%.16s\"", at);
	*out = huge || v >= max_cpus ? max_cpus : (unsigned int)v;
	if (!huge && v < max_cpus)
		return 0;
	if (syn == SYNTAX_KERNEL) {
		*range_err = -ERANGE;
		return 0;
	}
	return fail(why, whylen, -EINVAL, "CPU %s%lu is beyond the host's %u CPUs", huge ? ">" : "", v, max_cpus);
}

static int parse(const char *text, unsigned int max_cpus, enum syntax syn, struct cpulist *out, char *why,
		 size_t whylen)
{
	struct cpulist set;
	const char *p = text;
	int range_err = 0, r;

	if (!text || !out || max_cpus == 0 || max_cpus > CPULIST_MAX_CPUS)
		return fail(why, whylen, -EINVAL, "CPU count %u out of range 1..%u", max_cpus, CPULIST_MAX_CPUS);
	cpulist_clear(&set);
	skip_blanks(&p, syn);
	if (!*p)
		return fail(why, whylen, -EINVAL, syn == SYNTAX_LIBVIRT ? "empty cpuset" : "empty CPU list");
	for (;;) {
		bool exclude = false;
		unsigned int lo = 0, hi = 0;

		skip_blanks(&p, syn);
		if (syn == SYNTAX_LIBVIRT && *p == '^') {
			exclude = true;
			p++;
		}
		if ((r = parse_cpu(&p, max_cpus, syn, &lo, &range_err, why, whylen)) < 0)
			return r;
		hi = lo;
		skip_blanks(&p, syn);
		if (*p == '-') {
			/* libvirt excludes single CPUs, never ranges */
			if (exclude)
				return fail(why, whylen, -EINVAL, "\"^\" takes a single CPU, not a range");
			p++;
			skip_blanks(&p, syn);
			if ((r = parse_cpu(&p, max_cpus, syn, &hi, &range_err, why, whylen)) < 0)
				return r;
			if (!range_err && hi < lo)
				return fail(why, whylen, -EINVAL, "range %u-%u runs backwards", lo, hi);
			skip_blanks(&p, syn);
		}
		for (unsigned int c = lo; !range_err && c <= hi; c++) {
			if (exclude)
				set.bits[c / 64] &= ~(UINT64_C(1) << (c % 64));
			else
				set.bits[c / 64] |= UINT64_C(1) << (c % 64);
		}
		if (*p == '\0')
			break;
		if (*p != ',')
			return fail(why, whylen, -EINVAL, "unexpected \"%c\"", *p);
		p++;
	}
	if (range_err)
		return fail(why, whylen, range_err, "CPU numbers must be below %u", max_cpus);
	if (cpulist_empty(&set))
		return fail(why, whylen, -EINVAL, "selects no CPU");
	*out = set;
	return 0;
}

int cpulist_parse(const char *text, unsigned int max_cpus, struct cpulist *out)
{
	return parse(text, max_cpus, SYNTAX_KERNEL, out, NULL, 0);
}

int cpulist_parse_libvirt(const char *text, unsigned int max_cpus, struct cpulist *out, char *why,
			  size_t whylen)
{
	return parse(text, max_cpus, SYNTAX_LIBVIRT, out, why, whylen);
}

/* Writes what fits of the canonical text into buf (len may be 0) and
 * returns its whole length, as snprintf does. */
static size_t format_to(const struct cpulist *set, char *buf, size_t len)
{
	size_t used = 0;
	int cpu = cpulist_next(set, -1);

	if (len)
		buf[0] = '\0';
	while (cpu >= 0) {
		int end = cpu, next, n;

		while ((next = cpulist_next(set, end)) == end + 1)
			end = next;
		if (end == cpu)
			n = snprintf(buf ? buf + (used < len ? used : len) : NULL, used < len ? len - used : 0,
				     "%s%d", used ? "," : "", cpu);
		else
			n = snprintf(buf ? buf + (used < len ? used : len) : NULL, used < len ? len - used : 0,
				     "%s%d-%d", used ? "," : "", cpu, end);
		used += n < 0 ? 0 : (size_t)n;
		cpu = next;
	}
	return used;
}

int cpulist_format(const struct cpulist *set, char *buf, size_t len)
{
	size_t n;

	if (!buf || len == 0)
		return -ENOSPC;
	n = format_to(set, buf, len);
	if (n >= len) {
		buf[0] = '\0';
		return -ENOSPC;
	}
	return (int)n;
}

char *cpulist_to_text(const struct cpulist *set)
{
	size_t n = format_to(set, NULL, 0);
	char *s = malloc(n + 1);

	if (s)
		format_to(set, s, n + 1);
	return s;
}
