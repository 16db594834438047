// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: an event spec as session.start carries it (any user in
 * group vpmu may send one), through perf_event_parse with the Ice Lake
 * fixture's sysfs (tests/fixtures/perf-sysfs/icelake: sysfs names, the cpu
 * PMU type), then what a session does with a parsed event: the
 * perf_event_attr, the kernel PMU it goes to and the counters a model PMU
 * allows it.
 */
#include <errno.h>
#include <libgen.h>
#include <linux/perf_event.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf/perf_event.h"
#include "pmu/pmu.h"
#include "pmu/pmu_model.h"

/* An invariant that does not hold: says which, then crashes for libFuzzer. */
#define VIOLATED_IF(cond)                                                   \
	do {                                                                \
		if (cond) {                                                 \
			fprintf(stderr, "invariant violated: %s\n", #cond); \
			abort();                                            \
		}                                                           \
	} while (0)

static struct pmu_desc model;
static struct perf_event_opts opts;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char root[4096];
	char here[4096];

	(void)argc, (void)argv;
	/* the fixture beside this file: the build compiles it by absolute path */
	snprintf(here, sizeof(here), "%s", __FILE__);
	snprintf(root, sizeof(root), "%s/fixtures/perf-sysfs/icelake", dirname(here));
	opts.sysfs_root = root;
	VIOLATED_IF(pmu_model_builtin(PMU_FALLBACK_MODEL, &model) < 0);
	return 0;
}

static void check_event(const char *spec, const struct perf_event_desc *ev)
{
	struct perf_event_attr attr;
	const char *pmu;
	uint32_t gp, fixed;

	VIOLATED_IF(strcmp(ev->name, spec));
	memset(&attr, 0, sizeof(attr));
	perf_event_to_attr(ev, &attr);
	VIOLATED_IF(attr.size != sizeof(attr) || attr.type != ev->type || attr.config != ev->config);
	pmu = perf_event_pmu(ev);
	VIOLATED_IF(ev->hardware ? strcmp(pmu, "cpu") || ev->type == PERF_TYPE_SOFTWARE
			 : ev->type != PERF_TYPE_SOFTWARE || ev->has_evtsel);
	if (!ev->has_evtsel)
		return;
	VIOLATED_IF(ev->evtsel_event > PERF_EVENT_EVENT_MAX ||
	    ev->evtsel_config != ((uint64_t)(ev->evtsel_event & 0xff) | (uint64_t)ev->evtsel_umask << 8 |
				  (uint64_t)(ev->evtsel_event >> 8) << 32));
	pmu_event_counters(&model, ev->evtsel_config, &gp, &fixed);
	VIOLATED_IF((gp & ~(uint32_t)pmu_gp_bits(model.num_gp)) || (fixed & ~model.fixed_mask));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct perf_event_desc ev;
	char err[256];
	char *spec;
	int r;

	/* a spec is a string: the bytes up to the first NUL */
	spec = malloc(size + 1);
	if (!spec)
		return 0;
	memcpy(spec, data, size);
	spec[size] = 0;
	memset(err, 'x', sizeof(err));
	r = perf_event_parse(spec, &opts, &ev, err, sizeof(err));
	if (r == 0)
		check_event(spec, &ev);
	else
		VIOLATED_IF(!memchr(err, 0, sizeof(err)) || !err[0] || (r != -EINVAL && r != -ENOENT && r != -ENOMEM));
	free(spec);
	return 0;
}
