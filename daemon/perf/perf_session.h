/* SPDX-License-Identifier: MIT */
/*
 * perf_session: the counting engine behind a host profiling session. A
 * session is a list of parsed events counted on a CPU list (system-wide per
 * CPU) or on one task, opened with libperf. The broker decides each event's
 * placement; this module only carries it out:
 *   dedicated   -> the event (or its group leader) is opened pinned: it owns
 *                  a counter whenever its context runs, or reads as an error
 *   multiplexed -> flexible: perf rotates it with other flexible groups.
 * Events sharing a non-zero group id (and therefore a placement) are opened
 * as one kernel group and read with one read(2) of PERF_FORMAT_GROUP.
 *
 * Values are cumulative since perf_session_open(), across placement changes.
 * Nothing here talks to sockets; errors carry a message in perf_session_error().
 */
#ifndef VPMU_PERF_SESSION_H
#define VPMU_PERF_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "perf/perf_event.h"
#include "proto/cpulist.h"

struct psess;
struct perf_event_attr;

/* Opens one event as perf_event_open(2) does: an fd, or -1 with errno
 * set. The default is perf_session_sys_open; tests put their own in the
 * options to see the attributes a session passes. */
typedef int (*perf_session_open_fn)(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
				    unsigned long flags);
int perf_session_sys_open(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
			  unsigned long flags);

enum perf_session_placement {
	PERF_SESSION_DEDICATED = 1,   /* pinned */
	PERF_SESSION_MULTIPLEXED = 2, /* flexible */
};

struct perf_session_opts {
	/* Exactly one target: cpus (non-empty; counts every task on those
	 * CPUs) or pid > 0 (counts that task on any CPU). Not kept. */
	const struct cpulist *cpus;
	pid_t pid;
	bool inherit;      /* pid mode: also count children created after open */
	/* The PMU is simulated (pmu_desc.source is BUILTIN or FILE): hardware
	 * events are not opened and read as not counted. */
	bool model_pmu;
	/* Root of sysfs ("/" when NULL), consulted only to word the error of
	 * a hardware event that fails to open: no cpu PMU at all, or one that
	 * lacks the event. */
	const char *sysfs_root;
	/* Hardware (core-PMU) events count host time only: each is opened
	 * with attr.exclude_guest set, on every CPU. Under the mediated vPMU
	 * the kernel refuses any other core-PMU event while a mediated VM
	 * exists, and an existing one stops every new VM's first vCPU.
	 * Software events are left alone: no such rule covers them, and perf
	 * keeps counting guest time for them whatever the bit says. */
	bool exclude_guest;
	/* NULL: perf_session_sys_open. */
	perf_session_open_fn open;
	void *open_ctx;
};

enum perf_session_status {
	PERF_SESSION_COUNTED = 1,
	PERF_SESSION_NOT_COUNTED = 2, /* value fields are zero and mean nothing */
};

struct perf_session_reading {
	enum perf_session_status status;
	const char *reason;      /* why not counted (static string), else NULL */
	enum perf_session_placement placement;
	unsigned group;          /* 0: read alone */
	/* Sums over the session's CPUs (CPU mode) or the task (pid mode),
	 * cumulative over every placement the event had. */
	uint64_t value;          /* raw count */
	uint64_t time_enabled;   /* ns the event was enabled */
	uint64_t time_running;   /* ns it occupied a counter */
	double scaled;           /* value * enabled / running; 0 if never ran */
	bool multiplexed;        /* running < enabled: scaled is an estimate */
	bool never_ran;          /* running == 0 while enabled: value says nothing */
};

#define PERF_SESSION_REASON_MODEL_PMU "model PMU: nothing counted"
/* A pinned event that cannot get a counter enters error state and read(2)
 * returns 0 bytes for it until re-enabled. */
#define PERF_SESSION_REASON_PIN_FAILED \
	"dedicated counter unavailable: the pinned event is in error state"
#define PERF_SESSION_REASON_REOPEN_FAILED "closed: reopening after a placement change failed"

/* Creates an empty session. -EINVAL (message in err) for a bad target. */
int perf_session_create(const struct perf_session_opts *opts, struct psess **out, char *err, size_t errlen);
/* Frees the session, closing whatever is open. NULL is fine. */
void perf_session_destroy(struct psess *s);

/* Adds an event before perf_session_open; returns its index (>= 0). Events with
 * the same non-zero group must share a placement (-EINVAL otherwise). */
int perf_session_add_event(struct psess *s, const struct perf_event_desc *ev, enum perf_session_placement placement,
		    unsigned group);
size_t perf_session_nr_events(const struct psess *s);

/*
 * Opens every event. On failure nothing stays open and the error says why;
 * -ENODEV: a hardware event on a host that exposes no hardware PMU.
 */
int perf_session_open(struct psess *s);

/* Reads events [0, n) into out[0..n); n may be less than the event count. */
int perf_session_read(struct psess *s, struct perf_session_reading *out, size_t n);

/*
 * Moves event idx to another placement. The kernel cannot change pinning of
 * an open event, so its open unit (itself, or its whole group) is read one
 * last time, closed and reopened; the final counts become a base added to
 * every later read, so the value stays cumulative. The event leaves its
 * group (it is read alone afterwards); other members stay grouped. The few
 * microseconds between close and reopen are not counted.
 */
int perf_session_set_placement(struct psess *s, size_t idx, enum perf_session_placement placement);

/* Closes every event; reads afterwards fail with -EBADFD. */
void perf_session_close(struct psess *s);

/* The last error message, "" if none. */
const char *perf_session_error(const struct psess *s);

/* Number of read(2) calls the last perf_session_read made (benchmarks, tests). */
unsigned long perf_session_last_read_syscalls(const struct psess *s);

/* Fills the derived fields (scaled, multiplexed, never_ran) from value and
 * times, as perf_session_read does. Exposed so the rule is tested directly, since
 * software events on this host never multiplex. */
void perf_session_derive(struct perf_session_reading *r);

const char *perf_session_placement_name(enum perf_session_placement p);

#endif
