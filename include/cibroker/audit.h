/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cibroker/err.h"

/* Tamper-evident audit log: one JSON line per decision, each carrying the
 * SHA-256 of the previous line ("prev"). Writes are serialised; with sync
 * always, audit_write returns only once the line is durable (group commit:
 * concurrent writers share one write() and one fdatasync). See docs/audit.md. */
struct broker_audit;

/* path "-" = stdout (the chain then starts at zeros). An existing file is
 * appended to and its chain continued from its last line; a last line cut
 * short by a crash is terminated and chained to (docs/audit.md). */
enum broker_err audit_open(const char *path, bool sync_always, struct broker_audit **ret);
/* Waits for any write in progress; callers must have stopped writing. NULL ok. */
void audit_close(struct broker_audit *a);
/* SIGUSR1 / logrotate: reopen the path, continuing the chain of what is there
 * (zeros for a new file). On failure the old file stays in use. Not async-
 * signal-safe: call it from a thread, not from the handler. */
enum broker_err audit_reopen(struct broker_audit *a);
/* False after a failed write until a later write (or audit_probe) succeeds. */
bool audit_healthy(const struct broker_audit *a);
/* For /readyz while unhealthy: without writing a record, check whether the
 * sink looks usable again (regular file: fdatasync works and >= 64 KiB free)
 * and if so mark it healthy, so that a drained instance comes back by itself.
 * BROKER_OK if healthy afterwards, else BROKER_ERR_AUDIT. */
enum broker_err audit_probe(struct broker_audit *a);

/* Only fields that are safe to keep: never the subject token, a signature or
 * a minted secret. Strings longer than 2 KiB are cut (at a UTF-8 boundary),
 * invalid UTF-8 bytes become '?'. */
struct audit_record {
	int64_t ts_us;                      /* 0 = now */
	const char *request_id, *remote;
	bool allow;
	const char *error, *reason;         /* NULL when allowed */
	const char *audience, *policy, *issuer, *sub, *token_jti; /* NULL -> null */
	const json_t *claims;               /* selected claims object, or NULL */
	const json_t *credential;           /* {"type","id","expires_at",...} or NULL */
	int64_t latency_us;
};
/* BROKER_ERR_AUDIT if the record could not be written (or, with sync always,
 * made durable); BROKER_ERR_INVALID if claims/credential are not objects.
 * Any result other than BROKER_OK means: no credential may leave. */
enum broker_err audit_write(struct broker_audit *a, const struct audit_record *rec);

/* audit_write without holding the caller's thread while its batch is made
 * durable: the record is queued and done(arg, err) is called later, from
 * another thread, with what audit_write would have returned. BROKER_OK:
 * done will be called exactly once (also when audit_close comes first: it
 * writes what was queued). Any other result: it will not be, and the record
 * was not queued. */
typedef void audit_done_fn(void *arg, enum broker_err err);
enum broker_err audit_submit(struct broker_audit *a, const struct audit_record *rec, audit_done_fn *done, void *arg);
/* With sync always the caller of audit_write waits for an fdatasync; with
 * none only for a write(). */
bool audit_sync_always(const struct broker_audit *a);

/* Counters for /metrics; read without locking, each monotonic. */
struct audit_stats {
	uint64_t records;        /* records written (and synced with sync always) */
	uint64_t batches;        /* write() batches (group commits) that succeeded */
	uint64_t syncs;          /* fdatasync calls made */
	uint64_t errors;         /* batches that failed (their writers got BROKER_ERR_AUDIT) */
	uint64_t torn_recovered; /* cut-short last lines found at open/reopen */
};
void audit_get_stats(const struct broker_audit *a, struct audit_stats *ret);

/* Check a file's chain. BROKER_OK if intact; otherwise *ret_bad_line is the
 * first bad line (1-based) and BROKER_ERR_INVALID. BROKER_ERR_IO if unreadable. */
enum broker_err audit_verify_file(const char *path, uint64_t *ret_bad_line, uint64_t *ret_lines);

struct audit_verify_report {
	uint64_t lines;     /* lines read */
	uint64_t records;   /* lines that are well-formed records */
	uint64_t torn;      /* torn (crash) fragments accepted */
	uint64_t bad_line;  /* first bad line, 0 if the chain is intact */
	char reason[200];   /* why bad_line is bad */
};
typedef void audit_torn_fn(uint64_t line, void *userdata);
/* The verifier behind audit_verify_file, for the CLI. Returns BROKER_OK once
 * the whole stream was read (intact or not: see ret->bad_line), BROKER_ERR_IO
 * on a read error. A line that is not JSON is accepted as a torn record only
 * if it is the last line or the next line's prev is its hash; on_torn (may be
 * NULL) is told about each; strict makes any torn line bad. */
enum broker_err audit_verify_stream(FILE *f, bool strict, audit_torn_fn *on_torn, void *userdata,
				    struct audit_verify_report *ret);
