/* SPDX-License-Identifier: Apache-2.0 */
/* Replay cache (memory or Redis) and token buckets. Both are bounded: a
 * flood of distinct keys can exhaust neither memory nor the broker. */
#include "cibroker/limits.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "cibroker/util.h"

/* ---- a small open-addressing table shared by both ---- */

struct slot {
	char *key;
	int64_t expires_at; /* replay: epoch s; buckets: last refill (us) */
	double tokens;
};

struct table {
	struct slot *slots;
	size_t cap, used, max;
};

static uint64_t hash_key(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static void table_clear(struct table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->slots[i].key);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* Rebuilds the table at capacity cap, keeping entries keep() accepts. */
static bool table_rebuild(struct table *t, size_t cap, bool (*keep)(const struct slot *, void *), void *ctx)
{
	struct slot *ns = calloc(cap, sizeof(*ns));
	size_t used = 0;

	if (!ns)
		return false;
	for (size_t i = 0; i < t->cap; i++) {
		struct slot *s = &t->slots[i];
		size_t j;

		if (!s->key)
			continue;
		if (!keep(s, ctx)) {
			free(s->key);
			continue;
		}
		j = hash_key(s->key) & (cap - 1);
		while (ns[j].key)
			j = (j + 1) & (cap - 1);
		ns[j] = *s;
		used++;
	}
	free(t->slots);
	t->slots = ns;
	t->cap = cap;
	t->used = used;
	return true;
}

/* Finds key or the empty slot where it goes; makes room first (sweeping
 * with keep(), then growing up to max). NULL when full. */
static struct slot *table_find(struct table *t, const char *key, bool (*keep)(const struct slot *, void *), void *ctx)
{
	size_t j;

	if (!t->slots && !table_rebuild(t, 1024, keep, ctx))
		return NULL;
	if ((t->used + 1) * 2 > t->cap) {
		if (!table_rebuild(t, t->cap, keep, ctx))
			return NULL;
		if ((t->used + 1) * 2 > t->cap) {
			if (t->used + 1 > t->max || !table_rebuild(t, t->cap * 2, keep, ctx))
				return NULL;
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		j = hash_key(key) & (t->cap - 1);
		while (t->slots[j].key && strcmp(t->slots[j].key, key) != 0)
			j = (j + 1) & (t->cap - 1);
		if (t->slots[j].key || t->used < t->max)
			return &t->slots[j];
		/* A new key at the bound: sweep once, then refuse. */
		if (pass == 0 && !table_rebuild(t, t->cap, keep, ctx))
			return NULL;
	}
	return NULL;
}

/* ---- replay ---- */

struct broker_replay {
	pthread_mutex_t lock;
	struct table local;
	/* Redis */
	char *host, *password;
	int port, db;
	redisContext *redis;
};

static bool replay_keep(const struct slot *s, void *ctx)
{
	return s->expires_at >= *(const int64_t *)ctx;
}

static enum broker_err parse_redis_url(struct broker_replay *r, const char *url)
{
	const char *p, *at, *colon, *slash;
	size_t hl;

	if (strncmp(url, "redis://", 8) != 0)
		return BROKER_ERR_INVALID;
	p = url + 8;
	at = strchr(p, '@');
	if (at) {
		const char *pc = memchr(p, ':', (size_t)(at - p));

		if (pc && !(r->password = strndup(pc + 1, (size_t)(at - pc - 1))))
			return BROKER_ERR_NOMEM;
		p = at + 1;
	}
	slash = strchr(p, '/');
	colon = strrchr(p, ':');
	if (colon && slash && colon > slash)
		colon = NULL;
	hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
	if (hl == 0 || !(r->host = strndup(p, hl)))
		return hl ? BROKER_ERR_NOMEM : BROKER_ERR_INVALID;
	r->port = colon ? atoi(colon + 1) : 6379;
	r->db = slash ? atoi(slash + 1) : 0;
	if (r->port <= 0 || r->port > 65535 || r->db < 0)
		return BROKER_ERR_INVALID;
	return BROKER_OK;
}

enum broker_err replay_create(const char *redis_url, size_t max_entries, struct broker_replay **ret)
{
	struct broker_replay *r = calloc(1, sizeof(*r));
	enum broker_err err;

	if (!r)
		return BROKER_ERR_NOMEM;
	pthread_mutex_init(&r->lock, NULL);
	r->local.max = max_entries ? max_entries : 1000000;
	if (redis_url && (err = parse_redis_url(r, redis_url)) != BROKER_OK) {
		replay_free(r);
		return err;
	}
	*ret = r;
	return BROKER_OK;
}

void replay_free(struct broker_replay *r)
{
	if (!r)
		return;
	table_clear(&r->local);
	if (r->redis)
		redisFree(r->redis);
	free(r->host);
	broker_secret_free(r->password);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static redisReply *redis_command(struct broker_replay *r, const char *fmt, ...)
{
	va_list ap;
	redisReply *reply;

	va_start(ap, fmt);
	reply = redisvCommand(r->redis, fmt, ap);
	va_end(ap);
	return reply;
}

static bool redis_connect(struct broker_replay *r)
{
	struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	redisReply *reply;

	if (r->redis && !r->redis->err)
		return true;
	if (r->redis)
		redisFree(r->redis);
	r->redis = redisConnectWithTimeout(r->host, r->port, tv);
	if (!r->redis || r->redis->err)
		return false;
	redisSetTimeout(r->redis, tv);
	if (r->password) {
		reply = redis_command(r, "AUTH %s", r->password);
		bool ok = reply && reply->type == REDIS_REPLY_STATUS;
		freeReplyObject(reply);
		if (!ok)
			return false;
	}
	if (r->db) {
		reply = redis_command(r, "SELECT %d", r->db);
		bool ok = reply && reply->type == REDIS_REPLY_STATUS;
		freeReplyObject(reply);
		if (!ok)
			return false;
	}
	return true;
}

/* SET NX with expiry is the whole protocol: the first instance to record a
 * jti wins, every other instance sees it until the token has expired. */
static enum broker_err replay_redis(struct broker_replay *r, const char *key, int64_t expires_at)
{
	char hashed[65];
	long long ttl = (long long)(expires_at - broker_now());
	redisReply *reply = NULL;
	enum broker_err err = BROKER_ERR_UPSTREAM;

	if (ttl < 1)
		ttl = 1;
	broker_sha256_hex(key, strlen(key), hashed); /* fixed-size keys, no raw jti in Redis */
	pthread_mutex_lock(&r->lock);
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!redis_connect(r))
			continue;
		reply = redis_command(r, "SET cibroker:jti:%s 1 NX EX %lld", hashed, ttl);
		if (reply)
			break;
		redisFree(r->redis); /* broken connection: reconnect once */
		r->redis = NULL;
	}
	if (reply) {
		if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
			err = BROKER_OK;
		else if (reply->type == REDIS_REPLY_NIL)
			err = BROKER_ERR_REPLAY;
		freeReplyObject(reply);
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

void replay_release(struct broker_replay *r, const char *key)
{
	char hashed[65];
	redisReply *reply;
	int64_t now = broker_now();
	struct slot *s;

	if (r->host) {
		broker_sha256_hex(key, strlen(key), hashed);
		pthread_mutex_lock(&r->lock);
		if (redis_connect(r)) {
			reply = redis_command(r, "DEL cibroker:jti:%s", hashed);
			freeReplyObject(reply);
		}
		pthread_mutex_unlock(&r->lock);
		return;
	}
	pthread_mutex_lock(&r->lock);
	s = r->local.slots ? table_find(&r->local, key, replay_keep, &now) : NULL;
	if (s && s->key)
		s->expires_at = 0; /* expired: the next check takes it over */
	pthread_mutex_unlock(&r->lock);
}

enum broker_err replay_check(struct broker_replay *r, const char *key, int64_t expires_at)
{
	int64_t now = broker_now();
	struct slot *s;
	enum broker_err err = BROKER_OK;

	if (r->host)
		return replay_redis(r, key, expires_at);
	pthread_mutex_lock(&r->lock);
	s = table_find(&r->local, key, replay_keep, &now);
	if (!s) {
		err = BROKER_ERR_UPSTREAM;
	} else if (s->key) {
		if (s->expires_at >= now)
			err = BROKER_ERR_REPLAY;
		else
			s->expires_at = expires_at;
	} else if (!(s->key = strdup(key))) {
		err = BROKER_ERR_UPSTREAM;
	} else {
		s->expires_at = expires_at;
		r->local.used++;
	}
	pthread_mutex_unlock(&r->lock);
	return err;
}

/* ---- token buckets ---- */

struct broker_ratelimit {
	pthread_mutex_t lock;
	double rate, burst;
	struct table t;
};

struct bucket_ctx {
	int64_t now_us;
	double rate, burst;
};

/* A bucket that would be full again by now carries no information. */
static bool bucket_keep(const struct slot *s, void *ctx)
{
	const struct bucket_ctx *c = ctx;

	return s->tokens + (double)(c->now_us - s->expires_at) / 1e6 * c->rate < c->burst;
}

enum broker_err ratelimit_create(double rate, double burst, size_t max_keys, struct broker_ratelimit **ret)
{
	struct broker_ratelimit *rl;

	if (rate <= 0) {
		*ret = NULL;
		return BROKER_OK;
	}
	rl = calloc(1, sizeof(*rl));
	if (!rl)
		return BROKER_ERR_NOMEM;
	pthread_mutex_init(&rl->lock, NULL);
	rl->rate = rate;
	rl->burst = burst >= 1 ? burst : 1;
	rl->t.max = max_keys ? max_keys : 100000;
	*ret = rl;
	return BROKER_OK;
}

void ratelimit_free(struct broker_ratelimit *rl)
{
	if (!rl)
		return;
	table_clear(&rl->t);
	pthread_mutex_destroy(&rl->lock);
	free(rl);
}

enum broker_err ratelimit_take(struct broker_ratelimit *rl, const char *key, int64_t now_us, int *ret_retry_after)
{
	struct bucket_ctx ctx;
	struct slot *s;
	enum broker_err err = BROKER_OK;

	if (!rl)
		return BROKER_OK;
	ctx = (struct bucket_ctx){.now_us = now_us, .rate = rl->rate, .burst = rl->burst};
	pthread_mutex_lock(&rl->lock);
	s = table_find(&rl->t, key, bucket_keep, &ctx);
	if (!s) {
		/* Table full of active buckets: under a flood of distinct keys,
		 * refuse rather than forget who was limited. */
		*ret_retry_after = 1;
		err = BROKER_ERR_RATELIMIT;
		goto out;
	}
	if (!s->key) {
		if (!(s->key = strdup(key))) {
			*ret_retry_after = 1;
			err = BROKER_ERR_RATELIMIT;
			goto out;
		}
		rl->t.used++;
		s->tokens = rl->burst;
		s->expires_at = now_us;
	}
	s->tokens += (double)(now_us - s->expires_at) / 1e6 * rl->rate;
	if (s->tokens > rl->burst)
		s->tokens = rl->burst;
	s->expires_at = now_us;
	if (s->tokens >= 1) {
		s->tokens -= 1;
	} else {
		double wait = (1 - s->tokens) / rl->rate;

		*ret_retry_after = (int)ceil(wait) < 1 ? 1 : (int)ceil(wait);
		err = BROKER_ERR_RATELIMIT;
	}
out:
	pthread_mutex_unlock(&rl->lock);
	return err;
}
