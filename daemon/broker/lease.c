/* SPDX-License-Identifier: MIT */
#include "broker/lease.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "pmu/pmu.h"

int lease_encode(uint64_t seq, struct proto_request *req, uid_t uid, const char *origin, bool follows,
		 bool has_start, uint64_t start, char **text, size_t *len)
{
	struct json_object *rq = proto_request_encode(req);
	if (!rq)
		return -ENOMEM;
	struct json_object *o = json_object_new_object();
	if (!o) {
		json_object_put(rq);
		return -ENOMEM;
	}
	bool ok = json_object_object_add(o, "seq", json_object_new_uint64(seq)) == 0 &&
		  json_object_object_add(o, "request", rq) == 0;
	if (!ok)
		json_object_put(rq);
	ok = ok && json_object_object_add(o, "uid", json_object_new_int64(uid)) == 0 &&
	     json_object_object_add(o, "origin", json_object_new_string(origin)) == 0 &&
	     (!follows || json_object_object_add(o, "follows_connection", json_object_new_boolean(true)) == 0) &&
	     (!has_start || json_object_object_add(o, "owner_start", json_object_new_uint64(start)) == 0);
	const char *t = NULL;
	size_t n = 0;
	if (ok)
		t = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	char *copy = t ? malloc(n + 2) : NULL;
	if (copy) {
		memcpy(copy, t, n);
		copy[n++] = '\n';
		copy[n] = '\0';
	}
	json_object_put(o);
	if (!copy)
		return -ENOMEM;
	*text = copy;
	*len = n;
	return 0;
}

static bool only_space(const char *s, size_t from, size_t len)
{
	for (size_t i = from; i < len; i++)
		if (s[i] != ' ' && s[i] != '\n' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

int lease_parse(enum state_kind kind, const char *name, const char *text, size_t len, struct lease_rec *out,
		char *why, size_t whylen, struct proto_error *perr)
{
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	snprintf(out->name, sizeof(out->name), "%s", name);
	if (len > INT32_MAX) {
		snprintf(why, whylen, "too large to parse");
		return -EINVAL;
	}
	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	if (o && jerr == json_tokener_success && !only_space(text, json_tokener_get_parse_end(tok), len))
		jerr = json_tokener_error_parse_unexpected;
	json_tokener_free(tok);
	struct json_object *seq, *rq, *uid, *method, *params, *v;
	int r = -EINVAL;
	if (!o || jerr != json_tokener_success) {
		snprintf(why, whylen, "does not parse as JSON (%s)",
			 jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr));
		goto out;
	}
	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, "seq", &seq) ||
	    !json_object_is_type(seq, json_type_int) || json_object_get_int64(seq) < 1 ||
	    !json_object_object_get_ex(o, "uid", &uid) || !json_object_is_type(uid, json_type_int) ||
	    json_object_get_int64(uid) < 0 || json_object_get_int64(uid) >= UINT32_MAX) {
		snprintf(why, whylen, "not an object with a positive integer \"seq\" and an integer \"uid\"");
		goto out;
	}
	out->seq = (uint64_t)json_object_get_int64(seq);
	out->uid = (uid_t)json_object_get_int64(uid);
	if (!json_object_object_get_ex(o, "request", &rq) || !json_object_is_type(rq, json_type_object) ||
	    !json_object_object_get_ex(rq, "method", &method) || !json_object_object_get_ex(rq, "params", &params)) {
		snprintf(why, whylen, "\"request\" is not an object with method and params");
		goto out;
	}
	/* The saved request goes through the same validation as a live one,
	 * in a fresh envelope. */
	struct json_object *env = json_object_new_object();
	if (!env) {
		r = -ENOMEM;
		goto out;
	}
	json_object_object_add(env, "id", json_object_new_int(0));
	json_object_object_add(env, "method", json_object_get(method));
	json_object_object_add(env, "params", json_object_get(params));
	struct proto_error err = {0};
	bool id_known;
	uint64_t id;
	int pr = proto_request_from_json(env, PMU_MAX_CPUS, &out->req, &id_known, &id, &err);
	json_object_put(env);
	enum proto_method want = kind == STATE_VM ? PROTO_M_VM_ATTACH : PROTO_M_SESSION_START;
	if (pr < 0) {
		snprintf(why, whylen, "invalid saved request: %s", err.message);
		if (perr)
			*perr = err;
		goto out;
	}
	if (out->req.method != want) {
		snprintf(why, whylen, "holds a %s request, not %s", proto_method_name(out->req.method),
			 proto_method_name(want));
		goto out;
	}
	const char *rname = kind == STATE_VM ? out->req.u.vm_attach.name : out->req.u.session_start.name;
	if (strcmp(rname, name)) {
		snprintf(why, whylen, "names lease %s, not %s", rname, name);
		goto out;
	}
	if (json_object_object_get_ex(o, "origin", &v) && json_object_is_type(v, json_type_string))
		snprintf(out->origin, sizeof(out->origin), "%s", json_object_get_string(v));
	if (json_object_object_get_ex(o, "owner_start", &v) && json_object_is_type(v, json_type_int))
		out->owner_start = json_object_get_uint64(v);
	out->follows = json_object_object_get_ex(o, "follows_connection", &v) &&
		       json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
	r = 0;
out:
	json_object_put(o);
	if (r < 0)
		proto_request_fini(&out->req);
	return r;
}

