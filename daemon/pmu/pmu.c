/* SPDX-License-Identifier: MIT */
/*
 * pmu: decoding CPUID and PERF_CAPABILITIES into struct pmu_desc, the
 * kernel-style boot block, constraint lookup and the guest view.
 *
 * Register layouts are taken from /work/shared/research/kvm-pmu-facts.md
 * sections 5 (KVM's leaf 0xA), 6.1 (CPUID.0AH), 6.2 (PERF_CAPABILITIES) and 7
 * (AMD), which in turn cite the Intel SDM vol. 3B ch. 20, the Linux 6.12
 * tree (arch/x86/events, arch/x86/kvm) and AMD's 0x80000022 definition.
 */
#include "pmu/pmu.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

void pmu_desc_init(struct pmu_desc *d)
{
	memset(d, 0, sizeof(*d));
	d->pebs_format = -1;
	d->max_precise = -1;
}

static unsigned min_u(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

/* Fixed counters before version 5 are enumerated only as a count, so a mask
 * with a hole cannot be told to such a guest; this gives that count. */
static unsigned trailing_ones(uint32_t m)
{
	return m == UINT32_MAX ? 32 : (unsigned)__builtin_ctz(~m);
}

static bool is_contiguous_from_zero(uint32_t m)
{
	return (m & (m + 1)) == 0;
}

uint64_t pmu_global_ctrl_mask(const struct pmu_desc *d)
{
	uint64_t m = pmu_gp_bits(min_u(d->num_gp, PMU_MAX_GP));

	m |= (uint64_t)(d->fixed_mask & (uint32_t)pmu_gp_bits(PMU_MAX_FIXED)) << 32;
	if (d->perf_metrics)
		m |= 1ULL << 48;
	return m;
}

int pmu_format_boot_block(const struct pmu_desc *d, char *buf, size_t len)
{
	/* The kernel derives both masks from the GP counter width alone; the
	 * max period is half the range so that the sign bit stays clear when
	 * the counter is programmed with -period. */
	uint64_t value_mask = pmu_gp_bits(d->gp_width);

	return snprintf(buf, len,
			"... version:                %u\n"
			"... bit width:              %u\n"
			"... generic registers:      %u\n"
			"... value mask:             %016" PRIx64 "\n"
			"... max period:             %016" PRIx64 "\n"
			"... fixed-purpose events:   %u\n"
			"... event mask:             %016" PRIx64 "\n",
			d->version, d->gp_width, d->num_gp, value_mask, value_mask >> 1,
			pmu_num_fixed(d), pmu_global_ctrl_mask(d));
}

int pmu_decode_intel_0a(const struct pmu_cpuid_regs *leaf0a, struct pmu_desc *out)
{
	unsigned version = leaf0a->eax & 0xff;
	unsigned gp = (leaf0a->eax >> 8) & 0xff;
	unsigned gp_width = (leaf0a->eax >> 16) & 0xff;
	unsigned mask_len = (leaf0a->eax >> 24) & 0xff;
	unsigned nfixed = leaf0a->edx & 0x1f;
	unsigned fixed_width = (leaf0a->edx >> 5) & 0xff;
	uint32_t fixed = 0;

	if (version == 0)
		return -ENODEV; /* no architectural perfmon */
	if (gp_width > 64 || (version >= 2 && fixed_width > 64))
		return -EINVAL;

	out->vendor = PMU_VENDOR_INTEL;
	out->version = version;
	/* PERF_GLOBAL_CTRL has room for 32 GP enables; the kernel clamps the
	 * same way rather than refusing the PMU. */
	out->num_gp = min_u(gp, PMU_MAX_GP);
	out->gp_width = gp_width;
	out->events_mask_len = mask_len;
	out->arch_events_unavailable = leaf0a->ebx & (uint32_t)pmu_gp_bits(min_u(mask_len, 32));

	/* Version 1 has no fixed counters and EDX is reserved. From version 5
	 * ECX is a bitmap that can name counters beyond the contiguous run in
	 * EDX[4:0] (fixed i exists if ECX[i] || EDX[4:0] > i). */
	if (version >= 2)
		fixed = (uint32_t)pmu_gp_bits(min_u(nfixed, 32));
	if (version >= 5)
		fixed |= leaf0a->ecx;
	out->fixed_mask = fixed & (uint32_t)pmu_gp_bits(PMU_MAX_FIXED);
	out->fixed_width = version >= 2 ? fixed_width : 0;
	out->anythread_deprecated = version >= 2 && (leaf0a->edx & (1u << 15));

	/* PERF_CAPABILITIES is a separate MSR: until it is applied, claim none
	 * of what it would enable. */
	out->perf_metrics = false;
	out->full_width_write = false;
	out->pebs_format = -1;
	out->pebs_baseline = false;
	return 0;
}

int pmu_decode_amd(const struct pmu_cpuid_regs *ext80000001,
		   const struct pmu_cpuid_regs *ext80000022, unsigned family,
		   struct pmu_desc *out)
{
	bool perfctr_core = ext80000001 && (ext80000001->ecx & (1u << 23));
	bool perfmon_v2 = ext80000022 && (ext80000022->eax & 1u);

	/* Linux refuses AMD PMUs before family 6 (K7). */
	if (family < 6)
		return -ENODEV;

	out->vendor = PMU_VENDOR_AMD;
	out->gp_width = 48;
	out->fixed_mask = 0;
	out->fixed_width = 0;
	out->events_mask_len = 0;
	out->arch_events_unavailable = 0;
	out->anythread_deprecated = false;
	out->perf_metrics = false;
	out->full_width_write = false;
	out->pebs_format = -1;
	out->pebs_baseline = false;

	/* Like amd_core_pmu_init(): PerfMonV2 is only looked at on top of
	 * perfctr_core, whose absence leaves the four legacy K7 counters. */
	if (!perfctr_core) {
		out->version = 0;
		out->num_gp = 4;
	} else if (!perfmon_v2) {
		out->version = 0;
		out->num_gp = 6;
	} else {
		unsigned n = ext80000022->ebx & 0xf;

		if (n == 0)
			return -EINVAL;
		out->version = 2;
		out->num_gp = n;
	}
	return 0;
}

unsigned pmu_cpuid_family(uint32_t leaf1_eax)
{
	unsigned base = (leaf1_eax >> 8) & 0xf;

	return base == 0xf ? base + ((leaf1_eax >> 20) & 0xff) : base;
}

void pmu_apply_perf_capabilities(uint64_t caps, struct pmu_desc *out)
{
	out->pebs_format = (int)((caps >> 8) & 0xf);
	out->full_width_write = caps & (1ULL << 13);
	out->pebs_baseline = caps & (1ULL << 14);
	out->perf_metrics = caps & (1ULL << 15);
}

void pmu_event_counters(const struct pmu_desc *d, uint64_t config,
			uint32_t *gp_mask, uint32_t *fixed_mask)
{
	uint32_t all_gp = (uint32_t)pmu_gp_bits(min_u(d->num_gp, PMU_MAX_GP));
	unsigned event = config & 0xff;
	int umask = (int)((config >> 8) & 0xff);

	/* Bits 35:32 are EventSelect[11:8] only on AMD; on Intel they are
	 * IN_TX and friends and must not shift the event into another range. */
	if (d->vendor == PMU_VENDOR_AMD)
		event |= (unsigned)((config >> 32) & 0xf) << 8;

	for (size_t i = 0; i < d->n_constraints && i < PMU_MAX_CONSTRAINTS; i++) {
		const struct pmu_event_constraint *c = &d->constraints[i];

		if (event < c->event_lo || event > c->event_hi)
			continue;
		if (c->umask >= 0 && c->umask != umask)
			continue;
		*gp_mask = c->gp_mask & all_gp;
		*fixed_mask = c->fixed_mask & d->fixed_mask;
		return;
	}
	*gp_mask = all_gp;
	*fixed_mask = 0;
}

static bool host_has_counters(const struct pmu_desc *host)
{
	return host->source != PMU_SOURCE_NONE && host->num_gp > 0;
}

void pmu_guest_default_shape(const struct pmu_desc *host, struct pmu_guest_shape *out)
{
	memset(out, 0, sizeof(*out));
	if (!host_has_counters(host))
		return;
	/* kvm_init_pmu_capability(): version <= 2, GP <= 8 (Intel) or 6
	 * (AMD), fixed <= 3. Fixed counters are taken from the contiguous run
	 * only, so the default never names a counter the host lacks. */
	out->version = min_u(host->version, 2);
	if (host->vendor == PMU_VENDOR_AMD) {
		out->num_gp = min_u(host->num_gp, 6);
		return;
	}
	out->num_gp = min_u(host->num_gp, 8);
	if (out->version >= 2)
		out->fixed_mask = (uint32_t)pmu_gp_bits(min_u(trailing_ones(host->fixed_mask), 3));
}

/* Without PerfMonV2 an AMD guest's counter count is implied by perfctr_core,
 * which the guest inherits from the host: 6 with it, 4 without. */
static unsigned amd_legacy_count(const struct pmu_desc *host)
{
	return host->num_gp >= 6 ? 6 : 4;
}

static int guest_cpuid_amd(const struct pmu_desc *host, const struct pmu_guest_shape *s,
			   struct pmu_cpuid_regs *out, char *err, size_t errlen)
{
	if (s->fixed_mask) {
		snprintf(err, errlen, "fixed mask 0x%x refused: AMD PMUs have no fixed counters",
			 s->fixed_mask);
		return -EINVAL;
	}
	if (s->version != 0 && s->version != 2) {
		snprintf(err, errlen, "guest version %u refused: AMD has version 0 (no PerfMonV2) or 2 (PerfMonV2)",
			 s->version);
		return -EINVAL;
	}
	if (s->version > host->version) {
		snprintf(err, errlen, "guest version %u refused: the host's perfmon version is %u",
			 s->version, host->version);
		return -EINVAL;
	}
	if (s->num_gp == 0 || s->num_gp > host->num_gp) {
		snprintf(err, errlen, "%u general counters refused: the host has %u (grant 1..%u)",
			 s->num_gp, host->num_gp, host->num_gp);
		return -EINVAL;
	}
	if (s->version == 0) {
		if (s->num_gp != amd_legacy_count(host)) {
			snprintf(err, errlen, "%u general counters refused: without PerfMonV2 a guest always has %u (set by perfctr_core); use version 2 to choose",
				 s->num_gp, amd_legacy_count(host));
			return -EINVAL;
		}
		memset(out, 0, sizeof(*out));
		return 0;
	}
	out->eax = 1u;                   /* PerfMonV2 */
	out->ebx = s->num_gp & 0xf;      /* NumPerfCtrCore */
	out->ecx = 0;
	out->edx = 0;
	return 0;
}

int pmu_guest_cpuid(const struct pmu_desc *host, const struct pmu_guest_shape *shape,
		    struct pmu_cpuid_regs *out, char *err, size_t errlen)
{
	const struct pmu_guest_shape *s = shape;

	if (err && errlen)
		err[0] = '\0';
	if (!host_has_counters(host)) {
		snprintf(err, errlen, "the host PMU has no counters to grant");
		return -ENODEV;
	}
	if (host->vendor == PMU_VENDOR_AMD)
		return guest_cpuid_amd(host, s, out, err, errlen);

	if (s->version > host->version) {
		snprintf(err, errlen, "guest version %u refused: the host's perfmon version is %u",
			 s->version, host->version);
		return -EINVAL;
	}
	if (s->version == 0) {
		/* What KVM reports with enable_pmu=0: no vPMU at all. */
		if (s->num_gp || s->fixed_mask) {
			snprintf(err, errlen, "guest version 0 means no vPMU: it cannot have counters");
			return -EINVAL;
		}
		memset(out, 0, sizeof(*out));
		return 0;
	}
	if (s->num_gp == 0 || s->num_gp > host->num_gp) {
		/* KVM turns the vPMU off rather than offer zero GP counters. */
		snprintf(err, errlen, "%u general counters refused: the host has %u (grant 1..%u)",
			 s->num_gp, host->num_gp, host->num_gp);
		return -EINVAL;
	}
	if (s->fixed_mask & ~host->fixed_mask) {
		snprintf(err, errlen, "fixed mask 0x%x refused: the host has only fixed counters 0x%x",
			 s->fixed_mask, host->fixed_mask);
		return -EINVAL;
	}
	if (s->version == 1 && s->fixed_mask) {
		snprintf(err, errlen, "fixed mask 0x%x refused: perfmon version 1 has no fixed counters",
			 s->fixed_mask);
		return -EINVAL;
	}
	if (s->version < 5 && !is_contiguous_from_zero(s->fixed_mask)) {
		snprintf(err, errlen, "fixed mask 0x%x refused: version %u enumerates fixed counters only as a count from 0 (a bitmap needs version 5)",
			 s->fixed_mask, s->version);
		return -EINVAL;
	}

	out->eax = (s->version & 0xff) | (s->num_gp & 0xff) << 8 |
		   (host->gp_width & 0xff) << 16 | (host->events_mask_len & 0xff) << 24;
	out->ebx = host->arch_events_unavailable &
		   (uint32_t)pmu_gp_bits(min_u(host->events_mask_len, 32));
	/* KVM leaves ECX zero; only a version 5 guest reads it at all, and
	 * then it is the only way to name a fixed counter past a hole. */
	out->ecx = s->version >= 5 ? s->fixed_mask : 0;
	out->edx = 0;
	if (s->version >= 2)
		out->edx = (trailing_ones(s->fixed_mask) & 0x1f) | (host->fixed_width & 0xff) << 5;
	/* KVM sets AnyThread-deprecated whenever it reports a version. */
	out->edx |= 1u << 15;
	return 0;
}

int pmu_guest_desc(const struct pmu_desc *host, const struct pmu_cpuid_regs *regs,
		   struct pmu_desc *out)
{
	int rc;

	pmu_desc_init(out);
	snprintf(out->model, sizeof(out->model), "guest");
	memcpy(out->pmu_name, host->pmu_name, sizeof(out->pmu_name));
	out->pmu_name[sizeof(out->pmu_name) - 1] = '\0';
	out->source = host->source;
	out->vendor = host->vendor;

	if (host->vendor == PMU_VENDOR_AMD) {
		/* The guest inherits perfctr_core from the host CPUID. */
		struct pmu_cpuid_regs e1 = { .ecx = amd_legacy_count(host) == 6 ? 1u << 23 : 0 };

		return pmu_decode_amd(&e1, regs, 0x17, out);
	}
	rc = pmu_decode_intel_0a(regs, out);
	if (rc == -ENODEV) /* version 0: the guest has no PMU, not an error */
		return 0;
	return rc;
}

const char *pmu_vendor_name(enum pmu_vendor v)
{
	switch (v) {
	case PMU_VENDOR_INTEL:
		return "intel";
	case PMU_VENDOR_AMD:
		return "amd";
	case PMU_VENDOR_UNKNOWN:
		break;
	}
	return "unknown";
}

const char *pmu_source_name(enum pmu_source s)
{
	switch (s) {
	case PMU_SOURCE_NONE:
		return "none";
	case PMU_SOURCE_HOST:
		return "host";
	case PMU_SOURCE_BUILTIN:
		return "builtin";
	case PMU_SOURCE_FILE:
		return "file";
	}
	return "unknown";
}

unsigned pmu_cpu_span(const struct pmu_desc *d)
{
	unsigned span = 0;
	for (unsigned i = 0; i < d->n_cpus; i++)
		if ((unsigned)d->cpus[i].cpu + 1 > span)
			span = (unsigned)d->cpus[i].cpu + 1;
	return span;
}
