/* SPDX-License-Identifier: MIT */
/*
 * json_door: the socket protocol's result encoding (docs/protocol.md),
 * for the doors that speak JSON. It runs one decoded request through the
 * typed broker calls and renders the answer, or a broker event, as JSON
 * text written directly into a growing buffer: a plan of thousands of VMs
 * is rendered one VM after the other, never built as a tree of objects.
 * Byte for byte what json-c prints compact (JSON_C_TO_STRING_PLAIN, no
 * slash escaping), so every client reads it as before.
 *
 * Rights are the broker's: this module passes the caller on, and renders
 * each lease as the broker's viewer of the caller leaves it (another
 * user's without what identifies its owner's work).
 */
#ifndef VPMU_JSON_DOOR_H
#define VPMU_JSON_DOOR_H

#include <stddef.h>
#include <stdint.h>

#include "broker/broker.h"
#include "proto/proto.h"

struct json_object;

/* A growing text. Appending past max (0: no bound) or failing to grow
 * sets error (-EMSGSIZE, -ENOMEM) and appends nothing more. */
struct json_door_text {
	char *data;        /* NUL-terminated once anything was appended */
	size_t len, cap;
	size_t max;
	int error;
};
void json_door_text_fini(struct json_door_text *t);
/* Drops everything after len (a frame that could not be finished) and
 * clears the error. */
void json_door_text_truncate(struct json_door_text *t, size_t len);
int json_door_text_append(struct json_door_text *t, const char *s, size_t n);

/*
 * Runs req (any method but hello and watch, which are the door's) and
 * appends its result object to out. Returns 0, or a negative errno with
 * err filled (the broker's refusal, or too_large / out of memory when the
 * text could not be written; out may then hold part of it: truncate).
 */
int json_door_result(struct broker *b, const struct broker_caller *c, const struct proto_request *req,
		     struct json_door_text *out, struct proto_error *err);

/*
 * The same for a request that came with a descriptor (fd >= 0; -1: none),
 * which json_door owns from the call on, whatever the outcome: vm.bind
 * with route_fd true hands it to the broker; anything else closes it and
 * is refused (json_door_check_fd).
 */
int json_door_result_fd(struct broker *b, const struct broker_caller *c, const struct proto_request *req, int fd,
			struct json_door_text *out, struct proto_error *err);

/*
 * Whether a request and the descriptor that came with it (-1: none) go
 * together: only vm.bind with route_fd true takes one, and it needs one.
 * On a mismatch fills err (invalid_param) and returns -EINVAL. Never
 * closes fd: for doors that check before they run anything (the socket's
 * hello and watch are its own).
 */
int json_door_check_fd(const struct proto_request *req, int fd, struct proto_error *err);

/* Appends the watchers' form of an event: {"event":"plan",...}. */
int json_door_event(const struct broker_event *ev, struct json_door_text *out);

/* The same as json-c objects, for doors that convert them further (the
 * D-Bus door). *result is the caller's. */
int json_door_call(struct broker *b, const struct broker_caller *c, const struct proto_request *req,
		   struct json_object **result, struct proto_error *err);
struct json_object *json_door_event_object(const struct broker_event *ev);

#endif
