/* SPDX-License-Identifier: MIT */
/*
 * vpmu-fake-vmm: the smallest real VMM — it creates a KVM VM and N vCPUs
 * through /dev/kvm, one thread per vCPU named "CPU N/KVM" as QEMU names
 * them, prints "pid=P vm_fd=F vcpus=N" and waits to be killed. It never
 * runs guest code. Tests and the demo bind VM leases to it, so leases
 * follow a real process that holds a real KVM VM.
 *
 * With --route-fd it also does what a VMM does for vpmu
 * (docs/vmm-integration.md): opts the VM in before its first vCPU
 * (KVM_ENABLE_CAP(KVM_CAP_PMU_CAPABILITY, KVM_PMU_CAP_PARTITION)), creates
 * the route fd (KVM_CREATE_VPMU_ROUTE_FD) and hands it to vpmud with
 * vm.bind --name NAME, through the client library. No kernel has the
 * extension: it prints what the kernel said, and hands a duplicate of its
 * VM fd instead, which is what the model backend (vpmud --kvm model)
 * takes for a route fd. One line per step, then the answer, then it waits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <linux/vpmu_kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vpmu/client.h"

#ifndef KVM_CAP_PMU_CAPABILITY
#define KVM_CAP_PMU_CAPABILITY 212
#endif

struct vcpu_thread {
	int vm_fd;
	unsigned id;
	pthread_barrier_t *ready;
	int err;
};

static void *vcpu_main(void *arg)
{
	struct vcpu_thread *t = arg;
	char name[16];
	snprintf(name, sizeof(name), "CPU %u/KVM", t->id);
	prctl(PR_SET_NAME, name);
	if (ioctl(t->vm_fd, KVM_CREATE_VCPU, (unsigned long)t->id) < 0)
		t->err = errno;
	pthread_barrier_wait(t->ready);
	for (;;)
		pause();
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: vpmu-fake-vmm [--route-fd[=SOCKET] --name NAME [--closed-route-fd]] [VCPUS 1..64]\n"
			"  --route-fd[=SOCKET]  opt in, create the route fd and hand it to vpmud (default socket:\n"
			"                       $" VPMU_CLIENT_SOCKET_ENV " or " VPMU_CLIENT_DEFAULT_SOCKET ") with vm.bind NAME\n"
			"  --closed-route-fd    close it before handing it over (tests: the library's EBADF)\n");
	return 2;
}

/* "EINVAL (Invalid argument)": what the kernel said, by name. */
static const char *errno_text(int e)
{
	static char buf[96];
	const char *name = strerrorname_np(e);
	snprintf(buf, sizeof(buf), "%s (%s)", name ? name : "?", strerror(e));
	return buf;
}

/*
 * The route fd to hand over: the kernel's when it has the extension, else
 * what the model takes for one, a dup of the VM fd (the VMM keeps its own
 * VM fd, and vpmud's discovery counts one VM file however many numbers
 * hold it). -1 when not even that can be made.
 */
static int make_route_fd(int vm)
{
	struct kvm_vpmu_route_fd args = { 0 };
	int fd = ioctl(vm, KVM_CREATE_VPMU_ROUTE_FD, &args);
	if (fd >= 0) {
		printf("KVM_CREATE_VPMU_ROUTE_FD: route fd %d\n", fd);
		return fd;
	}
	printf("KVM_CREATE_VPMU_ROUTE_FD: %s\n", errno_text(errno));
	fd = fcntl(vm, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "vpmu-fake-vmm: dup of the VM fd: %s\n", strerror(errno));
		return -1;
	}
	printf("model route fd %d: a dup of the VM fd (the kernel lacks KVM_CAP_VPMU_ROUTES)\n", fd);
	return fd;
}

/* vm.bind NAME with our pid and the route fd; prints the answer. closed:
 * close it first, once connected (so that the socket cannot take its
 * number). */
static int hand_route_fd(const char *socket, const char *name, int route_fd, bool closed)
{
	struct vpmu_client *c = NULL;
	struct vpmu_client_error e;
	struct json_object *res = NULL, *v;
	uint64_t deadline = vpmu_client_now_usec() + 5000000;
	int r = vpmu_client_connect(socket, "vpmu-fake-vmm", deadline, &c, &e);
	if (r == 0 && closed) {
		close(route_fd);
		printf("closed route fd %d before handing it over\n", route_fd);
	}
	if (r == 0)
		r = vpmu_client_vm_bind_route_fd(c, name, getpid(), route_fd, deadline, &res, &e);
	vpmu_client_close(c);
	if (r < 0) {
		printf("vm.bind %s: %s%s%s\n", name, e.remote ? e.code : errno_text(-r), ": ", e.message);
		return r;
	}
	const char *routes = json_object_object_get_ex(res, "routes", &v) ? json_object_get_string(v) : "?";
	const char *why = json_object_object_get_ex(res, "routes_why", &v) ? json_object_get_string(v) : NULL;
	printf("vm.bind %s: bound, routes %s%s%s%s\n", name, routes, why ? " (" : "", why ? why : "", why ? ")" : "");
	json_object_put(res);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "route-fd", optional_argument, NULL, 'r' },
		{ "name", required_argument, NULL, 'n' },
		{ "closed-route-fd", no_argument, NULL, 'c' },
		{ 0 },
	};
	bool route = false, closed = false;
	const char *socket = NULL, *name = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'r': route = true, socket = optarg; break;
		case 'n': name = optarg; break;
		case 'c': closed = true; break;
		default: return usage();
		}
	}
	if (route != (name != NULL) || (closed && !route) || argc - optind > 1)
		return usage();
	unsigned n = optind < argc ? (unsigned)strtoul(argv[optind], NULL, 10) : 1;
	if (n == 0 || n > 64)
		return usage();
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "vpmu-fake-vmm: /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		fprintf(stderr, "vpmu-fake-vmm: KVM_CREATE_VM: %s\n", strerror(errno));
		return 77;
	}
	/* The opt-in is only taken before the first vCPU (docs/kvm-api.md);
	 * a VMM that cannot opt in runs its guest anyway, its routes then
	 * advisory. Reported after the pid line, which tests read first. */
	int opt_in = 0;
	if (route) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_PMU_CAPABILITY, .args = { KVM_PMU_CAP_PARTITION } };
		opt_in = ioctl(vm, KVM_ENABLE_CAP, &cap) < 0 ? errno : 0;
	}
	pthread_barrier_t ready;
	pthread_barrier_init(&ready, NULL, n + 1);
	struct vcpu_thread *t = calloc(n, sizeof(*t));
	for (unsigned i = 0; i < n; i++) {
		pthread_t th;
		t[i] = (struct vcpu_thread){ .vm_fd = vm, .id = i, .ready = &ready };
		pthread_create(&th, NULL, vcpu_main, &t[i]);
	}
	pthread_barrier_wait(&ready);
	for (unsigned i = 0; i < n; i++)
		if (t[i].err) {
			fprintf(stderr, "vpmu-fake-vmm: KVM_CREATE_VCPU %u: %s\n", i, strerror(t[i].err));
			return 1;
		}
	printf("pid=%d vm_fd=%d vcpus=%u\n", (int)getpid(), vm, n);
	if (route) {
		printf("KVM_CHECK_EXTENSION(KVM_CAP_VPMU_ROUTES): %d\n", ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VPMU_ROUTES));
		printf("KVM_ENABLE_CAP(KVM_CAP_PMU_CAPABILITY, KVM_PMU_CAP_PARTITION): %s\n",
		       opt_in ? errno_text(opt_in) : "opted in");
		int route_fd = make_route_fd(vm);
		if (route_fd < 0)
			return 1;
		fflush(stdout);
		if (hand_route_fd(socket, name, route_fd, closed) < 0) {
			fflush(stdout);
			return 1;
		}
		/* vpmud holds its own copy now; the VMM keeps its VM fd. */
		if (!closed)
			close(route_fd);
	}
	fflush(stdout);
	for (;;)
		pause();
}
