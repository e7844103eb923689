/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/* Internal to the document reader: what doc.c (the libyaml tree) and
 * doc-json.c (JSON files) share. Nothing outside broker/doc*.c includes it. */
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "cibroker/doc.h"

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

struct json_scan {
	const char *buf;
	size_t len, i;
	int line, col;
};


void doc_node_free(struct doc_node *n);
struct doc_node *doc_node_new(struct builder *b, enum doc_kind kind, int line, int col);
bool doc_grow(void *pp, size_t *cap, size_t n, size_t size);
enum broker_err doc_attach(struct builder *b, struct doc_node *n);
void doc_arena_free(struct doc_arena *a);

/* jansson's verdict on a .json file (duplicate keys rejected), with its position on error. */
enum broker_err doc_json_validate(struct builder *b, const char *buf, size_t len, json_t **ret);
/* A plain, valid JSON file in one pass into an arena; false: use the two-pass path. */
bool doc_json_fast_build(struct builder *b, const char *buf, size_t len);
/* The tree from jansson's values, positions found by scanning the text. */
struct doc_node *doc_json_build(struct builder *b, struct json_scan *s, json_t *v, size_t depth);
