/* SPDX-License-Identifier: Apache-2.0 */
/* sts:AssumeRole for the `aws` credential kind. libcurl signs (SigV4), libxml2
 * parses; this file only builds the form, walks the answer and decides what a
 * failure means for the caller. */
#include "aws-int.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/crypto.h>

#include "cibroker/util.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
	/* Both are idempotent; done once here so the mint module works whoever
	 * the caller is (the cli, a unit test). */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	xmlInitParser();
}

void aws_set_error(struct aws_error *why, int status, const char *code, const char *message, int retry_after)
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
bool aws_token_chars_ok(const char *s, size_t max)
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
bool aws_sts_name_ok(const char *s, size_t max)
{
	size_t n = strlen(s), i;

	if (n < 2 || n > max)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_+=,.@-", s[i]))
			return false;
	return true;
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
	if (sts_endpoint && !aws_token_chars_ok(sts_endpoint, 2048)) {
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
	aws->plain_http = strncasecmp(aws->endpoint, "http://", 7) == 0;
	err = aws_identity_configure(aws, profile, &reason);
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
	aws_identity_clear(&aws->id);
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


bool aws_form_add(struct broker_buf *form, CURL *c, const char *key, const char *value)
{
	char *esc = curl_easy_escape(c, value, 0);
	const char *p;
	size_t run;
	bool ok;

	if (!esc) {
		form->oom = true;
		return false;
	}
	ok = (form->len == 0 || aws_buf_append(form, "&", 1, SIZE_MAX)) && aws_buf_append(form, key, strlen(key), SIZE_MAX) &&
	     aws_buf_append(form, "=", 1, SIZE_MAX);
	/* Space as '+' (form encoding, as the AWS SDKs send it) rather than
	 * curl's %20: both are valid, but verifiers that re-encode the parsed
	 * form before checking the signature (moto) only agree with '+'. */
	for (p = esc; ok && *p; p += run) {
		run = strncmp(p, "%20", 3) == 0 ? 3 : 1;
		ok = run == 3 ? aws_buf_append(form, "+", 1, SIZE_MAX) : aws_buf_append(form, p, 1, SIZE_MAX);
	}
	broker_wipe_free(esc, strlen(esc));
	return ok;
}

struct http_answer {
	long status;         /* 0: no answer */
	struct broker_buf body;
	int retry_after;     /* Retry-After seconds, 0 if absent */
};

/* POST form to the endpoint; signed with id if non-NULL. On transport
 * failure returns BROKER_ERR_UPSTREAM with why filled. */
static enum broker_err http_post(struct broker_aws *aws, CURL *c, const struct broker_buf *form, const struct identity *id,
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
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, broker_buf_write);
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
			aws_set_error(why, 0, "ResponseTooLarge", "STS answer over 1 MiB", RETRY_DEFAULT);
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			aws_set_error(why, 0, "Timeout", curl_easy_strerror(rc), RETRY_DEFAULT);
		else
			aws_set_error(why, 0, "NetworkError", curl_easy_strerror(rc), RETRY_DEFAULT);
		err = BROKER_ERR_UPSTREAM;
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ans->status);
	if (curl_easy_header(c, "Retry-After", 0, CURLH_HEADER, -1, &ra) == CURLHE_OK && ra->value) {
		char *end;
		long v = strtol(ra->value, &end, 10);

		if (end != ra->value && !*aws_trim(end) && v > 0)
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

static xmlDocPtr xml_parse(const struct broker_buf *body)
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
	struct broker_buf b = {0};

	if (!n)
		return NULL;
	for (c = n->children; c; c = c->next) {
		if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE)
			goto fail;
		if (c->content && !aws_buf_append(&b, (const char *)c->content, strlen((const char *)c->content), 65536))
			goto fail;
	}
	if (!b.data && !aws_buf_append(&b, "", 0, 1))
		goto fail;
	return b.data; /* NUL-terminated, cap >= len + 1; freed with broker_secret_free */
fail:
	aws_buf_wipe(&b);
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
	if (!aws_token_chars_ok(c.access_key_id, ACCESS_KEY_ID_MAX) || !aws_token_chars_ok(c.secret_access_key, SECRET_MAX) ||
	    !aws_token_chars_ok(c.session_token, SESSION_TOKEN_MAX) || !parse_iso8601(expiration, &c.expiration))
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
enum broker_err aws_sts_call(struct broker_aws *aws, CURL *c, const struct broker_buf *form, const struct identity *id,
				const char *action, bool own_identity, struct aws_credentials *ret,
				struct aws_error *why, bool *identity_rejected)
{
	struct http_answer ans = {.body = {.max = RESPONSE_MAX}};
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
			aws_set_error(why, 200, "BadResponse", "STS answer is not a valid credentials document", RETRY_DEFAULT);
			err = BROKER_ERR_UPSTREAM;
		}
		goto out;
	}
	err = BROKER_ERR_UPSTREAM;
	retry = ans.retry_after ? ans.retry_after : RETRY_DEFAULT;
	if (!doc || !parse_error(doc, &code, &message)) {
		/* No STS error document: a proxy, a load balancer, garbage. */
		snprintf(fallback, sizeof(fallback), "STS answered HTTP %ld without an error document", ans.status);
		aws_set_error(why, (int)ans.status, "BadResponse", fallback, retry);
		goto out;
	}
	if (ans.status >= 500 || in_list(code, throttle_codes, BROKER_ARRAY_SIZE(throttle_codes))) {
		aws_set_error(why, (int)ans.status, code, message, retry);
	} else if (in_list(code, identity_codes, BROKER_ARRAY_SIZE(identity_codes))) {
		*identity_rejected = true;
		aws_set_error(why, (int)ans.status, code, message, 0);
	} else if (ans.status >= 400 && ans.status < 500 && !own_identity) {
		aws_set_error(why, (int)ans.status, code, message, 0);
		err = BROKER_ERR_DENIED;
	} else {
		aws_set_error(why, (int)ans.status, code, message, own_identity ? 0 : retry);
	}
out:
	xml_free(doc);
	aws_buf_wipe(&ans.body);
	free(code);
	free(message);
	return err;
}

static bool request_valid(const struct aws_assume_request *req, const char **reason)
{
	const char *key;
	json_t *val;

	if (!req->role_arn || strncmp(req->role_arn, "arn:", 4) != 0 || !aws_token_chars_ok(req->role_arn, AWS_ROLE_ARN_MAX))
		*reason = "role_arn is not an ARN";
	else if (!req->session_name || !aws_sts_name_ok(req->session_name, AWS_SESSION_NAME_MAX))
		*reason = "session name must be 2-64 characters of [A-Za-z0-9_+=,.@-]";
	else if (req->source_identity && !aws_sts_name_ok(req->source_identity, AWS_SOURCE_IDENTITY_MAX))
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

static bool assume_form(struct broker_buf *form, CURL *c, const struct aws_assume_request *req)
{
	char name[48], duration[24];
	const char *key;
	json_t *val;
	size_t n = 0;

	snprintf(duration, sizeof(duration), "%lld", (long long)req->duration_s);
	if (!aws_form_add(form, c, "Action", "AssumeRole") || !aws_form_add(form, c, "Version", STS_VERSION) ||
	    !aws_form_add(form, c, "RoleArn", req->role_arn) || !aws_form_add(form, c, "RoleSessionName", req->session_name) ||
	    !aws_form_add(form, c, "DurationSeconds", duration))
		return false;
	if (req->source_identity && !aws_form_add(form, c, "SourceIdentity", req->source_identity))
		return false;
	if (req->session_policy && !aws_form_add(form, c, "Policy", req->session_policy))
		return false;
	if (!req->session_tags)
		return true;
	json_object_foreach((json_t *)req->session_tags, key, val) {
		n++;
		snprintf(name, sizeof(name), "Tags.member.%zu.Key", n);
		if (!aws_form_add(form, c, name, key))
			return false;
		snprintf(name, sizeof(name), "Tags.member.%zu.Value", n);
		if (!aws_form_add(form, c, name, json_string_value(val)))
			return false;
	}
	return true;
}

enum broker_err aws_assume_role(struct broker_aws *aws, const struct aws_assume_request *req,
				struct aws_credentials *ret, struct aws_error *why)
{
	enum broker_err err = BROKER_ERR_INVALID;
	struct identity id = {0};
	struct broker_buf form = {0};
	struct aws_credentials cr = {0};
	const char *reason;
	bool rejected = false;
	CURL *c = NULL;
	int attempt;

	if (why)
		memset(why, 0, sizeof(*why));
	if (!request_valid(req, &reason)) {
		aws_set_error(why, 0, "InvalidRequest", reason, 0);
		return BROKER_ERR_INVALID;
	}
	err = BROKER_ERR_NOMEM;
	c = curl_easy_init();
	if (!c || !assume_form(&form, c, req))
		goto out;
	/* A second attempt only when STS refused a temporary identity that we
	 * can replace (rotated or revoked web identity session). */
	for (attempt = 0; attempt < 2; attempt++) {
		err = aws_identity_get(aws, &id, why);
		if (err != BROKER_OK)
			goto out;
		err = aws_sts_call(aws, c, &form, &id, "AssumeRole", false, &cr, why, &rejected);
		if (err == BROKER_OK || !rejected || aws->source != SOURCE_WEB_IDENTITY)
			break;
		aws_identity_invalidate(aws, id.access_key_id);
		aws_identity_clear(&id);
		curl_easy_reset(c);
	}
	if (err != BROKER_OK)
		goto out;
	*ret = cr;
	memset(&cr, 0, sizeof(cr));
out:
	if (err == BROKER_ERR_NOMEM)
		aws_set_error(why, 0, "NoMemory", "out of memory", 0);
	aws_credentials_clear(&cr);
	aws_identity_clear(&id);
	aws_buf_wipe(&form);
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
