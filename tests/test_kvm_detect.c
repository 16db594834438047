/* SPDX-License-Identifier: MIT */
/* vPMU flavour detection: the pure decision on synthetic facts, every
 * fixture host of tests/fixtures/kvm/ with its evidence, the ioctl fact
 * file's refusals, and the real /dev/kvm of this machine (skipped where it
 * cannot be opened). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include <linux/vpmu_kvm.h>

#include "kvm/kvm_detect.h"

static void test_parse_bool(void **state)
{
	(void)state;
	bool v;
	assert_int_equal(kvm_detect_parse_bool("Y\n", &v), 0);
	assert_true(v);
	assert_int_equal(kvm_detect_parse_bool("N", &v), 0);
	assert_false(v);
	assert_int_equal(kvm_detect_parse_bool("1\n", &v), 0);
	assert_true(v);
	assert_int_equal(kvm_detect_parse_bool("0", &v), 0);
	assert_false(v);
	assert_int_equal(kvm_detect_parse_bool("", &v), -EINVAL);
	assert_int_equal(kvm_detect_parse_bool("YES", &v), -EINVAL);
	assert_int_equal(kvm_detect_parse_bool("Y\nx", &v), -EINVAL);
	assert_int_equal(kvm_detect_parse_bool("2", &v), -EINVAL);
}

/* --- the decision on synthetic facts ------------------------------------ */

static const struct kvm_detect_param absent = { .value = KVM_ABSENT, .err = -ENOENT };
static const struct kvm_detect_param yes = { .value = KVM_YES };
static const struct kvm_detect_param no = { .value = KVM_NO };

/* A 6.x Ice Lake host as KVM describes it: perf-based. */
static struct kvm_detect intel_host(void)
{
	struct kvm_detect d = { .dev_ok = true, .api_version = 12, .cap_pmu_capability = 1,
				.leaf0a_present = true, .guest_version = 2, .guest_gp = 8,
				.enable_pmu = yes, .mediated_kvm = absent, .mediated_intel = absent,
				.mediated_amd = absent, .pmu_cpu = true };
	strcpy(d.vendor, "GenuineIntel");
	return d;
}

static enum kvm_vpmu_flavour decide(const struct kvm_detect *d, char *why)
{
	return kvm_detect_decide(d, why, KVM_DETECT_WHY_MAX);
}

static void test_decide_leaf0a_first(void **state)
{
	(void)state;
	char why[KVM_DETECT_WHY_MAX];
	struct kvm_detect d = intel_host();

	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_string_equal(why, "KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests PMU version 2 with 8 general "
				 "counters; no enable_mediated_pmu is Y");
	/* 5.15: no enable_pmu parameter and capability 212 unknown (0), yet
	 * leaf 0xA shows the vPMU: perf-based, not none. */
	d.enable_pmu = absent;
	d.cap_pmu_capability = 0;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	/* Capability 212 only as the switch it is: 1 with a zero leaf 0xA is
	 * still no PMU to give (leaf 0xA decides). */
	d = intel_host();
	d.guest_version = 0;
	d.guest_gp = 0;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	assert_string_equal(why, "KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests no PMU (version 0, 0 general counters)");
	/* A version without general counters is no vPMU either. */
	d.guest_version = 2;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	d.leaf0a_present = false;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	assert_non_null(strstr(why, "lists no leaf 0xA"));
}

static void test_decide_switches(void **state)
{
	(void)state;
	char why[KVM_DETECT_WHY_MAX];
	struct kvm_detect d = intel_host();

	d.enable_pmu = no;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	assert_string_equal(why, "kvm.enable_pmu=N");

	/* Hybrid outranks everything KVM says: it turned its vPMU off. */
	d = intel_host();
	d.pmu_cpu = false;
	d.pmu_cpu_core = d.pmu_cpu_atom = d.hybrid = true;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	assert_non_null(strstr(why, "hybrid CPU"));

	/* enable_mediated_pmu, wherever the kernel keeps it. */
	d = intel_host();
	d.mediated_intel = yes;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_MEDIATED);
	assert_non_null(strstr(why, "; kvm_intel.enable_mediated_pmu=Y"));
	d = intel_host();
	d.mediated_amd = yes;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_MEDIATED);
	assert_non_null(strstr(why, "; kvm_amd.enable_mediated_pmu=Y"));
	d = intel_host();
	d.mediated_kvm = yes;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_MEDIATED);
	assert_non_null(strstr(why, "; kvm.enable_mediated_pmu=Y"));
	d.mediated_kvm = no;
	d.mediated_intel = no;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	/* The parameter without a vPMU to mediate is no vPMU. */
	d = intel_host();
	d.mediated_intel = yes;
	d.enable_pmu = no;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);

	/* No /dev/kvm: unknown, unless the parameter says none. */
	d = intel_host();
	d.dev_ok = false;
	d.dev_errno = ENOENT;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_UNKNOWN);
	assert_string_equal(why, "/dev/kvm could not be opened: No such file or directory");
	d.enable_pmu = no;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_NONE);
}

static void test_decide_cpuid_failed(void **state)
{
	(void)state;
	char why[KVM_DETECT_WHY_MAX];
	struct kvm_detect d = intel_host();

	d.cpuid_err = -E2BIG;
	d.leaf0a_present = false;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_non_null(strstr(why, "KVM_CAP_PMU_CAPABILITY=1 says enable_pmu is on"));
	d.cap_pmu_capability = 0;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_non_null(strstr(why, "but kvm.enable_pmu=Y"));
	d.enable_pmu = absent;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_UNKNOWN);
	assert_non_null(strstr(why, "neither kvm.enable_pmu nor KVM_CAP_PMU_CAPABILITY"));
}

static void test_decide_amd(void **state)
{
	(void)state;
	char why[KVM_DETECT_WHY_MAX];
	struct kvm_detect d = intel_host();

	strcpy(d.vendor, "AuthenticAMD");
	d.guest_version = d.guest_gp = 0; /* KVM zeroes leaf 0xA on AMD */
	d.amd_core_counters = 6;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_non_null(strstr(why, "leaf 0x80000022 offers guests PerfMonV2 with 6 core counters"));
	d.amd_core_counters = 0;
	d.amd_perfctr_core = true;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_non_null(strstr(why, "PerfCtrExtCore"));
	d.amd_perfctr_core = false;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_PERF);
	assert_non_null(strstr(why, "4 legacy counters"));
	d.cap_pmu_capability = 0;
	d.enable_pmu = absent;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
	d.amd_core_counters = 6;
	d.mediated_amd = yes;
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_MEDIATED);
	/* The same zero leaf 0xA on Intel is no vPMU. */
	strcpy(d.vendor, "GenuineIntel");
	assert_int_equal(decide(&d, why), KVM_VPMU_FLAVOUR_NONE);
}

static void test_words(void **state)
{
	(void)state;
	for (int f = KVM_VPMU_FLAVOUR_UNKNOWN; f <= KVM_VPMU_FLAVOUR_MEDIATED; f++) {
		assert_string_not_equal(kvm_detect_flavour_name(f), "invalid");
		assert_string_not_equal(kvm_detect_flavour_guest_impact(f), "invalid");
		assert_string_not_equal(kvm_detect_flavour_host_impact(f), "invalid");
		/* One sentence each: the report prints them on one line. */
		assert_null(strchr(kvm_detect_flavour_guest_impact(f), '\n'));
		assert_null(strchr(kvm_detect_flavour_host_impact(f), '\n'));
	}
	assert_string_equal(kvm_detect_flavour_name(KVM_VPMU_FLAVOUR_PERF), "perf-based");
	assert_non_null(strstr(kvm_detect_flavour_host_impact(KVM_VPMU_FLAVOUR_MEDIATED), "exclude_guest"));
	assert_non_null(strstr(kvm_detect_flavour_host_impact(KVM_VPMU_FLAVOUR_PERF),
			       "never adds a pinned event that would displace one"));
	assert_non_null(strstr(kvm_detect_flavour_host_impact(KVM_VPMU_FLAVOUR_NONE), "every counter is the host's"));
	assert_non_null(strstr(kvm_detect_flavour_guest_impact(KVM_VPMU_FLAVOUR_MEDIATED), "whole PMU"));
	assert_non_null(strstr(kvm_detect_flavour_guest_impact(KVM_VPMU_FLAVOUR_PERF), "task-pinned"));
	assert_string_equal(kvm_detect_flavour_name((enum kvm_vpmu_flavour)42), "invalid");
}

/* --- fixture hosts ------------------------------------------------------- */

struct host {
	struct kvm_detect d;
	int rc;
	char report[8192];
};

static void run_host(const char *name, struct host *h)
{
	char root[1024], facts[1100];

	fixture_path(root, sizeof(root), "kvm/");
	strncat(root, name, sizeof(root) - strlen(root) - 1);
	snprintf(facts, sizeof(facts), "%s/kvm-ioctls", root);
	struct kvm_detect_opts o = { .dev_path = "/nonexistent/kvm", .sysfs_root = root, .procfs_root = root,
				     .ioctl_facts_path = facts };
	h->rc = kvm_detect_run(&o, &h->d);
	int n = kvm_detect_format(&h->d, h->report, sizeof(h->report));
	assert_true(n > 0 && (size_t)n < sizeof(h->report));
	assert_int_equal((size_t)n, strlen(h->report));
	/* The report names its flavour first, and says whose answers it read. */
	assert_true(strncmp(h->report, "kvm: vPMU flavour: ", 19) == 0);
	assert_non_null(strstr(h->report, "kvm: evidence (ioctl answers from a test fixture file, not this host's /dev/kvm):\n"));
}

static void expect_line(const struct host *h, const char *line)
{
	char want[1024];
	snprintf(want, sizeof(want), "\n%s\n", line);
	/* The report starts with a line of its own. */
	bool first = strncmp(h->report, want + 1, strlen(want + 1)) == 0;
	if (!first && !strstr(h->report, want)) {
		/* cmocka cuts long messages: the report goes to stdout. */
		printf("%s", h->report);
		fail_msg("no line \"%s\" in the report above", line);
	}
}

static void expect_no(const struct host *h, const char *text)
{
	if (strstr(h->report, text)) {
		printf("%s", h->report);
		fail_msg("\"%s\" should not be in the report above", text);
	}
}

static void test_host_5_15(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v5.15-icelake-perf", h);
	assert_int_equal(h->rc, 0);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_PERF);
	assert_int_equal(h->d.cap_pmu_capability, 0);
	assert_int_equal(h->d.enable_pmu.err, -ENOENT);
	assert_false(h->d.hybrid);
	assert_true(h->d.nmi_watchdog_perf);
	assert_null(h->d.mediated_param);
	/* The whole report, as vpmud --print-kvm shows it. */
	const char *want =
		"kvm: vPMU flavour: perf-based (KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests PMU version 2 with 8 "
		"general counters; no enable_mediated_pmu is Y)\n"
		"kvm: evidence (ioctl answers from a test fixture file, not this host's /dev/kvm):\n"
		"kvm:   open /dev/kvm: ok\n"
		"kvm:   KVM_GET_API_VERSION: 12\n"
		"kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x0: vendor GenuineIntel\n"
		"kvm:   KVM_GET_SUPPORTED_CPUID leaf 0xA: eax=08300802 ebx=00000000 ecx=00000000 edx=00008603 "
		"(version 2, 8 general x 48 bits, 3 fixed x 48 bits)\n"
		"kvm:   KVM_CHECK_EXTENSION(KVM_CAP_PMU_CAPABILITY=212): 0 (no per-VM opt-out: enable_pmu is off, or "
		"the kernel predates 5.18; not by itself a sign of no vPMU)\n"
		"kvm:   KVM_CHECK_EXTENSION(KVM_CAP_PMU_EVENT_FILTER=173): 1\n"
		"kvm:   KVM_CHECK_EXTENSION(KVM_CAP_PMU_EVENT_MASKED_EVENTS=226): 0\n"
		"kvm:   KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES=0x7670): 0 (no KVM half of the vpmu extension)\n"
		"kvm:   /sys/module/kvm/parameters/enable_pmu: absent\n"
		"kvm:   /sys/module/kvm/parameters/enable_mediated_pmu: absent\n"
		"kvm:   /sys/module/kvm_intel/parameters/enable_mediated_pmu: absent\n"
		"kvm:   /sys/module/kvm_amd/parameters/enable_mediated_pmu: absent\n"
		"kvm:   /sys/bus/event_source/devices/cpu: present (a core PMU)\n"
		"kvm:   /sys/bus/event_source/devices/cpu_core: absent\n"
		"kvm:   /sys/bus/event_source/devices/cpu_atom: absent\n"
		"kvm:   /sys/bus/event_source/devices/cpu/caps/guest_reserve: absent (perf cannot reserve counters "
		"for guests)\n"
		"kvm:   /proc/sys/kernel/nmi_watchdog: 1\n"
		"kvm:   /proc/sys/kernel/watchdog: 1\n"
		"kvm:   NMI watchdog: the perf one (inferred: nmi_watchdog on, a core PMU): a CPU-pinned cycles event "
		"holds a counter on every CPU\n"
		"kvm: for guests: each guest PMC the guest enables is a task-pinned perf event on its vCPU thread; "
		"perf picks the counter, and with none free the guest silently counts nothing until it reprograms "
		"the PMC\n"
		"kvm: for host sessions: guest PMCs are task-pinned perf events perf places itself; vpmud keeps "
		"room for them and never adds a pinned event that would displace one\n"
		"kvm: note: the perf NMI watchdog is CPU-pinned: it outranks guest PMCs for one counter on every CPU\n"
		"kvm: vpmu extension: absent (stock kernel: guest routes are advisory)\n";
	assert_string_equal(h->report, want);
	free(h);
}

static void test_host_6_12_perf(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v6.12-icelake-perf", h);
	assert_int_equal(h->rc, 0);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_PERF);
	assert_false(h->d.nmi_watchdog_perf);
	assert_int_equal(h->d.enable_pmu.value, KVM_YES);
	expect_line(h, "kvm:   KVM_CHECK_EXTENSION(KVM_CAP_PMU_CAPABILITY=212): 1 (a VMM may opt a VM out of the vPMU)");
	expect_line(h, "kvm:   /sys/module/kvm/parameters/enable_pmu: Y");
	expect_line(h, "kvm:   /proc/sys/kernel/nmi_watchdog: 0");
	expect_line(h, "kvm:   NMI watchdog: holds no counter (nmi_watchdog=0)");
	expect_no(h, "kvm: note:");
	expect_no(h, "kvm: warning:");
	free(h);
}

static void test_host_zen4(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v6.8-zen4-perf", h);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_PERF);
	assert_string_equal(h->d.vendor, "AuthenticAMD");
	assert_int_equal(h->d.amd_core_counters, 6);
	assert_true(h->d.amd_perfctr_core);
	expect_line(h, "kvm: vPMU flavour: perf-based (KVM_GET_SUPPORTED_CPUID leaf 0x80000022 offers guests "
		       "PerfMonV2 with 6 core counters; no enable_mediated_pmu is Y)");
	expect_line(h, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x80000001: eax=00000000 ebx=00000000 ecx=00800000 "
		       "edx=00000000 (PerfCtrExtCore: 6 core counters)");
	expect_line(h, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0x80000022: eax=00000001 ebx=00000006 ecx=00000000 "
		       "edx=00000000 (PerfMonV2, 6 core counters)");
	free(h);
}

static void test_host_mediated_watchdog(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v7.0-icelake-mediated-watchdog", h);
	assert_int_equal(h->rc, 0);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_MEDIATED);
	assert_string_equal(h->d.mediated_param, "kvm_intel.enable_mediated_pmu");
	assert_true(h->d.nmi_watchdog_perf);
	expect_line(h, "kvm: vPMU flavour: mediated (KVM_GET_SUPPORTED_CPUID leaf 0xA offers guests PMU version 2 "
		       "with 8 general counters; kvm_intel.enable_mediated_pmu=Y)");
	expect_line(h, "kvm:   /sys/module/kvm_intel/parameters/enable_mediated_pmu: Y");
	expect_line(h, "kvm:   /sys/module/kvm/parameters/enable_mediated_pmu: absent");
	expect_line(h, "kvm: for guests: the guest owns the whole PMU while its vCPU runs (switched at VM entry "
		       "and exit); a VM without an in-kernel irqchip silently gets no PMU");
	expect_line(h, "kvm: for host sessions: host events count host time only (vpmud opens them with "
		       "exclude_guest); the guest owns the whole PMU while its vCPU runs");
	expect_line(h, "kvm: warning: the perf NMI watchdog holds a counter on every CPU: the first vCPU of every "
		       "VM fails with EBUSY until kernel.nmi_watchdog=0");
	free(h);
}

static void test_host_mediated_in_kvm(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v7.x-icelake-mediated-kvm-param", h);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_MEDIATED);
	assert_string_equal(h->d.mediated_param, "kvm.enable_mediated_pmu");
	assert_false(h->d.nmi_watchdog_perf);
	expect_line(h, "kvm:   /sys/module/kvm/parameters/enable_mediated_pmu: Y");
	expect_line(h, "kvm:   /sys/module/kvm_intel/parameters/enable_mediated_pmu: absent");
	expect_line(h, "kvm:   NMI watchdog: holds no counter (nmi_watchdog=0)");
	expect_no(h, "kvm: warning:");
	free(h);
}

static void test_host_enable_pmu_off(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v6.12-icelake-enable-pmu-off", h);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_NONE);
	expect_line(h, "kvm: vPMU flavour: none (kvm.enable_pmu=N)");
	expect_line(h, "kvm:   /sys/module/kvm/parameters/enable_pmu: N");
	expect_line(h, "kvm:   KVM_GET_SUPPORTED_CPUID leaf 0xA: eax=00000000 ebx=00000000 ecx=00000000 "
		       "edx=00000000 (version 0, 0 general x 0 bits, 0 fixed x 0 bits)");
	expect_line(h, "kvm: for guests: guests get no PMU: KVM gives them no counters");
	expect_line(h, "kvm: for host sessions: every counter is the host's, guest time included");
	/* The watchdog is reported, but it is nobody's problem here. */
	assert_true(h->d.nmi_watchdog_perf);
	expect_no(h, "kvm: note:");
	expect_no(h, "kvm: warning:");
	free(h);
}

static void test_host_hybrid(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v6.12-alderlake-hybrid", h);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_NONE);
	assert_true(h->d.hybrid);
	assert_true(h->d.nmi_watchdog_perf);
	expect_line(h, "kvm: vPMU flavour: none (hybrid CPU (perf PMUs cpu_core/cpu_atom instead of cpu): KVM "
		       "disables its vPMU)");
	expect_line(h, "kvm:   /sys/bus/event_source/devices/cpu: absent");
	expect_line(h, "kvm:   /sys/bus/event_source/devices/cpu_core: present (hybrid)");
	expect_line(h, "kvm:   /sys/bus/event_source/devices/cpu_atom: present (hybrid)");
	free(h);
}

static void test_host_no_kvm(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("no-kvm", h);
	assert_int_equal(h->rc, -ENOENT);
	assert_false(h->d.dev_ok);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_UNKNOWN);
	expect_line(h, "kvm: vPMU flavour: unknown (/dev/kvm could not be opened: No such file or directory)");
	expect_line(h, "kvm:   open /dev/kvm: failed (No such file or directory)");
	expect_line(h, "kvm:   /sys/module/kvm/parameters/enable_pmu: absent");
	expect_line(h, "kvm: for host sessions: no KVM to share with: every counter is the host's");
	/* Nothing was asked of a device that is not there. */
	expect_no(h, "KVM_CHECK_EXTENSION");
	expect_no(h, "vpmu extension");
	free(h);
}

/* A kernel with both halves of the extension (hypothetical): the flavour is
 * still the vPMU's, and the report says routes can be enforced. Each half
 * alone is "incomplete", and neither is enough for kvm_detect_has_extension. */
static void test_host_vpmu_extension(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("vpmu-v2-icelake-uniform", h);
	assert_int_equal(h->rc, 0);
	assert_int_equal(h->d.flavour, KVM_VPMU_FLAVOUR_MEDIATED);
	assert_int_equal(h->d.cap_vpmu_routes, 1);
	assert_int_equal(h->d.reserve_caps.err, 0);
	assert_int_equal(h->d.reserve_caps.value, VPMU_RESERVE_CAP_UNIFORM);
	assert_true(kvm_detect_has_extension(&h->d));
	expect_line(h, "kvm:   KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES=0x7670): 1 (the vpmu extension's KVM half: "
		       "route fds)");
	expect_line(h, "kvm:   /sys/bus/event_source/devices/cpu/caps/guest_reserve: 1 (perf can reserve counters "
		       "for guests, one mask for every CPU)");
	expect_line(h, "kvm: vpmu extension: present (guest routes can be enforced)");

	struct kvm_detect d = h->d;
	char buf[8192];
	d.reserve_caps.err = -ENOENT;
	assert_false(kvm_detect_has_extension(&d));
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\nkvm: vpmu extension: incomplete (KVM_CAP_VPMU_ROUTES without perf's "
				    "guest_reserve: guest routes are advisory)\n"));
	assert_non_null(strstr(buf, "caps/guest_reserve: absent (perf cannot reserve counters for guests)\n"));
	d = h->d;
	d.cap_vpmu_routes = 0;
	d.reserve_caps.value = VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU;
	assert_false(kvm_detect_has_extension(&d));
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\nkvm: vpmu extension: incomplete (perf's guest_reserve without "
				    "KVM_CAP_VPMU_ROUTES: guest routes are advisory)\n"));
	assert_non_null(strstr(buf, "guest_reserve: 3 (perf can reserve counters for guests, per CPU)\n"));
	/* A caps value without the uniform mode is no perf half (D12): every
	 * perf half takes one mask for every CPU. */
	d = h->d;
	d.reserve_caps.value = 0;
	assert_false(kvm_detect_has_extension(&d));
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "guest_reserve: 0 (no uniform mode: not a perf half vpmu knows)\n"));
	assert_non_null(strstr(buf, "vpmu extension: incomplete (KVM_CAP_VPMU_ROUTES without"));
	d.reserve_caps.value = VPMU_RESERVE_CAP_PER_CPU;
	assert_false(kvm_detect_has_extension(&d));
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "guest_reserve: 2 (no uniform mode: not a perf half vpmu knows)\n"));
	free(h);
}

/* --- the fact file and sysfs content refused ------------------------------ */

static char *write_temp(const char *content)
{
	char *path = strdup("/tmp/vpmu-kvm-facts-XXXXXX");
	assert_non_null(path);
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return path;
}

static void test_fact_file_refusals(void **state)
{
	(void)state;
	const struct {
		const char *text;
		unsigned line;
	} bad[] = {
		{ "open ok\napi_version twelve\n", 2 },
		{ "open maybe\n", 1 },
		{ "open error ENOSUCH\n", 1 },
		{ "open ok\ncap 21 1\n", 2 },             /* not a capability detection asks */
		{ "open ok\ncap 212\n", 2 },
		{ "open ok\ncap 212 -1\n", 2 },
		{ "open ok\ncpuid 0xa 1 2 3\n", 2 },
		{ "open ok\ncpuid 0xa 1 2 3 0x100000000\n", 2 },
		{ "open ok\nioctl 1\n", 2 },
		{ "# no open line\napi_version 12\n", 3 }, /* reported past the end */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *path = write_temp(bad[i].text);
		struct kvm_detect d = { 0 };
		unsigned line = 0;
		int r = kvm_detect_read_ioctl_facts(path, &d, &line);
		if (r != -EINVAL || line != bad[i].line)
			fail_msg("fact file %zu (%s): got %d at line %u, want -EINVAL at line %u", i, bad[i].text, r,
				 line, bad[i].line);
		/* Through kvm_detect_run: unknown, with the line named. */
		struct kvm_detect_opts o = { .sysfs_root = "/nonexistent", .procfs_root = "/nonexistent",
					     .ioctl_facts_path = path };
		assert_int_equal(kvm_detect_run(&o, &d), -EINVAL);
		assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_UNKNOWN);
		char want[64];
		snprintf(want, sizeof(want), "ioctl fact file line %u not understood", bad[i].line);
		assert_string_equal(d.why, want);
		unlink(path);
		free(path);
	}
	struct kvm_detect d;
	struct kvm_detect_opts o = { .ioctl_facts_path = "/nonexistent/kvm-ioctls" };
	assert_int_equal(kvm_detect_run(&o, &d), -ENOENT);
	assert_string_equal(d.why, "ioctl fact file unreadable: No such file or directory");

	/* What is accepted: errors, "absent", comments, blank lines. */
	char *path = write_temp("# a host\n\nopen ok  # it opens\napi_version error EIO\ncap 212 error EINVAL\n"
				"cpuid error E2BIG\ncpuid 0xa absent\n");
	unsigned line = 99;
	assert_int_equal(kvm_detect_read_ioctl_facts(path, &d, &line), 0);
	assert_int_equal(line, 0);
	assert_true(d.dev_ok);
	assert_true(d.ioctls_from_fixture);
	assert_int_equal(d.api_version, -EIO);
	assert_int_equal(d.cap_pmu_capability, -EINVAL);
	assert_int_equal(d.cap_pmu_event_filter, 0); /* unlisted: what a kernel says for an unknown one */
	assert_int_equal(d.cpuid_err, -E2BIG);
	assert_false(d.leaf0a_present);
	unlink(path);
	free(path);
}

static void put(const char *root, const char *rel, const char *content)
{
	char path[512], dir[512];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(dir, 0755);
		*p = '/';
	}
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

/* Files whose content is not what the kernel writes are reported as such,
 * never taken as a value. */
static void test_sysfs_content_refused(void **state)
{
	(void)state;
	char root[] = "/tmp/vpmu-detect-XXXXXX";
	assert_non_null(mkdtemp(root));
	put(root, "sys/module/kvm/parameters/enable_pmu", "maybe\n");
	put(root, "sys/module/kvm_amd/parameters/enable_mediated_pmu", "Y\n");
	put(root, "sys/module/kvm_intel/parameters/enable_mediated_pmu", "YYYYYYYYYYYYYYYYYYYYYYYY\n");
	put(root, "proc/sys/kernel/nmi_watchdog", "1x\n");
	put(root, "sys/bus/event_source/devices/cpu/type", "4\n");
	put(root, "sys/bus/event_source/devices/cpu/caps/guest_reserve", "uniform\n");
	char facts[600];
	snprintf(facts, sizeof(facts), "%s/kvm-ioctls", root);
	put(root, "kvm-ioctls", "open ok\ncap 212 1\ncpuid 0xa 0x08300802 0 0 0x8603\n");
	struct kvm_detect d;
	struct kvm_detect_opts o = { .sysfs_root = root, .procfs_root = root, .ioctl_facts_path = facts };
	assert_int_equal(kvm_detect_run(&o, &d), 0);
	assert_int_equal(d.enable_pmu.value, KVM_ABSENT);
	assert_int_equal(d.enable_pmu.err, -EINVAL);
	assert_int_equal(d.mediated_intel.err, -EINVAL);
	assert_int_equal(d.mediated_amd.value, KVM_YES);
	assert_int_equal(d.nmi_watchdog.err, -EINVAL);
	assert_int_equal(d.watchdog.err, -ENOENT);
	assert_false(d.nmi_watchdog_perf);
	assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_MEDIATED);
	char buf[8192];
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\nkvm:   /sys/module/kvm/parameters/enable_pmu: not understood (not Y/N)\n"));
	assert_non_null(strstr(buf, "\nkvm:   /proc/sys/kernel/nmi_watchdog: not understood (not a number)\n"));
	assert_non_null(strstr(buf, "\nkvm:   /proc/sys/kernel/watchdog: absent\n"));
	assert_non_null(strstr(buf, "\nkvm:   NMI watchdog: holds no counter (no nmi_watchdog sysctl)\n"));
	assert_int_equal(d.reserve_caps.err, -EINVAL);
	assert_non_null(strstr(buf, "\nkvm:   /sys/bus/event_source/devices/cpu/caps/guest_reserve: not understood "
				    "(not a decimal mask)\n"));
	put(root, "sys/bus/event_source/devices/cpu/caps/guest_reserve", "-1\n");
	assert_int_equal(kvm_detect_run(&o, &d), 0);
	assert_int_equal(d.reserve_caps.err, -EINVAL);
	assert_false(kvm_detect_has_extension(&d));

	/* Both sysctls on without a core PMU: no counter to hold. */
	put(root, "proc/sys/kernel/nmi_watchdog", "1\n");
	put(root, "proc/sys/kernel/watchdog", "1\n");
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/sys/bus'", root);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(kvm_detect_run(&o, &d), 0);
	assert_false(d.nmi_watchdog_perf);
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "\nkvm:   NMI watchdog: holds no counter (no core PMU to count on)\n"));
	/* watchdog=0 stops the hard-lockup detector too. */
	put(root, "sys/bus/event_source/devices/cpu/type", "4\n");
	assert_int_equal(kvm_detect_run(&o, &d), 0);
	assert_true(d.nmi_watchdog_perf);
	put(root, "proc/sys/kernel/watchdog", "0\n");
	assert_int_equal(kvm_detect_run(&o, &d), 0);
	assert_false(d.nmi_watchdog_perf);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* snprintf semantics: the length needed, whatever the room. */
static void test_format_lengths(void **state)
{
	(void)state;
	struct host *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	run_host("v7.0-icelake-mediated-watchdog", h);
	int need = kvm_detect_format(&h->d, NULL, 0);
	assert_int_equal(need, (int)strlen(h->report));
	char small[40];
	assert_int_equal(kvm_detect_format(&h->d, small, sizeof(small)), need);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_memory_equal(small, h->report, sizeof(small) - 1);
	free(h);
}

/* This machine: a stock kernel, so the extension is absent; the rest is
 * checked for consistency with sysfs rather than against fixed values. */
static void test_real_dev_kvm(void **state)
{
	(void)state;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		skip();
	struct kvm_detect d;
	assert_int_equal(kvm_detect_run(NULL, &d), 0);
	char buf[8192];
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	printf("%s", buf);
	assert_true(d.dev_ok);
	assert_false(d.ioctls_from_fixture);
	assert_null(strstr(buf, "test fixture"));
	assert_int_equal(d.api_version, 12);   /* KVM_API_VERSION since 2.6.22 */
	assert_int_equal(d.cap_vpmu_routes, 0);
	assert_false(kvm_detect_has_extension(&d));
	assert_true(d.cap_pmu_event_filter >= 0);
	assert_true(d.cap_masked_events >= 0);
	assert_true(d.cap_pmu_capability >= 0);
	assert_int_equal(d.cpuid_err, 0);
	assert_true(d.vendor[0] != '\0');
	if (d.enable_pmu.value == KVM_NO) {
		/* KVM answers both probes with "no PMU" when the parameter is off. */
		assert_int_equal(d.cap_pmu_capability, 0);
		assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_NONE);
		if (!d.hybrid)
			assert_string_equal(d.why, "kvm.enable_pmu=N");
		if (d.leaf0a_present) {
			for (int i = 0; i < 4; i++)
				assert_int_equal(d.leaf0a[i], 0);
		}
	} else if (d.enable_pmu.value == KVM_YES) {
		assert_int_equal(d.cap_pmu_capability, 1);
		assert_true(d.flavour == KVM_VPMU_FLAVOUR_PERF || d.flavour == KVM_VPMU_FLAVOUR_MEDIATED ||
			    d.flavour == KVM_VPMU_FLAVOUR_NONE);
		if (d.leaf0a_present && d.guest_version) {
			assert_true(d.guest_version <= 2); /* KVM clamps it */
			assert_true(d.guest_fixed <= 3);
		}
	}
	assert_non_null(strstr(buf, "vpmu extension: absent"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_bool),
		cmocka_unit_test(test_decide_leaf0a_first),
		cmocka_unit_test(test_decide_switches),
		cmocka_unit_test(test_decide_cpuid_failed),
		cmocka_unit_test(test_decide_amd),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_host_5_15),
		cmocka_unit_test(test_host_6_12_perf),
		cmocka_unit_test(test_host_zen4),
		cmocka_unit_test(test_host_mediated_watchdog),
		cmocka_unit_test(test_host_mediated_in_kvm),
		cmocka_unit_test(test_host_enable_pmu_off),
		cmocka_unit_test(test_host_hybrid),
		cmocka_unit_test(test_host_no_kvm),
		cmocka_unit_test(test_host_vpmu_extension),
		cmocka_unit_test(test_fact_file_refusals),
		cmocka_unit_test(test_sysfs_content_refused),
		cmocka_unit_test(test_format_lengths),
		cmocka_unit_test(test_real_dev_kvm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
