/* SPDX-License-Identifier: MIT */
/*
 * The broker core, driven directly (no socket) with the Ice Lake model PMU
 * and the model KVM backend, on a private state directory. Requests are
 * decoded as the socket decodes them and answered through the JSON door,
 * so the results checked are the wire's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <linux/perf_event.h>

#include "broker/broker.h"
#include "broker/state.h"
#include "doors/json_door.h"
#include "kvm/kvm_model.h"
#include "kvm/kvm_port.h"
#include "kvm_child.h"
#include "pmu/pmu.h"
#include "pmu/pmu_model.h"
#include "proto/config.h"

/* ------------------------------------------------------------ faults */

/*
 * The state store's renames and unlinks, failing on demand: these take the
 * place of libc's for the whole test program (the store calls them), so a
 * save or a removal can be made to fail without privileges.
 */
static int fail_rename, fail_unlink;

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	if (fail_rename) {
		errno = fail_rename;
		return -1;
	}
	return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	/* The store cleans its temporary file with unlinkat too: only lease
	 * files fail. */
	if (fail_unlink && path[0] != '.') {
		errno = fail_unlink;
		return -1;
	}
	return (int)syscall(SYS_unlinkat, dirfd, path, flags);
}

/* ------------------------------------------------------------ fixture */

struct fx {
	char dir[64];
	struct config cfg;
	struct pmu_desc *pmu;
	sd_event *ev;
	/* The model the port drives, the fixture's so that tests see what
	 * reached it; it outlives every broker and port of the test. */
	struct kvm_model *model;
	struct kvm_port *port;
	struct broker *b;
	/* Child VMMs a test started: stopped at teardown, whatever failed. */
	struct kvm_child vmms[4];
	size_t n_vmms;
};

/* pid: the test process, so sessions it starts live as long as it does. */
static struct broker_caller root = { .door = BROKER_DOOR_SOCKET, .uid = 0 };
static const struct broker_caller nobody = { .door = BROKER_DOOR_SOCKET, .uid = 65534, .gid = 65534 };

static void open_broker(struct fx *f)
{
	char why[512];
	struct proto_error err = {0};
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = f->pmu->n_cpus,
				    .num_gp = f->pmu->num_gp, .fixed_mask = f->pmu->fixed_mask, .model = f->model,
				    .caller = { .cap_sys_admin = true } };
	assert_int_equal(kvm_port_open(&po, &f->port, why, sizeof(why)), 0);
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->dir };
	if (broker_new(&bo, &f->b, &err) < 0)
		fail_msg("broker_new: %s", err.message);
	assert_int_equal(broker_restore(f->b), 0);
}

static void close_broker(struct fx *f)
{
	f->b = broker_free(f->b);
	kvm_port_close(f->port);
	f->port = NULL;
}

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	root.pid = getpid();
	fail_rename = fail_unlink = 0;
	snprintf(f->dir, sizeof(f->dir), "/tmp/vpmu-test-broker.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	config_defaults(&f->cfg);
	f->pmu = calloc(1, sizeof(*f->pmu));
	if (pmu_model_load("icelake-8360y", f->pmu, err, sizeof(err)) < 0)
		return -1;
	if (sd_event_new(&f->ev) < 0)
		return -1;
	struct kvm_model_opts mo = { .n_cpus = f->pmu->n_cpus, .num_gp = f->pmu->num_gp,
				     .fixed_mask = f->pmu->fixed_mask };
	if (kvm_model_new(&mo, &f->model) < 0)
		return -1;
	open_broker(f);
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;
	char cmd[128];
	fail_rename = fail_unlink = 0;
	for (size_t i = 0; i < f->n_vmms; i++)
		kvm_child_stop(&f->vmms[i]);
	close_broker(f);
	kvm_model_free(f->model);
	sd_event_unref(f->ev);
	free(f->pmu);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int r = system(cmd);
	free(f);
	return r == 0 ? 0 : -1;
}

/* Decodes a request the way the socket would, then runs it. */
static int call(struct fx *f, const struct broker_caller *c, const char *json,
		struct json_object **res, struct proto_error *err)
{
	struct proto_request req;
	bool id_known;
	uint64_t id;
	memset(&req, 0, sizeof(req));
	memset(err, 0, sizeof(*err));
	*res = NULL;
	int r = proto_request_decode(json, strlen(json), PMU_MAX_CPUS, &req, &id_known, &id, err);
	if (r < 0)
		fail_msg("test request does not decode: %s", err->message);
	r = json_door_call(f->b, c, &req, res, err);
	proto_request_fini(&req);
	return r;
}

static struct json_object *ok_as(struct fx *f, const struct broker_caller *c, const char *json)
{
	struct json_object *res = NULL;
	struct proto_error err;
	if (call(f, c, json, &res, &err) < 0)
		fail_msg("%s failed: %s: %s", json, proto_errcode_name(err.code), err.message);
	return res;
}

static struct json_object *ok(struct fx *f, const char *json)
{
	return ok_as(f, &root, json);
}

/* Every lease file, by name, with its text: what a restart would see. */
static char *state_text(struct fx *f)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/leases", f->dir);
	struct dirent **list = NULL;
	int n = scandir(p, &list, NULL, alphasort);
	size_t cap = 1 << 16, len = 0;
	char *out = calloc(1, cap);
	assert_non_null(out);
	for (int i = 0; i < n; i++) {
		if (list[i]->d_name[0] != '.') {
			char fp[512];
			snprintf(fp, sizeof(fp), "%s/%s", p, list[i]->d_name);
			FILE *fp_ = fopen(fp, "r");
			assert_non_null(fp_);
			len += (size_t)snprintf(out + len, cap - len, "== %s\n", list[i]->d_name);
			len += fread(out + len, 1, cap - len - 1, fp_);
			fclose(fp_);
			assert_true(len < cap - 256);
		}
		free(list[i]);
	}
	free(list);
	out[len] = '\0';
	return out;
}

static bool lease_file_exists(struct fx *f, const char *file)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/leases/%s", f->dir, file);
	return stat(p, &st) == 0;
}

static int count_files(struct fx *f, const char *sub)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	DIR *d = opendir(p);
	if (!d)
		return 0;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void write_lease(struct fx *f, const char *file, const char *text)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/leases/%s", f->dir, file);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static const char *route(struct json_object *vm, int vcpu, const char *kind, int idx)
{
	struct json_object *v = json_object_array_get_idx(json_object_object_get(vm, "vcpus"), (size_t)vcpu);
	return json_object_get_string(json_object_array_get_idx(json_object_object_get(v, kind), (size_t)idx));
}

static void test_attach_show_detach(void **st)
{
	struct fx *f = *st;
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"priority\":500,"
				      "\"class\":\"guaranteed\",\"gp\":4,\"fixed_mask\":\"0x3\",\"vcpu_count\":2,\"cpus\":\"0-3\"}}");
	assert_int_equal(json_object_get_int(json_object_object_get(json_object_object_get(r, "granted"), "passthrough_vcpus")), 2);
	json_object_put(r);
	r = ok(f, "{\"id\":2,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}");
	assert_string_equal(route(r, 0, "gp", 0), "passthrough");
	assert_string_equal(route(r, 1, "gp", 3), "passthrough");
	assert_string_equal(route(r, 0, "gp", 4), "disabled");
	assert_string_equal(route(r, 0, "fixed", 1), "passthrough");
	assert_string_equal(route(r, 0, "fixed", 2), "disabled");
	/* The guest view follows the grant: 4 general PMCs, 2 fixed. */
	const char *block = json_object_get_string(json_object_object_get(json_object_object_get(r, "guest_pmu"), "boot_block"));
	assert_non_null(strstr(block, "generic registers:      4"));
	assert_non_null(strstr(block, "fixed-purpose events:   2"));
	json_object_put(r);

	/* Acknowledged means on disk. */
	char *s = state_text(f);
	assert_non_null(strstr(s, "\"web\""));
	free(s);
	assert_int_equal(broker_generation(f->b), 1);

	r = ok(f, "{\"id\":3,\"method\":\"vm.detach\",\"params\":{\"name\":\"web\"}}");
	json_object_put(r);
	s = state_text(f);
	assert_null(strstr(s, "\"web\""));
	free(s);
}

/* The protocol allows names of 1..64 bytes: the longest is taken by every
 * layer (it once stopped at the arbiter's 63). */
static void test_longest_name(void **st)
{
	struct fx *f = *st;
	char req[512], name[PROTO_NAME_MAX + 2];
	memset(name, 'n', PROTO_NAME_MAX);
	name[PROTO_NAME_MAX] = 0;
	snprintf(req, sizeof(req), "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"%s\",\"gp\":1,"
		 "\"vcpu_count\":1,\"cpus\":\"0\"}}", name);
	json_object_put(ok(f, req));
	assert_int_equal(broker_vm_find(f->b, name, NULL), 0);
	snprintf(req, sizeof(req), "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"%s\","
		 "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}", name);
	json_object_put(ok(f, req));
	/* 65 is refused by the decoder (test_proto). */
}

static void test_refusal_changes_nothing(void **st)
{
	struct fx *f = *st;
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"priority\":500,"
				      "\"class\":\"guaranteed\",\"gp\":8,\"vcpu_count\":1,\"cpus\":\"5\"}}");
	json_object_put(r);
	uint64_t gen = broker_generation(f->b);
	char *before = state_text(f);
	struct proto_error err;
	/* PMC 0..7 on CPU 5 are all in the guest partition for guaranteed 'a':
	 * a guaranteed host session that needs a general counter there cannot
	 * be satisfied, whatever its priority. (VMs would share the partition.) */
	assert_true(call(f, &root, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"b\",\"priority\":900,"
				   "\"class\":\"guaranteed\",\"events\":[\"branches\"],\"cpus\":\"4-5\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_REFUSED);
	assert_non_null(strstr(err.message, "cpu 5"));
	assert_non_null(strstr(err.message, "'a'"));
	assert_int_equal(broker_generation(f->b), gen);
	char *after = state_text(f);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* Bad inputs name the field and change nothing either. */
	assert_true(call(f, &root, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"c\",\"gp\":2,"
				   "\"vcpu_count\":1,\"cpus\":\"500\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_non_null(strstr(err.message, "CPU 500"));
	assert_true(call(f, &root, "{\"id\":4,\"method\":\"vm.attach\",\"params\":{\"name\":\"c\",\"fixed_mask\":\"0x10\","
				   "\"vcpu_count\":1,\"cpus\":\"1\"}}", &r, &err) < 0);
	assert_string_equal(err.field, "params.fixed_mask");
	assert_true(call(f, &root, "{\"id\":5,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"gp\":1,"
				   "\"vcpu_count\":1,\"cpus\":\"1\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_EXISTS);
	assert_true(call(f, &root, "{\"id\":6,\"method\":\"vm.detach\",\"params\":{\"name\":\"zz\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_NOT_FOUND);
	assert_int_equal(broker_generation(f->b), gen);
}

static void test_preemption_and_update(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"low\",\"priority\":10,"
			      "\"gp\":6,\"vcpu_count\":1,\"cpus\":\"8\"}}"));
	struct json_object *r = ok(f, "{\"id\":2,\"method\":\"vm.show\",\"params\":{\"name\":\"low\"}}");
	assert_string_equal(route(r, 0, "gp", 5), "passthrough");
	json_object_put(r);
	/* A higher preferred VM on the same CPU takes what it needs; the lower
	 * one is downgraded, not removed. */
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"high\",\"priority\":900,"
			      "\"gp\":7,\"vcpu_count\":1,\"cpus\":\"8\"}}"));
	r = ok(f, "{\"id\":4,\"method\":\"vm.show\",\"params\":{\"name\":\"high\"}}");
	assert_string_equal(route(r, 0, "gp", 6), "passthrough");
	json_object_put(r);
	r = ok(f, "{\"id\":5,\"method\":\"vm.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "vms")), 2);
	json_object_put(r);
	/* Lowering the high VM's demand gives the low one its counters back. */
	json_object_put(ok(f, "{\"id\":6,\"method\":\"vm.update\",\"params\":{\"name\":\"high\",\"gp\":1}}"));
	r = ok(f, "{\"id\":7,\"method\":\"vm.show\",\"params\":{\"name\":\"low\"}}");
	for (int i = 0; i < 6; i++)
		assert_string_equal(route(r, 0, "gp", i), "passthrough");
	json_object_put(r);
}

static void test_permissions(void **st)
{
	struct fx *f = *st;
	struct json_object *r = NULL;
	struct proto_error err;
	assert_true(call(f, &nobody, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"x\",\"gp\":1,"
				     "\"vcpu_count\":1,\"cpus\":\"1\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_true(call(f, &nobody, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
				     "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	/* Reading is open to everyone. */
	assert_int_equal(call(f, &nobody, "{\"id\":3,\"method\":\"status\"}", &r, &err), 0);
	json_object_put(r);
	assert_int_equal(call(f, &nobody, "{\"id\":4,\"method\":\"plan\",\"params\":{\"cpus\":\"0\"}}", &r, &err), 0);
	json_object_put(r);
	/* Someone else's session: an unprivileged caller sees it withheld and
	 * may not read it. */
	json_object_put(ok(f, "{\"id\":5,\"method\":\"session.start\",\"params\":{\"name\":\"mine\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}"));
	assert_true(call(f, &nobody, "{\"id\":6,\"method\":\"session.read\",\"params\":{\"name\":\"mine\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_int_equal(call(f, &nobody, "{\"id\":7,\"method\":\"session.list\"}", &r, &err), 0);
	assert_int_equal(json_object_array_length(json_object_object_get(r, "sessions")), 1);
	struct json_object *seen = json_object_array_get_idx(json_object_object_get(r, "sessions"), 0);
	assert_true(json_object_get_boolean(json_object_object_get(seen, "withheld")));
	assert_null(json_object_object_get(seen, "events"));
	json_object_put(r);
}

static void test_session_model_pmu_counts_nothing_invented(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"p\","
			      "\"events\":[\"cycles\",\"task-clock\",\"event=0xa3,umask=0x04\"],\"cpus\":\"0\"}}"));
	usleep(20000);
	struct json_object *r = ok(f, "{\"id\":2,\"method\":\"session.read\",\"params\":{\"name\":\"p\"}}");
	struct json_object *evs = json_object_object_get(r, "events");
	struct json_object *cyc = json_object_array_get_idx(evs, 0), *tc = json_object_array_get_idx(evs, 1);
	/* Model PMU: the hardware event is placed but never given a number. */
	assert_false(json_object_get_boolean(json_object_object_get(cyc, "counted")));
	assert_null(json_object_object_get(cyc, "value"));
	assert_non_null(strstr(json_object_get_string(json_object_object_get(cyc, "reason")), "model"));
	/* A software event really counts. */
	assert_true(json_object_get_boolean(json_object_object_get(tc, "counted")));
	assert_true(json_object_get_uint64(json_object_object_get(tc, "value")) > 0);
	json_object_put(r);

	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"q\","
				   "\"events\":[\"no-such-event\"],\"cpus\":\"0\"}}", &r, &err) < 0);
	assert_string_equal(err.field, "params.events[0]");
	json_object_put(ok(f, "{\"id\":4,\"method\":\"session.stop\",\"params\":{\"name\":\"p\"}}"));
}

static const char *placement_of(struct json_object *read_result, int idx)
{
	struct json_object *e = json_object_array_get_idx(json_object_object_get(read_result, "events"), (size_t)idx);
	return json_object_get_string(json_object_object_get(e, "placement"));
}

static void test_session_follows_the_plan(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"p\",\"priority\":100,"
			      "\"events\":[\"branches\",\"cache-misses\",\"task-clock\"],\"cpus\":\"0\"}}"));
	struct json_object *r = ok(f, "{\"id\":2,\"method\":\"session.read\",\"params\":{\"name\":\"p\"}}");
	assert_string_equal(placement_of(r, 0), "dedicated");
	assert_string_equal(placement_of(r, 1), "dedicated");
	uint64_t tc0 = json_object_get_uint64(json_object_object_get(
		json_object_array_get_idx(json_object_object_get(r, "events"), 2), "value"));
	json_object_put(r);
	/* A higher-priority VM takes every general counter on CPU 0: the
	 * session's hardware events move to multiplexed; nothing is lost. */
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"big\",\"priority\":900,"
			      "\"gp\":8,\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	r = ok(f, "{\"id\":4,\"method\":\"session.read\",\"params\":{\"name\":\"p\"}}");
	assert_string_equal(placement_of(r, 0), "multiplexed");
	assert_string_equal(placement_of(r, 1), "multiplexed");
	assert_string_equal(placement_of(r, 2), "software");
	uint64_t tc1 = json_object_get_uint64(json_object_object_get(
		json_object_array_get_idx(json_object_object_get(r, "events"), 2), "value"));
	assert_true(tc1 >= tc0);
	json_object_put(r);
	r = ok(f, "{\"id\":5,\"method\":\"plan\",\"params\":{\"cpus\":\"0\"}}");
	struct json_object *ev = json_object_array_get_idx(json_object_object_get(
		json_object_array_get_idx(json_object_object_get(r, "sessions"), 0), "events"), 0);
	assert_string_equal(json_object_get_string(json_object_object_get(ev, "placement")), "multiplexed");
	json_object_put(r);
	/* The VM leaves: the events get their counters back. */
	json_object_put(ok(f, "{\"id\":6,\"method\":\"vm.detach\",\"params\":{\"name\":\"big\"}}"));
	r = ok(f, "{\"id\":7,\"method\":\"session.read\",\"params\":{\"name\":\"p\"}}");
	assert_string_equal(placement_of(r, 0), "dedicated");
	assert_string_equal(placement_of(r, 1), "dedicated");
	json_object_put(r);
}

static void count_events(const struct broker_event *ev, void *ud)
{
	(void)ev;
	(*(int *)ud)++;
}

static void test_refused_owner_changes_nothing(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
			      "\"events\":[\"branches\",\"cache-misses\"],\"cpus\":\"0-1\"}}"));
	uint64_t gen = broker_generation(f->b);
	char *before = state_text(f);
	int events = 0;
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, count_events, &events, &sub), 0);
	/* This process holds no KVM VM: the owner is refused before anything
	 * moves — no plan change, no watcher event, sessions untouched. */
	char req[256];
	struct json_object *r = NULL;
	struct proto_error err;
	snprintf(req, sizeof(req), "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"class\":\"guaranteed\","
		 "\"priority\":900,\"gp\":8,\"vcpu_count\":1,\"cpus\":\"0-1\",\"owner\":{\"pid\":%d,\"vm_fd\":0}}}",
		 (int)getpid());
	assert_true(call(f, &root, req, &r, &err) < 0);
	assert_string_equal(err.field, "params.owner");
	assert_int_equal(broker_generation(f->b), gen);
	assert_int_equal(events, 0);
	char *after = state_text(f);
	assert_string_equal(before, after);
	free(before);
	free(after);
	r = ok(f, "{\"id\":3,\"method\":\"session.read\",\"params\":{\"name\":\"s\"}}");
	assert_string_equal(placement_of(r, 0), "dedicated");
	assert_string_equal(placement_of(r, 1), "dedicated");
	json_object_put(r);
	broker_unsubscribe(f->b, sub);
}

static void test_unsaved_removal_is_refused(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}"));
	/* Every removal of a lease file fails. */
	fail_unlink = EIO;
	struct json_object *r = NULL;
	struct proto_error err;
	uint64_t gen = broker_generation(f->b);
	assert_true(call(f, &root, "{\"id\":3,\"method\":\"vm.detach\",\"params\":{\"name\":\"v\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INTERNAL);
	assert_non_null(strstr(err.message, "stays attached"));
	assert_true(call(f, &root, "{\"id\":4,\"method\":\"session.stop\",\"params\":{\"name\":\"s\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INTERNAL);
	assert_non_null(strstr(err.message, "keeps running"));
	/* Refused whole: both leases are still there, in memory and on disk. */
	assert_int_equal(broker_generation(f->b), gen);
	r = ok(f, "{\"id\":5,\"method\":\"vm.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "vms")), 1);
	json_object_put(r);
	r = ok(f, "{\"id\":6,\"method\":\"session.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "sessions")), 1);
	json_object_put(r);
	assert_true(lease_file_exists(f, "vm-v.json"));
	assert_true(lease_file_exists(f, "session-s.json"));
	fail_unlink = 0;
	json_object_put(ok(f, "{\"id\":7,\"method\":\"vm.detach\",\"params\":{\"name\":\"v\"}}"));
	json_object_put(ok(f, "{\"id\":8,\"method\":\"session.stop\",\"params\":{\"name\":\"s\"}}"));
	char *text = state_text(f);
	assert_string_equal(text, "");
	free(text);
}

/* The plan without its generation: what a refused change must not move. */
static char *plan_text(struct fx *f)
{
	struct json_object *r = ok(f, "{\"id\":99,\"method\":\"plan\"}");
	json_object_object_del(r, "generation");
	char *t = strdup(json_object_to_json_string(r));
	json_object_put(r);
	return t;
}

/*
 * An attach that cannot be saved is refused and leaves nothing: no lease,
 * no file, no plan change, no event. (The generation may move: the arbiter
 * took the lease and gave it back before anything was told.)
 */
static void test_unsaved_attach_is_refused(void **st)
{
	struct fx *f = *st;
	int events = 0;
	uint64_t sub;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"p\","
			      "\"events\":[\"branches\"],\"cpus\":\"0\"}}"));
	char *before = plan_text(f), *files = state_text(f);
	assert_int_equal(broker_subscribe(f->b, count_events, &events, &sub), 0);
	fail_rename = ENOSPC;
	struct json_object *r = NULL;
	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"gp\":1,"
				   "\"vcpu_count\":1,\"cpus\":\"0\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INTERNAL);
	assert_non_null(strstr(err.message, "could not save"));
	assert_true(call(f, &root, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
				   "\"events\":[\"cycles\"],\"cpus\":\"0\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INTERNAL);
	fail_rename = 0;
	assert_int_equal(events, 0);
	assert_int_equal(broker_vm_count(f->b), 0);
	assert_int_equal(broker_session_count(f->b), 1);
	char *after = plan_text(f), *files_after = state_text(f);
	assert_string_equal(before, after);
	assert_string_equal(files, files_after);
	assert_int_equal(count_files(f, "leases"), 1);
	free(before);
	free(after);
	free(files);
	free(files_after);
	/* Nothing half-made blocks the names either. */
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	assert_int_equal(events, 1);
	broker_unsubscribe(f->b, sub);
}

static void test_restore_after_restart(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"one\",\"priority\":300,"
			      "\"class\":\"guaranteed\",\"gp\":2,\"vcpus\":[{\"cpus\":\"0-1\"},{\"cpus\":[2]}]}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"two\",\"gp\":3,"
			      "\"vcpu_count\":1,\"cpus\":\"2\"}}"));
	struct json_object *before = ok(f, "{\"id\":3,\"method\":\"plan\",\"params\":{\"cpus\":\"0-3\"}}");
	close_broker(f);
	open_broker(f);
	struct json_object *after = ok(f, "{\"id\":4,\"method\":\"plan\",\"params\":{\"cpus\":\"0-3\"}}");
	/* Same leases, same plan, nothing duplicated. */
	assert_string_equal(json_object_to_json_string(json_object_object_get(before, "vms")),
			    json_object_to_json_string(json_object_object_get(after, "vms")));
	assert_string_equal(json_object_to_json_string(json_object_object_get(before, "cpus")),
			    json_object_to_json_string(json_object_object_get(after, "cpus")));
	json_object_put(before);
	json_object_put(after);
}

static void test_connection_leases_end_with_restart(void **st)
{
	struct fx *f = *st;
	/* A caller whose leases follow its connection (a D-Bus peer). */
	struct broker_caller agent = root;
	agent.door = BROKER_DOOR_DBUS;
	agent.origin = "dbus";
	assert_int_equal(broker_conn_open(f->b, true, &agent.conn), 0);
	struct json_object *r = NULL;
	struct proto_error err;
	assert_int_equal(call(f, &agent, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"gp\":1,"
				      "\"vcpu_count\":1,\"cpus\":\"0\"}}", &r, &err), 0);
	json_object_put(r);
	assert_int_equal(call(f, &agent, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"s\","
				      "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}", &r, &err), 0);
	json_object_put(r);
	/* Given an owner process, a session follows that process instead. */
	char req[256];
	snprintf(req, sizeof(req), "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"owned\","
		 "\"events\":[\"task-clock\"],\"cpus\":\"0\",\"owner_pid\":%d}}", (int)getpid());
	assert_int_equal(call(f, &agent, req, &r, &err), 0);
	json_object_put(r);
	json_object_put(ok(f, "{\"id\":4,\"method\":\"vm.attach\",\"params\":{\"name\":\"op\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"1\"}}"));
	/* The restart does not close the connection: it drops it. */
	close_broker(f);
	broker_conn_unref(agent.conn);
	open_broker(f);
	/* The restart closed every connection: what followed one is gone,
	 * what a process or an operator owns is back. */
	r = ok(f, "{\"id\":5,\"method\":\"vm.list\"}");
	struct json_object *vms = json_object_object_get(r, "vms");
	assert_int_equal(json_object_array_length(vms), 1);
	assert_string_equal(json_object_get_string(json_object_object_get(json_object_array_get_idx(vms, 0), "name")), "op");
	json_object_put(r);
	r = ok(f, "{\"id\":6,\"method\":\"session.list\"}");
	struct json_object *ss = json_object_object_get(r, "sessions");
	assert_int_equal(json_object_array_length(ss), 1);
	assert_string_equal(json_object_get_string(json_object_object_get(json_object_array_get_idx(ss, 0), "name")), "owned");
	json_object_put(r);
	/* ... and the files of what is gone went with it. */
	assert_false(lease_file_exists(f, "vm-a.json"));
	assert_false(lease_file_exists(f, "session-s.json"));
	assert_true(lease_file_exists(f, "vm-op.json"));
	assert_true(lease_file_exists(f, "session-owned.json"));
}

static void test_corrupt_state_moved_aside(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"one\",\"gp\":2,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	close_broker(f);
	/* Invalid leases of every shape: moved aside with a log line, never a
	 * crash (a crash here would repeat at every start), never deleted. */
	const char *bad[][2] = {
		{ "vm-x.json", "{\"seq\":5,\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"x\",\"bogus\":1}},\"uid\":0}" },
		{ "vm-a.json", "{\"seq\":6,\"request\":5,\"uid\":0}" },
		{ "vm-b.json", "{\"seq\":7,\"request\":null,\"uid\":0}" },
		{ "vm-c.json", "{\"seq\":8,\"request\":[1],\"uid\":0}" },
		{ "vm-d.json", "{\"seq\":9,\"request\":{\"method\":\"vm.attach\"},\"uid\":0}" },
		{ "vm-e.json", "{\"seq\":10,\"request\":{\"params\":{}},\"uid\":0}" },
		{ "vm-g.json", "{\"seq\":11,\"request\":{\"method\":7,\"params\":{}},\"uid\":0}" },
		{ "vm-h.json", "\"junk\"" },
		{ "vm-i.json", "{\"seq\":12,\"uid\":\"root\"}" },
		{ "vm-j.json", "{\"seq\":13,\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"j\",\"gp\":1,\"vcpu_count\":1,\"cpus\":\"0\"}},\"uid\":0} trailing" },
		{ "vm-k.json", "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"k\",\"gp\":1,\"vcpu_count\":1,\"cpus\":\"0\"}},\"uid\":0}" },
		/* a VM request in a session's file, and a file naming another lease */
		{ "session-y.json", "{\"seq\":14,\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"y\",\"gp\":1,\"vcpu_count\":1,\"cpus\":\"0\"}},\"uid\":0}" },
		{ "vm-z.json", "{\"seq\":15,\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"other\",\"gp\":1,\"vcpu_count\":1,\"cpus\":\"0\"}},\"uid\":0}" },
		/* valid, but it cannot be restored: the PMU has 8 general counters */
		{ "vm-big.json", "{\"seq\":16,\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"big\",\"gp\":9,\"vcpu_count\":1,\"cpus\":\"0\"}},\"uid\":0}" },
		{ "vm-{\"x.json", "{}" },
		{ "stray", "what is this" },
	};
	size_t n_bad = sizeof(bad) / sizeof(bad[0]);
	for (size_t i = 0; i < n_bad; i++)
		write_lease(f, bad[i][0], bad[i][1]);
	open_broker(f);
	/* Only the good lease is back; every other file is kept aside. */
	struct json_object *r = ok(f, "{\"id\":2,\"method\":\"vm.list\"}");
	struct json_object *vms = json_object_object_get(r, "vms");
	assert_int_equal(json_object_array_length(vms), 1);
	assert_string_equal(json_object_get_string(json_object_object_get(json_object_array_get_idx(vms, 0), "name")), "one");
	json_object_put(r);
	assert_int_equal(count_files(f, "leases"), 1);
	assert_int_equal(count_files(f, "rejected"), (int)n_bad);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "grep -q '\"gp\":9' %s/rejected/vm-big.json.*", f->dir);
	assert_int_equal(system(cmd), 0);

	/* A state.json of the old format that does not parse is kept aside
	 * too, and the daemon starts with what the lease files hold. */
	close_broker(f);
	char p[128];
	snprintf(p, sizeof(p), "%s/state.json", f->dir);
	FILE *fp = fopen(p, "w");
	fputs("{\"format\":1,\"vms\":[", fp);
	fclose(fp);
	open_broker(f);
	snprintf(cmd, sizeof(cmd), "ls %s/rejected | grep -q '^state.json\\.'", f->dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(broker_vm_count(f->b), 1);
}

/* A fake VMM holding one KVM VM with 2 vCPUs; pid 0 when it cannot run. */
static pid_t spawn_fake_vmm(int *vm_fd)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	char tool[512];
	const char *bd = getenv("VPMU_BUILD_DIR");
	snprintf(tool, sizeof(tool), "%s/vpmu-fake-vmm", bd ? bd : "..");
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pfd[1], 1);
		execl(tool, tool, "2", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	char line[128] = "";
	ssize_t n = read(pfd[0], line, sizeof(line) - 1);
	close(pfd[0]);
	if (n <= 0 || !strstr(line, "vm_fd=")) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return 0;
	}
	line[n] = 0;
	sscanf(strstr(line, "vm_fd="), "vm_fd=%d", vm_fd);
	return pid;
}

static void test_vmm_death_releases_lease(void **st)
{
	struct fx *f = *st;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		skip();
	int vm_fd = -1, vm_fd2 = -1;
	pid_t pid = spawn_fake_vmm(&vm_fd);
	if (!pid)
		skip();
	pid_t pid2 = spawn_fake_vmm(&vm_fd2);
	assert_true(pid2 > 0);
	char req[512];
	snprintf(req, sizeof(req), "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"vmm\",\"gp\":2,"
		 "\"vcpu_count\":2,\"cpus\":\"0-1\",\"owner\":{\"pid\":%d,\"vm_fd\":%d}}}", (int)pid, vm_fd);
	struct json_object *r = ok(f, req);
	assert_true(json_object_get_boolean(json_object_object_get(r, "bound")));
	json_object_put(r);
	/* A wrong fd is refused by name. */
	struct proto_error err;
	snprintf(req, sizeof(req), "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"bad\",\"gp\":2,"
		 "\"vcpu_count\":1,\"cpus\":\"0\",\"owner\":{\"pid\":%d,\"vm_fd\":0}}}", (int)pid);
	assert_true(call(f, &root, req, &r, &err) < 0);
	assert_string_equal(err.field, "params.owner");

	/* A lease made on a connection that it follows, then bound to its
	 * VMM: it follows the VMM from then on, not the connection. */
	struct broker_caller agent = root;
	agent.door = BROKER_DOOR_DBUS;
	assert_int_equal(broker_conn_open(f->b, true, &agent.conn), 0);
	json_object_put(ok_as(f, &agent, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"agent\",\"gp\":2,"
					 "\"vcpu_count\":2,\"cpus\":\"2-3\"}}"));
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "agent", &v), 0);
	assert_true(v.follows_connection);
	snprintf(req, sizeof(req), "{\"id\":4,\"method\":\"vm.bind\",\"params\":{\"name\":\"agent\",\"pid\":%d}}", (int)pid2);
	json_object_put(ok_as(f, &agent, req));
	assert_int_equal(broker_vm_find(f->b, "agent", &v), 0);
	assert_false(v.follows_connection);
	assert_true(v.bound);
	assert_int_equal(v.vmm_pid, pid2);
	char *text = state_text(f);
	assert_null(strstr(text, "follows_connection"));
	free(text);
	broker_conn_close(agent.conn, "its D-Bus peer :1.3 left the bus");
	broker_conn_unref(agent.conn);
	assert_int_equal(broker_vm_find(f->b, "agent", NULL), 0);

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	kill(pid2, SIGKILL);
	waitpid(pid2, NULL, 0);
	/* The pidfd wakes the loop; the leases go, and their files. */
	for (int i = 0; i < 50 && broker_vm_count(f->b); i++)
		sd_event_run(f->ev, 10000);
	r = ok(f, "{\"id\":5,\"method\":\"vm.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "vms")), 0);
	json_object_put(r);
	assert_int_equal(count_files(f, "leases"), 0);
}

static uint64_t last_seq;

static void watch_cb(const struct broker_event *ev, void *ud)
{
	(*(int *)ud)++;
	/* One number per event, for doors that render each once. */
	assert_true(ev->seq > last_seq);
	last_seq = ev->seq;
	struct json_object *o = json_door_event_object(ev);
	assert_non_null(o);
	assert_string_equal(json_object_get_string(json_object_object_get(o, "event")), "plan");
	assert_int_equal(json_object_get_uint64(json_object_object_get(o, "generation")), ev->generation);
	json_object_put(o);
}

static void test_watch_events(void **st)
{
	struct fx *f = *st;
	int seen = 0;
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, watch_cb, &seen, &sub), 0);
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"w\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.detach\",\"params\":{\"name\":\"w\"}}"));
	assert_int_equal(seen, 2);
	broker_unsubscribe(f->b, sub);
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"w\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	assert_int_equal(seen, 2);
}

/* ------------------------------------------------------------ named leases */

/* What the last event named, as text: "vm+ 3 | vm- | vm~ 1 2 | s+ | s- | s~ 4". */
struct named {
	int events;
	char text[512];
	size_t n_changes;
};

static void put_ids(char *buf, size_t len, const char *tag, const uint64_t *ids, size_t n)
{
	size_t at = strlen(buf);
	at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? " | " : "", tag);
	for (size_t i = 0; i < n && at < len; i++)
		at += (size_t)snprintf(buf + at, len - at, " %" PRIu64, ids[i]);
}

static void named_cb(const struct broker_event *ev, void *ud)
{
	struct named *n = ud;
	n->events++;
	n->n_changes = ev->n_changes;
	n->text[0] = '\0';
	put_ids(n->text, sizeof(n->text), "vm+", ev->vms_added, ev->n_vms_added);
	put_ids(n->text, sizeof(n->text), "vm-", ev->vms_removed, ev->n_vms_removed);
	put_ids(n->text, sizeof(n->text), "vm~", ev->vms_changed, ev->n_vms_changed);
	put_ids(n->text, sizeof(n->text), "s+", ev->sessions_added, ev->n_sessions_added);
	put_ids(n->text, sizeof(n->text), "s-", ev->sessions_removed, ev->n_sessions_removed);
	put_ids(n->text, sizeof(n->text), "s~", ev->sessions_changed, ev->n_sessions_changed);
}

static uint64_t vm_id(struct fx *f, const char *name)
{
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, name, &v), 0);
	return v.id;
}

/* Runs one request and checks that its one event names exactly want
 * (ids given by the lease names in the request order of the fixture). */
static void expect_named(struct fx *f, struct named *n, const char *json, const char *want)
{
	int before = n->events;
	json_object_put(ok(f, json));
	assert_int_equal(n->events, before + 1);
	if (strcmp(n->text, want))
		fail_msg("%s\n named: %s\n wanted: %s", json, n->text, want);
}

/*
 * Each event names exactly the leases it touched: the lease asked about,
 * and the VMs whose routes and the sessions whose placements another
 * lease's change moved; nothing else, whatever else is attached.
 */
static void test_event_names_touched_leases(void **st)
{
	struct fx *f = *st;
	struct named n = {0};
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, named_cb, &n, &sub), 0);
	expect_named(f, &n, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"low\",\"priority\":10,"
			    "\"gp\":6,\"vcpu_count\":1,\"cpus\":\"8\"}}", "vm+ 1 | vm- | vm~ | s+ | s- | s~");
	expect_named(f, &n, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"other\",\"priority\":10,"
			    "\"gp\":2,\"vcpu_count\":2,\"cpus\":\"9\"}}", "vm+ 2 | vm- | vm~ | s+ | s- | s~");
	/* VMs on one CPU share its guest partition: nobody else moves. */
	expect_named(f, &n, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"high\",\"priority\":900,"
			    "\"gp\":7,\"vcpu_count\":1,\"cpus\":\"8\"}}", "vm+ 3 | vm- | vm~ | s+ | s- | s~");
	expect_named(f, &n, "{\"id\":4,\"method\":\"vm.update\",\"params\":{\"name\":\"high\",\"gp\":1}}",
		     "vm+ | vm- | vm~ 3 | s+ | s- | s~");
	expect_named(f, &n, "{\"id\":5,\"method\":\"vm.update\",\"params\":{\"name\":\"other\",\"priority\":20}}",
		     "vm+ | vm- | vm~ 2 | s+ | s- | s~");
	/* A VM taking every counter of a session's CPU names the session;
	 * an update that gives them back names it again. */
	expect_named(f, &n, "{\"id\":6,\"method\":\"session.start\",\"params\":{\"name\":\"p\",\"priority\":100,"
			    "\"events\":[\"branches\",\"task-clock\"],\"cpus\":\"0\"}}",
		     "vm+ | vm- | vm~ | s+ 4 | s- | s~");
	expect_named(f, &n, "{\"id\":7,\"method\":\"vm.attach\",\"params\":{\"name\":\"big\",\"priority\":900,"
			    "\"gp\":8,\"vcpu_count\":1,\"cpus\":\"0\"}}", "vm+ 5 | vm- | vm~ | s+ | s- | s~ 4");
	expect_named(f, &n, "{\"id\":8,\"method\":\"vm.update\",\"params\":{\"name\":\"big\",\"gp\":2}}",
		     "vm+ | vm- | vm~ 5 | s+ | s- | s~ 4");
	/* A session preempting a VM: the guaranteed session on CPU 8 takes
	 * a counter 'low' passed through; 'low' is named, 'high' (one PMC,
	 * still passed through), 'other' and 'p' are not. */
	expect_named(f, &n, "{\"id\":9,\"method\":\"session.start\",\"params\":{\"name\":\"g\",\"priority\":950,"
			    "\"class\":\"guaranteed\",\"events\":[\"branches\",\"cache-misses\",\"branch-misses\"],"
			    "\"cpus\":\"8\"}}",
		     "vm+ | vm- | vm~ 1 | s+ 6 | s- | s~");
	/* Software events only: no plan change, and still a new session. */
	expect_named(f, &n, "{\"id\":10,\"method\":\"session.start\",\"params\":{\"name\":\"soft\","
			    "\"events\":[\"task-clock\"],\"cpus\":\"1\"}}", "vm+ | vm- | vm~ | s+ 7 | s- | s~");
	assert_int_equal(n.n_changes, 0);
	expect_named(f, &n, "{\"id\":11,\"method\":\"session.stop\",\"params\":{\"name\":\"soft\"}}",
		     "vm+ | vm- | vm~ | s+ | s- 7 | s~");
	assert_int_equal(n.n_changes, 0);
	/* Stopping 'g' gives 'low' its counter back. */
	expect_named(f, &n, "{\"id\":12,\"method\":\"session.stop\",\"params\":{\"name\":\"g\"}}",
		     "vm+ | vm- | vm~ 1 | s+ | s- 6 | s~");
	expect_named(f, &n, "{\"id\":13,\"method\":\"vm.update\",\"params\":{\"name\":\"big\",\"gp\":8}}",
		     "vm+ | vm- | vm~ 5 | s+ | s- | s~ 4");
	expect_named(f, &n, "{\"id\":14,\"method\":\"vm.detach\",\"params\":{\"name\":\"big\"}}",
		     "vm+ | vm- 5 | vm~ | s+ | s- | s~ 4");
	expect_named(f, &n, "{\"id\":15,\"method\":\"vm.detach\",\"params\":{\"name\":\"other\"}}",
		     "vm+ | vm- 2 | vm~ | s+ | s- | s~");
	expect_named(f, &n, "{\"id\":16,\"method\":\"session.stop\",\"params\":{\"name\":\"p\"}}",
		     "vm+ | vm- | vm~ | s+ | s- 4 | s~");
	assert_int_equal(vm_id(f, "low"), 1);
	assert_int_equal(vm_id(f, "high"), 3);
	broker_unsubscribe(f->b, sub);
}

/* Binding changes the lease's Owner and no plan: the event names it alone. */
static void test_event_names_bound_vm(void **st)
{
	struct fx *f = *st;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		skip();
	int vm_fd = -1;
	pid_t pid = spawn_fake_vmm(&vm_fd);
	if (!pid)
		skip();
	struct named n = {0};
	uint64_t sub;
	char req[256], want[128];
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"gp\":2,"
			      "\"vcpu_count\":1,\"cpus\":\"2\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"b\",\"gp\":2,"
			      "\"vcpu_count\":1,\"cpus\":\"2\"}}"));
	assert_int_equal(broker_subscribe(f->b, named_cb, &n, &sub), 0);
	snprintf(req, sizeof(req), "{\"id\":3,\"method\":\"vm.bind\",\"params\":{\"name\":\"b\",\"pid\":%d}}", (int)pid);
	snprintf(want, sizeof(want), "vm+ | vm- | vm~ %" PRIu64 " | s+ | s- | s~", vm_id(f, "b"));
	expect_named(f, &n, req, want);
	assert_int_equal(n.n_changes, 0);
	broker_unsubscribe(f->b, sub);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* ------------------------------------------------------------ connections */

static int n_vms_named(struct fx *f, const char *name)
{
	return broker_vm_find(f->b, name, NULL) == 0;
}

static int n_sessions_named(struct fx *f, const char *name)
{
	return broker_session_find(f->b, name, NULL) == 0;
}

static void attach_as(struct fx *f, const struct broker_caller *c, const char *name, const char *cpus)
{
	char q[256];
	snprintf(q, sizeof(q), "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"%s\",\"gp\":1,"
		 "\"vcpu_count\":1,\"cpus\":\"%s\"}}", name, cpus);
	json_object_put(ok_as(f, c, q));
}

static void session_as(struct fx *f, const struct broker_caller *c, const char *name, pid_t owner)
{
	char q[256];
	if (owner)
		snprintf(q, sizeof(q), "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"%s\","
			 "\"events\":[\"task-clock\"],\"cpus\":\"0\",\"owner_pid\":%d}}", name, (int)owner);
	else
		snprintf(q, sizeof(q), "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"%s\","
			 "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}", name);
	json_object_put(ok_as(f, c, q));
}

/* Closing a connection releases exactly what follows it, once. */
static void test_conn_close_releases_following_leases(void **st)
{
	struct fx *f = *st;
	struct broker_caller a = root, b = root, c = root;
	a.door = b.door = BROKER_DOOR_DBUS;
	a.origin = b.origin = "dbus";
	assert_int_equal(broker_conn_open(f->b, true, &a.conn), 0);
	assert_int_equal(broker_conn_open(f->b, true, &b.conn), 0);
	assert_int_equal(broker_conn_open(f->b, false, &c.conn), 0);
	attach_as(f, &a, "a1", "0");
	session_as(f, &a, "s1", 0);
	session_as(f, &a, "s2", getpid()); /* owned by a process: follows it instead */
	attach_as(f, &b, "b1", "1");
	attach_as(f, &c, "c1", "2");         /* a connection its leases outlive */
	attach_as(f, &root, "d1", "3");      /* no connection at all */
	struct broker_vm_view v;
	struct broker_session_view sv;
	assert_int_equal(broker_vm_find(f->b, "a1", &v), 0);
	assert_true(v.follows_connection);
	assert_int_equal(broker_vm_find(f->b, "c1", &v), 0);
	assert_false(v.follows_connection);
	assert_int_equal(broker_session_find(f->b, "s1", &sv), 0);
	assert_true(sv.follows_connection);
	assert_int_equal(broker_session_find(f->b, "s2", &sv), 0);
	assert_false(sv.follows_connection);

	int events = 0;
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, count_events, &events, &sub), 0);
	assert_false(broker_conn_closed(a.conn));
	broker_conn_close(a.conn, "its D-Bus peer :1.9 left the bus");
	assert_true(broker_conn_closed(a.conn));
	assert_int_equal(n_vms_named(f, "a1"), 0);
	assert_int_equal(n_sessions_named(f, "s1"), 0);
	assert_int_equal(n_sessions_named(f, "s2") + n_vms_named(f, "b1") + n_vms_named(f, "c1") + n_vms_named(f, "d1"), 4);
	assert_int_equal(events, 2);
	assert_false(lease_file_exists(f, "vm-a1.json"));
	assert_false(lease_file_exists(f, "session-s1.json"));
	assert_true(lease_file_exists(f, "session-s2.json"));
	assert_int_equal(count_files(f, "leases"), 4);
	/* Once: a second close finds nothing more to do. */
	broker_conn_close(a.conn, "again");
	assert_int_equal(events, 2);
	/* A connection whose leases outlive it releases nothing. */
	broker_conn_close(c.conn, NULL);
	assert_int_equal(n_vms_named(f, "c1"), 1);
	assert_int_equal(events, 2);
	/* Dropping a reference is not closing. */
	broker_conn_unref(b.conn);
	assert_int_equal(n_vms_named(f, "b1"), 1);
	broker_conn_unref(a.conn);
	broker_conn_unref(c.conn);
	broker_unsubscribe(f->b, sub);
}

/* A request that arrives after its caller left (polkit was slow) makes
 * nothing: the door still holds the connection, closed. */
static void test_request_on_closed_conn_creates_nothing(void **st)
{
	struct fx *f = *st;
	for (int follow = 0; follow < 2; follow++) {
		struct broker_caller late = root;
		late.door = follow ? BROKER_DOOR_DBUS : BROKER_DOOR_SOCKET;
		assert_int_equal(broker_conn_open(f->b, follow, &late.conn), 0);
		struct broker_conn *held = broker_conn_ref(late.conn); /* the waiting request's */
		broker_conn_close(late.conn, "its D-Bus peer :1.7 left the bus");
		broker_conn_unref(late.conn); /* the door forgot its peer */
		late.conn = held;
		uint64_t gen = broker_generation(f->b);
		struct json_object *r = NULL;
		struct proto_error err;
		assert_true(call(f, &late, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"late\",\"gp\":1,"
					   "\"vcpu_count\":1,\"cpus\":\"0\"}}", &r, &err) < 0);
		assert_int_equal(err.code, PROTO_E_REFUSED);
		assert_non_null(strstr(err.message, "the caller's connection is gone"));
		assert_true(call(f, &late, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"late\","
					   "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}", &r, &err) < 0);
		assert_int_equal(err.code, PROTO_E_REFUSED);
		assert_int_equal(broker_generation(f->b), gen);
		assert_int_equal(broker_vm_count(f->b), 0);
		assert_int_equal(broker_session_count(f->b), 0);
		assert_int_equal(count_files(f, "leases"), 0);
		broker_conn_unref(late.conn);
	}
}

/* ------------------------------------------------------------ rights */

struct who {
	const char *what;
	struct broker_caller c;
	bool admin;          /* may call ADMIN methods */
};

static void test_authorization_per_door(void **st)
{
	struct fx *f = *st;
	struct group *g = getgrgid(getgid());
	assert_non_null(g);
	snprintf(f->cfg.admin_group, sizeof(f->cfg.admin_group), "%s", g->gr_name);
	const gid_t admin = g->gr_gid, other = admin + 4242;
	const uid_t user = 4242;
	const gid_t supp[] = { other + 1, admin }, none[] = { other + 1 };
	const struct who who[] = {
		{ "root on the socket", { .door = BROKER_DOOR_SOCKET, .uid = 0, .gid = other }, true },
		{ "admin group as primary", { .door = BROKER_DOOR_SOCKET, .uid = user, .gid = admin }, true },
		{ "admin group as supplementary",
		  { .door = BROKER_DOOR_SOCKET, .uid = user, .gid = other, .groups = supp, .n_groups = 2 }, true },
		{ "another user", { .door = BROKER_DOOR_SOCKET, .uid = user, .gid = other, .groups = none, .n_groups = 1 },
		  false },
		/* polkit means something on the bus only */
		{ "another user, polkit on the socket",
		  { .door = BROKER_DOOR_SOCKET, .uid = user, .gid = other, .polkit_allowed = true }, false },
		{ "root on the bus", { .door = BROKER_DOOR_DBUS, .uid = 0, .gid = other }, true },
		{ "admin group on the bus",
		  { .door = BROKER_DOOR_DBUS, .uid = user, .gid = other, .groups = supp, .n_groups = 2 }, true },
		{ "another user on the bus", { .door = BROKER_DOOR_DBUS, .uid = user, .gid = other }, false },
		{ "another user on the bus, polkit says yes",
		  { .door = BROKER_DOOR_DBUS, .uid = user, .gid = other, .polkit_allowed = true }, true },
		{ "vpmud's libvirt follower", { .door = BROKER_DOOR_LIBVIRT, .uid = user, .gid = other }, true },
		{ "the restore", { .door = BROKER_DOOR_STATE, .uid = user, .gid = other }, true },
	};
	const enum proto_method reads[] = { PROTO_M_STATUS, PROTO_M_PMU, PROTO_M_PLAN, PROTO_M_VM_LIST,
					    PROTO_M_VM_SHOW, PROTO_M_SESSION_LIST };
	const enum proto_method changes[] = { PROTO_M_VM_ATTACH, PROTO_M_VM_DETACH, PROTO_M_VM_UPDATE,
					      PROTO_M_VM_BIND, PROTO_M_SESSION_START };
	const enum proto_method owned[] = { PROTO_M_SESSION_STOP, PROTO_M_SESSION_READ };
	for (size_t i = 0; i < sizeof(who) / sizeof(who[0]); i++) {
		const struct broker_caller *c = &who[i].c;
		struct proto_error err;
		for (size_t m = 0; m < sizeof(reads) / sizeof(reads[0]); m++)
			assert_int_equal(broker_authorize(f->b, c, reads[m], (uid_t)-1, &err), 0);
		for (size_t m = 0; m < sizeof(changes) / sizeof(changes[0]); m++) {
			memset(&err, 0, sizeof(err));
			int r = broker_authorize(f->b, c, changes[m], (uid_t)-1, &err);
			if (who[i].admin != (r == 0))
				fail_msg("%s: %s: got %d (%s)", who[i].what, proto_method_name(changes[m]), r, err.message);
			if (r == 0)
				continue;
			assert_int_equal(r, -EPERM);
			assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
			/* The refusal names what this door accepts. */
			assert_non_null(strstr(err.message, proto_method_name(changes[m])));
			assert_non_null(strstr(err.message, g->gr_name));
			assert_non_null(strstr(err.message, "caller uid 4242"));
			if (c->door == BROKER_DOOR_DBUS)
				assert_non_null(strstr(err.message, BROKER_POLKIT_ACTION));
			else
				assert_null(strstr(err.message, "polkit"));
		}
		for (size_t m = 0; m < sizeof(owned) / sizeof(owned[0]); m++) {
			/* its own session: always; another's: admins only */
			assert_int_equal(broker_authorize(f->b, c, owned[m], c->uid, NULL), 0);
			assert_int_equal(broker_authorize(f->b, c, owned[m], 31337, NULL) == 0, who[i].admin);
		}
		/* Credentials alone: polkit is no credential. */
		assert_int_equal(broker_caller_is_admin(f->b, c), who[i].admin && !c->polkit_allowed);
	}
	assert_int_equal(broker_method_right(PROTO_M_PLAN), BROKER_RIGHT_ANYONE);
	assert_int_equal(broker_method_right(PROTO_M_VM_BIND), BROKER_RIGHT_ADMIN);
	assert_int_equal(broker_method_right(PROTO_M_SESSION_READ), BROKER_RIGHT_OWNER_OR_ADMIN);

	/* The same through the operations. */
	struct broker_caller member = who[2].c, stranger = who[3].c, owner = who[3].c;
	member.pid = stranger.pid = owner.pid = getpid();
	owner.uid = user;
	stranger.uid = user + 1;
	struct json_object *r = NULL;
	struct proto_error err;
	assert_true(call(f, &stranger, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"x\",\"gp\":1,"
				       "\"vcpu_count\":1,\"cpus\":\"1\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	attach_as(f, &member, "m", "1");
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "m", &v), 0);
	assert_int_equal(v.uid, user);
	assert_true(call(f, &stranger, "{\"id\":2,\"method\":\"vm.detach\",\"params\":{\"name\":\"m\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_int_equal(n_vms_named(f, "m"), 1);
	/* A session of uid 4242, made by an admin of that uid: its owner (no
	 * admin) reads and lists it whole; someone else lists it withheld and
	 * is refused reading or stopping it with what this door requires. */
	session_as(f, &member, "mine", 0);
	json_object_put(ok_as(f, &owner, "{\"id\":3,\"method\":\"session.read\",\"params\":{\"name\":\"mine\"}}"));
	r = ok_as(f, &owner, "{\"id\":4,\"method\":\"session.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "sessions")), 1);
	assert_null(json_object_object_get(json_object_array_get_idx(json_object_object_get(r, "sessions"), 0),
					   "withheld"));
	json_object_put(r);
	r = ok_as(f, &stranger, "{\"id\":5,\"method\":\"session.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "sessions")), 1);
	assert_true(json_object_get_boolean(
		json_object_object_get(json_object_array_get_idx(json_object_object_get(r, "sessions"), 0), "withheld")));
	json_object_put(r);
	assert_true(call(f, &stranger, "{\"id\":6,\"method\":\"session.read\",\"params\":{\"name\":\"mine\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_non_null(strstr(err.message, "session.read needs the session's owner, root or membership in group"));
	assert_true(call(f, &stranger, "{\"id\":7,\"method\":\"session.stop\",\"params\":{\"name\":\"mine\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_non_null(strstr(err.message, "session.stop needs the session's owner, root or membership in group"));
	assert_int_equal(n_sessions_named(f, "mine"), 1);
	assert_true(call(f, &stranger, "{\"id\":8,\"method\":\"session.stop\",\"params\":{\"name\":\"none\"}}", &r, &err) < 0);
	assert_string_equal(err.message, "no session named none");
	json_object_put(ok_as(f, &owner, "{\"id\":9,\"method\":\"session.stop\",\"params\":{\"name\":\"mine\"}}"));
	/* On the bus, polkit's yes lets another user change things. */
	struct broker_caller bus = who[7].c;
	bus.pid = getpid();
	assert_true(call(f, &bus, "{\"id\":10,\"method\":\"vm.attach\",\"params\":{\"name\":\"pk\",\"gp\":1,"
				  "\"vcpu_count\":1,\"cpus\":\"2\"}}", &r, &err) < 0);
	assert_non_null(strstr(err.message, BROKER_POLKIT_ACTION));
	bus.polkit_allowed = true;
	attach_as(f, &bus, "pk", "2");
}

/* What a caller sees of leases: another user's whole only to an admin by
 * credentials; to anyone else without what identifies its owner's work. */
static struct json_object *member_of(struct json_object *arr, const char *key, const char *name)
{
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *o = json_object_array_get_idx(arr, i), *n = json_object_object_get(o, key);
		if (n && !strcmp(json_object_get_string(n), name))
			return o;
	}
	fail_msg("no %s %s", key, name);
	return NULL;
}

static void assert_vm_withheld(struct json_object *vm, bool withheld)
{
	/* what describes the allocation is always there */
	assert_non_null(json_object_object_get(vm, "priority"));
	assert_non_null(json_object_object_get(vm, "class"));
	assert_non_null(json_object_object_get(vm, "gp"));
	assert_non_null(json_object_object_get(vm, "routes"));
	assert_non_null(json_object_object_get(vm, "vcpus"));
	assert_int_equal(json_object_object_get(vm, "withheld") != NULL, withheld);
	assert_int_equal(json_object_object_get_ex(vm, "origin", NULL), !withheld);
	assert_int_equal(json_object_object_get_ex(vm, "owner", NULL), !withheld);
}

static void assert_session_withheld(struct json_object *s, bool withheld)
{
	assert_non_null(json_object_object_get(s, "priority"));
	assert_non_null(json_object_object_get(s, "class"));
	assert_non_null(json_object_object_get(s, "cpus"));
	assert_int_equal(json_object_object_get(s, "withheld") != NULL, withheld);
	assert_int_equal(json_object_object_get_ex(s, "events", NULL), !withheld);
	assert_int_equal(json_object_object_get_ex(s, "owner_pid", NULL), !withheld);
	assert_int_equal(json_object_object_get_ex(s, "uid", NULL), !withheld);
}

static void assert_view(struct fx *f, const struct broker_caller *c, bool withheld)
{
	struct json_object *r = ok_as(f, c, "{\"id\":1,\"method\":\"plan\"}");
	assert_vm_withheld(member_of(json_object_object_get(r, "vms"), "name", "rootvm"), withheld);
	assert_session_withheld(member_of(json_object_object_get(r, "sessions"), "name", "rootprof"), withheld);
	/* the counters the session holds stay; which event holds them does not */
	struct json_object *cpu0 = json_object_array_get_idx(json_object_object_get(r, "cpus"), 0);
	struct json_object *h = member_of(json_object_object_get(cpu0, "host"), "session", "rootprof");
	assert_non_null(json_object_object_get(h, "counter"));
	assert_int_equal(json_object_object_get_ex(h, "event", NULL), !withheld);
	assert_int_equal(json_object_object_get(h, "withheld") != NULL, withheld);
	json_object_put(r);
	r = ok_as(f, c, "{\"id\":2,\"method\":\"vm.list\"}");
	assert_vm_withheld(member_of(json_object_object_get(r, "vms"), "name", "rootvm"), withheld);
	json_object_put(r);
	r = ok_as(f, c, "{\"id\":3,\"method\":\"vm.show\",\"params\":{\"name\":\"rootvm\"}}");
	assert_vm_withheld(r, withheld);
	json_object_put(r);
	r = ok_as(f, c, "{\"id\":4,\"method\":\"session.list\"}");
	assert_session_withheld(member_of(json_object_object_get(r, "sessions"), "name", "rootprof"), withheld);
	json_object_put(r);
}

static void test_visibility(void **st)
{
	struct fx *f = *st;
	struct group *g = getgrgid(getgid());
	assert_non_null(g);
	snprintf(f->cfg.admin_group, sizeof(f->cfg.admin_group), "%s", g->gr_name);
	const gid_t admin = g->gr_gid, other = admin + 4242;
	const gid_t supp[] = { other + 1, admin };
	struct broker_caller member = { .door = BROKER_DOOR_SOCKET, .uid = 4242, .gid = other, .groups = supp,
					.n_groups = 2, .pid = getpid() };
	struct broker_caller user = { .door = BROKER_DOOR_SOCKET, .uid = 4242, .gid = other, .pid = getpid() };
	struct broker_caller bus_user = user, bus_polkit = user, bus_member = member;
	bus_user.door = bus_polkit.door = bus_member.door = BROKER_DOOR_DBUS;
	bus_polkit.polkit_allowed = true;
	attach_as(f, &root, "rootvm", "0");
	json_object_put(ok_as(f, &root, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"rootprof\","
					"\"events\":[\"cycles\"],\"cpus\":\"0\"}}"));
	/* root's leases: whole to root and the admin group on either door,
	 * withheld from anyone else (polkit is no credential for a read) */
	assert_view(f, &root, false);
	assert_view(f, &member, false);
	assert_view(f, &bus_member, false);
	assert_view(f, &user, true);
	assert_view(f, &bus_user, true);
	assert_view(f, &bus_polkit, true);

	/* The rule itself, on views. */
	struct broker_viewer w = broker_viewer(f->b, &user), all = broker_viewer(f->b, &member);
	assert_false(w.sees_all);
	assert_true(all.sees_all);
	assert_true(broker_viewer_sees(&w, 4242));
	assert_false(broker_viewer_sees(&w, 0));
	assert_false(broker_viewer_sees(&w, (uid_t)-1));
	assert_true(broker_viewer_sees(&all, 0));
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "rootvm", &v), 0);
	broker_vm_view_withhold(&all, &v);
	assert_false(v.withheld);
	assert_non_null(v.origin);
	broker_vm_view_withhold(&w, &v);
	assert_true(v.withheld);
	assert_null(v.origin);
	assert_int_equal(v.uid, (uid_t)-1);
	assert_int_equal(v.vmm_pid, 0);
	assert_int_equal(v.vm_fd, -1);
	assert_string_equal(v.name, "rootvm");
	assert_int_equal(v.gp, 1);
	struct broker_session_view sv;
	assert_int_equal(broker_session_find(f->b, "rootprof", &sv), 0);
	assert_int_equal(sv.n_events, 1);
	broker_session_view_withhold(&w, &sv);
	assert_true(sv.withheld);
	assert_int_equal(sv.n_events, 0);
	assert_int_equal(sv.owner_pid, 0);
	assert_int_equal(sv.pid, 0);
	assert_int_equal(sv.uid, (uid_t)-1);
	assert_null(sv.origin);
	assert_true(sv.has_cpus);
	assert_string_equal(sv.name, "rootprof");
	struct broker_host_placement p = { .holder = BROKER_HOLDER_SESSION, .event = "cycles", .owner_uid = 0 };
	broker_placement_withhold(&w, &p);
	assert_true(p.withheld);
	assert_null(p.event);
	p = (struct broker_host_placement){ .holder = BROKER_HOLDER_FOREIGN, .event = "cycles",
					    .owner_uid = (uid_t)-1 };
	broker_placement_withhold(&w, &p);
	assert_false(p.withheld);

	/* A plain user's own leases (made while it was in the admin group):
	 * whole to it, withheld from another plain user. */
	attach_as(f, &member, "uservm", "1");
	struct json_object *r = ok_as(f, &user, "{\"id\":5,\"method\":\"vm.show\",\"params\":{\"name\":\"uservm\"}}");
	assert_vm_withheld(r, false);
	json_object_put(r);
	struct broker_caller stranger = user;
	stranger.uid = 4243;
	r = ok_as(f, &stranger, "{\"id\":6,\"method\":\"vm.show\",\"params\":{\"name\":\"uservm\"}}");
	assert_vm_withheld(r, true);
	json_object_put(r);
}

/* ------------------------------------------------------------ persistence */

static const char *route_of(struct fx *f, const char *vm, int gp)
{
	struct broker_vm_view v;
	struct broker_vcpu_view vc;
	assert_int_equal(broker_vm_find(f->b, vm, &v), 0);
	assert_int_equal(broker_vm_vcpu(f->b, v.id, 0, &vc), 0);
	return broker_route_name((enum broker_route)vc.gp[gp]);
}

static uint64_t id_of(struct fx *f, const char *vm)
{
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, vm, &v), 0);
	return v.id;
}

static const char *placement_in_plan(struct fx *f, const char *session, uint32_t e)
{
	struct broker_session_view sv;
	struct broker_event_view ev;
	assert_int_equal(broker_session_find(f->b, session, &sv), 0);
	assert_int_equal(broker_session_event(f->b, sv.id, e, &ev), 0);
	return broker_placement_name(ev.placement);
}

/* Restored leases come back in arrival order (arbitration breaks ties by
 * it), with their ids; new ones get ids above them. */
static void test_restore_order_and_next_id(void **st)
{
	struct fx *f = *st;
	/* A VM and a session of equal priority want the same counters of
	 * CPU 1: the first to arrive has them. The session's name sorts
	 * first, so that no order by name can pass for arrival. */
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"zz\",\"gp\":8,"
			      "\"vcpu_count\":1,\"cpus\":\"1\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"gone\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"9\"}}"));
	json_object_put(ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"aa\","
			      "\"events\":[\"branches\"],\"cpus\":\"1\"}}"));
	json_object_put(ok(f, "{\"id\":4,\"method\":\"vm.detach\",\"params\":{\"name\":\"gone\"}}"));
	assert_string_equal(route_of(f, "zz", 7), "passthrough");
	assert_string_equal(placement_in_plan(f, "aa", 0), "multiplexed");
	struct broker_session_view sv;
	assert_int_equal(broker_session_find(f->b, "aa", &sv), 0);
	uint64_t zz = id_of(f, "zz"), aa = sv.id;
	assert_true(zz < aa);
	/* A session whose owner dies while vpmud is down does not come back. */
	pid_t child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	assert_true(child > 0);
	session_as(f, &root, "orphan", child);
	assert_true(lease_file_exists(f, "session-orphan.json"));
	close_broker(f);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	open_broker(f);
	assert_string_equal(route_of(f, "zz", 7), "passthrough");
	assert_string_equal(placement_in_plan(f, "aa", 0), "multiplexed");
	assert_int_equal(id_of(f, "zz"), zz);
	assert_int_equal(broker_session_find(f->b, "aa", &sv), 0);
	assert_int_equal(sv.id, aa);
	assert_int_equal(n_sessions_named(f, "orphan"), 0);
	assert_false(lease_file_exists(f, "session-orphan.json"));
	assert_int_equal(count_files(f, "rejected"), 0);
	json_object_put(ok(f, "{\"id\":5,\"method\":\"vm.attach\",\"params\":{\"name\":\"new\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"10\"}}"));
	assert_true(id_of(f, "new") > aa);
}

/* Admission is a gate on arrival: a guaranteed session admitted before a
 * VM was raised to a priority that would have kept it out comes back at
 * restart exactly as it was acknowledged, not refused. */
static void test_restore_replays_admitted_set(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"v\",\"gp\":8,"
			      "\"vcpu_count\":1,\"cpus\":\"1\",\"priority\":100,\"class\":\"preferred\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"g\","
			      "\"events\":[\"branches\"],\"cpus\":\"1\",\"priority\":500,\"class\":\"guaranteed\"}}"));
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.update\",\"params\":{\"name\":\"v\",\"priority\":900}}"));
	const char *before = placement_in_plan(f, "g", 0);
	assert_string_equal(before, "dedicated");
	char routes[8][16];
	for (int i = 0; i < 8; i++)
		snprintf(routes[i], sizeof(routes[i]), "%s", route_of(f, "v", i));
	close_broker(f);
	open_broker(f);
	assert_int_equal(n_sessions_named(f, "g"), 1);
	assert_string_equal(placement_in_plan(f, "g", 0), "dedicated");
	for (int i = 0; i < 8; i++)
		assert_string_equal(route_of(f, "v", i), routes[i]);
	assert_int_equal(count_files(f, "rejected"), 0);
}

/* A state.json of the old format becomes lease files, restored in its
 * order (VMs, then sessions). */
static void test_old_state_migrates(void **st)
{
	struct fx *f = *st;
	close_broker(f);
	char p[128];
	snprintf(p, sizeof(p), "%s/state.json", f->dir);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fprintf(fp, "{\"format\":1,\"vms\":["
		    "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"first\",\"gp\":6,\"vcpus\":[{\"cpus\":\"8\"}]}},\"uid\":0,\"origin\":\"vpmuctl\"},"
		    "{\"request\":{\"method\":\"vm.attach\",\"params\":{\"name\":\"second\",\"gp\":8,\"vcpus\":[{\"cpus\":\"1\"}]}},\"uid\":7,\"origin\":\"libvirt\"}],"
		    "\"sessions\":[{\"request\":{\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"branches\"],\"cpus\":\"1\",\"owner_pid\":%d}},"
		    "\"uid\":0,\"origin\":\"vpmuctl\"}]}\n", (int)getpid());
	fclose(fp);
	open_broker(f);
	assert_int_equal(broker_vm_count(f->b), 2);
	assert_int_equal(broker_session_count(f->b), 1);
	/* VMs were replayed before sessions, as the old restore did: the
	 * session gets what the VM on CPU 1 left, nothing dedicated. */
	assert_string_equal(route_of(f, "first", 5), "passthrough");
	assert_string_equal(route_of(f, "second", 7), "passthrough");
	assert_string_equal(placement_in_plan(f, "s", 0), "multiplexed");
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "second", &v), 0);
	assert_int_equal(v.uid, 7);
	assert_string_equal(v.origin, "libvirt");
	assert_true(lease_file_exists(f, "vm-first.json"));
	assert_true(lease_file_exists(f, "session-s.json"));
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "test ! -e %s/state.json && ls %s | grep -q '^state.json.migrated-'", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	/* Ids continue above the migrated ones. */
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"third\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"10\"}}"));
	assert_true(id_of(f, "third") > id_of(f, "second"));
	assert_true(id_of(f, "second") > id_of(f, "first"));
}

struct file_id {
	ino_t ino;
	struct timespec mtime;
	off_t size;
	bool present;
};

static struct file_id file_id(struct fx *f, const char *file)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/leases/%s", f->dir, file);
	if (stat(p, &st) < 0)
		return (struct file_id){0};
	return (struct file_id){ .ino = st.st_ino, .mtime = st.st_mtim, .size = st.st_size, .present = true };
}

static bool same_file(struct file_id a, struct file_id b)
{
	return a.present && b.present && a.ino == b.ino && a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec &&
	       a.mtime.tv_nsec == b.mtime.tv_nsec;
}

/* A change writes its own lease's file and touches no other. */
static void test_per_lease_files(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"a\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"0\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"b\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"1\"}}"));
	session_as(f, &root, "s", 0);
	struct file_id a = file_id(f, "vm-a.json"), b = file_id(f, "vm-b.json"), s = file_id(f, "session-s.json");
	assert_true(a.present && b.present && s.present);
	assert_int_equal(count_files(f, "leases"), 3);

	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"c\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"2\"}}"));
	assert_int_equal(count_files(f, "leases"), 4);
	assert_true(same_file(a, file_id(f, "vm-a.json")));
	assert_true(same_file(b, file_id(f, "vm-b.json")));
	assert_true(same_file(s, file_id(f, "session-s.json")));
	struct file_id c = file_id(f, "vm-c.json");
	assert_true(c.present);

	/* An update rewrites that lease only (a new file renamed in place). */
	json_object_put(ok(f, "{\"id\":4,\"method\":\"vm.update\",\"params\":{\"name\":\"a\",\"priority\":300}}"));
	struct file_id a2 = file_id(f, "vm-a.json");
	assert_true(a2.present);
	assert_false(same_file(a, a2));
	assert_true(same_file(b, file_id(f, "vm-b.json")));
	assert_true(same_file(c, file_id(f, "vm-c.json")));
	assert_true(same_file(s, file_id(f, "session-s.json")));

	/* A detach removes its file and nothing else. */
	json_object_put(ok(f, "{\"id\":5,\"method\":\"vm.detach\",\"params\":{\"name\":\"b\"}}"));
	assert_false(file_id(f, "vm-b.json").present);
	assert_int_equal(count_files(f, "leases"), 3);
	assert_true(same_file(a2, file_id(f, "vm-a.json")));
	assert_true(same_file(c, file_id(f, "vm-c.json")));
	assert_true(same_file(s, file_id(f, "session-s.json")));
	/* No temporary file left over, no single state document. */
	char p[128];
	snprintf(p, sizeof(p), "%s/state.json", f->dir);
	assert_int_not_equal(access(p, F_OK), 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/leases | grep '^\\.')\"", f->dir);
	assert_int_equal(system(cmd), 0);
}

/* The store's limit holds both ways: a lease text of exactly
 * STATE_LEASE_MAX bytes reloads; one byte more is kept aside. */
static void test_lease_at_size_limit_reloads(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"big\",\"gp\":3,"
			      "\"vcpu_count\":2,\"cpus\":\"4-5\"}}"));
	close_broker(f);
	for (int extra = 0; extra < 2; extra++) {
		char p[256];
		snprintf(p, sizeof(p), "%s/leases/vm-big.json", f->dir);
		FILE *fp = fopen(p, "r+");
		assert_non_null(fp);
		char head[4096];
		size_t n = fread(head, 1, sizeof(head), fp);
		assert_true(n > 0 && n < sizeof(head));
		/* JSON may end in whitespace: pad the saved text to the size. */
		size_t want = STATE_LEASE_MAX + (size_t)extra;
		assert_int_equal(fseek(fp, 0, SEEK_END), 0);
		for (size_t i = n; i < want; i++)
			fputc(' ', fp);
		fclose(fp);
		struct stat sb;
		assert_int_equal(stat(p, &sb), 0);
		assert_int_equal((size_t)sb.st_size, want);
		open_broker(f);
		if (extra == 0) {
			assert_int_equal(n_vms_named(f, "big"), 1);
			assert_string_equal(route_of(f, "big", 2), "passthrough");
			assert_int_equal(count_files(f, "rejected"), 0);
			close_broker(f);
			/* back to its own size for the next round */
			assert_int_equal(truncate(p, (off_t)n), 0);
		} else {
			assert_int_equal(n_vms_named(f, "big"), 0);
			assert_int_equal(count_files(f, "rejected"), 1);
		}
	}
}

/* What a door hands over typed, without the protocol's decoder, is held
 * to the same rules: nothing is acknowledged that would not reload. */
static void test_typed_requests_checked_as_reload(void **st)
{
	struct fx *f = *st;
	struct cpulist one;
	cpulist_clear(&one);
	cpulist_set(&one, 3);
	struct proto_vm_attach a = { .gp = 1, .vcpus = { .count = 1, .cpus = &one } };
	struct proto_error err = {0};
	snprintf(a.name, sizeof(a.name), "bad name");
	assert_true(broker_vm_attach(f->b, &root, &a, NULL, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.name");
	snprintf(a.name, sizeof(a.name), "..");
	assert_true(broker_vm_attach(f->b, &root, &a, NULL, &err) < 0);
	assert_string_equal(err.field, "params.name");
	snprintf(a.name, sizeof(a.name), "ok");
	a.has_priority = true;
	a.priority = PROTO_MAX_PRIORITY + 1;
	memset(&err, 0, sizeof(err));
	assert_true(broker_vm_attach(f->b, &root, &a, NULL, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.priority");
	assert_int_equal(broker_vm_count(f->b), 0);
	assert_int_equal(count_files(f, "leases"), 0);
	a.priority = PROTO_MAX_PRIORITY;
	struct broker_attach_result res;
	assert_int_equal(broker_vm_attach(f->b, &root, &a, &res, &err), 0);
	assert_int_equal(res.passthrough_vcpus, 1);
	assert_int_equal(res.multiplexed_vcpus, 0);
	assert_false(res.bound);
	assert_int_equal(res.generation, broker_generation(f->b));
	/* An update the restore would refuse changes nothing. */
	struct proto_vm_update u = { .has_priority = true, .priority = 5000 };
	snprintf(u.name, sizeof(u.name), "ok");
	assert_true(broker_vm_update(f->b, &root, &u, NULL, &err) < 0);
	assert_string_equal(err.field, "params.priority");
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "ok", &v), 0);
	assert_int_equal(v.priority, PROTO_MAX_PRIORITY);
}

/* plan with cpus: only those CPUs, and only the VMs and sessions that may
 * run on them (a task's session may run anywhere). */
static void test_plan_filter(void **st)
{
	struct fx *f = *st;
	/* Sessions count for real on the host's CPUs: 0 and 1 exist anywhere. */
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"on0\",\"gp\":1,"
			      "\"vcpu_count\":2,\"cpus\":\"0\"}}"));
	json_object_put(ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"on8\",\"gp\":1,"
			      "\"vcpu_count\":1,\"cpus\":\"8\"}}"));
	json_object_put(ok(f, "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"two\",\"gp\":1,"
			      "\"vcpus\":[{\"cpus\":\"2\"},{\"cpus\":\"8\"}]}}"));
	json_object_put(ok(f, "{\"id\":4,\"method\":\"session.start\",\"params\":{\"name\":\"s1\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"1\"}}"));
	json_object_put(ok(f, "{\"id\":5,\"method\":\"session.start\",\"params\":{\"name\":\"s0\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}"));
	char q[256];
	snprintf(q, sizeof(q), "{\"id\":6,\"method\":\"session.start\",\"params\":{\"name\":\"task\","
		 "\"events\":[\"task-clock\"],\"pid\":%d}}", (int)getpid());
	json_object_put(ok(f, q));
	const struct {
		const char *cpus, *cpu_list, *vms, *sessions;
	} cases[] = {
		{ "8", "8", "on8,two", "task" },
		{ "0", "0", "on0", "s0,task" },
		{ "1,8", "1,8", "on8,two", "s1,task" },
		{ "100", "100", "", "task" },
		{ NULL, NULL, "on0,on8,two", "s1,s0,task" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].cpus)
			snprintf(q, sizeof(q), "{\"id\":7,\"method\":\"plan\",\"params\":{\"cpus\":\"%s\"}}", cases[i].cpus);
		else
			snprintf(q, sizeof(q), "{\"id\":7,\"method\":\"plan\"}");
		struct json_object *r = ok(f, q);
		char got[256] = "";
		struct json_object *arr = json_object_object_get(r, "cpus");
		if (cases[i].cpu_list) {
			for (size_t k = 0; k < json_object_array_length(arr); k++)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%d", k ? "," : "",
					 json_object_get_int(json_object_object_get(json_object_array_get_idx(arr, k), "cpu")));
			assert_string_equal(got, cases[i].cpu_list);
		} else {
			assert_int_equal(json_object_array_length(arr), 144);
		}
		const char *lists[2] = { "vms", "sessions" }, *want[2] = { cases[i].vms, cases[i].sessions };
		for (int l = 0; l < 2; l++) {
			got[0] = '\0';
			arr = json_object_object_get(r, lists[l]);
			for (size_t k = 0; k < json_object_array_length(arr); k++)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? "," : "",
					 json_object_get_string(json_object_object_get(json_object_array_get_idx(arr, k), "name")));
			if (strcmp(got, want[l]))
				fail_msg("plan cpus %s: %s are %s, want %s", cases[i].cpus ? cases[i].cpus : "(all)", lists[l],
					 got, want[l]);
		}
		json_object_put(r);
	}
}

/* ------------------------------------------------------------ the wire */

/* The same values as fresh json-c objects: a parsed double keeps the text
 * it was parsed from, a new one is printed by json-c itself. */
static struct json_object *fresh_copy(struct json_object *o)
{
	if (!o)
		return NULL;
	switch (json_object_get_type(o)) {
	case json_type_object: {
		struct json_object *n = json_object_new_object();
		json_object_object_foreach(o, key, val)
			json_object_object_add(n, key, fresh_copy(val));
		return n;
	}
	case json_type_array: {
		struct json_object *n = json_object_new_array();
		for (size_t i = 0; i < json_object_array_length(o); i++)
			json_object_array_add(n, fresh_copy(json_object_array_get_idx(o, i)));
		return n;
	}
	case json_type_double:
		return json_object_new_double(json_object_get_double(o));
	case json_type_string:
		return json_object_new_string(json_object_get_string(o));
	case json_type_boolean:
		return json_object_new_boolean(json_object_get_boolean(o));
	default:
		return json_object_get(o);
	}
}

/* text is exactly what json-c prints for the values it holds, compact and
 * without slash escaping, as the socket sent them before the typed core. */
static void assert_prints_as_json_c(const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
	assert_int_equal(json_tokener_get_error(tok), json_tokener_success);
	assert_int_equal((size_t)json_tokener_get_parse_end(tok), len);
	json_tokener_free(tok);
	struct json_object *n = fresh_copy(o);
	const char *want = json_object_to_json_string_ext(n, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	if (strcmp(want, text))
		fail_msg("rendered:\n%s\njson-c prints:\n%s", text, want);
	json_object_put(n);
	json_object_put(o);
}

static void test_results_print_as_json_c(void **st)
{
	struct fx *f = *st;
	/* Shares below 1 (three events contending), routes of every kind, a
	 * task session, an odd event spec and a follows_connection flag. */
	struct broker_caller agent = root;
	agent.door = BROKER_DOOR_DBUS;
	assert_int_equal(broker_conn_open(f->b, true, &agent.conn), 0);
	json_object_put(ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"priority\":500,"
			      "\"class\":\"guaranteed\",\"gp\":4,\"fixed_mask\":\"0x3\",\"vcpu_count\":2,\"cpus\":\"0-3,7,9-11\"}}"));
	json_object_put(ok_as(f, &agent, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"db.1\",\"gp\":8,"
					 "\"fixed_mask\":7,\"vcpus\":[{\"cpus\":\"0\"},{\"cpus\":[1,2,5]}]}}"));
	json_object_put(ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"events\":[\"cycles\","
			      "\"task-clock\",\"branches\",\"cache-misses\",\"event=0xa3,umask=0x04\",\"instructions\"],\"cpus\":\"0-1\"}}"));
	char q[256];
	snprintf(q, sizeof(q), "{\"id\":4,\"method\":\"session.start\",\"params\":{\"name\":\"task\","
		 "\"events\":[\"task-clock\",\"cycles\"],\"pid\":%d,\"class\":\"shared\"}}", (int)getpid());
	json_object_put(ok(f, q));
	const char *reqs[] = {
		"{\"id\":5,\"method\":\"status\"}",
		"{\"id\":6,\"method\":\"pmu\"}",
		"{\"id\":7,\"method\":\"plan\"}",
		"{\"id\":8,\"method\":\"plan\",\"params\":{\"cpus\":\"0-1\"}}",
		"{\"id\":9,\"method\":\"vm.list\"}",
		"{\"id\":10,\"method\":\"vm.show\",\"params\":{\"name\":\"db.1\"}}",
		"{\"id\":11,\"method\":\"session.list\"}",
		"{\"id\":12,\"method\":\"session.read\",\"params\":{\"name\":\"task\"}}",
		"{\"id\":13,\"method\":\"vm.update\",\"params\":{\"name\":\"web\",\"priority\":7}}",
		"{\"id\":14,\"method\":\"vm.attach\",\"params\":{\"name\":\"x\",\"gp\":1,\"vcpu_count\":1,\"cpus\":\"4\"}}",
		"{\"id\":15,\"method\":\"session.start\",\"params\":{\"name\":\"y\",\"events\":[\"instructions\"],\"cpus\":\"1\"}}",
		"{\"id\":16,\"method\":\"vm.detach\",\"params\":{\"name\":\"x\"}}",
		"{\"id\":17,\"method\":\"session.stop\",\"params\":{\"name\":\"y\"}}",
	};
	bool saw_fraction = false;
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct proto_request req;
		struct proto_error err = {0};
		bool id_known;
		uint64_t id;
		memset(&req, 0, sizeof(req));
		assert_int_equal(proto_request_decode(reqs[i], strlen(reqs[i]), PMU_MAX_CPUS, &req, &id_known, &id, &err), 0);
		struct json_door_text t = {0};
		if (json_door_result(f->b, &root, &req, &t, &err) < 0)
			fail_msg("%s: %s", reqs[i], err.message);
		assert_prints_as_json_c(t.data, t.len);
		saw_fraction = saw_fraction || strstr(t.data, "\"share\":0.") != NULL;
		json_door_text_fini(&t);
		proto_request_fini(&req);
	}
	assert_true(saw_fraction);

	/* Events, with what strings may hold. */
	struct broker_change ch[2] = {
		{ .phase = 1, .partition = true, .cpu = 3, .guest_gp_mask = 0xf, .guest_fixed_mask = 0x3,
		  .scrub_gp_mask = 0x1 },
		{ .phase = 2, .vm = "w\"e\\b/1", .vcpu = 2, .n_gp = 8, .pmu_fixed_mask = 0xf,
		  .gp = { BROKER_ROUTE_RESERVED, BROKER_ROUTE_AT_RISK, BROKER_ROUTE_MEDIATED, BROKER_ROUTE_NONE },
		  .fixed = { BROKER_ROUTE_PASSTHROUGH, BROKER_ROUTE_MULTIPLEXED } },
	};
	struct broker_event ev = { .seq = 1, .generation = 42, .flavour = "perf-based", .routes = "advisory", .reason = "vm.attach \x01\t\n\r\b\f\x1f caf\xc3\xa9 \x7f",
				   .n_changes = 2, .changes = ch };
	struct json_door_text t = {0};
	assert_int_equal(json_door_event(&ev, &t), 0);
	assert_prints_as_json_c(t.data, t.len);
	json_door_text_fini(&t);
	broker_conn_unref(agent.conn);
}

/* ------------------------------------------------------------ flavours */

/* Every perf_event_open a session makes, with the attributes passed. */
struct opened {
	unsigned n;
	struct {
		struct perf_event_attr attr;
		int cpu;
	} calls[64];
};
static struct opened opened;

/* Records, then opens for real: software events as asked, hardware ones
 * as a cpu-clock stand-in keeping every flag the session set, so that a
 * "host" PMU works on any machine and the kernel still judges the flags. */
static int record_open(void *ctx, struct perf_event_attr *attr, pid_t pid, int cpu, int group_fd,
		       unsigned long flags)
{
	struct opened *o = ctx;
	assert_true(o->n < 64);
	o->calls[o->n].attr = *attr;
	o->calls[o->n++].cpu = cpu;
	struct perf_event_attr real = *attr;
	if (real.type != PERF_TYPE_SOFTWARE) {
		real.type = PERF_TYPE_SOFTWARE;
		real.config = PERF_COUNT_SW_CPU_CLOCK;
	}
	return (int)syscall(SYS_perf_event_open, &real, pid, cpu, group_fd, flags);
}

/*
 * Reopens the fixture's broker on another flavour, with an advisory port
 * (a stock kernel's flavour has no other) or the model (the extension).
 * host_pmu: the Ice Lake description stands for this host's own PMU, so
 * hardware events are opened (through record_open) instead of skipped.
 */
static void reopen_as_host(struct fx *f, enum broker_flavour flavour, bool nmi_watchdog_perf, bool host_pmu,
			   bool host_mediated);

static void reopen_as(struct fx *f, enum broker_flavour flavour, bool nmi_watchdog_perf, bool host_pmu)
{
	reopen_as_host(f, flavour, nmi_watchdog_perf, host_pmu, false);
}

static void reopen_as_host(struct fx *f, enum broker_flavour flavour, bool nmi_watchdog_perf, bool host_pmu,
			   bool host_mediated)
{
	char why[512];
	struct proto_error err = {0};
	close_broker(f);
	memset(&opened, 0, sizeof(opened));
	f->pmu->source = host_pmu ? PMU_SOURCE_HOST : PMU_SOURCE_BUILTIN;
	struct kvm_port_opts po = { .backend = flavour == BROKER_FLAVOUR_EXTENSION ? KVM_BACKEND_MODEL
										  : KVM_BACKEND_ADVISORY,
				    .n_cpus = f->pmu->n_cpus, .num_gp = f->pmu->num_gp,
				    .fixed_mask = f->pmu->fixed_mask,
				    .model = flavour == BROKER_FLAVOUR_EXTENSION ? f->model : NULL,
				    .caller = { .cap_sys_admin = true } };
	assert_int_equal(kvm_port_open(&po, &f->port, why, sizeof(why)), 0);
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->dir, .flavour = flavour, .nmi_watchdog_perf = nmi_watchdog_perf,
				  .host_mediated = host_mediated, .perf_open = record_open, .perf_open_ctx = &opened };
	if (broker_new(&bo, &f->b, &err) < 0)
		fail_msg("broker_new: %s", err.message);
	assert_int_equal(broker_restore(f->b), 0);
}

/* The answer as text, for what must (not) appear anywhere in it. */
static char *answer_text(struct fx *f, const char *json)
{
	struct json_object *r = ok(f, json);
	char *t = strdup(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
	json_object_put(r);
	return t;
}

static const char *jstr(struct json_object *o, const char *key)
{
	struct json_object *v;
	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no member %s in %s", key, json_object_to_json_string(o));
	return json_object_get_int64(v);
}

/* Every answer names the flavour it reasons about and whether routes
 * hold. */
static void assert_names_flavour(struct json_object *r, const char *flavour, const char *routes)
{
	if (!jstr(r, "flavour") || strcmp(jstr(r, "flavour"), flavour) || !jstr(r, "routes") ||
	    strcmp(jstr(r, "routes"), routes))
		fail_msg("want flavour %s, routes %s in %s", flavour, routes, json_object_to_json_string(r));
}

static struct json_object *event_named(struct json_object *res, const char *name)
{
	struct json_object *evs = json_object_object_get(res, "events");
	for (size_t i = 0; i < json_object_array_length(evs); i++) {
		struct json_object *e = json_object_array_get_idx(evs, i);
		if (!strcmp(jstr(e, "event"), name))
			return e;
	}
	fail_msg("no event %s in %s", name, json_object_to_json_string(res));
	return NULL;
}

static void last_event_cb(const struct broker_event *ev, void *userdata)
{
	struct json_door_text *t = userdata;
	json_door_text_truncate(t, 0);
	assert_int_equal(json_door_event(ev, t), 0);
}

/* The extension, as before: identity routes, simulated on the model. */
static void test_flavour_extension(void **st)
{
	struct fx *f = *st;
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"gp\":4,"
				      "\"vcpu_count\":2,\"cpus\":\"0-3\"}}");
	/* the answer names the VM's own routes: advisory until its VMM hands
	 * a route fd, though the daemon's backend is the model */
	assert_names_flavour(r, "extension", "advisory");
	assert_non_null(strstr(jstr(r, "routes_why"), "not bound"));
	struct json_object *g = json_object_object_get(r, "granted");
	assert_int_equal(jint(g, "passthrough_vcpus"), 2);
	assert_int_equal(jint(g, "multiplexed_vcpus"), 0);
	json_object_put(r);
	r = ok(f, "{\"id\":2,\"method\":\"status\"}");
	struct json_object *b = json_object_object_get(r, "backends");
	assert_string_equal(jstr(b, "kvm_flavour"), "extension");
	assert_string_equal(jstr(b, "kvm_routes"), "simulated");
	assert_false(json_object_object_get_ex(b, "kvm_warnings", NULL));
	json_object_put(r);
	/* Host sessions count guest time here; count_guest is granted. */
	r = ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"s\",\"events\":[\"task-clock\"],"
		  "\"cpus\":\"0\",\"count_guest\":true}}");
	assert_names_flavour(r, "extension", "simulated");
	json_object_put(r);
}

/* perf-based: guest PMCs are room kept or at risk, never passed through;
 * a session kept off the room is multiplexed and says why. */
static void test_flavour_perf(void **st)
{
	struct fx *f = *st;
	reopen_as(f, BROKER_FLAVOUR_PERF, false, false);
	struct json_door_text ev = {0};
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, last_event_cb, &ev, &sub), 0);

	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"priority\":300,"
				      "\"gp\":4,\"fixed_mask\":\"0x3\",\"vcpu_count\":2,\"cpus\":\"0-3\"}}");
	assert_names_flavour(r, "perf-based", "advisory");
	struct json_object *g = json_object_object_get(r, "granted");
	assert_int_equal(jint(g, "reserved_vcpus"), 2);
	assert_int_equal(jint(g, "at_risk_vcpus"), 0);
	assert_false(json_object_object_get_ex(g, "passthrough_vcpus", NULL));
	json_object_put(r);
	/* The watchers hear it in the same words. */
	assert_non_null(strstr(ev.data, "\"flavour\":\"perf-based\",\"routes\":\"advisory\""));
	assert_non_null(strstr(ev.data, "\"gp\":[\"reserved\",\"reserved\",\"reserved\",\"reserved\",\"disabled\""));

	r = ok(f, "{\"id\":2,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}");
	assert_names_flavour(r, "perf-based", "advisory");
	for (int i = 0; i < 4; i++)
		assert_string_equal(route(r, 1, "gp", i), "reserved");
	assert_string_equal(route(r, 0, "gp", 4), "disabled");
	assert_string_equal(route(r, 0, "fixed", 1), "reserved");
	assert_string_equal(route(r, 0, "fixed", 2), "disabled");
	json_object_put(r);

	/* A session of higher priority that wants more general counters than
	 * the room leaves on CPUs 0-1: the guest keeps its room (perf would
	 * let a pinned host event displace KVM's), the session gets flexible
	 * events there, and says why. */
	r = ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"priority\":500,\"events\":"
		  "[\"branches\",\"branch-misses\",\"cache-misses\",\"cache-references\",\"r01c2\",\"r02c2\"],"
		  "\"cpus\":\"0-1\",\"count_guest\":true}}");
	assert_names_flavour(r, "perf-based", "advisory");
	unsigned mux = 0;
	struct json_object *evs = json_object_object_get(r, "events");
	for (size_t i = 0; i < json_object_array_length(evs); i++) {
		struct json_object *e = json_object_array_get_idx(evs, i);
		if (strcmp(jstr(e, "placement"), "multiplexed"))
			continue;
		mux++;
		if (!jstr(e, "reason") || !strstr(jstr(e, "reason"), "kept for") || !strstr(jstr(e, "reason"), "'web'"))
			fail_msg("a multiplexed event without the reason: %s", json_object_to_json_string(e));
	}
	if (mux < 2)
		fail_msg("%u multiplexed: %s", mux, json_object_to_json_string(r));
	json_object_put(r);
	r = ok(f, "{\"id\":4,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}");
	for (int i = 0; i < 4; i++)
		assert_string_equal(route(r, 0, "gp", i), "reserved");
	json_object_put(r);
	/* The plan says the same, with the reason per event. */
	r = ok(f, "{\"id\":5,\"method\":\"plan\",\"params\":{\"cpus\":\"0-1\"}}");
	assert_names_flavour(r, "perf-based", "advisory");
	struct json_object *sess = json_object_array_get_idx(json_object_object_get(r, "sessions"), 0);
	unsigned with_reason = 0;
	evs = json_object_object_get(sess, "events");
	for (size_t i = 0; i < json_object_array_length(evs); i++)
		with_reason += jstr(json_object_array_get_idx(evs, i), "reason") != NULL;
	assert_int_equal(with_reason, mux);
	json_object_put(r);

	/* A guaranteed session that needs the room is refused: it would have
	 * to displace the guest's events. */
	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":6,\"method\":\"session.start\",\"params\":{\"name\":\"g\",\"priority\":900,"
				   "\"class\":\"guaranteed\",\"events\":[\"branches\",\"branch-misses\",\"cache-misses\","
				   "\"cache-references\",\"r01c2\",\"r02c2\",\"r04c2\",\"r08c2\"],\"cpus\":\"2\"}}",
			 &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_REFUSED);

	/* Where no room is left, a guest PMC is at risk, never multiplexed or
	 * passed through. */
	json_object_put(ok(f, "{\"id\":7,\"method\":\"session.start\",\"params\":{\"name\":\"hog\",\"priority\":900,"
			      "\"class\":\"guaranteed\",\"events\":[\"branches\",\"branch-misses\",\"cache-misses\","
			      "\"cache-references\"],\"cpus\":\"8\"}}"));
	r = ok(f, "{\"id\":8,\"method\":\"vm.attach\",\"params\":{\"name\":\"late\",\"priority\":10,\"gp\":8,"
		  "\"vcpu_count\":1,\"cpus\":\"8\"}}");
	g = json_object_object_get(r, "granted");
	assert_int_equal(jint(g, "at_risk_vcpus"), 1);
	json_object_put(r);
	r = ok(f, "{\"id\":9,\"method\":\"vm.show\",\"params\":{\"name\":\"late\"}}");
	unsigned at_risk = 0;
	for (int i = 0; i < 8; i++)
		at_risk += !strcmp(route(r, 0, "gp", i), "at-risk");
	assert_true(at_risk >= 1);
	json_object_put(r);
	assert_non_null(strstr(ev.data, "at-risk"));

	const char *reqs[] = { "{\"id\":10,\"method\":\"plan\"}", "{\"id\":11,\"method\":\"vm.list\"}",
			       "{\"id\":12,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}" };
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		char *t = answer_text(f, reqs[i]);
		if (strstr(t, "passthrough") || strstr(t, "\"multiplexed\"]") || !strstr(t, "\"flavour\":\"perf-based\""))
			fail_msg("%s: %s", reqs[i], t);
		free(t);
	}
	r = ok(f, "{\"id\":13,\"method\":\"status\"}");
	struct json_object *b = json_object_object_get(r, "backends");
	assert_string_equal(jstr(b, "kvm_flavour"), "perf-based");
	assert_string_equal(jstr(b, "kvm_routes"), "advisory");
	assert_non_null(strstr(jstr(b, "kvm_flavour_effect"), "guests: "));
	assert_non_null(strstr(jstr(b, "kvm_flavour_effect"), "host sessions: "));
	json_object_put(r);
	broker_unsubscribe(f->b, sub);
	json_door_text_fini(&ev);
}

/* mediated: guests own the whole PMU while they run; every hardware event
 * vpmud opens counts host time only, and a session that insists on guest
 * time is refused with the reason. */
/* The model of the extension on a host whose kernel runs the mediated
 * vPMU: routes follow the extension, but perf would refuse host events
 * that count guest time, so they exclude it and the warnings are given. */
static void test_extension_on_mediated_host(void **st)
{
	struct fx *f = *st;
	reopen_as_host(f, BROKER_FLAVOUR_EXTENSION, true, true, true);
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"status\"}");
	struct json_object *b = json_object_object_get(r, "backends");
	assert_string_equal(jstr(b, "kvm_flavour"), "extension");
	const char *w = json_object_to_json_string(json_object_object_get(b, "kvm_warnings"));
	if (!strstr(w, "EBUSY") || !strstr(w, "kernel.nmi_watchdog=0"))
		fail_msg("warnings: %s", w);
	json_object_put(r);
	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":2,\"method\":\"session.start\",\"params\":{\"name\":\"g\",\"events\":[\"cycles\"],"
				   "\"cpus\":\"0\",\"count_guest\":true}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_REFUSED);
	r = ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"events\":"
		  "[\"cycles\",\"instructions\"],\"cpus\":\"0\"}}");
	json_object_put(r);
	unsigned hw = 0;
	for (unsigned i = 0; i < opened.n; i++) {
		if (opened.calls[i].attr.type == PERF_TYPE_SOFTWARE)
			continue;
		assert_int_equal(opened.calls[i].attr.exclude_guest, 1);
		hw++;
	}
	assert_int_equal(hw, 2);
}

static void test_flavour_mediated(void **st)
{
	struct fx *f = *st;
	reopen_as(f, BROKER_FLAVOUR_MEDIATED, true, true);
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"status\"}");
	struct json_object *b = json_object_object_get(r, "backends");
	assert_string_equal(jstr(b, "kvm_flavour"), "mediated");
	assert_string_equal(jstr(b, "kvm_routes"), "advisory");
	assert_non_null(strstr(jstr(b, "kvm_flavour_effect"), "exclude_guest"));
	const char *w = json_object_to_json_string(json_object_object_get(b, "kvm_warnings"));
	if (!strstr(w, "EBUSY") || !strstr(w, "kernel.nmi_watchdog=0") || !strstr(w, "irqchip"))
		fail_msg("warnings: %s", w);
	json_object_put(r);

	r = ok(f, "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"priority\":900,\"class\":\"guaranteed\","
		  "\"gp\":8,\"fixed_mask\":\"0x7\",\"vcpu_count\":2,\"cpus\":\"0-1\"}}");
	assert_names_flavour(r, "mediated", "advisory");
	assert_int_equal(jint(json_object_object_get(r, "granted"), "mediated_vcpus"), 2);
	json_object_put(r);
	r = ok(f, "{\"id\":3,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}");
	assert_string_equal(route(r, 0, "gp", 7), "mediated");
	assert_string_equal(route(r, 1, "fixed", 2), "mediated");
	assert_string_equal(route(r, 1, "fixed", 3), "disabled");
	json_object_put(r);

	/* Refused with the reason; nothing made, nothing opened. */
	struct proto_error err;
	uint64_t gen = broker_generation(f->b);
	assert_true(call(f, &root, "{\"id\":4,\"method\":\"session.start\",\"params\":{\"name\":\"g\",\"events\":[\"cycles\"],"
				   "\"cpus\":\"0\",\"count_guest\":true}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_REFUSED);
	assert_string_equal(err.field, "params.count_guest");
	assert_non_null(strstr(err.message, "mediated"));
	assert_non_null(strstr(err.message, "EBUSY"));
	assert_int_equal(broker_session_count(f->b), 0);
	assert_int_equal(broker_generation(f->b), gen);
	assert_int_equal(opened.n, 0);
	assert_false(lease_file_exists(f, "session-g.json"));

	/* The guest holds no counter of the plan: a session has them all,
	 * every hardware event opened with exclude_guest on every CPU. */
	r = ok(f, "{\"id\":5,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"priority\":10,\"events\":"
		  "[\"cycles\",\"instructions\",\"branches\",\"r01c2\",\"task-clock\"],\"cpus\":\"0-1\"}}");
	assert_names_flavour(r, "mediated", "advisory");
	assert_non_null(strstr(jstr(r, "note"), "guest time is not counted"));
	assert_string_equal(jstr(event_named(r, "branches"), "placement"), "dedicated");
	assert_string_equal(jstr(event_named(r, "r01c2"), "placement"), "dedicated");
	json_object_put(r);
	unsigned hw = 0, sw = 0, cpus = 0;
	for (unsigned i = 0; i < opened.n; i++) {
		const struct perf_event_attr *a = &opened.calls[i].attr;
		if (a->type == PERF_TYPE_SOFTWARE) {
			assert_int_equal(a->exclude_guest, 0);
			sw++;
			continue;
		}
		if (!a->exclude_guest)
			fail_msg("hardware event type %u config 0x%llx opened on CPU %d without exclude_guest", a->type,
				 (unsigned long long)a->config, opened.calls[i].cpu);
		hw++;
		cpus |= 1u << opened.calls[i].cpu;
	}
	assert_int_equal(hw, 4 * 2);
	assert_int_equal(sw, 2);
	assert_int_equal(cpus, 0x3);
	r = ok(f, "{\"id\":6,\"method\":\"plan\",\"params\":{\"cpus\":\"0\"}}");
	struct json_object *cpu = json_object_array_get_idx(json_object_object_get(r, "cpus"), 0);
	assert_string_equal(jstr(cpu, "guest_gp_mask"), "0x0");
	json_object_put(r);
	r = ok(f, "{\"id\":7,\"method\":\"session.read\",\"params\":{\"name\":\"prof\"}}");
	assert_names_flavour(r, "mediated", "advisory");
	assert_non_null(strstr(jstr(r, "note"), "guest time is not counted"));
	assert_true(json_object_get_boolean(json_object_object_get(event_named(r, "cycles"), "counted")));
	json_object_put(r);
}

/* no vPMU: leases are accepted and shown with no PMU; every counter is
 * the host's. */
static void test_flavour_none(void **st)
{
	struct fx *f = *st;
	reopen_as(f, BROKER_FLAVOUR_NONE, false, true);
	struct json_object *r = ok(f, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"web\",\"priority\":900,"
				      "\"class\":\"guaranteed\",\"gp\":8,\"fixed_mask\":\"0x1\",\"vcpu_count\":1,\"cpus\":\"0\"}}");
	assert_names_flavour(r, "none", "advisory");
	assert_int_equal(jint(json_object_object_get(r, "granted"), "none_vcpus"), 1);
	json_object_put(r);
	r = ok(f, "{\"id\":2,\"method\":\"vm.show\",\"params\":{\"name\":\"web\"}}");
	assert_string_equal(route(r, 0, "gp", 0), "none");
	assert_string_equal(route(r, 0, "fixed", 0), "none");
	assert_string_equal(route(r, 0, "fixed", 1), "disabled");
	assert_non_null(strstr(jstr(json_object_object_get(r, "guest_pmu"), "error"), "no PMU"));
	json_object_put(r);
	r = ok(f, "{\"id\":3,\"method\":\"session.start\",\"params\":{\"name\":\"prof\",\"events\":[\"branches\","
		  "\"branch-misses\",\"cache-misses\",\"cache-references\",\"r01c2\",\"r02c2\",\"r04c2\",\"r08c2\"],"
		  "\"cpus\":\"0\",\"count_guest\":true}}");
	assert_names_flavour(r, "none", "advisory");
	assert_null(jstr(r, "note"));
	struct json_object *evs = json_object_object_get(r, "events");
	for (size_t i = 0; i < json_object_array_length(evs); i++)
		assert_string_equal(jstr(json_object_array_get_idx(evs, i), "placement"), "dedicated");
	json_object_put(r);
	for (unsigned i = 0; i < opened.n; i++)
		assert_int_equal(opened.calls[i].attr.exclude_guest, 0);
	assert_int_equal(opened.n, 8);
	r = ok(f, "{\"id\":4,\"method\":\"status\"}");
	assert_string_equal(jstr(json_object_object_get(r, "backends"), "kvm_flavour"), "none");
	json_object_put(r);
}

/* count_guest goes with the lease: restored where it is granted, moved
 * aside with the reason on a host that became mediated. */
static void test_count_guest_restored_per_flavour(void **st)
{
	struct fx *f = *st;
	json_object_put(ok(f, "{\"id\":1,\"method\":\"session.start\",\"params\":{\"name\":\"cg\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"0\",\"count_guest\":true}}"));
	char *saved = state_text(f);
	assert_non_null(strstr(saved, "\"count_guest\":true"));
	free(saved);
	reopen_as(f, BROKER_FLAVOUR_PERF, false, false);
	assert_int_equal(broker_session_find(f->b, "cg", NULL), 0);
	assert_int_equal(count_files(f, "rejected"), 0);
	reopen_as(f, BROKER_FLAVOUR_MEDIATED, false, false);
	assert_int_equal(broker_session_find(f->b, "cg", NULL), -ENOENT);
	assert_int_equal(count_files(f, "rejected"), 1);
	assert_false(lease_file_exists(f, "session-cg.json"));
}

/* A flavour goes with its backend: the extension's routes need its port,
 * a stock kernel's flavour an advisory one. */
static void test_flavour_needs_its_backend(void **st)
{
	struct fx *f = *st;
	struct proto_error err = {0};
	struct broker *b = NULL;
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->dir, .flavour = BROKER_FLAVOUR_PERF };
	assert_int_equal(broker_new(&bo, &b, &err), -EINVAL);
	assert_non_null(strstr(err.message, "perf-based"));
	assert_non_null(strstr(err.message, "model"));
	assert_null(b);
}

/* ------------------------------------------------------------ route fds */

/* A child VMM holding one VM with n vCPUs (the fixture's, stopped at
 * teardown), or skip. */
static struct kvm_child *start_vmm(struct fx *f, unsigned n_vcpus)
{
	if (!kvm_child_available())
		skip();
	assert_true(f->n_vmms < sizeof(f->vmms) / sizeof(f->vmms[0]));
	struct kvm_child *c = &f->vmms[f->n_vmms++];
	int r = kvm_child_start(c, 1, n_vcpus, true);
	if (r < 0) {
		kvm_child_stop(c);
		if (r == -ENODEV)
			skip();
		fail_msg("kvm_child_start: %s", strerror(-r));
	}
	return c;
}

/* Our copy of the child's VM file (what the VMM hands over as its route
 * fd in the model: a dup of its VM fd). */
static int vm_file_of(const struct kvm_child *c)
{
	int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	assert_true(pidfd >= 0);
	int fd = (int)syscall(SYS_pidfd_getfd, pidfd, c->vm_fd[0], 0);
	close(pidfd);
	assert_true(fd >= 0);
	return fd;
}

/* KVM VM files open in this process (ours, the port's, the model's). */
static int vm_files_open(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		char p[300], link[64];
		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		ssize_t l = readlink(p, link, sizeof(link) - 1);
		if (l > 0) {
			link[l] = '\0';
			n += !strcmp(link, "anon_inode:kvm-vm");
		}
	}
	closedir(d);
	return n;
}

/* vm.bind of lease name to the VM of child VMM vmm (named by its fd: a
 * child started while the broker runs inherits the VM files the model
 * holds), with route fd fd or -1. */
static int bind_fd(struct fx *f, const char *name, const struct kvm_child *vmm, int fd, struct proto_error *err)
{
	struct proto_vm_bind q = { .pid = vmm->pid, .has_vm_fd = true, .vm_fd = vmm->vm_fd[0], .route_fd = fd >= 0 };
	snprintf(q.name, sizeof(q.name), "%s", name);
	memset(err, 0, sizeof(*err));
	return broker_vm_bind(f->b, &root, &q, fd, NULL, err);
}

static void bind_ok(struct fx *f, const char *name, const struct kvm_child *vmm, int fd)
{
	struct proto_error err;
	if (bind_fd(f, name, vmm, fd, &err) < 0)
		fail_msg("vm.bind %s pid %d fd %d: %s: %s", name, (int)vmm->pid, fd, proto_errcode_name(err.code),
			 err.message);
}

static const char *routes_of(struct fx *f, const char *name, const char **why)
{
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, name, &v), 0);
	assert_non_null(v.routes);
	assert_non_null(v.routes_why);
	if (why)
		*why = v.routes_why;
	return v.routes;
}

static void attach_vm(struct fx *f, const char *name, const char *params)
{
	char req[512];
	snprintf(req, sizeof(req), "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"%s\",%s}}", name, params);
	json_object_put(ok(f, req));
}

/* Runs the loop until the broker holds n VMs (a VMM's exit is seen on its
 * pidfd). */
static void wait_vm_count(struct fx *f, size_t n)
{
	for (int i = 0; i < 200 && broker_vm_count(f->b) != n; i++)
		sd_event_run(f->ev, 10000);
	assert_int_equal(broker_vm_count(f->b), n);
}

/* A VMM hands a dup of its VM file as its route fd: the VM is simulated
 * (the model holds it); the VMM's exit releases the lease, the port
 * closes the route fd, and the next plan frees routes and reservation. */
static void test_route_fd_bind_and_vmm_exit(void **st)
{
	struct fx *f = *st;
	struct kvm_child *c = start_vmm(f, 2);
	int files_before = vm_files_open();
	attach_vm(f, "g", "\"gp\":2,\"fixed_mask\":\"0x1\",\"vcpu_count\":2,\"cpus\":\"0-1\"");
	const char *why;
	assert_string_equal(routes_of(f, "g", &why), "advisory");
	assert_non_null(strstr(why, "not bound"));
	assert_int_equal(kvm_model_vm_count(f->model), 0);

	int fd = vm_file_of(c);
	assert_int_equal(vm_files_open(), files_before + 1);
	bind_ok(f, "g", c, fd);
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "g", &v), 0);
	assert_true(v.bound);
	assert_int_equal(v.vmm_pid, c->pid);
	assert_int_equal(v.vm_fd, c->vm_fd[0]);
	assert_string_equal(v.routes, "simulated");
	assert_non_null(strstr(v.routes_why, "route fd"));
	assert_int_equal(kvm_model_vm_count(f->model), 1);
	/* The routes reached the port, and the reservation is the guest's. */
	uint64_t mask = 0;
	assert_int_equal(kvm_port_passthrough(f->port, v.id, 1, &mask), 0);
	assert_true(mask == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1) | VPMU_FIXED_BIT(0)));
	assert_int_equal(kvm_port_reservation(f->port, 0, &mask), 0);
	assert_true(mask == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1) | VPMU_FIXED_BIT(0)));
	struct broker_status s;
	broker_status(f->b, &s);
	assert_int_equal(s.vms_simulated, 1);
	assert_int_equal(s.vms_advisory + s.vms_enforced, 0);
	assert_string_equal(s.reservation, "per-cpu");
	char line[512];
	broker_summary(f->b, line, sizeof(line));
	assert_non_null(strstr(line, "1 VMs (0 enforced, 1 simulated, 0 advisory)"));
	assert_null(strstr(line, "advisory:"));

	kvm_child_stop(c);
	wait_vm_count(f, 0);
	assert_int_equal(kvm_model_vm_count(f->model), 0);
	/* Neither our copy nor anything the port or the model made of it is
	 * left open. */
	assert_int_equal(vm_files_open(), files_before);
	for (unsigned cpu = 0; cpu < 2; cpu++) {
		assert_int_equal(kvm_port_reservation(f->port, cpu, &mask), 0);
		assert_true(mask == 0);
	}
	assert_int_equal(count_files(f, "leases"), 0);
}

/* VMs are told apart by their files, never by fd numbers: two VMMs whose
 * VM fd has the same number bind two VMs; a route fd of one handed for the
 * other is refused; a VM bound to one lease cannot be bound to another. */
static void test_route_fd_number_reuse(void **st)
{
	struct fx *f = *st;
	struct kvm_child *c1 = start_vmm(f, 1);
	struct kvm_child *c2 = start_vmm(f, 1);
	assert_int_equal(c1->vm_fd[0], c2->vm_fd[0]);
	attach_vm(f, "a", "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"0\"");
	attach_vm(f, "b", "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"1\"");
	attach_vm(f, "c", "\"gp\":1,\"vcpu_count\":1,\"cpus\":\"2\"");

	/* c2's VM for VMM c1, whose VM fd has that very number: refused. */
	struct proto_error err;
	uint64_t gen = broker_generation(f->b);
	char *before = state_text(f);
	int fd = vm_file_of(c2);
	assert_true(bind_fd(f, "a", c1, fd, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.route_fd");
	char want[128];
	snprintf(want, sizeof(want), "is not VMM pid %d's VM", (int)c1->pid);
	assert_non_null(strstr(err.message, want));
	assert_int_equal(fcntl(fd, F_GETFD), -1); /* closed: the broker owned it */
	assert_int_equal(errno, EBADF);
	char *after = state_text(f);
	assert_string_equal(before, after);
	free(before);
	free(after);
	assert_int_equal(broker_generation(f->b), gen);
	assert_int_equal(kvm_model_vm_count(f->model), 0);

	bind_ok(f, "a", c1, vm_file_of(c1));
	bind_ok(f, "b", c2, vm_file_of(c2));
	assert_string_equal(routes_of(f, "a", NULL), "simulated");
	assert_string_equal(routes_of(f, "b", NULL), "simulated");
	assert_int_equal(kvm_model_vm_count(f->model), 2);
	/* One VM, one lease. */
	assert_true(bind_fd(f, "c", c1, vm_file_of(c1), &err) < 0);
	assert_int_equal(err.code, PROTO_E_EXISTS);
	assert_non_null(strstr(err.message, "vm a"));
	assert_int_equal(kvm_model_vm_count(f->model), 2);

	/* c1 exits; its lease goes, and a VMM started after it binds a new
	 * VM. */
	kvm_child_stop(c1);
	wait_vm_count(f, 2);
	assert_int_equal(broker_vm_find(f->b, "a", NULL), -ENOENT);
	assert_int_equal(kvm_model_vm_count(f->model), 1);
	struct kvm_child *c3 = start_vmm(f, 1);
	bind_ok(f, "c", c3, vm_file_of(c3));
	assert_string_equal(routes_of(f, "c", NULL), "simulated");
	assert_string_equal(routes_of(f, "b", NULL), "simulated");
	assert_int_equal(kvm_model_vm_count(f->model), 2);
	/* A detach while the VMM runs takes the routes back, then the port
	 * closes the route fd. */
	json_object_put(ok(f, "{\"id\":9,\"method\":\"vm.detach\",\"params\":{\"name\":\"b\"}}"));
	assert_int_equal(kvm_model_vm_count(f->model), 1);
	uint64_t mask = 1;
	assert_int_equal(kvm_port_reservation(f->port, 1, &mask), 0);
	assert_true(mask == 0);
	kvm_child_stop(c2);
	kvm_child_stop(c3);
	wait_vm_count(f, 0);
	assert_int_equal(kvm_model_vm_count(f->model), 0);
}

/* A route fd that is not one, or a request whose fd and claim disagree:
 * a clear error naming params.route_fd, the fd closed, nothing changed. */
static void test_route_fd_foreign(void **st)
{
	struct fx *f = *st;
	struct kvm_child *c = start_vmm(f, 1);
	attach_vm(f, "v", "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"0\"");
	int events = 0;
	uint64_t sub;
	assert_int_equal(broker_subscribe(f->b, count_events, &events, &sub), 0);
	uint64_t gen = broker_generation(f->b);
	char *before = state_text(f);
	struct proto_error err;

	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[1]);
	assert_true(bind_fd(f, "v", c, p[0], &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.route_fd");
	assert_non_null(strstr(err.message, "not VMM pid"));
	assert_int_equal(fcntl(p[0], F_GETFD), -1);

	/* Not open at all. */
	assert_true(bind_fd(f, "v", c, 1000, &err) < 0);
	assert_string_equal(err.field, "params.route_fd");
	assert_non_null(strstr(err.message, "not an open descriptor"));

	/* Claimed and missing; come and unclaimed. */
	struct proto_vm_bind q = { .pid = c->pid, .route_fd = true };
	snprintf(q.name, sizeof(q.name), "v");
	assert_true(broker_vm_bind(f->b, &root, &q, -1, NULL, &err) < 0);
	assert_string_equal(err.field, "params.route_fd");
	assert_non_null(strstr(err.message, "no descriptor came"));
	q.route_fd = false;
	int fd = vm_file_of(c);
	assert_true(broker_vm_bind(f->b, &root, &q, fd, NULL, &err) < 0);
	assert_string_equal(err.field, "params.route_fd");
	assert_non_null(strstr(err.message, "does not claim it"));
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	/* Refused before the lease is looked for, too: the fd is the
	 * broker's whatever the outcome. */
	q.route_fd = true;
	snprintf(q.name, sizeof(q.name), "nosuch");
	fd = vm_file_of(c);
	assert_true(broker_vm_bind(f->b, &root, &q, fd, NULL, &err) < 0);
	assert_int_equal(err.code, PROTO_E_NOT_FOUND);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	fd = vm_file_of(c);
	snprintf(q.name, sizeof(q.name), "v");
	assert_true(broker_vm_bind(f->b, &nobody, &q, fd, NULL, &err) < 0);
	assert_int_equal(err.code, PROTO_E_PERMISSION_DENIED);
	assert_int_equal(fcntl(fd, F_GETFD), -1);

	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "v", &v), 0);
	assert_false(v.bound);
	assert_string_equal(v.routes, "advisory");
	assert_int_equal(kvm_model_vm_count(f->model), 0);
	assert_int_equal(broker_generation(f->b), gen);
	assert_int_equal(events, 0);
	char *after = state_text(f);
	assert_string_equal(before, after);
	free(before);
	free(after);
	broker_unsubscribe(f->b, sub);
	kvm_child_stop(c);
}

/* A VMM that hands no route fd: its VM is advisory, and every view says
 * so by name; its routes are planned and recorded, never sent. Handing
 * the route fd later makes it simulated. */
static void test_no_route_fd_is_advisory(void **st)
{
	struct fx *f = *st;
	/* Started with no broker open: a child would hold the state lock
	 * across the restart below. */
	close_broker(f);
	struct kvm_child *c = start_vmm(f, 2);
	open_broker(f);
	char params[256];
	snprintf(params, sizeof(params), "\"gp\":2,\"vcpu_count\":2,\"cpus\":\"0-1\",\"owner\":{\"pid\":%d,\"vm_fd\":%d}",
		 (int)c->pid, c->vm_fd[0]);
	attach_vm(f, "adv", params);
	attach_vm(f, "loose", "\"gp\":1,\"vcpu_count\":1,\"cpus\":\"4\"");
	const char *why;
	assert_string_equal(routes_of(f, "adv", &why), "advisory");
	assert_non_null(strstr(why, "no route fd"));
	assert_int_equal(kvm_model_vm_count(f->model), 0);
	/* Planned and recorded by the port all the same. */
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "adv", &v), 0);
	assert_true(v.bound);
	assert_int_equal(v.passthrough_vcpus, 2);
	uint64_t mask = 0;
	assert_int_equal(kvm_port_passthrough(f->port, v.id, 0, &mask), 0);
	assert_true(mask == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1)));
	assert_false(kvm_port_vm_enforced(f->port, v.id, NULL));
	struct broker_status s;
	broker_status(f->b, &s);
	assert_int_equal(s.vms_advisory, 2);
	assert_int_equal(s.vms_simulated + s.vms_enforced, 0);
	char line[512];
	broker_summary(f->b, line, sizeof(line));
	assert_non_null(strstr(line, "(0 enforced, 0 simulated, 2 advisory)"));
	assert_non_null(strstr(line, "advisory: adv, loose"));
	/* A shorter line names fewer and says how many more. */
	size_t full = strlen(line), names_at = (size_t)(strstr(line, "; advisory:") - line);
	char shorter[512];
	broker_summary(f->b, shorter, names_at + 48);
	assert_non_null(strstr(shorter, "; advisory: adv and 1 more"));
	for (size_t len = names_at; len <= full; len++) {
		broker_summary(f->b, shorter, len);
		assert_true(strlen(shorter) < len);
		assert_true(!strstr(shorter, "; advisory:") || strstr(shorter, "more") ||
			    strstr(shorter, "advisory: adv, loose"));
	}

	/* A bind without a route fd again: same answer, still advisory. */
	bind_ok(f, "adv", c, -1);
	assert_string_equal(routes_of(f, "adv", NULL), "advisory");
	/* Something else handed as its route fd: refused, and the VM stays
	 * bound and advisory, its routes recorded as before. */
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[1]);
	struct proto_error err;
	assert_true(bind_fd(f, "adv", c, p[0], &err) < 0);
	assert_string_equal(err.field, "params.route_fd");
	assert_string_equal(routes_of(f, "adv", NULL), "advisory");
	assert_int_equal(broker_vm_find(f->b, "adv", &v), 0);
	assert_true(v.bound);
	mask = 0;
	assert_int_equal(kvm_port_passthrough(f->port, v.id, 1, &mask), 0);
	assert_true(mask == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1)));
	/* The VMM hands its route fd now: simulated, routes sent. */
	bind_ok(f, "adv", c, vm_file_of(c));
	assert_string_equal(routes_of(f, "adv", NULL), "simulated");
	assert_int_equal(kvm_model_vm_count(f->model), 1);
	assert_true(kvm_port_vm_enforced(f->port, v.id, NULL));
	assert_int_equal(kvm_port_passthrough(f->port, v.id, 1, &mask), 0);
	assert_true(mask == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1)));
	/* Once more without a route fd (the hook may run twice): same answer.
	 * With another descriptor: KVM makes one route fd per VM, so it is not
	 * this VM's: refused and closed, the routes untouched. */
	bind_ok(f, "adv", c, -1);
	assert_string_equal(routes_of(f, "adv", NULL), "simulated");
	int fd = vm_file_of(c);
	assert_true(bind_fd(f, "adv", c, fd, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.route_fd");
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	assert_string_equal(routes_of(f, "adv", NULL), "simulated");
	assert_int_equal(kvm_model_vm_count(f->model), 1);
	broker_status(f->b, &s);
	assert_int_equal(s.vms_simulated, 1);
	assert_int_equal(s.vms_advisory, 1);

	/* A restart closes the route fd: the lease comes back bound and
	 * advisory, and says the VMM must hand it again. */
	close_broker(f);
	assert_int_equal(kvm_model_vm_count(f->model), 0);
	open_broker(f);
	assert_string_equal(routes_of(f, "adv", &why), "advisory");
	assert_non_null(strstr(why, "restart"));
	bind_ok(f, "adv", c, vm_file_of(c));
	assert_string_equal(routes_of(f, "adv", NULL), "simulated");
	kvm_child_stop(c);
	wait_vm_count(f, 1);
}

/* CPUID fixed a routed guest's PMU: an update may shrink the lease, not
 * grow it past that shape; an advisory VM's lease may grow. */
static void test_routed_shape_is_fixed(void **st)
{
	struct fx *f = *st;
	struct kvm_child *c1 = start_vmm(f, 1);
	struct kvm_child *c2 = start_vmm(f, 1);
	attach_vm(f, "r", "\"gp\":2,\"fixed_mask\":\"0x1\",\"vcpu_count\":1,\"cpus\":\"0\"");
	bind_ok(f, "r", c1, vm_file_of(c1));
	char params[256];
	snprintf(params, sizeof(params), "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"1\",\"owner\":{\"pid\":%d,\"vm_fd\":%d}",
		 (int)c2->pid, c2->vm_fd[0]);
	attach_vm(f, "adv", params);
	uint64_t gen = broker_generation(f->b);
	struct json_object *r;
	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":2,\"method\":\"vm.update\",\"params\":{\"name\":\"r\",\"gp\":4}}", &r, &err) <
		    0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.gp");
	assert_non_null(strstr(err.message, "fixed by CPUID (gp 2 fixed 0x1)"));
	assert_true(call(f, &root, "{\"id\":3,\"method\":\"vm.update\",\"params\":{\"name\":\"r\",\"fixed_mask\":\"0x3\"}}",
			 &r, &err) < 0);
	assert_string_equal(err.field, "params.fixed_mask");
	assert_int_equal(broker_generation(f->b), gen);
	/* less is refused too: the PMCs left out would still be the guest's */
	assert_true(call(f, &root, "{\"id\":4,\"method\":\"vm.update\",\"params\":{\"name\":\"r\",\"gp\":1}}", &r, &err) <
		    0);
	assert_string_equal(err.field, "params.gp");
	assert_int_equal(broker_generation(f->b), gen);
	json_object_put(ok(f, "{\"id\":5,\"method\":\"vm.update\",\"params\":{\"name\":\"r\",\"gp\":2}}"));
	json_object_put(ok(f, "{\"id\":6,\"method\":\"vm.update\",\"params\":{\"name\":\"adv\",\"gp\":6}}"));
	struct broker_vm_view v;
	assert_int_equal(broker_vm_find(f->b, "adv", &v), 0);
	assert_int_equal(v.gp, 6);
	assert_int_equal(v.passthrough_vcpus, 1);
	kvm_child_stop(c1);
	kvm_child_stop(c2);
	wait_vm_count(f, 0);
}

/* The extension reserves only what the kernel may reserve
 * (caps/guest_reservable): the model's allows no fixed counter above 2. */
static void test_extension_refuses_fixed_above_2(void **st)
{
	struct fx *f = *st;
	struct json_object *r;
	struct proto_error err;
	assert_true(call(f, &root, "{\"id\":1,\"method\":\"vm.attach\",\"params\":{\"name\":\"x\",\"fixed_mask\":\"0x8\","
				   "\"vcpu_count\":1,\"cpus\":\"0\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_INVALID_PARAM);
	assert_string_equal(err.field, "params.fixed_mask");
	assert_non_null(strstr(err.message, "caps/guest_reservable allows fixed 0x7"));
	assert_int_equal(broker_vm_count(f->b), 0);
}

/* A kernel without per-CPU reservations gets one mask for every CPU; the
 * status says which the plan follows. */
static void test_uniform_reservation(void **st)
{
	struct fx *f = *st;
	attach_vm(f, "p", "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"0\"");
	uint64_t m0 = 0, m5 = 0;
	assert_int_equal(kvm_port_reservation(f->port, 0, &m0), 0);
	assert_int_equal(kvm_port_reservation(f->port, 5, &m5), 0);
	assert_true(m0 == (VPMU_GP_BIT(0) | VPMU_GP_BIT(1)));
	assert_true(m5 == 0);

	close_broker(f);
	kvm_model_free(f->model);
	struct kvm_model_opts mo = { .n_cpus = f->pmu->n_cpus, .num_gp = f->pmu->num_gp,
				     .fixed_mask = f->pmu->fixed_mask, .reserve_caps = VPMU_RESERVE_CAP_UNIFORM };
	assert_int_equal(kvm_model_new(&mo, &f->model), 0);
	open_broker(f);
	assert_int_equal(kvm_port_reserve_caps(f->port), VPMU_RESERVE_CAP_UNIFORM);
	struct broker_status s;
	broker_status(f->b, &s);
	assert_string_equal(s.reservation, "uniform");
	char line[512];
	broker_summary(f->b, line, sizeof(line));
	assert_non_null(strstr(line, "reservation uniform"));
	/* The restored lease's counters are reserved on every CPU. */
	for (unsigned cpu = 0; cpu < f->pmu->n_cpus; cpu++) {
		assert_int_equal(kvm_port_reservation(f->port, cpu, &m5), 0);
		assert_true(m5 == m0);
	}
	attach_vm(f, "q", "\"gp\":3,\"vcpu_count\":1,\"cpus\":\"7\"");
	assert_int_equal(kvm_port_reservation(f->port, 0, &m0), 0);
	assert_int_equal(kvm_port_reservation(f->port, f->pmu->n_cpus - 1, &m5), 0);
	assert_true(m0 == m5);
	assert_true((m0 & VPMU_GP_MASK) == 0x7);
}

/* Stock kernels' flavours: every VM advisory, the flavour named. */
static void test_stock_flavour_vms_advisory(void **st)
{
	struct fx *f = *st;
	reopen_as(f, BROKER_FLAVOUR_PERF, false, false);
	attach_vm(f, "w", "\"gp\":2,\"vcpu_count\":1,\"cpus\":\"0\"");
	const char *why;
	assert_string_equal(routes_of(f, "w", &why), "advisory");
	assert_non_null(strstr(why, "perf-based"));
	struct broker_status s;
	broker_status(f->b, &s);
	assert_int_equal(s.vms_advisory, 1);
	assert_string_equal(s.reservation, "per-cpu");
	reopen_as(f, BROKER_FLAVOUR_MEDIATED, false, false);
	assert_string_equal(routes_of(f, "w", &why), "advisory");
	assert_non_null(strstr(why, "mediated"));
	broker_status(f->b, &s);
	assert_string_equal(s.reservation, "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_attach_show_detach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_longest_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refusal_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_preemption_and_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_model_pmu_counts_nothing_invented, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_follows_the_plan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_owner_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsaved_removal_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsaved_attach_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_after_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_leases_end_with_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_state_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmm_death_releases_lease, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_names_touched_leases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_names_bound_vm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conn_close_releases_following_leases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_on_closed_conn_creates_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_authorization_per_door, setup, teardown),
		cmocka_unit_test_setup_teardown(test_visibility, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_order_and_next_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_replays_admitted_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_state_migrates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_lease_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease_at_size_limit_reloads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_typed_requests_checked_as_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_results_print_as_json_c, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flavour_extension, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flavour_perf, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flavour_mediated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extension_on_mediated_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flavour_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flavour_needs_its_backend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_count_guest_restored_per_flavour, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_fd_bind_and_vmm_exit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_fd_number_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_fd_foreign, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_route_fd_is_advisory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_routed_shape_is_fixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extension_refuses_fixed_above_2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uniform_reservation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stock_flavour_vms_advisory, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
