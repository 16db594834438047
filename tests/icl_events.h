/* SPDX-License-Identifier: MIT */
/*
 * Ice Lake server (8360Y) event constraints as arbiter inputs, after the
 * kernel's intel_icl_event_constraints: shared by the arbiter tests and its
 * benchmark. Event codes: select in bits 7:0, umask in 15:8.
 */
#ifndef VPMU_TESTS_ICL_EVENTS_H
#define VPMU_TESTS_ICL_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#define ICL_NUM_GP 8
#define ICL_FIXED_MASK 0xfu
#define ICL_INSTRUCTIONS 0x00c0
#define ICL_CYCLES 0x003c
#define ICL_REF_CYCLES 0x0300   /* pseudo-encoding: fixed2 only */
#define ICL_SLOTS 0x0400        /* pseudo-encoding: fixed3 only */

static inline bool icl_low4(unsigned ev, unsigned umask)
{
	if (ev == 0xa3)
		return umask != 0x04 && umask != 0x10 && umask != 0x14;
	return (ev >= 0x03 && ev <= 0x0a) || (ev >= 0x1f && ev <= 0x28) || ev == 0x32 ||
	       (ev >= 0x48 && ev <= 0x54) || (ev >= 0x60 && ev <= 0x8b) ||
	       (ev >= 0xa8 && ev <= 0xb0) || (ev >= 0xb7 && ev <= 0xbd) ||
	       (ev >= 0xd0 && ev <= 0xe6) || ev == 0xef || (ev >= 0xf0 && ev <= 0xf4);
}

static inline void icl_event_masks(unsigned code, uint32_t *gp, uint32_t *fixed)
{
	unsigned ev = code & 0xff, umask = (code >> 8) & 0xff;

	*fixed = 0;
	*gp = 0xff;
	if (code == ICL_REF_CYCLES) {
		*gp = 0;
		*fixed = 1u << 2;
	} else if (code == ICL_SLOTS) {
		*gp = 0;
		*fixed = 1u << 3;
	} else if (code == ICL_INSTRUCTIONS) {
		*fixed = 1u << 0;
	} else if (code == ICL_CYCLES) {
		*fixed = 1u << 1;
	} else if (icl_low4(ev, umask)) {
		*gp = 0x0f;
	}
}

/* A spread of real event codes (masks from icl_event_masks): fixed-capable,
 * fixed-only, unconstrained, GP 0-3 only, and the 0xa3 umask exceptions. */
static const unsigned icl_event_pool[] = {
	ICL_INSTRUCTIONS, ICL_CYCLES, ICL_REF_CYCLES, ICL_SLOTS,
	0x01c2, 0x00c4, 0x00c5, 0x010e, 0x0114, 0x02c7, 0x04a3, 0x10a3, 0x14a3,
	0x0148, 0x01a3, 0x08a3, 0x01d1, 0x02d1, 0x01b7, 0x01cd,
	0x0160, 0x0479, 0x01a8, 0x01d0, 0x81d0, 0x0151, 0x0824, 0x01f1, 0x0108,
};
#define ICL_EVENT_POOL_N (sizeof(icl_event_pool) / sizeof(icl_event_pool[0]))

#endif
