// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: a PMU model file (docs/pmu-models.md) as
 * pmu_model_load reads it, through pmu_model_parse_json. On success the
 * description must hold what the rest of vpmud assumes of any pmu_desc
 * (counts within PMU_MAX_*, masks within the counters that exist, a
 * topology of distinct CPUs), and the code that consumes a description
 * (counter constraints, the boot block, the guest's CPUID) runs on it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static bool terminated(const char *s, size_t n)
{
	return memchr(s, 0, n) != NULL;
}

static void check_desc(const struct pmu_desc *d)
{
	uint32_t gp_all = (uint32_t)pmu_gp_bits(d->num_gp);

	VIOLATED_IF(!terminated(d->model, sizeof(d->model)) || !d->model[0] || !terminated(d->pmu_name, sizeof(d->pmu_name)));
	VIOLATED_IF(d->source != PMU_SOURCE_FILE || (d->vendor != PMU_VENDOR_INTEL && d->vendor != PMU_VENDOR_AMD));
	VIOLATED_IF(d->num_gp < 1 || d->num_gp > PMU_MAX_GP || d->gp_width < 8 || d->gp_width > 64);
	VIOLATED_IF(d->fixed_mask >> PMU_MAX_FIXED || pmu_num_fixed(d) > PMU_MAX_FIXED);
	VIOLATED_IF(d->fixed_mask ? d->fixed_width < 8 || d->fixed_width > 64 : d->fixed_width != 0);
	VIOLATED_IF(d->vendor == PMU_VENDOR_AMD && (d->fixed_mask || d->perf_metrics || d->pebs_format >= 0));
	VIOLATED_IF(d->perf_metrics && !(d->fixed_mask & (1u << 3)));
	VIOLATED_IF(d->events_mask_len > 32 || (d->arch_events_unavailable & ~(uint32_t)pmu_gp_bits(d->events_mask_len)));
	VIOLATED_IF(d->n_constraints > PMU_MAX_CONSTRAINTS);
	for (size_t i = 0; i < d->n_constraints; i++) {
		const struct pmu_event_constraint *c = &d->constraints[i];

		VIOLATED_IF(c->event_lo > c->event_hi || c->event_hi > 0xfff || (c->gp_mask & ~gp_all) ||
		    (c->fixed_mask & ~d->fixed_mask) || c->umask < -1 || c->umask > 0xff);
	}
	VIOLATED_IF(d->n_cpus < 1 || d->n_cpus > PMU_MAX_CPUS);
	for (unsigned i = 0; i < d->n_cpus; i++)
		for (unsigned j = i + 1; j < d->n_cpus && j < i + 64; j++)
			VIOLATED_IF(d->cpus[i].cpu == d->cpus[j].cpu);
}

/* What the daemon does with a loaded model: none of it may fail on a
 * description the loader accepted. */
static void use_desc(const struct pmu_desc *d, const uint8_t *data, size_t size)
{
	static char block[16384];
	struct pmu_guest_shape shape;
	struct pmu_cpuid_regs regs;
	char err[256];
	uint32_t gp, fixed;
	uint64_t config = 0;

	/* an event from the input's last bytes, so lookups hit the table */
	for (size_t i = 0; i < 4 && i < size; i++)
		config = config << 8 | data[size - 1 - i];
	pmu_event_counters(d, config, &gp, &fixed);
	VIOLATED_IF((gp & ~(uint32_t)pmu_gp_bits(d->num_gp)) || (fixed & ~d->fixed_mask));
	(void)pmu_global_ctrl_mask(d);
	(void)pmu_cpu_span(d);
	VIOLATED_IF(pmu_format_boot_block(d, block, sizeof(block)) < 0);
	pmu_guest_default_shape(d, &shape);
	VIOLATED_IF(pmu_guest_cpuid(d, &shape, &regs, err, sizeof(err)) < 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pmu_desc d; /* ~50 KiB of CPUs: not for the stack */
	char err[512];
	int r;

	memset(err, 'x', sizeof(err));
	r = pmu_model_parse_json((const char *)data, size, "model.json", &d, err, sizeof(err));
	if (r == 0) {
		check_desc(&d);
		use_desc(&d, data, size);
	} else {
		/* every refusal names the file */
		VIOLATED_IF(r != -ENOMEM && (!terminated(err, sizeof(err)) || strncmp(err, "model.json: ", 12) != 0));
	}
	return 0;
}
