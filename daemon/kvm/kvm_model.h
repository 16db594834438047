/* SPDX-License-Identifier: MIT */
/*
 * kvm_model: an in-process model of the kernel side of vpmu version 2
 * (include/linux/vpmu_kvm.h, docs/kvm-api.md), both halves: perf's guest
 * reservation (the sysfs attribute, fed the same text a write(2) would
 * carry) and KVM's route fds (fed the same ioctl numbers and structs).
 * Every rule of docs/kvm-api.md's rule table is checked here, each at one
 * place that names the rule (P1.., K1..).
 *
 * What is real: the VM. A model route fd is made from a real KVM VM file
 * (anon_inode:kvm-vm, which only the VM's creator can hand out) and stays
 * an fd of this process; the model tells VMs apart by their open file
 * (kcmp), never by fd numbers. What is simulated, and said so: the PMU
 * (physical and guest counter values), what KVM would know from
 * KVM_ENABLE_CAP and KVM_SET_CPUID2 (the caller describes it), the VM's
 * death (the VMM's exit stands for the release of its last VM file), and
 * guest activity. Nothing the model reports is a measurement.
 *
 * Every entry point takes the model's lock, so route-fd ioctls from
 * several threads are serialised as KVM serialises them (K17).
 */
#ifndef VPMU_KVM_MODEL_H
#define VPMU_KVM_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/vpmu_kvm.h>

/* The model's own bound on CPUs (the uapi has none). */
#define KVM_MODEL_MAX_CPUS 8192

/* The caller's credentials, as the kernel would see them: the perf half's
 * attribute is root's (0600). */
struct kvm_model_caller {
	bool cap_sys_admin;
};

struct kvm_model_opts {
	unsigned n_cpus;          /* physical CPUs 0..n_cpus-1, all online at start */
	unsigned num_gp;          /* host general counters, <= VPMU_MAX_GP */
	uint32_t fixed_mask;      /* host fixed counters (bit i = fixed counter i) */
	/* VPMU_RESERVE_CAP_*: UNIFORM alone models a first kernel that takes
	 * one mask for all CPUs; 0 means UNIFORM | PER_CPU. */
	unsigned reserve_caps;
	const char *procfs_root;  /* NULL: "/proc" (reading fd links) */
};

struct kvm_model;

int kvm_model_new(const struct kvm_model_opts *opts, struct kvm_model **out);
/* Closes every route fd the model still holds. */
void kvm_model_free(struct kvm_model *m);

/* ------------------------------------------------------------ perf half */

/* caps/guest_reserve (P1). */
unsigned kvm_model_reserve_caps(const struct kvm_model *m);
/* caps/guest_reservable: the counters a reservation may name (P4), the
 * host's general counters and its fixed counters 0..2 (those KVM can give
 * a guest); PERF_GLOBAL_CTRL layout. 0 for NULL. */
uint64_t kvm_model_reservable(const struct kvm_model *m);
/* A write(2) of buf[0..len) to one file of the perf half: cpu -1 the
 * uniform guest_reserve (every online CPU, all or none), else CPU cpu's
 * perf_guest_reserve. One value per file, "0x<hex mask>" (P2). 0 or
 * -errno, in check order: -ENOENT a per-CPU file on a kernel without
 * VPMU_RESERVE_CAP_PER_CPU (P5, as open(2) would fail); -EACCES without
 * cap_sys_admin (the files are 0600 root's); -EFAULT buf NULL; -EINVAL
 * syntax (P2), an offline or nonexistent CPU (P3), a counter outside
 * kvm_model_reservable (P4); -EBUSY pinned host events (P6) or live
 * routes (P7). A refused write changes nothing (P8). */
int kvm_model_reserve_write(struct kvm_model *m, const struct kvm_model_caller *who, int cpu,
			    const char *buf, size_t len);
/* A read of the same files, snprintf semantics: "0x%016llx\n". cpu -1:
 * the mask every online CPU has, -ENODATA when they differ (P10); a CPU's
 * file: its mask, 0 when it is offline; -ENOENT as for a write (P5),
 * -EINVAL for a CPU out of range. */
int kvm_model_reserve_read(const struct kvm_model *m, int cpu, char *buf, size_t len);
/* One CPU's reservation (PERF_GLOBAL_CTRL layout); -EINVAL if cpu is out
 * of range. An offline CPU reads 0. */
int kvm_model_reservation(const struct kvm_model *m, unsigned cpu, uint64_t *mask);

/* Simulated host activity: the pinned core events host perf has on cpu,
 * as the number of general counters they need plus the fixed counters
 * (PERF_GLOBAL_CTRL layout bits) they name (P6). -EINVAL for an offline
 * CPU or counters the host lacks, -EBUSY (nothing changed) when they do
 * not fit beside cpu's current reservation. */
int kvm_model_host_pinned(struct kvm_model *m, unsigned cpu, unsigned n_gp, uint64_t fixed_bits);
/* CPU hotplug (P11). Offline: the CPU's vCPU is put, its counters,
 * reservation and pinned events are dropped; -EBUSY for the last online
 * CPU or when a live pass-through counter would be reserved on no online
 * CPU (the model's answer to what P11 leaves open: it keeps P7 true). */
int kvm_model_cpu_online(struct kvm_model *m, unsigned cpu, bool online);

/* ------------------------------------------------------------- KVM half */

/* What KVM would know about a VM from the VMM's own calls, simulated. */
struct kvm_model_vm_desc {
	bool protected_state;     /* SEV-ES, SEV-SNP or TDX VM type (K3) */
	bool lapic_in_kernel;     /* KVM_CREATE_IRQCHIP or split irqchip (K3) */
	bool pmu_disabled;        /* KVM_PMU_CAP_DISABLE asked for as well (K2) */
	bool vcpus_before_opt_in; /* a vCPU existed when the VMM opted in (K2) */
	bool opted_in;            /* KVM_PMU_CAP_PARTITION asked for (K4) */
	uint64_t shape;           /* CPUID leaf 0xA, PERF_GLOBAL_CTRL layout, every vCPU */
	uint32_t nr_vcpus;
	const uint32_t *vcpu_ids; /* KVM_CREATE_VCPU ids in creation order */
	int vmm_pidfd;            /* the VMM (dup'ed); its exit kills the VM (K6); -1: none */
};

/*
 * KVM_ENABLE_CAP(KVM_CAP_PMU_CAPABILITY, KVM_PMU_CAP_PARTITION) and
 * KVM_CREATE_VPMU_ROUTE_FD as the VMM would issue them, simulated: vm_file
 * must be a real KVM VM file; desc says what KVM would know, args is the
 * ioctl's struct. Returns in *route_fd a new fd of this process
 * (O_CLOEXEC) that the model recognises as the route fd of that VM.
 * vm_file is not consumed.
 *
 * Errors in D10's order: -EBADF vm_file not open, -ENOTTY not a VM file;
 * -EINVAL when desc cannot be what KVM knows (the model's input: a shape
 * CPUID leaf 0xA cannot give on this host, duplicate vCPU ids, vcpu_ids
 * NULL with nr_vcpus, vmm_pidfd not a pidfd); -EIO the VM is dead or its
 * VMM has exited (the creator check, simulated: the caller stands in for
 * the VMM); -EFAULT args NULL; -EINVAL flags, pad, reserved (K4); -EINVAL
 * the opt-in (K2, K3, K4: not opted in); -EEXIST a route fd of the VM is
 * open (D8; desc is then not looked at). Without kcmp every VM file is a
 * new VM to the model, so EEXIST cannot be told.
 *
 * The route fd is a dup of vm_file, recognised by its number while it is
 * open as that file: a dup the caller makes of it is not a route fd to
 * the model (the kernel's would be), so close it only with
 * kvm_model_route_close. The VM is forgotten with its route fd.
 */
int kvm_model_create_route_fd(struct kvm_model *m, int vm_file, const struct kvm_model_vm_desc *desc,
			      const struct kvm_vpmu_route_fd *args, int *route_fd);

/*
 * The ioctl entry point. fd -1 is /dev/kvm and takes KVM_CHECK_EXTENSION
 * (arg is the capability number cast to a pointer, as the kernel receives
 * it): 1 for KVM_CAP_VPMU_ROUTES, KVM_PMU_CAP_DISABLE | KVM_PMU_CAP_PARTITION
 * for KVM_CAP_PMU_CAPABILITY, 0 otherwise (K1). Any other fd must be a
 * route fd of this model: -EBADF if it is not open, -ENOTTY if it is not
 * one (K5). Returns 0 or -errno; KVM_VPMU_GET_VCPU_STATS_FD returns the
 * new stats fd (> 0, O_CLOEXEC, a sealed memfd the caller closes).
 * Check order on a route fd: EBADF/ENOTTY (K5), EIO (K6), ENOTTY (an
 * unknown ioctl), EFAULT (arg NULL), then the ioctl's own: EINVAL (struct
 * hygiene, K7/K9/K16), ENOENT (K8), EINVAL (K10), EBUSY (K11), E2BIG (K7).
 * who is not consulted: route fds work for whoever holds them.
 */
long kvm_model_ioctl(struct kvm_model *m, const struct kvm_model_caller *who, int fd, unsigned long cmd,
		     void *arg);

/* close(2) of a route fd: the model drops its reference and closes fd;
 * the VM is forgotten with its last route fd. -EBADF if fd is not a route
 * fd of this model (if the number was closed behind the model's back, the
 * record is dropped and the fd now under that number left alone). */
int kvm_model_route_close(struct kvm_model *m, int fd);

/* Live VMs (some route fd open and the VM not dead); a dead VM stays
 * recorded, uncounted, until its last route fd is closed. */
size_t kvm_model_vm_count(struct kvm_model *m);

/*
 * KVM_SET_CPUID2 leaf 0xA on a partitioned vCPU, as its VMM would issue it
 * (simulated; the desc gave every vCPU its first shape). K18: -EINVAL once
 * the vCPU has entered the guest, for a PMU version above 2, or a shape
 * KVM cannot give (not a prefix of the host's general counters, fixed
 * counters outside kvm_model_reservable); -EBUSY when a pass-through PMC
 * would fall outside the new shape.
 */
int kvm_model_set_cpuid(struct kvm_model *m, int route_fd, uint32_t vcpu_id, unsigned pmu_version,
			uint64_t shape);

/* ------------------------------------------------ simulated guest activity */

/* D5: the guest partition switches at VM entry and VM exit (the mediated
 * vPMU's load/put, interrupts off), not at the scheduler's vCPU load/put.
 * kvm_model_vcpu_load and kvm_model_vcpu_put stand for VM entry and VM
 * exit; a vCPU "loaded" here is one running guest code on that CPU. */

/* vCPU vcpu_id of route_fd's VM enters the guest on cpu (VM entry): its
 * pass-through PMCs reserved on cpu are loaded into the physical
 * counters; the others are frozen there (K14). Returns the number of
 * frozen PMCs, or -errno (-EBUSY: the vCPU or another one is already
 * loaded there; -EINVAL: cpu offline or out of range). */
int kvm_model_vcpu_load(struct kvm_model *m, int route_fd, uint32_t vcpu_id, unsigned cpu);
/* VM exit: guest values saved, physical counters scrubbed (K13: the
 * mediated vPMU zeroes guest PMCs at every VM exit);
 * -EINVAL if it is not loaded. */
int kvm_model_vcpu_put(struct kvm_model *m, int route_fd, uint32_t vcpu_id);
/* The guest's PMC (one PERF_GLOBAL_CTRL-layout bit) counts delta: in the
 * physical counter when passed through and loaded, else in the vCPU's
 * saved or perf-event value; a frozen PMC does not move. */
int kvm_model_guest_count(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			  uint64_t delta);
/* The guest-visible value of one PMC (K12). */
int kvm_model_guest_value(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			  uint64_t *out);
/* A guest access to a PMC's MSRs: 1 if KVM intercepts and emulates it
 * (multiplexed, frozen), 0 if it goes to hardware (K15). The vCPU must be
 * loaded (-EINVAL otherwise: only a running guest touches its MSRs). */
int kvm_model_guest_msr_access(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			       bool read);
/* Host activity on a physical counter of cpu (pmc_bit as above); -EBUSY
 * on a reserved counter (host perf may not use it), -EINVAL offline. */
int kvm_model_count(struct kvm_model *m, unsigned cpu, uint64_t pmc_bit, uint64_t delta);
int kvm_model_phys_value(const struct kvm_model *m, unsigned cpu, uint64_t pmc_bit, uint64_t *out);

/*
 * The invariants the kernel side guarantees: no loaded vCPU has a
 * pass-through PMC live on a counter outside its CPU's reservation; every
 * live pass-through counter is reserved on some online CPU; no physical
 * counter holds a value across an owner change. 0 when they hold,
 * -EUCLEAN with the first violation in why otherwise.
 */
int kvm_model_check(struct kvm_model *m, char *why, size_t whylen);

#endif
