/* SPDX-License-Identifier: Apache-2.0 */
/* `cibroker exchange`: the CI-side client. Finds the job's ID token, trades it
 * at the broker and prints the credential in the form the next step wants.
 * The HTTP half lives in client.c; this file is options, token sources and
 * output formats. The ID token is never printed or written anywhere. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "cibroker/cli.h"
#include "cibroker/client.h"
#include "cibroker/util.h"

#define PROG "cibroker exchange"
#define DEFAULT_ID_TOKEN_ENV "CIBROKER_ID_TOKEN"
#define DEFAULT_RETRY_MAX_S 60
#define MAX_RETRY_MAX_S 3600
#define MAX_AUDIENCE 256
#define TOKEN_TYPE_AWS "urn:cibroker:token-type:aws-credentials"

enum format { FMT_TOKEN, FMT_JSON, FMT_ENV, FMT_CREDENTIAL_PROCESS, FMT_GITHUB_ENV };

static const struct {
	const char *name;
	enum format fmt;
} formats[] = {
	{"token", FMT_TOKEN},
	{"json", FMT_JSON},
	{"env", FMT_ENV},
	{"credential-process", FMT_CREDENTIAL_PROCESS},
	{"github-env", FMT_GITHUB_ENV},
};

struct options {
	const char *broker;
	const char *audience;
	enum format format;
	const char *id_token_audience;
	const char *id_token_env; /* NULL: default, automatic order */
	const char *id_token_file;
	const char *ca_file;
	int64_t retry_max_s;
};

/* One exported variable of the env / github-env formats. */
struct var {
	const char *name;
	const char *value;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: cibroker exchange --broker URL --audience POLICY [options]\n"
		"\n"
		"Trade this CI job's OIDC ID token for a credential from the broker.\n"
		"\n"
		"  --broker URL              broker base URL (https://, or http:// to loopback)\n"
		"  --audience POLICY         the policy to ask for\n"
		"  --format FORMAT           token (default) | json | env | credential-process | github-env\n"
		"  --id-token-audience AUD   audience of the GitHub Actions ID token\n"
		"                            (default: the broker's issuer from its discovery document)\n"
		"  --id-token-env NAME       read the ID token from variable NAME (default CIBROKER_ID_TOKEN)\n"
		"  --id-token-file FILE      read the ID token from FILE ('-' = stdin)\n"
		"  --retry-max-time SECONDS  total time for retries (default 60, env CIBROKER_RETRY_MAX_TIME)\n"
		"  --ca-file FILE            extra CA bundle to verify the broker's certificate\n"
		"  --help, --version\n"
		"\n"
		"ID token sources, first match wins: --id-token-file; --id-token-env; GitHub Actions\n"
		"(ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN); $CIBROKER_ID_TOKEN (GitLab id_tokens:); stdin.\n"
		"Exit codes: 0 ok, 1 local failure (out of memory, stdout or $GITHUB_ENV not writable),\n"
		"2 usage (also no or invalid ID token), 3 refused (4xx), 4 unavailable (503 or connection\n"
		"errors after retries, other 5xx, an answer that is not the broker's).\n");
}

/* jansson holds the broker's answer (credentials) in its own allocations;
 * wipe every one of them on free. This process is a short-lived CLI, so a
 * global allocator hook is the simplest way to cover them all. */
static void *wiping_malloc(size_t n)
{
	return malloc(n);
}

static void wiping_free(void *p)
{
	if (p)
		OPENSSL_cleanse(p, malloc_usable_size(p));
	free(p);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { OPT_BROKER = 256, OPT_AUDIENCE, OPT_FORMAT, OPT_IDAUD, OPT_IDENV, OPT_IDFILE, OPT_RETRY, OPT_CA,
	       OPT_HELP, OPT_VERSION };
	static const struct option longopts[] = {
		{"broker", required_argument, NULL, OPT_BROKER},
		{"audience", required_argument, NULL, OPT_AUDIENCE},
		{"format", required_argument, NULL, OPT_FORMAT},
		{"id-token-audience", required_argument, NULL, OPT_IDAUD},
		{"id-token-env", required_argument, NULL, OPT_IDENV},
		{"id-token-file", required_argument, NULL, OPT_IDFILE},
		{"retry-max-time", required_argument, NULL, OPT_RETRY},
		{"ca-file", required_argument, NULL, OPT_CA},
		{"help", no_argument, NULL, OPT_HELP},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0},
	};
	const char *retry = getenv("CIBROKER_RETRY_MAX_TIME");
	int opt;

	o->format = FMT_TOKEN;
	o->retry_max_s = DEFAULT_RETRY_MAX_S;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_BROKER:
			o->broker = optarg;
			break;
		case OPT_AUDIENCE:
			o->audience = optarg;
			break;
		case OPT_FORMAT: {
			size_t i;

			for (i = 0; i < BROKER_ARRAY_SIZE(formats); i++)
				if (strcmp(optarg, formats[i].name) == 0)
					break;
			if (i == BROKER_ARRAY_SIZE(formats)) {
				fprintf(stderr, PROG ": unknown --format '%s'\n", optarg);
				return CLIENT_EXIT_USAGE;
			}
			o->format = formats[i].fmt;
			break;
		}
		case OPT_IDAUD:
			o->id_token_audience = optarg;
			break;
		case OPT_IDENV:
			o->id_token_env = optarg;
			break;
		case OPT_IDFILE:
			o->id_token_file = optarg;
			break;
		case OPT_RETRY:
			retry = optarg;
			break;
		case OPT_CA:
			o->ca_file = optarg;
			break;
		case 'h':
		case OPT_HELP:
			usage(stdout);
			return -1;
		case OPT_VERSION:
			cli_print_version();
			return -1;
		default:
			if (optopt && optopt < 256)
				fprintf(stderr, PROG ": unknown option '-%c'\n", optopt);
			else
				fprintf(stderr, PROG ": bad option '%s' (unknown, or missing its value)\n",
					argv[optind - 1]);
			usage(stderr);
			return CLIENT_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return CLIENT_EXIT_USAGE;
	}
	if (!o->broker || !o->audience) {
		fprintf(stderr, PROG ": --broker and --audience are required\n");
		usage(stderr);
		return CLIENT_EXIT_USAGE;
	}
	/* The ID token is a bearer credential: never send it in clear over a
	 * network. */
	if (!broker_url_allowed(o->broker)) {
		fprintf(stderr, PROG ": --broker must be https://, or http:// to a loopback host: '%s'\n", o->broker);
		return CLIENT_EXIT_USAGE;
	}
	if (strpbrk(o->broker, "?#")) {
		/* paths are appended to it: a query or fragment would swallow them */
		fprintf(stderr, PROG ": --broker must be the broker's base URL, without ?query or #fragment: '%s'\n",
			o->broker);
		return CLIENT_EXIT_USAGE;
	}
	if (o->ca_file && access(o->ca_file, R_OK) != 0) {
		fprintf(stderr, PROG ": --ca-file '%s': %s\n", o->ca_file, strerror(errno));
		return CLIENT_EXIT_USAGE;
	}
	if (!*o->audience || strlen(o->audience) > MAX_AUDIENCE) {
		fprintf(stderr, PROG ": --audience must be 1 to %d characters\n", MAX_AUDIENCE);
		return CLIENT_EXIT_USAGE;
	}
	if (o->id_token_env && !*o->id_token_env) {
		fprintf(stderr, PROG ": --id-token-env needs a variable name\n");
		return CLIENT_EXIT_USAGE;
	}
	if (retry && (broker_parse_duration(retry, &o->retry_max_s) != BROKER_OK || o->retry_max_s > MAX_RETRY_MAX_S)) {
		fprintf(stderr, PROG ": bad retry time '%s' (seconds, at most %d)\n", retry, MAX_RETRY_MAX_S);
		return CLIENT_EXIT_USAGE;
	}
	return CLIENT_EXIT_OK;
}

/* Trim surrounding whitespace (files and here-strings end in a newline) and
 * refuse anything that cannot be a compact JWS, before it goes anywhere. */
static int check_id_token(char *tok, const char *source)
{
	size_t len = strlen(tok), start = 0;

	while (len > 0 && strchr(" \t\r\n", tok[len - 1]))
		tok[--len] = '\0';
	while (start < len && strchr(" \t\r\n", tok[start]))
		start++;
	memmove(tok, tok + start, len - start + 1);
	len -= start;
	if (len == 0) {
		fprintf(stderr, PROG ": the ID token from %s is empty\n", source);
		return CLIENT_EXIT_USAGE;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)tok[i];

		if (ch <= 0x20 || ch >= 0x7f) {
			fprintf(stderr, PROG ": the ID token from %s is not a JWT\n", source);
			return CLIENT_EXIT_USAGE;
		}
	}
	return CLIENT_EXIT_OK;
}

static int read_token_fd(int fd, const char *source, char **ret)
{
	char *buf = malloc(CLIENT_MAX_ID_TOKEN + 1);
	size_t len = 0;
	int rc = CLIENT_EXIT_USAGE;

	if (!buf)
		return CLIENT_EXIT_FAILURE;
	for (;;) {
		ssize_t n = read(fd, buf + len, CLIENT_MAX_ID_TOKEN + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, PROG ": reading the ID token from %s: %s\n", source, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CLIENT_MAX_ID_TOKEN) {
			fprintf(stderr, PROG ": the ID token from %s is over %d bytes\n", source, CLIENT_MAX_ID_TOKEN);
			goto out;
		}
	}
	buf[len] = '\0';
	rc = check_id_token(buf, source);
	if (rc == CLIENT_EXIT_OK) {
		*ret = buf;
		buf = NULL;
	}
out:
	broker_wipe_free(buf, CLIENT_MAX_ID_TOKEN + 1);
	return rc;
}

static int token_from_file(const char *path, char **ret)
{
	int fd, rc;

	if (strcmp(path, "-") == 0)
		return read_token_fd(STDIN_FILENO, "stdin", ret);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, PROG ": cannot open ID token file '%s': %s\n", path, strerror(errno));
		return CLIENT_EXIT_USAGE;
	}
	rc = read_token_fd(fd, path, ret);
	close(fd);
	return rc;
}

static int token_from_env(const char *name, char **ret)
{
	const char *v = getenv(name);
	char source[300];
	char *copy;
	int rc;

	if (strlen(v) > CLIENT_MAX_ID_TOKEN) {
		fprintf(stderr, PROG ": the ID token in $%s is over %d bytes\n", name, CLIENT_MAX_ID_TOKEN);
		return CLIENT_EXIT_USAGE;
	}
	copy = strdup(v);
	if (!copy)
		return CLIENT_EXIT_FAILURE;
	snprintf(source, sizeof(source), "$%s", name);
	rc = check_id_token(copy, source);
	if (rc != CLIENT_EXIT_OK) {
		broker_secret_free(copy);
		return rc;
	}
	*ret = copy;
	return CLIENT_EXIT_OK;
}

static bool env_set(const char *name)
{
	const char *v = getenv(name);

	return v && *v;
}

static void print_failure(struct client *c, enum broker_err err, const char *why)
{
	fprintf(stderr, PROG ": %s\n", why);
	if (err != BROKER_ERR_DENIED && client_last_attempts(c) > 1)
		fprintf(stderr, PROG ": gave up after %u attempts\n", client_last_attempts(c));
}

/* Explicit flags win over the environment; then GitHub Actions, then the
 * GitLab id_tokens: variable, then stdin. */
static int get_id_token(struct client *c, const struct options *o, char **ret)
{
	const char *env_name = o->id_token_env ? o->id_token_env : DEFAULT_ID_TOKEN_ENV;
	const char *req_url = getenv("ACTIONS_ID_TOKEN_REQUEST_URL");
	const char *req_token = getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
	char why[CLIENT_WHY_MAX];
	char *issuer = NULL;
	const char *aud;
	enum broker_err err;
	int rc;

	if (o->id_token_file)
		return token_from_file(o->id_token_file, ret);
	if (o->id_token_env) {
		if (!env_set(o->id_token_env)) {
			fprintf(stderr, PROG ": $%s (--id-token-env) is not set or empty\n", o->id_token_env);
			return CLIENT_EXIT_USAGE;
		}
		return token_from_env(o->id_token_env, ret);
	}
	if (env_set("ACTIONS_ID_TOKEN_REQUEST_URL") && env_set("ACTIONS_ID_TOKEN_REQUEST_TOKEN")) {
		if (!broker_url_allowed(req_url)) {
			fprintf(stderr, PROG ": ACTIONS_ID_TOKEN_REQUEST_URL must be https:// (or loopback http://)\n");
			return CLIENT_EXIT_USAGE;
		}
		aud = o->id_token_audience;
		if (!aud) {
			err = client_discover_issuer(c, o->broker, &issuer, why);
			if (err != BROKER_OK) {
				print_failure(c, err, why);
				return client_exit_code(err);
			}
			aud = issuer;
		}
		err = client_actions_id_token(c, req_url, req_token, aud, ret, why);
		free(issuer);
		if (err != BROKER_OK) {
			print_failure(c, err, why);
			return client_exit_code(err);
		}
		rc = check_id_token(*ret, "the GitHub Actions token endpoint");
		if (rc != CLIENT_EXIT_OK) {
			broker_secret_free(*ret);
			*ret = NULL;
		}
		return rc;
	}
	if (env_set(env_name))
		return token_from_env(env_name, ret);
	if (isatty(STDIN_FILENO)) {
		fprintf(stderr, PROG ": no ID token: not in GitHub Actions (id-token: write), $%s is empty, "
				"and stdin is a terminal\n", env_name);
		return CLIENT_EXIT_USAGE;
	}
	rc = read_token_fd(STDIN_FILENO, "stdin", ret);
	return rc;
}

/* The broker's 200 answer, checked once for every format. */
struct credential {
	json_t *answer;
	const char *access_token;
	json_t *aws; /* the `credentials` object when the kind is aws, else NULL */
	struct var vars[3];
	size_t n_vars;
};

static bool nonempty_string(const json_t *obj, const char *key, const char **ret)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_string(v) || json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v))
		return false;
	*ret = json_string_value(v);
	return true;
}

static int parse_credential(const struct client_reply *r, struct credential *cred)
{
	const json_t *type;
	const char *key_id, *secret, *session;

	cred->answer = broker_json_parse(r->body, r->len, 16);
	if (!json_is_object(cred->answer) || !nonempty_string(cred->answer, "access_token", &cred->access_token)) {
		fprintf(stderr, PROG ": the broker's answer has no access_token\n");
		return CLIENT_EXIT_UNAVAILABLE;
	}
	type = json_object_get(cred->answer, "issued_token_type");
	if (json_is_string(type) && strcmp(json_string_value(type), TOKEN_TYPE_AWS) == 0) {
		json_t *aws = json_object_get(cred->answer, "credentials");
		json_t *version = json_object_get(aws, "Version");

		if (!json_is_object(aws) || !json_is_integer(version) || json_integer_value(version) != 1 ||
		    !nonempty_string(aws, "AccessKeyId", &key_id) || !nonempty_string(aws, "SecretAccessKey", &secret) ||
		    !nonempty_string(aws, "SessionToken", &session)) {
			fprintf(stderr, PROG ": the broker's aws answer has no usable Version 1 credentials\n");
			return CLIENT_EXIT_UNAVAILABLE;
		}
		cred->aws = aws;
		cred->vars[0] = (struct var){"AWS_ACCESS_KEY_ID", key_id};
		cred->vars[1] = (struct var){"AWS_SECRET_ACCESS_KEY", secret};
		cred->vars[2] = (struct var){"AWS_SESSION_TOKEN", session};
		cred->n_vars = 3;
	} else {
		cred->vars[0] = (struct var){"CIBROKER_TOKEN", cred->access_token};
		cred->n_vars = 1;
	}
	return CLIENT_EXIT_OK;
}

/* export NAME=value, as DESIGN.md writes it. A value with any character
 * outside [A-Za-z0-9_@%+=:,./-] (JWTs and AWS keys never have one) is
 * single-quoted, ' written as '\'' : safe for eval in any POSIX shell
 * whatever it holds; otherwise a plain NAME=value parser reads the value as is. */
static void print_env(const struct credential *cred)
{
	for (size_t i = 0; i < cred->n_vars; i++) {
		const char *v = cred->vars[i].value;
		bool plain = *v && strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-") ==
					   strlen(v);

		if (plain) {
			printf("export %s=%s\n", cred->vars[i].name, v);
			continue;
		}
		printf("export %s='", cred->vars[i].name);
		for (const char *p = v; *p; p++) {
			if (*p == '\'')
				fputs("'\\''", stdout);
			else
				putchar(*p);
		}
		fputs("'\n", stdout);
	}
}

static int print_credential_process(const struct options *o, const struct credential *cred)
{
	char *s;

	if (!cred->aws) {
		fprintf(stderr, PROG ": --format credential-process needs an aws credential; "
				"policy '%s' issued %s (use token, env or json)\n",
			o->audience, json_string_value(json_object_get(cred->answer, "issued_token_type")) ?: "a token");
		return CLIENT_EXIT_USAGE;
	}
	/* AWS's credential_process format is the `credentials` object itself. */
	s = json_dumps(cred->aws, JSON_PRESERVE_ORDER | JSON_INDENT(2));
	if (!s)
		return CLIENT_EXIT_FAILURE;
	printf("%s\n", s);
	broker_secret_free(s);
	return CLIENT_EXIT_OK;
}

/* Workflow-command data escaping, as @actions/core's escapeData. */
static void print_mask(const char *value)
{
	fputs("::add-mask::", stdout);
	for (const char *p = value; *p; p++) {
		if (*p == '%')
			fputs("%25", stdout);
		else if (*p == '\r')
			fputs("%0D", stdout);
		else if (*p == '\n')
			fputs("%0A", stdout);
		else
			putchar(*p);
	}
	putchar('\n');
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Empty, or its last byte a newline. Unreadable: assume so, as writing
 * works on the descriptor opened before the exchange. */
static bool ends_with_newline(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char last = '\n';

	if (fd < 0)
		return true;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1)
		last = '\n';
	close(fd);
	return last == '\n';
}

/* Mask first, so the runner redacts the values before anything can echo
 * them; then append NAME<<DELIMITER / value / DELIMITER blocks to
 * $GITHUB_ENV in one write, with a random delimiter absent from every name
 * and value (the runner's own multi-line form, safe against injection). */
static int write_github_env(int fd, const struct credential *cred)
{
	const char *path = getenv("GITHUB_ENV");
	unsigned char rnd[16];
	char delim[13 + 32 + 1] = "ghadelimiter_";
	char *buf = NULL;
	size_t cap = 0, len = 0;
	int rc = CLIENT_EXIT_FAILURE;
	bool clash;

	for (size_t i = 0; i < cred->n_vars; i++)
		print_mask(cred->vars[i].value);
	if (fflush(stdout) != 0) {
		fprintf(stderr, PROG ": cannot write to stdout\n");
		return CLIENT_EXIT_FAILURE;
	}
	do {
		if (broker_random(rnd, sizeof(rnd)) != BROKER_OK)
			return CLIENT_EXIT_FAILURE;
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(delim + 13 + 2 * i, 3, "%02x", rnd[i]);
		clash = false;
		for (size_t i = 0; i < cred->n_vars; i++)
			clash |= strstr(cred->vars[i].value, delim) || strstr(cred->vars[i].name, delim);
	} while (clash);
	for (size_t i = 0; i < cred->n_vars; i++)
		cap += strlen(cred->vars[i].name) + strlen(cred->vars[i].value) + 2 * sizeof(delim) + 8;
	cap++; /* a leading newline */
	buf = malloc(cap);
	if (!buf)
		goto out;
	if (!ends_with_newline(path))
		buf[len++] = '\n'; /* a file whose last line is unterminated would swallow our first name */
	for (size_t i = 0; i < cred->n_vars; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s<<%s\n%s\n%s\n", cred->vars[i].name, delim,
					cred->vars[i].value, delim);
	if (write_all(fd, buf, len) < 0) {
		fprintf(stderr, PROG ": cannot write $GITHUB_ENV '%s': %s\n", path, strerror(errno));
		goto out;
	}
	fprintf(stderr, PROG ": wrote");
	for (size_t i = 0; i < cred->n_vars; i++)
		fprintf(stderr, " %s", cred->vars[i].name);
	fprintf(stderr, " to $GITHUB_ENV\n");
	rc = CLIENT_EXIT_OK;
out:
	broker_wipe_free(buf, cap);
	return rc;
}

static int print_output(const struct options *o, int github_env, const struct client_reply *r,
			const struct credential *cred)
{
	switch (o->format) {
	case FMT_TOKEN:
		printf("%s\n", cred->access_token);
		return CLIENT_EXIT_OK;
	case FMT_JSON:
		/* The answer as received, so scripts see exactly the broker's fields. */
		fwrite(r->body, 1, r->len, stdout);
		if (r->len == 0 || r->body[r->len - 1] != '\n')
			putchar('\n');
		return CLIENT_EXIT_OK;
	case FMT_ENV:
		print_env(cred);
		return CLIENT_EXIT_OK;
	case FMT_CREDENTIAL_PROCESS:
		return print_credential_process(o, cred);
	case FMT_GITHUB_ENV:
		return write_github_env(github_env, cred);
	}
	return CLIENT_EXIT_FAILURE;
}

int cmd_exchange(int argc, char **argv)
{
	/* stdout carries credentials: give it a buffer we can wipe. */
	static char outbuf[16384];
	struct options o = {0};
	struct client_settings settings = {0};
	struct credential cred = {0};
	struct client *c = NULL;
	struct client_reply *reply = NULL;
	char why[CLIENT_WHY_MAX];
	char *id_token = NULL;
	enum broker_err err;
	int rc, github_env = -1;

	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	rc = parse_options(argc, argv, &o);
	if (rc < 0)
		return fflush(stdout) == 0 ? CLIENT_EXIT_OK : CLIENT_EXIT_FAILURE;
	if (rc != CLIENT_EXIT_OK)
		return rc;
	/* Fail before fetching any token if the output has nowhere to go. */
	if (o.format == FMT_GITHUB_ENV) {
		if (!env_set("GITHUB_ENV")) {
			fprintf(stderr, PROG ": --format github-env needs $GITHUB_ENV (set by GitHub Actions)\n");
			return CLIENT_EXIT_USAGE;
		}
		/* No O_CREAT: the runner creates the file; a missing one means a
		 * typo or not being in Actions, and secrets must not land
		 * somewhere new. Opened now, so no credential is minted for a
		 * file that cannot take it. */
		github_env = open(getenv("GITHUB_ENV"), O_WRONLY | O_APPEND | O_CLOEXEC);
		if (github_env < 0) {
			fprintf(stderr, PROG ": cannot open $GITHUB_ENV '%s': %s\n", getenv("GITHUB_ENV"),
				strerror(errno));
			return CLIENT_EXIT_USAGE;
		}
	}
	json_set_alloc_funcs(wiping_malloc, wiping_free);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, PROG ": cannot initialise libcurl\n");
		return CLIENT_EXIT_FAILURE;
	}
	settings.retry_max_us = o.retry_max_s * 1000000;
	settings.ca_file = o.ca_file;
	rc = CLIENT_EXIT_FAILURE;
	if (client_create(&settings, &c) != BROKER_OK)
		goto out;
	rc = get_id_token(c, &o, &id_token);
	if (rc != CLIENT_EXIT_OK)
		goto out;
	/* credential-process can only use AWS credentials: asking for them lets
	 * the broker refuse a jwt policy before it mints anything */
	err = client_token_exchange(c, o.broker, id_token, o.audience,
				    o.format == FMT_CREDENTIAL_PROCESS ? TOKEN_TYPE_AWS : NULL, &reply, why);
	/* The ID token has done its job; it leaves memory before any output. */
	broker_secret_free(id_token);
	id_token = NULL;
	if (err != BROKER_OK) {
		print_failure(c, err, why);
		rc = client_exit_code(err);
		goto out;
	}
	rc = parse_credential(reply, &cred);
	if (rc != CLIENT_EXIT_OK)
		goto out;
	rc = print_output(&o, github_env, reply, &cred);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, PROG ": cannot write to stdout\n");
		rc = CLIENT_EXIT_FAILURE;
	}
out:
	if (github_env >= 0 && close(github_env) < 0 && rc == CLIENT_EXIT_OK) {
		fprintf(stderr, PROG ": cannot write $GITHUB_ENV '%s': %s\n", getenv("GITHUB_ENV"), strerror(errno));
		rc = CLIENT_EXIT_FAILURE;
	}
	fflush(stdout);
	OPENSSL_cleanse(outbuf, sizeof(outbuf));
	json_decref(cred.answer);
	client_reply_free(reply);
	broker_secret_free(id_token);
	client_free(c);
	curl_global_cleanup();
	return rc;
}
