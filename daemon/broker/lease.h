/* SPDX-License-Identifier: MIT */
/*
 * lease: a lease's text in the store, written by the broker and read back
 * at restore. The text is the request that would make the lease again (the
 * socket protocol's own form, so that the restore validates it exactly as
 * a live request) and what the request does not carry:
 *   {"seq":N,"request":{"method","params"},"uid":U,"origin":"…",
 *    "follows_connection":true (only then),"owner_start":T (a process owns it)}
 * seq is the lease id: arrival order, replayed in that order at restore.
 * Everything here reads outside input (a file anyone with write access to
 * the state directory could have edited): tests/fuzz_lease.c fuzzes it.
 */
#ifndef VPMU_LEASE_H
#define VPMU_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "broker/state.h"
#include "proto/proto.h"

#define LEASE_ORIGIN_LEN 32
/* The largest seq and owner_start taken: exact in every JSON reader (2^53),
 * far above what vpmud assigns or a clock-tick start time reaches. */
#define LEASE_SEQ_MAX (INT64_C(1) << 53)
#define LEASE_START_MAX (INT64_C(1) << 53)
/* Why a saved lease cannot be used: a protocol message and some words. */
#define LEASE_WHY (PROTO_MESSAGE_MAX + 128)

struct lease_rec {
	enum state_kind kind;
	char name[PROTO_NAME_MAX + 1];
	uint64_t seq;
	struct proto_request req;
	uid_t uid;
	char origin[LEASE_ORIGIN_LEN];
	uint64_t owner_start;
	bool has_start;               /* the text carried an owner_start */
	bool follows;
	bool resave;                  /* its seq had to change */
};

/* The text of a lease, newline-terminated, in *text (malloc'd). */
int lease_encode(uint64_t seq, struct proto_request *req, uid_t uid, const char *origin, bool follows,
		 bool has_start, uint64_t start, char **text, size_t *len);

/*
 * Reads a lease's text as the restore does: 0 with out filled (its req to
 * be released with proto_request_fini), -EINVAL with why (and perr, when
 * not NULL, holding the protocol's refusal of the saved request), -ENOMEM.
 * Nothing is taken on trust: JSON that is strict and UTF-8, only the
 * members above (a rewrite would lose any other), every number in its
 * range (uid within uid_t, never (uid_t)-1; seq 1..LEASE_SEQ_MAX;
 * owner_start 0..LEASE_START_MAX) and the request through the protocol's
 * own validation. why echoes saved bytes only escaped (proto/textesc.h).
 */
int lease_parse(enum state_kind kind, const char *name, const char *text, size_t len, struct lease_rec *out,
		char *why, size_t whylen, struct proto_error *perr);

#endif
