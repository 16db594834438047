/* SPDX-License-Identifier: MIT */
#include "proto/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/cleanup.h"

int fileio_read_all(int dirfd, const char *path, size_t max, unsigned flags, char **text, size_t *len)
{
	/* O_NOCTTY: a tty named here must not become vpmud's terminal. */
	int oflags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | ((flags & FILEIO_NOFOLLOW) ? O_NOFOLLOW : 0);
	struct stat st;
	if (flags & FILEIO_REGULAR) {
		/* Looked at before it is opened: opening a device or a FIFO
		 * has effects of its own (a tape rewinds, a writer wakes). */
		_cleanup_close_ int probe = openat(dirfd, path, O_PATH | O_CLOEXEC | (oflags & O_NOFOLLOW));
		if (probe < 0)
			return errno == ELOOP && (flags & FILEIO_NOFOLLOW) ? -EBADFD : -errno;
		if (fstat(probe, &st) < 0)
			return -errno;
		if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode))
			return -EBADFD;
	}
	_cleanup_close_ int fd = openat(dirfd, path, oflags);
	if (fd < 0)
		return errno == ELOOP && (flags & FILEIO_NOFOLLOW) ? -EBADFD : -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((flags & FILEIO_REGULAR) && !S_ISREG(st.st_mode))
		return -EBADFD;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	/* st_size is a hint (sysfs and procfs do not know theirs); the read
	 * goes to the end, one byte past max to tell "too large". */
	size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size <= max ? (size_t)st.st_size + 1
											 : 4096;
	if (cap > max + 1)
		cap = max + 1;
	_cleanup_free_ char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	size_t got = 0;
	for (;;) {
		if (got == cap) {
			if (cap > max)
				return -EFBIG;
			size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			char *n = realloc(buf, ncap + 1);
			if (!n)
				return -ENOMEM;
			buf = n;
			cap = ncap;
		}
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got > max)
		return -EFBIG;
	buf[got] = '\0';
	*text = TAKE_PTR(buf);
	*len = got;
	return 0;
}

static const char *type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFIFO: return "a FIFO";
	case S_IFDIR: return "a directory";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFSOCK: return "a socket";
	case S_IFLNK: return "a symbolic link";
	}
	return "not a regular file";
}

const char *fileio_strerror(int r, int dirfd, const char *path, size_t max, char *buf, size_t len)
{
	struct stat st;
	if (r == -EBADFD || r == -EISDIR) {
		/* What the path leads to; a symbolic link only where links
		 * are not followed (or lead nowhere). */
		if ((fstatat(dirfd, path, &st, 0) == 0 && !S_ISREG(st.st_mode)) ||
		    fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
			snprintf(buf, len, "not a regular file (%s)", type_name(st.st_mode));
		else
			snprintf(buf, len, "not a regular file");
	} else if (r == -EFBIG) {
		snprintf(buf, len, "larger than the %zu bytes allowed", max);
	} else {
		snprintf(buf, len, "%s", strerror(-r));
	}
	return buf;
}
