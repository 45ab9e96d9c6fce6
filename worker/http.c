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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "http.h"
#include "json.h"
#include "log.h"

#define CONN_MAGIC	0x48545450u	/* "HTTP" */
#define HANDLING_HIWAT	(64 * 1024)

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
	void		*app;
	void		(*app_free)(void *);
	struct http_conn *next, *prev;	/* all connections of this worker */
};

static struct event_base *http_base;
static struct http_limits http_lim;
static http_router_fn http_router;
static char http_server_hdr[64];
static struct http_conn *conns;
static int nconns, nbusy, draining;
static uint64_t next_req_id;

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void conn_process(struct http_conn *c);

uint64_t
http_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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
	c->magic = 0;
	free(c);
}

/* Close the socket now; free the connection unless a handler owns it. */
static void
conn_close(struct http_conn *c)
{
	c->state = ST_CLOSING;
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	evtimer_del(c->timer);
	if (!c->in_flight)
		conn_free(c);
}

/* Write a complete response; the body evbuffer is drained. */
static void
write_response(struct http_conn *c, int status, const char *ctype,
    struct evbuffer *body, int head_only)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t len = body ? evbuffer_get_length(body) : 0;

	evbuffer_add_printf(out,
	    "HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
	    status, status_text(status), http_server_hdr, ctype, len,
	    c->close_after ? "Connection: close\r\n" : "");
	if (body) {
		if (head_only)
			evbuffer_drain(body, len);
		else
			evbuffer_add_buffer(out, body);
	}
}

/* Protocol-level error before a request reached the router: answer, close. */
static void
conn_fail(struct http_conn *c, int status, const char *code, const char *msg)
{
	struct evbuffer *b = evbuffer_new();

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

	if (nconns > http_lim.max_conns || draining) {
		/* Refuse cleanly: a complete 503 and close. */
		log_warn("connection refused: %d connections open (max %d)", nconns - 1,
		    http_lim.max_conns);
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
parse_head(struct http_conn *c, char *h, long *content_length, int *chunked,
    const char **msg)
{
	struct http_req *r = &c->req;
	char *line = h, *eol, *sp1, *sp2, *target, *q;
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
	else if (strncmp(sp2 + 1, "HTTP/", 5) == 0) {
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

	/* Header fields. */
	for (line = eol + 1; *line; line = eol + 1) {
		char *colon, *val, *end;

		eol = strchr(line, '\n');
		if (!eol)
			break;
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
	if (c->http10)
		r->keepalive = conn_keep && !conn_close;
	else
		r->keepalive = !conn_close;
	return 0;
}

static void
dispatch(struct http_conn *c)
{
	c->state = ST_HANDLING;
	c->in_flight = 1;
	nbusy++;
	timer_set(c, 0);
	/* Pipelined bytes may wait, but not without bound. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, HANDLING_HIWAT);
	c->req.id = ++next_req_id;
	if (!c->req.keepalive || draining)
		c->close_after = 1;
	http_router(&c->req);
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
	if (p.pos < 0) {
		if (avail > (size_t)http_lim.max_header) {
			conn_fail(c, 431, "INVALID_REQUEST", "Request header fields too large");
			return 0;
		}
		return 0;
	}
	if (hlen > (size_t)http_lim.max_header) {
		conn_fail(c, 431, "INVALID_REQUEST", "Request header fields too large");
		return 0;
	}
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
	c->head[hlen] = '\0';
	c->close_after = 0;
	status = parse_head(c, c->head, &cl, &chunked, &msg);
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
		timer_set(c, http_lim.body_timeout);
		bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
		return 1;
	}
	dispatch(c);
	return 0;
}

static int
read_body(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t avail = evbuffer_get_length(in);
	size_t n = avail < (size_t)c->body_left ? avail : (size_t)c->body_left;

	if (n > 0) {
		evbuffer_remove_buffer(in, c->req.body, n);
		c->body_left -= (long)n;
	}
	if (c->body_left > 0)
		return 0;
	dispatch(c);
	return 0;
}

/* Chunked transfer coding (RFC 9112 7.1), incrementally. */
static int
read_chunked(struct http_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	for (;;) {
		if (c->chunk_left > 0) {
			size_t avail = evbuffer_get_length(in);
			size_t n = avail < (size_t)c->chunk_left ? avail : (size_t)c->chunk_left;
			if (n == 0)
				return 0;
			evbuffer_remove_buffer(in, c->req.body, n);
			c->chunk_left -= (long)n;
			if (c->chunk_left > 0)
				return 0;
			c->chunk_left = -3;	/* CRLF after the data */
			continue;
		}
		/* A line: size line (-1), CRLF after data (-3) or trailer (-2). */
		char line[256];
		size_t eol_len;
		struct evbuffer_ptr e = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (e.pos < 0) {
			if (evbuffer_get_length(in) > sizeof(line)) {
				conn_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
				return 0;
			}
			return 0;
		}
		if ((size_t)e.pos >= sizeof(line)) {
			conn_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
			return 0;
		}
		evbuffer_remove(in, line, (size_t)e.pos);
		line[e.pos] = '\0';
		evbuffer_drain(in, eol_len);
		if (c->chunk_left == -3) {
			if (line[0] != '\0') {
				conn_fail(c, 400, "INVALID_REQUEST", "malformed chunk");
				return 0;
			}
			c->chunk_left = -1;
			continue;
		}
		if (c->chunk_left == -2) {
			if (line[0] == '\0') {
				dispatch(c);
				return 0;
			}
			continue;	/* ignore trailer fields */
		}
		/* Size line: hex digits, optional extensions. */
		char *end;
		long size;
		if (!isxdigit((unsigned char)line[0])) {
			conn_fail(c, 400, "INVALID_REQUEST", "malformed chunk size");
			return 0;
		}
		errno = 0;
		size = strtol(line, &end, 16);
		if (errno || size < 0 || (*end && *end != ';' && *end != ' ' && *end != '\t')) {
			conn_fail(c, 400, "INVALID_REQUEST", "malformed chunk size");
			return 0;
		}
		if (size > http_lim.max_body - c->body_total) {
			conn_fail(c, 413, "PAYLOAD_TOO_LARGE", "Request body too large");
			return 0;
		}
		c->body_total += size;
		c->chunk_left = size == 0 ? -2 : size;
	}
}

static void
conn_process(struct http_conn *c)
{
	int more = 1;

	while (more && c->bev) {
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
	if (c->state == ST_CLOSING || (c->close_after && !c->in_flight))
		conn_close(c);
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
		if ((what & BEV_EVENT_EOF) && c->in_flight && !(what & BEV_EVENT_ERROR)) {
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

	switch (c->state) {
	case ST_HEAD:
		log_info("closing connection: header not received within %d s",
		    http_lim.header_timeout);
		conn_fail(c, 408, "INVALID_REQUEST", "Request header timeout");
		break;
	case ST_BODY:
	case ST_CHUNKED:
		conn_fail(c, 408, "INVALID_REQUEST", "Request body timeout");
		break;
	case ST_CLOSING:
	case ST_IDLE:
	default:
		conn_close(c);
	}
}

void
http_respond(struct http_req *req, int status, struct evbuffer *body)
{
	struct http_conn *c = req->conn;

	if (c->magic != CONN_MAGIC)
		abort();
	c->in_flight = 0;
	nbusy--;
	if (!c->bev) {
		conn_free(c);
		return;
	}
	write_response(c, status, "application/json", body, req->method == HTTP_HEAD);
	if (c->close_after || draining) {
		c->close_after = 1;
		c->state = ST_CLOSING;
		bufferevent_disable(c->bev, EV_READ);
		return;	/* conn_write_cb closes when flushed */
	}
	c->state = ST_IDLE;
	bufferevent_setwatermark(c->bev, EV_READ, 0, (size_t)http_lim.max_header + 1);
	bufferevent_enable(c->bev, EV_READ);
	timer_set(c, http_lim.idle_timeout);
	conn_process(c);
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

long
http_query_get(const struct http_req *req, const char *name, char *buf, size_t buflen)
{
	const char *p = req->query;
	size_t nlen = strlen(name);

	while (p && *p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *kend = eq ? eq : end;

		if ((size_t)(kend - p) == nlen && memcmp(p, name, nlen) == 0) {
			size_t j = 0;
			const char *v = eq ? eq + 1 : end;
			for (; v < end; v++) {
				int ch = (unsigned char)*v;
				if (ch == '+')
					ch = ' ';
				else if (ch == '%' && end - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
					ch = hexval(v[1]) * 16 + hexval(v[2]);
					v += 2;
				}
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
		if (c->state == ST_IDLE && !c->in_flight)
			conn_close(c);
	}
}
