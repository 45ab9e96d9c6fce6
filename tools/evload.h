/*
 * evload.h - shared declarations of evload, the load generator.
 *
 * evload is split by job:
 *   evload.c       command line, start-up, the run's clock, results
 *                  (console block and load-test-results.json)
 *   evload_conn.c  the connections: non-blocking sockets on one libevent
 *                  loop, request bytes, the HTTP/1.1 response parser,
 *                  closed- and open-loop scheduling, timeouts, errors
 *   evload_hist.c  the log-linear latency histogram
 * Shared with evcheck: tools/httpresp.c (response parser), tools/evconn.c
 * (the socket side of a connection, the URL), tools/evtool.c (options,
 * JSON strings).
 *
 * Everything runs in one thread; no locking anywhere.  Prefix: evl_.
 */
#ifndef EVLOAD_H
#define EVLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "evconn.h"

/* What one request does. */
enum evl_kind {
	EVL_WRITE,	/* stream.write */
	EVL_READ,	/* stream.get */
	EVL_GET,	/* GET of a plain path (--mix version|health) */
	EVL_NKINDS
};

/* The request mix (--mix). */
enum evl_mix {
	EVL_MIX_RW,		/* writes, a read after every Nth write (original) */
	EVL_MIX_WRITE,		/* writes only */
	EVL_MIX_READ,		/* reads only */
	EVL_MIX_VERSION,	/* GET /version (no database work) */
	EVL_MIX_HEALTH		/* GET /health */
};

/* Transport-level failure kinds (HTTP statuses and error codes are counted apart). */
enum evl_fail {
	EVL_F_CONNECT,	/* connect() failed or did not finish in time */
	EVL_F_TIMEOUT,	/* no complete response within --timeout */
	EVL_F_CLOSED,	/* connection closed or reset with the request unanswered */
	EVL_F_PROTOCOL,	/* response we cannot parse, or one nobody asked for */
	EVL_F_NKINDS
};

/*
 * Log-linear histogram of latencies in microseconds (HdrHistogram-like):
 * values below 2048 us have their own 1 us bucket; above that each power
 * of two is cut into 1024 buckets (relative error below 0.1 %), up to
 * 2^27 us (134 s); larger values land in the last bucket.  Count, sum,
 * min and max are kept exactly, in nanoseconds.
 */
#define EVL_HIST_SUB_BITS	10
#define EVL_HIST_SUB		(1u << EVL_HIST_SUB_BITS)	/* 1024 */
#define EVL_HIST_EXACT		(2u * EVL_HIST_SUB)		/* 2048 */
#define EVL_HIST_TOP_MSB	26
#define EVL_HIST_BUCKETS \
	(EVL_HIST_EXACT + (EVL_HIST_TOP_MSB - EVL_HIST_SUB_BITS) * EVL_HIST_SUB)

struct evl_hist {
	uint64_t	count;
	uint64_t	sum_ns;
	uint64_t	min_ns;
	uint64_t	max_ns;
	uint64_t	bucket[EVL_HIST_BUCKETS];
};

void		evl_hist_reset(struct evl_hist *h);
void		evl_hist_record(struct evl_hist *h, uint64_t ns);
void		evl_hist_merge(struct evl_hist *dst, const struct evl_hist *src);
uint64_t	evl_hist_percentile_ns(const struct evl_hist *h, double pct);
double		evl_hist_mean_ns(const struct evl_hist *h);

/* Settings, filled from the command line by evload.c. */
struct evl_config {
	uint64_t	 duration_ns;	/* --duration */
	uint64_t	 timeout_ns;	/* --timeout, per request and per connect */
	int		 workers;	/* --workers: connections */
	int		 pipeline;	/* --pipeline: requests in flight per connection */
	long		 streams;	/* --streams */
	long		 read_every;	/* --read-every, 0 = never */
	long		 batch;		/* --batch: stream.get batchSize */
	long		 payload_size;	/* --payload-size: length of data.payload */
	double		 rate;		/* --rate, requests/s; 0 = closed loop */
	double		 max_error_pct;	/* --max-error-rate, percent */
	enum evl_mix	 mix;
	int		 spread;	/* --spread: workers start on different streams */
	int		 json;		/* --json */
	int		 quiet;		/* --quiet */
	const char	*url;		/* as given */
	const char	*token;
	const char	*stream_prefix;	/* "test-stream-" */
	const char	*profile_dir;
	const char	*output;
	struct evc_url	 srv;		/* parsed from url */
};

/* Counters of the run, owned by evload_conn.c, read by evload.c. */
struct evl_stats {
	uint64_t	ok[EVL_NKINDS];		/* status 200 */
	uint64_t	err[EVL_NKINDS];	/* failed, by request kind */
	uint64_t	fail[EVL_F_NKINDS];	/* failed, by transport kind */
	uint64_t	status[600];		/* failed with an HTTP status */
	uint64_t	sent;			/* requests put on the wire */
	uint64_t	unsent;			/* open loop: scheduled, never sent */
	uint64_t	scheduled;		/* open loop: due by the end */
	uint64_t	connects;		/* successful connects */
	struct evl_hist	hist[EVL_NKINDS];	/* latency of successful requests */
	struct evl_hist	interval;		/* all kinds, since the last progress line */
};

/* Error codes from JSON error bodies ({"error":{"code":"..."}}). */
#define EVL_MAX_CODES	32
#define EVL_CODE_LEN	48
struct evl_codes {
	int		n;
	char		name[EVL_MAX_CODES][EVL_CODE_LEN];
	uint64_t	count[EVL_MAX_CODES];
	uint64_t	other;		/* codes beyond the table */
};

extern struct evl_stats evl_stats;
extern struct evl_codes evl_codes;

uint64_t	evl_now_ns(void);

/* evload_conn.c */
int		evl_run_init(struct event_base *base, const struct evl_config *cfg,
		    char *err, size_t errlen);
void		evl_run_start(uint64_t t0);
void		evl_run_stop(uint64_t now);
int		evl_run_inflight(void);
void		evl_run_free(void);
size_t		evl_write_body_len(long stream);
size_t		evl_read_body_len(long stream);

/* evload.c: called by evload_conn.c when the last request has drained. */
void		evl_drained(void);

#endif
