/* SPDX-License-Identifier: MIT */
#include "proto/fileio.h"
#include "proto/config.h"

#include "proto/cleanup.h"
#include "proto/proto.h"
#include "proto/textesc.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->socket, sizeof(c->socket), "%s", CONFIG_DEFAULT_SOCKET);
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", CONFIG_DEFAULT_STATE_DIR);
	snprintf(c->pmu, sizeof(c->pmu), "auto");
	snprintf(c->kvm, sizeof(c->kvm), "auto");
	c->default_priority = 100;
	snprintf(c->default_class, sizeof(c->default_class), "preferred");
	snprintf(c->admin_group, sizeof(c->admin_group), "vpmu");
	c->max_clients = 256;
	c->max_clients_per_uid = 32;
	c->admin_reserved_clients = 32;
	c->first_frame_timeout = 5;
	c->idle_timeout = 60;
	/* On by default: a libvirt that is absent or down costs one log line
	 * and a backed-off retry, nothing else (docs/config.md). */
	snprintf(c->libvirt_uri, sizeof(c->libvirt_uri), "%s", CONFIG_DEFAULT_LIBVIRT_URI);
	snprintf(c->dbus, sizeof(c->dbus), "system");
	snprintf(c->metrics_file, sizeof(c->metrics_file), "%s", CONFIG_DEFAULT_METRICS_FILE);
	c->metrics_interval = CONFIG_DEFAULT_METRICS_INTERVAL;
}

bool config_class_valid(const char *cls)
{
	return proto_class_from_name(cls) >= 0;
}

static int set_string(char *dst, size_t cap, const char *key, const char *value, char *err, size_t errlen)
{
	size_t n = strlen(value);
	if (n == 0 || n >= cap) {
		snprintf(err, errlen, "field \"%s\": must be 1..%zu characters", key, cap - 1);
		return -EINVAL;
	}
	size_t bad = textesc_first_bad(value, n);
	if (bad < n) {
		snprintf(err, errlen, "field \"%s\": byte 0x%02X at position %zu is not text (a control or invisible format character, or not UTF-8)",
			 key, (unsigned char)value[bad], bad + 1);
		return -EINVAL;
	}
	memcpy(dst, value, n + 1);
	return 0;
}

static int parse_int(const char *key, const char *value, long lo, long hi, long *out, char *err,
		     size_t errlen)
{
	_cleanup_free_ char *shown = NULL;
	char *end;
	errno = 0;
	long v = strtol(value, &end, 10);
	if (errno || end == value || *end || v < lo || v > hi) {
		shown = textesc_dup(value, strlen(value));
		snprintf(err, errlen, "field \"%s\": must be an integer %ld..%ld, got \"%s\"", key, lo, hi,
			 shown ? shown : "?");
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen)
{
	long v;
	int r;
	/* value and key may come from anywhere (a file, the command line):
	 * messages echo them escaped */
	_cleanup_free_ char *shown = textesc_dup(value, strlen(value));
	if (!shown)
		return -ENOMEM;

	if (!strcmp(key, "socket")) {
		if (value[0] != '/') {
			snprintf(err, errlen, "field \"socket\": must be an absolute path");
			return -EINVAL;
		}
		return set_string(c->socket, sizeof(c->socket), key, value, err, errlen);
	}
	if (!strcmp(key, "state_dir")) {
		if (value[0] != '/') {
			snprintf(err, errlen, "field \"state_dir\": must be an absolute path");
			return -EINVAL;
		}
		return set_string(c->state_dir, sizeof(c->state_dir), key, value, err, errlen);
	}
	if (!strcmp(key, "pmu"))
		return set_string(c->pmu, sizeof(c->pmu), key, value, err, errlen);
	if (!strcmp(key, "kvm")) {
		if (strcmp(value, "auto") && strcmp(value, "ioctl") && strcmp(value, "advisory") &&
		    strcmp(value, "model")) {
			snprintf(err, errlen, "field \"kvm\": must be auto, ioctl, advisory or model, got \"%s\"",
				 shown);
			return -EINVAL;
		}
		return set_string(c->kvm, sizeof(c->kvm), key, value, err, errlen);
	}
	if (!strcmp(key, "kvm_model_reserve")) {
		if (strcmp(value, "per-cpu") && strcmp(value, "uniform")) {
			snprintf(err, errlen, "field \"kvm_model_reserve\": must be per-cpu or uniform, got \"%s\"",
				 shown);
			return -EINVAL;
		}
		return set_string(c->kvm_model_reserve, sizeof(c->kvm_model_reserve), key, value, err, errlen);
	}
	if (!strcmp(key, "default_priority")) {
		if ((r = parse_int(key, value, 0, 1000, &v, err, errlen)) < 0)
			return r;
		c->default_priority = (int)v;
		return 0;
	}
	if (!strcmp(key, "default_class")) {
		if (!config_class_valid(value)) {
			snprintf(err, errlen,
				 "field \"default_class\": must be guaranteed, preferred or shared, got \"%s\"",
				 shown);
			return -EINVAL;
		}
		return set_string(c->default_class, sizeof(c->default_class), key, value, err, errlen);
	}
	if (!strcmp(key, "admin_group"))
		return set_string(c->admin_group, sizeof(c->admin_group), key, value, err, errlen);
	if (!strcmp(key, "max_clients")) {
		if ((r = parse_int(key, value, 1, 65536, &v, err, errlen)) < 0)
			return r;
		c->max_clients = (unsigned)v;
		return 0;
	}
	if (!strcmp(key, "max_clients_per_uid")) {
		if ((r = parse_int(key, value, 1, 65536, &v, err, errlen)) < 0)
			return r;
		c->max_clients_per_uid = (unsigned)v;
		return 0;
	}
	if (!strcmp(key, "admin_reserved_clients")) {
		if ((r = parse_int(key, value, 0, 65535, &v, err, errlen)) < 0)
			return r;
		c->admin_reserved_clients = (unsigned)v;
		return 0;
	}
	if (!strcmp(key, "first_frame_timeout")) {
		if ((r = parse_int(key, value, 1, 3600, &v, err, errlen)) < 0)
			return r;
		c->first_frame_timeout = (unsigned)v;
		return 0;
	}
	if (!strcmp(key, "idle_timeout")) {
		if ((r = parse_int(key, value, 1, 86400, &v, err, errlen)) < 0)
			return r;
		c->idle_timeout = (unsigned)v;
		return 0;
	}
	if (!strcmp(key, "libvirt_uri")) {
		/* "none" turns the libvirt follower off. */
		if (!strcmp(value, "none")) {
			c->libvirt_uri[0] = '\0';
			return 0;
		}
		return set_string(c->libvirt_uri, sizeof(c->libvirt_uri), key, value, err, errlen);
	}
	if (!strcmp(key, "dbus")) {
		/* A D-Bus address is "transport:key=value,..."; sd-bus checks the rest. */
		if (strcmp(value, "system") && strcmp(value, "none") &&
		    (!strchr(value, ':') || !strchr(value, '=') || strpbrk(value, " \t"))) {
			snprintf(err, errlen,
				 "field \"dbus\": must be system, none or a bus address such as unix:path=/run/x, got \"%s\"",
				 shown);
			return -EINVAL;
		}
		return set_string(c->dbus, sizeof(c->dbus), key, value, err, errlen);
	}
	if (!strcmp(key, "metrics_file")) {
		/* "none" writes no metrics file. */
		if (!strcmp(value, "none")) {
			c->metrics_file[0] = '\0';
			c->metrics_file_set = true;
			return 0;
		}
		size_t n = strlen(value);
		if (value[0] != '/' || value[n - 1] == '/') {
			snprintf(err, errlen, "field \"metrics_file\": must be an absolute path to a file, or none, got \"%s\"",
				 shown);
			return -EINVAL;
		}
		r = set_string(c->metrics_file, sizeof(c->metrics_file), key, value, err, errlen);
		if (r == 0)
			c->metrics_file_set = true;
		return r;
	}
	if (!strcmp(key, "metrics_interval")) {
		if ((r = parse_int(key, value, 0, 86400, &v, err, errlen)) < 0)
			return r;
		c->metrics_interval = (unsigned)v;
		return 0;
	}
	_cleanup_free_ char *key_shown = textesc_dup(key, strlen(key));
	snprintf(err, errlen, "unknown field \"%s\"", key_shown ? key_shown : "?");
	return -EINVAL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static bool is_dev_null(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
}

/* "label:line: " then the rest, into err: the label is already escaped. */
static int line_error(char *err, size_t errlen, const char *label, unsigned lineno, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int line_error(char *err, size_t errlen, const char *label, unsigned lineno, const char *fmt, ...)
{
	int n = snprintf(err, errlen, "%s:%u: ", label, lineno);
	size_t used = n < 0 ? 0 : (size_t)n < errlen ? (size_t)n : errlen ? errlen - 1 : 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int config_parse_text(const char *text, size_t len, const char *label, struct config *c, char *err,
		      size_t errlen)
{
	struct config next = *c;
	char line[CONFIG_LINE_MAX];
	unsigned lineno = 0;
	_cleanup_free_ char *where = textesc_dup(label, strlen(label));
	if (!where)
		return -ENOMEM;
	for (size_t off = 0; off < len;) {
		lineno++;
		const char *nl = memchr(text + off, '\n', len - off);
		size_t ll = nl ? (size_t)(nl - (text + off)) : len - off;
		if (ll > sizeof(line) - 2)
			return line_error(err, errlen, where, lineno, "line longer than %zu characters", sizeof(line) - 2);
		memcpy(line, text + off, ll);
		line[ll] = '\0';
		off += ll + (nl ? 1 : 0);
		/* A NUL would end the line early and a control byte is no
		 * setting: either means this is not the text file it should be. */
		size_t bad = textesc_first_bad(line, ll);
		if (bad < ll && !(line[bad] == '\r' && bad == ll - 1))
			return line_error(err, errlen, where, lineno,
					  "byte 0x%02X at column %zu is not text (a control or invisible format character, or not UTF-8): not a config file",
					  (unsigned char)line[bad], bad + 1);
		char *s = trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			_cleanup_free_ char *shown = textesc_dup(s, strlen(s));
			return line_error(err, errlen, where, lineno, "expected \"key = value\", got \"%s\"",
					  shown ? shown : "?");
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		/* A value not in quotes ends where a comment begins: "#" or
		 * ";" after blank space (the shipped file's examples carry
		 * notes after their values). */
		if (value[0] != '"')
			for (char *c = value; *c; c++)
				if ((*c == '#' || *c == ';') && c > value && (c[-1] == ' ' || c[-1] == '\t')) {
					*c = '\0';
					value = trim(value);
					break;
				}
		size_t vl = strlen(value);
		if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
			value[vl - 1] = '\0';
			value++;
		}
		/* "path:line: " first, then config_set's words after it */
		line_error(err, errlen, where, lineno, "%s", "");
		size_t used = strlen(err);
		int r = config_set(&next, key, value, err + used, errlen - used);
		if (r < 0)
			return r;
	}
	if (errlen)
		err[0] = '\0';
	*c = next;
	return 0;
}

int config_load_file(const char *path, bool required, struct config *c, char *err, size_t errlen)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	char why[128];
	/* Read whole and without blocking: a FIFO or a directory in the
	 * config's place is refused by name, never waited on. */
	int r = fileio_read_all(AT_FDCWD, path, CONFIG_FILE_MAX, FILEIO_REGULAR, &text, &len);

	if (r == -ENOENT && !required)
		return 0;
	if (r == -EBADFD && is_dev_null(path))
		r = 0; /* the usual way to say "no config file": nothing to read */
	if (r < 0) {
		_cleanup_free_ char *shown = textesc_dup(path, strlen(path));
		snprintf(err, errlen, "%s: %s", shown ? shown : "the config file",
			 fileio_strerror(r, AT_FDCWD, path, CONFIG_FILE_MAX, why, sizeof(why)));
		return r;
	}
	return config_parse_text(text ? text : "", len, path, c, err, errlen);
}

int config_check(const struct config *c, char *err, size_t errlen)
{
	if (c->admin_reserved_clients >= c->max_clients) {
		snprintf(err, errlen,
			 "admin_reserved_clients (%u) must be less than max_clients (%u): the rest is what other users share",
			 c->admin_reserved_clients, c->max_clients);
		return -EINVAL;
	}
	return 0;
}

static void append(char *buf, size_t len, const char *key)
{
	size_t used = strlen(buf);
	snprintf(buf + used, len - used, "%s%s", used ? "," : "", key);
}

void config_apply_reload(struct config *cur, const struct config *next, char *applied,
			 size_t applied_len, char *ignored, size_t ignored_len)
{
	applied[0] = ignored[0] = '\0';
	if (cur->default_priority != next->default_priority) {
		cur->default_priority = next->default_priority;
		append(applied, applied_len, "default_priority");
	}
	if (strcmp(cur->default_class, next->default_class)) {
		memcpy(cur->default_class, next->default_class, sizeof(cur->default_class));
		append(applied, applied_len, "default_class");
	}
	if (strcmp(cur->admin_group, next->admin_group)) {
		memcpy(cur->admin_group, next->admin_group, sizeof(cur->admin_group));
		append(applied, applied_len, "admin_group");
	}
	if (cur->max_clients != next->max_clients) {
		cur->max_clients = next->max_clients;
		append(applied, applied_len, "max_clients");
	}
	if (cur->max_clients_per_uid != next->max_clients_per_uid) {
		cur->max_clients_per_uid = next->max_clients_per_uid;
		append(applied, applied_len, "max_clients_per_uid");
	}
	if (cur->admin_reserved_clients != next->admin_reserved_clients) {
		cur->admin_reserved_clients = next->admin_reserved_clients;
		append(applied, applied_len, "admin_reserved_clients");
	}
	if (cur->first_frame_timeout != next->first_frame_timeout) {
		cur->first_frame_timeout = next->first_frame_timeout;
		append(applied, applied_len, "first_frame_timeout");
	}
	if (cur->idle_timeout != next->idle_timeout) {
		cur->idle_timeout = next->idle_timeout;
		append(applied, applied_len, "idle_timeout");
	}
	if (cur->metrics_interval != next->metrics_interval) {
		cur->metrics_interval = next->metrics_interval;
		append(applied, applied_len, "metrics_interval");
	}
	if (strcmp(cur->socket, next->socket))
		append(ignored, ignored_len, "socket");
	if (strcmp(cur->metrics_file, next->metrics_file))
		append(ignored, ignored_len, "metrics_file");
	if (strcmp(cur->state_dir, next->state_dir))
		append(ignored, ignored_len, "state_dir");
	if (strcmp(cur->pmu, next->pmu))
		append(ignored, ignored_len, "pmu");
	if (strcmp(cur->kvm, next->kvm))
		append(ignored, ignored_len, "kvm");
	if (strcmp(cur->kvm_model_reserve, next->kvm_model_reserve))
		append(ignored, ignored_len, "kvm_model_reserve");
	if (strcmp(cur->libvirt_uri, next->libvirt_uri))
		append(ignored, ignored_len, "libvirt_uri");
	if (strcmp(cur->dbus, next->dbus))
		append(ignored, ignored_len, "dbus");
}
