/* SPDX-License-Identifier: Apache-2.0 */
/* The JSON writer and b64url_encode_into (util.h) against their references:
 * every output is compared byte for byte with what jansson's json_dumps
 * (JSON_COMPACT) and OpenSSL's base64 write for the same input, over fixed
 * edge cases and a few thousand random values. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "check.h"
#include "cibroker/util.h"

/* What the writer writes for v, or NULL with *ret_err set. */
static char *written(const json_t *v, enum broker_err *ret_err)
{
	struct broker_json_writer w = {.buf = {.max = 1 << 20}};
	char *out;

	broker_jw_value(&w, v);
	*ret_err = w.err;
	if (w.err != BROKER_OK) {
		broker_buf_wipe(&w.buf);
		return NULL;
	}
	out = strdup(w.buf.data ? w.buf.data : "");
	broker_buf_wipe(&w.buf);
	return out;
}

static bool same_as_jansson(const json_t *v, const char *what)
{
	enum broker_err err;
	char *mine = written(v, &err);
	char *ref = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	bool ok = mine && ref && strcmp(mine, ref) == 0;

	if (!ok)
		fprintf(stderr, "  %s: writer %s, jansson %s\n", what, mine ? mine : "(error)", ref ? ref : "(error)");
	free(mine);
	free(ref);
	return ok;
}

static unsigned rnd(unsigned n)
{
	unsigned v;

	RAND_bytes((unsigned char *)&v, sizeof(v));
	return n ? v % n : v;
}

/* Random valid UTF-8 heavy on what needs escaping: controls, quotes,
 * backslashes, slashes, DEL and multi-byte sequences up to U+10FFFF. */
static size_t random_utf8(char *out, size_t max)
{
	static const unsigned cps[] = {0, 1, 8, 9, 10, 12, 13, 0x1f, 0x20, '"', '\\', '/', 0x7f, 0x80, 0x7ff, 0x800,
				       0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x10ffff, 0x2028, 'a', 'Z'};
	size_t n = 0, want = rnd(40);

	for (size_t i = 0; i < want && n + 4 < max; i++) {
		unsigned cp = rnd(3) ? cps[rnd(BROKER_ARRAY_SIZE(cps))] : rnd(0x110000);

		if (cp >= 0xd800 && cp <= 0xdfff)
			cp = 'x';
		if (cp < 0x80) {
			out[n++] = (char)cp;
		} else if (cp < 0x800) {
			out[n++] = (char)(0xc0 | cp >> 6);
			out[n++] = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			out[n++] = (char)(0xe0 | cp >> 12);
			out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			out[n++] = (char)(0x80 | (cp & 0x3f));
		} else {
			out[n++] = (char)(0xf0 | cp >> 18);
			out[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			out[n++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	return n;
}

static json_t *random_value(int depth)
{
	char buf[256];
	size_t n;
	double d;
	uint64_t bits;

	switch (depth > 3 ? rnd(5) : rnd(7)) {
	case 0:
		n = random_utf8(buf, sizeof(buf));
		return json_stringn(buf, n);
	case 1:
		RAND_bytes((unsigned char *)&bits, sizeof(bits));
		return json_integer((json_int_t)(rnd(2) ? (int64_t)bits : (int64_t)rnd(2000) - 1000));
	case 2:
		do {
			RAND_bytes((unsigned char *)&bits, sizeof(bits));
			memcpy(&d, &bits, sizeof(d));
		} while (!isfinite(d));
		return json_real(rnd(2) ? d : (double)rnd(100000) / 8.0);
	case 3: return json_boolean(rnd(2));
	case 4: return json_null();
	case 5: {
		json_t *o = json_object();

		for (unsigned i = rnd(5); i > 0; i--) {
			n = random_utf8(buf, sizeof(buf));
			json_object_setn_new(o, buf, n, random_value(depth + 1));
		}
		return o;
	}
	default: {
		json_t *a = json_array();

		for (unsigned i = rnd(5); i > 0; i--)
			json_array_append_new(a, random_value(depth + 1));
		return a;
	}
	}
}

static void test_strings(void)
{
	char all[128];
	json_t *v;
	enum broker_err err;
	static const char *const invalid[] = {
		"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
		"\xff", "ok\xe2\x82", "\xc3", "a\xc3(",
	};

	for (int i = 0; i < 128; i++)
		all[i] = (char)i;
	v = json_stringn(all, sizeof(all));
	CHECK(same_as_jansson(v, "all ASCII bytes"), "every ASCII byte escaped as jansson does");
	json_decref(v);
	v = json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 a/b \"q\" \\");
	CHECK(same_as_jansson(v, "utf-8"), "multi-byte UTF-8 kept, quotes and backslash escaped");
	json_decref(v);
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(invalid); i++) {
		struct broker_json_writer w = {.buf = {.max = 1024}};

		broker_jw_string(&w, invalid[i]);
		CHECK(w.err == BROKER_ERR_INVALID && !json_string(invalid[i]),
		      "invalid UTF-8 #%zu refused, as json_string refuses it", i);
		broker_buf_wipe(&w.buf);
	}
	{
		struct broker_json_writer w = {.buf = {.max = 1024}};

		broker_jw_string(&w, NULL);
		CHECK(w.err == BROKER_OK && strcmp(w.buf.data, "null") == 0, "NULL string writes null");
		broker_buf_wipe(&w.buf);
	}
	int bad = 0;
	for (int i = 0; i < 2000; i++) {
		char buf[256];
		size_t n = random_utf8(buf, sizeof(buf));

		v = json_stringn(buf, n);
		if (!v || !same_as_jansson(v, "random string"))
			bad++;
		json_decref(v);
	}
	CHECK(bad == 0, "2000 random strings as jansson writes them (%d differ)", bad);
	(void)err;
}

static void test_numbers(void)
{
	static const json_int_t ints[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN, INT64_MIN + 1};
	static const double reals[] = {0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1e21, 1e22, 1e-5, 1e-7, 123456789.0, 1e300,
				       -1e-300, 5e-324, DBL_MAX, DBL_MIN, 3.141592653589793, 100.0, 1e16, 1e17,
				       12345678901234567890.0, 2.5e-10};
	int bad = 0;

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(ints); i++) {
		json_t *v = json_integer(ints[i]);

		CHECK(same_as_jansson(v, "integer"), "integer %lld as jansson writes it", (long long)ints[i]);
		json_decref(v);
	}
	for (size_t i = 0; i < BROKER_ARRAY_SIZE(reals); i++) {
		json_t *v = json_real(reals[i]);

		CHECK(same_as_jansson(v, "real"), "real %.17g as jansson writes it", reals[i]);
		json_decref(v);
	}
	for (int i = 0; i < 2000; i++) {
		json_t *v = random_value(4); /* depth 4: scalars only */

		if (!same_as_jansson(v, "random scalar"))
			bad++;
		json_decref(v);
	}
	CHECK(bad == 0, "2000 random scalars as jansson writes them (%d differ)", bad);
}

static void test_structures(void)
{
	json_t *doc = json_loads("{\"iss\":\"https://x\",\"aud\":[\"a\",\"b\",[]],\"n\":{},\"deep\":{\"a\":{\"b\":"
				 "[1,2.5,true,false,null]}},\"z\":\"last\",\"a\":\"not sorted\"}",
				 0, NULL);
	json_t *o = json_object();
	int bad = 0;

	CHECK(doc && same_as_jansson(doc, "document"), "parsed document, insertion order kept");
	json_decref(doc);
	json_object_setn_new(o, "a\0b", 3, json_string("nul in key"));
	CHECK(same_as_jansson(o, "key with NUL"), "a key holding a NUL is escaped as \\u0000");
	json_decref(o);
	for (int i = 0; i < 1000; i++) {
		json_t *v = random_value(0);

		if (!same_as_jansson(v, "random value"))
			bad++;
		json_decref(v);
	}
	CHECK(bad == 0, "1000 random nested values as jansson writes them (%d differ)", bad);
}

static void test_errors(void)
{
	struct broker_json_writer w = {.buf = {.max = 8}};
	json_t *deep = json_array(), *cur = deep;
	enum broker_err err;
	char *out;

	broker_jw_raw(&w, "{\"k\":");
	broker_jw_string(&w, "longer than eight");
	CHECK(w.err == BROKER_ERR_TOOBIG && w.buf.len <= 8, "max holds: TOOBIG, nothing past it");
	broker_jw_raw(&w, "}");
	CHECK(w.err == BROKER_ERR_TOOBIG && !strchr(w.buf.data, '}'), "the first error sticks: later writes do nothing");
	broker_buf_wipe(&w.buf);

	w = (struct broker_json_writer){.buf = {.max = 1024}};
	broker_jw_raw(&w, "[");
	broker_jw_string(&w, "bad \xff");
	broker_jw_raw(&w, ",1]");
	CHECK(w.err == BROKER_ERR_INVALID, "an invalid string fails the whole text");
	broker_buf_wipe(&w.buf);

	for (int i = 0; i < BROKER_JSON_WRITE_MAX_DEPTH + 5; i++) {
		json_t *next = json_array();

		json_array_append_new(cur, next);
		cur = next;
	}
	out = written(deep, &err);
	CHECK(!out && err == BROKER_ERR_INVALID, "nesting past BROKER_JSON_WRITE_MAX_DEPTH refused");
	free(out);
	json_decref(deep);

	w = (struct broker_json_writer){.buf = {.max = 1024}};
	broker_jw_raw(&w, "{\"a\":");
	broker_jw_int(&w, -42);
	broker_jw_raw(&w, ",\"b\":");
	broker_jw_value(&w, NULL);
	broker_jw_raw(&w, "}");
	CHECK(w.err == BROKER_OK && strcmp(w.buf.data, "{\"a\":-42,\"b\":null}") == 0, "pieces join as written");
	broker_buf_wipe(&w.buf);
}

static void test_b64url(void)
{
	int bad = 0;

	for (size_t len = 0; len < 300; len++) {
		unsigned char in[300], ref[512];
		char out[512];
		size_t n;
		int m;

		RAND_bytes(in, (int)len);
		m = EVP_EncodeBlock(ref, in, (int)len);
		while (m > 0 && ref[m - 1] == '=')
			m--;
		for (int i = 0; i < m; i++)
			ref[i] = ref[i] == '+' ? '-' : ref[i] == '/' ? '_' : ref[i];
		memset(out, 'X', sizeof(out));
		n = b64url_encode_into(in, len, out);
		if (n != (size_t)m || n != B64URL_ENCODED_LEN(len) || memcmp(out, ref, n) != 0 || out[n] != '\0')
			bad++;
	}
	CHECK(bad == 0, "b64url_encode_into equals OpenSSL base64 with the url alphabet, lengths 0..299 (%d differ)",
	      bad);
}

int main(void)
{
	test_strings();
	test_numbers();
	test_structures();
	test_errors();
	test_b64url();
	return check_done();
}
