/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration loader. Every key is dispatched through a table of typed
 * handlers (as systemd's conf-parser does), so an unknown key is always an
 * error and a misspelt security setting can never be silently ignored. Every
 * problem is reported at the position of the node at fault and loading goes
 * on, so one run shows all mistakes of the file. */
#include "cibroker/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cibroker/keys.h" /* SIGNING_KEYS_MAX only: config links no keys code */
#include "cibroker/util.h"

#define CONFIG_MAX_ISSUERS 256
#define CONFIG_MAX_LIST 64 /* signing keys, audiences, algorithms */
#define CONFIG_MAX_STRING 4096

static const struct {
	const char *name;
	unsigned bit;
} alg_names[] = {
	{"RS256", BROKER_ALG_RS256}, {"RS384", BROKER_ALG_RS384}, {"RS512", BROKER_ALG_RS512},
	{"PS256", BROKER_ALG_PS256}, {"PS384", BROKER_ALG_PS384}, {"PS512", BROKER_ALG_PS512},
	{"ES256", BROKER_ALG_ES256}, {"ES384", BROKER_ALG_ES384},
};

unsigned broker_alg_from_name(const char *name)
{
	if (!name)
		return 0;
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(alg_names); i++)
		if (strcmp(alg_names[i].name, name) == 0)
			return alg_names[i].bit;
	return 0;
}

const char *broker_alg_name(unsigned alg)
{
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(alg_names); i++)
		if (alg_names[i].bit == alg)
			return alg_names[i].name;
	return NULL;
}

struct loader {
	const char *path; /* as given: the FILE of every message */
	char *dir;        /* relative paths in the file are relative to this */
	struct diag *d;
	struct broker_config *cfg;
	const struct doc_node *tls_node, *per_ip_node, *per_subject_node;
	bool aws_set;
	bool nomem;
};

struct key_entry;
typedef void (*key_parser)(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			   void *dst);

/* One known key: its handler writes into base + offset (base is the
 * broker_config or the broker_issuer_config being filled). */
struct key_entry {
	const char *key;
	key_parser parse;
	size_t offset;
	bool required;
	int64_t min, max; /* durations, integers, sizes */
};

__attribute__((format(printf, 3, 4))) static void cfg_error(struct loader *l, const struct doc_node *n,
							     const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	diag_error(l->d, l->path, n ? n->line : 0, n ? n->col : 0, "%s", msg);
}

static char *dup_or_fail(struct loader *l, const char *s)
{
	char *p = strdup(s);

	if (!p)
		l->nomem = true;
	return p;
}

/* A scalar that reads as a string (not null, bool or number), without NULs. */
static const char *want_string(struct loader *l, const char *name, const struct doc_node *v)
{
	if (doc_scalar_type(v) != DOC_TYPE_STRING || strlen(v->str) != v->len) {
		cfg_error(l, v, "%s: must be a string", name);
		return NULL;
	}
	if (v->len == 0) {
		cfg_error(l, v, "%s: must not be empty", name);
		return NULL;
	}
	if (v->len > CONFIG_MAX_STRING) {
		cfg_error(l, v, "%s: longer than %d bytes", name, CONFIG_MAX_STRING);
		return NULL;
	}
	return v->str;
}

static void set_string(struct loader *l, char **dst, const char *s)
{
	free(*dst);
	*dst = dup_or_fail(l, s);
}

static char *resolve_path(struct loader *l, const char *p)
{
	char *out;

	if (p[0] == '/' || !l->dir)
		return dup_or_fail(l, p);
	if (asprintf(&out, "%s/%s", l->dir, p) < 0) {
		l->nomem = true;
		return NULL;
	}
	return out;
}

/* ---- typed handlers ---- */

static void parse_string(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			 void *dst)
{
	const char *s = want_string(l, name, v);

	if (s)
		set_string(l, dst, s);
}

static bool url_has_host(const char *url)
{
	const char *p = strstr(url, "://");

	return p && p[3] && !strchr("/?#:", p[3]);
}

/* If a port is given, one from 1 to 65535: a URL libcurl would refuse is
 * refused here, with its position, not at the first fetch. */
static bool url_port_ok(const char *url)
{
	const char *p = strstr(url, "://") + 3;
	unsigned long port = 0;
	size_t digits;

	if (*p == '[') {
		p = strchr(p, ']');
		if (!p)
			return false;
		p++;
	} else {
		p += strcspn(p, ":/?#");
	}
	if (*p != ':')
		return true;
	digits = strspn(++p, "0123456789");
	for (size_t i = 0; i < digits && i < 6; i++)
		port = port * 10 + (unsigned long)(p[i] - '0');
	return digits >= 1 && digits <= 5 && port >= 1 && port <= 65535 && (!p[digits] || strchr("/?#", p[digits]));
}

/* https, or http to a loopback host (tests, sidecars). */
static void parse_url(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		      void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	if (!broker_url_allowed(s) || !url_has_host(s) || strpbrk(s, " \t\r\n")) {
		cfg_error(l, v, "%s: must be an https:// URL (http:// only for loopback hosts), not '%.200s'", name, s);
		return;
	}
	if (!url_port_ok(s)) {
		cfg_error(l, v, "%s: the port of '%.200s' is not a number from 1 to 65535", name, s);
		return;
	}
	set_string(l, dst, s);
}

/* OpenID Connect Discovery §3: an issuer is an https URL with no query or
 * fragment; a token's iss is compared to it byte for byte. */
static void parse_issuer_url(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			     void *dst)
{
	const char *s = doc_scalar_type(v) == DOC_TYPE_STRING ? v->str : NULL;

	if (s && strpbrk(s, "?#")) {
		cfg_error(l, v, "%s: an OIDC issuer has no query or fragment: '%.200s'", name, s);
		return;
	}
	parse_url(l, e, name, v, dst);
}

static void parse_path(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	free(*(char **)dst);
	*(char **)dst = resolve_path(l, s);
}

/* A file the broker will open at start: say so now, with the position. */
static void parse_existing_file(struct loader *l, const struct key_entry *e, const char *name,
				const struct doc_node *v, void *dst)
{
	struct stat st;
	char **p = dst;

	parse_path(l, e, name, v, dst);
	if (!*p || doc_scalar_type(v) != DOC_TYPE_STRING)
		return;
	if (stat(*p, &st) < 0)
		cfg_error(l, v, "%s: cannot access '%.200s': %s", name, *p, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		cfg_error(l, v, "%s: '%.200s' is not a regular file", name, *p);
}

/* Private keys: refused when group or others have any access, as ssh
 * refuses an unprotected identity file. */
static bool check_secret_file(struct loader *l, const char *name, const struct doc_node *v, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		cfg_error(l, v, "%s: cannot access '%.200s': %s", name, path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode)) {
		cfg_error(l, v, "%s: '%.200s' is not a regular file", name, path);
		return false;
	}
	if (st.st_mode & 077) {
		cfg_error(l, v, "%s: '%.200s' is accessible by group or others (mode %04o); run chmod 600", name, path,
			  (unsigned)(st.st_mode & 07777));
		return false;
	}
	return true;
}

static void parse_secret_file(struct loader *l, const struct key_entry *e, const char *name,
			      const struct doc_node *v, void *dst)
{
	char **p = dst;

	parse_path(l, e, name, v, dst);
	if (*p && doc_scalar_type(v) == DOC_TYPE_STRING)
		check_secret_file(l, name, v, *p);
}

/* 300 -> "5m", 3600 -> "1h", 90 -> "90s": limits read as the user writes them. */
static void fmt_duration(int64_t s, char out[32])
{
	if (s >= 86400 && s % 86400 == 0)
		snprintf(out, 32, "%lldd", (long long)(s / 86400));
	else if (s >= 3600 && s % 3600 == 0)
		snprintf(out, 32, "%lldh", (long long)(s / 3600));
	else if (s >= 60 && s % 60 == 0)
		snprintf(out, 32, "%lldm", (long long)(s / 60));
	else
		snprintf(out, 32, "%llds", (long long)s);
}

static void fmt_size(int64_t s, char out[32])
{
	if (s >= (1 << 20) && s % (1 << 20) == 0)
		snprintf(out, 32, "%lldMiB", (long long)(s >> 20));
	else if (s >= 1024 && s % 1024 == 0)
		snprintf(out, 32, "%lldKiB", (long long)(s >> 10));
	else
		snprintf(out, 32, "%lld bytes", (long long)s);
}

static void parse_duration(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			   void *dst)
{
	enum doc_scalar_type t = doc_scalar_type(v);
	int64_t s;

	char lim[32];

	if (v->kind != DOC_SCALAR) {
		cfg_error(l, v, "%s: must be a duration", name);
		return;
	}
	if ((t != DOC_TYPE_INT && t != DOC_TYPE_STRING) || strlen(v->str) != v->len ||
	    broker_parse_duration(v->str, &s) != BROKER_OK) {
		cfg_error(l, v, "%s: invalid duration '%.64s' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
			  name, v->str);
		return;
	}
	if (s < e->min || s > e->max) {
		fmt_duration(s < e->min ? e->min : e->max, lim);
		cfg_error(l, v, "%s: must be at %s %s", name, s < e->min ? "least" : "most", lim);
		return;
	}
	*(int64_t *)dst = s;
}

static void parse_size(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	enum doc_scalar_type t = doc_scalar_type(v);
	size_t s;

	char lim[32];

	if (v->kind != DOC_SCALAR) {
		cfg_error(l, v, "%s: must be a size", name);
		return;
	}
	if ((t != DOC_TYPE_INT && t != DOC_TYPE_STRING) || strlen(v->str) != v->len ||
	    broker_parse_size(v->str, &s) != BROKER_OK) {
		cfg_error(l, v,
			  "%s: invalid size '%.64s' (integer bytes, or a number with B, K/KiB/KB, M/MiB/MB or "
			  "G/GiB/GB, all powers of 1024: 16KiB)",
			  name, v->str);
		return;
	}
	if ((int64_t)s < e->min || (int64_t)s > e->max) {
		fmt_size((int64_t)s < e->min ? e->min : e->max, lim);
		cfg_error(l, v, "%s: must be at %s %s", name, (int64_t)s < e->min ? "least" : "most", lim);
		return;
	}
	*(size_t *)dst = s;
}

static void parse_uint(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	long long n;

	if (doc_scalar_type(v) != DOC_TYPE_INT) {
		cfg_error(l, v, "%s: must be an integer", name);
		return;
	}
	n = strtoll(v->str, NULL, 10);
	if (n < e->min || n > e->max) {
		cfg_error(l, v, "%s: must be between %lld and %lld", name, (long long)e->min, (long long)e->max);
		return;
	}
	*(unsigned *)dst = (unsigned)n;
}

static void parse_rate(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	enum doc_scalar_type t = doc_scalar_type(v);
	double x;

	if (t != DOC_TYPE_INT && t != DOC_TYPE_FLOAT) {
		cfg_error(l, v, "%s: must be a number", name);
		return;
	}
	x = strtod(v->str, NULL);
	if (!(x >= (double)e->min && x <= (double)e->max)) {
		cfg_error(l, v, "%s: must be between %lld and %lld", name, (long long)e->min, (long long)e->max);
		return;
	}
	*(double *)dst = x;
}

/* Exactly true or false: yes/no/on/off/True are not booleans here. */
static void parse_bool(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	if (v->kind == DOC_SCALAR && !v->quoted && strcmp(v->str, "true") == 0)
		*(bool *)dst = true;
	else if (v->kind == DOC_SCALAR && !v->quoted && strcmp(v->str, "false") == 0)
		*(bool *)dst = false;
	else
		cfg_error(l, v, "%s: must be true or false", name);
}

static void parse_audit_sync(struct loader *l, const struct key_entry *e, const char *name,
			     const struct doc_node *v, void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	if (strcmp(s, "always") == 0)
		*(enum broker_audit_sync *)dst = BROKER_AUDIT_SYNC_ALWAYS;
	else if (strcmp(s, "none") == 0)
		*(enum broker_audit_sync *)dst = BROKER_AUDIT_SYNC_NONE;
	else
		cfg_error(l, v, "%s: must be 'always' or 'none', not '%.64s'", name, s);
}

static void parse_audit_path(struct loader *l, const struct key_entry *e, const char *name,
			     const struct doc_node *v, void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	/* Not opened here: `policy check` runs where the log does not live.
	 * serve reports a failure to open it at this position. */
	l->cfg->audit_path_pos = (struct diag_pos){v->line, v->col};
	if (strcmp(s, "-") == 0)
		set_string(l, dst, s);
	else
		parse_path(l, e, name, v, dst);
}

/* HOST:PORT or [IPV6]:PORT; the port may be 0 (any free port, for tests). */
static void parse_listen(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			 void *dst)
{
	const char *s = want_string(l, name, v), *why;

	if (!s)
		return;
	if (broker_parse_listen(s, NULL, NULL, &why) != BROKER_OK) {
		cfg_error(l, v, "%s: '%.200s': %s", name, s, why);
		return;
	}
	set_string(l, dst, s);
}

static void parse_redis_url(struct loader *l, const struct key_entry *e, const char *name,
			    const struct doc_node *v, void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	if (strncmp(s, "redis://", 8) != 0 || !s[8] || strchr("/:?#", s[8]) || strpbrk(s, " \t\r\n")) {
		cfg_error(l, v, "%s: must be a redis://HOST[:PORT] URL, not '%.200s'", name, s);
		return;
	}
	set_string(l, dst, s);
}

static void parse_region(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			 void *dst)
{
	const char *s = want_string(l, name, v);

	if (!s)
		return;
	if (strlen(s) > 32 || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(s)) {
		cfg_error(l, v, "%s: not an AWS region name: '%.64s'", name, s);
		return;
	}
	set_string(l, dst, s);
	if (!l->cfg->aws_profile)
		l->cfg->aws_pos = (struct diag_pos){v->line, v->col};
}

static void parse_aws_profile(struct loader *l, const struct key_entry *e, const char *name,
			      const struct doc_node *v, void *dst)
{
	parse_string(l, e, name, v, dst);
	l->cfg->aws_pos = (struct diag_pos){v->line, v->col}; /* errors about the identity point here */
}

/* A list of non-empty strings: the element type is checked item by item so
 * every bad item is reported where it is. */
static bool want_list(struct loader *l, const char *name, const struct doc_node *v)
{
	if (v->kind != DOC_SEQ) {
		cfg_error(l, v, "%s: must be a list", name);
		return false;
	}
	if (v->n == 0) {
		cfg_error(l, v, "%s: must not be empty", name);
		return false;
	}
	if (v->n > CONFIG_MAX_LIST) {
		cfg_error(l, v, "%s: more than %d entries", name, CONFIG_MAX_LIST);
		return false;
	}
	return true;
}

static void parse_signing_keys(struct loader *l, const struct key_entry *e, const char *name,
			       const struct doc_node *v, void *dst)
{
	struct broker_config *cfg = l->cfg;
	char item[96];

	if (!want_list(l, name, v))
		return;
	if (v->n == 0 || v->n > SIGNING_KEYS_MAX) {
		cfg_error(l, v, "%s: needs 1 to %d key files, not %zu", name, SIGNING_KEYS_MAX, v->n);
		return;
	}
	cfg->signing_keys = calloc(v->n, sizeof(*cfg->signing_keys));
	cfg->signing_key_pos = calloc(v->n, sizeof(*cfg->signing_key_pos));
	if (!cfg->signing_keys || !cfg->signing_key_pos) {
		l->nomem = true;
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		const char *s;
		char *p;

		snprintf(item, sizeof(item), "%s[%zu]", name, i);
		if (!(s = want_string(l, item, v->items[i])) || !(p = resolve_path(l, s)))
			continue;
		if (!check_secret_file(l, item, v->items[i], p)) {
			free(p);
			continue;
		}
		cfg->signing_key_pos[cfg->n_signing_keys] = (struct diag_pos){v->items[i]->line, v->items[i]->col};
		cfg->signing_keys[cfg->n_signing_keys++] = p;
	}
}

static void parse_audiences(struct loader *l, const struct key_entry *e, const char *name,
			    const struct doc_node *v, void *dst)
{
	struct broker_issuer_config *iss = dst;
	char item[96];

	if (!want_list(l, name, v))
		return;
	iss->audiences = calloc(v->n, sizeof(*iss->audiences));
	if (!iss->audiences) {
		l->nomem = true;
		return;
	}
	for (size_t i = 0; i < v->n; i++) {
		const char *s;

		snprintf(item, sizeof(item), "%s[%zu]", name, i);
		if ((s = want_string(l, item, v->items[i])) && (iss->audiences[iss->n_audiences] = dup_or_fail(l, s)))
			iss->n_audiences++;
	}
}

static void parse_algorithms(struct loader *l, const struct key_entry *e, const char *name,
			     const struct doc_node *v, void *dst)
{
	unsigned algs = 0;
	bool bad = false;
	char item[96];

	if (!want_list(l, name, v))
		return;
	for (size_t i = 0; i < v->n; i++) {
		const char *s;
		unsigned bit;

		snprintf(item, sizeof(item), "%s[%zu]", name, i);
		if (!(s = want_string(l, item, v->items[i]))) {
			bad = true;
			continue;
		}
		bit = broker_alg_from_name(s);
		if (bit) {
			algs |= bit;
			continue;
		}
		bad = true;
		if (strcasecmp(s, "none") == 0)
			cfg_error(l, v->items[i], "%s: 'none' is not allowed: unsigned tokens prove nothing", item);
		else if (strcmp(s, "HS256") == 0 || strcmp(s, "HS384") == 0 || strcmp(s, "HS512") == 0)
			cfg_error(l, v->items[i],
				  "%s: '%s' is not allowed: HMAC needs a shared secret, an OIDC issuer publishes public keys",
				  item, s);
		else
			cfg_error(l, v->items[i],
				  "%s: unknown algorithm '%.64s' (known: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384)",
				  item, s);
	}
	if (!bad)
		*(unsigned *)dst = algs;
}

static void parse_deny(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		       void *dst)
{
	if (v->kind != DOC_MAP) {
		cfg_error(l, v, "%s: must be a mapping of claim conditions", name);
		return;
	}
	*(const struct doc_node **)dst = v;
}

/* ---- tables ---- */

#define KEY_END {NULL, NULL, 0, false, 0, 0}
#define CFG(field) offsetof(struct broker_config, field)
#define ISS(field) offsetof(struct broker_issuer_config, field)

static void parse_tls(struct loader *, const struct key_entry *, const char *, const struct doc_node *, void *);
static void parse_section(struct loader *, const struct key_entry *, const char *, const struct doc_node *, void *);
static void parse_issuers(struct loader *, const struct key_entry *, const char *, const struct doc_node *, void *);
static void parse_rate_limits(struct loader *, const struct key_entry *, const char *, const struct doc_node *,
			      void *);
static void parse_aws(struct loader *, const struct key_entry *, const char *, const struct doc_node *, void *);

static const struct key_entry tls_keys[] = {
	{"cert", parse_existing_file, CFG(tls_cert), false, 0, 0},
	{"key", parse_secret_file, CFG(tls_key), false, 0, 0},
	KEY_END,
};

static const struct key_entry signing_keys[] = {
	{"keys", parse_signing_keys, 0, true, 0, 0},
	KEY_END,
};

static const struct key_entry issuer_keys[] = {
	{"name", parse_string, ISS(name), true, 0, 0},
	{"issuer", parse_issuer_url, ISS(issuer), true, 0, 0},
	{"jwks_uri", parse_url, ISS(jwks_uri), false, 0, 0},
	{"audiences", parse_audiences, 0, false, 0, 0},
	{"algorithms", parse_algorithms, ISS(algorithms), false, 0, 0},
	{"clock_skew", parse_duration, ISS(clock_skew), false, 0, 300},
	{"max_token_age", parse_duration, ISS(max_token_age), false, 1, 86400},
	{"jwks_refresh", parse_duration, ISS(jwks_refresh), false, 60, 86400},
	{"jwks_min_refetch", parse_duration, ISS(jwks_min_refetch), false, 1, 3600},
	{"ca_file", parse_existing_file, ISS(ca_file), false, 0, 0},
	{"single_use", parse_bool, ISS(single_use), false, 0, 0},
	{"deny", parse_deny, ISS(deny), false, 0, 0},
	KEY_END,
};

static const struct key_entry audit_keys[] = {
	{"path", parse_audit_path, CFG(audit_path), false, 0, 0},
	{"sync", parse_audit_sync, CFG(audit_sync), false, 0, 0},
	KEY_END,
};

static const struct key_entry limits_keys[] = {
	{"max_body", parse_size, CFG(max_body), false, 1024, 1 << 20},
	{"max_ttl", parse_duration, CFG(max_ttl), false, 60, 43200},
	KEY_END,
};

static const struct key_entry aws_keys[] = {
	{"sts_endpoint", parse_url, CFG(aws_sts_endpoint), false, 0, 0},
	{"region", parse_region, CFG(aws_region), true, 0, 0},
	{"profile", parse_aws_profile, CFG(aws_profile), false, 0, 0},
	KEY_END,
};

static const struct key_entry replay_keys[] = {
	{"redis", parse_redis_url, CFG(replay_redis), true, 0, 0},
	KEY_END,
};

static const struct key_entry server_keys[] = {
	{"threads", parse_uint, CFG(threads), false, 1, 1024},
	{"max_connections", parse_uint, CFG(max_connections), false, 1, 1000000},
	{"per_ip_connections", parse_uint, CFG(per_ip_connections), false, 0, 1000000},
	{"connection_timeout", parse_duration, CFG(connection_timeout), false, 1, 3600},
	{"request_deadline", parse_duration, CFG(request_deadline), false, 1, 3600},
	KEY_END,
};

static const struct key_entry per_ip_keys[] = {
	{"rate", parse_rate, CFG(rate_per_ip), true, 0, 1000000},
	{"burst", parse_rate, CFG(burst_per_ip), false, 1, 1000000},
	KEY_END,
};

static const struct key_entry per_subject_keys[] = {
	{"rate", parse_rate, CFG(rate_per_subject), true, 0, 1000000},
	{"burst", parse_rate, CFG(burst_per_subject), false, 1, 1000000},
	KEY_END,
};

static const struct key_entry rate_limit_keys[] = {
	{"per_ip", parse_rate_limits, 0, false, 0, 0},
	{"per_subject", parse_rate_limits, 0, false, 0, 0},
	KEY_END,
};

/* Sections find their own table by dotted name (section_tables below). */
static const struct key_entry top_keys[] = {
	{"listen", parse_listen, CFG(listen), false, 0, 0},
	{"public_url", parse_url, CFG(public_url), true, 0, 0},
	{"tls", parse_tls, 0, false, 0, 0},
	{"signing", parse_section, 0, true, 0, 0},
	{"issuers", parse_issuers, 0, false, 0, 0},
	{"policies", parse_path, CFG(policies_dir), false, 0, 0},
	{"audit", parse_section, 0, false, 0, 0},
	{"limits", parse_section, 0, false, 0, 0},
	{"aws", parse_aws, 0, false, 0, 0},
	{"replay", parse_section, 0, false, 0, 0},
	{"server", parse_section, 0, false, 0, 0},
	{"rate_limits", parse_section, 0, false, 0, 0},
	KEY_END,
};

static const struct {
	const char *key;
	const struct key_entry *table;
} section_tables[] = {
	{"tls", tls_keys},       {"signing", signing_keys}, {"audit", audit_keys},
	{"limits", limits_keys}, {"aws", aws_keys},         {"replay", replay_keys},
	{"server", server_keys}, {"rate_limits", rate_limit_keys},
	{"rate_limits.per_ip", per_ip_keys}, {"rate_limits.per_subject", per_subject_keys},
};

static const struct key_entry *section_table(const char *name)
{
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(section_tables); i++)
		if (strcmp(section_tables[i].key, name) == 0)
			return section_tables[i].table;
	return NULL;
}

/* ---- the dispatcher ---- */

/* Optimal string alignment distance: a swapped pair of letters ("paht")
 * counts as one edit, as it is one slip of the fingers. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), d[3][65];
	size_t *prev2 = d[0], *prev = d[1], *cur = d[2];

	if (la > 64 || lb > 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t *t;

		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t best = prev[j - 1] + (a[i - 1] != b[j - 1]);

			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (cur[j - 1] + 1 < best)
				best = cur[j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < best)
				best = prev2[j - 2] + 1;
			cur[j] = best;
		}
		t = prev2;
		prev2 = prev;
		prev = cur;
		cur = t;
	}
	return prev[lb];
}

static const char *closest_key(const struct key_entry *table, const char *key)
{
	const char *best = NULL;
	size_t best_d = SIZE_MAX, len = strlen(key);

	for (const struct key_entry *e = table; e->key; e++) {
		size_t dist = edit_distance(key, e->key);

		if (dist < best_d) {
			best_d = dist;
			best = e->key;
		}
	}
	/* close enough to be a typo, not a different word */
	return best && best_d <= (len < 6 ? 1 : len < 12 ? 2 : 3) ? best : NULL;
}

/* section: "" at the top level, else the dotted name used in messages. */
static void parse_map(struct loader *l, const struct doc_node *map, const struct key_entry *table, void *base,
		      const char *section)
{
	char name[160];

	if (map->kind != DOC_MAP) {
		if (*section)
			cfg_error(l, map, "%s: must be a mapping", section);
		else
			cfg_error(l, map, "configuration must be a mapping");
		return;
	}
	for (size_t i = 0; i < map->n; i++) {
		const struct doc_node *k = map->keys[i];
		const struct key_entry *e;
		const char *hint;

		for (e = table; e->key; e++)
			if (strlen(e->key) == k->len && memcmp(e->key, k->str, k->len) == 0)
				break;
		if (!e->key) {
			hint = strlen(k->str) == k->len ? closest_key(table, k->str) : NULL;
			if (hint)
				cfg_error(l, k, "unknown key '%.64s'%s%s (did you mean '%s'?)", k->str, *section ? " in " : "",
					  section, hint);
			else
				cfg_error(l, k, "unknown key '%.64s'%s%s", k->str, *section ? " in " : "", section);
			continue;
		}
		snprintf(name, sizeof(name), "%s%s%s", section, *section ? "." : "", e->key);
		e->parse(l, e, name, map->items[i], (char *)base + e->offset);
	}
	for (const struct key_entry *e = table; e->key; e++)
		if (e->required && !doc_map_get(map, e->key)) {
			if (*section)
				cfg_error(l, map, "%s: missing required key '%s'", section, e->key);
			else
				cfg_error(l, map, "missing required key '%s'", e->key);
		}
}

static void parse_section(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			  void *dst)
{
	parse_map(l, v, section_table(name), l->cfg, name);
}

static void parse_tls(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		      void *dst)
{
	l->tls_node = v;
	parse_section(l, e, name, v, dst);
}

static void parse_aws(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
		      void *dst)
{
	l->aws_set = true;
	parse_section(l, e, name, v, dst);
}

static void parse_rate_limits(struct loader *l, const struct key_entry *e, const char *name,
			      const struct doc_node *v, void *dst)
{
	if (strcmp(name, "rate_limits.per_ip") == 0)
		l->per_ip_node = v;
	else
		l->per_subject_node = v;
	parse_section(l, e, name, v, dst);
}

void config_issuer_defaults(struct broker_issuer_config *iss)
{
	iss->algorithms = BROKER_ALG_RS256 | BROKER_ALG_ES256;
	iss->clock_skew = 60;
	iss->max_token_age = 900;
	iss->jwks_refresh = 3600;
	iss->jwks_min_refetch = 30;
}

void config_defaults(struct broker_config *cfg)
{
	cfg->audit_sync = BROKER_AUDIT_SYNC_ALWAYS;
	cfg->max_body = 16 * 1024;
	cfg->max_ttl = 3600;
	/* A worker blocked in an STS call or a JWKS refetch stalls its
	 * connections; several per core keep the others serving. (Waiting for
	 * the audit fdatasync parks the connection, not the worker.) Cores are
	 * those the process may run on: a broker pinned to 2 of 64 CPUs wants 8. */
	cfg->threads = broker_usable_cpus() * 4 < 1024 ? broker_usable_cpus() * 4 : 1024;
	cfg->max_connections = 1024;
	cfg->per_ip_connections = 64;
	cfg->connection_timeout = 10;
	cfg->request_deadline = 15;
}

static void parse_issuers(struct loader *l, const struct key_entry *e, const char *name, const struct doc_node *v,
			  void *dst)
{
	struct broker_config *cfg = l->cfg;
	char section[64];

	if (v->kind != DOC_SEQ) {
		cfg_error(l, v, "%s: must be a list", name);
		return;
	}
	if (v->n > CONFIG_MAX_ISSUERS) {
		cfg_error(l, v, "%s: more than %d entries", name, CONFIG_MAX_ISSUERS);
		return;
	}
	if (v->n == 0)
		return;
	cfg->issuers = calloc(v->n, sizeof(*cfg->issuers));
	if (!cfg->issuers) {
		l->nomem = true;
		return;
	}
	cfg->n_issuers = v->n;
	for (size_t i = 0; i < v->n; i++) {
		struct broker_issuer_config *iss = &cfg->issuers[i];
		const struct doc_node *item = v->items[i];

		config_issuer_defaults(iss);
		iss->file = cfg->path;
		iss->line = item->line;
		iss->col = item->col;
		snprintf(section, sizeof(section), "issuers[%zu]", i);
		parse_map(l, item, issuer_keys, iss, section);
		if (!iss->name)
			continue;
		for (size_t j = 0; j < i; j++) {
			if (cfg->issuers[j].name && strcmp(cfg->issuers[j].name, iss->name) == 0) {
				const struct doc_node *first = doc_map_get(v->items[j], "name");

				cfg_error(l, doc_map_get(item, "name"),
					  "%s.name: duplicate issuer name '%.64s' (first defined at %d:%d)", section,
					  iss->name, first->line, first->col);
				break;
			}
		}
	}
}

/* ---- checks across keys, after the whole file was read ---- */

/* What serve hands to the TLS library at start, read now so that a wrong
 * file is named with its position rather than as a listener that failed. */
static void check_tls_pair(struct loader *l, const char *cert_path, const char *key_path)
{
	const struct doc_node *cn = doc_map_get(l->tls_node, "cert"), *kn = doc_map_get(l->tls_node, "key");
	BIO *b;
	X509 *cert;
	EVP_PKEY *key;

	if (access(cert_path, R_OK) != 0 || access(key_path, R_OK) != 0)
		return; /* said already */
	b = BIO_new_file(cert_path, "r");
	cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	if (!cert) {
		ERR_clear_error();
		cfg_error(l, cn, "tls.cert: '%.200s' holds no PEM certificate", cert_path);
		return;
	}
	b = BIO_new_file(key_path, "r");
	key = b ? PEM_read_bio_PrivateKey(b, NULL, broker_pem_no_passphrase, NULL) : NULL;
	BIO_free(b);
	if (!key)
		cfg_error(l, kn, "tls.key: '%.200s' holds no PEM private key (encrypted keys are not supported)", key_path);
	else if (X509_check_private_key(cert, key) != 1)
		cfg_error(l, kn, "tls.key: '%.200s' is not the key of the certificate in tls.cert", key_path);
	EVP_PKEY_free(key);
	X509_free(cert);
	ERR_clear_error();
}

static void finish(struct loader *l, const struct doc_node *root)
{
	struct broker_config *cfg = l->cfg;

	/* tls: {} must not quietly mean plain HTTP */
	if (l->tls_node && l->tls_node->kind == DOC_MAP &&
	    (!doc_map_get(l->tls_node, "cert") || !doc_map_get(l->tls_node, "key")))
		cfg_error(l, l->tls_node, "tls: needs both 'cert' and 'key'");
	else if (cfg->tls_cert && cfg->tls_key)
		check_tls_pair(l, cfg->tls_cert, cfg->tls_key);
	/* default burst: one second's worth of requests, at least one */
	if (l->per_ip_node && cfg->burst_per_ip == 0)
		cfg->burst_per_ip = cfg->rate_per_ip < 1 ? 1 : (double)(long long)(cfg->rate_per_ip + 0.999999);
	if (l->per_subject_node && cfg->burst_per_subject == 0)
		cfg->burst_per_subject = cfg->rate_per_subject < 1 ? 1 : (double)(long long)(cfg->rate_per_subject + 0.999999);
	if (l->aws_set && cfg->aws_region && !cfg->aws_sts_endpoint &&
	    asprintf(&cfg->aws_sts_endpoint, "https://sts.%s.amazonaws.com", cfg->aws_region) < 0) {
		cfg->aws_sts_endpoint = NULL;
		l->nomem = true;
	}
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		struct broker_issuer_config *iss = &cfg->issuers[i];

		if (iss->audiences || !cfg->public_url)
			continue;
		iss->audiences = calloc(1, sizeof(*iss->audiences));
		if (!iss->audiences || !(iss->audiences[0] = strdup(cfg->public_url))) {
			l->nomem = true;
			continue;
		}
		iss->n_audiences = 1;
	}
	(void)root;
}

static char *config_dir(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return NULL; /* relative to the working directory, as the file itself */
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}


static enum broker_err load(const char *path, struct diag *d, bool partial, struct broker_config **ret)
{
	struct loader l = {.path = path, .d = d};
	struct broker_config *cfg = calloc(1, sizeof(*cfg));
	size_t errors_before = diag_errors(d);
	enum broker_err err = BROKER_ERR_NOMEM;

	if (!cfg)
		goto out;
	l.cfg = cfg;
	cfg->path = strdup(path);
	cfg->listen = strdup("127.0.0.1:8080");
	cfg->audit_path = strdup("-");
	if (!cfg->path || !cfg->listen || !cfg->audit_path)
		goto out;
	if (strchr(path, '/') && !(l.dir = config_dir(path)))
		goto out;
	config_defaults(cfg);

	err = doc_load(path, d, &cfg->doc);
	if (err != BROKER_OK)
		goto out;
	if (cfg->doc->n_docs == 0) {
		diag_error(d, path, 1, 1, "empty configuration");
		err = BROKER_ERR_CONFIG;
		goto out;
	}
	if (cfg->doc->n_docs > 1)
		cfg_error(&l, cfg->doc->docs[1], "configuration must be a single YAML document");
	parse_map(&l, cfg->doc->docs[0], top_keys, cfg, "");
	finish(&l, cfg->doc->docs[0]);
	err = l.nomem ? BROKER_ERR_NOMEM : diag_errors(d) > errors_before ? BROKER_ERR_CONFIG : BROKER_OK;
out:
	free(l.dir);
	if (err == BROKER_OK || (partial && err == BROKER_ERR_CONFIG && cfg && cfg->doc)) {
		*ret = cfg;
		cfg = NULL;
	}
	config_free(cfg);
	return err;
}

enum broker_err config_load(const char *path, struct diag *d, struct broker_config **ret)
{
	return load(path, d, false, ret);
}

enum broker_err config_load_partial(const char *path, struct diag *d, struct broker_config **ret)
{
	return load(path, d, true, ret);
}

void config_free(struct broker_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->path);
	free(cfg->listen);
	free(cfg->public_url);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	for (size_t i = 0; i < cfg->n_signing_keys; i++)
		free(cfg->signing_keys[i]);
	free(cfg->signing_keys);
	free(cfg->signing_key_pos);
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		struct broker_issuer_config *iss = &cfg->issuers[i];

		free(iss->name);
		free(iss->issuer);
		free(iss->jwks_uri);
		for (size_t j = 0; j < iss->n_audiences; j++)
			free(iss->audiences[j]);
		free(iss->audiences);
		free(iss->ca_file);
	}
	free(cfg->issuers);
	free(cfg->policies_dir);
	free(cfg->audit_path);
	free(cfg->aws_sts_endpoint);
	free(cfg->aws_region);
	free(cfg->aws_profile);
	free(cfg->replay_redis);
	doc_file_free(cfg->doc);
	free(cfg);
}

const struct broker_issuer_config *config_find_issuer(const struct broker_config *cfg, const char *name)
{
	if (!cfg || !name)
		return NULL;
	for (size_t i = 0; i < cfg->n_issuers; i++)
		if (cfg->issuers[i].name && strcmp(cfg->issuers[i].name, name) == 0)
			return &cfg->issuers[i];
	return NULL;
}
