/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>

#include <jansson.h>

#include "cibroker/err.h"
#include "cibroker/keys.h"

/* Minting credentials, one file per kind under broker/mint/. */

struct mint_jwt_request {
	const char *iss;       /* public_url */
	const char *sub;
	const char *aud;
	const char *policy;
	int64_t now;           /* iat = nbf = now */
	int64_t ttl;           /* exp = now + ttl; 0 < ttl <= 366 days (max_ttl is the caller's) */
	const json_t *ci;      /* object (required): {"iss","sub", repository, ...} */
	const json_t *extra;   /* object or NULL: policy claims, added after the reserved ones */
};
/* ES256 with the active key; header {"alg":"ES256","typ":"JWT","kid":<kid>};
 * jti = 128 bits from RAND_bytes. BROKER_ERR_INVALID for a missing field, a
 * bad ttl, non-object ci/extra or an extra claim named like a reserved one
 * (iss sub aud exp iat nbf jti policy ci); BROKER_ERR_TOOBIG past 64 KiB of
 * claims; BROKER_ERR_NOKEYS without a key. Safe to call from many threads
 * with the same key set. *ret_token is a secret: free with
 * broker_secret_free(). ret_jti gets the jti. */
enum broker_err mint_jwt(const struct broker_signing_keys *ks, const struct mint_jwt_request *req, char **ret_token,
			 char ret_jti[23]);
