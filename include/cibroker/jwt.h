/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cibroker/err.h"

/* Strict parsing and verification of incoming compact JWS tokens, and JWK
 * sets turned into OpenSSL keys. No HTTP here: keys are handed in. */

#define BROKER_TOKEN_MAX 8192
#define BROKER_JWKS_MAX_KEYS 100
#define BROKER_JWKS_MAX_BYTES (1024 * 1024)
#define BROKER_KID_MAX 256      /* bytes; printable, no control characters */
#define BROKER_JSON_MAX_DEPTH 16 /* header and payload nesting */

/* ---- JWK sets ---- */
struct broker_jwk {
	char *kid;
	EVP_PKEY *pkey;     /* parsed once per refresh */
	unsigned algs;      /* enum broker_alg bits this key may verify (kty/crv/alg/use/size applied) */
};

struct broker_jwks; /* immutable after parse; reference counted */

/* Parse a JWKS document. Unusable keys (enc use, RSA < 2048, unknown kty/crv,
 * no kid, duplicate kid, private parts, ...) are skipped, not fatal; a
 * document that is not a JWKS at all, has more than BROKER_JWKS_MAX_KEYS
 * keys, or has no usable key left, is an error (so a cache keeps its last
 * good set). ret_reason (static string) is set on error. */
enum broker_err jwks_parse(const char *json, size_t len, struct broker_jwks **ret, const char **ret_reason);
const struct broker_jwk *jwks_lookup(const struct broker_jwks *set, const char *kid);
size_t jwks_count(const struct broker_jwks *set);
struct broker_jwks *jwks_ref(struct broker_jwks *set);
void jwks_unref(struct broker_jwks *set); /* NULL ok */

/* ---- Tokens ---- */
struct broker_token {
	json_t *header;
	json_t *claims;
	unsigned alg;            /* enum broker_alg bit of header.alg */
	const char *kid;         /* points into header; never NULL (a token without kid is rejected) */
	unsigned char *sig;
	size_t sig_len;
	const char *signing_input; /* points into raw */
	size_t signing_input_len;
	char *raw;               /* private copy, wiped on free */
	size_t raw_len;
};

/* Structural parse: size, three strict base64url segments, JSON objects
 * without duplicate keys, header rules (alg known and not none/HS*, no crit,
 * no b64, typ absent or JWT). Does not check alg against an issuer.
 * On error ret_reason (static string) says what was wrong. */
enum broker_err token_parse(const char *tok, size_t len, struct broker_token **ret, const char **ret_reason);
void token_free(struct broker_token *t); /* NULL ok */

/* Verify the signature with key for the token's alg (checks key fits alg). */
enum broker_err token_verify_signature(const struct broker_token *t, const struct broker_jwk *key,
				       const char **ret_reason);

struct token_rules {
	const char *issuer;            /* exact iss */
	char *const *audiences;        /* accepted aud values */
	size_t n_audiences;
	unsigned algorithms;           /* enum broker_alg bits */
	int64_t clock_skew;
	int64_t max_token_age;
	int64_t now;                   /* seconds since epoch */
};
/* alg in rules->algorithms. */
enum broker_err token_check_alg(const struct broker_token *t, const struct token_rules *r, const char **ret_reason);
/* iss, aud, exp, nbf, iat, sub rules of DESIGN.md. */
enum broker_err token_check_claims(const struct broker_token *t, const struct token_rules *r, const char **ret_reason);

/* Exact, case-sensitive JOSE alg name -> enum broker_alg bit; 0 if unknown
 * (none and HS* are unknown here). */
unsigned jwt_alg_from_name(const char *name);
/* kid shape: 1..BROKER_KID_MAX bytes, no control characters. */
bool jwt_kid_ok(const char *kid, size_t len);

/* Signature primitive (also run against the Wycheproof vectors): sig is the
 * JWS form (r||s for ECDSA). */
enum broker_err jws_verify_raw(unsigned alg, EVP_PKEY *pkey, const unsigned char *msg, size_t msg_len,
			       const unsigned char *sig, size_t sig_len);
