/* SPDX-License-Identifier: MIT */
/*
 * The lease store: one file per lease, atomic and durable puts and
 * deletes, nothing it cannot use ever deleted, and the migration of the
 * single state.json of format 1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker/state.h"

/* ---------------------------------------------------------------- tracing */

/*
 * The store's durability steps, seen from outside: these definitions take
 * the place of libc's for the whole test program, record what the store
 * asks of the kernel while tracing is on, and make the system call.
 */
static bool tracing;
static char trace[8192];

static void trace_add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace_add(const char *fmt, ...)
{
	if (!tracing)
		return;
	size_t n = strlen(trace);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(trace + n, sizeof(trace) - n, fmt, ap);
	va_end(ap);
}

static const char *base_of(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

int fsync(int fd)
{
	char link[64], path[512];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	path[n > 0 ? n : 0] = '\0';
	trace_add("fsync %s;", base_of(path));
	return (int)syscall(SYS_fsync, fd);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	trace_add("rename %s %s;", oldpath, newpath);
	return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	trace_add("unlink %s;", path);
	return (int)syscall(SYS_unlinkat, dirfd, path, flags);
}

/* ---------------------------------------------------------------- fixture */

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
	tracing = false;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*st);
	int r = system(cmd);
	free(*st);
	return r == 0 ? 0 : -1;
}

static struct state *open_store(const char *dir, char *note, size_t notelen)
{
	struct state *s = NULL;
	char why[1024];
	assert_int_equal(state_open(dir, &s, why, sizeof(why)), 0);
	assert_non_null(s);
	if (note)
		snprintf(note, notelen, "%s", why);
	return s;
}

static void write_at(const char *dir, const char *rel, const char *content)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	FILE *f = fopen(p, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static char *read_at(const char *dir, const char *rel)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	FILE *f = fopen(p, "r");
	if (!f)
		return NULL;
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

static bool exists_at(const char *dir, const char *rel)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	struct stat st;
	return lstat(p, &st) == 0;
}

/* Entries of dir/rel whose name starts with prefix. */
static int count_entries(const char *dir, const char *rel, const char *prefix)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, rel);
	DIR *d = opendir(p);
	if (!d)
		return 0;
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !strncmp(e->d_name, prefix, strlen(prefix)))
			n++;
	closedir(d);
	return n;
}

/* What a load saw: leases handed to the callback, files moved aside. */
struct seen {
	int n;
	enum state_kind kind[16];
	char name[16][80];
	char *text[16];
	size_t len[16];
	int n_rejected;
	char rejected_path[16][600], moved_to[16][600], why[16][400];
	int fail_with;        /* the callback's answer */
};

static int on_lease(enum state_kind kind, const char *name, const char *text, size_t len, void *ud)
{
	struct seen *s = ud;
	assert_true(s->n < 16);
	s->kind[s->n] = kind;
	snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
	/* Texts are NUL-terminated as well as counted. */
	assert_int_equal(strlen(text) <= len, true);
	s->text[s->n] = len < (1u << 16) ? strdup(text) : NULL;
	s->len[s->n] = len;
	s->n++;
	return s->fail_with;
}

static void on_rejected(const char *path, const char *moved_to, const char *why, void *ud)
{
	struct seen *s = ud;
	assert_true(s->n_rejected < 16);
	snprintf(s->rejected_path[s->n_rejected], 600, "%s", path);
	snprintf(s->moved_to[s->n_rejected], 600, "%s", moved_to);
	snprintf(s->why[s->n_rejected], 400, "%s", why);
	s->n_rejected++;
}

static void seen_free(struct seen *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->text[i]);
}

static int find_seen(const struct seen *s, enum state_kind kind, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (s->kind[i] == kind && !strcmp(s->name[i], name))
			return i;
	return -1;
}

/* ---------------------------------------------------------------- tests */

static void test_empty_dir(void **st)
{
	char note[1024];
	struct state *s = open_store(*st, note, sizeof(note));
	assert_string_equal(note, "");
	assert_string_equal(state_dir(s), *st);
	assert_true(exists_at(*st, "leases"));
	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(seen.n_rejected, 0);
	state_close(s);
}

/* One daemon per state directory: a second open is refused before it
 * reads or moves anything, and the first one's leases stay as they are. */
static void test_second_open_refused(void **st)
{
	struct state *s = open_store(*st, NULL, 0);
	assert_int_equal(state_put(s, STATE_VM, "web", "{}", 2), 0);
	write_at(*st, "leases/vm-junk.json", "not json: the loader of a second daemon would reject it");
	struct state *t = NULL;
	char why[1024];
	/* A second process, as a second vpmud would be: flock is per open
	 * file, so the same process would be refused too. */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int r = state_open(*st, &t, why, sizeof(why));
		_exit(r == -EBUSY && t == NULL && strstr(why, "in use by another vpmud") ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(exists_at(*st, "leases/vm-web.json"));
	assert_true(exists_at(*st, "leases/vm-junk.json"));
	state_close(s);
	/* Released with the first store: the next daemon gets it. */
	t = open_store(*st, NULL, 0);
	state_close(t);
}

static void test_put_load_delete(void **st)
{
	struct state *s = open_store(*st, NULL, 0);
	assert_int_equal(state_put(s, STATE_VM, "web-1", "{\"a\":1}", 7), 0);
	assert_int_equal(state_put(s, STATE_SESSION, "web-1", "{\"s\":2}", 7), 0);
	assert_int_equal(state_put(s, STATE_VM, "db.2", "{\"b\":1}", 7), 0);
	/* A put replaces the lease's file whole. */
	assert_int_equal(state_put(s, STATE_VM, "db.2", "{\"b\":22}", 8), 0);
	char *t = read_at(*st, "leases/vm-db.2.json");
	assert_string_equal(t, "{\"b\":22}");
	free(t);
	assert_int_equal(count_entries(*st, "leases", "."), 0); /* no temp file left */

	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 3);
	assert_int_equal(seen.n_rejected, 0);
	int i = find_seen(&seen, STATE_VM, "web-1");
	assert_true(i >= 0);
	assert_string_equal(seen.text[i], "{\"a\":1}");
	assert_int_equal(seen.len[i], 7);
	i = find_seen(&seen, STATE_SESSION, "web-1");
	assert_true(i >= 0);
	assert_string_equal(seen.text[i], "{\"s\":2}");
	i = find_seen(&seen, STATE_VM, "db.2");
	assert_true(i >= 0);
	assert_string_equal(seen.text[i], "{\"b\":22}");
	seen_free(&seen);

	/* A delete touches that lease only. */
	assert_int_equal(state_delete(s, STATE_VM, "web-1"), 0);
	assert_false(exists_at(*st, "leases/vm-web-1.json"));
	assert_true(exists_at(*st, "leases/session-web-1.json"));
	assert_int_equal(state_delete(s, STATE_VM, "web-1"), -ENOENT);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 2);
	seen_free(&seen);
	state_close(s);
}

static void test_durability_order(void **st)
{
	struct state *s = open_store(*st, NULL, 0);
	trace[0] = '\0';
	tracing = true;
	assert_int_equal(state_put(s, STATE_VM, "a", "{}", 2), 0);
	tracing = false;
	/* The data is on disk before the name points at it, and the name
	 * before the put returns. */
	assert_string_equal(trace, "fsync .vm-a.json.tmp;rename .vm-a.json.tmp vm-a.json;fsync leases;");

	trace[0] = '\0';
	tracing = true;
	assert_int_equal(state_delete(s, STATE_VM, "a"), 0);
	tracing = false;
	assert_string_equal(trace, "unlink vm-a.json;fsync leases;");

	/* A put that cannot write leaves the old text and no temp file. */
	assert_int_equal(state_put(s, STATE_VM, "b", "old", 3), 0);
	char blocker[512];
	snprintf(blocker, sizeof(blocker), "%s/leases/.vm-b.json.tmp", (char *)*st);
	assert_int_equal(mkdir(blocker, 0700), 0);
	assert_true(state_put(s, STATE_VM, "b", "new", 3) < 0);
	char *t = read_at(*st, "leases/vm-b.json");
	assert_string_equal(t, "old");
	free(t);
	assert_int_equal(rmdir(blocker), 0);
	state_close(s);
}

static void test_bad_names(void **st)
{
	struct state *s = open_store(*st, NULL, 0);
	char long_name[70];
	memset(long_name, 'a', 65);
	long_name[65] = '\0';
	const char *bad[] = { "", ".", "..", "a/b", "../x", "sp ace", long_name, "x\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(state_put(s, STATE_VM, bad[i], "{}", 2), -EINVAL);
	assert_int_equal(state_put(s, (enum state_kind)7, "ok", "{}", 2), -EINVAL);
	long_name[64] = '\0';
	assert_int_equal(state_put(s, STATE_VM, long_name, "{}", 2), 0);
	assert_int_equal(count_entries(*st, "leases", ""), 1);
	state_close(s);
}

/* What the store accepts, it gives back: the limit holds both ways. */
static void test_size_limits(void **st)
{
	struct state *s = open_store(*st, NULL, 0);
	char *big = malloc(STATE_LEASE_MAX + 2);
	assert_non_null(big);
	memset(big, ' ', STATE_LEASE_MAX + 1);
	big[0] = '{';
	big[STATE_LEASE_MAX - 1] = '}';
	big[STATE_LEASE_MAX + 1] = '\0';
	assert_int_equal(state_put(s, STATE_VM, "over", big, STATE_LEASE_MAX + 1), -EFBIG);
	assert_false(exists_at(*st, "leases/vm-over.json"));
	assert_int_equal(count_entries(*st, "leases", ""), 0);
	assert_int_equal(state_put(s, STATE_VM, "exact", big, STATE_LEASE_MAX), 0);
	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.n_rejected, 0);
	assert_string_equal(seen.name[0], "exact");
	assert_int_equal(seen.len[0], STATE_LEASE_MAX);
	seen_free(&seen);

	/* One byte more, written behind the store's back: moved aside, kept. */
	char p[512];
	snprintf(p, sizeof(p), "%s/leases/vm-exact.json", (char *)*st);
	FILE *f = fopen(p, "a");
	assert_non_null(f);
	fputc(' ', f);
	fclose(f);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(seen.n_rejected, 1);
	assert_non_null(strstr(seen.why[0], "larger than"));
	struct stat sb;
	assert_int_equal(stat(seen.moved_to[0], &sb), 0);
	assert_int_equal(sb.st_size, STATE_LEASE_MAX + 1);
	free(big);
	state_close(s);
}

static void test_rejected_files_kept(void **st)
{
	const char *dir = *st;
	struct state *s = open_store(dir, NULL, 0);
	char p[512], q[512];
	assert_int_equal(state_put(s, STATE_VM, "good", "{\"g\":1}", 7), 0);
	write_at(dir, "leases/junk", "what is this");
	write_at(dir, "leases/.vm-torn.json.tmp", "{\"half");
	write_at(dir, "target", "not ours");
	snprintf(p, sizeof(p), "%s/leases/vm-link.json", dir);
	snprintf(q, sizeof(q), "%s/target", dir);
	assert_int_equal(symlink(q, p), 0);
	snprintf(p, sizeof(p), "%s/leases/vm-fifo.json", dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	snprintf(p, sizeof(p), "%s/leases/session-dir.json", dir);
	assert_int_equal(mkdir(p, 0700), 0);

	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.name[0], "good");
	assert_int_equal(seen.n_rejected, 5);
	for (int i = 0; i < seen.n_rejected; i++) {
		/* Each is named, with where it went, and is still there. */
		assert_non_null(strstr(seen.rejected_path[i], "/leases/"));
		assert_non_null(strstr(seen.moved_to[i], "/rejected/"));
		struct stat sb;
		assert_int_equal(lstat(seen.moved_to[i], &sb), 0);
		if (strstr(seen.rejected_path[i], "junk"))
			assert_non_null(strstr(seen.why[i], "not a lease file name"));
		else if (strstr(seen.rejected_path[i], "torn"))
			assert_non_null(strstr(seen.why[i], "unfinished write"));
		else
			assert_non_null(strstr(seen.why[i], "not a regular file"));
		if (strstr(seen.rejected_path[i], "link"))
			assert_true(S_ISLNK(sb.st_mode)); /* the link moved, not what it names */
	}
	char *t = read_at(dir, "target");
	assert_string_equal(t, "not ours");
	free(t);
	seen_free(&seen);
	assert_int_equal(count_entries(dir, "leases", ""), 1);
	assert_int_equal(count_entries(dir, "rejected", ""), 5);

	/* The callback refuses a lease: moved aside with the reason. The same
	 * name refused twice in one second keeps both copies. */
	memset(&seen, 0, sizeof(seen));
	seen.fail_with = -EINVAL;
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n_rejected, 1);
	assert_non_null(strstr(seen.why[0], strerror(EINVAL)));
	seen_free(&seen);
	assert_int_equal(state_put(s, STATE_VM, "good", "{\"g\":2}", 7), 0);
	memset(&seen, 0, sizeof(seen));
	seen.fail_with = -EINVAL;
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	seen_free(&seen);
	assert_int_equal(count_entries(dir, "rejected", "vm-good.json."), 2);
	assert_int_equal(count_entries(dir, "leases", ""), 0);

	/* state_reject moves one saved lease aside. */
	assert_int_equal(state_put(s, STATE_SESSION, "s", "{}", 2), 0);
	char moved[600];
	assert_int_equal(state_reject(s, STATE_SESSION, "s", "cannot be restored", moved, sizeof(moved)), 0);
	assert_non_null(strstr(moved, "/rejected/session-s.json."));
	assert_int_equal(access(moved, F_OK), 0);
	assert_false(exists_at(dir, "leases/session-s.json"));
	assert_int_equal(state_reject(s, STATE_SESSION, "s", "again", moved, sizeof(moved)), -ENOENT);
	state_close(s);
}

static void test_migration(void **st)
{
	const char *dir = *st;
	write_at(dir, "state.json",
		 "{\"format\":1,\"vms\":["
		 "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"gp\":1,\"vcpus\":[{\"cpus\":\"0\"}]}},\"uid\":0,\"origin\":\"vpmuctl\"},"
		 "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"b\",\"gp\":2,\"vcpus\":[{\"cpus\":\"1\"}]}},\"uid\":7,\"origin\":\"libvirt\",\"owner_start\":5},"
		 "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"../evil\"}},\"uid\":0}],"
		 "\"sessions\":[{\"request\":{\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"cycles\"],\"cpus\":\"0\"}},"
		 "\"uid\":0,\"origin\":\"dbus\",\"follows_connection\":true,\"owner_start\":9}]}\n");
	char note[1024];
	struct state *s = open_store(dir, note, sizeof(note));
	assert_non_null(strstr(note, "migrated 3 leases"));
	assert_non_null(strstr(note, "1 unusable part"));
	assert_false(exists_at(dir, "state.json"));
	/* The old document is kept, renamed. */
	assert_int_equal(count_entries(dir, ".", "state.json.migrated-"), 1);

	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 3);
	/* the entry not migrated is named, with the file that keeps it */
	assert_int_equal(seen.n_rejected, 1);
	assert_non_null(strstr(seen.rejected_path[0], "/state.json, vms[2]"));
	assert_non_null(strstr(seen.moved_to[0], "/state.json.migrated-"));
	assert_non_null(strstr(seen.why[0], "not a lease name"));
	int i = find_seen(&seen, STATE_VM, "a");
	assert_true(i >= 0);
	assert_non_null(strstr(seen.text[i], "\"seq\":1"));
	assert_non_null(strstr(seen.text[i], "\"origin\":\"vpmuctl\""));
	i = find_seen(&seen, STATE_VM, "b");
	assert_true(i >= 0);
	assert_non_null(strstr(seen.text[i], "\"seq\":2"));
	assert_non_null(strstr(seen.text[i], "\"owner_start\":5"));
	i = find_seen(&seen, STATE_SESSION, "s");
	assert_true(i >= 0);
	assert_non_null(strstr(seen.text[i], "\"seq\":3"));
	assert_non_null(strstr(seen.text[i], "\"follows_connection\":true"));
	assert_non_null(strstr(seen.text[i], "\"events\":[\"cycles\"]"));
	seen_free(&seen);
	/* named once */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n_rejected, 0);
	seen_free(&seen);
	state_close(s);

	/* Once only: a second start finds nothing to migrate. */
	s = open_store(dir, note, sizeof(note));
	assert_string_equal(note, "");
	state_close(s);
}

static void test_migration_of_unusable_state(void **st)
{
	const char *bad[] = { "{\"format\": 1, \"vms\": [", "[1,2]", "{\"vms\": []}", "{\"format\": 1} trailing",
			      "{\"format\": 99}" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_at(*st, "state.json", bad[i]);
		char note[1024];
		struct state *s = open_store(*st, note, sizeof(note));
		/* Moved aside whole, never deleted, and the daemon starts empty. */
		assert_non_null(strstr(note, "could not be migrated"));
		assert_non_null(strstr(note, "/rejected/state.json."));
		assert_false(exists_at(*st, "state.json"));
		assert_int_equal(count_entries(*st, "rejected", "state.json."), (int)i + 1);
		assert_int_equal(count_entries(*st, "leases", ""), 0);
		state_close(s);
	}
}

/* Issue 14: nothing in the state directory is waited on, and a file that is
 * not regular is named with its type. */
static void test_fifos_never_block(void **st)
{
	const char *dir = *st;
	char p[512];
	snprintf(p, sizeof(p), "%s/state.json", dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	char note[1024];
	struct state *s = open_store(dir, note, sizeof(note)); /* returns: a blocking open would hang here */
	assert_non_null(strstr(note, "could not be migrated (not a regular file (a FIFO))"));
	assert_non_null(strstr(note, "/rejected/state.json."));
	assert_false(exists_at(dir, "state.json"));
	snprintf(p, sizeof(p), "%s/leases/vm-pipe.json", dir);
	assert_int_equal(mkfifo(p, 0600), 0);
	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(seen.n_rejected, 1);
	assert_non_null(strstr(seen.why[0], "not a regular file (a FIFO)"));
	assert_non_null(strstr(seen.moved_to[0], "/rejected/vm-pipe.json."));
	seen_free(&seen);
	state_close(s);

	/* the lock file: refused by name, not opened as a FIFO */
	snprintf(p, sizeof(p), "%s/" STATE_LOCK, dir);
	assert_int_equal(unlink(p), 0);
	assert_int_equal(mkfifo(p, 0600), 0);
	char why[1024];
	s = NULL;
	assert_int_equal(state_open(dir, &s, why, sizeof(why)), -EBADFD);
	assert_null(s);
	assert_non_null(strstr(why, "/lock: not a regular file (a FIFO)"));
}

/* Issue 14: a file name is outside input; it reaches the log escaped. */
static void test_rejected_names_escaped(void **st)
{
	const char *dir = *st;
	struct state *s = open_store(dir, NULL, 0);
	write_at(dir, "leases/evil\x1b[31m\xff.json", "{}");
	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n_rejected, 1);
	assert_non_null(strstr(seen.rejected_path[0], "evil\\x1B[31m\\xFF.json"));
	assert_non_null(strstr(seen.moved_to[0], "evil\\x1B[31m\\xFF.json."));
	assert_int_equal(count_entries(dir, "rejected", "evil\x1b"), 1);
	seen_free(&seen);
	state_close(s);
}

/* Issue 14: every part of a format 1 document that is not migrated is kept
 * (in the renamed old file) and named once at the first load. */
static void test_migration_keeps_every_part(void **st)
{
	const char *dir = *st;
	write_at(dir, "state.json",
		 "{\"format\":1,\"vms\":{\"request\":{}},"
		 "\"sessions\":[{\"request\":{\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"cycles\"],\"cpus\":\"0\"}},\"uid\":0},"
		 "{\"request\":{\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"branches\"],\"cpus\":\"1\"}},\"uid\":0},"
		 "7,{\"request\":{\"method\":\"session.start\",\"params\":{\"name\":\"t\"}},\"uid\":0,\"seq\":4}],"
		 "\"extra\":[1]}\n");
	char note[1024];
	struct state *s = open_store(dir, note, sizeof(note));
	assert_non_null(strstr(note, "migrated 1 lease "));
	assert_non_null(strstr(note, "5 unusable parts"));
	struct seen seen = {0};
	assert_int_equal(state_load(s, on_lease, on_rejected, &seen), 0);
	assert_int_equal(seen.n, 1);
	assert_non_null(strstr(seen.text[0], "\"cycles\"")); /* the first of two "s" */
	assert_int_equal(seen.n_rejected, 5);
	const char *want[][2] = { { "\"extra\"", "not a member" }, { ", vms", "not a list of leases (object)" },
				  { "sessions[1]", "a second session lease named s" },
				  { "sessions[2]", "not a lease" }, { "sessions[3]", "already has a \"seq\"" } };
	for (int i = 0; i < 5; i++) {
		assert_non_null(strstr(seen.rejected_path[i], want[i][0]));
		assert_non_null(strstr(seen.why[i], want[i][1]));
		assert_non_null(strstr(seen.moved_to[i], "/state.json.migrated-"));
		assert_int_equal(access(seen.moved_to[i], F_OK), 0);
	}
	seen_free(&seen);
	state_close(s);
}

struct legacy_seen {
	int entries, skips;
};

static int legacy_entry(enum state_kind kind, const char *name, const char *text, size_t len, void *ud)
{
	(void)kind;
	(void)name;
	(void)text;
	(void)len;
	((struct legacy_seen *)ud)->entries++;
	return 0;
}

static void legacy_skip(const char *what, const char *why, void *ud)
{
	(void)what;
	(void)why;
	((struct legacy_seen *)ud)->skips++;
}

static void test_legacy_parse_on_a_buffer(void **st)
{
	(void)st;
	struct legacy_seen ls = {0};
	char why[256];
	const char doc[] = "{\"format\":1,\"vms\":[{\"request\":{\"params\":{\"name\":\"a\"}}},{}]}";
	assert_int_equal(state_legacy_parse(doc, strlen(doc), legacy_entry, legacy_skip, &ls, why, sizeof(why)), 0);
	assert_int_equal(ls.entries, 1);
	assert_int_equal(ls.skips, 1);
	assert_int_equal(state_legacy_parse("{\"format\":2}", 12, legacy_entry, legacy_skip, &ls, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "\"format\": 1"));
	/* a NUL inside: not JSON, not read as the text before it */
	assert_int_equal(state_legacy_parse("{\"format\":1}\0{", 14, legacy_entry, legacy_skip, &ls, why, sizeof(why)),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty_dir, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_put_load_delete, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_second_open_refused, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_durability_order, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_bad_names, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_size_limits, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_rejected_files_kept, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_migration, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_migration_of_unusable_state, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_fifos_never_block, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_rejected_names_escaped, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_migration_keeps_every_part, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_legacy_parse_on_a_buffer, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
