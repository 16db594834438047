/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "proto/cleanup.h"

static int tmp_fd(char *path)
{
	strcpy(path, "/tmp/vpmu-test-log.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	return fd;
}

static void test_journal_stream_matches_only_that_stream(void **st)
{
	(void)st;
	char a[64], b[64], text[96];
	int fa = tmp_fd(a), fb = tmp_fd(b);
	struct stat sa;
	assert_int_equal(fstat(fa, &sa), 0);
	snprintf(text, sizeof(text), "%llu:%llu", (unsigned long long)sa.st_dev, (unsigned long long)sa.st_ino);

	assert_true(log_stream_is_journal(text, fa));
	assert_false(log_stream_is_journal(text, fb));     /* another file: stderr redirected elsewhere */
	assert_false(log_stream_is_journal(NULL, fa));
	assert_false(log_stream_is_journal("", fa));
	char bad[128];
	snprintf(bad, sizeof(bad), "%sx", text);           /* trailing junk */
	assert_false(log_stream_is_journal(bad, fa));
	snprintf(bad, sizeof(bad), "%llu", (unsigned long long)sa.st_dev); /* no inode */
	assert_false(log_stream_is_journal(bad, fa));
	snprintf(bad, sizeof(bad), "%llu:%llu", (unsigned long long)sa.st_dev, (unsigned long long)sa.st_ino + 1);
	assert_false(log_stream_is_journal(bad, fa));
	assert_false(log_stream_is_journal("journal", fa));
	close(fb);
	assert_false(log_stream_is_journal(text, fb));     /* closed: fstat fails */
	close(fa);
	unlink(a);
	unlink(b);
}

static void test_stderr_line_keeps_todays_suffixes(void **st)
{
	(void)st;
	_cleanup_free_ char *plain = log_format_line(LOG_NOTICE, NULL, "vpmud stopped");
	assert_string_equal(plain, "<5>vpmud stopped");
	/* the facility bits never reach the prefix */
	_cleanup_free_ char *fac = log_format_line(LOG_DAEMON | LOG_ERR, NULL, "x");
	assert_string_equal(fac, "<3>x");
	/* order: vm, session, uid, via; journal-only fields are not rendered */
	_cleanup_free_ char *all = log_format_line(
		LOG_NOTICE,
		&(struct log_fields){ .vm = "web", .session = "perf1", .has_uid = true, .uid = 0, .via = "socket",
				      .generation = 7, .origin = "vpmuctl" },
		"vm web attached");
	assert_string_equal(all, "<5>vm web attached vm=web session=perf1 uid=0 via=socket");
	_cleanup_free_ char *none = log_format_line(LOG_INFO, &(struct log_fields){ .generation = 3 }, "t");
	assert_string_equal(none, "<6>t");
}

static const char *find_field(char *const *v, int n, const char *key)
{
	size_t kl = strlen(key);
	const char *hit = NULL;
	for (int i = 0; i < n; i++)
		if (!strncmp(v[i], key, kl) && v[i][kl] == '=') {
			assert_null(hit); /* each field once */
			hit = v[i] + kl + 1;
		}
	return hit;
}

static void test_journal_fields(void **st)
{
	(void)st;
	char *v[LOG_JOURNAL_FIELDS_MAX];
	int n = log_journal_fields(LOG_WARNING, VPMU_MSG_REFUSED,
				   &(struct log_fields){ .vm = "gold", .has_uid = true, .uid = 1000, .via = "dbus",
							 .generation = 12, .origin = "vpmuctl" },
				   "daemon/broker/broker.c", 42, "vm_attach", "vm gold refused: no", v);
	assert_true(n > 0 && n <= LOG_JOURNAL_FIELDS_MAX);
	assert_string_equal(find_field(v, n, "MESSAGE"), "vm gold refused: no");
	assert_string_equal(find_field(v, n, "PRIORITY"), "4");
	assert_string_equal(find_field(v, n, "SYSLOG_IDENTIFIER"), "vpmud");
	assert_string_equal(find_field(v, n, "MESSAGE_ID"), log_msg_id(VPMU_MSG_REFUSED));
	assert_string_equal(find_field(v, n, "CODE_FILE"), "daemon/broker/broker.c");
	assert_string_equal(find_field(v, n, "CODE_LINE"), "42");
	assert_string_equal(find_field(v, n, "CODE_FUNC"), "vm_attach");
	assert_string_equal(find_field(v, n, "VPMU_VM"), "gold");
	assert_string_equal(find_field(v, n, "VPMU_UID"), "1000");
	assert_string_equal(find_field(v, n, "VPMU_DOOR"), "dbus");
	assert_string_equal(find_field(v, n, "VPMU_GENERATION"), "12");
	assert_string_equal(find_field(v, n, "VPMU_ORIGIN"), "vpmuctl");
	assert_null(find_field(v, n, "VPMU_SESSION"));
	for (int i = 0; i < n; i++)
		free(v[i]);

	/* nothing set: the three fields every entry has, and no empty ones */
	n = log_journal_fields(LOG_INFO, VPMU_MSG_NONE, NULL, NULL, 0, NULL, "plain", v);
	assert_int_equal(n, 3);
	assert_string_equal(find_field(v, n, "MESSAGE"), "plain");
	assert_string_equal(find_field(v, n, "PRIORITY"), "6");
	assert_null(find_field(v, n, "MESSAGE_ID"));
	for (int i = 0; i < n; i++)
		free(v[i]);

	/* every field at once fits the array */
	n = log_journal_fields(LOG_ERR, VPMU_MSG_ADMITTED,
			       &(struct log_fields){ .vm = "a", .session = "b", .has_uid = true, .via = "c",
						     .generation = 1, .origin = "d" },
			       "f", 1, "g", "m", v);
	assert_int_equal(n, 13);
	for (int i = 0; i < n; i++)
		free(v[i]);
}

static void test_message_ids(void **st)
{
	(void)st;
	assert_null(log_msg_id(VPMU_MSG_NONE));
	assert_null(log_msg_id(VPMU_MSG__COUNT));
	assert_null(log_msg_name(VPMU_MSG_NONE));
	for (int m = VPMU_MSG_NONE + 1; m < VPMU_MSG__COUNT; m++) {
		const char *id = log_msg_id((enum log_msg)m);
		assert_non_null(id);
		assert_non_null(log_msg_name((enum log_msg)m));
		assert_int_equal(strlen(id), 32);
		for (const char *c = id; *c; c++)
			assert_true(isdigit((unsigned char)*c) || (*c >= 'a' && *c <= 'f'));
		for (int o = VPMU_MSG_NONE + 1; o < m; o++)
			assert_string_not_equal(id, log_msg_id((enum log_msg)o));
	}
	/* the five an operator searches for, by name */
	assert_string_equal(log_msg_name(VPMU_MSG_ADMITTED), "admitted");
	assert_string_equal(log_msg_name(VPMU_MSG_REFUSED), "refused");
	assert_string_equal(log_msg_name(VPMU_MSG_PREEMPTED), "preempted");
	assert_string_equal(log_msg_name(VPMU_MSG_RELEASED), "released");
	assert_string_equal(log_msg_name(VPMU_MSG_RESTORED), "restored");
}

/* systemd/vpmu.catalog has exactly one entry per id, each with the headers
 * journalctl shows (its compiled form is checked by it_journal). */
static void test_catalog_covers_every_id(void **st)
{
	(void)st;
	const char *src = getenv("VPMU_SOURCE_DIR");
	_cleanup_free_ char *path = alloc_printf("%s/systemd/vpmu.catalog", src ? src : "..");
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	assert_non_null(f);
	int seen[VPMU_MSG__COUNT] = { 0 };
	int current = -1, entries = 0;
	bool subject = false, defined = false, support = false;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t len;
#define END_ENTRY()                                        \
	do {                                               \
		if (current >= 0) {                        \
			assert_true(subject);              \
			assert_true(defined);              \
			assert_true(support);              \
		}                                          \
		subject = defined = support = false;       \
	} while (0)
	while ((len = getline(&line, &cap, f)) >= 0) {
		if (len && line[len - 1] == '\n')
			line[len - 1] = '\0';
		if (!strncmp(line, "-- ", 3)) {
			END_ENTRY();
			entries++;
			current = 0;
			for (int m = VPMU_MSG_NONE + 1; m < VPMU_MSG__COUNT; m++)
				if (!strcmp(line + 3, log_msg_id((enum log_msg)m)))
					current = m;
			if (current == 0)
				fail_msg("catalog entry %s: no such MESSAGE_ID in log.c", line + 3);
			seen[current]++;
		} else if (current >= 0) {
			subject = subject || !strncmp(line, "Subject: ", 9);
			defined = defined || !strcmp(line, "Defined-By: vpmu");
			support = support || !strncmp(line, "Support: ", 9);
		}
	}
	END_ENTRY();
#undef END_ENTRY
	assert_int_equal(entries, VPMU_MSG__COUNT - 1);
	for (int m = VPMU_MSG_NONE + 1; m < VPMU_MSG__COUNT; m++)
		if (seen[m] != 1)
			fail_msg("MESSAGE_ID %s (%s): %d catalog entries", log_msg_id((enum log_msg)m),
				 log_msg_name((enum log_msg)m), seen[m]);
}

/* Without log_init (tools, tests) or with a target that is not the
 * journal, a line is today's, whole, on stderr. */
static void test_emit_to_stderr(void **st)
{
	(void)st;
	char path[64];
	int fd = tmp_fd(path);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = "web", .generation = 4 },
		  "vm %s released: %s", "web", "detached by uid 0 via socket");
	log_init(&(struct log_target){ .journal = false });
	log_notice("plain %d", 1);
	log_init(NULL);
	dup2(saved, STDERR_FILENO);
	close(saved);
	char buf[512] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	assert_string_equal(buf, "<5>vm web released: detached by uid 0 via socket vm=web\n<5>plain 1\n");
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_journal_stream_matches_only_that_stream),
		cmocka_unit_test(test_stderr_line_keeps_todays_suffixes),
		cmocka_unit_test(test_journal_fields),
		cmocka_unit_test(test_message_ids),
		cmocka_unit_test(test_catalog_covers_every_id),
		cmocka_unit_test(test_emit_to_stderr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
