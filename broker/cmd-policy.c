/* SPDX-License-Identifier: Apache-2.0 */
/* `cibroker policy check|test|explain`: the tools a platform team runs in its
 * policy repository's CI, before a policy ever reaches a broker. They load
 * exactly what `serve` loads (config_load + policy_set_load) and evaluate
 * exactly what the exchange evaluates (lookup, policy_evaluate, template
 * rendering), minus the signature check: case claims are taken as verified. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/cli.h"
#include "cibroker/config.h"
#include "cibroker/diag.h"
#include "cibroker/keys.h"
#include "cibroker/policy.h"
#include "cibroker/util.h"

#define CASE_FILE_MAX (1024 * 1024)
#define CASE_DEPTH_MAX 32

static const char policy_usage_text[] =
	"usage: cibroker policy check   --config FILE\n"
	"       cibroker policy test    --config FILE [--verbose] CASE...\n"
	"       cibroker policy explain --config FILE --audience NAME --claims FILE\n"
	"\n"
	"check    load the config and every policy; print every problem as FILE:LINE:COL: message\n"
	"         (warnings too); exit 1 on any error\n"
	"test     evaluate case files {\"audience\", \"claims\", \"expect\": \"allow\"|\"deny\"}; claims are\n"
	"         taken as verified (no signature); one line per case, then 'N passed, N failed';\n"
	"         exit 1 on any failure or unreadable case\n"
	"explain  show every condition of the policy NAME, the claim value it saw and whether it held,\n"
	"         then the decision; exit 0 if allowed, 1 if denied\n"
	"\n"
	"options:\n"
	"  --config FILE     the broker config (its issuers, limits and policies directory)\n"
	"  --audience NAME   explain: the policy name a client would request\n"
	"  --claims FILE     explain: a JSON object of token claims\n"
	"  --verbose, -v     test: also print the full (audit) reason of every denial\n"
	"  --help            show this help\n"
	"  --version         show the version\n";

struct policy_args {
	const char *config, *audience, *claims;
	bool verbose;
	char **files;
	int n_files;
};

/* 0 ok, 1 printed help/version (exit 0), 2 usage error (printed). */
static int parse_args(const char *sub, int argc, char **argv, struct policy_args *a)
{
	static const struct {
		const char *name;
		size_t off;
	} opts[] = {
		{"--config", offsetof(struct policy_args, config)},
		{"--audience", offsetof(struct policy_args, audience)},
		{"--claims", offsetof(struct policy_args, claims)},
	};

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		size_t k;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			fputs(policy_usage_text, stdout);
			return 1;
		}
		if (strcmp(arg, "--version") == 0) {
			cli_print_version();
			return 1;
		}
		if (strcmp(arg, "--verbose") == 0 || strcmp(arg, "-v") == 0) {
			a->verbose = true;
			continue;
		}
		for (k = 0; k < BROKER_ARRAY_SIZE(opts); k++) {
			size_t len = strlen(opts[k].name);
			const char **slot = (const char **)((char *)a + opts[k].off);
			const char *val;

			if (strncmp(arg, opts[k].name, len) != 0 || (arg[len] != '\0' && arg[len] != '='))
				continue;
			if (arg[len] == '=') {
				val = arg + len + 1;
			} else if (i + 1 < argc) {
				val = argv[++i];
			} else {
				fprintf(stderr, "cibroker policy %s: %s needs a value\n", sub, opts[k].name);
				return 2;
			}
			if (*slot) {
				fprintf(stderr, "cibroker policy %s: %s given twice\n", sub, opts[k].name);
				return 2;
			}
			if (!*val) {
				fprintf(stderr, "cibroker policy %s: %s needs a non-empty value\n", sub, opts[k].name);
				return 2;
			}
			*slot = val;
			break;
		}
		if (k < BROKER_ARRAY_SIZE(opts))
			continue;
		if (arg[0] == '-' && arg[1] != '\0') {
			fprintf(stderr, "cibroker policy %s: unknown option '%s'\n", sub, arg);
			return 2;
		}
		a->files[a->n_files++] = argv[i];
	}
	if (!a->config) {
		fprintf(stderr, "cibroker policy %s: --config FILE is required\n", sub);
		return 2;
	}
	return 0;
}

/* The signing key files' contents, as serve reads them at start. With no
 * keys listed the config has said why already. */
static enum broker_err check_key_files(const struct broker_config *cfg, struct diag *d)
{
	struct broker_signing_keys *keys = NULL;
	enum broker_err err;

	if (cfg->n_signing_keys == 0)
		return BROKER_OK;
	err = signing_keys_load(cfg->signing_keys, cfg->n_signing_keys, cfg->path, cfg->signing_key_pos, d, &keys);
	signing_keys_free(keys);
	return err == BROKER_OK || err == BROKER_ERR_NOMEM ? err : BROKER_ERR_CONFIG;
}

/* Load config and policies. `check` (show_all) prints every diagnostic and a
 * failure summary; test and explain print diagnostics only when the load
 * failed, so a broken set never fails silently. */
static int load_all(const char *path, bool show_all, struct broker_config **ret_cfg,
		    struct broker_policy_set **ret_set, size_t *ret_warnings)
{
	struct diag *d = diag_new();
	struct broker_config *cfg = NULL;
	struct broker_policy_set *set = NULL;
	enum broker_err r;
	int rc = 1;

	if (!d) {
		fprintf(stderr, "cibroker policy: out of memory\n");
		return 1;
	}
	/* check goes on to the policies even when the config broke rules, so
	 * one run lists every error; test and explain need a sound config. */
	r = show_all ? config_load_partial(path, d, &cfg) : config_load(path, d, &cfg);
	if (cfg) {
		enum broker_err kr = check_key_files(cfg, d);

		if (kr == BROKER_ERR_NOMEM || (kr != BROKER_OK && r == BROKER_OK))
			r = kr;
	}
	if (r == BROKER_OK) {
		r = policy_set_load(cfg, d, &set);
	} else if (r == BROKER_ERR_CONFIG && cfg) {
		if (policy_set_load(cfg, d, &set) == BROKER_ERR_NOMEM)
			r = BROKER_ERR_NOMEM;
		policy_set_free(set);
		set = NULL;
		config_free(cfg);
		cfg = NULL;
	}
	if (r == BROKER_OK && diag_errors(d) == 0)
		rc = 0;
	else if (r == BROKER_OK)
		rc = 1;
	if (show_all || rc != 0)
		diag_print(d, stderr);
	if (rc != 0 && diag_errors(d) == 0)
		fprintf(stderr, "cibroker policy: cannot load %s: %s\n", path, broker_strerror(r));
	if (rc == 0) {
		*ret_cfg = cfg;
		*ret_set = set;
		if (ret_warnings)
			*ret_warnings = diag_warnings(d);
		cfg = NULL;
		set = NULL;
	} else if (show_all) {
		fprintf(stderr, "policy check failed: %zu error%s, %zu warning%s\n", diag_errors(d),
			diag_errors(d) == 1 ? "" : "s", diag_warnings(d), diag_warnings(d) == 1 ? "" : "s");
	}
	policy_set_free(set);
	config_free(cfg);
	diag_free(d);
	return rc;
}

static int do_check(struct policy_args *a)
{
	struct broker_config *cfg;
	struct broker_policy_set *set;
	size_t warnings = 0, n;

	if (a->n_files) {
		fprintf(stderr, "cibroker policy check: unexpected argument '%s'\n", a->files[0]);
		return 2;
	}
	if (load_all(a->config, true, &cfg, &set, &warnings) != 0)
		return 1;
	n = policy_set_count(set);
	printf("%zu polic%s OK", n, n == 1 ? "y" : "ies");
	if (warnings)
		printf(", %zu warning%s", warnings, warnings == 1 ? "" : "s");
	printf("\n");
	policy_set_free(set);
	config_free(cfg);
	return 0;
}

/* The decision the exchange would reach for these (verified) claims. */
struct decision {
	bool allow;
	char client[512];
	char audit[1200];
};

static void decide(const struct broker_config *cfg, const struct broker_policy_set *set, const char *audience,
		   const json_t *claims, struct decision *out)
{
	const struct broker_policy *p = policy_set_find(set, audience);
	const struct broker_issuer_config *ic;
	const json_t *iss = json_object_get(claims, "iss");
	struct policy_result why;
	enum broker_err r;

	memset(out, 0, sizeof(*out));
	if (!p) {
		snprintf(out->client, sizeof(out->client), "no policy named '%.200s' (invalid_target)", audience);
		snprintf(out->audit, sizeof(out->audit), "audience names no policy");
		return;
	}
	/* A token is only ever evaluated against policies of the issuer that
	 * verified it: a case whose iss belongs elsewhere, or is no string at
	 * all, would be refused. A case without iss is taken as that issuer's. */
	ic = config_find_issuer(cfg, policy_issuer(p));
	if (ic && iss &&
	    (!json_is_string(iss) || json_string_length(iss) != strlen(ic->issuer) ||
	     memcmp(json_string_value(iss), ic->issuer, json_string_length(iss)) != 0)) {
		snprintf(out->client, sizeof(out->client), "token issuer is not the policy's issuer '%.100s'",
			 ic->name);
		snprintf(out->audit, sizeof(out->audit), "iss is not %.300s", ic->issuer);
		return;
	}
	r = policy_evaluate(set, p, claims, &why);
	if (r == BROKER_OK && policy_cred_type(p) == BROKER_CRED_JWT) {
		struct policy_jwt_render jr;

		r = policy_render_jwt(p, claims, &jr, &why);
		if (r == BROKER_OK)
			policy_jwt_render_clear(&jr);
	} else if (r == BROKER_OK && policy_cred_type(p) == BROKER_CRED_AWS) {
		struct policy_aws_render ar;

		r = policy_render_aws(p, claims, &ar, &why);
		if (r == BROKER_OK)
			policy_aws_render_clear(&ar);
	}
	if (r == BROKER_OK) {
		out->allow = true;
		return;
	}
	if (r != BROKER_ERR_DENIED)
		snprintf(why.client_reason, sizeof(why.client_reason), "%s", broker_strerror(r));
	snprintf(out->client, sizeof(out->client), "%s", why.client_reason);
	snprintf(out->audit, sizeof(out->audit), "%s", why.audit_reason);
}

static json_t *read_json(const char *path, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len;
	json_t *j;
	enum broker_err r = broker_read_file(path, CASE_FILE_MAX, &buf, &len);

	if (r != BROKER_OK) {
		snprintf(err, errlen, "cannot read: %s", r == BROKER_ERR_TOOBIG ? "larger than 1 MiB" : broker_strerror(r));
		return NULL;
	}
	j = broker_json_parse(buf, len, CASE_DEPTH_MAX);
	free(buf);
	if (!j)
		snprintf(err, errlen, "not valid JSON (duplicate keys, NUL bytes and trailing data are refused)");
	else if (!json_is_object(j)) {
		snprintf(err, errlen, "not a JSON object");
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* Returns 1 pass, 0 fail, -1 bad case file (counted as failed). */
static int run_case(const struct broker_config *cfg, const struct broker_policy_set *set, const char *path,
		    bool verbose)
{
	char err[256];
	json_t *c = read_json(path, err, sizeof(err));
	const char *key, *expect_s;
	json_t *v, *audience, *claims, *expect;
	struct decision dec;
	bool expect_allow;
	int rc = -1;

	if (!c)
		goto bad;
	json_object_foreach (c, key, v) {
		if (strcmp(key, "audience") && strcmp(key, "claims") && strcmp(key, "expect") &&
		    strcmp(key, "description")) {
			snprintf(err, sizeof(err), "unknown key '%.64s' (known: audience, claims, expect, description)",
				 key);
			goto bad;
		}
	}
	audience = json_object_get(c, "audience");
	claims = json_object_get(c, "claims");
	expect = json_object_get(c, "expect");
	expect_s = json_string_value(expect);
	if (!json_is_string(audience) || !json_is_object(claims) || !expect_s ||
	    (strcmp(expect_s, "allow") && strcmp(expect_s, "deny"))) {
		snprintf(err, sizeof(err),
			 "needs \"audience\" (string), \"claims\" (object) and \"expect\" (\"allow\" or \"deny\")");
		goto bad;
	}
	expect_allow = strcmp(expect_s, "allow") == 0;
	decide(cfg, set, json_string_value(audience), claims, &dec);
	rc = dec.allow == expect_allow;
	printf("%s %s: %s%s%s (expected %s)\n", rc ? "PASS" : "FAIL", path, dec.allow ? "allow" : "deny",
	       dec.allow ? "" : ": ", dec.allow ? "" : dec.client, expect_s);
	if (verbose && !dec.allow)
		printf("    audit: %s\n", dec.audit);
	json_decref(c);
	return rc;
bad:
	printf("FAIL %s: bad case file: %s\n", path, err);
	json_decref(c);
	return -1;
}

static int do_test(struct policy_args *a)
{
	struct broker_config *cfg;
	struct broker_policy_set *set;
	int passed = 0, failed = 0;

	if (a->n_files == 0) {
		fprintf(stderr, "cibroker policy test: no CASE files given\n");
		return 2;
	}
	if (load_all(a->config, false, &cfg, &set, NULL) != 0) {
		/* no case can pass against a set that does not load */
		for (int i = 0; i < a->n_files; i++)
			printf("FAIL %s: not evaluated: the configuration or policies did not load\n", a->files[i]);
		printf("0 passed, %d failed\n", a->n_files);
		return 1;
	}
	for (int i = 0; i < a->n_files; i++) {
		if (run_case(cfg, set, a->files[i], a->verbose) == 1)
			passed++;
		else
			failed++;
	}
	printf("%d passed, %d failed\n", passed, failed);
	policy_set_free(set);
	config_free(cfg);
	return failed ? 1 : 0;
}

static void print_line(void *ctx, const char *line)
{
	printf("  %s\n", line);
}

static void explain_credential(const struct broker_policy *p, const json_t *claims)
{
	struct policy_result why;

	if (policy_cred_type(p) == BROKER_CRED_JWT) {
		struct policy_jwt_render jr;
		char *extra;

		printf("credential: jwt, audience %s, ttl %llds\n", policy_jwt_audience(p), (long long)policy_ttl(p));
		if (policy_render_jwt(p, claims, &jr, &why) != BROKER_OK) {
			printf("  template: %s\n", why.audit_reason);
			return;
		}
		extra = json_dumps(jr.claims, JSON_COMPACT);
		printf("  subject: %s\n", jr.subject ? jr.subject : "(the CI token's sub)");
		printf("  claims: %s\n", extra ? extra : "{}");
		free(extra);
		policy_jwt_render_clear(&jr);
	} else {
		struct policy_aws_render ar;
		char *tags;

		printf("credential: aws, ttl %llds\n", (long long)policy_ttl(p));
		if (policy_render_aws(p, claims, &ar, &why) != BROKER_OK) {
			printf("  template: %s\n", why.audit_reason);
			return;
		}
		tags = ar.session_tags ? json_dumps(ar.session_tags, JSON_COMPACT) : NULL;
		printf("  role_arn: %s\n  session_name: %s\n", ar.role_arn, ar.session_name);
		if (ar.source_identity)
			printf("  source_identity: %s\n", ar.source_identity);
		if (tags)
			printf("  session_tags: %s\n", tags);
		if (ar.session_policy)
			printf("  session_policy: %s\n", ar.session_policy);
		free(tags);
		policy_aws_render_clear(&ar);
	}
}

static int do_explain(struct policy_args *a)
{
	struct broker_config *cfg = NULL;
	struct broker_policy_set *set = NULL;
	const struct broker_policy *p;
	const struct broker_issuer_config *ic;
	struct decision dec;
	json_t *claims = NULL, *inner;
	char err[256];
	const char *file;
	int line, col, rc = 1;

	if (a->n_files) {
		fprintf(stderr, "cibroker policy explain: unexpected argument '%s'\n", a->files[0]);
		return 2;
	}
	if (!a->audience || !a->claims) {
		fprintf(stderr, "cibroker policy explain: --audience NAME and --claims FILE are required\n");
		return 2;
	}
	if (!(claims = read_json(a->claims, err, sizeof(err)))) {
		fprintf(stderr, "cibroker policy explain: %s: %s\n", a->claims, err);
		return 1;
	}
	if (json_is_object(json_object_get(claims, "claims")) && json_object_get(claims, "expect")) {
		/* a policy test case given where the claims alone belong */
		fprintf(stderr, "cibroker policy explain: %s: note: this looks like a policy test case; explaining "
				"its \"claims\" member\n", a->claims);
		inner = json_incref(json_object_get(claims, "claims"));
		json_decref(claims);
		claims = inner;
	}
	if (load_all(a->config, false, &cfg, &set, NULL) != 0)
		goto out;
	p = policy_set_find(set, a->audience);
	if (!p) {
		printf("no policy named '%s'\ndecision: deny (invalid_target)\n", a->audience);
		goto out;
	}
	policy_location(p, &file, &line, &col);
	ic = config_find_issuer(cfg, policy_issuer(p));
	printf("policy %s (%s:%d:%d), issuer %s (%s)\n", policy_name(p), file, line, col, policy_issuer(p),
	       ic ? ic->issuer : "?");
	if (policy_description(p))
		printf("  %s\n", policy_description(p));
	printf("conditions (issuer deny, then deny, then allow):\n");
	policy_explain(set, p, claims, print_line, NULL);
	decide(cfg, set, a->audience, claims, &dec);
	/* what would be minted: only once the conditions allow it (a template
	 * claim that is missing shows up here, and denies) */
	{
		struct policy_result why;

		if (policy_evaluate(set, p, claims, &why) == BROKER_OK)
			explain_credential(p, claims);
	}
	if (dec.allow) {
		printf("decision: allow\n");
		rc = 0;
	} else {
		printf("decision: deny: %s\n  audit: %s\n", dec.client, dec.audit);
	}
out:
	json_decref(claims);
	policy_set_free(set);
	config_free(cfg);
	return rc;
}

int cmd_policy(int argc, char **argv)
{
	struct policy_args a = {0};
	const char *sub;
	int rc;

	if (argc < 2) {
		fputs(policy_usage_text, stderr);
		return 2;
	}
	sub = argv[1];
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
		fputs(policy_usage_text, stdout);
		return 0;
	}
	if (strcmp(sub, "--version") == 0) {
		cli_print_version();
		return 0;
	}
	if (strcmp(sub, "check") && strcmp(sub, "test") && strcmp(sub, "explain")) {
		fprintf(stderr, "cibroker policy: unknown subcommand '%s' (check, test, explain)\n", sub);
		fputs(policy_usage_text, stderr);
		return 2;
	}
	a.files = calloc((size_t)argc, sizeof(*a.files));
	if (!a.files)
		return 1;
	rc = parse_args(sub, argc - 2, argv + 2, &a);
	if (rc == 1) {
		rc = 0;
	} else if (rc == 0) {
		if (strcmp(sub, "check") == 0)
			rc = do_check(&a);
		else if (strcmp(sub, "test") == 0)
			rc = do_test(&a);
		else
			rc = do_explain(&a);
	}
	free(a.files);
	return rc;
}
