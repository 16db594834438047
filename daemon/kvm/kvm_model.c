/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_model.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvm/vmm_discover.h"
#include "proto/cleanup.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct kvm_model *, kvm_model_free)

struct model_vcpu {
	unsigned id;
	uint8_t gp[KVM_VPMU_MAX_GP];
	uint8_t fixed[KVM_VPMU_MAX_FIXED];
	__u64 allowed[KVM_VPMU_CPU_WORDS];
	uint64_t gp_val[KVM_VPMU_MAX_GP];     /* saved guest PMC values */
	uint64_t fixed_val[KVM_VPMU_MAX_FIXED];
	uint64_t route_fallbacks, scrubs, emulated_msr_accesses;
};

/* The kernel would key on struct kvm; the model can only key on (pid, fd
 * number), so a VMM that closes its VM and opens another under the same
 * number is seen as the same VM. Tests do not do that. */
struct model_vm {
	pid_t pid;
	int vm_fd;
	int pidfd;             /* our own dup, to notice the VMM's exit */
	uint64_t generation;
	struct model_vcpu *vcpus;
	size_t n_vcpus;
};

struct model_cpu {
	uint32_t gp_mask, fixed_mask;
	uint64_t generation;
	uint64_t scrubs;
	uint64_t gp_val[KVM_VPMU_MAX_GP];     /* physical counter values */
	uint64_t fixed_val[KVM_VPMU_MAX_FIXED];
};

struct kvm_model {
	unsigned n_cpus, num_gp;
	uint32_t fixed_mask;
	char *procfs;
	struct model_cpu *cpus;
	struct model_vm *vms;
	size_t n_vms, cap_vms;
};

int kvm_model_new(const struct kvm_model_opts *o, struct kvm_model **out)
{
	if (!o || !out || o->n_cpus == 0 || o->n_cpus > KVM_VPMU_MAX_CPUS ||
	    o->num_gp > KVM_VPMU_MAX_GP ||
	    (KVM_VPMU_MAX_FIXED < 32 && (o->fixed_mask >> KVM_VPMU_MAX_FIXED)))
		return -EINVAL;
	_cleanup_(kvm_model_freep) struct kvm_model *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->cpus = calloc(o->n_cpus, sizeof(*m->cpus));
	m->procfs = strdup(o->procfs_root ? o->procfs_root : "/proc");
	if (!m->cpus || !m->procfs)
		return -ENOMEM;
	m->n_cpus = o->n_cpus;
	m->num_gp = o->num_gp;
	m->fixed_mask = o->fixed_mask;
	/* Generations start at 1 so that 0 can never match: a writer that has
	 * not read the current state is stale by construction. */
	for (unsigned c = 0; c < m->n_cpus; c++)
		m->cpus[c].generation = 1;
	*out = TAKE_PTR(m);
	return 0;
}

static void vm_free(struct model_vm *vm)
{
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	free(vm->vcpus);
}

void kvm_model_free(struct kvm_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_vms; i++)
		vm_free(&m->vms[i]);
	free(m->vms);
	free(m->cpus);
	free(m->procfs);
	free(m);
}

/* A VM dies with its VMM; the kernel would tear its routes down then. */
static void prune_dead(struct kvm_model *m)
{
	for (size_t i = 0; i < m->n_vms;) {
		if (vmm_discover_pidfd_alive(m->vms[i].pidfd) == 1) {
			i++;
			continue;
		}
		vm_free(&m->vms[i]);
		m->vms[i] = m->vms[--m->n_vms];
	}
}

size_t kvm_model_vm_count(struct kvm_model *m)
{
	prune_dead(m);
	return m->n_vms;
}

static bool gp_exists(const struct kvm_model *m, unsigned i) { return i < m->num_gp; }
static bool fixed_exists(const struct kvm_model *m, unsigned i)
{
	return i < KVM_VPMU_MAX_FIXED && (m->fixed_mask >> i) & 1;
}

static void vcpu_init(const struct kvm_model *m, struct model_vcpu *v, unsigned id)
{
	memset(v, 0, sizeof(*v));
	v->id = id;
	/* Without the extension every PMC the host has is KVM's perf-based
	 * emulation, so that is where a vCPU starts. */
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++)
		v->gp[i] = gp_exists(m, i) ? KVM_VPMU_ROUTE_MULTIPLEXED : KVM_VPMU_ROUTE_DISABLED;
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++)
		v->fixed[i] = fixed_exists(m, i) ? KVM_VPMU_ROUTE_MULTIPLEXED : KVM_VPMU_ROUTE_DISABLED;
}

/* Resolves (pidfd, vm_fd) as the kernel would: pidfd to a live task, the fd
 * in that task's table to a KVM VM. */
static int resolve_vm(struct kvm_model *m, int pidfd, int vm_fd, struct model_vm **out)
{
	int pid = vmm_discover_pidfd_pid(pidfd);
	if (pid < 0)
		return pid;
	int kind = vmm_discover_fd_kind(m->procfs, pid, vm_fd, NULL);
	if (kind == -ENOENT && vmm_discover_pidfd_alive(pidfd) == 0)
		return -ESRCH;
	if (kind != VMM_FD_KVM_VM)
		return -EBADF;
	for (size_t i = 0; i < m->n_vms; i++) {
		if (m->vms[i].pid == pid && m->vms[i].vm_fd == vm_fd) {
			*out = &m->vms[i];
			return 0;
		}
	}
	if (m->n_vms == m->cap_vms) {
		size_t nc = m->cap_vms ? m->cap_vms * 2 : 4;
		struct model_vm *nv = reallocarray(m->vms, nc, sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		m->vms = nv;
		m->cap_vms = nc;
	}
	int dup = fcntl(pidfd, F_DUPFD_CLOEXEC, 3);
	if (dup < 0)
		return -errno;
	struct model_vm *vm = &m->vms[m->n_vms++];
	*vm = (struct model_vm){ .pid = pid, .vm_fd = vm_fd, .pidfd = dup, .generation = 1 };
	*out = vm;
	return 0;
}

/* A vCPU exists when the VMM holds its fd: KVM_CREATE_VCPU returns one and
 * a VMM never closes it while the VM lives. */
static int resolve_vcpu(struct kvm_model *m, struct model_vm *vm, unsigned id,
			struct model_vcpu **out)
{
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		if (vm->vcpus[i].id == id) {
			*out = &vm->vcpus[i];
			return 0;
		}
	}
	struct vmm_discover_opts o = { .procfs_root = m->procfs, .debugfs_root = "/nonexistent",
				       .vm_fd = vm->vm_fd };
	struct vmm_vm found;
	int r = vmm_discover(vm->pid, &o, &found, NULL, 0);
	if (r < 0)
		return r == -ESRCH ? -ESRCH : -ENOENT;
	bool exists = false;
	for (unsigned i = 0; i < found.n_vcpus; i++)
		exists |= found.vcpus[i].id == id;
	vmm_discover_release(&found);
	if (!exists)
		return -ENOENT;
	struct model_vcpu *nv = reallocarray(vm->vcpus, vm->n_vcpus + 1, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	vm->vcpus = nv;
	vcpu_init(m, &nv[vm->n_vcpus], id);
	*out = &nv[vm->n_vcpus++];
	return 0;
}

/* The vCPU a request names (and its VM when vm is not NULL), once VMs
 * whose VMM died are forgotten. */
static int resolve(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu, struct model_vm **vm,
		   struct model_vcpu **v)
{
	struct model_vm *found = NULL;
	int e;

	prune_dead(m);
	if ((e = resolve_vm(m, pidfd, vm_fd, &found)) < 0)
		return e;
	if (vm)
		*vm = found;
	return resolve_vcpu(m, found, vcpu, v);
}

static bool cpu_allowed(const __u64 *allowed, unsigned cpu)
{
	return (allowed[cpu / 64] >> (cpu % 64)) & 1;
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* Pass-through PMCs of a vCPU as masks. */
static void pt_masks(const struct model_vcpu *v, uint32_t *gp, uint32_t *fixed)
{
	*gp = *fixed = 0;
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++)
		if (v->gp[i] == KVM_VPMU_ROUTE_PASSTHROUGH)
			*gp |= 1u << i;
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++)
		if (v->fixed[i] == KVM_VPMU_ROUTE_PASSTHROUGH)
			*fixed |= 1u << i;
}

static long do_get_partition(struct kvm_model *m, struct kvm_vpmu_partition *p)
{
	if (p->size != sizeof(*p) || p->flags || p->pad || !all_zero(p->reserved, sizeof(p->reserved)))
		return -EINVAL;
	if (p->cpu >= m->n_cpus)
		return -EINVAL;
	const struct model_cpu *c = &m->cpus[p->cpu];
	p->gp_mask = c->gp_mask;
	p->fixed_mask = c->fixed_mask;
	p->generation = c->generation;
	p->scrubs = c->scrubs;
	return 0;
}

static long do_set_partition(struct kvm_model *m, struct kvm_vpmu_partition *p)
{
	if (p->size != sizeof(*p) || p->flags || p->pad || p->scrubs ||
	    !all_zero(p->reserved, sizeof(p->reserved)))
		return -EINVAL;
	if (p->cpu >= m->n_cpus || (p->gp_mask & ~(uint32_t)((1ull << m->num_gp) - 1)) ||
	    (p->fixed_mask & ~m->fixed_mask))
		return -EINVAL;
	struct model_cpu *c = &m->cpus[p->cpu];
	if (p->generation != c->generation)
		return -ESTALE;
	uint32_t gp_gone = c->gp_mask & ~p->gp_mask;
	uint32_t fixed_gone = c->fixed_mask & ~p->fixed_mask;
	prune_dead(m);
	for (size_t i = 0; i < m->n_vms; i++) {
		for (size_t j = 0; j < m->vms[i].n_vcpus; j++) {
			const struct model_vcpu *v = &m->vms[i].vcpus[j];
			uint32_t gp, fixed;
			pt_masks(v, &gp, &fixed);
			if (cpu_allowed(v->allowed, p->cpu) && ((gp & gp_gone) || (fixed & fixed_gone)))
				return -EBUSY;
		}
	}
	/* Every counter that changes owner starts from zero for its new
	 * owner: neither side may read what the other counted. */
	uint32_t gp_flip = c->gp_mask ^ p->gp_mask, fixed_flip = c->fixed_mask ^ p->fixed_mask;
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++) {
		if ((gp_flip >> i) & 1) {
			c->gp_val[i] = 0;
			c->scrubs++;
		}
	}
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++) {
		if ((fixed_flip >> i) & 1) {
			c->fixed_val[i] = 0;
			c->scrubs++;
		}
	}
	c->gp_mask = p->gp_mask;
	c->fixed_mask = p->fixed_mask;
	c->generation++;
	p->generation = c->generation;
	p->scrubs = c->scrubs;
	return 0;
}

static int routes_header_ok(const struct kvm_vpmu_routes *r)
{
	if (r->size != sizeof(*r) || r->flags || r->pad || !all_zero(r->reserved, sizeof(r->reserved)))
		return -EINVAL;
	return 0;
}

static long do_get_routes(struct kvm_model *m, struct kvm_vpmu_routes *r)
{
	int e = routes_header_ok(r);
	struct model_vm *vm;
	struct model_vcpu *v;
	if (e < 0)
		return e;
	if ((e = resolve(m, r->pidfd, r->vm_fd, r->vcpu_id, &vm, &v)) < 0)
		return e;
	r->generation = vm->generation;
	memcpy(r->gp, v->gp, sizeof(r->gp));
	memcpy(r->fixed, v->fixed, sizeof(r->fixed));
	memcpy(r->allowed_cpus, v->allowed, sizeof(r->allowed_cpus));
	return 0;
}

static long do_set_routes(struct kvm_model *m, struct kvm_vpmu_routes *r)
{
	int e = routes_header_ok(r);
	if (e < 0)
		return e;
	bool any_pt = false;
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++) {
		if (r->gp[i] > KVM_VPMU_ROUTE_PASSTHROUGH ||
		    (r->gp[i] != KVM_VPMU_ROUTE_DISABLED && !gp_exists(m, i)))
			return -EINVAL;
		any_pt |= r->gp[i] == KVM_VPMU_ROUTE_PASSTHROUGH;
	}
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++) {
		if (r->fixed[i] > KVM_VPMU_ROUTE_PASSTHROUGH ||
		    (r->fixed[i] != KVM_VPMU_ROUTE_DISABLED && !fixed_exists(m, i)))
			return -EINVAL;
		any_pt |= r->fixed[i] == KVM_VPMU_ROUTE_PASSTHROUGH;
	}
	bool any_cpu = false;
	for (unsigned c = 0; c < KVM_VPMU_MAX_CPUS; c++) {
		if (!cpu_allowed(r->allowed_cpus, c))
			continue;
		if (c >= m->n_cpus)
			return -EINVAL;
		any_cpu = true;
	}
	/* Pass-through with no CPU would pass the partition check vacuously. */
	if (any_pt && !any_cpu)
		return -EINVAL;

	struct model_vm *vm;
	struct model_vcpu *v;
	if ((e = resolve(m, r->pidfd, r->vm_fd, r->vcpu_id, &vm, &v)) < 0)
		return e;
	if (r->generation != vm->generation)
		return -ESTALE;
	for (unsigned c = 0; c < m->n_cpus; c++) {
		if (!cpu_allowed(r->allowed_cpus, c))
			continue;
		for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++)
			if (r->gp[i] == KVM_VPMU_ROUTE_PASSTHROUGH && !((m->cpus[c].gp_mask >> i) & 1))
				return -EBUSY;
		for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++)
			if (r->fixed[i] == KVM_VPMU_ROUTE_PASSTHROUGH &&
			    !((m->cpus[c].fixed_mask >> i) & 1))
				return -EBUSY;
	}
	/* A PMC that moves between KVM's emulation and the hardware changes
	 * owner (a host perf event vs. the guest partition): clear it. */
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++) {
		if ((v->gp[i] == KVM_VPMU_ROUTE_PASSTHROUGH) != (r->gp[i] == KVM_VPMU_ROUTE_PASSTHROUGH)) {
			v->gp_val[i] = 0;
			v->scrubs++;
		}
	}
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++) {
		if ((v->fixed[i] == KVM_VPMU_ROUTE_PASSTHROUGH) !=
		    (r->fixed[i] == KVM_VPMU_ROUTE_PASSTHROUGH)) {
			v->fixed_val[i] = 0;
			v->scrubs++;
		}
	}
	memcpy(v->gp, r->gp, sizeof(v->gp));
	memcpy(v->fixed, r->fixed, sizeof(v->fixed));
	memcpy(v->allowed, r->allowed_cpus, sizeof(v->allowed));
	vm->generation++;
	r->generation = vm->generation;
	return 0;
}

static long do_get_stats(struct kvm_model *m, struct kvm_vpmu_vcpu_stats *s)
{
	if (s->size != sizeof(*s) || s->flags || s->pad || s->generation || s->route_fallbacks ||
	    s->scrubs || s->emulated_msr_accesses || !all_zero(s->reserved, sizeof(s->reserved)))
		return -EINVAL;
	struct model_vm *vm;
	struct model_vcpu *v;
	int e;
	if ((e = resolve(m, s->pidfd, s->vm_fd, s->vcpu_id, &vm, &v)) < 0)
		return e;
	s->generation = vm->generation;
	s->route_fallbacks = v->route_fallbacks;
	s->scrubs = v->scrubs;
	s->emulated_msr_accesses = v->emulated_msr_accesses;
	return 0;
}

long kvm_model_ioctl(struct kvm_model *m, const struct kvm_model_caller *who,
		     unsigned long cmd, void *arg)
{
	if (!m)
		return -EINVAL;
	/* KVM_CHECK_EXTENSION is unprivileged, as on /dev/kvm. */
	if (cmd == KVM_CHECK_EXTENSION)
		return (uintptr_t)arg == KVM_CAP_VPMU_PARTITION ? 1 : 0;
	switch (cmd) {
	case KVM_VPMU_GET_PARTITION:
	case KVM_VPMU_SET_PARTITION:
	case KVM_VPMU_GET_ROUTES:
	case KVM_VPMU_SET_ROUTES:
	case KVM_VPMU_GET_VCPU_STATS:
		break;
	default:
		return -ENOTTY;
	}
	/* Every vpmu ioctl, reads included, reveals or changes other
	 * processes' VMs: privilege is checked before anything else. */
	if (!who || !who->cap_sys_admin)
		return -EPERM;
	if (!arg)
		return -EFAULT;
	switch (cmd) {
	case KVM_VPMU_GET_PARTITION: return do_get_partition(m, arg);
	case KVM_VPMU_SET_PARTITION: return do_set_partition(m, arg);
	case KVM_VPMU_GET_ROUTES: return do_get_routes(m, arg);
	case KVM_VPMU_SET_ROUTES: return do_set_routes(m, arg);
	default: return do_get_stats(m, arg);
	}
}

static int counter_ok(const struct kvm_model *m, bool fixed, unsigned idx)
{
	return fixed ? fixed_exists(m, idx) : gp_exists(m, idx);
}

int kvm_model_count(struct kvm_model *m, unsigned cpu, bool fixed, unsigned idx, uint64_t delta)
{
	if (!m || cpu >= m->n_cpus || !counter_ok(m, fixed, idx))
		return -EINVAL;
	uint64_t *v = fixed ? &m->cpus[cpu].fixed_val[idx] : &m->cpus[cpu].gp_val[idx];
	*v += delta;
	return 0;
}

int kvm_model_phys_value(const struct kvm_model *m, unsigned cpu, bool fixed, unsigned idx,
			 uint64_t *out)
{
	if (!m || !out || cpu >= m->n_cpus || !counter_ok(m, fixed, idx))
		return -EINVAL;
	*out = fixed ? m->cpus[cpu].fixed_val[idx] : m->cpus[cpu].gp_val[idx];
	return 0;
}

int kvm_model_guest_count(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			  bool fixed, unsigned idx, uint64_t delta)
{
	struct model_vcpu *v;
	if (!m || !counter_ok(m, fixed, idx))
		return -EINVAL;
	int e = resolve(m, pidfd, vm_fd, vcpu, NULL, &v);
	if (e < 0)
		return e;
	(fixed ? v->fixed_val : v->gp_val)[idx] += delta;
	return 0;
}

int kvm_model_guest_value(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			  bool fixed, unsigned idx, uint64_t *out)
{
	struct model_vcpu *v;
	if (!m || !out || !counter_ok(m, fixed, idx))
		return -EINVAL;
	int e = resolve(m, pidfd, vm_fd, vcpu, NULL, &v);
	if (e < 0)
		return e;
	*out = (fixed ? v->fixed_val : v->gp_val)[idx];
	return 0;
}

int kvm_model_guest_enter(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu, unsigned cpu)
{
	struct model_vcpu *v;
	if (!m || cpu >= m->n_cpus)
		return -EINVAL;
	int e = resolve(m, pidfd, vm_fd, vcpu, NULL, &v);
	if (e < 0)
		return e;
	uint32_t gp, fixed;
	pt_masks(v, &gp, &fixed);
	const struct model_cpu *c = &m->cpus[cpu];
	int fell = 0;
	if (!cpu_allowed(v->allowed, cpu)) {
		fell = __builtin_popcount(gp) + __builtin_popcount(fixed);
	} else {
		fell = __builtin_popcount(gp & ~c->gp_mask) + __builtin_popcount(fixed & ~c->fixed_mask);
	}
	if (fell)
		v->route_fallbacks++;
	return fell;
}

int kvm_model_guest_msr_access(struct kvm_model *m, int pidfd, int vm_fd, unsigned vcpu,
			       bool fixed, unsigned idx)
{
	struct model_vcpu *v;
	if (!m || idx >= (fixed ? KVM_VPMU_MAX_FIXED : KVM_VPMU_MAX_GP))
		return -EINVAL;
	int e = resolve(m, pidfd, vm_fd, vcpu, NULL, &v);
	if (e < 0)
		return e;
	uint8_t route = fixed ? v->fixed[idx] : v->gp[idx];
	if (route == KVM_VPMU_ROUTE_PASSTHROUGH)
		return 0;
	v->emulated_msr_accesses++;
	return 1;
}

int kvm_model_check(struct kvm_model *m, char *why, size_t whylen)
{
	if (!m)
		return -EINVAL;
	prune_dead(m);
	for (size_t i = 0; i < m->n_vms; i++) {
		for (size_t j = 0; j < m->vms[i].n_vcpus; j++) {
			const struct model_vcpu *v = &m->vms[i].vcpus[j];
			uint32_t gp, fixed;
			pt_masks(v, &gp, &fixed);
			for (unsigned c = 0; c < m->n_cpus; c++) {
				if (!cpu_allowed(v->allowed, c))
					continue;
				uint32_t bad_gp = gp & ~m->cpus[c].gp_mask;
				uint32_t bad_fx = fixed & ~m->cpus[c].fixed_mask;
				if (bad_gp || bad_fx) {
					snprintf(why, whylen,
						 "pid %d vm fd %d vcpu %u passes through gp 0x%x fixed 0x%x "
						 "that cpu %u keeps for the host",
						 (int)m->vms[i].pid, m->vms[i].vm_fd, v->id, bad_gp, bad_fx, c);
					return -EUCLEAN;
				}
			}
		}
	}
	return 0;
}
