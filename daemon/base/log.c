/* SPDX-License-Identifier: MIT */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/cleanup.h"

void log_write(int priority, const char *fmt, ...)
{
	/* allocated: a line may carry names, paths and messages of any length */
	_cleanup_free_ char *line = NULL;
	va_list ap;

	va_start(ap, fmt);
	line = alloc_vprintf(fmt, ap);
	va_end(ap);
	/* One write per line keeps lines whole when several processes share
	 * stderr (tests run daemons side by side). */
	fprintf(stderr, "<%d>%s\n", priority & LOG_PRIMASK, line ? line : "out of memory formatting a log line");
	fflush(stderr);
}
