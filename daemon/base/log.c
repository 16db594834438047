/* SPDX-License-Identifier: MIT */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void log_write(int priority, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line keeps lines whole when several processes share
	 * stderr (tests run daemons side by side). */
	fprintf(stderr, "<%d>%s\n", priority & LOG_PRIMASK, line);
	fflush(stderr);
}
