/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "cibroker/util.h"

/* Full-jitter exponential backoff (AWS architecture blog, "Exponential
 * Backoff And Jitter"): the n-th wait is uniform in [0, min(cap, base*2^n)],
 * so a fleet of CI jobs hitting a restarting broker spreads out instead of
 * retrying in lockstep. */
#define BACKOFF_BASE_US 500000
#define BACKOFF_CAP_US 8000000
#define BACKOFF_FLOOR_US 50000
/* Per-request limits; the retry budget bounds the whole run. */
#define CONNECT_TIMEOUT_MS 10000L
#define REQUEST_TIMEOUT_MIN_MS 10000
#define REQUEST_TIMEOUT_MAX_MS 30000
#define JSON_MAX_DEPTH 16
#define ERR_FIELD_MAX 300

#ifndef CIBROKER_VERSION
#define CIBROKER_VERSION "0"
#endif

struct client {
	struct client_settings settings;
	int64_t deadline_us; /* monotonic: no retry sleeps past it */
	unsigned last_attempts;
	CURL *curl;          /* reused, so retries and the exchange share a connection */
};


struct request {
	const char *url;
	const char *bearer; /* secret; sent as Authorization: Bearer */
	const char *form;   /* secret; POSTed as application/x-www-form-urlencoded */
	size_t form_len;
	bool broker;        /* the broker (uses settings.ca_file), not Actions */
};

enum broker_err client_create(const struct client_settings *settings, struct client **ret)
{
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		return BROKER_ERR_NOMEM;
	c->settings = *settings;
	c->deadline_us = broker_mono_us() + settings->retry_max_us;
	c->curl = curl_easy_init();
	if (!c->curl) {
		client_free(c);
		return BROKER_ERR_NOMEM;
	}
	*ret = c;
	return BROKER_OK;
}

void client_free(struct client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c);
}

unsigned client_last_attempts(const struct client *c)
{
	return c->last_attempts;
}

void client_reply_free(struct client_reply *r)
{
	if (!r)
		return;
	broker_wipe_free(r->body, r->len);
	free(r);
}

int client_exit_code(enum broker_err err)
{
	switch (err) {
	case BROKER_OK:
		return CLIENT_EXIT_OK;
	case BROKER_ERR_DENIED:
		return CLIENT_EXIT_REFUSED;
	case BROKER_ERR_UPSTREAM:
	case BROKER_ERR_INVALID:
		return CLIENT_EXIT_UNAVAILABLE;
	default:
		return CLIENT_EXIT_FAILURE;
	}
}

/* Answers may carry credentials: struct broker_buf wipes what it outgrows. */

/* curl_slist_append copies its strings; wipe the copies before freeing so
 * the bearer does not linger in freed memory. */
static void headers_free(struct curl_slist *h)
{
	for (struct curl_slist *p = h; p; p = p->next)
		OPENSSL_cleanse(p->data, strlen(p->data));
	curl_slist_free_all(h);
}

/* Connection-level failures worth another try; TLS verification failures,
 * bad URLs and oversized answers are not. */
static bool curl_retryable(CURLcode res)
{
	switch (res) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static int64_t backoff_us(unsigned attempt)
{
	int64_t ceiling = BACKOFF_BASE_US;
	uint64_t r = 0;

	for (unsigned i = 1; i < attempt && ceiling < BACKOFF_CAP_US; i++)
		ceiling *= 2;
	if (ceiling > BACKOFF_CAP_US)
		ceiling = BACKOFF_CAP_US;
	if (broker_random(&r, sizeof(r)) != BROKER_OK)
		r = (uint64_t)broker_mono_us();
	r %= (uint64_t)ceiling + 1;
	return (int64_t)r < BACKOFF_FLOOR_US ? BACKOFF_FLOOR_US : (int64_t)r;
}

static void sleep_us(int64_t us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static CURLcode perform_once(struct client *c, const struct request *rq, struct curl_slist *headers, struct broker_buf *b,
			     char errbuf[CURL_ERROR_SIZE])
{
	CURL *h = c->curl;
	int64_t left_ms = (c->deadline_us - broker_mono_us()) / 1000;

	if (left_ms < REQUEST_TIMEOUT_MIN_MS)
		left_ms = REQUEST_TIMEOUT_MIN_MS;
	if (left_ms > REQUEST_TIMEOUT_MAX_MS)
		left_ms = REQUEST_TIMEOUT_MAX_MS;
	curl_easy_reset(h);
	errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, rq->url);
	/* Tokens only ever go where the user pointed: no redirects, no other
	 * protocols. */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)left_ms);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "cibroker-exchange/" CIBROKER_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, broker_buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (rq->broker && c->settings.ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->settings.ca_file);
	if (rq->form) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->form);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->form_len);
	}
	return curl_easy_perform(h);
}

/* One request with retries on connection errors and 503 (DESIGN.md: never a
 * 4xx, so not 429 either: a rate-limited job fails and says so). Returns
 * BROKER_OK with the final HTTP answer (which may still be a 503 when the
 * budget ran out), or BROKER_ERR_UPSTREAM / _INVALID with why. */
static enum broker_err http_request(struct client *c, const struct request *rq, const char *what,
				    struct client_reply **ret, char why[CLIENT_WHY_MAX])
{
	enum broker_err err = BROKER_ERR_NOMEM;
	struct curl_slist *headers = NULL, *tmp;
	struct client_reply *reply = NULL;
	struct broker_buf b = {.max = CLIENT_MAX_RESPONSE};
	char errbuf[CURL_ERROR_SIZE];
	char *auth = NULL;
	long status = 0;

	c->last_attempts = 0;
	tmp = curl_slist_append(NULL, "Accept: application/json");
	if (!tmp)
		goto out;
	headers = tmp;
	if (rq->form) {
		tmp = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
		if (!tmp)
			goto out;
	}
	if (rq->bearer) {
		if (asprintf(&auth, "Authorization: Bearer %s", rq->bearer) < 0) {
			auth = NULL;
			goto out;
		}
		tmp = curl_slist_append(headers, auth);
		if (!tmp)
			goto out;
	}
	for (unsigned attempt = 1;; attempt++) {
		CURLcode res;
		curl_off_t retry_after = 0;
		int64_t delay;

		c->last_attempts = attempt;
		broker_buf_wipe(&b);
		res = perform_once(c, rq, headers, &b, errbuf);
		if (res == CURLE_OK) {
			curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
			if (status != 503)
				break;
			curl_easy_getinfo(c->curl, CURLINFO_RETRY_AFTER, &retry_after);
		} else if (b.toobig) {
			snprintf(why, CLIENT_WHY_MAX, "%s: answer larger than %d bytes", what, CLIENT_MAX_RESPONSE);
			err = BROKER_ERR_INVALID;
			goto out;
		} else {
			snprintf(why, CLIENT_WHY_MAX, "%s: %s", what, errbuf[0] ? errbuf : curl_easy_strerror(res));
			if (!curl_retryable(res)) {
				err = BROKER_ERR_UPSTREAM;
				goto out;
			}
			status = 0;
		}
		delay = backoff_us(attempt);
		/* Retry-After is honoured as a lower bound, but only within the
		 * budget: a broker asking for more time than we have left ends
		 * the run now rather than later. */
		if (retry_after > 0 && retry_after * 1000000 > delay)
			delay = retry_after > 3600 ? INT64_MAX / 2 : retry_after * 1000000;
		if (broker_mono_us() + delay > c->deadline_us) {
			if (status != 0)
				break; /* hand back the last 503 so its fields are shown */
			err = BROKER_ERR_UPSTREAM;
			goto out;
		}
		sleep_us(delay);
	}
	reply = calloc(1, sizeof(*reply));
	if (!reply)
		goto out;
	reply->status = status;
	if (b.data) {
		reply->body = b.data;
		reply->len = b.len;
		b.data = NULL;
	} else {
		reply->body = strdup("");
		if (!reply->body)
			goto out;
	}
	*ret = reply;
	reply = NULL;
	err = BROKER_OK;
out:
	client_reply_free(reply);
	broker_buf_wipe(&b);
	headers_free(headers);
	broker_secret_free(auth);
	return err;
}

/* Broker-supplied text goes to a CI log: keep it on one line and short, so
 * an answer cannot forge log lines or workflow commands (::add-mask:: etc.). */
static void append_sanitized(char *out, size_t outlen, const char *s)
{
	size_t n = strlen(out), taken = 0;

	for (; *s && n + 1 < outlen && taken < ERR_FIELD_MAX; s++, taken++) {
		unsigned char ch = (unsigned char)*s;

		out[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
	}
	out[n] = '\0';
}

static const char *json_str(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* "error: error_description (request_id ID)" from an OAuth error answer, or
 * "WHAT: HTTP STATUS" when the answer carries no error fields. */
static void describe_failure(const struct client_reply *r, const char *what, char why[CLIENT_WHY_MAX])
{
	json_t *j = broker_json_parse(r->body, r->len, JSON_MAX_DEPTH);
	const char *error = json_is_object(j) ? json_str(j, "error") : NULL;
	const char *desc = error ? json_str(j, "error_description") : NULL;
	const char *rid = error ? json_str(j, "request_id") : NULL;

	why[0] = '\0';
	if (!error) {
		snprintf(why, CLIENT_WHY_MAX, "%s: HTTP %ld", what, r->status);
	} else {
		append_sanitized(why, CLIENT_WHY_MAX, error);
		if (desc) {
			append_sanitized(why, CLIENT_WHY_MAX, ": ");
			append_sanitized(why, CLIENT_WHY_MAX, desc);
		}
		if (rid) {
			append_sanitized(why, CLIENT_WHY_MAX, " (request_id ");
			append_sanitized(why, CLIENT_WHY_MAX, rid);
			append_sanitized(why, CLIENT_WHY_MAX, ")");
		}
	}
	json_decref(j);
}

/* 2xx is success; 5xx means "not now" (exit 4); any 4xx, 429 included, is a
 * refusal (exit 3); anything else (a redirect) is an answer we cannot use. */
static enum broker_err classify(const struct client_reply *r, const char *what, char why[CLIENT_WHY_MAX])
{
	if (r->status >= 200 && r->status < 300)
		return BROKER_OK;
	describe_failure(r, what, why);
	if (r->status >= 500)
		return BROKER_ERR_UPSTREAM;
	if (r->status >= 400)
		return BROKER_ERR_DENIED;
	return BROKER_ERR_INVALID;
}

/* GET url and parse a 2xx JSON object answer. */
static enum broker_err get_json(struct client *c, const struct request *rq, const char *what, json_t **ret,
				char why[CLIENT_WHY_MAX])
{
	struct client_reply *r = NULL;
	enum broker_err err = http_request(c, rq, what, &r, why);
	json_t *j;

	if (err != BROKER_OK)
		return err;
	err = classify(r, what, why);
	if (err != BROKER_OK)
		goto out;
	j = broker_json_parse(r->body, r->len, JSON_MAX_DEPTH);
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(why, CLIENT_WHY_MAX, "%s: answer is not a JSON object", what);
		err = BROKER_ERR_INVALID;
		goto out;
	}
	*ret = j;
out:
	client_reply_free(r);
	return err;
}

static char *join_url(const char *base, const char *path)
{
	size_t n = strlen(base);
	char *u;

	while (n > 0 && base[n - 1] == '/')
		n--;
	if (asprintf(&u, "%.*s%s", (int)n, base, path) < 0)
		return NULL;
	return u;
}

enum broker_err client_discover_issuer(struct client *c, const char *broker, char **ret_issuer,
				       char why[CLIENT_WHY_MAX])
{
	enum broker_err err = BROKER_ERR_NOMEM;
	char *url = join_url(broker, "/.well-known/openid-configuration");
	struct request rq = {.url = url, .broker = true};
	const char *issuer;
	json_t *j = NULL;
	char *copy;

	if (!url)
		goto out;
	err = get_json(c, &rq, "broker discovery", &j, why);
	if (err != BROKER_OK)
		goto out;
	issuer = json_str(j, "issuer");
	if (!issuer || !*issuer || strlen(issuer) > 2048) {
		snprintf(why, CLIENT_WHY_MAX, "broker discovery: no usable 'issuer' in %s", url);
		err = BROKER_ERR_INVALID;
		goto out;
	}
	copy = strdup(issuer);
	if (!copy) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	*ret_issuer = copy;
out:
	json_decref(j);
	free(url);
	return err;
}

enum broker_err client_actions_id_token(struct client *c, const char *request_url, const char *request_token,
					const char *audience, char **ret_token, char why[CLIENT_WHY_MAX])
{
	enum broker_err err = BROKER_ERR_NOMEM;
	struct request rq = {.bearer = request_token};
	char *aud = curl_easy_escape(c->curl, audience, 0);
	char *url = NULL, *copy;
	const char *value;
	json_t *j = NULL;

	if (!aud)
		goto out;
	/* The runtime's URL already carries a query string (api-version=...). */
	if (asprintf(&url, "%s%caudience=%s", request_url, strchr(request_url, '?') ? '&' : '?', aud) < 0) {
		url = NULL;
		goto out;
	}
	rq.url = url;
	err = get_json(c, &rq, "GitHub Actions ID token request", &j, why);
	if (err != BROKER_OK)
		goto out;
	value = json_str(j, "value");
	if (!value || !*value) {
		snprintf(why, CLIENT_WHY_MAX, "GitHub Actions ID token request: answer has no 'value'");
		err = BROKER_ERR_INVALID;
		goto out;
	}
	copy = strdup(value);
	if (!copy) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	*ret_token = copy;
out:
	json_decref(j);
	free(url);
	curl_free(aud);
	return err;
}

enum broker_err client_token_exchange(struct client *c, const char *broker, const char *subject_token,
				      const char *audience, const char *requested_token_type,
				      struct client_reply **ret, char why[CLIENT_WHY_MAX])
{
	enum broker_err err = BROKER_ERR_NOMEM;
	char *url = join_url(broker, "/v1/token");
	char *tok = curl_easy_escape(c->curl, subject_token, 0);
	char *aud = curl_easy_escape(c->curl, audience, 0);
	char *rtt = requested_token_type ? curl_easy_escape(c->curl, requested_token_type, 0) : NULL;
	char *form = NULL;
	int form_len = -1;
	struct client_reply *r = NULL;
	struct request rq = {.url = url, .broker = true};

	if (!url || !tok || !aud || (requested_token_type && !rtt))
		goto out;
	form_len = asprintf(&form,
			    "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Atoken-exchange"
			    "&subject_token=%s"
			    "&subject_token_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Atoken-type%%3Ajwt"
			    "&audience=%s%s%s",
			    tok, aud, rtt ? "&requested_token_type=" : "", rtt ? rtt : "");
	if (form_len < 0) {
		form = NULL;
		goto out;
	}
	rq.form = form;
	rq.form_len = (size_t)form_len;
	err = http_request(c, &rq, "token exchange", &r, why);
	if (err != BROKER_OK)
		goto out;
	err = classify(r, "token exchange", why);
	if (err != BROKER_OK)
		goto out;
	*ret = r;
	r = NULL;
out:
	client_reply_free(r);
	if (form)
		broker_wipe_free(form, (size_t)form_len);
	if (tok) {
		OPENSSL_cleanse(tok, strlen(tok));
		curl_free(tok);
	}
	curl_free(aud);
	curl_free(rtt);
	free(url);
	return err;
}
