/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

void broker_wipe_free(void *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

void broker_secret_free(char *s)
{
	if (s)
		broker_wipe_free(s, strlen(s));
}

bool broker_ct_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* Value of a base64url character, -1 for anything else (a table: this runs
 * over every byte of every token). */
static const signed char b64url_values[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int b64url_value(unsigned char c)
{
	return b64url_values[c];
}

/* Strict and direct: every character must be in the url alphabet, the
 * length must not leave a lone character, and the unused low bits of the last
 * character must be zero, so each value has exactly one text. (This used to
 * re-pad a copy for OpenSSL's lenient decoder; decoding in place is the same
 * result without the copy, and runs on every token.) */
enum broker_err b64url_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len)
{
	size_t rem = len % 4, out_len, o = 0, i = 0;
	unsigned char *out;
	int v[4];

	if (rem == 1 || len > SIZE_MAX / 2)
		return BROKER_ERR_INVALID;
	for (size_t k = 0; k < len; k++)
		if (b64url_value((unsigned char)in[k]) < 0)
			return BROKER_ERR_INVALID;
	/* Unused low bits of the last character must be zero: one text, one value. */
	if (rem == 2 && (b64url_value((unsigned char)in[len - 1]) & 0x0f))
		return BROKER_ERR_INVALID;
	if (rem == 3 && (b64url_value((unsigned char)in[len - 1]) & 0x03))
		return BROKER_ERR_INVALID;
	out_len = len / 4 * 3 + (rem ? rem - 1 : 0);
	out = malloc(out_len + 1);
	if (!out)
		return BROKER_ERR_NOMEM;
	for (; i + 4 <= len; i += 4) {
		for (int k = 0; k < 4; k++)
			v[k] = b64url_value((unsigned char)in[i + k]);
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		out[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	if (rem >= 2) {
		v[0] = b64url_value((unsigned char)in[i]);
		v[1] = b64url_value((unsigned char)in[i + 1]);
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (rem == 3) {
			v[2] = b64url_value((unsigned char)in[i + 2]);
			out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		}
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = out_len;
	return BROKER_OK;
}

size_t b64url_encode_into(const void *in, size_t len, char *out)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = in;
	size_t o = 0, i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		out[o++] = alphabet[v >> 18];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
		out[o++] = alphabet[v & 63];
	}
	if (len - i == 1) {
		out[o++] = alphabet[p[i] >> 2];
		out[o++] = alphabet[(p[i] & 3) << 4];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 8 | p[i + 1];

		out[o++] = alphabet[v >> 10];
		out[o++] = alphabet[(v >> 4) & 63];
		out[o++] = alphabet[(v & 15) << 2];
	}
	out[o] = '\0';
	return o;
}

char *b64url_encode(const void *in, size_t len)
{
	char *out;

	if (len > INT_MAX / 2)
		return NULL;
	out = malloc(B64URL_ENCODED_LEN(len) + 1);
	if (out)
		b64url_encode_into(in, len, out);
	return out;
}

void broker_sha256_hex(const void *in, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(in, len, md);
	for (size_t i = 0; i < sizeof(md); i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0xf];
	}
	out[64] = '\0';
}

enum broker_err broker_random(void *out, size_t n)
{
	if (n > INT_MAX || RAND_bytes(out, (int)n) != 1)
		return BROKER_ERR_CRYPTO;
	return BROKER_OK;
}

enum broker_err broker_random_id(char out[23])
{
	unsigned char raw[16];
	char *s;

	if (broker_random(raw, sizeof(raw)) != BROKER_OK)
		return BROKER_ERR_CRYPTO;
	s = b64url_encode(raw, sizeof(raw));
	if (!s)
		return BROKER_ERR_NOMEM;
	memcpy(out, s, 23);
	free(s);
	return BROKER_OK;
}

static enum broker_err parse_scaled(const char *s, const char *const *units, const uint64_t *mult, size_t n_units,
				    uint64_t max, uint64_t *ret)
{
	uint64_t v = 0, m = 1;
	const char *p = s;
	bool found = n_units == 0;

	if (!s || *s < '0' || *s > '9')
		return BROKER_ERR_INVALID;
	while (*p >= '0' && *p <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return BROKER_ERR_INVALID;
		v = v * 10 + (uint64_t)(*p - '0');
		p++;
	}
	if (*p == '\0') {
		m = 1;
		found = true;
	} else {
		for (size_t i = 0; i < n_units; i++) {
			if (strcmp(p, units[i]) == 0) {
				m = mult[i];
				found = true;
				break;
			}
			found = false;
		}
	}
	if (!found)
		return BROKER_ERR_INVALID;
	if (m && v > max / m)
		return BROKER_ERR_INVALID;
	*ret = v * m;
	return BROKER_OK;
}

enum broker_err broker_parse_duration(const char *s, int64_t *ret)
{
	static const char *const units[] = {"s", "m", "h", "d"};
	static const uint64_t mult[] = {1, 60, 3600, 86400};
	uint64_t v;
	enum broker_err err = parse_scaled(s, units, mult, BROKER_ARRAY_SIZE(units), INT32_MAX, &v);

	if (err == BROKER_OK)
		*ret = (int64_t)v;
	return err;
}

enum broker_err broker_parse_size(const char *s, size_t *ret)
{
	static const char *const units[] = {"B", "K", "KiB", "KB", "M", "MiB", "MB", "G", "GiB", "GB"};
	static const uint64_t mult[] = {1, 1024, 1024, 1024, 1 << 20, 1 << 20, 1 << 20, 1 << 30, 1 << 30, 1 << 30};
	uint64_t v;
	enum broker_err err = parse_scaled(s, units, mult, BROKER_ARRAY_SIZE(units), (uint64_t)1 << 40, &v);

	if (err == BROKER_OK)
		*ret = (size_t)v;
	return err;
}

int64_t broker_now(void)
{
	return (int64_t)time(NULL);
}

int64_t broker_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t broker_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void broker_fmt_time(int64_t epoch_s, char *out, size_t outlen)
{
	time_t t = (time_t)epoch_s;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void broker_fmt_time_ms(int64_t epoch_us, char *out, size_t outlen)
{
	time_t t = (time_t)(epoch_us / 1000000);
	struct tm tm;
	char base[32];

	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%03dZ", base, (int)((epoch_us / 1000) % 1000));
}

size_t broker_json_depth(const json_t *v)
{
	size_t max = 0, d;

	if (json_is_object(v)) {
		const char *k;
		json_t *c;

		json_object_foreach((json_t *)v, k, c) {
			d = broker_json_depth(c);
			if (d > max)
				max = d;
		}
		return max + 1;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *c;

		json_array_foreach(v, i, c) {
			d = broker_json_depth(c);
			if (d > max)
				max = d;
		}
		return max + 1;
	}
	return 0;
}

/* Bracket depth by a scan that skips strings, so hostile nesting is refused
 * before jansson recurses into it. */
static bool json_depth_ok(const char *buf, size_t len, size_t max_depth)
{
	size_t depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = buf[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '{' || c == '[') {
			if (++depth > max_depth)
				return false;
		} else if ((c == '}' || c == ']') && depth > 0)
			depth--;
	}
	return true;
}

json_t *broker_json_parse(const void *buf, size_t len, size_t max_depth)
{
	json_error_t jerr;

	if (memchr(buf, '\0', len))
		return NULL;
	if (!json_depth_ok(buf, len, max_depth))
		return NULL;
	/* JSON_REJECT_DUPLICATES: a second "iss" must not silently win.
	 * Without JSON_DISABLE_EOF_CHECK trailing bytes are an error. */
	return json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
}

enum broker_err broker_read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
	enum broker_err err = BROKER_ERR_IO;
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return errno == ENOENT ? BROKER_ERR_NOTFOUND : BROKER_ERR_IO;
	if (fstat(fd, &st) < 0)
		goto out;
	if (S_ISDIR(st.st_mode))
		goto out;
	if ((uint64_t)st.st_size > max) {
		err = BROKER_ERR_TOOBIG;
		goto out;
	}
	buf = malloc(max < 65536 ? max + 1 : (size_t)st.st_size + 4097);
	if (!buf) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		size_t cap = max < 65536 ? max + 1 : (size_t)st.st_size + 4097;
		ssize_t n;

		if (len == cap) {
			err = BROKER_ERR_TOOBIG;
			goto out;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			err = BROKER_ERR_TOOBIG;
			goto out;
		}
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	buf = NULL;
	err = BROKER_OK;
out:
	free(buf);
	close(fd);
	return err;
}

bool broker_url_is_loopback(const char *url)
{
	const char *p, *end;
	char host[256];
	size_t n;
	struct in_addr a4;

	if (strncmp(url, "http://", 7) == 0)
		p = url + 7;
	else if (strncmp(url, "https://", 8) == 0)
		p = url + 8;
	else
		return false;
	if (strpbrk(p, "@") && strpbrk(p, "@") < p + strcspn(p, "/?#"))
		return false; /* userinfo: refuse rather than guess */
	if (*p == '[') {
		end = strchr(p, ']');
		if (!end)
			return false;
		n = (size_t)(end - p - 1);
		if (n >= sizeof(host))
			return false;
		memcpy(host, p + 1, n);
		host[n] = '\0';
		return strcmp(host, "::1") == 0;
	}
	n = strcspn(p, ":/?#");
	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, p, n);
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return false;
}

bool broker_url_allowed(const char *url)
{
	if (strncmp(url, "https://", 8) == 0)
		return url[8] != '\0';
	return strncmp(url, "http://", 7) == 0 && broker_url_is_loopback(url);
}

enum broker_err broker_buf_append(struct broker_buf *b, const void *p, size_t n, size_t limit)
{
	size_t max = limit ? limit : b->max ? b->max : SIZE_MAX - 1;
	size_t cap;
	char *nb;

	if (n > max || b->len > max - n) {
		b->toobig = true;
		return BROKER_ERR_TOOBIG;
	}
	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n + 1)
			cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
		nb = malloc(cap);
		if (!nb) {
			b->oom = true;
			return BROKER_ERR_NOMEM;
		}
		if (b->data) {
			memcpy(nb, b->data, b->len);
			broker_wipe_free(b->data, b->cap);
		}
		b->data = nb;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return BROKER_OK;
}

size_t broker_buf_write(char *p, size_t size, size_t nmemb, void *b)
{
	/* Returning less than asked makes libcurl abort the transfer: the cap
	 * holds against a hostile or broken server. */
	if (nmemb && size > SIZE_MAX / nmemb)
		return 0;
	return broker_buf_append(b, p, size * nmemb, 0) == BROKER_OK ? size * nmemb : 0;
}

void broker_buf_wipe(struct broker_buf *b)
{
	size_t max = b->max;

	broker_wipe_free(b->data, b->cap);
	memset(b, 0, sizeof(*b));
	b->max = max;
}

/* ---- JSON writer ---- */

static void jw_put(struct broker_json_writer *w, const void *p, size_t n)
{
	enum broker_err err;

	if (w->err != BROKER_OK || n == 0)
		return;
	err = broker_buf_append(&w->buf, p, n, 0);
	if (err != BROKER_OK)
		w->err = err;
}

void broker_jw_raw(struct broker_json_writer *w, const char *text)
{
	jw_put(w, text, strlen(text));
}

/* Length of the valid UTF-8 sequence at s, or 0: jansson's rules (no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	uint32_t cp;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

void broker_jw_stringn(struct broker_json_writer *w, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)s, *end, *run;

	if (w->err != BROKER_OK)
		return;
	if (!s) {
		jw_put(w, "null", 4);
		return;
	}
	end = p + len;
	jw_put(w, "\"", 1);
	for (run = p; p < end;) {
		unsigned char c = *p;
		char esc[6] = {'\\', 0, '0', '0', 0, 0};
		size_t esc_len = 2;

		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
			p++;
			continue;
		}
		if (c >= 0x80) {
			size_t l = utf8_seq_len(p, (size_t)(end - p));

			if (!l) {
				w->err = BROKER_ERR_INVALID;
				return;
			}
			p += l;
			continue;
		}
		jw_put(w, run, (size_t)(p - run));
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[1] = 'u';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			esc_len = 6;
		}
		jw_put(w, esc, esc_len);
		run = ++p;
	}
	jw_put(w, run, (size_t)(p - run));
	jw_put(w, "\"", 1);
}

void broker_jw_string(struct broker_json_writer *w, const char *s)
{
	broker_jw_stringn(w, s, s ? strlen(s) : 0);
}

void broker_jw_int(struct broker_json_writer *w, int64_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	jw_put(w, p, (size_t)(buf + sizeof(buf) - p));
}

/* jansson's jsonp_dtostr with its default precision: "%.17g", ".0" when the
 * text has neither '.' nor 'e', then no '+' and no leading zeros in the
 * exponent. The C locale is assumed (the broker never calls setlocale). */
static void jw_real(struct broker_json_writer *w, double v)
{
	char buf[64], *e, *digits, *nz;
	int n = snprintf(buf, sizeof(buf), "%.17g", v);
	size_t len;

	if (n < 0 || (size_t)n >= sizeof(buf) - 3) {
		w->err = BROKER_ERR_INVALID;
		return;
	}
	len = (size_t)n;
	if (!strchr(buf, '.') && !strchr(buf, 'e')) {
		memcpy(buf + len, ".0", 3);
		len += 2;
	}
	e = strchr(buf, 'e');
	if (e) {
		digits = e + 1;
		nz = digits + 1;
		if (*digits == '-')
			digits++;
		while (*nz == '0')
			nz++;
		if (nz != digits) {
			memmove(digits, nz, len - (size_t)(nz - buf) + 1);
			len -= (size_t)(nz - digits);
		}
	}
	jw_put(w, buf, len);
}

static void jw_value(struct broker_json_writer *w, const json_t *v, size_t depth)
{
	const char *key;
	size_t key_len, i;
	json_t *c;
	bool first = true;

	if (w->err != BROKER_OK)
		return;
	if (depth > BROKER_JSON_WRITE_MAX_DEPTH) {
		w->err = BROKER_ERR_INVALID;
		return;
	}
	switch (v ? json_typeof(v) : JSON_NULL) {
	case JSON_OBJECT:
		jw_put(w, "{", 1);
		json_object_keylen_foreach((json_t *)v, key, key_len, c) {
			if (!first)
				jw_put(w, ",", 1);
			first = false;
			broker_jw_stringn(w, key, key_len);
			jw_put(w, ":", 1);
			jw_value(w, c, depth + 1);
		}
		jw_put(w, "}", 1);
		break;
	case JSON_ARRAY:
		jw_put(w, "[", 1);
		json_array_foreach(v, i, c) {
			if (i)
				jw_put(w, ",", 1);
			jw_value(w, c, depth + 1);
		}
		jw_put(w, "]", 1);
		break;
	case JSON_STRING:
		broker_jw_stringn(w, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		broker_jw_int(w, (int64_t)json_integer_value(v));
		break;
	case JSON_REAL:
		jw_real(w, json_real_value(v));
		break;
	case JSON_TRUE:
		jw_put(w, "true", 4);
		break;
	case JSON_FALSE:
		jw_put(w, "false", 5);
		break;
	case JSON_NULL:
		jw_put(w, "null", 4);
		break;
	}
}

void broker_jw_value(struct broker_json_writer *w, const json_t *v)
{
	jw_value(w, v, 0);
}

/* ---- JSON reader ---- */

/* A direct reader with jansson's grammar (the one json_loadb applies with
 * JSON_REJECT_DUPLICATES | JSON_DECODE_ANY) that builds the same json_t
 * values. jansson reads through a byte-stream callback, copies every token
 * into a buffer and decodes it again; for a token's claim set that was 13 %
 * of an exchange (docs/benchmarks.md). */
struct json_reader {
	const unsigned char *p, *end;
	size_t depth, max_depth;  /* containers, as json_depth_ok counts them */
	size_t values;            /* nesting of values, as jansson counts it */
	char *scratch;        /* decoded string; grows, wiped on free */
	size_t scratch_cap;
};

static bool jr_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void jr_skip_ws(struct json_reader *r)
{
	while (r->p < r->end && jr_ws(*r->p))
		r->p++;
}

static int jr_hex4(const unsigned char *p)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		int c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static size_t jr_utf8_put(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string token (r->p at the opening quote) decoded into r->scratch.
 * Refused as jansson refuses: raw control characters, bad UTF-8, unknown
 * escapes, short or non-hex \u, lone or mismatched surrogates, and (for
 * keys and values alike here) a decoded NUL. */
static bool jr_string(struct json_reader *r, const char **ret, size_t *ret_len)
{
	const unsigned char *p = r->p + 1, *start;
	size_t o = 0;

	/* Decoded text is never longer than the source text. */
	for (start = p; p < r->end && *p != '"'; p++)
		if (*p == '\\' && p + 1 < r->end)
			p++;
	if (p >= r->end)
		return false;
	if ((size_t)(p - start) + 1 > r->scratch_cap) {
		size_t cap = (size_t)(p - start) + 1;
		char *n = malloc(cap < 256 ? 256 : cap);

		if (!n)
			return false;
		if (r->scratch)
			broker_wipe_free(r->scratch, r->scratch_cap);
		r->scratch = n;
		r->scratch_cap = cap < 256 ? 256 : cap;
	}
	for (p = start; *p != '"';) {
		unsigned char c = *p;

		if (c >= 0x20 && c < 0x80 && c != '\\') {
			r->scratch[o++] = (char)c;
			p++;
		} else if (c >= 0x80) {
			size_t l = utf8_seq_len(p, (size_t)(r->end - p));

			if (!l)
				return false;
			memcpy(r->scratch + o, p, l);
			o += l;
			p += l;
		} else if (c < 0x20) {
			return false;
		} else {
			int v;

			p++; /* the backslash; the scan above saw a character after it */
			switch (*p) {
			case '"': r->scratch[o++] = '"'; p++; continue;
			case '\\': r->scratch[o++] = '\\'; p++; continue;
			case '/': r->scratch[o++] = '/'; p++; continue;
			case 'b': r->scratch[o++] = '\b'; p++; continue;
			case 'f': r->scratch[o++] = '\f'; p++; continue;
			case 'n': r->scratch[o++] = '\n'; p++; continue;
			case 'r': r->scratch[o++] = '\r'; p++; continue;
			case 't': r->scratch[o++] = '\t'; p++; continue;
			case 'u': break;
			default: return false;
			}
			if (r->end - p < 5 || (v = jr_hex4(p + 1)) < 0)
				return false;
			p += 5;
			if (v >= 0xd800 && v <= 0xdbff) {
				int lo;

				if (r->end - p < 6 || p[0] != '\\' || p[1] != 'u' || (lo = jr_hex4(p + 2)) < 0 ||
				    lo < 0xdc00 || lo > 0xdfff)
					return false;
				p += 6;
				v = ((v - 0xd800) << 10) + (lo - 0xdc00) + 0x10000;
			} else if (v >= 0xdc00 && v <= 0xdfff) {
				return false;
			}
			if (v == 0)
				return false; /* no JSON_ALLOW_NUL; NUL in keys is refused too */
			o += jr_utf8_put((uint32_t)v, r->scratch + o);
		}
	}
	r->scratch[o] = '\0';
	r->p = p + 1;
	*ret = r->scratch;
	*ret_len = o;
	return true;
}

/* Number grammar of RFC 8259 (no leading zeros, digits after '.' and 'e');
 * integers without '.'/'e' must fit int64 (jansson: strtoll and ERANGE),
 * reals must not overflow (strtod and ERANGE; underflow is accepted). */
static json_t *jr_number(struct json_reader *r)
{
	const unsigned char *p = r->p, *start = p;
	bool neg = false, is_real = false;
	uint64_t v = 0, limit;
	char buf[64], *text, *endp;
	size_t len;
	double d;
	json_t *out;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (p >= r->end)
		return NULL;
	if (*p == '0') {
		p++;
		if (p < r->end && *p >= '0' && *p <= '9')
			return NULL;
	} else if (*p >= '1' && *p <= '9') {
		while (p < r->end && *p >= '0' && *p <= '9')
			p++;
	} else {
		return NULL;
	}
	if (p < r->end && *p == '.') {
		is_real = true;
		p++;
		if (p >= r->end || *p < '0' || *p > '9')
			return NULL;
		while (p < r->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < r->end && (*p == 'e' || *p == 'E')) {
		is_real = true;
		p++;
		if (p < r->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= r->end || *p < '0' || *p > '9')
			return NULL;
		while (p < r->end && *p >= '0' && *p <= '9')
			p++;
	}
	r->p = p;
	if (!is_real) {
		limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
		for (const unsigned char *q = start + neg; q < p; q++) {
			unsigned digit = (unsigned)(*q - '0');

			if (v > (limit - digit) / 10)
				return NULL; /* jansson: "too big integer" */
			v = v * 10 + digit;
		}
		return json_integer(neg ? (json_int_t)(0 - v) : (json_int_t)v);
	}
	len = (size_t)(p - start);
	text = len < sizeof(buf) ? buf : malloc(len + 1);
	if (!text)
		return NULL;
	memcpy(text, start, len);
	text[len] = '\0';
	errno = 0;
	d = strtod(text, &endp);
	out = (d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE ? NULL : json_real(d);
	if (text != buf)
		free(text);
	return out;
}

static json_t *jr_value(struct json_reader *r);

static json_t *jr_object(struct json_reader *r)
{
	json_t *o = json_object(), *v;
	const char *key;
	size_t key_len;

	if (!o)
		return NULL;
	r->p++;
	jr_skip_ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return o;
	}
	for (;;) {
		char short_key[128], *k;
		int rc;

		if (r->p >= r->end || *r->p != '"' || !jr_string(r, &key, &key_len))
			goto fail;
		/* A second "iss" must not silently win. */
		if (json_object_getn(o, key, key_len))
			goto fail;
		/* The value's strings reuse the scratch buffer: keep the key. */
		k = key_len < sizeof(short_key) ? short_key : malloc(key_len + 1);
		if (!k)
			goto fail;
		memcpy(k, key, key_len + 1);
		jr_skip_ws(r);
		rc = -1;
		if (r->p < r->end && *r->p == ':') {
			r->p++;
			v = jr_value(r);
			/* Takes the value's reference, also when it fails. */
			rc = v ? json_object_setn_new_nocheck(o, k, key_len, v) : -1;
		}
		if (k != short_key)
			free(k);
		if (rc != 0)
			goto fail;
		jr_skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			jr_skip_ws(r);
			continue;
		}
		if (r->p < r->end && *r->p == '}') {
			r->p++;
			return o;
		}
		goto fail;
	}
fail:
	json_decref(o);
	return NULL;
}

static json_t *jr_array(struct json_reader *r)
{
	json_t *a = json_array(), *v;

	if (!a)
		return NULL;
	r->p++;
	jr_skip_ws(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return a;
	}
	for (;;) {
		v = jr_value(r);
		if (!v || json_array_append_new(a, v) != 0)
			goto fail;
		jr_skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == ']') {
			r->p++;
			return a;
		}
		goto fail;
	}
fail:
	json_decref(a);
	return NULL;
}

static bool jr_literal(struct json_reader *r, const char *word, size_t len)
{
	if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0)
		return false;
	r->p += len;
	return true;
}

static json_t *jr_value(struct json_reader *r)
{
	const char *s;
	size_t len;
	json_t *v = NULL;

	jr_skip_ws(r);
	if (r->p >= r->end || ++r->values > JSON_PARSER_MAX_DEPTH)
		return NULL;
	switch (*r->p) {
	case '{':
	case '[':
		if (++r->depth > r->max_depth)
			return NULL;
		v = *r->p == '{' ? jr_object(r) : jr_array(r);
		r->depth--;
		break;
	case '"':
		v = jr_string(r, &s, &len) ? json_stringn_nocheck(s, len) : NULL;
		break;
	case 't':
		v = jr_literal(r, "true", 4) ? json_true() : NULL;
		break;
	case 'f':
		v = jr_literal(r, "false", 5) ? json_false() : NULL;
		break;
	case 'n':
		v = jr_literal(r, "null", 4) ? json_null() : NULL;
		break;
	default:
		v = jr_number(r);
	}
	r->values--;
	return v;
}

json_t *broker_json_parse_fast(const void *buf, size_t len, size_t max_depth)
{
	struct json_reader r = {.p = buf, .end = (const unsigned char *)buf + len, .max_depth = max_depth};
	json_t *v;

	if (!buf)
		return NULL;
	v = jr_value(&r);
	if (v) {
		/* Anything but whitespace after the value is an error. A
		 * literal or number running into letters or digits ("truex",
		 * "1x") ends up here too, as in jansson. */
		jr_skip_ws(&r);
		if (r.p != r.end) {
			json_decref(v);
			v = NULL;
		}
	}
	if (r.scratch)
		broker_wipe_free(r.scratch, r.scratch_cap);
	return v;
}
