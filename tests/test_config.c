/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/config.h"

static char *write_tmp(const char *content)
{
	char *p = strdup("/tmp/vpmu-test-conf.XXXXXX");
	int fd = mkstemp(p);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return p;
}

static void test_defaults(void **st)
{
	(void)st;
	struct config c;
	config_defaults(&c);
	assert_string_equal(c.socket, "/run/vpmu/vpmud.sock");
	assert_string_equal(c.pmu, "auto");
	assert_int_equal(c.default_priority, 100);
	/* followed by default; "none" (test_good_file) turns it off */
	assert_string_equal(c.libvirt_uri, "qemu:///system");
}

static void test_good_file(void **st)
{
	(void)st;
	struct config c;
	char err[256];
	char *p = write_tmp("# comment\n\nsocket = /tmp/x.sock\nkvm = model\nkvm_model_reserve = uniform\n"
			    "default_priority = 7\ndefault_class = \"shared\"\nlibvirt_uri = none\n");
	config_defaults(&c);
	assert_int_equal(config_load_file(p, true, &c, err, sizeof(err)), 0);
	assert_string_equal(c.socket, "/tmp/x.sock");
	assert_string_equal(c.kvm, "model");
	assert_string_equal(c.kvm_model_reserve, "uniform");
	assert_int_equal(c.default_priority, 7);
	assert_string_equal(c.default_class, "shared");
	assert_string_equal(c.libvirt_uri, "");
	unlink(p);
	free(p);
}

static void expect_bad(const char *content, const char *needle)
{
	struct config c, before;
	char err[256];
	char *p = write_tmp(content);
	config_defaults(&c);
	before = c;
	assert_int_equal(config_load_file(p, true, &c, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" lacks \"%s\"", err, needle);
	/* A refused file changes nothing. */
	assert_memory_equal(&c, &before, sizeof(c));
	unlink(p);
	free(p);
}

static void test_bad_files(void **st)
{
	(void)st;
	expect_bad("kvm = model\ndefault_priority = 5000\n", ":2: field \"default_priority\"");
	expect_bad("kvm = magic\n", ":1: field \"kvm\"");
	expect_bad("kvm = model\nkvm_model_reserve = per_cpu\n", ":2: field \"kvm_model_reserve\"");
	expect_bad("frobnicate = 1\n", "unknown field \"frobnicate\"");
	expect_bad("socket relative\n", ":1: expected \"key = value\"");
	expect_bad("socket = relative.sock\n", "absolute path");
	expect_bad("default_class = platinum\n", "default_class");
	expect_bad("max_clients = 12abc\n", "max_clients");
}

/* The message quotes the whole offending value, however long the line may
 * be: CONFIG_ERR_MAX holds it; a short buffer cuts, never overruns. */
static void test_long_value_error(void **st)
{
	(void)st;
	struct config c;
	char line[CONFIG_LINE_MAX], err[CONFIG_ERR_MAX], small[16];
	size_t n = (size_t)snprintf(line, sizeof(line), "kvm = ");
	char *p;

	memset(line + n, 'k', sizeof(line) - n - 2);
	line[sizeof(line) - 2] = '\n';
	line[sizeof(line) - 1] = '\0';
	p = write_tmp(line);
	config_defaults(&c);
	assert_int_equal(config_load_file(p, true, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":1: field \"kvm\""));
	line[sizeof(line) - 2] = '\0';
	assert_non_null(strstr(err, line + n)); /* the value, whole */
	assert_int_equal(config_load_file(p, true, &c, small, sizeof(small)), -EINVAL);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	unlink(p);
	free(p);
}

static void test_missing_file(void **st)
{
	(void)st;
	struct config c;
	char err[256];
	config_defaults(&c);
	assert_int_equal(config_load_file("/nonexistent/vpmud.conf", false, &c, err, sizeof(err)), 0);
	assert_int_equal(config_load_file("/nonexistent/vpmud.conf", true, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/vpmud.conf"));
}

/* A config path that is not a regular file is refused at once, its type
 * named, and nothing changes; /dev/null means "no config file". */
static void test_not_regular_files(void **st)
{
	(void)st;
	struct config c, before;
	char err[CONFIG_ERR_MAX], dir[] = "/tmp/vpmu-test-config.XXXXXX", fifo[64];
	assert_non_null(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	config_defaults(&c);
	c.default_priority = 7;
	before = c;
	/* A FIFO nobody writes to would block a plain open and read. */
	assert_int_equal(config_load_file(fifo, true, &c, err, sizeof(err)), -EBADFD);
	assert_non_null(strstr(err, "not a regular file (a FIFO)"));
	assert_non_null(strstr(err, fifo));
	assert_memory_equal(&c, &before, sizeof(c));
	assert_int_equal(config_load_file(dir, true, &c, err, sizeof(err)), -EBADFD);
	assert_non_null(strstr(err, "(a directory)"));
	assert_memory_equal(&c, &before, sizeof(c));
	assert_int_equal(config_load_file("/dev/null", true, &c, err, sizeof(err)), 0);
	assert_memory_equal(&c, &before, sizeof(c));
	unlink(fifo);
	rmdir(dir);
}

static void test_dbus_key(void **st)
{
	(void)st;
	struct config c;
	char err[256];
	config_defaults(&c);
	assert_string_equal(c.dbus, "system");
	assert_int_equal(config_set(&c, "dbus", "none", err, sizeof(err)), 0);
	assert_string_equal(c.dbus, "none");
	assert_int_equal(config_set(&c, "dbus", "unix:path=/tmp/bus", err, sizeof(err)), 0);
	assert_string_equal(c.dbus, "unix:path=/tmp/bus");
	/* Neither a keyword nor an address: refused, value kept. */
	assert_int_equal(config_set(&c, "dbus", "sytem", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "\"dbus\""));
	assert_int_equal(config_set(&c, "dbus", "unix:path=/a b", err, sizeof(err)), -EINVAL);
	assert_int_equal(config_set(&c, "dbus", "", err, sizeof(err)), -EINVAL);
	assert_string_equal(c.dbus, "unix:path=/tmp/bus");
}

static void test_reload(void **st)
{
	(void)st;
	struct config cur, next;
	char applied[256], ignored[256];
	config_defaults(&cur);
	next = cur;
	next.default_priority = 5;
	snprintf(next.kvm, sizeof(next.kvm), "model");
	config_apply_reload(&cur, &next, applied, sizeof(applied), ignored, sizeof(ignored));
	assert_string_equal(applied, "default_priority");
	assert_string_equal(ignored, "kvm");
	assert_int_equal(cur.default_priority, 5);
	assert_string_equal(cur.kvm, "auto");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),   cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_bad_files),  cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_long_value_error), cmocka_unit_test(test_not_regular_files),
		cmocka_unit_test(test_reload),     cmocka_unit_test(test_dbus_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
