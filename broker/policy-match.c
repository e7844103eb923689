/* SPDX-License-Identifier: Apache-2.0 */
/* Conditions: compiling `allow`/`deny` maps into patterns, and matching claim
 * values against them. Everything here works on (pointer, length) pairs: a
 * claim may carry an embedded NUL (jansson represents it), and no comparison
 * may stop at one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/util.h"
#include "policy-int.h"

void display_bytes(const char *s, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outlen < 8) {
		if (outlen)
			out[0] = '\0';
		return;
	}
	out[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t n;

		if (c == '"' || c == '\\') {
			esc[0] = '\\', esc[1] = (char)c, n = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4], esc[5] = hex[c & 15], n = 6;
		} else {
			esc[0] = (char)c, n = 1;
		}
		/* keep room for the closing quote, "..." and the NUL */
		if (o + n + 5 > outlen) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, esc, n);
		o += n;
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* ---- compiling ------------------------------------------------------- */

/* `\*`, `\?` and `\\` are the escapes; a backslash before anything else is
 * itself (so "C:\dir" means what it says). An unescaped `*` or `?` makes the
 * whole value a glob. src is p->src (interned) or the spelling of a
 * boolean; an exact value without escapes is src itself. */
static enum broker_err compile_glob_or_exact(struct broker_policy_set *set, struct pattern *p, const char *s,
					     size_t len)
{
	uint16_t tok[POLICY_PATTERN_MAX + 1];
	unsigned char bytes[POLICY_PATTERN_MAX + 1];
	size_t n = 0;
	bool wild = false;

	if (len > POLICY_PATTERN_MAX)
		return BROKER_ERR_TOOBIG; /* checked by the caller */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\\' && i + 1 < len && (s[i + 1] == '*' || s[i + 1] == '?' || s[i + 1] == '\\')) {
			i++;
			bytes[n] = (unsigned char)s[i];
			tok[n++] = (unsigned char)s[i];
		} else if (c == '*' || c == '?') {
			/* consecutive stars are one star: keeps matching linear-ish */
			if (c == '*' && n > 0 && tok[n - 1] == GLOB_STAR)
				continue;
			bytes[n] = c;
			tok[n++] = c == '*' ? GLOB_STAR : GLOB_QMARK;
			wild = true;
		} else {
			bytes[n] = c;
			tok[n++] = c;
		}
	}
	p->len = (uint32_t)n;
	if (wild) {
		uint16_t *t = set_alloc(set, n * sizeof(*t));

		if (!t)
			return BROKER_ERR_NOMEM;
		memcpy(t, tok, n * sizeof(*t));
		p->kind = PATTERN_GLOB;
		p->tok = t;
		return BROKER_OK;
	}
	p->kind = PATTERN_EXACT;
	p->bytes = (const unsigned char *)set_intern(set, (const char *)bytes, n);
	return p->bytes ? BROKER_OK : BROKER_ERR_NOMEM;
}

/* Cost model of glibc's regcomp, which copies the subtree of a bounded
 * repetition once per count (and of '+' once more): "(a{100}){100}" or
 * "a?++++++..." grows the compiled tree geometrically until the loader runs
 * out of memory. Weights saturate; anything above the budget is refused. */
#define REGEX_WEIGHT_MAX 20000
#define REGEX_WEIGHT_CAP 1000000000u

static unsigned long weight_mul(unsigned long a, unsigned long b)
{
	return a && b > REGEX_WEIGHT_CAP / a ? REGEX_WEIGHT_CAP : a * b;
}

static unsigned long weight_add(unsigned long a, unsigned long b)
{
	return a + b > REGEX_WEIGHT_CAP ? REGEX_WEIGHT_CAP : a + b;
}

/* "{m}", "{m,}", "{m,n}" at s (s[0] == '{'): largest count, length consumed. */
static bool parse_bound(const char *s, size_t len, unsigned long *ret_max, size_t *ret_used)
{
	unsigned long m = 0, n = 0;
	size_t i = 1;
	bool comma = false, have_n = false;

	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
		m = m > 100000 ? m : m * 10 + (unsigned long)(s[i] - '0');
	if (i < len && s[i] == ',') {
		comma = true;
		for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, have_n = true)
			n = n > 100000 ? n : n * 10 + (unsigned long)(s[i] - '0');
	}
	if (i >= len || s[i] != '}' || i == 1)
		return false;
	*ret_max = !comma ? m : have_n ? n : m + 1;
	*ret_used = i + 1;
	return true;
}

/* POSIX ERE has no (?:...), so anchoring is "^(" src ")$". That is only sound
 * if src cannot close our group early: glibc reads an unmatched ')' as a
 * literal, so "a)|(b" would compile to "^(a)|(b)$" and match anything that
 * starts with "a". Refuse any ')' that closes nothing, stacked quantifiers,
 * and patterns whose compiled size would explode (see weights above). */
static const char *regex_shape_problem(const char *s, size_t len)
{
	struct {
		unsigned long sum, last;
	} st[POLICY_PATTERN_MAX + 2];
	int depth = 0;
	bool after_quant = false;

	st[0].sum = st[0].last = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned long atom = 1;
		bool quant = false;

		if (s[i] == '\\') {
			if (++i == len)
				return "trailing backslash (write \\\\ for a literal one)";
		} else if (s[i] == '[') {
			size_t j = i + 1;

			if (j < len && s[j] == '^')
				j++;
			if (j < len && s[j] == ']')
				j++;
			while (j < len && s[j] != ']') {
				if (s[j] == '[' && j + 1 < len && (s[j + 1] == ':' || s[j + 1] == '.' || s[j + 1] == '=')) {
					char close = s[j + 1];

					j += 2;
					while (j + 1 < len && !(s[j] == close && s[j + 1] == ']'))
						j++;
					j += 2;
				} else {
					j++;
				}
			}
			if (j >= len)
				return "unterminated bracket expression";
			i = j;
		} else if (s[i] == '(') {
			depth++;
			st[depth].sum = st[depth].last = 0;
			after_quant = false;
			continue;
		} else if (s[i] == ')') {
			if (depth == 0)
				return "unmatched ')' (write \\) for a literal parenthesis)";
			atom = st[depth].sum ? st[depth].sum : 1;
			depth--;
		} else if (s[i] == '|') {
			st[depth].last = 0;
			after_quant = false;
			continue;
		} else if (s[i] == '*' || s[i] == '?' || s[i] == '+' || s[i] == '{') {
			unsigned long count = 2;
			size_t used = 1;

			if (s[i] == '{' && !parse_bound(s + i, len - i, &count, &used))
				return "bad repetition bound (write \\{ for a literal brace)";
			if (after_quant)
				return "a repetition cannot follow another repetition";
			if (s[i] == '*' || s[i] == '?')
				count = 1;
			/* the atom is copied count times in all: count - 1 more */
			if (count > 1) {
				st[depth].sum = weight_add(st[depth].sum, weight_mul(st[depth].last, count - 1));
				st[depth].last = weight_mul(st[depth].last, count);
			}
			i += used - 1;
			quant = true;
		}
		if (!quant) {
			st[depth].sum = weight_add(st[depth].sum, atom);
			st[depth].last = atom;
		}
		after_quant = quant;
		if (st[depth].sum > REGEX_WEIGHT_MAX)
			return "pattern too complex (nested or large repetition counts)";
	}
	return depth ? "unmatched '('" : NULL;
}

static enum broker_err compile_regex(struct broker_policy_set *set, struct pattern *p, const char *s, size_t len,
				     char *err, size_t errlen)
{
	const char *problem = regex_shape_problem(s, len);
	struct policy_regex *rx;
	int rc;

	if (problem) {
		snprintf(err, errlen, "%s", problem);
		return BROKER_ERR_CONFIG;
	}
	rx = str_table_get(&set->regex_by_src, s, len);
	if (!rx) {
		rx = malloc(sizeof(*rx) + len + 5);
		if (!rx)
			return BROKER_ERR_NOMEM;
		memcpy(rx->src, "^(", 2);
		memcpy(rx->src + 2, s, len);
		memcpy(rx->src + 2 + len, ")$", 3);
		rc = regcomp(&rx->re, rx->src, REG_EXTENDED | REG_NOSUB);
		if (rc != 0) {
			regerror(rc, &rx->re, err, errlen);
			free(rx);
			return BROKER_ERR_CONFIG;
		}
		rx->next = set->regexes;
		set->regexes = rx;
		/* the key is the source inside rx, which lives as long as the set */
		if (str_table_put(&set->regex_by_src, rx->src + 2, len, rx) != BROKER_OK)
			return BROKER_ERR_NOMEM;
	}
	p->re = &rx->re;
	p->kind = PATTERN_REGEX;
	return BROKER_OK;
}

/* One element: a scalar (exact or glob) or {regex: "..."}. */
static enum broker_err pattern_compile(struct broker_policy_set *set, const struct doc_node *n, const char *file,
				       const char *claim, struct diag *d, struct pattern *p)
{
	const struct doc_node *src = n;
	enum broker_err r;
	char err[256];

	memset(p, 0, sizeof(*p));
	p->line = n->line;
	p->col = n->col;
	if (n->kind == DOC_SEQ) {
		diag_error(d, file, n->line, n->col, "condition on '%s': lists cannot be nested", claim);
		return BROKER_ERR_CONFIG;
	}
	if (n->kind == DOC_MAP) {
		bool bad = false;

		for (size_t i = 0; i < n->n; i++) {
			if (strcmp(n->keys[i]->str, "regex") != 0) {
				diag_error(d, file, n->keys[i]->line, n->keys[i]->col,
					   "condition on '%s': unknown key '%s' (a mapping here is {regex: \"...\"})",
					   claim, n->keys[i]->str);
				bad = true;
			}
		}
		src = doc_map_get(n, "regex");
		if (!src) {
			if (!bad)
				diag_error(d, file, n->line, n->col,
					   "condition on '%s': a mapping here must be {regex: \"...\"}", claim);
			return BROKER_ERR_CONFIG;
		}
		if (bad)
			return BROKER_ERR_CONFIG;
		if (src->kind != DOC_SCALAR || doc_is_null(src)) {
			diag_error(d, file, src->line, src->col, "condition on '%s': regex must be a string", claim);
			return BROKER_ERR_CONFIG;
		}
		p->line = src->line;
		p->col = src->col;
	} else if (doc_is_null(n)) {
		diag_error(d, file, n->line, n->col,
			   "condition on '%s' has no value (write \"\" for the empty string)", claim);
		return BROKER_ERR_CONFIG;
	}
	if (memchr(src->str, '\0', src->len)) {
		diag_error(d, file, src->line, src->col, "condition on '%s' contains a NUL byte", claim);
		return BROKER_ERR_CONFIG;
	}
	if (src->len > POLICY_PATTERN_MAX) {
		diag_error(d, file, src->line, src->col, "condition on '%s' is longer than %d bytes", claim,
			   POLICY_PATTERN_MAX);
		return BROKER_ERR_CONFIG;
	}
	p->src = set_intern(set, src->str, src->len);
	if (!p->src)
		return BROKER_ERR_NOMEM;
	if (src != n) {
		r = compile_regex(set, p, src->str, src->len, err, sizeof(err));
		if (r == BROKER_ERR_CONFIG)
			diag_error(d, file, src->line, src->col, "condition on '%s': bad regex: %s", claim, err);
	} else {
		/* Plain YAML numbers are kept as their text, which is how number
		 * claims compare; plain booleans (true, True, TRUE) become the
		 * JSON spelling a boolean claim has. */
		const char *text = src->str;
		size_t len = src->len;

		if (doc_scalar_type(src) == DOC_TYPE_BOOL) {
			json_t *b = doc_to_json(src);

			text = json_is_true(b) ? "true" : "false";
			len = strlen(text);
			json_decref(b);
		}
		r = compile_glob_or_exact(set, p, text, len);
	}
	return r;
}

static void pattern_display(const struct pattern *p, char *buf, size_t len)
{
	char q[POLICY_PATTERN_MAX * 2 + 16];

	display_bytes(p->src, strlen(p->src), q, sizeof(q));
	if (p->kind == PATTERN_REGEX)
		snprintf(buf, len, "{regex: %s}", q);
	else
		snprintf(buf, len, "%s", q);
}

/* "a" | "any of [a, b, {regex: c}]", truncated for the audit line. Built
 * when a reason or explain line needs it, not kept per condition: only a
 * refused exchange or an operator's explain ever reads it. */
void condition_want(const struct condition *c, char out[static POLICY_WANT_MAX])
{
	const size_t cap = POLICY_WANT_MAX;
	size_t o = 0;

	out[0] = '\0';
	if (c->list)
		o = (size_t)snprintf(out, cap, "any of [");
	for (size_t i = 0; i < c->n_pats; i++) {
		char one[POLICY_PATTERN_MAX * 2 + 32];
		size_t l;

		pattern_display(&c->pats[i], one, sizeof(one));
		l = strlen(one);
		if (o + l + 8 >= cap) {
			snprintf(out + o, cap - o, "...");
			o += 3;
			break;
		}
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", one);
	}
	if (c->list && o + 2 < cap)
		snprintf(out + o, cap - o, "]");
}

static bool claim_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > POLICY_CLAIM_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || s[i] == 0x7f)
			return false;
	return true;
}

static enum broker_err condition_compile(struct broker_policy_set *set, const struct doc_node *key,
					 const struct doc_node *val, const char *file, struct diag *d,
					 struct condition *c)
{
	enum broker_err r = BROKER_OK;
	size_t n = val->kind == DOC_SEQ ? val->n : 1;

	c->file = file;
	c->line = key->line;
	c->col = key->col;
	c->list = val->kind == DOC_SEQ;
	if (!claim_name_ok(key->str, key->len)) {
		diag_error(d, file, key->line, key->col,
			   "claim name must be 1-%d printable characters without spaces", POLICY_CLAIM_NAME_MAX);
		return BROKER_ERR_CONFIG;
	}
	c->claim = set_intern(set, key->str, key->len);
	if (!c->claim)
		return BROKER_ERR_NOMEM;
	if (c->list && n == 0) {
		diag_error(d, file, val->line, val->col, "condition on '%s' is an empty list, which never holds",
			   key->str);
		return BROKER_ERR_CONFIG;
	}
	if (n > POLICY_LIST_MAX) {
		diag_error(d, file, val->line, val->col, "condition on '%s' has more than %d elements", key->str,
			   POLICY_LIST_MAX);
		return BROKER_ERR_CONFIG;
	}
	c->pats = set_alloc(set, n * sizeof(*c->pats));
	if (!c->pats)
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		enum broker_err e =
			pattern_compile(set, c->list ? val->items[i] : val, file, key->str, d, &c->pats[c->n_pats]);

		if (e == BROKER_ERR_NOMEM)
			return e;
		if (e != BROKER_OK) {
			r = e;
			continue;
		}
		c->n_pats++;
	}
	return r;
}

enum broker_err condset_compile(struct broker_policy_set *set, const struct doc_node *map, const char *file,
				const char *what, struct diag *d, struct condset *cs)
{
	enum broker_err r = BROKER_OK;

	if (map->kind != DOC_MAP) {
		diag_error(d, file, map->line, map->col, "'%s' must be a mapping of claim names to conditions", what);
		return BROKER_ERR_CONFIG;
	}
	if (map->n > POLICY_CONDITIONS_MAX) {
		diag_error(d, file, map->line, map->col, "'%s' has more than %d conditions", what,
			   POLICY_CONDITIONS_MAX);
		return BROKER_ERR_CONFIG;
	}
	if (map->n == 0)
		return BROKER_OK;
	cs->v = set_alloc(set, map->n * sizeof(*cs->v));
	if (!cs->v)
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < map->n; i++) {
		enum broker_err e = condition_compile(set, map->keys[i], map->items[i], file, d, &cs->v[cs->n]);

		if (e != BROKER_OK) {
			/* the slot is reused; what was allocated stays in the arena */
			memset(&cs->v[cs->n], 0, sizeof(cs->v[cs->n]));
			if (e == BROKER_ERR_NOMEM)
				return e;
			r = e;
			continue;
		}
		cs->n++;
	}
	return r;
}

/* ---- matching -------------------------------------------------------- */

/* Next UTF-8 character boundary: `?` is one character, not one byte. Claims
 * come from jansson, which only accepts valid UTF-8. */
static size_t utf8_next(const unsigned char *s, size_t len, size_t i)
{
	i++;
	while (i < len && (s[i] & 0xc0) == 0x80)
		i++;
	return i;
}

/* Classic single-backtrack wildcard match: O(len * tokens) worst case, no
 * recursion, so a hostile claim cannot blow the stack. */
static bool glob_match(const uint16_t *tok, size_t n, const unsigned char *s, size_t len)
{
	size_t pi = 0, si = 0, star_p = SIZE_MAX, star_s = 0;

	while (si < len) {
		if (pi < n && tok[pi] == GLOB_STAR) {
			star_p = pi++;
			star_s = si;
		} else if (pi < n && tok[pi] == GLOB_QMARK) {
			pi++;
			si = utf8_next(s, len, si);
		} else if (pi < n && tok[pi] == s[si]) {
			pi++;
			si++;
		} else if (star_p != SIZE_MAX) {
			pi = star_p + 1;
			star_s = utf8_next(s, len, star_s);
			si = star_s;
		} else {
			return false;
		}
	}
	while (pi < n && tok[pi] == GLOB_STAR)
		pi++;
	return pi == n;
}

bool pattern_match(const struct pattern *p, const char *s, size_t len)
{
	switch (p->kind) {
	case PATTERN_EXACT:
		return len == p->len && memcmp(s, p->bytes, len) == 0;
	case PATTERN_GLOB:
		return glob_match(p->tok, p->len, (const unsigned char *)s, len);
	case PATTERN_REGEX:
		/* regexec stops at a NUL; a value with one cannot be what the
		 * pattern author meant, so it never matches. s[len] is NUL. */
		if (!p->re || memchr(s, '\0', len) || s[len] != '\0')
			return false;
		return regexec(p->re, s, 0, NULL, 0) == 0;
	}
	return false;
}

/* Values a condition would have to reject to mean anything. A pattern that
 * accepts all of them is treated as "match-all" by the lints. */
static const char *const probes[] = {
	"a", "Z", "0", "-", ".", " ", "acme/web", "refs/heads/main", "repo:x/y:ref:refs/tags/v1",
	"\xc3\xa9", "production", "12345", "true", "a\nb",
};

bool pattern_is_match_all(const struct pattern *p)
{
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(probes); i++)
		if (!pattern_match(p, probes[i], strlen(probes[i])))
			return false;
	return true;
}

bool condition_is_match_all(const struct condition *c)
{
	for (size_t i = 0; i < c->n_pats; i++)
		if (pattern_is_match_all(&c->pats[i]))
			return true;
	return false;
}

/* Numbers and booleans compare as their JSON text: integers as %lld, reals
 * as jansson dumps them (%.17g, ".0" added to whole numbers). */
bool claim_scalar_text(const json_t *v, char *buf, size_t buflen, const char **ret, size_t *ret_len)
{
	size_t n;

	switch (json_typeof(v)) {
	case JSON_STRING:
		*ret = json_string_value(v);
		*ret_len = json_string_length(v);
		return true;
	case JSON_INTEGER:
		n = (size_t)snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		n = json_dumpb(v, buf, buflen - 1, JSON_ENCODE_ANY);
		if (n == 0 || n >= buflen)
			return false;
		buf[n] = '\0';
		break;
	case JSON_TRUE:
		n = (size_t)snprintf(buf, buflen, "true");
		break;
	case JSON_FALSE:
		n = (size_t)snprintf(buf, buflen, "false");
		break;
	default:
		return false;
	}
	if (n >= buflen)
		return false;
	*ret = buf;
	*ret_len = n;
	return true;
}

static bool scalar_holds(const struct condition *c, const json_t *v)
{
	char buf[64];
	const char *s;
	size_t len;

	if (!claim_scalar_text(v, buf, sizeof(buf), &s, &len))
		return false;
	for (size_t i = 0; i < c->n_pats; i++)
		if (pattern_match(&c->pats[i], s, len))
			return true;
	return false;
}

static void display_value(const json_t *v, char *out, size_t outlen)
{
	char buf[64];
	const char *s;
	size_t len;

	if (!out || !outlen)
		return;
	if (!v) {
		snprintf(out, outlen, "(missing)");
	} else if (json_is_null(v)) {
		snprintf(out, outlen, "null");
	} else if (json_is_object(v)) {
		snprintf(out, outlen, "(an object)");
	} else if (json_is_string(v)) {
		display_bytes(json_string_value(v), json_string_length(v), out, outlen);
	} else if (json_is_array(v)) {
		char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

		if (!text) {
			snprintf(out, outlen, "(an array)");
			return;
		}
		if (strlen(text) >= outlen && outlen > 4)
			snprintf(out, outlen, "%.*s...", (int)(outlen - 4), text);
		else
			snprintf(out, outlen, "%s", text);
		free(text);
	} else if (claim_scalar_text(v, buf, sizeof(buf), &s, &len)) {
		snprintf(out, outlen, "%.*s", (int)len, s);
	} else {
		snprintf(out, outlen, "(unsupported)");
	}
}

bool condition_holds(const struct condition *c, const json_t *claims, char *seen, size_t seen_len)
{
	const json_t *v = json_is_object(claims) ? json_object_get(claims, c->claim) : NULL;
	bool held = false;

	display_value(v, seen, seen_len);
	if (!v)
		return false;
	if (json_is_array(v)) {
		size_t i;
		const json_t *e;

		/* Elements that are arrays, objects or null never hold. */
		json_array_foreach (v, i, e)
			if (scalar_holds(c, e)) {
				held = true;
				break;
			}
		return held;
	}
	return scalar_holds(c, v);
}

const struct condition *condset_first_failing(const struct condset *cs, const json_t *claims, bool deny, char *seen,
					      size_t seen_len)
{
	for (size_t i = 0; i < cs->n; i++) {
		bool held = condition_holds(&cs->v[i], claims, seen, seen_len);

		if (held == deny)
			return &cs->v[i];
	}
	return NULL;
}
