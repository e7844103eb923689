/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The CI-side client's HTTP half: fetching the job's ID token from GitHub
 * Actions, the broker's discovery document and the token exchange itself,
 * each with jittered, bounded retries. Part of the cli layer (it may use
 * libcurl); it does not print: failures come back as a code plus a one-line
 * reason the caller shows after "cibroker exchange: ". */

#include <stddef.h>
#include <stdint.h>

#include "cibroker/err.h"

/* Exit codes of `cibroker exchange` (DESIGN.md "The CI-side client"). */
enum client_exit {
	CLIENT_EXIT_OK = 0,
	CLIENT_EXIT_FAILURE = 1,     /* local failure: out of memory, cannot write output */
	CLIENT_EXIT_USAGE = 2,       /* bad options, no ID token, format does not fit */
	CLIENT_EXIT_REFUSED = 3,     /* a 4xx answer: the broker (or Actions) said no */
	CLIENT_EXIT_UNAVAILABLE = 4, /* 503 / connection errors / retries exhausted / broken answer */
};

/* Hard limits on everything the client reads. */
#define CLIENT_MAX_RESPONSE (1024 * 1024) /* any HTTP answer body */
#define CLIENT_MAX_ID_TOKEN (64 * 1024)   /* ID token from env, file or stdin */
#define CLIENT_WHY_MAX 1024

struct client_settings {
	int64_t retry_max_us; /* total retry budget shared by every request; 0 = no retries */
	const char *ca_file;  /* optional extra CA bundle for the broker; NULL = system */
};

/* One HTTP conversation's state: the settings, the shared retry deadline and
 * counters for messages. Opaque; _free(NULL) is a no-op. */
struct client;

enum broker_err client_create(const struct client_settings *settings, struct client **ret);
void client_free(struct client *c);
/* Attempts made by the last request (1 = no retry), for messages and tests. */
unsigned client_last_attempts(const struct client *c);

/* A final HTTP answer. body is NUL-terminated and wiped by client_reply_free
 * (it may carry credentials). */
struct client_reply {
	long status;
	char *body;
	size_t len;
};
void client_reply_free(struct client_reply *r);

/* Failure codes of the functions below (why[] says the rest):
 *   BROKER_ERR_DENIED    a 4xx answer                 -> CLIENT_EXIT_REFUSED
 *   BROKER_ERR_UPSTREAM  connection/5xx, budget spent -> CLIENT_EXIT_UNAVAILABLE
 *   BROKER_ERR_INVALID   an answer we cannot use      -> CLIENT_EXIT_UNAVAILABLE
 *   BROKER_ERR_NOMEM                                   -> CLIENT_EXIT_FAILURE */
int client_exit_code(enum broker_err err);

/* The broker's issuer identifier from BROKER/.well-known/openid-configuration. */
enum broker_err client_discover_issuer(struct client *c, const char *broker, char **ret_issuer,
				       char why[CLIENT_WHY_MAX]);

/* GitHub Actions: GET request_url + "&audience=" + audience with the bearer
 * request_token; *ret_token is the answer's "value" (free with
 * broker_secret_free). */
enum broker_err client_actions_id_token(struct client *c, const char *request_url, const char *request_token,
					const char *audience, char **ret_token, char why[CLIENT_WHY_MAX]);

/* POST BROKER/v1/token (RFC 8693). requested_token_type: NULL to take what
 * the policy issues. On BROKER_OK *ret is the 200 answer as received. On a
 * refusal or an exhausted 503 why holds the broker's own fields:
 * "error: error_description (request_id ID)". */
enum broker_err client_token_exchange(struct client *c, const char *broker, const char *subject_token,
				      const char *audience, const char *requested_token_type,
				      struct client_reply **ret, char why[CLIENT_WHY_MAX]);
