/* SPDX-License-Identifier: MIT */
/*
 * vmm_discover: find the KVM VM a VMM process holds, from its pid: the VM
 * fd and vCPU fds in /proc/PID/fd (anon_inode:kvm-vm, anon_inode:kvm-vcpu:N),
 * the vCPU thread ids, and a pidfd held for the lease so that the pid cannot
 * be reused under us. Also the /proc and pidfd helpers the kvm model and
 * port use to name a VM by (pidfd, fd number).
 */
#ifndef VPMU_VMM_DISCOVER_H
#define VPMU_VMM_DISCOVER_H

#include <stddef.h>
#include <sys/types.h>

#define VMM_MAX_VCPUS 4096     /* KVM_MAX_VCPUS on x86 */

enum vmm_discover_fd_kind {
	VMM_FD_OTHER = 0,
	VMM_FD_KVM_VM = 1,
	VMM_FD_KVM_VCPU = 2,
};

/* What fd number fd of process pid is: a kind (>= 0, vcpu id in *vcpu_id
 * for a vCPU) or -errno (-ENOENT: no such fd or process). */
int vmm_discover_fd_kind(const char *procfs_root, pid_t pid, int fd, unsigned *vcpu_id);

/* pidfd helpers. vmm_discover_pidfd_pid: the pid a pidfd names, -EBADF if fd is not
 * a pidfd, -ESRCH if the process has exited. */
int vmm_discover_pidfd_open(pid_t pid);
int vmm_discover_pidfd_pid(int pidfd);
/* 1 alive, 0 exited, -errno. */
int vmm_discover_pidfd_alive(int pidfd);

enum vmm_tid_source {
	VMM_TID_NONE = 0,      /* thread ids unknown */
	VMM_TID_DEBUGFS,       /* /sys/kernel/debug/kvm/PID-FD/vcpuN/pid */
	VMM_TID_COMM,          /* thread named "CPU N/KVM" (QEMU convention) */
};

struct vmm_vcpu {
	unsigned id;           /* vCPU id (the N of kvm-vcpu:N) */
	int fd;                /* fd number in the VMM */
	pid_t tid;             /* 0 when unknown */
	enum vmm_tid_source tid_source;
};

struct vmm_vm {
	pid_t pid;
	int pidfd;             /* owned; closed by vmm_discover_release */
	int vm_fd;             /* fd number in the VMM */
	unsigned n_vcpus;
	struct vmm_vcpu *vcpus; /* sorted by id; owned */
};

struct vmm_discover_opts {
	const char *procfs_root;   /* NULL: "/proc" */
	const char *debugfs_root;  /* NULL: "/sys/kernel/debug" */
	int vm_fd;                 /* -1: the process must hold exactly one VM */
};

/* 0, or -errno with a reason in why: -ESRCH (no such process / it exited),
 * -ENOENT (no KVM VM), -ENOTUNIQ (several VMs and none chosen). */
int vmm_discover(pid_t pid, const struct vmm_discover_opts *opts, struct vmm_vm *out,
		 char *why, size_t whylen);
void vmm_discover_release(struct vmm_vm *vm);

#endif
