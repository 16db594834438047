/* SPDX-License-Identifier: MIT */
/*
 * server: the Unix-socket door. Accepts connections, reads peer
 * credentials, decodes newline-delimited JSON frames (proto/), runs hello
 * and watch itself and everything else through the broker. No policy here:
 * the only decision it makes is who counts as privileged (root, or a member
 * of the configured admin group), from the kernel's peer credentials.
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
	const struct config *cfg;   /* admin_group and max_clients read live */
	int listen_fd;              /* >= 0: socket-activated fd; -1: bind cfg->socket */
	unsigned max_cpus;          /* CPU numbers accepted in requests */
};

int server_new(const struct server_opts *opts, struct server **out, char *why, size_t whylen);
void server_free(struct server *s);
unsigned server_n_clients(const struct server *s);

#endif
