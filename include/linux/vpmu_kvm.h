/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * vpmu KVM extension: per-counter partition of the core PMU between host perf
 * and KVM guests, and per-vCPU guest PMC routes.
 *
 * Userspace API in kernel style: only linux/types.h and linux/ioctl.h, every
 * struct starts with size and flags, has explicit padding and reserved
 * fields that must be zero. Specified in docs/kvm-api.md.
 *
 * These are *system* ioctls on /dev/kvm, not VM ioctls: KVM refuses VM and
 * vCPU ioctls from any process but the VM's creator (-EIO), so a broker
 * names a VM by (pidfd of the VMM, number of the VM fd in the VMM).
 */
#ifndef _UAPI_LINUX_VPMU_KVM_H
#define _UAPI_LINUX_VPMU_KVM_H

#include <linux/ioctl.h>
#include <linux/types.h>

/*
 * PROVISIONAL: neither the capability number nor the ioctl numbers are
 * allocated upstream. They were picked far from the ranges KVM uses so that a
 * stock kernel answers the probe with 0 and the ioctls with -EINVAL/-ENOTTY.
 */
#define KVM_CAP_VPMU_PARTITION		0x7670	/* PROVISIONAL */

#define KVM_VPMU_IOC_MAGIC		0xAE	/* KVMIO */

#define KVM_VPMU_MAX_GP			32	/* PERF_GLOBAL_CTRL bits 0..31 */
#define KVM_VPMU_MAX_FIXED		16	/* PERF_GLOBAL_CTRL bits 32..47 */
#define KVM_VPMU_MAX_CPUS		4096
#define KVM_VPMU_CPU_WORDS		(KVM_VPMU_MAX_CPUS / 64)

/* Route of one guest PMC (values shared with daemon/transition.h). */
#define KVM_VPMU_ROUTE_DISABLED		0	/* the guest does not have this PMC */
#define KVM_VPMU_ROUTE_MULTIPLEXED	1	/* emulated with a host perf event */
#define KVM_VPMU_ROUTE_PASSTHROUGH	2	/* guest PMC i is physical PMC i */

/*
 * KVM_VPMU_GET_PARTITION / KVM_VPMU_SET_PARTITION: the guest partition of one
 * physical CPU. Counters outside the masks belong to host perf.
 */
struct kvm_vpmu_partition {
	__u32 size;		/* in: sizeof(struct kvm_vpmu_partition) */
	__u32 flags;		/* in: 0 */
	__u32 cpu;		/* in: physical CPU */
	__u32 gp_mask;		/* GET out / SET in: guest general counters */
	__u32 fixed_mask;	/* GET out / SET in: guest fixed counters */
	__u32 pad;		/* must be 0 */
	__u64 generation;	/* SET in: last generation read; out: current */
	__u64 scrubs;		/* out: physical counters cleared on this CPU */
	__u64 reserved[4];	/* must be 0 */
};

/*
 * KVM_VPMU_GET_ROUTES / KVM_VPMU_SET_ROUTES: the PMC routes of one vCPU.
 * allowed_cpus is the set of CPUs the caller declares the vCPU may run on;
 * pass-through is checked against the partition of each of them. Affinity
 * is not frozen: an entry on a CPU outside the set (or whose partition lacks
 * the counter) multiplexes the PMC for that entry and counts a route
 * fallback. The generation is per VM.
 */
struct kvm_vpmu_routes {
	__u32 size;		/* in: sizeof(struct kvm_vpmu_routes) */
	__u32 flags;		/* in: 0 */
	__s32 pidfd;		/* in: pidfd of the VMM process */
	__s32 vm_fd;		/* in: the VM's fd number in the VMM process */
	__u32 vcpu_id;		/* in: vCPU id as passed to KVM_CREATE_VCPU */
	__u32 pad;		/* must be 0 */
	__u64 generation;	/* SET in: last VM generation read; out: current */
	__u8 gp[KVM_VPMU_MAX_GP];	/* KVM_VPMU_ROUTE_* per general PMC */
	__u8 fixed[KVM_VPMU_MAX_FIXED];	/* KVM_VPMU_ROUTE_* per fixed PMC */
	__u64 allowed_cpus[KVM_VPMU_CPU_WORDS]; /* SET in, GET out: bit n = CPU n */
	__u64 reserved[4];	/* must be 0 */
};

/* KVM_VPMU_GET_VCPU_STATS: counters since the vCPU was created. */
struct kvm_vpmu_vcpu_stats {
	__u32 size;		/* in: sizeof(struct kvm_vpmu_vcpu_stats) */
	__u32 flags;		/* in: 0 */
	__s32 pidfd;		/* in */
	__s32 vm_fd;		/* in */
	__u32 vcpu_id;		/* in */
	__u32 pad;		/* must be 0 */
	__u64 generation;	/* out: current VM generation */
	__u64 route_fallbacks;	/* out: entries that multiplexed a pass-through PMC */
	__u64 scrubs;		/* out: guest PMC values cleared on a route change */
	__u64 emulated_msr_accesses; /* out: intercepted PMU MSR accesses */
	__u64 reserved[4];	/* must be 0 */
};

#define KVM_VPMU_GET_PARTITION	_IOWR(KVM_VPMU_IOC_MAGIC, 0xf0, struct kvm_vpmu_partition)
#define KVM_VPMU_SET_PARTITION	_IOWR(KVM_VPMU_IOC_MAGIC, 0xf1, struct kvm_vpmu_partition)
#define KVM_VPMU_GET_ROUTES	_IOWR(KVM_VPMU_IOC_MAGIC, 0xf2, struct kvm_vpmu_routes)
#define KVM_VPMU_SET_ROUTES	_IOWR(KVM_VPMU_IOC_MAGIC, 0xf3, struct kvm_vpmu_routes)
#define KVM_VPMU_GET_VCPU_STATS	_IOWR(KVM_VPMU_IOC_MAGIC, 0xf4, struct kvm_vpmu_vcpu_stats)

#endif /* _UAPI_LINUX_VPMU_KVM_H */
