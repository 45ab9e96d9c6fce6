/*
 * db.h - a worker's PostgreSQL connections, driven by its event loop.
 *
 * Every connection is non-blocking and in libpq pipeline mode.  A query
 * is a short list of statements sent together and ended by one Sync, so
 * it costs one round trip and runs as one implicit transaction: either
 * every statement commits or none does (an error aborts the rest).
 * Statements marked `prepare` are prepared once per connection under a
 * name derived from their text; the Parse travels in the same round trip
 * as the first execution.
 *
 * Queries wait in FIFO order for a free connection.  When PostgreSQL is
 * unreachable, queued and new queries fail at once with a message instead
 * of hanging; when it is frozen or slow they fail at the deadline
 * (db_set_timeout), and after one such silence at once until a probe
 * gets an answer; connections are re-established in the background.
 */
#ifndef EVENTODB_DB_H
#define EVENTODB_DB_H

#include <stdint.h>
#include <sys/queue.h>

#include <libpq-fe.h>

struct event_base;
struct db_conn;

#define DB_MAX_STMTS 48

struct db_stmt {
	const char	*sql;
	int		 nparams;
	const char *const *values;	/* text format, NULL = SQL NULL */
	int		 prepare;	/* prepare once per connection */
	/*
	 * Optional, per parameter: formats[k] = 1 sends values[k] as binary,
	 * lengths[k] bytes, not NUL-terminated (a text parameter's binary
	 * form is its bytes: a JSON span passed straight from the request).
	 * NULL formats: every value is NUL-terminated text.
	 */
	const int	*lengths;
	const int	*formats;
};

struct db_query {
	const struct db_stmt *stmts;
	int		 nstmts;
	void		(*cb)(struct db_query *q);
	void		*arg;
	/* Results, filled before cb and cleared by db_query_reset(). */
	PGresult	*res[DB_MAX_STMTS];	/* NULL where the pipeline aborted */
	PGresult	*err;		/* first error result, also in res[] */
	const char	*errmsg;	/* connection-level failure, or NULL */
	uint64_t	 t_submit;
	TAILQ_ENTRY(db_query) entry;
};

/*
 * Deadline of a database round trip, in seconds (0: none), set before
 * db_init: statement_timeout on each connection; a connection silent for
 * one second longer, or a query queued that long, fails the query.
 */
void db_set_timeout(int secs);

/* Connect the pool: n connections to conninfo. */
int db_init(struct event_base *base, const char *conninfo, int n);
void db_shutdown(void);

/* Queue a query; q->cb runs later (never from inside db_submit). */
void db_submit(struct db_query *q);

/* Free the results of a finished query so it can be reused. */
void db_query_reset(struct db_query *q);

/* Error text of a failed query (error result or connection failure). */
const char *db_errmsg(const struct db_query *q);
/* SQLSTATE of the error result, or "" */
const char *db_sqlstate(const struct db_query *q);
/* Constraint name of the error result, or "" */
const char *db_constraint(const struct db_query *q);
/* 1 if the query failed. */
static inline int db_failed(const struct db_query *q) { return q->err || q->errmsg; }

/* Connections currently open and usable. */
int db_open_conns(void);
/* 1 while at least one connection is up or being established. */
int db_available(void);

/*
 * LISTEN on `channel` over a dedicated connection; cb(payload) for each
 * notification.  On every (re)connect cb(NULL) is called first so the
 * caller can drop state that may have missed notifications.
 */
void db_listen(const char *channel, void (*cb)(const char *payload));

/*
 * Run a simple query (e.g. NOTIFY) on the LISTEN connection, after the
 * queries already queued there; done(arg, ok) when it completes or the
 * connection is lost (possibly before db_listen_send returns).  Returns
 * -1 if the connection is not up or the small queue is full.
 */
int db_listen_send(const char *sql, void (*done)(void *arg, int ok), void *arg);

#endif
