/*
 * wbatch.c - natural group commit of stream.write in a worker (issue 8).
 *
 * A worker has one write lane.  When the lane is free, a write goes to
 * PostgreSQL at once, alone, through the original write_message (an idle
 * server adds no latency).  While a write transaction is in flight,
 * further writes queue; when it completes, everything queued (up to
 * --write-batch-max writes and --write-batch-bytes of JSON) leaves as one
 * transaction: one write_messages(batch) call per namespace in the batch,
 * all in one pipeline ended by one Sync.  No timer: batches form only
 * from the writes that arrived while the previous commit was in flight.
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

#include <event2/buffer.h>

#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "shm.h"
#include "wbatch.h"

#define WB_MAX_GROUPS	16

struct wb_group {
	struct ns_entry	*ns;
	struct evbuffer	*json;
	char		*sql;		/* SELECT * FROM "s".write_messages($1::jsonb) */
	size_t		 sqlcap;
	int		 n;
};

static struct {
	int		 max;
	size_t		 max_bytes;
	int		 busy;		/* a write transaction is in flight */
	TAILQ_HEAD(, rpc_ctx) queue;
	int		 queued;
	/* The batch in flight. */
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

void
wb_init(int max, size_t max_bytes)
{
	wb.max = max < 1 ? 1 : max;
	wb.max_bytes = max_bytes;
	TAILQ_INIT(&wb.queue);
	wb.items = calloc((size_t)wb.max, sizeof(*wb.items));
	wb.item_group = calloc((size_t)wb.max, sizeof(*wb.item_group));
	for (int i = 0; i < WB_MAX_GROUPS; i++)
		wb.g[i].json = evbuffer_new();
	wb.streams = evbuffer_new();
	if (!wb.items || !wb.item_group) {
		log_error("out of memory for the write batch; batching off");
		wb.max = 1;
	}
}

/* The lone write finished: free the lane, then answer. */
static void
single_done(struct db_query *q)
{
	wb.busy = 0;
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
	evbuffer_add(b, c->pv[3], strlen(c->pv[3]));
	if (c->pv[4]) {
		evbuffer_add(b, ",\"m\":", 5);
		evbuffer_add(b, c->pv[4], strlen(c->pv[4]));
	}
	if (c->pv[5])
		evbuffer_add_printf(b, ",\"e\":%s", c->pv[5]);
	evbuffer_add(b, "}", 1);
}

static size_t
item_bytes(struct rpc_ctx *c)
{
	return 96 + strlen(c->pv[1]) + strlen(c->pv[2]) + strlen(c->pv[3]) +
	    (c->pv[4] ? strlen(c->pv[4]) : 0);
}

static void
batch_done(struct db_query *q)
{
	int n = wb.nitems, row[WB_MAX_GROUPS] = { 0 };
	int failed = db_failed(q);
	const char *st = db_sqlstate(q);
	int missing_fn = failed && strcmp(st, "42883") == 0;

	/* The lane stays busy while answering: answers must not start a batch. */
	for (int i = 0; i < n; i++) {
		struct rpc_ctx *c = wb.items[i];
		int g = wb.item_group[i];
		PGresult *r = q->res[wb.first + g];
		int k = row[g]++;

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
	for (int g = 0; g < wb.ngroups; g++) {
		nscache_unref(wb.g[g].ns);
		wb.g[g].ns = NULL;
		evbuffer_drain(wb.g[g].json, evbuffer_get_length(wb.g[g].json));
	}
	db_query_reset(q);
	wb.busy = 0;
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

/* Send what is queued, if the lane is free. */
static void
wb_kick(void)
{
	struct rpc_ctx *c;
	size_t bytes = 0;

	if (wb.busy || TAILQ_EMPTY(&wb.queue))
		return;
	c = TAILQ_FIRST(&wb.queue);
	if (wb.queued == 1 || wb.max == 1) {
		TAILQ_REMOVE(&wb.queue, c, wq);
		wb.queued--;
		wb.busy = 1;
		SHM_OBSERVE(write_batch_wait, 0, http_now_ns() - c->wq_since);
		count_batch(1);
		rpc_write_single(c, single_done);
		return;
	}

	wb.nitems = 0;
	wb.ngroups = 0;
	while ((c = TAILQ_FIRST(&wb.queue)) != NULL && wb.nitems < wb.max) {
		size_t b = item_bytes(c);
		int g;

		if (wb.nitems > 0 && bytes + b > wb.max_bytes)
			break;
		for (g = 0; g < wb.ngroups; g++)
			if (wb.g[g].ns == c->ns)
				break;
		if (g == wb.ngroups) {
			if (g == WB_MAX_GROUPS)
				break;
			wb.g[g].ns = c->ns;
			nscache_ref(c->ns);
			wb.g[g].n = 0;
			wb.ngroups++;
		}
		TAILQ_REMOVE(&wb.queue, c, wq);
		wb.queued--;
		SHM_OBSERVE(write_batch_wait, 0, http_now_ns() - c->wq_since);
		add_item(wb.g[g].json, c, wb.g[g].n == 0);
		wb.g[g].n++;
		wb.items[wb.nitems] = c;
		wb.item_group[wb.nitems] = g;
		wb.nitems++;
		bytes += b;
	}
	/*
	 * Advisory locks are database-wide and keyed by category name alone,
	 * so with several namespaces in one batch the locks of all of them
	 * are taken first, in one global key order; each write_messages then
	 * finds its locks already held.  Taking them namespace by namespace
	 * could deadlock against another worker's batch.
	 */
	wb.first = 0;
	if (wb.ngroups > 1) {
		evbuffer_drain(wb.streams, evbuffer_get_length(wb.streams));
		for (int i = 0; i < wb.nitems; i++) {
			evbuffer_add(wb.streams, i ? "," : "[", 1);
			json_write_cstr(wb.streams, wb.items[i]->pv[1]);
		}
		evbuffer_add(wb.streams, "]", 2);	/* with the NUL */
		wb.pv[0] = (const char *)evbuffer_pullup(wb.streams, -1);
		wb.st[0] = (struct db_stmt){ lock_all_sql, 1, &wb.pv[0], 1 };
		wb.first = 1;
	}
	for (int g = 0; g < wb.ngroups; g++) {
		int k = wb.first + g;
		evbuffer_add(wb.g[g].json, "]", 2);	/* with the NUL */
		if (group_sql(&wb.g[g]) < 0) {
			log_error("out of memory building a write batch");
			abort();
		}
		wb.pv[k] = (const char *)evbuffer_pullup(wb.g[g].json, -1);
		wb.st[k] = (struct db_stmt){ wb.g[g].sql, 1, &wb.pv[k], 1 };
	}
	log_debug("write batch writes=%d namespaces=%d bytes=%zu", wb.nitems, wb.ngroups, bytes);
	wb.busy = 1;
	count_batch(wb.nitems);
	db_query_reset(&wb.q);
	wb.q.stmts = wb.st;
	wb.q.nstmts = wb.first + wb.ngroups;
	wb.q.cb = batch_done;
	wb.q.arg = NULL;
	db_submit(&wb.q);
}

void
wb_submit(struct rpc_ctx *c)
{
	c->wq_since = http_now_ns();
	TAILQ_INSERT_TAIL(&wb.queue, c, wq);
	wb.queued++;
	wb_kick();
}
