/* SPDX-License-Identifier: MIT */
/*
 * vpmu-bench-proto: what vpmud's socket protocol costs, end to end, through
 * the client library (include/vpmu/client.h).
 *
 * Default mode:
 *  1. durable round trips: N vm.attach + vm.detach pairs on one connection,
 *     each answered only after vpmud wrote and fsynced its state; latency
 *     of each attach and each detach, p50/p99/max in microseconds;
 *  2. read-only requests per second (status, or plan with cpus "0"), on
 *     one connection and on C connections, one thread each; requests are
 *     sequential on each connection (send, wait for the answer, send the
 *     next: not pipelined), so C connections have up to C requests in
 *     flight.
 *
 * --leases N: what a change costs with N leases held (issue 11). vpmud
 * starts on an empty private state directory; N two-vCPU VMs are attached,
 * spread over the model's CPUs; then, in the same run:
 *  - attach and detach of one more VM (--samples pairs), each pair followed
 *    by one sample of the durable-write floor of the same state directory
 *    (write a file the size of one lease, fsync, rename, fsync the
 *    directory: what the daemon must do at least before it acknowledges);
 *  - vpmud's anonymous memory (smaps_rollup) idle, with N leases and after
 *    one full plan was served;
 *  - the client-side round trip of a full plan (floor: a status round trip);
 *  - a restart on the same state directory: SIGTERM, start, time until
 *    status answers with all N VMs (floor: the start on an empty state).
 * Each figure is printed as key=value beside its floor and issue 11's target.
 * vpmud runs with --dbus none, unless --dbus-bus: then the bench starts a
 * private dbus-daemon with the shipped policy (systemd/org.vpmu.Broker1.conf
 * under $VPMU_SOURCE_DIR, else under the parent of this executable's
 * folder) and vpmud serves its D-Bus door there, so that what the door adds
 * to each change is measured beside the same floor.
 *
 * By default it starts its own vpmud (--vpmud PATH, else $VPMU_BUILD_DIR/vpmud,
 * else the vpmud next to this executable) on the model PMU and model KVM,
 * with a temporary socket, state directory and empty config under --tmpdir
 * (default $TMPDIR or /tmp; the file system type is printed, since fsync on
 * tmpfs costs nothing). --socket PATH uses a running vpmud instead (attach
 * then needs root or the admin group; VM names are bench-PID-I); not with
 * --leases, which needs the daemon's state directory and process.
 *
 * Figures are printed, never judged. --json prints one object; --smoke runs
 * tiny sizes of both modes (CI).
 *
 * usage: vpmu-bench-proto [--smoke] [--json] [--socket PATH | --vpmud PATH]
 *        [--tmpdir DIR] [--ops N] [--requests N] [--connections C]
 *        [--method status|plan] [--leases N [--samples K] [--dbus-bus]]
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/cleanup.h"
#include "vpmu/client.h"

#define CLIENT_NAME "vpmu-bench-proto"
#define CALL_BUDGET_USEC (30 * 1000000ull)
/* How long a start (or a restart with thousands of leases) may take. */
#define START_BUDGET_NS (120 * 1000000000ull)
#define VCPUS_PER_VM 2
#define SMOKE_LEASES 20

/* Issue 11's targets, stated for these lease counts. */
#define TARGET_RATIO 1.5
#define TARGET_RATIO_LEASES 1000
#define TARGET_ANON_KIB 6144
#define TARGET_ANON_LEASES 1000
#define TARGET_PLAN_MS 20.0
#define TARGET_PLAN_LEASES 1000
#define TARGET_RESTART_MS 1000.0
#define TARGET_RESTART_LEASES 5000

struct opts {
	bool smoke, json;
	const char *socket;   /* existing daemon, or NULL */
	const char *vpmud;    /* daemon binary, or NULL: found */
	const char *tmpdir;
	const char *method;   /* "status" or "plan" */
	unsigned ops, requests, connections;
	unsigned leases;      /* 0: default mode */
	unsigned samples;     /* attach+detach pairs in --leases mode */
	bool dbus_bus;        /* --leases: vpmud serves D-Bus on a private bus */
};

struct daemon {
	pid_t pid;
	char *bin, *dir, *socket, *state, *conf, *log;
	pid_t bus_pid;        /* the private dbus-daemon, or 0 */
	char *bus_addr;       /* its address, or NULL: --dbus none */
	char fs[32];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of v[0..n-1] (sorted here), in microseconds. */
static double pct_us(uint64_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_u64);
	size_t k = (size_t)((p / 100.0) * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return (double)v[k - 1] / 1000.0;
}

/* A double printed with 'decimals' decimals in JSON, not as %.17g. */
static struct json_object *jdouble(double v, int decimals)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%.*f", decimals, v);
	return json_object_new_double_s(v, buf);
}

static void json_putp(struct json_object **j)
{
	json_object_put(*j);
}
#define _cleanup_json_ _cleanup_(json_putp)

static void client_closep(struct vpmu_client **c)
{
	vpmu_client_close(*c);
}
#define _cleanup_client_ _cleanup_(client_closep)

/* ---------------------------------------------------------------- daemon */

static int find_vpmud(const struct opts *o, char **out)
{
	const char *b = getenv("VPMU_BUILD_DIR");
	_cleanup_free_ char *self = NULL;
	char *path = NULL;

	if (o->vpmud) {
		if (access(o->vpmud, X_OK))
			return -errno;
		*out = strdup(o->vpmud);
		return *out ? 0 : -ENOMEM;
	}
	if (b && *b) {
		if (asprintf(&path, "%s/vpmud", b) < 0)
			return -ENOMEM;
		if (!access(path, X_OK)) {
			*out = path;
			return 0;
		}
		free(path);
	}
	self = realpath("/proc/self/exe", NULL);
	char *slash = self ? strrchr(self, '/') : NULL;
	if (!slash)
		return -ENOENT;
	*slash = 0;
	if (asprintf(&path, "%s/vpmud", self) < 0)
		return -ENOMEM;
	if (access(path, X_OK)) {
		free(path);
		return -ENOENT;
	}
	*out = path;
	return 0;
}

static const char *fs_name(const char *dir, char *buf, size_t len)
{
	struct statfs s;

	if (statfs(dir, &s) < 0)
		snprintf(buf, len, "unknown");
	else if (s.f_type == TMPFS_MAGIC)
		snprintf(buf, len, "tmpfs");
	else if (s.f_type == EXT4_SUPER_MAGIC)
		snprintf(buf, len, "ext4");
	else if (s.f_type == XFS_SUPER_MAGIC)
		snprintf(buf, len, "xfs");
	else if (s.f_type == BTRFS_SUPER_MAGIC)
		snprintf(buf, len, "btrfs");
	else if (s.f_type == OVERLAYFS_SUPER_MAGIC)
		snprintf(buf, len, "overlayfs");
	else
		snprintf(buf, len, "0x%lx", (unsigned long)s.f_type);
	return buf;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* SIGTERM, then SIGKILL after 30 s. Returns how long the exit took. */
static uint64_t daemon_stop(struct daemon *d)
{
	uint64_t t0 = now_ns();
	int st;

	if (d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	for (int i = 0; i < 30000; i++) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return now_ns() - t0;
		}
		usleep(1000);
	}
	fprintf(stderr, "bench-proto: vpmud ignored SIGTERM for 30 s: killed\n");
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &st, 0);
	d->pid = 0;
	return now_ns() - t0;
}

static void daemon_fini(struct daemon *d, bool keep)
{
	daemon_stop(d);
	if (d->bus_pid > 0) {
		kill(d->bus_pid, SIGTERM);
		waitpid(d->bus_pid, NULL, 0);
	}
	free(d->bus_addr);
	if (d->dir && !keep)
		nftw(d->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	else if (d->dir)
		fprintf(stderr, "bench-proto: daemon log kept in %s\n", d->log);
	free(d->bin);
	free(d->dir);
	free(d->socket);
	free(d->state);
	free(d->conf);
	free(d->log);
	*d = (struct daemon){ 0 };
}

/* For scope exits on failure: the log stays for a look (daemon_fini(d,
 * false) before a successful exit leaves nothing to keep). */
static void daemon_fini_keep(struct daemon *d)
{
	daemon_fini(d, true);
}

static int write_all(int fd, const char *buf, size_t len);

/* The shipped bus policy for the broker's name, from the source tree. */
static int bus_policy(char **out)
{
	const char *src = getenv("VPMU_SOURCE_DIR");
	_cleanup_free_ char *self = realpath("/proc/self/exe", NULL);
	char *slash = self ? strrchr(self, '/') : NULL;
	if (slash)
		*slash = '\0';
	if (src && *src) {
		if (asprintf(out, "%s/systemd/org.vpmu.Broker1.conf", src) < 0)
			return -ENOMEM;
	} else if (!self || asprintf(out, "%s/../systemd/org.vpmu.Broker1.conf", self) < 0)
		return -ENOMEM;
	if (access(*out, R_OK) == 0)
		return 0;
	fprintf(stderr, "bench-proto: --dbus-bus: no bus policy at %s (set VPMU_SOURCE_DIR to the source tree)\n",
		*out);
	free(*out);
	*out = NULL;
	return -ENOENT;
}

/*
 * A private system-type bus as tests/it_dbus.py starts it: the defaults of
 * a system bus (nobody owns names or calls methods unless a policy file
 * says so) and the shipped policy. Returns once its socket exists.
 */
static int bus_start(struct daemon *d)
{
	_cleanup_free_ char *policy = NULL, *conf = NULL, *sock = NULL, *text = NULL;
	int r = bus_policy(&policy);
	if (r < 0)
		return r;
	if (asprintf(&conf, "%s/bus.conf", d->dir) < 0 || asprintf(&sock, "%s/bus.sock", d->dir) < 0 ||
	    asprintf(&d->bus_addr, "unix:path=%s", sock) < 0)
		return -ENOMEM;
	if (asprintf(&text,
		     "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
		     " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		     "<busconfig>\n  <type>system</type>\n  <listen>unix:path=%s</listen>\n  <auth>EXTERNAL</auth>\n"
		     "  <policy context=\"default\">\n    <allow user=\"*\"/>\n    <deny own=\"*\"/>\n"
		     "    <deny send_type=\"method_call\"/>\n    <allow send_type=\"signal\"/>\n"
		     "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
		     "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
		     "    <allow receive_type=\"method_call\"/>\n    <allow receive_type=\"method_return\"/>\n"
		     "    <allow receive_type=\"error\"/>\n    <allow receive_type=\"signal\"/>\n"
		     "    <allow send_destination=\"org.freedesktop.DBus\"/>\n  </policy>\n"
		     "  <include>%s</include>\n</busconfig>\n",
		     sock, policy) < 0)
		return -ENOMEM;
	{
		_cleanup_close_ int fd = open(conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return -errno;
		if ((r = write_all(fd, text, strlen(text))) < 0)
			return r;
	}
	_cleanup_free_ char *conf_arg = NULL, *log = NULL;
	if (asprintf(&conf_arg, "--config-file=%s", conf) < 0 || asprintf(&log, "%s/dbus-daemon.log", d->dir) < 0)
		return -ENOMEM;
	d->bus_pid = fork();
	if (d->bus_pid < 0)
		return -errno;
	if (d->bus_pid == 0) {
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (lfd >= 0) {
			dup2(lfd, 1);
			dup2(lfd, 2);
			close(lfd);
		}
		execlp("dbus-daemon", "dbus-daemon", conf_arg, "--nofork", "--nopidfile", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 5000; i++) {
		if (access(sock, F_OK) == 0)
			return 0;
		if (waitpid(d->bus_pid, NULL, WNOHANG) == d->bus_pid) {
			d->bus_pid = 0;
			break;
		}
		usleep(1000);
	}
	fprintf(stderr, "bench-proto: --dbus-bus: dbus-daemon did not start; see %s\n", log);
	return -ECHILD;
}

/* The private directory, its empty config and the paths; nothing runs yet. */
static int daemon_prepare(const struct opts *o, struct daemon *d)
{
	_cleanup_free_ char *dir = NULL;
	int r = find_vpmud(o, &d->bin);

	if (r < 0) {
		fprintf(stderr, "bench-proto: no vpmud (give --vpmud PATH or set VPMU_BUILD_DIR)\n");
		return r;
	}
	if (asprintf(&dir, "%s/vpmu-bench-proto.XXXXXX", o->tmpdir) < 0)
		return -ENOMEM;
	if (!mkdtemp(dir)) {
		r = -errno;
		fprintf(stderr, "bench-proto: mkdtemp %s: %s\n", dir, strerror(errno));
		return r;
	}
	d->dir = TAKE_PTR(dir);
	fs_name(d->dir, d->fs, sizeof(d->fs));
	if (asprintf(&d->conf, "%s/vpmud.conf", d->dir) < 0 || asprintf(&d->state, "%s/state", d->dir) < 0 ||
	    asprintf(&d->log, "%s/vpmud.log", d->dir) < 0 || asprintf(&d->socket, "%s/vpmud.sock", d->dir) < 0)
		return -ENOMEM;
	if (strlen(d->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		fprintf(stderr, "bench-proto: %s: too long for a Unix socket (use --tmpdir)\n", d->socket);
		return -ENAMETOOLONG;
	}
	_cleanup_close_ int fd = open(d->conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	return o->dbus_bus ? bus_start(d) : 0;
}

static int daemon_spawn(struct daemon *d)
{
	d->pid = fork();
	if (d->pid < 0)
		return -errno;
	if (d->pid == 0) {
		int lfd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (lfd >= 0) {
			dup2(lfd, 2);
			close(lfd);
		}
		execl(d->bin, d->bin, "--pmu", "icelake-8360y", "--kvm", "model", "--dbus",
		      d->bus_addr ? d->bus_addr : "none",
		      "--libvirt-uri", "none", "--socket", d->socket, "--state-dir", d->state, "--config", d->conf,
		      (char *)NULL);
		_exit(127);
	}
	return 0;
}

/* How many VMs vpmud reports, or a negative errno. */
static long status_vms(struct vpmu_client *c)
{
	struct vpmu_client_error e;
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *v;

	if (vpmu_client_call(c, "status", NULL, vpmu_client_now_usec() + CALL_BUDGET_USEC, &st, &e) < 0)
		return -EPROTO;
	if (!json_object_object_get_ex(st, "vms", &v))
		return -EPROTO;
	return (long)json_object_get_int64(v);
}

/*
 * Waits until vpmud answers status with want_vms VMs (want_vms < 0: any
 * answer). Polls every millisecond: the figure is a start time, and vpmud
 * binds its socket only once the state is restored.
 */
static int daemon_wait_up(struct daemon *d, long want_vms)
{
	uint64_t deadline = now_ns() + START_BUDGET_NS;
	long seen = -1;

	while (now_ns() < deadline) {
		_cleanup_client_ struct vpmu_client *c = NULL;
		struct vpmu_client_error e;
		int st;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			fprintf(stderr, "bench-proto: %s exited at start; see %s\n", d->bin, d->log);
			d->pid = 0;
			return -ECHILD;
		}
		if (vpmu_client_connect(d->socket, CLIENT_NAME, vpmu_client_now_usec() + 1000000, &c, &e) == 0) {
			if (want_vms < 0)
				return 0;
			seen = status_vms(c);
			if (seen == want_vms)
				return 0;
		}
		usleep(1000);
	}
	fprintf(stderr, "bench-proto: vpmud did not answer with %ld VMs in %llu s (last seen %ld); see %s\n",
		want_vms, START_BUDGET_NS / 1000000000ull, seen, d->log);
	return -ETIMEDOUT;
}

static int daemon_start(const struct opts *o, struct daemon *d)
{
	int r = daemon_prepare(o, d);

	if (r == 0)
		r = daemon_spawn(d);
	if (r == 0)
		r = daemon_wait_up(d, -1);
	return r;
}

/* ---------------------------------------------------------------- helpers */

static int connect_to(const char *path, struct vpmu_client **c)
{
	struct vpmu_client_error e;
	int r = vpmu_client_connect(path, CLIENT_NAME, vpmu_client_now_usec() + CALL_BUDGET_USEC, c, &e);

	if (r < 0)
		fprintf(stderr, "bench-proto: connect %s: %s\n", path, e.message);
	return r;
}

static int call(struct vpmu_client *c, const char *method, struct json_object *params, struct json_object **res)
{
	struct vpmu_client_error e;
	_cleanup_json_ struct json_object *tmp = NULL;
	int r = vpmu_client_call(c, method, params, vpmu_client_now_usec() + CALL_BUDGET_USEC, res ? res : &tmp, &e);

	if (r < 0)
		fprintf(stderr, "bench-proto: %s: %s%s%s\n", method, e.remote ? e.code : "", e.remote ? ": " : "",
			e.message);
	return r;
}

static struct json_object *readonly_params(const char *method)
{
	if (strcmp(method, "plan"))
		return NULL;
	struct json_object *p = json_object_new_object();
	json_object_object_add(p, "cpus", json_object_new_string("0"));
	return p;
}

static struct json_object *name_params(const char *name)
{
	struct json_object *p = json_object_new_object();
	json_object_object_add(p, "name", json_object_new_string(name));
	return p;
}

/* ---------------------------------------------------------------- 1: durable attach/detach */

struct durable {
	unsigned n;
	double attach_p50, attach_p99, attach_max;
	double detach_p50, detach_p99, detach_max;
};

static int bench_durable(const char *sock, unsigned n, struct durable *out)
{
	_cleanup_client_ struct vpmu_client *c = NULL;
	_cleanup_free_ uint64_t *att = calloc(n, sizeof(*att));
	_cleanup_free_ uint64_t *det = calloc(n, sizeof(*det));
	int r;

	*out = (struct durable){ 0 };
	if (!att || !det)
		return -ENOMEM;
	if ((r = connect_to(sock, &c)) < 0)
		return r;
	for (unsigned i = 0; i < n; i++) {
		char name[64];

		snprintf(name, sizeof(name), "bench-%d-%u", (int)getpid(), i);
		_cleanup_json_ struct json_object *a = name_params(name);
		_cleanup_json_ struct json_object *d = name_params(name);
		json_object_object_add(a, "gp", json_object_new_int(2));
		json_object_object_add(a, "vcpu_count", json_object_new_int(2));
		json_object_object_add(a, "cpus", json_object_new_string("0-3"));
		uint64_t t0 = now_ns();
		if ((r = call(c, "vm.attach", a, NULL)) < 0)
			return r;
		uint64_t t1 = now_ns();
		if ((r = call(c, "vm.detach", d, NULL)) < 0)
			return r;
		att[i] = t1 - t0;
		det[i] = now_ns() - t1;
	}
	*out = (struct durable){
		.n = n,
		.attach_p50 = pct_us(att, n, 50), .attach_p99 = pct_us(att, n, 99), .attach_max = pct_us(att, n, 100),
		.detach_p50 = pct_us(det, n, 50), .detach_p99 = pct_us(det, n, 99), .detach_max = pct_us(det, n, 100),
	};
	return 0;
}

/* ---------------------------------------------------------------- 2: read-only throughput */

struct worker {
	const char *sock, *method;
	unsigned requests;
	pthread_barrier_t *start;
	struct vpmu_client *c;
	int rc;
	uint64_t t_start, t_end;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	_cleanup_json_ struct json_object *params = readonly_params(w->method);

	pthread_barrier_wait(w->start);
	w->t_start = now_ns();
	w->rc = 0;
	for (unsigned i = 0; i < w->requests && w->rc == 0; i++)
		w->rc = call(w->c, w->method, params, NULL);
	w->t_end = now_ns();
	return NULL;
}

struct workers {
	struct worker *w;
	unsigned made;
};

static void workers_fini(struct workers *ws)
{
	for (unsigned i = 0; i < ws->made; i++)
		vpmu_client_close(ws->w[i].c);
	free(ws->w);
}

/* 'conns' connections, each in its own thread doing 'per_conn' sequential
 * requests; connections are made (and hello done) before the clock starts.
 * Requests per second = all requests / (last end - first start). */
static int bench_readonly(const char *sock, const char *method, unsigned conns, unsigned per_conn, double *rps)
{
	_cleanup_(workers_fini) struct workers ws = { .w = calloc(conns, sizeof(struct worker)) };
	_cleanup_free_ pthread_t *th = calloc(conns, sizeof(*th));
	pthread_barrier_t start;
	unsigned started = 0;
	int r;

	*rps = 0;
	if (!ws.w || !th)
		return -ENOMEM;
	for (; ws.made < conns; ws.made++) {
		ws.w[ws.made] = (struct worker){ .sock = sock, .method = method, .requests = per_conn, .start = &start };
		if ((r = connect_to(sock, &ws.w[ws.made].c)) < 0)
			return r;
	}
	pthread_barrier_init(&start, NULL, conns);
	for (; started < conns; started++)
		if ((r = -pthread_create(&th[started], NULL, worker_run, &ws.w[started])) < 0)
			break;
	if (started < conns) {
		/* the barrier would never open: give up loudly */
		fprintf(stderr, "bench-proto: pthread_create: %s\n", strerror(-r));
		exit(1);
	}
	uint64_t first = UINT64_MAX, last = 0;
	r = 0;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (ws.w[i].rc < 0)
			r = ws.w[i].rc;
		first = ws.w[i].t_start < first ? ws.w[i].t_start : first;
		last = ws.w[i].t_end > last ? ws.w[i].t_end : last;
	}
	pthread_barrier_destroy(&start);
	if (r == 0 && last > first)
		*rps = (double)conns * per_conn / ((double)(last - first) / 1e9);
	return r;
}

/* ---------------------------------------------------------------- 3: --leases N */

struct leases {
	unsigned n, samples, plans, ncpus;
	double setup_s;
	uint64_t lease_bytes;          /* state directory growth per lease */
	double attach_p50, attach_p99, detach_p50, detach_p99;
	double floor_p50, floor_p99;
	long anon_idle, anon_leases, anon_plan, rss_plan, anon_restart; /* KiB */
	double plan_p50_ms, plan_max_ms, status_p50_ms;
	double plan_wire_p50_ms; /* until the last byte, no client parsing */
	size_t plan_bytes;
	double start_empty_ms, stop_ms, restart_ms;
};

/* "Anonymous:" and "Rss:" of /proc/PID/smaps_rollup, in KiB. */
static int smaps_kib(pid_t pid, long *anon, long *rss)
{
	char path[64];
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	*anon = *rss = -1;
	while (getline(&line, &cap, f) > 0) {
		sscanf(line, "Anonymous: %ld kB", anon);
		sscanf(line, "Rss: %ld kB", rss);
	}
	return *anon < 0 ? -ENODATA : 0;
}

/* Apparent size of the regular files under the directory fd (taken). */
static int tree_bytes(int dfd, uint64_t *sum)
{
	DIR *dir = fdopendir(dfd);
	struct dirent *e;

	if (!dir) {
		close(dfd);
		return -errno;
	}
	while ((e = readdir(dir))) {
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* renamed away meanwhile */
		if (S_ISREG(st.st_mode))
			*sum += (uint64_t)st.st_size;
		else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (sub >= 0)
				tree_bytes(sub, sum);
		}
	}
	closedir(dir);
	return 0;
}

static uint64_t dir_bytes(const char *path)
{
	uint64_t sum = 0;
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd >= 0)
		tree_bytes(dfd, &sum);
	return sum;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * One durable write as a crash-safe store must do it, in vpmud's own state
 * directory: write a new file, fsync it, rename it over the old one, fsync
 * the directory (as state.c does, the directory opened each time).
 */
static int floor_sample(const char *dir, const char *tmp, const char *final, const char *buf, size_t len,
			uint64_t *ns)
{
	uint64_t t0 = now_ns();
	int r;
	{
		_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		if ((r = write_all(fd, buf, len)) < 0)
			return r;
		if (fsync(fd) < 0)
			return -errno;
	}
	if (rename(tmp, final) < 0)
		return -errno;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		return -errno;
	*ns = now_ns() - t0;
	return 0;
}

/* A two-vCPU VM in slot 'slot': vCPU j on CPU (2 slot + j) mod ncpus, so
 * that N VMs spread evenly over the model's CPUs. */
static struct json_object *two_vcpu_vm(const char *name, unsigned slot, unsigned ncpus)
{
	struct json_object *p = name_params(name), *vcpus = json_object_new_array();

	json_object_object_add(p, "gp", json_object_new_int(2));
	for (unsigned j = 0; j < VCPUS_PER_VM; j++) {
		struct json_object *v = json_object_new_object();
		char cpu[16];

		snprintf(cpu, sizeof(cpu), "%u", (VCPUS_PER_VM * slot + j) % ncpus);
		json_object_object_add(v, "cpus", json_object_new_string(cpu));
		json_object_array_add(vcpus, v);
	}
	json_object_object_add(p, "vcpus", vcpus);
	return p;
}

static int model_cpus(struct vpmu_client *c, unsigned *ncpus)
{
	_cleanup_json_ struct json_object *st = NULL;
	struct json_object *v;
	int r = call(c, "status", NULL, &st);

	if (r < 0)
		return r;
	if (!json_object_object_get_ex(st, "cpus", &v) || json_object_get_int(v) < 1) {
		fprintf(stderr, "bench-proto: status has no CPU count\n");
		return -EPROTO;
	}
	*ncpus = (unsigned)json_object_get_int(v);
	return 0;
}

static int attach_many(struct vpmu_client *c, unsigned n, unsigned ncpus, bool progress)
{
	uint64_t t0 = now_ns();

	for (unsigned i = 0; i < n; i++) {
		char name[32];
		int r;

		snprintf(name, sizeof(name), "lease-%u", i);
		_cleanup_json_ struct json_object *p = two_vcpu_vm(name, i, ncpus);
		if ((r = call(c, "vm.attach", p, NULL)) < 0)
			return r;
		if (progress && (i + 1) % 1000 == 0)
			fprintf(stderr, "bench-proto: %u of %u leases attached (%.0f s)\n", i + 1, n,
				(double)(now_ns() - t0) / 1e9);
	}
	return 0;
}

/* Attach + detach of one more VM, each pair followed by one floor sample,
 * so that both see the same disk at the same moments. */
static int bench_pairs(struct vpmu_client *c, const struct daemon *d, struct leases *L)
{
	_cleanup_free_ uint64_t *att = calloc(L->samples, sizeof(uint64_t));
	_cleanup_free_ uint64_t *det = calloc(L->samples, sizeof(uint64_t));
	_cleanup_free_ uint64_t *flo = calloc(L->samples, sizeof(uint64_t));
	_cleanup_free_ char *buf = malloc(L->lease_bytes);
	_cleanup_free_ char *tmp = NULL, *final = NULL;
	int r;

	if (!att || !det || !flo || !buf)
		return -ENOMEM;
	/* Dot names: a store that scans its directory skips hidden files, and
	 * the file is gone again before the restart. */
	if (asprintf(&tmp, "%s/.vpmu-bench-floor.tmp", d->state) < 0 ||
	    asprintf(&final, "%s/.vpmu-bench-floor", d->state) < 0)
		return -ENOMEM;
	for (uint64_t i = 0; i < L->lease_bytes; i++)
		buf[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
	for (unsigned k = 0; k < L->samples; k++) {
		_cleanup_json_ struct json_object *a = two_vcpu_vm("probe", L->n, L->ncpus);
		_cleanup_json_ struct json_object *dp = name_params("probe");
		uint64_t t0 = now_ns();
		if ((r = call(c, "vm.attach", a, NULL)) < 0)
			return r;
		uint64_t t1 = now_ns();
		if ((r = call(c, "vm.detach", dp, NULL)) < 0)
			return r;
		att[k] = t1 - t0;
		det[k] = now_ns() - t1;
		if ((r = floor_sample(d->state, tmp, final, buf, L->lease_bytes, &flo[k])) < 0) {
			fprintf(stderr, "bench-proto: durable write in %s: %s\n", d->state, strerror(-r));
			return r;
		}
	}
	unlink(final);
	L->attach_p50 = pct_us(att, L->samples, 50);
	L->attach_p99 = pct_us(att, L->samples, 99);
	L->detach_p50 = pct_us(det, L->samples, 50);
	L->detach_p99 = pct_us(det, L->samples, 99);
	L->floor_p50 = pct_us(flo, L->samples, 50);
	L->floor_p99 = pct_us(flo, L->samples, 99);
	return 0;
}

/* One request on a raw connection, timed until the last byte of the
 * answer's line has arrived: what the daemon costs, without the client
 * library's JSON parsing. Returns the bytes of the answer, or -errno. */
static ssize_t raw_roundtrip(int fd, const char *req, uint64_t *ns)
{
	static char buf[1 << 16];
	size_t len = strlen(req), got = 0;
	uint64_t t0 = now_ns();
	if (write(fd, req, len) != (ssize_t)len)
		return -EIO;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		got += (size_t)n;
		if (buf[n - 1] == '\n')
			break;
	}
	*ns = now_ns() - t0;
	return (ssize_t)got;
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint64_t ns;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	if (raw_roundtrip(fd, "{\"id\":0,\"method\":\"hello\",\"params\":{\"protocol\":1,\"client\":\"bench\"}}\n",
			  &ns) < 0)
		return -EPROTO;
	return TAKE_FD(fd);
}

/* Full plans (no cpus filter); memory is read after the first one. */
static int bench_plan(struct vpmu_client *c, const struct daemon *d, struct leases *L)
{
	uint64_t t[16];
	int r;

	for (unsigned k = 0; k < L->plans && k < 16; k++) {
		_cleanup_json_ struct json_object *plan = NULL;
		struct json_object *vms;
		uint64_t t0 = now_ns();

		if ((r = call(c, "plan", NULL, &plan)) < 0)
			return r;
		t[k] = now_ns() - t0;
		if (k > 0)
			continue;
		if ((r = smaps_kib(d->pid, &L->anon_plan, &L->rss_plan)) < 0)
			return r;
		if (!json_object_object_get_ex(plan, "vms", &vms) || json_object_array_length(vms) != L->n) {
			fprintf(stderr, "bench-proto: the full plan does not list the %u VMs attached\n", L->n);
			return -EPROTO;
		}
		L->plan_bytes = strlen(json_object_to_json_string_ext(plan, JSON_C_TO_STRING_PLAIN));
	}
	uint64_t st[50];
	for (unsigned k = 0; k < 50; k++) {
		uint64_t t0 = now_ns();
		if ((r = call(c, "status", NULL, NULL)) < 0)
			return r;
		st[k] = now_ns() - t0;
	}
	L->plan_p50_ms = pct_us(t, L->plans, 50) / 1000.0;
	L->plan_max_ms = pct_us(t, L->plans, 100) / 1000.0;
	_cleanup_close_ int fd = raw_connect(d->socket);
	if (fd < 0)
		return fd;
	uint64_t w[16];
	for (unsigned k = 0; k < L->plans && k < 16; k++) {
		char req[64];
		snprintf(req, sizeof(req), "{\"id\":%u,\"method\":\"plan\"}\n", k + 1);
		if (raw_roundtrip(fd, req, &w[k]) < 0)
			return -EPROTO;
	}
	L->plan_wire_p50_ms = pct_us(w, L->plans, 50) / 1000.0;
	L->status_p50_ms = pct_us(st, 50, 50) / 1000.0;
	return 0;
}

/* Starts vpmud on an empty state directory and runs the whole measurement. */
static int bench_leases(const struct opts *o, unsigned n, unsigned samples, struct daemon *d, struct leases *L,
			char *server, size_t server_len)
{
	int r;

	*L = (struct leases){ .n = n, .samples = samples, .plans = o->smoke ? 3 : 5 };
	if ((r = daemon_prepare(o, d)) < 0)
		return r;
	uint64_t t0 = now_ns();
	if ((r = daemon_spawn(d)) < 0 || (r = daemon_wait_up(d, 0)) < 0)
		return r;
	L->start_empty_ms = (double)(now_ns() - t0) / 1e6;

	_cleanup_client_ struct vpmu_client *c = NULL;
	if ((r = connect_to(d->socket, &c)) < 0 || (r = model_cpus(c, &L->ncpus)) < 0)
		return r;
	snprintf(server, server_len, "%s", vpmu_client_server(c));
	long rss;
	if ((r = smaps_kib(d->pid, &L->anon_idle, &rss)) < 0) {
		fprintf(stderr, "bench-proto: /proc/%d/smaps_rollup: %s\n", (int)d->pid, strerror(-r));
		return r;
	}
	uint64_t bytes_idle = dir_bytes(d->state);

	t0 = now_ns();
	if ((r = attach_many(c, n, L->ncpus, !o->smoke && n >= 2000)) < 0)
		return r;
	L->setup_s = (double)(now_ns() - t0) / 1e9;
	uint64_t bytes_full = dir_bytes(d->state);
	L->lease_bytes = bytes_full > bytes_idle ? (bytes_full - bytes_idle) / n : 0;
	if (L->lease_bytes < 64)
		L->lease_bytes = 64;
	if ((r = smaps_kib(d->pid, &L->anon_leases, &rss)) < 0)
		return r;

	if ((r = bench_pairs(c, d, L)) < 0 || (r = bench_plan(c, d, L)) < 0)
		return r;
	vpmu_client_close(TAKE_PTR(c));

	L->stop_ms = (double)daemon_stop(d) / 1e6;
	t0 = now_ns();
	if ((r = daemon_spawn(d)) < 0 || (r = daemon_wait_up(d, (long)n)) < 0)
		return r;
	L->restart_ms = (double)(now_ns() - t0) / 1e6;
	return smaps_kib(d->pid, &L->anon_restart, &rss);
}

static struct json_object *leases_json(const struct leases *L, const char *server, const char *fs, bool dbus)
{
	struct json_object *j = json_object_new_object();

#define ADD_INT(k, v) json_object_object_add(j, k, json_object_new_int64((int64_t)(v)))
#define ADD_DBL(k, v, dec) json_object_object_add(j, k, jdouble(v, dec))
	json_object_object_add(j, "server", json_object_new_string(server));
	json_object_object_add(j, "state_fs", json_object_new_string(fs));
	json_object_object_add(j, "dbus_door", json_object_new_boolean(dbus));
	ADD_INT("leases", L->n);
	ADD_INT("vcpus_per_vm", VCPUS_PER_VM);
	ADD_INT("model_cpus", L->ncpus);
	ADD_DBL("setup_s", L->setup_s, 2);
	ADD_INT("lease_bytes", L->lease_bytes);
	ADD_INT("samples", L->samples);
	ADD_DBL("attach_p50_us", L->attach_p50, 1);
	ADD_DBL("attach_p99_us", L->attach_p99, 1);
	ADD_DBL("detach_p50_us", L->detach_p50, 1);
	ADD_DBL("detach_p99_us", L->detach_p99, 1);
	ADD_DBL("floor_p50_us", L->floor_p50, 1);
	ADD_DBL("floor_p99_us", L->floor_p99, 1);
	ADD_DBL("attach_floor_ratio", L->floor_p50 > 0 ? L->attach_p50 / L->floor_p50 : 0, 2);
	ADD_DBL("detach_floor_ratio", L->floor_p50 > 0 ? L->detach_p50 / L->floor_p50 : 0, 2);
	ADD_INT("anon_idle_kib", L->anon_idle);
	ADD_INT("anon_leases_kib", L->anon_leases);
	ADD_INT("anon_after_plan_kib", L->anon_plan);
	ADD_INT("rss_after_plan_kib", L->rss_plan);
	ADD_INT("anon_after_restart_kib", L->anon_restart);
	ADD_DBL("plan_p50_ms", L->plan_p50_ms, 2);
	ADD_DBL("plan_max_ms", L->plan_max_ms, 2);
	ADD_DBL("plan_wire_p50_ms", L->plan_wire_p50_ms, 2);
	ADD_INT("plan_samples", L->plans);
	ADD_INT("plan_bytes", L->plan_bytes);
	ADD_DBL("status_p50_ms", L->status_p50_ms, 3);
	ADD_DBL("start_empty_ms", L->start_empty_ms, 1);
	ADD_DBL("stop_ms", L->stop_ms, 1);
	ADD_DBL("restart_ms", L->restart_ms, 1);
#undef ADD_INT
#undef ADD_DBL
	return j;
}

static void leases_print(const struct leases *L, const char *server, const char *fs, bool smoke, bool dbus)
{
	printf("vpmu-bench-proto --leases %u%s: %s, model PMU icelake-8360y, model KVM, %u CPUs; state directory on %s%s\n",
	       L->n, smoke ? " (smoke)" : "", server, L->ncpus, fs,
	       !strcmp(fs, "tmpfs") ? " (fsync is free there: durable latency understated)" : "");
	printf("  D-Bus door: %s\n", dbus ? "on, serving a private dbus-daemon with the shipped policy (--dbus-bus)"
					   : "off (--dbus none)");
	printf("  each line: the figure, its floor, issue 11's target and the lease count the target is for\n");
	printf("leases=%u vcpus_per_vm=%u setup_s=%.2f lease_bytes=%llu\n", L->n, VCPUS_PER_VM, L->setup_s,
	       (unsigned long long)L->lease_bytes);
	printf("attach_p50_us=%.1f attach_p99_us=%.1f floor_p50_us=%.1f floor_p99_us=%.1f ratio=%.2f "
	       "target_ratio=%.1f target_leases=%u samples=%u\n",
	       L->attach_p50, L->attach_p99, L->floor_p50, L->floor_p99,
	       L->floor_p50 > 0 ? L->attach_p50 / L->floor_p50 : 0, TARGET_RATIO, TARGET_RATIO_LEASES, L->samples);
	printf("detach_p50_us=%.1f detach_p99_us=%.1f floor_p50_us=%.1f floor_p99_us=%.1f ratio=%.2f samples=%u\n",
	       L->detach_p50, L->detach_p99, L->floor_p50, L->floor_p99,
	       L->floor_p50 > 0 ? L->detach_p50 / L->floor_p50 : 0, L->samples);
	printf("anon_after_plan_kib=%ld anon_leases_kib=%ld floor_anon_idle_kib=%ld target_kib=%d target_leases=%u "
	       "rss_after_plan_kib=%ld\n",
	       L->anon_plan, L->anon_leases, L->anon_idle, TARGET_ANON_KIB, TARGET_ANON_LEASES, L->rss_plan);
	printf("plan_wire_p50_ms=%.2f plan_p50_ms=%.2f plan_max_ms=%.2f plan_bytes=%zu floor_status_p50_ms=%.3f "
	       "target_ms=%.0f target_leases=%u samples=%u\n",
	       L->plan_wire_p50_ms, L->plan_p50_ms, L->plan_max_ms, L->plan_bytes, L->status_p50_ms,
	       TARGET_PLAN_MS, TARGET_PLAN_LEASES, L->plans);
	printf("restart_ms=%.1f restart_leases=%u floor_empty_start_ms=%.1f target_ms=%.0f target_leases=%u "
	       "stop_ms=%.1f anon_after_restart_kib=%ld\n",
	       L->restart_ms, L->n, L->start_empty_ms, TARGET_RESTART_MS, TARGET_RESTART_LEASES, L->stop_ms,
	       L->anon_restart);
}

/* ---------------------------------------------------------------- main */

static int parse_uint(const char *opt, const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = s ? strtoul(s, &end, 10) : 0;
	if (!s || errno || *end || !*s || v < 1 || v > max) {
		fprintf(stderr, "vpmu-bench-proto: %s: needs an integer 1..%u, got \"%s\"\n", opt, max, s ? s : "");
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: vpmu-bench-proto [--smoke] [--json] [--socket PATH | --vpmud PATH] [--tmpdir DIR]\n"
	      "                        [--ops N] [--requests N] [--connections C] [--method status|plan]\n"
	      "       vpmu-bench-proto --leases N [--samples K] [--dbus-bus] [--smoke] [--json] [--vpmud PATH]\n"
	      "                        [--tmpdir DIR]\n",
	      f);
}

static int run_leases(const struct opts *o, unsigned n, struct json_object *json_into)
{
	_cleanup_(daemon_fini_keep) struct daemon d = { 0 };
	struct leases L;
	char server[128] = "?";
	unsigned samples = o->samples ? o->samples : o->smoke ? 20 : 200;

	if (bench_leases(o, n, samples, &d, &L, server, sizeof(server)) < 0)
		return 1;
	if (json_into)
		json_object_object_add(json_into, "leases", leases_json(&L, server, d.fs, o->dbus_bus));
	else if (o->json) {
		_cleanup_json_ struct json_object *j = leases_json(&L, server, d.fs, o->dbus_bus);
		json_object_object_add(j, "smoke", json_object_new_boolean(o->smoke));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	} else
		leases_print(&L, server, d.fs, o->smoke, o->dbus_bus);
	daemon_fini(&d, false);
	return 0;
}

static int run_default(const struct opts *o)
{
	/* The many-connection run spreads the same number of requests. */
	unsigned per_conn = o->requests / o->connections ? o->requests / o->connections : 1;
	_cleanup_(daemon_fini_keep) struct daemon d = { 0 };
	const char *sock = o->socket;
	char server[128] = "?", fs[32] = "";
	bool simulated = false;

	if (!sock) {
		if (daemon_start(o, &d) < 0)
			return 1;
		sock = d.socket;
		snprintf(fs, sizeof(fs), "%s", d.fs);
	}
	{
		_cleanup_client_ struct vpmu_client *c = NULL;
		_cleanup_json_ struct json_object *st = NULL;
		struct json_object *b, *v;

		if (connect_to(sock, &c) < 0)
			return 1;
		snprintf(server, sizeof(server), "%s", vpmu_client_server(c));
		if (call(c, "status", NULL, &st) == 0 && json_object_object_get_ex(st, "backends", &b) &&
		    json_object_object_get_ex(b, "pmu_simulated", &v))
			simulated = json_object_get_boolean(v);
	}

	struct durable du;
	double rps_one, rps_many;
	uint64_t t0 = now_ns();
	if (bench_durable(sock, o->ops, &du) < 0 || bench_readonly(sock, o->method, 1, o->requests, &rps_one) < 0 ||
	    bench_readonly(sock, o->method, o->connections, per_conn, &rps_many) < 0)
		return 1;
	double wall_s = (double)(now_ns() - t0) / 1e9;
	daemon_fini(&d, false);

	const char *ro = !strcmp(o->method, "plan") ? "plan {\"cpus\":\"0\"}" : "status";
	_cleanup_json_ struct json_object *j = o->json ? json_object_new_object() : NULL;
	if (j) {
		json_object_object_add(j, "server", json_object_new_string(server));
		json_object_object_add(j, "daemon", json_object_new_string(o->socket ? "external" : "started"));
		json_object_object_add(j, "pmu_simulated", json_object_new_boolean(simulated));
		if (!o->socket)
			json_object_object_add(j, "state_fs", json_object_new_string(fs));
		json_object_object_add(j, "attach_ops", json_object_new_int64(du.n));
		json_object_object_add(j, "attach_p50_us", jdouble(du.attach_p50, 1));
		json_object_object_add(j, "attach_p99_us", jdouble(du.attach_p99, 1));
		json_object_object_add(j, "attach_max_us", jdouble(du.attach_max, 1));
		json_object_object_add(j, "detach_p50_us", jdouble(du.detach_p50, 1));
		json_object_object_add(j, "detach_p99_us", jdouble(du.detach_p99, 1));
		json_object_object_add(j, "detach_max_us", jdouble(du.detach_max, 1));
		json_object_object_add(j, "readonly_method", json_object_new_string(o->method));
		json_object_object_add(j, "readonly_requests_one", json_object_new_int64(o->requests));
		json_object_object_add(j, "readonly_rps_one", jdouble(rps_one, 0));
		json_object_object_add(j, "readonly_requests_many",
				       json_object_new_int64((int64_t)per_conn * o->connections));
		json_object_object_add(j, "readonly_rps_many", jdouble(rps_many, 0));
		json_object_object_add(j, "connections", json_object_new_int64(o->connections));
		json_object_object_add(j, "pipelined", json_object_new_boolean(false));
		json_object_object_add(j, "smoke", json_object_new_boolean(o->smoke));
		json_object_object_add(j, "wall_s", jdouble(wall_s, 3));
	} else {
		printf("vpmu-bench-proto%s: %s on %s\n", o->smoke ? " --smoke" : "", server,
		       o->socket ? o->socket : "a private socket (started by the bench)");
		if (!o->socket)
			printf("  model PMU icelake-8360y%s, model KVM; state directory on %s%s\n",
			       simulated ? " (simulated)" : "", fs,
			       !strcmp(fs, "tmpfs") ? " (fsync is free there: durable latency understated)" : "");
		printf("\n1. durable round trips, one connection (vpmud fsyncs before answering)\n");
		printf("  %-36s %8s %10s %10s %10s\n", "request", "n", "p50 (us)", "p99 (us)", "max (us)");
		printf("  %-36s %8u %10.1f %10.1f %10.1f\n", "vm.attach (2 vCPUs, gp 2, CPUs 0-3)", du.n,
		       du.attach_p50, du.attach_p99, du.attach_max);
		printf("  %-36s %8u %10.1f %10.1f %10.1f\n", "vm.detach", du.n, du.detach_p50, du.detach_p99,
		       du.detach_max);
		printf("\n2. read-only requests, sequential on each connection (not pipelined)\n");
		printf("  %-36s %12s %12s\n", "request", "requests", "req/s");
		printf("  %-24s %3u conn.  %12u %12.0f\n", ro, 1u, o->requests, rps_one);
		printf("  %-24s %3u conn.  %12u %12.0f\n", ro, o->connections, per_conn * o->connections, rps_many);
		printf("\nwall time %.2f s\n", wall_s);
	}
	/* The smoke run covers the --leases mode too, at a tiny size. */
	if (o->smoke) {
		if (!j)
			printf("\n3. --leases %u\n", SMOKE_LEASES);
		if (run_leases(o, SMOKE_LEASES, j))
			return 1;
	}
	if (j)
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .method = "status", .connections = 16 };
	bool ops_set = false, req_set = false;
	const char *t = getenv("TMPDIR");

	o.tmpdir = t && *t ? t : "/tmp";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--smoke"))
			o.smoke = true;
		else if (!strcmp(a, "--json"))
			o.json = true;
		else if (!strcmp(a, "--dbus-bus"))
			o.dbus_bus = true;
		else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--socket") && v)
			o.socket = argv[++i];
		else if (!strcmp(a, "--vpmud") && v)
			o.vpmud = argv[++i];
		else if (!strcmp(a, "--tmpdir") && v)
			o.tmpdir = argv[++i];
		else if (!strcmp(a, "--method") && v && (!strcmp(v, "status") || !strcmp(v, "plan")))
			o.method = argv[++i];
		else if (!strcmp(a, "--ops")) {
			if (parse_uint(a, v, 1000000, &o.ops))
				return 2;
			ops_set = true;
			i++;
		} else if (!strcmp(a, "--requests")) {
			if (parse_uint(a, v, 100000000, &o.requests))
				return 2;
			req_set = true;
			i++;
		} else if (!strcmp(a, "--connections")) {
			if (parse_uint(a, v, 1000, &o.connections))
				return 2;
			i++;
		} else if (!strcmp(a, "--leases")) {
			if (parse_uint(a, v, 100000, &o.leases))
				return 2;
			i++;
		} else if (!strcmp(a, "--samples")) {
			if (parse_uint(a, v, 100000, &o.samples))
				return 2;
			i++;
		} else {
			fprintf(stderr, "vpmu-bench-proto: bad argument '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (o.socket && o.vpmud) {
		fprintf(stderr, "vpmu-bench-proto: give --socket or --vpmud, not both\n");
		return 2;
	}
	if (o.socket && o.leases) {
		fprintf(stderr, "vpmu-bench-proto: --leases starts its own vpmud (it restarts it and reads its memory): "
				"not with --socket\n");
		return 2;
	}
	if (o.dbus_bus && !o.leases) {
		fprintf(stderr, "vpmu-bench-proto: --dbus-bus goes with --leases\n");
		return 2;
	}
	if (o.samples && !o.leases && !o.smoke) {
		fprintf(stderr, "vpmu-bench-proto: --samples goes with --leases\n");
		return 2;
	}
	if (o.leases)
		return run_leases(&o, o.leases, NULL);

	if (!ops_set)
		o.ops = o.smoke ? 20 : 1000;
	if (!req_set)
		o.requests = o.smoke ? 200 : 20000;
	return run_default(&o);
}
