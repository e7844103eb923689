/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cibroker/config.h"
#include "cibroker/diag.h"
#include "cibroker/err.h"

/* Deploy-scoped policies: loading, matching, templates. Pure: no HTTP, no
 * logging; results carry a short client reason and a full audit reason. */
struct broker_policy_set;
struct broker_policy;

enum broker_cred_type { BROKER_CRED_JWT = 1, BROKER_CRED_AWS = 2 };

/* Loads every YAML (.yaml, .yml) and JSON (.json) file of cfg->policies_dir and compiles the
 * issuers' deny conditions. All problems go to d (FILE:LINE:COL). */
enum broker_err policy_set_load(const struct broker_config *cfg, struct diag *d, struct broker_policy_set **ret);
/* The same from one in-memory file (tests, fuzzing): name is used in
 * diagnostics, is_json picks the syntax. Issuer deny is compiled as above. */
enum broker_err policy_set_load_buffer(const struct broker_config *cfg, const char *name, const char *buf, size_t len,
				       bool is_json, struct diag *d, struct broker_policy_set **ret);
void policy_set_free(struct broker_policy_set *set);
size_t policy_set_count(const struct broker_policy_set *set);
/* O(1) lookup by name (= the exchange's audience); NULL if none. */
const struct broker_policy *policy_set_find(const struct broker_policy_set *set, const char *name);
/* i-th policy in load order (files sorted by name); NULL past the end. */
const struct broker_policy *policy_set_at(const struct broker_policy_set *set, size_t i);

const char *policy_name(const struct broker_policy *p);
const char *policy_issuer(const struct broker_policy *p);   /* issuer config name */
const char *policy_description(const struct broker_policy *p); /* NULL if none */
/* Where the policy's name is written (for tools and messages). */
void policy_location(const struct broker_policy *p, const char **ret_file, int *ret_line, int *ret_col);
enum broker_cred_type policy_cred_type(const struct broker_policy *p);
int64_t policy_ttl(const struct broker_policy *p);          /* already bounded by max_ttl */
const char *policy_jwt_audience(const struct broker_policy *p); /* jwt only */

struct policy_result {
	char client_reason[256]; /* e.g. "claim 'ref' did not match" — never the expected value */
	char audit_reason[1024]; /* full reason for the audit log */
};

/* Match verified claims against the policy: issuer deny, then policy deny,
 * then allow; the first deciding condition wins. BROKER_OK = allowed (ret
 * zeroed); BROKER_ERR_DENIED = refused, with both reasons filled. */
enum broker_err policy_evaluate(const struct broker_policy_set *set, const struct broker_policy *p,
				const json_t *claims, struct policy_result *ret);

/* Rendered credential parameters for an allowed exchange. A template claim
 * that is missing (or not a string/integer) -> BROKER_ERR_DENIED with why
 * filled ("template claim 'x' missing" for the audit record); other failures
 * (BROKER_ERR_NOMEM, BROKER_ERR_INVALID for the wrong credential type) leave
 * why untouched. See docs/policies.md for the sanitising of aws names/tags. */
struct policy_jwt_render {
	char *subject;      /* NULL: use the CI token's sub */
	json_t *claims;     /* extra claims object (owned) */
};
enum broker_err policy_render_jwt(const struct broker_policy *p, const json_t *claims, struct policy_jwt_render *ret,
				  struct policy_result *why);
void policy_jwt_render_clear(struct policy_jwt_render *r);

struct policy_aws_render {
	const char *role_arn;      /* points into the policy */
	char *session_name;        /* sanitised */
	char *source_identity;     /* NULL if not configured */
	json_t *session_tags;      /* object name -> string, NULL if none */
	char *session_policy;      /* JSON text, NULL if none */
};
enum broker_err policy_render_aws(const struct broker_policy *p, const json_t *claims, struct policy_aws_render *ret,
				  struct policy_result *why);
void policy_aws_render_clear(struct policy_aws_render *r);

/* `policy explain`: one line per condition (name, value seen, held or not),
 * appended to a caller-owned buffer via the callback. */
typedef void (*policy_explain_fn)(void *ctx, const char *line);
void policy_explain(const struct broker_policy_set *set, const struct broker_policy *p, const json_t *claims,
		    policy_explain_fn fn, void *ctx);
