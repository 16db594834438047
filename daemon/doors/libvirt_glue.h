/* SPDX-License-Identifier: MIT */
/*
 * libvirt_glue: the libvirt door of vpmud. It turns what the follower
 * (libvirt_events) reports about running domains into lease requests to the
 * broker, and nothing more: every decision (admission, refusal, placement)
 * stays in the broker. It builds the typed requests (no JSON in between)
 * and calls the broker as the caller { door libvirt, origin "libvirt" };
 * the broker refuses anything it would not reload, as it does for every
 * door.
 *
 * Rules (docs/libvirt.md, "The daemon-side follower"):
 *   running domain, no lease     vm.attach with the policy of its XML, then
 *                                vm.bind to PID_DIR/NAME.pid (skipped, and
 *                                logged, when the file is absent)
 *   running domain, leased by us vm.update when the policy (class, priority,
 *   or by the hook                gp, fixed, vCPU CPU sets) differs; vm.bind if
 *                                still unbound. Never a second lease.
 *   leased by anyone else        left alone (an operator's vpmuctl lease)
 *   <pmu state='off'/>           no lease; ours is released
 *   invalid vpmu metadata        logged; an existing lease is kept as is
 *   stopped                      our lease is released
 *   reconcile end                leases of origin "libvirt" or
 *                                "vpmu-libvirt-hook" whose domain was not
 *                                listed are released
 * A domain without vpmu metadata asks for what the hook asks for: no
 * dedicated counter (gp 0, fixed 0), priority and class from the daemon's
 * defaults. The two doors must agree, or they would undo each other.
 *
 * It calls libvirt only through the follower (events and its own listing),
 * never while a hook for the same domain waits on vpmud.
 */
#ifndef VPMU_LIBVIRT_GLUE_H
#define VPMU_LIBVIRT_GLUE_H

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "broker/broker.h"
#include "proto/config.h"
#include "doors/libvirt_events.h"

#define LIBVIRT_GLUE_DEFAULT_PID_DIR "/run/libvirt/qemu"
/* The origins whose leases this door reconciles. */
#define LIBVIRT_GLUE_ORIGIN "libvirt"
#define LIBVIRT_GLUE_HOOK_ORIGIN "vpmu-libvirt-hook"

struct libvirt_glue_opts {
	sd_event *event;               /* the loop the libvirt bridge runs on */
	struct broker *broker;
	const struct config *cfg;      /* default_priority/class read at each use */
	const char *uri;               /* libvirt URI to follow */
	const char *pid_dir;           /* NULL: LIBVIRT_GLUE_DEFAULT_PID_DIR */
	unsigned host_cpus;            /* CPU numbers accepted (1..DOMAIN_POLICY_MAX_CPUS) */
	const struct libvirt_events_follower_opts *follower; /* NULL: default backoff */
};

struct lvglue;

/*
 * Registers the libvirt event bridge on opts->event (idempotent) and starts
 * following opts->uri. Nothing happens before the loop runs; a URI that
 * cannot be opened is retried with backoff and never fails this call.
 * Returns 0, -EINVAL, -EBUSY (the bridge is on another loop), -ENOMEM.
 */
int libvirt_glue_new(const struct libvirt_glue_opts *opts, struct lvglue **out);
void libvirt_glue_free(struct lvglue *g);

/* Resync: drop the connection, reconnect and reconcile (daemon reload). */
int libvirt_glue_reconnect(struct lvglue *g);

/* The follower (borrowed), for tests that act on its libvirt connection. */
struct libvirt_events_follower *libvirt_glue_follower(const struct lvglue *g);

/* Reconciles completed since libvirt_glue_new (for tests and status). */
unsigned libvirt_glue_reconciles(const struct lvglue *g);

#endif
