/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cibroker/request.h"

#define FORM "application/x-www-form-urlencoded"
#define JSON "application/json"

static const struct {
	const char *ct;
	const char *body;
	size_t len; /* 0: strlen */
	int ok;
	const char *audience; /* expected when ok */
	const char *token;
} rows[] = {
	{FORM, "grant_type=g&subject_token=a.b.c&audience=web", 0, 1, "web", "a.b.c"},
	{FORM, "audience=we%62&subject_token=a+b", 0, 1, "web", "a b"},
	{"Application/X-WWW-Form-Urlencoded; charset=UTF-8", "audience=web", 0, 1, "web", NULL},
	{FORM, "audience=&subject_token=x", 0, 1, NULL, "x"},       /* empty = absent */
	{FORM, "unknown=1&audience=web", 0, 1, "web", NULL},        /* unknown ignored */
	{FORM, "audience=web&&", 0, 1, "web", NULL},
	{FORM, "audience=a&audience=b", 0, 0, NULL, NULL},          /* duplicate */
	{FORM, "audience=a&audi%65nce=b", 0, 0, NULL, NULL},         /* duplicate via escape */
	{FORM, "x=1&x=2", 0, 0, NULL, NULL},                        /* any duplicate */
	{FORM, "audience=%zz", 0, 0, NULL, NULL},
	{FORM, "audience=%4", 0, 0, NULL, NULL},
	{FORM, "audience=%", 0, 0, NULL, NULL},
	{FORM, "audience=a%00b", 0, 0, NULL, NULL},                 /* NUL via escape */
	{FORM, "audience=a\0b", 12, 0, NULL, NULL},                 /* raw NUL */
	{FORM, "audience=web&x=%zz", 0, 0, NULL, NULL},             /* malformed, though unknown */
	{FORM, "audience=web&x=%", 0, 0, NULL, NULL},
	{FORM, "audience=web&x=%2", 0, 0, NULL, NULL},
	{FORM, "audience=web&x=a%00", 0, 0, NULL, NULL},
	{FORM, "audience=web&x=%41%2b+", 0, 1, "web", NULL},        /* well-formed unknown: ignored */
	{JSON, "{\"audience\":\"web\",\"subject_token\":\"t\"}", 0, 1, "web", "t"},
	{JSON "; charset=utf-8", "{\"audience\":\"web\"}", 0, 1, "web", NULL},
	{JSON, "{\"audience\":\"a\",\"audience\":\"b\"}", 0, 0, NULL, NULL},
	{JSON, "{\"audience\":1}", 0, 0, NULL, NULL},
	{JSON, "{\"audience\":null}", 0, 0, NULL, NULL},
	{JSON, "{\"audience\":\"a\\u0000b\"}", 0, 0, NULL, NULL},
	{JSON, "[\"audience\"]", 0, 0, NULL, NULL},
	{JSON, "{\"audience\":\"web\"} trailing", 0, 0, NULL, NULL},
	{JSON, "{\"other\":{\"deep\":[1,2]},\"audience\":\"web\"}", 0, 1, "web", NULL},
	{"text/plain", "audience=web", 0, 0, NULL, NULL},
	{NULL, "audience=web", 0, 0, NULL, NULL},
	{"application/json; charset=latin1", "{}", 0, 0, NULL, NULL},
	{"application/jsonx", "{}", 0, 0, NULL, NULL},
};

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct token_request req;
		const char *why = NULL;
		size_t len = rows[i].len ? rows[i].len : strlen(rows[i].body);
		enum broker_err err;

		memset(&req, 0x5a, sizeof(req));
		err = token_request_parse(rows[i].ct, rows[i].body, len, &req, &why);
		if (rows[i].ok) {
			CHECK(err == BROKER_OK, "row %zu: %s", i, why ? why : "");
			if (err != BROKER_OK)
				continue;
			CHECK((rows[i].audience == NULL) == (req.audience == NULL) &&
				      (!req.audience || strcmp(req.audience, rows[i].audience) == 0),
			      "row %zu audience", i);
			CHECK((rows[i].token == NULL) == (req.subject_token == NULL) &&
				      (!req.subject_token || strcmp(req.subject_token, rows[i].token) == 0),
			      "row %zu subject_token", i);
			token_request_clear(&req);
		} else {
			CHECK(err == BROKER_ERR_INVALID && why != NULL, "row %zu must be refused", i);
		}
	}
	return check_done();
}
