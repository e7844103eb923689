/* SPDX-License-Identifier: Apache-2.0 */
/* The policy set as the exchange sees it: O(1) lookup by name, evaluation
 * (issuer deny, policy deny, allow: in that order, first failure wins), and
 * rendering of the credential parameters. Loading is in policy-load.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/util.h"
#include "policy-int.h"

/* ---- lookup ---------------------------------------------------------- */

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t bytes_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static struct str_table_slot *str_table_slot(struct str_table_slot *slots, size_t cap, const char *key, size_t len)
{
	size_t i = (size_t)bytes_hash(key, len) & (cap - 1);

	while (slots[i].key && !(slots[i].len == len && memcmp(slots[i].key, key, len) == 0))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

void *str_table_get(const struct str_table *t, const char *key, size_t len)
{
	if (!t->cap)
		return NULL;
	return str_table_slot(t->slots, t->cap, key, len)->val;
}

enum broker_err str_table_put(struct str_table *t, const char *key, size_t len, void *val)
{
	struct str_table_slot *slot;

	/* load factor at most 1/2 */
	if ((t->n + 1) * 2 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		struct str_table_slot *v = calloc(cap, sizeof(*v));

		if (!v)
			return BROKER_ERR_NOMEM;
		for (size_t i = 0; i < t->cap; i++)
			if (t->slots[i].key)
				*str_table_slot(v, cap, t->slots[i].key, t->slots[i].len) = t->slots[i];
		free(t->slots);
		t->slots = v;
		t->cap = cap;
	}
	slot = str_table_slot(t->slots, t->cap, key, len);
	if (!slot->key)
		t->n++;
	*slot = (struct str_table_slot){.key = key, .len = len, .val = val};
	return BROKER_OK;
}

void str_table_clear(struct str_table *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ---- the set's memory ------------------------------------------------ */

/* Chunks stay under glibc's mmap threshold (128 KiB), so they come from the
 * heap like the rest; a piece larger than a quarter chunk gets its own. */
#define ARENA_CHUNK (64 * 1024)
#define ARENA_ALIGN 8

struct arena_chunk {
	struct arena_chunk *next;
	size_t size, used;
	unsigned char data[];
};

_Static_assert(offsetof(struct arena_chunk, data) % ARENA_ALIGN == 0, "arena data alignment");
_Static_assert(_Alignof(int64_t) <= ARENA_ALIGN && _Alignof(void *) <= ARENA_ALIGN, "arena alignment");

void *set_alloc(struct broker_policy_set *set, size_t size)
{
	struct arena_chunk *c = set->arena;
	size_t need;
	void *p;

	if (size > POLICY_FILE_MAX * 4)
		return NULL; /* nothing compiled from a bounded file is this big */
	need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (!c || c->size - c->used < need) {
		bool own = need > ARENA_CHUNK / 4;
		size_t cap = own ? need : ARENA_CHUNK - sizeof(*c);

		if (!(c = malloc(sizeof(*c) + cap)))
			return NULL;
		c->size = cap;
		c->used = 0;
		if (own && set->arena) {
			/* behind the current chunk, whose free space stays in use */
			c->next = set->arena->next;
			set->arena->next = c;
		} else {
			c->next = set->arena;
			set->arena = c;
		}
	}
	p = c->data + c->used;
	c->used += need;
	memset(p, 0, size);
	return p;
}

const char *set_strdup(struct broker_policy_set *set, const char *s, size_t len)
{
	char *copy = set_alloc(set, len + 1);

	if (!copy)
		return NULL;
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

/* The interning table holds only pointers (the strings are NUL-terminated
 * and NUL-free), at most 3/4 full: it is the largest thing loading
 * allocates besides the set itself, and it is dropped after loading. */
static const char **str_set_slot(const char **slots, size_t cap, const char *s, size_t len)
{
	size_t i = (size_t)bytes_hash(s, len) & (cap - 1);

	while (slots[i] && !(memcmp(slots[i], s, len) == 0 && slots[i][len] == '\0'))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

/* Claim names, issuer names, common values ("refs/heads/main", "push") and
 * template pieces repeat across a policy repository: one copy each. */
const char *set_intern(struct broker_policy_set *set, const char *s, size_t len)
{
	struct str_set *t = &set->strings;
	const char **slot, *copy;

	if (memchr(s, '\0', len))
		return set_strdup(set, s, len); /* not internable; callers reject these anyway */
	if ((t->n + 1) * 4 > t->cap * 3) {
		size_t cap = t->cap ? t->cap * 2 : 1024;
		const char **v = calloc(cap, sizeof(*v));

		if (!v)
			return NULL;
		for (size_t i = 0; i < t->cap; i++)
			if (t->slots[i])
				*str_set_slot(v, cap, t->slots[i], strlen(t->slots[i])) = t->slots[i];
		free(t->slots);
		t->slots = v;
		t->cap = cap;
	}
	slot = str_set_slot(t->slots, t->cap, s, len);
	if (*slot)
		return *slot;
	if (!(copy = set_strdup(set, s, len)))
		return NULL;
	*slot = copy;
	t->n++;
	return copy;
}

void set_load_done(struct broker_policy_set *set)
{
	free(set->strings.slots);
	memset(&set->strings, 0, sizeof(set->strings));
	str_table_clear(&set->regex_by_src);
}

void set_release_memory(struct broker_policy_set *set)
{
	while (set->regexes) {
		struct policy_regex *next = set->regexes->next;

		regfree(&set->regexes->re);
		free(set->regexes);
		set->regexes = next;
	}
	while (set->arena) {
		struct arena_chunk *next = set->arena->next;

		free(set->arena);
		set->arena = next;
	}
	set_load_done(set);
}

static struct broker_policy **table_slot(struct broker_policy **table, size_t cap, const char *name)
{
	size_t i = (size_t)name_hash(name) & (cap - 1);

	while (table[i] && strcmp(table[i]->name, name) != 0)
		i = (i + 1) & (cap - 1);
	return &table[i];
}

/* Adds p (which has a name) to the set. If the name is taken, *ret_existing
 * gets the first policy of that name and p is still kept (so it is freed
 * with the set) but not findable. */
enum broker_err policy_set_add(struct broker_policy_set *set, struct broker_policy *p,
			       const struct broker_policy **ret_existing)
{
	struct broker_policy **slot;

	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 64;
		struct broker_policy **v = realloc(set->v, cap * sizeof(*v));

		if (!v)
			return BROKER_ERR_NOMEM;
		set->v = v;
		set->cap = cap;
	}
	/* keep the load factor at or below 1/2 */
	if ((set->n + 1) * 2 > set->table_cap) {
		size_t cap = set->table_cap ? set->table_cap * 2 : 128;
		struct broker_policy **t = calloc(cap, sizeof(*t));

		if (!t)
			return BROKER_ERR_NOMEM;
		for (size_t i = 0; i < set->table_cap; i++)
			if (set->table[i])
				*table_slot(t, cap, set->table[i]->name) = set->table[i];
		free(set->table);
		set->table = t;
		set->table_cap = cap;
	}
	set->v[set->n++] = p;
	slot = table_slot(set->table, set->table_cap, p->name);
	if (*slot) {
		*ret_existing = *slot;
		return BROKER_OK;
	}
	*slot = p;
	*ret_existing = NULL;
	return BROKER_OK;
}

const struct broker_policy *policy_set_find(const struct broker_policy_set *set, const char *name)
{
	if (!set || !name || !set->table_cap)
		return NULL;
	return *table_slot(set->table, set->table_cap, name);
}

size_t policy_set_count(const struct broker_policy_set *set)
{
	return set ? set->n : 0;
}

const struct broker_policy *policy_set_at(const struct broker_policy_set *set, size_t i)
{
	return set && i < set->n ? set->v[i] : NULL;
}

const char *policy_name(const struct broker_policy *p)
{
	return p->name;
}

const char *policy_description(const struct broker_policy *p)
{
	return p->description;
}

const char *policy_issuer(const struct broker_policy *p)
{
	return p->issuer;
}

enum broker_cred_type policy_cred_type(const struct broker_policy *p)
{
	return p->type;
}

int64_t policy_ttl(const struct broker_policy *p)
{
	return p->ttl;
}

const char *policy_jwt_audience(const struct broker_policy *p)
{
	return p->type == BROKER_CRED_JWT ? p->audience : NULL;
}

void policy_location(const struct broker_policy *p, const char **ret_file, int *ret_line, int *ret_col)
{
	*ret_file = p->file;
	*ret_line = p->line;
	*ret_col = p->col;
}

/* ---- evaluation ------------------------------------------------------ */

/* Reasons are cut to fit their buffers; the audit reason leads with what
 * matters (which condition, where) so a cut tail loses the least. */
static void set_reason(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_reason(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static const struct condset *issuer_deny_of(const struct broker_policy_set *set, const struct broker_policy *p)
{
	return p->issuer_idx < set->n_issuers ? &set->issuers[p->issuer_idx].deny : NULL;
}

enum broker_err policy_evaluate(const struct broker_policy_set *set, const struct broker_policy *p,
				const json_t *claims, struct policy_result *ret)
{
	const struct condset *idn;
	const struct condition *c;
	char seen[256], want[POLICY_WANT_MAX];

	memset(ret, 0, sizeof(*ret));
	if (!set || !p || !json_is_object(claims)) {
		snprintf(ret->client_reason, sizeof(ret->client_reason), "no claims to evaluate");
		set_reason(ret->audit_reason, sizeof(ret->audit_reason), "policy evaluation without a claims object");
		return BROKER_ERR_DENIED;
	}
	idn = issuer_deny_of(set, p);
	if (idn && (c = condset_first_failing(idn, claims, true, seen, sizeof(seen)))) {
		snprintf(ret->client_reason, sizeof(ret->client_reason), "denied by condition on claim '%.64s'",
			 c->claim);
		condition_want(c, want);
		set_reason(ret->audit_reason, sizeof(ret->audit_reason),
			 "issuer '%.64s' deny condition on claim '%.128s' (%.200s:%d:%d) held: saw %s, matches %.300s",
			 p->issuer, c->claim, c->file, c->line, c->col, seen, want);
		return BROKER_ERR_DENIED;
	}
	if ((c = condset_first_failing(&p->deny, claims, true, seen, sizeof(seen)))) {
		snprintf(ret->client_reason, sizeof(ret->client_reason), "denied by condition on claim '%.64s'",
			 c->claim);
		condition_want(c, want);
		set_reason(ret->audit_reason, sizeof(ret->audit_reason),
			 "policy '%.128s' deny condition on claim '%.128s' (%.200s:%d:%d) held: saw %s, matches %.300s",
			 p->name, c->claim, c->file, c->line, c->col, seen, want);
		return BROKER_ERR_DENIED;
	}
	if ((c = condset_first_failing(&p->allow, claims, false, seen, sizeof(seen)))) {
		snprintf(ret->client_reason, sizeof(ret->client_reason), "claim '%.64s' did not match", c->claim);
		condition_want(c, want);
		set_reason(ret->audit_reason, sizeof(ret->audit_reason),
			 "policy '%.128s' allow condition on claim '%.128s' (%.200s:%d:%d) not met: saw %s, want %.300s",
			 p->name, c->claim, c->file, c->line, c->col, seen, want);
		return BROKER_ERR_DENIED;
	}
	return BROKER_OK;
}

static void explain_set(const struct condset *cs, const char *what, bool deny, const json_t *claims,
			policy_explain_fn fn, void *ctx)
{
	for (size_t i = 0; i < cs->n; i++) {
		const struct condition *c = &cs->v[i];
		char seen[256], want[POLICY_WANT_MAX], line[1400];
		bool held = condition_holds(c, claims, seen, sizeof(seen));

		condition_want(c, want);

		snprintf(line, sizeof(line), "%-11s %s = %s: %s%s (want %.600s) [%s:%d:%d]", what, c->claim, seen,
			 held ? "held" : "not held", deny ? (held ? " -> deny" : "") : (held ? "" : " -> deny"),
			 want, c->file, c->line, c->col);
		fn(ctx, line);
	}
}

void policy_explain(const struct broker_policy_set *set, const struct broker_policy *p, const json_t *claims,
		    policy_explain_fn fn, void *ctx)
{
	const struct condset *idn = set ? issuer_deny_of(set, p) : NULL;

	if (idn)
		explain_set(idn, "issuer-deny", true, claims, fn, ctx);
	explain_set(&p->deny, "deny", true, claims, fn, ctx);
	explain_set(&p->allow, "allow", false, claims, fn, ctx);
}

/* ---- rendering ------------------------------------------------------- */

void policy_jwt_render_clear(struct policy_jwt_render *r)
{
	if (!r)
		return;
	free(r->subject);
	json_decref(r->claims);
	r->subject = NULL;
	r->claims = NULL;
}

enum broker_err policy_render_jwt(const struct broker_policy *p, const json_t *claims, struct policy_jwt_render *ret,
				  struct policy_result *why)
{
	struct policy_jwt_render out = {0};
	enum broker_err r = BROKER_ERR_INVALID;

	if (p->type != BROKER_CRED_JWT)
		goto out;
	if (p->subject && (r = tmpl_render(p->subject, claims, &out.subject, NULL, why)) != BROKER_OK)
		goto out;
	r = BROKER_ERR_NOMEM;
	out.claims = json_object();
	if (!out.claims)
		goto out;
	for (size_t i = 0; i < p->n_claims; i++) {
		const struct jwt_claim *jc = &p->claims[i];
		json_t *v;

		if (jc->tmpl) {
			char *s;
			size_t len;

			if ((r = tmpl_render(jc->tmpl, claims, &s, &len, why)) != BROKER_OK)
				goto out;
			v = json_stringn(s, len);
			free(s);
		} else {
			v = json_deep_copy(jc->value);
		}
		r = BROKER_ERR_NOMEM;
		if (!v || json_object_set_new(out.claims, jc->name, v) != 0)
			goto out;
	}
	*ret = out;
	memset(&out, 0, sizeof(out));
	r = BROKER_OK;
out:
	policy_jwt_render_clear(&out);
	return r;
}

void policy_aws_render_clear(struct policy_aws_render *r)
{
	if (!r)
		return;
	free(r->session_name);
	free(r->source_identity);
	json_decref(r->session_tags);
	free(r->session_policy);
	memset(r, 0, sizeof(*r));
}

static void deny_render(struct policy_result *why, const char *client, const char *audit)
{
	if (!why)
		return;
	snprintf(why->client_reason, sizeof(why->client_reason), "%s", client);
	snprintf(why->audit_reason, sizeof(why->audit_reason), "%s", audit);
}

/* Session tag values: STS allows letters, digits, spaces and _.:/=+-@.
 * Other ASCII becomes '-'; non-ASCII UTF-8 is kept (STS takes Unicode
 * letters); the value is cut at a character boundary. */
static void aws_sanitise_tag(const char *in, size_t len, char *out, size_t max)
{
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)in[i];
		size_t n = 1;

		if (c >= 0x80) {
			while (i + n < len && ((unsigned char)in[i + n] & 0xc0) == 0x80)
				n++;
			if (o + n > max)
				break;
			memcpy(out + o, in + i, n);
		} else {
			if (o + 1 > max)
				break;
			out[o] = ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
				  strchr(" _.:/=+-@", c))
					 ? (char)c
					 : '-';
		}
		o += n;
		i += n;
	}
	out[o] = '\0';
}

enum broker_err policy_render_aws(const struct broker_policy *p, const json_t *claims, struct policy_aws_render *ret,
				  struct policy_result *why)
{
	struct policy_aws_render out = {0};
	enum broker_err r = BROKER_ERR_INVALID;
	char *s = NULL;
	size_t len;

	if (p->type != BROKER_CRED_AWS)
		goto out;
	out.role_arn = p->role_arn;
	if ((r = tmpl_render(p->session_name, claims, &s, &len, why)) != BROKER_OK)
		goto out;
	r = BROKER_ERR_NOMEM;
	if (!(out.session_name = malloc(POLICY_AWS_SESSION_NAME_MAX + 1)))
		goto out;
	aws_sanitise_name(s, len, out.session_name, POLICY_AWS_SESSION_NAME_MAX);
	free(s);
	s = NULL;
	if (strlen(out.session_name) < 2) {
		/* STS wants 2-64 characters; padding would invent a name nobody
		 * chose, so refuse and say so. */
		deny_render(why, "the credential's session name renders to fewer than 2 characters",
			    "aws session_name renders to fewer than 2 characters");
		r = BROKER_ERR_DENIED;
		goto out;
	}
	if (p->source_identity) {
		if ((r = tmpl_render(p->source_identity, claims, &s, &len, why)) != BROKER_OK)
			goto out;
		r = BROKER_ERR_NOMEM;
		if (!(out.source_identity = malloc(POLICY_AWS_SESSION_NAME_MAX + 1)))
			goto out;
		aws_sanitise_name(s, len, out.source_identity, POLICY_AWS_SESSION_NAME_MAX);
		free(s);
		s = NULL;
		if (strlen(out.source_identity) < 2) {
			deny_render(why, "the credential's source identity renders to fewer than 2 characters",
				    "aws source_identity renders to fewer than 2 characters");
			r = BROKER_ERR_DENIED;
			goto out;
		}
	}
	if (p->n_tags) {
		r = BROKER_ERR_NOMEM;
		if (!(out.session_tags = json_object()))
			goto out;
		for (size_t i = 0; i < p->n_tags; i++) {
			char value[POLICY_AWS_TAG_VALUE_MAX * 4 + 1];

			if ((r = tmpl_render(p->tags[i].tmpl, claims, &s, &len, why)) != BROKER_OK)
				goto out;
			aws_sanitise_tag(s, len, value, POLICY_AWS_TAG_VALUE_MAX);
			free(s);
			s = NULL;
			r = BROKER_ERR_NOMEM;
			if (json_object_set_new(out.session_tags, p->tags[i].key, json_string(value)) != 0)
				goto out;
		}
	}
	r = BROKER_ERR_NOMEM;
	if (p->session_policy && !(out.session_policy = strdup(p->session_policy)))
		goto out;
	*ret = out;
	memset(&out, 0, sizeof(out));
	r = BROKER_OK;
out:
	free(s);
	policy_aws_render_clear(&out);
	return r;
}
