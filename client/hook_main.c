/* SPDX-License-Identifier: MIT */
/*
 * vpmu's libvirt QEMU hook: install as /etc/libvirt/hooks/qemu.d/vpmu
 * (docs/libvirt.md). The decisions live in hook.c; this file only gathers
 * the process inputs (argv, stdin, config) and provides the transport: the
 * vpmud socket ($VPMU_SOCKET or /run/vpmu/vpmud.sock) through libvpmuclient.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "hook.h"
#include "proto/cleanup.h"
#include "proto/config.h"
#include "proto/cpulist.h"
#include "proto/proto.h"
#include "vpmu/client.h"

#ifndef VPMU_HOOK_VERSION
#define VPMU_HOOK_VERSION "0.1"
#endif

/* ------------------------------------------------- transport: vpmud's socket */

/* Everything here happens at most once per hook run; a connection per
 * operation costs nothing worth optimising. */
struct sock_ctx {
	const char *path;
};

/* The daemon's answer, reported here because only this layer sees it;
 * hook.c adds what it means for the VM. */
static void say_remote(const char *name, const char *method, const struct vpmu_client_error *e)
{
	fprintf(stderr, "vpmu-hook: %s: %s: vpmud answered %s: %s\n", name, method, e->code, e->message);
}

static bool is_code(int r, const struct vpmu_client_error *e, const char *code)
{
	return r == -EREMOTEIO && !strcmp(e->code, code);
}

/* Calls one method on a fresh connection. */
static int call1(const struct sock_ctx *sc, const char *method, struct json_object *params, uint64_t deadline,
		 struct vpmu_client_error *e)
{
	_cleanup_(vpmu_client_closep) struct vpmu_client *c = NULL;
	_cleanup_json_ struct json_object *res = NULL;
	int r = vpmu_client_connect(sc->path, "vpmu-libvirt-hook/" VPMU_HOOK_VERSION, deadline, &c, e);

	if (r == 0)
		r = vpmu_client_call(c, method, params, deadline, &res, e);
	return r;
}

/* The params of a typed request, as the protocol's encoder writes them. */
static int params_of(const struct proto_request *req, const char *const *omit, struct json_object **out)
{
	*out = proto_request_encode_params(req, omit);
	return *out ? 0 : -ENOMEM;
}

/* A domain name as a lease name, by the protocol's rule. */
static int set_name(char dst[PROTO_NAME_MAX + 1], const char *name)
{
	if (proto_name_check("name", name, NULL) < 0)
		return -EINVAL;
	memcpy(dst, name, strlen(name) + 1);
	return 0;
}

/* vm.attach params for the domain's request, without an owner: at prepare
 * QEMU does not exist yet, vm.bind names it at started. */
static int attach_params(const struct dompol *p, struct json_object **out)
{
	_cleanup_(proto_request_fini) struct proto_request req = { .method = PROTO_M_VM_ATTACH };
	struct proto_vm_attach *a = &req.u.vm_attach;
	/* a domain without our metadata has no opinion: the daemon's
	 * configured defaults decide, not the hook's copy of them */
	static const char *const daemon_decides[] = { "priority", "class", NULL };
	int cls = proto_class_from_name(p->cls);
	int r;

	*out = NULL;
	if ((r = set_name(a->name, p->name)) < 0)
		return r;
	if (p->n_vcpus < 1 || p->n_vcpus > PROTO_MAX_VCPUS)
		return -E2BIG;
	a->priority = p->priority < 0 ? 0 : (uint32_t)p->priority;
	a->cls = cls < 0 ? PROTO_CLASS_PREFERRED : (enum proto_class)cls;
	a->gp = p->gp;
	a->fixed_mask = p->fixed_mask;
	a->vcpus.cpus = calloc(p->n_vcpus, sizeof(*a->vcpus.cpus));
	if (!a->vcpus.cpus)
		return -ENOMEM;
	a->vcpus.count = p->n_vcpus;
	for (unsigned v = 0; v < p->n_vcpus; v++)
		a->vcpus.cpus[v] = p->vcpu_cpus[v];
	return params_of(&req, p->metadata_present ? NULL : daemon_decides, out);
}

/* Admits (or re-admits) the domain: 0 admitted, 1 refused (out->reason
 * says why), negative errno for anything else. */
static int do_attach(const struct sock_ctx *sc, const struct dompol *req, uint64_t deadline,
		     struct hook_admission *out)
{
	struct vpmu_client_error e;
	_cleanup_json_ struct json_object *params = NULL;
	int r = attach_params(req, &params);

	if (r < 0)
		return r;
	r = call1(sc, "vm.attach", params, deadline, &e);
	/* already attached: prepare ran twice, or the follower saw it first */
	if (r == 0 || is_code(r, &e, "exists"))
		return 0;
	if (is_code(r, &e, "refused")) {
		snprintf(out->reason, sizeof(out->reason), "%s", e.message);
		return 1;
	}
	if (r == -EREMOTEIO)
		say_remote(req->name, "vm.attach", &e);
	return r;
}

static int sock_admit(void *ctx, const struct dompol *req, uint64_t deadline, struct hook_admission *out)
{
	int r = do_attach(ctx, req, deadline, out);

	if (r < 0)
		return r;
	out->admitted = r == 0;
	return 0;
}

static int sock_bind(void *ctx, const struct dompol *req, pid_t pid, uint64_t deadline)
{
	struct proto_request bind = { .method = PROTO_M_VM_BIND, .u.vm_bind.pid = pid };
	_cleanup_json_ struct json_object *params = NULL;
	struct vpmu_client_error e;
	struct hook_admission adm = { 0 };
	int r;

	if ((r = set_name(bind.u.vm_bind.name, req->name)) < 0 || (r = params_of(&bind, NULL, &params)) < 0)
		return r;
	r = call1(ctx, "vm.bind", params, deadline, &e);
	if (is_code(r, &e, "not_found")) {
		/* vpmud did not see prepare (it restarted, or the hook was
		 * installed while the VM ran): take the VM in now, then bind */
		int a = do_attach(ctx, req, deadline, &adm);

		if (a == 1)
			fprintf(stderr, "vpmu-hook: %s: vpmud refused it: %s\n", req->name, adm.reason);
		if (a == 0)
			r = call1(ctx, "vm.bind", params, deadline, &e);
		else if (a < 0 && a != -EREMOTEIO)
			r = a;
	}
	if (r == -EREMOTEIO)
		say_remote(req->name, "vm.bind", &e);
	return r;
}

static int sock_release(void *ctx, const char *name, const char *uuid, uint64_t deadline)
{
	struct proto_request detach = { .method = PROTO_M_VM_DETACH };
	_cleanup_json_ struct json_object *params = NULL;
	struct vpmu_client_error e;
	int r;

	(void)uuid; /* leases are named after the domain */
	if ((r = set_name(detach.u.vm_detach.name, name)) < 0 || (r = params_of(&detach, NULL, &params)) < 0)
		return r;
	r = call1(ctx, "vm.detach", params, deadline, &e);
	/* stopped and release both run at every stop: the second finds nothing */
	if (is_code(r, &e, "not_found"))
		return 0;
	if (r == -EREMOTEIO)
		say_remote(name, "vm.detach", &e);
	return r;
}

/* Reads all of stdin: libvirt writes the whole XML and a hook that stops
 * reading early can make that write fail. Over the limit, the rest is
 * drained and *len is 0 (for the filter operations, empty output means
 * "unchanged" to libvirt). */
static char *read_stdin(size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	_cleanup_free_ char *buf = malloc(cap);
	char drain[4096];
	bool over = false;

	if (!buf)
		return NULL;
	for (;;) {
		if (n == cap && !over) {
			if (cap >= DOMAIN_POLICY_MAX_XML) {
				over = true;
			} else {
				char *nb = realloc(buf, cap * 2);
				if (!nb)
					return NULL;
				buf = nb;
				cap *= 2;
			}
		}
		ssize_t r = over ? read(0, drain, sizeof(drain)) : read(0, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (!over)
			n += (size_t)r;
	}
	*len = over ? 0 : n;
	return TAKE_PTR(buf);
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct hook_opts o = { 0 };
	char err[CONFIG_ERR_MAX];
	size_t len = 0;

	config_defaults(&cfg);
	if (config_load_file(CONFIG_DEFAULT_PATH, false, &cfg, err, sizeof(err)) < 0)
		fprintf(stderr, "vpmu-hook: %s; using built-in defaults\n", err);
	o.defaults.priority = cfg.default_priority;
	o.defaults.cls = cfg.default_class;
	/* A VM without vpmu metadata asks for no dedicated counters: its vPMU
	 * stays on perf multiplexing, as without vpmu. */
	o.defaults.gp = 0;
	o.defaults.fixed_mask = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	o.host_cpus = ncpu < 1 ? 1 : ncpu > CPULIST_MAX_CPUS ? CPULIST_MAX_CPUS : (unsigned)ncpu;

	_cleanup_free_ char *xml = read_stdin(&len);
	struct sock_ctx sc = { .path = vpmu_client_default_socket() };
	const struct hook_transport t = { .admit = sock_admit, .bind = sock_bind, .release = sock_release, .ctx = &sc };
	int rc = hook_run(argc, argv, xml ? xml : "", xml ? len : 0, &o, &t, stdout, stderr);
	if (fflush(stdout) != 0)
		fprintf(stderr, "vpmu-hook: cannot write stdout\n");
	return rc;
}
