// SPDX-License-Identifier: MIT
#include "proto/response.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/json_fields.h"

/* Plans nest per CPU and per vCPU; generous, but bounded against stack
 * exhaustion by a hostile or broken server. */
#define RESPONSE_MAX_DEPTH 32

struct json_object *response_result(uint64_t id, struct json_object *result)
{
	_cleanup_json_ struct json_object *res = result ? result : json_object_new_object();
	_cleanup_json_ struct json_object *obj = NULL;

	if (!res || !json_object_is_type(res, json_type_object) || id > PROTO_MAX_ID)
		return NULL;
	obj = json_object_new_object();
	if (!obj || !json_fields_put(obj, "id", json_object_new_uint64(id)) ||
	    !json_fields_put(obj, "result", TAKE_PTR(res)))
		return NULL;
	return TAKE_PTR(obj);
}

struct json_object *response_error(bool id_known, uint64_t id, const struct proto_error *err)
{
	_cleanup_json_ struct json_object *obj = NULL, *e = NULL;
	struct json_object *body;
	enum proto_errcode code;

	if (!err)
		return NULL;
	/* PROTO_E_UNKNOWN exists only on the client side; never invent it on the wire */
	code = err->code == PROTO_E_UNKNOWN ? PROTO_E_INTERNAL : err->code;
	obj = json_object_new_object();
	e = json_object_new_object();
	if (!obj || !e)
		return NULL;
	/* json-c has no null object; adding NULL stores JSON null */
	if (id_known && id <= PROTO_MAX_ID) {
		if (!json_fields_put(obj, "id", json_object_new_uint64(id)))
			return NULL;
	} else if (json_object_object_add(obj, "id", NULL) < 0) {
		return NULL;
	}
	body = e;
	if (!json_fields_put(obj, "error", TAKE_PTR(e)) ||
	    !json_fields_put(body, "code", json_object_new_string(proto_errcode_name(code))) ||
	    !json_fields_put(body, "errno", json_object_new_int(err->err > 0 ? err->err : proto_errcode_errno(code))) ||
	    !json_fields_put(body, "message", json_object_new_string(err->message)) ||
	    (err->field[0] && !json_fields_put(body, "field", json_object_new_string(err->field))))
		return NULL;
	return TAKE_PTR(obj);
}

struct json_object *response_event(const char *name, uint64_t generation, struct json_object *body)
{
	_cleanup_json_ struct json_object *b = body, *obj = NULL;

	if (!name || (b && !json_object_is_type(b, json_type_object)))
		return NULL;
	obj = json_object_new_object();
	if (!obj || !json_fields_put(obj, "event", json_object_new_string(name)) ||
	    !json_fields_put(obj, "generation", json_object_new_uint64(generation)))
		return NULL;
	if (b) {
		/* "event" and "generation" are the envelope; a body must not shadow them */
		json_object_object_foreach(b, key, val) {
			if (strcmp(key, "event") == 0 || strcmp(key, "generation") == 0)
				return NULL;
			if (json_object_object_add(obj, key, json_object_get(val)) < 0) {
				json_object_put(val);
				return NULL;
			}
		}
	}
	return TAKE_PTR(obj);
}

struct json_object *response_hello_result(const char *server_version)
{
	struct json_object *obj = json_object_new_object();

	if (!obj || !server_version ||
	    !json_fields_put(obj, "protocol", json_object_new_int(PROTO_VERSION)) ||
	    !json_fields_put(obj, "server", json_object_new_string(server_version))) {
		json_object_put(obj);
		return NULL;
	}
	return obj;
}

/* Unsigned integer member within [0, max]; -EBADMSG otherwise. */
static int get_uint(struct json_object *obj, const char *key, uint64_t max, uint64_t *out)
{
	struct json_object *v;
	int64_t x;

	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_int))
		return -EBADMSG;
	x = json_object_get_int64(v);
	if (x < 0 || (uint64_t)x > max)
		return -EBADMSG;
	*out = (uint64_t)x;
	return 0;
}

static int decode_error(struct json_object *e, struct proto_error *out)
{
	struct json_object *v;
	const char *code;

	if (!json_object_is_type(e, json_type_object))
		return -EBADMSG;
	if (!json_object_object_get_ex(e, "code", &v) || !json_object_is_type(v, json_type_string))
		return -EBADMSG;
	code = json_object_get_string(v);
	out->code = proto_errcode_from_name(code);
	out->err = proto_errcode_errno(out->code);
	/* errno is informative; a missing or odd one falls back to the code's */
	if (json_object_object_get_ex(e, "errno", &v) && json_object_is_type(v, json_type_int)) {
		int64_t x = json_object_get_int64(v);

		if (x > 0 && x < 4096)
			out->err = (int)x;
	}
	if (json_object_object_get_ex(e, "message", &v) && json_object_is_type(v, json_type_string))
		snprintf(out->message, sizeof(out->message), "%s", json_object_get_string(v));
	else
		snprintf(out->message, sizeof(out->message), "%s", code);
	if (json_object_object_get_ex(e, "field", &v) && json_object_is_type(v, json_type_string))
		snprintf(out->field, sizeof(out->field), "%s", json_object_get_string(v));
	return 0;
}

static int classify(struct json_object *obj, struct proto_response *out)
{
	struct json_object *v, *id;

	if (!json_object_is_type(obj, json_type_object))
		return -EBADMSG;
	if (json_object_object_get_ex(obj, "event", &v)) {
		const char *name;

		if (!json_object_is_type(v, json_type_string))
			return -EBADMSG;
		name = json_object_get_string(v);
		if (json_object_get_string_len(v) < 1 || json_object_get_string_len(v) > PROTO_NAME_MAX)
			return -EBADMSG;
		if (get_uint(obj, "generation", UINT64_MAX, &out->generation) < 0)
			return -EBADMSG;
		out->kind = PROTO_RESP_EVENT;
		snprintf(out->event, sizeof(out->event), "%s", name);
		out->body = json_object_get(obj);
		return 0;
	}
	if (!json_object_object_get_ex(obj, "id", &id))
		return -EBADMSG;
	if (id) {
		if (get_uint(obj, "id", PROTO_MAX_ID, &out->id) < 0)
			return -EBADMSG;
		out->id_known = true;
	}
	if (json_object_object_get_ex(obj, "error", &v)) {
		out->kind = PROTO_RESP_ERROR;
		return decode_error(v, &out->error);
	}
	/* an error may carry "id": null, a result never does */
	if (!out->id_known || !json_object_object_get_ex(obj, "result", &v) ||
	    !json_object_is_type(v, json_type_object))
		return -EBADMSG;
	out->kind = PROTO_RESP_RESULT;
	out->body = json_object_get(v);
	return 0;
}

int response_decode(const char *frame, size_t len, struct proto_response *out)
{
	_cleanup_json_tokener_ struct json_tokener *tok = NULL;
	_cleanup_json_ struct json_object *obj = NULL;
	int r;

	if (!frame || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (len > PROTO_MAX_RESPONSE || len > INT32_MAX || memchr(frame, '\0', len))
		return -EBADMSG;
	tok = json_tokener_new_ex(RESPONSE_MAX_DEPTH);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, frame, (int)len);
	if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len)
		return -EBADMSG;
	r = classify(obj, out);
	if (r < 0)
		response_fini(out);
	return r;
}

void response_fini(struct proto_response *r)
{
	if (!r)
		return;
	json_object_put(r->body);
	r->body = NULL;
}

int response_hello_result_decode(struct json_object *result, uint32_t *protocol,
			      char *server, size_t server_len)
{
	struct json_object *v;
	uint64_t p;

	if (!result || !protocol || !json_object_is_type(result, json_type_object))
		return -EINVAL;
	if (get_uint(result, "protocol", UINT32_MAX, &p) < 0)
		return -EBADMSG;
	if (!json_object_object_get_ex(result, "server", &v) || !json_object_is_type(v, json_type_string))
		return -EBADMSG;
	*protocol = (uint32_t)p;
	if (server && server_len)
		snprintf(server, server_len, "%s", json_object_get_string(v));
	return 0;
}
