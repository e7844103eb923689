/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cibroker/audit.h"
#include "cibroker/config.h"
#include "cibroker/diag.h"
#include "cibroker/err.h"

/* The exchange pipeline and the runtime state it runs on. No HTTP library
 * here: the http module hands in the body and writes out the result. */

/* Everything loaded together from one config: swapped as a whole on SIGHUP;
 * in-flight exchanges finish on the snapshot they started with. */
struct broker_snapshot;
struct broker_signing_keys;

/* Load config, policies, signing keys and issuers (not yet fetching).
 * Diagnostics to d. */
enum broker_err snapshot_load(const char *config_path, struct diag *d, struct broker_snapshot **ret);
/* Build from an in-memory config (dev mode); takes ownership of cfg and keys. */
enum broker_err snapshot_build(struct broker_config *cfg, struct broker_signing_keys *keys, struct diag *d,
			       struct broker_snapshot **ret);
/* Start the issuers' key fetching. */
enum broker_err snapshot_start(struct broker_snapshot *s);
/* On a reload, before snapshot_start: unchanged issuers keep prev's keys. */
void snapshot_adopt_keys(struct broker_snapshot *s, const struct broker_snapshot *prev);
struct broker_snapshot *snapshot_ref(struct broker_snapshot *s);
void snapshot_unref(struct broker_snapshot *s);
const struct broker_config *snapshot_config(const struct broker_snapshot *s);
const char *snapshot_jwks(const struct broker_snapshot *s);
const char *snapshot_discovery(const struct broker_snapshot *s);
size_t snapshot_policy_count(const struct broker_snapshot *s);
bool snapshot_issuers_ready(const struct broker_snapshot *s);
const struct broker_issuers *snapshot_issuers(const struct broker_snapshot *s);

struct broker_metrics;
struct broker_replay;

/* Process-wide state: the current snapshot and what outlives reloads. */
struct broker_state;
enum broker_err state_create(struct broker_snapshot *snap, struct broker_state **ret);
void state_free(struct broker_state *st);
struct broker_snapshot *state_acquire(struct broker_state *st); /* ref held; snapshot_unref when done */
/* Replace the snapshot (reload). The audit sink is reopened if its path changed. */
enum broker_err state_swap(struct broker_state *st, struct broker_snapshot *snap);
struct broker_audit *state_audit(struct broker_state *st);
struct broker_metrics *state_metrics(struct broker_state *st);
/* NULL-terminated JSON array text of what is not ready ("[]" when ready); caller frees. */
char *state_readiness(struct broker_state *st, bool *ret_ready);
void state_note_reload(struct broker_state *st, bool ok);
/* Prometheus text; caller frees. */
char *state_metrics_render(struct broker_state *st);
enum broker_err state_reopen_audit(struct broker_state *st);
/* Records refused by the audit log since start (cibroker_audit_errors_total). */
uint64_t state_audit_errors(struct broker_state *st);

struct exchange_result {
	int status;              /* HTTP status */
	const char *error;       /* OAuth error code, NULL on success */
	char description[256];
	char *body;              /* JSON answer; may hold a credential: wiped by exchange_result_clear */
	int retry_after;         /* seconds, 0 = none */
	char request_id[23];
};

/* POST /v1/token. remote: the client address as text. Never fails to fill ret. */
void exchange_handle(struct broker_state *st, const char *content_type, const char *body, size_t len,
		     const char *remote, struct exchange_result *ret);
/* exchange_handle for a caller that can wait without holding its thread:
 * with audit sync always the record's fdatasync is shared by a whole batch
 * of exchanges (audit_submit), so the caller's thread goes on serving others
 * meanwhile. Returns NULL if *ret is filled already (done is not called).
 * Otherwise done(arg) is called, from another thread, once the audit record
 * is written or failed; then exchange_finish(pending), on any thread, fills
 * *ret and frees pending. Body, content type and remote are not used after
 * exchange_start returns. */
struct exchange_pending;
typedef void exchange_done_fn(void *arg);
struct exchange_pending *exchange_start(struct broker_state *st, const char *content_type, const char *body,
					size_t len, const char *remote, struct exchange_result *ret,
					exchange_done_fn *done, void *arg);
void exchange_finish(struct exchange_pending *pending); /* NULL ok */
/* 413: body over limits.max_body (audited like any other decision), at
 * once or, as exchange_start, with the record's fdatasync waited for. */
void exchange_reject_oversize(struct broker_state *st, const char *remote, struct exchange_result *ret);
struct exchange_pending *exchange_start_oversize(struct broker_state *st, const char *remote,
						 struct exchange_result *ret, exchange_done_fn *done, void *arg);
void exchange_result_clear(struct exchange_result *r);
/* Error body {"error","error_description","request_id"}; caller frees. */
char *exchange_error_json(const char *error, const char *description, const char *request_id);
