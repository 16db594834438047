/* SPDX-License-Identifier: MIT */
/*
 * fileio: reading a whole file of outside input, one way for every reader
 * (the lease store, the config file, PMU model files, sysfs and procfs).
 * The file is opened without blocking (a FIFO in its place must not hang
 * the daemon) and read to its end without trusting st_size (sysfs says
 * 4096, procfs 0), up to a bound the caller names.
 */
#ifndef VPMU_FILEIO_H
#define VPMU_FILEIO_H

#include <stddef.h>

enum fileio_flags {
	/* Refuse anything but a regular file (-EBADFD), symlinks included:
	 * for files vpmud owns (the state), or takes from an operator (the
	 * config, a model). */
	FILEIO_REGULAR = 1 << 0,
	FILEIO_NOFOLLOW = 1 << 1,
};

/*
 * Reads the file at dirfd/path (dirfd may be AT_FDCWD) into a new
 * NUL-terminated buffer of *len bytes (the caller frees *text). -EFBIG when
 * it holds more than max bytes, -EBADFD when FILEIO_REGULAR refuses it,
 * else -errno of open or read.
 */
int fileio_read_all(int dirfd, const char *path, size_t max, unsigned flags, char **text, size_t *len);

/* What a refusal of fileio_read_all means, for messages: "not a regular
 * file (a FIFO)", "larger than the N bytes allowed", or strerror. buf
 * holds at least 96 bytes. */
const char *fileio_strerror(int r, int dirfd, const char *path, size_t max, char *buf, size_t len);

#endif
