/* SPDX-License-Identifier: MIT */
/*
 * state: the daemon's durable leases, one file per lease in the state
 * directory, so that persisting a change costs what it changes (libvirt
 * keeps one status file per running domain for the same reason).
 *
 * A put is atomic and durable before it returns (write a temp file, fsync,
 * rename over the old one, fsync the directory); a delete is an unlink
 * followed by an fsync of the directory. A change acknowledged after either
 * survives a crash at any point.
 *
 * The store does not interpret a lease's text (the broker writes JSON);
 * it only guarantees that what it accepted, it gives back at load:
 * state_put refuses a text longer than STATE_LEASE_MAX, and state_load
 * reads every text up to that size.
 */
#ifndef VPMU_STATE_H
#define VPMU_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Above the largest lease the doors can produce (1024 vCPUs, each with
 * the longest CPU list of 4096 CPUs). */
#define STATE_LEASE_MAX (16u << 20)

enum state_kind {
	STATE_VM = 0,
	STATE_SESSION,
};

struct state;

/* The lock file a running vpmud holds in its state directory. */
#define STATE_LOCK "lock"

/*
 * Opens (and creates, mode 0700) dir and its lease folder, and takes an
 * exclusive lock on dir/STATE_LOCK for as long as it stays open (-EBUSY
 * when another process holds it: a second vpmud on the same state must
 * not restore, reject or migrate what the first one serves). A state.json
 * left by an older vpmud (format 1: one document with every lease) is
 * split into lease files, each the old entry plus "seq", its rank in the
 * old restore order (VMs first, then sessions), and renamed
 * state.json.migrated-<unix time>; one that cannot be read as format 1 (or
 * is not a regular file: opened without blocking) is moved into
 * "rejected". Each entry or member the migration could not use (not a
 * lease, a second lease of one name, too large) stays in the kept file and
 * is named, with why, through the first state_load's fn_rejected. On failure why says what failed; on success it
 * holds what the migration did, for the log ("" when nothing).
 */
int state_open(const char *dir, struct state **out, char *why, size_t whylen);
struct state *state_close(struct state *s); /* returns NULL */
const char *state_dir(const struct state *s);

/* name: a lease name as the protocol allows it (1..64 of [A-Za-z0-9._-],
 * not "." or ".."). -EFBIG above STATE_LEASE_MAX, -EINVAL for a bad
 * name; nothing is written then. */
int state_put(struct state *s, enum state_kind kind, const char *name, const char *text, size_t len);
/* -ENOENT when there is no such lease (not an error for callers that
 * release what may never have been saved). */
int state_delete(struct state *s, enum state_kind kind, const char *name);

/*
 * Reports first what the migration could not use (see state_open: path
 * "DIR/state.json, vms[3]", moved_to the file that keeps it). Then calls
 * fn for every lease file, in no particular order (the broker sorts
 * by the sequence number it stores in each text). A file that is not a
 * regular file, is larger than STATE_LEASE_MAX or not
 * named as state_put names files (a temporary file a crash left behind
 * included) is moved aside into the state directory's "rejected" folder
 * as NAME.<unix time> and reported through fn_rejected (may be NULL) with
 * where it went and why; it is never deleted. When fn returns a negative
 * errno (but -ENOMEM) the file is moved aside the same way with the
 * errno's message. Returns 0, or a negative errno when the directory or a
 * file cannot be read for the machine's reasons (EIO, out of descriptors:
 * the file says nothing wrong of itself and stays where it is) or memory
 * runs out: the caller does not start on a partial set. Paths and reasons reach fn_rejected escaped
 * (proto/textesc.h): file names are outside input.
 */
typedef int (*state_lease_fn)(enum state_kind kind, const char *name, const char *text, size_t len,
			      void *userdata);
typedef void (*state_rejected_fn)(const char *path, const char *moved_to, const char *why,
				  void *userdata);
int state_load(struct state *s, state_lease_fn fn, state_rejected_fn fn_rejected, void *userdata);

/*
 * The format 1 parser of state_open's migration, on len bytes: fn gets
 * each usable entry as the text of its lease file (the entry plus "seq")
 * and may refuse it (-EFBIG: skipped; another negative errno stops the
 * walk and is returned); skip (may be NULL) gets each part that is not
 * migrated: what ("vms", "vms[3]", a member) and why. -EINVAL with why
 * when the text is not a format 1 document at all.
 */
typedef int (*state_legacy_entry_fn)(enum state_kind kind, const char *name, const char *text, size_t len,
				     void *userdata);
typedef void (*state_legacy_skip_fn)(const char *what, const char *why, void *userdata);
int state_legacy_parse(const char *text, size_t len, state_legacy_entry_fn fn, state_legacy_skip_fn skip,
		       void *userdata, char *why, size_t whylen);

/* Moves one saved lease aside (into "rejected") without deleting it: for a
 * lease whose text parsed but that can no longer be restored. */
int state_reject(struct state *s, enum state_kind kind, const char *name, const char *why,
		 char *moved_to, size_t moved_len);

#endif
