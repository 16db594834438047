/* SPDX-License-Identifier: MIT */
/*
 * frame: newline-delimited JSON framing for the vpmud socket. One frame is
 * one JSON object followed by '\n'; json-c escapes control characters inside
 * strings, so a serialised object never contains a raw newline and the line
 * boundary is the message boundary. See docs/protocol.md.
 */
#ifndef VPMU_FRAME_H
#define VPMU_FRAME_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/cleanup.h"

struct json_object;

/* json-c's releases, as cleanup attributes. Declared here (as json-c
 * declares them) rather than by including json-c, so that code that only
 * sees the protocol's structs does not see json-c's types. */
int json_object_put(struct json_object *obj);
static inline void json_object_putp(struct json_object **obj)
{
	if (*obj)
		json_object_put(*obj);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

struct json_tokener;
void json_tokener_free(struct json_tokener *tok);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct json_tokener *, json_tokener_free)
#define _cleanup_json_tokener_ _cleanup_(json_tokener_freep)

/* Largest request a server accepts, excluding the newline. */
#define PROTO_MAX_REQUEST (64u * 1024u)
/* Largest response/event a client accepts: a plan for thousands of CPUs
 * legitimately exceeds the request bound. */
#define PROTO_MAX_RESPONSE (16u * 1024u * 1024u)

/*
 * Incremental reader. Feed whatever a read() returned; take complete frames
 * with frame_reader_next(). A frame is refused as soon as more than 'max'
 * bytes have arrived without a newline, so an unterminated or oversized
 * message costs at most 'max' bytes of buffer.
 */
struct frame_reader {
	char *buf;
	size_t len;      /* bytes held */
	size_t cap;
	size_t start;    /* first byte not yet returned by _next */
	size_t scanned;  /* bytes from 'start' known to hold no newline */
	size_t max;
	bool overflow;   /* current frame exceeded max; stream is unusable */
};

/* max: 1..PROTO_MAX_RESPONSE. -EINVAL otherwise. */
int frame_reader_init(struct frame_reader *r, size_t max);
void frame_reader_fini(struct frame_reader *r);

/*
 * Buffer 'len' bytes. Returns 0, -ENOMEM, or -EMSGSIZE when the frame being
 * assembled grew past the limit; bytes after that point are dropped, but
 * frames completed before it are still returned by frame_reader_next().
 */
int frame_reader_feed(struct frame_reader *r, const void *data, size_t len);

/*
 * Take the next complete frame: returns 1 and points *frame at a
 * NUL-terminated line of *len bytes (newline removed; valid until the next
 * feed/next/fini call), 0 when no complete frame is buffered, -EMSGSIZE once
 * the oversized frame is reached. Empty lines are skipped so that a human
 * typing into socat can press Enter freely.
 */
int frame_reader_next(struct frame_reader *r, const char **frame, size_t *len);

/* True when bytes of an unfinished frame are buffered (a peer that closes
 * now has truncated a message). */
bool frame_reader_pending(const struct frame_reader *r);

/*
 * Serialise 'obj' as one frame (compact JSON + '\n') into a malloc'd buffer.
 * -EMSGSIZE if the JSON text exceeds 'max' bytes, -EINVAL if obj is not an
 * object, -ENOMEM.
 */
int frame_encode(struct json_object *obj, size_t max, char **out, size_t *out_len);

/*
 * Whether buf[0..len) is UTF-8 as RFC 3629 defines it: no overlong forms
 * (C0 AF), no UTF-16 surrogates (ED A0 80), nothing above U+10FFFF, no
 * truncated sequence. json-c's own check lets those through. 0, or
 * -EILSEQ with *bad the offset of the first byte of the bad sequence.
 */
int frame_check_utf8(const char *buf, size_t len, size_t *bad);

/* The length of the UTF-8 sequence at p (left > 0 bytes remain), or 0 when
 * it is not one RFC 3629 allows (overlong forms, surrogates, code points
 * above U+10FFFF, truncated). The one UTF-8 rule: textesc builds on it. */
size_t frame_utf8_len(const unsigned char *p, size_t left);

#endif
