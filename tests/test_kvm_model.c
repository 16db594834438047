/* SPDX-License-Identifier: MIT */
/* The kernel-side model: every rule and error code of docs/kvm-api.md,
 * against real VMs created by a child process through /dev/kvm. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "kvm_child.h"
#include "kvm/kvm_model.h"
#include "kvm/vmm_discover.h"

#define N_CPUS 4
#define NUM_GP 8
#define FIXED_MASK 0x7u

struct fx {
	struct kvm_model *m;
	struct kvm_child child;
	int pidfd;
};

static const struct kvm_model_caller root = { .cap_sys_admin = true };
static const struct kvm_model_caller user = { .cap_sys_admin = false };

static int setup(void **state)
{
	if (!kvm_child_available())
		skip();
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	struct kvm_model_opts o = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK };
	assert_int_equal(kvm_model_new(&o, &f->m), 0);
	assert_int_equal(kvm_child_start(&f->child, 1, 2, false), 0);
	f->pidfd = vmm_discover_pidfd_open(f->child.pid);
	assert_true(f->pidfd >= 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (!f)
		return 0;
	kvm_child_stop(&f->child);
	if (f->pidfd >= 0)
		close(f->pidfd);
	kvm_model_free(f->m);
	free(f);
	return 0;
}

static long xioctl(struct fx *f, unsigned long cmd, void *arg)
{
	return kvm_model_ioctl(f->m, &root, cmd, arg);
}

static struct kvm_vpmu_partition part_get(struct fx *f, unsigned cpu)
{
	struct kvm_vpmu_partition p = { .size = sizeof(p), .cpu = cpu };
	assert_int_equal(xioctl(f, KVM_VPMU_GET_PARTITION, &p), 0);
	return p;
}

/* Sets cpu's partition from its current generation; returns the result. */
static long part_set(struct fx *f, unsigned cpu, uint32_t gp, uint32_t fixed)
{
	struct kvm_vpmu_partition p = part_get(f, cpu);
	p.gp_mask = gp;
	p.fixed_mask = fixed;
	p.scrubs = 0;
	return xioctl(f, KVM_VPMU_SET_PARTITION, &p);
}

static struct kvm_vpmu_routes routes_get(struct fx *f, unsigned vcpu)
{
	struct kvm_vpmu_routes r = { .size = sizeof(r), .pidfd = f->pidfd,
				     .vm_fd = f->child.vm_fd[0], .vcpu_id = vcpu };
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), 0);
	return r;
}

/* Routes request: every host counter multiplexed except the pass-through
 * masks, allowed on the CPUs in cpus. */
static struct kvm_vpmu_routes routes_req(struct fx *f, unsigned vcpu, uint32_t pt_gp,
					 uint32_t pt_fixed, uint64_t cpus)
{
	struct kvm_vpmu_routes r = routes_get(f, vcpu);
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++)
		r.gp[i] = i >= NUM_GP ? KVM_VPMU_ROUTE_DISABLED
		          : (pt_gp >> i) & 1 ? KVM_VPMU_ROUTE_PASSTHROUGH : KVM_VPMU_ROUTE_MULTIPLEXED;
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++)
		r.fixed[i] = !((FIXED_MASK >> i) & 1) ? KVM_VPMU_ROUTE_DISABLED
			     : (pt_fixed >> i) & 1 ? KVM_VPMU_ROUTE_PASSTHROUGH
						   : KVM_VPMU_ROUTE_MULTIPLEXED;
	memset(r.allowed_cpus, 0, sizeof(r.allowed_cpus));
	r.allowed_cpus[0] = cpus;
	return r;
}

static long routes_set(struct fx *f, unsigned vcpu, uint32_t pt_gp, uint32_t pt_fixed, uint64_t cpus)
{
	struct kvm_vpmu_routes r = routes_req(f, vcpu, pt_gp, pt_fixed, cpus);
	return xioctl(f, KVM_VPMU_SET_ROUTES, &r);
}

static struct kvm_vpmu_vcpu_stats stats_get(struct fx *f, unsigned vcpu)
{
	struct kvm_vpmu_vcpu_stats s = { .size = sizeof(s), .pidfd = f->pidfd,
					 .vm_fd = f->child.vm_fd[0], .vcpu_id = vcpu };
	assert_int_equal(xioctl(f, KVM_VPMU_GET_VCPU_STATS, &s), 0);
	return s;
}

static void check_invariant(struct fx *f)
{
	char why[256] = "";
	int r = kvm_model_check(f->m, why, sizeof(why));
	if (r != 0)
		fail_msg("invariant broken: %s", why);
}

static void test_capability_and_unknown(void **state)
{
	struct fx *f = *state;
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_CHECK_EXTENSION,
					 (void *)(uintptr_t)KVM_CAP_VPMU_PARTITION), 1);
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_CHECK_EXTENSION, (void *)(uintptr_t)173), 0);
	struct kvm_vpmu_partition p = { .size = sizeof(p) };
	assert_int_equal(xioctl(f, _IOWR(0xAE, 0xf9, struct kvm_vpmu_partition), &p), -ENOTTY);
	assert_int_equal(xioctl(f, KVM_VPMU_GET_PARTITION, NULL), -EFAULT);
}

static void test_eperm(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_partition p = { .size = sizeof(p) };
	struct kvm_vpmu_routes r = routes_req(f, 0, 0, 0, 1);
	struct kvm_vpmu_vcpu_stats s = { .size = sizeof(s), .pidfd = f->pidfd,
					 .vm_fd = f->child.vm_fd[0] };
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_VPMU_GET_PARTITION, &p), -EPERM);
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_VPMU_SET_PARTITION, &p), -EPERM);
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_VPMU_GET_ROUTES, &r), -EPERM);
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_VPMU_SET_ROUTES, &r), -EPERM);
	assert_int_equal(kvm_model_ioctl(f->m, &user, KVM_VPMU_GET_VCPU_STATS, &s), -EPERM);
	assert_int_equal(kvm_model_ioctl(f->m, NULL, KVM_VPMU_GET_PARTITION, &p), -EPERM);
	/* Nothing changed for the unprivileged attempt. */
	assert_int_equal(part_get(f, 0).generation, 1);
}

static void test_einval_headers(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_partition p = part_get(f, 0);
	p.size = sizeof(p) - 8;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &p), -EINVAL);
	p = part_get(f, 0);
	p.scrubs = 0;
	p.flags = 1;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &p), -EINVAL);
	p.flags = 0;
	p.pad = 1;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &p), -EINVAL);
	p.pad = 0;
	p.reserved[3] = 1;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &p), -EINVAL);
	assert_int_equal(xioctl(f, KVM_VPMU_GET_PARTITION, &p), -EINVAL);
	p.reserved[3] = 0;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &p), 0);

	struct kvm_vpmu_routes r = routes_req(f, 0, 0, 0, 1);
	r.reserved[0] = 5;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1);
	r.flags = 2;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1);
	r.pad = 2;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1);
	r.size = 0;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);

	struct kvm_vpmu_vcpu_stats s = { .size = sizeof(s), .pidfd = f->pidfd,
					 .vm_fd = f->child.vm_fd[0], .reserved = { 0, 1 } };
	assert_int_equal(xioctl(f, KVM_VPMU_GET_VCPU_STATS, &s), -EINVAL);
	s.reserved[1] = 0;
	s.scrubs = 9; /* an output field: garbage in it is refused, not ignored */
	assert_int_equal(xioctl(f, KVM_VPMU_GET_VCPU_STATS, &s), -EINVAL);
}

static void test_einval_values(void **state)
{
	struct fx *f = *state;
	/* Partition: a CPU or a counter the host lacks. */
	struct kvm_vpmu_partition p = part_get(f, 0);
	p.cpu = N_CPUS;
	assert_int_equal(xioctl(f, KVM_VPMU_GET_PARTITION, &p), -EINVAL);
	assert_int_equal(part_set(f, 0, 1u << NUM_GP, 0), -EINVAL);
	assert_int_equal(part_set(f, 0, 0, 0x8), -EINVAL);
	/* Routes: a value past pass-through, a route on a missing counter, a
	 * CPU past the host's, pass-through with no CPU. */
	struct kvm_vpmu_routes r = routes_req(f, 0, 0, 0, 1);
	r.gp[0] = 3;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1);
	r.gp[NUM_GP] = KVM_VPMU_ROUTE_MULTIPLEXED;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1);
	r.fixed[3] = KVM_VPMU_ROUTE_MULTIPLEXED;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = routes_req(f, 0, 0, 0, 1ull << N_CPUS);
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	assert_int_equal(part_set(f, 0, 1, 0), 0);
	assert_int_equal(routes_set(f, 0, 1, 0, 0), -EINVAL);
	assert_int_equal(routes_set(f, 0, 1, 0, 1), 0);
}

static void test_ebadf_esrch_enoent(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_routes r = routes_req(f, 0, 0, 0, 1);
	/* The child's /dev/kvm fd, a vCPU fd, and a number it has not open. */
	r.vm_fd = f->child.dev_fd;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -EBADF);
	r.vm_fd = f->child.vcpu_fd[0];
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	r.vm_fd = 999;
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	r.vm_fd = -1;
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	/* Not a pidfd at all. */
	r = routes_req(f, 0, 0, 0, 1);
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	r.pidfd = nul;
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	close(nul);
	/* A vCPU the VM never created. */
	r = routes_req(f, 0, 0, 0, 1);
	r.vcpu_id = 5;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -ENOENT);
	/* The VMM dies: its pidfd stays open but names nobody. */
	r = routes_req(f, 1, 0, 0, 1);
	kvm_child_stop(&f->child);
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), -ESRCH);
	assert_int_equal(xioctl(f, KVM_VPMU_GET_ROUTES, &r), -ESRCH);
}

static void test_estale(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_partition a = part_get(f, 1), b = part_get(f, 1);
	assert_int_equal(a.generation, 1);
	a.gp_mask = 0x3;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &a), 0);
	assert_int_equal(a.generation, 2);
	b.gp_mask = 0xc;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &b), -ESTALE);
	assert_int_equal(part_get(f, 1).gp_mask, 0x3);
	/* Generations are per CPU: cpu 2 is untouched by cpu 1's write. */
	assert_int_equal(part_get(f, 2).generation, 1);

	/* The routes generation is per VM: a write to vcpu 0 makes a request
	 * for vcpu 1 read before it stale. */
	struct kvm_vpmu_routes r1 = routes_req(f, 1, 0, 0, 3);
	uint64_t g = r1.generation;
	assert_int_equal(routes_set(f, 0, 0, 0, 3), 0);
	assert_int_equal(routes_get(f, 1).generation, g + 1);
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r1), -ESTALE);
	r1.generation = g + 1;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r1), 0);
	assert_int_equal(r1.generation, g + 2);
	/* A writer that never read is stale. */
	struct kvm_vpmu_partition z = { .size = sizeof(z), .cpu = 3, .gp_mask = 1 };
	assert_int_equal(xioctl(f, KVM_VPMU_SET_PARTITION, &z), -ESTALE);
}

static void test_passthrough_needs_partition_everywhere(void **state)
{
	struct fx *f = *state;
	/* gp 2 and fixed 1 in cpu 0's guest partition only. */
	assert_int_equal(part_set(f, 0, 0x4, 0x2), 0);
	assert_int_equal(routes_set(f, 0, 0x4, 0x2, 0x3), -EBUSY);
	assert_int_equal(routes_set(f, 0, 0x4, 0, 0x3), -EBUSY);
	struct kvm_vpmu_routes before = routes_get(f, 0);
	assert_int_equal(before.gp[2], KVM_VPMU_ROUTE_MULTIPLEXED);
	assert_int_equal(routes_set(f, 0, 0x4, 0x2, 0x1), 0);
	struct kvm_vpmu_routes after = routes_get(f, 0);
	assert_int_equal(after.gp[2], KVM_VPMU_ROUTE_PASSTHROUGH);
	assert_int_equal(after.fixed[1], KVM_VPMU_ROUTE_PASSTHROUGH);
	assert_int_equal(after.gp[1], KVM_VPMU_ROUTE_MULTIPLEXED);
	assert_int_equal(after.allowed_cpus[0], 0x1);
	/* Once cpu 1 grows too, the wider set is accepted. */
	assert_int_equal(part_set(f, 1, 0x4, 0x2), 0);
	assert_int_equal(routes_set(f, 0, 0x4, 0x2, 0x3), 0);
	check_invariant(f);
}

static void test_shrink_under_live_route_and_two_phase(void **state)
{
	struct fx *f = *state;
	assert_int_equal(part_set(f, 0, 0x3, 0x1), 0);
	assert_int_equal(part_set(f, 1, 0x3, 0x1), 0);
	assert_int_equal(routes_set(f, 1, 0x1, 0x1, 0x1), 0);
	/* cpu 0 carries vcpu 1's pass-through gp 0 and fixed 0. */
	assert_int_equal(part_set(f, 0, 0x2, 0x1), -EBUSY);
	assert_int_equal(part_set(f, 0, 0x3, 0x0), -EBUSY);
	assert_int_equal(part_get(f, 0).gp_mask, 0x3);
	/* gp 1 is not passed through: that shrink is fine. cpu 1 is outside
	 * the vCPU's CPUs: shrinking it is fine too. */
	assert_int_equal(part_set(f, 0, 0x1, 0x1), 0);
	assert_int_equal(part_set(f, 1, 0, 0), 0);
	check_invariant(f);
	/* Phase 1: downgrade the route, then shrink. */
	assert_int_equal(routes_set(f, 1, 0, 0, 0x1), 0);
	assert_int_equal(part_set(f, 0, 0, 0), 0);
	check_invariant(f);
}

static void test_dead_vmm_releases_routes(void **state)
{
	struct fx *f = *state;
	assert_int_equal(part_set(f, 2, 0x1, 0), 0);
	assert_int_equal(routes_set(f, 0, 0x1, 0, 1u << 2), 0);
	assert_int_equal(part_set(f, 2, 0, 0), -EBUSY);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	kvm_child_stop(&f->child);
	/* The VM died with its VMM, and its routes with it. */
	assert_int_equal(part_set(f, 2, 0, 0), 0);
	assert_int_equal(kvm_model_vm_count(f->m), 0);
}

static void test_partition_scrub(void **state)
{
	struct fx *f = *state;
	uint64_t v;
	assert_int_equal(kvm_model_count(f->m, 0, false, 3, 1000), 0);
	assert_int_equal(kvm_model_count(f->m, 0, false, 4, 2000), 0);
	assert_int_equal(kvm_model_count(f->m, 0, true, 1, 3000), 0);
	assert_int_equal(kvm_model_count(f->m, 1, false, 3, 4000), 0);
	/* gp 3 and fixed 1 move from the host to the guest on cpu 0 only. */
	assert_int_equal(part_set(f, 0, 0x8, 0x2), 0);
	assert_int_equal(kvm_model_phys_value(f->m, 0, false, 3, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(kvm_model_phys_value(f->m, 0, true, 1, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(kvm_model_phys_value(f->m, 0, false, 4, &v), 0);
	assert_int_equal(v, 2000);
	assert_int_equal(kvm_model_phys_value(f->m, 1, false, 3, &v), 0);
	assert_int_equal(v, 4000);
	assert_int_equal(part_get(f, 0).scrubs, 2);
	/* And back to the host: scrubbed again, guest counts do not leak. */
	assert_int_equal(kvm_model_count(f->m, 0, false, 3, 77), 0);
	assert_int_equal(part_set(f, 0, 0, 0x2), 0);
	assert_int_equal(kvm_model_phys_value(f->m, 0, false, 3, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(part_get(f, 0).scrubs, 3);
	/* Rewriting the same masks is no owner change. */
	assert_int_equal(part_set(f, 0, 0, 0x2), 0);
	assert_int_equal(part_get(f, 0).scrubs, 3);
}

static void test_route_scrub_and_stats(void **state)
{
	struct fx *f = *state;
	int pidfd = f->pidfd, vm = f->child.vm_fd[0];
	uint64_t v;
	assert_int_equal(part_set(f, 0, 0x3, 0x1), 0);
	assert_int_equal(kvm_model_guest_count(f->m, pidfd, vm, 0, false, 0, 500), 0);
	assert_int_equal(kvm_model_guest_count(f->m, pidfd, vm, 0, false, 1, 600), 0);
	assert_int_equal(routes_set(f, 0, 0x1, 0x1, 0x1), 0);
	assert_int_equal(kvm_model_guest_value(f->m, pidfd, vm, 0, false, 0, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(kvm_model_guest_value(f->m, pidfd, vm, 0, false, 1, &v), 0);
	assert_int_equal(v, 600);
	assert_int_equal(stats_get(f, 0).scrubs, 2);
	/* multiplexed -> disabled keeps the PMC in KVM's emulation: no scrub. */
	struct kvm_vpmu_routes r = routes_req(f, 0, 0x1, 0x1, 0x1);
	r.gp[5] = KVM_VPMU_ROUTE_DISABLED;
	assert_int_equal(xioctl(f, KVM_VPMU_SET_ROUTES, &r), 0);
	assert_int_equal(stats_get(f, 0).scrubs, 2);

	/* Entries: on cpu 0 everything passes through; on cpu 1 (outside the
	 * declared CPUs) both pass-through PMCs fall back. */
	assert_int_equal(kvm_model_guest_enter(f->m, pidfd, vm, 0, 0), 0);
	assert_int_equal(stats_get(f, 0).route_fallbacks, 0);
	assert_int_equal(kvm_model_guest_enter(f->m, pidfd, vm, 0, 1), 2);
	assert_int_equal(kvm_model_guest_enter(f->m, pidfd, vm, 0, 1), 2);
	assert_int_equal(stats_get(f, 0).route_fallbacks, 2);
	/* MSR accesses: intercepted unless the PMC passes through. */
	assert_int_equal(kvm_model_guest_msr_access(f->m, pidfd, vm, 0, false, 0), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, pidfd, vm, 0, false, 1), 1);
	assert_int_equal(kvm_model_guest_msr_access(f->m, pidfd, vm, 0, true, 2), 1);
	assert_int_equal(kvm_model_guest_msr_access(f->m, pidfd, vm, 0, true, 0), 0);
	struct kvm_vpmu_vcpu_stats s = stats_get(f, 0);
	assert_int_equal(s.emulated_msr_accesses, 2);
	assert_int_equal(s.generation, routes_get(f, 0).generation);
	/* vcpu 1 has its own counters. */
	assert_int_equal(stats_get(f, 1).emulated_msr_accesses, 0);
	check_invariant(f);
}

static void test_model_new_validates(void **state)
{
	(void)state;
	struct kvm_model *m = NULL;
	struct kvm_model_opts o = { .n_cpus = 0, .num_gp = 8 };
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.n_cpus = KVM_VPMU_MAX_CPUS + 1;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.n_cpus = 2;
	o.num_gp = 33;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.num_gp = 8;
	o.fixed_mask = 1u << 16;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	assert_null(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_new_validates),
		cmocka_unit_test_setup_teardown(test_capability_and_unknown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eperm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_einval_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_einval_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ebadf_esrch_enoent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_estale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passthrough_needs_partition_everywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shrink_under_live_route_and_two_phase, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_vmm_releases_routes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partition_scrub, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_scrub_and_stats, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
