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

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

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

/* Verification contexts, a few per thread, made once per (key, alg): OpenSSL
 * 3 looks the algorithm up in its provider tables on every
 * EVP_DigestVerifyInit (about 2 % of an exchange, with a lock), while
 * EVP_PKEY_verify may be called again and again on one context
 * (EVP_PKEY_verify(3)). An entry exists only for a key that passed the
 * type, size and curve checks for that alg. Each context holds a reference
 * to its key, so a key dropped by a JWKS refresh stays alive (and its
 * address unique) until its entry is replaced or the thread exits. */
#define VERIFY_CACHE_SLOTS 4
struct verify_slot {
	EVP_PKEY *pkey;
	unsigned alg;
	size_t rsa_size;  /* RSA: the only signature length accepted */
	EVP_PKEY_CTX *ctx;
};
struct verify_cache {
	struct verify_slot slot[VERIFY_CACHE_SLOTS];
	unsigned next;    /* round-robin replacement */
};
static pthread_key_t verify_cache_key;
static pthread_once_t verify_cache_once = PTHREAD_ONCE_INIT;
static bool verify_cache_usable;

static void verify_cache_free(void *p)
{
	struct verify_cache *c = p;

	if (!c)
		return;
	for (size_t i = 0; i < VERIFY_CACHE_SLOTS; i++)
		EVP_PKEY_CTX_free(c->slot[i].ctx);
	free(c);
}

static void verify_cache_init(void)
{
	verify_cache_usable = pthread_key_create(&verify_cache_key, verify_cache_free) == 0;
}

static struct verify_cache *verify_cache_get(void)
{
	struct verify_cache *c;

	pthread_once(&verify_cache_once, verify_cache_init);
	if (!verify_cache_usable)
		return NULL;
	c = pthread_getspecific(verify_cache_key);
	if (!c && (c = calloc(1, sizeof(*c))) && pthread_setspecific(verify_cache_key, c) != 0) {
		free(c);
		c = NULL;
	}
	return c;
}

/* Key type, size and curve for alg, then a context ready for EVP_PKEY_verify
 * of a digest: padding and hash fixed here, once. */
static enum broker_err verify_slot_make(unsigned alg, EVP_PKEY *pkey, struct verify_slot *ret)
{
	const EVP_MD *md = alg_md(alg);
	EVP_PKEY_CTX *ctx;
	size_t rsa_size = 0;

	/* The key's type decides the scheme as much as the alg does: an
	 * RSA key never verifies ES*, an EC key never RS*, and the curve
	 * must be the alg's own. */
	if (alg & (ALGS_RSA_PKCS1 | ALGS_RSA_PSS)) {
		if (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS ||
		    EVP_PKEY_get_size(pkey) <= 0)
			return BROKER_ERR_TOKEN;
		rsa_size = (size_t)EVP_PKEY_get_size(pkey);
	} else if (alg == BROKER_ALG_ES256) {
		if (!ec_group_is(pkey, "prime256v1"))
			return BROKER_ERR_TOKEN;
	} else if (alg == BROKER_ALG_ES384) {
		if (!ec_group_is(pkey, "secp384r1"))
			return BROKER_ERR_TOKEN;
	} else {
		return BROKER_ERR_TOKEN;
	}
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!ctx)
		return BROKER_ERR_NOMEM;
	if (EVP_PKEY_verify_init(ctx) != 1)
		goto fail;
	if (alg & ALGS_RSA_PKCS1) {
		if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)
			goto fail;
	} else if (alg & ALGS_RSA_PSS) {
		/* RFC 7518 §3.5: MGF1 with the same hash, salt = hash length. */
		if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
		    EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
		    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) != 1)
			goto fail;
	}
	/* Also makes the verify check the digest's length against the hash. */
	if (EVP_PKEY_CTX_set_signature_md(ctx, md) != 1)
		goto fail;
	*ret = (struct verify_slot){.pkey = pkey, .alg = alg, .rsa_size = rsa_size, .ctx = ctx};
	return BROKER_OK;
fail:
	EVP_PKEY_CTX_free(ctx);
	return BROKER_ERR_TOKEN;
}

/* Hash of the signing input for alg (RS/PS/ES 256, 384, 512). */
static size_t alg_digest(unsigned alg, const unsigned char *msg, size_t len, unsigned char out[SHA512_DIGEST_LENGTH])
{
	const EVP_MD *md = alg_md(alg);

	if (md == EVP_sha256()) {
		broker_sha256(msg, len, out);
		return SHA256_DIGEST_LENGTH;
	}
	if (md == EVP_sha384()) {
		SHA384(msg, len, out);
		return SHA384_DIGEST_LENGTH;
	}
	SHA512(msg, len, out);
	return SHA512_DIGEST_LENGTH;
}

enum broker_err jws_verify_raw(unsigned alg, EVP_PKEY *pkey, const unsigned char *msg, size_t msg_len,
			       const unsigned char *sig, size_t sig_len)
{
	struct verify_cache *cache;
	struct verify_slot own = {0}, *slot = NULL;
	unsigned char *der = NULL, digest[SHA512_DIGEST_LENGTH];
	size_t der_len = 0, digest_len;
	enum broker_err err = BROKER_ERR_TOKEN;

	if (!alg_md(alg) || !pkey || !msg || !sig)
		return BROKER_ERR_TOKEN;
	cache = verify_cache_get();
	for (size_t i = 0; cache && i < VERIFY_CACHE_SLOTS; i++)
		if (cache->slot[i].ctx && cache->slot[i].pkey == pkey && cache->slot[i].alg == alg)
			slot = &cache->slot[i];
	if (!slot) {
		err = verify_slot_make(alg, pkey, &own);
		if (err != BROKER_OK)
			goto out;
		if (cache) {
			slot = &cache->slot[cache->next++ % VERIFY_CACHE_SLOTS];
			EVP_PKEY_CTX_free(slot->ctx);
			*slot = own;
			own.ctx = NULL;
		} else {
			slot = &own;
		}
	}
	err = BROKER_ERR_TOKEN;
	if (alg & (ALGS_RSA_PKCS1 | ALGS_RSA_PSS)) {
		if (sig_len != slot->rsa_size)
			goto out;
	} else {
		/* JWS r||s to DER here, so a DER, short or long signature
		 * never reaches OpenSSL as such. */
		err = ecdsa_jws_to_der(sig, sig_len, alg == BROKER_ALG_ES256 ? 32 : 48, &der, &der_len);
		if (err != BROKER_OK)
			goto out;
		err = BROKER_ERR_TOKEN;
	}
	digest_len = alg_digest(alg, msg, msg_len, digest);
	if (EVP_PKEY_verify(slot->ctx, der ? der : sig, der ? der_len : sig_len, digest, digest_len) == 1)
		err = BROKER_OK;
	else if (slot != &own) {
		/* A context that failed once is not trusted again: the next
		 * token makes a fresh one. */
		EVP_PKEY_CTX_free(slot->ctx);
		*slot = (struct verify_slot){0};
	}
out:
	/* A failed verification leaves errors on this thread's queue; do
	 * not let them leak into whatever OpenSSL call comes next. */
	ERR_clear_error();
	EVP_PKEY_CTX_free(own.ctx);
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
