/* SPDX-License-Identifier: MIT */
/*
 * dbus_service: the D-Bus door, org.vpmu.Broker1 at /org/vpmu/Broker1, for
 * orchestration agents. A thin adapter over the broker like server.c: it
 * reads D-Bus arguments into the typed requests proto validates, supplies
 * the caller's credentials (and, when they are not enough, polkit's
 * answer, asked asynchronously), reports each bus peer as one broker
 * connection that its leases follow, and shows the broker's typed views as
 * one object per VM and per session. Who may do what, and every lease's
 * lifetime, stay in the broker. docs/dbus-api.md is the contract.
 */
#ifndef VPMU_DBUS_SERVICE_H
#define VPMU_DBUS_SERVICE_H

#include <stddef.h>
#include <systemd/sd-event.h>

#include "broker/broker.h"
#include "proto/config.h"

#define DBUS_SERVICE_NAME "org.vpmu.Broker1"
#define DBUS_SERVICE_PATH "/org/vpmu/Broker1"
#define DBUS_SERVICE_POLKIT_ACTION "org.vpmu.broker1.manage"

struct dbus_service;

/*
 * Connects to bus_address (NULL: the system bus), exports the objects,
 * takes the name and attaches to event. max_cpus bounds CPU numbers in
 * requests, as for the socket. On failure returns a negative errno and says
 * why; the caller decides whether a missing bus matters.
 */
int dbus_service_new(sd_event *event, struct broker *broker, const struct config *cfg,
		     const char *bus_address, unsigned max_cpus, struct dbus_service **out,
		     char *why, size_t whylen);
/* Leaves the leases that follow bus peers to the broker as they are: a
 * daemon that stops has not seen its agents leave. */
void dbus_service_free(struct dbus_service *s);

#endif
