/* SPDX-License-Identifier: MIT */
/* Tests for pmu_model.c: built-in models and the JSON model loader. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmu/pmu.h"
#include "pmu/pmu_model.h"

static struct pmu_desc *new_desc(void)
{
	struct pmu_desc *d = malloc(sizeof(*d));

	assert_non_null(d);
	pmu_desc_init(d);
	return d;
}


/* Invariants every model must keep, whatever its source. */
static void check_invariants(const struct pmu_desc *d)
{
	assert_true(d->num_gp >= 1 && d->num_gp <= PMU_MAX_GP);
	assert_true(d->n_constraints <= PMU_MAX_CONSTRAINTS);
	for (size_t i = 0; i < d->n_constraints; i++) {
		const struct pmu_event_constraint *c = &d->constraints[i];

		assert_true(c->event_lo <= c->event_hi);
		assert_int_equal(c->gp_mask & ~(uint32_t)pmu_gp_bits(d->num_gp), 0);
		assert_int_equal(c->fixed_mask & ~d->fixed_mask, 0);
	}
	assert_true(d->n_cpus >= 1 && d->n_cpus <= PMU_MAX_CPUS);
	for (unsigned i = 0; i < d->n_cpus; i++)
		assert_int_equal(d->cpus[i].cpu, (int)i);
	if (d->vendor == PMU_VENDOR_AMD)
		assert_int_equal(d->fixed_mask, 0);
	if (d->perf_metrics)
		assert_true(d->fixed_mask & 0x8);
}

static void test_builtins(void **state)
{
	(void)state;
	const char *const *names = pmu_model_builtin_names();
	struct pmu_desc *d = new_desc();
	char err[256];
	unsigned n = 0;

	for (; names[n]; n++) {
		assert_int_equal(pmu_model_load(names[n], d, err, sizeof(err)), 0);
		assert_string_equal(d->model, names[n]);
		assert_int_equal(d->source, PMU_SOURCE_BUILTIN);
		check_invariants(d);
	}
	assert_int_equal(n, 3);
	assert_int_equal(pmu_model_builtin(PMU_FALLBACK_MODEL, d), 0);
	free(d);
}

static void test_icelake_model(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_model_builtin("icelake-8360y", d), 0);
	assert_int_equal(d->vendor, PMU_VENDOR_INTEL);
	assert_int_equal(d->version, 5);
	assert_int_equal(d->num_gp, 8);
	assert_int_equal(d->gp_width, 48);
	assert_int_equal(d->fixed_mask, 0xf);
	assert_int_equal(d->fixed_width, 48);
	assert_true(d->perf_metrics);
	assert_int_equal(d->pebs_format, 4);
	assert_true(d->pebs_baseline);
	assert_true(d->full_width_write);
	assert_true(d->anythread_deprecated);
	assert_true(d->nmi_watchdog);
	/* 2 packages x 36 cores x 2 threads, Linux numbering. */
	assert_int_equal(d->n_cpus, 144);
	assert_int_equal(d->cpus[0].core, d->cpus[72].core);
	assert_int_equal(d->cpus[71].core, d->cpus[143].core);
	assert_int_not_equal(d->cpus[0].core, d->cpus[36].core);
	assert_int_equal(d->cpus[35].package, 0);
	assert_int_equal(d->cpus[36].package, 1);
	assert_int_equal(d->cpus[108].package, 1);
	for (unsigned i = 0; i < 72; i++) {
		unsigned same = 0;

		for (unsigned j = 0; j < 144; j++)
			same += d->cpus[j].core == d->cpus[i].core;
		assert_int_equal(same, 2); /* exactly two threads per core */
	}
	free(d);
}

static void test_zen4_and_spr(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	uint32_t gp, fx;

	assert_int_equal(pmu_model_builtin("zen4", d), 0);
	assert_int_equal(d->vendor, PMU_VENDOR_AMD);
	assert_int_equal(d->version, 2);
	assert_int_equal(d->num_gp, 6);
	assert_int_equal(d->fixed_mask, 0);
	assert_int_equal(pmu_global_ctrl_mask(d), 0x3f);

	assert_int_equal(pmu_model_builtin("sapphirerapids", d), 0);
	assert_int_equal(pmu_global_ctrl_mask(d), 0x0001000f000000ffULL);
	/* 0x2e stays free although it sits in the restricted 0x01-0x8f. */
	pmu_event_counters(d, 0x412e, &gp, &fx);
	assert_int_equal(gp, 0xff);
	pmu_event_counters(d, 0x0124, &gp, &fx);
	assert_int_equal(gp, 0xf);
	pmu_event_counters(d, 0x01ce, &gp, &fx);
	assert_int_equal(gp, 0x1);
	pmu_event_counters(d, 0x0300, &gp, &fx);
	assert_int_equal(gp, 0);
	assert_int_equal(fx, 0x4);
	free(d);
}

static void test_unknown_builtin(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char err[256];

	assert_int_equal(pmu_model_load("haswell", d, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "unknown model \"haswell\""));
	assert_non_null(strstr(err, "icelake-8360y, sapphirerapids, zen4"));
	free(d);
}

static void test_load_file(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char path[4096], err[512];
	uint32_t gp, fx;

	fixture_path(path, sizeof(path), "models/skylake-4c.json");
	assert_int_equal(pmu_model_load(path, d, err, sizeof(err)), 0);
	assert_int_equal(d->source, PMU_SOURCE_FILE);
	assert_string_equal(d->model, "skylake-4c");
	assert_string_equal(d->pmu_name, "skylake");
	assert_int_equal(d->version, 4);
	assert_int_equal(d->num_gp, 4);
	assert_int_equal(d->fixed_mask, 0x7);
	assert_int_equal(d->fixed_width, 48);
	assert_int_equal(d->pebs_format, 3);
	assert_false(d->pebs_baseline);
	assert_false(d->perf_metrics);
	assert_true(d->full_width_write);
	assert_int_equal(d->max_precise, 3);
	assert_int_equal(d->lbr_depth, 32);
	assert_int_equal(d->n_cpus, 8);
	assert_int_equal(d->cpus[1].core, d->cpus[5].core);
	assert_int_equal(d->n_constraints, 5);
	check_invariants(d);
	pmu_event_counters(d, 0x08a3, &gp, &fx);
	assert_int_equal(gp, 0x4);
	pmu_event_counters(d, 0x01d2, &gp, &fx);
	assert_int_equal(gp, 0xf);
	pmu_event_counters(d, 0x0300, &gp, &fx);
	assert_int_equal(gp, 0);
	assert_int_equal(fx, 0x4);

	char block[512];
	pmu_format_boot_block(d, block, sizeof(block));
	assert_non_null(strstr(block, "... event mask:             000000070000000f\n"));
	free(d);
}

static void test_load_file_errors(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char path[4096], err[512], want[4200];

	fixture_path(path, sizeof(path), "models/does-not-exist.json");
	assert_int_equal(pmu_model_load(path, d, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: cannot open", path);
	assert_non_null(strstr(err, want));

	fixture_path(path, sizeof(path), "models/bad-syntax.json");
	assert_int_equal(pmu_model_load(path, d, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s: line 4: not valid JSON", path);
	if (!strstr(err, want))
		fail_msg("got \"%s\"", err);

	fixture_path(path, sizeof(path), "models/bad-num-gp.json");
	assert_int_equal(pmu_model_load(path, d, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s: field \"num_gp\": must be an integer 1..32", path);
	assert_string_equal(err, want);

	/* A directory is not a model. */
	fixture_path(path, sizeof(path), "models/");
	assert_int_equal(pmu_model_load(path, d, err, sizeof(err)), -EINVAL);
	free(d);
}

/* A valid minimal model to which each malformed case applies one change. */
#define BASE_HEAD "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8,"
#define TOPO "\"topology\":{\"packages\":1,\"cores_per_package\":2}"

static const struct {
	const char *json;
	const char *want; /* the message after "model.json: " */
} malformed[] = {
	{ BASE_HEAD "\"num_gp\":0," TOPO "}", NULL }, /* duplicate key: json-c keeps the last */
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":0," TOPO "}",
	  "field \"num_gp\": must be an integer 1..32" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":33," TOPO "}",
	  "field \"num_gp\": must be an integer 1..32" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":\"8\"," TOPO "}",
	  "field \"num_gp\": must be an integer 1..32" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8.5," TOPO "}",
	  "field \"num_gp\": must be an integer 1..32" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5," TOPO "}",
	  "field \"num_gp\": missing (required; must be an integer 1..32)" },
	{ BASE_HEAD "\"num_gpp\":8," TOPO "}", "field \"num_gpp\": unknown field" },
	{ "{\"name\":\"m\",\"vendor\":\"via\",\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"vendor\": must be \"intel\" or \"amd\"" },
	{ "{\"name\":\"m\",\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"vendor\": missing (required; \"intel\" or \"amd\")" },
	{ "{\"name\":\"m\",\"vendor\":5,\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"vendor\": must be \"intel\" or \"amd\"" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":6,\"num_gp\":8," TOPO "}",
	  "field \"version\": must be an integer 1..5" },
	{ "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":1,\"num_gp\":6," TOPO "}",
	  "field \"version\": AMD has version 0" },
	{ "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":0,\"num_gp\":5," TOPO "}",
	  "field \"num_gp\": an AMD PMU without PerfMonV2 has 4 (legacy) or 6" },
	{ "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":2,\"num_gp\":6,\"fixed_mask\":1," TOPO "}",
	  "field \"fixed_mask\": AMD PMUs have no fixed counters" },
	{ BASE_HEAD "\"fixed_mask\":65536," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string 0x0..0xffff" },
	{ BASE_HEAD "\"fixed_mask\":\"0xzz\"," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string 0x0..0xffff" },
	{ BASE_HEAD "\"fixed_mask\":\"15\"," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string" },
	{ BASE_HEAD "\"fixed_mask\":-1," TOPO "}", "field \"fixed_mask\": must be" },
	/* "0x" then hex digits only: no sign, no blank */
	{ BASE_HEAD "\"fixed_mask\":\"0x 5\"," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string 0x0..0xffff" },
	{ BASE_HEAD "\"fixed_mask\":\"0x+5\"," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string 0x0..0xffff" },
	{ BASE_HEAD "\"fixed_mask\":null," TOPO "}",
	  "field \"fixed_mask\": must be an integer or \"0x...\" string 0x0..0xffff" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":4,\"num_gp\":4,\"fixed_mask\":5," TOPO "}",
	  "field \"fixed_mask\": before version 5 fixed counters are contiguous" },
	{ "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":1,\"num_gp\":2,\"fixed_mask\":1," TOPO "}",
	  "field \"fixed_mask\": perfmon version 1 has no fixed counters" },
	{ BASE_HEAD "\"gp_width\":65," TOPO "}", "field \"gp_width\": must be an integer 8..64" },
	{ BASE_HEAD "\"fixed_mask\":7,\"fixed_width\":4," TOPO "}",
	  "field \"fixed_width\": must be an integer 8..64" },
	{ BASE_HEAD "\"events_mask_len\":33," TOPO "}",
	  "field \"events_mask_len\": must be an integer 0..32" },
	{ BASE_HEAD "\"events_mask_len\":7,\"arch_events_unavailable\":\"0x80\"," TOPO "}",
	  "field \"arch_events_unavailable\": must be an integer or \"0x...\" string 0x0..0x7f" },
	{ BASE_HEAD "\"fixed_mask\":7,\"perf_metrics\":true," TOPO "}",
	  "field \"perf_metrics\": needs an Intel PMU with fixed counter 3" },
	{ BASE_HEAD "\"pebs_format\":3,\"pebs_baseline\":true," TOPO "}",
	  "field \"pebs_baseline\": needs pebs_format 4" },
	{ BASE_HEAD "\"pebs_format\":16," TOPO "}", "field \"pebs_format\": must be an integer -1..15" },
	{ "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":2,\"num_gp\":6,\"pebs_format\":2," TOPO "}",
	  "field \"pebs_format\": Intel only" },
	{ "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":2,\"num_gp\":6,\"anythread_deprecated\":true," TOPO "}",
	  "field \"anythread_deprecated\": Intel only" },
	{ BASE_HEAD "\"max_precise\":4," TOPO "}", "field \"max_precise\": must be an integer -1..3" },
	{ BASE_HEAD "\"lbr_depth\":65," TOPO "}", "field \"lbr_depth\": must be an integer 0..64" },
	{ BASE_HEAD "\"nmi_watchdog\":\"yes\"," TOPO "}", "field \"nmi_watchdog\": must be true or false" },
	{ BASE_HEAD "\"full_width_write\":1," TOPO "}", "field \"full_width_write\": must be true or false" },
	{ BASE_HEAD "\"description\":5," TOPO "}", "field \"description\": must be a string" },
	{ "{\"vendor\":\"intel\",\"version\":5,\"num_gp\":8," TOPO "}", "field \"name\": missing" },
	{ "{\"name\":\"my model\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"name\": must be a string of 1..63 characters" },
	{ "{\"name\":\"\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"name\": must be a string" },
	{ "{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8," TOPO "}",
	  "field \"name\": must be a string of 1..63" },
	{ BASE_HEAD "\"pmu_name\":[]," TOPO "}", "field \"pmu_name\": must be a string" },
	{ BASE_HEAD "\"x\":1}", "field \"x\": unknown field" },
	{ BASE_HEAD "\"gp_width\":48}", "field \"topology\": missing" },
	{ BASE_HEAD "\"topology\":[1]}", "field \"topology\": must be an object" },
	{ BASE_HEAD "\"topology\":{\"packages\":0,\"cores_per_package\":2}}",
	  "field \"topology.packages\": must be an integer 1..4096" },
	{ BASE_HEAD "\"topology\":{\"packages\":1}}", "field \"topology.cores_per_package\": missing" },
	{ BASE_HEAD "\"topology\":{\"packages\":1,\"cores_per_package\":2,\"threads_per_core\":9}}",
	  "field \"topology.threads_per_core\": must be an integer 1..8" },
	{ BASE_HEAD "\"topology\":{\"packages\":1,\"cores_per_package\":2,\"sockets\":2}}",
	  "field \"topology.sockets\": unknown field" },
	{ BASE_HEAD "\"topology\":{\"packages\":64,\"cores_per_package\":64,\"threads_per_core\":2}}",
	  "field \"topology\": 64 packages x 64 cores x 2 threads = 8192 CPUs, more than the 4096 supported" },
	{ BASE_HEAD TOPO ",\"constraints\":{}}", "field \"constraints\": must be an array" },
	{ BASE_HEAD TOPO ",\"constraints\":[1]}", "field \"constraints[0]\": must be an object" },
	{ BASE_HEAD TOPO ",\"constraints\":[null]}", "field \"constraints[0]\": must be an object" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"gp_mask\":1}]}",
	  "field \"constraints[0].event\": missing (required; must be an integer or \"0x...\" string 0x0..0xff)" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":1,\"gp_mask\":1},{\"event\":2,\"gp_mask\":\"0x1ff\"}]}",
	  "field \"constraints[1].gp_mask\": must be an integer or \"0x...\" string 0x0..0xff" },
	{ BASE_HEAD "\"fixed_mask\":7," TOPO ",\"constraints\":[{\"event\":\"0xc0\",\"gp_mask\":1,\"fixed_mask\":8}]}",
	  "field \"constraints[0].fixed_mask\": 0x8 names fixed counters the model lacks (fixed_mask 0x7)" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":256,\"gp_mask\":1}]}",
	  "field \"constraints[0].event\": must be an integer or \"0x...\" string 0x0..0xff" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":16,\"event_hi\":8,\"gp_mask\":1}]}",
	  "field \"constraints[0].event_hi\": must be an integer or \"0x...\" string 0x10..0xff" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":16,\"umask\":256,\"gp_mask\":1}]}",
	  "field \"constraints[0].umask\": must be an integer or \"0x...\" string 0x0..0xff" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":16}]}", "field \"constraints[0].gp_mask\": missing" },
	{ BASE_HEAD TOPO ",\"constraints\":[{\"event\":16,\"gp_mask\":1,\"cmask\":1}]}",
	  "field \"constraints[0].cmask\": unknown field" },
};

static void test_malformed_models(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char err[512], want[512];

	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		const char *j = malformed[i].json;
		int rc = pmu_model_parse_json(j, strlen(j), "model.json", d, err, sizeof(err));

		if (!malformed[i].want) {
			/* json-c resolves a duplicate key to its last value;
			 * that last value is then validated like any other. */
			assert_int_equal(rc, -EINVAL);
			assert_non_null(strstr(err, "field \"num_gp\""));
			continue;
		}
		snprintf(want, sizeof(want), "model.json: %s", malformed[i].want);
		if (rc != -EINVAL || strncmp(err, want, strlen(want)) != 0)
			fail_msg("case %zu: rc %d, got \"%s\", want prefix \"%s\"", i, rc, err, want);
	}
	free(d);
}

static void test_too_many_constraints(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char *j = malloc(16384), err[512];
	size_t n;

	assert_non_null(j);
	n = (size_t)snprintf(j, 16384, BASE_HEAD TOPO ",\"constraints\":[");
	for (int i = 0; i <= PMU_MAX_CONSTRAINTS; i++)
		n += (size_t)snprintf(j + n, 16384 - n, "%s{\"event\":%d,\"gp_mask\":1}", i ? "," : "", i);
	n += (size_t)snprintf(j + n, 16384 - n, "]}");
	assert_int_equal(pmu_model_parse_json(j, n, "model.json", d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "model.json: field \"constraints\": has 65 entries, at most 64 allowed");
	free(j);
	free(d);
}

static void test_not_json(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char err[512];
	const char *arr = "[1,2]";
	const char *trail = BASE_HEAD TOPO "} {}";
	const char *cut = BASE_HEAD;

	assert_int_equal(pmu_model_parse_json(arr, strlen(arr), "m.json", d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "m.json: the model must be a JSON object");
	assert_int_equal(pmu_model_parse_json(trail, strlen(trail), "m.json", d, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "m.json: trailing data after the JSON object");
	assert_int_equal(pmu_model_parse_json(cut, strlen(cut), "m.json", d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "m.json: line 1: not valid JSON"));
	assert_int_equal(pmu_model_parse_json("", 0, "m.json", d, err, sizeof(err)), -EINVAL);
	free(d);
}

static void test_defaults(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	char err[512];
	const char *intel4 = "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":4,\"num_gp\":4,"
			     "\"topology\":{\"packages\":1,\"cores_per_package\":1}}";
	const char *intel5 = "{\"name\":\"m\",\"vendor\":\"intel\",\"version\":5,\"num_gp\":8,"
			     "\"fixed_mask\":\"0xf\",\"gp_width\":40,\"perf_metrics\":true,"
			     "\"topology\":{\"packages\":1,\"cores_per_package\":1}}";
	const char *amd = "{\"name\":\"m\",\"vendor\":\"amd\",\"version\":0,\"num_gp\":4,"
			  "\"topology\":{\"packages\":1,\"cores_per_package\":3}}";

	assert_int_equal(pmu_model_parse_json(intel4, strlen(intel4), "m", d, err, sizeof(err)), 0);
	assert_int_equal(d->gp_width, 48);
	assert_int_equal(d->fixed_mask, 0);
	assert_int_equal(d->fixed_width, 0);
	assert_int_equal(d->events_mask_len, 7);
	assert_false(d->anythread_deprecated);
	assert_true(d->nmi_watchdog);
	assert_int_equal(d->pebs_format, -1);
	assert_int_equal(d->max_precise, -1);
	assert_int_equal(d->n_constraints, 0);
	assert_int_equal(d->n_cpus, 1);
	assert_string_equal(d->pmu_name, "");

	assert_int_equal(pmu_model_parse_json(intel5, strlen(intel5), "m", d, err, sizeof(err)), 0);
	assert_int_equal(d->events_mask_len, 8);
	assert_true(d->anythread_deprecated);
	assert_int_equal(d->fixed_width, 40); /* follows gp_width */
	assert_int_equal(pmu_global_ctrl_mask(d), 0x0001000f000000ffULL);

	assert_int_equal(pmu_model_parse_json(amd, strlen(amd), "m", d, err, sizeof(err)), 0);
	assert_int_equal(d->vendor, PMU_VENDOR_AMD);
	assert_int_equal(d->events_mask_len, 0);
	assert_int_equal(d->n_cpus, 3);
	free(d);
}

static void test_fill_topology(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_model_fill_topology(d, 2, 3, 2), 0);
	assert_int_equal(d->n_cpus, 12);
	/* Thread 0 of every core first: cpu i and i+6 are siblings. */
	for (int i = 0; i < 6; i++) {
		assert_int_equal(d->cpus[i].core, d->cpus[i + 6].core);
		assert_int_equal(d->cpus[i].package, i / 3);
	}
	assert_int_equal(pmu_model_fill_topology(d, 4096, 1, 2), -E2BIG);
	assert_int_equal(pmu_model_fill_topology(d, 0, 1, 1), -EINVAL);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builtins),
		cmocka_unit_test(test_icelake_model),
		cmocka_unit_test(test_zen4_and_spr),
		cmocka_unit_test(test_unknown_builtin),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_load_file_errors),
		cmocka_unit_test(test_malformed_models),
		cmocka_unit_test(test_too_many_constraints),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_fill_topology),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
