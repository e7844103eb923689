/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/doc.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "cibroker/util.h"
#include "doc-int.h"

void doc_node_free(struct doc_node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++) {
		doc_node_free(n->items[i]);
		if (n->keys)
			doc_node_free(n->keys[i]);
	}
	free(n->items);
	free(n->keys);
	free(n->str);
	free(n);
}


void doc_file_free(struct doc_file *f)
{
	if (!f)
		return;
	if (f->arena) {
		doc_arena_free(f->arena); /* every node, and docs */
	} else {
		for (size_t i = 0; i < f->n_docs; i++)
			doc_node_free(f->docs[i]);
		free(f->docs);
	}
	free(f->path);
	free(f);
}

struct doc_node *doc_node_new(struct builder *b, enum doc_kind kind, int line, int col)
{
	struct doc_node *n;

	if (++b->nodes > DOC_MAX_NODES) {
		if (!b->too_many)
			diag_error(b->d, b->name, line, col, "more than %u nodes", DOC_MAX_NODES);
		b->too_many = b->failed = true;
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = kind;
	n->line = line;
	n->col = col;
	return n;
}

bool doc_grow(void *pp, size_t *cap, size_t n, size_t size)
{
	void **p = pp;
	size_t c;
	void *q;

	if (n < *cap)
		return true;
	c = *cap ? *cap * 2 : 4;
	q = realloc(*p, c * size);
	if (!q)
		return false;
	*p = q;
	*cap = c;
	return true;
}

/* Hand a finished node to its parent (or to the file as a document). On
 * failure the node is freed. */
enum broker_err doc_attach(struct builder *b, struct doc_node *n)
{
	struct frame *f;
	struct doc_node *p;

	if (b->depth == 0) {
		if (!doc_grow(&b->file->docs, &b->docs_cap, b->file->n_docs, sizeof(*b->file->docs)))
			goto nomem;
		b->file->docs[b->file->n_docs++] = n;
		return BROKER_OK;
	}
	f = &b->stack[b->depth - 1];
	p = f->node;
	if (p->kind == DOC_SEQ) {
		if (!doc_grow(&p->items, &f->cap, p->n, sizeof(*p->items)))
			goto nomem;
		p->items[p->n++] = n;
		return BROKER_OK;
	}
	if (!f->key) {
		if (n->kind != DOC_SCALAR) {
			diag_error(b->d, b->name, n->line, n->col, "mapping keys must be scalars");
			b->failed = true;
		}
		f->key = n;
		return BROKER_OK;
	}
	/* keys and items doc_grow together: one capacity serves both */
	if (p->n == f->cap) {
		size_t cap = f->cap;

		if (!doc_grow(&p->items, &cap, p->n, sizeof(*p->items)))
			goto nomem;
		cap = f->cap;
		if (!doc_grow(&p->keys, &cap, p->n, sizeof(*p->keys)))
			goto nomem;
		f->cap = cap;
	}
	p->keys[p->n] = f->key;
	p->items[p->n] = n;
	p->n++;
	f->key = NULL;
	return BROKER_OK;
nomem:
	doc_node_free(n);
	return BROKER_ERR_NOMEM;
}

static int key_cmp(const void *a, const void *b)
{
	const struct doc_node *x = *(struct doc_node *const *)a, *y = *(struct doc_node *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->str, y->str, n);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	/* equal keys: keep document order so the first definition comes first */
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->col < y->col ? -1 : x->col > y->col;
}

static int pos_cmp(const void *a, const void *b)
{
	const struct doc_node *x = ((struct doc_node *const *)a)[0], *y = ((struct doc_node *const *)b)[0];

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->col < y->col ? -1 : x->col > y->col;
}

/* Sorting keeps this O(n log n) for the huge maps a fuzzer writes; the
 * reports are then put back into document order. */
static enum broker_err check_duplicates(struct builder *b, const struct doc_node *map)
{
	struct doc_node **sorted = NULL, **dups = NULL; /* dups: pairs (second, first) */
	size_t n = 0, n_dups = 0;
	enum broker_err err = BROKER_ERR_NOMEM;

	/* A key is looked up as a C string: one with a NUL inside ("\0" in a
	 * YAML double-quoted scalar) could never be found, so it is refused. */
	for (size_t i = 0; i < map->n; i++) {
		if (map->keys[i]->kind == DOC_SCALAR && memchr(map->keys[i]->str, '\0', map->keys[i]->len)) {
			diag_error(b->d, b->name, map->keys[i]->line, map->keys[i]->col, "key contains a NUL byte");
			b->failed = true;
		}
	}
	if (map->n < 2)
		return BROKER_OK;
	sorted = malloc(map->n * sizeof(*sorted));
	dups = malloc(map->n * 2 * sizeof(*dups));
	if (!sorted || !dups)
		goto out;
	for (size_t i = 0; i < map->n; i++)
		if (map->keys[i]->kind == DOC_SCALAR)
			sorted[n++] = map->keys[i];
	qsort(sorted, n, sizeof(*sorted), key_cmp);
	for (size_t i = 1, first = 0; i < n; i++) {
		if (sorted[i]->len == sorted[first]->len &&
		    memcmp(sorted[i]->str, sorted[first]->str, sorted[i]->len) == 0) {
			dups[2 * n_dups] = sorted[i];
			dups[2 * n_dups + 1] = sorted[first];
			n_dups++;
		} else {
			first = i;
		}
	}
	qsort(dups, n_dups, 2 * sizeof(*dups), pos_cmp);
	for (size_t i = 0; i < n_dups; i++) {
		diag_error(b->d, b->name, dups[2 * i]->line, dups[2 * i]->col,
			   "duplicate key '%.*s' (first defined at %d:%d)", (int)(dups[2 * i]->len > 200 ? 200 : dups[2 * i]->len),
			   dups[2 * i]->str, dups[2 * i + 1]->line, dups[2 * i + 1]->col);
		b->failed = true;
	}
	err = BROKER_OK;
out:
	free(sorted);
	free(dups);
	return err;
}

/* libyaml reader errors carry a byte offset, not a mark. */
static void offset_to_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
	int l = 1, c = 1;

	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			l++;
			c = 1;
		} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*col = c;
}

static void report_parser_error(struct builder *b, yaml_parser_t *p, const char *buf, size_t len)
{
	int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;

	if (p->error == YAML_MEMORY_ERROR) {
		diag_error(b->d, b->name, 0, 0, "out of memory");
	} else if (p->error == YAML_READER_ERROR) {
		offset_to_pos(buf, len, p->problem_offset, &line, &col);
		diag_error(b->d, b->name, line, col, "%s", p->problem ? p->problem : "unreadable input");
	} else if (p->context) {
		diag_error(b->d, b->name, line, col, "%s (%s at %d:%d)", p->problem ? p->problem : "syntax error",
			   p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
	} else {
		diag_error(b->d, b->name, line, col, "%s", p->problem ? p->problem : "syntax error");
	}
	b->failed = true;
}

/* Anchors, aliases and explicit tags make a file mean something other than
 * what it shows; they are refused, not ignored. */
static void refuse_extras(struct builder *b, const yaml_char_t *anchor, const yaml_char_t *tag, int line, int col)
{
	if (anchor) {
		diag_error(b->d, b->name, line, col, "anchors are not supported (&%.64s)", (const char *)anchor);
		b->failed = true;
	}
	if (tag) {
		diag_error(b->d, b->name, line, col, "tags are not supported (%.64s)", (const char *)tag);
		b->failed = true;
	}
}

static enum broker_err open_collection(struct builder *b, enum doc_kind kind, int line, int col)
{
	struct doc_node *n;

	if (b->depth >= DOC_MAX_DEPTH) {
		diag_error(b->d, b->name, line, col, "nesting deeper than %d levels", DOC_MAX_DEPTH);
		b->failed = true;
		return BROKER_ERR_TOOBIG;
	}
	n = doc_node_new(b, kind, line, col);
	if (!n)
		return b->too_many ? BROKER_ERR_TOOBIG : BROKER_ERR_NOMEM;
	b->stack[b->depth].node = n;
	b->stack[b->depth].cap = 0;
	b->stack[b->depth].key = NULL;
	b->depth++;
	return BROKER_OK;
}

static enum broker_err close_collection(struct builder *b)
{
	struct frame *f = &b->stack[--b->depth];
	enum broker_err err = BROKER_OK;

	if (f->node->kind == DOC_MAP)
		err = check_duplicates(b, f->node);
	doc_node_free(f->key); /* only set if the stream was cut short */
	f->key = NULL;
	if (err != BROKER_OK) {
		doc_node_free(f->node);
		return err;
	}
	return doc_attach(b, f->node);
}

static enum broker_err add_scalar(struct builder *b, const yaml_event_t *ev, int line, int col)
{
	struct doc_node *n = doc_node_new(b, DOC_SCALAR, line, col);

	if (!n)
		return b->too_many ? BROKER_ERR_TOOBIG : BROKER_ERR_NOMEM;
	n->len = ev->data.scalar.length;
	n->str = malloc(n->len + 1);
	if (!n->str) {
		free(n);
		return BROKER_ERR_NOMEM;
	}
	memcpy(n->str, ev->data.scalar.value, n->len);
	n->str[n->len] = '\0';
	/* Block scalars (| and >) are strings too: only plain scalars are typed. */
	n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
	return doc_attach(b, n);
}

static enum broker_err yaml_build(struct builder *b, const char *buf, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	enum broker_err err = BROKER_OK;
	bool done = false;

	if (!yaml_parser_initialize(&parser))
		return BROKER_ERR_NOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	while (!done) {
		int line, col;

		if (!yaml_parser_parse(&parser, &ev)) {
			report_parser_error(b, &parser, buf, len);
			break;
		}
		line = (int)ev.start_mark.line + 1;
		col = (int)ev.start_mark.column + 1;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_ALIAS_EVENT:
			diag_error(b->d, b->name, line, col, "aliases are not supported (*%.64s)",
				   (const char *)ev.data.alias.anchor);
			b->failed = true;
			break;
		case YAML_SCALAR_EVENT:
			refuse_extras(b, ev.data.scalar.anchor, ev.data.scalar.tag, line, col);
			err = add_scalar(b, &ev, line, col);
			break;
		case YAML_SEQUENCE_START_EVENT:
			refuse_extras(b, ev.data.sequence_start.anchor, ev.data.sequence_start.tag, line, col);
			err = open_collection(b, DOC_SEQ, line, col);
			break;
		case YAML_MAPPING_START_EVENT:
			refuse_extras(b, ev.data.mapping_start.anchor, ev.data.mapping_start.tag, line, col);
			err = open_collection(b, DOC_MAP, line, col);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			err = close_collection(b);
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (err != BROKER_OK)
			break;
	}
	/* cut short by an error: drop whatever was still open */
	while (b->depth > 0) {
		struct frame *f = &b->stack[--b->depth];

		doc_node_free(f->key);
		doc_node_free(f->node);
	}
	yaml_parser_delete(&parser);
	return err;
}

enum broker_err doc_load_buffer(const char *name, const char *buf, size_t len, bool is_json, struct diag *d,
				struct doc_file **ret)
{
	struct builder b = {.name = name, .d = d};
	json_t *json = NULL;
	enum broker_err err = BROKER_ERR_NOMEM;

	if (len > DOC_MAX_FILE) {
		diag_error(d, name, 0, 0, "file larger than %u MiB", DOC_MAX_FILE >> 20);
		return BROKER_ERR_CONFIG;
	}
	if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
		/* a UTF-8 byte order mark, as some Windows editors write it: not content */
		buf += 3;
		len -= 3;
	}
	b.file = calloc(1, sizeof(*b.file));
	if (!b.file || !(b.file->path = strdup(name ? name : "<input>")))
		goto out;
	if (is_json && doc_json_fast_build(&b, buf, len)) {
		err = BROKER_OK;
	} else if (is_json) {
		struct diag *quiet;

		err = doc_json_validate(&b, buf, len, &json);
		if (err != BROKER_OK)
			goto out;
		/* libyaml gives exact positions for what it can read; its errors
		 * on valid JSON are not the user's problem, so they stay quiet */
		quiet = diag_new();
		if (!quiet)
			goto out;
		b.d = quiet;
		err = yaml_build(&b, buf, len);
		b.d = d;
		if (err == BROKER_ERR_NOMEM && diag_errors(quiet) == 0) {
			diag_free(quiet);
			goto out;
		}
		if (err != BROKER_OK || b.failed) {
			/* start over from jansson's tree */
			struct json_scan s = {.buf = buf, .len = len, .line = 1, .col = 1};
			struct doc_node *root;

			for (size_t i = 0; i < b.file->n_docs; i++)
				doc_node_free(b.file->docs[i]);
			b.file->n_docs = 0;
			b.failed = false;
			b.nodes = 0;
			b.too_many = false;
			root = doc_json_build(&b, &s, json, 0);
			err = root ? doc_attach(&b, root) : (b.failed ? BROKER_ERR_CONFIG : BROKER_ERR_NOMEM);
		}
		diag_free(quiet);
	} else {
		err = yaml_build(&b, buf, len);
	}
	if (err == BROKER_OK && b.failed)
		err = BROKER_ERR_CONFIG;
	if (err == BROKER_ERR_TOOBIG)
		err = BROKER_ERR_CONFIG;
	if (err == BROKER_ERR_NOMEM)
		diag_error(d, name, 0, 0, "out of memory");
out:
	json_decref(json);
	if (err == BROKER_OK) {
		*ret = b.file;
		b.file = NULL;
	}
	doc_file_free(b.file);
	return err;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

enum broker_err doc_load(const char *path, struct diag *d, struct doc_file **ret)
{
	char *buf = NULL;
	size_t len = 0;
	enum broker_err err = broker_read_file(path, DOC_MAX_FILE, &buf, &len);

	if (err == BROKER_ERR_TOOBIG) {
		diag_error(d, path, 0, 0, "file larger than %u MiB", DOC_MAX_FILE >> 20);
		return BROKER_ERR_CONFIG;
	}
	if (err != BROKER_OK) {
		diag_error(d, path, 0, 0, "cannot read: %s",
			   err == BROKER_ERR_NOTFOUND ? "no such file" : err == BROKER_ERR_NOMEM ? "out of memory"
												    : "I/O error or not a regular file");
		return err == BROKER_ERR_NOMEM ? err : BROKER_ERR_CONFIG;
	}
	err = doc_load_buffer(path, buf, len, ends_with(path, ".json"), d, ret);
	free(buf);
	return err;
}

struct doc_node *doc_map_get(const struct doc_node *map, const char *key)
{
	size_t len = strlen(key);

	if (!map || map->kind != DOC_MAP)
		return NULL;
	for (size_t i = 0; i < map->n; i++) {
		const struct doc_node *k = map->keys[i];

		if (k->kind == DOC_SCALAR && k->len == len && memcmp(k->str, key, len) == 0)
			return map->items[i];
	}
	return NULL;
}

static bool is_one_of(const struct doc_node *n, const char *const *words, size_t n_words)
{
	for (size_t i = 0; i < n_words; i++)
		if (strlen(words[i]) == n->len && memcmp(n->str, words[i], n->len) == 0)
			return true;
	return false;
}

/* YAML 1.2 core schema, which is also what JSON means by these words. */
static const char *const null_words[] = {"", "~", "null", "Null", "NULL"};
static const char *const true_words[] = {"true", "True", "TRUE"};
static const char *const false_words[] = {"false", "False", "FALSE"};

bool doc_is_null(const struct doc_node *n)
{
	return n && n->kind == DOC_SCALAR && !n->quoted && is_one_of(n, null_words, BROKER_ARRAY_SIZE(null_words));
}

static bool is_int(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static bool is_float(const char *s)
{
	bool digits = false;

	if (*s == '-' || *s == '+')
		s++;
	for (; *s >= '0' && *s <= '9'; s++)
		digits = true;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			digits = true;
	if (!digits)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == '\0';
}

enum doc_scalar_type doc_scalar_type(const struct doc_node *n)
{
	if (!n || n->kind != DOC_SCALAR)
		return DOC_TYPE_NOT_SCALAR;
	if (n->quoted || strlen(n->str) != n->len)
		return DOC_TYPE_STRING;
	if (is_one_of(n, null_words, BROKER_ARRAY_SIZE(null_words)))
		return DOC_TYPE_NULL;
	if (is_one_of(n, true_words, BROKER_ARRAY_SIZE(true_words)) ||
	    is_one_of(n, false_words, BROKER_ARRAY_SIZE(false_words)))
		return DOC_TYPE_BOOL;
	if (is_int(n->str)) {
		errno = 0;
		(void)strtoll(n->str, NULL, 10);
		/* too big for an integer: keep the digits rather than round them */
		return errno == 0 ? DOC_TYPE_INT : DOC_TYPE_STRING;
	}
	if (is_float(n->str) && isfinite(strtod(n->str, NULL)))
		return DOC_TYPE_FLOAT;
	return DOC_TYPE_STRING;
}

static json_t *scalar_to_json(const struct doc_node *n)
{
	switch (doc_scalar_type(n)) {
	case DOC_TYPE_NULL:
		return json_null();
	case DOC_TYPE_BOOL:
		return is_one_of(n, true_words, BROKER_ARRAY_SIZE(true_words)) ? json_true() : json_false();
	case DOC_TYPE_INT:
		return json_integer(strtoll(n->str, NULL, 10));
	case DOC_TYPE_FLOAT:
		return json_real(strtod(n->str, NULL));
	default:
		return json_stringn(n->str, n->len);
	}
}

json_t *doc_to_json(const struct doc_node *n)
{
	json_t *out;

	if (!n)
		return NULL;
	if (n->kind == DOC_SCALAR)
		return scalar_to_json(n);
	out = n->kind == DOC_SEQ ? json_array() : json_object();
	if (!out)
		return NULL;
	for (size_t i = 0; i < n->n; i++) {
		json_t *v = doc_to_json(n->items[i]);

		if (!v)
			goto fail;
		if (n->kind == DOC_SEQ) {
			if (json_array_append_new(out, v) < 0)
				goto fail;
		} else {
			const struct doc_node *k = n->keys[i];

			if (k->kind != DOC_SCALAR || json_object_setn_new(out, k->str, k->len, v) < 0)
				goto fail;
		}
	}
	return out;
fail:
	json_decref(out);
	return NULL;
}
