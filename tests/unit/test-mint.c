/* SPDX-License-Identifier: Apache-2.0 */
/* Signing keys (load, secrecy checks, thumbprints, JWKS, keygen) and minted
 * JWTs. Signatures are checked twice: here with the public key parsed back
 * from the rendered JWKS, and by PyJWT in unit/mint-verify.py. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "check.h"
#include "cibroker/diag.h"
#include "cibroker/keys.h"
#include "cibroker/mint.h"
#include "cibroker/util.h"

#define VERIFIER "unit/mint-verify.py"

static char tmpdir[64];

static char *tmp_path(const char *name)
{
	static char buf[8][256];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
	return p;
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	fwrite(data, 1, len, f);
	fclose(f);
	chmod(path, mode);
}

/* PEM of a key in one of the formats an operator might hand us. */
enum pem_kind { PEM_PKCS8, PEM_TRADITIONAL, PEM_ENCRYPTED };

static void write_key(const char *path, EVP_PKEY *pkey, enum pem_kind kind, mode_t mode)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int ok;

	if (kind == PEM_TRADITIONAL)
		ok = PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL, NULL, 0, NULL, NULL);
	else if (kind == PEM_ENCRYPTED)
		ok = PEM_write_bio_PrivateKey(bio, pkey, EVP_aes_256_cbc(), (unsigned char *)"secret", 6, NULL, NULL);
	else
		ok = PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
	len = BIO_get_mem_data(bio, &data);
	if (ok != 1 || len <= 0) {
		fprintf(stderr, "cannot encode test key\n");
		exit(1);
	}
	write_file(path, data, (size_t)len, mode);
	BIO_free(bio);
}

static bool diag_has(const struct diag *d, const char *needle)
{
	for (size_t i = 0; i < diag_count(d); i++)
		if (strstr(diag_line(d, i), needle))
			return true;
	return false;
}

static enum broker_err load_paths(const char **paths, size_t n, struct diag **ret_d, struct broker_signing_keys **ret)
{
	struct diag *d = diag_new();
	enum broker_err err = signing_keys_load((char *const *)paths, n, NULL, NULL, d, ret);

	if (ret_d)
		*ret_d = d;
	else
		diag_free(d);
	return err;
}

/* RFC 7638 §3.1: the RSA example key and its thumbprint. */
static void test_thumbprint_rfc7638(void)
{
	static const char n_b64[] =
		"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiF"
		"V4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9"
		"c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1"
		"jF44-csFCur-kEgU8awapJzKnqDKgw";
	unsigned char *n_raw = NULL;
	size_t n_len = 0;
	BIGNUM *n = NULL, *e = BN_new();
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *pkey = NULL;
	char kid[44] = "";

	CHECK(b64url_decode(n_b64, strlen(n_b64), &n_raw, &n_len) == BROKER_OK && n_len == 256, "RFC 7638 n decodes");
	n = BN_bin2bn(n_raw, (int)n_len, NULL);
	BN_set_word(e, 65537);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
	params = OSSL_PARAM_BLD_to_param(bld);
	CHECK(EVP_PKEY_fromdata_init(ctx) == 1 && EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1,
	      "RSA key from n, e");
	CHECK(jwk_thumbprint(pkey, kid) == BROKER_OK, "RSA thumbprint computed");
	CHECK(strcmp(kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs") == 0, "RFC 7638 §3.1 thumbprint, got %s", kid);
	CHECK(jwk_thumbprint(NULL, kid) == BROKER_ERR_INVALID, "NULL key has no thumbprint");

	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	free(n_raw);
}

/* The public key of JWKS entry i, rebuilt from its x and y as a relying
 * party would: nothing of the broker's EVP_PKEY is reused. */
static EVP_PKEY *jwks_public_key(const char *jwks, size_t i, char kid_out[44])
{
	json_t *root = broker_json_parse(jwks, strlen(jwks), 8), *jwk;
	unsigned char *x = NULL, *y = NULL, point[65];
	size_t x_len = 0, y_len = 0;
	const char *xs, *ys, *kid;
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;

	jwk = json_array_get(json_object_get(root, "keys"), i);
	xs = json_string_value(json_object_get(jwk, "x"));
	ys = json_string_value(json_object_get(jwk, "y"));
	kid = json_string_value(json_object_get(jwk, "kid"));
	if (!xs || !ys || !kid || strlen(kid) != 43)
		goto out;
	if (b64url_decode(xs, strlen(xs), &x, &x_len) != BROKER_OK || x_len != 32)
		goto out;
	if (b64url_decode(ys, strlen(ys), &y, &y_len) != BROKER_OK || y_len != 32)
		goto out;
	memcpy(kid_out, kid, 44);
	point[0] = 0x04;
	memcpy(point + 1, x, 32);
	memcpy(point + 33, y, 32);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	free(x);
	free(y);
	json_decref(root);
	return pkey;
}

/* Verifies a compact JWS with raw r||s ES256; false on any malformation. */
static bool es256_verify(EVP_PKEY *pub, const char *token)
{
	const char *dot2 = strrchr(token, '.');
	unsigned char *sig = NULL, *der = NULL;
	size_t sig_len = 0;
	ECDSA_SIG *es = NULL;
	EVP_MD_CTX *ctx = NULL;
	int der_len;
	bool ok = false;

	if (!pub || !dot2 || b64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, &sig_len) != BROKER_OK || sig_len != 64)
		goto out;
	es = ECDSA_SIG_new();
	ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
	der_len = i2d_ECDSA_SIG(es, &der);
	ctx = EVP_MD_CTX_new();
	ok = der_len > 0 && EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, pub, NULL) == 1 &&
	     EVP_DigestVerify(ctx, der, (size_t)der_len, (const unsigned char *)token, (size_t)(dot2 - token)) == 1;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	free(sig);
	return ok;
}

/* Segment i (0 header, 1 claims) decoded; NULL if the token is malformed. */
static char *segment(const char *token, int i)
{
	const char *p = token, *end;
	unsigned char *out = NULL;
	size_t len;

	for (int k = 0; k < i; k++) {
		p = strchr(p, '.');
		if (!p)
			return NULL;
		p++;
	}
	end = strchr(p, '.');
	if (!end)
		return NULL;
	if (b64url_decode(p, (size_t)(end - p), &out, &len) != BROKER_OK)
		return NULL;
	return (char *)out;
}

static int count_char(const char *s, char c)
{
	int n = 0;

	for (; *s; s++)
		n += *s == c;
	return n;
}

static void test_keygen_and_load(EVP_PKEY **ret_a, EVP_PKEY **ret_b)
{
	char kid[44] = "", again[44] = "";
	const char *path = tmp_path("gen.pem");
	struct broker_signing_keys *ks = NULL;
	struct stat st;
	char *pem = NULL;
	size_t len = 0;

	CHECK(signing_key_generate_file(path, kid) == BROKER_OK, "keygen writes a key");
	CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "keygen file mode is 0600 (got %o)",
	      (unsigned)(st.st_mode & 07777));
	CHECK(strlen(kid) == 43, "kid is 43 chars");
	CHECK(broker_read_file(path, 65536, &pem, &len) == BROKER_OK &&
		      strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28) == 0,
	      "keygen writes PKCS#8 PEM");
	free(pem);
	errno = 0;
	CHECK(signing_key_generate_file(path, again) == BROKER_ERR_IO && errno == EEXIST, "keygen refuses to overwrite");
	CHECK(stat(path, &st) == 0 && (size_t)st.st_size == len, "the existing key is untouched");
	CHECK(signing_key_generate_file(tmp_path("no/such/dir.pem"), again) == BROKER_ERR_IO && errno == ENOENT,
	      "keygen into a missing directory fails with ENOENT");
	CHECK(symlink(tmp_path("target.pem"), tmp_path("link.pem")) == 0 &&
		      signing_key_generate_file(tmp_path("link.pem"), again) == BROKER_ERR_IO &&
		      access(tmp_path("target.pem"), F_OK) != 0,
	      "keygen does not follow a planted symlink");

	CHECK(load_paths(&path, 1, NULL, &ks) == BROKER_OK, "generated key loads");
	CHECK(ks && strcmp(signing_keys_active_kid(ks), kid) == 0, "loaded kid equals keygen's kid");
	CHECK(ks && jwk_thumbprint(signing_keys_active(ks), again) == BROKER_OK && strcmp(again, kid) == 0,
	      "kid is the thumbprint of the active key");
	signing_keys_free(ks);
	signing_keys_free(NULL);

	*ret_a = EVP_EC_gen("P-256");
	*ret_b = EVP_EC_gen("P-256");
}

struct bad_key_case {
	const char *name;
	const char *diag; /* expected substring of the diag line */
};

static void test_load_refusals(EVP_PKEY *good)
{
	EVP_PKEY *rsa = EVP_RSA_gen(2048), *p384 = EVP_EC_gen("secp384r1");
	static const struct bad_key_case cases[] = {
		{"mode0640.pem", "readable by group or others (mode 0640); chmod 600"},
		{"mode0604.pem", "readable by group or others (mode 0604); chmod 600"},
		{"mode0660.pem", "(mode 0660)"},
		{"rsa.pem", "not EC P-256"},
		{"p384.pem", "EC on another curve, not EC P-256"},
		{"garbage.pem", "not a PEM private key"},
		{"empty.pem", "not a PEM private key"},
		{"encrypted.pem", "encrypted keys are not supported"},
		{"public.pem", "not a PEM private key"},
		{"missing.pem", "cannot read key file"},
		{"dir.pem", "not a regular file"},
		{"big.pem", "larger than 64 KiB"},
	};
	static char big[70000];
	struct broker_signing_keys *ks = NULL;
	struct diag *d = NULL;
	const char *all[BROKER_ARRAY_SIZE(cases)];
	BIO *bio;
	char *data;
	long len;

	write_key(tmp_path("mode0640.pem"), good, PEM_PKCS8, 0640);
	write_key(tmp_path("mode0604.pem"), good, PEM_PKCS8, 0604);
	write_key(tmp_path("mode0660.pem"), good, PEM_PKCS8, 0660);
	write_key(tmp_path("rsa.pem"), rsa, PEM_PKCS8, 0600);
	write_key(tmp_path("p384.pem"), p384, PEM_PKCS8, 0600);
	{
		static const char garbage[] = "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n";

		write_file(tmp_path("garbage.pem"), garbage, strlen(garbage), 0600);
	}
	write_file(tmp_path("empty.pem"), "", 0, 0600);
	write_key(tmp_path("encrypted.pem"), good, PEM_ENCRYPTED, 0600);
	bio = BIO_new(BIO_s_mem());
	PEM_write_bio_PUBKEY(bio, good);
	len = BIO_get_mem_data(bio, &data);
	write_file(tmp_path("public.pem"), data, (size_t)len, 0600);
	BIO_free(bio);
	mkdir(tmp_path("dir.pem"), 0700);
	memset(big, 'A', sizeof(big));
	write_file(tmp_path("big.pem"), big, sizeof(big), 0600);

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(cases); i++) {
		const char *path = tmp_path(cases[i].name);

		ks = NULL;
		CHECK(load_paths(&path, 1, &d, &ks) != BROKER_OK && ks == NULL, "%s is refused", cases[i].name);
		CHECK(diag_errors(d) == 1 && diag_has(d, cases[i].diag) && diag_has(d, path), "%s: diag says '%s' (%s)",
		      cases[i].name, cases[i].diag, diag_count(d) ? diag_line(d, 0) : "nothing");
		diag_free(d);
		all[i] = tmp_path(cases[i].name);
	}
	/* Named in a config: reported at the line that named the file. */
	{
		const char *two[] = {tmp_path("good.pem"), tmp_path("garbage.pem")};
		struct diag_pos where[] = {{3, 9}, {4, 9}};
		char want[700];

		write_key(tmp_path("good.pem"), good, PEM_PKCS8, 0600);
		d = diag_new();
		ks = NULL;
		CHECK(signing_keys_load((char *const *)two, 2, "cibroker.yaml", where, d, &ks) == BROKER_ERR_CONFIG && !ks);
		snprintf(want, sizeof(want), "cibroker.yaml:4:9: signing.keys[1]: %s: not a PEM private key", two[1]);
		CHECK(diag_errors(d) == 1 && strncmp(diag_line(d, 0), want, strlen(want)) == 0, "positioned: %s",
		      diag_count(d) ? diag_line(d, 0) : "nothing");
		diag_free(d);
	}
	/* One run reports every bad file, then refuses the set. */
	CHECK(load_paths(all, BROKER_ARRAY_SIZE(cases), &d, &ks) == BROKER_ERR_CONFIG &&
		      diag_errors(d) == BROKER_ARRAY_SIZE(cases),
	      "all %zu bad files reported in one load (got %zu)", BROKER_ARRAY_SIZE(cases), diag_errors(d));
	diag_free(d);

	/* A good key next to a bad one: the whole set is refused. */
	write_key(tmp_path("good.pem"), good, PEM_PKCS8, 0600);
	{
		const char *mixed[] = {tmp_path("good.pem"), tmp_path("mode0640.pem")};
		const char *dup[] = {tmp_path("good.pem"), tmp_path("good-copy.pem")};

		ks = NULL;
		CHECK(load_paths(mixed, 2, NULL, &ks) == BROKER_ERR_CONFIG && !ks, "one bad key refuses the set");
		write_key(tmp_path("good-copy.pem"), good, PEM_TRADITIONAL, 0400);
		CHECK(load_paths(dup, 2, &d, &ks) == BROKER_ERR_CONFIG && diag_has(d, "same key as an earlier entry"),
		      "the same key twice (PKCS#8 and SEC1) is refused");
		diag_free(d);
		CHECK(load_paths(dup + 1, 1, NULL, &ks) == BROKER_OK && signing_keys_count(ks) == 1,
		      "SEC1 'EC PRIVATE KEY' with mode 0400 loads");
		signing_keys_free(ks);
	}
	ks = NULL;
	CHECK(load_paths(all, 0, NULL, &ks) == BROKER_ERR_CONFIG && !ks, "an empty key list is refused");
	{
		const char *many[17];

		for (size_t i = 0; i < 17; i++)
			many[i] = tmp_path("good.pem");
		CHECK(load_paths(many, 17, NULL, &ks) == BROKER_ERR_CONFIG && !ks, "more than 16 keys are refused");
	}
	/* Ownership (OpenBSD check_file_secrecy): only testable as root. */
	if (geteuid() == 0) {
		const char *path = tmp_path("owned.pem");

		write_key(path, good, PEM_PKCS8, 0600);
		CHECK(chown(path, 4242, 4242) == 0, "chown test key");
		CHECK(load_paths(&path, 1, &d, &ks) == BROKER_ERR_CONFIG && diag_has(d, "owned by uid 4242"),
		      "a key owned by another user is refused");
		diag_free(d);
	}
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(p384);
}

static json_t *ci_claims(void)
{
	return json_pack("{s:s, s:s, s:s, s:s}", "iss", "https://token.actions.githubusercontent.com", "sub",
			 "repo:acme/web:ref:refs/heads/main", "repository", "acme/web", "ref", "refs/heads/main");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_mint(struct broker_signing_keys *ks, EVP_PKEY *pub_first, EVP_PKEY *pub_second)
{
	json_t *ci = ci_claims(), *extra = json_pack("{s:s, s:i}", "scope", "deploy:web", "level", 3);
	struct mint_jwt_request req = {
		.iss = "https://broker.example.com",
		.sub = "repo:acme/web:env:prod",
		.aud = "https://deploy.acme.internal",
		.policy = "web-deploy-prod",
		.now = broker_now(),
		.ttl = 300,
		.ci = ci,
		.extra = extra,
	};
	char *token = NULL, *header = NULL, *body = NULL, jti[23] = "", expect_header[128];
	json_t *claims = NULL;
	enum broker_err err;

	err = mint_jwt(ks, &req, &token, jti);
	CHECK(err == BROKER_OK && token, "mint_jwt succeeds (%s)", broker_strerror(err));
	if (!token)
		goto out;
	CHECK(count_char(token, '.') == 2 && strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
							   "0123456789-_.") == strlen(token),
	      "three base64url segments");
	header = segment(token, 0);
	body = segment(token, 1);
	snprintf(expect_header, sizeof(expect_header), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 signing_keys_active_kid(ks));
	CHECK(header && strcmp(header, expect_header) == 0, "header is exactly %s (got %s)", expect_header, header);
	claims = body ? broker_json_parse(body, strlen(body), 16) : NULL;
	CHECK(json_is_object(claims), "claims are a JSON object without duplicates");
	CHECK(json_is_string(json_object_get(claims, "iss")) &&
		      strcmp(json_string_value(json_object_get(claims, "iss")), req.iss) == 0,
	      "iss");
	CHECK(json_is_string(json_object_get(claims, "sub")) &&
		      strcmp(json_string_value(json_object_get(claims, "sub")), req.sub) == 0,
	      "sub");
	CHECK(json_is_string(json_object_get(claims, "aud")) &&
		      strcmp(json_string_value(json_object_get(claims, "aud")), req.aud) == 0,
	      "aud");
	CHECK(json_is_string(json_object_get(claims, "policy")) &&
		      strcmp(json_string_value(json_object_get(claims, "policy")), req.policy) == 0,
	      "policy");
	CHECK(json_is_integer(json_object_get(claims, "iat")) &&
		      json_integer_value(json_object_get(claims, "iat")) == req.now,
	      "iat is now");
	CHECK(json_is_integer(json_object_get(claims, "nbf")) &&
		      json_integer_value(json_object_get(claims, "nbf")) == req.now,
	      "nbf is now");
	CHECK(json_is_integer(json_object_get(claims, "exp")) &&
		      json_integer_value(json_object_get(claims, "exp")) -
				      json_integer_value(json_object_get(claims, "iat")) ==
			      req.ttl,
	      "exp - iat == ttl");
	CHECK(json_is_string(json_object_get(claims, "jti")) &&
		      strlen(json_string_value(json_object_get(claims, "jti"))) == 22 &&
		      strcmp(json_string_value(json_object_get(claims, "jti")), jti) == 0,
	      "jti is 22 chars and returned");
	CHECK(json_equal(json_object_get(claims, "ci"), ci), "ci as given");
	CHECK(json_is_string(json_object_get(claims, "scope")) &&
		      json_integer_value(json_object_get(claims, "level")) == 3,
	      "policy claims added with their types");
	CHECK(json_object_size(claims) == 11, "no other claims (got %zu)", json_object_size(claims));

	CHECK(es256_verify(pub_first, token), "signature verifies with the first JWKS key");
	CHECK(!pub_second || !es256_verify(pub_second, token), "and not with the second");
	{
		char *bad = strdup(token);
		size_t len = strlen(bad);

		bad[len - 5] = bad[len - 5] == 'A' ? 'B' : 'A';
		CHECK(!es256_verify(pub_first, bad), "a flipped signature byte fails");
		strcpy(bad, token);
		bad[strchr(bad, '.') - bad + 3] ^= 0x01;
		CHECK(!es256_verify(pub_first, bad), "a flipped claims byte fails");
		free(bad);
	}
out:
	json_decref(claims);
	free(header);
	free(body);
	broker_secret_free(token);
	json_decref(ci);
	json_decref(extra);
}

static void test_mint_refusals(struct broker_signing_keys *ks)
{
	static const char *const reserved[] = {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "policy", "ci"};
	json_t *ci = ci_claims(), *arr = json_array();
	struct mint_jwt_request base = {"https://b", "s", "a", "p", 1700000000, 60, ci, NULL}, req;
	char *token = NULL, jti[23] = "unchanged";

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(reserved); i++) {
		json_t *extra = json_pack("{s:s, s:s}", "scope", "x", reserved[i], "override");

		req = base;
		req.extra = extra;
		CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID && !token && strcmp(jti, "unchanged") == 0,
		      "extra claim '%s' cannot override the reserved one", reserved[i]);
		json_decref(extra);
	}
	req = base;
	req.ttl = 0;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "ttl 0 refused");
	req = base;
	req.ttl = -5;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "negative ttl refused");
	req = base;
	req.now = INT64_MAX - 10;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "exp overflow refused");
	req = base;
	req.ci = NULL;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "missing ci refused");
	req = base;
	req.ci = arr;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "array ci refused");
	req = base;
	req.extra = arr;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "array extra refused");
	req = base;
	req.sub = NULL;
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "missing sub refused");
	req = base;
	req.sub = "\xff\xfe";
	CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_INVALID, "invalid UTF-8 refused");
	req = base;
	CHECK(mint_jwt(NULL, &req, &token, jti) == BROKER_ERR_NOKEYS, "no keys -> NOKEYS");
	{
		char *huge = malloc(70000);
		json_t *extra;

		memset(huge, 'x', 69999);
		huge[69999] = '\0';
		extra = json_pack("{s:s}", "blob", huge);
		req = base;
		req.extra = extra;
		CHECK(mint_jwt(ks, &req, &token, jti) == BROKER_ERR_TOOBIG, "claims over 64 KiB refused");
		json_decref(extra);
		free(huge);
	}
	CHECK(token == NULL && strcmp(jti, "unchanged") == 0, "out-params untouched on failure");
	json_decref(arr);
	json_decref(ci);
}

static void test_jti_distinct(struct broker_signing_keys *ks)
{
	enum { N = 1000 };
	json_t *ci = ci_claims();
	struct mint_jwt_request req = {"https://b", "s", "a", "p", broker_now(), 60, ci, NULL};
	static char jtis[N][23];
	char *ptrs[N], *token;
	size_t dups = 0, ok = 0;

	for (int i = 0; i < N; i++) {
		token = NULL;
		if (mint_jwt(ks, &req, &token, jtis[i]) == BROKER_OK && strlen(jtis[i]) == 22)
			ok++;
		broker_secret_free(token);
		ptrs[i] = jtis[i];
	}
	qsort(ptrs, N, sizeof(ptrs[0]), cmp_str);
	for (int i = 1; i < N; i++)
		dups += strcmp(ptrs[i - 1], ptrs[i]) == 0;
	CHECK(ok == N, "%d tokens minted", N);
	CHECK(dups == 0, "jti distinct across %d tokens (%zu duplicates)", N, dups);
	json_decref(ci);
}

/* Many threads, one key set: each mint uses its own EVP_MD_CTX. */
struct thread_arg {
	struct broker_signing_keys *ks;
	EVP_PKEY *pub;
	int ok;
};

static void *mint_thread(void *p)
{
	struct thread_arg *a = p;
	json_t *ci = ci_claims();
	struct mint_jwt_request req = {"https://b", "s", "a", "p", broker_now(), 60, ci, NULL};

	for (int i = 0; i < 200; i++) {
		char *token = NULL, jti[23];

		if (mint_jwt(a->ks, &req, &token, jti) == BROKER_OK && es256_verify(a->pub, token))
			a->ok++;
		broker_secret_free(token);
	}
	json_decref(ci);
	return NULL;
}

static void test_threads(struct broker_signing_keys *ks, EVP_PKEY *pub)
{
	enum { T = 8 };
	pthread_t th[T];
	struct thread_arg args[T];
	int total = 0;

	for (int i = 0; i < T; i++) {
		args[i] = (struct thread_arg){ks, pub, 0};
		pthread_create(&th[i], NULL, mint_thread, &args[i]);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		total += args[i].ok;
	}
	CHECK(total == T * 200, "%d concurrent tokens all verify (got %d)", T * 200, total);
}

/* expect_fail: silence the verifier, whose complaints are then the point. */
static int run_verifier(const char *jwks_path, const char *tokens_path, const char *extra_args, bool expect_fail)
{
	char cmd[1024];
	int st;

	snprintf(cmd, sizeof(cmd),
		 "/usr/bin/python3 " VERIFIER " verify '%s' '%s' --iss https://broker.example.com"
		 " --aud https://deploy.acme.internal --sub repo:acme/web --policy web-deploy-prod --ttl 300 %s%s",
		 jwks_path, tokens_path, extra_args, expect_fail ? " >/dev/null 2>&1" : "");
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* PyJWT/cryptography verify what we minted against the JWKS we publish. */
static void test_independent_verifier(struct broker_signing_keys *ks)
{
	json_t *ci = ci_claims(), *extra = json_pack("{s:s}", "scope", "deploy:web");
	struct mint_jwt_request req = {"https://broker.example.com", "repo:acme/web", "https://deploy.acme.internal",
				       "web-deploy-prod", broker_now(), 300, ci, extra};
	const char *jwks = signing_keys_jwks(ks);
	const char *jwks_path = tmp_path("jwks.json"), *tokens_path = tmp_path("tokens.txt");
	const char *tampered_path = tmp_path("tampered.txt");
	FILE *f = fopen(tokens_path, "w"), *t = fopen(tampered_path, "w");
	char *token = NULL, jti[23];

	if (access(VERIFIER, R_OK) != 0) {
		CHECK(false, "%s not found (run from tests/)", VERIFIER);
		goto out;
	}
	write_file(jwks_path, jwks, strlen(jwks), 0644);
	/* Enough tokens that short r or s values (1 in 128) are certainly hit. */
	for (int i = 0; i < 300; i++) {
		token = NULL;
		if (mint_jwt(ks, &req, &token, jti) == BROKER_OK)
			fprintf(f, "%s\n", token);
		if (i == 0 && token) {
			token[strlen(token) - 2] = token[strlen(token) - 2] == 'A' ? 'Q' : 'A';
			fprintf(t, "%s\n", token);
		}
		broker_secret_free(token);
	}
	fclose(f);
	fclose(t);
	f = t = NULL;
	CHECK(run_verifier(jwks_path, tokens_path, "--claim scope=deploy:web", false) == 0,
	      "PyJWT verifies 300 minted tokens against the JWKS");
	CHECK(run_verifier(jwks_path, tokens_path, "--claim scope=something-else", true) == 1,
	      "the verifier notices a wrong claim");
	CHECK(run_verifier(jwks_path, tampered_path, "", true) == 1, "the verifier rejects a tampered signature");
out:
	if (f)
		fclose(f);
	if (t)
		fclose(t);
	json_decref(ci);
	json_decref(extra);
}

static void test_two_keys(EVP_PKEY *a, EVP_PKEY *b)
{
	const char *paths[] = {tmp_path("first.pem"), tmp_path("second.pem")};
	struct broker_signing_keys *ks = NULL;
	EVP_PKEY *pub0, *pub1;
	char kid_a[44], kid_b[44], jkid0[44] = "", jkid1[44] = "";
	json_t *jwks;

	write_key(paths[0], a, PEM_PKCS8, 0600);
	write_key(paths[1], b, PEM_TRADITIONAL, 0600);
	jwk_thumbprint(a, kid_a);
	jwk_thumbprint(b, kid_b);
	CHECK(load_paths(paths, 2, NULL, &ks) == BROKER_OK && signing_keys_count(ks) == 2, "two keys load");
	if (!ks)
		return;
	CHECK(strcmp(signing_keys_active_kid(ks), kid_a) == 0, "the first key signs");
	CHECK(strcmp(signing_keys_kid(ks, 1), kid_b) == 0 && signing_keys_kid(ks, 2) == NULL, "kids in config order");
	jwks = broker_json_parse(signing_keys_jwks(ks), strlen(signing_keys_jwks(ks)), 8);
	CHECK(json_array_size(json_object_get(jwks, "keys")) == 2, "both keys in the JWKS");
	CHECK(!strstr(signing_keys_jwks(ks), "\"d\""), "no private part in the JWKS");
	{
		json_t *k0 = json_array_get(json_object_get(jwks, "keys"), 0);
		const char *members[] = {"kty", "crv", "x", "y", "use", "alg", "kid"};
		const char *values[] = {"EC", "P-256", NULL, NULL, "sig", "ES256", kid_a};
		bool ok = json_object_size(k0) == 7;

		for (size_t i = 0; i < 7; i++) {
			const char *v = json_string_value(json_object_get(k0, members[i]));

			ok = ok && v && (!values[i] || strcmp(v, values[i]) == 0);
		}
		CHECK(ok, "JWK members kty crv x y use alg kid, public only");
	}
	json_decref(jwks);
	pub0 = jwks_public_key(signing_keys_jwks(ks), 0, jkid0);
	pub1 = jwks_public_key(signing_keys_jwks(ks), 1, jkid1);
	CHECK(pub0 && pub1 && strcmp(jkid0, kid_a) == 0 && strcmp(jkid1, kid_b) == 0, "JWKS keys parse back");
	test_mint(ks, pub0, pub1);
	test_mint_refusals(ks);
	test_jti_distinct(ks);
	test_threads(ks, pub0);
	test_independent_verifier(ks);
	EVP_PKEY_free(pub0);
	EVP_PKEY_free(pub1);
	signing_keys_free(ks);
}

static void test_generated(void)
{
	struct broker_signing_keys *ks = NULL;
	EVP_PKEY *pub;
	char kid[44] = "";

	CHECK(signing_keys_generate(&ks) == BROKER_OK && signing_keys_count(ks) == 1, "in-memory key for dev mode");
	if (!ks)
		return;
	pub = jwks_public_key(signing_keys_jwks(ks), 0, kid);
	CHECK(pub && strcmp(kid, signing_keys_active_kid(ks)) == 0, "dev key published with its kid");
	test_mint(ks, pub, NULL);
	EVP_PKEY_free(pub);
	signing_keys_free(ks);
}

int main(void)
{
	EVP_PKEY *a = NULL, *b = NULL;
	char cmd[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-mint.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	test_thumbprint_rfc7638();
	test_keygen_and_load(&a, &b);
	test_load_refusals(a);
	test_two_keys(a, b);
	test_generated();
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return check_done();
}
