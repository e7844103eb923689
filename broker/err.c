/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/err.h"

const char *broker_strerror(enum broker_err err)
{
	switch (err) {
	case BROKER_OK: return "success";
	case BROKER_ERR_NOMEM: return "out of memory";
	case BROKER_ERR_INVALID: return "invalid input";
	case BROKER_ERR_IO: return "input/output error";
	case BROKER_ERR_TOKEN: return "subject token not verifiable";
	case BROKER_ERR_NOKEYS: return "no usable issuer keys";
	case BROKER_ERR_DENIED: return "denied by policy";
	case BROKER_ERR_UPSTREAM: return "upstream unavailable";
	case BROKER_ERR_CONFIG: return "configuration rejected";
	case BROKER_ERR_NOTFOUND: return "not found";
	case BROKER_ERR_TOOBIG: return "input too large";
	case BROKER_ERR_CRYPTO: return "cryptographic operation failed";
	case BROKER_ERR_REPLAY: return "token already used";
	case BROKER_ERR_AUDIT: return "audit record not written";
	case BROKER_ERR_RATELIMIT: return "rate limit exceeded";
	}
	return "unknown error";
}
