/*
 * evcheck_run.c - evcheck's load phase: the clients and the category
 * followers on one libevent loop, and the history they record.
 *
 * Every client is one keep-alive connection with one request in flight
 * at a time (so a client's operations are sequential, as in a Jepsen
 * history).  An operation is recorded in ec.ops when its request is put
 * on the wire and completed when its answer arrives or its connection
 * fails: a write whose connection dies, times out or gets a 5xx is
 * indeterminate (it may or may not have been stored), a 4xx is a definite
 * failure.  A failed connection is re-opened after a small back-off
 * (doubling, 20 ms to 500 ms) and the client carries on, so a run lives
 * through the server or PostgreSQL being down for a while; after a 5xx
 * answer a connection pauses the same way before its next request.
 *
 * Workloads:
 *   mixed     every client picks a random stream and does a write with
 *             expectedVersion = the version it last knew of (70 %), a
 *             write without (10 %), a stream.get from its known version
 *             (15 %) or a category.get from its known global position (5 %).
 *   conflict  round r: all clients write to one stream at once with the
 *             same expectedVersion (the version after round r-1); the
 *             next round starts when every answer is in.  A round is bad
 *             unless exactly one write got 200 and the others 409
 *             STREAM_VERSION_CONFLICT; after a round without exactly one
 *             200 the stream's version is re-read (stream.version).
 * Followers poll category.get from their cursor (batchSize 100) and log
 * every global position they see, for the skip check.
 *
 * The buffers are allocated once per connection; a request is assembled
 * with snprintf into the connection's output buffer.  Answers are parsed
 * with json-c (one tokener, reused).
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "evcheck.h"
#include "evconn.h"
#include "httpresp.h"

#define WBUF_SIZE	8192
#define RBUF_INIT	(64 * 1024)
#define SWEEP_MS	20
#define BACKOFF_MIN_MS	20
#define BACKOFF_MAX_MS	500
#define FOLLOW_IDLE_MS	5
#define PROGRESS_S	5

enum role { R_CLIENT, R_FOLLOWER };

struct conn {
	int		 idx;		/* client number, or follower number */
	enum role	 role;
	struct evconn	 sock;		/* socket, buffers, parser (evconn.c) */
	struct event	*timer;		/* reconnect, pacing, follower idle */
	int		 backoff_ms;
	uint64_t	 served;	/* answers on the current socket */
	int		 ever_up;
	char		 wspace[WBUF_SIZE];	/* sock.wbuf */

	int		 busy;		/* a request is in flight */
	uint64_t	 t_sent;
	uint32_t	 op;		/* client: index of the op in flight */
	int		 paced;		/* client: 1 waiting for its --rate slot, 2 slot reached */
	int		 hold_ms;	/* pause after a 5xx answer (doubling) */
	uint32_t	 retry_op;	/* --retry: the indeterminate write to send again */

	int64_t		*known;		/* client: version of each stream it knows */
	int64_t		*cat_known;	/* client: highest global position per category */
	uint64_t	 rng;
	struct ec_follower *f;
};

static struct event_base *base;
static struct conn *conns;
static int nconns, nclients;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static char post_head[1024];
static size_t post_head_len;
static json_tokener *tok;

static uint64_t t0;
static int stopping, running;
static uint64_t realtime_ms_base;	/* CLOCK_REALTIME ms - CLOCK_MONOTONIC ms */
static double pace_period_ns;
static uint64_t pace_next;
static struct event *sweep_ev, *stop_ev, *sigint_ev, *sigterm_ev, *progress_ev;
static uint64_t last_progress_ops;

/* conflict workload */
static int64_t cur_version = -1;
static int resync;		/* the stream's version must be re-read first */
static int round_pending;	/* answers still expected in this round */
static int round_ok, round_conflict, round_other;
static int64_t round_ok_pos;
static int version_busy;

static void conn_connect(struct conn *c);
static void conn_flush(struct conn *c);
static void conn_next(struct conn *c, uint64_t now);
static void try_round(uint64_t now);
static void maybe_finish(void);

/* ------------------------------------------------------------------ helpers */

static uint64_t
rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t
new_op(enum ec_kind kind, uint32_t client, uint32_t key, uint64_t now)
{
	struct ec_op *o;

	if (ec.nops == ec.capops) {
		size_t cap = ec.capops ? ec.capops * 2 : 65536;
		struct ec_op *n = realloc(ec.ops, cap * sizeof(*n));

		if (n == NULL)
			ec_fatal("out of memory for %zu operations", cap);
		ec.ops = n;
		ec.capops = cap;
	}
	if (ec.nops >= ((uint64_t)1 << 40))
		ec_fatal("too many operations");
	o = &ec.ops[ec.nops];
	memset(o, 0, sizeof(*o));
	o->t_inv = now - t0;
	o->client = client;
	o->key = key;
	o->kind = (uint8_t)kind;
	o->outcome = EC_PENDING;
	o->ev = EC_NOEV;
	o->round = (uint32_t)ec.rounds;
	return (uint32_t)ec.nops++;
}

/* The id of op i: UUIDv7, 48-bit ms timestamp, 34 bits of the run's nonce, 40 bits of i. */
static void
make_id(uint8_t id[16], uint64_t i, uint64_t now)
{
	uint64_t ms = realtime_ms_base + now / 1000000u, n = ec.nonce;

	id[0] = (uint8_t)(ms >> 40);
	id[1] = (uint8_t)(ms >> 32);
	id[2] = (uint8_t)(ms >> 24);
	id[3] = (uint8_t)(ms >> 16);
	id[4] = (uint8_t)(ms >> 8);
	id[5] = (uint8_t)ms;
	id[6] = (uint8_t)(0x70 | ((n >> 30) & 0x0f));
	id[7] = (uint8_t)(n >> 22);
	id[8] = (uint8_t)(0x80 | ((n >> 16) & 0x3f));
	id[9] = (uint8_t)(n >> 8);
	id[10] = (uint8_t)n;
	id[11] = (uint8_t)(i >> 32);
	id[12] = (uint8_t)(i >> 24);
	id[13] = (uint8_t)(i >> 16);
	id[14] = (uint8_t)(i >> 8);
	id[15] = (uint8_t)i;
}

/* ------------------------------------------------------------------ requests */

static void
put_rpc(struct conn *c, const char *body, int blen)
{
	int n;

	if (blen < 0 || (size_t)blen >= WBUF_SIZE / 2)
		ec_fatal("request body too long");
	c->sock.woff = 0;
	memcpy(c->sock.wbuf, post_head, post_head_len);
	n = snprintf(c->sock.wbuf + post_head_len, WBUF_SIZE - post_head_len, "%d\r\n\r\n", blen);
	c->sock.wlen = post_head_len + (size_t)n;
	memcpy(c->sock.wbuf + c->sock.wlen, body, (size_t)blen);
	c->sock.wlen += (size_t)blen;
}

static void
send_request(struct conn *c, uint64_t now)
{
	c->busy = 1;
	c->t_sent = now;
	memset(&c->sock.p, 0, sizeof(c->sock.p));
	conn_flush(c);
}

/* Send write op i (again, for --retry: the same id and body). */
static void
send_write(struct conn *c, uint32_t i, uint64_t now)
{
	char body[2048], data[512], idt[37], evt[48];
	struct ec_op *o = &ec.ops[i];
	int n;

	ec_uuid_text(o->id, idt);
	ec_expected_data(i, data, sizeof(data));
	evt[0] = '\0';
	if (o->ev != EC_NOEV)
		snprintf(evt, sizeof(evt), ",\"expectedVersion\":%lld", (long long)o->ev);
	n = snprintf(body, sizeof(body), "[\"stream.write\",\"%s\",%s,{\"id\":\"%s\"%s}]",
	    ec.stream_name[o->key], data, idt, evt);
	put_rpc(c, body, n);
	c->op = i;
	send_request(c, now);
}

static void
issue_write(struct conn *c, uint32_t stream, int64_t ev, uint64_t now)
{
	uint32_t i = new_op(EC_WRITE, (uint32_t)c->idx, stream, now);

	ec.ops[i].ev = ev;
	make_id(ec.ops[i].id, i, now);
	send_write(c, i, now);
}

/* --retry: the indeterminate write of c goes out once more, unchanged. */
static void
retry_write(struct conn *c, uint64_t now)
{
	uint32_t i = c->retry_op;
	struct ec_op *o = &ec.ops[i];

	c->retry_op = EC_NONE;
	o->outcome = EC_PENDING;
	o->why = EC_W_NONE;
	o->status = 0;
	o->code = 0;
	o->retries++;
	ec.retries++;
	send_write(c, i, now);
}

/* A read (stream.get or category.get, by kind) of key from position start. */
static void
issue_get(struct conn *c, enum ec_kind kind, uint32_t key, int64_t start, uint64_t now)
{
	char body[512];
	uint32_t i = new_op(kind, (uint32_t)c->idx, key, now);
	int n;

	ec.ops[i].ev = start;
	n = snprintf(body, sizeof(body), "[\"%s\",\"%s\",{\"position\":%lld,\"batchSize\":%d}]",
	    kind == EC_CREAD ? "category.get" : "stream.get",
	    kind == EC_CREAD ? ec.cat_name[key] : ec.stream_name[key], (long long)start,
	    EC_READ_BATCH);
	put_rpc(c, body, n);
	c->op = i;
	send_request(c, now);
}

static void
issue_read(struct conn *c, uint32_t stream, uint64_t now)
{
	issue_get(c, EC_READ, stream, c->known[stream] > 0 ? c->known[stream] : 0, now);
}

static void
issue_cread(struct conn *c, uint32_t cat, uint64_t now)
{
	issue_get(c, EC_CREAD, cat, c->cat_known[cat] > 1 ? c->cat_known[cat] : 1, now);
}

static void
issue_version(struct conn *c, uint32_t stream, uint64_t now)
{
	char body[512];
	uint32_t i = new_op(EC_VERSION, (uint32_t)c->idx, stream, now);
	int n;

	n = snprintf(body, sizeof(body), "[\"stream.version\",\"%s\"]", ec.stream_name[stream]);
	put_rpc(c, body, n);
	c->op = i;
	version_busy = 1;
	send_request(c, now);
}

static void
issue_follow(struct conn *c, uint64_t now)
{
	char body[512];
	int n;

	n = snprintf(body, sizeof(body), "[\"category.get\",\"%s\",{\"position\":%lld,\"batchSize\":%d}]",
	    ec.cat_name[c->f->category], (long long)c->f->cursor, EC_FOLLOW_BATCH);
	put_rpc(c, body, n);
	c->f->polls++;
	ec.follower_polls++;
	send_request(c, now);
}

/* ------------------------------------------------------------------ completion */

static void
round_done_one(const struct ec_op *o)
{
	if (o->outcome == EC_OK) {
		round_ok++;
		round_ok_pos = o->pos;
	} else if (o->status == 409 && ec.codes[o->code][0] &&
	    strcmp(ec.codes[o->code], "STREAM_VERSION_CONFLICT") == 0) {
		round_conflict++;
	} else {
		round_other++;
	}
	if (--round_pending > 0)
		return;
	if (round_ok != 1 || round_conflict != ec.cfg.clients - 1) {
		ec.rounds_bad++;
		if (!ec.round_example[0])
			snprintf(ec.round_example, sizeof(ec.round_example),
			    "round %llu (expectedVersion %lld): %d ok, %d conflicts, %d other",
			    (unsigned long long)ec.rounds, (long long)cur_version, round_ok,
			    round_conflict, round_other);
	}
	if (round_ok == 1)
		cur_version = round_ok_pos;
	else
		resync = 1;
	ec.rounds++;
	if ((long)ec.rounds >= ec.cfg.rounds && !stopping) {
		stopping = 1;
		maybe_finish();
	}
}

/* The op in flight on c ends without an answer. */
static void
fail_inflight(struct conn *c, enum ec_why why, uint64_t now)
{
	struct ec_op *o;

	if (!c->busy)
		return;
	c->busy = 0;
	if (c->role != R_CLIENT)
		return;
	o = &ec.ops[c->op];
	o->t_done = now - t0;
	o->outcome = EC_INDET;
	o->why = (uint8_t)why;
	if (o->kind == EC_VERSION)
		version_busy = 0;
	if (ec.cfg.workload == EC_CONFLICT && o->kind == EC_WRITE)
		round_done_one(o);
	else if (ec.cfg.retry && o->kind == EC_WRITE)
		c->retry_op = c->op;
}

static json_object *
parse_json(const char *b, size_t n)
{
	json_object *v;

	if (n > INT32_MAX)
		return NULL;
	json_tokener_reset(tok);
	v = json_tokener_parse_ex(tok, b, (int)n);
	if (v == NULL || json_tokener_get_error(tok) != json_tokener_success) {
		if (v)
			json_object_put(v);
		return NULL;
	}
	return v;
}

static int
get_int(json_object *o, const char *key, int64_t *out)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return -1;
	*out = json_object_get_int64(v);
	return 0;
}

/* Error body: remember the code; a conflict's details.actual updates *actual. */
static void
error_body(struct ec_op *o, json_object *v, int64_t *actual)
{
	json_object *e, *code, *det;

	if (v == NULL || !json_object_object_get_ex(v, "error", &e) ||
	    !json_object_is_type(e, json_type_object))
		return;
	if (json_object_object_get_ex(e, "code", &code) && json_object_is_type(code, json_type_string))
		o->code = (uint8_t)ec_code_index(json_object_get_string(code),
		    (size_t)json_object_get_string_len(code));
	if (actual && json_object_object_get_ex(e, "details", &det) &&
	    json_object_is_type(det, json_type_object))
		(void)get_int(det, "actual", actual);
}

/* Last element's integer at index `at`; count of elements.  -1 if not such an array. */
static int
array_last(json_object *v, size_t at, int64_t *last, size_t *count)
{
	json_object *m, *x;
	size_t n, i;

	if (v == NULL || !json_object_is_type(v, json_type_array))
		return -1;
	n = json_object_array_length(v);
	*count = n;
	for (i = 0; i < n; i++) {
		m = json_object_array_get_idx(v, i);
		if (!json_object_is_type(m, json_type_array) || json_object_array_length(m) <= at)
			return -1;
		x = json_object_array_get_idx(m, at);
		if (!json_object_is_type(x, json_type_int))
			return -1;
		*last = json_object_get_int64(x);
	}
	return 0;
}

static void
client_answer(struct conn *c, int status, const char *body, size_t blen, uint64_t now)
{
	struct ec_op *o = &ec.ops[c->op];
	json_object *v = parse_json(body, blen);
	int64_t a, b, actual = INT64_MIN;
	size_t cnt = 0;

	c->busy = 0;
	o->t_done = now - t0;
	o->status = (uint16_t)status;
	if (status >= 500)
		ec.errors_5xx++;
	switch (o->kind) {
	case EC_WRITE:
		if (status == 200) {
			if (v && get_int(v, "position", &a) == 0 && get_int(v, "globalPosition", &b) == 0) {
				o->outcome = EC_OK;
				o->pos = a;
				o->gpos = b;
				c->known[o->key] = a;
				if (c->cat_known[ec.stream_cat[o->key]] < b)
					c->cat_known[ec.stream_cat[o->key]] = b;
			} else {
				o->outcome = EC_INDET;
				o->why = EC_W_PROTOCOL;
				if (ec.cfg.retry && ec.cfg.workload == EC_MIXED)
					c->retry_op = c->op;
			}
		} else if (status >= 500) {
			o->outcome = EC_INDET;
			o->why = EC_W_5XX;
			error_body(o, v, NULL);
			if (ec.cfg.retry && ec.cfg.workload == EC_MIXED)
				c->retry_op = c->op;
		} else {
			o->outcome = EC_FAIL;
			error_body(o, v, &actual);
			if (status == 409) {
				ec.conflicts++;
				if (actual != INT64_MIN)
					c->known[o->key] = actual;
			}
		}
		if (ec.cfg.workload == EC_CONFLICT)
			round_done_one(o);
		break;
	case EC_READ:
	case EC_CREAD:
		if (status == 200 && array_last(v, o->kind == EC_READ ? 2 : 4, &a, &cnt) == 0) {
			o->outcome = EC_OK;
			o->gpos = (int64_t)cnt;
			o->full = cnt >= EC_READ_BATCH;
			o->pos = cnt ? a : o->ev - 1;
			if (cnt && o->kind == EC_READ && c->known[o->key] < a)
				c->known[o->key] = a;
			if (cnt && o->kind == EC_CREAD && c->cat_known[o->key] < a)
				c->cat_known[o->key] = a;
		} else {
			o->outcome = status == 200 ? EC_INDET : EC_FAIL;
			o->why = status == 200 ? EC_W_PROTOCOL : EC_W_NONE;
			error_body(o, v, NULL);
		}
		break;
	case EC_VERSION:
		version_busy = 0;
		if (status == 200 && v == NULL && blen >= 4 && memcmp(body, "null", 4) == 0) {
			o->outcome = EC_OK;
			o->pos = -1;
		} else if (status == 200 && v && json_object_is_type(v, json_type_int)) {
			o->outcome = EC_OK;
			o->pos = json_object_get_int64(v);
		} else {
			o->outcome = EC_FAIL;
			error_body(o, v, NULL);
		}
		if (o->outcome == EC_OK) {
			cur_version = o->pos;
			resync = 0;
		}
		break;
	}
	if (v)
		json_object_put(v);
}

static void
follower_answer(struct conn *c, int status, const char *body, size_t blen, uint64_t now)
{
	struct ec_follower *f = c->f;
	json_object *v, *m, *x;
	size_t n, i;
	int64_t g, prev;

	c->busy = 0;
	if (status >= 500)
		ec.errors_5xx++;
	if (status != 200)
		return;
	v = parse_json(body, blen);
	if (v == NULL || !json_object_is_type(v, json_type_array)) {
		if (v)
			json_object_put(v);
		return;
	}
	n = json_object_array_length(v);
	prev = f->nseen ? f->seen[f->nseen - 1] : 0;
	for (i = 0; i < n; i++) {
		m = json_object_array_get_idx(v, i);
		if (!json_object_is_type(m, json_type_array) || json_object_array_length(m) < 8)
			continue;
		x = json_object_array_get_idx(m, 4);
		if (!json_object_is_type(x, json_type_int))
			continue;
		g = json_object_get_int64(x);
		if (g <= prev || g < f->cursor) {
			if (!f->order_errors)
				snprintf(f->order_example, sizeof(f->order_example),
				    "N8 category %s: a poll from %lld returned globalPosition %lld after %lld",
				    ec.cat_name[f->category], (long long)f->cursor, (long long)g,
				    (long long)prev);
			f->order_errors++;
			continue;
		}
		if (f->nseen == f->capseen) {
			size_t cap = f->capseen ? f->capseen * 2 : 4096;
			int64_t *ns = realloc(f->seen, cap * sizeof(*ns));

			if (ns == NULL)
				ec_fatal("out of memory");
			f->seen = ns;
			f->capseen = cap;
		}
		f->seen[f->nseen++] = g;
		prev = g;
	}
	if (f->nseen)
		f->cursor = f->seen[f->nseen - 1] + 1;
	json_object_put(v);
	if (n < EC_FOLLOW_BATCH && !stopping) {
		struct timeval tv = { 0, FOLLOW_IDLE_MS * 1000 };

		evtimer_add(c->timer, &tv);
	}
	(void)now;
}

/* ------------------------------------------------------------------ connections */

/* c failed (why) or is done: close it, fail what is in flight, reconnect unless stopping. */
static void
conn_drop(struct conn *c, enum ec_why why)
{
	uint64_t now = ec_now_ns();
	int delay;

	fail_inflight(c, why, now);
	evc_close(&c->sock);
	if (!stopping) {
		if (c->served > 0) {
			c->backoff_ms = 0;
			delay = 0;
		} else {
			delay = evc_backoff(&c->backoff_ms, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
		}
		c->served = 0;
		evc_timer_ms(c->timer, delay);
	}
	if (ec.cfg.workload == EC_CONFLICT && c->role == R_CLIENT)
		try_round(now);
	maybe_finish();
}

static void
conn_flush(struct conn *c)
{
	if (evc_flush(&c->sock) < 0)
		conn_drop(c, EC_W_CLOSED);
}

static void
on_answer(struct conn *c, const char *b, size_t len, uint64_t now)
{
	const char *body;
	size_t blen = 0;

	body = hresp_body(&c->sock.p, b, len, &blen);
	if (body == NULL) {
		body = "";
		blen = 0;
	}
	c->served++;
	c->backoff_ms = 0;
	if (c->sock.p.status >= 500) {
		evc_backoff(&c->hold_ms, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
	} else {
		c->hold_ms = 0;
	}
	if (c->role == R_CLIENT)
		client_answer(c, c->sock.p.status, body, blen, now);
	else
		follower_answer(c, c->sock.p.status, body, blen, now);
}

/* A final response on c: returns -1 when c was dropped. */
static int
conn_response(void *arg, const char *b, size_t len, uint64_t now)
{
	struct conn *c = arg;
	int close_after = c->sock.p.close;

	if (!c->busy) {
		conn_drop(c, EC_W_PROTOCOL);	/* an answer nobody asked for */
		return -1;
	}
	on_answer(c, b, len, now);
	if (close_after) {
		conn_drop(c, EC_W_CLOSED);
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
	if (rd & EVC_NOMEM)
		ec_fatal("out of memory");
	if (rd & EVC_TOOBIG) {
		conn_drop(c, EC_W_PROTOCOL);
		return;
	}
	now = ec_now_ns();
	rc = evc_responses(&c->sock, rd & EVC_EOF, now, conn_response, c);
	if (rc == EVC_MALFORMED) {
		conn_drop(c, EC_W_PROTOCOL);
		return;
	}
	if (rc < 0)
		return;
	if (rd & (EVC_EOF | EVC_ERR)) {
		conn_drop(c, EC_W_CLOSED);
		return;
	}
	if (!c->busy && c->hold_ms && !stopping && !evtimer_pending(c->timer, NULL))
		evc_timer_ms(c->timer, c->hold_ms);	/* the server is failing: do not hammer it */
	else if (!c->busy)
		conn_next(c, now);
	maybe_finish();
}

static void
conn_up(struct conn *c, uint64_t now)
{
	c->sock.state = EVC_UP;
	if (c->ever_up)
		ec.reconnects++;
	c->ever_up = 1;
	event_add(c->sock.rev, NULL);
	conn_next(c, now);
}

static void
conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (c->sock.state == EVC_CONNECTING) {
		if (evc_connected(&c->sock) < 0) {
			ec.connect_fails++;
			conn_drop(c, EC_W_CLOSED);
			return;
		}
		conn_up(c, ec_now_ns());
		return;
	}
	conn_flush(c);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	if (stopping)
		return;
	if (c->sock.state == EVC_DOWN) {
		conn_connect(c);
		return;
	}
	if (c->paced == 1)
		c->paced = 2;
	if (c->sock.state == EVC_UP && !c->busy)
		conn_next(c, ec_now_ns());
}

static void
conn_connect(struct conn *c)
{
	switch (evc_open(&c->sock, base, &addr, addrlen, conn_read_cb, conn_write_cb, c,
	    ec_now_ns())) {
	case 1:
		conn_up(c, c->sock.t_connect);
		return;
	case 0:
		return;
	case -2:
		ec_fatal("could not create events");
	default:
		ec.connect_fails++;
		conn_drop(c, EC_W_CLOSED);
		return;
	}
}

/* ------------------------------------------------------------------ scheduling */

/* --rate: may c send now?  If not, its timer fires when its slot comes. */
static int
paced_ok(struct conn *c, uint64_t now)
{
	uint64_t slot;
	struct timeval tv;

	if (pace_period_ns <= 0)
		return 1;
	if (c->paced == 2) {	/* the slot reserved earlier has come */
		c->paced = 0;
		return 1;
	}
	if (c->paced)
		return 0;
	slot = pace_next > now ? pace_next : now;
	pace_next = slot + (uint64_t)pace_period_ns;
	if (slot <= now)
		return 1;
	c->paced = 1;
	tv.tv_sec = (time_t)((slot - now) / 1000000000u);
	tv.tv_usec = (suseconds_t)(((slot - now) % 1000000000u) / 1000);
	evtimer_add(c->timer, &tv);
	return 0;
}

static void
mixed_next(struct conn *c, uint64_t now)
{
	uint64_t r = rng_next(&c->rng);
	uint32_t s = (uint32_t)((r >> 8) % (uint64_t)ec.nstreams);
	unsigned pct = (unsigned)(r % 100);

	if (!paced_ok(c, now))
		return;
	if (c->retry_op != EC_NONE)
		retry_write(c, now);
	else if (pct < 70)
		issue_write(c, s, c->known[s], now);
	else if (pct < 80)
		issue_write(c, s, EC_NOEV, now);
	else if (pct < 95)
		issue_read(c, s, now);
	else
		issue_cread(c, (uint32_t)ec.stream_cat[s], now);
}

/* conflict: start the next round when every client is connected and idle. */
static void
try_round(uint64_t now)
{
	int i;

	if (stopping || round_pending > 0 || version_busy || !running)
		return;
	for (i = 0; i < nclients; i++)
		if (conns[i].sock.state != EVC_UP || conns[i].busy)
			return;
	if (resync) {
		issue_version(&conns[0], 0, now);
		return;
	}
	round_pending = nclients;
	round_ok = round_conflict = round_other = 0;
	for (i = 0; i < nclients; i++)
		issue_write(&conns[i], 0, cur_version, now);
}

static void
conn_next(struct conn *c, uint64_t now)
{
	if (stopping || c->sock.state != EVC_UP || c->busy)
		return;
	if (c->role == R_FOLLOWER) {
		if (!evtimer_pending(c->timer, NULL))
			issue_follow(c, now);
		return;
	}
	if (ec.cfg.workload == EC_MIXED)
		mixed_next(c, now);
	else
		try_round(now);
}

/* ------------------------------------------------------------------ run */

static void
maybe_finish(void)
{
	int i;

	if (!stopping)
		return;
	for (i = 0; i < nconns; i++)
		if (conns[i].busy)
			return;
	event_base_loopbreak(base);
}

static void
stop_load(void)
{
	int i;

	if (stopping && !running)
		return;
	stopping = 1;
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		evtimer_del(c->timer);
		if (!c->busy && c->sock.state != EVC_DOWN)
			evc_close(&c->sock);
	}
	maybe_finish();
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	stop_load();
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	if (!ec.cfg.quiet)
		fprintf(stderr, "evcheck: %s: stopping the load, final read follows\n",
		    sig == SIGINT ? "SIGINT" : "SIGTERM");
	stop_load();
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = ec_now_ns();
	int i;

	if (stopping && !running)
		return;
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		if (c->sock.state == EVC_CONNECTING && now - c->sock.t_connect > ec.cfg.timeout_ns) {
			ec.connect_fails++;
			conn_drop(c, EC_W_CLOSED);
		} else if (c->sock.state == EVC_UP && c->busy && now - c->t_sent > ec.cfg.timeout_ns) {
			conn_drop(c, EC_W_TIMEOUT);
		}
	}
	if (stopping)
		maybe_finish();
}

static void
progress_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = ec_now_ns();

	fprintf(stderr, "evcheck: %.0f s: %zu ops (%.0f/s), %llu conflicts, %llu reconnects, "
	    "%llu x 5xx\n", (double)(now - t0) / 1e9, ec.nops,
	    (double)(ec.nops - last_progress_ops) / PROGRESS_S,
	    (unsigned long long)ec.conflicts, (unsigned long long)ec.reconnects,
	    (unsigned long long)ec.errors_5xx);
	last_progress_ops = ec.nops;
}

int
ec_run(void)
{
	struct timespec rt;
	struct timeval tv;
	char err[512];
	int i, n;

	if (evc_resolve(ec.cfg.srv.host, ec.cfg.srv.port, &addr, &addrlen, err, sizeof(err)) < 0) {
		fprintf(stderr, "evcheck: %s\n", err);
		return -1;
	}
	n = evc_post_head(post_head, sizeof(post_head), "evcheck/" PACKAGE_VERSION, &ec.cfg.srv,
	    ec.cfg.token);
	if (n < 0 || (size_t)n >= sizeof(post_head) - 64)
		ec_fatal("URL or token too long");
	post_head_len = (size_t)n;
	tok = json_tokener_new_ex(64);
	if (tok == NULL)
		ec_fatal("out of memory");
	base = event_base_new();
	if (base == NULL)
		ec_fatal("could not create the event base");
	clock_gettime(CLOCK_REALTIME, &rt);
	t0 = ec_now_ns();
	ec.t0_unix = (double)rt.tv_sec + (double)rt.tv_nsec / 1e9;
	realtime_ms_base = ((uint64_t)rt.tv_sec * 1000u + (uint64_t)rt.tv_nsec / 1000000u) - t0 / 1000000u;

	nclients = ec.cfg.clients;
	nconns = nclients + ec.nfollowers;
	conns = calloc((size_t)nconns, sizeof(*conns));
	if (conns == NULL)
		ec_fatal("out of memory");
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		c->sock.fd = -1;
		c->sock.wbuf = c->wspace;
		c->role = i < nclients ? R_CLIENT : R_FOLLOWER;
		c->idx = i < nclients ? i : i - nclients;
		c->sock.rcap = RBUF_INIT;
		c->sock.rbuf = malloc(c->sock.rcap);
		c->timer = evtimer_new(base, conn_timer_cb, c);
		if (c->sock.rbuf == NULL || c->timer == NULL)
			ec_fatal("out of memory");
		c->rng = ec.cfg.seed * 1000003u + (uint64_t)i * 7919u + 1;
		c->retry_op = EC_NONE;
		if (c->role == R_CLIENT) {
			int s;

			c->known = malloc((size_t)ec.nstreams * sizeof(*c->known));
			c->cat_known = calloc((size_t)ec.ncats, sizeof(*c->cat_known));
			if (c->known == NULL || c->cat_known == NULL)
				ec_fatal("out of memory");
			for (s = 0; s < ec.nstreams; s++)
				c->known[s] = -1;
		} else {
			c->f = &ec.followers[c->idx];
		}
	}
	if (ec.cfg.rate > 0)
		pace_period_ns = 1e9 / ec.cfg.rate;
	pace_next = t0;

	sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, NULL);
	sigint_ev = evsignal_new(base, SIGINT, signal_cb, NULL);
	sigterm_ev = evsignal_new(base, SIGTERM, signal_cb, NULL);
	if (sweep_ev == NULL || sigint_ev == NULL || sigterm_ev == NULL)
		ec_fatal("could not create events");
	tv.tv_sec = 0;
	tv.tv_usec = SWEEP_MS * 1000;
	event_add(sweep_ev, &tv);
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);
	if (ec.cfg.workload == EC_MIXED) {
		stop_ev = evtimer_new(base, stop_cb, NULL);
		if (stop_ev == NULL)
			ec_fatal("could not create events");
		tv.tv_sec = (time_t)ec.cfg.duration_s;
		tv.tv_usec = (suseconds_t)((ec.cfg.duration_s - (double)tv.tv_sec) * 1e6);
		event_add(stop_ev, &tv);
	}
	if (!ec.cfg.quiet) {
		progress_ev = event_new(base, -1, EV_PERSIST, progress_cb, NULL);
		if (progress_ev) {
			tv.tv_sec = PROGRESS_S;
			tv.tv_usec = 0;
			event_add(progress_ev, &tv);
		}
	}

	running = 1;
	for (i = 0; i < nconns; i++)
		conn_connect(&conns[i]);
	if ((ec.cfg.workload == EC_CONFLICT && ec.cfg.rounds <= 0) || ec_got_signal)
		stop_load();	/* nothing to do, or a signal came during start-up */
	event_base_dispatch(base);
	running = 0;
	ec.t_load_ns = ec_now_ns() - t0;

	/* Whatever is still open is closed; pending ops (none normally) become indeterminate. */
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		fail_inflight(c, EC_W_CLOSED, ec_now_ns());
		evc_close(&c->sock);
		event_free(c->timer);
		free(c->sock.rbuf);
		free(c->known);
		free(c->cat_known);
	}
	free(conns);
	event_free(sweep_ev);
	event_free(sigint_ev);
	event_free(sigterm_ev);
	if (stop_ev)
		event_free(stop_ev);
	if (progress_ev)
		event_free(progress_ev);
	event_base_free(base);
	json_tokener_free(tok);
	/* Later signals end the final read early (evcheck.c). */
	return 0;
}
