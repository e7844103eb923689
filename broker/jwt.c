/* SPDX-License-Identifier: Apache-2.0 */
/* Strict parse and verification of incoming compact JWS tokens.
 *
 * The checks run in order of cheapness (DESIGN.md "Verifying the subject
 * token"): size, shape, base64url, JSON, header rules, then -- after the
 * caller has found the key by kid -- the signature, then the claims. Every
 * rejection returns BROKER_ERR_TOKEN and a short static reason that is safe
 * to show a client: it never contains anything taken from the token.
 *
 * libjwt is deliberately not used here; see docs/verification.md for the
 * measured reasons. Signatures are checked with OpenSSL EVP only. */
#include "cibroker/jwt.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "cibroker/config.h"
#include "cibroker/util.h"

#define ALGS_RSA_PKCS1 (BROKER_ALG_RS256 | BROKER_ALG_RS384 | BROKER_ALG_RS512)
#define ALGS_RSA_PSS (BROKER_ALG_PS256 | BROKER_ALG_PS384 | BROKER_ALG_PS512)
#define RSA_MIN_BITS 2048

static enum broker_err reject(const char **ret_reason, const char *reason)
{
	if (ret_reason)
		*ret_reason = reason;
	return BROKER_ERR_TOKEN;
}

/* ---- parse ---- */

void token_free(struct broker_token *t)
{
	if (!t)
		return;
	json_decref(t->header);
	json_decref(t->claims);
	free(t->sig);
	/* The raw token is a bearer credential until it expires. */
	broker_wipe_free(t->raw, t->raw_len + 1);
	free(t);
}

static bool alg_is_none(const char *alg)
{
	return strcasecmp(alg, "none") == 0;
}

static bool alg_is_hmac(const char *alg)
{
	return strncasecmp(alg, "HS", 2) == 0;
}

/* Header rules. Order: what decides how to verify (alg), then what we
 * refuse to understand (crit, b64), then what we refuse to use (keys
 * carried in the token), then typ and kid. */
static enum broker_err check_header(const json_t *h, struct broker_token *t, const char **ret_reason)
{
	static const char *const key_headers[] = {"jku", "x5u", "jwk", "x5c"};
	json_t *v;
	const char *alg;

	v = json_object_get(h, "alg");
	if (!v)
		return reject(ret_reason, "alg missing");
	if (!json_is_string(v))
		return reject(ret_reason, "alg malformed");
	alg = json_string_value(v);
	if (alg_is_none(alg))
		return reject(ret_reason, "alg none is never accepted");
	if (alg_is_hmac(alg))
		return reject(ret_reason, "HMAC algs are never accepted");
	/* Case-sensitive, exact, and the string must not hide a NUL. */
	t->alg = strlen(alg) == json_string_length(v) ? jwt_alg_from_name(alg) : 0;
	if (!t->alg)
		return reject(ret_reason, "alg not supported");

	/* RFC 7515 §4.1.11: a crit we do not implement must fail. We
	 * implement none, so any crit fails. */
	if (json_object_get(h, "crit"))
		return reject(ret_reason, "crit header not supported");
	/* RFC 7797 unencoded payloads would change what is signed. */
	if (json_object_get(h, "b64"))
		return reject(ret_reason, "b64 header not supported");
	/* Keys are taken only from the issuer's JWKS. A token naming or
	 * carrying its own key is either confused or an attack. */
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(key_headers); i++)
		if (json_object_get(h, key_headers[i]))
			return reject(ret_reason, "token-supplied key headers (jku/x5u/jwk/x5c) not accepted");

	v = json_object_get(h, "typ");
	if (v && (!json_is_string(v) || json_string_length(v) != 3 || strcasecmp(json_string_value(v), "JWT") != 0))
		return reject(ret_reason, "typ is not JWT");

	v = json_object_get(h, "kid");
	if (!v)
		return reject(ret_reason, "kid missing");
	if (!json_is_string(v) || !jwt_kid_ok(json_string_value(v), json_string_length(v)))
		return reject(ret_reason, "kid malformed");
	t->kid = json_string_value(v);
	return BROKER_OK;
}

/* One base64url segment -> JSON object. */
static enum broker_err decode_json_segment(const char *seg, size_t len, json_t **ret, const char **ret_reason,
					   const char *bad_b64, const char *bad_json, const char *not_object)
{
	unsigned char *buf = NULL;
	size_t buf_len;
	json_t *v;
	enum broker_err err = b64url_decode(seg, len, &buf, &buf_len);

	if (err == BROKER_ERR_NOMEM)
		return err;
	if (err != BROKER_OK)
		return reject(ret_reason, bad_b64);
	/* Duplicate keys, trailing bytes, NULs and deep nesting all fail here. */
	v = broker_json_parse(buf, buf_len, BROKER_JSON_MAX_DEPTH);
	free(buf);
	if (!v)
		return reject(ret_reason, bad_json);
	if (!json_is_object(v)) {
		json_decref(v);
		return reject(ret_reason, not_object);
	}
	*ret = v;
	return BROKER_OK;
}

enum broker_err token_parse(const char *tok, size_t len, struct broker_token **ret, const char **ret_reason)
{
	enum broker_err err;
	struct broker_token *t = NULL;
	const char *dot1, *dot2;
	size_t h_len, p_len, s_len;

	/* Size first: nothing is copied or decoded before this. */
	if (!tok || len == 0)
		return reject(ret_reason, "token empty");
	if (len > BROKER_TOKEN_MAX)
		return reject(ret_reason, "token too large");
	if (tok[0] == '{')
		return reject(ret_reason, "JWS JSON serialization not accepted");
	dot1 = memchr(tok, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
	if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
		return reject(ret_reason, "token is not three dot-separated segments");
	h_len = (size_t)(dot1 - tok);
	p_len = (size_t)(dot2 - dot1 - 1);
	s_len = len - (size_t)(dot2 + 1 - tok);
	if (h_len == 0 || p_len == 0 || s_len == 0)
		return reject(ret_reason, "token has an empty segment");

	t = calloc(1, sizeof(*t));
	if (!t)
		return BROKER_ERR_NOMEM;
	t->raw = malloc(len + 1);
	if (!t->raw) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	memcpy(t->raw, tok, len);
	t->raw[len] = '\0';
	t->raw_len = len;

	err = decode_json_segment(t->raw, h_len, &t->header, ret_reason, "header is not base64url",
				  "header is not valid JSON", "header is not a JSON object");
	if (err != BROKER_OK)
		goto out;
	err = check_header(t->header, t, ret_reason);
	if (err != BROKER_OK)
		goto out;
	err = decode_json_segment(t->raw + h_len + 1, p_len, &t->claims, ret_reason, "payload is not base64url",
				  "payload is not valid JSON", "payload is not a JSON object");
	if (err != BROKER_OK)
		goto out;
	err = b64url_decode(t->raw + h_len + 1 + p_len + 1, s_len, &t->sig, &t->sig_len);
	if (err == BROKER_ERR_NOMEM)
		goto out;
	if (err != BROKER_OK || t->sig_len == 0) {
		err = reject(ret_reason, "signature is not base64url");
		goto out;
	}
	t->signing_input = t->raw;
	t->signing_input_len = h_len + 1 + p_len;
	*ret = t;
	t = NULL;
	err = BROKER_OK;
out:
	token_free(t);
	return err;
}

enum broker_err token_check_alg(const struct broker_token *t, const struct token_rules *r, const char **ret_reason)
{
	if (!(t->alg & r->algorithms))
		return reject(ret_reason, "alg not allowed for this issuer");
	return BROKER_OK;
}

/* ---- signatures ---- */

static const EVP_MD *alg_md(unsigned alg)
{
	switch (alg) {
	case BROKER_ALG_RS256:
	case BROKER_ALG_PS256:
	case BROKER_ALG_ES256: return EVP_sha256();
	case BROKER_ALG_RS384:
	case BROKER_ALG_PS384:
	case BROKER_ALG_ES384: return EVP_sha384();
	case BROKER_ALG_RS512:
	case BROKER_ALG_PS512: return EVP_sha512();
	}
	return NULL;
}

/* JWS ECDSA signatures are r||s, each exactly the group order's size
 * (RFC 7518 §3.4); OpenSSL wants DER. Converting ourselves means a DER
 * signature, a short one or a long one never reaches OpenSSL as such. */
static enum broker_err ecdsa_jws_to_der(const unsigned char *sig, size_t sig_len, size_t half, unsigned char **ret,
					size_t *ret_len)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	int der_len;
	enum broker_err err = BROKER_ERR_TOKEN;

	if (sig_len != 2 * half)
		return BROKER_ERR_TOKEN;
	es = ECDSA_SIG_new();
	r = BN_bin2bn(sig, (int)half, NULL);
	s = BN_bin2bn(sig + half, (int)half, NULL);
	if (!es || !r || !s) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	/* OpenSSL rejects r, s outside [1, n-1] too; zero is refused here
	 * as well so an all-zero signature never costs a verification. */
	if (BN_is_zero(r) || BN_is_zero(s))
		goto out;
	if (ECDSA_SIG_set0(es, r, s) != 1)
		goto out;
	r = s = NULL;
	der_len = i2d_ECDSA_SIG(es, &der);
	if (der_len <= 0)
		goto out;
	*ret = der;
	*ret_len = (size_t)der_len;
	err = BROKER_OK;
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return err;
}

static bool ec_group_is(EVP_PKEY *pkey, const char *want)
{
	char name[64];

	if (!EVP_PKEY_is_a(pkey, "EC"))
		return false;
	if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name), NULL) != 1)
		return false;
	return strcmp(name, want) == 0;
}

enum broker_err jws_verify_raw(unsigned alg, EVP_PKEY *pkey, const unsigned char *msg, size_t msg_len,
			       const unsigned char *sig, size_t sig_len)
{
	const EVP_MD *md = alg_md(alg);
	EVP_MD_CTX *mctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *der = NULL;
	size_t der_len = 0;
	enum broker_err err = BROKER_ERR_TOKEN;

	if (!md || !pkey || !msg || !sig)
		return BROKER_ERR_TOKEN;
	/* The key's type decides the scheme as much as the alg does: an
	 * RSA key never verifies ES*, an EC key never RS*, and the curve
	 * must be the alg's own. */
	if (alg & (ALGS_RSA_PKCS1 | ALGS_RSA_PSS)) {
		if (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS)
			return BROKER_ERR_TOKEN;
		if (sig_len != (size_t)EVP_PKEY_get_size(pkey))
			return BROKER_ERR_TOKEN;
	} else if (alg == BROKER_ALG_ES256) {
		if (!ec_group_is(pkey, "prime256v1"))
			return BROKER_ERR_TOKEN;
		err = ecdsa_jws_to_der(sig, sig_len, 32, &der, &der_len);
	} else if (alg == BROKER_ALG_ES384) {
		if (!ec_group_is(pkey, "secp384r1"))
			return BROKER_ERR_TOKEN;
		err = ecdsa_jws_to_der(sig, sig_len, 48, &der, &der_len);
	} else {
		return BROKER_ERR_TOKEN;
	}
	if ((alg & (BROKER_ALG_ES256 | BROKER_ALG_ES384)) && err != BROKER_OK)
		goto out;
	err = BROKER_ERR_TOKEN;

	mctx = EVP_MD_CTX_new();
	if (!mctx) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestVerifyInit(mctx, &pctx, md, NULL, pkey) != 1)
		goto out;
	if (alg & ALGS_RSA_PKCS1) {
		if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
			goto out;
	} else if (alg & ALGS_RSA_PSS) {
		/* RFC 7518 §3.5: MGF1 with the same hash, salt = hash length. */
		if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
		    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1)
			goto out;
	}
	if (der) {
		if (EVP_DigestVerify(mctx, der, der_len, msg, msg_len) == 1)
			err = BROKER_OK;
	} else {
		if (EVP_DigestVerify(mctx, sig, sig_len, msg, msg_len) == 1)
			err = BROKER_OK;
	}
out:
	/* A failed verification leaves errors on this thread's queue; do
	 * not let them leak into whatever OpenSSL call comes next. */
	ERR_clear_error();
	EVP_MD_CTX_free(mctx);
	OPENSSL_free(der);
	return err;
}

enum broker_err token_verify_signature(const struct broker_token *t, const struct broker_jwk *key,
				       const char **ret_reason)
{
	enum broker_err err;

	if (!key || !key->pkey)
		return reject(ret_reason, "unknown kid");
	/* The JWK decided, at JWKS parse time, which algs it may verify
	 * (kty, crv, alg, use, size): the header cannot widen that. */
	if (!(key->algs & t->alg))
		return reject(ret_reason, "key does not fit alg");
	err = jws_verify_raw(t->alg, key->pkey, (const unsigned char *)t->signing_input, t->signing_input_len,
			     t->sig, t->sig_len);
	if (err == BROKER_ERR_NOMEM)
		return err;
	if (err != BROKER_OK)
		return reject(ret_reason, "signature invalid");
	return BROKER_OK;
}

/* ---- claims ---- */

/* A NumericDate claim as the broker accepts it: a JSON integer (jansson
 * keeps 1.0 and 1e3 as reals, and refuses integers beyond int64 at parse
 * time), not negative. */
static int numeric_date(const json_t *claims, const char *name, int64_t *ret)
{
	json_t *v = json_object_get(claims, name);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*ret = (int64_t)json_integer_value(v);
	return 1;
}

static bool audience_accepted(const struct token_rules *r, const char *aud, size_t len)
{
	if (strlen(aud) != len)
		return false; /* an embedded NUL would fool strcmp */
	for (size_t i = 0; i < r->n_audiences; i++)
		if (r->audiences[i] && strcmp(r->audiences[i], aud) == 0)
			return true;
	return false;
}

static enum broker_err check_audience(const json_t *claims, const struct token_rules *r, const char **ret_reason)
{
	json_t *aud = json_object_get(claims, "aud"), *el;
	size_t i;
	bool found = false;

	if (!aud)
		return reject(ret_reason, "aud missing");
	if (json_is_string(aud)) {
		if (!audience_accepted(r, json_string_value(aud), json_string_length(aud)))
			return reject(ret_reason, "aud not accepted");
		return BROKER_OK;
	}
	if (!json_is_array(aud))
		return reject(ret_reason, "aud malformed");
	/* Every element must be a string: a mixed array is malformed, not
	 * "contains a match somewhere". */
	json_array_foreach(aud, i, el) {
		if (!json_is_string(el))
			return reject(ret_reason, "aud malformed");
		if (audience_accepted(r, json_string_value(el), json_string_length(el)))
			found = true;
	}
	if (!found)
		return reject(ret_reason, "aud not accepted");
	return BROKER_OK;
}

enum broker_err token_check_claims(const struct broker_token *t, const struct token_rules *r,
				   const char **ret_reason)
{
	const json_t *c = t->claims;
	json_t *v;
	int64_t exp, nbf, iat;
	int have;
	enum broker_err err;

	v = json_object_get(c, "iss");
	if (!v)
		return reject(ret_reason, "iss missing");
	if (!json_is_string(v) || !r->issuer || strlen(json_string_value(v)) != json_string_length(v) ||
	    strcmp(json_string_value(v), r->issuer) != 0)
		return reject(ret_reason, "iss mismatch");

	err = check_audience(c, r, ret_reason);
	if (err != BROKER_OK)
		return err;

	have = numeric_date(c, "exp", &exp);
	if (have == 0)
		return reject(ret_reason, "exp missing");
	if (have < 0)
		return reject(ret_reason, "exp malformed");
	if (exp <= r->now - r->clock_skew)
		return reject(ret_reason, "token expired");

	have = numeric_date(c, "nbf", &nbf);
	if (have < 0)
		return reject(ret_reason, "nbf malformed");
	if (have > 0 && nbf > r->now + r->clock_skew)
		return reject(ret_reason, "token not yet valid");

	have = numeric_date(c, "iat", &iat);
	if (have == 0)
		return reject(ret_reason, "iat missing");
	if (have < 0)
		return reject(ret_reason, "iat malformed");
	if (iat > r->now + r->clock_skew)
		return reject(ret_reason, "iat in the future");
	if (iat < r->now - r->max_token_age)
		return reject(ret_reason, "token too old");

	v = json_object_get(c, "sub");
	if (!v)
		return reject(ret_reason, "sub missing");
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return reject(ret_reason, "sub malformed");
	return BROKER_OK;
}
