/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness for the document reader under config and policy files:
 * every input is read both as YAML and as JSON, and whatever loads is turned
 * into JSON and typed, so the tree, positions, duplicate-key check and the
 * jansson fallback all run. Must never crash, leak or accept a tree with
 * errors reported. */
#include <stdint.h>
#include <stdlib.h>

#include "cibroker/doc.h"

static void walk(const struct doc_node *n, unsigned depth)
{
	if (depth > 64 || n->line < 1 || n->col < 1)
		abort();
	(void)doc_scalar_type(n);
	(void)doc_is_null(n);
	for (size_t i = 0; i < n->n; i++) {
		if (n->kind == DOC_MAP) {
			if (n->keys[i]->kind != DOC_SCALAR || doc_map_get(n, n->keys[i]->str) == NULL)
				abort();
			walk(n->keys[i], depth + 1);
		}
		walk(n->items[i], depth + 1);
	}
}

static void load(const uint8_t *data, size_t size, bool is_json)
{
	struct diag *d = diag_new();
	struct doc_file *f = NULL;
	enum broker_err err;

	if (!d)
		return;
	err = doc_load_buffer(is_json ? "fuzz.json" : "fuzz.yaml", (const char *)data, size, is_json, d, &f);
	if (err == BROKER_OK) {
		if (diag_errors(d) != 0)
			abort();
		for (size_t i = 0; i < f->n_docs; i++) {
			json_t *j;

			walk(f->docs[i], 1);
			j = doc_to_json(f->docs[i]);
			json_decref(j);
		}
	} else if (f != NULL || (err == BROKER_ERR_CONFIG && diag_errors(d) == 0)) {
		abort(); /* a refusal must say why, and hand nothing out */
	}
	for (size_t i = 0; i < diag_count(d); i++)
		if (!diag_line(d, i))
			abort();
	doc_file_free(f);
	diag_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	load(data, size, false);
	load(data, size, true);
	return 0;
}
