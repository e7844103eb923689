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
	int64_t now;
	int64_t ttl;
	const json_t *ci;      /* {"iss","sub", repository, ...} */
	const json_t *extra;   /* policy claims (reserved names already refused at load) */
};
/* ES256 with the active key; jti = 128 random bits. *ret_token is a secret:
 * free with broker_secret_free(). ret_jti gets the jti. */
enum broker_err mint_jwt(const struct broker_signing_keys *ks, const struct mint_jwt_request *req, char **ret_token,
			 char ret_jti[23]);
