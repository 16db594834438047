/* SPDX-License-Identifier: MIT */
/*
 * The in-process model of vpmu version 2's kernel side. Every rule of
 * docs/kvm-api.md (P1..P11, K1..K17) is checked at exactly one place below,
 * preceded by a comment naming it; kvm_model_check verifies the invariants.
 *
 * The model keeps the state the kernel would keep: per CPU the guest
 * reservation, host perf's pinned demand and the physical counter values
 * (each tagged with the owner that counted it, so that a value crossing an
 * owner change is caught); per VM the vCPUs with their pass-through masks,
 * guest PMC values and statistics. One mutex serialises every entry point,
 * as KVM's vCPU mutex and perf's context lock serialise the real thing.
 */
#include "kvm/kvm_model.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <linux/kvm.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto/cleanup.h"

/* Counter bits of the PERF_GLOBAL_CTRL layout: GP 0..31, fixed 32..47. */
#define PMC_BITS 48

/* Owners of a physical counter's value; vCPUs get tokens from
 * OWNER_FIRST_VCPU on, never reused within a model. */
#define OWNER_NONE 0
#define OWNER_HOST 1
#define OWNER_FIRST_VCPU 2

/* KVM's own name size for binary stats (KVM_STATS_NAME_SIZE in the kernel). */
#define STATS_NAME_SIZE 48
#define VM_FILE_LINK "anon_inode:kvm-vm"
#define PIDFD_LINK "anon_inode:[pidfd]"

/* The fixed counters KVM can give a guest (0..2: instructions, cycles,
 * ref cycles); the model's caps/guest_reservable is the host's general
 * counters and those of its fixed ones. */
#define GUEST_FIXED_COUNTERS (VPMU_FIXED_BIT(0) | VPMU_FIXED_BIT(1) | VPMU_FIXED_BIT(2))

#define for_each_bit(i, mask)                                                               \
	for (uint64_t _rest_ = (mask), i; _rest_ && ((i = __builtin_ctzll(_rest_)), 1);     \
	     _rest_ &= _rest_ - 1)

struct model_stats {
	uint64_t frozen_entries, msr_exits, estimated_reads, route_changes;
};

struct model_vcpu {
	uint32_t id;
	uint64_t shape;        /* its CPUID leaf 0xA (K18), PERF_GLOBAL_CTRL layout */
	bool entered;          /* has entered the guest: CPUID is frozen (K18) */
	uint64_t owner;        /* this vCPU's owner token */
	uint64_t passthrough;
	int loaded_cpu;        /* -1: not loaded */
	uint64_t live;         /* pass-through PMCs in the hardware of loaded_cpu */
	uint64_t frozen;       /* pass-through PMCs frozen on loaded_cpu (K14) */
	/* Guest values that are not in hardware: saved at put, held while
	 * frozen, or the perf event's count while multiplexed. A PMC in live
	 * has its value in the physical counter and 0 here, so that a value
	 * lives in exactly one place. */
	uint64_t value[PMC_BITS];
	struct model_stats stats;
};

struct model_vm {
	/* A dup of the VM file: the VM's identity (kcmp) and the model's
	 * reference on it, so that the file (and its kcmp identity) cannot
	 * be recycled while the model knows the VM. */
	int ref_fd;
	int pidfd;             /* the VMM (K6), -1: none */
	bool dead;
	uint64_t shape;
	size_t route_fds;      /* open route fds; the VM is forgotten at 0 */
	size_t n_vcpus;
	struct model_vcpu *vcpus;
};

struct model_route {
	int fd;
	struct model_vm *vm;
};

struct model_cpu {
	bool online;
	uint64_t reserved;
	unsigned pinned_gp;
	uint64_t pinned_fixed;
	struct model_vcpu *loaded;
	uint64_t value[PMC_BITS];
	uint64_t value_owner[PMC_BITS];
};

struct kvm_model {
	/* A pointer so that the const readers can lock it too. */
	pthread_mutex_t *lock;
	unsigned n_cpus, num_gp;
	uint64_t host_counters;  /* every counter this PMU has */
	uint64_t reservable;     /* the ones perf may reserve for guests */
	unsigned caps;
	uint64_t uniform_mask;   /* without PER_CPU: every online CPU's mask */
	char *procfs;
	struct model_cpu *cpus;
	struct model_vm **vms;
	size_t n_vms;
	struct model_route *routes;
	size_t n_routes;
	uint64_t next_owner;
};

static pthread_mutex_t *model_lock(const struct kvm_model *m)
{
	pthread_mutex_lock(m->lock);
	return m->lock;
}

static void model_unlockp(pthread_mutex_t **l)
{
	if (*l)
		pthread_mutex_unlock(*l);
}

#define LOCK_MODEL_FOR_SCOPE(m) \
	_cleanup_(model_unlockp) pthread_mutex_t *_held_ __attribute__((unused)) = model_lock(m)

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool one_bit(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* ------------------------------------------------------------ lifetime */

static void vm_free(struct model_vm *vm)
{
	if (!vm)
		return;
	if (vm->ref_fd >= 0)
		close(vm->ref_fd);
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	free(vm->vcpus);
	free(vm);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct model_vm *, vm_free)

/* Whether the fd numbered as route record i still is that VM's file. */
static bool route_still_open(const struct kvm_model *m, size_t i);

void kvm_model_free(struct kvm_model *m)
{
	if (!m)
		return;
	/* A number closed behind the model's back may be someone else's now. */
	for (size_t i = 0; i < m->n_routes; i++)
		if (route_still_open(m, i))
			close(m->routes[i].fd);
	for (size_t i = 0; i < m->n_vms; i++)
		vm_free(m->vms[i]);
	free(m->routes);
	free(m->vms);
	free(m->cpus);
	free(m->procfs);
	if (m->lock) {
		pthread_mutex_destroy(m->lock);
		free(m->lock);
	}
	free(m);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct kvm_model *, kvm_model_free)

int kvm_model_new(const struct kvm_model_opts *o, struct kvm_model **out)
{
	if (!o || !out || o->n_cpus == 0 || o->n_cpus > KVM_MODEL_MAX_CPUS ||
	    o->num_gp > VPMU_MAX_GP || (o->fixed_mask >> VPMU_MAX_FIXED))
		return -EINVAL;
	/* P1: the capability is one of the two kernels the spec allows: one
	 * taking only a uniform reservation, or one taking per-CPU masks
	 * (which can express a uniform one too). */
	unsigned caps = o->reserve_caps ? o->reserve_caps : VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU;
	if (caps != VPMU_RESERVE_CAP_UNIFORM && caps != (VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU))
		return -EINVAL;

	_cleanup_(kvm_model_freep) struct kvm_model *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->lock = malloc(sizeof(*m->lock));
	if (!m->lock)
		return -ENOMEM;
	pthread_mutex_init(m->lock, NULL);
	m->cpus = calloc(o->n_cpus, sizeof(*m->cpus));
	m->procfs = strdup(o->procfs_root ? o->procfs_root : "/proc");
	if (!m->cpus || !m->procfs)
		return -ENOMEM;
	m->n_cpus = o->n_cpus;
	m->num_gp = o->num_gp;
	uint64_t gp = o->num_gp == 0 ? 0 : (VPMU_GP_MASK >> (VPMU_MAX_GP - o->num_gp));
	m->host_counters = gp | ((uint64_t)o->fixed_mask << VPMU_FIXED_SHIFT);
	m->reservable = m->host_counters & (VPMU_GP_MASK | GUEST_FIXED_COUNTERS);
	m->caps = caps;
	m->next_owner = OWNER_FIRST_VCPU;
	for (unsigned c = 0; c < m->n_cpus; c++)
		m->cpus[c].online = true;
	*out = TAKE_PTR(m);
	return 0;
}

/* -------------------------------------------------------- file identity */

/* 1 when fds a and b are the same open file, 0 when not, -errno when the
 * kernel cannot tell (kcmp needs CONFIG_KCMP and may be filtered). */
static int same_open_file(int a, int b)
{
	pid_t self = getpid();
	long r = syscall(SYS_kcmp, self, self, KCMP_FILE, (unsigned long)a, (unsigned long)b);
	if (r < 0)
		return -errno;
	return r == 0;
}

/* Whether fd's /proc link reads exactly want. Only equality matters, so a
 * buffer one byte longer than want tells a longer link apart. */
static bool fd_link_is(const struct kvm_model *m, int fd, const char *want)
{
	_cleanup_free_ char *path = alloc_printf("%s/self/fd/%d", m->procfs, fd);
	size_t wl = strlen(want);
	_cleanup_free_ char *got = malloc(wl + 2);
	if (!path || !got)
		return false;
	ssize_t n = readlink(path, got, wl + 1);
	return n == (ssize_t)wl && memcmp(got, want, wl) == 0;
}

static bool fd_open(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) >= 0;
}

/* ------------------------------------------------------------ VM death */

/* VM exit of a running vCPU (K13's save and scrub); defined with the
 * guest activity below. */
static void vcpu_put(struct kvm_model *m, struct model_vcpu *v);

static void vm_unload(struct kvm_model *m, struct model_vm *vm)
{
	for (size_t i = 0; i < vm->n_vcpus; i++)
		if (vm->vcpus[i].loaded_cpu >= 0)
			vcpu_put(m, &vm->vcpus[i]);
}

/* Notices the VMM's exit: its pidfd is readable once the process has
 * exited. A dead VM's vCPUs no longer run, so they leave the CPUs. */
static bool vm_dead(struct kvm_model *m, struct model_vm *vm)
{
	if (vm->dead || vm->pidfd < 0)
		return vm->dead;
	struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
		vm->dead = true;
		vm_unload(m, vm);
	}
	return vm->dead;
}

static void reap_dead_vms(struct kvm_model *m)
{
	for (size_t i = 0; i < m->n_vms; i++)
		(void)vm_dead(m, m->vms[i]);
}

size_t kvm_model_vm_count(struct kvm_model *m)
{
	if (!m)
		return 0;
	LOCK_MODEL_FOR_SCOPE(m);
	size_t n = 0;
	for (size_t i = 0; i < m->n_vms; i++)
		n += !vm_dead(m, m->vms[i]);
	return n;
}

/* ------------------------------------------------- physical counters */

static void phys_clear(struct model_cpu *c, unsigned bit)
{
	c->value[bit] = 0;
	c->value_owner[bit] = OWNER_NONE;
}

/* Who may hold a value in counter bit of cpu c right now. */
static uint64_t phys_owner(const struct model_cpu *c, unsigned bit)
{
	if (!((c->reserved >> bit) & 1))
		return OWNER_HOST;
	if (c->loaded && ((c->loaded->live >> bit) & 1))
		return c->loaded->owner;
	return OWNER_NONE;
}

/* ---------------------------------------------------- guest activity */

/* VM entry (D5: the model's "vCPU load" is the mediated vPMU's load at VM
 * entry, interrupts off); returns the number of frozen PMCs. */
static int vcpu_load(struct kvm_model *m, struct model_vcpu *v, unsigned cpu)
{
	struct model_cpu *c = &m->cpus[cpu];
	v->loaded_cpu = (int)cpu;
	c->loaded = v;
	/* K14: at VM entry the pass-through PMCs cpu reserves go to hardware;
	 * the others are frozen there (value held, accesses intercepted),
	 * since KVM cannot switch perf events at VM entry; each such entry
	 * counts once in pmu_passthrough_frozen_entries. */
	v->live = v->passthrough & c->reserved;
	v->frozen = v->passthrough & ~c->reserved;
	for_each_bit(b, v->live) {
		c->value[b] = v->value[b];
		c->value_owner[b] = v->owner;
		v->value[b] = 0;
	}
	if (v->frozen)
		v->stats.frozen_entries++;
	return __builtin_popcountll(v->frozen);
}

/* VM exit (D5: the mediated vPMU's put, kvm_mediated_pmu_put from
 * vcpu_enter_guest, not the scheduler's vCPU put). */
static void vcpu_put(struct kvm_model *m, struct model_vcpu *v)
{
	struct model_cpu *c = &m->cpus[v->loaded_cpu];
	/* K13: at VM exit the guest's pass-through values are saved and their
	 * physical counters scrubbed on this CPU, so the next owner of its guest
	 * partition (another vCPU, or host perf after a reservation change)
	 * finds nothing of this guest. */
	for_each_bit(b, v->live) {
		v->value[b] = c->value[b];
		phys_clear(c, (unsigned)b);
	}
	c->loaded = NULL;
	v->loaded_cpu = -1;
	v->live = v->frozen = 0;
}

/* ------------------------------------------------------------ perf half */

unsigned kvm_model_reserve_caps(const struct kvm_model *m)
{
	return m ? m->caps : 0;
}

uint64_t kvm_model_reservable(const struct kvm_model *m)
{
	return m ? m->reservable : 0;
}

/* "0x" and 1..16 hex digits. */
static bool parse_hex_mask(const char *s, const char *end, uint64_t *out)
{
	if (end - s < 3 || end - s > 18 || s[0] != '0' || s[1] != 'x')
		return false;
	uint64_t v = 0;
	for (s += 2; s < end; s++) {
		int d = *s >= '0' && *s <= '9' ? *s - '0'
		      : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
		      : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10 : -1;
		if (d < 0)
			return false;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return true;
}

static int reserve_parse(const char *buf, size_t len, uint64_t *mask)
{
	if (len && buf[len - 1] == '\n')
		len--;
	/* P2: one value per file: "0x<hex mask>", the newline optional;
	 * anything else (a second value, another newline, a NUL) is EINVAL. */
	if (!parse_hex_mask(buf, buf + len, mask))
		return -EINVAL;
	return 0;
}

/* Which file a cpu argument names: -1 the uniform guest_reserve, else
 * that CPU's perf_guest_reserve. */
static int reserve_check_file(const struct kvm_model *m, int cpu)
{
	/* P5: the per-CPU files exist only with VPMU_RESERVE_CAP_PER_CPU; a
	 * uniform-only kernel has none, so opening one fails ENOENT. */
	if (cpu >= 0 && !(m->caps & VPMU_RESERVE_CAP_PER_CPU))
		return -ENOENT;
	return 0;
}

static int reserve_check_cpu(const struct kvm_model *m, int cpu)
{
	/* P3: a per-CPU write names an online CPU below nr CPUs (an offline
	 * CPU's file refuses writes); the uniform file sets every online CPU. */
	if (cpu < -1 || cpu >= (int)m->n_cpus || (cpu >= 0 && !m->cpus[cpu].online))
		return -EINVAL;
	return 0;
}

static int reserve_check_counters(const struct kvm_model *m, uint64_t mask)
{
	/* P4: only counters in caps/guest_reservable (this PMU's general
	 * counters and the fixed ones KVM can give a guest, 0..2), never
	 * PERF_METRICS or above. */
	if (mask & ~m->reservable)
		return -EINVAL;
	return 0;
}

/* Whether cpu's pinned host events fit the counters mask leaves to perf. */
static bool pinned_fit(const struct kvm_model *m, unsigned cpu, uint64_t mask)
{
	const struct model_cpu *c = &m->cpus[cpu];
	uint64_t left = m->host_counters & ~mask;
	return c->pinned_gp <= (unsigned)__builtin_popcountll(left & VPMU_GP_MASK) &&
	       !(c->pinned_fixed & ~left);
}

static int reserve_check_pinned(const struct kvm_model *m, const bool *listed, uint64_t mask)
{
	bool fits = true;
	for (unsigned c = 0; c < m->n_cpus; c++)
		fits &= !listed[c] || pinned_fit(m, c, mask);
	/* P6: perf moves events between counters, so the test is whether the
	 * pinned demand fits what is left, not which counter an event holds. */
	if (!fits)
		return -EBUSY;
	return 0;
}

/* The counters reserved on some online CPU, under the proposed masks. */
static uint64_t reserved_somewhere(const struct kvm_model *m, const uint64_t *masks, const bool *online)
{
	uint64_t any = 0;
	for (unsigned c = 0; c < m->n_cpus; c++)
		if (online[c])
			any |= masks[c];
	return any;
}

/* The pass-through counters of every live vCPU (deaths already reaped). */
static uint64_t live_passthrough(const struct kvm_model *m)
{
	uint64_t pt = 0;
	for (size_t i = 0; i < m->n_vms; i++) {
		const struct model_vm *vm = m->vms[i];
		if (vm->dead)
			continue;
		for (size_t j = 0; j < vm->n_vcpus; j++)
			pt |= vm->vcpus[j].passthrough;
	}
	return pt;
}

/* Used by a reservation write and by a CPU going offline. */
static int reserve_check_live_routes(const struct kvm_model *m, const uint64_t *masks, const bool *online)
{
	/* P7: no live pass-through counter may end up reserved on no online
	 * CPU; shrinking under a running guest takes its routes away first. */
	if (live_passthrough(m) & ~reserved_somewhere(m, masks, online))
		return -EBUSY;
	return 0;
}

/* Sets cpu's reservation, kicking a loaded vCPU whose pass-through PMCs it
 * touches (put, then load again: KVM re-decides frozen PMCs only at entry). */
static void reserve_apply_cpu(struct kvm_model *m, unsigned cpu, uint64_t mask)
{
	struct model_cpu *c = &m->cpus[cpu];
	uint64_t flipped = c->reserved ^ mask;
	if (!flipped)
		return;
	struct model_vcpu *kicked = c->loaded && (c->loaded->passthrough & flipped) ? c->loaded : NULL;
	if (kicked)
		vcpu_put(m, kicked);
	/* P9: a counter entering or leaving the reservation changes owner
	 * (host perf <-> guests): it is cleared on this CPU. */
	for_each_bit(b, flipped)
		phys_clear(c, (unsigned)b);
	c->reserved = mask;
	if (kicked)
		vcpu_load(m, kicked, cpu);
}

int kvm_model_reserve_write(struct kvm_model *m, const struct kvm_model_caller *who, int cpu, const char *buf,
			    size_t len)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	int r;
	/* open(2) resolves the path first (P5), then checks the mode: the
	 * files are 0600 root's (D11). */
	if ((r = reserve_check_file(m, cpu)) < 0)
		return r;
	if (!who || !who->cap_sys_admin)
		return -EACCES;
	if (!buf)
		return -EFAULT;
	_cleanup_free_ bool *listed = calloc(m->n_cpus, sizeof(*listed));
	_cleanup_free_ bool *online = calloc(m->n_cpus, sizeof(*online));
	_cleanup_free_ uint64_t *next = calloc(m->n_cpus, sizeof(*next));
	if (!listed || !online || !next)
		return -ENOMEM;
	/* Noticing a VMM's exit is not part of the write: done before it. */
	reap_dead_vms(m);
	uint64_t mask = 0;
	if ((r = reserve_parse(buf, len, &mask)) < 0 || (r = reserve_check_cpu(m, cpu)) < 0 ||
	    (r = reserve_check_counters(m, mask)) < 0)
		return r;
	for (unsigned c = 0; c < m->n_cpus; c++)
		listed[c] = m->cpus[c].online && (cpu < 0 || c == (unsigned)cpu);
	if ((r = reserve_check_pinned(m, listed, mask)) < 0)
		return r;
	for (unsigned c = 0; c < m->n_cpus; c++) {
		online[c] = m->cpus[c].online;
		next[c] = listed[c] ? mask : m->cpus[c].reserved;
	}
	if ((r = reserve_check_live_routes(m, next, online)) < 0)
		return r;
	/* P8: every check above only read; from here on the write cannot
	 * fail, so a refused write has changed no CPU. */
	for (unsigned c = 0; c < m->n_cpus; c++)
		if (listed[c])
			reserve_apply_cpu(m, c, mask);
	if (!(m->caps & VPMU_RESERVE_CAP_PER_CPU))
		m->uniform_mask = mask;
	return 0;
}

int kvm_model_reserve_read(const struct kvm_model *m, int cpu, char *buf, size_t len)
{
	if (!m || (!buf && len))
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	int r;
	if ((r = reserve_check_file(m, cpu)) < 0)
		return r;
	if (cpu < -1 || cpu >= (int)m->n_cpus)
		return -EINVAL;
	uint64_t mask = 0;
	if (cpu >= 0) {
		/* An offline CPU has no reservation: its file reads 0. */
		mask = m->cpus[cpu].online ? m->cpus[cpu].reserved : 0;
	} else {
		bool first = true, differ = false;
		for (unsigned c = 0; c < m->n_cpus; c++) {
			if (!m->cpus[c].online)
				continue;
			differ |= !first && m->cpus[c].reserved != mask;
			mask = m->cpus[c].reserved;
			first = false;
		}
		/* P10: the uniform file holds one mask; when the online CPUs
		 * differ (per-CPU writes) it has none to give. */
		if (differ)
			return -ENODATA;
	}
	return snprintf(buf, len, "0x%016llx\n", (unsigned long long)mask);
}

int kvm_model_reservation(const struct kvm_model *m, unsigned cpu, uint64_t *mask)
{
	if (!m || !mask || cpu >= m->n_cpus)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	*mask = m->cpus[cpu].online ? m->cpus[cpu].reserved : 0;
	return 0;
}

int kvm_model_host_pinned(struct kvm_model *m, unsigned cpu, unsigned n_gp, uint64_t fixed_bits)
{
	if (!m || cpu >= m->n_cpus || n_gp > m->num_gp ||
	    (fixed_bits & ~(m->host_counters & VPMU_FIXED_MASK)))
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_cpu *c = &m->cpus[cpu];
	if (!c->online)
		return -EINVAL;
	unsigned old_gp = c->pinned_gp;
	uint64_t old_fixed = c->pinned_fixed;
	c->pinned_gp = n_gp;
	c->pinned_fixed = fixed_bits;
	/* perf would leave pinned events that do not fit in error state; the
	 * model refuses them so that P6 always starts from a demand that fits. */
	if (!pinned_fit(m, cpu, c->reserved)) {
		c->pinned_gp = old_gp;
		c->pinned_fixed = old_fixed;
		return -EBUSY;
	}
	return 0;
}

int kvm_model_cpu_online(struct kvm_model *m, unsigned cpu, bool online)
{
	if (!m || cpu >= m->n_cpus)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_cpu *c = &m->cpus[cpu];
	if (c->online == online)
		return 0;
	reap_dead_vms(m);
	if (!online) {
		unsigned n_online = 0;
		for (unsigned d = 0; d < m->n_cpus; d++)
			n_online += m->cpus[d].online;
		if (n_online == 1)
			return -EBUSY;
		_cleanup_free_ bool *still = calloc(m->n_cpus, sizeof(*still));
		_cleanup_free_ uint64_t *masks = calloc(m->n_cpus, sizeof(*masks));
		if (!still || !masks)
			return -ENOMEM;
		for (unsigned d = 0; d < m->n_cpus; d++) {
			still[d] = d != cpu && m->cpus[d].online;
			masks[d] = m->cpus[d].reserved;
		}
		/* The kernel's hotplug callback refuses, as P7 refuses a write,
		 * to strand a live pass-through counter. */
		int r = reserve_check_live_routes(m, masks, still);
		if (r < 0)
			return r;
		if (c->loaded)
			vcpu_put(m, c->loaded); /* its thread migrates away */
		for (unsigned b = 0; b < PMC_BITS; b++)
			phys_clear(c, b);
		c->reserved = 0;
		c->pinned_gp = 0; /* the model's host events die with the CPU */
		c->pinned_fixed = 0;
		c->online = false;
		return 0;
	}
	for (unsigned b = 0; b < PMC_BITS; b++)
		phys_clear(c, b);
	c->online = true;
	/* P11: a CPU coming online joins the uniform reservation, or (per-CPU
	 * kernel) starts with none until someone writes its mask. */
	c->reserved = (m->caps & VPMU_RESERVE_CAP_PER_CPU) ? 0 : m->uniform_mask;
	return 0;
}

int kvm_model_count(struct kvm_model *m, unsigned cpu, uint64_t pmc_bit, uint64_t delta)
{
	if (!m || cpu >= m->n_cpus || !one_bit(pmc_bit) || !(pmc_bit & m->host_counters))
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_cpu *c = &m->cpus[cpu];
	if (!c->online)
		return -EINVAL;
	if (c->reserved & pmc_bit)
		return -EBUSY; /* host perf may not use a reserved counter */
	unsigned b = (unsigned)__builtin_ctzll(pmc_bit);
	c->value[b] += delta;
	c->value_owner[b] = OWNER_HOST;
	return 0;
}

int kvm_model_phys_value(const struct kvm_model *m, unsigned cpu, uint64_t pmc_bit, uint64_t *out)
{
	if (!m || !out || cpu >= m->n_cpus || !one_bit(pmc_bit) || !(pmc_bit & m->host_counters))
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	*out = m->cpus[cpu].value[__builtin_ctzll(pmc_bit)];
	return 0;
}

/* ------------------------------------------------------------- KVM half */

static long dev_ioctl(unsigned long cmd, void *arg)
{
	if (cmd != KVM_CHECK_EXTENSION)
		return -ENOTTY;
	uintptr_t cap = (uintptr_t)arg;
	/* K1: the route fd capability, the partition flag beside DISABLE, and
	 * nothing else: the model knows no other capability. */
	return cap == KVM_CAP_VPMU_ROUTES      ? 1
	     : cap == KVM_CAP_PMU_CAPABILITY ? (long)(KVM_PMU_CAP_DISABLE | KVM_PMU_CAP_PARTITION)
					      : 0;
}

/* The VM whose file vm_file is, or NULL for a VM the model does not know. */
static struct model_vm *vm_find(struct kvm_model *m, int vm_file)
{
	for (size_t i = 0; i < m->n_vms; i++) {
		int same = same_open_file(vm_file, m->vms[i]->ref_fd);
		/* Without kcmp nothing tells two VM files apart (every KVM VM
		 * is the same anon inode), so every VM file is a new VM: a
		 * second route fd of one VM is then counted as another VM. */
		if (same < 0)
			return NULL;
		if (same)
			return m->vms[i];
	}
	return NULL;
}

/* What the VMM told KVM, as far as the model can check it: a shape
 * CPUID leaf 0xA can express on this host (a count of general counters,
 * fixed counters the host has, at most three), distinct vCPU ids, a pidfd. */
static int vm_desc_valid(const struct kvm_model *m, const struct kvm_model_vm_desc *d)
{
	uint64_t gp = d->shape & VPMU_GP_MASK;
	if ((d->shape & ~m->reservable) || (gp & (gp + 1)) || (d->nr_vcpus && !d->vcpu_ids))
		return -EINVAL;
	for (uint32_t i = 0; i < d->nr_vcpus; i++)
		for (uint32_t j = 0; j < i; j++)
			if (d->vcpu_ids[i] == d->vcpu_ids[j])
				return -EINVAL; /* KVM_CREATE_VCPU refuses a duplicate */
	if (d->vmm_pidfd >= 0 && !fd_link_is(m, d->vmm_pidfd, PIDFD_LINK))
		return -EINVAL;
	return 0;
}

static int vm_check_opt_in(const struct kvm_model_vm_desc *d)
{
	/* K2: PARTITION is asked before the first vCPU and not with DISABLE. */
	if (d->opted_in && (d->pmu_disabled || d->vcpus_before_opt_in))
		return -EINVAL;
	return 0;
}

static int vm_check_type(const struct kvm_model_vm_desc *d)
{
	/* K3: KVM cannot switch the PMU of a VM whose state it cannot read
	 * (SEV-ES, SEV-SNP, TDX), and a VM without an in-kernel local APIC
	 * has no PMI delivery (no PMU at all under the mediated vPMU). */
	if (d->opted_in && (d->protected_state || !d->lapic_in_kernel))
		return -EINVAL;
	return 0;
}

static int route_fd_check(const struct kvm_vpmu_route_fd *a)
{
	/* K4: flags, pad and reserved zero, then (vm_check_opted_in) only a
	 * VM that opted in. */
	if (a->flags || a->pad || !all_zero(a->reserved, sizeof(a->reserved)))
		return -EINVAL;
	return 0;
}

static int vm_check_opted_in(const struct kvm_model_vm_desc *d)
{
	if (!d->opted_in)
		return -EINVAL;
	return 0;
}

static int vm_new(struct kvm_model *m, int vm_file, const struct kvm_model_vm_desc *d,
		  struct model_vm **out)
{
	_cleanup_(vm_freep) struct model_vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->ref_fd = vm->pidfd = -1;
	vm->shape = d->shape;
	vm->n_vcpus = d->nr_vcpus;
	vm->vcpus = calloc(d->nr_vcpus ? d->nr_vcpus : 1, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	for (size_t i = 0; i < vm->n_vcpus; i++) {
		vm->vcpus[i].id = d->vcpu_ids[i];
		vm->vcpus[i].shape = d->shape;
		vm->vcpus[i].owner = m->next_owner++;
		vm->vcpus[i].loaded_cpu = -1;
	}
	vm->ref_fd = fcntl(vm_file, F_DUPFD_CLOEXEC, 3);
	if (vm->ref_fd < 0)
		return -errno;
	if (d->vmm_pidfd >= 0 && (vm->pidfd = fcntl(d->vmm_pidfd, F_DUPFD_CLOEXEC, 3)) < 0)
		return -errno;
	*out = TAKE_PTR(vm);
	return 0;
}

/* Forgets the record of route fd number fd, closing it only when it still
 * is the recorded VM's file; frees the VM with its last route fd. */
static void route_forget(struct kvm_model *m, size_t i, bool close_fd)
{
	struct model_vm *vm = m->routes[i].vm;
	if (close_fd)
		close(m->routes[i].fd);
	m->routes[i] = m->routes[--m->n_routes];
	if (--vm->route_fds)
		return;
	vm_unload(m, vm);
	for (size_t j = 0; j < m->n_vms; j++) {
		if (m->vms[j] == vm) {
			m->vms[j] = m->vms[--m->n_vms];
			break;
		}
	}
	vm_free(vm);
}

static ssize_t route_index(const struct kvm_model *m, int fd)
{
	for (size_t i = 0; i < m->n_routes; i++)
		if (m->routes[i].fd == fd)
			return (ssize_t)i;
	return -1;
}

static bool route_still_open(const struct kvm_model *m, size_t i)
{
	int same = same_open_file(m->routes[i].fd, m->routes[i].vm->ref_fd);
	return same < 0 ? fd_link_is(m, m->routes[i].fd, VM_FILE_LINK) : same == 1;
}

/* Whether the process behind a pidfd has exited (its pidfd is readable). */
static bool pidfd_exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	return pidfd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* Forgets the records of vm's route fds whose numbers were closed behind
 * the model's back; true when one is still open. Frees the VM with its
 * last record, so vm may be gone when this returns false. */
static bool vm_route_open(struct kvm_model *m, struct model_vm *vm)
{
	bool open = false;
	for (size_t i = 0; i < m->n_routes;) {
		if (m->routes[i].vm != vm) {
			i++;
		} else if (route_still_open(m, i)) {
			open = true;
			i++;
		} else if (vm->route_fds == 1) {
			route_forget(m, i, false);
			return false;
		} else {
			route_forget(m, i, false);
		}
	}
	return open;
}

int kvm_model_create_route_fd(struct kvm_model *m, int vm_file, const struct kvm_model_vm_desc *desc,
			      const struct kvm_vpmu_route_fd *args, int *route_fd)
{
	if (!m || !desc || !route_fd)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	/* D10's order: EBADF/ENOTTY (not a VM fd), EIO (not the VM's
	 * creator, or dead), EFAULT, EINVAL (flags, pad, reserved), EINVAL
	 * (no opt-in), EEXIST (a route fd is open). */
	if (!fd_open(vm_file))
		return -EBADF;
	if (!fd_link_is(m, vm_file, VM_FILE_LINK))
		return -ENOTTY;
	struct model_vm *known = vm_find(m, vm_file);
	if (known && !vm_route_open(m, known))
		known = NULL; /* its last route fd was closed behind our back */
	int r;
	/* What desc says is the model's input, not the kernel's: checked
	 * before any errno the kernel would give. */
	if (!known && (r = vm_desc_valid(m, desc)) < 0)
		return r;
	/* The creator check (kvm_vm_ioctl's mm check) is simulated: the
	 * caller stands in for the VMM, so a VMM that has exited is the only
	 * way to fail it; a dead VM fails the same way. */
	if (known ? vm_dead(m, known) : pidfd_exited(desc->vmm_pidfd))
		return -EIO;
	if (!args)
		return -EFAULT;
	if ((r = route_fd_check(args)) < 0)
		return r;
	if (!known && ((r = vm_check_opt_in(desc)) < 0 || (r = vm_check_type(desc)) < 0 ||
		       (r = vm_check_opted_in(desc)) < 0))
		return r;
	/* K5 (D8): one route fd per VM while it is open, so that a route fd
	 * names its VM without ambiguity: whoever holds it, no other can. */
	if (known)
		return -EEXIST;
	_cleanup_(vm_freep) struct model_vm *fresh = NULL;
	if ((r = vm_new(m, vm_file, desc, &fresh)) < 0)
		return r;
	struct model_route *nr = reallocarray(m->routes, m->n_routes + 1, sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	m->routes = nr;
	struct model_vm **nv = reallocarray(m->vms, m->n_vms + 1, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	m->vms = nv;
	_cleanup_close_ int fd = fcntl(vm_file, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return -errno;
	/* The number was free, so a record under it is of a route fd closed
	 * behind the model's back: forget it (the file is not ours to close). */
	ssize_t stale = route_index(m, fd);
	if (stale >= 0)
		route_forget(m, (size_t)stale, false);
	struct model_vm *vm = TAKE_PTR(fresh);
	m->vms[m->n_vms++] = vm;
	vm->route_fds++;
	m->routes[m->n_routes++] = (struct model_route){ .fd = fd, .vm = vm };
	*route_fd = TAKE_FD(fd);
	return 0;
}

int kvm_model_route_close(struct kvm_model *m, int fd)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	ssize_t i = route_index(m, fd);
	if (i < 0)
		return -EBADF;
	bool ours = route_still_open(m, (size_t)i);
	route_forget(m, (size_t)i, ours);
	return ours ? 0 : -EBADF;
}

/* The VM route fd fd names. */
static int route_lookup(struct kvm_model *m, int fd, struct model_vm **out)
{
	if (!fd_open(fd))
		return -EBADF;
	ssize_t i = route_index(m, fd);
	/* K5: a route fd is one the model handed out and that is still open
	 * as that VM's file; its VM is the one it was made from, whatever
	 * number it has now been given. Anything else is not a route fd. */
	if (i < 0 || !route_still_open(m, (size_t)i))
		return -ENOTTY;
	*out = m->routes[i].vm;
	return 0;
}

static int route_vm(struct kvm_model *m, int fd, struct model_vm **out)
{
	int r = route_lookup(m, fd, out);
	if (r < 0)
		return r;
	/* K6: once the VM is dead (model: its VMM exited) every route-fd
	 * ioctl fails, before anything else is looked at, as kvm_vm_ioctl
	 * checks vm_dead first. The fd keeps its reference until closed. */
	if (vm_dead(m, *out))
		return -EIO;
	return 0;
}

static int vcpu_find(struct model_vm *vm, uint32_t id, struct model_vcpu **out)
{
	struct model_vcpu *v = NULL;
	for (size_t i = 0; i < vm->n_vcpus && !v; i++)
		if (vm->vcpus[i].id == id)
			v = &vm->vcpus[i];
	/* K8: a vCPU is named by its KVM_CREATE_VCPU id, not an index. */
	if (!v)
		return -ENOENT;
	*out = v;
	return 0;
}

static long get_vcpus(struct model_vm *vm, struct kvm_vpmu_vcpus *a)
{
	/* K7: flags and reserved zero; ids in creation order, E2BIG with the
	 * count when they do not fit. */
	if (a->flags || !all_zero(a->reserved, sizeof(a->reserved)))
		return -EINVAL;
	uint32_t room = a->nr;
	a->nr = (uint32_t)vm->n_vcpus;
	if (room < vm->n_vcpus)
		return -E2BIG;
	for (size_t i = 0; i < vm->n_vcpus; i++)
		a->ids[i] = vm->vcpus[i].id;
	return 0;
}

static int routes_check_struct(const struct kvm_vpmu_routes *r, bool set)
{
	/* K9: flags and reserved zero; GET's outputs zero on input, SET's
	 * shape zero (routes cannot set it). */
	if (r->flags || !all_zero(r->reserved, sizeof(r->reserved)) || r->shape || (!set && r->passthrough))
		return -EINVAL;
	return 0;
}

static long get_routes(struct model_vm *vm, struct kvm_vpmu_routes *r)
{
	struct model_vcpu *v;
	int e;
	if ((e = routes_check_struct(r, false)) < 0 || (e = vcpu_find(vm, r->vcpu_id, &v)) < 0)
		return e;
	r->passthrough = v->passthrough;
	r->shape = v->shape;
	return 0;
}

static int routes_check_shape(const struct model_vcpu *v, uint64_t pt)
{
	/* K10: pass-through only within the vCPU's shape (which routes never
	 * change), never a fixed counter above 2 or bit 48 and above. */
	if (pt & ~(v->shape & (VPMU_GP_MASK | GUEST_FIXED_COUNTERS)))
		return -EINVAL;
	return 0;
}

static int routes_check_reserved(struct kvm_model *m, uint64_t pt)
{
	uint64_t somewhere = 0;
	for (unsigned c = 0; c < m->n_cpus; c++)
		if (m->cpus[c].online)
			somewhere |= m->cpus[c].reserved;
	/* K11: each pass-through counter is reserved on some online CPU;
	 * CPUs that lack one freeze it there (K14). */
	if (pt & ~somewhere)
		return -EBUSY;
	return 0;
}

static long set_routes(struct kvm_model *m, struct model_vm *vm, struct kvm_vpmu_routes *r)
{
	struct model_vcpu *v;
	int e;
	if ((e = routes_check_struct(r, true)) < 0 || (e = vcpu_find(vm, r->vcpu_id, &v)) < 0 ||
	    (e = routes_check_shape(v, r->passthrough)) < 0 || (e = routes_check_reserved(m, r->passthrough)) < 0)
		return e;
	if (r->passthrough == v->passthrough)
		return 0;
	/* K17: one count per change; the model lock serialises writers, so
	 * of two route fds of one VM the last write is the one that holds. */
	v->stats.route_changes++;
	/* K12: the write kicks a loaded vCPU: put saves the hardware values,
	 * the new routes take them as they are (a PMC leaving pass-through
	 * hands its value to its perf event, one entering gets the event's
	 * count), and load puts the pass-through ones back into hardware. No
	 * guest-visible value changes. */
	int cpu = v->loaded_cpu;
	if (cpu >= 0)
		vcpu_put(m, v);
	v->passthrough = r->passthrough;
	if (cpu >= 0)
		vcpu_load(m, v, (unsigned)cpu);
	return 0;
}

/* The binary stats of one vCPU in KVM_GET_STATS_FD's layout, sealed. */
static int stats_fd_build(const struct model_vcpu *v)
{
	static const char *const names[] = { VPMU_STAT_FROZEN_ENTRIES, VPMU_STAT_MSR_EXITS,
					     VPMU_STAT_ESTIMATED_READS, VPMU_STAT_ROUTE_CHANGES };
	const uint64_t data[] = { v->stats.frozen_entries, v->stats.msr_exits, v->stats.estimated_reads,
				  v->stats.route_changes };
	enum { N = sizeof(names) / sizeof(names[0]) };
	size_t desc_size = sizeof(struct kvm_stats_desc) + STATS_NAME_SIZE;
	struct kvm_stats_header h = {
		.name_size = STATS_NAME_SIZE,
		.num_desc = N,
		.id_offset = sizeof(h),
		.desc_offset = sizeof(h) + STATS_NAME_SIZE,
		.data_offset = (uint32_t)(sizeof(h) + STATS_NAME_SIZE + N * desc_size),
	};
	size_t total = h.data_offset + sizeof(data);
	_cleanup_free_ unsigned char *img = calloc(1, total);
	if (!img)
		return -ENOMEM;
	memcpy(img, &h, sizeof(h));
	snprintf((char *)img + h.id_offset, STATS_NAME_SIZE, "kvm-model/vcpu-%u", v->id);
	for (size_t i = 0; i < N; i++) {
		struct kvm_stats_desc *d = (struct kvm_stats_desc *)(img + h.desc_offset + i * desc_size);
		d->flags = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE | KVM_STATS_BASE_POW10;
		d->size = 1;
		d->offset = (uint32_t)(i * sizeof(uint64_t));
		snprintf(d->name, STATS_NAME_SIZE, "%s", names[i]);
	}
	memcpy(img + h.data_offset, data, sizeof(data));

	_cleanup_close_ int fd = memfd_create("kvm-vpmu-vcpu-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (pwrite(fd, img, total, 0) != (ssize_t)total)
		return -EIO;
	/* A stats fd is read-only for its readers. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}

static long get_stats_fd(struct model_vm *vm, const struct kvm_vpmu_stats_fd *s)
{
	struct model_vcpu *v;
	int e;
	/* K16: flags and reserved zero, then the vCPU (K8), then a snapshot
	 * of its statistics in the binary stats format. */
	if (s->flags || !all_zero(s->reserved, sizeof(s->reserved)))
		return -EINVAL;
	if ((e = vcpu_find(vm, s->vcpu_id, &v)) < 0)
		return e;
	return stats_fd_build(v);
}

long kvm_model_ioctl(struct kvm_model *m, const struct kvm_model_caller *who, int fd, unsigned long cmd,
		     void *arg)
{
	/* Route fds work from any process holding one, and KVM_CHECK_EXTENSION
	 * needs no privilege: the caller's credentials decide nothing here. */
	(void)who;
	if (!m)
		return -EINVAL;
	if (fd == -1)
		return dev_ioctl(cmd, arg);
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vm *vm;
	int r = route_vm(m, fd, &vm);
	if (r < 0)
		return r;
	switch (cmd) {
	case KVM_VPMU_GET_VCPUS:
	case KVM_VPMU_GET_ROUTES:
	case KVM_VPMU_SET_ROUTES:
	case KVM_VPMU_GET_VCPU_STATS_FD:
		break;
	default:
		return -ENOTTY;
	}
	if (!arg)
		return -EFAULT;
	switch (cmd) {
	case KVM_VPMU_GET_VCPUS: return get_vcpus(vm, arg);
	case KVM_VPMU_GET_ROUTES: return get_routes(vm, arg);
	case KVM_VPMU_SET_ROUTES: return set_routes(m, vm, arg);
	default: return get_stats_fd(vm, arg);
	}
}

/* ------------------------------------------- simulated guest activity */

/* The vCPU a simulated guest event names, checked as the ioctls are. */
static int guest_vcpu(struct kvm_model *m, int route_fd, uint32_t vcpu_id, struct model_vm **vm,
		      struct model_vcpu **v)
{
	int r = route_vm(m, route_fd, vm);
	return r < 0 ? r : vcpu_find(*vm, vcpu_id, v);
}

/* A guest PMC: one bit of the vCPU's shape. */
static bool guest_pmc(const struct model_vcpu *v, uint64_t pmc_bit)
{
	return one_bit(pmc_bit) && (pmc_bit & v->shape);
}

/* The vCPU of a simulated guest access to one of its PMCs: -EINVAL when
 * pmc_bit is not one PMC of its shape. */
static int guest_pmc_vcpu(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			  struct model_vcpu **v)
{
	struct model_vm *vm;
	int r = guest_vcpu(m, route_fd, vcpu_id, &vm, v);
	if (r < 0)
		return r;
	return guest_pmc(*v, pmc_bit) ? 0 : -EINVAL;
}

int kvm_model_vcpu_load(struct kvm_model *m, int route_fd, uint32_t vcpu_id, unsigned cpu)
{
	if (!m || cpu >= m->n_cpus)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vm *vm;
	struct model_vcpu *v;
	int r = guest_vcpu(m, route_fd, vcpu_id, &vm, &v);
	if (r < 0)
		return r;
	if (!m->cpus[cpu].online)
		return -EINVAL;
	if (v->loaded_cpu >= 0 || m->cpus[cpu].loaded)
		return -EBUSY;
	v->entered = true;
	return vcpu_load(m, v, cpu);
}

static int set_cpuid_check(const struct kvm_model *m, const struct model_vcpu *v, unsigned pmu_version,
			   uint64_t shape)
{
	uint64_t gp = shape & VPMU_GP_MASK;
	/* K18: CPUID is frozen once the vCPU has run; a partitioned vCPU
	 * sees PMU version 2 at most (no GLOBAL_STATUS_SET or GLOBAL_INUSE to
	 * split between guest and host) and only counters KVM can give it (a
	 * prefix of the host's general counters, fixed 0..2 the host has);
	 * and the shape cannot drop a PMC that passes through (routes
	 * first). */
	if (v->entered || pmu_version > 2 || (shape & ~m->reservable) || (gp & (gp + 1)))
		return -EINVAL;
	if (v->passthrough & ~shape)
		return -EBUSY;
	return 0;
}

int kvm_model_set_cpuid(struct kvm_model *m, int route_fd, uint32_t vcpu_id, unsigned pmu_version,
			uint64_t shape)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vm *vm;
	struct model_vcpu *v;
	int r = guest_vcpu(m, route_fd, vcpu_id, &vm, &v);
	if (r < 0)
		return r;
	if ((r = set_cpuid_check(m, v, pmu_version, shape)) < 0)
		return r;
	/* PMCs that leave the shape take their values with them, as a
	 * guest whose PMU shrank would lose them. */
	for (unsigned b = 0; b < PMC_BITS; b++)
		if (!((shape >> b) & 1))
			v->value[b] = 0;
	v->shape = shape;
	return 0;
}

int kvm_model_vcpu_put(struct kvm_model *m, int route_fd, uint32_t vcpu_id)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vm *vm;
	struct model_vcpu *v;
	int r = guest_vcpu(m, route_fd, vcpu_id, &vm, &v);
	if (r < 0)
		return r;
	if (v->loaded_cpu < 0)
		return -EINVAL;
	vcpu_put(m, v);
	return 0;
}

int kvm_model_guest_count(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			  uint64_t delta)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vcpu *v;
	int r = guest_pmc_vcpu(m, route_fd, vcpu_id, pmc_bit, &v);
	if (r < 0)
		return r;
	unsigned b = (unsigned)__builtin_ctzll(pmc_bit);
	if (v->frozen & pmc_bit)
		return 0;
	if (v->live & pmc_bit) {
		struct model_cpu *c = &m->cpus[v->loaded_cpu];
		c->value[b] += delta;
		c->value_owner[b] = v->owner;
	} else {
		v->value[b] += delta;
	}
	return 0;
}

int kvm_model_guest_value(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			  uint64_t *out)
{
	if (!m || !out)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vcpu *v;
	int r = guest_pmc_vcpu(m, route_fd, vcpu_id, pmc_bit, &v);
	if (r < 0)
		return r;
	unsigned b = (unsigned)__builtin_ctzll(pmc_bit);
	*out = (v->live & pmc_bit) ? m->cpus[v->loaded_cpu].value[b] : v->value[b];
	return 0;
}

int kvm_model_guest_msr_access(struct kvm_model *m, int route_fd, uint32_t vcpu_id, uint64_t pmc_bit,
			       bool read)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	struct model_vcpu *v;
	int r = guest_pmc_vcpu(m, route_fd, vcpu_id, pmc_bit, &v);
	if (r < 0)
		return r;
	if (v->loaded_cpu < 0)
		return -EINVAL;
	/* K15: only a pass-through PMC live in this CPU's hardware is the
	 * guest's to touch; a frozen or multiplexed one is emulated, and a
	 * multiplexed read returns a scaled estimate. */
	bool to_hardware = v->live & pmc_bit;
	if (to_hardware)
		return 0;
	v->stats.msr_exits++;
	if (read && !(v->frozen & pmc_bit))
		v->stats.estimated_reads++;
	return 1;
}

/* ------------------------------------------------------------ invariants */

__attribute__((format(printf, 3, 4))) static int violation(char *why, size_t len, const char *fmt, ...)
{
	if (why && len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, len, fmt, ap);
		va_end(ap);
	}
	return -EUCLEAN;
}

int kvm_model_check(struct kvm_model *m, char *why, size_t whylen)
{
	if (!m)
		return -EINVAL;
	LOCK_MODEL_FOR_SCOPE(m);
	reap_dead_vms(m);
	uint64_t somewhere = 0;
	for (unsigned c = 0; c < m->n_cpus; c++) {
		const struct model_cpu *cpu = &m->cpus[c];
		if (!cpu->online) {
			if (cpu->reserved || cpu->loaded)
				return violation(why, whylen, "offline cpu %u keeps a reservation or a vCPU", c);
			continue;
		}
		somewhere |= cpu->reserved;
		if (!(m->caps & VPMU_RESERVE_CAP_PER_CPU) && cpu->reserved != m->uniform_mask)
			return violation(why, whylen, "cpu %u reserves 0x%016llx, not the uniform 0x%016llx", c,
					 (unsigned long long)cpu->reserved,
					 (unsigned long long)m->uniform_mask);
		const struct model_vcpu *v = cpu->loaded;
		/* No loaded vCPU has a live pass-through PMC on a counter
		 * outside its CPU's reservation. */
		if (v && (v->loaded_cpu != (int)c || (v->live & ~(cpu->reserved & v->passthrough))))
			return violation(why, whylen,
					 "vcpu %u loaded on cpu %u has 0x%016llx live outside its reservation", v->id, c,
					 (unsigned long long)(v->live & ~cpu->reserved));
		/* A physical counter holds only its current owner's value. */
		for (unsigned b = 0; b < PMC_BITS; b++) {
			if (cpu->value[b] && cpu->value_owner[b] != phys_owner(cpu, b))
				return violation(why, whylen,
						 "cpu %u counter bit %u holds %llu from owner %llu, now owned by %llu", c,
						 b, (unsigned long long)cpu->value[b],
						 (unsigned long long)cpu->value_owner[b],
						 (unsigned long long)phys_owner(cpu, b));
		}
	}
	for (size_t i = 0; i < m->n_vms; i++) {
		const struct model_vm *vm = m->vms[i];
		for (size_t j = 0; j < vm->n_vcpus; j++) {
			const struct model_vcpu *v = &vm->vcpus[j];
			if (v->loaded_cpu >= 0 && m->cpus[v->loaded_cpu].loaded != v)
				return violation(why, whylen, "vcpu %u thinks it is loaded on cpu %d", v->id,
						 v->loaded_cpu);
			/* Every pass-through counter of a live vCPU is reserved
			 * on some online CPU. */
			if (!vm->dead && (v->passthrough & ~somewhere))
				return violation(why, whylen,
						 "vcpu %u passes 0x%016llx through, reserved on no online cpu", v->id,
						 (unsigned long long)(v->passthrough & ~somewhere));
		}
	}
	return 0;
}
