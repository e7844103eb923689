/* SPDX-License-Identifier: Apache-2.0 */
/* Loading policy files: every *.yaml, *.yml and *.json of the policies
 * directory, each one policy or a list of them (YAML: also several `---`
 * documents). Every key goes through a table of typed handlers, so an
 * unknown key (a typo that would silently weaken a policy) is an error.
 * All errors of all files are reported in one run; any error refuses the
 * whole set. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cibroker/util.h"
#include "policy-int.h"

/* ---- small helpers --------------------------------------------------- */

const char *policy_set_intern_file(struct broker_policy_set *set, const char *file)
{
	const char *copy;

	/* Each policy file is interned once, right before it is loaded, and
	 * issuers of one config share its path: comparing with the last one
	 * is enough, and keeps 10,000 files linear. */
	if (set->last_file && strcmp(set->last_file, file) == 0)
		return set->last_file;
	if (!(copy = set_strdup(set, file, strlen(file))))
		return NULL;
	set->last_file = copy;
	return copy;
}

/* A non-empty string scalar without NUL bytes, copied to *ret. */
enum broker_err load_get_string(struct load_ctx *ctx, const struct doc_node *n, const char *what, const char **ret)
{
	const char *s;

	if (n->kind != DOC_SCALAR || doc_is_null(n) || n->len == 0) {
		diag_error(ctx->d, ctx->file, n->line, n->col, "'%s' must be a non-empty string", what);
		return BROKER_ERR_CONFIG;
	}
	if (memchr(n->str, '\0', n->len)) {
		diag_error(ctx->d, ctx->file, n->line, n->col, "'%s' contains a NUL byte", what);
		return BROKER_ERR_CONFIG;
	}
	if (!(s = set_intern(ctx->set, n->str, n->len)))
		return BROKER_ERR_NOMEM;
	*ret = s;
	return BROKER_OK;
}

enum broker_err load_dispatch(struct load_ctx *ctx, const struct doc_node *map, const struct key_table *table,
				size_t n_table, const char *where)
{
	enum broker_err r = BROKER_OK;

	for (size_t i = 0; i < map->n; i++) {
		const struct doc_node *key = map->keys[i];
		size_t t;

		for (t = 0; t < n_table; t++)
			if (strcmp(key->str, table[t].key) == 0)
				break;
		if (t == n_table) {
			char known[256];
			size_t o = 0;

			known[0] = '\0';
			for (size_t k = 0; k < n_table && o < sizeof(known); k++)
				o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", k ? ", " : "", table[k].key);
			diag_error(ctx->d, ctx->file, key->line, key->col, "unknown key '%s' in %s (known: %s)", key->str,
				   where, known);
			r = BROKER_ERR_CONFIG;
			continue;
		}
		enum broker_err e = table[t].fn(ctx, key, map->items[i]);

		if (e == BROKER_ERR_NOMEM)
			return e;
		if (e != BROKER_OK)
			r = e;
	}
	return r;
}

/* ---- policy ---------------------------------------------------------- */

static bool policy_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > POLICY_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == ':' || c == '/' || c == '-'))
			return false;
	}
	return true;
}

static enum broker_err h_name(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	if (val->kind != DOC_SCALAR || doc_is_null(val) || !policy_name_ok(val->str, val->len)) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "name must be 1-%d characters of [A-Za-z0-9._:/-]",
			   POLICY_NAME_MAX);
		return BROKER_ERR_CONFIG;
	}
	ctx->p->line = val->line;
	ctx->p->col = val->col;
	/* names are unique: a copy, not an interned string */
	ctx->p->name = set_strdup(ctx->set, val->str, val->len);
	return ctx->p->name ? BROKER_OK : BROKER_ERR_NOMEM;
}

static enum broker_err h_description(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	if (val->kind != DOC_SCALAR || memchr(val->str, '\0', val->len) || val->len > 4096) {
		diag_error(ctx->d, ctx->file, val->line, val->col, "description must be a string of at most 4096 bytes");
		return BROKER_ERR_CONFIG;
	}
	ctx->p->description = set_strdup(ctx->set, val->str, val->len);
	return ctx->p->description ? BROKER_OK : BROKER_ERR_NOMEM;
}

static enum broker_err h_issuer(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	const struct broker_config *cfg = ctx->cfg;
	enum broker_err r = load_get_string(ctx, val, "issuer", &ctx->p->issuer);
	const struct broker_issuer_config *ic;

	if (r != BROKER_OK)
		return r;
	ic = config_find_issuer(cfg, ctx->p->issuer);
	if (!ic) {
		char known[256];
		size_t o = 0;

		known[0] = '\0';
		for (size_t i = 0; i < cfg->n_issuers && o < sizeof(known); i++)
			if (cfg->issuers[i].name) /* NULL: a config entry with errors */
				o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", o ? ", " : "",
						      cfg->issuers[i].name);
		diag_error(ctx->d, ctx->file, val->line, val->col, "unknown issuer '%s' (the config defines: %s)",
			   ctx->p->issuer, o ? known : "none");
		return BROKER_ERR_CONFIG;
	}
	ctx->p->issuer_idx = (size_t)(ic - cfg->issuers);
	return BROKER_OK;
}

static enum broker_err h_allow(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	ctx->p->allow_line = key->line;
	ctx->p->allow_col = key->col;
	return condset_compile(ctx->set, val, ctx->file, "allow", ctx->d, &ctx->p->allow);
}

static enum broker_err h_deny(struct load_ctx *ctx, const struct doc_node *key, const struct doc_node *val)
{
	return condset_compile(ctx->set, val, ctx->file, "deny", ctx->d, &ctx->p->deny);
}

static const struct key_table policy_keys[] = {
	{"name", h_name},   {"description", h_description}, {"issuer", h_issuer},
	{"allow", h_allow}, {"deny", h_deny},               {"credential", load_credential},
};

void policy_release(struct broker_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_claims; i++)
		json_decref(p->claims[i].value);
	p->n_claims = 0;
}

static enum broker_err load_policy(struct load_ctx *ctx, const struct doc_node *n)
{
	struct broker_policy *p = NULL;
	const struct broker_policy *first;
	static const char *const required[] = {"name", "issuer", "allow", "credential"};
	size_t errors = diag_errors(ctx->d);
	enum broker_err r;

	if (n->kind != DOC_MAP) {
		diag_error(ctx->d, ctx->file, n->line, n->col, "a policy must be a mapping (name, issuer, allow, ...)");
		return BROKER_ERR_CONFIG;
	}
	if (!(p = set_alloc(ctx->set, sizeof(*p))))
		return BROKER_ERR_NOMEM;
	p->file = ctx->file;
	p->line = n->line;
	p->col = n->col;
	p->issuer_idx = SIZE_MAX;
	ctx->p = p;
	r = load_dispatch(ctx, n, policy_keys, BROKER_ARRAY_SIZE(policy_keys), "a policy");
	if (r == BROKER_ERR_NOMEM)
		goto out;
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(required); i++)
		if (!doc_map_get(n, required[i])) {
			diag_error(ctx->d, ctx->file, n->line, n->col, "policy %s%s%shas no '%s'", p->name ? "'" : "",
				   p->name ? p->name : "", p->name ? "' " : "", required[i]);
			r = BROKER_ERR_CONFIG;
		}
	p->broken = diag_errors(ctx->d) > errors;
	if (!p->name)
		goto out;
	/* keep even a broken policy in the set: its name must still collide
	 * with duplicates, and the set frees it */
	if (policy_set_add(ctx->set, p, &first) != BROKER_OK) {
		r = BROKER_ERR_NOMEM;
		goto out;
	}
	ctx->p = NULL;
	if (first) {
		const struct doc_node *name = doc_map_get(n, "name");

		diag_error(ctx->d, ctx->file, name->line, name->col,
			   "duplicate policy name '%s' (first defined at %s:%d:%d)", p->name, first->file, first->line,
			   first->col);
		r = BROKER_ERR_CONFIG;
	}
	return r;
out:
	ctx->p = NULL;
	policy_release(p); /* the rest stays in the arena until the set goes */
	return r;
}

static enum broker_err load_doc_file(struct load_ctx *ctx, const struct doc_file *f)
{
	enum broker_err r = BROKER_OK;
	size_t found = 0;

	for (size_t i = 0; i < f->n_docs; i++) {
		const struct doc_node *root = f->docs[i];
		enum broker_err e = BROKER_OK;

		if (!root || (root->kind == DOC_SCALAR && doc_is_null(root)))
			continue; /* an empty document (comments only) */
		if (root->kind == DOC_SEQ) {
			for (size_t k = 0; k < root->n && e != BROKER_ERR_NOMEM; k++, found++) {
				enum broker_err e2 = load_policy(ctx, root->items[k]);

				if (e2 != BROKER_OK)
					e = e2;
			}
		} else if (root->kind == DOC_MAP) {
			e = load_policy(ctx, root);
			found++;
		} else {
			diag_error(ctx->d, ctx->file, root->line, root->col,
				   "expected a policy (a mapping) or a list of policies");
			e = BROKER_ERR_CONFIG;
		}
		if (e == BROKER_ERR_NOMEM)
			return e;
		if (e != BROKER_OK)
			r = e;
	}
	if (found == 0 && r == BROKER_OK)
		diag_warning(ctx->d, ctx->file, 1, 1, "no policies in this file");
	return r;
}

static enum broker_err load_buffer(struct load_ctx *ctx, const char *name, const char *buf, size_t len, bool is_json)
{
	struct doc_file *f = NULL;
	enum broker_err r;

	if (!(ctx->file = policy_set_intern_file(ctx->set, name)))
		return BROKER_ERR_NOMEM;
	if (len > POLICY_FILE_MAX) {
		diag_error(ctx->d, ctx->file, 0, 0, "policy file is larger than %d bytes", POLICY_FILE_MAX);
		return BROKER_ERR_TOOBIG;
	}
	r = doc_load_buffer(ctx->file, buf, len, is_json, ctx->d, &f);
	if (r != BROKER_OK)
		return r;
	r = load_doc_file(ctx, f);
	doc_file_free(f);
	return r;
}

/* ---- the set --------------------------------------------------------- */

void policy_set_free(struct broker_policy_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		policy_release(set->v[i]);
	free(set->v);
	free(set->table);
	set_release_memory(set);
	free(set);
}

/* Issuer-level deny lives in the config; its errors point there. */
static enum broker_err set_new(const struct broker_config *cfg, struct diag *d, struct broker_policy_set **ret)
{
	struct broker_policy_set *set = calloc(1, sizeof(*set));
	enum broker_err r = BROKER_ERR_NOMEM;

	if (!set)
		goto out;
	if (cfg->n_issuers && !(set->issuers = set_alloc(set, cfg->n_issuers * sizeof(*set->issuers))))
		goto out;
	for (size_t i = 0; i < cfg->n_issuers; i++) {
		const struct broker_issuer_config *ic = &cfg->issuers[i];
		const char *file, *name = ic->name ? ic->name : "";

		set->n_issuers++;
		if (!(set->issuers[i].issuer_name = set_intern(set, name, strlen(name))))
			goto out;
		if (!ic->deny)
			continue;
		file = policy_set_intern_file(set, ic->file ? ic->file : cfg->path ? cfg->path : "(config)");
		if (!file)
			goto out;
		if (condset_compile(set, ic->deny, file, "deny", d, &set->issuers[i].deny) == BROKER_ERR_NOMEM)
			goto out;
	}
	*ret = set;
	set = NULL;
	r = BROKER_OK;
out:
	policy_set_free(set);
	return r;
}

static bool wanted_file(const char *name)
{
	size_t len = strlen(name);

	/* dotfiles are editor droppings (.#x.yaml lock links, swap files) */
	if (name[0] == '.')
		return false;
	return (len > 5 && strcmp(name + len - 5, ".yaml") == 0) || (len > 4 && strcmp(name + len - 4, ".yml") == 0) ||
	       (len > 5 && strcmp(name + len - 5, ".json") == 0);
}

static void config_policies_pos(const struct broker_config *cfg, int *line, int *col)
{
	const struct doc_node *n = NULL;

	*line = 0;
	*col = 0;
	if (cfg->doc && cfg->doc->n_docs && cfg->doc->docs[0])
		n = doc_map_get(cfg->doc->docs[0], "policies");
	if (n) {
		*line = n->line;
		*col = n->col;
	}
}

struct dir_entry {
	const char *name;
	size_t off;         /* of name in the pool, while the pool grows */
	unsigned char type; /* d_type */
};

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct dir_entry *)a)->name, ((const struct dir_entry *)b)->name);
}

/* The policy files' names, sorted: one pool for the names, one array. */
static enum broker_err list_dir(DIR *dh, char **ret_pool, struct dir_entry **ret_v, size_t *ret_n)
{
	char *pool = NULL;
	struct dir_entry *v = NULL;
	size_t n = 0, cap = 0, used = 0, pool_cap = 0;
	struct dirent *de;
	enum broker_err r = BROKER_ERR_NOMEM;

	while ((de = readdir(dh))) {
		size_t len = strlen(de->d_name) + 1;

		if (!wanted_file(de->d_name))
			continue;
		if (n == cap) {
			struct dir_entry *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*nv));

			if (!nv)
				goto out;
			v = nv;
		}
		if (used + len > pool_cap) {
			char *np = realloc(pool, (pool_cap = (used + len) * 2 + 4096));

			if (!np)
				goto out;
			pool = np;
		}
		memcpy(pool + used, de->d_name, len);
		v[n].off = used;
		v[n].type = de->d_type;
		used += len;
		n++;
	}
	for (size_t i = 0; i < n; i++)
		v[i].name = pool + v[i].off;
	if (n)
		qsort(v, n, sizeof(*v), cmp_entry);
	*ret_pool = pool;
	*ret_v = v;
	*ret_n = n;
	pool = NULL;
	v = NULL;
	r = BROKER_OK;
out:
	free(pool);
	free(v);
	return r;
}

struct read_buf {
	char *p;
	size_t cap;
};

/* One policy file, opened relative to the directory (no path walk per file)
 * and read into a buffer reused for every file. A regular file that the
 * directory entry says is one needs no stat; symlinks and file systems that
 * do not fill d_type are checked as stat(2) checked them. BROKER_ERR_INVALID:
 * not a regular file; BROKER_ERR_TOOBIG: over POLICY_FILE_MAX. */
static enum broker_err read_entry(int dfd, const struct dir_entry *e, struct read_buf *rb, size_t *ret_len)
{
	enum broker_err r = BROKER_ERR_IO;
	struct stat st;
	size_t len = 0;
	int fd;

	if (e->type != DT_REG && e->type != DT_LNK && e->type != DT_UNKNOWN)
		return BROKER_ERR_INVALID;
	if (e->type != DT_REG && (fstatat(dfd, e->name, &st, 0) != 0 || !S_ISREG(st.st_mode)))
		return BROKER_ERR_INVALID;
	/* O_NONBLOCK: a FIFO swapped in since must not hang the loader */
	fd = openat(dfd, e->name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return fstatat(dfd, e->name, &st, 0) != 0 || !S_ISREG(st.st_mode) ? BROKER_ERR_INVALID : BROKER_ERR_IO;
	if (fstat(fd, &st) != 0)
		goto out;
	if (!S_ISREG(st.st_mode)) {
		r = BROKER_ERR_INVALID;
		goto out;
	}
	if ((uint64_t)st.st_size > POLICY_FILE_MAX) {
		r = BROKER_ERR_TOOBIG;
		goto out;
	}
	for (;;) {
		ssize_t got;

		/* room for the whole file, one byte past the limit, and the NUL */
		if (rb->cap < len + 4097 && len <= POLICY_FILE_MAX) {
			size_t cap = (size_t)st.st_size > len ? (size_t)st.st_size + 4097 : len + 65536;
			char *p = realloc(rb->p, cap < POLICY_FILE_MAX + 2 ? cap : POLICY_FILE_MAX + 2);

			if (!p) {
				r = BROKER_ERR_NOMEM;
				goto out;
			}
			rb->p = p;
			rb->cap = cap < POLICY_FILE_MAX + 2 ? cap : POLICY_FILE_MAX + 2;
		}
		got = read(fd, rb->p + len, rb->cap - 1 - len);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len > POLICY_FILE_MAX) {
			r = BROKER_ERR_TOOBIG;
			goto out;
		}
	}
	rb->p[len] = '\0';
	*ret_len = len;
	r = BROKER_OK;
out:
	close(fd);
	return r;
}

static enum broker_err load_dir(struct load_ctx *ctx, const char *dir)
{
	enum broker_err r = BROKER_OK;
	char *pool = NULL, *path = NULL;
	struct dir_entry *v = NULL;
	struct read_buf rb = {0};
	size_t n = 0, dir_len = strlen(dir), path_cap = 0;
	DIR *dh = opendir(dir);
	int line, col;

	if (!dh) {
		config_policies_pos(ctx->cfg, &line, &col);
		diag_error(ctx->d, ctx->cfg->path ? ctx->cfg->path : dir, line, col,
			   "cannot open policies directory %s: %s", dir, strerror(errno));
		return BROKER_ERR_CONFIG;
	}
	if ((r = list_dir(dh, &pool, &v, &n)) != BROKER_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		size_t name_len = strlen(v[i].name), len;
		bool is_json = strcmp(v[i].name + name_len - 5, ".json") == 0;
		enum broker_err e;

		/* "dir/name", for diagnostics and positions */
		if (dir_len + name_len + 2 > path_cap) {
			char *p = realloc(path, path_cap = dir_len + name_len + 256);

			if (!p) {
				r = BROKER_ERR_NOMEM;
				goto out;
			}
			path = p;
		}
		memcpy(path, dir, dir_len);
		path[dir_len] = '/';
		memcpy(path + dir_len + 1, v[i].name, name_len + 1);
		e = read_entry(dirfd(dh), &v[i], &rb, &len);
		if (e == BROKER_ERR_NOMEM) {
			r = e;
			goto out;
		}
		if (e == BROKER_ERR_INVALID) {
			diag_warning(ctx->d, path, 0, 0, "not a regular file; ignored");
			continue;
		}
		if (e != BROKER_OK) {
			diag_error(ctx->d, path, 0, 0, "%s",
				   e == BROKER_ERR_TOOBIG ? "policy file is larger than 1 MiB" : "cannot read file");
			r = BROKER_ERR_CONFIG;
			continue;
		}
		e = load_buffer(ctx, path, rb.p, len, is_json);
		if (e == BROKER_ERR_NOMEM) {
			r = e;
			goto out;
		}
		if (e != BROKER_OK)
			r = BROKER_ERR_CONFIG;
	}
out:
	closedir(dh);
	free(path);
	free(rb.p);
	free(pool);
	free(v);
	return r;
}

static enum broker_err load_common(const struct broker_config *cfg, struct diag *d, const char *name, const char *buf,
				   size_t len, bool is_json, struct broker_policy_set **ret)
{
	struct load_ctx ctx = {.cfg = cfg, .d = d};
	size_t errors = diag_errors(d);
	enum broker_err r;

	if ((r = set_new(cfg, d, &ctx.set)) != BROKER_OK)
		return r;
	if (name)
		r = load_buffer(&ctx, name, buf, len, is_json);
	else if (cfg->policies_dir)
		r = load_dir(&ctx, cfg->policies_dir);
	if (r == BROKER_ERR_NOMEM)
		goto out;
	/* compiling is done: only lookups by name remain */
	set_load_done(ctx.set);
	policy_lint(cfg, ctx.set, d);
	r = diag_errors(d) > errors ? BROKER_ERR_CONFIG : BROKER_OK;
	if (r == BROKER_OK) {
		*ret = ctx.set;
		ctx.set = NULL;
	}
out:
	policy_set_free(ctx.set);
	return r;
}

enum broker_err policy_set_load(const struct broker_config *cfg, struct diag *d, struct broker_policy_set **ret)
{
	return load_common(cfg, d, NULL, NULL, 0, false, ret);
}

enum broker_err policy_set_load_buffer(const struct broker_config *cfg, const char *name, const char *buf, size_t len,
				       bool is_json, struct diag *d, struct broker_policy_set **ret)
{
	return load_common(cfg, d, name, buf, len, is_json, ret);
}
