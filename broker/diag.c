/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/diag.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A hostile or broken file could otherwise produce millions of lines; past
 * this many only the counters grow and one final line says so. */
#define DIAG_MAX_LINES 1000
/* Messages quote keys and values from the file; keep each line readable. */
#define DIAG_MAX_LINE 512

struct diag {
	char **lines;
	size_t n_lines, cap;
	size_t n_errors, n_warnings;
	bool truncated;
};

struct diag *diag_new(void)
{
	return calloc(1, sizeof(struct diag));
}

void diag_free(struct diag *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_lines; i++)
		free(d->lines[i]);
	free(d->lines);
	free(d);
}

static void diag_push(struct diag *d, char *line)
{
	if (d->n_lines == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		char **lines = realloc(d->lines, cap * sizeof(*lines));

		if (!lines) {
			free(line);
			return;
		}
		d->lines = lines;
		d->cap = cap;
	}
	d->lines[d->n_lines++] = line;
}

__attribute__((format(printf, 6, 0))) static void diag_add(struct diag *d, bool warning, const char *file,
							     int line, int col, const char *fmt, va_list ap)
{
	char msg[DIAG_MAX_LINE], *out;
	int n;

	if (!d)
		return;
	if (warning)
		d->n_warnings++;
	else
		d->n_errors++;
	if (d->n_lines >= DIAG_MAX_LINES) {
		if (!d->truncated) {
			d->truncated = true;
			out = strdup("too many diagnostics; the rest are not shown");
			if (out)
				diag_push(d, out);
		}
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* The message quotes bytes from untrusted files: no terminal control
	 * sequences or line breaks may reach whoever reads the output. */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (!file)
		file = "<input>";
	if (line > 0 && col > 0)
		n = asprintf(&out, "%s:%d:%d: %s%s", file, line, col, warning ? "warning: " : "", msg);
	else if (line > 0)
		n = asprintf(&out, "%s:%d: %s%s", file, line, warning ? "warning: " : "", msg);
	else
		n = asprintf(&out, "%s: %s%s", file, warning ? "warning: " : "", msg);
	if (n < 0)
		return;
	diag_push(d, out);
}

void diag_error(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diag_add(d, false, file, line, col, fmt, ap);
	va_end(ap);
}

void diag_warning(struct diag *d, const char *file, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	diag_add(d, true, file, line, col, fmt, ap);
	va_end(ap);
}

size_t diag_errors(const struct diag *d)
{
	return d ? d->n_errors : 0;
}

size_t diag_warnings(const struct diag *d)
{
	return d ? d->n_warnings : 0;
}

size_t diag_count(const struct diag *d)
{
	return d ? d->n_lines : 0;
}

const char *diag_line(const struct diag *d, size_t i)
{
	if (!d || i >= d->n_lines)
		return NULL;
	return d->lines[i];
}

void diag_print(const struct diag *d, FILE *out)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_lines; i++)
		fprintf(out, "%s\n", d->lines[i]);
}
