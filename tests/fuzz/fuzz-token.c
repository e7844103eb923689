/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness for the subject-token verifier: token_parse, then --
 * whatever the signature says -- the alg, signature and claim checks with
 * fixed rules, so every stage sees hostile input. The keys are the public
 * Wycheproof JWS test keys (kid-rsa-sign, kid-ec-sign); the seed corpus in
 * corpus/token/ holds tokens signed with them, so the success path is
 * reachable too. Invariants that must hold are checked with a trap. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cibroker/config.h"
#include "cibroker/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char test_jwks[] =
	"{\"keys\":["
	"{\"kty\":\"EC\",\"kid\":\"kid-ec-sign\",\"use\":\"sig\",\"crv\":\"P-256\","
	"\"x\":\"04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY\",\"y\":\"UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw\"},"
	"{\"kty\":\"RSA\",\"kid\":\"kid-rsa-sign\",\"use\":\"sig\",\"e\":\"AQAB\",\"n\":"
	"\"kqGboBfAWttWPCA-0cGRgsY6SaYoIARt0B_PkaEcIq9HPYNdu9n6UuWHuuTHrjF_ZoQW97r5HaAorNvrMEGTGdxCHZdEtkHvNVVmrtxTBLiQCb"
	"CozXhFoIrVcr3qUBrdGnNn_M3jJi7Wg7p_-x62nS5gNG875oyheRkutHsQXikFZwsN3q_TsPNOVlCiHy8mxzaFTUQGm-X8UYexFyAivlDSjgDJLA"
	"ZSWfxd7k9Gxuwa3AUfQqQcVcegmgKGCaErQ3qQbh1x7WB6iopE3_-GZ8HMAVtR9AmrVscqYsnjhaCehfAI0iKKs8zXr8tISc0ORbaalrkk03H1Zr"
	"sEnDKEWQ\"}]}";

static char *const audiences[] = {"https://broker.test"};
static const struct token_rules rules = {
	.issuer = "https://issuer.test",
	.audiences = audiences,
	.n_audiences = 1,
	.algorithms = BROKER_ALG_RS256 | BROKER_ALG_PS256 | BROKER_ALG_ES256,
	.clock_skew = 60,
	.max_token_age = 900,
	.now = 1800000000,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct broker_jwks *keys;
	struct broker_token *t = NULL;
	const char *reason = NULL;
	enum broker_err err;

	if (!keys && jwks_parse(test_jwks, sizeof(test_jwks) - 1, &keys, &reason) != BROKER_OK)
		__builtin_trap();

	err = token_parse((const char *)data, size, &t, &reason);
	if (err != BROKER_OK) {
		/* Every rejection names a reason; nothing is accepted oversize. */
		if (err == BROKER_ERR_TOKEN && !reason)
			__builtin_trap();
		return 0;
	}
	if (size > BROKER_TOKEN_MAX || !t->kid || !t->alg || (t->alg & (t->alg - 1)) || t->sig_len == 0 ||
	    !json_is_object(t->header) || !json_is_object(t->claims) || t->signing_input != t->raw ||
	    t->signing_input_len >= size || memcmp(t->raw, data, size) != 0)
		__builtin_trap();

	reason = NULL;
	if (token_check_alg(t, &rules, &reason) != BROKER_OK && !reason)
		__builtin_trap();
	reason = NULL;
	err = token_verify_signature(t, jwks_lookup(keys, t->kid), &reason);
	if (err != BROKER_OK && err != BROKER_ERR_NOMEM && !reason)
		__builtin_trap();
	reason = NULL;
	if (token_check_claims(t, &rules, &reason) != BROKER_OK && !reason)
		__builtin_trap();
	token_free(t);
	return 0;
}
