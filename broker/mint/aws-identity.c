/* SPDX-License-Identifier: Apache-2.0 */
/* The broker's own AWS identity: environment keys, a web identity token
 * (AssumeRoleWithWebIdentity, refreshed before expiry) or a profile of the
 * shared credentials file. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws-int.h"
#include "cibroker/util.h"

void aws_identity_clear(struct identity *id)
{
	broker_secret_free(id->access_key_id);
	broker_secret_free(id->secret);
	broker_secret_free(id->token);
	memset(id, 0, sizeof(*id));
}

bool aws_identity_copy(const struct identity *src, struct identity *dst)
{
	memset(dst, 0, sizeof(*dst));
	dst->access_key_id = strdup(src->access_key_id);
	dst->secret = strdup(src->secret);
	dst->token = src->token ? strdup(src->token) : NULL;
	dst->expiration = src->expiration;
	if (!dst->access_key_id || !dst->secret || (src->token && !dst->token)) {
		aws_identity_clear(dst);
		return false;
	}
	return true;
}

char *aws_trim(char *s)
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
		char *l = aws_trim(line), *eq, *key, *val, **slot = NULL;

		if (!*l || *l == '#' || *l == ';')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');

			if (!close || *aws_trim(close + 1)) {
				*reason = "shared credentials file: malformed section header";
				goto out;
			}
			*close = '\0';
			in_section = strcmp(aws_trim(l + 1), profile) == 0;
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
		key = aws_trim(l);
		val = aws_trim(eq + 1);
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
	aws_identity_clear(&id);
	broker_wipe_free(buf, len);
	return err;
}

static bool env_set(const char *name)
{
	const char *v = getenv(name);

	return v && *v;
}

enum broker_err aws_identity_configure(struct broker_aws *aws, const char *profile, const char **reason)
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
			aws_identity_clear(&id);
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
		if (!aws_sts_name_ok(aws->web_session_name, AWS_SESSION_NAME_MAX)) {
			*reason = "AWS_ROLE_SESSION_NAME must be 2-64 characters of [A-Za-z0-9_+=,.@-]";
			return BROKER_ERR_CONFIG;
		}
		if (strncmp(aws->web_role_arn, "arn:", 4) != 0 || !aws_token_chars_ok(aws->web_role_arn, AWS_ROLE_ARN_MAX)) {
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
	if (!aws_token_chars_ok(id.access_key_id, ACCESS_KEY_ID_MAX) || !aws_token_chars_ok(id.secret, SECRET_MAX) ||
	    (id.token && !aws_token_chars_ok(id.token, SESSION_TOKEN_MAX))) {
		aws_identity_clear(&id);
		*reason = "AWS credentials contain spaces, control characters or are too long";
		return BROKER_ERR_CONFIG;
	}
	aws->id = id;
	return BROKER_OK;
}

/* AssumeRoleWithWebIdentity (unsigned: the token is the proof) for the
 * broker's own identity, e.g. an EKS service account. The token file is
 * re-read every time: the kubelet rotates it. */
static enum broker_err web_identity_fetch(struct broker_aws *aws, struct identity *ret, struct aws_error *why)
{
	enum broker_err err;
	struct broker_buf form = {0};
	struct aws_credentials cr = {0};
	char *token = NULL;
	size_t len = 0;
	bool rejected;
	CURL *c = NULL;

	err = broker_read_file(aws->web_token_file, WEB_TOKEN_MAX, &token, &len);
	if (err != BROKER_OK || !*aws_trim(token)) {
		aws_set_error(why, 0, "NoIdentity", "AWS_WEB_IDENTITY_TOKEN_FILE unreadable, empty or over 16 KiB", 0);
		err = BROKER_ERR_UPSTREAM;
		goto out;
	}
	err = BROKER_ERR_NOMEM;
	c = curl_easy_init();
	if (!c)
		goto out;
	if (!aws_form_add(&form, c, "Action", "AssumeRoleWithWebIdentity") || !aws_form_add(&form, c, "Version", STS_VERSION) ||
	    !aws_form_add(&form, c, "RoleArn", aws->web_role_arn) ||
	    !aws_form_add(&form, c, "RoleSessionName", aws->web_session_name) ||
	    !aws_form_add(&form, c, "WebIdentityToken", aws_trim(token)))
		goto out;
	err = aws_sts_call(aws, c, &form, NULL, "AssumeRoleWithWebIdentity", true, &cr, why, &rejected);
	if (err != BROKER_OK)
		goto out;
	ret->access_key_id = cr.access_key_id;
	ret->secret = cr.secret_access_key;
	ret->token = cr.session_token;
	ret->expiration = cr.expiration;
	memset(&cr, 0, sizeof(cr));
out:
	aws_credentials_clear(&cr);
	aws_buf_wipe(&form);
	broker_wipe_free(token, len);
	curl_easy_cleanup(c);
	return err;
}

/* A private copy of the signing identity, refreshing a temporary one when
 * it is within refresh_margin of expiry. One thread refreshes; the others
 * keep using the old identity while it is still valid, or wait. A failed
 * refresh keeps a still-valid identity and is not retried for 5 s. */
enum broker_err aws_identity_get(struct broker_aws *aws, struct identity *ret, struct aws_error *why)
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
			aws_identity_clear(&aws->id);
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
	if (!aws_identity_copy(&aws->id, ret))
		err = BROKER_ERR_NOMEM;
out:
	pthread_mutex_unlock(&aws->lock);
	return err;
}

/* STS said our temporary identity is bad: make the next call fetch a new one. */
void aws_identity_invalidate(struct broker_aws *aws, const char *access_key_id)
{
	pthread_mutex_lock(&aws->lock);
	if (aws->source == SOURCE_WEB_IDENTITY && aws->id.access_key_id &&
	    strcmp(aws->id.access_key_id, access_key_id) == 0) {
		aws_identity_clear(&aws->id);
		aws->last_failure_us = 0;
	}
	pthread_mutex_unlock(&aws->lock);
}
