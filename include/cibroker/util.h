/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cibroker/err.h"

#define BROKER_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Secrets: wipe before free, through this one helper. NULL is a no-op. */
void broker_wipe_free(void *p, size_t len);
void broker_secret_free(char *s); /* NUL-terminated: wipes strlen(s) bytes */
/* Constant-time equality of two buffers of the same length. */
bool broker_ct_equal(const void *a, const void *b, size_t len);

/* Strict RFC 4648 §5 base64url: only [A-Za-z0-9_-], no padding, no whitespace,
 * and the unused trailing bits must be zero (so every input has one decoding).
 * *ret is NUL-terminated for convenience; free with free(). */
enum broker_err b64url_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len);
/* Unpadded base64url; returns malloc'd NUL-terminated string or NULL. */
char *b64url_encode(const void *in, size_t len);
/* Characters b64url_encode_into writes for len bytes (without the NUL). */
#define B64URL_ENCODED_LEN(len) ((len) / 3 * 4 + ((len) % 3 ? (len) % 3 + 1 : 0))
/* Unpadded base64url into out (B64URL_ENCODED_LEN(len) + 1 bytes), NUL-
 * terminated; returns the length. For hot paths that own their buffer. */
size_t b64url_encode_into(const void *in, size_t len, char *out);

/* SHA-256 of a buffer as 64 lowercase hex chars + NUL. */
void broker_sha256_hex(const void *in, size_t len, char out[65]);
/* SHA-256 with the digest fetched from OpenSSL's provider once per process,
 * not by name on every call as SHA256() does in OpenSSL 3. */
void broker_sha256(const void *in, size_t len, unsigned char out[32]);
/* n random bytes from the OS CSPRNG (OpenSSL RAND_bytes). */
enum broker_err broker_random(void *out, size_t n);
/* 128 random bits as 22 base64url chars + NUL (jti, request_id). */
enum broker_err broker_random_id(char out[23]);

/* "90", "90s", "5m", "1h", "2d" -> seconds. Rejects negatives, junk, overflow. */
enum broker_err broker_parse_duration(const char *s, int64_t *ret);
/* "16384", "16KiB", "1MiB", "16K", "1M", "1G", "1GiB" -> bytes. */
enum broker_err broker_parse_size(const char *s, size_t *ret);

/* A listen address: "IPV4:PORT", "[IPV6]:PORT" or "localhost:PORT" (127.0.0.1),
 * addresses in numeric form only, port 0-65535. ss may be NULL (check only).
 * BROKER_ERR_INVALID with *why saying what is wrong. */
struct sockaddr_storage;
enum broker_err broker_parse_listen(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
				    const char **why);

/* OpenSSL pem_password_cb that refuses encrypted PEM: the default would ask
 * for a passphrase on the terminal, and a reload would wait for it with
 * signals unheard. */
int broker_pem_no_passphrase(char *buf, int size, int rwflag, void *u);

/* Wall clock in seconds / microseconds since the epoch. */
int64_t broker_now(void);
int64_t broker_now_us(void);
/* Monotonic clock in microseconds. */
int64_t broker_mono_us(void);
/* CPUs this process may run on (its affinity mask: taskset, a container's
 * cpuset), not every CPU online on the host; 1 to 1024. */
unsigned broker_usable_cpus(void);
/* "2026-11-22T01:24:06Z" (out >= 21) and "2026-11-22T01:19:06.123Z" (out >= 25). */
void broker_fmt_time(int64_t epoch_s, char *out, size_t outlen);
void broker_fmt_time_ms(int64_t epoch_us, char *out, size_t outlen);

/* JSON parse that rejects duplicate keys, trailing bytes, embedded NULs and
 * nesting deeper than max_depth. Returns NULL on any error. */
json_t *broker_json_parse(const void *buf, size_t len, size_t max_depth);
/* Nesting depth of a JSON value (scalar = 0). */
size_t broker_json_depth(const json_t *v);

/* Read a whole file, at most max bytes (BROKER_ERR_TOOBIG beyond). NUL-terminated. */
enum broker_err broker_read_file(const char *path, size_t max, char **ret, size_t *ret_len);

/* A growable byte buffer for bodies that may hold secrets: growing it wipes
 * the old block, data stays NUL-terminated, and it never grows past max. */
struct broker_buf {
	char *data;
	size_t len, cap;
	size_t max;   /* hard limit on len; 0 = no limit */
	bool toobig;  /* an append was refused for max */
	bool oom;     /* an append failed for memory */
};
/* BROKER_ERR_TOOBIG past limit (or b->max when limit is 0), BROKER_ERR_NOMEM. */
enum broker_err broker_buf_append(struct broker_buf *b, const void *p, size_t n, size_t limit);
/* libcurl CURLOPT_WRITEFUNCTION-shaped sink into a struct broker_buf (b->max applies). */
size_t broker_buf_write(char *p, size_t size, size_t nmemb, void *b);
/* Wipes and frees the contents; the buffer is empty (max kept) afterwards. */
void broker_buf_wipe(struct broker_buf *b);

/* Compact JSON text written straight into a struct broker_buf, byte for byte
 * what jansson's json_dumps(v, JSON_COMPACT) writes: members in insertion
 * order, UTF-8 kept as is, '"' and '\\' escaped, control characters as \b \f
 * \n \r \t or \u00XX (upper-case hex), '/' not escaped, integers in
 * decimal, reals as "%.17g" with ".0" added when it would read as an integer.
 * Skips building a json_t only to dump and free it (docs/benchmarks.md).
 * The first error sticks, later calls do nothing: BROKER_ERR_INVALID for a
 * string that is not valid UTF-8 (json_string() refuses those too) or a value
 * nested deeper than BROKER_JSON_WRITE_MAX_DEPTH, BROKER_ERR_TOOBIG past
 * buf.max, BROKER_ERR_NOMEM. The buffer may hold secrets: broker_buf_wipe it. */
#define BROKER_JSON_WRITE_MAX_DEPTH 2048
/* Value of one hex digit (either case), or -1. */
int broker_hex_value(unsigned char c);

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it is
 * not one: jansson's rules (no overlongs, no surrogates, nothing above U+10FFFF). */
size_t broker_utf8_seq_len(const unsigned char *s, size_t n);

struct broker_json_writer {
	struct broker_buf buf;
	enum broker_err err;
};
/* Text already in JSON form (punctuation, constant keys). */
void broker_jw_raw(struct broker_json_writer *w, const char *text);
/* A JSON string; NULL writes null. */
void broker_jw_string(struct broker_json_writer *w, const char *s);
void broker_jw_stringn(struct broker_json_writer *w, const char *s, size_t len);
void broker_jw_int(struct broker_json_writer *w, int64_t v);
/* Any json_t as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) would; NULL writes null. */
void broker_jw_value(struct broker_json_writer *w, const json_t *v);

/* Host part of an http(s) URL is loopback (127.0.0.0/8, ::1, localhost). */
bool broker_url_is_loopback(const char *url);
/* URL is https://, or http:// to a loopback host, and has no space or
 * control character. */
bool broker_url_allowed(const char *url);
