/* SPDX-License-Identifier: MIT */
/*
 * perf_event: turns one event spec, as a host session names it, into what
 * perf_event_open needs (type, config) plus the PERFEVTSEL event select and
 * unit mask the arbiter needs to look up counter constraints.
 *
 * Accepted forms, tried in this order:
 *   software names   task-clock, cpu-clock, context-switches|cs, ...
 *   generic names    cycles, instructions, ref-cycles, branches, ...
 *   term lists       event=0xc0,umask=0x01,cmask=1,inv,edge
 *                    cpu/event=0xc0,umask=0x01/   cpu/<sysfs name>/
 *   raw              rNNNN (hex, PERFEVTSEL layout)
 *   sysfs names      <root>/bus/event_source/devices/cpu/events/<name>
 * Modifiers (":u", ":k", ...) are refused rather than silently ignored.
 */
#ifndef VPMU_PERF_EVENT_H
#define VPMU_PERF_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct perf_event_attr;

#define PERF_EVENT_NAME_LEN 128

/* Bounds of the PERFEVTSEL fields a spec may set: 12-bit event select
 * (AMD's bits 35:32 included), 8-bit unit mask and counter mask. */
#define PERF_EVENT_EVENT_MAX 0xfffu
#define PERF_EVENT_UMASK_MAX 0xffu
#define PERF_EVENT_CMASK_MAX 0xffu

struct perf_event_desc {
	char name[PERF_EVENT_NAME_LEN];  /* the spec as given, for messages and reports */
	uint32_t type;            /* perf_event_attr.type */
	uint64_t config;          /* perf_event_attr.config */
	bool hardware;            /* needs a core PMU counter (false: software) */

	/* PERFEVTSEL view, for pmu_event_counters(). has_evtsel is false for
	 * software events and for generic names without one architectural
	 * encoding (stalled-cycles-*: the kernel picks a model-specific one). */
	bool has_evtsel;
	uint16_t evtsel_event;    /* 12 bits: 7:0 plus AMD 11:8 */
	uint8_t evtsel_umask;
	uint64_t evtsel_config;   /* event | umask << 8 | (event >> 8) << 32 */
};

struct perf_event_opts {
	/* Root under which bus/event_source/devices/cpu lives; NULL or "/"
	 * means the host. Fixture tests pass their own tree. */
	const char *sysfs_root;
};

/*
 * Parses spec into out. Returns 0, or a negative errno with a message in err
 * that names the problem: -ENOENT unknown name, -EINVAL malformed spec or an
 * encoding outside the field bounds (unknown/duplicate term, empty spec).
 */
int perf_event_parse(const char *spec, const struct perf_event_opts *opts, struct perf_event_desc *out,
	      char *err, size_t errlen);

/*
 * Which kernel PMU counts the event: the core PMU ("cpu") for hardware
 * events, and for software events one of three separate PMUs, "cpu-clock",
 * "task-clock" (hrtimer-driven) and "software" (all the others). The kernel
 * does not schedule a sibling from another of these software PMUs with its
 * group (measured on 6.18: it reads time_running 0 CPU-wide), so a session
 * groups only events of one PMU.
 */
const char *perf_event_pmu(const struct perf_event_desc *ev);

/* Fills the type/config/size fields of attr (the rest is left zeroed for the
 * caller's scheduling and read-format choices). */
void perf_event_to_attr(const struct perf_event_desc *ev, struct perf_event_attr *attr);

#endif
