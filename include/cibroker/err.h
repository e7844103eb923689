/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* One error type for the whole broker. Functions return it and write their
 * ret_ out-parameters only on BROKER_OK. Values are explicit and stable. */
enum broker_err {
	BROKER_OK = 0,
	BROKER_ERR_NOMEM = 1,       /* allocation failed */
	BROKER_ERR_INVALID = 2,     /* malformed input (request, file, argument) */
	BROKER_ERR_IO = 3,          /* file or socket error */
	BROKER_ERR_TOKEN = 4,       /* subject token not verifiable -> invalid_grant */
	BROKER_ERR_NOKEYS = 5,      /* issuer has no usable keys yet -> 503 */
	BROKER_ERR_DENIED = 6,      /* policy refused -> 403 access_denied */
	BROKER_ERR_UPSTREAM = 7,    /* an upstream (JWKS, STS, Redis) failed -> 503 */
	BROKER_ERR_CONFIG = 8,      /* configuration or policy file rejected */
	BROKER_ERR_NOTFOUND = 9,    /* lookup found nothing (kid, policy, file) */
	BROKER_ERR_TOOBIG = 10,     /* input over its hard limit */
	BROKER_ERR_CRYPTO = 11,     /* OpenSSL operation failed */
	BROKER_ERR_REPLAY = 12,     /* single-use token seen before -> invalid_grant */
	BROKER_ERR_AUDIT = 13,      /* audit record could not be written/synced -> 503 */
	BROKER_ERR_RATELIMIT = 14,  /* token bucket empty -> 429 */
};

const char *broker_strerror(enum broker_err err);
