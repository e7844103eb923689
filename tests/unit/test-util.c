/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "cibroker/util.h"

static void test_b64url(void)
{
	static const struct {
		const char *in;
		const char *out; /* NULL = must be rejected */
		size_t out_len;
	} rows[] = {
		{"", "", 0},
		{"Zg", "f", 1},
		{"Zm8", "fo", 2},
		{"Zm9v", "foo", 3},
		{"Zm9vYg", "foob", 4},
		{"_-8", "\xff\xef", 2},
		{"Zh", NULL, 0},      /* non-zero trailing bits */
		{"Zm9=", NULL, 0},    /* padding */
		{"Zg==", NULL, 0},
		{"Zm 9v", NULL, 0},   /* whitespace */
		{"Zm9v\n", NULL, 0},
		{"+/8", NULL, 0},     /* standard alphabet */
		{"Z", NULL, 0},       /* impossible length */
		{"Zm9v.", NULL, 0},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		unsigned char *out = NULL;
		size_t n = 0;
		enum broker_err err = b64url_decode(rows[i].in, strlen(rows[i].in), &out, &n);

		if (rows[i].out)
			CHECK(err == BROKER_OK && n == rows[i].out_len && memcmp(out, rows[i].out, n) == 0,
			      "decode '%s'", rows[i].in);
		else
			CHECK(err == BROKER_ERR_INVALID, "reject '%s'", rows[i].in);
		free(out);
	}
	char *e = b64url_encode("\xff\xef", 2);
	CHECK(e && strcmp(e, "_-8") == 0);
	free(e);
}

static void test_durations(void)
{
	static const struct {
		const char *in;
		int64_t v; /* -1 = reject */
	} rows[] = {
		{"90", 90}, {"90s", 90}, {"5m", 300}, {"1h", 3600}, {"2d", 172800}, {"0", 0},
		{"", -1}, {"-5", -1}, {"5x", -1}, {"m", -1}, {"1.5h", -1}, {" 5m", -1}, {"5m ", -1},
		{"99999999999999999999", -1}, {"999999999d", -1},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		int64_t v = -7;
		enum broker_err err = broker_parse_duration(rows[i].in, &v);

		if (rows[i].v >= 0)
			CHECK(err == BROKER_OK && v == rows[i].v, "duration '%s' -> %lld", rows[i].in, (long long)v);
		else
			CHECK(err != BROKER_OK && v == -7, "duration '%s' must be refused", rows[i].in);
	}
	size_t s = 0;
	CHECK(broker_parse_size("16KiB", &s) == BROKER_OK && s == 16384);
	CHECK(broker_parse_size("1MiB", &s) == BROKER_OK && s == 1048576);
	CHECK(broker_parse_size("100", &s) == BROKER_OK && s == 100);
	CHECK(broker_parse_size("16 KiB", &s) != BROKER_OK);
	CHECK(broker_parse_size("16kib", &s) != BROKER_OK);
}

static void test_json(void)
{
	json_t *j = broker_json_parse("{\"a\":1,\"a\":2}", 13, 16);
	CHECK(j == NULL, "duplicate keys rejected");
	j = broker_json_parse("{\"a\":1} x", 9, 16);
	CHECK(j == NULL, "trailing bytes rejected");
	j = broker_json_parse("{\"a\":1}\0", 8, 16);
	CHECK(j == NULL, "embedded NUL rejected");
	j = broker_json_parse("[[[[1]]]]", 9, 3);
	CHECK(j == NULL, "depth limit");
	j = broker_json_parse("{\"a\":\"[[[[\"}", 12, 2);
	CHECK(j != NULL, "brackets in strings do not count");
	json_decref(j);
}

static void test_urls(void)
{
	CHECK(broker_url_allowed("https://token.actions.githubusercontent.com"));
	CHECK(broker_url_allowed("http://127.0.0.1:8080/x"));
	CHECK(broker_url_allowed("http://127.9.9.9/x"));
	CHECK(broker_url_allowed("http://localhost:1/"));
	CHECK(broker_url_allowed("http://[::1]:99/"));
	CHECK(!broker_url_allowed("http://example.com/"));
	CHECK(!broker_url_allowed("http://127.0.0.1.evil.com/"));
	CHECK(!broker_url_allowed("http://localhost.evil.com/"));
	CHECK(!broker_url_allowed("http://evil@127.0.0.1/"));
	CHECK(!broker_url_allowed("http://[::2]/"));
	CHECK(!broker_url_allowed("ftp://127.0.0.1/"));
	CHECK(!broker_url_allowed("https://"));
	/* case-insensitive scheme and localhost; no spaces or control characters */
	CHECK(broker_url_allowed("HTTP://LOCALHOST:8080/"));
	CHECK(broker_url_allowed("HTTPS://broker.example.com"));
	CHECK(!broker_url_allowed("HTTP://example.com/"));
	CHECK(!broker_url_allowed("https://broker.example.com\x01"));
	CHECK(!broker_url_allowed("https://bro\x7fker.example.com"));
	CHECK(!broker_url_allowed("https://a b.example.com"));
	CHECK(!broker_url_allowed("https://a.example.com/\n"));
}

static void test_listen(void)
{
	struct sockaddr_storage ss;
	unsigned len;
	const char *why;

	CHECK(broker_parse_listen("127.0.0.1:8080", &ss, &len, &why) == BROKER_OK && ss.ss_family == AF_INET);
	CHECK(broker_parse_listen("[::1]:0", &ss, &len, &why) == BROKER_OK && ss.ss_family == AF_INET6);
	CHECK(broker_parse_listen("localhost:1", &ss, &len, &why) == BROKER_OK &&
	      ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
	      ((struct sockaddr_in *)&ss)->sin_port == htons(1));
	CHECK(broker_parse_listen("0.0.0.0:65535", NULL, NULL, &why) == BROKER_OK && why == NULL);
	const char *bad[] = {"", ":80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+1",
			     "127.0.0.1:80x", "::1:80", "[::1]80", "[::1:80", "[127.0.0.1]:80", "*:80", "example.com:80",
			     "127.1:80", "300.0.0.1:80", "[]:80"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		CHECK(broker_parse_listen(bad[i], &ss, &len, &why) == BROKER_ERR_INVALID && why != NULL);
	}
}

static void test_misc(void)
{
	char h[65], id1[23], id2[23], t[32];

	broker_sha256_hex("", 0, h);
	CHECK(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
	CHECK(broker_random_id(id1) == BROKER_OK && broker_random_id(id2) == BROKER_OK);
	CHECK(strlen(id1) == 22 && strcmp(id1, id2) != 0);
	broker_fmt_time(0, t, sizeof(t));
	CHECK(strcmp(t, "1970-01-01T00:00:00Z") == 0);
	broker_fmt_time_ms(1234567, t, sizeof(t));
	CHECK(strcmp(t, "1970-01-01T00:00:01.234Z") == 0, "%s", t);
	CHECK(broker_ct_equal("abc", "abc", 3) && !broker_ct_equal("abc", "abd", 3));
}

static void test_buf(void)
{
	struct broker_buf b = {.max = 10};
	char big[5000];

	CHECK(broker_buf_append(&b, "hello", 5, 0) == BROKER_OK && b.len == 5 && strcmp(b.data, "hello") == 0);
	CHECK(broker_buf_write("world", 1, 5, &b) == 5 && b.len == 10 && strcmp(b.data, "helloworld") == 0);
	CHECK(broker_buf_write("!", 1, 1, &b) == 0 && b.toobig, "sink stops at max");
	CHECK(b.len == 10 && strcmp(b.data, "helloworld") == 0, "a refused append changes nothing");
	CHECK(broker_buf_append(&b, "x", 1, 100) == BROKER_OK, "explicit limit overrides max");
	broker_buf_wipe(&b);
	CHECK(b.data == NULL && b.len == 0 && b.cap == 0 && b.max == 10 && !b.toobig, "wipe empties, keeps max");
	memset(big, 'a', sizeof(big));
	b.max = 0;
	for (int i = 0; i < 10; i++)
		CHECK(broker_buf_append(&b, big, sizeof(big), 0) == BROKER_OK);
	CHECK(b.len == 50000 && b.data[b.len] == '\0' && b.cap > b.len, "grows past the first block");
	CHECK(broker_buf_write(big, SIZE_MAX / 2, 4, &b) == 0, "size*nmemb overflow refused");
	broker_buf_wipe(&b);
}

/* The thread default counts the CPUs the process may use (taskset, a
 * cpuset), not the host's: pinned to one CPU, that is 1. */
static void test_usable_cpus(void)
{
	cpu_set_t saved, one;
	unsigned all = broker_usable_cpus();

	CHECK(all >= 1 && all <= 1024);
	CHECK(sched_getaffinity(0, sizeof(saved), &saved) == 0);
	CHECK(all == (unsigned)CPU_COUNT(&saved), "%u vs %d", all, CPU_COUNT(&saved));
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &saved)) {
			CPU_SET(c, &one);
			break;
		}
	CHECK(sched_setaffinity(0, sizeof(one), &one) == 0);
	CHECK(broker_usable_cpus() == 1, "pinned to one CPU: %u", broker_usable_cpus());
	CHECK(sysconf(_SC_NPROCESSORS_ONLN) < 2 || broker_usable_cpus() < (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
	      "fewer than the CPUs online");
	CHECK(sched_setaffinity(0, sizeof(saved), &saved) == 0);
	CHECK(broker_usable_cpus() == all, "restored");
}

int main(void)
{
	test_usable_cpus();
	test_buf();
	test_b64url();
	test_durations();
	test_json();
	test_urls();
	test_listen();
	test_misc();
	return check_done();
}
