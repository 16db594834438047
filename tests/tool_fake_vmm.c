/* SPDX-License-Identifier: MIT */
/*
 * vpmu-fake-vmm: the smallest real VMM — it creates a KVM VM and N vCPUs
 * through /dev/kvm, one thread per vCPU named "CPU N/KVM" as QEMU names
 * them, prints "pid=P vm_fd=F vcpus=N" and waits to be killed. It never
 * runs guest code. Tests and the demo bind VM leases to it, so leases
 * follow a real process that holds a real KVM VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <unistd.h>

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

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1;
	if (n == 0 || n > 64) {
		fprintf(stderr, "usage: vpmu-fake-vmm [VCPUS 1..64]\n");
		return 2;
	}
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
	fflush(stdout);
	for (;;)
		pause();
}
