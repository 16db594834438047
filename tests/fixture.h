/* SPDX-License-Identifier: MIT */
/*
 * fixture: where the test fixtures are (tests/fixtures/), for cmocka tests.
 * ctest sets VPMU_SOURCE_DIR and runs tests from tests/; a test run by hand
 * from tests/ finds them too.
 */
#ifndef VPMU_TEST_FIXTURE_H
#define VPMU_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

static inline void fixture_path(char *buf, size_t len, const char *rel)
{
	const char *src = getenv("VPMU_SOURCE_DIR");

	if (src)
		snprintf(buf, len, "%s/tests/fixtures/%s", src, rel);
	else
		snprintf(buf, len, "fixtures/%s", rel);
}

/* The whole fixture (at most 64 KiB), NUL-terminated; the caller frees it. */
static inline char *fixture_read(const char *rel, size_t *len)
{
	char path[1024];
	fixture_path(path, sizeof(path), rel);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	char *buf = malloc(1 << 16);
	assert_non_null(buf);
	*len = fread(buf, 1, (1 << 16) - 1, f);
	buf[*len] = 0;
	fclose(f);
	return buf;
}

#endif
