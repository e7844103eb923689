/* SPDX-License-Identifier: Apache-2.0 */
/* The audit log: record format, hash chain (checked here independently with
 * OpenSSL and with tests/audit/verify-with-sha256sum.sh), tampering found at
 * the right line, restart and torn-line continuation, fail-closed sinks and
 * recovery, and group commit under concurrency. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "check.h"
#include "cibroker/audit.h"
#include "cibroker/util.h"

#define SHA256SUM_SCRIPT "audit/verify-with-sha256sum.sh"

static char tmpdir[256];

static const char *tpath(const char *name)
{
	static char buf[8][512];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

static char *slurp(const char *path, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;

	if (broker_read_file(path, 64 << 20, &buf, &len) != BROKER_OK)
		return NULL;
	*ret_len = len;
	return buf;
}

/* ---- an independent chain check: OpenSSL, no cibroker code ---- */

static void hex_sha256(const char *p, size_t n, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)p, n, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* First bad line (1-based) or 0; every line must be a JSON object ending in
 * "prev":"<hash of the previous line>"}, the file must end in '\n'. */
static unsigned long independent_check(const char *path, unsigned long *ret_lines)
{
	size_t len = 0;
	char *buf = slurp(path, &len), *p, *end, prev[65];
	unsigned long n = 0, bad = 0;

	if (!buf)
		return (unsigned long)-1;
	memset(prev, '0', 64);
	prev[64] = '\0';
	for (p = buf, end = buf + len; p < end && !bad;) {
		char *nl = memchr(p, '\n', (size_t)(end - p)), want[80];
		size_t l;
		json_t *j;

		n++;
		if (!nl) {
			bad = n;
			break;
		}
		l = (size_t)(nl - p);
		j = json_loadb(p, l, JSON_REJECT_DUPLICATES, NULL);
		snprintf(want, sizeof(want), "\"prev\":\"%s\"}", prev);
		if (!json_is_object(j) || l < strlen(want) || memcmp(p + l - strlen(want), want, strlen(want)) != 0)
			bad = n;
		json_decref(j);
		hex_sha256(p, l, prev);
		p = nl + 1;
	}
	free(buf);
	*ret_lines = n;
	return bad;
}

static int run_sha256sum_script(const char *path)
{
	char cmd[1024];
	int st;

	snprintf(cmd, sizeof(cmd), "sh " SHA256SUM_SCRIPT " '%s' >/dev/null 2>&1", path);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- records ---- */

static enum broker_err write_n(struct broker_audit *a, int n, int tag)
{
	for (int i = 0; i < n; i++) {
		char rid[64], sub[64];
		json_t *claims = json_pack("{s:s,s:s,s:i}", "repository", "acme/web", "ref", "refs/heads/main",
					   "run_id", i);
		json_t *cred = json_pack("{s:s,s:s,s:s}", "type", "jwt", "id", "jti-x", "expires_at",
					 "2026-11-22T01:24:06Z");
		struct audit_record rec = {
			.request_id = rid, .remote = "127.0.0.1", .allow = i % 3 != 0,
			.error = i % 3 ? NULL : "access_denied", .reason = i % 3 ? NULL : "claim 'ref' did not match",
			.audience = "web-deploy-prod", .policy = "web-deploy-prod",
			.issuer = "https://token.actions.githubusercontent.com", .sub = sub, .token_jti = "tj",
			.claims = claims, .credential = i % 3 ? cred : NULL, .latency_us = 100 + i,
		};
		enum broker_err err;

		snprintf(rid, sizeof(rid), "req-%d-%d", tag, i);
		snprintf(sub, sizeof(sub), "repo:acme/web:ref:refs/heads/main:%d", i);
		err = audit_write(a, &rec);
		json_decref(claims);
		json_decref(cred);
		if (err != BROKER_OK)
			return err;
	}
	return BROKER_OK;
}

static void test_format(void)
{
	static const char *const keys[] = {"ts", "request_id", "remote", "decision", "error", "reason",
					   "audience", "policy", "issuer", "sub", "token_jti", "claims",
					   "credential", "latency_us", "prev"};
	const char *path = tpath("format.jsonl");
	struct broker_audit *a = NULL;
	char big[5000], bad_utf8[] = "caf\xc3\xa9 \xff\xfe ok \xed\xa0\x80!";
	json_t *claims = json_pack("{s:s}", "repository", "acme/web");
	json_t *huge = json_object();
	struct audit_record allow = {
		.ts_us = 1795310346123456LL, .request_id = "r1", .remote = "10.0.0.7", .allow = true,
		.audience = "web", .policy = "web", .issuer = "https://iss", .sub = "s", .token_jti = "j",
		.claims = claims, .latency_us = 210,
	};
	struct audit_record deny = {
		.request_id = "r2", .allow = false, .error = "invalid_grant",
		.reason = "line1\nline2\r\t\x01 \"quoted\" \\", .sub = bad_utf8, .issuer = big,
	};
	struct audit_record junk = {.request_id = "r3", .claims = json_array()};
	struct audit_record toolarge = {.request_id = "r4", .claims = huge};
	struct stat st;
	size_t len = 0;
	char *buf, *line, *save = NULL;
	int lineno = 0;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	json_object_set_new(claims, "actor", json_string(big));
	for (int i = 0; i < 100; i++) {
		char k[16];

		snprintf(k, sizeof(k), "k%d", i);
		json_object_set_new(huge, k, json_string(big));
	}
	CHECK(audit_open(path, true, &a) == BROKER_OK, "open %s", path);
	if (!a)
		return;
	CHECK(audit_healthy(a), "healthy at start");
	CHECK(audit_write(a, &allow) == BROKER_OK, "allow record");
	CHECK(audit_write(a, &deny) == BROKER_OK, "deny record with junk strings");
	CHECK(audit_write(a, &junk) == BROKER_ERR_INVALID, "claims must be an object");
	CHECK(audit_write(a, &toolarge) == BROKER_OK, "oversized claims still recorded");
	audit_close(a);
	json_decref((json_t *)junk.claims);
	json_decref(claims);
	json_decref(huge);

	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == (0640 & ~(mode_t)umask(022)), "mode 0640");
	buf = slurp(path, &len);
	CHECK(buf && len > 0 && buf[len - 1] == '\n', "file ends in newline");
	if (!buf)
		return;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
		const char *k;
		json_t *v;
		size_t i = 0;
		bool order = json_object_size(j) == BROKER_ARRAY_SIZE(keys);

		lineno++;
		CHECK(json_is_object(j), "line %d is a JSON object", lineno);
		json_object_foreach(j, k, v) {
			if (i >= BROKER_ARRAY_SIZE(keys) || strcmp(k, keys[i++]) != 0)
				order = false;
		}
		CHECK(order, "line %d has exactly the contract's fields in order", lineno);
		CHECK(strlen(line) <= 64 * 1024, "line %d bounded", lineno);
		if (lineno == 1) {
			CHECK(strcmp(json_string_value(json_object_get(j, "ts")), "2026-11-22T01:19:06.123Z") == 0,
			      "ts UTC with ms: %s", json_string_value(json_object_get(j, "ts")));
			CHECK(strcmp(json_string_value(json_object_get(j, "decision")), "allow") == 0, "allow");
			CHECK(json_is_null(json_object_get(j, "error")) && json_is_null(json_object_get(j, "reason")),
			      "allow has null error and reason");
			CHECK(json_is_null(json_object_get(j, "credential")), "no credential -> null");
			CHECK(json_integer_value(json_object_get(j, "latency_us")) == 210, "latency_us");
			CHECK(strcmp(json_string_value(json_object_get(j, "prev")),
				     "0000000000000000000000000000000000000000000000000000000000000000") == 0,
			      "first prev is zeros");
			CHECK(strcmp(json_string_value(json_object_get(json_object_get(j, "claims"), "repository")),
				     "acme/web") == 0, "claims kept");
			CHECK(strlen(json_string_value(json_object_get(json_object_get(j, "claims"), "actor"))) == 2048 &&
				      strcmp(json_string_value(json_object_get(json_object_get(j, "claims"), "actor")) + 2045,
					     "...") == 0,
			      "a long claim is cut like any other string");
		} else if (lineno == 2) {
			const char *ts = json_string_value(json_object_get(j, "ts"));
			const char *sub = json_string_value(json_object_get(j, "sub"));
			const char *iss = json_string_value(json_object_get(j, "issuer"));

			CHECK(ts && strlen(ts) == 24 && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z',
			      "ts 0 means now: %s", ts ? ts : "(null)");
			CHECK(strcmp(json_string_value(json_object_get(j, "decision")), "deny") == 0, "deny");
			CHECK(strcmp(json_string_value(json_object_get(j, "error")), "invalid_grant") == 0, "error");
			CHECK(strcmp(json_string_value(json_object_get(j, "reason")), deny.reason) == 0,
			      "control characters kept, escaped, on one line");
			CHECK(json_is_null(json_object_get(j, "remote")) && json_is_null(json_object_get(j, "claims")),
			      "NULL -> null");
			CHECK(sub && strcmp(sub, "caf\xc3\xa9 ?" "? ok ?" "?" "?!") == 0, "invalid UTF-8 -> '?': %s", sub);
			CHECK(iss && strlen(iss) == 2048 && strcmp(iss + 2045, "...") == 0, "long string cut");
		} else if (lineno == 3) {
			CHECK(json_is_true(json_object_get(json_object_get(j, "claims"), "truncated")),
			      "oversized claims replaced");
		}
		json_decref(j);
	}
	CHECK(lineno == 3, "3 records, got %d", lineno);
	free(buf);
}

static void test_chain(void)
{
	const char *path = tpath("chain.jsonl");
	struct broker_audit *a = NULL;
	uint64_t bad = 0, lines = 0;
	unsigned long ilines = 0;

	CHECK(audit_open(path, false, &a) == BROKER_OK, "open sync none");
	if (!a)
		return;
	CHECK(write_n(a, 10, 0) == BROKER_OK, "10 records");
	audit_close(a);
	CHECK(independent_check(path, &ilines) == 0 && ilines == 10, "independent chain check");
	CHECK(audit_verify_file(path, &bad, &lines) == BROKER_OK && lines == 10, "audit_verify_file");
	CHECK(run_sha256sum_script(path) == 0, "sha256sum-only check");
}

/* ---- tampering: each edit of chain.jsonl found at the right line ---- */

struct lines {
	char *buf;
	char *line[64];
	size_t len[64];
	size_t n;
};

static bool split_lines(const char *path, struct lines *l)
{
	size_t total = 0;
	char *p;

	memset(l, 0, sizeof(*l));
	l->buf = slurp(path, &total);
	if (!l->buf)
		return false;
	for (p = l->buf; p < l->buf + total && l->n < 64;) {
		char *nl = memchr(p, '\n', (size_t)(l->buf + total - p));

		l->line[l->n] = p;
		l->len[l->n++] = nl ? (size_t)(nl - p) : (size_t)(l->buf + total - p);
		p = nl ? nl + 1 : l->buf + total;
	}
	return true;
}

/* Write lines in the order given by idx (-1 = the extra line). */
static void write_lines(const char *path, const struct lines *l, const int *idx, size_t n, const char *extra,
			bool final_nl)
{
	FILE *f = fopen(path, "w");

	for (size_t i = 0; i < n; i++) {
		if (idx[i] < 0)
			fputs(extra, f);
		else
			fwrite(l->line[idx[i]], 1, l->len[idx[i]], f);
		if (i + 1 < n || final_nl)
			fputc('\n', f);
	}
	fclose(f);
}

static void report_torn(uint64_t line, void *userdata)
{
	*(uint64_t *)userdata = line;
}

static void test_tamper(void)
{
	struct lines l;
	char forged[4096], modified[4096], hash[65];
	static const struct {
		const char *name;
		int order[12];
		int n;
		int extra;      /* what -1 stands for: 1 line 3 modified, 2 forged line chained
				 * to line 4, 3 line `cut` cut in half, 4 a line of garbage,
				 * 5 line 10 with the same fields, prev moved first */
		int cut;
		bool final_nl;
		uint64_t bad;   /* expected first bad line; 0 = intact */
		uint64_t torn;  /* expected torn line */
	} rows[] = {
		{"untouched", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10, 0, 0, true, 0, 0},
		{"field of line 3 modified", {0, 1, -1, 3, 4, 5, 6, 7, 8, 9}, 10, 1, 0, true, 4, 0},
		{"line 4 deleted", {0, 1, 2, 4, 5, 6, 7, 8, 9}, 9, 0, 0, true, 4, 0},
		{"first line deleted", {1, 2, 3, 4, 5, 6, 7, 8, 9}, 9, 0, 0, true, 1, 0},
		{"copy of line 2 inserted at 7", {0, 1, 2, 3, 4, 5, 1, 6, 7, 8, 9}, 11, 0, 0, true, 7, 0},
		{"forged line with a right prev inserted at 5", {0, 1, 2, 3, -1, 4, 5, 6, 7, 8, 9}, 11, 2, 0, true, 6, 0},
		{"lines 6 and 7 swapped", {0, 1, 2, 3, 4, 6, 5, 7, 8, 9}, 10, 0, 0, true, 6, 0},
		{"line 5 cut short mid-file", {0, 1, 2, 3, -1, 5, 6, 7, 8, 9}, 10, 3, 4, true, 5, 0},
		{"garbage line inserted at 3", {0, 1, -1, 2, 3, 4, 5, 6, 7, 8, 9}, 11, 4, 0, true, 3, 0},
		{"file cut inside its last line", {0, 1, 2, 3, 4, 5, 6, 7, 8, -1}, 10, 3, 9, false, 0, 10},
		{"last newline missing", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10, 0, 0, false, 0, 0},
		{"last line rewritten with prev first", {0, 1, 2, 3, 4, 5, 6, 7, 8, -1}, 10, 5, 0, true, 10, 0},
	};
	const char *path = tpath("tamper.jsonl");

	if (!split_lines(tpath("chain.jsonl"), &l) || l.n != 10) {
		CHECK(false, "chain.jsonl has 10 lines");
		return;
	}
	/* Line 3 with one field changed; line 5 cut in half; a well-formed line
	 * whose prev is right (hash of line 4) but which was never written. */
	snprintf(modified, sizeof(modified), "%.*s", (int)l.len[2], l.line[2]);
	memcpy(strstr(modified, "\"remote\":\"127.0.0.1\""), "\"remote\":\"127.0.0.2\"", 20);
	hex_sha256(l.line[3], l.len[3], hash);
	snprintf(forged, sizeof(forged), "{\"ts\":\"2026-01-01T00:00:00.000Z\",\"decision\":\"allow\",\"prev\":\"%s\"}",
		 hash);
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(rows); i++) {
		char text[4096];
		const char *extra = rows[i].extra == 1 ? modified : rows[i].extra == 2 ? forged : text;
		struct audit_verify_report r;
		uint64_t bad = 0, torn = 0;
		unsigned long ilines = 0, ibad;
		int script;
		FILE *f;

		if (rows[i].extra == 3) {
			snprintf(text, sizeof(text), "%.*s", (int)(l.len[rows[i].cut] / 2), l.line[rows[i].cut]);
		} else if (rows[i].extra == 5) {
			/* ...,"prev":"<64 hex>"}  ->  {"prev":"<64 hex>",... } */
			size_t len = l.len[9], tail = 8 + 64 + 2;

			snprintf(text, sizeof(text), "{%.*s,%.*s}", (int)(tail - 1), l.line[9] + len - tail,
				 (int)(len - tail - 2), l.line[9] + 1);
		} else {
			snprintf(text, sizeof(text), "not json at all");
		}
		write_lines(path, &l, rows[i].order, (size_t)rows[i].n, extra, rows[i].final_nl);

		f = fopen(path, "r");
		CHECK(f && audit_verify_stream(f, false, report_torn, &torn, &r) == BROKER_OK, "%s: verify ran",
		      rows[i].name);
		if (f)
			fclose(f);
		CHECK(r.bad_line == rows[i].bad, "%s: first bad line %llu, want %llu (%s)", rows[i].name,
		      (unsigned long long)r.bad_line, (unsigned long long)rows[i].bad, r.reason);
		CHECK(torn == rows[i].torn, "%s: torn line %llu, want %llu", rows[i].name, (unsigned long long)torn,
		      (unsigned long long)rows[i].torn);
		CHECK((audit_verify_file(path, &bad, NULL) == BROKER_OK) == (rows[i].bad == 0) &&
		      (rows[i].bad == 0 || bad == rows[i].bad), "%s: audit_verify_file", rows[i].name);
		/* The independent checks must agree wherever no torn line is involved. */
		ibad = independent_check(path, &ilines);
		script = run_sha256sum_script(path);
		if (!rows[i].torn && rows[i].final_nl) {
			CHECK(ibad == rows[i].bad, "%s: independent check says %lu", rows[i].name, ibad);
			CHECK((script == 0) == (rows[i].bad == 0), "%s: sha256sum script exit %d", rows[i].name,
			      script);
		} else {
			CHECK(script == (rows[i].torn ? 1 : 0), "%s: sha256sum script exit %d", rows[i].name, script);
		}
		if (rows[i].torn) {
			f = fopen(path, "r");
			CHECK(f && audit_verify_stream(f, true, NULL, NULL, &r) == BROKER_OK && r.bad_line == rows[i].torn,
			      "%s: --strict refuses the torn line", rows[i].name);
			if (f)
				fclose(f);
		}
	}
	free(l.buf);
}

/* ---- restart and torn last line ---- */

static void test_restart(void)
{
	const char *path = tpath("restart.jsonl");
	struct broker_audit *a = NULL;
	unsigned long ilines = 0;
	uint64_t lines = 0;

	for (int run = 0; run < 3; run++) {
		a = NULL;
		CHECK(audit_open(path, true, &a) == BROKER_OK, "open run %d", run);
		if (!a)
			return;
		CHECK(write_n(a, 4, run) == BROKER_OK, "write run %d", run);
		audit_close(a);
	}
	CHECK(independent_check(path, &ilines) == 0 && ilines == 12, "chain continues over restarts (%lu lines)",
	      ilines);
	CHECK(audit_verify_file(path, NULL, &lines) == BROKER_OK && lines == 12, "verify after restarts");
	CHECK(run_sha256sum_script(path) == 0, "sha256sum check after restarts");

	/* A reopen (logrotate) of a moved file starts a new chain at zeros. */
	CHECK(audit_open(path, true, &a) == BROKER_OK, "open for rotation");
	if (!a)
		return;
	CHECK(rename(path, tpath("restart.jsonl.1")) == 0, "rotate");
	CHECK(write_n(a, 2, 7) == BROKER_OK && audit_reopen(a) == BROKER_OK && write_n(a, 3, 8) == BROKER_OK,
	      "write, reopen, write");
	audit_close(a);
	CHECK(independent_check(tpath("restart.jsonl.1"), &ilines) == 0 && ilines == 14, "rotated file intact");
	CHECK(independent_check(path, &ilines) == 0 && ilines == 3, "new file starts at zeros");
}

static void test_torn(void)
{
	static const char fragment[] = "{\"ts\":\"2026-11-22T01:19:06.123Z\",\"request_id\":\"cut";
	const char *path = tpath("torn.jsonl");
	struct broker_audit *a = NULL;
	struct audit_stats st;
	struct audit_verify_report r;
	uint64_t torn = 0;
	size_t len = 0;
	char *buf, frag[65];
	FILE *f;

	CHECK(audit_open(path, true, &a) == BROKER_OK && write_n(a, 3, 0) == BROKER_OK, "3 records");
	audit_close(a);
	/* A crash in the middle of a write leaves a fragment without newline. */
	f = fopen(path, "a");
	fputs(fragment, f);
	fclose(f);
	hex_sha256(fragment, strlen(fragment), frag);

	a = NULL;
	CHECK(audit_open(path, true, &a) == BROKER_OK, "open after crash");
	if (!a)
		return;
	audit_get_stats(a, &st);
	CHECK(st.torn_recovered == 1, "torn tail noticed");
	CHECK(write_n(a, 2, 1) == BROKER_OK, "write after crash");
	audit_close(a);
	f = fopen(path, "r");
	CHECK(f && audit_verify_stream(f, false, report_torn, &torn, &r) == BROKER_OK, "verify ran");
	if (f)
		fclose(f);
	CHECK(r.bad_line == 0 && r.torn == 1 && torn == 4 && r.records == 5 && r.lines == 6,
	      "fragment kept as line 4, chain intact (bad %llu torn %llu)", (unsigned long long)r.bad_line,
	      (unsigned long long)torn);
	buf = slurp(path, &len);
	CHECK(buf && strstr(buf, "request_id\":\"cut\n") && strstr(buf, frag), "fragment terminated, next line chains to it");
	free(buf);

	/* A complete last record that lost only its newline is just continued. */
	CHECK(truncate(path, (off_t)len - 1) == 0, "drop the final newline");
	a = NULL;
	CHECK(audit_open(path, false, &a) == BROKER_OK && write_n(a, 1, 2) == BROKER_OK, "write after that");
	audit_close(a);
	f = fopen(path, "r");
	CHECK(f && audit_verify_stream(f, false, NULL, NULL, &r) == BROKER_OK && r.bad_line == 0 && r.torn == 1 &&
	      r.records == 6, "still intact, no new torn line");
	if (f)
		fclose(f);
}

/* The last line is found by reading backwards in growing chunks. */
static void test_long_tail(void)
{
	const char *path = tpath("long.jsonl");
	struct broker_audit *a = NULL;
	unsigned long ilines = 0;
	size_t big = 300 * 1000;
	char *line = malloc(big + 200);
	FILE *f;

	if (!line)
		return;
	memset(line, 'a', big + 200);
	memcpy(line, "{\"x\":\"", 6);
	snprintf(line + big, 200, "\",\"prev\":\"%064d\"}\n", 0);
	f = fopen(path, "w");
	fputs(line, f);
	fclose(f);
	CHECK(audit_open(path, false, &a) == BROKER_OK && write_n(a, 2, 0) == BROKER_OK, "open after a 300 kB line");
	audit_close(a);
	CHECK(independent_check(path, &ilines) == 0 && ilines == 3, "chained to the long line");

	/* Over 1 MiB without a newline: not a file the broker wrote. */
	f = fopen(path, "a");
	for (int i = 0; i < 4; i++)
		fwrite(line, 1, big, f);
	fclose(f);
	a = NULL;
	CHECK(audit_open(path, false, &a) == BROKER_ERR_TOOBIG && !a, "refuse a last line over 1 MiB");
	free(line);
}

/* ---- fail closed, recover ---- */

static void test_dev_full(void)
{
	const char *link = tpath("sink");
	const char *good = tpath("recovered.jsonl");
	struct broker_audit *a = NULL;
	struct audit_stats st;
	unsigned long ilines = 0;

	CHECK(symlink("/dev/full", link) == 0, "symlink to /dev/full");
	CHECK(audit_open(link, true, &a) == BROKER_OK, "open /dev/full");
	if (!a)
		return;
	CHECK(write_n(a, 1, 0) == BROKER_ERR_AUDIT, "write to /dev/full fails");
	CHECK(!audit_healthy(a), "unhealthy");
	CHECK(audit_probe(a) == BROKER_ERR_AUDIT && !audit_healthy(a), "probe cannot vouch for a device");
	CHECK(write_n(a, 1, 0) == BROKER_ERR_AUDIT, "still failing");
	audit_get_stats(a, &st);
	CHECK(st.errors == 2 && st.records == 0, "stats count the failures");
	/* The sink comes back: the link now points to a file. */
	CHECK(unlink(link) == 0 && symlink(good, link) == 0, "relink");
	CHECK(audit_reopen(a) == BROKER_OK, "reopen");
	CHECK(write_n(a, 3, 1) == BROKER_OK && audit_healthy(a), "writes again, healthy");
	audit_close(a);
	CHECK(independent_check(good, &ilines) == 0 && ilines == 3, "recovered file intact, nothing from the failures");
}

/* A partial write into a regular file, made real with RLIMIT_FSIZE: the
 * cut-off bytes are removed again, and the chain goes on afterwards. */
static void test_partial_write(void)
{
	const char *path = tpath("partial.jsonl");
	struct broker_audit *a = NULL;
	struct rlimit old, lim;
	struct stat st1, st2;
	unsigned long ilines = 0;

	signal(SIGXFSZ, SIG_IGN);
	CHECK(audit_open(path, true, &a) == BROKER_OK && write_n(a, 3, 0) == BROKER_OK, "3 records");
	if (!a)
		return;
	CHECK(stat(path, &st1) == 0, "stat");
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = (rlim_t)st1.st_size + 100;
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "limit file size");
	CHECK(write_n(a, 1, 1) == BROKER_ERR_AUDIT, "partial write fails");
	CHECK(!audit_healthy(a), "unhealthy");
	CHECK(stat(path, &st2) == 0 && st2.st_size == st1.st_size, "partial record removed (%lld vs %lld)",
	      (long long)st2.st_size, (long long)st1.st_size);
	setrlimit(RLIMIT_FSIZE, &old);
	CHECK(audit_probe(a) == BROKER_OK && audit_healthy(a), "probe finds the file usable again");
	CHECK(write_n(a, 2, 2) == BROKER_OK && audit_healthy(a), "writes again");
	audit_close(a);
	CHECK(independent_check(path, &ilines) == 0 && ilines == 5, "chain intact after the failure (%lu lines)",
	      ilines);
	signal(SIGXFSZ, SIG_DFL);
}

/* "-" writes to stdout; a pipe cannot be fdatasync'ed, which is no error. */
static void test_stdout(void)
{
	const char *out = tpath("stdout.jsonl");
	struct broker_audit *a = NULL;
	unsigned long ilines = 0;
	char buf[65536];
	ssize_t n;
	int p[2], saved = dup(STDOUT_FILENO);

	fflush(stdout);
	CHECK(saved >= 0 && pipe(p) == 0 && dup2(p[1], STDOUT_FILENO) >= 0, "stdout is a pipe");
	close(p[1]);
	CHECK(audit_open("-", true, &a) == BROKER_OK, "open -");
	CHECK(a && write_n(a, 3, 0) == BROKER_OK && audit_healthy(a), "write to a pipe with sync always");
	audit_close(a);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	n = read(p[0], buf, sizeof(buf));
	close(p[0]);
	CHECK(n > 0, "records arrived");
	if (n > 0) {
		FILE *f = fopen(out, "w");

		fwrite(buf, 1, (size_t)n, f);
		fclose(f);
	}
	CHECK(independent_check(out, &ilines) == 0 && ilines == 3, "chain from zeros on stdout");
}

/* ---- concurrency and group commit ---- */

#define THREADS 8
#define PER_THREAD 200

struct worker {
	struct broker_audit *a;
	int tag, per;
	enum broker_err err;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;

	w->err = write_n(w->a, w->per, w->tag);
	return NULL;
}

static void count_records(const char *path, int per, unsigned long *ret_lines, bool *ret_exact)
{
	static bool seen[THREADS][PER_THREAD];
	size_t len = 0;
	char *buf = slurp(path, &len), *line, *save = NULL;
	bool exact = true;
	unsigned long n = 0;

	memset(seen, 0, sizeof(seen));
	for (line = buf ? strtok_r(buf, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
		int t = -1, i = -1;

		n++;
		if (!j || sscanf(json_string_value(json_object_get(j, "request_id")), "req-%d-%d", &t, &i) != 2 ||
		    t < 0 || t >= THREADS || i < 0 || i >= per || seen[t][i])
			exact = false;
		else
			seen[t][i] = true;
		json_decref(j);
	}
	free(buf);
	*ret_lines = n;
	*ret_exact = exact && n == (unsigned long)THREADS * per;
}

static void run_workers(struct broker_audit *a, int per, bool *ret_ok)
{
	pthread_t th[THREADS];
	struct worker w[THREADS];
	bool ok = true;

	for (int t = 0; t < THREADS; t++) {
		w[t] = (struct worker){.a = a, .tag = t, .per = per};
		pthread_create(&th[t], NULL, worker_run, &w[t]);
	}
	for (int t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
		ok = ok && w[t].err == BROKER_OK;
	}
	*ret_ok = ok;
}

static void test_concurrent(void)
{
	const char *path = tpath("concurrent.jsonl");
	struct broker_audit *a = NULL;
	struct audit_stats st;
	unsigned long ilines = 0, lines = 0;
	bool ok = false, exact = false;

	CHECK(audit_open(path, true, &a) == BROKER_OK, "open");
	if (!a)
		return;
	run_workers(a, PER_THREAD, &ok);
	CHECK(ok, "every write acknowledged");
	audit_get_stats(a, &st);
	audit_close(a);
	CHECK(independent_check(path, &ilines) == 0 && ilines == THREADS * PER_THREAD,
	      "no interleaving, chain intact (%lu lines)", ilines);
	count_records(path, PER_THREAD, &lines, &exact);
	CHECK(exact, "each record exactly once");
	CHECK(st.records == THREADS * PER_THREAD, "stats.records %llu", (unsigned long long)st.records);
	CHECK(st.syncs == st.batches && st.syncs < st.records,
	      "group commit: %llu fdatasyncs for %llu records", (unsigned long long)st.syncs,
	      (unsigned long long)st.records);
	CHECK(st.errors == 0, "no errors");
}

/* audit_submit: records queued without waiting, each told exactly once,
 * mixed with plain writers, all on one intact chain; audit_close writes and
 * tells what is still queued; a failing sink tells every record. */
struct told {
	pthread_mutex_t mu;
	unsigned ok, failed, twice;
	unsigned char seen[1000];
};

struct slot {
	struct told *t;
	unsigned idx;
};

static void on_slot(void *arg, enum broker_err err)
{
	struct slot *s = arg;

	pthread_mutex_lock(&s->t->mu);
	if (s->t->seen[s->idx]++)
		s->t->twice++;
	if (err == BROKER_OK)
		s->t->ok++;
	else
		s->t->failed++;
	pthread_mutex_unlock(&s->t->mu);
}

static enum broker_err submit_one(struct broker_audit *a, struct slot *s)
{
	char rid[32];
	struct audit_record rec = {.request_id = rid, .allow = true, .audience = "web-deploy-prod", .latency_us = 1};

	snprintf(rid, sizeof(rid), "submit-%u", s->idx);
	return audit_submit(a, &rec, on_slot, s);
}

struct submitter {
	struct broker_audit *a;
	struct slot *slots;
	unsigned from, n;
	bool ok;
};

static void *submitter_run(void *arg)
{
	struct submitter *w = arg;

	w->ok = true;
	for (unsigned i = 0; i < w->n; i++)
		if (submit_one(w->a, &w->slots[w->from + i]) != BROKER_OK)
			w->ok = false;
	return NULL;
}

static unsigned told_total(struct told *t)
{
	unsigned n;

	pthread_mutex_lock(&t->mu);
	n = t->ok + t->failed;
	pthread_mutex_unlock(&t->mu);
	return n;
}

static void test_submit(void)
{
	const char *path = tpath("submit.jsonl"), *full = tpath("submit-full");
	enum { N = 600, SUBMITTERS = 3 };
	static struct slot slots[N];
	struct told t = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct submitter w[SUBMITTERS];
	pthread_t th[SUBMITTERS];
	struct broker_audit *a = NULL;
	struct audit_stats st;
	unsigned long ilines = 0;
	bool ok = true, sync_ok = false;

	CHECK(audit_open(path, true, &a) == BROKER_OK && audit_sync_always(a), "open, sync always");
	if (!a)
		return;
	for (unsigned i = 0; i < N; i++)
		slots[i] = (struct slot){&t, i};
	for (int i = 0; i < SUBMITTERS; i++) {
		w[i] = (struct submitter){a, slots, (unsigned)i * (N / SUBMITTERS), N / SUBMITTERS, false};
		pthread_create(&th[i], NULL, submitter_run, &w[i]);
	}
	run_workers(a, 50, &sync_ok); /* plain writers at the same time */
	for (int i = 0; i < SUBMITTERS; i++) {
		pthread_join(th[i], NULL);
		ok = ok && w[i].ok;
	}
	CHECK(ok && sync_ok, "every submit and write accepted");
	for (int i = 0; i < 10000 && told_total(&t) < N; i++)
		usleep(1000);
	CHECK(t.ok == N && t.failed == 0 && t.twice == 0, "each record told once: %u ok, %u failed, %u twice", t.ok,
	      t.failed, t.twice);
	audit_get_stats(a, &st);
	CHECK(st.syncs < st.records, "submitted records share fdatasyncs: %llu for %llu",
	      (unsigned long long)st.syncs, (unsigned long long)st.records);
	/* queued, then closed at once: close writes them and tells them */
	memset(&t, 0, sizeof(t));
	pthread_mutex_init(&t.mu, NULL);
	for (unsigned i = 0; i < 20; i++)
		CHECK(submit_one(a, &slots[i]) == BROKER_OK);
	audit_close(a);
	CHECK(t.ok == 20 && t.twice == 0, "close tells what was queued: %u", t.ok);
	CHECK(independent_check(path, &ilines) == 0 && ilines == N + THREADS * 50 + 20, "one intact chain (%lu lines)",
	      ilines);
	/* a sink that cannot be written: every submitted record hears so */
	memset(&t, 0, sizeof(t));
	pthread_mutex_init(&t.mu, NULL);
	unlink(full);
	CHECK(symlink("/dev/full", full) == 0 && audit_open(full, true, &a) == BROKER_OK, "open /dev/full");
	if (!a)
		return;
	for (unsigned i = 0; i < 5; i++)
		CHECK(submit_one(a, &slots[i]) == BROKER_OK);
	for (int i = 0; i < 10000 && told_total(&t) < 5; i++)
		usleep(1000);
	CHECK(t.failed == 5 && t.ok == 0, "failures told: %u failed, %u ok", t.failed, t.ok);
	CHECK(!audit_healthy(a), "unhealthy");
	audit_close(a);
}

/* Group commit made certain: the sink is a pipe whose reader stalls, so
 * writers pile up behind a blocked write and must share batches. */
struct drain {
	int fd;
	const char *out;
};

static void *drain_run(void *arg)
{
	struct drain *d = arg;
	FILE *f = fopen(d->out, "w");
	char buf[65536];
	ssize_t r;

	usleep(100 * 1000);
	while ((r = read(d->fd, buf, sizeof(buf))) > 0) {
		fwrite(buf, 1, (size_t)r, f);
		usleep(1000);
	}
	fclose(f);
	return NULL;
}

static void test_group_commit_pipe(void)
{
	const char *out = tpath("pipe.jsonl");
	struct broker_audit *a = NULL;
	struct drain d = {.out = out};
	struct audit_stats st;
	pthread_t th;
	unsigned long ilines = 0, lines = 0;
	bool ok = false, exact = false;
	int p[2];
	char dev[64];

	CHECK(pipe(p) == 0, "pipe");
	snprintf(dev, sizeof(dev), "/proc/self/fd/%d", p[1]);
	d.fd = p[0];
	fcntl(p[1], F_SETPIPE_SZ, 4096); /* full after a few records */
	pthread_create(&th, NULL, drain_run, &d);
	CHECK(audit_open(dev, true, &a) == BROKER_OK, "open pipe");
	close(p[1]);
	if (!a)
		return;
	run_workers(a, 50, &ok);
	audit_get_stats(a, &st);
	audit_close(a);
	pthread_join(th, NULL);
	close(p[0]);
	CHECK(ok, "every write acknowledged");
	CHECK(st.records == THREADS * 50 && st.batches < st.records / 2,
	      "writers shared batches: %llu batches for %llu records", (unsigned long long)st.batches,
	      (unsigned long long)st.records);
	CHECK(independent_check(out, &ilines) == 0 && ilines == THREADS * 50, "chain intact through a pipe");
	count_records(out, 50, &lines, &exact);
	CHECK(exact, "each record exactly once");
}

/* SIGKILL under load: every record whose write was acknowledged is in the
 * file, the file verifies, and a restarted writer continues it. */
struct acker {
	struct broker_audit *a;
	int tag, fd;
};

static void *acker_run(void *arg)
{
	struct acker *k = arg;

	for (int i = 0;; i++) {
		char rid[64];
		struct audit_record rec = {.request_id = rid, .allow = true, .reason = NULL};

		snprintf(rid, sizeof(rid), "k-%d-%d", k->tag, i);
		if (audit_write(k->a, &rec) != BROKER_OK)
			_exit(3);
		/* Acknowledge only now, as the exchange answers only now. */
		snprintf(rid + strlen(rid), sizeof(rid) - strlen(rid), "\n");
		if (write(k->fd, rid, strlen(rid)) < 0)
			_exit(4);
	}
	return NULL;
}

static void test_sigkill(void)
{
	const char *path = tpath("killed.jsonl");
	struct audit_verify_report r;
	struct broker_audit *a = NULL;
	char *acks = NULL, *log, *line, *save = NULL;
	size_t acks_len = 0, acks_cap = 0, log_len = 0;
	int p[2], status = 0, missing = 0, acked = 0;
	pid_t pid;
	FILE *f;

	CHECK(pipe(p) == 0, "pipe");
	pid = fork();
	if (pid == 0) {
		struct acker k[4];
		pthread_t th;

		close(p[0]);
		if (audit_open(path, true, &a) != BROKER_OK)
			_exit(2);
		for (int t = 0; t < 4; t++) {
			k[t] = (struct acker){.a = a, .tag = t, .fd = p[1]};
			pthread_create(&th, NULL, acker_run, &k[t]);
		}
		pause();
		_exit(0);
	}
	close(p[1]);
	usleep(300 * 1000);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "writer killed, not failed (status %d)", status);
	for (;;) {
		ssize_t n;

		if (acks_cap - acks_len < 4096) {
			acks_cap = acks_cap ? acks_cap * 2 : 65536;
			acks = realloc(acks, acks_cap);
		}
		n = read(p[0], acks + acks_len, acks_cap - acks_len - 1);
		if (n <= 0)
			break;
		acks_len += (size_t)n;
	}
	close(p[0]);
	if (!acks)
		return;
	acks[acks_len] = '\0';
	log = slurp(path, &log_len);
	for (line = strtok_r(acks, "\n", &save); line && log; line = strtok_r(NULL, "\n", &save)) {
		char needle[80];

		snprintf(needle, sizeof(needle), "\"request_id\":\"%s\"", line);
		acked++;
		if (!strstr(log, needle))
			missing++;
	}
	CHECK(acked > 0 && missing == 0, "%d of %d acknowledged records missing", missing, acked);
	free(log);
	free(acks);
	f = fopen(path, "r");
	CHECK(f && audit_verify_stream(f, false, NULL, NULL, &r) == BROKER_OK && r.bad_line == 0,
	      "killed file verifies");
	if (f)
		fclose(f);
	CHECK(audit_open(path, true, &a) == BROKER_OK && write_n(a, 2, 9) == BROKER_OK, "restart writes");
	audit_close(a);
	f = fopen(path, "r");
	CHECK(f && audit_verify_stream(f, false, NULL, NULL, &r) == BROKER_OK && r.bad_line == 0 &&
	      r.records >= (uint64_t)acked + 2, "continued after the kill (%llu records)",
	      (unsigned long long)r.records);
	if (f)
		fclose(f);
}

static void cleanup(void)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/test-audit-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	CHECK(access(SHA256SUM_SCRIPT, R_OK) == 0, "run from tests/: %s", SHA256SUM_SCRIPT);
	test_format();
	test_chain();
	test_tamper();
	test_restart();
	test_torn();
	test_long_tail();
	test_dev_full();
	test_partial_write();
	test_stdout();
	test_concurrent();
	test_submit();
	test_group_commit_pipe();
	test_sigkill();
	cleanup();
	return check_done();
}
