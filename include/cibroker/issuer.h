/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cibroker/config.h"
#include "cibroker/err.h"
#include "cibroker/jwt.h"

/* Issuer key caches: discovery, JWKS fetch with libcurl, periodic refresh,
 * rate-limited single-flight refetch on unknown kid. A failed refresh keeps
 * the last good keys. Only this module (and mint) fetch over HTTP.
 * docs/issuers.md describes the behaviour in full. */
struct broker_issuers;
struct broker_issuer;

/* curl_global_init() for the whole process, done exactly once (pthread_once).
 * issuers_create() calls it; any other libcurl user in the process (mint/aws,
 * the CLI client) must call it before its first curl_easy_init(), because
 * curl_global_init is not safe to race with other threads using curl.
 * curl_global_cleanup() is never called: the process exit releases it.
 * BROKER_ERR_NOMEM if libcurl could not initialise. */
enum broker_err broker_curl_global_init(void);

/* cfg is borrowed and must outlive the set (a reload builds a new set).
 * Refuses (BROKER_ERR_CONFIG) issuer or jwks_uri URLs that are neither
 * https:// nor http:// to a loopback host. Nothing is fetched yet. */
enum broker_err issuers_create(const struct broker_config *cfg, struct broker_issuers **ret);
/* Starts the background refresh (one thread per issuer, so a slow issuer
 * never delays another): the first fetch happens at once and is retried with
 * backoff (1 s, 2 s, 4 s ... 30 s) until it succeeds, then every jwks_refresh.
 * Without issuers_start, keys are still fetched on demand by lookups. */
enum broker_err issuers_start(struct broker_issuers *set);
/* Before issuers_start on a reload: each issuer of set that fetches from the
 * same place as one of old (same name, issuer, jwks_uri and ca_file) starts
 * with old's last good keys, so a reload during an issuer outage keeps them
 * as a failed refresh would. Its first fetch still happens at once. */
void issuers_adopt_keys(struct broker_issuers *set, const struct broker_issuers *old);
void issuers_free(struct broker_issuers *set); /* stops (aborting transfers) and joins; NULL ok */

struct broker_issuer *issuers_find(const struct broker_issuers *set, const char *name);
size_t issuers_count(const struct broker_issuers *set);
struct broker_issuer *issuers_at(const struct broker_issuers *set, size_t i);
const struct broker_issuer_config *issuer_config(const struct broker_issuer *iss);

/* Key for kid. Unknown kid -> at most one refetch per jwks_min_refetch,
 * shared by all waiting callers. On BROKER_OK *ret_set holds a reference the
 * caller drops with jwks_unref(); *ret_key points into it.
 * BROKER_ERR_NOKEYS if the issuer has never had keys, BROKER_ERR_NOTFOUND if
 * the kid is unknown after any allowed refetch. */
enum broker_err issuer_keys_lookup(struct broker_issuer *iss, const char *kid, struct broker_jwks **ret_set,
				   const struct broker_jwk **ret_key);
bool issuer_ready(const struct broker_issuer *iss);

struct issuer_stats {
	uint64_t refresh_ok, refresh_failed; /* every fetch attempt, periodic or on demand */
	uint64_t unknown_kid_refetches;      /* fetches started by an unknown kid */
	int64_t keys_fetched_at; /* epoch s of the last good fetch, 0 if never */
	size_t n_keys;
	const char *last_error;  /* static reason of the last failed fetch, NULL after a success */
};
void issuer_get_stats(const struct broker_issuer *iss, struct issuer_stats *ret);
