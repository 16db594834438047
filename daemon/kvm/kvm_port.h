/* SPDX-License-Identifier: MIT */
/*
 * kvm_port: tells the kernel the plan, vpmu version 2 (docs/kvm-api.md).
 * Backend-neutral: the arbiter's transition lists are applied in order,
 * partition steps to perf's guest reservation and route steps to the route
 * fd of each VM whose VMM handed one over, through one of
 * - ioctl:    the sysfs attribute and the route fds' ioctls;
 * - model:    the same text and buffers handed to the in-process model;
 * - advisory: a stock kernel; the plan is checked and recorded, and the
 *             port says plainly that nothing is enforced.
 * auto picks ioctl when /dev/kvm reports KVM_CAP_VPMU_ROUTES and perf has
 * caps/guest_reserve, else advisory.
 *
 * Enforcement is per VM: a VM registered without a route fd is advisory
 * whatever the backend (its route steps are recorded, never sent), and
 * kvm_port_vm_enforced says why.
 *
 * Whatever the backend, the port refuses a step that would pass a counter
 * through while some CPU the vCPU may run on keeps it for the host, or
 * shrink a reservation under a live pass-through route, so a bad plan
 * fails the same way on every host.
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

/*
 * The perf half's files (docs/kvm-api.md, part 1; sysfs paths are ABI
 * documentation, so they live here, not in the uapi header): attributes of
 * the core PMU "cpu", and a per-CPU file of each CPU device on kernels
 * with VPMU_RESERVE_CAP_PER_CPU.
 */
#define KVM_PORT_SYSFS_PMU_DIR "/sys/bus/event_source/devices/cpu"
#define KVM_PORT_RESERVE_CAPS_ATTR "caps/guest_reserve"       /* decimal VPMU_RESERVE_CAP_* */
#define KVM_PORT_RESERVABLE_ATTR "caps/guest_reservable"      /* hex counter mask */
#define KVM_PORT_RESERVE_ATTR "guest_reserve"                 /* one hex mask, every online CPU */
#define KVM_PORT_SYSFS_CPU_DIR "/sys/devices/system/cpu"
#define KVM_PORT_CPU_RESERVE_ATTR "perf_guest_reserve"        /* <cpu dir>/cpuN/, one hex mask */

enum kvm_backend {
	KVM_BACKEND_AUTO = 0,
	KVM_BACKEND_IOCTL,
	KVM_BACKEND_ADVISORY,
	KVM_BACKEND_MODEL,
};

/* "auto" | "ioctl" | "advisory" | "model" (the --kvm argument). */
int kvm_port_backend_parse(const char *s, enum kvm_backend *out);
const char *kvm_port_backend_name(enum kvm_backend b);

/* Called with every request just before it is issued, in every backend
 * that issues any (tests record them; the daemon may log them). cmd is the
 * ioctl number, or 0 for a write of len bytes of text to a file of the
 * perf half; cpu is then the file's target: -1 the uniform guest_reserve,
 * else that CPU's perf_guest_reserve (-1 for every ioctl). */
typedef void (*kvm_port_trace_fn)(void *ctx, unsigned long cmd, int cpu, const void *arg, size_t len);

struct kvm_port_opts {
	enum kvm_backend backend;
	const char *dev_path;      /* NULL: "/dev/kvm" */
	const char *sysfs_pmu_dir; /* NULL: KVM_PORT_SYSFS_PMU_DIR */
	const char *sysfs_cpu_dir; /* NULL: KVM_PORT_SYSFS_CPU_DIR */
	/* Host counters and CPUs (from the daemon's pmu_desc). */
	unsigned n_cpus;
	unsigned num_gp;
	uint32_t fixed_mask;
	/* Model backend: the model to drive (caller keeps ownership), or NULL
	 * for a private one made with model_reserve_caps; and the credentials
	 * it sees. */
	struct kvm_model *model;
	unsigned model_reserve_caps;
	struct kvm_model_caller caller;
	kvm_port_trace_fn trace;
	void *trace_ctx;
};

struct kvm_port;

/* 0, or -errno with a reason in why. A forced ioctl backend on a kernel
 * without the extension fails here (-EOPNOTSUPP) and sends nothing. */
int kvm_port_open(const struct kvm_port_opts *opts, struct kvm_port **out, char *why, size_t whylen);
/* Closes every route fd the port holds. */
void kvm_port_close(struct kvm_port *p);

enum kvm_backend kvm_port_backend(const struct kvm_port *p);   /* never AUTO */
bool kvm_port_enforced(const struct kvm_port *p);             /* false: advisory backend */
const char *kvm_port_why(const struct kvm_port *p);           /* why this backend */
/* VPMU_RESERVE_CAP_* of the kernel (model: the model's; advisory: 0). The
 * broker plans a uniform reservation when PER_CPU is missing. */
unsigned kvm_port_reserve_caps(const struct kvm_port *p);
/* The counters a reservation may name, PERF_GLOBAL_CTRL layout: ioctl,
 * the kernel's caps/guest_reservable; model, the model's; advisory, the
 * host's general counters and its fixed counters 0..2 (those KVM can give
 * a guest). The broker refuses leases beyond it. */
uint64_t kvm_port_reservable(const struct kvm_port *p);

/* A VM as the daemon knows it. */
struct kvm_port_vm {
	uint64_t vm_id;            /* consumer id (transition.vm_id) */
	pid_t vmm_pid;
	int vmm_pidfd;             /* >= 0: duplicated by the port; -1: port opens one */
	/* The route fd the VMM handed over (taken over by the port on
	 * success, left to the caller on failure), or -1: advisory VM. With
	 * the model backend it is the VMM's VM file, from which the port
	 * makes the model's route fd (simulating KVM_CREATE_VPMU_ROUTE_FD). */
	int route_fd;
	unsigned n_vcpus;          /* the lease's vCPUs 0..n_vcpus-1 */
	const pid_t *vcpu_tids;    /* n_vcpus entries, 0 = unknown; or NULL */
	/* Model only, what KVM would know from the VMM (simulated): the vCPU
	 * ids in creation order (n_vcpus entries; NULL: 0..n-1) and the
	 * guest's CPUID shape, PERF_GLOBAL_CTRL layout. */
	const uint32_t *vcpu_ids;
	uint64_t shape;
	/* Model only: the shape the VMM's simulated KVM_SET_CPUID2 gave the
	 * guest, when it differs from the lease's (0: the lease's). On a
	 * real kernel the port reads it and refuses a lease that differs. */
	uint64_t model_cpuid_shape;            /* 0: the host's counters a guest can have */
};

/*
 * Registers the VM. With a route fd: checks it is one (-ENOTTY: "not a
 * route fd"; -EBADF), reads the vCPU ids (lease vCPU i is the i-th vCPU
 * created; -EINVAL when the VM has fewer), their shapes and routes. Without
 * one: the VM is advisory. -EEXIST if vm_id is registered or the route fd
 * names a VM already registered, -ESRCH VMM gone, -EIO VM dead.
 */
int kvm_port_register_vm(struct kvm_port *p, const struct kvm_port_vm *vm, char *why, size_t whylen);
/* D1: what the ioctl backend checks before its first ioctl on a handed
 * fd, from the fd's /proc/self/fd link: 0 for a route fd (anon inode
 * "kvm-vpmu-route"); -ENOTTY for anything else, *why saying what it is
 * ("a KVM VM fd, not a route fd: ..." for a VM fd, on which the kernel
 * would answer our ioctls EIO since we did not create the VM; else "not a
 * route fd"); -EBADF if fd is not open. The model backend takes the VM
 * file instead (simulation). */
int kvm_port_check_route_fd(int fd, const char **why);
/* Closes the VM's route fd. */
int kvm_port_unregister_vm(struct kvm_port *p, uint64_t vm_id);

/* true when the VM's routes reach a kernel (or the model); otherwise why
 * (if not NULL) says why not, for operators. false for an unknown VM. */
bool kvm_port_vm_enforced(const struct kvm_port *p, uint64_t vm_id, const char **why);
/* The shape of a registered VM's vCPU (PERF_GLOBAL_CTRL layout): the
 * kernel's for an enforced VM, else the one given at registration. */
int kvm_port_vcpu_shape(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu, uint64_t *shape);

/* The CPUs vCPU vcpu of vm_id may run on, as its lease declares them (a
 * list of CPU numbers, any order; NULL or none: fall back to the thread's
 * affinity, else every CPU). -ENOENT unknown VM, -EINVAL vCPU or a CPU out
 * of range. */
int kvm_port_set_vcpu_cpus(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, const unsigned *cpus,
			   size_t n_cpus);

struct kvm_apply_result {
	size_t applied;            /* steps applied, a prefix of the list */
	int error;                 /* 0, or -errno of the first failure */
	size_t failed;             /* index of the failing step when error != 0 */
	char why[192];             /* the failing step: numbers and an errno in words */
};

/*
 * Applies t[0..n) in order and stops at the first failure. A malformed list
 * (bad kind, phase, route value, unknown VM/vCPU/CPU, phase 2 before phase
 * 1) is refused before anything is applied. Route steps of advisory VMs
 * are recorded. Consecutive partition steps with equal masks go in one
 * write. Returns res->error.
 */
int kvm_port_apply(struct kvm_port *p, const struct transition *t, size_t n,
		   struct kvm_apply_result *res);

/* What the port believes is applied (or, advisory, planned). */
int kvm_port_reservation(const struct kvm_port *p, unsigned cpu, uint64_t *mask);
int kvm_port_passthrough(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu, uint64_t *mask);

/* The kernel's vpmu statistics of one vCPU, read from its binary stats fd
 * (KVM_VPMU_GET_VCPU_STATS_FD); -EOPNOTSUPP for an advisory VM, -EIO for a
 * dead one, -ENOENT unknown VM, -EINVAL vCPU out of range, -ENODATA when
 * the stats fd lacks one of the VPMU_STAT_* names. */
struct kvm_port_vcpu_stats {
	uint64_t frozen_entries;
	uint64_t msr_exits;
	uint64_t estimated_reads;
	uint64_t route_changes;
};
int kvm_port_vcpu_stats(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, struct kvm_port_vcpu_stats *out);

/* The parser behind it, for any binary stats fd in the format of
 * KVM_GET_STATS_FD (struct kvm_stats_header, kvm_stats_desc; linux/kvm.h):
 * values[i] = the first u64 of the statistic named names[i]. 0 when every
 * name was found, -ENODATA when some was not (its value 0), -EPROTO for a
 * malformed fd, -errno for a failed read. */
int kvm_port_stats_read(int stats_fd, const char *const *names, size_t n_names, uint64_t *values);

/* Status for operators, snprintf semantics. */
int kvm_port_report(const struct kvm_port *p, char *buf, size_t len);

/* Encoding: exactly what the kernel receives. The text of one reservation
 * file, "0x%016llx\n" (snprintf semantics), and a route step's struct.
 * -EINVAL for a transition of the wrong kind or a route the extension has
 * no word for. */
int kvm_port_encode_reserve(uint64_t mask, char *buf, size_t len);
int kvm_port_encode_routes(const struct transition *t, uint32_t vcpu_id, struct kvm_vpmu_routes *out);
/* A transition's masks in PERF_GLOBAL_CTRL layout. */
uint64_t kvm_port_partition_mask(const struct transition *t);
uint64_t kvm_port_passthrough_mask(const struct transition *t);

#endif
