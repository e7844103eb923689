/* SPDX-License-Identifier: Apache-2.0 */
/* The dev issuer of `cibroker dev`: a stand-in for GitHub's token service on
 * the broker's own listener, so a new user can see an exchange without any
 * CI. It exists only in a server started by cmd_dev; `serve` has no way to
 * create one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "cibroker/http.h"
#include "cibroker/keys.h"
#include "cibroker/util.h"

struct devissuer {
	EVP_PKEY *key;
	char kid[44];
	char *url;
	char *audience;
	char *discovery;
	char *jwks;
};

static char *bn_b64(EVP_PKEY *k, const char *name)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	char *out = NULL;
	int n;

	if (!EVP_PKEY_get_bn_param(k, name, &bn))
		return NULL;
	n = BN_num_bytes(bn);
	if (n > 0 && (size_t)n <= sizeof(buf) && BN_bn2bin(bn, buf) == n)
		out = b64url_encode(buf, (size_t)n);
	BN_free(bn);
	return out;
}

enum broker_err devissuer_create(const char *public_url, struct devissuer **ret)
{
	struct devissuer *d = calloc(1, sizeof(*d));
	char *n = NULL, *e = NULL;
	json_t *o = NULL;
	enum broker_err err = BROKER_ERR_CRYPTO;

	if (!d)
		return BROKER_ERR_NOMEM;
	d->key = EVP_RSA_gen(2048);
	if (!d->key || jwk_thumbprint(d->key, d->kid) != BROKER_OK)
		goto out;
	n = bn_b64(d->key, OSSL_PKEY_PARAM_RSA_N);
	e = bn_b64(d->key, OSSL_PKEY_PARAM_RSA_E);
	err = BROKER_ERR_NOMEM;
	if (!n || !e || asprintf(&d->url, "%s/dev", public_url) < 0 || !(d->audience = strdup(public_url)))
		goto out;
	o = json_pack("{s:[{s:s, s:s, s:s, s:s, s:s, s:s}]}", "keys", "kty", "RSA", "use", "sig", "alg", "RS256", "kid",
		      d->kid, "n", n, "e", e);
	d->jwks = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	o = json_pack("{s:s, s:s+, s:[s], s:[s], s:[s], s:[s]}", "issuer", d->url, "jwks_uri", d->url, "/jwks",
		      "id_token_signing_alg_values_supported", "RS256", "response_types_supported", "id_token",
		      "subject_types_supported", "public", "claims_supported", "sub");
	d->discovery = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!d->jwks || !d->discovery)
		goto out;
	*ret = d;
	d = NULL;
	err = BROKER_OK;
out:
	free(n);
	free(e);
	devissuer_free(d);
	return err;
}

void devissuer_free(struct devissuer *d)
{
	if (!d)
		return;
	EVP_PKEY_free(d->key);
	free(d->url);
	free(d->audience);
	free(d->discovery);
	free(d->jwks);
	free(d);
}

const char *devissuer_url(const struct devissuer *d)
{
	return d->url;
}

/* The claim sets of ../shared/testdata/claims/ (GitHub Actions: a push to
 * main of acme/api in environment production; GitLab: my-group/my-project),
 * with fresh times and jti. The example policies in policies/ accept them. */
static json_t *default_claims(const struct devissuer *d, bool gitlab, int64_t now)
{
	char jti[23];
	json_t *c;

	if (broker_random_id(jti) != BROKER_OK)
		return NULL;
	if (gitlab)
		c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
			      " s:s, s:s, s:s, s:i, s:s, s:s}",
			      "sub", "project_path:my-group/my-project:ref_type:branch:ref:main", "namespace_id", "72",
			      "namespace_path", "my-group", "project_id", "20", "project_path", "my-group/my-project",
			      "project_visibility", "private", "user_id", "1", "user_login", "sample-user",
			      "user_access_level", "owner", "pipeline_id", "574", "pipeline_source", "push", "job_id",
			      "302", "ref", "main", "ref_type", "branch", "ref_path", "refs/heads/main", "ref_protected",
			      "true", "environment", "production", "environment_protected", "true", "deployment_tier",
			      "production", "runner_environment", "gitlab-hosted", "sha",
			      "714a629c0b401fdce83e847fc9589983fc6f46bc", "runner_id", 1, "ci_config_ref_uri",
			      "gitlab.example.com/my-group/my-project//.gitlab-ci.yml@refs/heads/main", "ci_config_sha",
			      "714a629c0b401fdce83e847fc9589983fc6f46bc");
	else
		c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
			      " s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}",
			      "sub", "repo:acme/api:environment:production", "actor", "alice", "actor_id", "68485867",
			      "event_name", "push", "ref", "refs/heads/main", "ref_type", "branch", "ref_protected", "true",
			      "sha", "c4421ba5d6b1e3f0a9c8b7d6e5f4a3b2c1d0e9f8", "environment", "production", "repository",
			      "acme/api", "repository_id", "89221572", "repository_owner", "acme", "repository_owner_id",
			      "365230", "repository_visibility", "private", "workflow", "Deploy", "workflow_ref",
			      "acme/api/.github/workflows/deploy.yml@refs/heads/main", "workflow_sha",
			      "c4421ba5d6b1e3f0a9c8b7d6e5f4a3b2c1d0e9f8", "job_workflow_ref",
			      "acme/shared/.github/workflows/deploy.yml@refs/heads/main", "job_workflow_sha",
			      "c9ed89cf0a1b2c3d4e5f60718293a4b5c6d7e8f9", "run_id", "20143266074", "run_number", "2",
			      "run_attempt", "1", "runner_environment", "github-hosted", "enterprise", "acme-inc",
			      "enterprise_id", "42");
	if (!c)
		return NULL;
	json_object_set_new(c, "iss", json_string(d->url));
	json_object_set_new(c, "aud", json_string(d->audience));
	json_object_set_new(c, "jti", json_string(jti));
	json_object_set_new(c, "iat", json_integer(now));
	json_object_set_new(c, "nbf", json_integer(now - 5));
	json_object_set_new(c, "exp", json_integer(now + 300));
	return c;
}

static char *sign_rs256(const struct devissuer *d, const json_t *claims)
{
	json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", "RS256", "typ", "JWT", "kid", d->kid);
	char *h = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL, *p = json_dumps(claims, JSON_COMPACT);
	char *hb = h ? b64url_encode(h, strlen(h)) : NULL, *pb = p ? b64url_encode(p, strlen(p)) : NULL;
	char *input = NULL, *sigb = NULL, *out = NULL;
	unsigned char sig[512];
	size_t siglen = sizeof(sig);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!hb || !pb || !ctx || asprintf(&input, "%s.%s", hb, pb) < 0)
		goto out;
	if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, d->key) != 1 ||
	    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, strlen(input)) != 1)
		goto out;
	sigb = b64url_encode(sig, siglen);
	if (sigb && asprintf(&out, "%s.%s", input, sigb) < 0)
		out = NULL;
out:
	EVP_MD_CTX_free(ctx);
	json_decref(hdr);
	free(h);
	free(p);
	free(hb);
	free(pb);
	free(input);
	free(sigb);
	return out;
}

bool devissuer_handle(struct devissuer *d, const char *method, const char *path, const char *shape,
		      const char *body, size_t len, int *ret_status, char **ret_body, const char **ret_type)
{
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	*ret_type = "application/json";
	if (strcmp(path, "/dev/.well-known/openid-configuration") == 0 && get) {
		*ret_status = 200;
		*ret_body = strdup(d->discovery);
		return true;
	}
	if (strcmp(path, "/dev/jwks") == 0 && get) {
		*ret_status = 200;
		*ret_body = strdup(d->jwks);
		return true;
	}
	if (strcmp(path, "/dev/token") == 0 && strcmp(method, "POST") == 0) {
		json_t *claims = default_claims(d, shape && strcmp(shape, "gitlab") == 0, broker_now());
		json_t *over = len ? broker_json_parse(body, len, 8) : NULL;
		const char *k;
		json_t *v;

		if (len && !json_is_object(over)) {
			json_decref(claims);
			json_decref(over);
			*ret_status = 400;
			*ret_body = strdup("{\"error\":\"invalid_request\",\"error_description\":"
					   "\"body must be a JSON object of claims to override (null removes)\"}");
			return true;
		}
		/* {"ref":"refs/heads/dev"} overrides a claim; {"environment":null} removes it. */
		json_object_foreach(over, k, v) {
			if (json_is_null(v))
				json_object_del(claims, k);
			else
				json_object_set(claims, k, v);
		}
		json_decref(over);
		*ret_body = claims ? sign_rs256(d, claims) : NULL;
		json_decref(claims);
		if (!*ret_body) {
			*ret_status = 500;
			*ret_body = strdup("{\"error\":\"server_error\",\"error_description\":\"could not mint a dev token\"}");
			return true;
		}
		*ret_status = 200;
		*ret_type = "text/plain; charset=utf-8";
		return true;
	}
	return false;
}
