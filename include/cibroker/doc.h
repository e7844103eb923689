/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "cibroker/diag.h"
#include "cibroker/err.h"

/* A YAML or JSON document as a tree that remembers where every node came
 * from, so config and policy loaders can say FILE:LINE:COL for any mistake.
 * YAML goes through libyaml; a file ending in .json is read in one strict
 * pass, or, if that pass finds anything unusual (including any error), first
 * checked by jansson (strict JSON, duplicate keys rejected) and then read
 * for positions, which gives the same tree and the exact diagnostics.
 * Duplicate mapping keys are errors in both. Anchors/aliases/tags are refused:
 * configuration should read the same to a person and to the broker. */
enum doc_kind { DOC_SCALAR, DOC_SEQ, DOC_MAP };

struct doc_node {
	enum doc_kind kind;
	int line, col;          /* 1-based */
	bool quoted;            /* scalar was quoted ("..." or '...') or a block scalar (| or >) */
	char *str;              /* scalar bytes, NUL-terminated */
	size_t len;             /* scalar length (may contain NUL) */
	size_t n;               /* number of items (seq) or pairs (map) */
	struct doc_node **items; /* seq items; map values */
	struct doc_node **keys;  /* map keys (scalars) */
};

struct doc_arena;

struct doc_file {
	char *path;
	struct doc_node **docs; /* one per YAML document ("---") */
	size_t n_docs;
	struct doc_arena *arena; /* if set, every node (and docs) lives in it: a tree read in one pass */
};

/* Limits: file size 4 MiB, depth 64. Errors go to d; returns BROKER_ERR_CONFIG
 * if any were reported. */
enum broker_err doc_load(const char *path, struct diag *d, struct doc_file **ret);
/* Same from memory (fuzzing, tests); name is used in messages, is_json picks the syntax. */
enum broker_err doc_load_buffer(const char *name, const char *buf, size_t len, bool is_json,
				struct diag *d, struct doc_file **ret);
void doc_file_free(struct doc_file *f);

/* Value of key in a map node, or NULL. */
struct doc_node *doc_map_get(const struct doc_node *map, const char *key);
/* Plain (unquoted) scalar that YAML would read as null: "", "~", "null". */
bool doc_is_null(const struct doc_node *n);
/* What a scalar means, by the same rules as doc_to_json (YAML 1.2 core
 * schema; quoted and block scalars are always strings). */
enum doc_scalar_type {
	DOC_TYPE_NULL,
	DOC_TYPE_BOOL,
	DOC_TYPE_INT,
	DOC_TYPE_FLOAT,
	DOC_TYPE_STRING,
	DOC_TYPE_NOT_SCALAR,
};
enum doc_scalar_type doc_scalar_type(const struct doc_node *n);
/* Scalar to JSON: quoted -> string; plain null/true/false/int/float -> that type; else string.
 * Sequences and maps convert recursively. */
json_t *doc_to_json(const struct doc_node *n);
