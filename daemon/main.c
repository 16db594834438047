/* SPDX-License-Identifier: MIT */
/* Placeholder until the PMU discovery work lands its command line. */
#include <stdio.h>
int main(void)
{
	fprintf(stderr, "vpmud: not built yet\n");
	return 1;
}
