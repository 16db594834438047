/* SPDX-License-Identifier: MIT */
#include "doors/server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "base/log.h"
#include "doors/json_door.h"
#include "proto/cleanup.h"
#include "proto/frame.h"
#include "proto/response.h"

/* A watcher that does not read its events is cut off when this much waits
 * for it; replies may add one more maximal response on top. */
#define SERVER_MAX_EVENT_BACKLOG (8u << 20)
#define SERVER_MAX_BACKLOG (SERVER_MAX_EVENT_BACKLOG + 2 * PROTO_MAX_RESPONSE)
/* An output buffer this large is given back once drained: one big plan
 * should not stay resident for the life of the connection. */
#define SERVER_KEEP_BUFFER (64u << 10)
/* Descriptor messages a client may have sent ahead of the end of their
 * request. A request takes at most one: a client with more waiting is not
 * pairing them with requests, and is cut off before they fill our table. */
#define SERVER_MAX_PENDING_FDS 4
/* Room for the descriptors of one message: more than one is refused, but
 * only room for several tells "two" from "vpmud could not take one". */
#define SERVER_CMSG_FDS 4

/* What came with one message's control data. */
enum fd_problem {
	FD_ONE,        /* one descriptor: a request may take it */
	FD_MANY,       /* several (or more than there was room for): all closed */
	FD_LOST,       /* the kernel could not hand them to vpmud (its fd table full) */
	FD_REFUSED,    /* from a caller who may not hand any: the kernel dropped them */
};

/*
 * A message's descriptor, waiting for the end of the request it came with.
 * A recvmsg never returns bytes past the message that carried descriptors,
 * so they belong to the request line that holds the last byte read with
 * them (docs/protocol.md: on any of the frame's sendmsg calls before its
 * newline).
 */
struct pending_fd {
	int fd;                /* -1 once closed for a problem */
	enum fd_problem problem;
	uint64_t line;         /* request line (count of newlines before it) */
};

struct conn {
	struct server *srv;
	int fd;
	sd_event_source *src;
	struct frame_reader reader;
	struct json_door_text out;
	size_t out_off;       /* bytes of out already sent */
	struct ucred cred;
	gid_t *groups;        /* supplementary groups, from the kernel with the connection */
	size_t n_groups;
	struct broker_conn *bconn;
	bool hello_done;
	char client[PROTO_CLIENT_MAX + 1];  /* from hello: the lease origin */
	bool watching;
	uint64_t sub_id;
	struct pending_fd fds[SERVER_MAX_PENDING_FDS]; /* oldest first */
	unsigned n_fds;
	uint64_t lines;       /* newlines read: the number of the line being read */
	bool closing;         /* flush what is queued, then close */
	bool dead;            /* cut off: freed from a deferred source */
	sd_event_source *reaper;
	struct conn *next, *prev;
};

struct server {
	sd_event *event;
	struct broker *broker;
	const struct config *cfg;
	int listen_fd;
	bool owns_path;
	char path[108];
	sd_event_source *listen_src;
	struct conn *conns;
	unsigned n_conns;
	unsigned max_cpus;
	/* The last event as a frame: rendered once, queued to every watcher. */
	struct json_door_text event_frame;
	uint64_t event_seq;
	bool event_ok;
};

static size_t pending(const struct conn *c)
{
	return c->out.len - c->out_off;
}

static void close_pending_fds(struct conn *c)
{
	for (unsigned i = 0; i < c->n_fds; i++)
		if (c->fds[i].fd >= 0)
			close(c->fds[i].fd);
	c->n_fds = 0;
}

static void conn_free(struct conn *c)
{
	struct server *s = c->srv;
	if (c->watching)
		broker_unsubscribe(s->broker, c->sub_id);
	/* What this client made stays (socket leases do not follow it); the
	 * broker refuses whatever still arrives for it. */
	broker_conn_close(c->bconn, NULL);
	broker_conn_unref(c->bconn);
	sd_event_source_disable_unref(c->reaper);
	sd_event_source_disable_unref(c->src);
	close(c->fd);
	close_pending_fds(c);
	frame_reader_fini(&c->reader);
	json_door_text_fini(&c->out);
	free(c->groups);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	free(c);
}

static void update_events(struct conn *c)
{
	if (c->dead)
		return;
	uint32_t ev = c->closing ? 0 : EPOLLIN;
	if (pending(c))
		ev |= EPOLLOUT;
	sd_event_source_set_io_events(c->src, ev);
}

static int on_reap(sd_event_source *src, void *userdata)
{
	(void)src;
	conn_free(userdata);
	return 0;
}

/*
 * Cuts a connection off now: no more events, nothing more sent or read.
 * The memory goes from a deferred source, because this may run inside a
 * broker callback (an event) or while one of its frames is being handled.
 */
static void conn_kill(struct conn *c, const char *why)
{
	if (c->dead)
		return;
	log_warn("client pid %d: %s: disconnecting", (int)c->cred.pid, why);
	c->dead = c->closing = true;
	if (c->watching) {
		broker_unsubscribe(c->srv->broker, c->sub_id);
		c->watching = false;
	}
	json_door_text_truncate(&c->out, 0);
	c->out_off = 0;
	shutdown(c->fd, SHUT_RDWR);
	sd_event_source_set_enabled(c->src, SD_EVENT_OFF);
	if (sd_event_add_defer(c->srv->event, &c->reaper, on_reap, c) < 0)
		log_err("client pid %d: cannot schedule its cleanup", (int)c->cred.pid);
}

/* After queuing: cut off a peer that does not read (events have the
 * smaller allowance). */
static int check_backlog(struct conn *c, bool is_event)
{
	size_t cap = is_event ? SERVER_MAX_EVENT_BACKLOG : SERVER_MAX_BACKLOG;
	if (pending(c) <= cap)
		return 0;
	char why[96];
	snprintf(why, sizeof(why), "it does not read what it is sent (%zu bytes queued)", pending(c));
	conn_kill(c, why);
	return -ENOBUFS;
}

/* Queues one small frame built with json-c; takes ownership of obj. */
static int send_obj(struct conn *c, struct json_object *obj)
{
	char *frame;
	size_t len;
	if (!obj)
		return -ENOMEM;
	if (c->dead) {
		json_object_put(obj);
		return -ECONNRESET;
	}
	int r = frame_encode(obj, PROTO_MAX_RESPONSE, &frame, &len);
	json_object_put(obj);
	if (r < 0)
		return r;
	r = json_door_text_append(&c->out, frame, len);
	free(frame);
	if (r < 0) {
		json_door_text_truncate(&c->out, c->out.len);
		return r;
	}
	if ((r = check_backlog(c, false)) < 0)
		return r;
	update_events(c);
	return 0;
}

static void send_error(struct conn *c, bool id_known, uint64_t id, const struct proto_error *err)
{
	send_obj(c, response_error(id_known, id, err));
}

/* The event as a frame, once per event whatever the number of watchers. */
static const struct json_door_text *event_frame(struct server *s, const struct broker_event *ev)
{
	if (s->event_seq != ev->seq || !s->event_frame.data) {
		json_door_text_truncate(&s->event_frame, 0);
		s->event_frame.max = PROTO_MAX_RESPONSE;
		s->event_ok = json_door_event(ev, &s->event_frame) == 0;
		s->event_frame.max = 0;
		s->event_ok = s->event_ok && json_door_text_append(&s->event_frame, "\n", 1) == 0;
		s->event_seq = ev->seq;
		if (!s->event_ok)
			log_err("an event (%s) could not be rendered for watchers: %s", ev->reason ? ev->reason : "",
				strerror(-(s->event_frame.error ? s->event_frame.error : ENOMEM)));
	}
	return s->event_ok ? &s->event_frame : NULL;
}

static void on_plan_event(const struct broker_event *ev, void *userdata)
{
	struct conn *c = userdata;
	const struct json_door_text *f = event_frame(c->srv, ev);
	if (!f || c->dead || c->closing)
		return;
	if (json_door_text_append(&c->out, f->data, f->len) < 0) {
		json_door_text_truncate(&c->out, c->out.len);
		return;
	}
	if (check_backlog(c, true) == 0)
		update_events(c);
}

/*
 * Renders the result straight into the output, framed; a result too large
 * to send still gets an answer. A change tells watchers (this client may be
 * one) before it returns, and they hear it before the answer, as the
 * protocol promises: its (small) result is rendered aside, then queued.
 */
static void run_request(struct conn *c, const struct broker_caller *caller, const struct proto_request *req,
			int fd)
{
	_cleanup_close_ int route_fd = fd;
	struct proto_error err = {0};
	char head[64];
	size_t hn = (size_t)snprintf(head, sizeof(head), "{\"id\":%" PRIu64 ",\"result\":", req->id);
	bool aside = broker_method_right(req->method) != BROKER_RIGHT_ANYONE;
	_cleanup_(json_door_text_fini) struct json_door_text tmp = {0};
	size_t start = c->out.len;
	int r = 0;
	if (aside) {
		tmp.max = PROTO_MAX_RESPONSE - hn - 1;
		r = json_door_result_fd(c->srv->broker, caller, req, TAKE_FD(route_fd), &tmp, &err);
		if (c->dead)
			return;
		start = c->out.len; /* after the events the change queued */
		if (r == 0 && (json_door_text_append(&c->out, head, hn) < 0 ||
			       json_door_text_append(&c->out, tmp.data, tmp.len) < 0))
			/* The change stands (it is durable): say so, or a client
			 * retrying would meet "already attached". */
			r = proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL,
					    "done, but the result could not be sent: out of memory");
	} else if ((r = json_door_text_append(&c->out, head, hn)) == 0) {
		/* The text, its closing brace excluded, is at most the limit. */
		c->out.max = start + PROTO_MAX_RESPONSE - 1;
		r = json_door_result_fd(c->srv->broker, caller, req, TAKE_FD(route_fd), &c->out, &err);
		c->out.max = 0;
	} else {
		proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	}
	if (r == 0 && (r = json_door_text_append(&c->out, "}\n", 2)) < 0)
		proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
	if (r < 0) {
		json_door_text_truncate(&c->out, start);
		if (err.code == PROTO_E_TOO_LARGE)
			proto_error_set(&err, PROTO_E_TOO_LARGE, EMSGSIZE, NULL,
					"the result exceeds %u bytes; ask for less (plan: params.cpus)",
					PROTO_MAX_RESPONSE);
		send_error(c, true, req->id, &err);
		return;
	}
	if (check_backlog(c, false) == 0)
		update_events(c);
}

/*
 * Takes the descriptors that came with request line 'line' (and with the
 * empty lines before it, which carry no request of their own): *fd is the
 * one, or -1 when none came. More than one, or what the kernel truncated,
 * is closed and refused with err.
 */
static int claim_fds(struct conn *c, uint64_t line, int *fd, struct proto_error *err)
{
	_cleanup_close_ int got = -1;
	bool many = false, lost = false, refused = false;

	*fd = -1;
	while (c->n_fds && c->fds[0].line <= line) {
		struct pending_fd p = c->fds[0];

		memmove(c->fds, c->fds + 1, --c->n_fds * sizeof(c->fds[0]));
		lost = lost || p.problem == FD_LOST;
		refused = refused || p.problem == FD_REFUSED;
		/* several in one message, or one message after another */
		many = many || p.problem == FD_MANY || got >= 0;
		if (p.fd >= 0 && got >= 0)
			close(p.fd);
		else if (p.fd >= 0)
			got = p.fd;
	}
	if (refused)
		return proto_error_set(err, PROTO_E_PERMISSION_DENIED, EPERM, "params.route_fd",
				       "vpmud takes descriptors only from root and members of its admin group "
				       "(who may vm.bind); the kernel discarded the one sent; nothing was done");
	if (lost)
		return proto_error_set(err, PROTO_E_INTERNAL, EMFILE, "params.route_fd",
				       "vpmud could not receive the descriptor that came with the request "
				       "(its descriptor table is full); nothing was done");
	if (many)
		return proto_error_set(err, PROTO_E_INVALID_PARAM, EINVAL, "params.route_fd",
				       "more than one descriptor came with the request; all were closed "
				       "(a request takes at most one, the route fd)");
	*fd = TAKE_FD(got);
	return 0;
}

static void handle_frame(struct conn *c, const char *frame, size_t len, uint64_t line)
{
	struct server *s = c->srv;
	struct proto_request req;
	struct proto_error err = {0}, fd_err = {0};
	bool id_known = false;
	uint64_t id = 0;
	_cleanup_close_ int fd = -1;
	/* taken before anything can fail: a refused request's descriptor is
	 * closed with it, never left for the next one */
	int fr = claim_fds(c, line, &fd, &fd_err);

	memset(&req, 0, sizeof(req));
	if (proto_request_decode(frame, len, s->max_cpus, &req, &id_known, &id, &err) < 0) {
		send_error(c, id_known, id, &err);
		proto_request_fini(&req);
		return;
	}
	if (fr < 0 || json_door_check_fd(&req, fd, &fd_err) < 0) {
		send_error(c, true, req.id, &fd_err);
		proto_request_fini(&req);
		return;
	}
	if (req.method == PROTO_M_HELLO) {
		if (req.u.hello.protocol != PROTO_VERSION) {
			proto_error_set(&err, PROTO_E_UNSUPPORTED_VERSION, EPROTONOSUPPORT, "params.protocol",
					"this vpmud speaks protocol %d, the client asked for %u", PROTO_VERSION,
					req.u.hello.protocol);
			send_error(c, true, req.id, &err);
		} else {
			c->hello_done = true;
			snprintf(c->client, sizeof(c->client), "%s", req.u.hello.client);
			send_obj(c, response_result(req.id, response_hello_result("vpmud/" VPMU_VERSION)));
		}
		proto_request_fini(&req);
		return;
	}
	if (!c->hello_done) {
		proto_error_set(&err, PROTO_E_BAD_REQUEST, EPROTO, "method", "the first request must be hello, got %s",
				proto_method_name(req.method));
		send_error(c, true, req.id, &err);
		proto_request_fini(&req);
		return;
	}
	if (req.method == PROTO_M_WATCH) {
		if (!c->watching) {
			if (broker_subscribe(s->broker, on_plan_event, c, &c->sub_id) < 0) {
				proto_error_set(&err, PROTO_E_INTERNAL, ENOMEM, NULL, "out of memory");
				send_error(c, true, req.id, &err);
				proto_request_fini(&req);
				return;
			}
			c->watching = true;
		}
		struct json_object *r = json_object_new_object();
		/* What the routes of the events to come mean, and whether they hold. */
		if (r) {
			json_object_object_add(r, "generation", json_object_new_uint64(broker_generation(s->broker)));
			json_object_object_add(r, "flavour",
					       json_object_new_string(broker_flavour_name(broker_flavour(s->broker))));
			json_object_object_add(r, "routes", json_object_new_string(broker_routes_kind(s->broker)));
		}
		send_obj(c, r ? response_result(req.id, r) : NULL);
		proto_request_fini(&req);
		return;
	}
	/* Who asks, as the kernel says; the broker decides what it may do. */
	struct broker_caller caller = { .door = BROKER_DOOR_SOCKET, .uid = c->cred.uid, .gid = c->cred.gid,
					.pid = c->cred.pid, .groups = c->groups, .n_groups = c->n_groups,
					.origin = c->client[0] ? c->client : NULL, .conn = c->bconn };
	run_request(c, &caller, &req, TAKE_FD(fd));
	proto_request_fini(&req);
}

/* Sends what it can; false when the connection is gone. */
static bool flush_out(struct conn *c)
{
	ssize_t n = send(c->fd, c->out.data + c->out_off, pending(c), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		return false;
	if (n > 0)
		c->out_off += (size_t)n;
	if (pending(c) == 0) {
		c->out_off = 0;
		if (c->out.cap > SERVER_KEEP_BUFFER)
			json_door_text_fini(&c->out);
		else
			json_door_text_truncate(&c->out, 0);
	} else if (c->out_off > c->out.len / 2) {
		memmove(c->out.data, c->out.data + c->out_off, pending(c));
		json_door_text_truncate(&c->out, pending(c));
		c->out_off = 0;
	}
	return true;
}

/*
 * Keeps what one recvmsg brought besides n bytes of buf: its descriptors,
 * as one pending entry of the request line that holds its last byte.
 * -EMFILE (everything closed) when too many wait already.
 */
static bool may_hand_fds(const struct conn *c)
{
	struct broker_caller caller = { .door = BROKER_DOOR_SOCKET, .uid = c->cred.uid, .gid = c->cred.gid,
					.pid = c->cred.pid, .groups = c->groups, .n_groups = c->n_groups };
	return broker_caller_is_admin(c->srv->broker, &caller);
}

static int keep_fds(struct conn *c, const struct msghdr *mh, const char *buf, size_t n)
{
	int fds[SERVER_CMSG_FDS];
	unsigned got = 0;
	bool truncated = mh->msg_flags & MSG_CTRUNC;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR((struct msghdr *)mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && got < SERVER_CMSG_FDS; i++)
			memcpy(&fds[got++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
	}
	if (!got && !truncated)
		return 0;
	/* No room offered: a caller who may not hand descriptors (the
	 * kernel dropped them). Room left and still truncated: the kernel
	 * could not install them (our table is full); a full room: the
	 * client sent too many. */
	enum fd_problem problem = !mh->msg_control			 ? FD_REFUSED
				  : truncated && got < SERVER_CMSG_FDS ? FD_LOST
				  : truncated || got > 1		 ? FD_MANY
									 : FD_ONE;
	if (problem != FD_ONE || c->n_fds == SERVER_MAX_PENDING_FDS) {
		for (unsigned i = 0; i < got; i++)
			close(fds[i]);
		fds[0] = -1;
	}
	if (c->n_fds == SERVER_MAX_PENDING_FDS) {
		close_pending_fds(c);
		return -EMFILE;
	}
	uint64_t line = c->lines;
	for (size_t i = 0; n && i < n - 1; i++)
		line += buf[i] == '\n';
	c->fds[c->n_fds++] = (struct pending_fd){ .fd = fds[0], .problem = problem, .line = line };
	return 0;
}

/*
 * Feeds n bytes line by line, so that each request is handled knowing its
 * line number (the descriptors it came with). Returns 0, or the reader's
 * -EMSGSIZE / -ENOMEM.
 */
static int read_frames(struct conn *c, const char *buf, size_t n)
{
	size_t off = 0;

	while (off < n && !c->closing) {
		const char *nl = memchr(buf + off, '\n', n - off);
		size_t seg = nl ? (size_t)(nl - (buf + off)) + 1 : n - off;
		int fr = frame_reader_feed(&c->reader, buf + off, seg);
		const char *frame;
		size_t len;
		int r;

		off += seg;
		/* a segment ends at the first newline: one frame at most */
		while ((r = frame_reader_next(&c->reader, &frame, &len)) == 1) {
			handle_frame(c, frame, len, c->lines);
			if (c->closing)
				break;
		}
		if (nl)
			c->lines++;
		if (fr < 0)
			return fr;
		if (r < 0)
			return r;
	}
	return 0;
}

static int on_conn(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct conn *c = userdata;
	(void)src;
	if (c->dead)
		return 0;

	if (revents & EPOLLOUT && pending(c) && !flush_out(c)) {
		conn_free(c);
		return 0;
	}
	if (c->closing && pending(c) == 0) {
		conn_free(c);
		return 0;
	}
	if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR) && !c->closing) {
		char buf[16384];
		union {
			struct cmsghdr align;
			char space[CMSG_SPACE(SERVER_CMSG_FDS * sizeof(int))];
		} control;
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		/* Only a caller who may bind (root, the admin group) may hand
		 * us descriptors. Anyone else's are refused by the kernel
		 * (MSG_CTRUNC, no control room): taking them in and closing
		 * them would run the file's flush in vpmud's name, and a FUSE
		 * file whose server never answers would hang the loop. */
		bool takes_fds = may_hand_fds(c);
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = takes_fds ? control.space : NULL,
				     .msg_controllen = takes_fds ? sizeof(control.space) : 0 };
		/* close-on-exec from the start: vpmud runs helpers */
		ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0 && keep_fds(c, &mh, buf, (size_t)n) < 0) {
			struct proto_error err = {0};
			proto_error_set(&err, PROTO_E_BAD_REQUEST, EPROTO, NULL,
					"more than %d descriptor messages sent ahead of the end of their request; "
					"closing the connection", SERVER_MAX_PENDING_FDS);
			send_error(c, false, 0, &err);
			c->closing = true;
			update_events(c);
			return 0;
		}
		if (n == 0 && pending(c)) {
			/* The peer is done sending (half-close): answer what it
			 * asked before closing. */
			c->closing = true;
			update_events(c);
			return 0;
		}
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			conn_free(c);
			return 0;
		}
		if (n > 0) {
			int r = read_frames(c, buf, (size_t)n);
			if (c->dead)
				return 0;
			if (r == -EMSGSIZE) {
				struct proto_error err = {0};
				proto_error_set(&err, PROTO_E_TOO_LARGE, EMSGSIZE, NULL,
						"a request frame exceeds %u bytes; closing the connection",
						PROTO_MAX_REQUEST);
				send_error(c, false, 0, &err);
				c->closing = true;
			} else if (r < 0) {
				conn_free(c);
				return 0;
			}
		}
	}
	update_events(c);
	return 0;
}

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

/* The peer's supplementary groups as the kernel took them at connect, as
 * the credentials are: nothing a reused pid could change. */
static int peer_groups(int fd, gid_t **out, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	for (;;) {
		_cleanup_free_ gid_t *g = malloc(len ? len : sizeof(gid_t));
		if (!g)
			return -ENOMEM;
		socklen_t got = len;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &got) == 0) {
			*out = TAKE_PTR(g);
			*n = got / sizeof(gid_t);
			return 0;
		}
		/* ERANGE: got says how much room it needs. */
		if (errno != ERANGE || got <= len)
			return -errno;
		len = got;
	}
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct server *s = userdata;
	(void)src;
	(void)revents;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0)
		return 0;
	struct ucred cr;
	socklen_t l = sizeof(cr);
	if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0) {
		close(cfd);
		return 0;
	}
	if (s->n_conns >= s->cfg->max_clients) {
		static const char msg[] =
			"{\"id\":null,\"error\":{\"code\":\"busy\",\"errno\":16,\"message\":\"too many clients\"}}\n";
		if (send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* nothing more to tell a client we are turning away */
		}
		close(cfd);
		log_warn("refused a connection from pid %d: %u clients already (max_clients)", (int)cr.pid, s->n_conns);
		return 0;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c || frame_reader_init(&c->reader, PROTO_MAX_REQUEST) < 0) {
		free(c);
		close(cfd);
		return 0;
	}
	c->srv = s;
	c->fd = cfd;
	c->cred = cr;
	/* Without its groups a peer is judged by uid and primary group only. */
	if (peer_groups(cfd, &c->groups, &c->n_groups) < 0)
		c->n_groups = 0;
	if (broker_conn_open(s->broker, false, &c->bconn) < 0 ||
	    sd_event_add_io(s->event, &c->src, cfd, EPOLLIN, on_conn, c) < 0) {
		broker_conn_unref(c->bconn);
		free(c->groups);
		frame_reader_fini(&c->reader);
		free(c);
		close(cfd);
		return 0;
	}
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	return 0;
}

int server_new(const struct server_opts *o, struct server **out, char *why, size_t whylen)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->event = o->event;
	s->broker = o->broker;
	s->cfg = o->cfg;
	s->max_cpus = o->max_cpus;
	s->listen_fd = o->listen_fd;
	if (s->listen_fd < 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (strlen(o->cfg->socket) >= sizeof(sa.sun_path)) {
			snprintf(why, whylen, "socket path %s is too long", o->cfg->socket);
			free(s);
			return -ENAMETOOLONG;
		}
		strcpy(sa.sun_path, o->cfg->socket);
		snprintf(s->path, sizeof(s->path), "%s", o->cfg->socket);
		s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s->listen_fd < 0) {
			int e = errno;
			snprintf(why, whylen, "socket: %s", strerror(e));
			free(s);
			return -e;
		}
		/* A socket file left by a crashed vpmud is stale; a live one answers. */
		struct stat st;
		if (lstat(sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
			int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
				close(probe);
				close(s->listen_fd);
				snprintf(why, whylen, "another vpmud already listens on %s", sa.sun_path);
				free(s);
				return -EADDRINUSE;
			}
			if (probe >= 0)
				close(probe);
			unlink(sa.sun_path);
		}
		/* 0666: anyone may connect and read; what each peer may change
		 * is decided per request from its credentials. */
		mode_t old = umask(0111);
		int r = bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa));
		int e = errno;
		umask(old);
		if (r < 0 || listen(s->listen_fd, 128) < 0) {
			e = r < 0 ? e : errno;
			snprintf(why, whylen, "cannot listen on %s: %s", sa.sun_path, strerror(e));
			close(s->listen_fd);
			free(s);
			return -e;
		}
		struct group grp, *gr = NULL;
		char buf[4096];
		if (getgrnam_r(o->cfg->admin_group, &grp, buf, sizeof(buf), &gr) == 0 && gr &&
		    chown(sa.sun_path, (uid_t)-1, gr->gr_gid) < 0)
			log_warn("cannot give %s to group %s: %s", sa.sun_path, o->cfg->admin_group, strerror(errno));
		s->owns_path = true;
	}
	int r = sd_event_add_io(s->event, &s->listen_src, s->listen_fd, EPOLLIN, on_accept, s);
	if (r < 0) {
		snprintf(why, whylen, "sd_event_add_io: %s", strerror(-r));
		server_free(s);
		return r;
	}
	*out = s;
	return 0;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_free(s->conns);
	sd_event_source_disable_unref(s->listen_src);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->owns_path)
		unlink(s->path);
	json_door_text_fini(&s->event_frame);
	free(s);
}

unsigned server_n_clients(const struct server *s)
{
	return s->n_conns;
}
