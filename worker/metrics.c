/*
 * metrics.c - the worker's heartbeat and GET /metrics.
 *
 * Heartbeat: once a second (worker.c's timer) the worker stamps its slot
 * with the time, how late the timer fired (a blocked event loop shows up
 * as lag) and the connection scoreboard, counted by walking its
 * connections, so the request path pays nothing for it.
 *
 * /metrics: any worker answers for the whole instance.  It copies the
 * segment like evdump does (shm/reader.c: no lock, bounded retries) and
 * writes the Prometheus text exposition format 0.0.4:
 *   - every counter and gauge of counters.def as eventodb_<name>[_total],
 *     summed over the workers (counters include retired workers, so they
 *     never go backwards when a worker is replaced), one series per known
 *     label;
 *   - histograms in seconds with cumulative _bucket{le}, _sum, _count;
 *     `le` bounds sit on the segment's bucket edges (powers of two of
 *     nanoseconds by default; ?buckets=2|4|8|16 per power of two for
 *     finer ones), so the counts are exact, not re-binned;
 *   - a few per-worker series with worker and generation labels.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "http.h"
#include "log.h"
#include "metrics.h"
#include "reader.h"
#include "shm.h"

#define PROM_CTYPE	"text/plain; version=0.0.4; charset=utf-8"

static uint64_t last_beat;

void
mtr_attach(int slot)
{
	shm_worker_attach(slot);
	shm_panic_install();
	shm_worker_state(EVSHM_W_STARTING);
}

void
mtr_beat(uint64_t interval_ns)
{
	struct http_scoreboard sb;
	uint64_t now = http_now_ns(), lag = 0;

	if (last_beat && now - last_beat > interval_ns)
		lag = now - last_beat - interval_ns;
	last_beat = now;
	http_scoreboard(&sb);
	SHM_SET(connections_reading, sb.reading);
	SHM_SET(connections_handling, sb.handling);
	SHM_SET(connections_writing, sb.writing);
	SHM_SET(connections_idle, sb.idle);
	shm_worker_heartbeat(lag, sb.oldest_ns);
}

/* ---- exposition -------------------------------------------------------------- */

static void
help_type(struct evbuffer *b, const char *name, const char *help, const char *type)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void
label_value(struct evbuffer *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			evbuffer_add_printf(b, "\\%c", *s);
		else if (*s == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, s, 1);
	}
}

static void
counters(struct evbuffer *b, const struct evshm_stats *t)
{
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		const struct shm_labelset *d = &shm_dims[m->dim];
		char name[96], lb[24];

		snprintf(name, sizeof(name), "eventodb_%s%s", m->name,
		    m->kind == SHM_COUNTER ? "_total" : "");
		help_type(b, name, m->desc, m->kind == SHM_COUNTER ? "counter" : "gauge");
		for (unsigned l = 0; l < d->max; l++) {
			uint64_t v = t->c_raw[m->word + l];
			if (l >= d->n && v == 0)
				continue;
			evbuffer_add_printf(b, "%s", name);
			if (m->dim != SHM_DIM_none) {
				evbuffer_add_printf(b, "{%s=\"", d->prom);
				label_value(b, shm_label(m->dim, l, lb, sizeof(lb)));
				evbuffer_add(b, "\"}", 2);
			}
			if (m->kind == SHM_GAUGE)
				evbuffer_add_printf(b, " %lld\n", (long long)(int64_t)v);
			else
				evbuffer_add_printf(b, " %llu\n", (unsigned long long)v);
		}
	}
}

/* One histogram series; `labels` is "" or `name="value"`. */
static void
histogram(struct evbuffer *b, const char *name, const char *labels,
    const struct evshm_hist *h, unsigned step)
{
	uint64_t cum = 0;
	const char *sep = labels[0] ? "," : "";

	for (unsigned i = 0; i < EVSHM_HIST_OVERFLOW; i++) {
		cum += h->bucket[i];
		/* Edges: every `step` sub-buckets from 1.024 us (the linear part is one bucket). */
		if (i < EVSHM_HIST_SUB - 1)
			continue;
		if (i >= EVSHM_HIST_SUB && (i + 1 - EVSHM_HIST_SUB) % step != 0)
			continue;
		evbuffer_add_printf(b, "%s_bucket{%s%sle=\"%.12g\"} %llu\n", name, labels, sep,
		    (double)shm_hist_upper_ns(i) / 1e9, (unsigned long long)cum);
	}
	cum += h->bucket[EVSHM_HIST_OVERFLOW];
	evbuffer_add_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
	    (unsigned long long)cum);
	evbuffer_add_printf(b, "%s_sum%s%s%s %.9f\n", name, labels[0] ? "{" : "", labels,
	    labels[0] ? "}" : "", (double)h->sum_ns / 1e9);
	/* _count is the +Inf bucket: the copy is consistent (change counter). */
	evbuffer_add_printf(b, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels,
	    labels[0] ? "}" : "", (unsigned long long)cum);
}

static void
histograms(struct evbuffer *b, const struct evshm_stats *t, unsigned step)
{
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		const struct shm_labelset *d = &shm_dims[m->dim];
		char name[96], labels[96], lb[24];

		snprintf(name, sizeof(name), "eventodb_%s_%s", m->name, m->unit);
		help_type(b, name, m->desc, "histogram");
		for (unsigned l = 0; l < d->max; l++) {
			const struct evshm_hist *h = &t->h_raw[m->first + l];
			if (m->dim != SHM_DIM_none && h->count == 0)
				continue;
			if (m->dim == SHM_DIM_none)
				labels[0] = '\0';
			else
				snprintf(labels, sizeof(labels), "%s=\"%s\"", d->prom,
				    shm_label(m->dim, l, lb, sizeof(lb)));
			histogram(b, name, labels, h, step);
		}
	}
}

static void
per_worker(struct evbuffer *b, const struct shm_snap *s)
{
	uint64_t now_mono = shm_now_ns(1);

	help_type(b, "eventodb_worker_info", "a worker process: its slot, pid and state", "gauge");
	for (unsigned i = 0; i < s->nused; i++) {
		const struct shm_snap_slot *w = &s->slots[i];
		evbuffer_add_printf(b, "eventodb_worker_info{worker=\"%u\",generation=\"%u\",slot=\"%u\","
		    "pid=\"%d\",state=\"%s\"} 1\n", w->worker, w->gen, w->index, (int)w->pid,
		    shm_wstate_name(w->state));
	}
#define PER_WORKER(metric, help, type, expr) do { \
	help_type(b, metric, help, type); \
	for (unsigned i = 0; i < s->nused; i++) { \
		const struct shm_snap_slot *w = &s->slots[i]; \
		evbuffer_add_printf(b, metric "{worker=\"%u\",generation=\"%u\"} %.15g\n", \
		    w->worker, w->gen, (double)(expr)); \
	} \
} while (0)
	PER_WORKER("eventodb_worker_start_time_seconds",
	    "when the worker started serving, Unix time", "gauge", (double)s->slots[i].ready_unix_ns / 1e9);
	PER_WORKER("eventodb_worker_heartbeat_age_seconds",
	    "time since the worker's last heartbeat (it beats every second)", "gauge",
	    w->heartbeats ? (double)(now_mono - w->heartbeat_mono_ns) / 1e9 : -1);
	PER_WORKER("eventodb_worker_loop_lag_seconds",
	    "how late the worker's last heartbeat timer fired (a blocked event loop)", "gauge",
	    (double)w->loop_lag_ns / 1e9);
	PER_WORKER("eventodb_worker_oldest_request_seconds",
	    "age of the oldest request in a handler of the worker", "gauge",
	    (double)w->oldest_req_ns / 1e9);
	PER_WORKER("eventodb_worker_connections_open", "open client connections of the worker",
	    "gauge", (int64_t)w->stats.c.connections_open[0]);
	PER_WORKER("eventodb_worker_requests_total", "RPC requests answered by the worker",
	    "counter", ({
		uint64_t n = 0;
		for (unsigned m = 0; m < EVSHM_method_MAX; m++)
			n += w->stats.c.requests[m];
		n;
	}));
#undef PER_WORKER
}

static unsigned
bucket_step(struct http_req *req)
{
	char v[8];

	if (http_query_get(req, "buckets", v, sizeof(v)) > 0) {
		int n = atoi(v);
		if (n == 2 || n == 4 || n == 8 || n == 16)
			return EVSHM_HIST_SUB / (unsigned)n;
	}
	return EVSHM_HIST_SUB;
}

void
mtr_handle(struct http_req *req)
{
	struct evshm_hdr *h = shm_hdr();
	struct shm_reader r;
	struct shm_snap *s;
	struct evbuffer *b;

	if (!h) {
		http_respond_error(req, 503, "SERVICE_UNAVAILABLE", "No shared memory segment");
		return;
	}
	s = calloc(1, sizeof(*s));
	b = evbuffer_new();
	shm_reader_from_base(&r, h);
	if (!s || !b || shm_snap_take(&r, s) < 0) {
		free(s);
		if (b)
			evbuffer_free(b);
		http_respond_error(req, 503, "SERVICE_UNAVAILABLE", "Out of memory");
		return;
	}
	help_type(b, "eventodb_build_info", "eventodbd version", "gauge");
	evbuffer_add(b, "eventodb_build_info{version=\"", 29);
	label_value(b, s->version);
	evbuffer_add(b, "\"} 1\n", 5);
	help_type(b, "eventodb_master_start_time_seconds", "when the master started, Unix time",
	    "gauge");
	evbuffer_add_printf(b, "eventodb_master_start_time_seconds %.3f\n",
	    (double)s->master_start_unix_ns / 1e9);
	help_type(b, "eventodb_workers", "worker processes configured", "gauge");
	evbuffer_add_printf(b, "eventodb_workers %u\n", s->nworkers);
	help_type(b, "eventodb_workers_running", "worker processes alive", "gauge");
	{
		unsigned n = 0;
		for (unsigned i = 0; i < s->nused; i++)
			n += s->slots[i].pid && s->slots[i].alive;
		evbuffer_add_printf(b, "eventodb_workers_running %u\n", n);
	}
	help_type(b, "eventodb_workers_retired_total",
	    "workers that exited; their counters stay in the totals", "counter");
	evbuffer_add_printf(b, "eventodb_workers_retired_total %llu\n",
	    (unsigned long long)s->retired_workers);
	counters(b, &s->total);
	histograms(b, &s->total, bucket_step(req));
	per_worker(b, s);
	help_type(b, "eventodb_metrics_snapshot_seconds",
	    "time this scrape took to copy the shared-memory segment", "gauge");
	evbuffer_add_printf(b, "eventodb_metrics_snapshot_seconds %.6f\n", (double)s->took_ns / 1e9);
	if (s->torn)
		log_warn("/metrics: %u parts of the shared memory segment kept changing", s->torn);
	shm_snap_free(s);
	free(s);
	http_respond_type(req, 200, PROM_CTYPE, b);
	evbuffer_free(b);
}
