/*
 * evcheck.h - shared declarations of evcheck, the history checker of the
 * reliability battery (issue 9; evcheck(1)).
 *
 * evcheck is split by job:
 *   evcheck.c        command line, start-up, the run's phases, the
 *                    summary JSON and the --history file
 *   evcheck_run.c    the load phase: K keep-alive client connections and
 *                    the category followers on one libevent loop, the
 *                    workloads (mixed, conflict), the recorded history
 *   evcheck_final.c  the final read: a blocking HTTP client that pages
 *                    through every touched stream and category, retried
 *                    until the server answers or --final-timeout passes
 *   evcheck_check.c  the invariants N1-N9 and the skip check over the
 *                    history and the final read; --inject
 * Shared with evload: the HTTP response parser (tools/httpresp.c), the
 * socket side of the connections and the URL (tools/evconn.c), the option
 * table walk and JSON strings (tools/evtool.c).
 *
 * Everything runs in one thread.  Prefix: ec_.
 */
#ifndef EVCHECK_H
#define EVCHECK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "evconn.h"

#define EC_NOEV		INT64_MIN	/* write without expectedVersion */
#define EC_NONE		UINT32_MAX	/* "no op": a stored message we never wrote */
#define EC_READ_BATCH	1000		/* batchSize of the load phase's reads */
#define EC_FOLLOW_BATCH	100		/* batchSize of the followers' polls */

enum ec_workload { EC_MIXED, EC_CONFLICT };

/* What an operation was. */
enum ec_kind {
	EC_WRITE,	/* stream.write */
	EC_READ,	/* stream.get from the client's known version */
	EC_CREAD,	/* category.get from the client's known global position */
	EC_VERSION,	/* stream.version (conflict workload: resynchronise) */
	EC_FORGOTTEN	/* --inject phantom: a write the history "lost" */
};

enum ec_outcome {
	EC_PENDING,	/* invoked, no answer yet */
	EC_OK,		/* 200 with a parsed result */
	EC_FAIL,	/* a definite failure: 4xx (or a 5xx for a read) */
	EC_INDET	/* indeterminate: timeout, reset, closed, 5xx of a write */
};

/* Why an operation is indeterminate (or failed without a status). */
enum ec_why {
	EC_W_NONE,
	EC_W_TIMEOUT,	/* no complete answer within --timeout */
	EC_W_CLOSED,	/* connection closed or reset with the request unanswered */
	EC_W_PROTOCOL,	/* an answer we cannot parse */
	EC_W_5XX,	/* a 5xx answer to a write */
	EC_W_NKINDS
};

/* One recorded operation.  Times are ns since the run's start. */
struct ec_op {
	uint64_t	t_inv;
	uint64_t	t_done;
	int64_t		ev;	/* write: expectedVersion or EC_NOEV; reads: start position */
	int64_t		pos;	/* write ok: position; reads: the observed version (see below) */
	int64_t		gpos;	/* write ok: globalPosition; reads: messages returned */
	uint32_t	client;
	uint32_t	key;	/* stream index (EC_CREAD: category index) */
	uint32_t	round;	/* conflict workload */
	uint16_t	status;	/* HTTP status, 0 = none */
	uint8_t		kind;	/* enum ec_kind */
	uint8_t		outcome;	/* enum ec_outcome */
	uint8_t		why;	/* enum ec_why */
	uint8_t		code;	/* index into ec_codes, 0 = none */
	uint8_t		full;	/* read: the batch was full (pos is a lower bound) */
	uint8_t		retries;	/* --retry: times the write was sent again */
	uint8_t		id[16];	/* write: the message id (UUIDv7) */
};
/*
 * Reads: pos is the highest position (EC_CREAD: global position) returned,
 * or start - 1 when nothing was returned: with full == 0 the stream's
 * version at the read was exactly pos (at most pos for an empty answer).
 */

/* Settings (evcheck.c fills them from the command line). */
struct ec_config {
	enum ec_workload workload;
	int		 clients;
	double		 duration_s;
	long		 rounds;
	int		 streams;
	int		 categories;
	int		 readers;
	uint64_t	 timeout_ns;
	double		 rate;
	double		 final_timeout_s;
	uint64_t	 seed;
	const char	*url;
	const char	*token;
	const char	*prefix;
	const char	*json;
	const char	*history;
	const char	*foreign;	/* streams others write into the run's categories */
	unsigned	 inject;	/* bit set of enum ec_inject */
	int		 quiet;
	int		 retry;		/* send indeterminate writes again (same id) */
	struct evc_url	 srv;		/* parsed from url */
};

/* --inject: corrupt the history or the final read to prove the checks bite. */
enum ec_inject {
	EC_INJ_PHANTOM,	/* forget that a stored write was invoked (N4) */
	EC_INJ_LOST,	/* drop a stored ok write from the final read (N1) */
	EC_INJ_DUP,	/* store a copy of a message at the end of its stream (N3) */
	EC_INJ_GAP,	/* drop a message from the middle of a stream (N2) */
	EC_INJ_FAIL,	/* record a stored ok write as a 409 (N5) */
	EC_INJ_INDET,	/* record a stored write as indeterminate, stored twice (N6) */
	EC_INJ_MOVE,	/* record an ok write's expectedVersion one too low (N7) */
	EC_INJ_ORDER,	/* swap two messages of a category read (N8) */
	EC_INJ_STALE,	/* add a read that saw an empty stream after writes (N9) */
	EC_INJ_SKIP,	/* drop a message from a follower's log (skip) */
	EC_INJ_NKINDS
};
extern const char *const ec_inject_names[EC_INJ_NKINDS];

/* Invariant counters. */
enum ec_inv { EC_N1, EC_N2, EC_N3, EC_N4, EC_N5, EC_N6, EC_N7, EC_N8, EC_N9, EC_SKIP, EC_NINV };
extern const char *const ec_inv_names[EC_NINV];

/* A category follower: every global position it saw, in order. */
struct ec_follower {
	int		 category;
	int64_t		 cursor;	/* next global position it asks for */
	int64_t		*seen;
	size_t		 nseen, capseen;
	uint64_t	 polls;
	uint64_t	 order_errors;	/* a poll returned positions not ascending */
	char		 order_example[160];
};

/* The run's state shared between the files. */
struct ec_state {
	struct ec_config cfg;
	uint64_t	 nonce;		/* 34 random bits in every id */
	char		 (*stream_name)[96];
	char		 (*cat_name)[80];
	int		 nstreams, ncats;
	int		*stream_cat;	/* stream index -> category index */

	struct ec_op	*ops;
	size_t		 nops, capops;

	struct ec_follower *followers;
	int		 nfollowers;

	/* load-phase counters */
	uint64_t	 reconnects;
	uint64_t	 connect_fails;
	uint64_t	 errors_5xx;
	uint64_t	 conflicts;
	uint64_t	 retries;	/* --retry: writes sent again */
	uint64_t	 rounds, rounds_bad;
	uint64_t	 follower_polls;
	uint64_t	 final_rereads;	/* final reads repeated because streams and categories disagreed */
	double		 t0_unix;	/* wall clock of the run's start (history times are from here) */
	uint64_t	 t_load_ns;	/* length of the load phase */
	uint64_t	 t_final_ns;	/* length of the final read */
	char		 round_example[200];

	/* error codes seen (index 0 = none) */
	int		 ncodes;
	char		 codes[32][48];

	/* results */
	uint64_t	 viol[EC_NINV];
#define EC_EXAMPLES	20
	/* the first EC_EXAMPLES examples of each invariant; 20 in all are shown */
	char		*examples[EC_NINV][EC_EXAMPLES];
	int		 nexamples[EC_NINV];
};

extern struct ec_state ec;

/* evcheck.c */
extern volatile sig_atomic_t ec_got_signal;	/* SIGTERM/SIGINT outside the event loop */
uint64_t	ec_now_ns(void);
void		ec_uuid_text(const uint8_t id[16], char out[37]);
uint32_t	ec_id_op(const uint8_t id[16]);		/* EC_NONE if not ours */
int		ec_parse_uuid(const char *s, uint8_t id[16]);
int		ec_stream_index(const char *name);	/* -1 if not ours */
void		ec_expected_data(uint32_t op, char *buf, size_t len);
const char	*ec_data_string(void);
void		ec_type_name(uint32_t op, char *buf, size_t len);
void		ec_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int		ec_code_index(const char *code, size_t len);

/* evcheck_run.c: the load phase; returns 0, or -1 if it could not start. */
int		ec_run(void);

/* evcheck_final.c: the final read; returns 0, or -1 when --final-timeout passed. */
struct ec_msg {
	int64_t		 pos;
	int64_t		 gpos;
	uint32_t	 op;		/* EC_NONE: not one of ours */
	int		 stream;	/* category view: stream index, -1 not ours */
	uint8_t		 content_ok;	/* type, data and metadata as written */
	uint8_t		 foreign;	/* category view: a --foreign stream's message */
	char		 id[37];
};
struct ec_view {
	struct ec_msg	*m;
	size_t		 n, cap;
};
extern struct ec_view *ec_stream_view;	/* [nstreams] */
extern struct ec_view *ec_cat_view;	/* [ncats] */
int		ec_final_read(void);
struct ec_msg	*ec_view_add(struct ec_view *v);	/* a new zeroed message at the end */

/* evcheck_check.c */
void		ec_apply_inject(void);
void		ec_check(void);
void		ec_violation(enum ec_inv inv, const char *fmt, ...)
		    __attribute__((format(printf, 2, 3)));

#endif
