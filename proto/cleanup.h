/* SPDX-License-Identifier: MIT */
/*
 * cleanup: scope-bound ownership, in the style of systemd's alloc-util.h.
 * A variable declared with a cleanup attribute releases what it holds when
 * it goes out of scope, so early returns need no goto chains; TAKE_PTR and
 * TAKE_FD hand ownership on (the variable is left empty).
 *
 * Header-only and free of dependencies beyond libc, so that every layer
 * (the arbiter included) and every client may use it.
 */
#ifndef VPMU_CLEANUP_H
#define VPMU_CLEANUP_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Defines name##p(type *p), which calls func(*p) when *p is set. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)             \
	static inline void func##p(type *p)                 \
	{                                                   \
		if (*p)                                     \
			func(*p);                           \
	}

static inline void freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Frees a NULL-terminated array of strings and the array. */
static inline void strv_free(char **v)
{
	for (char **i = v; i && *i; i++)
		free(*i);
	free(v);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free)
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* printf into a malloc'd string of its own length, for text whose length
 * nothing bounds (paths under a configured root, messages quoting other
 * programs). NULL on failure: vasprintf leaves its pointer undefined then. */
static inline __attribute__((format(printf, 1, 0))) char *alloc_vprintf(const char *fmt, va_list ap)
{
	char *s;

	return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

static inline __attribute__((format(printf, 1, 2))) char *alloc_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = alloc_vprintf(fmt, ap);
	va_end(ap);
	return s;
}

/* Returns the pointer and leaves the variable NULL: ownership moves on. */
#define TAKE_PTR(ptr)                          \
	({                                     \
		__typeof__(ptr) *_pp_ = &(ptr); \
		__typeof__(ptr) _p_ = *_pp_;    \
		*_pp_ = NULL;                   \
		_p_;                            \
	})

/* Same for a file descriptor (left -1). */
#define TAKE_FD(fd)                \
	({                         \
		int *_pfd_ = &(fd); \
		int _f_ = *_pfd_;   \
		*_pfd_ = -1;        \
		_f_;                \
	})

#endif
