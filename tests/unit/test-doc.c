/* SPDX-License-Identifier: Apache-2.0 */
/* The positioned document tree: positions, quoting, documents, typing, and
 * every refusal with its exact FILE:LINE:COL line. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cibroker/diag.h"
#include "cibroker/doc.h"

/* Load text; on failure the diagnostics are joined by '\n' into *msgs. */
static struct doc_file *load(const char *text, bool json, char **msgs)
{
	struct diag *d = diag_new();
	struct doc_file *f = NULL;
	size_t total = 1;
	enum broker_err err;

	err = doc_load_buffer(json ? "t.json" : "t.yaml", text, strlen(text), json, d, &f);
	for (size_t i = 0; i < diag_count(d); i++)
		total += strlen(diag_line(d, i)) + 1;
	*msgs = calloc(1, total);
	for (size_t i = 0; i < diag_count(d); i++) {
		if (i)
			strcat(*msgs, "\n");
		strcat(*msgs, diag_line(d, i));
	}
	if ((err == BROKER_OK) != (f != NULL) || (err == BROKER_OK && diag_errors(d) != 0)) {
		fprintf(stderr, "inconsistent result for %s\n", text);
		abort();
	}
	diag_free(d);
	return f;
}

struct err_case {
	const char *text;
	bool json;
	const char *expect; /* all diagnostics, joined by '\n' */
};

static const struct err_case err_cases[] = {
	{"a: 1\nb: 2\na: 3\n", false, "t.yaml:3:1: duplicate key 'a' (first defined at 1:1)"},
	{"x:\n  k: 1\n  j: 2\n  k: 3\n  k: 4\ny: {z: 1, z: 2}\n", false,
	 "t.yaml:4:3: duplicate key 'k' (first defined at 2:3)\n"
	 "t.yaml:5:3: duplicate key 'k' (first defined at 2:3)\n"
	 "t.yaml:6:11: duplicate key 'z' (first defined at 6:5)"},
	{"a: &x 1\nb: *x\n", false,
	 "t.yaml:1:4: anchors are not supported (&x)\nt.yaml:2:4: aliases are not supported (*x)"},
	{"a: !!str 1\n", false, "t.yaml:1:4: tags are not supported (tag:yaml.org,2002:str)"},
	{"a: !custom {b: 1}\n", false, "t.yaml:1:4: tags are not supported (!custom)"},
	{"? [a, b]\n: 1\n", false, "t.yaml:1:3: mapping keys must be scalars"},
	{"a: 1\n\tb: 2\n", false,
	 "t.yaml:2:1: found a tab character that violates indentation (while scanning a plain scalar at 1:4)"},
	{"a: [1, 2\n", false,
	 "t.yaml:2:1: did not find expected ',' or ']' (while parsing a flow sequence at 1:4)"},
	{"a: b: c\n", false,
	 "t.yaml:1:5: mapping values are not allowed in this context"},
	{"a: \"\x01\"\n", false, "t.yaml:1:5: control characters are not allowed"},
	{"a: \xff\n", false, "t.yaml:1:4: invalid leading UTF-8 octet"},
	{"{\"a\": 1, \"a\": 2}", true,
	 "t.json:1:12: invalid JSON: duplicate object key near '\"a\"'"},
	{"{\"a\": 1,\n \"b\": }", true,
	 "t.json:2:7: invalid JSON: unexpected token near '}'"},
	{"{\"a\": 1} x", true, "t.json:1:10: invalid JSON: end of file expected near 'x'"},
	{"a: 1\n---\nb: 1\nb: 2\n", false, "t.yaml:4:1: duplicate key 'b' (first defined at 3:1)"},
	/* found by fuzz-config: a key with a NUL inside can never be looked up */
	{"{\n\t\"ue,\\0\"}\n", false, "t.yaml:2:2: key contains a NUL byte"},
	/* found by fuzz-config: an empty JSON object in the one-pass reader */
	{"{}\t\"\n/\na\n", true, "t.json:1:4: invalid JSON: unexpected newline near '\"'"},
};

static void test_errors(void)
{
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		char *msgs;
		struct doc_file *f = load(err_cases[i].text, err_cases[i].json, &msgs);

		CHECK(f == NULL, "case %zu loaded", i);
		CHECK(strcmp(msgs, err_cases[i].expect) == 0, "case %zu:\n got: %s\nwant: %s", i, msgs,
		      err_cases[i].expect);
		free(msgs);
		doc_file_free(f);
	}
}

static void test_depth(void)
{
	char deep[200], ok[200], *msgs;
	struct doc_file *f;

	/* 65 nested sequences: one too many */
	memset(deep, '[', 65);
	memset(deep + 65, ']', 65);
	deep[130] = '\0';
	f = load(deep, false, &msgs);
	CHECK(f == NULL && strcmp(msgs, "t.yaml:1:65: nesting deeper than 64 levels") == 0, "%s", msgs);
	free(msgs);
	f = load(deep, true, &msgs);
	CHECK(f == NULL && strstr(msgs, "t.json:1:65: nesting deeper than 64 levels"), "%s", msgs);
	free(msgs);
	memset(ok, '[', 64);
	memset(ok + 64, ']', 64);
	ok[128] = '\0';
	f = load(ok, false, &msgs);
	CHECK(f != NULL && f->n_docs == 1, "%s", msgs);
	free(msgs);
	doc_file_free(f);
}

static void test_size(void)
{
	size_t len = (4u << 20) + 1;
	char *big = malloc(len);
	struct diag *d = diag_new();
	struct doc_file *f = NULL;

	memset(big, ' ', len);
	CHECK(doc_load_buffer("big.yaml", big, len, false, d, &f) == BROKER_ERR_CONFIG && !f);
	CHECK(diag_count(d) == 1 && strcmp(diag_line(d, 0), "big.yaml: file larger than 4 MiB") == 0);
	diag_free(d);
	free(big);
}

static void test_positions(void)
{
	const char *text = "# comment\n"
			   "name: web\n"
			   "allow:\n"
			   "  repository: \"acme/web\"\n"
			   "  event: [push, 'tag']\n"
			   "list:\n"
			   "  - one\n"
			   "  - k: |\n"
			   "      block\n";
	char *msgs;
	struct doc_file *f = load(text, false, &msgs);
	struct doc_node *root, *allow, *ev, *list;

	CHECK(f != NULL, "%s", msgs);
	free(msgs);
	if (!f)
		return;
	CHECK(f->n_docs == 1 && strcmp(f->path, "t.yaml") == 0);
	root = f->docs[0];
	CHECK(root->kind == DOC_MAP && root->n == 3 && root->line == 2 && root->col == 1);
	CHECK(root->keys[1]->line == 3 && root->keys[1]->col == 1 && strcmp(root->keys[1]->str, "allow") == 0);
	allow = doc_map_get(root, "allow");
	CHECK(allow && allow->kind == DOC_MAP && allow->line == 4 && allow->col == 3);
	CHECK(doc_map_get(allow, "repository")->quoted && doc_map_get(allow, "repository")->line == 4 &&
	      doc_map_get(allow, "repository")->col == 15);
	ev = doc_map_get(allow, "event");
	CHECK(ev->kind == DOC_SEQ && ev->n == 2 && ev->line == 5 && ev->col == 10);
	CHECK(!ev->items[0]->quoted && ev->items[1]->quoted && ev->items[1]->col == 17);
	list = doc_map_get(root, "list");
	CHECK(list->kind == DOC_SEQ && list->items[1]->kind == DOC_MAP && list->items[1]->line == 8 &&
	      list->items[1]->col == 5);
	CHECK(doc_map_get(list->items[1], "k")->quoted &&
	      strcmp(doc_map_get(list->items[1], "k")->str, "block\n") == 0);
	CHECK(doc_map_get(root, "missing") == NULL && doc_map_get(ev, "push") == NULL);
	doc_file_free(f);
}

static void test_documents(void)
{
	char *msgs;
	struct doc_file *f = load("a: 1\n---\nb: 2\n---\n- x\n", false, &msgs);

	CHECK(f && f->n_docs == 3, "%s", msgs);
	free(msgs);
	if (f) {
		CHECK(f->docs[1]->kind == DOC_MAP && f->docs[1]->line == 3);
		CHECK(f->docs[2]->kind == DOC_SEQ && f->docs[2]->line == 5 && f->docs[2]->col == 1);
	}
	doc_file_free(f);
	f = load("", false, &msgs);
	CHECK(f && f->n_docs == 0, "%s", msgs);
	free(msgs);
	doc_file_free(f);
}

static void test_json_positions(void)
{
	/* The second text has a surrogate pair escape, which libyaml refuses:
	 * the jansson fallback must give the same tree with the same positions. */
	const char *texts[] = {
		"{\n  \"a\": {\"b\": [1, \"two\", true, null]},\n  \"c\": \"\\u00e9\"\n}\n",
		"{\n\t\"a\": {\"b\": [1, \"two\", true, null]},\n\t\"c\": \"\\ud83d\\ude00\"\n}\n",
	};
	const char *want_c[] = {"\xc3\xa9", "\xf0\x9f\x98\x80"};
	int want_col[] = {3, 2};

	for (size_t i = 0; i < 2; i++) {
		char *msgs;
		struct doc_file *f = load(texts[i], true, &msgs);
		struct doc_node *a, *b, *c;

		CHECK(f && f->n_docs == 1, "%zu: %s", i, msgs);
		free(msgs);
		if (!f)
			continue;
		a = doc_map_get(f->docs[0], "a");
		CHECK(f->docs[0]->line == 1 && f->docs[0]->col == 1);
		CHECK(f->docs[0]->keys[0]->line == 2 && f->docs[0]->keys[0]->col == want_col[i] &&
		      f->docs[0]->keys[0]->quoted);
		CHECK(a && a->kind == DOC_MAP && a->line == 2 && a->col == want_col[i] + 5, "%zu: %d", i,
		      a ? a->col : 0);
		b = doc_map_get(a, "b");
		CHECK(b && b->kind == DOC_SEQ && b->n == 4 && b->col == want_col[i] + 11);
		CHECK(b && !b->items[0]->quoted && strcmp(b->items[0]->str, "1") == 0);
		CHECK(b && b->items[1]->quoted && b->items[1]->col == want_col[i] + 15);
		CHECK(b && !b->items[3]->quoted && doc_is_null(b->items[3]));
		c = doc_map_get(f->docs[0], "c");
		CHECK(c && c->quoted && strcmp(c->str, want_c[i]) == 0 && c->line == 3 && c->col == want_col[i] + 5);
		doc_file_free(f);
	}
}

struct json_case {
	const char *yaml;
	const char *json; /* compact, sorted keys */
};

static const struct json_case json_cases[] = {
	{"a: 1", "{\"a\": 1}"},
	{"a: '1'", "{\"a\": \"1\"}"},
	{"a: -12", "{\"a\": -12}"},
	{"a: 1.5", "{\"a\": 1.5}"},
	{"a: 1e3", "{\"a\": 1000.0}"},
	{"a: true\nb: False\nc: \"true\"", "{\"a\": true, \"b\": false, \"c\": \"true\"}"},
	{"a: yes\nb: on", "{\"a\": \"yes\", \"b\": \"on\"}"},
	{"a:\nb: ~\nc: null\nd: ''", "{\"a\": null, \"b\": null, \"c\": null, \"d\": \"\"}"},
	{"a: 0x10\nb: .inf\nc: 1.2.3", "{\"a\": \"0x10\", \"b\": \".inf\", \"c\": \"1.2.3\"}"},
	{"a: 99999999999999999999", "{\"a\": \"99999999999999999999\"}"},
	{"- [1, a]\n- {b: c}", "[[1, \"a\"], {\"b\": \"c\"}]"},
	{"a: |\n  x\n", "{\"a\": \"x\\n\"}"},
};

static void test_to_json(void)
{
	for (size_t i = 0; i < sizeof(json_cases) / sizeof(json_cases[0]); i++) {
		char *msgs, *out = NULL;
		struct doc_file *f = load(json_cases[i].yaml, false, &msgs);
		json_t *j = f ? doc_to_json(f->docs[0]) : NULL;

		if (j)
			out = json_dumps(j, JSON_SORT_KEYS | JSON_ENCODE_ANY);
		CHECK(out && strcmp(out, json_cases[i].json) == 0, "case %zu: got %s want %s (%s)", i,
		      out ? out : "NULL", json_cases[i].json, msgs);
		free(out);
		free(msgs);
		json_decref(j);
		doc_file_free(f);
	}
}

static void test_diag(void)
{
	struct diag *d = diag_new();

	diag_error(d, "f.yaml", 3, 7, "bad %s", "thing");
	diag_warning(d, "f.yaml", 4, 1, "hmm");
	diag_error(d, "f.yaml", 0, 0, "cannot read");
	diag_error(d, "f.yaml", 2, 0, "no column\x1b[31m");
	CHECK(diag_errors(d) == 3 && diag_warnings(d) == 1 && diag_count(d) == 4);
	CHECK(strcmp(diag_line(d, 0), "f.yaml:3:7: bad thing") == 0);
	CHECK(strcmp(diag_line(d, 1), "f.yaml:4:1: warning: hmm") == 0);
	CHECK(strcmp(diag_line(d, 2), "f.yaml: cannot read") == 0);
	CHECK(strcmp(diag_line(d, 3), "f.yaml:2: no column?[31m") == 0, "%s", diag_line(d, 3));
	CHECK(diag_line(d, 4) == NULL);
	for (int i = 0; i < 2000; i++)
		diag_error(d, "f", i + 1, 1, "e");
	CHECK(diag_errors(d) == 2003 && diag_count(d) == 1001);
	CHECK(strcmp(diag_line(d, 1000), "too many diagnostics; the rest are not shown") == 0);
	diag_free(d);
	diag_free(NULL);
	doc_file_free(NULL);
}

/* A UTF-8 byte order mark is not content, in YAML or JSON; positions after it hold. */
static void test_bom(void)
{
	for (int json = 0; json <= 1; json++) {
		char *msgs;
		struct doc_file *f = load(json ? "\xEF\xBB\xBF{\"a\": \"b\",\n\"c\": 1}" : "\xEF\xBB\xBF" "a: b\nc: 1\n",
					  json, &msgs);
		const struct doc_node *c;

		CHECK(f != NULL, "%s", msgs);
		if (f) {
			CHECK(f->n_docs == 1 && doc_map_get(f->docs[0], "a") != NULL, "bom json=%d", json);
			c = doc_map_get(f->docs[0], "c");
			CHECK(c && c->line == 2, "bom json=%d: c at line %d", json, c ? c->line : -1);
		}
		doc_file_free(f);
		free(msgs);
	}
}

int main(void)
{
	test_diag();
	test_bom();
	test_errors();
	test_depth();
	test_size();
	test_positions();
	test_documents();
	test_json_positions();
	test_to_json();
	return check_done();
}
