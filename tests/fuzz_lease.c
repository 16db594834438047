// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the state directory's files as a restore reads them.
 * The first byte picks the lease kind; the rest goes through lease_parse
 * (a lease file) and state_legacy_parse (a format 1 state.json, each entry
 * it would migrate through lease_parse as well). A lease that parses must
 * encode into a text that parses into the same lease, and encode again
 * into the same text; refusals must say why in printable ASCII (saved bytes escaped).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/lease.h"
#include "broker/state.h"

static void text_only(const char *msg)
{
	/* escaped outside bytes leave only printable ASCII */
	for (const char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			abort();
}

static void one_lease(enum state_kind kind, const char *name, const char *text, size_t len)
{
	struct lease_rec rec, again;
	char why[LEASE_WHY];
	int r = lease_parse(kind, name, text, len, &rec, why, sizeof(why), NULL);
	if (r == -ENOMEM)
		return;
	if (r < 0) {
		if (!why[0])
			abort();
		text_only(why);
		return;
	}
	if (rec.uid == (uid_t)-1 || rec.seq < 1 || rec.seq > (uint64_t)LEASE_SEQ_MAX ||
	    rec.owner_start > (uint64_t)LEASE_START_MAX)
		abort();
	char *t1, *t2;
	size_t l1, l2;
	if (lease_encode(rec.seq, &rec.req, rec.uid, rec.origin, rec.follows, rec.has_start, rec.owner_start, &t1,
			 &l1) < 0) {
		proto_request_fini(&rec.req);
		return;
	}
	if (lease_parse(kind, name, t1, l1, &again, why, sizeof(why), NULL) != 0)
		abort();
	if (again.seq != rec.seq || again.uid != rec.uid || again.follows != rec.follows ||
	    again.has_start != rec.has_start || again.owner_start != rec.owner_start ||
	    strcmp(again.origin, rec.origin) || again.req.method != rec.req.method)
		abort();
	if (lease_encode(again.seq, &again.req, again.uid, again.origin, again.follows, again.has_start,
			 again.owner_start, &t2, &l2) == 0) {
		if (l1 != l2 || memcmp(t1, t2, l1))
			abort();
		free(t2);
	}
	free(t1);
	proto_request_fini(&again.req);
	proto_request_fini(&rec.req);
}

static int on_entry(enum state_kind kind, const char *name, const char *text, size_t len, void *userdata)
{
	(void)userdata;
	one_lease(kind, name, text, len);
	return 0;
}

static void on_skip(const char *what, const char *why, void *userdata)
{
	(void)userdata;
	text_only(what);
	text_only(why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum state_kind kind = data[0] & 1 ? STATE_SESSION : STATE_VM;
	size_t len = size - 1;
	/* a copy without a NUL after it: the parsers must stop at len */
	char *text = malloc(len ? len : 1);
	if (!text)
		return 0;
	memcpy(text, data + 1, len);
	one_lease(kind, "a", text, len);
	char why[256];
	if (state_legacy_parse(text, len, on_entry, on_skip, NULL, why, sizeof(why)) == -EINVAL)
		text_only(why);
	free(text);
	return 0;
}
