/*
 * wbatch.c - natural group commit of stream.write in a worker (issue 8).
 *
 * A worker writes through one lane at a time.  When it is free, a write
 * goes to PostgreSQL at once, alone, through the original write_message
 * (an idle server adds no latency).  While a write transaction is in
 * flight, further writes queue; when it completes, everything queued (up
 * to --write-batch-max writes and --write-batch-bytes of JSON) leaves as
 * one transaction: one write_messages(batch) call per namespace in the
 * batch, all in one pipeline ended by one Sync.  No batching timer:
 * batches form only from the writes that arrived while the previous
 * commit was in flight.
 *
 * A transaction can wait long on a category lock held by somebody else
 * (another client of the database holding a transaction open; the same
 * category name in another namespace: the locks are database-wide).  So
 * when the lane in flight has been busy past WB_STALL_NS, up to
 * --db-pool - 1 further lanes carry the writes of the other categories;
 * writes of a category in flight always wait for their lane.
 *
 * Per-write meaning is kept by write_messages (migration 003): each
 * expected version is checked on its own, an existing id skips only that
 * write, positions are what sequential execution would give, category
 * locks are held to commit, and no response leaves before the commit.
 * A batch that fails as a whole (connection lost, server error) fails
 * every write in it; nothing in it was acknowledged and, being one
 * transaction, nothing in it was committed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "exit.h"
#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "shm.h"
#include "wbatch.h"

#define WB_MAX_GROUPS	16
#define WB_MAX_LANES	4
/*
 * A lane busy this long is stalled: its transaction waits on a lock held
 * elsewhere (a long transaction of another client of the database, a
 * category of the same name in another namespace) or on a slow commit.
 * Further lanes then take the writes of other categories, so one blocked
 * category does not stop every write of the worker.  Well above a
 * commit's usual duration, so batching is not diluted in normal running.
 */
#define WB_STALL_NS	(25 * 1000000ULL)

struct wb_group {
	struct ns_entry	*ns;
	struct evbuffer	*json;
	char		*sql;		/* SELECT * FROM "s".write_messages($1::jsonb) */
	size_t		 sqlcap;
	int		 n;
};

/* A write transaction in flight, and what it is made of. */
struct wb_lane {
	int		 busy;
	uint64_t	 since;		/* when the transaction was sent */
	struct db_query	 q;
	struct db_stmt	 st[WB_MAX_GROUPS + 1];
	const char	*pv[WB_MAX_GROUPS + 1];
	struct evbuffer	*streams;	/* JSON array of every stream in the batch */
	int		 first;		/* index of the first group's statement */
	struct wb_group	 g[WB_MAX_GROUPS];
	int		 ngroups;
	struct rpc_ctx	**items;
	int		*item_group;
	int		 nitems;
};

static struct {
	int		 max;
	size_t		 max_bytes;
	TAILQ_HEAD(, rpc_ctx) queue;
	int		 queued;
	struct wb_lane	 lane[WB_MAX_LANES];
	int		 nlanes;
	struct event	*stall;		/* re-kick when a busy lane turns stalled */
} wb;

static void wb_kick(void);

/*
 * Every category lock of a batch, in key order: the key is Message DB's
 * hash_64(category(stream)), spelled out so it needs no schema.
 */
static const char lock_all_sql[] =
    "SELECT pg_advisory_xact_lock(q.k) FROM "
    "(SELECT DISTINCT left('x' || md5(split_part(s, '-', 1)), 17)::bit(64)::bigint AS k "
    "FROM jsonb_array_elements_text($1::jsonb) AS s ORDER BY 1) q";

/* Publish one transaction of n writes (the counters of shm/counters.def). */
static void
count_batch(int n)
{
	SHM_INC(write_batches);
	SHM_ADD(write_batched, 0, n);
	if (n == 1)
		SHM_INC(write_batches_1);
	else if (n == 2)
		SHM_INC(write_batches_2);
	else if (n <= 4)
		SHM_INC(write_batches_3_4);
	else if (n <= 8)
		SHM_INC(write_batches_5_8);
	else if (n <= 16)
		SHM_INC(write_batches_9_16);
	else if (n <= 64)
		SHM_INC(write_batches_17_64);
	else
		SHM_INC(write_batches_65_up);
}

static void
stall_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	wb_kick();
}

void
wb_init(struct event_base *base, int max, size_t max_bytes, int pool)
{
	wb.max = max < 1 ? 1 : max;
	wb.max_bytes = max_bytes;
	TAILQ_INIT(&wb.queue);
	/* Leave one connection of the pool to reads. */
	wb.nlanes = pool - 1;
	if (wb.nlanes > WB_MAX_LANES)
		wb.nlanes = WB_MAX_LANES;
	if (wb.nlanes < 1)
		wb.nlanes = 1;
	wb.stall = evtimer_new(base, stall_cb, NULL);
	for (int l = 0; l < wb.nlanes; l++) {
		struct wb_lane *ln = &wb.lane[l];

		ln->items = calloc((size_t)wb.max, sizeof(*ln->items));
		ln->item_group = calloc((size_t)wb.max, sizeof(*ln->item_group));
		ln->streams = evbuffer_new();
		for (int i = 0; i < WB_MAX_GROUPS; i++)
			ln->g[i].json = evbuffer_new();
		if (!ln->items || !ln->item_group || !ln->streams || !wb.stall) {
			log_error("out of memory for the write batch");
			_exit(WRK_EXIT_INIT);
		}
	}
}

/* The lone write finished: free its lane, then answer. */
static void
single_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	struct wb_lane *ln = c->wlane;

	ln->busy = 0;
	ln->nitems = 0;
	c->wlane = NULL;
	rpc_write_done(q);
	wb_kick();
}

/* Append one write as a JSON object to its group's array. */
static void
add_item(struct evbuffer *b, struct rpc_ctx *c, int first)
{
	evbuffer_add_printf(b, "%s{\"i\":\"%s\",\"s\":", first ? "[" : ",", c->msgid);
	json_write_cstr(b, c->pv[1]);
	evbuffer_add(b, ",\"t\":", 5);
	json_write_cstr(b, c->pv[2]);
	evbuffer_add(b, ",\"d\":", 5);
	evbuffer_add(b, c->pv[3], (size_t)c->plen[3]);	/* raw JSON spans (pfmt 1) */
	if (c->pv[4]) {
		evbuffer_add(b, ",\"m\":", 5);
		evbuffer_add(b, c->pv[4], (size_t)c->plen[4]);
	}
	if (c->pv[5])
		evbuffer_add_printf(b, ",\"e\":%s", c->pv[5]);
	evbuffer_add(b, "}", 1);
}

static size_t
item_bytes(struct rpc_ctx *c)
{
	return 96 + strlen(c->pv[1]) + strlen(c->pv[2]) + (size_t)c->plen[3] +
	    (c->pv[4] ? (size_t)c->plen[4] : 0);
}

static void
batch_done(struct db_query *q)
{
	struct wb_lane *ln = q->arg;
	int n = ln->nitems, row[WB_MAX_GROUPS] = { 0 };
	int failed = db_failed(q);
	const char *st = db_sqlstate(q);
	int missing_fn = failed && strcmp(st, "42883") == 0;

	/* The lane stays busy while answering: answers must not start a batch. */
	for (int i = 0; i < n; i++) {
		struct rpc_ctx *c = ln->items[i];
		int g = ln->item_group[i];
		PGresult *r = q->res[ln->first + g];
		int k = row[g]++;

		c->wlane = NULL;
		if (missing_fn) {
			/*
			 * A namespace without migration 003 (created by the
			 * original server while we run): write it alone.
			 */
			rpc_write_single(c, rpc_write_done);
			continue;
		}
		if (failed || !r || k >= PQntuples(r)) {
			rpc_write_failed(c, q);
			continue;
		}
		if (PQgetisnull(r, k, 3)) {
			rpc_write_ok(c, PQgetvalue(r, k, 0), PQgetvalue(r, k, 1));
			continue;
		}
		if (strcmp(PQgetvalue(r, k, 3), "version") == 0)
			rpc_write_conflict(c, strtoll(PQgetvalue(r, k, 2), NULL, 10));
		else
			rpc_write_dup(c);
	}
	for (int g = 0; g < ln->ngroups; g++) {
		nscache_unref(ln->g[g].ns);
		ln->g[g].ns = NULL;
		evbuffer_drain(ln->g[g].json, evbuffer_get_length(ln->g[g].json));
	}
	db_query_reset(q);
	ln->nitems = 0;
	ln->busy = 0;
	wb_kick();
}

static int
group_sql(struct wb_group *g)
{
	size_t need = strlen(g->ns->schema) + 80;

	if (need > g->sqlcap) {
		char *n = realloc(g->sql, need);
		if (!n)
			return -1;
		g->sql = n;
		g->sqlcap = need;
	}
	snprintf(g->sql, g->sqlcap, "SELECT * FROM \"%s\".write_messages($1::jsonb)", g->ns->schema);
	return 0;
}

/* Is a write of category hash h in flight on some lane? */
static int
cat_in_flight(uint64_t h)
{
	for (int l = 0; l < wb.nlanes; l++) {
		const struct wb_lane *ln = &wb.lane[l];

		if (!ln->busy)
			continue;
		for (int i = 0; i < ln->nitems; i++)
			if (ln->items[i]->wcat == h)
				return 1;
	}
	return 0;
}

/*
 * Fill lane ln from the queue, oldest first, and send it.  Writes whose
 * category is in flight on another lane stay queued (in order): they
 * would only wait for its lock there.  Returns 0 when nothing could go.
 */
static int
lane_send(struct wb_lane *ln)
{
	struct rpc_ctx *c, *next;
	size_t bytes = 0;

	ln->nitems = 0;
	ln->ngroups = 0;
	for (c = TAILQ_FIRST(&wb.queue); c != NULL && ln->nitems < wb.max; c = next) {
		size_t b = item_bytes(c);
		int g;

		next = TAILQ_NEXT(c, wq);
		if (cat_in_flight(c->wcat))
			continue;
		if (ln->nitems > 0 && bytes + b > wb.max_bytes)
			break;
		for (g = 0; g < ln->ngroups; g++)
			if (ln->g[g].ns == c->ns)
				break;
		if (g == ln->ngroups) {
			if (g == WB_MAX_GROUPS)
				break;
			ln->g[g].ns = c->ns;
			nscache_ref(c->ns);
			ln->g[g].n = 0;
			ln->ngroups++;
		}
		TAILQ_REMOVE(&wb.queue, c, wq);
		wb.queued--;
		SHM_OBSERVE(write_batch_wait, 0, http_now_ns() - c->wq_since);
		ln->g[g].n++;
		ln->items[ln->nitems] = c;
		ln->item_group[ln->nitems] = g;
		ln->nitems++;
		c->wlane = ln;
		bytes += b;
	}
	if (ln->nitems == 0)
		return 0;
	ln->busy = 1;
	ln->since = http_now_ns();
	count_batch(ln->nitems);
	if (ln->nitems == 1) {
		/* Alone: the original write_message, one statement. */
		c = ln->items[0];
		nscache_unref(ln->g[0].ns);
		ln->g[0].ns = NULL;
		rpc_write_single(c, single_done);
		return 1;
	}
	/*
	 * Each namespace's writes as one JSON array, in queue order; built
	 * only now, so that a lone write (the common case at low load, and
	 * the largest ones) is not copied into a batch it never joins.
	 */
	{
		int added[WB_MAX_GROUPS] = { 0 };

		for (int i = 0; i < ln->nitems; i++) {
			int g = ln->item_group[i];
			add_item(ln->g[g].json, ln->items[i], added[g]++ == 0);
		}
	}
	/*
	 * Advisory locks are database-wide and keyed by category name alone,
	 * so with several namespaces in one batch the locks of all of them
	 * are taken first, in one global key order; each write_messages then
	 * finds its locks already held.  Taking them namespace by namespace
	 * could deadlock against another worker's batch.
	 */
	ln->first = 0;
	if (ln->ngroups > 1) {
		evbuffer_drain(ln->streams, evbuffer_get_length(ln->streams));
		for (int i = 0; i < ln->nitems; i++) {
			evbuffer_add(ln->streams, i ? "," : "[", 1);
			json_write_cstr(ln->streams, ln->items[i]->pv[1]);
		}
		evbuffer_add(ln->streams, "]", 2);	/* with the NUL */
		ln->pv[0] = (const char *)evbuffer_pullup(ln->streams, -1);
		ln->st[0] = (struct db_stmt){ lock_all_sql, 1, &ln->pv[0], 1 };
		ln->first = 1;
	}
	for (int g = 0; g < ln->ngroups; g++) {
		int k = ln->first + g;
		evbuffer_add(ln->g[g].json, "]", 2);	/* with the NUL */
		if (group_sql(&ln->g[g]) < 0) {
			log_error("out of memory building a write batch");
			abort();
		}
		ln->pv[k] = (const char *)evbuffer_pullup(ln->g[g].json, -1);
		ln->st[k] = (struct db_stmt){ ln->g[g].sql, 1, &ln->pv[k], 1 };
	}
	log_debug("write batch writes=%d namespaces=%d bytes=%zu", ln->nitems, ln->ngroups, bytes);
	db_query_reset(&ln->q);
	ln->q.stmts = ln->st;
	ln->q.nstmts = ln->first + ln->ngroups;
	ln->q.cb = batch_done;
	ln->q.arg = ln;
	db_submit(&ln->q);
	return 1;
}

/*
 * Send what is queued.  The first lane batches as described at the top;
 * the others are used only while some busy lane is stalled (busy longer
 * than WB_STALL_NS), and then for categories not in flight.
 */
static void
wb_kick(void)
{
	uint64_t now, oldest = 0;
	int stalled = 0, waiting;

	if (TAILQ_EMPTY(&wb.queue))
		return;
	now = http_now_ns();
	for (int l = 0; l < wb.nlanes; l++) {
		struct wb_lane *ln = &wb.lane[l];

		if (ln->busy) {
			if (now - ln->since >= WB_STALL_NS)
				stalled = 1;
			else if (!oldest || ln->since < oldest)
				oldest = ln->since;
		}
	}
	for (int l = 0; l < wb.nlanes && !TAILQ_EMPTY(&wb.queue); l++) {
		struct wb_lane *ln = &wb.lane[l];
		int anybusy = 0;

		if (ln->busy)
			continue;
		for (int k = 0; k < wb.nlanes; k++)
			anybusy |= wb.lane[k].busy;
		if (anybusy && !stalled)
			break;
		if (!lane_send(ln))
			break;
	}
	/* Writes still waiting behind busy lanes: look again when one stalls. */
	waiting = !TAILQ_EMPTY(&wb.queue);
	if (waiting && oldest && !evtimer_pending(wb.stall, NULL)) {
		uint64_t d = oldest + WB_STALL_NS - now;
		struct timeval tv = { (time_t)(d / 1000000000ULL), (suseconds_t)(d % 1000000000ULL / 1000) };

		evtimer_add(wb.stall, &tv);
	}
}

/* FNV-1a of the stream's category (up to the first '-'): the lock's key. */
static uint64_t
category_hash(const char *stream)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = stream; *p && *p != '-'; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
	}
	return h;
}

void
wb_submit(struct rpc_ctx *c)
{
	c->wq_since = http_now_ns();
	c->wcat = category_hash(c->pv[1]);
	c->wlane = NULL;
	TAILQ_INSERT_TAIL(&wb.queue, c, wq);
	wb.queued++;
	wb_kick();
}
