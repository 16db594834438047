// SPDX-License-Identifier: MIT
#include "proto/frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

int frame_reader_init(struct frame_reader *r, size_t max)
{
	if (!r || max == 0 || max > PROTO_MAX_RESPONSE)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	r->max = max;
	return 0;
}

void frame_reader_fini(struct frame_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

/* Drop bytes already handed out, so the buffer holds at most the frames the
 * caller has not drained plus one partial frame. */
static void compact(struct frame_reader *r)
{
	if (r->start == 0)
		return;
	memmove(r->buf, r->buf + r->start, r->len - r->start);
	r->len -= r->start;
	r->start = 0;
}

#define FRAME_KEEP_BUFFER (16u << 10)

static int reserve(struct frame_reader *r, size_t extra)
{
	size_t want = r->len + extra + 1; /* +1: room to NUL-terminate a frame */
	size_t cap;
	char *nb;

	if (want <= r->cap)
		return 0;
	cap = r->cap ? r->cap : 4096;
	while (cap < want)
		cap *= 2;
	nb = realloc(r->buf, cap);
	if (!nb)
		return -ENOMEM;
	r->buf = nb;
	r->cap = cap;
	return 0;
}

int frame_reader_feed(struct frame_reader *r, const void *data, size_t len)
{
	const char *in = data;
	size_t tail; /* bytes of the unterminated frame before this feed */
	const char *nl;
	size_t take;
	int ret;

	if (!r || (!data && len))
		return -EINVAL;
	if (r->overflow)
		return -EMSGSIZE;
	compact(r);
	/* A large frame's buffer is given back once it is consumed: one big
	 * request must not stay resident for the life of the connection. */
	if (r->len == 0 && r->cap > FRAME_KEEP_BUFFER) {
		free(r->buf);
		r->buf = NULL;
		r->cap = 0;
	}
	/* Length of the unterminated frame already buffered = bytes after the
	 * last newline we hold. */
	nl = r->len ? memrchr(r->buf, '\n', r->len) : NULL;
	tail = nl ? r->len - (size_t)(nl - r->buf) - 1 : r->len;

	/* Accept bytes only while the current frame stays within max: a
	 * newline resets the running length. */
	take = 0;
	while (take < len) {
		const char *p = memchr(in + take, '\n', len - take);
		size_t seg = p ? (size_t)(p - (in + take)) : len - take;

		if (tail + seg > r->max) {
			take += r->max - tail;
			r->overflow = true;
			break;
		}
		take += seg;
		if (!p)
			break;
		take++; /* the newline */
		tail = 0;
	}
	if (take > 0) {
		ret = reserve(r, take);
		if (ret < 0)
			return ret;
		memcpy(r->buf + r->len, in, take);
		r->len += take;
	}
	return r->overflow ? -EMSGSIZE : 0;
}

int frame_reader_next(struct frame_reader *r, const char **frame, size_t *len)
{
	if (!r || !frame || !len)
		return -EINVAL;
	for (;;) {
		char *begin = r->buf + r->start;
		char *nl;
		size_t n;

		if (r->start >= r->len)
			break;
		nl = memchr(begin + r->scanned, '\n', r->len - r->start - r->scanned);
		if (!nl) {
			r->scanned = r->len - r->start;
			break;
		}
		n = (size_t)(nl - begin);
		*nl = '\0';
		r->start += n + 1;
		r->scanned = 0;
		/* a bare "\r" is what a terminal sends for an empty CRLF line */
		if (n == 0 || (n == 1 && begin[0] == '\r'))
			continue;
		*frame = begin;
		*len = n;
		return 1;
	}
	return r->overflow ? -EMSGSIZE : 0;
}

bool frame_reader_pending(const struct frame_reader *r)
{
	return r && (r->overflow || r->len > r->start);
}

int frame_encode(struct json_object *obj, size_t max, char **out, size_t *out_len)
{
	const char *text;
	size_t n;
	char *buf;

	if (!obj || !out || !out_len || !json_object_is_type(obj, json_type_object))
		return -EINVAL;
	text = json_object_to_json_string_length(obj,
		JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!text)
		return -ENOMEM;
	if (n > max)
		return -EMSGSIZE;
	buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, n);
	buf[n] = '\n';
	*out = buf;
	*out_len = n + 1;
	return 0;
}

size_t frame_utf8_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf; /* range of the second byte */
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong below U+0800 */
		else if (c == 0xed)
			hi = 0x9f; /* U+D800..U+DFFF: surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong below U+10000 */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		/* 80..C1: a continuation byte first, or an overlong two-byte
		 * form; F5..FF: never in UTF-8 */
		return 0;
	}
	if (left < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++)
		if (p[k] < 0x80 || p[k] > 0xbf)
			return 0;
	return n;
}

int frame_check_utf8(const char *buf, size_t len, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)buf;

	for (size_t i = 0; i < len;) {
		size_t n = frame_utf8_len(p + i, len - i);

		if (!n) {
			if (bad)
				*bad = i;
			return -EILSEQ;
		}
		i += n;
	}
	return 0;
}
