/* SPDX-License-Identifier: MIT */
/*
 * vpmu-bench-proto: what vpmud's socket protocol costs, end to end, through
 * the client library (include/vpmu/client.h):
 *  1. durable round trips: N vm.attach + vm.detach pairs on one connection,
 *     each answered only after vpmud wrote and fsynced its state; latency
 *     of each attach and each detach, p50/p99/max in microseconds;
 *  2. read-only requests per second (status, or plan with cpus "0"), on
 *     one connection and on C connections, one thread each; requests are
 *     sequential on each connection (send, wait for the answer, send the
 *     next: not pipelined), so C connections have up to C requests in
 *     flight.
 *
 * By default it starts its own vpmud (--vpmud PATH, else $VPMU_BUILD_DIR/vpmud,
 * else the vpmud next to this executable) on the model PMU and model KVM,
 * with a temporary socket, state directory and empty config under --tmpdir
 * (default $TMPDIR or /tmp; the file system type is printed, since fsync on
 * tmpfs costs nothing). --socket PATH uses a running vpmud instead (attach
 * then needs root or the admin group; VM names are bench-PID-I).
 *
 * Figures are printed, never judged. --json prints one object; --smoke runs
 * tiny sizes (CI).
 *
 * usage: vpmu-bench-proto [--smoke] [--json] [--socket PATH | --vpmud PATH]
 *        [--tmpdir DIR] [--ops N] [--requests N] [--connections C]
 *        [--method status|plan]
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vpmu/client.h"

#define CLIENT_NAME "vpmu-bench-proto"
#define CALL_BUDGET_USEC (30 * 1000000ull)

struct opts {
	bool smoke, json;
	const char *socket;   /* existing daemon, or NULL */
	const char *vpmud;    /* daemon binary, or NULL: found */
	const char *tmpdir;
	const char *method;   /* "status" or "plan" */
	unsigned ops, requests, connections;
};

struct daemon {
	pid_t pid;
	char dir[PATH_MAX];
	char socket[PATH_MAX];
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

/* Nearest-rank percentile of sorted v[0..n-1], in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
	if (!n)
		return 0;
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

/* ---------------------------------------------------------------- daemon */

static int find_vpmud(const struct opts *o, char *out, size_t len)
{
	const char *b = getenv("VPMU_BUILD_DIR");
	char self[PATH_MAX];
	ssize_t n;

	if (o->vpmud) {
		snprintf(out, len, "%s", o->vpmud);
		return access(out, X_OK) ? -errno : 0;
	}
	if (b && *b) {
		if ((size_t)snprintf(out, len, "%s/vpmud", b) < len && !access(out, X_OK))
			return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			if ((size_t)snprintf(out, len, "%s/vpmud", self) < len && !access(out, X_OK))
				return 0;
		}
	}
	return -ENOENT;
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

static void daemon_stop(struct daemon *d, bool keep)
{
	if (d->pid > 0) {
		int st;
		kill(d->pid, SIGTERM);
		for (int i = 0; i < 500; i++) { /* 5 s, then SIGKILL */
			if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
				d->pid = 0;
				break;
			}
			usleep(10000);
		}
		if (d->pid > 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &st, 0);
			d->pid = 0;
		}
	}
	if (d->dir[0] && !keep)
		nftw(d->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	else if (d->dir[0])
		fprintf(stderr, "bench-proto: daemon log kept in %s/vpmud.log\n", d->dir);
	d->dir[0] = 0;
}

static int daemon_start(const struct opts *o, struct daemon *d)
{
	char bin[PATH_MAX], conf[PATH_MAX + 16], state[PATH_MAX + 16], log[PATH_MAX + 16];
	int r = find_vpmud(o, bin, sizeof(bin));

	if (r < 0) {
		fprintf(stderr, "bench-proto: no vpmud (give --vpmud PATH or set VPMU_BUILD_DIR)\n");
		return r;
	}
	snprintf(d->dir, sizeof(d->dir), "%s/vpmu-bench-proto.XXXXXX", o->tmpdir);
	if (!mkdtemp(d->dir)) {
		fprintf(stderr, "bench-proto: mkdtemp %s: %s\n", d->dir, strerror(errno));
		d->dir[0] = 0;
		return -errno;
	}
	fs_name(d->dir, d->fs, sizeof(d->fs));
	snprintf(conf, sizeof(conf), "%s/vpmud.conf", d->dir);
	snprintf(state, sizeof(state), "%s/state", d->dir);
	snprintf(log, sizeof(log), "%s/vpmud.log", d->dir);
	if ((size_t)snprintf(d->socket, sizeof(d->socket), "%s/vpmud.sock", d->dir) >= 108) {
		fprintf(stderr, "bench-proto: %s/vpmud.sock: too long for a Unix socket (use --tmpdir)\n", d->dir);
		return -ENAMETOOLONG;
	}
	int fd = open(conf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	close(fd);

	d->pid = fork();
	if (d->pid < 0)
		return -errno;
	if (d->pid == 0) {
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (lfd >= 0) {
			dup2(lfd, 2);
			close(lfd);
		}
		execl(bin, bin, "--pmu", "icelake-8360y", "--kvm", "model", "--dbus", "none", "--libvirt-uri", "none",
		      "--socket", d->socket, "--state-dir", state,
		      "--config", conf, (char *)NULL);
		_exit(127);
	}
	/* up when a hello succeeds; 10 s at most */
	for (int i = 0; i < 1000; i++) {
		struct vpmu_client *c;
		struct vpmu_client_error e;
		int st;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			fprintf(stderr, "bench-proto: %s exited at start; see %s\n", bin, log);
			d->pid = 0;
			return -ECHILD;
		}
		if (vpmu_client_connect(d->socket, CLIENT_NAME, vpmu_client_now_usec() + 1000000, &c, &e) == 0) {
			vpmu_client_close(c);
			return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "bench-proto: vpmud did not come up in 10 s; see %s\n", log);
	return -ETIMEDOUT;
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
	struct json_object *tmp = NULL;
	int r = vpmu_client_call(c, method, params, vpmu_client_now_usec() + CALL_BUDGET_USEC, res ? res : &tmp, &e);

	if (r < 0)
		fprintf(stderr, "bench-proto: %s: %s%s%s\n", method, e.remote ? e.code : "", e.remote ? ": " : "",
			e.message);
	json_object_put(tmp);
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

/* ---------------------------------------------------------------- 1: durable attach/detach */

struct durable {
	unsigned n;
	double attach_p50, attach_p99, attach_max;
	double detach_p50, detach_p99, detach_max;
};

static int bench_durable(const char *sock, unsigned n, struct durable *out)
{
	struct vpmu_client *c;
	uint64_t *att = calloc(n, sizeof(*att)), *det = calloc(n, sizeof(*det));
	int r = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!att || !det)
		goto out_free;
	if ((r = connect_to(sock, &c)) < 0)
		goto out_free;
	for (unsigned i = 0; i < n; i++) {
		char name[64];
		struct json_object *a = json_object_new_object(), *d = json_object_new_object();

		snprintf(name, sizeof(name), "bench-%d-%u", (int)getpid(), i);
		json_object_object_add(a, "name", json_object_new_string(name));
		json_object_object_add(a, "gp", json_object_new_int(2));
		json_object_object_add(a, "vcpu_count", json_object_new_int(2));
		json_object_object_add(a, "cpus", json_object_new_string("0-3"));
		json_object_object_add(d, "name", json_object_new_string(name));
		uint64_t t0 = now_ns();
		r = call(c, "vm.attach", a, NULL);
		uint64_t t1 = now_ns();
		if (r == 0)
			r = call(c, "vm.detach", d, NULL);
		uint64_t t2 = now_ns();
		json_object_put(a);
		json_object_put(d);
		if (r < 0)
			break;
		att[i] = t1 - t0;
		det[i] = t2 - t1;
	}
	vpmu_client_close(c);
	if (r < 0)
		goto out_free;
	qsort(att, n, sizeof(*att), cmp_u64);
	qsort(det, n, sizeof(*det), cmp_u64);
	*out = (struct durable){
		.n = n,
		.attach_p50 = pct_us(att, n, 50), .attach_p99 = pct_us(att, n, 99), .attach_max = pct_us(att, n, 100),
		.detach_p50 = pct_us(det, n, 50), .detach_p99 = pct_us(det, n, 99), .detach_max = pct_us(det, n, 100),
	};
out_free:
	free(att);
	free(det);
	return r;
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
	struct json_object *params = readonly_params(w->method);

	pthread_barrier_wait(w->start);
	w->t_start = now_ns();
	w->rc = 0;
	for (unsigned i = 0; i < w->requests && w->rc == 0; i++)
		w->rc = call(w->c, w->method, params, NULL);
	w->t_end = now_ns();
	json_object_put(params);
	return NULL;
}

/* 'conns' connections, each in its own thread doing 'per_conn' sequential
 * requests; connections are made (and hello done) before the clock starts.
 * Requests per second = all requests / (last end - first start). */
static int bench_readonly(const char *sock, const char *method, unsigned conns, unsigned per_conn, double *rps)
{
	struct worker *w = calloc(conns, sizeof(*w));
	pthread_t *th = calloc(conns, sizeof(*th));
	pthread_barrier_t start;
	unsigned made = 0, started = 0;
	int r = -ENOMEM;

	*rps = 0;
	if (!w || !th)
		goto out;
	for (; made < conns; made++) {
		w[made] = (struct worker){ .sock = sock, .method = method, .requests = per_conn, .start = &start };
		if ((r = connect_to(sock, &w[made].c)) < 0)
			goto out;
	}
	pthread_barrier_init(&start, NULL, conns);
	for (; started < conns; started++)
		if ((r = -pthread_create(&th[started], NULL, worker_run, &w[started])) < 0)
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
		if (w[i].rc < 0)
			r = w[i].rc;
		first = w[i].t_start < first ? w[i].t_start : first;
		last = w[i].t_end > last ? w[i].t_end : last;
	}
	pthread_barrier_destroy(&start);
	if (r == 0 && last > first)
		*rps = (double)conns * per_conn / ((double)(last - first) / 1e9);
out:
	for (unsigned i = 0; i < made; i++)
		vpmu_client_close(w[i].c);
	free(w);
	free(th);
	return r;
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
	      "                        [--ops N] [--requests N] [--connections C] [--method status|plan]\n",
	      f);
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
	if (!ops_set)
		o.ops = o.smoke ? 20 : 1000;
	if (!req_set)
		o.requests = o.smoke ? 200 : 20000;
	/* The many-connection run spreads the same number of requests. */
	unsigned per_conn = o.requests / o.connections ? o.requests / o.connections : 1;

	struct daemon d = { 0 };
	const char *sock = o.socket;
	int r;

	if (!sock) {
		if ((r = daemon_start(&o, &d)) < 0) {
			daemon_stop(&d, true);
			return 1;
		}
		sock = d.socket;
	}

	char server[128] = "?";
	bool simulated = false;
	{
		struct vpmu_client *c;
		struct json_object *st = NULL, *b, *v;

		if ((r = connect_to(sock, &c)) < 0)
			goto fail;
		snprintf(server, sizeof(server), "%s", vpmu_client_server(c));
		if (call(c, "status", NULL, &st) == 0 && json_object_object_get_ex(st, "backends", &b) &&
		    json_object_object_get_ex(b, "pmu_simulated", &v))
			simulated = json_object_get_boolean(v);
		json_object_put(st);
		vpmu_client_close(c);
	}

	struct durable du;
	double rps_one, rps_many;
	uint64_t t0 = now_ns();
	if ((r = bench_durable(sock, o.ops, &du)) < 0)
		goto fail;
	if ((r = bench_readonly(sock, o.method, 1, o.requests, &rps_one)) < 0)
		goto fail;
	if ((r = bench_readonly(sock, o.method, o.connections, per_conn, &rps_many)) < 0)
		goto fail;
	double wall_s = (double)(now_ns() - t0) / 1e9;

	const char *ro = !strcmp(o.method, "plan") ? "plan {\"cpus\":\"0\"}" : "status";
	if (o.json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "server", json_object_new_string(server));
		json_object_object_add(j, "daemon", json_object_new_string(o.socket ? "external" : "started"));
		json_object_object_add(j, "pmu_simulated", json_object_new_boolean(simulated));
		if (!o.socket)
			json_object_object_add(j, "state_fs", json_object_new_string(d.fs));
		json_object_object_add(j, "attach_ops", json_object_new_int64(du.n));
		json_object_object_add(j, "attach_p50_us", jdouble(du.attach_p50, 1));
		json_object_object_add(j, "attach_p99_us", jdouble(du.attach_p99, 1));
		json_object_object_add(j, "attach_max_us", jdouble(du.attach_max, 1));
		json_object_object_add(j, "detach_p50_us", jdouble(du.detach_p50, 1));
		json_object_object_add(j, "detach_p99_us", jdouble(du.detach_p99, 1));
		json_object_object_add(j, "detach_max_us", jdouble(du.detach_max, 1));
		json_object_object_add(j, "readonly_method", json_object_new_string(o.method));
		json_object_object_add(j, "readonly_requests_one", json_object_new_int64(o.requests));
		json_object_object_add(j, "readonly_rps_one", jdouble(rps_one, 0));
		json_object_object_add(j, "readonly_requests_many",
				       json_object_new_int64((int64_t)per_conn * o.connections));
		json_object_object_add(j, "readonly_rps_many", jdouble(rps_many, 0));
		json_object_object_add(j, "connections", json_object_new_int64(o.connections));
		json_object_object_add(j, "pipelined", json_object_new_boolean(false));
		json_object_object_add(j, "smoke", json_object_new_boolean(o.smoke));
		json_object_object_add(j, "wall_s", jdouble(wall_s, 3));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
		json_object_put(j);
	} else {
		printf("vpmu-bench-proto%s: %s on %s\n", o.smoke ? " --smoke" : "", server,
		       o.socket ? o.socket : "a private socket (started by the bench)");
		if (!o.socket)
			printf("  model PMU icelake-8360y%s, model KVM; state directory on %s%s\n",
			       simulated ? " (simulated)" : "", d.fs,
			       !strcmp(d.fs, "tmpfs") ? " (fsync is free there: durable latency understated)" : "");
		printf("\n1. durable round trips, one connection (vpmud fsyncs before answering)\n");
		printf("  %-36s %8s %10s %10s %10s\n", "request", "n", "p50 (us)", "p99 (us)", "max (us)");
		printf("  %-36s %8u %10.1f %10.1f %10.1f\n", "vm.attach (2 vCPUs, gp 2, CPUs 0-3)", du.n,
		       du.attach_p50, du.attach_p99, du.attach_max);
		printf("  %-36s %8u %10.1f %10.1f %10.1f\n", "vm.detach", du.n, du.detach_p50, du.detach_p99,
		       du.detach_max);
		printf("\n2. read-only requests, sequential on each connection (not pipelined)\n");
		printf("  %-36s %12s %12s\n", "request", "requests", "req/s");
		printf("  %-24s %3u conn.  %12u %12.0f\n", ro, 1u, o.requests, rps_one);
		printf("  %-24s %3u conn.  %12u %12.0f\n", ro, o.connections, per_conn * o.connections, rps_many);
		printf("\nwall time %.2f s\n", wall_s);
	}
	daemon_stop(&d, false);
	return 0;
fail:
	daemon_stop(&d, true);
	return 1;
}
