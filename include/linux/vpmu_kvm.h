/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * vpmu, version 2: a per-counter partition of the x86 core PMU between host
 * perf and KVM guests. Specified in docs/kvm-api.md; this header is its C
 * mirror. Two halves, each where the kernel keeps the state:
 *
 *  - the perf half: which physical counters of a CPU host perf may not use
 *    (the "guest reservation"), a sysfs attribute of the core PMU;
 *  - the KVM half: a VM opts in through KVM_CAP_PMU_CAPABILITY, the VMM
 *    creates a route fd from its VM fd and hands it to a broker, and the
 *    route fd's ioctls say, per vCPU, which guest PMCs pass through.
 *
 * Every counter set is a __u64 in the PERF_GLOBAL_CTRL layout: general
 * counters at bits 0..31, fixed counters at bits 32..47. Bit 48 is
 * PERF_METRICS and never part of a set.
 *
 * PROVISIONAL: no number in this file (capability, ioctl, flag, sysfs name)
 * is allocated upstream. They are chosen so that a stock kernel answers
 * KVM_CHECK_EXTENSION with 0, KVM_ENABLE_CAP with -EINVAL and the ioctls
 * with -ENOTTY.
 */
#ifndef _UAPI_LINUX_VPMU_KVM_H
#define _UAPI_LINUX_VPMU_KVM_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* ------------------------------------------------------------------ layout */

#define VPMU_GP_SHIFT			0
#define VPMU_FIXED_SHIFT		32
#define VPMU_MAX_GP			32
#define VPMU_MAX_FIXED			16
#define VPMU_GP_BIT(i)			(1ULL << (VPMU_GP_SHIFT + (i)))
#define VPMU_FIXED_BIT(i)		(1ULL << (VPMU_FIXED_SHIFT + (i)))
#define VPMU_GP_MASK			0x00000000ffffffffULL
#define VPMU_FIXED_MASK			0x0000ffff00000000ULL
#define VPMU_PERF_METRICS_BIT		(1ULL << 48)

/* ------------------------------------------------------ perf half (sysfs) */
/*
 * Not a KVM interface: perf owns counter allocation. Attributes of the core
 * PMU, one value each (paths and rules in docs/kvm-api.md, part 1):
 *   caps/guest_reserve      VPMU_RESERVE_CAP_* (decimal); absent: no perf half
 *   caps/guest_reservable   counters that may be reserved (hex mask)
 *   guest_reserve           one hex mask for every online CPU
 *   per CPU (VPMU_RESERVE_CAP_PER_CPU only): the CPU device's
 *                           perf_guest_reserve, one hex mask
 * Errors of a write, in check order: EACCES (open: the files are root's),
 * EINVAL (syntax, an offline CPU, a counter not in caps/guest_reservable),
 * EBUSY (pinned host events would no longer fit; a counter a live route
 * passes through would be reserved on no online CPU). A write is all or
 * nothing over the CPUs it names.
 */
#define VPMU_RESERVE_CAP_UNIFORM	(1U << 0)	/* one mask for every CPU */
#define VPMU_RESERVE_CAP_PER_CPU	(1U << 1)	/* masks may differ by CPU */

/* ------------------------------------------------------------- KVM half */

/*
 * KVM_CHECK_EXTENSION: 1 when route fds are supported: the perf half, the
 * mediated vPMU and the host-wide switch kvm_intel.enable_partitioned_pmu
 * (PROVISIONAL; off by default, and then nothing changes for any VM). On a
 * VM fd the answer is for that VM's type (0 for protected-state types).
 * With the switch on, a VM that does not opt in, or cannot (protected
 * state, no in-kernel local APIC), gets no vPMU: a mediated VM that is not
 * partitioned would take the whole PMU from the host.
 */
#define KVM_CAP_VPMU_ROUTES		0x7670	/* PROVISIONAL */

/*
 * Opt-in: KVM_ENABLE_CAP(KVM_CAP_PMU_CAPABILITY) on the VM fd with this flag
 * in args[0], before the first KVM_CREATE_VCPU. Beside KVM_PMU_CAP_DISABLE
 * (bit 0, linux/kvm.h). Refused (EINVAL) together with DISABLE, after a vCPU
 * exists, for VM types with protected state (SEV-ES, SEV-SNP, TDX) and
 * without an in-kernel local APIC. A partitioned vCPU's CPUID leaf 0xA
 * says PMU version 2 at most (KVM_SET_CPUID2: EINVAL otherwise), so the
 * guest has no GLOBAL_STATUS_SET or GLOBAL_INUSE to split.
 */
#define KVM_PMU_CAP_PARTITION		(1U << 1)	/* PROVISIONAL */

/*
 * KVM_CREATE_VPMU_ROUTE_FD (VM ioctl, the VMM only): returns a new fd
 * (O_CLOEXEC, anon inode "kvm-vpmu-route"), at most one per VM (EEXIST
 * while one is open). Its ioctls work from any process that holds it. It
 * does not keep the VM alive: it holds a route object that KVM detaches
 * when the VM is destroyed; the VM is then dead and every route fd ioctl
 * returns EIO; closing the fd is all that is left.
 *
 * Errors of every route fd ioctl, in check order: EBADF/ENOTTY (not a
 * route fd), EIO (VM dead), ENOTTY (unknown ioctl), EFAULT, EINVAL (flags,
 * pad, reserved, outputs not zero on input), ENOENT (no such vCPU id), then
 * the ioctl's own.
 */
struct kvm_vpmu_route_fd {
	__u32 flags;			/* in: 0 */
	__u32 pad;			/* must be 0 */
	__u64 reserved[3];		/* must be 0 */
};

/*
 * KVM_VPMU_GET_VCPUS (route fd): the vCPU ids (as given to KVM_CREATE_VCPU)
 * in creation order. in: nr = room in ids[]; out: nr = number of vCPUs.
 * E2BIG (nr set, ids[] untouched) when the room is too small.
 */
struct kvm_vpmu_vcpus {
	__u32 nr;
	__u32 flags;			/* in: 0 */
	__u64 reserved[2];		/* must be 0 */
	__u32 ids[];
};

/*
 * KVM_VPMU_GET_ROUTES / KVM_VPMU_SET_ROUTES (route fd): the routes of one
 * vCPU. shape is the guest's PMU as CPUID leaf 0xA gave it (fixed by
 * KVM_SET_CPUID2); every PMC of the shape outside passthrough is
 * multiplexed (a flexible host perf event, its count scaled by
 * enabled/running time and flagged an estimate). Routes never change the
 * shape (KVM_SET_CPUID2 cannot drop a pass-through PMC from it: EBUSY).
 * GET: passthrough and shape are outputs and must be 0 on input.
 * SET: shape must be 0; passthrough must be within shape (EINVAL), and
 * each of its counters must be in the reservation of at least one online
 * CPU (EBUSY). Guest PMC values are kept across a route change.
 */
struct kvm_vpmu_routes {
	__u32 vcpu_id;			/* in */
	__u32 flags;			/* in: 0 */
	__u64 passthrough;		/* SET in / GET out */
	__u64 shape;			/* GET out */
	__u64 reserved[5];		/* must be 0 */
};

/*
 * KVM_VPMU_GET_VCPU_STATS_FD (route fd): the binary stats fd of one vCPU,
 * as KVM_GET_STATS_FD on its vCPU fd gives it: the vCPU's statistics, the
 * VPMU_STAT_* ones among them (docs/kvm-api.md, "Statistics"). Like that
 * fd it holds the vCPU: read it and close it.
 */
struct kvm_vpmu_stats_fd {
	__u32 vcpu_id;			/* in */
	__u32 flags;			/* in: 0 */
	__u64 reserved[3];		/* must be 0 */
};

/* The vpmu statistics of the binary stats fd, all cumulative counters. */
#define VPMU_STAT_FROZEN_ENTRIES	"pmu_passthrough_frozen_entries"
#define VPMU_STAT_MSR_EXITS		"pmu_msr_exits"
#define VPMU_STAT_ESTIMATED_READS	"pmu_multiplexed_estimated_reads"
#define VPMU_STAT_ROUTE_CHANGES		"pmu_route_changes"

#define KVM_VPMU_IOC_MAGIC		0xAE	/* KVMIO */

/* VM fd */
#define KVM_CREATE_VPMU_ROUTE_FD	_IOW(KVM_VPMU_IOC_MAGIC, 0xf0, struct kvm_vpmu_route_fd)
/* route fd */
#define KVM_VPMU_GET_VCPUS		_IOWR(KVM_VPMU_IOC_MAGIC, 0xf1, struct kvm_vpmu_vcpus)
#define KVM_VPMU_GET_ROUTES		_IOWR(KVM_VPMU_IOC_MAGIC, 0xf2, struct kvm_vpmu_routes)
#define KVM_VPMU_SET_ROUTES		_IOW(KVM_VPMU_IOC_MAGIC, 0xf3, struct kvm_vpmu_routes)
#define KVM_VPMU_GET_VCPU_STATS_FD	_IOW(KVM_VPMU_IOC_MAGIC, 0xf4, struct kvm_vpmu_stats_fd)

#endif /* _UAPI_LINUX_VPMU_KVM_H */
