/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>

#include <openssl/evp.h>

#include "cibroker/diag.h"
#include "cibroker/err.h"

/* The broker's own ES256 signing keys: loaded once, first one signs, all are
 * published in /.well-known/jwks.json with RFC 7638 thumbprints as kid. */
struct broker_signing_keys;

/* Refuses files that are group/world readable (as ssh does) or not P-256. */
enum broker_err signing_keys_load(char *const *paths, size_t n, struct diag *d, struct broker_signing_keys **ret);
/* In-memory key for `cibroker dev`. */
enum broker_err signing_keys_generate(struct broker_signing_keys **ret);
void signing_keys_free(struct broker_signing_keys *ks);

EVP_PKEY *signing_keys_active(const struct broker_signing_keys *ks);
const char *signing_keys_active_kid(const struct broker_signing_keys *ks);
/* {"keys":[...]} rendered once at load. */
const char *signing_keys_jwks(const struct broker_signing_keys *ks);
size_t signing_keys_count(const struct broker_signing_keys *ks);

/* RFC 7638 thumbprint of an EC P-256 or RSA public key, base64url (43 chars + NUL). */
enum broker_err jwk_thumbprint(EVP_PKEY *pkey, char out[44]);
/* `cibroker keygen`: new P-256 key, PKCS#8 PEM, created with mode 0600 (O_EXCL). */
enum broker_err signing_key_generate_file(const char *path, char ret_kid[44]);
