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
 * concurrent writers share one fdatasync). */
struct broker_audit;

enum broker_err audit_open(const char *path, bool sync_always, struct broker_audit **ret);
void audit_close(struct broker_audit *a); /* flushes; NULL ok */
/* SIGUSR1 / logrotate: reopen the path, continuing the chain of what is there. */
enum broker_err audit_reopen(struct broker_audit *a);
/* False after a failed write until a later write succeeds. */
bool audit_healthy(const struct broker_audit *a);

struct audit_record {
	int64_t ts_us;
	const char *request_id, *remote;
	bool allow;
	const char *error, *reason;         /* NULL when allowed */
	const char *audience, *policy, *issuer, *sub, *token_jti; /* NULL -> null */
	const json_t *claims;               /* selected claims object, or NULL */
	const json_t *credential;           /* {"type","id","expires_at",...} or NULL */
	int64_t latency_us;
};
/* BROKER_ERR_AUDIT if the record could not be written (or synced). */
enum broker_err audit_write(struct broker_audit *a, const struct audit_record *rec);

/* Check a file's chain. BROKER_OK if intact; otherwise *ret_bad_line is the
 * first bad line (1-based) and BROKER_ERR_INVALID. */
enum broker_err audit_verify_file(const char *path, uint64_t *ret_bad_line, uint64_t *ret_lines);
