/* SPDX-License-Identifier: Apache-2.0 */
/* The broker's own ES256 signing keys: load (with ssh-like file secrecy
 * checks), RFC 7638 thumbprints, the published JWKS, and `keygen`. */
#include "cibroker/keys.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "cibroker/util.h"

/* A PEM P-256 key is ~250 bytes; anything near this limit is not one. */
#define KEY_FILE_MAX (64 * 1024)
/* RSA thumbprints (issuer keys in tests, the dev issuer): up to 16384 bits. */
#define RSA_THUMBPRINT_MAX_BYTES 2048

struct signing_key {
	EVP_PKEY *pkey;
	char kid[44];
};

struct broker_signing_keys {
	struct signing_key *keys;
	size_t n;
	char *jwks;
};

void signing_keys_free(struct broker_signing_keys *ks)
{
	if (!ks)
		return;
	for (size_t i = 0; i < ks->n; i++)
		EVP_PKEY_free(ks->keys[i].pkey);
	free(ks->keys);
	free(ks->jwks);
	free(ks);
}

/* Unsigned big-endian bytes of a key parameter; pad > 0 left-pads to exactly
 * pad bytes (EC coordinates), pad == 0 gives the minimal encoding (RSA n, e),
 * as RFC 7518 §6.2.1.2 and §6.3.1.1 require. */
static enum broker_err pkey_param_b64(EVP_PKEY *pkey, const char *name, int pad, char **ret)
{
	enum broker_err err = BROKER_ERR_CRYPTO;
	BIGNUM *bn = NULL;
	unsigned char *buf = NULL;
	char *s;
	int len;

	if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1)
		goto out;
	len = pad > 0 ? pad : BN_num_bytes(bn);
	if (len <= 0 || len > RSA_THUMBPRINT_MAX_BYTES || BN_num_bytes(bn) > len) {
		err = BROKER_ERR_INVALID;
		goto out;
	}
	buf = malloc((size_t)len);
	if (!buf) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	if (BN_bn2binpad(bn, buf, len) != len)
		goto out;
	s = b64url_encode(buf, (size_t)len);
	if (!s) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	*ret = s;
	err = BROKER_OK;
out:
	free(buf);
	BN_free(bn);
	return err;
}

static bool pkey_is_p256(EVP_PKEY *pkey)
{
	char group[64];
	size_t len = 0;

	if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
		return false;
	if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &len) != 1)
		return false;
	return strcmp(group, SN_X9_62_prime256v1) == 0;
}

static enum broker_err ec_public_xy(EVP_PKEY *pkey, char **ret_x, char **ret_y)
{
	enum broker_err err;
	char *x = NULL, *y = NULL;

	err = pkey_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, &x);
	if (err == BROKER_OK)
		err = pkey_param_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, &y);
	if (err != BROKER_OK) {
		free(x);
		return err;
	}
	*ret_x = x;
	*ret_y = y;
	return BROKER_OK;
}

/* RFC 7638 §3: the required members only, in lexicographic order, no
 * whitespace. All values are base64url or fixed names, so no JSON escaping
 * can arise and plain formatting gives the canonical text. */
enum broker_err jwk_thumbprint(EVP_PKEY *pkey, char out[44])
{
	enum broker_err err = BROKER_ERR_INVALID;
	char *a = NULL, *b = NULL, *canon = NULL, *s = NULL;
	unsigned char md[SHA256_DIGEST_LENGTH];
	int len;

	if (!pkey)
		return BROKER_ERR_INVALID;
	if (pkey_is_p256(pkey)) {
		err = ec_public_xy(pkey, &a, &b);
		if (err != BROKER_OK)
			goto out;
		len = asprintf(&canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
	} else if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
		err = pkey_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &a);
		if (err == BROKER_OK)
			err = pkey_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &b);
		if (err != BROKER_OK)
			goto out;
		len = asprintf(&canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", a, b);
	} else {
		goto out;
	}
	if (len < 0) {
		canon = NULL;
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	SHA256((const unsigned char *)canon, (size_t)len, md);
	s = b64url_encode(md, sizeof(md));
	if (!s) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	memcpy(out, s, 44); /* 32 bytes -> 43 chars + NUL */
	err = BROKER_OK;
out:
	free(s);
	free(canon);
	free(a);
	free(b);
	return err;
}

/* Full consistency check: a SEC1 file whose public point does not belong to
 * its private scalar would publish a JWK that verifies nothing we sign. */
static bool pkey_consistent(EVP_PKEY *pkey)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	bool ok = ctx && EVP_PKEY_check(ctx) == 1;

	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/* Key files have no lines: the position is 0:0 and the path names the file. */
__attribute__((format(printf, 3, 4))) static void diag_key(struct diag *d, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!d)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	diag_error(d, path, 0, 0, "%s", msg);
}

/* Secrecy as OpenBSD's check_file_secrecy(): a regular file owned by us or by
 * root, with no group/other permission bits. Checked on the file we read:
 * the inode is compared before and after the read, so a file swapped in
 * between is refused rather than trusted. */
static enum broker_err read_key_file(const char *path, struct diag *d, char **ret, size_t *ret_len)
{
	enum broker_err err;
	struct stat before, after;
	char *buf = NULL;
	size_t len = 0;

	if (stat(path, &before) < 0) {
		diag_key(d, path, "cannot read key file: %s", strerror(errno));
		return errno == ENOENT ? BROKER_ERR_NOTFOUND : BROKER_ERR_IO;
	}
	if (!S_ISREG(before.st_mode)) {
		diag_key(d, path, "key file is not a regular file");
		return BROKER_ERR_CONFIG;
	}
	if (before.st_uid != geteuid() && before.st_uid != 0) {
		diag_key(d, path, "key file is owned by uid %u, not by the broker's user (uid %u) or root; chown it",
			 (unsigned)before.st_uid, (unsigned)geteuid());
		return BROKER_ERR_CONFIG;
	}
	if (before.st_mode & 077) {
		diag_key(d, path, "key file is readable by group or others (mode %04o); chmod 600",
			 (unsigned)(before.st_mode & 07777));
		return BROKER_ERR_CONFIG;
	}
	err = broker_read_file(path, KEY_FILE_MAX, &buf, &len);
	if (err != BROKER_OK) {
		diag_key(d, path, "cannot read key file: %s",
			 err == BROKER_ERR_TOOBIG ? "larger than 64 KiB, not a PEM key" : broker_strerror(err));
		return err;
	}
	if (stat(path, &after) < 0 || after.st_ino != before.st_ino || after.st_dev != before.st_dev ||
	    after.st_mode != before.st_mode || after.st_uid != before.st_uid) {
		broker_wipe_free(buf, len);
		diag_key(d, path, "key file changed while it was read");
		return BROKER_ERR_IO;
	}
	*ret = buf;
	*ret_len = len;
	return BROKER_OK;
}

static enum broker_err parse_key(const char *path, const char *pem, size_t len, struct diag *d, EVP_PKEY **ret)
{
	enum broker_err err = BROKER_ERR_CONFIG;
	EVP_PKEY *pkey = NULL;
	BIO *bio;

	if (len > KEY_FILE_MAX)
		return BROKER_ERR_TOOBIG;
	bio = BIO_new_mem_buf(pem, (int)len);
	if (!bio)
		return BROKER_ERR_NOMEM;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, broker_pem_no_passphrase, NULL);
	BIO_free(bio);
	/* The decoder leaves its complaints on this thread's error queue; they
	 * must not surface in an unrelated later OpenSSL call. */
	ERR_clear_error();
	if (!pkey) {
		diag_key(d, path, "not a PEM private key (PKCS#8 or SEC1 EC; encrypted keys are not supported)");
		goto out;
	}
	if (!pkey_is_p256(pkey)) {
		diag_key(d, path, "key is %s, not EC P-256 (ES256); create one with 'cibroker keygen'",
			 EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC ? "EC on another curve" : EVP_PKEY_get0_type_name(pkey));
		goto out;
	}
	if (!pkey_consistent(pkey)) {
		ERR_clear_error();
		diag_key(d, path, "EC key fails its consistency check (public point does not match)");
		goto out;
	}
	*ret = pkey;
	pkey = NULL;
	err = BROKER_OK;
out:
	EVP_PKEY_free(pkey);
	return err;
}

/* The JWKS text is fixed for the lifetime of the key set: rendering it once
 * lets every /.well-known/jwks.json answer be a plain copy. */
static enum broker_err render_jwks(struct broker_signing_keys *ks)
{
	enum broker_err err = BROKER_ERR_NOMEM;
	json_t *root = NULL, *arr;
	char *x = NULL, *y = NULL;

	root = json_object();
	arr = json_array();
	if (!root || !arr || json_object_set_new(root, "keys", arr) < 0)
		goto out;
	for (size_t i = 0; i < ks->n; i++) {
		json_t *jwk;

		err = ec_public_xy(ks->keys[i].pkey, &x, &y);
		if (err != BROKER_OK)
			goto out;
		err = BROKER_ERR_NOMEM;
		jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", x, "y", y, "use",
				"sig", "alg", "ES256", "kid", ks->keys[i].kid);
		free(x);
		free(y);
		x = y = NULL;
		if (!jwk || json_array_append_new(arr, jwk) < 0)
			goto out;
	}
	ks->jwks = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!ks->jwks)
		goto out;
	err = BROKER_OK;
out:
	json_decref(root);
	return err;
}

/* Takes ownership of pkey (freed on failure too). */
static enum broker_err keys_add(struct broker_signing_keys *ks, EVP_PKEY *pkey, const char *path, struct diag *d)
{
	enum broker_err err;
	char kid[44];

	err = jwk_thumbprint(pkey, kid);
	if (err != BROKER_OK)
		goto fail;
	for (size_t i = 0; i < ks->n; i++) {
		if (strcmp(ks->keys[i].kid, kid) == 0) {
			diag_key(d, path ? path : "", "same key as an earlier entry of signing.keys (kid %s)", kid);
			err = BROKER_ERR_CONFIG;
			goto fail;
		}
	}
	ks->keys[ks->n].pkey = pkey;
	memcpy(ks->keys[ks->n].kid, kid, sizeof(kid));
	ks->n++;
	return BROKER_OK;
fail:
	EVP_PKEY_free(pkey);
	return err;
}

static struct broker_signing_keys *keys_new(size_t cap)
{
	struct broker_signing_keys *ks = calloc(1, sizeof(*ks));

	if (!ks)
		return NULL;
	ks->keys = calloc(cap, sizeof(*ks->keys));
	if (!ks->keys) {
		free(ks);
		return NULL;
	}
	return ks;
}

/* Every file is checked so one run reports every bad key; the set is
 * refused as a whole if any failed. */
/* What the checks of key i said, moved to the config line that named it. */
static void report_at(struct diag *d, const struct diag *said, const char *config, const struct diag_pos *where,
		      size_t i)
{
	for (size_t j = 0; d && said && j < diag_count(said); j++)
		diag_error(d, config, where[i].line, where[i].col, "signing.keys[%zu]: %s", i, diag_line(said, j));
}

enum broker_err signing_keys_load(char *const *paths, size_t n, const char *config, const struct diag_pos *where,
				  struct diag *d, struct broker_signing_keys **ret)
{
	enum broker_err err = BROKER_OK, first_err = BROKER_OK;
	struct broker_signing_keys *ks = NULL;

	if (!paths || n == 0 || n > SIGNING_KEYS_MAX) {
		if (d)
			diag_error(d, "signing.keys", 0, 0, "expected between 1 and %d key files, got %zu",
				   SIGNING_KEYS_MAX, n);
		return BROKER_ERR_CONFIG;
	}
	ks = keys_new(n);
	if (!ks)
		return BROKER_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		EVP_PKEY *pkey = NULL;
		char *pem = NULL;
		size_t len = 0;
		struct diag *said = config && where && d ? diag_new() : NULL;
		struct diag *kd = said ? said : d;

		err = read_key_file(paths[i], kd, &pem, &len);
		if (err == BROKER_OK) {
			err = parse_key(paths[i], pem, len, kd, &pkey);
			broker_wipe_free(pem, len + 1);
		}
		if (err == BROKER_OK)
			err = keys_add(ks, pkey, paths[i], kd);
		report_at(d, said, config, where, i);
		diag_free(said);
		if (err == BROKER_ERR_NOMEM)
			goto out;
		if (err != BROKER_OK && first_err == BROKER_OK)
			first_err = err;
	}
	err = first_err != BROKER_OK ? BROKER_ERR_CONFIG : render_jwks(ks);
	if (err != BROKER_OK)
		goto out;
	*ret = ks;
	ks = NULL;
out:
	signing_keys_free(ks);
	return err;
}

enum broker_err signing_keys_generate(struct broker_signing_keys **ret)
{
	enum broker_err err = BROKER_ERR_NOMEM;
	struct broker_signing_keys *ks = keys_new(1);
	EVP_PKEY *pkey;

	if (!ks)
		return BROKER_ERR_NOMEM;
	pkey = EVP_EC_gen(SN_X9_62_prime256v1);
	if (!pkey) {
		err = BROKER_ERR_CRYPTO;
		goto out;
	}
	err = keys_add(ks, pkey, NULL, NULL);
	if (err == BROKER_OK)
		err = render_jwks(ks);
	if (err != BROKER_OK)
		goto out;
	*ret = ks;
	ks = NULL;
out:
	signing_keys_free(ks);
	return err;
}

EVP_PKEY *signing_keys_active(const struct broker_signing_keys *ks)
{
	return ks && ks->n ? ks->keys[0].pkey : NULL;
}

const char *signing_keys_active_kid(const struct broker_signing_keys *ks)
{
	return ks && ks->n ? ks->keys[0].kid : NULL;
}

const char *signing_keys_jwks(const struct broker_signing_keys *ks)
{
	return ks ? ks->jwks : NULL;
}

size_t signing_keys_count(const struct broker_signing_keys *ks)
{
	return ks ? ks->n : 0;
}

const char *signing_keys_kid(const struct broker_signing_keys *ks, size_t i)
{
	return ks && i < ks->n ? ks->keys[i].kid : NULL;
}

/* O_EXCL so an existing key (perhaps the one in production) is never
 * overwritten; O_NOFOLLOW so a planted symlink cannot redirect the write.
 * The PEM goes straight to the descriptor, never through a buffer of ours. */
enum broker_err signing_key_generate_file(const char *path, char ret_kid[44])
{
	enum broker_err err = BROKER_ERR_CRYPTO;
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	char kid[44];
	int fd = -1, saved_errno = 0;
	bool created = false;

	if (!path || !*path)
		return BROKER_ERR_INVALID;
	pkey = EVP_EC_gen(SN_X9_62_prime256v1);
	if (!pkey || jwk_thumbprint(pkey, kid) != BROKER_OK)
		goto out;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		saved_errno = errno;
		err = BROKER_ERR_IO;
		goto out;
	}
	created = true;
	/* A umask cannot loosen 0600, but a default ACL on the directory can. */
	if (fchmod(fd, 0600) < 0) {
		saved_errno = errno;
		err = BROKER_ERR_IO;
		goto out;
	}
	bio = BIO_new_fd(fd, BIO_NOCLOSE);
	if (!bio)
		goto out;
	if (PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 || BIO_flush(bio) != 1) {
		saved_errno = errno;
		err = BROKER_ERR_IO;
		goto out;
	}
	if (fsync(fd) < 0) {
		saved_errno = errno;
		err = BROKER_ERR_IO;
		goto out;
	}
	BIO_free(bio);
	bio = NULL;
	if (close(fd) < 0) {
		fd = -1;
		saved_errno = errno;
		err = BROKER_ERR_IO;
		goto out;
	}
	fd = -1;
	memcpy(ret_kid, kid, sizeof(kid));
	err = BROKER_OK;
out:
	BIO_free(bio);
	if (fd >= 0)
		close(fd);
	if (err != BROKER_OK && created)
		unlink(path);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	if (saved_errno)
		errno = saved_errno;
	return err;
}
