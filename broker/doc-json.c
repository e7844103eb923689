/* SPDX-License-Identifier: Apache-2.0 */
/* JSON files for the document reader: jansson's strict verdict, the
 * one-pass reader for the common case, and the tree built from jansson's
 * values when libyaml cannot read a valid JSON file. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cibroker/util.h"
#include "doc-int.h"

/* ---- JSON that libyaml cannot read (tab indentation, surrogate escapes, long
 * keys): the tree comes from jansson, the positions from a scan of the text,
 * which is valid JSON at this point so the scan can be simple. Both visit
 * values in document order (jansson keeps object insertion order). */


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

struct doc_node *doc_json_build(struct builder *b, struct json_scan *s, json_t *v, size_t depth);

static struct doc_node *json_build_scalar(struct builder *b, struct json_scan *s, json_t *v, int line, int col)
{
	struct doc_node *n = doc_node_new(b, DOC_SCALAR, line, col);
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

struct doc_node *doc_json_build(struct builder *b, struct json_scan *s, json_t *v, size_t depth)
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
	n = doc_node_new(b, json_is_object(v) ? DOC_MAP : DOC_SEQ, line, col);
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
			if (!(n->items[n->n] = doc_json_build(b, s, item, depth + 1)))
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
			if (!(k = doc_node_new(b, DOC_SCALAR, s->line, s->col)))
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
			if (!(n->items[n->n] = doc_json_build(b, s, item, depth + 1))) {
				doc_node_free(k);
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
	doc_node_free(n);
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

void doc_arena_free(struct doc_arena *a)
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
bool doc_json_fast_build(struct builder *b, const char *buf, size_t len)
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
	doc_arena_free(j.arena);
	free(j.stack);
	free(j.scratch);
	return ok;
}

enum broker_err doc_json_validate(struct builder *b, const char *buf, size_t len, json_t **ret)
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
