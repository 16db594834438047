/* SPDX-License-Identifier: MIT */
/*
 * vpmu-bench-read: what one perf_session_read costs for N events on M CPUs, read
 * one fd per event and CPU ("per-event") or one PERF_FORMAT_GROUP read per
 * CPU ("group"). Software events only, so the numbers are the syscall and
 * parsing cost, not a PMU's. The rdpmc self-monitoring path is measured
 * only when the hardware allows it, and otherwise reported as skipped with
 * the reason.
 *
 * usage: vpmu-bench-read [--smoke] [--json] [--iters K]
 */
#include <errno.h>
#include <json-c/json.h>
#include <linux/perf_event.h>
#include <perf/evsel.h>
#include <perf/threadmap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "perf/perf_session.h"

/* All on the "software" PMU, so they may share a group. */
static const char *const sw_events[] = {
	"page-faults", "context-switches", "cpu-migrations", "minor-faults",
	"major-faults", "alignment-faults", "emulation-faults", "dummy",
};
#define N_SW (sizeof(sw_events) / sizeof(sw_events[0]))

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct result {
	const char *mode;
	unsigned events, cpus;
	unsigned long reads_per_call;
	double ns_per_call, ns_per_counter;
};

static int bench_one(unsigned nev, unsigned ncpu, bool grouped, unsigned iters, struct result *r)
{
	char err[256];
	struct cpulist cpus;
	cpulist_clear(&cpus);
	for (unsigned c = 0; c < ncpu; c++)
		cpulist_set(&cpus, c);
	struct psess *s;
	struct perf_session_opts o = { .cpus = &cpus };
	int rc = perf_session_create(&o, &s, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "bench-read: %s\n", err);
		return rc;
	}
	for (unsigned i = 0; i < nev; i++) {
		struct perf_event_desc ev;
		rc = perf_event_parse(sw_events[i % N_SW], NULL, &ev, err, sizeof(err));
		if (rc == 0)
			rc = perf_session_add_event(s, &ev, PERF_SESSION_MULTIPLEXED, grouped ? 1 : 0);
		if (rc < 0)
			goto out;
	}
	rc = perf_session_open(s);
	if (rc < 0)
		goto out;
	struct perf_session_reading rd[64];
	/* One untimed read warms the paths and checks it works at all. */
	rc = perf_session_read(s, rd, nev);
	if (rc < 0)
		goto out;
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < iters && rc == 0; i++)
		rc = perf_session_read(s, rd, nev);
	uint64_t dt = now_ns() - t0;
	if (rc < 0)
		goto out;
	r->mode = grouped ? "group" : "per-event";
	r->events = nev;
	r->cpus = ncpu;
	r->reads_per_call = perf_session_last_read_syscalls(s);
	r->ns_per_call = (double)dt / iters;
	r->ns_per_counter = r->ns_per_call / (nev * ncpu);
out:
	if (rc < 0)
		fprintf(stderr, "bench-read: %s\n", perf_session_error(s));
	perf_session_destroy(s);
	return rc;
}

/*
 * rdpmc: libperf's perf_evsel__read takes the user-space path for a
 * self-monitoring event whose control page allows rdpmc. Only a hardware
 * event can use it, so on a host without a PMU it is skipped.
 */
static bool bench_rdpmc(unsigned iters, double *ns, char *why, size_t whylen)
{
	struct perf_event_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = PERF_TYPE_HARDWARE;
	attr.config = PERF_COUNT_HW_INSTRUCTIONS;
	pid_t self = 0;
	struct perf_thread_map *threads = perf_thread_map__new_array(1, &self);
	struct perf_evsel *evsel = perf_evsel__new(&attr);
	bool ok = false;
	if (!threads || !evsel) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	int rc = perf_evsel__open(evsel, NULL, threads);
	if (rc < 0) {
		snprintf(why, whylen, "hardware event 'instructions' does not open (%s): %s",
			 strerror(-rc),
			 rc == -ENOENT || rc == -EOPNOTSUPP || rc == -ENODEV
				 ? "the host exposes no hardware PMU"
				 : "no hardware counter available");
		goto out;
	}
	rc = perf_evsel__mmap(evsel, 0);
	if (rc < 0) {
		snprintf(why, whylen, "control page mmap failed: %s", strerror(-rc));
		goto out_close;
	}
	struct perf_event_mmap_page *pc = perf_evsel__mmap_base(evsel, 0, 0);
	if (!pc || !pc->cap_user_rdpmc) {
		snprintf(why, whylen,
			 "cap_user_rdpmc is 0 (see /sys/bus/event_source/devices/cpu/rdpmc)");
		goto out_unmap;
	}
	struct perf_counts_values c;
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < iters; i++)
		perf_evsel__read(evsel, 0, 0, &c);
	*ns = (double)(now_ns() - t0) / iters;
	ok = true;
out_unmap:
	perf_evsel__munmap(evsel);
out_close:
	perf_evsel__close(evsel);
out:
	perf_evsel__delete(evsel);
	perf_thread_map__put(threads);
	return ok;
}

int main(int argc, char **argv)
{
	bool smoke = false, json = false;
	unsigned iters = 20000;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--smoke") == 0)
			smoke = true;
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
			iters = (unsigned)strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: %s [--smoke] [--json] [--iters K]\n", argv[0]);
			return 2;
		}
	}
	if (iters == 0)
		iters = 1;
	long online = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned ev_sizes[] = { 1, 4, 8 };
	unsigned n_ev_sizes = 3;
	unsigned cpu_sizes[] = { 1, (unsigned)online };
	unsigned n_cpu_sizes = online > 1 ? 2 : 1;
	if (smoke) {
		iters = 200;
		n_ev_sizes = 2;
		n_cpu_sizes = 1;
	}

	struct result res[16];
	unsigned nres = 0;
	for (unsigned c = 0; c < n_cpu_sizes; c++)
		for (unsigned e = 0; e < n_ev_sizes; e++)
			for (int g = 0; g < 2; g++) {
				if (bench_one(ev_sizes[e], cpu_sizes[c], g, iters, &res[nres]) < 0)
					return 1;
				nres++;
			}
	double rdpmc_ns = 0;
	char why[256] = "";
	bool rdpmc = bench_rdpmc(iters, &rdpmc_ns, why, sizeof(why));

	if (json) {
		json_object *root = json_object_new_object();
		json_object_object_add(root, "benchmark", json_object_new_string("read"));
		json_object_object_add(root, "iterations", json_object_new_int((int)iters));
		json_object_object_add(root, "events_kind", json_object_new_string("software"));
		json_object *arr = json_object_new_array();
		for (unsigned i = 0; i < nres; i++) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "mode", json_object_new_string(res[i].mode));
			json_object_object_add(o, "events", json_object_new_int((int)res[i].events));
			json_object_object_add(o, "cpus", json_object_new_int((int)res[i].cpus));
			json_object_object_add(o, "read_syscalls_per_call",
					       json_object_new_int64((int64_t)res[i].reads_per_call));
			json_object_object_add(o, "ns_per_call", json_object_new_double(res[i].ns_per_call));
			json_object_object_add(o, "ns_per_counter",
					       json_object_new_double(res[i].ns_per_counter));
			json_object_array_add(arr, o);
		}
		json_object_object_add(root, "results", arr);
		json_object *r = json_object_new_object();
		json_object_object_add(r, "status", json_object_new_string(rdpmc ? "measured" : "skipped"));
		if (rdpmc)
			json_object_object_add(r, "ns_per_read", json_object_new_double(rdpmc_ns));
		else
			json_object_object_add(r, "reason", json_object_new_string(why));
		json_object_object_add(root, "rdpmc", r);
		printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
		json_object_put(root);
		return 0;
	}
	printf("perf_session_read cost, software events, %u iterations each\n", iters);
	printf("%-10s %6s %5s %11s %12s %14s\n", "mode", "events", "cpus", "read(2)/call", "ns/call",
	       "ns/counter");
	for (unsigned i = 0; i < nres; i++)
		printf("%-10s %6u %5u %11lu %12.0f %14.1f\n", res[i].mode, res[i].events, res[i].cpus,
		       res[i].reads_per_call, res[i].ns_per_call, res[i].ns_per_counter);
	if (rdpmc)
		printf("rdpmc (self-monitoring, 1 event): %.1f ns/read\n", rdpmc_ns);
	else
		printf("rdpmc: skipped: %s\n", why);
	return 0;
}
