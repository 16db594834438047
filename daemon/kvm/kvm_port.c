/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_port.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kvm/vmm_discover.h"
#include "proto/cleanup.h"

struct port_vcpu {
	pid_t tid;
	uint8_t gp[KVM_VPMU_MAX_GP];
	uint8_t fixed[KVM_VPMU_MAX_FIXED];
	uint64_t allowed[KVM_VPMU_CPU_WORDS];
	bool declared;                         /* the lease names its CPUs */
	uint64_t declared_cpus[KVM_VPMU_CPU_WORDS];
};

struct port_vm {
	uint64_t vm_id;
	pid_t pid;
	int pidfd;
	int vm_fd;
	uint64_t generation;
	unsigned n_vcpus;
	struct port_vcpu *vcpus;
};

struct port_cpu {
	uint32_t gp, fixed;
	uint64_t generation;
};

struct kvm_port {
	enum kvm_backend backend;
	int devfd;
	struct kvm_model *model;
	bool own_model;
	struct kvm_model_caller caller;
	kvm_port_trace_fn trace;
	void *trace_ctx;
	unsigned n_cpus, num_gp;
	uint32_t fixed_mask;
	struct port_cpu *cpus;
	struct port_vm *vms;
	size_t n_vms;
	char *why; /* malloc'd: it names the device path */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct kvm_port *, kvm_port_close)

/* Why this backend: -ENOMEM when even that cannot be said. */
static int __attribute__((format(printf, 2, 3))) set_why(struct kvm_port *p, const char *fmt, ...)
{
	char *why;
	va_list ap;

	va_start(ap, fmt);
	why = alloc_vprintf(fmt, ap);
	va_end(ap);
	if (!why)
		return -ENOMEM;
	free(p->why);
	p->why = why;
	return 0;
}

int kvm_port_backend_parse(const char *s, enum kvm_backend *out)
{
	static const struct { const char *name; enum kvm_backend b; } names[] = {
		{ "auto", KVM_BACKEND_AUTO }, { "ioctl", KVM_BACKEND_IOCTL },
		{ "advisory", KVM_BACKEND_ADVISORY }, { "model", KVM_BACKEND_MODEL },
	};
	if (!s || !out)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].b;
			return 0;
		}
	}
	return -EINVAL;
}

const char *kvm_port_backend_name(enum kvm_backend b)
{
	switch (b) {
	case KVM_BACKEND_AUTO: return "auto";
	case KVM_BACKEND_IOCTL: return "ioctl";
	case KVM_BACKEND_ADVISORY: return "advisory";
	case KVM_BACKEND_MODEL: return "model";
	}
	return "invalid";
}

static size_t ioc_len(unsigned long cmd) { return _IOC_SIZE(cmd); }

/* One path for both enforcing backends, so that the model sees exactly
 * the bytes the kernel would. */
static int issue(struct kvm_port *p, unsigned long cmd, void *arg)
{
	if (p->trace)
		p->trace(p->trace_ctx, cmd, arg, ioc_len(cmd));
	if (p->backend == KVM_BACKEND_IOCTL)
		return ioctl(p->devfd, cmd, arg) < 0 ? -errno : 0;
	if (p->backend == KVM_BACKEND_MODEL)
		return (int)kvm_model_ioctl(p->model, &p->caller, cmd, arg);
	return -EOPNOTSUPP;
}

static bool gp_exists(const struct kvm_port *p, unsigned i) { return i < p->num_gp; }
static bool fixed_exists(const struct kvm_port *p, unsigned i)
{
	return i < KVM_VPMU_MAX_FIXED && (p->fixed_mask >> i) & 1;
}
static uint32_t host_gp_mask(const struct kvm_port *p)
{
	return (uint32_t)((1ull << p->num_gp) - 1);
}

int kvm_port_encode_partition(const struct transition *t, uint64_t generation,
			      struct kvm_vpmu_partition *out)
{
	if (!t || !out || t->kind != TRANSITION_PARTITION || t->cpu < 0)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->cpu = (uint32_t)t->cpu;
	out->gp_mask = t->guest_gp_mask;
	out->fixed_mask = t->guest_fixed_mask;
	out->generation = generation;
	return 0;
}

int kvm_port_encode_routes(const struct transition *t, int pidfd, int vm_fd, uint64_t generation,
			   const uint64_t *allowed, struct kvm_vpmu_routes *out)
{
	if (!t || !out || !allowed || t->kind != TRANSITION_ROUTES)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->pidfd = pidfd;
	out->vm_fd = vm_fd;
	out->vcpu_id = t->vcpu;
	out->generation = generation;
	_Static_assert(sizeof(out->gp) == sizeof(t->gp_route), "gp routes differ in size");
	_Static_assert(sizeof(out->fixed) == sizeof(t->fixed_route), "fixed routes differ in size");
	memcpy(out->gp, t->gp_route, sizeof(out->gp));
	memcpy(out->fixed, t->fixed_route, sizeof(out->fixed));
	memcpy(out->allowed_cpus, allowed, sizeof(out->allowed_cpus));
	return 0;
}

_Static_assert(PMC_ROUTE_DISABLED == KVM_VPMU_ROUTE_DISABLED &&
	       PMC_ROUTE_MULTIPLEXED == KVM_VPMU_ROUTE_MULTIPLEXED &&
	       PMC_ROUTE_PASSTHROUGH == KVM_VPMU_ROUTE_PASSTHROUGH,
	       "transition.h routes must match the uapi");

static void default_routes(const struct kvm_port *p, struct port_vcpu *v)
{
	for (unsigned i = 0; i < KVM_VPMU_MAX_GP; i++)
		v->gp[i] = gp_exists(p, i) ? KVM_VPMU_ROUTE_MULTIPLEXED : KVM_VPMU_ROUTE_DISABLED;
	for (unsigned i = 0; i < KVM_VPMU_MAX_FIXED; i++)
		v->fixed[i] = fixed_exists(p, i) ? KVM_VPMU_ROUTE_MULTIPLEXED : KVM_VPMU_ROUTE_DISABLED;
}

static int sync_cpu(struct kvm_port *p, unsigned cpu)
{
	struct kvm_vpmu_partition q = { .size = sizeof(q), .cpu = cpu };
	int r = issue(p, KVM_VPMU_GET_PARTITION, &q);
	if (r < 0)
		return r;
	p->cpus[cpu] = (struct port_cpu){ .gp = q.gp_mask, .fixed = q.fixed_mask,
					  .generation = q.generation };
	return 0;
}

int kvm_port_open(const struct kvm_port_opts *o, struct kvm_port **out, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (!o || !out || o->n_cpus == 0 || o->n_cpus > KVM_VPMU_MAX_CPUS ||
	    o->num_gp > KVM_VPMU_MAX_GP || (o->fixed_mask >> KVM_VPMU_MAX_FIXED)) {
		snprintf(why, whylen, "invalid host description for the kvm port");
		return -EINVAL;
	}
	_cleanup_(kvm_port_closep) struct kvm_port *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->devfd = -1;
	p->cpus = calloc(o->n_cpus, sizeof(*p->cpus));
	if (!p->cpus)
		return -ENOMEM;
	p->n_cpus = o->n_cpus;
	p->num_gp = o->num_gp;
	p->fixed_mask = o->fixed_mask;
	p->caller = o->caller;
	p->trace = o->trace;
	p->trace_ctx = o->trace_ctx;
	const char *dev = o->dev_path ? o->dev_path : "/dev/kvm";
	int r = 0;

	switch (o->backend) {
	case KVM_BACKEND_MODEL:
		p->backend = KVM_BACKEND_MODEL;
		if (o->model) {
			p->model = o->model;
		} else {
			struct kvm_model_opts mo = { .n_cpus = o->n_cpus, .num_gp = o->num_gp,
						     .fixed_mask = o->fixed_mask };
			r = kvm_model_new(&mo, &p->model);
			p->own_model = r == 0;
		}
		if (r == 0)
			r = set_why(p, "model requested: in-process model of the kernel "
				    "side; guest routes are simulated, not enforced on real guests");
		break;
	case KVM_BACKEND_ADVISORY:
		p->backend = KVM_BACKEND_ADVISORY;
		r = set_why(p, "advisory requested");
		break;
	case KVM_BACKEND_AUTO:
	case KVM_BACKEND_IOCTL: {
		p->devfd = open(dev, O_RDWR | O_CLOEXEC);
		int cap = p->devfd < 0 ? -errno : ioctl(p->devfd, KVM_CHECK_EXTENSION,
							 (long)KVM_CAP_VPMU_PARTITION);
		if (cap < 0 && p->devfd >= 0)
			cap = -errno;
		if (o->backend == KVM_BACKEND_AUTO && cap <= 0) {
			if (p->devfd >= 0)
				close(p->devfd);
			p->devfd = -1;
			p->backend = KVM_BACKEND_ADVISORY;
			if (cap < 0)
				r = set_why(p, "auto: %s: %s; advisory", dev, strerror(-cap));
			else
				r = set_why(p, "auto: %s lacks KVM_CAP_VPMU_PARTITION (stock kernel); advisory", dev);
			break;
		}
		p->backend = KVM_BACKEND_IOCTL;
		if (p->devfd < 0) {
			r = cap;
			snprintf(why, whylen, "ioctl backend: %s: %s", dev, strerror(-r));
			break;
		}
		/* Asked for by name, the backend still needs the kernel to say
		 * yes: a kernel that does not know the capability would take
		 * our numbers for something else, so nothing is sent. */
		if (cap <= 0) {
			r = cap < 0 ? cap : -EOPNOTSUPP;
			snprintf(why, whylen,
				 "ioctl backend: %s: KVM_CHECK_EXTENSION(KVM_CAP_VPMU_PARTITION) = %s: the kernel "
				 "lacks the vpmu extension; no vpmu ioctl was sent (use --kvm auto or advisory)",
				 dev, cap < 0 ? strerror(-cap) : "0");
			break;
		}
		r = set_why(p, "%s: %s reports KVM_CAP_VPMU_PARTITION=%d",
			    o->backend == KVM_BACKEND_AUTO ? "auto" : "ioctl requested", dev, cap);
		break;
	}
	default:
		r = -EINVAL;
	}

	/* Enforcing backends start from what the kernel holds, which also
	 * proves the ioctls work: a stock kernel refuses the first one. */
	if (r == 0 && (p->backend == KVM_BACKEND_IOCTL || p->backend == KVM_BACKEND_MODEL)) {
		for (unsigned c = 0; c < p->n_cpus && r == 0; c++)
			r = sync_cpu(p, c);
		if (r < 0)
			snprintf(why, whylen, "%s backend: KVM_VPMU_GET_PARTITION: %s%s",
				 kvm_port_backend_name(p->backend), strerror(-r),
				 p->backend == KVM_BACKEND_IOCTL && (r == -ENOTTY || r == -EINVAL)
					 ? " (kernel lacks the vpmu extension)" : "");
	}
	if (r < 0)
		return r;
	if (why && whylen)
		snprintf(why, whylen, "%s", p->why);
	*out = TAKE_PTR(p);
	return 0;
}

static void vm_release(struct port_vm *vm)
{
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	free(vm->vcpus);
}

void kvm_port_close(struct kvm_port *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_vms; i++)
		vm_release(&p->vms[i]);
	free(p->vms);
	if (p->own_model)
		kvm_model_free(p->model);
	if (p->devfd >= 0)
		close(p->devfd);
	free(p->cpus);
	free(p->why);
	free(p);
}

enum kvm_backend kvm_port_backend(const struct kvm_port *p) { return p->backend; }
bool kvm_port_enforced(const struct kvm_port *p)
{
	return p->backend == KVM_BACKEND_IOCTL || p->backend == KVM_BACKEND_MODEL;
}
const char *kvm_port_why(const struct kvm_port *p) { return p->why ? p->why : ""; }

static struct port_vm *find_vm(const struct kvm_port *p, uint64_t vm_id)
{
	for (size_t i = 0; i < p->n_vms; i++)
		if (p->vms[i].vm_id == vm_id)
			return &p->vms[i];
	return NULL;
}

static int read_vcpu_routes(struct kvm_port *p, struct port_vm *vm, unsigned id)
{
	struct kvm_vpmu_routes q = { .size = sizeof(q), .pidfd = vm->pidfd, .vm_fd = vm->vm_fd,
				     .vcpu_id = id };
	int r = issue(p, KVM_VPMU_GET_ROUTES, &q);
	if (r < 0)
		return r;
	struct port_vcpu *v = &vm->vcpus[id];
	memcpy(v->gp, q.gp, sizeof(v->gp));
	memcpy(v->fixed, q.fixed, sizeof(v->fixed));
	memcpy(v->allowed, q.allowed_cpus, sizeof(v->allowed));
	vm->generation = q.generation;
	return 0;
}

int kvm_port_register_vm(struct kvm_port *p, const struct kvm_port_vm *spec, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (!p || !spec || spec->n_vcpus == 0 || spec->n_vcpus > VMM_MAX_VCPUS || spec->vm_fd < 0 ||
	    spec->vmm_pid <= 0) {
		snprintf(why, whylen, "invalid VM description");
		return -EINVAL;
	}
	if (find_vm(p, spec->vm_id)) {
		snprintf(why, whylen, "vm %llu already registered", (unsigned long long)spec->vm_id);
		return -EEXIST;
	}
	int pidfd = spec->vmm_pidfd >= 0 ? fcntl(spec->vmm_pidfd, F_DUPFD_CLOEXEC, 3)
					 : vmm_discover_pidfd_open(spec->vmm_pid);
	if (pidfd < 0) {
		int e = spec->vmm_pidfd >= 0 ? -errno : pidfd;
		snprintf(why, whylen, "pid %d: %s", (int)spec->vmm_pid, strerror(-e));
		return e == -EINVAL ? -ESRCH : e;
	}
	/* The pidfd must name the pid we were given, or a caller's mistake
	 * would lease some other process. */
	int pid = vmm_discover_pidfd_pid(pidfd);
	int r = 0;
	if (pid < 0) {
		r = pid;
	} else if (pid != spec->vmm_pid) {
		r = -EINVAL;
	} else {
		int kind = vmm_discover_fd_kind(NULL, pid, spec->vm_fd, NULL);
		if (kind != VMM_FD_KVM_VM)
			r = vmm_discover_pidfd_alive(pidfd) == 0 ? -ESRCH : -EBADF;
	}
	if (r < 0) {
		snprintf(why, whylen, "pid %d fd %d: %s", (int)spec->vmm_pid, spec->vm_fd,
			 r == -EBADF ? "not a KVM VM" : strerror(-r));
		close(pidfd);
		return r;
	}
	struct port_vm *nv = reallocarray(p->vms, p->n_vms + 1, sizeof(*nv));
	if (!nv) {
		close(pidfd);
		return -ENOMEM;
	}
	p->vms = nv;
	struct port_vm *vm = &nv[p->n_vms];
	*vm = (struct port_vm){ .vm_id = spec->vm_id, .pid = pid, .pidfd = pidfd,
				.vm_fd = spec->vm_fd, .n_vcpus = spec->n_vcpus };
	vm->vcpus = calloc(spec->n_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		close(pidfd);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < spec->n_vcpus; i++) {
		vm->vcpus[i].tid = spec->vcpu_tids ? spec->vcpu_tids[i] : 0;
		default_routes(p, &vm->vcpus[i]);
	}
	if (kvm_port_enforced(p)) {
		for (unsigned i = 0; i < spec->n_vcpus && r == 0; i++)
			r = read_vcpu_routes(p, vm, i);
		if (r < 0) {
			snprintf(why, whylen, "vm %llu: KVM_VPMU_GET_ROUTES: %s",
				 (unsigned long long)spec->vm_id, strerror(-r));
			vm_release(vm);
			return r;
		}
	}
	p->n_vms++;
	return 0;
}

int kvm_port_unregister_vm(struct kvm_port *p, uint64_t vm_id)
{
	struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm)
		return -ENOENT;
	vm_release(vm);
	*vm = p->vms[--p->n_vms];
	return 0;
}

static bool allowed_has(const uint64_t *a, unsigned cpu) { return (a[cpu / 64] >> (cpu % 64)) & 1; }

/* The CPUs a vCPU may run on now, as far as we can tell: what its lease
 * declares (libvirt pins, the operator's cpus), else its thread's affinity,
 * else every CPU (the conservative answer: pass-through then needs the
 * counter everywhere). The routes ioctl carries this set, so a kernel
 * multiplexes the PMC on any entry outside it (docs/kvm-api.md). */
static int vcpu_allowed(const struct kvm_port *p, const struct port_vcpu *v, uint64_t *out)
{
	memset(out, 0, KVM_VPMU_CPU_WORDS * sizeof(*out));
	bool any = false;
	if (v->declared) {
		for (unsigned c = 0; c < p->n_cpus; c++)
			if (allowed_has(v->declared_cpus, c)) {
				out[c / 64] |= 1ull << (c % 64);
				any = true;
			}
		if (any)
			return 0;
	}
	if (v->tid > 0) {
		cpu_set_t *set = CPU_ALLOC(KVM_VPMU_MAX_CPUS);
		size_t sz = CPU_ALLOC_SIZE(KVM_VPMU_MAX_CPUS);
		if (!set)
			return -ENOMEM;
		CPU_ZERO_S(sz, set);
		if (sched_getaffinity(v->tid, sz, set) < 0) {
			int e = -errno;
			CPU_FREE(set);
			return e;
		}
		for (unsigned c = 0; c < p->n_cpus; c++) {
			if (CPU_ISSET_S(c, sz, set)) {
				out[c / 64] |= 1ull << (c % 64);
				any = true;
			}
		}
		CPU_FREE(set);
	}
	if (!any)
		for (unsigned c = 0; c < p->n_cpus; c++)
			out[c / 64] |= 1ull << (c % 64);
	return 0;
}

static uint32_t pt_mask(const uint8_t *routes, unsigned n)
{
	uint32_t m = 0;
	for (unsigned i = 0; i < n; i++)
		if (routes[i] == KVM_VPMU_ROUTE_PASSTHROUGH)
			m |= 1u << i;
	return m;
}

static int validate(const struct kvm_port *p, const struct transition *t, unsigned prev_phase,
		    char *why, size_t whylen)
{
	if (t->phase != 1 && t->phase != 2) {
		snprintf(why, whylen, "phase %u is neither 1 nor 2", t->phase);
		return -EINVAL;
	}
	if (t->phase < prev_phase) {
		snprintf(why, whylen, "phase 1 step after a phase 2 step");
		return -EINVAL;
	}
	if (t->kind == TRANSITION_PARTITION) {
		if (t->cpu < 0 || (unsigned)t->cpu >= p->n_cpus) {
			snprintf(why, whylen, "cpu %d outside 0..%u", t->cpu, p->n_cpus - 1);
			return -EINVAL;
		}
		if ((t->guest_gp_mask & ~host_gp_mask(p)) || (t->guest_fixed_mask & ~p->fixed_mask)) {
			snprintf(why, whylen, "cpu %d: partition names counters the host lacks", t->cpu);
			return -EINVAL;
		}
		return 0;
	}
	if (t->kind != TRANSITION_ROUTES) {
		snprintf(why, whylen, "unknown transition kind %d", (int)t->kind);
		return -EINVAL;
	}
	const struct port_vm *vm = find_vm(p, t->vm_id);
	if (!vm) {
		snprintf(why, whylen, "vm %llu is not registered", (unsigned long long)t->vm_id);
		return -ENOENT;
	}
	if (t->vcpu >= vm->n_vcpus) {
		snprintf(why, whylen, "vm %llu has no vcpu %u", (unsigned long long)t->vm_id, t->vcpu);
		return -ENOENT;
	}
	for (unsigned i = 0; i < TRANSITION_MAX_GP; i++) {
		if (t->gp_route[i] > PMC_ROUTE_PASSTHROUGH ||
		    (t->gp_route[i] != PMC_ROUTE_DISABLED && !gp_exists(p, i))) {
			snprintf(why, whylen, "vm %llu vcpu %u: bad route %u for gp %u",
				 (unsigned long long)t->vm_id, t->vcpu, t->gp_route[i], i);
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++) {
		if (t->fixed_route[i] > PMC_ROUTE_PASSTHROUGH ||
		    (t->fixed_route[i] != PMC_ROUTE_DISABLED && !fixed_exists(p, i))) {
			snprintf(why, whylen, "vm %llu vcpu %u: bad route %u for fixed %u",
				 (unsigned long long)t->vm_id, t->vcpu, t->fixed_route[i], i);
			return -EINVAL;
		}
	}
	return 0;
}

/* The same ordering rules the kernel enforces, checked on our own view
 * first: in advisory mode nobody else checks them. */
static int guard_partition(const struct kvm_port *p, const struct transition *t, char *why,
			   size_t whylen)
{
	const struct port_cpu *c = &p->cpus[t->cpu];
	uint32_t gp_gone = c->gp & ~t->guest_gp_mask, fixed_gone = c->fixed & ~t->guest_fixed_mask;
	for (size_t i = 0; i < p->n_vms; i++) {
		for (unsigned j = 0; j < p->vms[i].n_vcpus; j++) {
			const struct port_vcpu *v = &p->vms[i].vcpus[j];
			if (!allowed_has(v->allowed, (unsigned)t->cpu))
				continue;
			uint32_t g = pt_mask(v->gp, KVM_VPMU_MAX_GP) & gp_gone;
			uint32_t f = pt_mask(v->fixed, KVM_VPMU_MAX_FIXED) & fixed_gone;
			if (g || f) {
				snprintf(why, whylen, "cpu %d: shrinking under vm %llu vcpu %u's "
					 "pass-through (gp 0x%x fixed 0x%x)", t->cpu,
					 (unsigned long long)p->vms[i].vm_id, j, g, f);
				return -EBUSY;
			}
		}
	}
	return 0;
}

static int guard_routes(const struct kvm_port *p, const struct transition *t,
			const uint64_t *allowed, char *why, size_t whylen)
{
	uint32_t g = pt_mask(t->gp_route, TRANSITION_MAX_GP), f = pt_mask(t->fixed_route, TRANSITION_MAX_FIXED);
	for (unsigned c = 0; c < p->n_cpus; c++) {
		if (!allowed_has(allowed, c))
			continue;
		uint32_t bg = g & ~p->cpus[c].gp, bf = f & ~p->cpus[c].fixed;
		if (bg || bf) {
			snprintf(why, whylen, "vm %llu vcpu %u: pass-through of gp 0x%x fixed 0x%x, "
				 "which cpu %u keeps for the host", (unsigned long long)t->vm_id,
				 t->vcpu, bg, bf, c);
			return -EBUSY;
		}
	}
	return 0;
}

static int apply_partition(struct kvm_port *p, const struct transition *t, char *why, size_t whylen)
{
	int r = guard_partition(p, t, why, whylen);
	if (r < 0)
		return r;
	struct port_cpu *c = &p->cpus[t->cpu];
	if (kvm_port_enforced(p)) {
		struct kvm_vpmu_partition q;
		kvm_port_encode_partition(t, c->generation, &q);
		r = issue(p, KVM_VPMU_SET_PARTITION, &q);
		if (r < 0) {
			snprintf(why, whylen, "cpu %d: KVM_VPMU_SET_PARTITION: %s", t->cpu, strerror(-r));
			if (r == -ESTALE)
				sync_cpu(p, (unsigned)t->cpu);
			return r;
		}
		c->generation = q.generation;
	}
	c->gp = t->guest_gp_mask;
	c->fixed = t->guest_fixed_mask;
	return 0;
}

static int apply_routes(struct kvm_port *p, const struct transition *t, char *why, size_t whylen)
{
	struct port_vm *vm = find_vm(p, t->vm_id);
	struct port_vcpu *v = &vm->vcpus[t->vcpu];
	uint64_t allowed[KVM_VPMU_CPU_WORDS];
	int r = vcpu_allowed(p, v, allowed);
	if (r < 0) {
		snprintf(why, whylen, "vm %llu vcpu %u thread %d: sched_getaffinity: %s",
			 (unsigned long long)t->vm_id, t->vcpu, (int)v->tid, strerror(-r));
		return r;
	}
	if ((r = guard_routes(p, t, allowed, why, whylen)) < 0)
		return r;
	if (kvm_port_enforced(p)) {
		struct kvm_vpmu_routes q;
		kvm_port_encode_routes(t, vm->pidfd, vm->vm_fd, vm->generation, allowed, &q);
		r = issue(p, KVM_VPMU_SET_ROUTES, &q);
		if (r < 0) {
			snprintf(why, whylen, "vm %llu vcpu %u: KVM_VPMU_SET_ROUTES: %s",
				 (unsigned long long)t->vm_id, t->vcpu, strerror(-r));
			if (r == -ESTALE)
				read_vcpu_routes(p, vm, t->vcpu);
			return r;
		}
		vm->generation = q.generation;
	}
	memcpy(v->gp, t->gp_route, sizeof(v->gp));
	memcpy(v->fixed, t->fixed_route, sizeof(v->fixed));
	memcpy(v->allowed, allowed, sizeof(v->allowed));
	return 0;
}

int kvm_port_apply(struct kvm_port *p, const struct transition *t, size_t n,
		   struct kvm_apply_result *res)
{
	if (!res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if (!p || (!t && n)) {
		res->error = -EINVAL;
		return res->error;
	}
	unsigned phase = 1;
	for (size_t i = 0; i < n; i++) {
		int r = validate(p, &t[i], phase, res->why, sizeof(res->why));
		if (r < 0) {
			res->error = r;
			res->failed = i;
			return r;
		}
		phase = t[i].phase;
	}
	for (size_t i = 0; i < n; i++) {
		int r = t[i].kind == TRANSITION_PARTITION
				? apply_partition(p, &t[i], res->why, sizeof(res->why))
				: apply_routes(p, &t[i], res->why, sizeof(res->why));
		if (r < 0) {
			res->error = r;
			res->failed = i;
			return r;
		}
		res->applied = i + 1;
	}
	return 0;
}

int kvm_port_partition(const struct kvm_port *p, unsigned cpu, uint32_t *gp, uint32_t *fixed)
{
	if (!p || cpu >= p->n_cpus || !gp || !fixed)
		return -EINVAL;
	*gp = p->cpus[cpu].gp;
	*fixed = p->cpus[cpu].fixed;
	return 0;
}

int kvm_port_routes(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu,
		    uint8_t gp[KVM_VPMU_MAX_GP], uint8_t fixed[KVM_VPMU_MAX_FIXED])
{
	const struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm || vcpu >= vm->n_vcpus)
		return -ENOENT;
	memcpy(gp, vm->vcpus[vcpu].gp, KVM_VPMU_MAX_GP);
	memcpy(fixed, vm->vcpus[vcpu].fixed, KVM_VPMU_MAX_FIXED);
	return 0;
}

int kvm_port_vcpu_stats(struct kvm_port *p, uint64_t vm_id, unsigned vcpu,
			struct kvm_vpmu_vcpu_stats *out)
{
	const struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm || vcpu >= vm->n_vcpus || !out)
		return -ENOENT;
	if (!kvm_port_enforced(p))
		return -EOPNOTSUPP;
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->pidfd = vm->pidfd;
	out->vm_fd = vm->vm_fd;
	out->vcpu_id = vcpu;
	return issue(p, KVM_VPMU_GET_VCPU_STATS, out);
}

int kvm_port_report(const struct kvm_port *p, char *buf, size_t len)
{
	size_t off = 0;
	int w;
#define EMIT(...)                                                              \
	do {                                                                   \
		w = snprintf(buf + (off < len ? off : len), off < len ? len - off : 0, __VA_ARGS__); \
		if (w < 0)                                                     \
			return w;                                              \
		off += (size_t)w;                                              \
	} while (0)
	EMIT("kvm port: backend %s (%s)\n", kvm_port_backend_name(p->backend), p->why);
	EMIT("kvm port: guest routes %s\n",
	     p->backend == KVM_BACKEND_IOCTL ? "enforced by the kernel"
	     : p->backend == KVM_BACKEND_MODEL ? "enforced by the in-process model only (simulated)"
					       : "NOT enforced: stock kernel, the plan is advisory");
	unsigned shown = 0;
	for (unsigned c = 0; c < p->n_cpus; c++) {
		if (!p->cpus[c].gp && !p->cpus[c].fixed)
			continue;
		if (shown++ < 16)
			EMIT("kvm port: cpu %u guest partition gp 0x%x fixed 0x%x\n", c, p->cpus[c].gp,
			     p->cpus[c].fixed);
	}
	if (shown > 16)
		EMIT("kvm port: ... and %u more cpus with a guest partition\n", shown - 16);
	if (!shown)
		EMIT("kvm port: no guest partition on any cpu\n");
	for (size_t i = 0; i < p->n_vms; i++) {
		const struct port_vm *vm = &p->vms[i];
		unsigned pt = 0;
		for (unsigned j = 0; j < vm->n_vcpus; j++)
			pt += (unsigned)__builtin_popcount(pt_mask(vm->vcpus[j].gp, KVM_VPMU_MAX_GP)) +
			      (unsigned)__builtin_popcount(pt_mask(vm->vcpus[j].fixed, KVM_VPMU_MAX_FIXED));
		EMIT("kvm port: vm %llu pid %d fd %d: %u vcpus, %u pass-through PMCs%s\n",
		     (unsigned long long)vm->vm_id, (int)vm->pid, vm->vm_fd, vm->n_vcpus, pt,
		     kvm_port_enforced(p) ? "" : " (planned, not enforced)");
	}
#undef EMIT
	return (int)off;
}

int kvm_port_set_vcpu_cpus(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, const uint64_t *cpus)
{
	struct port_vm *vm = find_vm(p, vm_id);
	if (!vm)
		return -ENOENT;
	if (vcpu >= vm->n_vcpus)
		return -EINVAL;
	struct port_vcpu *v = &vm->vcpus[vcpu];
	if (!cpus) {
		v->declared = false;
		return 0;
	}
	memcpy(v->declared_cpus, cpus, sizeof(v->declared_cpus));
	v->declared = true;
	return 0;
}
