/* SPDX-License-Identifier: MIT */
#include "vpmu/client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "proto/cleanup.h"
#include "proto/frame.h"
#include "proto/json_fields.h"
#include "proto/proto.h"
#include "proto/response.h"

/* Events kept while a call waits for its answer. A watcher that does not
 * read is not worth unbounded memory: beyond this the oldest are dropped,
 * which the reader sees as a generation gap (docs/protocol.md says to
 * fetch the plan then). */
#define EVENT_QUEUE_MAX 1024

struct queued_event {
	struct queued_event *next;
	struct vpmu_client_event ev;
};

struct vpmu_client {
	int fd;
	bool broken;
	uint64_t next_id;
	struct frame_reader reader;
	char server[128];  /* the hello's version string, cut: it is only shown */
	struct queued_event *head, *tail;
	unsigned int queued;
};

uint64_t vpmu_client_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *vpmu_client_default_socket(void)
{
	const char *env = getenv(VPMU_CLIENT_SOCKET_ENV);

	return env && *env ? env : VPMU_CLIENT_DEFAULT_SOCKET;
}

/* A local failure: fills err (if any) and returns r. */
__attribute__((format(printf, 3, 4)))
static int fail(struct vpmu_client_error *err, int r, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return r;
	memset(err, 0, sizeof(*err));
	err->err = -r;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return r;
}

/* The one way this library says it ran out of memory. */
static int oom(struct vpmu_client_error *err)
{
	return fail(err, -ENOMEM, "out of memory");
}

/* The connection is unusable from now on (lost sync or gone). */
static int broken(struct vpmu_client *c, struct vpmu_client_error *err, int r, const char *what)
{
	c->broken = true;
	return fail(err, r, "%s", what);
}

static int remote(struct vpmu_client_error *err, const struct proto_error *e)
{
	if (err) {
		memset(err, 0, sizeof(*err));
		err->remote = true;
		snprintf(err->code, sizeof(err->code), "%s", proto_errcode_name(e->code));
		err->err = e->err;
		snprintf(err->field, sizeof(err->field), "%s", e->field);
		snprintf(err->message, sizeof(err->message), "%s", e->message);
	}
	return -EREMOTEIO;
}

/* Milliseconds poll() may wait before 'deadline' (0: forever). */
static int poll_timeout(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = vpmu_client_now_usec();
	if (now >= deadline)
		return 0;
	/* round up: waking a little after the deadline is better than
	 * spinning on zero-millisecond polls just before it */
	uint64_t ms = (deadline - now + 999) / 1000;
	return ms > 60 * 60 * 1000 ? 60 * 60 * 1000 : (int)ms;
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int t = poll_timeout(deadline);
		int n = poll(&p, 1, t);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 0;
		if (deadline && vpmu_client_now_usec() >= deadline)
			return -ETIMEDOUT;
	}
}

/* One sendmsg, with fd (>= 0) as SCM_RIGHTS: the kernel attaches it to
 * the first bytes, which vpmud pairs with the request they belong to. */
static ssize_t send_with_fd(int sock, const char *buf, size_t len, int fd)
{
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		memset(&control, 0, sizeof(control));
		mh.msg_control = control.space;
		mh.msg_controllen = sizeof(control.space);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

/* Sends the frame; fd (>= 0) rides with its first bytes. */
static int send_all(struct vpmu_client *c, const char *buf, size_t len, int fd, uint64_t deadline,
		    struct vpmu_client_error *err)
{
	while (len) {
		ssize_t n = send_with_fd(c->fd, buf, len, fd);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			int r = wait_fd(c->fd, POLLOUT, deadline);

			if (r == -ETIMEDOUT)
				return broken(c, err, r, "vpmud did not take the request in time");
			if (r < 0)
				return broken(c, err, r, "cannot wait for the socket");
			continue;
		}
		if (n < 0) {
			int e = errno;

			return broken(c, err, e == EPIPE ? -ECONNRESET : -e,
				      e == EPIPE || e == ECONNRESET ? "vpmud closed the connection"
								    : "cannot send the request");
		}
		buf += n;
		len -= (size_t)n;
		fd = -1; /* it went with these bytes */
	}
	return 0;
}

/*
 * Reads until one frame is decoded into *resp. Returns 0, or a failure
 * (the connection is then broken, except for a timeout when 'keep_on_timeout':
 * the reader keeps any partial frame, so waiting again is safe).
 */
static int read_frame(struct vpmu_client *c, uint64_t deadline, bool keep_on_timeout,
		      struct proto_response *resp, struct vpmu_client_error *err)
{
	char buf[65536]; /* one recv's worth: frames are assembled by the reader */

	for (;;) {
		const char *frame;
		size_t len;
		int r = frame_reader_next(&c->reader, &frame, &len);

		if (r == -EMSGSIZE)
			return broken(c, err, -EMSGSIZE, "vpmud sent an answer larger than 16 MiB");
		if (r < 0)
			return broken(c, err, r, "cannot read the answer");
		if (r == 1) {
			r = response_decode(frame, len, resp);
			if (r == -ENOMEM)
				return broken(c, err, r, "out of memory"); /* the frame is lost: no sync */
			if (r < 0)
				return broken(c, err, -EPROTO, "vpmud sent something that is not a protocol message");
			return 0;
		}
		/* A peer that never stops sending (empty lines, events) must not
		 * keep us past the deadline: the hook promises libvirt 2 s. */
		if (deadline && vpmu_client_now_usec() >= deadline) {
			if (keep_on_timeout)
				return fail(err, -ETIMEDOUT, "no event before the deadline");
			return broken(c, err, -ETIMEDOUT, "vpmud did not answer in time");
		}
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			r = wait_fd(c->fd, POLLIN, deadline);
			if (r == -ETIMEDOUT) {
				if (keep_on_timeout)
					return fail(err, r, "no event before the deadline");
				return broken(c, err, r, "vpmud did not answer in time");
			}
			if (r < 0)
				return broken(c, err, r, "cannot wait for the socket");
			continue;
		}
		if (n < 0)
			return broken(c, err, -errno, "cannot read from vpmud");
		if (n == 0)
			return frame_reader_pending(&c->reader)
				       ? broken(c, err, -EPROTO, "vpmud closed the connection in the middle of a message")
				       : broken(c, err, -ECONNRESET, "vpmud closed the connection");
		r = frame_reader_feed(&c->reader, buf, (size_t)n);
		if (r == -ENOMEM)
			return broken(c, err, r, "out of memory");
		/* -EMSGSIZE: frames completed before the oversized one are
		 * still returned; frame_reader_next reports it in turn */
	}
}

static void queue_event(struct vpmu_client *c, struct proto_response *resp)
{
	struct queued_event *q;

	if (c->queued >= EVENT_QUEUE_MAX) {
		q = c->head;
		c->head = q->next;
		if (!c->head)
			c->tail = NULL;
		c->queued--;
		vpmu_client_event_fini(&q->ev);
		free(q);
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return; /* lost like an overflow; the generation gap shows it */
	snprintf(q->ev.name, sizeof(q->ev.name), "%s", resp->event);
	q->ev.generation = resp->generation;
	q->ev.body = TAKE_PTR(resp->body);
	if (c->tail)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->queued++;
}

/* vpmu_client_call, with fd (>= 0) sent along with the request. */
static int call_fd(struct vpmu_client *c, const char *method, struct json_object *params, int fd,
		   uint64_t deadline, struct json_object **result, struct vpmu_client_error *err)
{
	_cleanup_json_ struct json_object *req = NULL;
	_cleanup_free_ char *frame = NULL;
	size_t len = 0;
	uint64_t id;
	int r;

	if (!c || !method || !result || (params && !json_object_is_type(params, json_type_object)))
		return fail(err, -EINVAL, "invalid call");
	*result = NULL;
	if (c->broken)
		return fail(err, -ENOTCONN, "the connection to vpmud failed earlier");
	id = c->next_id++;
	req = json_object_new_object();
	if (!req || !json_fields_put(req, "id", json_object_new_uint64(id)) ||
	    !json_fields_put(req, "method", json_object_new_string(method)) ||
	    (params && !json_fields_put(req, "params", json_object_get(params))))
		return oom(err);
	r = frame_encode(req, PROTO_MAX_REQUEST, &frame, &len);
	if (r == -EMSGSIZE)
		return fail(err, r, "the request exceeds the protocol's %u-byte limit", PROTO_MAX_REQUEST);
	if (r < 0)
		return fail(err, r, "cannot encode the request");
	r = send_all(c, frame, len, fd, deadline, err);
	if (r < 0)
		return r;
	for (;;) {
		_cleanup_(response_fini) struct proto_response resp = { 0 };

		r = read_frame(c, deadline, false, &resp, err);
		if (r < 0)
			return r;
		if (resp.kind == PROTO_RESP_EVENT) {
			queue_event(c, &resp);
			if (deadline && vpmu_client_now_usec() >= deadline)
				return broken(c, err, -ETIMEDOUT, "vpmud did not answer in time");
			continue;
		}
		/* "id": null is the server failing to read our request (too
		 * large, garbled): it is still the answer to it */
		if (resp.id_known && resp.id != id)
			return broken(c, err, -EPROTO, "vpmud answered another request");
		if (resp.kind == PROTO_RESP_ERROR)
			return remote(err, &resp.error);
		*result = TAKE_PTR(resp.body);
		return 0;
	}
}

int vpmu_client_call(struct vpmu_client *c, const char *method, struct json_object *params,
		     uint64_t deadline, struct json_object **result, struct vpmu_client_error *err)
{
	return call_fd(c, method, params, -1, deadline, result, err);
}

int vpmu_client_vm_bind_route_fd(struct vpmu_client *c, const char *name, pid_t pid, int route_fd,
				 uint64_t deadline, struct json_object **result, struct vpmu_client_error *err)
{
	struct proto_request req = { .method = PROTO_M_VM_BIND };
	struct proto_error pe;
	_cleanup_json_ struct json_object *params = NULL;

	if (!c || !name || !result)
		return fail(err, -EINVAL, "invalid call");
	*result = NULL;
	/* a closed descriptor would send the request without one: vpmud
	 * would refuse it, but the caller's mistake is local */
	if (route_fd < 0 || fcntl(route_fd, F_GETFD) < 0)
		return fail(err, -EBADF, "route fd %d is not an open descriptor", route_fd);
	if (strlen(name) > PROTO_NAME_MAX)
		return fail(err, -EINVAL, "VM name longer than %d characters", PROTO_NAME_MAX);
	memcpy(req.u.vm_bind.name, name, strlen(name) + 1);
	req.u.vm_bind.pid = pid;
	req.u.vm_bind.route_fd = true;
	/* CPU numbers play no part in vm.bind: any bound will do */
	if (proto_request_validate(&req, CPULIST_MAX_CPUS, &pe) < 0)
		return fail(err, -EINVAL, "%s", pe.message);
	if (!(params = proto_request_encode_params(&req, NULL)))
		return oom(err);
	return call_fd(c, "vm.bind", params, route_fd, deadline, result, err);
}

/* Connects c's socket to path; the deadline bounds a full backlog. */
static int connect_socket(struct vpmu_client *c, const char *path, uint64_t deadline, struct vpmu_client_error *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(sa.sun_path))
		return fail(err, -ENAMETOOLONG, "socket path %s is longer than %zu bytes", path,
			    sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		int e = errno;

		return fail(err, -e, "cannot create a socket: %s", strerror(e));
	}
	for (;;) {
		int r;

		if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		r = -errno;
		if (r == -EINTR)
			continue;
		/* a non-blocking Unix connect reports a full backlog as EAGAIN
		 * and cannot be polled for completion: retry until the deadline */
		if (r == -EAGAIN && (!deadline || vpmu_client_now_usec() < deadline)) {
			usleep(5000);
			continue;
		}
		if (r == -EAGAIN)
			return fail(err, -ETIMEDOUT, "cannot connect to %s: vpmud's backlog stayed full", path);
		return fail(err, r, "cannot connect to %s: %s", path, strerror(-r));
	}
}

int vpmu_client_connect(const char *path, const char *client_name, uint64_t deadline,
			struct vpmu_client **out, struct vpmu_client_error *err)
{
	_cleanup_(vpmu_client_closep) struct vpmu_client *c = NULL;
	_cleanup_json_ struct json_object *params = NULL, *res = NULL;
	struct proto_request hello = { .method = PROTO_M_HELLO, .u.hello.protocol = VPMU_CLIENT_PROTOCOL };
	struct proto_error pe;
	uint32_t proto = 0;
	int r;

	if (!out)
		return fail(err, -EINVAL, "invalid call");
	*out = NULL;
	if (!path)
		path = vpmu_client_default_socket();
	if (!*path)
		return fail(err, -EINVAL, "empty socket path");
	if (client_name && strlen(client_name) > PROTO_CLIENT_MAX)
		return fail(err, -EINVAL, "client name longer than %d characters", PROTO_CLIENT_MAX);
	c = calloc(1, sizeof(*c));
	if (!c)
		return oom(err);
	c->fd = -1;
	if (frame_reader_init(&c->reader, PROTO_MAX_RESPONSE) < 0)
		return oom(err);
	if ((r = connect_socket(c, path, deadline, err)) < 0)
		return r;
	if (client_name)
		memcpy(hello.u.hello.client, client_name, strlen(client_name) + 1);
	params = proto_request_encode_params(&hello, NULL);
	if (!params)
		return oom(err);
	r = vpmu_client_call(c, "hello", params, deadline, &res, err);
	if (r < 0)
		return r;
	if (response_hello_result_decode(res, &proto, c->server, sizeof(c->server)) < 0)
		return fail(err, -EPROTO, "%s does not answer like vpmud (bad hello result)", path);
	if (proto_hello_check(VPMU_CLIENT_PROTOCOL, proto, &pe) < 0)
		return fail(err, -EPROTONOSUPPORT, "%s", pe.message);
	*out = TAKE_PTR(c);
	return 0;
}

const char *vpmu_client_server(const struct vpmu_client *c)
{
	return c ? c->server : "";
}

int vpmu_client_watch(struct vpmu_client *c, uint64_t deadline, uint64_t *generation,
		      struct vpmu_client_error *err)
{
	_cleanup_json_ struct json_object *res = NULL;
	struct json_object *g;
	int r = vpmu_client_call(c, "watch", NULL, deadline, &res, err);

	if (r < 0)
		return r;
	if (generation) {
		*generation = 0;
		if (json_object_object_get_ex(res, "generation", &g) && json_object_is_type(g, json_type_int))
			*generation = (uint64_t)json_object_get_int64(g);
	}
	return 0;
}

int vpmu_client_next_event(struct vpmu_client *c, uint64_t deadline, struct vpmu_client_event *ev,
			   struct vpmu_client_error *err)
{
	_cleanup_(response_fini) struct proto_response resp = { 0 };
	int r;

	if (!c || !ev)
		return fail(err, -EINVAL, "invalid call");
	memset(ev, 0, sizeof(*ev));
	if (c->head) {
		struct queued_event *q = c->head;

		c->head = q->next;
		if (!c->head)
			c->tail = NULL;
		c->queued--;
		*ev = q->ev;
		free(q);
		return 0;
	}
	if (c->broken)
		return fail(err, -ENOTCONN, "the connection to vpmud failed earlier");
	r = read_frame(c, deadline, true, &resp, err);
	if (r < 0)
		return r;
	if (resp.kind != PROTO_RESP_EVENT)
		return broken(c, err, -EPROTO, "vpmud sent an answer to no request");
	snprintf(ev->name, sizeof(ev->name), "%s", resp.event);
	ev->generation = resp.generation;
	ev->body = TAKE_PTR(resp.body);
	return 0;
}

void vpmu_client_event_fini(struct vpmu_client_event *ev)
{
	if (!ev)
		return;
	json_object_put(ev->body);
	ev->body = NULL;
}

int vpmu_client_fd(const struct vpmu_client *c)
{
	return c ? c->fd : -EINVAL;
}

void vpmu_client_close(struct vpmu_client *c)
{
	if (!c)
		return;
	while (c->head) {
		struct queued_event *q = c->head;

		c->head = q->next;
		vpmu_client_event_fini(&q->ev);
		free(q);
	}
	if (c->fd >= 0)
		close(c->fd);
	frame_reader_fini(&c->reader);
	free(c);
}
