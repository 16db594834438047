/* SPDX-License-Identifier: MIT */
/*
 * pmu_model: built-in PMU models and the JSON model loader behind
 * pmu_model_load() (declared in pmu.h). The schema is docs/pmu-models.md.
 * Everything a model yields is simulated: source is PMU_SOURCE_BUILTIN or
 * PMU_SOURCE_FILE, never PMU_SOURCE_HOST.
 */
#ifndef VPMU_PMU_MODEL_H
#define VPMU_PMU_MODEL_H

#include <stddef.h>

#include "pmu/pmu.h"

/* Largest model file accepted; a model is a few KiB, anything bigger is a
 * mistake (or an attempt to make the daemon allocate). */
/* Models. name_or_path: a built-in model name, or a path to a JSON model
 * (anything containing '/' or ending in .json). err gets a message naming
 * the offending field on failure. */
int pmu_model_load(const char *name_or_path, struct pmu_desc *out, char *err, size_t errlen);
const char *const *pmu_model_builtin_names(void);
/* The built-in model the daemon falls back to when the host has no PMU. */
#define PMU_FALLBACK_MODEL "icelake-8360y"


#define PMU_MODEL_MAX_BYTES (1024 * 1024)

/* Parses a JSON model held in memory. label prefixes every message (the
 * loader passes the file's path), e.g.
 *   model.json: field "num_gp": must be an integer 1..32
 * On success out->source is PMU_SOURCE_FILE. */
int pmu_model_parse_json(const char *text, size_t len, const char *label,
			 struct pmu_desc *out, char *err, size_t errlen);

/* A built-in model by name; -ENOENT if there is none by that name. */
int pmu_model_builtin(const char *name, struct pmu_desc *out);

/* Fills d->cpus the way Linux numbers a multi-package SMT machine: the
 * first thread of every core first (package by package), then the second
 * threads, and so on, so cpu i and i + packages*cores are siblings. core
 * ids are unique across packages. -E2BIG beyond PMU_MAX_CPUS. */
int pmu_model_fill_topology(struct pmu_desc *d, unsigned packages,
			    unsigned cores_per_package, unsigned threads_per_core);

#endif
