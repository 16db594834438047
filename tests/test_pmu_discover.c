/* SPDX-License-Identifier: MIT */
/* Tests for pmu_discover.c: CPU lists, sysfs fixture trees, and discovery on
 * the machine the tests run on. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "pmu/pmu.h"
#include "pmu/pmu_discover.h"

static struct pmu_desc *new_desc(void)
{
	struct pmu_desc *d = malloc(sizeof(*d));

	assert_non_null(d);
	pmu_desc_init(d);
	return d;
}


/* What an Ice Lake-SP reports, as CPUID registers. */
static struct pmu_host_cpuid icelake_cpuid(void)
{
	struct pmu_host_cpuid c = {
		.vendor = "GenuineIntel",
		.max_leaf = 0x1b,
		.max_ext_leaf = 0x80000008,
		/* family 6 model 0x6a; ECX.PDCM[15]; EDX.DS[21] */
		.leaf1 = { .eax = 0x000606a6, .ecx = 1u << 15, .edx = 1u << 21 },
		.leaf0a = { .eax = 0x08300805, .ebx = 0, .ecx = 0xf, .edx = 0x8603 },
	};
	return c;
}

static struct pmu_host_cpuid epyc_vm_cpuid(void)
{
	/* What this project's CI VM reports: Zen 4 EPYC under a hypervisor
	 * that hides perfctr_core. */
	struct pmu_host_cpuid c = {
		.vendor = "AuthenticAMD",
		.max_leaf = 0x1c,
		.max_ext_leaf = 0x80000021,
		.leaf1 = { .eax = 0x00a10f11, .ecx = 0xfffa3203 },
		.ext80000001 = { .ecx = 0x004003f3 },
	};
	return c;
}

static void test_icelake_fixture(void **state)
{
	(void)state;
	struct pmu_host_cpuid c = icelake_cpuid();
	char root[4096], why[1024], block[512];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false, .cpuid = &c };

	fixture_path(root, sizeof(root), "sysfs-icelake");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->source, PMU_SOURCE_HOST);
	assert_string_equal(d->model, "host");
	assert_string_equal(d->pmu_name, "icelake");
	assert_int_equal(d->vendor, PMU_VENDOR_INTEL);
	assert_int_equal(d->num_gp, 8);
	assert_int_equal(d->fixed_mask, 0xf);
	assert_int_equal(d->max_precise, 3);
	assert_int_equal(d->lbr_depth, 32);
	assert_true(d->nmi_watchdog);
	/* No MSR read: metrics from sysfs, PEBS left unclaimed, and why
	 * says so. */
	assert_true(d->perf_metrics);
	assert_int_equal(d->pebs_format, -1);
	assert_false(d->full_width_write);
	assert_non_null(strstr(why, "PERF_CAPABILITIES not read"));
	pmu_format_boot_block(d, block, sizeof(block));
	assert_non_null(strstr(block, "... event mask:             0001000f000000ff\n"));

	/* 2 packages x 2 cores x 2 threads; core_id repeats per package. */
	assert_int_equal(d->n_cpus, 8);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(d->cpus[i].cpu, i);
		assert_int_equal(d->cpus[i].core, d->cpus[i + 4].core);
		assert_int_equal(d->cpus[i].package, i / 2);
	}
	assert_int_not_equal(d->cpus[0].core, d->cpus[2].core);
	assert_int_not_equal(d->cpus[0].core, d->cpus[1].core);
	free(d);
}

static void test_icelake_fixture_with_msr(void **state)
{
	(void)state;
	struct pmu_host_cpuid c = icelake_cpuid();
	char root[4096], why[1024], msr[] = "/tmp/vpmu-msr-XXXXXX";
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false, .cpuid = &c, .msr_path = msr };
	/* PEBS format 4, full-width, baseline, metrics, LBR format 5. */
	uint64_t caps = 0x5 | 4 << 8 | 1 << 13 | 1 << 14 | 1 << 15;
	int fd = mkstemp(msr);

	assert_true(fd >= 0);
	/* /dev/cpu/N/msr is read at the MSR number as file offset. */
	assert_int_equal(pwrite(fd, &caps, sizeof(caps), 0x345), (ssize_t)sizeof(caps));
	close(fd);
	fixture_path(root, sizeof(root), "sysfs-icelake");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->pebs_format, 4);
	assert_true(d->pebs_baseline);
	assert_true(d->full_width_write);
	assert_true(d->perf_metrics);
	assert_string_equal(why, "");

	/* Without the DS area there is no PEBS, whatever the MSR says. */
	c.leaf1.edx = 0;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->pebs_format, -1);
	unlink(msr);
	free(d);
}

static void test_nopmu_fixture(void **state)
{
	(void)state;
	struct pmu_host_cpuid c = epyc_vm_cpuid();
	char root[4096], why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false, .cpuid = &c };

	fixture_path(root, sizeof(root), "sysfs-nopmu");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->source, PMU_SOURCE_NONE);
	assert_int_equal(d->num_gp, 0);
	assert_int_equal(d->fixed_mask, 0);
	assert_int_equal(d->vendor, PMU_VENDOR_AMD);
	assert_false(d->nmi_watchdog);
	if (!strstr(why, "no core PMU") || !strstr(why, "found: breakpoint, software, tracepoint") ||
	    !strstr(why, "perfctr_core clear") || !strstr(why, "hypervisor"))
		fail_msg("why: %s", why);
	/* The inventory still lists the online CPUs (0 and 2; 1 offline). */
	assert_int_equal(d->n_cpus, 2);
	assert_int_equal(d->cpus[0].cpu, 0);
	assert_int_equal(d->cpus[1].cpu, 2);
	assert_int_not_equal(d->cpus[0].core, d->cpus[1].core);

	/* Without CPUID the answer is the same: sysfs decides. */
	o.cpuid = NULL;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->source, PMU_SOURCE_NONE);
	assert_non_null(strstr(why, "CPUID not read"));
	free(d);
}

static void test_pmu_without_cpuid(void **state)
{
	(void)state;
	char root[4096], why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false };

	fixture_path(root, sizeof(root), "sysfs-icelake");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), -ENODATA);
	assert_non_null(strstr(why, "counters are unknown"));
	free(d);
}

static void test_sysfs_pmu_but_cpuid_none(void **state)
{
	(void)state;
	struct pmu_host_cpuid c = icelake_cpuid();
	char root[4096], why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false, .cpuid = &c };

	c.leaf0a.eax = 0; /* version 0 */
	fixture_path(root, sizeof(root), "sysfs-icelake");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->source, PMU_SOURCE_NONE);
	assert_int_equal(d->num_gp, 0);
	assert_non_null(strstr(why, "CPUID does not describe one"));
	free(d);
}

static void test_hybrid_fixture(void **state)
{
	(void)state;
	char root[4096], why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .use_cpuid = false };

	fixture_path(root, sizeof(root), "sysfs-hybrid");
	o.sysfs_root = root;
	o.procfs_root = root;
	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->source, PMU_SOURCE_NONE);
	assert_non_null(strstr(why, "hybrid"));
	assert_false(d->nmi_watchdog); /* no procfs file in this tree */
	free(d);
}

static void test_missing_root(void **state)
{
	(void)state;
	char why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .sysfs_root = "/nonexistent-vpmu-root",
				       .procfs_root = "/nonexistent-vpmu-root" };

	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "/nonexistent-vpmu-root/sys/devices/system/cpu/online"));
	free(d);
}

/* The real machine. Whether it has a PMU is not up to the test; what is
 * checked is that discovery agrees with the kernel (the sysfs core PMU),
 * and that the answer is complete either way. */
static void test_this_machine(void **state)
{
	(void)state;
	char why[1024];
	struct pmu_desc *d = new_desc();
	struct pmu_discover_opts o = { .sysfs_root = "/", .procfs_root = "/", .use_cpuid = true };
	struct stat st;
	bool kernel_pmu = stat("/sys/bus/event_source/devices/cpu", &st) == 0;
	long online = sysconf(_SC_NPROCESSORS_ONLN);

	assert_int_equal(pmu_discover_host(&o, d, why, sizeof(why)), 0);
	assert_int_equal(d->n_cpus, (unsigned)online);
	if (kernel_pmu) {
		assert_int_equal(d->source, PMU_SOURCE_HOST);
		assert_true(d->num_gp >= 1);
		assert_true(d->gp_width >= 32);
		print_message("this machine: %u GP counters, fixed 0x%x, version %u (%s)\n",
			      d->num_gp, d->fixed_mask, d->version, d->pmu_name);
	} else {
		assert_int_equal(d->source, PMU_SOURCE_NONE);
		assert_int_equal(d->num_gp, 0);
		if (!strstr(why, "the kernel registered no core PMU") && !strstr(why, "hybrid"))
			fail_msg("no reason given: \"%s\"", why);
		print_message("this machine has no PMU: %s\n", why);
	}
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		
		cmocka_unit_test(test_icelake_fixture),
		cmocka_unit_test(test_icelake_fixture_with_msr),
		cmocka_unit_test(test_nopmu_fixture),
		cmocka_unit_test(test_pmu_without_cpuid),
		cmocka_unit_test(test_sysfs_pmu_but_cpuid_none),
		cmocka_unit_test(test_hybrid_fixture),
		cmocka_unit_test(test_missing_root),
		cmocka_unit_test(test_this_machine),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
