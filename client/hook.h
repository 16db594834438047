/* SPDX-License-Identifier: MIT */
/*
 * hook: the decisions of vpmu's libvirt QEMU hook
 * (/etc/libvirt/hooks/qemu.d/vpmu), kept apart from process I/O so that
 * every operation can be tested with a fake daemon.
 *
 * libvirt runs the hook synchronously, with no timeout, for every domain
 * operation, and a non-zero exit at prepare/start/started aborts the start
 * while one at reconnect kills a running guest. So the hook fails open:
 * it exits 1 only at prepare, only for a VM whose class is guaranteed, and
 * only when the daemon refused it or its metadata cannot be read. Anything
 * else (daemon down, slow, confused) lets the VM start, with a warning on
 * stderr that libvirt logs. The whole run is bounded (2 s by default): the
 * transport gets an absolute deadline and must give up by then.
 *
 * Operation (argv[2]) -> what the hook does:
 *   prepare    admission request; exit 1 only as said above
 *   started    bind the lease to the QEMU pid (from PID_DIR/NAME.pid)
 *   reconnect  the same bind (libvirtd restarted while the VM runs); never fails
 *   stopped, release
 *              release the lease (idempotent: both run on every stop)
 *   migrate, restore
 *              XML filters: stdin is copied to stdout unchanged
 *   anything else (start, attach, ...)  nothing, exit 0
 */
#ifndef VPMU_HOOK_H
#define VPMU_HOOK_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "proto/domain_policy.h"

#define HOOK_DEFAULT_PID_DIR "/run/libvirt/qemu"
#define HOOK_DEFAULT_BUDGET_USEC (2 * 1000 * 1000ull)

struct hook_admission {
	bool admitted;
	/* When refused: the daemon's explanation (which CPUs lack which
	 * counters); shown to the user by libvirt. Protocol messages are
	 * shorter (PROTO_MESSAGE_MAX). */
	char reason[512];
};

/*
 * How the hook reaches vpmud. deadline is absolute CLOCK_MONOTONIC in
 * microseconds; an implementation returns -ETIMEDOUT rather than pass it.
 * Return 0 or a negative errno (-ECONNREFUSED / -ENOENT: daemon not
 * running). Every failure is treated as "daemon unavailable": fail open.
 */
struct hook_transport {
	int (*admit)(void *ctx, const struct dompol *req, uint64_t deadline, struct hook_admission *out);
	/* started and reconnect: req is the full request again, so that a
	 * daemon that missed prepare (restarted, hook installed later) can
	 * still take the VM in. */
	int (*bind)(void *ctx, const struct dompol *req, pid_t qemu_pid, uint64_t deadline);
	/* uuid may be empty when the XML could not be read */
	int (*release)(void *ctx, const char *name, const char *uuid, uint64_t deadline);
	void *ctx;
};

struct hook_opts {
	const char *pid_dir;             /* NULL: HOOK_DEFAULT_PID_DIR */
	uint64_t budget_usec;            /* 0: HOOK_DEFAULT_BUDGET_USEC */
	struct domain_policy_defaults defaults; /* for a domain without our metadata */
	unsigned host_cpus;              /* bound for cpusets */
};

/*
 * Runs one hook invocation: argv as libvirt passes it (argv[0] the
 * program, then NAME OPERATION SUBOP EXTRA), xml the whole of stdin.
 * Writes the filtered XML (migrate, restore) to out and messages to err.
 * Returns the process exit code (0 or 1).
 */
int hook_run(int argc, char *const argv[], const char *xml, size_t xml_len, const struct hook_opts *opts,
	     const struct hook_transport *t, FILE *out, FILE *err);

/* Reads a libvirt pid file ("1234\n"); -ENOENT, -EINVAL (content), ... */
int hook_read_pid(const char *path, pid_t *pid);

/* CLOCK_MONOTONIC now in microseconds, the clock of every deadline. */
uint64_t hook_now_usec(void);

#endif
