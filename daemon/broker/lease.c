/* SPDX-License-Identifier: MIT */
#include "broker/lease.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "pmu/pmu.h"
#include "proto/cleanup.h"
#include "proto/textesc.h"

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

/* A value as the message shows it: its JSON text, escaped and cut. */
static const char *shown(struct json_object *v, char *buf, size_t len)
{
	const char *t = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
	char cut[96];
	snprintf(cut, sizeof(cut) - 3, "%s", t ? t : "?");
	if (t && strlen(t) >= sizeof(cut) - 3)
		strcat(cut, "...");
	return textesc_put(buf, len, cut);
}

/*
 * An integer member in lo..hi. json-c clamps what does not fit in 64 bits
 * to INT64_MAX or UINT64_MAX (read back as INT64_MAX), so hi < INT64_MAX
 * refuses those as well: a value is used as written or not at all.
 * 1: present and in range, 0: absent, -EINVAL with why.
 */
static int int_member(struct json_object *o, const char *key, int64_t lo, int64_t hi, const char *what,
		      int64_t *out, char *why, size_t whylen)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (json_object_is_type(v, json_type_int)) {
		int64_t x = json_object_get_int64(v);
		if (x >= lo && x <= hi) {
			*out = x;
			return 1;
		}
	}
	char buf[400];
	snprintf(why, whylen, "\"%s\" must be an integer %lld..%lld (%s), got %s", key, (long long)lo, (long long)hi,
		 what, shown(v, buf, sizeof(buf)));
	return -EINVAL;
}

static bool member_known(const char *key, const char *const *known)
{
	for (; *known; known++)
		if (!strcmp(key, *known))
			return true;
	return false;
}

/* Refuses a member the reader does not know: a rewrite would drop it. */
static int only_known(struct json_object *o, const char *where, const char *const *known, char *why,
		      size_t whylen)
{
	json_object_object_foreach(o, key, v) {
		(void)v;
		if (!member_known(key, known)) {
			char k[100];
			snprintf(why, whylen, "%sunknown member \"%s\" (a rewrite would lose it)", where,
				 textesc_put(k, sizeof(k), key));
			return -EINVAL;
		}
	}
	return 0;
}

int lease_parse(enum state_kind kind, const char *name, const char *text, size_t len, struct lease_rec *out,
		char *why, size_t whylen, struct proto_error *perr)
{
	static const char *const top_keys[] = { "seq", "request", "uid", "origin", "follows_connection",
						"owner_start", NULL };
	/* "id" is the envelope's, written by proto_request_encode and meaningless here */
	static const char *const request_keys[] = { "id", "method", "params", NULL };
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
	/* Strings must be UTF-8, as on the wire (the frame check) */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	if (o && jerr == json_tokener_success && !only_space(text, json_tokener_get_parse_end(tok), len))
		jerr = json_tokener_error_parse_unexpected;
	json_tokener_free(tok);
	struct json_object *rq, *method, *params, *v;
	int64_t x;
	int r = -EINVAL;
	if (!o || jerr != json_tokener_success) {
		snprintf(why, whylen, "does not parse as JSON (%s)",
			 jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr));
		goto out;
	}
	if (!json_object_is_type(o, json_type_object)) {
		snprintf(why, whylen, "not a JSON object");
		goto out;
	}
	if (only_known(o, "", top_keys, why, whylen) < 0)
		goto out;
	int got = int_member(o, "seq", 1, LEASE_SEQ_MAX, "the lease's rank", &x, why, whylen);
	if (got <= 0) {
		if (got == 0)
			snprintf(why, whylen, "has no \"seq\"");
		goto out;
	}
	out->seq = (uint64_t)x;
	/* (uid_t)-1 is "no uid" to the kernel's calls: never a caller */
	got = int_member(o, "uid", 0, (int64_t)UINT32_MAX - 1, "a uid_t", &x, why, whylen);
	if (got <= 0) {
		if (got == 0)
			snprintf(why, whylen, "has no \"uid\"");
		goto out;
	}
	out->uid = (uid_t)x;
	got = int_member(o, "owner_start", 0, LEASE_START_MAX, "a process start time in clock ticks", &x, why,
			 whylen);
	if (got < 0)
		goto out;
	out->has_start = got == 1;
	out->owner_start = got == 1 ? (uint64_t)x : 0;
	if (json_object_object_get_ex(o, "origin", &v)) {
		const char *t = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
		size_t tl = t ? (size_t)json_object_get_string_len(v) : 0;
		bool ok = t && tl < sizeof(out->origin) && strlen(t) == tl;
		for (size_t i = 0; ok && i < tl; i++)
			ok = t[i] >= 0x21 && t[i] <= 0x7e;
		if (!ok) {
			char buf[400];
			snprintf(why, whylen, "\"origin\" must be a string of at most %zu printable ASCII characters, got %s",
				 sizeof(out->origin) - 1, shown(v, buf, sizeof(buf)));
			goto out;
		}
		memcpy(out->origin, t, tl + 1);
	}
	if (json_object_object_get_ex(o, "follows_connection", &v)) {
		if (!json_object_is_type(v, json_type_boolean)) {
			char buf[400];
			snprintf(why, whylen, "\"follows_connection\" must be true or false, got %s",
				 shown(v, buf, sizeof(buf)));
			goto out;
		}
		out->follows = json_object_get_boolean(v);
	}
	if (!json_object_object_get_ex(o, "request", &rq) || !json_object_is_type(rq, json_type_object) ||
	    !json_object_object_get_ex(rq, "method", &method) || !json_object_object_get_ex(rq, "params", &params)) {
		snprintf(why, whylen, "\"request\" is not an object with method and params");
		goto out;
	}
	if (only_known(rq, "\"request\": ", request_keys, why, whylen) < 0)
		goto out;
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
		char buf[PROTO_MESSAGE_MAX + 1];
		/* the protocol's words echo the saved bytes: escaped for the log */
		snprintf(why, whylen, "invalid saved request: %s", textesc_put(buf, sizeof(buf), err.message));
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
		char a[PROTO_NAME_MAX * 4 + 1], b[PROTO_NAME_MAX * 4 + 1];
		snprintf(why, whylen, "names lease %s, not %s", textesc_put(a, sizeof(a), rname),
			 textesc_put(b, sizeof(b), name));
		goto out;
	}
	r = 0;
out:
	json_object_put(o);
	if (r < 0)
		proto_request_fini(&out->req);
	return r;
}
