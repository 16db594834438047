// SPDX-License-Identifier: MIT
#include "proto/json_fields.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define MAX_HEX_DIGITS 16u

static int problem(struct json_fields *jf, enum json_fields_kind kind, const char *path,
		   const struct json_fields_field *f, struct json_object *v, int64_t min, int64_t max,
		   size_t count)
{
	const struct json_fields_problem p = {
		.kind = kind, .path = path, .field = f, .value = v, .min = min, .max = max, .count = count,
	};

	return jf->report(jf, &p);
}

const char *json_fields_type_name(struct json_object *v)
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

const char *json_fields_expected(const struct json_fields_field *f)
{
	if (f->expect)
		return f->expect;
	switch (f->type) {
	case JSON_FIELDS_INT: return f->flags & JSON_FIELDS_HEX ? "integer or hex string" : "integer";
	case JSON_FIELDS_BOOL: return "boolean";
	case JSON_FIELDS_STRING:
	case JSON_FIELDS_ENUM: return "string";
	case JSON_FIELDS_OBJECT: return "object";
	case JSON_FIELDS_ARRAY: return "array";
	case JSON_FIELDS_CUSTOM: break;
	}
	return "value";
}

void json_fields_path_key(char out[JSON_FIELDS_PATH_MAX], const char *path, const char *key)
{
	int w = snprintf(out, JSON_FIELDS_PATH_MAX, "%s%s", path, *path ? "." : "");
	size_t n = w < 0 ? 0 : (size_t)w;

	if (n >= JSON_FIELDS_PATH_MAX)
		return; /* already cut, and terminated, by snprintf */
	for (; *key && n + 1 < JSON_FIELDS_PATH_MAX; key++)
		out[n++] = (*key >= 0x20 && *key <= 0x7e) ? *key : '?';
	out[n] = '\0';
}

void json_fields_path_index(char out[JSON_FIELDS_PATH_MAX], const char *path, size_t i)
{
	/* snprintf cuts and terminates a path that does not fit */
	snprintf(out, JSON_FIELDS_PATH_MAX, "%s[%zu]", path, i);
}

bool json_fields_put(struct json_object *obj, const char *key, struct json_object *v)
{
	if (!v)
		return false;
	if (json_object_object_add(obj, key, v) < 0) {
		json_object_put(v);
		return false;
	}
	return true;
}

int64_t json_fields_load_int(const void *slot, size_t size, bool is_signed)
{
	switch (size) {
	case 1: return is_signed ? (int64_t)*(const int8_t *)slot : (int64_t)*(const uint8_t *)slot;
	case 2: return is_signed ? (int64_t)*(const int16_t *)slot : (int64_t)*(const uint16_t *)slot;
	case 4: return is_signed ? (int64_t)*(const int32_t *)slot : (int64_t)*(const uint32_t *)slot;
	default: return *(const int64_t *)slot;
	}
}

static void store_int(void *slot, size_t size, int64_t v)
{
	switch (size) {
	case 1: *(uint8_t *)slot = (uint8_t)v; break;
	case 2: *(uint16_t *)slot = (uint16_t)v; break;
	case 4: *(uint32_t *)slot = (uint32_t)v; break;
	default: *(int64_t *)slot = v; break;
	}
}

static void row_bounds(const struct json_fields *jf, const struct json_fields_field *f, const void *base,
		       int64_t *min, int64_t *max)
{
	*min = f->min;
	*max = f->max;
	if (f->bounds)
		f->bounds(jf, base, min, max);
}

static void *slot_of(const void *base, const struct json_fields_field *f)
{
	return (char *)base + f->offset;
}

static void mark_present(const struct json_fields_field *f, void *base)
{
	if (f->present)
		*(bool *)((char *)base + f->present - 1) = true;
}

static bool row_present(const struct json_fields_field *f, const void *base)
{
	if (f->present)
		return *(const bool *)((const char *)base + f->present - 1);
	if ((f->flags & JSON_FIELDS_ZERO_UNSET) && f->type == JSON_FIELDS_STRING && (f->flags & JSON_FIELDS_STRDUP))
		return *(char *const *)slot_of(base, f) != NULL;
	if ((f->flags & JSON_FIELDS_ZERO_UNSET) && f->type == JSON_FIELDS_STRING)
		return *(const char *)slot_of(base, f) != '\0';
	if (f->flags & JSON_FIELDS_ZERO_UNSET)
		return json_fields_load_int(slot_of(base, f), f->size, f->min < 0) != 0;
	return true;
}

static bool name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
	       c == '_' || c == '-';
}

/* The rule of a string row on its text (n bytes; a NUL among them is a
 * character no set allows). */
static int string_rule(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		       struct json_object *v, const char *s, size_t n)
{
	if ((int64_t)n < f->min || (int64_t)n > f->max || (f->size && !(f->flags & JSON_FIELDS_STRDUP) && n >= f->size))
		return problem(jf, JSON_FIELDS_LENGTH, path, f, v, f->min, f->max, 0);
	for (size_t i = 0; i < n; i++) {
		bool ok = s[i] != '\0';

		if (f->flags & JSON_FIELDS_NAME_CHARS)
			ok = name_char(s[i]);
		else if (f->flags & JSON_FIELDS_TOKEN_CHARS)
			ok = s[i] >= 0x21 && s[i] <= 0x7e;
		if (!ok)
			return problem(jf, JSON_FIELDS_CHARSET, path, f, v, f->min, f->max, 0);
	}
	return 0;
}

/* "0x" + 1..digits hex digits, a lower-case x as the docs write it:
 * anything looser (signs, spaces, octal, decimal strings, "0X") would be
 * one more spelling every door and every document must agree on. */
static int parse_hex(const char *s, size_t n, unsigned int digits, uint64_t *out)
{
	uint64_t x = 0;

	if (!digits || digits > MAX_HEX_DIGITS)
		digits = MAX_HEX_DIGITS;
	if (n < 3 || n > 2 + digits || s[0] != '0' || s[1] != 'x')
		return -EINVAL;
	for (size_t i = 2; i < n; i++) {
		char c = s[i];
		unsigned int d;

		if (c >= '0' && c <= '9')
			d = (unsigned int)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned int)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned int)(c - 'A' + 10);
		else
			return -EINVAL;
		x = x * 16 + d;
	}
	*out = x;
	return 0;
}

static int decode_int(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
		      const char *path, void *base)
{
	int64_t min, max, x;

	row_bounds(jf, f, base, &min, &max);
	if (json_object_is_type(v, json_type_int)) {
		/* json-c saturates beyond int64, so "huge" is a range error too */
		x = json_object_get_int64(v);
	} else if ((f->flags & JSON_FIELDS_HEX) && json_object_is_type(v, json_type_string)) {
		uint64_t u;

		if (parse_hex(json_object_get_string(v), (size_t)json_object_get_string_len(v), f->digits, &u) < 0)
			return problem(jf, JSON_FIELDS_SYNTAX, path, f, v, min, max, 0);
		if (u > (uint64_t)INT64_MAX)
			return problem(jf, JSON_FIELDS_RANGE, path, f, v, min, max, 0);
		x = (int64_t)u;
	} else {
		return problem(jf, JSON_FIELDS_TYPE, path, f, v, min, max, 0);
	}
	if (x < min || x > max)
		return problem(jf, JSON_FIELDS_RANGE, path, f, v, min, max, 0);
	store_int(slot_of(base, f), f->size, x);
	return 0;
}

static int decode_string(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			 const char *path, void *base)
{
	const char *s;
	size_t n;
	int r;

	if (!json_object_is_type(v, json_type_string))
		return problem(jf, JSON_FIELDS_TYPE, path, f, v, f->min, f->max, 0);
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	r = string_rule(jf, f, path, v, s, n);
	if (r < 0)
		return r;
	if (f->flags & JSON_FIELDS_STRDUP) {
		char **dst = slot_of(base, f);

		*dst = strndup(s, n);
		if (!*dst)
			return problem(jf, JSON_FIELDS_OOM, path, f, v, f->min, f->max, 0);
	} else if (f->size) {
		memcpy(slot_of(base, f), s, n + 1);
	}
	return 0;
}

static int decode_enum(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
		       const char *path, void *base)
{
	const char *s;

	if (!json_object_is_type(v, json_type_string))
		return problem(jf, JSON_FIELDS_TYPE, path, f, v, f->min, f->max, 0);
	s = json_object_get_string(v);
	for (int64_t i = f->min; i <= f->max; i++) {
		if (f->names[i] && strcmp(f->names[i], s) == 0) {
			store_int(slot_of(base, f), f->size, i);
			return 0;
		}
	}
	return problem(jf, JSON_FIELDS_NAME, path, f, v, f->min, f->max, 0);
}

static int decode_row_value(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			    const char *path, void *base);

static int decode_array(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			const char *path, void *base)
{
	char *elems;
	size_t n;

	if (!json_object_is_type(v, json_type_array))
		return problem(jf, JSON_FIELDS_TYPE, path, f, v, f->min, f->max, 0);
	n = json_object_array_length(v);
	if ((int64_t)n < f->min || (int64_t)n > f->max)
		return problem(jf, JSON_FIELDS_COUNT, path, f, v, f->min, f->max, n);
	if (f->flags & JSON_FIELDS_HEAP) {
		void **dst = slot_of(base, f);

		*dst = n ? calloc(n, f->elem_size) : NULL;
		if (n && !*dst)
			return problem(jf, JSON_FIELDS_OOM, path, f, v, f->min, f->max, n);
		elems = *dst;
	} else {
		elems = slot_of(base, f);
	}
	/* counted before the elements are read, so that a caller freeing
	 * after a failure reaches every element allocated (the rest are zero) */
	store_int((char *)base + f->count_offset, f->count_size, (int64_t)n);
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(v, i);
		char pi[JSON_FIELDS_PATH_MAX];
		void *slot = elems + i * f->elem_size;
		int r;

		json_fields_path_index(pi, path, i);
		if (!e)
			return problem(jf, JSON_FIELDS_NULL, pi, f->elem, NULL, 0, 0, 0);
		r = decode_row_value(jf, f->elem, e, pi, slot);
		if (r == 0 && f->elem->check)
			r = f->elem->check(jf, f->elem, pi, slot, true);
		if (r < 0)
			return r;
	}
	return 0;
}

/* v into the row's slot, with the row's built-in rule. */
static int decode_row_value(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			    const char *path, void *base)
{
	switch (f->type) {
	case JSON_FIELDS_INT:
		return decode_int(jf, f, v, path, base);
	case JSON_FIELDS_BOOL:
		if (!json_object_is_type(v, json_type_boolean))
			return problem(jf, JSON_FIELDS_TYPE, path, f, v, 0, 0, 0);
		*(bool *)slot_of(base, f) = json_object_get_boolean(v);
		return 0;
	case JSON_FIELDS_STRING:
		return decode_string(jf, f, v, path, base);
	case JSON_FIELDS_ENUM:
		return decode_enum(jf, f, v, path, base);
	case JSON_FIELDS_OBJECT:
		if (!json_object_is_type(v, json_type_object))
			return problem(jf, JSON_FIELDS_TYPE, path, f, v, 0, 0, 0);
		return json_fields_decode(jf, f->fields, v, path, slot_of(base, f));
	case JSON_FIELDS_ARRAY:
		return decode_array(jf, f, v, path, base);
	case JSON_FIELDS_CUSTOM:
		return f->decode(jf, f, v, path, slot_of(base, f));
	}
	return -EINVAL;
}

int json_fields_decode_value(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			     const char *path, void *base)
{
	if (!v)
		return problem(jf, JSON_FIELDS_NULL, path, f, NULL, f->min, f->max, 0);
	return decode_row_value(jf, f, v, path, base);
}

static int decode_row(struct json_fields *jf, const struct json_fields_field *f, struct json_object *obj,
		      const char *path, void *base)
{
	char p[JSON_FIELDS_PATH_MAX];
	struct json_object *v = NULL;
	int r;

	json_fields_path_key(p, path, f->name);
	if (!obj || !json_object_object_get_ex(obj, f->name, &v)) {
		if (f->flags & JSON_FIELDS_REQUIRED) {
			int64_t min, max;

			row_bounds(jf, f, base, &min, &max);
			return problem(jf, JSON_FIELDS_MISSING, p, f, NULL, min, max, 0);
		}
		if (f->flags & JSON_FIELDS_DEFAULT) {
			int64_t def = f->default_of ? f->default_of(jf, base) : f->def;

			if (f->type == JSON_FIELDS_BOOL)
				*(bool *)slot_of(base, f) = def != 0;
			else
				store_int(slot_of(base, f), f->size, def);
		}
		return f->check ? f->check(jf, f, p, base, false) : 0;
	}
	/* json-c hands a JSON null back as a NULL value; treating it as
	 * absent would make "priority": null a silent default */
	r = json_fields_decode_value(jf, f, v, p, base);
	if (r < 0)
		return r;
	mark_present(f, base);
	return f->check ? f->check(jf, f, p, base, true) : 0;
}

static const struct json_fields_field *row_named(const struct json_fields_field *rows, const char *name)
{
	for (const struct json_fields_field *f = rows; f->name; f++)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

int json_fields_decode(struct json_fields *jf, const struct json_fields_field *rows, struct json_object *obj,
		       const char *path, void *base)
{
	int r;

	for (const struct json_fields_field *f = rows; f->name; f++)
		if ((f->flags & JSON_FIELDS_FIRST) && (r = decode_row(jf, f, obj, path, base)) < 0)
			return r;
	if (obj) {
		json_object_object_foreach(obj, key, val) {
			char p[JSON_FIELDS_PATH_MAX];

			(void)val;
			if (row_named(rows, key))
				continue;
			json_fields_path_key(p, path, key);
			return problem(jf, JSON_FIELDS_UNKNOWN, p, NULL, NULL, 0, 0, 0);
		}
	}
	for (const struct json_fields_field *f = rows; f->name; f++)
		if (!(f->flags & JSON_FIELDS_FIRST) && (r = decode_row(jf, f, obj, path, base)) < 0)
			return r;
	return 0;
}

/* ------------------------------------------------------------------ check */

static int check_value(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		       const void *base);

static int check_array(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		       const void *base)
{
	int64_t n = json_fields_load_int((const char *)base + f->count_offset, f->count_size, false);
	const char *elems = slot_of(base, f);

	if (n < f->min || n > f->max)
		return problem(jf, JSON_FIELDS_COUNT, path, f, NULL, f->min, f->max, (size_t)n);
	if (f->flags & JSON_FIELDS_HEAP) {
		elems = *(char *const *)elems;
		if (n && !elems)
			return problem(jf, JSON_FIELDS_NULL, path, f, NULL, f->min, f->max, (size_t)n);
	}
	for (int64_t i = 0; i < n; i++) {
		char pi[JSON_FIELDS_PATH_MAX];
		const void *slot = elems + (size_t)i * f->elem_size;
		int r;

		json_fields_path_index(pi, path, (size_t)i);
		r = check_value(jf, f->elem, pi, slot);
		if (r == 0 && f->elem->check)
			r = f->elem->check(jf, f->elem, pi, slot, true);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The built-in rule of one row on its stored value (children included). */
static int check_value(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		       const void *base)
{
	const void *slot = slot_of(base, f);

	switch (f->type) {
	case JSON_FIELDS_INT: {
		int64_t min, max, x = json_fields_load_int(slot, f->size, f->min < 0);

		row_bounds(jf, f, base, &min, &max);
		if (x < min || x > max)
			return problem(jf, JSON_FIELDS_RANGE, path, f, NULL, min, max, 0);
		return 0;
	}
	case JSON_FIELDS_STRING: {
		const char *s = slot;

		if (f->flags & JSON_FIELDS_STRDUP)
			s = *(const char *const *)slot;
		else if (!f->size)
			return 0;
		if (!s)
			return problem(jf, JSON_FIELDS_NULL, path, f, NULL, f->min, f->max, 0);
		/* an unterminated buffer reads as too long, never past its end */
		return string_rule(jf, f, path, NULL, s,
				   f->flags & JSON_FIELDS_STRDUP ? strlen(s) : strnlen(s, f->size));
	}
	case JSON_FIELDS_ENUM: {
		int64_t x = json_fields_load_int(slot, f->size, true);

		if (x < f->min || x > f->max || !f->names[x])
			return problem(jf, JSON_FIELDS_NAME, path, f, NULL, f->min, f->max, 0);
		return 0;
	}
	case JSON_FIELDS_OBJECT:
		return json_fields_check(jf, f->fields, slot, path);
	case JSON_FIELDS_ARRAY:
		return check_array(jf, f, path, base);
	case JSON_FIELDS_BOOL:
	case JSON_FIELDS_CUSTOM:
		return 0;
	}
	return -EINVAL;
}

int json_fields_check(struct json_fields *jf, const struct json_fields_field *rows, const void *base,
		      const char *path)
{
	for (const struct json_fields_field *f = rows; f->name; f++) {
		char p[JSON_FIELDS_PATH_MAX];
		bool present = row_present(f, base);
		int r = 0;

		json_fields_path_key(p, path, f->name);
		if (!present && (f->flags & JSON_FIELDS_REQUIRED))
			return problem(jf, JSON_FIELDS_MISSING, p, f, NULL, f->min, f->max, 0);
		if (present)
			r = check_value(jf, f, p, base);
		if (r == 0 && f->check)
			r = f->check(jf, f, p, base, present);
		if (r < 0)
			return r;
	}
	return 0;
}
