/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness for the policy loader: every input is loaded as a YAML
 * and as a JSON policy file against a fixed config (GitHub, GitLab and a
 * generic issuer, an STS endpoint), and every policy that loads is evaluated,
 * explained and rendered against a few claim sets, including one whose
 * values carry embedded NULs. Must never crash or leak; a refusal must say
 * why and hand nothing out; an accepted set must have no errors. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/doc.h"
#include "cibroker/policy.h"

static struct broker_issuer_config issuers[3] = {
	{.name = "github", .issuer = "https://token.actions.githubusercontent.com"},
	{.name = "gitlab", .issuer = "https://gitlab.com"},
	{.name = "other", .issuer = "https://ci.example.com"},
};
static struct broker_config cfg = {
	.path = "config.yaml",
	.issuers = issuers,
	.n_issuers = 3,
	.max_ttl = 3600,
	.aws_sts_endpoint = "https://sts.us-east-1.amazonaws.com",
};
static json_t *claim_sets[3];

static void sink(void *ctx, const char *line)
{
	if (!line)
		abort();
	(*(size_t *)ctx)++;
}

static void exercise(const struct broker_policy_set *set)
{
	for (size_t i = 0; i < policy_set_count(set); i++) {
		const struct broker_policy *p = policy_set_at(set, i);

		if (!p || policy_set_find(set, policy_name(p)) == NULL)
			abort();
		for (size_t c = 0; c < sizeof(claim_sets) / sizeof(claim_sets[0]); c++) {
			struct policy_result why;
			size_t lines = 0;

			if (policy_evaluate(set, p, claim_sets[c], &why) == BROKER_ERR_DENIED &&
			    (!why.client_reason[0] || !why.audit_reason[0]))
				abort(); /* a denial always says why */
			policy_explain(set, p, claim_sets[c], sink, &lines);
			if (policy_cred_type(p) == BROKER_CRED_JWT) {
				struct policy_jwt_render jr;

				if (policy_render_jwt(p, claim_sets[c], &jr, &why) == BROKER_OK)
					policy_jwt_render_clear(&jr);
			} else {
				struct policy_aws_render ar;

				if (policy_render_aws(p, claim_sets[c], &ar, &why) == BROKER_OK) {
					size_t n = strlen(ar.session_name);

					if (n < 2 || n > 64)
						abort();
					policy_aws_render_clear(&ar);
				}
			}
		}
	}
}

static void load(const uint8_t *data, size_t size, bool is_json)
{
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	enum broker_err err;

	if (!d)
		return;
	err = policy_set_load_buffer(&cfg, is_json ? "fuzz.json" : "fuzz.yaml", (const char *)data, size, is_json, d,
				     &set);
	if (err == BROKER_OK) {
		if (!set || diag_errors(d) != 0)
			abort();
		exercise(set);
	} else if (set != NULL || (err == BROKER_ERR_CONFIG && diag_errors(d) == 0)) {
		abort();
	}
	policy_set_free(set);
	diag_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!claim_sets[0]) {
		claim_sets[0] = json_loads("{\"repository\": \"acme/web\", \"repository_id\": \"1\", \"ref\": "
					   "\"refs/heads/main\", \"run_id\": 7, \"actor\": \"a\", \"jti\": \"j\", "
					   "\"environment\": \"production\", \"groups\": [\"x\", 1, true, null]}",
					   0, NULL);
		claim_sets[1] = json_loads("{\"repository\": \"acme/web\\u0000x\", \"ref\": null, \"run_id\": 1.5, "
					   "\"actor\": {\"a\": 1}, \"jti\": \"\\u0000\"}",
					   JSON_ALLOW_NUL, NULL);
		claim_sets[2] = json_object();
		if (!claim_sets[0] || !claim_sets[1] || !claim_sets[2])
			abort();
	}
	if (size > 256 * 1024)
		return 0;
	load(data, size, false);
	load(data, size, true);
	return 0;
}
