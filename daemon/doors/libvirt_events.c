/* SPDX-License-Identifier: MIT */
#include "doors/libvirt_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "base/log.h"
#include "proto/cleanup.h"
#include "proto/domain_policy.h"

/* ================================================================= bridge */

enum watch_kind { WATCH_HANDLE, WATCH_TIMEOUT };

struct watch {
	int id;
	enum watch_kind kind;
	int fd;
	int events;              /* VIR_EVENT_HANDLE_* of a handle */
	int interval_ms;         /* of a timeout: -1, 0 or N */
	sd_event_source *src;    /* io, time or defer; NULL while disabled */
	sd_event_source *reaper; /* pre-made, so that remove cannot fail */
	virEventHandleCallback hcb;
	virEventTimeoutCallback tcb;
	void *opaque;
	virFreeCallback ff;
	struct watch *next;
};

struct bridge {
	sd_event *loop;
	int next_id;
	struct watch *watches;
};

/*
 * libvirt's event callbacks carry no context argument, so this pointer is
 * how they find the bridge. It is set once, never changed, and mirrors
 * libvirt's own process-wide registration (which cannot be undone).
 */
static struct bridge *the_bridge;

static struct watch *watch_find(int id)
{
	if (!the_bridge)
		return NULL;
	for (struct watch *w = the_bridge->watches; w; w = w->next)
		if (w->id == id)
			return w;
	return NULL;
}

static void watch_unlink(struct watch *w)
{
	for (struct watch **p = &the_bridge->watches; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
}

static int reap(sd_event_source *s, void *ud)
{
	struct watch *w = ud;
	/* Now on a clean stack: libvirt holds none of its locks here. */
	if (w->ff)
		w->ff(w->opaque);
	sd_event_source_unref(s);
	free(w);
	return 0;
}

static struct watch *watch_new(enum watch_kind kind, void *opaque, virFreeCallback ff)
{
	struct watch *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	if (sd_event_add_defer(the_bridge->loop, &w->reaper, reap, w) < 0) {
		free(w);
		return NULL;
	}
	sd_event_source_set_enabled(w->reaper, SD_EVENT_OFF);
	w->kind = kind;
	w->opaque = opaque;
	w->ff = ff;
	w->fd = -1;
	if (the_bridge->next_id == INT32_MAX)
		the_bridge->next_id = 0;
	w->id = ++the_bridge->next_id;
	w->next = the_bridge->watches;
	the_bridge->watches = w;
	return w;
}

static int watch_remove(int id, enum watch_kind kind)
{
	struct watch *w = watch_find(id);
	if (!w || w->kind != kind)
		return -1;
	watch_unlink(w);
	/* Safe even while w->src is dispatching: sd-event defers the free. */
	w->src = sd_event_source_disable_unref(w->src);
	sd_event_source_set_enabled(w->reaper, SD_EVENT_ONESHOT);
	return 0;
}

static uint32_t vir_to_epoll(int ev)
{
	uint32_t e = 0;
	if (ev & VIR_EVENT_HANDLE_READABLE)
		e |= EPOLLIN;
	if (ev & VIR_EVENT_HANDLE_WRITABLE)
		e |= EPOLLOUT;
	/* epoll always reports ERR and HUP; asking for them is harmless */
	if (ev & VIR_EVENT_HANDLE_ERROR)
		e |= EPOLLERR;
	if (ev & VIR_EVENT_HANDLE_HANGUP)
		e |= EPOLLHUP;
	return e;
}

static int epoll_to_vir(uint32_t e)
{
	int ev = 0;
	if (e & EPOLLIN)
		ev |= VIR_EVENT_HANDLE_READABLE;
	if (e & EPOLLOUT)
		ev |= VIR_EVENT_HANDLE_WRITABLE;
	if (e & EPOLLERR)
		ev |= VIR_EVENT_HANDLE_ERROR;
	if (e & EPOLLHUP)
		ev |= VIR_EVENT_HANDLE_HANGUP;
	return ev;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *ud)
{
	(void)s;
	struct watch *w = ud;
	w->hcb(w->id, fd, epoll_to_vir(revents), w->opaque);
	return 0;
}

static int handle_arm(struct watch *w, int events)
{
	w->events = events;
	if (events == 0) {
		if (w->src)
			return sd_event_source_set_enabled(w->src, SD_EVENT_OFF);
		return 0;
	}
	if (!w->src)
		return sd_event_add_io(the_bridge->loop, &w->src, w->fd, vir_to_epoll(events), on_io, w);
	int r = sd_event_source_set_io_events(w->src, vir_to_epoll(events));
	return r < 0 ? r : sd_event_source_set_enabled(w->src, SD_EVENT_ON);
}

static int bridge_add_handle(int fd, int events, virEventHandleCallback cb, void *opaque, virFreeCallback ff)
{
	if (!the_bridge || fd < 0 || !cb)
		return -1;
	struct watch *w = watch_new(WATCH_HANDLE, opaque, ff);
	if (!w)
		return -1;
	w->fd = fd;
	w->hcb = cb;
	int r = handle_arm(w, events);
	if (r < 0) {
		log_err("libvirt event bridge: cannot watch fd %d: %s", fd, strerror(-r));
		/* nothing was handed to libvirt yet: drop without calling ff */
		w->ff = NULL;
		watch_remove(w->id, WATCH_HANDLE);
		return -1;
	}
	return w->id;
}

static void bridge_update_handle(int id, int events)
{
	struct watch *w = watch_find(id);
	if (!w || w->kind != WATCH_HANDLE)
		return;
	int r = handle_arm(w, events);
	/* -ESTALE: the loop has exited (daemon stopping, libvirt closing its
	 * connection from the free path); nothing will dispatch any more */
	if (r < 0 && r != -ESTALE)
		log_err("libvirt event bridge: cannot update watch %d (fd %d): %s", id, w->fd, strerror(-r));
}

static int bridge_remove_handle(int id)
{
	return watch_remove(id, WATCH_HANDLE);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *ud)
{
	struct watch *w = ud;
	uint64_t now = usec;
	/* Re-arm first: the callback may update or remove this very timer.
	 * From now, not from the due time, so that a late loop does not
	 * fire a burst of catch-up callbacks. */
	sd_event_now(sd_event_source_get_event(s), CLOCK_MONOTONIC, &now);
	sd_event_source_set_time(s, now + (uint64_t)w->interval_ms * 1000);
	sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
	w->tcb(w->id, w->opaque);
	return 0;
}

static int on_every_iteration(sd_event_source *s, void *ud)
{
	(void)s;
	struct watch *w = ud;
	w->tcb(w->id, w->opaque);
	return 0;
}

static int timeout_arm(struct watch *w, int interval_ms)
{
	uint64_t now;
	int r;

	/* The source type depends on the interval, so a change replaces it. */
	w->src = sd_event_source_disable_unref(w->src);
	w->interval_ms = interval_ms < 0 ? -1 : interval_ms;
	if (interval_ms < 0)
		return 0;
	if (interval_ms == 0) {
		r = sd_event_add_defer(the_bridge->loop, &w->src, on_every_iteration, w);
		return r < 0 ? r : sd_event_source_set_enabled(w->src, SD_EVENT_ON);
	}
	if ((r = sd_event_now(the_bridge->loop, CLOCK_MONOTONIC, &now)) < 0)
		return r;
	/* 1 ms accuracy: sd-event's default (250 ms) would distort libvirt's
	 * short timers */
	return sd_event_add_time(the_bridge->loop, &w->src, CLOCK_MONOTONIC,
				 now + (uint64_t)interval_ms * 1000, 1000, on_timer, w);
}

static int bridge_add_timeout(int interval_ms, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff)
{
	if (!the_bridge || !cb)
		return -1;
	struct watch *w = watch_new(WATCH_TIMEOUT, opaque, ff);
	if (!w)
		return -1;
	w->tcb = cb;
	int r = timeout_arm(w, interval_ms);
	if (r < 0) {
		log_err("libvirt event bridge: cannot add a %d ms timer: %s", interval_ms, strerror(-r));
		w->ff = NULL;
		watch_remove(w->id, WATCH_TIMEOUT);
		return -1;
	}
	return w->id;
}

static void bridge_update_timeout(int id, int interval_ms)
{
	struct watch *w = watch_find(id);
	if (!w || w->kind != WATCH_TIMEOUT)
		return;
	int r = timeout_arm(w, interval_ms);
	if (r < 0 && r != -ESTALE)
		log_err("libvirt event bridge: cannot set timer %d to %d ms: %s", id, interval_ms, strerror(-r));
}

static int bridge_remove_timeout(int id)
{
	return watch_remove(id, WATCH_TIMEOUT);
}

static void ignore_error(void *ud, virErrorPtr err)
{
	(void)ud;
	(void)err;
}

int libvirt_events_bridge_register(sd_event *e)
{
	if (!e)
		return -EINVAL;
	if (the_bridge)
		return the_bridge->loop == e ? 0 : -EBUSY;
	struct bridge *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->loop = sd_event_ref(e);
	the_bridge = b;
	/* libvirt's default handler prints every error to stderr, unprefixed
	 * (a libvirtd that is down: one line per retry). The follower reads
	 * each error with virGetLastErrorMessage and logs it itself. */
	virSetErrorFunc(NULL, ignore_error);
	virEventRegisterImpl(bridge_add_handle, bridge_update_handle, bridge_remove_handle, bridge_add_timeout,
			     bridge_update_timeout, bridge_remove_timeout);
	return 0;
}

sd_event *libvirt_events_bridge_loop(void)
{
	return the_bridge ? the_bridge->loop : NULL;
}

/* =============================================================== follower */

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libvirt_events_follower *, libvirt_events_follower_free)

#define BACKOFF_MIN_DEFAULT (500 * 1000ull)
#define BACKOFF_MAX_DEFAULT (30 * 1000 * 1000ull)

enum { CB_LIFECYCLE, CB_METADATA, CB_TUNABLE, CB_N };

struct libvirt_events_follower {
	sd_event *loop;
	char *uri;
	struct libvirt_events_ops ops;
	void *ud;
	uint64_t backoff_min, backoff_max, backoff;
	virConnectPtr conn;
	int cb_ids[CB_N];
	bool close_cb;
	sd_event_source *retry;   /* the (re)connect timer */
	unsigned failures;        /* attempts failed since the last success */
};

bool libvirt_events_tunable_touches_vcpupin(const virTypedParameter *params, int nparams)
{
	static const char prefix[] = "cputune.vcpupin";
	for (int i = 0; i < nparams; i++) {
		const char *f = params[i].field;
		if (strncmp(f, prefix, sizeof(prefix) - 1))
			continue;
		f += sizeof(prefix) - 1;
		/* "cputune.vcpupin<N>" only; nothing else shares the prefix today,
		 * but a future "cputune.vcpupin_x" must not be mistaken for a pin */
		if (*f < '0' || *f > '9')
			continue;
		while (*f >= '0' && *f <= '9')
			f++;
		if (!*f)
			return true;
	}
	return false;
}

static void report(struct libvirt_events_follower *f, virDomainPtr dom, bool running)
{
	char uuid[VIR_UUID_STRING_BUFLEN];
	const char *name = virDomainGetName(dom);
	if (!name || virDomainGetUUIDString(dom, uuid) < 0) {
		log_warn("libvirt: event for a domain without name or uuid: %s", virGetLastErrorMessage());
		return;
	}
	char *xml = virDomainGetXMLDesc(dom, 0);
	if (!xml) {
		/* It may have stopped meanwhile (its stopped event follows), or
		 * libvirt failed: a running domain is still reported, without
		 * XML, so that a reconcile does not take it for gone. */
		log_event(LOG_WARNING, VPMU_MSG_NONE, &(struct log_fields){ .vm = name },
			  "libvirt: cannot read the XML of domain %s: %s", name, virGetLastErrorMessage());
		if (running)
			f->ops.on_domain_running(f->ud, name, uuid, NULL);
		return;
	}
	if (running)
		f->ops.on_domain_running(f->ud, name, uuid, xml);
	else
		f->ops.on_domain_changed(f->ud, name, uuid, xml);
	free(xml);
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *ud)
{
	(void)conn;
	(void)detail;
	struct libvirt_events_follower *f = ud;
	char uuid[VIR_UUID_STRING_BUFLEN];

	switch (event) {
	case VIR_DOMAIN_EVENT_STARTED:
		report(f, dom, true);
		break;
	case VIR_DOMAIN_EVENT_STOPPED:
		if (virDomainGetUUIDString(dom, uuid) == 0)
			f->ops.on_domain_stopped(f->ud, virDomainGetName(dom), uuid);
		break;
	default:
		/* Paused and resumed domains keep their counters; a redefinition
		 * changes only the next boot. */
		break;
	}
	return 0;
}

static void on_metadata(virConnectPtr conn, virDomainPtr dom, int type, const char *nsuri, void *ud)
{
	(void)conn;
	struct libvirt_events_follower *f = ud;
	/* Any version of our namespace: the daemon should hear about an
	 * unsupported one too, to say so. */
	if (type != VIR_DOMAIN_METADATA_ELEMENT || !nsuri ||
	    strncmp(nsuri, DOMAIN_POLICY_NS_URI_BASE, strlen(DOMAIN_POLICY_NS_URI_BASE)))
		return;
	if (virDomainIsActive(dom) == 1)
		report(f, dom, false);
}

static void on_tunable(virConnectPtr conn, virDomainPtr dom, virTypedParameterPtr params, int nparams, void *ud)
{
	(void)conn;
	struct libvirt_events_follower *f = ud;
	if (libvirt_events_tunable_touches_vcpupin(params, nparams) && virDomainIsActive(dom) == 1)
		report(f, dom, false);
}

static void on_close(virConnectPtr conn, int reason, void *ud);

static void drop_connection(struct libvirt_events_follower *f)
{
	if (!f->conn)
		return;
	for (int i = 0; i < CB_N; i++)
		if (f->cb_ids[i] >= 0)
			virConnectDomainEventDeregisterAny(f->conn, f->cb_ids[i]);
	if (f->close_cb)
		virConnectUnregisterCloseCallback(f->conn, on_close);
	virConnectClose(f->conn);
	f->conn = NULL;
	f->close_cb = false;
	for (int i = 0; i < CB_N; i++)
		f->cb_ids[i] = -1;
}

static void schedule(struct libvirt_events_follower *f, uint64_t delay)
{
	uint64_t now;
	sd_event_now(f->loop, CLOCK_MONOTONIC, &now);
	sd_event_source_set_time(f->retry, now + delay);
	sd_event_source_set_enabled(f->retry, SD_EVENT_ONESHOT);
}

static void retry_later(struct libvirt_events_follower *f, const char *why)
{
	if (f->ops.on_connection)
		f->ops.on_connection(f->ud, false, why);
	/* Once per outage: a host without libvirt would otherwise log a line
	 * every 30 s forever (the log has no level filter). */
	if (f->failures++ == 0)
		log_warn("libvirt: %s: %s; retrying in %llu ms, then quietly with backoff up to %llu ms", f->uri,
			 why, (unsigned long long)f->backoff / 1000, (unsigned long long)f->backoff_max / 1000);
	schedule(f, f->backoff);
	f->backoff = f->backoff * 2 > f->backoff_max ? f->backoff_max : f->backoff * 2;
}

static void on_close(virConnectPtr conn, int reason, void *ud)
{
	(void)conn;
	struct libvirt_events_follower *f = ud;
	static const char *const reasons[] = { "error", "end of file", "keepalive timeout", "client closed" };
	char why[64]; /* one of the reasons above */
	snprintf(why, sizeof(why), "connection closed (%s)",
		 reason >= 0 && reason < 4 ? reasons[reason] : "unknown reason");
	/* Not dropped here: libvirt is inside its own close path. The retry
	 * timer drops the old connection before opening a new one. */
	retry_later(f, why);
}

static const char *last_error(void)
{
	const char *m = virGetLastErrorMessage();
	return m ? m : "unknown libvirt error";
}

/* Opens, registers, reconciles. On failure the caller retries. */
/* *why: malloc'd (libvirt's messages have no bound); NULL on ENOMEM. */
static int connect_and_reconcile(struct libvirt_events_follower *f, char **why)
{
	virDomainPtr *doms = NULL;
	int n;

	drop_connection(f);
	if (!(f->conn = virConnectOpen(f->uri))) {
		*why = alloc_printf("cannot connect: %s", last_error());
		return -ECONNREFUSED;
	}
	f->cb_ids[CB_LIFECYCLE] = virConnectDomainEventRegisterAny(
		f->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), f, NULL);
	f->cb_ids[CB_METADATA] = virConnectDomainEventRegisterAny(
		f->conn, NULL, VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, VIR_DOMAIN_EVENT_CALLBACK(on_metadata), f, NULL);
	f->cb_ids[CB_TUNABLE] = virConnectDomainEventRegisterAny(
		f->conn, NULL, VIR_DOMAIN_EVENT_ID_TUNABLE, VIR_DOMAIN_EVENT_CALLBACK(on_tunable), f, NULL);
	for (int i = 0; i < CB_N; i++)
		if (f->cb_ids[i] < 0) {
			*why = alloc_printf("cannot register for domain events: %s", last_error());
			drop_connection(f);
			return -EIO;
		}
	/* In-process drivers (test:) accept the callback but never close on
	 * their own; should a driver refuse it, it cannot report a close
	 * either, so that is not an error. */
	f->close_cb = virConnectRegisterCloseCallback(f->conn, on_close, f, NULL) == 0;

	if ((n = virConnectListAllDomains(f->conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE)) < 0) {
		*why = alloc_printf("cannot list domains: %s", last_error());
		drop_connection(f);
		return -EIO;
	}
	if (f->ops.on_connection)
		f->ops.on_connection(f->ud, true, NULL);
	f->ops.on_reconcile_begin(f->ud);
	for (int i = 0; i < n; i++) {
		report(f, doms[i], true);
		virDomainFree(doms[i]);
	}
	free(doms);
	f->ops.on_reconcile_end(f->ud);
	return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *ud)
{
	(void)s;
	(void)usec;
	struct libvirt_events_follower *f = ud;
	_cleanup_free_ char *why = NULL;
	if (connect_and_reconcile(f, &why) < 0) {
		retry_later(f, why ? why : "out of memory");
		return 0;
	}
	f->backoff = f->backoff_min;
	log_notice("libvirt: following %s%s", f->uri, f->failures ? " (connected again)" : "");
	f->failures = 0;
	return 0;
}

int libvirt_events_follower_new(sd_event *e, const char *uri, const struct libvirt_events_ops *ops, void *ud,
		      const struct libvirt_events_follower_opts *opts, struct libvirt_events_follower **out)
{
	int r;

	*out = NULL;
	if (!e || !uri || !*uri || !ops || !ops->on_reconcile_begin || !ops->on_domain_running ||
	    !ops->on_reconcile_end || !ops->on_domain_stopped || !ops->on_domain_changed)
		return -EINVAL;
	if (libvirt_events_bridge_loop() != e)
		return -ENXIO;
	_cleanup_(libvirt_events_follower_freep) struct libvirt_events_follower *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->loop = sd_event_ref(e);
	f->ops = *ops;
	f->ud = ud;
	f->backoff_min = opts && opts->backoff_min_usec ? opts->backoff_min_usec : BACKOFF_MIN_DEFAULT;
	f->backoff_max = opts && opts->backoff_max_usec ? opts->backoff_max_usec : BACKOFF_MAX_DEFAULT;
	if (f->backoff_max < f->backoff_min)
		f->backoff_max = f->backoff_min;
	f->backoff = f->backoff_min;
	for (int i = 0; i < CB_N; i++)
		f->cb_ids[i] = -1;
	if (!(f->uri = strdup(uri)))
		return -ENOMEM;
	if ((r = sd_event_add_time(e, &f->retry, CLOCK_MONOTONIC, 0, 1000, on_retry, f)) < 0)
		return r;
	/* time 0 is in the past: the first attempt runs on the next iteration */
	sd_event_source_set_enabled(f->retry, SD_EVENT_ONESHOT);
	*out = TAKE_PTR(f);
	return 0;
}

void libvirt_events_follower_free(struct libvirt_events_follower *f)
{
	if (!f)
		return;
	drop_connection(f);
	sd_event_source_disable_unref(f->retry);
	sd_event_unref(f->loop);
	free(f->uri);
	free(f);
}

int libvirt_events_follower_reconnect(struct libvirt_events_follower *f)
{
	drop_connection(f);
	f->backoff = f->backoff_min;
	schedule(f, 0);
	return 0;
}

bool libvirt_events_follower_connected(const struct libvirt_events_follower *f)
{
	return f->conn != NULL;
}

virConnectPtr libvirt_events_follower_conn(const struct libvirt_events_follower *f)
{
	return f->conn;
}

uint64_t libvirt_events_follower_retry_delay(const struct libvirt_events_follower *f)
{
	return f->backoff;
}
