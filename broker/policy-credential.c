/* SPDX-License-Identifier: Apache-2.0 */
/* The `credential` of a policy: one key table per type, so a key that
 * belongs to another type (role_arn on a jwt) is an error rather than
 * ignored, and every bound STS or the minted token would enforce later is
 * enforced at load, where a platform team can still fix it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cibroker/util.h"
#include "policy-int.h"

/* ---- credential ------------------------------------------------------ */

static enum broker_err h_ignore(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	return BROKER_OK; /* `type`, handled before dispatch */
}

static enum broker_err h_ttl(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	int64_t ttl;
	int64_t min = ctx->p->type == BROKER_CRED_AWS ? POLICY_AWS_TTL_MIN : 1;

	if (val->kind != DOC_SCALAR || broker_parse_duration(val->str, &ttl) != BROKER_OK) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   "ttl must be a duration (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)");
		return BROKER_ERR_CONFIG;
	}
	if (ttl < min) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   ttl == 0 ? "ttl must be greater than 0"
				    : "ttl %lld s is below the STS minimum of 900 s",
			   (long long)ttl);
		return BROKER_ERR_CONFIG;
	}
	if (ttl > ctx->cfg->max_ttl) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "ttl %lld s is above limits.max_ttl (%lld s)",
			   (long long)ttl, (long long)ctx->cfg->max_ttl);
		return BROKER_ERR_CONFIG;
	}
	if (ctx->p->type == BROKER_CRED_AWS && ttl > POLICY_AWS_TTL_MAX) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "ttl %lld s is above the STS maximum of 43200 s",
			   (long long)ttl);
		return BROKER_ERR_CONFIG;
	}
	ctx->p->ttl = ttl;
	return BROKER_OK;
}

static enum broker_err h_audience(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	return load_get_string(ctx, val, "audience", &ctx->p->audience);
}

static enum broker_err h_subject(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	if (val->kind == DOC_SCALAR && val->len == 0) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   "subject must not be empty (leave it out to keep the CI token's sub)");
		return BROKER_ERR_CONFIG;
	}
	return tmpl_compile(ctx->set, val, ctx->file, ctx->d, &ctx->p->subject);
}

static const char *const reserved_claims[] = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "policy", "ci"};

static enum broker_err h_claims(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	struct broker_policy *p = ctx->p;
	enum broker_err r = BROKER_OK;

	if (val->kind != DOC_MAP) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "claims must be a mapping of claim names to values");
		return BROKER_ERR_CONFIG;
	}
	if (val->n > POLICY_JWT_CLAIMS_MAX) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "claims has more than %d entries",
			   POLICY_JWT_CLAIMS_MAX);
		return BROKER_ERR_CONFIG;
	}
	if (!(p->claims = set_alloc(ctx->set, (val->n ? val->n : 1) * sizeof(*p->claims))))
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < val->n; i++) {
		const struct doc_node *k = val->keys[i], *v = val->items[i];
		struct jwt_claim *jc = &p->claims[p->n_claims];
		bool reserved = false;
		enum broker_err e;

		for (size_t j = 0; j < BROKER_ARRAY_SIZE(reserved_claims); j++)
			reserved |= strcmp(k->str, reserved_claims[j]) == 0;
		if (reserved) {
			diag_error(ctx->d, ctx->file, k->line, k->col,
				   "claim '%s' is reserved (set by the broker) and cannot be set here", k->str);
			r = BROKER_ERR_CONFIG;
			continue;
		}
		if (k->len == 0 || k->len > POLICY_CLAIM_NAME_MAX || memchr(k->str, '\0', k->len)) {
			diag_error(ctx->d, ctx->file, k->line, k->col, "claim name must be 1-%d bytes",
				   POLICY_CLAIM_NAME_MAX);
			r = BROKER_ERR_CONFIG;
			continue;
		}
		if (!(jc->name = set_intern(ctx->set, k->str, k->len)))
			return BROKER_ERR_NOMEM;
		if (doc_scalar_type(v) == DOC_TYPE_STRING) {
			e = tmpl_compile(ctx->set, v, ctx->file, ctx->d, &jc->tmpl);
		} else {
			/* numbers, booleans, lists and maps are static values */
			jc->value = doc_to_json(v);
			e = jc->value ? BROKER_OK : BROKER_ERR_NOMEM;
		}
		p->n_claims++;
		if (e == BROKER_ERR_NOMEM)
			return e;
		if (e != BROKER_OK)
			r = e;
	}
	return r;
}

static bool role_arn_ok(const char *s)
{
	/* ^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$ */
	if (strncmp(s, "arn:aws", 7) != 0)
		return false;
	s += 7;
	while ((*s >= 'a' && *s <= 'z') || *s == '-')
		s++;
	if (strncmp(s, ":iam::", 6) != 0)
		return false;
	s += 6;
	for (int i = 0; i < 12; i++, s++)
		if (*s < '0' || *s > '9')
			return false;
	return strncmp(s, ":role/", 6) == 0 && s[6] != '\0';
}

static enum broker_err h_role_arn(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	enum broker_err r = load_get_string(ctx, val, "role_arn", &ctx->p->role_arn);

	if (r == BROKER_OK && !role_arn_ok(ctx->p->role_arn)) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   "role_arn must look like arn:aws:iam::123456789012:role/NAME");
		return BROKER_ERR_CONFIG;
	}
	return r;
}

/* A session name without claims renders the same for every token: if it is
 * under STS's minimum, every exchange of the policy would be refused. */
static bool session_name_too_short(const struct tmpl *t)
{
	char buf[POLICY_AWS_SESSION_NAME_MAX + 1], lit[POLICY_AWS_SESSION_NAME_MAX * 4 + 1];
	size_t len = 0;

	for (size_t i = 0; i < t->n; i++) {
		if (t->segs[i].is_claim)
			return false;
		if (t->segs[i].len > sizeof(lit) - 1 - len)
			return false; /* long enough whatever it sanitises to */
		memcpy(lit + len, t->segs[i].text, t->segs[i].len);
		len += t->segs[i].len;
	}
	aws_sanitise_name(lit, len, buf, POLICY_AWS_SESSION_NAME_MAX);
	return strlen(buf) < 2;
}

static enum broker_err h_session_name(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	ctx->p->session_name = NULL; /* replaces the default */
	return tmpl_compile(ctx->set, val, ctx->file, ctx->d, &ctx->p->session_name);
}

static enum broker_err h_source_identity(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	return tmpl_compile(ctx->set, val, ctx->file, ctx->d, &ctx->p->source_identity);
}

static bool tag_key_ok(const char *s, size_t len)
{
	if (len == 0 || len > POLICY_AWS_TAG_KEY_MAX || strncasecmp(s, "aws:", 4) == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      (c && strchr(" _.:/=+-@", c))))
			return false;
	}
	return true;
}

static enum broker_err h_session_tags(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	struct broker_policy *p = ctx->p;
	enum broker_err r = BROKER_OK;

	if (val->kind != DOC_MAP) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "session_tags must be a mapping of tag keys to values");
		return BROKER_ERR_CONFIG;
	}
	if (val->n > POLICY_AWS_TAGS_MAX) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "session_tags has more than %d tags (STS limit)",
			   POLICY_AWS_TAGS_MAX);
		return BROKER_ERR_CONFIG;
	}
	if (!(p->tags = set_alloc(ctx->set, (val->n ? val->n : 1) * sizeof(*p->tags))))
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < val->n; i++) {
		const struct doc_node *k = val->keys[i], *v = val->items[i];
		struct aws_tag *tag = &p->tags[p->n_tags];
		bool dup = false;
		enum broker_err e;

		if (!tag_key_ok(k->str, k->len)) {
			diag_error(ctx->d, ctx->file, k->line, k->col,
				   "session tag key must be 1-%d characters of [A-Za-z0-9 _.:/=+-@], not starting with "
				   "'aws:'",
				   POLICY_AWS_TAG_KEY_MAX);
			r = BROKER_ERR_CONFIG;
			continue;
		}
		/* STS treats tag keys case-insensitively */
		for (size_t j = 0; j < p->n_tags; j++)
			dup |= strcasecmp(p->tags[j].key, k->str) == 0;
		if (dup) {
			diag_error(ctx->d, ctx->file, k->line, k->col,
				   "session tag key '%s' repeats another key (STS compares them case-insensitively)",
				   k->str);
			r = BROKER_ERR_CONFIG;
			continue;
		}
		if (!(tag->key = set_intern(ctx->set, k->str, k->len)))
			return BROKER_ERR_NOMEM;
		p->n_tags++;
		e = tmpl_compile(ctx->set, v, ctx->file, ctx->d, &tag->tmpl);
		if (e == BROKER_ERR_NOMEM)
			return e;
		if (e != BROKER_OK) {
			r = e;
			continue;
		}
		if (tmpl_literal_len(tag->tmpl) > POLICY_AWS_TAG_VALUE_MAX) {
			diag_error(ctx->d, ctx->file, v->line, v->col, "session tag value is longer than %d characters",
				   POLICY_AWS_TAG_VALUE_MAX);
			r = BROKER_ERR_CONFIG;
		}
	}
	return r;
}

static enum broker_err h_session_policy(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	json_t *j;
	char *text;

	if (val->kind != DOC_MAP) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   "session_policy must be a mapping (an IAM policy document)");
		return BROKER_ERR_CONFIG;
	}
	if (!(j = doc_to_json(val)))
		return BROKER_ERR_NOMEM;
	text = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!text)
		return BROKER_ERR_NOMEM;
	if (strlen(text) > POLICY_AWS_SESSION_POLICY_MAX) {
		diag_error(ctx->d, ctx->file, val->line, val->col,
			   "session_policy is %zu characters as compact JSON; STS allows %d", strlen(text),
			   POLICY_AWS_SESSION_POLICY_MAX);
		free(text);
		return BROKER_ERR_CONFIG;
	}
	ctx->p->session_policy = set_strdup(ctx->set, text, strlen(text));
	free(text);
	return ctx->p->session_policy ? BROKER_OK : BROKER_ERR_NOMEM;
}

static const struct key_table jwt_keys[] = {
	{"type", h_ignore}, {"audience", h_audience}, {"ttl", h_ttl}, {"subject", h_subject}, {"claims", h_claims},
};

static const struct key_table aws_keys[] = {
	{"type", h_ignore},
	{"role_arn", h_role_arn},
	{"ttl", h_ttl},
	{"session_name", h_session_name},
	{"source_identity", h_source_identity},
	{"session_tags", h_session_tags},
	{"session_policy", h_session_policy},
};

enum broker_err load_credential(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	struct broker_policy *p = ctx->p;
	const struct doc_node *type;
	enum broker_err r;

	if (val->kind != DOC_MAP) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "credential must be a mapping");
		return BROKER_ERR_CONFIG;
	}
	type = doc_map_get(val, "type");
	if (!type) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "credential has no 'type' (jwt or aws)");
		return BROKER_ERR_CONFIG;
	}
	if (type->kind == DOC_SCALAR && strcmp(type->str, "jwt") == 0) {
		p->type = BROKER_CRED_JWT;
		/* the default never exceeds the ceiling; an explicit ttl must */
		p->ttl = POLICY_DEFAULT_JWT_TTL < ctx->cfg->max_ttl ? POLICY_DEFAULT_JWT_TTL : ctx->cfg->max_ttl;
		r = load_dispatch(ctx, val, jwt_keys, BROKER_ARRAY_SIZE(jwt_keys), "a jwt credential");
		if (!doc_map_get(val, "audience")) {
			diag_error(ctx->d, ctx->file, val->line, val->col,
				   "jwt credential has no 'audience' (the aud of the minted token)");
			r = BROKER_ERR_CONFIG;
		}
	} else if (type->kind == DOC_SCALAR && strcmp(type->str, "aws") == 0) {
		struct doc_node def = {.kind = DOC_SCALAR, .line = val->line, .col = val->col, .quoted = true};

		p->type = BROKER_CRED_AWS;
		p->ttl = POLICY_DEFAULT_AWS_TTL;
		r = BROKER_OK;
		if (!ctx->cfg->aws_sts_endpoint) {
			diag_error(ctx->d, ctx->file, type->line, type->col,
				   "aws credentials need an 'aws' section (with its region) in the config");
			r = BROKER_ERR_CONFIG;
		}
		if (p->ttl > ctx->cfg->max_ttl && !doc_map_get(val, "ttl")) {
			diag_error(ctx->d, ctx->file, val->line, val->col,
				   "the default aws ttl (900 s, the STS minimum) is above limits.max_ttl (%lld s)",
				   (long long)ctx->cfg->max_ttl);
			r = BROKER_ERR_CONFIG;
		}
		def.str = (char *)POLICY_DEFAULT_SESSION_NAME;
		def.len = strlen(def.str);
		enum broker_err e = tmpl_compile(ctx->set, &def, ctx->file, ctx->d, &p->session_name);

		if (e != BROKER_OK)
			return e;
		e = load_dispatch(ctx, val, aws_keys, BROKER_ARRAY_SIZE(aws_keys), "an aws credential");
		if (e != BROKER_OK)
			r = e;
		if (!doc_map_get(val, "role_arn")) {
			diag_error(ctx->d, ctx->file, val->line, val->col, "aws credential has no 'role_arn'");
			r = BROKER_ERR_CONFIG;
		}
		if (e == BROKER_OK && session_name_too_short(p->session_name)) {
			diag_error(ctx->d, ctx->file, p->session_name->line, p->session_name->col,
				   "session_name is always shorter than the 2 characters STS requires");
			r = BROKER_ERR_CONFIG;
		}
	} else {
		diag_error(ctx->d, ctx->file, type->line, type->col, "unknown credential type '%s' (known: jwt, aws)",
			   type->kind == DOC_SCALAR ? type->str : "(not a string)");
		return BROKER_ERR_CONFIG;
	}
	return r;
}
