/* SPDX-License-Identifier: Apache-2.0 */
/* Issuer key caches. Every configured issuer has a JWKS cache kept fresh by
 * its own background thread; lookups of an unknown kid may trigger one
 * rate-limited, single-flight refetch. Everything that can go wrong upstream
 * (outage, garbage, oversize, redirect off https) keeps the last good keys.
 * The behaviour is documented for operators in docs/issuers.md. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "cibroker/issuer.h"
#include "cibroker/util.h"

#define HTTP_CONNECT_TIMEOUT_S 3L
#define HTTP_TOTAL_TIMEOUT_S 10L
#define HTTP_MAX_REDIRS 3L
#define HTTP_BODY_MAX ((size_t)BROKER_JWKS_MAX_BYTES)
#define URL_MAX 2048
#define DISCOVERY_MAX_DEPTH 16
#define BACKOFF_FIRST_US (1 * 1000000LL)
#define BACKOFF_MAX_US (30 * 1000000LL)
#define DISCOVERY_PATH "/.well-known/openid-configuration"

struct broker_issuer {
	const struct broker_issuer_config *cfg; /* borrowed from the config */
	struct broker_issuers *set;

	pthread_mutex_t lock;   /* guards everything below */
	pthread_cond_t fetched; /* broadcast when a fetch finishes */
	pthread_cond_t wake;    /* the refresher's timer; signalled on stop */
	bool sync_ok;           /* lock and conds initialised */

	struct broker_jwks *jwks;  /* current set, NULL until the first good fetch */
	char *discovered_jwks_uri; /* from the last good discovery */
	bool fetching;             /* a fetch is in flight (single flight) */
	uint64_t fetch_gen;        /* bumped when a fetch finishes */
	int64_t last_attempt_us;   /* monotonic start of the last fetch, 0 = never */
	int64_t last_success_us;   /* monotonic end of the last good fetch */
	unsigned failures;         /* consecutive failed fetches, for backoff */
	bool stopping;

	struct issuer_stats stats;

	pthread_t thread;
	bool thread_started;
};

struct broker_issuers {
	struct broker_issuer *issuers;
	size_t n;
	atomic_bool stopping; /* read by curl's progress callback: aborts transfers */
};

/* ---- libcurl, process-wide ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

enum broker_err broker_curl_global_init(void)
{
	if (pthread_once(&curl_once, curl_init_once) != 0)
		return BROKER_ERR_NOMEM;
	return curl_init_result == CURLE_OK ? BROKER_OK : BROKER_ERR_NOMEM;
}

/* ---- one HTTP GET ---- */


static int xfer_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	const struct broker_issuers *set = userdata;

	/* Nonzero aborts: issuers_free must not wait out a 10 s timeout. */
	return atomic_load(&set->stopping) ? 1 : 0;
}

/* GET url under the TLS/redirect/size rules of docs/issuers.md. On BROKER_OK
 * *ret_body is a NUL-terminated malloc'd buffer. */
static enum broker_err http_get(const struct broker_issuer *iss, const char *url, char **ret_body, size_t *ret_len,
				const char **ret_reason)
{
	struct broker_buf b = {.max = HTTP_BODY_MAX};
	CURL *h = NULL;
	CURLcode rc;
	long status = 0;
	bool loopback;
	enum broker_err err;

	if (strlen(url) > URL_MAX || !broker_url_allowed(url)) {
		*ret_reason = "URL must be https:// (http:// only to a loopback host)";
		err = BROKER_ERR_CONFIG;
		goto out;
	}
	loopback = broker_url_is_loopback(url);
	h = curl_easy_init();
	if (!h) {
		err = BROKER_ERR_NOMEM;
		*ret_reason = "curl_easy_init failed";
		goto out;
	}
	/* Any setopt failure (e.g. an option this libcurl lacks) must fail the
	 * fetch rather than fetch with weaker rules. */
	rc = CURLE_OK;
#define SET(opt, val)                                         \
	do {                                                  \
		if (rc == CURLE_OK)                           \
			rc = curl_easy_setopt(h, opt, val);   \
	} while (0)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, loopback ? "https,http" : "https");
	SET(CURLOPT_FOLLOWLOCATION, 1L);
	SET(CURLOPT_MAXREDIRS, HTTP_MAX_REDIRS);
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (iss->cfg->ca_file) {
		/* ca_file is an *extra* CA (DESIGN.md): it replaces the default
		 * bundle file, so keep the system CAs through libcurl's default
		 * hashed directory (/etc/ssl/certs on Debian). */
		char *capath = NULL;

		SET(CURLOPT_CAINFO, iss->cfg->ca_file);
		if (curl_easy_getinfo(h, CURLINFO_CAPATH, &capath) == CURLE_OK && capath)
			SET(CURLOPT_CAPATH, capath);
	}
	SET(CURLOPT_CONNECTTIMEOUT, HTTP_CONNECT_TIMEOUT_S);
	SET(CURLOPT_TIMEOUT, HTTP_TOTAL_TIMEOUT_S);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_BODY_MAX);
	SET(CURLOPT_WRITEFUNCTION, broker_buf_write);
	SET(CURLOPT_WRITEDATA, &b);
	SET(CURLOPT_NOPROGRESS, 0L);
	SET(CURLOPT_XFERINFOFUNCTION, xfer_progress);
	SET(CURLOPT_XFERINFODATA, iss->set);
	SET(CURLOPT_USERAGENT, "cibroker");
	SET(CURLOPT_HTTPGET, 1L);
	/* A loopback issuer is never reached through a proxy from the
	 * environment (tests, sidecars); remote issuers honour https_proxy. */
	if (loopback)
		SET(CURLOPT_NOPROXY, "*");
#undef SET
	if (rc != CURLE_OK) {
		err = BROKER_ERR_UPSTREAM;
		*ret_reason = "libcurl refused an option";
		goto out;
	}

	rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		err = BROKER_ERR_UPSTREAM;
		if (b.toobig || rc == CURLE_FILESIZE_EXCEEDED)
			*ret_reason = "response over 1 MiB";
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			*ret_reason = "timed out";
		else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
			*ret_reason = "could not connect";
		else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
			 rc == CURLE_SSL_CONNECT_ERROR)
			*ret_reason = "TLS verification failed";
		else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
			*ret_reason = "redirect to a refused scheme";
		else if (rc == CURLE_TOO_MANY_REDIRECTS)
			*ret_reason = "too many redirects";
		else if (rc == CURLE_ABORTED_BY_CALLBACK)
			*ret_reason = "aborted: shutting down";
		else
			*ret_reason = "transfer failed";
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		err = BROKER_ERR_UPSTREAM;
		*ret_reason = "HTTP status not 200";
		goto out;
	}
	if (!b.data) { /* empty 200 */
		err = BROKER_ERR_UPSTREAM;
		*ret_reason = "empty response";
		goto out;
	}
	*ret_body = b.data;
	*ret_len = b.len;
	b.data = NULL;
	err = BROKER_OK;
out:
	broker_buf_wipe(&b);
	curl_easy_cleanup(h);
	return err;
}

/* ---- discovery and JWKS ---- */

static char *discovery_url(const char *issuer)
{
	size_t n = strlen(issuer);
	char *u;

	/* OIDC Discovery §4: a trailing slash on the issuer is not doubled. */
	if (n && issuer[n - 1] == '/')
		n--;
	u = malloc(n + sizeof(DISCOVERY_PATH));
	if (!u)
		return NULL;
	memcpy(u, issuer, n);
	memcpy(u + n, DISCOVERY_PATH, sizeof(DISCOVERY_PATH));
	return u;
}

static enum broker_err discover(const struct broker_issuer *iss, char **ret_uri, const char **ret_reason)
{
	char *url = NULL, *body = NULL, *uri = NULL;
	size_t len;
	json_t *doc = NULL;
	const char *s;
	enum broker_err err;

	url = discovery_url(iss->cfg->issuer);
	if (!url) {
		err = BROKER_ERR_NOMEM;
		*ret_reason = "out of memory";
		goto out;
	}
	err = http_get(iss, url, &body, &len, ret_reason);
	if (err != BROKER_OK)
		goto out;
	err = BROKER_ERR_UPSTREAM;
	doc = broker_json_parse(body, len, DISCOVERY_MAX_DEPTH);
	if (!json_is_object(doc)) {
		*ret_reason = "discovery document is not a JSON object";
		goto out;
	}
	/* The issuer must name itself exactly as configured (OIDC Discovery
	 * §4.3): anything else is a misconfiguration or an impersonation. */
	s = json_string_value(json_object_get(doc, "issuer"));
	if (!s || strcmp(s, iss->cfg->issuer) != 0) {
		*ret_reason = "discovery issuer does not match the configured issuer";
		goto out;
	}
	s = json_string_value(json_object_get(doc, "jwks_uri"));
	if (!s || strlen(s) > URL_MAX || !broker_url_allowed(s)) {
		*ret_reason = "discovery jwks_uri missing or not https";
		goto out;
	}
	/* an https issuer does not hand its keys over plain http, loopback or not */
	if (strncasecmp(iss->cfg->issuer, "https://", 8) == 0 && strncasecmp(s, "https://", 8) != 0) {
		*ret_reason = "discovery jwks_uri is http for an https issuer";
		goto out;
	}
	uri = strdup(s);
	if (!uri) {
		err = BROKER_ERR_NOMEM;
		*ret_reason = "out of memory";
		goto out;
	}
	*ret_uri = uri;
	err = BROKER_OK;
out:
	json_decref(doc);
	free(body);
	free(url);
	return err;
}

/* Fetch a fresh key set, without holding the issuer lock. rediscover: run
 * discovery even if a discovered jwks_uri is known (the periodic refresh does,
 * so a moved jwks_uri is followed; unknown-kid refetches do not, so they cost
 * one request). */
static enum broker_err fetch_keys(struct broker_issuer *iss, bool rediscover, struct broker_jwks **ret_set,
				  char **ret_discovered, const char **ret_reason)
{
	char *uri = NULL, *body = NULL;
	const char *jwks_uri = iss->cfg->jwks_uri;
	struct broker_jwks *set = NULL;
	size_t len;
	enum broker_err err;

	if (!jwks_uri) {
		pthread_mutex_lock(&iss->lock);
		if (!rediscover && iss->discovered_jwks_uri) {
			uri = strdup(iss->discovered_jwks_uri);
			if (!uri) {
				pthread_mutex_unlock(&iss->lock);
				err = BROKER_ERR_NOMEM;
				*ret_reason = "out of memory";
				goto out;
			}
		}
		pthread_mutex_unlock(&iss->lock);
		if (!uri) {
			err = discover(iss, &uri, ret_reason);
			if (err != BROKER_OK)
				goto out;
		}
		jwks_uri = uri;
	}
	err = http_get(iss, jwks_uri, &body, &len, ret_reason);
	if (err != BROKER_OK)
		goto out;
	err = jwks_parse(body, len, &set, ret_reason);
	if (err != BROKER_OK)
		goto out;
	if (jwks_count(set) == 0) {
		jwks_unref(set);
		err = BROKER_ERR_UPSTREAM;
		*ret_reason = "JWKS has no usable key";
		goto out;
	}
	*ret_set = set;
	*ret_discovered = uri;
	uri = NULL;
	err = BROKER_OK;
out:
	free(body);
	free(uri);
	return err;
}

/* Single flight: called with iss->lock held and iss->fetching false. Marks
 * the fetch in flight, fetches unlocked, installs the result (or keeps the old
 * set), wakes every waiter, and returns with the lock held again. */
static void refresh_locked(struct broker_issuer *iss, bool rediscover, bool for_unknown_kid)
{
	struct broker_jwks *set = NULL, *old = NULL;
	char *discovered = NULL;
	const char *reason = NULL;
	enum broker_err err;

	iss->fetching = true;
	iss->last_attempt_us = broker_mono_us();
	if (for_unknown_kid)
		iss->stats.unknown_kid_refetches++;
	pthread_mutex_unlock(&iss->lock);

	err = fetch_keys(iss, rediscover, &set, &discovered, &reason);

	pthread_mutex_lock(&iss->lock);
	if (err == BROKER_OK) {
		old = iss->jwks;
		iss->jwks = set;
		if (discovered) {
			free(iss->discovered_jwks_uri);
			iss->discovered_jwks_uri = discovered;
		}
		iss->last_success_us = broker_mono_us();
		iss->failures = 0;
		iss->stats.refresh_ok++;
		iss->stats.keys_fetched_at = broker_now();
		iss->stats.n_keys = jwks_count(set);
		iss->stats.last_error = NULL;
	} else {
		iss->failures++;
		iss->stats.refresh_failed++;
		iss->stats.last_error = reason ? reason : broker_strerror(err);
	}
	iss->fetching = false;
	iss->fetch_gen++;
	pthread_cond_broadcast(&iss->fetched);
	/* Dropping the old set may free keys: not under the lock. Callers
	 * holding a reference keep theirs alive. */
	pthread_mutex_unlock(&iss->lock);
	jwks_unref(old);
	pthread_mutex_lock(&iss->lock);
}

/* With iss->lock held: wait until the fetch in flight finishes. */
static void wait_for_fetch_locked(struct broker_issuer *iss)
{
	uint64_t gen = iss->fetch_gen;

	while (iss->fetching && iss->fetch_gen == gen)
		pthread_cond_wait(&iss->fetched, &iss->lock);
}

enum broker_err issuer_keys_lookup(struct broker_issuer *iss, const char *kid, struct broker_jwks **ret_set,
				   const struct broker_jwk **ret_key)
{
	const struct broker_jwk *key;
	struct broker_jwks *set;
	bool looked_after_fetch = false;
	int64_t now, min_gap;
	enum broker_err err;

	if (!iss || !kid)
		return BROKER_ERR_INVALID;
	min_gap = iss->cfg->jwks_min_refetch * 1000000LL;

	pthread_mutex_lock(&iss->lock);
	for (;;) {
		key = iss->jwks ? jwks_lookup(iss->jwks, kid) : NULL;
		if (key) {
			set = jwks_ref(iss->jwks);
			pthread_mutex_unlock(&iss->lock);
			*ret_set = set;
			*ret_key = key;
			return BROKER_OK;
		}
		if (looked_after_fetch)
			break;
		if (iss->fetching) {
			/* Someone is already fetching (a lookup or the refresher):
			 * its result is our refetch. */
			wait_for_fetch_locked(iss);
			looked_after_fetch = true;
			continue;
		}
		now = broker_mono_us();
		if (iss->last_attempt_us != 0 && now - iss->last_attempt_us < min_gap)
			break; /* rate limited: answer from the cache alone */
		refresh_locked(iss, false, true);
		looked_after_fetch = true;
	}
	err = iss->jwks ? BROKER_ERR_NOTFOUND : BROKER_ERR_NOKEYS;
	pthread_mutex_unlock(&iss->lock);
	return err;
}

/* ---- background refresh ---- */

static int64_t next_due_locked(const struct broker_issuer *iss)
{
	int64_t backoff;
	unsigned i;

	if (iss->last_attempt_us == 0)
		return 0;
	if (iss->failures == 0)
		return iss->last_success_us + iss->cfg->jwks_refresh * 1000000LL;
	backoff = BACKOFF_FIRST_US;
	for (i = 1; i < iss->failures && backoff < BACKOFF_MAX_US; i++)
		backoff *= 2;
	if (backoff > BACKOFF_MAX_US)
		backoff = BACKOFF_MAX_US;
	return iss->last_attempt_us + backoff;
}

static void *refresher(void *arg)
{
	struct broker_issuer *iss = arg;
	struct timespec ts;
	int64_t due, now, wait_us, sum_us;

	pthread_mutex_lock(&iss->lock);
	while (!iss->stopping) {
		if (iss->fetching) {
			wait_for_fetch_locked(iss);
			continue;
		}
		now = broker_mono_us();
		due = next_due_locked(iss);
		if (due <= now) {
			refresh_locked(iss, true, false);
			continue;
		}
		/* The wake condvar runs on CLOCK_MONOTONIC (see issuers_create),
		 * so a wall-clock step neither stalls nor storms the refresh. */
		wait_us = due - now;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		sum_us = (int64_t)ts.tv_nsec / 1000 + wait_us;
		ts.tv_sec += (time_t)(sum_us / 1000000);
		ts.tv_nsec = (long)(sum_us % 1000000) * 1000;
		pthread_cond_timedwait(&iss->wake, &iss->lock, &ts);
	}
	pthread_mutex_unlock(&iss->lock);
	return NULL;
}

/* ---- lifecycle ---- */

static enum broker_err issuer_init(struct broker_issuer *iss, struct broker_issuers *set,
				   const struct broker_issuer_config *cfg)
{
	pthread_condattr_t ca;
	bool ca_ok = false, lock_ok = false, fetched_ok = false;
	enum broker_err err = BROKER_ERR_NOMEM;

	iss->cfg = cfg;
	iss->set = set;
	if (pthread_mutex_init(&iss->lock, NULL) != 0)
		goto out;
	lock_ok = true;
	if (pthread_cond_init(&iss->fetched, NULL) != 0)
		goto out;
	fetched_ok = true;
	if (pthread_condattr_init(&ca) != 0)
		goto out;
	ca_ok = true;
	if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 || pthread_cond_init(&iss->wake, &ca) != 0)
		goto out;
	iss->sync_ok = true;
	err = BROKER_OK;
out:
	if (ca_ok)
		pthread_condattr_destroy(&ca);
	if (err != BROKER_OK) {
		if (fetched_ok)
			pthread_cond_destroy(&iss->fetched);
		if (lock_ok)
			pthread_mutex_destroy(&iss->lock);
	}
	return err;
}

static bool issuer_urls_ok(const struct broker_issuer_config *c)
{
	if (!c->name || !c->issuer || strlen(c->issuer) > URL_MAX || !broker_url_allowed(c->issuer))
		return false;
	if (c->jwks_uri && (strlen(c->jwks_uri) > URL_MAX || !broker_url_allowed(c->jwks_uri)))
		return false;
	return c->jwks_refresh > 0 && c->jwks_min_refetch >= 0;
}

enum broker_err issuers_create(const struct broker_config *cfg, struct broker_issuers **ret)
{
	struct broker_issuers *set = NULL;
	enum broker_err err;
	size_t i;

	if (!cfg || !ret || (cfg->n_issuers && !cfg->issuers))
		return BROKER_ERR_INVALID;
	err = broker_curl_global_init();
	if (err != BROKER_OK)
		return err;
	for (i = 0; i < cfg->n_issuers; i++)
		if (!issuer_urls_ok(&cfg->issuers[i]))
			return BROKER_ERR_CONFIG;

	err = BROKER_ERR_NOMEM;
	set = calloc(1, sizeof(*set));
	if (!set)
		goto out;
	atomic_init(&set->stopping, false);
	if (cfg->n_issuers) {
		set->issuers = calloc(cfg->n_issuers, sizeof(*set->issuers));
		if (!set->issuers)
			goto out;
	}
	for (i = 0; i < cfg->n_issuers; i++) {
		err = issuer_init(&set->issuers[i], set, &cfg->issuers[i]);
		if (err != BROKER_OK)
			goto out;
		set->n++;
	}
	*ret = set;
	set = NULL;
	err = BROKER_OK;
out:
	issuers_free(set);
	return err;
}

enum broker_err issuers_start(struct broker_issuers *set)
{
	struct broker_issuer *iss;
	size_t i;

	if (!set)
		return BROKER_ERR_INVALID;
	for (i = 0; i < set->n; i++) {
		iss = &set->issuers[i];
		if (iss->thread_started)
			continue;
		/* On failure the threads already running stay; issuers_free
		 * stops them. */
		if (pthread_create(&iss->thread, NULL, refresher, iss) != 0)
			return BROKER_ERR_NOMEM;
		iss->thread_started = true;
	}
	return BROKER_OK;
}

void issuers_free(struct broker_issuers *set)
{
	struct broker_issuer *iss;
	size_t i;

	if (!set)
		return;
	atomic_store(&set->stopping, true);
	for (i = 0; i < set->n; i++) {
		iss = &set->issuers[i];
		pthread_mutex_lock(&iss->lock);
		iss->stopping = true;
		pthread_cond_broadcast(&iss->wake);
		pthread_mutex_unlock(&iss->lock);
	}
	for (i = 0; i < set->n; i++) {
		iss = &set->issuers[i];
		if (iss->thread_started)
			pthread_join(iss->thread, NULL);
		jwks_unref(iss->jwks);
		free(iss->discovered_jwks_uri);
		if (iss->sync_ok) {
			pthread_cond_destroy(&iss->wake);
			pthread_cond_destroy(&iss->fetched);
			pthread_mutex_destroy(&iss->lock);
		}
	}
	free(set->issuers);
	free(set);
}

/* ---- accessors ---- */

static bool same_string(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

void issuers_adopt_keys(struct broker_issuers *set, const struct broker_issuers *old)
{
	for (size_t i = 0; set && old && i < set->n; i++) {
		struct broker_issuer *iss = &set->issuers[i], *prev = issuers_find(old, iss->cfg->name);
		bool same_keys;

		if (!prev)
			continue;
		same_keys = same_string(prev->cfg->issuer, iss->cfg->issuer) &&
			    same_string(prev->cfg->jwks_uri, iss->cfg->jwks_uri) &&
			    same_string(prev->cfg->ca_file, iss->cfg->ca_file);
		pthread_mutex_lock(&prev->lock);
		/* /metrics counters are per issuer name and only ever go up within a
		 * process: a reload that rebuilds the issuer continues them */
		iss->stats.refresh_ok = prev->stats.refresh_ok;
		iss->stats.refresh_failed = prev->stats.refresh_failed;
		iss->stats.unknown_kid_refetches = prev->stats.unknown_kid_refetches;
		if (same_keys && prev->jwks) {
			char *uri = prev->discovered_jwks_uri ? strdup(prev->discovered_jwks_uri) : NULL;

			/* not started yet: nobody else holds iss->lock */
			iss->jwks = jwks_ref(prev->jwks);
			iss->discovered_jwks_uri = uri;
			iss->last_success_us = prev->last_success_us;
			iss->stats.keys_fetched_at = prev->stats.keys_fetched_at;
			iss->stats.n_keys = prev->stats.n_keys;
		}
		pthread_mutex_unlock(&prev->lock);
	}
}

struct broker_issuer *issuers_find(const struct broker_issuers *set, const char *name)
{
	size_t i;

	if (!set || !name)
		return NULL;
	for (i = 0; i < set->n; i++)
		if (strcmp(set->issuers[i].cfg->name, name) == 0)
			return &set->issuers[i];
	return NULL;
}

size_t issuers_count(const struct broker_issuers *set)
{
	return set ? set->n : 0;
}

struct broker_issuer *issuers_at(const struct broker_issuers *set, size_t i)
{
	return set && i < set->n ? &set->issuers[i] : NULL;
}

const struct broker_issuer_config *issuer_config(const struct broker_issuer *iss)
{
	return iss ? iss->cfg : NULL;
}

/* The accessors take const issuers (they do not change the cache) but must
 * still take its lock. */
static pthread_mutex_t *issuer_lock(const struct broker_issuer *iss)
{
	return (pthread_mutex_t *)&iss->lock;
}

bool issuer_ready(const struct broker_issuer *iss)
{
	bool ready;

	if (!iss)
		return false;
	pthread_mutex_lock(issuer_lock(iss));
	ready = iss->jwks != NULL;
	pthread_mutex_unlock(issuer_lock(iss));
	return ready;
}

void issuer_get_stats(const struct broker_issuer *iss, struct issuer_stats *ret)
{
	if (!iss || !ret)
		return;
	pthread_mutex_lock(issuer_lock(iss));
	*ret = iss->stats;
	pthread_mutex_unlock(issuer_lock(iss));
}
