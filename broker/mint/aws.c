/* SPDX-License-Identifier: Apache-2.0 */
/* sts:AssumeRole for the `aws` credential kind. libcurl signs (SigV4), libxml2
 * parses; this file only builds the form, walks the answer and decides what a
 * failure means for the caller. */
#include "cibroker/mint-aws.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/crypto.h>

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

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
	/* Both are idempotent; done once here so the mint module works whoever
	 * the caller is (the cli, a unit test). */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	xmlInitParser();
}

static void identity_clear(struct identity *id)
{
	broker_secret_free(id->access_key_id);
	broker_secret_free(id->secret);
	broker_secret_free(id->token);
	memset(id, 0, sizeof(*id));
}

static bool identity_copy(const struct identity *src, struct identity *dst)
{
	memset(dst, 0, sizeof(*dst));
	dst->access_key_id = strdup(src->access_key_id);
	dst->secret = strdup(src->secret);
	dst->token = src->token ? strdup(src->token) : NULL;
	dst->expiration = src->expiration;
	if (!dst->access_key_id || !dst->secret || (src->token && !dst->token)) {
		identity_clear(dst);
		return false;
	}
	return true;
}

static void set_error(struct aws_error *why, int status, const char *code, const char *message, int retry_after)
{
	size_t i;

	if (!why)
		return;
	memset(why, 0, sizeof(*why));
	why->http_status = status;
	why->retry_after = retry_after;
	snprintf(why->code, sizeof(why->code), "%s", code);
	snprintf(why->message, sizeof(why->message), "%s", message ? message : "");
	/* Upstream text goes into the audit log and a client description:
	 * keep it to one printable line. */
	for (i = 0; why->code[i]; i++)
		if (!isprint((unsigned char)why->code[i]))
			why->code[i] = '?';
	for (i = 0; why->message[i]; i++)
		if ((unsigned char)why->message[i] < 0x20 || why->message[i] == 0x7f)
			why->message[i] = ' ';
}

/* Printable ASCII without spaces: safe in a header and in curl's user name. */
static bool token_chars_ok(const char *s, size_t max)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (n >= max || s[n] <= 0x20 || s[n] >= 0x7f)
			return false;
	return n > 0;
}

static size_t utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/* STS's RoleSessionName / SourceIdentity alphabet: [\w+=,.@-]{2,64}. */
static bool sts_name_ok(const char *s, size_t max)
{
	size_t n = strlen(s), i;

	if (n < 2 || n > max)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_+=,.@-", s[i]))
			return false;
	return true;
}

/* ---- the broker's identity: env, web identity, shared credentials file ---- */

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/* The INI subset the AWS CLI writes: [profile] sections, key = value lines,
 * full-line # and ; comments. Like botocore, no inline comments. */
static enum broker_err profile_load(const char *profile, struct identity *ret, const char **reason)
{
	enum broker_err err = BROKER_ERR_CONFIG;
	struct identity id = {0};
	const char *path = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
	char pathbuf[4096], *buf = NULL, *line, *save = NULL;
	size_t len = 0;
	bool in_section = false, found = false;

	if (!path || !*path) {
		if (!home || !*home) {
			*reason = "no AWS credentials: no environment keys, no web identity, HOME unset";
			return BROKER_ERR_CONFIG;
		}
		if ((size_t)snprintf(pathbuf, sizeof(pathbuf), "%s/.aws/credentials", home) >= sizeof(pathbuf)) {
			*reason = "HOME too long";
			return BROKER_ERR_CONFIG;
		}
		path = pathbuf;
	}
	switch (broker_read_file(path, CREDENTIALS_FILE_MAX, &buf, &len)) {
	case BROKER_OK: break;
	case BROKER_ERR_NOTFOUND:
		*reason = "no AWS credentials: no environment keys, no web identity, no shared credentials file";
		return BROKER_ERR_CONFIG;
	case BROKER_ERR_TOOBIG: *reason = "shared credentials file over 64 KiB"; return BROKER_ERR_CONFIG;
	default: *reason = "shared credentials file not readable"; return BROKER_ERR_CONFIG;
	}
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *l = trim(line), *eq, *key, *val, **slot = NULL;

		if (!*l || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');

			if (!close || *trim(close + 1)) {
				*reason = "shared credentials file: malformed section header";
				goto out;
			}
			*close = '\0';
			in_section = strcmp(trim(l + 1), profile) == 0;
			found |= in_section;
			continue;
		}
		eq = strchr(l, '=');
		if (!eq) {
			*reason = "shared credentials file: line without '='";
			goto out;
		}
		if (!in_section)
			continue;
		*eq = '\0';
		key = trim(l);
		val = trim(eq + 1);
		if (strcmp(key, "aws_access_key_id") == 0)
			slot = &id.access_key_id;
		else if (strcmp(key, "aws_secret_access_key") == 0)
			slot = &id.secret;
		else if (strcmp(key, "aws_session_token") == 0 || strcmp(key, "aws_security_token") == 0)
			slot = &id.token;
		if (!slot)
			continue; /* region, output, ...: not ours */
		broker_secret_free(*slot);
		*slot = strdup(val);
		if (!*slot) {
			err = BROKER_ERR_NOMEM;
			goto out;
		}
	}
	if (!found) {
		*reason = "profile not found in the shared credentials file";
		goto out;
	}
	if (!id.access_key_id || !id.secret || !*id.access_key_id || !*id.secret) {
		*reason = "profile lacks aws_access_key_id or aws_secret_access_key";
		goto out;
	}
	if (id.token && !*id.token) {
		free(id.token);
		id.token = NULL;
	}
	*ret = id;
	memset(&id, 0, sizeof(id));
	err = BROKER_OK;
out:
	identity_clear(&id);
	broker_wipe_free(buf, len);
	return err;
}

static bool env_set(const char *name)
{
	const char *v = getenv(name);

	return v && *v;
}

static enum broker_err identity_configure(struct broker_aws *aws, const char *profile, const char **reason)
{
	enum broker_err err;
	struct identity id = {0};

	if (profile) {
		aws->source = SOURCE_PROFILE;
		err = profile_load(profile, &id, reason);
		goto checked;
	}
	if (env_set("AWS_ACCESS_KEY_ID") || env_set("AWS_SECRET_ACCESS_KEY")) {
		if (!env_set("AWS_ACCESS_KEY_ID") || !env_set("AWS_SECRET_ACCESS_KEY")) {
			*reason = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together";
			return BROKER_ERR_CONFIG;
		}
		aws->source = SOURCE_ENV;
		id.access_key_id = strdup(getenv("AWS_ACCESS_KEY_ID"));
		id.secret = strdup(getenv("AWS_SECRET_ACCESS_KEY"));
		if (env_set("AWS_SESSION_TOKEN"))
			id.token = strdup(getenv("AWS_SESSION_TOKEN"));
		if (!id.access_key_id || !id.secret || (env_set("AWS_SESSION_TOKEN") && !id.token)) {
			identity_clear(&id);
			return BROKER_ERR_NOMEM;
		}
		err = BROKER_OK;
		goto checked;
	}
	if (env_set("AWS_WEB_IDENTITY_TOKEN_FILE")) {
		char name[40];

		if (!env_set("AWS_ROLE_ARN")) {
			*reason = "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not";
			return BROKER_ERR_CONFIG;
		}
		aws->source = SOURCE_WEB_IDENTITY;
		snprintf(name, sizeof(name), "cibroker-%lld", (long long)broker_now());
		aws->web_token_file = strdup(getenv("AWS_WEB_IDENTITY_TOKEN_FILE"));
		aws->web_role_arn = strdup(getenv("AWS_ROLE_ARN"));
		aws->web_session_name = strdup(env_set("AWS_ROLE_SESSION_NAME") ? getenv("AWS_ROLE_SESSION_NAME") : name);
		if (!aws->web_token_file || !aws->web_role_arn || !aws->web_session_name)
			return BROKER_ERR_NOMEM;
		if (!sts_name_ok(aws->web_session_name, AWS_SESSION_NAME_MAX)) {
			*reason = "AWS_ROLE_SESSION_NAME must be 2-64 characters of [A-Za-z0-9_+=,.@-]";
			return BROKER_ERR_CONFIG;
		}
		if (strncmp(aws->web_role_arn, "arn:", 4) != 0 || !token_chars_ok(aws->web_role_arn, AWS_ROLE_ARN_MAX)) {
			*reason = "AWS_ROLE_ARN is not an ARN";
			return BROKER_ERR_CONFIG;
		}
		return BROKER_OK; /* fetched on first use */
	}
	aws->source = SOURCE_PROFILE;
	err = profile_load(env_set("AWS_PROFILE") ? getenv("AWS_PROFILE") : "default", &id, reason);
checked:
	if (err != BROKER_OK)
		return err;
	if (!token_chars_ok(id.access_key_id, ACCESS_KEY_ID_MAX) || !token_chars_ok(id.secret, SECRET_MAX) ||
	    (id.token && !token_chars_ok(id.token, SESSION_TOKEN_MAX))) {
		identity_clear(&id);
		*reason = "AWS credentials contain spaces, control characters or are too long";
		return BROKER_ERR_CONFIG;
	}
	aws->id = id;
	return BROKER_OK;
}

enum broker_err aws_create(const char *sts_endpoint, const char *region, const char *profile, struct broker_aws **ret,
			   const char **ret_reason)
{
	enum broker_err err = BROKER_ERR_NOMEM;
	struct broker_aws *aws;
	const char *reason = NULL;
	char buf[256];
	size_t i;

	pthread_once(&global_once, global_init);
	*ret_reason = NULL;
	if (!region)
		region = "us-east-1";
	for (i = 0; region[i]; i++)
		if (!islower((unsigned char)region[i]) && !isdigit((unsigned char)region[i]) && region[i] != '-')
			break;
	if (region[i] || i == 0 || i > 64) {
		*ret_reason = "aws.region must be a region name such as us-east-1";
		return BROKER_ERR_CONFIG;
	}
	if (sts_endpoint && !broker_url_allowed(sts_endpoint)) {
		*ret_reason = "aws.sts_endpoint must be https:// (http:// only for loopback hosts)";
		return BROKER_ERR_CONFIG;
	}
	if (sts_endpoint && !token_chars_ok(sts_endpoint, 2048)) {
		*ret_reason = "aws.sts_endpoint is not a URL";
		return BROKER_ERR_CONFIG;
	}
	aws = calloc(1, sizeof(*aws));
	if (!aws)
		return BROKER_ERR_NOMEM;
	aws->connect_ms = 3000;
	aws->total_ms = 10000;
	aws->refresh_margin = 300;
	if (pthread_mutex_init(&aws->lock, NULL) != 0)
		goto fail;
	if (pthread_cond_init(&aws->refreshed, NULL) != 0) {
		pthread_mutex_destroy(&aws->lock);
		goto fail;
	}
	aws->lock_init = true;
	snprintf(buf, sizeof(buf), "https://sts.%s.amazonaws.com", region);
	aws->endpoint = strdup(sts_endpoint ? sts_endpoint : buf);
	aws->region = strdup(region);
	snprintf(buf, sizeof(buf), "aws:amz:%s:sts", region);
	aws->sigv4 = strdup(buf);
	if (!aws->endpoint || !aws->region || !aws->sigv4)
		goto fail;
	aws->plain_http = strncmp(aws->endpoint, "http://", 7) == 0;
	err = identity_configure(aws, profile, &reason);
	if (err != BROKER_OK)
		goto fail;
	*ret = aws;
	return BROKER_OK;
fail:
	*ret_reason = reason ? reason : broker_strerror(err);
	aws_free(aws);
	return err;
}

void aws_free(struct broker_aws *aws)
{
	if (!aws)
		return;
	identity_clear(&aws->id);
	if (aws->lock_init) {
		pthread_cond_destroy(&aws->refreshed);
		pthread_mutex_destroy(&aws->lock);
	}
	free(aws->endpoint);
	free(aws->region);
	free(aws->sigv4);
	free(aws->web_token_file);
	free(aws->web_role_arn);
	free(aws->web_session_name);
	free(aws);
}

const char *aws_identity_source(const struct broker_aws *aws)
{
	switch (aws->source) {
	case SOURCE_ENV: return "env";
	case SOURCE_WEB_IDENTITY: return "web-identity";
	case SOURCE_PROFILE: return "profile";
	}
	return "unknown";
}

void aws_set_timeouts(struct broker_aws *aws, long connect_ms, long total_ms)
{
	aws->connect_ms = connect_ms;
	aws->total_ms = total_ms;
}

void aws_set_refresh_margin(struct broker_aws *aws, int64_t seconds)
{
	aws->refresh_margin = seconds;
}

/* ---- HTTP: one form POST, body capped, secrets wiped ---- */

struct buf {
	char *data;
	size_t len, cap;
	bool oom, toobig;
};

static void buf_wipe(struct buf *b)
{
	broker_wipe_free(b->data, b->cap);
	memset(b, 0, sizeof(*b));
}

/* Grows by copy-and-wipe rather than realloc: the buffers hold secrets
 * (response credentials, the web identity token) and realloc would leave
 * stale copies in freed memory. */
static bool buf_append(struct buf *b, const char *s, size_t n, size_t max)
{
	if (b->len + n > max) {
		b->toobig = true;
		return false;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = malloc(cap);
		if (!p) {
			b->oom = true;
			return false;
		}
		if (b->len)
			memcpy(p, b->data, b->len);
		broker_wipe_free(b->data, b->cap);
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
	return true;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	return buf_append(ctx, ptr, size * nmemb, RESPONSE_MAX) ? size * nmemb : 0;
}

static bool form_add(struct buf *form, CURL *c, const char *key, const char *value)
{
	char *esc = curl_easy_escape(c, value, 0);
	bool ok;

	if (!esc) {
		form->oom = true;
		return false;
	}
	ok = (form->len == 0 || buf_append(form, "&", 1, SIZE_MAX)) && buf_append(form, key, strlen(key), SIZE_MAX) &&
	     buf_append(form, "=", 1, SIZE_MAX) && buf_append(form, esc, strlen(esc), SIZE_MAX);
	broker_wipe_free(esc, strlen(esc));
	return ok;
}

struct http_answer {
	long status;         /* 0: no answer */
	struct buf body;
	int retry_after;     /* Retry-After seconds, 0 if absent */
};

/* POST form to the endpoint; signed with id if non-NULL. On transport
 * failure returns BROKER_ERR_UPSTREAM with why filled. */
static enum broker_err http_post(struct broker_aws *aws, CURL *c, const struct buf *form, const struct identity *id,
				 struct http_answer *ans, struct aws_error *why)
{
	enum broker_err err = BROKER_ERR_NOMEM;
	struct curl_slist *hdrs = NULL, *h;
	struct curl_header *ra = NULL;
	char *tokhdr = NULL;
	CURLcode rc;

	h = curl_slist_append(hdrs, "Content-Type: application/x-www-form-urlencoded; charset=utf-8");
	if (!h)
		goto out;
	hdrs = h;
	if (id && id->token) {
		/* curl's SigV4 signs the x-amz-* headers we add, which is what STS
		 * expects for a temporary identity's session token. */
		size_t n = strlen(id->token) + sizeof("x-amz-security-token: ");

		tokhdr = malloc(n);
		if (!tokhdr)
			goto out;
		snprintf(tokhdr, n, "x-amz-security-token: %s", id->token);
		h = curl_slist_append(hdrs, tokhdr);
		if (!h)
			goto out;
		hdrs = h;
	}
	curl_easy_setopt(c, CURLOPT_URL, aws->endpoint);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, aws->plain_http ? "http" : "https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, aws->connect_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, aws->total_ms);
	curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)RESPONSE_MAX);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, form->data);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)form->len);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "cibroker");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &ans->body);
	if (id) {
		curl_easy_setopt(c, CURLOPT_AWS_SIGV4, aws->sigv4);
		curl_easy_setopt(c, CURLOPT_USERNAME, id->access_key_id);
		curl_easy_setopt(c, CURLOPT_PASSWORD, id->secret);
	}
	rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		if (ans->body.oom)
			goto out;
		if (ans->body.toobig || rc == CURLE_FILESIZE_EXCEEDED)
			set_error(why, 0, "ResponseTooLarge", "STS answer over 1 MiB", RETRY_DEFAULT);
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			set_error(why, 0, "Timeout", curl_easy_strerror(rc), RETRY_DEFAULT);
		else
			set_error(why, 0, "NetworkError", curl_easy_strerror(rc), RETRY_DEFAULT);
		err = BROKER_ERR_UPSTREAM;
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ans->status);
	if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &ra) == CURLHE_OK && ra->value) {
		char *end;
		long v = strtol(ra->value, &end, 10);

		if (end != ra->value && !*trim(end) && v > 0)
			ans->retry_after = v > RETRY_CEILING ? RETRY_CEILING : (int)v;
	}
	err = BROKER_OK;
out:
	/* curl keeps pointers to these: detach before they go. */
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
	curl_slist_free_all(hdrs);
	broker_secret_free(tokhdr);
	return err;
}

/* ---- XML: strict tree walk by local name ---- */

static void refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext_id, const xmlChar *sys_id)
{
	/* STS answers never carry a DOCTYPE; one here is an XXE or entity
	 * expansion attempt. Stop before any declaration is processed. */
	xmlParserCtxtPtr ctxt = ctx;

	ctxt->_private = (void *)1;
	xmlStopParser(ctxt);
}

static xmlDocPtr xml_parse(const struct buf *body)
{
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;

	if (!body->data || body->len == 0 || body->len > INT32_MAX)
		return NULL;
	ctxt = xmlNewParserCtxt();
	if (!ctxt)
		return NULL;
	ctxt->sax->internalSubset = refuse_dtd;
	ctxt->_private = NULL;
	/* No NOENT (no entity substitution), no DTDLOAD, no network; NODICT so
	 * that text nodes own their storage and can be wiped. */
	doc = xmlCtxtReadMemory(ctxt, body->data, (int)body->len, NULL, NULL,
				XML_PARSE_NONET | XML_PARSE_NODICT | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (doc && (ctxt->_private || !ctxt->wellFormed || doc->intSubset || doc->extSubset)) {
		xmlFreeDoc(doc);
		doc = NULL;
	}
	xmlFreeParserCtxt(ctxt);
	return doc;
}

/* Text nodes hold the secret key and session token: wipe them before the
 * document goes back to the allocator. */
static void xml_wipe(xmlNodePtr n)
{
	for (; n; n = n->next) {
		if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) && n->content)
			OPENSSL_cleanse(n->content, strlen((const char *)n->content));
		xml_wipe(n->children);
	}
}

static void xml_free(xmlDocPtr doc)
{
	if (!doc)
		return;
	xml_wipe(doc->children);
	xmlFreeDoc(doc);
}

/* The one element child named `name` (in the STS namespace if sts_ns);
 * NULL if absent or repeated: a duplicate is as suspect as a missing one. */
static xmlNodePtr xml_child(xmlNodePtr parent, const char *name, bool sts_ns)
{
	xmlNodePtr n, found = NULL;

	if (!parent)
		return NULL;
	for (n = parent->children; n; n = n->next) {
		if (n->type != XML_ELEMENT_NODE || strcmp((const char *)n->name, name) != 0)
			continue;
		if (sts_ns && (!n->ns || !n->ns->href || strcmp((const char *)n->ns->href, STS_NS) != 0))
			continue;
		if (found)
			return NULL;
		found = n;
	}
	return found;
}

/* Text of an element that must contain only text. */
static char *xml_text(xmlNodePtr n)
{
	xmlNodePtr c;
	struct buf b = {0};

	if (!n)
		return NULL;
	for (c = n->children; c; c = c->next) {
		if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE)
			goto fail;
		if (c->content && !buf_append(&b, (const char *)c->content, strlen((const char *)c->content), 65536))
			goto fail;
	}
	if (!b.data && !buf_append(&b, "", 0, 1))
		goto fail;
	return b.data; /* NUL-terminated, cap >= len + 1; freed with broker_secret_free */
fail:
	buf_wipe(&b);
	return NULL;
}

/* "2026-11-22T01:24:06Z", optionally with fractional seconds. */
static bool parse_iso8601(const char *s, int64_t *ret)
{
	static const char pattern[] = "dddd-dd-ddTdd:dd:dd";
	struct tm tm = {0};
	const char *p;
	time_t t;
	size_t i;

	for (i = 0; pattern[i]; i++)
		if (pattern[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != pattern[i])
			return false;
	p = s + i;
	if (*p == '.') {
		if (!isdigit((unsigned char)*++p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (strcmp(p, "Z") != 0)
		return false;
	tm.tm_year = atoi(s) - 1900;
	tm.tm_mon = atoi(s + 5) - 1;
	tm.tm_mday = atoi(s + 8);
	tm.tm_hour = atoi(s + 11);
	tm.tm_min = atoi(s + 14);
	tm.tm_sec = atoi(s + 17);
	if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return false;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	*ret = (int64_t)t;
	return true;
}

/* <XResponse xmlns=STS><XResult><Credentials>{AccessKeyId,...}. */
static bool parse_credentials(xmlDocPtr doc, const char *action, struct aws_credentials *ret)
{
	char response[64], result[64], *expiration = NULL;
	struct aws_credentials c = {0};
	xmlNodePtr root = xmlDocGetRootElement(doc), cred;
	bool ok = false;

	snprintf(response, sizeof(response), "%sResponse", action);
	snprintf(result, sizeof(result), "%sResult", action);
	if (!root || strcmp((const char *)root->name, response) != 0 || !root->ns || !root->ns->href ||
	    strcmp((const char *)root->ns->href, STS_NS) != 0)
		return false;
	cred = xml_child(xml_child(root, result, true), "Credentials", true);
	c.access_key_id = xml_text(xml_child(cred, "AccessKeyId", true));
	c.secret_access_key = xml_text(xml_child(cred, "SecretAccessKey", true));
	c.session_token = xml_text(xml_child(cred, "SessionToken", true));
	expiration = xml_text(xml_child(cred, "Expiration", true));
	if (!c.access_key_id || !c.secret_access_key || !c.session_token || !expiration)
		goto out;
	/* The token ends up in HTTP headers and env files downstream. */
	if (!token_chars_ok(c.access_key_id, ACCESS_KEY_ID_MAX) || !token_chars_ok(c.secret_access_key, SECRET_MAX) ||
	    !token_chars_ok(c.session_token, SESSION_TOKEN_MAX) || !parse_iso8601(expiration, &c.expiration))
		goto out;
	/* Already expired means a broken upstream or a wildly wrong clock. */
	if (c.expiration <= broker_now())
		goto out;
	broker_fmt_time(c.expiration, c.expiration_text, sizeof(c.expiration_text));
	*ret = c;
	memset(&c, 0, sizeof(c));
	ok = true;
out:
	aws_credentials_clear(&c);
	free(expiration);
	return ok;
}

/* STS: ErrorResponse/Error/{Code,Message}; moto and IAM-style services nest
 * Error in an Errors element. The namespace is not checked: nothing secret
 * is taken from an error. */
static bool parse_error(xmlDocPtr doc, char **code, char **message)
{
	xmlNodePtr root = xmlDocGetRootElement(doc), e;

	if (!root || strcmp((const char *)root->name, "ErrorResponse") != 0)
		return false;
	e = xml_child(root, "Error", false);
	if (!e)
		e = xml_child(xml_child(root, "Errors", false), "Error", false);
	*code = xml_text(xml_child(e, "Code", false));
	*message = xml_text(xml_child(e, "Message", false));
	if (!*code || !**code) {
		free(*code);
		free(*message);
		*code = *message = NULL;
		return false;
	}
	return true;
}

static bool in_list(const char *code, const char *const *list, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(code, list[i]) == 0)
			return true;
	return false;
}

/* STS is busy: come back later. */
static const char *const throttle_codes[] = {
	"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
	"ServiceUnavailable", "InternalFailure", "InternalError",
};
/* The broker's own identity was refused: an operator must fix the broker. */
static const char *const identity_codes[] = {
	"InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken",
	"ExpiredToken", "RequestExpired", "InvalidAccessKeyId", "UnrecognizedClientException",
};

/* One STS Query API call. own_identity: the call fetches the broker's own
 * identity, so every refusal is the broker's problem (UPSTREAM).
 * *identity_rejected is set when STS refused the signing identity. */
static enum broker_err sts_call(struct broker_aws *aws, CURL *c, const struct buf *form, const struct identity *id,
				const char *action, bool own_identity, struct aws_credentials *ret,
				struct aws_error *why, bool *identity_rejected)
{
	struct http_answer ans = {0};
	enum broker_err err;
	xmlDocPtr doc = NULL;
	char *code = NULL, *message = NULL, fallback[64];
	int retry;

	*identity_rejected = false;
	err = http_post(aws, c, form, id, &ans, why);
	if (err != BROKER_OK)
		goto out;
	doc = xml_parse(&ans.body);
	if (ans.status == 200) {
		if (!doc || !parse_credentials(doc, action, ret)) {
			set_error(why, 200, "BadResponse", "STS answer is not a valid credentials document", RETRY_DEFAULT);
			err = BROKER_ERR_UPSTREAM;
		}
		goto out;
	}
	err = BROKER_ERR_UPSTREAM;
	retry = ans.retry_after ? ans.retry_after : RETRY_DEFAULT;
	if (!doc || !parse_error(doc, &code, &message)) {
		/* No STS error document: a proxy, a load balancer, garbage. */
		snprintf(fallback, sizeof(fallback), "STS answered HTTP %ld without an error document", ans.status);
		set_error(why, (int)ans.status, "BadResponse", fallback, retry);
		goto out;
	}
	if (ans.status >= 500 || in_list(code, throttle_codes, BROKER_ARRAY_SIZE(throttle_codes))) {
		set_error(why, (int)ans.status, code, message, retry);
	} else if (in_list(code, identity_codes, BROKER_ARRAY_SIZE(identity_codes))) {
		*identity_rejected = true;
		set_error(why, (int)ans.status, code, message, 0);
	} else if (ans.status >= 400 && ans.status < 500 && !own_identity) {
		set_error(why, (int)ans.status, code, message, 0);
		err = BROKER_ERR_DENIED;
	} else {
		set_error(why, (int)ans.status, code, message, own_identity ? 0 : retry);
	}
out:
	xml_free(doc);
	buf_wipe(&ans.body);
	free(code);
	free(message);
	return err;
}

/* AssumeRoleWithWebIdentity (unsigned: the token is the proof) for the
 * broker's own identity, e.g. an EKS service account. The token file is
 * re-read every time: the kubelet rotates it. */
static enum broker_err web_identity_fetch(struct broker_aws *aws, struct identity *ret, struct aws_error *why)
{
	enum broker_err err;
	struct buf form = {0};
	struct aws_credentials cr = {0};
	char *token = NULL;
	size_t len = 0;
	bool rejected;
	CURL *c = NULL;

	err = broker_read_file(aws->web_token_file, WEB_TOKEN_MAX, &token, &len);
	if (err != BROKER_OK || !*trim(token)) {
		set_error(why, 0, "NoIdentity", "AWS_WEB_IDENTITY_TOKEN_FILE unreadable, empty or over 16 KiB", 0);
		err = BROKER_ERR_UPSTREAM;
		goto out;
	}
	err = BROKER_ERR_NOMEM;
	c = curl_easy_init();
	if (!c)
		goto out;
	if (!form_add(&form, c, "Action", "AssumeRoleWithWebIdentity") || !form_add(&form, c, "Version", STS_VERSION) ||
	    !form_add(&form, c, "RoleArn", aws->web_role_arn) ||
	    !form_add(&form, c, "RoleSessionName", aws->web_session_name) ||
	    !form_add(&form, c, "WebIdentityToken", trim(token)))
		goto out;
	err = sts_call(aws, c, &form, NULL, "AssumeRoleWithWebIdentity", true, &cr, why, &rejected);
	if (err != BROKER_OK)
		goto out;
	ret->access_key_id = cr.access_key_id;
	ret->secret = cr.secret_access_key;
	ret->token = cr.session_token;
	ret->expiration = cr.expiration;
	memset(&cr, 0, sizeof(cr));
out:
	aws_credentials_clear(&cr);
	buf_wipe(&form);
	broker_wipe_free(token, len);
	curl_easy_cleanup(c);
	return err;
}

/* A private copy of the signing identity, refreshing a temporary one when
 * it is within refresh_margin of expiry. One thread refreshes; the others
 * keep using the old identity while it is still valid, or wait. A failed
 * refresh keeps a still-valid identity and is not retried for 5 s. */
static enum broker_err identity_get(struct broker_aws *aws, struct identity *ret, struct aws_error *why)
{
	enum broker_err err = BROKER_OK;
	struct identity fresh_id;
	struct aws_error e;

	pthread_mutex_lock(&aws->lock);
	for (;;) {
		int64_t now = broker_now();
		bool have = aws->id.access_key_id != NULL;
		bool valid = have && (aws->id.expiration == 0 || now < aws->id.expiration - 30);
		bool fresh = have && (aws->id.expiration == 0 || now < aws->id.expiration - aws->refresh_margin);
		bool holdoff = aws->last_failure_us && broker_mono_us() - aws->last_failure_us < REFRESH_FAIL_HOLDOFF_US;

		if (aws->source != SOURCE_WEB_IDENTITY || fresh || (valid && (aws->refreshing || holdoff)))
			break;
		if (aws->refreshing) {
			pthread_cond_wait(&aws->refreshed, &aws->lock);
			continue;
		}
		if (holdoff) {
			if (why)
				*why = aws->last_failure;
			err = BROKER_ERR_UPSTREAM;
			goto out;
		}
		aws->refreshing = true;
		pthread_mutex_unlock(&aws->lock);
		memset(&fresh_id, 0, sizeof(fresh_id));
		err = web_identity_fetch(aws, &fresh_id, &e);
		pthread_mutex_lock(&aws->lock);
		aws->refreshing = false;
		pthread_cond_broadcast(&aws->refreshed);
		if (err == BROKER_OK) {
			identity_clear(&aws->id);
			aws->id = fresh_id;
			aws->last_failure_us = 0;
			break;
		}
		aws->last_failure_us = broker_mono_us();
		aws->last_failure = e;
		if (!valid) {
			if (why)
				*why = e;
			goto out;
		}
		err = BROKER_OK;
		break;
	}
	if (!identity_copy(&aws->id, ret))
		err = BROKER_ERR_NOMEM;
out:
	pthread_mutex_unlock(&aws->lock);
	return err;
}

/* STS said our temporary identity is bad: make the next call fetch a new one. */
static void identity_invalidate(struct broker_aws *aws, const char *access_key_id)
{
	pthread_mutex_lock(&aws->lock);
	if (aws->source == SOURCE_WEB_IDENTITY && aws->id.access_key_id &&
	    strcmp(aws->id.access_key_id, access_key_id) == 0) {
		identity_clear(&aws->id);
		aws->last_failure_us = 0;
	}
	pthread_mutex_unlock(&aws->lock);
}

static bool request_valid(const struct aws_assume_request *req, const char **reason)
{
	const char *key;
	json_t *val;

	if (!req->role_arn || strncmp(req->role_arn, "arn:", 4) != 0 || !token_chars_ok(req->role_arn, AWS_ROLE_ARN_MAX))
		*reason = "role_arn is not an ARN";
	else if (!req->session_name || !sts_name_ok(req->session_name, AWS_SESSION_NAME_MAX))
		*reason = "session name must be 2-64 characters of [A-Za-z0-9_+=,.@-]";
	else if (req->source_identity && !sts_name_ok(req->source_identity, AWS_SOURCE_IDENTITY_MAX))
		*reason = "source identity must be 2-64 characters of [A-Za-z0-9_+=,.@-]";
	else if (req->duration_s < AWS_DURATION_MIN || req->duration_s > AWS_DURATION_MAX)
		*reason = "duration must be 900-43200 s";
	else if (req->session_policy && (!*req->session_policy || utf8_chars(req->session_policy) > AWS_SESSION_POLICY_MAX))
		*reason = "session policy must be 1-2048 characters";
	else if (req->session_tags && (!json_is_object(req->session_tags) ||
				       json_object_size(req->session_tags) > AWS_SESSION_TAGS_MAX))
		*reason = "session tags must be an object of at most 50 tags";
	else
		*reason = NULL;
	if (*reason || !req->session_tags)
		return !*reason;
	json_object_foreach((json_t *)req->session_tags, key, val) {
		if (!*key || utf8_chars(key) > AWS_TAG_KEY_MAX || !json_is_string(val) ||
		    utf8_chars(json_string_value(val)) > AWS_TAG_VALUE_MAX) {
			*reason = "session tag keys must be 1-128 and values 0-256 characters";
			return false;
		}
	}
	return true;
}

static bool assume_form(struct buf *form, CURL *c, const struct aws_assume_request *req)
{
	char name[48], duration[24];
	const char *key;
	json_t *val;
	size_t n = 0;

	snprintf(duration, sizeof(duration), "%lld", (long long)req->duration_s);
	if (!form_add(form, c, "Action", "AssumeRole") || !form_add(form, c, "Version", STS_VERSION) ||
	    !form_add(form, c, "RoleArn", req->role_arn) || !form_add(form, c, "RoleSessionName", req->session_name) ||
	    !form_add(form, c, "DurationSeconds", duration))
		return false;
	if (req->source_identity && !form_add(form, c, "SourceIdentity", req->source_identity))
		return false;
	if (req->session_policy && !form_add(form, c, "Policy", req->session_policy))
		return false;
	if (!req->session_tags)
		return true;
	json_object_foreach((json_t *)req->session_tags, key, val) {
		n++;
		snprintf(name, sizeof(name), "Tags.member.%zu.Key", n);
		if (!form_add(form, c, name, key))
			return false;
		snprintf(name, sizeof(name), "Tags.member.%zu.Value", n);
		if (!form_add(form, c, name, json_string_value(val)))
			return false;
	}
	return true;
}

enum broker_err aws_assume_role(struct broker_aws *aws, const struct aws_assume_request *req,
				struct aws_credentials *ret, struct aws_error *why)
{
	enum broker_err err = BROKER_ERR_INVALID;
	struct identity id = {0};
	struct buf form = {0};
	struct aws_credentials cr = {0};
	const char *reason;
	bool rejected = false;
	CURL *c = NULL;
	int attempt;

	if (why)
		memset(why, 0, sizeof(*why));
	if (!request_valid(req, &reason)) {
		set_error(why, 0, "InvalidRequest", reason, 0);
		return BROKER_ERR_INVALID;
	}
	err = BROKER_ERR_NOMEM;
	c = curl_easy_init();
	if (!c || !assume_form(&form, c, req))
		goto out;
	/* A second attempt only when STS refused a temporary identity that we
	 * can replace (rotated or revoked web identity session). */
	for (attempt = 0; attempt < 2; attempt++) {
		err = identity_get(aws, &id, why);
		if (err != BROKER_OK)
			goto out;
		err = sts_call(aws, c, &form, &id, "AssumeRole", false, &cr, why, &rejected);
		if (err == BROKER_OK || !rejected || aws->source != SOURCE_WEB_IDENTITY)
			break;
		identity_invalidate(aws, id.access_key_id);
		identity_clear(&id);
		curl_easy_reset(c);
	}
	if (err != BROKER_OK)
		goto out;
	*ret = cr;
	memset(&cr, 0, sizeof(cr));
out:
	if (err == BROKER_ERR_NOMEM)
		set_error(why, 0, "NoMemory", "out of memory", 0);
	aws_credentials_clear(&cr);
	identity_clear(&id);
	buf_wipe(&form);
	curl_easy_cleanup(c);
	return err;
}

void aws_credentials_clear(struct aws_credentials *c)
{
	if (!c)
		return;
	broker_secret_free(c->access_key_id);
	broker_secret_free(c->secret_access_key);
	broker_secret_free(c->session_token);
	memset(c, 0, sizeof(*c));
}
