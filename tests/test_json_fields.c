// SPDX-License-Identifier: MIT
/* Tests for proto/json_fields.c: the table-driven strict object decoder
 * shared by the protocol and the PMU model loader. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/json_fields.h"

struct seen {
	int calls;
	enum json_fields_kind kind;
	char path[JSON_FIELDS_PATH_MAX];
	int64_t min, max;
	size_t count;
	int checks_absent, checks_present;
};

static int record(struct json_fields *jf, const struct json_fields_problem *p)
{
	struct seen *s = jf->user;

	s->calls++;
	s->kind = p->kind;
	snprintf(s->path, sizeof(s->path), "%s", p->path);
	s->min = p->min;
	s->max = p->max;
	s->count = p->count;
	return -EINVAL;
}

struct inner {
	int32_t a;
	bool has_a;
};

struct target {
	uint32_t version;
	int16_t level;          /* signed, -1..3 */
	uint64_t mask;
	bool flag;
	char name[8];
	char *owned;
	int color;
	struct inner in;
	bool has_in;
	uint32_t list[3];
	uint16_t n_list;
	char **words;
	uint32_t n_words;
	int32_t pid;            /* 0: not given */
	int32_t dyn;            /* bounded by version, defaulting to it */
};

static const char *const colors[] = { [1] = "red", [3] = "blue" };

static int count_check(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		       const void *base, bool present)
{
	struct seen *s = jf->user;

	(void)f, (void)path, (void)base;
	if (present)
		s->checks_present++;
	else
		s->checks_absent++;
	return 0;
}

static void dyn_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)jf;
	*min = 0;
	*max = ((const struct target *)base)->version;
}

static int64_t dyn_default(const struct json_fields *jf, const void *base)
{
	(void)jf;
	return ((const struct target *)base)->version;
}

static const struct json_fields_field inner_rows[] = {
	{ .name = "a", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .min = -5, .max = 5,
	  .offset = offsetof(struct inner, a), .size = sizeof(int32_t), .present = JSON_FIELDS_FLAG(struct inner, has_a) },
	{ 0 },
};

static const struct json_fields_field list_elem = { .type = JSON_FIELDS_INT, .max = 9, .size = sizeof(uint32_t) };
static const struct json_fields_field word_elem = { .type = JSON_FIELDS_STRING,
						     .flags = JSON_FIELDS_STRDUP | JSON_FIELDS_TOKEN_CHARS,
						     .min = 1, .max = 4 };

#define T(member) .offset = offsetof(struct target, member), .size = JSON_FIELDS_SIZE(struct target, member)

static const struct json_fields_field rows[] = {
	{ .name = "version", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_FIRST, .min = 1,
	  .max = 9, T(version) },
	{ .name = "level", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = -1, .max = 3, .def = -1,
	  .check = count_check, T(level) },
	{ .name = "mask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX, .digits = 4, .max = 0xffff, T(mask) },
	{ .name = "flag", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT, .def = 1, T(flag) },
	{ .name = "name", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_NAME_CHARS, .min = 1, .max = 7, T(name) },
	{ .name = "owned", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_STRDUP | JSON_FIELDS_ZERO_UNSET, .max = 100,
	  T(owned) },
	{ .name = "color", .type = JSON_FIELDS_ENUM, .flags = JSON_FIELDS_DEFAULT, .min = 1, .max = 3, .def = 1,
	  .names = colors, T(color) },
	{ .name = "in", .type = JSON_FIELDS_OBJECT, .fields = inner_rows, .offset = offsetof(struct target, in),
	  .present = JSON_FIELDS_FLAG(struct target, has_in) },
	{ .name = "list", .type = JSON_FIELDS_ARRAY, .max = 3, .offset = offsetof(struct target, list),
	  .elem = &list_elem, .elem_size = sizeof(uint32_t), .count_offset = offsetof(struct target, n_list),
	  .count_size = sizeof(uint16_t) },
	{ .name = "words", .type = JSON_FIELDS_ARRAY, .flags = JSON_FIELDS_HEAP, .min = 1, .max = 4,
	  .offset = offsetof(struct target, words), .elem = &word_elem, .elem_size = sizeof(char *),
	  .count_offset = offsetof(struct target, n_words), .count_size = sizeof(uint32_t) },
	{ .name = "pid", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_ZERO_UNSET, .min = 1, .max = 100, T(pid) },
	{ .name = "dyn", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .bounds = dyn_bounds,
	  .default_of = dyn_default, T(dyn) },
	{ 0 },
};

static void target_free(struct target *t)
{
	free(t->owned);
	for (uint32_t i = 0; t->words && i < t->n_words; i++)
		free(t->words[i]);
	free(t->words);
	memset(t, 0, sizeof(*t));
}

/* Decodes text into t; returns what json_fields_decode returned. */
static int decode(const char *text, struct target *t, struct seen *s)
{
	struct json_fields jf = { .report = record, .user = s };
	struct json_object *obj = json_tokener_parse(text);
	int r;

	assert_non_null(obj);
	memset(t, 0, sizeof(*t));
	memset(s, 0, sizeof(*s));
	r = json_fields_decode(&jf, rows, obj, "top", t);
	json_object_put(obj);
	return r;
}

static void expect_problem(const char *text, enum json_fields_kind kind, const char *path)
{
	struct target t;
	struct seen s;
	int r = decode(text, &t, &s);

	if (r != -EINVAL || s.calls != 1 || s.kind != kind || strcmp(s.path, path) != 0)
		fail_msg("%s: r %d, %d reports, kind %d at \"%s\"; want kind %d at \"%s\"", text, r, s.calls, s.kind,
			 s.path, kind, path);
	target_free(&t);
}

static void test_decode_all(void **state)
{
	struct target t;
	struct seen s;

	(void)state;
	assert_int_equal(decode("{\"version\":3,\"level\":2,\"mask\":\"0xFf\",\"flag\":false,\"name\":\"a.b-c\","
				"\"owned\":\"x y\",\"color\":\"blue\",\"in\":{\"a\":-5},\"list\":[1,9],"
				"\"words\":[\"w\",\"xyz!\"],\"pid\":7,\"dyn\":3}", &t, &s), 0);
	assert_int_equal(t.version, 3);
	assert_int_equal(t.level, 2);
	assert_int_equal(t.mask, 0xff);
	assert_false(t.flag);
	assert_string_equal(t.name, "a.b-c");
	assert_string_equal(t.owned, "x y");
	assert_int_equal(t.color, 3);
	assert_true(t.has_in);
	assert_true(t.in.has_a);
	assert_int_equal(t.in.a, -5);
	assert_int_equal(t.n_list, 2);
	assert_int_equal(t.list[1], 9);
	assert_int_equal(t.n_words, 2);
	assert_string_equal(t.words[1], "xyz!");
	assert_int_equal(t.pid, 7);
	assert_int_equal(t.dyn, 3);
	assert_int_equal(s.checks_present, 1);
	assert_int_equal(s.checks_absent, 0);
	target_free(&t);
}

static void test_defaults(void **state)
{
	struct target t;
	struct seen s;

	(void)state;
	assert_int_equal(decode("{\"version\":4,\"words\":[\"a\"]}", &t, &s), 0);
	assert_int_equal(t.level, -1);   /* a signed default in two bytes */
	assert_true(t.flag);
	assert_int_equal(t.color, 1);
	assert_int_equal(t.dyn, 4);      /* from what was decoded before */
	assert_false(t.has_in);
	assert_int_equal(t.n_list, 0);
	assert_null(t.owned);
	assert_int_equal(s.checks_absent, 1); /* level's check runs when absent too */
	target_free(&t);
}

static void test_decode_problems(void **state)
{
	(void)state;
	/* the FIRST row is read before unknown members are refused */
	expect_problem("{\"version\":0,\"bogus\":1}", JSON_FIELDS_RANGE, "top.version");
	expect_problem("{\"version\":1,\"bogus\":1}", JSON_FIELDS_UNKNOWN, "top.bogus");
	expect_problem("{\"bogus\":1}", JSON_FIELDS_MISSING, "top.version");
	expect_problem("{\"version\":null}", JSON_FIELDS_NULL, "top.version");
	expect_problem("{\"version\":1.0}", JSON_FIELDS_TYPE, "top.version");
	expect_problem("{\"version\":\"0x1\"}", JSON_FIELDS_TYPE, "top.version"); /* not a HEX row */
	expect_problem("{\"version\":99999999999999999999}", JSON_FIELDS_RANGE, "top.version");
	expect_problem("{\"version\":1,\"level\":-2}", JSON_FIELDS_RANGE, "top.level");
	expect_problem("{\"version\":1,\"mask\":\"0x10000\"}", JSON_FIELDS_SYNTAX, "top.mask"); /* 5 digits */
	expect_problem("{\"version\":1,\"mask\":\"0x\"}", JSON_FIELDS_SYNTAX, "top.mask");
	expect_problem("{\"version\":1,\"mask\":\"0x+1\"}", JSON_FIELDS_SYNTAX, "top.mask");
	expect_problem("{\"version\":1,\"mask\":\"1\"}", JSON_FIELDS_SYNTAX, "top.mask");
	expect_problem("{\"version\":1,\"mask\":65536}", JSON_FIELDS_RANGE, "top.mask");
	expect_problem("{\"version\":1,\"flag\":1}", JSON_FIELDS_TYPE, "top.flag");
	expect_problem("{\"version\":1,\"name\":\"\"}", JSON_FIELDS_LENGTH, "top.name");
	expect_problem("{\"version\":1,\"name\":\"12345678\"}", JSON_FIELDS_LENGTH, "top.name");
	expect_problem("{\"version\":1,\"name\":\"a/b\"}", JSON_FIELDS_CHARSET, "top.name");
	expect_problem("{\"version\":1,\"owned\":\"a\\u0000b\"}", JSON_FIELDS_CHARSET, "top.owned");
	expect_problem("{\"version\":1,\"color\":\"green\"}", JSON_FIELDS_NAME, "top.color");
	expect_problem("{\"version\":1,\"color\":\"\"}", JSON_FIELDS_NAME, "top.color");
	expect_problem("{\"version\":1,\"in\":{}}", JSON_FIELDS_MISSING, "top.in.a");
	expect_problem("{\"version\":1,\"in\":{\"a\":1,\"b\":2}}", JSON_FIELDS_UNKNOWN, "top.in.b");
	expect_problem("{\"version\":1,\"in\":[]}", JSON_FIELDS_TYPE, "top.in");
	expect_problem("{\"version\":1,\"list\":[1,2,3,4]}", JSON_FIELDS_COUNT, "top.list");
	expect_problem("{\"version\":1,\"list\":[1,10]}", JSON_FIELDS_RANGE, "top.list[1]");
	expect_problem("{\"version\":1,\"list\":[null]}", JSON_FIELDS_NULL, "top.list[0]");
	expect_problem("{\"version\":1,\"words\":[]}", JSON_FIELDS_COUNT, "top.words");
	expect_problem("{\"version\":1,\"words\":[\"ok\",\"a b\"]}", JSON_FIELDS_CHARSET, "top.words[1]");
	expect_problem("{\"version\":1,\"pid\":0}", JSON_FIELDS_RANGE, "top.pid");
	expect_problem("{\"version\":2,\"dyn\":3}", JSON_FIELDS_RANGE, "top.dyn");
	/* keys are shown printable only, and a long path is cut, not overrun */
	expect_problem("{\"version\":1,\"\\u00e9\":1}", JSON_FIELDS_UNKNOWN, "top.??");
	{
		char key[201], text[400], want[JSON_FIELDS_PATH_MAX];

		memset(key, 'k', sizeof(key) - 1);
		key[sizeof(key) - 1] = '\0';
		snprintf(text, sizeof(text), "{\"version\":1,\"%s\":1}", key);
		memcpy(want, "top.", 4);
		memset(want + 4, 'k', sizeof(want) - 5);
		want[sizeof(want) - 1] = '\0';
		expect_problem(text, JSON_FIELDS_UNKNOWN, want);
	}
}

static void test_bounds_reported(void **state)
{
	struct target t;
	struct seen s;

	(void)state;
	assert_int_equal(decode("{\"version\":5,\"dyn\":6}", &t, &s), -EINVAL);
	assert_int_equal(s.min, 0);
	assert_int_equal(s.max, 5);
	assert_int_equal(decode("{\"version\":5,\"list\":[1,1,1,1,1]}", &t, &s), -EINVAL);
	assert_int_equal(s.count, 5);
	assert_int_equal(s.max, 3);
	target_free(&t);
}

static void test_heap_kept_for_the_caller(void **state)
{
	struct target t;
	struct seen s;

	(void)state;
	/* the first word is stored, the second refused: the caller frees */
	assert_int_equal(decode("{\"version\":1,\"words\":[\"ab\",\"toolong\"]}", &t, &s), -EINVAL);
	assert_int_equal(t.n_words, 2);
	assert_string_equal(t.words[0], "ab");
	assert_null(t.words[1]);
	target_free(&t);
}

static void test_absent_object(void **state)
{
	struct json_fields jf = { .report = record };
	struct seen s = { 0 };
	struct target t = { 0 };

	(void)state;
	jf.user = &s;
	assert_int_equal(json_fields_decode(&jf, rows, NULL, "p", &t), -EINVAL);
	assert_int_equal(s.kind, JSON_FIELDS_MISSING);
	assert_string_equal(s.path, "p.version");
	assert_int_equal(json_fields_decode(&jf, inner_rows + 1, NULL, "p", &t), 0);
}

static void expect_checked(struct target *t, enum json_fields_kind kind, const char *path)
{
	struct seen s = { 0 };
	struct json_fields jf = { .report = record, .user = &s };

	if (json_fields_check(&jf, rows, t, "top") != -EINVAL)
		fail_msg("accepted, want kind %d at \"%s\"", kind, path);
	if (s.kind != kind || strcmp(s.path, path) != 0)
		fail_msg("kind %d at \"%s\", want %d at \"%s\"", s.kind, s.path, kind, path);
}

static void test_check_typed(void **state)
{
	char *words[] = { "w" };
	struct target ok = { .version = 2, .level = -1, .mask = 0xffff, .name = "n", .color = 3, .n_list = 1,
			     .list = { 9 }, .words = words, .n_words = 1, .dyn = 2 };
	struct seen s = { 0 };
	struct json_fields jf = { .report = record, .user = &s };
	struct target t;

	(void)state;
	assert_int_equal(json_fields_check(&jf, rows, &ok, "top"), 0);
	/* level's check sees the row present (no flag, no ZERO_UNSET) */
	assert_int_equal(s.checks_present, 1);

	t = ok, t.version = 0;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.version");
	t = ok, t.level = -2;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.level");
	t = ok, t.mask = 0x10000;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.mask");
	t = ok, memcpy(t.name, "12345678", 8); /* unterminated */
	expect_checked(&t, JSON_FIELDS_LENGTH, "top.name");
	t = ok, t.name[0] = '/';
	expect_checked(&t, JSON_FIELDS_CHARSET, "top.name");
	t = ok, t.color = 2; /* a hole in the names */
	expect_checked(&t, JSON_FIELDS_NAME, "top.color");
	t = ok, t.has_in = true, t.in.has_a = true, t.in.a = 6;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.in.a");
	t = ok, t.has_in = true; /* a required member not flagged present */
	expect_checked(&t, JSON_FIELDS_MISSING, "top.in.a");
	t = ok, t.in.a = 6; /* not present: not checked */
	assert_int_equal(json_fields_check(&jf, rows, &t, "top"), 0);
	t = ok, t.owned = "\x01"; /* given: checked (no character set: only NUL is refused) */
	assert_int_equal(json_fields_check(&jf, rows, &t, "top"), 0);
	t = ok, t.n_list = 4;
	expect_checked(&t, JSON_FIELDS_COUNT, "top.list");
	t = ok, t.list[0] = 10;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.list[0]");
	t = ok, t.words = NULL;
	expect_checked(&t, JSON_FIELDS_NULL, "top.words");
	t = ok, t.n_words = 0;
	expect_checked(&t, JSON_FIELDS_COUNT, "top.words");
	t = ok, t.pid = 101;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.pid");
	t = ok, t.dyn = 3;
	expect_checked(&t, JSON_FIELDS_RANGE, "top.dyn");
}

static void test_type_names(void **state)
{
	struct json_object *d = json_object_new_double(1.5);

	(void)state;
	assert_string_equal(json_fields_type_name(NULL), "null");
	assert_string_equal(json_fields_type_name(d), "number");
	assert_string_equal(json_fields_expected(&rows[2]), "integer or hex string");
	assert_string_equal(json_fields_expected(&rows[0]), "integer");
	json_object_put(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode_all),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_decode_problems),
		cmocka_unit_test(test_bounds_reported),
		cmocka_unit_test(test_heap_kept_for_the_caller),
		cmocka_unit_test(test_absent_object),
		cmocka_unit_test(test_check_typed),
		cmocka_unit_test(test_type_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
