/* SPDX-License-Identifier: MIT */
/*
 * log: messages to stderr with the syslog priority prefix "<N>" that journald
 * turns into the entry's priority, and key=value context after the text so
 * that a grep for vm=web finds every line about that VM.
 */
#ifndef VPMU_LOG_H
#define VPMU_LOG_H

#include <syslog.h>

void log_write(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_write(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_write(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

#endif
