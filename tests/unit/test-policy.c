/* SPDX-License-Identifier: Apache-2.0 */
/* Policy module: claims in, decision out, for every matching rule; every load
 * error and lint with its FILE:LINE:COL; templates and credential rendering.
 * The config is built in memory (the policy module only reads it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cibroker/doc.h"
#include "cibroker/policy.h"

static struct broker_issuer_config issuers[3];
static struct broker_config cfg;
static struct doc_file *issuer_deny_doc;

static void setup(void)
{
	static const char deny_yaml[] = "# issuer deny of github\nactor: [evil-bot]\n";
	struct diag *d = diag_new();

	if (doc_load_buffer("config.yaml", deny_yaml, strlen(deny_yaml), false, d, &issuer_deny_doc) != BROKER_OK) {
		diag_print(d, stderr);
		exit(1);
	}
	diag_free(d);
	issuers[0] = (struct broker_issuer_config){.name = "github",
						   .issuer = "https://token.actions.githubusercontent.com",
						   .deny = issuer_deny_doc->docs[0],
						   .file = "config.yaml"};
	issuers[1] = (struct broker_issuer_config){.name = "gitlab", .issuer = "https://gitlab.com"};
	issuers[2] = (struct broker_issuer_config){.name = "other", .issuer = "https://ci.example.com"};
	cfg.path = "config.yaml";
	cfg.issuers = issuers;
	cfg.n_issuers = 3;
	cfg.max_ttl = 3600;
	cfg.aws_sts_endpoint = "https://sts.us-east-1.amazonaws.com";
}

static bool diag_has(const struct diag *d, const char *needle)
{
	for (size_t i = 0; i < diag_count(d); i++)
		if (strstr(diag_line(d, i), needle))
			return true;
	return false;
}

static void dump_diag(const struct diag *d)
{
	for (size_t i = 0; i < diag_count(d); i++)
		fprintf(stderr, "    | %s\n", diag_line(d, i));
}

static json_t *claims_from(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);

	if (!j)
		fprintf(stderr, "bad test claims %s: %s\n", text, e.text);
	return j;
}

/* ---- matching -------------------------------------------------------- */

struct match_case {
	const char *issuer;
	const char *allow;  /* YAML flow mapping */
	const char *deny;   /* NULL: none */
	const char *claims; /* JSON */
	bool allow_expected;
	const char *reason; /* substring of client_reason when denied */
};

static const struct match_case match_cases[] = {
	/* exact, byte-exact, case-sensitive */
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \"acme/web\"}", true, NULL},
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \"acme/web2\"}", false, "claim 'repository' did not match"},
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \"acme/we\"}", false, "claim 'repository'"},
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \"Acme/web\"}", false, "claim 'repository'"},
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \" acme/web\"}", false, "claim 'repository'"},
	{"other", "{e: \"\"}", NULL, "{\"e\": \"\"}", true, NULL},
	{"other", "{e: \"\"}", NULL, "{\"e\": \"x\"}", false, "claim 'e'"},
	/* glob: whole value, '*' crosses '/', '?' one character */
	{"other", "{ref: \"refs/heads/*\"}", NULL, "{\"ref\": \"refs/heads/main\"}", true, NULL},
	{"other", "{ref: \"refs/heads/*\"}", NULL, "{\"ref\": \"refs/heads/feature/x/y\"}", true, NULL},
	{"other", "{ref: \"refs/heads/*\"}", NULL, "{\"ref\": \"refs/heads/\"}", true, NULL},
	{"other", "{ref: \"refs/heads/*\"}", NULL, "{\"ref\": \"refs/tags/v1\"}", false, "claim 'ref'"},
	{"other", "{ref: \"refs/heads/*\"}", NULL, "{\"ref\": \"xrefs/heads/main\"}", false, "claim 'ref'"},
	{"other", "{ref: \"*main\"}", NULL, "{\"ref\": \"refs/heads/main\"}", true, NULL},
	{"other", "{ref: \"*main\"}", NULL, "{\"ref\": \"refs/heads/main-2\"}", false, "claim 'ref'"},
	{"other", "{ref: \"a*b*c\"}", NULL, "{\"ref\": \"aXbYbZc\"}", true, NULL},
	{"other", "{ref: \"a*b*c\"}", NULL, "{\"ref\": \"aXbYbZ\"}", false, "claim 'ref'"},
	{"other", "{v: \"v?.0\"}", NULL, "{\"v\": \"v1.0\"}", true, NULL},
	{"other", "{v: \"v?.0\"}", NULL, "{\"v\": \"v10.0\"}", false, "claim 'v'"},
	{"other", "{v: \"v?.0\"}", NULL, "{\"v\": \"v.0\"}", false, "claim 'v'"},
	{"other", "{v: \"v?.0\"}", NULL, "{\"v\": \"v\\u00e9.0\"}", true, NULL},
	{"other", "{v: \"v?.0\"}", NULL, "{\"v\": \"v/.0\"}", true, NULL},
	/* escapes: \* \? \\ are literals */
	{"other", "{v: 'a\\*b'}", NULL, "{\"v\": \"a*b\"}", true, NULL},
	{"other", "{v: 'a\\*b'}", NULL, "{\"v\": \"axb\"}", false, "claim 'v'"},
	{"other", "{v: 'a\\?'}", NULL, "{\"v\": \"a?\"}", true, NULL},
	{"other", "{v: 'a\\?'}", NULL, "{\"v\": \"ab\"}", false, "claim 'v'"},
	{"other", "{v: 'a\\\\*'}", NULL, "{\"v\": \"a\\\\xyz\"}", true, NULL},
	{"other", "{v: 'a\\\\*'}", NULL, "{\"v\": \"axyz\"}", false, "claim 'v'"},
	{"other", "{v: 'a\\*'}", NULL, "{\"v\": \"a*\"}", true, NULL},
	{"other", "{v: 'a\\*'}", NULL, "{\"v\": \"ab\"}", false, "claim 'v'"},
	/* anchored POSIX ERE */
	{"other", "{env: {regex: \"prod(-eu|-us)?\"}}", NULL, "{\"env\": \"prod\"}", true, NULL},
	{"other", "{env: {regex: \"prod(-eu|-us)?\"}}", NULL, "{\"env\": \"prod-eu\"}", true, NULL},
	{"other", "{env: {regex: \"prod(-eu|-us)?\"}}", NULL, "{\"env\": \"xprod\"}", false, "claim 'env'"},
	{"other", "{env: {regex: \"prod(-eu|-us)?\"}}", NULL, "{\"env\": \"prod-eux\"}", false, "claim 'env'"},
	{"other", "{env: {regex: \"a|b\"}}", NULL, "{\"env\": \"b\"}", true, NULL},
	{"other", "{env: {regex: \"a|b\"}}", NULL, "{\"env\": \"ab\"}", false, "claim 'env'"},
	{"other", "{env: {regex: \"a|b\"}}", NULL, "{\"env\": \"xb\"}", false, "claim 'env'"},
	{"other", "{env: {regex: \"^prod$\"}}", NULL, "{\"env\": \"prod\"}", true, NULL},
	{"other", "{env: {regex: \"[)]x\"}}", NULL, "{\"env\": \")x\"}", true, NULL},
	/* lists: any of */
	{"other", "{ev: [push, workflow_dispatch]}", NULL, "{\"ev\": \"workflow_dispatch\"}", true, NULL},
	{"other", "{ev: [push, workflow_dispatch]}", NULL, "{\"ev\": \"pull_request\"}", false, "claim 'ev'"},
	{"other", "{ev: [push, {regex: \"work.*\"}]}", NULL, "{\"ev\": \"workflow_run\"}", true, NULL},
	{"other", "{ev: [push, \"tag-*\"]}", NULL, "{\"ev\": \"tag-1\"}", true, NULL},
	/* every condition must hold */
	{"other", "{a: x, b: y}", NULL, "{\"a\": \"x\", \"b\": \"y\"}", true, NULL},
	{"other", "{a: x, b: y}", NULL, "{\"a\": \"x\", \"b\": \"z\"}", false, "claim 'b' did not match"},
	/* missing, null, object fail */
	{"other", "{a: x}", NULL, "{}", false, "claim 'a' did not match"},
	{"other", "{a: x}", NULL, "{\"a\": null}", false, "claim 'a'"},
	{"other", "{a: null-ish}", NULL, "{\"a\": {\"x\": \"null-ish\"}}", false, "claim 'a'"},
	{"other", "{a: \"*\", b: x}", NULL, "{\"b\": \"x\"}", false, "claim 'a'"},
	{"other", "{a: \"*\", b: x}", NULL, "{\"a\": null, \"b\": \"x\"}", false, "claim 'a'"},
	{"other", "{a: \"*\", b: x}", NULL, "{\"a\": {}, \"b\": \"x\"}", false, "claim 'a'"},
	/* arrays: any element */
	{"other", "{groups: admin}", NULL, "{\"groups\": [\"dev\", \"admin\"]}", true, NULL},
	{"other", "{groups: admin}", NULL, "{\"groups\": [\"dev\"]}", false, "claim 'groups'"},
	{"other", "{groups: admin}", NULL, "{\"groups\": []}", false, "claim 'groups'"},
	{"other", "{groups: admin}", NULL, "{\"groups\": [[\"admin\"]]}", false, "claim 'groups'"},
	{"other", "{groups: admin}", NULL, "{\"groups\": [null, {\"a\": \"admin\"}]}", false, "claim 'groups'"},
	{"other", "{ids: 7}", NULL, "{\"ids\": [1, 7]}", true, NULL},
	/* numbers and booleans compare as their JSON text */
	{"other", "{n: 1}", NULL, "{\"n\": 1}", true, NULL},
	{"other", "{n: 1}", NULL, "{\"n\": \"1\"}", true, NULL},
	{"other", "{n: 1}", NULL, "{\"n\": 2}", false, "claim 'n'"},
	{"other", "{n: 1}", NULL, "{\"n\": 1.0}", false, "claim 'n'"},
	{"other", "{n: \"1.5\"}", NULL, "{\"n\": 1.5}", true, NULL},
	{"other", "{n: \"5000\"}", NULL, "{\"n\": 5000}", true, NULL},
	{"other", "{n: \"-3\"}", NULL, "{\"n\": -3}", true, NULL},
	{"other", "{n: \"9223372036854775807\"}", NULL, "{\"n\": 9223372036854775807}", true, NULL},
	{"other", "{p: true}", NULL, "{\"p\": true}", true, NULL},
	{"other", "{p: True}", NULL, "{\"p\": true}", true, NULL},
	{"other", "{p: true}", NULL, "{\"p\": \"true\"}", true, NULL},
	{"other", "{p: true}", NULL, "{\"p\": false}", false, "claim 'p'"},
	{"other", "{p: \"false\"}", NULL, "{\"p\": false}", true, NULL},
	{"other", "{p: \"1\"}", NULL, "{\"p\": true}", false, "claim 'p'"},
	/* an embedded NUL never truncates a comparison */
	{"other", "{repository: acme/web}", NULL, "{\"repository\": \"acme/web\\u0000evil\"}", false, "claim 'repository'"},
	{"other", "{repository: {regex: \"acme/web.*\"}}", NULL, "{\"repository\": \"acme/web\\u0000x\"}", false,
	 "claim 'repository'"},
	{"other", "{repository: \"acme/w?b\"}", NULL, "{\"repository\": \"acme/w\\u0000b\"}", true, NULL},
	{"other", "{repository: \"acme/web\"}", NULL, "{\"repository\": [\"x\\u0000\", \"acme/web\"]}", true, NULL},
	/* deny: any condition holding denies, and wins over allow */
	{"other", "{r: x}", "{actor: bad}", "{\"r\": \"x\", \"actor\": \"bad\"}", false, "denied by condition on claim 'actor'"},
	{"other", "{r: x}", "{actor: bad}", "{\"r\": \"x\", \"actor\": \"good\"}", true, NULL},
	{"other", "{r: x}", "{actor: bad}", "{\"r\": \"x\"}", true, NULL},
	{"other", "{r: x}", "{actor: bad}", "{\"r\": \"x\", \"actor\": null}", true, NULL},
	{"other", "{r: x}", "{actor: bad}", "{\"r\": \"y\", \"actor\": \"bad\"}", false, "denied by condition on claim 'actor'"},
	{"other", "{r: x}", "{actor: \"*[bot]\"}", "{\"r\": \"x\", \"actor\": \"dependabot[bot]\"}", false, "actor"},
	{"other", "{r: x}", "{actor: bad, ev: pull_request}", "{\"r\": \"x\", \"ev\": \"pull_request\"}", false,
	 "denied by condition on claim 'ev'"},
	{"other", "{r: x}", "{groups: [admin]}", "{\"r\": \"x\", \"groups\": [\"dev\", \"admin\"]}", false, "groups"},
	/* issuer-level deny (github: actor evil-bot) */
	{"github", "{repository_id: \"1\", repository: acme/web}", NULL,
	 "{\"repository_id\": \"1\", \"repository\": \"acme/web\", \"actor\": \"evil-bot\"}", false,
	 "denied by condition on claim 'actor'"},
	{"github", "{repository_id: \"1\", repository: acme/web}", NULL,
	 "{\"repository_id\": \"1\", \"repository\": \"acme/web\", \"actor\": \"alice\"}", true, NULL},
	{"other", "{r: x}", NULL, "{\"r\": \"x\", \"actor\": \"evil-bot\"}", true, NULL},
};

static void test_matching(void)
{
	for (size_t i = 0; i < sizeof(match_cases) / sizeof(match_cases[0]); i++) {
		const struct match_case *mc = &match_cases[i];
		char yaml[1024];
		struct diag *d = diag_new();
		struct broker_policy_set *set = NULL;
		json_t *claims = claims_from(mc->claims);
		struct policy_result why;
		enum broker_err r;

		snprintf(yaml, sizeof(yaml), "name: t\nissuer: %s\nallow: %s\n%s%s%scredential: {type: jwt, audience: x}\n",
			 mc->issuer, mc->allow, mc->deny ? "deny: " : "", mc->deny ? mc->deny : "", mc->deny ? "\n" : "");
		r = policy_set_load_buffer(&cfg, "t.yaml", yaml, strlen(yaml), false, d, &set);
		CHECK(r == BROKER_OK && claims, "case %zu: load %s", i, mc->allow);
		if (r != BROKER_OK || !claims) {
			dump_diag(d);
			goto next;
		}
		memset(&why, 0x55, sizeof(why));
		r = policy_evaluate(set, policy_set_find(set, "t"), claims, &why);
		CHECK((r == BROKER_OK) == mc->allow_expected, "case %zu: allow %s deny %s claims %s -> %s (%s)", i,
		      mc->allow, mc->deny ? mc->deny : "-", mc->claims, r == BROKER_OK ? "allow" : "deny",
		      r == BROKER_OK ? "" : why.audit_reason);
		if (!mc->allow_expected && r == BROKER_ERR_DENIED) {
			CHECK(strstr(why.client_reason, mc->reason) != NULL, "case %zu: client reason '%s' lacks '%s'", i,
			      why.client_reason, mc->reason);
			CHECK(why.audit_reason[0] != '\0', "case %zu: audit reason", i);
		}
	next:
		json_decref(claims);
		policy_set_free(set);
		diag_free(d);
	}
}

/* The client learns which claim failed, never what was expected; the audit
 * log gets both. */
static void test_reasons(void)
{
	static const char yaml[] = "name: t\nissuer: github\n"
				   "allow: {repository_id: \"12345\", repository: acme/secret-web, ref: refs/heads/main}\n"
				   "deny: {actor: [mallory]}\n"
				   "credential: {type: jwt, audience: x}\n";
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	json_t *c1 = claims_from("{\"repository_id\": \"12345\", \"repository\": \"acme/other\", \"ref\": \"refs/heads/dev\"}");
	json_t *c2 = claims_from("{\"repository_id\": \"12345\", \"repository\": \"acme/secret-web\", "
				 "\"ref\": \"refs/heads/main\", \"actor\": \"mallory\"}");
	json_t *c3 = claims_from("{\"repository_id\": \"12345\", \"repository\": \"acme/secret-web\", "
				 "\"ref\": \"refs/heads/main\", \"actor\": \"evil-bot\"}");
	struct policy_result why;
	const struct broker_policy *p;

	CHECK(policy_set_load_buffer(&cfg, "r.yaml", yaml, strlen(yaml), false, d, &set) == BROKER_OK, "load");
	p = policy_set_find(set, "t");
	CHECK(p && policy_evaluate(set, p, c1, &why) == BROKER_ERR_DENIED, "denied");
	CHECK(strcmp(why.client_reason, "claim 'repository' did not match") == 0, "client: %s", why.client_reason);
	CHECK(!strstr(why.client_reason, "secret-web"), "client reason leaks the expected value");
	CHECK(strstr(why.audit_reason, "\"acme/other\"") && strstr(why.audit_reason, "\"acme/secret-web\"") &&
		      strstr(why.audit_reason, "r.yaml:3:"),
	      "audit: %s", why.audit_reason);
	CHECK(policy_evaluate(set, p, c2, &why) == BROKER_ERR_DENIED, "deny held");
	CHECK(strcmp(why.client_reason, "denied by condition on claim 'actor'") == 0, "client: %s", why.client_reason);
	CHECK(!strstr(why.client_reason, "mallory"), "client reason leaks the value");
	CHECK(strstr(why.audit_reason, "deny condition on claim 'actor' (r.yaml:4:8)") != NULL, "audit: %s",
	      why.audit_reason);
	CHECK(policy_evaluate(set, p, c3, &why) == BROKER_ERR_DENIED, "issuer deny held");
	CHECK(strstr(why.audit_reason, "issuer 'github' deny condition on claim 'actor' (config.yaml:2:1)") != NULL,
	      "audit: %s", why.audit_reason);
	json_decref(c3);
	c3 = json_object();
	CHECK(policy_evaluate(set, p, c3, &why) == BROKER_ERR_DENIED, "empty claims deny");
	CHECK(policy_evaluate(set, p, NULL, &why) == BROKER_ERR_DENIED, "NULL claims deny");
	json_decref(c1);
	json_decref(c2);
	json_decref(c3);
	policy_set_free(set);
	diag_free(d);
}

/* ---- load errors ----------------------------------------------------- */

struct load_case {
	const char *text;
	const char *diag; /* expected substring of one diagnostic line */
	bool ok;          /* load succeeds (warnings only) */
	bool is_json;
};

#define HDR "name: t\nissuer: other\n"
#define JWT "credential: {type: jwt, audience: x}\n"
#define AWS "credential:\n  type: aws\n  role_arn: arn:aws:iam::123456789012:role/deploy\n"

static const struct load_case load_cases[] = {
	/* structure */
	{HDR "allw: {r: x}\nallow: {r: x}\n" JWT, "t.yaml:3:1: unknown key 'allw' in a policy", false, false},
	{"issuer: other\nallow: {r: x}\n" JWT, "t.yaml:1:1: policy has no 'name'", false, false},
	{"name: t\nallow: {r: x}\n" JWT, "t.yaml:1:1: policy 't' has no 'issuer'", false, false},
	{HDR JWT, "t.yaml:1:1: policy 't' has no 'allow'", false, false},
	{HDR "allow: {r: x}\n", "policy 't' has no 'credential'", false, false},
	{"name: a b\nissuer: other\nallow: {r: x}\n" JWT, "t.yaml:1:7: name must be", false, false},
	{"name: \"\"\nissuer: other\nallow: {r: x}\n" JWT, "t.yaml:1:7: name must be", false, false},
	{"name: [a]\nissuer: other\nallow: {r: x}\n" JWT, "t.yaml:1:7: name must be", false, false},
	{"name: t\nissuer: nope\nallow: {r: x}\n" JWT, "t.yaml:2:9: unknown issuer 'nope' (the config defines: github, gitlab, other)", false, false},
	{HDR "allow: [r]\n" JWT, "t.yaml:3:8: 'allow' must be a mapping", false, false},
	{HDR "allow: {r: x}\ndeny: x\n" JWT, "t.yaml:4:7: 'deny' must be a mapping", false, false},
	{"- [a]\n", "t.yaml:1:3: a policy must be a mapping", false, false},
	{"just a string\n", "t.yaml:1:1: expected a policy", false, false},
	{"- 5\n", "t.yaml:1:3: a policy must be a mapping", false, false},
	{"# nothing\n", "t.yaml:1:1: warning: no policies in this file", true, false},
	/* conditions */
	{HDR "allow: {r: []}\n" JWT, "t.yaml:3:12: condition on 'r' is an empty list", false, false},
	{HDR "allow: {r: x, s: }\n" JWT, "condition on 's' has no value", false, false},
	{HDR "allow: {r: x, s: ~}\n" JWT, "t.yaml:3:18: condition on 's' has no value", false, false},
	{HDR "allow: {r: [[x]]}\n" JWT, "t.yaml:3:13: condition on 'r': lists cannot be nested", false, false},
	{HDR "allow: {r: {regex: \"a(\"}}\n" JWT, "t.yaml:3:20: condition on 'r': bad regex", false, false},
	{HDR "allow: {r: {regex: \"a)|(b\"}}\n" JWT, "t.yaml:3:20: condition on 'r': bad regex: unmatched ')'", false, false},
	{HDR "allow: {r: {regex: \"x)\"}}\n" JWT, "bad regex: unmatched ')'", false, false},
	{HDR "allow: {r: {regex: 'a\\'}}\n" JWT, "t.yaml:3:20: condition on 'r': bad regex: trailing backslash", false, false},
	{HDR "allow: {r: {regex: \"b(c|d)?++++++++++++++++++++++++++++++++\"}}\n" JWT,
	 "t.yaml:3:20: condition on 'r': bad regex: a repetition cannot follow another repetition", false, false},
	{HDR "allow: {r: {regex: \"(a{200}){200}\"}}\n" JWT, "bad regex: pattern too complex", false, false},
	{HDR "allow: {r: {regex: \"(((a{30}){30}){30})\"}}\n" JWT, "bad regex: pattern too complex", false, false},
	{HDR "allow: {r: {regex: \"a{2}{3}\"}}\n" JWT, "bad regex: a repetition cannot follow", false, false},
	{HDR "allow: {r: {regex: \"a{x}\"}}\n" JWT, "bad regex: bad repetition bound", false, false},
	{HDR "allow: {r: {regex: \"[0-9]{12}-[a-f0-9]{40}(-[a-z]+)*\"}}\n" JWT, NULL, true, false},
	{HDR "allow: {r: {regex: \"[)(]\\\\)\\\\(\"}}\n" JWT, NULL, true, false},
	{HDR "allow: {r: {regex: x, flags: i}}\n" JWT, "t.yaml:3:23: condition on 'r': unknown key 'flags'", false, false},
	{HDR "allow: {r: {rgx: x}}\n" JWT, "t.yaml:3:13: condition on 'r': unknown key 'rgx'", false, false},
	{HDR "allow: {r: {regex: [x]}}\n" JWT, "condition on 'r': regex must be a string", false, false},
	{HDR "allow: {r: \"a\\0b\"}\n" JWT, "t.yaml:3:12: condition on 'r' contains a NUL byte", false, false},
	/* allow must narrow something */
	{HDR "allow: {r: \"*\"}\n" JWT, "t.yaml:3:1: policy 't': allow needs at least one condition that is not match-all", false, false},
	{HDR "allow: {r: \"**\", s: \"?*\"}\n" JWT, "allow needs at least one condition that is not match-all", false, false},
	{HDR "allow: {r: {regex: \".*\"}}\n" JWT, "allow needs at least one condition", false, false},
	{HDR "allow: {r: {regex: \"(.+)\"}}\n" JWT, "allow needs at least one condition", false, false},
	{HDR "allow: {r: [main, \"*\"]}\n" JWT, "allow needs at least one condition", false, false},
	{HDR "allow: {}\n" JWT, "allow needs at least one condition", false, false},
	{HDR "allow: {r: \"*\", s: x}\n" JWT, NULL, true, false},
	/* credential: jwt */
	{HDR "allow: {r: x}\ncredential: {type: jwt}\n", "t.yaml:4:13: jwt credential has no 'audience'", false, false},
	{HDR "allow: {r: x}\ncredential: {audience: x}\n", "t.yaml:4:13: credential has no 'type'", false, false},
	{HDR "allow: {r: x}\ncredential: {type: gcp}\n", "t.yaml:4:20: unknown credential type 'gcp' (known: jwt, aws)", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, role_arn: y}\n",
	 "t.yaml:4:38: unknown key 'role_arn' in a jwt credential", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: \"\"}\n", "t.yaml:4:35: 'audience' must be a non-empty string", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, ttl: 0}\n", "t.yaml:4:43: ttl must be greater than 0", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, ttl: 2h}\n",
	 "t.yaml:4:43: ttl 7200 s is above limits.max_ttl (3600 s)", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, ttl: soon}\n", "t.yaml:4:43: ttl must be a duration", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, ttl: 1h}\n", NULL, true, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, claims: {iss: x}}\n",
	 "t.yaml:4:47: claim 'iss' is reserved", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, claims: {ci: x, policy: y, sub: z}}\n",
	 "t.yaml:4:54: claim 'policy' is reserved", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, claims: [a]}\n", "t.yaml:4:46: claims must be a mapping", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"\"}\n", "t.yaml:4:47: subject must not be empty", false, false},
	/* templates */
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"repo:${repository\"}\n",
	 "t.yaml:4:47: template: unterminated '${' at offset 5", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"a${}\"}\n", "t.yaml:4:47: template: empty claim name", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"${a b}\"}\n",
	 "t.yaml:4:47: template: claim name at offset 0 may only use", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"${ci.sub}\"}\n", NULL, true, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"cost $5\"}\n",
	 "t.yaml:4:47: template: '$' at offset 5 must start", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, claims: {a: \"${x\"}}\n", "t.yaml:4:50: template: unterminated", false, false},
	{HDR "allow: {r: x}\ncredential: {type: jwt, audience: x, subject: \"$$${a}$$\"}\n", NULL, true, false},
	/* credential: aws */
	{HDR "allow: {r: x}\n" AWS, NULL, true, false},
	{HDR "allow: {r: x}\ncredential: {type: aws}\n", "t.yaml:4:13: aws credential has no 'role_arn'", false, false},
	{HDR "allow: {r: x}\ncredential: {type: aws, role_arn: \"arn:aws:iam::12345:role/x\"}\n",
	 "t.yaml:4:35: role_arn must look like", false, false},
	{HDR "allow: {r: x}\ncredential: {type: aws, role_arn: \"arn:aws:iam::123456789012:user/x\"}\n", "role_arn must look like", false, false},
	{HDR "allow: {r: x}\ncredential: {type: aws, role_arn: \"arn:aws:iam::123456789012:role/\"}\n", "role_arn must look like", false, false},
	{HDR "allow: {r: x}\ncredential: {type: aws, role_arn: \"arn:aws-us-gov:iam::123456789012:role/a/b\"}\n", NULL, true, false},
	{HDR "allow: {r: x}\n" AWS "  ttl: 5m\n", "t.yaml:7:8: ttl 300 s is below the STS minimum of 900 s", false, false},
	{HDR "allow: {r: x}\n" AWS "  ttl: 2h\n", "t.yaml:7:8: ttl 7200 s is above limits.max_ttl", false, false},
	{HDR "allow: {r: x}\n" AWS "  audience: x\n", "t.yaml:7:3: unknown key 'audience' in an aws credential", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_name: \"gh-${run_id\"\n", "t.yaml:7:17: template: unterminated", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_name: x\n", "t.yaml:7:17: session_name is always shorter than the 2", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_name: \"\xc3\xa9\"\n", "session_name is always shorter than the 2", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_name: \"x${run_id}\"\n", NULL, true, false},
	{HDR "allow: {r: x}\n" AWS "  session_name: ab\n", NULL, true, false},
	{HDR "allow: {r: x}\n" AWS "  session_tags: {\"aws:x\": y}\n", "t.yaml:7:18: session tag key must be", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_tags: {\"a,b\": y}\n", "session tag key must be", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_tags: {Repo: a, repo: b}\n", "t.yaml:7:27: session tag key 'repo' repeats", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_tags: [a]\n", "t.yaml:7:17: session_tags must be a mapping", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_policy: \"{}\"\n", "t.yaml:7:19: session_policy must be a mapping", false, false},
	{HDR "allow: {r: x}\n" AWS "  session_policy: {Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: \"s3:*\", "
	     "Resource: \"*\"}]}\n",
	 NULL, true, false},
	/* JSON policy files report positions too */
	{"{\"name\": \"t\", \"issuer\": \"other\", \"allow\": {\"r\": \"x\"},\n \"credential\": {\"type\": \"jwt\"}, \"extra\": 1}",
	 "t.yaml:2:33: unknown key 'extra'", false, true},
	{"[{\"name\": \"t\", \"issuer\": \"other\", \"allow\": {\"r\": \"x\"}, \"credential\": {\"type\": \"jwt\", \"audience\": \"a\"}}]",
	 NULL, true, true},
	/* duplicate names name both places; several documents per file */
	{HDR "allow: {r: x}\n" JWT "---\n" HDR "allow: {r: y}\n" JWT,
	 "t.yaml:6:7: duplicate policy name 't' (first defined at t.yaml:1:7)", false, false},
	{"- name: t\n  issuer: other\n  allow: {r: x}\n  " JWT "- name: u\n  issuer: other\n  allow: {r: y}\n  " JWT, NULL, true, false},
	/* lints: warnings only */
	{"name: t\nissuer: github\nallow: {repository: acme/web}\n" JWT,
	 "t.yaml:3:9: warning: policy 't' pins 'repository' by name without 'repository_id'", true, false},
	{"name: t\nissuer: github\nallow: {repository_owner: acme, repository_id: \"1\"}\n" JWT,
	 "t.yaml:3:9: warning: policy 't' pins 'repository_owner' by name without 'repository_owner_id'", true, false},
	{"name: t\nissuer: github\nallow: {repository_id: \"1\", repositroy: acme/web}\n" JWT,
	 "t.yaml:3:29: warning: 'repositroy' is not a GitHub Actions claim; did you mean 'repository'?", true, false},
	{"name: t\nissuer: gitlab\nallow: {project_id: \"1\", deploy_target: x}\n" JWT,
	 "t.yaml:3:26: warning: 'deploy_target' is not a GitLab CI claim (known: iss, aud, sub", true, false},
	{"name: t\nissuer: github\nallow: {repository_id: \"1\", sub: \"*:ref:refs/heads/main\"}\n" JWT,
	 "t.yaml:3:34: warning: a leading '*' on 'sub'", true, false},
	{"name: t\nissuer: other\nallow: {env: {regex: \"(prod)?\"}}\n" JWT,
	 "t.yaml:3:22: warning: regex on 'env' also matches the empty string", true, false},
	{"name: t\nissuer: other\nallow: {env: \"^prod$\"}\n" JWT, "t.yaml:3:14: warning: '^prod$' looks like a regex", true, false},
	{"name: t\nissuer: other\nallow: {env: \"prod.*\"}\n" JWT, "warning: 'prod.*' contains '.*'", true, false},
	{"name: t\nissuer: github\nallow: {repository_id: \"1\", ref: main}\n" JWT,
	 "t.yaml:3:34: warning: GitHub's 'ref' is a full ref", true, false},
	{"name: t\nissuer: gitlab\nallow: {project_id: \"1\", ref: refs/heads/main}\n" JWT, "warning: GitLab's 'ref' is the short name", true, false},
	{"name: t\nissuer: other\nallow: {r: x, exp: \"1700000000\"}\n" JWT, "t.yaml:3:15: warning: 'exp' is different in every token", true, false},
	{"name: t\nissuer: github\nallow: {ref: refs/heads/main}\n" JWT,
	 "t.yaml:3:1: warning: policy 't' does not restrict the repository or owner", true, false},
	{"name: t\nissuer: gitlab\nallow: {ref: main}\n" JWT, "warning: policy 't' does not restrict the project", true, false},
	{"name: t\nissuer: other\nallow: {r: x}\ndeny: {actor: \"*\"}\n" JWT, "t.yaml:4:8: warning: deny condition on 'actor' matches any value", true, false},
};

/* Lints that must stay quiet on a good policy. */
static const char *const quiet_policies[] = {
	"name: t\nissuer: github\nallow: {repository: acme/web, repository_id: \"1\", repository_owner: acme,\n"
	"  repository_owner_id: \"2\", ref: \"refs/heads/*\", environment: {regex: \"prod(-eu)?\"}}\n" JWT,
	"name: t\nissuer: github\nallow: {repository: acme/web, repository_owner_id: \"5000\"}\n" JWT,
	"name: t\nissuer: gitlab\nallow: {project_path: g/p, project_id: \"20\", ref: main, ref_protected: \"true\"}\n" JWT,
};

static void test_load_errors(void)
{
	for (size_t i = 0; i < sizeof(load_cases) / sizeof(load_cases[0]); i++) {
		const struct load_case *lc = &load_cases[i];
		struct diag *d = diag_new();
		struct broker_policy_set *set = NULL;
		enum broker_err r = policy_set_load_buffer(&cfg, "t.yaml", lc->text, strlen(lc->text), lc->is_json, d, &set);
		bool ok = r == BROKER_OK;

		CHECK(ok == lc->ok && (ok ? set != NULL : r == BROKER_ERR_CONFIG), "load case %zu: %s -> %s", i,
		      lc->diag ? lc->diag : "(ok)", broker_strerror(r));
		if (lc->diag)
			CHECK(diag_has(d, lc->diag), "load case %zu: no diagnostic '%s'", i, lc->diag);
		if ((ok != lc->ok) || (lc->diag && !diag_has(d, lc->diag)))
			dump_diag(d);
		policy_set_free(set);
		diag_free(d);
	}
	for (size_t i = 0; i < sizeof(quiet_policies) / sizeof(quiet_policies[0]); i++) {
		struct diag *d = diag_new();
		struct broker_policy_set *set = NULL;

		CHECK(policy_set_load_buffer(&cfg, "q.yaml", quiet_policies[i], strlen(quiet_policies[i]), false, d, &set) ==
				      BROKER_OK &&
			      diag_count(d) == 0,
		      "quiet policy %zu has diagnostics", i);
		if (diag_count(d))
			dump_diag(d);
		policy_set_free(set);
		diag_free(d);
	}
}

/* Every error of a file in one run, not just the first. */
static void test_all_errors(void)
{
	static const char text[] = "name: t\nissuer: nope\nallow: {r: {regex: \"(\"}}\nbogus: 1\n"
				   "credential: {type: jwt, audience: x, ttl: 0, claims: {jti: x}}\n";
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;

	CHECK(policy_set_load_buffer(&cfg, "m.yaml", text, strlen(text), false, d, &set) == BROKER_ERR_CONFIG, "refused");
	CHECK(set == NULL, "no set on error");
	CHECK(diag_errors(d) == 5, "5 errors, got %zu", diag_errors(d));
	CHECK(diag_has(d, "m.yaml:2:9:") && diag_has(d, "m.yaml:3:20:") && diag_has(d, "m.yaml:4:1:") &&
		      diag_has(d, "m.yaml:5:43:") && diag_has(d, "m.yaml:5:55:"),
	      "positions");
	if (diag_errors(d) != 5)
		dump_diag(d);
	diag_free(d);
}

/* Issuer deny errors point into the config; aws needs an STS endpoint. */
static void test_config_dependent(void)
{
	static const char bad_deny[] = "actor: {regex: \"[\"}\n";
	static const char pol[] = HDR "allow: {r: x}\n" AWS;
	struct broker_config c2 = cfg;
	struct broker_issuer_config iss2[3];
	struct doc_file *f = NULL;
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;

	memcpy(iss2, issuers, sizeof(iss2));
	c2.issuers = iss2;
	CHECK(doc_load_buffer("cfg.yaml", bad_deny, strlen(bad_deny), false, d, &f) == BROKER_OK, "doc");
	iss2[0].deny = f->docs[0];
	iss2[0].file = "cfg.yaml";
	CHECK(policy_set_load_buffer(&c2, "p.yaml", HDR "allow: {r: x}\n" JWT, strlen(HDR "allow: {r: x}\n" JWT), false,
				     d, &set) == BROKER_ERR_CONFIG,
	      "bad issuer deny refuses the set");
	CHECK(diag_has(d, "cfg.yaml:1:16: condition on 'actor': bad regex"), "issuer deny position");
	diag_free(d);
	doc_file_free(f);

	d = diag_new();
	c2 = cfg;
	c2.aws_sts_endpoint = NULL;
	CHECK(policy_set_load_buffer(&c2, "p.yaml", pol, strlen(pol), false, d, &set) == BROKER_ERR_CONFIG, "aws w/o sts");
	CHECK(diag_has(d, "p.yaml:5:9: aws credentials need an 'aws' section (with its region) in the config"), "sts position");
	diag_free(d);

	d = diag_new();
	c2 = cfg;
	c2.max_ttl = 600;
	CHECK(policy_set_load_buffer(&c2, "p.yaml", pol, strlen(pol), false, d, &set) == BROKER_ERR_CONFIG,
	      "aws default ttl above max_ttl");
	CHECK(diag_has(d, "default aws ttl"), "default ttl message");
	diag_free(d);

	d = diag_new();
	c2.max_ttl = 120; /* jwt default (300) is capped, not an error */
	CHECK(policy_set_load_buffer(&c2, "p.yaml", HDR "allow: {r: x}\n" JWT, strlen(HDR "allow: {r: x}\n" JWT), false,
				     d, &set) == BROKER_OK,
	      "jwt default ttl capped");
	CHECK(set && policy_ttl(policy_set_find(set, "t")) == 120, "capped ttl");
	policy_set_free(set);
	diag_free(d);
}

/* ---- templates and rendering ----------------------------------------- */

static void test_render_jwt(void)
{
	static const char text[] =
		"name: t\nissuer: other\nallow: {r: x}\n"
		"credential:\n  type: jwt\n  audience: https://deploy\n  ttl: 90s\n"
		"  subject: \"repo:${repository}:env:${environment}:$$\"\n"
		"  claims: {scope: deploy, repo: \"${repository}\", n: \"${run_number}\", static: 5, list: [a, 1], "
		"obj: {k: v}, flag: true}\n"
		"---\nname: nosub\nissuer: other\nallow: {r: x}\ncredential: {type: jwt, audience: a}\n";
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	json_t *claims = claims_from("{\"r\": \"x\", \"repository\": \"acme/web\", \"environment\": \"prod\", \"run_number\": 42}");
	json_t *missing = claims_from("{\"r\": \"x\", \"repository\": \"acme/web\", \"run_number\": 42}");
	json_t *wrongtype = claims_from("{\"r\": \"x\", \"repository\": [\"acme/web\"], \"environment\": \"prod\", \"run_number\": 1}");
	json_t *real = claims_from("{\"r\": \"x\", \"repository\": \"a\", \"environment\": \"prod\", \"run_number\": 4.5}");
	json_t *nul = claims_from("{\"r\": \"x\", \"repository\": \"a\\u0000b\", \"environment\": \"prod\", \"run_number\": 4}");
	json_t *boolean = claims_from("{\"r\": \"x\", \"repository\": \"a\", \"environment\": \"prod\", \"run_number\": true}");
	struct policy_jwt_render jr = {0};
	struct policy_result why;
	const struct broker_policy *p;
	char *dump;

	CHECK(policy_set_load_buffer(&cfg, "j.yaml", text, strlen(text), false, d, &set) == BROKER_OK, "load");
	if (!set) {
		dump_diag(d);
		goto out;
	}
	p = policy_set_find(set, "t");
	CHECK(p && policy_cred_type(p) == BROKER_CRED_JWT && policy_ttl(p) == 90 &&
		      strcmp(policy_jwt_audience(p), "https://deploy") == 0 && strcmp(policy_issuer(p), "other") == 0,
	      "accessors");
	CHECK(policy_render_jwt(p, claims, &jr, &why) == BROKER_OK, "render");
	CHECK(jr.subject && strcmp(jr.subject, "repo:acme/web:env:prod:$") == 0, "subject %s", jr.subject);
	dump = json_dumps(jr.claims, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK(dump && strcmp(dump, "{\"flag\":true,\"list\":[\"a\",1],\"n\":\"42\",\"obj\":{\"k\":\"v\"},\"repo\":\"acme/web\","
				   "\"scope\":\"deploy\",\"static\":5}") == 0,
	      "claims %s", dump);
	free(dump);
	policy_jwt_render_clear(&jr);

	CHECK(policy_render_jwt(p, missing, &jr, &why) == BROKER_ERR_DENIED, "missing claim denies");
	CHECK(strcmp(why.audit_reason, "template claim 'environment' missing") == 0, "audit %s", why.audit_reason);
	CHECK(strcmp(why.client_reason, "claim 'environment' required by the credential template is missing") == 0,
	      "client %s", why.client_reason);
	CHECK(policy_render_jwt(p, wrongtype, &jr, &why) == BROKER_ERR_DENIED &&
		      strstr(why.audit_reason, "template claim 'repository' missing"),
	      "array claim denies: %s", why.audit_reason);
	/* a number is a number: a real renders as the JSON text conditions compare */
	CHECK(policy_render_jwt(p, real, &jr, &why) == BROKER_OK, "real claim renders: %s", why.audit_reason);
	dump = json_dumps(jr.claims, JSON_COMPACT | JSON_SORT_KEYS);
	CHECK(dump && strstr(dump, "\"n\":\"4.5\""), "real rendered %s", dump);
	free(dump);
	policy_jwt_render_clear(&jr);
	CHECK(policy_render_jwt(p, boolean, &jr, &why) == BROKER_ERR_DENIED &&
		      strstr(why.audit_reason, "template claim 'run_number' missing (not a string or number)"),
	      "boolean claim denies: %s", why.audit_reason);
	CHECK(strcmp(why.client_reason, "claim 'run_number' required by the credential template is not a string or "
					"number") == 0,
	      "a present claim is not called missing: %s", why.client_reason);
	CHECK(policy_render_jwt(p, nul, &jr, &why) == BROKER_ERR_DENIED, "NUL in a template claim denies");

	p = policy_set_find(set, "nosub");
	CHECK(p && policy_ttl(p) == 300, "default ttl 5m");
	CHECK(p && policy_render_jwt(p, claims, &jr, &why) == BROKER_OK && jr.subject == NULL &&
		      json_object_size(jr.claims) == 0,
	      "no subject template: CI token's sub");
	policy_jwt_render_clear(&jr);
	CHECK(policy_set_find(set, "nope") == NULL && policy_set_find(set, "") == NULL, "unknown names");
out:
	json_decref(claims);
	json_decref(missing);
	json_decref(wrongtype);
	json_decref(real);
	json_decref(boolean);
	json_decref(nul);
	policy_set_free(set);
	diag_free(d);
}

static void test_render_aws(void)
{
	static const char text[] =
		"name: a\nissuer: other\nallow: {r: x}\n" AWS "  ttl: 1h\n"
		"  session_name: \"gh-${ref}\"\n  source_identity: \"${actor}\"\n"
		"  session_tags: {repository: \"${repository}\", note: \"a[b]c\"}\n"
		"  session_policy: {Version: \"2012-10-17\", Statement: [{Effect: Allow, Action: \"s3:GetObject\", "
		"Resource: \"*\"}]}\n"
		"---\nname: d\nissuer: other\nallow: {r: x}\n" AWS
		"---\nname: s\nissuer: other\nallow: {r: x}\n" AWS "  session_name: \"${x}\"\n";
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	json_t *claims = claims_from("{\"r\": \"x\", \"ref\": \"refs/heads/main\", \"actor\": \"dependabot[bot]\", "
				     "\"repository\": \"acme/web\", \"jti\": \"954e5dda-a50f\", \"x\": \"\\u00e9\"}");
	json_t *longref = claims_from("{\"r\": \"x\", \"ref\": \"refs/heads/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
				      "\"actor\": \"bob\", \"repository\": \"r\"}");
	struct policy_aws_render ar = {0};
	struct policy_result why;
	const struct broker_policy *p;
	char *dump;

	CHECK(policy_set_load_buffer(&cfg, "a.yaml", text, strlen(text), false, d, &set) == BROKER_OK, "load");
	if (!set) {
		dump_diag(d);
		goto out;
	}
	p = policy_set_find(set, "a");
	CHECK(p && policy_cred_type(p) == BROKER_CRED_AWS && policy_ttl(p) == 3600 && policy_jwt_audience(p) == NULL,
	      "aws accessors");
	CHECK(policy_render_aws(p, claims, &ar, &why) == BROKER_OK, "render aws");
	CHECK(ar.role_arn && strcmp(ar.role_arn, "arn:aws:iam::123456789012:role/deploy") == 0, "role");
	CHECK(ar.session_name && strcmp(ar.session_name, "gh-refs-heads-main") == 0, "session name %s", ar.session_name);
	CHECK(ar.source_identity && strcmp(ar.source_identity, "dependabot-bot-") == 0, "source identity %s",
	      ar.source_identity);
	dump = ar.session_tags ? json_dumps(ar.session_tags, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	CHECK(dump && strcmp(dump, "{\"note\":\"a-b-c\",\"repository\":\"acme/web\"}") == 0, "tags %s", dump);
	free(dump);
	CHECK(ar.session_policy && strcmp(ar.session_policy, "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":"
							      "\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"*\"}]}") == 0,
	      "session policy %s", ar.session_policy);
	policy_aws_render_clear(&ar);

	CHECK(policy_render_aws(p, longref, &ar, &why) == BROKER_OK && strlen(ar.session_name) == 64, "64 chars max");
	policy_aws_render_clear(&ar);

	p = policy_set_find(set, "d");
	CHECK(p && policy_ttl(p) == 900, "default aws ttl");
	CHECK(p && policy_render_aws(p, claims, &ar, &why) == BROKER_OK && strcmp(ar.session_name, "cibroker-954e5dda-a50f") == 0 &&
		      ar.source_identity == NULL && ar.session_tags == NULL && ar.session_policy == NULL,
	      "default session name %s", ar.session_name ? ar.session_name : "(null)");
	policy_aws_render_clear(&ar);
	CHECK(p && policy_render_aws(p, longref, &ar, &why) == BROKER_ERR_DENIED &&
		      strcmp(why.audit_reason, "template claim 'jti' missing") == 0,
	      "default session name needs jti");

	p = policy_set_find(set, "s");
	CHECK(p && policy_render_aws(p, claims, &ar, &why) == BROKER_ERR_DENIED && strstr(why.audit_reason, "fewer than 2"),
	      "1-character session name refused");
out:
	json_decref(claims);
	json_decref(longref);
	policy_set_free(set);
	diag_free(d);
}

/* ---- explain, lookup at scale ---------------------------------------- */

static void collect(void *ctx, const char *line)
{
	char *buf = ctx;

	strncat(buf, line, 4095 - strlen(buf));
	strncat(buf, "\n", 4095 - strlen(buf));
}

static void test_explain(void)
{
	static const char text[] = "name: t\nissuer: github\nallow: {repository_id: \"1\", ref: refs/heads/main}\n"
				   "deny: {actor: mallory}\n" JWT;
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	json_t *claims = claims_from("{\"repository_id\": \"1\", \"ref\": \"refs/heads/dev\", \"actor\": \"alice\"}");
	char buf[4096] = "";

	CHECK(policy_set_load_buffer(&cfg, "e.yaml", text, strlen(text), false, d, &set) == BROKER_OK, "load");
	if (set)
		policy_explain(set, policy_set_find(set, "t"), claims, collect, buf);
	CHECK(strstr(buf, "issuer-deny actor = \"alice\": not held") != NULL, "issuer deny line:\n%s", buf);
	CHECK(strstr(buf, "deny        actor = \"alice\": not held") != NULL, "deny line");
	CHECK(strstr(buf, "allow       repository_id = \"1\": held") != NULL, "held line");
	CHECK(strstr(buf, "allow       ref = \"refs/heads/dev\": not held -> deny (want \"refs/heads/main\") [e.yaml:3:29]"),
	      "failing line:\n%s", buf);
	json_decref(claims);
	policy_set_free(set);
	diag_free(d);
}

static void test_many(void)
{
	size_t n = 2000, cap = n * 120, o = 0;
	char *buf = malloc(cap);
	struct diag *d = diag_new();
	struct broker_policy_set *set = NULL;
	bool all = true;

	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(buf + o, cap - o, "- {name: p%zu, issuer: other, allow: {r: x%zu}, "
							"credential: {type: jwt, audience: a}}\n",
				      i, i);
	CHECK(policy_set_load_buffer(&cfg, "many.yaml", buf, o, false, d, &set) == BROKER_OK, "load many");
	CHECK(policy_set_count(set) == n, "count %zu", policy_set_count(set));
	for (size_t i = 0; i < n && set; i++) {
		char name[32];
		const struct broker_policy *p;

		snprintf(name, sizeof(name), "p%zu", i);
		p = policy_set_find(set, name);
		all &= p && strcmp(policy_name(p), name) == 0 && policy_set_at(set, i) == p;
	}
	CHECK(all, "every policy found by name");
	CHECK(policy_set_find(set, "p2000") == NULL && policy_set_at(set, n) == NULL, "past the end");
	policy_set_free(set);
	policy_set_free(NULL);
	diag_free(d);
	free(buf);
}

int main(void)
{
	setup();
	test_matching();
	test_reasons();
	test_load_errors();
	test_all_errors();
	test_config_dependent();
	test_render_jwt();
	test_render_aws();
	test_explain();
	test_many();
	doc_file_free(issuer_deny_doc);
	return check_done();
}
