/*
 * sse.c - GET /subscribe (api.md 9, decisions.md 7): subscriptions in a
 * worker, and the publishing side of pokes.
 *
 * A subscription (RECOMMENDED column of api.md 9.5):
 *
 *   auth --> validate --> headers + ": ready" --> registered --> catch-up --> live
 *
 * Registration comes before the catch-up read, so a write that commits
 * during the catch-up is found by the read or arrives as a live event
 * (held in a small buffer until the read is done; if that overflows, the
 * read simply runs once more).  The catch-up pages through every missed
 * message in order, SSE_PAGE rows a query, waiting for the client to take
 * each page; a worker reads at most SSE_CATCHUP_QUERIES pages at a time,
 * the other subscriptions queue for them.  `next` suppresses duplicates:
 * in stream and category mode a subscription's pokes only move forward.
 * Consumer groups use tok_group_member, the same partition as
 * category.get's SQL.  A keepalive comment goes to every subscription
 * idle for `keepalive` seconds (one timer per worker over a list kept in
 * order of last write).  A client that hangs up is noticed at once
 * (http.c keeps reading its side); one that stops reading is dropped once
 * SSE_MAX_PENDING bytes wait for it.
 *
 * Memory: an idle subscription is its http.c connection plus a struct
 * sse_sub and its share of a topic (subscriptions of one stream, category
 * or namespace); the auth state lives only while auth runs, the catch-up
 * state only until the subscription is live.
 *
 * Publishing: sse_publish() (after commit) appends a record to the
 * outbox; once per loop turn the outbox goes to the other workers and
 * instances (sse_mesh.c) and to this worker's subscribers.
 *
 * What a subscriber may assume is in README.md ("Subscriptions").
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "db.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "shm.h"
#include "sse.h"
#include "sse_mesh.h"
#include "token.h"

#define SUB_MAGIC	0x53534553u	/* "SSES" */
#define TOPIC_MAGIC	0x53535450u

#define SSE_PAGE		1000		/* catch-up rows per query */
#define SSE_CATCHUP_HIWAT	(64 * 1024)	/* wait for the client above this: a stalled catch-up holds ~1 page */
#define SSE_CATCHUP_QUERIES	2		/* catch-up queries in flight per worker */
#define SSE_MAX_PENDING		(256 * 1024)	/* drop a client this far behind */
#define SSE_EVBUF		32		/* live events held during catch-up */
#define NBUCKETS		16384

enum sub_mode { MODE_STREAM, MODE_CATEGORY, MODE_ALL };

struct sse_evt {
	int64_t		 pos, gpos;
	char		*stream;	/* category and all mode: a copy */
	size_t		 slen;
};

/* What a subscription needs until it is live. */
struct sse_catchup {
	struct db_query	 q;
	struct db_stmt	 st;
	const char	*pv[2];
	char		 nb[24];
	char		*sql;
	char		*name;		/* $1: a copy; a query waiting in db.c's queue
					 * outlives the topic when the client goes */
	int64_t		 cursor;	/* the next page starts here */
	int		 busy;		/* a query is in flight (or events replayed) */
	int		 wait_drain;	/* the client must take the last page first */
	int		 requery;	/* live events were lost: read again */
	int		 nev;
	struct sse_evt	*ev;		/* SSE_EVBUF, allocated on first use */
	uint8_t		 queued;	/* waiting in cu_queue for a query slot */
	uint8_t		 slot;		/* holds one of the SSE_CATCHUP_QUERIES */
	TAILQ_ENTRY(sse_catchup) qlink;
};

struct sse_sub {
	unsigned	 magic;
	uint8_t		 mode;
	uint8_t		 live;
	uint8_t		 gone;		/* the response is over (client gone or ended) */
	uint8_t		 registered;
	uint8_t		 authing;	/* rpc_auth in flight */
	int16_t		 nsslot;	/* counted in the shared counts, or -1 */
	struct http_req	*req;
	struct sse_topic *topic;
	TAILQ_ENTRY(sse_sub) tlink;
	TAILQ_ENTRY(sse_sub) klink;	/* by last write, oldest first */
	int64_t		 next;		/* lowest position still to poke */
	int64_t		 member, size;
	uint64_t	 last_write;
	struct rpc_auth	*auth;		/* while authenticating */
	struct sse_catchup *cu;		/* while catching up */
};

TAILQ_HEAD(sub_list, sse_sub);

struct sse_topic {
	unsigned	 magic;
	uint8_t		 mode;
	int		 busy;		/* being iterated: do not free */
	uint32_t	 hash;
	struct sse_topic *next;
	struct sub_list	 subs;
	size_t		 nslen, namelen;
	char		 key[];		/* ns NUL name NUL */
};

static struct sse_options sopt;
static struct sse_topic *buckets[NBUCKETS];
static struct sub_list all_subs = TAILQ_HEAD_INITIALIZER(all_subs);	/* keepalive order */
static struct event *ka_ev, *flush_ev;
static int draining, nsubs;

/*
 * Catch-up pages wait here for one of SSE_CATCHUP_QUERIES slots.  Without
 * the cap, N subscriptions arriving together (clients reconnecting) put N
 * page queries in the pool's queue at once, and every request behind them
 * waits for all of them (t/battery/33-slow.t, T13d: 50 subscribers
 * stalled the legitimate load for over a second).
 */
static TAILQ_HEAD(cu_list, sse_catchup) cu_queue = TAILQ_HEAD_INITIALIZER(cu_queue);
static int cu_inflight;

/* Outbox: records published since the last flush. */
static unsigned char *ob;
static size_t nob, capob;

/* Formatted poke, shared by every subscriber of one event. */
static char *fmt;
static size_t fmtcap;

static void sub_end(struct sse_sub *s);
static void sub_free(struct sse_sub *s);
static void catchup_next(struct sse_sub *s);
static void catchup_pump(void);

static uint64_t
now_ns(void)
{
	return http_now_ns();
}

static uint32_t
fnv32(uint32_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 16777619u;
	}
	return h;
}

int
sse_shm_init(void)
{
	return ssm_shm_init();
}

/* ---- topics ------------------------------------------------------------------ */

static uint32_t
topic_hash(int mode, const char *ns, size_t nslen, const char *name, size_t namelen)
{
	uint32_t h = 2166136261u;
	unsigned char m = (unsigned char)mode;

	h = fnv32(h, &m, 1);
	h = fnv32(h, ns, nslen);
	h = fnv32(h, "", 1);
	return fnv32(h, name, namelen);
}

static struct sse_topic *
topic_find(int mode, const char *ns, size_t nslen, const char *name, size_t namelen,
    uint32_t h)
{
	for (struct sse_topic *t = buckets[h % NBUCKETS]; t; t = t->next)
		if (t->hash == h && t->mode == mode && t->nslen == nslen &&
		    t->namelen == namelen && memcmp(t->key, ns, nslen) == 0 &&
		    memcmp(t->key + nslen + 1, name, namelen) == 0)
			return t;
	return NULL;
}

static struct sse_topic *
topic_get(int mode, const char *ns, const char *name)
{
	size_t nslen = strlen(ns), namelen = strlen(name);
	uint32_t h = topic_hash(mode, ns, nslen, name, namelen);
	struct sse_topic *t = topic_find(mode, ns, nslen, name, namelen, h);

	if (t)
		return t;
	t = malloc(sizeof(*t) + nslen + namelen + 2);
	if (!t)
		return NULL;
	t->magic = TOPIC_MAGIC;
	t->mode = (uint8_t)mode;
	t->busy = 0;
	t->hash = h;
	t->nslen = nslen;
	t->namelen = namelen;
	memcpy(t->key, ns, nslen + 1);
	memcpy(t->key + nslen + 1, name, namelen + 1);
	TAILQ_INIT(&t->subs);
	t->next = buckets[h % NBUCKETS];
	buckets[h % NBUCKETS] = t;
	return t;
}

static void
topic_maybe_free(struct sse_topic *t)
{
	struct sse_topic **pp;

	if (t->busy || !TAILQ_EMPTY(&t->subs))
		return;
	for (pp = &buckets[t->hash % NBUCKETS]; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	t->magic = 0;
	free(t);
}

/* ---- writing to a subscriber --------------------------------------------------- */

static void
touched(struct sse_sub *s)
{
	s->last_write = now_ns();
	TAILQ_REMOVE(&all_subs, s, klink);
	TAILQ_INSERT_TAIL(&all_subs, s, klink);
	if (sopt.keepalive > 0 && !evtimer_pending(ka_ev, NULL)) {
		struct timeval tv = { sopt.keepalive, 0 };
		evtimer_add(ka_ev, &tv);
	}
}

/* Send bytes; a client this far behind is dropped.  0, or -1 if ended. */
static int
sub_send(struct sse_sub *s, const char *data, size_t len)
{
	http_stream_write(s->req, data, len);
	if (http_stream_pending(s->req) > SSE_MAX_PENDING) {
		log_info("subscription dropped: client not reading (%zu bytes waiting)",
		    http_stream_pending(s->req));
		sub_end(s);
		return -1;
	}
	touched(s);
	return 0;
}

/* "event: poke\ndata: {...}\n\n" into fmt; returns the length. */
static size_t
format_poke(const char *stream, size_t slen, int64_t pos, int64_t gpos)
{
	static struct evbuffer *b;
	size_t n;

	if (!b && !(b = evbuffer_new()))
		return 0;
	evbuffer_add(b, "event: poke\ndata: {\"stream\":", 28);
	json_write_str(b, stream, slen);
	evbuffer_add_printf(b, ",\"position\":%lld,\"globalPosition\":%lld}\n\n", (long long)pos,
	    (long long)gpos);
	n = evbuffer_get_length(b);
	if (n > fmtcap) {
		char *p = realloc(fmt, n);
		if (!p) {
			evbuffer_drain(b, n);
			return 0;
		}
		fmt = p;
		fmtcap = n;
	}
	evbuffer_remove(b, fmt, n);
	return n;
}

/* Does event (stream, pos, gpos) concern s (beyond what it was sent)? */
static int
wanted(const struct sse_sub *s, const char *stream, size_t slen, int64_t pos, int64_t gpos)
{
	switch (s->mode) {
	case MODE_STREAM:
		return pos >= s->next;
	case MODE_CATEGORY:
		if (gpos < s->next)
			return 0;
		if (s->size <= 0)
			return 1;
		/* No member gets a stream without an id (tok_group_member -1). */
		return s->member >= 0 && tok_group_member(stream, slen, s->size) == s->member;
	default:
		return gpos >= s->next;
	}
}

static void
advance(struct sse_sub *s, int64_t pos, int64_t gpos)
{
	if (s->mode == MODE_STREAM)
		s->next = pos + 1;
	else if (s->mode == MODE_CATEGORY)
		s->next = gpos + 1;
}

/* A live event for s; `len` bytes of formatted poke are in fmt (0: format). */
static void
sub_event(struct sse_sub *s, const char *stream, size_t slen, int64_t pos, int64_t gpos,
    size_t *len)
{
	struct sse_catchup *u = s->cu;

	if (s->gone || !wanted(s, stream, slen, pos, gpos))
		return;
	if (!s->live) {
		/* Catching up: hold it until the read is done. */
		struct sse_evt *e;
		if (u->requery)
			return;
		if (!u->ev && !(u->ev = malloc(SSE_EVBUF * sizeof(*u->ev)))) {
			u->requery = 1;
			return;
		}
		if (u->nev == SSE_EVBUF) {
			u->requery = 1;
			for (int i = 0; i < u->nev; i++)
				free(u->ev[i].stream);
			u->nev = 0;
			return;
		}
		e = &u->ev[u->nev];
		e->pos = pos;
		e->gpos = gpos;
		e->slen = slen;
		e->stream = NULL;
		if (s->mode != MODE_STREAM) {
			if (!(e->stream = malloc(slen + 1))) {
				u->requery = 1;
				return;
			}
			memcpy(e->stream, stream, slen);
			e->stream[slen] = '\0';
		}
		u->nev++;
		return;
	}
	if (*len == 0 && (*len = format_poke(stream, slen, pos, gpos)) == 0)
		return;
	advance(s, pos, gpos);
	sub_send(s, fmt, *len);
}

static void
deliver_topic(struct sse_topic *t, const char *stream, size_t slen, int64_t pos, int64_t gpos,
    size_t *len)
{
	struct sse_sub *s, *next;

	if (!t)
		return;
	t->busy++;
	for (s = TAILQ_FIRST(&t->subs); s; s = next) {
		next = TAILQ_NEXT(s, tlink);
		sub_event(s, stream, slen, pos, gpos, len);
	}
	t->busy--;
	topic_maybe_free(t);
}

/* An event committed somewhere: poke this worker's subscribers. */
static void
deliver(const char *ns, size_t nslen, const char *stream, size_t slen, int64_t pos,
    int64_t gpos)
{
	size_t clen = tok_category_len(stream, slen), len = 0;

	if (nsubs == 0)
		return;
	/* The formatted poke names the full stream in every mode. */
	deliver_topic(topic_find(MODE_STREAM, ns, nslen, stream, slen,
	    topic_hash(MODE_STREAM, ns, nslen, stream, slen)), stream, slen, pos, gpos, &len);
	deliver_topic(topic_find(MODE_CATEGORY, ns, nslen, stream, clen,
	    topic_hash(MODE_CATEGORY, ns, nslen, stream, clen)), stream, slen, pos, gpos, &len);
	deliver_topic(topic_find(MODE_ALL, ns, nslen, "", 0,
	    topic_hash(MODE_ALL, ns, nslen, "", 0)), stream, slen, pos, gpos, &len);
}

/* ---- publishing ---------------------------------------------------------------- */

static void
flush_cb(evutil_socket_t fd, short what, void *arg)
{
	size_t off;

	if (nob == 0)
		return;
	ssm_publish(ob, nob);	/* the other workers first: they are further away */
	for (off = 0; off < nob;) {
		const char *ns, *st;
		size_t nl, sl;
		int64_t pos, gpos;
		off += ssm_rec_get(ob + off, &ns, &nl, &st, &sl, &pos, &gpos);
		deliver(ns, nl, st, sl, pos, gpos);
	}
	nob = 0;
}

void
sse_publish(const char *ns, const char *stream, int64_t pos, int64_t gpos)
{
	uint32_t nslen = (uint32_t)strlen(ns), slen = (uint32_t)strlen(stream);
	size_t need = SSM_REC_HDR + (size_t)nslen + slen;

	if (!flush_ev)
		return;
	if (nob + need > capob) {
		size_t cap = capob ? capob : 16384;
		unsigned char *n;
		while (cap < nob + need)
			cap *= 2;
		if (!(n = realloc(ob, cap)))
			return;
		ob = n;
		capob = cap;
	}
	nob += ssm_rec_put(ob + nob, ns, nslen, stream, slen, pos, gpos);
	/* Once per loop turn, after everything that completed in this one. */
	if (!event_pending(flush_ev, EV_TIMEOUT, NULL))
		event_active(flush_ev, EV_TIMEOUT, 0);
}

/* ---- keepalive ------------------------------------------------------------------ */

static void
ka_cb(evutil_socket_t fd, short what, void *arg)
{
	static const char ka[] = ": keepalive\n\n";
	uint64_t now = now_ns(), iv = (uint64_t)sopt.keepalive * 1000000000ull;
	struct sse_sub *s;

	while ((s = TAILQ_FIRST(&all_subs)) != NULL && s->last_write + iv <= now + 1000000)
		sub_send(s, ka, sizeof(ka) - 1);	/* moves s to the tail, or ends it */
	if ((s = TAILQ_FIRST(&all_subs)) != NULL) {
		uint64_t due = s->last_write + iv - now;
		struct timeval tv = { (time_t)(due / 1000000000ull),
		    (suseconds_t)(due % 1000000000ull / 1000) };
		evtimer_add(ka_ev, &tv);
	}
}

/* ---- subscription life ------------------------------------------------------------ */

static void
catchup_free(struct sse_catchup *u)
{
	if (!u)
		return;
	if (u->queued)
		TAILQ_REMOVE(&cu_queue, u, qlink);
	if (u->slot)
		cu_inflight--;	/* only if its query never came back */
	db_query_reset(&u->q);
	free(u->sql);
	free(u->name);
	for (int i = 0; i < u->nev; i++)
		free(u->ev[i].stream);
	free(u->ev);
	free(u);
}

static void
auth_free(struct sse_sub *s)
{
	if (s->auth) {
		nscache_unref(s->auth->ns);
		free(s->auth);
		s->auth = NULL;
	}
}

static void
sub_unregister(struct sse_sub *s)
{
	if (!s->registered)
		return;
	s->registered = 0;
	TAILQ_REMOVE(&s->topic->subs, s, tlink);
	topic_maybe_free(s->topic);
	TAILQ_REMOVE(&all_subs, s, klink);
	ssm_ns_add(s->nsslot, -1);
	nsubs--;
	SHM_GAUGE_ADD(sse_subscribers, -1);
}

static void
sub_free(struct sse_sub *s)
{
	sub_unregister(s);
	catchup_free(s->cu);
	auth_free(s);
	s->magic = 0;
	free(s);
}

/* Is something still using s (a query in flight, events being replayed)? */
static int
sub_held(const struct sse_sub *s)
{
	return s->authing || (s->cu && s->cu->busy);
}

/* End the response (chunked terminator) and forget the subscription. */
static void
sub_end(struct sse_sub *s)
{
	if (!s->gone) {
		s->gone = 1;
		http_stream_end(s->req);
	}
	sub_unregister(s);
	if (!sub_held(s))
		sub_free(s);
}

/* The client went away (http.c): req is gone. */
static void
sub_closed(void *arg)
{
	struct sse_sub *s = arg;

	if (s->magic != SUB_MAGIC)
		abort();
	s->gone = 1;
	sub_unregister(s);
	if (!sub_held(s))
		sub_free(s);	/* else when the query in flight comes back */
}

static void
sub_drained(void *arg)
{
	struct sse_sub *s = arg;

	if (!s->live && s->cu && s->cu->wait_drain) {
		s->cu->wait_drain = 0;
		catchup_next(s);
	}
}

/* Catch-up is complete: replay held events, then live. */
static void
go_live(struct sse_sub *s)
{
	struct sse_catchup *u = s->cu;
	int nev = u ? u->nev : 0;

	s->live = 1;
	if (u) {
		u->nev = 0;
		u->busy = 1;	/* s stays allocated while the held events go out */
		for (int i = 0; i < nev && !s->gone; i++) {
			struct sse_evt *e = &u->ev[i];
			const char *st = e->stream ? e->stream : s->topic->key + s->topic->nslen + 1;
			size_t len = 0;
			sub_event(s, st, e->slen, e->pos, e->gpos, &len);
		}
		u->busy = 0;
		for (int i = 0; i < nev; i++)
			free(u->ev[i].stream);
	}
	if (s->gone) {
		sub_free(s);
		return;
	}
	s->cu = NULL;
	catchup_free(u);
	http_set_drain_cb(s->req, NULL, NULL);
}

static void
page_result(struct sse_sub *s, struct db_query *q)
{
	struct sse_catchup *u = s->cu;
	PGresult *r = q->res[0];
	struct evbuffer *page;
	int n;

	u->busy = 0;
	if (s->gone) {
		sub_free(s);
		return;
	}
	if (db_failed(q) || !r) {
		log_warn("subscription catch-up failed: %s", db_errmsg(q));
		sub_end(s);
		return;
	}
	n = PQntuples(r);
	page = evbuffer_new();
	for (int i = 0; i < n && page; i++) {
		int64_t pos, gpos;
		const char *st;
		size_t slen, len;

		if (s->mode == MODE_STREAM) {
			pos = strtoll(PQgetvalue(r, i, 0), NULL, 10);
			gpos = strtoll(PQgetvalue(r, i, 1), NULL, 10);
			st = s->topic->key + s->topic->nslen + 1;
			slen = s->topic->namelen;
			u->cursor = pos + 1;
		} else {
			st = PQgetvalue(r, i, 0);
			slen = (size_t)PQgetlength(r, i, 0);
			pos = strtoll(PQgetvalue(r, i, 1), NULL, 10);
			gpos = strtoll(PQgetvalue(r, i, 2), NULL, 10);
			u->cursor = gpos + 1;
		}
		if (!wanted(s, st, slen, pos, gpos))
			continue;
		advance(s, pos, gpos);
		if ((len = format_poke(st, slen, pos, gpos)) > 0)
			evbuffer_add(page, fmt, len);
	}
	db_query_reset(q);
	if (page) {
		http_stream_write_buf(s->req, page);
		evbuffer_free(page);
		touched(s);
	}
	/*
	 * Rows the group filter skipped are behind the cursor too: a later
	 * commit in this category has a higher global position (api.md 14,
	 * item 52), so nothing below the cursor can still arrive.
	 */
	if (u->cursor > s->next)
		s->next = u->cursor;
	if (n == SSE_PAGE || u->requery) {
		/* More to read: after the client has taken most of this page. */
		u->requery = 0;
		for (int i = 0; i < u->nev; i++)
			free(u->ev[i].stream);
		u->nev = 0;
		if (http_stream_pending(s->req) > SSE_CATCHUP_HIWAT) {
			u->wait_drain = 1;
			return;
		}
		catchup_next(s);
		return;
	}
	go_live(s);
}

static void
page_done(struct db_query *q)
{
	struct sse_sub *s = q->arg;

	if (s->cu->slot) {
		s->cu->slot = 0;
		cu_inflight--;
	}
	page_result(s, q);	/* may free s, or queue its next page */
	catchup_pump();
}

/* Send queued catch-up pages while slots are free, oldest first. */
static void
catchup_pump(void)
{
	struct sse_catchup *u;

	while (cu_inflight < SSE_CATCHUP_QUERIES && (u = TAILQ_FIRST(&cu_queue)) != NULL) {
		TAILQ_REMOVE(&cu_queue, u, qlink);
		u->queued = 0;
		u->slot = 1;
		cu_inflight++;
		u->q.t_submit = now_ns();
		u->busy = 1;
		db_submit(&u->q);	/* answers on a later loop turn, never inside */
	}
}

/* The next catch-up page, once a query slot is free (behind the others). */
static void
catchup_next(struct sse_sub *s)
{
	struct sse_catchup *u = s->cu;

	snprintf(u->nb, sizeof(u->nb), "%lld", (long long)u->cursor);
	u->pv[0] = u->name;
	u->pv[1] = u->nb;
	/* Unprepared: the text names the schema, and there may be many. */
	u->st = (struct db_stmt){ u->sql, 2, u->pv, 0 };
	u->q.stmts = &u->st;
	u->q.nstmts = 1;
	u->q.cb = page_done;
	u->q.arg = s;
	u->queued = 1;
	TAILQ_INSERT_TAIL(&cu_queue, u, qlink);
	catchup_pump();
}

/* Answer with a JSON error instead of a stream. */
static void
fail_json(struct sse_sub *s, int status, const char *code, const char *msg)
{
	http_respond_error(s->req, status, code, msg);
	s->gone = 1;
	sub_free(s);
}

/* This worker's own subscriptions in namespace ns (no shared counts). */
static long
local_count(const char *ns)
{
	long n = 0;

	for (struct sse_sub *x = TAILQ_FIRST(&all_subs); x; x = TAILQ_NEXT(x, klink))
		if (strcmp(x->topic->key, ns) == 0)
			n++;
	return n;
}

/* Authenticated: validate, then start the stream. */
static void
start(struct sse_sub *s, const char *ns_id, const char *schema)
{
	struct http_req *req = s->req;
	struct sse_params p;
	const char *name;
	int mode, slot;

	sse_params_parse(req->query, &p);
	if (p.bad) {
		fail_json(s, 400, "INVALID_REQUEST", p.bad);
		goto out;
	}
	if (draining) {
		fail_json(s, 503, "SERVICE_UNAVAILABLE", "Server is shutting down");
		goto out;
	}
	slot = ssm_ns_slot(ns_id);
	if (sopt.max_per_ns > 0) {
		long have = ssm_ns_count(slot);
		if (have < 0)
			have = local_count(ns_id);
		if (have >= sopt.max_per_ns) {
			char msg[160];
			snprintf(msg, sizeof(msg),
			    "Too many subscriptions for this namespace (limit %d)", sopt.max_per_ns);
			log_info("subscription refused: namespace at its limit of %d", sopt.max_per_ns);
			fail_json(s, 429, "TOO_MANY_SUBSCRIPTIONS", msg);
			goto out;
		}
	}
	mode = p.all ? MODE_ALL : p.stream ? MODE_STREAM : MODE_CATEGORY;
	name = p.all ? "" : p.stream ? p.stream : p.category;
	s->mode = (uint8_t)mode;
	s->next = p.position;
	if (mode == MODE_CATEGORY && p.size > 0) {
		s->member = p.member;
		s->size = p.size;
	}
	if (mode != MODE_ALL) {
		int rc;
		if (!(s->cu = calloc(1, sizeof(*s->cu)))) {
			fail_json(s, 503, "INTERNAL_ERROR", "out of memory");
			goto out;
		}
		s->cu->cursor = p.position;
		if (!(s->cu->name = strdup(name))) {
			fail_json(s, 503, "INTERNAL_ERROR", "out of memory");
			goto out;
		}
		if (mode == MODE_STREAM)
			rc = asprintf(&s->cu->sql, "SELECT position, global_position FROM \"%s\".messages "
			    "WHERE stream_name = $1 AND position >= $2 ORDER BY position LIMIT %d",
			    schema, SSE_PAGE);
		else
			rc = asprintf(&s->cu->sql, "SELECT stream_name, position, global_position "
			    "FROM \"%s\".messages WHERE split_part(stream_name, '-', 1) = $1 "
			    "AND global_position >= $2 ORDER BY global_position LIMIT %d",
			    schema, SSE_PAGE);
		if (rc < 0) {
			s->cu->sql = NULL;
			fail_json(s, 503, "INTERNAL_ERROR", "out of memory");
			goto out;
		}
	}
	if (!(s->topic = topic_get(mode, ns_id, name))) {
		fail_json(s, 503, "INTERNAL_ERROR", "out of memory");
		goto out;
	}

	/* Headers and ": ready" now; registered before the catch-up read. */
	http_stream_begin(req, 200, "text/event-stream",
	    "Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\n");
	http_set_drain_cb(req, sub_drained, s);
	TAILQ_INSERT_TAIL(&s->topic->subs, s, tlink);
	TAILQ_INSERT_TAIL(&all_subs, s, klink);
	s->registered = 1;
	s->nsslot = (int16_t)slot;
	ssm_ns_add(slot, 1);
	nsubs++;
	SHM_GAUGE_ADD(sse_subscribers, 1);
	if (sub_send(s, ": ready\n\n", 9) == 0) {
		if (mode == MODE_ALL)
			go_live(s);	/* no catch-up in all mode (api.md 9.4) */
		else
			catchup_next(s);
	}
out:
	sse_params_free(&p);
}

static void
auth_done(struct rpc_auth *a)
{
	struct sse_sub *s = a->arg;
	char ns_id[256], schema[64];

	s->authing = 0;
	if (s->gone) {
		sub_free(s);
		return;
	}
	if (a->status) {
		rpc_auth_respond(s->req, a);
		s->gone = 1;
		sub_free(s);
		return;
	}
	if (!a->ns) {
		fail_json(s, 500, "BACKEND_ERROR", "Failed to subscribe: namespace not found");
		return;
	}
	snprintf(ns_id, sizeof(ns_id), "%s", a->ns_id);
	snprintf(schema, sizeof(schema), "%s", a->ns->schema);
	auth_free(s);
	start(s, ns_id, schema);
}

void
sse_handle(struct http_req *req)
{
	struct sse_sub *s;

	if (req->method == HTTP_HEAD) {
		http_respond_error(req, 405, "INVALID_REQUEST", "Only GET method allowed");
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s)
		s->auth = malloc(sizeof(*s->auth));
	if (!s || !s->auth) {
		if (s)
			free(s);
		http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		return;
	}
	s->magic = SUB_MAGIC;
	s->req = req;
	s->nsslot = -1;
	http_set_close_cb(req, sub_closed, s);
	s->authing = 1;
	rpc_auth(req, s->auth, auth_done, s);	/* s may be gone when this returns */
}

/* ---- worker life ------------------------------------------------------------------- */

void
sse_init(struct event_base *base, const struct sse_options *opt)
{
	sopt = *opt;
	flush_ev = event_new(base, -1, 0, flush_cb, NULL);
	ka_ev = evtimer_new(base, ka_cb, NULL);
	ssm_init(base, opt->port, opt->notify, deliver);
}

void
sse_drain(void)
{
	struct sse_sub *s;

	draining = 1;
	while ((s = TAILQ_FIRST(&all_subs)) != NULL)
		sub_end(s);
	/* Pokes already published still go to the other workers. */
	if (nob)
		flush_cb(-1, 0, NULL);
	ssm_leave();
}
