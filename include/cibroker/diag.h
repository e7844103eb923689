/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Diagnostics for config and policy files: collected, not printed, so a load
 * reports every error of a file in one run and the caller decides where the
 * text goes (stderr for the CLI, the log on SIGHUP reload).
 * Format of each line: "FILE:LINE:COL: message" or "FILE:LINE:COL: warning: message".
 * With col <= 0 the column is left out ("FILE:LINE: message"), with line <= 0
 * both are ("FILE: message", e.g. a file that cannot be opened). Control
 * characters in the message (it quotes file contents) are shown as '?'.
 * At most 1000 lines are kept; the counters keep counting beyond. */
struct diag;

/* Where in a file a value was written (1-based; 0 = unknown). */
struct diag_pos {
	int line, col;
};

struct diag *diag_new(void);
void diag_free(struct diag *d);
void diag_error(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void diag_warning(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
size_t diag_errors(const struct diag *d);
size_t diag_warnings(const struct diag *d);
size_t diag_count(const struct diag *d);
const char *diag_line(const struct diag *d, size_t i); /* i < diag_count */
void diag_print(const struct diag *d, FILE *out);
