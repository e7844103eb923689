/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Minimal unit-test harness: every CHECK is one counted test; the program
 * ends with "N passed, N failed" (summed by tests/run.sh) and exits 1 on any
 * failure. */
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                  \
	do {                                                                              \
		if (cond) {                                                               \
			check_passed++;                                                   \
		} else {                                                                  \
			check_failed++;                                                   \
			fprintf(stderr, "%s:%d: FAIL: %s ", __FILE__, __LINE__, #cond);  \
			fprintf(stderr, " " __VA_ARGS__);                                 \
			fputc('\n', stderr);                                              \
		}                                                                         \
	} while (0)

static inline int check_done(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}
