/* SPDX-License-Identifier: MIT */
/*
 * pmu_model: built-in models and the JSON model loader.
 *
 * Facts behind the built-in models:
 *  - icelake-8360y: /work/shared/research/kvm-pmu-facts.md sections 6.6-6.8
 *    (dmesg of Ice Lake parts: v5, 8 GP, 4 fixed, event mask
 *    0001000f000000ff; constraints from intel_icl_event_constraints in the
 *    6.12 tree's arch/x86/events/intel/core.c). The 8360Y itself was not seen
 *    in a dmesg: it is the same core (Ice Lake-SP), so same figures.
 *    Topology: Xeon Platinum 8360Y, 36 cores, 2 threads, two sockets.
 *  - sapphirerapids: intel_spr_event_constraints (later renamed
 *    intel_glc_event_constraints) in arch/x86/events/intel/core.c; PMU
 *    figures as Ice Lake (v5, 8 GP, 4 fixed, perf metrics). Topology:
 *    Xeon Platinum 8480+, 56 cores, 2 threads, two sockets.
 *  - zen4: facts file section 7 (PerfMonV2, 6 core counters, 48 bits, no
 *    fixed counters; dmesg "version: 2 ... global_ctrl mask
 *    000000000000003f"). Topology: EPYC 9654, 96 cores, 2 threads, one
 *    socket.
 */
#include "pmu/pmu_model.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/fileio.h"
#include "proto/cleanup.h"
#include "proto/frame.h" /* _cleanup_json_ */
#include "proto/json_fields.h"

/* ---- built-in models ---------------------------------------------------- */

#define EV_RANGE(lo, hi, gp) \
	{ .event_lo = (lo), .event_hi = (hi), .umask = -1, .gp_mask = (gp), .fixed_mask = 0 }
#define EV_UMASK(ev, um, gp, fx) \
	{ .event_lo = (ev), .event_hi = (ev), .umask = (um), .gp_mask = (gp), .fixed_mask = (fx) }

/*
 * Ice Lake. Events a fixed counter counts may also use any GP counter,
 * except ref-cycles and slots which only the fixed counters count. Event
 * select 0 is not a real event: the pseudo encodings other than 0x0100,
 * 0x0300 and 0x0400 (the top-down metrics 0x8000.. live in PERF_METRICS, not
 * in a counter this inventory models) get no counter at all. The 0xa3
 * umask exceptions come before the 0xa3 row they carve out of.
 */
static const struct pmu_event_constraint icl_constraints[] = {
	EV_UMASK(0xc0, 0x00, 0xff, 0x1), /* INST_RETIRED.ANY */
	EV_UMASK(0xc0, 0x01, 0xff, 0x1), /* old INST_RETIRED.PREC_DIST */
	EV_UMASK(0x00, 0x01, 0xff, 0x1), /* INST_RETIRED.PREC_DIST */
	EV_UMASK(0x3c, 0x00, 0xff, 0x2), /* CPU_CLK_UNHALTED.CORE */
	EV_UMASK(0x00, 0x03, 0x00, 0x4), /* CPU_CLK_UNHALTED.REF (pseudo) */
	EV_UMASK(0x00, 0x04, 0x00, 0x8), /* TOPDOWN.SLOTS (pseudo) */
	EV_RANGE(0x00, 0x00, 0x00),
	EV_RANGE(0x03, 0x0a, 0xf),
	EV_RANGE(0x1f, 0x28, 0xf),
	EV_RANGE(0x32, 0x32, 0xf),       /* SW_PREFETCH_ACCESS.* */
	EV_RANGE(0x48, 0x54, 0xf),
	EV_RANGE(0x60, 0x8b, 0xf),
	EV_UMASK(0xa3, 0x04, 0xff, 0),   /* CYCLE_ACTIVITY.STALLS_TOTAL */
	EV_UMASK(0xa3, 0x10, 0xff, 0),   /* CYCLE_ACTIVITY.CYCLES_MEM_ANY */
	EV_UMASK(0xa3, 0x14, 0xff, 0),   /* CYCLE_ACTIVITY.STALLS_MEM_ANY */
	EV_RANGE(0xa3, 0xa3, 0xf),       /* CYCLE_ACTIVITY.* */
	EV_RANGE(0xa8, 0xb0, 0xf),
	EV_RANGE(0xb7, 0xbd, 0xf),
	EV_RANGE(0xd0, 0xe6, 0xf),
	EV_RANGE(0xef, 0xef, 0xf),
	EV_RANGE(0xf0, 0xf4, 0xf),
};

/* Sapphire Rapids (Golden Cove): below 0x90 mostly counters 0-3, with 0x2e
 * and 0x3c free; a few single-counter events; 0xd0-0xdf on 0-3. */
static const struct pmu_event_constraint spr_constraints[] = {
	EV_UMASK(0xc0, 0x00, 0xff, 0x1), /* INST_RETIRED.ANY */
	EV_UMASK(0x00, 0x01, 0xff, 0x1), /* INST_RETIRED.PREC_DIST */
	EV_UMASK(0x3c, 0x00, 0xff, 0x2), /* CPU_CLK_UNHALTED.CORE */
	EV_UMASK(0x00, 0x03, 0x00, 0x4), /* CPU_CLK_UNHALTED.REF (pseudo) */
	EV_UMASK(0x00, 0x04, 0x00, 0x8), /* TOPDOWN.SLOTS (pseudo) */
	EV_RANGE(0x00, 0x00, 0x00),
	EV_RANGE(0x2e, 0x2e, 0xff),      /* LONGEST_LAT_CACHE.* */
	EV_RANGE(0x3c, 0x3c, 0xff),
	EV_RANGE(0x01, 0x8f, 0xf),
	EV_UMASK(0xa3, 0x01, 0xf, 0),
	EV_UMASK(0xa3, 0x02, 0xf, 0),
	EV_UMASK(0xa3, 0x08, 0xf, 0),
	EV_UMASK(0xa4, 0x04, 0x1, 0),
	EV_UMASK(0xa4, 0x08, 0x1, 0),
	EV_UMASK(0xcd, 0x02, 0x1, 0),    /* MEM_TRANS_RETIRED.STORE_SAMPLE */
	EV_RANGE(0xce, 0xce, 0x1),
	EV_RANGE(0xd0, 0xdf, 0xf),
};

struct builtin_model {
	const char *name;
	const char *pmu_name;
	enum pmu_vendor vendor;
	unsigned version, num_gp, width, events_mask_len;
	uint32_t fixed_mask;
	bool anythread_deprecated, perf_metrics, full_width_write, pebs_baseline;
	int pebs_format, max_precise;
	unsigned lbr_depth;
	const struct pmu_event_constraint *constraints;
	size_t n_constraints;
	unsigned packages, cores, threads;
};

static const struct builtin_model builtins[] = {
	{
		.name = "icelake-8360y", .pmu_name = "icelake", .vendor = PMU_VENDOR_INTEL,
		.version = 5, .num_gp = 8, .width = 48, .events_mask_len = 8,
		.fixed_mask = 0xf, .anythread_deprecated = true, .perf_metrics = true,
		.full_width_write = true, .pebs_format = 4, .pebs_baseline = true,
		.max_precise = 3, .lbr_depth = 32,
		.constraints = icl_constraints,
		.n_constraints = sizeof(icl_constraints) / sizeof(icl_constraints[0]),
		.packages = 2, .cores = 36, .threads = 2,
	},
	{
		/* PEBS format 4 with baseline as on Ice Lake: UNSURE, no
		 * Sapphire Rapids dmesg was at hand to confirm it. */
		.name = "sapphirerapids", .pmu_name = "sapphire_rapids", .vendor = PMU_VENDOR_INTEL,
		.version = 5, .num_gp = 8, .width = 48, .events_mask_len = 8,
		.fixed_mask = 0xf, .anythread_deprecated = true, .perf_metrics = true,
		.full_width_write = true, .pebs_format = 4, .pebs_baseline = true,
		.max_precise = 3, .lbr_depth = 32,
		.constraints = spr_constraints,
		.n_constraints = sizeof(spr_constraints) / sizeof(spr_constraints[0]),
		.packages = 2, .cores = 56, .threads = 2,
	},
	{
		/* Linux lists no per-counter constraints for Zen 4 core
		 * events other than pairing large-increment events, which
		 * this inventory does not model. */
		.name = "zen4", .pmu_name = "zen4", .vendor = PMU_VENDOR_AMD,
		.version = 2, .num_gp = 6, .width = 48, .events_mask_len = 0,
		.fixed_mask = 0, .pebs_format = -1, .max_precise = -1, .lbr_depth = 16,
		.packages = 1, .cores = 96, .threads = 2,
	},
};

#define N_BUILTINS (sizeof(builtins) / sizeof(builtins[0]))

static const char *const builtin_names[N_BUILTINS + 1] = {
	"icelake-8360y", "sapphirerapids", "zen4", NULL,
};

const char *const *pmu_model_builtin_names(void)
{
	return builtin_names;
}

int pmu_model_fill_topology(struct pmu_desc *d, unsigned packages,
			    unsigned cores_per_package, unsigned threads_per_core)
{
	unsigned long long n = (unsigned long long)packages * cores_per_package * threads_per_core;
	unsigned per_thread = packages * cores_per_package;

	if (n == 0)
		return -EINVAL;
	if (n > PMU_MAX_CPUS)
		return -E2BIG;
	for (unsigned t = 0; t < threads_per_core; t++) {
		for (unsigned p = 0; p < packages; p++) {
			for (unsigned c = 0; c < cores_per_package; c++) {
				unsigned cpu = t * per_thread + p * cores_per_package + c;

				d->cpus[cpu].cpu = (int)cpu;
				d->cpus[cpu].core = (int)(p * cores_per_package + c);
				d->cpus[cpu].package = (int)p;
			}
		}
	}
	d->n_cpus = (unsigned)n;
	return 0;
}

int pmu_model_builtin(const char *name, struct pmu_desc *out)
{
	for (size_t i = 0; i < N_BUILTINS; i++) {
		const struct builtin_model *m = &builtins[i];

		if (strcmp(m->name, name) != 0)
			continue;
		pmu_desc_init(out);
		snprintf(out->model, sizeof(out->model), "%s", m->name);
		snprintf(out->pmu_name, sizeof(out->pmu_name), "%s", m->pmu_name);
		out->source = PMU_SOURCE_BUILTIN;
		out->vendor = m->vendor;
		out->version = m->version;
		out->num_gp = m->num_gp;
		out->gp_width = m->width;
		out->fixed_mask = m->fixed_mask;
		out->fixed_width = m->fixed_mask ? m->width : 0;
		out->events_mask_len = m->events_mask_len;
		out->anythread_deprecated = m->anythread_deprecated;
		out->perf_metrics = m->perf_metrics;
		out->full_width_write = m->full_width_write;
		out->pebs_format = m->pebs_format;
		out->pebs_baseline = m->pebs_baseline;
		out->max_precise = m->max_precise;
		out->lbr_depth = m->lbr_depth;
		if (m->n_constraints)
			memcpy(out->constraints, m->constraints,
			       m->n_constraints * sizeof(m->constraints[0]));
		out->n_constraints = m->n_constraints;
		/* Linux enables the perf NMI watchdog by default (one pinned
		 * cycles event per CPU); a model of a stock host includes it. */
		out->nmi_watchdog = true;
		return pmu_model_fill_topology(out, m->packages, m->cores, m->threads);
	}
	return -ENOENT;
}

/* ---- JSON loader -------------------------------------------------------- */

/*
 * The model file's members are the rows below (proto/json_fields.h), read
 * in order: a rule that involves several members (AMD has no fixed
 * counters, PEBS baseline needs format 4) sits on the last member it
 * involves, so the first problem in a file is the one reported.
 */
struct model_ctx {
	struct json_fields jf;
	const char *label;
	char *err;
	size_t errlen;
	const struct pmu_desc *d;
};

static const struct model_ctx *ctx_of(const struct json_fields *jf)
{
	return jf->user;
}

static bool intel(const struct json_fields *jf)
{
	return ctx_of(jf)->d->vendor == PMU_VENDOR_INTEL;
}

static int __attribute__((format(printf, 3, 4)))
field_error(const struct json_fields *jf, const char *field, const char *fmt, ...)
{
	const struct model_ctx *c = ctx_of(jf);
	/* what follows "field": a sentence about numbers and member names */
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s: field \"%s\": %s", c->label, field, msg);
	return -EINVAL;
}

/* What a member must be, in the words every message of a model file uses. */
static void expected(const struct json_fields_problem *p, char *buf, size_t len)
{
	const struct json_fields_field *f = p->field;

	if (f->expect)
		snprintf(buf, len, "%s", f->expect);
	else if (f->type == JSON_FIELDS_INT && (f->flags & JSON_FIELDS_HEX))
		snprintf(buf, len, "an integer or \"0x...\" string 0x%" PRIx64 "..0x%" PRIx64, (uint64_t)p->min,
			 (uint64_t)p->max);
	else if (f->type == JSON_FIELDS_INT)
		snprintf(buf, len, "an integer %" PRId64 "..%" PRId64, p->min, p->max);
	else if (f->type == JSON_FIELDS_BOOL)
		snprintf(buf, len, "true or false");
	else if (f->type == JSON_FIELDS_STRING && (f->flags & JSON_FIELDS_NAME_CHARS))
		snprintf(buf, len, "a string of %" PRId64 "..%" PRId64 " characters A-Z a-z 0-9 . _ -", p->min, p->max);
	else if (f->type == JSON_FIELDS_ARRAY)
		snprintf(buf, len, "an array of at most %" PRId64 " objects", p->max);
	else
		snprintf(buf, len, "a %s", json_fields_expected(f));
}

static int report(struct json_fields *jf, const struct json_fields_problem *p)
{
	char want[160]; /* expected(): fixed words and two numbers */

	switch (p->kind) {
	case JSON_FIELDS_UNKNOWN:
		return field_error(jf, p->path, "unknown field");
	case JSON_FIELDS_OOM:
		return -ENOMEM;
	case JSON_FIELDS_COUNT:
		return field_error(jf, p->path, "has %zu entries, at most %" PRId64 " allowed", p->count, p->max);
	case JSON_FIELDS_MISSING:
		expected(p, want, sizeof(want));
		return field_error(jf, p->path, "missing (required; %s%s)",
				   p->field->type == JSON_FIELDS_INT ? "must be " : "", want);
	default:
		expected(p, want, sizeof(want));
		return field_error(jf, p->path, "must be %s", want);
	}
}

#define DESC(member) .offset = offsetof(struct pmu_desc, member), .size = JSON_FIELDS_SIZE(struct pmu_desc, member)

static void version_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)base;
	*min = intel(jf) ? 1 : 0;
	*max = intel(jf) ? 5 : 2;
}

static int check_version(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			 const void *base, bool present)
{
	const struct pmu_desc *d = base;

	(void)f, (void)present;
	if (!intel(jf) && d->version == 1)
		return field_error(jf, path, "AMD has version 0 (no PerfMonV2) or 2 (PerfMonV2)");
	return 0;
}

static int check_num_gp(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			const void *base, bool present)
{
	const struct pmu_desc *d = base;

	(void)f, (void)present;
	if (!intel(jf) && d->version == 0 && d->num_gp != 4 && d->num_gp != 6)
		return field_error(jf, path, "an AMD PMU without PerfMonV2 has 4 (legacy) or 6 (perfctr_core) counters");
	if (!intel(jf) && d->version == 2 && d->num_gp > 15)
		return field_error(jf, path, "must be an integer 1..15 (0x80000022 EBX[3:0])");
	return 0;
}

static int check_fixed_mask(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			    const void *base, bool present)
{
	const struct pmu_desc *d = base;
	uint32_t fixed = d->fixed_mask;

	(void)f, (void)present;
	if (fixed && !intel(jf))
		return field_error(jf, path, "AMD PMUs have no fixed counters: must be 0");
	if (fixed && d->version < 2)
		return field_error(jf, path, "perfmon version 1 has no fixed counters: must be 0");
	if (fixed && d->version < 5 && (fixed & (fixed + 1)))
		return field_error(jf, path, "before version 5 fixed counters are contiguous from 0 (0x1, 0x3, 0x7, ...)");
	return 0;
}

static int64_t default_fixed_width(const struct json_fields *jf, const void *base)
{
	(void)jf;
	return ((const struct pmu_desc *)base)->gp_width;
}

static void events_mask_len_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)base;
	*min = 0;
	*max = intel(jf) ? 32 : 0;
}

/* CPUID.0AH EAX[31:24] as Linux knows it per version. */
static int64_t default_events_mask_len(const struct json_fields *jf, const void *base)
{
	return intel(jf) ? (((const struct pmu_desc *)base)->version >= 5 ? 8 : 7) : 0;
}

static void arch_events_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)jf;
	*min = 0;
	*max = (int64_t)pmu_gp_bits(((const struct pmu_desc *)base)->events_mask_len);
}

static int64_t default_anythread(const struct json_fields *jf, const void *base)
{
	return intel(jf) && ((const struct pmu_desc *)base)->version >= 5;
}

/* Features that exist only on Intel. */
static int check_intel_only(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			    const void *base, bool present)
{
	const struct pmu_desc *d = base;

	(void)present;
	if (intel(jf))
		return 0;
	if (f->type == JSON_FIELDS_BOOL && *(const bool *)((const char *)d + f->offset))
		return field_error(jf, path, "Intel only: must be false for AMD");
	if (f->type == JSON_FIELDS_INT && d->pebs_format >= 0)
		return field_error(jf, path, "Intel only: must be -1 for AMD");
	return 0;
}

static int check_perf_metrics(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			      const void *base, bool present)
{
	const struct pmu_desc *d = base;

	(void)f, (void)present;
	if (d->perf_metrics && (!intel(jf) || !(d->fixed_mask & (1u << 3))))
		return field_error(jf, path, "needs an Intel PMU with fixed counter 3 (TOPDOWN.SLOTS) in fixed_mask");
	return 0;
}

static int check_pebs_baseline(struct json_fields *jf, const struct json_fields_field *f, const char *path,
			       const void *base, bool present)
{
	const struct pmu_desc *d = base;

	(void)f, (void)present;
	if (d->pebs_baseline && d->pebs_format < 4)
		return field_error(jf, path, "needs pebs_format 4 or later");
	return 0;
}

/* ---- constraints[i] ---- */

#define CONSTRAINT(member)                                          \
	.offset = offsetof(struct pmu_event_constraint, member), \
	.size = JSON_FIELDS_SIZE(struct pmu_event_constraint, member)

static void event_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)base;
	*min = 0;
	*max = ctx_of(jf)->d->vendor == PMU_VENDOR_AMD ? 0xfff : 0xff;
}

static void event_hi_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	event_bounds(jf, base, min, max);
	*min = ((const struct pmu_event_constraint *)base)->event_lo;
}

static int64_t default_event_hi(const struct json_fields *jf, const void *base)
{
	(void)jf;
	return ((const struct pmu_event_constraint *)base)->event_lo;
}

static void gp_mask_bounds(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max)
{
	(void)base;
	*min = 0;
	*max = (int64_t)pmu_gp_bits(ctx_of(jf)->d->num_gp);
}

static int check_constraint_fixed(struct json_fields *jf, const struct json_fields_field *f, const char *path,
				  const void *base, bool present)
{
	uint32_t fixed = ((const struct pmu_event_constraint *)base)->fixed_mask;
	uint32_t have = ctx_of(jf)->d->fixed_mask;

	(void)f, (void)present;
	if (fixed & ~have)
		return field_error(jf, path, "0x%" PRIx32 " names fixed counters the model lacks (fixed_mask 0x%" PRIx32 ")",
				   fixed, have);
	return 0;
}

static const struct json_fields_field constraint_rows[] = {
	{ .name = "event", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_HEX,
	  .bounds = event_bounds, CONSTRAINT(event_lo) },
	{ .name = "event_hi", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX | JSON_FIELDS_DEFAULT,
	  .bounds = event_hi_bounds, .default_of = default_event_hi, CONSTRAINT(event_hi) },
	{ .name = "umask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX | JSON_FIELDS_DEFAULT, .max = 0xff,
	  .def = -1, CONSTRAINT(umask) },
	{ .name = "gp_mask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_HEX,
	  .bounds = gp_mask_bounds, CONSTRAINT(gp_mask) },
	{ .name = "fixed_mask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX | JSON_FIELDS_DEFAULT,
	  .max = 0xffff, .check = check_constraint_fixed, CONSTRAINT(fixed_mask) },
	{ 0 },
};

static const struct json_fields_field constraint_elem = {
	.type = JSON_FIELDS_OBJECT, .fields = constraint_rows,
	.expect = "an object with event, gp_mask and optionally event_hi, umask, fixed_mask",
};

/* ---- topology ---- */

struct topology {
	int64_t packages, cores, threads;
};

static const struct json_fields_field topology_rows[] = {
	{ .name = "packages", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .min = 1, .max = PMU_MAX_CPUS,
	  .offset = offsetof(struct topology, packages), .size = sizeof(int64_t) },
	{ .name = "cores_per_package", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .min = 1,
	  .max = PMU_MAX_CPUS, .offset = offsetof(struct topology, cores), .size = sizeof(int64_t) },
	{ .name = "threads_per_core", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = 1, .max = 8,
	  .def = 1, .offset = offsetof(struct topology, threads), .size = sizeof(int64_t) },
	{ 0 },
};

static int decode_topology(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			   const char *path, void *slot)
{
	const struct json_fields_problem type = { .kind = JSON_FIELDS_TYPE, .path = path, .field = f, .value = v };
	struct pmu_desc *d = (struct pmu_desc *)ctx_of(jf)->d;
	struct topology t = { 0 };
	int64_t n;
	int r;

	(void)slot;
	if (!json_object_is_type(v, json_type_object))
		return report(jf, &type);
	r = json_fields_decode(jf, topology_rows, v, path, &t);
	if (r < 0)
		return r;
	n = t.packages * t.cores * t.threads;
	if (n > PMU_MAX_CPUS)
		return field_error(jf, path, "%" PRId64 " packages x %" PRId64 " cores x %" PRId64 " threads = %" PRId64
				   " CPUs, more than the %d supported", t.packages, t.cores, t.threads, n, PMU_MAX_CPUS);
	return pmu_model_fill_topology(d, (unsigned)t.packages, (unsigned)t.cores, (unsigned)t.threads);
}

static const char *const vendor_names[] = {
	[PMU_VENDOR_INTEL] = "intel",
	[PMU_VENDOR_AMD] = "amd",
};

static const struct json_fields_field model_rows[] = {
	{ .name = "name", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_REQUIRED | JSON_FIELDS_NAME_CHARS,
	  .min = 1, .max = PMU_NAME_LEN - 1, DESC(model) },
	{ .name = "pmu_name", .type = JSON_FIELDS_STRING, .flags = JSON_FIELDS_NAME_CHARS, .min = 1,
	  .max = PMU_NAME_LEN - 1, DESC(pmu_name) },
	{ .name = "vendor", .type = JSON_FIELDS_ENUM, .flags = JSON_FIELDS_REQUIRED, .min = PMU_VENDOR_INTEL,
	  .max = PMU_VENDOR_AMD, .names = vendor_names, .expect = "\"intel\" or \"amd\"", DESC(vendor) },
	{ .name = "version", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .bounds = version_bounds,
	  .check = check_version, DESC(version) },
	{ .name = "num_gp", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_REQUIRED, .min = 1, .max = PMU_MAX_GP,
	  .check = check_num_gp, DESC(num_gp) },
	{ .name = "gp_width", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = 8, .max = 64, .def = 48,
	  DESC(gp_width) },
	{ .name = "fixed_mask", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX | JSON_FIELDS_DEFAULT,
	  .max = (INT64_C(1) << PMU_MAX_FIXED) - 1, .check = check_fixed_mask, DESC(fixed_mask) },
	{ .name = "fixed_width", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = 8, .max = 64,
	  .default_of = default_fixed_width, DESC(fixed_width) },
	{ .name = "events_mask_len", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT,
	  .bounds = events_mask_len_bounds, .default_of = default_events_mask_len, DESC(events_mask_len) },
	{ .name = "arch_events_unavailable", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_HEX | JSON_FIELDS_DEFAULT,
	  .bounds = arch_events_bounds, DESC(arch_events_unavailable) },
	{ .name = "anythread_deprecated", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT,
	  .default_of = default_anythread, .check = check_intel_only, DESC(anythread_deprecated) },
	{ .name = "perf_metrics", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT, .check = check_perf_metrics,
	  DESC(perf_metrics) },
	{ .name = "full_width_write", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT,
	  .check = check_intel_only, DESC(full_width_write) },
	{ .name = "pebs_format", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = -1, .max = 15,
	  .def = -1, .check = check_intel_only, DESC(pebs_format) },
	{ .name = "pebs_baseline", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT,
	  .check = check_pebs_baseline, DESC(pebs_baseline) },
	{ .name = "max_precise", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .min = -1, .max = 3,
	  .def = -1, DESC(max_precise) },
	{ .name = "lbr_depth", .type = JSON_FIELDS_INT, .flags = JSON_FIELDS_DEFAULT, .max = 64, DESC(lbr_depth) },
	{ .name = "nmi_watchdog", .type = JSON_FIELDS_BOOL, .flags = JSON_FIELDS_DEFAULT, .def = 1,
	  DESC(nmi_watchdog) },
	{ .name = "constraints", .type = JSON_FIELDS_ARRAY, .max = PMU_MAX_CONSTRAINTS,
	  .offset = offsetof(struct pmu_desc, constraints), .elem = &constraint_elem,
	  .elem_size = sizeof(struct pmu_event_constraint), .count_offset = offsetof(struct pmu_desc, n_constraints),
	  .count_size = JSON_FIELDS_SIZE(struct pmu_desc, n_constraints) },
	{ .name = "topology", .type = JSON_FIELDS_CUSTOM, .flags = JSON_FIELDS_REQUIRED,
	  .expect = "an object with packages, cores_per_package, threads_per_core", .decode = decode_topology },
	/* free text for people; only its type is checked */
	{ .name = "description", .type = JSON_FIELDS_STRING, .max = PMU_MODEL_MAX_BYTES },
	{ 0 },
};

int pmu_model_parse_json(const char *text, size_t len, const char *label,
			 struct pmu_desc *out, char *err, size_t errlen)
{
	struct model_ctx c = { .jf = { .report = report }, .label = label, .err = err, .errlen = errlen, .d = out };
	_cleanup_json_tokener_ struct json_tokener *tok = NULL;
	_cleanup_json_ json_object *root = NULL;
	enum json_tokener_error jerr;
	size_t end;
	int rc;

	c.jf.user = &c;
	if (len > PMU_MODEL_MAX_BYTES) {
		snprintf(err, errlen, "%s: larger than %d bytes", label, PMU_MODEL_MAX_BYTES);
		return -EFBIG;
	}
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (!root || jerr != json_tokener_success) {
		unsigned line = 1;

		for (size_t i = 0; i < end && i < len; i++)
			line += text[i] == '\n';
		snprintf(err, errlen, "%s: line %u: not valid JSON: %s", label, line,
			 root ? "unexpected data" : json_tokener_error_desc(jerr));
		return -EINVAL;
	}
	for (size_t i = end; i < len; i++) {
		if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' && text[i] != '\r') {
			snprintf(err, errlen, "%s: trailing data after the JSON object", label);
			return -EINVAL;
		}
	}
	if (!json_object_is_type(root, json_type_object)) {
		snprintf(err, errlen, "%s: the model must be a JSON object", label);
		return -EINVAL;
	}

	pmu_desc_init(out);
	out->source = PMU_SOURCE_FILE;
	rc = json_fields_decode(&c.jf, model_rows, root, "", out);
	if (rc < 0)
		return rc;
	/* a width without fixed counters describes nothing */
	if (!out->fixed_mask)
		out->fixed_width = 0;
	return 0;
}

static int read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	char why[128];
	int r = fileio_read_all(AT_FDCWD, path, PMU_MODEL_MAX_BYTES, FILEIO_REGULAR, buf, len);

	if (r == -ENOENT || r == -EACCES || r == -ENOTDIR || r == -ELOOP)
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
	else if (r < 0)
		snprintf(err, errlen, "%s: %s", path,
			 fileio_strerror(r, AT_FDCWD, path, PMU_MODEL_MAX_BYTES, why, sizeof(why)));
	/* A directory or a FIFO named as a model is a bad argument. */
	return r == -EBADFD || r == -EISDIR ? -EINVAL : r;
}

static bool looks_like_path(const char *s)
{
	size_t n = strlen(s);

	return strchr(s, '/') || (n >= 5 && strcmp(s + n - 5, ".json") == 0);
}

int pmu_model_load(const char *name_or_path, struct pmu_desc *out, char *err, size_t errlen)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!looks_like_path(name_or_path)) {
		rc = pmu_model_builtin(name_or_path, out);
		if (rc == -ENOENT && err && errlen) {
			const char *sep = "";

			snprintf(err, errlen, "unknown model \"%s\" (built-in models: ", name_or_path);
			for (const char *const *n = pmu_model_builtin_names(); *n; n++, sep = ", ")
				snprintf(err + strlen(err), errlen - strlen(err), "%s%s", sep, *n);
			snprintf(err + strlen(err), errlen - strlen(err),
				 "; a model file needs a '/' or a .json suffix)");
		}
		return rc;
	}
	rc = read_file(name_or_path, &buf, &len, err, errlen);
	if (rc)
		return rc;
	return pmu_model_parse_json(buf, len, name_or_path, out, err, errlen);
}
