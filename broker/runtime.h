/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/* Internal to the exchange library: what exchange.c needs of the runtime. */
#include <jansson.h>

#include "cibroker/exchange.h"
#include "cibroker/issuer.h"
#include "cibroker/keys.h"
#include "cibroker/policy.h"

const struct broker_policy *runtime_find_policy(const struct broker_snapshot *s, const char *name);
struct broker_issuer *runtime_find_issuer(const struct broker_snapshot *s, const char *name);
const struct broker_policy_set *runtime_policies(const struct broker_snapshot *s);
const struct broker_signing_keys *runtime_signing_keys(const struct broker_snapshot *s);

/* BROKER_OK first time, BROKER_ERR_REPLAY if seen, BROKER_ERR_UPSTREAM if the
 * shared store is unreachable or the local cache is full. */
enum broker_err runtime_replay_check(struct broker_state *st, const char *issuer, const char *jti,
				     int64_t expires_at);

void runtime_replay_release(struct broker_state *st, const char *issuer, const char *jti);

/* Token buckets of the current snapshot (no-ops when not configured). */
enum broker_err runtime_ratelimit_ip(struct broker_snapshot *s, const char *remote, int *ret_retry_after);
enum broker_err runtime_ratelimit_subject(struct broker_snapshot *s, const char *issuer, const char *sub,
					  int *ret_retry_after);

/* aws credential: fills *ret_credential (audit) and *ret_body (answer) on success,
 * or the result's status/error and *ret_reason on failure. */
bool runtime_mint_aws(struct broker_state *st, struct broker_snapshot *s, const struct broker_policy *p,
		      const json_t *claims, json_t **ret_credential, char **ret_body, struct exchange_result *res,
		      const char **ret_reason, char *reason_buf, size_t reason_len);

void runtime_note_audit_error(struct broker_state *st);
void runtime_note_exchange(struct broker_state *st, const char *policy, int status, const char *error,
			   int64_t latency_us);
