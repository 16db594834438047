/* SPDX-License-Identifier: MIT */
/*
 * The libvirt door end to end inside one process: libvirt's test driver
 * (tests/fixtures/libvirt/testnode.xml, 64 CPUs: alpha runs, beta is off)
 * -> follower -> glue -> a real broker (Ice Lake model PMU, model KVM
 * backend, private state directory), all on one sd_event loop. alpha's
 * lease is bound to a real process holding a KVM VM (tests/kvm_child.h)
 * through a pid file, as libvirt's /run/libvirt/qemu/NAME.pid.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "broker/broker.h"
#include "doors/json_door.h"
#include "proto/config.h"
#include "proto/domain_policy.h"
#include "kvm_child.h"
#include "kvm/kvm_port.h"
#include "doors/libvirt_events.h"
#include "doors/libvirt_glue.h"
#include "pmu/pmu.h"
#include "pmu/pmu_model.h"

struct fx {
	sd_event *ev;
	char dir[64], state[96], pids[96];
	char *uri;
	struct config cfg;
	struct pmu_desc *pmu;
	struct kvm_port *port;
	struct broker *b;
	struct lvglue *g;
	struct kvm_child vmm;   /* alpha's "QEMU"; pid 0 without /dev/kvm */
};

static const struct broker_caller root = { .door = BROKER_DOOR_SOCKET, .uid = 0 };

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static char *node_uri(void)
{
	const char *src = getenv("VPMU_SOURCE_DIR");
	char cwd[512], *uri;
	if (!src)
		src = getcwd(cwd, sizeof(cwd)) ? cwd : ".";
	assert_true(asprintf(&uri, "test://%s%s/fixtures/libvirt/testnode.xml", src,
			     getenv("VPMU_SOURCE_DIR") ? "/tests" : "") > 0);
	return uri;
}

/* ------------------------------------------------------------ the broker */

static struct json_object *request(struct fx *f, const struct broker_caller *c, const char *json,
				   struct proto_error *err)
{
	struct proto_request req;
	struct json_object *res = NULL;
	bool id_known;
	uint64_t id;
	memset(&req, 0, sizeof(req));
	memset(err, 0, sizeof(*err));
	if (proto_request_decode(json, strlen(json), PMU_MAX_CPUS, &req, &id_known, &id, err) < 0)
		fail_msg("test request does not decode: %s", err->message);
	if (json_door_call(f->b, c, &req, &res, err) < 0)
		res = NULL;
	proto_request_fini(&req);
	return res;
}

/* vm.show NAME, or NULL when the broker has no such lease. */
static struct json_object *show(struct fx *f, const char *name)
{
	char q[160];
	struct proto_error err;
	snprintf(q, sizeof(q), "{\"id\":1,\"method\":\"vm.show\",\"params\":{\"name\":\"%s\"}}", name);
	return request(f, &root, q, &err);
}

static const char *sfield(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static int ifield(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) ? json_object_get_int(v) : -1;
}

static const char *vcpu_cpus(struct json_object *vm, int i)
{
	struct json_object *arr = json_object_object_get(vm, "vcpus");
	return sfield(json_object_array_get_idx(arr, (size_t)i), "cpus");
}

static int owner_pid(struct json_object *vm)
{
	struct json_object *o = json_object_object_get(vm, "owner");
	return o ? ifield(o, "pid") : 0;
}

static int n_leases(struct fx *f)
{
	char **names;
	int n = broker_vm_names(f->b, NULL, &names);
	assert_true(n >= 0);
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return n;
}

/* --------------------------------------------------------------- the loop */

typedef bool (*pred_fn)(struct fx *f, const void *arg);

static bool run_until(struct fx *f, pred_fn p, const void *arg)
{
	uint64_t end = now_usec() + 3000000u;
	while (!p(f, arg) && now_usec() < end)
		assert_true(sd_event_run(f->ev, 20000) >= 0);
	return p(f, arg);
}

/* The origin of a VM lease, or NULL when there is none. */
static const char *origin_of(struct fx *f, const char *name)
{
	struct broker_vm_view v;
	return broker_vm_find(f->b, name, &v) == 0 ? v.origin : NULL;
}

static bool reconciled(struct fx *f, const void *arg)
{
	return f->g && libvirt_glue_reconciles(f->g) >= *(const unsigned *)arg;
}

static bool has_lease(struct fx *f, const void *name)
{
	return origin_of(f, name) != NULL;
}

static bool no_lease(struct fx *f, const void *name)
{
	return origin_of(f, name) == NULL;
}

struct want_gp {
	const char *name;
	int gp;
};

static bool gp_is(struct fx *f, const void *arg)
{
	const struct want_gp *w = arg;
	struct json_object *vm = show(f, w->name);
	bool ok = vm && ifield(vm, "gp") == w->gp;
	json_object_put(vm);
	return ok;
}

/* ------------------------------------------------------------- fixtures */

static void write_pid(struct fx *f, const char *name, pid_t pid)
{
	char p[160];
	snprintf(p, sizeof(p), "%s/%s.pid", f->pids, name);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fprintf(fp, "%d\n", (int)pid);
	fclose(fp);
}

static void open_daemon(struct fx *f)
{
	char why[512];
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = f->pmu->n_cpus,
				    .num_gp = f->pmu->num_gp, .fixed_mask = f->pmu->fixed_mask,
				    .caller = { .cap_sys_admin = true } };
	assert_int_equal(kvm_port_open(&po, &f->port, why, sizeof(why)), 0);
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->state };
	struct proto_error perr = {0};
	if (broker_new(&bo, &f->b, &perr) < 0)
		fail_msg("broker_new: %s", perr.message);
	assert_int_equal(broker_restore(f->b), 0);
	const struct libvirt_events_follower_opts fo = { .backoff_min_usec = 20000, .backoff_max_usec = 40000 };
	struct libvirt_glue_opts go = { .event = f->ev, .broker = f->b, .cfg = &f->cfg, .uri = f->uri,
				  .pid_dir = f->pids, .host_cpus = f->pmu->n_cpus, .follower = &fo };
	assert_int_equal(libvirt_glue_new(&go, &f->g), 0);
}

static void close_daemon(struct fx *f)
{
	libvirt_glue_free(f->g);
	f->b = broker_free(f->b);
	kvm_port_close(f->port);
	f->g = NULL;
	f->port = NULL;
}

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	snprintf(f->dir, sizeof(f->dir), "/tmp/vpmu-test-lvglue.XXXXXX");
	if (!f || !mkdtemp(f->dir))
		return -1;
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	snprintf(f->pids, sizeof(f->pids), "%s/qemu", f->dir);
	if (mkdir(f->state, 0700) < 0 || mkdir(f->pids, 0700) < 0)
		return -1;
	config_defaults(&f->cfg);
	f->pmu = calloc(1, sizeof(*f->pmu));
	if (pmu_model_load("icelake-8360y", f->pmu, err, sizeof(err)) < 0)
		return -1;
	f->uri = node_uri();
	/* one loop for the whole process: libvirt's event registration is
	 * permanent */
	if (sd_event_new(&f->ev) < 0 || libvirt_events_bridge_register(f->ev) < 0)
		return -1;
	/* alpha (4 vCPUs, running in the node file) gets a real KVM "QEMU" */
	if (kvm_child_available()) {
		if (kvm_child_start(&f->vmm, 1, 4, true) < 0)
			return -1;
		write_pid(f, "alpha", f->vmm.pid);
	} else {
		fprintf(stderr, "# no /dev/kvm: leases stay unbound, binding is not checked\n");
	}
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;
	char cmd[128];
	close_daemon(f);
	kvm_child_stop(&f->vmm);
	sd_event_unref(f->ev);
	free(f->pmu);
	free(f->uri);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int r = system(cmd);
	free(f);
	return r == 0 ? 0 : -1;
}

static virDomainPtr define(struct fx *f, const char *name, const char *metadata, const char *cpuset,
			   unsigned vcpus)
{
	char xml[1024];
	snprintf(xml, sizeof(xml),
		 "<domain type='test'><name>%s</name><memory>131072</memory>"
		 "<metadata>%s</metadata><vcpu placement='static' cpuset='%s'>%u</vcpu>"
		 "<os><type arch='x86_64'>hvm</type></os></domain>",
		 name, metadata, cpuset, vcpus);
	virDomainPtr d = virDomainDefineXML(libvirt_events_follower_conn(libvirt_glue_follower(f->g)), xml);
	assert_non_null(d);
	return d;
}

static void set_meta(virDomainPtr d, const char *xml)
{
	assert_int_equal(virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, xml, "vpmu", DOMAIN_POLICY_NS_URI,
					      VIR_DOMAIN_AFFECT_LIVE),
			 0);
}

/* ------------------------------------------------------------------ tests */

static void test_follow_domains(void **st)
{
	struct fx *f = *st;
	struct proto_error err;
	const unsigned one = 1, two = 2;

	open_daemon(f);
	/* nothing before the loop runs */
	assert_int_equal(n_leases(f), 0);
	assert_true(run_until(f, reconciled, &one));

	/* the reconcile found alpha running: leased with its metadata */
	struct json_object *vm = show(f, "alpha");
	assert_non_null(vm);
	assert_string_equal(sfield(vm, "origin"), "libvirt");
	assert_string_equal(sfield(vm, "class"), "guaranteed");
	assert_int_equal(ifield(vm, "priority"), 300);
	assert_int_equal(ifield(vm, "gp"), 4);
	assert_string_equal(sfield(vm, "fixed_mask"), "0x7");
	assert_string_equal(vcpu_cpus(vm, 0), "8");
	assert_string_equal(vcpu_cpus(vm, 3), "40,42-43");
	if (f->vmm.pid)
		assert_int_equal(owner_pid(vm), f->vmm.pid);
	json_object_put(vm);
	assert_int_equal(n_leases(f), 1);

	virConnectPtr conn = libvirt_events_follower_conn(libvirt_glue_follower(f->g));
	assert_non_null(conn);

	/* beta has <pmu state='off'/>: no lease. gamma (no metadata), started
	 * after it, is the marker that beta's event was handled. */
	virDomainPtr beta = virDomainLookupByName(conn, "beta");
	virDomainPtr gamma = define(f, "gamma", "", "16-31", 2);
	assert_int_equal(virDomainCreate(beta), 0);
	assert_int_equal(virDomainCreate(gamma), 0);
	assert_true(run_until(f, has_lease, "gamma"));
	assert_null(origin_of(f, "beta"));
	vm = show(f, "gamma");
	/* without metadata: what the hook asks, the daemon's defaults */
	assert_string_equal(sfield(vm, "class"), f->cfg.default_class);
	assert_int_equal(ifield(vm, "priority"), f->cfg.default_priority);
	assert_int_equal(ifield(vm, "gp"), 0);
	assert_string_equal(sfield(vm, "fixed_mask"), "0x0");
	assert_string_equal(vcpu_cpus(vm, 1), "16-31");
	/* no pid file for gamma: left unbound */
	assert_int_equal(owner_pid(vm), 0);
	json_object_put(vm);

	/* metadata change on a running domain -> vm.update */
	set_meta(gamma, "<pmu class='shared' priority='50' gp='2' fixed='0x1'/>");
	assert_true(run_until(f, gp_is, &(struct want_gp){ "gamma", 2 }));
	vm = show(f, "gamma");
	assert_string_equal(sfield(vm, "class"), "shared");
	assert_int_equal(ifield(vm, "priority"), 50);
	assert_string_equal(sfield(vm, "fixed_mask"), "0x1");
	assert_string_equal(sfield(vm, "origin"), "libvirt");
	json_object_put(vm);
	assert_int_equal(n_leases(f), 2);

	/* Re-pin: the test driver queues no tunable event for
	 * virDomainPinVcpu (the QEMU driver does), so the pin reaches the lease
	 * with the next event that carries the live XML. */
	unsigned char map[VIR_CPU_MAPLEN(64)] = { 0 };
	VIR_USE_CPU(map, 50);
	assert_int_equal(virDomainPinVcpu(gamma, 1, map, sizeof(map)), 0);
	set_meta(gamma, "<pmu class='shared' priority='50' gp='3' fixed='0x1'/>");
	assert_true(run_until(f, gp_is, &(struct want_gp){ "gamma", 3 }));
	vm = show(f, "gamma");
	assert_string_equal(vcpu_cpus(vm, 1), "50");
	assert_string_equal(vcpu_cpus(vm, 0), "16-31");
	json_object_put(vm);

	/* Invalid metadata (a typo) leaves the lease as it was; the next valid
	 * change (gp 1) is the marker that the bad one was handled. */
	uint64_t gen = broker_generation(f->b);
	set_meta(gamma, "<pmu gpp='7'/>");
	virDomainPtr delta = define(f, "delta", "", "0-3", 1);
	assert_int_equal(virDomainCreate(delta), 0);
	assert_true(run_until(f, has_lease, "delta"));
	vm = show(f, "gamma");
	assert_int_equal(ifield(vm, "gp"), 3);
	json_object_put(vm);
	assert_true(broker_generation(f->b) > gen); /* delta's attach, nothing for gamma */

	/* A guaranteed domain the broker refuses (alpha holds 4 of the 8
	 * counters of CPU 8 guaranteed): no lease, the rest unchanged. */
	virDomainPtr hog = define(f, "hog",
				  "<vpmu:pmu xmlns:vpmu='" DOMAIN_POLICY_NS_URI "' class='guaranteed' gp='8' fixed='0x7'/>",
				  "8", 1);
	assert_int_equal(virDomainCreate(hog), 0);
	virDomainPtr eps = define(f, "eps", "", "0-3", 1);
	assert_int_equal(virDomainCreate(eps), 0);
	assert_true(run_until(f, has_lease, "eps"));
	assert_null(origin_of(f, "hog"));

	/* A lease made by the hook is followed, never duplicated: zeta is
	 * admitted by "the hook" with a stale gp, then starts; the follower
	 * updates it in place and the origin stays the hook's. */
	const struct broker_caller hook = { .door = BROKER_DOOR_SOCKET, .uid = 0,
					    .origin = "vpmu-libvirt-hook/0.1" };
	vm = request(f, &hook,
		     "{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"zeta\",\"gp\":1,"
		     "\"vcpus\":[{\"cpus\":\"4-7\"}]}}",
		     &err);
	assert_non_null(vm);
	json_object_put(vm);
	int before = n_leases(f);
	virDomainPtr zeta = define(f, "zeta", "<vpmu:pmu xmlns:vpmu='" DOMAIN_POLICY_NS_URI "' gp='2'/>", "4-7", 1);
	assert_int_equal(virDomainCreate(zeta), 0);
	assert_true(run_until(f, gp_is, &(struct want_gp){ "zeta", 2 }));
	assert_int_equal(n_leases(f), before);
	assert_string_equal(origin_of(f, "zeta"), "vpmu-libvirt-hook");

	/* An operator's lease named like a domain is not ours to touch. */
	const struct broker_caller ops = { .door = BROKER_DOOR_SOCKET, .uid = 0, .origin = "vpmuctl/0.1" };
	vm = request(f, &ops,
		     "{\"id\":3,\"method\":\"vm.attach\",\"params\":{\"name\":\"ops\",\"gp\":1,"
		     "\"vcpus\":[{\"cpus\":\"60\"}]}}",
		     &err);
	assert_non_null(vm);
	json_object_put(vm);
	virDomainPtr opsd = define(f, "ops", "", "61", 1);
	assert_int_equal(virDomainCreate(opsd), 0);

	/* stopped -> released, for every origin of ours */
	assert_int_equal(virDomainDestroy(gamma), 0);
	assert_true(run_until(f, no_lease, "gamma"));
	assert_int_equal(virDomainDestroy(zeta), 0);
	assert_true(run_until(f, no_lease, "zeta"));
	assert_int_equal(virDomainDestroy(opsd), 0);
	assert_int_equal(virDomainDestroy(eps), 0);
	assert_true(run_until(f, no_lease, "eps"));
	/* ops' stop came before eps': handled, and the lease is still there */
	vm = show(f, "ops");
	assert_non_null(vm);
	assert_string_equal(vcpu_cpus(vm, 0), "60");
	json_object_put(vm);

	/* Reconnect (daemon reload): the test driver re-reads the node file,
	 * where only alpha runs. delta, hook-made or not, is gone -> released;
	 * alpha is kept once, still bound; the operator's lease stays. */
	assert_int_equal(libvirt_glue_reconnect(f->g), 0);
	assert_true(run_until(f, reconciled, &two));
	assert_null(origin_of(f, "delta"));
	assert_non_null(origin_of(f, "ops"));
	vm = show(f, "alpha");
	assert_non_null(vm);
	if (f->vmm.pid)
		assert_int_equal(owner_pid(vm), f->vmm.pid);
	json_object_put(vm);
	assert_int_equal(n_leases(f), 2);

	virDomainFree(beta);
	virDomainFree(gamma);
	virDomainFree(delta);
	virDomainFree(hog);
	virDomainFree(eps);
	virDomainFree(zeta);
	virDomainFree(opsd);
	close_daemon(f);
}

static void test_restart_reconciles(void **st)
{
	struct fx *f = *st;
	struct proto_error err;
	const unsigned one = 1;

	/* The state left by the previous test: alpha (ours) and ops
	 * (vpmuctl). Add a lease the hook made for a domain that will not be
	 * running after the restart, and one the follower made (gamma2). */
	open_daemon(f);
	assert_true(run_until(f, reconciled, &one));
	assert_non_null(origin_of(f, "alpha"));
	const struct broker_caller hook = { .door = BROKER_DOOR_SOCKET, .uid = 0,
					    .origin = "vpmu-libvirt-hook/0.1" };
	struct json_object *r = request(f, &hook,
					"{\"id\":2,\"method\":\"vm.attach\",\"params\":{\"name\":\"ghost\","
					"\"vcpus\":[{\"cpus\":\"1\"}]}}",
					&err);
	assert_non_null(r);
	json_object_put(r);
	virDomainPtr g2 = define(f, "gamma2", "", "20", 1);
	assert_int_equal(virDomainCreate(g2), 0);
	assert_true(run_until(f, has_lease, "gamma2"));
	virDomainFree(g2);
	assert_int_equal(n_leases(f), 4);
	close_daemon(f);

	/* A new broker on the same state dir restores all four ... */
	open_daemon(f);
	assert_int_equal(n_leases(f), 4);
	/* ... and the new glue's first reconcile (a fresh test connection:
	 * only alpha runs) releases ghost and gamma2, keeps alpha once and
	 * leaves the operator's lease alone. */
	assert_true(run_until(f, reconciled, &one));
	assert_null(origin_of(f, "ghost"));
	assert_null(origin_of(f, "gamma2"));
	assert_string_equal(origin_of(f, "alpha"), "libvirt");
	assert_string_equal(origin_of(f, "ops"), "vpmuctl");
	assert_int_equal(n_leases(f), 2);
	struct json_object *vm = show(f, "alpha");
	if (f->vmm.pid)
		assert_int_equal(owner_pid(vm), f->vmm.pid);
	assert_int_equal(ifield(vm, "gp"), 4);
	json_object_put(vm);
}

static void test_unreachable_libvirt(void **st)
{
	struct fx *f = *st;
	char why[512];
	/* A libvirt that cannot be reached leaves the broker serving. */
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = f->pmu->n_cpus,
				    .num_gp = f->pmu->num_gp, .fixed_mask = f->pmu->fixed_mask,
				    .caller = { .cap_sys_admin = true } };
	close_daemon(f);
	assert_int_equal(kvm_port_open(&po, &f->port, why, sizeof(why)), 0);
	struct broker_opts bo = { .event = f->ev, .cfg = &f->cfg, .pmu = f->pmu, .port = f->port,
				  .state_dir = f->state };
	struct proto_error perr = {0};
	if (broker_new(&bo, &f->b, &perr) < 0)
		fail_msg("broker_new: %s", perr.message);
	assert_int_equal(broker_restore(f->b), 0);
	int n = n_leases(f);
	const struct libvirt_events_follower_opts fo = { .backoff_min_usec = 10000, .backoff_max_usec = 20000 };
	struct libvirt_glue_opts go = { .event = f->ev, .broker = f->b, .cfg = &f->cfg,
				  .uri = "test:///nonexistent/vpmu-node.xml", .pid_dir = f->pids,
				  .host_cpus = f->pmu->n_cpus, .follower = &fo };
	assert_int_equal(libvirt_glue_new(&go, &f->g), 0);
	uint64_t end = now_usec() + 200000;
	while (now_usec() < end)
		assert_true(sd_event_run(f->ev, 10000) >= 0);
	assert_false(libvirt_events_follower_connected(libvirt_glue_follower(f->g)));
	assert_int_equal(libvirt_glue_reconciles(f->g), 0);
	/* no reconcile: nothing was released for want of a listing */
	assert_int_equal(n_leases(f), n);
	struct proto_error err;
	struct json_object *res = request(f, &root, "{\"id\":1,\"method\":\"status\"}", &err);
	assert_non_null(res);
	json_object_put(res);

	/* bad arguments */
	struct lvglue *g;
	go.host_cpus = 0;
	assert_int_equal(libvirt_glue_new(&go, &g), -EINVAL);
	go.host_cpus = 64;
	go.uri = "";
	assert_int_equal(libvirt_glue_new(&go, &g), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_follow_domains),
		cmocka_unit_test(test_restart_reconciles),
		cmocka_unit_test(test_unreachable_libvirt),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
