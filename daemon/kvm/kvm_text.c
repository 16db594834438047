/* SPDX-License-Identifier: MIT */
#include "kvm/kvm_text.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

void kvm_text_add(struct kvm_text *t, const char *fmt, ...)
{
	va_list ap;
	char *at = t->pos < t->len ? t->buf + t->pos : NULL;
	size_t room = t->pos < t->len ? t->len - t->pos : 0;

	va_start(ap, fmt);
	int n = vsnprintf(at, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		t->failed = true;
	else
		t->pos += (size_t)n;
}

int kvm_text_result(const struct kvm_text *t)
{
	if (t->failed || t->pos > INT_MAX)
		return -EOVERFLOW;
	return (int)t->pos;
}
