/* SPDX-License-Identifier: Apache-2.0 */
/* Minting the broker's own deploy JWTs: ES256 (RFC 7518 §3.4) with the
 * active signing key, signed through OpenSSL EVP with the key parsed once at
 * load. libjwt is not used here: it re-parses the PEM key on every token
 * (about 20x slower, see docs/keys.md) and sorts header members. */
#include "cibroker/mint.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cibroker/util.h"

/* header.payload is well under this for any sane policy; a policy whose
 * claims blow past it is refused rather than minted. */
#define MINT_SIGNING_INPUT_MAX (64 * 1024)
/* A year: larger lifetimes are certainly a caller bug (limits.max_ttl is
 * enforced by config/policy; this only keeps exp from overflowing). */
#define MINT_TTL_MAX (366 * 86400)
/* ES256 DER signatures are at most 72 bytes. */
#define ES256_DER_MAX 80
#define ES256_COORD 32

/* DESIGN.md "Policies": these cannot be set by a policy's claims. */
static const char *const reserved_claims[] = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "policy", "ci"};

static bool claim_is_reserved(const char *name)
{
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(reserved_claims); i++)
		if (strcmp(name, reserved_claims[i]) == 0)
			return true;
	return false;
}

/* One signing context per thread, made once per key: OpenSSL 3 looks the
 * algorithm up in its provider tables on every EVP_DigestSignInit (about 2 %
 * of an exchange, with a lock), and EVP_PKEY_sign may be called again and
 * again on the same context (EVP_PKEY_sign(3)). The context holds a
 * reference to its key, so a key freed by a reload stays alive (and its
 * address unique) until this thread signs with another key or exits. */
struct sign_cache {
	EVP_PKEY *pkey;
	EVP_PKEY_CTX *ctx;
};
static pthread_key_t sign_cache_key;
static pthread_once_t sign_cache_once = PTHREAD_ONCE_INIT;
static bool sign_cache_usable;

static void sign_cache_free(void *p)
{
	struct sign_cache *c = p;

	if (c) {
		EVP_PKEY_CTX_free(c->ctx);
		free(c);
	}
}

static void sign_cache_init(void)
{
	sign_cache_usable = pthread_key_create(&sign_cache_key, sign_cache_free) == 0;
}

static EVP_PKEY_CTX *sign_ctx_new(EVP_PKEY *pkey)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

	if (ctx && EVP_PKEY_sign_init(ctx) == 1 && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1)
		return ctx;
	EVP_PKEY_CTX_free(ctx);
	return NULL;
}

/* This thread's context for pkey; *ret_cache is NULL when the context is
 * the caller's to free (no thread-specific storage). */
static EVP_PKEY_CTX *sign_ctx_get(EVP_PKEY *pkey, struct sign_cache **ret_cache)
{
	struct sign_cache *c = NULL;

	*ret_cache = NULL;
	pthread_once(&sign_cache_once, sign_cache_init);
	if (sign_cache_usable) {
		c = pthread_getspecific(sign_cache_key);
		if (!c && (c = calloc(1, sizeof(*c))) && pthread_setspecific(sign_cache_key, c) != 0) {
			free(c);
			c = NULL;
		}
	}
	if (!c)
		return sign_ctx_new(pkey);
	if (c->pkey != pkey || !c->ctx) {
		EVP_PKEY_CTX_free(c->ctx);
		c->pkey = NULL;
		c->ctx = sign_ctx_new(pkey);
		if (!c->ctx)
			return NULL;
		c->pkey = pkey;
	}
	*ret_cache = c;
	return c->ctx;
}

/* EVP hands out DER (RFC 3279); JWS wants the fixed-width r||s of RFC 7518
 * §3.4, each half left-padded to 32 bytes (a short r or s happens in about
 * 1 of 128 signatures, so the padding matters). */
static enum broker_err es256_sign(EVP_PKEY *pkey, const char *in, size_t len, unsigned char out[2 * ES256_COORD])
{
	enum broker_err err = BROKER_ERR_CRYPTO;
	unsigned char der[ES256_DER_MAX], digest[SHA256_DIGEST_LENGTH];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	ECDSA_SIG *sig = NULL;
	struct sign_cache *cache;
	/* The EVP_PKEY itself is shared read-only by all threads, which
	 * OpenSSL 3 supports (openssl-threads(7)); the context is this thread's. */
	EVP_PKEY_CTX *ctx = sign_ctx_get(pkey, &cache);

	if (!ctx) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	/* ES256 = ECDSA over SHA-256 of the signing input (RFC 7518 §3.4). */
	broker_sha256(in, len, digest);
	if (EVP_PKEY_sign(ctx, der, &der_len, digest, sizeof(digest)) != 1)
		goto out;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!sig || p != der + der_len)
		goto out;
	if (BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, ES256_COORD) != ES256_COORD ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + ES256_COORD, ES256_COORD) != ES256_COORD)
		goto out;
	err = BROKER_OK;
out:
	if (err != BROKER_OK) {
		ERR_clear_error();
		/* A context that failed once is not trusted again. */
		if (cache) {
			EVP_PKEY_CTX_free(cache->ctx);
			cache->ctx = NULL;
			cache->pkey = NULL;
		}
	}
	if (!cache)
		EVP_PKEY_CTX_free(ctx);
	ECDSA_SIG_free(sig);
	OPENSSL_cleanse(der, sizeof(der));
	OPENSSL_cleanse(digest, sizeof(digest));
	return err;
}

static enum broker_err request_valid(const struct mint_jwt_request *req)
{
	if (!req || !req->iss || !req->sub || !req->aud || !req->policy)
		return BROKER_ERR_INVALID;
	if (req->now <= 0 || req->now > INT64_MAX - MINT_TTL_MAX || req->ttl <= 0 || req->ttl > MINT_TTL_MAX)
		return BROKER_ERR_INVALID;
	if (!json_is_object(req->ci))
		return BROKER_ERR_INVALID;
	if (req->extra && !json_is_object(req->extra))
		return BROKER_ERR_INVALID;
	return BROKER_OK;
}

/* Claims in a fixed order (reserved first, then the policy's) so tokens read
 * the same in every log and diff. Written directly as text: building a json_t
 * only to dump it was a fifth of the non-crypto cost of an exchange
 * (docs/benchmarks.md); the text is byte for byte what json_dumps wrote. */
static enum broker_err build_claims(const struct mint_jwt_request *req, const char *jti, struct broker_buf *ret)
{
	struct broker_json_writer w = {.buf = {.max = MINT_SIGNING_INPUT_MAX}};
	const char *name;
	json_t *value;

	broker_jw_raw(&w, "{\"iss\":");
	broker_jw_string(&w, req->iss);
	broker_jw_raw(&w, ",\"sub\":");
	broker_jw_string(&w, req->sub);
	broker_jw_raw(&w, ",\"aud\":");
	broker_jw_string(&w, req->aud);
	broker_jw_raw(&w, ",\"iat\":");
	broker_jw_int(&w, req->now);
	broker_jw_raw(&w, ",\"nbf\":");
	broker_jw_int(&w, req->now);
	broker_jw_raw(&w, ",\"exp\":");
	broker_jw_int(&w, req->now + req->ttl);
	broker_jw_raw(&w, ",\"jti\":");
	broker_jw_string(&w, jti);
	broker_jw_raw(&w, ",\"policy\":");
	broker_jw_string(&w, req->policy);
	broker_jw_raw(&w, ",\"ci\":");
	broker_jw_value(&w, req->ci);
	if (req->extra) {
		json_object_foreach((json_t *)req->extra, name, value) {
			/* Policy loading refuses these already; refusing again here
			 * keeps a template bug from ever overriding iss or exp. */
			if (claim_is_reserved(name)) {
				broker_buf_wipe(&w.buf);
				return BROKER_ERR_INVALID;
			}
			broker_jw_raw(&w, ",");
			broker_jw_string(&w, name);
			broker_jw_raw(&w, ":");
			broker_jw_value(&w, value);
		}
	}
	broker_jw_raw(&w, "}");
	if (w.err != BROKER_OK) {
		/* BROKER_ERR_INVALID: a string that is not UTF-8, which json_pack
		 * refused too. */
		broker_buf_wipe(&w.buf);
		return w.err;
	}
	*ret = w.buf;
	return BROKER_OK;
}

enum broker_err mint_jwt(const struct broker_signing_keys *ks, const struct mint_jwt_request *req, char **ret_token,
			 char ret_jti[23])
{
	enum broker_err err;
	EVP_PKEY *pkey = signing_keys_active(ks);
	const char *kid = signing_keys_active_kid(ks);
	char header[96], jti[23];
	struct broker_buf claims = {0};
	char *token = NULL;
	unsigned char sig[2 * ES256_COORD];
	size_t hlen, clen, input_len;
	int n;

	if (!pkey || !kid)
		return BROKER_ERR_NOKEYS;
	err = request_valid(req);
	if (err != BROKER_OK)
		return err;
	err = broker_random_id(jti);
	if (err != BROKER_OK)
		return err;

	n = snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
	if (n < 0 || (size_t)n >= sizeof(header))
		return BROKER_ERR_INVALID;
	err = build_claims(req, jti, &claims);
	if (err != BROKER_OK)
		goto out;
	hlen = B64URL_ENCODED_LEN((size_t)n);
	clen = B64URL_ENCODED_LEN(claims.len);
	err = BROKER_ERR_TOOBIG;
	if (hlen + 1 + clen > MINT_SIGNING_INPUT_MAX)
		goto out;
	/* header.claims.sig, each part encoded in place. */
	err = BROKER_ERR_NOMEM;
	token = malloc(hlen + 1 + clen + 1 + B64URL_ENCODED_LEN(sizeof(sig)) + 1);
	if (!token)
		goto out;
	b64url_encode_into(header, (size_t)n, token);
	token[hlen] = '.';
	b64url_encode_into(claims.data, claims.len, token + hlen + 1);
	input_len = hlen + 1 + clen;

	err = es256_sign(pkey, token, input_len, sig);
	if (err != BROKER_OK)
		goto out;
	token[input_len] = '.';
	b64url_encode_into(sig, sizeof(sig), token + input_len + 1);

	*ret_token = token;
	token = NULL;
	memcpy(ret_jti, jti, sizeof(jti));
	err = BROKER_OK;
out:
	/* The token is a bearer credential; its parts are wiped with it. */
	broker_secret_free(token);
	broker_buf_wipe(&claims);
	OPENSSL_cleanse(sig, sizeof(sig));
	return err;
}
