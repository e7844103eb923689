/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Internals of the policy module, shared by policy*.c only. The public
 * surface is include/cibroker/policy.h; nothing here leaves the module. */
#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cibroker/diag.h"
#include "cibroker/doc.h"
#include "cibroker/policy.h"

/* Hard limits: a policy repository is reviewed by people, so anything beyond
 * these is a mistake or an attack on the loader, not a real policy. */
#define POLICY_FILE_MAX (1024 * 1024)
#define POLICY_NAME_MAX 128
#define POLICY_CLAIM_NAME_MAX 128
#define POLICY_CONDITIONS_MAX 64    /* per allow/deny map */
#define POLICY_LIST_MAX 256         /* elements of one any-of list */
#define POLICY_PATTERN_MAX 1024     /* bytes of one pattern as written */
#define POLICY_TEMPLATE_MAX 1024    /* bytes of one template as written */
#define POLICY_RENDER_MAX 4096      /* bytes of one rendered template */
#define POLICY_JWT_CLAIMS_MAX 64
#define POLICY_AWS_TAGS_MAX 50
#define POLICY_AWS_TAG_KEY_MAX 128
#define POLICY_AWS_TAG_VALUE_MAX 256
#define POLICY_AWS_SESSION_POLICY_MAX 2048
#define POLICY_AWS_SESSION_NAME_MAX 64
#define POLICY_AWS_TTL_MIN 900
#define POLICY_AWS_TTL_MAX 43200
#define POLICY_DEFAULT_JWT_TTL 300
#define POLICY_DEFAULT_AWS_TTL 900
#define POLICY_DEFAULT_SESSION_NAME "cibroker-${jti}"

enum pattern_kind { PATTERN_EXACT, PATTERN_GLOB, PATTERN_REGEX };

/* Glob tokens: 0..255 are literal bytes, these two are the wildcards. */
#define GLOB_STAR 256
#define GLOB_QMARK 257

/* Everything below that a compiled policy points at (structs, arrays,
 * strings) lives in the set's arena (policy.c) and is never freed on its
 * own: a policy is about twenty small immutable pieces, and a malloc each
 * cost more in headers, rounding and fragmentation than the pieces
 * themselves. Only regexes (glibc's) and static jwt claim values (jansson's)
 * are owned elsewhere, and are released with the set. */
struct pattern {
	const char *src;        /* as written, for diagnostics and explain */
	union {
		const unsigned char *bytes; /* exact: the unescaped value (often src itself) */
		const uint16_t *tok;        /* glob: compiled tokens */
		const regex_t *re;          /* regex: "^(" src ")$", shared in the set */
	};
	uint32_t len;           /* exact: bytes; glob: tokens */
	int line, col;
	uint8_t kind;           /* enum pattern_kind */
};

struct condition {
	const char *claim;      /* interned */
	struct pattern *pats;
	const char *file;       /* interned in the set */
	int line, col;          /* of the claim key */
	uint16_t n_pats;        /* <= POLICY_LIST_MAX */
	bool list;              /* written as a list (only changes the wording) */
};

struct condset {
	struct condition *v;
	size_t n;
};

struct tmpl_seg {
	const char *text;       /* literal bytes or claim name (interned) */
	size_t len;
	bool is_claim;
};

struct tmpl {
	struct tmpl_seg *segs;
	size_t n;
	const char *src;
	int line, col;
};

struct jwt_claim {
	const char *name;
	struct tmpl *tmpl;      /* string values are templates ... */
	json_t *value;          /* ... anything else is copied as is (owned) */
};

struct aws_tag {
	const char *key;
	struct tmpl *tmpl;
};

struct broker_policy {
	const char *name;
	const char *description;
	const char *issuer;     /* config issuer name */
	size_t issuer_idx;      /* index into cfg->issuers / set->issuer_deny */
	const char *file;       /* interned in the set */
	int line, col;          /* of the name */
	int allow_line, allow_col;
	struct condset allow, deny;
	int64_t ttl;
	enum broker_cred_type type;
	bool broken;            /* had load errors: lints skip it */
	/* jwt */
	const char *audience;
	struct tmpl *subject;
	struct jwt_claim *claims;
	size_t n_claims;
	/* aws */
	const char *role_arn;
	struct tmpl *session_name;
	struct tmpl *source_identity;
	struct aws_tag *tags;
	size_t n_tags;
	const char *session_policy; /* compact JSON text */
};

/* A compiled regex, shared by every pattern of the set with the same
 * source: glibc's compiled form takes several KiB, and policy repositories
 * repeat their regexes (environment and tag patterns) across policies. */
struct policy_regex {
	struct policy_regex *next; /* the set's list, for regfree */
	regex_t re;
	char src[];                /* "^(" source ")$", as compiled */
};

/* Byte string -> pointer, open addressing. Keys are not copied: they must
 * outlive the table. Used while loading only. */
struct str_table_slot {
	const char *key;
	size_t len;
	void *val;
};

struct str_table {
	struct str_table_slot *slots;
	size_t cap, n;
};

struct str_set {
	const char **slots;
	size_t cap, n;
};

struct issuer_deny {
	const char *issuer_name;
	struct condset deny;
};

struct arena_chunk;

struct broker_policy_set {
	struct broker_policy **v;
	size_t n, cap;
	struct broker_policy **table; /* open addressing, power-of-two size */
	size_t table_cap;
	struct issuer_deny *issuers;
	size_t n_issuers;
	struct arena_chunk *arena;
	const char *last_file;  /* the file name interned last */
	struct policy_regex *regexes;
	struct str_table regex_by_src; /* load time only */
	struct str_set strings;        /* load time only: interned strings */
};

/* policy.c: the set's arena. set_alloc returns zeroed, pointer-aligned
 * memory; set_intern a NUL-terminated copy of s, shared with every equal
 * string interned before (while loading); set_strdup an unshared copy (for
 * strings that are unique anyway, such as policy names). All NULL on ENOMEM. */
void *set_alloc(struct broker_policy_set *set, size_t size);
const char *set_intern(struct broker_policy_set *set, const char *s, size_t len);
const char *set_strdup(struct broker_policy_set *set, const char *s, size_t len);
/* Done loading: drop the tables only loading needs. */
void set_load_done(struct broker_policy_set *set);
/* Frees the arena, the regexes and the tables (policy_set_free). */
void set_release_memory(struct broker_policy_set *set);

/* policy.c: the load-time string table. */
void *str_table_get(const struct str_table *t, const char *key, size_t len);
enum broker_err str_table_put(struct str_table *t, const char *key, size_t len, void *val);
void str_table_clear(struct str_table *t);

/* policy-match.c: patterns and conditions. */
enum broker_err condset_compile(struct broker_policy_set *set, const struct doc_node *map, const char *file,
				const char *what, struct diag *d, struct condset *ret);
bool pattern_match(const struct pattern *p, const char *s, size_t len);
bool pattern_is_match_all(const struct pattern *p);
bool condition_is_match_all(const struct condition *c);
/* Does the condition hold for these claims? seen/seen_len receive a display of
 * the value looked at (may be NULL). */
bool condition_holds(const struct condition *c, const json_t *claims, char *seen, size_t seen_len);
/* First condition of cs that does not hold (allow) or holds (deny); NULL if none. */
const struct condition *condset_first_failing(const struct condset *cs, const json_t *claims, bool deny, char *seen,
					      size_t seen_len);
/* Display of the expected value(s) for audit reasons and explain: "a" or
 * "any of [a, {regex: b}]", cut with "..." to fit. */
#define POLICY_WANT_MAX 512
void condition_want(const struct condition *c, char out[static POLICY_WANT_MAX]);
/* Scalar claim -> its comparison text. buf is scratch for numbers/booleans. */
bool claim_scalar_text(const json_t *v, char *buf, size_t buflen, const char **ret, size_t *ret_len);
/* Quoted, escaped, truncated display of bytes (for audit reasons). */
void display_bytes(const char *s, size_t len, char *out, size_t outlen);

/* policy-template.c */
enum broker_err tmpl_compile(struct broker_policy_set *set, const struct doc_node *n, const char *file, struct diag *d,
			     struct tmpl **ret);
size_t tmpl_literal_len(const struct tmpl *t);
bool tmpl_has_claims(const struct tmpl *t);
enum broker_err tmpl_render(const struct tmpl *t, const json_t *claims, char **ret, size_t *ret_len,
			    struct policy_result *why);
/* Keep [A-Za-z0-9+=,.@-], one '-' per other character, at most max bytes. */
void aws_sanitise_name(const char *in, size_t len, char *out, size_t max);

/* policy-lint.c: review the loaded policies; errors and warnings to d. */
void policy_lint(const struct broker_config *cfg, const struct broker_policy_set *set, struct diag *d);

/* policy.c: add to the set; *ret_existing is the earlier policy of the
 * same name, if any (p is then kept for freeing but not findable). */
enum broker_err policy_set_add(struct broker_policy_set *set, struct broker_policy *p,
			       const struct broker_policy **ret_existing);

/* policy-load.c: the state of loading one file, and typed key tables. */
struct load_ctx {
	const struct broker_config *cfg;
	struct broker_policy_set *set;
	struct diag *d;
	const char *file;
	struct broker_policy *p;
	bool seen_type;
};

typedef enum broker_err (*key_handler)(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val);

struct key_table {
	const char *key;
	key_handler fn;
};

/* Non-empty string scalar without NUL bytes, interned in the set to *ret. */
enum broker_err load_get_string(struct load_ctx *ctx, const struct doc_node *n, const char *what, const char **ret);
/* Every key of map through table; unknown keys are errors naming the known ones. */
enum broker_err load_dispatch(struct load_ctx *ctx, const struct doc_node *map, const struct key_table *table,
			      size_t n_table, const char *where);
/* policy-credential.c: the `credential` mapping of ctx->p. */
enum broker_err load_credential(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val);

const char *policy_set_intern_file(struct broker_policy_set *set, const char *file);
/* Releases what p owns outside the arena (static jwt claim values). */
void policy_release(struct broker_policy *p);
