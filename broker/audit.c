/* SPDX-License-Identifier: Apache-2.0 */
/* Tamper-evident audit log (DESIGN.md "Audit log", docs/audit.md).
 *
 * Every record is a JSON line whose last field, "prev", is the SHA-256 of the
 * previous line. audit_write() is called by many HTTP threads at once and must
 * not return before its line is on disk (with sync always: durable), so
 * writers are grouped: each one formats its record without the chain link,
 * queues the body in the open batch and waits. Whoever finds no flush in
 * progress becomes the flusher: it takes the whole batch, links the chain,
 * write()s it in one go and fdatasync()s it, all outside the lock so that the
 * next batch fills meanwhile, then wakes the batch's writers. One fdatasync is
 * thus shared by everyone who queued during the previous one.
 *
 * The chain head (hash of the last line on disk) belongs to the flusher role,
 * never to the batch: a failed batch leaves the head describing what is
 * actually in the file (the partial write is cut off again where possible),
 * so the next batch links to the real last line and the file stays
 * verifiable. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cibroker/audit.h"
#include "cibroker/util.h"

#define AUDIT_MAX_STRING 2048           /* per string field of a record */
#define AUDIT_MAX_LINE (64 * 1024)      /* a record we write, chain link included */
#define AUDIT_MAX_READ_LINE (1024 * 1024) /* longest line we read back or verify */
#define AUDIT_MIN_FREE (64 * 1024)      /* audit_probe: free space that counts as usable */
#define AUDIT_LINK_LEN (sizeof("\"prev\":\"\"}") - 1 + 64)

struct audit_waiter {
	audit_done_fn *done;
	void *arg;
};

struct audit_batch {
	char *buf;    /* record bodies "{...," each followed by '\n' */
	size_t len, cap, nrec;
	unsigned refs; /* writers and waiters not yet told; the last one frees it */
	/* audit_submit's records, told by whoever wrote the batch. */
	struct audit_waiter *waiters;
	size_t n_waiters, cap_waiters;
	bool done;
	enum broker_err err;
	/* Its writers sleep here, not on the shared cv: a finished flush then
	 * wakes only the writers it concerns (a perf profile under sync always
	 * showed 15% of the CPU in futex wake-ups when every flush woke all). */
	pthread_cond_t cv;
};

/* The file and its chain head; only the holder of the flusher role touches it. */
struct audit_sink {
	int fd;
	bool is_stdout, is_regular;
	bool need_newline; /* the file ends in a fragment: terminate it first */
	char head[65];     /* hash of the last line in the file */
};

struct broker_audit {
	char *path;
	bool sync_always;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool flushing;            /* someone holds the flusher role */
	struct audit_batch *cur;  /* the batch now filling, or NULL */
	struct audit_sink sink;
	bool healthy;             /* __atomic */
	struct audit_stats stats; /* __atomic */
	/* audit_submit's writer thread, started on first use: it flushes
	 * batches that hold submitted records when no writer is there to. */
	pthread_t writer;
	bool writer_started, stopping;
	pthread_cond_t writer_cv;
};

static void hash_zero(char head[65])
{
	memset(head, '0', 64);
	head[64] = '\0';
}

static void stat_add(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

/* ---- opening: continue the chain of what is in the file ---- */

static enum broker_err pread_full(int fd, char *buf, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, buf, n, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return BROKER_ERR_IO;
		buf += r;
		n -= (size_t)r;
		off += r;
	}
	return BROKER_OK;
}

/* Hash of the file's last line, read backwards in growing chunks so that a
 * large log is never read whole. *ret_torn: the file does not end in '\n'. */
static enum broker_err read_tail(const char *path, const struct stat *wst, char ret_head[65], bool *ret_torn)
{
	char *buf = NULL, *line, *nl;
	size_t chunk = 4096, n, line_len;
	struct stat st;
	off_t end;
	bool torn;
	char last;
	enum broker_err err = BROKER_ERR_IO;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return BROKER_ERR_IO;
	/* The path may have been renamed between the two opens (logrotate). */
	if (fstat(fd, &st) < 0 || st.st_dev != wst->st_dev || st.st_ino != wst->st_ino)
		goto out;
	if (st.st_size == 0) {
		hash_zero(ret_head);
		*ret_torn = false;
		err = BROKER_OK;
		goto out;
	}
	if (pread_full(fd, &last, 1, st.st_size - 1) != BROKER_OK)
		goto out;
	torn = last != '\n';
	end = torn ? st.st_size : st.st_size - 1; /* the last line is [start, end) */
	for (;;) {
		char *nbuf;

		n = (off_t)chunk < end ? chunk : (size_t)end;
		nbuf = realloc(buf, n ? n : 1);
		if (!nbuf) {
			err = BROKER_ERR_NOMEM;
			goto out;
		}
		buf = nbuf;
		if (pread_full(fd, buf, n, end - (off_t)n) != BROKER_OK)
			goto out;
		nl = n ? memrchr(buf, '\n', n) : NULL;
		if (nl || (off_t)n == end)
			break;
		if (chunk > AUDIT_MAX_READ_LINE) {
			err = BROKER_ERR_TOOBIG;
			goto out;
		}
		chunk = chunk * 4 > AUDIT_MAX_READ_LINE ? AUDIT_MAX_READ_LINE + 1 : chunk * 4;
	}
	line = nl ? nl + 1 : buf;
	line_len = (size_t)(buf + n - line);
	broker_sha256_hex(line, line_len, ret_head);
	*ret_torn = torn;
	err = BROKER_OK;
out:
	free(buf);
	close(fd);
	return err;
}

/* A new file's directory entry must be durable too, or a crash could lose
 * the whole file along with records already acknowledged. */
static enum broker_err sync_parent_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	enum broker_err err = BROKER_ERR_IO;
	int fd;

	if (!dir)
		return BROKER_ERR_NOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) == 0 || errno == EINVAL)
			err = BROKER_OK;
		close(fd);
	}
	free(dir);
	return err;
}

static enum broker_err sink_open(const char *path, bool sync_always, struct audit_sink *ret, bool *ret_torn)
{
	struct audit_sink s = {.fd = -1};
	bool torn = false;
	struct stat st;
	enum broker_err err = BROKER_ERR_IO;

	hash_zero(s.head);
	if (strcmp(path, "-") == 0) {
		/* A stream has no readable past: its chain starts at zeros. */
		s.fd = STDOUT_FILENO;
		s.is_stdout = true;
		s.is_regular = fstat(s.fd, &st) == 0 && S_ISREG(st.st_mode);
		*ret = s;
		*ret_torn = false;
		return BROKER_OK;
	}
	s.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
	if (s.fd < 0)
		return BROKER_ERR_IO;
	if (fstat(s.fd, &st) < 0)
		goto out;
	s.is_regular = S_ISREG(st.st_mode);
	/* Empty: probably just created (O_EXCL would not follow a symlink). */
	if (s.is_regular && st.st_size == 0 && sync_always) {
		err = sync_parent_dir(path);
		if (err != BROKER_OK)
			goto out;
	}
	if (s.is_regular && st.st_size > 0) {
		err = read_tail(path, &st, s.head, &torn);
		if (err != BROKER_OK)
			goto out;
		s.need_newline = torn;
	}
	*ret = s;
	*ret_torn = torn;
	s.fd = -1;
	err = BROKER_OK;
out:
	if (s.fd >= 0)
		close(s.fd);
	return err;
}

static void sink_close(struct audit_sink *s)
{
	if (s->fd >= 0 && !s->is_stdout)
		close(s->fd);
	s->fd = -1;
}

enum broker_err audit_open(const char *path, bool sync_always, struct broker_audit **ret)
{
	struct broker_audit *a;
	bool torn = false;
	enum broker_err err;

	if (!path || !*path || !ret)
		return BROKER_ERR_INVALID;
	a = calloc(1, sizeof(*a));
	if (!a)
		return BROKER_ERR_NOMEM;
	a->sink.fd = -1;
	a->path = strdup(path);
	if (!a->path) {
		free(a);
		return BROKER_ERR_NOMEM;
	}
	err = sink_open(path, sync_always, &a->sink, &torn);
	if (err != BROKER_OK) {
		free(a->path);
		free(a);
		return err;
	}
	a->sync_always = sync_always;
	a->healthy = true;
	a->stats.torn_recovered = torn;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	pthread_cond_init(&a->writer_cv, NULL);
	*ret = a;
	return BROKER_OK;
}

static struct audit_batch *batch_new(void)
{
	struct audit_batch *b = calloc(1, sizeof(*b));

	if (b)
		pthread_cond_init(&b->cv, NULL);
	return b;
}

static void batch_free(struct audit_batch *b)
{
	free(b->buf);
	free(b->waiters);
	pthread_cond_destroy(&b->cv);
	free(b);
}

/* The role is free again (lock held): wake whoever waits to take it, and one
 * writer of the open batch to flush it; that batch's other writers sleep on
 * until it is written. */
static void role_hand_over(struct broker_audit *a)
{
	pthread_cond_broadcast(&a->cv);
	if (a->cur)
		pthread_cond_signal(&a->cur->cv);
	if (a->cur && a->cur->n_waiters)
		pthread_cond_signal(&a->writer_cv);
}

/* The flusher role serialises everything that touches the sink. */
static void role_take(struct broker_audit *a)
{
	pthread_mutex_lock(&a->mu);
	while (a->flushing)
		pthread_cond_wait(&a->cv, &a->mu);
	a->flushing = true;
	pthread_mutex_unlock(&a->mu);
}

static void role_release(struct broker_audit *a)
{
	pthread_mutex_lock(&a->mu);
	a->flushing = false;
	role_hand_over(a);
	pthread_mutex_unlock(&a->mu);
}

void audit_close(struct broker_audit *a)
{
	if (!a)
		return;
	/* The writer thread tells every submitted record before it ends. */
	pthread_mutex_lock(&a->mu);
	a->stopping = true;
	pthread_cond_signal(&a->writer_cv);
	pthread_mutex_unlock(&a->mu);
	if (a->writer_started)
		pthread_join(a->writer, NULL);
	role_take(a);
	/* Every queued record has a writer that flushes it before returning, so
	 * a batch left here has nobody waiting on it. */
	if (a->cur && a->cur->refs == 0)
		batch_free(a->cur);
	/* Everything was written already; with sync none, make it durable now
	 * (SIGTERM). Nobody is left to hear about an error. */
	if (a->sink.fd >= 0 && a->sink.is_regular && !a->sync_always)
		(void)fdatasync(a->sink.fd);
	sink_close(&a->sink);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	pthread_cond_destroy(&a->writer_cv);
	free(a->path);
	free(a);
}

enum broker_err audit_reopen(struct broker_audit *a)
{
	struct audit_sink fresh;
	bool torn = false;
	enum broker_err err = BROKER_OK;

	if (!a)
		return BROKER_ERR_INVALID;
	role_take(a);
	if (!a->sink.is_stdout) {
		err = sink_open(a->path, a->sync_always, &fresh, &torn);
		if (err == BROKER_OK) {
			sink_close(&a->sink);
			a->sink = fresh;
			stat_add(&a->stats.torn_recovered, torn);
		}
	}
	role_release(a);
	return err;
}

bool audit_sync_always(const struct broker_audit *a)
{
	return a && a->sync_always;
}

bool audit_healthy(const struct broker_audit *a)
{
	return a && __atomic_load_n(&a->healthy, __ATOMIC_ACQUIRE);
}

enum broker_err audit_probe(struct broker_audit *a)
{
	struct statvfs v;
	bool ok = false;

	if (!a)
		return BROKER_ERR_INVALID;
	if (audit_healthy(a))
		return BROKER_OK;
	role_take(a);
	/* Only a regular file can be judged without writing to it; a stream or
	 * device recovers with the next successful write. */
	if (a->sink.fd >= 0 && a->sink.is_regular && fstatvfs(a->sink.fd, &v) == 0 &&
	    (uint64_t)v.f_bavail * v.f_frsize >= AUDIT_MIN_FREE && fdatasync(a->sink.fd) == 0)
		ok = true;
	if (ok)
		__atomic_store_n(&a->healthy, true, __ATOMIC_RELEASE);
	role_release(a);
	return ok ? BROKER_OK : BROKER_ERR_AUDIT;
}

void audit_get_stats(const struct broker_audit *a, struct audit_stats *ret)
{
	struct audit_stats s = {0};

	if (a) {
		s.records = __atomic_load_n(&a->stats.records, __ATOMIC_RELAXED);
		s.batches = __atomic_load_n(&a->stats.batches, __ATOMIC_RELAXED);
		s.syncs = __atomic_load_n(&a->stats.syncs, __ATOMIC_RELAXED);
		s.errors = __atomic_load_n(&a->stats.errors, __ATOMIC_RELAXED);
		s.torn_recovered = __atomic_load_n(&a->stats.torn_recovered, __ATOMIC_RELAXED);
	}
	*ret = s;
}

/* ---- formatting a record (outside the lock) ---- */


/* A record must be written even when a field holds junk: invalid bytes
 * become '?' and an over-long value is cut with "...", so the line stays
 * valid JSON and bounded. NULL writes null. */
static void put_safe_string(struct broker_json_writer *w, const char *s)
{
	const unsigned char *in = (const unsigned char *)s;
	char buf[AUDIT_MAX_STRING];
	size_t n, o = 0;
	bool cut;

	if (!s) {
		broker_jw_raw(w, "null");
		return;
	}
	n = strlen(s);
	cut = n > AUDIT_MAX_STRING; /* output bytes = input bytes until cut */
	if (!cut) {
		size_t ascii = 0;

		while (ascii < n && in[ascii] < 0x80)
			ascii++;
		if (ascii == n) { /* the common case: nothing to cut or replace */
			broker_jw_stringn(w, s, n);
			return;
		}
	}
	for (size_t i = 0; i < n;) {
		size_t l = broker_utf8_seq_len(in + i, n - i);

		if (cut && o + (l ? l : 1) > AUDIT_MAX_STRING - 3) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (l) {
			memcpy(buf + o, in + i, l);
			o += l;
			i += l;
		} else {
			buf[o++] = '?';
			i++;
		}
	}
	broker_jw_stringn(w, buf, o);
}

/* The selected claims: scalars from the token, whose strings get the same
 * 2 KiB cut and UTF-8 clean-up as the record's own fields. */
static void put_claims(struct broker_json_writer *w, const json_t *claims)
{
	const char *k;
	json_t *v;
	bool first = true;

	if (!claims) {
		broker_jw_raw(w, "null");
		return;
	}
	broker_jw_raw(w, "{");
	json_object_foreach((json_t *)claims, k, v) {
		broker_jw_raw(w, first ? "" : ",");
		first = false;
		put_safe_string(w, k);
		broker_jw_raw(w, ":");
		if (json_is_string(v))
			put_safe_string(w, json_string_value(v));
		else
			broker_jw_value(w, v);
	}
	broker_jw_raw(w, "}");
}

/* The record as compact JSON without its chain link: "{...," (the final '}'
 * turned into ','), so the flusher only appends "prev":"<hex>"}. Written as
 * text in the field order of DESIGN.md, byte for byte what json_dumps of the
 * same object wrote before (building the object only to dump it cost more
 * than the rest of the audit path together: docs/benchmarks.md). */
static enum broker_err record_body(const struct audit_record *rec, bool drop_claims, char **ret, size_t *ret_len)
{
	struct broker_json_writer w = {.buf = {.max = AUDIT_MAX_LINE}};
	char ts[32];

	if ((rec->claims && !json_is_object(rec->claims)) || (rec->credential && !json_is_object(rec->credential)))
		return BROKER_ERR_INVALID;
	broker_fmt_time_ms(rec->ts_us ? rec->ts_us : broker_now_us(), ts, sizeof(ts));
	broker_jw_raw(&w, "{\"ts\":");
	broker_jw_string(&w, ts);
	broker_jw_raw(&w, ",\"request_id\":");
	put_safe_string(&w, rec->request_id);
	broker_jw_raw(&w, ",\"remote\":");
	put_safe_string(&w, rec->remote);
	broker_jw_raw(&w, rec->allow ? ",\"decision\":\"allow\",\"error\":" : ",\"decision\":\"deny\",\"error\":");
	put_safe_string(&w, rec->error);
	broker_jw_raw(&w, ",\"reason\":");
	put_safe_string(&w, rec->reason);
	broker_jw_raw(&w, ",\"audience\":");
	put_safe_string(&w, rec->audience);
	broker_jw_raw(&w, ",\"policy\":");
	put_safe_string(&w, rec->policy);
	broker_jw_raw(&w, ",\"issuer\":");
	put_safe_string(&w, rec->issuer);
	broker_jw_raw(&w, ",\"sub\":");
	put_safe_string(&w, rec->sub);
	broker_jw_raw(&w, ",\"token_jti\":");
	put_safe_string(&w, rec->token_jti);
	broker_jw_raw(&w, ",\"claims\":");
	if (drop_claims)
		broker_jw_raw(&w, "{\"truncated\":true}");
	else
		put_claims(&w, rec->claims);
	broker_jw_raw(&w, ",\"credential\":");
	broker_jw_value(&w, rec->credential);
	broker_jw_raw(&w, ",\"latency_us\":");
	broker_jw_int(&w, rec->latency_us);
	/* Compact output has no newline: control characters in strings are
	 * escaped, so one record is always exactly one line. */
	broker_jw_raw(&w, ",");
	if (w.err == BROKER_OK && w.buf.len + AUDIT_LINK_LEN > AUDIT_MAX_LINE)
		w.err = BROKER_ERR_TOOBIG;
	if (w.err != BROKER_OK) {
		free(w.buf.data);
		/* Past the buffer's max is past the line limit too. A string
		 * that is not UTF-8 can only come from a json_t built without
		 * jansson's checks; json_dumps failed on those as well. */
		return w.err == BROKER_ERR_TOOBIG ? BROKER_ERR_TOOBIG : BROKER_ERR_NOMEM;
	}
	*ret = w.buf.data;
	*ret_len = w.buf.len;
	return BROKER_OK;
}

/* ---- writing a batch (flusher role, no lock held) ---- */

static int write_all(int fd, const char *buf, size_t len, size_t *ret_written)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = write(fd, buf + done, len - done);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*ret_written = done;
			return -1;
		}
		done += (size_t)r;
	}
	*ret_written = done;
	return 0;
}

/* After a failed write that could not be undone, make the head describe the
 * first `written` bytes of out, which did reach the file: the last complete
 * line, or a trailing fragment that the next write terminates. */
static void sink_account_partial(struct audit_sink *s, const char *out, size_t written, bool lead_nl)
{
	const char *p = out, *end = out + written, *nl;

	if (written == 0)
		return;
	if (lead_nl) {
		p++;
		s->need_newline = false;
	}
	while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
		broker_sha256_hex(p, (size_t)(nl - p), s->head);
		p = nl + 1;
	}
	if (p < end) {
		broker_sha256_hex(p, (size_t)(end - p), s->head);
		s->need_newline = true;
	}
}

/* Remove the last `written` bytes again after a failed batch. The file is
 * opened O_APPEND and only the flusher writes it, so they are its tail: the
 * size is looked up here, after the failure, rather than with an fstat per
 * batch before every write (one system call per exchange at sync: none). */
static bool sink_cut_off(struct audit_sink *s, size_t written)
{
	struct stat st;

	return s->is_regular && fstat(s->fd, &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size >= written &&
	       ftruncate(s->fd, st.st_size - (off_t)written) == 0;
}

static enum broker_err sink_write_batch(struct broker_audit *a, struct audit_batch *b)
{
	struct audit_sink *s = &a->sink;
	char head[65], *out;
	const char *p = b->buf, *bend = b->buf + b->len;
	size_t n = 0, written = 0;
	bool lead_nl = s->need_newline, ok;

	if (s->fd < 0)
		return BROKER_ERR_AUDIT;
	out = malloc(b->len + b->nrec * AUDIT_LINK_LEN + 2);
	if (!out)
		return BROKER_ERR_NOMEM;
	memcpy(head, s->head, sizeof(head));
	if (lead_nl)
		out[n++] = '\n';
	while (p < bend) {
		const char *nl = memchr(p, '\n', (size_t)(bend - p));
		size_t start = n, blen = (size_t)(nl - p);

		memcpy(out + n, p, blen);
		n += blen;
		memcpy(out + n, "\"prev\":\"", 8);
		memcpy(out + n + 8, head, 64);
		memcpy(out + n + 72, "\"}", 2);
		n += AUDIT_LINK_LEN;
		broker_sha256_hex(out + start, n - start, head);
		out[n++] = '\n';
		p = nl + 1;
	}
	ok = write_all(s->fd, out, n, &written) == 0;
	if (ok && a->sync_always) {
		stat_add(&a->stats.syncs, 1);
		/* A pipe or terminal cannot be synced; that is not a failure. */
		if (fdatasync(s->fd) < 0 && (s->is_regular || (errno != EINVAL && errno != ENOTSUP)))
			ok = false;
	}
	if (ok) {
		memcpy(s->head, head, sizeof(head));
		s->need_newline = false;
		stat_add(&a->stats.records, b->nrec);
		stat_add(&a->stats.batches, 1);
		__atomic_store_n(&a->healthy, true, __ATOMIC_RELEASE);
	} else {
		/* None of the batch was acknowledged: cut it off again so the file
		 * ends at the last line the head describes. If that is impossible,
		 * describe what is there instead. */
		if (written > 0 && !sink_cut_off(s, written))
			sink_account_partial(s, out, written, lead_nl);
		stat_add(&a->stats.errors, 1);
		__atomic_store_n(&a->healthy, false, __ATOMIC_RELEASE);
	}
	free(out);
	return ok ? BROKER_OK : BROKER_ERR_AUDIT;
}

static enum broker_err batch_append(struct audit_batch *b, const char *body, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *nbuf;

		while (cap < b->len + len + 1)
			cap *= 2;
		nbuf = realloc(b->buf, cap);
		if (!nbuf)
			return BROKER_ERR_NOMEM;
		b->buf = nbuf;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, body, len);
	b->len += len;
	b->buf[b->len++] = '\n';
	b->nrec++;
	return BROKER_OK;
}

/* Called with the lock held and no flush in progress: take the open batch
 * and write it with the lock released. Then tell its submitted records,
 * also without the lock (the next batch may be written meanwhile). */
static void flush_locked(struct broker_audit *a)
{
	struct audit_batch *b = a->cur;
	struct audit_waiter *w;
	size_t n;
	enum broker_err err;

	a->cur = NULL;
	a->flushing = true;
	pthread_mutex_unlock(&a->mu);
	err = sink_write_batch(a, b);
	pthread_mutex_lock(&a->mu);
	b->err = err;
	b->done = true;
	a->flushing = false;
	pthread_cond_broadcast(&b->cv);
	role_hand_over(a);
	if (!b->n_waiters)
		return;
	w = b->waiters;
	n = b->n_waiters;
	b->waiters = NULL;
	b->n_waiters = 0;
	pthread_mutex_unlock(&a->mu);
	for (size_t i = 0; i < n; i++)
		w[i].done(w[i].arg, err);
	free(w);
	pthread_mutex_lock(&a->mu);
	b->refs -= (unsigned)n;
	if (b->refs == 0)
		batch_free(b);
}

static void *writer_main(void *arg)
{
	struct broker_audit *a = arg;

	pthread_mutex_lock(&a->mu);
	for (;;) {
		bool work = a->cur && a->cur->n_waiters > 0;

		if (work && !a->flushing)
			flush_locked(a);
		else if (!work && a->stopping)
			break;
		else
			pthread_cond_wait(&a->writer_cv, &a->mu);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static enum broker_err format_record(const struct audit_record *rec, char **ret, size_t *ret_len)
{
	enum broker_err err = record_body(rec, false, ret, ret_len);

	if (err == BROKER_ERR_TOOBIG)
		err = record_body(rec, true, ret, ret_len);
	return err;
}

enum broker_err audit_submit(struct broker_audit *a, const struct audit_record *rec, audit_done_fn *done, void *arg)
{
	struct audit_batch *b;
	char *body = NULL;
	size_t len = 0;
	enum broker_err err;

	if (!a || !rec || !done)
		return BROKER_ERR_INVALID;
	err = format_record(rec, &body, &len);
	if (err != BROKER_OK)
		return err;
	pthread_mutex_lock(&a->mu);
	err = BROKER_ERR_AUDIT;
	if (a->stopping)
		goto out;
	err = BROKER_ERR_NOMEM;
	if (!a->writer_started) {
		if (pthread_create(&a->writer, NULL, writer_main, a) != 0)
			goto out;
		a->writer_started = true;
	}
	if (!a->cur)
		a->cur = batch_new();
	b = a->cur;
	if (!b)
		goto out;
	if (b->n_waiters == b->cap_waiters) {
		size_t cap = b->cap_waiters ? b->cap_waiters * 2 : 16;
		struct audit_waiter *nw = realloc(b->waiters, cap * sizeof(*nw));

		if (!nw)
			goto out;
		b->waiters = nw;
		b->cap_waiters = cap;
	}
	if (batch_append(b, body, len) != BROKER_OK)
		goto out;
	b->waiters[b->n_waiters++] = (struct audit_waiter){done, arg};
	b->refs++;
	pthread_cond_signal(&a->writer_cv);
	err = BROKER_OK;
out:
	pthread_mutex_unlock(&a->mu);
	free(body);
	return err;
}

enum broker_err audit_write(struct broker_audit *a, const struct audit_record *rec)
{
	struct audit_batch *b;
	char *body = NULL;
	size_t len = 0;
	enum broker_err err;

	if (!a || !rec)
		return BROKER_ERR_INVALID;
	err = format_record(rec, &body, &len);
	if (err != BROKER_OK)
		return err;
	pthread_mutex_lock(&a->mu);
	if (!a->cur)
		a->cur = batch_new();
	if (!a->cur || batch_append(a->cur, body, len) != BROKER_OK) {
		pthread_mutex_unlock(&a->mu);
		free(body);
		return BROKER_ERR_NOMEM;
	}
	b = a->cur;
	b->refs++;
	/* Our batch is either being written by someone (wait) or still the open
	 * one with nobody writing: then we write it, with whatever else queued. */
	while (!b->done) {
		if (!a->flushing)
			flush_locked(a);
		else
			pthread_cond_wait(&b->cv, &a->mu);
	}
	err = b->err;
	if (--b->refs == 0)
		batch_free(b);
	pthread_mutex_unlock(&a->mu);
	free(body);
	return err;
}
