/* SPDX-License-Identifier: MIT */
/*
 * cpulist: the one type for a set of logical CPUs, and the one place that
 * reads and writes CPU lists as text: the kernel's cpu-list syntax
 * ("0-3,8"), which every door accepts and prints, and libvirt's cpuset
 * attribute ("0-3,^2, 8"), which the domain metadata code reads.
 */
#ifndef VPMU_CPULIST_H
#define VPMU_CPULIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Same bound as PMU_MAX_CPUS: one fixed-size bitmap keeps a cpulist
 * copyable by assignment and free of allocation failures. */
#define CPULIST_MAX_CPUS 4096u
#define CPULIST_WORDS (CPULIST_MAX_CPUS / 64u)

struct cpulist {
	uint64_t bits[CPULIST_WORDS];
};

void cpulist_clear(struct cpulist *set);
/* -ERANGE when cpu >= CPULIST_MAX_CPUS. */
int cpulist_set(struct cpulist *set, unsigned int cpu);
bool cpulist_test(const struct cpulist *set, unsigned int cpu);
unsigned int cpulist_count(const struct cpulist *set);
bool cpulist_empty(const struct cpulist *set);
bool cpulist_equal(const struct cpulist *a, const struct cpulist *b);
/* Next member strictly after 'prev' (pass -1 to start); -1 when none. */
int cpulist_next(const struct cpulist *set, int prev);

/*
 * Parse "N", "N-M" items separated by single commas into 'out'. Every CPU
 * number must be < max_cpus (max_cpus <= CPULIST_MAX_CPUS). Refuses empty
 * strings and items, reversed ranges, signs, spaces and anything else with
 * -EINVAL, numbers >= max_cpus with -ERANGE. 'out' is untouched on error.
 */
int cpulist_parse(const char *text, unsigned int max_cpus, struct cpulist *out);

/*
 * libvirt's cpuset syntax: items "N", "N-M" (N <= M) or "^N" (removes N from
 * what the items before it added), separated by commas, blanks around items
 * allowed. Every CPU must be < max_cpus and the result non-empty. -EINVAL
 * with why saying what is wrong (without naming the attribute: the caller
 * does); 'out' is untouched on error.
 */
#define CPULIST_WHY_MAX 96 /* room for any 'why' cpulist_parse_libvirt gives */
int cpulist_parse_libvirt(const char *text, unsigned int max_cpus, struct cpulist *out, char *why,
			  size_t whylen);

/*
 * Canonical text: ascending, ranges of two or more merged ("0-3,8"), ""
 * for the empty set. Returns the length written (excluding the NUL) or
 * -ENOSPC when buf is too small (buf then holds "" if len > 0).
 */
int cpulist_format(const struct cpulist *set, char *buf, size_t len);

/* The same text in a malloc'd string of its own length; NULL on ENOMEM. */
char *cpulist_to_text(const struct cpulist *set);

#endif
