/* SPDX-License-Identifier: Apache-2.0 */
/* Minting the broker's own deploy JWTs: ES256 (RFC 7518 §3.4) with the
 * active signing key, signed through OpenSSL EVP with the key parsed once at
 * load. libjwt is not used here: it re-parses the PEM key on every token
 * (about 20x slower, see docs/keys.md) and sorts header members. */
#include "cibroker/mint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

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

/* EVP hands out DER (RFC 3279); JWS wants the fixed-width r||s of RFC 7518
 * §3.4, each half left-padded to 32 bytes (a short r or s happens in about
 * 1 of 128 signatures, so the padding matters). */
static enum broker_err es256_sign(EVP_PKEY *pkey, const char *in, size_t len, unsigned char out[2 * ES256_COORD])
{
	enum broker_err err = BROKER_ERR_CRYPTO;
	unsigned char der[ES256_DER_MAX];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	ECDSA_SIG *sig = NULL;
	/* One context per call: the EVP_PKEY itself is shared read-only by all
	 * threads, which OpenSSL 3 supports (openssl-threads(7)). */
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!ctx) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, pkey, NULL) != 1)
		goto out;
	if (EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)in, len) != 1)
		goto out;
	sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!sig || p != der + der_len)
		goto out;
	if (BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, ES256_COORD) != ES256_COORD ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + ES256_COORD, ES256_COORD) != ES256_COORD)
		goto out;
	err = BROKER_OK;
out:
	if (err != BROKER_OK)
		ERR_clear_error();
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(der, sizeof(der));
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
 * the same in every log and diff. */
static enum broker_err build_claims(const struct mint_jwt_request *req, const char *jti, char **ret)
{
	enum broker_err err = BROKER_ERR_NOMEM;
	json_t *claims = NULL;
	const char *name;
	json_t *value;
	char *text;

	claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:O}", "iss", req->iss, "sub", req->sub, "aud",
			   req->aud, "iat", (json_int_t)req->now, "nbf", (json_int_t)req->now, "exp",
			   (json_int_t)(req->now + req->ttl), "jti", jti, "policy", req->policy, "ci", (json_t *)req->ci);
	if (!claims) {
		/* json_pack also fails on strings that are not valid UTF-8. */
		err = BROKER_ERR_INVALID;
		goto out;
	}
	if (req->extra) {
		json_object_foreach((json_t *)req->extra, name, value) {
			/* Policy loading refuses these already; refusing again here
			 * keeps a template bug from ever overriding iss or exp. */
			if (claim_is_reserved(name)) {
				err = BROKER_ERR_INVALID;
				goto out;
			}
			if (json_object_set(claims, name, value) < 0)
				goto out;
		}
	}
	text = json_dumps(claims, JSON_COMPACT);
	if (!text)
		goto out;
	*ret = text;
	err = BROKER_OK;
out:
	json_decref(claims);
	return err;
}

enum broker_err mint_jwt(const struct broker_signing_keys *ks, const struct mint_jwt_request *req, char **ret_token,
			 char ret_jti[23])
{
	enum broker_err err;
	EVP_PKEY *pkey = signing_keys_active(ks);
	const char *kid = signing_keys_active_kid(ks);
	char header[96], jti[23];
	char *header_b64 = NULL, *claims = NULL, *claims_b64 = NULL, *sig_b64 = NULL, *token = NULL;
	unsigned char sig[2 * ES256_COORD];
	size_t hlen, clen, slen, input_len;
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
	err = BROKER_ERR_NOMEM;
	header_b64 = b64url_encode(header, (size_t)n);
	if (!header_b64)
		goto out;
	err = build_claims(req, jti, &claims);
	if (err != BROKER_OK)
		goto out;
	err = BROKER_ERR_TOOBIG;
	clen = strlen(claims);
	if (clen > MINT_SIGNING_INPUT_MAX)
		goto out;
	err = BROKER_ERR_NOMEM;
	claims_b64 = b64url_encode(claims, clen);
	if (!claims_b64)
		goto out;
	hlen = strlen(header_b64);
	clen = strlen(claims_b64);
	err = BROKER_ERR_TOOBIG;
	if (hlen + 1 + clen > MINT_SIGNING_INPUT_MAX)
		goto out;
	/* header.claims.sig: the signature's 86 characters fit in the slack. */
	err = BROKER_ERR_NOMEM;
	token = malloc(hlen + 1 + clen + 1 + 88);
	if (!token)
		goto out;
	memcpy(token, header_b64, hlen);
	token[hlen] = '.';
	memcpy(token + hlen + 1, claims_b64, clen);
	input_len = hlen + 1 + clen;
	token[input_len] = '\0';

	err = es256_sign(pkey, token, input_len, sig);
	if (err != BROKER_OK)
		goto out;
	err = BROKER_ERR_NOMEM;
	sig_b64 = b64url_encode(sig, sizeof(sig));
	if (!sig_b64)
		goto out;
	slen = strlen(sig_b64);
	token[input_len] = '.';
	memcpy(token + input_len + 1, sig_b64, slen + 1);

	*ret_token = token;
	token = NULL;
	memcpy(ret_jti, jti, sizeof(jti));
	err = BROKER_OK;
out:
	/* The token is a bearer credential; its parts are wiped with it. */
	broker_secret_free(token);
	broker_secret_free(sig_b64);
	broker_secret_free(claims_b64);
	broker_secret_free(claims);
	free(header_b64);
	OPENSSL_cleanse(sig, sizeof(sig));
	return err;
}
