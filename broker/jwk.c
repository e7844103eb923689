/* SPDX-License-Identifier: Apache-2.0 */
/* JWK sets -> OpenSSL keys, once per JWKS fetch.
 *
 * A JWKS is a document from the network: it is bounded (size, key count,
 * depth), parsed strictly (duplicate JSON keys rejected), and every key in
 * it is judged on its own. Keys we cannot or must not use are skipped, not
 * fatal, so one odd key (an encryption key, a future kty) does not take the
 * whole issuer down; but each skipped key can never verify anything.
 * What a kept key may verify is decided here, once, as a bit set of algs
 * (kty/crv/alg/use/key_ops/size applied), so the per-request check is a
 * single AND. */
#include "cibroker/jwt.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include "cibroker/config.h"
#include "cibroker/util.h"

#define JWKS_MAX_DEPTH 8
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192
#define RSA_MAX_E_BYTES 8

#define ALGS_RSA                                                                                            \
	(BROKER_ALG_RS256 | BROKER_ALG_RS384 | BROKER_ALG_RS512 | BROKER_ALG_PS256 | BROKER_ALG_PS384 |     \
	 BROKER_ALG_PS512)

struct broker_jwks {
	atomic_uint refs;
	size_t n_keys;
	struct broker_jwk keys[];
};

/* One table of JOSE names for the whole broker (config.c): the names the
 * config accepts are exactly the names a token may carry. */
unsigned jwt_alg_from_name(const char *name)
{
	return broker_alg_from_name(name);
}

/* A kid is an opaque lookup key; we only insist that it is printable text
 * of sane length, so it cannot smuggle control bytes into audit lines. */
bool jwt_kid_ok(const char *kid, size_t len)
{
	if (len == 0 || len > BROKER_KID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)kid[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

static bool json_str(const json_t *obj, const char *key, const char **ret)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		return false;
	*ret = json_string_value(v);
	return true;
}

/* Strict base64url member -> bytes, at most max bytes. */
static enum broker_err jwk_bytes(const json_t *jwk, const char *key, size_t max, unsigned char **ret,
				 size_t *ret_len)
{
	json_t *v = json_object_get(jwk, key);
	unsigned char *buf = NULL;
	size_t len = 0;
	enum broker_err err;

	if (!json_is_string(v))
		return BROKER_ERR_INVALID;
	if (json_string_length(v) > (max + 2) / 3 * 4)
		return BROKER_ERR_INVALID;
	err = b64url_decode(json_string_value(v), json_string_length(v), &buf, &len);
	if (err != BROKER_OK)
		return err;
	if (len == 0 || len > max) {
		free(buf);
		return BROKER_ERR_INVALID;
	}
	*ret = buf;
	*ret_len = len;
	return BROKER_OK;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = NULL, *check = NULL;
	EVP_PKEY *pkey = NULL, *result = NULL;

	if (!params)
		goto out;
	ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		goto out;
	/* EC: point on the curve, not infinity, right order. RSA: OpenSSL's
	 * public checks (odd n, sane e, no small factors). Done once per
	 * JWKS, so the cost does not matter. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1)
		goto out;
	result = pkey;
	pkey = NULL;
out:
	EVP_PKEY_CTX_free(check);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pkey);
	OSSL_PARAM_free(params);
	return result;
}

static EVP_PKEY *jwk_rsa_key(const json_t *jwk)
{
	unsigned char *n = NULL, *e = NULL;
	size_t n_len, e_len;
	BIGNUM *bn_n = NULL, *bn_e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;

	if (jwk_bytes(jwk, "n", RSA_MAX_BITS / 8 + 1, &n, &n_len) != BROKER_OK ||
	    jwk_bytes(jwk, "e", RSA_MAX_E_BYTES, &e, &e_len) != BROKER_OK)
		goto out;
	bn_n = BN_bin2bn(n, (int)n_len, NULL);
	bn_e = BN_bin2bn(e, (int)e_len, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn_n || !bn_e || !bld)
		goto out;
	if (BN_num_bits(bn_n) > RSA_MAX_BITS)
		goto out;
	/* SP 800-56B: e odd and >= 65537. A small e is only safe with a
	 * perfect padding check (Bleichenbacher's e=3 forgery); no issuer
	 * needs one, so none is accepted. */
	if (!BN_is_odd(bn_e) || BN_num_bits(bn_e) < 17)
		goto out;
	if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
		goto out;
	pkey = pkey_from_params("RSA", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_n);
	BN_free(bn_e);
	free(n);
	free(e);
	return pkey;
}

static EVP_PKEY *jwk_ec_key(const json_t *jwk, const char *group, size_t coord_len)
{
	unsigned char *x = NULL, *y = NULL, point[1 + 2 * 48];
	size_t x_len, y_len;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;

	/* RFC 7518 §6.2.1.2: coordinates are exactly the field size, so a
	 * short or long x/y is malformed, not "close enough". */
	if (jwk_bytes(jwk, "x", coord_len, &x, &x_len) != BROKER_OK ||
	    jwk_bytes(jwk, "y", coord_len, &y, &y_len) != BROKER_OK)
		goto out;
	if (x_len != coord_len || y_len != coord_len)
		goto out;
	point[0] = 0x04; /* uncompressed SEC1 point */
	memcpy(point + 1, x, coord_len);
	memcpy(point + 1 + coord_len, y, coord_len);
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * coord_len))
		goto out;
	pkey = pkey_from_params("EC", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	free(x);
	free(y);
	return pkey;
}

/* key_ops, if present, must be an array of strings naming "verify". */
static bool jwk_key_ops_ok(const json_t *jwk)
{
	json_t *ops = json_object_get(jwk, "key_ops"), *op;
	size_t i;
	bool verify = false;

	if (!ops)
		return true;
	if (!json_is_array(ops))
		return false;
	json_array_foreach(ops, i, op) {
		if (!json_is_string(op))
			return false;
		if (strcmp(json_string_value(op), "verify") == 0)
			verify = true;
	}
	return verify;
}

/* One JWK -> key with its alg set, or false if the key is to be skipped. */
static bool jwk_to_key(const json_t *jwk, struct broker_jwk *ret)
{
	const char *kty, *kid, *crv;
	json_t *v;
	EVP_PKEY *pkey = NULL;
	unsigned algs;

	if (!json_is_object(jwk) || !json_str(jwk, "kty", &kty))
		return false;
	/* Keys are found by kid only: a key without one could only be
	 * picked by guessing, which is how confusion attacks start. */
	v = json_object_get(jwk, "kid");
	if (!json_is_string(v) || !jwt_kid_ok(json_string_value(v), json_string_length(v)))
		return false;
	kid = json_string_value(v);
	/* Private material in a public key set means the issuer leaked it:
	 * anyone may hold it, so nothing it "signs" proves anything. */
	if (json_object_get(jwk, "d") || json_object_get(jwk, "p") || json_object_get(jwk, "k"))
		return false;
	if ((v = json_object_get(jwk, "use")) && (!json_is_string(v) || strcmp(json_string_value(v), "sig") != 0))
		return false;
	if (!jwk_key_ops_ok(jwk))
		return false;

	if (strcmp(kty, "RSA") == 0) {
		pkey = jwk_rsa_key(jwk);
		if (!pkey)
			return false;
		if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
			EVP_PKEY_free(pkey);
			return false;
		}
		algs = ALGS_RSA;
	} else if (strcmp(kty, "EC") == 0) {
		if (!json_str(jwk, "crv", &crv))
			return false;
		if (strcmp(crv, "P-256") == 0) {
			pkey = jwk_ec_key(jwk, "P-256", 32);
			algs = BROKER_ALG_ES256;
		} else if (strcmp(crv, "P-384") == 0) {
			pkey = jwk_ec_key(jwk, "P-384", 48);
			algs = BROKER_ALG_ES384;
		} else {
			return false;
		}
		if (!pkey)
			return false;
	} else {
		return false; /* oct (HMAC), OKP, anything newer: not for us */
	}

	if ((v = json_object_get(jwk, "alg"))) {
		unsigned bit = json_is_string(v) ? jwt_alg_from_name(json_string_value(v)) : 0;

		if (!bit || !(bit & algs)) {
			EVP_PKEY_free(pkey);
			return false;
		}
		algs = bit;
	}
	ret->kid = strdup(kid);
	if (!ret->kid) {
		EVP_PKEY_free(pkey);
		return false;
	}
	ret->pkey = pkey;
	ret->algs = algs;
	return true;
}

static void jwks_free(struct broker_jwks *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n_keys; i++) {
		free(set->keys[i].kid);
		EVP_PKEY_free(set->keys[i].pkey);
	}
	free(set);
}

static void jwk_clear(struct broker_jwk *k)
{
	free(k->kid);
	EVP_PKEY_free(k->pkey);
	k->kid = NULL;
	k->pkey = NULL;
}

enum broker_err jwks_parse(const char *json, size_t len, struct broker_jwks **ret, const char **ret_reason)
{
	enum broker_err err = BROKER_ERR_INVALID;
	const char *reason = "JWKS is not valid JSON";
	json_t *doc = NULL, *keys, *jwk;
	struct broker_jwks *set = NULL;
	bool *dup = NULL;
	size_t n, kept = 0, i;

	if (!json || len > BROKER_JWKS_MAX_BYTES) {
		err = BROKER_ERR_TOOBIG;
		reason = "JWKS too large";
		goto out;
	}
	doc = broker_json_parse(json, len, JWKS_MAX_DEPTH);
	if (!doc)
		goto out;
	keys = json_object_get(doc, "keys");
	if (!json_is_object(doc) || !json_is_array(keys)) {
		reason = "JWKS has no keys array";
		goto out;
	}
	n = json_array_size(keys);
	if (n > BROKER_JWKS_MAX_KEYS) {
		err = BROKER_ERR_TOOBIG;
		reason = "JWKS has too many keys";
		goto out;
	}
	set = calloc(1, sizeof(*set) + n * sizeof(set->keys[0]));
	dup = calloc(n ? n : 1, sizeof(*dup));
	if (!set || !dup) {
		err = BROKER_ERR_NOMEM;
		reason = "out of memory";
		goto out;
	}
	atomic_init(&set->refs, 1);
	json_array_foreach(keys, i, jwk) {
		if (jwk_to_key(jwk, &set->keys[kept]))
			kept++;
	}
	ERR_clear_error(); /* rejected keys leave OpenSSL errors on this thread */

	/* Two usable keys under one kid: which one the issuer meant is a
	 * guess, so neither is used. */
	for (i = 0; i < kept; i++)
		for (size_t j = i + 1; j < kept; j++)
			if (strcmp(set->keys[i].kid, set->keys[j].kid) == 0)
				dup[i] = dup[j] = true;
	n = 0;
	for (i = 0; i < kept; i++) {
		if (dup[i])
			jwk_clear(&set->keys[i]);
		else
			set->keys[n++] = set->keys[i];
	}
	set->n_keys = n;
	/* A set with no usable key cannot verify anything; reporting it as
	 * an error lets the issuer cache keep its last good keys rather than
	 * swap in an empty set. */
	if (n == 0) {
		err = BROKER_ERR_INVALID;
		reason = "JWKS has no usable keys";
		goto out;
	}
	*ret = set;
	set = NULL;
	err = BROKER_OK;
	reason = NULL;
out:
	json_decref(doc);
	free(dup);
	jwks_free(set);
	if (err != BROKER_OK && ret_reason)
		*ret_reason = reason;
	return err;
}

const struct broker_jwk *jwks_lookup(const struct broker_jwks *set, const char *kid)
{
	if (!set || !kid)
		return NULL;
	for (size_t i = 0; i < set->n_keys; i++)
		if (strcmp(set->keys[i].kid, kid) == 0)
			return &set->keys[i];
	return NULL;
}

size_t jwks_count(const struct broker_jwks *set)
{
	return set ? set->n_keys : 0;
}

struct broker_jwks *jwks_ref(struct broker_jwks *set)
{
	if (set)
		atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
	return set;
}

void jwks_unref(struct broker_jwks *set)
{
	if (!set)
		return;
	/* acq_rel: the last holder must see every other holder's reads done
	 * before it frees the keys. */
	if (atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) == 1)
		jwks_free(set);
}
