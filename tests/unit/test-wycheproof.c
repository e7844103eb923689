/* SPDX-License-Identifier: Apache-2.0 */
/* Wycheproof vectors against the signature layer (jws_verify_raw) and the
 * JWK layer (jwks_parse). Every vector is one CHECK:
 *   valid      -> must verify
 *   invalid    -> must not verify
 *   acceptable -> either; the outcome is printed, not judged (these are
 *                 legacy encodings Wycheproof lets a library take or leave)
 * Keys come from the group's JWK through jwks_parse when the group has one
 * (and must equal the DER key), otherwise from the DER key.
 *
 * The vector directory is argv[1] or $WYCHEPROOF_DIR; if it or a file is
 * missing the test fails: a crypto test that silently runs nothing is worse
 * than none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "check.h"
#include "cibroker/config.h"
#include "cibroker/jwt.h"
#include "cibroker/util.h"

#define VECTOR_FILE_MAX (64u << 20)

static size_t n_acceptable_accepted, n_acceptable_rejected;

static unsigned char *unhex(const char *s, size_t *ret_len)
{
	size_t n = strlen(s) / 2;
	unsigned char *out = malloc(n ? n : 1);

	for (size_t i = 0; i < n; i++) {
		unsigned int b;

		if (sscanf(s + 2 * i, "%2x", &b) != 1) {
			free(out);
			return NULL;
		}
		out[i] = (unsigned char)b;
	}
	*ret_len = n;
	return out;
}

static json_t *load_vectors(const char *dir, const char *name)
{
	char path[4096];
	char *buf = NULL;
	size_t len;
	json_t *doc;
	json_error_t jerr;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (broker_read_file(path, VECTOR_FILE_MAX, &buf, &len) != BROKER_OK) {
		fprintf(stderr, "FAIL: cannot read Wycheproof vectors %s\n", path);
		return NULL;
	}
	doc = json_loadb(buf, len, 0, &jerr);
	free(buf);
	if (!doc)
		fprintf(stderr, "FAIL: %s: %s\n", path, jerr.text);
	return doc;
}

/* The group's JWK through our own JWK parser (kid added if absent). */
static struct broker_jwks *jwks_of_jwk(json_t *jwk, const char **ret_kid)
{
	json_t *copy = json_deep_copy(jwk), *doc;
	struct broker_jwks *set = NULL;
	const char *reason;
	char *text;

	if (!json_object_get(copy, "kid"))
		json_object_set_new(copy, "kid", json_string("wycheproof"));
	*ret_kid = json_string_value(json_object_get(jwk, "kid"));
	if (!*ret_kid)
		*ret_kid = "wycheproof";
	doc = json_pack("{s:[o]}", "keys", copy);
	text = json_dumps(doc, JSON_COMPACT);
	if (jwks_parse(text, strlen(text), &set, &reason) != BROKER_OK)
		set = NULL;
	free(text);
	json_decref(doc);
	return set;
}

static void record(const char *file, json_t *t, bool accepted)
{
	const char *result = json_string_value(json_object_get(t, "result"));
	long long id = json_integer_value(json_object_get(t, "tcId"));

	if (strcmp(result, "valid") == 0) {
		CHECK(accepted, "%s tcId %lld (valid, %s) rejected", file, id,
		      json_string_value(json_object_get(t, "comment")));
	} else if (strcmp(result, "invalid") == 0) {
		CHECK(!accepted, "%s tcId %lld (invalid, %s) accepted", file, id,
		      json_string_value(json_object_get(t, "comment")));
	} else {
		printf("# %s tcId %lld acceptable (%s): %s\n", file, id,
		       json_string_value(json_object_get(t, "comment")), accepted ? "accepted" : "rejected");
		if (accepted)
			n_acceptable_accepted++;
		else
			n_acceptable_rejected++;
	}
}

/* Signature-verify files: one public key per group, msg/sig hex. */
static void run_verify_file(const char *dir, const char *file, unsigned alg, const char *jwk_member)
{
	json_t *doc = load_vectors(dir, file), *g, *t;
	size_t gi, ti, n = 0;

	CHECK(doc != NULL, "vector file %s/%s missing or unreadable", dir, file);
	if (!doc)
		return;
	json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
		size_t der_len = 0;
		unsigned char *der = unhex(json_string_value(json_object_get(g, "publicKeyDer")), &der_len);
		const unsigned char *p = der;
		EVP_PKEY *der_key = der ? d2i_PUBKEY(NULL, &p, (long)der_len) : NULL;
		json_t *jwk = json_object_get(g, jwk_member);
		struct broker_jwks *set = NULL;
		const struct broker_jwk *k = NULL;
		EVP_PKEY *key = der_key;
		const char *kid;

		CHECK(der_key != NULL, "%s group %zu: DER key does not parse", file, gi);
		if (jwk) {
			set = jwks_of_jwk(jwk, &kid);
			k = jwks_lookup(set, kid);
			if (k) {
				/* Our JWK -> EVP conversion must give the very same key. */
				CHECK(der_key && EVP_PKEY_eq(k->pkey, der_key) == 1, "%s group %zu: JWK key != DER key",
				      file, gi);
				CHECK(k->algs & alg, "%s group %zu: JWK key may not verify this alg", file, gi);
				key = k->pkey;
			} else {
				/* Documented refusals only: RSA e < 65537. */
				printf("# %s group %zu: JWK refused by jwks_parse (e=%s), DER key used\n", file, gi,
				       json_string_value(json_object_get(jwk, "e")));
				CHECK(json_object_get(jwk, "e") && strcmp(json_string_value(json_object_get(jwk, "e")), "AQAB"),
				      "%s group %zu: usable JWK refused", file, gi);
			}
		}
		json_array_foreach(json_object_get(g, "tests"), ti, t) {
			size_t msg_len = 0, sig_len = 0;
			unsigned char *msg = unhex(json_string_value(json_object_get(t, "msg")), &msg_len);
			unsigned char *sig = unhex(json_string_value(json_object_get(t, "sig")), &sig_len);
			bool ok = key && msg && sig && jws_verify_raw(alg, key, msg, msg_len, sig, sig_len) == BROKER_OK;

			record(file, t, ok);
			n++;
			free(msg);
			free(sig);
		}
		jwks_unref(set);
		EVP_PKEY_free(der_key);
		free(der);
	}
	CHECK(n == (size_t)json_integer_value(json_object_get(doc, "numberOfTests")), "%s: ran %zu of %lld vectors",
	      file, n, (long long)json_integer_value(json_object_get(doc, "numberOfTests")));
	printf("# %s: %zu vectors\n", file, n);
	json_decref(doc);
}

/* Compact JWS through our pieces, without the claim rules (the vectors'
 * payloads are not claim sets): strict split, strict base64url, header
 * JSON with alg and kid, key from the group's JWKS, jws_verify_raw. */
static bool jws_compact_verifies(const char *jws, const struct broker_jwks *set)
{
	const char *d1, *d2;
	unsigned char *h = NULL, *pl = NULL, *sig = NULL;
	size_t h_len, pl_len, sig_len, len = strlen(jws);
	json_t *hdr = NULL;
	const struct broker_jwk *k;
	unsigned alg;
	bool ok = false;

	if (len == 0 || len > BROKER_TOKEN_MAX || jws[0] == '{')
		return false;
	d1 = strchr(jws, '.');
	d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	if (!d2 || strchr(d2 + 1, '.') || d1 == jws || d2[1] == '\0')
		return false;
	if (b64url_decode(jws, (size_t)(d1 - jws), &h, &h_len) != BROKER_OK ||
	    b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pl, &pl_len) != BROKER_OK ||
	    b64url_decode(d2 + 1, strlen(d2 + 1), &sig, &sig_len) != BROKER_OK)
		goto out;
	hdr = broker_json_parse(h, h_len, BROKER_JSON_MAX_DEPTH);
	if (!json_is_object(hdr))
		goto out;
	alg = jwt_alg_from_name(json_string_value(json_object_get(hdr, "alg")));
	k = jwks_lookup(set, json_string_value(json_object_get(hdr, "kid")));
	if (!alg || !k || !(k->algs & alg))
		goto out;
	ok = jws_verify_raw(alg, k->pkey, (const unsigned char *)jws, (size_t)(d2 - jws), sig, sig_len) == BROKER_OK;
out:
	json_decref(hdr);
	free(h);
	free(pl);
	free(sig);
	return ok;
}

/* What the broker's contract says, where it is stricter than Wycheproof's
 * "valid": HMAC and ES512 are never accepted, and a JWK's alg pins the
 * header alg (DESIGN.md). Derived from the vector data, not our code. */
static const char *policy_refusal(json_t *g, json_t *t)
{
	json_t *pub = json_object_get(g, "public");
	const char *jws = json_string_value(json_object_get(t, "jws"));
	const char *dot = jws ? strchr(jws, '.') : NULL;
	unsigned char *h = NULL;
	size_t h_len;
	json_t *hdr = NULL;
	const char *why = NULL, *alg;

	if (!pub)
		return "no public key (HMAC group): HMAC is never accepted";
	if (!dot || b64url_decode(jws, (size_t)(dot - jws), &h, &h_len) != BROKER_OK)
		return NULL;
	hdr = json_loadb((const char *)h, h_len, 0, NULL);
	alg = json_string_value(json_object_get(hdr, "alg"));
	if (alg && (strncmp(alg, "HS", 2) == 0 || strcmp(alg, "ES512") == 0))
		why = "alg never accepted by the broker";
	else if (alg && json_is_string(json_object_get(pub, "alg")) &&
		 strcmp(alg, json_string_value(json_object_get(pub, "alg"))) != 0)
		why = "JWK alg differs from header alg";
	json_decref(hdr);
	free(h);
	return why;
}

static void run_jws_file(const char *dir)
{
	const char *file = "json_web_signature_test.json";
	json_t *doc = load_vectors(dir, file), *g, *t;
	size_t gi, ti, n = 0, n_policy = 0;

	CHECK(doc != NULL, "vector file %s/%s missing or unreadable", dir, file);
	if (!doc)
		return;
	json_array_foreach(json_object_get(doc, "testGroups"), gi, g) {
		json_t *pub = json_object_get(g, "public");
		const char *kid = NULL;
		struct broker_jwks *set = pub ? jwks_of_jwk(pub, &kid) : NULL;

		json_array_foreach(json_object_get(g, "tests"), ti, t) {
			const char *jws = json_string_value(json_object_get(t, "jws"));
			bool ok = jws && set && jws_compact_verifies(jws, set);
			const char *why = policy_refusal(g, t);

			n++;
			if (why) {
				CHECK(!ok, "%s tcId %lld: accepted though %s", file,
				      (long long)json_integer_value(json_object_get(t, "tcId")), why);
				n_policy++;
				continue;
			}
			record(file, t, ok);
		}
		jwks_unref(set);
	}
	printf("# %s: %zu vectors, %zu of them refused by broker policy (HMAC, ES512, JWK alg pin)\n", file, n,
	       n_policy);
	json_decref(doc);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : getenv("WYCHEPROOF_DIR");

	if (!dir || !*dir) {
		fprintf(stderr, "FAIL: no Wycheproof directory (argv[1] or WYCHEPROOF_DIR)\n");
		CHECK(0, "Wycheproof directory not given");
		return check_done();
	}
	run_verify_file(dir, "ecdsa_secp256r1_sha256_p1363_test.json", BROKER_ALG_ES256, "publicKeyJwk");
	run_verify_file(dir, "rsa_signature_2048_sha256_test.json", BROKER_ALG_RS256, "keyJwk");
	run_verify_file(dir, "rsa_pss_2048_sha256_mgf1_32_test.json", BROKER_ALG_PS256, "publicKeyJwk");
	run_jws_file(dir);
	printf("# acceptable vectors: %zu accepted, %zu rejected\n", n_acceptable_accepted, n_acceptable_rejected);
	return check_done();
}
