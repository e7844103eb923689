/* SPDX-License-Identifier: Apache-2.0 */
/* `${claim}` templates for credential fields. Compiled at load so syntax
 * errors surface in `policy check`; rendered per exchange from verified
 * claims, where a missing claim denies rather than minting a credential with
 * a hole in it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-int.h"

static bool tmpl_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
	       c == '-';
}

/* Compiling goes through this scratch state (on the stack: a template is at
 * most POLICY_TEMPLATE_MAX bytes, so at most that many segments and literal
 * bytes); only the result is copied into the set. */
struct tmpl_build {
	struct {
		size_t off, len; /* in lit (literal) or in the source (claim name) */
		bool is_claim;
	} segs[POLICY_TEMPLATE_MAX + 1];
	size_t n;
	char lit[POLICY_TEMPLATE_MAX + 1];
	size_t lit_len;
};

static void tmpl_push(struct tmpl_build *b, bool is_claim, const char *src, size_t off, size_t len)
{
	/* merge adjacent literals ("$$" splits them) */
	if (!is_claim && b->n > 0 && !b->segs[b->n - 1].is_claim) {
		memcpy(b->lit + b->lit_len, src + off, len);
		b->lit_len += len;
		b->segs[b->n - 1].len += len;
		return;
	}
	if (is_claim) {
		b->segs[b->n].off = off;
	} else {
		b->segs[b->n].off = b->lit_len;
		memcpy(b->lit + b->lit_len, src + off, len);
		b->lit_len += len;
	}
	b->segs[b->n].len = len;
	b->segs[b->n].is_claim = is_claim;
	b->n++;
}

enum broker_err tmpl_compile(struct broker_policy_set *set, const struct doc_node *n, const char *file, struct diag *d,
			     struct tmpl **ret)
{
	struct tmpl_build *b = NULL;
	struct tmpl *t;
	const char *s;
	size_t len, lit = 0;

	if (n->kind != DOC_SCALAR || doc_is_null(n)) {
		diag_error(d, file, n->line, n->col, "template must be a string");
		return BROKER_ERR_CONFIG;
	}
	s = n->str;
	len = n->len;
	if (len > POLICY_TEMPLATE_MAX) {
		diag_error(d, file, n->line, n->col, "template is longer than %d bytes", POLICY_TEMPLATE_MAX);
		return BROKER_ERR_CONFIG;
	}
	if (memchr(s, '\0', len)) {
		diag_error(d, file, n->line, n->col, "template contains a NUL byte");
		return BROKER_ERR_CONFIG;
	}
	if (!(b = malloc(sizeof(*b))))
		return BROKER_ERR_NOMEM;
	b->n = b->lit_len = 0;
	for (size_t i = 0; i < len;) {
		if (s[i] != '$') {
			i++;
			continue;
		}
		if (i > lit)
			tmpl_push(b, false, s, lit, i - lit);
		if (i + 1 < len && s[i + 1] == '$') {
			tmpl_push(b, false, "$", 0, 1);
			i += 2;
		} else if (i + 1 < len && s[i + 1] == '{') {
			const char *close = memchr(s + i + 2, '}', len - i - 2);
			size_t nlen;

			if (!close) {
				diag_error(d, file, n->line, n->col, "template: unterminated '${' at offset %zu", i);
				goto bad;
			}
			nlen = (size_t)(close - (s + i + 2));
			if (nlen == 0) {
				diag_error(d, file, n->line, n->col, "template: empty claim name '${}' at offset %zu", i);
				goto bad;
			}
			for (size_t k = 0; k < nlen; k++)
				if (!tmpl_name_char(s[i + 2 + k])) {
					diag_error(d, file, n->line, n->col,
						   "template: claim name at offset %zu may only use [A-Za-z0-9_.-] "
						   "(top-level claims only)",
						   i);
					goto bad;
				}
			if (nlen > POLICY_CLAIM_NAME_MAX) {
				diag_error(d, file, n->line, n->col, "template: claim name at offset %zu is too long", i);
				goto bad;
			}
			tmpl_push(b, true, s, i + 2, nlen);
			i += nlen + 3;
		} else {
			diag_error(d, file, n->line, n->col,
				   "template: '$' at offset %zu must start '${claim}' or be doubled ('$$')", i);
			goto bad;
		}
		lit = i;
	}
	if (len > lit)
		tmpl_push(b, false, s, lit, len - lit);
	if (!(t = set_alloc(set, sizeof(*t))) || !(t->src = set_intern(set, s, len)) ||
	    (b->n && !(t->segs = set_alloc(set, b->n * sizeof(*t->segs)))))
		goto nomem;
	t->line = n->line;
	t->col = n->col;
	for (size_t i = 0; i < b->n; i++) {
		const char *text = b->segs[i].is_claim ? s + b->segs[i].off : b->lit + b->segs[i].off;

		/* claim names and literals repeat across policies: interned */
		if (!(t->segs[i].text = set_intern(set, text, b->segs[i].len)))
			goto nomem;
		t->segs[i].len = b->segs[i].len;
		t->segs[i].is_claim = b->segs[i].is_claim;
		t->n++;
	}
	free(b);
	*ret = t;
	return BROKER_OK;
bad:
	free(b);
	return BROKER_ERR_CONFIG;
nomem:
	free(b);
	return BROKER_ERR_NOMEM;
}

size_t tmpl_literal_len(const struct tmpl *t)
{
	size_t n = 0;

	for (size_t i = 0; i < t->n; i++)
		if (!t->segs[i].is_claim)
			n += t->segs[i].len;
	return n;
}

bool tmpl_has_claims(const struct tmpl *t)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->segs[i].is_claim)
			return true;
	return false;
}

static void deny_missing(struct policy_result *why, const char *claim, const char *detail)
{
	if (!why)
		return;
	/* detail set: the claim is there, with a value a template cannot use */
	snprintf(why->client_reason, sizeof(why->client_reason),
		 *detail ? "claim '%.64s' required by the credential template is not a string or number"
			 : "claim '%.64s' required by the credential template is missing",
		 claim);
	snprintf(why->audit_reason, sizeof(why->audit_reason), "template claim '%.128s' missing%s", claim, detail);
}

/* Only top-level strings and numbers (as their JSON text): anything else (an
 * array, an object, a boolean, null) has no single obvious spelling inside a
 * credential. */
enum broker_err tmpl_render(const struct tmpl *t, const json_t *claims, char **ret, size_t *ret_len,
			    struct policy_result *why)
{
	char *out = NULL, num[32];
	size_t len = 0;
	enum broker_err r = BROKER_ERR_DENIED;

	out = malloc(POLICY_RENDER_MAX + 1);
	if (!out)
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < t->n; i++) {
		const struct tmpl_seg *seg = &t->segs[i];
		const char *s = seg->text;
		size_t n = seg->len;

		if (seg->is_claim) {
			const json_t *v = json_is_object(claims) ? json_object_get(claims, seg->text) : NULL;

			if (!v) {
				deny_missing(why, seg->text, "");
				goto out;
			}
			if (json_is_string(v)) {
				s = json_string_value(v);
				n = json_string_length(v);
				if (memchr(s, '\0', n)) {
					deny_missing(why, seg->text, " (value contains a NUL byte)");
					goto out;
				}
			} else if (!json_is_number(v) || !claim_scalar_text(v, num, sizeof(num), &s, &n)) {
				/* numbers as their JSON text, the same text conditions compare */
				deny_missing(why, seg->text, " (not a string or number)");
				goto out;
			}
		}
		if (n > POLICY_RENDER_MAX - len) {
			if (why) {
				snprintf(why->client_reason, sizeof(why->client_reason),
					 "credential template result is too long");
				snprintf(why->audit_reason, sizeof(why->audit_reason),
					 "template %.200s renders to more than %d bytes", t->src, POLICY_RENDER_MAX);
			}
			goto out;
		}
		memcpy(out + len, s, n);
		len += n;
	}
	out[len] = '\0';
	*ret = out;
	if (ret_len)
		*ret_len = len;
	out = NULL;
	r = BROKER_OK;
out:
	free(out);
	return r;
}

static bool aws_name_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '=' ||
	       c == ',' || c == '.' || c == '@' || c == '-';
}

void aws_sanitise_name(const char *in, size_t len, char *out, size_t max)
{
	size_t o = 0;

	for (size_t i = 0; i < len && o < max;) {
		unsigned char c = (unsigned char)in[i];

		if (aws_name_char(c)) {
			out[o++] = (char)c;
			i++;
			continue;
		}
		/* one '-' per character, not per byte of its UTF-8 encoding */
		out[o++] = '-';
		i++;
		while (i < len && ((unsigned char)in[i] & 0xc0) == 0x80)
			i++;
	}
	out[o] = '\0';
}
