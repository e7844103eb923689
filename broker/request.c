/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/request.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cibroker/util.h"

enum content_kind { CONTENT_OTHER, CONTENT_FORM, CONTENT_JSON };

/* "application/json; charset=utf-8" -> JSON. Media types are case-insensitive
 * (RFC 9110 §8.3.1); parameters other than charset=utf-8 are refused. */
static enum content_kind content_kind(const char *ct)
{
	size_t n;
	const char *rest;

	if (!ct)
		return CONTENT_OTHER;
	while (*ct == ' ')
		ct++;
	n = strcspn(ct, "; \t");
	rest = ct + n;
	while (*rest == ' ' || *rest == '\t')
		rest++;
	if (*rest == ';') {
		rest++;
		while (*rest == ' ')
			rest++;
		if (strncasecmp(rest, "charset=", 8) != 0)
			return CONTENT_OTHER;
		rest += 8;
		if (*rest == '"')
			rest++;
		if (strncasecmp(rest, "utf-8", 5) != 0)
			return CONTENT_OTHER;
		rest += 5;
		if (*rest == '"')
			rest++;
		while (*rest == ' ')
			rest++;
		if (*rest)
			return CONTENT_OTHER;
	} else if (*rest) {
		return CONTENT_OTHER;
	}
	if (n == 33 && strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0)
		return CONTENT_FORM;
	if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
		return CONTENT_JSON;
	return CONTENT_OTHER;
}

static char **param_slot(struct token_request *req, const char *name, size_t len)
{
	static const struct {
		const char *name;
		size_t offset;
	} params[] = {
		{"grant_type", offsetof(struct token_request, grant_type)},
		{"subject_token", offsetof(struct token_request, subject_token)},
		{"subject_token_type", offsetof(struct token_request, subject_token_type)},
		{"audience", offsetof(struct token_request, audience)},
		{"requested_token_type", offsetof(struct token_request, requested_token_type)},
	};
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(params); i++)
		if (strlen(params[i].name) == len && memcmp(params[i].name, name, len) == 0)
			return (char **)((char *)req + params[i].offset);
	return NULL;
}


/* Percent-decoding of one form component; '+' is a space. NUL refused. */
static enum broker_err form_decode(const char *in, size_t len, char **ret, size_t *ret_len)
{
	char *out = malloc(len + 1);
	size_t o = 0;

	if (!out)
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				goto bad;
			hi = broker_hex_value((unsigned char)in[i + 1]);
			lo = broker_hex_value((unsigned char)in[i + 2]);
			if (hi < 0 || lo < 0)
				goto bad;
			c = (char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == '\0')
			goto bad;
		out[o++] = c;
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = o;
	return BROKER_OK;
bad:
	broker_wipe_free(out, len + 1);
	return BROKER_ERR_INVALID;
}

/* A repeated parameter is refused even when unknown: RFC 6749 §3.2 says
 * parameters MUST NOT be included more than once, and a proxy that keeps the
 * first while we keep the last is how confusion attacks start. */
static bool form_has_earlier(const char *body, const char *upto, const char *name, size_t name_len)
{
	const char *p = body;

	while (p < upto) {
		const char *amp = memchr(p, '&', (size_t)(upto - p));
		const char *end = amp ? amp : upto;
		const char *eq = memchr(p, '=', (size_t)(end - p));
		size_t klen = (size_t)((eq ? eq : end) - p);

		if (klen == name_len && memcmp(p, name, klen) == 0)
			return true;
		p = end + 1;
	}
	return false;
}

static enum broker_err parse_form(const char *body, size_t len, struct token_request *req, const char **reason)
{
	const char *p = body, *end = body + len;

	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pend = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pend - p));
		const char *kend = eq ? eq : pend;
		char *name = NULL, *value = NULL, **slot;
		size_t name_len, value_len = 0;
		enum broker_err err;

		if (pend == p) { /* "a=1&&b=2": tolerate empty pairs */
			p = pend + 1;
			continue;
		}
		err = form_decode(p, (size_t)(kend - p), &name, &name_len);
		if (err != BROKER_OK) {
			*reason = "malformed form encoding";
			return err;
		}
		if (form_has_earlier(body, p, p, (size_t)(kend - p))) {
			free(name);
			*reason = "parameter repeated";
			return BROKER_ERR_INVALID;
		}
		slot = param_slot(req, name, name_len);
		free(name);
		if (!slot && eq) {
			/* unknown, so ignored, but still well-formed: a malformed
			 * parameter is invalid_request wherever it is */
			err = form_decode(eq + 1, (size_t)(pend - eq - 1), &value, &value_len);
			if (err != BROKER_OK) {
				*reason = "malformed form encoding";
				return err;
			}
			broker_wipe_free(value, value_len + 1);
			value = NULL;
		}
		if (slot) {
			err = eq ? form_decode(eq + 1, (size_t)(pend - eq - 1), &value, &value_len)
				 : (value = strdup(""), value ? BROKER_OK : BROKER_ERR_NOMEM);
			if (err != BROKER_OK) {
				*reason = "malformed form encoding";
				return err;
			}
			if (*slot) { /* same name spelled with escapes */
				broker_secret_free(value);
				*reason = "parameter repeated";
				return BROKER_ERR_INVALID;
			}
			if (value_len == 0)
				free(value);
			else
				*slot = value;
		}
		p = pend + 1;
	}
	return BROKER_OK;
}

static enum broker_err parse_json(const char *body, size_t len, struct token_request *req, const char **reason)
{
	json_t *root = broker_json_parse(body, len, 8);
	const char *key;
	json_t *v;
	enum broker_err err = BROKER_ERR_INVALID;

	if (!root || !json_is_object(root)) {
		*reason = "body is not a JSON object (or has duplicate keys)";
		goto out;
	}
	json_object_foreach(root, key, v) {
		char **slot = param_slot(req, key, strlen(key));

		if (!slot)
			continue;
		if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v))) {
			*reason = "parameter is not a string";
			goto out;
		}
		if (json_string_length(v) == 0)
			continue;
		*slot = strdup(json_string_value(v));
		if (!*slot) {
			err = BROKER_ERR_NOMEM;
			goto out;
		}
	}
	err = BROKER_OK;
out:
	if (root && json_is_object(root)) {
		json_t *st = json_object_get(root, "subject_token");
		/* jansson's copy of the token is wiped too. */
		if (json_is_string(st))
			OPENSSL_cleanse((char *)json_string_value(st), json_string_length(st));
	}
	json_decref(root);
	return err;
}

enum broker_err token_request_parse(const char *content_type, const char *body, size_t len,
				    struct token_request *ret, const char **ret_reason)
{
	struct token_request req = {0};
	enum broker_err err;

	switch (content_kind(content_type)) {
	case CONTENT_FORM:
		if (memchr(body, '\0', len)) {
			*ret_reason = "NUL byte in body";
			return BROKER_ERR_INVALID;
		}
		err = parse_form(body, len, &req, ret_reason);
		break;
	case CONTENT_JSON:
		err = parse_json(body, len, &req, ret_reason);
		break;
	default:
		*ret_reason = "content type must be application/x-www-form-urlencoded or application/json";
		return BROKER_ERR_INVALID;
	}
	if (err != BROKER_OK) {
		token_request_clear(&req);
		return err;
	}
	*ret = req;
	return BROKER_OK;
}

void token_request_clear(struct token_request *req)
{
	if (!req)
		return;
	free(req->grant_type);
	broker_secret_free(req->subject_token);
	free(req->subject_token_type);
	free(req->audience);
	free(req->requested_token_type);
	memset(req, 0, sizeof(*req));
}
