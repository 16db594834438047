/* SPDX-License-Identifier: MIT */
/*
 * kvm_port: tells KVM the plan. Backend-neutral: VMs are registered once,
 * then the arbiter's transition lists are applied in order through one of
 * - ioctl:    the vpmu extension's system ioctls on /dev/kvm;
 * - model:    the same buffers handed to the in-process kernel model;
 * - advisory: a stock kernel; the plan is checked and recorded, and the
 *             port says plainly that guest routes are not enforced.
 * auto picks ioctl when /dev/kvm reports KVM_CAP_VPMU_PARTITION, else advisory.
 *
 * Whatever the backend, the port refuses a step that would pass a counter
 * through while some CPU the vCPU may run on keeps it for the host, or
 * shrink a partition under a live pass-through route, so a bad plan fails
 * the same way on every host.
 */
#ifndef VPMU_KVM_PORT_H
#define VPMU_KVM_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/vpmu_kvm.h>

#include "kvm/kvm_model.h"
#include "arbiter/transition.h"

enum kvm_backend {
	KVM_BACKEND_AUTO = 0,
	KVM_BACKEND_IOCTL,
	KVM_BACKEND_ADVISORY,
	KVM_BACKEND_MODEL,
};

/* "auto" | "ioctl" | "advisory" | "model" (the --kvm argument). */
int kvm_port_backend_parse(const char *s, enum kvm_backend *out);
const char *kvm_port_backend_name(enum kvm_backend b);

/* Called with every buffer just before it is issued, in every backend that
 * issues any (tests record them; the daemon may log them). */
typedef void (*kvm_port_trace_fn)(void *ctx, unsigned long cmd, const void *arg, size_t len);

struct kvm_port_opts {
	enum kvm_backend backend;
	const char *dev_path;      /* NULL: "/dev/kvm" */
	/* Host counters and CPUs (from the daemon's pmu_desc). */
	unsigned n_cpus;
	unsigned num_gp;
	uint32_t fixed_mask;
	/* Model backend: the model to drive (caller keeps ownership), or NULL
	 * for a private one; and the credentials it sees. */
	struct kvm_model *model;
	struct kvm_model_caller caller;
	kvm_port_trace_fn trace;
	void *trace_ctx;
};

struct kvm_port;

/* 0, or -errno with a reason in why. A forced ioctl backend on a kernel
 * without the extension fails here with the kernel's answer (-ENOTTY or
 * -EINVAL on stock kernels). */
int kvm_port_open(const struct kvm_port_opts *opts, struct kvm_port **out, char *why, size_t whylen);
void kvm_port_close(struct kvm_port *p);

enum kvm_backend kvm_port_backend(const struct kvm_port *p);   /* never AUTO */
bool kvm_port_enforced(const struct kvm_port *p);             /* false: advisory */
const char *kvm_port_why(const struct kvm_port *p);           /* why this backend */

/* A VM as the daemon knows it: consumer id (transition.vm_id), the VMM,
 * the VM fd number in the VMM, and its vCPUs. */
struct kvm_port_vm {
	uint64_t vm_id;
	pid_t vmm_pid;
	int vmm_pidfd;             /* >= 0: duplicated by the port; -1: port opens one */
	int vm_fd;
	unsigned n_vcpus;          /* vCPU ids 0..n_vcpus-1 */
	const pid_t *vcpu_tids;    /* n_vcpus entries, 0 = unknown; or NULL */
};

/* Validates the VM (alive, fd is a KVM VM) and holds a pidfd for it; with
 * ioctl/model, reads the VM's routes and generation. -EEXIST if vm_id is
 * registered, -ESRCH, -EBADF, -EINVAL. */
int kvm_port_register_vm(struct kvm_port *p, const struct kvm_port_vm *vm, char *why, size_t whylen);
int kvm_port_unregister_vm(struct kvm_port *p, uint64_t vm_id);

/* The CPUs vCPU vcpu of vm_id may run on, as its lease declares them
 * (KVM_VPMU_CPU_WORDS words; NULL: fall back to the thread's affinity).
 * -ENOENT unknown VM, -EINVAL vCPU out of range. */
int kvm_port_set_vcpu_cpus(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, const uint64_t *cpus);

struct kvm_apply_result {
	size_t applied;            /* steps applied, a prefix of the list */
	int error;                 /* 0, or -errno of the first failure */
	size_t failed;             /* index of the failing step when error != 0 */
	char why[192];             /* the failing step: numbers and an errno in words */
};

/*
 * Applies t[0..n) in order and stops at the first failure. A malformed list
 * (bad kind, phase, route value, unknown VM/vCPU/CPU, phase 2 before phase
 * 1) is refused before anything is applied. Returns res->error.
 * -ESTALE: someone else wrote since we read; the port re-reads the
 * generation so that a recomputed plan can be applied.
 */
int kvm_port_apply(struct kvm_port *p, const struct transition *t, size_t n,
		   struct kvm_apply_result *res);

/* What the port believes is applied (or, advisory, planned). */
int kvm_port_partition(const struct kvm_port *p, unsigned cpu, uint32_t *gp, uint32_t *fixed);
int kvm_port_routes(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu,
		    uint8_t gp[KVM_VPMU_MAX_GP], uint8_t fixed[KVM_VPMU_MAX_FIXED]);
/* The kernel's per-vCPU statistics; -EOPNOTSUPP in advisory mode. */
int kvm_port_vcpu_stats(struct kvm_port *p, uint64_t vm_id, unsigned vcpu,
			struct kvm_vpmu_vcpu_stats *out);

/* Status for operators, snprintf semantics. */
int kvm_port_report(const struct kvm_port *p, char *buf, size_t len);

/* Encoding: exactly the buffers the kernel receives. allowed is
 * KVM_VPMU_CPU_WORDS words. -EINVAL for a transition of the wrong kind. */
int kvm_port_encode_partition(const struct transition *t, uint64_t generation,
			      struct kvm_vpmu_partition *out);
int kvm_port_encode_routes(const struct transition *t, int pidfd, int vm_fd, uint64_t generation,
			   const uint64_t *allowed, struct kvm_vpmu_routes *out);

#endif
