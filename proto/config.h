/* SPDX-License-Identifier: MIT */
/*
 * config: vpmud's settings, from built-in defaults, then the config file
 * (/etc/vpmu/vpmud.conf, "key = value" lines), then the command line.
 * docs/config.md lists every key.
 */
#ifndef VPMU_CONFIG_H
#define VPMU_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define CONFIG_DEFAULT_PATH "/etc/vpmu/vpmud.conf"
#define CONFIG_DEFAULT_SOCKET "/run/vpmu/vpmud.sock"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/vpmu"
#define CONFIG_DEFAULT_LIBVIRT_URI "qemu:///system"
#define CONFIG_DEFAULT_METRICS_FILE "/run/vpmu/metrics/vpmu.prom"
#define CONFIG_DEFAULT_METRICS_INTERVAL 15

/* The longest line the file may have, newline included: far above any
 * setting (every value is bounded by struct config), and a bound on what a
 * read buffers. */
#define CONFIG_LINE_MAX 1024
/* A config file is a few dozen lines; anything this large is not one. */
#define CONFIG_FILE_MAX (1024 * 1024)
/* Room for any message config_load_file or config_set writes: a line, plus
 * its place and what is wrong with it. The file's path is not counted, nor
 * the escapes of bytes that are not text: either cuts the end of the
 * message. */
#define CONFIG_ERR_MAX (CONFIG_LINE_MAX + 256)

struct config {
	char socket[108];           /* sockaddr_un.sun_path */
	char state_dir[512];
	char pmu[512];              /* auto, a model name, or a JSON model path */
	char kvm[16];               /* auto, ioctl, advisory, model */
	/* The model backend's perf half: per-cpu, or uniform (a first kernel
	 * that takes one mask for every CPU). Empty: per-cpu. Only with
	 * kvm = model: a kernel says what it takes. */
	char kvm_model_reserve[16];
	int default_priority;       /* for consumers that name none */
	char default_class[16];     /* guaranteed, preferred, shared */
	char admin_group[64];       /* members may change state */
	unsigned max_clients;          /* socket connections, all callers */
	/* Admission (docs/config.md, "Limits"): a caller that is neither root
	 * nor in admin_group may hold max_clients_per_uid connections, and
	 * such callers together at most max_clients - admin_reserved_clients. */
	unsigned max_clients_per_uid;
	unsigned admin_reserved_clients;
	unsigned first_frame_timeout;  /* s: a new connection's first request must be complete by then */
	unsigned idle_timeout;         /* s: a connection that neither watches nor sends a request is closed */
	char libvirt_uri[256];      /* empty ("none"): do not follow libvirt */
	char dbus[256];             /* "system", "none", or a bus address */
	/* The metrics file for node_exporter's textfile collector
	 * (docs/metrics.md); empty ("none"): none is written. */
	char metrics_file[512];
	bool metrics_file_set;      /* named by the file or the command line (else it follows the socket) */
	unsigned metrics_interval;     /* s: rewritten at least this often; 0: only on plan changes */
};

void config_defaults(struct config *c);

/*
 * Reads path over c. A missing file is fine when !required (returns 0, c
 * unchanged). On a bad line returns -EINVAL with err naming the file, the
 * line and the field; c is then unchanged.
 */
int config_load_file(const char *path, bool required, struct config *c, char *err, size_t errlen);

/*
 * The parser of config_load_file, on len bytes of text (NUL bytes
 * included: they are refused, as every control byte but tab is); label
 * names the text in messages. Every message echoes outside bytes escaped
 * (proto/textesc.h). On failure c is unchanged.
 */
int config_parse_text(const char *text, size_t len, const char *label, struct config *c, char *err,
		      size_t errlen);

/* Sets one key from a string, validating it (used by the file parser and by
 * command-line options). */
int config_set(struct config *c, const char *key, const char *value, char *err, size_t errlen);

/*
 * What a reload may change while running: priorities, class, group, limits.
 * Copies those from next into cur, and describes in applied (what changed)
 * and ignored (what differs but needs a restart) as comma-separated keys.
 */
void config_apply_reload(struct config *cur, const struct config *next, char *applied,
			 size_t applied_len, char *ignored, size_t ignored_len);

/* The rules between keys, checked once every source has been read (file,
 * then command line): -EINVAL with err naming the keys. */
int config_check(const struct config *c, char *err, size_t errlen);

bool config_class_valid(const char *cls);

#endif
