/* SPDX-License-Identifier: MIT */
/*
 * owner: ties a lease to the life of a process. A pidfd becomes readable
 * when its process exits, so sd-event wakes us at once (well inside the
 * 100 ms the daemon promises) and no PID reuse can fool us while we hold it.
 * Across a daemon restart only the pid survives, so the state also keeps the
 * process start time, which a reused pid would not match.
 */
#ifndef VPMU_OWNER_H
#define VPMU_OWNER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

struct owner_watch;
typedef void (*owner_gone_fn)(struct owner_watch *w, void *userdata);

/* Opens a pidfd for pid (or takes ownership of pidfd if >= 0) and calls gone
 * once when the process exits. -ESRCH if it is already gone. */
int owner_watch_new(sd_event *ev, pid_t pid, int pidfd, owner_gone_fn gone, void *userdata,
		    struct owner_watch **out);
void owner_watch_free(struct owner_watch *w);
pid_t owner_watch_pid(const struct owner_watch *w);
int owner_watch_pidfd(const struct owner_watch *w);

/* Start time of pid in clock ticks since boot (/proc/PID/stat field 22), or
 * a negative errno. */
int owner_start_time(pid_t pid, uint64_t *ticks);

/* True if pid runs and started at start_ticks (0: do not check). */
bool owner_alive(pid_t pid, uint64_t start_ticks);

#endif
