/*
 * db.c - non-blocking libpq pool in pipeline mode (see db.h).
 *
 * Each connection moves through DOWN -> CONNECTING -> READY <-> BUSY.
 * A BUSY connection has exactly one query in flight: its commands
 * (Parse for statements not yet prepared here, then Bind/Execute per
 * statement) and one Sync, all flushed at once.  Results are collected as
 * they arrive; PGRES_PIPELINE_SYNC ends the query and hands it back.
 *
 * Nothing here blocks: sockets are watched by the worker's event base,
 * writes that do not fit the socket buffer wait for EV_WRITE (PQflush).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "db.h"
#include "log.h"
#include "shm.h"

enum dc_state { DC_DOWN, DC_CONNECTING, DC_READY, DC_BUSY };

#define PREP_SLOTS	1024	/* prepared-statement set per connection */
#define MAX_CMDS	(2 * DB_MAX_STMTS)

struct db_conn {
	int		 idx;
	enum dc_state	 state;
	int		 listen;	/* the LISTEN connection */
	PGconn		*pg;
	struct event	*ev;		/* socket readiness */
	struct event	*retry;		/* reconnect timer */
	int		 backoff_ms;
	struct db_query	*cur;
	int		 ncmds, cmd;	/* commands sent / being read */
	int16_t		 cmd_stmt[MAX_CMDS];	/* stmt index, or -1 - stmt for a Parse */
	uint64_t	 prep[PREP_SLOTS];
	int		 nprep;
	uint64_t	 t_sent;	/* when cur was sent (monotonic ns) */
};

static struct event_base *db_base;
static char *db_conninfo;
static struct db_conn *pool;
static int npool;
static struct db_conn listen_conn;

/* Channels the LISTEN connection listens on. */
#define MAX_CHANNELS	4
static struct {
	char	*name;
	void	(*cb)(const char *payload);
} chans[MAX_CHANNELS];
static int nchans;

/*
 * Simple queries on the LISTEN connection (its LISTEN commands, and
 * db_listen_send), one at a time; lq[0] is in flight while it is BUSY.
 */
#define LQ_MAX		8
static struct {
	char	*sql;
	void	(*done)(void *arg, int ok);
	void	*arg;
} lq[LQ_MAX];
static int nlq, lq_ok;

static void lq_send_next(struct db_conn *dc);
static TAILQ_HEAD(, db_query) waitq = TAILQ_HEAD_INITIALIZER(waitq);
static struct event *fail_ev;	/* fails queued queries outside db_submit */


static void conn_start(struct db_conn *dc);
static void conn_event(evutil_socket_t fd, short what, void *arg);
static void pump(void);

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

/* Prepared-statement set: open addressing on the text hash. */
static int
prep_find(struct db_conn *dc, uint64_t h, int insert)
{
	unsigned i = (unsigned)(h % PREP_SLOTS);

	for (int n = 0; n < PREP_SLOTS; n++, i = (i + 1) % PREP_SLOTS) {
		if (dc->prep[i] == h)
			return 1;
		if (dc->prep[i] == 0) {
			if (insert && dc->nprep < PREP_SLOTS / 2) {
				dc->prep[i] = h;
				dc->nprep++;
			}
			return 0;
		}
	}
	return 0;
}

static void
prep_forget_all(struct db_conn *dc)
{
	memset(dc->prep, 0, sizeof(dc->prep));
	dc->nprep = 0;
}

/*
 * A Parse failed or never ran: that one statement is not prepared.  The
 * others still are, server-side, so forgetting them all would make the
 * next Parse of one of them fail with "already exists".
 */
static void
prep_forget(struct db_conn *dc, uint64_t h)
{
	uint64_t keep[PREP_SLOTS];
	int n = 0;

	for (int i = 0; i < PREP_SLOTS; i++)
		if (dc->prep[i] && dc->prep[i] != h)
			keep[n++] = dc->prep[i];
	prep_forget_all(dc);
	for (int i = 0; i < n; i++)
		prep_find(dc, keep[i], 1);
}

static void
watch(struct db_conn *dc, short what)
{
	if (dc->ev)
		event_free(dc->ev);
	dc->ev = event_new(db_base, PQsocket(dc->pg), what, conn_event, dc);
	event_add(dc->ev, NULL);
}

static void
finish_query(struct db_conn *dc, const char *errmsg)
{
	struct db_query *q = dc->cur;

	dc->cur = NULL;
	if (!q)
		return;
	if (errmsg && !q->err)
		q->errmsg = errmsg;
	SHM_GAUGE_ADD(db_pool_busy, -1);
	SHM_OBSERVE(db_query_duration, 0, evshm_mono_ns() - dc->t_sent);
	if (q->err || q->errmsg)
		SHM_INC(db_errors);
	q->cb(q);
}

/* Fail everything waiting: PostgreSQL cannot be reached right now. */
static void
fail_waiting(const char *msg)
{
	struct db_query *q;

	while ((q = TAILQ_FIRST(&waitq)) != NULL) {
		TAILQ_REMOVE(&waitq, q, entry);
		SHM_GAUGE_ADD(db_queue, -1);
		SHM_INC(db_rejected);
		q->errmsg = msg;
		q->cb(q);
	}
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_start(arg);
}

static void
conn_down(struct db_conn *dc, const char *why)
{
	int was_up = dc->state == DC_READY || dc->state == DC_BUSY;

	if (dc->ev) {
		event_free(dc->ev);
		dc->ev = NULL;
	}
	if (dc->pg) {
		PQfinish(dc->pg);
		dc->pg = NULL;
	}
	dc->state = DC_DOWN;
	prep_forget_all(dc);
	SHM_INC(db_disconnects);
	if (was_up && !dc->listen)
		SHM_GAUGE_ADD(db_pool_open, -1);
	if (was_up || dc->backoff_ms == 0 || dc->backoff_ms >= 1000)
		log_warn("database connection %d %s: %s", dc->idx,
		    was_up ? "lost" : "failed", why);
	finish_query(dc, "connection to PostgreSQL lost");
	/* Capped at 500 ms so that service resumes within about half a
	 * second of PostgreSQL coming back (t/93-pgrestart.t: within 2 s). */
	dc->backoff_ms = dc->backoff_ms ? dc->backoff_ms * 2 : 50;
	if (dc->backoff_ms > 500)
		dc->backoff_ms = 500;
	if (!dc->retry)
		dc->retry = evtimer_new(db_base, retry_cb, dc);
	struct timeval tv = { dc->backoff_ms / 1000, (dc->backoff_ms % 1000) * 1000 };
	evtimer_add(dc->retry, &tv);
	if (!dc->listen && !db_available())
		fail_waiting("PostgreSQL is unavailable");
	if (dc->listen) {
		/* Queued queries fail; listeners may have missed notifications. */
		while (nlq > 0) {
			void (*done)(void *, int) = lq[0].done;
			void *arg = lq[0].arg;
			free(lq[0].sql);
			memmove(&lq[0], &lq[1], sizeof(lq[0]) * (size_t)--nlq);
			if (done)
				done(arg, 0);
		}
		for (int i = 0; i < nchans; i++)
			chans[i].cb(NULL);
	}
}

static int
lq_push(const char *sql, void (*done)(void *, int), void *arg)
{
	if (nlq == LQ_MAX || !(lq[nlq].sql = strdup(sql)))
		return -1;
	lq[nlq].done = done;
	lq[nlq].arg = arg;
	nlq++;
	return 0;
}

static void
lq_send_next(struct db_conn *dc)
{
	int f;

	if (dc->state != DC_READY || nlq == 0)
		return;
	lq_ok = 1;
	if (!PQsendQuery(dc->pg, lq[0].sql)) {
		conn_down(dc, PQerrorMessage(dc->pg));
		return;
	}
	dc->state = DC_BUSY;
	f = PQflush(dc->pg);
	if (f < 0) {
		conn_down(dc, PQerrorMessage(dc->pg));
		return;
	}
	watch(dc, f ? EV_READ | EV_WRITE | EV_PERSIST : EV_READ | EV_PERSIST);
}

/* LISTEN on channel i over the LISTEN connection. */
static int
lq_push_listen(struct db_conn *dc, int i)
{
	char *id = PQescapeIdentifier(dc->pg, chans[i].name, strlen(chans[i].name));
	char sql[256];

	snprintf(sql, sizeof(sql), "LISTEN %s", id ? id : "eventodb");
	PQfreemem(id);
	return lq_push(sql, NULL, NULL);
}

static void
conn_ready(struct db_conn *dc)
{
	PQsetnonblocking(dc->pg, 1);
	if (dc->backoff_ms > 0)
		SHM_INC(db_reconnects);
	if (dc->backoff_ms >= 100)
		log_info("database connection %d re-established", dc->idx);
	dc->backoff_ms = 0;
	if (dc->listen) {
		dc->state = DC_READY;
		for (int i = 0; i < nchans; i++)
			lq_push_listen(dc, i);
		lq_send_next(dc);
		if (dc->state == DC_DOWN)
			return;
		for (int i = 0; i < nchans; i++)
			chans[i].cb(NULL);
		return;
	}
	if (!PQenterPipelineMode(dc->pg)) {
		conn_down(dc, PQerrorMessage(dc->pg));
		return;
	}
	dc->state = DC_READY;
	SHM_GAUGE_ADD(db_pool_open, 1);
	watch(dc, EV_READ | EV_PERSIST);
	pump();
}

static void
connect_poll(struct db_conn *dc)
{
	switch (PQconnectPoll(dc->pg)) {
	case PGRES_POLLING_READING:
		watch(dc, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		watch(dc, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		conn_ready(dc);
		break;
	default:
		conn_down(dc, PQerrorMessage(dc->pg));
	}
}

static void
conn_start(struct db_conn *dc)
{
	static const char *const keys[] = {
		"dbname", "options", "client_encoding", "application_name", NULL
	};
	const char *vals[] = {
		db_conninfo, "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3",
		"UTF8", "eventodbd", NULL
	};

	dc->pg = PQconnectStartParams(keys, vals, 1);
	if (!dc->pg || PQstatus(dc->pg) == CONNECTION_BAD) {
		conn_down(dc, dc->pg ? PQerrorMessage(dc->pg) : "out of memory");
		return;
	}
	dc->state = DC_CONNECTING;
	connect_poll(dc);
}

/* Send q on dc: all statements, one Sync, flush. */
static int
send_query(struct db_conn *dc, struct db_query *q)
{
	char name[24];

	dc->cur = q;
	dc->ncmds = 0;
	dc->cmd = 0;
	for (int i = 0; i < q->nstmts; i++) {
		const struct db_stmt *s = &q->stmts[i];
		if (s->prepare) {
			uint64_t h = fnv1a(s->sql);
			snprintf(name, sizeof(name), "e%016llx", (unsigned long long)h);
			if (!prep_find(dc, h, 0) && dc->nprep >= PREP_SLOTS / 2) {
				/* The set is full: run this one unprepared. */
				if (!PQsendQueryParams(dc->pg, s->sql, s->nparams, NULL, s->values,
				    NULL, NULL, 0))
					return -1;
				dc->cmd_stmt[dc->ncmds++] = (int16_t)i;
				continue;
			}
			if (!prep_find(dc, h, 0)) {
				if (!PQsendPrepare(dc->pg, name, s->sql, s->nparams, NULL))
					return -1;
				prep_find(dc, h, 1);
				dc->cmd_stmt[dc->ncmds++] = (int16_t)(-1 - i);
			}
			if (!PQsendQueryPrepared(dc->pg, name, s->nparams, s->values, NULL, NULL, 0))
				return -1;
		} else {
			if (!PQsendQueryParams(dc->pg, s->sql, s->nparams, NULL, s->values,
			    NULL, NULL, 0))
				return -1;
		}
		dc->cmd_stmt[dc->ncmds++] = (int16_t)i;
	}
	if (!PQpipelineSync(dc->pg))
		return -1;
	dc->state = DC_BUSY;
	switch (PQflush(dc->pg)) {
	case 0:
		watch(dc, EV_READ | EV_PERSIST);
		return 0;
	case 1:
		watch(dc, EV_READ | EV_WRITE | EV_PERSIST);
		return 0;
	default:
		return -1;
	}
}

static void
pump(void)
{
	for (int i = 0; i < npool && !TAILQ_EMPTY(&waitq); i++) {
		struct db_conn *dc = &pool[i];
		struct db_query *q;

		if (dc->state != DC_READY)
			continue;
		q = TAILQ_FIRST(&waitq);
		TAILQ_REMOVE(&waitq, q, entry);
		if (send_query(dc, q) < 0) {
			/* The query goes back to the front; the connection is rebuilt. */
			dc->cur = NULL;
			TAILQ_INSERT_HEAD(&waitq, q, entry);
			conn_down(dc, PQerrorMessage(dc->pg));
			continue;
		}
		dc->t_sent = evshm_mono_ns();
		SHM_GAUGE_ADD(db_queue, -1);
		SHM_GAUGE_ADD(db_pool_busy, 1);
		SHM_INC(db_queries);
		SHM_ADD(db_statements, 0, q->nstmts);
		SHM_OBSERVE(db_queue_wait, 0, dc->t_sent - q->t_submit);
	}
}

/* Read whatever results are complete; finish the query at the Sync. */
static void
read_results(struct db_conn *dc)
{
	struct db_query *q = dc->cur;

	while (!PQisBusy(dc->pg)) {
		PGresult *r = PQgetResult(dc->pg);
		ExecStatusType st;
		int ci;

		if (!r) {
			/* End of one command's results. */
			if (dc->cmd < dc->ncmds)
				dc->cmd++;
			else
				return;
			continue;
		}
		st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			dc->state = DC_READY;
			if (PQtransactionStatus(dc->pg) != PQTRANS_IDLE) {
				conn_down(dc, "unexpected open transaction");
				return;
			}
			finish_query(dc, NULL);
			pump();
			return;
		}
		if (!q || dc->cmd >= dc->ncmds) {
			PQclear(r);
			continue;
		}
		ci = dc->cmd_stmt[dc->cmd];
		if (st == PGRES_PIPELINE_ABORTED) {
			PQclear(r);
			if (ci < 0)	/* a Parse that never ran: not prepared */
				prep_forget(dc, fnv1a(q->stmts[-1 - ci].sql));
			continue;
		}
		if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
			if (ci < 0)
				prep_forget(dc, fnv1a(q->stmts[-1 - ci].sql));
			if (!q->err)
				q->err = r;
			else if (ci < 0) {
				PQclear(r);
				continue;
			}
			if (ci >= 0) {
				if (q->res[ci] && q->res[ci] != q->err)
					PQclear(q->res[ci]);
				q->res[ci] = r;
			}
			continue;
		}
		if (ci < 0) {
			PQclear(r);	/* Parse complete */
			continue;
		}
		if (q->res[ci])
			PQclear(q->res[ci]);
		q->res[ci] = r;
	}
}

static void
listen_read(struct db_conn *dc)
{
	PGnotify *n;

	while (dc->state == DC_BUSY && !PQisBusy(dc->pg)) {
		PGresult *r = PQgetResult(dc->pg);
		if (r) {
			if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
				lq_ok = 0;
				log_warn("database connection %d: %s", dc->idx,
				    PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
			}
			PQclear(r);
			continue;
		}
		/* The query at the head of the queue is complete. */
		if (nlq > 0) {
			void (*done)(void *, int) = lq[0].done;
			void *arg = lq[0].arg;
			free(lq[0].sql);
			memmove(&lq[0], &lq[1], sizeof(lq[0]) * (size_t)--nlq);
			dc->state = DC_READY;
			if (done)
				done(arg, lq_ok);
		} else
			dc->state = DC_READY;
		lq_send_next(dc);
	}
	if (dc->state == DC_DOWN)
		return;
	while ((n = PQnotifies(dc->pg)) != NULL) {
		SHM_INC(db_notifications);
		for (int i = 0; i < nchans; i++)
			if (strcmp(n->relname, chans[i].name) == 0)
				chans[i].cb(n->extra ? n->extra : "");
		PQfreemem(n);
	}
}

static void
conn_event(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn *dc = arg;

	if (dc->state == DC_CONNECTING) {
		connect_poll(dc);
		return;
	}
	if (what & EV_WRITE) {
		int f = PQflush(dc->pg);
		if (f < 0) {
			conn_down(dc, PQerrorMessage(dc->pg));
			return;
		}
		if (f == 0)
			watch(dc, EV_READ | EV_PERSIST);
	}
	if (what & EV_READ) {
		if (!PQconsumeInput(dc->pg) || PQstatus(dc->pg) == CONNECTION_BAD) {
			conn_down(dc, PQerrorMessage(dc->pg));
			return;
		}
		if (dc->listen)
			listen_read(dc);
		else if (dc->state == DC_BUSY)
			read_results(dc);
		else if (PQstatus(dc->pg) == CONNECTION_BAD)
			conn_down(dc, PQerrorMessage(dc->pg));
	}
}

static void
fail_cb(evutil_socket_t fd, short what, void *arg)
{
	if (!db_available())
		fail_waiting("PostgreSQL is unavailable");
	else
		pump();
}

int
db_init(struct event_base *base, const char *conninfo, int n)
{
	db_base = base;
	fail_ev = evtimer_new(base, fail_cb, NULL);
	db_conninfo = strdup(conninfo);
	pool = calloc((size_t)n, sizeof(*pool));
	if (!pool || !db_conninfo)
		return -1;
	npool = n;
	SHM_SET(db_pool_size, n);
	for (int i = 0; i < n; i++) {
		pool[i].idx = i;
		conn_start(&pool[i]);
	}
	return 0;
}

void
db_listen(const char *channel, void (*cb)(const char *payload))
{
	if (nchans == MAX_CHANNELS || !(chans[nchans].name = strdup(channel))) {
		log_error("could not listen on channel \"%s\"", channel);
		return;
	}
	chans[nchans++].cb = cb;
	if (!listen_conn.listen) {
		listen_conn.idx = npool;
		listen_conn.listen = 1;
		conn_start(&listen_conn);
		return;
	}
	if (listen_conn.state == DC_READY || listen_conn.state == DC_BUSY) {
		lq_push_listen(&listen_conn, nchans - 1);
		lq_send_next(&listen_conn);
	}
}

int
db_listen_send(const char *sql, void (*done)(void *arg, int ok), void *arg)
{
	struct db_conn *dc = &listen_conn;

	if (!dc->listen || (dc->state != DC_READY && dc->state != DC_BUSY))
		return -1;
	if (lq_push(sql, done, arg) < 0)
		return -1;
	lq_send_next(dc);
	return 0;
}

static void
conn_close_final(struct db_conn *dc)
{
	if (dc->ev)
		event_free(dc->ev);
	if (dc->retry)
		event_free(dc->retry);
	if (dc->pg)
		PQfinish(dc->pg);
	dc->ev = dc->retry = NULL;
	dc->pg = NULL;
	dc->state = DC_DOWN;
}

void
db_shutdown(void)
{
	for (int i = 0; i < npool; i++)
		conn_close_final(&pool[i]);
	conn_close_final(&listen_conn);
}

void
db_submit(struct db_query *q)
{
	q->err = NULL;
	q->errmsg = NULL;
	q->t_submit = evshm_mono_ns();
	SHM_GAUGE_ADD(db_queue, 1);
	if (!db_available()) {
		/* Fail on the next loop turn, never inside db_submit. */
		struct timeval now = { 0, 0 };
		TAILQ_INSERT_TAIL(&waitq, q, entry);
		evtimer_add(fail_ev, &now);
		return;
	}
	TAILQ_INSERT_TAIL(&waitq, q, entry);
	pump();
}

void
db_query_reset(struct db_query *q)
{
	int err_in_res = 0;

	for (int i = 0; i < DB_MAX_STMTS; i++) {
		if (q->res[i]) {
			if (q->res[i] == q->err)
				err_in_res = 1;
			PQclear(q->res[i]);
			q->res[i] = NULL;
		}
	}
	if (q->err && !err_in_res)
		PQclear(q->err);
	q->err = NULL;
	q->errmsg = NULL;
}

const char *
db_errmsg(const struct db_query *q)
{
	if (q->err) {
		const char *m = PQresultErrorField(q->err, PG_DIAG_MESSAGE_PRIMARY);
		return m ? m : PQresultErrorMessage(q->err);
	}
	return q->errmsg ? q->errmsg : "";
}

const char *
db_sqlstate(const struct db_query *q)
{
	const char *s = q->err ? PQresultErrorField(q->err, PG_DIAG_SQLSTATE) : NULL;
	return s ? s : "";
}

const char *
db_constraint(const struct db_query *q)
{
	const char *s = q->err ? PQresultErrorField(q->err, PG_DIAG_CONSTRAINT_NAME) : NULL;
	return s ? s : "";
}

int
db_open_conns(void)
{
	int n = 0;
	for (int i = 0; i < npool; i++)
		if (pool[i].state == DC_READY || pool[i].state == DC_BUSY)
			n++;
	return n;
}

int
db_available(void)
{
	for (int i = 0; i < npool; i++)
		if (pool[i].state != DC_DOWN)
			return 1;
	return 0;
}
