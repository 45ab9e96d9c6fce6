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

/* Stop accepting new requests; close idle connections; n in flight. */
void http_drain(void);
int http_open_conns(void);
int http_busy_conns(void);

uint64_t http_now_ns(void);

#endif
