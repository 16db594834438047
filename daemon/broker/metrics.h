/* SPDX-License-Identifier: MIT */
/*
 * metrics: the broker's plan and counters as the text node_exporter's
 * textfile collector and Prometheus read (docs/metrics.md): the Prometheus
 * text format 0.0.4, with OpenMetrics' "# UNIT" lines and a closing
 * "# EOF", which 0.0.4 readers take as comments. The renderer only reads
 * the broker's views, counters and session readings into memory; writing
 * the file is vpmud's, answering `metrics` the doors'.
 */
#ifndef VPMU_METRICS_H
#define VPMU_METRICS_H

#include <stddef.h>

#include "broker/broker.h"

/*
 * Renders the metrics as w sees them (w NULL: everything, as the file
 * holds them): a session w may not see whole keeps its name and class and
 * loses its events and readings. On success *text (NUL-terminated, *len
 * bytes) is the caller's to free. -ENOMEM.
 */
int metrics_render(struct broker *b, const struct broker_viewer *w, char **text, size_t *len);

/* A label value escaped as the text format wants (backslash, double quote
 * and newline), newly allocated; NULL when out of memory. */
char *metrics_escape_label(const char *value);

#endif
