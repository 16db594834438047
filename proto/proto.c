// SPDX-License-Identifier: MIT
#include "proto/proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* Requests nest at most top > params > vcpus > [i] > cpus > [j]; a little
 * slack for later versions, but deep enough nesting to exhaust the stack
 * is refused by the tokenizer. */
#define REQUEST_MAX_DEPTH 16

static const char *const errcode_names[PROTO_E__COUNT] = {
	[PROTO_E_BAD_REQUEST] = "bad_request",
	[PROTO_E_UNKNOWN_METHOD] = "unknown_method",
	[PROTO_E_UNKNOWN_FIELD] = "unknown_field",
	[PROTO_E_INVALID_PARAM] = "invalid_param",
	[PROTO_E_TOO_LARGE] = "too_large",
	[PROTO_E_UNSUPPORTED_VERSION] = "unsupported_version",
	[PROTO_E_PERMISSION_DENIED] = "permission_denied",
	[PROTO_E_NOT_FOUND] = "not_found",
	[PROTO_E_EXISTS] = "exists",
	[PROTO_E_REFUSED] = "refused",
	[PROTO_E_BUSY] = "busy",
	[PROTO_E_INTERNAL] = "internal",
	[PROTO_E_UNKNOWN] = "unknown",
};

static const int errcode_errno[PROTO_E__COUNT] = {
	[PROTO_E_BAD_REQUEST] = EBADMSG,
	[PROTO_E_UNKNOWN_METHOD] = EOPNOTSUPP,
	[PROTO_E_UNKNOWN_FIELD] = EINVAL,
	[PROTO_E_INVALID_PARAM] = EINVAL,
	[PROTO_E_TOO_LARGE] = EMSGSIZE,
	[PROTO_E_UNSUPPORTED_VERSION] = EPROTONOSUPPORT,
	[PROTO_E_PERMISSION_DENIED] = EPERM,
	[PROTO_E_NOT_FOUND] = ENOENT,
	[PROTO_E_EXISTS] = EEXIST,
	[PROTO_E_REFUSED] = ENOSPC,
	[PROTO_E_BUSY] = EBUSY,
	[PROTO_E_INTERNAL] = EIO,
	[PROTO_E_UNKNOWN] = EIO,
};

const char *proto_errcode_name(enum proto_errcode code)
{
	if ((unsigned int)code >= PROTO_E__COUNT)
		return errcode_names[PROTO_E_INTERNAL];
	return errcode_names[code];
}

enum proto_errcode proto_errcode_from_name(const char *name)
{
	if (!name)
		return PROTO_E_UNKNOWN;
	/* "unknown" is a client-side placeholder, never a wire code */
	for (int i = 0; i < PROTO_E_UNKNOWN; i++)
		if (strcmp(errcode_names[i], name) == 0)
			return (enum proto_errcode)i;
	return PROTO_E_UNKNOWN;
}

int proto_errcode_errno(enum proto_errcode code)
{
	if ((unsigned int)code >= PROTO_E__COUNT)
		return EIO;
	return errcode_errno[code];
}

enum proto_errcode proto_errcode_from_errno(int neg_errno)
{
	switch (-neg_errno) {
	case EINVAL: case ERANGE: return PROTO_E_INVALID_PARAM;
	case EBADMSG: return PROTO_E_BAD_REQUEST;
	case EOPNOTSUPP: return PROTO_E_UNKNOWN_METHOD;
	case EMSGSIZE: case E2BIG: return PROTO_E_TOO_LARGE;
	case EPROTONOSUPPORT: return PROTO_E_UNSUPPORTED_VERSION;
	case EPERM: case EACCES: return PROTO_E_PERMISSION_DENIED;
	case ENOENT: case ESRCH: return PROTO_E_NOT_FOUND;
	case EEXIST: return PROTO_E_EXISTS;
	case ENOSPC: return PROTO_E_REFUSED;
	case EBUSY: case EAGAIN: return PROTO_E_BUSY;
	default: return PROTO_E_INTERNAL;
	}
}

int proto_error_set(struct proto_error *e, enum proto_errcode code, int err,
		    const char *field, const char *fmt, ...)
{
	va_list ap;

	if (err <= 0)
		err = proto_errcode_errno(code);
	if (!e)
		return -err;
	e->code = code;
	e->err = err;
	snprintf(e->field, sizeof(e->field), "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -err;
}

static const char *const method_names[PROTO_M__COUNT] = {
	[PROTO_M_HELLO] = "hello",
	[PROTO_M_STATUS] = "status",
	[PROTO_M_PMU] = "pmu",
	[PROTO_M_PLAN] = "plan",
	[PROTO_M_VM_ATTACH] = "vm.attach",
	[PROTO_M_VM_DETACH] = "vm.detach",
	[PROTO_M_VM_UPDATE] = "vm.update",
	[PROTO_M_VM_LIST] = "vm.list",
	[PROTO_M_VM_SHOW] = "vm.show",
	[PROTO_M_SESSION_START] = "session.start",
	[PROTO_M_SESSION_STOP] = "session.stop",
	[PROTO_M_SESSION_READ] = "session.read",
	[PROTO_M_SESSION_LIST] = "session.list",
	[PROTO_M_WATCH] = "watch",
	[PROTO_M_VM_BIND] = "vm.bind",
};

const char *proto_method_name(enum proto_method m)
{
	if ((unsigned int)m >= PROTO_M__COUNT)
		return NULL;
	return method_names[m];
}

int proto_method_from_name(const char *name)
{
	if (!name)
		return -ENOENT;
	for (int i = 0; i < PROTO_M__COUNT; i++)
		if (strcmp(method_names[i], name) == 0)
			return i;
	return -ENOENT;
}

static const char *const class_names[PROTO_CLASS__COUNT] = {
	[PROTO_CLASS_GUARANTEED] = "guaranteed",
	[PROTO_CLASS_PREFERRED] = "preferred",
	[PROTO_CLASS_SHARED] = "shared",
};

const char *proto_class_name(enum proto_class c)
{
	if ((unsigned int)c >= PROTO_CLASS__COUNT)
		return NULL;
	return class_names[c];
}

int proto_class_from_name(const char *name)
{
	if (!name)
		return -ENOENT;
	for (int i = 0; i < PROTO_CLASS__COUNT; i++)
		if (strcmp(class_names[i], name) == 0)
			return i;
	return -ENOENT;
}

void proto_request_fini(struct proto_request *req)
{
	if (!req)
		return;
	switch (req->method) {
	case PROTO_M_VM_ATTACH:
		free(req->u.vm_attach.vcpus.cpus);
		req->u.vm_attach.vcpus.cpus = NULL;
		req->u.vm_attach.vcpus.count = 0;
		break;
	case PROTO_M_VM_UPDATE:
		free(req->u.vm_update.vcpus.cpus);
		req->u.vm_update.vcpus.cpus = NULL;
		req->u.vm_update.vcpus.count = 0;
		break;
	case PROTO_M_SESSION_START:
		for (uint32_t i = 0; req->u.session_start.events && i < req->u.session_start.n_events; i++)
			free(req->u.session_start.events[i]);
		free(req->u.session_start.events);
		req->u.session_start.events = NULL;
		req->u.session_start.n_events = 0;
		break;
	default:
		break;
	}
}

/* ---------------------------------------------------------------- decoding */

struct dec {
	unsigned int max_cpus;
	struct proto_error *err;
};

/* Field paths are built on the stack; a path longer than the buffer is cut,
 * which only shortens the error text. */
struct path {
	char s[PROTO_FIELD_MAX];
};

/* Keys come from the client: anything but printable ASCII is shown as '?'
 * so that a truncated path can never split a UTF-8 sequence and make the
 * error response itself invalid. */
static void path_key(struct path *out, const char *base, const char *key)
{
	size_t n = (size_t)snprintf(out->s, sizeof(out->s), "%s%s", base, *base ? "." : "");

	for (; *key && n + 1 < sizeof(out->s); key++)
		out->s[n++] = (*key >= 0x20 && *key <= 0x7e) ? *key : '?';
	if (n < sizeof(out->s))
		out->s[n] = '\0';
}

static void path_index(struct path *out, const char *base, size_t i)
{
	/* A path that does not fit is cut; it only labels an error message. */
	if (snprintf(out->s, sizeof(out->s), "%s[%zu]", base, i) >= (int)sizeof(out->s))
		out->s[sizeof(out->s) - 1] = '\0';
}

static const char *type_name(struct json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null: return "null";
	case json_type_boolean: return "boolean";
	case json_type_double: return "number";
	case json_type_int: return "integer";
	case json_type_object: return "object";
	case json_type_array: return "array";
	case json_type_string: return "string";
	}
	return "value";
}

static int wrong_type(struct dec *d, const char *path, struct json_object *v, const char *want)
{
	return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
			       "%s: expected %s, got %s", path, want, type_name(v));
}

/* Refuse members not in 'allowed': a typo such as "prority" must not be
 * silently ignored and leave the default in force. */
static int check_fields(struct dec *d, struct json_object *obj, const char *base,
			const char *const *allowed)
{
	json_object_object_foreach(obj, key, val) {
		bool ok = false;

		(void)val;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				ok = true;
		if (!ok) {
			struct path p;

			path_key(&p, base, key);
			return proto_error_set(d->err, PROTO_E_UNKNOWN_FIELD, EINVAL, p.s,
					       "unknown field %s", p.s);
		}
	}
	return 0;
}

static int missing(struct dec *d, const char *path)
{
	return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
			       "missing required field %s", path);
}

static int dec_uint(struct dec *d, struct json_object *v, const char *path,
		    uint64_t min, uint64_t max, uint64_t *out)
{
	int64_t x = 0;

	if (!json_object_is_type(v, json_type_int))
		return wrong_type(d, path, v, "integer");
	x = json_object_get_int64(v);
	/* json-c clamps larger values to INT64_MAX, which every max here is
	 * below, so "huge" lands in the range error too */
	if (x < 0 || (uint64_t)x < min || (uint64_t)x > max)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, path,
				       "%s: must be %" PRIu64 "..%" PRIu64, path, min, max);
	*out = (uint64_t)x;
	return 0;
}

static int dec_u32(struct dec *d, struct json_object *v, const char *path,
		   uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t x = 0;
	int r = dec_uint(d, v, path, min, max, &x);

	if (r == 0)
		*out = (uint32_t)x;
	return r;
}

static bool name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static int dec_name(struct dec *d, struct json_object *v, const char *path, char *out)
{
	const char *s;
	int n;

	if (!json_object_is_type(v, json_type_string))
		return wrong_type(d, path, v, "string");
	s = json_object_get_string(v);
	n = json_object_get_string_len(v);
	if (n < 1 || n > PROTO_NAME_MAX)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: must be 1..%d characters", path, PROTO_NAME_MAX);
	for (int i = 0; i < n; i++)
		if (!name_char(s[i]))
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
					       "%s: only A-Z a-z 0-9 . _ - allowed", path);
	/* names may end up as file names under the state directory */
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: \".\" and \"..\" are reserved", path);
	memcpy(out, s, (size_t)n + 1);
	return 0;
}

/* Printable ASCII without spaces: perf event specs ("cpu/event=0x3c/u")
 * never need more, and it keeps logs and terminals safe. */
static int dec_token(struct dec *d, struct json_object *v, const char *path,
		     int maxlen, char *out, size_t out_size)
{
	const char *s;
	int n;

	if (!json_object_is_type(v, json_type_string))
		return wrong_type(d, path, v, "string");
	s = json_object_get_string(v);
	n = json_object_get_string_len(v);
	if (n < 1 || n > maxlen || (size_t)n >= out_size)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: must be 1..%d characters", path, maxlen);
	for (int i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
					       "%s: only printable ASCII without spaces allowed", path);
	memcpy(out, s, (size_t)n + 1);
	return 0;
}

static int dec_class(struct dec *d, struct json_object *v, const char *path, enum proto_class *out)
{
	int c;

	if (!json_object_is_type(v, json_type_string))
		return wrong_type(d, path, v, "string");
	c = proto_class_from_name(json_object_get_string(v));
	if (c < 0)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: must be \"guaranteed\", \"preferred\" or \"shared\"", path);
	*out = (enum proto_class)c;
	return 0;
}

static int dec_fixed_mask(struct dec *d, struct json_object *v, const char *path, uint32_t *out)
{
	const char *s;
	uint32_t x = 0;
	int n;

	if (json_object_is_type(v, json_type_int))
		return dec_u32(d, v, path, 0, PROTO_MAX_FIXED_MASK, out);
	if (!json_object_is_type(v, json_type_string))
		return wrong_type(d, path, v, "integer or hex string");
	s = json_object_get_string(v);
	n = json_object_get_string_len(v);
	/* "0x" + 1..4 hex digits is the whole grammar; anything looser
	 * (octal, decimal strings, spaces) would be ambiguous */
	if (n < 3 || n > 6 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: expected a hex string \"0x0\"..\"0xffff\"", path);
	for (int i = 2; i < n; i++) {
		char c = s[i];
		uint32_t digit;

		if (c >= '0' && c <= '9')
			digit = (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			digit = (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			digit = (uint32_t)(c - 'A' + 10);
		else
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
					       "%s: expected a hex string \"0x0\"..\"0xffff\"", path);
		x = x * 16 + digit;
	}
	*out = x;
	return 0;
}

static int dec_cpus(struct dec *d, struct json_object *v, const char *path, struct cpulist *out)
{
	struct cpulist set;

	cpulist_clear(&set);
	if (json_object_is_type(v, json_type_string)) {
		int r = cpulist_parse(json_object_get_string(v), d->max_cpus, &set);

		/* a NUL smuggled in through \u0000 would truncate the parse */
		if (r == 0 && strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
			r = -EINVAL;
		if (r == -ERANGE)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, path,
					       "%s: CPU numbers must be below %u", path, d->max_cpus);
		if (r < 0)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
					       "%s: not a CPU list (like \"0-3,8\")", path);
	} else if (json_object_is_type(v, json_type_array)) {
		size_t n = json_object_array_length(v);

		for (size_t i = 0; i < n; i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			struct path p;
			uint64_t cpu;
			int r;

			path_index(&p, path, i);
			r = dec_uint(d, e, p.s, 0, d->max_cpus - 1, &cpu);
			if (r < 0)
				return r;
			if (cpulist_test(&set, (unsigned int)cpu))
				return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, p.s,
						       "%s: CPU %" PRIu64 " listed twice", p.s, cpu);
			cpulist_set(&set, (unsigned int)cpu);
		}
	} else {
		return wrong_type(d, path, v, "CPU list string or array of integers");
	}
	if (cpulist_empty(&set))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: must name at least one CPU", path);
	*out = set;
	return 0;
}

/*
 * Fetch obj.key into *out with its path in *p. Returns 1 when present, 0
 * when absent and optional, or an error: absent and required, or a JSON
 * null (json-c hands null back as a NULL value; treating it as absent would
 * make "priority": null a silent default).
 */
static int member(struct dec *d, struct json_object *obj, const char *base, const char *key,
		  bool required, struct json_object **out, struct path *p)
{
	struct json_object *v = NULL;

	path_key(p, base, key);
	*out = NULL;
	if (!json_object_object_get_ex(obj, key, &v))
		return required ? missing(d, p->s) : 0;
	if (!v)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, p->s,
				       "%s: null is not allowed", p->s);
	*out = v;
	return 1;
}

static int dec_name_member(struct dec *d, struct json_object *params, char *out)
{
	struct json_object *v;
	struct path p;
	int r = member(d, params, "params", "name", true, &v, &p);

	return r < 0 ? r : dec_name(d, v, p.s, out);
}

static int dec_priority_class(struct dec *d, struct json_object *params,
			      bool *has_prio, uint32_t *prio, bool *has_cls, enum proto_class *cls)
{
	struct json_object *v;
	struct path p;
	int r;

	r = member(d, params, "params", "priority", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0) {
		r = dec_u32(d, v, p.s, 0, PROTO_MAX_PRIORITY, prio);
		if (r < 0)
			return r;
		*has_prio = true;
	}
	r = member(d, params, "params", "class", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0) {
		r = dec_class(d, v, p.s, cls);
		if (r < 0)
			return r;
		*has_cls = true;
	}
	return 0;
}

/* Both wire forms end up as one cpulist per vCPU, so the daemon has a
 * single shape to reason about. Returns 1 if vCPUs were given, 0 if
 * neither form is present. */
static int dec_vcpus(struct dec *d, struct json_object *params, struct proto_vcpus *out)
{
	static const char *const vcpu_fields[] = { "cpus", NULL };
	struct json_object *arr, *count, *cpus;
	struct path pa, pc, pn;
	int ra, rc, rn, r;

	ra = member(d, params, "params", "vcpus", false, &arr, &pa);
	if (ra < 0)
		return ra;
	rn = member(d, params, "params", "vcpu_count", false, &count, &pn);
	if (rn < 0)
		return rn;
	rc = member(d, params, "params", "cpus", false, &cpus, &pc);
	if (rc < 0)
		return rc;
	if (ra > 0 && (rn > 0 || rc > 0))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, pa.s,
				       "params.vcpus: give either vcpus or vcpu_count + cpus, not both");
	if (ra > 0) {
		size_t n = 0;

		if (!json_object_is_type(arr, json_type_array))
			return wrong_type(d, pa.s, arr, "array");
		n = json_object_array_length(arr);
		if (n < 1 || n > PROTO_MAX_VCPUS)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, pa.s,
					       "%s: must hold 1..%d vCPUs", pa.s, PROTO_MAX_VCPUS);
		out->cpus = calloc(n, sizeof(*out->cpus));
		if (!out->cpus)
			return proto_error_set(d->err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		out->count = (uint32_t)n;
		for (size_t i = 0; i < n; i++) {
			struct json_object *e = json_object_array_get_idx(arr, i), *c;
			struct path pe, pcpu;

			path_index(&pe, pa.s, i);
			if (!e || !json_object_is_type(e, json_type_object))
				return e ? wrong_type(d, pe.s, e, "object")
					 : proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, pe.s,
							   "%s: null is not allowed", pe.s);
			r = check_fields(d, e, pe.s, vcpu_fields);
			if (r < 0)
				return r;
			r = member(d, e, pe.s, "cpus", true, &c, &pcpu);
			if (r < 0)
				return r;
			r = dec_cpus(d, c, pcpu.s, &out->cpus[i]);
			if (r < 0)
				return r;
		}
		return 1;
	}
	if (rn == 0 && rc == 0)
		return 0;
	if (rn == 0)
		return missing(d, pn.s);
	if (rc == 0)
		return missing(d, pc.s);
	{
		uint32_t n = 0;
		struct cpulist set;

		r = dec_u32(d, count, pn.s, 1, PROTO_MAX_VCPUS, &n);
		if (r < 0)
			return r;
		r = dec_cpus(d, cpus, pc.s, &set);
		if (r < 0)
			return r;
		out->cpus = calloc(n, sizeof(*out->cpus));
		if (!out->cpus)
			return proto_error_set(d->err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		out->count = n;
		for (uint32_t i = 0; i < n; i++)
			out->cpus[i] = set;
	}
	return 1;
}

static int dec_shape(struct dec *d, struct json_object *params, bool *has_gp, uint32_t *gp,
		     bool *has_fixed, uint32_t *fixed)
{
	struct json_object *v;
	struct path p;
	int r;

	r = member(d, params, "params", "gp", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0) {
		r = dec_u32(d, v, p.s, 0, PROTO_MAX_GP, gp);
		if (r < 0)
			return r;
		*has_gp = true;
	}
	r = member(d, params, "params", "fixed_mask", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0) {
		r = dec_fixed_mask(d, v, p.s, fixed);
		if (r < 0)
			return r;
		*has_fixed = true;
	}
	return 0;
}

static int dec_hello(struct dec *d, struct json_object *params, struct proto_hello *out)
{
	static const char *const fields[] = { "protocol", "client", NULL };
	struct json_object *v;
	struct path p;
	uint64_t proto;
	int r;

	/* The version is read before anything else: a client of another
	 * major version must learn that, not trip over a field we lack. */
	r = member(d, params, "params", "protocol", true, &v, &p);
	if (r < 0)
		return r;
	r = dec_uint(d, v, p.s, 1, UINT32_MAX, &proto);
	if (r < 0)
		return r;
	r = proto_hello_check((uint32_t)proto, PROTO_VERSION, d->err);
	if (r < 0)
		return r;
	out->protocol = (uint32_t)proto;
	r = check_fields(d, params, "params", fields);
	if (r < 0)
		return r;
	r = member(d, params, "params", "client", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0)
		return dec_token(d, v, p.s, PROTO_CLIENT_MAX, out->client, sizeof(out->client));
	return 0;
}

static int dec_plan(struct dec *d, struct json_object *params, struct proto_plan_req *out)
{
	static const char *const fields[] = { "cpus", NULL };
	struct json_object *v;
	struct path p;
	int r = check_fields(d, params, "params", fields);

	if (r < 0)
		return r;
	r = member(d, params, "params", "cpus", false, &v, &p);
	if (r <= 0)
		return r;
	out->has_cpus = true;
	return dec_cpus(d, v, p.s, &out->cpus);
}

static int dec_owner(struct dec *d, struct json_object *v, const char *path, struct proto_owner *out)
{
	static const char *const fields[] = { "pid", "vm_fd", NULL };
	struct json_object *m;
	struct path p;
	uint32_t x = 0;
	int r;

	if (!json_object_is_type(v, json_type_object))
		return wrong_type(d, path, v, "object");
	r = check_fields(d, v, path, fields);
	if (r < 0)
		return r;
	r = member(d, v, path, "pid", true, &m, &p);
	if (r < 0)
		return r;
	r = dec_u32(d, m, p.s, 1, PROTO_MAX_PID, &x);
	if (r < 0)
		return r;
	out->pid = (int32_t)x;
	r = member(d, v, path, "vm_fd", true, &m, &p);
	if (r < 0)
		return r;
	r = dec_u32(d, m, p.s, 0, INT32_MAX, &x);
	if (r < 0)
		return r;
	out->vm_fd = (int32_t)x;
	return 0;
}

static int dec_vm_attach(struct dec *d, struct json_object *params, struct proto_vm_attach *out)
{
	static const char *const fields[] = { "name", "priority", "class", "gp", "fixed_mask",
					      "vcpus", "vcpu_count", "cpus", "owner", NULL };
	struct json_object *v;
	struct path p;
	bool dummy;
	int r;

	out->priority = PROTO_DEFAULT_PRIORITY;
	out->cls = PROTO_CLASS_PREFERRED;
	r = check_fields(d, params, "params", fields);
	if (r < 0)
		return r;
	r = dec_name_member(d, params, out->name);
	if (r < 0)
		return r;
	r = dec_priority_class(d, params, &out->has_priority, &out->priority, &out->has_class,
			       &out->cls);
	if (r < 0)
		return r;
	r = dec_shape(d, params, &dummy, &out->gp, &dummy, &out->fixed_mask);
	if (r < 0)
		return r;
	r = dec_vcpus(d, params, &out->vcpus);
	if (r < 0)
		return r;
	if (r == 0)
		return missing(d, "params.vcpus");
	r = member(d, params, "params", "owner", false, &v, &p);
	if (r < 0)
		return r;
	if (r > 0) {
		out->has_owner = true;
		return dec_owner(d, v, p.s, &out->owner);
	}
	return 0;
}

static int dec_vm_update(struct dec *d, struct json_object *params, struct proto_vm_update *out)
{
	static const char *const fields[] = { "name", "priority", "class", "gp", "fixed_mask",
					      "vcpus", "vcpu_count", "cpus", NULL };
	int r = check_fields(d, params, "params", fields);

	if (r < 0)
		return r;
	r = dec_name_member(d, params, out->name);
	if (r < 0)
		return r;
	r = dec_priority_class(d, params, &out->has_priority, &out->priority, &out->has_class, &out->cls);
	if (r < 0)
		return r;
	r = dec_shape(d, params, &out->has_gp, &out->gp, &out->has_fixed_mask, &out->fixed_mask);
	if (r < 0)
		return r;
	r = dec_vcpus(d, params, &out->vcpus);
	if (r < 0)
		return r;
	out->has_vcpus = r > 0;
	if (!out->has_priority && !out->has_class && !out->has_gp && !out->has_fixed_mask &&
	    !out->has_vcpus)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, "params",
				       "params: nothing to update");
	return 0;
}

static int dec_session_start(struct dec *d, struct json_object *params, struct proto_session_start *out)
{
	static const char *const fields[] = { "name", "events", "cpus", "pid", "priority", "class",
					      "owner_pid", NULL };
	struct json_object *ev, *cpus, *pid, *own;
	struct path pe, pc, pp;
	bool dummy;
	size_t n = 0;
	int r, rc, rp;

	out->priority = PROTO_DEFAULT_PRIORITY;
	out->cls = PROTO_CLASS_PREFERRED;
	r = check_fields(d, params, "params", fields);
	if (r < 0)
		return r;
	r = dec_name_member(d, params, out->name);
	if (r < 0)
		return r;
	r = member(d, params, "params", "events", true, &ev, &pe);
	if (r < 0)
		return r;
	if (!json_object_is_type(ev, json_type_array))
		return wrong_type(d, pe.s, ev, "array");
	n = json_object_array_length(ev);
	if (n < 1 || n > PROTO_MAX_EVENTS)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, pe.s,
				       "%s: must hold 1..%d events", pe.s, PROTO_MAX_EVENTS);
	out->events = calloc(n, sizeof(*out->events));
	if (!out->events)
		return proto_error_set(d->err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(ev, i);
		char buf[PROTO_EVENT_MAX + 1];
		struct path pi;

		path_index(&pi, pe.s, i);
		if (!e)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, pi.s,
					       "%s: null is not allowed", pi.s);
		r = dec_token(d, e, pi.s, PROTO_EVENT_MAX, buf, sizeof(buf));
		if (r < 0)
			return r;
		for (uint32_t j = 0; j < out->n_events; j++)
			if (strcmp(out->events[j], buf) == 0)
				return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, pi.s,
						       "%s: duplicates %s[%u]", pi.s, pe.s, j);
		out->events[i] = strdup(buf);
		if (!out->events[i])
			return proto_error_set(d->err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		out->n_events++;
	}
	r = member(d, params, "params", "owner_pid", false, &own, &pp);
	if (r < 0)
		return r;
	if (r > 0) {
		uint32_t x = 0;

		r = dec_u32(d, own, pp.s, 1, PROTO_MAX_PID, &x);
		if (r < 0)
			return r;
		out->owner_pid = (int32_t)x;
	}
	rc = member(d, params, "params", "cpus", false, &cpus, &pc);
	if (rc < 0)
		return rc;
	rp = member(d, params, "params", "pid", false, &pid, &pp);
	if (rp < 0)
		return rp;
	if ((rc > 0) == (rp > 0))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, "params",
				       "params: give exactly one of cpus and pid");
	if (rc > 0) {
		out->has_cpus = true;
		r = dec_cpus(d, cpus, pc.s, &out->cpus);
	} else {
		uint32_t x = 0;

		r = dec_u32(d, pid, pp.s, 1, PROTO_MAX_PID, &x);
		out->pid = (int32_t)x;
	}
	if (r < 0)
		return r;
	return dec_priority_class(d, params, &dummy, &out->priority, &dummy, &out->cls);
}

static int dec_vm_bind(struct dec *d, struct json_object *params, struct proto_vm_bind *out)
{
	static const char *const fields[] = { "name", "pid", "vm_fd", NULL };
	struct json_object *v;
	struct path p;
	uint32_t x = 0;
	int r = check_fields(d, params, "params", fields);

	if (r < 0)
		return r;
	r = dec_name_member(d, params, out->name);
	if (r < 0)
		return r;
	r = member(d, params, "params", "pid", true, &v, &p);
	if (r < 0)
		return r;
	r = dec_u32(d, v, p.s, 1, PROTO_MAX_PID, &x);
	if (r < 0)
		return r;
	out->pid = (int32_t)x;
	r = member(d, params, "params", "vm_fd", false, &v, &p);
	if (r <= 0)
		return r;
	r = dec_u32(d, v, p.s, 0, INT32_MAX, &x);
	if (r < 0)
		return r;
	out->has_vm_fd = true;
	out->vm_fd = (int32_t)x;
	return 0;
}

static int dec_name_only(struct dec *d, struct json_object *params, struct proto_name_req *out)
{
	static const char *const fields[] = { "name", NULL };
	int r = check_fields(d, params, "params", fields);

	return r < 0 ? r : dec_name_member(d, params, out->name);
}

static int dec_no_params(struct dec *d, struct json_object *params)
{
	static const char *const fields[] = { NULL };

	return check_fields(d, params, "params", fields);
}

int proto_request_from_json(struct json_object *obj, unsigned int max_cpus,
			    struct proto_request *req, bool *id_known, uint64_t *id,
			    struct proto_error *err)
{
	static const char *const fields[] = { "id", "method", "params", NULL };
	struct dec d = { .max_cpus = max_cpus, .err = err };
	struct json_object *v, *params, *empty = NULL;
	struct path p;
	uint64_t rid;
	int m, r;

	if (!req || !id_known || !id)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid call");
	memset(req, 0, sizeof(*req));
	*id_known = false;
	*id = 0;
	if (max_cpus == 0 || max_cpus > CPULIST_MAX_CPUS)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid CPU bound");
	if (!obj || !json_object_is_type(obj, json_type_object))
		return proto_error_set(err, PROTO_E_BAD_REQUEST, EBADMSG, NULL,
				       "a request must be a JSON object");
	/* id first, so every later error can be matched to its request */
	r = member(&d, obj, "", "id", true, &v, &p);
	if (r < 0)
		goto bad_envelope;
	r = dec_uint(&d, v, p.s, 0, PROTO_MAX_ID, &rid);
	if (r < 0)
		goto bad_envelope;
	*id_known = true;
	*id = rid;
	req->id = rid;
	r = check_fields(&d, obj, "", fields);
	if (r < 0)
		return r;
	r = member(&d, obj, "", "method", true, &v, &p);
	if (r < 0)
		goto bad_envelope;
	if (!json_object_is_type(v, json_type_string)) {
		r = wrong_type(&d, p.s, v, "string");
		goto bad_envelope;
	}
	m = proto_method_from_name(json_object_get_string(v));
	if (m < 0) {
		/* the name is echoed only when it is short and printable */
		struct proto_error tmp;
		char shown[PROTO_NAME_MAX + 1];
		struct dec dt = { .max_cpus = max_cpus, .err = &tmp };

		if (dec_token(&dt, v, "method", PROTO_NAME_MAX, shown, sizeof(shown)) < 0)
			snprintf(shown, sizeof(shown), "?");
		return proto_error_set(err, PROTO_E_UNKNOWN_METHOD, EOPNOTSUPP, "method",
				       "unknown method \"%s\"", shown);
	}
	req->method = (enum proto_method)m;
	r = member(&d, obj, "", "params", false, &params, &p);
	if (r < 0)
		goto bad_envelope;
	if (r == 0) {
		empty = json_object_new_object();
		if (!empty)
			return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
		params = empty;
	} else if (!json_object_is_type(params, json_type_object)) {
		r = wrong_type(&d, "params", params, "object");
		goto bad_envelope;
	}

	switch (req->method) {
	case PROTO_M_HELLO: r = dec_hello(&d, params, &req->u.hello); break;
	case PROTO_M_PLAN: r = dec_plan(&d, params, &req->u.plan); break;
	case PROTO_M_VM_ATTACH: r = dec_vm_attach(&d, params, &req->u.vm_attach); break;
	case PROTO_M_VM_UPDATE: r = dec_vm_update(&d, params, &req->u.vm_update); break;
	case PROTO_M_VM_DETACH: r = dec_name_only(&d, params, &req->u.vm_detach); break;
	case PROTO_M_VM_SHOW: r = dec_name_only(&d, params, &req->u.vm_show); break;
	case PROTO_M_SESSION_START: r = dec_session_start(&d, params, &req->u.session_start); break;
	case PROTO_M_SESSION_STOP: r = dec_name_only(&d, params, &req->u.session_stop); break;
	case PROTO_M_SESSION_READ: r = dec_name_only(&d, params, &req->u.session_read); break;
	case PROTO_M_VM_BIND: r = dec_vm_bind(&d, params, &req->u.vm_bind); break;
	case PROTO_M_STATUS:
	case PROTO_M_PMU:
	case PROTO_M_VM_LIST:
	case PROTO_M_SESSION_LIST:
	case PROTO_M_WATCH:
		r = dec_no_params(&d, params);
		break;
	default:
		r = proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "method table mismatch");
		break;
	}
	json_object_put(empty);
	if (r < 0) {
		proto_request_fini(req);
		return r;
	}
	return 0;

bad_envelope:
	/* a malformed envelope is a bad request, not a bad parameter */
	(void)r;
	if (err) {
		err->code = PROTO_E_BAD_REQUEST;
		err->err = EBADMSG;
	}
	return -EBADMSG;
}

int proto_request_decode(const char *frame, size_t len, unsigned int max_cpus,
			 struct proto_request *req, bool *id_known, uint64_t *id,
			 struct proto_error *err)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	int r;

	if (!req || !id_known || !id)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid call");
	memset(req, 0, sizeof(*req));
	*id_known = false;
	*id = 0;
	if (!frame)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid call");
	if (len > PROTO_MAX_REQUEST)
		return proto_error_set(err, PROTO_E_TOO_LARGE, EMSGSIZE, NULL,
				       "request exceeds %u bytes", PROTO_MAX_REQUEST);
	/* json-c would stop at a raw NUL and call the prefix the document */
	if (memchr(frame, '\0', len))
		return proto_error_set(err, PROTO_E_BAD_REQUEST, EBADMSG, NULL,
				       "request contains a NUL byte");
	tok = json_tokener_new_ex(REQUEST_MAX_DEPTH);
	if (!tok)
		return proto_error_set(err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, frame, (int)len);
	jerr = json_tokener_get_error(tok);
	if (!obj || jerr != json_tokener_success || json_tokener_get_parse_end(tok) != len) {
		const char *why = jerr == json_tokener_continue ? "incomplete JSON"
				  : jerr == json_tokener_success ? "trailing data after the JSON object"
				  : json_tokener_error_desc(jerr);

		json_object_put(obj);
		json_tokener_free(tok);
		return proto_error_set(err, PROTO_E_BAD_REQUEST, EBADMSG, NULL,
				       "not a JSON object: %s", why);
	}
	json_tokener_free(tok);
	r = proto_request_from_json(obj, max_cpus, req, id_known, id, err);
	json_object_put(obj);
	return r;
}

int proto_hello_check(uint32_t client_protocol, uint32_t server_protocol, struct proto_error *err)
{
	if (client_protocol != server_protocol)
		return proto_error_set(err, PROTO_E_UNSUPPORTED_VERSION, EPROTONOSUPPORT, "params.protocol",
				       "client speaks protocol %" PRIu32 ", server speaks protocol %" PRIu32
				       "; use a matching vpmuctl/vpmud",
				       client_protocol, server_protocol);
	return 0;
}

/* ---------------------------------------------------------------- encoding */

/* Adds to obj, taking 'v'; false (and v freed) on failure so callers can
 * chain with && and bail once. */
static bool put(struct json_object *obj, const char *key, struct json_object *v)
{
	if (!v)
		return false;
	if (json_object_object_add(obj, key, v) < 0) {
		json_object_put(v);
		return false;
	}
	return true;
}

static struct json_object *cpus_json(const struct cpulist *set)
{
	/* worst case "0,2,4,...": at most 5 bytes per CPU */
	char *buf = malloc(CPULIST_MAX_CPUS * 5 + 1);
	struct json_object *s = NULL;

	if (!buf)
		return NULL;
	if (cpulist_format(set, buf, CPULIST_MAX_CPUS * 5 + 1) >= 0)
		s = json_object_new_string(buf);
	free(buf);
	return s;
}

static bool put_vcpus(struct json_object *params, const struct proto_vcpus *v)
{
	struct json_object *arr;
	bool uniform = true;

	if (v->count < 1 || v->count > PROTO_MAX_VCPUS || !v->cpus)
		return false;
	for (uint32_t i = 1; i < v->count && uniform; i++)
		uniform = cpulist_equal(&v->cpus[0], &v->cpus[i]);
	/* the compact form keeps a 1024-vCPU VM far below the frame limit */
	if (uniform)
		return put(params, "vcpu_count", json_object_new_int64(v->count)) &&
		       put(params, "cpus", cpus_json(&v->cpus[0]));
	arr = json_object_new_array_ext((int)v->count);
	if (!put(params, "vcpus", arr))
		return false;
	for (uint32_t i = 0; i < v->count; i++) {
		struct json_object *e = json_object_new_object();

		if (!e || json_object_array_add(arr, e) < 0) {
			json_object_put(e);
			return false;
		}
		if (!put(e, "cpus", cpus_json(&v->cpus[i])))
			return false;
	}
	return true;
}

static struct json_object *str_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}

static bool encode_params(const struct proto_request *req, struct json_object *p)
{
	switch (req->method) {
	case PROTO_M_HELLO:
		return put(p, "protocol", json_object_new_int64(req->u.hello.protocol)) &&
		       (!req->u.hello.client[0] ||
			put(p, "client", json_object_new_string(req->u.hello.client)));
	case PROTO_M_PLAN:
		return !req->u.plan.has_cpus || put(p, "cpus", cpus_json(&req->u.plan.cpus));
	case PROTO_M_VM_ATTACH: {
		const struct proto_vm_attach *a = &req->u.vm_attach;
		struct json_object *o;

		if (!(put(p, "name", json_object_new_string(a->name)) &&
		      put(p, "priority", json_object_new_int64(a->priority)) &&
		      put(p, "class", str_or_null(proto_class_name(a->cls))) &&
		      put(p, "gp", json_object_new_int64(a->gp)) &&
		      put(p, "fixed_mask", json_object_new_int64(a->fixed_mask)) &&
		      put_vcpus(p, &a->vcpus)))
			return false;
		if (!a->has_owner)
			return true;
		o = json_object_new_object();
		return put(p, "owner", o) &&
		       put(o, "pid", json_object_new_int64(a->owner.pid)) &&
		       put(o, "vm_fd", json_object_new_int64(a->owner.vm_fd));
	}
	case PROTO_M_VM_UPDATE: {
		const struct proto_vm_update *u = &req->u.vm_update;

		return put(p, "name", json_object_new_string(u->name)) &&
		       (!u->has_priority || put(p, "priority", json_object_new_int64(u->priority))) &&
		       (!u->has_class || put(p, "class", str_or_null(proto_class_name(u->cls)))) &&
		       (!u->has_gp || put(p, "gp", json_object_new_int64(u->gp))) &&
		       (!u->has_fixed_mask || put(p, "fixed_mask", json_object_new_int64(u->fixed_mask))) &&
		       (!u->has_vcpus || put_vcpus(p, &u->vcpus));
	}
	case PROTO_M_SESSION_START: {
		const struct proto_session_start *s = &req->u.session_start;
		struct json_object *ev;

		if (s->n_events < 1 || s->n_events > PROTO_MAX_EVENTS || !s->events)
			return false;
		ev = json_object_new_array_ext((int)s->n_events);
		if (!put(p, "name", json_object_new_string(s->name)) || !put(p, "events", ev))
			return false;
		for (uint32_t i = 0; i < s->n_events; i++) {
			struct json_object *e = str_or_null(s->events[i]);

			if (!e || json_object_array_add(ev, e) < 0) {
				json_object_put(e);
				return false;
			}
		}
		return (s->has_cpus ? put(p, "cpus", cpus_json(&s->cpus))
				    : put(p, "pid", json_object_new_int64(s->pid))) &&
		       (!s->owner_pid || put(p, "owner_pid", json_object_new_int64(s->owner_pid))) &&
		       put(p, "priority", json_object_new_int64(s->priority)) &&
		       put(p, "class", str_or_null(proto_class_name(s->cls)));
	}
	case PROTO_M_VM_BIND: {
		const struct proto_vm_bind *b = &req->u.vm_bind;

		if (b->pid < 1 || b->pid > PROTO_MAX_PID || (b->has_vm_fd && b->vm_fd < 0))
			return false;
		return put(p, "name", json_object_new_string(b->name)) &&
		       put(p, "pid", json_object_new_int64(b->pid)) &&
		       (!b->has_vm_fd || put(p, "vm_fd", json_object_new_int64(b->vm_fd)));
	}
	case PROTO_M_VM_DETACH:
	case PROTO_M_VM_SHOW:
	case PROTO_M_SESSION_STOP:
	case PROTO_M_SESSION_READ:
		/* all name-only requests share the layout of vm_detach */
		return put(p, "name", json_object_new_string(req->u.vm_detach.name));
	case PROTO_M_STATUS:
	case PROTO_M_PMU:
	case PROTO_M_VM_LIST:
	case PROTO_M_SESSION_LIST:
	case PROTO_M_WATCH:
		return true;
	default:
		return false;
	}
}

struct json_object *proto_request_encode(const struct proto_request *req)
{
	struct json_object *obj, *params;
	const char *name;

	if (!req || req->id > PROTO_MAX_ID)
		return NULL;
	name = proto_method_name(req->method);
	if (!name)
		return NULL;
	obj = json_object_new_object();
	if (!obj)
		return NULL;
	params = json_object_new_object();
	if (!put(obj, "id", json_object_new_uint64(req->id)) ||
	    !put(obj, "method", json_object_new_string(name)) ||
	    !put(obj, "params", params) || !encode_params(req, params)) {
		json_object_put(obj);
		return NULL;
	}
	return obj;
}
