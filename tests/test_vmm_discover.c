/* SPDX-License-Identifier: MIT */
/* VM discovery from a VMM pid: a real child that creates a VM and vCPUs
 * through /dev/kvm, and a real QEMU. Skipped where /dev/kvm or QEMU is
 * absent. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <time.h>

#include "kvm_child.h"
#include "kvm/kvm_port.h"
#include "kvm/vmm_discover.h"

static void test_fd_kind_and_pidfd(void **state)
{
	(void)state;
	int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
	assert_true(nul >= 0);
	assert_int_equal(vmm_discover_fd_kind(NULL, getpid(), nul, NULL), VMM_FD_OTHER);
	assert_int_equal(vmm_discover_fd_kind(NULL, getpid(), 4000, NULL), -ENOENT);
	assert_int_equal(vmm_discover_fd_kind(NULL, 0, 0, NULL), -EBADF);
	assert_int_equal(vmm_discover_pidfd_pid(nul), -EBADF);
	close(nul);
	int self = vmm_discover_pidfd_open(getpid());
	assert_true(self >= 0);
	assert_int_equal(vmm_discover_pidfd_pid(self), getpid());
	assert_int_equal(vmm_discover_pidfd_alive(self), 1);
	close(self);
	pid_t c = fork();
	if (c == 0)
		_exit(0);
	int pfd = vmm_discover_pidfd_open(c);
	assert_true(pfd >= 0);
	waitpid(c, NULL, 0);
	assert_int_equal(vmm_discover_pidfd_alive(pfd), 0);
	assert_int_equal(vmm_discover_pidfd_pid(pfd), -ESRCH);
	close(pfd);
	struct vmm_vm vm;
	char why[256];
	assert_int_equal(vmm_discover(c, NULL, &vm, why, sizeof(why)), -ESRCH);
	assert_int_equal(vm.pidfd, -1);
}

static void test_process_without_vm(void **state)
{
	(void)state;
	struct vmm_vm vm;
	char why[256];
	assert_int_equal(vmm_discover(getpid(), NULL, &vm, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "no anon_inode:kvm-vm"));
}

static void test_child_vm(void **state)
{
	(void)state;
	if (!kvm_child_available())
		skip();
	struct kvm_child c;
	assert_int_equal(kvm_child_start(&c, 1, 3, true), 0);
	struct vmm_vm vm;
	char why[256];
	int r = vmm_discover(c.pid, NULL, &vm, why, sizeof(why));
	if (r != 0)
		fail_msg("%s", why);
	assert_int_equal(vm.pid, c.pid);
	assert_int_equal(vm.vm_fd, c.vm_fd[0]);
	assert_int_equal(vm.n_vcpus, 3);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(vm.vcpus[i].id, i);
		assert_int_equal(vm.vcpus[i].fd, c.vcpu_fd[i]);
		assert_int_equal(vm.vcpus[i].tid, c.tid[i]);
		assert_int_equal(vm.vcpus[i].tid_source, VMM_TID_COMM);
	}
	assert_int_equal(vmm_discover_pidfd_pid(vm.pidfd), c.pid);
	assert_int_equal(vmm_discover_fd_kind(NULL, c.pid, c.dev_fd, NULL), VMM_FD_OTHER);
	unsigned id = 99;
	assert_int_equal(vmm_discover_fd_kind(NULL, c.pid, c.vcpu_fd[2], &id), VMM_FD_KVM_VCPU);
	assert_int_equal(id, 2);
	/* The lease's pidfd sees the VMM go. */
	kvm_child_stop(&c);
	assert_int_equal(vmm_discover_pidfd_alive(vm.pidfd), 0);
	vmm_discover_release(&vm);
}

/* A VMM that keeps a dup of its VM fd (to hand one to vpmud) holds one VM,
 * not two; a second KVM_CREATE_VM is a second VM. */
static void test_dup_of_vm_fd_is_one_vm(void **state)
{
	(void)state;
	if (!kvm_child_available())
		skip();
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	assert_true(kvm >= 0);
	int vm1 = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm1 >= 0);
	int dup1 = fcntl(vm1, F_DUPFD_CLOEXEC, 3);
	assert_true(dup1 >= 0);
	struct vmm_vm vm;
	char why[256];
	int r = vmm_discover(getpid(), NULL, &vm, why, sizeof(why));
	if (r != 0)
		fail_msg("a VM fd and its dup: %s", why);
	assert_true(vm.vm_fd == vm1 || vm.vm_fd == dup1);
	vmm_discover_release(&vm);
	int vm2 = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm2 >= 0);
	assert_int_equal(vmm_discover(getpid(), NULL, &vm, why, sizeof(why)), -ENOTUNIQ);
	assert_non_null(strstr(why, "2 KVM VMs"));
	close(vm2);
	close(dup1);
	close(vm1);
	close(kvm);
}

static void test_child_unnamed_threads(void **state)
{
	(void)state;
	if (!kvm_child_available())
		skip();
	struct kvm_child c;
	assert_int_equal(kvm_child_start(&c, 1, 2, false), 0);
	struct vmm_vm vm;
	char why[256];
	assert_int_equal(vmm_discover(c.pid, NULL, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.n_vcpus, 2);
	/* Without QEMU's thread names (and no debugfs), unknown, not guessed. */
	assert_int_equal(vm.vcpus[0].tid, 0);
	assert_int_equal(vm.vcpus[0].tid_source, VMM_TID_NONE);
	vmm_discover_release(&vm);
	kvm_child_stop(&c);
}

static void test_child_two_vms(void **state)
{
	(void)state;
	if (!kvm_child_available())
		skip();
	struct kvm_child c;
	assert_int_equal(kvm_child_start(&c, 2, 1, true), 0);
	struct vmm_vm vm;
	char why[256];
	assert_int_equal(vmm_discover(c.pid, NULL, &vm, why, sizeof(why)), -ENOTUNIQ);
	struct vmm_discover_opts o = { .vm_fd = c.vm_fd[1] };
	assert_int_equal(vmm_discover(c.pid, &o, &vm, why, sizeof(why)), 0);
	assert_int_equal(vm.vm_fd, c.vm_fd[1]);
	vmm_discover_release(&vm);
	o.vm_fd = c.dev_fd;
	assert_int_equal(vmm_discover(c.pid, &o, &vm, why, sizeof(why)), -ENOENT);
	kvm_child_stop(&c);
}

static const char *find_qemu(void)
{
	static const char *paths[] = { "/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64" };
	for (size_t i = 0; i < 2; i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

/* A real QEMU, stopped before its first instruction (-S). QEMU names its
 * vCPU threads "CPU N/KVM" only with debug-threads=on, which libvirt always
 * passes; without it discovery finds the vCPUs but not their threads. */
static void test_qemu(void **state)
{
	(void)state;
	const char *qemu = find_qemu();
	if (!qemu || !kvm_child_available())
		skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		execl(qemu, qemu, "-enable-kvm", "-cpu", "qemu64", "-smp", "2", "-m", "64",
		      "-nographic", "-nodefaults", "-display", "none", "-S",
		      "-name", "vpmu-test,debug-threads=on", (char *)NULL);
		_exit(127);
	}
	struct vmm_vm vm = { .pidfd = -1 };
	char why[256] = "";
	int r = -1;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	/* QEMU creates the VM, then the vCPU threads; wait for both. */
	for (;;) {
		r = vmm_discover(pid, NULL, &vm, why, sizeof(why));
		if (r == 0 && vm.n_vcpus == 2 && vm.vcpus[0].tid && vm.vcpus[1].tid)
			break;
		if (r == 0)
			vmm_discover_release(&vm);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 30 || waitpid(pid, NULL, WNOHANG) == pid)
			break;
		usleep(100 * 1000);
	}
	if (r != 0 || vm.n_vcpus != 2 || !vm.vcpus[0].tid) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		fail_msg("QEMU discovery: r=%d: %s", r, why);
	}
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(vm.vcpus[i].id, i);
		assert_int_not_equal(vm.vcpus[i].tid, pid);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)pid, (int)vm.vcpus[i].tid);
		assert_int_equal(access(path, F_OK), 0);
	}

	/* The discovered VM registers with the port and takes a plan (model
	 * backend: this kernel has no extension). QEMU hands no route fd
	 * today; a patched one would hand its VM file, which the test takes
	 * itself with pidfd_getfd to stand in for it. */
	struct kvm_port_opts po = { .backend = KVM_BACKEND_MODEL, .n_cpus = 2, .num_gp = 8,
				    .fixed_mask = 0x7, .caller = { .cap_sys_admin = true } };
	struct kvm_port *port;
	assert_int_equal(kvm_port_open(&po, &port, why, sizeof(why)), 0);
	pid_t tids[2] = { vm.vcpus[0].tid, vm.vcpus[1].tid };
	uint32_t ids[2] = { vm.vcpus[0].id, vm.vcpus[1].id };
	int route_fd = (int)syscall(SYS_pidfd_getfd, vm.pidfd, vm.vm_fd, 0);
	if (route_fd < 0)
		fail_msg("pidfd_getfd of QEMU's VM fd: %s", strerror(errno));
	struct kvm_port_vm pv = { .vm_id = 1, .vmm_pid = pid, .vmm_pidfd = vm.pidfd, .route_fd = route_fd,
				  .n_vcpus = 2, .vcpu_tids = tids, .vcpu_ids = ids,
				  .shape = 0xffULL | (0x7ULL << 32) };
	if (kvm_port_register_vm(port, &pv, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	const char *routes_why = NULL;
	assert_true(kvm_port_vm_enforced(port, 1, &routes_why));
	struct transition plan[3] = {
		{ .kind = TRANSITION_PARTITION, .phase = 2, .cpu = 0, .guest_gp_mask = 1 },
		{ .kind = TRANSITION_PARTITION, .phase = 2, .cpu = 1, .guest_gp_mask = 1 },
		{ .kind = TRANSITION_ROUTES, .phase = 2, .vm_id = 1, .vcpu = 1 },
	};
	/* in the guest's shape a PMC passes through or is multiplexed */
	for (unsigned i = 0; i < 8; i++)
		plan[2].gp_route[i] = i ? PMC_ROUTE_MULTIPLEXED : PMC_ROUTE_PASSTHROUGH;
	for (unsigned i = 0; i < 3; i++)
		plan[2].fixed_route[i] = PMC_ROUTE_MULTIPLEXED;
	struct kvm_apply_result res;
	if (kvm_port_apply(port, plan, 3, &res) != 0)
		fail_msg("%s", res.why);
	uint64_t pt = 0;
	assert_int_equal(kvm_port_passthrough(port, 1, 1, &pt), 0);
	assert_int_equal(pt, 1);
	kvm_port_close(port);

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	assert_int_equal(vmm_discover_pidfd_alive(vm.pidfd), 0);
	vmm_discover_release(&vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_kind_and_pidfd),
		cmocka_unit_test(test_process_without_vm),
		cmocka_unit_test(test_child_vm),
		cmocka_unit_test(test_dup_of_vm_fd_is_one_vm),
		cmocka_unit_test(test_child_unnamed_threads),
		cmocka_unit_test(test_child_two_vms),
		cmocka_unit_test(test_qemu),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
