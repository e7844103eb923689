/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>

#include <openssl/evp.h>

#include "cibroker/diag.h"
#include "cibroker/err.h"

/* The broker's own ES256 signing keys: loaded once, first one signs, all are
 * published in /.well-known/jwks.json with RFC 7638 thumbprints as kid. */
struct broker_signing_keys;

/* signing.keys entries, checked by config and here. Rotation needs two, an
 * emergency three; more is a misconfiguration. */
#define SIGNING_KEYS_MAX 16

/* Refuses (BROKER_ERR_CONFIG, one diag line per problem, every file checked)
 * key files that are not regular files, not owned by the effective user or
 * root, group/world accessible (as ssh and OpenBSD's check_file_secrecy do),
 * not an unencrypted PEM PKCS#8/SEC1 EC P-256 private key, or that repeat an
 * earlier key. At most SIGNING_KEYS_MAX keys. d may be NULL. With config and where (the
 * position that named each path in it), each problem is reported at that
 * position, "CONFIG:LINE:COL: signing.keys[I]: PATH: message"; otherwise as
 * "PATH: message". */
enum broker_err signing_keys_load(char *const *paths, size_t n, const char *config, const struct diag_pos *where,
				  struct diag *d, struct broker_signing_keys **ret);
/* In-memory key for `cibroker dev`. */
enum broker_err signing_keys_generate(struct broker_signing_keys **ret);
void signing_keys_free(struct broker_signing_keys *ks);

EVP_PKEY *signing_keys_active(const struct broker_signing_keys *ks);
const char *signing_keys_active_kid(const struct broker_signing_keys *ks);
/* {"keys":[...]} rendered once at load. */
const char *signing_keys_jwks(const struct broker_signing_keys *ks);
size_t signing_keys_count(const struct broker_signing_keys *ks);
/* kid of the i-th key in configuration order (0 signs); NULL if i >= count. */
const char *signing_keys_kid(const struct broker_signing_keys *ks, size_t i);

/* RFC 7638 thumbprint of an EC P-256 or RSA public key, base64url (43 chars + NUL). */
enum broker_err jwk_thumbprint(EVP_PKEY *pkey, char out[44]);
/* `cibroker keygen`: new P-256 key, PKCS#8 PEM, created with mode 0600 (O_EXCL,
 * so an existing file is never overwritten). On BROKER_ERR_IO errno says why
 * (EEXIST: the file exists). A partly written file is removed. */
enum broker_err signing_key_generate_file(const char *path, char ret_kid[44]);
