/* SPDX-License-Identifier: MIT */
/*
 * Who opens the events: libperf gives us the thread map (the pid
 * conventions) and the caller the CPUs (a struct cpulist, never text), but
 * the events themselves are opened here with perf_event_open(2), for two
 * reasons found in libperf 6.12:
 *  - a group is read with one read(2) of PERF_FORMAT_GROUP, and
 *    perf_evsel__read fills only the leader from that buffer; the sibling
 *    values need the leader's fd, which the public API never exposes (the
 *    internal headers that do are not installable: they need tools/include);
 *  - perf_evsel__read returns -errno when read(2) returns 0, which is what a
 *    pinned event in error state returns, so with errno untouched it reports
 *    success with a zeroed count: a dedicated event that lost its counter
 *    would look like a counter that counted nothing.
 * Owning the fds keeps both cases explicit.
 */
#include "perf/perf_session.h"

#include <errno.h>
#include <stdarg.h>
#include <linux/perf_event.h>
#include <perf/threadmap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto/cleanup.h"

#define READ_FORMAT_SINGLE \
	(PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING)
#define READ_FORMAT_GROUP \
	(PERF_FORMAT_GROUP | PERF_FORMAT_TOTAL_TIME_ENABLED | \
	 PERF_FORMAT_TOTAL_TIME_RUNNING | PERF_FORMAT_ID)

/* Events opened and read together: a kernel group, or one event alone. */
struct unit {
	enum perf_session_placement placement;
	unsigned group;      /* 0: a single ungrouped event */
	size_t *members;     /* event indices; members[0] leads */
	size_t n;
	int *fds;            /* fds[member * nslots + slot], -1 when closed */
	bool open;
};

struct ev {
	struct perf_event_desc pev;
	enum perf_session_placement placement;
	unsigned group;
	int unit;            /* index in s->units, -1 if not opened */
	bool reopen_failed;  /* not_counted says so; retried at the next move */
	uint64_t *ids;       /* per slot, kernel event id (group reads) */
	/* Counts carried over from units closed by a placement change. */
	uint64_t base_val, base_ena, base_run;
	const char *not_counted;   /* static reason, or NULL */
};

struct psess {
	struct perf_session_opts opts;
	char *sysfs_root;    /* malloc'd */
	int *cpus;           /* n_cpus CPU numbers, ascending; {-1} for a task */
	int n_cpus;
	struct perf_thread_map *threads;
	int nslots;          /* CPUs x threads: fds per event */
	struct ev *evs;
	size_t n_evs, cap_evs;
	struct unit *units;
	size_t n_units, cap_units;
	bool opened;
	unsigned long read_syscalls;
	/* The last error, malloc'd (it may name sysfs paths); NULL with
	 * err_oom when even the message could not be allocated. */
	char *err;
	bool err_oom;
};

static int set_err(struct psess *s, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int set_err(struct psess *s, int rc, const char *fmt, ...)
{
	char *msg;
	va_list ap;

	va_start(ap, fmt);
	msg = alloc_vprintf(fmt, ap);
	va_end(ap);
	free(s->err);
	s->err = msg;
	s->err_oom = !msg;
	return rc;
}

/* Makes room for element n of *arr (cap elements of size each), doubling. */
static int room_for_one(void **arr, size_t *cap, size_t n, size_t size)
{
	size_t want = *cap ? 2 * *cap : 8;
	void *grown;

	if (n < *cap)
		return 0;
	grown = reallocarray(*arr, want, size);
	if (!grown)
		return -ENOMEM;
	*arr = grown;
	*cap = want;
	return 0;
}

/* The one way this module runs out of memory. */
static int oom(struct psess *s)
{
	return set_err(s, -ENOMEM, "out of memory");
}

const char *perf_session_placement_name(enum perf_session_placement p)
{
	switch (p) {
	case PERF_SESSION_DEDICATED: return "dedicated";
	case PERF_SESSION_MULTIPLEXED: return "multiplexed";
	}
	return "?";
}

int perf_session_create(const struct perf_session_opts *opts, struct psess **out, char *err, size_t errlen)
{
	*out = NULL;
	bool cpu_mode = opts->cpus != NULL;
	if (cpu_mode == (opts->pid > 0)) {
		snprintf(err, errlen, "a session needs exactly one target: a CPU list or a pid");
		return -EINVAL;
	}
	if (cpu_mode && cpulist_empty(opts->cpus)) {
		snprintf(err, errlen, "a session's CPU list names no CPU");
		return -EINVAL;
	}
	struct psess *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->opts = *opts;
	s->sysfs_root = strdup(opts->sysfs_root ? opts->sysfs_root : "/");
	s->opts.sysfs_root = s->sysfs_root;
	s->opts.cpus = NULL; /* not kept: cpus[] is what is used */
	/* a task is counted on any CPU: the one entry -1 */
	s->n_cpus = cpu_mode ? (int)cpulist_count(opts->cpus) : 1;
	s->cpus = malloc((size_t)s->n_cpus * sizeof(*s->cpus));
	if (s->cpus) {
		int n = 0;

		s->cpus[0] = -1;
		for (int c = cpu_mode ? cpulist_next(opts->cpus, -1) : -1; c >= 0; c = cpulist_next(opts->cpus, c))
			s->cpus[n++] = c;
	}
	if (cpu_mode) {
		s->threads = perf_thread_map__new_dummy();
	} else {
		pid_t pid = opts->pid;
		s->threads = perf_thread_map__new_array(1, &pid);
	}
	if (!s->sysfs_root || !s->cpus || !s->threads) {
		perf_session_destroy(s);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->nslots = s->n_cpus * perf_thread_map__nr(s->threads);
	*out = s;
	return 0;
}

size_t perf_session_nr_events(const struct psess *s)
{
	return s->n_evs;
}

const char *perf_session_error(const struct psess *s)
{
	return s->err ? s->err : s->err_oom ? "out of memory" : "";
}

unsigned long perf_session_last_read_syscalls(const struct psess *s)
{
	return s->read_syscalls;
}

int perf_session_add_event(struct psess *s, const struct perf_event_desc *pev, enum perf_session_placement placement,
		    unsigned group)
{
	if (s->opened)
		return set_err(s, -EBUSY, "events are added before the session is opened");
	if (placement != PERF_SESSION_DEDICATED && placement != PERF_SESSION_MULTIPLEXED)
		return set_err(s, -EINVAL, "%s: unknown placement %d", pev->name, (int)placement);
	for (size_t i = 0; group && i < s->n_evs; i++) {
		if (s->evs[i].group != group)
			continue;
		if (s->evs[i].placement != placement)
			return set_err(s, -EINVAL,
				       "%s: group %u is %s, an event cannot join it as %s",
				       pev->name, group, perf_session_placement_name(s->evs[i].placement),
				       perf_session_placement_name(placement));
		/* PERF_FORMAT_GROUP reports only the leader's times: a sibling
		 * the kernel never schedules would read as running all along. */
		if (strcmp(perf_event_pmu(&s->evs[i].pev), perf_event_pmu(pev)) != 0)
			return set_err(s, -EINVAL,
				       "%s: counted by the %s PMU, cannot join group %u of %s PMU events (the kernel would not schedule it with the group)",
				       pev->name, perf_event_pmu(pev), group, perf_event_pmu(&s->evs[i].pev));
	}
	if (room_for_one((void **)&s->evs, &s->cap_evs, s->n_evs, sizeof(*s->evs)) < 0)
		return oom(s);
	struct ev *e = &s->evs[s->n_evs];
	memset(e, 0, sizeof(*e));
	e->pev = *pev;
	e->placement = placement;
	e->group = group;
	e->unit = -1;
	e->ids = calloc((size_t)s->nslots, sizeof(*e->ids));
	if (!e->ids)
		return oom(s);
	return (int)s->n_evs++;
}

static int slot_cpu(const struct psess *s, int slot)
{
	return s->cpus[slot / perf_thread_map__nr(s->threads)];
}

static pid_t slot_pid(const struct psess *s, int slot)
{
	return perf_thread_map__pid(s->threads, slot % perf_thread_map__nr(s->threads));
}

static bool host_has_cpu_pmu(const struct psess *s)
{
	_cleanup_free_ char *path = alloc_printf("%s/bus/event_source/devices/cpu", s->sysfs_root);
	struct stat st;

	/* unknown (no memory): word it as the event's fault */
	return !path || stat(path, &st) == 0;
}

/* Words a failed perf_event_open so the operator learns the cause, not
 * just the errno. */
static int open_error(struct psess *s, const struct ev *e, int cpu, int errnum)
{
	if (e->pev.hardware && (errnum == ENOENT || errnum == EOPNOTSUPP || errnum == ENODEV)) {
		if (!host_has_cpu_pmu(s))
			return set_err(s, -ENODEV,
				       "%s: the host exposes no hardware PMU (no %s/bus/event_source/devices/cpu; perf_event_open: %s)",
				       e->pev.name, strcmp(s->sysfs_root, "/") ? s->sysfs_root : "",
				       strerror(errnum));
		return set_err(s, -ENODEV, "%s: the host PMU does not support this event (perf_event_open: %s)",
			       e->pev.name, strerror(errnum));
	}
	if (errnum == EACCES || errnum == EPERM)
		return set_err(s, -errnum,
			       "%s: not permitted (needs CAP_PERFMON, or a lower kernel.perf_event_paranoid for %s)",
			       e->pev.name, cpu >= 0 ? "CPU-wide events" : "this task");
	if (errnum == ESRCH)
		return set_err(s, -ESRCH, "%s: no such process %d", e->pev.name, (int)s->opts.pid);
	if (cpu >= 0 && (errnum == ENODEV || errnum == EINVAL || errnum == ENXIO))
		return set_err(s, -errnum, "%s: cannot open on CPU %d (perf_event_open: %s)",
			       e->pev.name, cpu, strerror(errnum));
	return set_err(s, -errnum, "%s: perf_event_open: %s", e->pev.name, strerror(errnum));
}

int perf_session_sys_open(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
			  unsigned long flags)
{
	(void)ctx;
	return (int)syscall(SYS_perf_event_open, attr, pid, cpu, group_fd, flags);
}

static void unit_close(struct psess *s, struct unit *u)
{
	if (!u->fds)
		return;
	/* Siblings before the leader: closing a leader first would promote
	 * its siblings to singletons for the instant in between. */
	for (size_t m = u->n; m-- > 0;)
		for (int slot = 0; slot < s->nslots; slot++) {
			int *fd = &u->fds[m * (size_t)s->nslots + (size_t)slot];
			if (*fd >= 0)
				close(*fd);
			*fd = -1;
		}
	u->open = false;
}

static void unit_free(struct psess *s, struct unit *u)
{
	unit_close(s, u);
	free(u->fds);
	free(u->members);
	u->fds = NULL;
	u->members = NULL;
	u->n = 0;
}

static int unit_open(struct psess *s, struct unit *u)
{
	if (!u->fds) {
		u->fds = malloc(u->n * (size_t)s->nslots * sizeof(int));
		if (!u->fds)
			return oom(s);
	}
	for (size_t i = 0; i < u->n * (size_t)s->nslots; i++)
		u->fds[i] = -1;

	for (int slot = 0; slot < s->nslots; slot++) {
		int cpu = slot_cpu(s, slot);
		pid_t pid = slot_pid(s, slot);
		int leader_fd = -1;
		for (size_t m = 0; m < u->n; m++) {
			struct ev *e = &s->evs[u->members[m]];
			struct perf_event_attr attr;
			memset(&attr, 0, sizeof(attr));
			perf_event_to_attr(&e->pev, &attr);
			attr.read_format = u->group ? READ_FORMAT_GROUP : READ_FORMAT_SINGLE;
			/* The kernel accepts pinned only on a leader; siblings are
			 * scheduled with it anyway. */
			attr.pinned = m == 0 && u->placement == PERF_SESSION_DEDICATED;
			attr.inherit = s->opts.pid > 0 && s->opts.inherit;
			attr.exclude_guest = e->pev.hardware && s->opts.exclude_guest;
			perf_session_open_fn open_fn = s->opts.open ? s->opts.open : perf_session_sys_open;
			int fd = open_fn(s->opts.open_ctx, &attr, pid, cpu, m == 0 ? -1 : leader_fd,
					 PERF_FLAG_FD_CLOEXEC);
			if (fd < 0) {
				int errnum = errno;
				unit_close(s, u);
				return open_error(s, e, cpu, errnum);
			}
			u->fds[m * (size_t)s->nslots + (size_t)slot] = fd;
			if (m == 0)
				leader_fd = fd;
			if (u->group && ioctl(fd, PERF_EVENT_IOC_ID, &e->ids[slot]) < 0) {
				int errnum = errno;
				unit_close(s, u);
				return set_err(s, -errnum, "%s: PERF_EVENT_IOC_ID: %s", e->pev.name,
					       strerror(errnum));
			}
		}
	}
	u->open = true;
	return 0;
}

static int new_unit(struct psess *s, enum perf_session_placement placement, unsigned group)
{
	if (room_for_one((void **)&s->units, &s->cap_units, s->n_units, sizeof(*s->units)) < 0)
		return oom(s);
	struct unit *u = &s->units[s->n_units];
	memset(u, 0, sizeof(*u));
	u->placement = placement;
	u->group = group;
	return (int)s->n_units++;
}

static int unit_add(struct psess *s, int ui, size_t evi)
{
	struct unit *u = &s->units[ui];
	size_t *m = realloc(u->members, (u->n + 1) * sizeof(*m));
	if (!m)
		return oom(s);
	u->members = m;
	u->members[u->n++] = evi;
	s->evs[evi].unit = ui;
	return 0;
}

static void close_all(struct psess *s)
{
	for (size_t i = 0; i < s->n_units; i++)
		unit_free(s, &s->units[i]);
	s->n_units = 0;
	for (size_t i = 0; i < s->n_evs; i++)
		s->evs[i].unit = -1;
}

int perf_session_open(struct psess *s)
{
	if (s->opened)
		return set_err(s, -EBUSY, "session already open");
	free(s->err);
	s->err = NULL;
	s->err_oom = false;
	for (size_t i = 0; i < s->n_evs; i++) {
		struct ev *e = &s->evs[i];
		e->not_counted = NULL;
		e->base_val = e->base_ena = e->base_run = 0;
		if (s->opts.model_pmu && e->pev.hardware) {
			/* A simulated PMU has no counters to read; opening the
			 * event on the real host (if it had a PMU) would report
			 * numbers from different hardware than the model. */
			e->not_counted = PERF_SESSION_REASON_MODEL_PMU;
			continue;
		}
		int ui = -1;
		for (size_t k = 0; e->group && k < s->n_units; k++)
			if (s->units[k].group == e->group)
				ui = (int)k;
		if (ui < 0)
			ui = new_unit(s, e->placement, e->group);
		int rc = ui < 0 ? ui : unit_add(s, ui, i);
		if (rc < 0) {
			close_all(s);
			return rc;
		}
	}
	for (size_t k = 0; k < s->n_units; k++) {
		int rc = unit_open(s, &s->units[k]);
		if (rc < 0) {
			close_all(s);
			return rc;
		}
	}
	s->opened = true;
	return 0;
}

void perf_session_derive(struct perf_session_reading *r)
{
	r->multiplexed = r->time_running < r->time_enabled;
	r->never_ran = r->time_running == 0;
	if (r->time_running == 0)
		r->scaled = 0.0;
	else
		r->scaled = (double)r->value * ((double)r->time_enabled / (double)r->time_running);
}

struct counts {
	uint64_t val, ena, run;
	bool pin_failed;
};

/* Units of up to this many events are read into the caller's stack. */
#define STACK_MEMBERS 16

/* Room for u's counts: 'stack' (STACK_MEMBERS entries) when it fits,
 * else a malloc'd array left in *heap for the caller's cleanup. */
static struct counts *counts_for(const struct unit *u, struct counts *stack, struct counts **heap)
{
	if (u->n <= STACK_MEMBERS)
		return stack;
	*heap = malloc(u->n * sizeof(**heap));
	return *heap;
}

/* Reads one unit into cnt[member] (current open period only). */
static int unit_read(struct psess *s, const struct unit *u, struct counts *cnt)
{
	memset(cnt, 0, u->n * sizeof(*cnt));
	if (!u->group) {
		uint64_t buf[3];
		for (int slot = 0; slot < s->nslots; slot++) {
			ssize_t r = read(u->fds[slot], buf, sizeof(buf));
			s->read_syscalls++;
			if (r == 0) {
				cnt[0].pin_failed = true;
				continue;
			}
			if (r != (ssize_t)sizeof(buf))
				return set_err(s, r < 0 ? -errno : -EIO, "%s: read: %s",
					       s->evs[u->members[0]].pev.name,
					       r < 0 ? strerror(errno) : "short read");
			cnt[0].val += buf[0];
			cnt[0].ena += buf[1];
			cnt[0].run += buf[2];
		}
		return 0;
	}

	size_t words = 3 + 2 * u->n;
	uint64_t stackbuf[3 + 2 * STACK_MEMBERS];
	_cleanup_free_ uint64_t *heapbuf = NULL;
	uint64_t *buf = stackbuf;
	if (u->n > STACK_MEMBERS && !(buf = heapbuf = malloc(words * sizeof(*buf))))
		return oom(s);
	int rc = 0;
	for (int slot = 0; slot < s->nslots && rc == 0; slot++) {
		ssize_t r = read(u->fds[slot], buf, words * sizeof(*buf));
		s->read_syscalls++;
		if (r == 0) {
			for (size_t m = 0; m < u->n; m++)
				cnt[m].pin_failed = true;
			continue;
		}
		if (r != (ssize_t)(words * sizeof(*buf)) || buf[0] != u->n) {
			rc = set_err(s, r < 0 ? -errno : -EIO, "%s: group read: %s",
				     s->evs[u->members[0]].pev.name,
				     r < 0 ? strerror(errno) : "unexpected size or member count");
			break;
		}
		/* Layout: nr, time_enabled, time_running, {value, id} x nr. The
		 * kernel lists siblings in attach order, but matching on the id
		 * does not depend on it. */
		for (size_t k = 0; k < u->n; k++) {
			uint64_t value = buf[3 + 2 * k], id = buf[4 + 2 * k];
			size_t m = 0;
			while (m < u->n && s->evs[u->members[m]].ids[slot] != id)
				m++;
			if (m == u->n) {
				rc = set_err(s, -EIO, "%s: group read returned unknown id %llu",
					     s->evs[u->members[0]].pev.name, (unsigned long long)id);
				break;
			}
			cnt[m].val += value;
			cnt[m].ena += buf[1];
			cnt[m].run += buf[2];
		}
	}
	return rc;
}

int perf_session_read(struct psess *s, struct perf_session_reading *out, size_t n)
{
	if (!s->opened)
		return set_err(s, -EBADFD, "session is not open");
	if (n > s->n_evs)
		n = s->n_evs;
	s->read_syscalls = 0;
	for (size_t i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].placement = s->evs[i].placement;
		out[i].group = s->evs[i].group;
	}
	struct counts stackcnt[STACK_MEMBERS];
	for (size_t k = 0; k < s->n_units; k++) {
		const struct unit *u = &s->units[k];
		if (!u->open)
			continue;
		_cleanup_free_ struct counts *heapcnt = NULL;
		struct counts *cnt = counts_for(u, stackcnt, &heapcnt);
		if (!cnt)
			return oom(s);
		int rc = unit_read(s, u, cnt);
		for (size_t m = 0; rc == 0 && m < u->n; m++) {
			size_t i = u->members[m];
			if (i >= n)
				continue;
			struct ev *e = &s->evs[i];
			if (cnt[m].pin_failed) {
				out[i].status = PERF_SESSION_NOT_COUNTED;
				out[i].reason = PERF_SESSION_REASON_PIN_FAILED;
				continue;
			}
			out[i].status = PERF_SESSION_COUNTED;
			out[i].value = e->base_val + cnt[m].val;
			out[i].time_enabled = e->base_ena + cnt[m].ena;
			out[i].time_running = e->base_run + cnt[m].run;
			perf_session_derive(&out[i]);
		}
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < n; i++)
		if (s->evs[i].not_counted) {
			out[i].status = PERF_SESSION_NOT_COUNTED;
			out[i].reason = s->evs[i].not_counted;
		}
	return 0;
}

int perf_session_set_placement(struct psess *s, size_t idx, enum perf_session_placement placement)
{
	if (!s->opened)
		return set_err(s, -EBADFD, "session is not open");
	if (idx >= s->n_evs)
		return set_err(s, -EINVAL, "no event %zu", idx);
	if (placement != PERF_SESSION_DEDICATED && placement != PERF_SESSION_MULTIPLEXED)
		return set_err(s, -EINVAL, "unknown placement %d", (int)placement);
	struct ev *e = &s->evs[idx];
	/* An event whose reopen failed is retried even at the same placement:
	 * a transient failure (EMFILE, a CPU briefly offline) must not leave
	 * it dead until the session restarts. */
	bool retry = e->reopen_failed;
	if (e->placement == placement && !retry)
		return 0;
	if (e->unit < 0) {
		/* Not opened (model PMU): only the bookkeeping changes. */
		e->placement = placement;
		e->group = 0;
		return 0;
	}
	struct unit *u = &s->units[e->unit];
	/* A unit closed by a failed reopen has its counts in the bases
	 * already: nothing to read. */
	if (u->open) {
		struct counts stackcnt[STACK_MEMBERS];
		_cleanup_free_ struct counts *heapcnt = NULL;
		struct counts *cnt = counts_for(u, stackcnt, &heapcnt);
		if (!cnt)
			return oom(s);
		int rr = unit_read(s, u, cnt);
		if (rr < 0)
			return rr;
		/* Closing right after the read keeps the uncounted gap to the
		 * close and reopen syscalls below. */
		unit_close(s, u);
		for (size_t m = 0; m < u->n; m++) {
			struct ev *me = &s->evs[u->members[m]];
			me->base_val += cnt[m].val;
			me->base_ena += cnt[m].ena;
			me->base_run += cnt[m].run;
		}
	}
	int rc;

	/* Take the event out of its unit, keeping the others' order so the
	 * old leader stays leader when it is not the one moving. */
	size_t pos = 0;
	while (u->members[pos] != idx)
		pos++;
	memmove(&u->members[pos], &u->members[pos + 1], (u->n - pos - 1) * sizeof(size_t));
	u->n--;
	e->unit = -1;
	e->placement = placement;
	e->group = 0;

	rc = 0;
	if (u->n > 0) {
		rc = unit_open(s, u);
		for (size_t m = 0; m < u->n; m++) {
			struct ev *me = &s->evs[u->members[m]];
			if (rc < 0) {
				me->not_counted = PERF_SESSION_REASON_REOPEN_FAILED;
				me->reopen_failed = true;
			} else if (me->reopen_failed) {
				me->not_counted = NULL;
				me->reopen_failed = false;
			}
		}
	}
	int ui = new_unit(s, placement, 0);
	if (ui < 0)
		return ui;
	/* new_unit may have moved the array: u is stale from here. */
	if ((rc = unit_add(s, ui, idx)) < 0)
		return rc;
	int rc2 = unit_open(s, &s->units[ui]);
	if (rc2 < 0) {
		e->not_counted = PERF_SESSION_REASON_REOPEN_FAILED;
		e->reopen_failed = true;
		return rc2;
	}
	if (e->reopen_failed) {
		e->not_counted = NULL;
		e->reopen_failed = false;
	}
	return rc;
}

void perf_session_close(struct psess *s)
{
	if (!s)
		return;
	close_all(s);
	s->opened = false;
}

void perf_session_destroy(struct psess *s)
{
	if (!s)
		return;
	perf_session_close(s);
	for (size_t i = 0; i < s->n_evs; i++)
		free(s->evs[i].ids);
	free(s->evs);
	free(s->units);
	free(s->cpus);
	perf_thread_map__put(s->threads);
	free(s->sysfs_root);
	free(s->err);
	free(s);
}
