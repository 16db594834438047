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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

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

struct jctx {
	const char *label;
	char *err;
	size_t errlen;
};

static int __attribute__((format(printf, 3, 4)))
field_error(const struct jctx *c, const char *field, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s: field \"%s\": %s", c->label, field, msg);
	return -EINVAL;
}

/* Refuses any key not in allowed: a typo must not silently become a
 * default. */
static int check_keys(const struct jctx *c, json_object *obj, const char *prefix,
		      const char *const *allowed)
{
	json_object_object_foreach(obj, key, val) {
		bool known = false;

		(void)val;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				known = true;
		if (!known) {
			char name[160];

			snprintf(name, sizeof(name), "%s%s", prefix, key);
			return field_error(c, name, "unknown field");
		}
	}
	return 0;
}

/* Integers may be JSON numbers or, because masks read better in hex,
 * strings "0x...". Anything fractional, negative where not allowed, or out
 * of range is refused with the range in the message. */
static int get_int(const struct jctx *c, json_object *obj, const char *key, const char *field,
		   long long lo, long long hi, bool hex_ok, bool required, long long def,
		   long long *out)
{
	json_object *v;
	long long x;
	char range[96];

	if (hex_ok)
		snprintf(range, sizeof(range), "must be an integer or \"0x...\" string 0x%llx..0x%llx",
			 lo, hi);
	else
		snprintf(range, sizeof(range), "must be an integer %lld..%lld", lo, hi);

	if (!json_object_object_get_ex(obj, key, &v)) {
		if (required)
			return field_error(c, field, "missing (required; %s)", range);
		*out = def;
		return 0;
	}
	if (json_object_is_type(v, json_type_int)) {
		/* json-c saturates beyond int64, which the range check then
		 * refuses like any other out-of-range value. */
		x = (long long)json_object_get_int64(v);
	} else if (hex_ok && json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		char *end;
		unsigned long long u;

		if (strncmp(s, "0x", 2) != 0 && strncmp(s, "0X", 2) != 0)
			return field_error(c, field, "%s", range);
		errno = 0;
		u = strtoull(s + 2, &end, 16);
		if (s[2] == '\0' || *end != '\0' || errno == ERANGE || u > (unsigned long long)hi)
			return field_error(c, field, "%s", range);
		x = (long long)u;
	} else {
		return field_error(c, field, "%s", range);
	}
	if (x < lo || x > hi)
		return field_error(c, field, "%s", range);
	*out = x;
	return 0;
}

static int get_bool(const struct jctx *c, json_object *obj, const char *key, bool def, bool *out)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, key, &v)) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_boolean))
		return field_error(c, key, "must be true or false");
	*out = json_object_get_boolean(v);
	return 0;
}

static bool name_char_ok(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '-' || ch == '_' || ch == '.';
}

/* Names end up in headers, logs and protocol messages: keep them to a
 * charset that needs no quoting. */
static int get_name(const struct jctx *c, json_object *obj, const char *key, bool required,
		    char *dst, size_t dstlen)
{
	json_object *v;
	const char *s;
	size_t n;

	if (!json_object_object_get_ex(obj, key, &v)) {
		if (required)
			return field_error(c, key, "missing (required; a string of 1..%zu characters A-Z a-z 0-9 . _ -)",
					   dstlen - 1);
		dst[0] = '\0';
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return field_error(c, key, "must be a string of 1..%zu characters A-Z a-z 0-9 . _ -",
				   dstlen - 1);
	s = json_object_get_string(v);
	n = strlen(s);
	if (n == 0 || n >= dstlen || (size_t)json_object_get_string_len(v) != n)
		return field_error(c, key, "must be a string of 1..%zu characters A-Z a-z 0-9 . _ -",
				   dstlen - 1);
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok(s[i]))
			return field_error(c, key, "must be a string of 1..%zu characters A-Z a-z 0-9 . _ -",
					   dstlen - 1);
	memcpy(dst, s, n + 1);
	return 0;
}

static int parse_topology(const struct jctx *c, json_object *root, struct pmu_desc *d)
{
	static const char *const keys[] = { "packages", "cores_per_package", "threads_per_core", NULL };
	json_object *t;
	long long p, cores, thr;
	int rc;

	if (!json_object_object_get_ex(root, "topology", &t))
		return field_error(c, "topology", "missing (required; an object with packages, cores_per_package, threads_per_core)");
	if (!json_object_is_type(t, json_type_object))
		return field_error(c, "topology", "must be an object with packages, cores_per_package, threads_per_core");
	if ((rc = check_keys(c, t, "topology.", keys)))
		return rc;
	if ((rc = get_int(c, t, "packages", "topology.packages", 1, PMU_MAX_CPUS, false, true, 0, &p)) ||
	    (rc = get_int(c, t, "cores_per_package", "topology.cores_per_package", 1, PMU_MAX_CPUS,
			  false, true, 0, &cores)) ||
	    (rc = get_int(c, t, "threads_per_core", "topology.threads_per_core", 1, 8, false, false, 1,
			  &thr)))
		return rc;
	if (p * cores * thr > PMU_MAX_CPUS)
		return field_error(c, "topology", "%lld packages x %lld cores x %lld threads = %lld CPUs, more than the %d supported",
				   p, cores, thr, p * cores * thr, PMU_MAX_CPUS);
	return pmu_model_fill_topology(d, (unsigned)p, (unsigned)cores, (unsigned)thr);
}

static int parse_constraints(const struct jctx *c, json_object *root, struct pmu_desc *d)
{
	static const char *const keys[] = { "event", "event_hi", "umask", "gp_mask", "fixed_mask", NULL };
	long long max_event = d->vendor == PMU_VENDOR_AMD ? 0xfff : 0xff;
	json_object *arr;
	size_t n;

	d->n_constraints = 0;
	if (!json_object_object_get_ex(root, "constraints", &arr))
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return field_error(c, "constraints", "must be an array of at most %d objects",
				   PMU_MAX_CONSTRAINTS);
	n = json_object_array_length(arr);
	if (n > PMU_MAX_CONSTRAINTS)
		return field_error(c, "constraints", "has %zu entries, at most %d allowed", n,
				   PMU_MAX_CONSTRAINTS);
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(arr, i);
		struct pmu_event_constraint *k = &d->constraints[i];
		char prefix[48], f[96];
		long long ev, ev_hi, umask, gp, fixed;
		int rc;

		snprintf(prefix, sizeof(prefix), "constraints[%zu].", i);
		if (!json_object_is_type(e, json_type_object)) {
			snprintf(f, sizeof(f), "constraints[%zu]", i);
			return field_error(c, f, "must be an object with event, gp_mask and optionally event_hi, umask, fixed_mask");
		}
		if ((rc = check_keys(c, e, prefix, keys)))
			return rc;
		snprintf(f, sizeof(f), "%sevent", prefix);
		if ((rc = get_int(c, e, "event", f, 0, max_event, true, true, 0, &ev)))
			return rc;
		snprintf(f, sizeof(f), "%sevent_hi", prefix);
		if ((rc = get_int(c, e, "event_hi", f, ev, max_event, true, false, ev, &ev_hi)))
			return rc;
		snprintf(f, sizeof(f), "%sumask", prefix);
		if ((rc = get_int(c, e, "umask", f, 0, 0xff, true, false, -1, &umask)))
			return rc;
		snprintf(f, sizeof(f), "%sgp_mask", prefix);
		if ((rc = get_int(c, e, "gp_mask", f, 0, (long long)pmu_gp_bits(d->num_gp), true, true, 0,
				  &gp)))
			return rc;
		snprintf(f, sizeof(f), "%sfixed_mask", prefix);
		if ((rc = get_int(c, e, "fixed_mask", f, 0, 0xffff, true, false, 0, &fixed)))
			return rc;
		if ((uint32_t)fixed & ~d->fixed_mask)
			return field_error(c, f, "0x%llx names fixed counters the model lacks (fixed_mask 0x%x)",
					   fixed, d->fixed_mask);
		k->event_lo = (uint16_t)ev;
		k->event_hi = (uint16_t)ev_hi;
		k->umask = (int16_t)umask;
		k->gp_mask = (uint32_t)gp;
		k->fixed_mask = (uint32_t)fixed;
	}
	d->n_constraints = n;
	return 0;
}

static const char *const top_keys[] = {
	"name", "description", "pmu_name", "vendor", "version", "num_gp", "gp_width",
	"fixed_mask", "fixed_width", "events_mask_len", "arch_events_unavailable",
	"anythread_deprecated", "perf_metrics", "full_width_write", "pebs_format",
	"pebs_baseline", "max_precise", "lbr_depth", "nmi_watchdog", "topology",
	"constraints", NULL,
};

static int parse_vendor(const struct jctx *c, json_object *root, struct pmu_desc *d)
{
	json_object *v;
	const char *s;

	if (!json_object_object_get_ex(root, "vendor", &v))
		return field_error(c, "vendor", "missing (required; \"intel\" or \"amd\")");
	s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
	if (strcmp(s, "intel") == 0)
		d->vendor = PMU_VENDOR_INTEL;
	else if (strcmp(s, "amd") == 0)
		d->vendor = PMU_VENDOR_AMD;
	else
		return field_error(c, "vendor", "must be \"intel\" or \"amd\"");
	return 0;
}

static int parse_counters(const struct jctx *c, json_object *root, struct pmu_desc *d)
{
	bool intel = d->vendor == PMU_VENDOR_INTEL;
	long long version, gp, width, fixed, fwidth, mlen, unavail;
	int rc;

	if (intel)
		rc = get_int(c, root, "version", "version", 1, 5, false, true, 0, &version);
	else
		rc = get_int(c, root, "version", "version", 0, 2, false, true, 0, &version);
	if (rc)
		return rc;
	if (!intel && version == 1)
		return field_error(c, "version", "AMD has version 0 (no PerfMonV2) or 2 (PerfMonV2)");
	if ((rc = get_int(c, root, "num_gp", "num_gp", 1, PMU_MAX_GP, false, true, 0, &gp)))
		return rc;
	if (!intel && version == 0 && gp != 4 && gp != 6)
		return field_error(c, "num_gp", "an AMD PMU without PerfMonV2 has 4 (legacy) or 6 (perfctr_core) counters");
	if (!intel && version == 2 && gp > 15)
		return field_error(c, "num_gp", "must be an integer 1..15 (0x80000022 EBX[3:0])");
	if ((rc = get_int(c, root, "gp_width", "gp_width", 8, 64, false, false, 48, &width)))
		return rc;
	if ((rc = get_int(c, root, "fixed_mask", "fixed_mask", 0, (long long)pmu_gp_bits(PMU_MAX_FIXED),
			  true, false, 0, &fixed)))
		return rc;
	if (fixed && !intel)
		return field_error(c, "fixed_mask", "AMD PMUs have no fixed counters: must be 0");
	if (fixed && version < 2)
		return field_error(c, "fixed_mask", "perfmon version 1 has no fixed counters: must be 0");
	if (fixed && version < 5 && ((uint64_t)fixed & ((uint64_t)fixed + 1)))
		return field_error(c, "fixed_mask", "before version 5 fixed counters are contiguous from 0 (0x1, 0x3, 0x7, ...)");
	if ((rc = get_int(c, root, "fixed_width", "fixed_width", 8, 64, false, false, width, &fwidth)))
		return rc;
	if ((rc = get_int(c, root, "events_mask_len", "events_mask_len", 0, intel ? 32 : 0, false, false,
			  intel ? (version >= 5 ? 8 : 7) : 0, &mlen)))
		return rc;
	if ((rc = get_int(c, root, "arch_events_unavailable", "arch_events_unavailable", 0,
			  (long long)pmu_gp_bits((unsigned)mlen), true, false, 0, &unavail)))
		return rc;

	d->version = (unsigned)version;
	d->num_gp = (unsigned)gp;
	d->gp_width = (unsigned)width;
	d->fixed_mask = (uint32_t)fixed;
	d->fixed_width = fixed ? (unsigned)fwidth : 0;
	d->events_mask_len = (unsigned)mlen;
	d->arch_events_unavailable = (uint32_t)unavail;
	return 0;
}

static int parse_features(const struct jctx *c, json_object *root, struct pmu_desc *d)
{
	bool intel = d->vendor == PMU_VENDOR_INTEL;
	long long pebs, precise, lbr;
	int rc;

	if ((rc = get_bool(c, root, "anythread_deprecated", intel && d->version >= 5,
			   &d->anythread_deprecated)) ||
	    (rc = get_bool(c, root, "perf_metrics", false, &d->perf_metrics)) ||
	    (rc = get_bool(c, root, "full_width_write", false, &d->full_width_write)) ||
	    (rc = get_bool(c, root, "pebs_baseline", false, &d->pebs_baseline)) ||
	    (rc = get_bool(c, root, "nmi_watchdog", true, &d->nmi_watchdog)))
		return rc;
	if ((rc = get_int(c, root, "pebs_format", "pebs_format", -1, 15, false, false, -1, &pebs)) ||
	    (rc = get_int(c, root, "max_precise", "max_precise", -1, 3, false, false, -1, &precise)) ||
	    (rc = get_int(c, root, "lbr_depth", "lbr_depth", 0, 64, false, false, 0, &lbr)))
		return rc;
	d->pebs_format = (int)pebs;
	d->max_precise = (int)precise;
	d->lbr_depth = (unsigned)lbr;

	/* Features that exist only on Intel, or only with other features. */
	if (!intel && d->anythread_deprecated)
		return field_error(c, "anythread_deprecated", "Intel only: must be false for AMD");
	if (!intel && d->full_width_write)
		return field_error(c, "full_width_write", "Intel only: must be false for AMD");
	if (!intel && d->pebs_format >= 0)
		return field_error(c, "pebs_format", "Intel only: must be -1 for AMD");
	if (d->perf_metrics && (!intel || !(d->fixed_mask & (1u << 3))))
		return field_error(c, "perf_metrics", "needs an Intel PMU with fixed counter 3 (TOPDOWN.SLOTS) in fixed_mask");
	if (d->pebs_baseline && d->pebs_format < 4)
		return field_error(c, "pebs_baseline", "needs pebs_format 4 or later");
	return 0;
}

/* Free text for people; only its type is checked. */
static int check_description(const struct jctx *c, json_object *root)
{
	json_object *v;

	if (json_object_object_get_ex(root, "description", &v) &&
	    !json_object_is_type(v, json_type_string))
		return field_error(c, "description", "must be a string");
	return 0;
}

int pmu_model_parse_json(const char *text, size_t len, const char *label,
			 struct pmu_desc *out, char *err, size_t errlen)
{
	struct jctx c = { .label = label, .err = err, .errlen = errlen };
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	json_object *root;
	size_t end;
	int rc;

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
	json_tokener_free(tok);
	if (!root || jerr != json_tokener_success) {
		unsigned line = 1;

		for (size_t i = 0; i < end && i < len; i++)
			line += text[i] == '\n';
		snprintf(err, errlen, "%s: line %u: not valid JSON: %s", label, line,
			 root ? "unexpected data" : json_tokener_error_desc(jerr));
		json_object_put(root);
		return -EINVAL;
	}
	for (size_t i = end; i < len; i++) {
		if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' && text[i] != '\r') {
			snprintf(err, errlen, "%s: trailing data after the JSON object", label);
			json_object_put(root);
			return -EINVAL;
		}
	}
	if (!json_object_is_type(root, json_type_object)) {
		snprintf(err, errlen, "%s: the model must be a JSON object", label);
		json_object_put(root);
		return -EINVAL;
	}

	pmu_desc_init(out);
	out->source = PMU_SOURCE_FILE;
	if ((rc = check_keys(&c, root, "", top_keys)) ||
	    (rc = get_name(&c, root, "name", true, out->model, sizeof(out->model))) ||
	    (rc = get_name(&c, root, "pmu_name", false, out->pmu_name, sizeof(out->pmu_name))) ||
	    (rc = parse_vendor(&c, root, out)) ||
	    (rc = parse_counters(&c, root, out)) ||
	    (rc = parse_features(&c, root, out)) ||
	    (rc = parse_constraints(&c, root, out)) ||
	    (rc = parse_topology(&c, root, out)) ||
	    (rc = check_description(&c, root))) {
		json_object_put(root);
		return rc;
	}
	json_object_put(root);
	return 0;
}

static int read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_size > PMU_MODEL_MAX_BYTES) {
		snprintf(err, errlen, "%s: larger than %d bytes", path, PMU_MODEL_MAX_BYTES);
		close(fd);
		return -EFBIG;
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size && (n = read(fd, *buf + got, (size_t)st.st_size - got)) != 0) {
		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
			free(*buf);
			*buf = NULL;
			close(fd);
			return -e;
		}
		got += (size_t)n;
	}
	close(fd);
	(*buf)[got] = '\0';
	*len = got;
	return 0;
}

static bool looks_like_path(const char *s)
{
	size_t n = strlen(s);

	return strchr(s, '/') || (n >= 5 && strcmp(s + n - 5, ".json") == 0);
}

int pmu_model_load(const char *name_or_path, struct pmu_desc *out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	if (err && errlen)
		err[0] = '\0';
	if (!looks_like_path(name_or_path)) {
		rc = pmu_model_builtin(name_or_path, out);
		if (rc == -ENOENT) {
			char names[128] = "";

			for (const char *const *n = pmu_model_builtin_names(); *n; n++)
				snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
					 names[0] ? ", " : "", *n);
			snprintf(err, errlen, "unknown model \"%s\" (built-in models: %s; a model file needs a '/' or a .json suffix)",
				 name_or_path, names);
		}
		return rc;
	}
	rc = read_file(name_or_path, &buf, &len, err, errlen);
	if (rc)
		return rc;
	rc = pmu_model_parse_json(buf, len, name_or_path, out, err, errlen);
	free(buf);
	return rc;
}
