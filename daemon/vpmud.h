/* SPDX-License-Identifier: MIT */
/*
 * vpmud: the daemon's life — settings, backends, broker, doors, the sd-event
 * loop, systemd notification and signals. All of the daemon's mutable state
 * hangs off one context struct, created and freed here.
 */
#ifndef VPMU_VPMUD_H
#define VPMU_VPMUD_H

#include <stdbool.h>

struct vpmud_opts {
	const char *config_path;    /* NULL: CONFIG_DEFAULT_PATH, may be absent */
	/* Command-line overrides of config keys (NULL: keep the file's). */
	const char *socket;
	const char *state_dir;
	const char *pmu;
	const char *kvm;
	/* "uniform" or "per-cpu": the reservation capabilities of the model
	 * backend's private model (NULL: per-cpu); refused with any other
	 * backend, whose kernel says what it takes. */
	const char *kvm_reserve;
	const char *libvirt_uri;
	const char *dbus;           /* system, none or a bus address */
	const char *sysfs_root;     /* testing */
	const char *procfs_root;    /* testing */
};

/* Runs until SIGTERM/SIGINT; returns the process exit code. */
int vpmud_run(const struct vpmud_opts *opts);

#endif
