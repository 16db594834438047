/* SPDX-License-Identifier: MIT */
#include "doors/dbus_service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include <json-c/json.h>

#include "base/log.h"
#include "doors/json_door.h"

#define IFACE_MANAGER DBUS_SERVICE_NAME ".Manager"
#define IFACE_VM DBUS_SERVICE_NAME ".VM"
#define IFACE_SESSION DBUS_SERVICE_NAME ".Session"
#define PATH_VM DBUS_SERVICE_PATH "/vm"
#define PATH_SESSION DBUS_SERVICE_PATH "/session"
#define ERROR_PREFIX DBUS_SERVICE_NAME ".Error."

/* Options come from outside: nesting beyond this is refused, not parsed. */
#define MAX_VARIANT_DEPTH 8

/*
 * Unsigned enums on the bus, 0 = unknown, as the D-Bus API guidelines ask:
 * clients map values they do not know to "unknown" instead of failing. The
 * index is the wire value; the strings are the broker's names.
 */
static const char *const class_names[] = { NULL, "guaranteed", "preferred", "shared", NULL };
static const char *const route_names[] = { NULL, "disabled", "multiplexed", "passthrough", NULL };
static const char *const placement_names[] = { NULL, "software", "multiplexed", "dedicated", NULL };
static const char *const backend_names[] = { NULL, "ioctl", "advisory", "model", NULL };

struct peer {
	struct dbus_service *svc;
	char *name;                 /* unique bus name */
	sd_bus_track *track;
	struct broker_conn *conn;   /* the broker releases what follows it when the peer leaves */
	struct peer *next, *prev;
};

typedef int (*reply_fn)(struct dbus_service *s, sd_bus_message *call, const struct proto_request *req,
			struct json_object *result);

/* A request waiting for polkit; answered from the polkit callback. */
struct pending {
	struct dbus_service *svc;
	sd_bus_message *call;
	sd_bus_slot *slot;
	struct proto_request req;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	char *sender;
	struct broker_conn *conn;   /* the caller's connection (a reference), for changes */
	reply_fn reply;
	struct pending *next, *prev;
};

struct dbus_service {
	sd_bus *bus;
	sd_event *event;
	struct broker *broker;
	const struct config *cfg;
	unsigned max_cpus;
	uint64_t sub_id;
	bool subscribed;
	sd_event_source *flush_src;
	struct json_object *queue;   /* plan events not yet sent as PlanChanged */
	struct json_object *plan;    /* what the VM and session objects show */
	struct peer *peers;
	struct pending *pending;
};

/* The daemon itself, for reads and for releasing what a departed peer held. */
static const struct broker_caller self_caller = { .door = BROKER_DOOR_DBUS, .uid = 0, .gid = 0, .pid = 0,
						   .origin = "dbus" };

/* ------------------------------------------------------------ helpers */

static unsigned enum_value(const char *const *names, const char *s)
{
	for (unsigned i = 1; s && names[i]; i++)
		if (!strcmp(names[i], s))
			return i;
	return 0;
}

static const char *const *enum_for_key(const char *key)
{
	if (!key)
		return NULL;
	if (!strcmp(key, "class"))
		return class_names;
	if (!strcmp(key, "placement"))
		return placement_names;
	if (!strcmp(key, "gp") || !strcmp(key, "fixed"))
		return route_names;
	if (!strcmp(key, "kvm"))
		return backend_names;
	return NULL;
}

static struct json_object *jget(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

static int64_t jint(struct json_object *o, const char *key, int64_t def)
{
	struct json_object *v = jget(o, key);
	return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : def;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v = jget(o, key);
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

/* "not_found" -> "NotFound": the D-Bus error names the same stable code. */
static void error_name(enum proto_errcode code, char *buf, size_t len)
{
	const char *src = proto_errcode_name(code);
	size_t n = snprintf(buf, len, "%s", ERROR_PREFIX);
	bool up = true;
	for (; *src && n + 1 < len; src++) {
		if (*src == '_') {
			up = true;
			continue;
		}
		buf[n++] = up ? (char)(*src - ('a' <= *src && *src <= 'z' ? 'a' - 'A' : 0)) : *src;
		up = false;
	}
	buf[n] = '\0';
}

static int reply_proto_error(sd_bus_message *call, const struct proto_error *pe)
{
	char name[128];
	sd_bus_error e = SD_BUS_ERROR_NULL;
	error_name(pe->code, name, sizeof(name));
	/* The broker's field paths say "params.x"; on the bus x is an option
	 * or argument name, which the message then names. */
	if (pe->field[0] && !strstr(pe->message, pe->field))
		sd_bus_error_setf(&e, name, "%s: %s", pe->field, pe->message);
	else
		sd_bus_error_setf(&e, name, "%s", pe->message);
	int r = sd_bus_reply_method_error(call, &e);
	sd_bus_error_free(&e);
	return r;
}

static int invalid_param(sd_bus_error *e, const char *fmt, const char *what)
{
	return sd_bus_error_setf(e, ERROR_PREFIX "InvalidParam", fmt, what);
}

/* ------------------------------------------- JSON results -> D-Bus values */

static int append_dict(sd_bus_message *m, struct json_object *obj);

static bool array_all(struct json_object *arr, json_type t)
{
	size_t n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++)
		if (!json_object_is_type(json_object_array_get_idx(arr, i), t))
			return false;
	return true;
}

/*
 * One JSON value as a variant. Strings the broker uses as enums become the
 * unsigned enums above; nulls never get here (append_dict skips them).
 */
static int append_variant(sd_bus_message *m, const char *key, struct json_object *v)
{
	const char *const *en = enum_for_key(key);
	int r;
	switch (json_object_get_type(v)) {
	case json_type_boolean:
		return sd_bus_message_append(m, "v", "b", (int)json_object_get_boolean(v));
	case json_type_int:
		if (key && !strcmp(key, "generation"))
			return sd_bus_message_append(m, "v", "t", json_object_get_uint64(v));
		return sd_bus_message_append(m, "v", "x", json_object_get_int64(v));
	case json_type_double:
		return sd_bus_message_append(m, "v", "d", json_object_get_double(v));
	case json_type_string:
		if (en)
			return sd_bus_message_append(m, "v", "u", enum_value(en, json_object_get_string(v)));
		/* Masks are hex strings in JSON for readers; numbers on the bus. */
		if (key && strlen(key) > 5 && !strcmp(key + strlen(key) - 5, "_mask") &&
		    !strncmp(json_object_get_string(v), "0x", 2))
			return sd_bus_message_append(m, "v", "t", (uint64_t)strtoull(json_object_get_string(v), NULL, 16));
		return sd_bus_message_append(m, "v", "s", json_object_get_string(v));
	case json_type_object:
		if ((r = sd_bus_message_open_container(m, 'v', "a{sv}")) < 0 || (r = append_dict(m, v)) < 0)
			return r;
		return sd_bus_message_close_container(m);
	case json_type_array: {
		size_t n = json_object_array_length(v);
		const char *sig;
		if (n && array_all(v, json_type_string))
			sig = en ? "au" : "as";
		else if (en && n == 0)
			sig = "au";
		else if (array_all(v, json_type_object))
			sig = "aa{sv}";
		else if (array_all(v, json_type_int))
			sig = "ax";
		else
			sig = "av";
		if ((r = sd_bus_message_open_container(m, 'v', sig)) < 0 ||
		    (r = sd_bus_message_open_container(m, 'a', sig + 1)) < 0)
			return r;
		for (size_t i = 0; i < n && r >= 0; i++) {
			struct json_object *e = json_object_array_get_idx(v, i);
			if (!strcmp(sig, "au"))
				r = sd_bus_message_append(m, "u", enum_value(en, json_object_get_string(e)));
			else if (!strcmp(sig, "as"))
				r = sd_bus_message_append(m, "s", json_object_get_string(e));
			else if (!strcmp(sig, "aa{sv}"))
				r = append_dict(m, e);
			else if (!strcmp(sig, "ax"))
				r = sd_bus_message_append(m, "x", json_object_get_int64(e));
			else if (json_object_is_type(e, json_type_null))
				r = sd_bus_message_append(m, "v", "s", "");
			else
				r = append_variant(m, NULL, e);
		}
		if (r < 0 || (r = sd_bus_message_close_container(m)) < 0)
			return r;
		return sd_bus_message_close_container(m);
	}
	default:
		return sd_bus_message_append(m, "v", "s", "");
	}
}

static int append_dict(sd_bus_message *m, struct json_object *obj)
{
	int r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r < 0)
		return r;
	if (json_object_is_type(obj, json_type_object)) {
		json_object_object_foreach(obj, key, val) {
			if (!val)
				continue;
			if ((r = sd_bus_message_open_container(m, 'e', "sv")) < 0 ||
			    (r = sd_bus_message_append(m, "s", key)) < 0 || (r = append_variant(m, key, val)) < 0 ||
			    (r = sd_bus_message_close_container(m)) < 0)
				return r;
		}
	}
	return sd_bus_message_close_container(m);
}

/* -------------------------------------------- D-Bus arguments -> JSON */

static int read_value(sd_bus_message *m, struct json_object **out, int depth, sd_bus_error *e);

static int read_dict(sd_bus_message *m, struct json_object **out, int depth, sd_bus_error *e)
{
	struct json_object *obj = json_object_new_object();
	int r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0 || !obj)
		goto fail;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key;
		struct json_object *v = NULL;
		if ((r = sd_bus_message_read(m, "s", &key)) < 0)
			goto fail;
		char *k = strdup(key);
		if (!k) {
			r = -ENOMEM;
			goto fail;
		}
		r = read_value(m, &v, depth + 1, e);
		if (r < 0) {
			free(k);
			goto fail;
		}
		json_object_object_add(obj, k, v);
		free(k);
		if ((r = sd_bus_message_exit_container(m)) < 0)
			goto fail;
	}
	if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0)
		goto fail;
	*out = obj;
	return 0;
fail:
	json_object_put(obj);
	return r < 0 ? r : -ENOMEM;
}

/* Any value the options may hold: basic types, variants, arrays and
 * string-keyed dictionaries. Structs and fds mean nothing here. */
static int read_value(sd_bus_message *m, struct json_object **out, int depth, sd_bus_error *e)
{
	char type;
	const char *contents;
	int r;
	if (depth > MAX_VARIANT_DEPTH)
		return invalid_param(e, "%s: options nest too deeply", "options");
	if ((r = sd_bus_message_peek_type(m, &type, &contents)) <= 0)
		return r < 0 ? r : -EBADMSG;
	union { uint8_t y; int b; int16_t n; uint16_t q; int32_t i; uint32_t u; int64_t x; uint64_t t;
		double d; const char *s; } v;
	switch (type) {
	case 'y': r = sd_bus_message_read_basic(m, type, &v.y); *out = json_object_new_int64(v.y); break;
	case 'b': r = sd_bus_message_read_basic(m, type, &v.b); *out = json_object_new_boolean(v.b); break;
	case 'n': r = sd_bus_message_read_basic(m, type, &v.n); *out = json_object_new_int64(v.n); break;
	case 'q': r = sd_bus_message_read_basic(m, type, &v.q); *out = json_object_new_int64(v.q); break;
	case 'i': r = sd_bus_message_read_basic(m, type, &v.i); *out = json_object_new_int64(v.i); break;
	case 'u': r = sd_bus_message_read_basic(m, type, &v.u); *out = json_object_new_int64(v.u); break;
	case 'x': r = sd_bus_message_read_basic(m, type, &v.x); *out = json_object_new_int64(v.x); break;
	case 't': r = sd_bus_message_read_basic(m, type, &v.t); *out = json_object_new_uint64(v.t); break;
	case 'd': r = sd_bus_message_read_basic(m, type, &v.d); *out = json_object_new_double(v.d); break;
	case 's': case 'o': case 'g':
		r = sd_bus_message_read_basic(m, type, &v.s);
		*out = r < 0 ? NULL : json_object_new_string(v.s);
		break;
	case 'v':
		if ((r = sd_bus_message_enter_container(m, 'v', contents)) < 0 ||
		    (r = read_value(m, out, depth + 1, e)) < 0)
			return r;
		return sd_bus_message_exit_container(m);
	case 'a':
		if (!strcmp(contents, "{sv}"))
			return read_dict(m, out, depth, e);
		if (contents[0] == '{')
			return invalid_param(e, "%s: dictionaries in options must be a{sv}", "options");
		{
			struct json_object *arr = json_object_new_array();
			if (!arr)
				return -ENOMEM;
			if ((r = sd_bus_message_enter_container(m, 'a', contents)) < 0) {
				json_object_put(arr);
				return r;
			}
			for (;;) {
				struct json_object *el = NULL;
				r = sd_bus_message_at_end(m, false);
				if (r != 0)
					break;
				if ((r = read_value(m, &el, depth + 1, e)) < 0)
					break;
				json_object_array_add(arr, el);
			}
			if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0) {
				json_object_put(arr);
				return r;
			}
			*out = arr;
			return 0;
		}
	default:
		return invalid_param(e, "%s: options may hold numbers, booleans, strings, arrays and a{sv}",
				     "options");
	}
	if (r < 0)
		return r;
	return *out ? 0 : -ENOMEM;
}

/* The options dictionary of a method, with the bus forms of two values
 * turned into the socket protocol's: class as an unsigned enum, and
 * vcpus as one CPU list per vCPU. */
static int read_options(sd_bus_message *m, struct json_object **out, sd_bus_error *e)
{
	struct json_object *o = NULL, *v;
	int r = read_dict(m, &o, 0, e);
	if (r < 0)
		return r;
	if ((v = jget(o, "class")) && json_object_is_type(v, json_type_int)) {
		int64_t c = json_object_get_int64(v);
		if (c < 1 || c > 3) {
			json_object_put(o);
			return sd_bus_error_setf(e, ERROR_PREFIX "InvalidParam",
						 "class: 1 (guaranteed), 2 (preferred) or 3 (shared), got %lld",
						 (long long)c);
		}
		json_object_object_add(o, "class", json_object_new_string(class_names[c]));
	}
	if ((v = jget(o, "vcpus")) && json_object_is_type(v, json_type_array) &&
	    json_object_array_length(v) && array_all(v, json_type_string)) {
		struct json_object *arr = json_object_new_array();
		for (size_t i = 0; arr && i < json_object_array_length(v); i++) {
			struct json_object *one = json_object_new_object();
			json_object_object_add(one, "cpus", json_object_get(json_object_array_get_idx(v, i)));
			json_object_array_add(arr, one);
		}
		json_object_object_add(o, "vcpus", arr);
	}
	*out = o;
	return 0;
}

/* ------------------------------------------------------------- objects */

static struct json_object *find_named(struct json_object *plan, const char *list, const char *name)
{
	struct json_object *arr = jget(plan, list);
	for (size_t i = 0; arr && i < json_object_array_length(arr); i++) {
		struct json_object *o = json_object_array_get_idx(arr, i);
		if (!strcmp(jstr(o, "name"), name))
			return o;
	}
	return NULL;
}

static int object_find(const char *prefix, const char *list, struct dbus_service *s, const char *path,
		       void **found)
{
	char *name = NULL;
	int r = sd_bus_path_decode(path, prefix, &name);
	if (r <= 0)
		return r;
	struct json_object *o = find_named(s->plan, list, name);
	free(name);
	if (!o)
		return 0;
	*found = o;
	return 1;
}

static int vm_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
		   sd_bus_error *e)
{
	(void)bus, (void)iface, (void)e;
	return object_find(PATH_VM, "vms", userdata, path, found);
}

static int session_find(sd_bus *bus, const char *path, const char *iface, void *userdata, void **found,
			sd_bus_error *e)
{
	(void)bus, (void)iface, (void)e;
	return object_find(PATH_SESSION, "sessions", userdata, path, found);
}

static int enumerate(struct dbus_service *s, const char *prefix, const char *list, char ***nodes)
{
	struct json_object *arr = jget(s->plan, list);
	size_t n = arr ? json_object_array_length(arr) : 0;
	char **v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		int r = sd_bus_path_encode(prefix, jstr(json_object_array_get_idx(arr, i), "name"), &v[i]);
		if (r < 0) {
			for (size_t j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return r;
		}
	}
	*nodes = v;
	return 1;
}

static int vm_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *e)
{
	(void)bus, (void)prefix, (void)e;
	return enumerate(userdata, PATH_VM, "vms", nodes);
}

static int session_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
			     sd_bus_error *e)
{
	(void)bus, (void)prefix, (void)e;
	return enumerate(userdata, PATH_SESSION, "sessions", nodes);
}

#define PROP_ARGS sd_bus *bus, const char *path, const char *iface, const char *prop, \
		  sd_bus_message *reply, void *userdata, sd_bus_error *e
#define PROP_UNUSED (void)bus, (void)path, (void)iface, (void)e

/* Name, Origin, Cpus: strings straight from the snapshot. */
static int prop_str(PROP_ARGS)
{
	PROP_UNUSED;
	const char *key = !strcmp(prop, "Name") ? "name" : !strcmp(prop, "Origin") ? "origin" : "cpus";
	return sd_bus_message_append(reply, "s", jstr(userdata, key));
}

static int prop_u32(PROP_ARGS)
{
	PROP_UNUSED;
	const char *key = !strcmp(prop, "Priority") ? "priority"
			  : !strcmp(prop, "GeneralCounters") ? "gp"
			  : !strcmp(prop, "PassthroughVcpus") ? "passthrough_vcpus" : "?";
	if (!strcmp(prop, "Class"))
		return sd_bus_message_append(reply, "u", enum_value(class_names, jstr(userdata, "class")));
	if (!strcmp(prop, "FixedCounterMask"))
		return sd_bus_message_append(reply, "u", (uint32_t)strtoul(jstr(userdata, "fixed_mask"), NULL, 0));
	return sd_bus_message_append(reply, "u", (uint32_t)jint(userdata, key, 0));
}

static int prop_pid(PROP_ARGS)
{
	PROP_UNUSED;
	return sd_bus_message_append(reply, "i", (int32_t)jint(userdata, !strcmp(prop, "Pid") ? "pid" : "owner_pid", 0));
}

static int vm_prop_owner(PROP_ARGS)
{
	PROP_UNUSED, (void)prop;
	struct json_object *ow = jget(userdata, "owner");
	return sd_bus_message_append(reply, "(ii)", (int32_t)jint(ow, "pid", 0), (int32_t)jint(ow, "vm_fd", -1));
}

static int append_routes(sd_bus_message *m, struct json_object *arr)
{
	int r = sd_bus_message_open_container(m, 'a', "u");
	for (size_t i = 0; r >= 0 && arr && i < json_object_array_length(arr); i++)
		r = sd_bus_message_append(m, "u",
					  enum_value(route_names, json_object_get_string(json_object_array_get_idx(arr, i))));
	return r < 0 ? r : sd_bus_message_close_container(m);
}

static int vm_prop_routes(PROP_ARGS)
{
	PROP_UNUSED, (void)prop;
	struct json_object *vc = jget(userdata, "vcpus");
	int r = sd_bus_message_open_container(reply, 'a', "(usauau)");
	for (size_t i = 0; r >= 0 && vc && json_object_is_type(vc, json_type_array) &&
			   i < json_object_array_length(vc); i++) {
		struct json_object *o = json_object_array_get_idx(vc, i);
		if ((r = sd_bus_message_open_container(reply, 'r', "usauau")) < 0 ||
		    (r = sd_bus_message_append(reply, "us", (uint32_t)jint(o, "vcpu", 0), jstr(o, "cpus"))) < 0 ||
		    (r = append_routes(reply, jget(o, "gp"))) < 0 || (r = append_routes(reply, jget(o, "fixed"))) < 0)
			return r;
		r = sd_bus_message_close_container(reply);
	}
	return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int session_prop_events(PROP_ARGS)
{
	PROP_UNUSED, (void)prop;
	struct json_object *evs = jget(userdata, "events");
	int r = sd_bus_message_open_container(reply, 'a', "(suud)");
	for (size_t i = 0; r >= 0 && evs && json_object_is_type(evs, json_type_array) &&
			   i < json_object_array_length(evs); i++) {
		struct json_object *o = json_object_array_get_idx(evs, i), *sh = jget(o, "share");
		r = sd_bus_message_append(reply, "(suud)", jstr(o, "event"),
					  enum_value(placement_names, jstr(o, "placement")),
					  (uint32_t)jint(o, "dedicated_cpus", 0), sh ? json_object_get_double(sh) : 0.0);
	}
	return r < 0 ? r : sd_bus_message_close_container(reply);
}

static const sd_bus_vtable vm_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", prop_str, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Origin", "s", prop_str, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Priority", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Class", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("GeneralCounters", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("FixedCounterMask", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Owner", "(ii)", vm_prop_owner, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("PassthroughVcpus", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Routes", "a(usauau)", vm_prop_routes, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END
};

static const sd_bus_vtable session_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Name", "s", prop_str, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Priority", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Class", "u", prop_u32, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Cpus", "s", prop_str, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Pid", "i", prop_pid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("OwnerPid", "i", prop_pid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Events", "a(suud)", session_prop_events, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_VTABLE_END
};

/* Which snapshot keys each changeable property shows. */
static const struct { const char *prop, *key; } vm_changeable[] = {
	{ "Priority", "priority" },   { "Class", "class" },
	{ "GeneralCounters", "gp" },  { "FixedCounterMask", "fixed_mask" },
	{ "Owner", "owner" },         { "PassthroughVcpus", "passthrough_vcpus" },
	{ "Routes", "vcpus" },
};
static const struct { const char *prop, *key; } session_changeable[] = { { "Events", "events" } };

static bool differs(struct json_object *a, struct json_object *b, const char *key)
{
	return !json_object_equal(jget(a, key), jget(b, key));
}

/* Emits InterfacesAdded/Removed and PropertiesChanged for one list of the
 * snapshot; s->plan already holds the new one, which the getters read. */
static void diff_objects(struct dbus_service *s, struct json_object *old, const char *list,
			 const char *prefix, const char *iface, bool is_vm)
{
	struct json_object *oarr = jget(old, list), *narr = jget(s->plan, list);
	size_t on = oarr ? json_object_array_length(oarr) : 0, nn = narr ? json_object_array_length(narr) : 0;
	char *path;
	for (size_t i = 0; i < on; i++) {
		const char *name = jstr(json_object_array_get_idx(oarr, i), "name");
		if (find_named(s->plan, list, name) || sd_bus_path_encode(prefix, name, &path) < 0)
			continue;
		sd_bus_emit_interfaces_removed(s->bus, path, iface, NULL);
		free(path);
	}
	for (size_t i = 0; i < nn; i++) {
		struct json_object *n = json_object_array_get_idx(narr, i);
		struct json_object *o = find_named(old, list, jstr(n, "name"));
		if (sd_bus_path_encode(prefix, jstr(n, "name"), &path) < 0)
			continue;
		if (!o) {
			sd_bus_emit_interfaces_added(s->bus, path, iface, NULL);
		} else {
			char *changed[8];
			size_t k = 0;
			if (is_vm) {
				for (size_t j = 0; j < sizeof(vm_changeable) / sizeof(vm_changeable[0]); j++)
					if (differs(o, n, vm_changeable[j].key))
						changed[k++] = (char *)vm_changeable[j].prop;
			} else {
				for (size_t j = 0; j < sizeof(session_changeable) / sizeof(session_changeable[0]); j++)
					if (differs(o, n, session_changeable[j].key))
						changed[k++] = (char *)session_changeable[j].prop;
			}
			changed[k] = NULL;
			if (k)
				sd_bus_emit_properties_changed_strv(s->bus, path, iface, changed);
		}
		free(path);
	}
}

/* Brings the exported objects in line with the broker and tells the bus
 * what changed. Idempotent: a second call with no change emits nothing. */
static void sync_objects(struct dbus_service *s)
{
	struct proto_request req = { .method = PROTO_M_PLAN };
	struct proto_error err = {0};
	struct json_object *plan = NULL;
	if (json_door_call(s->broker, &self_caller, &req, &plan, &err) < 0) {
		log_err("dbus: reading the plan: %s", err.message);
		return;
	}
	struct json_object *old = s->plan;
	s->plan = plan;
	if (old) {
		diff_objects(s, old, "vms", PATH_VM, IFACE_VM, true);
		diff_objects(s, old, "sessions", PATH_SESSION, IFACE_SESSION, false);
		char *changed[4];
		size_t k = 0;
		if (jint(old, "generation", 0) != jint(plan, "generation", 0))
			changed[k++] = "Generation";
		if (json_object_array_length(jget(old, "vms")) != json_object_array_length(jget(plan, "vms")))
			changed[k++] = "VmCount";
		if (json_object_array_length(jget(old, "sessions")) != json_object_array_length(jget(plan, "sessions")))
			changed[k++] = "SessionCount";
		changed[k] = NULL;
		if (k)
			sd_bus_emit_properties_changed_strv(s->bus, DBUS_SERVICE_PATH, IFACE_MANAGER, changed);
	}
	json_object_put(old);
}

static void emit_plan_changed(struct dbus_service *s, struct json_object *ev)
{
	sd_bus_message *sig = NULL;
	struct json_object *ch = jget(ev, "changes");
	int r = sd_bus_message_new_signal(s->bus, &sig, DBUS_SERVICE_PATH, IFACE_MANAGER, "PlanChanged");
	if (r >= 0)
		r = sd_bus_message_append(sig, "ts", (uint64_t)jint(ev, "generation", 0), jstr(ev, "reason"));
	if (r >= 0)
		r = sd_bus_message_open_container(sig, 'a', "a{sv}");
	for (size_t i = 0; r >= 0 && ch && i < json_object_array_length(ch); i++)
		r = append_dict(sig, json_object_array_get_idx(ch, i));
	if (r >= 0)
		r = sd_bus_message_close_container(sig);
	if (r >= 0)
		r = sd_bus_send(s->bus, sig, NULL);
	if (r < 0)
		log_warn("dbus: cannot emit PlanChanged: %s", strerror(-r));
	sd_bus_message_unref(sig);
}

/* Objects first, so that an agent reacting to PlanChanged reads the new
 * properties. */
static void flush(struct dbus_service *s)
{
	sync_objects(s);
	struct json_object *q = s->queue;
	s->queue = json_object_new_array();
	for (size_t i = 0; q && i < json_object_array_length(q); i++)
		emit_plan_changed(s, json_object_array_get_idx(q, i));
	json_object_put(q);
}

static int on_flush(sd_event_source *src, void *userdata)
{
	(void)src;
	flush(userdata);
	return 0;
}

/* Broker events arrive from inside broker calls; the bus work waits for the
 * event loop so that it never re-enters the broker. */
static void on_broker_event(const struct broker_event *ev, void *userdata)
{
	struct dbus_service *s = userdata;
	struct json_object *event = json_door_event_object(ev);
	if (s->queue && event)
		json_object_array_add(s->queue, event);
	else
		json_object_put(event);
	sd_event_source_set_enabled(s->flush_src, SD_EVENT_ONESHOT);
}

/* -------------------------------------------------------------- peers */

static void peer_free(struct peer *p)
{
	struct dbus_service *s = p->svc;
	if (p->prev)
		p->prev->next = p->next;
	else
		s->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	sd_bus_track_unref(p->track);
	broker_conn_unref(p->conn);
	free(p->name);
	free(p);
}

/* The agent left the bus: the broker releases what followed it. */
static int on_peer_gone(sd_bus_track *t, void *userdata)
{
	struct peer *p = userdata;
	char reason[160];
	(void)t;
	snprintf(reason, sizeof(reason), "its D-Bus peer %s left the bus", p->name);
	broker_conn_close(p->conn, reason);
	peer_free(p);
	return 0;
}

static struct peer *peer_get(struct dbus_service *s, const char *sender)
{
	for (struct peer *p = s->peers; p; p = p->next)
		if (!strcmp(p->name, sender))
			return p;
	struct peer *p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(sender)) || broker_conn_open(s->broker, true, &p->conn) < 0 ||
	    sd_bus_track_new(s->bus, &p->track, on_peer_gone, p) < 0 || sd_bus_track_add_name(p->track, sender) < 0) {
		if (p) {
			sd_bus_track_unref(p->track);
			broker_conn_unref(p->conn);
			free(p->name);
		}
		free(p);
		return NULL;
	}
	p->svc = s;
	p->next = s->peers;
	if (s->peers)
		s->peers->prev = p;
	s->peers = p;
	return p;
}

/* ------------------------------------------------------------ requests */

static void pending_free(struct pending *p)
{
	struct dbus_service *s = p->svc;
	if (p->prev)
		p->prev->next = p->next;
	else
		s->pending = p->next;
	if (p->next)
		p->next->prev = p->prev;
	sd_bus_slot_unref(p->slot);
	sd_bus_message_unref(p->call);
	proto_request_fini(&p->req);
	broker_conn_unref(p->conn);
	free(p->sender);
	free(p);
}

static bool changes_state(enum proto_method m)
{
	return m == PROTO_M_VM_ATTACH || m == PROTO_M_VM_DETACH || m == PROTO_M_VM_UPDATE ||
	       m == PROTO_M_VM_BIND || m == PROTO_M_SESSION_START || m == PROTO_M_SESSION_STOP;
}

/* Runs the request through the broker and answers; frees p. The broker
 * decides: polkit's answer is one of the credentials it weighs. */
static void finish(struct pending *p, bool polkit_allowed)
{
	struct dbus_service *s = p->svc;
	const struct proto_request *req = &p->req;
	struct broker_caller caller = { .door = BROKER_DOOR_DBUS, .uid = p->uid, .gid = p->gid, .pid = p->pid,
					.polkit_allowed = polkit_allowed, .origin = "dbus", .conn = p->conn };
	struct json_object *result = NULL;
	struct proto_error err = {0};
	int r;
	if (json_door_call(s->broker, &caller, req, &result, &err) < 0) {
		r = reply_proto_error(p->call, &err);
	} else {
		if (changes_state(req->method))
			flush(s);
		r = p->reply(s, p->call, req, result);
		/* The change is done; the caller must still hear an answer
		 * (a reply that cannot be built, e.g. too large for the bus). */
		if (r < 0)
			r = sd_bus_reply_method_errorf(p->call, "org.vpmu.Broker1.Error.Internal",
						       "the result could not be sent: %s", strerror(-r));
	}
	if (r < 0)
		log_warn("dbus: cannot answer %s: %s", p->sender, strerror(-r));
	json_object_put(result);
	pending_free(p);
}

static int on_polkit(sd_bus_message *reply, void *userdata, sd_bus_error *e)
{
	struct pending *p = userdata;
	const sd_bus_error *pe = sd_bus_message_get_error(reply);
	int authorized = 0, challenge = 0;
	(void)e;
	if (pe) {
		/* No polkit, or polkit failing, grants nothing. */
		log_notice("dbus: polkit could not check %s (uid %u): %s: treated as not authorized",
			   p->sender, (unsigned)p->uid, pe->message ? pe->message : pe->name);
	} else if (sd_bus_message_enter_container(reply, 'r', "bba{ss}") < 0 ||
		   sd_bus_message_read(reply, "bb", &authorized, &challenge) < 0) {
		log_warn("dbus: unreadable polkit answer for %s: treated as not authorized", p->sender);
		authorized = 0;
	}
	log_info("dbus: polkit: %s (uid %u) %s for " DBUS_SERVICE_POLKIT_ACTION, p->sender, (unsigned)p->uid,
		 authorized ? "authorized" : "not authorized");
	p->slot = sd_bus_slot_unref(p->slot);
	finish(p, authorized);
	return 1;
}

/*
 * The common path of every method: validate as the socket does, learn who
 * asks, ask polkit (asynchronously) for a change the caller's credentials
 * alone do not allow, and let the broker decide and do the rest. Takes
 * params.
 */
static int dispatch(sd_bus_message *m, struct dbus_service *s, enum proto_method method,
		    struct json_object *params, reply_fn reply, sd_bus_error *e)
{
	struct json_object *obj = json_object_new_object();
	struct proto_error perr = {0};
	bool id_known;
	uint64_t id;
	struct pending *p = calloc(1, sizeof(*p));
	if (!obj || !p) {
		json_object_put(obj);
		json_object_put(params);
		free(p);
		return -ENOMEM;
	}
	json_object_object_add(obj, "id", json_object_new_int(0));
	json_object_object_add(obj, "method", json_object_new_string(proto_method_name(method)));
	if (params)
		json_object_object_add(obj, "params", params);
	int r = proto_request_from_json(obj, s->max_cpus, &p->req, &id_known, &id, &perr);
	json_object_put(obj);
	if (r < 0) {
		proto_request_fini(&p->req);
		free(p);
		r = reply_proto_error(m, &perr);
		return r < 0 ? r : 1;
	}
	p->svc = s;
	p->reply = reply;
	p->call = sd_bus_message_ref(m);
	p->next = s->pending;
	if (s->pending)
		s->pending->prev = p;
	s->pending = p;

	sd_bus_creds *c = NULL;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	pid_t pid = 0;
	r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_UID | SD_BUS_CREDS_EGID |
					 SD_BUS_CREDS_GID | SD_BUS_CREDS_PID, &c);
	if (r >= 0 && sd_bus_creds_get_euid(c, &uid) < 0)
		r = sd_bus_creds_get_uid(c, &uid);
	if (r >= 0 && sd_bus_creds_get_egid(c, &gid) < 0)
		sd_bus_creds_get_gid(c, &gid);
	if (r >= 0)
		sd_bus_creds_get_pid(c, &pid);
	sd_bus_creds_unref(c);
	const char *sender = sd_bus_message_get_sender(m);
	p->sender = strdup(sender ? sender : "?");
	if (r < 0 || !p->sender) {
		pending_free(p);
		return sd_bus_error_setf(e, ERROR_PREFIX "Internal", "cannot read the caller's credentials: %s",
					 strerror(r < 0 ? -r : ENOMEM));
	}
	p->uid = uid;
	p->gid = gid;
	p->pid = pid;
	if (changes_state(method)) {
		/* The caller's connection, from now on: if it leaves while polkit
		 * thinks, the broker refuses the request when it arrives. */
		struct peer *peer = peer_get(s, p->sender);
		if (!peer) {
			pending_free(p);
			return sd_bus_error_setf(e, ERROR_PREFIX "Internal", "cannot follow the caller's connection");
		}
		p->conn = broker_conn_ref(peer->conn);
	}
	/* Polkit only when the credentials alone do not allow it. */
	struct broker_caller who = { .door = BROKER_DOOR_DBUS, .uid = uid, .gid = gid, .pid = pid };
	uid_t owner = (uid_t)-1;
	struct broker_session_view sv;
	if ((method == PROTO_M_SESSION_STOP || method == PROTO_M_SESSION_READ) &&
	    broker_session_find(s->broker, p->req.u.session_stop.name, &sv) == 0)
		owner = sv.uid;
	if (broker_method_right(method) == BROKER_RIGHT_ANYONE ||
	    broker_authorize(s->broker, &who, method, owner, NULL) == 0) {
		finish(p, false);
		return 1;
	}
	r = sd_bus_call_method_async(s->bus, &p->slot, "org.freedesktop.PolicyKit1",
				     "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority",
				     "CheckAuthorization", on_polkit, p, "(sa{sv})sa{ss}us", "system-bus-name", 1,
				     "name", "s", p->sender, DBUS_SERVICE_POLKIT_ACTION, 0, 0, "");
	if (r < 0) {
		log_notice("dbus: cannot ask polkit about %s: %s: treated as not authorized", p->sender,
			   strerror(-r));
		finish(p, false);
	}
	return 1;
}

/* ------------------------------------------------------------- replies */

static int reply_dict(struct dbus_service *s, sd_bus_message *call, const struct proto_request *req,
		      struct json_object *result)
{
	sd_bus_message *rep = NULL;
	(void)s, (void)req;
	int r = sd_bus_message_new_method_return(call, &rep);
	if (r >= 0)
		r = append_dict(rep, result);
	if (r >= 0)
		r = sd_bus_send(NULL, rep, NULL);
	sd_bus_message_unref(rep);
	return r;
}

static int reply_generation(struct dbus_service *s, sd_bus_message *call, const struct proto_request *req,
			    struct json_object *result)
{
	(void)s, (void)req;
	return sd_bus_reply_method_return(call, "t", (uint64_t)jint(result, "generation", 0));
}

/* AttachVM / StartSession: the new object's path, then the broker's result. */
static int reply_object(struct dbus_service *s, sd_bus_message *call, const struct proto_request *req,
			struct json_object *result)
{
	bool vm = req->method == PROTO_M_VM_ATTACH;
	char *path = NULL;
	sd_bus_message *rep = NULL;
	(void)s;
	int r = sd_bus_path_encode(vm ? PATH_VM : PATH_SESSION,
				   vm ? req->u.vm_attach.name : req->u.session_start.name, &path);
	if (r >= 0)
		r = sd_bus_message_new_method_return(call, &rep);
	if (r >= 0)
		r = sd_bus_message_append(rep, "o", path);
	if (r >= 0)
		r = append_dict(rep, result);
	if (r >= 0)
		r = sd_bus_send(NULL, rep, NULL);
	sd_bus_message_unref(rep);
	free(path);
	return r;
}

/* ------------------------------------------------------------- methods */

static struct json_object *name_params(const char *name)
{
	struct json_object *o = json_object_new_object();
	if (o)
		json_object_object_add(o, "name", json_object_new_string(name));
	return o;
}

/* (s name, a{sv} options): the name joins the options. */
static int named_with_options(sd_bus_message *m, void *userdata, sd_bus_error *e, enum proto_method method,
			      reply_fn reply)
{
	const char *name;
	struct json_object *o = NULL;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0 || (r = read_options(m, &o, e)) < 0)
		return r;
	if (jget(o, "name")) {
		json_object_put(o);
		return invalid_param(e, "%s: the name is the first argument, not an option", "name");
	}
	json_object_object_add(o, "name", json_object_new_string(name));
	return dispatch(m, userdata, method, o, reply, e);
}

static int m_attach_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return named_with_options(m, userdata, e, PROTO_M_VM_ATTACH, reply_object);
}

static int m_update_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return named_with_options(m, userdata, e, PROTO_M_VM_UPDATE, reply_dict);
}

static int m_bind_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	const char *name;
	uint32_t pid;
	struct json_object *o = NULL;
	int r = sd_bus_message_read(m, "su", &name, &pid);
	if (r < 0 || (r = read_options(m, &o, e)) < 0)
		return r;
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "pid", json_object_new_int64(pid));
	return dispatch(m, userdata, PROTO_M_VM_BIND, o, reply_dict, e);
}

static int name_only(sd_bus_message *m, void *userdata, sd_bus_error *e, enum proto_method method,
		     reply_fn reply)
{
	const char *name;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	return dispatch(m, userdata, method, name_params(name), reply, e);
}

static int m_detach_vm(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return name_only(m, userdata, e, PROTO_M_VM_DETACH, reply_generation);
}

static int m_read_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return name_only(m, userdata, e, PROTO_M_SESSION_READ, reply_dict);
}

static int m_stop_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return name_only(m, userdata, e, PROTO_M_SESSION_STOP, reply_generation);
}

static int m_start_session(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	const char *name;
	struct json_object *o = NULL, *evs = NULL;
	int r = sd_bus_message_read(m, "s", &name);
	if (r < 0 || (r = read_value(m, &evs, 1, e)) < 0)
		return r;
	if ((r = read_options(m, &o, e)) < 0) {
		json_object_put(evs);
		return r;
	}
	if (jget(o, "name") || jget(o, "events")) {
		json_object_put(o);
		json_object_put(evs);
		return invalid_param(e, "%s: name and events are arguments, not options", "options");
	}
	json_object_object_add(o, "name", json_object_new_string(name));
	json_object_object_add(o, "events", evs);
	return dispatch(m, userdata, PROTO_M_SESSION_START, o, reply_object, e);
}

static int m_get_plan(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	struct json_object *o = NULL;
	int r = read_options(m, &o, e);
	if (r < 0)
		return r;
	return dispatch(m, userdata, PROTO_M_PLAN, o, reply_dict, e);
}

static int m_get_pmu(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return dispatch(m, userdata, PROTO_M_PMU, NULL, reply_dict, e);
}

static int m_get_status(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return dispatch(m, userdata, PROTO_M_STATUS, NULL, reply_dict, e);
}

/* ---------------------------------------------------- manager properties */

static struct json_object *read_view(struct dbus_service *s, enum proto_method method)
{
	struct proto_request req = { .method = method };
	struct proto_error err = {0};
	struct json_object *res = NULL;
	if (json_door_call(s->broker, &self_caller, &req, &res, &err) < 0)
		log_warn("dbus: %s: %s", proto_method_name(method), err.message);
	return res;
}

static int mgr_prop(PROP_ARGS)
{
	struct dbus_service *s = userdata;
	PROP_UNUSED;
	if (!strcmp(prop, "Version"))
		return sd_bus_message_append(reply, "s", "vpmud/" VPMU_VERSION);
	if (!strcmp(prop, "Generation"))
		return sd_bus_message_append(reply, "t", broker_generation(s->broker));
	if (!strcmp(prop, "VmCount"))
		return sd_bus_message_append(reply, "u", (uint32_t)json_object_array_length(jget(s->plan, "vms")));
	if (!strcmp(prop, "SessionCount"))
		return sd_bus_message_append(reply, "u",
					     (uint32_t)json_object_array_length(jget(s->plan, "sessions")));
	struct json_object *v = read_view(s, !strcmp(prop, "Pmu") ? PROTO_M_PMU : PROTO_M_STATUS);
	if (!v)
		return -EIO;
	int r;
	struct json_object *be = jget(v, "backends");
	if (!strcmp(prop, "Pmu"))
		r = append_dict(reply, v);
	else if (!strcmp(prop, "Backend"))
		r = sd_bus_message_append(reply, "u", enum_value(backend_names, jstr(be, "kvm")));
	else if (!strcmp(prop, "BackendEnforced"))
		r = sd_bus_message_append(reply, "b", (int)json_object_get_boolean(jget(be, "kvm_enforced")));
	else
		r = append_dict(reply, be);
	json_object_put(v);
	return r;
}

static const sd_bus_vtable manager_vtable[] = {
	SD_BUS_VTABLE_START(0),
	SD_BUS_PROPERTY("Version", "s", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backend", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("BackendEnforced", "b", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Backends", "a{sv}", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Pmu", "a{sv}", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_CONST),
	SD_BUS_PROPERTY("Generation", "t", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("VmCount", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("SessionCount", "u", mgr_prop, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	/* Authorization happens inside (root, else polkit): sd-bus's own
	 * CAP_SYS_ADMIN check would refuse polkit-authorized users. */
	SD_BUS_METHOD_WITH_ARGS("AttachVM", SD_BUS_ARGS("s", name, "a{sv}", options),
				SD_BUS_RESULT("o", vm, "a{sv}", result), m_attach_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("UpdateVM", SD_BUS_ARGS("s", name, "a{sv}", changes),
				SD_BUS_RESULT("a{sv}", result), m_update_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("BindVM", SD_BUS_ARGS("s", name, "u", pid, "a{sv}", options),
				SD_BUS_RESULT("a{sv}", result), m_bind_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("DetachVM", SD_BUS_ARGS("s", name), SD_BUS_RESULT("t", generation),
				m_detach_vm, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("StartSession", SD_BUS_ARGS("s", name, "as", events, "a{sv}", options),
				SD_BUS_RESULT("o", session, "a{sv}", result), m_start_session,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("ReadSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("a{sv}", result),
				m_read_session, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("StopSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("t", generation),
				m_stop_session, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetPlan", SD_BUS_ARGS("a{sv}", options), SD_BUS_RESULT("a{sv}", plan),
				m_get_plan, SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetPmu", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", pmu), m_get_pmu,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_METHOD_WITH_ARGS("GetStatus", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", status), m_get_status,
				SD_BUS_VTABLE_UNPRIVILEGED),
	SD_BUS_SIGNAL_WITH_ARGS("PlanChanged", SD_BUS_ARGS("t", generation, "s", reason, "aa{sv}", changes), 0),
	SD_BUS_VTABLE_END
};

/* ------------------------------------------------------------ lifecycle */

int dbus_service_new(sd_event *event, struct broker *broker, const struct config *cfg,
		     const char *bus_address, unsigned max_cpus, struct dbus_service **out, char *why,
		     size_t whylen)
{
	struct dbus_service *s = calloc(1, sizeof(*s));
	const char *step = "";
	int r;
	if (!s)
		return -ENOMEM;
	s->event = event;
	s->broker = broker;
	s->cfg = cfg;
	s->max_cpus = max_cpus;
	s->queue = json_object_new_array();
	if (!s->queue) {
		free(s);
		return -ENOMEM;
	}
	if (bus_address) {
		step = "connecting to the bus";
		if ((r = sd_bus_new(&s->bus)) < 0 || (r = sd_bus_set_address(s->bus, bus_address)) < 0 ||
		    (r = sd_bus_set_bus_client(s->bus, 1)) < 0 || (r = sd_bus_start(s->bus)) < 0)
			goto fail;
	} else {
		step = "connecting to the system bus";
		if ((r = sd_bus_open_system(&s->bus)) < 0)
			goto fail;
	}
	sd_bus_set_description(s->bus, "vpmud-dbus");
	step = "exporting objects";
	if ((r = sd_bus_add_object_vtable(s->bus, NULL, DBUS_SERVICE_PATH, IFACE_MANAGER, manager_vtable, s)) < 0 ||
	    (r = sd_bus_add_fallback_vtable(s->bus, NULL, PATH_VM, IFACE_VM, vm_vtable, vm_find, s)) < 0 ||
	    (r = sd_bus_add_node_enumerator(s->bus, NULL, PATH_VM, vm_enumerate, s)) < 0 ||
	    (r = sd_bus_add_fallback_vtable(s->bus, NULL, PATH_SESSION, IFACE_SESSION, session_vtable,
					    session_find, s)) < 0 ||
	    (r = sd_bus_add_node_enumerator(s->bus, NULL, PATH_SESSION, session_enumerate, s)) < 0 ||
	    (r = sd_bus_add_object_manager(s->bus, NULL, DBUS_SERVICE_PATH)) < 0)
		goto fail;
	step = "following the broker";
	if ((r = sd_event_add_defer(event, &s->flush_src, on_flush, s)) < 0 ||
	    (r = sd_event_source_set_enabled(s->flush_src, SD_EVENT_OFF)) < 0 ||
	    (r = broker_subscribe(broker, on_broker_event, s, &s->sub_id)) < 0)
		goto fail;
	s->subscribed = true;
	sync_objects(s);
	step = "attaching to the event loop";
	if ((r = sd_bus_attach_event(s->bus, event, SD_EVENT_PRIORITY_NORMAL)) < 0)
		goto fail;
	/* Last: once the name is ours, callers may arrive. */
	step = "taking the name " DBUS_SERVICE_NAME;
	if ((r = sd_bus_request_name(s->bus, DBUS_SERVICE_NAME, 0)) < 0)
		goto fail;
	log_notice("dbus: serving %s at %s on %s", DBUS_SERVICE_NAME, DBUS_SERVICE_PATH,
		   bus_address ? bus_address : "the system bus");
	*out = s;
	return 0;
fail:
	snprintf(why, whylen, "%s: %s", step, strerror(-r));
	dbus_service_free(s);
	return r;
}

void dbus_service_free(struct dbus_service *s)
{
	if (!s)
		return;
	while (s->pending)
		pending_free(s->pending);
	/* Leases stay: a restart releases D-Bus leases without an owner, and
	 * a plain stop must not rewrite the state as if agents had left (the
	 * connections are dropped, not closed). */
	while (s->peers) {
		s->peers->track = sd_bus_track_unref(s->peers->track);
		peer_free(s->peers);
	}
	if (s->subscribed)
		broker_unsubscribe(s->broker, s->sub_id);
	sd_event_source_disable_unref(s->flush_src);
	if (s->bus) {
		sd_bus_flush(s->bus);
		sd_bus_detach_event(s->bus);
		sd_bus_flush_close_unref(s->bus);
	}
	json_object_put(s->queue);
	json_object_put(s->plan);
	free(s);
}
