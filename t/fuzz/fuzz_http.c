/*
 * fuzz_http.c - libFuzzer target: worker/http.c on a socketpair.
 *
 * The real HTTP layer runs on a real event base: http_init() with small
 * limits, http_accept() on one end of a socketpair, and the fuzz input
 * written into the other end, in pieces (partial reads), with the event
 * loop run until quiet after each piece.  A minimal router answers the
 * way the real handlers do: at once, later (asynchronously), with a
 * streamed response (like /subscribe) or with a streamed request body
 * (like /import: pausing, answering before the body was read).  At the
 * end the client goes away and every connection must be freed.
 *
 * What the client received is then parsed as HTTP/1.1 responses: each
 * request the router saw gets one response, in order (fewer only after a
 * half-close, when the client may be gone first); 100 Continue is the
 * only interim response; at most one protocol error (a request the
 * router never saw) and only as the last response, with Connection:
 * close; nothing after a Connection: close response; bodies framed by
 * Content-Length (none for HEAD), chunked, or (HTTP/1.0 streams) by the
 * close.  That is the no-desync rule of T19.
 *
 * Input: byte 0 = flags, then up to 7 piece-length bytes, then the bytes
 * the client sends.
 *   flags & 7     number of pieces - 1 (each piece 1..64 bytes, the last
 *                 piece takes the rest)
 *   flags & 8     half-close (shutdown SHUT_WR) after the last piece
 *   flags & 16    answer asynchronous requests only at the end
 *   flags & 32    streamed bodies pause after each callback
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "http.h"
#include "log.h"

enum pkind { P_NONE, P_ASYNC, P_SSE, P_SAUTH, P_IMPORT };

struct pend {
	enum pkind	 kind;
	struct http_req	*req;
	int		 paused;
	int		 started;	/* P_IMPORT: stream begun */
};

#define NPEND 16

static struct event_base *base;
static struct pend pend[NPEND];
static int progress;
static int flags;

/* What the client received, and the requests the router saw, in order. */
#define CLI_MAX	(8 * 1024 * 1024)
#define NSEEN	4096
static char *cli;
static size_t ncli;
static int nseen;
static char seen_head[NSEEN];	/* 1 if that request was HEAD */

static void
bad_response(const char *what, size_t at)
{
	fprintf(stderr, "fuzz_http: %s at byte %zu of the client's input:\n%.*s\n", what, at,
	    (int)(ncli - at > 300 ? 300 : ncli - at), cli + at);
	abort();
}

/* Find "\r\n" from p; returns its offset or (size_t)-1. */
static size_t
find_crlf(size_t p)
{
	for (; p + 1 < ncli; p++)
		if (cli[p] == '\r' && cli[p + 1] == '\n')
			return p;
	return (size_t)-1;
}

static void
check_responses(void)
{
	size_t p = 0;
	int nresp = 0, closed = 0, errors = 0;

	while (p < ncli) {
		size_t start = p, eol, cl = (size_t)-1;
		int status, chunked = 0, close = 0, final_err;

		if (closed)
			bad_response("bytes after a Connection: close response", p);
		if (ncli - p < 13 || memcmp(cli + p, "HTTP/1.1 ", 9) != 0 ||
		    sscanf(cli + p + 9, "%3d", &status) != 1 || status < 100 || status > 599)
			bad_response("not a status line", p);
		if ((eol = find_crlf(p)) == (size_t)-1)
			bad_response("unterminated status line", p);
		p = eol + 2;
		for (;;) {	/* header fields */
			if ((eol = find_crlf(p)) == (size_t)-1)
				bad_response("unterminated response head", start);
			if (eol == p) {
				p += 2;
				break;
			}
			if (eol - p > 16 && strncasecmp(cli + p, "Content-Length: ", 16) == 0)
				cl = strtoul(cli + p + 16, NULL, 10);
			else if (strncasecmp(cli + p, "Transfer-Encoding: chunked\r\n", 28) == 0)
				chunked = 1;
			else if (strncasecmp(cli + p, "Connection: close\r\n", 19) == 0)
				close = 1;
			p = eol + 2;
		}
		if (status == 100) {
			if (cl != (size_t)-1 || chunked || close)
				bad_response("100 Continue with framing headers", start);
			continue;
		}
		/* A final response: to the next request the router saw, or an error. */
		final_err = nresp >= nseen;
		if (final_err) {
			if (++errors > 1)
				bad_response("a second response to a request the router never saw", start);
			if (status < 400 || !close)
				bad_response("protocol error response not 4xx/5xx + close", start);
		}
		if (!final_err && seen_head[nresp]) {
			if (chunked)
				bad_response("chunked response to HEAD", start);
		} else if (chunked) {
			for (;;) {
				unsigned long n;
				if ((eol = find_crlf(p)) == (size_t)-1)
					goto cut;	/* a stream cut short: must be the end */
				n = strtoul(cli + p, NULL, 16);
				p = eol + 2;
				if (n == 0) {
					if (ncli - p < 2)
						goto cut;
					if (cli[p] != '\r' || cli[p + 1] != '\n')
						bad_response("chunked trailer", p);
					p += 2;
					break;
				}
				if (ncli - p < n + 2)
					goto cut;
				if (cli[p + n] != '\r' || cli[p + n + 1] != '\n')
					bad_response("chunk not followed by CRLF", p + n);
				p += n + 2;
			}
		} else if (cl != (size_t)-1) {
			if (ncli - p < cl)
				bad_response("body shorter than Content-Length", start);
			p += cl;
		} else {
			/* No framing: an HTTP/1.0 stream, until the close. */
			if (!close)
				bad_response("response without framing and without close", start);
			p = ncli;
		}
		nresp++;
		closed = close;
		continue;
cut:
		p = ncli;
		nresp++;
	}
	if (nresp - errors > nseen)
		bad_response("more responses than requests", 0);
	if (!(flags & 8) && nresp - errors < nseen) {
		fprintf(stderr, "fuzz_http: %d requests routed, %d answered\n", nseen, nresp - errors);
		abort();
	}
}

static struct pend *
pend_new(struct http_req *req, enum pkind k)
{
	for (int i = 0; i < NPEND; i++)
		if (pend[i].kind == P_NONE) {
			pend[i] = (struct pend){ .kind = k, .req = req };
			return &pend[i];
		}
	abort();	/* one request at a time per connection: cannot happen */
}

static void
pend_closed(void *arg)
{
	struct pend *p = arg;

	p->kind = P_NONE;
	progress++;
}

static void
body_cb(void *arg, struct evbuffer *body, int end)
{
	struct pend *p = arg;
	struct http_req *req = p->req;
	size_t n = evbuffer_get_length(body);
	char line[64];

	progress++;
	evbuffer_drain(body, n);
	if (n) {
		int len = snprintf(line, sizeof(line), "data: {\"got\":%zu}\n\n", n);
		http_stream_write(req, line, (size_t)len);
	}
	if (end) {
		p->kind = P_NONE;
		http_stream_write(req, "data: {\"done\":true}\n\n", 21);
		http_stream_end(req);
		return;
	}
	if ((flags & 32) && n > 0) {	/* like /import while a batch is in the database */
		p->paused = 1;
		http_body_pause(req, 1);
	}
}

static int
want_stream(const struct http_req *req)
{
	return strncmp(req->path, "/import", 7) == 0 || strncmp(req->path, "/s/", 3) == 0;
}

static void
router(struct http_req *req)
{
	const char *path = req->path;
	struct evbuffer *b;
	char v[32];
	struct pend *p;

	progress++;
	if (nseen < NSEEN)
		seen_head[nseen] = req->method == HTTP_HEAD;
	nseen++;
	if (req->method == HTTP_HEAD && (want_stream(req) || strcmp(path, "/sse") == 0)) {
		/* As /import and /subscribe do. */
		http_respond_error(req, 405, "INVALID_REQUEST", "Only POST method allowed");
		return;
	}
	if (strcmp(path, "/s/early") == 0) {
		/* Answered before the streamed body was read: http.c skips it. */
		http_respond_error(req, 401, "AUTH_REQUIRED", "Authorization header required");
		return;
	}
	if (strcmp(path, "/s/auth") == 0) {
		/* Answered later, body never started (an auth lookup that fails). */
		p = pend_new(req, P_SAUTH);
		http_set_close_cb(req, pend_closed, p);
		return;
	}
	if (want_stream(req)) {
		p = pend_new(req, P_IMPORT);
		http_set_close_cb(req, pend_closed, p);
		if (req->query && strstr(req->query, "later"))
			return;	/* started by service() */
		p->started = 1;
		http_stream_begin(req, 200, "text/event-stream", "Cache-Control: no-cache\r\n");
		http_body_start(req, body_cb, p);
		return;
	}
	if (strcmp(path, "/sse") == 0) {
		p = pend_new(req, P_SSE);
		http_set_close_cb(req, pend_closed, p);
		http_stream_begin(req, 200, "text/event-stream", NULL);
		http_stream_write(req, ": hello\n\n", 9);
		return;
	}
	if (strncmp(path, "/async", 6) == 0) {
		pend_new(req, P_ASYNC);
		return;
	}
	if (strcmp(path, "/404") == 0) {
		http_respond_error(req, 404, "NOT_FOUND", "Endpoint not found");
		return;
	}
	b = evbuffer_new();
	evbuffer_add_printf(b, "{\"method\":\"%s\",\"len\":%zu", req->method_str,
	    evbuffer_get_length(req->body));
	if (http_query_get(req, "token", v, sizeof(v)) >= 0)
		evbuffer_add_printf(b, ",\"token\":%zu", strlen(v));
	if (http_query_get(req, "a", v, 4) >= 0)
		evbuffer_add_printf(b, ",\"a\":%zu", strlen(v));
	if (req->authorization)
		evbuffer_add_printf(b, ",\"auth\":%zu", strlen(req->authorization));
	evbuffer_add(b, "}", 1);
	http_respond(req, 200, b);
	evbuffer_free(b);
}

/* Answer or resume what waits. */
static void
service(int final)
{
	for (int i = 0; i < NPEND; i++) {
		struct pend *p = &pend[i];
		struct http_req *req = p->req;

		switch (p->kind) {
		case P_NONE:
			break;
		case P_ASYNC:
			p->kind = P_NONE;
			http_respond_str(req, 200, "{\"async\":true}\n");
			progress++;
			break;
		case P_SAUTH:
			p->kind = P_NONE;
			http_respond_error(req, 403, "AUTH_UNAUTHORIZED", "Token not authorized");
			progress++;
			break;
		case P_SSE:
			p->kind = P_NONE;
			http_stream_write(req, "data: {}\n\n", 10);
			http_stream_end(req);
			progress++;
			break;
		case P_IMPORT:
			if (!p->started) {
				p->started = 1;
				http_stream_begin(req, 200, "text/event-stream", NULL);
				http_body_start(req, body_cb, p);
				progress++;
			} else if (p->paused) {
				p->paused = 0;
				http_body_pause(req, 0);
				progress++;
			} else if (final) {
				/* Answer without reading the rest (an import error). */
				p->kind = P_NONE;
				http_stream_write(req, "data: {\"error\":1}\n\n", 19);
				http_stream_end(req);
				progress++;
			}
			break;
		}
	}
}

static void
drain_client(int fd)
{
	char buf[65536];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		progress++;
		if (ncli + (size_t)n <= CLI_MAX) {
			memcpy(cli + ncli, buf, (size_t)n);
			ncli += (size_t)n;
		}
	}
}

static void
run_until_quiet(int cfd)
{
	int idle = 0;

	for (int i = 0; i < 100000 && idle < 3; i++) {
		progress = 0;
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (cfd >= 0)
			drain_client(cfd);
		if (progress || event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0)
			idle = 0;
		else
			idle++;
	}
}

/* Write a piece, running the server while the socket is full. */
static void
send_piece(int cfd, const uint8_t *d, size_t len)
{
	int stuck = 0;

	while (len > 0 && stuck < 50) {
		ssize_t n = write(cfd, d, len);
		if (n > 0) {
			d += n;
			len -= (size_t)n;
			stuck = 0;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return;	/* the server closed */
		run_until_quiet(cfd);
		service(0);
		stuck++;
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct http_limits lim = {
		.max_body = 8192, .max_header = 2048, .header_timeout = 5,
		.body_timeout = 5, .idle_timeout = 5, .max_conns = 8,
	};

	signal(SIGPIPE, SIG_IGN);
	log_setup(LOG_FATAL, 0);
	base = event_base_new();
	if (!base)
		abort();
	http_init(base, &lim, router, "eventodbd/fuzz");
	http_set_stream_filter(want_stream);
	cli = malloc(CLI_MAX);
	if (!cli)
		abort();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2], npieces, cfd;
	size_t off;

	if (size < 1)
		return 0;
	flags = data[0];
	npieces = (flags & 7) + 1;
	off = 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	cfd = sv[1];
	ncli = 0;
	nseen = 0;
	http_accept(sv[0]);
	{
		size_t lens[8], nlen = 0;
		for (int i = 0; i < npieces - 1 && off < size; i++)
			lens[nlen++] = 1 + data[off++] % 64;
		for (size_t i = 0; i <= nlen && off <= size; i++) {
			size_t len = i < nlen ? lens[i] : size - off;
			if (len > size - off)
				len = size - off;
			send_piece(cfd, data + off, len);
			off += len;
			run_until_quiet(cfd);
			if (!(flags & 16))
				service(0);
			run_until_quiet(cfd);
		}
	}
	if (flags & 8) {
		shutdown(cfd, SHUT_WR);
		run_until_quiet(cfd);
	}
	/* Answer everything, then the client goes away. */
	for (int round = 0; round < 100; round++) {
		int live = 0;
		service(1);
		run_until_quiet(cfd);
		for (int i = 0; i < NPEND; i++)
			live += pend[i].kind != P_NONE;
		if (!live)
			break;
	}
	drain_client(cfd);
	close(cfd);
	for (int round = 0; round < 100 && (http_open_conns() > 0 ||
	    event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED) > 0); round++) {
		service(1);
		run_until_quiet(-1);
	}
	if (http_open_conns() != 0 || http_busy_conns() != 0) {
		fprintf(stderr, "fuzz_http: %d connections (%d busy) left after the client closed\n",
		    http_open_conns(), http_busy_conns());
		abort();
	}
	if (event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED) != 0) {
		fprintf(stderr, "fuzz_http: %d events left after the client closed\n",
		    event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED));
		abort();
	}
	if (ncli < CLI_MAX && nseen < NSEEN)
		check_responses();
	return 0;
}
