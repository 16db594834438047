// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: bytes as a config file holds them, through the parser
 * config_load_file uses (config_parse_text). What it must keep: a refusal
 * leaves every setting as it was, an acceptance leaves every setting
 * within its rules, and no message carries a byte outside printable ASCII
 * (messages reach the log; outside bytes are escaped).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/config.h"

static void text_only(const char *msg)
{
	/* escaped outside bytes leave only printable ASCII */
	for (const char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			abort();
}

static void terminated(const char *field, size_t cap)
{
	if (!memchr(field, '\0', cap))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c, before;
	char err[CONFIG_ERR_MAX], applied[512], ignored[512];
	/* a copy without a NUL after it: the parser must stop at size */
	char *text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	config_defaults(&c);
	c.default_priority = 7; /* something the text would have to change */
	before = c;
	memset(err, 0x01, sizeof(err));
	int r = config_parse_text(text, size, "/etc/vpmu/vpmud.conf", &c, err, sizeof(err));
	terminated(err, sizeof(err));
	text_only(err);
	if (r < 0) {
		if (memcmp(&c, &before, sizeof(c)))
			abort();
		if (!err[0])
			abort(); /* a refusal says why */
	} else {
		terminated(c.socket, sizeof(c.socket));
		terminated(c.state_dir, sizeof(c.state_dir));
		terminated(c.pmu, sizeof(c.pmu));
		terminated(c.kvm, sizeof(c.kvm));
		terminated(c.admin_group, sizeof(c.admin_group));
		terminated(c.libvirt_uri, sizeof(c.libvirt_uri));
		terminated(c.dbus, sizeof(c.dbus));
		if (c.default_priority < 0 || c.default_priority > 1000 || !config_class_valid(c.default_class))
			abort();
		if (c.socket[0] != '/' || c.state_dir[0] != '/' || c.max_clients < 1 || c.max_clients > 65536)
			abort();
		if (config_check(&c, err, sizeof(err)) < 0)
			text_only(err);
		config_apply_reload(&before, &c, applied, sizeof(applied), ignored, sizeof(ignored));
		text_only(applied);
		text_only(ignored);
	}
	free(text);
	return 0;
}
