/*
 * http.c - strict HTTP/1.1 connections on libevent bufferevents.
 *
 * Life of a connection:
 *
 *   IDLE --first byte--> HEAD --blank line--> BODY or CHUNKED --> HANDLING
 *     ^                                                              |
 *     +------------------- http_respond() --------------------------+
 *
 * One timer per connection enforces the deadlines of decisions.md 5: the
 * keep-alive idle time while IDLE, the header deadline (from the first
 * byte of the head, so a client dripping header lines is cut off) while
 * HEAD, the body deadline while reading a body.  While HANDLING the timer
 * is off: the application owns the request until it answers.
 *
 * Rules that close the connection after a 400: a malformed request line
 * or header, obsolete line folding, whitespace before a colon, two
 * Content-Length headers, Content-Length together with Transfer-Encoding,
 * a Transfer-Encoding other than "chunked", a malformed chunk.  These are
 * the request-smuggling vectors; answering and closing leaves no doubt
 * about where the next request would start.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "shm.h"

#define CONN_MAGIC	0x48545450u	/* "HTTP" */
#define HANDLING_HIWAT	(64 * 1024)
#define SBODY_INPUT_HIWAT (256 * 1024)	/* socket input while a body is streamed */
#define STREAM_INPUT_HIWAT 4096		/* streamed response: input is discarded */
#define DISCARD_MAX	(64L * 1024 * 1024)	/* body bytes skipped after an early answer */
#define HTTP_FLAT_BODY_MIN (64 * 1024)	/* bodies from this size are read into one block */
#define OUT_HIWAT	(256 * 1024)	/* unsent response bytes that stop the next request */
#define STREAM_NOTSENT_LOWAT (16 * 1024)	/* streamed response: unsent bytes the kernel takes */

enum conn_state { ST_IDLE, ST_HEAD, ST_BODY, ST_CHUNKED, ST_HANDLING, ST_CLOSING };

struct http_conn {
	unsigned	 magic;
	enum conn_state	 state;
	struct bufferevent *bev;	/* NULL once the socket is closed */
	struct event	*timer;
	struct http_req	 req;
	char		*head;		/* copy of the header block, reused */
	size_t		 headcap;
	long		 body_left;	/* BODY: bytes still to read */
	long		 chunk_left;	/* CHUNKED: bytes left in this chunk, -1 = size line next, -2 = trailers */
	long		 body_total;
	unsigned	 close_after:1;	/* close once the response is written */
	unsigned	 in_flight:1;	/* the application owns req */
	unsigned	 http10:1;
	unsigned	 expect_continue:1;
	unsigned	 sbody:1;	/* body streamed to the handler */
	unsigned	 sbody_started:1;	/* handler called http_body_start */
	unsigned	 sbody_paused:1;
	unsigned	 sbody_end:1;	/* the whole body was received */
	unsigned	 sbody_end_told:1;
	unsigned	 sbody_kick:1;	/* call the body callback even without new bytes */
	unsigned	 discard:1;	/* answered early: skipping the rest of the body */
	unsigned	 body_flat:1;	/* BODY: into one reserved block (body_take) */
	unsigned	 sresp:1;	/* streamed response under way */
	unsigned	 chunked_out:1;
	unsigned	 abort:1;	/* close from the timer, not from inside the parser */
	unsigned	 out_wait:1;	/* next request waits for the output to drain */
	long		 discarded;
	void		(*body_cb)(void *arg, struct evbuffer *body, int end);
	void		*body_arg;
	void		(*close_cb)(void *arg);
	void		*close_arg;
	void		(*drain_cb)(void *arg);	/* output fully sent */
	void		*drain_arg;
	void		*app;
	void		(*app_free)(void *);
	struct http_conn *next, *prev;	/* all connections of this worker */
};

static struct event_base *http_base;
static struct http_limits http_lim;
static http_router_fn http_router;
static int (*http_want_stream)(const struct http_req *req);
static char http_server_hdr[64];
static struct http_conn *conns;
static int nconns, nbusy, draining;
static uint64_t next_req_id;

#define DRAIN_IDLE_S	1	/* idle time left to a connection once draining */

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void conn_process(struct http_conn *c);
static int hexval(int ch);

uint64_t
http_now_ns(void)
{
	return evshm_mono_ns();
}

static const char *
status_text(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 429: return "Too Many Requests";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

void
http_init(struct event_base *base, const struct http_limits *lim,
    http_router_fn router, const char *server_header)
{
	http_base = base;
	http_lim = *lim;
	http_router = router;
	snprintf(http_server_hdr, sizeof(http_server_hdr), "%s", server_header);
}

int
http_open_conns(void)
{
	return nconns;
}

int
http_busy_conns(void)
{
	return nbusy;
}

int
http_pending_conns(void)
{
	int n = 0;

	for (const struct http_conn *c = conns; c; c = c->next)
		if (c->in_flight || c->state == ST_HEAD || c->state == ST_BODY ||
		    c->state == ST_CHUNKED ||
		    (c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0))
			n++;	/* a request, or a response not yet flushed */
	return n;
}

static void
timer_set(struct http_conn *c, int secs)
{
	struct timeval tv = { secs, 0 };
	if (secs <= 0)
		evtimer_del(c->timer);
	else
		evtimer_add(c->timer, &tv);
}

static void
conn_free(struct http_conn *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	event_free(c->timer);
	if (c->req.body)
		evbuffer_free(c->req.body);
	if (c->app && c->app_free)
		c->app_free(c->app);
	free(c->head);
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	SHM_GAUGE_ADD(connections_open, -1);
	c->magic = 0;
	free(c);
}

/*
 * Lingering close.  Closing a socket whose receive buffer still holds
 * bytes makes the kernel send RST, and an RST can destroy the response we
 * just sent before the client reads it: exactly when we answer early
 * (413, an /import error, a 400 before the body) while the client is
 * still sending.  So a closing socket is half-closed first, and what the
 * client still sends is read and dropped until it closes too, for at most
 * LINGER_S seconds and LINGER_MAX bytes.
 */
#define LINGER_S	2
#define LINGER_MAX	(1024L * 1024)

struct linger_sock {
	struct event	*ev;
	long		 left;
};

static void
linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct linger_sock *l = arg;
	char buf[16384];
	ssize_t n = 0;

	if (what & EV_READ) {
		while ((n = recv(fd, buf, sizeof(buf), 0)) > 0 && (l->left -= n) > 0)
			;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && l->left > 0)
			return;
	}
	/* EOF, error, enough, or LINGER_S passed. */
	event_free(l->ev);
	close(fd);
	free(l);
}

static void
linger_close(struct bufferevent *bev)
{
	evutil_socket_t fd = bufferevent_getfd(bev);
	struct linger_sock *l;
	struct timeval tv = { LINGER_S, 0 };

	if (fd < 0 || !(l = calloc(1, sizeof(*l)))) {
		bufferevent_free(bev);
		return;
	}
	bufferevent_setfd(bev, -1);	/* keep the socket past the bufferevent */
	bufferevent_free(bev);
	l->left = LINGER_MAX;
	l->ev = event_new(http_base, fd, EV_READ | EV_PERSIST, linger_cb, l);
	if (!l->ev || shutdown(fd, SHUT_WR) < 0 || event_add(l->ev, &tv) < 0) {
		if (l->ev)
			event_free(l->ev);
		close(fd);
		free(l);
	}
}

/* Close the socket now; free the connection unless a handler owns it. */
static void
conn_close(struct http_conn *c)
{
	c->state = ST_CLOSING;
	if (c->bev) {
		linger_close(c->bev);
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	if (c->in_flight && c->close_cb) {
		/* A streaming handler learns that the client is gone; done. */
		void (*cb)(void *) = c->close_cb;
		c->close_cb = NULL;
		c->body_cb = NULL;
		c->drain_cb = NULL;
		c->in_flight = 0;
		nbusy--;
		cb(c->close_arg);
		conn_free(c);
		return;
	}
	if (!c->in_flight)
		conn_free(c);
}

/* Close later, from the timer: callers are inside the parser or a handler. */
static void
conn_abort(struct http_conn *c)
{
	struct timeval now = { 0, 0 };

	c->abort = 1;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	evtimer_add(c->timer, &now);
}

/* Write a complete response; the body evbuffer is drained. */
/*
 * Scratch buffer of write_response(): a response to a connection with
 * nothing queued is written at once, header and body in one writev, and
 * only what the socket does not take goes to the bufferevent, which then
 * watches for writability.  Queued through the bufferevent, every
 * response switched EPOLLOUT on and off again (two epoll_ctl) and waited
 * a loop turn: 14 % of a worker's CPU in the profile of the default load.
 * Responses that close the connection keep the queued path: the close
 * happens in conn_write_cb once they are flushed.
 */
static struct evbuffer *wdirect;

static void
write_response(struct http_conn *c, int status, const char *ctype,
    struct evbuffer *body, int head_only)
{
	struct evbuffer *out = bufferevent_get_output(c->bev), *dst = out;
	size_t len = body ? evbuffer_get_length(body) : 0;
	int n;

	if (!c->close_after && evbuffer_get_length(out) == 0 &&
	    (wdirect != NULL || (wdirect = evbuffer_new()) != NULL))
		dst = wdirect;
	n = evbuffer_add_printf(dst,
	    "HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
	    status, status_text(status), http_server_hdr, ctype, len,
	    c->close_after ? "Connection: close\r\n" : "");
	SHM_INC_AT(http_responses, shm_status_index(status));
	SHM_ADD(http_sent_bytes, 0, (n > 0 ? (size_t)n : 0) + (head_only ? 0 : len));
	if (body) {
		if (head_only)
			evbuffer_drain(body, len);
		else
			evbuffer_add_buffer(dst, body);
	}
	if (dst == wdirect) {
		/* EAGAIN or an error: the rest goes the usual way, which reports errors */
		(void)evbuffer_write(wdirect, bufferevent_getfd(c->bev));
		if (evbuffer_get_length(wdirect) > 0) {
			SHM_INC(http_write_queued);
			evbuffer_add_buffer(out, wdirect);
		}
	} else
		SHM_INC(http_write_queued);
}

/* Protocol-level error before a request reached the router: answer, close. */
static void
conn_fail(struct http_conn *c, int status, const char *code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();

	SHM_INC_AT(errors, shm_errcode_index(code));
	c->close_after = 1;
	evbuffer_add_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	json_write_cstr(b, msg);
	evbuffer_add(b, "}}\n", 3);
	write_response(c, status, "application/json", b, 0);
	evbuffer_free(b);
	c->state = ST_CLOSING;
	evtimer_del(c->timer);
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
	/* conn_write_cb closes once the output is flushed. */
}

void
http_accept(int fd)
{
	struct http_conn *c;

	evutil_make_socket_nonblocking(fd);
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->magic = CONN_MAGIC;
	c->bev = bufferevent_socket_new(http_base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->timer = evtimer_new(http_base, conn_timer_cb, c);
	if (!c->bev || !c->timer) {
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer)
			event_free(c->timer);
		free(c);
		return;
	}
	c->req.conn = c;
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	nconns++;
	SHM_INC(connections_accepted);
	SHM_GAUGE_ADD(connections_open, 1);

	if (nconns > http_lim.max_conns || draining) {
		static uint64_t last_log_ns;
		static unsigned long unlogged;
		uint64_t now = http_now_ns();

		SHM_INC(connections_refused);
		/* Refuse cleanly: a complete 503 and close.  Log at most once a
		 * second: a connection flood must not become a log flood. */
		unlogged++;
		if (now - last_log_ns >= 1000000000ull || last_log_ns == 0) {
			log_warn("connection refused: %d connections open (max %d); %lu refused "
			    "since the last report", nconns - 1, http_lim.max_conns, unlogged);
			last_log_ns = now;
			unlogged = 0;
		}
		conn_fail(c, 503, "SERVICE_UNAVAILABLE", "Too many connections");
		bufferevent_setcb(c->bev, NULL, conn_write_cb, conn_event_cb, c);
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, (size_t)http_lim.max_header + 1);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->state = ST_IDLE;
	timer_set(c, http_lim.idle_timeout);
}

/*
 * Header block parsing.  `h` is a NUL-terminated private copy; lines end
 * in CRLF or LF.  Returns 0, or an HTTP status after filling *msg.
 */
static int
parse_head(struct http_conn *c, char *h, size_t hlen, long *content_length, int *chunked,
    const char **msg)
{
	struct http_req *r = &c->req;
	char *line = h, *eol, *sp1, *sp2, *target, *q, *hend = h + hlen;
	int have_cl = 0, have_te = 0, conn_close = 0, conn_keep = 0;

	*content_length = 0;
	*chunked = 0;
	c->expect_continue = 0;
	r->authorization = NULL;
	r->query = NULL;

	/* Request line. */
	eol = strchr(line, '\n');
	if (!eol) {
		*msg = "malformed request line";
		return 400;
	}
	if (eol > line && eol[-1] == '\r')
		eol[-1] = '\0';
	*eol = '\0';
	sp1 = strchr(line, ' ');
	if (!sp1 || sp1 == line) {
		*msg = "malformed request line";
		return 400;
	}
	*sp1 = '\0';
	for (char *p = line; *p; p++)
		if (!isupper((unsigned char)*p)) {
			*msg = "malformed request method";
			return 400;
		}
	target = sp1 + 1;
	sp2 = strchr(target, ' ');
	if (!sp2 || target[0] != '/') {
		*msg = "malformed request target";
		return 400;
	}
	*sp2 = '\0';
	for (char *p = target; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			*msg = "malformed request target";
			return 400;
		}
	if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
		c->http10 = 0;
	else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
		c->http10 = 1;
	else if (strncmp(sp2 + 1, "HTTP/", 5) == 0 && !strchr(sp2 + 1, ' ') &&
	    strlen(sp2 + 1) == 8) {
		*msg = "HTTP version not supported";
		return 505;
	} else {
		*msg = "malformed request line";
		return 400;
	}
	r->method_str = line;
	if (strcmp(line, "GET") == 0)
		r->method = HTTP_GET;
	else if (strcmp(line, "POST") == 0)
		r->method = HTTP_POST;
	else if (strcmp(line, "HEAD") == 0)
		r->method = HTTP_HEAD;
	else
		r->method = HTTP_OTHER;
	q = strchr(target, '?');
	if (q) {
		*q = '\0';
		r->query = q + 1;
	}
	r->path = target;

	/*
	 * Header fields.  The head ends with its blank line, so a line without
	 * '\n' (strchr stops at a NUL) or a line starting with a NUL means a
	 * NUL byte inside the head: reject it rather than let it end the head
	 * early and drop the fields after it (Content-Length among them).
	 */
	for (line = eol + 1; line < hend; line = eol + 1) {
		char *colon, *val, *end;

		eol = strchr(line, '\n');
		if (!eol) {
			*msg = "NUL byte in header";
			return 400;
		}
		end = eol;
		if (end > line && end[-1] == '\r')
			end--;
		*end = '\0';
		if (end == line)
			break;	/* blank line: end of head */
		if (*line == ' ' || *line == '\t') {
			*msg = "obsolete header line folding";
			return 400;
		}
		colon = strchr(line, ':');
		if (!colon || colon == line) {
			*msg = "malformed header field";
			return 400;
		}
		for (char *p = line; p < colon; p++)
			if (!isgraph((unsigned char)*p)) {
				*msg = "malformed header field name";
				return 400;
			}
		*colon = '\0';
		val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		while (end > val && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		for (char *p = val; *p; p++)
			if ((unsigned char)*p < 0x20 && *p != '\t') {
				*msg = "malformed header field value";
				return 400;
			}

		if (strcasecmp(line, "content-length") == 0) {
			char *e;
			long v;
			if (have_cl) {
				*msg = "duplicate Content-Length";
				return 400;
			}
			have_cl = 1;
			if (!isdigit((unsigned char)*val)) {
				*msg = "invalid Content-Length";
				return 400;
			}
			errno = 0;
			v = strtol(val, &e, 10);
			if (errno || *e || v < 0) {
				*msg = "invalid Content-Length";
				return 400;
			}
			*content_length = v;
		} else if (strcasecmp(line, "transfer-encoding") == 0) {
			if (have_te || strcasecmp(val, "chunked") != 0) {
				*msg = "unsupported Transfer-Encoding";
				return have_te ? 400 : 501;
			}
			have_te = 1;
			*chunked = 1;
		} else if (strcasecmp(line, "authorization") == 0) {
			r->authorization = val;
		} else if (strcasecmp(line, "expect") == 0) {
			if (strcasecmp(val, "100-continue") != 0) {
				*msg = "unsupported Expect";
				return 417;
			}
			c->expect_continue = 1;
		} else if (strcasecmp(line, "connection") == 0) {
			if (strcasestr(val, "close"))
				conn_close = 1;
			if (strcasestr(val, "keep-alive"))
				conn_keep = 1;
		}
	}
	if (have_cl && have_te) {
		*msg = "Content-Length with Transfer-Encoding";
		return 400;
	}
	if (have_te && c->http10) {
		/* RFC 9112 6.1: the framing of such a message is faulty. */
		*msg = "Transfer-Encoding in an HTTP/1.0 request";
		return 400;
	}
	if (c->http10)
		r->keepalive = conn_keep && !conn_close;
	else
		r->keepalive = !conn_close;
	return 0;
}

/* The request now belongs to the router; input may wait up to hiwat bytes. */
static void
hand_to_router(struct http_conn *c, size_t hiwat)
{
	c->in_flight = 1;
	nbusy++;
	timer_set(c, 0);
	bufferevent_setwatermark(c->bev, EV_READ, 0, hiwat);
	c->req.id = ++next_req_id;
	if (!c->req.keepalive || draining)
		c->close_after = 1;
	http_router(&c->req);
}

static void
dispatch(struct http_conn *c)
{
	c->state = ST_HANDLING;
	/* Pipelined bytes may wait, but not without bound. */
	hand_to_router(c, HANDLING_HIWAT);
}

/* A streamed request goes to the router before its body is read. */
static void
stream_dispatch(struct http_conn *c, long cl, int chunked)
{
	c->sbody = 1;
	c->sbody_started = c->sbody_paused = c->sbody_end = c->sbody_end_told = 0;
	c->sbody_kick = c->discard = c->sresp = 0;
	c->discarded = 0;
	c->body_cb = NULL;
	c->close_cb = NULL;
	c->drain_cb = NULL;
	if (chunked) {
		c->state = ST_CHUNKED;
		c->chunk_left = -1;
	} else if (cl > 0) {
		c->state = ST_BODY;
		c->body_left = cl;
	} else {
		c->state = ST_HANDLING;
		c->sbody_end = 1;
	}
	hand_to_router(c, SBODY_INPUT_HIWAT);
}

/*
 * A request is over (answered, its body consumed): close, or wait for the
 * next one.  Never frees the connection.  Returns 1 if parsing may go on.
 */
static int
next_request(struct http_conn *c)
{
	c->sbody = 0;
	if (c->close_after || draining) {
		c->close_after = 1;
		c->state = ST_CLOSING;
		bufferevent_disable(c->bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_abort(c);
		return 0;	/* else conn_write_cb closes when flushed */
	}
	c->state = ST_IDLE;
	bufferevent_setwatermark(c->bev, EV_READ, 0, (size_t)http_lim.max_header + 1);
	bufferevent_enable(c->bev, EV_READ);
	timer_set(c, http_lim.idle_timeout);
	return 1;
}

/* Run conn_process from the event loop (not from inside a handler). */
static void
conn_kick(struct http_conn *c)
{
	bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/*
 * The head is over --max-header: 414 if the request line alone does not
 * fit (no line end within the limit), else 431.  Answer and close.
 */
static void
head_too_large(struct http_conn *c, struct evbuffer *in)
{
	struct evbuffer_ptr nl = evbuffer_search(in, "\n", 1, NULL);

	if (nl.pos < 0 || nl.pos >= http_lim.max_header)
		conn_fail(c, 414, "INVALID_REQUEST", "Request line too long");
	else
		conn_fail(c, 431, "INVALID_REQUEST", "Request header fields too large");
}

/* Try to complete the head; returns 1 if processing should continue. */
static int
read_head(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t avail = evbuffer_get_length(in), hlen;
	struct evbuffer_ptr p;
	long cl;
	int chunked, status;
	const char *msg = NULL;

	/* Skip empty lines between requests (RFC 9112 2.2). */
	for (;;) {
		unsigned char ch[2];
		if (evbuffer_copyout(in, ch, 1) != 1)
			return 0;
		if (ch[0] == '\n') {
			evbuffer_drain(in, 1);
			continue;
		}
		if (ch[0] == '\r' && evbuffer_copyout(in, ch, 2) == 2 && ch[1] == '\n') {
			evbuffer_drain(in, 2);
			continue;
		}
		break;
	}
	avail = evbuffer_get_length(in);
	if (avail == 0)
		return 0;
	if (c->state == ST_IDLE) {
		c->state = ST_HEAD;
		timer_set(c, http_lim.header_timeout);
	}
	p = evbuffer_search(in, "\n\r\n", 3, NULL);
	{
		struct evbuffer_ptr p2 = evbuffer_search(in, "\n\n", 2, NULL);
		if (p2.pos >= 0 && (p.pos < 0 || p2.pos < p.pos)) {
			p = p2;
			hlen = (size_t)p.pos + 2;
		} else
			hlen = (size_t)p.pos + 3;
	}
	if ((p.pos < 0 && avail > (size_t)http_lim.max_header) ||
	    (p.pos >= 0 && hlen > (size_t)http_lim.max_header)) {
		head_too_large(c, in);
		return 0;
	}
	if (p.pos < 0)
		return 0;
	if (hlen + 1 > c->headcap) {
		char *n = realloc(c->head, hlen + 1);
		if (!n) {
			conn_close(c);
			return 0;
		}
		c->head = n;
		c->headcap = hlen + 1;
	}
	evbuffer_remove(in, c->head, hlen);
	SHM_ADD(http_received_bytes, 0, hlen);
	c->head[hlen] = '\0';
	c->close_after = 0;
	status = parse_head(c, c->head, hlen, &cl, &chunked, &msg);
	if (status) {
		conn_fail(c, status, "INVALID_REQUEST", msg);
		return 0;
	}
	c->req.t_start = http_now_ns();
	if (!c->req.body)
		c->req.body = evbuffer_new();
	else
		evbuffer_drain(c->req.body, evbuffer_get_length(c->req.body));
	c->body_total = 0;
	c->sbody = 0;
	c->body_flat = 0;
	if (http_want_stream && http_want_stream(&c->req)) {
		if (c->expect_continue && (chunked || cl > 0) && !c->http10)
			evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
		stream_dispatch(c, cl, chunked);
		return 0;
	}
	if (c->expect_continue && (chunked || (cl > 0 && cl <= http_lim.max_body)) && !c->http10)
		evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
	if (chunked) {
		c->state = ST_CHUNKED;
		c->chunk_left = -1;
		timer_set(c, http_lim.body_timeout);
		bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
		return 1;
	}
	if (cl > http_lim.max_body) {
		conn_fail(c, 413, "PAYLOAD_TOO_LARGE", "Request body too large");
		return 0;
	}
	if (cl > 0) {
		c->state = ST_BODY;
		c->body_left = cl;
		/*
		 * One block for a large body (body_take); ENOMEM: chains as
		 * usual.  Pages are touched only as bytes arrive, so a client
		 * announcing a body it never sends costs address space, not
		 * memory.
		 */
		c->body_flat = cl >= HTTP_FLAT_BODY_MIN && evbuffer_expand(c->req.body, (size_t)cl) == 0;
		timer_set(c, http_lim.body_timeout);
		bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
		return 1;
	}
	dispatch(c);
	return 0;
}

/* Room in req->body for more bytes (a streamed body is bounded). */
static size_t
body_room(const struct http_conn *c)
{
	size_t have;

	if (!c->sbody || c->discard)
		return SIZE_MAX;
	have = evbuffer_get_length(c->req.body);
	return have < HTTP_SBODY_MAX ? HTTP_SBODY_MAX - have : 0;
}

/*
 * Move n body bytes from the socket input to req->body, or skip them.
 * A large body whose length is known goes into one block reserved for
 * all of it (http_body_reserve), so the handler's evbuffer_pullup() finds
 * it contiguous: pulling up the chains the reads left would hold the
 * body twice for a moment (a 16 MiB /rpc body: 32 MiB).  Small bodies
 * move as they are (no copy, no allocation).
 */
static void
body_take(struct http_conn *c, struct evbuffer *in, size_t n)
{
	struct evbuffer_iovec v;

	SHM_ADD(http_received_bytes, 0, n);
	if (c->discard) {
		evbuffer_drain(in, n);
		c->discarded += (long)n;
	} else if (c->body_flat && evbuffer_reserve_space(c->req.body, (ev_ssize_t)n, &v, 1) == 1 &&
	    v.iov_len >= n && evbuffer_remove(in, v.iov_base, n) == (int)n) {
		v.iov_len = n;
		evbuffer_commit_space(c->req.body, &v, 1);
	} else
		evbuffer_remove_buffer(in, c->req.body, n);
}

/* The whole body is in; returns 1 if the next request may be parsed. */
static int
body_complete(struct http_conn *c)
{
	if (c->discard) {
		c->discard = 0;
		return next_request(c);
	}
	if (c->sbody) {
		c->sbody_end = 1;
		c->state = ST_HANDLING;
		timer_set(c, 0);
		return 0;
	}
	dispatch(c);
	return 0;
}

/*
 * A malformed body: answer 4xx, or just close once a handler has it -
 * after what was already written is flushed (an early answer such as a
 * 401 while its body was being skipped, a streamed response's head and
 * events): aborting at once would drop it unsent (t/fuzz, regress-http-*).
 */
static void
body_fail(struct http_conn *c, int status, const char *code, const char *msg)
{
	if (!c->sbody) {
		conn_fail(c, status, code, msg);
		return;
	}
	c->state = ST_CLOSING;
	c->close_after = 1;
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_abort(c);
	/* else conn_write_cb closes when flushed */
}

static int
read_body(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t avail = evbuffer_get_length(in), room = body_room(c);
	size_t n = avail < (size_t)c->body_left ? avail : (size_t)c->body_left;

	if (n > room)
		n = room;
	if (n > 0) {
		body_take(c, in, n);
		c->body_left -= (long)n;
	}
	if (c->discard && c->discarded > DISCARD_MAX) {
		conn_abort(c);
		return 0;
	}
	if (c->body_left > 0)
		return 0;
	return body_complete(c);
}

/* Chunked transfer coding (RFC 9112 7.1), incrementally. */
static int
read_chunked(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	for (;;) {
		if (c->chunk_left > 0) {
			size_t avail = evbuffer_get_length(in), room = body_room(c);
			size_t n = avail < (size_t)c->chunk_left ? avail : (size_t)c->chunk_left;
			if (n > room)
				n = room;
			if (n == 0)
				return 0;
			body_take(c, in, n);
			c->chunk_left -= (long)n;
			if (c->discard && c->discarded > DISCARD_MAX) {
				conn_abort(c);
				return 0;
			}
			if (c->chunk_left > 0)
				return 0;
			c->chunk_left = -3;	/* CRLF after the data */
			continue;
		}
		/* A line: size line (-1), CRLF after data (-3) or trailer (-2). */
		char line[256];
		size_t eol_len;
		struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
		if (e.pos < 0) {
			if (evbuffer_get_length(in) > sizeof(line)) {
				body_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
				return 0;
			}
			return 0;
		}
		if ((size_t)e.pos >= sizeof(line)) {
			body_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
			return 0;
		}
		evbuffer_remove(in, line, (size_t)e.pos);
		line[e.pos] = '\0';
		evbuffer_drain(in, eol_len);
		SHM_ADD(http_received_bytes, 0, (size_t)e.pos + eol_len);
		/* Chunk lines end in CRLF only; no bare LF, CR or NUL inside. */
		for (const char *q = line; q < line + e.pos; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				body_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
				return 0;
			}
		if (c->chunk_left == -3) {
			if (line[0] != '\0') {
				body_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
				return 0;
			}
			c->chunk_left = -1;
			continue;
		}
		if (c->chunk_left == -2) {
			if (line[0] == '\0')
				return body_complete(c);
			continue;	/* ignore trailer fields */
		}
		/*
		 * Size line: hex digits only (no sign, no "0x": strtol would
		 * take both), then optional whitespace and extensions.
		 */
		const char *end = line;
		long size = 0;
		int hv;
		while (*end == '0')
			end++;
		while ((hv = hexval((unsigned char)*end)) >= 0) {
			if (size > (LONG_MAX >> 4)) {
				size = -1;
				break;
			}
			size = size << 4 | hv;
			end++;
		}
		while (*end == ' ' || *end == '\t')
			end++;
		if (size < 0 || !isxdigit((unsigned char)line[0]) || (*end && *end != ';')) {
			body_fail(c, 400, "INVALID_REQUEST", "malformed chunk size");
			return 0;
		}
		if (!c->sbody && size > http_lim.max_body - c->body_total) {
			conn_fail(c, 413, "PAYLOAD_TOO_LARGE", "Request body too large");
			return 0;
		}
		c->body_total += size;
		c->chunk_left = size == 0 ? -2 : size;
	}
}

/*
 * Feed a streamed body to its handler: move what fits into req->body and
 * run the callback, as long as the handler keeps consuming.
 */
static void
sbody_pump(struct http_conn *c)
{
	for (;;) {
		size_t before;

		if (!c->sbody_started || c->sbody_paused || !c->body_cb)
			return;
		before = evbuffer_get_length(c->req.body);
		if (!c->sbody_end) {
			if (c->state == ST_BODY)
				read_body(c);
			else if (c->state == ST_CHUNKED)
				read_chunked(c);
			if (c->abort || !c->bev)
				return;
		}
		if (evbuffer_get_length(c->req.body) == before && !c->sbody_kick &&
		    !(c->sbody_end && !c->sbody_end_told))
			return;
		c->sbody_kick = 0;
		if (c->sbody_end)
			c->sbody_end_told = 1;
		else
			timer_set(c, http_lim.body_timeout);
		c->body_cb(c->body_arg, c->req.body, c->sbody_end);
		if (!c->bev || !c->in_flight || c->abort)
			return;
	}
}

static void
conn_process(struct http_conn *c)
{
	int more = 1;

	while (more && c->bev && !c->abort) {
		if (c->in_flight && c->sbody) {
			sbody_pump(c);
			break;
		}
		if (c->in_flight && c->sresp) {
			/* A streamed response: whatever the client sends is dropped
			 * (reading goes on, so its EOF is noticed at once). */
			struct evbuffer *in = bufferevent_get_input(c->bev);
			evbuffer_drain(in, evbuffer_get_length(in));
			break;
		}
		switch (c->state) {
		case ST_IDLE:
		case ST_HEAD:
			more = read_head(c);
			break;
		case ST_BODY:
			more = read_body(c);
			break;
		case ST_CHUNKED:
			more = read_chunked(c);
			break;
		default:
			more = 0;
		}
	}
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct http_conn *c = arg;
	conn_process(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct http_conn *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
		return;
	if (c->in_flight && c->sresp && c->drain_cb) {
		c->drain_cb(c->drain_arg);
		return;
	}
	if (c->state == ST_CLOSING || (c->close_after && !c->in_flight))
		conn_close(c);
	else if (c->out_wait && !c->in_flight) {
		/* The client read what it asked for: take its next request. */
		c->out_wait = 0;
		bufferevent_enable(bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
			conn_kick(c);
	}
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct http_conn *c = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		/*
		 * EOF while a request is in flight: the client may have only
		 * shut down its write side, so keep the socket until we answer.
		 */
		int gone = (what & BEV_EVENT_ERROR) || !c->in_flight ||
		    (c->sbody && !c->sbody_end) ||	/* a streamed body cut short */
		    (c->close_cb && !c->sbody);		/* a subscriber hung up */

		if (!gone) {
			c->close_after = 1;
			bufferevent_disable(bev, EV_READ);
			return;
		}
		conn_close(c);
	}
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_conn *c = arg;

	if (c->abort) {
		conn_close(c);
		return;
	}
	switch (c->state) {
	case ST_HEAD:
		log_info("closing connection: header not received within %d s",
		    http_lim.header_timeout);
		SHM_INC(http_timeouts);
		conn_fail(c, 408, "INVALID_REQUEST", "Request header timeout");
		break;
	case ST_BODY:
	case ST_CHUNKED:
		if (c->sbody) {
			log_info("closing connection: no request body data for %d s",
			    http_lim.body_timeout);
			conn_close(c);
			break;
		}
		SHM_INC(http_timeouts);
		conn_fail(c, 408, "INVALID_REQUEST", "Request body timeout");
		break;
	case ST_CLOSING:
	case ST_IDLE:
	default:
		conn_close(c);
	}
}

/*
 * A request with a streamed body has been answered: skip what is left of
 * its body (the connection stays usable), then go on from the event loop.
 */
static void
stream_req_done(struct http_conn *c)
{
	c->sresp = 0;
	if (!c->sbody_end) {
		c->discard = 1;
		c->discarded = 0;
		bufferevent_setwatermark(c->bev, EV_READ, 0, SBODY_INPUT_HIWAT);
		bufferevent_enable(c->bev, EV_READ);
		timer_set(c, http_lim.body_timeout);
	} else if (!next_request(c))
		return;
	conn_kick(c);
}

void
http_respond(struct http_req *req, int status, struct evbuffer *body)
{
	http_respond_type(req, status, "application/json", body);
}

/*
 * The handler is done with its request: it no longer owns the connection.
 * Returns the connection, or NULL if the client had gone and it is freed.
 */
static struct http_conn *
req_over(struct http_req *req)
{
	struct http_conn *c = req->conn;

	if (c->magic != CONN_MAGIC)
		abort();
	c->in_flight = 0;
	nbusy--;
	c->close_cb = NULL;
	c->body_cb = NULL;
	c->drain_cb = NULL;
	if (!c->bev) {
		conn_free(c);
		return NULL;
	}
	/* A large body is not kept for the life of a keep-alive connection. */
	if (!c->sbody && c->req.body && evbuffer_get_length(c->req.body) >= HTTP_FLAT_BODY_MIN)
		evbuffer_drain(c->req.body, evbuffer_get_length(c->req.body));
	return c;
}

void
http_respond_type(struct http_req *req, int status, const char *ctype, struct evbuffer *body)
{
	struct http_conn *c = req_over(req);

	if (!c)
		return;
	if (draining)
		c->close_after = 1;	/* tell the client: we close after this response */
	write_response(c, status, ctype, body, req->method == HTTP_HEAD);
	if (c->sbody) {
		stream_req_done(c);
		return;
	}
	if (c->close_after || draining) {
		c->close_after = 1;
		c->state = ST_CLOSING;
		bufferevent_disable(c->bev, EV_READ);
		return;	/* conn_write_cb closes when flushed */
	}
	c->state = ST_IDLE;
	bufferevent_setwatermark(c->bev, EV_READ, 0, (size_t)http_lim.max_header + 1);
	timer_set(c, http_lim.idle_timeout);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUT_HIWAT) {
		/*
		 * A client that pipelines requests without reading the answers
		 * (large category.get pages) would make us buffer them all: read
		 * nothing more until this output is sent (conn_write_cb).  The
		 * idle timeout bounds how long that may take.
		 */
		c->out_wait = 1;
		bufferevent_disable(c->bev, EV_READ);
		return;
	}
	bufferevent_enable(c->bev, EV_READ);
	/*
	 * A pipelined request may already wait in the input buffer.  Take it
	 * on the next loop turn, never from inside http_respond(): the caller
	 * is still in its own callback and may touch its request state after
	 * answering (the same per-connection state the next request reuses).
	 */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		bufferevent_trigger(c->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void
http_respond_str(struct http_req *req, int status, const char *json)
{
	struct evbuffer *b = evbuffer_new();
	evbuffer_add(b, json, strlen(json));
	http_respond(req, status, b);
	evbuffer_free(b);
}

void
http_respond_error(struct http_req *req, int status, const char *code, const char *message)
{
	struct evbuffer *b = evbuffer_new();
	SHM_INC_AT(errors, shm_errcode_index(code));
	evbuffer_add_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	json_write_cstr(b, message);
	evbuffer_add(b, "}}\n", 3);
	http_respond(req, status, b);
	evbuffer_free(b);
}

static int
hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * The next byte of a query key or value at *p (before end), decoded: '+'
 * is a space, '%' and two hex digits a byte, and a '%' not followed by two
 * hex digits stands for itself.  Advances *p past what it read.
 */
static int
query_byte(const char **p, const char *end)
{
	const char *v = *p;
	int ch = (unsigned char)*v++;

	if (ch == '+')
		ch = ' ';
	else if (ch == '%' && end - v >= 2 && hexval(v[0]) >= 0 && hexval(v[1]) >= 0) {
		ch = hexval(v[0]) * 16 + hexval(v[1]);
		v += 2;
	}
	*p = v;
	return ch;
}

/*
 * Whether the query key [k, kend) names `name` once decoded: keys are
 * percent-decoded like values ("%73tream" is "stream", as Go's
 * url.ParseQuery in the original).
 */
static int
query_key_eq(const char *k, const char *kend, const char *name)
{
	for (; k < kend; name++)
		if (*name == '\0' || query_byte(&k, kend) != (unsigned char)*name)
			return 0;
	return *name == '\0';
}

long
http_query_get(const struct http_req *req, const char *name, char *buf, size_t buflen)
{
	const char *p = req->query;

	while (p && *p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *kend = eq ? eq : end;

		if (query_key_eq(p, kend, name)) {
			size_t j = 0;
			const char *v = eq ? eq + 1 : end;
			while (v < end) {
				int ch = query_byte(&v, end);
				if (j + 1 >= buflen)
					return -1;
				buf[j++] = (char)ch;
			}
			buf[j] = '\0';
			return (long)j;
		}
		p = amp ? amp + 1 : NULL;
	}
	return -1;
}

/* ---- streaming -------------------------------------------------------- */

void
http_set_stream_filter(int (*want)(const struct http_req *req))
{
	http_want_stream = want;
}

void
http_set_close_cb(struct http_req *req, void (*cb)(void *arg), void *arg)
{
	req->conn->close_cb = cb;
	req->conn->close_arg = arg;
}

void
http_set_drain_cb(struct http_req *req, void (*cb)(void *arg), void *arg)
{
	req->conn->drain_cb = cb;
	req->conn->drain_arg = arg;
}

void
http_body_start(struct http_req *req, void (*cb)(void *arg, struct evbuffer *body, int end),
    void *arg)
{
	struct http_conn *c = req->conn;

	if (c->magic != CONN_MAGIC || !c->sbody)
		abort();
	c->body_cb = cb;
	c->body_arg = arg;
	c->sbody_started = 1;
	c->sbody_paused = 0;
	c->sbody_kick = 1;
	if (!c->bev)
		return;
	if (!c->sbody_end)
		timer_set(c, http_lim.body_timeout);
	conn_kick(c);
}

void
http_body_pause(struct http_req *req, int pause)
{
	struct http_conn *c = req->conn;

	c->sbody_paused = pause ? 1 : 0;
	if (!c->bev)
		return;
	if (pause) {
		/*
		 * Stop reading.  (Leaving it enabled with the input above its
		 * high watermark makes libevent 2.1 re-run a deferred read
		 * callback in a loop: bufferevent_inbuf_wm_check.)
		 */
		timer_set(c, 0);
		bufferevent_disable(c->bev, EV_READ);
		return;
	}
	c->sbody_kick = 1;
	if (!c->sbody_end) {
		timer_set(c, http_lim.body_timeout);
		bufferevent_enable(c->bev, EV_READ);
	}
	conn_kick(c);
}

void
http_stream_begin(struct http_req *req, int status, const char *ctype, const char *headers)
{
	struct http_conn *c = req->conn;
	struct evbuffer *in;
	int n;

	if (c->magic != CONN_MAGIC)
		abort();
	if (!c->bev)
		return;
	c->sresp = 1;
	c->chunked_out = !c->http10;
	if (c->http10)
		c->close_after = 1;
	SHM_INC_AT(http_responses, shm_status_index(status));
	n = evbuffer_add_printf(bufferevent_get_output(c->bev),
	    "HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\n%s%sConnection: %s\r\n\r\n",
	    status, status_text(status), http_server_hdr, ctype,
	    c->chunked_out ? "Transfer-Encoding: chunked\r\n" : "", headers ? headers : "",
	    c->close_after ? "close" : "keep-alive");
	SHM_ADD(http_sent_bytes, 0, n > 0 ? (size_t)n : 0);
	if (c->sbody)
		return;
	/* A long-lived response: keep no more per-connection memory than needed. */
	free(c->head);
	c->head = NULL;
	c->headcap = 0;
	req->path = "";
	req->method_str = "";
	req->query = NULL;
	req->authorization = NULL;
	if (req->body) {
		evbuffer_free(req->body);
		req->body = NULL;
	}
	in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_setwatermark(c->bev, EV_READ, 0, STREAM_INPUT_HIWAT);
#ifdef TCP_NOTSENT_LOWAT
	{
		/*
		 * A streamed response judges its client by http_stream_pending()
		 * (sse.c drops a subscriber SSE_MAX_PENDING behind, pauses a
		 * catch-up above SSE_CATCHUP_HIWAT).  Left alone, the kernel's
		 * autotuned send buffer (up to tcp_wmem's 4 MB) takes megabytes
		 * for a client that reads nothing, so that count stays near 0:
		 * a stalled subscriber is never dropped, its catch-up reads page
		 * after page, and every poke to it costs a writev and two
		 * epoll_ctl calls (t/battery/33-slow.t, T13d).  Keep at most
		 * this much unsent in the kernel; the rest waits in our buffer.
		 */
		int lowat = STREAM_NOTSENT_LOWAT;
		(void)setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NOTSENT_LOWAT,
		    &lowat, sizeof(lowat));
	}
#endif
}

void
http_stream_write(struct http_req *req, const void *data, size_t len)
{
	struct http_conn *c = req->conn;
	struct evbuffer *out;

	if (!c->bev || !c->sresp || len == 0)
		return;
	SHM_ADD(http_sent_bytes, 0, len);
	out = bufferevent_get_output(c->bev);
	if (c->chunked_out) {
		evbuffer_add_printf(out, "%zx\r\n", len);
		evbuffer_add(out, data, len);
		evbuffer_add(out, "\r\n", 2);
	} else
		evbuffer_add(out, data, len);
}

void
http_stream_write_buf(struct http_req *req, struct evbuffer *buf)
{
	struct http_conn *c = req->conn;
	struct evbuffer *out;
	size_t len = evbuffer_get_length(buf);

	if (!c->bev || !c->sresp || len == 0) {
		evbuffer_drain(buf, len);
		return;
	}
	SHM_ADD(http_sent_bytes, 0, len);
	out = bufferevent_get_output(c->bev);
	if (c->chunked_out) {
		evbuffer_add_printf(out, "%zx\r\n", len);
		evbuffer_add_buffer(out, buf);
		evbuffer_add(out, "\r\n", 2);
	} else
		evbuffer_add_buffer(out, buf);
}

size_t
http_stream_pending(const struct http_req *req)
{
	const struct http_conn *c = req->conn;

	return c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;
}

void
http_stream_end(struct http_req *req)
{
	struct http_conn *c = req_over(req);

	if (!c)
		return;
	if (c->sresp && c->chunked_out)
		evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
	c->sresp = 0;
	if (c->sbody) {
		stream_req_done(c);
		return;
	}
	if (next_request(c))
		conn_kick(c);
}

void *
http_app_ctx(struct http_req *req)
{
	return req->conn->app;
}

void
http_set_app_ctx(struct http_req *req, void *ctx, void (*free_fn)(void *))
{
	req->conn->app = ctx;
	req->conn->app_free = free_fn;
}

void
http_drain(void)
{
	struct http_conn *c, *next;

	draining = 1;
	for (c = conns; c; c = next) {
		next = c->next;
		/*
		 * An idle connection is closed after DRAIN_IDLE_S more idle
		 * time, not at once: a client may be sending its next request
		 * right now (or its first, on a connection just accepted), and
		 * closing under it would fail that request.  A request that
		 * arrives meanwhile is answered with Connection: close.
		 */
		if (c->state == ST_IDLE && !c->in_flight)
			timer_set(c, DRAIN_IDLE_S);
	}
}

/* 1 if the client is on the loopback interface (127.0.0.0/8, ::1, v4-mapped 127/8). */
int
http_peer_loopback(const struct http_req *req)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const struct http_conn *c = req->conn;

	if (!c->bev || getpeername(bufferevent_getfd(c->bev), (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return 1;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return 0;
}

void
http_scoreboard(struct http_scoreboard *sb)
{
	uint64_t now = http_now_ns();

	memset(sb, 0, sizeof(*sb));
	for (const struct http_conn *c = conns; c; c = c->next) {
		int pending = c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;

		if (c->in_flight) {
			sb->handling++;
			/* A streamed response (SSE) is not a request taking long. */
			if (!c->sresp && c->req.t_start && now - c->req.t_start > sb->oldest_ns)
				sb->oldest_ns = now - c->req.t_start;
		} else if (c->state == ST_HEAD || c->state == ST_BODY || c->state == ST_CHUNKED)
			sb->reading++;
		else if (pending)
			sb->writing++;
		else
			sb->idle++;
	}
}
