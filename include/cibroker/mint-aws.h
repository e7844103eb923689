/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdint.h>

#include <jansson.h>

#include "cibroker/err.h"

/* Temporary AWS credentials through sts:AssumeRole (Query API, 2011-06-15),
 * signed with SigV4 by libcurl (CURLOPT_AWS_SIGV4), answers parsed with
 * libxml2. Like every mint module it never logs: failures come back as an
 * enum broker_err plus a filled struct aws_error.
 *
 * Error mapping (what the exchange should answer):
 *   BROKER_ERR_DENIED    STS refused the caller's request: AccessDenied and
 *                        any other 4xx with an STS error code that is not
 *                        listed below (ValidationError, RegionDisabledException,
 *                        MalformedPolicyDocument, PackedPolicyTooLarge, ...).
 *                        -> 403 access_denied with aws_error.code in the
 *                        description.
 *   BROKER_ERR_UPSTREAM  STS unavailable or the broker itself misconfigured:
 *                        Throttling/ThrottlingException/RequestLimitExceeded/
 *                        TooManyRequestsException and any 5xx (retry_after
 *                        > 0); network errors and timeouts (retry_after > 0);
 *                        an unparseable, oversized or DTD-carrying answer;
 *                        and the codes that mean the broker's OWN identity is
 *                        wrong (InvalidClientTokenId, SignatureDoesNotMatch,
 *                        IncompleteSignature, MissingAuthenticationToken,
 *                        ExpiredToken, RequestExpired, InvalidAccessKeyId,
 *                        and the web-identity codes when fetching the
 *                        broker's identity). A misconfigured broker is not
 *                        the caller's fault, so it is a 503, not a 403;
 *                        retry_after is 0 for those (retrying soon will not
 *                        help) .
 *   BROKER_ERR_INVALID   the request failed the STS limits checked locally
 *                        (policy loader bug or hand-built request).
 *   BROKER_ERR_NOMEM     allocation failed. */

/* The broker's own AWS identity and its STS endpoint. Thread-safe: many
 * threads may call aws_assume_role() on one object at once; a temporary
 * identity (web identity) is refreshed by one thread while others wait. */
struct broker_aws;

/* sts_endpoint: NULL -> https://sts.<region>.amazonaws.com; must be https://
 * or http:// to a loopback host. region: NULL -> "us-east-1". profile:
 * NULL -> the standard chain (see docs/aws.md): AWS_ACCESS_KEY_ID +
 * AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else AWS_WEB_IDENTITY_TOKEN_FILE
 * + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME); else the shared credentials file
 * ($AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials), profile $AWS_PROFILE
 * or "default". A non-NULL profile means exactly that profile of the shared
 * credentials file and nothing else. No network traffic happens here (a web
 * identity is fetched on first use). Errors: BROKER_ERR_CONFIG with a static
 * reason in *ret_reason (also set on success to NULL). */
enum broker_err aws_create(const char *sts_endpoint, const char *region, const char *profile, struct broker_aws **ret,
			   const char **ret_reason);
void aws_free(struct broker_aws *aws);

/* Which source the identity came from: "env", "web-identity", "profile". */
const char *aws_identity_source(const struct broker_aws *aws);

/* Tuning, mostly for tests: connect/total timeouts in milliseconds (default
 * 3000/10000) and how long before expiry a temporary identity is refreshed
 * (default 300 s). Not thread-safe against concurrent aws_assume_role(). */
void aws_set_timeouts(struct broker_aws *aws, long connect_ms, long total_ms);
void aws_set_refresh_margin(struct broker_aws *aws, int64_t seconds);

/* STS limits, checked before any network traffic. */
#define AWS_ROLE_ARN_MAX 2048
#define AWS_SESSION_NAME_MAX 64     /* [A-Za-z0-9+=,.@-]{2,64} */
#define AWS_SOURCE_IDENTITY_MAX 64  /* same alphabet, 2..64 */
#define AWS_SESSION_TAGS_MAX 50
#define AWS_TAG_KEY_MAX 128
#define AWS_TAG_VALUE_MAX 256
#define AWS_SESSION_POLICY_MAX 2048 /* plaintext characters */
#define AWS_DURATION_MIN 900
#define AWS_DURATION_MAX 43200

struct aws_assume_request {
	const char *role_arn;
	const char *session_name;
	const char *source_identity; /* NULL: none */
	const json_t *session_tags;  /* NULL or object of name -> string */
	const char *session_policy;  /* NULL or JSON text */
	int64_t duration_s;          /* 900..43200 */
};

/* Secrets: clear with aws_credentials_clear(). */
struct aws_credentials {
	char *access_key_id;
	char *secret_access_key;
	char *session_token;
	int64_t expiration;        /* epoch seconds */
	char expiration_text[32];  /* "2026-11-22T01:24:06Z" (credential_process form) */
};

/* Filled on failure (zeroed first); code is STS's error code ("AccessDenied",
 * "Throttling") or a local one ("NetworkError", "Timeout", "BadResponse",
 * "ResponseTooLarge", "NoIdentity"). http_status is 0 without an answer.
 * retry_after: seconds to advise in a 503's Retry-After, 0 = none. May be
 * NULL. message never contains secrets. */
struct aws_error {
	int http_status;
	char code[64];
	char message[256];
	int retry_after;
};

/* sts:AssumeRole with the broker's identity. On BROKER_OK *ret is filled
 * (owned by the caller: aws_credentials_clear()). */
enum broker_err aws_assume_role(struct broker_aws *aws, const struct aws_assume_request *req,
				struct aws_credentials *ret, struct aws_error *ret_err);
/* Wipes and frees the secrets and zeroes the struct. NULL is a no-op. */
void aws_credentials_clear(struct aws_credentials *c);
