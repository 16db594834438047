/* SPDX-License-Identifier: MIT */
#include "broker/state.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/cleanup.h"
#include "proto/fileio.h"
#include "proto/proto.h"
#include "proto/textesc.h"

#define STATE_LEASES "leases"
#define STATE_REJECTED "rejected"
#define STATE_OLD_FILE "state.json"
/* The single document of format 1 held every lease: a vpmud that wrote
 * one could only reload 16 MiB of it, but it acknowledged more, so the
 * migration reads what it finds up to a bound no real state reaches. */
#define STATE_OLD_MAX (1u << 30)

struct state {
	char *dir;
	int dir_fd;
	int leases_fd;
	int rejected_fd;   /* -1 until something is moved aside */
	int lock_fd;       /* holds STATE_LOCK: one daemon per state directory */
	/* The parts of a format 1 state.json the migration could not use:
	 * reported (once) by the next state_load, with skipped_in, the
	 * file that keeps their bytes. */
	struct state_skipped { char *what, *why; } *skipped;
	size_t n_skipped, cap_skipped;
	char *skipped_in;
};

static const char *const kind_prefix[] = { [STATE_VM] = "vm-", [STATE_SESSION] = "session-" };
#define LEASE_SUFFIX ".json"

/* ------------------------------------------------------------ helpers */

/* The protocol's rule: a lease file is named after its lease. */
static bool name_valid(const char *name)
{
	return name && proto_name_check("name", name, NULL) == 0;
}

/* "vm-web.json": file names are bounded by the name rule above. */
static void lease_file(enum state_kind kind, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s" LEASE_SUFFIX, kind_prefix[kind], name);
}

static void temp_file(const char *file, char *buf, size_t len)
{
	snprintf(buf, len, ".%s.tmp", file);
}

/* The reverse of lease_file: false for anything state_put does not write. */
static bool parse_lease_file(const char *file, enum state_kind *kind, char *name, size_t len)
{
	size_t n = strlen(file), sl = strlen(LEASE_SUFFIX);
	for (int k = STATE_VM; k <= STATE_SESSION; k++) {
		size_t pl = strlen(kind_prefix[k]);
		if (n <= pl + sl || strncmp(file, kind_prefix[k], pl) || strcmp(file + n - sl, LEASE_SUFFIX))
			continue;
		size_t nl = n - pl - sl;
		if (nl >= len)
			return false;
		memcpy(name, file + pl, nl);
		name[nl] = '\0';
		if (!name_valid(name))
			return false;
		*kind = (enum state_kind)k;
		return true;
	}
	return false;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fsync_fd(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

/* Opens (creating it, mode 0700) a directory below at; a new directory's
 * own entry is made durable before anything goes into it. */
static int open_subdir(int at, const char *name)
{
	bool made = false;
	if (mkdirat(at, name, 0700) == 0)
		made = true;
	else if (errno != EEXIST)
		return -errno;
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (made && fsync(at) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* A lease file: regular, not followed through a link, at most max bytes;
 * -EFBIG above, -EBADFD for anything else. */
static int read_file(int at, const char *name, size_t max, char **text, size_t *len)
{
	return fileio_read_all(at, name, max, FILEIO_REGULAR | FILEIO_NOFOLLOW, text, len);
}

/* ------------------------------------------------------------ moving aside */

static int rejected_dir(struct state *s)
{
	if (s->rejected_fd < 0) {
		int fd = open_subdir(s->dir_fd, STATE_REJECTED);
		if (fd < 0)
			return fd;
		s->rejected_fd = fd;
	}
	return s->rejected_fd;
}

/*
 * Moves at/file into rejected/ as FILE.<unix time>[-N], never replacing
 * anything already there, and makes both directories durable.
 */
static int move_aside(struct state *s, int at, const char *file, char *moved_to, size_t moved_len)
{
	if (moved_to && moved_len)
		moved_to[0] = '\0';
	int rfd = rejected_dir(s);
	if (rfd < 0)
		return rfd;
	char target[512];
	long long now = (long long)time(NULL);
	for (unsigned n = 0;; n++) {
		if (n)
			snprintf(target, sizeof(target), "%s.%lld-%u", file, now, n);
		else
			snprintf(target, sizeof(target), "%s.%lld", file, now);
		if (renameat2(at, file, rfd, target, RENAME_NOREPLACE) == 0)
			break;
		if (errno == EEXIST && n < 1000)
			continue;
		if (errno != EINVAL)
			return -errno;
		/* A file system without RENAME_NOREPLACE: check, then rename. */
		if (faccessat(rfd, target, F_OK, AT_SYMLINK_NOFOLLOW) == 0 && n < 1000)
			continue;
		if (renameat(at, file, rfd, target) < 0)
			return -errno;
		break;
	}
	if (moved_to)
		snprintf(moved_to, moved_len, "%s/" STATE_REJECTED "/%s", s->dir, target);
	int r = fsync_fd(at);
	int r2 = fsync_fd(rfd);
	return r < 0 ? r : r2;
}

/* ------------------------------------------------------------ migration */

struct legacy_walk {
	state_legacy_entry_fn fn;
	state_legacy_skip_fn skip;
	void *userdata;
	int64_t seq;
	char **names[2];          /* per kind: the names taken, to refuse a second */
	size_t n_names[2], cap_names[2];
};

static void legacy_walk_fini(struct legacy_walk *w)
{
	for (int k = 0; k < 2; k++) {
		for (size_t i = 0; i < w->n_names[k]; i++)
			free(w->names[k][i]);
		free(w->names[k]);
	}
}

static void skipf(struct legacy_walk *w, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void skipf(struct legacy_walk *w, const char *what, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *why = alloc_vprintf(fmt, ap);
	va_end(ap);
	if (w->skip)
		w->skip(what, why ? why : "unusable", w->userdata);
}

static int legacy_name_taken(struct legacy_walk *w, enum state_kind kind, const char *name)
{
	for (size_t i = 0; i < w->n_names[kind]; i++)
		if (!strcmp(w->names[kind][i], name))
			return 1;
	if (w->n_names[kind] == w->cap_names[kind]) {
		size_t ncap = w->cap_names[kind] ? w->cap_names[kind] * 2 : 32;
		char **nv = realloc(w->names[kind], ncap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		w->names[kind] = nv;
		w->cap_names[kind] = ncap;
	}
	if (!(w->names[kind][w->n_names[kind]] = strdup(name)))
		return -ENOMEM;
	w->n_names[kind]++;
	return 0;
}

static int legacy_array(struct legacy_walk *w, struct json_object *doc, const char *key, enum state_kind kind)
{
	struct json_object *arr;
	if (!json_object_object_get_ex(doc, key, &arr))
		return 0;
	if (!json_object_is_type(arr, json_type_array)) {
		skipf(w, key, "not a list of leases (%s)", json_type_to_name(json_object_get_type(arr)));
		return 0;
	}
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *e = json_object_array_get_idx(arr, i), *rq, *params, *name, *seq;
		char what[64];
		snprintf(what, sizeof(what), "%s[%zu]", key, i);
		if (!json_object_is_type(e, json_type_object) || !json_object_object_get_ex(e, "request", &rq) ||
		    !json_object_object_get_ex(rq, "params", &params) ||
		    !json_object_object_get_ex(params, "name", &name) || !json_object_is_type(name, json_type_string)) {
			skipf(w, what, "not a lease (an object with request.params.name)");
			continue;
		}
		const char *n = json_object_get_string(name);
		if (!name_valid(n) || strlen(n) != (size_t)json_object_get_string_len(name)) {
			char shown[300];
			skipf(w, what, "its name \"%s\" is not a lease name (1..64 of A-Z a-z 0-9 . _ -)",
			      textesc_put(shown, sizeof(shown), n));
			continue;
		}
		if (json_object_object_get_ex(e, "seq", &seq)) {
			/* format 1 had none: one here would be silently replaced */
			skipf(w, what, "it already has a \"seq\", which format 1 never wrote");
			continue;
		}
		int r = legacy_name_taken(w, kind, n);
		if (r < 0)
			return r;
		if (r) {
			skipf(w, what, "a second %s lease named %s (the first one is migrated)",
			      kind == STATE_VM ? "vm" : "session", n);
			continue;
		}
		if (json_object_object_add(e, "seq", json_object_new_int64(++w->seq)) < 0)
			return -ENOMEM;
		size_t len;
		const char *text = json_object_to_json_string_length(
			e, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
		if (!text)
			return -ENOMEM;
		r = w->fn(kind, n, text, len, w->userdata);
		if (r == -EFBIG)
			skipf(w, what, "larger than the %u bytes a lease may have", STATE_LEASE_MAX);
		else if (r < 0)
			return r;
	}
	return 0;
}

int state_legacy_parse(const char *text, size_t len, state_legacy_entry_fn fn, state_legacy_skip_fn skip,
		       void *userdata, char *why, size_t whylen)
{
	if (len > INT32_MAX) {
		snprintf(why, whylen, "it is too large to parse");
		return -EINVAL;
	}
	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	struct json_object *doc = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	if (doc && jerr == json_tokener_success)
		for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
			if (text[i] != '\n' && text[i] != ' ' && text[i] != '\t' && text[i] != '\r') {
				jerr = json_tokener_error_parse_unexpected;
				break;
			}
	json_tokener_free(tok);
	struct json_object *fmt;
	int r = -EINVAL;
	if (!doc || jerr != json_tokener_success)
		snprintf(why, whylen, "it does not parse as JSON");
	else if (!json_object_is_type(doc, json_type_object))
		snprintf(why, whylen, "it is not a JSON object");
	else if (!json_object_object_get_ex(doc, "format", &fmt) || !json_object_is_type(fmt, json_type_int) ||
		 json_object_get_int64(fmt) != 1)
		snprintf(why, whylen, "it has no \"format\": 1");
	else
		r = 0;
	if (r < 0) {
		json_object_put(doc);
		return r;
	}
	struct legacy_walk w = { .fn = fn, .skip = skip, .userdata = userdata };
	json_object_object_foreach(doc, key, val) {
		(void)val;
		if (strcmp(key, "format") && strcmp(key, "vms") && strcmp(key, "sessions")) {
			char k[100], what[128];
			snprintf(what, sizeof(what), "\"%s\"", textesc_put(k, sizeof(k), key));
			skipf(&w, what, "not a member of format 1");
		}
	}
	/* the old restore order: VMs first, then sessions */
	r = legacy_array(&w, doc, "vms", STATE_VM);
	if (r == 0)
		r = legacy_array(&w, doc, "sessions", STATE_SESSION);
	legacy_walk_fini(&w);
	json_object_put(doc);
	return r;
}

/* What the migration could not use, named at the next state_load. */
static int note_skipped(struct state *s, const char *what, const char *why)
{
	if (s->n_skipped == s->cap_skipped) {
		size_t ncap = s->cap_skipped ? s->cap_skipped * 2 : 8;
		struct state_skipped *n = realloc(s->skipped, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->skipped = n;
		s->cap_skipped = ncap;
	}
	struct state_skipped *k = &s->skipped[s->n_skipped];
	k->what = alloc_printf("%s/" STATE_OLD_FILE ", %s", s->dir, what);
	k->why = strdup(why);
	if (!k->what || !k->why) {
		free(k->what);
		free(k->why);
		return -ENOMEM;
	}
	s->n_skipped++;
	return 0;
}

struct migration {
	struct state *s;
	unsigned moved;
	int err;                  /* a skip that could not be noted */
};

static int migrate_entry(enum state_kind kind, const char *name, const char *text, size_t len, void *userdata)
{
	struct migration *m = userdata;
	char file[96], what[128];
	lease_file(kind, name, file, sizeof(file));
	/* A lease file of that name (left by a newer vpmud before a downgrade,
	 * say) is newer than the legacy file: it is not written over. */
	if (name_valid(name) && faccessat(m->s->leases_fd, file, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		snprintf(what, sizeof(what), "%s %s", kind == STATE_VM ? "vm" : "session", name);
		if (note_skipped(m->s, what, "leases/ has a file for it already, which is kept") < 0)
			m->err = -ENOMEM;
		return 0;
	}
	int r = state_put(m->s, kind, name, text, len);
	if (r == 0)
		m->moved++;
	return r;
}

static void migrate_skip(const char *what, const char *why, void *userdata)
{
	struct migration *m = userdata;
	if (note_skipped(m->s, what, why) < 0)
		m->err = -ENOMEM;
}

static int migrate(struct state *s, char *note, size_t notelen)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_file(s->dir_fd, STATE_OLD_FILE, STATE_OLD_MAX, &text, &len);
	if (r == -ENOENT)
		return 0;
	char bad[256] = "";
	if (r == -EBADFD || r == -EFBIG)
		fileio_strerror(r, s->dir_fd, STATE_OLD_FILE, STATE_OLD_MAX, bad, sizeof(bad));
	else if (r < 0)
		return r;
	struct migration m = { .s = s };
	if (!bad[0]) {
		r = state_legacy_parse(text, len, migrate_entry, migrate_skip, &m, bad, sizeof(bad));
		if (r < 0 && r != -EINVAL)
			return r;
		if (m.err < 0)
			return m.err;
	}
	if (bad[0]) {
		char moved[600];
		r = move_aside(s, s->dir_fd, STATE_OLD_FILE, moved, sizeof(moved));
		if (r < 0)
			return r;
		snprintf(note, notelen, "%s/%s could not be migrated (%s): moved aside to %s", s->dir,
			 STATE_OLD_FILE, bad, moved);
		return 0;
	}
	char kept[64];
	snprintf(kept, sizeof(kept), STATE_OLD_FILE ".migrated-%lld", (long long)time(NULL));
	/* never over an older migration's copy: each keeps bytes of its own */
	for (unsigned n = 1; faccessat(s->dir_fd, kept, F_OK, AT_SYMLINK_NOFOLLOW) == 0 && n < 1000; n++)
		snprintf(kept, sizeof(kept), STATE_OLD_FILE ".migrated-%lld-%u", (long long)time(NULL), n);
	if (renameat(s->dir_fd, STATE_OLD_FILE, s->dir_fd, kept) < 0)
		return -errno;
	if ((r = fsync_fd(s->dir_fd)) < 0)
		return r;
	free(s->skipped_in);
	if (!(s->skipped_in = alloc_printf("%s/%s", s->dir, kept)))
		return -ENOMEM;
	char skipped_text[160] = "";
	if (s->n_skipped)
		snprintf(skipped_text, sizeof(skipped_text),
			 " (%zu unusable part%s not migrated, each named at restore, kept in that file)", s->n_skipped,
			 s->n_skipped == 1 ? "" : "s");
	snprintf(note, notelen, "migrated %u lease%s from %s/%s into one file per lease%s; the old file is kept as %s/%s",
		 m.moved, m.moved == 1 ? "" : "s", s->dir, STATE_OLD_FILE, skipped_text, s->dir, kept);
	return 0;
}

/* ------------------------------------------------------------ the store */

int state_open(const char *dir, struct state **out, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	struct state *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->dir_fd = s->leases_fd = s->rejected_fd = s->lock_fd = -1;
	int r;
	if (!(s->dir = strdup(dir))) {
		r = -ENOMEM;
		goto fail;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(why, whylen, "cannot create %s: %s", dir, strerror(-r));
		goto fail;
	}
	s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		r = -errno;
		snprintf(why, whylen, "cannot open %s: %s", dir, strerror(-r));
		goto fail;
	}
	/* Before anything is read or moved: a second vpmud pointed at the same
	 * directory (another config, a mistaken restart) must not restore,
	 * reject or migrate the leases the first one serves. */
	s->lock_fd = openat(s->dir_fd, STATE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	struct stat st;
	if (s->lock_fd >= 0 && fstat(s->lock_fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		close(s->lock_fd);
		s->lock_fd = -1;
		errno = EBADFD;
	} else if (s->lock_fd < 0 && errno == ELOOP) {
		errno = EBADFD;
	}
	if (s->lock_fd < 0) {
		r = -errno;
		char buf[128];
		snprintf(why, whylen, "cannot open %s/" STATE_LOCK ": %s", dir,
			 fileio_strerror(r, s->dir_fd, STATE_LOCK, 0, buf, sizeof(buf)));
		goto fail;
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(why, whylen, "%s is in use by another vpmud (it holds %s/" STATE_LOCK "): %s", dir, dir,
			 strerror(-r));
		goto fail;
	}
	s->leases_fd = open_subdir(s->dir_fd, STATE_LEASES);
	if (s->leases_fd < 0) {
		r = s->leases_fd;
		snprintf(why, whylen, "cannot open %s/" STATE_LEASES ": %s", dir, strerror(-r));
		goto fail;
	}
	char note[1024] = "";
	r = migrate(s, note, sizeof(note));
	if (r < 0) {
		snprintf(why, whylen, "cannot migrate %s/" STATE_OLD_FILE " into lease files: %s", dir,
			 strerror(-r));
		goto fail;
	}
	if (why && whylen)
		snprintf(why, whylen, "%s", note);
	*out = s;
	return 0;
fail:
	state_close(s);
	return r;
}

struct state *state_close(struct state *s)
{
	if (!s)
		return NULL;
	if (s->rejected_fd >= 0)
		close(s->rejected_fd);
	if (s->leases_fd >= 0)
		close(s->leases_fd);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the lock */
	for (size_t i = 0; i < s->n_skipped; i++) {
		free(s->skipped[i].what);
		free(s->skipped[i].why);
	}
	free(s->skipped);
	free(s->skipped_in);
	free(s->dir);
	free(s);
	return NULL;
}

const char *state_dir(const struct state *s)
{
	return s->dir;
}

int state_put(struct state *s, enum state_kind kind, const char *name, const char *text, size_t len)
{
	if (len > STATE_LEASE_MAX)
		return -EFBIG;
	if ((kind != STATE_VM && kind != STATE_SESSION) || !name_valid(name))
		return -EINVAL;
	char file[96], tmp[112];
	lease_file(kind, name, file, sizeof(file));
	temp_file(file, tmp, sizeof(tmp));
	int fd = openat(s->leases_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	int r = write_all(fd, text, len);
	if (r == 0)
		r = fsync_fd(fd);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && renameat(s->leases_fd, tmp, s->leases_fd, file) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(s->leases_fd, tmp, 0);
		return r;
	}
	/* Without this the rename itself may be lost on power failure. */
	return fsync_fd(s->leases_fd);
}

int state_delete(struct state *s, enum state_kind kind, const char *name)
{
	if ((kind != STATE_VM && kind != STATE_SESSION) || !name_valid(name))
		return -EINVAL;
	char file[96];
	lease_file(kind, name, file, sizeof(file));
	if (unlinkat(s->leases_fd, file, 0) < 0)
		return -errno;
	return fsync_fd(s->leases_fd);
}

int state_reject(struct state *s, enum state_kind kind, const char *name, const char *why,
		 char *moved_to, size_t moved_len)
{
	(void)why; /* the caller logs it with where the file went */
	if ((kind != STATE_VM && kind != STATE_SESSION) || !name_valid(name))
		return -EINVAL;
	char file[96];
	lease_file(kind, name, file, sizeof(file));
	return move_aside(s, s->leases_fd, file, moved_to, moved_len);
}

static void reject_entry(struct state *s, const char *file, const char *why, state_rejected_fn fn_rejected,
			 void *userdata)
{
	char moved[600], path[600], full_why[400];
	/* anyone who can write the folder names its files: echoed escaped */
	_cleanup_free_ char *raw_path = alloc_printf("%s/" STATE_LEASES "/%s", s->dir, file);
	textesc_put(path, sizeof(path), raw_path ? raw_path : file);
	int r = move_aside(s, s->leases_fd, file, moved, sizeof(moved));
	if (moved[0]) {
		_cleanup_free_ char *raw = strdup(moved);
		if (raw)
			textesc_put(moved, sizeof(moved), raw);
	}
	if (r < 0 && !moved[0])
		snprintf(full_why, sizeof(full_why), "%s; it could not be moved aside (%s) and is ignored", why,
			 strerror(-r));
	else
		snprintf(full_why, sizeof(full_why), "%s", why);
	if (fn_rejected)
		fn_rejected(path, moved, full_why, userdata);
}

/* The folder's entries, read before any is moved aside. */
static int list_entries(int dir_fd, char ***names, size_t *n)
{
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	_cleanup_strv_free_ char **v = NULL;
	size_t k = 0, cap = 0;
	struct dirent *e;
	int r = 0;
	errno = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (k + 1 >= cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **nv = realloc(v, ncap * sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		if (!(v[k] = strdup(e->d_name))) {
			r = -ENOMEM;
			break;
		}
		v[++k] = NULL;
		errno = 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	if (r < 0)
		return r;
	*names = TAKE_PTR(v);
	*n = k;
	return 0;
}

int state_load(struct state *s, state_lease_fn fn, state_rejected_fn fn_rejected, void *userdata)
{
	_cleanup_strv_free_ char **files = NULL;
	size_t n = 0;
	for (size_t i = 0; i < s->n_skipped; i++) {
		if (fn_rejected)
			fn_rejected(s->skipped[i].what, s->skipped_in ? s->skipped_in : "", s->skipped[i].why, userdata);
		free(s->skipped[i].what);
		free(s->skipped[i].why);
	}
	s->n_skipped = 0; /* named once */
	int r = list_entries(s->leases_fd, &files, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const char *file = files[i];
		enum state_kind kind;
		char name[80], why[256];
		size_t fl = strlen(file);
		if (file[0] == '.' && fl > 4 && !strcmp(file + fl - 4, ".tmp")) {
			reject_entry(s, file, "an unfinished write (vpmud stopped before it was renamed into place; "
					      "never acknowledged)", fn_rejected, userdata);
			continue;
		}
		if (!parse_lease_file(file, &kind, name, sizeof(name))) {
			reject_entry(s, file, "not a lease file name (vm-NAME.json or session-NAME.json)", fn_rejected,
				     userdata);
			continue;
		}
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		r = read_file(s->leases_fd, file, STATE_LEASE_MAX, &text, &len);
		if (r == -ENOENT)
			continue;
		/* What the file holds may be moved aside; a read that failed
		 * for the machine's reasons (EIO, out of descriptors) says
		 * nothing of the lease: the restore stops instead, and the
		 * file stays where it is. */
		if (r < 0 && r != -EBADFD && r != -EFBIG && r != -EISDIR)
			return r;
		if (r < 0) {
			if (r == -EBADFD)
				fileio_strerror(r, s->leases_fd, file, STATE_LEASE_MAX, why, sizeof(why));
			else if (r == -EFBIG)
				snprintf(why, sizeof(why), "larger than the %u bytes a lease may have", STATE_LEASE_MAX);
			else
				snprintf(why, sizeof(why), "cannot be read: %s", strerror(-r));
			reject_entry(s, file, why, fn_rejected, userdata);
			continue;
		}
		r = fn(kind, name, text, len, userdata);
		if (r == -ENOMEM)
			return r; /* a restore that stops, not a lease moved aside */
		if (r < 0) {
			snprintf(why, sizeof(why), "%s", strerror(-r));
			reject_entry(s, file, why, fn_rejected, userdata);
		}
	}
	return 0;
}
