/* SPDX-License-Identifier: MIT */
/*
 * server: the Unix-socket door. Accepts connections, reads the peer's
 * credentials from the kernel (SO_PEERCRED, SO_PEERGROUPS), decodes
 * newline-delimited JSON frames (proto/), runs hello and watch itself and
 * everything else through the broker, whose answers json_door renders. No
 * policy here: the broker decides what each peer may do from its
 * credentials. Each client is a broker connection whose leases outlive it.
 */
#ifndef VPMU_SERVER_H
#define VPMU_SERVER_H

#include <stddef.h>
#include <systemd/sd-event.h>

#include "broker/broker.h"
#include "proto/config.h"

struct server;

struct server_opts {
	sd_event *event;
	struct broker *broker;
	const struct config *cfg;   /* admission limits and timeouts read live (docs/config.md, "Limits");
				     * admin_group names the socket's group */
	int listen_fd;              /* >= 0: socket-activated fd; -1: bind cfg->socket */
	unsigned max_cpus;          /* CPU numbers accepted in requests */
};

int server_new(const struct server_opts *opts, struct server **out, char *why, size_t whylen);
void server_free(struct server *s);
unsigned server_n_clients(const struct server *s);

#endif
