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

#define DOC_MAX_FILE (4u << 20)
#define DOC_MAX_DEPTH 64
/* Bounds memory for a 4 MiB file of "[[],[],...]" (about 64 bytes a node). */
#define DOC_MAX_NODES (1u << 20)

/* One open collection while the event stream is turned into a tree. */
struct frame {
	struct doc_node *node;
	size_t cap;
	struct doc_node *key; /* map: key read, value not yet */
};

struct builder {
	const char *name;
	struct diag *d;
	struct doc_file *file;
	size_t docs_cap;
	struct frame stack[DOC_MAX_DEPTH + 1];
	size_t depth;
	size_t nodes;
	bool too_many; /* DOC_MAX_NODES reached (reported once) */
	bool failed; /* an error was reported: the tree is never handed out */
};

static void node_free(struct doc_node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++) {
		node_free(n->items[i]);
		if (n->keys)
			node_free(n->keys[i]);
	}
	free(n->items);
	free(n->keys);
	free(n->str);
	free(n);
}

static void arena_free(struct doc_arena *a);

void doc_file_free(struct doc_file *f)
{
	if (!f)
		return;
	if (f->arena) {
		arena_free(f->arena); /* every node, and docs */
	} else {
		for (size_t i = 0; i < f->n_docs; i++)
			node_free(f->docs[i]);
		free(f->docs);
	}
	free(f->path);
	free(f);
}

static struct doc_node *node_new(struct builder *b, enum doc_kind kind, int line, int col)
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

static bool grow(void *pp, size_t *cap, size_t n, size_t size)
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
static enum broker_err attach(struct builder *b, struct doc_node *n)
{
	struct frame *f;
	struct doc_node *p;

	if (b->depth == 0) {
		if (!grow(&b->file->docs, &b->docs_cap, b->file->n_docs, sizeof(*b->file->docs)))
			goto nomem;
		b->file->docs[b->file->n_docs++] = n;
		return BROKER_OK;
	}
	f = &b->stack[b->depth - 1];
	p = f->node;
	if (p->kind == DOC_SEQ) {
		if (!grow(&p->items, &f->cap, p->n, sizeof(*p->items)))
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
	/* keys and items grow together: one capacity serves both */
	if (p->n == f->cap) {
		size_t cap = f->cap;

		if (!grow(&p->items, &cap, p->n, sizeof(*p->items)))
			goto nomem;
		cap = f->cap;
		if (!grow(&p->keys, &cap, p->n, sizeof(*p->keys)))
			goto nomem;
		f->cap = cap;
	}
	p->keys[p->n] = f->key;
	p->items[p->n] = n;
	p->n++;
	f->key = NULL;
	return BROKER_OK;
nomem:
	node_free(n);
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
	n = node_new(b, kind, line, col);
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
	node_free(f->key); /* only set if the stream was cut short */
	f->key = NULL;
	if (err != BROKER_OK) {
		node_free(f->node);
		return err;
	}
	return attach(b, f->node);
}

static enum broker_err add_scalar(struct builder *b, const yaml_event_t *ev, int line, int col)
{
	struct doc_node *n = node_new(b, DOC_SCALAR, line, col);

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
	return attach(b, n);
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

		node_free(f->key);
		node_free(f->node);
	}
	yaml_parser_delete(&parser);
	return err;
}

/* ---- JSON that libyaml cannot read (tab indentation, surrogate escapes, long
 * keys): the tree comes from jansson, the positions from a scan of the text,
 * which is valid JSON at this point so the scan can be simple. Both visit
 * values in document order (jansson keeps object insertion order). */

struct json_scan {
	const char *buf;
	size_t len, i;
	int line, col;
};

static void scan_advance(struct json_scan *s)
{
	if (s->buf[s->i] == '\n') {
		s->line++;
		s->col = 1;
	} else if (((unsigned char)s->buf[s->i] & 0xc0) != 0x80) {
		s->col++;
	}
	s->i++;
}

static void scan_ws(struct json_scan *s)
{
	while (s->i < s->len && s->buf[s->i] && strchr(" \t\r\n", s->buf[s->i]))
		scan_advance(s);
}

static void scan_string(struct json_scan *s)
{
	scan_advance(s); /* opening quote */
	while (s->i < s->len && s->buf[s->i] != '"') {
		if (s->buf[s->i] == '\\')
			scan_advance(s);
		if (s->i < s->len)
			scan_advance(s);
	}
	if (s->i < s->len)
		scan_advance(s);
}

static struct doc_node *json_build(struct builder *b, struct json_scan *s, json_t *v, size_t depth);

static struct doc_node *json_build_scalar(struct builder *b, struct json_scan *s, json_t *v, int line, int col)
{
	struct doc_node *n = node_new(b, DOC_SCALAR, line, col);
	size_t start = s->i;

	if (!n)
		return NULL;
	if (json_is_string(v)) {
		n->quoted = true;
		n->len = json_string_length(v);
		n->str = malloc(n->len + 1);
		if (n->str) {
			memcpy(n->str, json_string_value(v), n->len);
			n->str[n->len] = '\0';
		}
		scan_string(s);
	} else {
		/* number, true, false, null: keep the source text, as libyaml would */
		while (s->i < s->len && !strchr(",]} \t\r\n", s->buf[s->i]))
			scan_advance(s);
		n->len = s->i - start;
		n->str = strndup(s->buf + start, n->len);
	}
	if (!n->str) {
		free(n);
		return NULL;
	}
	return n;
}

static struct doc_node *json_build(struct builder *b, struct json_scan *s, json_t *v, size_t depth)
{
	struct doc_node *n;
	int line, col;
	size_t i, cap;

	scan_ws(s);
	line = s->line;
	col = s->col;
	if (!json_is_object(v) && !json_is_array(v))
		return json_build_scalar(b, s, v, line, col);
	if (depth >= DOC_MAX_DEPTH) {
		diag_error(b->d, b->name, line, col, "nesting deeper than %d levels", DOC_MAX_DEPTH);
		b->failed = true;
		return NULL;
	}
	n = node_new(b, json_is_object(v) ? DOC_MAP : DOC_SEQ, line, col);
	if (!n)
		return NULL;
	cap = json_is_object(v) ? json_object_size(v) : json_array_size(v);
	if (cap) {
		n->items = calloc(cap, sizeof(*n->items));
		n->keys = json_is_object(v) ? calloc(cap, sizeof(*n->keys)) : NULL;
		if (!n->items || (json_is_object(v) && !n->keys))
			goto fail;
	}
	scan_advance(s); /* [ or { */
	if (json_is_array(v)) {
		json_t *item;

		json_array_foreach(v, i, item) {
			if (!(n->items[n->n] = json_build(b, s, item, depth + 1)))
				goto fail;
			n->n++;
			scan_ws(s);
			scan_advance(s); /* , or ] */
		}
	} else {
		const char *key;
		size_t key_len;
		json_t *item;

		json_object_keylen_foreach(v, key, key_len, item) {
			struct doc_node *k;

			scan_ws(s);
			if (!(k = node_new(b, DOC_SCALAR, s->line, s->col)))
				goto fail;
			k->quoted = true;
			k->len = key_len;
			k->str = malloc(key_len + 1);
			if (!k->str) {
				free(k);
				goto fail;
			}
			memcpy(k->str, key, key_len);
			k->str[key_len] = '\0';
			n->keys[n->n] = k;
			scan_string(s);
			scan_ws(s);
			scan_advance(s); /* : */
			if (!(n->items[n->n] = json_build(b, s, item, depth + 1))) {
				node_free(k);
				n->keys[n->n] = NULL;
				goto fail;
			}
			n->n++;
			scan_ws(s);
			scan_advance(s); /* , or } */
		}
	}
	if (cap == 0) {
		scan_ws(s);
		scan_advance(s); /* ] or } */
	}
	return n;
fail:
	node_free(n);
	return NULL;
}

/* ---- JSON in one pass: the common case of a valid, plain JSON file goes
 * straight to the tree, its nodes in one arena, without jansson's tree and a
 * second parse by libyaml (about half of loading 10,000 policy files). It
 * accepts only what jansson accepts (strict grammar, UTF-8, integer and
 * real ranges) and builds what the two-pass path builds: jansson's values at
 * the positions libyaml reports. Anything else — any error, a duplicate key,
 * deep nesting, too many nodes, a lone CR or a character libyaml reads as a
 * line break — is left to the two-pass path below, which has the exact
 * diagnostics; so this reader never reports anything itself. */

#define ARENA_CHUNK (16 * 1024)

struct doc_arena {
	struct doc_arena *next;
	size_t size, used;
	unsigned char data[];
};

static void arena_free(struct doc_arena *a)
{
	while (a) {
		struct doc_arena *next = a->next;

		free(a);
		a = next;
	}
}

static void *arena_alloc(struct doc_arena **head, size_t size)
{
	struct doc_arena *a = *head;
	size_t need = (size + 7) & ~(size_t)7;

	if (!a || a->size - a->used < need) {
		size_t cap = need > ARENA_CHUNK / 2 ? need : ARENA_CHUNK;

		if (!(a = malloc(sizeof(*a) + cap)))
			return NULL;
		a->size = cap;
		a->used = 0;
		a->next = *head;
		*head = a;
	}
	a->used += need;
	return a->data + a->used - need;
}

struct jfast {
	const unsigned char *s;
	size_t len, i;
	int line, col;
	size_t nodes;
	struct doc_arena *arena;
	struct doc_node **stack; /* children of the open collections */
	size_t sp, cap;
	char *scratch;           /* one unescaped string */
};

/* JSON whitespace, counted as the two-pass path counts it: a column per
 * byte, a line per \n; \r\n is fine (both agree), a lone \r is a line break
 * to libyaml only, so it is left to the two-pass path. */
static bool jf_ws(struct jfast *j)
{
	while (j->i < j->len) {
		unsigned char c = j->s[j->i];

		if (c == ' ' || c == '\t') {
			j->col++;
		} else if (c == '\n') {
			j->line++;
			j->col = 1;
		} else if (c == '\r') {
			if (j->i + 1 >= j->len || j->s[j->i + 1] != '\n')
				return false;
			j->col++;
		} else {
			break;
		}
		j->i++;
	}
	return true;
}

static struct doc_node *jf_node(struct jfast *j, enum doc_kind kind, int line, int col)
{
	struct doc_node *n;

	if (++j->nodes > DOC_MAX_NODES || !(n = arena_alloc(&j->arena, sizeof(*n))))
		return NULL;
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->line = line;
	n->col = col;
	return n;
}


static bool jf_hex4(struct jfast *j, size_t at, unsigned *ret)
{
	unsigned v = 0;

	if (at + 4 > j->len)
		return false;
	for (size_t k = 0; k < 4; k++) {
		int d = broker_hex_value((unsigned char)j->s[at + k]);

		if (d < 0)
			return false;
		v = v << 4 | (unsigned)d;
	}
	*ret = v;
	return true;
}

/* Length of the valid UTF-8 sequence at s (strict: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
	unsigned c = s[0], cp;
	size_t n;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (n > left)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static size_t utf8_put(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string at j->i (the opening quote) as a quoted scalar. */
static struct doc_node *jf_string(struct jfast *j)
{
	struct doc_node *n = jf_node(j, DOC_SCALAR, j->line, j->col);
	size_t o = 0, i = j->i + 1;
	int col = j->col + 1;

	if (!n)
		return NULL;
	for (;;) {
		unsigned char c;

		if (i >= j->len)
			return NULL;
		c = j->s[i];
		if (c == '"')
			break;
		if (c < 0x20)
			return NULL;
		if (c == '\\') {
			unsigned cp, lo;

			if (i + 1 >= j->len)
				return NULL;
			switch (j->s[i + 1]) {
			case '"': j->scratch[o++] = '"'; break;
			case '\\': j->scratch[o++] = '\\'; break;
			case '/': j->scratch[o++] = '/'; break;
			case 'b': j->scratch[o++] = '\b'; break;
			case 'f': j->scratch[o++] = '\f'; break;
			case 'n': j->scratch[o++] = '\n'; break;
			case 'r': j->scratch[o++] = '\r'; break;
			case 't': j->scratch[o++] = '\t'; break;
			case 'u':
				if (!jf_hex4(j, i + 2, &cp) || cp == 0)
					return NULL; /* jansson refuses \u0000 */
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (i + 7 >= j->len || j->s[i + 6] != '\\' || j->s[i + 7] != 'u' ||
					    !jf_hex4(j, i + 8, &lo) || lo < 0xdc00 || lo > 0xdfff)
						return NULL;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					i += 6;
					col += 6;
				} else if (cp >= 0xdc00 && cp <= 0xdfff) {
					return NULL;
				}
				o += utf8_put(j->scratch + o, cp);
				i += 4;
				col += 4;
				break;
			default:
				return NULL;
			}
			i += 2;
			col += 2;
			continue;
		}
		if (c >= 0x80) {
			size_t u = utf8_len(j->s + i, j->len - i);

			/* U+0085, U+2028 and U+2029 are line breaks to libyaml, which
			 * folds them inside quotes and counts lines by them */
			if (u == 0 || (u == 2 && c == 0xc2 && j->s[i + 1] == 0x85) ||
			    (u == 3 && c == 0xe2 && j->s[i + 1] == 0x80 && (j->s[i + 2] == 0xa8 || j->s[i + 2] == 0xa9)))
				return NULL;
			memcpy(j->scratch + o, j->s + i, u);
			o += u;
			i += u;
			col++;
			continue;
		}
		j->scratch[o++] = (char)c;
		i++;
		col++;
	}
	n->quoted = true;
	n->len = o;
	if (!(n->str = arena_alloc(&j->arena, o + 1)))
		return NULL;
	memcpy(n->str, j->scratch, o);
	n->str[o] = '\0';
	j->i = i + 1;
	j->col = col + 1;
	return n;
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A number or true/false/null as a plain scalar with its source text, as
 * libyaml reads it; refused where jansson refuses it (grammar, range). */
static struct doc_node *jf_plain(struct jfast *j)
{
	size_t i = j->i, start = j->i;
	bool real = false;
	struct doc_node *n;
	char text[64];

	if (j->s[i] == 't' || j->s[i] == 'f' || j->s[i] == 'n') {
		static const char *const words[] = {"true", "false", "null"};
		size_t w = j->s[i] == 't' ? 0 : j->s[i] == 'f' ? 1 : 2, l = strlen(words[w]);

		if (j->len - i < l || memcmp(j->s + i, words[w], l) != 0)
			return NULL;
		i += l;
	} else {
		if (j->s[i] == '-')
			i++;
		if (i < j->len && j->s[i] == '0')
			i++;
		else if (i < j->len && j->s[i] >= '1' && j->s[i] <= '9')
			while (i < j->len && is_digit(j->s[i]))
				i++;
		else
			return NULL;
		if (i < j->len && j->s[i] == '.') {
			real = true;
			if (++i >= j->len || !is_digit(j->s[i]))
				return NULL;
			while (i < j->len && is_digit(j->s[i]))
				i++;
		}
		if (i < j->len && (j->s[i] == 'e' || j->s[i] == 'E')) {
			real = true;
			if (++i < j->len && (j->s[i] == '+' || j->s[i] == '-'))
				i++;
			if (i >= j->len || !is_digit(j->s[i]))
				return NULL;
			while (i < j->len && is_digit(j->s[i]))
				i++;
		}
		if (i - start >= sizeof(text))
			return NULL; /* long numbers: let jansson judge their range */
		memcpy(text, j->s + start, i - start);
		text[i - start] = '\0';
		errno = 0;
		if (real)
			(void)strtod(text, NULL);
		else
			(void)strtoll(text, NULL, 10);
		if (errno == ERANGE)
			return NULL;
	}
	/* what follows a value: whitespace, a separator or the end */
	if (i < j->len && (!j->s[i] || !strchr(" \t\r\n,]}", j->s[i])))
		return NULL;
	if (!(n = jf_node(j, DOC_SCALAR, j->line, j->col)) || !(n->str = arena_alloc(&j->arena, i - start + 1)))
		return NULL;
	memcpy(n->str, j->s + start, i - start);
	n->str[i - start] = '\0';
	n->len = i - start;
	j->col += (int)(i - start);
	j->i = i;
	return n;
}

static bool jf_push(struct jfast *j, struct doc_node *n)
{
	if (j->sp == j->cap) {
		size_t cap = j->cap ? j->cap * 2 : 64;
		struct doc_node **v = realloc(j->stack, cap * sizeof(*v));

		if (!v)
			return false;
		j->stack = v;
		j->cap = cap;
	}
	j->stack[j->sp++] = n;
	return true;
}

static int jf_key_cmp(const void *a, const void *b)
{
	const struct doc_node *x = *(struct doc_node *const *)a, *y = *(struct doc_node *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->str, y->str, n);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Keys sit at even offsets of kv (key, value, key, value, ...). */
static bool jf_has_duplicates(struct doc_node **kv, size_t n)
{
	struct doc_node **keys;
	bool dup = false;

	if (n <= 16) {
		for (size_t a = 0; a < n; a++)
			for (size_t b = a + 1; b < n; b++)
				if (jf_key_cmp(&kv[2 * a], &kv[2 * b]) == 0)
					return true;
		return false;
	}
	if (!(keys = malloc(n * sizeof(*keys))))
		return true; /* the two-pass path will say "out of memory" if it is one */
	for (size_t a = 0; a < n; a++)
		keys[a] = kv[2 * a];
	qsort(keys, n, sizeof(*keys), jf_key_cmp);
	for (size_t a = 1; a < n && !dup; a++)
		dup = jf_key_cmp(&keys[a - 1], &keys[a]) == 0;
	free(keys);
	return dup;
}

static struct doc_node *jf_value(struct jfast *j, size_t depth);

/* An array or object at j->i; its children go through the stack and are
 * copied into right-sized arrays when it closes. */
static struct doc_node *jf_collection(struct jfast *j, size_t depth)
{
	bool map = j->s[j->i] == '{';
	unsigned char close = map ? '}' : ']';
	struct doc_node *n;
	size_t base = j->sp, count;

	if (depth >= DOC_MAX_DEPTH || !(n = jf_node(j, map ? DOC_MAP : DOC_SEQ, j->line, j->col)))
		return NULL;
	j->i++;
	j->col++;
	if (!jf_ws(j) || j->i >= j->len)
		return NULL;
	if (j->s[j->i] != close) {
		for (;;) {
			struct doc_node *v;

			if (map) {
				struct doc_node *k;

				if (j->s[j->i] != '"' || !(k = jf_string(j)) || !jf_push(j, k) || !jf_ws(j) ||
				    j->i >= j->len || j->s[j->i] != ':')
					return NULL;
				j->i++;
				j->col++;
			}
			if (!(v = jf_value(j, depth + 1)) || !jf_push(j, v) || !jf_ws(j) || j->i >= j->len)
				return NULL;
			if (j->s[j->i] == close)
				break;
			if (j->s[j->i] != ',')
				return NULL;
			j->i++;
			j->col++;
			if (!jf_ws(j) || j->i >= j->len)
				return NULL;
		}
	}
	j->i++;
	j->col++;
	count = j->sp - base;
	n->n = map ? count / 2 : count;
	if (map && n->n && jf_has_duplicates(j->stack + base, n->n))
		return NULL;
	if (n->n) {
		if (!(n->items = arena_alloc(&j->arena, n->n * sizeof(*n->items))))
			return NULL;
		if (map && !(n->keys = arena_alloc(&j->arena, n->n * sizeof(*n->keys))))
			return NULL;
		for (size_t k = 0; k < n->n; k++) {
			if (map) {
				n->keys[k] = j->stack[base + 2 * k];
				n->items[k] = j->stack[base + 2 * k + 1];
			} else {
				n->items[k] = j->stack[base + k];
			}
		}
	}
	j->sp = base;
	return n;
}

static struct doc_node *jf_value(struct jfast *j, size_t depth)
{
	if (!jf_ws(j) || j->i >= j->len)
		return NULL;
	switch (j->s[j->i]) {
	case '{':
	case '[':
		return jf_collection(j, depth);
	case '"':
		return jf_string(j);
	default:
		return jf_plain(j);
	}
}

/* The tree of buf into b->file, or false (b->file untouched) if this reader
 * leaves the file to the two-pass path. */
static bool json_fast_build(struct builder *b, const char *buf, size_t len)
{
	struct jfast j = {.s = (const unsigned char *)buf, .len = len, .line = 1, .col = 1};
	struct doc_node *root = NULL;
	bool ok = false;

	/* an unescaped string is never longer than its source */
	if (!(j.scratch = malloc(len + 1)))
		goto out;
	root = jf_value(&j, 0);
	if (!root || !jf_ws(&j) || j.i != len)
		goto out;
	if (!(b->file->docs = arena_alloc(&j.arena, sizeof(*b->file->docs))))
		goto out;
	b->file->docs[0] = root;
	b->file->n_docs = 1;
	b->file->arena = j.arena;
	j.arena = NULL;
	ok = true;
out:
	arena_free(j.arena);
	free(j.stack);
	free(j.scratch);
	return ok;
}

static enum broker_err json_validate(struct builder *b, const char *buf, size_t len, json_t **ret)
{
	json_error_t jerr;
	json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);

	if (!v) {
		diag_error(b->d, b->name, jerr.line > 0 ? jerr.line : 1, jerr.column > 0 ? jerr.column : 1,
			   "invalid JSON: %s", jerr.text);
		b->failed = true;
		return BROKER_ERR_CONFIG;
	}
	*ret = v;
	return BROKER_OK;
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
	b.file = calloc(1, sizeof(*b.file));
	if (!b.file || !(b.file->path = strdup(name ? name : "<input>")))
		goto out;
	if (is_json && json_fast_build(&b, buf, len)) {
		err = BROKER_OK;
	} else if (is_json) {
		struct diag *quiet;

		err = json_validate(&b, buf, len, &json);
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
				node_free(b.file->docs[i]);
			b.file->n_docs = 0;
			b.failed = false;
			b.nodes = 0;
			b.too_many = false;
			root = json_build(&b, &s, json, 0);
			err = root ? attach(&b, root) : (b.failed ? BROKER_ERR_CONFIG : BROKER_ERR_NOMEM);
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
