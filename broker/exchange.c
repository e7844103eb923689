/* SPDX-License-Identifier: Apache-2.0 */
/* POST /v1/token: request -> verify -> policy -> mint -> audit -> answer.
 * Checks run cheapest first; nothing leaves before its audit record is
 * written (and, with sync: always, durable). */
#include "cibroker/exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cibroker/issuer.h"
#include "cibroker/jwt.h"
#include "cibroker/keys.h"
#include "cibroker/mint.h"
#include "cibroker/policy.h"
#include "cibroker/request.h"
#include "cibroker/util.h"
#include "runtime.h"

#define GRANT_TOKEN_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define TYPE_JWT "urn:ietf:params:oauth:token-type:jwt"
#define TYPE_ID_TOKEN "urn:ietf:params:oauth:token-type:id_token"
#define TYPE_AWS "urn:cibroker:token-type:aws-credentials"

/* Claims copied into the audit record and the minted token's `ci` object:
 * enough to say which job it was, never the whole claim set. */
static const char *const audit_claims[] = {
	"repository", "repository_id", "repository_owner", "repository_owner_id", "ref", "ref_type", "sha",
	"run_id", "run_attempt", "workflow", "job_workflow_ref", "environment", "event_name", "actor",
	"project_path", "project_id", "namespace_path", "pipeline_id", "pipeline_source", "job_id", "user_login",
};
static const char *const ci_claims[] = {"repository", "ref", "sha", "run_id", "workflow", "environment"};

struct exchange {
	struct broker_state *st;
	struct broker_snapshot *snap;
	struct exchange_result *res;
	int64_t started_us;
	const char *remote;
	struct token_request req;
	const struct broker_policy *policy;
	const struct broker_issuer_config *icfg;
	struct broker_token *token;
	bool verified;             /* signature and claim rules passed */
	bool replay_marked;        /* single_use: this exchange recorded the jti */
	const char *reason;        /* audit reason */
	char reason_buf[1024];
	json_t *credential;        /* audit credential object */
	char *secret_body;         /* success answer, held until audited */
};

static void fail(struct exchange *x, int status, const char *error, const char *client_desc, const char *audit_reason)
{
	x->res->status = status;
	x->res->error = error;
	if (status == 503 && x->res->retry_after <= 0)
		x->res->retry_after = 1; /* every 503 says when to come back; callers may say later */
	snprintf(x->res->description, sizeof(x->res->description), "%s", client_desc);
	x->reason = audit_reason ? audit_reason : client_desc;
}

static const char *claim_string(const json_t *claims, const char *name)
{
	const json_t *v = json_object_get(claims, name);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *pick_claims(const json_t *claims, const char *const *names, size_t n)
{
	json_t *out = json_object();

	for (size_t i = 0; out && i < n; i++) {
		json_t *v = json_object_get(claims, names[i]);

		if (json_is_string(v) || json_is_integer(v) || json_is_boolean(v))
			json_object_set(out, names[i], v);
	}
	return out;
}

static bool check_request(struct exchange *x)
{
	const struct token_request *r = &x->req;

	if (!r->grant_type) {
		fail(x, 400, "invalid_request", "missing grant_type", NULL);
		return false;
	}
	if (strcmp(r->grant_type, GRANT_TOKEN_EXCHANGE) != 0) {
		fail(x, 400, "unsupported_grant_type", "only token exchange (RFC 8693) is supported", NULL);
		return false;
	}
	if (!r->subject_token) {
		fail(x, 400, "invalid_request", "missing subject_token", NULL);
		return false;
	}
	if (!r->subject_token_type) {
		fail(x, 400, "invalid_request", "missing subject_token_type", NULL);
		return false;
	}
	if (strcmp(r->subject_token_type, TYPE_JWT) != 0 && strcmp(r->subject_token_type, TYPE_ID_TOKEN) != 0) {
		fail(x, 400, "invalid_request", "subject_token_type must be a JWT or ID token type", NULL);
		return false;
	}
	if (!r->audience) {
		fail(x, 400, "invalid_request", "missing audience", NULL);
		return false;
	}
	x->policy = runtime_find_policy(x->snap, r->audience);
	if (!x->policy) {
		fail(x, 400, "invalid_target", "audience names no policy", NULL);
		return false;
	}
	if (r->requested_token_type) {
		const char *want = policy_cred_type(x->policy) == BROKER_CRED_AWS ? TYPE_AWS : TYPE_JWT;

		if (strcmp(r->requested_token_type, want) != 0) {
			fail(x, 400, "invalid_request", "requested_token_type does not fit the policy's credential",
			     NULL);
			return false;
		}
	}
	x->icfg = config_find_issuer(snapshot_config(x->snap), policy_issuer(x->policy));
	if (!x->icfg) {
		fail(x, 503, "temporarily_unavailable", "policy issuer not configured", NULL);
		return false;
	}
	return true;
}

/* Signature and claims against the policy's issuer (never the token's own
 * idea of where its keys are). */
static bool verify_token(struct exchange *x)
{
	const char *why = NULL;
	struct broker_jwks *set = NULL;
	const struct broker_jwk *key = NULL;
	struct broker_issuer *iss;
	enum broker_err err;
	struct token_rules rules = {
		.issuer = x->icfg->issuer,
		.audiences = x->icfg->audiences,
		.n_audiences = x->icfg->n_audiences,
		.algorithms = x->icfg->algorithms,
		.clock_skew = x->icfg->clock_skew,
		.max_token_age = x->icfg->max_token_age,
		.now = broker_now(),
	};

	err = token_parse(x->req.subject_token, strlen(x->req.subject_token), &x->token, &why);
	if (err == BROKER_OK)
		err = token_check_alg(x->token, &rules, &why);
	if (err != BROKER_OK) {
		fail(x, 400, "invalid_grant", why ? why : "malformed token", NULL);
		return false;
	}
	/* token_parse refuses a token without kid: keys are found by kid only. */
	iss = runtime_find_issuer(x->snap, x->icfg->name);
	err = iss ? issuer_keys_lookup(iss, x->token->kid, &set, &key) : BROKER_ERR_NOKEYS;
	if (err == BROKER_ERR_NOKEYS || err == BROKER_ERR_UPSTREAM) {
		fail(x, 503, "temporarily_unavailable", "no usable keys for the issuer yet", NULL);
		x->res->retry_after = 5;
		return false;
	}
	if (err != BROKER_OK) {
		fail(x, 400, "invalid_grant", "unknown kid", NULL);
		return false;
	}
	err = token_verify_signature(x->token, key, &why);
	jwks_unref(set);
	if (err == BROKER_OK)
		err = token_check_claims(x->token, &rules, &why);
	if (err != BROKER_OK) {
		fail(x, 400, "invalid_grant", why ? why : "token rejected", NULL);
		return false;
	}
	/* From here on the claims are the issuer's word: safe to audit. */
	x->verified = true;
	if (x->icfg->single_use) {
		const char *jti = claim_string(x->token->claims, "jti");
		json_t *exp = json_object_get(x->token->claims, "exp");

		if (!jti || !*jti) {
			fail(x, 400, "invalid_grant", "single-use issuer requires a jti", NULL);
			return false;
		}
		err = runtime_replay_check(x->st, x->icfg->name, jti, json_integer_value(exp) + x->icfg->clock_skew);
		if (err == BROKER_ERR_REPLAY) {
			fail(x, 400, "invalid_grant", "token already used", NULL);
			return false;
		}
		if (err != BROKER_OK) {
			fail(x, 503, "temporarily_unavailable", "replay cache unavailable", NULL);
			return false;
		}
		x->replay_marked = true;
	}
	return true;
}

static bool mint_credential(struct exchange *x)
{
	const struct broker_config *cfg = snapshot_config(x->snap);
	const json_t *claims = x->token->claims;
	struct policy_result why;

	memset(&why, 0, sizeof(why));
	struct policy_jwt_render r = {0};
	char *token = NULL, jti[23], exp_text[32];
	json_t *ci = NULL;
	/* The answer carries the credential: the writer's buffer wipes what it
	 * outgrows, and the text is what json_dumps of the same object wrote. */
	struct broker_json_writer answer = {.buf = {.max = 256 * 1024}};
	int64_t now = broker_now(), ttl = policy_ttl(x->policy);
	bool ok = false;

	if (policy_cred_type(x->policy) == BROKER_CRED_AWS)
		return runtime_mint_aws(x->st, x->snap, x->policy, claims, &x->credential, &x->secret_body, x->res,
					&x->reason, x->reason_buf, sizeof(x->reason_buf));

	if (policy_render_jwt(x->policy, claims, &r, &why) != BROKER_OK) {
		snprintf(x->reason_buf, sizeof(x->reason_buf), "%s", why.audit_reason);
		fail(x, 403, "access_denied", why.client_reason, x->reason_buf);
		goto out;
	}
	ci = pick_claims(claims, ci_claims, BROKER_ARRAY_SIZE(ci_claims));
	if (!ci)
		goto oom;
	json_object_set_new(ci, "iss", json_string(x->icfg->issuer));
	json_object_set(ci, "sub", json_object_get(claims, "sub"));
	struct mint_jwt_request mr = {
		.iss = cfg->public_url,
		.sub = r.subject ? r.subject : claim_string(claims, "sub"),
		.aud = policy_jwt_audience(x->policy),
		.policy = policy_name(x->policy),
		.now = now,
		.ttl = ttl,
		.ci = ci,
		.extra = r.claims,
	};
	if (mint_jwt(runtime_signing_keys(x->snap), &mr, &token, jti) != BROKER_OK) {
		fail(x, 503, "temporarily_unavailable", "could not sign the credential", "mint_jwt failed");
		goto out;
	}
	broker_fmt_time(now + ttl, exp_text, sizeof(exp_text));
	x->credential = json_pack("{s:s, s:s, s:s}", "type", "jwt", "id", jti, "expires_at", exp_text);
	if (!x->credential)
		goto oom;
	broker_jw_raw(&answer, "{\"access_token\":");
	broker_jw_string(&answer, token);
	broker_jw_raw(&answer, ",\"issued_token_type\":\"" TYPE_JWT "\",\"token_type\":\"Bearer\",\"expires_in\":");
	broker_jw_int(&answer, ttl);
	broker_jw_raw(&answer, "}");
	if (answer.err != BROKER_OK)
		goto oom;
	x->secret_body = answer.buf.data;
	answer.buf.data = NULL;
	ok = true;
	goto out;
oom:
	fail(x, 503, "temporarily_unavailable", "out of memory", NULL);
out:
	broker_buf_wipe(&answer.buf);
	broker_secret_free(token);
	json_decref(ci);
	policy_jwt_render_clear(&r);
	return ok;
}

static void decide(struct exchange *x, const char *ct, const char *body, size_t len)
{
	struct policy_result why;

	memset(&why, 0, sizeof(why));
	const char *reason = NULL;

	int retry = 0;

	if (runtime_ratelimit_ip(x->snap, x->remote, &retry) != BROKER_OK) {
		fail(x, 429, "temporarily_unavailable", "too many requests from this address", NULL);
		x->res->retry_after = retry;
		return;
	}
	if (token_request_parse(ct, body, len, &x->req, &reason) != BROKER_OK) {
		fail(x, 400, "invalid_request", reason, NULL);
		return;
	}
	if (!check_request(x) || !verify_token(x))
		return;
	if (runtime_ratelimit_subject(x->snap, x->icfg->name, claim_string(x->token->claims, "sub"), &retry) !=
	    BROKER_OK) {
		fail(x, 429, "temporarily_unavailable", "too many exchanges for this CI subject", NULL);
		x->res->retry_after = retry;
		return;
	}
	if (policy_evaluate(runtime_policies(x->snap), x->policy, x->token->claims, &why) != BROKER_OK) {
		snprintf(x->reason_buf, sizeof(x->reason_buf), "%s", why.audit_reason);
		fail(x, 403, "access_denied", why.client_reason, x->reason_buf);
		return;
	}
	if (!mint_credential(x))
		return;
	x->res->status = 200;
}

/* The decision's audit record; *ret_picked (the selected claims it points
 * to) is the caller's to release once the record is written or queued. */
static void build_record(struct exchange *x, struct audit_record *ret, json_t **ret_picked)
{
	/* Claims of a token that failed verification are an attacker's text:
	 * they are not written to the audit log as if they meant something. */
	const json_t *claims = x->token && x->verified ? x->token->claims : NULL;
	json_t *picked = claims ? pick_claims(claims, audit_claims, BROKER_ARRAY_SIZE(audit_claims)) : NULL;
	struct audit_record rec = {
		.ts_us = broker_now_us(),
		.request_id = x->res->request_id,
		.remote = x->remote,
		.allow = x->res->status == 200,
		.error = x->res->status == 200 ? NULL : x->res->error,
		.reason = x->res->status == 200 ? NULL : x->reason,
		.audience = x->req.audience,
		.policy = x->policy ? policy_name(x->policy) : NULL,
		.issuer = x->icfg ? x->icfg->issuer : NULL,
		.sub = claims ? claim_string(claims, "sub") : NULL,
		.token_jti = claims ? claim_string(claims, "jti") : NULL,
		.claims = picked,
		.credential = x->res->status == 200 ? x->credential : NULL,
	};

	rec.latency_us = broker_mono_us() - x->started_us;
	*ret = rec;
	*ret_picked = picked;
}

/* What the audit write said decides what leaves. */
static void after_audit(struct exchange *x, enum broker_err err)
{
	if (err != BROKER_OK) {
		/* Fail closed: the credential (if any) dies here, unseen. */
		if (x->secret_body)
			broker_secret_free(x->secret_body);
		x->secret_body = NULL;
		x->res->status = 503;
		x->res->error = "temporarily_unavailable";
		snprintf(x->res->description, sizeof(x->res->description), "audit log not writable");
		x->res->retry_after = 1;
		runtime_note_audit_error(x->st);
	}
	/* single_use means one credential per token: an exchange that recorded
	 * the jti but issued nothing gives it back, so the client may retry. */
	if (x->replay_marked && x->res->status != 200)
		runtime_replay_release(x->st, x->icfg->name, claim_string(x->token->claims, "jti"));
	runtime_note_exchange(x->st, x->policy ? policy_name(x->policy) : NULL, x->res->status,
			      x->res->error, broker_mono_us() - x->started_us);
	if (x->res->status == 200) {
		x->res->body = x->secret_body;
		x->secret_body = NULL;
	} else {
		x->res->body = exchange_error_json(x->res->error, x->res->description, x->res->request_id);
	}
}

static void begin(struct exchange *x, struct broker_state *st, const char *remote, struct exchange_result *ret)
{
	memset(x, 0, sizeof(*x));
	memset(ret, 0, sizeof(*ret));
	x->st = st;
	x->res = ret;
	x->remote = remote;
	x->started_us = broker_mono_us();
	if (broker_random_id(ret->request_id) != BROKER_OK)
		snprintf(ret->request_id, sizeof(ret->request_id), "unavailable");
	x->snap = state_acquire(st);
}

static void release(struct exchange *x)
{
	token_request_clear(&x->req);
	token_free(x->token);
	json_decref(x->credential);
	broker_secret_free(x->secret_body);
	snapshot_unref(x->snap);
}

static void end(struct exchange *x)
{
	struct audit_record rec;
	json_t *picked;

	build_record(x, &rec, &picked);
	after_audit(x, audit_write(state_audit(x->st), &rec));
	json_decref(picked);
	release(x);
}

struct exchange_pending {
	struct exchange x;
	enum broker_err audit_err;
	exchange_done_fn *done;
	void *arg;
};

/* The audit thread: only note the outcome. The rest is exchange_finish's,
 * on the caller's thread, where the exchange's memory came from. */
static void on_audited(void *arg, enum broker_err err)
{
	struct exchange_pending *p = arg;

	p->audit_err = err;
	p->done(p->arg);
}

/* body NULL: the body was over limits.max_body and was not kept. */
static void decide_or_oversize(struct exchange *x, const char *content_type, const char *body, size_t len)
{
	if (body)
		decide(x, content_type, body, len);
	else
		fail(x, 413, "invalid_request", "request body too large", NULL);
}

/* The whole exchange on this thread, audit write included. */
static void handle(struct broker_state *st, const char *content_type, const char *body, size_t len,
		   const char *remote, struct exchange_result *ret)
{
	struct exchange x;

	begin(&x, st, remote, ret);
	decide_or_oversize(&x, content_type, body, len);
	end(&x);
}

static struct exchange_pending *start(struct broker_state *st, const char *content_type, const char *body, size_t len,
				      const char *remote, struct exchange_result *ret, exchange_done_fn *done,
				      void *arg)
{
	/* One sink for both the decision and the record: a reload may swap it. */
	struct broker_audit *audit = state_audit(st);
	struct exchange_pending *p = audit_sync_always(audit) ? calloc(1, sizeof(*p)) : NULL;
	struct audit_record rec;
	json_t *picked;
	enum broker_err err;

	if (!p) {
		/* sync none: the write() is cheaper than handing it over */
		handle(st, content_type, body, len, remote, ret);
		return NULL;
	}
	p->done = done;
	p->arg = arg;
	begin(&p->x, st, remote, ret);
	decide_or_oversize(&p->x, content_type, body, len);
	build_record(&p->x, &rec, &picked);
	p->x.remote = NULL; /* the caller's buffer: not used after this call */
	err = audit_submit(audit, &rec, on_audited, p);
	json_decref(picked);
	if (err == BROKER_OK)
		return p; /* on_audited tells the caller */
	p->audit_err = err;
	exchange_finish(p);
	return NULL;
}

struct exchange_pending *exchange_start(struct broker_state *st, const char *content_type, const char *body,
					size_t len, const char *remote, struct exchange_result *ret,
					exchange_done_fn *done, void *arg)
{
	return start(st, content_type, body ? body : "", len, remote, ret, done, arg);
}

struct exchange_pending *exchange_start_oversize(struct broker_state *st, const char *remote,
						 struct exchange_result *ret, exchange_done_fn *done, void *arg)
{
	return start(st, NULL, NULL, 0, remote, ret, done, arg);
}

void exchange_finish(struct exchange_pending *p)
{
	if (!p)
		return;
	after_audit(&p->x, p->audit_err);
	release(&p->x);
	free(p);
}

void exchange_handle(struct broker_state *st, const char *content_type, const char *body, size_t len,
		     const char *remote, struct exchange_result *ret)
{
	handle(st, content_type, body ? body : "", len, remote, ret);
}

void exchange_reject_oversize(struct broker_state *st, const char *remote, struct exchange_result *ret)
{
	handle(st, NULL, NULL, 0, remote, ret);
}

void exchange_result_clear(struct exchange_result *r)
{
	if (!r)
		return;
	broker_secret_free(r->body);
	r->body = NULL;
}

char *exchange_error_json(const char *error, const char *description, const char *request_id)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "error", error ? error : "server_error", "error_description",
			      description ? description : "", "request_id", request_id ? request_id : "");
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return s;
}
