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

static void assert_text_only(const char *msg)
{
	for (const unsigned char *p = (const unsigned char *)msg; *p; p++)
		if (*p < 0x20 || *p == 0x7f || *p >= 0x80) {
			print_error("raw byte 0x%02x in \"%s\"\n", *p, msg);
			fail();
		}
}

/* Issue 14: a binary config's refusal copied raw bytes into the log. */
static void test_binary_refused_escaped(void **st)
{
	(void)st;
	struct config c, before;
	char err[CONFIG_ERR_MAX];
	config_defaults(&c);
	before = c;
	static const char elf[] = "\x7f" "ELF\x02\x01\x01\x00\x00\x1b[2J = \xff\xfe";
	assert_int_equal(config_parse_text(elf, sizeof(elf) - 1, "/etc/x.conf", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "/etc/x.conf:1: byte 0x7F at column 1 is not text (a control or invisible format character, or not UTF-8): not a config file");
	assert_memory_equal(&c, &before, sizeof(c));
	/* a NUL does not end the line early: "5" would otherwise be taken */
	static const char nul[] = "default_priority = 5\0 junk\n";
	assert_int_equal(config_parse_text(nul, sizeof(nul) - 1, "f", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "f:1: byte 0x00 at column 21"));
	assert_int_equal(c.default_priority, 100);
	/* what is echoed (the label, a line, a key, a value) comes out escaped */
	static const char bad_utf8[] = "x\xc3 = 1\n";
	assert_int_equal(config_parse_text(bad_utf8, sizeof(bad_utf8) - 1, "a\x1b]0;t\x07", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "a\\x1B]0;t\\x07:1: byte 0xC3 at column 2"));
	assert_text_only(err);
	static const char bs[] = "de\\fault = 1\n";
	assert_int_equal(config_parse_text(bs, sizeof(bs) - 1, "f", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "f:1: unknown field \"de\\\\fault\"");
	/* values from the command line are not filtered by the parser */
	assert_int_equal(config_set(&c, "default_priority", "9\x1b[31m", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "got \"9\\x1B[31m\""));
	assert_int_equal(config_set(&c, "admin_group", "wheel\x01", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "byte 0x01 at position 6 is not text"));
	assert_text_only(err);
	assert_int_equal(config_set(&c, "kvm", "\xe2\x80\xae" "evil", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "got \"\\xE2\\x80\\xAEevil\"")); /* a bidi override reorders a line */
	/* the path of a file that cannot be read */
	char *path = strdup("/tmp/no\x1bsuch\xff");
	assert_int_equal(config_load_file(path, true, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/tmp/no\\x1Bsuch\\xFF: "));
	free(path);
	assert_memory_equal(&c, &before, sizeof(c));
}

/* Issue 14: a load that fails keeps every setting, whichever line fails. */
static void test_failed_load_keeps_everything(void **st)
{
	(void)st;
	struct config c, before;
	char err[CONFIG_ERR_MAX];
	config_defaults(&c);
	c.default_priority = 7;
	snprintf(c.default_class, sizeof(c.default_class), "shared");
	snprintf(c.admin_group, sizeof(c.admin_group), "wheel");
	c.max_clients = 99;
	c.idle_timeout = 5;
	before = c;
	static const char text[] = "default_priority = 1\ndefault_class = guaranteed\nadmin_group = adm\n"
				   "max_clients = 10\nidle_timeout = 9\nfirst_frame_timeout = 0\n";
	assert_int_equal(config_parse_text(text, sizeof(text) - 1, "f", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "f:6: field \"first_frame_timeout\""));
	assert_memory_equal(&c, &before, sizeof(c));
	char *p = write_tmp(text);
	assert_int_equal(config_load_file(p, true, &c, err, sizeof(err)), -EINVAL);
	assert_memory_equal(&c, &before, sizeof(c));
	unlink(p);
	free(p);
	/* and without the bad line, all of them apply */
	assert_int_equal(config_parse_text(text, strstr(text, "first_frame") - text, "f", &c, err, sizeof(err)), 0);
	assert_int_equal(c.default_priority, 1);
	assert_string_equal(c.admin_group, "adm");
	assert_int_equal(c.idle_timeout, 9);
}

/* Notes after a value are comments, as the shipped file writes them: every
 * example line of daemon/vpmud.conf, uncommented, is a valid setting. */
static void test_shipped_examples_uncommented(void **st)
{
	(void)st;
	char path[4096];
	snprintf(path, sizeof(path), "%s/daemon/vpmud.conf", getenv("VPMU_SOURCE_DIR") ? getenv("VPMU_SOURCE_DIR") : "..");
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[1024], text[8192] = "";
	unsigned examples = 0;
	while (fgets(line, sizeof(line), f)) {
		/* "# key = value  # note": an example setting */
		if (!strncmp(line, "# ", 2) && line[2] >= 'a' && line[2] <= 'z' && strstr(line, " = ")) {
			strncat(text, line + 2, sizeof(text) - strlen(text) - 1);
			examples++;
		}
	}
	fclose(f);
	assert_true(examples >= 8);
	struct config c;
	config_defaults(&c);
	char err[CONFIG_ERR_MAX];
	int r = config_parse_text(text, strlen(text), "vpmud.conf", &c, err, sizeof(err));
	if (r < 0)
		fail_msg("%s", err);
	assert_string_equal(c.metrics_file, "/run/vpmu/metrics/vpmu.prom");
	assert_int_equal(c.max_clients, 256);

	const char *noted = "max_clients = 64   # a note\nadmin_group = ops ; another\ndefault_class = shared#x\n";
	config_defaults(&c);
	r = config_parse_text(noted, strlen(noted), "noted", &c, err, sizeof(err));
	assert_int_equal(r, -EINVAL); /* "shared#x": a '#' with no blank before it is part of the value */
	noted = "max_clients = 64   # a note\nadmin_group = ops ; another\n";
	config_defaults(&c);
	assert_int_equal(config_parse_text(noted, strlen(noted), "noted", &c, err, sizeof(err)), 0);
	assert_int_equal(c.max_clients, 64);
	assert_string_equal(c.admin_group, "ops");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),   cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_bad_files),  cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_long_value_error), cmocka_unit_test(test_not_regular_files),
		cmocka_unit_test(test_reload),     cmocka_unit_test(test_dbus_key),
		cmocka_unit_test(test_binary_refused_escaped), cmocka_unit_test(test_failed_load_keeps_everything),
		cmocka_unit_test(test_shipped_examples_uncommented),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
