/* SPDX-License-Identifier: MIT */
/* Tests for pmu.c: CPUID and PERF_CAPABILITIES decoding, the boot block,
 * constraint lookup and the guest view. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pmu/pmu.h"
#include "pmu/pmu_model.h"

static const char icelake_block[] =
	"... version:                5\n"
	"... bit width:              48\n"
	"... generic registers:      8\n"
	"... value mask:             0000ffffffffffff\n"
	"... max period:             00007fffffffffff\n"
	"... fixed-purpose events:   4\n"
	"... event mask:             0001000f000000ff\n";

static const char icelake_guest_block[] =
	"... version:                2\n"
	"... bit width:              48\n"
	"... generic registers:      8\n"
	"... value mask:             0000ffffffffffff\n"
	"... max period:             00007fffffffffff\n"
	"... fixed-purpose events:   3\n"
	"... event mask:             00000007000000ff\n";

/* struct pmu_desc carries the CPU inventory: too big for cmocka's stack
 * comfort, so every test takes them from the heap. */
static struct pmu_desc *new_desc(void)
{
	struct pmu_desc *d = malloc(sizeof(*d));

	assert_non_null(d);
	pmu_desc_init(d);
	return d;
}

static struct pmu_desc *builtin(const char *name)
{
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_model_builtin(name, d), 0);
	return d;
}

/* ---- Intel CPUID.0AH ---------------------------------------------------- */

static void test_intel_v2(void **state)
{
	(void)state;
	/* Core 2 class: 2 GP x 40 bits, 3 fixed x 40 bits. ECX is garbage
	 * here on purpose: before version 5 it must be ignored. */
	struct pmu_cpuid_regs r = { .eax = 0x07280202, .ebx = 0, .ecx = 0xff, .edx = 0x0503 };
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_decode_intel_0a(&r, d), 0);
	assert_int_equal(d->vendor, PMU_VENDOR_INTEL);
	assert_int_equal(d->version, 2);
	assert_int_equal(d->num_gp, 2);
	assert_int_equal(d->gp_width, 40);
	assert_int_equal(d->events_mask_len, 7);
	assert_int_equal(d->fixed_mask, 0x7);
	assert_int_equal(d->fixed_width, 40);
	assert_false(d->anythread_deprecated);
	assert_int_equal(d->pebs_format, -1);
	assert_int_equal(pmu_global_ctrl_mask(d), 0x0000000700000003ULL);
	free(d);
}

static void test_intel_v3(void **state)
{
	(void)state;
	/* Nehalem / Sandy Bridge class: 4 GP x 48, 3 fixed x 48. */
	struct pmu_cpuid_regs r = { .eax = 0x07300403, .ebx = 0, .ecx = 0, .edx = 0x0603 };
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_decode_intel_0a(&r, d), 0);
	assert_int_equal(d->version, 3);
	assert_int_equal(d->num_gp, 4);
	assert_int_equal(d->gp_width, 48);
	assert_int_equal(d->fixed_mask, 0x7);
	assert_int_equal(d->fixed_width, 48);
	free(d);
}

static void test_intel_v4_unavailable_events(void **state)
{
	(void)state;
	/* Skylake with SMT: 4 GP per thread. EBX bits 5..8: only the ones
	 * inside the 7-bit vector are events; bits 7 and 8 are not. */
	struct pmu_cpuid_regs r = { .eax = 0x07300404, .ebx = 0x1e0, .ecx = 0xf, .edx = 0x0603 };
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_decode_intel_0a(&r, d), 0);
	assert_int_equal(d->version, 4);
	assert_int_equal(d->num_gp, 4);
	assert_int_equal(d->arch_events_unavailable, 0x60);
	assert_int_equal(d->fixed_mask, 0x7); /* ECX ignored before v5 */
	free(d);
}

static void test_intel_v5_icelake(void **state)
{
	(void)state;
	/* EAX: version 5, 8 GP, 48 bits (0x30), 8-bit event vector.
	 * EDX 0x8603: 3 contiguous fixed, 48 bits (0x30 << 5), bit 15
	 * AnyThread deprecated. ECX 0xf adds fixed counter 3. */
	struct pmu_cpuid_regs r = { .eax = 0x08300805, .ebx = 0, .ecx = 0xf, .edx = 0x8603 };
	struct pmu_desc *d = new_desc();

	assert_int_equal(pmu_decode_intel_0a(&r, d), 0);
	assert_int_equal(d->version, 5);
	assert_int_equal(d->num_gp, 8);
	assert_int_equal(d->gp_width, 48);
	assert_int_equal(d->events_mask_len, 8);
	assert_int_equal(d->fixed_mask, 0xf);
	assert_int_equal(pmu_num_fixed(d), 4);
	assert_int_equal(d->fixed_width, 48);
	assert_true(d->anythread_deprecated);
	assert_false(d->perf_metrics); /* only PERF_CAPABILITIES says so */
	assert_int_equal(pmu_global_ctrl_mask(d), 0x0000000f000000ffULL);

	/* With PERF_CAPABILITIES applied the kernel's block comes out. */
	pmu_apply_perf_capabilities(1ULL << 15, d);
	char buf[512];
	assert_int_equal(pmu_format_boot_block(d, buf, sizeof(buf)), (int)strlen(icelake_block));
	assert_string_equal(buf, icelake_block);
	free(d);
}

static void test_intel_v5_bitmap(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	struct pmu_cpuid_regs no_ecx = { .eax = 0x08300805, .ecx = 0, .edx = 0x8603 };
	struct pmu_cpuid_regs hole = { .eax = 0x08300805, .ecx = 0x9, .edx = 0x8600 };

	assert_int_equal(pmu_decode_intel_0a(&no_ecx, d), 0);
	assert_int_equal(d->fixed_mask, 0x7);
	/* No contiguous run, fixed 0 and 3 only from the bitmap. */
	assert_int_equal(pmu_decode_intel_0a(&hole, d), 0);
	assert_int_equal(d->fixed_mask, 0x9);
	assert_int_equal(pmu_num_fixed(d), 2);
	free(d);
}

static void test_intel_edge_cases(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	struct pmu_cpuid_regs none = { .eax = 0x07300400 };
	struct pmu_cpuid_regs many = { .eax = 0x07302802, .edx = 0x0603 }; /* 40 GP */
	struct pmu_cpuid_regs v1 = { .eax = 0x07280201, .edx = 0x0603 };
	struct pmu_cpuid_regs wide = { .eax = 0x07500802 }; /* 80-bit counters */

	assert_int_equal(pmu_decode_intel_0a(&none, d), -ENODEV);
	assert_int_equal(pmu_decode_intel_0a(&many, d), 0);
	assert_int_equal(d->num_gp, PMU_MAX_GP);
	assert_int_equal(pmu_global_ctrl_mask(d) & 0xffffffffULL, 0xffffffffULL);
	assert_int_equal(pmu_decode_intel_0a(&v1, d), 0);
	assert_int_equal(d->fixed_mask, 0); /* EDX is reserved in version 1 */
	assert_int_equal(pmu_decode_intel_0a(&wide, d), -EINVAL);
	free(d);
}

/* ---- AMD ---------------------------------------------------------------- */

static void test_amd_zen4_perfmon_v2(void **state)
{
	(void)state;
	struct pmu_cpuid_regs e1 = { .ecx = 1u << 23 };
	/* PerfMonV2 + LbrStack; 6 core counters, 16-deep LBR, 4 DF counters. */
	struct pmu_cpuid_regs e22 = { .eax = 0x3, .ebx = 6 | 16 << 4 | 4 << 10 };
	struct pmu_desc *d = new_desc();
	char buf[512];

	assert_int_equal(pmu_decode_amd(&e1, &e22, 0x19, d), 0);
	assert_int_equal(d->vendor, PMU_VENDOR_AMD);
	assert_int_equal(d->version, 2);
	assert_int_equal(d->num_gp, 6);
	assert_int_equal(d->gp_width, 48);
	assert_int_equal(d->fixed_mask, 0);
	assert_int_equal(pmu_global_ctrl_mask(d), 0x3f);
	pmu_format_boot_block(d, buf, sizeof(buf));
	assert_non_null(strstr(buf, "... event mask:             000000000000003f\n"));

	/* A future part with more counters is taken at its word. */
	e22.ebx = 8;
	assert_int_equal(pmu_decode_amd(&e1, &e22, 0x1a, d), 0);
	assert_int_equal(d->num_gp, 8);
	free(d);
}

static void test_amd_pre_zen(void **state)
{
	(void)state;
	struct pmu_cpuid_regs core = { .ecx = 1u << 23 };
	struct pmu_cpuid_regs legacy = { .ecx = 0 };
	struct pmu_cpuid_regs v2 = { .eax = 1, .ebx = 6 };
	struct pmu_desc *d = new_desc();

	/* Family 15h (Bulldozer): perfctr_core, no 0x80000022 leaf. */
	assert_int_equal(pmu_decode_amd(&core, NULL, 0x15, d), 0);
	assert_int_equal(d->version, 0);
	assert_int_equal(d->num_gp, 6);
	/* Family 10h (K10): the four K7 counters. */
	assert_int_equal(pmu_decode_amd(&legacy, NULL, 0x10, d), 0);
	assert_int_equal(d->num_gp, 4);
	assert_int_equal(d->version, 0);
	/* Zen 3: perfctr_core, 0x80000022 present but PerfMonV2 clear. */
	struct pmu_cpuid_regs zen3 = { .eax = 0 };
	assert_int_equal(pmu_decode_amd(&core, &zen3, 0x19, d), 0);
	assert_int_equal(d->num_gp, 6);
	assert_int_equal(d->version, 0);
	/* PerfMonV2 without perfctr_core (a hypervisor hiding one but not
	 * the other) is ignored, as Linux does. */
	assert_int_equal(pmu_decode_amd(&legacy, &v2, 0x19, d), 0);
	assert_int_equal(d->num_gp, 4);
	assert_int_equal(d->version, 0);
	assert_int_equal(pmu_decode_amd(&core, NULL, 5, d), -ENODEV);
	free(d);
}

static void test_cpuid_family(void **state)
{
	(void)state;
	assert_int_equal(pmu_cpuid_family(0x00a10f11), 0x19); /* Zen 4 EPYC */
	assert_int_equal(pmu_cpuid_family(0x00600f12), 0x15);
	assert_int_equal(pmu_cpuid_family(0x000606a6), 6);    /* Ice Lake-SP */
}

static void test_perf_capabilities(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	/* LBR format 5, PEBS trap + arch regs, PEBS format 4, full-width
	 * writes, baseline, perf metrics. */
	uint64_t caps = 0x5 | 1 << 6 | 1 << 7 | 4 << 8 | 1 << 13 | 1 << 14 | 1 << 15;

	pmu_apply_perf_capabilities(caps, d);
	assert_int_equal(d->pebs_format, 4);
	assert_true(d->full_width_write);
	assert_true(d->pebs_baseline);
	assert_true(d->perf_metrics);

	pmu_apply_perf_capabilities(3 << 8 | 1 << 13, d);
	assert_int_equal(d->pebs_format, 3);
	assert_true(d->full_width_write);
	assert_false(d->pebs_baseline);
	assert_false(d->perf_metrics);
	free(d);
}

/* ---- boot block --------------------------------------------------------- */

static void test_boot_block_icelake(void **state)
{
	(void)state;
	struct pmu_desc *d = builtin("icelake-8360y");
	char buf[512], small[16];

	assert_int_equal(pmu_global_ctrl_mask(d), 0x0001000f000000ffULL);
	assert_int_equal(pmu_format_boot_block(d, buf, sizeof(buf)), (int)strlen(icelake_block));
	assert_string_equal(buf, icelake_block);
	/* snprintf semantics: the full length, even when cut short. */
	assert_int_equal(pmu_format_boot_block(d, small, sizeof(small)), (int)strlen(icelake_block));
	assert_int_equal(strlen(small), sizeof(small) - 1);

	d->perf_metrics = false;
	assert_int_equal(pmu_global_ctrl_mask(d), 0x0000000f000000ffULL);
	d->gp_width = 40;
	pmu_format_boot_block(d, buf, sizeof(buf));
	assert_non_null(strstr(buf, "value mask:             000000ffffffffff\n"));
	assert_non_null(strstr(buf, "max period:             0000007fffffffff\n"));
	free(d);
}

/* ---- constraints -------------------------------------------------------- */

static void expect_counters(const struct pmu_desc *d, uint64_t config, uint32_t gp, uint32_t fixed)
{
	uint32_t g = 0xdead, f = 0xdead;

	pmu_event_counters(d, config, &g, &f);
	assert_int_equal(g, gp);
	assert_int_equal(f, fixed);
}

static void test_constraints_icelake(void **state)
{
	(void)state;
	struct pmu_desc *d = builtin("icelake-8360y");
	/* USR | OS | INT | EN around the event: must not change the match. */
	uint64_t flags = 1 << 16 | 1 << 17 | 1 << 20 | 1 << 22;

	expect_counters(d, 0x04a3, 0xff, 0);          /* CYCLE_ACTIVITY.STALLS_TOTAL */
	expect_counters(d, 0x14a3 | flags, 0xff, 0);
	expect_counters(d, 0x01a3, 0xf, 0);           /* other CYCLE_ACTIVITY */
	expect_counters(d, 0x08a3 | flags, 0xf, 0);
	expect_counters(d, 0x00c0 | flags, 0xff, 0x1);/* instructions: fixed0 or any GP */
	expect_counters(d, 0x003c, 0xff, 0x2);        /* cycles: fixed1 or any GP */
	expect_counters(d, 0x0300, 0, 0x4);           /* ref-cycles: fixed2 only */
	expect_counters(d, 0x0400, 0, 0x8);           /* slots: fixed3 only */
	expect_counters(d, 0x8000, 0, 0);             /* metrics: no counter here */
	expect_counters(d, 0x01d1, 0xf, 0);           /* MEM_LOAD_RETIRED.* */
	expect_counters(d, 0x04ef, 0xf, 0);
	expect_counters(d, 0x412e, 0xff, 0);          /* LLC misses: unconstrained */
	expect_counters(d, 0x00c4, 0xff, 0);
	/* Intel bit 32 (IN_TX) is not an event-select extension. */
	expect_counters(d, 0x1000000c4ULL, 0xff, 0);
	expect_counters(d, 0x1000000d1ULL, 0xf, 0);

	/* Lookup clips to counters that exist. */
	d->num_gp = 2;
	expect_counters(d, 0x00c4, 0x3, 0);
	expect_counters(d, 0x01d1, 0x3, 0);
	free(d);
}

static void test_constraints_amd_extended_select(void **state)
{
	(void)state;
	struct pmu_desc *d = builtin("zen4");

	expect_counters(d, 0x0076, 0x3f, 0); /* no constraints on Zen 4 */
	d->constraints[0] = (struct pmu_event_constraint){
		.event_lo = 0x100, .event_hi = 0x1ff, .umask = -1, .gp_mask = 0x3 };
	d->n_constraints = 1;
	/* EventSelect[11:8] lives in config bits 35:32 on AMD. */
	expect_counters(d, (1ULL << 32) | 0x23, 0x3, 0);
	expect_counters(d, 0x23, 0x3f, 0);
	free(d);
}

/* ---- guest view --------------------------------------------------------- */

static void test_guest_default_icelake(void **state)
{
	(void)state;
	struct pmu_desc *host = builtin("icelake-8360y");
	struct pmu_desc *g = new_desc();
	struct pmu_guest_shape s;
	struct pmu_cpuid_regs r;
	char err[256], buf[512];

	pmu_guest_default_shape(host, &s);
	assert_int_equal(s.version, 2);
	assert_int_equal(s.num_gp, 8);
	assert_int_equal(s.fixed_mask, 0x7);
	assert_int_equal(pmu_guest_cpuid(host, &s, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax, 0x08300802);
	assert_int_equal(r.ebx, 0);
	assert_int_equal(r.ecx, 0);       /* KVM does not advertise the bitmap */
	assert_int_equal(r.edx, 0x8603);  /* 3 fixed, 48 bits, AnyThread deprecated */
	assert_int_equal(pmu_guest_desc(host, &r, g), 0);
	assert_false(g->perf_metrics);
	pmu_format_boot_block(g, buf, sizeof(buf));
	assert_string_equal(buf, icelake_guest_block);
	free(g);
	free(host);
}

static void test_guest_options(void **state)
{
	(void)state;
	struct pmu_desc *host = builtin("icelake-8360y");
	struct pmu_desc *g = new_desc();
	struct pmu_cpuid_regs r;
	char err[256];

	struct pmu_guest_shape small = { .num_gp = 4, .fixed_mask = 0x3, .version = 2 };
	assert_int_equal(pmu_guest_cpuid(host, &small, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax, 0x08300402);
	assert_int_equal(r.edx, 0x8602);
	assert_int_equal(pmu_guest_desc(host, &r, g), 0);
	assert_int_equal(pmu_global_ctrl_mask(g), 0x000000030000000fULL);

	/* Version 5 can name fixed counters past a hole, through ECX only. */
	struct pmu_guest_shape v5 = { .num_gp = 8, .fixed_mask = 0xb, .version = 5 };
	assert_int_equal(pmu_guest_cpuid(host, &v5, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax & 0xff, 5);
	assert_int_equal(r.ecx, 0xb);
	assert_int_equal(r.edx & 0x1f, 2);
	assert_int_equal(pmu_guest_desc(host, &r, g), 0);
	assert_int_equal(g->fixed_mask, 0xb);
	assert_int_equal(pmu_num_fixed(g), 3);

	/* Version 1: GP counters only. */
	struct pmu_guest_shape v1 = { .num_gp = 2, .fixed_mask = 0, .version = 1 };
	assert_int_equal(pmu_guest_cpuid(host, &v1, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax, 0x08300201);
	assert_int_equal(r.edx & 0x1fff, 0);

	/* Version 0: what KVM shows with the vPMU off. */
	struct pmu_guest_shape off = { 0 };
	assert_int_equal(pmu_guest_cpuid(host, &off, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax | r.ebx | r.ecx | r.edx, 0);
	assert_int_equal(pmu_guest_desc(host, &r, g), 0);
	assert_int_equal(g->num_gp, 0);
	free(g);
	free(host);
}

static void expect_refused(const struct pmu_desc *host, unsigned gp, uint32_t fixed,
			   unsigned version, const char *needle)
{
	struct pmu_guest_shape s = { .num_gp = gp, .fixed_mask = fixed, .version = version };
	struct pmu_cpuid_regs r;
	char err[256] = "";

	assert_int_equal(pmu_guest_cpuid(host, &s, &r, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("message \"%s\" lacks \"%s\"", err, needle);
}

static void test_guest_refusals(void **state)
{
	(void)state;
	struct pmu_desc *icl = builtin("icelake-8360y");
	struct pmu_desc *zen = builtin("zen4");

	expect_refused(icl, 9, 0x7, 2, "9 general counters refused: the host has 8");
	expect_refused(icl, 0, 0x7, 2, "0 general counters refused");
	expect_refused(icl, 8, 0x10, 5, "fixed mask 0x10 refused: the host has only fixed counters 0xf");
	expect_refused(icl, 8, 0x7, 6, "guest version 6 refused: the host's perfmon version is 5");
	expect_refused(icl, 8, 0x5, 2, "a bitmap needs version 5");
	expect_refused(icl, 8, 0x1, 1, "version 1 has no fixed counters");
	expect_refused(icl, 8, 0, 0, "version 0 means no vPMU");

	expect_refused(zen, 7, 0, 2, "7 general counters refused: the host has 6");
	expect_refused(zen, 6, 0x1, 2, "AMD PMUs have no fixed counters");
	expect_refused(zen, 6, 0, 1, "AMD has version 0");
	expect_refused(zen, 4, 0, 0, "without PerfMonV2 a guest always has 6");

	/* Grants below the host are fine for AMD too. */
	struct pmu_guest_shape s = { .num_gp = 3, .version = 2 };
	struct pmu_cpuid_regs r;
	char err[256];
	assert_int_equal(pmu_guest_cpuid(zen, &s, &r, err, sizeof(err)), 0);
	assert_int_equal(r.eax, 1);
	assert_int_equal(r.ebx, 3);
	free(icl);
	free(zen);
}

static void test_guest_default_shapes(void **state)
{
	(void)state;
	struct pmu_desc *d = new_desc();
	struct pmu_guest_shape s;
	struct pmu_cpuid_regs big = { .eax = 0x08301005, .ecx = 0xff, .edx = 0x8608 }; /* 16 GP, 8 fixed */
	struct pmu_cpuid_regs e1 = { .ecx = 1u << 23 }, e22 = { .eax = 1, .ebx = 12 };
	struct pmu_cpuid_regs r;
	char err[256];

	assert_int_equal(pmu_decode_intel_0a(&big, d), 0);
	d->source = PMU_SOURCE_FILE;
	pmu_guest_default_shape(d, &s);
	assert_int_equal(s.version, 2);
	assert_int_equal(s.num_gp, 8);
	assert_int_equal(s.fixed_mask, 0x7);

	/* A host whose fixed counters have a hole after 0: KVM's clamp must
	 * not invent counter 1. */
	d->fixed_mask = 0xd;
	pmu_guest_default_shape(d, &s);
	assert_int_equal(s.fixed_mask, 0x1);
	assert_int_equal(pmu_guest_cpuid(d, &s, &r, err, sizeof(err)), 0);

	assert_int_equal(pmu_decode_amd(&e1, &e22, 0x1a, d), 0);
	pmu_guest_default_shape(d, &s);
	assert_int_equal(s.version, 2);
	assert_int_equal(s.num_gp, 6);
	assert_int_equal(s.fixed_mask, 0);

	/* No PMU: nothing to grant, and asking anyway says why. */
	pmu_desc_init(d);
	pmu_guest_default_shape(d, &s);
	assert_int_equal(s.num_gp + s.fixed_mask + s.version, 0);
	s.num_gp = 1;
	s.version = 2;
	assert_int_equal(pmu_guest_cpuid(d, &s, &r, err, sizeof(err)), -ENODEV);
	assert_non_null(strstr(err, "no counters"));
	free(d);
}

static void test_cpu_span(void **state)
{
	(void)state;
	struct pmu_desc *d = malloc(sizeof(*d));
	assert_non_null(d);
	pmu_desc_init(d);
	assert_int_equal(pmu_cpu_span(d), 0);
	/* Offline CPUs leave gaps: the span reaches the highest number. */
	d->cpus[0].cpu = 0;
	d->cpus[1].cpu = 5;
	d->cpus[2].cpu = 2;
	d->n_cpus = 3;
	assert_int_equal(pmu_cpu_span(d), 6);
	free(d);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(pmu_vendor_name(PMU_VENDOR_INTEL), "intel");
	assert_string_equal(pmu_vendor_name(PMU_VENDOR_AMD), "amd");
	assert_string_equal(pmu_vendor_name(PMU_VENDOR_UNKNOWN), "unknown");
	assert_string_equal(pmu_source_name(PMU_SOURCE_NONE), "none");
	assert_string_equal(pmu_source_name(PMU_SOURCE_HOST), "host");
	assert_string_equal(pmu_source_name(PMU_SOURCE_BUILTIN), "builtin");
	assert_string_equal(pmu_source_name(PMU_SOURCE_FILE), "file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_intel_v2),
		cmocka_unit_test(test_intel_v3),
		cmocka_unit_test(test_intel_v4_unavailable_events),
		cmocka_unit_test(test_intel_v5_icelake),
		cmocka_unit_test(test_intel_v5_bitmap),
		cmocka_unit_test(test_intel_edge_cases),
		cmocka_unit_test(test_amd_zen4_perfmon_v2),
		cmocka_unit_test(test_amd_pre_zen),
		cmocka_unit_test(test_cpuid_family),
		cmocka_unit_test(test_perf_capabilities),
		cmocka_unit_test(test_boot_block_icelake),
		cmocka_unit_test(test_constraints_icelake),
		cmocka_unit_test(test_constraints_amd_extended_select),
		cmocka_unit_test(test_guest_default_icelake),
		cmocka_unit_test(test_guest_options),
		cmocka_unit_test(test_guest_refusals),
		cmocka_unit_test(test_guest_default_shapes),
		cmocka_unit_test(test_cpu_span),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
