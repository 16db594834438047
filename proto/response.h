/* SPDX-License-Identifier: MIT */
/*
 * response: what travels from vpmud to a client — results, errors, events —
 * built on the server side and classified on the client side.
 */
#ifndef VPMU_RESPONSE_H
#define VPMU_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* ---- response builders (server side); all take ownership of 'result' /
 * 'body' and return NULL on allocation failure. ---- */

struct json_object *response_result(uint64_t id, struct json_object *result);
/* id_known false → "id": null (the request's id could not be read). */
struct json_object *response_error(bool id_known, uint64_t id,
					 const struct proto_error *err);
/* {"event": name, "generation": n, ...body's members} */
struct json_object *response_event(const char *name, uint64_t generation,
				struct json_object *body);
/* The hello result: {"protocol": PROTO_VERSION, "server": server_version} */
struct json_object *response_hello_result(const char *server_version);

/* ---- client side ---- */

enum proto_response_kind {
	PROTO_RESP_RESULT = 0,
	PROTO_RESP_ERROR,
	PROTO_RESP_EVENT,
};

struct proto_response {
	enum proto_response_kind kind;
	bool id_known;               /* false for events and "id": null errors */
	uint64_t id;
	struct json_object *body;    /* result object, or the whole event; owned */
	struct proto_error error;    /* kind == PROTO_RESP_ERROR */
	char event[PROTO_NAME_MAX + 1];
	uint64_t generation;         /* events */
};

/* Parse one frame from the server. Unknown members are ignored (newer
 * servers may add them). -EBADMSG for anything that is not a response. */
int response_decode(const char *frame, size_t len, struct proto_response *out);
void response_fini(struct proto_response *r);

/* Parse the hello result body: protocol and server version string. */
int response_hello_result_decode(struct json_object *result, uint32_t *protocol,
			      char *server, size_t server_len);

#endif
