/* SPDX-License-Identifier: MIT */
#include "vpmud.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "broker/broker.h"
#include "broker/metrics.h"
#include "proto/cleanup.h"
#include "proto/config.h"
#include "doors/dbus_service.h"
#include "kvm/kvm_detect.h"
#include "kvm/kvm_port.h"
#include "doors/libvirt_glue.h"
#include "base/log.h"
#include "pmu/pmu.h"
#include "pmu/pmu_discover.h"
#include "pmu/pmu_model.h"
#include "doors/server.h"

struct vpmud {
	struct config cfg;
	char config_path[512];
	bool config_required;
	const struct vpmud_opts *opts;
	sd_event *event;
	struct pmu_desc *pmu;
	char pmu_note[1600];
	struct kvm_detect detect;
	char kvm_summary[512];
	char kvm_note[KVM_DETECT_WHY_MAX + 320];
	enum broker_flavour flavour;
	struct kvm_port *port;
	struct broker *broker;
	struct server *server;
	struct lvglue *lvglue;      /* NULL when libvirt_uri is empty */
	struct dbus_service *dbus;
	char last_status[512];
	struct log_target log;      /* stderr lines, or the journal's native protocol */
	/* The metrics file (docs/metrics.md): one timer serves both the
	 * coalesced write after changes and the periodic one. */
	sd_event_source *metrics_timer;
	uint64_t metrics_last_usec;     /* CLOCK_MONOTONIC of the last attempt */
	uint64_t metrics_cost_usec;     /* what it took */
	bool metrics_failing;           /* a failure was logged: quiet until a write succeeds */
};

/* A burst of changes (a libvirt reconcile, a restore) is one write. */
#define METRICS_COALESCE_USEC (100 * 1000)
/* Rendering walks every vCPU of every VM: on a host with thousands of
 * large VMs a write takes long, and writes after changes are spaced so
 * that they take at most a tenth of the loop's time. */
#define METRICS_MAX_SHARE 10

static void notify_status(struct vpmud *d)
{
	char line[512], msg[600];
	broker_summary(d->broker, line, sizeof(line));
	if (!strcmp(line, d->last_status))
		return;
	snprintf(d->last_status, sizeof(d->last_status), "%s", line);
	snprintf(msg, sizeof(msg), "STATUS=%s", line);
	sd_notify(0, msg);
}

/* ------------------------------------------------------------ metrics file */

/* Writes text to path through a temporary file in the same directory and
 * a rename, so that node_exporter reads the old file or the new one, never
 * a part. The directory is created (0755, the last level only) if
 * missing. Returns 0 or a negative errno with what failed in step. */
static int metrics_put_file(const char *path, const char *text, size_t len, const char **step)
{
	_cleanup_free_ char *dir_copy = strdup(path), *base_copy = strdup(path);
	if (!dir_copy || !base_copy)
		return -ENOMEM;
	const char *dir = dirname(dir_copy), *base = basename(base_copy);
	*step = "creating its directory";
	if (mkdir(dir, 0755) == 0) {
		/* vpmud's umask (0077 under systemd) would keep the collector out */
		if (chmod(dir, 0755) < 0)
			return -errno;
	} else if (errno != EEXIST) {
		return -errno;
	}
	*step = "opening its directory";
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	/* Not ending in .prom: the collector reads only *.prom files. One
	 * name per process: two daemons may share a file, never a temp file. */
	char tmp[PATH_MAX];
	if ((size_t)snprintf(tmp, sizeof(tmp), ".%s.%d.tmp", base, (int)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	*step = "creating its temporary file";
	(void)unlinkat(dfd, tmp, 0); /* left by a process of this pid that died mid-write */
	_cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	int r = 0;
	*step = "writing its temporary file";
	for (size_t off = 0; off < len && r == 0;) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = -errno;
	if (r == 0 && close(TAKE_FD(fd)) < 0)
		r = -errno;
	if (r == 0) {
		*step = "renaming its temporary file over it";
		if (renameat(dfd, tmp, dfd, base) < 0)
			r = -errno;
	}
	if (r < 0)
		(void)unlinkat(dfd, tmp, 0);
	return r;
}

static void metrics_write(struct vpmud *d)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	const char *step = "rendering it";
	int r = metrics_render(d->broker, NULL, &text, &len);
	if (r == 0)
		r = metrics_put_file(d->cfg.metrics_file, text, len, &step);
	if (r < 0 && !d->metrics_failing)
		log_warn("metrics: %s: %s failed: %s; retried after each change and every %u s, logged again after a "
			 "write succeeds",
			 d->cfg.metrics_file, step, strerror(-r), d->cfg.metrics_interval);
	else if (r == 0 && d->metrics_failing)
		log_notice("metrics: %s written again", d->cfg.metrics_file);
	d->metrics_failing = r < 0;
}

/* Arms the timer for usec (CLOCK_MONOTONIC) unless it fires earlier already. */
static void metrics_schedule(struct vpmud *d, uint64_t usec)
{
	int enabled = SD_EVENT_OFF;
	uint64_t at = 0;
	if (!d->metrics_timer)
		return;
	if (sd_event_source_get_enabled(d->metrics_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF &&
	    sd_event_source_get_time(d->metrics_timer, &at) >= 0 && at <= usec)
		return;
	sd_event_source_set_time(d->metrics_timer, usec);
	sd_event_source_set_enabled(d->metrics_timer, SD_EVENT_ONESHOT);
}

static uint64_t mono_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int on_metrics_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct vpmud *d = userdata;
	(void)s;
	(void)usec;
	uint64_t start = mono_usec();
	d->metrics_last_usec = start;
	metrics_write(d);
	d->metrics_cost_usec = mono_usec() - start;
	/* Read at each write: a reload may change the interval. */
	if (d->cfg.metrics_interval)
		metrics_schedule(d, start + (uint64_t)d->cfg.metrics_interval * 1000000);
	return 0;
}

/* After a change: soon, but at most once per METRICS_COALESCE_USEC. */
static void metrics_changed(struct vpmud *d)
{
	uint64_t now = 0;
	if (!d->metrics_timer || sd_event_now(d->event, CLOCK_MONOTONIC, &now) < 0)
		return;
	uint64_t gap = d->metrics_cost_usec * METRICS_MAX_SHARE;
	if (gap < METRICS_COALESCE_USEC)
		gap = METRICS_COALESCE_USEC;
	uint64_t earliest = d->metrics_last_usec ? d->metrics_last_usec + gap : now;
	metrics_schedule(d, earliest > now ? earliest : now);
}

static int metrics_start(struct vpmud *d)
{
	if (!d->cfg.metrics_file[0]) {
		log_info("metrics: no metrics file (metrics_file = none)");
		return 0;
	}
	int r = sd_event_add_time(d->event, &d->metrics_timer, CLOCK_MONOTONIC, 0, 0, on_metrics_timer, d);
	if (r < 0) {
		log_err("metrics: timer: %s", strerror(-r));
		return r;
	}
	log_info("metrics: writing %s after each change and every %u s", d->cfg.metrics_file, d->cfg.metrics_interval);
	return 0;
}

static void on_counters(void *userdata)
{
	metrics_changed(userdata);
}

static void on_plan(const struct broker_event *event, void *userdata)
{
	(void)event;
	notify_status(userdata);
	metrics_changed(userdata);
}

static int apply_overrides(struct config *c, const struct vpmud_opts *o, char *err, size_t errlen)
{
	const struct { const char *key, *value; } kv[] = {
		{ "socket", o->socket },       { "state_dir", o->state_dir }, { "pmu", o->pmu },
		{ "kvm", o->kvm },             { "libvirt_uri", o->libvirt_uri },
		{ "dbus", o->dbus },           { "kvm_model_reserve", o->kvm_reserve },
	};
	for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
		char sub[384];
		if (!kv[i].value)
			continue;
		if (config_set(c, kv[i].key, kv[i].value, sub, sizeof(sub)) < 0) {
			snprintf(err, errlen, "--%s: %s", kv[i].key, sub);
			return -EINVAL;
		}
	}
	/* Command-line names use dashes; the config keys underscores. */
	return 0;
}

/* Descriptors vpmud keeps besides one per client: standard streams, the
 * loop (epoll, signal and timer fds), the listening socket, the state
 * directory and its lock, the bus and libvirt connections, a few sessions
 * and a state file being written. Bound VMs' descriptors come on top. */
#define VPMUD_OWN_FDS 32

/*
 * max_clients must fit in the open-files limit (already raised to the hard
 * one): past it, accepting fails with EMFILE while the configuration
 * promises room, and the admin reservation cannot be honoured.
 */
static int check_fd_limit(const struct config *c, char *err, size_t errlen)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	if ((rlim_t)c->max_clients + VPMUD_OWN_FDS <= rl.rlim_cur)
		return 0;
	snprintf(err, errlen,
		 "max_clients %u does not fit in the open files limit %llu: vpmud keeps %u descriptors for itself "
		 "besides one per client, so at most %llu clients fit; lower max_clients or raise the limit "
		 "(LimitNOFILE=)",
		 c->max_clients, (unsigned long long)rl.rlim_cur, VPMUD_OWN_FDS,
		 rl.rlim_cur > VPMUD_OWN_FDS ? (unsigned long long)(rl.rlim_cur - VPMUD_OWN_FDS) : 0ull);
	return -EINVAL;
}

static int load_config(struct vpmud *d, struct config *out, char *err, size_t errlen)
{
	config_defaults(out);
	int r = config_load_file(d->config_path, d->config_required, out, err, errlen);
	if (r < 0)
		return r;
	r = apply_overrides(out, d->opts, err, errlen);
	if (r < 0)
		return r;
	/* Unless named, the metrics file lives beside the socket
	 * (metrics/vpmu.prom): a second vpmud (a test, a demo) on its own
	 * socket never writes over the host's file. */
	const char *slash = strrchr(out->socket, '/');
	if (!out->metrics_file_set && slash && strcmp(out->socket, CONFIG_DEFAULT_SOCKET) &&
	    snprintf(out->metrics_file, sizeof(out->metrics_file), "%.*s/metrics/vpmu.prom",
		     (int)(slash - out->socket), out->socket) >= (int)sizeof(out->metrics_file))
		out->metrics_file[0] = '\0';
	r = config_check(out, err, errlen);
	if (r < 0)
		return r;
	return check_fd_limit(out, err, errlen);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct vpmud *d = userdata;
	struct config next;
	char err[512], applied[256], ignored[256];
	(void)s;
	(void)si;
	sd_notify(0, "RELOADING=1");
	if (load_config(d, &next, err, sizeof(err)) < 0) {
		log_err("config reload refused, settings unchanged: %s", err);
	} else {
		config_apply_reload(&d->cfg, &next, applied, sizeof(applied), ignored, sizeof(ignored));
		metrics_changed(d); /* the new interval counts from this write */
		log_event(LOG_NOTICE, VPMU_MSG_CONFIG_RELOADED, NULL,
			  "config reloaded from %s: applied %s; needs restart to change: %s", d->config_path,
			  applied[0] ? applied : "nothing (no change)", ignored[0] ? ignored : "nothing");
	}
	sd_notify(0, "READY=1");
	return 0;
}

static int on_term(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
	struct vpmud *d = userdata;
	log_notice("signal %u: stopping", si->ssi_signo);
	sd_notify(0, "STOPPING=1");
	sd_event_exit(d->event, 0);
	(void)s;
	return 0;
}

/* The PMU the daemon manages: the host's, else the fallback model. */
static int choose_pmu(struct vpmud *d)
{
	char msg[1024];
	int r;
	d->pmu = calloc(1, sizeof(*d->pmu));
	if (!d->pmu)
		return -ENOMEM;
	if (strcmp(d->cfg.pmu, "auto")) {
		r = pmu_model_load(d->cfg.pmu, d->pmu, msg, sizeof(msg));
		if (r < 0) {
			log_err("pmu: %s", msg[0] ? msg : strerror(-r));
			return r;
		}
		log_notice("pmu: %s, a model (simulated): nothing is counted on its counters", d->pmu->model);
		snprintf(d->pmu_note, sizeof(d->pmu_note), "model chosen with pmu=%s", d->cfg.pmu);
		return 0;
	}
	struct pmu_discover_opts o = {
		.sysfs_root = d->opts->sysfs_root ? d->opts->sysfs_root : "/",
		.procfs_root = d->opts->procfs_root ? d->opts->procfs_root : "/",
		.use_cpuid = !d->opts->sysfs_root,
	};
	r = pmu_discover_host(&o, d->pmu, msg, sizeof(msg));
	if (r < 0) {
		log_err("pmu: discovery failed: %s", msg[0] ? msg : strerror(-r));
		return r;
	}
	if (d->pmu->source == PMU_SOURCE_HOST) {
		log_notice("pmu: host PMU %s: version %u, %u general x %u bits, fixed 0x%x%s%s",
			   d->pmu->pmu_name, d->pmu->version, d->pmu->num_gp, d->pmu->gp_width,
			   d->pmu->fixed_mask, msg[0] ? "; " : "", msg);
		return 0;
	}
	snprintf(d->pmu_note, sizeof(d->pmu_note), "this host exposes no PMU (%s); using built-in model %s",
		 msg, PMU_FALLBACK_MODEL);
	log_warn("pmu: %s: everything shown for it is simulated", d->pmu_note);
	r = pmu_model_load(PMU_FALLBACK_MODEL, d->pmu, msg, sizeof(msg));
	if (r < 0)
		log_err("pmu: %s", msg);
	return r;
}

/*
 * The flavour a stock kernel gives guests, from the detection. When
 * /dev/kvm could not be read, a module parameter may still say; without
 * KVM at all there are no guests. Otherwise the kernel's default,
 * perf-based, is assumed and said: it keeps room for guests, where
 * assuming none would let host events starve them unseen.
 */
static enum broker_flavour stock_flavour(const struct kvm_detect *det, char *why, size_t whylen)
{
	switch (det->flavour) {
	case KVM_VPMU_FLAVOUR_PERF: return BROKER_FLAVOUR_PERF;
	case KVM_VPMU_FLAVOUR_MEDIATED: return BROKER_FLAVOUR_MEDIATED;
	case KVM_VPMU_FLAVOUR_NONE: return BROKER_FLAVOUR_NONE;
	default: break;
	}
	if (det->mediated_param)
		return BROKER_FLAVOUR_MEDIATED;
	if (!det->dev_ok && det->dev_errno == ENOENT) {
		snprintf(why, whylen, "no /dev/kvm: no KVM guests on this host");
		return BROKER_FLAVOUR_NONE;
	}
	snprintf(why, whylen, "flavour unknown (%s): assuming perf-based, KVM's default", det->why);
	return BROKER_FLAVOUR_PERF;
}

static int choose_kvm(struct vpmud *d)
{
	char why[512], assumed[KVM_DETECT_WHY_MAX + 64] = "";
	struct kvm_detect_opts dopts = {0};
	kvm_detect_run(&dopts, &d->detect);
	snprintf(d->kvm_summary, sizeof(d->kvm_summary), "vPMU flavour %s: %s",
		 kvm_detect_flavour_name(d->detect.flavour), d->detect.why);
	log_info("kvm: %s", d->kvm_summary);

	struct kvm_port_opts po = { .n_cpus = pmu_cpu_span(d->pmu), .num_gp = d->pmu->num_gp,
				    .fixed_mask = d->pmu->fixed_mask,
				    .caller = { .cap_sys_admin = geteuid() == 0 } };
	enum kvm_backend want;
	if (kvm_port_backend_parse(d->cfg.kvm, &want) < 0) {
		log_err("kvm: unknown backend %s", d->cfg.kvm);
		return -EINVAL;
	}
	/*
	 * auto: the extension when the kernel has it; otherwise advisory,
	 * reasoning about the flavour this kernel gives guests (the port
	 * decides from KVM_CAP_VPMU_ROUTES and perf's caps/guest_reserve).
	 * model keeps the model of the extension, for demos and tests,
	 * labelled simulated; its perf half takes what --kvm-reserve says.
	 */
	po.backend = want;
	if (want == KVM_BACKEND_MODEL)
		po.model_reserve_caps = !strcmp(d->cfg.kvm_model_reserve, "uniform")
						? VPMU_RESERVE_CAP_UNIFORM
						: VPMU_RESERVE_CAP_UNIFORM | VPMU_RESERVE_CAP_PER_CPU;
	int r = kvm_port_open(&po, &d->port, why, sizeof(why));
	if (r < 0) {
		log_err("kvm: backend %s: %s", kvm_port_backend_name(po.backend), why);
		return r;
	}
	enum kvm_backend got = kvm_port_backend(d->port);
	d->flavour = got == KVM_BACKEND_ADVISORY ? stock_flavour(&d->detect, assumed, sizeof(assumed))
						 : BROKER_FLAVOUR_EXTENSION;
	if (got == KVM_BACKEND_ADVISORY)
		snprintf(d->kvm_note, sizeof(d->kvm_note), "%s: advisory, for this kernel's vPMU flavour %s%s%s%s",
			 want == KVM_BACKEND_AUTO ? "auto: no vpmu extension in this kernel (KVM_CAP_VPMU_ROUTES or "
						    "perf's caps/guest_reserve absent)"
						  : "advisory requested",
			 broker_flavour_name(d->flavour), assumed[0] ? " (" : "", assumed, assumed[0] ? ")" : "");
	if (got == KVM_BACKEND_MODEL)
		log_warn("kvm: model backend: routes go to an in-process model of the vpmu extension (simulated), not to "
			 "KVM; its reservation is %s",
			 kvm_port_reserve_caps(d->port) & VPMU_RESERVE_CAP_PER_CPU ? "per CPU" : "uniform (one mask for every CPU)");
	else if (got == KVM_BACKEND_ADVISORY)
		log_warn("kvm: %s; guest routes are not enforced", d->kvm_note);
	else
		log_notice("kvm: ioctl backend: routes are enforced by the kernel");
	return 0;
}

/* What this host's flavour means, and what stops guests here, once at
 * start (status says the same). */
static void log_flavour(const struct broker *b)
{
	struct broker_status st;
	broker_status(b, &st);
	log_notice("kvm: vPMU flavour %s, routes %s: %s", st.flavour, st.routes, st.flavour_effect);
	if (!strcmp(st.flavour, "extension"))
		log_notice("kvm: the guest reservation is planned %s%s", st.reservation,
			   !strcmp(st.reservation, "uniform") ? " (one mask for every CPU)" : "");
	for (size_t i = 0; st.warnings[i]; i++)
		log_warn("kvm: %s", st.warnings[i]);
}

static int ensure_dir(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void vpmud_free(struct vpmud *d)
{
	d->metrics_timer = sd_event_source_unref(d->metrics_timer);
	/* before the broker: the glue calls it */
	libvirt_glue_free(d->lvglue);
	dbus_service_free(d->dbus);
	if (d->server)
		server_free(d->server);
	d->broker = broker_free(d->broker);
	if (d->port)
		kvm_port_close(d->port);
	free(d->pmu);
	sd_event_unref(d->event);
}

/* Each bound VM holds pidfds and each client a socket: the soft limit
 * (1024 by default) runs out long before the hard one, and running out
 * turns into refusals that name the wrong cause. The soft limit goes up to
 * the hard one; select() is not used anywhere, so large fds are fine. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_warn("open files: soft limit %llu, cannot raise it to %llu: %s", (unsigned long long)was,
			 (unsigned long long)rl.rlim_max, strerror(errno));
	else
		log_info("open files: soft limit raised from %llu to %llu", (unsigned long long)was,
			 (unsigned long long)rl.rlim_max);
}

int vpmud_run(const struct vpmud_opts *opts)
{
	struct vpmud d = { .opts = opts, .log = log_target_detect() };
	char err[768];
	int r, rc = EXIT_FAILURE;

	log_init(&d.log);
	/* Large transient buffers (a plan of thousands of VMs rendered for one
	 * client) go back to the kernel when freed: a fixed mmap threshold
	 * stops glibc from raising it after the first such buffer, which would
	 * keep every later one in the heap for good. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	raise_fd_limit();
	snprintf(d.config_path, sizeof(d.config_path), "%s", opts->config_path ? opts->config_path : CONFIG_DEFAULT_PATH);
	d.config_required = opts->config_path != NULL;
	if (load_config(&d, &d.cfg, err, sizeof(err)) < 0) {
		log_err("refusing to start: %s", err);
		return 2;
	}
	/* A kernel says what its reservation takes; only the model is told. */
	if (d.cfg.kvm_model_reserve[0] && strcmp(d.cfg.kvm, "model")) {
		log_err("refusing to start: %s %s: only with the model backend (kvm = model, not %s), whose "
			"model it describes; a kernel says what it takes in perf's caps/guest_reserve",
			opts->kvm_reserve ? "--kvm-reserve" : "kvm_model_reserve =", d.cfg.kvm_model_reserve, d.cfg.kvm);
		return 2;
	}
	r = ensure_dir(d.cfg.state_dir);
	if (r < 0) {
		log_err("refusing to start: state directory %s: %s", d.cfg.state_dir, strerror(-r));
		return EXIT_FAILURE;
	}
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((r = sd_event_default(&d.event)) < 0) {
		log_err("sd_event_default: %s", strerror(-r));
		return EXIT_FAILURE;
	}
	if (choose_pmu(&d) < 0 || choose_kvm(&d) < 0)
		goto out;

	struct broker_opts bo = { .event = d.event, .cfg = &d.cfg, .pmu = d.pmu,
				  .pmu_note = d.pmu_note, .port = d.port,
				  .kvm_host_summary = d.kvm_summary, .kvm_note = d.kvm_note,
				  .state_dir = d.cfg.state_dir,
				  .sysfs_root = opts->sysfs_root, .flavour = d.flavour,
				  .nmi_watchdog_perf = d.detect.nmi_watchdog_perf,
				  .host_mediated = d.detect.flavour == KVM_VPMU_FLAVOUR_MEDIATED };
	struct proto_error perr = {0};
	if ((r = broker_new(&bo, &d.broker, &perr)) < 0) {
		log_err("broker: %s", perr.message);
		goto out;
	}
	/* Serving with an empty state over one we could not read would
	 * overwrite every lease at the first change. */
	if ((r = broker_restore(d.broker)) < 0) {
		log_err("refusing to start: the state in %s could not be restored or saved: %s",
			d.cfg.state_dir, strerror(-r));
		goto out;
	}
	broker_set_change_hook(d.broker, on_plan, &d);
	broker_set_counters_hook(d.broker, on_counters, &d);
	log_flavour(d.broker);

	int n = sd_listen_fds(1);
	int listen_fd = -1;
	if (n > 1) {
		log_err("socket activation passed %d sockets; vpmud takes one", n);
		goto out;
	}
	if (n == 1)
		listen_fd = SD_LISTEN_FDS_START;
	unsigned max_cpus = pmu_cpu_span(d.pmu);
	struct server_opts so = { .event = d.event, .broker = d.broker, .cfg = &d.cfg,
				  .listen_fd = listen_fd, .max_cpus = max_cpus };
	if ((r = server_new(&so, &d.server, err, sizeof(err))) < 0) {
		log_err("refusing to start: %s", err);
		goto out;
	}
	/* ---- libvirt door (daemon/libvirt_glue.h) ---------------------------
	 * Follows libvirt_uri's domains into leases. A libvirt that is absent
	 * or down is not an error: the glue retries with backoff from the loop.
	 * libvirt_uri needs a restart to change, so this runs once. */
	if (d.cfg.libvirt_uri[0]) {
		struct libvirt_glue_opts lo = { .event = d.event, .broker = d.broker, .cfg = &d.cfg,
					  .uri = d.cfg.libvirt_uri, .pid_dir = NULL,
					  .host_cpus = max_cpus };
		if ((r = libvirt_glue_new(&lo, &d.lvglue)) < 0) {
			log_err("refusing to start: libvirt door: %s", strerror(-r));
			goto out;
		}
	}
	/* ---- end libvirt door ------------------------------------------------ */
	/* ---- D-Bus door (dbus_service.c) ---------------------------------- */
	/* The system bus is optional (containers, early boot): without it
	 * vpmud still serves its socket. A bus named explicitly must work. */
	if (strcmp(d.cfg.dbus, "none")) {
		bool system_bus = !strcmp(d.cfg.dbus, "system");
		r = dbus_service_new(d.event, d.broker, &d.cfg, system_bus ? NULL : d.cfg.dbus, max_cpus,
				     &d.dbus, err, sizeof(err));
		if (r < 0 && !system_bus) {
			log_err("refusing to start: D-Bus %s: %s", d.cfg.dbus, err);
			goto out;
		}
		if (r < 0)
			log_notice("dbus: no D-Bus API (%s); set dbus = none to silence this", err);
	}
	/* ---- end D-Bus door ------------------------------------------------ */
	if (metrics_start(&d) < 0)
		goto out;
	sd_event_add_signal(d.event, NULL, SIGTERM, on_term, &d);
	sd_event_add_signal(d.event, NULL, SIGINT, on_term, &d);
	sd_event_add_signal(d.event, NULL, SIGHUP, on_sighup, &d);

	char summary[512];
	broker_summary(d.broker, summary, sizeof(summary));
	log_event(LOG_NOTICE, VPMU_MSG_READY, NULL, "vpmud %s ready on %s%s: %s", VPMU_VERSION,
		   listen_fd >= 0 ? "an activated socket" : d.cfg.socket,
		   listen_fd >= 0 ? "" : "", summary);
	sd_notify(0, "READY=1");
	notify_status(&d);
	/* Sends WATCHDOG=1 at half of WatchdogSec when the unit sets it; after
	 * READY=1 so that the manager never sees a ping from a daemon that is
	 * not serving yet. */
	sd_event_set_watchdog(d.event, true);

	r = sd_event_loop(d.event);
	rc = r < 0 ? EXIT_FAILURE : 0;
	log_notice("vpmud stopped");
out:
	vpmud_free(&d);
	return rc;
}
