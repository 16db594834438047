/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "perf/perf_session.h"

#define PAGES 512
#define SLEEPS 40

static struct cpulist cpus_from(const char *text)
{
	struct cpulist l;

	assert_int_equal(cpulist_parse(text, CPULIST_MAX_CPUS, &l), 0);
	return l;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* PAGES fresh page faults, SLEEPS voluntary context switches, and spin_ms of
 * CPU time: the activity the software events below must see. */
static void workload(unsigned spin_ms)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, (size_t)(PAGES * pg), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort();
	for (long i = 0; i < PAGES; i++)
		((volatile char *)p)[i * pg] = 1;
	munmap(p, (size_t)(PAGES * pg));
	for (int i = 0; i < SLEEPS; i++)
		usleep(1000);
	/* Spin on the process's own CPU clock: on a loaded machine (ctest -j,
	 * sanitizers) wall time would overstate what task-clock can see. */
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	uint64_t end = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + spin_ms * 1000000ull;
	for (;;) {
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
		if ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec >= end)
			break;
	}
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void parse(const char *spec, struct perf_event_desc *ev)
{
	char err[256];
	if (perf_event_parse(spec, NULL, ev, err, sizeof(err)) != 0)
		fail_msg("%s: %s", spec, err);
}

static int add(struct psess *s, const char *spec, enum perf_session_placement p, unsigned group)
{
	struct perf_event_desc ev;
	parse(spec, &ev);
	int idx = perf_session_add_event(s, &ev, p, group);
	if (idx < 0)
		fail_msg("add %s: %d %s", spec, idx, perf_session_error(s));
	return idx;
}

static void read_ok(struct psess *s, struct perf_session_reading *r, size_t n)
{
	int rc = perf_session_read(s, r, n);
	if (rc != 0)
		fail_msg("read: %d %s", rc, perf_session_error(s));
}

static void assert_monotonic(const struct perf_session_reading *a, const struct perf_session_reading *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i].status != PERF_SESSION_COUNTED)
			continue;
		assert_int_equal(b[i].status, PERF_SESSION_COUNTED);
		if (b[i].value < a[i].value || b[i].time_enabled < a[i].time_enabled ||
		    b[i].time_running < a[i].time_running)
			fail_msg("event %zu went backwards: %llu/%llu/%llu -> %llu/%llu/%llu", i,
				 (unsigned long long)a[i].value, (unsigned long long)a[i].time_enabled,
				 (unsigned long long)a[i].time_running, (unsigned long long)b[i].value,
				 (unsigned long long)b[i].time_enabled,
				 (unsigned long long)b[i].time_running);
	}
}

static void pin_to_cpu0(void)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		fail_msg("sched_setaffinity: %s", strerror(errno));
}

static void unpin(void)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; c++)
		CPU_SET(c, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* CPU-wide counting on CPU 0 while this test runs its workload there. */
static void test_cpu_mode(void **state)
{
	(void)state;
	pin_to_cpu0();
	struct psess *s;
	char err[256];
	struct cpulist cpu0 = cpus_from("0");
	struct perf_session_opts o = { .cpus = &cpu0 };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	int cpu_clk = add(s, "cpu-clock", PERF_SESSION_MULTIPLEXED, 0);
	int cs = add(s, "cs", PERF_SESSION_MULTIPLEXED, 0);
	int pf = add(s, "page-faults", PERF_SESSION_DEDICATED, 1);
	int mig = add(s, "cpu-migrations", PERF_SESSION_DEDICATED, 1);
	int tc = add(s, "task-clock", PERF_SESSION_MULTIPLEXED, 0);
	uint64_t t0 = now_ns();
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	struct perf_session_reading a[5], b[5];
	read_ok(s, a, 5);
	workload(50);
	read_ok(s, b, 5);
	uint64_t wall = now_ns() - t0;
	assert_monotonic(a, b, 5);

	for (int i = 0; i < 5; i++) {
		assert_int_equal(b[i].status, PERF_SESSION_COUNTED);
		assert_null(b[i].reason);
		/* Software events always have a counter: never multiplexed. */
		assert_int_equal(b[i].time_enabled, b[i].time_running);
		assert_false(b[i].multiplexed);
		assert_false(b[i].never_ran);
		assert_true(b[i].time_enabled <= wall);
	}
	/* cpu-clock on one CPU advances with wall time, idle included. */
	assert_true(b[cpu_clk].value >= (b[cpu_clk].time_enabled * 9) / 10);
	assert_true(b[cpu_clk].time_enabled >= ((wall - (b[cpu_clk].time_enabled - a[cpu_clk].time_enabled)) / 2));
	assert_true(b[pf].value - a[pf].value >= PAGES);
	assert_true(b[cs].value - a[cs].value >= SLEEPS);
	/* The busy loop alone took 50 ms of CPU 0. */
	assert_true(b[tc].value - a[tc].value >= 45000000ull);
	/* Group members share the leader's times. */
	assert_int_equal(b[pf].time_enabled, b[mig].time_enabled);
	assert_int_equal(b[pf].placement, PERF_SESSION_DEDICATED);
	assert_int_equal(b[pf].group, 1);
	/* Three singletons + one group on one CPU: four read(2)s. */
	assert_int_equal(perf_session_last_read_syscalls(s), 4);
	perf_session_destroy(s);
	unpin();
}

/* Summing over CPUs: the session spans every online CPU. */
static void test_cpu_mode_all_cpus(void **state)
{
	(void)state;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	struct cpulist all;
	cpulist_clear(&all);
	for (long c = 0; c < n; c++)
		cpulist_set(&all, (unsigned)c);
	struct psess *s;
	char err[256];
	struct perf_session_opts o = { .cpus = &all };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	add(s, "cpu-clock", PERF_SESSION_MULTIPLEXED, 0);
	add(s, "page-faults", PERF_SESSION_MULTIPLEXED, 2);
	add(s, "cs", PERF_SESSION_MULTIPLEXED, 2);
	uint64_t t0 = now_ns();
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	workload(10);
	struct perf_session_reading r[3];
	read_ok(s, r, 3);
	uint64_t wall = now_ns() - t0;
	/* Enabled time is summed over the CPUs, each at most the wall time. */
	assert_true(r[0].time_enabled <= (uint64_t)n * wall);
	assert_true(r[0].time_enabled >= (uint64_t)n * (wall / 2));
	assert_true(r[1].value >= PAGES);
	assert_true(r[2].value >= SLEEPS);
	assert_int_equal(perf_session_last_read_syscalls(s), 2 * (unsigned long)n);
	perf_session_destroy(s);
}

struct child {
	pid_t pid;
	int go;  /* write end: one byte starts the workload */
};

static struct child spawn_waiting(unsigned spin_ms)
{
	int p[2];
	if (pipe(p) != 0)
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			_exit(2);
		workload(spin_ms);
		_exit(0);
	}
	close(p[0]);
	return (struct child){ pid, p[1] };
}

static void release(struct child *c)
{
	if (write(c->go, "g", 1) != 1)
		abort();
	close(c->go);
}

static void test_pid_mode(void **state)
{
	(void)state;
	struct child c = spawn_waiting(100);
	struct psess *s;
	char err[256];
	struct perf_session_opts o = { .pid = c.pid };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	add(s, "task-clock", PERF_SESSION_MULTIPLEXED, 0);
	add(s, "context-switches", PERF_SESSION_MULTIPLEXED, 0);
	add(s, "page-faults", PERF_SESSION_DEDICATED, 3);
	add(s, "cpu-migrations", PERF_SESSION_DEDICATED, 3);
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	struct perf_session_reading prev[4], cur[4];
	read_ok(s, prev, 4);
	/* The child is blocked in read(2): almost nothing counted yet. */
	assert_true(prev[2].value < PAGES);
	release(&c);
	int status = 0;
	for (;;) {
		usleep(20000);
		read_ok(s, cur, 4);
		assert_monotonic(prev, cur, 4);
		memcpy(prev, cur, sizeof(cur));
		pid_t w = waitpid(c.pid, &status, WNOHANG);
		if (w == c.pid)
			break;
	}
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Reading after the task exited still gives its final counts. */
	read_ok(s, cur, 4);
	assert_monotonic(prev, cur, 4);
	assert_true(cur[0].value >= 90000000ull);  /* spun 100 ms */
	assert_true(cur[0].value <= cur[0].time_enabled + 1000000ull);
	assert_true(cur[1].value >= SLEEPS);
	assert_true(cur[2].value >= PAGES);
	perf_session_destroy(s);
}

/*
 * Moving events between placements keeps cumulative values: a moved event
 * and the group it left must never go backwards, and enabled time keeps
 * the time from before the move.
 */
static void test_placement_change(void **state)
{
	(void)state;
	pin_to_cpu0();
	struct psess *s;
	char err[256];
	struct cpulist cpu0 = cpus_from("0");
	struct perf_session_opts o = { .cpus = &cpu0 };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	int lead = add(s, "minor-faults", PERF_SESSION_DEDICATED, 7);
	int sib = add(s, "page-faults", PERF_SESSION_DEDICATED, 7);
	int sib2 = add(s, "cs", PERF_SESSION_DEDICATED, 7);
	int solo = add(s, "cpu-clock", PERF_SESSION_MULTIPLEXED, 0);
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	struct perf_session_reading a[4], b[4], c[4], d[4];
	workload(30);
	read_ok(s, a, 4);
	assert_true(a[sib].value >= PAGES);

	/* The leader leaves its group: the siblings are reopened as a group
	 * led by the next member, the leader alone and multiplexed. */
	if (perf_session_set_placement(s, (size_t)lead, PERF_SESSION_MULTIPLEXED) != 0)
		fail_msg("set_placement: %s", perf_session_error(s));
	read_ok(s, b, 4);
	assert_monotonic(a, b, 4);
	assert_int_equal(b[lead].placement, PERF_SESSION_MULTIPLEXED);
	assert_int_equal(b[lead].group, 0);
	assert_int_equal(b[sib].group, 7);
	/* Without the carried base these would restart near zero. */
	assert_true(b[sib].value >= a[sib].value);
	assert_true(b[lead].time_enabled >= a[lead].time_enabled);

	if (perf_session_set_placement(s, (size_t)solo, PERF_SESSION_DEDICATED) != 0)
		fail_msg("set_placement: %s", perf_session_error(s));
	if (perf_session_set_placement(s, (size_t)lead, PERF_SESSION_DEDICATED) != 0)
		fail_msg("set_placement: %s", perf_session_error(s));
	/* Unchanged placement is a no-op, not a reopen. */
	assert_int_equal(perf_session_set_placement(s, (size_t)sib2, PERF_SESSION_DEDICATED), 0);
	workload(30);
	read_ok(s, c, 4);
	assert_monotonic(b, c, 4);
	assert_true(c[sib].value - b[sib].value >= PAGES);
	assert_true(c[sib2].value - b[sib2].value >= SLEEPS);
	assert_true(c[lead].value - b[lead].value >= PAGES);
	assert_int_equal(c[solo].placement, PERF_SESSION_DEDICATED);
	/* Group {page-faults, cs} and the two singletons: three reads. */
	assert_int_equal(perf_session_last_read_syscalls(s), 3);

	/* A sibling moves out too; the remaining one-member group still reads. */
	if (perf_session_set_placement(s, (size_t)sib, PERF_SESSION_MULTIPLEXED) != 0)
		fail_msg("set_placement: %s", perf_session_error(s));
	read_ok(s, d, 4);
	assert_monotonic(c, d, 4);
	perf_session_destroy(s);
	unpin();
}

/* A reopen that fails (here: no file descriptor may be opened at all) is
 * reported, never invented, and retried at the next placement call, with
 * the counts so far carried over. */
static void test_reopen_failure_is_retried(void **state)
{
	(void)state;
	struct psess *s;
	char err[256];
	struct cpulist cpu0 = cpus_from("0");
	struct perf_session_opts o = { .cpus = &cpu0 };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	int tc = add(s, "task-clock", PERF_SESSION_DEDICATED, 0);
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	struct perf_session_reading a[1], b[1], c[1];
	workload(10);
	read_ok(s, a, 1);
	assert_int_equal(a[0].status, PERF_SESSION_COUNTED);

	struct rlimit saved, none;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
	none = saved;
	none.rlim_cur = 0;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
	int rc = perf_session_set_placement(s, (size_t)tc, PERF_SESSION_MULTIPLEXED);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
	assert_true(rc < 0);
	read_ok(s, b, 1);
	assert_int_equal(b[0].status, PERF_SESSION_NOT_COUNTED);
	assert_string_equal(b[0].reason, PERF_SESSION_REASON_REOPEN_FAILED);

	/* The same placement asked again: reopened, counting, nothing lost. */
	if (perf_session_set_placement(s, (size_t)tc, PERF_SESSION_MULTIPLEXED) != 0)
		fail_msg("retry: %s", perf_session_error(s));
	workload(10);
	read_ok(s, c, 1);
	assert_int_equal(c[0].status, PERF_SESSION_COUNTED);
	assert_true(c[0].value > a[0].value);
	assert_int_equal(c[0].placement, PERF_SESSION_MULTIPLEXED);
	perf_session_destroy(s);
}

static bool host_has_hw_pmu(void)
{
	struct perf_event_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_HARDWARE;
	attr.config = PERF_COUNT_HW_INSTRUCTIONS;
	attr.disabled = 1;
	int fd = (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0);
	if (fd >= 0) {
		close(fd);
		return true;
	}
	return false;
}

static void test_model_pmu(void **state)
{
	(void)state;
	struct psess *s;
	char err[256];
	struct cpulist cpu0 = cpus_from("0");
	struct perf_session_opts o = { .cpus = &cpu0, .model_pmu = true };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	add(s, "instructions", PERF_SESSION_DEDICATED, 1);
	add(s, "task-clock", PERF_SESSION_DEDICATED, 0);
	add(s, "event=0xc4", PERF_SESSION_MULTIPLEXED, 0);
	if (perf_session_open(s) != 0)
		fail_msg("open: %s", perf_session_error(s));
	workload(5);
	struct perf_session_reading r[3];
	read_ok(s, r, 3);
	for (int i = 0; i < 3; i += 2) {
		assert_int_equal(r[i].status, PERF_SESSION_NOT_COUNTED);
		assert_string_equal(r[i].reason, PERF_SESSION_REASON_MODEL_PMU);
		assert_int_equal(r[i].value, 0);
		assert_int_equal(r[i].time_enabled, 0);
		assert_true(r[i].scaled == 0.0);
	}
	assert_int_equal(r[1].status, PERF_SESSION_COUNTED);
	assert_true(r[1].value > 0);
	/* A placement change on an unopened event changes only bookkeeping. */
	assert_int_equal(perf_session_set_placement(s, 0, PERF_SESSION_MULTIPLEXED), 0);
	read_ok(s, r, 3);
	assert_int_equal(r[0].status, PERF_SESSION_NOT_COUNTED);
	assert_int_equal(r[0].placement, PERF_SESSION_MULTIPLEXED);
	perf_session_destroy(s);
}

static void test_no_hw_pmu(void **state)
{
	(void)state;
	if (host_has_hw_pmu()) {
		skip();
		return;
	}
	int fds_before = count_fds();
	struct psess *s;
	char err[256];
	struct cpulist cpu0 = cpus_from("0");
	struct perf_session_opts o = { .cpus = &cpu0 };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	add(s, "task-clock", PERF_SESSION_DEDICATED, 0);
	add(s, "cycles", PERF_SESSION_DEDICATED, 0);
	assert_int_equal(perf_session_open(s), -ENODEV);
	if (!strstr(perf_session_error(s), "cycles: the host exposes no hardware PMU"))
		fail_msg("message: %s", perf_session_error(s));
	/* The task-clock opened before cycles failed must be closed again. */
	assert_int_equal(count_fds(), fds_before);
	struct perf_session_reading r[2];
	assert_int_equal(perf_session_read(s, r, 2), -EBADFD);
	perf_session_destroy(s);

	/* The same failure on a host whose sysfs has a cpu PMU is worded as an
	 * unsupported event, not a missing PMU (fixture tree). */
	o.sysfs_root = "fixtures/perf-sysfs/icelake";
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	add(s, "r01c2", PERF_SESSION_MULTIPLEXED, 4);
	assert_int_equal(perf_session_open(s), -ENODEV);
	if (!strstr(perf_session_error(s), "r01c2: the host PMU does not support this event"))
		fail_msg("message: %s", perf_session_error(s));
	perf_session_destroy(s);
}

/* What the session handed to perf_event_open, call by call. */
struct open_log {
	unsigned n;
	struct {
		struct perf_event_attr attr; /* as passed */
		int cpu;
		int fd;
	} calls[32];
};

/*
 * Records each attr, then opens it for real: software events as they are,
 * and, where this host has no hardware PMU, a hardware event as a
 * cpu-clock stand-in that keeps every flag the session set (the kernel
 * then accepts or refuses those flags, and the session reads a real fd).
 */
static int logging_open(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
			unsigned long flags)
{
	struct open_log *log = ctx;
	assert_true(log->n < 32);
	log->calls[log->n].attr = *attr;
	log->calls[log->n].cpu = cpu;
	struct perf_event_attr real = *attr;
	if ((attr->type == PERF_TYPE_HARDWARE || attr->type == PERF_TYPE_RAW) && !host_has_hw_pmu()) {
		real.type = PERF_TYPE_SOFTWARE;
		real.config = PERF_COUNT_SW_CPU_CLOCK;
	}
	int fd = perf_session_sys_open(NULL, &real, pid, cpu, group_fd, flags);
	log->calls[log->n++].fd = fd;
	return fd;
}

/* The session's hardware events count host time only when asked
 * (mediated vPMU): exclude_guest on every CPU, at open and after a
 * placement change; software events never get it. */
static void test_exclude_guest(void **state)
{
	(void)state;
	for (int want = 0; want <= 1; want++) {
		struct open_log log = { 0 };
		struct psess *s;
		char err[256];
		struct cpulist cpus = cpus_from(sysconf(_SC_NPROCESSORS_ONLN) > 1 ? "0-1" : "0");
		unsigned n_cpus = cpulist_count(&cpus);
		struct perf_session_opts o = { .cpus = &cpus, .exclude_guest = want, .open = logging_open,
					       .open_ctx = &log };
		assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
		int tc = add(s, "task-clock", PERF_SESSION_DEDICATED, 0);
		int cyc = add(s, "cycles", PERF_SESSION_DEDICATED, 0);
		int raw = add(s, "event=0xc0,umask=0x00", PERF_SESSION_MULTIPLEXED, 0);
		if (perf_session_open(s) != 0)
			fail_msg("open: %s", perf_session_error(s));
		assert_int_equal(log.n, 3 * n_cpus);
		/* one more open per CPU for the moved event */
		assert_int_equal(perf_session_set_placement(s, (size_t)cyc, PERF_SESSION_MULTIPLEXED), 0);
		assert_int_equal(log.n, 4 * n_cpus);
		unsigned hw_seen = 0, sw_seen = 0, cpu_mask = 0;
		for (unsigned i = 0; i < log.n; i++) {
			const struct perf_event_attr *a = &log.calls[i].attr;
			if (log.calls[i].fd < 0)
				fail_msg("call %u (type %u config 0x%llx) did not open: %s", i, a->type,
					 (unsigned long long)a->config, strerror(errno));
			if (a->type == PERF_TYPE_SOFTWARE) {
				assert_int_equal(a->exclude_guest, 0);
				sw_seen++;
				continue;
			}
			if ((unsigned)a->exclude_guest != (unsigned)want)
				fail_msg("hardware event type %u config 0x%llx on CPU %d: exclude_guest %u, want %d",
					 a->type, (unsigned long long)a->config, log.calls[i].cpu, a->exclude_guest, want);
			hw_seen++;
			cpu_mask |= 1u << log.calls[i].cpu;
		}
		assert_int_equal(sw_seen, n_cpus);
		assert_int_equal(hw_seen, 3 * n_cpus);
		assert_int_equal(cpu_mask, (1u << n_cpus) - 1);
		/* What was opened reads: the flags were the kernel's to accept. */
		workload(5);
		struct perf_session_reading r[3];
		read_ok(s, r, 3);
		assert_int_equal(r[tc].status, PERF_SESSION_COUNTED);
		assert_true(r[tc].value > 0);
		assert_int_equal(r[cyc].status, PERF_SESSION_COUNTED);
		assert_int_equal(r[raw].status, PERF_SESSION_COUNTED);
		perf_session_destroy(s);
	}
}

static void test_derive(void **state)
{
	(void)state;
	struct perf_session_reading r = { .value = 1000, .time_enabled = 400, .time_running = 100 };
	perf_session_derive(&r);
	assert_true(r.multiplexed);
	assert_false(r.never_ran);
	assert_true(r.scaled == 4000.0);

	r = (struct perf_session_reading){ .value = 0, .time_enabled = 400, .time_running = 0 };
	perf_session_derive(&r);
	assert_true(r.multiplexed);
	assert_true(r.never_ran);
	assert_true(r.scaled == 0.0);

	r = (struct perf_session_reading){ .value = 7, .time_enabled = 400, .time_running = 400 };
	perf_session_derive(&r);
	assert_false(r.multiplexed);
	assert_false(r.never_ran);
	assert_true(r.scaled == 7.0);

	/* value * enabled overflows 64 bits; the estimate must not. */
	r = (struct perf_session_reading){ .value = UINT64_MAX / 2, .time_enabled = 1000000000ull,
				    .time_running = 500000000ull };
	perf_session_derive(&r);
	assert_true(r.scaled > (double)UINT64_MAX * 0.99);
}

static void test_bad_args(void **state)
{
	(void)state;
	struct psess *s = NULL;
	char err[256];
	struct cpulist cpu0 = cpus_from("0"), none_set;
	cpulist_clear(&none_set);
	struct perf_session_opts both = { .cpus = &cpu0, .pid = 1 };
	assert_int_equal(perf_session_create(&both, &s, err, sizeof(err)), -EINVAL);
	assert_null(s);
	struct perf_session_opts none = { 0 };
	assert_int_equal(perf_session_create(&none, &s, err, sizeof(err)), -EINVAL);
	struct perf_session_opts empty = { .cpus = &none_set };
	assert_int_equal(perf_session_create(&empty, &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "names no CPU"));
	assert_null(s);
	struct perf_session_opts o = { .cpus = &cpu0 };
	assert_int_equal(perf_session_create(&o, &s, err, sizeof(err)), 0);
	struct perf_event_desc ev;
	parse("task-clock", &ev);
	assert_int_equal(perf_session_add_event(s, &ev, PERF_SESSION_DEDICATED, 5), 0);
	assert_int_equal(perf_session_add_event(s, &ev, PERF_SESSION_MULTIPLEXED, 5), -EINVAL);
	assert_non_null(strstr(perf_session_error(s), "group 5 is dedicated"));
	/* The clocks have PMUs of their own: no mixed groups. */
	struct perf_event_desc pf;
	parse("page-faults", &pf);
	assert_int_equal(perf_session_add_event(s, &pf, PERF_SESSION_DEDICATED, 5), -EINVAL);
	assert_non_null(strstr(perf_session_error(s), "page-faults: counted by the software PMU, cannot join group 5 of task-clock PMU events"));
	assert_int_equal(perf_session_set_placement(s, 0, PERF_SESSION_MULTIPLEXED), -EBADFD);
	assert_int_equal(perf_session_open(s), 0);
	assert_int_equal(perf_session_add_event(s, &ev, PERF_SESSION_DEDICATED, 0), -EBUSY);
	assert_int_equal(perf_session_set_placement(s, 9, PERF_SESSION_MULTIPLEXED), -EINVAL);
	perf_session_close(s);
	struct perf_session_reading r;
	assert_int_equal(perf_session_read(s, &r, 1), -EBADFD);
	perf_session_destroy(s);

	/* A pid that does not exist: open fails and says so. */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	struct perf_session_opts po = { .pid = dead };
	assert_int_equal(perf_session_create(&po, &s, err, sizeof(err)), 0);
	perf_session_add_event(s, &ev, PERF_SESSION_DEDICATED, 0);
	assert_int_equal(perf_session_open(s), -ESRCH);
	assert_non_null(strstr(perf_session_error(s), "no such process"));
	perf_session_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cpu_mode),
		cmocka_unit_test(test_cpu_mode_all_cpus),
		cmocka_unit_test(test_pid_mode),
		cmocka_unit_test(test_placement_change),
		cmocka_unit_test(test_reopen_failure_is_retried),
		cmocka_unit_test(test_model_pmu),
		cmocka_unit_test(test_no_hw_pmu),
		cmocka_unit_test(test_exclude_guest),
		cmocka_unit_test(test_derive),
		cmocka_unit_test(test_bad_args),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
