/* SPDX-License-Identifier: Apache-2.0 */
#include "cibroker/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
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

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* The alphabet and the canonical-tail checks are ours (OpenSSL's decoder is
 * lenient about whitespace and knows only the standard alphabet); the
 * decoding itself is OpenSSL's, on the translated, re-padded text. */
enum broker_err b64url_decode(const char *in, size_t len, unsigned char **ret, size_t *ret_len)
{
	enum broker_err err = BROKER_ERR_INVALID;
	char *std = NULL;
	unsigned char *out = NULL;
	size_t rem = len % 4, padded, out_len;
	int n;

	if (rem == 1 || len > SIZE_MAX / 2)
		return BROKER_ERR_INVALID;
	for (size_t i = 0; i < len; i++)
		if (b64url_value((unsigned char)in[i]) < 0)
			return BROKER_ERR_INVALID;
	/* Unused low bits of the last character must be zero: one text, one value. */
	if (rem == 2 && (b64url_value((unsigned char)in[len - 1]) & 0x0f))
		return BROKER_ERR_INVALID;
	if (rem == 3 && (b64url_value((unsigned char)in[len - 1]) & 0x03))
		return BROKER_ERR_INVALID;

	padded = len + (rem ? 4 - rem : 0);
	std = malloc(padded + 1);
	out = malloc(padded / 4 * 3 + 1);
	if (!std || !out) {
		err = BROKER_ERR_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		std[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	for (size_t i = len; i < padded; i++)
		std[i] = '=';
	std[padded] = '\0';
	if (padded > INT_MAX)
		goto out;
	n = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
	if (n < 0)
		goto out;
	out_len = (size_t)n - (rem == 2 ? 2 : rem == 3 ? 1 : 0);
	out[out_len] = '\0';
	*ret = out;
	*ret_len = out_len;
	out = NULL;
	err = BROKER_OK;
out:
	if (std)
		broker_wipe_free(std, padded + 1);
	if (out)
		broker_wipe_free(out, padded / 4 * 3 + 1);
	return err;
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

static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void broker_sha256(const void *in, size_t len, unsigned char out[32])
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, sha256_fetch);
	/* Only out of memory fails here; SHA256() is the fallback then, and
	 * if the fetch failed. */
	if (!sha256_md || EVP_Digest(in, len, out, NULL, sha256_md, NULL) != 1)
		SHA256(in, len, out);
}

void broker_sha256_hex(const void *in, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];

	broker_sha256(in, len, md);
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

enum broker_err broker_parse_listen(const char *listen, struct sockaddr_storage *ss, unsigned *sslen,
				    const char **why)
{
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	const char *port, *end;
	char host[INET6_ADDRSTRLEN];
	size_t n;
	long p;
	char *pend;
	bool bracket = listen[0] == '[';

	*why = "must be HOST:PORT or [IPV6]:PORT";
	if (bracket) {
		end = strchr(listen, ']');
		if (!end || end[1] != ':')
			return BROKER_ERR_INVALID;
		n = (size_t)(end - listen - 1);
		port = end + 2;
		listen++;
	} else {
		end = strchr(listen, ':');
		if (!end || strchr(end + 1, ':'))
			return BROKER_ERR_INVALID; /* a bare IPv6 address needs brackets */
		n = (size_t)(end - listen);
		port = end + 1;
	}
	if (n == 0 || n >= sizeof(host))
		return BROKER_ERR_INVALID;
	memcpy(host, listen, n);
	host[n] = '\0';
	if (!*port || !(*port >= '0' && *port <= '9'))
		return BROKER_ERR_INVALID;
	errno = 0;
	p = strtol(port, &pend, 10);
	if (errno || *pend || p < 0 || p > 65535) {
		*why = "port must be 0-65535";
		return BROKER_ERR_INVALID;
	}
	if (bracket ? inet_pton(AF_INET6, host, &v6.sin6_addr) != 1
		    : strcmp(host, "localhost") != 0 && inet_pton(AF_INET, host, &v4.sin_addr) != 1) {
		*why = bracket ? "not an IPv6 address between [ ]"
			       : "HOST must be an IPv4 address in dotted form, or localhost";
		return BROKER_ERR_INVALID;
	}
	if (strcmp(host, "localhost") == 0)
		v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (ss && bracket) {
		v6.sin6_port = htons((uint16_t)p);
		memcpy(ss, &v6, sizeof(v6));
		*sslen = sizeof(v6);
	} else if (ss) {
		v4.sin_port = htons((uint16_t)p);
		memcpy(ss, &v4, sizeof(v4));
		*sslen = sizeof(v4);
	}
	*why = NULL;
	return BROKER_OK;
}

int broker_pem_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

unsigned broker_usable_cpus(void)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 1024 ? 1024 : (unsigned)n;
}

enum broker_err broker_random_id(char out[23])
{
	unsigned char raw[16];

	_Static_assert(B64URL_ENCODED_LEN(sizeof(raw)) + 1 == 23, "22 characters and a NUL");
	if (broker_random(raw, sizeof(raw)) != BROKER_OK)
		return BROKER_ERR_CRYPTO;
	b64url_encode_into(raw, sizeof(raw), out);
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

	/* scheme and host are case-insensitive (RFC 3986 §3.1, §3.2.2) */
	if (strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else if (strncasecmp(url, "https://", 8) == 0)
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
	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return false;
}

bool broker_url_allowed(const char *url)
{
	for (const char *c = url; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f)
			return false; /* no URL has spaces or control characters */
	if (strncasecmp(url, "https://", 8) == 0)
		return url[8] != '\0';
	return strncasecmp(url, "http://", 7) == 0 && broker_url_is_loopback(url);
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

int broker_hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t broker_utf8_seq_len(const unsigned char *s, size_t n)
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
			size_t l = broker_utf8_seq_len(p, (size_t)(end - p));

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
