/* SPDX-License-Identifier: MIT */
/*
 * textesc: outside bytes made safe to echo in a log line or a message.
 * Anything a terminal or a log reader could take for more than text is
 * written as \xNN: control bytes (C0, DEL, and C1 in its UTF-8 form) and
 * bytes that are not RFC 3629 UTF-8 (overlong forms, surrogates, code
 * points above U+10FFFF, truncated sequences), and invisible format
 * characters that change what a reader sees (bidi overrides, zero widths,
 * U+2028/2029); a backslash is doubled so
 * that the escapes stay unambiguous. Valid printable UTF-8 passes as is.
 */
#ifndef VPMU_TEXTESC_H
#define VPMU_TEXTESC_H

#include <stdbool.h>
#include <stddef.h>

/* The escaped form of len bytes of s, malloc'd and NUL-terminated (NULL
 * when memory runs out). */
char *textesc_dup(const char *s, size_t len);

/* The escaped form of the C string s into buf (cap bytes, cap > 0), cut
 * at a whole escape when it does not fit; returns buf. For messages
 * written into a caller's buffer. */
const char *textesc_put(char *buf, size_t cap, const char *s);

/* Where the first byte that is not text is (a control byte other than
 * tab, or one outside UTF-8), len when there is none: for readers that
 * refuse such input. A backslash is text. */
size_t textesc_first_bad(const char *s, size_t len);

#endif
