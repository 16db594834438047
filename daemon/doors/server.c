/* SPDX-License-Identifier: MIT */
#include "doors/server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

/*
 * Back-pressure: while this much output waits for a client, its requests
 * are not read (they wait in the socket, then in the client). A client
 * that never reads its replies costs at most this plus one reply.
 */
#define SERVER_READ_PAUSE (64u << 10)
/* A watcher that does not read its events is cut off when this much of
 * them waits for it (replies queued before them do not count). */
#define SERVER_MAX_EVENT_BACKLOG (256u << 10)
/* Never reached by a peer that back-pressure holds: what a paused client
 * may have queued (events, one reply past the pause), with room to spare. */
#define SERVER_MAX_BACKLOG (SERVER_MAX_EVENT_BACKLOG + SERVER_READ_PAUSE + 2 * PROTO_MAX_RESPONSE)
#define SERVER_USEC_PER_SEC UINT64_C(1000000)
/* Refusals and expired connections are logged at most once per interval
 * each (the rest counted): a flood of connections must not flood the
 * journal. Running out of descriptors, once per the longer one. */
#define SERVER_LOG_INTERVAL_USEC (10 * SERVER_USEC_PER_SEC)
#define SERVER_EXHAUSTED_LOG_INTERVAL_USEC (60 * SERVER_USEC_PER_SEC)
/* Out of descriptors, accepting is retried after this even if none of
 * ours closes: descriptors free elsewhere too (sessions, VMs). */
#define SERVER_ACCEPT_RETRY_USEC (1 * SERVER_USEC_PER_SEC)
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
	/* Root or the admin group at accept: counted against max_clients
	 * only, and never idle-closed. Fixed for the connection's life so
	 * that what was counted is uncounted, whatever a reload changes. */
	bool privileged;
	sd_event_source *deadline;  /* first frame, then idle (not for watchers or privileged) */
	uint64_t accepted_usec;     /* CLOCK_MONOTONIC */
	uint64_t active_usec;       /* last complete request or reply bytes taken */
	bool got_frame;
	/* Input read but not yet taken while replies were piling up; taken
	 * before anything more is read (descriptors are counted by line). */
	char *unread;
	size_t unread_len, unread_off;
	/* Reply bytes in out since it was last empty (at most): what is
	 * queued beyond them is events, the watcher's allowance. */
	size_t reply_bytes;
	struct conn *next, *prev;
};

/* Connections of one user who is neither root nor in the admin group. */
struct uid_conns {
	uid_t uid;
	unsigned n;
};

/* A line now, then at most one per interval; what is left out is counted
 * and said with the next line, or by the server's flush timer. */
struct ratelog {
	const char *what;     /* "connections refused", for the summary */
	uint64_t interval;
	uint64_t logged_usec; /* 0: never */
	unsigned quiet;
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
	/* Admission (docs/config.md, "Limits"). */
	struct uid_conns *uids;     /* users with unprivileged connections */
	size_t n_uids, cap_uids;
	unsigned n_unprivileged;
	/* Out of descriptors: the listen source is off until one of ours
	 * closes or the retry timer fires. */
	bool accept_paused;
	sd_event_source *accept_retry;
	struct ratelog refused, expired, exhausted, killed;
	sd_event_source *log_flush;
};

static size_t pending(const struct conn *c)
{
	return c->out.len - c->out_off;
}

static bool reading_paused(const struct conn *c)
{
	return pending(c) >= SERVER_READ_PAUSE;
}

static uint64_t now_usec(const struct server *s)
{
	uint64_t now = 0;
	/* the loop's time of this iteration: no clock read per call */
	if (sd_event_now(s->event, CLOCK_MONOTONIC, &now) < 0)
		return 0;
	return now;
}

static int on_log_flush(sd_event_source *src, uint64_t usec, void *userdata);

static void flush_ratelog(struct ratelog *rl, uint64_t now)
{
	if (!rl->quiet)
		return;
	log_warn("%u more %s in the last %" PRIu64 " s (not logged one by one)", rl->quiet, rl->what,
		 (now - rl->logged_usec + SERVER_USEC_PER_SEC / 2) / SERVER_USEC_PER_SEC);
	rl->quiet = 0;
	rl->logged_usec = now;
}

/* The summary of what a ratelog left out, once its interval is over. */
static void arm_log_flush(struct server *s, const struct ratelog *rl)
{
	uint64_t due = rl->logged_usec + rl->interval, cur = 0;
	int enabled = SD_EVENT_OFF;

	if (!s->log_flush) {
		/* on failure, what was left out is said with the next line */
		sd_event_add_time(s->event, &s->log_flush, CLOCK_MONOTONIC, due, SERVER_USEC_PER_SEC, on_log_flush, s);
		return;
	}
	sd_event_source_get_enabled(s->log_flush, &enabled);
	if (enabled != SD_EVENT_OFF && sd_event_source_get_time(s->log_flush, &cur) >= 0 && cur <= due)
		return;
	sd_event_source_set_time(s->log_flush, due);
	sd_event_source_set_enabled(s->log_flush, SD_EVENT_ONESHOT);
}

static int on_log_flush(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct server *s = userdata;
	struct ratelog *all[] = { &s->refused, &s->expired, &s->exhausted, &s->killed };
	(void)src;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->quiet && usec >= all[i]->logged_usec + all[i]->interval)
			flush_ratelog(all[i], usec);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->quiet)
			arm_log_flush(s, all[i]);
	return 0;
}

static void log_limited(struct server *s, struct ratelog *rl, int priority, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void log_limited(struct server *s, struct ratelog *rl, int priority, const char *fmt, ...)
{
	uint64_t now = now_usec(s);
	_cleanup_free_ char *line = NULL;
	va_list ap;

	if (rl->logged_usec && now < rl->logged_usec + rl->interval) {
		if (!rl->quiet++)
			arm_log_flush(s, rl);
		return;
	}
	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		line = NULL;
	if (rl->quiet)
		log_write(priority, "%s (and %u more %s in the last %" PRIu64 " s, not logged one by one)",
			  line ? line : fmt, rl->quiet, rl->what,
			  (now - rl->logged_usec + SERVER_USEC_PER_SEC / 2) / SERVER_USEC_PER_SEC);
	else
		log_write(priority, "%s", line ? line : fmt);
	rl->quiet = 0;
	rl->logged_usec = now ? now : 1;
}

static struct uid_conns *uid_find(struct server *s, uid_t uid)
{
	for (size_t i = 0; i < s->n_uids; i++)
		if (s->uids[i].uid == uid)
			return &s->uids[i];
	return NULL;
}

static unsigned uid_count(struct server *s, uid_t uid)
{
	const struct uid_conns *u = uid_find(s, uid);
	return u ? u->n : 0;
}

static int uid_take(struct server *s, uid_t uid)
{
	struct uid_conns *u = uid_find(s, uid);
	if (u) {
		u->n++;
		return 0;
	}
	if (s->n_uids == s->cap_uids) {
		size_t cap = s->cap_uids ? 2 * s->cap_uids : 16;
		struct uid_conns *grown = reallocarray(s->uids, cap, sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		s->uids = grown;
		s->cap_uids = cap;
	}
	s->uids[s->n_uids++] = (struct uid_conns){ .uid = uid, .n = 1 };
	return 0;
}

static void uid_drop(struct server *s, uid_t uid)
{
	struct uid_conns *u = uid_find(s, uid);
	if (!u)
		return;
	if (--u->n == 0)
		*u = s->uids[--s->n_uids];
}

static void accept_resume(struct server *s)
{
	if (!s->accept_paused)
		return;
	s->accept_paused = false;
	sd_event_source_set_enabled(s->accept_retry, SD_EVENT_OFF);
	sd_event_source_set_enabled(s->listen_src, SD_EVENT_ON);
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
	sd_event_source_disable_unref(c->deadline);
	sd_event_source_disable_unref(c->src);
	close(c->fd);
	close_pending_fds(c);
	frame_reader_fini(&c->reader);
	json_door_text_fini(&c->out);
	free(c->unread);
	free(c->groups);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	if (!c->privileged) {
		s->n_unprivileged--;
		uid_drop(s, c->cred.uid);
	}
	free(c);
	/* a descriptor is free again */
	accept_resume(s);
}

static void update_events(struct conn *c)
{
	if (c->dead)
		return;
	uint32_t ev = c->closing || reading_paused(c) ? 0 : EPOLLIN;
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
	log_limited(c->srv, &c->srv->killed, LOG_WARNING, "client uid %u pid %d: %s: disconnecting",
		    (unsigned)c->cred.uid, (int)c->cred.pid, why);
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
	size_t replies = c->reply_bytes < pending(c) ? c->reply_bytes : pending(c);
	bool over = is_event ? pending(c) - replies > SERVER_MAX_EVENT_BACKLOG : pending(c) > SERVER_MAX_BACKLOG;
	if (!over)
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
	c->reply_bytes += len;
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
	c->reply_bytes += c->out.len - start;
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

	c->got_frame = true;
	c->active_usec = now_usec(s);
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
	if (n > 0) {
		c->out_off += (size_t)n;
		/* a client that reads is not idle, however long its answer */
		c->active_usec = now_usec(c->srv);
	}
	if (c->reply_bytes > pending(c))
		c->reply_bytes = pending(c);
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
 * line number (the descriptors it came with), until they are all taken or
 * replies pile up past SERVER_READ_PAUSE (back-pressure: the rest waits in
 * c->unread). Returns the bytes taken, or the reader's -EMSGSIZE / -ENOMEM.
 */
static ssize_t read_frames(struct conn *c, const char *buf, size_t n)
{
	size_t off = 0;

	while (off < n && !c->closing && !reading_paused(c)) {
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
	return (ssize_t)off;
}

/*
 * What the reader said about input just taken: false when the connection
 * is gone (freed, or cut off while its requests ran).
 */
static bool frames_taken(struct conn *c, ssize_t r)
{
	if (c->dead)
		return false;
	if (r == -EMSGSIZE) {
		struct proto_error err = {0};
		proto_error_set(&err, PROTO_E_TOO_LARGE, EMSGSIZE, NULL,
				"a request frame exceeds %u bytes; closing the connection", PROTO_MAX_REQUEST);
		send_error(c, false, 0, &err);
		c->closing = true;
		return !c->dead;
	}
	if (r < 0) {
		conn_free(c);
		return false;
	}
	return true;
}

/* Input left over when replies piled up, taken once they drained. */
static bool take_unread(struct conn *c)
{
	ssize_t r = read_frames(c, c->unread + c->unread_off, c->unread_len - c->unread_off);

	if (r > 0)
		c->unread_off += (size_t)r;
	if (r < 0 || c->closing || c->unread_off == c->unread_len) {
		free(c->unread);
		c->unread = NULL;
		c->unread_len = c->unread_off = 0;
	}
	return frames_taken(c, r);
}

static bool keep_unread(struct conn *c, const char *buf, size_t n)
{
	c->unread = malloc(n);
	if (!c->unread) {
		conn_kill(c, "out of memory for its requests");
		return false;
	}
	memcpy(c->unread, buf, n);
	c->unread_len = n;
	c->unread_off = 0;
	return true;
}

static int on_conn(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct conn *c = userdata;
	(void)src;
	if (c->dead)
		return 0;

	/* A peer gone while its reading is paused is noticed here: the
	 * send fails (EPOLLIN is off, a hangup alone must not spin). */
	if (revents & (EPOLLOUT | EPOLLHUP | EPOLLERR) && pending(c) && !flush_out(c)) {
		conn_free(c);
		return 0;
	}
	if (c->closing && pending(c) == 0) {
		conn_free(c);
		return 0;
	}
	/* Requests read before the pause come first, and nothing more is
	 * read until they are taken. */
	if (c->unread && !c->closing && !reading_paused(c) && !take_unread(c))
		return 0;
	if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR) && !c->closing && !c->unread && !reading_paused(c)) {
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
		bool takes_fds = c->privileged; /* decided at accept: no group lookup per read */
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
			ssize_t took = read_frames(c, buf, (size_t)n);
			if (!frames_taken(c, took))
				return 0;
			if (took >= 0 && (size_t)took < (size_t)n && !c->closing &&
			    !keep_unread(c, buf + took, (size_t)n - (size_t)took))
				return 0;
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

/* A one-line error for a connection about to be closed, if its socket
 * takes it now: nothing waits for a peer that does not read. */
static void send_parting(int fd, const struct proto_error *err)
{
	_cleanup_json_ struct json_object *obj = response_error(false, 0, err);
	_cleanup_free_ char *frame = NULL;
	size_t len;

	if (!obj || frame_encode(obj, PROTO_MAX_RESPONSE, &frame, &len) < 0)
		return;
	if (send(fd, frame, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* the peer learns from the close */
	}
}

static void expire(struct conn *c, const char *what, unsigned seconds, const char *key)
{
	struct server *s = c->srv;
	struct proto_error err = {0};

	proto_error_set(&err, PROTO_E_BAD_REQUEST, ETIMEDOUT, NULL, "%s for %u s (%s); closing the connection", what,
			seconds, key);
	log_limited(s, &s->expired, LOG_INFO, "closed the connection of uid %u pid %d: %s",
		    (unsigned)c->cred.uid, (int)c->cred.pid, err.message);
	if (!pending(c))
		send_parting(c->fd, &err);
	conn_free(c);
}

/*
 * The connection's one deadline: its first complete request, then (unless
 * it watches or is privileged) the idle limit. Activity does not move the
 * timer; when it fires early for that, it is set again from the last
 * activity. Timeouts are read live, so a reload applies at the next firing.
 */
static int on_deadline(sd_event_source *src, uint64_t usec, void *userdata)
{
	struct conn *c = userdata;
	const struct config *cfg = c->srv->cfg;
	uint64_t due;

	if (c->dead)
		return 0;
	if (!c->got_frame) {
		due = c->accepted_usec + cfg->first_frame_timeout * SERVER_USEC_PER_SEC;
		if (usec >= due) {
			expire(c, "no complete request", cfg->first_frame_timeout, "first_frame_timeout");
			return 0;
		}
	} else {
		/* Watchers wait for events by design; root and the admin group
		 * hold connections that no other user can take from them
		 * (vpmuctl session read --interval waits up to an hour). */
		if (c->watching || c->privileged)
			return 0;
		due = c->active_usec + cfg->idle_timeout * SERVER_USEC_PER_SEC;
		if (usec >= due) {
			expire(c, "no request and no reply read", cfg->idle_timeout, "idle_timeout");
			return 0;
		}
	}
	sd_event_source_set_time(src, due);
	sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
	return 0;
}

enum admission {
	ADMIT,
	REFUSE_PER_USER,  /* max_clients_per_uid */
	REFUSE_SHARED,    /* max_clients - admin_reserved_clients, unprivileged users together */
	REFUSE_TOTAL,     /* max_clients */
};

static enum admission admit(struct server *s, uid_t uid, bool privileged)
{
	const struct config *cfg = s->cfg;

	if (!privileged && uid_count(s, uid) >= cfg->max_clients_per_uid)
		return REFUSE_PER_USER;
	if (!privileged && s->n_unprivileged + cfg->admin_reserved_clients >= cfg->max_clients)
		return REFUSE_SHARED;
	if (s->n_conns >= cfg->max_clients)
		return REFUSE_TOTAL;
	return ADMIT;
}

static void refuse(struct server *s, int fd, const struct ucred *cr, enum admission why)
{
	const struct config *cfg = s->cfg;
	struct proto_error err = {0};

	switch (why) {
	case REFUSE_PER_USER:
		proto_error_set(&err, PROTO_E_BUSY, EBUSY, NULL,
				"too many clients: uid %u holds %u connections already (max_clients_per_uid)",
				(unsigned)cr->uid, uid_count(s, cr->uid));
		break;
	case REFUSE_SHARED:
		proto_error_set(&err, PROTO_E_BUSY, EBUSY, NULL,
				"too many clients: users other than root and group %s hold %u connections already "
				"(max_clients %u minus admin_reserved_clients %u)",
				cfg->admin_group, s->n_unprivileged, cfg->max_clients, cfg->admin_reserved_clients);
		break;
	default:
		proto_error_set(&err, PROTO_E_BUSY, EBUSY, NULL,
				"too many clients: %u connections already (max_clients)", s->n_conns);
		break;
	}
	send_parting(fd, &err);
	log_limited(s, &s->refused, LOG_WARNING, "refused a connection from uid %u pid %d: %s", (unsigned)cr->uid,
		    (int)cr->pid, err.message);
}

/*
 * Out of descriptors or kernel memory: a pending connection stays in the
 * backlog and the listen fd stays readable, so accepting again at once
 * would spin. Accepting stops until one of ours closes, or the retry timer
 * fires (descriptors free elsewhere too).
 */
static void accept_pause(struct server *s, int err)
{
	struct rlimit rl = {0};

	sd_event_source_set_enabled(s->listen_src, SD_EVENT_OFF);
	s->accept_paused = true;
	sd_event_source_set_time_relative(s->accept_retry, SERVER_ACCEPT_RETRY_USEC);
	sd_event_source_set_enabled(s->accept_retry, SD_EVENT_ONESHOT);
	getrlimit(RLIMIT_NOFILE, &rl);
	log_limited(s, &s->exhausted, LOG_ERR,
		    "cannot accept connections: %s (%u clients, open files limit %llu); not accepting until a "
		    "descriptor frees (retrying each %llu s)",
		    strerror(err), s->n_conns, (unsigned long long)rl.rlim_cur,
		    (unsigned long long)(SERVER_ACCEPT_RETRY_USEC / SERVER_USEC_PER_SEC));
}

static int on_accept_retry(sd_event_source *src, uint64_t usec, void *userdata)
{
	(void)src;
	(void)usec;
	accept_resume(userdata);
	return 0;
}

static void accept_conn(struct server *s, int cfd);

/* Takes one connection off the backlog: false when there was none (or
 * accepting is paused). */
static bool accept_one(struct server *s, int fd)
{
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			accept_pause(s, errno);
		/* else (EAGAIN, ECONNABORTED, EINTR, ...): this one is gone */
		return errno == ECONNABORTED || errno == EINTR;
	}
	accept_conn(s, cfd);
	return true;
}

/* Several per wakeup: a flood of connects that are refused at once must
 * not leave root's connect waiting in a full backlog behind them. */
#define SERVER_ACCEPTS_PER_WAKEUP 32

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	struct server *s = userdata;
	(void)src;
	(void)revents;
	for (unsigned i = 0; i < SERVER_ACCEPTS_PER_WAKEUP && !s->accept_paused && accept_one(s, fd); i++)
		;
	return 0;
}

static void accept_conn(struct server *s, int cfd)
{
	_cleanup_close_ int owned = cfd;
	struct ucred cr;
	socklen_t l = sizeof(cr);
	if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0)
		return;
	_cleanup_free_ gid_t *groups = NULL;
	size_t n_groups = 0;
	/* Without its groups a peer is judged by uid and primary group only. */
	if (peer_groups(cfd, &groups, &n_groups) < 0)
		n_groups = 0;
	struct broker_caller caller = { .door = BROKER_DOOR_SOCKET, .uid = cr.uid, .gid = cr.gid, .pid = cr.pid,
					.groups = groups, .n_groups = n_groups };
	bool privileged = broker_caller_is_admin(s->broker, &caller);
	enum admission a = admit(s, cr.uid, privileged);
	if (a != ADMIT) {
		refuse(s, cfd, &cr, a);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c || frame_reader_init(&c->reader, PROTO_MAX_REQUEST) < 0) {
		free(c);
		return;
	}
	c->srv = s;
	c->fd = cfd;
	c->cred = cr;
	c->privileged = privileged;
	c->accepted_usec = c->active_usec = now_usec(s);
	c->groups = TAKE_PTR(groups);
	c->n_groups = n_groups;
	if ((!privileged && uid_take(s, cr.uid) < 0) || broker_conn_open(s->broker, false, &c->bconn) < 0 ||
	    sd_event_add_io(s->event, &c->src, cfd, EPOLLIN, on_conn, c) < 0 ||
	    sd_event_add_time(s->event, &c->deadline, CLOCK_MONOTONIC,
			      c->accepted_usec + s->cfg->first_frame_timeout * SERVER_USEC_PER_SEC, 0, on_deadline,
			      c) < 0) {
		if (!privileged)
			uid_drop(s, cr.uid);
		sd_event_source_disable_unref(c->deadline);
		sd_event_source_disable_unref(c->src);
		broker_conn_unref(c->bconn);
		free(c->groups);
		frame_reader_fini(&c->reader);
		free(c);
		return;
	}
	TAKE_FD(owned);
	if (!privileged)
		s->n_unprivileged++;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
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
	s->refused = (struct ratelog){ .what = "connections refused", .interval = SERVER_LOG_INTERVAL_USEC };
	s->expired = (struct ratelog){ .what = "connections closed for a deadline", .interval = SERVER_LOG_INTERVAL_USEC };
	s->killed = (struct ratelog){ .what = "clients cut off", .interval = SERVER_LOG_INTERVAL_USEC };
	s->exhausted = (struct ratelog){ .what = "failed accepts", .interval = SERVER_EXHAUSTED_LOG_INTERVAL_USEC };
	/* on_accept takes several connections per wakeup and stops at EAGAIN:
	 * a socket handed over by systemd may come blocking. */
	int fl = fcntl(s->listen_fd, F_GETFL);
	if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int e = errno;
		snprintf(why, whylen, "cannot make the listening socket non-blocking: %s", strerror(e));
		server_free(s);
		return -e;
	}
	int r = sd_event_add_io(s->event, &s->listen_src, s->listen_fd, EPOLLIN, on_accept, s);
	if (r < 0) {
		snprintf(why, whylen, "sd_event_add_io: %s", strerror(-r));
		server_free(s);
		return r;
	}
	/* Made now, while descriptors are there: the loop's timer fd for
	 * this clock is what every connection's deadline uses. */
	r = sd_event_add_time_relative(s->event, &s->accept_retry, CLOCK_MONOTONIC, SERVER_ACCEPT_RETRY_USEC, 0,
				       on_accept_retry, s);
	if (r >= 0)
		r = sd_event_source_set_enabled(s->accept_retry, SD_EVENT_OFF);
	if (r < 0) {
		snprintf(why, whylen, "sd_event_add_time: %s", strerror(-r));
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
	sd_event_source_disable_unref(s->accept_retry);
	sd_event_source_disable_unref(s->log_flush);
	free(s->uids);
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
