/* SPDX-License-Identifier: Apache-2.0 */
/* Config loader, table-driven: each row is a config text, written into a
 * temporary directory next to key files of known modes, and either the exact
 * diagnostics expected (every line, in order) or a check of the loaded
 * values. In expected lines "@F" stands for the config file's path and "@D"
 * for its directory. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "check.h"
#include "cibroker/config.h"
#include "cibroker/util.h"

/* Rows that expect errors leave `check` out. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static char dir[64];

struct row {
	const char *file; /* name in dir; ".json" picks JSON */
	const char *text; /* NULL: do not create the file */
	const char *expect[24];
	void (*check)(const struct broker_config *c);
};

#define BASE "public_url: https://broker.example.com\nsigning: {keys: [k600.pem]}\n"

static char *expand(const char *tmpl, const char *path)
{
	size_t cap = strlen(tmpl) * 4 + 512;
	char *out = malloc(cap), *o = out;

	for (const char *p = tmpl; *p; p++) {
		if (p[0] == '@' && (p[1] == 'F' || p[1] == 'D')) {
			const char *s = p[1] == 'F' ? path : dir;

			memcpy(o, s, strlen(s));
			o += strlen(s);
			p++;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static const char *path_in(const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static void write_file(const char *name, const char *text, mode_t mode)
{
	const char *p = path_in(name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fchmod(fd, mode) < 0) {
		perror(p);
		exit(2);
	}
	close(fd);
}

/* A self-signed P-256 certificate and its key, made now: the loader reads
 * the TLS pair, and no private key is committed. */
static void write_tls_pair(const char *cert_name, const char *key_name)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f;

	if (!key || !x || !X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), 0) || !X509_gmtime_adj(X509_getm_notAfter(x), 86400) ||
	    !X509_set_pubkey(x, key) ||
	    !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
					-1, -1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(x)) || !X509_sign(x, key, EVP_sha256()))
		exit(2);
	if (!(f = fopen(path_in(cert_name), "w")) || !PEM_write_X509(f, x) || fclose(f) != 0)
		exit(2);
	write_file(key_name, "", 0600);
	if (!(f = fopen(path_in(key_name), "w")) || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) ||
	    fclose(f) != 0)
		exit(2);
	X509_free(x);
	EVP_PKEY_free(key);
}

/* An encrypted PKCS#8 key: refused without a prompt, even on a terminal. */
static void write_encrypted_key(const char *name)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	FILE *f;

	write_file(name, "", 0600);
	if (!key || !(f = fopen(path_in(name), "w")) ||
	    !PEM_write_PKCS8PrivateKey(f, key, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"passphrase") ||
	    fclose(f) != 0)
		exit(2);
	EVP_PKEY_free(key);
}

static bool str_eq(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* ---- checks of successful loads ---- */

static void check_defaults(const struct broker_config *c)
{
	char *k = expand("@D/k600.pem", "");

	CHECK(str_eq(c->public_url, "https://broker.example.com"));
	CHECK(str_eq(c->listen, "127.0.0.1:8080"));
	CHECK(c->n_signing_keys == 1 && str_eq(c->signing_keys[0], k), "%s", c->signing_keys[0]);
	CHECK(!c->tls_cert && !c->tls_key && !c->policies_dir && c->n_issuers == 0);
	CHECK(str_eq(c->audit_path, "-") && c->audit_sync == BROKER_AUDIT_SYNC_ALWAYS);
	CHECK(c->max_body == 16384 && c->max_ttl == 3600);
	CHECK(!c->aws_sts_endpoint && !c->aws_region && !c->aws_profile && !c->replay_redis);
	CHECK(c->threads == (broker_usable_cpus() * 4 < 1024 ? broker_usable_cpus() * 4 : 1024) &&
	      c->max_connections == 1024 && c->per_ip_connections == 64);
	CHECK(c->connection_timeout == 10 && c->request_deadline == 15);
	CHECK(c->rate_per_ip == 0 && c->burst_per_ip == 0 && c->rate_per_subject == 0 && c->burst_per_subject == 0);
	CHECK(str_eq(c->path, path_in("ok.yaml")) || str_eq(c->path, path_in("ok.json")));
	free(k);
}

static void check_full(const struct broker_config *c)
{
	const struct broker_issuer_config *gh = config_find_issuer(c, "github"), *gl = config_find_issuer(c, "gitlab");
	char *s;

	CHECK(str_eq(c->listen, "[::]:8443"));
	CHECK(c->n_signing_keys == 2);
	s = expand("@D/k400.pem", "");
	CHECK(c->n_signing_keys == 2 && str_eq(c->signing_keys[1], s));
	free(s);
	s = expand("@D/tls.crt", "");
	CHECK(str_eq(c->tls_cert, s));
	free(s);
	s = expand("@D/policies", "");
	CHECK(str_eq(c->policies_dir, s), "%s", c->policies_dir);
	free(s);
	CHECK(str_eq(c->audit_path, "/var/log/cibroker/audit.jsonl") && c->audit_sync == BROKER_AUDIT_SYNC_NONE);
	CHECK(c->max_body == 32768 && c->max_ttl == 1800);
	CHECK(str_eq(c->aws_region, "eu-west-1") && str_eq(c->aws_sts_endpoint, "https://sts.eu-west-1.amazonaws.com"));
	CHECK(str_eq(c->aws_profile, "deploy"));
	CHECK(str_eq(c->replay_redis, "redis://127.0.0.1:6379"));
	CHECK(c->threads == 4 && c->max_connections == 200 && c->per_ip_connections == 0);
	CHECK(c->connection_timeout == 5 && c->request_deadline == 120);
	CHECK(c->rate_per_ip == 2.5 && c->burst_per_ip == 3, "%f %f", c->rate_per_ip, c->burst_per_ip);
	CHECK(c->rate_per_subject == 10 && c->burst_per_subject == 20);
	CHECK(c->n_issuers == 2 && gh && gl && !config_find_issuer(c, "GitHub") && !config_find_issuer(c, NULL));
	if (!gh || !gl)
		return;
	CHECK(str_eq(gh->issuer, "https://token.actions.githubusercontent.com"));
	CHECK(!gh->jwks_uri && gh->n_audiences == 1 && str_eq(gh->audiences[0], "https://broker.example.com"));
	CHECK(gh->algorithms == BROKER_ALG_RS256 && gh->clock_skew == 300 && gh->max_token_age == 600);
	CHECK(gh->jwks_refresh == 7200 && gh->jwks_min_refetch == 10 && gh->single_use);
	s = expand("@D/ca.pem", "");
	CHECK(str_eq(gh->ca_file, s));
	free(s);
	CHECK(gh->deny && gh->deny->kind == DOC_MAP && doc_map_get(gh->deny, "actor") &&
	      doc_map_get(gh->deny, "actor")->kind == DOC_SEQ);
	CHECK(str_eq(gh->file, c->path) && gh->line > 1 && gh->col > 0);
	CHECK(str_eq(gl->jwks_uri, "http://127.0.0.1:9000/jwks"));
	CHECK(gl->n_audiences == 2 && str_eq(gl->audiences[1], "b"));
	CHECK(gl->algorithms == (BROKER_ALG_ES256 | BROKER_ALG_PS384));
	CHECK(gl->clock_skew == 60 && gl->max_token_age == 900 && gl->jwks_refresh == 3600 &&
	      gl->jwks_min_refetch == 30 && !gl->single_use && !gl->deny && !gl->ca_file);
}

static void check_loopback(const struct broker_config *c)
{
	CHECK(c->n_issuers == 4 && str_eq(c->public_url, "http://127.0.0.1:8080"));
	CHECK(str_eq(c->aws_sts_endpoint, "http://localhost:4566"));
	CHECK(c->n_signing_keys == 1 && c->signing_keys[0][0] == '/');
}

static void check_burst_default(const struct broker_config *c)
{
	CHECK(c->rate_per_ip == 0.5 && c->burst_per_ip == 1);
	CHECK(c->rate_per_subject == 4 && c->burst_per_subject == 4);
	CHECK(c->max_body == 1024 && c->max_ttl == 60);
}

static const char full_yaml[] =
	"listen: \"[::]:8443\"\n"
	"public_url: https://broker.example.com\n"
	"tls: {cert: tls.crt, key: tls.key}\n"
	"signing:\n"
	"  keys: [k600.pem, k400.pem]\n"
	"issuers:\n"
	"  - name: github\n"
	"    issuer: https://token.actions.githubusercontent.com\n"
	"    algorithms: [RS256]\n"
	"    clock_skew: 5m\n"
	"    max_token_age: 600\n"
	"    jwks_refresh: 2h\n"
	"    jwks_min_refetch: \"10s\"\n"
	"    ca_file: ca.pem\n"
	"    single_use: true\n"
	"    deny: {actor: [\"evil-bot\"]}\n"
	"  - name: gitlab\n"
	"    issuer: https://gitlab.example.com\n"
	"    jwks_uri: http://127.0.0.1:9000/jwks\n"
	"    audiences: [a, b]\n"
	"    algorithms: [ES256, PS384]\n"
	"policies: policies\n"
	"audit: {path: /var/log/cibroker/audit.jsonl, sync: none}\n"
	"limits: {max_body: 32KiB, max_ttl: 30m}\n"
	"aws: {region: eu-west-1, profile: deploy}\n"
	"replay: {redis: \"redis://127.0.0.1:6379\"}\n"
	"server: {threads: 4, max_connections: 200, per_ip_connections: 0, connection_timeout: 5s,\n"
	"         request_deadline: 2m}\n"
	"rate_limits:\n"
	"  per_ip: {rate: 2.5}\n"
	"  per_subject: {rate: 10, burst: 20}\n";

static const char full_json[] =
	"{\n"
	"  \"listen\": \"[::]:8443\",\n"
	"  \"public_url\": \"https://broker.example.com\",\n"
	"  \"tls\": {\"cert\": \"tls.crt\", \"key\": \"tls.key\"},\n"
	"  \"signing\": {\"keys\": [\"k600.pem\", \"k400.pem\"]},\n"
	"  \"issuers\": [\n"
	"    {\"name\": \"github\", \"issuer\": \"https://token.actions.githubusercontent.com\",\n"
	"     \"algorithms\": [\"RS256\"], \"clock_skew\": \"5m\", \"max_token_age\": 600, \"jwks_refresh\": \"2h\",\n"
	"     \"jwks_min_refetch\": 10, \"ca_file\": \"ca.pem\", \"single_use\": true, \"deny\": {\"actor\": [\"evil-bot\"]}},\n"
	"    {\"name\": \"gitlab\", \"issuer\": \"https://gitlab.example.com\", \"jwks_uri\": \"http://127.0.0.1:9000/jwks\",\n"
	"     \"audiences\": [\"a\", \"b\"], \"algorithms\": [\"ES256\", \"PS384\"]}\n"
	"  ],\n"
	"  \"policies\": \"policies\",\n"
	"  \"audit\": {\"path\": \"/var/log/cibroker/audit.jsonl\", \"sync\": \"none\"},\n"
	"  \"limits\": {\"max_body\": 32768, \"max_ttl\": 1800},\n"
	"  \"aws\": {\"region\": \"eu-west-1\", \"profile\": \"deploy\"},\n"
	"  \"replay\": {\"redis\": \"redis://127.0.0.1:6379\"},\n"
	"  \"server\": {\"threads\": 4, \"max_connections\": 200, \"per_ip_connections\": 0,\n"
	"             \"connection_timeout\": 5, \"request_deadline\": \"2m\"},\n"
	"  \"rate_limits\": {\"per_ip\": {\"rate\": 2.5}, \"per_subject\": {\"rate\": 10, \"burst\": 20}}\n"
	"}\n";

static const struct row rows[] = {
	/* ---- successful loads ---- */
	{"ok.yaml", BASE, {NULL}, check_defaults},
	{"ok.json", "{\"public_url\": \"https://broker.example.com\", \"signing\": {\"keys\": [\"k600.pem\"]}}",
	 {NULL}, check_defaults},
	{"full.yaml", full_yaml, {NULL}, check_full},
	{"full.json", full_json, {NULL}, check_full},
	{"loop.yaml",
	 "public_url: http://127.0.0.1:8080\n"
	 "signing: {keys: [\"@D/k600.pem\"]}\n"
	 "issuers:\n"
	 "  - {name: a, issuer: \"http://localhost:9000\"}\n"
	 "  - {name: b, issuer: \"http://[::1]:9000/x\"}\n"
	 "  - {name: c, issuer: \"http://127.1.2.3\"}\n"
	 "  - {name: d, issuer: \"https://example.com\", jwks_uri: \"http://localhost/jwks\"}\n"
	 "aws: {region: us-east-1, sts_endpoint: \"http://localhost:4566\"}\n",
	 {NULL}, check_loopback},
	{"burst.yaml",
	 BASE "rate_limits: {per_ip: {rate: 0.5}, per_subject: {rate: 4}}\nlimits: {max_body: 1024, max_ttl: 1m}\n",
	 {NULL}, check_burst_default},

	/* ---- file-level problems ---- */
	{"missing.yaml", NULL, {"@F: cannot read: no such file"}},
	{"empty.yaml", "", {"@F:1:1: empty configuration"}},
	{"comment.yaml", "# nothing\n", {"@F:1:1: empty configuration"}},
	{"list.yaml", "- a\n- b\n", {"@F:1:1: configuration must be a mapping"}},
	{"scalar.yaml", "hello\n", {"@F:1:1: configuration must be a mapping"}},
	{"twodocs.yaml", BASE "---\nlisten: 1.2.3.4:80\n", {"@F:4:1: configuration must be a single YAML document"}},
	{"tabs.yaml", BASE "limits:\n\tmax_body: 1\n",
	 {"@F:4:1: found character that cannot start any token (while scanning for the next token at 4:1)"}},
	{"garbage.yaml", BASE "issuers: [\n", {"@F:4:1: did not find expected node content (while parsing a flow node at 4:1)"}},
	{"garbage2.yaml", "public_url: \"https://x\nsigning: 1\n",
	 {"@F:3:1: found unexpected end of stream (while scanning a quoted scalar at 1:13)"}},
	{"anchor.yaml", BASE "listen: &l 127.0.0.1:1\naudit: {path: *l}\n",
	 {"@F:3:9: anchors are not supported (&l)", "@F:4:15: aliases are not supported (*l)"}},
	{"tag.yaml", BASE "listen: !!str 127.0.0.1:1\n", {"@F:3:9: tags are not supported (tag:yaml.org,2002:str)"}},
	{"dupkey.yaml", BASE "listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n",
	 {"@F:4:1: duplicate key 'listen' (first defined at 3:1)"}},
	{"dupkey2.yaml", BASE "issuers:\n  - name: a\n    issuer: https://a\n    name: b\n",
	 {"@F:6:5: duplicate key 'name' (first defined at 4:5)"}},
	{"dup.json", "{\"public_url\": \"https://a\",\n \"public_url\": \"https://b\"}",
	 {"@F:2:13: invalid JSON: duplicate object key near '\"public_url\"'"}},
	{"bad.json", "{\"public_url\": \"https://a\",}", {"@F:1:28: invalid JSON: string or '}' expected near '}'"}},
	{"yaml-as.json", "public_url: https://a\n", {"@F:1:6: invalid JSON: invalid token near 'public'"}},

	/* ---- unknown keys, in every section, all reported in one run ---- */
	{"unknown.yaml",
	 BASE "polices: /x\n"
	      "frobnicate: 1\n"
	      "tls: {cert: tls.crt, key: tls.key, ca: x}\n"
	      "signing2: {}\n"
	      "issuers:\n"
	      "  - name: a\n"
	      "    isuer: https://a\n"
	      "    issuer: https://a\n"
	      "    clock_skw: 1\n"
	      "    audience: [x]\n"
	      "audit: {paht: x}\n"
	      "limits: {max_bdy: 1}\n"
	      "aws: {region: us-east-1, endpoint: x}\n"
	      "replay: {redis: \"redis://r\", host: x}\n"
	      "server: {thread: 1}\n"
	      "rate_limits: {per_ipp: {}, per_ip: {rate: 1, brust: 2}, per_subject: {rate: 1, x: 1}}\n",
	 {"@F:3:1: unknown key 'polices' (did you mean 'policies'?)",
	  "@F:4:1: unknown key 'frobnicate'",
	  "@F:5:36: unknown key 'ca' in tls",
	  "@F:6:1: unknown key 'signing2' (did you mean 'signing'?)",
	  "@F:9:5: unknown key 'isuer' in issuers[0] (did you mean 'issuer'?)",
	  "@F:11:5: unknown key 'clock_skw' in issuers[0] (did you mean 'clock_skew'?)",
	  "@F:12:5: unknown key 'audience' in issuers[0] (did you mean 'audiences'?)",
	  "@F:13:9: unknown key 'paht' in audit (did you mean 'path'?)",
	  "@F:14:10: unknown key 'max_bdy' in limits (did you mean 'max_body'?)",
	  "@F:15:26: unknown key 'endpoint' in aws",
	  "@F:16:30: unknown key 'host' in replay",
	  "@F:17:10: unknown key 'thread' in server (did you mean 'threads'?)",
	  "@F:18:15: unknown key 'per_ipp' in rate_limits (did you mean 'per_ip'?)",
	  "@F:18:46: unknown key 'brust' in rate_limits.per_ip (did you mean 'burst'?)",
	  "@F:18:80: unknown key 'x' in rate_limits.per_subject"}},
	{"unknown.json",
	 "{\"public_url\": \"https://a\", \"signing\": {\"keys\": [\"k600.pem\"]},\n"
	 "  \"issuers\": [{\"name\": \"a\", \"issuer\": \"https://a\",\n"
	 "               \"max_token_ag\": 1}],\n"
	 "  \"Listen\": \"x\"}\n",
	 {"@F:3:16: unknown key 'max_token_ag' in issuers[0] (did you mean 'max_token_age'?)",
	  "@F:4:3: unknown key 'Listen' (did you mean 'listen'?)"}},

	/* ---- required keys: reported at the mapping that lacks them ---- */
	{"noreq.yaml", "listen: 127.0.0.1:1\n",
	 {"@F:1:1: missing required key 'public_url'", "@F:1:1: missing required key 'signing'"}},
	{"noreq2.yaml",
	 BASE "issuers:\n  - jwks_uri: https://a/jwks\n  - {name: b}\naws: {profile: p}\nreplay: {}\n"
	      "rate_limits: {per_ip: {burst: 2}}\nsigning2: 1\n",
	 {"@F:4:5: issuers[0]: missing required key 'name'", "@F:4:5: issuers[0]: missing required key 'issuer'",
	  "@F:5:5: issuers[1]: missing required key 'issuer'", "@F:6:6: aws: missing required key 'region'",
	  "@F:7:9: replay: missing required key 'redis'",
	  "@F:8:23: rate_limits.per_ip: missing required key 'rate'",
	  "@F:9:1: unknown key 'signing2' (did you mean 'signing'?)"}},
	{"nokeys.yaml", "public_url: https://a\nsigning: {}\n", {"@F:2:10: signing: missing required key 'keys'"}},

	/* ---- wrong types ---- */
	{"types.yaml",
	 "public_url: [https://a]\n"
	 "listen: 8080\n"
	 "tls: tls.crt\n"
	 "signing: {keys: k600.pem}\n"
	 "issuers: {name: a}\n"
	 "policies: {}\n"
	 "audit: {path: 1, sync: sometimes}\n"
	 "limits: {max_body: [1], max_ttl: {}}\n"
	 "aws: [us-east-1]\n"
	 "replay: {redis: 6379}\n"
	 "server: {threads: \"4\", max_connections: 1.5, per_ip_connections: -1, connection_timeout: true}\n",
	 {"@F:1:13: public_url: must be a string",
	  "@F:2:9: listen: must be a string",
	  "@F:3:6: tls: must be a mapping",
	  "@F:4:17: signing.keys: must be a list",
	  "@F:5:10: issuers: must be a list",
	  "@F:6:11: policies: must be a string",
	  "@F:7:15: audit.path: must be a string",
	  "@F:7:24: audit.sync: must be 'always' or 'none', not 'sometimes'",
	  "@F:8:20: limits.max_body: must be a size",
	  "@F:8:34: limits.max_ttl: must be a duration",
	  "@F:9:6: aws: must be a mapping",
	  "@F:10:17: replay.redis: must be a string",
	  "@F:11:19: server.threads: must be an integer",
	  "@F:11:41: server.max_connections: must be an integer",
	  "@F:11:66: server.per_ip_connections: must be between 0 and 1000000",
	  "@F:11:90: server.connection_timeout: invalid duration 'true' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)"}},
	{"types2.yaml",
	 BASE "rate_limits: {per_ip: {rate: fast}, per_subject: 3}\n"
	      "issuers:\n"
	      "  - name: [a]\n"
	      "    issuer: 5\n"
	      "    audiences: x\n"
	      "    single_use: \"true\"\n"
	      "    deny: [actor]\n"
	      "    ca_file: {}\n"
	      "  - name: b\n"
	      "    issuer: https://b\n"
	      "    single_use: yes\n"
	      "    audiences: [ok, 1, '', null]\n"
	      "    jwks_refresh: [1h]\n"
	      "  - name: ''\n"
	      "    issuer: https://c\n"
	      "    single_use: True\n"
	      "  - name:\n"
	      "    issuer: https://d\n"
	      "    audiences: []\n"
	      "  - 42\n",
	 {"@F:3:30: rate_limits.per_ip.rate: must be a number",
	  "@F:3:50: rate_limits.per_subject: must be a mapping",
	  "@F:5:11: issuers[0].name: must be a string",
	  "@F:6:13: issuers[0].issuer: must be a string",
	  "@F:7:16: issuers[0].audiences: must be a list",
	  "@F:8:17: issuers[0].single_use: must be true or false",
	  "@F:9:11: issuers[0].deny: must be a mapping of claim conditions",
	  "@F:10:14: issuers[0].ca_file: must be a string",
	  "@F:13:17: issuers[1].single_use: must be true or false",
	  "@F:14:21: issuers[1].audiences[1]: must be a string",
	  "@F:14:24: issuers[1].audiences[2]: must not be empty",
	  "@F:14:28: issuers[1].audiences[3]: must be a string",
	  "@F:15:19: issuers[1].jwks_refresh: must be a duration",
	  "@F:16:11: issuers[2].name: must not be empty",
	  "@F:18:17: issuers[2].single_use: must be true or false",
	  "@F:19:10: issuers[3].name: must be a string",
	  "@F:21:16: issuers[3].audiences: must not be empty",
	  "@F:22:5: issuers[4]: must be a mapping"}},

	/* ---- durations and sizes ---- */
	{"dur.yaml",
	 BASE "issuers:\n"
	      "  - name: a\n"
	      "    issuer: https://a\n"
	      "    clock_skew: 6m\n"
	      "    max_token_age: 1.5h\n"
	      "    jwks_refresh: 5x\n"
	      "    jwks_min_refetch: -1\n"
	      "  - name: b\n"
	      "    issuer: https://b\n"
	      "    clock_skew: 301\n"
	      "    max_token_age: 0\n"
	      "    jwks_refresh: 30s\n"
	      "    jwks_min_refetch: 2h\n"
	      "  - name: c\n"
	      "    issuer: https://c\n"
	      "    clock_skew: 5m\n"
	      "    max_token_age: \"\"\n"
	      "    jwks_refresh: 99999999999999999999\n"
	      "limits: {max_body: 16 KiB, max_ttl: 13h}\n"
	      "server: {request_deadline: 0}\n",
	 {"@F:6:17: issuers[0].clock_skew: must be at most 5m",
	  "@F:7:20: issuers[0].max_token_age: invalid duration '1.5h' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
	  "@F:8:19: issuers[0].jwks_refresh: invalid duration '5x' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
	  "@F:9:23: issuers[0].jwks_min_refetch: invalid duration '-1' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
	  "@F:12:17: issuers[1].clock_skew: must be at most 5m",
	  "@F:13:20: issuers[1].max_token_age: must be at least 1s",
	  "@F:14:19: issuers[1].jwks_refresh: must be at least 1m",
	  "@F:15:23: issuers[1].jwks_min_refetch: must be at most 1h",
	  "@F:19:20: issuers[2].max_token_age: invalid duration '' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
	  "@F:20:19: issuers[2].jwks_refresh: invalid duration '99999999999999999999' (integer seconds, or a number with s, m, h or d: 90s, 5m, 1h)",
	  "@F:21:20: limits.max_body: invalid size '16 KiB' (integer bytes, or a number with B, K/KiB/KB, M/MiB/MB or G/GiB/GB, all powers of 1024: 16KiB)",
	  "@F:21:37: limits.max_ttl: must be at most 12h",
	  "@F:22:28: server.request_deadline: must be at least 1s"}},
	{"size.yaml", BASE "limits: {max_body: 2MiB}\n", {"@F:3:20: limits.max_body: must be at most 1MiB"}},
	{"size2.yaml", BASE "limits: {max_body: 100}\n", {"@F:3:20: limits.max_body: must be at least 1KiB"}},
	{"size3.yaml", BASE "limits: {max_body: -5}\n",
	 {"@F:3:20: limits.max_body: invalid size '-5' (integer bytes, or a number with B, K/KiB/KB, M/MiB/MB or G/GiB/GB, all powers of 1024: 16KiB)"}},

	/* ---- https only, except loopback ---- */
	{"urls.yaml",
	 "public_url: http://broker.example.com\n"
	 "signing: {keys: [k600.pem]}\n"
	 "issuers:\n"
	 "  - {name: a, issuer: \"http://token.example.com\"}\n"
	 "  - {name: b, issuer: \"https://b\", jwks_uri: \"http://10.0.0.1/jwks\"}\n"
	 "  - {name: c, issuer: \"http://localhost.evil.com\"}\n"
	 "  - {name: d, issuer: \"http://user@127.0.0.1/\"}\n"
	 "  - {name: e, issuer: \"ftp://127.0.0.1/\"}\n"
	 "  - {name: f, issuer: \"https://\"}\n"
	 "  - {name: g, issuer: \"token.example.com\"}\n"
	 "  - {name: h, issuer: \"http://128.0.0.1\"}\n"
	 "  - {name: i, issuer: \"http://localhost:99999\"}\n"
	 "aws: {region: us-east-1, sts_endpoint: \"http://sts.amazonaws.com\"}\n",
	 {"@F:1:13: public_url: must be an https:// URL (http:// only for loopback hosts), not 'http://broker.example.com'",
	  "@F:4:23: issuers[0].issuer: must be an https:// URL (http:// only for loopback hosts), not 'http://token.example.com'",
	  "@F:5:46: issuers[1].jwks_uri: must be an https:// URL (http:// only for loopback hosts), not 'http://10.0.0.1/jwks'",
	  "@F:6:23: issuers[2].issuer: must be an https:// URL (http:// only for loopback hosts), not 'http://localhost.evil.com'",
	  "@F:7:23: issuers[3].issuer: must be an https:// URL (http:// only for loopback hosts), not 'http://user@127.0.0.1/'",
	  "@F:8:23: issuers[4].issuer: must be an https:// URL (http:// only for loopback hosts), not 'ftp://127.0.0.1/'",
	  "@F:9:23: issuers[5].issuer: must be an https:// URL (http:// only for loopback hosts), not 'https://'",
	  "@F:10:23: issuers[6].issuer: must be an https:// URL (http:// only for loopback hosts), not 'token.example.com'",
	  "@F:11:23: issuers[7].issuer: must be an https:// URL (http:// only for loopback hosts), not 'http://128.0.0.1'",
	  "@F:12:23: issuers[8].issuer: the port of 'http://localhost:99999' is not a number from 1 to 65535",
	  "@F:13:40: aws.sts_endpoint: must be an https:// URL (http:// only for loopback hosts), not 'http://sts.amazonaws.com'"}},

	/* ---- algorithms ---- */
	{"algs.yaml",
	 BASE "issuers:\n"
	      "  - name: a\n"
	      "    issuer: https://a\n"
	      "    algorithms: [none, HS256, HS384, HS512, rs256, ES512, RS256, NONE, [RS256]]\n"
	      "  - name: b\n"
	      "    issuer: https://b\n"
	      "    algorithms: RS256\n"
	      "  - name: c\n"
	      "    issuer: https://c\n"
	      "    algorithms: []\n",
	 {"@F:6:18: issuers[0].algorithms[0]: 'none' is not allowed: unsigned tokens prove nothing",
	  "@F:6:24: issuers[0].algorithms[1]: 'HS256' is not allowed: HMAC needs a shared secret, an OIDC issuer publishes public keys",
	  "@F:6:31: issuers[0].algorithms[2]: 'HS384' is not allowed: HMAC needs a shared secret, an OIDC issuer publishes public keys",
	  "@F:6:38: issuers[0].algorithms[3]: 'HS512' is not allowed: HMAC needs a shared secret, an OIDC issuer publishes public keys",
	  "@F:6:45: issuers[0].algorithms[4]: unknown algorithm 'rs256' (known: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384)",
	  "@F:6:52: issuers[0].algorithms[5]: unknown algorithm 'ES512' (known: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384)",
	  "@F:6:66: issuers[0].algorithms[7]: 'none' is not allowed: unsigned tokens prove nothing",
	  "@F:6:72: issuers[0].algorithms[8]: must be a string",
	  "@F:9:17: issuers[1].algorithms: must be a list",
	  "@F:12:17: issuers[2].algorithms: must not be empty"}},

	/* ---- key files: refused when group/world can read them, as ssh does ---- */
	{"modes.yaml",
	 "public_url: https://a\n"
	 "signing:\n"
	 "  keys:\n"
	 "    - k600.pem\n"
	 "    - k640.pem\n"
	 "    - k604.pem\n"
	 "    - k400.pem\n"
	 "    - k620.pem\n"
	 "    - nosuch.pem\n"
	 "    - dir.pem\n"
	 "    - \"@D/k644.pem\"\n"
	 "tls: {cert: nosuch.crt, key: tls-open.key}\n"
	 "issuers: [{name: a, issuer: \"https://a\", ca_file: dir.pem}]\n",
	 {"@F:5:7: signing.keys[1]: '@D/k640.pem' is accessible by group or others (mode 0640); run chmod 600",
	  "@F:6:7: signing.keys[2]: '@D/k604.pem' is accessible by group or others (mode 0604); run chmod 600",
	  "@F:8:7: signing.keys[4]: '@D/k620.pem' is accessible by group or others (mode 0620); run chmod 600",
	  "@F:9:7: signing.keys[5]: cannot access '@D/nosuch.pem': No such file or directory",
	  "@F:10:7: signing.keys[6]: '@D/dir.pem' is not a regular file",
	  "@F:11:7: signing.keys[7]: '@D/k644.pem' is accessible by group or others (mode 0644); run chmod 600",
	  "@F:12:13: tls.cert: cannot access '@D/nosuch.crt': No such file or directory",
	  "@F:12:30: tls.key: '@D/tls-open.key' is accessible by group or others (mode 0644); run chmod 600",
	  "@F:13:51: issuers[0].ca_file: '@D/dir.pem' is not a regular file"}},
	{"nokey.yaml", "public_url: https://a\nsigning: {keys: []}\n", {"@F:2:17: signing.keys: must not be empty"}},
	{"tlshalf.yaml", BASE "tls: {cert: tls.crt}\n", {"@F:3:6: tls: needs both 'cert' and 'key'"}},
	{"tlshalf2.yaml", BASE "tls:\n  key: tls.key\n", {"@F:4:3: tls: needs both 'cert' and 'key'"}},
	{"tlsempty.yaml", BASE "tls: {}\n", {"@F:3:6: tls: needs both 'cert' and 'key'"}},
	{"issfrag.yaml", BASE "issuers:\n  - {name: a, issuer: \"https://a.example/#x\"}\n",
	 {"@F:4:23: issuers[0].issuer: an OIDC issuer has no query or fragment: 'https://a.example/#x'"}},
	{"issquery.yaml", BASE "issuers:\n  - {name: a, issuer: \"https://a.example/?t=1\"}\n",
	 {"@F:4:23: issuers[0].issuer: an OIDC issuer has no query or fragment: 'https://a.example/?t=1'"}},
	{"tlsenc.yaml", BASE "tls: {cert: tls.crt, key: enc.key}\n",
	 {"@F:3:27: tls.key: '@D/enc.key' holds no PEM private key (encrypted keys are not supported)"}},

	/* ---- issuers: names unique ---- */
	{"dupname.yaml",
	 BASE "issuers:\n"
	      "  - name: github\n"
	      "    issuer: https://a\n"
	      "  - name: gitlab\n"
	      "    issuer: https://b\n"
	      "  - {name: github, issuer: \"https://c\"}\n"
	      "  - {name: gitlab, issuer: \"https://d\"}\n",
	 {"@F:8:12: issuers[2].name: duplicate issuer name 'github' (first defined at 4:11)",
	  "@F:9:12: issuers[3].name: duplicate issuer name 'gitlab' (first defined at 6:11)"}},

	/* ---- other values ---- */
	{"listen.yaml", BASE "listen: \"::1:80\"\n", {"@F:3:9: listen: '::1:80': must be HOST:PORT or [IPV6]:PORT"}},
	{"listen2.yaml", BASE "listen: \"127.0.0.1:99999\"\n", {"@F:3:9: listen: '127.0.0.1:99999': port must be 0-65535"}},
	{"listen3.yaml", BASE "listen: \"h:\"\n", {"@F:3:9: listen: 'h:': must be HOST:PORT or [IPV6]:PORT"}},
	{"listen4.yaml", BASE "listen: \"[]:80\"\n", {"@F:3:9: listen: '[]:80': must be HOST:PORT or [IPV6]:PORT"}},
	{"listen5.yaml", BASE "listen: localhost\n", {"@F:3:9: listen: 'localhost': must be HOST:PORT or [IPV6]:PORT"}},
	{"listen6.yaml", BASE "listen: \"h:+80\"\n", {"@F:3:9: listen: 'h:+80': must be HOST:PORT or [IPV6]:PORT"}},
	{"listen7.yaml", BASE "listen: \"example.com:80\"\n",
	 {"@F:3:9: listen: 'example.com:80': HOST must be an IPv4 address in dotted form, or localhost"}},
	{"listen8.yaml", BASE "listen: \"[127.0.0.1]:80\"\n",
	 {"@F:3:9: listen: '[127.0.0.1]:80': not an IPv6 address between [ ]"}},
	{"tlspair.yaml", BASE "tls: {cert: tls.crt, key: other.key}\n",
	 {"@F:3:27: tls.key: '@D/other.key' is not the key of the certificate in tls.cert"}},
	{"tlsjunk.yaml", BASE "tls: {cert: junk.crt, key: tls.key}\n",
	 {"@F:3:13: tls.cert: '@D/junk.crt' holds no PEM certificate"}},
	{"tlsjunkkey.yaml", BASE "tls: {cert: tls.crt, key: k600.pem}\n",
	 {"@F:3:27: tls.key: '@D/k600.pem' holds no PEM private key (encrypted keys are not supported)"}},
	{"url-ctl.yaml", BASE "issuers:\n  - {name: a, issuer: \"https://a.example\\x01\"}\n",
	 {"@F:4:23: issuers[0].issuer: must be an https:// URL (http:// only for loopback hosts), not 'https://a.example?'"}},
	{"redis.yaml", BASE "replay: {redis: \"http://r:6379\"}\n",
	 {"@F:3:17: replay.redis: must be a redis://HOST[:PORT] URL, not 'http://r:6379'"}},
	{"redis2.yaml", BASE "replay: {redis: \"redis://:6379\"}\n",
	 {"@F:3:17: replay.redis: must be a redis://HOST[:PORT] URL, not 'redis://:6379'"}},
	{"region.yaml", BASE "aws: {region: US_EAST_1}\n", {"@F:3:15: aws.region: not an AWS region name: 'US_EAST_1'"}},
	{"rates.yaml", BASE "rate_limits: {per_ip: {rate: -1, burst: 0}, per_subject: {rate: 1, burst: .5}}\n",
	 {"@F:3:30: rate_limits.per_ip.rate: must be between 0 and 1000000",
	  "@F:3:41: rate_limits.per_ip.burst: must be between 1 and 1000000",
	  "@F:3:75: rate_limits.per_subject.burst: must be between 1 and 1000000"}},
	{"threads.yaml", BASE "server: {threads: 0, max_connections: 0}\n",
	 {"@F:3:19: server.threads: must be between 1 and 1024",
	  "@F:3:39: server.max_connections: must be between 1 and 1000000"}},
};

static void run_row(size_t i, const struct row *r)
{
	char path[256];
	struct diag *d = diag_new();
	struct broker_config *cfg = (struct broker_config *)&cfg; /* must stay untouched on failure */
	enum broker_err err;
	size_t n_expect = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, r->file);
	if (r->text) {
		char *text = expand(r->text, path);

		write_file(r->file, text, 0644);
		free(text);
	}
	err = config_load(path, d, &cfg);
	while (n_expect < BROKER_ARRAY_SIZE(r->expect) && r->expect[n_expect])
		n_expect++;
	if (n_expect == 0) {
		CHECK(err == BROKER_OK && diag_count(d) == 0, "row %zu (%s): %s", i, r->file,
		      diag_count(d) ? diag_line(d, 0) : broker_strerror(err));
		if (err == BROKER_OK) {
			r->check(cfg);
			config_free(cfg);
		}
	} else {
		CHECK(err == BROKER_ERR_CONFIG && cfg == (struct broker_config *)&cfg, "row %zu (%s): err %d", i,
		      r->file, err);
		CHECK(diag_count(d) == n_expect && diag_errors(d) == n_expect, "row %zu (%s): %zu lines, want %zu", i,
		      r->file, diag_count(d), n_expect);
		for (size_t j = 0; j < n_expect || j < diag_count(d); j++) {
			char *want = j < n_expect ? expand(r->expect[j], path) : NULL;
			const char *got = diag_line(d, j);

			CHECK(str_eq(got, want), "row %zu (%s) line %zu:\n  got: %s\n want: %s", i, r->file, j,
			      got ? got : "(none)", want ? want : "(none)");
			free(want);
		}
	}
	diag_free(d);
}

static void test_algs(void)
{
	static const char *const names[] = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"};
	unsigned seen = 0;

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(names); i++) {
		unsigned bit = broker_alg_from_name(names[i]);

		CHECK(bit && !(bit & (bit - 1)) && !(seen & bit), "%s", names[i]);
		CHECK(str_eq(broker_alg_name(bit), names[i]), "%s", names[i]);
		seen |= bit;
	}
	CHECK(broker_alg_from_name("none") == 0 && broker_alg_from_name("HS256") == 0);
	CHECK(broker_alg_from_name("rs256") == 0 && broker_alg_from_name("") == 0 && broker_alg_from_name(NULL) == 0);
	CHECK(broker_alg_name(0) == NULL && broker_alg_name(BROKER_ALG_RS256 | BROKER_ALG_ES256) == NULL);
	CHECK(config_find_issuer(NULL, "a") == NULL);
	config_free(NULL);
}

/* A config path without a directory part: relative names stay relative to
 * the working directory, where the config itself is. */
static void test_relative_path(void)
{
	char cwd[4096];
	struct diag *d = diag_new();
	struct broker_config *cfg = NULL;

	if (!getcwd(cwd, sizeof(cwd)) || chdir(dir) < 0) {
		CHECK(0, "chdir");
		return;
	}
	CHECK(config_load("ok.yaml", d, &cfg) == BROKER_OK);
	CHECK(cfg && str_eq(cfg->signing_keys[0], "k600.pem") && str_eq(cfg->path, "ok.yaml"));
	config_free(cfg);
	diag_free(d);
	if (chdir(cwd) < 0)
		CHECK(0, "chdir back");
}

int main(void)
{
	char cmd[128];
	int ok;

	strcpy(dir, "/tmp/test-config.XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	umask(022);
	/* placeholders, not keys: the loader checks mode and type only */
	write_file("k600.pem", "placeholder\n", 0600);
	write_file("k400.pem", "placeholder\n", 0400);
	write_file("k640.pem", "placeholder\n", 0640);
	write_file("k604.pem", "placeholder\n", 0604);
	write_file("k620.pem", "placeholder\n", 0620);
	write_file("k644.pem", "placeholder\n", 0644);
	write_tls_pair("tls.crt", "tls.key");
	write_encrypted_key("enc.key");
	write_tls_pair("other.crt", "other.key");
	write_file("junk.crt", "placeholder\n", 0644);
	write_file("tls-open.key", "placeholder\n", 0644);
	write_file("ca.pem", "placeholder\n", 0644);
	if (mkdir(path_in("dir.pem"), 0700) < 0)
		return 2;

	test_algs();
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(rows); i++)
		run_row(i, &rows[i]);
	test_relative_path();

	ok = check_done();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return ok;
}
