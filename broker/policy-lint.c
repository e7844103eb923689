/* SPDX-License-Identifier: Apache-2.0 */
/* Review of loaded policies: the mistakes a careful reviewer would catch.
 * One is an error (an allow that narrows nothing); the rest are warnings,
 * which `policy check` prints but which do not fail it. The GitHub and
 * GitLab claim lists follow the token shapes in the docs (and
 * testdata/claims); a claim outside them is most likely a typo, and a typo
 * in a deny condition silently turns it off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/util.h"
#include "policy-int.h"

enum platform { PLATFORM_OTHER, PLATFORM_GITHUB, PLATFORM_GITLAB };

static const char *const github_claims[] = {
	"iss", "aud", "sub", "jti", "iat", "nbf", "exp", "actor", "actor_id", "base_ref", "head_ref", "event_name",
	"ref", "ref_type", "ref_protected", "sha", "environment", "environment_node_id", "repository",
	"repository_id", "repository_owner", "repository_owner_id", "repository_visibility", "workflow",
	"workflow_ref", "workflow_sha", "job_workflow_ref", "job_workflow_sha", "run_id", "run_number",
	"run_attempt", "runner_environment", "enterprise", "enterprise_id", "check_run_id",
};

static const char *const gitlab_claims[] = {
	"iss", "aud", "sub", "jti", "iat", "nbf", "exp", "namespace_id", "namespace_path", "project_id",
	"project_path", "project_visibility", "user_id", "user_login", "user_email", "user_access_level",
	"user_identities", "groups_direct", "pipeline_id", "pipeline_source", "job_id", "ref", "ref_type",
	"ref_path", "ref_protected", "environment", "environment_protected", "environment_action",
	"deployment_tier", "deployment_action", "runner_id", "runner_environment", "sha", "ci_config_ref_uri",
	"ci_config_sha", "job_namespace_id", "job_namespace_path", "job_project_id", "job_project_path",
};

static const char *const volatile_claims[] = {"exp", "iat", "nbf", "jti"};

static enum platform platform_of(const char *iss)
{
	static const char gh[] = "https://token.actions.githubusercontent.com";
	size_t len;

	if (!iss)
		return PLATFORM_OTHER;
	len = strlen(iss);
	/* github.com, GHE.com enterprises (<gh>/<slug>) and GHES (/_services/token) */
	if (strncmp(iss, gh, sizeof(gh) - 1) == 0 && (iss[sizeof(gh) - 1] == '\0' || iss[sizeof(gh) - 1] == '/'))
		return PLATFORM_GITHUB;
	if (len > 16 && strcmp(iss + len - 16, "/_services/token") == 0)
		return PLATFORM_GITHUB;
	if (strncmp(iss, "https://", 8) == 0 && strstr(iss + 8, "gitlab"))
		return PLATFORM_GITLAB;
	return PLATFORM_OTHER;
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* Optimal string alignment distance, capped: only "is it a near miss". */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t d[40][40];

	if (la >= 40 || lb >= 40)
		return 99;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			size_t cost = a[i - 1] != b[j - 1];
			size_t v = d[i - 1][j] + 1;

			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	return d[la][lb];
}

static void lint_unknown_claim(const struct condition *c, enum platform pf, struct diag *d)
{
	const char *const *list = pf == PLATFORM_GITHUB ? github_claims : gitlab_claims;
	size_t n = pf == PLATFORM_GITHUB ? BROKER_ARRAY_SIZE(github_claims) : BROKER_ARRAY_SIZE(gitlab_claims);
	const char *pname = pf == PLATFORM_GITHUB ? "GitHub Actions" : "GitLab CI";
	const char *best = NULL;
	size_t best_d = 3;
	char known[1024];
	size_t o = 0;

	if (in_list(c->claim, list, n))
		return;
	for (size_t i = 0; i < n; i++) {
		size_t dist = edit_distance(c->claim, list[i]);

		if (dist < best_d) {
			best_d = dist;
			best = list[i];
		}
	}
	if (best) {
		diag_warning(d, c->file, c->line, c->col, "'%s' is not a %s claim; did you mean '%s'?", c->claim, pname,
			     best);
		return;
	}
	known[0] = '\0';
	for (size_t i = 0; i < n && o < sizeof(known); i++)
		o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", i ? ", " : "", list[i]);
	diag_warning(d, c->file, c->line, c->col, "'%s' is not a %s claim (known: %s)", c->claim, pname, known);
}

static void lint_condition(const struct condition *c, enum platform pf, bool deny, struct diag *d)
{
	if (pf != PLATFORM_OTHER)
		lint_unknown_claim(c, pf, d);
	if (in_list(c->claim, volatile_claims, BROKER_ARRAY_SIZE(volatile_claims)))
		diag_warning(d, c->file, c->line, c->col,
			     "'%s' is different in every token; a condition on it is almost certainly a mistake",
			     c->claim);
	if (deny && condition_is_match_all(c))
		diag_warning(d, c->file, c->line, c->col,
			     "deny condition on '%s' matches any value: every token carrying '%s' is denied", c->claim,
			     c->claim);
	for (size_t i = 0; i < c->n_pats; i++) {
		const struct pattern *p = &c->pats[i];
		size_t len = strlen(p->src);

		if (p->kind == PATTERN_REGEX) {
			if (!deny && pattern_match(p, "", 0) && !pattern_is_match_all(p))
				diag_warning(d, c->file, p->line, p->col,
					     "regex on '%s' also matches the empty string", c->claim);
			continue;
		}
		if (len && (p->src[0] == '^' || p->src[len - 1] == '$'))
			diag_warning(d, c->file, p->line, p->col,
				     "'%s' looks like a regex but is compared as a literal/glob; write {regex: \"...\"}",
				     p->src);
		else if (p->kind == PATTERN_GLOB && strstr(p->src, ".*"))
			diag_warning(d, c->file, p->line, p->col,
				     "'%s' contains '.*': in a glob '*' alone matches any run; for a regex write "
				     "{regex: \"...\"}",
				     p->src);
		if (strcmp(c->claim, "sub") == 0 && p->kind == PATTERN_GLOB && p->src[0] == '*' && !deny &&
		    !pattern_is_match_all(p))
			diag_warning(d, c->file, p->line, p->col,
				     "a leading '*' on 'sub' matches tokens of any repository or project");
		if (strcmp(c->claim, "ref") == 0 && pf == PLATFORM_GITHUB && strncmp(p->src, "refs/", 5) != 0 &&
		    !pattern_is_match_all(p))
			diag_warning(d, c->file, p->line, p->col,
				     "GitHub's 'ref' is a full ref such as refs/heads/main; '%s' will not match it",
				     p->src);
		if (strcmp(c->claim, "ref") == 0 && pf == PLATFORM_GITLAB && strncmp(p->src, "refs/", 5) == 0)
			diag_warning(d, c->file, p->line, p->col,
				     "GitLab's 'ref' is the short name (main); the full ref is in 'ref_path'");
	}
}

static const struct condition *find_cond(const struct condset *cs, const char *claim)
{
	for (size_t i = 0; i < cs->n; i++)
		if (strcmp(cs->v[i].claim, claim) == 0 && !condition_is_match_all(&cs->v[i]))
			return &cs->v[i];
	return NULL;
}

/* Names can be re-registered: a deleted repository or renamed owner lets
 * someone else create the same name and inherit the policy. ids cannot. */
static void lint_github_identity(const struct broker_policy *p, struct diag *d)
{
	const struct condset *a = &p->allow;
	const struct condition *repo = find_cond(a, "repository"), *owner = find_cond(a, "repository_owner");
	const struct condition *sub = find_cond(a, "sub");
	bool repo_id = find_cond(a, "repository_id"), owner_id = find_cond(a, "repository_owner_id");
	static const char *const scoping[] = {"repository",  "repository_id",    "repository_owner",
					      "repository_owner_id", "sub", "job_workflow_ref",
					      "workflow_ref", "enterprise", "enterprise_id"};
	bool scoped = false;

	if (repo && !repo_id && !owner_id)
		diag_warning(d, repo->file, repo->line, repo->col,
			     "policy '%s' pins 'repository' by name without 'repository_id' or "
			     "'repository_owner_id': a re-created or renamed repository would match",
			     p->name);
	if (owner && !owner_id)
		diag_warning(d, owner->file, owner->line, owner->col,
			     "policy '%s' pins 'repository_owner' by name without 'repository_owner_id': a "
			     "re-registered owner name would match",
			     p->name);
	if (sub && !repo && !owner && !repo_id && !owner_id)
		diag_warning(d, sub->file, sub->line, sub->col,
			     "policy '%s' pins 'sub' (which names the repository) without 'repository_id' or "
			     "'repository_owner_id'",
			     p->name);
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(scoping); i++)
		scoped |= find_cond(a, scoping[i]) != NULL;
	if (!scoped)
		diag_warning(d, p->file, p->allow_line, p->allow_col,
			     "policy '%s' does not restrict the repository or owner: tokens from any repository on "
			     "GitHub can match it",
			     p->name);
}

static void lint_gitlab_identity(const struct broker_policy *p, struct diag *d)
{
	static const char *const scoping[] = {"project_path", "project_id",        "namespace_path",
					      "namespace_id", "sub", "ci_config_ref_uri"};
	bool scoped = false;

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(scoping); i++)
		scoped |= find_cond(&p->allow, scoping[i]) != NULL;
	if (!scoped)
		diag_warning(d, p->file, p->allow_line, p->allow_col,
			     "policy '%s' does not restrict the project or namespace: tokens from any project on this "
			     "GitLab can match it",
			     p->name);
}

void policy_lint(const struct broker_config *cfg, const struct broker_policy_set *set, struct diag *d)
{
	for (size_t i = 0; i < set->n_issuers && i < cfg->n_issuers; i++) {
		enum platform pf = platform_of(cfg->issuers[i].issuer);

		for (size_t k = 0; k < set->issuers[i].deny.n; k++)
			lint_condition(&set->issuers[i].deny.v[k], pf, true, d);
	}
	for (size_t i = 0; i < set->n; i++) {
		const struct broker_policy *p = set->v[i];
		enum platform pf;
		bool narrows = false;

		if (p->issuer_idx >= cfg->n_issuers)
			continue;
		pf = platform_of(cfg->issuers[p->issuer_idx].issuer);
		for (size_t k = 0; k < p->allow.n; k++) {
			narrows |= !condition_is_match_all(&p->allow.v[k]);
			lint_condition(&p->allow.v[k], pf, false, d);
		}
		for (size_t k = 0; k < p->deny.n; k++)
			lint_condition(&p->deny.v[k], pf, true, d);
		/* a policy with errors may be missing conditions that failed to
		 * compile: judging what is left would only add noise */
		if (p->broken)
			continue;
		if (!narrows) {
			diag_error(d, p->file, p->allow_line, p->allow_col,
				   "policy '%s': allow needs at least one condition that is not match-all", p->name);
			continue;
		}
		if (pf == PLATFORM_GITHUB)
			lint_github_identity(p, d);
		else if (pf == PLATFORM_GITLAB)
			lint_gitlab_identity(p, d);
	}
}
