/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cibroker/err.h"
#include "cibroker/exchange.h"

/* The only module that speaks HTTP to clients (libmicrohttpd). */
struct broker_server;
struct devissuer;

struct server_options {
	const char *listen;          /* "127.0.0.1:8080", "[::1]:8443", port 0 = ephemeral */
	unsigned threads;            /* 0: four per core, as config's default */
	unsigned max_connections;
	unsigned per_ip_connections; /* 0: no per-IP limit */
	unsigned connection_timeout; /* s: idle clients are dropped */
	unsigned request_deadline;   /* s: absolute time for one request's body */
	const char *tls_cert_pem;    /* both or neither */
	const char *tls_key_pem;
	struct devissuer *dev;       /* only `cibroker dev` sets this */
	/* The listener is bound with SO_REUSEPORT so that a reload can rebuild
	 * it beside the old one. Only such a replacement may find the address
	 * already bound; any other start refuses a taken port, so that a second
	 * broker cannot quietly answer part of the traffic. */
	bool beside_old;
};

enum broker_err server_start(struct broker_state *st, const struct server_options *opt, struct broker_server **ret,
			     const char **ret_reason);
uint16_t server_port(const struct broker_server *srv);
/* Stop accepting; wait for in-flight requests; free. NULL ok. */
void server_stop(struct broker_server *srv);

/* Dev issuer served under /dev/ (cmd dev only). */
enum broker_err devissuer_create(const char *public_url, struct devissuer **ret);
void devissuer_free(struct devissuer *d);
const char *devissuer_url(const struct devissuer *d); /* <public_url>/dev */
/* Handles GET /dev/.well-known/openid-configuration, GET /dev/jwks, POST /dev/token. Returns false if
 * the path is not the dev issuer's. *ret_body malloc'd. */
bool devissuer_handle(struct devissuer *d, const char *method, const char *path, const char *query_shape,
		      const char *body, size_t len, int *ret_status, char **ret_body, const char **ret_type);
