// SPDX-License-Identifier: MIT
#include "proto/proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/cleanup.h"
#include "proto/json_fields.h"

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

/* Where name stands in names[0..n); -ENOENT when nowhere (or NULL). */
static int index_of(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -ENOENT;
}

/* names[i], or NULL outside [0, n). */
static const char *name_at(const char *const *names, int n, int i)
{
	return i >= 0 && i < n ? names[i] : NULL;
}

const char *proto_errcode_name(enum proto_errcode code)
{
	if ((unsigned int)code >= PROTO_E__COUNT)
		return errcode_names[PROTO_E_INTERNAL];
	return errcode_names[code];
}

enum proto_errcode proto_errcode_from_name(const char *name)
{
	/* "unknown" is a client-side placeholder, never a wire code */
	int i = index_of(errcode_names, PROTO_E_UNKNOWN, name);

	return i < 0 ? PROTO_E_UNKNOWN : (enum proto_errcode)i;
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

int proto_error_oom(struct proto_error *e)
{
	return proto_error_set(e, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
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
	[PROTO_M_METRICS] = "metrics",
};

const char *proto_method_name(enum proto_method m)
{
	return name_at(method_names, PROTO_M__COUNT, (int)m);
}

int proto_method_from_name(const char *name)
{
	return index_of(method_names, PROTO_M__COUNT, name);
}

static const char *const class_names[PROTO_CLASS__COUNT] = {
	[PROTO_CLASS_GUARANTEED] = "guaranteed",
	[PROTO_CLASS_PREFERRED] = "preferred",
	[PROTO_CLASS_SHARED] = "shared",
};

const char *proto_class_name(enum proto_class c)
{
	return name_at(class_names, PROTO_CLASS__COUNT, (int)c);
}

int proto_class_from_name(const char *name)
{
	return index_of(class_names, PROTO_CLASS__COUNT, name);
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

/*
 * Every method's parameters are a table of rows (proto/json_fields.h): the
 * JSON decoder reads them, proto_request_validate applies the same rows to
 * a typed request. What no single member says (the two vCPU forms, "exactly
 * one of cpus and pid", "nothing to update") is checked by hand below.
 */
struct dec {
	struct json_fields jf;
	unsigned int max_cpus;
	struct proto_error *err;
	/* A malformed envelope is a bad request, not a bad parameter. */
	bool envelope;
	/* The compact vCPU form (vcpu_count + cpus), expanded once every
	 * member has been read. */
	bool has_vcpu_count, has_compact_cpus;
	uint32_t vcpu_count;
	struct cpulist compact_cpus;
};

/* "\"a\", \"b\" or \"c\"" into buf; the list ends up in a message, so
 * the message's bound is its bound. */
static void names_text(const char *const *names, int64_t min, int64_t max, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int64_t i = min; i <= max && used < len; i++) {
		int n;

		if (!names[i])
			continue;
		n = snprintf(buf + used, len - used, "%s\"%s\"", !used ? "" : i == max ? " or " : ", ", names[i]);
		used += n < 0 ? 0 : (size_t)n;
	}
}

static int report(struct json_fields *jf, const struct json_fields_problem *p)
{
	struct dec *d = jf->user;
	const struct json_fields_field *f = p->field;
	const char *path = p->path;
	char names[PROTO_MESSAGE_MAX];
	int r;

	switch (p->kind) {
	case JSON_FIELDS_UNKNOWN:
		/* unknown stays unknown_field even in the envelope */
		return proto_error_set(d->err, PROTO_E_UNKNOWN_FIELD, EINVAL, path, "unknown field %s", path);
	case JSON_FIELDS_OOM:
		return proto_error_oom(d->err);
	case JSON_FIELDS_MISSING:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path, "missing required field %s", path);
		break;
	case JSON_FIELDS_NULL:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path, "%s: null is not allowed", path);
		break;
	case JSON_FIELDS_TYPE:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path, "%s: expected %s, got %s", path,
				    json_fields_expected(f), json_fields_type_name(p->value));
		break;
	case JSON_FIELDS_RANGE:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, path, "%s: must be %" PRId64 "..%" PRId64,
				    path, p->min, p->max);
		break;
	case JSON_FIELDS_SYNTAX:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				    "%s: expected a hex string \"0x%" PRIx64 "\"..\"0x%" PRIx64 "\"", path,
				    (uint64_t)p->min, (uint64_t)p->max);
		break;
	case JSON_FIELDS_LENGTH:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				    "%s: must be %" PRId64 "..%" PRId64 " characters", path, p->min, p->max);
		break;
	case JSON_FIELDS_CHARSET:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path, "%s: only %s allowed", path,
				    f->flags & JSON_FIELDS_NAME_CHARS ? "A-Z a-z 0-9 . _ -"
								      : "printable ASCII without spaces");
		break;
	case JSON_FIELDS_NAME:
		names_text(f->names, f->min, f->max, names, sizeof(names));
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path, "%s: must be %s", path, names);
		break;
	case JSON_FIELDS_COUNT:
		r = proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, path,
				    "%s: must hold %" PRId64 "..%" PRId64 " %s", path, p->min, p->max, f->unit);
		break;
	default:
		return proto_error_set(d->err, PROTO_E_INTERNAL, EINVAL, path, "%s: undecodable", path);
	}
	if (!d->envelope)
		return r;
	if (d->err) {
		d->err->code = PROTO_E_BAD_REQUEST;
		d->err->err = EBADMSG;
	}
	return -EBADMSG;
}

static int say(struct dec *d, enum json_fields_kind kind, const char *path, const struct json_fields_field *f,
	       struct json_object *v)
{
	const struct json_fields_problem p = { .kind = kind, .path = path, .field = f, .value = v };

	return report(&d->jf, &p);
}

static struct dec *dec_of(struct json_fields *jf)
{
	return jf->user;
}

/* A CPU set: the kernel's list syntax ("0-3,8") or an array of numbers. */
static int decode_cpus(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
		       const char *path, void *slot)
{
	struct dec *d = dec_of(jf);
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
		const struct json_fields_field cpu = { .name = "cpu", .type = JSON_FIELDS_INT,
						       .max = d->max_cpus - 1, .size = sizeof(uint32_t) };
		size_t n = json_object_array_length(v);

		for (size_t i = 0; i < n; i++) {
			char p[JSON_FIELDS_PATH_MAX];
			uint32_t c = 0;
			int r;

			json_fields_path_index(p, path, i);
			r = json_fields_decode_value(jf, &cpu, json_object_array_get_idx(v, i), p, &c);
			if (r < 0)
				return r;
			if (cpulist_test(&set, c))
				return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, p,
						       "%s: CPU %" PRIu32 " listed twice", p, c);
			cpulist_set(&set, c);
		}
	} else {
		return say(d, JSON_FIELDS_TYPE, path, f, v);
	}
	*(struct cpulist *)slot = set;
	return 0;
}

static int check_cpus(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		      const void *base, bool present)
{
	const struct cpulist *set = (const struct cpulist *)((const char *)base + f->offset);
	struct dec *d = dec_of(jf);
	int last = -1;

	if (!present)
		return 0;
	if (cpulist_empty(set))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, path,
				       "%s: must name at least one CPU", path);
	for (int c = cpulist_next(set, -1); c >= 0; c = cpulist_next(set, c))
		last = c;
	if ((unsigned int)last >= d->max_cpus)
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, ERANGE, path,
				       "%s: CPU numbers must be below %u", path, d->max_cpus);
	return 0;
}

static bool name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-';
}

int proto_name_check(const char *what, const char *name, struct proto_error *err)
{
	size_t n = name ? strlen(name) : 0;

	if (n < 1 || n > PROTO_NAME_MAX)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, what, "%s: must be 1..%d characters", what,
				       PROTO_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		if (!name_char(name[i]))
			return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, what,
					       "%s: only A-Z a-z 0-9 . _ - allowed", what);
	/* names end up as file names under the state directory */
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, what, "%s: \".\" and \"..\" are reserved",
				       what);
	return 0;
}

int proto_fixed_mask_parse(const char *s, uint32_t *out)
{
	bool hex = s[0] == '0' && s[1] == 'x';
	const char *d = hex ? s + 2 : s;
	size_t n = strlen(d);
	uint32_t v = 0;

	if (n < 1 || (hex && n > 4))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = d[i];
		unsigned digit;

		if (c >= '0' && c <= '9')
			digit = (unsigned)(c - '0');
		else if (hex && c >= 'a' && c <= 'f')
			digit = (unsigned)(c - 'a' + 10);
		else if (hex && c >= 'A' && c <= 'F')
			digit = (unsigned)(c - 'A' + 10);
		else
			return -EINVAL;
		v = v * (hex ? 16 : 10) + digit;
		if (v > PROTO_MAX_FIXED_MASK)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

/* The row bounds the length (and refuses a NUL) for the buffer; the rule
 * itself is proto_name_check's. */
static int check_name(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		      const void *base, bool present)
{
	if (!present)
		return 0;
	return proto_name_check(path, (const char *)base + f->offset, dec_of(jf)->err);
}

static int check_protocol(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			  const void *base, bool present)
{
	(void)path;
	if (!present)
		return 0;
	return proto_hello_check((uint32_t)json_fields_load_int((const char *)base + f->offset, f->size, false),
				 PROTO_VERSION, dec_of(jf)->err);
}

static int check_events_distinct(struct json_fields *jf, const struct json_fields_field *f, const char *path,
				 const void *base, bool present)
{
	const struct proto_session_start *s = base;

	(void)f;
	for (uint32_t i = 1; present && i < s->n_events; i++) {
		for (uint32_t j = 0; j < i; j++) {
			char p[JSON_FIELDS_PATH_MAX];

			if (strcmp(s->events[i], s->events[j]) != 0)
				continue;
			json_fields_path_index(p, path, i);
			return proto_error_set(dec_of(jf)->err, PROTO_E_INVALID_PARAM, EINVAL, p,
					       "%s: duplicates %s[%" PRIu32 "]", p, path, j);
		}
	}
	return 0;
}

static int decode_vcpu_count(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			     const char *path, void *slot)
{
	const struct json_fields_field count = { .name = f->name, .type = JSON_FIELDS_INT, .min = 1,
						 .max = PROTO_MAX_VCPUS, .size = sizeof(uint32_t) };
	struct dec *d = dec_of(jf);
	int r = json_fields_decode_value(jf, &count, v, path, &d->vcpu_count);

	(void)slot;
	d->has_vcpu_count = r == 0;
	return r;
}

static int decode_compact_cpus(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			       const char *path, void *slot)
{
	struct dec *d = dec_of(jf);
	int r = decode_cpus(jf, f, v, path, &d->compact_cpus);

	(void)slot;
	if (r == 0)
		r = check_cpus(jf, &(struct json_fields_field){ .name = f->name }, path, &d->compact_cpus, true);
	d->has_compact_cpus = r == 0;
	return r;
}

#define CPUS_EXPECT "CPU list string or array of integers"

static const struct json_fields_field vcpu_rows[] = {
	{ .name = "cpus", .type = JSON_FIELDS_CUSTOM, .flags = JSON_FIELDS_REQUIRED, .offset = 0,
	  .expect = CPUS_EXPECT, .decode = decode_cpus, .check = check_cpus },
	{ 0 },
};

static const struct json_fields_field vcpu_elem = { .type = JSON_FIELDS_OBJECT, .fields = vcpu_rows };

static const struct json_fields_field owner_rows[] = {
	{ .name = "pid", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .min = 1, .max = PROTO_MAX_PID,
	  .offset = offsetof(struct proto_owner, pid), .size = sizeof(int32_t) },
	{ .name = "vm_fd", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .max = INT32_MAX,
	  .offset = offsetof(struct proto_owner, vm_fd), .size = sizeof(int32_t) },
	{ 0 },
};

static const struct json_fields_field event_elem = {
	.type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_STRDUP | JSON_FIELDS_TOKEN_CHARS,
	.min = 1, .max = PROTO_EVENT_MAX,
};

#define NAME_ROW(T)                                                                                 \
	{ .name = "name", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_REQUIRED,                         \
	  .min = 1, .max = PROTO_NAME_MAX, .offset = offsetof(T, name),                             \
	  .size = JSON_FIELDS_SIZE(T, name), .check = check_name }

/* flags: JSON_FIELDS_DEFAULT where the struct holds the protocol's default
 * when the member is absent. */
#define PRIORITY_ROW(T, flags_, present_)                                                   \
	{ .name = "priority", .type = JSON_FIELDS_INT, .flags = (flags_), .max = PROTO_MAX_PRIORITY, \
	  .def = PROTO_DEFAULT_PRIORITY, .offset = offsetof(T, priority), .size = sizeof(uint32_t), \
	  .present = (present_) }

#define CLASS_ROW(T, flags_, present_)                                                             \
	{ .name = "class", .type = JSON_FIELDS_ENUM, .flags = (flags_), .max = PROTO_CLASS__COUNT - 1, \
	  .names = class_names, .def = PROTO_CLASS_PREFERRED, .offset = offsetof(T, cls),            \
	  .size = sizeof(enum proto_class), .present = (present_) }

#define GP_ROW(T, present_)                                                                    \
	{ .name = "gp", .type = JSON_FIELDS_INT, .max = PROTO_MAX_GP, .offset = offsetof(T, gp), \
	  .size = sizeof(uint32_t), .present = (present_) }

/* "0x" + 1..4 hex digits or an integer: docs/protocol.md */
#define FIXED_MASK_ROW(T, present_)                                                                 \
	{ .name = "fixed_mask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX, .digits = 4,            \
	  .max = PROTO_MAX_FIXED_MASK, .offset = offsetof(T, fixed_mask), .size = sizeof(uint32_t), \
	  .present = (present_) }

/* Both wire forms (an array of {"cpus"}, or vcpu_count + cpus) end up as
 * one cpulist per vCPU, so the daemon has a single shape to reason about. */
#define VCPUS_ROWS(T, present_)                                                                    \
	{ .name = "vcpus", .type = JSON_FIELDS_ARRAY, .flags = JSON_FIELDS_HEAP, .min = 1,                \
	  .max = PROTO_MAX_VCPUS, .offset = offsetof(T, vcpus.cpus), .elem = &vcpu_elem,              \
	  .elem_size = sizeof(struct cpulist), .count_offset = offsetof(T, vcpus.count),               \
	  .count_size = sizeof(uint32_t), .unit = "vCPUs", .present = (present_) },                      \
	{ .name = "vcpu_count", .type = JSON_FIELDS_CUSTOM, .expect = "integer", .decode = decode_vcpu_count }, \
	{ .name = "cpus", .type = JSON_FIELDS_CUSTOM, .expect = CPUS_EXPECT, .decode = decode_compact_cpus }

#define CPUS_ROW(T)                                                                           \
	{ .name = "cpus", .type = JSON_FIELDS_CUSTOM, .offset = offsetof(T, cpus),                  \
	  .present = JSON_FIELDS_FLAG(T, has_cpus), .expect = CPUS_EXPECT, .decode = decode_cpus, \
	  .check = check_cpus }

#define PID_ROW(T, member, flags_)                                                                 \
	{ .name = #member, .type = JSON_FIELDS_INT, .flags = (flags_), .min = 1, .max = PROTO_MAX_PID, \
	  .offset = offsetof(T, member), .size = sizeof(int32_t) }

static const struct json_fields_field no_rows[] = { { 0 } };

static const struct json_fields_field hello_rows[] = {
	{ .name = "protocol", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_FIRST,
	  .min = 1, .max = UINT32_MAX, .offset = offsetof(struct proto_hello, protocol),
	  .size = sizeof(uint32_t), .check = check_protocol },
	{ .name = "client", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_TOKEN_CHARS | JSON_FIELDS_ZERO_UNSET, .min = 1,
	  .max = PROTO_CLIENT_MAX, .offset = offsetof(struct proto_hello, client),
	  .size = JSON_FIELDS_SIZE(struct proto_hello, client) },
	{ 0 },
};

static const struct json_fields_field plan_rows[] = { CPUS_ROW(struct proto_plan_req), { 0 } };

static const struct json_fields_field vm_attach_rows[] = {
	NAME_ROW(struct proto_vm_attach),
	PRIORITY_ROW(struct proto_vm_attach, JSON_FIELDS_DEFAULT, JSON_FIELDS_FLAG(struct proto_vm_attach, has_priority)),
	CLASS_ROW(struct proto_vm_attach, JSON_FIELDS_DEFAULT, JSON_FIELDS_FLAG(struct proto_vm_attach, has_class)),
	GP_ROW(struct proto_vm_attach, 0),
	FIXED_MASK_ROW(struct proto_vm_attach, 0),
	VCPUS_ROWS(struct proto_vm_attach, 0),
	{ .name = "owner", .type = JSON_FIELDS_OBJECT, .fields = owner_rows,
	  .offset = offsetof(struct proto_vm_attach, owner), .present = JSON_FIELDS_FLAG(struct proto_vm_attach, has_owner) },
	{ 0 },
};

static const struct json_fields_field vm_update_rows[] = {
	NAME_ROW(struct proto_vm_update),
	PRIORITY_ROW(struct proto_vm_update, 0, JSON_FIELDS_FLAG(struct proto_vm_update, has_priority)),
	CLASS_ROW(struct proto_vm_update, 0, JSON_FIELDS_FLAG(struct proto_vm_update, has_class)),
	GP_ROW(struct proto_vm_update, JSON_FIELDS_FLAG(struct proto_vm_update, has_gp)),
	FIXED_MASK_ROW(struct proto_vm_update, JSON_FIELDS_FLAG(struct proto_vm_update, has_fixed_mask)),
	VCPUS_ROWS(struct proto_vm_update, JSON_FIELDS_FLAG(struct proto_vm_update, has_vcpus)),
	{ 0 },
};

static const struct json_fields_field session_start_rows[] = {
	NAME_ROW(struct proto_session_start),
	{ .name = "events", .type = JSON_FIELDS_ARRAY, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_HEAP, .min = 1,
	  .max = PROTO_MAX_EVENTS, .offset = offsetof(struct proto_session_start, events), .elem = &event_elem,
	  .elem_size = sizeof(char *), .count_offset = offsetof(struct proto_session_start, n_events),
	  .count_size = sizeof(uint32_t), .unit = "events", .check = check_events_distinct },
	PID_ROW(struct proto_session_start, owner_pid, JSON_FIELDS_ZERO_UNSET),
	CPUS_ROW(struct proto_session_start),
	PID_ROW(struct proto_session_start, pid, JSON_FIELDS_ZERO_UNSET),
	PRIORITY_ROW(struct proto_session_start, JSON_FIELDS_DEFAULT, 0),
	CLASS_ROW(struct proto_session_start, JSON_FIELDS_DEFAULT, 0),
	{ .name = "count_guest", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT, .def = 0,
	  .offset = offsetof(struct proto_session_start, count_guest) },
	{ 0 },
};

static const struct json_fields_field vm_bind_rows[] = {
	NAME_ROW(struct proto_vm_bind),
	PID_ROW(struct proto_vm_bind, pid, JSON_FIELDS_REQUIRED),
	{ .name = "vm_fd", .type = JSON_FIELDS_INT, .max = INT32_MAX, .offset = offsetof(struct proto_vm_bind, vm_fd),
	  .size = sizeof(int32_t), .present = JSON_FIELDS_FLAG(struct proto_vm_bind, has_vm_fd) },
	/* the descriptor itself is not JSON: it rides as SCM_RIGHTS with the
	 * frame, and the door pairs the two (docs/protocol.md) */
	{ .name = "route_fd", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT, .def = 0,
	  .offset = offsetof(struct proto_vm_bind, route_fd) },
	{ 0 },
};

static const struct json_fields_field name_rows[] = { NAME_ROW(struct proto_name_req), { 0 } };

/* Rows of each method's params, all relative to req->u. */
static const struct json_fields_field *const method_rows[PROTO_M__COUNT] = {
	[PROTO_M_HELLO] = hello_rows,
	[PROTO_M_STATUS] = no_rows,
	[PROTO_M_PMU] = no_rows,
	[PROTO_M_PLAN] = plan_rows,
	[PROTO_M_VM_ATTACH] = vm_attach_rows,
	[PROTO_M_VM_DETACH] = name_rows,
	[PROTO_M_VM_UPDATE] = vm_update_rows,
	[PROTO_M_VM_LIST] = no_rows,
	[PROTO_M_VM_SHOW] = name_rows,
	[PROTO_M_SESSION_START] = session_start_rows,
	[PROTO_M_SESSION_STOP] = name_rows,
	[PROTO_M_SESSION_READ] = name_rows,
	[PROTO_M_SESSION_LIST] = no_rows,
	[PROTO_M_WATCH] = no_rows,
	[PROTO_M_VM_BIND] = vm_bind_rows,
	[PROTO_M_METRICS] = no_rows,
};

static struct dec dec_new(unsigned int max_cpus, struct proto_error *err)
{
	return (struct dec){ .jf = { .report = report }, .max_cpus = max_cpus, .err = err };
}

static int check_request(struct dec *d, const struct proto_request *req)
{
	int r;

	if ((unsigned int)req->method >= PROTO_M__COUNT)
		return proto_error_set(d->err, PROTO_E_INTERNAL, EINVAL, NULL, "method table mismatch");
	r = json_fields_check(&d->jf, method_rows[req->method], &req->u, "params");
	if (r < 0)
		return r;
	switch (req->method) {
	case PROTO_M_VM_UPDATE: {
		const struct proto_vm_update *u = &req->u.vm_update;

		if (!u->has_priority && !u->has_class && !u->has_gp && !u->has_fixed_mask && !u->has_vcpus)
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, "params",
					       "params: nothing to update");
		return 0;
	}
	case PROTO_M_SESSION_START:
		if (req->u.session_start.has_cpus == (req->u.session_start.pid != 0))
			return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, "params",
					       "params: give exactly one of cpus and pid");
		return 0;
	default:
		return 0;
	}
}

int proto_request_validate(const struct proto_request *req, unsigned int max_cpus, struct proto_error *err)
{
	struct dec d = dec_new(max_cpus, err);

	d.jf.user = &d;
	if (!req)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid call");
	if (max_cpus == 0 || max_cpus > CPULIST_MAX_CPUS)
		return proto_error_set(err, PROTO_E_INTERNAL, EINVAL, NULL, "invalid CPU bound");
	return check_request(&d, req);
}

/* The compact form expanded, or the array form kept; *given says whether
 * either was there. */
static int resolve_vcpus(struct dec *d, struct proto_vcpus *v, bool *given)
{
	*given = v->count > 0;
	if (*given && (d->has_vcpu_count || d->has_compact_cpus))
		return proto_error_set(d->err, PROTO_E_INVALID_PARAM, EINVAL, "params.vcpus",
				       "params.vcpus: give either vcpus or vcpu_count + cpus, not both");
	if (*given || (!d->has_vcpu_count && !d->has_compact_cpus))
		return 0;
	if (!d->has_vcpu_count)
		return say(d, JSON_FIELDS_MISSING, "params.vcpu_count", NULL, NULL);
	if (!d->has_compact_cpus)
		return say(d, JSON_FIELDS_MISSING, "params.cpus", NULL, NULL);
	v->cpus = calloc(d->vcpu_count, sizeof(*v->cpus));
	if (!v->cpus)
		return proto_error_oom(d->err);
	v->count = d->vcpu_count;
	for (uint32_t i = 0; i < v->count; i++)
		v->cpus[i] = d->compact_cpus;
	*given = true;
	return 0;
}

static int decode_params(struct dec *d, struct json_object *params, struct proto_request *req)
{
	bool given = false;
	int r = json_fields_decode(&d->jf, method_rows[req->method], params, "params", &req->u);

	if (r < 0)
		return r;
	switch (req->method) {
	case PROTO_M_VM_ATTACH:
		r = resolve_vcpus(d, &req->u.vm_attach.vcpus, &given);
		if (r == 0 && !given)
			r = say(d, JSON_FIELDS_MISSING, "params.vcpus", NULL, NULL);
		return r;
	case PROTO_M_VM_UPDATE:
		r = resolve_vcpus(d, &req->u.vm_update.vcpus, &given);
		req->u.vm_update.has_vcpus = given;
		return r;
	default:
		return 0;
	}
}

struct envelope {
	uint64_t id;
	bool has_id;
	enum proto_method method;
	struct json_object *params; /* borrowed from the request; NULL when absent */
};

static int decode_method(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			 const char *path, void *slot)
{
	struct dec *d = dec_of(jf);
	const char *s = json_object_get_string(v);
	size_t n = (size_t)json_object_get_string_len(v);
	bool printable = n >= 1 && n <= PROTO_NAME_MAX;
	int m;

	if (!json_object_is_type(v, json_type_string))
		return say(d, JSON_FIELDS_TYPE, path, f, v);
	m = proto_method_from_name(s);
	if (m >= 0) {
		*(enum proto_method *)slot = (enum proto_method)m;
		return 0;
	}
	/* the name is echoed only when it is short and printable */
	for (size_t i = 0; printable && i < n; i++)
		printable = s[i] >= 0x21 && s[i] <= 0x7e;
	return proto_error_set(d->err, PROTO_E_UNKNOWN_METHOD, EOPNOTSUPP, "method", "unknown method \"%s\"",
			       printable ? s : "?");
}

static int decode_params_object(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
				const char *path, void *slot)
{
	if (!json_object_is_type(v, json_type_object))
		return say(dec_of(jf), JSON_FIELDS_TYPE, path, f, v);
	*(struct json_object **)slot = v;
	return 0;
}

static const struct json_fields_field envelope_rows[] = {
	/* id first, so every later error can be matched to its request */
	{ .name = "id", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_FIRST,
	  .max = (int64_t)PROTO_MAX_ID, .offset = offsetof(struct envelope, id), .size = sizeof(uint64_t),
	  .present = JSON_FIELDS_FLAG(struct envelope, has_id) },
	{ .name = "method", .type = JSON_FIELDS_CUSTOM, .flags = JSON_FIELDS_REQUIRED,
	  .offset = offsetof(struct envelope, method), .expect = "string", .decode = decode_method },
	{ .name = "params", .type = JSON_FIELDS_CUSTOM, .offset = offsetof(struct envelope, params),
	  .expect = "object", .decode = decode_params_object },
	{ 0 },
};

int proto_request_from_json(struct json_object *obj, unsigned int max_cpus,
			    struct proto_request *req, bool *id_known, uint64_t *id,
			    struct proto_error *err)
{
	struct dec d = dec_new(max_cpus, err);
	struct envelope env = { 0 };
	int r;

	d.jf.user = &d;
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
	d.envelope = true;
	r = json_fields_decode(&d.jf, envelope_rows, obj, "", &env);
	if (env.has_id) {
		*id_known = true;
		*id = env.id;
		req->id = env.id;
	}
	if (r < 0)
		return r;
	d.envelope = false;
	req->method = env.method;
	r = decode_params(&d, env.params, req);
	/* the rows were checked as they were read; what no single member
	 * says (and everything, again, cheaply) is checked on the result */
	if (r == 0)
		r = proto_request_validate(req, max_cpus, err);
	if (r < 0)
		proto_request_fini(req);
	return r;
}

int proto_request_decode(const char *frame, size_t len, unsigned int max_cpus,
			 struct proto_request *req, bool *id_known, uint64_t *id,
			 struct proto_error *err)
{
	_cleanup_json_tokener_ struct json_tokener *tok = NULL;
	_cleanup_json_ struct json_object *obj = NULL;
	enum json_tokener_error jerr;

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
	size_t bad = 0;
	if (frame_check_utf8(frame, len, &bad) < 0)
		return proto_error_set(err, PROTO_E_BAD_REQUEST, EILSEQ, NULL,
				       "request is not UTF-8 at byte %zu (an overlong form, a surrogate, a "
				       "code point above U+10FFFF or a broken sequence)", bad);
	tok = json_tokener_new_ex(REQUEST_MAX_DEPTH);
	if (!tok)
		return proto_error_oom(err);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, frame, (int)len);
	jerr = json_tokener_get_error(tok);
	if (!obj || jerr != json_tokener_success || json_tokener_get_parse_end(tok) != len) {
		const char *why = jerr == json_tokener_continue ? "incomplete JSON"
				  : jerr == json_tokener_success ? "trailing data after the JSON object"
				  : json_tokener_error_desc(jerr);

		return proto_error_set(err, PROTO_E_BAD_REQUEST, EBADMSG, NULL,
				       "not a JSON object: %s", why);
	}
	return proto_request_from_json(obj, max_cpus, req, id_known, id, err);
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

static struct json_object *cpus_json(const struct cpulist *set)
{
	_cleanup_free_ char *text = cpulist_to_text(set);

	return text ? json_object_new_string(text) : NULL;
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
		return json_fields_put(params, "vcpu_count", json_object_new_int64(v->count)) &&
		       json_fields_put(params, "cpus", cpus_json(&v->cpus[0]));
	arr = json_object_new_array_ext((int)v->count);
	if (!json_fields_put(params, "vcpus", arr))
		return false;
	for (uint32_t i = 0; i < v->count; i++) {
		struct json_object *e = json_object_new_object();

		if (!e || json_object_array_add(arr, e) < 0) {
			json_object_put(e);
			return false;
		}
		if (!json_fields_put(e, "cpus", cpus_json(&v->cpus[i])))
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
		return json_fields_put(p, "protocol", json_object_new_int64(req->u.hello.protocol)) &&
		       (!req->u.hello.client[0] ||
			json_fields_put(p, "client", json_object_new_string(req->u.hello.client)));
	case PROTO_M_PLAN:
		return !req->u.plan.has_cpus || json_fields_put(p, "cpus", cpus_json(&req->u.plan.cpus));
	case PROTO_M_VM_ATTACH: {
		const struct proto_vm_attach *a = &req->u.vm_attach;
		struct json_object *o;

		if (!(json_fields_put(p, "name", json_object_new_string(a->name)) &&
		      json_fields_put(p, "priority", json_object_new_int64(a->priority)) &&
		      json_fields_put(p, "class", str_or_null(proto_class_name(a->cls))) &&
		      json_fields_put(p, "gp", json_object_new_int64(a->gp)) &&
		      json_fields_put(p, "fixed_mask", json_object_new_int64(a->fixed_mask)) &&
		      put_vcpus(p, &a->vcpus)))
			return false;
		if (!a->has_owner)
			return true;
		o = json_object_new_object();
		return json_fields_put(p, "owner", o) &&
		       json_fields_put(o, "pid", json_object_new_int64(a->owner.pid)) &&
		       json_fields_put(o, "vm_fd", json_object_new_int64(a->owner.vm_fd));
	}
	case PROTO_M_VM_UPDATE: {
		const struct proto_vm_update *u = &req->u.vm_update;

		return json_fields_put(p, "name", json_object_new_string(u->name)) &&
		       (!u->has_priority || json_fields_put(p, "priority", json_object_new_int64(u->priority))) &&
		       (!u->has_class || json_fields_put(p, "class", str_or_null(proto_class_name(u->cls)))) &&
		       (!u->has_gp || json_fields_put(p, "gp", json_object_new_int64(u->gp))) &&
		       (!u->has_fixed_mask || json_fields_put(p, "fixed_mask", json_object_new_int64(u->fixed_mask))) &&
		       (!u->has_vcpus || put_vcpus(p, &u->vcpus));
	}
	case PROTO_M_SESSION_START: {
		const struct proto_session_start *s = &req->u.session_start;
		struct json_object *ev;

		if (s->n_events < 1 || s->n_events > PROTO_MAX_EVENTS || !s->events)
			return false;
		ev = json_object_new_array_ext((int)s->n_events);
		if (!json_fields_put(p, "name", json_object_new_string(s->name)) || !json_fields_put(p, "events", ev))
			return false;
		for (uint32_t i = 0; i < s->n_events; i++) {
			struct json_object *e = str_or_null(s->events[i]);

			if (!e || json_object_array_add(ev, e) < 0) {
				json_object_put(e);
				return false;
			}
		}
		return (s->has_cpus ? json_fields_put(p, "cpus", cpus_json(&s->cpus))
				    : json_fields_put(p, "pid", json_object_new_int64(s->pid))) &&
		       (!s->owner_pid || json_fields_put(p, "owner_pid", json_object_new_int64(s->owner_pid))) &&
		       json_fields_put(p, "priority", json_object_new_int64(s->priority)) &&
		       json_fields_put(p, "class", str_or_null(proto_class_name(s->cls))) &&
		       /* only when asked: what a daemon before it knew reads as before */
		       (!s->count_guest || json_fields_put(p, "count_guest", json_object_new_boolean(true)));
	}
	case PROTO_M_VM_BIND: {
		const struct proto_vm_bind *b = &req->u.vm_bind;

		if (b->pid < 1 || b->pid > PROTO_MAX_PID || (b->has_vm_fd && b->vm_fd < 0))
			return false;
		return json_fields_put(p, "name", json_object_new_string(b->name)) &&
		       json_fields_put(p, "pid", json_object_new_int64(b->pid)) &&
		       (!b->has_vm_fd || json_fields_put(p, "vm_fd", json_object_new_int64(b->vm_fd))) &&
		       /* only when set: a daemon before route fds reads the rest as before */
		       (!b->route_fd || json_fields_put(p, "route_fd", json_object_new_boolean(true)));
	}
	case PROTO_M_VM_DETACH:
	case PROTO_M_VM_SHOW:
	case PROTO_M_SESSION_STOP:
	case PROTO_M_SESSION_READ:
		/* all name-only requests share the layout of vm_detach */
		return json_fields_put(p, "name", json_object_new_string(req->u.vm_detach.name));
	case PROTO_M_STATUS:
	case PROTO_M_PMU:
	case PROTO_M_VM_LIST:
	case PROTO_M_SESSION_LIST:
	case PROTO_M_WATCH:
	case PROTO_M_METRICS:
		return true;
	default:
		return false;
	}
}

struct json_object *proto_request_encode(const struct proto_request *req)
{
	_cleanup_json_ struct json_object *obj = NULL;
	struct json_object *params;
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
	if (!json_fields_put(obj, "id", json_object_new_uint64(req->id)) ||
	    !json_fields_put(obj, "method", json_object_new_string(name)) ||
	    !json_fields_put(obj, "params", params) || !encode_params(req, params))
		return NULL;
	return TAKE_PTR(obj);
}

struct json_object *proto_request_encode_params(const struct proto_request *req, const char *const *omit)
{
	_cleanup_json_ struct json_object *obj = proto_request_encode(req);
	struct json_object *params;

	if (!obj || !json_object_object_get_ex(obj, "params", &params))
		return NULL;
	for (; omit && *omit; omit++)
		json_object_object_del(params, *omit);
	return json_object_get(params);
}
