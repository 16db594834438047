/* SPDX-License-Identifier: MIT */
#include "base/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
/* The location is the caller's, which log_emit passes on: without this,
 * sd_journal_sendv adds log.c's own as a second CODE_FILE. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "proto/cleanup.h"

/* Fixed for good: operators' searches and the catalog name them. */
static const struct {
	const char *id, *name;
} msgs[VPMU_MSG__COUNT] = {
	[VPMU_MSG_ADMITTED] = { "e8b58951e92a43f688b6594e39b34b45", "admitted" },
	[VPMU_MSG_REFUSED] = { "46798f458615474eac20b16f3150863a", "refused" },
	[VPMU_MSG_PREEMPTED] = { "c53ce85c6be7434d91f313fac5d98eb7", "preempted" },
	[VPMU_MSG_RELEASED] = { "ca0859014aba499fb074fbd5092d10dc", "released" },
	[VPMU_MSG_RESTORED] = { "5e09b336efcb4671a1300196385affa2", "restored" },
	[VPMU_MSG_PLAN_APPLIED] = { "ca1634c3ec8545568f6a361a8fe5d319", "plan-applied" },
	[VPMU_MSG_CONFIG_RELOADED] = { "786ef3dec1c848a6a55d745a22ff2906", "config-reloaded" },
	[VPMU_MSG_READY] = { "dee1e140a5be423bab750b5e2080d6e8", "ready" },
};

/*
 * The process's one log setting: written once by log_init at start, before
 * the event loop, read by every line after. Every layer logs and none of
 * them carries the daemon's context, so it lives here rather than being
 * passed down through each call.
 */
static struct log_target target;

const char *log_msg_id(enum log_msg msg)
{
	return msg > VPMU_MSG_NONE && msg < VPMU_MSG__COUNT ? msgs[msg].id : NULL;
}

const char *log_msg_name(enum log_msg msg)
{
	return msg > VPMU_MSG_NONE && msg < VPMU_MSG__COUNT ? msgs[msg].name : NULL;
}

bool log_stream_is_journal(const char *journal_stream, int fd)
{
	unsigned long long dev, ino;
	int end = 0;
	struct stat st;

	if (!journal_stream || !journal_stream[0])
		return false;
	if (sscanf(journal_stream, "%llu:%llu%n", &dev, &ino, &end) != 2 || journal_stream[end] != '\0')
		return false;
	if (fstat(fd, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

struct log_target log_target_detect(void)
{
	/* sd_journal_sendv reports success when the journal's socket does not
	 * exist (it drops the entry silently): without the socket, stderr. */
	return (struct log_target){ .journal = log_stream_is_journal(getenv("JOURNAL_STREAM"), STDERR_FILENO) &&
					       access(LOG_JOURNAL_SOCKET, F_OK) == 0 };
}

void log_init(const struct log_target *t)
{
	target = t ? *t : (struct log_target){ 0 };
}

char *log_format_line(int priority, const struct log_fields *f, const char *text)
{
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	if (!m)
		return NULL;
	fprintf(m, "<%d>%s", priority & LOG_PRIMASK, text);
	if (f) {
		/* the order today's lines had: vm, session, uid, via */
		if (f->vm)
			fprintf(m, " vm=%s", f->vm);
		if (f->session)
			fprintf(m, " session=%s", f->session);
		if (f->has_uid)
			fprintf(m, " uid=%u", (unsigned)f->uid);
		if (f->via)
			fprintf(m, " via=%s", f->via);
	}
	if (fclose(m) != 0)
		return NULL;
	return TAKE_PTR(buf);
}

static void free_fields(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
}

int log_journal_fields(int priority, enum log_msg msg, const struct log_fields *f, const char *file, int line,
		       const char *func, const char *text, char *out[LOG_JOURNAL_FIELDS_MAX])
{
	int n = 0;
#define ADD(...)                                                \
	do {                                                    \
		if (!(out[n] = alloc_printf(__VA_ARGS__))) {    \
			free_fields(out, n);                    \
			return -ENOMEM;                         \
		}                                               \
		n++;                                            \
	} while (0)
	ADD("MESSAGE=%s", text);
	ADD("PRIORITY=%d", priority & LOG_PRIMASK);
	ADD("SYSLOG_IDENTIFIER=vpmud");
	if (log_msg_id(msg))
		ADD("MESSAGE_ID=%s", log_msg_id(msg));
	if (file)
		ADD("CODE_FILE=%s", file);
	if (line > 0)
		ADD("CODE_LINE=%d", line);
	if (func)
		ADD("CODE_FUNC=%s", func);
	if (f) {
		if (f->vm)
			ADD("VPMU_VM=%s", f->vm);
		if (f->session)
			ADD("VPMU_SESSION=%s", f->session);
		if (f->has_uid)
			ADD("VPMU_UID=%u", (unsigned)f->uid);
		if (f->via)
			ADD("VPMU_DOOR=%s", f->via);
		if (f->generation)
			ADD("VPMU_GENERATION=%" PRIu64, f->generation);
		if (f->origin)
			ADD("VPMU_ORIGIN=%s", f->origin);
	}
#undef ADD
	return n;
}

static int journal_send(const char *file, int line, const char *func, int priority, enum log_msg msg,
			const struct log_fields *f, const char *text)
{
	char *fields[LOG_JOURNAL_FIELDS_MAX];
	struct iovec iov[LOG_JOURNAL_FIELDS_MAX];
	int n = log_journal_fields(priority, msg, f, file, line, func, text, fields);

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++)
		iov[i] = (struct iovec){ .iov_base = fields[i], .iov_len = strlen(fields[i]) };
	int r = sd_journal_sendv(iov, n);
	free_fields(fields, n);
	return r;
}

void log_emit(const char *file, int line, const char *func, int priority, enum log_msg msg,
	      const struct log_fields *f, const char *fmt, ...)
{
	/* allocated: a line may carry names, paths and messages of any length */
	_cleanup_free_ char *text = NULL, *out = NULL;
	va_list ap;

	va_start(ap, fmt);
	text = alloc_vprintf(fmt, ap);
	va_end(ap);
	/* A journal that does not take the entry (not listening, full) still
	 * gets the line through stderr, which is its stream too. */
	if (text && target.journal && journal_send(file, line, func, priority, msg, f, text) >= 0)
		return;
	out = text ? log_format_line(priority, f, text) : NULL;
	/* One write per line keeps lines whole when several processes share
	 * stderr (tests run daemons side by side). */
	if (out)
		fprintf(stderr, "%s\n", out);
	else
		fprintf(stderr, "<%d>out of memory formatting a log line\n", priority & LOG_PRIMASK);
	fflush(stderr);
}
