/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/owner.h"

struct seen {
	int calls;
	uint64_t at_usec;
	sd_event *ev;
};

static void on_gone(struct owner_watch *w, void *ud)
{
	struct seen *s = ud;
	(void)w;
	s->calls++;
	sd_event_now(s->ev, CLOCK_MONOTONIC, &s->at_usec);
	sd_event_exit(s->ev, 0);
}

static pid_t spawn_sleeper(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pause();
		_exit(0);
	}
	return pid;
}

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

struct killer {
	pid_t pid;
	uint64_t killed_at;
};

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *ud)
{
	struct killer *k = ud;
	(void)s;
	(void)usec;
	k->killed_at = now_usec();
	kill(k->pid, SIGKILL);
	return 0;
}

static void test_death_noticed_quickly(void **st)
{
	(void)st;
	sd_event *ev;
	struct owner_watch *w;
	struct seen s = {0};
	pid_t pid = spawn_sleeper();
	uint64_t start;
	struct killer k = {.pid = pid};

	assert_int_equal(sd_event_new(&ev), 0);
	s.ev = ev;
	assert_int_equal(owner_watch_new(ev, pid, -1, on_gone, &s, &w), 0);
	assert_int_equal(owner_watch_pid(w), pid);

	/* The process is alive: nothing fires within 50 ms. */
	sd_event_now(ev, CLOCK_MONOTONIC, &start);
	/* accuracy 1 us: sd-event's default slack (250 ms) would blur the measure. */
	assert_int_equal(sd_event_add_time(ev, NULL, CLOCK_MONOTONIC, start + 50000, 1, on_kill_timer, &k), 0);
	assert_int_equal(sd_event_loop(ev), 0);
	assert_int_equal(s.calls, 1);
	/* Promise: lease release within 100 ms of death. */
	assert_true(k.killed_at >= start + 50000);
	assert_true(s.at_usec >= k.killed_at);
	assert_true(s.at_usec - k.killed_at < 100000);
	owner_watch_free(w);
	waitpid(pid, NULL, 0);
	sd_event_unref(ev);
}

static void test_gone_already(void **st)
{
	(void)st;
	sd_event *ev;
	struct owner_watch *w;
	struct seen s = {0};
	pid_t pid = spawn_sleeper();
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	assert_int_equal(sd_event_new(&ev), 0);
	assert_int_equal(owner_watch_new(ev, pid, -1, on_gone, &s, &w), -ESRCH);
	assert_int_equal(owner_watch_new(ev, 0, -1, on_gone, &s, &w), -EINVAL);
	sd_event_unref(ev);
}

static void test_alive_and_start_time(void **st)
{
	(void)st;
	uint64_t t, t2;
	pid_t pid = spawn_sleeper();
	assert_int_equal(owner_start_time(pid, &t), 0);
	assert_true(owner_alive(pid, t));
	assert_true(owner_alive(pid, 0));
	/* A different start time means the pid was reused by someone else. */
	assert_false(owner_alive(pid, t + 1));
	kill(pid, SIGKILL);
	/* A zombie is not alive. */
	usleep(20000);
	assert_false(owner_alive(pid, t));
	waitpid(pid, NULL, 0);
	assert_false(owner_alive(pid, 0));
	assert_int_equal(owner_start_time(getpid(), &t2), 0);
	assert_true(t2 > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_death_noticed_quickly),
		cmocka_unit_test(test_gone_already),
		cmocka_unit_test(test_alive_and_start_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
