/* SPDX-License-Identifier: MIT */
/*
 * kvm_model: an in-process model of the kernel side of the vpmu KVM
 * extension (include/linux/vpmu_kvm.h, docs/kvm-api.md). Its entry point
 * takes (cmd, arg) exactly as the kernel's /dev/kvm ioctl handler would, so
 * the buffers the ioctl backend builds can be fed to it unchanged.
 *
 * VMs are real: a VM is named by (pidfd, fd number) and the model checks,
 * through /proc, that the process is alive and the fd is a KVM VM. What the
 * model simulates is the PMU: per-CPU physical counter values, per-vCPU
 * saved guest values, and the guest activity that feeds the statistics.
 * Nothing it reports is a measurement.
 */
#ifndef VPMU_KVM_MODEL_H
#define VPMU_KVM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/vpmu_kvm.h>

/* The caller's credentials, as the kernel would see them. */
struct kvm_model_caller {
	bool cap_sys_admin;
};

struct kvm_model_opts {
	unsigned n_cpus;       /* physical CPUs 0..n_cpus-1, <= KVM_VPMU_MAX_CPUS */
	unsigned num_gp;       /* host general counters, <= KVM_VPMU_MAX_GP */
	uint32_t fixed_mask;   /* host fixed counters */
	const char *procfs_root; /* NULL: "/proc" */
};

struct kvm_model;

int kvm_model_new(const struct kvm_model_opts *opts, struct kvm_model **out);
void kvm_model_free(struct kvm_model *m);

/*
 * The ioctl entry point. Handles KVM_CHECK_EXTENSION (arg is the capability
 * number cast to a pointer, as the kernel receives it; returns 1 for
 * KVM_CAP_VPMU_PARTITION, 0 otherwise) and the KVM_VPMU_* ioctls (0 or
 * -errno). Unknown commands: -ENOTTY.
 */
long kvm_model_ioctl(struct kvm_model *m, const struct kvm_model_caller *who,
		     unsigned long cmd, void *arg);

/* --- Simulated guest and PMU activity (tests and demos) --- */

/* Adds delta to physical counter idx on cpu (fixed: a fixed counter). */
int kvm_model_count(struct kvm_model *m, unsigned cpu, bool fixed, unsigned idx, uint64_t delta);
int kvm_model_phys_value(const struct kvm_model *m, unsigned cpu, bool fixed, unsigned idx,
			 uint64_t *out);
/* Adds delta to the saved value of a vCPU's guest PMC. */
int kvm_model_guest_count(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			  bool fixed, unsigned idx, uint64_t delta);
int kvm_model_guest_value(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			  bool fixed, unsigned idx, uint64_t *out);
/* A VM entry of vcpu on cpu: every pass-through PMC that cannot pass
 * through there falls back to multiplexing; counts one route fallback per
 * such entry. Returns the number of PMCs that fell back, or -errno. */
int kvm_model_guest_enter(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu, unsigned cpu);
/* A guest access to a PMC's MSRs: intercepted unless the PMC passes
 * through. Returns 1 if it was emulated, 0 if not, or -errno. */
int kvm_model_guest_msr_access(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			       bool fixed, unsigned idx);

/*
 * The invariant the kernel side guarantees: every pass-through PMC of every
 * live vCPU is in the guest partition of every CPU the vCPU may run on, so
 * no counter is both a host counter and a passed-through one. 0 when it
 * holds, -EUCLEAN with the first violation in why otherwise.
 */
int kvm_model_check(struct kvm_model *m, char *why, size_t whylen);

/* Number of VMs the model tracks (dead VMMs are dropped lazily). */
size_t kvm_model_vm_count(struct kvm_model *m);

#endif
