/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness for the /v1/token body parser (form and JSON). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cibroker/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[] = {"application/x-www-form-urlencoded", "application/json",
					    "application/json; charset=utf-8", "text/plain"};
	struct token_request req;
	const char *reason = NULL;

	if (size < 1)
		return 0;
	/* First byte picks the content type; the rest is the body. */
	if (token_request_parse(types[data[0] % 4], (const char *)data + 1, size - 1, &req, &reason) == BROKER_OK) {
		/* Every parsed value is a NUL-free, non-empty C string. */
		const char *vals[] = {req.grant_type, req.subject_token, req.subject_token_type, req.audience,
				      req.requested_token_type};
		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
			if (vals[i] && strlen(vals[i]) == 0)
				__builtin_trap();
		token_request_clear(&req);
	} else if (!reason) {
		__builtin_trap();
	}
	return 0;
}
