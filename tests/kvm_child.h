/* SPDX-License-Identifier: MIT */
/*
 * Test helper shared by the kvm test suites: a real child process that
 * creates KVM VMs and vCPUs through /dev/kvm, the way a VMM does, so that
 * discovery and the model see genuine anon_inode:kvm-vm / kvm-vcpu:N fds.
 */
#ifndef VPMU_TEST_KVM_CHILD_H
#define VPMU_TEST_KVM_CHILD_H

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define KVM_CHILD_MAX_VCPUS 8

struct kvm_child {
	pid_t pid;
	int dev_fd;                       /* the child's /dev/kvm fd number */
	int vm_fd[2];                     /* VM fd numbers in the child */
	int vcpu_fd[KVM_CHILD_MAX_VCPUS];
	pid_t tid[KVM_CHILD_MAX_VCPUS];   /* thread that created vCPU i */
	unsigned n_vcpus;
	unsigned n_vms;
};

struct kvm_child_vcpu_arg {
	int vm_fd;
	unsigned id;
	bool name;
	int fd;
	pid_t tid;
	pthread_barrier_t *created;
};

static void *kvm_child_vcpu_thread(void *p)
{
	struct kvm_child_vcpu_arg *a = p;
	a->tid = (pid_t)syscall(SYS_gettid);
	if (a->name) {
		char name[16];
		snprintf(name, sizeof(name), "CPU %u/KVM", a->id);
		prctl(PR_SET_NAME, name);
	}
	a->fd = ioctl(a->vm_fd, KVM_CREATE_VCPU, (unsigned long)a->id);
	pthread_barrier_wait(a->created);
	for (;;)
		pause();
	return NULL;
}

static bool kvm_child_available(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/*
 * Starts a child holding n_vms VMs (1 or 2) and n_vcpus vCPUs of the first,
 * each created by its own thread (named "CPU i/KVM" when name_threads, as
 * QEMU does). Returns 0 or -errno. The child lives until kvm_child_stop.
 */
static int kvm_child_start(struct kvm_child *c, unsigned n_vms, unsigned n_vcpus, bool name_threads)
{
	int pfd[2];
	memset(c, 0, sizeof(*c));
	if (n_vcpus > KVM_CHILD_MAX_VCPUS || n_vms < 1 || n_vms > 2 || pipe(pfd) < 0)
		return -EINVAL;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		close(pfd[0]);
		struct kvm_child rep = { .n_vcpus = n_vcpus, .n_vms = n_vms };
		rep.dev_fd = open("/dev/kvm", O_RDWR);
		for (unsigned v = 0; v < n_vms; v++)
			rep.vm_fd[v] = rep.dev_fd < 0 ? -1 : ioctl(rep.dev_fd, KVM_CREATE_VM, 0);
		static struct kvm_child_vcpu_arg args[KVM_CHILD_MAX_VCPUS];
		static pthread_barrier_t created;
		pthread_barrier_init(&created, NULL, n_vcpus + 1);
		for (unsigned i = 0; i < n_vcpus; i++) {
			pthread_t th;
			args[i] = (struct kvm_child_vcpu_arg){ .vm_fd = rep.vm_fd[0], .id = i,
							       .name = name_threads, .created = &created };
			if (pthread_create(&th, NULL, kvm_child_vcpu_thread, &args[i]) != 0)
				_exit(3);
		}
		pthread_barrier_wait(&created);
		for (unsigned i = 0; i < n_vcpus; i++) {
			rep.vcpu_fd[i] = args[i].fd;
			rep.tid[i] = args[i].tid;
		}
		if (write(pfd[1], &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			_exit(4);
		for (;;)
			pause();
	}
	close(pfd[1]);
	struct kvm_child rep;
	ssize_t n = read(pfd[0], &rep, sizeof(rep));
	close(pfd[0]);
	c->pid = pid;
	if (n != (ssize_t)sizeof(rep)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		c->pid = 0;
		return -EIO;
	}
	rep.pid = pid;
	*c = rep;
	if (c->dev_fd < 0 || c->vm_fd[0] < 0 || (n_vms > 1 && c->vm_fd[1] < 0))
		return -ENODEV;
	for (unsigned i = 0; i < n_vcpus; i++)
		if (c->vcpu_fd[i] < 0)
			return -ENODEV;
	return 0;
}

static void kvm_child_stop(struct kvm_child *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
}

#endif
