/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cibroker/err.h"

/* Per-instance state that protects the exchange: the single-use (replay)
 * cache, in memory or in Redis, and token-bucket rate limits. */

struct broker_replay;

/* redis_url NULL: in-memory cache, bounded to max_entries; else Redis
 * ("redis://[:password@]host:port[/db]") shared by every instance. */
enum broker_err replay_create(const char *redis_url, size_t max_entries, struct broker_replay **ret);
void replay_free(struct broker_replay *r);
/* Records key until expires_at (epoch s). BROKER_OK the first time,
 * BROKER_ERR_REPLAY if seen and unexpired, BROKER_ERR_UPSTREAM if Redis is
 * unreachable or the local cache is full: never a silent pass. */
enum broker_err replay_check(struct broker_replay *r, const char *key, int64_t expires_at);
/* Forgets key again: an exchange that recorded its token and then failed
 * (503, 403) issued nothing, so a retry with the same token is allowed.
 * Best effort: if Redis is unreachable the token stays spent. */
void replay_release(struct broker_replay *r, const char *key);

struct broker_ratelimit;

/* rate: tokens per second (0: no limit); burst: bucket size. */
enum broker_err ratelimit_create(double rate, double burst, size_t max_keys, struct broker_ratelimit **ret);
void ratelimit_free(struct broker_ratelimit *rl);
/* BROKER_OK if a token was taken; BROKER_ERR_RATELIMIT with *ret_retry_after
 * (whole seconds, >= 1) otherwise. NULL rl: always OK. */
enum broker_err ratelimit_take(struct broker_ratelimit *rl, const char *key, int64_t now_us, int *ret_retry_after);
