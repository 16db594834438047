/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_port.h"
#include "kvm/kvm_text.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <linux/kvm.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvm/vmm_discover.h"
#include "proto/cleanup.h"
#include "proto/fileio.h"

/* The fixed counters KVM can give a guest: instructions, cycles, ref
 * cycles. Only the advisory backend needs it, having no kernel to ask. */
#define GUEST_FIXED_COUNTERS (VPMU_FIXED_BIT(0) | VPMU_FIXED_BIT(1) | VPMU_FIXED_BIT(2))

_Static_assert(TRANSITION_MAX_GP == VPMU_MAX_GP && TRANSITION_MAX_FIXED == VPMU_MAX_FIXED,
	       "transition.h counter bounds must match the uapi layout");

/* What the advisory backend takes for caps/guest_reservable. */
static uint64_t host_reservable(unsigned num_gp, uint32_t fixed_mask)
{
	uint64_t gp = num_gp >= 32 ? VPMU_GP_MASK : ((1ULL << num_gp) - 1);
	return gp | (((uint64_t)fixed_mask << VPMU_FIXED_SHIFT) & GUEST_FIXED_COUNTERS);
}

struct port_vcpu {
	uint32_t kvm_id;       /* the id given to KVM_CREATE_VCPU */
	pid_t tid;             /* 0: unknown */
	uint64_t shape;
	uint64_t passthrough;
	unsigned *cpus;        /* the lease's CPUs, or NULL: the thread's affinity */
	size_t n_cpus;
};

struct port_vm {
	uint64_t vm_id;
	pid_t pid;
	int pidfd;
	/* The route fd (ioctl: the VMM's; model: the model's, made from the
	 * VMM's VM file; advisory backend: held, unused), or -1. */
	int route_fd;
	bool dead;             /* a route ioctl said EIO */
	unsigned n_vcpus;
	struct port_vcpu *vcpus;
};

struct kvm_port {
	enum kvm_backend backend;
	struct kvm_model *model;
	bool own_model;
	struct kvm_model_caller caller;
	kvm_port_trace_fn trace;
	void *trace_ctx;
	unsigned n_cpus, num_gp;
	uint32_t fixed_mask;
	unsigned reserve_caps;
	uint64_t reservable;   /* kvm_port_reservable */
	int reserve_fd;        /* ioctl: <sysfs_pmu_dir>/guest_reserve */
	char *reserve_path;
	char *cpu_dir;         /* ioctl: the CPU devices (per-CPU files) */
	uint64_t *reserve;     /* n_cpus masks, PERF_GLOBAL_CTRL layout */
	struct port_vm **vms;
	size_t n_vms;
	char *why;
	char *advisory_vm_why; /* "advisory backend: ..." */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct kvm_port *, kvm_port_close)

static const char NO_ROUTE_FD_WHY[] = "the VMM handed no route fd";
static const char DEAD_VM_WHY[] =
	"the VM is dead (route fd ioctls return EIO: its VMM exited); its routes are no longer applied";
static const char ENFORCED_WHY[] = "enforced: the kernel applies the routes through the VM's route fd";
static const char SIMULATED_WHY[] =
	"simulated: the routes go to the in-process model, not to the real guest";

/* ---------------------------------------------------------------- text */

/* The kernel's cpu-list syntax ("0-3,8") for a sorted list without
 * duplicates. */
static void text_cpulist(struct kvm_text *t, const unsigned *cpus, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;
		while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
			j++;
		if (j == i)
			kvm_text_add(t, "%s%u", i ? "," : "", cpus[i]);
		else
			kvm_text_add(t, "%s%u-%u", i ? "," : "", cpus[i], cpus[j]);
		i = j + 1;
	}
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

/* Sorted, without duplicates, in a new array; *n is updated. */
static unsigned *sorted_cpus(const unsigned *cpus, size_t *n)
{
	unsigned *s = malloc(*n * sizeof(*s));
	if (!s)
		return NULL;
	memcpy(s, cpus, *n * sizeof(*s));
	qsort(s, *n, sizeof(*s), cmp_unsigned);
	size_t k = 0;
	for (size_t i = 0; i < *n; i++)
		if (k == 0 || s[i] != s[k - 1])
			s[k++] = s[i];
	*n = k;
	return s;
}

/* ------------------------------------------------------------ encoding */

uint64_t kvm_port_partition_mask(const struct transition *t)
{
	if (!t || t->kind != TRANSITION_PARTITION)
		return 0;
	return ((uint64_t)t->guest_gp_mask << VPMU_GP_SHIFT) | ((uint64_t)t->guest_fixed_mask << VPMU_FIXED_SHIFT);
}

uint64_t kvm_port_passthrough_mask(const struct transition *t)
{
	uint64_t m = 0;

	if (!t || t->kind != TRANSITION_ROUTES)
		return 0;
	for (unsigned i = 0; i < TRANSITION_MAX_GP; i++)
		if (t->gp_route[i] == PMC_ROUTE_PASSTHROUGH)
			m |= VPMU_GP_BIT(i);
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		if (t->fixed_route[i] == PMC_ROUTE_PASSTHROUGH)
			m |= VPMU_FIXED_BIT(i);
	return m;
}

int kvm_port_encode_reserve(uint64_t mask, char *buf, size_t len)
{
	if (!buf && len)
		return -EINVAL;
	return snprintf(buf, len, "0x%016" PRIx64 "\n", mask);
}

/* Only these three have a word in the extension: the pass-through mask
 * says which PMCs pass through; the rest of the shape is multiplexed. */
static bool route_speakable(uint8_t r)
{
	return r == PMC_ROUTE_DISABLED || r == PMC_ROUTE_MULTIPLEXED || r == PMC_ROUTE_PASSTHROUGH;
}

int kvm_port_encode_routes(const struct transition *t, uint32_t vcpu_id, struct kvm_vpmu_routes *out)
{
	if (!t || !out || t->kind != TRANSITION_ROUTES)
		return -EINVAL;
	for (unsigned i = 0; i < TRANSITION_MAX_GP; i++)
		if (!route_speakable(t->gp_route[i]))
			return -EINVAL;
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		if (!route_speakable(t->fixed_route[i]))
			return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->vcpu_id = vcpu_id;
	out->passthrough = kvm_port_passthrough_mask(t);
	return 0;
}

/* ------------------------------------------------------------ backends */

static int __attribute__((format(printf, 2, 3))) set_why(char **dst, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	char *s = alloc_vprintf(fmt, ap);
	va_end(ap);
	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
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

/* One path for both enforcing backends, so that the model receives exactly
 * what the kernel would. Returns what the ioctl returns (a new fd for
 * KVM_VPMU_GET_VCPU_STATS_FD), or -errno. */
static long issue_ioctl(struct kvm_port *p, int fd, unsigned long cmd, void *arg, size_t len)
{
	if (p->trace)
		p->trace(p->trace_ctx, cmd, -1, arg, len);
	if (p->backend == KVM_BACKEND_IOCTL) {
		long r = ioctl(fd, cmd, arg);
		return r < 0 ? -errno : r;
	}
	if (p->backend == KVM_BACKEND_MODEL)
		return kvm_model_ioctl(p->model, &p->caller, fd, cmd, arg);
	return -EOPNOTSUPP;
}

/* A reservation file's name for operators: "guest_reserve" or
 * "cpuN/perf_guest_reserve". */
#define RESERVE_NAME_MAX 48
static const char *reserve_name(int cpu, char buf[RESERVE_NAME_MAX])
{
	if (cpu < 0)
		return KVM_PORT_RESERVE_ATTR;
	snprintf(buf, RESERVE_NAME_MAX, "cpu%d/%s", cpu, KVM_PORT_CPU_RESERVE_ATTR);
	return buf;
}

/* The file of the perf half a reservation write goes to: cpu -1 the
 * uniform guest_reserve, else that CPU's perf_guest_reserve. */
static char *reserve_file(const struct kvm_port *p, int cpu)
{
	if (cpu < 0)
		return strdup(p->reserve_path);
	return alloc_printf("%s/cpu%d/%s", p->cpu_dir, cpu, KVM_PORT_CPU_RESERVE_ATTR);
}

/* One value, one write(2): the kernel takes it whole or not at all (P8). */
static int issue_reserve(struct kvm_port *p, int cpu, const char *text, size_t len)
{
	if (p->trace)
		p->trace(p->trace_ctx, 0, cpu, text, len);
	if (p->backend == KVM_BACKEND_MODEL)
		return kvm_model_reserve_write(p->model, &p->caller, cpu, text, len);
	if (p->backend != KVM_BACKEND_IOCTL)
		return -EOPNOTSUPP;
	_cleanup_close_ int per_cpu = -1;
	int fd = p->reserve_fd;
	if (cpu >= 0) {
		_cleanup_free_ char *path = reserve_file(p, cpu);
		if (!path)
			return -ENOMEM;
		fd = per_cpu = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
	}
	/* A sysfs attribute ignores the file position; pwrite at 0 says so. */
	ssize_t n = pwrite(fd, text, len, 0);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* A sysfs attribute of the perf half holds one short value; the bound
 * keeps a bad file from growing a buffer without end. */
#define ATTR_MAX 4096

/* Reads a whole small file (a sysfs attribute) into a malloc'd string. */
static int read_text_file(const char *path, char **out)
{
	size_t len;
	return fileio_read_all(AT_FDCWD, path, ATTR_MAX, 0, out, &len);
}

/* caps/guest_reserve: a decimal bitmask (P1). */
static int read_reserve_caps(const char *dir, unsigned *caps)
{
	_cleanup_free_ char *path = alloc_printf("%s/%s", dir, KVM_PORT_RESERVE_CAPS_ATTR);
	_cleanup_free_ char *text = NULL;
	if (!path)
		return -ENOMEM;
	int r = read_text_file(path, &text);
	if (r < 0)
		return r;
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno || end == text || (*end && strcmp(end, "\n") != 0) || v > UINT_MAX || text[0] == '-')
		return -EINVAL;
	*caps = (unsigned)v;
	return 0;
}

/* caps/guest_reservable: one hex mask "0x...", counters only (no bit 48
 * and above). */
static int read_reservable(const char *dir, uint64_t *mask)
{
	_cleanup_free_ char *path = alloc_printf("%s/%s", dir, KVM_PORT_RESERVABLE_ATTR);
	_cleanup_free_ char *text = NULL;
	if (!path)
		return -ENOMEM;
	int r = read_text_file(path, &text);
	if (r < 0)
		return r;
	char *end;
	errno = 0;
	if (strncmp(text, "0x", 2) != 0)
		return -EINVAL;
	uint64_t v = strtoull(text + 2, &end, 16);
	if (errno || end == text + 2 || (*end && strcmp(end, "\n") != 0) || text[2] == '-' || text[2] == '+' ||
	    (v & ~(VPMU_GP_MASK | VPMU_FIXED_MASK)))
		return -EINVAL;
	*mask = v;
	return 0;
}

/* One value of a reservation file: "0x<hex>", optional newline, counters
 * only. */
static int parse_reserve_value(const char *text, uint64_t *mask)
{
	char *end;
	if (strncmp(text, "0x", 2) != 0 || text[2] == '-' || text[2] == '+')
		return -EINVAL;
	errno = 0;
	uint64_t v = strtoull(text + 2, &end, 16);
	if (errno || end == text + 2 || (*end && strcmp(end, "\n") != 0) || (v & ~(VPMU_GP_MASK | VPMU_FIXED_MASK)))
		return -EINVAL;
	*mask = v;
	return 0;
}

/* One reservation file's text, from the kernel or the model. */
static int read_reserve_text(struct kvm_port *p, int cpu, char **out)
{
	if (p->backend == KVM_BACKEND_MODEL) {
		char buf[32];
		int r = kvm_model_reserve_read(p->model, cpu, buf, sizeof(buf));
		if (r < 0)
			return r;
		if ((size_t)r >= sizeof(buf))
			return -EINVAL;
		*out = strdup(buf);
		return *out ? 0 : -ENOMEM;
	}
	_cleanup_free_ char *path = reserve_file(p, cpu);
	if (!path)
		return -ENOMEM;
	return read_text_file(path, out);
}

/* Start from what the kernel holds. Per CPU where the kernel has per-CPU
 * files (the uniform file has no answer once masks differ: P10), else the
 * one mask of every CPU. A CPU whose file is absent does not exist, and
 * an offline one reads 0: neither has a reservation. */
static int load_reservation(struct kvm_port *p, int *failed_cpu)
{
	bool per_cpu = p->reserve_caps & VPMU_RESERVE_CAP_PER_CPU;
	for (unsigned c = 0; c < (per_cpu ? p->n_cpus : 1); c++) {
		int cpu = per_cpu ? (int)c : -1;
		_cleanup_free_ char *text = NULL;
		uint64_t mask = 0;
		int r = read_reserve_text(p, cpu, &text);
		if (r == 0)
			r = parse_reserve_value(text, &mask);
		else if (r == -ENOENT && per_cpu)
			r = 0;
		if (r < 0) {
			*failed_cpu = cpu;
			return r;
		}
		if (per_cpu)
			p->reserve[c] = mask;
		else
			for (unsigned d = 0; d < p->n_cpus; d++)
				p->reserve[d] = mask;
	}
	return 0;
}

static int open_model(struct kvm_port *p, const struct kvm_port_opts *o)
{
	if (o->model) {
		p->model = o->model;
	} else {
		struct kvm_model_opts mo = { .n_cpus = o->n_cpus, .num_gp = o->num_gp,
					     .fixed_mask = o->fixed_mask, .reserve_caps = o->model_reserve_caps };
		int r = kvm_model_new(&mo, &p->model);
		if (r < 0)
			return r;
		p->own_model = true;
	}
	p->reserve_caps = kvm_model_reserve_caps(p->model);
	p->reservable = kvm_model_reservable(p->model);
	return set_why(&p->why, "model requested: in-process model of the kernel side; guest routes are "
				"simulated, not enforced on real guests");
}

/* What the kernel offers: the KVM half (KVM_CAP_VPMU_ROUTES on dev) and the
 * perf half (caps/guest_reserve in dir). Fills the reasons it lacks them.
 * Returns -errno only when dev cannot be opened. */
struct kernel_offer {
	int dev_err;        /* 0, or -errno of opening dev */
	int cap;            /* KVM_CHECK_EXTENSION answer, or -errno */
	int caps_err;       /* 0, or -errno reading caps/guest_reserve */
	unsigned caps;
};

static void probe_kernel(const char *dev, const char *dir, struct kernel_offer *k)
{
	*k = (struct kernel_offer){ 0 };
	_cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		k->dev_err = -errno;
		k->cap = k->dev_err;
	} else {
		k->cap = ioctl(fd, KVM_CHECK_EXTENSION, (long)KVM_CAP_VPMU_ROUTES);
		if (k->cap < 0)
			k->cap = -errno;
	}
	k->caps_err = read_reserve_caps(dir, &k->caps);
	/* Every perf half takes the uniform mask: a value without UNIFORM is
	 * no perf half vpmu knows (D12). */
	if (k->caps_err == 0 && !(k->caps & VPMU_RESERVE_CAP_UNIFORM))
		k->caps_err = -EINVAL;
}

/* "…lacks X and Y" in words an operator can act on. */
static char *offer_missing(const char *dev, const char *dir, const struct kernel_offer *k)
{
	_cleanup_free_ char *kvm = NULL, *perf = NULL;
	if (k->dev_err)
		kvm = alloc_printf("%s cannot be opened (%s)", dev, strerror(-k->dev_err));
	else if (k->cap < 0)
		kvm = alloc_printf("KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES) on %s failed (%s)", dev,
				   strerror(-k->cap));
	else if (k->cap == 0)
		kvm = alloc_printf("%s lacks KVM_CAP_VPMU_ROUTES (no KVM half: stock kernel)", dev);
	if (k->caps_err == -ENOENT)
		perf = alloc_printf("%s/%s is absent (no perf half)", dir, KVM_PORT_RESERVE_CAPS_ATTR);
	else if (k->caps_err)
		perf = alloc_printf("%s/%s is not understood (%s)", dir, KVM_PORT_RESERVE_CAPS_ATTR,
				    strerror(-k->caps_err));
	if (kvm && perf)
		return alloc_printf("%s, and %s", kvm, perf);
	if (kvm || perf)
		return strdup(kvm ? kvm : perf);
	return strdup("");
}

static int open_ioctl(struct kvm_port *p, const struct kvm_port_opts *o, char *why, size_t whylen)
{
	const char *dev = o->dev_path ? o->dev_path : "/dev/kvm";
	const char *dir = o->sysfs_pmu_dir ? o->sysfs_pmu_dir : KVM_PORT_SYSFS_PMU_DIR;
	struct kernel_offer k;

	probe_kernel(dev, dir, &k);
	bool both = k.cap > 0 && k.caps_err == 0;
	if (!both) {
		_cleanup_free_ char *missing = offer_missing(dev, dir, &k);
		if (!missing)
			return -ENOMEM;
		if (o->backend == KVM_BACKEND_AUTO) {
			p->backend = KVM_BACKEND_ADVISORY;
			return set_why(&p->why, "auto: %s; advisory", missing);
		}
		/* Asked for by name, the backend still needs the kernel to say
		 * yes to both halves: a kernel that does not know our numbers
		 * would take them for something else, so nothing is sent. */
		snprintf(why, whylen,
			 "ioctl backend: %s: the kernel lacks the vpmu extension; nothing was sent (use --kvm "
			 "auto or advisory)", missing);
		return k.dev_err ? k.dev_err : -EOPNOTSUPP;
	}
	p->backend = KVM_BACKEND_IOCTL;
	p->reserve_caps = k.caps;
	int rr = read_reservable(dir, &p->reservable);
	if (rr < 0) {
		snprintf(why, whylen, "ioctl backend: %s/%s: %s", dir, KVM_PORT_RESERVABLE_ATTR,
			 rr == -EINVAL ? "not understood (not one hex counter mask)" : strerror(-rr));
		return rr;
	}
	p->reserve_path = alloc_printf("%s/%s", dir, KVM_PORT_RESERVE_ATTR);
	p->cpu_dir = strdup(o->sysfs_cpu_dir ? o->sysfs_cpu_dir : KVM_PORT_SYSFS_CPU_DIR);
	if (!p->reserve_path || !p->cpu_dir)
		return -ENOMEM;
	int failed_cpu = -1;
	int r = load_reservation(p, &failed_cpu);
	if (r == 0) {
		/* Opened now so that a daemon without the right to write it
		 * (0600 root's) learns so at start, not at its first plan. */
		failed_cpu = -1;
		p->reserve_fd = open(p->reserve_path, O_WRONLY | O_CLOEXEC);
		if (p->reserve_fd < 0)
			r = -errno;
	}
	if (r < 0) {
		_cleanup_free_ char *path = reserve_file(p, failed_cpu);
		snprintf(why, whylen, "ioctl backend: %s: %s", path ? path : KVM_PORT_RESERVE_ATTR,
			 r == -EINVAL ? "not understood (not one hex counter mask)" : strerror(-r));
		return r;
	}
	return set_why(&p->why, "%s: %s reports KVM_CAP_VPMU_ROUTES=%d and %s/%s=%u",
		       o->backend == KVM_BACKEND_AUTO ? "auto" : "ioctl requested", dev, k.cap, dir,
		       KVM_PORT_RESERVE_CAPS_ATTR, k.caps);
}

int kvm_port_open(const struct kvm_port_opts *o, struct kvm_port **out, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (!o || !out || o->n_cpus == 0 || o->n_cpus > KVM_MODEL_MAX_CPUS || o->num_gp > VPMU_MAX_GP ||
	    (o->fixed_mask >> VPMU_MAX_FIXED)) {
		snprintf(why, whylen, "invalid host description for the kvm port");
		return -EINVAL;
	}
	_cleanup_(kvm_port_closep) struct kvm_port *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->reserve_fd = -1;
	p->n_cpus = o->n_cpus;
	p->num_gp = o->num_gp;
	p->fixed_mask = o->fixed_mask;
	p->caller = o->caller;
	p->trace = o->trace;
	p->trace_ctx = o->trace_ctx;
	p->reserve = calloc(o->n_cpus, sizeof(*p->reserve));
	if (!p->reserve)
		return -ENOMEM;
	p->reservable = host_reservable(o->num_gp, o->fixed_mask);

	int r;
	switch (o->backend) {
	case KVM_BACKEND_MODEL:
		p->backend = KVM_BACKEND_MODEL;
		r = open_model(p, o);
		if (r == 0) {
			int failed_cpu = -1;
			r = load_reservation(p, &failed_cpu);
			if (r < 0)
				snprintf(why, whylen, "model backend: reading %s: %s",
					 reserve_name(failed_cpu, (char[RESERVE_NAME_MAX]){ 0 }), strerror(-r));
		}
		break;
	case KVM_BACKEND_ADVISORY:
		p->backend = KVM_BACKEND_ADVISORY;
		r = set_why(&p->why, "advisory requested");
		break;
	case KVM_BACKEND_AUTO:
	case KVM_BACKEND_IOCTL:
		r = open_ioctl(p, o, why, whylen);
		break;
	default:
		snprintf(why, whylen, "unknown kvm backend %d", (int)o->backend);
		r = -EINVAL;
	}
	if (r == 0)
		r = set_why(&p->advisory_vm_why, "advisory backend: %s", p->why);
	if (r < 0)
		return r;
	if (why && whylen)
		snprintf(why, whylen, "%s", p->why);
	*out = TAKE_PTR(p);
	return 0;
}

static void vm_free(struct kvm_port *p, struct port_vm *vm)
{
	if (!vm)
		return;
	if (vm->route_fd >= 0) {
		if (p->backend == KVM_BACKEND_MODEL)
			kvm_model_route_close(p->model, vm->route_fd);
		else
			close(vm->route_fd);
	}
	if (vm->pidfd >= 0)
		close(vm->pidfd);
	for (unsigned i = 0; vm->vcpus && i < vm->n_vcpus; i++)
		free(vm->vcpus[i].cpus);
	free(vm->vcpus);
	free(vm);
}

void kvm_port_close(struct kvm_port *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_vms; i++)
		vm_free(p, p->vms[i]);
	free(p->vms);
	if (p->own_model)
		kvm_model_free(p->model);
	if (p->reserve_fd >= 0)
		close(p->reserve_fd);
	free(p->reserve_path);
	free(p->cpu_dir);
	free(p->reserve);
	free(p->why);
	free(p->advisory_vm_why);
	free(p);
}

enum kvm_backend kvm_port_backend(const struct kvm_port *p) { return p->backend; }
bool kvm_port_enforced(const struct kvm_port *p)
{
	return p->backend == KVM_BACKEND_IOCTL || p->backend == KVM_BACKEND_MODEL;
}
const char *kvm_port_why(const struct kvm_port *p) { return p->why ? p->why : ""; }
unsigned kvm_port_reserve_caps(const struct kvm_port *p)
{
	return kvm_port_enforced(p) ? p->reserve_caps : 0;
}

/* ------------------------------------------------------------------ VMs */

static struct port_vm *find_vm(const struct kvm_port *p, uint64_t vm_id)
{
	for (size_t i = 0; i < p->n_vms; i++)
		if (p->vms[i]->vm_id == vm_id)
			return p->vms[i];
	return NULL;
}

/* Routes reach something only through a route fd of an enforcing backend,
 * while the VM lives. */
static bool vm_routes_sent(const struct kvm_port *p, const struct port_vm *vm)
{
	return vm->route_fd >= 0 && kvm_port_enforced(p) && !vm->dead;
}

uint64_t kvm_port_reservable(const struct kvm_port *p)
{
	return p ? p->reservable : 0;
}


/* Frees a VM under construction when registration fails. */
struct vm_guard {
	struct kvm_port *p;
	struct port_vm *vm;
};

static void vm_guard_release(struct vm_guard *g)
{
	vm_free(g->p, g->vm);
}

/* Does fd name the same open file as one a registered VM holds? ioctl: the
 * same route fd handed twice (two route fds made by two
 * KVM_CREATE_VPMU_ROUTE_FD calls are different files, and the uapi gives
 * no VM identity to compare). model: its route fds are the VM's own file,
 * so the VMM's VM file matches the route fd of a registered VM exactly. */
static bool same_file_registered(const struct kvm_port *p, int fd)
{
	pid_t self = getpid();
	for (size_t i = 0; i < p->n_vms; i++) {
		int rf = p->vms[i]->route_fd;
		if (rf >= 0 && syscall(SYS_kcmp, self, self, KCMP_FILE, fd, rf) == 0)
			return true;
	}
	return false;
}

#define ROUTE_FD_LINK "anon_inode:kvm-vpmu-route"
#define VM_FD_LINK "anon_inode:kvm-vm"

int kvm_port_check_route_fd(int fd, const char **why)
{
	static const char vm_fd[] =
		"a KVM VM fd, not a route fd: the VMM creates one with KVM_CREATE_VPMU_ROUTE_FD";
	const char *w = "not a route fd";
	int r = -ENOTTY;
	_cleanup_free_ char *path = alloc_printf("/proc/self/fd/%d", fd);
	char link[sizeof(ROUTE_FD_LINK) + 1];
	if (!path)
		return -ENOMEM;
	/* A buffer one byte longer than the longest link wanted tells a
	 * longer link apart. */
	ssize_t n = fd < 0 ? -1 : readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		r = -EBADF;
		w = "not an open fd";
	} else {
		link[n] = '\0';
		if (!strcmp(link, ROUTE_FD_LINK)) {
			r = 0;
			w = NULL;
		} else if (!strcmp(link, VM_FD_LINK)) {
			w = vm_fd;
		}
	}
	if (why)
		*why = w;
	return r;
}

static const char *route_errno_words(int e)
{
	switch (e) {
	case -EIO: return "the VM is dead (its VMM exited)";
	case -ENOTTY: return "not a route fd";
	case -EBADF: return "not an open fd";
	case -ENOENT: return "no such vCPU in the VM";
	case -EINVAL: return "refused by the kernel";
	case -EBUSY: return "a pass-through counter is reserved on no online CPU";
	case -EEXIST: return "the VM already has a route fd open (one per VM)";
	}
	return NULL;
}

/* KVM_VPMU_GET_VCPUS: the ids in creation order (K7), growing the room
 * when the kernel says E2BIG. */
static int read_vcpu_ids(struct kvm_port *p, int fd, uint32_t **ids, uint32_t *nr)
{
	uint32_t room = 8;
	for (int tries = 0; tries < 8; tries++) {
		size_t len = sizeof(struct kvm_vpmu_vcpus) + (size_t)room * sizeof(uint32_t);
		_cleanup_free_ struct kvm_vpmu_vcpus *v = calloc(1, len);
		if (!v)
			return -ENOMEM;
		v->nr = room;
		long r = issue_ioctl(p, fd, KVM_VPMU_GET_VCPUS, v, len);
		if (r == -E2BIG && v->nr > room && v->nr <= VMM_MAX_VCPUS) {
			room = v->nr;
			continue;
		}
		if (r < 0)
			return (int)r;
		if (v->nr > room)
			return -EPROTO;
		*ids = malloc(((size_t)v->nr + 1) * sizeof(**ids));
		if (!*ids)
			return -ENOMEM;
		memcpy(*ids, v->ids, (size_t)v->nr * sizeof(**ids));
		*nr = v->nr;
		return 0;
	}
	return -EPROTO;
}

/* The model stands in for KVM_CREATE_VPMU_ROUTE_FD, which the VMM would
 * issue: it makes its route fd from the VMM's VM file. */
static int model_route_fd(struct kvm_port *p, const struct kvm_port_vm *spec, int pidfd, int *route_fd,
			  char *why, size_t whylen)
{
	_cleanup_free_ uint32_t *ids = NULL;
	if (!spec->vcpu_ids) {
		ids = malloc(spec->n_vcpus * sizeof(*ids));
		if (!ids)
			return -ENOMEM;
		for (unsigned i = 0; i < spec->n_vcpus; i++)
			ids[i] = i;
	}
	struct kvm_model_vm_desc desc = {
		.opted_in = true, .lapic_in_kernel = true,
		.shape = spec->model_cpuid_shape ? spec->model_cpuid_shape
			 : spec->shape ? spec->shape : kvm_port_reservable(p),
		.nr_vcpus = spec->n_vcpus, .vcpu_ids = spec->vcpu_ids ? spec->vcpu_ids : ids,
		.vmm_pidfd = pidfd,
	};
	struct kvm_vpmu_route_fd args = { 0 };
	int r = kvm_model_create_route_fd(p->model, spec->route_fd, &desc, &args, route_fd);
	if (r < 0) {
		snprintf(why, whylen, "vm %llu: fd %d: %s", (unsigned long long)spec->vm_id, spec->route_fd,
			 r == -ENOTTY ? "not a KVM VM file (the model makes its route fd from the VMM's VM file)"
			 : r == -EBADF ? "not an open fd"
			 : r == -EIO   ? "the VM is dead (its VMM exited)"
			 : r == -EEXIST ? "the VM already has a route fd open (one per VM: KVM_CREATE_VPMU_ROUTE_FD "
					  "says EEXIST); whoever holds it must close it first"
				       : strerror(-r));
		return r;
	}
	return 0;
}

/* Reads what the kernel holds for an enforced VM: the vCPU ids (lease vCPU
 * i is the i-th created), each one's shape and routes. */
static int read_vm(struct kvm_port *p, struct port_vm *vm, int route_fd, char *why, size_t whylen)
{
	_cleanup_free_ uint32_t *ids = NULL;
	uint32_t nr = 0;
	int r = read_vcpu_ids(p, route_fd, &ids, &nr);
	if (r < 0) {
		const char *words = route_errno_words(r);
		snprintf(why, whylen, "vm %llu: KVM_VPMU_GET_VCPUS: %s%s%s", (unsigned long long)vm->vm_id,
			 strerror(-r), words ? ": " : "", words ? words : "");
		return r;
	}
	if (nr < vm->n_vcpus) {
		snprintf(why, whylen, "vm %llu: the lease has %u vCPUs but the VM has %u",
			 (unsigned long long)vm->vm_id, vm->n_vcpus, nr);
		return -EINVAL;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		struct port_vcpu *v = &vm->vcpus[i];
		v->kvm_id = ids[i];
		struct kvm_vpmu_routes q = { .vcpu_id = v->kvm_id };
		long g = issue_ioctl(p, route_fd, KVM_VPMU_GET_ROUTES, &q, sizeof(q));
		if (g < 0) {
			const char *words = route_errno_words((int)g);
			snprintf(why, whylen, "vm %llu vcpu %u (id %u): KVM_VPMU_GET_ROUTES: %s%s%s",
				 (unsigned long long)vm->vm_id, i, v->kvm_id, strerror((int)-g), words ? ": " : "",
				 words ? words : "");
			return (int)g;
		}
		v->shape = q.shape;
		v->passthrough = q.passthrough;
	}
	return 0;
}

int kvm_port_register_vm(struct kvm_port *p, const struct kvm_port_vm *spec, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (!p || !spec || spec->n_vcpus == 0 || spec->n_vcpus > VMM_MAX_VCPUS || spec->vmm_pid <= 0 ||
	    (spec->shape & ~kvm_port_reservable(p))) {
		snprintf(why, whylen, "invalid VM description");
		return -EINVAL;
	}
	if (find_vm(p, spec->vm_id)) {
		snprintf(why, whylen, "vm %llu already registered", (unsigned long long)spec->vm_id);
		return -EEXIST;
	}
	if (spec->route_fd >= 0 && fcntl(spec->route_fd, F_GETFD) < 0) {
		snprintf(why, whylen, "vm %llu: route fd %d: not an open fd", (unsigned long long)spec->vm_id,
			 spec->route_fd);
		return -EBADF;
	}
	if (spec->route_fd >= 0 && same_file_registered(p, spec->route_fd)) {
		snprintf(why, whylen, "vm %llu: route fd %d names a VM that is already registered",
			 (unsigned long long)spec->vm_id, spec->route_fd);
		return -EEXIST;
	}
	_cleanup_close_ int pidfd = spec->vmm_pidfd >= 0 ? fcntl(spec->vmm_pidfd, F_DUPFD_CLOEXEC, 3)
							 : vmm_discover_pidfd_open(spec->vmm_pid);
	if (pidfd < 0) {
		int e = spec->vmm_pidfd >= 0 ? -errno : pidfd;
		snprintf(why, whylen, "vmm pid %d: %s", (int)spec->vmm_pid, strerror(-e));
		return e == -EINVAL ? -ESRCH : e;
	}
	/* The pidfd must name the pid we were given, or a caller's mistake
	 * would tie the VM to some other process. */
	int pid = vmm_discover_pidfd_pid(pidfd);
	if (pid < 0 || pid != spec->vmm_pid) {
		int e = pid < 0 ? pid : -EINVAL;
		snprintf(why, whylen, "vmm pid %d: %s", (int)spec->vmm_pid,
			 pid < 0 ? strerror(-pid) : "the pidfd names another process");
		return e;
	}

	struct port_vm *vm = calloc(1, sizeof(*vm));
	_cleanup_(vm_guard_release) struct vm_guard guard = { .p = p, .vm = vm };
	if (!vm)
		return -ENOMEM;
	vm->vm_id = spec->vm_id;
	vm->pid = pid;
	vm->pidfd = -1;
	vm->route_fd = -1;
	vm->n_vcpus = spec->n_vcpus;
	vm->vcpus = calloc(spec->n_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	uint64_t shape = spec->shape ? spec->shape : kvm_port_reservable(p);
	for (unsigned i = 0; i < spec->n_vcpus; i++) {
		vm->vcpus[i].tid = spec->vcpu_tids ? spec->vcpu_tids[i] : 0;
		vm->vcpus[i].kvm_id = spec->vcpu_ids ? spec->vcpu_ids[i] : i;
		vm->vcpus[i].shape = shape;
	}

	/* The fd the port will hold: the model's own (closed with the guard
	 * on failure), or the caller's, which stays the caller's until
	 * registration succeeds. */
	int route_fd = spec->route_fd;
	if (route_fd >= 0 && p->backend == KVM_BACKEND_MODEL) {
		int r = model_route_fd(p, spec, pidfd, &vm->route_fd, why, whylen);
		if (r < 0)
			return r;
		route_fd = vm->route_fd;
	}
	if (route_fd >= 0 && p->backend == KVM_BACKEND_IOCTL) {
		/* D1: no ioctl on an fd that is not a route fd, so that a VM fd
		 * handed by mistake gets words, not the kernel's EIO. */
		const char *what = NULL;
		int r = kvm_port_check_route_fd(route_fd, &what);
		if (r < 0) {
			snprintf(why, whylen, "vm %llu: fd %d: %s", (unsigned long long)spec->vm_id, route_fd, what);
			return r;
		}
	}
	if (route_fd >= 0 && kvm_port_enforced(p)) {
		int r = read_vm(p, vm, route_fd, why, whylen);
		if (r < 0)
			return r;
		/* The lease's shape is what the plan routes: it must be the
		 * guest's own (CPUID leaf 0xA), or PMCs the plan leaves out
		 * would run as unaccounted flexible events on the host side. */
		for (unsigned i = 0; i < vm->n_vcpus && spec->shape; i++) {
			uint64_t k = vm->vcpus[i].shape;
			if (k == spec->shape)
				continue;
			snprintf(why, whylen, "vm %llu vcpu %u: the guest's PMU (CPUID leaf 0xA) is gp %d fixed 0x%x; "
				 "the lease asks gp %d fixed 0x%x: attach with the guest's shape",
				 (unsigned long long)spec->vm_id, i, __builtin_popcountll(k & VPMU_GP_MASK),
				 (unsigned)(k >> VPMU_FIXED_SHIFT), __builtin_popcountll(spec->shape & VPMU_GP_MASK),
				 (unsigned)(spec->shape >> VPMU_FIXED_SHIFT));
			return -EINVAL;
		}
	}
	struct port_vm **nv = reallocarray(p->vms, p->n_vms + 1, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	p->vms = nv;
	/* Success: the port owns the route fd. With the model, its route fd
	 * stands for the one the VMM would have handed, so the VM file the
	 * caller gave goes. */
	if (spec->route_fd >= 0 && p->backend == KVM_BACKEND_MODEL)
		close(spec->route_fd);
	vm->route_fd = route_fd;
	vm->pidfd = TAKE_FD(pidfd);
	p->vms[p->n_vms++] = TAKE_PTR(guard.vm);
	return 0;
}

int kvm_port_unregister_vm(struct kvm_port *p, uint64_t vm_id)
{
	if (!p)
		return -ENOENT;
	for (size_t i = 0; i < p->n_vms; i++) {
		if (p->vms[i]->vm_id != vm_id)
			continue;
		vm_free(p, p->vms[i]);
		p->vms[i] = p->vms[--p->n_vms];
		return 0;
	}
	return -ENOENT;
}

bool kvm_port_vm_enforced(const struct kvm_port *p, uint64_t vm_id, const char **why)
{
	const struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	const char *w;
	bool sent = false;

	if (!vm)
		w = "no such VM is registered";
	else if (vm->route_fd < 0)
		w = NO_ROUTE_FD_WHY;
	else if (!kvm_port_enforced(p))
		w = p->advisory_vm_why;
	else if (vm->dead)
		w = DEAD_VM_WHY;
	else {
		sent = true;
		w = p->backend == KVM_BACKEND_MODEL ? SIMULATED_WHY : ENFORCED_WHY;
	}
	if (why)
		*why = w;
	return sent;
}

int kvm_port_vcpu_shape(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu, uint64_t *shape)
{
	const struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm)
		return -ENOENT;
	if (vcpu >= vm->n_vcpus || !shape)
		return -EINVAL;
	*shape = vm->vcpus[vcpu].shape;
	return 0;
}

int kvm_port_set_vcpu_cpus(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, const unsigned *cpus,
			   size_t n_cpus)
{
	struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm)
		return -ENOENT;
	if (vcpu >= vm->n_vcpus)
		return -EINVAL;
	for (size_t i = 0; cpus && i < n_cpus; i++)
		if (cpus[i] >= p->n_cpus)
			return -EINVAL;
	struct port_vcpu *v = &vm->vcpus[vcpu];
	unsigned *copy = NULL;
	size_t n = n_cpus;
	if (cpus && n_cpus) {
		copy = sorted_cpus(cpus, &n);
		if (!copy)
			return -ENOMEM;
	}
	free(v->cpus);
	v->cpus = copy;
	v->n_cpus = copy ? n : 0;
	return 0;
}

/* --------------------------------------------------------------- apply */

/* A set of CPUs sized by the host. */
struct cpuset {
	uint64_t *words;
	size_t n_words;
};

static void cpuset_free(struct cpuset *s)
{
	free(s->words);
	s->words = NULL;
}

static bool cpuset_has(const struct cpuset *s, unsigned cpu)
{
	return cpu / 64 < s->n_words && (s->words[cpu / 64] >> (cpu % 64)) & 1;
}

static void cpuset_add(struct cpuset *s, unsigned cpu)
{
	s->words[cpu / 64] |= 1ULL << (cpu % 64);
}

/* The thread's affinity, asked with a mask as large as the kernel needs
 * (EINVAL: too small for nr_cpu_ids). */
static int thread_affinity(const struct kvm_port *p, pid_t tid, struct cpuset *out, bool *any)
{
	for (size_t ncpu = p->n_cpus < 1024 ? 1024 : p->n_cpus; ncpu <= (1u << 20); ncpu *= 2) {
		cpu_set_t *set = CPU_ALLOC(ncpu);
		size_t sz = CPU_ALLOC_SIZE(ncpu);
		if (!set)
			return -ENOMEM;
		CPU_ZERO_S(sz, set);
		if (sched_getaffinity(tid, sz, set) < 0) {
			int e = -errno;
			CPU_FREE(set);
			if (e == -EINVAL)
				continue;
			return e;
		}
		for (unsigned c = 0; c < p->n_cpus; c++) {
			if (CPU_ISSET_S(c, sz, set)) {
				cpuset_add(out, c);
				*any = true;
			}
		}
		CPU_FREE(set);
		return 0;
	}
	return -EINVAL;
}

/* The CPUs a vCPU may run on, as far as we can tell: what its lease
 * declares, else its thread's affinity, else every CPU (the conservative
 * answer: pass-through then needs the counter everywhere). */
static int vcpu_allowed(const struct kvm_port *p, const struct port_vcpu *v, struct cpuset *out)
{
	out->n_words = ((size_t)p->n_cpus + 63) / 64;
	out->words = calloc(out->n_words, sizeof(*out->words));
	if (!out->words)
		return -ENOMEM;
	bool any = false;
	for (size_t i = 0; i < v->n_cpus; i++) {
		cpuset_add(out, v->cpus[i]);
		any = true;
	}
	if (!any && v->tid > 0) {
		int r = thread_affinity(p, v->tid, out, &any);
		if (r < 0)
			return r;
	}
	if (!any)
		for (unsigned c = 0; c < p->n_cpus; c++)
			cpuset_add(out, c);
	return 0;
}

static int validate(const struct kvm_port *p, const struct transition *t, unsigned prev_phase, char *why,
		    size_t whylen)
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
		uint64_t m = kvm_port_partition_mask(t);
		if (m & ~kvm_port_reservable(p)) {
			snprintf(why, whylen, "cpu %d: reservation 0x%016" PRIx64 " names counters the host "
				 "lacks or a guest cannot have (0x%016" PRIx64 ")", t->cpu, m,
				 m & ~kvm_port_reservable(p));
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
		uint8_t r = t->gp_route[i];
		if (!route_speakable(r) || (r != PMC_ROUTE_DISABLED && i >= p->num_gp)) {
			snprintf(why, whylen, "vm %llu vcpu %u: route %s for gp %u: %s",
				 (unsigned long long)t->vm_id, t->vcpu, transition_route_name(r), i,
				 route_speakable(r) ? "the host has no such counter"
						    : "the extension has no such route");
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++) {
		uint8_t r = t->fixed_route[i];
		if (!route_speakable(r) || (r != PMC_ROUTE_DISABLED && !((p->fixed_mask >> i) & 1))) {
			snprintf(why, whylen, "vm %llu vcpu %u: route %s for fixed %u: %s",
				 (unsigned long long)t->vm_id, t->vcpu, transition_route_name(r), i,
				 route_speakable(r) ? "the host has no such counter"
						    : "the extension has no such route");
			return -EINVAL;
		}
	}
	uint64_t pt = kvm_port_passthrough_mask(t), shape = vm->vcpus[t->vcpu].shape;
	if (pt & ~shape) {
		snprintf(why, whylen, "vm %llu vcpu %u: pass-through 0x%016" PRIx64 " outside the guest's "
			 "shape 0x%016" PRIx64, (unsigned long long)t->vm_id, t->vcpu, pt, shape);
		return -EINVAL;
	}
	/* In the guest's shape a PMC passes through or is multiplexed (a
	 * flexible event on the host partition): the kernel has no word for
	 * "disabled", so a plan that says so for a routed VM would be
	 * silently wrong. Advisory VMs keep the lease's shape, which their
	 * plan may change. */
	uint64_t disabled = 0;
	for (unsigned i = 0; i < TRANSITION_MAX_GP; i++)
		if (t->gp_route[i] == PMC_ROUTE_DISABLED)
			disabled |= VPMU_GP_BIT(i);
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		if (t->fixed_route[i] == PMC_ROUTE_DISABLED)
			disabled |= VPMU_FIXED_BIT(i);
	if (vm->route_fd >= 0 && (disabled & shape)) {
		snprintf(why, whylen, "vm %llu vcpu %u: PMCs 0x%016" PRIx64 " are in the guest's shape: a PMC "
			 "there passes through or is multiplexed, never disabled", (unsigned long long)t->vm_id,
			 t->vcpu, disabled & shape);
		return -EINVAL;
	}
	return 0;
}

/* The ordering rules the kernel enforces, checked on our own view first:
 * for advisory VMs nobody else checks them, and a bad plan should fail the
 * same way on every host. A CPU loses counters only when no vCPU that may
 * run there passes them through. */
static int guard_partition(const struct kvm_port *p, unsigned cpu, uint64_t mask, char *why, size_t whylen)
{
	uint64_t gone = p->reserve[cpu] & ~mask;
	if (!gone)
		return 0;
	for (size_t i = 0; i < p->n_vms; i++) {
		const struct port_vm *vm = p->vms[i];
		for (unsigned j = 0; j < vm->n_vcpus; j++) {
			const struct port_vcpu *v = &vm->vcpus[j];
			uint64_t hit = v->passthrough & gone;
			if (!hit)
				continue;
			struct cpuset allowed = { 0 };
			int r = vcpu_allowed(p, v, &allowed);
			bool on = r == 0 && cpuset_has(&allowed, cpu);
			cpuset_free(&allowed);
			if (r < 0) {
				snprintf(why, whylen, "vm %llu vcpu %u: its CPUs: %s", (unsigned long long)vm->vm_id,
					 j, strerror(-r));
				return r;
			}
			if (on) {
				snprintf(why, whylen, "cpu %u: shrinking the reservation under vm %llu vcpu %u's "
					 "pass-through (0x%016" PRIx64 ")", cpu, (unsigned long long)vm->vm_id, j, hit);
				return -EBUSY;
			}
		}
	}
	return 0;
}

static int guard_routes(const struct kvm_port *p, const struct transition *t, const struct cpuset *allowed,
			char *why, size_t whylen)
{
	uint64_t pt = kvm_port_passthrough_mask(t);
	if (!pt)
		return 0;
	for (unsigned c = 0; c < p->n_cpus; c++) {
		if (!cpuset_has(allowed, c))
			continue;
		uint64_t missing = pt & ~p->reserve[c];
		if (missing) {
			snprintf(why, whylen, "vm %llu vcpu %u: pass-through of 0x%016" PRIx64 ", which cpu %u "
				 "keeps for the host", (unsigned long long)t->vm_id, t->vcpu, missing, c);
			return -EBUSY;
		}
	}
	return 0;
}

static const char *reserve_errno_words(int e)
{
	switch (e) {
	case -EINVAL:
		return "the kernel refused the value (an offline CPU, or a counter outside caps/guest_reservable)";
	case -EBUSY:
		return "a CPU's pinned host events would not fit, or a live pass-through needs the counters";
	case -ENOENT:
		return "no such file: the kernel takes one mask for every CPU";
	case -EACCES:
	case -EPERM:
		return "the reservation files are root's";
	}
	return NULL;
}

/* One reservation write: cpu -1 the uniform file (every online CPU). */
static int write_reserve(struct kvm_port *p, int cpu, uint64_t mask, char *why, size_t whylen)
{
	char text[32];
	int len = kvm_port_encode_reserve(mask, text, sizeof(text));
	if (len < 0)
		return len;
	int r = issue_reserve(p, cpu, text, (size_t)len);
	if (r < 0) {
		const char *words = reserve_errno_words(r);
		text[len - 1] = '\0';
		snprintf(why, whylen, "%s \"%s\": %s%s%s", reserve_name(cpu, (char[RESERVE_NAME_MAX]){ 0 }), text,
			 strerror(-r), words ? ": " : "", words ? words : "");
	}
	return r;
}

/* Steps first..last-1 are partition steps of one phase with one mask. One
 * write to the uniform file when they set every CPU (a kernel without
 * PER_CPU takes nothing else), else one write per CPU. */
static int apply_partition_group(struct kvm_port *p, const struct transition *t, size_t n, char *why,
				 size_t whylen)
{
	uint64_t mask = kvm_port_partition_mask(&t[0]);
	_cleanup_free_ unsigned *cpus = malloc(n * sizeof(*cpus));
	if (!cpus)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		cpus[i] = (unsigned)t[i].cpu;
		int r = guard_partition(p, cpus[i], mask, why, whylen);
		if (r < 0)
			return r;
	}
	size_t n_distinct = n;
	_cleanup_free_ unsigned *distinct = sorted_cpus(cpus, &n_distinct);
	if (!distinct)
		return -ENOMEM;
	bool every_cpu = n_distinct == p->n_cpus;
	if (!kvm_port_enforced(p)) {
		/* Advisory: recorded, nothing sent. */
	} else if (every_cpu) {
		int r = write_reserve(p, -1, mask, why, whylen);
		if (r < 0)
			return r;
	} else if (!(p->reserve_caps & VPMU_RESERVE_CAP_PER_CPU)) {
		/* The uniform file would reserve on CPUs the plan leaves alone. */
		struct kvm_text w = { .buf = why, .len = whylen };
		kvm_text_add(&w, "cpus ");
		text_cpulist(&w, distinct, n_distinct);
		kvm_text_add(&w, ": the kernel takes one mask for every CPU (caps/guest_reserve lacks PER_CPU) and the "
			     "plan reserves 0x%016" PRIx64 " on these only; nothing was sent", mask);
		return -EINVAL;
	} else {
		for (size_t i = 0; i < n_distinct; i++) {
			int r = write_reserve(p, (int)distinct[i], mask, why, whylen);
			if (r < 0)
				return r;
			/* Each per-CPU file is its own write: what went before
			 * stays, and the port's view follows the kernel's. */
			p->reserve[distinct[i]] = mask;
		}
	}
	for (size_t i = 0; i < n_distinct; i++)
		p->reserve[distinct[i]] = mask;
	return 0;
}

static int apply_routes(struct kvm_port *p, const struct transition *t, char *why, size_t whylen)
{
	struct port_vm *vm = find_vm(p, t->vm_id);
	struct port_vcpu *v = &vm->vcpus[t->vcpu];
	struct cpuset allowed = { 0 };
	int r = vcpu_allowed(p, v, &allowed);
	if (r == 0)
		r = guard_routes(p, t, &allowed, why, whylen);
	else
		snprintf(why, whylen, "vm %llu vcpu %u thread %d: sched_getaffinity: %s",
			 (unsigned long long)t->vm_id, t->vcpu, (int)v->tid, strerror(-r));
	cpuset_free(&allowed);
	if (r < 0)
		return r;
	struct kvm_vpmu_routes q;
	if ((r = kvm_port_encode_routes(t, v->kvm_id, &q)) < 0)
		return r;
	if (vm_routes_sent(p, vm)) {
		long s = issue_ioctl(p, vm->route_fd, KVM_VPMU_SET_ROUTES, &q, sizeof(q));
		if (s < 0) {
			if (s == -EIO)
				vm->dead = true;
			const char *words = route_errno_words((int)s);
			snprintf(why, whylen, "vm %llu vcpu %u (id %u): KVM_VPMU_SET_ROUTES 0x%016" PRIx64 ": %s%s%s",
				 (unsigned long long)t->vm_id, t->vcpu, v->kvm_id, (uint64_t)q.passthrough, strerror((int)-s),
				 words ? ": " : "", words ? words : "");
			return (int)s;
		}
	}
	v->passthrough = q.passthrough;
	return 0;
}

int kvm_port_apply(struct kvm_port *p, const struct transition *t, size_t n, struct kvm_apply_result *res)
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
	for (size_t i = 0; i < n;) {
		size_t end = i + 1;
		int r;
		if (t[i].kind == TRANSITION_PARTITION) {
			uint64_t mask = kvm_port_partition_mask(&t[i]);
			while (end < n && t[end].kind == TRANSITION_PARTITION && t[end].phase == t[i].phase &&
			       kvm_port_partition_mask(&t[end]) == mask)
				end++;
			r = apply_partition_group(p, &t[i], end - i, res->why, sizeof(res->why));
		} else {
			r = apply_routes(p, &t[i], res->why, sizeof(res->why));
		}
		if (r < 0) {
			res->error = r;
			res->failed = i;
			return r;
		}
		res->applied = end;
		i = end;
	}
	return 0;
}

int kvm_port_reservation(const struct kvm_port *p, unsigned cpu, uint64_t *mask)
{
	if (!p || cpu >= p->n_cpus || !mask)
		return -EINVAL;
	*mask = p->reserve[cpu];
	return 0;
}

int kvm_port_passthrough(const struct kvm_port *p, uint64_t vm_id, unsigned vcpu, uint64_t *mask)
{
	const struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm)
		return -ENOENT;
	if (vcpu >= vm->n_vcpus || !mask)
		return -EINVAL;
	*mask = vm->vcpus[vcpu].passthrough;
	return 0;
}

/* --------------------------------------------------------------- stats */

static int pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, (char *)buf + got, len - got, off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPROTO; /* shorter than its header says */
		got += (size_t)n;
	}
	return 0;
}

/* Bounds a kernel's header could reach: names of 48 bytes and a few
 * hundred statistics today. */
#define STATS_NAME_MAX 4096u
#define STATS_DESC_MAX 65536u

int kvm_port_stats_read(int stats_fd, const char *const *names, size_t n_names, uint64_t *values)
{
	struct kvm_stats_header h;
	if (stats_fd < 0 || (!names && n_names) || (!values && n_names))
		return -EINVAL;
	int r = pread_full(stats_fd, &h, sizeof(h), 0);
	if (r < 0)
		return r;
	if (h.name_size == 0 || h.name_size > STATS_NAME_MAX || h.num_desc > STATS_DESC_MAX)
		return -EPROTO;
	size_t desc_size = sizeof(struct kvm_stats_desc) + h.name_size;
	_cleanup_free_ uint8_t *descs = malloc(desc_size * h.num_desc + 1);
	if (!descs)
		return -ENOMEM;
	if ((r = pread_full(stats_fd, descs, desc_size * h.num_desc, h.desc_offset)) < 0)
		return r;
	size_t found = 0;
	for (size_t k = 0; k < n_names; k++)
		values[k] = 0;
	_cleanup_free_ bool *seen = calloc(n_names + 1, sizeof(*seen));
	if (!seen)
		return -ENOMEM;
	for (uint32_t i = 0; i < h.num_desc; i++) {
		struct kvm_stats_desc d;
		memcpy(&d, descs + i * desc_size, sizeof(d)); /* name_size need not keep it aligned */
		const char *name = (const char *)descs + i * desc_size + sizeof(d);
		size_t name_len = strnlen(name, h.name_size);
		if (name_len == h.name_size)
			return -EPROTO; /* not terminated within name_size */
		for (size_t k = 0; k < n_names; k++) {
			if (seen[k] || strcmp(name, names[k]) != 0)
				continue;
			if (d.size == 0)
				return -EPROTO;
			/* The first item: every vpmu statistic is one u64. */
			r = pread_full(stats_fd, &values[k], sizeof(values[k]), (off_t)h.data_offset + d.offset);
			if (r < 0)
				return r;
			seen[k] = true;
			found++;
		}
	}
	return found == n_names ? 0 : -ENODATA;
}

int kvm_port_vcpu_stats(struct kvm_port *p, uint64_t vm_id, unsigned vcpu, struct kvm_port_vcpu_stats *out)
{
	struct port_vm *vm = p ? find_vm(p, vm_id) : NULL;
	if (!vm)
		return -ENOENT;
	if (vcpu >= vm->n_vcpus || !out)
		return -EINVAL;
	if (!vm_routes_sent(p, vm))
		return vm->dead ? -EIO : -EOPNOTSUPP;
	struct kvm_vpmu_stats_fd q = { .vcpu_id = vm->vcpus[vcpu].kvm_id };
	long fd = issue_ioctl(p, vm->route_fd, KVM_VPMU_GET_VCPU_STATS_FD, &q, sizeof(q));
	if (fd < 0) {
		if (fd == -EIO)
			vm->dead = true;
		return (int)fd;
	}
	_cleanup_close_ int stats = (int)fd;
	static const char *const names[] = { VPMU_STAT_FROZEN_ENTRIES, VPMU_STAT_MSR_EXITS,
					     VPMU_STAT_ESTIMATED_READS, VPMU_STAT_ROUTE_CHANGES };
	uint64_t v[4];
	int r = kvm_port_stats_read(stats, names, 4, v);
	if (r < 0)
		return r;
	*out = (struct kvm_port_vcpu_stats){ .frozen_entries = v[0], .msr_exits = v[1],
					     .estimated_reads = v[2], .route_changes = v[3] };
	return 0;
}

/* -------------------------------------------------------------- report */

struct cpu_mask {
	unsigned cpu;
	uint64_t mask;
};

static int cmp_mask_cpu(const void *a, const void *b)
{
	const struct cpu_mask *x = a, *y = b;
	if (x->mask != y->mask)
		return x->mask < y->mask ? -1 : 1;
	return x->cpu < y->cpu ? -1 : x->cpu > y->cpu;
}

struct group {
	size_t start, n;
};

static int cmp_group_first(const void *a, const void *b, void *ctx)
{
	const struct cpu_mask *cm = ctx;
	const struct group *x = a, *y = b;
	unsigned fx = cm[x->start].cpu, fy = cm[y->start].cpu;
	return fx < fy ? -1 : fx > fy;
}

/* One line per group of CPUs with the same reservation, by first CPU, as
 * the kernel's own read of guest_reserve (P10). */
static int report_reservation(const struct kvm_port *p, struct kvm_text *t)
{
	_cleanup_free_ struct cpu_mask *cm = malloc(p->n_cpus * sizeof(*cm));
	_cleanup_free_ struct group *g = malloc(p->n_cpus * sizeof(*g));
	_cleanup_free_ unsigned *list = malloc(p->n_cpus * sizeof(*list));
	if (!cm || !g || !list)
		return -ENOMEM;
	for (unsigned c = 0; c < p->n_cpus; c++)
		cm[c] = (struct cpu_mask){ .cpu = c, .mask = p->reserve[c] };
	qsort(cm, p->n_cpus, sizeof(*cm), cmp_mask_cpu);
	size_t ng = 0;
	for (size_t i = 0; i < p->n_cpus; i++) {
		if (i == 0 || cm[i].mask != cm[i - 1].mask)
			g[ng++] = (struct group){ .start = i };
		g[ng - 1].n++;
	}
	qsort_r(g, ng, sizeof(*g), cmp_group_first, cm);
	for (size_t i = 0; i < ng; i++) {
		for (size_t k = 0; k < g[i].n; k++)
			list[k] = cm[g[i].start + k].cpu;
		kvm_text_add(t, "kvm port: reservation ");
		text_cpulist(t, list, g[i].n);
		kvm_text_add(t, " 0x%016" PRIx64 "%s\n", cm[g[i].start].mask,
			 cm[g[i].start].mask ? "" : " (no counter kept from the host)");
	}
	return 0;
}

int kvm_port_report(const struct kvm_port *p, char *buf, size_t len)
{
	struct kvm_text t = { .buf = buf, .len = buf ? len : 0 };
	if (!p)
		return -EINVAL;
	if (buf && len)
		buf[0] = '\0';
	kvm_text_add(&t, "kvm port: backend %s (%s)\n", kvm_port_backend_name(p->backend), kvm_port_why(p));
	unsigned caps = kvm_port_reserve_caps(p);
	if (kvm_port_enforced(p))
		kvm_text_add(&t, "kvm port: reserve caps %u: %s%s\n", caps,
			 caps & VPMU_RESERVE_CAP_PER_CPU ? "per-cpu (masks may differ between CPUs)"
							 : "uniform (one mask for every CPU)",
			 p->backend == KVM_BACKEND_MODEL ? ", simulated by the model" : "");
	else
		kvm_text_add(&t, "kvm port: reserve caps: none (advisory: the reservation is planned, not applied)\n");
	kvm_text_add(&t, "kvm port: guest routes %s\n",
		 p->backend == KVM_BACKEND_IOCTL ? "enforced by the kernel for VMs that handed a route fd"
		 : p->backend == KVM_BACKEND_MODEL ? "simulated by the in-process model for VMs that handed a route fd"
						   : "NOT enforced: the kernel lacks the extension, the plan is advisory");
	int r = report_reservation(p, &t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->n_vms; i++) {
		const struct port_vm *vm = p->vms[i];
		unsigned pt = 0;
		for (unsigned j = 0; j < vm->n_vcpus; j++)
			pt += (unsigned)__builtin_popcountll(vm->vcpus[j].passthrough);
		const char *why;
		bool sent = kvm_port_vm_enforced(p, vm->vm_id, &why);
		const char *mode = !sent ? "advisory" : p->backend == KVM_BACKEND_MODEL ? "simulated" : "enforced";
		kvm_text_add(&t, "kvm port: vm %llu pid %d: %u vcpus, %u pass-through PMCs%s; routes %s (%s)\n",
			 (unsigned long long)vm->vm_id, (int)vm->pid, vm->n_vcpus, pt,
			 sent ? "" : " (planned, not enforced)", mode, why);
	}
	return kvm_text_result(&t);
}
