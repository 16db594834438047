/* SPDX-License-Identifier: MIT */
#include "broker/owner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <unistd.h>

struct owner_watch {
	pid_t pid;
	int pidfd;
	sd_event_source *src;
	owner_gone_fn gone;
	void *userdata;
};

static int on_pidfd(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct owner_watch *w = userdata;
	(void)fd;
	(void)revents;
	/* One notification is all a lease needs; the callback may free w. */
	sd_event_source_set_enabled(s, SD_EVENT_OFF);
	w->gone(w, w->userdata);
	return 0;
}

int owner_watch_new(sd_event *ev, pid_t pid, int pidfd, owner_gone_fn gone, void *userdata,
		    struct owner_watch **out)
{
	struct owner_watch *w;
	int r;

	if (pid <= 0)
		return -EINVAL;
	if (pidfd < 0) {
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pidfd < 0)
			return -errno;
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		close(pidfd);
		return -ENOMEM;
	}
	w->pid = pid;
	w->pidfd = pidfd;
	w->gone = gone;
	w->userdata = userdata;
	r = sd_event_add_io(ev, &w->src, pidfd, EPOLLIN, on_pidfd, w);
	if (r < 0) {
		close(pidfd);
		free(w);
		return r;
	}
	*out = w;
	return 0;
}

void owner_watch_free(struct owner_watch *w)
{
	if (!w)
		return;
	sd_event_source_disable_unref(w->src);
	close(w->pidfd);
	free(w);
}

pid_t owner_watch_pid(const struct owner_watch *w)
{
	return w->pid;
}

int owner_watch_pidfd(const struct owner_watch *w)
{
	return w->pidfd;
}

int owner_start_time(pid_t pid, uint64_t *ticks)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	int e = errno;
	close(fd);
	if (n <= 0)
		return n < 0 ? -e : -EIO;
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: fields restart after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	p++;
	/* After ')' come field 3 (state) .. field 22 (starttime). */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EIO;
	}
	char *end;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (end == p + 1)
		return -EIO;
	*ticks = v;
	return 0;
}

bool owner_alive(pid_t pid, uint64_t start_ticks)
{
	uint64_t now;
	if (pid <= 0 || owner_start_time(pid, &now) < 0)
		return false;
	/* A zombie still has /proc/PID/stat: it is gone for our purposes. */
	char path[64], st[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (f) {
		size_t n = fread(st, 1, sizeof(st) - 1, f);
		fclose(f);
		st[n] = '\0';
		char *p = strrchr(st, ')');
		if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
			return false;
	}
	return start_ticks == 0 || now == start_ticks;
}
