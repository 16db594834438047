// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/proto.h"
#include "proto/response.h"

#define MAXCPU 64

static int decode(const char *s, struct proto_request *req, struct proto_error *e,
		  bool *idk, uint64_t *id)
{
	memset(e, 0, sizeof(*e));
	return proto_request_decode(s, strlen(s), MAXCPU, req, idk, id, e);
}

static void expect_ok(const char *s, struct proto_request *req)
{
	struct proto_error e;
	bool idk;
	uint64_t id;
	int r = decode(s, req, &e, &idk, &id);

	if (r != 0)
		fail_msg("%s: %s (%s)", s, e.message, proto_errcode_name(e.code));
	assert_true(idk);
	assert_int_equal(id, req->id);
}

/* field may be NULL when no field applies */
static void expect_err(const char *s, enum proto_errcode code, const char *field)
{
	struct proto_request req;
	struct proto_error e;
	bool idk;
	uint64_t id;
	int r = decode(s, &req, &e, &idk, &id);

	if (r == 0)
		fail_msg("accepted: %s", s);
	assert_int_equal(r, -e.err);
	if (e.code != code)
		fail_msg("%s: got %s (%s), want %s", s, proto_errcode_name(e.code), e.message,
			 proto_errcode_name(code));
	assert_string_equal(e.field, field ? field : "");
	assert_true(e.message[0] != '\0');
	/* no heap is left in a failed request */
	assert_null(req.u.vm_attach.vcpus.cpus);
}

static void test_envelope(void **state)
{
	struct proto_request req;

	(void)state;
	expect_ok("{\"id\":0,\"method\":\"status\"}", &req);
	assert_int_equal(req.method, PROTO_M_STATUS);
	expect_ok("{\"id\":9007199254740991,\"method\":\"status\",\"params\":{}}", &req);
	assert_int_equal(req.id, UINT64_C(9007199254740991));

	expect_err("[1]", PROTO_E_BAD_REQUEST, NULL);
	expect_err("1", PROTO_E_BAD_REQUEST, NULL);
	expect_err("\"x\"", PROTO_E_BAD_REQUEST, NULL);
	expect_err("null", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"id\":1,", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"id\":1,\"method\":\"status\"} {}", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"id\":1,\"method\":\"status\"}x", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":-1,\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":9007199254740992,\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":99999999999999999999999,\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":1.5,\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":\"1\",\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":null,\"method\":\"status\"}", PROTO_E_BAD_REQUEST, "id");
	expect_err("{\"id\":1}", PROTO_E_BAD_REQUEST, "method");
	expect_err("{\"id\":1,\"method\":7}", PROTO_E_BAD_REQUEST, "method");
	expect_err("{\"id\":1,\"method\":\"status\",\"params\":[]}", PROTO_E_BAD_REQUEST, "params");
	expect_err("{\"id\":1,\"method\":\"status\",\"extra\":1}", PROTO_E_UNKNOWN_FIELD, "extra");
	expect_err("{\"id\":1,\"method\":\"reboot\"}", PROTO_E_UNKNOWN_METHOD, "method");
	expect_err("{\"id\":1,\"method\":\"status\",\"params\":{\"x\":1}}", PROTO_E_UNKNOWN_FIELD, "params.x");
}

static void test_envelope_id_reported(void **state)
{
	struct proto_request req;
	struct proto_error e;
	bool idk;
	uint64_t id;

	(void)state;
	/* a parameter error still names the request it belongs to */
	assert_int_equal(decode("{\"id\":42,\"method\":\"vm.show\",\"params\":{}}", &req, &e, &idk, &id), -EINVAL);
	assert_true(idk);
	assert_int_equal(id, 42);
	assert_int_equal(decode("{\"id\":-3,\"method\":\"vm.show\"}", &req, &e, &idk, &id), -EBADMSG);
	assert_false(idk);
}

static void test_bad_bytes(void **state)
{
	struct proto_request req;
	struct proto_error e;
	bool idk;
	uint64_t id;
	static const char nul[] = "{\"id\":1,\"method\":\"status\"}\0junk";

	(void)state;
	expect_err("{\"id\":1,\"method\":\"st\xff\"}", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"id\":1,\"method\":\"\xc3\"}", PROTO_E_BAD_REQUEST, NULL);
	expect_err("{\"id\":1 \"method\":\"status\"}", PROTO_E_BAD_REQUEST, NULL);
	expect_err("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		   PROTO_E_BAD_REQUEST, NULL);
	assert_int_equal(proto_request_decode(nul, sizeof(nul) - 1, MAXCPU, &req, &idk, &id, &e), -EBADMSG);
	assert_int_equal(e.code, PROTO_E_BAD_REQUEST);
	/* an escaped NUL inside a string is valid JSON but not a valid name */
	expect_err("{\"id\":1,\"method\":\"vm.show\",\"params\":{\"name\":\"a\\u0000b\"}}",
		   PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":\"1\\u0000junk\"}}",
		   PROTO_E_INVALID_PARAM, "params.cpus");
	/* an unknown key with control bytes is reported without them */
	expect_err("{\"id\":1,\"method\":\"status\",\"params\":{\"a\\u0001\":1}}", PROTO_E_UNKNOWN_FIELD, "params.a?");
}

/* RFC 3629 UTF-8 only: what json-c lets through is refused at the frame,
 * naming the byte; every valid form up to U+10FFFF is taken. */
static void test_utf8_strict(void **state)
{
	static const struct {
		const char *bytes;
		bool ok;
	} cases[] = {
		{ "\xc0\xaf", false },         /* overlong '/' */
		{ "\xe0\x80\xaf", false },     /* overlong, three bytes */
		{ "\xf0\x80\x80\xaf", false }, /* overlong, four bytes */
		{ "\xed\xa0\x80", false },     /* U+D800, a surrogate */
		{ "\xed\xbf\xbf", false },     /* U+DFFF */
		{ "\xf4\x90\x80\x80", false }, /* U+110000 */
		{ "\xf5\x80\x80\x80", false },
		{ "\x80", false },             /* a continuation byte first */
		{ "\xe2\x82", false },         /* truncated */
		{ "\xc3\xa9", true },          /* U+00E9 */
		{ "\xe2\x82\xac", true },      /* U+20AC */
		{ "\xed\x9f\xbf", true },      /* U+D7FF, below the surrogates */
		{ "\xee\x80\x80", true },      /* U+E000, above them */
		{ "\xf0\x9f\x98\x80", true },  /* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", true },  /* U+10FFFF */
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char frame[128];
		struct proto_request req;
		struct proto_error e;
		bool idk;
		uint64_t id;
		size_t bad = 99;

		snprintf(frame, sizeof(frame), "{\"id\":1,\"method\":\"vm.show\",\"params\":{\"name\":\"a%sb\"}}",
			 cases[i].bytes);
		size_t at = (size_t)(strstr(frame, "\"a") - frame) + 2;
		char want[40];
		snprintf(want, sizeof(want), "not UTF-8 at byte %zu ", at);
		memset(&req, 0, sizeof(req));
		int r = decode(frame, &req, &e, &idk, &id);
		if (cases[i].ok) {
			/* valid UTF-8; the name rules (printable ASCII) speak next */
			assert_int_not_equal(e.code, PROTO_E_BAD_REQUEST);
			assert_int_equal(frame_check_utf8(frame, strlen(frame), &bad), 0);
		} else {
			if (r != -EILSEQ || e.code != PROTO_E_BAD_REQUEST || !strstr(e.message, want))
				fail_msg("case %zu: r %d, %s", i, r, e.message);
			assert_int_equal(frame_check_utf8(frame, strlen(frame), &bad), -EILSEQ);
			assert_int_equal(bad, at);
		}
		proto_request_fini(&req);
	}
}

static void test_oversize_request(void **state)
{
	struct proto_request req;
	struct proto_error e;
	bool idk;
	uint64_t id;
	size_t n = PROTO_MAX_REQUEST + 1;
	char *big = malloc(n);

	(void)state;
	assert_non_null(big);
	memset(big, ' ', n);
	assert_int_equal(proto_request_decode(big, n, MAXCPU, &req, &idk, &id, &e), -EMSGSIZE);
	assert_int_equal(e.code, PROTO_E_TOO_LARGE);
	free(big);
}

static void test_hello(void **state)
{
	struct proto_request req;

	(void)state;
	expect_ok("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"vpmuctl/0.1\"}}", &req);
	assert_int_equal(req.method, PROTO_M_HELLO);
	assert_int_equal(req.u.hello.protocol, 1);
	assert_string_equal(req.u.hello.client, "vpmuctl/0.1");
	expect_ok("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1}}", &req);
	assert_string_equal(req.u.hello.client, "");

	/* a newer client's extra fields must not hide the version mismatch */
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":2,\"features\":[]}}",
		   PROTO_E_UNSUPPORTED_VERSION, "params.protocol");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":0}}", PROTO_E_INVALID_PARAM, "params.protocol");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{}}", PROTO_E_INVALID_PARAM, "params.protocol");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":\"1\"}}", PROTO_E_INVALID_PARAM, "params.protocol");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1,\"features\":[]}}",
		   PROTO_E_UNKNOWN_FIELD, "params.features");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"a b\"}}",
		   PROTO_E_INVALID_PARAM, "params.client");
	expect_err("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"\"}}",
		   PROTO_E_INVALID_PARAM, "params.client");
}

static void test_hello_check(void **state)
{
	struct proto_error e;

	(void)state;
	assert_int_equal(proto_hello_check(1, 1, &e), 0);
	assert_int_equal(proto_hello_check(2, 1, &e), -EPROTONOSUPPORT);
	assert_int_equal(e.code, PROTO_E_UNSUPPORTED_VERSION);
	assert_non_null(strstr(e.message, "client speaks protocol 2, server speaks protocol 1"));
}

static void test_no_param_methods(void **state)
{
	static const char *const names[] = { "status", "pmu", "vm.list", "session.list", "watch" };
	static const enum proto_method ms[] = { PROTO_M_STATUS, PROTO_M_PMU, PROTO_M_VM_LIST,
						PROTO_M_SESSION_LIST, PROTO_M_WATCH };

	(void)state;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char buf[128];
		struct proto_request req;

		snprintf(buf, sizeof(buf), "{\"id\":3,\"method\":\"%s\",\"params\":{}}", names[i]);
		expect_ok(buf, &req);
		assert_int_equal(req.method, ms[i]);
		snprintf(buf, sizeof(buf), "{\"id\":3,\"method\":\"%s\",\"params\":{\"name\":\"x\"}}", names[i]);
		expect_err(buf, PROTO_E_UNKNOWN_FIELD, "params.name");
	}
}

static void test_plan(void **state)
{
	struct proto_request req;

	(void)state;
	expect_ok("{\"id\":1,\"method\":\"plan\"}", &req);
	assert_false(req.u.plan.has_cpus);
	expect_ok("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":\"0-3,8\"}}", &req);
	assert_true(req.u.plan.has_cpus);
	assert_int_equal(cpulist_count(&req.u.plan.cpus), 5);
	assert_true(cpulist_test(&req.u.plan.cpus, 8));
	expect_ok("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":[63,0]}}", &req);
	assert_int_equal(cpulist_count(&req.u.plan.cpus), 2);
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":\"3-1\"}}", PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":\"64\"}}", PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":[64]}}", PROTO_E_INVALID_PARAM, "params.cpus[0]");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":[1,1]}}", PROTO_E_INVALID_PARAM, "params.cpus[1]");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":[1,\"2\"]}}", PROTO_E_INVALID_PARAM, "params.cpus[1]");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":[]}}", PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":\"\"}}", PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":{}}}", PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err("{\"id\":1,\"method\":\"plan\",\"params\":{\"cpus\":null}}", PROTO_E_INVALID_PARAM, "params.cpus");
}

static void test_vm_attach_full(void **state)
{
	struct proto_request req;
	const struct proto_vm_attach *a = &req.u.vm_attach;

	(void)state;
	expect_ok("{\"id\":7,\"method\":\"vm.attach\",\"params\":{\"name\":\"web-1.prod_A\","
		  "\"priority\":1000,\"class\":\"guaranteed\",\"gp\":32,\"fixed_mask\":\"0x7\","
		  "\"vcpus\":[{\"cpus\":\"0-3\"},{\"cpus\":[4,5]},{\"cpus\":\"63\"}],"
		  "\"owner\":{\"pid\":1234,\"vm_fd\":17}}}", &req);
	assert_int_equal(req.method, PROTO_M_VM_ATTACH);
	assert_string_equal(a->name, "web-1.prod_A");
	assert_int_equal(a->priority, 1000);
	assert_int_equal(a->cls, PROTO_CLASS_GUARANTEED);
	assert_int_equal(a->gp, 32);
	assert_int_equal(a->fixed_mask, 7);
	assert_int_equal(a->vcpus.count, 3);
	assert_int_equal(cpulist_count(&a->vcpus.cpus[0]), 4);
	assert_true(cpulist_test(&a->vcpus.cpus[1], 5));
	assert_true(cpulist_test(&a->vcpus.cpus[2], 63));
	assert_true(a->has_owner);
	assert_int_equal(a->owner.pid, 1234);
	assert_int_equal(a->owner.vm_fd, 17);
	proto_request_fini(&req);
	proto_request_fini(&req); /* idempotent */
}

static void test_vm_attach_defaults_and_compact(void **state)
{
	struct proto_request req;
	const struct proto_vm_attach *a = &req.u.vm_attach;

	(void)state;
	expect_ok("{\"id\":7,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\","
		  "\"vcpu_count\":4,\"cpus\":\"8-11\",\"fixed_mask\":65535}}", &req);
	assert_int_equal(a->priority, PROTO_DEFAULT_PRIORITY);
	assert_int_equal(a->cls, PROTO_CLASS_PREFERRED);
	assert_int_equal(a->gp, 0);
	assert_int_equal(a->fixed_mask, 0xffff);
	assert_false(a->has_owner);
	assert_int_equal(a->vcpus.count, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(cpulist_count(&a->vcpus.cpus[i]), 4);
		assert_true(cpulist_test(&a->vcpus.cpus[i], 11));
	}
	proto_request_fini(&req);
}

#define ATTACH(extra) "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\"," extra "}}"
#define VC "\"vcpus\":[{\"cpus\":\"0\"}]"

static void test_vm_attach_errors(void **state)
{
	(void)state;
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{" VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"\"," VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"a/b\"," VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"..\"," VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"\xc3\xa9\"," VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":"
		   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"," VC "}}",
		   PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":5," VC "}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err(ATTACH(VC ",\"priority\":1001"), PROTO_E_INVALID_PARAM, "params.priority");
	expect_err(ATTACH(VC ",\"priority\":-1"), PROTO_E_INVALID_PARAM, "params.priority");
	expect_err(ATTACH(VC ",\"priority\":null"), PROTO_E_INVALID_PARAM, "params.priority");
	expect_err(ATTACH(VC ",\"priority\":true"), PROTO_E_INVALID_PARAM, "params.priority");
	expect_err(ATTACH(VC ",\"class\":\"gold\""), PROTO_E_INVALID_PARAM, "params.class");
	expect_err(ATTACH(VC ",\"gp\":33"), PROTO_E_INVALID_PARAM, "params.gp");
	expect_err(ATTACH(VC ",\"fixed_mask\":65536"), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	expect_err(ATTACH(VC ",\"fixed_mask\":\"0x10000\""), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	expect_err(ATTACH(VC ",\"fixed_mask\":\"7\""), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	expect_err(ATTACH(VC ",\"fixed_mask\":\"0xg\""), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	expect_err(ATTACH(VC ",\"fixed_mask\":\"0x\""), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	/* the docs write "0x": one spelling on every door */
	expect_err(ATTACH(VC ",\"fixed_mask\":\"0X7\""), PROTO_E_INVALID_PARAM, "params.fixed_mask");
	expect_err(ATTACH(VC ",\"prority\":5"), PROTO_E_UNKNOWN_FIELD, "params.prority");
	expect_err(ATTACH("\"priority\":5"), PROTO_E_INVALID_PARAM, "params.vcpus");
	expect_err(ATTACH("\"vcpus\":[]"), PROTO_E_INVALID_PARAM, "params.vcpus");
	expect_err(ATTACH("\"vcpus\":{}"), PROTO_E_INVALID_PARAM, "params.vcpus");
	expect_err(ATTACH("\"vcpus\":[{\"cpus\":\"0\"},{\"cpus\":\"1\"},{\"cpus\":\"a\"}]"),
		   PROTO_E_INVALID_PARAM, "params.vcpus[2].cpus");
	expect_err(ATTACH("\"vcpus\":[{\"cpus\":\"0\"},{\"cpu\":\"1\"}]"), PROTO_E_UNKNOWN_FIELD, "params.vcpus[1].cpu");
	expect_err(ATTACH("\"vcpus\":[{}]"), PROTO_E_INVALID_PARAM, "params.vcpus[0].cpus");
	expect_err(ATTACH("\"vcpus\":[7]"), PROTO_E_INVALID_PARAM, "params.vcpus[0]");
	expect_err(ATTACH("\"vcpus\":[null]"), PROTO_E_INVALID_PARAM, "params.vcpus[0]");
	expect_err(ATTACH("\"vcpus\":[{\"cpus\":[0,99]}]"), PROTO_E_INVALID_PARAM, "params.vcpus[0].cpus[1]");
	expect_err(ATTACH(VC ",\"vcpu_count\":2,\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.vcpus");
	expect_err(ATTACH("\"vcpu_count\":2"), PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err(ATTACH("\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.vcpu_count");
	expect_err(ATTACH("\"vcpu_count\":0,\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.vcpu_count");
	expect_err(ATTACH("\"vcpu_count\":1025,\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.vcpu_count");
	expect_err(ATTACH(VC ",\"owner\":{\"pid\":0,\"vm_fd\":3}"), PROTO_E_INVALID_PARAM, "params.owner.pid");
	expect_err(ATTACH(VC ",\"owner\":{\"pid\":4194305,\"vm_fd\":3}"), PROTO_E_INVALID_PARAM, "params.owner.pid");
	expect_err(ATTACH(VC ",\"owner\":{\"pid\":1,\"vm_fd\":-1}"), PROTO_E_INVALID_PARAM, "params.owner.vm_fd");
	expect_err(ATTACH(VC ",\"owner\":{\"pid\":1}"), PROTO_E_INVALID_PARAM, "params.owner.vm_fd");
	expect_err(ATTACH(VC ",\"owner\":{\"pid\":1,\"vm_fd\":3,\"uid\":0}"), PROTO_E_UNKNOWN_FIELD, "params.owner.uid");
	expect_err(ATTACH(VC ",\"owner\":7"), PROTO_E_INVALID_PARAM, "params.owner");
}

static void test_vm_attach_many_vcpus(void **state)
{
	/* 1024 vCPUs in the array form fit the frame limit; 1025 are refused */
	size_t cap = 32 * 1024;
	char *buf = malloc(cap);
	struct proto_request req;

	(void)state;
	assert_non_null(buf);
	for (int n = 1024; n <= 1025; n++) {
		size_t used = (size_t)snprintf(buf, cap, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"big\",\"vcpus\":[");

		for (int i = 0; i < n; i++)
			used += (size_t)snprintf(buf + used, cap - used, "%s{\"cpus\":\"%d\"}", i ? "," : "", i % MAXCPU);
		snprintf(buf + used, cap - used, "]}}");
		if (n == 1024) {
			expect_ok(buf, &req);
			assert_int_equal(req.u.vm_attach.vcpus.count, 1024);
			assert_true(cpulist_test(&req.u.vm_attach.vcpus.cpus[1023], 1023 % MAXCPU));
			proto_request_fini(&req);
		} else {
			expect_err(buf, PROTO_E_INVALID_PARAM, "params.vcpus");
		}
	}
	free(buf);
}

static void test_vm_update(void **state)
{
	struct proto_request req;
	const struct proto_vm_update *u = &req.u.vm_update;

	(void)state;
	expect_ok("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"priority\":5}}", &req);
	assert_true(u->has_priority);
	assert_int_equal(u->priority, 5);
	assert_false(u->has_class || u->has_gp || u->has_fixed_mask || u->has_vcpus);
	expect_ok("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"class\":\"shared\","
		  "\"gp\":0,\"fixed_mask\":\"0xF\",\"vcpu_count\":2,\"cpus\":[1,2]}}", &req);
	assert_true(u->has_class && u->has_gp && u->has_fixed_mask && u->has_vcpus);
	assert_int_equal(u->cls, PROTO_CLASS_SHARED);
	assert_int_equal(u->fixed_mask, 15);
	assert_int_equal(u->vcpus.count, 2);
	proto_request_fini(&req);
	expect_err("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"v\"}}", PROTO_E_INVALID_PARAM, "params");
	expect_err("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"priority\":1}}", PROTO_E_INVALID_PARAM, "params.name");
	expect_err("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"owner\":{}}}", PROTO_E_UNKNOWN_FIELD, "params.owner");
	expect_err("{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"vcpus\":[{\"cpus\":\"1,,2\"}]}}",
		   PROTO_E_INVALID_PARAM, "params.vcpus[0].cpus");
}

static void test_name_methods(void **state)
{
	static const char *const names[] = { "vm.detach", "vm.show", "session.stop", "session.read" };
	static const enum proto_method ms[] = { PROTO_M_VM_DETACH, PROTO_M_VM_SHOW,
						PROTO_M_SESSION_STOP, PROTO_M_SESSION_READ };

	(void)state;
	for (size_t i = 0; i < 4; i++) {
		char buf[160];
		struct proto_request req;

		snprintf(buf, sizeof(buf), "{\"id\":1,\"method\":\"%s\",\"params\":{\"name\":\"x-1\"}}", names[i]);
		expect_ok(buf, &req);
		assert_int_equal(req.method, ms[i]);
		assert_string_equal(req.u.vm_detach.name, "x-1");
		snprintf(buf, sizeof(buf), "{\"id\":1,\"method\":\"%s\"}", names[i]);
		expect_err(buf, PROTO_E_INVALID_PARAM, "params.name");
		snprintf(buf, sizeof(buf), "{\"id\":1,\"method\":\"%s\",\"params\":{\"name\":\"x\",\"force\":true}}", names[i]);
		expect_err(buf, PROTO_E_UNKNOWN_FIELD, "params.force");
	}
}

#define BIND(params) "{\"id\":1,\"method\":\"vm.bind\",\"params\":{" params "}}"

static void test_vm_bind(void **state)
{
	struct proto_request req;
	const struct proto_vm_bind *b = &req.u.vm_bind;

	(void)state;
	expect_ok(BIND("\"name\":\"web-1\",\"pid\":1234"), &req);
	assert_int_equal(req.method, PROTO_M_VM_BIND);
	assert_string_equal(b->name, "web-1");
	assert_int_equal(b->pid, 1234);
	assert_false(b->has_vm_fd);
	expect_ok(BIND("\"name\":\"w\",\"pid\":4194304,\"vm_fd\":0"), &req);
	assert_int_equal(b->pid, 4194304);
	assert_true(b->has_vm_fd);
	assert_int_equal(b->vm_fd, 0);
	expect_ok(BIND("\"name\":\"w\",\"pid\":1,\"vm_fd\":2147483647"), &req);
	assert_int_equal(b->vm_fd, INT32_MAX);
	assert_false(b->route_fd);
	expect_ok(BIND("\"name\":\"w\",\"pid\":1,\"route_fd\":true"), &req);
	assert_true(b->route_fd);
	assert_false(b->has_vm_fd);
	expect_ok(BIND("\"name\":\"w\",\"pid\":1,\"route_fd\":false,\"vm_fd\":4"), &req);
	assert_false(b->route_fd);
	assert_true(b->has_vm_fd);
	/* encoded only when set, so a request without one reads as before */
	{
		struct json_object *p = proto_request_encode_params(&req, NULL);

		assert_non_null(p);
		assert_false(json_object_object_get_ex(p, "route_fd", NULL));
		json_object_put(p);
		req.u.vm_bind.route_fd = true;
		p = proto_request_encode_params(&req, NULL);
		assert_non_null(p);
		assert_string_equal(json_object_to_json_string(json_object_object_get(p, "route_fd")), "true");
		json_object_put(p);
	}

	expect_err(BIND("\"pid\":1"), PROTO_E_INVALID_PARAM, "params.name");
	expect_err(BIND("\"name\":\"w\""), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(BIND("\"name\":\"w\",\"pid\":0"), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(BIND("\"name\":\"w\",\"pid\":4194305"), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(BIND("\"name\":\"w\",\"pid\":\"12\""), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"vm_fd\":-1"), PROTO_E_INVALID_PARAM, "params.vm_fd");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"vm_fd\":2147483648"), PROTO_E_INVALID_PARAM, "params.vm_fd");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"vm_fd\":null"), PROTO_E_INVALID_PARAM, "params.vm_fd");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"owner\":{}"), PROTO_E_UNKNOWN_FIELD, "params.owner");
	expect_err(BIND("\"name\":\"..\",\"pid\":1"), PROTO_E_INVALID_PARAM, "params.name");
	/* a boolean, not the descriptor's number: the number means nothing
	 * in the daemon's fd table */
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"route_fd\":5"), PROTO_E_INVALID_PARAM, "params.route_fd");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"route_fd\":\"true\""), PROTO_E_INVALID_PARAM, "params.route_fd");
	expect_err(BIND("\"name\":\"w\",\"pid\":1,\"route_fd\":null"), PROTO_E_INVALID_PARAM, "params.route_fd");
}

#define SESS(extra) "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"s\"," extra "}}"
#define EV "\"events\":[\"cycles\"]"

static void test_session_start(void **state)
{
	struct proto_request req;
	const struct proto_session_start *s = &req.u.session_start;

	(void)state;
	expect_ok(SESS("\"events\":[\"cycles\",\"cpu/event=0x3c,umask=0x0/u\"],\"cpus\":\"0-1\",\"priority\":0,\"class\":\"shared\""), &req);
	assert_int_equal(s->n_events, 2);
	assert_string_equal(s->events[1], "cpu/event=0x3c,umask=0x0/u");
	assert_true(s->has_cpus);
	assert_int_equal(cpulist_count(&s->cpus), 2);
	assert_int_equal(s->priority, 0);
	assert_int_equal(s->cls, PROTO_CLASS_SHARED);
	proto_request_fini(&req);
	expect_ok(SESS(EV ",\"pid\":4194304"), &req);
	assert_false(s->has_cpus);
	assert_int_equal(s->pid, 4194304);
	assert_int_equal(s->priority, PROTO_DEFAULT_PRIORITY);
	assert_int_equal(s->cls, PROTO_CLASS_PREFERRED);
	assert_false(s->count_guest);
	proto_request_fini(&req);
	expect_ok(SESS(EV ",\"pid\":7,\"count_guest\":true"), &req);
	assert_true(s->count_guest);
	proto_request_fini(&req);
	expect_ok(SESS(EV ",\"pid\":7,\"count_guest\":false"), &req);
	assert_false(s->count_guest);
	proto_request_fini(&req);

	/* Encoded only when asked for: a request without it reads the same
	 * to a daemon that predates it. */
	{
		struct proto_request e = { .method = PROTO_M_SESSION_START };
		char *one[] = { "cycles" };
		struct json_object *o, *p;
		snprintf(e.u.session_start.name, sizeof(e.u.session_start.name), "s");
		e.u.session_start.n_events = 1;
		e.u.session_start.events = one;
		e.u.session_start.pid = 7;
		o = proto_request_encode(&e);
		assert_non_null(o);
		assert_true(json_object_object_get_ex(o, "params", &p));
		assert_false(json_object_object_get_ex(p, "count_guest", NULL));
		json_object_put(o);
		e.u.session_start.count_guest = true;
		o = proto_request_encode(&e);
		assert_true(json_object_object_get_ex(o, "params", &p));
		assert_string_equal(json_object_to_json_string(json_object_object_get(p, "count_guest")), "true");
		json_object_put(o);
	}
	expect_err(SESS(EV ",\"pid\":7,\"count_guest\":1"), PROTO_E_INVALID_PARAM, "params.count_guest");
	expect_err(SESS(EV ",\"pid\":7,\"count_guest\":\"yes\""), PROTO_E_INVALID_PARAM, "params.count_guest");
	expect_err(SESS(EV ",\"pid\":7,\"count_guest\":null"), PROTO_E_INVALID_PARAM, "params.count_guest");
	expect_err(SESS(EV ",\"pid\":7,\"count_guests\":true"), PROTO_E_UNKNOWN_FIELD, "params.count_guests");
	expect_err(SESS("\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events");
	expect_err(SESS("\"events\":[],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events");
	expect_err(SESS("\"events\":\"cycles\",\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events");
	expect_err(SESS("\"events\":[\"cycles\",1],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events[1]");
	expect_err(SESS("\"events\":[\"cy cles\"],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events[0]");
	expect_err(SESS("\"events\":[\"\"],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events[0]");
	expect_err(SESS("\"events\":[null],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events[0]");
	expect_err(SESS("\"events\":[\"a\",\"b\",\"a\"],\"cpus\":\"0\""), PROTO_E_INVALID_PARAM, "params.events[2]");
	expect_err(SESS(EV), PROTO_E_INVALID_PARAM, "params");
	expect_err(SESS(EV ",\"cpus\":\"0\",\"pid\":5"), PROTO_E_INVALID_PARAM, "params");
	expect_err(SESS(EV ",\"pid\":0"), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(SESS(EV ",\"pid\":-5"), PROTO_E_INVALID_PARAM, "params.pid");
	expect_err(SESS(EV ",\"cpus\":\"0-64\""), PROTO_E_INVALID_PARAM, "params.cpus");
	expect_err(SESS(EV ",\"cpus\":\"0\",\"priority\":2000"), PROTO_E_INVALID_PARAM, "params.priority");
	expect_err(SESS(EV ",\"cpus\":\"0\",\"gp\":1"), PROTO_E_UNKNOWN_FIELD, "params.gp");
}

static void test_session_event_limits(void **state)
{
	char buf[2048];
	size_t used;
	struct proto_request req;

	(void)state;
	for (int n = 64; n <= 65; n++) {
		used = (size_t)snprintf(buf, sizeof(buf), "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"pid\":1,\"events\":[");
		for (int i = 0; i < n; i++)
			used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s\"e%d\"", i ? "," : "", i);
		snprintf(buf + used, sizeof(buf) - used, "]}}");
		if (n == 64) {
			expect_ok(buf, &req);
			assert_int_equal(req.u.session_start.n_events, 64);
			proto_request_fini(&req);
		} else {
			expect_err(buf, PROTO_E_INVALID_PARAM, "params.events");
		}
	}
	/* 256 characters are accepted, 257 refused */
	for (int n = 256; n <= 257; n++) {
		used = (size_t)snprintf(buf, sizeof(buf), "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"pid\":1,\"events\":[\"");
		memset(buf + used, 'e', (size_t)n);
		used += (size_t)n;
		snprintf(buf + used, sizeof(buf) - used, "\"]}}");
		if (n == 256) {
			expect_ok(buf, &req);
			assert_int_equal(strlen(req.u.session_start.events[0]), 256);
			proto_request_fini(&req);
		} else {
			expect_err(buf, PROTO_E_INVALID_PARAM, "params.events[0]");
		}
	}
}

/* encode → serialise → decode must give back the same struct */
static void round_trip(const char *in)
{
	struct proto_request a, b;
	struct json_object *obj;
	const char *text;

	expect_ok(in, &a);
	obj = proto_request_encode(&a);
	assert_non_null(obj);
	text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	expect_ok(text, &b);
	assert_int_equal(a.id, b.id);
	assert_int_equal(a.method, b.method);
	switch (a.method) {
	case PROTO_M_VM_ATTACH:
		assert_string_equal(a.u.vm_attach.name, b.u.vm_attach.name);
		assert_int_equal(a.u.vm_attach.priority, b.u.vm_attach.priority);
		assert_int_equal(a.u.vm_attach.cls, b.u.vm_attach.cls);
		assert_int_equal(a.u.vm_attach.gp, b.u.vm_attach.gp);
		assert_int_equal(a.u.vm_attach.fixed_mask, b.u.vm_attach.fixed_mask);
		assert_int_equal(a.u.vm_attach.has_owner, b.u.vm_attach.has_owner);
		assert_memory_equal(&a.u.vm_attach.owner, &b.u.vm_attach.owner, sizeof(a.u.vm_attach.owner));
		assert_int_equal(a.u.vm_attach.vcpus.count, b.u.vm_attach.vcpus.count);
		for (uint32_t i = 0; i < a.u.vm_attach.vcpus.count; i++)
			assert_true(cpulist_equal(&a.u.vm_attach.vcpus.cpus[i], &b.u.vm_attach.vcpus.cpus[i]));
		break;
	case PROTO_M_VM_UPDATE:
		assert_int_equal(a.u.vm_update.has_vcpus, b.u.vm_update.has_vcpus);
		assert_int_equal(a.u.vm_update.has_priority, b.u.vm_update.has_priority);
		assert_int_equal(a.u.vm_update.has_class, b.u.vm_update.has_class);
		assert_int_equal(a.u.vm_update.has_gp, b.u.vm_update.has_gp);
		assert_int_equal(a.u.vm_update.has_fixed_mask, b.u.vm_update.has_fixed_mask);
		assert_int_equal(a.u.vm_update.fixed_mask, b.u.vm_update.fixed_mask);
		assert_int_equal(a.u.vm_update.vcpus.count, b.u.vm_update.vcpus.count);
		break;
	case PROTO_M_SESSION_START:
		assert_int_equal(a.u.session_start.n_events, b.u.session_start.n_events);
		for (uint32_t i = 0; i < a.u.session_start.n_events; i++)
			assert_string_equal(a.u.session_start.events[i], b.u.session_start.events[i]);
		assert_int_equal(a.u.session_start.has_cpus, b.u.session_start.has_cpus);
		assert_true(cpulist_equal(&a.u.session_start.cpus, &b.u.session_start.cpus));
		assert_int_equal(a.u.session_start.pid, b.u.session_start.pid);
		assert_int_equal(a.u.session_start.priority, b.u.session_start.priority);
		assert_int_equal(a.u.session_start.cls, b.u.session_start.cls);
		assert_int_equal(a.u.session_start.count_guest, b.u.session_start.count_guest);
		break;
	case PROTO_M_VM_BIND:
		assert_string_equal(a.u.vm_bind.name, b.u.vm_bind.name);
		assert_int_equal(a.u.vm_bind.pid, b.u.vm_bind.pid);
		assert_int_equal(a.u.vm_bind.has_vm_fd, b.u.vm_bind.has_vm_fd);
		assert_int_equal(a.u.vm_bind.vm_fd, b.u.vm_bind.vm_fd);
		assert_int_equal(a.u.vm_bind.route_fd, b.u.vm_bind.route_fd);
		break;
	case PROTO_M_HELLO:
		assert_string_equal(a.u.hello.client, b.u.hello.client);
		break;
	case PROTO_M_PLAN:
		assert_int_equal(a.u.plan.has_cpus, b.u.plan.has_cpus);
		assert_true(cpulist_equal(&a.u.plan.cpus, &b.u.plan.cpus));
		break;
	default:
		assert_string_equal(a.u.vm_detach.name, b.u.vm_detach.name);
		break;
	}
	json_object_put(obj);
	proto_request_fini(&a);
	proto_request_fini(&b);
}

static void test_round_trips(void **state)
{
	(void)state;
	round_trip("{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"vpmuctl/0.1\"}}");
	round_trip("{\"id\":2,\"method\":\"status\"}");
	round_trip("{\"id\":3,\"method\":\"plan\",\"params\":{\"cpus\":[5,1,2,3]}}");
	round_trip("{\"id\":3,\"method\":\"plan\"}");
	round_trip("{\"id\":4,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"vcpus\":[{\"cpus\":\"0-3\"},{\"cpus\":\"4\"}],"
		   "\"owner\":{\"pid\":9,\"vm_fd\":0},\"fixed_mask\":\"0xffff\",\"class\":\"shared\",\"gp\":3}}");
	round_trip("{\"id\":5,\"method\":\"vm.attach\",\"params\":{\"name\":\"b\",\"vcpu_count\":1024,\"cpus\":\"0-63\"}}");
	round_trip("{\"id\":6,\"method\":\"vm.update\",\"params\":{\"name\":\"b\",\"fixed_mask\":3}}");
	round_trip("{\"id\":6,\"method\":\"vm.update\",\"params\":{\"name\":\"b\",\"vcpus\":[{\"cpus\":\"1\"},{\"cpus\":\"2\"}],\"priority\":1}}");
	round_trip("{\"id\":7,\"method\":\"vm.detach\",\"params\":{\"name\":\"b\"}}");
	round_trip("{\"id\":8,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"a\",\"b\"],\"pid\":77}}");
	round_trip("{\"id\":9,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"a\"],\"cpus\":\"1,3\",\"class\":\"guaranteed\"}}");
	round_trip("{\"id\":9,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"a\"],\"pid\":3,\"count_guest\":true}}");
	round_trip("{\"id\":10,\"method\":\"session.read\",\"params\":{\"name\":\"s\"}}");
	round_trip("{\"id\":11,\"method\":\"vm.bind\",\"params\":{\"name\":\"v\",\"pid\":42}}");
	round_trip("{\"id\":12,\"method\":\"vm.bind\",\"params\":{\"name\":\"v\",\"pid\":42,\"vm_fd\":0}}");
	round_trip("{\"id\":13,\"method\":\"vm.bind\",\"params\":{\"name\":\"v\",\"pid\":42,\"route_fd\":true}}");
	round_trip("{\"id\":14,\"method\":\"vm.bind\",\"params\":{\"name\":\"v\",\"pid\":42,\"route_fd\":false}}");
}

static void test_encode_rejects_invalid(void **state)
{
	struct proto_request req;

	(void)state;
	memset(&req, 0, sizeof(req));
	req.method = PROTO_M__COUNT;
	assert_null(proto_request_encode(&req));
	req.method = PROTO_M_VM_ATTACH; /* zero vCPUs */
	assert_null(proto_request_encode(&req));
	req.method = PROTO_M_VM_BIND; /* pid 0 */
	snprintf(req.u.vm_bind.name, sizeof(req.u.vm_bind.name), "v");
	assert_null(proto_request_encode(&req));
	req.u.vm_bind.pid = 5;
	req.u.vm_bind.has_vm_fd = true;
	req.u.vm_bind.vm_fd = -1;
	assert_null(proto_request_encode(&req));
	req.u.vm_bind.vm_fd = 3;
	struct json_object *ok = proto_request_encode(&req);
	assert_non_null(ok);
	json_object_put(ok);
	memset(&req, 0, sizeof(req));
	req.method = PROTO_M_STATUS;
	req.id = PROTO_MAX_ID + 1;
	assert_null(proto_request_encode(&req));
}

static void test_encode_params(void **state)
{
	static const char *const omit[] = { "priority", "class", NULL };
	struct proto_request req;
	struct json_object *p, *v;

	(void)state;
	expect_ok("{\"id\":4,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"vcpu_count\":2,\"cpus\":\"1\"}}", &req);
	p = proto_request_encode_params(&req, omit);
	assert_non_null(p);
	assert_false(json_object_object_get_ex(p, "priority", NULL));
	assert_false(json_object_object_get_ex(p, "class", NULL));
	assert_true(json_object_object_get_ex(p, "name", &v));
	assert_string_equal(json_object_get_string(v), "a");
	assert_false(json_object_object_get_ex(p, "id", NULL)); /* params alone */
	json_object_put(p);
	p = proto_request_encode_params(&req, NULL);
	assert_true(json_object_object_get_ex(p, "priority", NULL));
	json_object_put(p);
	proto_request_fini(&req);
	req.method = PROTO_M__COUNT;
	assert_null(proto_request_encode_params(&req, NULL));
}

static void test_names_tables(void **state)
{
	(void)state;
	for (int i = 0; i < PROTO_M__COUNT; i++)
		assert_int_equal(proto_method_from_name(proto_method_name((enum proto_method)i)), i);
	assert_int_equal(proto_method_from_name("VM.ATTACH"), -ENOENT);
	assert_null(proto_method_name(PROTO_M__COUNT));
	for (int i = 0; i < PROTO_CLASS__COUNT; i++)
		assert_int_equal(proto_class_from_name(proto_class_name((enum proto_class)i)), i);
	for (int i = 0; i < PROTO_E_UNKNOWN; i++) {
		assert_int_equal(proto_errcode_from_name(proto_errcode_name((enum proto_errcode)i)), i);
		assert_true(proto_errcode_errno((enum proto_errcode)i) > 0);
		/* the default errno maps back to its own code, except unknown_field,
		 * which shares EINVAL with invalid_param */
		if (i != PROTO_E_UNKNOWN_FIELD)
			assert_int_equal(proto_errcode_from_errno(-proto_errcode_errno((enum proto_errcode)i)), i);
	}
	assert_int_equal(proto_errcode_from_name("quota_exceeded"), PROTO_E_UNKNOWN);
	assert_int_equal(proto_errcode_from_name("unknown"), PROTO_E_UNKNOWN);
	assert_int_equal(proto_errcode_from_errno(-ESRCH), PROTO_E_NOT_FOUND);
	assert_int_equal(proto_errcode_from_errno(-EACCES), PROTO_E_PERMISSION_DENIED);
}

/* ------------------------------------------------------------ framing */

static void test_reader_split_and_multi(void **state)
{
	struct frame_reader r;
	const char *f;
	size_t n;
	const char *stream = "{\"a\":1}\n\n{\"b\":2}\r\n\r\n{\"c\":3}\n{\"d\"";

	(void)state;
	assert_int_equal(frame_reader_init(&r, 64), 0);
	/* byte by byte */
	for (size_t i = 0; i < strlen(stream); i++)
		assert_int_equal(frame_reader_feed(&r, stream + i, 1), 0);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{\"a\":1}");
	assert_int_equal(n, 7);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{\"b\":2}\r");
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{\"c\":3}");
	assert_int_equal(frame_reader_next(&r, &f, &n), 0);
	assert_true(frame_reader_pending(&r));
	assert_int_equal(frame_reader_feed(&r, ":4}\n{\"e\":5}\n", 12), 0);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{\"d\":4}");
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{\"e\":5}");
	assert_int_equal(frame_reader_next(&r, &f, &n), 0);
	assert_false(frame_reader_pending(&r));
	frame_reader_fini(&r);
}

static void test_reader_oversize(void **state)
{
	struct frame_reader r;
	const char *f;
	size_t n;
	char big[40];

	(void)state;
	memset(big, 'x', sizeof(big));
	assert_int_equal(frame_reader_init(&r, 16), 0);
	/* exactly at the limit is fine */
	assert_int_equal(frame_reader_feed(&r, big, 16), 0);
	assert_int_equal(frame_reader_feed(&r, "\n", 1), 0);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_int_equal(n, 16);
	/* a complete frame before the oversized one is still delivered */
	assert_int_equal(frame_reader_feed(&r, "{}\n", 3), 0);
	assert_int_equal(frame_reader_feed(&r, big, 10), 0);
	assert_int_equal(frame_reader_feed(&r, big, 7), -EMSGSIZE);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_string_equal(f, "{}");
	assert_int_equal(frame_reader_next(&r, &f, &n), -EMSGSIZE);
	/* the stream stays refused, and buffered no more than the limit */
	assert_int_equal(frame_reader_feed(&r, "\n{}\n", 4), -EMSGSIZE);
	assert_true(r.len <= 3 + 16);
	assert_true(frame_reader_pending(&r));
	frame_reader_fini(&r);

	/* an unterminated flood in one feed is cut at the limit */
	assert_int_equal(frame_reader_init(&r, 16), 0);
	assert_int_equal(frame_reader_feed(&r, big, sizeof(big)), -EMSGSIZE);
	assert_true(r.len <= 16);
	assert_int_equal(frame_reader_next(&r, &f, &n), -EMSGSIZE);
	frame_reader_fini(&r);

	assert_int_equal(frame_reader_init(&r, 0), -EINVAL);
	assert_int_equal(frame_reader_init(&r, PROTO_MAX_RESPONSE + 1), -EINVAL);
}

static void test_reader_large_real_limit(void **state)
{
	struct frame_reader r;
	const char *f;
	size_t n;
	size_t sz = PROTO_MAX_REQUEST + 2;
	char *buf = malloc(sz);

	(void)state;
	assert_non_null(buf);
	assert_int_equal(frame_reader_init(&r, PROTO_MAX_REQUEST), 0);
	memset(buf, ' ', sz);
	buf[PROTO_MAX_REQUEST] = '\n';
	/* 64 KiB of spaces and a newline: at the limit, accepted */
	assert_int_equal(frame_reader_feed(&r, buf, PROTO_MAX_REQUEST + 1), 0);
	assert_int_equal(frame_reader_next(&r, &f, &n), 1);
	assert_int_equal(n, PROTO_MAX_REQUEST);
	/* one byte more is not */
	buf[PROTO_MAX_REQUEST] = ' ';
	assert_int_equal(frame_reader_feed(&r, buf, PROTO_MAX_REQUEST + 1), -EMSGSIZE);
	frame_reader_fini(&r);
	free(buf);
}

static void test_frame_encode(void **state)
{
	struct json_object *o = json_object_new_object();
	char *out;
	size_t n;

	(void)state;
	json_object_object_add(o, "s", json_object_new_string("line1\nline2/x"));
	assert_int_equal(frame_encode(o, PROTO_MAX_REQUEST, &out, &n), 0);
	/* exactly one newline, at the end: the framing invariant */
	assert_ptr_equal(memchr(out, '\n', n), out + n - 1);
	assert_memory_equal(out, "{\"s\":\"line1\\nline2/x\"}\n", n);
	free(out);
	assert_int_equal(frame_encode(o, 5, &out, &n), -EMSGSIZE);
	json_object_put(o);
	o = json_object_new_array();
	assert_int_equal(frame_encode(o, 100, &out, &n), -EINVAL);
	json_object_put(o);
}

/* ------------------------------------------------------------ responses */

static void test_result_and_error_round_trip(void **state)
{
	struct json_object *res = json_object_new_object(), *msg;
	struct proto_response r;
	struct proto_error e;
	char *out;
	size_t n;

	(void)state;
	json_object_object_add(res, "generation", json_object_new_int(4));
	msg = response_result(12, res);
	assert_int_equal(frame_encode(msg, PROTO_MAX_RESPONSE, &out, &n), 0);
	assert_int_equal(response_decode(out, n - 1, &r), 0);
	assert_int_equal(r.kind, PROTO_RESP_RESULT);
	assert_true(r.id_known);
	assert_int_equal(r.id, 12);
	assert_non_null(r.body);
	assert_int_equal(json_object_get_int(json_object_object_get(r.body, "generation")), 4);
	response_fini(&r);
	free(out);
	json_object_put(msg);

	proto_error_set(&e, PROTO_E_INVALID_PARAM, ERANGE, "params.vcpus[2].cpus", "bad %s", "cpus");
	msg = response_error(true, 13, &e);
	assert_int_equal(frame_encode(msg, PROTO_MAX_RESPONSE, &out, &n), 0);
	assert_int_equal(response_decode(out, n - 1, &r), 0);
	assert_int_equal(r.kind, PROTO_RESP_ERROR);
	assert_int_equal(r.id, 13);
	assert_int_equal(r.error.code, PROTO_E_INVALID_PARAM);
	assert_int_equal(r.error.err, ERANGE);
	assert_string_equal(r.error.field, "params.vcpus[2].cpus");
	assert_string_equal(r.error.message, "bad cpus");
	response_fini(&r);
	free(out);
	json_object_put(msg);

	/* unreadable id → "id": null */
	proto_error_set(&e, PROTO_E_BAD_REQUEST, 0, NULL, "junk");
	msg = response_error(false, 0, &e);
	assert_int_equal(frame_encode(msg, PROTO_MAX_RESPONSE, &out, &n), 0);
	assert_memory_equal(out, "{\"id\":null,\"error\":{\"code\":\"bad_request\",\"errno\":74,\"message\":\"junk\"}}\n", n);
	assert_int_equal(response_decode(out, n - 1, &r), 0);
	assert_false(r.id_known);
	assert_int_equal(r.error.err, EBADMSG);
	free(out);
	json_object_put(msg);
}

static void test_event_and_hello(void **state)
{
	struct json_object *body = json_object_new_object(), *msg, *h;
	struct proto_response r;
	const char *text;
	uint32_t p;
	char server[32];

	(void)state;
	json_object_object_add(body, "cpus", json_object_new_array());
	msg = response_event("plan", 77, body);
	assert_non_null(msg);
	text = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
	assert_int_equal(response_decode(text, strlen(text), &r), 0);
	assert_int_equal(r.kind, PROTO_RESP_EVENT);
	assert_string_equal(r.event, "plan");
	assert_int_equal(r.generation, 77);
	assert_non_null(json_object_object_get(r.body, "cpus"));
	response_fini(&r);
	json_object_put(msg);

	body = json_object_new_object();
	json_object_object_add(body, "generation", json_object_new_int(1));
	assert_null(response_event("plan", 1, body));

	h = response_hello_result("vpmud/0.1.0");
	assert_int_equal(response_hello_result_decode(h, &p, server, sizeof(server)), 0);
	assert_int_equal(p, PROTO_VERSION);
	assert_string_equal(server, "vpmud/0.1.0");
	json_object_put(h);
}

static void test_response_decode_rejects(void **state)
{
	static const char *const bad[] = {
		"[]", "{}", "{\"id\":1}", "{\"id\":null,\"result\":{}}", "{\"id\":1,\"result\":[]}",
		"{\"id\":-1,\"result\":{}}", "{\"id\":1,\"error\":{}}", "{\"id\":1,\"error\":{\"code\":3}}",
		"{\"event\":\"plan\"}", "{\"event\":5,\"generation\":1}", "{\"event\":\"\",\"generation\":1}",
		"{\"id\":1,\"result\":{}} x", "{\"id\":1,\"result\":{\"s\":\"\xff\"}}",
	};
	struct proto_response r;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (response_decode(bad[i], strlen(bad[i]), &r) != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
	/* codes from a newer server degrade to "unknown" but keep the text */
	{
		static const char newer[] = "{\"id\":1,\"error\":{\"code\":\"quota\",\"message\":\"m\",\"new\":1}}";

		assert_int_equal(response_decode(newer, sizeof(newer) - 1, &r), 0);
	}
	assert_int_equal(r.error.code, PROTO_E_UNKNOWN);
	assert_string_equal(r.error.message, "m");
	/* PROTO_E_UNKNOWN never reaches the wire */
	{
		struct proto_error e;
		struct json_object *m;

		proto_error_set(&e, PROTO_E_UNKNOWN, 0, NULL, "x");
		m = response_error(true, 1, &e);
		assert_string_equal(json_object_get_string(json_object_object_get(json_object_object_get(m, "error"), "code")),
				    "internal");
		json_object_put(m);
	}
}

/* ------------------------------------------------ typed requests (validate) */

static struct cpulist one_cpu(unsigned int cpu)
{
	struct cpulist l;

	cpulist_clear(&l);
	cpulist_set(&l, cpu);
	return l;
}

/* vCPU storage for the typed requests below (no heap to free) */
static struct cpulist vcpu_sets[3];
static char *event_names[3];

static struct proto_request valid(enum proto_method m)
{
	struct proto_request r;

	memset(&r, 0, sizeof(r));
	r.method = m;
	for (int i = 0; i < 3; i++)
		vcpu_sets[i] = one_cpu((unsigned int)i);
	event_names[0] = "cycles";
	event_names[1] = "instructions";
	event_names[2] = "branches";
	switch (m) {
	case PROTO_M_HELLO:
		r.u.hello.protocol = PROTO_VERSION;
		snprintf(r.u.hello.client, sizeof(r.u.hello.client), "vpmuctl/1");
		break;
	case PROTO_M_PLAN:
		r.u.plan.has_cpus = true;
		r.u.plan.cpus = one_cpu(MAXCPU - 1);
		break;
	case PROTO_M_VM_ATTACH:
		snprintf(r.u.vm_attach.name, sizeof(r.u.vm_attach.name), "vm-1");
		r.u.vm_attach.has_priority = r.u.vm_attach.has_class = true;
		r.u.vm_attach.priority = PROTO_MAX_PRIORITY;
		r.u.vm_attach.cls = PROTO_CLASS_SHARED;
		r.u.vm_attach.gp = PROTO_MAX_GP;
		r.u.vm_attach.fixed_mask = PROTO_MAX_FIXED_MASK;
		r.u.vm_attach.vcpus.count = 3;
		r.u.vm_attach.vcpus.cpus = vcpu_sets;
		r.u.vm_attach.has_owner = true;
		r.u.vm_attach.owner.pid = PROTO_MAX_PID;
		r.u.vm_attach.owner.vm_fd = 0;
		break;
	case PROTO_M_VM_UPDATE:
		snprintf(r.u.vm_update.name, sizeof(r.u.vm_update.name), "vm-1");
		r.u.vm_update.has_gp = true;
		r.u.vm_update.gp = 2;
		break;
	case PROTO_M_SESSION_START:
		snprintf(r.u.session_start.name, sizeof(r.u.session_start.name), "s");
		r.u.session_start.n_events = 3;
		r.u.session_start.events = event_names;
		r.u.session_start.has_cpus = true;
		r.u.session_start.cpus = one_cpu(0);
		r.u.session_start.cls = PROTO_CLASS_GUARANTEED;
		break;
	case PROTO_M_VM_BIND:
		snprintf(r.u.vm_bind.name, sizeof(r.u.vm_bind.name), "vm-1");
		r.u.vm_bind.pid = 1;
		r.u.vm_bind.has_vm_fd = true;
		r.u.vm_bind.vm_fd = INT32_MAX;
		break;
	case PROTO_M_VM_DETACH:
	case PROTO_M_VM_SHOW:
	case PROTO_M_SESSION_STOP:
	case PROTO_M_SESSION_READ:
		snprintf(r.u.vm_detach.name, sizeof(r.u.vm_detach.name), "x");
		break;
	default:
		break;
	}
	return r;
}

static void refused(const struct proto_request *r, enum proto_errcode code, const char *field)
{
	struct proto_error e;
	int rc;

	memset(&e, 0, sizeof(e));
	rc = proto_request_validate(r, MAXCPU, &e);
	if (rc == 0)
		fail_msg("%s: accepted, want %s at %s", proto_method_name(r->method), proto_errcode_name(code),
			 field);
	assert_int_equal(rc, -e.err);
	if (e.code != code || strcmp(e.field, field) != 0)
		fail_msg("%s: got %s at \"%s\" (%s), want %s at \"%s\"", proto_method_name(r->method),
			 proto_errcode_name(e.code), e.field, e.message, proto_errcode_name(code), field);
	assert_true(e.message[0] != '\0');
}

static void test_validate_accepts(void **state)
{
	struct proto_error e;

	(void)state;
	for (int m = 0; m < PROTO_M__COUNT; m++) {
		struct proto_request r = valid((enum proto_method)m);

		if (proto_request_validate(&r, MAXCPU, &e) != 0)
			fail_msg("%s: %s (%s)", proto_method_name(r.method), e.message, e.field);
	}
	{
		/* optional members that are not given are not checked */
		struct proto_request r = valid(PROTO_M_VM_UPDATE);

		r.u.vm_update.priority = 99999;
		r.u.vm_update.cls = (enum proto_class)7;
		assert_int_equal(proto_request_validate(&r, MAXCPU, &e), 0);
		/* vm.attach: without has_priority the daemon's default replaces it */
		r = valid(PROTO_M_VM_ATTACH);
		r.u.vm_attach.has_priority = false;
		r.u.vm_attach.priority = 99999;
		assert_int_equal(proto_request_validate(&r, MAXCPU, &e), 0);
		r = valid(PROTO_M_HELLO);
		r.u.hello.client[0] = '\0';
		assert_int_equal(proto_request_validate(&r, MAXCPU, &e), 0);
		r = valid(PROTO_M_SESSION_START);
		r.u.session_start.has_cpus = false;
		r.u.session_start.pid = PROTO_MAX_PID;
		assert_int_equal(proto_request_validate(&r, MAXCPU, &e), 0);
	}
}

static void test_validate_refuses(void **state)
{
	struct proto_request r;

	(void)state;
	r = valid(PROTO_M_HELLO), r.u.hello.protocol = PROTO_VERSION + 1;
	refused(&r, PROTO_E_UNSUPPORTED_VERSION, "params.protocol");
	r = valid(PROTO_M_HELLO), r.u.hello.protocol = 0;
	refused(&r, PROTO_E_INVALID_PARAM, "params.protocol");
	r = valid(PROTO_M_HELLO), snprintf(r.u.hello.client, sizeof(r.u.hello.client), "a b");
	refused(&r, PROTO_E_INVALID_PARAM, "params.client");
	r = valid(PROTO_M_HELLO), memset(r.u.hello.client, 'c', sizeof(r.u.hello.client)); /* unterminated */
	refused(&r, PROTO_E_INVALID_PARAM, "params.client");

	r = valid(PROTO_M_PLAN), cpulist_clear(&r.u.plan.cpus);
	refused(&r, PROTO_E_INVALID_PARAM, "params.cpus");
	r = valid(PROTO_M_PLAN), r.u.plan.cpus = one_cpu(MAXCPU);
	refused(&r, PROTO_E_INVALID_PARAM, "params.cpus");

	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.name[0] = '\0';
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");
	r = valid(PROTO_M_VM_ATTACH), snprintf(r.u.vm_attach.name, sizeof(r.u.vm_attach.name), "a/b");
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");
	r = valid(PROTO_M_VM_ATTACH), snprintf(r.u.vm_attach.name, sizeof(r.u.vm_attach.name), "..");
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");
	r = valid(PROTO_M_VM_ATTACH), memset(r.u.vm_attach.name, 'n', sizeof(r.u.vm_attach.name));
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.priority = PROTO_MAX_PRIORITY + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.priority");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.cls = PROTO_CLASS__COUNT;
	refused(&r, PROTO_E_INVALID_PARAM, "params.class");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.gp = PROTO_MAX_GP + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.gp");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.fixed_mask = PROTO_MAX_FIXED_MASK + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.fixed_mask");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.vcpus.count = 0;
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.vcpus.count = PROTO_MAX_VCPUS + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.vcpus.cpus = NULL;
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus");
	r = valid(PROTO_M_VM_ATTACH), cpulist_clear(&vcpu_sets[1]);
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus[1].cpus");
	r = valid(PROTO_M_VM_ATTACH), vcpu_sets[2] = one_cpu(MAXCPU);
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus[2].cpus");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.owner.pid = 0;
	refused(&r, PROTO_E_INVALID_PARAM, "params.owner.pid");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.owner.pid = PROTO_MAX_PID + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.owner.pid");
	r = valid(PROTO_M_VM_ATTACH), r.u.vm_attach.owner.vm_fd = -1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.owner.vm_fd");

	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.has_gp = false;
	refused(&r, PROTO_E_INVALID_PARAM, "params");
	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.gp = PROTO_MAX_GP + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.gp");
	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.has_priority = true, r.u.vm_update.priority = 1001;
	refused(&r, PROTO_E_INVALID_PARAM, "params.priority");
	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.has_class = true, r.u.vm_update.cls = (enum proto_class)-1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.class");
	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.has_fixed_mask = true, r.u.vm_update.fixed_mask = 0x10000;
	refused(&r, PROTO_E_INVALID_PARAM, "params.fixed_mask");
	r = valid(PROTO_M_VM_UPDATE), r.u.vm_update.has_vcpus = true;
	refused(&r, PROTO_E_INVALID_PARAM, "params.vcpus");
	r = valid(PROTO_M_VM_UPDATE), snprintf(r.u.vm_update.name, sizeof(r.u.vm_update.name), ".");
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");

	r = valid(PROTO_M_SESSION_START), r.u.session_start.n_events = 0;
	refused(&r, PROTO_E_INVALID_PARAM, "params.events");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.n_events = PROTO_MAX_EVENTS + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.events");
	r = valid(PROTO_M_SESSION_START), event_names[1] = "cy cles";
	refused(&r, PROTO_E_INVALID_PARAM, "params.events[1]");
	r = valid(PROTO_M_SESSION_START), event_names[1] = NULL;
	refused(&r, PROTO_E_INVALID_PARAM, "params.events[1]");
	r = valid(PROTO_M_SESSION_START), event_names[2] = "cycles";
	refused(&r, PROTO_E_INVALID_PARAM, "params.events[2]");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.has_cpus = false;
	refused(&r, PROTO_E_INVALID_PARAM, "params");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.pid = 5;
	refused(&r, PROTO_E_INVALID_PARAM, "params");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.has_cpus = false, r.u.session_start.pid = -5;
	refused(&r, PROTO_E_INVALID_PARAM, "params.pid");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.cpus = one_cpu(MAXCPU);
	refused(&r, PROTO_E_INVALID_PARAM, "params.cpus");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.owner_pid = PROTO_MAX_PID + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.owner_pid");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.priority = PROTO_MAX_PRIORITY + 1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.priority");
	r = valid(PROTO_M_SESSION_START), r.u.session_start.cls = PROTO_CLASS__COUNT;
	refused(&r, PROTO_E_INVALID_PARAM, "params.class");

	r = valid(PROTO_M_VM_BIND), r.u.vm_bind.pid = 0;
	refused(&r, PROTO_E_INVALID_PARAM, "params.pid");
	r = valid(PROTO_M_VM_BIND), r.u.vm_bind.vm_fd = -1;
	refused(&r, PROTO_E_INVALID_PARAM, "params.vm_fd");
	r = valid(PROTO_M_VM_BIND), r.u.vm_bind.name[0] = '\0';
	refused(&r, PROTO_E_INVALID_PARAM, "params.name");

	static const enum proto_method name_only[] = { PROTO_M_VM_DETACH, PROTO_M_VM_SHOW, PROTO_M_SESSION_STOP,
							PROTO_M_SESSION_READ };
	for (size_t i = 0; i < sizeof(name_only) / sizeof(name_only[0]); i++) {
		r = valid(name_only[i]);
		snprintf(r.u.vm_detach.name, sizeof(r.u.vm_detach.name), "a b");
		refused(&r, PROTO_E_INVALID_PARAM, "params.name");
	}

	r = valid(PROTO_M_STATUS), r.method = PROTO_M__COUNT;
	refused(&r, PROTO_E_INTERNAL, "");
	r = valid(PROTO_M_STATUS);
	{
		struct proto_error e;

		assert_int_equal(proto_request_validate(&r, 0, &e), -EINVAL);
		assert_int_equal(e.code, PROTO_E_INTERNAL);
		assert_int_equal(proto_request_validate(&r, CPULIST_MAX_CPUS + 1, &e), -EINVAL);
		assert_int_equal(proto_request_validate(NULL, MAXCPU, &e), -EINVAL);
	}
}

/* The JSON decoder and validate agree: what one decodes, the other accepts. */
static void test_validate_after_decode(void **state)
{
	static const char *const ok[] = {
		"{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"vcpu_count\":4,\"cpus\":\"0-63\"}}",
		"{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"a\"],\"pid\":9,\"owner_pid\":3}}",
		"{\"id\":1,\"method\":\"hello\",\"params\":{\"protocol\":1}}",
		"{\"id\":1,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"vcpus\":[{\"cpus\":[1,2]}]}}",
	};
	struct proto_error e;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct proto_request r;

		expect_ok(ok[i], &r);
		if (proto_request_validate(&r, MAXCPU, &e) != 0)
			fail_msg("%s: %s", ok[i], e.message);
		proto_request_fini(&r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_envelope_id_reported),
		cmocka_unit_test(test_bad_bytes),
		cmocka_unit_test(test_utf8_strict),
		cmocka_unit_test(test_oversize_request),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_hello_check),
		cmocka_unit_test(test_no_param_methods),
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_vm_attach_full),
		cmocka_unit_test(test_vm_attach_defaults_and_compact),
		cmocka_unit_test(test_vm_attach_errors),
		cmocka_unit_test(test_vm_attach_many_vcpus),
		cmocka_unit_test(test_vm_update),
		cmocka_unit_test(test_name_methods),
		cmocka_unit_test(test_vm_bind),
		cmocka_unit_test(test_session_start),
		cmocka_unit_test(test_session_event_limits),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_encode_rejects_invalid),
		cmocka_unit_test(test_encode_params),
		cmocka_unit_test(test_validate_accepts),
		cmocka_unit_test(test_validate_refuses),
		cmocka_unit_test(test_validate_after_decode),
		cmocka_unit_test(test_names_tables),
		cmocka_unit_test(test_reader_split_and_multi),
		cmocka_unit_test(test_reader_oversize),
		cmocka_unit_test(test_reader_large_real_limit),
		cmocka_unit_test(test_frame_encode),
		cmocka_unit_test(test_result_and_error_round_trip),
		cmocka_unit_test(test_event_and_hello),
		cmocka_unit_test(test_response_decode_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
