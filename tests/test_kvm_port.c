/* SPDX-License-Identifier: MIT */
/* The kvm port: backend choice on this machine's real /dev/kvm, the byte
 * layout of what it sends, and plans applied through the model with the
 * model's state checked after every step. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <stdlib.h>

#include "kvm_child.h"
#include "kvm/kvm_port.h"
#include "kvm/vmm_discover.h"

#define N_CPUS 2
#define NUM_GP 8
#define FIXED_MASK 0x7u
#define VM_ID 42

static void test_backend_names(void **state)
{
	(void)state;
	enum kvm_backend b;
	const char *names[] = { "auto", "ioctl", "advisory", "model" };
	for (int i = 0; i < 4; i++) {
		assert_int_equal(kvm_port_backend_parse(names[i], &b), 0);
		assert_string_equal(kvm_port_backend_name(b), names[i]);
	}
	assert_int_equal(kvm_port_backend_parse("Model", &b), -EINVAL);
	assert_int_equal(kvm_port_backend_parse("", &b), -EINVAL);
	assert_int_equal(kvm_port_backend_parse(NULL, &b), -EINVAL);
}

/* The layout docs/kvm-api.md documents, and the ioctl numbers. */
static void test_uapi_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct kvm_vpmu_partition), 72);
	assert_int_equal(offsetof(struct kvm_vpmu_partition, cpu), 8);
	assert_int_equal(offsetof(struct kvm_vpmu_partition, generation), 24);
	assert_int_equal(offsetof(struct kvm_vpmu_partition, reserved), 40);
	assert_int_equal(sizeof(struct kvm_vpmu_routes), 624);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, pidfd), 8);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, vm_fd), 12);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, generation), 24);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, gp), 32);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, fixed), 64);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, allowed_cpus), 80);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, reserved), 592);
	assert_int_equal(sizeof(struct kvm_vpmu_vcpu_stats), 88);
	assert_int_equal(offsetof(struct kvm_vpmu_vcpu_stats, route_fallbacks), 32);
	assert_int_equal(KVM_VPMU_GET_PARTITION, 0xc048aef0ul);
	assert_int_equal(KVM_VPMU_SET_PARTITION, 0xc048aef1ul);
	assert_int_equal(KVM_VPMU_GET_ROUTES, 0xc270aef2ul);
	assert_int_equal(KVM_VPMU_SET_ROUTES, 0xc270aef3ul);
	assert_int_equal(KVM_VPMU_GET_VCPU_STATS, 0xc058aef4ul);
}

static void test_encoding_bytes(void **state)
{
	(void)state;
	struct transition t = { .kind = TRANSITION_PARTITION, .phase = 2, .cpu = 3,
				.guest_gp_mask = 0x0f, .guest_fixed_mask = 0x5 };
	struct kvm_vpmu_partition p;
	memset(&p, 0xa5, sizeof(p)); /* stale bytes must not survive */
	assert_int_equal(kvm_port_encode_partition(&t, 0x1122334455667788ull, &p), 0);
	const uint8_t want_p[40] = {
		72, 0, 0, 0,  0, 0, 0, 0,  3, 0, 0, 0,  0x0f, 0, 0, 0,  5, 0, 0, 0,  0, 0, 0, 0,
		0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  0, 0, 0, 0, 0, 0, 0, 0,
	};
	assert_memory_equal(&p, want_p, sizeof(want_p));
	for (size_t i = 40; i < sizeof(p); i++)
		assert_int_equal(((uint8_t *)&p)[i], 0);

	struct transition r = { .kind = TRANSITION_ROUTES, .phase = 2, .vm_id = 9, .vcpu = 1 };
	r.gp_route[0] = PMC_ROUTE_PASSTHROUGH;
	r.gp_route[1] = PMC_ROUTE_MULTIPLEXED;
	r.fixed_route[2] = PMC_ROUTE_PASSTHROUGH;
	uint64_t allowed[KVM_VPMU_CPU_WORDS] = { 0x5, [63] = 1ull << 63 };
	struct kvm_vpmu_routes q;
	memset(&q, 0xa5, sizeof(q));
	assert_int_equal(kvm_port_encode_routes(&r, 7, 11, 2, allowed, &q), 0);
	const uint8_t *b = (const uint8_t *)&q;
	const uint8_t head[32] = { 0x70, 2, 0, 0,  0, 0, 0, 0,  7, 0, 0, 0,  11, 0, 0, 0,
				   1, 0, 0, 0,  0, 0, 0, 0,  2, 0, 0, 0, 0, 0, 0, 0 };
	assert_memory_equal(b, head, sizeof(head));
	assert_int_equal(b[32], 2);
	assert_int_equal(b[33], 1);
	for (size_t i = 34; i < 64; i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(b[64 + 2], 2);
	assert_int_equal(b[80], 0x5);
	assert_int_equal(b[80 + 63 * 8 + 7], 0x80);
	for (size_t i = 592; i < sizeof(q); i++)
		assert_int_equal(b[i], 0);
	/* Wrong kinds are refused. */
	assert_int_equal(kvm_port_encode_partition(&r, 1, &p), -EINVAL);
	assert_int_equal(kvm_port_encode_routes(&t, 7, 11, 1, allowed, &q), -EINVAL);
}

static struct kvm_port_opts base_opts(enum kvm_backend b)
{
	return (struct kvm_port_opts){ .backend = b, .n_cpus = N_CPUS, .num_gp = NUM_GP,
				       .fixed_mask = FIXED_MASK,
				       .caller = { .cap_sys_admin = true } };
}

/* This machine's /dev/kvm is a stock kernel: our ioctls are unknown to
 * it, a forced ioctl backend must fail, and auto must fall back. */
/* A recorder for the buffers the port issues. */
struct rec {
	unsigned long cmd[64];
	uint8_t buf[64][sizeof(struct kvm_vpmu_routes)];
	size_t len[64];
	size_t n;
};

static void record(void *ctx, unsigned long cmd, const void *arg, size_t len)
{
	struct rec *r = ctx;
	if (r->n >= 64 || len > sizeof(r->buf[0]))
		return;
	r->cmd[r->n] = cmd;
	r->len[r->n] = len;
	memcpy(r->buf[r->n], arg, len);
	r->n++;
}

static void test_stock_kernel_real_dev_kvm(void **state)
{
	(void)state;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		skip();
	assert_int_equal(ioctl(fd, KVM_CHECK_EXTENSION, (long)KVM_CAP_VPMU_PARTITION), 0);
	struct kvm_vpmu_partition p = { .size = sizeof(p) };
	assert_int_equal(ioctl(fd, KVM_VPMU_GET_PARTITION, &p), -1);
	assert_true(errno == ENOTTY || errno == EINVAL);
	close(fd);

	struct kvm_port *port = NULL;
	char why[256];
	struct kvm_port_opts o = base_opts(KVM_BACKEND_IOCTL);
	/* Forced by name on a kernel that said 0: refused, and no vpmu ioctl
	 * reaches the kernel. */
	struct rec *sent = calloc(1, sizeof(*sent));
	assert_non_null(sent);
	o.trace = record;
	o.trace_ctx = sent;
	int r = kvm_port_open(&o, &port, why, sizeof(why));
	assert_int_equal(r, -EOPNOTSUPP);
	assert_null(port);
	assert_non_null(strstr(why, "lacks the vpmu extension"));
	assert_int_equal(sent->n, 0);
	free(sent);
	o.trace = NULL;
	o.trace_ctx = NULL;

	o.backend = KVM_BACKEND_AUTO;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(port), KVM_BACKEND_ADVISORY);
	assert_false(kvm_port_enforced(port));
	assert_non_null(strstr(kvm_port_why(port), "lacks KVM_CAP_VPMU_PARTITION"));
	kvm_port_close(port);
}

static void test_auto_without_dev_kvm(void **state)
{
	(void)state;
	struct kvm_port *port = NULL;
	char why[256];
	struct kvm_port_opts o = base_opts(KVM_BACKEND_AUTO);
	o.dev_path = "/nonexistent/kvm";
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(port), KVM_BACKEND_ADVISORY);
	kvm_port_close(port);
	o.backend = KVM_BACKEND_IOCTL;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -ENOENT);
	o.backend = KVM_BACKEND_MODEL;
	o.n_cpus = 0;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EINVAL);
}


struct fx {
	struct kvm_child child;
	struct kvm_model *m;
	struct kvm_port *port;
	struct rec rec;
};

static int setup(void **state)
{
	if (!kvm_child_available())
		skip();
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(kvm_child_start(&f->child, 1, 2, true), 0);
	struct kvm_model_opts mo = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK };
	assert_int_equal(kvm_model_new(&mo, &f->m), 0);
	struct kvm_port_opts o = base_opts(KVM_BACKEND_MODEL);
	o.model = f->m;
	o.trace = record;
	o.trace_ctx = &f->rec;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &f->port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(f->port), KVM_BACKEND_MODEL);
	/* Unknown vCPU threads: the port assumes every CPU. */
	struct kvm_port_vm vm = { .vm_id = VM_ID, .vmm_pid = f->child.pid, .vmm_pidfd = -1,
				  .vm_fd = f->child.vm_fd[0], .n_vcpus = 2 };
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), 0);
	f->rec.n = 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (!f)
		return 0;
	kvm_port_close(f->port);
	kvm_model_free(f->m);
	kvm_child_stop(&f->child);
	free(f);
	return 0;
}

static struct transition part(unsigned phase, int cpu, uint32_t gp, uint32_t fixed, uint32_t sgp,
			      uint32_t sfx)
{
	return (struct transition){ .kind = TRANSITION_PARTITION, .phase = phase, .cpu = cpu,
				    .guest_gp_mask = gp, .guest_fixed_mask = fixed,
				    .scrub_gp_mask = sgp, .scrub_fixed_mask = sfx };
}

static struct transition routes(unsigned phase, unsigned vcpu, uint32_t pt_gp, uint32_t pt_fixed,
				uint32_t sgp, uint32_t sfx)
{
	struct transition t = { .kind = TRANSITION_ROUTES, .phase = phase, .vm_id = VM_ID,
				.vcpu = vcpu, .scrub_gp_mask = sgp, .scrub_fixed_mask = sfx };
	for (unsigned i = 0; i < NUM_GP; i++)
		t.gp_route[i] = (pt_gp >> i) & 1 ? PMC_ROUTE_PASSTHROUGH : PMC_ROUTE_MULTIPLEXED;
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		if ((FIXED_MASK >> i) & 1)
			t.fixed_route[i] = (pt_fixed >> i) & 1 ? PMC_ROUTE_PASSTHROUGH
							       : PMC_ROUTE_MULTIPLEXED;
	return t;
}

/* What the model holds, read through its ioctl entry point. */
static struct kvm_vpmu_partition model_part(struct fx *f, unsigned cpu)
{
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_partition p = { .size = sizeof(p), .cpu = cpu };
	assert_int_equal(kvm_model_ioctl(f->m, &root, KVM_VPMU_GET_PARTITION, &p), 0);
	return p;
}

static int f_pidfd(struct fx *f)
{
	/* The model resolves by pid, so any pidfd for the child will do. */
	static int fd = -1;
	if (fd >= 0)
		close(fd);
	fd = vmm_discover_pidfd_open(f->child.pid);
	return fd;
}

static struct kvm_vpmu_routes model_routes(struct fx *f, unsigned vcpu)
{
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_routes r = { .size = sizeof(r), .pidfd = f_pidfd(f),
				     .vm_fd = f->child.vm_fd[0], .vcpu_id = vcpu };
	assert_int_equal(kvm_model_ioctl(f->m, &root, KVM_VPMU_GET_ROUTES, &r), 0);
	return r;
}

static uint64_t model_scrubs(struct fx *f, unsigned vcpu)
{
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_vcpu_stats s = { .size = sizeof(s), .pidfd = f_pidfd(f),
					 .vm_fd = f->child.vm_fd[0], .vcpu_id = vcpu };
	assert_int_equal(kvm_model_ioctl(f->m, &root, KVM_VPMU_GET_VCPU_STATS, &s), 0);
	return s.scrubs;
}

/* Applies the plan one step at a time and checks, after each, that the
 * model holds exactly what the step says, scrubbed what it says, and that
 * no counter is both the host's and passed through. */
static void apply_checked(struct fx *f, const struct transition *plan, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct transition *t = &plan[i];
		uint64_t scrubs_before = t->kind == TRANSITION_PARTITION
						 ? model_part(f, (unsigned)t->cpu).scrubs
						 : model_scrubs(f, t->vcpu);
		struct kvm_apply_result res;
		if (kvm_port_apply(f->port, t, 1, &res) != 0)
			fail_msg("step %zu: %s", i, res.why);
		assert_int_equal(res.applied, 1);
		unsigned want_scrubs = (unsigned)__builtin_popcount(t->scrub_gp_mask) +
				       (unsigned)__builtin_popcount(t->scrub_fixed_mask);
		if (t->kind == TRANSITION_PARTITION) {
			struct kvm_vpmu_partition p = model_part(f, (unsigned)t->cpu);
			assert_int_equal(p.gp_mask, t->guest_gp_mask);
			assert_int_equal(p.fixed_mask, t->guest_fixed_mask);
			assert_int_equal(p.scrubs - scrubs_before, want_scrubs);
		} else {
			struct kvm_vpmu_routes r = model_routes(f, t->vcpu);
			assert_memory_equal(r.gp, t->gp_route, sizeof(r.gp));
			assert_memory_equal(r.fixed, t->fixed_route, sizeof(r.fixed));
			assert_int_equal(model_scrubs(f, t->vcpu) - scrubs_before, want_scrubs);
		}
		char why[256] = "";
		if (kvm_model_check(f->m, why, sizeof(why)) != 0)
			fail_msg("after step %zu: %s", i, why);
	}
}

static void test_two_phase_plans_through_model(void **state)
{
	struct fx *f = *state;
	/* Phase 2: grow gp 0-1 and fixed 0 on both CPUs, then pass them to
	 * vcpu 0 and gp 1 to vcpu 1. */
	const struct transition up[] = {
		part(2, 0, 0x3, 0x1, 0x3, 0x1),
		part(2, 1, 0x3, 0x1, 0x3, 0x1),
		routes(2, 0, 0x3, 0x1, 0x3, 0x1),
		routes(2, 1, 0x2, 0x0, 0x2, 0x0),
	};
	apply_checked(f, up, 4);
	/* Phase 1 then 2: take gp 0 back from vcpu 0 and shrink it on cpu 1
	 * only; vcpu 1 keeps gp 1. */
	const struct transition down[] = {
		routes(1, 0, 0x2, 0x1, 0x1, 0x0),
		part(1, 1, 0x2, 0x1, 0x1, 0x0),
	};
	apply_checked(f, down, 2);
	uint32_t gp, fx;
	assert_int_equal(kvm_port_partition(f->port, 1, &gp, &fx), 0);
	assert_int_equal(gp, 0x2);
	uint8_t rg[KVM_VPMU_MAX_GP], rf[KVM_VPMU_MAX_FIXED];
	assert_int_equal(kvm_port_routes(f->port, VM_ID, 0, rg, rf), 0);
	assert_int_equal(rg[0], PMC_ROUTE_MULTIPLEXED);
	assert_int_equal(rg[1], PMC_ROUTE_PASSTHROUGH);
	struct kvm_vpmu_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(f->port, VM_ID, 0, &s), 0);
	assert_int_equal(s.scrubs, 4);
	char rep[1024];
	assert_true(kvm_port_report(f->port, rep, sizeof(rep)) > 0);
	assert_non_null(strstr(rep, "backend model"));
	assert_non_null(strstr(rep, "vm 42"));
}

/* The whole list at once: stops at the first failure, reports exactly
 * the prefix applied, and the model holds that prefix. */
static void test_stops_at_first_failure(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = {
		part(2, 0, 0x4, 0, 0x4, 0),
		routes(2, 0, 0x4, 0, 0x4, 0),  /* cpu 1 still keeps gp 2 */
		part(2, 1, 0x4, 0, 0x4, 0),
	};
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 3, &res), -EBUSY);
	assert_int_equal(res.applied, 1);
	assert_int_equal(res.failed, 1);
	assert_non_null(strstr(res.why, "cpu 1"));
	assert_int_equal(model_part(f, 0).gp_mask, 0x4);
	assert_int_equal(model_part(f, 1).gp_mask, 0);
	assert_int_equal(model_routes(f, 0).gp[2], KVM_VPMU_ROUTE_MULTIPLEXED);
	/* Re-ordered so that cpu 1 grows before the route, the plan applies. */
	const struct transition fixed_plan[] = { plan[0], plan[2], plan[1] };
	assert_int_equal(kvm_port_apply(f->port, fixed_plan, 3, &res), 0);
	assert_int_equal(res.applied, 3);
	/* The port refuses to shrink under the live route before the kernel
	 * (or model) is asked. */
	size_t issued = f->rec.n;
	const struct transition bad = part(1, 0, 0, 0, 0x4, 0);
	assert_int_equal(kvm_port_apply(f->port, &bad, 1, &res), -EBUSY);
	assert_int_equal(res.applied, 0);
	assert_int_equal(f->rec.n, issued);
	assert_int_equal(model_part(f, 0).gp_mask, 0x4);
}

static void test_malformed_plans_refused_whole(void **state)
{
	struct fx *f = *state;
	struct kvm_apply_result res;
	struct transition plan[2] = { part(2, 0, 0x1, 0, 0x1, 0), part(1, 1, 0, 0, 0, 0) };
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	assert_int_equal(res.applied, 0);
	assert_int_equal(res.failed, 1);
	plan[1] = routes(2, 0, 0, 0, 0, 0);
	plan[1].vm_id = 7;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -ENOENT);
	plan[1] = routes(2, 5, 0, 0, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -ENOENT);
	plan[1] = routes(2, 0, 0, 0, 0, 0);
	plan[1].gp_route[3] = 3;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = routes(2, 0, 0, 0, 0, 0);
	plan[1].fixed_route[3] = PMC_ROUTE_MULTIPLEXED; /* the host has no fixed 3 */
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, N_CPUS, 0, 0, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, 1, 1u << NUM_GP, 0, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(3, 1, 0, 0, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1].kind = 9;
	plan[1].phase = 2;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	assert_int_equal(f->rec.n, 0);
	assert_int_equal(model_part(f, 0).gp_mask, 0);
	assert_int_equal(kvm_port_apply(f->port, NULL, 0, &res), 0);
}

/* Another writer changes cpu 0 behind the port: ESTALE, nothing applied
 * past it, and a retry after the port re-read succeeds. */
static void test_stale_writer(void **state)
{
	struct fx *f = *state;
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_partition other = model_part(f, 0);
	other.gp_mask = 0x80;
	other.scrubs = 0;
	assert_int_equal(kvm_model_ioctl(f->m, &root, KVM_VPMU_SET_PARTITION, &other), 0);
	struct transition t = part(2, 0, 0x1, 0, 0x1, 0);
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), -ESTALE);
	assert_int_equal(res.applied, 0);
	assert_int_equal(model_part(f, 0).gp_mask, 0x80);
	uint32_t gp, fx;
	assert_int_equal(kvm_port_partition(f->port, 0, &gp, &fx), 0);
	assert_int_equal(gp, 0x80);
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), 0);
	assert_int_equal(model_part(f, 0).gp_mask, 0x1);
}

/* The recorded buffers are the port's encoding, byte for byte, and they
 * alone reproduce the state in a fresh model. */
static void test_buffers_replay_byte_for_byte(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = {
		part(2, 0, 0x1, 0x4, 0x1, 0x4),
		part(2, 1, 0x1, 0x4, 0x1, 0x4),
		routes(2, 1, 0x1, 0x4, 0x1, 0x4),
	};
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 3, &res), 0);
	assert_int_equal(f->rec.n, 3);
	assert_int_equal(f->rec.cmd[0], KVM_VPMU_SET_PARTITION);
	assert_int_equal(f->rec.cmd[2], KVM_VPMU_SET_ROUTES);
	struct kvm_vpmu_partition pe;
	assert_int_equal(kvm_port_encode_partition(&plan[1], 1, &pe), 0);
	assert_int_equal(f->rec.len[1], sizeof(pe));
	assert_memory_equal(f->rec.buf[1], &pe, sizeof(pe));
	struct kvm_vpmu_routes re;
	const struct kvm_vpmu_routes *sent = (const void *)f->rec.buf[2];
	uint64_t all[KVM_VPMU_CPU_WORDS] = { (1u << N_CPUS) - 1 };
	assert_int_equal(kvm_port_encode_routes(&plan[2], sent->pidfd, f->child.vm_fd[0],
						sent->generation, all, &re), 0);
	assert_memory_equal(sent, &re, sizeof(re));

	struct kvm_model *fresh;
	struct kvm_model_opts mo = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK };
	assert_int_equal(kvm_model_new(&mo, &fresh), 0);
	struct kvm_model_caller root = { .cap_sys_admin = true };
	for (size_t i = 0; i < f->rec.n; i++) {
		uint8_t copy[sizeof(struct kvm_vpmu_routes)];
		memcpy(copy, f->rec.buf[i], f->rec.len[i]);
		assert_int_equal(kvm_model_ioctl(fresh, &root, f->rec.cmd[i], copy), 0);
	}
	for (unsigned c = 0; c < N_CPUS; c++) {
		struct kvm_vpmu_partition a = model_part(f, c), b = { .size = sizeof(b), .cpu = c };
		assert_int_equal(kvm_model_ioctl(fresh, &root, KVM_VPMU_GET_PARTITION, &b), 0);
		assert_memory_equal(&a, &b, sizeof(a));
	}
	struct kvm_vpmu_routes a = model_routes(f, 1), b = a;
	memset(b.gp, 0xff, sizeof(b.gp));
	assert_int_equal(kvm_model_ioctl(fresh, &root, KVM_VPMU_GET_ROUTES, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	kvm_model_free(fresh);
}

/* A vCPU thread pinned to cpu 0 only needs cpu 0's partition. */
static void test_affinity_narrows_cpus(void **state)
{
	struct fx *f = *state;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(f->child.tid[0], sizeof(one), &one) < 0)
		skip();
	struct kvm_port_vm vm = { .vm_id = 43, .vmm_pid = f->child.pid, .vmm_pidfd = -1,
				  .vm_fd = f->child.vm_fd[0], .n_vcpus = 1,
				  .vcpu_tids = &f->child.tid[0] };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), 0);
	const struct transition grow = part(2, 0, 0x1, 0, 0x1, 0);
	struct transition pt = routes(2, 0, 0x1, 0, 0x1, 0);
	pt.vm_id = 43;
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, &grow, 1, &res), 0);
	if (kvm_port_apply(f->port, &pt, 1, &res) != 0)
		fail_msg("%s", res.why);
	assert_int_equal(model_routes(f, 0).allowed_cpus[0], 0x1);
	/* The same vCPU registered without its thread is assumed to run
	 * anywhere, so the same step needs cpu 1 as well. */
	pt.vm_id = VM_ID;
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), -EBUSY);
	assert_int_equal(kvm_port_unregister_vm(f->port, 43), 0);
	assert_int_equal(kvm_port_unregister_vm(f->port, 43), -ENOENT);
}

static void test_register_validates(void **state)
{
	struct fx *f = *state;
	char why[256];
	struct kvm_port_vm vm = { .vm_id = VM_ID, .vmm_pid = f->child.pid, .vmm_pidfd = -1,
				  .vm_fd = f->child.vm_fd[0], .n_vcpus = 2 };
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EEXIST);
	vm.vm_id = 50;
	vm.vm_fd = f->child.dev_fd;
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EBADF);
	vm.vm_fd = f->child.vm_fd[0];
	vm.n_vcpus = 3; /* the VM has two */
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -ENOENT);
	vm.n_vcpus = 0;
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EINVAL);
	vm.n_vcpus = 2;
	int self = vmm_discover_pidfd_open(getpid());
	vm.vmm_pidfd = self; /* a pidfd for another process than vmm_pid */
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EINVAL);
	close(self);
	vm.vmm_pidfd = -1;
	kvm_child_stop(&f->child);
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -ESRCH);
}

static void test_unprivileged_caller(void **state)
{
	struct fx *f = *state;
	struct kvm_port_opts o = base_opts(KVM_BACKEND_MODEL);
	o.model = f->m;
	o.caller.cap_sys_admin = false;
	struct kvm_port *p = NULL;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &p, why, sizeof(why)), -EPERM);
	assert_null(p);
}

/* Advisory: the plan is checked and recorded, and the port says that
 * guest routes are not enforced. */
static void test_advisory(void **state)
{
	struct fx *f = *state;
	struct kvm_port_opts o = base_opts(KVM_BACKEND_ADVISORY);
	o.trace = record;
	o.trace_ctx = &f->rec;
	struct kvm_port *p;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &p, why, sizeof(why)), 0);
	assert_false(kvm_port_enforced(p));
	struct kvm_port_vm vm = { .vm_id = VM_ID, .vmm_pid = f->child.pid, .vmm_pidfd = -1,
				  .vm_fd = f->child.vm_fd[0], .n_vcpus = 2 };
	assert_int_equal(kvm_port_register_vm(p, &vm, why, sizeof(why)), 0);
	const struct transition plan[] = {
		part(2, 0, 0x1, 0, 0x1, 0), part(2, 1, 0x1, 0, 0x1, 0), routes(2, 0, 0x1, 0, 0x1, 0),
	};
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(p, plan, 3, &res), 0);
	assert_int_equal(res.applied, 3);
	assert_int_equal(f->rec.n, 0); /* nothing was sent anywhere */
	uint8_t rg[KVM_VPMU_MAX_GP], rf[KVM_VPMU_MAX_FIXED];
	assert_int_equal(kvm_port_routes(p, VM_ID, 0, rg, rf), 0);
	assert_int_equal(rg[0], PMC_ROUTE_PASSTHROUGH);
	/* The ordering rules still hold in the plan. */
	const struct transition shrink = part(1, 1, 0, 0, 0x1, 0);
	assert_int_equal(kvm_port_apply(p, &shrink, 1, &res), -EBUSY);
	struct kvm_vpmu_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(p, VM_ID, 0, &s), -EOPNOTSUPP);
	char rep[1024];
	assert_true(kvm_port_report(p, rep, sizeof(rep)) > 0);
	assert_non_null(strstr(rep, "NOT enforced"));
	assert_non_null(strstr(rep, "planned, not enforced"));
	kvm_port_close(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_names),
		cmocka_unit_test(test_uapi_layout),
		cmocka_unit_test(test_encoding_bytes),
		cmocka_unit_test(test_stock_kernel_real_dev_kvm),
		cmocka_unit_test(test_auto_without_dev_kvm),
		cmocka_unit_test_setup_teardown(test_two_phase_plans_through_model, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stops_at_first_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_plans_refused_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buffers_replay_byte_for_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_affinity_narrows_cpus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_validates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unprivileged_caller, setup, teardown),
		cmocka_unit_test_setup_teardown(test_advisory, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
