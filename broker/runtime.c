/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshots (config + policies + keys + issuers, swapped whole on reload)
 * and the process state that outlives them (audit sink, replay cache,
 * metrics). */
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "cibroker/limits.h"
#include "cibroker/mint-aws.h"
#include "cibroker/util.h"
#include "runtime.h"

struct broker_snapshot {
	atomic_int refs;
	struct broker_config *cfg;
	struct broker_policy_set *policies;
	struct broker_signing_keys *keys;
	struct broker_issuers *issuers;
	struct broker_ratelimit *rl_ip, *rl_subject; /* per snapshot: buckets reset on reload */
	struct broker_aws *aws;                      /* NULL without an aws section */
	char *discovery;
};

/* ---- metrics ---- */
static uint64_t fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static const double latency_buckets_ms[] = {0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000};
#define N_BUCKETS (sizeof(latency_buckets_ms) / sizeof(latency_buckets_ms[0]))

struct counter_entry {
	char *policy;
	char *outcome;
	uint64_t count;
	struct counter_entry *next;
};

struct broker_metrics {
	pthread_mutex_t lock;
	struct counter_entry *buckets[256];
	uint64_t latency_count[N_BUCKETS + 1];
	uint64_t latency_n;
	double latency_sum_s;
	uint64_t audit_errors;
	uint64_t reloads_ok, reloads_failed;
};

struct retired_sink {
	char *path;
	struct broker_audit *audit;
};

struct broker_state {
	pthread_mutex_t lock;
	struct retired_sink *retired; /* sinks a reload moved away from */
	size_t n_retired;
	struct broker_snapshot *cur;
	struct broker_audit *audit;
	char *audit_path;
	/* Outlives reloads: a token used before a SIGHUP stays used after it.
	 * replay.redis is read at start; changing it needs a restart. */
	struct broker_replay *replay;
	struct broker_metrics metrics;
	int64_t started_at;
};

static char *render_discovery(const struct broker_config *cfg)
{
	json_t *o;
	char *s, *jwks = NULL, *tok = NULL;
	const char *base = cfg->public_url;
	size_t n = strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	if (asprintf(&jwks, "%.*s/.well-known/jwks.json", (int)n, base) < 0)
		jwks = NULL;
	if (asprintf(&tok, "%.*s/v1/token", (int)n, base) < 0)
		tok = NULL;
	o = json_pack("{s:s, s:s?, s:s?, s:[s], s:[s], s:[s], s:[s], s:[s]}", "issuer", cfg->public_url, "jwks_uri",
		      jwks, "token_endpoint", tok, "grant_types_supported",
		      "urn:ietf:params:oauth:grant-type:token-exchange", "token_endpoint_auth_methods_supported", "none",
		      "id_token_signing_alg_values_supported", "ES256", "response_types_supported", "id_token",
		      "subject_types_supported", "public");
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	free(jwks);
	free(tok);
	return s;
}

enum broker_err snapshot_build(struct broker_config *cfg, struct broker_signing_keys *keys, struct diag *d,
			       struct broker_snapshot **ret)
{
	struct broker_snapshot *s = calloc(1, sizeof(*s));
	enum broker_err err = BROKER_ERR_NOMEM;

	if (!s) {
		config_free(cfg);
		signing_keys_free(keys);
		return BROKER_ERR_NOMEM;
	}
	atomic_init(&s->refs, 1);
	s->cfg = cfg;
	s->keys = keys;
	if (!s->keys) {
		err = signing_keys_load(cfg->signing_keys, cfg->n_signing_keys, cfg->path, cfg->signing_key_pos, d,
					&s->keys);
		if (err != BROKER_OK)
			goto out;
	}
	err = policy_set_load(cfg, d, &s->policies);
	if (err != BROKER_OK)
		goto out;
	err = issuers_create(cfg, &s->issuers);
	if (err != BROKER_OK) {
		diag_error(d, cfg->path ? cfg->path : "config", 0, 0, "issuers: %s", broker_strerror(err));
		goto out;
	}
	err = ratelimit_create(cfg->rate_per_ip, cfg->burst_per_ip, 100000, &s->rl_ip);
	if (err == BROKER_OK)
		err = ratelimit_create(cfg->rate_per_subject, cfg->burst_per_subject, 100000, &s->rl_subject);
	if (err != BROKER_OK)
		goto out;
	if (cfg->aws_sts_endpoint) {
		const char *why = NULL;

		/* No network here: the identity is fetched on first use. */
		err = aws_create(cfg->aws_sts_endpoint, cfg->aws_region, cfg->aws_profile, &s->aws, &why);
		if (err != BROKER_OK) {
			const char *profile = cfg->aws_profile ? cfg->aws_profile : getenv("AWS_PROFILE");

			diag_error(d, cfg->path ? cfg->path : "config", cfg->aws_pos.line, cfg->aws_pos.col,
				   "%s: %s%s%.64s%s", cfg->aws_profile ? "aws.profile" : "aws (the broker's identity)",
				   why ? why : broker_strerror(err), profile ? " (profile '" : "", profile ? profile : "",
				   profile ? "')" : "");
			goto out;
		}
	}
	s->discovery = render_discovery(cfg);
	if (!s->discovery) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	*ret = s;
	return BROKER_OK;
out:
	snapshot_unref(s);
	return err;
}

enum broker_err snapshot_load(const char *config_path, struct diag *d, struct broker_snapshot **ret)
{
	struct broker_config *cfg = NULL;
	enum broker_err err = config_load(config_path, d, &cfg);

	if (err != BROKER_OK)
		return err;
	return snapshot_build(cfg, NULL, d, ret);
}

enum broker_err snapshot_start(struct broker_snapshot *s)
{
	return issuers_start(s->issuers);
}

void snapshot_adopt_keys(struct broker_snapshot *s, const struct broker_snapshot *prev)
{
	if (s && prev)
		issuers_adopt_keys(s->issuers, prev->issuers);
}

struct broker_snapshot *snapshot_ref(struct broker_snapshot *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void snapshot_unref(struct broker_snapshot *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	issuers_free(s->issuers);
	aws_free(s->aws);
	ratelimit_free(s->rl_ip);
	ratelimit_free(s->rl_subject);
	policy_set_free(s->policies);
	signing_keys_free(s->keys);
	config_free(s->cfg);
	free(s->discovery);
	free(s);
}

const struct broker_config *snapshot_config(const struct broker_snapshot *s) { return s->cfg; }
const char *snapshot_jwks(const struct broker_snapshot *s) { return signing_keys_jwks(s->keys); }
const char *snapshot_discovery(const struct broker_snapshot *s) { return s->discovery; }
size_t snapshot_policy_count(const struct broker_snapshot *s) { return policy_set_count(s->policies); }

const struct broker_issuers *snapshot_issuers(const struct broker_snapshot *s) { return s->issuers; }

bool snapshot_issuers_ready(const struct broker_snapshot *s)
{
	for (size_t i = 0; i < issuers_count(s->issuers); i++)
		if (!issuer_ready(issuers_at(s->issuers, i)))
			return false;
	return true;
}

const struct broker_policy *runtime_find_policy(const struct broker_snapshot *s, const char *name)
{
	return policy_set_find(s->policies, name);
}

struct broker_issuer *runtime_find_issuer(const struct broker_snapshot *s, const char *name)
{
	return issuers_find(s->issuers, name);
}

const struct broker_policy_set *runtime_policies(const struct broker_snapshot *s) { return s->policies; }
const struct broker_signing_keys *runtime_signing_keys(const struct broker_snapshot *s) { return s->keys; }

/* ---- state ---- */

enum broker_err state_create(struct broker_snapshot *snap, struct broker_state **ret)
{
	struct broker_state *st = calloc(1, sizeof(*st));
	enum broker_err err;

	if (!st)
		return BROKER_ERR_NOMEM;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->metrics.lock, NULL);
	st->started_at = broker_now();
	st->audit_path = strdup(snap->cfg->audit_path ? snap->cfg->audit_path : "-");
	if (!st->audit_path) {
		state_free(st);
		return BROKER_ERR_NOMEM;
	}
	err = replay_create(snap->cfg->replay_redis, 1000000, &st->replay);
	if (err != BROKER_OK) {
		state_free(st);
		return err;
	}
	err = audit_open(st->audit_path, snap->cfg->audit_sync == BROKER_AUDIT_SYNC_ALWAYS, &st->audit);
	if (err != BROKER_OK) {
		int saved = errno; /* for the caller's message */

		state_free(st);
		errno = saved;
		return err;
	}
	st->cur = snap;
	*ret = st;
	return BROKER_OK;
}

void state_free(struct broker_state *st)
{
	if (!st)
		return;
	snapshot_unref(st->cur);
	audit_close(st->audit);
	free(st->audit_path);
	for (size_t i = 0; i < st->n_retired; i++) {
		audit_close(st->retired[i].audit);
		free(st->retired[i].path);
	}
	free(st->retired);
	replay_free(st->replay);
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(st->metrics.buckets); i++) {
		struct counter_entry *e = st->metrics.buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e->policy);
			free(e->outcome);
			free(e);
		}
	}
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->metrics.lock);
	free(st);
}

struct broker_snapshot *state_acquire(struct broker_state *st)
{
	struct broker_snapshot *s;

	pthread_mutex_lock(&st->lock);
	s = snapshot_ref(st->cur);
	pthread_mutex_unlock(&st->lock);
	return s;
}

/* A reload that moves the audit log opens the new path; the old sink stays
 * open (exchanges in flight may still write to it) on a retired list that is
 * closed at exit, and is taken back if a later reload returns to its path,
 * so one file never has two writers with two chains. audit.sync is read when
 * a sink is opened: changing it alone takes a restart. */
enum broker_err state_swap(struct broker_state *st, struct broker_snapshot *snap)
{
	struct broker_snapshot *old;
	const char *path = snap->cfg->audit_path ? snap->cfg->audit_path : "-";

	if (strcmp(path, st->audit_path) != 0) {
		struct broker_audit *a = NULL;
		char *p = strdup(path);
		struct retired_sink *r = NULL;
		enum broker_err err = p ? BROKER_OK : BROKER_ERR_NOMEM;
		size_t i;

		for (i = 0; err == BROKER_OK && i < st->n_retired; i++)
			if (strcmp(st->retired[i].path, path) == 0)
				break;
		if (err == BROKER_OK && i < st->n_retired) {
			a = st->retired[i].audit;
			free(st->retired[i].path);
			st->retired[i] = st->retired[--st->n_retired];
		} else if (err == BROKER_OK) {
			r = realloc(st->retired, (st->n_retired + 1) * sizeof(*st->retired));
			if (!r)
				err = BROKER_ERR_NOMEM;
			else
				st->retired = r;
			if (err == BROKER_OK)
				err = audit_open(path, snap->cfg->audit_sync == BROKER_AUDIT_SYNC_ALWAYS, &a);
		}
		if (err != BROKER_OK) {
			free(p);
			return err;
		}
		pthread_mutex_lock(&st->lock);
		st->retired[st->n_retired].audit = st->audit;
		st->retired[st->n_retired].path = st->audit_path;
		st->n_retired++;
		st->audit = a;
		st->audit_path = p;
		pthread_mutex_unlock(&st->lock);
	}
	pthread_mutex_lock(&st->lock);
	old = st->cur;
	st->cur = snap;
	pthread_mutex_unlock(&st->lock);
	snapshot_unref(old);
	return BROKER_OK;
}

struct broker_audit *state_audit(struct broker_state *st)
{
	struct broker_audit *a;

	pthread_mutex_lock(&st->lock);
	a = st->audit;
	pthread_mutex_unlock(&st->lock);
	return a;
}

enum broker_err state_reopen_audit(struct broker_state *st)
{
	return audit_reopen(state_audit(st));
}

struct broker_metrics *state_metrics(struct broker_state *st) { return &st->metrics; }

char *state_readiness(struct broker_state *st, bool *ret_ready)
{
	struct broker_snapshot *s = state_acquire(st);
	json_t *missing = json_array();
	char *out;

	for (size_t i = 0; i < issuers_count(s->issuers); i++) {
		struct broker_issuer *iss = issuers_at(s->issuers, i);

		if (!issuer_ready(iss)) {
			struct issuer_stats is;
			char buf[400];

			issuer_get_stats(iss, &is);
			snprintf(buf, sizeof(buf), "issuer %s: no keys yet%s%s%s", issuer_config(iss)->name,
				 is.last_error ? " (last fetch: " : "", is.last_error ? is.last_error : "",
				 is.last_error ? ")" : "");
			json_array_append_new(missing, json_string(buf));
		}
	}
	/* An unhealthy sink is re-probed here, so an instance drained by a full
	 * disk comes back by itself once space is freed. */
	if (!audit_healthy(state_audit(st)) && audit_probe(state_audit(st)) != BROKER_OK)
		json_array_append_new(missing, json_string("audit: sink not writable"));
	*ret_ready = json_array_size(missing) == 0;
	out = json_dumps(missing, JSON_COMPACT);
	json_decref(missing);
	snapshot_unref(s);
	return out;
}

/* ---- replay and rate limits ---- */

enum broker_err runtime_replay_check(struct broker_state *st, const char *issuer, const char *jti, int64_t expires_at)
{
	char *key = NULL;
	enum broker_err err;

	if (asprintf(&key, "%s\n%s", issuer, jti) < 0)
		return BROKER_ERR_UPSTREAM;
	err = replay_check(st->replay, key, expires_at);
	free(key);
	return err;
}

void runtime_replay_release(struct broker_state *st, const char *issuer, const char *jti)
{
	char *key = NULL;

	if (asprintf(&key, "%s\n%s", issuer, jti) < 0)
		return;
	replay_release(st->replay, key);
	free(key);
}

enum broker_err runtime_ratelimit_ip(struct broker_snapshot *s, const char *remote, int *ret_retry_after)
{
	return ratelimit_take(s->rl_ip, remote, broker_mono_us(), ret_retry_after);
}

enum broker_err runtime_ratelimit_subject(struct broker_snapshot *s, const char *issuer, const char *sub,
					  int *ret_retry_after)
{
	char *key = NULL;
	enum broker_err err;

	if (!s->rl_subject)
		return BROKER_OK;
	if (asprintf(&key, "%s\n%s", issuer, sub) < 0)
		return BROKER_ERR_NOMEM;
	err = ratelimit_take(s->rl_subject, key, broker_mono_us(), ret_retry_after);
	free(key);
	return err;
}

/* Wipes every string of a JSON value in place (answers holding secrets). */
static void json_wipe(json_t *v)
{
	const char *k;
	json_t *c;
	size_t i;

	if (json_is_string(v)) {
		OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
	} else if (json_is_object(v)) {
		json_object_foreach(v, k, c)
			json_wipe(c);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, c)
			json_wipe(c);
	}
}

static bool aws_fail(struct exchange_result *res, int status, const char *error, const char *desc)
{
	res->status = status;
	res->error = error;
	snprintf(res->description, sizeof(res->description), "%s", desc);
	return false;
}

bool runtime_mint_aws(struct broker_state *st, struct broker_snapshot *s, const struct broker_policy *p,
		      const json_t *claims, json_t **ret_credential, char **ret_body, struct exchange_result *res,
		      const char **ret_reason, char *reason_buf, size_t reason_len)
{
	struct policy_result why;
	struct policy_aws_render r = {0};
	struct aws_credentials cred = {0};
	struct aws_error aerr;
	json_t *answer = NULL, *audit = NULL;
	int64_t ttl = policy_ttl(p), expires_in;
	enum broker_err err;
	bool ok = false;

	memset(&why, 0, sizeof(why));
	memset(&aerr, 0, sizeof(aerr));
	if (!s->aws) {
		*ret_reason = "aws: no aws section in the config";
		return aws_fail(res, 503, "temporarily_unavailable", "aws credentials are not configured");
	}
	if (policy_render_aws(p, claims, &r, &why) != BROKER_OK) {
		aws_fail(res, 403, "access_denied", why.client_reason);
		snprintf(reason_buf, reason_len, "%s", why.audit_reason);
		*ret_reason = reason_buf;
		goto out;
	}
	struct aws_assume_request req = {
		.role_arn = r.role_arn,
		.session_name = r.session_name,
		.source_identity = r.source_identity,
		.session_tags = r.session_tags,
		.session_policy = r.session_policy,
		.duration_s = ttl,
	};
	err = aws_assume_role(s->aws, &req, &cred, &aerr);
	if (err != BROKER_OK) {
		/* STS refusing the role is the caller's answer (403, with STS's code);
		 * anything else is ours to fix or wait out (503). */
		bool denied = err == BROKER_ERR_DENIED;
		char desc[160];

		snprintf(desc, sizeof(desc), "%s: %s", denied ? "STS refused the role" : "STS unavailable",
			 aerr.code[0] ? aerr.code : "error");
		aws_fail(res, denied ? 403 : 503, denied ? "access_denied" : "temporarily_unavailable", desc);
		res->retry_after = denied ? 0 : aerr.retry_after;
		snprintf(reason_buf, reason_len, "sts AssumeRole %s (HTTP %d): %s: %s", r.role_arn, aerr.http_status,
			 aerr.code, aerr.message);
		*ret_reason = reason_buf;
		goto out;
	}
	expires_in = cred.expiration - broker_now();
	if (expires_in <= 0 || expires_in > ttl)
		expires_in = ttl;
	answer = json_pack("{s:s, s:s, s:s, s:I, s:{s:i, s:s, s:s, s:s, s:s}}", "access_token", cred.session_token,
			   "issued_token_type", "urn:cibroker:token-type:aws-credentials", "token_type", "N_A",
			   "expires_in", (json_int_t)expires_in, "credentials", "Version", 1, "AccessKeyId",
			   cred.access_key_id, "SecretAccessKey", cred.secret_access_key, "SessionToken",
			   cred.session_token, "Expiration", cred.expiration_text);
	/* the audit record's credential has the contract's three fields; the
	 * AccessKeyId is what CloudTrail logs the session's calls under */
	audit = json_pack("{s:s, s:s, s:s}", "type", "aws", "id", cred.access_key_id, "expires_at",
			  cred.expiration_text);
	*ret_body = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
	if (!*ret_body || !audit) {
		*ret_reason = "out of memory";
		aws_fail(res, 503, "temporarily_unavailable", "out of memory");
		goto out;
	}
	*ret_credential = audit;
	audit = NULL;
	ok = true;
out:
	if (answer) {
		json_wipe(answer);
		json_decref(answer);
	}
	json_decref(audit);
	aws_credentials_clear(&cred);
	policy_aws_render_clear(&r);
	return ok;
}

/* ---- metrics ---- */

void runtime_note_audit_error(struct broker_state *st)
{
	pthread_mutex_lock(&st->metrics.lock);
	st->metrics.audit_errors++;
	pthread_mutex_unlock(&st->metrics.lock);
}

uint64_t state_audit_errors(struct broker_state *st)
{
	uint64_t n;

	pthread_mutex_lock(&st->metrics.lock);
	n = st->metrics.audit_errors;
	pthread_mutex_unlock(&st->metrics.lock);
	return n;
}

void state_note_reload(struct broker_state *st, bool ok)
{
	pthread_mutex_lock(&st->metrics.lock);
	if (ok)
		st->metrics.reloads_ok++;
	else
		st->metrics.reloads_failed++;
	pthread_mutex_unlock(&st->metrics.lock);
}

void runtime_note_exchange(struct broker_state *st, const char *policy, int status, const char *error,
			   int64_t latency_us)
{
	struct broker_metrics *m = &st->metrics;
	/* 429 and 503 share the OAuth code temporarily_unavailable; an operator
	 * needs to tell a rate limit from an outage. */
	const char *outcome = status == 200 ? "allow" : status == 429 ? "rate_limited" : error ? error : "error";
	const char *pol = policy ? policy : "";
	uint64_t h = fnv1a(pol) ^ fnv1a(outcome);
	struct counter_entry *e;
	double ms = (double)latency_us / 1000.0;
	size_t b = 0;

	while (b < N_BUCKETS && ms > latency_buckets_ms[b])
		b++;
	pthread_mutex_lock(&m->lock);
	for (e = m->buckets[h & 255]; e; e = e->next)
		if (strcmp(e->policy, pol) == 0 && strcmp(e->outcome, outcome) == 0)
			break;
	if (!e && (e = calloc(1, sizeof(*e)))) {
		e->policy = strdup(pol);
		e->outcome = strdup(outcome);
		if (!e->policy || !e->outcome) {
			free(e->policy);
			free(e->outcome);
			free(e);
			e = NULL;
		} else {
			e->next = m->buckets[h & 255];
			m->buckets[h & 255] = e;
		}
	}
	if (e)
		e->count++;
	m->latency_count[b]++;
	m->latency_n++;
	m->latency_sum_s += (double)latency_us / 1e6;
	pthread_mutex_unlock(&m->lock);
}

/* Label values are policy names (a safe charset) and fixed outcome words,
 * but escape anyway: the exposition format breaks on a stray quote. */
static void put_label(FILE *f, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			fputc('\\', f);
		if (*v == '\n') {
			fputs("\\n", f);
			continue;
		}
		fputc(*v, f);
	}
}

char *state_metrics_render(struct broker_state *st)
{
	struct broker_metrics *m = &st->metrics;
	struct broker_snapshot *s = state_acquire(st);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	uint64_t cum = 0;
	int64_t now = broker_now();

	if (!f) {
		snapshot_unref(s);
		return NULL;
	}
	fprintf(f, "# HELP cibroker_build_info Build information.\n# TYPE cibroker_build_info gauge\n");
	fprintf(f, "cibroker_build_info{version=\"%s\"} 1\n", CIBROKER_VERSION);
	fprintf(f, "# HELP cibroker_exchanges_total Token exchanges by policy and outcome.\n");
	fprintf(f, "# TYPE cibroker_exchanges_total counter\n");
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(m->buckets); i++)
		for (struct counter_entry *e = m->buckets[i]; e; e = e->next) {
			fputs("cibroker_exchanges_total{policy=\"", f);
			put_label(f, e->policy);
			fputs("\",outcome=\"", f);
			put_label(f, e->outcome);
			fprintf(f, "\"} %llu\n", (unsigned long long)e->count);
		}
	fprintf(f, "# HELP cibroker_exchange_duration_seconds Time to answer /v1/token.\n");
	fprintf(f, "# TYPE cibroker_exchange_duration_seconds histogram\n");
	for (size_t b = 0; b < N_BUCKETS; b++) {
		cum += m->latency_count[b];
		fprintf(f, "cibroker_exchange_duration_seconds_bucket{le=\"%g\"} %llu\n", latency_buckets_ms[b] / 1000.0,
			(unsigned long long)cum);
	}
	cum += m->latency_count[N_BUCKETS];
	fprintf(f, "cibroker_exchange_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	fprintf(f, "cibroker_exchange_duration_seconds_sum %.6f\n", m->latency_sum_s);
	fprintf(f, "cibroker_exchange_duration_seconds_count %llu\n", (unsigned long long)m->latency_n);
	fprintf(f, "# HELP cibroker_audit_errors_total Audit records that could not be written.\n");
	fprintf(f, "# TYPE cibroker_audit_errors_total counter\ncibroker_audit_errors_total %llu\n",
		(unsigned long long)m->audit_errors);
	struct audit_stats as;
	audit_get_stats(state_audit(st), &as);
	fprintf(f, "# HELP cibroker_audit_records_total Audit records written.\n");
	fprintf(f, "# TYPE cibroker_audit_records_total counter\ncibroker_audit_records_total %llu\n",
		(unsigned long long)as.records);
	fprintf(f, "# HELP cibroker_audit_batches_total Group commits (one write, at most one fdatasync).\n");
	fprintf(f, "# TYPE cibroker_audit_batches_total counter\ncibroker_audit_batches_total %llu\n",
		(unsigned long long)as.batches);
	fprintf(f, "# HELP cibroker_audit_syncs_total fdatasync calls on the audit log.\n");
	fprintf(f, "# TYPE cibroker_audit_syncs_total counter\ncibroker_audit_syncs_total %llu\n",
		(unsigned long long)as.syncs);
	fprintf(f, "# HELP cibroker_reloads_total Configuration reloads by result.\n");
	fprintf(f, "# TYPE cibroker_reloads_total counter\n");
	fprintf(f, "cibroker_reloads_total{result=\"ok\"} %llu\n", (unsigned long long)m->reloads_ok);
	fprintf(f, "cibroker_reloads_total{result=\"failed\"} %llu\n", (unsigned long long)m->reloads_failed);
	pthread_mutex_unlock(&m->lock);

	fprintf(f, "# HELP cibroker_jwks_refreshes_total JWKS fetches by issuer and result.\n");
	fprintf(f, "# TYPE cibroker_jwks_refreshes_total counter\n");
	for (size_t i = 0; i < issuers_count(s->issuers); i++) {
		struct issuer_stats is;
		struct broker_issuer *iss = issuers_at(s->issuers, i);

		issuer_get_stats(iss, &is);
		fputs("cibroker_jwks_refreshes_total{issuer=\"", f);
		put_label(f, issuer_config(iss)->name);
		fprintf(f, "\",result=\"ok\"} %llu\n", (unsigned long long)is.refresh_ok);
		fputs("cibroker_jwks_refreshes_total{issuer=\"", f);
		put_label(f, issuer_config(iss)->name);
		fprintf(f, "\",result=\"failed\"} %llu\n", (unsigned long long)is.refresh_failed);
	}
	fprintf(f, "# HELP cibroker_jwks_age_seconds Age of each issuer's last good JWKS (-1: never fetched).\n");
	fprintf(f, "# TYPE cibroker_jwks_age_seconds gauge\n");
	for (size_t i = 0; i < issuers_count(s->issuers); i++) {
		struct issuer_stats is;
		struct broker_issuer *iss = issuers_at(s->issuers, i);

		issuer_get_stats(iss, &is);
		fputs("cibroker_jwks_age_seconds{issuer=\"", f);
		put_label(f, issuer_config(iss)->name);
		fprintf(f, "\"} %lld\n", is.keys_fetched_at ? (long long)(now - is.keys_fetched_at) : -1LL);
	}
	fprintf(f, "# HELP cibroker_signing_key_age_seconds Age of each signing key file (mtime), first signs.\n");
	fprintf(f, "# TYPE cibroker_signing_key_age_seconds gauge\n");
	for (size_t i = 0; i < s->cfg->n_signing_keys && i < signing_keys_count(s->keys); i++) {
		struct stat sb;

		if (stat(s->cfg->signing_keys[i], &sb) != 0)
			continue;
		fputs("cibroker_signing_key_age_seconds{kid=\"", f);
		put_label(f, signing_keys_kid(s->keys, i));
		fprintf(f, "\"} %lld\n", (long long)(now - sb.st_mtime));
	}
	fprintf(f, "# HELP cibroker_policies Loaded policies.\n# TYPE cibroker_policies gauge\n");
	fprintf(f, "cibroker_policies %zu\n", policy_set_count(s->policies));
	fprintf(f, "# HELP cibroker_signing_keys Published signing keys.\n# TYPE cibroker_signing_keys gauge\n");
	fprintf(f, "cibroker_signing_keys %zu\n", signing_keys_count(s->keys));
	fprintf(f, "# HELP cibroker_uptime_seconds Seconds since start.\n# TYPE cibroker_uptime_seconds gauge\n");
	fprintf(f, "cibroker_uptime_seconds %lld\n", (long long)(now - st->started_at));
	fclose(f);
	snapshot_unref(s);
	return buf;
}
