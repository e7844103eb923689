/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>

#include "cibroker/err.h"

/* The RFC 8693 request body: application/x-www-form-urlencoded or JSON.
 * No HTTP library here, so the parser can be fuzzed on its own. */
struct token_request {
	char *grant_type;
	char *subject_token;         /* secret: wiped by token_request_clear */
	char *subject_token_type;
	char *audience;
	char *requested_token_type;
};

/* Parameters are case-sensitive; a repeated parameter, a malformed escape, a
 * NUL byte or a non-string JSON value is BROKER_ERR_INVALID with a short
 * reason. Empty values count as absent (RFC 6749 §3.1); unknown parameters are
 * ignored (§3.2). content_type NULL or another type: BROKER_ERR_INVALID. */
enum broker_err token_request_parse(const char *content_type, const char *body, size_t len,
				    struct token_request *ret, const char **ret_reason);
void token_request_clear(struct token_request *req);
