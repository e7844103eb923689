/* SPDX-License-Identifier: Apache-2.0 */
/* Every hostile token shape of issue 3, and the JWKS rules, as table rows.
 * Keys are generated here at run time; tokens are signed here with EVP, so
 * each row is a real, otherwise valid token with exactly one thing wrong,
 * and each row asserts the specific reason: removing a check makes its row
 * fail (either the token passes or a later check names a different reason). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "check.h"
#include "cibroker/config.h"
#include "cibroker/jwt.h"
#include "cibroker/util.h"

#define NOW 1800000000LL
#define ISS "\"iss\":\"https://issuer.test\""
#define AUD "\"aud\":\"https://broker.test\""
#define SUB "\"sub\":\"repo:acme/web\""
#define IAT "\"iat\":1800000000"
#define EXP "\"exp\":1800000300"
#define CLAIMS "{" ISS "," AUD "," SUB "," IAT "," EXP "}"

static EVP_PKEY *rsa2048, *rsa2048b, *rsa1024, *ec256, *ec384;
static struct broker_jwks *keyset;

static char *const accepted_aud[] = {"https://broker.test", "https://other.test"};
static const struct token_rules rules = {
	.issuer = "https://issuer.test",
	.audiences = accepted_aud,
	.n_audiences = 2,
	.algorithms = BROKER_ALG_RS256 | BROKER_ALG_PS256 | BROKER_ALG_ES256 | BROKER_ALG_ES384 | BROKER_ALG_RS384,
	.clock_skew = 60,
	.max_token_age = 900,
	.now = NOW,
};

/* ---- helpers: keys, JWKs, signing ---- */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	return s;
}

static char *b64_bn(EVP_PKEY *k, const char *param, int pad)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	int n;

	if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
		abort();
	n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	return b64url_encode(buf, (size_t)n);
}

/* Public JWK of k with extra members (",\"use\":\"sig\"" or ""). */
static char *jwk_of(EVP_PKEY *k, const char *kid, const char *extra)
{
	char *a, *b, *s;

	if (EVP_PKEY_is_a(k, "RSA")) {
		a = b64_bn(k, OSSL_PKEY_PARAM_RSA_N, 0);
		b = b64_bn(k, OSSL_PKEY_PARAM_RSA_E, 0);
		s = xasprintf("{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, a, b, extra);
	} else {
		int sz = EVP_PKEY_get_bits(k) == 384 ? 48 : 32;

		a = b64_bn(k, OSSL_PKEY_PARAM_EC_PUB_X, sz);
		b = b64_bn(k, OSSL_PKEY_PARAM_EC_PUB_Y, sz);
		s = xasprintf("{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s}", kid,
			      sz == 48 ? "P-384" : "P-256", a, b, extra);
	}
	free(a);
	free(b);
	return s;
}

static const EVP_MD *md_of(const char *alg)
{
	if (strstr(alg, "384"))
		return EVP_sha384();
	if (strstr(alg, "512"))
		return EVP_sha512();
	return EVP_sha256();
}

/* JWS signature of msg: RSA PKCS#1/PSS raw, ECDSA as r||s unless der. */
static unsigned char *sign(const char *alg, EVP_PKEY *k, const void *msg, size_t len, size_t *ret_len, int der)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pc = NULL;
	size_t sl = 0;
	unsigned char *sig;

	if (EVP_DigestSignInit(m, &pc, md_of(alg), NULL, k) != 1)
		abort();
	if (alg[0] == 'P') {
		EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST);
	}
	EVP_DigestSign(m, NULL, &sl, msg, len);
	sig = malloc(sl);
	if (EVP_DigestSign(m, sig, &sl, msg, len) != 1)
		abort();
	EVP_MD_CTX_free(m);
	if (EVP_PKEY_is_a(k, "EC") && !der) {
		const unsigned char *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)sl);
		int half = EVP_PKEY_get_bits(k) == 384 ? 48 : 32;
		unsigned char *raw = malloc((size_t)half * 2);

		BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, half);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + half, half);
		ECDSA_SIG_free(es);
		free(sig);
		sig = raw;
		sl = (size_t)half * 2;
	}
	*ret_len = sl;
	return sig;
}

/* "<NUL>" in a test string stands for a zero byte. */
static char *expand_nul(const char *s, size_t *ret_len)
{
	char *out = strdup(s), *p;
	size_t len = strlen(s);

	while ((p = memmem(out, len, "<NUL>", 5))) {
		*p = '\0';
		memmove(p + 1, p + 5, len - (size_t)(p + 5 - out) + 1);
		len -= 4;
	}
	*ret_len = len;
	return out;
}

enum sig_kind { SIG_JWS, SIG_JWS_TRAILING_BYTE, SIG_DER, SIG_ZERO, SIG_JUNK, SIG_HMAC_PEM, SIG_HMAC_JWK };

static char *make_token(const char *alg, EVP_PKEY *k, const char *header, const char *payload, enum sig_kind kind)
{
	size_t hl, pl, sl = 0;
	char *h = expand_nul(header, &hl), *p = expand_nul(payload, &pl);
	char *hb = b64url_encode(h, hl), *pb = b64url_encode(p, pl), *input, *sb, *tok;
	unsigned char *sig = NULL;

	input = xasprintf("%s.%s", hb, pb);
	switch (kind) {
	case SIG_JWS:
	case SIG_DER: sig = sign(alg, k, input, strlen(input), &sl, kind == SIG_DER); break;
	case SIG_JWS_TRAILING_BYTE:
		/* A valid signature plus one byte: must not be read as its prefix. */
		sig = sign(alg, k, input, strlen(input), &sl, 0);
		sig = realloc(sig, sl + 1);
		sig[sl++] = 0;
		break;
	case SIG_ZERO:
		sl = 64;
		sig = calloc(1, sl);
		break;
	case SIG_JUNK:
		sl = 256;
		sig = malloc(sl);
		memset(sig, 0x5a, sl);
		break;
	case SIG_HMAC_PEM:
	case SIG_HMAC_JWK: {
		/* The classic confusion: the verifier's public key as HMAC secret. */
		char *secret;
		unsigned int ml = 0;

		if (kind == SIG_HMAC_PEM) {
			BIO *bio = BIO_new(BIO_s_mem());
			char *mem;
			long n;

			PEM_write_bio_PUBKEY(bio, rsa2048);
			n = BIO_get_mem_data(bio, &mem);
			secret = strndup(mem, (size_t)n);
			BIO_free(bio);
		} else {
			secret = jwk_of(rsa2048, "rsa", "");
		}
		sig = malloc(EVP_MAX_MD_SIZE);
		HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)input, strlen(input), sig, &ml);
		sl = ml;
		free(secret);
		break;
	}
	}
	sb = b64url_encode(sig, sl);
	tok = xasprintf("%s.%s", input, sb);
	free(h);
	free(p);
	free(hb);
	free(pb);
	free(input);
	free(sb);
	free(sig);
	return tok;
}

/* The whole verification path, as the exchange runs it. */
static enum broker_err verify_all(const char *tok, size_t len, const char **reason)
{
	struct broker_token *t = NULL;
	enum broker_err err;

	*reason = NULL;
	err = token_parse(tok, len, &t, reason);
	if (err == BROKER_OK)
		err = token_check_alg(t, &rules, reason);
	if (err == BROKER_OK)
		err = token_verify_signature(t, jwks_lookup(keyset, t->kid), reason);
	if (err == BROKER_OK)
		err = token_check_claims(t, &rules, reason);
	token_free(t);
	return err;
}

static void expect(const char *name, const char *tok, size_t len, const char *want)
{
	const char *reason = NULL;
	enum broker_err err = verify_all(tok, len, &reason);

	if (!want) {
		CHECK(err == BROKER_OK, "%s: expected accept, got %d (%s)", name, err, reason ? reason : "-");
		return;
	}
	CHECK(err == BROKER_ERR_TOKEN && reason && strcmp(reason, want) == 0, "%s: expected '%s', got %d (%s)",
	      name, want, err, reason ? reason : "accepted");
}

static EVP_PKEY *key_named(const char *name)
{
	if (!name)
		return NULL;
	if (!strcmp(name, "rsa") || !strcmp(name, "enc") || !strcmp(name, "rs384only"))
		return rsa2048;
	if (!strcmp(name, "rsab"))
		return rsa2048b;
	if (!strcmp(name, "rsa1024"))
		return rsa1024;
	if (!strcmp(name, "ec384"))
		return ec384;
	return ec256;
}

/* ---- token rows ---- */

struct row {
	const char *name;
	const char *alg;     /* alg used to sign, and header alg when header is NULL */
	const char *kid;     /* kid in the default header */
	const char *signer;  /* private key used; NULL = signer named by kid */
	const char *header;  /* NULL: {"alg":alg,"kid":kid,"typ":"JWT"} */
	const char *payload; /* NULL: CLAIMS */
	enum sig_kind sig;
	const char *want;    /* NULL: accepted; else the exact reason */
};

#define H(x) "{\"alg\":\"RS256\",\"kid\":\"rsa\"" x "}"
#define P(...) "{" __VA_ARGS__ "}"

static const struct row rows[] = {
	/* accepted */
	{"RS256 valid", "RS256", "rsa", NULL, NULL, NULL, SIG_JWS, NULL},
	{"ES256 valid", "ES256", "ec", NULL, NULL, NULL, SIG_JWS, NULL},
	{"PS256 valid", "PS256", "rsa", NULL, NULL, NULL, SIG_JWS, NULL},
	{"ES384 valid", "ES384", "ec384", NULL, NULL, NULL, SIG_JWS, NULL},
	{"RS384 on alg-pinned key", "RS384", "rs384only", NULL, NULL, NULL, SIG_JWS, NULL},
	{"typ absent", "RS256", "rsa", NULL, H(""), NULL, SIG_JWS, NULL},
	{"typ lowercase jwt", "RS256", "rsa", NULL, H(",\"typ\":\"jwt\""), NULL, SIG_JWS, NULL},
	{"unknown header ignored", "RS256", "rsa", NULL, H(",\"x5t\":\"abc\""), NULL, SIG_JWS, NULL},
	{"aud array with match", "RS256", "rsa", NULL, NULL,
	 P(ISS ",\"aud\":[\"x\",\"https://other.test\"]," SUB "," IAT "," EXP), SIG_JWS, NULL},
	{"nbf in the past", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":1799999000"),
	 SIG_JWS, NULL},

	/* alg */
	{"alg none", "RS256", "rsa", NULL, "{\"alg\":\"none\",\"kid\":\"rsa\"}", NULL, SIG_JUNK,
	 "alg none is never accepted"},
	{"alg None", "RS256", "rsa", NULL, "{\"alg\":\"None\",\"kid\":\"rsa\"}", NULL, SIG_JUNK,
	 "alg none is never accepted"},
	{"alg nOnE", "RS256", "rsa", NULL, "{\"alg\":\"nOnE\",\"kid\":\"rsa\"}", NULL, SIG_JUNK,
	 "alg none is never accepted"},
	{"HS256 keyed with issuer PEM", "HS256", "rsa", NULL, "{\"alg\":\"HS256\",\"kid\":\"rsa\"}", NULL,
	 SIG_HMAC_PEM, "HMAC algs are never accepted"},
	{"HS256 keyed with issuer JWK", "HS256", "rsa", NULL, "{\"alg\":\"HS256\",\"kid\":\"rsa\"}", NULL,
	 SIG_HMAC_JWK, "HMAC algs are never accepted"},
	{"hs256 lowercase", "HS256", "rsa", NULL, "{\"alg\":\"hs256\",\"kid\":\"rsa\"}", NULL, SIG_HMAC_PEM,
	 "HMAC algs are never accepted"},
	{"rs256 lowercase", "RS256", "rsa", NULL, "{\"alg\":\"rs256\",\"kid\":\"rsa\"}", NULL, SIG_JWS,
	 "alg not supported"},
	{"alg with trailing space", "RS256", "rsa", NULL, "{\"alg\":\"RS256 \",\"kid\":\"rsa\"}", NULL, SIG_JWS,
	 "alg not supported"},
	{"alg with escaped NUL", "RS256", "rsa", NULL, "{\"alg\":\"RS256\\u0000\",\"kid\":\"rsa\"}", NULL, SIG_JWS,
	 "header is not valid JSON"},
	{"alg missing", "RS256", "rsa", NULL, "{\"kid\":\"rsa\"}", NULL, SIG_JWS, "alg missing"},
	{"alg not a string", "RS256", "rsa", NULL, "{\"alg\":256,\"kid\":\"rsa\"}", NULL, SIG_JWS, "alg malformed"},
	{"alg outside issuer list", "RS512", "rsa", NULL, NULL, NULL, SIG_JWS, "alg not allowed for this issuer"},

	/* kid and keys */
	{"unknown kid", "RS256", "nosuchkid", "rsa", NULL, NULL, SIG_JWS, "unknown kid"},
	{"kid path traversal", "RS256", "../../etc/passwd", "rsa", NULL, NULL, SIG_JWS, "unknown kid"},
	{"kid missing", "RS256", "rsa", NULL, "{\"alg\":\"RS256\"}", NULL, SIG_JWS, "kid missing"},
	{"kid not a string", "RS256", "rsa", NULL, "{\"alg\":\"RS256\",\"kid\":7}", NULL, SIG_JWS, "kid malformed"},
	{"kid with newline", "RS256", "rsa", NULL, "{\"alg\":\"RS256\",\"kid\":\"rsa\\n\"}", NULL, SIG_JWS,
	 "kid malformed"},
	{"kid empty", "RS256", "rsa", NULL, "{\"alg\":\"RS256\",\"kid\":\"\"}", NULL, SIG_JWS, "kid malformed"},
	{"ES256 header, RSA kid", "ES256", "rsa", "ec", NULL, NULL, SIG_JWS, "key does not fit alg"},
	{"RS256 header, EC kid", "RS256", "ec", "rsa", NULL, NULL, SIG_JWS, "key does not fit alg"},
	{"ES384 header, P-256 kid", "ES384", "ec", "ec384", NULL, NULL, SIG_JWS, "key does not fit alg"},
	{"ES256 header, P-384 kid", "ES256", "ec384", "ec", NULL, NULL, SIG_JWS, "key does not fit alg"},
	{"JWK use=enc", "RS256", "enc", NULL, NULL, NULL, SIG_JWS, "unknown kid"},
	{"JWK alg other than header", "RS256", "rs384only", NULL, NULL, NULL, SIG_JWS, "key does not fit alg"},
	{"RSA-1024 key", "RS256", "rsa1024", NULL, NULL, NULL, SIG_JWS, "unknown kid"},

	/* headers the broker refuses */
	{"jku header", "RS256", "rsa", NULL, H(",\"jku\":\"https://evil.test/jwks\""), NULL, SIG_JWS,
	 "token-supplied key headers (jku/x5u/jwk/x5c) not accepted"},
	{"x5u header", "RS256", "rsa", NULL, H(",\"x5u\":\"https://evil.test/cert\""), NULL, SIG_JWS,
	 "token-supplied key headers (jku/x5u/jwk/x5c) not accepted"},
	{"jwk header", "RS256", "rsa", NULL, H(",\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}"), NULL, SIG_JWS,
	 "token-supplied key headers (jku/x5u/jwk/x5c) not accepted"},
	{"x5c header", "RS256", "rsa", NULL, H(",\"x5c\":[\"MIIB\"]"), NULL, SIG_JWS,
	 "token-supplied key headers (jku/x5u/jwk/x5c) not accepted"},
	{"crit header", "RS256", "rsa", NULL, H(",\"crit\":[\"exp\"],\"exp\":1"), NULL, SIG_JWS,
	 "crit header not supported"},
	{"b64 false", "RS256", "rsa", NULL, H(",\"b64\":false"), NULL, SIG_JWS, "b64 header not supported"},
	{"typ other", "RS256", "rsa", NULL, H(",\"typ\":\"at+jwt\""), NULL, SIG_JWS, "typ is not JWT"},
	{"typ not a string", "RS256", "rsa", NULL, H(",\"typ\":1"), NULL, SIG_JWS, "typ is not JWT"},

	/* JSON */
	{"duplicate key in header", "RS256", "rsa", NULL, "{\"alg\":\"RS256\",\"kid\":\"ec\",\"kid\":\"rsa\"}", NULL,
	 SIG_JWS, "header is not valid JSON"},
	{"duplicate alg in header", "RS256", "rsa", NULL, "{\"alg\":\"none\",\"kid\":\"rsa\",\"alg\":\"RS256\"}",
	 NULL, SIG_JWS, "header is not valid JSON"},
	{"duplicate key in payload", "RS256", "rsa", NULL, NULL,
	 P(ISS "," AUD "," SUB "," IAT "," EXP ",\"sub\":\"repo:evil/x\""), SIG_JWS, "payload is not valid JSON"},
	{"trailing bytes after header", "RS256", "rsa", NULL, H("") "x", NULL, SIG_JWS, "header is not valid JSON"},
	{"second object after header", "RS256", "rsa", NULL, H("") "{}", NULL, SIG_JWS, "header is not valid JSON"},
	{"NUL after header", "RS256", "rsa", NULL, H("") "<NUL>", NULL, SIG_JWS, "header is not valid JSON"},
	{"trailing bytes after payload", "RS256", "rsa", NULL, NULL, CLAIMS "x", SIG_JWS, "payload is not valid JSON"},
	{"NUL after payload", "RS256", "rsa", NULL, NULL, CLAIMS "<NUL>", SIG_JWS, "payload is not valid JSON"},
	{"NUL inside payload", "RS256", "rsa", NULL, NULL, "{" ISS "<NUL>," AUD "," SUB "," IAT "," EXP "}", SIG_JWS,
	 "payload is not valid JSON"},
	{"header is an array", "RS256", "rsa", NULL, "[\"RS256\"]", NULL, SIG_JWS, "header is not a JSON object"},
	{"payload is a string", "RS256", "rsa", NULL, NULL, "\"claims\"", SIG_JWS, "payload is not a JSON object"},
	{"header not JSON", "RS256", "rsa", NULL, "alg=RS256", NULL, SIG_JWS, "header is not valid JSON"},

	/* signatures */
	{"ES256 DER signature", "ES256", "ec", NULL, NULL, NULL, SIG_DER, "signature invalid"},
	{"ES256 signature with a trailing byte", "ES256", "ec", NULL, NULL, NULL, SIG_JWS_TRAILING_BYTE,
	 "signature invalid"},
	{"RS256 signature with a trailing byte", "RS256", "rsa", NULL, NULL, NULL, SIG_JWS_TRAILING_BYTE,
	 "signature invalid"},
	{"ES256 all-zero signature", "ES256", "ec", NULL, NULL, NULL, SIG_ZERO, "signature invalid"},
	{"RS256 junk signature", "RS256", "rsa", NULL, NULL, NULL, SIG_JUNK, "signature invalid"},
	{"RS256 signed by another key", "RS256", "rsa", "rsab", NULL, NULL, SIG_JWS, "signature invalid"},
	{"PS256 header, PKCS#1 signature", "RS256", "rsa", NULL, "{\"alg\":\"PS256\",\"kid\":\"rsa\"}", NULL, SIG_JWS,
	 "signature invalid"},
	{"RS256 header, PSS signature", "PS256", "rsa", NULL, "{\"alg\":\"RS256\",\"kid\":\"rsa\"}", NULL, SIG_JWS,
	 "signature invalid"},

	/* iss */
	{"iss missing", "RS256", "rsa", NULL, NULL, P(AUD "," SUB "," IAT "," EXP), SIG_JWS, "iss missing"},
	{"iss trailing slash", "RS256", "rsa", NULL, NULL,
	 P("\"iss\":\"https://issuer.test/\"," AUD "," SUB "," IAT "," EXP), SIG_JWS, "iss mismatch"},
	{"iss other case", "RS256", "rsa", NULL, NULL, P("\"iss\":\"https://Issuer.test\"," AUD "," SUB "," IAT "," EXP),
	 SIG_JWS, "iss mismatch"},
	{"iss with NUL", "RS256", "rsa", NULL, NULL,
	 P("\"iss\":\"https://issuer.test\\u0000x\"," AUD "," SUB "," IAT "," EXP), SIG_JWS,
	 "payload is not valid JSON"},
	{"iss array", "RS256", "rsa", NULL, NULL, P("\"iss\":[\"https://issuer.test\"]," AUD "," SUB "," IAT "," EXP),
	 SIG_JWS, "iss mismatch"},

	/* aud */
	{"aud missing", "RS256", "rsa", NULL, NULL, P(ISS "," SUB "," IAT "," EXP), SIG_JWS, "aud missing"},
	{"aud other", "RS256", "rsa", NULL, NULL, P(ISS ",\"aud\":\"https://evil.test\"," SUB "," IAT "," EXP), SIG_JWS,
	 "aud not accepted"},
	{"aud other case", "RS256", "rsa", NULL, NULL, P(ISS ",\"aud\":\"https://Broker.test\"," SUB "," IAT "," EXP),
	 SIG_JWS, "aud not accepted"},
	{"aud array without match", "RS256", "rsa", NULL, NULL, P(ISS ",\"aud\":[\"a\",\"b\"]," SUB "," IAT "," EXP),
	 SIG_JWS, "aud not accepted"},
	{"aud empty array", "RS256", "rsa", NULL, NULL, P(ISS ",\"aud\":[]," SUB "," IAT "," EXP), SIG_JWS,
	 "aud not accepted"},
	{"aud array with non-string", "RS256", "rsa", NULL, NULL,
	 P(ISS ",\"aud\":[\"https://broker.test\",1]," SUB "," IAT "," EXP), SIG_JWS, "aud malformed"},
	{"aud object", "RS256", "rsa", NULL, NULL, P(ISS ",\"aud\":{\"https://broker.test\":1}," SUB "," IAT "," EXP),
	 SIG_JWS, "aud malformed"},

	/* exp */
	{"exp missing", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT), SIG_JWS, "exp missing"},
	{"exp string", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":\"1800000300\""), SIG_JWS,
	 "exp malformed"},
	{"exp float", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":1800000300.0"), SIG_JWS,
	 "exp malformed"},
	{"exp exponent form", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":1.8000003e9"),
	 SIG_JWS, "exp malformed"},
	{"exp negative", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":-1"), SIG_JWS,
	 "exp malformed"},
	{"exp null", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":null"), SIG_JWS,
	 "exp malformed"},
	{"exp beyond int64", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT ",\"exp\":99999999999999999999"),
	 SIG_JWS, "payload is not valid JSON"},
	{"exp at now-skew", "RS256", "rsa", NULL, NULL,
	 P(ISS "," AUD "," SUB ",\"iat\":1799999500,\"exp\":1799999940"), SIG_JWS, "token expired"},
	{"exp at now-skew+1", "RS256", "rsa", NULL, NULL,
	 P(ISS "," AUD "," SUB ",\"iat\":1799999500,\"exp\":1799999941"), SIG_JWS, NULL},

	/* nbf */
	{"nbf at now+skew", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":1800000060"),
	 SIG_JWS, NULL},
	{"nbf at now+skew+1", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":1800000061"),
	 SIG_JWS, "token not yet valid"},
	{"nbf string", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":\"0\""), SIG_JWS,
	 "nbf malformed"},
	{"nbf float", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":1.5"), SIG_JWS,
	 "nbf malformed"},
	{"nbf negative", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":-5"), SIG_JWS,
	 "nbf malformed"},
	{"nbf beyond int64", "RS256", "rsa", NULL, NULL,
	 P(ISS "," AUD "," SUB "," IAT "," EXP ",\"nbf\":-99999999999999999999"), SIG_JWS, "payload is not valid JSON"},

	/* iat */
	{"iat missing", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB "," EXP), SIG_JWS, "iat missing"},
	{"iat string", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":\"1800000000\"," EXP), SIG_JWS,
	 "iat malformed"},
	{"iat float", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":1800000000.5," EXP), SIG_JWS,
	 "iat malformed"},
	{"iat negative", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":-1800000000," EXP), SIG_JWS,
	 "iat malformed"},
	{"iat beyond int64", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":18446744073709551616," EXP),
	 SIG_JWS, "payload is not valid JSON"},
	{"iat at now+skew", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":1800000060," EXP), SIG_JWS, NULL},
	{"iat at now+skew+1", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":1800000061," EXP), SIG_JWS,
	 "iat in the future"},
	{"iat at now-max_age", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":1799999100," EXP), SIG_JWS,
	 NULL},
	{"iat at now-max_age-1", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," SUB ",\"iat\":1799999099," EXP),
	 SIG_JWS, "token too old"},

	/* sub */
	{"sub missing", "RS256", "rsa", NULL, NULL, P(ISS "," AUD "," IAT "," EXP), SIG_JWS, "sub missing"},
	{"sub empty", "RS256", "rsa", NULL, NULL, P(ISS "," AUD ",\"sub\":\"\"," IAT "," EXP), SIG_JWS, "sub malformed"},
	{"sub number", "RS256", "rsa", NULL, NULL, P(ISS "," AUD ",\"sub\":42," IAT "," EXP), SIG_JWS, "sub malformed"},
};

static void run_rows(void)
{
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(rows); i++) {
		const struct row *r = &rows[i];
		char *header = r->header ? strdup(r->header)
					 : xasprintf("{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", r->alg, r->kid);
		char *tok = make_token(r->alg, key_named(r->signer ? r->signer : r->kid), header,
				       r->payload ? r->payload : CLAIMS, r->sig);

		expect(r->name, tok, strlen(tok), r->want);
		free(header);
		free(tok);
	}
}

/* ---- shapes built by editing a valid token ---- */

static char *valid_token(const char *alg, const char *kid, const char *header_extra, const char *payload)
{
	char *h = xasprintf("{\"alg\":\"%s\",\"kid\":\"%s\"%s}", alg, kid, header_extra);
	char *t = make_token(alg, key_named(kid), h, payload, SIG_JWS);

	free(h);
	return t;
}

static char *insert_at(const char *s, size_t pos, const char *ins)
{
	return xasprintf("%.*s%s%s", (int)pos, s, ins, s + pos);
}

/* Every segment x every non-canonical encoding: the decoder must refuse
 * each, and say which segment. */
static void run_encoding_rows(void)
{
	static const char *const seg_reason[] = {"header is not base64url", "payload is not base64url",
						 "signature is not base64url"};
	static const char *const inserts[] = {"=", "==", "+", "/", " ", "\n", "\t", "!", "%3D", "\\"};
	/* "~~~~~~" encodes to base64 text with '+'/'-' in it, so the
	 * standard-alphabet rewrite below changes every segment. */
	char *tok = valid_token("RS256", "rsa", ",\"note\":\"~~~~~~\"", P(ISS "," AUD "," SUB "," IAT "," EXP
									     ",\"note\":\"~~~~~~??\""));
	char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
	size_t start[3] = {0, (size_t)(d1 - tok) + 1, (size_t)(d2 - tok) + 1};
	size_t end[3] = {(size_t)(d1 - tok), (size_t)(d2 - tok), strlen(tok)};

	expect("encoding base token", tok, strlen(tok), NULL);
	for (int s = 0; s < 3; s++) {
		for (size_t i = 0; i < BROKER_ARRAY_SIZE(inserts); i++) {
			/* At the end of the segment (padding position) and in the middle. */
			size_t at[2] = {end[s], start[s] + (end[s] - start[s]) / 2};

			for (int a = 0; a < 2; a++) {
				char *m = insert_at(tok, at[a], inserts[i]), name[96];

				snprintf(name, sizeof(name), "segment %d insert %s at %s", s,
					 inserts[i][0] == '\n' ? "\\n" : inserts[i][0] == '\t' ? "\\t" : inserts[i],
					 a ? "middle" : "end");
				expect(name, m, strlen(m), seg_reason[s]);
				free(m);
			}
		}
		/* Standard alphabet: the same bytes, '+' '/' instead of '-' '_'. */
		{
			char *m = strdup(tok);
			bool changed = false;

			for (size_t i = start[s]; i < end[s]; i++) {
				if (m[i] == '-' || m[i] == '_') {
					m[i] = m[i] == '-' ? '+' : '/';
					changed = true;
				}
			}
			CHECK(changed, "segment %d has no url-alphabet character to rewrite", s);
			expect("standard alphabet", m, strlen(m), seg_reason[s]);
			free(m);
		}
		/* Non-zero unused trailing bits: another text for the same bytes. */
		if ((end[s] - start[s]) % 4 >= 2) {
			static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
			char *m = strdup(tok);
			size_t v = (size_t)(strchr(abc, m[end[s] - 1]) - abc);

			m[end[s] - 1] = abc[v | 1];
			CHECK(strcmp(m, tok) != 0, "segment %d tail already non-canonical", s);
			expect("non-canonical tail bits", m, strlen(m), seg_reason[s]);
			free(m);
		}
	}
	free(tok);
}

static void run_structure_rows(void)
{
	char *tok = valid_token("RS256", "rsa", "", CLAIMS), *m;
	char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
	const char *three = "token is not three dot-separated segments";

	expect("structure base token", tok, strlen(tok), NULL);
	m = xasprintf("%s.", tok);
	expect("trailing dot", m, strlen(m), three);
	free(m);
	m = xasprintf(".%s", tok);
	expect("leading dot", m, strlen(m), three);
	free(m);
	m = xasprintf("%.*s", (int)(d2 - tok), tok);
	expect("two segments", m, strlen(m), three);
	free(m);
	m = xasprintf("%s.%s", tok, d2 + 1);
	expect("four segments", m, strlen(m), three);
	free(m);
	m = xasprintf("%s.AAAA.%s", tok, d2 + 1);
	expect("five segments (JWE shape)", m, strlen(m), three);
	free(m);
	m = xasprintf("%.*s.", (int)(d2 - tok), tok);
	expect("empty signature", m, strlen(m), "token has an empty segment");
	free(m);
	m = xasprintf("%.*s..%s", (int)(d1 - tok), tok, d2 + 1);
	expect("empty payload", m, strlen(m), "token has an empty segment");
	free(m);
	m = xasprintf("%s", d1);
	expect("empty header", m, strlen(m), "token has an empty segment");
	free(m);
	m = xasprintf("{\"payload\":\"%.*s\",\"protected\":\"%.*s\",\"signature\":\"%s\"}", (int)(d2 - d1 - 1), d1 + 1,
		      (int)(d1 - tok), tok, d2 + 1);
	expect("JWS JSON serialization", m, strlen(m), "JWS JSON serialization not accepted");
	free(m);
	expect("empty token", "", 0, "token empty");
	/* The length passed in is authoritative: a NUL inside is a bad byte. */
	m = strdup(tok);
	m[(size_t)(d2 - tok) + 5] = '\0';
	expect("NUL inside signature", m, strlen(tok), "signature is not base64url");
	free(m);
	/* Payload swapped after signing. */
	{
		char *other = valid_token("RS256", "rsa", "",
					  P(ISS "," AUD ",\"sub\":\"repo:evil/x\"," IAT "," EXP));
		char *o1 = strchr(other, '.'), *o2 = strchr(o1 + 1, '.');

		m = xasprintf("%.*s%.*s%s", (int)(d1 - tok), tok, (int)(o2 - o1), o1, d2);
		expect("payload swapped after signing", m, strlen(m), "signature invalid");
		free(m);
		free(other);
	}
	free(tok);
}

/* Tokens just at and just over 8 KiB (padded with a claim). Lengths are
 * computed first so only the two tokens that hit the mark are signed. */
static void run_size_rows(void)
{
	bool found[2] = {false, false};
	size_t sig_b64 = 342; /* RS256 with a 2048-bit key */

	for (size_t hn = 0; hn < 4; hn++) {
		char *h = xasprintf("{\"alg\":\"RS256\",\"kid\":\"rsa\",\"note\":\"%.*s\"}", (int)hn, "xxxx");
		char *empty = xasprintf("{" ISS "," AUD "," SUB "," IAT "," EXP ",\"pad\":\"\"}");

		for (size_t pn = 0; pn < BROKER_TOKEN_MAX; pn++) {
			size_t pl = strlen(empty) + pn;
			size_t len = (strlen(h) * 4 + 2) / 3 + 1 + (pl * 4 + 2) / 3 + 1 + sig_b64;
			int which = len == BROKER_TOKEN_MAX ? 0 : len == BROKER_TOKEN_MAX + 1 ? 1 : -1;
			char *pad, *payload, *tok;

			if (len > BROKER_TOKEN_MAX + 1)
				break;
			if (which < 0 || found[which])
				continue;
			pad = malloc(pn + 1);
			memset(pad, 'a', pn);
			pad[pn] = '\0';
			payload = xasprintf("{" ISS "," AUD "," SUB "," IAT "," EXP ",\"pad\":\"%s\"}", pad);
			tok = make_token("RS256", rsa2048, h, payload, SIG_JWS);
			CHECK(strlen(tok) == len, "size arithmetic: %zu vs %zu", strlen(tok), len);
			if (which == 0)
				expect("token of exactly 8192 bytes", tok, strlen(tok), NULL);
			else
				expect("token of 8193 bytes", tok, strlen(tok), "token too large");
			found[which] = true;
			free(tok);
			free(payload);
			free(pad);
		}
		free(h);
		free(empty);
	}
	CHECK(found[0] && found[1], "could not build 8192/8193-byte tokens");
	{
		/* 1.4 MB: what crashes libjwt's alloca; must be refused unread. */
		size_t n = 1400000;
		char *big = malloc(n);

		memset(big, 'A', n);
		big[100] = '.';
		big[200] = '.';
		expect("1.4 MB token", big, n, "token too large");
		free(big);
	}
}

static void run_nesting_rows(void)
{
	char deep[200], *tok;
	size_t n = 0;

	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{" ISS "," AUD "," SUB "," IAT "," EXP ",\"x\":");
	for (int i = 0; i < 40 && n < sizeof(deep) - 2; i++)
		deep[n++] = '[';
	deep[n] = '\0';
	{
		char *payload = malloc(strlen(deep) + 42);
		size_t k = strlen(deep);

		memcpy(payload, deep, k);
		for (int i = 0; i < 40; i++)
			payload[k++] = ']';
		payload[k++] = '}';
		payload[k] = '\0';
		tok = valid_token("RS256", "rsa", "", payload);
		expect("payload nested 40 deep", tok, strlen(tok), "payload is not valid JSON");
		free(tok);
		free(payload);
	}
	tok = valid_token("RS256", "rsa", ",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", CLAIMS);
	expect("header nested 30 deep", tok, strlen(tok), "header is not valid JSON");
	free(tok);
	/* Depth within the bound is fine: claims like GitHub's are nested. */
	tok = valid_token("RS256", "rsa", "", P(ISS "," AUD "," SUB "," IAT "," EXP ",\"x\":[[[[{\"a\":[1]}]]]]"));
	expect("payload nested 6 deep", tok, strlen(tok), NULL);
	free(tok);
}

/* ---- JWKS ---- */

static struct broker_jwks *parse_set(const char *json, enum broker_err *err, const char **reason)
{
	struct broker_jwks *set = NULL;

	*reason = NULL;
	*err = jwks_parse(json, strlen(json), &set, reason);
	return set;
}

struct jwks_case {
	const char *name;
	char *json;
	enum broker_err want; /* of jwks_parse */
	size_t count;         /* usable keys when OK */
	const char *absent;   /* kid that must not be found */
};

/* A P-256 key whose x coordinate starts with a zero byte, so its JWK
 * can be written with x one byte short. */
static EVP_PKEY *ec_key_with_leading_zero_x(void)
{
	for (int i = 0; i < 5000; i++) {
		EVP_PKEY *k = EVP_EC_gen("P-256");
		BIGNUM *x = NULL;
		int bits;

		EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x);
		bits = BN_num_bits(x);
		BN_free(x);
		if (bits <= 248)
			return k;
		EVP_PKEY_free(k);
	}
	return NULL;
}

static void run_jwks_rows(void)
{
	char *good = jwk_of(rsa2048, "good", "");
	char *ec = jwk_of(ec256, "ec", "");
	struct jwks_case cases[40];
	size_t n = 0;

#define CASE(nm, js, w, c, ab) cases[n++] = (struct jwks_case){nm, js, w, c, ab}
	CASE("garbage", strdup("not json at all"), BROKER_ERR_INVALID, 0, NULL);
	CASE("array", strdup("[]"), BROKER_ERR_INVALID, 0, NULL);
	CASE("keys not array", strdup("{\"keys\":{}}"), BROKER_ERR_INVALID, 0, NULL);
	CASE("no keys", strdup("{\"keys\":[]}"), BROKER_ERR_INVALID, 0, NULL);
	CASE("duplicate keys member", xasprintf("{\"keys\":[%s],\"keys\":[]}", good), BROKER_ERR_INVALID, 0, NULL);
	CASE("only unusable keys", xasprintf("{\"keys\":[%s]}", "{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"AAAA\"}"),
	     BROKER_ERR_INVALID, 0, NULL);
	CASE("one good key", xasprintf("{\"keys\":[%s]}", good), BROKER_OK, 1, NULL);
	{
		char *k = jwk_of(rsa1024, "small", "");
		CASE("RSA-1024 skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "small");
		free(k);
		k = jwk_of(rsa2048, "enc", ",\"use\":\"enc\"");
		CASE("use=enc skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "enc");
		free(k);
		k = jwk_of(rsa2048, "sig", ",\"use\":\"sig\"");
		CASE("use=sig kept", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 2, NULL);
		free(k);
		k = jwk_of(rsa2048b, "good", "");
		CASE("duplicate kid: both skipped", xasprintf("{\"keys\":[%s,%s,%s]}", good, k, ec), BROKER_OK, 1, "good");
		free(k);
		k = jwk_of(ec256, "ec", ",\"alg\":\"RS256\"");
		CASE("EC key with alg RS256 skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "ec");
		free(k);
		k = jwk_of(rsa2048, "oaep", ",\"alg\":\"RSA-OAEP\"");
		CASE("unknown alg skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "oaep");
		free(k);
		k = jwk_of(rsa2048, "hs", ",\"alg\":\"HS256\"");
		CASE("alg HS256 skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "hs");
		free(k);
		k = jwk_of(rsa2048, "ops", ",\"key_ops\":[\"encrypt\"]");
		CASE("key_ops without verify skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "ops");
		free(k);
		k = jwk_of(rsa2048, "ops", ",\"key_ops\":[\"verify\"]");
		CASE("key_ops verify kept", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 2, NULL);
		free(k);
		k = jwk_of(rsa2048, "priv", ",\"d\":\"AQAB\"");
		CASE("private member skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "priv");
		free(k);
		k = jwk_of(ec256, "nokid", "");
		memcpy(strstr(k, "\"kid\""), "\"kie\"", 5); /* same key, no kid member */
		CASE("no kid skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, NULL);
		free(k);
		k = jwk_of(ec256, "a\\u0001", "");
		CASE("kid with control char skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, NULL);
		free(k);
		CASE("P-521 skipped",
		     xasprintf("{\"keys\":[%s,{\"kty\":\"EC\",\"kid\":\"p521\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}]}",
			       good),
		     BROKER_OK, 1, "p521");
	}
	{
		/* Even RSA modulus: EVP_PKEY_fromdata takes it, the public
		 * check must not. */
		BIGNUM *bn = NULL;
		unsigned char buf[512];
		char *nb, *e, *k;
		int len;

		EVP_PKEY_get_bn_param(rsa2048, OSSL_PKEY_PARAM_RSA_N, &bn);
		BN_clear_bit(bn, 0);
		len = BN_bn2bin(bn, buf);
		BN_free(bn);
		nb = b64url_encode(buf, (size_t)len);
		e = b64_bn(rsa2048, OSSL_PKEY_PARAM_RSA_E, 0);
		k = xasprintf("{\"kty\":\"RSA\",\"kid\":\"even\",\"n\":\"%s\",\"e\":\"%s\"}", nb, e);
		CASE("RSA even modulus skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "even");
		free(nb);
		free(e);
		free(k);
	}
	{
		/* EC point off the curve: flip a bit of y. */
		char *k = jwk_of(ec256, "bad", ""), *y = strstr(k, "\"y\":\"") + 5;

		y[3] = y[3] == 'A' ? 'B' : 'A';
		CASE("EC point not on curve skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK, 1, "bad");
		free(k);
	}
	{
		/* x without its leading zero byte: the same point to a lenient
		 * parser, but not the field size RFC 7518 requires. */
		EVP_PKEY *z = ec_key_with_leading_zero_x();
		char *full = z ? jwk_of(z, "short", "") : NULL, *x = z ? b64_bn(z, OSSL_PKEY_PARAM_EC_PUB_X, 0) : NULL;
		char *y = z ? b64_bn(z, OSSL_PKEY_PARAM_EC_PUB_Y, 32) : NULL;
		char *k = z ? xasprintf("{\"kty\":\"EC\",\"kid\":\"short\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}", x, y)
			    : NULL;

		CHECK(z != NULL, "no P-256 key with a leading zero x found");
		if (z) {
			CASE("EC full-length coordinates kept", xasprintf("{\"keys\":[%s,%s]}", good, full), BROKER_OK, 2,
			     NULL);
			CASE("EC coordinate one byte short skipped", xasprintf("{\"keys\":[%s,%s]}", good, k), BROKER_OK,
			     1, "short");
		}
		free(full);
		free(x);
		free(y);
		free(k);
		EVP_PKEY_free(z);
	}
	{
		/* e = 3 (SP 800-56B requires e >= 65537) and padded base64. */
		char *k = jwk_of(rsa2048, "e3", ""), *e = strstr(k, "\"e\":\"AQAB\""), *m;

		CHECK(e != NULL, "generated key has e=65537");
		if (!e)
			return;
		m = xasprintf("%.*s\"e\":\"Aw\"%s", (int)(e - k), k, e + strlen("\"e\":\"AQAB\""));
		CASE("RSA e=3 skipped", xasprintf("{\"keys\":[%s,%s]}", good, m), BROKER_OK, 1, "e3");
		free(m);
		free(k);
		k = jwk_of(rsa2048, "pad", ""), e = strstr(k, "\"e\":\"AQAB\"");
		m = xasprintf("%.*s\"e\":\"AQAB==\"%s", (int)(e - k), k, e + strlen("\"e\":\"AQAB\""));
		CASE("padded base64 skipped", xasprintf("{\"keys\":[%s,%s]}", good, m), BROKER_OK, 1, "pad");
		free(m);
		free(k);
	}
	{
		/* 100 keys are fine, 101 are refused whole. */
		char *list = strdup(""), *tmp;

		for (int i = 0; i < 101; i++) {
			char kid[16], *k;

			snprintf(kid, sizeof(kid), "k%d", i);
			k = jwk_of(ec256, kid, "");
			tmp = xasprintf("%s%s%s", list, i ? "," : "", k);
			free(list);
			free(k);
			list = tmp;
			if (i == 99)
				CASE("100 keys", xasprintf("{\"keys\":[%s]}", list), BROKER_OK, 100, NULL);
		}
		CASE("101 keys", xasprintf("{\"keys\":[%s]}", list), BROKER_ERR_TOOBIG, 0, NULL);
		free(list);
	}
	{
		size_t big = BROKER_JWKS_MAX_BYTES + 1;
		char *s = malloc(big + 1);

		memset(s, ' ', big);
		memcpy(s, "{\"keys\":[", 9);
		memcpy(s + big - 2, "]}", 2);
		s[big] = '\0';
		CASE("over 1 MiB", s, BROKER_ERR_TOOBIG, 0, NULL);
	}
#undef CASE

	for (size_t i = 0; i < n; i++) {
		enum broker_err err;
		const char *reason;
		struct broker_jwks *set = parse_set(cases[i].json, &err, &reason);

		CHECK(err == cases[i].want, "jwks %s: got %d (%s), want %d", cases[i].name, err, reason ? reason : "-",
		      cases[i].want);
		if (err == BROKER_OK) {
			CHECK(jwks_count(set) == cases[i].count, "jwks %s: %zu keys, want %zu", cases[i].name,
			      jwks_count(set), cases[i].count);
			if (cases[i].absent)
				CHECK(jwks_lookup(set, cases[i].absent) == NULL, "jwks %s: kid %s usable", cases[i].name,
				      cases[i].absent);
		} else {
			CHECK(reason != NULL, "jwks %s: no reason", cases[i].name);
		}
		jwks_unref(set);
		free(cases[i].json);
	}
	free(good);
	free(ec);
}

static void check_key_algs(void)
{
	const struct broker_jwk *k;

	k = jwks_lookup(keyset, "rsa");
	CHECK(k && k->algs == (BROKER_ALG_RS256 | BROKER_ALG_RS384 | BROKER_ALG_RS512 | BROKER_ALG_PS256 |
			       BROKER_ALG_PS384 | BROKER_ALG_PS512),
	      "RSA key algs");
	k = jwks_lookup(keyset, "ec");
	CHECK(k && k->algs == BROKER_ALG_ES256, "P-256 key algs");
	k = jwks_lookup(keyset, "ec384");
	CHECK(k && k->algs == BROKER_ALG_ES384, "P-384 key algs");
	k = jwks_lookup(keyset, "rs384only");
	CHECK(k && k->algs == BROKER_ALG_RS384, "alg-pinned key algs");
	CHECK(jwks_lookup(keyset, NULL) == NULL, "NULL kid");
	CHECK(jwks_lookup(NULL, "rsa") == NULL, "NULL set");
	/* References: the set lives until the last holder lets go. */
	CHECK(jwks_ref(keyset) == keyset, "ref returns the set");
	jwks_unref(keyset);
	CHECK(jwks_count(keyset) == 6, "set still alive after ref/unref: %zu keys", jwks_count(keyset));
	jwks_unref(NULL);
	token_free(NULL);
}

/* The signature primitive refuses what the JWK layer already filters:
 * a second line of defence for callers that build keys themselves. */
static void check_raw_primitive(void)
{
	static const unsigned char msg[] = "header.payload";
	size_t sl;
	unsigned char *sig = sign("RS256", rsa1024, msg, sizeof(msg) - 1, &sl, 0);

	CHECK(jws_verify_raw(BROKER_ALG_RS256, rsa1024, msg, sizeof(msg) - 1, sig, sl) == BROKER_ERR_TOKEN,
	      "RSA-1024 signature accepted by jws_verify_raw");
	free(sig);
	sig = sign("RS256", rsa2048, msg, sizeof(msg) - 1, &sl, 0);
	CHECK(jws_verify_raw(BROKER_ALG_RS256, rsa2048, msg, sizeof(msg) - 1, sig, sl) == BROKER_OK,
	      "RSA-2048 signature rejected by jws_verify_raw");
	CHECK(jws_verify_raw(BROKER_ALG_ES256, rsa2048, msg, sizeof(msg) - 1, sig, sl) == BROKER_ERR_TOKEN,
	      "RSA key used for ES256");
	CHECK(jws_verify_raw(0, rsa2048, msg, sizeof(msg) - 1, sig, sl) == BROKER_ERR_TOKEN, "no alg");
	free(sig);
	sig = sign("ES256", ec256, msg, sizeof(msg) - 1, &sl, 0);
	CHECK(jws_verify_raw(BROKER_ALG_ES256, ec256, msg, sizeof(msg) - 1, sig, sl) == BROKER_OK, "ES256 raw");
	CHECK(jws_verify_raw(BROKER_ALG_ES384, ec256, msg, sizeof(msg) - 1, sig, sl) == BROKER_ERR_TOKEN,
	      "P-256 key used for ES384");
	CHECK(jws_verify_raw(BROKER_ALG_RS256, ec256, msg, sizeof(msg) - 1, sig, sl) == BROKER_ERR_TOKEN,
	      "EC key used for RS256");
	free(sig);
}

static void check_parse_outputs(void)
{
	char *tok = valid_token("ES256", "ec", "", CLAIMS);
	struct broker_token *t = NULL;
	const char *reason = NULL;
	char *d2 = strrchr(tok, '.');

	CHECK(token_parse(tok, strlen(tok), &t, &reason) == BROKER_OK, "parse valid token");
	if (t) {
		CHECK(t->alg == BROKER_ALG_ES256, "alg bit");
		CHECK(t->kid && strcmp(t->kid, "ec") == 0, "kid");
		CHECK(t->sig_len == 64, "ES256 sig length %zu", t->sig_len);
		CHECK(t->signing_input_len == (size_t)(d2 - tok) && memcmp(t->signing_input, tok, t->signing_input_len) == 0,
		      "signing input is header.payload");
		CHECK(json_is_object(t->claims) && json_is_string(json_object_get(t->claims, "sub")), "claims parsed");
	}
	token_free(t);
	/* ret untouched on failure. */
	t = (struct broker_token *)0x1;
	CHECK(token_parse("a.b", 3, &t, &reason) == BROKER_ERR_TOKEN && t == (struct broker_token *)0x1,
	      "ret untouched on error");
	free(tok);
}

int main(void)
{
	char *jwks, *k[6];
	const char *reason = NULL;

	rsa2048 = EVP_RSA_gen(2048);
	rsa2048b = EVP_RSA_gen(2048);
	rsa1024 = EVP_RSA_gen(1024);
	ec256 = EVP_EC_gen("P-256");
	ec384 = EVP_EC_gen("P-384");
	if (!rsa2048 || !rsa2048b || !rsa1024 || !ec256 || !ec384) {
		fprintf(stderr, "key generation failed\n");
		return 1;
	}
	k[0] = jwk_of(rsa2048, "rsa", ",\"use\":\"sig\"");
	k[1] = jwk_of(ec256, "ec", "");
	k[2] = jwk_of(ec384, "ec384", ",\"alg\":\"ES384\"");
	k[3] = jwk_of(rsa1024, "rsa1024", "");
	k[4] = jwk_of(rsa2048, "enc", ",\"use\":\"enc\"");
	k[5] = jwk_of(rsa2048, "rs384only", ",\"alg\":\"RS384\"");
	jwks = xasprintf("{\"keys\":[%s,%s,%s,%s,%s,%s,%s,%s]}", k[0], k[1], k[2], k[3], k[4], k[5],
			 "{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"}", "{\"kty\":\"RSA\",\"kid\":\"norsa\"}");
	CHECK(jwks_parse(jwks, strlen(jwks), &keyset, &reason) == BROKER_OK, "test JWKS parses: %s",
	      reason ? reason : "-");
	if (!keyset)
		return check_done();
	/* rsa, ec, ec384, rs384only (+ two more below that share material) */
	CHECK(jwks_count(keyset) == 4, "usable keys in test JWKS: %zu", jwks_count(keyset));
	jwks_unref(keyset);
	/* Add two more usable kids so check_key_algs sees a 6-key set. */
	free(jwks);
	{
		char *x = jwk_of(ec256, "ec-2", ""), *y = jwk_of(rsa2048, "rsa-2", "");

		jwks = xasprintf("{\"keys\":[%s,%s,%s,%s,%s,%s,%s,%s]}", k[0], k[1], k[2], k[3], k[4], k[5], x, y);
		free(x);
		free(y);
	}
	keyset = NULL;
	CHECK(jwks_parse(jwks, strlen(jwks), &keyset, &reason) == BROKER_OK, "test JWKS parses");

	run_rows();
	run_encoding_rows();
	run_structure_rows();
	run_size_rows();
	run_nesting_rows();
	run_jwks_rows();
	check_key_algs();
	check_parse_outputs();
	check_raw_primitive();

	jwks_unref(keyset);
	free(jwks);
	for (int i = 0; i < 6; i++)
		free(k[i]);
	EVP_PKEY_free(rsa2048);
	EVP_PKEY_free(rsa2048b);
	EVP_PKEY_free(rsa1024);
	EVP_PKEY_free(ec256);
	EVP_PKEY_free(ec384);
	return check_done();
}
