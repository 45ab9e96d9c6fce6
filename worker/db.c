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
 *
 * Deadlines (db_set_timeout): PostgreSQL cancels a statement running
 * longer than the timeout (statement_timeout, a clean error); a
 * connection that does not answer within the timeout plus one second
 * (PostgreSQL frozen or unreachable) is dropped and its query fails, as
 * does a query that waited that long for a free connection, and a
 * connection attempt is abandoned after connect_timeout (default 2 s).
 *
 * Reconnecting: a lost connection is retried after 50 ms, doubling up to
 * 500 ms while the whole pool is down, with jitter.  While the pool is
 * down only its first connection probes; when it gets through, each
 * connection that comes up starts the next one (after ~100 ms).  While part of the pool
 * is up (e.g. PostgreSQL is out of connections, 53300) the others back
 * off up to 5 s.  Failed attempts are logged at most once per 10 s per worker.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
	struct event	*deadline;	/* connect or query deadline */
	int		 backoff_ms;
	struct db_query	*cur;
	int		 ncmds, cmd;	/* commands sent / being read */
	int16_t		 cmd_stmt[MAX_CMDS];	/* stmt index, or -1 - stmt for a Parse */
	uint64_t	 prep[PREP_SLOTS];
	int		 nprep;
	uint64_t	 t_sent;	/* when cur was sent (monotonic ns) */
	int		 recycle;	/* libpq's buffers grew: reconnect when idle */
};

static struct event_base *db_base;
static char *db_conninfo;
static struct db_conn *pool;
static int npool;
static struct db_conn listen_conn;

/* Deadlines (ms, 0 = none) and the `options` connection parameter. */
static int db_timeout_ms;
static int db_connect_ms = 2000;
static char db_options[160] = "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3";
static char db_tcp_user_timeout[16] = "0";
static struct event *qwait_ev;	/* fails queries waiting too long */
static struct event *rest_ev;	/* starts the connections after the first */
static int rest_started;

#define BACKOFF_FIRST_MS	50
#define BACKOFF_DOWN_MS		500	/* cap while the whole pool is down */
#define BACKOFF_PARTIAL_MS	5000	/* cap while part of the pool is up */
#define FAIL_LOG_EVERY_NS	10000000000ull

/*
 * libpq grows a connection's output buffer to the largest message it
 * sent and its input buffer to the largest it received, doubling, and
 * never gives either back: after one 16 MiB write the connection holds
 * 32 MiB for good (battery T16b).  A connection that sent parameters or
 * received a row this large is closed and reopened once its query is
 * done; the threshold is above --write-batch-bytes' default, so ordinary
 * group commits never pay for a reconnect.
 */
#define RECYCLE_BYTES		(8u * 1024 * 1024)

/*
 * Stalled: a pool connection gave no answer within the deadline, so
 * PostgreSQL is frozen or cut off.  Until a connection proves it answers
 * again (a probe query, or a new connection), queries fail at once
 * instead of each waiting out the deadline (worker/wbatch.c's lane would
 * otherwise wait twice).
 */
static int db_stalled;
static int probe_busy;
static struct db_query probe_q;
static const struct db_stmt probe_stmt = { "SELECT 1", 0, NULL, 0 };

static uint64_t fail_logged_ns;	/* last "connection failed" warning */
static int fail_suppressed;
static uint32_t jitter_state;

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
static void rest_cb(evutil_socket_t fd, short what, void *arg);
static void conn_down(struct db_conn *dc, const char *why);
static int send_query(struct db_conn *dc, struct db_query *q);
static void fail_waiting(const char *msg);
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

static int
pool_up(void)
{
	for (int i = 0; i < npool; i++)
		if (pool[i].state == DC_READY || pool[i].state == DC_BUSY)
			return 1;
	return 0;
}

/* ms scaled by a factor in [0.75, 1.25): workers do not retry in step. */
static int
jitter(int ms)
{
	jitter_state ^= jitter_state << 13;
	jitter_state ^= jitter_state >> 17;
	jitter_state ^= jitter_state << 5;
	return ms * 3 / 4 + (int)(jitter_state % (unsigned)(ms / 2 + 1));
}

static void
timer_in(struct event *ev, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg);

static void
deadline_arm(struct db_conn *dc, int ms)
{
	if (ms <= 0)
		return;
	if (!dc->deadline && !(dc->deadline = evtimer_new(db_base, deadline_cb, dc)))
		return;
	timer_in(dc->deadline, ms);
}

static void
deadline_disarm(struct db_conn *dc)
{
	if (dc->deadline)
		evtimer_del(dc->deadline);
}

static void
watch(struct db_conn *dc, short what)
{
	/*
	 * The usual case: a query sent on a connection already waiting to
	 * read.  Recreating the event cost an epoll_ctl DEL and ADD and an
	 * allocation per query.  (conn_down frees the event, so one left
	 * here is for this connection's socket.)
	 */
	if (dc->ev && event_get_fd(dc->ev) == PQsocket(dc->pg) &&
	    event_get_events(dc->ev) == what &&
	    event_pending(dc->ev, what & (EV_READ | EV_WRITE), NULL))
		return;
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
	deadline_disarm(dc);
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
	struct db_conn *dc = arg;

	/* While the whole pool is down only pool[0] probes; the others
	 * (and the LISTEN connection) wait until it gets through. */
	if (dc != &pool[0] && !pool_up()) {
		timer_in(dc->retry, jitter(BACKOFF_DOWN_MS));
		return;
	}
	conn_start(dc);
}

/*
 * A pool connection got through: start the next one still waiting about
 * CHAIN_MS later (each success starts one more, so the pool refills
 * within a fraction of a second after an outage, and stops growing at the
 * first refusal, e.g. 53300; the pause lets workers that have no
 * connection at all, probing every 500 ms, get some of the slots that
 * just became free), and the LISTEN connection at once if the pool was
 * down.
 */
#define CHAIN_MS	100

static void
kick_down_conns(int was_down)
{
	for (int i = 0; i < npool; i++)
		if (pool[i].state == DC_DOWN && pool[i].retry) {
			timer_in(pool[i].retry, jitter(CHAIN_MS));
			break;
		}
	if (was_down && listen_conn.listen && listen_conn.state == DC_DOWN && listen_conn.retry)
		timer_in(listen_conn.retry, 0);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct db_conn *dc = arg;
	char why[96];

	if (dc->state == DC_CONNECTING) {
		snprintf(why, sizeof(why), "no connection within %d ms", db_connect_ms);
		conn_down(dc, why);
	} else if (dc->state == DC_BUSY) {
		snprintf(why, sizeof(why), "no answer within %d ms", db_timeout_ms + 1000);
		if (!dc->listen && !db_stalled) {
			db_stalled = 1;
			log_warn("PostgreSQL is not answering: queries fail at once until it does");
		}
		finish_query(dc, "PostgreSQL did not answer in time");
		conn_down(dc, why);
		if (db_stalled)
			fail_waiting("PostgreSQL is not answering");
		pump();	/* the probe */
	}
}

static void
stall_over(void)
{
	if (db_stalled) {
		db_stalled = 0;
		log_info("PostgreSQL answers again");
	}
}

static void
probe_done(struct db_query *q)
{
	probe_busy = 0;
	if (!db_failed(q))
		stall_over();
	db_query_reset(q);
	pump();
}

/* While stalled, one SELECT 1 in flight on a ready connection. */
static void
probe_send(void)
{
	for (int i = 0; i < npool && !probe_busy; i++) {
		struct db_conn *dc = &pool[i];

		if (dc->state != DC_READY)
			continue;
		probe_q.stmts = &probe_stmt;
		probe_q.nstmts = 1;
		probe_q.cb = probe_done;
		probe_q.err = NULL;
		probe_q.errmsg = NULL;
		if (send_query(dc, &probe_q) < 0) {
			dc->cur = NULL;
			conn_down(dc, PQerrorMessage(dc->pg));
			continue;
		}
		dc->t_sent = evshm_mono_ns();
		deadline_arm(dc, db_timeout_ms + 1000);
		SHM_GAUGE_ADD(db_pool_busy, 1);
		probe_busy = 1;
	}
}

/* Fail the queries that waited too long for a free connection. */
static void
qwait_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t limit = (uint64_t)(db_timeout_ms + 1000) * 1000000ull;
	uint64_t now = evshm_mono_ns();
	struct db_query *q;

	while ((q = TAILQ_FIRST(&waitq)) != NULL && now - q->t_submit >= limit) {
		TAILQ_REMOVE(&waitq, q, entry);
		SHM_GAUGE_ADD(db_queue, -1);
		SHM_INC(db_rejected);
		q->errmsg = "no database connection became free in time";
		q->cb(q);
	}
	if ((q = TAILQ_FIRST(&waitq)) != NULL)
		timer_in(qwait_ev, (int)((limit - (now - q->t_submit)) / 1000000ull) + 1);
}

static void
conn_down(struct db_conn *dc, const char *why_in)
{
	int was_up = dc->state == DC_READY || dc->state == DC_BUSY;
	char why[512];
	size_t n;

	/* libpq's messages end in a newline and may span lines: one line. */
	snprintf(why, sizeof(why), "%s", why_in ? why_in : "");
	for (char *p = why; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	n = strlen(why);
	while (n > 0 && why[n - 1] == ' ')
		why[--n] = '\0';

	if (dc->ev) {
		event_free(dc->ev);
		dc->ev = NULL;
	}
	if (dc->pg) {
		PQfinish(dc->pg);
		dc->pg = NULL;
	}
	dc->state = DC_DOWN;
	dc->recycle = 0;	/* the next session starts with fresh buffers anyway */
	deadline_disarm(dc);
	prep_forget_all(dc);
	SHM_INC(db_disconnects);
	if (was_up && !dc->listen)
		SHM_GAUGE_ADD(db_pool_open, -1);
	if (was_up) {
		log_warn("database connection %d lost: %s", dc->idx, why);
	} else {
		/* Failed attempts repeat (e.g. 53300 too many clients): at
		 * most one warning per 10 s per worker. */
		uint64_t now = evshm_mono_ns();
		if (fail_logged_ns == 0 || now - fail_logged_ns >= FAIL_LOG_EVERY_NS) {
			if (fail_suppressed)
				log_warn("database connection %d failed: %s (and %d more failures in the last %d s)",
				    dc->idx, why, fail_suppressed,
				    (int)((now - fail_logged_ns) / 1000000000ull));
			else
				log_warn("database connection %d failed: %s", dc->idx, why);
			fail_logged_ns = now;
			fail_suppressed = 0;
		} else
			fail_suppressed++;
	}
	finish_query(dc, "connection to PostgreSQL lost");
	/* Capped at 500 ms while nothing is up, so that service resumes
	 * within about half a second of PostgreSQL coming back
	 * (t/93-pgrestart.t, t/battery/20-pg-restart.t: within 2 s). */
	dc->backoff_ms = dc->backoff_ms ? dc->backoff_ms * 2 : BACKOFF_FIRST_MS;
	if (dc->backoff_ms > (!dc->listen && pool_up() ? BACKOFF_PARTIAL_MS : BACKOFF_DOWN_MS))
		dc->backoff_ms = !dc->listen && pool_up() ? BACKOFF_PARTIAL_MS : BACKOFF_DOWN_MS;
	if (!dc->retry)
		dc->retry = evtimer_new(db_base, retry_cb, dc);
	timer_in(dc->retry, jitter(dc->backoff_ms));
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
	deadline_arm(dc, db_timeout_ms ? db_timeout_ms + 1000 : 0);
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
	int was_down = !pool_up();

	deadline_disarm(dc);
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
	stall_over();	/* a new session: PostgreSQL answers */
	watch(dc, EV_READ | EV_PERSIST);
	kick_down_conns(was_down);
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
	/* Defaults before dbname, which the URL may override (TCP only:
	 * detect a dead peer); the rest after it, fixed. */
	static const char *const keys[] = {
		"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout",
		"dbname", "options", "client_encoding", "application_name", NULL
	};
	const char *vals[] = {
		"1", "10", "2", "3", db_tcp_user_timeout,
		db_conninfo, db_options, "UTF8", "eventodbd", NULL
	};

	dc->pg = PQconnectStartParams(keys, vals, 1);
	if (!dc->pg || PQstatus(dc->pg) == CONNECTION_BAD) {
		conn_down(dc, dc->pg ? PQerrorMessage(dc->pg) : "out of memory");
		return;
	}
	dc->state = DC_CONNECTING;
	deadline_arm(dc, db_connect_ms);
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
		size_t bytes = 0;

		/* strnlen: libpq measures them anyway; scan no further than needed */
		for (int k = 0; k < s->nparams && bytes < RECYCLE_BYTES; k++)
			if (s->values[k] && s->formats && s->formats[k])
				bytes += (size_t)s->lengths[k];
			else if (s->values[k])
				bytes += strnlen(s->values[k], RECYCLE_BYTES - bytes);
		if (bytes >= RECYCLE_BYTES)
			dc->recycle = 1;
		if (s->prepare) {
			uint64_t h = fnv1a(s->sql);
			snprintf(name, sizeof(name), "e%016llx", (unsigned long long)h);
			if (!prep_find(dc, h, 0) && dc->nprep >= PREP_SLOTS / 2) {
				/* The set is full: run this one unprepared. */
				if (!PQsendQueryParams(dc->pg, s->sql, s->nparams, NULL, s->values,
				    s->lengths, s->formats, 0))
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
			if (!PQsendQueryPrepared(dc->pg, name, s->nparams, s->values, s->lengths,
			    s->formats, 0))
				return -1;
		} else {
			if (!PQsendQueryParams(dc->pg, s->sql, s->nparams, NULL, s->values,
			    s->lengths, s->formats, 0))
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
	if (db_stalled) {
		probe_send();
		return;
	}
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
		deadline_arm(dc, db_timeout_ms ? db_timeout_ms + 1000 : 0);
		SHM_GAUGE_ADD(db_queue, -1);
		SHM_GAUGE_ADD(db_pool_busy, 1);
		SHM_INC(db_queries);
		SHM_ADD(db_statements, 0, q->nstmts);
		SHM_OBSERVE(db_queue_wait, 0, dc->t_sent - q->t_submit);
	}
}

/* A row of RECYCLE_BYTES or more: libpq's input buffer grew to hold it. */
static int
big_row(const PGresult *r)
{
	int rows = PQntuples(r), cols = PQnfields(r);

	for (int i = 0; i < rows; i++) {
		size_t n = 0;
		for (int j = 0; j < cols; j++)
			n += (size_t)PQgetlength(r, i, j);
		if (n >= RECYCLE_BYTES)
			return 1;
	}
	return 0;
}

/* Close an idle connection and open it again (quietly: nothing failed). */
static void
conn_recycle(struct db_conn *dc)
{
	dc->recycle = 0;
	if (dc->ev) {
		event_free(dc->ev);
		dc->ev = NULL;
	}
	PQfinish(dc->pg);
	dc->pg = NULL;
	dc->state = DC_DOWN;
	prep_forget_all(dc);
	SHM_GAUGE_ADD(db_pool_open, -1);
	SHM_INC(db_recycled);
	log_debug("database connection %d reopened to release libpq's buffers", dc->idx);
	conn_start(dc);
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
			if (dc->recycle && dc->state == DC_READY)
				conn_recycle(dc);
			pump();
			return;
		}
		if (!q || dc->cmd >= dc->ncmds) {
			/*
			 * An error after the last command's results is the
			 * implicit transaction's commit failing at Sync: the
			 * query failed, even though every statement succeeded.
			 */
			if (q && !q->err && st == PGRES_FATAL_ERROR) {
				q->err = r;
				continue;
			}
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
		if (PQresultMemorySize(r) >= RECYCLE_BYTES && !dc->recycle)
			dc->recycle = big_row(r);
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
		deadline_disarm(dc);
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
	if (db_stalled)
		fail_waiting("PostgreSQL is not answering");
	else if (!db_available())
		fail_waiting("PostgreSQL is unavailable");
	else
		pump();
}

void
db_set_timeout(int secs)
{
	db_timeout_ms = secs > 0 ? secs * 1000 : 0;
	if (db_timeout_ms)
		snprintf(db_options, sizeof(db_options),
		    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c statement_timeout=%d",
		    db_timeout_ms);
	snprintf(db_tcp_user_timeout, sizeof(db_tcp_user_timeout), "%d",
	    db_timeout_ms ? db_timeout_ms + 1000 : 0);
}

int
db_init(struct event_base *base, const char *conninfo, int n)
{
	PQconninfoOption *opts;

	db_base = base;
	fail_ev = evtimer_new(base, fail_cb, NULL);
	qwait_ev = evtimer_new(base, qwait_cb, NULL);
	jitter_state = (uint32_t)getpid() * 2654435761u ^ (uint32_t)evshm_mono_ns();
	if (!jitter_state)
		jitter_state = 1;
	/* libpq leaves connect_timeout to us in non-blocking mode. */
	if ((opts = PQconninfoParse(conninfo, NULL)) != NULL) {
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
				db_connect_ms = (atoi(o->val) < 2 ? 2 : atoi(o->val)) * 1000;
		PQconninfoFree(opts);
	}
	db_conninfo = strdup(conninfo);
	pool = calloc((size_t)n, sizeof(*pool));
	if (!pool || !db_conninfo)
		return -1;
	npool = n;
	SHM_SET(db_pool_size, n);
	for (int i = 0; i < n; i++)
		pool[i].idx = i;
	/*
	 * One connection now, the rest (and the LISTEN connection) on the
	 * loop's first turn, once the worker accepts: each connection makes
	 * the postmaster fork a backend, and five at once took the CPU from
	 * a replacement worker on its way to accepting (battery T03b).
	 */
	conn_start(&pool[0]);
	rest_ev = evtimer_new(base, rest_cb, NULL);
	if (!rest_ev)
		return -1;
	timer_in(rest_ev, 0);
	return 0;
}

/* The connections db_init left for the loop's first turn. */
static void
rest_cb(evutil_socket_t fd, short what, void *arg)
{
	rest_started = 1;
	for (int i = 1; i < npool; i++)
		if (pool[i].state == DC_DOWN && !pool[i].pg && !pool[i].retry)
			conn_start(&pool[i]);
	if (listen_conn.listen && listen_conn.state == DC_DOWN && !listen_conn.pg &&
	    !listen_conn.retry)
		conn_start(&listen_conn);
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
		if (rest_started)
			conn_start(&listen_conn);	/* else rest_cb starts it */
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
	if (dc->deadline)
		event_free(dc->deadline);
	if (dc->pg)
		PQfinish(dc->pg);
	dc->ev = dc->retry = dc->deadline = NULL;
	dc->pg = NULL;
	dc->state = DC_DOWN;
}

void
db_shutdown(void)
{
	for (int i = 0; i < npool; i++)
		conn_close_final(&pool[i]);
	conn_close_final(&listen_conn);
	/* One-shot, fired long ago; nothing else frees it (LeakSanitizer, T15h). */
	if (rest_ev) {
		event_free(rest_ev);
		rest_ev = NULL;
	}
}

void
db_submit(struct db_query *q)
{
	q->err = NULL;
	q->errmsg = NULL;
	q->t_submit = evshm_mono_ns();
	SHM_GAUGE_ADD(db_queue, 1);
	if (!db_available() || db_stalled) {
		/* Fail on the next loop turn, never inside db_submit. */
		struct timeval now = { 0, 0 };
		TAILQ_INSERT_TAIL(&waitq, q, entry);
		evtimer_add(fail_ev, &now);
		return;
	}
	TAILQ_INSERT_TAIL(&waitq, q, entry);
	pump();
	if (db_timeout_ms && !TAILQ_EMPTY(&waitq) && !evtimer_pending(qwait_ev, NULL))
		timer_in(qwait_ev, db_timeout_ms + 1000);
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
