/* SPDX-License-Identifier: MIT */
/*
 * The client library, vpmuctl and the libvirt hook executable against a
 * fake vpmud: a thread serving canned answers on a temporary socket. The
 * fake decodes every request with the daemon's own decoder, so a client
 * that sends something vpmud would refuse fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/proto.h"
#include "proto/response.h"
#include "vpmu/client.h"

/* ------------------------------------------------------------ fake vpmud */

enum act {
	ACT_REPLY = 0, /* result or error */
	ACT_SILENT,    /* read the request, never answer */
	ACT_RAW,       /* send 'raw' verbatim, keep the connection */
	ACT_RAW_CLOSE, /* send 'raw' verbatim, then close */
	ACT_HUGE,      /* a frame over the client's 16 MiB limit */
	ACT_FLOOD,     /* never answer, but never stop sending events and blank lines */
};

struct canned {
	const char *method;
	enum act act;
	const char *result;  /* JSON object text; NULL with error NULL: {} */
	const char *error;   /* JSON object text of "error" */
	const char *raw;
	const char *before;  /* lines (events) sent before the answer */
	const char *after;   /* lines sent after it */
	int times;           /* 0: every time; else this many, then the next match */
	int used;
};

#define MAX_RECORDED 64

struct fake {
	char dir[64], path[108];
	int lfd;
	pthread_t th;
	bool stop; /* accessed with __atomic */
	struct canned *canned;
	size_t ncanned;
	pthread_mutex_t lock;
	char *requests[MAX_RECORDED]; /* raw request lines, hello excluded */
	int fds[MAX_RECORDED];        /* the descriptor that came with each, or -1 */
	int nreq;
	int connections;
	int invalid; /* requests vpmud's decoder refused */
};

static bool stopping(struct fake *f)
{
	return __atomic_load_n(&f->stop, __ATOMIC_ACQUIRE);
}

static void send_text(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the client went away; that is its business */
		s += w;
		n -= (size_t)w;
	}
}

static void send_str(int fd, const char *s)
{
	send_text(fd, s, strlen(s));
}

static struct canned *lookup(struct fake *f, const char *method)
{
	for (size_t i = 0; i < f->ncanned; i++) {
		struct canned *c = &f->canned[i];

		if (strcmp(c->method, method) || (c->times && c->used >= c->times))
			continue;
		c->used++;
		return c;
	}
	return NULL;
}

/* Returns false when the connection must close. *passed: a descriptor
 * that came with the bytes read, recorded with this request (taken). */
static bool answer(struct fake *f, int fd, const char *line, size_t len, int *passed)
{
	struct proto_request req;
	struct proto_error err;
	bool idk;
	uint64_t id;
	char buf[512];
	int r = proto_request_decode(line, len, 4096, &req, &idk, &id, &err);

	if (r < 0) {
		struct json_object *e = response_error(idk, id, &err);

		pthread_mutex_lock(&f->lock);
		f->invalid++;
		pthread_mutex_unlock(&f->lock);
		fprintf(stderr, "fake vpmud: refused %s: %s\n", line, err.message);
		send_str(fd, json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN));
		send_str(fd, "\n");
		json_object_put(e);
		return true;
	}
	const char *method = proto_method_name(req.method);

	proto_request_fini(&req);
	pthread_mutex_lock(&f->lock);
	struct canned *c = lookup(f, method);
	if (req.method != PROTO_M_HELLO && f->nreq < MAX_RECORDED) {
		f->fds[f->nreq] = *passed;
		*passed = -1;
		f->requests[f->nreq++] = strndup(line, len);
	}
	pthread_mutex_unlock(&f->lock);
	if (!c && req.method == PROTO_M_HELLO) {
		snprintf(buf, sizeof(buf), "{\"id\":%" PRIu64 ",\"result\":{\"protocol\":1,\"server\":\"fake/1\"}}\n", id);
		send_str(fd, buf);
		return true;
	}
	if (!c) {
		snprintf(buf, sizeof(buf),
			 "{\"id\":%" PRIu64 ",\"error\":{\"code\":\"internal\",\"errno\":5,\"message\":\"fake: nothing canned for %s\"}}\n",
			 id, method);
		send_str(fd, buf);
		return true;
	}
	if (c->before)
		send_str(fd, c->before);
	switch (c->act) {
	case ACT_SILENT:
		return true;
	case ACT_RAW:
	case ACT_RAW_CLOSE:
		send_str(fd, c->raw);
		return c->act == ACT_RAW;
	case ACT_HUGE: {
		size_t n = PROTO_MAX_RESPONSE + 4096;
		char *big = malloc(n);

		assert_non_null(big);
		memset(big, ' ', n);
		memcpy(big, "{\"id\":1,\"result\":{", 18);
		send_text(fd, big, n);
		free(big);
		return false;
	}
	case ACT_FLOOD: {
		/* Keep the socket full: a reader never finds it empty, so only a
		 * deadline checked between reads can stop it. */
		char *chunk = malloc(1 << 16);
		assert_non_null(chunk);
		memset(chunk, '\n', 1 << 16);
		while (!stopping(f) && send(fd, chunk, 1 << 16, MSG_NOSIGNAL) > 0)
			;
		free(chunk);
		return false;
	}
	case ACT_REPLY: {
		char *s = NULL;

		if (c->error)
			assert_true(asprintf(&s, "{\"id\":%" PRIu64 ",\"error\":%s}\n", id, c->error) > 0);
		else
			assert_true(asprintf(&s, "{\"id\":%" PRIu64 ",\"result\":%s}\n", id, c->result ? c->result : "{}") > 0);
		send_str(fd, s);
		free(s);
		break;
	}
	}
	if (c->after)
		send_str(fd, c->after);
	return true;
}

static void serve(struct fake *f, int fd)
{
	struct frame_reader rd;
	char buf[4096];

	int passed = -1;

	frame_reader_init(&rd, PROTO_MAX_REQUEST);
	while (!stopping(f)) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		union {
			struct cmsghdr align;
			char space[CMSG_SPACE(4 * sizeof(int))];
		} control;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
				     .msg_controllen = sizeof(control.space) };
		const char *line;
		size_t len;

		if (poll(&p, 1, 20) <= 0)
			continue;
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

		if (n <= 0)
			break;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			/* the library sends exactly one, once */
			assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
			assert_int_equal(cm->cmsg_len, CMSG_LEN(sizeof(int)));
			assert_int_equal(passed, -1);
			memcpy(&passed, CMSG_DATA(cm), sizeof(int));
		}
		if (frame_reader_feed(&rd, buf, (size_t)n) < 0)
			break;
		bool open = true;

		while (open && frame_reader_next(&rd, &line, &len) == 1)
			open = answer(f, fd, line, len, &passed);
		if (!open)
			break;
	}
	if (passed >= 0)
		close(passed);
	frame_reader_fini(&rd);
	close(fd);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!stopping(f)) {
		struct pollfd p = { .fd = f->lfd, .events = POLLIN };

		if (poll(&p, 1, 20) <= 0)
			continue;
		int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0)
			continue;
		pthread_mutex_lock(&f->lock);
		f->connections++;
		pthread_mutex_unlock(&f->lock);
		serve(f, fd);
	}
	return NULL;
}

static void fake_start(struct fake *f, struct canned *canned, size_t n)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/vpmu-test-client.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/vpmud.sock", f->dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->canned = canned;
	f->ncanned = n;
	pthread_mutex_init(&f->lock, NULL);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	__atomic_store_n(&f->stop, true, __ATOMIC_RELEASE);
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
	for (int i = 0; i < f->nreq; i++) {
		free(f->requests[i]);
		if (f->fds[i] >= 0)
			close(f->fds[i]);
	}
	pthread_mutex_destroy(&f->lock);
	/* every request a client sent must be one vpmud accepts */
	assert_int_equal(f->invalid, 0);
}

static const char *request(struct fake *f, int i)
{
	const char *s;

	pthread_mutex_lock(&f->lock);
	s = i < f->nreq ? f->requests[i] : NULL;
	pthread_mutex_unlock(&f->lock);
	if (!s)
		fail_msg("the fake received no request #%d", i);
	return s;
}

/* The decoded params of recorded request i (json_object_put it). */
static struct json_object *params_of(struct fake *f, int i)
{
	struct json_object *o = json_tokener_parse(request(f, i)), *p = NULL;

	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "params", &p));
	json_object_get(p);
	json_object_put(o);
	return p;
}

static const char *pstr(struct json_object *p, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(p, key, &v) ? json_object_get_string(v) : NULL;
}

static bool has(struct json_object *p, const char *key)
{
	return json_object_object_get_ex(p, key, NULL);
}

/* ------------------------------------------------------- library tests */

static void connect_ok(struct fake *f, struct vpmu_client **c)
{
	struct vpmu_client_error e;
	int r = vpmu_client_connect(f->path, "test/1", vpmu_client_now_usec() + 5000000, c, &e);

	if (r)
		fail_msg("connect: %d %s", r, e.message);
}

static void test_handshake_and_result(void **st)
{
	(void)st;
	struct canned cn[] = { { .method = "status", .result = "{\"generation\":42,\"future\":[1,2]}" } };
	struct fake f;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	struct json_object *res, *v;

	fake_start(&f, cn, 1);
	connect_ok(&f, &c);
	assert_string_equal(vpmu_client_server(c), "fake/1");
	assert_true(vpmu_client_fd(c) >= 0);
	assert_int_equal(vpmu_client_call(c, "status", NULL, 0, &res, &e), 0);
	assert_true(json_object_object_get_ex(res, "generation", &v));
	assert_int_equal(json_object_get_int(v), 42);
	json_object_put(res);
	/* ids advance; the fake checks them by answering with the one it read */
	assert_int_equal(vpmu_client_call(c, "status", NULL, 0, &res, &e), 0);
	json_object_put(res);
	vpmu_client_close(c);
	assert_int_equal(f.connections, 1);
	fake_stop(&f);
}

/* True when a and b are the same open file (a pipe has one inode). */
static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void test_bind_route_fd(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "vm.bind", .result = "{\"name\":\"web\",\"generation\":7,\"routes\":\"simulated\"}" },
		{ .method = "status", .result = "{}" },
	};
	struct fake f;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	struct json_object *res = NULL, *p, *v;
	int pipefd[2], other[2];

	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	assert_int_equal(pipe2(other, O_CLOEXEC), 0);
	fake_start(&f, cn, 2);
	connect_ok(&f, &c);
	assert_int_equal(vpmu_client_vm_bind_route_fd(c, "web", 1234, pipefd[1], 0, &res, &e), 0);
	assert_true(json_object_object_get_ex(res, "routes", &v));
	assert_string_equal(json_object_get_string(v), "simulated");
	json_object_put(res);
	/* the request says it carries one, and the same file came with it */
	p = params_of(&f, 0);
	assert_string_equal(pstr(p, "name"), "web");
	assert_string_equal(pstr(p, "pid"), "1234");
	assert_string_equal(pstr(p, "route_fd"), "true");
	json_object_put(p);
	assert_true(f.fds[0] >= 0);
	assert_true(same_file(f.fds[0], pipefd[1]));
	assert_false(same_file(f.fds[0], other[1]));
	/* a copy: the caller's descriptor stays open */
	assert_true(fcntl(pipefd[1], F_GETFD) >= 0);

	/* a closed descriptor: refused here, nothing sent, the connection
	 * still good */
	close(other[1]);
	res = NULL;
	assert_int_equal(vpmu_client_vm_bind_route_fd(c, "web", 1234, other[1], 0, &res, &e), -EBADF);
	assert_null(res);
	assert_false(e.remote);
	assert_non_null(strstr(e.message, "not an open descriptor"));
	assert_int_equal(vpmu_client_vm_bind_route_fd(c, "web", 1234, -1, 0, &res, &e), -EBADF);
	/* what the protocol refuses is refused before sending too */
	assert_int_equal(vpmu_client_vm_bind_route_fd(c, "a b", 1234, pipefd[1], 0, &res, &e), -EINVAL);
	assert_non_null(strstr(e.message, "params.name"));
	assert_int_equal(vpmu_client_vm_bind_route_fd(c, "web", 0, pipefd[1], 0, &res, &e), -EINVAL);
	assert_int_equal(f.nreq, 1);
	/* an ordinary call after it carries no descriptor */
	assert_int_equal(vpmu_client_call(c, "status", NULL, 0, &res, &e), 0);
	json_object_put(res);
	assert_int_equal(f.nreq, 2);
	assert_int_equal(f.fds[1], -1);
	vpmu_client_close(c);
	fake_stop(&f);
	close(pipefd[0]);
	close(pipefd[1]);
	close(other[0]);
}

static void test_error_decoding(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "vm.show", .times = 1,
		  .error = "{\"code\":\"not_found\",\"errno\":2,\"message\":\"no VM named web-1\",\"field\":\"params.name\"}" },
		{ .method = "vm.show", .times = 1, .error = "{\"code\":\"quota_exceeded\",\"errno\":122,\"message\":\"later\"}" },
		{ .method = "vm.show", .result = "{\"name\":\"web-1\"}" },
	};
	struct fake f;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	struct json_object *res = NULL, *p = json_object_new_object();

	json_object_object_add(p, "name", json_object_new_string("web-1"));
	fake_start(&f, cn, 3);
	connect_ok(&f, &c);
	assert_int_equal(vpmu_client_call(c, "vm.show", p, 0, &res, &e), -EREMOTEIO);
	assert_null(res);
	assert_true(e.remote);
	assert_string_equal(e.code, "not_found");
	assert_int_equal(e.err, ENOENT);
	assert_string_equal(e.field, "params.name");
	assert_string_equal(e.message, "no VM named web-1");
	/* a code newer than this client degrades to "unknown", keeps errno */
	assert_int_equal(vpmu_client_call(c, "vm.show", p, 0, &res, &e), -EREMOTEIO);
	assert_string_equal(e.code, "unknown");
	assert_int_equal(e.err, 122);
	assert_string_equal(e.field, "");
	/* a daemon error leaves the connection usable */
	assert_int_equal(vpmu_client_call(c, "vm.show", p, 0, &res, &e), 0);
	json_object_put(res);
	/* params are borrowed */
	assert_string_equal(pstr(p, "name"), "web-1");
	json_object_put(p);
	vpmu_client_close(c);
	fake_stop(&f);
}

static void test_hello_refused_and_bad(void **st)
{
	(void)st;
	struct canned refuse[] = { { .method = "hello",
				     .error = "{\"code\":\"unsupported_version\",\"errno\":93,\"message\":\"server speaks protocol 2\"}" } };
	struct canned wrong[] = { { .method = "hello", .result = "{\"protocol\":2,\"server\":\"future\"}" } };
	struct canned odd[] = { { .method = "hello", .result = "{\"hello\":true}" } };
	struct fake f;
	struct vpmu_client *c = (void *)1;
	struct vpmu_client_error e;

	fake_start(&f, refuse, 1);
	assert_int_equal(vpmu_client_connect(f.path, NULL, 0, &c, &e), -EREMOTEIO);
	assert_null(c);
	assert_string_equal(e.code, "unsupported_version");
	fake_stop(&f);

	fake_start(&f, wrong, 1);
	assert_int_equal(vpmu_client_connect(f.path, NULL, 0, &c, &e), -EPROTONOSUPPORT);
	assert_non_null(strstr(e.message, "server speaks protocol 2"));
	fake_stop(&f);

	fake_start(&f, odd, 1);
	assert_int_equal(vpmu_client_connect(f.path, NULL, 0, &c, &e), -EPROTO);
	fake_stop(&f);
}

static void test_connect_failures(void **st)
{
	(void)st;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	char longpath[200];

	assert_int_equal(vpmu_client_connect("/nonexistent/vpmud.sock", NULL, 0, &c, &e), -ENOENT);
	assert_non_null(strstr(e.message, "/nonexistent/vpmud.sock"));
	assert_false(e.remote);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = 0;
	assert_int_equal(vpmu_client_connect(longpath, NULL, 0, &c, &e), -ENAMETOOLONG);

	/* a socket file nobody listens on */
	char dir[] = "/tmp/vpmu-test-client.XXXXXX", path[64];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(vpmu_client_connect(path, NULL, 0, &c, &e), -ECONNREFUSED);
	unlink(path);
	rmdir(dir);

	setenv(VPMU_CLIENT_SOCKET_ENV, "/tmp/elsewhere.sock", 1);
	assert_string_equal(vpmu_client_default_socket(), "/tmp/elsewhere.sock");
	setenv(VPMU_CLIENT_SOCKET_ENV, "", 1);
	assert_string_equal(vpmu_client_default_socket(), VPMU_CLIENT_DEFAULT_SOCKET);
	unsetenv(VPMU_CLIENT_SOCKET_ENV);
	assert_string_equal(vpmu_client_default_socket(), "/run/vpmu/vpmud.sock");
}

static void test_deadline(void **st)
{
	(void)st;
	struct canned cn[] = { { .method = "status", .act = ACT_SILENT } };
	struct canned mute[] = { { .method = "hello", .act = ACT_SILENT } };
	struct fake f;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	struct json_object *res = NULL;

	fake_start(&f, cn, 1);
	connect_ok(&f, &c);
	uint64_t t0 = vpmu_client_now_usec();
	assert_int_equal(vpmu_client_call(c, "status", NULL, t0 + 200000, &res, &e), -ETIMEDOUT);
	uint64_t took = vpmu_client_now_usec() - t0;
	assert_true(took >= 200000);
	assert_true(took < 1500000);
	assert_null(res);
	/* a late answer would be taken for the next request's: the
	 * connection is given up */
	assert_int_equal(vpmu_client_call(c, "status", NULL, 0, &res, &e), -ENOTCONN);
	vpmu_client_close(c);
	fake_stop(&f);

	/* a daemon that never answers but never stops sending either: the
	 * deadline still holds (the libvirt hook promises 2 s) */
	struct canned flood[] = { { .method = "status", .act = ACT_FLOOD } };
	fake_start(&f, flood, 1);
	connect_ok(&f, &c);
	t0 = vpmu_client_now_usec();
	assert_int_equal(vpmu_client_call(c, "status", NULL, t0 + 200000, &res, &e), -ETIMEDOUT);
	assert_true(vpmu_client_now_usec() - t0 < 1500000);
	vpmu_client_close(c);
	fake_stop(&f);

	/* a daemon that accepts but never says hello */
	fake_start(&f, mute, 1);
	t0 = vpmu_client_now_usec();
	assert_int_equal(vpmu_client_connect(f.path, NULL, t0 + 200000, &c, &e), -ETIMEDOUT);
	assert_true(vpmu_client_now_usec() - t0 < 1500000);
	fake_stop(&f);
}

static void test_transport_failures(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "status", .times = 1, .act = ACT_RAW_CLOSE, .raw = "{\"id\":1,\"resu" },
		{ .method = "status", .times = 1, .act = ACT_RAW_CLOSE, .raw = "" },
		{ .method = "status", .times = 1, .act = ACT_HUGE },
		{ .method = "status", .times = 1, .act = ACT_RAW, .raw = "this is not json\n" },
		{ .method = "status", .times = 1, .act = ACT_RAW, .raw = "{\"id\":99,\"result\":{}}\n" },
		{ .method = "status", .times = 1, .act = ACT_RAW, .raw = "{\"id\":1,\"result\":[]}\n" },
	};
	static const int want[] = { -EPROTO, -ECONNRESET, -EMSGSIZE, -EPROTO, -EPROTO, -EPROTO };
	struct fake f;

	fake_start(&f, cn, 6);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct vpmu_client *c;
		struct vpmu_client_error e;
		struct json_object *res = NULL;
		int r;

		connect_ok(&f, &c);
		r = vpmu_client_call(c, "status", NULL, vpmu_client_now_usec() + 10000000, &res, &e);
		if (r != want[i])
			fail_msg("case %zu: got %d (%s), want %d", i, r, e.message, want[i]);
		assert_null(res);
		assert_false(e.remote);
		assert_true(e.message[0] != 0);
		assert_int_equal(vpmu_client_call(c, "status", NULL, 0, &res, &e), -ENOTCONN);
		vpmu_client_close(c);
	}
	fake_stop(&f);
}

#define EV(gen) "{\"event\":\"plan\",\"generation\":" #gen ",\"reason\":\"r" #gen "\"}\n"

static void test_watch(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "watch", .result = "{\"generation\":47}", .after = EV(48) EV(49) },
		/* an event that overtakes an answer is kept for next_event */
		{ .method = "status", .result = "{}", .before = EV(50) "{\"event\":\"newfangled\",\"generation\":50}\n" },
	};
	struct fake f;
	struct vpmu_client *c;
	struct vpmu_client_error e;
	struct vpmu_client_event ev;
	struct json_object *res;
	uint64_t gen = 0, dl = vpmu_client_now_usec() + 5000000;

	fake_start(&f, cn, 2);
	connect_ok(&f, &c);
	assert_int_equal(vpmu_client_watch(c, dl, &gen, &e), 0);
	assert_int_equal(gen, 47);
	for (uint64_t g = 48; g <= 49; g++) {
		assert_int_equal(vpmu_client_next_event(c, dl, &ev, &e), 0);
		assert_string_equal(ev.name, "plan");
		assert_int_equal(ev.generation, g);
		assert_non_null(ev.body);
		vpmu_client_event_fini(&ev);
	}
	/* nothing more: a timeout, and the connection stays usable */
	assert_int_equal(vpmu_client_next_event(c, vpmu_client_now_usec() + 100000, &ev, &e), -ETIMEDOUT);
	assert_int_equal(vpmu_client_call(c, "status", NULL, dl, &res, &e), 0);
	json_object_put(res);
	assert_int_equal(vpmu_client_next_event(c, dl, &ev, &e), 0);
	assert_int_equal(ev.generation, 50);
	assert_string_equal(ev.name, "plan");
	vpmu_client_event_fini(&ev);
	assert_int_equal(vpmu_client_next_event(c, dl, &ev, &e), 0);
	assert_string_equal(ev.name, "newfangled");
	vpmu_client_event_fini(&ev);
	vpmu_client_close(c);
	fake_stop(&f);
}

/* ------------------------------------------------------ executables */

struct proc {
	int rc;
	char out[65536], err[65536];
	uint64_t usec;
};

static void slurp(int fd, char *buf, size_t len)
{
	ssize_t n;

	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, len - 1);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
}

/* Runs argv with VPMU_SOCKET=sock (unset when NULL), stdin from 'in'. */
static void run(struct proc *p, const char *sock, const char *in, char *const argv[])
{
	char on[] = "/tmp/vpmu-test-out.XXXXXX", en[] = "/tmp/vpmu-test-err.XXXXXX", inn[] = "/tmp/vpmu-test-in.XXXXXX";
	int ofd = mkstemp(on), efd = mkstemp(en), ifd = mkstemp(inn);
	uint64_t t0 = vpmu_client_now_usec();
	int status;

	assert_true(ofd >= 0 && efd >= 0 && ifd >= 0);
	unlink(on), unlink(en), unlink(inn);
	if (in)
		assert_int_equal(write(ifd, in, strlen(in)), (ssize_t)strlen(in));
	lseek(ifd, 0, SEEK_SET);
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(ifd, 0), dup2(ofd, 1), dup2(efd, 2);
		if (sock)
			setenv(VPMU_CLIENT_SOCKET_ENV, sock, 1);
		else
			unsetenv(VPMU_CLIENT_SOCKET_ENV);
		execv(argv[0], argv);
		_exit(127);
	}
	close(ifd);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	p->usec = vpmu_client_now_usec() - t0;
	p->rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	slurp(ofd, p->out, sizeof(p->out));
	slurp(efd, p->err, sizeof(p->err));
}

static const char *build_path(const char *rel, char *buf, size_t len)
{
	const char *b = getenv("VPMU_BUILD_DIR");

	if (!b)
		fail_msg("VPMU_BUILD_DIR is not set (run through ctest)");
	snprintf(buf, len, "%s/%s", b ? b : ".", rel);
	if (access(buf, X_OK))
		fail_msg("%s is not built", buf);
	return buf;
}

#define CTL(...)                                                                              \
	do {                                                                                  \
		char exe_[512];                                                               \
		char *argv_[] = { (char *)build_path("client/vpmuctl", exe_, sizeof(exe_)), __VA_ARGS__, NULL }; \
		run(&p, f.path, NULL, argv_);                                                 \
	} while (0)

static void expect_in(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		fail_msg("\"%s\" not found in:\n%s", needle, hay);
}

static void test_vpmuctl_status_and_errors(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "status",
		  .result = "{\"server\":\"vpmud/0.1.0\",\"protocol\":1,\"backends\":{\"pmu\":\"icelake-8360y\","
			    "\"pmu_source\":\"model\",\"pmu_simulated\":true,\"kvm\":\"advisory\",\"kvm_enforced\":false,"
			    "\"kvm_why\":\"kernel lacks KVM_CAP_VPMU\"},\"generation\":42,\"cpus\":64,\"vms\":3,"
			    "\"sessions\":2,\"watchers\":1,\"uptime_s\":3725}" },
		{ .method = "vm.show",
		  .error = "{\"code\":\"not_found\",\"errno\":2,\"message\":\"no VM named web-1\",\"field\":\"params.name\"}" },
	};
	struct fake f;
	struct proc p;

	fake_start(&f, cn, 2);
	CTL("status");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "vpmud/0.1.0 (protocol 1)");
	expect_in(p.out, "SIMULATED");
	expect_in(p.out, "ADVISORY");
	expect_in(p.out, "kernel lacks KVM_CAP_VPMU");
	expect_in(p.out, "1h 02m");

	CTL("--json", "status");
	assert_int_equal(p.rc, 0);
	struct json_object *o = json_tokener_parse(p.out), *v;
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "generation", &v));
	assert_int_equal(json_object_get_int(v), 42);
	json_object_put(o);

	CTL("vm", "show", "web-1");
	assert_int_equal(p.rc, 1);
	expect_in(p.err, "vpmuctl: not_found: no VM named web-1 (field params.name)");
	assert_string_equal(p.out, "");

	int before = f.connections;
	CTL("vm", "attach", "web", "--gp", "99", "--vcpus", "1", "--cpus", "0");
	assert_int_equal(p.rc, 2);
	expect_in(p.err, "--gp: must be an integer 0..32, got \"99\"");
	CTL("vm", "attach", "web", "--gp", "1", "--vcpus", "1", "--cpus", "0-");
	assert_int_equal(p.rc, 2);
	expect_in(p.err, "--cpus: not a CPU list");
	CTL("vm", "attach", "web", "--gp", "1");
	assert_int_equal(p.rc, 2);
	expect_in(p.err, "--vcpus N --cpus LIST");
	CTL("session", "read", "s", "--count", "3");
	assert_int_equal(p.rc, 2);
	expect_in(p.err, "--count needs --interval");
	CTL("vm", "bind", "web", "--vm-fd", "3");
	assert_int_equal(p.rc, 2);
	CTL("plan", "--cpuz", "1");
	assert_int_equal(p.rc, 2);
	expect_in(p.err, "unknown option '--cpuz'");
	CTL("frobnicate");
	assert_int_equal(p.rc, 2);
	/* usage errors are found before connecting */
	assert_int_equal(f.connections, before);

	CTL("--socket", "/nonexistent/x.sock", "status");
	assert_int_equal(p.rc, 3);
	expect_in(p.err, "/nonexistent/x.sock");
	fake_stop(&f);
}

static void test_vpmuctl_vm_requests(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "vm.attach", .result = "{\"name\":\"web\",\"generation\":43,\"granted\":{\"passthrough_vcpus\":2,\"multiplexed_vcpus\":0}}" },
		{ .method = "vm.bind", .result = "{\"name\":\"web\",\"generation\":44}" },
		{ .method = "vm.update", .result = "{\"name\":\"web\",\"generation\":45}" },
	};
	struct fake f;
	struct proc p;
	struct json_object *pr;

	fake_start(&f, cn, 3);
	CTL("vm", "attach", "web", "--gp", "4", "--fixed", "0x3", "--vcpus", "2", "--cpus", "0-1");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "attached web (generation 43)");
	pr = params_of(&f, 0);
	assert_string_equal(pstr(pr, "name"), "web");
	assert_string_equal(pstr(pr, "gp"), "4");
	assert_string_equal(pstr(pr, "fixed_mask"), "3");
	assert_string_equal(pstr(pr, "vcpu_count"), "2");
	assert_string_equal(pstr(pr, "cpus"), "0-1");
	/* not given: the daemon's configured defaults apply */
	assert_false(has(pr, "priority"));
	assert_false(has(pr, "class"));
	assert_false(has(pr, "owner"));
	json_object_put(pr);

	/* --pid without --vm-fd: attach, then bind (the daemon finds the fd) */
	CTL("vm", "attach", "web", "--priority", "500", "--class", "guaranteed", "--vcpu-cpus", "0;1;0-1", "--pid", "1234");
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 1);
	assert_string_equal(pstr(pr, "priority"), "500");
	assert_string_equal(pstr(pr, "class"), "guaranteed");
	assert_int_equal(json_object_array_length(json_object_object_get(pr, "vcpus")), 3);
	assert_false(has(pr, "owner"));
	json_object_put(pr);
	assert_non_null(strstr(request(&f, 2), "\"vm.bind\""));
	pr = params_of(&f, 2);
	assert_string_equal(pstr(pr, "pid"), "1234");
	assert_false(has(pr, "vm_fd"));
	json_object_put(pr);

	/* both: one attach carrying the owner */
	CTL("vm", "attach", "web", "--vcpus", "1", "--cpus", "1", "--pid", "1234", "--vm-fd", "17");
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 3);
	expect_in(json_object_to_json_string(pr), "\"owner\": { \"pid\": 1234, \"vm_fd\": 17 }");
	json_object_put(pr);

	CTL("vm", "bind", "web", "--pid", "77", "--vm-fd", "5");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "bound to pid 77");
	pr = params_of(&f, 4);
	assert_string_equal(pstr(pr, "vm_fd"), "5");
	json_object_put(pr);

	CTL("vm", "update", "web", "--priority", "900");
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 5);
	assert_string_equal(pstr(pr, "priority"), "900");
	assert_false(has(pr, "gp"));
	json_object_put(pr);
	fake_stop(&f);
}

/* Whether a VM's routes reach the kernel is the VM's own: every view of
 * it says so, and status names the advisory ones. */
static void test_vpmuctl_routes_per_vm(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "status",
		  .result = "{\"server\":\"vpmud/0.1.0\",\"protocol\":1,\"backends\":{\"kvm\":\"model\"},\"vms\":3,"
			    "\"vms_by_routes\":{\"enforced\":0,\"simulated\":1,\"advisory\":2},\"advisory_vms\":[\"db\",\"web\"]}" },
		{ .method = "vm.show",
		  .result = "{\"name\":\"db\",\"flavour\":\"extension\",\"routes\":\"advisory\","
			    "\"routes_why\":\"the VMM handed no route fd\",\"priority\":100,\"owner\":{\"pid\":7,\"vm_fd\":9},\"vcpus\":[]}" },
		{ .method = "vm.list",
		  .result = "{\"vms\":[{\"name\":\"db\",\"priority\":100,\"class\":\"preferred\",\"routes\":\"advisory\","
			    "\"routes_why\":\"the VMM handed no route fd\",\"passthrough_vcpus\":0,\"vcpus\":1},"
			    "{\"name\":\"vm2\",\"priority\":100,\"class\":\"preferred\",\"routes\":\"simulated\",\"passthrough_vcpus\":1,\"vcpus\":1}],"
			    "\"flavour\":\"extension\",\"routes\":\"simulated\"}" },
		{ .method = "plan",
		  .result = "{\"generation\":5,\"flavour\":\"extension\",\"routes\":\"simulated\",\"cpus\":[],\"vms\":["
			    "{\"name\":\"db\",\"routes\":\"advisory\",\"routes_why\":\"the VMM handed no route fd\",\"vcpus\":[]},"
			    "{\"name\":\"vm2\",\"routes\":\"simulated\",\"vcpus\":[]}],\"sessions\":[]}" },
		{ .method = "vm.bind", .result = "{\"name\":\"db\",\"generation\":6,\"routes\":\"advisory\","
						   "\"routes_why\":\"the VMM handed no route fd\"}" },
	};
	struct fake f;
	struct proc p;

	fake_start(&f, cn, 5);
	CTL("status");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "vms           3 (1 simulated, 2 advisory)");
	expect_in(p.out, "advisory vms  db, web: routes not enforced");
	CTL("vm", "show", "db");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "routes      advisory (the VMM handed no route fd)");
	CTL("vm", "list");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "ROUTES");
	expect_in(p.out, "db    100       preferred  1      advisory");
	expect_in(p.out, "vm2   100       preferred  1      simulated");
	CTL("plan");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "  db (routes advisory (the VMM handed no route fd))");
	expect_in(p.out, "  vm2 (routes simulated)");
	CTL("vm", "bind", "db", "--pid", "7");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "  routes: advisory (the VMM handed no route fd)");
	fake_stop(&f);
}

static void test_vpmuctl_plan_and_sessions(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "plan",
		  .result = "{\"generation\":42,\"cpus\":["
			    "{\"cpu\":0,\"guest_gp_mask\":\"0xf\",\"guest_fixed_mask\":\"0x7\",\"host\":[{\"session\":\"prof\",\"event\":\"cycles\",\"counter\":\"gp4\",\"share\":1.0}]},"
			    "{\"cpu\":1,\"guest_gp_mask\":\"0x0\",\"guest_fixed_mask\":\"0x0\",\"host\":[]},"
			    "{\"cpu\":2,\"guest_gp_mask\":\"0x0\",\"guest_fixed_mask\":\"0x0\",\"host\":[]},"
			    "{\"cpu\":3,\"guest_gp_mask\":\"0x0\",\"guest_fixed_mask\":\"0x0\",\"host\":[{\"foreign\":\"nmi_watchdog\",\"event\":\"cycles\",\"counter\":null,\"share\":0.5}]}],"
			    "\"vms\":[{\"name\":\"web-1\",\"vcpus\":[{\"vcpu\":0,\"cpus\":\"0-3\",\"gp\":[\"passthrough\",\"passthrough\",\"multiplexed\",\"disabled\"],"
			    "\"fixed\":[\"passthrough\",\"passthrough\",\"passthrough\"]}]}],"
			    "\"sessions\":[{\"name\":\"prof\",\"events\":[{\"event\":\"cycles\",\"placement\":\"dedicated\",\"share\":1.0}]}]}" },
		{ .method = "session.start", .result = "{\"name\":\"prof\",\"generation\":46,\"events\":[{\"event\":\"cycles\",\"placement\":\"dedicated\",\"share\":1.0}]}" },
		{ .method = "session.read",
		  .result = "{\"name\":\"prof\",\"events\":[{\"event\":\"cycles\",\"counted\":true,\"value\":123456789,"
			    "\"time_enabled\":1000000000,\"time_running\":500000000,\"scaled\":246913578,\"multiplexed\":true,\"placement\":\"multiplexed\"},"
			    "{\"event\":\"cpu/event=0x3c,umask=0x0/u\",\"counted\":false,\"reason\":\"PMU is simulated\",\"value\":987654321}]}" },
	};
	struct fake f;
	struct proc p;
	struct json_object *pr;

	fake_start(&f, cn, 3);
	CTL("plan", "--cpus", "0-3");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "generation 42");
	expect_in(p.out, "prof:cycles@gp4");
	/* CPUs 1 and 2 look alike: one row */
	expect_in(p.out, "\n1-2 ");
	expect_in(p.out, "foreign nmi_watchdog:cycles@mux(0.50)");
	expect_in(p.out, "P P M -");
	expect_in(p.out, "P P P");
	expect_in(p.out, "P passthrough, M multiplexed, - disabled");
	expect_in(p.out, "dedicated");
	pr = params_of(&f, 0);
	assert_string_equal(pstr(pr, "cpus"), "0-3");
	json_object_put(pr);

	CTL("session", "start", "prof", "--events", "cycles,cpu/event=0x3c,umask=0x0/u", "--cpus", "0-1");
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 1);
	struct json_object *evs = json_object_object_get(pr, "events");
	assert_int_equal(json_object_array_length(evs), 2);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(evs, 1)), "cpu/event=0x3c,umask=0x0/u");
	/* the owner is vpmuctl's parent: this test process */
	assert_int_equal(json_object_get_int(json_object_object_get(pr, "owner_pid")), getpid());
	assert_false(has(pr, "priority"));
	json_object_put(pr);

	CTL("session", "read", "prof");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "123456789");
	expect_in(p.out, "246913578");
	expect_in(p.out, "yes");
	expect_in(p.out, "not counted (PMU is simulated)");
	/* the uncounted event's number is never shown */
	assert_null(strstr(p.out, "987654321"));

	CTL("session", "read", "prof", "--interval", "10", "--count", "2");
	assert_int_equal(p.rc, 0);
	/* identical canned readings: every delta is zero */
	expect_in(p.out, "change over the last");
	expect_in(p.out, "not counted (PMU is simulated)");
	assert_null(strstr(p.out, "987654321"));
	fake_stop(&f);
}

static void test_vpmuctl_watch_and_timeout(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "watch", .result = "{\"generation\":47}",
		  .after = "{\"event\":\"plan\",\"generation\":48,\"reason\":\"vm.attach web-2\",\"changes\":[{\"vm\":\"web-1\",\"vcpu\":0,\"gp\":2,\"from\":\"passthrough\",\"to\":\"multiplexed\"}]}\n"
			   "{\"event\":\"plan\",\"generation\":49}\n" },
		{ .method = "status", .act = ACT_SILENT },
	};
	struct fake f;
	struct proc p;

	fake_start(&f, cn, 2);
	CTL("watch", "--count", "2");
	assert_int_equal(p.rc, 0);
	expect_in(p.out, "generation 48: plan: vm.attach web-2");
	expect_in(p.out, "web-1 vcpu 0 gp2: passthrough -> multiplexed");
	expect_in(p.out, "generation 49: plan");

	CTL("--timeout", "0.3", "status");
	assert_int_equal(p.rc, 1);
	expect_in(p.err, "did not answer in time");
	assert_true(p.usec < 3000000);
	fake_stop(&f);
}

/* --------------------------------------------------- the hook executable */

#define GUARANTEED_XML                                                                          \
	"<domain type='kvm'><name>g</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>"    \
	"<metadata><vpmu:pmu xmlns:vpmu='https://vpmu.org/xmlns/libvirt/1' priority='200' "      \
	"class='guaranteed' gp='2' fixed='0x1'/></metadata>"                                    \
	"<vcpu placement='static' cpuset='0-1'>2</vcpu><cputune><vcpupin vcpu='1' cpuset='1'/></cputune>" \
	"</domain>"
#define PLAIN_XML "<domain type='kvm'><name>p</name><uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid><vcpu>1</vcpu></domain>"

static void hook(struct proc *p, const char *sock, const char *name, const char *op, const char *subop,
		 const char *xml)
{
	char exe[512];
	char *argv[] = { (char *)build_path("vpmu-libvirt-hook", exe, sizeof(exe)), (char *)name, (char *)op,
			 (char *)subop, "-", NULL };

	run(p, sock, xml, argv);
}

static void test_hook_fails_open_without_daemon(void **st)
{
	(void)st;
	struct proc p;

	hook(&p, "/nonexistent/vpmud.sock", "g", "prepare", "begin", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
	expect_in(p.err, "vpmud is not running");
	/* well inside libvirt's patience and the hook's own 2 s budget */
	assert_true(p.usec < 1000000);
	hook(&p, "/nonexistent/vpmud.sock", "g", "release", "end", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
}

static void test_hook_against_fake(void **st)
{
	(void)st;
	struct canned cn[] = {
		{ .method = "vm.attach", .times = 1, .result = "{\"name\":\"g\",\"generation\":3}" },
		{ .method = "vm.attach", .times = 1,
		  .error = "{\"code\":\"refused\",\"errno\":28,\"message\":\"CPU 1: 2 of 4 general counters held by priority 500\"}" },
		{ .method = "vm.attach", .times = 1, .error = "{\"code\":\"exists\",\"errno\":17,\"message\":\"g exists\"}" },
		{ .method = "vm.attach", .times = 1, .result = "{\"name\":\"p\",\"generation\":4}" },
		{ .method = "vm.detach", .error = "{\"code\":\"not_found\",\"errno\":2,\"message\":\"no VM named g\"}" },
	};
	struct fake f;
	struct proc p;
	struct json_object *pr, *vcpus;

	fake_start(&f, cn, 5);
	hook(&p, f.path, "g", "prepare", "begin", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 0);
	assert_string_equal(pstr(pr, "name"), "g");
	assert_string_equal(pstr(pr, "priority"), "200");
	assert_string_equal(pstr(pr, "class"), "guaranteed");
	assert_string_equal(pstr(pr, "gp"), "2");
	assert_string_equal(pstr(pr, "fixed_mask"), "1");
	assert_false(has(pr, "owner"));
	/* vCPU 0 on the domain's cpuset, vCPU 1 pinned */
	assert_true(json_object_object_get_ex(pr, "vcpus", &vcpus));
	assert_int_equal(json_object_array_length(vcpus), 2);
	assert_string_equal(pstr(json_object_array_get_idx(vcpus, 0), "cpus"), "0-1");
	assert_string_equal(pstr(json_object_array_get_idx(vcpus, 1), "cpus"), "1");
	json_object_put(pr);

	hook(&p, f.path, "g", "prepare", "begin", GUARANTEED_XML);
	assert_int_equal(p.rc, 1);
	expect_in(p.err, "refusing to start g");
	expect_in(p.err, "CPU 1: 2 of 4 general counters held by priority 500");

	/* prepare again for an attached VM: admitted */
	hook(&p, f.path, "g", "prepare", "begin", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
	assert_null(strstr(p.err, "refus"));

	/* no metadata: the daemon's defaults, not the hook's */
	hook(&p, f.path, "p", "prepare", "begin", PLAIN_XML);
	assert_int_equal(p.rc, 0);
	pr = params_of(&f, 3);
	assert_false(has(pr, "priority"));
	assert_false(has(pr, "class"));
	json_object_put(pr);

	/* the second of stopped/release finds nothing: quietly fine */
	hook(&p, f.path, "g", "release", "end", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
	assert_string_equal(p.err, "");
	expect_in(request(&f, 4), "\"vm.detach\"");
	fake_stop(&f);
}

static void test_hook_slow_daemon_is_bounded(void **st)
{
	(void)st;
	struct canned cn[] = { { .method = "vm.attach", .act = ACT_SILENT } };
	struct fake f;
	struct proc p;

	fake_start(&f, cn, 1);
	hook(&p, f.path, "g", "prepare", "begin", GUARANTEED_XML);
	assert_int_equal(p.rc, 0);
	expect_in(p.err, "did not answer in time");
	assert_true(p.usec >= 1900000);
	assert_true(p.usec < 4000000);
	fake_stop(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_and_result),
		cmocka_unit_test(test_bind_route_fd),
		cmocka_unit_test(test_error_decoding),
		cmocka_unit_test(test_hello_refused_and_bad),
		cmocka_unit_test(test_connect_failures),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_transport_failures),
		cmocka_unit_test(test_watch),
		cmocka_unit_test(test_vpmuctl_status_and_errors),
		cmocka_unit_test(test_vpmuctl_vm_requests),
		cmocka_unit_test(test_vpmuctl_plan_and_sessions),
		cmocka_unit_test(test_vpmuctl_routes_per_vm),
		cmocka_unit_test(test_vpmuctl_watch_and_timeout),
		cmocka_unit_test(test_hook_fails_open_without_daemon),
		cmocka_unit_test(test_hook_against_fake),
		cmocka_unit_test(test_hook_slow_daemon_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
