/* SPDX-License-Identifier: MIT */
/*
 * kvm_text: appending to a caller's buffer with snprintf semantics, for the
 * kvm layer's reports and reasons: pos keeps counting past the end, so a
 * caller learns the length it would need.
 */
#ifndef VPMU_KVM_TEXT_H
#define VPMU_KVM_TEXT_H

#include <stdbool.h>
#include <stddef.h>

struct kvm_text {
	char *buf;      /* NULL with len 0: only count */
	size_t len;
	size_t pos;
	bool failed;    /* a vsnprintf failed */
};

void kvm_text_add(struct kvm_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The length written (or needed), or -EOVERFLOW. */
int kvm_text_result(const struct kvm_text *t);

#endif
