/*
 * http.h - the HTTP/1.1 server side of a worker.
 *
 * A small, strict HTTP/1.1 layer on libevent bufferevents instead of
 * evhttp: evhttp buffers whole bodies, has no header deadline and no
 * connection cap, and accepts conflicting Content-Length headers
 * (decisions.md 12).  This layer parses the request head itself, enforces
 * the limits of decisions.md 5, answers one request at a time per
 * connection (pipelined requests wait in the input buffer, responses
 * leave in order) and hands complete requests to the worker's router.
 *
 * Handlers are asynchronous: the router may return before answering; it
 * must eventually call http_respond() exactly once.  If the client goes
 * away meanwhile the connection stays allocated (closed) until that call.
 */
#ifndef EVENTODB_HTTP_H
#define EVENTODB_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct event_base;
struct http_conn;

enum http_method { HTTP_OTHER = 0, HTTP_GET, HTTP_HEAD, HTTP_POST };

struct http_req {
	struct http_conn *conn;
	enum http_method method;
	const char	*method_str;
	const char	*path;		/* NUL-terminated, without the query */
	const char	*query;		/* after '?', or NULL */
	const char	*authorization;	/* header value or NULL */
	struct evbuffer	*body;		/* complete body */
	uint64_t	 t_start;	/* monotonic ns when the head was complete */
	uint64_t	 id;		/* request id, for logs */
	int		 keepalive;
};

struct http_limits {
	long	max_body;
	long	max_header;
	int	header_timeout;
	int	body_timeout;
	int	idle_timeout;
	int	max_conns;
};

typedef void (*http_router_fn)(struct http_req *req);

/* Set up the layer for this worker: limits and the router. */
void http_init(struct event_base *base, const struct http_limits *lim,
    http_router_fn router, const char *server_header);

/* Take over an accepted socket. */
void http_accept(int fd);

/* Answer the request: status and a JSON body (moved out of `body`). */
void http_respond(struct http_req *req, int status, struct evbuffer *body);
void http_respond_str(struct http_req *req, int status, const char *json);
/* The same with another Content-Type (profiles, text). */
void http_respond_type(struct http_req *req, int status, const char *ctype, struct evbuffer *body);
/* 1 if the client connected over loopback (127.0.0.0/8 or ::1). */
int http_peer_loopback(const struct http_req *req);
/* Answer with a JSON error {"error":{"code":..,"message":..}} + "\n". */
void http_respond_error(struct http_req *req, int status, const char *code,
    const char *message);

/*
 * Query parameter `name`, percent-decoded into buf (NUL-terminated).
 * Returns the length, or -1 if absent (or does not fit).
 */
long http_query_get(const struct http_req *req, const char *name, char *buf, size_t buflen);

/* Per-connection application context (e.g. the RPC state), freed with fn. */
void *http_app_ctx(struct http_req *req);
void http_set_app_ctx(struct http_req *req, void *ctx, void (*free_fn)(void *));

/*
 * Streaming (GET /subscribe, POST /import).
 *
 * A request for which the stream filter returns 1 is routed as soon as its
 * head is complete, before its body is read, and without the max_body
 * limit: the handler pulls the body with http_body_start().  The layer
 * buffers at most about HTTP_SBODY_MAX bytes of it in req->body; the
 * callback runs whenever bytes were added (and once more with end = 1),
 * and must remove what it consumed.  While paused, nothing is read from
 * the socket (TCP pushes back on the client).
 *
 * A streamed response (http_stream_begin) is sent with chunked transfer
 * coding (HTTP/1.0: until close) and lasts until http_stream_end().
 * http_stream_begin releases the copy of the request head: req->path,
 * query and authorization are invalid afterwards.
 *
 * A handler that sets a close callback is told when the client goes away
 * (EOF or a socket error, also while it is still authenticating); the
 * request is finished then, and req must not be used after the callback
 * returns.  Answering before the whole streamed body was read makes the
 * layer skip the rest of the body (or close the connection).
 */
#define HTTP_SBODY_MAX	(2 * 1024 * 1024)

void http_set_stream_filter(int (*want)(const struct http_req *req));
void http_set_close_cb(struct http_req *req, void (*cb)(void *arg), void *arg);
/* Called when everything written so far on a streamed response was sent. */
void http_set_drain_cb(struct http_req *req, void (*cb)(void *arg), void *arg);
void http_body_start(struct http_req *req,
    void (*cb)(void *arg, struct evbuffer *body, int end), void *arg);
void http_body_pause(struct http_req *req, int pause);
void http_stream_begin(struct http_req *req, int status, const char *ctype,
    const char *headers);
void http_stream_write(struct http_req *req, const void *data, size_t len);
void http_stream_write_buf(struct http_req *req, struct evbuffer *buf);
size_t http_stream_pending(const struct http_req *req);
void http_stream_end(struct http_req *req);

/* Stop accepting new requests; close idle connections; n in flight. */
void http_drain(void);
int http_open_conns(void);
int http_busy_conns(void);
/* Connections with a request in flight or partly received, or output not yet sent. */
int http_pending_conns(void);

uint64_t http_now_ns(void);

/*
 * Scoreboard: the worker's connections by state, counted by walking them
 * (called once a heartbeat, not per request).  handling: a handler owns
 * the request (including a streamed response); reading: receiving a
 * head or body; writing: response bytes not yet sent; idle: keep-alive,
 * waiting.  oldest_ns: age of the oldest request in a handler, streamed
 * responses excepted.
 */
struct http_scoreboard {
	int		 reading, handling, writing, idle;
	uint64_t	 oldest_ns;
};
void http_scoreboard(struct http_scoreboard *sb);

#endif
