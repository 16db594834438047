/* SPDX-License-Identifier: MIT */
/*
 * libvirt_events: libvirt's event loop on sd-event, and a follower that
 * tells the daemon which domains run and when their PMU-relevant
 * configuration changes.
 *
 * The bridge. libvirt delivers events (and runs its keepalive and remote
 * I/O) only through an event implementation registered with
 * virEventRegisterImpl before the first virConnectOpen. That registration
 * is process-wide inside libvirt and cannot be undone or replaced, and its
 * callbacks carry no context pointer. So the bridge is registered once per
 * process, is bound to one sd_event loop, and lives until exit: libvirt's
 * registration table is the only global involved, plus the one pointer to
 * the bridge that libvirt's context-less callbacks must find it through.
 * Everything happens on the loop's thread: call libvirt only from there.
 *
 * Mapping: a handle is an sd_event io source (READABLE/WRITABLE/ERROR/
 * HANGUP <-> EPOLLIN/OUT/ERR/HUP; 0 disables it). A timeout of N > 0 ms is
 * a monotonic timer re-armed every N ms until updated or removed; 0 fires on
 * every loop iteration (a defer source); -1 is disabled. Free callbacks are
 * never called from inside remove: they run from a defer source on the next
 * iteration, because libvirt may hold its own locks while it removes.
 *
 * The follower. Opens a URI, registers for lifecycle, metadata-change and
 * tunable events, then lists the active domains ("reconcile") and reports
 * each with its live XML. When libvirt closes the connection (daemon
 * restart), it reconnects with exponential backoff and reconciles again.
 * Events are registered before the listing so that nothing is missed in
 * between; a domain may therefore be reported running twice, and the
 * daemon must treat on_domain_running as idempotent.
 */
#ifndef VPMU_LIBVIRT_EVENTS_H
#define VPMU_LIBVIRT_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <systemd/sd-event.h>

/*
 * Registers the bridge on loop e (taking a reference). Idempotent for the
 * same loop; -EBUSY if the process already registered another loop or
 * another event implementation is known to be in place.
 */
int libvirt_events_bridge_register(sd_event *e);

/* The loop the bridge runs on, or NULL before registration. */
sd_event *libvirt_events_bridge_loop(void);

struct libvirt_events_ops {
	/* A (re)connection's listing starts: forget what you believed ran. */
	void (*on_reconcile_begin)(void *ud);
	/* Started, or found running during a reconcile. xml is the live XML. */
	/* xml is NULL when the domain runs but its XML could not be read. */
	void (*on_domain_running)(void *ud, const char *name, const char *uuid, const char *xml);
	void (*on_reconcile_end)(void *ud);
	void (*on_domain_stopped)(void *ud, const char *name, const char *uuid);
	/* Our metadata or a vCPU pin changed on a running domain. */
	void (*on_domain_changed)(void *ud, const char *name, const char *uuid, const char *xml);
	/* Optional: connection state, with libvirt's message when it fails. */
	void (*on_connection)(void *ud, bool up, const char *why);
};

struct libvirt_events_follower_opts {
	uint64_t backoff_min_usec;  /* first retry delay; 0 = 500 ms */
	uint64_t backoff_max_usec;  /* cap of the doubling; 0 = 30 s */
};

struct libvirt_events_follower;

/*
 * Starts following uri on e, which must be the loop the bridge was
 * registered on (-ENXIO otherwise). The first connection attempt runs from
 * the loop, not from here, so every callback comes from the loop. ops and
 * uri are copied; opts may be NULL.
 */
int libvirt_events_follower_new(sd_event *e, const char *uri, const struct libvirt_events_ops *ops, void *ud,
		      const struct libvirt_events_follower_opts *opts, struct libvirt_events_follower **out);

/* Closes the connection (if any) and frees f. No callback runs afterwards. */
void libvirt_events_follower_free(struct libvirt_events_follower *f);

/* Drops the connection and reconnects on the next iteration (a daemon
 * reload uses this to resync). */
int libvirt_events_follower_reconnect(struct libvirt_events_follower *f);

bool libvirt_events_follower_connected(const struct libvirt_events_follower *f);

/* The live connection (borrowed; NULL while disconnected), for queries
 * such as virDomainGetVcpuPinInfo. */
virConnectPtr libvirt_events_follower_conn(const struct libvirt_events_follower *f);

/* Whether a tunable event's parameters touch a vCPU pin
 * ("cputune.vcpupin<N>"); the emulator and iothread pins do not count. */
bool libvirt_events_tunable_touches_vcpupin(const virTypedParameter *params, int nparams);

/* The delay before the next reconnect attempt (as chosen at the latest
 * failure; inside on_connection(up=false), the one about to be used). */
uint64_t libvirt_events_follower_retry_delay(const struct libvirt_events_follower *f);

#endif
