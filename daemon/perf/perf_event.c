/* SPDX-License-Identifier: MIT */
#include "perf/perf_event.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/perf_event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cleanup.h"

#define SYSFS_CPU_PMU "bus/event_source/devices/cpu"

struct named_event {
	const char *name;
	uint64_t config;
	/* PERFEVTSEL encoding the kernel's Intel event map uses; -1 when it is
	 * model-specific and therefore not knowable from the name alone. */
	int32_t evtsel;
};

static const struct named_event software_events[] = {
	{ "cpu-clock", PERF_COUNT_SW_CPU_CLOCK, -1 },
	{ "task-clock", PERF_COUNT_SW_TASK_CLOCK, -1 },
	{ "page-faults", PERF_COUNT_SW_PAGE_FAULTS, -1 },
	{ "faults", PERF_COUNT_SW_PAGE_FAULTS, -1 },
	{ "context-switches", PERF_COUNT_SW_CONTEXT_SWITCHES, -1 },
	{ "cs", PERF_COUNT_SW_CONTEXT_SWITCHES, -1 },
	{ "cpu-migrations", PERF_COUNT_SW_CPU_MIGRATIONS, -1 },
	{ "migrations", PERF_COUNT_SW_CPU_MIGRATIONS, -1 },
	{ "minor-faults", PERF_COUNT_SW_PAGE_FAULTS_MIN, -1 },
	{ "major-faults", PERF_COUNT_SW_PAGE_FAULTS_MAJ, -1 },
	{ "alignment-faults", PERF_COUNT_SW_ALIGNMENT_FAULTS, -1 },
	{ "emulation-faults", PERF_COUNT_SW_EMULATION_FAULTS, -1 },
	{ "dummy", PERF_COUNT_SW_DUMMY, -1 },
};

/* Encodings from intel_perfmon_event_map (arch/x86/events/intel/core.c):
 * the architectural events, plus ref-cycles' pseudo-encoding for fixed
 * counter 2. The stalled-cycles events are filled in per model there. */
static const struct named_event hardware_events[] = {
	{ "cycles", PERF_COUNT_HW_CPU_CYCLES, 0x003c },
	{ "cpu-cycles", PERF_COUNT_HW_CPU_CYCLES, 0x003c },
	{ "instructions", PERF_COUNT_HW_INSTRUCTIONS, 0x00c0 },
	{ "ref-cycles", PERF_COUNT_HW_REF_CPU_CYCLES, 0x0300 },
	{ "branches", PERF_COUNT_HW_BRANCH_INSTRUCTIONS, 0x00c4 },
	{ "branch-instructions", PERF_COUNT_HW_BRANCH_INSTRUCTIONS, 0x00c4 },
	{ "branch-misses", PERF_COUNT_HW_BRANCH_MISSES, 0x00c5 },
	{ "cache-references", PERF_COUNT_HW_CACHE_REFERENCES, 0x4f2e },
	{ "cache-misses", PERF_COUNT_HW_CACHE_MISSES, 0x412e },
	{ "bus-cycles", PERF_COUNT_HW_BUS_CYCLES, 0x013c },
	{ "stalled-cycles-frontend", PERF_COUNT_HW_STALLED_CYCLES_FRONTEND, -1 },
	{ "stalled-cycles-backend", PERF_COUNT_HW_STALLED_CYCLES_BACKEND, -1 },
};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct named_event *lookup(const struct named_event *tab, size_t n,
					const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tab[i].name, name) == 0)
			return &tab[i];
	return NULL;
}

static void set_evtsel(struct perf_event_desc *out, uint16_t event, uint8_t umask)
{
	out->has_evtsel = true;
	out->evtsel_event = event;
	out->evtsel_umask = umask;
	out->evtsel_config = (uint64_t)(event & 0xff) | (uint64_t)umask << 8 |
			     (uint64_t)(event >> 8) << 32;
}

/* The cpu PMU's sysfs file rel (".../cpu/" + rel) under the options'
 * root, in a malloc'd string; NULL on ENOMEM. */
static char *cpu_pmu_path(const struct perf_event_opts *opts, const char *rel)
{
	const char *root = opts && opts->sysfs_root ? opts->sysfs_root : "/";

	return alloc_printf("%s/" SYSFS_CPU_PMU "/%s", root, rel);
}

/* Reads a small sysfs file into buf, without its trailing newline;
 * -EFBIG when it does not fit (a cut event encoding would mean another). */
static int read_small_file(const char *path, char *buf, size_t len)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t n = fread(buf, 1, len - 1, f);
	if (ferror(f))
		return -EIO;
	if (n == len - 1 && fgetc(f) != EOF)
		return -EFBIG;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

/* The cpu PMU's dynamic type; on x86 the kernel registers it as
 * PERF_TYPE_RAW, which is also what raw specs use when sysfs has no cpu PMU
 * (the open then fails and says so). */
static uint32_t cpu_pmu_type(const struct perf_event_opts *opts)
{
	_cleanup_free_ char *path = cpu_pmu_path(opts, "type");
	char buf[32]; /* a decimal 32-bit number */
	if (!path || read_small_file(path, buf, sizeof(buf)) < 0)
		return PERF_TYPE_RAW;
	char *end;
	errno = 0;
	unsigned long v = strtoul(buf, &end, 10);
	if (errno || end == buf || *end || v > UINT32_MAX)
		return PERF_TYPE_RAW;
	return (uint32_t)v;
}

static int parse_u64(const char *s, uint64_t *v)
{
	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 0);
	if (errno || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

enum term_bit { T_EVENT = 1, T_UMASK = 2, T_CMASK = 4, T_INV = 8, T_EDGE = 16 };

/*
 * Parses "event=0x..,umask=0x..,cmask=..,inv,edge" (terms in any order) into
 * a PERFEVTSEL-layout config. what names the origin for messages (the spec,
 * or the sysfs file the terms came from).
 */
static int parse_terms(const char *terms, const char *what, struct perf_event_desc *out,
		       char *err, size_t errlen)
{
	char buf[PERF_EVENT_NAME_LEN * 2];
	if (strlen(terms) >= sizeof(buf)) {
		snprintf(err, errlen, "%s: term list too long", what);
		return -EINVAL;
	}
	if (!*terms) {
		snprintf(err, errlen, "%s: empty term list", what);
		return -EINVAL;
	}
	strcpy(buf, terms);

	unsigned seen = 0;
	uint64_t event = 0, umask = 0, cmask = 0, inv = 0, edge = 0;
	char *save = NULL;
	/* strtok_r would merge empty terms ("a,,b"); walk by hand to refuse them. */
	for (char *t = buf; t; t = save) {
		char *comma = strchr(t, ',');
		save = comma ? comma + 1 : NULL;
		if (comma)
			*comma = '\0';
		if (!*t) {
			snprintf(err, errlen, "%s: empty term", what);
			return -EINVAL;
		}
		char *eq = strchr(t, '=');
		const char *val = NULL;
		if (eq) {
			*eq = '\0';
			val = eq + 1;
		}
		unsigned bit;
		uint64_t *dst, max;
		if (strcmp(t, "event") == 0) {
			bit = T_EVENT; dst = &event; max = PERF_EVENT_EVENT_MAX;
		} else if (strcmp(t, "umask") == 0) {
			bit = T_UMASK; dst = &umask; max = PERF_EVENT_UMASK_MAX;
		} else if (strcmp(t, "cmask") == 0) {
			bit = T_CMASK; dst = &cmask; max = PERF_EVENT_CMASK_MAX;
		} else if (strcmp(t, "inv") == 0) {
			bit = T_INV; dst = &inv; max = 1;
		} else if (strcmp(t, "edge") == 0) {
			bit = T_EDGE; dst = &edge; max = 1;
		} else {
			snprintf(err, errlen, "%s: unknown term '%s' (known: event, umask, cmask, inv, edge)",
				 what, t);
			return -EINVAL;
		}
		if (seen & bit) {
			snprintf(err, errlen, "%s: duplicate term '%s'", what, t);
			return -EINVAL;
		}
		seen |= bit;
		if (!val) {
			/* Only flags may stand alone: a bare "event" carries no value. */
			if (max != 1) {
				snprintf(err, errlen, "%s: term '%s' needs a value", what, t);
				return -EINVAL;
			}
			*dst = 1;
			continue;
		}
		uint64_t v;
		if (parse_u64(val, &v) < 0) {
			snprintf(err, errlen, "%s: term '%s' has a malformed value '%s'", what, t, val);
			return -EINVAL;
		}
		if (v > max) {
			snprintf(err, errlen, "%s: %s=%s is out of range (max 0x%" PRIx64 ")", what, t,
				 val, max);
			return -EINVAL;
		}
		*dst = v;
	}
	if (!(seen & T_EVENT)) {
		snprintf(err, errlen, "%s: no event= term", what);
		return -EINVAL;
	}
	set_evtsel(out, (uint16_t)event, (uint8_t)umask);
	out->config = out->evtsel_config | edge << 18 | inv << 23 | cmask << 24;
	out->hardware = true;
	return 0;
}

/* A sysfs event name becomes a path component: keep it to one. */
static bool valid_sysfs_name(const char *name)
{
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	return true;
}

static int parse_sysfs_name(const char *name, const struct perf_event_opts *opts,
			    struct perf_event_desc *out, char *err, size_t errlen)
{
	if (!valid_sysfs_name(name)) {
		snprintf(err, errlen, "'%s': not a valid event name", name);
		return -EINVAL;
	}
	/* "event=0x..,umask=0x..": as long as a spec's terms may be */
	char content[PERF_EVENT_NAME_LEN * 2];
	_cleanup_free_ char *rel = NULL, *path = NULL;
	if (!(rel = alloc_printf("events/%s", name)) || !(path = cpu_pmu_path(opts, rel))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = read_small_file(path, content, sizeof(content));
	if (rc == -EFBIG) {
		snprintf(err, errlen, "%s: longer than an event encoding can be", path);
		return -EINVAL;
	}
	if (rc < 0) {
		snprintf(err, errlen,
			 "unknown event '%s' (not a software or generic name, not rNNNN, not in %s)",
			 name, path);
		return -ENOENT;
	}
	rc = parse_terms(content, path, out, err, errlen);
	if (rc < 0)
		return rc;
	out->type = cpu_pmu_type(opts);
	return 0;
}

static int parse_raw(const char *hex, const struct perf_event_opts *opts, struct perf_event_desc *out,
		     char *err, size_t errlen, const char *spec)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(hex, &end, 16);
	if (errno == ERANGE) {
		snprintf(err, errlen, "'%s': raw encoding wider than 64 bits", spec);
		return -EINVAL;
	}
	if (errno || *end) {
		snprintf(err, errlen, "'%s': malformed raw encoding", spec);
		return -EINVAL;
	}
	out->type = cpu_pmu_type(opts);
	out->config = v;
	out->hardware = true;
	set_evtsel(out, (uint16_t)((v & 0xff) | ((v >> 32) & 0xf) << 8), (uint8_t)(v >> 8));
	return 0;
}

static bool all_hex(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return false;
	return true;
}

int perf_event_parse(const char *spec, const struct perf_event_opts *opts, struct perf_event_desc *out,
	      char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!spec || !*spec) {
		snprintf(err, errlen, "empty event spec");
		return -EINVAL;
	}
	if (strlen(spec) >= sizeof(out->name)) {
		snprintf(err, errlen, "event spec longer than %zu characters", sizeof(out->name) - 1);
		return -EINVAL;
	}
	strcpy(out->name, spec);

	const struct named_event *ne = lookup(software_events, N_ELEMS(software_events), spec);
	if (ne) {
		out->type = PERF_TYPE_SOFTWARE;
		out->config = ne->config;
		return 0;
	}
	ne = lookup(hardware_events, N_ELEMS(hardware_events), spec);
	if (ne) {
		out->type = PERF_TYPE_HARDWARE;
		out->config = ne->config;
		out->hardware = true;
		if (ne->evtsel >= 0)
			set_evtsel(out, (uint16_t)(ne->evtsel & 0xff), (uint8_t)(ne->evtsel >> 8));
		return 0;
	}

	size_t len = strlen(spec);
	if (strncmp(spec, "cpu/", 4) == 0) {
		if (len < 6 || spec[len - 1] != '/') {
			snprintf(err, errlen, "'%s': cpu/.../ form needs a closing '/' and a body", spec);
			return -EINVAL;
		}
		char body[PERF_EVENT_NAME_LEN];
		memcpy(body, spec + 4, len - 5);
		body[len - 5] = '\0';
		if (strchr(body, '/')) {
			snprintf(err, errlen, "'%s': modifiers after cpu/.../ are not supported", spec);
			return -EINVAL;
		}
		if (!strchr(body, '=') && !strchr(body, ','))
			return parse_sysfs_name(body, opts, out, err, errlen);
		int rc = parse_terms(body, spec, out, err, errlen);
		if (rc < 0)
			return rc;
		out->type = cpu_pmu_type(opts);
		return 0;
	}
	if (strchr(spec, ':')) {
		snprintf(err, errlen, "'%s': event modifiers (':u', ':k', ...) are not supported", spec);
		return -EINVAL;
	}
	if (strchr(spec, '=')) {
		int rc = parse_terms(spec, spec, out, err, errlen);
		if (rc < 0)
			return rc;
		out->type = cpu_pmu_type(opts);
		return 0;
	}
	if (spec[0] == 'r' && all_hex(spec + 1))
		return parse_raw(spec + 1, opts, out, err, errlen, spec);
	if (spec[0] == 'r' && len > 1 && isxdigit((unsigned char)spec[1]) &&
	    !strchr(spec, '-')) {
		/* "r12g4" looks like raw with a typo more than like a name; but a
		 * sysfs name may legitimately start with r + hex, so fall through
		 * only after the sysfs lookup fails. */
		int rc = parse_sysfs_name(spec, opts, out, err, errlen);
		if (rc == -ENOENT)
			snprintf(err, errlen, "'%s': malformed raw encoding (rNNNN, hex) and no such sysfs event",
				 spec);
		return rc;
	}
	return parse_sysfs_name(spec, opts, out, err, errlen);
}

void perf_event_to_attr(const struct perf_event_desc *ev, struct perf_event_attr *attr)
{
	attr->size = sizeof(*attr);
	attr->type = ev->type;
	attr->config = ev->config;
}

const char *perf_event_pmu(const struct perf_event_desc *ev)
{
	if (ev->hardware)
		return "cpu";
	if (ev->config == PERF_COUNT_SW_CPU_CLOCK)
		return "cpu-clock";
	if (ev->config == PERF_COUNT_SW_TASK_CLOCK)
		return "task-clock";
	return "software";
}
