/* SPDX-License-Identifier: Apache-2.0 */
/* `cibroker serve` and `cibroker dev`: process lifecycle and signals.
 * SIGHUP reloads atomically, SIGUSR1 reopens the audit log, SIGTERM/SIGINT
 * drain and stop. Signals are taken synchronously with sigwait() in the main
 * thread, so no handler ever runs inside broker code. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cibroker/audit.h"
#include "cibroker/cli.h"
#include "cibroker/config.h"
#include "cibroker/exchange.h"
#include "cibroker/http.h"
#include "cibroker/issuer.h"
#include "cibroker/keys.h"
#include "cibroker/policy.h"
#include "cibroker/util.h"
#include "runtime.h"

static void log_line(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(const char *level, const char *fmt, ...)
{
	char ts[40];
	va_list ap;

	broker_fmt_time_ms(broker_now_us(), ts, sizeof(ts));
	fprintf(stderr, "%s cibroker %s: ", ts, level);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGUSR1);
	/* Blocked before any thread starts, so every thread inherits the mask. */
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Wait (bounded) until every issuer has keys, so a reload does not swap in
 * a snapshot that would answer 503 while the old one could still serve. */
/* A stop asked for while signals are blocked, left pending for the loop. */
static bool stop_pending(void)
{
	sigset_t pend;

	return sigpending(&pend) == 0 && (sigismember(&pend, SIGTERM) == 1 || sigismember(&pend, SIGINT) == 1);
}

static bool wait_ready(struct broker_state *st, int seconds)
{
	for (int i = 0; i < seconds * 10 && !stop_pending(); i++) {
		bool ready;
		char *missing = state_readiness(st, &ready);

		free(missing);
		if (ready)
			return true;
		usleep(100000);
	}
	return false;
}

/* The listener of `serve`, rebuilt on SIGHUP when its address, TLS files or
 * tuning changed: the new daemon binds next to the old one (SO_REUSEPORT),
 * then the old one stops accepting and finishes what it has. */
struct listener {
	struct broker_server *srv;
	char fingerprint[65]; /* of listen, tuning, cert and key */
	char *listen;         /* the address srv serves */
};

static char *read_pem(const char *path)
{
	char *buf = NULL;
	size_t len;

	if (!path || broker_read_file(path, 1 << 20, &buf, &len) != BROKER_OK)
		return NULL;
	return buf;
}

static enum broker_err listener_open(struct broker_state *st, const struct broker_config *cfg, struct listener *cur,
				     bool *ret_changed)
{
	char *cert = NULL, *key = NULL, *sig = NULL, fp[65];
	const char *why = NULL;
	struct broker_server *srv = NULL;
	enum broker_err err = BROKER_ERR_IO;
	struct server_options so = {
		.listen = cfg->listen ? cfg->listen : "127.0.0.1:8080",
		.threads = cfg->threads,
		.max_connections = cfg->max_connections,
		.per_ip_connections = cfg->per_ip_connections,
		.connection_timeout = (unsigned)cfg->connection_timeout,
		.request_deadline = (unsigned)cfg->request_deadline,
	};

	*ret_changed = false;
	if (cfg->tls_cert) {
		cert = read_pem(cfg->tls_cert);
		key = read_pem(cfg->tls_key);
		if (!cert || !key) {
			log_line("error", "cannot read tls.cert %s / tls.key %s", cfg->tls_cert, cfg->tls_key);
			goto out;
		}
		so.tls_cert_pem = cert;
		so.tls_key_pem = key;
	}
	if (asprintf(&sig, "%s|%u|%u|%u|%u|%u|%s|%s", so.listen, so.threads, so.max_connections, so.per_ip_connections,
		     so.connection_timeout, so.request_deadline, cert ? cert : "", key ? key : "") < 0) {
		err = BROKER_ERR_NOMEM;
		sig = NULL;
		goto out;
	}
	broker_sha256_hex(sig, strlen(sig), fp);
	if (cur->srv && strcmp(fp, cur->fingerprint) == 0) {
		err = BROKER_OK;
		goto out;
	}
	/* Only a rebuild on the same address may bind beside a listener. */
	so.beside_old = cur->srv && cur->listen && strcmp(cur->listen, so.listen) == 0;
	err = server_start(st, &so, &srv, &why);
	if (err != BROKER_OK) {
		log_line("error", "%s: %s", so.listen, why);
		goto out;
	}
	if (cur->srv)
		server_stop(cur->srv);
	cur->srv = srv;
	free(cur->listen);
	cur->listen = strdup(so.listen); /* NULL only makes the next rebuild probe the port */
	memcpy(cur->fingerprint, fp, sizeof(fp));
	*ret_changed = true;
out:
	broker_secret_free(sig);
	broker_secret_free(key);
	free(cert);
	return err;
}

static void reload(struct broker_state *st, const char *config_path, struct listener *l)
{
	struct diag *d = diag_new();
	struct broker_snapshot *snap = NULL;
	enum broker_err err = d ? snapshot_load(config_path, d, &snap) : BROKER_ERR_NOMEM;
	bool relistened = false, listener_kept = false;

	if (d) {
		for (size_t i = 0; i < diag_count(d); i++)
			log_line(err == BROKER_OK ? "warning" : "error", "reload: %s", diag_line(d, i));
	}
	if (err == BROKER_OK) {
		/* An issuer that is down during a reload keeps its last good
		 * keys, as it would through a failed refresh. */
		struct broker_snapshot *prev = state_acquire(st);

		snapshot_adopt_keys(snap, prev);
		snapshot_unref(prev);
		err = snapshot_start(snap);
	}
	if (err == BROKER_OK) {
		/* Swap only once the new issuers have keys (or 10 s passed), so a
		 * reload never turns a serving broker into a 503 one. */
		for (int i = 0; i < 100 && !snapshot_issuers_ready(snap); i++)
			usleep(100000);
		err = state_swap(st, snap);
	}
	if (err == BROKER_OK) {
		snap = NULL;
		/* The new snapshot serves already; a listener that cannot be rebuilt
		 * (port taken, bad TLS files) keeps the old one and says so. */
		struct broker_snapshot *cur = state_acquire(st);
		listener_kept = listener_open(st, snapshot_config(cur), l, &relistened) != BROKER_OK;
		snapshot_unref(cur);
	}
	snapshot_unref(snap);
	/* A listener left as it was means the broker does not run what is on
	 * disk: that counts as a failed reload, for the alert that watches it. */
	state_note_reload(st, err == BROKER_OK && !listener_kept);
	if (err == BROKER_OK && listener_kept)
		log_line("error", "reloaded %s, but kept the previous listener: the listener settings on disk are not "
				  "in effect", config_path);
	else if (err == BROKER_OK)
		log_line("info", "reloaded %s%s", config_path, relistened ? " (listener rebuilt)" : "");
	else
		log_line("error", "reload of %s failed (%s): keeping the previous configuration", config_path,
			 broker_strerror(err));
	diag_free(d);
}

static void *drain_watchdog(void *arg)
{
	unsigned seconds = *(unsigned *)arg;

	sleep(seconds);
	log_line("error", "exchanges still in flight after %u s: exiting anyway", seconds);
	_exit(1);
	return NULL;
}

/* SIGTERM: stop accepting, let exchanges in flight finish (each is audited
 * before it is answered), but not forever. */
static void drain(struct broker_server *srv, unsigned deadline)
{
	static unsigned secs;
	pthread_t t;

	secs = deadline ? deadline : 30;
	log_line("info", "stopping: finishing exchanges in flight (at most %u s)", secs);
	if (pthread_create(&t, NULL, drain_watchdog, &secs) == 0)
		pthread_detach(t);
	server_stop(srv);
}

/* The operator hears of an audit log that refuses records (every exchange
 * then answers 503) from the log, not only from /readyz and /metrics: once
 * when it starts, once when records are written again. */
struct audit_watch {
	uint64_t errors;
	bool failing;
};

static void audit_watch(struct broker_state *st, struct audit_watch *w)
{
	uint64_t errors = state_audit_errors(st);

	if (errors > w->errors && !w->failing) {
		w->failing = true;
		log_line("error", "audit log not writable: %llu record%s refused; exchanges answer 503 until it is",
			 (unsigned long long)(errors - w->errors), errors - w->errors == 1 ? "" : "s");
	} else if (w->failing && errors == w->errors && audit_healthy(state_audit(st))) {
		w->failing = false;
		log_line("info", "audit log writable again");
	}
	w->errors = errors;
}

/* Likewise for an issuer whose keys cannot be fetched (TLS, DNS, a bad
 * JWKS): once when fetches start failing or fail for a new reason, once when
 * one succeeds again. Counters follow the issuer's name across reloads. */
struct issuer_seen {
	char name[128];
	uint64_t ok, failed;
	const char *error; /* static reason last logged, NULL while fetching works */
};

struct issuer_watch {
	struct issuer_seen *v;
	size_t n;
};

static struct issuer_seen *issuer_seen_find(struct issuer_watch *w, const char *name)
{
	struct issuer_seen *grown;

	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->v[i].name, name) == 0)
			return &w->v[i];
	grown = realloc(w->v, (w->n + 1) * sizeof(*w->v));
	if (!grown)
		return NULL;
	w->v = grown;
	memset(&w->v[w->n], 0, sizeof(w->v[w->n]));
	snprintf(w->v[w->n].name, sizeof(w->v[w->n].name), "%s", name);
	return &w->v[w->n++];
}

static void issuer_watch(struct broker_state *st, struct issuer_watch *w)
{
	struct broker_snapshot *snap = state_acquire(st);
	const struct broker_issuers *set = snapshot_issuers(snap);

	for (size_t i = 0; i < issuers_count(set); i++) {
		struct broker_issuer *iss = issuers_at(set, i);
		struct issuer_seen *e = issuer_seen_find(w, issuer_config(iss)->name);
		struct issuer_stats is;

		if (!e)
			break;
		issuer_get_stats(iss, &is);
		if (is.refresh_failed > e->failed && is.last_error && is.last_error != e->error) {
			if (is.n_keys)
				log_line("warning", "issuer %s: fetching keys failed: %s; keeping the %zu keys fetched before",
					 e->name, is.last_error, is.n_keys);
			else
				log_line("error", "issuer %s: fetching keys failed: %s; its exchanges answer 503 until it works",
					 e->name, is.last_error);
			e->error = is.last_error;
		} else if (e->error && is.refresh_ok > e->ok && !is.last_error) {
			log_line("info", "issuer %s: keys fetched again (%zu keys)", e->name, is.n_keys);
			e->error = NULL;
		}
		e->ok = is.refresh_ok;
		e->failed = is.refresh_failed;
	}
	snapshot_unref(snap);
}

static int run_until_stopped(struct broker_state *st, struct listener *l, const sigset_t *set,
			     const char *config_path)
{
	struct audit_watch watch = {.errors = state_audit_errors(st)};
	struct issuer_watch issuers = {0};
	const struct timespec tick = {.tv_sec = 1};

	for (;;) {
		int sig = sigtimedwait(set, NULL, &tick);

		audit_watch(st, &watch);
		issuer_watch(st, &issuers);
		if (sig < 0)
			continue; /* the tick (EAGAIN), or EINTR */
		if (sig == SIGHUP && config_path) {
			reload(st, config_path, l);
		} else if (sig == SIGUSR1) {
			enum broker_err err = state_reopen_audit(st);
			int why = errno; /* of the open that failed */

			if (err == BROKER_OK)
				log_line("info", "audit log reopened");
			else
				log_line("error", "audit log not reopened: %s; still appending to the file it had open",
					 err == BROKER_ERR_IO && why ? strerror(why) : broker_strerror(err));
		} else if (sig == SIGTERM || sig == SIGINT) {
			struct broker_snapshot *s = state_acquire(st);
			unsigned deadline = (unsigned)snapshot_config(s)->request_deadline * 2;

			snapshot_unref(s);
			drain(l->srv, deadline);
			l->srv = NULL;
			break;
		}
	}
	free(issuers.v);
	return 0;
}

static void serve_usage(FILE *out)
{
	fprintf(out, "usage: cibroker serve --config FILE\n\n"
		     "Run the broker. SIGHUP reloads config, policies, keys and TLS files; SIGUSR1\n"
		     "reopens the audit log; SIGTERM stops after the exchanges in flight.\n");
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	const char *config_path = NULL;
	struct diag *d = NULL;
	struct broker_snapshot *snap = NULL;
	struct broker_state *st = NULL;
	struct listener l = {0};
	bool opened;
	sigset_t set;
	int c, rc = 1;
	bool stopped = false;

	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'h': serve_usage(stdout); return 0;
		case 'V': cli_print_version(); return 0;
		default: serve_usage(stderr); return 2;
		}
	}
	if (!config_path || optind != argc) {
		serve_usage(stderr);
		return 2;
	}
	block_signals(&set);
	d = diag_new();
	if (!d)
		goto out;
	if (snapshot_load(config_path, d, &snap) != BROKER_OK) {
		diag_print(d, stderr);
		fprintf(stderr, "cibroker serve: %s: configuration rejected\n", config_path);
		goto out;
	}
	diag_print(d, stderr); /* warnings */
	const struct broker_config *cfg = snapshot_config(snap);
	if (state_create(snap, &st) != BROKER_OK) {
		fprintf(stderr, "%s:%d:%d: audit.path: cannot open audit log '%s': %s\n", config_path,
			cfg->audit_path_pos.line, cfg->audit_path_pos.col, cfg->audit_path ? cfg->audit_path : "-",
			strerror(errno));
		fprintf(stderr, "cibroker serve: %s: configuration rejected\n", config_path);
		goto out;
	}
	snap = NULL; /* owned by st */
	struct audit_stats as;
	audit_get_stats(state_audit(st), &as);
	if (as.torn_recovered)
		log_line("warning", "audit log %s ended in a record cut short by a crash; it was terminated and the "
			 "chain continues after it (cibroker audit verify reports it)", cfg->audit_path);
	if (listener_open(st, cfg, &l, &opened) != BROKER_OK)
		goto out;
	snap = state_acquire(st);
	snapshot_start(snap);
	log_line("info", "listening on %s%s (%zu policies)", cfg->listen ? cfg->listen : "127.0.0.1:8080",
		 cfg->tls_cert ? " with TLS" : "", snapshot_policy_count(snap));
	snapshot_unref(snap);
	snap = NULL;
	rc = run_until_stopped(st, &l, &set, config_path);
	stopped = true;
out:
	server_stop(l.srv);
	free(l.listen);
	state_free(st); /* closes the audit log: written, synced */
	if (stopped)
		log_line("info", "stopped: every exchange answered, the audit log closed");
	snapshot_unref(snap);
	diag_free(d);
	return rc;
}

/* ---- dev ---- */

static const char *find_policies_dir(const char *given)
{
	static const char *const candidates[] = {"policies", CIBROKER_SOURCE_POLICIES, "/usr/share/cibroker/policies"};
	struct stat stt;

	if (given)
		return given;
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(candidates); i++)
		if (stat(candidates[i], &stt) == 0 && S_ISDIR(stt.st_mode))
			return candidates[i];
	return "policies";
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

static struct broker_config *dev_config(const char *listen, const char *public_url, const char *issuer_url,
					const char *policies)
{
	struct broker_config *cfg = calloc(1, sizeof(*cfg));
	static const char *const names[] = {"github", "gitlab"};

	if (!cfg)
		abort();
	cfg->path = xstrdup("(dev)");
	cfg->listen = xstrdup(listen);
	cfg->public_url = xstrdup(public_url);
	cfg->policies_dir = xstrdup(policies);
	cfg->audit_path = xstrdup("-");
	config_defaults(cfg);
	cfg->audit_sync = BROKER_AUDIT_SYNC_NONE;
	cfg->issuers = calloc(BROKER_ARRAY_SIZE(names), sizeof(*cfg->issuers));
	if (!cfg->issuers)
		abort();
	cfg->n_issuers = BROKER_ARRAY_SIZE(names);
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		struct broker_issuer_config *ic = &cfg->issuers[i];

		ic->name = xstrdup(names[i]);
		ic->issuer = xstrdup(issuer_url);
		ic->audiences = calloc(1, sizeof(char *));
		if (!ic->audiences)
			abort();
		ic->audiences[0] = xstrdup(public_url);
		ic->n_audiences = 1;
		config_issuer_defaults(ic);
		ic->algorithms = BROKER_ALG_RS256; /* what the dev issuer signs with */
	}
	return cfg;
}


static long http_post(const char *url, const char *body, struct broker_buf *out)
{
	CURL *c = curl_easy_init();
	long code = 0;

	if (!c)
		return 0;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, broker_buf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	return code;
}

/* The claims of the minted token, so the walkthrough shows what a relying
 * party would see (dev tokens only: nothing here is a real credential). */
static void print_minted_claims(const char *answer)
{
	json_t *a = broker_json_parse(answer, strlen(answer), 16), *claims = NULL;
	const char *tok = json_string_value(json_object_get(a, "access_token"));
	const char *p1 = tok ? strchr(tok, '.') : NULL, *p2 = p1 ? strchr(p1 + 1, '.') : NULL;
	unsigned char *payload = NULL;
	size_t n = 0;
	char *pretty = NULL;

	if (p2 && b64url_decode(p1 + 1, (size_t)(p2 - p1 - 1), &payload, &n) == BROKER_OK)
		claims = broker_json_parse(payload, n, 16);
	if (claims && (pretty = json_dumps(claims, JSON_INDENT(2))))
		fprintf(stderr, "\nits claims (ES256, kid in the header, verify with %s):\n%s\n",
			"/.well-known/jwks.json", pretty);
	free(pretty);
	free(payload);
	json_decref(claims);
	json_decref(a);
}

/* The walkthrough a new user sees: a dev ID token exchanged for a deploy
 * credential through the real HTTP path, then the commands to do it again. */
static void dev_demo(const char *public_url, const char *audience, const char *shape)
{
	struct broker_buf tok = {.max = 1 << 20}, ans = {.max = 1 << 20};
	char url[512], *esc = NULL, *form = NULL, self[PATH_MAX];
	CURL *c = curl_easy_init();
	/* The client command must work when pasted: name this very binary,
	 * which after the README's first command is not on PATH. */
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0 && !memchr(self, '\'', (size_t)n))
		self[n] = '\0';
	else
		snprintf(self, sizeof(self), "cibroker");

	snprintf(url, sizeof(url), "%s/dev/token%s", public_url, shape);
	if (!c || http_post(url, "", &tok) != 200 || !tok.data)
		goto out;
	esc = curl_easy_escape(c, tok.data, (int)tok.len);
	if (!esc || asprintf(&form,
			     "grant_type=urn:ietf:params:oauth:grant-type:token-exchange"
			     "&subject_token_type=urn:ietf:params:oauth:token-type:jwt&audience=%s&subject_token=%s",
			     audience, esc) < 0)
		goto out;
	snprintf(url, sizeof(url), "%s/v1/token", public_url);
	long code = http_post(url, form, &ans);
	fprintf(stderr, "\n== cibroker dev: a dev ID token exchanged for policy '%s' -> HTTP %ld ==\n%s\n", audience,
		code, ans.data ? ans.data : "(no answer)");
	if (code == 200)
		print_minted_claims(ans.data);
out:
	fprintf(stderr,
		"\n== Try it yourself ==\n"
		"TOKEN=$(curl -s -X POST '%s/dev/token%s')        # %s-shaped; -d '{\"ref\":\"%s\"}' overrides claims\n"
		"curl -s %s/v1/token \\\n"
		"  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \\\n"
		"  -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \\\n"
		"  -d audience=%s --data-urlencode subject_token=\"$TOKEN\"\n"
		"# or with the CI-side client:\n"
		"curl -s -X POST '%s/dev/token%s' | '%s' exchange --broker %s --audience %s --format json\n\n",
		public_url, shape, *shape ? "GitLab" : "GitHub", *shape ? "feature" : "refs/heads/feature", public_url,
		audience, public_url, shape, self, public_url, audience);
	if (esc)
		curl_free(esc);
	free(form);
	broker_buf_wipe(&tok);
	broker_buf_wipe(&ans);
	if (c)
		curl_easy_cleanup(c);
}

static void dev_usage(FILE *out)
{
	fprintf(out, "usage: cibroker dev [--listen ADDR] [--policies DIR] [--audience POLICY] [--no-demo]\n\n"
		     "Try the broker: an in-memory signing key, a dev issuer under /dev/ on the same\n"
		     "listener, the example policies and the audit log on stdout. Not for production:\n"
		     "`serve` never enables the dev issuer. ADDR defaults to 127.0.0.1:8080.\n");
}

/* The dev issuer mints tokens for anyone who asks: loopback only, and an
 * explicit port, since the printed commands and the issuer URL name it. */
static bool dev_listen_ok(const char *listen)
{
	struct sockaddr_storage ss;
	unsigned len;
	const char *why;
	bool loopback = false;
	in_port_t port = 0;

	if (broker_parse_listen(listen, &ss, &len, &why) != BROKER_OK) {
		fprintf(stderr, "cibroker dev: --listen '%s': %s\n", listen, why);
		return false;
	}
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

		loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
		port = ntohs(a->sin_port);
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;

		loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
		port = ntohs(a->sin6_port);
	}
	if (!loopback) {
		fprintf(stderr, "cibroker dev: --listen '%s': dev mode listens on loopback only (127.0.0.0/8, [::1], "
				"localhost): its dev issuer mints tokens for anyone\n", listen);
		return false;
	}
	if (port == 0) {
		fprintf(stderr, "cibroker dev: --listen '%s': needs an explicit port, not 0\n", listen);
		return false;
	}
	return true;
}

int cmd_dev(int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"policies", required_argument, NULL, 'p'},
		{"audience", required_argument, NULL, 'a'},
		{"no-demo", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{0},
	};
	const char *listen = "127.0.0.1:8080", *policies = NULL, *audience = "api-deploy-prod", *why = NULL;
	const char *shape = ""; /* dev issuer token shape for the demo */
	const struct broker_policy *demo_policy;
	char public_url[300];
	struct devissuer *dev = NULL;
	struct broker_signing_keys *keys = NULL;
	struct broker_snapshot *snap = NULL;
	struct broker_state *st = NULL;
	struct broker_server *srv = NULL;
	struct diag *d = NULL;
	bool demo = true;
	sigset_t set;
	int c, rc = 1;
	bool stopped = false;

	while ((c = getopt_long(argc, argv, "l:p:a:nhV", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'p': policies = optarg; break;
		case 'a': audience = optarg; break;
		case 'n': demo = false; break;
		case 'h': dev_usage(stdout); return 0;
		case 'V': cli_print_version(); return 0;
		default: dev_usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		dev_usage(stderr);
		return 2;
	}
	if (!dev_listen_ok(listen))
		return 2;
	block_signals(&set);
	snprintf(public_url, sizeof(public_url), "http://%s", listen);
	d = diag_new();
	if (!d || devissuer_create(public_url, &dev) != BROKER_OK || signing_keys_generate(&keys) != BROKER_OK) {
		fprintf(stderr, "cibroker dev: cannot create keys\n");
		goto out;
	}
	if (snapshot_build(dev_config(listen, public_url, devissuer_url(dev), find_policies_dir(policies)), keys, d,
			   &snap) != BROKER_OK) {
		keys = NULL;
		diag_print(d, stderr);
		fprintf(stderr, "cibroker dev: policies rejected\n");
		goto out;
	}
	keys = NULL;
	diag_print(d, stderr);
	if (demo && (demo_policy = runtime_find_policy(snap, audience))) {
		/* the dev issuer is both github and gitlab: mint the shape the policy wants */
		if (strcmp(policy_issuer(demo_policy), "gitlab") == 0)
			shape = "?shape=gitlab";
	} else if (demo) {
		const struct broker_policy_set *ps = runtime_policies(snap);

		fprintf(stderr, "cibroker dev: --audience '%s' names no policy; the loaded ones are:", audience);
		for (size_t i = 0; i < policy_set_count(ps); i++)
			fprintf(stderr, " %s", policy_name(policy_set_at(ps, i)));
		fputc('\n', stderr);
		rc = 2;
		goto out;
	}
	if (state_create(snap, &st) != BROKER_OK)
		goto out;
	snap = NULL;
	struct server_options so = {.listen = listen, .threads = 4, .dev = dev};
	if (server_start(st, &so, &srv, &why) != BROKER_OK) {
		fprintf(stderr, "cibroker dev: %s: %s\n", listen, why);
		goto out;
	}
	snap = state_acquire(st);
	snapshot_start(snap);
	snapshot_unref(snap);
	snap = NULL;
	log_line("info", "dev mode on %s: dev issuer %s, %s", public_url, devissuer_url(dev),
		 "in-memory signing key, audit on stdout");
	if (!wait_ready(st, 10) && !stop_pending())
		log_line("warning", "issuer keys not fetched yet");
	if (demo && !stop_pending())
		dev_demo(public_url, audience, shape);
	struct listener l = {.srv = srv};
	rc = run_until_stopped(st, &l, &set, NULL);
	srv = NULL;
	stopped = true;
out:
	server_stop(srv);
	state_free(st);
	if (stopped)
		log_line("info", "stopped");
	snapshot_unref(snap);
	signing_keys_free(keys);
	devissuer_free(dev);
	diag_free(d);
	return rc;
}
