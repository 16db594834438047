/* SPDX-License-Identifier: MIT */
/*
 * textesc: outside bytes made safe to echo in a log line or a message.
 * Every byte outside printable ASCII is written as \xNN (control bytes,
 * bytes that are not UTF-8, and valid UTF-8 too, so that a message is
 * ASCII and no later cut can leave half a character); a backslash is
 * doubled so that the escapes stay unambiguous.
 *
 * textesc_first_bad is for readers that refuse what is not text: control
 * bytes (C0 but tab, DEL, C1), bytes that are not RFC 3629 UTF-8 (overlong
 * forms, surrogates, code points above U+10FFFF, truncated sequences) and
 * invisible format characters that change what a reader sees (bidi
 * overrides and isolates, zero widths, U+2028/2029, the BOM).
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
