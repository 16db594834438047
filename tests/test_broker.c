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

#include "broker/broker.h"
#include "broker/state.h"
#include "doors/json_door.h"
#include "kvm/kvm_port.h"
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
	struct kvm_port *port;
	struct broker *b;
};

/* pid: the test process, so sessions it starts live as long as it does. */
static struct broker_caller root = { .door = BROKER_DOOR_SOCKET, .uid = 0 };
static const struct broker_caller nobody = { .door = BROKER_DOOR_SOCKET, .uid = 65534, .gid = 65534 };

static void open_broker(struct fx *f)
{
	char why[512];
	struct proto_error err = {0};
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = f->pmu->n_cpus,
				    .num_gp = f->pmu->num_gp, .fixed_mask = f->pmu->fixed_mask,
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
	open_broker(f);
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;
	char cmd[128];
	fail_rename = fail_unlink = 0;
	close_broker(f);
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
	/* Someone else's session is invisible to an unprivileged caller. */
	json_object_put(ok(f, "{\"id\":5,\"method\":\"session.start\",\"params\":{\"name\":\"mine\","
			      "\"events\":[\"task-clock\"],\"cpus\":\"0\"}}"));
	assert_true(call(f, &nobody, "{\"id\":6,\"method\":\"session.read\",\"params\":{\"name\":\"mine\"}}", &r, &err) < 0);
	assert_int_equal(err.code, PROTO_E_NOT_FOUND);
	assert_int_equal(call(f, &nobody, "{\"id\":7,\"method\":\"session.list\"}", &r, &err), 0);
	assert_int_equal(json_object_array_length(json_object_object_get(r, "sessions")), 0);
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

static void test_vmm_death_releases_lease(void **st)
{
	struct fx *f = *st;
	if (access("/dev/kvm", R_OK | W_OK) != 0)
		skip();
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
	if (n <= 0)
		skip();
	line[n] = 0;
	int vm_fd = -1;
	sscanf(strstr(line, "vm_fd="), "vm_fd=%d", &vm_fd);
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

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* The pidfd wakes the loop; the lease goes. */
	for (int i = 0; i < 50; i++)
		sd_event_run(f->ev, 10000);
	r = ok(f, "{\"id\":3,\"method\":\"vm.list\"}");
	assert_int_equal(json_object_array_length(json_object_object_get(r, "vms")), 0);
	json_object_put(r);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_attach_show_detach, setup, teardown),
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
