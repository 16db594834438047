/* SPDX-License-Identifier: MIT */
/*
 * vpmu's libvirt QEMU hook: install as /etc/libvirt/hooks/qemu.d/vpmu
 * (docs/libvirt.md). The decisions live in hook.c; this file only gathers
 * the process inputs (argv, stdin, config) and picks the transport.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "hook.h"

/*
 * The JSON socket protocol to vpmud is being written; until the client
 * side exists the hook has no way to reach the daemon, and says so. By
 * the fail-open rule every VM then starts without arbitration.
 */
static int no_admit(void *ctx, const struct dompol *req, uint64_t deadline, struct hook_admission *out)
{
	(void)ctx, (void)req, (void)deadline, (void)out;
	return -ENOSYS;
}

static int no_bind(void *ctx, const struct dompol *req, pid_t pid, uint64_t deadline)
{
	(void)ctx, (void)req, (void)pid, (void)deadline;
	return -ENOSYS;
}

static int no_release(void *ctx, const char *name, const char *uuid, uint64_t deadline)
{
	(void)ctx, (void)name, (void)uuid, (void)deadline;
	return -ENOSYS;
}

/* Reads all of stdin: libvirt writes the whole XML and a hook that stops
 * reading early can make that write fail. Over the limit, the rest is
 * drained and *len is 0 (for the filter operations, empty output means
 * "unchanged" to libvirt). */
static char *read_stdin(size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap), tmp[4096];
	bool over = false;
	if (!buf)
		return NULL;
	for (;;) {
		if (n == cap && !over) {
			if (cap >= DOMPOL_MAX_XML) {
				over = true;
			} else {
				char *nb = realloc(buf, cap * 2);
				if (!nb) {
					free(buf);
					return NULL;
				}
				buf = nb;
				cap *= 2;
			}
		}
		ssize_t r = over ? read(0, tmp, sizeof(tmp)) : read(0, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (!over)
			n += (size_t)r;
	}
	*len = over ? 0 : n;
	return buf;
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct hook_opts o = { 0 };
	char err[512];
	size_t len = 0;

	config_defaults(&cfg);
	if (config_load_file(CONFIG_DEFAULT_PATH, false, &cfg, err, sizeof(err)) < 0)
		fprintf(stderr, "vpmu-hook: %s; using built-in defaults\n", err);
	o.defaults.priority = cfg.default_priority;
	o.defaults.cls = cfg.default_class;
	/* A VM without vpmu metadata asks for no dedicated counters: its vPMU
	 * stays on perf multiplexing, as without vpmu. */
	o.defaults.gp = 0;
	o.defaults.fixed_mask = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	o.host_cpus = ncpu < 1 ? 1 : ncpu > DOMPOL_MAX_CPUS ? DOMPOL_MAX_CPUS : (unsigned)ncpu;

	char *xml = read_stdin(&len);
	const struct hook_transport t = { .admit = no_admit, .bind = no_bind, .release = no_release };
	int rc = hook_run(argc, argv, xml ? xml : "", xml ? len : 0, &o, &t, stdout, stderr);
	free(xml);
	if (fflush(stdout) != 0)
		fprintf(stderr, "vpmu-hook: cannot write stdout\n");
	return rc;
}
