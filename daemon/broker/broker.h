/* SPDX-License-Identifier: MIT */
/*
 * broker: the one core every door (socket, D-Bus, libvirt) calls. It owns
 * the leases, feeds the arbiter, persists every change before answering,
 * hands transitions to the kvm port, keeps host sessions on the placements
 * the plan gives them, and tells watchers what changed. Requests arrive as
 * decoded proto structs; results leave as json-c objects, which each
 * transport encodes its own way.
 */
#ifndef VPMU_BROKER_H
#define VPMU_BROKER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "proto/config.h"
#include "kvm/kvm_port.h"
#include "pmu/pmu.h"
#include "proto/proto.h"

struct broker;

/* Who asks: transports fill this from peer credentials. */
struct broker_caller {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	bool privileged;        /* root or a member of admin_group: may change state */
	const char *transport;  /* "socket", "dbus", "libvirt": for the log */
	/* Who made a lease, kept with it across restarts ("vpmuctl",
	 * "vpmu-libvirt-hook", "dbus", "libvirt"): each door reconciles the
	 * leases it made. NULL: the transport's name. */
	const char *origin;
	/* The transport ends what this caller makes when the caller's
	 * connection goes (a D-Bus peer leaving the bus), unless a process
	 * owns it (a VMM, an owner_pid). Such a lease cannot outlive a daemon
	 * restart, which closes every connection: it is not restored. */
	bool follows_connection;
};

struct broker_opts {
	sd_event *event;
	const struct config *cfg;     /* read at each request: reload changes defaults */
	const struct pmu_desc *pmu;   /* copied */
	const char *pmu_note;         /* why this PMU (fallback reason), may be NULL */
	struct kvm_port *port;        /* owned by the caller, outlives the broker */
	const char *kvm_host_summary; /* stock-kernel detection, one line, may be NULL */
	const char *kvm_note;         /* why this KVM backend, may be NULL (then the port's) */
	const char *state_dir;
	const char *sysfs_root;       /* NULL: "/" (tests pass fixture trees) */
};

int broker_new(const struct broker_opts *opts, struct broker **out, char *why, size_t whylen);
void broker_free(struct broker *b);

/* Reloads the state directory and reconciles it with what is alive. Logs
 * every lease it restores or drops, and why. */
int broker_restore(struct broker *b);

/*
 * Runs one request (everything but hello and watch, which are transport
 * matters). Returns 0 with *result set, or a negative errno with err
 * filled; a refused or failed request changes nothing.
 */
int broker_handle(struct broker *b, const struct broker_caller *caller,
		  const struct proto_request *req, struct json_object **result,
		  struct proto_error *err);

/* Plan events for watchers: fn gets each event (borrowed: take a reference
 * to keep it). */
typedef void (*broker_event_fn)(struct json_object *event, void *userdata);
int broker_subscribe(struct broker *b, broker_event_fn fn, void *userdata, uint64_t *sub_id);
void broker_unsubscribe(struct broker *b, uint64_t sub_id);

/* Called (with a NULL event) after every accepted change; for the daemon's
 * own bookkeeping (sd_notify STATUS), not counted as a watcher. */
void broker_set_change_hook(struct broker *b, broker_event_fn fn, void *userdata);

uint64_t broker_generation(const struct broker *b);
/* One line for sd_notify STATUS= and the log. */
void broker_summary(const struct broker *b, char *buf, size_t len);

/* A VM lease's identity: unique for the daemon's life, so a name detached
 * and attached again is another lease. 0 if there is no such VM. */
uint64_t broker_vm_id(const struct broker *b, const char *name);
/* Whether the VM lease follows a VMM process. */
bool broker_vm_bound(const struct broker *b, const char *name);
/* The origin a VM lease was made with, or NULL if there is no such VM. */
const char *broker_vm_origin(const struct broker *b, const char *name);
/* Names of the VM leases made by origin (all if NULL); *names is a
 * NULL-terminated array the caller frees (strings included). */
int broker_vm_names(const struct broker *b, const char *origin, char ***names);

/* Lease removal by name from inside the daemon (libvirt follower, owner
 * death); logs reason. -ENOENT if no such VM. */
int broker_vm_release(struct broker *b, const char *name, const char *reason);

#endif
