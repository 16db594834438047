/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/state.h"

static int setup_dir(void **st)
{
	char *d = strdup("/tmp/vpmu-test-state.XXXXXX");
	if (!mkdtemp(d))
		return -1;
	*st = d;
	return 0;
}

static int teardown_dir(void **st)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*st);
	int r = system(cmd);
	free(*st);
	return r == 0 ? 0 : -1;
}

static void write_file(const char *dir, const char *content)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, STATE_FILE);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static int count_entries(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)))
			n++;
	closedir(d);
	return n;
}

static void test_missing_is_empty(void **st)
{
	struct json_object *doc = (void *)1;
	char moved[512], why[256];
	assert_int_equal(state_load(*st, &doc, moved, sizeof(moved), why, sizeof(why)), 0);
	assert_null(doc);
	assert_string_equal(moved, "");
}

static void test_roundtrip(void **st)
{
	struct json_object *doc = json_object_new_object(), *back = NULL;
	char moved[512], why[256];
	json_object_object_add(doc, "vms", json_object_new_array());
	json_object_array_add(json_object_object_get(doc, "vms"), json_object_new_string("web"));
	assert_int_equal(state_save(*st, doc), 0);
	json_object_put(doc);
	assert_int_equal(state_load(*st, &back, moved, sizeof(moved), why, sizeof(why)), 0);
	assert_non_null(back);
	assert_int_equal(json_object_get_int(json_object_object_get(back, "format")), STATE_FORMAT);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(json_object_object_get(back, "vms"), 0)), "web");
	json_object_put(back);
	/* The temp file does not survive a successful save. */
	assert_int_equal(count_entries(*st, ".state"), 0);
}

static void expect_moved(const char *dir, const char *content, const char *reason, const char *why_part)
{
	struct json_object *doc = (void *)1;
	char moved[512], why[256];
	write_file(dir, content);
	assert_int_equal(state_load(dir, &doc, moved, sizeof(moved), why, sizeof(why)), 0);
	assert_null(doc);
	assert_non_null(strstr(moved, reason));
	assert_non_null(strstr(why, why_part));
	assert_int_equal(access(moved, F_OK), 0);
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, STATE_FILE);
	assert_int_not_equal(access(p, F_OK), 0);
}

static void test_corrupt_moved_aside(void **st)
{
	expect_moved(*st, "{\"format\": 1, \"vms\": [", "corrupt", "truncated");
	expect_moved(*st, "[1,2]", "corrupt", "not a JSON object");
	expect_moved(*st, "{\"vms\": []}", "corrupt", "format");
	expect_moved(*st, "{\"format\": 1} trailing", "corrupt", "does not parse");
}

static void test_newer_moved_aside(void **st)
{
	expect_moved(*st, "{\"format\": 99}", "newer", "newer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_missing_is_empty, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_corrupt_moved_aside, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_newer_moved_aside, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
