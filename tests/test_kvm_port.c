/* SPDX-License-Identifier: MIT */
/* The kvm port, vpmu interface version 2: what it sends, byte for byte
 * (reservation lines, route structs); which backend it picks on this
 * machine, whose kernel lacks the extension; plans applied through the
 * model with route fds made from real KVM VMs, the model's state and
 * invariants checked after every step; and the binary stats parser on a
 * real KVM vCPU stats fd. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>

#include "kvm_child.h"
#include "kvm/kvm_port.h"
#include "kvm/vmm_discover.h"

#define N_CPUS 2
#define NUM_GP 8
#define FIXED_MASK 0x7u
#define VM_ID 42
/* GP 0..7 and fixed 0..2: the shape the port gives a VM registered
 * without one. */
#define HOST_SHAPE 0x00000007000000ffULL

/* --------------------------------------------------------------- helpers */

/* A recorder for what the port issues. */
#define REC_MAX 256
struct rec {
	size_t n;
	unsigned long cmd[REC_MAX];
	int cpu[REC_MAX];
	size_t len[REC_MAX];
	uint8_t *buf[REC_MAX];
};

static void record(void *ctx, unsigned long cmd, int cpu, const void *arg, size_t len)
{
	struct rec *r = ctx;
	if (r->n >= REC_MAX)
		fail_msg("more than %d requests", REC_MAX);
	r->cmd[r->n] = cmd;
	r->cpu[r->n] = cpu;
	r->len[r->n] = len;
	r->buf[r->n] = malloc(len + 1);
	assert_non_null(r->buf[r->n]);
	memcpy(r->buf[r->n], arg, len);
	r->buf[r->n][len] = 0;
	r->n++;
}

static void rec_clear(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->buf[i]);
	r->n = 0;
}

static size_t rec_count(const struct rec *r, unsigned long cmd)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += r->cmd[i] == cmd;
	return n;
}

static struct kvm_port_opts base_opts(enum kvm_backend b)
{
	return (struct kvm_port_opts){ .backend = b, .n_cpus = N_CPUS, .num_gp = NUM_GP,
				       .fixed_mask = FIXED_MASK, .caller = { .cap_sys_admin = true } };
}

static struct transition part(unsigned phase, int cpu, uint32_t gp, uint32_t fixed)
{
	return (struct transition){ .kind = TRANSITION_PARTITION, .phase = phase, .cpu = cpu,
				    .guest_gp_mask = gp, .guest_fixed_mask = fixed,
				    .scrub_gp_mask = gp, .scrub_fixed_mask = fixed };
}

static struct transition routes_of(uint64_t vm_id, unsigned phase, unsigned vcpu, uint32_t pt_gp,
				   uint32_t pt_fixed)
{
	struct transition t = { .kind = TRANSITION_ROUTES, .phase = phase, .vm_id = vm_id, .vcpu = vcpu };
	for (unsigned i = 0; i < NUM_GP; i++)
		t.gp_route[i] = (pt_gp >> i) & 1 ? PMC_ROUTE_PASSTHROUGH : PMC_ROUTE_MULTIPLEXED;
	for (unsigned i = 0; i < TRANSITION_MAX_FIXED; i++)
		if ((FIXED_MASK >> i) & 1)
			t.fixed_route[i] = (pt_fixed >> i) & 1 ? PMC_ROUTE_PASSTHROUGH : PMC_ROUTE_MULTIPLEXED;
	return t;
}

static struct transition routes(unsigned phase, unsigned vcpu, uint32_t pt_gp, uint32_t pt_fixed)
{
	return routes_of(VM_ID, phase, vcpu, pt_gp, pt_fixed);
}

static int pidfd_getfd_of(pid_t pid, int target)
{
	int pidfd = vmm_discover_pidfd_open(pid);
	if (pidfd < 0)
		return pidfd;
	int fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
	int e = errno;
	close(pidfd);
	return fd < 0 ? -e : fd;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* The fds open in this process, as a bitmap of the first 1024 numbers. */
static void open_fds(bool *out)
{
	for (int fd = 0; fd < 1024; fd++)
		out[fd] = fd_open(fd);
}

/* A VM of this process with vCPUs of the given ids (real KVM_CREATE_VCPU). */
struct own_vm {
	int dev, vm;
	int vcpu[4];
	unsigned n;
};

static void own_vm_make(struct own_vm *o, const uint32_t *ids, unsigned n)
{
	o->dev = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	assert_true(o->dev >= 0);
	o->vm = ioctl(o->dev, KVM_CREATE_VM, 0);
	assert_true(o->vm >= 0);
	o->n = n;
	for (unsigned i = 0; i < n; i++) {
		o->vcpu[i] = ioctl(o->vm, KVM_CREATE_VCPU, (unsigned long)ids[i]);
		assert_true(o->vcpu[i] >= 0);
	}
}

static void own_vm_free(struct own_vm *o)
{
	for (unsigned i = 0; i < o->n; i++)
		close(o->vcpu[i]);
	close(o->vm);
	close(o->dev);
}

/* ------------------------------------------------------------ encoding */

static void test_backend_names(void **state)
{
	(void)state;
	enum kvm_backend b;
	const char *names[] = { "auto", "ioctl", "advisory", "model" };
	for (int i = 0; i < 4; i++) {
		assert_int_equal(kvm_port_backend_parse(names[i], &b), 0);
		assert_string_equal(kvm_port_backend_name(b), names[i]);
	}
	assert_int_equal(kvm_port_backend_parse("Model", &b), -EINVAL);
	assert_int_equal(kvm_port_backend_parse("", &b), -EINVAL);
	assert_int_equal(kvm_port_backend_parse(NULL, &b), -EINVAL);
}

/* The layout include/linux/vpmu_kvm.h fixes, and the ioctl numbers. */
static void test_uapi_layout(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct kvm_vpmu_route_fd), 32);
	assert_int_equal(sizeof(struct kvm_vpmu_vcpus), 24);
	assert_int_equal(offsetof(struct kvm_vpmu_vcpus, ids), 24);
	assert_int_equal(sizeof(struct kvm_vpmu_routes), 64);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, flags), 4);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, passthrough), 8);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, shape), 16);
	assert_int_equal(offsetof(struct kvm_vpmu_routes, reserved), 24);
	assert_int_equal(sizeof(struct kvm_vpmu_stats_fd), 32);
	assert_int_equal(KVM_CREATE_VPMU_ROUTE_FD, 0x4020aef0ul);
	assert_int_equal(KVM_VPMU_GET_VCPUS, 0xc018aef1ul);
	assert_int_equal(KVM_VPMU_GET_ROUTES, 0xc040aef2ul);
	assert_int_equal(KVM_VPMU_SET_ROUTES, 0x4040aef3ul);
	assert_int_equal(KVM_VPMU_GET_VCPU_STATS_FD, 0x4020aef4ul);
}

static void test_encode_reserve_bytes(void **state)
{
	(void)state;
	char buf[128];
	/* One value per file (D7): the mask, 16 digits, a newline. */
	memset(buf, 'x', sizeof(buf));
	assert_int_equal(kvm_port_encode_reserve(0x0000000700000003ULL, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000700000003\n");
	assert_int_equal(kvm_port_encode_reserve(0, buf, sizeof(buf)), 19);
	assert_string_equal(buf, "0x0000000000000000\n");
	/* snprintf semantics: the length it needs, cut to fit. */
	char small[8];
	assert_int_equal(kvm_port_encode_reserve(3, small, sizeof(small)), 19);
	assert_string_equal(small, "0x00000");
	assert_int_equal(kvm_port_encode_reserve(3, NULL, 0), 19);
	assert_int_equal(kvm_port_encode_reserve(3, NULL, 8), -EINVAL);

	/* A partition step's masks in PERF_GLOBAL_CTRL layout. */
	struct transition t = part(2, 3, 0x0f, 0x5);
	assert_int_equal(kvm_port_partition_mask(&t), 0x000000050000000fULL);
	t.guest_gp_mask = 0x80000000u;
	t.guest_fixed_mask = 0x8000u;
	assert_int_equal(kvm_port_partition_mask(&t), 0x0000800080000000ULL);
	struct transition r = routes(2, 0, 0x1, 0);
	assert_int_equal(kvm_port_partition_mask(&r), 0);
}

static void test_encode_routes_bytes(void **state)
{
	(void)state;
	struct transition r = { .kind = TRANSITION_ROUTES, .phase = 2, .vm_id = 9, .vcpu = 1 };
	r.gp_route[0] = PMC_ROUTE_PASSTHROUGH;
	r.gp_route[1] = PMC_ROUTE_MULTIPLEXED;
	r.gp_route[9] = PMC_ROUTE_PASSTHROUGH;
	r.fixed_route[2] = PMC_ROUTE_PASSTHROUGH;
	r.fixed_route[1] = PMC_ROUTE_MULTIPLEXED;
	assert_int_equal(kvm_port_passthrough_mask(&r), 0x0000000400000201ULL);
	struct kvm_vpmu_routes q;
	memset(&q, 0xa5, sizeof(q)); /* stale bytes must not survive */
	assert_int_equal(kvm_port_encode_routes(&r, 0x11223344u, &q), 0);
	uint8_t want[64] = { 0x44, 0x33, 0x22, 0x11,  0, 0, 0, 0,
			     0x01, 0x02, 0, 0, 0x04, 0, 0, 0 };
	assert_memory_equal(&q, want, sizeof(want));

	/* Routes the extension has no word for, and wrong kinds. */
	for (uint8_t bad = PMC_ROUTE_RESERVED; bad <= PMC_ROUTE_UNMANAGED + 1; bad++) {
		struct transition b = r;
		b.gp_route[5] = bad;
		assert_int_equal(kvm_port_encode_routes(&b, 1, &q), -EINVAL);
		b = r;
		b.fixed_route[0] = bad;
		assert_int_equal(kvm_port_encode_routes(&b, 1, &q), -EINVAL);
	}
	struct transition p = part(2, 0, 1, 0);
	assert_int_equal(kvm_port_encode_routes(&p, 1, &q), -EINVAL);
	assert_int_equal(kvm_port_passthrough_mask(&p), 0);
}

/* --------------------------------------------------------------- backends */

/* A fake perf PMU directory: caps/guest_reserve (unless caps is NULL) and
 * guest_reserve. */
static char *fake_pmu_dir(const char *caps)
{
	char *dir = strdup("/tmp/vpmu-port-pmu-XXXXXX");
	assert_non_null(dir);
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/caps", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	if (caps) {
		snprintf(path, sizeof(path), "%s/caps/guest_reserve", dir);
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fputs(caps, f);
		fclose(f);
	}
	snprintf(path, sizeof(path), "%s/guest_reserve", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("0-1 0x0000000000000000\n", f);
	fclose(f);
	return dir;
}

static void rm_dir(char *dir)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(dir);
}

static void expect_guest_reserve_untouched(const char *dir)
{
	char path[256], buf[64] = "";
	snprintf(path, sizeof(path), "%s/guest_reserve", dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "0-1 0x0000000000000000\n");
}

/* This machine's kernel has the perf half nowhere and no KVM half: a
 * forced ioctl backend is refused before anything is sent, even where a
 * perf half is faked, and auto falls back to advisory saying what is
 * missing. */
static void test_forced_ioctl_refused_sends_nothing(void **state)
{
	(void)state;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		skip();
	int cap = ioctl(kvm, KVM_CHECK_EXTENSION, (long)KVM_CAP_VPMU_ROUTES);
	close(kvm);
	if (cap != 0)
		skip(); /* a kernel with the extension: nothing to refuse */

	char *dir = fake_pmu_dir("3\n");
	struct rec *sent = calloc(1, sizeof(*sent));
	assert_non_null(sent);
	struct kvm_port_opts o = base_opts(KVM_BACKEND_IOCTL);
	o.sysfs_pmu_dir = dir;
	o.trace = record;
	o.trace_ctx = sent;
	struct kvm_port *port = NULL;
	char why[512];
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EOPNOTSUPP);
	assert_null(port);
	assert_non_null(strstr(why, "/dev/kvm lacks KVM_CAP_VPMU_ROUTES"));
	assert_non_null(strstr(why, "nothing was sent"));
	assert_null(strstr(why, "perf half")); /* the faked perf half is there */
	assert_int_equal(sent->n, 0);
	expect_guest_reserve_untouched(dir);

	/* Auto: advisory, naming the missing half. */
	o.backend = KVM_BACKEND_AUTO;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(port), KVM_BACKEND_ADVISORY);
	assert_false(kvm_port_enforced(port));
	assert_int_equal(kvm_port_reserve_caps(port), 0);
	assert_non_null(strstr(kvm_port_why(port), "auto: /dev/kvm lacks KVM_CAP_VPMU_ROUTES"));
	assert_non_null(strstr(kvm_port_why(port), "advisory"));
	const struct transition grow[] = { part(2, 0, 1, 0), part(2, 1, 1, 0) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(port, grow, 2, &res), 0);
	assert_int_equal(sent->n, 0);
	expect_guest_reserve_untouched(dir);
	kvm_port_close(port);
	rm_dir(dir);

	/* Without the perf half as well: both are named. */
	dir = fake_pmu_dir(NULL);
	o.sysfs_pmu_dir = dir;
	o.backend = KVM_BACKEND_IOCTL;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EOPNOTSUPP);
	assert_non_null(strstr(why, "/dev/kvm lacks KVM_CAP_VPMU_ROUTES"));
	assert_non_null(strstr(why, "/caps/guest_reserve is absent (no perf half)"));
	o.backend = KVM_BACKEND_AUTO;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_non_null(strstr(kvm_port_why(port), "(no perf half); advisory"));
	kvm_port_close(port);
	assert_int_equal(sent->n, 0);
	rm_dir(dir);
	free(sent);
}

/* A device that answers KVM_CHECK_EXTENSION with an error, one that does
 * not exist, a caps file that names no mode. */
static void test_backend_choice_reasons(void **state)
{
	(void)state;
	char *dir = fake_pmu_dir("3\n");
	struct kvm_port_opts o = base_opts(KVM_BACKEND_IOCTL);
	o.sysfs_pmu_dir = dir;
	o.dev_path = "/dev/null";
	struct kvm_port *port = NULL;
	char why[512];
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EOPNOTSUPP);
	assert_non_null(strstr(why, "KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES) on /dev/null failed"));
	expect_guest_reserve_untouched(dir);

	o.dev_path = "/nonexistent/kvm";
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "/nonexistent/kvm cannot be opened"));
	o.backend = KVM_BACKEND_AUTO;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(port), KVM_BACKEND_ADVISORY);
	assert_non_null(strstr(kvm_port_why(port), "/nonexistent/kvm cannot be opened"));
	kvm_port_close(port);
	rm_dir(dir);

	dir = fake_pmu_dir("0\n");
	o.sysfs_pmu_dir = dir;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_non_null(strstr(kvm_port_why(port), "caps/guest_reserve is not understood"));
	kvm_port_close(port);
	rm_dir(dir);
	/* D12: PER_CPU without UNIFORM is no perf half either. */
	dir = fake_pmu_dir("2\n");
	o.sysfs_pmu_dir = dir;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), 0);
	assert_int_equal(kvm_port_backend(port), KVM_BACKEND_ADVISORY);
	assert_non_null(strstr(kvm_port_why(port), "caps/guest_reserve is not understood"));
	kvm_port_close(port);
	rm_dir(dir);

	o.backend = KVM_BACKEND_MODEL;
	o.n_cpus = 0;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EINVAL);
	o.n_cpus = N_CPUS;
	o.backend = 17;
	assert_int_equal(kvm_port_open(&o, &port, why, sizeof(why)), -EINVAL);
}

/* D1: the ioctl backend reads a handed fd's link before any ioctl. No
 * kernel here makes a route fd, so the function is tested on what can be
 * made: a real VM fd, a pipe, /dev/kvm, a closed number. */
static void test_check_route_fd_classifies(void **state)
{
	(void)state;
	const char *why = NULL;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(kvm_port_check_route_fd(p[0], &why), -ENOTTY);
	assert_string_equal(why, "not a route fd");
	assert_int_equal(kvm_port_check_route_fd(1000, &why), -EBADF);
	assert_string_equal(why, "not an open fd");
	assert_int_equal(kvm_port_check_route_fd(-1, &why), -EBADF);
	close(p[0]);
	close(p[1]);
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		skip();
	assert_int_equal(kvm_port_check_route_fd(kvm, &why), -ENOTTY);
	assert_string_equal(why, "not a route fd");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm >= 0);
	assert_int_equal(kvm_port_check_route_fd(vm, &why), -ENOTTY);
	assert_string_equal(why, "a KVM VM fd, not a route fd: the VMM creates one with KVM_CREATE_VPMU_ROUTE_FD");
	assert_int_equal(kvm_port_check_route_fd(vm, NULL), -ENOTTY);
	close(vm);
	close(kvm);
}

/* ------------------------------------------------ the model with real VMs */

struct fx {
	struct kvm_child child;
	int vm_file;     /* the test's own copy of the child's VM file */
	int probe;       /* the test's model route fd of that VM, to read the model */
	struct kvm_model *m;
	struct kvm_port *port;
	struct rec rec;
};

static int fx_open_port(struct fx *f, unsigned reserve_caps)
{
	struct kvm_model_opts mo = { .n_cpus = N_CPUS, .num_gp = NUM_GP, .fixed_mask = FIXED_MASK,
				     .reserve_caps = reserve_caps };
	int r = kvm_model_new(&mo, &f->m);
	if (r < 0)
		return r;
	struct kvm_port_opts o = base_opts(KVM_BACKEND_MODEL);
	o.model = f->m;
	o.trace = record;
	o.trace_ctx = &f->rec;
	char why[256];
	r = kvm_port_open(&o, &f->port, why, sizeof(why));
	if (r == 0 && kvm_port_backend(f->port) != KVM_BACKEND_MODEL)
		r = -EPROTO;
	return r;
}

static void fx_free(struct fx *f)
{
	kvm_port_close(f->port);
	kvm_model_free(f->m);
	if (f->vm_file >= 0)
		close(f->vm_file);
	kvm_child_stop(&f->child);
	rec_clear(&f->rec);
	free(f);
}

/* The model's route fd of the VM whose file vm_file is: the port's, since
 * a VM has one at most (D8). The test reads the model through it and
 * leaves closing it to the port. -1 if there is none. */
static int port_route_fd(struct kvm_model *m, int vm_file)
{
	const struct kvm_model_caller root = { .cap_sys_admin = true };
	pid_t self = getpid();
	for (int fd = 3; fd < 1024; fd++) {
		if (fd == vm_file || syscall(SYS_kcmp, self, self, KCMP_FILE, fd, vm_file) != 0)
			continue;
		struct kvm_vpmu_vcpus v = { .nr = 0 };
		long r = kvm_model_ioctl(m, &root, fd, KVM_VPMU_GET_VCPUS, &v);
		if (r == 0 || r == -E2BIG)
			return fd;
	}
	return -1;
}

/* cmocka runs no teardown after a failed setup: a failure here frees what
 * it made (the child above all) before it fails. */
#define SETUP_CHECK(cond, ...)                                  \
	do {                                                    \
		if (!(cond)) {                                  \
			print_error(__VA_ARGS__);               \
			print_error("\n");                      \
			fx_free(f);                             \
			fail();                                 \
			return -1; /* _fail is not noreturn */  \
		}                                               \
	} while (0)

static int setup(void **state)
{
	if (!kvm_child_available())
		skip();
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->probe = f->vm_file = -1;
	int r = kvm_child_start(&f->child, 1, 2, true);
	SETUP_CHECK(r == 0, "kvm child: %s", strerror(-r));
	f->vm_file = pidfd_getfd_of(f->child.pid, f->child.vm_fd[0]);
	SETUP_CHECK(f->vm_file >= 0, "pidfd_getfd: %s", strerror(-f->vm_file));
	r = fx_open_port(f, 0);
	SETUP_CHECK(r == 0, "model port: %s", strerror(-r));
	/* The VMM (the child) hands a route fd; the model makes its own
	 * from the VM file. Unknown vCPU threads: the port assumes every CPU. */
	int handed = fcntl(f->vm_file, F_DUPFD_CLOEXEC, 3);
	struct kvm_port_vm vm = { .vm_id = VM_ID, .vmm_pid = f->child.pid, .vmm_pidfd = -1,
				  .route_fd = handed, .n_vcpus = 2 };
	char why[256];
	r = kvm_port_register_vm(f->port, &vm, why, sizeof(why));
	SETUP_CHECK(r == 0, "register: %s", why);
	/* The handed VM file is the port's to close on success. */
	SETUP_CHECK(!fd_open(handed), "the VM file handed over is still open");
	f->probe = port_route_fd(f->m, f->vm_file);
	SETUP_CHECK(f->probe >= 0, "the port's route fd was not found");
	rec_clear(&f->rec);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	if (*state)
		fx_free(*state);
	return 0;
}

static uint64_t model_reservation(struct fx *f, unsigned cpu)
{
	uint64_t m;
	assert_int_equal(kvm_model_reservation(f->m, cpu, &m), 0);
	return m;
}

static struct kvm_vpmu_routes model_routes(struct fx *f, uint32_t vcpu_id)
{
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_routes r = { .vcpu_id = vcpu_id };
	assert_int_equal(kvm_model_ioctl(f->m, &root, f->probe, KVM_VPMU_GET_ROUTES, &r), 0);
	return r;
}

static void check_model(struct fx *f, const char *when)
{
	char why[256] = "";
	if (kvm_model_check(f->m, why, sizeof(why)) != 0)
		fail_msg("%s: %s", when, why);
}

/* Applies the plan one step at a time and checks, after each, that the
 * model holds exactly what the step says and its invariants hold. */
static void apply_checked(struct fx *f, const struct transition *plan, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct transition *t = &plan[i];
		struct kvm_apply_result res;
		if (kvm_port_apply(f->port, t, 1, &res) != 0)
			fail_msg("step %zu: %s", i, res.why);
		assert_int_equal(res.applied, 1);
		if (t->kind == TRANSITION_PARTITION) {
			assert_int_equal(model_reservation(f, (unsigned)t->cpu), kvm_port_partition_mask(t));
		} else {
			struct kvm_vpmu_routes r = model_routes(f, t->vcpu); /* ids 0..n-1 here */
			assert_int_equal(r.passthrough, kvm_port_passthrough_mask(t));
			assert_int_equal(r.shape, HOST_SHAPE);
		}
		char when[32];
		snprintf(when, sizeof(when), "after step %zu", i);
		check_model(f, when);
	}
}

static void test_two_phase_plans_through_model(void **state)
{
	struct fx *f = *state;
	const char *why;
	assert_true(kvm_port_vm_enforced(f->port, VM_ID, &why));
	assert_non_null(strstr(why, "simulated"));
	assert_int_equal(kvm_port_reserve_caps(f->port), VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU);
	uint64_t shape;
	assert_int_equal(kvm_port_vcpu_shape(f->port, VM_ID, 1, &shape), 0);
	assert_int_equal(shape, HOST_SHAPE);
	/* Phase 2: reserve gp 0-1 and fixed 0 on cpu 0, gp 0-1 on cpu 1, then
	 * pass gp 0-1 + fixed 0 to vcpu 0... which cpu 1 lacks: so fixed 0 on
	 * both first. */
	const struct transition up[] = {
		part(2, 0, 0x3, 0x1),
		part(2, 1, 0x3, 0x1),
		routes(2, 0, 0x3, 0x1),
		routes(2, 1, 0x2, 0x0),
	};
	apply_checked(f, up, 4);
	/* Phase 1: take gp 0 back from vcpu 0, then shrink cpu 1 to gp 1. */
	const struct transition down[] = {
		routes(1, 0, 0x2, 0x1),
		part(1, 1, 0x2, 0x1),
	};
	apply_checked(f, down, 2);
	uint64_t m;
	assert_int_equal(kvm_port_reservation(f->port, 1, &m), 0);
	assert_int_equal(m, 0x0000000100000002ULL);
	assert_int_equal(kvm_port_passthrough(f->port, VM_ID, 0, &m), 0);
	assert_int_equal(m, 0x0000000100000002ULL);
	assert_int_equal(kvm_port_passthrough(f->port, VM_ID, 2, &m), -EINVAL);
	assert_int_equal(kvm_port_passthrough(f->port, 7, 0, &m), -ENOENT);
	/* Exactly what went out: 3 reservation values, each to its CPU's
	 * file (one step at a time, none covers every CPU), 3 SET_ROUTES. */
	assert_int_equal(rec_count(&f->rec, 0), 3);
	const int want_cpu[] = { 0, 1, 1 };
	const char *const want_text[] = { "0x0000000100000003\n", "0x0000000100000003\n", "0x0000000100000002\n" };
	for (size_t i = 0, k = 0; i < f->rec.n; i++) {
		if (f->rec.cmd[i] != 0) {
			assert_int_equal(f->rec.cpu[i], -1);
			continue;
		}
		assert_int_equal(f->rec.cpu[i], want_cpu[k]);
		assert_string_equal((char *)f->rec.buf[i], want_text[k]);
		k++;
	}
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 3);
}

/* A kernel with uniform reservations only has the uniform file (D7):
 * consecutive equal steps that cover every CPU become one write of it; a
 * plan that reserves on some CPUs only is refused by the port, nothing
 * sent, since the uniform file would reserve everywhere. */
static void test_uniform_steps_coalesce(void **state)
{
	(void)state;
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->probe = f->vm_file = -1;
	assert_int_equal(fx_open_port(f, VPMU_RESERVE_CAP_UNIFORM), 0);
	assert_int_equal(kvm_port_reserve_caps(f->port), VPMU_RESERVE_CAP_UNIFORM);
	/* A CPU's file is what a uniform kernel lacks (P5). */
	struct kvm_model_caller root = { .cap_sys_admin = true };
	const char *one = "0x0000000000000001\n";
	assert_int_equal(kvm_model_reserve_write(f->m, &root, 0, one, strlen(one)), -ENOENT);

	const struct transition grow[] = { part(2, 1, 0x3, 0x4), part(2, 0, 0x3, 0x4) };
	struct kvm_apply_result res;
	if (kvm_port_apply(f->port, grow, 2, &res) != 0)
		fail_msg("%s", res.why);
	assert_int_equal(res.applied, 2);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.cmd[0], 0);
	assert_int_equal(f->rec.cpu[0], -1);
	assert_string_equal((char *)f->rec.buf[0], "0x0000000400000003\n");
	assert_int_equal(f->rec.len[0], 19);
	for (unsigned c = 0; c < N_CPUS; c++)
		assert_int_equal(model_reservation(f, c), 0x0000000400000003ULL);

	/* Equal masks of different phases, or with a different mask between
	 * them, are separate groups of one CPU each: refused before anything
	 * of the group is sent. */
	rec_clear(&f->rec);
	const struct transition split[] = { part(1, 0, 0x1, 0), part(2, 1, 0x1, 0) };
	assert_int_equal(kvm_port_apply(f->port, split, 2, &res), -EINVAL);
	assert_int_equal(res.applied, 0);
	assert_int_equal(res.failed, 0);
	assert_int_equal(f->rec.n, 0);
	assert_non_null(strstr(res.why, "cpus 0: the kernel takes one mask for every CPU"));
	assert_non_null(strstr(res.why, "nothing was sent"));
	assert_int_equal(model_reservation(f, 0), 0x0000000400000003ULL);
	/* A failure inside a later group: the earlier group stays applied. */
	rec_clear(&f->rec);
	const struct transition three[] = { part(1, 0, 0x1, 0), part(1, 1, 0x1, 0), part(1, 0, 0x2, 0) };
	assert_int_equal(kvm_port_apply(f->port, three, 3, &res), -EINVAL);
	assert_int_equal(res.applied, 2);
	assert_int_equal(res.failed, 2);
	assert_int_equal(f->rec.n, 1);
	assert_string_equal((char *)f->rec.buf[0], "0x0000000000000001\n");
	for (unsigned c = 0; c < N_CPUS; c++)
		assert_int_equal(model_reservation(f, c), 0x1);
	/* The kernel's own refusal is reported with the file and its words. */
	rec_clear(&f->rec);
	assert_int_equal(kvm_model_host_pinned(f->m, 1, NUM_GP, 0), -EBUSY);
	assert_int_equal(kvm_model_host_pinned(f->m, 1, NUM_GP - 1, 0), 0);
	const struct transition busy[] = { part(2, 0, 0x3, 0), part(2, 1, 0x3, 0) };
	assert_int_equal(kvm_port_apply(f->port, busy, 2, &res), -EBUSY);
	assert_int_equal(f->rec.n, 1);
	assert_non_null(strstr(res.why, "guest_reserve \"0x0000000000000003\": Device or resource busy"));
	for (unsigned c = 0; c < N_CPUS; c++)
		assert_int_equal(model_reservation(f, c), 0x1);
	fx_free(f);
}

/* A per-CPU kernel: a group that sets every CPU goes to the uniform file
 * in one write (all or nothing); a group of some CPUs to their files. */
static void test_per_cpu_kernel_whole_host_group_is_one_write(void **state)
{
	struct fx *f = *state;
	const struct transition all[] = { part(2, 1, 0x3, 0), part(2, 0, 0x3, 0) };
	struct kvm_apply_result res;
	if (kvm_port_apply(f->port, all, 2, &res) != 0)
		fail_msg("%s", res.why);
	assert_int_equal(f->rec.n, 1);
	assert_int_equal(f->rec.cpu[0], -1);
	assert_string_equal((char *)f->rec.buf[0], "0x0000000000000003\n");
	const struct transition some[] = { part(2, 1, 0x7, 0) };
	assert_int_equal(kvm_port_apply(f->port, some, 1, &res), 0);
	assert_int_equal(f->rec.n, 2);
	assert_int_equal(f->rec.cpu[1], 1);
	assert_int_equal(model_reservation(f, 0), 0x3);
	assert_int_equal(model_reservation(f, 1), 0x7);
	check_model(f, "after the writes");
}

/* The whole list at once: stops at the first failure, reports exactly the
 * prefix applied, and the model holds that prefix. */
static void test_stops_at_first_failure(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = {
		part(2, 0, 0x4, 0),
		routes(2, 0, 0x4, 0), /* cpu 1 still keeps gp 2 for the host */
		part(2, 1, 0x4, 0),
	};
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 3, &res), -EBUSY);
	assert_int_equal(res.applied, 1);
	assert_int_equal(res.failed, 1);
	assert_non_null(strstr(res.why, "cpu 1 keeps for the host"));
	assert_int_equal(model_reservation(f, 0), 0x4);
	assert_int_equal(model_reservation(f, 1), 0);
	assert_int_equal(model_routes(f, 0).passthrough, 0);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 0);
	/* Re-ordered so that cpu 1 grows before the route, the plan applies. */
	const struct transition fixed_plan[] = { plan[0], plan[2], plan[1] };
	assert_int_equal(kvm_port_apply(f->port, fixed_plan, 3, &res), 0);
	assert_int_equal(res.applied, 3);
	assert_int_equal(model_routes(f, 0).passthrough, 0x4);
	check_model(f, "after the plan");
}

static void test_malformed_plans_refused_whole(void **state)
{
	struct fx *f = *state;
	struct kvm_apply_result res;
	struct transition plan[2] = { part(2, 0, 0x1, 0), part(1, 1, 0, 0) };
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	assert_int_equal(res.applied, 0);
	assert_int_equal(res.failed, 1);
	assert_non_null(strstr(res.why, "phase 1 step after a phase 2 step"));
	plan[1] = routes(2, 0, 0, 0);
	plan[1].vm_id = 7;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -ENOENT);
	plan[1] = routes(2, 5, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -ENOENT);
	for (uint8_t bad = PMC_ROUTE_RESERVED; bad <= PMC_ROUTE_UNMANAGED; bad++) {
		plan[1] = routes(2, 0, 0, 0);
		plan[1].gp_route[3] = bad;
		assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
		assert_non_null(strstr(res.why, "the extension has no such route"));
	}
	plan[1] = routes(2, 0, 0, 0);
	plan[1].fixed_route[3] = PMC_ROUTE_MULTIPLEXED; /* the host has no fixed 3 */
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = routes(2, 0, 0, 0);
	plan[1].gp_route[NUM_GP] = PMC_ROUTE_PASSTHROUGH;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, N_CPUS, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, -1, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, 1, 1u << NUM_GP, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(2, 1, 0, 0x8); /* fixed 3: never a guest's */
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1] = part(3, 1, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	plan[1].kind = 9;
	plan[1].phase = 2;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EINVAL);
	assert_int_equal(f->rec.n, 0);
	assert_int_equal(model_reservation(f, 0), 0);
	assert_int_equal(kvm_port_apply(f->port, NULL, 0, &res), 0);
	assert_int_equal(kvm_port_apply(f->port, NULL, 1, &res), -EINVAL);
	assert_int_equal(kvm_port_apply(f->port, plan, 1, NULL), -EINVAL);
}

/* A pass-through outside the vCPU's shape is refused by the port as the
 * kernel would (K10), before anything is sent. */
static void test_passthrough_outside_shape(void **state)
{
	struct fx *f = *state;
	struct own_vm o;
	const uint32_t ids[] = { 0 };
	own_vm_make(&o, ids, 1);
	struct kvm_port_vm vm = { .vm_id = 50, .vmm_pid = getpid(), .vmm_pidfd = -1,
				  .route_fd = fcntl(o.vm, F_DUPFD_CLOEXEC, 3), .n_vcpus = 1,
				  .shape = 0x0000000100000003ULL };
	char why[256];
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	uint64_t shape;
	assert_int_equal(kvm_port_vcpu_shape(f->port, 50, 0, &shape), 0);
	assert_int_equal(shape, 0x0000000100000003ULL);
	const struct transition grow[] = { part(2, 0, 0x7, 0x3), part(2, 1, 0x7, 0x3) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, grow, 2, &res), 0);
	rec_clear(&f->rec);
	struct transition t = routes_of(50, 2, 0, 0x4, 0);
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), -EINVAL);
	assert_non_null(strstr(res.why, "outside the guest's shape 0x0000000100000003"));
	t = routes_of(50, 2, 0, 0x1, 0x2);
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), -EINVAL);
	assert_int_equal(f->rec.n, 0);
	t = routes_of(50, 2, 0, 0x3, 0x1);
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), 0);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 1);
	assert_int_equal(kvm_port_unregister_vm(f->port, 50), 0);
	own_vm_free(&o);
}

/* A VM whose VMM handed no route fd: its route steps are checked and
 * recorded, never sent; the reservation still goes to the model. */
static void test_advisory_vm_recorded_not_sent(void **state)
{
	struct fx *f = *state;
	struct kvm_port_vm vm = { .vm_id = 60, .vmm_pid = f->child.pid, .vmm_pidfd = -1, .route_fd = -1,
				  .n_vcpus = 2 };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), 0);
	const char *vwhy;
	assert_false(kvm_port_vm_enforced(f->port, 60, &vwhy));
	assert_string_equal(vwhy, "the VMM handed no route fd");
	assert_true(kvm_port_vm_enforced(f->port, VM_ID, &vwhy));
	assert_false(kvm_port_vm_enforced(f->port, 61, &vwhy));
	const struct transition plan[] = { part(2, 0, 0x1, 0), part(2, 1, 0x1, 0), routes_of(60, 2, 0, 0x1, 0),
					   routes_of(60, 2, 1, 0x1, 0) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 4, &res), 0);
	assert_int_equal(res.applied, 4);
	assert_int_equal(rec_count(&f->rec, 0), 1); /* one line for both CPUs */
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 0);
	assert_int_equal(model_reservation(f, 1), 0x1);
	uint64_t m;
	assert_int_equal(kvm_port_passthrough(f->port, 60, 1, &m), 0);
	assert_int_equal(m, 0x1);
	/* The ordering rules still hold for it: shrinking under its planned
	 * pass-through is refused, and nothing goes out. */
	rec_clear(&f->rec);
	const struct transition shrink = part(1, 1, 0, 0);
	assert_int_equal(kvm_port_apply(f->port, &shrink, 1, &res), -EBUSY);
	assert_non_null(strstr(res.why, "vm 60 vcpu 0"));
	assert_int_equal(f->rec.n, 0);
	struct kvm_port_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(f->port, 60, 0, &s), -EOPNOTSUPP);
	char rep[2048];
	assert_true(kvm_port_report(f->port, rep, sizeof(rep)) > 0);
	assert_non_null(strstr(rep, "vm 60 pid "));
	assert_non_null(strstr(rep, "routes advisory (the VMM handed no route fd)"));
	assert_non_null(strstr(rep, "vm 42 pid "));
	assert_non_null(strstr(rep, "routes simulated (simulated:"));
}

/* The route fd made from a real VM: the VM file the caller handed is
 * closed on success and the port holds the model's route fd instead,
 * which unregister closes. */
static void test_register_and_unregister_route_fd(void **state)
{
	struct fx *f = *state;
	struct own_vm o;
	const uint32_t ids[] = { 0, 1, 2 };
	own_vm_make(&o, ids, 3);
	static bool before[1024], after[1024];
	int handed = fcntl(o.vm, F_DUPFD_CLOEXEC, 3);
	open_fds(before);
	struct kvm_port_vm vm = { .vm_id = 70, .vmm_pid = getpid(), .vmm_pidfd = -1, .route_fd = handed,
				  .n_vcpus = 3, .vcpu_ids = ids };
	char why[256];
	size_t live = kvm_model_vm_count(f->m);
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	assert_int_equal(kvm_model_vm_count(f->m), live + 1);
	assert_false(fd_open(handed));
	open_fds(after);
	/* What appeared: the port's pidfd, the model's own references, and
	 * the model's route fd, which is the VM's file and answers route
	 * ioctls. */
	int route_fd = -1, n_route = 0, appeared = 0;
	struct kvm_model_caller root = { .cap_sys_admin = true };
	for (int fd = 0; fd < 1024; fd++) {
		if (!after[fd] || before[fd])
			continue;
		appeared++;
		struct kvm_vpmu_routes q = { .vcpu_id = 0 };
		if (syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fd, o.vm) == 0 &&
		    kvm_model_ioctl(f->m, &root, fd, KVM_VPMU_GET_ROUTES, &q) == 0) {
			route_fd = fd;
			n_route++;
		}
	}
	assert_true(appeared >= 2);
	assert_int_equal(n_route, 1);
	/* GET_VCPUS went out with the port's own room, and routes of each. */
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_GET_VCPUS), 1);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_GET_ROUTES), 3);
	assert_int_equal(kvm_port_unregister_vm(f->port, 70), 0);
	assert_false(fd_open(route_fd));
	assert_int_equal(errno, EBADF);
	assert_int_equal(kvm_model_vm_count(f->m), live);
	assert_int_equal(kvm_port_unregister_vm(f->port, 70), -ENOENT);
	own_vm_free(&o);
}

/* A foreign fd (a pipe), a closed one, and the VMM's pid wrong: refused
 * with a reason, and the caller keeps its fd. */
static void test_register_foreign_fd(void **state)
{
	struct fx *f = *state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct kvm_port_vm vm = { .vm_id = 80, .vmm_pid = f->child.pid, .vmm_pidfd = -1, .route_fd = p[0],
				  .n_vcpus = 1 };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -ENOTTY);
	assert_non_null(strstr(why, "not a KVM VM file"));
	assert_true(fd_open(p[0]));
	/* The device, not a VM. */
	int dev = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	assert_true(dev >= 0);
	vm.route_fd = dev;
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -ENOTTY);
	assert_true(fd_open(dev));
	close(dev);
	vm.route_fd = p[0];
	close(p[0]);
	close(p[1]);
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EBADF);
	assert_non_null(strstr(why, "not an open fd"));
	/* A pidfd for another process than vmm_pid. */
	struct own_vm o;
	const uint32_t ids[] = { 0 };
	own_vm_make(&o, ids, 1);
	vm.route_fd = fcntl(o.vm, F_DUPFD_CLOEXEC, 3);
	vm.vmm_pidfd = vmm_discover_pidfd_open(getpid());
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "the pidfd names another process"));
	assert_true(fd_open(vm.route_fd));
	close(vm.vmm_pidfd);
	close(vm.route_fd);
	own_vm_free(&o);
	vm.vmm_pidfd = -1;
	vm.route_fd = -1;
	vm.n_vcpus = 0;
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EINVAL);
	assert_int_equal(f->rec.n, 0);
}

/* The same VM registered twice, whatever fd number carries it: EEXIST, and
 * the caller keeps its fd. The same vm_id as well. */
static void test_register_same_vm_twice(void **state)
{
	struct fx *f = *state;
	int again = fcntl(f->vm_file, F_DUPFD_CLOEXEC, 100);
	assert_true(again >= 100);
	struct kvm_port_vm vm = { .vm_id = 90, .vmm_pid = f->child.pid, .vmm_pidfd = -1, .route_fd = again,
				  .n_vcpus = 2 };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "names a VM that is already registered"));
	assert_true(fd_open(again));
	vm.vm_id = VM_ID;
	vm.route_fd = -1;
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "vm 42 already registered"));
	close(again);
	/* Once unregistered, the VM may come back. */
	assert_int_equal(kvm_port_unregister_vm(f->port, VM_ID), 0);
	vm.route_fd = fcntl(f->vm_file, F_DUPFD_CLOEXEC, 3);
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
}

/* The VMM exits: the model takes that for the VM's death, route-fd ioctls
 * return EIO, and the port says so. */
static void test_vmm_death_eio(void **state)
{
	struct fx *f = *state;
	const struct transition grow[] = { part(2, 0, 0x1, 0), part(2, 1, 0x1, 0) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, grow, 2, &res), 0);
	pid_t vmm = f->child.pid;
	kvm_child_stop(&f->child);
	struct transition pt = routes(2, 0, 0x1, 0);
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), -EIO);
	assert_int_equal(res.applied, 0);
	assert_non_null(strstr(res.why, "KVM_VPMU_SET_ROUTES"));
	assert_non_null(strstr(res.why, "the VM is dead (its VMM exited)"));
	const char *why;
	assert_false(kvm_port_vm_enforced(f->port, VM_ID, &why));
	assert_non_null(strstr(why, "the VM is dead"));
	uint64_t m;
	assert_int_equal(kvm_port_passthrough(f->port, VM_ID, 0, &m), 0);
	assert_int_equal(m, 0);
	struct kvm_port_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(f->port, VM_ID, 0, &s), -EIO);
	char rep[2048];
	assert_true(kvm_port_report(f->port, rep, sizeof(rep)) > 0);
	assert_non_null(strstr(rep, "routes advisory (the VM is dead"));
	/* Unregistered, its route fd closed: the dead VM is gone from the
	 * model too (closing is all that is left of a dead VM, D2). */
	assert_int_equal(kvm_port_unregister_vm(f->port, VM_ID), 0);
	assert_int_equal(kvm_model_vm_count(f->m), 0);
	f->probe = -1;
	/* Its VMM is gone: ESRCH before anything is asked. */
	struct kvm_port_vm vm = { .vm_id = 91, .vmm_pid = vmm, .vmm_pidfd = -1,
				  .route_fd = fcntl(f->vm_file, F_DUPFD_CLOEXEC, 3), .n_vcpus = 2 };
	char w[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, w, sizeof(w)), -ESRCH);
	assert_true(fd_open(vm.route_fd));
	close(vm.route_fd);
}

/* Lease vCPU i is the i-th vCPU KVM created, whatever its id (APIC IDs are
 * often not contiguous): the port sends that id, never the index. */
static void test_vcpu_id_mapping(void **state)
{
	struct fx *f = *state;
	struct own_vm o;
	const uint32_t ids[] = { 4, 9 };
	own_vm_make(&o, ids, 2);
	struct kvm_port_vm vm = { .vm_id = 100, .vmm_pid = getpid(), .vmm_pidfd = -1,
				  .route_fd = fcntl(o.vm, F_DUPFD_CLOEXEC, 3), .n_vcpus = 2, .vcpu_ids = ids };
	char why[256];
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	/* Registration asked routes by id. */
	size_t got = 0;
	for (size_t i = 0; i < f->rec.n; i++) {
		if (f->rec.cmd[i] != KVM_VPMU_GET_ROUTES)
			continue;
		const struct kvm_vpmu_routes *q = (const void *)f->rec.buf[i];
		assert_int_equal(q->vcpu_id, ids[got]);
		got++;
	}
	assert_int_equal(got, 2);
	const struct transition plan[] = { part(2, 0, 0x2, 0), part(2, 1, 0x2, 0), routes_of(100, 2, 1, 0x2, 0) };
	struct kvm_apply_result res;
	rec_clear(&f->rec);
	if (kvm_port_apply(f->port, plan, 3, &res) != 0)
		fail_msg("%s", res.why);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 1);
	const struct kvm_vpmu_routes *sent = (const void *)f->rec.buf[f->rec.n - 1];
	assert_int_equal(f->rec.cmd[f->rec.n - 1], KVM_VPMU_SET_ROUTES);
	assert_int_equal(sent->vcpu_id, 9);
	assert_int_equal(sent->passthrough, 0x2);
	/* The model agrees: id 9 passes gp 1 through, id 1 does not exist. */
	int probe = port_route_fd(f->m, o.vm);
	assert_true(probe >= 0);
	struct kvm_model_caller root = { .cap_sys_admin = true };
	struct kvm_vpmu_routes q = { .vcpu_id = 9 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, probe, KVM_VPMU_GET_ROUTES, &q), 0);
	assert_int_equal(q.passthrough, 0x2);
	q = (struct kvm_vpmu_routes){ .vcpu_id = 4 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, probe, KVM_VPMU_GET_ROUTES, &q), 0);
	assert_int_equal(q.passthrough, 0);
	q = (struct kvm_vpmu_routes){ .vcpu_id = 1 };
	assert_int_equal(kvm_model_ioctl(f->m, &root, probe, KVM_VPMU_GET_ROUTES, &q), -ENOENT);
	assert_int_equal(kvm_port_unregister_vm(f->port, 100), 0);
	assert_int_equal(kvm_model_ioctl(f->m, &root, probe, KVM_VPMU_GET_ROUTES, &q), -EBADF);
	own_vm_free(&o);
}

/* D8: a VM whose route fd is open elsewhere (here: the test's own model
 * route fd) cannot be given another; the port says why and the caller
 * keeps its fd. Once that route fd is closed, registration works. (A
 * lease with more vCPUs than the VM has cannot be built with the model,
 * which takes its vCPUs from the lease: read_vm's check is kernel-only.) */
static void test_second_route_fd_of_a_vm_refused(void **state)
{
	struct fx *f = *state;
	struct own_vm o;
	const uint32_t ids[] = { 0, 1 };
	own_vm_make(&o, ids, 2);
	int probe;
	struct kvm_model_vm_desc desc = { .opted_in = true, .lapic_in_kernel = true, .shape = HOST_SHAPE,
					  .nr_vcpus = 2, .vcpu_ids = ids, .vmm_pidfd = -1 };
	const struct kvm_vpmu_route_fd args = { 0 };
	assert_int_equal(kvm_model_create_route_fd(f->m, o.vm, &desc, &args, &probe), 0);
	int handed = fcntl(o.vm, F_DUPFD_CLOEXEC, 3);
	struct kvm_port_vm vm = { .vm_id = 110, .vmm_pid = getpid(), .vmm_pidfd = -1, .route_fd = handed,
				  .n_vcpus = 2 };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "the VM already has a route fd open (one per VM"));
	assert_true(fd_open(handed));
	assert_int_equal(kvm_model_route_close(f->m, probe), 0);
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	assert_int_equal(kvm_port_unregister_vm(f->port, 110), 0);
	own_vm_free(&o);
}

/* The lease routes the guest's own shape: a lease that differs from the
 * guest's CPUID is refused at register, and a plan that calls a PMC of the
 * shape disabled is refused (the kernel would run it multiplexed). */
static void test_lease_shape_is_the_guests(void **state)
{
	struct fx *f = *state;
	struct own_vm o;
	const uint32_t ids[] = { 0, 1 };
	own_vm_make(&o, ids, 2);
	char why[256];
	int handed = fcntl(o.vm, F_DUPFD_CLOEXEC, 3);
	struct kvm_port_vm vm = { .vm_id = 120, .vmm_pid = getpid(), .vmm_pidfd = -1, .route_fd = handed,
				  .n_vcpus = 2, .shape = 0xf | (0x3ULL << 32),
				  .model_cpuid_shape = 0xff | (0x7ULL << 32) };
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "the guest's PMU (CPUID leaf 0xA) is gp 8 fixed 0x7; the lease asks gp 4 fixed 0x3"));
	assert_true(fd_open(handed));
	assert_int_equal(kvm_model_vm_count(f->m), 1); /* the test fixture's VM only */
	vm.model_cpuid_shape = 0;
	if (kvm_port_register_vm(f->port, &vm, why, sizeof(why)) != 0)
		fail_msg("%s", why);
	/* gp 2 of the shape disabled: refused before anything is sent */
	struct transition t = routes_of(120, 2, 1, 0x1, 0);
	t.gp_route[2] = PMC_ROUTE_DISABLED;
	struct kvm_apply_result res;
	size_t sent = f->rec.n;
	assert_int_equal(kvm_port_apply(f->port, &t, 1, &res), -EINVAL);
	assert_non_null(strstr(res.why, "in the guest's shape"));
	assert_int_equal(f->rec.n, sent);
	/* outside the shape, disabled is what it is */
	struct transition u = routes_of(120, 2, 1, 0, 0);
	for (unsigned i = 4; i < NUM_GP; i++)
		u.gp_route[i] = PMC_ROUTE_DISABLED;
	if (kvm_port_apply(f->port, &u, 1, &res) != 0)
		fail_msg("%s", res.why);
	assert_int_equal(kvm_port_unregister_vm(f->port, 120), 0);
	own_vm_free(&o);
}

/* The kernel's statistics, through the stats fd of each vCPU. */
static void test_stats_through_stats_fd(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = { part(2, 0, 0x3, 0), routes(2, 0, 0x1, 0) };
	struct kvm_apply_result res;
	/* vCPU 0 may run anywhere, so cpu 1 must hold gp 0 too... */
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), -EBUSY);
	/* ...unless its lease keeps it on cpu 0. */
	const unsigned cpu0 = 0;
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, VM_ID, 0, &cpu0, 1), 0);
	if (kvm_port_apply(f->port, &plan[1], 1, &res) != 0)
		fail_msg("%s", res.why);
	const struct transition more = routes(2, 0, 0x3, 0), same = routes(2, 0, 0x3, 0);
	assert_int_equal(kvm_port_apply(f->port, &more, 1, &res), 0);
	assert_int_equal(kvm_port_apply(f->port, &same, 1, &res), 0);
	/* The guest runs on cpu 1, which reserves nothing: both PMCs frozen
	 * there (K14), and an access to one is intercepted (K15). */
	assert_int_equal(kvm_model_vcpu_load(f->m, f->probe, 0, 1), 2);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->probe, 0, VPMU_GP_BIT(0), true), 1);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->probe, 0), 0);
	assert_int_equal(kvm_model_vcpu_load(f->m, f->probe, 0, 0), 0);
	assert_int_equal(kvm_model_guest_msr_access(f->m, f->probe, 0, VPMU_GP_BIT(1), false), 0);
	assert_int_equal(kvm_model_vcpu_put(f->m, f->probe, 0), 0);
	rec_clear(&f->rec);
	struct kvm_port_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(f->port, VM_ID, 0, &s), 0);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_GET_VCPU_STATS_FD), 1);
	assert_int_equal(((const struct kvm_vpmu_stats_fd *)f->rec.buf[0])->vcpu_id, 0);
	assert_int_equal(s.route_changes, 2); /* the same mask again is no change (K17) */
	assert_int_equal(s.frozen_entries, 1);
	assert_int_equal(s.msr_exits, 1);
	assert_int_equal(s.estimated_reads, 0);
	assert_int_equal(kvm_port_vcpu_stats(f->port, VM_ID, 1, &s), 0);
	assert_int_equal(s.route_changes, 0);
	assert_int_equal(s.frozen_entries, 0);
	assert_int_equal(kvm_port_vcpu_stats(f->port, VM_ID, 2, &s), -EINVAL);
	assert_int_equal(kvm_port_vcpu_stats(f->port, 5, 0, &s), -ENOENT);
}

/* The guard: no pass-through while a CPU the vCPU may run on keeps the
 * counter for the host; no shrinking under a live pass-through. Each
 * refusal sends nothing. */
static void test_guard_refusals(void **state)
{
	struct fx *f = *state;
	const struct transition grow[] = { part(2, 0, 0x3, 0x1), part(2, 1, 0x1, 0x1) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, grow, 2, &res), 0);
	rec_clear(&f->rec);
	/* gp 1 is reserved on cpu 0 only. */
	struct transition pt = routes(2, 1, 0x2, 0x1);
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), -EBUSY);
	assert_non_null(strstr(res.why, "vm 42 vcpu 1: pass-through of 0x0000000000000002, which cpu 1 keeps"));
	assert_int_equal(f->rec.n, 0);
	const unsigned cpus[] = { 0 };
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, VM_ID, 1, cpus, 1), 0);
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), 0);
	assert_int_equal(rec_count(&f->rec, KVM_VPMU_SET_ROUTES), 1);
	/* Shrinking cpu 0 under vcpu 1's gp 1 is refused... */
	rec_clear(&f->rec);
	struct transition shrink = part(1, 0, 0x1, 0x1);
	assert_int_equal(kvm_port_apply(f->port, &shrink, 1, &res), -EBUSY);
	assert_non_null(strstr(res.why, "cpu 0: shrinking the reservation under vm 42 vcpu 1"));
	assert_int_equal(f->rec.n, 0);
	assert_int_equal(model_reservation(f, 0), 0x0000000100000003ULL);
	/* ...while cpu 1, where vcpu 1 may not run, may drop fixed 0. */
	shrink = part(1, 1, 0x1, 0);
	assert_int_equal(kvm_port_apply(f->port, &shrink, 1, &res), 0);
	/* Back to any CPU: the same route would now be refused. */
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, VM_ID, 1, NULL, 0), 0);
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), -EBUSY);
	/* Bad arguments. */
	const unsigned beyond[] = { 0, N_CPUS };
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, VM_ID, 1, beyond, 2), -EINVAL);
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, VM_ID, 2, cpus, 1), -EINVAL);
	assert_int_equal(kvm_port_set_vcpu_cpus(f->port, 7, 0, cpus, 1), -ENOENT);
	check_model(f, "after the guard test");
}

/* A vCPU thread pinned to cpu 0 needs only cpu 0's reservation. */
static void test_affinity_narrows_cpus(void **state)
{
	struct fx *f = *state;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	if (sched_setaffinity(f->child.tid[0], sizeof(one), &one) < 0)
		skip();
	struct kvm_port_vm vm = { .vm_id = 43, .vmm_pid = f->child.pid, .vmm_pidfd = -1, .route_fd = -1,
				  .n_vcpus = 1, .vcpu_tids = &f->child.tid[0] };
	char why[256];
	assert_int_equal(kvm_port_register_vm(f->port, &vm, why, sizeof(why)), 0);
	const struct transition grow = part(2, 0, 0x1, 0);
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, &grow, 1, &res), 0);
	struct transition pt = routes_of(43, 2, 0, 0x1, 0);
	if (kvm_port_apply(f->port, &pt, 1, &res) != 0)
		fail_msg("%s", res.why);
	/* The same vCPU registered without its thread may run anywhere. */
	pt.vm_id = VM_ID;
	assert_int_equal(kvm_port_apply(f->port, &pt, 1, &res), -EBUSY);
	assert_int_equal(kvm_port_unregister_vm(f->port, 43), 0);
}

static void test_report(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = { part(2, 0, 0x3, 0x1), part(2, 1, 0x3, 0x1), routes(2, 0, 0x1, 0x1) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 3, &res), 0);
	int need = kvm_port_report(f->port, NULL, 0);
	assert_true(need > 0);
	char *rep = malloc((size_t)need + 1);
	assert_non_null(rep);
	assert_int_equal(kvm_port_report(f->port, rep, (size_t)need + 1), need);
	assert_int_equal(strlen(rep), (size_t)need);
	printf("%s", rep);
	assert_non_null(strstr(rep, "kvm port: backend model (model requested"));
	assert_non_null(strstr(rep, "kvm port: reserve caps 3: per-cpu"));
	assert_non_null(strstr(rep, "kvm port: reservation 0-1 0x0000000100000003\n"));
	assert_non_null(strstr(rep, "kvm port: vm 42 pid "));
	assert_non_null(strstr(rep, ": 2 vcpus, 2 pass-through PMCs; routes simulated"));
	/* Groups by first CPU, one line each. */
	const struct transition shrink = part(1, 1, 0x1, 0x1);
	assert_int_equal(kvm_port_apply(f->port, &shrink, 1, &res), 0);
	char small[4096];
	assert_true(kvm_port_report(f->port, small, sizeof(small)) > 0);
	const char *a = strstr(small, "kvm port: reservation 0 0x0000000100000003\n");
	const char *b = strstr(small, "kvm port: reservation 1 0x0000000100000001\n");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a < b);
	free(rep);
}

/* The reservation attribute is root's: without the privilege every write
 * is refused, and nothing changes. */
static void test_unprivileged_caller(void **state)
{
	struct fx *f = *state;
	struct kvm_port_opts o = base_opts(KVM_BACKEND_MODEL);
	o.model = f->m;
	o.caller.cap_sys_admin = false;
	struct kvm_port *p = NULL;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &p, why, sizeof(why)), 0);
	const struct transition grow = part(2, 0, 0x1, 0);
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(p, &grow, 1, &res), -EACCES);
	assert_non_null(strstr(res.why, "cpu0/perf_guest_reserve \"0x0000000000000001\": Permission denied: the "
				       "reservation files are root's"));
	assert_int_equal(res.applied, 0);
	assert_int_equal(model_reservation(f, 0), 0);
	uint64_t m;
	assert_int_equal(kvm_port_reservation(p, 0, &m), 0);
	assert_int_equal(m, 0);
	kvm_port_close(p);
}

/* A second port on the same model starts from what the model holds. */
static void test_open_reads_reservation(void **state)
{
	struct fx *f = *state;
	const struct transition plan[] = { part(2, 0, 0x5, 0x2), part(2, 1, 0x1, 0) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(f->port, plan, 2, &res), 0);
	struct kvm_port_opts o = base_opts(KVM_BACKEND_MODEL);
	o.model = f->m;
	struct kvm_port *p = NULL;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &p, why, sizeof(why)), 0);
	uint64_t m;
	assert_int_equal(kvm_port_reservation(p, 0, &m), 0);
	assert_int_equal(m, 0x0000000200000005ULL);
	assert_int_equal(kvm_port_reservation(p, 1, &m), 0);
	assert_int_equal(m, 0x1);
	assert_int_equal(kvm_port_reservation(p, N_CPUS, &m), -EINVAL);
	kvm_port_close(p);
}

/* Advisory backend: the plan is checked and recorded, nothing is sent, and
 * every VM is advisory; a route fd handed anyway is held and closed at
 * unregister. */
static void test_advisory_backend(void **state)
{
	struct fx *f = *state;
	struct kvm_port_opts o = base_opts(KVM_BACKEND_ADVISORY);
	o.trace = record;
	o.trace_ctx = &f->rec;
	struct kvm_port *p;
	char why[256];
	assert_int_equal(kvm_port_open(&o, &p, why, sizeof(why)), 0);
	assert_false(kvm_port_enforced(p));
	assert_int_equal(kvm_port_reserve_caps(p), 0);
	int handed = fcntl(f->vm_file, F_DUPFD_CLOEXEC, 3);
	struct kvm_port_vm vm = { .vm_id = VM_ID, .vmm_pid = f->child.pid, .vmm_pidfd = -1, .route_fd = handed,
				  .n_vcpus = 2 };
	assert_int_equal(kvm_port_register_vm(p, &vm, why, sizeof(why)), 0);
	const char *vwhy;
	assert_false(kvm_port_vm_enforced(p, VM_ID, &vwhy));
	assert_string_equal(vwhy, "advisory backend: advisory requested");
	const struct transition plan[] = { part(2, 0, 0x1, 0), part(2, 1, 0x1, 0), routes(2, 0, 0x1, 0) };
	struct kvm_apply_result res;
	assert_int_equal(kvm_port_apply(p, plan, 3, &res), 0);
	assert_int_equal(res.applied, 3);
	assert_int_equal(f->rec.n, 0);
	uint64_t m;
	assert_int_equal(kvm_port_passthrough(p, VM_ID, 0, &m), 0);
	assert_int_equal(m, 0x1);
	const struct transition shrink = part(1, 1, 0, 0);
	assert_int_equal(kvm_port_apply(p, &shrink, 1, &res), -EBUSY);
	struct kvm_port_vcpu_stats s;
	assert_int_equal(kvm_port_vcpu_stats(p, VM_ID, 0, &s), -EOPNOTSUPP);
	char rep[2048];
	assert_true(kvm_port_report(p, rep, sizeof(rep)) > 0);
	assert_non_null(strstr(rep, "NOT enforced"));
	assert_non_null(strstr(rep, "planned, not enforced"));
	assert_non_null(strstr(rep, "reserve caps: none"));
	assert_non_null(strstr(rep, "routes advisory (advisory backend: advisory requested)"));
	assert_true(fd_open(handed));
	assert_int_equal(kvm_port_unregister_vm(p, VM_ID), 0);
	assert_false(fd_open(handed));
	kvm_port_close(p);
	assert_int_equal(model_reservation(f, 0), 0);
}

/* ----------------------------------------------------- binary stats fds */

/* A stats fd image in KVM_GET_STATS_FD's layout, for the parser. */
static int stats_image(uint32_t name_size, const char *const *names, const uint64_t *values, size_t n,
		       bool truncate_data)
{
	size_t desc_size = sizeof(struct kvm_stats_desc) + name_size;
	struct kvm_stats_header h = { .name_size = name_size, .num_desc = (uint32_t)n,
				      .id_offset = sizeof(h), .desc_offset = sizeof(h) + name_size,
				      .data_offset = (uint32_t)(sizeof(h) + name_size + n * desc_size) };
	size_t total = h.data_offset + n * 8;
	uint8_t *img = calloc(1, total);
	assert_non_null(img);
	memcpy(img, &h, sizeof(h));
	for (size_t i = 0; i < n; i++) {
		struct kvm_stats_desc d = { .size = 1, .offset = (uint32_t)((n - 1 - i) * 8) };
		memcpy(img + h.desc_offset + i * desc_size, &d, sizeof(d));
		memcpy(img + h.desc_offset + i * desc_size + sizeof(d), names[i],
		       strlen(names[i]) < name_size ? strlen(names[i]) + 1 : name_size);
		memcpy(img + h.data_offset + (n - 1 - i) * 8, &values[i], 8);
	}
	int fd = memfd_create("stats", MFD_CLOEXEC);
	assert_true(fd >= 0);
	size_t len = truncate_data ? total - 4 : total;
	assert_int_equal(pwrite(fd, img, len, 0), (ssize_t)len);
	free(img);
	return fd;
}

static void test_stats_parser_layouts(void **state)
{
	(void)state;
	const char *names[] = { "pmu_msr_exits", "other", "pmu_route_changes" };
	const uint64_t values[] = { 0x1122334455667788ULL, 5, 77 };
	uint64_t got[2];
	const char *want[] = { "pmu_route_changes", "pmu_msr_exits" };
	/* An odd name size: descriptors are not 8-byte aligned. */
	int fd = stats_image(21, names, values, 3, false);
	assert_int_equal(kvm_port_stats_read(fd, want, 2, got), 0);
	assert_int_equal(got[0], 77);
	assert_int_equal(got[1], 0x1122334455667788ULL);
	const char *absent[] = { "pmu_msr_exits", "nope" };
	assert_int_equal(kvm_port_stats_read(fd, absent, 2, got), -ENODATA);
	assert_int_equal(got[0], 0x1122334455667788ULL);
	assert_int_equal(got[1], 0);
	close(fd);
	/* A name that fills its field without a NUL: malformed. */
	const char *long_names[] = { "pmu_msr_exits_and_more_and_more" };
	fd = stats_image(16, long_names, values, 1, false);
	assert_int_equal(kvm_port_stats_read(fd, want, 1, got), -EPROTO);
	close(fd);
	/* Data shorter than the header says (the last slot is names[0]'s). */
	fd = stats_image(48, names, values, 3, true);
	assert_int_equal(kvm_port_stats_read(fd, want, 1, got), 0);
	assert_int_equal(got[0], 77);
	assert_int_equal(kvm_port_stats_read(fd, names, 1, got), -EPROTO);
	close(fd);
	assert_int_equal(kvm_port_stats_read(-1, want, 1, got), -EINVAL);
}

/* The parser on a real KVM vCPU's stats fd: a tiny real-mode guest runs
 * one HLT, which KVM counts as one halt exit. */
static void test_stats_parser_real_kvm(void **state)
{
	(void)state;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		skip();
	if (ioctl(kvm, KVM_CHECK_EXTENSION, (long)KVM_CAP_BINARY_STATS_FD) <= 0) {
		close(kvm);
		skip();
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(vm >= 0);
	assert_int_equal(ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul), 0);
	uint8_t *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(mem != MAP_FAILED);
	mem[0] = 0xf4; /* hlt */
	struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = 0x1000,
						      .userspace_addr = (uintptr_t)mem };
	assert_int_equal(ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region), 0);
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0ul);
	assert_true(vcpu >= 0);
	int stats = ioctl(vcpu, KVM_GET_STATS_FD, 0);
	assert_true(stats >= 0);
	const char *names[] = { "halt_exits", "exits" };
	uint64_t before[2], after[2];
	assert_int_equal(kvm_port_stats_read(stats, names, 2, before), 0);
	assert_int_equal(before[0], 0);

	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	assert_true(run_size > 0);
	struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	assert_true(run != MAP_FAILED);
	struct kvm_sregs sregs;
	assert_int_equal(ioctl(vcpu, KVM_GET_SREGS, &sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	assert_int_equal(ioctl(vcpu, KVM_SET_SREGS, &sregs), 0);
	struct kvm_regs regs = { .rip = 0, .rflags = 0x2 };
	assert_int_equal(ioctl(vcpu, KVM_SET_REGS, &regs), 0);
	assert_int_equal(ioctl(vcpu, KVM_RUN, 0), 0);
	assert_int_equal(run->exit_reason, KVM_EXIT_HLT);
	assert_int_equal(kvm_port_stats_read(stats, names, 2, after), 0);
	assert_int_equal(after[0], 1);
	assert_true(after[1] >= 1 && after[1] > before[1]);
	/* None of the vpmu statistics on a stock kernel. */
	const char *vpmu[] = { VPMU_STAT_ROUTE_CHANGES };
	assert_int_equal(kvm_port_stats_read(stats, vpmu, 1, after), -ENODATA);
	munmap(run, (size_t)run_size);
	close(stats);
	close(vcpu);
	close(vm);
	munmap(mem, 0x1000);
	close(kvm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backend_names),
		cmocka_unit_test(test_uapi_layout),
		cmocka_unit_test(test_check_route_fd_classifies),
		cmocka_unit_test(test_encode_reserve_bytes),
		cmocka_unit_test(test_encode_routes_bytes),
		cmocka_unit_test(test_forced_ioctl_refused_sends_nothing),
		cmocka_unit_test(test_backend_choice_reasons),
		cmocka_unit_test(test_uniform_steps_coalesce),
		cmocka_unit_test(test_stats_parser_layouts),
		cmocka_unit_test(test_stats_parser_real_kvm),
		cmocka_unit_test_setup_teardown(test_two_phase_plans_through_model, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_cpu_kernel_whole_host_group_is_one_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stops_at_first_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_plans_refused_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(test_passthrough_outside_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_advisory_vm_recorded_not_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_and_unregister_route_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_foreign_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_register_same_vm_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmm_death_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vcpu_id_mapping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease_shape_is_the_guests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_route_fd_of_a_vm_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stats_through_stats_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_affinity_narrows_cpus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_report, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unprivileged_caller, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_reads_reservation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_advisory_backend, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
