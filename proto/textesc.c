/* SPDX-License-Identifier: MIT */
#include "proto/textesc.h"
#include "proto/frame.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How many bytes at p form one character of text (0: the byte at p is
 * not text): one UTF-8 sequence as the frame check takes it (RFC 3629),
 * and neither a control nor an invisible format character.
 */
static size_t text_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];
	if (c < 0x80)
		return c >= 0x20 && c != 0x7f ? 1 : 0;
	size_t n = frame_utf8_len(p, left);
	if (!n)
		return 0;
	/* C1 controls (U+0080..U+009F) act as controls for some terminals */
	if (c == 0xc2 && p[1] <= 0x9f)
		return 0;
	/* Invisible format characters that change what a reader sees: zero
	 * widths and direction marks (U+200B..U+200F), line and paragraph
	 * separators and bidi embeddings (U+2028..U+202E), bidi isolates
	 * (U+2066..U+2069), the byte order mark (U+FEFF). */
	if (c == 0xe2 && ((p[1] == 0x80 && ((p[2] >= 0x8b && p[2] <= 0x8f) || (p[2] >= 0xa8 && p[2] <= 0xae))) ||
			  (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)))
		return 0;
	if (c == 0xef && p[1] == 0xbb && p[2] == 0xbf)
		return 0;
	return n;
}

/*
 * Writes the escaped form into out (NULL: only counts); returns its length.
 * Every byte outside printable ASCII is escaped, valid UTF-8 included: a
 * message is then ASCII, and whatever cuts it later (a bounded buffer, a
 * log line limit) cannot leave half a character.
 */
static size_t escape(const char *s, size_t len, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char piece[8];
		size_t pl;
		if (p[i] == '\\') {
			pl = 2;
			memcpy(piece, "\\\\", 2);
		} else if (p[i] >= 0x20 && p[i] < 0x7f) {
			pl = 1;
			piece[0] = (char)p[i];
		} else {
			pl = (size_t)snprintf(piece, sizeof(piece), "\\x%02X", p[i]);
		}
		if (out) {
			if (o + pl >= cap)
				break;
			memcpy(out + o, piece, pl);
		}
		o += pl;
	}
	if (out)
		out[o] = '\0';
	return o;
}

char *textesc_dup(const char *s, size_t len)
{
	size_t n = escape(s, len, NULL, 0);
	char *out = malloc(n + 1);
	if (out)
		escape(s, len, out, n + 1);
	return out;
}

const char *textesc_put(char *buf, size_t cap, const char *s)
{
	escape(s, strlen(s), buf, cap);
	return buf;
}

size_t textesc_first_bad(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		size_t n = p[i] == '\t' ? 1 : text_len(p + i, len - i);
		if (!n)
			return i;
		i += n;
	}
	return len;
}
