/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "cibroker/limits.h"
#include "cibroker/util.h"

static void test_replay_local(void)
{
	struct broker_replay *r = NULL;
	int64_t now = broker_now();
	char key[32];

	CHECK(replay_create(NULL, 100, &r) == BROKER_OK);
	CHECK(replay_check(r, "iss\njti-1", now + 60) == BROKER_OK, "first use passes");
	CHECK(replay_check(r, "iss\njti-1", now + 60) == BROKER_ERR_REPLAY, "second use refused");
	replay_release(r, "iss\njti-1");
	CHECK(replay_check(r, "iss\njti-1", now + 60) == BROKER_OK, "released: usable again");
	CHECK(replay_check(r, "iss\njti-1", now + 60) == BROKER_ERR_REPLAY, "and spent again");
	replay_release(r, "iss\nnever-seen"); /* no-op */
	CHECK(replay_check(r, "other\njti-1", now + 60) == BROKER_OK, "same jti, other issuer");
	CHECK(replay_check(r, "iss\nold", now - 1) == BROKER_OK);
	CHECK(replay_check(r, "iss\nold", now + 60) == BROKER_OK, "expired entry may be used again");
	/* Bounded: 100 live entries, then refusal (never a silent pass). */
	enum broker_err last = BROKER_OK;
	int accepted = 0;
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "iss\nk%d", i);
		last = replay_check(r, key, now + 60);
		if (last == BROKER_OK)
			accepted++;
	}
	CHECK(last == BROKER_ERR_UPSTREAM, "full cache refuses");
	CHECK(accepted <= 100, "accepted %d", accepted);
	CHECK(replay_check(r, "iss\njti-1", now + 60) == BROKER_ERR_REPLAY, "old entries survive growth");
	replay_free(r);
	replay_free(NULL);
	CHECK(replay_create("http://x", 0, &r) == BROKER_ERR_INVALID);
	CHECK(replay_create("redis://", 0, &r) == BROKER_ERR_INVALID);
	CHECK(replay_create("redis://127.0.0.1:0", 0, &r) == BROKER_ERR_INVALID);
}

static void test_replay_redis_down(void)
{
	struct broker_replay *r = NULL;

	/* Port 1 on loopback: nothing listens there. */
	CHECK(replay_create("redis://127.0.0.1:1", 0, &r) == BROKER_OK);
	CHECK(replay_check(r, "iss\njti", broker_now() + 60) == BROKER_ERR_UPSTREAM, "unreachable redis fails closed");
	replay_free(r);
}

static void test_ratelimit(void)
{
	struct broker_ratelimit *rl = NULL;
	int retry = 0;
	int64_t t = 1000000000;

	CHECK(ratelimit_create(0, 0, 0, &rl) == BROKER_OK && rl == NULL, "rate 0: no limiter");
	CHECK(ratelimit_take(NULL, "x", t, &retry) == BROKER_OK);
	CHECK(ratelimit_create(2, 3, 10, &rl) == BROKER_OK && rl);
	for (int i = 0; i < 3; i++)
		CHECK(ratelimit_take(rl, "a", t, &retry) == BROKER_OK, "burst %d", i);
	CHECK(ratelimit_take(rl, "a", t, &retry) == BROKER_ERR_RATELIMIT && retry == 1, "retry %d", retry);
	CHECK(ratelimit_take(rl, "b", t, &retry) == BROKER_OK, "other key has its own bucket");
	CHECK(ratelimit_take(rl, "a", t + 500000, &retry) == BROKER_OK, "refilled one token after 0.5 s");
	CHECK(ratelimit_take(rl, "a", t + 500000, &retry) == BROKER_ERR_RATELIMIT);
	CHECK(ratelimit_take(rl, "a", t + 100 * 1000000LL, &retry) == BROKER_OK, "full again later");
	ratelimit_free(rl);
	CHECK(ratelimit_create(0.1, 1, 10, &rl) == BROKER_OK);
	CHECK(ratelimit_take(rl, "slow", t, &retry) == BROKER_OK);
	CHECK(ratelimit_take(rl, "slow", t, &retry) == BROKER_ERR_RATELIMIT && retry == 10, "retry after %d", retry);
	ratelimit_free(rl);
}

int main(void)
{
	test_replay_local();
	test_replay_redis_down();
	test_ratelimit();
	return check_done();
}
