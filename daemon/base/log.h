/* SPDX-License-Identifier: MIT */
/*
 * log: one line per message, to one of two places (docs/logging.md).
 *
 *  - stderr (the default, and whenever stderr is not the journal): the
 *    syslog priority prefix "<N>" that journald turns into the entry's
 *    priority, the text, then the typed fields as " key=value" suffixes
 *    (" vm=web", " session=perf1", " uid=0", " via=socket") so that a grep
 *    for vm=web finds every line about that VM.
 *  - the journal's native protocol (sd_journal_sendv), when log_init was
 *    told that stderr is the journal (JOURNAL_STREAM names stderr's
 *    device and inode): MESSAGE is the text alone, and the fields are
 *    journal fields (VPMU_VM, VPMU_SESSION, VPMU_UID, VPMU_DOOR,
 *    VPMU_GENERATION, VPMU_ORIGIN), with a MESSAGE_ID for the events an
 *    operator searches for (systemd/vpmu.catalog explains each).
 *
 * Call sites pass fields typed, never inside the text:
 *   log_event(LOG_NOTICE, VPMU_MSG_RELEASED, &(struct log_fields){ .vm = name },
 *             "vm %s released: %s", name, reason);
 */
#ifndef VPMU_LOG_H
#define VPMU_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

/* The events with a MESSAGE_ID. Each has an entry in systemd/vpmu.catalog;
 * an id, once shipped, never changes meaning. */
enum log_msg {
	VPMU_MSG_NONE = 0,
	VPMU_MSG_ADMITTED,        /* a VM lease or session was granted its place in the plan */
	VPMU_MSG_REFUSED,         /* the arbiter refused a lease (admission) */
	VPMU_MSG_PREEMPTED,       /* another lease's change downgraded a VM's PMC routes */
	VPMU_MSG_RELEASED,        /* a VM lease or session ended */
	VPMU_MSG_RESTORED,        /* a saved lease came back at start */
	VPMU_MSG_PLAN_APPLIED,    /* a new plan generation reached KVM and the sessions */
	VPMU_MSG_CONFIG_RELOADED, /* SIGHUP re-read the config file */
	VPMU_MSG_READY,           /* the daemon serves its doors */
	VPMU_MSG__COUNT,
};

/* The MESSAGE_ID of msg as 32 lowercase hex digits, NULL for
 * VPMU_MSG_NONE or out of range. */
const char *log_msg_id(enum log_msg msg);
/* A short name ("admitted"), for docs and tests. */
const char *log_msg_name(enum log_msg msg);

/* What a line is about. Unset members are left out: NULL strings,
 * has_uid false, generation 0 (the arbiter's plans start at 1). */
struct log_fields {
	const char *vm;          /* VPMU_VM, " vm=" */
	const char *session;     /* VPMU_SESSION, " session=" */
	bool has_uid;
	uid_t uid;               /* VPMU_UID, " uid=": the lease's owner */
	const char *via;         /* VPMU_DOOR, " via=": the door (socket, dbus, libvirt, state) */
	/* journal only: the stderr lines say these in their text, if at all */
	uint64_t generation;     /* VPMU_GENERATION: the plan generation the change made */
	const char *origin;      /* VPMU_ORIGIN: who made the change (vpmuctl, libvirt, dbus, restore, ...) */
};

/* Where lines go; made once at start and kept for the process. */
struct log_target {
	bool journal;            /* stderr is the journal: use the native protocol */
};

/*
 * Whether fd is the stream JOURNAL_STREAM names ("DEV:INODE" in decimal,
 * as systemd sets it for StandardOutput/StandardError=journal). NULL or
 * "" journal_stream: no. A value that does not parse, or an fd that
 * fstat refuses: no (the stderr lines are always a safe choice).
 */
bool log_stream_is_journal(const char *journal_stream, int fd);
/* Where sd-journal sends entries (fixed in libsystemd). */
#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"
/* The target for this process: the journal when $JOURNAL_STREAM is
 * stderr and the journal's socket exists. */
struct log_target log_target_detect(void);

/* Chooses the target for the rest of the process; called once at start,
 * before the daemon logs anything that should reach the journal. Until
 * then (and in tools and tests that never call it) lines go to stderr. */
void log_init(const struct log_target *t);

/* The stderr rendering, without the trailing newline; NULL when out of
 * memory. */
char *log_format_line(int priority, const struct log_fields *f, const char *text);

/* The journal fields of one message, each "KEY=value" allocated in out[]
 * (up to LOG_JOURNAL_FIELDS_MAX); returns the count, or -ENOMEM with
 * nothing left allocated. */
#define LOG_JOURNAL_FIELDS_MAX 14
int log_journal_fields(int priority, enum log_msg msg, const struct log_fields *f, const char *file, int line,
		       const char *func, const char *text, char *out[LOG_JOURNAL_FIELDS_MAX]);

void log_emit(const char *file, int line, const char *func, int priority, enum log_msg msg,
	      const struct log_fields *f, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* log_event(priority, msg, fields, fmt, ...): fields and the format travel
 * in __VA_ARGS__ because a compound literal's commas split macro
 * arguments. */
#define log_event(priority, msg, ...) log_emit(__FILE__, __LINE__, __func__, (priority), (msg), __VA_ARGS__)
#define log_write(priority, ...) log_emit(__FILE__, __LINE__, __func__, (priority), VPMU_MSG_NONE, NULL, __VA_ARGS__)

#define log_err(...) log_write(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_write(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

#endif
