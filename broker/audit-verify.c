/* SPDX-License-Identifier: Apache-2.0 */
/* Checking an audit log's hash chain (`cibroker audit verify`, docs/audit.md):
 * only reads, so it shares nothing with the writer but the record format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/audit.h"
#include "cibroker/util.h"

#define AUDIT_MAX_READ_LINE (1024 * 1024) /* longest line we read back or verify */
#define AUDIT_JSON_DEPTH 64

static void hash_zero(char head[65])
{
	memset(head, '0', 64);
	head[64] = '\0';
}

/* One line without its '\n'. 1: a line, 0: end of file, -1: read error,
 * -2: longer than AUDIT_MAX_READ_LINE. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *ret_len)
{
	size_t n = 0;
	int c;

	while ((c = getc_unlocked(f)) != EOF && c != '\n') {
		if (n >= AUDIT_MAX_READ_LINE)
			return -2;
		if (n + 1 > *cap) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			char *nbuf = realloc(*buf, ncap);

			if (!nbuf)
				return -1;
			*buf = nbuf;
			*cap = ncap;
		}
		(*buf)[n++] = (char)c;
	}
	if (c == EOF && ferror(f))
		return -1;
	if (c == EOF && n == 0)
		return 0;
	*ret_len = n;
	return 1;
}

static bool is_hash_hex(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == 64;
}

static bool prev_is_last(const char *line, size_t len, const char *prev)
{
	static const char head[] = "\"prev\":\"";
	const size_t tail = sizeof(head) - 1 + 64 + 2; /* "prev":"<64 hex>"} */

	return len >= tail && memcmp(line + len - tail, head, sizeof(head) - 1) == 0 &&
	       memcmp(line + len - tail + sizeof(head) - 1, prev, 64) == 0 && memcmp(line + len - 2, "\"}", 2) == 0;
}

enum broker_err audit_verify_stream(FILE *f, bool strict, audit_torn_fn *on_torn, void *userdata,
				    struct audit_verify_report *ret)
{
	struct audit_verify_report r = {0};
	char expect[65], *buf = NULL;
	size_t cap = 0, len = 0;
	uint64_t torn_line = 0; /* a non-JSON line waiting for the next to vouch for it */
	enum broker_err err = BROKER_OK;
	int rc;

	hash_zero(expect);
	while ((rc = read_line(f, &buf, &cap, &len)) == 1) {
		uint64_t n = ++r.lines;
		json_t *j = broker_json_parse(buf ? buf : "", len, AUDIT_JSON_DEPTH);
		const char *prev = json_string_value(json_object_get(j, "prev"));

		if (!j) {
			/* No complete record is ever invalid JSON, so this is a
			 * record cut short by a crash, or an edit. */
			if (torn_line || strict) {
				r.bad_line = torn_line ? torn_line : n;
				if (torn_line)
					snprintf(r.reason, sizeof(r.reason),
						 "not a JSON record, and neither is line %llu: a crash leaves at most one",
						 (unsigned long long)n);
				else
					snprintf(r.reason, sizeof(r.reason), "not a JSON record (torn record)");
				break;
			}
			torn_line = n;
			broker_sha256_hex(buf ? buf : "", len, expect);
			continue;
		}
		if (!prev || !is_hash_hex(prev)) {
			r.bad_line = torn_line ? torn_line : n;
			snprintf(r.reason, sizeof(r.reason), "%s",
				 torn_line ? "not a JSON record and the next line does not chain to it"
					   : "not an audit record (no 64-hex \"prev\")");
		} else if (!torn_line && !prev_is_last(buf, len, prev)) {
			/* the broker writes prev last: a line that does not end in it was
			 * rewritten, even if its fields still chain */
			r.bad_line = n;
			snprintf(r.reason, sizeof(r.reason), "not as the broker writes it: \"prev\" is not its last field");
		} else if (strcmp(prev, expect) != 0) {
			r.bad_line = torn_line ? torn_line : n;
			if (torn_line)
				snprintf(r.reason, sizeof(r.reason),
					 "not a JSON record and the next line does not chain to it");
			else if (n == 1)
				snprintf(r.reason, sizeof(r.reason), "prev of the first line is not 64 zeros");
			else
				snprintf(r.reason, sizeof(r.reason),
					 "prev is not the SHA-256 of line %llu (line %llu or this line was changed, "
					 "or lines were removed or inserted here)",
					 (unsigned long long)(n - 1), (unsigned long long)(n - 1));
		}
		json_decref(j);
		if (r.bad_line)
			break;
		if (torn_line) {
			r.torn++;
			if (on_torn)
				on_torn(torn_line, userdata);
			torn_line = 0;
		}
		r.records++;
		broker_sha256_hex(buf, len, expect);
	}
	if (rc == -1) {
		err = BROKER_ERR_IO;
		goto out;
	}
	if (rc == -2) {
		r.bad_line = r.lines + 1;
		snprintf(r.reason, sizeof(r.reason), "line longer than %d bytes", AUDIT_MAX_READ_LINE);
	}
	/* A fragment at the very end is what a crash mid-write leaves behind.
	 * Cutting the tail is undetectable by any chain anyway (docs/audit.md). */
	if (!r.bad_line && torn_line) {
		r.torn++;
		if (on_torn)
			on_torn(torn_line, userdata);
	}
	*ret = r;
out:
	free(buf);
	return err;
}

enum broker_err audit_verify_file(const char *path, uint64_t *ret_bad_line, uint64_t *ret_lines)
{
	struct audit_verify_report r;
	enum broker_err err;
	FILE *f = fopen(path, "re");

	if (!f)
		return BROKER_ERR_IO;
	err = audit_verify_stream(f, false, NULL, NULL, &r);
	fclose(f);
	if (err != BROKER_OK)
		return err;
	if (ret_lines)
		*ret_lines = r.lines;
	if (r.bad_line) {
		if (ret_bad_line)
			*ret_bad_line = r.bad_line;
		return BROKER_ERR_INVALID;
	}
	return BROKER_OK;
}
