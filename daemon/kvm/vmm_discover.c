/* SPDX-License-Identifier: MIT */
#include "kvm/vmm_discover.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto/cleanup.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)
#define _cleanup_closedir_ _cleanup_(closedirp)

static const char *proc_root(const char *r) { return r ? r : "/proc"; }

/* Parses a non-negative decimal that must fill the whole string: /proc
 * names and file contents are outside input. */
static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int vmm_discover_fd_kind(const char *procfs_root, pid_t pid, int fd, unsigned *vcpu_id)
{
	/* "anon_inode:kvm-vcpu:N": a longer target is something else anyway */
	char target[128];
	if (pid <= 0 || fd < 0)
		return -EBADF;
	_cleanup_free_ char *path = alloc_printf("%s/%d/fd/%d", proc_root(procfs_root), (int)pid, fd);
	if (!path)
		return -ENOMEM;
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	target[n] = '\0';
	if (strcmp(target, "anon_inode:kvm-vm") == 0)
		return VMM_FD_KVM_VM;
	static const char vcpu[] = "anon_inode:kvm-vcpu:";
	if (strncmp(target, vcpu, sizeof(vcpu) - 1) == 0) {
		unsigned long id;
		if (parse_uint(target + sizeof(vcpu) - 1, UINT_MAX, &id) < 0)
			return VMM_FD_OTHER;
		if (vcpu_id)
			*vcpu_id = (unsigned)id;
		return VMM_FD_KVM_VCPU;
	}
	return VMM_FD_OTHER;
}

int vmm_discover_pidfd_open(pid_t pid)
{
	if (pid <= 0)
		return -ESRCH;
	/* Raw syscall: glibc gained the wrapper only in 2.36. */
	long fd = syscall(SYS_pidfd_open, pid, 0);
	return fd < 0 ? -errno : (int)fd;
}

int vmm_discover_pidfd_alive(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int r = poll(&p, 1, 0);
	if (r < 0)
		return -errno;
	if (p.revents & POLLNVAL)
		return -EBADF;
	/* A pidfd becomes readable when the process exits. */
	return (p.revents & (POLLIN | POLLHUP)) ? 0 : 1;
}

int vmm_discover_pidfd_pid(int pidfd)
{
	/* fdinfo lines are "key:\tvalue" of a few dozen bytes */
	char path[64], line[256];
	if (pidfd < 0)
		return -EBADF;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return -EBADF;
	long pid = 0;
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Pid:", 4) == 0) {
			char *end;
			errno = 0;
			pid = strtol(line + 4, &end, 10);
			found = errno == 0 && end != line + 4;
			break;
		}
	}
	/* Only pidfds carry a Pid: line in their fdinfo. */
	if (!found)
		return -EBADF;
	if (pid <= 0 || pid > INT_MAX)
		return -ESRCH;  /* the kernel prints -1 once the process is gone */
	int alive = vmm_discover_pidfd_alive(pidfd);
	if (alive < 0)
		return alive;
	return alive ? (int)pid : -ESRCH;
}

static int cmp_vcpu(const void *a, const void *b)
{
	const struct vmm_vcpu *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* debugfs names a VM directory PID-FD, and each vCPU's pid file holds the
 * thread that last ran KVM_RUN (0 before the first run). */
static pid_t tid_from_debugfs(const char *root, pid_t pid, int vm_fd, unsigned id)
{
	char buf[32]; /* a decimal pid */
	_cleanup_free_ char *path = alloc_printf("%s/kvm/%d-%d/vcpu%u/pid", root, (int)pid, vm_fd, id);
	if (!path)
		return 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	unsigned long v;
	if (parse_uint(buf, INT_MAX, &v) < 0)
		return 0;
	return (pid_t)v;
}

/* QEMU names its vCPU threads "CPU N/KVM"; other VMMs may not, in which
 * case the thread stays unknown rather than guessed. */
static void tids_from_comm(const char *procfs, pid_t pid, struct vmm_vm *vm)
{
	_cleanup_free_ char *path = alloc_printf("%s/%d/task", procfs, (int)pid);
	if (!path)
		return;
	_cleanup_closedir_ DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned long tid;
		if (parse_uint(e->d_name, INT_MAX, &tid) < 0)
			continue;
		char comm[64]; /* TASK_COMM_LEN is 16 */
		_cleanup_free_ char *cpath = alloc_printf("%s/%lu/comm", path, tid);
		if (!cpath)
			continue;
		_cleanup_close_ int fd = open(cpath, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, comm, sizeof(comm) - 1);
		if (n <= 0)
			continue;
		comm[n] = '\0';
		comm[strcspn(comm, "\n")] = '\0';
		unsigned id;
		char tail[8];
		if (sscanf(comm, "CPU %u/KV%1[M]%1s", &id, tail, tail + 2) != 2)
			continue;
		for (unsigned i = 0; i < vm->n_vcpus; i++) {
			if (vm->vcpus[i].id == id && vm->vcpus[i].tid == 0) {
				vm->vcpus[i].tid = (pid_t)tid;
				vm->vcpus[i].tid_source = VMM_TID_COMM;
			}
		}
	}
}

/* Up to this many distinct VM files are told apart; more count as more VMs
 * (the answer is "choose one by fd" either way). */
#define VMM_MAX_VM_FILES 16

/* Whether two fds of pid are one open file. kcmp needs ptrace rights on
 * pid (vpmud is root) and a kernel with it; without it, or on a procfs
 * other than the live one (tests), every number counts as its own file. */
static bool same_file(const char *procfs, pid_t pid, int a, int b)
{
	if (strcmp(procfs, "/proc"))
		return false;
	return syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b) == 0;
}

int vmm_discover(pid_t pid, const struct vmm_discover_opts *opts, struct vmm_vm *out,
		 char *why, size_t whylen)
{
	const char *procfs = proc_root(opts ? opts->procfs_root : NULL);
	const char *debugfs = opts && opts->debugfs_root ? opts->debugfs_root : "/sys/kernel/debug";
	int want_fd = opts ? opts->vm_fd : -1;
	int r;

	memset(out, 0, sizeof(*out));
	out->pidfd = -1;
	out->vm_fd = -1;
	if (why && whylen)
		why[0] = '\0';

	/* The pidfd comes first: whatever we read from /proc afterwards is only
	 * trusted if the process is still the one the pidfd names at the end. */
	_cleanup_close_ int pidfd = vmm_discover_pidfd_open(pid);
	if (pidfd < 0) {
		snprintf(why, whylen, "pid %d: pidfd_open: %s", (int)pid, strerror(-pidfd));
		return pidfd == -EINVAL ? -ESRCH : pidfd;
	}

	_cleanup_free_ char *path = alloc_printf("%s/%d/fd", procfs, (int)pid);
	if (!path)
		return -ENOMEM;
	_cleanup_closedir_ DIR *d = opendir(path);
	if (!d) {
		r = -errno;
		snprintf(why, whylen, "%s: %s", path, strerror(-r));
		return r == -ENOENT ? -ESRCH : r;
	}
	size_t cap = 8;
	_cleanup_free_ struct vmm_vcpu *vcpus = calloc(cap, sizeof(*vcpus));
	unsigned n_vcpus = 0, n_vms = 0, n_vm_files = 0;
	int vm_fd = -1;
	int vm_files[VMM_MAX_VM_FILES];
	if (!vcpus)
		return -ENOMEM;
	struct dirent *e;
	while ((e = readdir(d))) {
		unsigned long fdnum;
		if (parse_uint(e->d_name, INT_MAX, &fdnum) < 0)
			continue;
		unsigned id = 0;
		int kind = vmm_discover_fd_kind(procfs, pid, (int)fdnum, &id);
		if (kind == VMM_FD_KVM_VM) {
			/* A VMM may hold its VM file under several numbers (a
			 * dup kept to hand vpmud as a route fd): count files,
			 * not numbers. */
			int first = -1;
			for (unsigned k = 0; k < n_vm_files && first < 0; k++)
				if (same_file(procfs, pid, vm_files[k], (int)fdnum))
					first = vm_files[k];
			if (first < 0 && n_vm_files < VMM_MAX_VM_FILES)
				vm_files[n_vm_files++] = (int)fdnum;
			if (first < 0)
				n_vms++;
			if (want_fd < 0 ? vm_fd < 0 : (int)fdnum == want_fd)
				vm_fd = (int)fdnum;
		} else if (kind == VMM_FD_KVM_VCPU) {
			if (n_vcpus >= VMM_MAX_VCPUS) {
				snprintf(why, whylen, "pid %d holds more than %d vCPU fds", (int)pid, VMM_MAX_VCPUS);
				return -E2BIG;
			}
			if (n_vcpus == cap) {
				struct vmm_vcpu *nv = reallocarray(vcpus, cap * 2, sizeof(*vcpus));
				if (!nv)
					return -ENOMEM;
				vcpus = nv;
				cap *= 2;
			}
			vcpus[n_vcpus++] = (struct vmm_vcpu){ .id = id, .fd = (int)fdnum };
		}
	}
	if (n_vms == 0) {
		snprintf(why, whylen, "pid %d holds no anon_inode:kvm-vm fd", (int)pid);
		return -ENOENT;
	}
	if (want_fd < 0 && n_vms > 1) {
		/* vCPU fds do not say which VM they belong to, so a VMM with
		 * several VMs needs the caller to choose. */
		snprintf(why, whylen, "pid %d holds %u KVM VMs; choose one by fd", (int)pid, n_vms);
		return -ENOTUNIQ;
	}
	if (vm_fd < 0) {
		snprintf(why, whylen, "pid %d: fd %d is not a KVM VM", (int)pid, want_fd);
		return -ENOENT;
	}
	qsort(vcpus, n_vcpus, sizeof(*vcpus), cmp_vcpu);
	out->pid = pid;
	out->vm_fd = vm_fd;
	out->n_vcpus = n_vcpus;
	out->vcpus = vcpus;
	for (unsigned i = 0; i < n_vcpus; i++) {
		pid_t tid = tid_from_debugfs(debugfs, pid, vm_fd, vcpus[i].id);
		if (tid > 0) {
			vcpus[i].tid = tid;
			vcpus[i].tid_source = VMM_TID_DEBUGFS;
		}
	}
	tids_from_comm(procfs, pid, out);

	int alive = vmm_discover_pidfd_alive(pidfd);
	if (alive <= 0) {
		snprintf(why, whylen, "pid %d exited during discovery", (int)pid);
		memset(out, 0, sizeof(*out));
		out->pidfd = out->vm_fd = -1;
		return -ESRCH;
	}
	out->vcpus = TAKE_PTR(vcpus);
	out->pidfd = TAKE_FD(pidfd);
	return 0;
}

void vmm_discover_release(struct vmm_vm *vm)
{
	if (!vm)
		return;
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->n_vcpus = 0;
	vm->pidfd = -1;
}
