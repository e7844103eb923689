/* SPDX-License-Identifier: Apache-2.0 */
/* libmicrohttpd front end: routing, body limits, slow-client defences.
 * Everything about tokens happens in exchange.c; this file only moves bytes. */
#include "cibroker/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "cibroker/util.h"

/* A TCP connection, for the header deadline: libmicrohttpd's idle timeout
 * restarts with every byte, so a client trickling its request headers would
 * hold a connection forever. The reaper shuts down any connection that has
 * not completed a request's headers within connection_timeout +
 * request_deadline of being accepted or of its previous request's end. */
struct conn {
	struct conn *prev, *next;
	struct broker_server *srv;
	MHD_socket fd;
	int64_t waiting_since_us; /* accepted, or its last request completed */
	bool in_request;          /* headers in, a request being served */
	bool cut;
};

struct broker_server {
	struct MHD_Daemon *daemon;
	atomic_int in_flight; /* requests begun and not yet completed */
	/* server_stop has begun: no request may park its connection any more,
	 * as libmicrohttpd must not be stopped with one suspended. */
	atomic_bool closing;
	atomic_int resuming; /* audit threads inside on_exchange_done */
	struct broker_state *st;
	struct devissuer *dev;
	unsigned request_deadline;
	uint16_t port;
	int64_t header_limit_us;
	pthread_mutex_t conns_mu; /* guards conns and every conn's fields */
	struct conn *conns;
	pthread_cond_t reaper_cv;
	pthread_t reaper;
	bool reaper_started, stopping;
	/* The listening socket is ours (see server_start); nconns and
	 * slot_cv, under conns_mu, hold the acceptor at max_connections. */
	int listen_fd;
	pthread_t acceptor;
	bool acceptor_started;
	atomic_bool accept_stop;
	unsigned nconns, max_connections;
	pthread_cond_t slot_cv;
};

#define DRAIN_MAX (1024 * 1024)
#define CONNECTION_POOL ((size_t)16 * 1024) /* libmicrohttpd memory per connection */
/* GnuTLS's defaults, without TLS 1.0 and 1.1 (RFC 8996), as Vault's and
 * most services' minimum of TLS 1.2. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* An exchange waiting for its audit record (exchange_start) holds the
 * connection suspended. Whoever of the handler (having suspended it) and the
 * audit thread (having filled the result) comes second resumes it; if the
 * connection ends first, the audit thread frees the request. */
enum {
	EX_STARTED = 1,
	EX_SUSPENDED = 2,
	EX_DONE = 4,
	EX_ORPHAN = 8,
};

struct request {
	int64_t started_us;
	struct broker_buf body; /* may hold a subject token: wiped on completion */
	size_t discarded;
	bool too_big;
	bool answered;
	bool ignore_body;
	bool is_exchange;
	atomic_uint ex;                /* EX_* */
	struct exchange_pending *pending;
	struct exchange_result result; /* holds a credential until answered */
	struct MHD_Connection *conn;
	struct broker_server *srv;
};

static void request_free(struct request *r)
{
	exchange_finish(r->pending);
	broker_buf_wipe(&r->body);
	exchange_result_clear(&r->result);
	free(r);
}

/* A listener being stopped (SIGTERM, or replaced on reload) asks keep-alive
 * clients to close after this answer, so its connections drain instead of
 * carrying requests to it for as long as the clients keep sending. */
static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static bool server_closing(struct MHD_Connection *c)
{
	const struct conn *k = conn_of(c);

	return k && atomic_load(&k->srv->closing);
}

static enum MHD_Result reply_ex(struct MHD_Connection *c, int status, const char *type, char *body, bool secret,
				bool no_store, int retry_after, const char *allow, bool close)
{
	struct MHD_Response *r;
	enum MHD_Result ret;
	size_t len = body ? strlen(body) : 0;

	/* MHD copies the buffer, so a secret body can be wiped right after. */
	r = MHD_create_response_from_buffer(len, body ? body : (char *)"", MHD_RESPMEM_MUST_COPY);
	if (secret)
		broker_secret_free(body);
	else
		free(body);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (no_store) {
		MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
		MHD_add_response_header(r, MHD_HTTP_HEADER_PRAGMA, "no-cache");
	}
	if (retry_after > 0) {
		char ra[16];

		snprintf(ra, sizeof(ra), "%d", retry_after);
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (close || server_closing(c))
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(c, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *type, char *body, bool secret,
			     bool no_store, int retry_after, const char *allow)
{
	return reply_ex(c, status, type, body, secret, no_store, retry_after, allow, false);
}

static enum MHD_Result reply_error_ex(struct MHD_Connection *c, int status, const char *error, const char *desc,
				      const char *allow, bool close)
{
	char id[23];

	if (broker_random_id(id) != BROKER_OK)
		snprintf(id, sizeof(id), "unavailable");
	return reply_ex(c, status, "application/json", exchange_error_json(error, desc, id), false, true, 0, allow,
			close);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *error, const char *desc,
				   const char *allow)
{
	return reply_error_ex(c, status, error, desc, allow, false);
}

/* ---- request framing ----
 * libmicrohttpd 0.9.75 takes the first of several Content-Length headers,
 * serves a body framed by both Transfer-Encoding and Content-Length, keeps
 * "Name : value" headers under a name with a space, and waits forever on a
 * transfer coding it does not know. Behind a proxy that frames the same
 * bytes differently, each is a way to smuggle a request (RFC 9112 §6.1,
 * §6.3, §5.1), so such a request is refused before its body is read and
 * the connection is closed after the answer. */
struct framing {
	unsigned content_length, transfer_encoding, content_type, host;
	bool cl_differ, cl_bad, te_unknown, bad_name;
	const char *cl;
};

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct framing *f = cls;

	(void)kind;
	if (!key || !value)
		return MHD_YES;
	if (strpbrk(key, " \t"))
		f->bad_name = true;
	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (!*value || strspn(value, "0123456789") != strlen(value))
			f->cl_bad = true;
		if (f->content_length++ && strcmp(f->cl, value) != 0)
			f->cl_differ = true;
		f->cl = value;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->transfer_encoding++;
		if (strcasecmp(value, "chunked") != 0)
			f->te_unknown = true;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) == 0) {
		f->content_type++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->host++;
	}
	return MHD_YES;
}

/* NULL, or what is wrong; *status is the answer's code. */
static const char *framing_problem(struct MHD_Connection *c, const char *version, int *status)
{
	struct framing f = {0};

	MHD_get_connection_values(c, MHD_HEADER_KIND, scan_header, &f);
	*status = 400;
	if (f.bad_name)
		return "header name with a space or tab";
	if (f.cl_bad)
		return "malformed Content-Length";
	if (f.cl_differ)
		return "conflicting Content-Length headers";
	if (f.transfer_encoding && f.content_length)
		return "both Transfer-Encoding and Content-Length";
	if (f.transfer_encoding > 1 || f.te_unknown) {
		*status = 501;
		return "transfer coding not supported (only chunked)";
	}
	if (f.content_type > 1)
		return "more than one Content-Type header";
	if (f.host > 1 || (f.host == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0))
		return "HTTP/1.1 needs exactly one Host header";
	return NULL;
}

/* libmicrohttpd decodes %HH in the path and query before routing, so
 * "/v1/token%00anything" reached the token endpoint as "/v1/token". Every
 * escape but %00 is decoded as before; %00 stays as it is, and such a path
 * names nothing. */
static size_t unescape_keep_nul(void *cls, struct MHD_Connection *c, char *s)
{
	char *w = s;

	(void)cls;
	(void)c;
	for (const char *r = s; *r; r++) {
		int hi, lo;

		if (r[0] == '%' && (hi = broker_hex_value((unsigned char)r[1])) >= 0 &&
		    (lo = broker_hex_value((unsigned char)r[2])) >= 0 && (hi | lo) != 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

/* An absolute-form target ("http://host/v1/token", RFC 9112 §3.2.2) is
 * served as its path. */
static const char *origin_path(const char *url)
{
	const char *p;

	if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
		return url;
	p = strchr(strstr(url, "://") + 3, '/');
	return p ? p : "/";
}

static void remote_text(struct MHD_Connection *c, char *out, size_t len)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;

	snprintf(out, len, "unknown");
	if (!sa)
		return;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

static size_t current_max_body(struct broker_state *st)
{
	struct broker_snapshot *s = state_acquire(st);
	size_t max = snapshot_config(s)->max_body;

	snapshot_unref(s);
	return max ? max : 16384;
}

/* The audit thread: the exchange's result is in r->result. */
static void on_exchange_done(void *arg)
{
	struct request *r = arg;
	struct broker_server *srv = r->srv;
	unsigned old;

	/* Counted before the flag the worker waits for, so server_stop, which
	 * waits for this after in_flight reached 0, cannot stop the daemon while
	 * MHD_resume_connection is still signalling it. */
	atomic_fetch_add(&srv->resuming, 1);
	old = atomic_fetch_or(&r->ex, EX_DONE);
	if (old & EX_ORPHAN)
		request_free(r);
	else if (old & EX_SUSPENDED)
		MHD_resume_connection(r->conn);
	atomic_fetch_sub(&srv->resuming, 1);
}

static enum MHD_Result answer_exchange(struct MHD_Connection *c, struct exchange_result *res)
{
	enum MHD_Result ret = reply(c, res->status, "application/json", res->body, res->status == 200, true,
				    res->retry_after, NULL);

	res->body = NULL;
	exchange_result_clear(res);
	return ret;
}

static enum MHD_Result serve_exchange(struct broker_server *srv, struct MHD_Connection *c, struct request *r)
{
	char remote[INET6_ADDRSTRLEN + 1];
	unsigned old;

	if (atomic_load(&r->ex) & EX_DONE) {
		/* resumed: finish here, on the thread that began it */
		exchange_finish(r->pending);
		r->pending = NULL;
		return answer_exchange(c, &r->result);
	}
	remote_text(c, remote, sizeof(remote));
	if (r->too_big && (r->answered || atomic_load(&srv->closing))) {
		/* Answered from the headers (Content-Length), before the body:
		 * libmicrohttpd cannot park a connection there. Rare, and the
		 * connection closes after it. */
		exchange_reject_oversize(srv->st, remote, &r->result);
		return answer_exchange(c, &r->result);
	}
	if (atomic_load(&srv->closing)) {
		/* Stopping: answer on this thread instead of parking (in_flight
		 * was raised before this load, so server_stop waits for us). */
		exchange_handle(srv->st, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
				r->body.data ? r->body.data : "", r->body.len, remote, &r->result);
		atomic_store(&r->ex, EX_STARTED | EX_DONE);
		return answer_exchange(c, &r->result);
	}
	r->conn = c;
	r->srv = srv;
	atomic_store(&r->ex, EX_STARTED);
	if (r->too_big)
		r->pending = exchange_start_oversize(srv->st, remote, &r->result, on_exchange_done, r);
	else
		r->pending = exchange_start(srv->st,
					    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
					    r->body.data ? r->body.data : "", r->body.len, remote, &r->result,
					    on_exchange_done, r);
	if (!r->pending) {
		atomic_fetch_or(&r->ex, EX_DONE);
		return answer_exchange(c, &r->result);
	}
	/* Serve other connections while the audit record becomes durable;
	 * libmicrohttpd calls us again for this one once it is resumed. */
	MHD_suspend_connection(c);
	old = atomic_fetch_or(&r->ex, EX_SUSPENDED);
	if (old & EX_DONE)
		MHD_resume_connection(c);
	return MHD_YES;
}

static enum MHD_Result serve_get(struct broker_server *srv, struct MHD_Connection *c, const char *url)
{
	struct broker_snapshot *s;
	char *body = NULL;
	bool ready;

	if (strcmp(url, "/healthz") == 0)
		return reply(c, 200, "application/json", strdup("{\"status\":\"ok\"}"), false, true, 0, NULL);
	if (strcmp(url, "/readyz") == 0) {
		/* The body is the JSON list of what is missing: [] once ready. */
		body = state_readiness(srv->st, &ready);
		return reply(c, ready ? 200 : 503, "application/json", body, false, true, 0, NULL);
	}
	if (strcmp(url, "/metrics") == 0)
		return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", state_metrics_render(srv->st), false,
			     false, 0, NULL);
	s = state_acquire(srv->st);
	if (strcmp(url, "/.well-known/openid-configuration") == 0)
		body = strdup(snapshot_discovery(s));
	else
		body = strdup(snapshot_jwks(s));
	snapshot_unref(s);
	return reply(c, 200, "application/json", body, false, false, 0, NULL);
}

static bool is_get_route(const char *url)
{
	static const char *const routes[] = {"/healthz", "/readyz", "/metrics", "/.well-known/openid-configuration",
					     "/.well-known/jwks.json"};

	for (size_t i = 0; i < BROKER_ARRAY_SIZE(routes); i++)
		if (strcmp(url, routes[i]) == 0)
			return true;
	return false;
}

static enum MHD_Result route(struct broker_server *srv, struct MHD_Connection *c, const char *url,
			     const char *method, struct request *r)
{
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	if (srv->dev && strncmp(url, "/dev/", 5) == 0) {
		int status = 404;
		char *body = NULL;
		const char *type = "application/json";

		if (devissuer_handle(srv->dev, method, url, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "shape"),
				     r->body.data ? r->body.data : "", r->body.len, &status, &body, &type))
			return reply(c, status, type, body, false, true, 0, NULL);
	}
	if (strcmp(url, "/v1/token") == 0) {
		if (strcmp(method, "POST") != 0)
			return reply_error(c, 405, "invalid_request", "use POST", "POST");
		return serve_exchange(srv, c, r);
	}
	if (is_get_route(url)) {
		if (!get)
			return reply_error(c, 405, "invalid_request", "use GET", "GET, HEAD");
		return serve_get(srv, c, url);
	}
	return reply_error(c, 404, "invalid_request", "unknown path", NULL);
}

static void conn_mark(struct broker_server *srv, struct MHD_Connection *c, bool in_request)
{
	struct conn *k = conn_of(c);

	if (!k)
		return;
	pthread_mutex_lock(&srv->conns_mu);
	k->in_request = in_request;
	if (!in_request)
		k->waiting_since_us = broker_mono_us();
	pthread_mutex_unlock(&srv->conns_mu);
}

/* A slot is taken by the acceptor before accept() (acceptor_main) and given
 * back when libmicrohttpd closes the connection or refuses it. (A connection
 * libmicrohttpd drops for want of memory before announcing it keeps its
 * slot: a leak only under memory exhaustion.) */
static void slot_release_locked(struct broker_server *srv)
{
	if (srv->nconns-- == srv->max_connections)
		pthread_cond_signal(&srv->slot_cv);
}

static void slot_release(struct broker_server *srv)
{
	pthread_mutex_lock(&srv->conns_mu);
	slot_release_locked(srv);
	pthread_mutex_unlock(&srv->conns_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct broker_server *srv = cls;
	struct conn *k = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

		k = calloc(1, sizeof(*k));
		if (!k || !ci) {
			free(k);
			return; /* untracked: bounded by the idle timeout only */
		}
		k->fd = ci->connect_fd;
		k->srv = srv;
		k->waiting_since_us = broker_mono_us();
		pthread_mutex_lock(&srv->conns_mu);
		k->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = k;
		srv->conns = k;
		pthread_mutex_unlock(&srv->conns_mu);
		*socket_context = k;
		return;
	}
	/* Closed: unlinked before libmicrohttpd closes the socket, so the
	 * reaper never shuts down a descriptor that was reused. */
	if (!k) {
		slot_release(srv);
		return;
	}
	pthread_mutex_lock(&srv->conns_mu);
	if (k->prev)
		k->prev->next = k->next;
	else
		srv->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	slot_release_locked(srv);
	pthread_mutex_unlock(&srv->conns_mu);
	free(k);
	*socket_context = NULL;
}

static void *reaper_main(void *arg)
{
	struct broker_server *srv = arg;
	struct timespec ts;

	pthread_mutex_lock(&srv->conns_mu);
	while (!srv->stopping) {
		int64_t now = broker_mono_us();

		for (struct conn *k = srv->conns; k; k = k->next) {
			if (k->in_request || k->cut || now - k->waiting_since_us <= srv->header_limit_us)
				continue;
			/* libmicrohttpd sees end of stream and closes it itself. */
			shutdown(k->fd, SHUT_RDWR);
			k->cut = true;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&srv->reaper_cv, &srv->conns_mu, &ts);
	}
	pthread_mutex_unlock(&srv->conns_mu);
	return NULL;
}

static bool reaper_init(struct broker_server *srv)
{
	pthread_condattr_t ca;
	bool ok;

	if (pthread_condattr_init(&ca) != 0)
		return false;
	ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&srv->reaper_cv, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (ok && pthread_cond_init(&srv->slot_cv, NULL) != 0) {
		pthread_cond_destroy(&srv->reaper_cv);
		ok = false;
	}
	if (ok && pthread_mutex_init(&srv->conns_mu, NULL) != 0) {
		pthread_cond_destroy(&srv->reaper_cv);
		pthread_cond_destroy(&srv->slot_cv);
		ok = false;
	}
	return ok;
}

/* After MHD_stop_daemon: every connection has been closed and unlinked. */
static void reaper_destroy(struct broker_server *srv)
{
	pthread_mutex_lock(&srv->conns_mu);
	srv->stopping = true;
	pthread_cond_signal(&srv->reaper_cv);
	pthread_mutex_unlock(&srv->conns_mu);
	if (srv->reaper_started)
		pthread_join(srv->reaper, NULL);
	pthread_mutex_destroy(&srv->conns_mu);
	pthread_cond_destroy(&srv->reaper_cv);
	pthread_cond_destroy(&srv->slot_cv);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct broker_server *srv = cls;
	struct request *r = *con_cls;

	url = origin_path(url);
	if (!r) {
		const char *cl, *bad;
		int status;

		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		*con_cls = r;
		atomic_fetch_add(&srv->in_flight, 1);
		conn_mark(srv, c, true);
		r->started_us = broker_mono_us();
		if ((bad = framing_problem(c, version, &status))) {
			r->answered = true;
			r->ignore_body = true;
			return reply_error_ex(c, status, "invalid_request", bad, NULL, true);
		}
		r->body.max = current_max_body(srv->st);
		r->is_exchange = strcmp(url, "/v1/token") == 0 && strcmp(method, "POST") == 0;
		if (!r->is_exchange && !(srv->dev && strncmp(url, "/dev/", 5) == 0))
			r->ignore_body = true; /* no other route takes a body */
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && r->is_exchange && strtoull(cl, NULL, 10) > r->body.max) {
			/* Answer before reading a byte of it; MHD closes the connection. */
			r->too_big = true;
			r->answered = true;
			return serve_exchange(srv, c, r);
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (srv->request_deadline &&
		    broker_mono_us() - r->started_us > (int64_t)srv->request_deadline * 1000000)
			return MHD_NO; /* absolute deadline: a trickling client is cut off */
		if (r->ignore_body) {
			/* Routes other than /v1/token take no body: drain (bounded) and ignore it. */
			r->discarded += n;
			return r->discarded > DRAIN_MAX ? MHD_NO : MHD_YES;
		}
		if (r->too_big) {
			/* libmicrohttpd 0.9.75 cannot answer mid-body: drain a bounded
			 * amount, then answer 413 at the end; past that, hang up. */
			r->discarded += n;
			return r->discarded > DRAIN_MAX ? MHD_NO : MHD_YES;
		}
		switch (broker_buf_append(&r->body, upload_data, n, 0)) {
		case BROKER_OK:
			return MHD_YES;
		case BROKER_ERR_TOOBIG:
			r->too_big = true;
			r->discarded = n;
			broker_buf_wipe(&r->body);
			return MHD_YES;
		default:
			return MHD_NO;
		}
	}
	if (r->answered)
		return MHD_YES; /* answered before the body was read */
	if (r->too_big) {
		if (r->is_exchange)
			return serve_exchange(srv, c, r);
		return reply_error(c, 413, "invalid_request", "request body too large", NULL);
	}
	return route(srv, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	struct broker_server *srv = cls;
	struct request *r = *con_cls;

	if (!r)
		return;
	*con_cls = NULL;
	atomic_fetch_sub(&srv->in_flight, 1);
	conn_mark(srv, c, false);
	/* Suspended connections do not end, so this is belt and braces: an
	 * exchange still waiting for its audit record frees r itself. */
	if ((atomic_fetch_or(&r->ex, EX_ORPHAN) & (EX_STARTED | EX_DONE)) == EX_STARTED)
		return;
	request_free(r);
}

static uint16_t sockaddr_port(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					       : ((const struct sockaddr_in *)ss)->sin_port);
}

/* A TCP socket bound to ss (SO_REUSEADDR, v6 only), or -1 with errno. */
static int bound_socket(const struct sockaddr_storage *ss, socklen_t sl, bool reuseport)
{
	int one = 1, err, fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, sl) == 0)
		return fd;
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* Is the address free for a listener that is not a reload's replacement?
 * Probed with a plain bind (SO_REUSEADDR only, as a restart after a crash
 * must not wait out TIME_WAIT): it fails with EADDRINUSE while anyone listens
 * there, SO_REUSEPORT or not. Port 0 picks a free port anyway. A socket that
 * cannot even be made says nothing: the real bind reports what is wrong. */
static bool address_free(const struct sockaddr_storage *ss, socklen_t sl)
{
	int fd;

	if (sockaddr_port(ss) == 0)
		return true;
	fd = bound_socket(ss, sl, false);
	if (fd < 0)
		return errno != EADDRINUSE;
	close(fd);
	return true;
}

/* SO_REUSEPORT, so that a reload's replacement can listen beside us. */
static int listen_open(const struct sockaddr_storage *ss, socklen_t sl, const char **ret_reason)
{
	int err, fd = bound_socket(ss, sl, true);

	if (fd >= 0 && listen(fd, SOMAXCONN) == 0)
		return fd;
	err = errno;
	if (fd >= 0)
		close(fd);
	*ret_reason = err == EADDRINUSE			   ? "address in use"
		      : err == EACCES			   ? "permission denied (a port below 1024 needs privilege)"
		      : err == EADDRNOTAVAIL		   ? "address not available on this machine"
		      : err == EMFILE || err == ENFILE ? "cannot create a socket (out of file descriptors)"
							   : "cannot listen there";
	return -1;
}

/* Accepts for libmicrohttpd, which then serves the connection on one of its
 * workers (MHD_add_connection). libmicrohttpd's own accept would need
 * MHD_quiesce_daemon to stop it, and in 0.9.75 that races the epoll workers
 * over the listening socket and panics; here server_stop just shuts the
 * socket down, which wakes accept() with EINVAL. */
static void *acceptor_main(void *arg)
{
	struct broker_server *srv = arg;

	while (!atomic_load(&srv->accept_stop)) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int fd, err;

		/* At max_connections new clients wait in the listen backlog:
		 * the slot is taken before accept(), which blocks. */
		pthread_mutex_lock(&srv->conns_mu);
		while (srv->nconns >= srv->max_connections && !atomic_load(&srv->accept_stop))
			pthread_cond_wait(&srv->slot_cv, &srv->conns_mu);
		srv->nconns++;
		pthread_mutex_unlock(&srv->conns_mu);
		fd = accept4(srv->listen_fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		err = errno;
		if (fd >= 0) {
			/* Closes the socket itself when it cannot take it (the
			 * per-IP limit); a connection it takes is given back in
			 * on_connection. */
			if (MHD_add_connection(srv->daemon, fd, (const struct sockaddr *)&peer, pl) != MHD_YES)
				slot_release(srv);
			continue;
		}
		slot_release(srv);
		if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
			/* Out of descriptors or memory: the backlog holds the
			 * client while connections end. */
			struct timespec ts = {0, 10 * 1000 * 1000};

			nanosleep(&ts, NULL);
		}
		/* EINTR, ECONNABORTED and the like: the next one. */
	}
	return NULL;
}

static void acceptor_stop(struct broker_server *srv)
{
	atomic_store(&srv->accept_stop, true);
	if (srv->acceptor_started) {
		shutdown(srv->listen_fd, SHUT_RDWR);
		pthread_mutex_lock(&srv->conns_mu);
		pthread_cond_signal(&srv->slot_cv);
		pthread_mutex_unlock(&srv->conns_mu);
		pthread_join(srv->acceptor, NULL);
		srv->acceptor_started = false;
	}
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	srv->listen_fd = -1;
}

static void server_free(struct broker_server *srv)
{
	acceptor_stop(srv);
	if (srv->daemon)
		MHD_stop_daemon(srv->daemon);
	reaper_destroy(srv);
	free(srv);
}

enum broker_err server_start(struct broker_state *st, const struct server_options *opt, struct broker_server **ret,
			     const char **ret_reason)
{
	struct broker_server *srv = calloc(1, sizeof(*srv));
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	/* epoll: a worker serves its ready connections in the order they
	 * became ready, where poll() goes round them in a fixed order; the tail
	 * latency under load is a third lower (docs/benchmarks.md). */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME |
			 MHD_USE_NO_LISTEN_SOCKET;
	/* As config's default. */
	unsigned threads = opt->threads ? opt->threads : broker_usable_cpus() * 4;
	struct sockaddr_storage bound;
	socklen_t bl = sizeof(bound);

	if (!srv)
		return BROKER_ERR_NOMEM;
	srv->listen_fd = -1;
	if (broker_parse_listen(opt->listen, &ss, &sl, ret_reason) != BROKER_OK) {
		free(srv);
		return BROKER_ERR_INVALID;
	}
	if (!opt->beside_old && !address_free(&ss, sl)) {
		*ret_reason = "address in use";
		free(srv);
		return BROKER_ERR_IO;
	}
	if (opt->tls_cert_pem)
		flags |= MHD_USE_TLS;
	srv->st = st;
	srv->dev = opt->dev;
	srv->request_deadline = opt->request_deadline;
	srv->max_connections = opt->max_connections ? opt->max_connections : 1024u;
	srv->header_limit_us =
		((int64_t)(opt->connection_timeout ? opt->connection_timeout : 10u) + opt->request_deadline) * 1000000;
	if (!reaper_init(srv)) {
		*ret_reason = "out of memory";
		free(srv);
		return BROKER_ERR_NOMEM;
	}
	srv->listen_fd = listen_open(&ss, sl, ret_reason);
	if (srv->listen_fd < 0) {
		server_free(srv);
		return BROKER_ERR_IO;
	}
	/* max_connections is kept by the acceptor; libmicrohttpd's own limit
	 * must never refuse a connection handed over. It splits its limit
	 * over the workers, and MHD_add_connection may queue several new
	 * connections on one worker before it counts them. A worker that then
	 * refuses one in 0.9.75 returns with its cleanup mutex held and
	 * deadlocks (fixed upstream in 1.0.0). So every worker gets room for
	 * max_connections + 1: the acceptor never lets more than
	 * max_connections exist at once, and a worker counts its closed
	 * connections down on its own thread before it takes new ones.
	 *
	 * The connection pool holds the request line, the headers and the read
	 * buffer; bodies go to our own buffer (record_body). libmicrohttpd zeroes
	 * the pool between requests, so its size is paid on every request: 64 KiB
	 * cost 65,000 instructions per exchange and evicted L1. 16 KiB still takes
	 * headers of about 14 KB before libmicrohttpd answers 431. */
	srv->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
		threads * (srv->max_connections + 1u), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		opt->per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT,
		opt->connection_timeout ? opt->connection_timeout : 10u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		CONNECTION_POOL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,
		on_connection, srv, MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, NULL,
		opt->tls_cert_pem ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, opt->tls_cert_pem,
		MHD_OPTION_HTTPS_MEM_KEY, opt->tls_key_pem, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES, MHD_OPTION_END);
	if (!srv->daemon) {
		*ret_reason = opt->tls_cert_pem ? "could not start the server (bad TLS files?)" : "could not start the server";
		server_free(srv);
		return BROKER_ERR_IO;
	}
	if (pthread_create(&srv->acceptor, NULL, acceptor_main, srv) != 0) {
		*ret_reason = "could not start the accepting thread";
		server_free(srv);
		return BROKER_ERR_NOMEM;
	}
	srv->acceptor_started = true;
	/* No deadline configured, no cut: headers are then bounded by the
	 * idle timeout alone, as before. */
	if (opt->request_deadline && pthread_create(&srv->reaper, NULL, reaper_main, srv) == 0)
		srv->reaper_started = true;
	if (getsockname(srv->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
		srv->port = sockaddr_port(&bound);
	*ret = srv;
	return BROKER_OK;
}

uint16_t server_port(const struct broker_server *srv)
{
	return srv->port;
}

void server_stop(struct broker_server *srv)
{
	if (!srv)
		return;
	atomic_store(&srv->closing, true);
	/* Closed, not only no longer accepted from: left open, the socket
	 * would keep taking connections (SO_REUSEPORT) that no one accepts
	 * while a replacement listener serves the same port. */
	acceptor_stop(srv);
	/* MHD_stop_daemon closes every connection, answered or not: wait until
	 * the requests in flight have been answered (the caller bounds the
	 * wait), then stop. Idle keep-alive connections are simply closed. */
	while (atomic_load(&srv->in_flight) > 0)
		usleep(5000);
	while (atomic_load(&srv->resuming) > 0)
		usleep(1000);
	server_free(srv);
}
