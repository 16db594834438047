/* SPDX-License-Identifier: MIT */
/*
 * The kernel-side model, vpmu version 2: one test (or more) per rule of
 * docs/kvm-api.md, named after the rule, each asserting the exact errno and
 * the state after; invariant scenarios; a randomized sequence that runs
 * kvm_model_check after every step. Route fds are made from real KVM VMs
 * (KVM_CREATE_VM on /dev/kvm in this process); a forked child stands for
 * the VMM whose exit kills the VM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvm/kvm_model.h"

/* KVM_VPMU_GET_VCPUS buffers are laid out as userspace does: the struct,
 * then room for its flexible ids[] (a GNU extension clang warns about). */
#ifdef __clang__
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
#endif

#define N_CPUS 4
#define NUM_GP 8
/* Ice Lake's four fixed counters: fixed counter 3 exists but is never
 * reservable or routable. */
#define FIXED_MASK 0xfu
#define GP(i) VPMU_GP_BIT(i)
#define FX(i) VPMU_FIXED_BIT(i)
/* The guest's CPUID shape: four general counters, fixed 0..2. */
#define SHAPE (GP(0) | GP(1) | GP(2) | GP(3) | FX(0) | FX(1) | FX(2))
#define ALL_CPUS "0-3"

static const struct kvm_model_caller root = { .cap_sys_admin = true };
static const struct kvm_model_caller user = { .cap_sys_admin = false };
static const uint32_t vcpu_ids[] = { 5, 0, 2 }; /* creation order, not contiguous */
#define N_VCPUS 3

struct fx {
	struct kvm_model *m;
	int kvm;        /* /dev/kvm */
	int vm;         /* a VM file of this process */
	int route;      /* a model route fd of vm */
	pid_t vmm;      /* a child standing for a VMM, killed at teardown */
};

/* ------------------------------------------------------------- helpers */

static struct kvm_model *model_new(unsigned caps)
{
	struct kvm_model_opts o = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK,
				    .reserve_caps = caps };
	struct kvm_model *m = NULL;
	assert_int_equal(kvm_model_new(&o, &m), 0);
	return m;
}

static int vm_create(struct fx *f)
{
	int vm = ioctl(f->kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		fail_msg("KVM_CREATE_VM: %s", strerror(errno));
	return vm;
}

static struct kvm_model_vm_desc desc_ok(void)
{
	return (struct kvm_model_vm_desc){ .lapic_in_kernel = true, .opted_in = true, .shape = SHAPE,
					   .nr_vcpus = N_VCPUS, .vcpu_ids = vcpu_ids, .vmm_pidfd = -1 };
}

static int route_new(struct fx *f, int vm, const struct kvm_model_vm_desc *d)
{
	struct kvm_vpmu_route_fd a = { 0 };
	int fd = -1;
	assert_int_equal(kvm_model_create_route_fd(f->m, vm, d, &a, &fd), 0);
	assert_true(fd >= 0);
	return fd;
}

static int fixture_with(void **state, unsigned caps)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		skip();
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->kvm = kvm;
	f->m = model_new(caps);
	f->vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	f->route = route_new(f, f->vm, &d);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return fixture_with(state, 0);
}

static int setup_uniform(void **state)
{
	return fixture_with(state, VPMU_RESERVE_CAP_UNIFORM);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (!f)
		return 0;
	if (f->vmm > 0) {
		kill(f->vmm, SIGKILL);
		waitpid(f->vmm, NULL, 0);
	}
	kvm_model_free(f->m);
	close(f->vm);
	close(f->kvm);
	free(f);
	return 0;
}

static void check(struct kvm_model *m)
{
	char why[256] = "";
	if (kvm_model_check(m, why, sizeof(why)) != 0)
		fail_msg("invariant broken: %s", why);
}

#define UNIFORM (-1) /* the uniform file guest_reserve */

/* A write of text to one file of the perf half (UNIFORM or a CPU's). */
static int wr(struct kvm_model *m, int cpu, const char *text)
{
	return kvm_model_reserve_write(m, &root, cpu, text, strlen(text));
}

/* Shorthand for the tests of other rules, "<cpulist> 0x<mask>": ALL_CPUS
 * is one write of the uniform file, any other list one per-CPU write per
 * listed CPU in order, stopping at the first refusal. */
static int reserve(struct kvm_model *m, const char *line)
{
	const char *space = strchr(line, ' ');
	assert_non_null(space);
	if ((size_t)(space - line) == strlen(ALL_CPUS) && !strncmp(line, ALL_CPUS, strlen(ALL_CPUS)))
		return wr(m, UNIFORM, space + 1);
	for (const char *c = line; c < space;) {
		char *end;
		unsigned long lo = strtoul(c, &end, 10), hi = lo;
		if (*end == '-')
			hi = strtoul(end + 1, &end, 10);
		for (unsigned long cpu = lo; cpu <= hi; cpu++) {
			int r = wr(m, (int)cpu, space + 1);
			if (r < 0)
				return r;
		}
		c = *end == ',' ? end + 1 : end;
	}
	return 0;
}

/* A read of one file of the perf half into buf (snprintf semantics). */
static int rd(struct kvm_model *m, int cpu, char *buf, size_t len)
{
	return kvm_model_reserve_read(m, cpu, buf, len);
}

static uint64_t res_of(struct kvm_model *m, unsigned cpu)
{
	uint64_t mask = ~0ull;
	assert_int_equal(kvm_model_reservation(m, cpu, &mask), 0);
	return mask;
}

static void assert_reservations(struct kvm_model *m, const uint64_t want[N_CPUS])
{
	for (unsigned c = 0; c < N_CPUS; c++)
		if (res_of(m, c) != want[c])
			fail_msg("cpu %u reserves 0x%llx, want 0x%llx", c, (unsigned long long)res_of(m, c),
				 (unsigned long long)want[c]);
}

static long set_pt(struct kvm_model *m, int fd, uint32_t vcpu, uint64_t pt)
{
	struct kvm_vpmu_routes r = { .vcpu_id = vcpu, .passthrough = pt };
	return kvm_model_ioctl(m, &root, fd, KVM_VPMU_SET_ROUTES, &r);
}

static struct kvm_vpmu_routes get_rt(struct kvm_model *m, int fd, uint32_t vcpu)
{
	struct kvm_vpmu_routes r = { .vcpu_id = vcpu };
	assert_int_equal(kvm_model_ioctl(m, &root, fd, KVM_VPMU_GET_ROUTES, &r), 0);
	return r;
}

static uint64_t pt_of(struct kvm_model *m, int fd, uint32_t vcpu)
{
	return get_rt(m, fd, vcpu).passthrough;
}

static uint64_t gval(struct kvm_model *m, int fd, uint32_t vcpu, uint64_t bit)
{
	uint64_t v = ~0ull;
	assert_int_equal(kvm_model_guest_value(m, fd, vcpu, bit, &v), 0);
	return v;
}

static uint64_t pval(struct kvm_model *m, unsigned cpu, uint64_t bit)
{
	uint64_t v = ~0ull;
	assert_int_equal(kvm_model_phys_value(m, cpu, bit, &v), 0);
	return v;
}

struct stats {
	uint64_t frozen_entries, msr_exits, estimated_reads, route_changes;
};

/* Reads a binary stats fd as a KVM_GET_STATS_FD reader would: header,
 * descriptors by name, data. */
static struct stats stats_read(int fd)
{
	struct kvm_stats_header h;
	assert_int_equal(pread(fd, &h, sizeof(h), 0), sizeof(h));
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.num_desc, 4);
	assert_true(h.name_size >= 32);
	char *id = calloc(1, h.name_size + 1);
	assert_non_null(id);
	assert_int_equal(pread(fd, id, h.name_size, h.id_offset), h.name_size);
	assert_true(strncmp(id, "kvm-model/vcpu-", 15) == 0);
	free(id);
	size_t dsz = sizeof(struct kvm_stats_desc) + h.name_size;
	struct kvm_stats_desc *d = calloc(1, dsz + 1);
	assert_non_null(d);
	struct stats s = { 0 };
	for (unsigned i = 0; i < h.num_desc; i++) {
		assert_int_equal(pread(fd, d, dsz, h.desc_offset + i * dsz), dsz);
		assert_int_equal(d->flags, KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE | KVM_STATS_BASE_POW10);
		assert_int_equal(d->size, 1);
		assert_int_equal(d->exponent, 0);
		uint64_t v;
		assert_int_equal(pread(fd, &v, sizeof(v), h.data_offset + d->offset), sizeof(v));
		if (!strcmp(d->name, VPMU_STAT_FROZEN_ENTRIES))
			s.frozen_entries = v;
		else if (!strcmp(d->name, VPMU_STAT_MSR_EXITS))
			s.msr_exits = v;
		else if (!strcmp(d->name, VPMU_STAT_ESTIMATED_READS))
			s.estimated_reads = v;
		else if (!strcmp(d->name, VPMU_STAT_ROUTE_CHANGES))
			s.route_changes = v;
		else
			fail_msg("unexpected stat %s", d->name);
	}
	free(d);
	return s;
}

static struct stats stats_of(struct kvm_model *m, int route, uint32_t vcpu)
{
	struct kvm_vpmu_stats_fd a = { .vcpu_id = vcpu };
	long fd = kvm_model_ioctl(m, &root, route, KVM_VPMU_GET_VCPU_STATS_FD, &a);
	assert_true(fd > 0);
	struct stats s = stats_read((int)fd);
	close((int)fd);
	return s;
}

/* A child standing for the VMM: it only waits to be killed (by the test,
 * by teardown when an assertion fails first, or with this process). It
 * lets go of the output pipes so that a runner never waits on it. */
static void vmm_start(struct fx *f, int *pidfd)
{
	assert_true(f->vmm <= 0);
	pid_t parent = getpid(), pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 1);
		dup2(null, 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		for (;;)
			pause();
	}
	f->vmm = pid;
	*pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	assert_true(*pidfd >= 0);
}

static void vmm_kill(struct fx *f)
{
	kill(f->vmm, SIGKILL);
	waitpid(f->vmm, NULL, 0);
	f->vmm = 0;
}

/* ------------------------------------------------------------ perf half */

static void rule_p1_caps_say_uniform_or_per_cpu(void **state)
{
	(void)state;
	struct kvm_model *m = model_new(0);
	assert_int_equal(kvm_model_reserve_caps(m), VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU);
	kvm_model_free(m);
	m = model_new(VPMU_RESERVE_CAP_UNIFORM);
	assert_int_equal(kvm_model_reserve_caps(m), VPMU_RESERVE_CAP_UNIFORM);
	kvm_model_free(m);
	/* A kernel that takes per-CPU masks takes a uniform one too; unknown
	 * bits are no kernel the spec describes. */
	struct kvm_model_opts o = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK,
				    .reserve_caps = VPMU_RESERVE_CAP_PER_CPU };
	m = NULL;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	assert_null(m);
	o.reserve_caps = VPMU_RESERVE_CAP_UNIFORM | (1u << 2);
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	assert_null(m);
	assert_int_equal(kvm_model_reserve_caps(NULL), 0);
}

static void model_new_validates(void **state)
{
	(void)state;
	struct kvm_model *m = NULL;
	struct kvm_model_opts o = { .n_cpus = 0, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK };
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.n_cpus = KVM_MODEL_MAX_CPUS + 1;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.n_cpus = 2;
	o.num_gp = VPMU_MAX_GP + 1;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	o.num_gp = VPMU_MAX_GP;
	o.fixed_mask = 1u << VPMU_MAX_FIXED;
	assert_int_equal(kvm_model_new(&o, &m), -EINVAL);
	assert_null(m);
	o.fixed_mask = 0;
	assert_int_equal(kvm_model_new(&o, &m), 0);
	/* 32 general counters: every GP bit is reservable. */
	assert_int_equal(kvm_model_reserve_write(m, &root, UNIFORM, "0xffffffff", 10), 0);
	kvm_model_free(m);
}

static void rule_p2_syntax_is_einval(void **state)
{
	struct fx *f = *state;
	assert_int_equal(wr(f->m, UNIFORM, "0x1"), 0);
	static const char *const bad[] = {
		"", "\n", "0x", "1", "3", "0xg", "0X3", "0x3\n\n", " 0x3", "0x3 ", "\t0x3", "0x3,0x4",
		ALL_CPUS " 0x3", /* version 1's "<cpulist> <mask>": one value per file now */
		"0x00000000000000003", /* 17 digits */
		"0x3\nx", "+0x1", "0x-1", "0x+1", "-0x1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (wr(f->m, UNIFORM, bad[i]) != -EINVAL)
			fail_msg("\"%s\" was not refused with EINVAL by guest_reserve", bad[i]);
		if (wr(f->m, 2, bad[i]) != -EINVAL)
			fail_msg("\"%s\" was not refused with EINVAL by cpu2/perf_guest_reserve", bad[i]);
	}
	/* An embedded NUL, counted in len. */
	assert_int_equal(kvm_model_reserve_write(f->m, &root, UNIFORM, "0x3\0", 4), -EINVAL);
	assert_int_equal(kvm_model_reserve_write(f->m, &root, 1, "0x3\0", 4), -EINVAL);
	const uint64_t still[N_CPUS] = { 1, 1, 1, 1 };
	assert_reservations(f->m, still);
	/* The newline is optional, 16 hex digits are fine, case is not. */
	assert_int_equal(wr(f->m, UNIFORM, "0x0000000000000003\n"), 0);
	const uint64_t three[N_CPUS] = { 3, 3, 3, 3 };
	assert_reservations(f->m, three);
	assert_int_equal(wr(f->m, 1, "0xF"), 0);
	const uint64_t fifteen[N_CPUS] = { 3, 15, 3, 3 };
	assert_reservations(f->m, fifteen);
	check(f->m);
}

/* D11: the files are 0600 root's; the model's caller without
 * CAP_SYS_ADMIN stands for a non-root open, EACCES. */
static void reserve_needs_root_and_a_buffer(void **state)
{
	struct fx *f = *state;
	assert_int_equal(kvm_model_reserve_write(f->m, &user, UNIFORM, "0x1", 3), -EACCES);
	assert_int_equal(kvm_model_reserve_write(f->m, &user, 0, "0x1", 3), -EACCES);
	assert_int_equal(kvm_model_reserve_write(f->m, NULL, UNIFORM, "0x1", 3), -EACCES);
	assert_int_equal(kvm_model_reserve_write(f->m, &root, UNIFORM, NULL, 3), -EFAULT);
	assert_int_equal(res_of(f->m, 0), 0);
	assert_int_equal(kvm_model_reservation(f->m, N_CPUS, &(uint64_t){ 0 }), -EINVAL);
}

static void rule_p3_offline_or_nonexistent_cpu_einval(void **state)
{
	struct fx *f = *state;
	assert_int_equal(wr(f->m, N_CPUS, "0x1"), -EINVAL);
	assert_int_equal(wr(f->m, 4096, "0x1"), -EINVAL);
	assert_int_equal(wr(f->m, -2, "0x1"), -EINVAL);
	assert_int_equal(kvm_model_cpu_online(f->m, 2, false), 0);
	assert_int_equal(wr(f->m, 2, "0x1"), -EINVAL);
	const uint64_t none[N_CPUS] = { 0 };
	assert_reservations(f->m, none);
	/* The uniform file sets every online CPU; an offline one keeps none. */
	assert_int_equal(wr(f->m, UNIFORM, "0x1"), 0);
	const uint64_t want[N_CPUS] = { 1, 1, 0, 1 };
	assert_reservations(f->m, want);
	char buf[32];
	assert_int_equal(rd(f->m, 2, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000000\n");
	assert_int_equal(rd(f->m, N_CPUS, buf, sizeof(buf)), -EINVAL);
	check(f->m);
}

static void rule_p4_counter_not_reservable_einval(void **state)
{
	struct fx *f = *state;
	/* caps/guest_reservable: GP 0..7 and fixed 0..2 of fixed 0..3. */
	assert_int_equal(kvm_model_reservable(f->m), 0x00000007000000ffull);
	assert_int_equal(kvm_model_reservable(NULL), 0);
	static const char *const bad[] = {
		"0x100",              /* GP 8: the host has 8 */
		"0x0000000800000000", /* fixed 3: exists, never reservable */
		"0x0000001000000000", /* fixed 4: does not exist */
		"0x0001000000000000", /* PERF_METRICS */
		"0x8000000000000001",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (wr(f->m, UNIFORM, bad[i]) != -EINVAL || wr(f->m, 0, bad[i]) != -EINVAL)
			fail_msg("\"%s\" was not refused with EINVAL", bad[i]);
	const uint64_t none[N_CPUS] = { 0 };
	assert_reservations(f->m, none);
	assert_int_equal(wr(f->m, UNIFORM, "0x00000007000000ff"), 0);
	assert_int_equal(res_of(f->m, 2), 0x00000007000000ffull);

	/* A host without fixed counter 1: that bit is not reservable on it. */
	struct kvm_model_opts o = { .n_cpus = 2, .num_gp = 4, .fixed_mask = 0x5 };
	struct kvm_model *m = NULL;
	assert_int_equal(kvm_model_new(&o, &m), 0);
	assert_int_equal(kvm_model_reservable(m), 0x000000050000000full);
	assert_int_equal(wr(m, UNIFORM, "0x0000000200000000"), -EINVAL);
	assert_int_equal(wr(m, UNIFORM, "0x10"), -EINVAL);
	assert_int_equal(wr(m, UNIFORM, "0x000000050000000f"), 0);
	kvm_model_free(m);
}

static void rule_p5_uniform_kernel_has_no_per_cpu_file_enoent(void **state)
{
	struct fx *f = *state; /* a UNIFORM-only kernel */
	/* The per-CPU files do not exist: open(2) fails first, root or not. */
	assert_int_equal(wr(f->m, 0, "0x1"), -ENOENT);
	assert_int_equal(kvm_model_reserve_write(f->m, &user, 0, "0x1", 3), -ENOENT);
	assert_int_equal(wr(f->m, N_CPUS, "0x1"), -ENOENT);
	char buf[32];
	assert_int_equal(rd(f->m, 0, buf, sizeof(buf)), -ENOENT);
	const uint64_t none[N_CPUS] = { 0 };
	assert_reservations(f->m, none);
	assert_int_equal(wr(f->m, UNIFORM, "0x1"), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), 0);
	assert_int_equal(wr(f->m, UNIFORM, "0x3"), 0);
	const uint64_t want[N_CPUS] = { 3, 3, 3, 0 };
	assert_reservations(f->m, want);
	check(f->m);
	/* The per-CPU kernel takes a single CPU. */
	struct kvm_model *m = model_new(0);
	assert_int_equal(wr(m, 0, "0x1"), 0);
	assert_int_equal(res_of(m, 0), 1);
	assert_int_equal(res_of(m, 1), 0);
	kvm_model_free(m);
}

static void rule_p6_pinned_host_events_must_fit_ebusy(void **state)
{
	struct fx *f = *state;
	/* cpu 1: host perf has pinned events needing 6 GP counters and fixed 0. */
	assert_int_equal(kvm_model_host_pinned(f->m, 1, 6, FX(0)), 0);
	assert_int_equal(wr(f->m, 1, "0x7"), -EBUSY);               /* 5 GP left < 6 */
	assert_int_equal(wr(f->m, 1, "0x0000000100000000"), -EBUSY); /* its fixed 0 */
	assert_int_equal(wr(f->m, UNIFORM, "0x7"), -EBUSY);          /* cpu 1 among every CPU */
	assert_int_equal(res_of(f->m, 0), 0);
	assert_int_equal(res_of(f->m, 1), 0);
	assert_int_equal(wr(f->m, 1, "0x0000000600000003"), 0); /* 6 GP and fixed 0 left */
	assert_int_equal(wr(f->m, 0, "0x0000000100000007"), 0); /* cpu 0 has no pinned events */
	/* D12: host demand that does not fit beside the reservation (perf
	 * would put it in error state) is refused by the model. */
	assert_int_equal(kvm_model_host_pinned(f->m, 1, 7, 0), -EBUSY);
	assert_int_equal(kvm_model_host_pinned(f->m, 1, 0, FX(1)), -EBUSY);
	assert_int_equal(kvm_model_host_pinned(f->m, 1, 0, FX(4)), -EINVAL);
	assert_int_equal(kvm_model_host_pinned(f->m, 1, NUM_GP + 1, 0), -EINVAL);
	assert_int_equal(wr(f->m, 1, "0x3"), 0); /* the old demand still fits */
	check(f->m);
}

static void rule_p7_shrink_under_live_route_ebusy(void **state)
{
	struct fx *f = *state;
	assert_int_equal(wr(f->m, UNIFORM, "0x3"), 0);
	assert_int_equal(set_pt(f->m, f->route, 5, GP(0)), 0);
	assert_int_equal(wr(f->m, UNIFORM, "0x2"), -EBUSY);
	assert_int_equal(wr(f->m, 0, "0x2"), 0); /* cpus 1..3 still hold GP 0 */
	assert_int_equal(wr(f->m, 1, "0x2"), 0);
	assert_int_equal(wr(f->m, 2, "0x2"), 0);
	assert_int_equal(wr(f->m, 3, "0x2"), -EBUSY); /* the last one holding GP 0 */
	const uint64_t want[N_CPUS] = { 2, 2, 2, 3 };
	assert_reservations(f->m, want);
	/* Two-phase order: the route goes first, then the reservation. */
	assert_int_equal(set_pt(f->m, f->route, 5, 0), 0);
	assert_int_equal(wr(f->m, 3, "0x2"), 0);
	check(f->m);
}

static void rule_p8_refused_write_changes_no_cpu(void **state)
{
	struct fx *f = *state;
	assert_int_equal(wr(f->m, 0, "0x1"), 0);
	assert_int_equal(wr(f->m, 1, "0x2"), 0);
	assert_int_equal(wr(f->m, 2, "0x2"), 0);
	assert_int_equal(kvm_model_count(f->m, 1, GP(0), 77), 0);
	assert_int_equal(kvm_model_count(f->m, 3, GP(2), 11), 0);
	/* cpu 3 cannot take it (its pinned demand); cpus 0..2 could. */
	assert_int_equal(kvm_model_host_pinned(f->m, 3, 8, 0), 0);
	assert_int_equal(wr(f->m, UNIFORM, "0x4"), -EBUSY);
	const uint64_t want[N_CPUS] = { 1, 2, 2, 0 };
	assert_reservations(f->m, want);
	/* Nothing scrubbed either. */
	assert_int_equal(pval(f->m, 1, GP(0)), 77);
	assert_int_equal(pval(f->m, 3, GP(2)), 11);
	/* Refused by the last check (P7), after every other passed. */
	assert_int_equal(kvm_model_host_pinned(f->m, 3, 0, 0), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(wr(f->m, UNIFORM, "0x4"), -EBUSY);
	assert_reservations(f->m, want);
	assert_int_equal(pval(f->m, 3, GP(2)), 11);
	check(f->m);
}

static void rule_p9_scrub_on_entering_and_leaving(void **state)
{
	struct fx *f = *state;
	assert_int_equal(kvm_model_count(f->m, 0, GP(0), 100), 0);
	assert_int_equal(kvm_model_count(f->m, 0, GP(1), 60), 0);
	assert_int_equal(kvm_model_count(f->m, 1, GP(0), 50), 0);
	/* GP 0 enters the reservation on cpu 0: the host's count is gone;
	 * GP 1 stays the host's, cpu 1 was not written. */
	assert_int_equal(wr(f->m, 0, "0x1"), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	assert_int_equal(pval(f->m, 0, GP(1)), 60);
	assert_int_equal(pval(f->m, 1, GP(0)), 50);
	assert_int_equal(kvm_model_count(f->m, 0, GP(0), 1), -EBUSY);
	/* GP 0 leaves the reservation on cpu 0 while a guest counts in it:
	 * the guest keeps its value, the counter is clean for the host. */
	assert_int_equal(wr(f->m, 1, "0x1"), 0);
	assert_int_equal(pval(f->m, 1, GP(0)), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 9), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 9);
	check(f->m);
	assert_int_equal(wr(f->m, 0, "0x0"), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 9);
	assert_int_equal(kvm_model_count(f->m, 0, GP(0), 4), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 4);
	check(f->m);
}

static void rule_p10_uniform_read_enodata_when_cpus_differ(void **state)
{
	struct fx *f = *state;
	char buf[32];
	assert_int_equal(rd(f->m, UNIFORM, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000000\n");
	assert_int_equal(wr(f->m, UNIFORM, "0x3"), 0);
	assert_int_equal(rd(f->m, UNIFORM, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000003\n");
	/* A CPU's own mask differs: the uniform file has none to give. */
	assert_int_equal(wr(f->m, 1, "0x0000000100000000"), 0);
	assert_int_equal(rd(f->m, UNIFORM, buf, sizeof(buf)), -ENODATA);
	assert_int_equal(rd(f->m, 1, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000100000000\n");
	assert_int_equal(rd(f->m, 0, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000003\n");
	/* An offline CPU does not count: once cpu 1 goes, the others agree. */
	assert_int_equal(kvm_model_cpu_online(f->m, 1, false), 0);
	assert_int_equal(rd(f->m, UNIFORM, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000003\n");
	assert_int_equal(rd(f->m, 1, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000000\n");
	/* snprintf semantics: the whole length, a truncated NUL-terminated copy. */
	char small[5];
	assert_int_equal(rd(f->m, UNIFORM, small, sizeof(small)), 19);
	assert_string_equal(small, "0x00");
	assert_int_equal(rd(f->m, UNIFORM, NULL, 0), 19);
	assert_int_equal(rd(f->m, UNIFORM, NULL, 4), -EINVAL);
	/* What a read says can be written back. */
	assert_int_equal(rd(f->m, 0, buf, sizeof(buf)), 19);
	assert_int_equal(wr(f->m, 2, buf), 0);
	assert_int_equal(res_of(f->m, 2), 3);
}

static void rule_p11_hotplug_uniform_cpu_joins_the_mask(void **state)
{
	struct fx *f = *state; /* uniform kernel */
	assert_int_equal(wr(f->m, UNIFORM, "0x3"), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), 0);
	assert_int_equal(res_of(f->m, 3), 0);
	assert_int_equal(wr(f->m, UNIFORM, "0x1"), 0);
	assert_int_equal(res_of(f->m, 3), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, true), 0);
	const uint64_t want[N_CPUS] = { 1, 1, 1, 1 };
	assert_reservations(f->m, want);
	check(f->m);
}

static void rule_p11_hotplug_per_cpu_starts_empty_and_offline_does_not_count(void **state)
{
	struct fx *f = *state;
	assert_int_equal(wr(f->m, UNIFORM, "0x3"), 0);
	assert_int_equal(kvm_model_count(f->m, 2, GP(4), 8), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 2, false), 0);
	assert_int_equal(kvm_model_reservation(f->m, 2, &(uint64_t){ 0 }), 0);
	assert_int_equal(res_of(f->m, 2), 0);
	assert_int_equal(kvm_model_count(f->m, 2, GP(4), 1), -EINVAL);
	assert_int_equal(kvm_model_host_pinned(f->m, 2, 1, 0), -EINVAL);
	assert_int_equal(kvm_model_cpu_online(f->m, 2, true), 0);
	assert_int_equal(res_of(f->m, 2), 0);
	assert_int_equal(pval(f->m, 2, GP(4)), 0); /* a CPU comes back clean */
	/* An offline CPU does not count for P7: GP 2 reserved only on cpu 3
	 * and passed through, cpu 3 cannot go (the model keeps P7 true), and
	 * once it is offline it cannot hold a route up. */
	assert_int_equal(wr(f->m, 3, "0x7"), 0);
	assert_int_equal(set_pt(f->m, f->route, 2, GP(2)), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), -EBUSY);
	assert_int_equal(res_of(f->m, 3), 7);
	assert_int_equal(set_pt(f->m, f->route, 2, 0), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), 0);
	assert_int_equal(set_pt(f->m, f->route, 2, GP(2)), -EBUSY);
	/* The last online CPU stays. */
	assert_int_equal(kvm_model_cpu_online(f->m, 0, false), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 1, false), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 2, false), -EBUSY);
	assert_int_equal(kvm_model_cpu_online(f->m, N_CPUS, false), -EINVAL);
	check(f->m);
}

/* ------------------------------------------------------------- KVM half */

static void rule_k1_check_extension(void **state)
{
	struct fx *f = *state;
	assert_int_equal(kvm_model_ioctl(f->m, &user, -1, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_VPMU_ROUTES), 1);
	assert_int_equal(kvm_model_ioctl(f->m, &user, -1, KVM_CHECK_EXTENSION,
					 (void *)(uintptr_t)KVM_CAP_PMU_CAPABILITY),
			 KVM_PMU_CAP_DISABLE | KVM_PMU_CAP_PARTITION);
	assert_int_equal(kvm_model_ioctl(f->m, &user, -1, KVM_CHECK_EXTENSION, (void *)(uintptr_t)KVM_CAP_USER_MEMORY), 0);
	assert_int_equal(kvm_model_ioctl(f->m, &user, -1, KVM_CHECK_EXTENSION, (void *)(uintptr_t)0), 0);
	assert_int_equal(kvm_model_ioctl(f->m, &user, -1, KVM_GET_API_VERSION, NULL), -ENOTTY);
	/* A route fd is not a VM fd. */
	assert_int_equal(kvm_model_ioctl(f->m, &user, f->route, KVM_CHECK_EXTENSION,
					 (void *)(uintptr_t)KVM_CAP_VPMU_ROUTES),
			 -ENOTTY);
}

static long create(struct fx *f, int vm, const struct kvm_model_vm_desc *d, const struct kvm_vpmu_route_fd *a,
		   int *fd)
{
	*fd = -1;
	return kvm_model_create_route_fd(f->m, vm, d, a, fd);
}

static void rule_k2_opt_in_after_vcpu_or_with_disable_einval(void **state)
{
	struct fx *f = *state;
	int vm = vm_create(f), fd;
	struct kvm_vpmu_route_fd a = { 0 };
	struct kvm_model_vm_desc d = desc_ok();
	d.pmu_disabled = true;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	d = desc_ok();
	d.vcpus_before_opt_in = true;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	d = desc_ok();
	assert_int_equal(create(f, vm, &d, &a, &fd), 0);
	assert_int_equal(kvm_model_vm_count(f->m), 2);
	close(vm);
}

static void rule_k3_protected_or_no_lapic_einval(void **state)
{
	struct fx *f = *state;
	int vm = vm_create(f), fd;
	struct kvm_vpmu_route_fd a = { 0 };
	struct kvm_model_vm_desc d = desc_ok();
	d.protected_state = true;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d = desc_ok();
	d.lapic_in_kernel = false;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	assert_int_equal(fd, -1);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(vm);
}

static void rule_k4_route_fd_needs_opt_in_and_zero_fields(void **state)
{
	struct fx *f = *state;
	int vm = vm_create(f), fd;
	struct kvm_model_vm_desc d = desc_ok();
	d.opted_in = false;
	struct kvm_vpmu_route_fd a = { 0 };
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d = desc_ok();
	a.flags = 1;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	a = (struct kvm_vpmu_route_fd){ .pad = 1 };
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	a = (struct kvm_vpmu_route_fd){ .reserved = { 0, 0, 1 } };
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	assert_int_equal(create(f, vm, &d, NULL, &fd), -EFAULT);
	assert_int_equal(fd, -1);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	a = (struct kvm_vpmu_route_fd){ 0 };
	assert_int_equal(create(f, vm, &d, &a, &fd), 0);
	assert_true(fd > 2 && fd != vm);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* A second route fd of a known VM checks its args first (D10), then
	 * is refused: one per VM (D8). */
	a.flags = 2;
	int fd2;
	assert_int_equal(create(f, vm, &d, &a, &fd2), -EINVAL);
	a.flags = 0;
	assert_int_equal(create(f, vm, &d, &a, &fd2), -EEXIST);
	/* The route fd holds the VM: the VMM's VM file may go. */
	close(vm);
	struct kvm_vpmu_routes r = get_rt(f->m, fd, 0);
	assert_int_equal(r.shape, SHAPE);
	assert_int_equal(kvm_model_vm_count(f->m), 2);
	assert_int_equal(kvm_model_route_close(f->m, fd), 0);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
}

static void desc_must_be_what_kvm_knows(void **state)
{
	struct fx *f = *state;
	int vm = vm_create(f), fd;
	struct kvm_vpmu_route_fd a = { 0 };
	struct kvm_model_vm_desc d = desc_ok();
	d.shape = GP(0) | GP(2); /* CPUID gives a count of GP counters */
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d.shape = FX(3);
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d.shape = GP(NUM_GP) - 1 + GP(NUM_GP);
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d = desc_ok();
	const uint32_t dup_ids[] = { 1, 1 };
	d.vcpu_ids = dup_ids;
	d.nr_vcpus = 2;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d.vcpu_ids = NULL;
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	d = desc_ok();
	d.vmm_pidfd = f->kvm; /* not a pidfd */
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(vm);
}

static void rule_k5_identity_by_open_file_not_number(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_routes r = { .vcpu_id = 0 };
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* Not route fds: /dev/kvm, the VM file itself, a pipe; closed: EBADF. */
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->kvm, KVM_VPMU_GET_ROUTES, &r), -ENOTTY);
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->vm, KVM_VPMU_GET_ROUTES, &r), -ENOTTY);
	assert_int_equal(kvm_model_ioctl(f->m, &root, p[0], KVM_VPMU_GET_ROUTES, &r), -ENOTTY);
	assert_int_equal(kvm_model_ioctl(f->m, &root, 1000, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	assert_int_equal(kvm_model_ioctl(f->m, &root, -2, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	/* Creating from a non-VM or a closed fd. */
	int fd;
	struct kvm_model_vm_desc d = desc_ok();
	struct kvm_vpmu_route_fd a = { 0 };
	assert_int_equal(create(f, p[0], &d, &a, &fd), -ENOTTY);
	assert_int_equal(create(f, f->kvm, &d, &a, &fd), -ENOTTY);
	assert_int_equal(create(f, 1000, &d, &a, &fd), -EBADF);

	/* Number reuse: a route fd of another VM under a closed route fd's
	 * number names the new VM, with none of the old one's state. */
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x3"), 0);
	int old_vm = vm_create(f);
	int old = route_new(f, old_vm, &d);
	assert_int_equal(set_pt(f->m, old, 2, GP(1)), 0);
	int num = old;
	int other_vm = vm_create(f);
	assert_int_equal(kvm_model_route_close(f->m, old), 0);
	assert_int_equal(kvm_model_ioctl(f->m, &root, num, KVM_VPMU_GET_ROUTES, &r), -EBADF);
	int other = route_new(f, other_vm, &d);
	assert_int_equal(other, num); /* the lowest free number: the old one */
	assert_int_equal(kvm_model_vm_count(f->m), 2);
	assert_int_equal(pt_of(f->m, other, 2), 0);
	assert_int_equal(set_pt(f->m, other, 2, GP(0)), 0);
	assert_int_equal(pt_of(f->m, f->route, 2), 0);

	/* A route fd closed behind the model's back and its number taken by
	 * another file: not a route fd, and route_close leaves it alone. */
	close(other);
	int imposter = dup2(p[1], num);
	assert_int_equal(imposter, num);
	assert_int_equal(kvm_model_ioctl(f->m, &root, num, KVM_VPMU_GET_ROUTES, &r), -ENOTTY);
	assert_int_equal(kvm_model_route_close(f->m, num), -EBADF);
	assert_true(fcntl(num, F_GETFD) >= 0);
	assert_int_equal(kvm_model_route_close(f->m, num), -EBADF);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(num);
	/* Its VM lost its last route fd with it: the VMM may make a new one. */
	int other_again = route_new(f, other_vm, &d);
	assert_int_equal(pt_of(f->m, other_again, 2), 0);
	assert_int_equal(kvm_model_route_close(f->m, other_again), 0);
	/* Closed behind the model's back, its number then given to a new
	 * route fd of the same VM: the old record is gone, the VM made anew. */
	int lone_vm = vm_create(f);
	int lone = route_new(f, lone_vm, &d);
	assert_int_equal(set_pt(f->m, lone, 0, GP(1)), 0);
	close(lone);
	assert_int_equal(route_new(f, lone_vm, &d), lone);
	assert_int_equal(pt_of(f->m, lone, 0), 0);
	assert_int_equal(kvm_model_vm_count(f->m), 2);
	close(lone_vm);
	close(other_vm);
	close(old_vm);
	close(p[0]);
	close(p[1]);
	check(f->m);
}

/* D8: at most one route fd per VM while it is open, whatever number of
 * the VM file it is asked from, so a route fd names its VM without
 * ambiguity; once it is closed (vpmud's restart) the VMM may make a new
 * one. D10: the errno order of KVM_CREATE_VPMU_ROUTE_FD. */
static void rule_k5_second_route_fd_of_a_vm_eexist(void **state)
{
	struct fx *f = *state;
	struct kvm_model_vm_desc d = desc_ok();
	struct kvm_vpmu_route_fd a = { 0 };
	int vm_again = dup(f->vm), fd;
	assert_int_equal(create(f, vm_again, &d, &a, &fd), -EEXIST);
	assert_int_equal(fd, -1);
	assert_int_equal(create(f, f->vm, &d, &a, &fd), -EEXIST);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	/* Earlier checks win over EEXIST: EFAULT, then the struct's EINVAL. */
	assert_int_equal(create(f, vm_again, &d, NULL, &fd), -EFAULT);
	a.pad = 1;
	assert_int_equal(create(f, vm_again, &d, &a, &fd), -EINVAL);
	a.pad = 0;
	/* And a closed VM fd is EBADF, whatever route fds exist. */
	assert_int_equal(create(f, 1000, &d, &a, &fd), -EBADF);
	/* The route fd closed, a new one may be made: the same VM file. */
	assert_int_equal(kvm_model_route_close(f->m, f->route), 0);
	f->route = route_new(f, vm_again, &d);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	assert_int_equal(create(f, f->vm, &d, &a, &fd), -EEXIST);
	close(vm_again);
	check(f->m);
}

/* D10: EIO (the VMM, standing for the VM's creator, has exited) before
 * EFAULT and EINVAL; EINVAL for the struct before the opt-in's. */
static void rule_k4_create_check_order(void **state)
{
	struct fx *f = *state;
	int pidfd;
	vmm_start(f, &pidfd);
	int vm = vm_create(f), fd;
	struct kvm_model_vm_desc d = desc_ok();
	d.vmm_pidfd = pidfd;
	d.opted_in = false;
	struct kvm_vpmu_route_fd a = { .flags = 1 };
	assert_int_equal(create(f, vm, &d, NULL, &fd), -EFAULT);
	/* flags and opt-in both wrong: EINVAL either way, nothing made. */
	assert_int_equal(create(f, vm, &d, &a, &fd), -EINVAL);
	vmm_kill(f);
	assert_int_equal(create(f, vm, &d, NULL, &fd), -EIO);
	assert_int_equal(create(f, vm, &d, &a, &fd), -EIO);
	assert_int_equal(fd, -1);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(vm);
	close(pidfd);
}

static void rule_k6_dead_vm_eio_until_closed(void **state)
{
	struct fx *f = *state;
	int pidfd;
	vmm_start(f, &pidfd);
	int vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	d.vmm_pidfd = pidfd;
	int fd = route_new(f, vm, &d);
	assert_int_equal(kvm_model_vm_count(f->m), 2);
	assert_int_equal(reserve(f->m, "0 0x1"), 0);
	assert_int_equal(set_pt(f->m, fd, 0, GP(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, fd, 0, 0), 0);
	assert_int_equal(kvm_model_guest_count(f->m, fd, 0, GP(0), 123), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 123);
	assert_int_equal(reserve(f->m, "0 0x0"), -EBUSY); /* its route holds GP 0 */

	vmm_kill(f);
	struct kvm_vpmu_routes r = { .vcpu_id = 0 };
	struct kvm_vpmu_stats_fd s = { .vcpu_id = 0 };
	struct { struct kvm_vpmu_vcpus v; uint32_t ids[4]; } v = { .v.nr = 4 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_ROUTES, &r), -EIO);
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_SET_ROUTES, &r), -EIO);
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_VCPU_STATS_FD, &s), -EIO);
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_VCPUS, &v), -EIO);
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_GET_API_VERSION, NULL), -EIO);
	assert_int_equal(kvm_model_vcpu_load(f->m, fd, 0, 1), -EIO);
	assert_int_equal(kvm_model_guest_count(f->m, fd, 0, GP(0), 1), -EIO);
	assert_int_equal(kvm_model_guest_value(f->m, fd, 0, GP(0), &(uint64_t){ 0 }), -EIO);
	assert_int_equal(kvm_model_guest_msr_access(f->m, fd, 0, GP(0), true), -EIO);
	assert_int_equal(kvm_model_vcpu_put(f->m, fd, 0), -EIO);
	/* The dead VM is not counted, its vCPU left the CPU (counter
	 * scrubbed), its routes hold no reservation any more. */
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	check(f->m);
	assert_int_equal(reserve(f->m, "0 0x0"), 0);
	/* Another route fd from the same VM file: the VMM is gone. */
	int again;
	struct kvm_vpmu_route_fd a = { 0 };
	assert_int_equal(create(f, vm, &d, &a, &again), -EIO);
	/* The route fd keeps its reference until closed. */
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_ROUTES, &r), -EIO);
	assert_int_equal(kvm_model_route_close(f->m, fd), 0);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	/* Forgotten: made anew, the VM is new to the model, and dead. */
	assert_int_equal(create(f, vm, &d, &a, &again), -EIO);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(vm);
	close(pidfd);
	check(f->m);
}

static void rule_k7_get_vcpus_order_e2big_flags(void **state)
{
	struct fx *f = *state;
	struct {
		struct kvm_vpmu_vcpus v;
		uint32_t ids[4];
	} b = { .v.nr = 4 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPUS, &b), 0);
	assert_int_equal(b.v.nr, 3);
	assert_int_equal(b.ids[0], 5);
	assert_int_equal(b.ids[1], 0);
	assert_int_equal(b.ids[2], 2);
	memset(&b, 0, sizeof(b));
	b.v.nr = 2;
	b.ids[0] = 0xdead;
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPUS, &b), -E2BIG);
	assert_int_equal(b.v.nr, 3);
	assert_int_equal(b.ids[0], 0xdead);
	b = (__typeof__(b)){ .v.nr = 4, .v.flags = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPUS, &b), -EINVAL);
	assert_int_equal(b.v.nr, 4);
	b = (__typeof__(b)){ .v.nr = 4, .v.reserved = { 0, 1 } };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPUS, &b), -EINVAL);
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPUS, NULL), -EFAULT);
	/* A VM without vCPUs yet. */
	int vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	d.nr_vcpus = 0;
	d.vcpu_ids = NULL;
	int fd = route_new(f, vm, &d);
	struct kvm_vpmu_vcpus empty = { .nr = 0 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_VCPUS, &empty), 0);
	assert_int_equal(empty.nr, 0);
	close(vm);
}

static void rule_k8_unknown_vcpu_id_enoent(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x1"), 0);
	/* 1 would be a valid index; it is not an id KVM_CREATE_VCPU got. */
	struct kvm_vpmu_routes r = { .vcpu_id = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_ROUTES, &r), -ENOENT);
	r.passthrough = GP(0);
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, &r), -ENOENT);
	struct kvm_vpmu_stats_fd s = { .vcpu_id = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, &s), -ENOENT);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 1, 0), -ENOENT);
	assert_int_equal(set_pt(f->m, f->route, 5, GP(0)), 0);
	assert_int_equal(pt_of(f->m, f->route, 5), GP(0));
	assert_int_equal(pt_of(f->m, f->route, 0), 0);
}

static void rule_k9_struct_hygiene_einval(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x1"), 0);
	struct kvm_vpmu_routes r = { .vcpu_id = 0, .flags = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_ROUTES, &r), -EINVAL);
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .reserved = { [4] = 1 } };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_ROUTES, &r), -EINVAL);
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .passthrough = 1 }; /* GET's output */
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_ROUTES, &r), -EINVAL);
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .shape = SHAPE };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_ROUTES, &r), -EINVAL);
	/* SET: shape is not the caller's to give. */
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .passthrough = GP(0), .shape = SHAPE };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .passthrough = GP(0), .flags = 4 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	r = (struct kvm_vpmu_routes){ .vcpu_id = 0, .passthrough = GP(0), .reserved = { 1 } };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	/* Hygiene comes before the vCPU lookup. */
	r = (struct kvm_vpmu_routes){ .vcpu_id = 77, .flags = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, &r), -EINVAL);
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_SET_ROUTES, NULL), -EFAULT);
	assert_int_equal(pt_of(f->m, f->route, 0), 0);
	assert_int_equal(stats_of(f->m, f->route, 0).route_changes, 0);
}

static void rule_k10_passthrough_within_shape_einval(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x00000007000000ff"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(4)), -EINVAL);      /* host has it, the guest not */
	assert_int_equal(set_pt(f->m, f->route, 0, FX(3)), -EINVAL);
	assert_int_equal(set_pt(f->m, f->route, 0, VPMU_PERF_METRICS_BIT), -EINVAL);
	assert_int_equal(set_pt(f->m, f->route, 0, 1ull << 63), -EINVAL);
	/* Outside the shape and reserved nowhere: the shape is checked first. */
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x0"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(4)), -EINVAL);
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x00000007000000ff"), 0);
	assert_int_equal(pt_of(f->m, f->route, 0), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, SHAPE), 0);
	struct kvm_vpmu_routes r = get_rt(f->m, f->route, 0);
	assert_int_equal(r.passthrough, SHAPE);
	assert_int_equal(r.shape, SHAPE); /* routes never change the shape */
	assert_int_equal(set_pt(f->m, f->route, 0, 0), 0);
	assert_int_equal(get_rt(f->m, f->route, 0).shape, SHAPE);
	/* A smaller guest: fixed 0 and two GP counters. */
	int vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	d.shape = GP(0) | GP(1) | FX(0);
	int fd = route_new(f, vm, &d);
	assert_int_equal(set_pt(f->m, fd, 0, FX(1)), -EINVAL);
	assert_int_equal(set_pt(f->m, fd, 0, GP(2)), -EINVAL);
	assert_int_equal(set_pt(f->m, fd, 0, GP(1) | FX(0)), 0);
	assert_int_equal(get_rt(f->m, fd, 0).shape, GP(0) | GP(1) | FX(0));
	close(vm);
	check(f->m);
}

static void rule_k18_set_cpuid_after_entry_or_dropping_passthrough(void **state)
{
	struct fx *f = *state;
	uint64_t eight = 0xffULL | FX(0) | FX(1) | FX(2);
	/* Before the vCPU runs its VMM may change leaf 0xA, per vCPU. */
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, eight), 0);
	assert_int_equal(get_rt(f->m, f->route, 5).shape, eight);
	assert_int_equal(get_rt(f->m, f->route, 0).shape, SHAPE); /* another vCPU keeps its own */
	/* What a partitioned vCPU cannot have: version 3 and above, fixed
	 * counter 3, general counters that are not a prefix. */
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 3, eight), -EINVAL);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, eight | FX(3)), -EINVAL);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, GP(0) | GP(2)), -EINVAL);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, VPMU_PERF_METRICS_BIT), -EINVAL);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 7, 2, eight), -ENOENT);
	assert_int_equal(get_rt(f->m, f->route, 5).shape, eight); /* refusals changed nothing */
	/* A pass-through PMC cannot leave the shape: routes first. */
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x00000007000000ff"), 0);
	assert_int_equal(set_pt(f->m, f->route, 5, GP(0) | GP(6)), 0);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, GP(0) | GP(1)), -EBUSY);
	assert_int_equal(get_rt(f->m, f->route, 5).shape, eight);
	assert_int_equal(set_pt(f->m, f->route, 5, GP(0)), 0);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, GP(0) | GP(1)), 0);
	assert_int_equal(set_pt(f->m, f->route, 5, GP(0) | GP(6)), -EINVAL); /* K10 against the new shape */
	assert_int_equal(pt_of(f->m, f->route, 5), GP(0));
	/* Once the vCPU has entered the guest, its CPUID is frozen. */
	assert_true(kvm_model_vcpu_load(f->m, f->route, 5, 0) >= 0);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 5), 0);
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 5, 2, GP(0)), -EINVAL);
	assert_int_equal(get_rt(f->m, f->route, 5).shape, GP(0) | GP(1));
	/* vCPU 2 never ran: still free to change. */
	assert_int_equal(kvm_model_set_cpuid(f->m, f->route, 2, 2, GP(0)), 0);
	check(f->m);
}

static void rule_k11_passthrough_needs_reservation_ebusy(void **state)
{
	struct fx *f = *state;
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), -EBUSY);
	assert_int_equal(reserve(f->m, "2 0x1"), 0); /* one online CPU is enough */
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | GP(1)), -EBUSY);
	assert_int_equal(pt_of(f->m, f->route, 0), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	/* A reservation on an offline CPU holds nothing. */
	assert_int_equal(reserve(f->m, "3 0x2"), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | GP(1)), -EBUSY);
	assert_int_equal(pt_of(f->m, f->route, 0), GP(0));
	assert_int_equal(stats_of(f->m, f->route, 0).route_changes, 1);
	check(f->m);
}

static void rule_k12_values_kept_across_route_change(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x3"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 100), 0); /* hardware */
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(1), 50), 0);  /* perf event */
	assert_int_equal(pval(f->m, 0, GP(0)), 100);
	assert_int_equal(pval(f->m, 0, GP(1)), 0);
	/* Swap the routes while loaded: GP 0 to its perf event, GP 1 to hardware. */
	assert_int_equal(set_pt(f->m, f->route, 0, GP(1)), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 100);
	assert_int_equal(gval(f->m, f->route, 0, GP(1)), 50);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	assert_int_equal(pval(f->m, 0, GP(1)), 50);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(1), 5), 0);
	assert_int_equal(pval(f->m, 0, GP(1)), 55);
	check(f->m);
	/* And not loaded, both ways. */
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | GP(1)), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 100);
	assert_int_equal(gval(f->m, f->route, 0, GP(1)), 55);
	assert_int_equal(set_pt(f->m, f->route, 0, 0), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 100);
	assert_int_equal(gval(f->m, f->route, 0, GP(1)), 55);
	assert_int_equal(gval(f->m, f->route, 0, FX(2)), 0);
	assert_int_equal(kvm_model_guest_value(f->m, f->route, 0, GP(4), &(uint64_t){ 0 }), -EINVAL);
	assert_int_equal(kvm_model_guest_value(f->m, f->route, 0, GP(0) | GP(1), &(uint64_t){ 0 }), -EINVAL);
	check(f->m);
}

static void rule_k13_put_saves_and_scrubs(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0x0000000100000001"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | FX(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 42), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, FX(0), 7), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 42);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), 0);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	assert_int_equal(pval(f->m, 0, FX(0)), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 42);
	assert_int_equal(gval(f->m, f->route, 0, FX(0)), 7);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), -EINVAL);
	check(f->m);
	/* Another vCPU on cpu 0 finds nothing of it; the first resumes on cpu 1. */
	assert_int_equal(set_pt(f->m, f->route, 2, GP(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 2, 0), 0);
	assert_int_equal(gval(f->m, f->route, 2, GP(0)), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 1), 0);
	assert_int_equal(pval(f->m, 1, GP(0)), 42);
	check(f->m);
}

static void rule_k14_wrong_cpu_freezes_and_counts(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, "0 0x3"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | GP(1)), 0);
	assert_int_equal(kvm_model_count(f->m, 1, GP(0), 1000), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 1), 2); /* both frozen */
	assert_int_equal(stats_of(f->m, f->route, 0).frozen_entries, 1);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 5), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 0);   /* held */
	assert_int_equal(pval(f->m, 1, GP(0)), 1000);          /* the host's, untouched */
	check(f->m);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), -EBUSY);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(stats_of(f->m, f->route, 0).frozen_entries, 1);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 5), 0);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 5);
	/* The reservation leaves cpu 0 under the running vCPU (cpu 2 keeps
	 * GP 0 and 1 up): it is kicked, re-enters with both frozen. */
	assert_int_equal(reserve(f->m, "2 0x3"), 0);
	assert_int_equal(reserve(f->m, "0 0x0"), 0);
	assert_int_equal(stats_of(f->m, f->route, 0).frozen_entries, 2);
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 5);
	assert_int_equal(pval(f->m, 0, GP(0)), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(0), true), 1);
	check(f->m);
	/* Another vCPU cannot enter an occupied CPU; an offline one, no one. */
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 5, 0), -EBUSY);
	assert_int_equal(kvm_model_cpu_online(f->m, 3, false), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 5, 3), -EINVAL);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 5, N_CPUS), -EINVAL);
}

static void rule_k15_intercepts_and_estimates(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, "0 0x1"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(0), true), -EINVAL); /* not running */
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(0), true), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(0), false), 0);
	struct stats s = stats_of(f->m, f->route, 0);
	assert_int_equal(s.msr_exits, 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(1), true), 1); /* multiplexed */
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(1), false), 1);
	s = stats_of(f->m, f->route, 0);
	assert_int_equal(s.msr_exits, 2);
	assert_int_equal(s.estimated_reads, 1);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(3), true), 1);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(4), true), -EINVAL); /* no such PMC */
	/* Frozen: emulated, but exact (held), not an estimate. */
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 1), 1);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->route, 0, GP(0), true), 1);
	s = stats_of(f->m, f->route, 0);
	assert_int_equal(s.msr_exits, 4);
	assert_int_equal(s.estimated_reads, 2);
}

static void rule_k16_stats_fd_format(void **state)
{
	struct fx *f = *state;
	struct kvm_vpmu_stats_fd a = { .vcpu_id = 2, .flags = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, &a), -EINVAL);
	a = (struct kvm_vpmu_stats_fd){ .vcpu_id = 2, .reserved = { 0, 0, 1 } };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, &a), -EINVAL);
	a = (struct kvm_vpmu_stats_fd){ .vcpu_id = 3 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, &a), -ENOENT);
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, NULL), -EFAULT);

	assert_int_equal(reserve(f->m, "0 0x1"), 0);
	assert_int_equal(set_pt(f->m, f->route, 2, GP(0)), 0);
	a = (struct kvm_vpmu_stats_fd){ .vcpu_id = 2 };
	long fd = kvm_model_ioctl(f->m, &root, f->route, KVM_VPMU_GET_VCPU_STATS_FD, &a);
	assert_true(fd > 2);
	assert_true(fcntl((int)fd, F_GETFD) & FD_CLOEXEC);
	struct stats s = stats_read((int)fd);
	assert_int_equal(s.route_changes, 1);
	assert_int_equal(s.frozen_entries, 0);
	/* The id names the vCPU, as KVM's "kvm-<pid>/vcpu-<id>". */
	char id[64] = "";
	struct kvm_stats_header h;
	assert_int_equal(pread((int)fd, &h, sizeof(h), 0), sizeof(h));
	assert_int_equal(h.id_offset, sizeof(h));
	assert_true(h.name_size <= sizeof(id));
	assert_int_equal(pread((int)fd, id, h.name_size, h.id_offset), h.name_size);
	assert_string_equal(id, "kvm-model/vcpu-2");
	/* A snapshot: later activity shows in a new fd only. It is read-only. */
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 2, 1), 1);
	assert_int_equal(stats_read((int)fd).frozen_entries, 0);
	assert_int_equal(stats_of(f->m, f->route, 2).frozen_entries, 1);
	assert_int_equal(pwrite((int)fd, "x", 1, 0), -1);
	close((int)fd);
	/* Other vCPUs have their own. */
	assert_int_equal(stats_of(f->m, f->route, 5).route_changes, 0);
}

static void rule_k17_route_changes_counted_last_writer_wins(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0xf"), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(1)), 0);
	assert_int_equal(pt_of(f->m, f->route, 0), GP(1));
	assert_int_equal(set_pt(f->m, f->route, 0, GP(1)), 0); /* no change, not counted */
	assert_int_equal(stats_of(f->m, f->route, 0).route_changes, 2);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0)), 0);
	assert_int_equal(stats_of(f->m, f->route, 0).route_changes, 3);
}

struct writer {
	struct kvm_model *m;
	int fd;
	uint64_t a, b;
	int n;
	int failures;
};

static void *writer_run(void *p)
{
	struct writer *w = p;
	for (int i = 0; i < w->n; i++)
		w->failures += set_pt(w->m, w->fd, 0, i & 1 ? w->b : w->a) != 0;
	return NULL;
}

/* D8: one route fd per VM, so the writers that must be serialised are
 * two threads on that one fd. */
static void rule_k17_two_threads_on_one_route_fd_are_serialised(void **state)
{
	struct fx *f = *state;
	assert_int_equal(reserve(f->m, ALL_CPUS " 0xf"), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 1000), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(2), 2000), 0);
	/* Each writer alternates between masks the other never writes, so
	 * every write changes the mask, whatever the interleaving: the count
	 * is exact only if no write is lost. */
	enum { N = 2000 };
	struct writer w1 = { f->m, f->route, GP(0), GP(1), N, 0 };
	struct writer w2 = { f->m, f->route, GP(2), GP(3), N, 0 };
	pthread_t t1, t2;
	assert_int_equal(pthread_create(&t1, NULL, writer_run, &w1), 0);
	assert_int_equal(pthread_create(&t2, NULL, writer_run, &w2), 0);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(w1.failures + w2.failures, 0);
	assert_int_equal(stats_of(f->m, f->route, 0).route_changes, 2 * N);
	uint64_t last = pt_of(f->m, f->route, 0);
	assert_true(last == GP(1) || last == GP(3)); /* each writer's last word */
	assert_int_equal(gval(f->m, f->route, 0, GP(0)), 1000);
	assert_int_equal(gval(f->m, f->route, 0, GP(2)), 2000);
	check(f->m);
}

/* ------------------------------------------------------------ invariants */

static void invariants_hold_through_a_guest_lifecycle(void **state)
{
	struct fx *f = *state;
	int pidfd;
	vmm_start(f, &pidfd);
	int vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	d.vmm_pidfd = pidfd;
	int other = route_new(f, vm, &d);
	check(f->m);
	assert_int_equal(kvm_model_count(f->m, 0, GP(0), 5), 0);
	assert_int_equal(reserve(f->m, "0-1 0x0000000100000003"), 0);
	check(f->m);
	assert_int_equal(set_pt(f->m, f->route, 0, GP(0) | FX(0)), 0);
	assert_int_equal(set_pt(f->m, other, 5, GP(1)), 0);
	check(f->m);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 0), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, other, 5, 1), 0);
	assert_int_equal(kvm_model_guest_count(f->m, f->route, 0, GP(0), 3), 0);
	assert_int_equal(kvm_model_guest_count(f->m, other, 5, GP(1), 4), 0);
	check(f->m);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->route, 0), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 0, 2), 2);
	check(f->m);
	/* cpu 1 goes offline under vCPU 5 (cpu 0 still holds GP 1): put. */
	assert_int_equal(kvm_model_cpu_online(f->m, 1, false), 0);
	assert_int_equal(gval(f->m, other, 5, GP(1)), 4);
	check(f->m);
	assert_int_equal(kvm_model_vcpu_load(f->m, other, 5, 3), 1);
	check(f->m);
	vmm_kill(f);
	check(f->m);
	/* The dead VM's vCPU left cpu 3. */
	assert_int_equal(kvm_model_vcpu_load(f->m, f->route, 5, 3), 0);
	assert_int_equal(kvm_model_cpu_online(f->m, 1, true), 0);
	check(f->m);
	assert_int_equal(kvm_model_route_close(f->m, other), 0);
	check(f->m);
	close(vm);
	close(pidfd);
}

/* The kcmp-less kernel: run in a child whose seccomp filter fails kcmp. */
static void kcmp_unavailable_every_vm_file_is_new(void **state)
{
	struct fx *f = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter prog[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kcmp, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog fp = { .len = sizeof(prog) / sizeof(prog[0]), .filter = prog };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp))
			_exit(10);
		pid_t self = getpid();
		if (syscall(SYS_kcmp, self, self, KCMP_FILE, 0, 0) != -1 || errno != ENOSYS)
			_exit(11);
		struct kvm_model_vm_desc d = desc_ok();
		struct kvm_vpmu_route_fd a = { 0 };
		int r1 = -1, r2 = -1;
		if (kvm_model_create_route_fd(f->m, f->vm, &d, &a, &r1) ||
		    kvm_model_create_route_fd(f->m, f->vm, &d, &a, &r2))
			_exit(12);
		/* The fixture's VM and these two: three VMs, as far as the model
		 * can tell; so without kcmp it cannot refuse a second route fd
		 * of one VM (D8's EEXIST) either. */
		if (kvm_model_vm_count(f->m) != 3)
			_exit(13);
		struct kvm_vpmu_routes r = { .vcpu_id = 0 };
		if (kvm_model_ioctl(f->m, &root, r1, KVM_VPMU_GET_ROUTES, &r) != 0 ||
		    kvm_model_ioctl(f->m, &root, f->vm, KVM_VPMU_GET_ROUTES, &r) != -ENOTTY)
			_exit(14);
		if (kvm_model_route_close(f->m, r1) || kvm_model_vm_count(f->m) != 2)
			_exit(15);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 10)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ------------------------------------------------- randomized sequence */

#define R_VMS 2
struct rnd {
	struct fx *f;
	uint64_t seed;
	int fds[R_VMS];
	bool dead[R_VMS];
	uint64_t shape[R_VMS];
	uint64_t vals[R_VMS][N_VCPUS][48];
	bool offline[N_CPUS];
};

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t pick_bits(uint64_t *s, uint64_t within)
{
	return next_rand(s) & next_rand(s) & within;
}

static uint64_t pick_one(uint64_t *s, uint64_t within)
{
	unsigned n = (unsigned)__builtin_popcountll(within), k = (unsigned)(next_rand(s) % n);
	for (uint64_t b = within; b; b &= b - 1)
		if (k-- == 0)
			return b & -b;
	return 0;
}

static void snapshot(struct rnd *r)
{
	for (int v = 0; v < R_VMS; v++) {
		if (r->dead[v])
			continue;
		for (int i = 0; i < N_VCPUS; i++)
			for (uint64_t b = r->shape[v]; b; b &= b - 1)
				r->vals[v][i][__builtin_ctzll(b)] = gval(r->f->m, r->fds[v], vcpu_ids[i], b & -b);
	}
}

/* Every guest value is as before, except (vm, vcpu, bit) which may have
 * moved by delta (or not, if it is frozen). */
static void values_kept(struct rnd *r, int step, int xv, int xi, uint64_t xbit, uint64_t delta)
{
	for (int v = 0; v < R_VMS; v++) {
		if (r->dead[v])
			continue;
		for (int i = 0; i < N_VCPUS; i++) {
			for (uint64_t b = r->shape[v]; b; b &= b - 1) {
				uint64_t bit = b & -b, before = r->vals[v][i][__builtin_ctzll(b)];
				uint64_t now = gval(r->f->m, r->fds[v], vcpu_ids[i], bit);
				bool counted = v == xv && i == xi && bit == xbit;
				if (now == before || (counted && now == before + delta))
					continue;
				fail_msg("step %d seed %llu: vm %d vcpu %u bit 0x%llx went %llu -> %llu", step,
					 (unsigned long long)r->seed, v, vcpu_ids[i], (unsigned long long)bit,
					 (unsigned long long)before, (unsigned long long)now);
			}
		}
	}
}

static void random_step(struct rnd *r, int step)
{
	struct kvm_model *m = r->f->m;
	uint64_t *s = &r->seed;
	int v = (int)(next_rand(s) % R_VMS), i = (int)(next_rand(s) % N_VCPUS);
	uint32_t id = vcpu_ids[i];
	int xv = -1, xi = -1;
	uint64_t xbit = 0, delta = 0;
	long rc = 0;
	snapshot(r);
	switch (next_rand(s) % 12) {
	case 0:
	case 1: {
		uint64_t before[N_CPUS];
		for (unsigned c = 0; c < N_CPUS; c++)
			before[c] = res_of(m, c);
		/* The uniform file, or one CPU's (absent on a uniform kernel). */
		int cpu = next_rand(s) % 4 == 0 ? UNIFORM : (int)(next_rand(s) % N_CPUS);
		uint64_t mask = pick_bits(s, 0x00000007000000ffull);
		char text[32];
		snprintf(text, sizeof(text), "0x%llx", (unsigned long long)mask);
		rc = wr(m, cpu, text);
		for (unsigned c = 0; c < N_CPUS; c++) {
			bool written = rc == 0 && !r->offline[c] && (cpu == UNIFORM || (unsigned)cpu == c);
			uint64_t want = written ? mask : before[c];
			if (res_of(m, c) != want)
				fail_msg("step %d: write \"%s\" to %d gave %ld, cpu %u reserves 0x%llx", step, text, cpu,
					 rc, c, (unsigned long long)res_of(m, c));
		}
		bool per_cpu = kvm_model_reserve_caps(m) & VPMU_RESERVE_CAP_PER_CPU;
		if (rc && rc != -EINVAL && rc != -EBUSY && !(rc == -ENOENT && !per_cpu && cpu != UNIFORM))
			fail_msg("step %d: write \"%s\" to %d gave %ld", step, text, cpu, rc);
		break;
	}
	case 2:
	case 3: {
		uint64_t pt = pick_bits(s, r->shape[v]), old = r->dead[v] ? 0 : pt_of(m, r->fds[v], id);
		rc = set_pt(m, r->fds[v], id, pt);
		if (r->dead[v])
			assert_int_equal(rc, -EIO);
		else if (rc == 0)
			assert_int_equal(pt_of(m, r->fds[v], id), pt);
		else if (rc == -EBUSY)
			assert_int_equal(pt_of(m, r->fds[v], id), old);
		else
			fail_msg("step %d: SET_ROUTES gave %ld", step, rc);
		break;
	}
	case 4:
		rc = kvm_model_vcpu_load(m, r->fds[v], id, (unsigned)(next_rand(s) % N_CPUS));
		if (rc < 0 && rc != -EBUSY && rc != -EINVAL && !(r->dead[v] && rc == -EIO))
			fail_msg("step %d: load gave %ld", step, rc);
		break;
	case 5:
		rc = kvm_model_vcpu_put(m, r->fds[v], id);
		if (rc && rc != -EINVAL && !(r->dead[v] && rc == -EIO))
			fail_msg("step %d: put gave %ld", step, rc);
		break;
	case 6:
	case 7:
		if (r->dead[v])
			break;
		xv = v, xi = i, xbit = pick_one(s, r->shape[v]), delta = next_rand(s) % 1000 + 1;
		assert_int_equal(kvm_model_guest_count(m, r->fds[v], id, xbit, delta), 0);
		break;
	case 8:
		rc = kvm_model_count(m, (unsigned)(next_rand(s) % N_CPUS), pick_one(s, 0x0000000f000000ffull),
				     next_rand(s) % 1000);
		if (rc && rc != -EBUSY && rc != -EINVAL)
			fail_msg("step %d: host count gave %ld", step, rc);
		break;
	case 9:
		if (!r->dead[v]) {
			rc = kvm_model_guest_msr_access(m, r->fds[v], id, pick_one(s, r->shape[v]), next_rand(s) & 1);
			if (rc < 0 && rc != -EINVAL)
				fail_msg("step %d: msr access gave %ld", step, rc);
		}
		break;
	case 10: {
		unsigned cpu = (unsigned)(next_rand(s) % N_CPUS);
		bool online = next_rand(s) % 3 != 0;
		rc = kvm_model_cpu_online(m, cpu, online);
		if (rc && rc != -EBUSY)
			fail_msg("step %d: hotplug gave %ld", step, rc);
		if (rc == 0)
			r->offline[cpu] = !online;
		break;
	}
	case 11:
		rc = kvm_model_host_pinned(m, (unsigned)(next_rand(s) % N_CPUS), (unsigned)(next_rand(s) % 5),
					   pick_bits(s, 0x0000000f00000000ull));
		if (rc && rc != -EBUSY && rc != -EINVAL)
			fail_msg("step %d: pinned gave %ld", step, rc);
		break;
	}
	char why[256] = "";
	if (kvm_model_check(m, why, sizeof(why)) != 0)
		fail_msg("step %d seed %llu: %s", step, (unsigned long long)r->seed, why);
	values_kept(r, step, xv, xi, xbit, delta);
}

static void random_sequence(struct fx *f, uint64_t seed, int steps)
{
	int pidfd;
	vmm_start(f, &pidfd);
	int vm = vm_create(f);
	struct kvm_model_vm_desc d = desc_ok();
	d.vmm_pidfd = pidfd;
	d.shape = GP(0) | GP(1) | FX(1);
	struct rnd r = { .f = f, .seed = seed ? seed : 1, /* xorshift stays at 0 */ .fds = { f->route, route_new(f, vm, &d) },
			 .shape = { SHAPE, d.shape } };
	for (int step = 0; step < steps; step++) {
		if (step == steps / 2) {
			vmm_kill(f);
			r.dead[1] = true;
		}
		random_step(&r, step);
	}
	if (!r.dead[1])
		vmm_kill(f);
	assert_int_equal(kvm_model_vm_count(f->m), 1);
	close(vm);
	close(pidfd);
}

static uint64_t seed_from_env(void)
{
	const char *s = getenv("VPMU_SEED");
	return s && *s ? strtoull(s, NULL, 0) : 0x9e3779b97f4a7c15ull;
}

static void random_sequence_per_cpu_keeps_invariants(void **state)
{
	random_sequence(*state, seed_from_env(), 4000);
}

static void random_sequence_uniform_keeps_invariants(void **state)
{
	random_sequence(*state, seed_from_env() ^ 0x5555, 4000);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define TU(fn) cmocka_unit_test_setup_teardown(fn, setup_uniform, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rule_p1_caps_say_uniform_or_per_cpu),
		cmocka_unit_test(model_new_validates),
		T(rule_p2_syntax_is_einval),
		T(reserve_needs_root_and_a_buffer),
		T(rule_p3_offline_or_nonexistent_cpu_einval),
		T(rule_p4_counter_not_reservable_einval),
		TU(rule_p5_uniform_kernel_has_no_per_cpu_file_enoent),
		T(rule_p6_pinned_host_events_must_fit_ebusy),
		T(rule_p7_shrink_under_live_route_ebusy),
		T(rule_p8_refused_write_changes_no_cpu),
		T(rule_p9_scrub_on_entering_and_leaving),
		T(rule_p10_uniform_read_enodata_when_cpus_differ),
		TU(rule_p11_hotplug_uniform_cpu_joins_the_mask),
		T(rule_p11_hotplug_per_cpu_starts_empty_and_offline_does_not_count),
		T(rule_k1_check_extension),
		T(rule_k2_opt_in_after_vcpu_or_with_disable_einval),
		T(rule_k3_protected_or_no_lapic_einval),
		T(rule_k4_route_fd_needs_opt_in_and_zero_fields),
		T(desc_must_be_what_kvm_knows),
		T(rule_k4_create_check_order),
		T(rule_k5_identity_by_open_file_not_number),
		T(rule_k5_second_route_fd_of_a_vm_eexist),
		T(rule_k6_dead_vm_eio_until_closed),
		T(rule_k7_get_vcpus_order_e2big_flags),
		T(rule_k8_unknown_vcpu_id_enoent),
		T(rule_k9_struct_hygiene_einval),
		T(rule_k10_passthrough_within_shape_einval),
		T(rule_k11_passthrough_needs_reservation_ebusy),
		T(rule_k12_values_kept_across_route_change),
		T(rule_k13_put_saves_and_scrubs),
		T(rule_k14_wrong_cpu_freezes_and_counts),
		T(rule_k15_intercepts_and_estimates),
		T(rule_k16_stats_fd_format),
		T(rule_k17_route_changes_counted_last_writer_wins),
		T(rule_k17_two_threads_on_one_route_fd_are_serialised),
		T(rule_k18_set_cpuid_after_entry_or_dropping_passthrough),
		T(invariants_hold_through_a_guest_lifecycle),
		T(kcmp_unavailable_every_vm_file_is_new),
		T(random_sequence_per_cpu_keeps_invariants),
		TU(random_sequence_uniform_keeps_invariants),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
