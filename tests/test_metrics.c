/* SPDX-License-Identifier: MIT */
/*
 * The metrics renderer on a broker with VMs and sessions (Ice Lake model
 * PMU, model KVM backend, a private state directory): every family is
 * there, the values follow the plan and the counters of refusals,
 * preemptions and fallbacks, label values are escaped, and a caller who
 * is not an admin sees other users' sessions without their events.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "broker/broker.h"
#include "broker/metrics.h"
#include "doors/json_door.h"
#include "kvm/kvm_model.h"
#include "kvm/kvm_port.h"
#include "pmu/pmu.h"
#include "pmu/pmu_model.h"
#include "proto/config.h"

struct fx {
	char dir[64];
	struct config cfg;
	struct pmu_desc *pmu;
	sd_event *ev;
	struct kvm_model *model;
	struct kvm_port *port;
	struct broker *b;
	char *text;        /* the last rendering */
};

static struct broker_caller root = { .door = BROKER_DOOR_SOCKET, .uid = 0 };
static const struct broker_caller nobody = { .door = BROKER_DOOR_SOCKET, .uid = 65534, .gid = 65534 };

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256], why[256];
	struct proto_error perr = {0};
	root.pid = getpid();
	snprintf(f->dir, sizeof(f->dir), "/tmp/vpmu-test-metrics.XXXXXX");
	if (!f || !mkdtemp(f->dir))
		return -1;
	config_defaults(&f->cfg);
	f->pmu = calloc(1, sizeof(*f->pmu));
	if (pmu_model_load("icelake-8360y", f->pmu, err, sizeof(err)) < 0 || sd_event_new(&f->ev) < 0)
		return -1;
	struct kvm_model_opts mo = { .n_cpus = f->pmu->n_cpus, .num_gp = f->pmu->num_gp,
				     .fixed_mask = f->pmu->fixed_mask };
	if (kvm_model_new(&mo, &f->model) < 0)
		return -1;
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = f->pmu->n_cpus,
				    .num_gp = f->pmu->num_gp, .fixed_mask = f->pmu->fixed_mask, .model = f->model,
				    .caller = { .cap_sys_admin = true } };
	if (kvm_port_open(&po, &f->port, why, sizeof(why)) < 0)
		return -1;
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->dir };
	if (broker_new(&bo, &f->b, &perr) < 0 || broker_restore(f->b) < 0)
		return -1;
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;
	char cmd[128];
	free(f->text);
	broker_free(f->b);
	kvm_port_close(f->port);
	kvm_model_free(f->model);
	sd_event_unref(f->ev);
	free(f->pmu);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int r = system(cmd);
	free(f);
	return r == 0 ? 0 : -1;
}

/* Runs a request as the socket would decode it; returns the error code
 * (0 on success). */
static int run_as(struct fx *f, const struct broker_caller *c, const char *json)
{
	struct proto_request req;
	struct proto_error err = {0};
	struct json_object *res = NULL;
	bool id_known;
	uint64_t id;
	memset(&req, 0, sizeof(req));
	if (proto_request_decode(json, strlen(json), PMU_MAX_CPUS, &req, &id_known, &id, &err) < 0)
		fail_msg("test request does not decode: %s", err.message);
	int r = json_door_call(f->b, c, &req, &res, &err);
	proto_request_fini(&req);
	json_object_put(res);
	return r < 0 ? (int)err.code : 0;
}

static void ok(struct fx *f, const char *json)
{
	int code = run_as(f, &root, json);
	if (code)
		fail_msg("%s failed: %s", json, proto_errcode_name(code));
}

static void render(struct fx *f, const struct broker_viewer *w)
{
	size_t len = 0;
	free(f->text);
	f->text = NULL;
	assert_int_equal(metrics_render(f->b, w, &f->text, &len), 0);
	assert_int_equal(strlen(f->text), len);
}

/* The value of the sample whose line starts with series ("name{labels}"
 * exactly as rendered, or a bare name), or -1 when there is none. */
static double value_of(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, series, n) && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	}
	return -1;
}

static bool has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, line, n) && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static void expect(const char *text, const char *series, double want)
{
	double got = value_of(text, series);
	if (got != want)
		fail_msg("%s: want %g, got %g (-1: absent)\n%s", series, want, got, text);
}

static const char *const families[][2] = {
	{ "vpmu_build_info", "gauge" },
	{ "vpmu_host_info", "gauge" },
	{ "vpmu_pmu_simulated", "gauge" },
	{ "vpmu_kvm_simulated", "gauge" },
	{ "vpmu_kvm_enforced", "gauge" },
	{ "vpmu_plan_generation", "gauge" },
	{ "vpmu_vms", "gauge" },
	{ "vpmu_sessions", "gauge" },
	{ "vpmu_cpu_counters", "gauge" },
	{ "vpmu_vm_info", "gauge" },
	{ "vpmu_vm_priority", "gauge" },
	{ "vpmu_vm_vcpus", "gauge" },
	{ "vpmu_vm_pmcs", "gauge" },
	{ "vpmu_session_info", "gauge" },
	{ "vpmu_session_priority", "gauge" },
	{ "vpmu_session_events", "gauge" },
	{ "vpmu_session_events_not_counted", "gauge" },
	{ "vpmu_session_running_ratio", "gauge" },
	{ "vpmu_refusals_total", "counter" },
	{ "vpmu_preemptions_total", "counter" },
	{ "vpmu_fallbacks_total", "counter" },
};

static void test_empty_broker_has_every_family(void **st)
{
	struct fx *f = *st;
	render(f, NULL);
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		char line[160];
		snprintf(line, sizeof(line), "# TYPE %s %s", families[i][0], families[i][1]);
		if (!has_line(f->text, line))
			fail_msg("missing \"%s\"", line);
		snprintf(line, sizeof(line), "# HELP %s ", families[i][0]);
		if (!strstr(f->text, line))
			fail_msg("missing \"%s\"", line);
	}
	assert_true(has_line(f->text, "# UNIT vpmu_session_running_ratio ratio"));
	/* The last line, and only there. */
	size_t len = strlen(f->text);
	assert_true(len > 6 && !strcmp(f->text + len - 6, "# EOF\n"));
	assert_ptr_equal(strstr(f->text, "# EOF"), f->text + len - 6);
	/* Nothing simulated is presented as measured: the model PMU and the
	 * model KVM say so. */
	expect(f->text, "vpmu_pmu_simulated", 1);
	expect(f->text, "vpmu_kvm_simulated", 1);
	expect(f->text, "vpmu_kvm_enforced", 0);
	expect(f->text, "vpmu_plan_generation", 0);
	expect(f->text, "vpmu_build_info{version=\"" VPMU_VERSION "\"}", 1);
	expect(f->text,
	       "vpmu_host_info{pmu_model=\"icelake-8360y\",pmu_source=\"builtin\",kvm_backend=\"model\","
	       "flavour=\"extension\",routes=\"simulated\",protocol=\"1\"}",
	       1);
	/* Counters are there from the start, at zero, for every label set. */
	expect(f->text, "vpmu_refusals_total{lease=\"vm\",class=\"guaranteed\"}", 0);
	expect(f->text, "vpmu_refusals_total{lease=\"session\",class=\"shared\"}", 0);
	expect(f->text, "vpmu_preemptions_total{lease=\"vm\"}", 0);
	expect(f->text, "vpmu_fallbacks_total{lease=\"vm\",to=\"advisory\"}", 0);
	expect(f->text, "vpmu_fallbacks_total{lease=\"session\",to=\"multiplexed\"}", 0);
	assert_int_equal(value_of(f->text, "vpmu_fallbacks_total{lease=\"session\",to=\"advisory\"}"), -1);
	/* Every CPU of the inventory, both kinds, three partitions that add
	 * up to the PMU's counters; the model's NMI watchdog holds one. */
	unsigned n_cpus = broker_cpu_count(f->b);
	assert_true(n_cpus > 8);
	for (unsigned c = 0; c < n_cpus; c++) {
		char s[128];
		double sum = 0;
		for (int k = 0; k < 2; k++) {
			static const char *const parts[] = { "guest", "host", "free" };
			for (int p = 0; p < 3; p++) {
				snprintf(s, sizeof(s), "vpmu_cpu_counters{cpu=\"%u\",kind=\"%s\",partition=\"%s\"}", c,
					 k ? "fixed" : "gp", parts[p]);
				double v = value_of(f->text, s);
				assert_true(v >= 0);
				sum += v;
			}
		}
		assert_true(sum == f->pmu->num_gp + (double)__builtin_popcount(f->pmu->fixed_mask));
	}
}

static void test_values_follow_the_plan_and_the_counters(void **st)
{
	struct fx *f = *st;
	/* Worked example 2 of docs/arbiter.md: a guaranteed session on cpu 1
	 * preempts a lower preferred VM's two PMCs. */
	ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"batch\",\"priority\":10,\"gp\":8,"
	      "\"vcpu_count\":1,\"cpus\":\"1\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_vm_pmcs{vm=\"batch\",route=\"passthrough\"}", 8);
	expect(f->text, "vpmu_vm_pmcs{vm=\"batch\",route=\"multiplexed\"}", 0);
	expect(f->text, "vpmu_cpu_counters{cpu=\"1\",kind=\"gp\",partition=\"guest\"}", 8);
	expect(f->text, "vpmu_cpu_counters{cpu=\"1\",kind=\"gp\",partition=\"free\"}", 0);
	expect(f->text, "vpmu_vm_info{vm=\"batch\",class=\"preferred\",routes=\"advisory\"}", 1);
	expect(f->text, "vpmu_vm_priority{vm=\"batch\"}", 10);
	expect(f->text, "vpmu_vm_vcpus{vm=\"batch\"}", 1);
	expect(f->text, "vpmu_vms{routes=\"advisory\"}", 1);

	ok(f, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"sre\",\"priority\":50,"
	      "\"class\":\"guaranteed\",\"events\":[\"cpu/event=0x48,umask=0x01/\",\"branches\",\"task-clock\"],"
	      "\"cpus\":\"1\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_vm_pmcs{vm=\"batch\",route=\"passthrough\"}", 6);
	expect(f->text, "vpmu_vm_pmcs{vm=\"batch\",route=\"multiplexed\"}", 2);
	expect(f->text, "vpmu_cpu_counters{cpu=\"1\",kind=\"gp\",partition=\"guest\"}", 6);
	expect(f->text, "vpmu_cpu_counters{cpu=\"1\",kind=\"gp\",partition=\"host\"}", 2);
	expect(f->text, "vpmu_preemptions_total{lease=\"vm\"}", 1);
	expect(f->text, "vpmu_preemptions_total{lease=\"session\"}", 0);
	expect(f->text, "vpmu_session_info{session=\"sre\",class=\"guaranteed\",scope=\"cpus\"}", 1);
	expect(f->text, "vpmu_session_priority{session=\"sre\"}", 50);
	expect(f->text, "vpmu_session_events{session=\"sre\",placement=\"dedicated\"}", 2);
	expect(f->text, "vpmu_session_events{session=\"sre\",placement=\"multiplexed\"}", 0);
	expect(f->text, "vpmu_session_events{session=\"sre\",placement=\"software\"}", 1);
	/* The model PMU counts no hardware event: no measured ratio is shown,
	 * and the two events are said to be uncounted. */
	expect(f->text, "vpmu_session_events_not_counted{session=\"sre\"}", 2);
	assert_int_equal(value_of(f->text, "vpmu_session_running_ratio{session=\"sre\"}"), -1);
	expect(f->text, "vpmu_sessions", 1);

	/* A guaranteed VM that would take the guaranteed session's counters
	 * is refused; nothing else moves. */
	uint64_t gen = broker_generation(f->b);
	assert_int_equal(run_as(f, &root, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"gold\","
					  "\"priority\":40,\"class\":\"guaranteed\",\"gp\":8,\"vcpu_count\":1,"
					  "\"cpus\":\"1\"}}"),
			 PROTO_E_REFUSED);
	assert_int_equal(broker_generation(f->b), gen);
	render(f, NULL);
	expect(f->text, "vpmu_refusals_total{lease=\"vm\",class=\"guaranteed\"}", 1);
	expect(f->text, "vpmu_refusals_total{lease=\"vm\",class=\"preferred\"}", 0);
	assert_int_equal(value_of(f->text, "vpmu_vm_info{vm=\"gold\",class=\"guaranteed\",routes=\"advisory\"}"), -1);

	/* A preferred VM admitted with less than it asked for falls back to
	 * multiplexing for the PMCs it does not get. */
	ok(f, "{\"id\":4,\"method\":\"vm.attach\",\"params\":{\"name\":\"late\",\"priority\":5,\"gp\":8,"
	      "\"vcpu_count\":1,\"cpus\":\"1\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_fallbacks_total{lease=\"vm\",to=\"multiplexed\"}", 1);
	expect(f->text, "vpmu_vm_pmcs{vm=\"late\",route=\"multiplexed\"}", 2);

	/* A VM taking every counter of a session's CPU preempts the session:
	 * its events rotate. */
	ok(f, "{\"id\":5,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"priority\":100,"
	      "\"events\":[\"branches\",\"cache-misses\"],\"cpus\":\"2\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_session_events{session=\"prof\",placement=\"dedicated\"}", 2);
	expect(f->text, "vpmu_fallbacks_total{lease=\"session\",to=\"multiplexed\"}", 0);
	ok(f, "{\"id\":6,\"method\":\"vm.attach\",\"params\":{\"name\":\"hog\",\"priority\":900,\"gp\":8,"
	      "\"vcpu_count\":1,\"cpus\":\"2\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_preemptions_total{lease=\"session\"}", 1);
	expect(f->text, "vpmu_preemptions_total{lease=\"vm\"}", 1);
	expect(f->text, "vpmu_session_events{session=\"prof\",placement=\"dedicated\"}", 0);
	expect(f->text, "vpmu_session_events{session=\"prof\",placement=\"multiplexed\"}", 2);
	/* A session started where every counter is taken falls back too. */
	ok(f, "{\"id\":7,\"method\":\"session.start\",\"params\":{\"name\":\"late-s\",\"priority\":10,"
	      "\"events\":[\"branches\"],\"cpus\":\"2\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_fallbacks_total{lease=\"session\",to=\"multiplexed\"}", 1);
	char want[64];
	snprintf(want, sizeof(want), "vpmu_plan_generation");
	expect(f->text, want, (double)broker_generation(f->b));

	/* Counters never go back: stopping and detaching changes the gauges
	 * only. */
	ok(f, "{\"id\":8,\"method\":\"vm.detach\",\"params\":{\"name\":\"hog\"}}");
	ok(f, "{\"id\":9,\"method\":\"session.stop\",\"params\":{\"name\":\"sre\"}}");
	render(f, NULL);
	expect(f->text, "vpmu_preemptions_total{lease=\"session\"}", 1);
	expect(f->text, "vpmu_preemptions_total{lease=\"vm\"}", 1);
	expect(f->text, "vpmu_refusals_total{lease=\"vm\",class=\"guaranteed\"}", 1);
	assert_int_equal(value_of(f->text, "vpmu_session_priority{session=\"sre\"}"), -1);
	assert_int_equal(value_of(f->text, "vpmu_vm_priority{vm=\"hog\"}"), -1);
	expect(f->text, "vpmu_vm_pmcs{vm=\"batch\",route=\"passthrough\"}", 8);
}

static void count_call(void *userdata)
{
	(*(unsigned *)userdata)++;
}

static void test_a_refused_session_is_counted_by_class(void **st)
{
	struct fx *f = *st;
	unsigned hooked = 0;
	broker_set_counters_hook(f->b, count_call, &hooked);
	ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"gold\",\"priority\":900,"
	      "\"class\":\"guaranteed\",\"gp\":8,\"vcpu_count\":1,\"cpus\":\"3\"}}");
	assert_int_equal(run_as(f, &root, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
					  "\"priority\":10,\"class\":\"guaranteed\",\"events\":[\"branches\"],"
					  "\"cpus\":\"3\"}}"),
			 PROTO_E_REFUSED);
	/* A refusal changes no plan: the hook tells vpmud to write. */
	assert_int_equal(hooked, 1);
	render(f, NULL);
	expect(f->text, "vpmu_refusals_total{lease=\"session\",class=\"guaranteed\"}", 1);
	expect(f->text, "vpmu_refusals_total{lease=\"vm\",class=\"guaranteed\"}", 0);
}

static void test_escaping(void **st)
{
	(void)st;
	char *s = metrics_escape_label("a\"b\\c\nd.e-f_g");
	assert_non_null(s);
	assert_string_equal(s, "a\\\"b\\\\c\\nd.e-f_g");
	free(s);
	s = metrics_escape_label("");
	assert_string_equal(s, "");
	free(s);
}

/* The renderer escapes what it did not choose itself: a PMU model's name
 * comes from a model file. */
static void test_label_values_from_outside_are_escaped(void **st)
{
	struct fx *f = *st;
	snprintf(f->pmu->model, sizeof(f->pmu->model), "odd \"model\" \\ x");
	broker_free(f->b);
	struct proto_error perr = {0};
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->dir };
	assert_int_equal(broker_new(&bo, &f->b, &perr), 0);
	assert_int_equal(broker_restore(f->b), 0);
	render(f, NULL);
	assert_non_null(strstr(f->text, "pmu_model=\"odd \\\"model\\\" \\\\ x\""));
}

static void test_other_users_sessions_are_withheld(void **st)
{
	struct fx *f = *st;
	ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"rootwork\",\"events\":[\"branches\","
	      "\"task-clock\"],\"cpus\":\"0\"}}");
	ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"gp\":2,\"vcpu_count\":1,\"cpus\":\"0\"}}");
	/* What the method answers an unprivileged caller. */
	char *text = NULL;
	size_t len = 0;
	struct proto_error err = {0};
	assert_int_equal(broker_metrics(f->b, &nobody, &text, &len, &err), 0);
	assert_non_null(strstr(text, "vpmu_session_info{session=\"rootwork\",class=\"preferred\",scope=\"cpus\"} 1\n"));
	assert_non_null(strstr(text, "vpmu_session_withheld{session=\"rootwork\"} 1\n"));
	assert_null(strstr(text, "vpmu_session_events{session=\"rootwork\""));
	assert_null(strstr(text, "vpmu_session_events_not_counted{session=\"rootwork\""));
	/* VMs are the allocation: everyone sees them. */
	assert_non_null(strstr(text, "vpmu_vm_pmcs{vm=\"web\",route=\"passthrough\"} 2\n"));
	/* No owner, pid, uid or event anywhere. */
	assert_null(strstr(text, "uid"));
	assert_null(strstr(text, "pid"));
	assert_null(strstr(text, "branches"));
	free(text);
	/* An admin, and the file (no viewer), see it whole and say nothing is
	 * withheld. */
	assert_int_equal(broker_metrics(f->b, &root, &text, &len, &err), 0);
	assert_non_null(strstr(text, "vpmu_session_events{session=\"rootwork\",placement=\"dedicated\"} 1\n"));
	assert_null(strstr(text, "vpmu_session_withheld"));
	render(f, NULL);
	assert_string_equal(text, f->text);
	free(text);
	/* Over the socket's door: the same text in {"text": ...}. */
	struct proto_request req = { .method = PROTO_M_METRICS };
	struct json_object *res = NULL;
	assert_int_equal(json_door_call(f->b, &nobody, &req, &res, &err), 0);
	struct json_object *t = json_object_object_get(res, "text");
	assert_non_null(t);
	assert_non_null(strstr(json_object_get_string(t), "vpmu_session_withheld{session=\"rootwork\"} 1\n"));
	assert_string_equal(json_object_get_string(json_object_object_get(res, "format")), "prometheus-text-0.0.4");
	json_object_put(res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty_broker_has_every_family, setup, teardown),
		cmocka_unit_test_setup_teardown(test_values_follow_the_plan_and_the_counters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_refused_session_is_counted_by_class, setup, teardown),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test_setup_teardown(test_label_values_from_outside_are_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_users_sessions_are_withheld, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
