/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/* Internals shared by broker/mint/aws.c (the STS call) and
 * broker/mint/aws-identity.c (the broker's own identity). Not a public
 * header: nothing outside broker/mint/ includes it. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "cibroker/mint-aws.h"
#include "cibroker/util.h"

#define STS_NS "https://sts.amazonaws.com/doc/2011-06-15/"
#define STS_VERSION "2011-06-15"
#define RESPONSE_MAX (1024 * 1024)
#define CREDENTIALS_FILE_MAX (64 * 1024)
#define WEB_TOKEN_MAX (16 * 1024)
#define ACCESS_KEY_ID_MAX 128
#define SECRET_MAX 256
#define SESSION_TOKEN_MAX 16384
#define RETRY_DEFAULT 2  /* s: throttling and 5xx without Retry-After */
#define RETRY_CEILING 60
#define REFRESH_FAIL_HOLDOFF_US (5 * 1000000LL) /* don't hammer STS while it is down */

enum identity_source { SOURCE_ENV, SOURCE_WEB_IDENTITY, SOURCE_PROFILE };

/* The broker's own signing identity. token/expiration only for temporary ones. */
struct identity {
	char *access_key_id;
	char *secret;
	char *token;
	int64_t expiration; /* 0: static, never refreshed */
};

struct broker_aws {
	char *endpoint;
	char *region;
	char *sigv4;         /* "aws:amz:<region>:sts" */
	bool plain_http;     /* loopback test endpoints only */
	enum identity_source source;
	char *web_token_file;
	char *web_role_arn;
	char *web_session_name;
	long connect_ms, total_ms;
	int64_t refresh_margin;

	pthread_mutex_t lock;
	pthread_cond_t refreshed;
	bool lock_init;
	struct identity id;       /* under lock */
	bool refreshing;          /* under lock: one web-identity call at a time */
	int64_t last_failure_us;  /* under lock: monotonic time of the last failed refresh */
	struct aws_error last_failure;
};

/* A growable byte buffer that wipes what it drops (it holds secrets). */

/* aws.c */
void aws_set_error(struct aws_error *why, int status, const char *code, const char *message, int retry_after);
/* Printable ASCII without spaces, 1..max bytes: safe in a header and in curl's user name. */
bool aws_token_chars_ok(const char *s, size_t max);
/* STS's RoleSessionName / SourceIdentity alphabet: [\w+=,.@-]{2,max}. */
bool aws_sts_name_ok(const char *s, size_t max);
/* Buffers hold secrets (credentials, the web identity token): struct
 * broker_buf grows by copy-and-wipe, never realloc. */
static inline void aws_buf_wipe(struct broker_buf *b)
{
	broker_buf_wipe(b);
}

static inline bool aws_buf_append(struct broker_buf *b, const char *s, size_t n, size_t max)
{
	return broker_buf_append(b, s, n, max) == BROKER_OK;
}
/* Appends "&key=value" with value form-encoded. */
bool aws_form_add(struct broker_buf *form, CURL *c, const char *key, const char *value);
/* One STS Query API call for `action` ("AssumeRole"); signed with id unless
 * NULL. own_identity: the call fetches the broker's own identity, so every
 * refusal is the broker's problem (UPSTREAM). *identity_rejected is set when
 * STS refused the signing identity. */
enum broker_err aws_sts_call(struct broker_aws *aws, CURL *c, const struct broker_buf *form, const struct identity *id,
			     const char *action, bool own_identity, struct aws_credentials *ret, struct aws_error *why,
			     bool *identity_rejected);

/* aws-identity.c */
void aws_identity_clear(struct identity *id);
bool aws_identity_copy(const struct identity *src, struct identity *dst);
char *aws_trim(char *s);
/* Picks and loads the identity source at creation (no network). */
enum broker_err aws_identity_configure(struct broker_aws *aws, const char *profile, const char **reason);
/* A private copy of the current signing identity, refreshed if temporary. */
enum broker_err aws_identity_get(struct broker_aws *aws, struct identity *ret, struct aws_error *why);
/* STS refused this temporary identity: drop it so the next call refetches. */
void aws_identity_invalidate(struct broker_aws *aws, const char *access_key_id);
