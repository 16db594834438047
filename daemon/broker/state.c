/* SPDX-License-Identifier: MIT */
#include "broker/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A state file larger than this is not ours (a few thousand leases fit). */
#define STATE_MAX_BYTES (16u << 20)

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

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int state_save(const char *dir, struct json_object *doc)
{
	char tmp[4096], final[4096];
	const char *text;
	int fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, STATE_FILE) >= (int)sizeof(tmp) ||
	    snprintf(final, sizeof(final), "%s/%s", dir, STATE_FILE) >= (int)sizeof(final))
		return -ENAMETOOLONG;

	json_object_object_add(doc, "format", json_object_new_int(STATE_FORMAT));
	text = json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	r = write_all(fd, text, strlen(text));
	if (r == 0)
		r = write_all(fd, "\n", 1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, final) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	/* Without this the rename itself may be lost on power failure. */
	return fsync_dir(dir);
}

int state_move_aside(const char *dir, const char *reason, char *moved_to, size_t moved_len)
{
	char from[4096], to[4096];

	snprintf(from, sizeof(from), "%s/%s", dir, STATE_FILE);
	snprintf(to, sizeof(to), "%s/%s.%s-%lld", dir, STATE_FILE, reason, (long long)time(NULL));
	if (rename(from, to) < 0)
		return -errno;
	if (moved_to)
		snprintf(moved_to, moved_len, "%s", to);
	return fsync_dir(dir);
}

int state_load(const char *dir, struct json_object **doc, char *moved_to, size_t moved_len,
	       char *why, size_t whylen)
{
	char path[4096];
	struct stat st;
	char *buf = NULL;
	const char *reason = NULL;
	struct json_object *root = NULL;
	int fd, r = 0;

	*doc = NULL;
	if (moved_to && moved_len)
		moved_to[0] = '\0';
	if (why && whylen)
		why[0] = '\0';
	snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (st.st_size > STATE_MAX_BYTES) {
		close(fd);
		snprintf(why, whylen, "state file is %lld bytes, more than the %u allowed",
			 (long long)st.st_size, STATE_MAX_BYTES);
		reason = "corrupt";
		goto aside;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';

	enum json_tokener_error jerr;
	struct json_tokener *tok = json_tokener_new();
	if (!tok) {
		free(buf);
		return -ENOMEM;
	}
	root = json_tokener_parse_ex(tok, buf, (int)got);
	jerr = json_tokener_get_error(tok);
	if (root && jerr == json_tokener_success && (size_t)json_tokener_get_parse_end(tok) < got) {
		/* Trailing bytes other than whitespace mean a torn or mixed file. */
		for (size_t i = json_tokener_get_parse_end(tok); i < got; i++)
			if (buf[i] != '\n' && buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r') {
				jerr = json_tokener_error_parse_unexpected;
				break;
			}
	}
	json_tokener_free(tok);
	free(buf);

	if (!root || jerr != json_tokener_success) {
		snprintf(why, whylen, "state file does not parse as JSON (%s)",
			 jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr));
		reason = "corrupt";
		goto aside;
	}
	if (!json_object_is_type(root, json_type_object)) {
		snprintf(why, whylen, "state file is not a JSON object");
		reason = "corrupt";
		goto aside;
	}
	struct json_object *fmt;
	if (!json_object_object_get_ex(root, "format", &fmt) || !json_object_is_type(fmt, json_type_int)) {
		snprintf(why, whylen, "state file has no integer \"format\" field");
		reason = "corrupt";
		goto aside;
	}
	int64_t f = json_object_get_int64(fmt);
	if (f > STATE_FORMAT) {
		snprintf(why, whylen, "state file has format %lld, newer than the %d this vpmud reads",
			 (long long)f, STATE_FORMAT);
		reason = "newer";
		goto aside;
	}
	if (f < 1) {
		snprintf(why, whylen, "state file has invalid format %lld", (long long)f);
		reason = "corrupt";
		goto aside;
	}
	*doc = root;
	return 0;

aside:
	json_object_put(root);
	r = state_move_aside(dir, reason, moved_to, moved_len);
	return r;
}
