/*
 * evload_conn.c - evload's connections: keep-alive HTTP/1.1 over
 * non-blocking TCP sockets on one libevent loop.
 *
 * Each of the --workers connections is a plain socket with a persistent
 * read event and a one-shot write event that is armed only when the
 * kernel's send buffer is full.  A connection owns two flat buffers
 * allocated once at start-up (output sized for --pipeline requests, input
 * grown by doubling only when a response is larger than anything seen
 * before) and a ring of the requests in flight, oldest first.  So in
 * steady state a request costs no allocation: its bytes are assembled
 * from pieces prepared at start-up (only the stream number and the
 * write's counter vary), one send() carries every request queued in a
 * callback, one read() usually carries the answers.
 *
 * Scheduling:
 *   closed loop (default)  every connection keeps --pipeline requests in
 *     flight; the next one goes out when an answer arrives.  Connection w
 *     walks the original load-test.go's sequence: iteration counter
 *     starting at w * 1000000, a stream.write to stream (n % streams),
 *     then, when n % read-every == 0, a stream.get of that stream.
 *     Latency is measured from the moment the request is queued.
 *   open loop (--rate R)  request k is due at t0 + k/R whatever happened
 *     to earlier requests; a timer hands due requests to connections that
 *     have room, and requests nobody has room for wait in a backlog (just
 *     a counter: their due times are computable).  Latency is measured
 *     from the due time, so a stalled server shows up in the percentiles
 *     (no coordinated omission).
 *
 * The socket plumbing (connect, send, read, close, back-off) is evconn.c,
 * shared with evcheck like the response parser (httpresp.c), which
 * handles the
 * status line, Content-Length, chunked bodies (sizes, extensions,
 * trailers), bodies delimited by EOF, 1xx interim responses and
 * Connection: close.  Only status 200 counts as a
 * success, as in the original; for other statuses the "code" member of a
 * JSON error body is counted too.  Requests in flight on a connection that
 * fails count as errors of that failure's kind, and the connection is
 * re-opened (at once if it had served something, else with back-off).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "evload.h"
#include "evconn.h"
#include "httpresp.h"

#define EVL_VERSION_UA	"evload/" PACKAGE_VERSION
#define RBUF_INIT	(16 * 1024)
#define SWEEP_MS	20
#define BACKOFF_MIN_MS	50
#define BACKOFF_MAX_MS	1000
#define TICK_MIN_NS	200000	/* open loop: at most one scheduler tick per 200 us */
#define CONN_MAGIC	0x45564c43u	/* "EVLC" */

struct evl_stats evl_stats;
struct evl_codes evl_codes;

/* A request in flight. */
struct inflight {
	uint64_t	t_sched;	/* latency is measured from here */
	uint64_t	t_sent;		/* timeouts are measured from here */
	unsigned	kind;
};

/* Where a worker is in the original's iteration sequence. */
struct gen {
	uint64_t	seq;
	int		read_pending;	/* the write of iteration seq is out, its read is next */
};

struct conn {
	unsigned	 magic;
	int		 id;
	struct evconn	 sock;		/* socket, buffers, parser (evconn.c) */
	struct event	*retry;		/* reconnect timer */
	int		 backoff_ms;
	uint64_t	 served;	/* responses on the current socket */
	int		 queued;	/* on the open-loop ready queue */
	size_t		 wcap;

	struct inflight	*q;		/* ring of --pipeline entries */
	int		 qhead, qn;
	struct gen	 gen;
};

static const struct evl_config *cfg;
static struct event_base *base;
static struct conn *conns;
static int nconns;

static struct sockaddr_storage addr;
static socklen_t addrlen;

/* Request pieces, built once. */
static char *post_head;		/* "POST <path>/rpc ... Content-Length: " */
static size_t post_head_len;
static char *w1, *w3, *r1, *r2, *get_req;
static size_t w1_len, w3_len, r1_len, r2_len, get_req_len;
static const char w2[] = "\",{\"data\":{\"counter\":";
static size_t max_req_len;

/* Run state. */
static uint64_t t0;
static int running, stopping;
static int inflight_total;
static uint64_t realtime_base;	/* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
static struct event *sweep_ev;

/* Open loop. */
static int open_loop;
static double period_ns;
static uint64_t next_k;		/* next request index to send */
static uint64_t due_cap;	/* due count frozen at stop */
static struct gen open_gen;
static struct event *tick_ev;
static int tick_armed;
static struct conn **readyq;	/* FIFO of connections with room */
static int rq_head, rq_n;

static void conn_connect(struct conn *c);
static void conn_fill(struct conn *c, uint64_t now);
static void open_dispatch(uint64_t now);
static void arm_tick(uint64_t now);

uint64_t
evl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Decimal digits of v into buf (no NUL); returns the length. */
static size_t
utoa(char *buf, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

static size_t
ndigits(uint64_t v)
{
	size_t n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

static char *
xasprintf(const char *fmt, const char *a, const char *b, const char *c2, const char *d)
{
	char *s;

	if (asprintf(&s, fmt, a, b, c2, d) < 0) {
		fprintf(stderr, "evload: out of memory\n");
		exit(2);
	}
	return s;
}

/* ------------------------------------------------------------------ requests */

static const char payload_text[] = "test data for profiling with some content to make it realistic";

static void
build_pieces(void)
{
	char *payload, batch[24];
	size_t plen = sizeof(payload_text) - 1;
	long i;
	int n;

	n = evc_post_head(NULL, 0, EVL_VERSION_UA, &cfg->srv, cfg->token);
	post_head = n < 0 ? NULL : malloc((size_t)n + 1);
	if (post_head == NULL) {
		fprintf(stderr, "evload: out of memory\n");
		exit(2);
	}
	post_head_len = (size_t)evc_post_head(post_head, (size_t)n + 1, EVL_VERSION_UA, &cfg->srv,
	    cfg->token);

	w1 = xasprintf("[\"stream.write\",\"%s", cfg->stream_prefix, NULL, NULL, NULL);
	w1_len = strlen(w1);

	payload = malloc((size_t)cfg->payload_size + 1);
	if (payload == NULL) {
		fprintf(stderr, "evload: out of memory\n");
		exit(2);
	}
	for (i = 0; i < cfg->payload_size; i++)
		payload[i] = payload_text[(size_t)i % plen];
	payload[cfg->payload_size] = '\0';
	w3 = xasprintf(",\"nested\":{\"field1\":\"value1\",\"field2\":42,\"field3\":true},"
	    "\"payload\":\"%s\"},\"metadata\":{\"correlationStreamName\":\"test-correlation\","
	    "\"source\":\"load-test\"},\"type\":\"TestEvent\"}]", payload, NULL, NULL, NULL);
	w3_len = strlen(w3);
	free(payload);

	r1 = xasprintf("[\"stream.get\",\"%s", cfg->stream_prefix, NULL, NULL, NULL);
	r1_len = strlen(r1);
	snprintf(batch, sizeof(batch), "%ld", cfg->batch);
	r2 = xasprintf("\",{\"batchSize\":%s,\"position\":0}]", batch, NULL, NULL, NULL);
	r2_len = strlen(r2);

	get_req = xasprintf("GET %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " EVL_VERSION_UA "\r\n\r\n",
	    cfg->srv.path, cfg->mix == EVL_MIX_HEALTH ? "/health" : "/version", cfg->srv.authority, NULL);
	get_req_len = strlen(get_req);

	/* head + length digits + CRLFCRLF + the longest body */
	max_req_len = post_head_len + 24 + w1_len + 20 + (sizeof(w2) - 1) + 20 + w3_len;
	if (r1_len + 20 + r2_len > w1_len + 20 + (sizeof(w2) - 1) + 20 + w3_len)
		max_req_len += r1_len + r2_len;
	if (get_req_len > max_req_len)
		max_req_len = get_req_len;
}

size_t
evl_write_body_len(long stream)
{
	return w1_len + ndigits((uint64_t)stream) + (sizeof(w2) - 1) + 19 + w3_len;
}

size_t
evl_read_body_len(long stream)
{
	return r1_len + ndigits((uint64_t)stream) + r2_len;
}

/* Append one request to c's output; `now` is CLOCK_MONOTONIC. */
static void
put_request(struct conn *c, unsigned kind, uint64_t stream, uint64_t now)
{
	char *p, sdig[20], cdig[20];
	size_t sl, cl, blen;
	uint64_t counter;

	if (c->wcap - c->sock.wlen < max_req_len) {
		/* cannot happen: wcap holds --pipeline requests and they all left */
		memmove(c->sock.wbuf, c->sock.wbuf + c->sock.woff, c->sock.wlen - c->sock.woff);
		c->sock.wlen -= c->sock.woff;
		c->sock.woff = 0;
	}
	p = c->sock.wbuf + c->sock.wlen;
	if (kind == EVL_GET) {
		memcpy(p, get_req, get_req_len);
		c->sock.wlen += get_req_len;
		return;
	}
	sl = utoa(sdig, stream);
	memcpy(p, post_head, post_head_len);
	p += post_head_len;
	if (kind == EVL_WRITE) {
		/* data.counter: Unix time in ns, like Go's time.Now().UnixNano() */
		counter = realtime_base + now;
		cl = utoa(cdig, counter);
		blen = w1_len + sl + (sizeof(w2) - 1) + cl + w3_len;
		p += utoa(p, blen);
		memcpy(p, "\r\n\r\n", 4);
		p += 4;
		memcpy(p, w1, w1_len);
		p += w1_len;
		memcpy(p, sdig, sl);
		p += sl;
		memcpy(p, w2, sizeof(w2) - 1);
		p += sizeof(w2) - 1;
		memcpy(p, cdig, cl);
		p += cl;
		memcpy(p, w3, w3_len);
		p += w3_len;
	} else {
		blen = r1_len + sl + r2_len;
		p += utoa(p, blen);
		memcpy(p, "\r\n\r\n", 4);
		p += 4;
		memcpy(p, r1, r1_len);
		p += r1_len;
		memcpy(p, sdig, sl);
		p += sl;
		memcpy(p, r2, r2_len);
		p += r2_len;
	}
	c->sock.wlen = (size_t)(p - c->sock.wbuf);
}

/* Next operation of a generator: kind and stream. */
static unsigned
gen_next(struct gen *g, uint64_t *stream)
{
	uint64_t s = g->seq % (uint64_t)cfg->streams;

	*stream = s;
	switch (cfg->mix) {
	case EVL_MIX_VERSION:
	case EVL_MIX_HEALTH:
		g->seq++;
		return EVL_GET;
	case EVL_MIX_READ:
		g->seq++;
		return EVL_READ;
	case EVL_MIX_WRITE:
		g->seq++;
		return EVL_WRITE;
	case EVL_MIX_RW:
	default:
		if (g->read_pending) {
			g->read_pending = 0;
			g->seq++;
			return EVL_READ;
		}
		if (cfg->read_every > 0 && g->seq % (uint64_t)cfg->read_every == 0)
			g->read_pending = 1;
		else
			g->seq++;
		return EVL_WRITE;
	}
}

/* Queue one request on c: bytes plus its in-flight entry. */
static void
issue(struct conn *c, unsigned kind, uint64_t stream, uint64_t t_sched, uint64_t now)
{
	struct inflight *f;

	put_request(c, kind, stream, now);
	f = &c->q[(c->qhead + c->qn) % cfg->pipeline];
	f->t_sched = t_sched;
	f->t_sent = now;
	f->kind = kind;
	c->qn++;
	inflight_total++;
	evl_stats.sent++;
}

/* ------------------------------------------------------------------ errors */

static void
count_code(const char *body, size_t len)
{
	const char *k, *e, *end = body + len;
	char name[EVL_CODE_LEN];
	size_t n, i;
	int j;

	k = memmem(body, len, "\"code\"", 6);
	if (k == NULL)
		return;
	k += 6;
	while (k < end && (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n'))
		k++;
	if (k >= end || *k++ != ':')
		return;
	while (k < end && (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n'))
		k++;
	if (k >= end || *k++ != '"')
		return;
	e = memchr(k, '"', (size_t)(end - k));
	if (e == NULL)
		return;
	n = (size_t)(e - k);
	if (n == 0)
		return;
	if (n > EVL_CODE_LEN - 1)
		n = EVL_CODE_LEN - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)k[i];
		name[i] = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-' ? (char)ch : '?';
	}
	name[n] = '\0';
	for (j = 0; j < evl_codes.n; j++) {
		if (strcmp(evl_codes.name[j], name) == 0) {
			evl_codes.count[j]++;
			return;
		}
	}
	if (evl_codes.n < EVL_MAX_CODES) {
		memcpy(evl_codes.name[evl_codes.n], name, n + 1);
		evl_codes.count[evl_codes.n++] = 1;
	} else {
		evl_codes.other++;
	}
}

static void
check_drained(void)
{
	if (stopping && inflight_total == 0)
		evl_drained();
}

/*
 * Close c's socket.  Requests in flight become errors of kind `why`
 * (why < 0: the close is expected and nothing is in flight).  Unless the
 * run is stopping, a new connection follows: at once when this one had
 * served something, else after a back-off.
 */
static void
conn_drop(struct conn *c, int why)
{
	int delay;

	while (c->qn > 0) {
		struct inflight *f = &c->q[c->qhead];

		evl_stats.err[f->kind]++;
		evl_stats.fail[why < 0 ? EVL_F_CLOSED : why]++;
		c->qhead = (c->qhead + 1) % cfg->pipeline;
		c->qn--;
		inflight_total--;
	}
	c->qhead = 0;
	evc_close(&c->sock);
	/* An unfinished iteration's read is given up with the connection. */
	c->gen.read_pending = 0;

	if (!stopping && running) {
		if (c->served > 0 && why != EVL_F_CONNECT) {
			c->backoff_ms = 0;
			delay = 0;
		} else {
			delay = evc_backoff(&c->backoff_ms, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
		}
		evc_timer_ms(c->retry, delay);
	}
	check_drained();
}

static void
connect_failed(struct conn *c)
{
	evl_stats.fail[EVL_F_CONNECT]++;
	conn_drop(c, EVL_F_CONNECT);
}

/* ------------------------------------------------------------------ output */

static void
conn_flush(struct conn *c)
{
	if (evc_flush(&c->sock) < 0)
		conn_drop(c, EVL_F_CLOSED);
}

/* ------------------------------------------------------------------ input */

/* The first protocol error of a run is shown (escaped, cut short). */
static void
protocol_note(const char *what, const char *b, size_t n)
{
	static int shown;
	size_t i;

	if (shown)
		return;
	shown = 1;
	fprintf(stderr, "evload: %s (first bytes: \"", what);
	for (i = 0; i < n && i < 160; i++) {
		unsigned char ch = (unsigned char)b[i];

		if (ch == '\r')
			fputs("\\r", stderr);
		else if (ch == '\n')
			fputs("\\n", stderr);
		else if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
			fprintf(stderr, "\\x%02x", ch);
		else
			fputc(ch, stderr);
	}
	fprintf(stderr, "\"%s); further protocol errors are only counted\n", n > 160 ? "..." : "");
}

/* One complete final response of `len` bytes at b. Returns -1 if c was dropped. */
static int
on_response(void *arg, const char *b, size_t len, uint64_t now)
{
	struct conn *c = arg;
	struct hresp *p = &c->sock.p;
	struct inflight *f;
	uint64_t lat;

	if (c->qn == 0) {
		protocol_note("response to no request", b, len);
		evl_stats.fail[EVL_F_PROTOCOL]++;
		conn_drop(c, EVL_F_PROTOCOL);
		return -1;
	}
	f = &c->q[c->qhead];
	c->qhead = (c->qhead + 1) % cfg->pipeline;
	c->qn--;
	inflight_total--;
	c->served++;
	if (p->status == 200) {
		lat = now > f->t_sched ? now - f->t_sched : 0;
		evl_stats.ok[f->kind]++;
		evl_hist_record(&evl_stats.hist[f->kind], lat);
		evl_hist_record(&evl_stats.interval, lat);
	} else {
		evl_stats.err[f->kind]++;
		evl_stats.status[p->status < 600 ? p->status : 599]++;
		count_code(b + p->body_start, len - p->body_start);
	}
	if (p->close) {
		conn_drop(c, EVL_F_CLOSED);
		return -1;
	}
	return 0;
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	int rd, rc;
	uint64_t now;

	rd = evc_read(&c->sock);
	if (rd & EVC_NOMEM) {
		fprintf(stderr, "evload: out of memory\n");
		exit(2);
	}
	if (rd & EVC_TOOBIG) {
		evl_stats.fail[EVL_F_PROTOCOL]++;
		conn_drop(c, EVL_F_PROTOCOL);
		return;
	}
	now = evl_now_ns();
	rc = evc_responses(&c->sock, rd & EVC_EOF, now, on_response, c);
	if (rc == EVC_MALFORMED) {
		protocol_note("could not parse a response", c->sock.rbuf + c->sock.rpos,
		    c->sock.rlen - c->sock.rpos);
		evl_stats.fail[EVL_F_PROTOCOL]++;
		conn_drop(c, EVL_F_PROTOCOL);
		return;
	}
	if (rc < 0)
		return;
	if (rd & (EVC_EOF | EVC_ERR)) {
		/* The peer went away: only unanswered requests are errors. */
		conn_drop(c, c->qn > 0 ? EVL_F_CLOSED : -1);
		return;
	}
	conn_fill(c, now);
	check_drained();
}

static void
conn_up(struct conn *c, uint64_t now)
{
	c->sock.state = EVC_UP;
	c->served = 0;
	evl_stats.connects++;
	event_add(c->sock.rev, NULL);
	conn_fill(c, now);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->sock.state == EVC_CONNECTING) {
		if (evc_connected(&c->sock) < 0) {
			connect_failed(c);
			return;
		}
		conn_up(c, evl_now_ns());
		return;
	}
	conn_flush(c);
}

static void
conn_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (running && !stopping)
		conn_connect(c);
}

static void
conn_connect(struct conn *c)
{
	switch (evc_open(&c->sock, base, &addr, addrlen, conn_read_cb, conn_write_cb, c,
	    evl_now_ns())) {
	case 1:
		conn_up(c, c->sock.t_connect);
		return;
	case 0:
		return;
	case -2:
		fprintf(stderr, "evload: could not create events\n");
		exit(2);
	default:
		if (c->sock.fd < 0) {
			static int said;

			if (!said) {
				said = 1;
				fprintf(stderr, "evload: could not create socket: %s\n",
				    strerror(errno));
			}
		}
		connect_failed(c);
		return;
	}
}

/* ------------------------------------------------------------------ scheduling */

static void
readyq_push(struct conn *c)
{
	if (c->queued)
		return;
	readyq[(rq_head + rq_n) % nconns] = c;
	rq_n++;
	c->queued = 1;
}

static uint64_t
open_due(uint64_t now)
{
	uint64_t due;

	if (stopping)
		return due_cap;
	if (now < t0)
		return 0;
	due = (uint64_t)((double)(now - t0) / period_ns) + 1;
	return due;
}

/* Queue as many requests on c as it may take now, then send them. */
static void
conn_fill(struct conn *c, uint64_t now)
{
	uint64_t stream;
	unsigned kind;

	if (c->sock.state != EVC_UP)
		return;
	if (open_loop) {
		uint64_t due = open_due(now);

		while (c->qn < cfg->pipeline && next_k < due) {
			uint64_t t_sched = t0 + (uint64_t)((double)next_k * period_ns);

			kind = gen_next(&open_gen, &stream);
			issue(c, kind, stream, t_sched, now);
			next_k++;
		}
		if (c->qn < cfg->pipeline && !stopping)
			readyq_push(c);
		if (next_k >= due)
			arm_tick(now);
	} else {
		while (c->qn < cfg->pipeline) {
			/* After the end only the read of an unfinished iteration goes out. */
			if (stopping && !(c->gen.read_pending && c->qn == 0))
				break;
			kind = gen_next(&c->gen, &stream);
			issue(c, kind, stream, now, now);
		}
	}
	if (stopping && c->qn == 0) {
		conn_drop(c, -1);	/* done: let the server forget us now */
		return;
	}
	if (c->sock.wlen > c->sock.woff)
		conn_flush(c);
}

/* Open loop, nothing overdue: wake up when the next request is due. */
static void
arm_tick(uint64_t now)
{
	uint64_t next_t, wait;
	struct timeval tv;

	if (tick_armed || stopping)
		return;
	next_t = t0 + (uint64_t)((double)next_k * period_ns);
	wait = next_t > now ? next_t - now : 0;
	if (wait < TICK_MIN_NS)
		wait = TICK_MIN_NS;
	tv.tv_sec = (time_t)(wait / 1000000000u);
	tv.tv_usec = (suseconds_t)((wait % 1000000000u) / 1000);
	evtimer_add(tick_ev, &tv);
	tick_armed = 1;
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	tick_armed = 0;
	open_dispatch(evl_now_ns());
}

/* Open loop: hand due requests to connections with room, arm the next tick. */
static void
open_dispatch(uint64_t now)
{
	uint64_t due;

	if (stopping)
		return;
	due = open_due(now);
	while (next_k < due && rq_n > 0) {
		struct conn *c = readyq[rq_head];

		rq_head = (rq_head + 1) % nconns;
		rq_n--;
		c->queued = 0;
		conn_fill(c, now);	/* pushes c back if it still has room */
	}
	if (next_k < due)
		return;	/* backlog: connections take more as they free up */
	arm_tick(now);
}

/* Every SWEEP_MS: timeouts of connects and requests; open-loop backlog. */
static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = evl_now_ns();
	int i;

	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		if (c->sock.state == EVC_CONNECTING && now - c->sock.t_connect > cfg->timeout_ns)
			connect_failed(c);
		else if (c->sock.state == EVC_UP && c->qn > 0 &&
		    now - c->q[c->qhead].t_sent > cfg->timeout_ns)
			conn_drop(c, EVL_F_TIMEOUT);
	}
	if (open_loop && !tick_armed)
		open_dispatch(now);
}

/* ------------------------------------------------------------------ run */

int
evl_run_init(struct event_base *b, const struct evl_config *config, char *err, size_t errlen)
{
	struct timespec rt;
	struct timeval tv;
	int i;

	cfg = config;
	base = b;
	if (evc_resolve(cfg->srv.host, cfg->srv.port, &addr, &addrlen, err, errlen) < 0)
		return -1;

	build_pieces();

	clock_gettime(CLOCK_REALTIME, &rt);
	realtime_base = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec - evl_now_ns();

	nconns = cfg->workers;
	conns = calloc((size_t)nconns, sizeof(*conns));
	readyq = calloc((size_t)nconns, sizeof(*readyq));
	if (conns == NULL || readyq == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		c->magic = CONN_MAGIC;
		c->id = i;
		c->sock.fd = -1;
		c->wcap = max_req_len * (size_t)cfg->pipeline + max_req_len;
		c->sock.wbuf = malloc(c->wcap);
		c->sock.rcap = RBUF_INIT;
		c->sock.rbuf = malloc(c->sock.rcap);
		c->q = calloc((size_t)cfg->pipeline, sizeof(*c->q));
		c->retry = evtimer_new(base, conn_retry_cb, c);
		if (c->sock.wbuf == NULL || c->sock.rbuf == NULL || c->q == NULL || c->retry == NULL) {
			snprintf(err, errlen, "out of memory for %d connections", nconns);
			return -1;
		}
		/* load-test.go: streamID starts at workerID * 1000000 */
		c->gen.seq = (uint64_t)i * 1000000u;
		if (cfg->spread)
			c->gen.seq += (uint64_t)((double)i * (double)cfg->streams / (double)nconns);
	}

	open_loop = cfg->rate > 0;
	if (open_loop) {
		period_ns = 1e9 / cfg->rate;
		tick_ev = evtimer_new(base, tick_cb, NULL);
	}
	sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, NULL);
	if (sweep_ev == NULL || (open_loop && tick_ev == NULL)) {
		snprintf(err, errlen, "could not create timers");
		return -1;
	}
	tv.tv_sec = 0;
	tv.tv_usec = SWEEP_MS * 1000;
	event_add(sweep_ev, &tv);
	return 0;
}

void
evl_run_start(uint64_t start)
{
	int i;

	t0 = start;
	running = 1;
	for (i = 0; i < nconns; i++)
		conn_connect(&conns[i]);
	if (open_loop)
		open_dispatch(evl_now_ns());
}

/* The duration is over: send nothing new, let what is in flight finish. */
void
evl_run_stop(uint64_t now)
{
	int i;

	if (stopping)
		return;
	if (open_loop) {
		due_cap = open_due(now);
		if (due_cap < next_k)
			due_cap = next_k;
		evl_stats.scheduled = due_cap;
		evl_stats.unsent = due_cap - next_k;
		due_cap = next_k;	/* the backlog is dropped */
		if (tick_armed) {
			evtimer_del(tick_ev);
			tick_armed = 0;
		}
	}
	stopping = 1;
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		evtimer_del(c->retry);
		if (c->sock.state == EVC_CONNECTING || (c->sock.state == EVC_UP && c->qn == 0))
			conn_drop(c, -1);
	}
	check_drained();
}

int
evl_run_inflight(void)
{
	return inflight_total;
}

void
evl_run_free(void)
{
	int i;

	running = 0;
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		evc_close(&c->sock);
		if (c->retry)
			event_free(c->retry);
		free(c->sock.wbuf);
		free(c->sock.rbuf);
		free(c->q);
	}
	free(conns);
	free(readyq);
	if (sweep_ev)
		event_free(sweep_ev);
	if (tick_ev)
		event_free(tick_ev);
	free(post_head);
	free(w1);
	free(w3);
	free(r1);
	free(r2);
	free(get_req);
}
