/* SPDX-License-Identifier: MIT */
/* Stock-kernel detection: sysfs parsing on fixtures, the flavour decision,
 * and the real /dev/kvm of this machine (skipped where it is absent). */
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

static void test_flavour_decision(void **state)
{
	(void)state;
	struct kvm_detect d = { .dev_ok = true, .cap_pmu_capability = 1, .enable_pmu = KVM_YES,
				.mediated_intel = KVM_ABSENT, .mediated_amd = KVM_ABSENT,
				.leaf0a_present = true, .guest_version = 2, .guest_gp = 8 };
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_PERF);
	d.mediated_intel = KVM_NO;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_PERF);
	d.mediated_amd = KVM_YES;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_MEDIATED);
	d.enable_pmu = KVM_NO;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_NONE);
	/* Parameter unreadable, but KVM_CAP_PMU_CAPABILITY says no PMU. */
	d.enable_pmu = KVM_ABSENT;
	d.cap_pmu_capability = 0;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_NONE);
	d.cap_pmu_capability = 1;
	d.mediated_amd = KVM_ABSENT;
	d.guest_version = 0;
	d.guest_gp = 0;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_NONE);
	d.dev_ok = false;
	assert_int_equal(kvm_detect_flavour(&d), KVM_VPMU_FLAVOUR_UNKNOWN);
	for (int f = KVM_VPMU_FLAVOUR_UNKNOWN; f <= KVM_VPMU_FLAVOUR_MEDIATED; f++) {
		assert_string_not_equal(kvm_detect_flavour_name(f), "invalid");
		assert_string_not_equal(kvm_detect_flavour_host_impact(f), "invalid");
	}
	assert_non_null(strstr(kvm_detect_flavour_host_impact(KVM_VPMU_FLAVOUR_MEDIATED),
			       "exclude_guest"));
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

static void test_fixture_sysfs_without_dev(void **state)
{
	(void)state;
	char root[] = "/tmp/vpmu-detect-XXXXXX";
	assert_non_null(mkdtemp(root));
	put(root, "module/kvm/parameters/enable_pmu", "Y\n");
	put(root, "module/kvm_intel/parameters/enable_mediated_pmu", "Y\n");
	put(root, "module/kvm_amd/parameters/enable_mediated_pmu", "garbage\n");
	struct kvm_detect d;
	struct kvm_detect_opts o = { .dev_path = "/nonexistent/kvm", .sysfs_root = root };
	assert_int_equal(kvm_detect_run(&o, &d), -ENOENT);
	assert_false(d.dev_ok);
	assert_int_equal(d.enable_pmu, KVM_YES);
	assert_int_equal(d.mediated_intel, KVM_YES);
	assert_int_equal(d.mediated_amd, KVM_ABSENT);
	assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_UNKNOWN);
	char buf[2048];
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "/dev/kvm unavailable"));
	put(root, "module/kvm/parameters/enable_pmu", "N\n");
	assert_int_equal(kvm_detect_run(&o, &d), -ENOENT);
	assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_NONE);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

/* This machine: a stock kernel, so our capability is absent; the rest is
 * checked for consistency with sysfs rather than against fixed values. */
static void test_real_dev_kvm(void **state)
{
	(void)state;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		skip();
	struct kvm_detect d;
	assert_int_equal(kvm_detect_run(NULL, &d), 0);
	char buf[2048];
	assert_true(kvm_detect_format(&d, buf, sizeof(buf)) > 0);
	printf("%s", buf);
	assert_true(d.dev_ok);
	assert_int_equal(d.api_version, 12);   /* KVM_API_VERSION since 2.6.22 */
	assert_int_equal(d.cap_vpmu, 0);
	assert_true(d.cap_pmu_event_filter >= 0);
	assert_true(d.cap_masked_events >= 0);
	assert_true(d.cap_pmu_capability >= 0);
	assert_int_equal(d.cpuid_err, 0);
	if (d.enable_pmu == KVM_NO) {
		/* KVM answers both probes with "no PMU" when the parameter is off. */
		assert_int_equal(d.cap_pmu_capability, 0);
		assert_int_equal(d.flavour, KVM_VPMU_FLAVOUR_NONE);
		if (d.leaf0a_present) {
			for (int i = 0; i < 4; i++)
				assert_int_equal(d.leaf0a[i], 0);
		}
	} else if (d.enable_pmu == KVM_YES) {
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
		cmocka_unit_test(test_flavour_decision),
		cmocka_unit_test(test_fixture_sysfs_without_dev),
		cmocka_unit_test(test_real_dev_kvm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
