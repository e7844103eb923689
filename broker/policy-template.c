/* SPDX-License-Identifier: Apache-2.0 */
/* `${claim}` templates for credential fields. Compiled at load so syntax
 * errors surface in `policy check`; rendered per exchange from verified
 * claims, where a missing claim denies rather than minting a credential with
 * a hole in it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-int.h"

void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->segs[i].text);
	free(t->segs);
	free(t->src);
	free(t);
}

static bool tmpl_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
	       c == '-';
}

static enum broker_err tmpl_push(struct tmpl *t, bool is_claim, const char *s, size_t len)
{
	struct tmpl_seg *segs;
	char *text;

	/* merge adjacent literals ("$$" splits them) */
	if (!is_claim && t->n > 0 && !t->segs[t->n - 1].is_claim) {
		struct tmpl_seg *last = &t->segs[t->n - 1];

		text = realloc(last->text, last->len + len + 1);
		if (!text)
			return BROKER_ERR_NOMEM;
		memcpy(text + last->len, s, len);
		last->len += len;
		text[last->len] = '\0';
		last->text = text;
		return BROKER_OK;
	}
	segs = realloc(t->segs, (t->n + 1) * sizeof(*segs));
	if (!segs)
		return BROKER_ERR_NOMEM;
	t->segs = segs;
	text = malloc(len + 1);
	if (!text)
		return BROKER_ERR_NOMEM;
	memcpy(text, s, len);
	text[len] = '\0';
	t->segs[t->n++] = (struct tmpl_seg){.is_claim = is_claim, .text = text, .len = len};
	return BROKER_OK;
}

enum broker_err tmpl_compile(const struct doc_node *n, const char *file, struct diag *d, struct tmpl **ret)
{
	enum broker_err r = BROKER_ERR_CONFIG;
	struct tmpl *t = NULL;
	const char *s;
	size_t len, lit = 0;

	if (n->kind != DOC_SCALAR || doc_is_null(n)) {
		diag_error(d, file, n->line, n->col, "template must be a string");
		goto out;
	}
	s = n->str;
	len = n->len;
	if (len > POLICY_TEMPLATE_MAX) {
		diag_error(d, file, n->line, n->col, "template is longer than %d bytes", POLICY_TEMPLATE_MAX);
		goto out;
	}
	if (memchr(s, '\0', len)) {
		diag_error(d, file, n->line, n->col, "template contains a NUL byte");
		goto out;
	}
	r = BROKER_ERR_NOMEM;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->src = strdup(s)))
		goto out;
	t->line = n->line;
	t->col = n->col;
	for (size_t i = 0; i < len;) {
		if (s[i] != '$') {
			i++;
			continue;
		}
		if (i > lit && (r = tmpl_push(t, false, s + lit, i - lit)) != BROKER_OK)
			goto out;
		if (i + 1 < len && s[i + 1] == '$') {
			if ((r = tmpl_push(t, false, "$", 1)) != BROKER_OK)
				goto out;
			i += 2;
		} else if (i + 1 < len && s[i + 1] == '{') {
			const char *close = memchr(s + i + 2, '}', len - i - 2);
			size_t nlen;

			r = BROKER_ERR_CONFIG;
			if (!close) {
				diag_error(d, file, n->line, n->col, "template: unterminated '${' at offset %zu", i);
				goto out;
			}
			nlen = (size_t)(close - (s + i + 2));
			if (nlen == 0) {
				diag_error(d, file, n->line, n->col, "template: empty claim name '${}' at offset %zu", i);
				goto out;
			}
			for (size_t k = 0; k < nlen; k++)
				if (!tmpl_name_char(s[i + 2 + k])) {
					diag_error(d, file, n->line, n->col,
						   "template: claim name at offset %zu may only use [A-Za-z0-9_.-] "
						   "(top-level claims only)",
						   i);
					goto out;
				}
			if (nlen > POLICY_CLAIM_NAME_MAX) {
				diag_error(d, file, n->line, n->col, "template: claim name at offset %zu is too long", i);
				goto out;
			}
			if ((r = tmpl_push(t, true, s + i + 2, nlen)) != BROKER_OK)
				goto out;
			i += nlen + 3;
		} else {
			r = BROKER_ERR_CONFIG;
			diag_error(d, file, n->line, n->col,
				   "template: '$' at offset %zu must start '${claim}' or be doubled ('$$')", i);
			goto out;
		}
		lit = i;
	}
	if (len > lit && (r = tmpl_push(t, false, s + lit, len - lit)) != BROKER_OK)
		goto out;
	*ret = t;
	t = NULL;
	r = BROKER_OK;
out:
	tmpl_free(t);
	return r;
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
	snprintf(why->client_reason, sizeof(why->client_reason),
		 "claim '%.64s' required by the credential template is missing", claim);
	snprintf(why->audit_reason, sizeof(why->audit_reason), "template claim '%.128s' missing%s", claim, detail);
}

/* Only top-level strings and integers: anything else (an array, an object,
 * a boolean, a real) has no single obvious spelling inside a credential. */
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
			} else if (json_is_integer(v)) {
				n = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
				s = num;
			} else {
				deny_missing(why, seg->text, " (not a string or integer)");
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
