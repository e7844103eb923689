/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cibroker/diag.h"
#include "cibroker/doc.h"
#include "cibroker/err.h"

/* Signature algorithms accepted for subject tokens (bit set). none and HS*
 * have no bit: they cannot be configured. */
enum broker_alg {
	BROKER_ALG_RS256 = 1u << 0,
	BROKER_ALG_RS384 = 1u << 1,
	BROKER_ALG_RS512 = 1u << 2,
	BROKER_ALG_PS256 = 1u << 3,
	BROKER_ALG_PS384 = 1u << 4,
	BROKER_ALG_PS512 = 1u << 5,
	BROKER_ALG_ES256 = 1u << 6,
	BROKER_ALG_ES384 = 1u << 7,
};
/* Exact, case-sensitive name -> bit; 0 if unknown. */
unsigned broker_alg_from_name(const char *name);
const char *broker_alg_name(unsigned alg);

struct broker_issuer_config {
	char *name;              /* referenced by policies */
	char *issuer;            /* exact `iss` */
	char *jwks_uri;          /* NULL: discovery */
	char **audiences;        /* accepted `aud`; default [public_url] */
	size_t n_audiences;
	unsigned algorithms;     /* enum broker_alg bits; default RS256|ES256 */
	int64_t clock_skew;      /* s, default 60, max 300 */
	int64_t max_token_age;   /* s, default 900 */
	int64_t jwks_refresh;    /* s, default 3600 */
	int64_t jwks_min_refetch; /* s, default 30 */
	char *ca_file;
	bool single_use;
	const struct doc_node *deny; /* conditions map, compiled by the policy module; NULL if none */
	const char *file;        /* where it was defined, for policy-module diagnostics */
	int line, col;
};

enum broker_audit_sync { BROKER_AUDIT_SYNC_ALWAYS = 0, BROKER_AUDIT_SYNC_NONE = 1 };

struct broker_config {
	char *path;
	char *listen;            /* default "127.0.0.1:8080" */
	char *public_url;        /* required */
	char *tls_cert, *tls_key;
	char **signing_keys;     /* first signs; all published */
	struct diag_pos *signing_key_pos; /* where each was named in path */
	size_t n_signing_keys;
	struct broker_issuer_config *issuers;
	size_t n_issuers;
	char *policies_dir;      /* resolved relative to the config file's directory */
	char *audit_path;        /* "-" = stdout */
	struct diag_pos audit_path_pos;
	enum broker_audit_sync audit_sync;
	size_t max_body;         /* default 16 KiB */
	int64_t max_ttl;         /* default 3600 */

	/* aws: how the broker reaches STS (optional) */
	char *aws_sts_endpoint;
	char *aws_region;
	char *aws_profile;       /* optional profile name in the shared credentials file */
	struct diag_pos aws_pos; /* of aws.profile if given, else aws.region */

	/* replay: {redis: "redis://host:6379"} (optional) */
	char *replay_redis;

	/* server: tuning of the listener (all optional) */
	unsigned threads;            /* default: number of cores */
	unsigned max_connections;    /* default 1024 */
	unsigned per_ip_connections; /* default 64 */
	int64_t connection_timeout;  /* s, default 10: idle/slow client */
	int64_t request_deadline;    /* s, default 15: absolute per request */

	/* rate_limits: token buckets (0 = off) */
	double rate_per_ip, burst_per_ip;
	double rate_per_subject, burst_per_subject;

	struct doc_file *doc;    /* owned: the parsed file (issuer deny nodes point into it) */
};

/* Load and validate a config file (YAML, or JSON if it ends in .json).
 * Every problem goes to d as FILE:LINE:COL; any error -> BROKER_ERR_CONFIG.
 * Checks keys' file modes (group/world-readable signing keys are refused). */
enum broker_err config_load(const char *path, struct diag *d, struct broker_config **ret);
/* As config_load, but a file that parsed and only broke rules (BROKER_ERR_CONFIG)
 * still yields what was read, so `policy check` can go on to the policies and
 * report their errors in the same run. Never serve such a config. */
enum broker_err config_load_partial(const char *path, struct diag *d, struct broker_config **ret);
void config_free(struct broker_config *cfg);
/* The defaults config_load starts from (also for configs built in memory,
 * as `cibroker dev` does). */
void config_defaults(struct broker_config *cfg);
void config_issuer_defaults(struct broker_issuer_config *iss);
const struct broker_issuer_config *config_find_issuer(const struct broker_config *cfg, const char *name);
