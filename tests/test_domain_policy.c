/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/domain_policy.h"

static const struct domain_policy_defaults defaults = {
	.priority = 100, .cls = "preferred", .gp = 2, .fixed_mask = 0x1,
};

static char *slurp(const char *name, size_t *len)
{
	char rel[256];
	snprintf(rel, sizeof(rel), "libvirt/%s", name);
	return fixture_read(rel, len);
}

static int parse_fixture(const char *name, unsigned host_cpus, struct dompol *p, char *err, size_t errlen)
{
	size_t len;
	char *xml = slurp(name, &len);
	int r = domain_policy_parse(xml, len, &defaults, host_cpus, p, err, errlen);
	free(xml);
	return r;
}

static void assert_cpus(const struct cpulist *s, const char *expect)
{
	char buf[256];
	assert_true(cpulist_format(s, buf, sizeof(buf)) >= 0);
	assert_string_equal(buf, expect);
}

static void test_with_metadata(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(parse_fixture("with-metadata.xml", 64, &p, err, sizeof(err)), 0);
	assert_string_equal(p.name, "web");
	assert_string_equal(p.uuid, "4dea22b3-1d52-d8f3-2516-782e98ab3fa0");
	assert_true(p.metadata_present);
	assert_int_equal(p.priority, 200);
	assert_string_equal(p.cls, "guaranteed");
	assert_true(p.guaranteed);
	assert_int_equal(p.gp, 4);
	assert_int_equal(p.fixed_mask, 0x3);
	assert_false(p.pmu_off);
	assert_int_equal(p.n_vcpus, 4);
	assert_int_equal(p.n_vcpus_current, 4);
	assert_int_equal(p.host_cpus, 64);
	assert_cpus(&p.vcpu_cpus[0], "8");
	assert_cpus(&p.vcpu_cpus[1], "9,11");
	/* unpinned vCPUs take <vcpu cpuset>; emulatorpin (60-63) is not a vCPU */
	assert_cpus(&p.vcpu_cpus[2], "0-7");
	assert_cpus(&p.vcpu_cpus[3], "0-7");
	domain_policy_clear(&p);
	assert_null(p.name);
}

static void test_without_metadata(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(parse_fixture("without-metadata.xml", 16, &p, err, sizeof(err)), 0);
	assert_string_equal(p.name, "plain");
	/* dashless upper-case UUIDs are normalised */
	assert_string_equal(p.uuid, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
	assert_false(p.metadata_present);
	assert_int_equal(p.priority, 100);
	assert_string_equal(p.cls, "preferred");
	assert_false(p.guaranteed);
	assert_int_equal(p.gp, 2);
	assert_int_equal(p.fixed_mask, 1);
	assert_int_equal(p.n_vcpus, 6);
	assert_int_equal(p.n_vcpus_current, 2);
	for (unsigned i = 0; i < 6; i++)
		assert_cpus(&p.vcpu_cpus[i], "0-15");
	domain_policy_clear(&p);
}

static void test_guaranteed_default(void **st)
{
	(void)st;
	struct domain_policy_defaults d = defaults;
	struct dompol p;
	char err[256];
	size_t len;
	char *xml = slurp("without-metadata.xml", &len);
	d.cls = "guaranteed";
	assert_int_equal(domain_policy_parse(xml, len, &d, 16, &p, err, sizeof(err)), 0);
	assert_true(p.guaranteed);
	domain_policy_clear(&p);
	d.cls = "platinum";
	assert_int_equal(domain_policy_parse(xml, len, &d, 16, &p, err, sizeof(err)), -EINVAL);
	domain_policy_clear(&p);
	free(xml);
}

static void test_pmu_off(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(parse_fixture("pmu-off.xml", 8, &p, err, sizeof(err)), 0);
	assert_true(p.pmu_off);
	assert_true(p.metadata_present);
	assert_int_equal(p.gp, 0);
	assert_int_equal(p.fixed_mask, 0);
	assert_string_equal(p.cls, "preferred");
	domain_policy_clear(&p);
}

static void test_partial_metadata_and_auto_placement(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(parse_fixture("partial-metadata.xml", 4, &p, err, sizeof(err)), 0);
	/* any prefix works: libvirt itself drops ours in virDomainGetMetadata */
	assert_true(p.metadata_present);
	assert_int_equal(p.gp, 2);
	assert_int_equal(p.priority, 100);
	assert_int_equal(p.fixed_mask, 1);
	/* placement=auto: numad decides, the cpuset attribute is not used */
	assert_true(p.placement_auto);
	assert_cpus(&p.vcpu_cpus[0], "0-3");
	domain_policy_clear(&p);
}

static void test_cpuset_exclusions(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(parse_fixture("cpuset-exclusions.xml", 64, &p, err, sizeof(err)), 0);
	assert_cpus(&p.vcpu_cpus[0], "0-2,4-6,8-15,32-33");
	assert_int_equal(cpulist_count(&p.vcpu_cpus[0]), 16);
	/* "^5,4-6": an exclusion only removes what came before it */
	assert_cpus(&p.vcpu_cpus[2], "4-6");
	domain_policy_clear(&p);
	/* 32-33 is beyond a 32-CPU host */
	assert_int_equal(parse_fixture("cpuset-exclusions.xml", 32, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "<vcpu> attribute \"cpuset\""));
	assert_non_null(strstr(err, "CPU 32"));
	assert_string_equal(p.name, "excl");
	domain_policy_clear(&p);
}

struct bad_case {
	const char *file;
	int rc;
	const char *needle;
	bool guaranteed;
};

static void test_malformed(void **st)
{
	(void)st;
	static const struct bad_case cases[] = {
		{ "bad-gp.xml", -EINVAL, "<vpmu:pmu> attribute \"gp\": must be an integer 0..32, got \"lots\"", true },
		{ "bad-gp-range.xml", -EINVAL, "attribute \"gp\": must be an integer 0..32, got \"33\"", false },
		{ "bad-gp-negative.xml", -EINVAL, "got \"-1\"", false },
		{ "bad-class.xml", -EINVAL, "<vpmu:pmu> attribute \"class\": must be guaranteed, preferred or shared, got \"gold\"", false },
		{ "bad-fixed.xml", -EINVAL, "<vpmu:pmu> attribute \"fixed\"", true },
		{ "bad-priority.xml", -EINVAL, "<vpmu:pmu> attribute \"priority\": must be an integer 0..1000, got \"1001\"", false },
		{ "bad-unknown-attr.xml", -EINVAL, "<vpmu:pmu>: unknown attribute \"gpp\"", true },
		{ "bad-child.xml", -EINVAL, "<vpmu:pmu>: unexpected child element <gp>", false },
		{ "bad-unknown-element.xml", -EINVAL, "unknown element <vpmu:counters>", false },
		{ "bad-duplicate.xml", -EINVAL, "<vpmu:pmu> appears more than once", false },
		{ "wrong-version.xml", -EPROTONOSUPPORT, "https://vpmu.org/xmlns/libvirt/2", false },
		{ "bad-pin-range.xml", -EINVAL, "<cputune><vcpupin vcpu='1'> attribute \"cpuset\": CPU 70 is beyond the host's 64 CPUs", false },
		{ "bad-pin-vcpu.xml", -EINVAL, "<cputune><vcpupin> attribute \"vcpu\": must be an integer 0..1", false },
		{ "not-xml.xml", -EINVAL, "domain XML: line 1", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dompol p;
		char err[256] = "";
		int r = parse_fixture(cases[i].file, 64, &p, err, sizeof(err));
		if (r != cases[i].rc || !strstr(err, cases[i].needle))
			fail_msg("%s: rc %d err \"%s\"", cases[i].file, r, err);
		if (p.guaranteed != cases[i].guaranteed)
			fail_msg("%s: guaranteed %d", cases[i].file, p.guaranteed);
		/* nothing but the identity survives a failure */
		assert_null(p.vcpu_cpus);
		assert_int_equal(p.gp, 0);
		domain_policy_clear(&p);
	}
}

static void test_identity_errors(void **st)
{
	(void)st;
	static const struct {
		const char *xml;
		const char *needle;
	} cases[] = {
		{ "<domain><uuid>44444444-2222-3333-4444-555555555555</uuid></domain>", "<name>: missing" },
		{ "<domain><name> </name><uuid>44444444-2222-3333-4444-555555555555</uuid></domain>", "<name>: empty" },
		{ "<domain><name>a</name><name>b</name></domain>", "<name>: appears 2 times" },
		{ "<domain><name>a</name></domain>", "<uuid>: missing" },
		{ "<domain><name>a</name><uuid>4444-zz</uuid></domain>", "<uuid>: not a UUID" },
		{ "<vm><name>a</name></vm>", "root element must be <domain>" },
		{ "<!DOCTYPE domain [<!ENTITY x \"y\">]><domain><name>&x;</name></domain>", "DOCTYPE" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><vcpu>0</vcpu></domain>",
		  "<vcpu>: must be an integer 1..4096" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><vcpu current='3'>2</vcpu></domain>",
		  "<vcpu> attribute \"current\": must be an integer 1..2" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><features><pmu state='maybe'/></features></domain>",
		  "<features><pmu> attribute \"state\": must be on or off" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><vcpu>2</vcpu>"
		  "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='0' cpuset='2'/></cputune></domain>",
		  "vCPU pinned twice" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dompol p;
		char err[256] = "";
		int r = domain_policy_parse(cases[i].xml, strlen(cases[i].xml), &defaults, 8, &p, err, sizeof(err));
		if (r != -EINVAL || !strstr(err, cases[i].needle))
			fail_msg("case %zu: rc %d err \"%s\"", i, r, err);
		domain_policy_clear(&p);
	}
}

static void test_class_known_despite_broken_identity(void **st)
{
	(void)st;
	const char *xml = "<domain><name>g</name><metadata><vpmu:pmu xmlns:vpmu='" DOMAIN_POLICY_NS_URI
			  "' class='guaranteed'/></metadata></domain>";
	struct dompol p;
	char err[256];
	assert_int_equal(domain_policy_parse(xml, strlen(xml), &defaults, 8, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "<uuid>: missing"));
	assert_true(p.guaranteed);
	assert_string_equal(p.name, "g");
	domain_policy_clear(&p);
}

/* The lease carries the domain's name, so the protocol's name rule
 * (proto_name_check) applies; libvirt's own rule is wider. */
static void test_name_rule_is_the_protocols(void **st)
{
	(void)st;
	static const struct {
		const char *name, *needle; /* needle NULL: accepted */
	} cases[] = {
		{ "web-1.prod_2", NULL },
		{ "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn", NULL }, /* 64 */
		{ "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn", "<name>: must be 1..64 characters" },
		{ "my vm", "<name>: only A-Z a-z 0-9 . _ - allowed (vpmu names the VM's lease after the domain)" },
		{ "caf\xc3\xa9", "<name>: only A-Z a-z 0-9 . _ - allowed" },
		{ "..", "<name>: \".\" and \"..\" are reserved" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char xml[512], err[DOMAIN_POLICY_ERR_MAX] = "";
		struct dompol p;
		int n = snprintf(xml, sizeof(xml),
				 "<domain><name>%s</name><uuid>44444444-2222-3333-4444-555555555555</uuid><metadata>"
				 "<vpmu:pmu xmlns:vpmu='" DOMAIN_POLICY_NS_URI "' class='guaranteed'/></metadata></domain>",
				 cases[i].name);
		int r = domain_policy_parse(xml, (size_t)n, &defaults, 8, &p, err, sizeof(err));

		if (!cases[i].needle && r != 0)
			fail_msg("case %zu: rc %d err \"%s\"", i, r, err);
		if (cases[i].needle && (r != -EINVAL || !strstr(err, cases[i].needle)))
			fail_msg("case %zu: rc %d err \"%s\"", i, r, err);
		/* refused or not, the caller learns the name and the class */
		assert_string_equal(p.name, cases[i].name);
		assert_true(p.guaranteed);
		domain_policy_clear(&p);
	}
}

/* fixed= follows the protocol's text rule for a mask (proto_fixed_mask_parse),
 * as vpmuctl --fixed does: decimal, or 0x and 1..4 hex digits. */
static void test_fixed_mask_rule_is_the_protocols(void **st)
{
	(void)st;
	static const struct {
		const char *fixed;
		int want; /* -1: refused */
	} cases[] = {
		{ "0x3", 0x3 }, { "0xFfFf", 0xffff }, { "0x0007", 7 }, { "65535", 0xffff }, { "007", 7 },
		{ "0X3", -1 }, { "0x00007", -1 }, { "0x", -1 }, { "65536", -1 }, { "0x10000", -1 },
		{ "-1", -1 }, { "+3", -1 }, { " 3", -1 }, { "3 ", -1 }, { "", -1 }, { "99999999999999999999", -1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char xml[512], err[DOMAIN_POLICY_ERR_MAX] = "";
		struct dompol p;
		int n = snprintf(xml, sizeof(xml),
				 "<domain><name>m</name><uuid>44444444-2222-3333-4444-555555555555</uuid><metadata>"
				 "<vpmu:pmu xmlns:vpmu='" DOMAIN_POLICY_NS_URI "' fixed='%s'/></metadata></domain>",
				 cases[i].fixed);
		int r = domain_policy_parse(xml, (size_t)n, &defaults, 8, &p, err, sizeof(err));

		if (cases[i].want >= 0 && (r != 0 || p.fixed_mask != (uint32_t)cases[i].want))
			fail_msg("case %zu (%s): rc %d mask 0x%x err \"%s\"", i, cases[i].fixed, r, p.fixed_mask, err);
		if (cases[i].want < 0 &&
		    (r != -EINVAL || !strstr(err, "attribute \"fixed\": must be a mask 0..0xffff (decimal, or 0x and 1..4 hex digits)")))
			fail_msg("case %zu (%s): rc %d err \"%s\"", i, cases[i].fixed, r, err);
		domain_policy_clear(&p);
	}
}

/* What a message quotes of the XML reaches the hook's stderr (libvirt's
 * log) and vpmud's journal: a line break or a cut UTF-8 character from a
 * domain XML must not. */
static void test_messages_are_printable(void **st)
{
	(void)st;
	static const struct {
		const char *xml, *want;
	} cases[] = {
		{ "<domain><name>a</name><uuid>44\nFAKE:\tx</uuid></domain>", "<uuid>: not a UUID: \"44?FAKE:?x\"" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><vcpu>\xc3\xa9</vcpu></domain>",
		  "<vcpu>: must be an integer 1..4096, got \"??\"" },
		{ "<domain><name>a</name><uuid>44444444-2222-3333-4444-555555555555</uuid><vcpu cpuset='0,\xc3\xa9'>1</vcpu></domain>",
		  "(\"0,??\")" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[DOMAIN_POLICY_ERR_MAX] = "";
		struct dompol p;
		int r = domain_policy_parse(cases[i].xml, strlen(cases[i].xml), &defaults, 8, &p, err, sizeof(err));

		if (r != -EINVAL || !strstr(err, cases[i].want))
			fail_msg("case %zu: rc %d err \"%s\"", i, r, err);
		for (const char *q = err; *q; q++)
			assert_true(*q >= 0x20 && *q <= 0x7e);
		domain_policy_clear(&p);
	}
}

/* Bytes the declared encoding cannot convert: libxml2's generic handler
 * printed four "encoding error" lines to stderr per parse (found by
 * fuzz_domain_policy); the refusal is the message alone. */
static void test_encoding_error_writes_nothing(void **st)
{
	(void)st;
	static const char xml[] = "<?xml version='1.0' encoding='SHIFT_JIS'?><domain><name>\x81\x01</name></domain>";
	char err[DOMAIN_POLICY_ERR_MAX] = "", seen[256] = "";
	FILE *capture = tmpfile();
	struct dompol p;
	int saved = dup(STDERR_FILENO);
	int r;

	assert_non_null(capture);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(capture), STDERR_FILENO) >= 0);
	r = domain_policy_parse(xml, sizeof(xml) - 1, &defaults, 8, &p, err, sizeof(err));
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(capture);
	size_t n = fread(seen, 1, sizeof(seen) - 1, capture);
	fclose(capture);
	seen[n] = 0;
	assert_int_equal(r, -EINVAL);
	assert_true(err[0]);
	if (n)
		fail_msg("stderr got \"%s\"", seen);
	domain_policy_clear(&p);
}

static void test_size_limit(void **st)
{
	(void)st;
	struct dompol p;
	char err[256];
	assert_int_equal(domain_policy_parse("<domain/>", DOMAIN_POLICY_MAX_XML + 1, &defaults, 8, &p, err, sizeof(err)), -E2BIG);
	domain_policy_clear(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_with_metadata),
		cmocka_unit_test(test_without_metadata),
		cmocka_unit_test(test_guaranteed_default),
		cmocka_unit_test(test_pmu_off),
		cmocka_unit_test(test_partial_metadata_and_auto_placement),
		cmocka_unit_test(test_cpuset_exclusions),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_identity_errors),
		cmocka_unit_test(test_class_known_despite_broken_identity),
		cmocka_unit_test(test_name_rule_is_the_protocols),
		cmocka_unit_test(test_fixed_mask_rule_is_the_protocols),
		cmocka_unit_test(test_messages_are_printable),
		cmocka_unit_test(test_encoding_error_writes_nothing),
		cmocka_unit_test(test_size_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
