/* SPDX-License-Identifier: MIT */
#include "hook.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/cleanup.h"
#include "proto/proto.h"

#define TAG "vpmu-hook"

uint64_t hook_now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int hook_read_pid(const char *path, pid_t *pid)
{
	/* "PID\n": 7 digits at most (pid_max <= 2^22); more is not a pid file */
	char buf[32];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	char *end;
	errno = 0;
	long v = strtol(buf, &end, 10);
	/* the kernel's pid_max ceiling is 2^22 */
	if (buf[0] < '1' || buf[0] > '9' || errno || v > (1l << 22) || (*end && strcmp(end, "\n")))
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

/* A domain name becomes a file name under pid_dir: nothing that could
 * leave that directory. libvirt forbids '/' in names too. */
static bool name_is_safe(const char *name)
{
	return *name && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static const char *errstr(int r)
{
	switch (-r) {
	case ECONNREFUSED:
	case ENOENT:
		return "vpmud is not running";
	case ETIMEDOUT:
		return "vpmud did not answer in time";
	case ENOSYS:
		return "this build of the hook has no transport to vpmud";
	case EREMOTEIO:
		return "vpmud reported an error (see above)";
	default:
		return strerror(-r);
	}
}

/* Every CPU some vCPU may run on, as text (malloc'd; NULL on ENOMEM):
 * where the counters are needed. */
static char *cpus_of(const struct dompol *p)
{
	struct cpulist all;

	cpulist_clear(&all);
	for (unsigned v = 0; v < p->n_vcpus; v++)
		for (int c = cpulist_next(&p->vcpu_cpus[v], -1); c >= 0; c = cpulist_next(&p->vcpu_cpus[v], c))
			cpulist_set(&all, (unsigned)c);
	return cpulist_to_text(&all);
}

static int parse(const char *name, const char *xml, size_t len, const struct hook_opts *o, struct dompol *p,
		 FILE *err)
{
	char msg[DOMAIN_POLICY_ERR_MAX];
	int r = domain_policy_parse(xml, len, &o->defaults, o->host_cpus, p, msg, sizeof(msg));
	if (r < 0)
		fprintf(err, TAG ": %s: %s\n", name, msg);
	else if (strcmp(p->name, name))
		/* libvirt passes the same name in both; trust argv for the pid file */
		fprintf(err, TAG ": %s: the XML names the domain \"%s\"\n", name, p->name);
	return r;
}

static int op_prepare(const char *name, const char *xml, size_t len, const struct hook_opts *o,
		      const struct hook_transport *t, uint64_t deadline, FILE *err)
{
	_cleanup_(domain_policy_clear) struct dompol p = { 0 };
	struct hook_admission adm = { 0 };

	if (parse(name, xml, len, o, &p, err) < 0) {
		if (p.guaranteed) {
			fprintf(err, TAG ": refusing to start %s: it asks for a guaranteed PMU share, "
				     "but its domain XML cannot be read for PMU arbitration (see above)\n", name);
			return 1;
		}
		fprintf(err, TAG ": starting %s without PMU arbitration\n", name);
		return 0;
	}
	/* <pmu state='off'/>: the guest has no vPMU, so there is nothing to
	 * admit (the daemon's libvirt follower would release such a lease). */
	if (p.pmu_off)
		return 0;
	int r = t->admit(t->ctx, &p, deadline, &adm);
	if (r < 0) {
		fprintf(err, TAG ": %s: %s; starting it without PMU arbitration\n", name, errstr(r));
		return 0;
	}
	if (adm.admitted)
		return 0;
	adm.reason[sizeof(adm.reason) - 1] = 0;
	if (!p.guaranteed) {
		/* only a guaranteed request may be refused; anything else is the
		 * daemon's mistake, not a reason to keep the VM down */
		fprintf(err, TAG ": %s: vpmud refused a %s request (%s); starting anyway\n", name, p.cls,
			adm.reason);
		return 0;
	}
	_cleanup_free_ char *cpus = cpus_of(&p);
	fprintf(err,
		TAG ": refusing to start %s: its guaranteed PMU request (%u general counters, fixed counters 0x%x, "
		    "on CPUs %s) cannot be met: %s\n",
		name, p.gp, p.fixed_mask, cpus ? cpus : "?", adm.reason[0] ? adm.reason : "no reason given");
	return 1;
}

static void op_bind(const char *name, const char *xml, size_t len, const struct hook_opts *o,
		    const struct hook_transport *t, uint64_t deadline, FILE *err)
{
	_cleanup_(domain_policy_clear) struct dompol p = { 0 };
	_cleanup_free_ char *path = NULL;
	pid_t pid;
	int r;

	if (parse(name, xml, len, o, &p, err) < 0 || p.pmu_off)
		return;
	path = alloc_printf("%s/%s.pid", o->pid_dir ? o->pid_dir : HOOK_DEFAULT_PID_DIR, name);
	if (!path) {
		fprintf(err, TAG ": %s: out of memory\n", name);
		return;
	}
	if ((r = hook_read_pid(path, &pid)) < 0) {
		fprintf(err, TAG ": %s: cannot read the QEMU pid from %s: %s\n", name, path,
			r == -EINVAL ? "not a pid" : strerror(-r));
		return;
	}
	if ((r = t->bind(t->ctx, &p, pid, deadline)) < 0)
		fprintf(err, TAG ": %s: cannot bind its PMU lease to pid %d: %s\n", name, (int)pid, errstr(r));
}

static void op_release(const char *name, const char *xml, size_t len, const struct hook_opts *o,
		       const struct hook_transport *t, uint64_t deadline, FILE *err)
{
	_cleanup_(domain_policy_clear) struct dompol p = { 0 };

	/* Release even when the XML is unreadable: the uuid is then unknown,
	 * the name is enough for the daemon to find the lease. */
	parse(name, xml, len, o, &p, err);
	/* no lease can carry a name the protocol refuses (parse said why) */
	if (proto_name_check("name", name, NULL) < 0)
		return;
	int r = t->release(t->ctx, name, p.uuid, deadline);
	if (r < 0)
		fprintf(err, TAG ": %s: cannot release its PMU lease: %s\n", name, errstr(r));
}

int hook_run(int argc, char *const argv[], const char *xml, size_t xml_len, const struct hook_opts *o,
	     const struct hook_transport *t, FILE *out, FILE *err)
{
	uint64_t deadline = hook_now_usec() + (o->budget_usec ? o->budget_usec : HOOK_DEFAULT_BUDGET_USEC);

	if (argc < 3) {
		fprintf(err, TAG ": usage: %s NAME OPERATION SUBOP [EXTRA] < domain.xml\n", argc ? argv[0] : "hook");
		return 0;
	}
	const char *name = argv[1], *op = argv[2];

	/* Filters first: libvirt replaces the XML with what we print, so this
	 * must happen whatever else is wrong. */
	if (!strcmp(op, "migrate") || !strcmp(op, "restore")) {
		if (xml_len && fwrite(xml, 1, xml_len, out) != xml_len)
			fprintf(err, TAG ": %s: cannot write the XML back\n", name);
		return 0;
	}
	if (!name_is_safe(name)) {
		fprintf(err, TAG ": invalid domain name \"%.64s\"\n", name);
		return 0;
	}
	if (!strcmp(op, "prepare"))
		return op_prepare(name, xml, xml_len, o, t, deadline, err);
	if (!strcmp(op, "started") || !strcmp(op, "reconnect"))
		op_bind(name, xml, xml_len, o, t, deadline, err);
	else if (!strcmp(op, "stopped") || !strcmp(op, "release"))
		op_release(name, xml, xml_len, o, t, deadline, err);
	return 0;
}
