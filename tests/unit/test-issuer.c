/* SPDX-License-Identifier: Apache-2.0 */
/* Issuer key cache against the loopback fixture tests/fixtures/oidc_issuer.py,
 * which runs as a child process and is driven through its /control endpoints.
 * Assertions are on results and on the fixture's request counts, never on
 * timing; sleeps only step past jwks_min_refetch. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "check.h"
#include "cibroker/issuer.h"
#include "cibroker/util.h"

#define MIN_REFETCH 1 /* s */

struct fixture {
	pid_t pid;
	int stdin_fd;
	char url[256];
	char ca_file[512];
};

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Past jwks_min_refetch since the last fetch attempt. */
static void pass_min_refetch(void)
{
	sleep_ms(MIN_REFETCH * 1000 + 150);
}

static const char *fixture_script(void)
{
	/* meson runs tests from the source root or from tests/. */
	static const char *const candidates[] = { "tests/fixtures/oidc_issuer.py", "fixtures/oidc_issuer.py",
						  "../tests/fixtures/oidc_issuer.py" };
	size_t i;

	for (i = 0; i < BROKER_ARRAY_SIZE(candidates); i++)
		if (access(candidates[i], R_OK) == 0)
			return candidates[i];
	return NULL;
}

static int read_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;
	char c;

	while (n + 1 < cap) {
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = '\0';
	return 0;
}

static int fixture_start(struct fixture *fx, bool tls)
{
	int in[2], out[2];
	const char *script = fixture_script();

	memset(fx, 0, sizeof(*fx));
	if (!script || pipe(in) != 0 || pipe(out) != 0)
		return -1;
	fx->pid = fork();
	if (fx->pid < 0)
		return -1;
	if (fx->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		/* The fixture exits when our end of its stdin closes, so it
		 * never outlives a crashed test; --lifetime is the backstop. */
		execl("/usr/bin/python3", "python3", script, "--lifetime", "300", tls ? "--tls" : NULL,
		      (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	fcntl(in[1], F_SETFD, FD_CLOEXEC);
	fx->stdin_fd = in[1];
	if (read_line(out[0], fx->url, sizeof(fx->url)) != 0 ||
	    (tls && read_line(out[0], fx->ca_file, sizeof(fx->ca_file)) != 0)) {
		close(out[0]);
		return -1;
	}
	close(out[0]);
	return 0;
}

static void fixture_stop(struct fixture *fx)
{
	if (fx->pid <= 0)
		return;
	close(fx->stdin_fd);
	kill(fx->pid, SIGTERM);
	waitpid(fx->pid, NULL, 0);
	fx->pid = 0;
}

/* ---- control endpoints, over libcurl ---- */

struct buf {
	char data[65536];
	size_t len;
};

static size_t buf_write(char *p, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t n = size * nmemb;

	if (n > sizeof(b->data) - 1 - b->len)
		return 0;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* POST (body != NULL) or GET a control endpoint; returns the HTTP status. */
static long control(const struct fixture *fx, const char *path, const char *body, struct buf *ret)
{
	static struct buf scratch;
	struct buf *b = ret ? ret : &scratch;
	char url[512];
	long status = 0;
	CURL *h = curl_easy_init();

	if (!h)
		return 0;
	b->len = 0;
	b->data[0] = '\0';
	snprintf(url, sizeof(url), "%s%s", fx->url, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	if (fx->ca_file[0])
		curl_easy_setopt(h, CURLOPT_CAINFO, fx->ca_file);
	if (body)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	return status;
}

/* Requests the fixture has seen for path since the last reset, -1 on error. */
static long count(const struct fixture *fx, const char *path)
{
	struct buf b;
	json_t *j;
	long n = -1;

	if (control(fx, "/control/counts", NULL, &b) != 200)
		return -1;
	j = json_loads(b.data, 0, NULL);
	if (json_is_object(j))
		n = (long)json_integer_value(json_object_get(j, path));
	json_decref(j);
	return n;
}

#define JWKS_COUNT(fx) count(fx, "/jwks")
#define DISCOVERY_COUNT(fx) count(fx, "/.well-known/openid-configuration")

/* kid of the key /control/rotate just made. */
static bool rotate(const struct fixture *fx, char *kid, size_t cap)
{
	struct buf b;
	json_t *j;
	const char *s;
	bool ok = false;

	if (control(fx, "/control/rotate", "", &b) != 200)
		return false;
	j = json_loads(b.data, 0, NULL);
	s = json_string_value(json_object_get(j, "kid"));
	if (s && strlen(s) < cap) {
		strcpy(kid, s);
		ok = true;
	}
	json_decref(j);
	return ok;
}

/* ---- config by hand (no config_load) ---- */

struct setup {
	struct broker_config cfg;
	struct broker_issuer_config ic;
	struct broker_issuers *set;
	struct broker_issuer *iss;
};

static enum broker_err setup_create(struct setup *s, const char *issuer, const char *jwks_uri, const char *ca_file)
{
	memset(s, 0, sizeof(*s));
	s->ic.name = (char *)"test";
	s->ic.issuer = (char *)issuer;
	s->ic.jwks_uri = (char *)jwks_uri;
	s->ic.ca_file = (char *)ca_file;
	s->ic.algorithms = BROKER_ALG_RS256 | BROKER_ALG_ES256;
	s->ic.clock_skew = 60;
	s->ic.max_token_age = 900;
	s->ic.jwks_refresh = 3600;
	s->ic.jwks_min_refetch = MIN_REFETCH;
	s->cfg.public_url = (char *)"https://broker.test";
	s->cfg.issuers = &s->ic;
	s->cfg.n_issuers = 1;
	enum broker_err err = issuers_create(&s->cfg, &s->set);
	if (err == BROKER_OK)
		s->iss = issuers_find(s->set, "test");
	return err;
}

static enum broker_err lookup(struct broker_issuer *iss, const char *kid)
{
	struct broker_jwks *set = NULL;
	const struct broker_jwk *key = NULL;
	enum broker_err err = issuer_keys_lookup(iss, kid, &set, &key);

	if (err == BROKER_OK) {
		if (!key || !key->pkey || strcmp(key->kid, kid) != 0)
			err = BROKER_ERR_INVALID; /* a hit must be the key asked for */
		jwks_unref(set);
	}
	return err;
}

static bool wait_ready(struct broker_issuer *iss, int seconds)
{
	int i;

	for (i = 0; i < seconds * 20; i++) {
		if (issuer_ready(iss))
			return true;
		sleep_ms(50);
	}
	return false;
}

/* ---- scenarios ---- */

static void test_discovery_and_background(const struct fixture *fx)
{
	struct setup s;
	struct issuer_stats st;

	CHECK(setup_create(&s, fx->url, NULL, NULL) == BROKER_OK, "create");
	CHECK(issuers_count(s.set) == 1 && s.iss && issuers_at(s.set, 0) == s.iss, "accessors");
	CHECK(issuer_config(s.iss) == &s.ic, "config pointer");
	CHECK(issuers_find(s.set, "nope") == NULL, "unknown name");
	CHECK(!issuer_ready(s.iss), "not ready before any fetch");
	control(fx, "/control/reset", "", NULL);
	CHECK(issuers_start(s.set) == BROKER_OK, "start");
	CHECK(wait_ready(s.iss, 15), "ready after the first background fetch");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "rsa key found");
	CHECK(lookup(s.iss, "ec-1") == BROKER_OK, "ec key found");
	CHECK(DISCOVERY_COUNT(fx) == 1, "one discovery, got %ld", DISCOVERY_COUNT(fx));
	CHECK(JWKS_COUNT(fx) == 1, "one JWKS fetch for the start and two hits, got %ld", JWKS_COUNT(fx));
	issuer_get_stats(s.iss, &st);
	CHECK(st.refresh_ok == 1 && st.refresh_failed == 0 && st.n_keys == 2, "stats %llu/%llu/%zu",
	      (unsigned long long)st.refresh_ok, (unsigned long long)st.refresh_failed, st.n_keys);
	CHECK(st.keys_fetched_at > 0 && st.last_error == NULL, "fetch time recorded");
	issuers_free(s.set);
}

static void test_background_retry(const struct fixture *fx)
{
	struct setup s;
	struct issuer_stats st;
	int i;

	/* The issuer is down when the broker starts: the refresher keeps
	 * retrying (backoff 1 s, 2 s, ...) and picks the keys up once it is back. */
	control(fx, "/control/down", "1", NULL);
	control(fx, "/control/reset", "", NULL);
	CHECK(setup_create(&s, fx->url, NULL, NULL) == BROKER_OK, "create");
	CHECK(issuers_start(s.set) == BROKER_OK, "start");
	for (i = 0; i < 200 && DISCOVERY_COUNT(fx) < 2; i++)
		sleep_ms(50);
	CHECK(DISCOVERY_COUNT(fx) >= 2, "retried while down, got %ld", DISCOVERY_COUNT(fx));
	CHECK(!issuer_ready(s.iss), "not ready while the issuer is down");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "no keys yet");
	control(fx, "/control/down", "0", NULL);
	CHECK(wait_ready(s.iss, 20), "ready once the issuer is back");
	issuer_get_stats(s.iss, &st);
	CHECK(st.refresh_failed >= 2 && st.refresh_ok >= 1, "failures then success counted");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "key after recovery");
	issuers_free(s.set); /* joins while the refresher waits an hour */
}

struct burst {
	struct broker_issuer *iss;
	const char *kid; /* NULL: ten distinct unknown kids */
	int idx;
	int ok, notfound, other;
};

static void *burst_thread(void *arg)
{
	struct burst *b = arg;
	char kid[64];
	int i;

	for (i = 0; i < 10; i++) {
		if (b->kid)
			snprintf(kid, sizeof(kid), "%s", b->kid);
		else
			snprintf(kid, sizeof(kid), "attacker-%d-%d", b->idx, i);
		switch (lookup(b->iss, kid)) {
		case BROKER_OK: b->ok++; break;
		case BROKER_ERR_NOTFOUND: b->notfound++; break;
		default: b->other++; break;
		}
	}
	return NULL;
}

/* 6 threads x 10 lookups; returns how many were found. */
static int run_burst(struct broker_issuer *iss, const char *kid, int *ret_notfound)
{
	pthread_t t[6];
	struct burst b[6];
	int i, ok = 0, nf = 0;

	for (i = 0; i < 6; i++) {
		b[i] = (struct burst){ .iss = iss, .kid = kid, .idx = i };
		pthread_create(&t[i], NULL, burst_thread, &b[i]);
	}
	for (i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		ok += b[i].ok;
		nf += b[i].notfound;
	}
	*ret_notfound = nf;
	return ok;
}

/* No background thread here, so every count is caused by the lookups. */
static void test_on_demand(const struct fixture *fx)
{
	struct setup s;
	struct issuer_stats st;
	char kid[64], kid2[64];
	int ok, nf;

	control(fx, "/control/reset_all", "", NULL);
	CHECK(setup_create(&s, fx->url, NULL, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "first lookup fetches");
	/* Right after a fetch, an unknown kid is answered from the cache. */
	CHECK(lookup(s.iss, "not-yet") == BROKER_ERR_NOTFOUND, "inside min_refetch: cache only");
	CHECK(DISCOVERY_COUNT(fx) == 1 && JWKS_COUNT(fx) == 1, "discovery + JWKS once, then rate limited");

	/* Rotation: a token signed by the new key is looked up by its kid. */
	CHECK(rotate(fx, kid, sizeof(kid)), "rotate");
	pass_min_refetch();
	CHECK(lookup(s.iss, kid) == BROKER_OK, "rotated key picked up by refetch");
	CHECK(JWKS_COUNT(fx) == 2, "one refetch, got %ld", JWKS_COUNT(fx));
	CHECK(DISCOVERY_COUNT(fx) == 1, "refetch reuses the discovered jwks_uri");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "old key still published");
	CHECK(lookup(s.iss, kid) == BROKER_OK && JWKS_COUNT(fx) == 2, "hit costs nothing");

	/* Outage: cached keys keep working; the failed refetch keeps them. */
	control(fx, "/control/down", "1", NULL);
	pass_min_refetch();
	CHECK(lookup(s.iss, "unknown-during-outage") == BROKER_ERR_NOTFOUND, "unknown during outage");
	CHECK(JWKS_COUNT(fx) == 3, "refetch was tried, got %ld", JWKS_COUNT(fx));
	CHECK(lookup(s.iss, kid) == BROKER_OK && lookup(s.iss, "ec-1") == BROKER_OK, "cached keys served");
	issuer_get_stats(s.iss, &st);
	CHECK(st.refresh_failed == 1 && st.n_keys == 3 && st.last_error, "failure counted, keys kept");
	CHECK(issuer_ready(s.iss), "still ready");
	control(fx, "/control/down", "0", NULL);

	/* Garbage JWKS: a 200 with junk keeps the old set too. */
	control(fx, "/control/garbage", "1", NULL);
	pass_min_refetch();
	CHECK(lookup(s.iss, "unknown-during-garbage") == BROKER_ERR_NOTFOUND, "unknown with garbage");
	CHECK(JWKS_COUNT(fx) == 4, "garbage was fetched, got %ld", JWKS_COUNT(fx));
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK && lookup(s.iss, kid) == BROKER_OK, "old keys kept");
	issuer_get_stats(s.iss, &st);
	CHECK(st.refresh_failed == 2 && st.n_keys == 3, "garbage counted as failure");
	control(fx, "/control/garbage", "0", NULL);

	/* 60 unknown kids from 6 threads: at most one fetch in the interval. */
	pass_min_refetch();
	control(fx, "/control/reset", "", NULL);
	ok = run_burst(s.iss, NULL, &nf);
	CHECK(ok == 0 && nf == 60, "all unknown (%d ok, %d not found)", ok, nf);
	CHECK(JWKS_COUNT(fx) == 1, "one fetch for 60 unknown kids, got %ld", JWKS_COUNT(fx));
	issuer_get_stats(s.iss, &st);
	CHECK(st.last_error == NULL && st.refresh_failed == 2, "that fetch succeeded");

	/* Single flight: 60 concurrent requests for a just-rotated kid while the
	 * issuer is slow all wait for the one fetch and all find the key. */
	CHECK(rotate(fx, kid2, sizeof(kid2)), "rotate again");
	control(fx, "/control/delay", "0.5", NULL);
	pass_min_refetch();
	control(fx, "/control/reset", "", NULL);
	ok = run_burst(s.iss, kid2, &nf);
	CHECK(ok == 60, "every waiter got the new key (%d ok, %d not found)", ok, nf);
	CHECK(JWKS_COUNT(fx) == 1, "shared by all: one fetch, got %ld", JWKS_COUNT(fx));
	control(fx, "/control/delay", "0", NULL);
	issuers_free(s.set);
}

static void test_discovery_mismatch(const struct fixture *fx)
{
	struct setup s;
	struct issuer_stats st;

	control(fx, "/control/reset_all", "", NULL);
	control(fx, "/control/discovery_issuer", "https://evil.example", NULL);
	CHECK(setup_create(&s, fx->url, NULL, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "mismatching discovery issuer refused");
	CHECK(DISCOVERY_COUNT(fx) == 1 && JWKS_COUNT(fx) == 0, "JWKS never fetched");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS && DISCOVERY_COUNT(fx) == 1,
	      "no keys: retry is rate limited too");
	issuer_get_stats(s.iss, &st);
	CHECK(st.last_error && strstr(st.last_error, "issuer"), "reason names the issuer");
	issuers_free(s.set);

	/* A configured issuer string with a trailing slash is a different
	 * issuer: exact comparison, no normalisation. */
	char with_slash[300];
	snprintf(with_slash, sizeof(with_slash), "%s/", fx->url);
	control(fx, "/control/discovery_issuer", "", NULL);
	CHECK(setup_create(&s, with_slash, NULL, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "issuer must match byte for byte");
	issuers_free(s.set);
	control(fx, "/control/reset_all", "", NULL);
}

static void test_size_limit(const struct fixture *fx)
{
	struct setup s;
	struct issuer_stats st;
	char jwks_uri[300];

	/* The configured jwks_uri skips discovery. The padded JWKS stays
	 * valid JSON, so only the 1 MiB cap can reject it. */
	snprintf(jwks_uri, sizeof(jwks_uri), "%s/jwks", fx->url);
	control(fx, "/control/reset_all", "", NULL);
	control(fx, "/control/jwks_size", "1048577", NULL);
	CHECK(setup_create(&s, fx->url, jwks_uri, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "1 MiB + 1 rejected");
	CHECK(JWKS_COUNT(fx) == 1 && DISCOVERY_COUNT(fx) == 0, "configured jwks_uri, no discovery");
	/* Rejected by the transfer itself (nothing over 1 MiB is buffered),
	 * not only by the JWKS parser's own limit. */
	issuer_get_stats(s.iss, &st);
	CHECK(st.last_error && strcmp(st.last_error, "response over 1 MiB") == 0, "reason: %s",
	      st.last_error ? st.last_error : "(none)");
	issuers_free(s.set);

	/* Without Content-Length the size is known only while reading: the
	 * write callback must stop it. */
	control(fx, "/control/no_length", "1", NULL);
	CHECK(setup_create(&s, fx->url, jwks_uri, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "1 MiB + 1 without length rejected");
	issuer_get_stats(s.iss, &st);
	CHECK(st.last_error && strcmp(st.last_error, "response over 1 MiB") == 0, "reason: %s",
	      st.last_error ? st.last_error : "(none)");
	issuers_free(s.set);

	control(fx, "/control/jwks_size", "1048576", NULL);
	CHECK(setup_create(&s, fx->url, jwks_uri, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "exactly 1 MiB without length accepted");
	issuers_free(s.set);
	control(fx, "/control/no_length", "0", NULL);
	CHECK(setup_create(&s, fx->url, jwks_uri, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "exactly 1 MiB accepted");
	issuers_free(s.set);
	control(fx, "/control/reset_all", "", NULL);
}

static void test_redirects(const struct fixture *fx, const struct fixture *tls)
{
	struct setup s;
	char uri[700];

	/* http -> http (even loopback) is refused: redirects only to https. */
	snprintf(uri, sizeof(uri), "%s/redirect?to=%s/jwks", fx->url, fx->url);
	control(fx, "/control/reset", "", NULL);
	CHECK(setup_create(&s, fx->url, uri, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_ERR_NOKEYS, "redirect to http refused");
	CHECK(JWKS_COUNT(fx) == 0 && count(fx, "/redirect") == 1, "redirect not followed");
	issuers_free(s.set);

	/* https -> https is followed. */
	snprintf(uri, sizeof(uri), "%s/redirect?to=%s/jwks", tls->url, tls->url);
	CHECK(setup_create(&s, tls->url, uri, tls->ca_file) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "rsa-1") == BROKER_OK, "redirect to https followed");
	issuers_free(s.set);
}

static void test_tls(const struct fixture *tls)
{
	struct setup s;

	control(tls, "/control/reset", "", NULL);
	CHECK(setup_create(&s, tls->url, NULL, tls->ca_file) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "ec-1") == BROKER_OK, "https with ca_file");
	issuers_free(s.set);

	CHECK(setup_create(&s, tls->url, NULL, NULL) == BROKER_OK, "create");
	CHECK(lookup(s.iss, "ec-1") == BROKER_ERR_NOKEYS, "https without ca_file: untrusted");
	issuers_free(s.set);
	CHECK(DISCOVERY_COUNT(tls) == 1, "only the trusted fetch reached the issuer, got %ld",
	      DISCOVERY_COUNT(tls));
}

static void test_url_rules(void)
{
	static const struct {
		const char *issuer, *jwks_uri;
		enum broker_err want;
	} cases[] = {
		{ "http://192.0.2.1", NULL, BROKER_ERR_CONFIG },
		{ "http://example.com", NULL, BROKER_ERR_CONFIG },
		{ "http://127.0.0.1.example.com", NULL, BROKER_ERR_CONFIG },
		{ "ftp://127.0.0.1", NULL, BROKER_ERR_CONFIG },
		{ "https://issuer.example", "http://issuer.example/jwks", BROKER_ERR_CONFIG },
		{ "https://issuer.example", "file:///etc/passwd", BROKER_ERR_CONFIG },
		{ "https://issuer.example", NULL, BROKER_OK },
		{ "https://issuer.example", "https://keys.example/jwks", BROKER_OK },
		{ "http://127.0.0.1:1", NULL, BROKER_OK },
		{ "http://localhost:1", "http://[::1]:1/jwks", BROKER_OK },
	};
	struct setup s;
	size_t i;
	enum broker_err err;

	for (i = 0; i < BROKER_ARRAY_SIZE(cases); i++) {
		err = setup_create(&s, cases[i].issuer, cases[i].jwks_uri, NULL);
		CHECK(err == cases[i].want, "%s %s: %s", cases[i].issuer, cases[i].jwks_uri ? cases[i].jwks_uri : "",
		      broker_strerror(err));
		if (err == BROKER_OK)
			issuers_free(s.set);
	}
	issuers_free(NULL);
	CHECK(issuers_count(NULL) == 0 && issuers_at(NULL, 0) == NULL && !issuer_ready(NULL), "NULL-safe");
	CHECK(broker_curl_global_init() == BROKER_OK, "global init is idempotent");
}

int main(void)
{
	struct fixture fx, tls;

	signal(SIGPIPE, SIG_IGN);
	test_url_rules();
	CHECK(fixture_start(&fx, false) == 0, "fixture starts (%s)", fixture_script() ? "found" : "not found");
	CHECK(fixture_start(&tls, true) == 0, "TLS fixture starts");
	if (fx.pid > 0 && tls.pid > 0) {
		test_discovery_and_background(&fx);
		test_on_demand(&fx);
		test_discovery_mismatch(&fx);
		test_size_limit(&fx);
		test_tls(&tls);
		test_redirects(&fx, &tls);
		test_background_retry(&fx);
	}
	fixture_stop(&fx);
	fixture_stop(&tls);
	return check_done();
}
