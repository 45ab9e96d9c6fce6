/*
 * evdump.c - read an eventodbd instance's shared-memory segment.
 *
 * evdump attaches read-only (O_RDONLY, PROT_READ) to the segment of the
 * instance on a port (or of a given name), takes no lock, and prints
 * what the workers publish: counters in total and per worker, latency
 * percentiles, the scoreboard, rates over an interval; it writes
 * snapshots to files and compares two of them.  Everything also comes
 * as JSON (--json).  See evdump(1); exit codes in evdump.h.
 *
 * It never writes to the segment, so nothing it does can stall a worker:
 * a torn copy is simply retried (shm/reader.c).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "evdump.h"
#include "meta.h"

static struct {
	const char	*name;		/* segment name, or NULL */
	int		 port;
	int		 json;
	int		 all;
	int		 stale;
	double		 wait;
	double		 interval;
	const char	*output;
} opt = { NULL, 0, 0, 0, 0, 2.0, 1.0, NULL };

static const char *progname = "evdump";

static void die(int code, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

static void
die(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: evdump [options] [command]\n"
	    "\n"
	    "commands:\n"
	    "  counters           counters, in total and per worker (the default)\n"
	    "  latency            latency percentiles of every histogram in use\n"
	    "  workers            the scoreboard: state, heartbeat, connections per worker\n"
	    "  status             the instance: master, workers, segment\n"
	    "  rates              counters per second and latency over --interval\n"
	    "  snapshot           write everything as JSON to --output (or stdout)\n"
	    "  diff A B           rates between two snapshot files\n"
	    "  layout             sizes and offsets of the segment's structures\n"
	    "  man-counters       the COUNTERS section of evdump(1), in mdoc\n"
	    "  profile cpu|heap|allocs|workers [--seconds N] [--worker N] [-o FILE] [--raw]\n"
	    "                     pprof profiles (gzip) from the sampling profiler;\n"
	    "                     `evdump profile --help` for details\n"
	    "\n"
	    "options:\n"
	    "  -p, --port PORT    instance on PORT: segment /eventodbd.PORT (default\n"
	    "                     $EVENTODB_PORT, else 8080)\n"
	    "  -n, --name NAME    segment NAME, as eventodbd --shm-name ($EVENTODB_SHM_NAME)\n"
	    "  -j, --json         JSON output\n"
	    "  -a, --all          also zero counters, and latency per worker\n"
	    "  -i, --interval S   seconds between the two snapshots of `rates` (default 1)\n"
	    "  -o, --output FILE  file for `snapshot`\n"
	    "  -w, --wait S       wait up to S seconds for a segment that is not ready (default 2)\n"
	    "      --stale        read a segment whose master is gone (post mortem)\n"
	    "      --layout       same as the layout command\n"
	    "      --man-counters same as the man-counters command\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         print this help and exit\n"
	    "\n"
	    "exit status: 0 ok, 1 error, 2 usage, 3 no instance (or its master is gone),\n"
	    "4 segment not ready, 5 another layout version or not an eventodbd segment\n");
}

/* ---- formatting ------------------------------------------------------------- */

void
evd_fmt_ns(double ns, char *buf, size_t len)
{
	if (ns < 1e3)
		snprintf(buf, len, "%.0fns", ns);
	else if (ns < 1e6)
		snprintf(buf, len, "%.1fus", ns / 1e3);
	else if (ns < 1e9)
		snprintf(buf, len, "%.2fms", ns / 1e6);
	else
		snprintf(buf, len, "%.3fs", ns / 1e9);
}

static void
fmt_age(double s, char *buf, size_t len)
{
	long t = (long)s;

	if (s < 0)
		snprintf(buf, len, "-");
	else if (s < 10)
		snprintf(buf, len, "%.1fs", s);
	else if (t < 60)
		snprintf(buf, len, "%lds", t);
	else if (t < 3600)
		snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, len, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
	else
		snprintf(buf, len, "%ldd%02ldh", t / 86400, (t % 86400) / 3600);
}

static void
fmt_rate(double v, char *buf, size_t len)
{
	if (v == 0)
		snprintf(buf, len, "0");
	else if (fabs(v) >= 100)
		snprintf(buf, len, "%.0f", v);
	else if (fabs(v) >= 1)
		snprintf(buf, len, "%.1f", v);
	else
		snprintf(buf, len, "%.3f", v);
}

double
evd_pct(const struct evshm_hist *h, double q)
{
	return shm_hist_quantile_ns(h, q);
}

/* ---- a text table ------------------------------------------------------------- */

struct tbl {
	char	**cell;
	int	  ncols, nrows, cap;
};

static void
tbl_init(struct tbl *t, int ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
}

/* Append a row of ncols strings (copied). */
static void
tbl_row(struct tbl *t, char **cols)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->cell = realloc(t->cell, (size_t)t->cap * (size_t)t->ncols * sizeof(char *));
		if (!t->cell)
			die(EVD_EXIT_ERROR, "out of memory");
	}
	for (int c = 0; c < t->ncols; c++) {
		t->cell[t->nrows * t->ncols + c] = strdup(cols[c] ? cols[c] : "");
		if (!t->cell[t->nrows * t->ncols + c])
			die(EVD_EXIT_ERROR, "out of memory");
	}
	t->nrows++;
}

/* Print: column 0 left-aligned, the others right-aligned (nleft: left-aligned columns). */
static void
tbl_print(struct tbl *t, int nleft)
{
	int *w = calloc((size_t)t->ncols, sizeof(int));

	if (!w)
		die(EVD_EXIT_ERROR, "out of memory");
	for (int r = 0; r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++) {
			int n = (int)strlen(t->cell[r * t->ncols + c]);
			if (n > w[c])
				w[c] = n;
		}
	for (int r = 0; r < t->nrows; r++) {
		for (int c = 0; c < t->ncols; c++) {
			const char *s = t->cell[r * t->ncols + c];
			if (c < nleft && c + 1 < t->ncols)
				printf("%-*s  ", w[c], s);
			else if (c < nleft)
				printf("%s", s);
			else
				printf("%*s%s", w[c], s, c + 1 < t->ncols ? "  " : "");
		}
		putchar('\n');
	}
	for (int i = 0; i < t->nrows * t->ncols; i++)
		free(t->cell[i]);
	free(t->cell);
	free(w);
}

/* ---- attaching ---------------------------------------------------------------- */

static void
segment_name(char *buf, size_t len)
{
	const char *env;

	if (opt.name) {
		snprintf(buf, len, "%s%s", opt.name[0] == '/' ? "" : "/", opt.name);
		return;
	}
	if (opt.port) {
		shm_default_name(opt.port, buf, len);
		return;
	}
	if ((env = getenv("EVENTODB_SHM_NAME")) && env[0]) {
		snprintf(buf, len, "%s%s", env[0] == '/' ? "" : "/", env);
		return;
	}
	if ((env = getenv("EVENTODB_PORT")) && env[0] && atoi(env) > 0) {
		shm_default_name(atoi(env), buf, len);
		return;
	}
	shm_default_name(8080, buf, len);
}

static void
attach(struct shm_reader *r)
{
	char name[300], err[1024];

	segment_name(name, sizeof(name));
	switch (shm_reader_open(r, name, opt.wait, err, sizeof(err))) {
	case SHM_ATTACHED:
		return;
	case SHM_GONE:
		die(EVD_EXIT_GONE, "%s", err);
	case SHM_NOT_READY:
		die(EVD_EXIT_NOT_READY, "%s", err);
	case SHM_BAD_VERSION:
	case SHM_FOREIGN:
		die(EVD_EXIT_VERSION, "%s", err);
	case SHM_ERROR:
	default:
		die(EVD_EXIT_ERROR, "%s", err);
	}
}

static struct shm_snap *
snapshot(const struct shm_reader *r)
{
	struct shm_snap *s = calloc(1, sizeof(*s));

	if (!s || shm_snap_take(r, s) < 0)
		die(EVD_EXIT_ERROR, "out of memory");
	if (s->torn)
		fprintf(stderr, "%s: warning: %u parts of the segment kept changing and were "
		    "copied as they were\n", progname, s->torn);
	if (!s->master_alive && !opt.stale)
		die(EVD_EXIT_GONE, "the instance of segment \"%s\" is gone: master pid %d is not "
		    "running (the segment was left behind; --stale reads it anyway)", s->name,
		    (int)s->master_pid);
	return s;
}

static void
free_snap(struct shm_snap *s)
{
	shm_snap_free(s);
	free(s);
}

/* ---- the instance line --------------------------------------------------------- */

static int
alive_workers(const struct shm_snap *s)
{
	int n = 0;
	for (unsigned i = 0; i < s->nused; i++)
		if (s->slots[i].alive && s->slots[i].pid)
			n++;
	return n;
}

static void
print_instance(const struct shm_snap *s)
{
	char up[32];

	fmt_age((double)(s->taken_unix_ns - s->master_start_unix_ns) / 1e9, up, sizeof(up));
	printf("eventodbd %s on port %u, segment %s: master pid %d %s (%s), up %s, generation %u\n",
	    s->version, s->port, s->name, (int)s->master_pid,
	    s->master_alive ? "running" : "NOT RUNNING", s->master_state, up, s->generation);
	printf("workers: %u configured, %d running, %llu retired%s\n\n", s->nworkers,
	    alive_workers(s), (unsigned long long)s->retired_workers,
	    (s->flags & EVSHM_F_PUBLISHING) ? "" : "; counters not published (--publish-counters false)");
}

/* Column header of a slot: w<worker>, with the generation when a worker number repeats. */
static void
slot_header(const struct shm_snap *s, unsigned i, char *buf, size_t len)
{
	const struct shm_snap_slot *sl = &s->slots[i];
	int dup = 0;

	for (unsigned j = 0; j < s->nused; j++)
		if (j != i && s->slots[j].worker == sl->worker)
			dup = 1;
	if (dup)
		snprintf(buf, len, "w%ug%u", sl->worker, sl->gen);
	else
		snprintf(buf, len, "w%u", sl->worker);
}

/* Label i of a counter or histogram: "name" or "name{label}". */
static void
row_name(const char *name, enum shm_dim d, unsigned i, char *buf, size_t len)
{
	char lb[24];

	if (d == SHM_DIM_none)
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s{%s}", name, shm_label(d, i, lb, sizeof(lb)));
}

/* ---- views ----------------------------------------------------------------------- */

static void
view_counters(const struct shm_snap *s)
{
	struct tbl t;
	int ncols = 3 + (int)s->nused;
	char **row = calloc((size_t)ncols, sizeof(char *));
	char (*buf)[32] = calloc((size_t)ncols, sizeof(*buf));

	if (!row || !buf)
		die(EVD_EXIT_ERROR, "out of memory");
	print_instance(s);
	tbl_init(&t, ncols);
	for (int c = 0; c < ncols; c++)
		row[c] = buf[c];
	snprintf(buf[0], 32, "COUNTER");
	snprintf(buf[1], 32, "UNIT");
	snprintf(buf[2], 32, "TOTAL");
	for (unsigned i = 0; i < s->nused; i++)
		slot_header(s, i, buf[3 + i], 32);
	tbl_row(&t, row);

	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		unsigned n = opt.all ? shm_dims[m->dim].max : shm_dims[m->dim].n;
		for (unsigned l = 0; l < n; l++) {
			uint64_t v = s->total.c_raw[m->word + l];
			char name[96];
			if (v == 0 && !opt.all)
				continue;
			if (v == 0 && l >= shm_dims[m->dim].n)
				continue;
			row_name(m->name, m->dim, l, name, sizeof(name));
			row[0] = name;
			snprintf(buf[1], 32, "%s", m->kind == SHM_GAUGE ? "gauge" : m->unit);
			if (m->kind == SHM_GAUGE)
				snprintf(buf[2], 32, "%lld", (long long)(int64_t)v);
			else
				snprintf(buf[2], 32, "%llu", (unsigned long long)v);
			for (unsigned i = 0; i < s->nused; i++) {
				uint64_t w = s->slots[i].stats.c_raw[m->word + l];
				if (m->kind == SHM_GAUGE)
					snprintf(buf[3 + i], 32, "%lld", (long long)(int64_t)w);
				else
					snprintf(buf[3 + i], 32, "%llu", (unsigned long long)w);
			}
			tbl_row(&t, row);
			row[0] = buf[0];
		}
	}
	if (t.nrows == 1)
		printf("(every counter is zero; -a shows them all)\n");
	else
		tbl_print(&t, 2);
	if (s->retired_workers)
		printf("\nTOTAL includes the counters of %llu retired workers.\n",
		    (unsigned long long)s->retired_workers);
	free(row);
	free(buf);
}

/* Latency rows of one set of stats (totals, or a rates delta). */
static void
latency_rows(struct tbl *t, const struct evshm_stats *st, const char *who)
{
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++) {
			const struct evshm_hist *h = &st->h_raw[m->first + l];
			char name[96], c[8][24], *row[9];
			const double qs[] = { 0.5, 0.9, 0.99, 0.999 };
			if (h->count == 0 && (!opt.all || l >= shm_dims[m->dim].n))
				continue;
			row_name(m->name, m->dim, l, name, sizeof(name));
			row[0] = name;
			snprintf(c[0], 24, "%s", who);
			row[1] = c[0];
			snprintf(c[1], 24, "%llu", (unsigned long long)h->count);
			row[2] = c[1];
			if (h->count)
				evd_fmt_ns((double)h->sum_ns / (double)h->count, c[2], 24);
			else
				snprintf(c[2], 24, "-");
			row[3] = c[2];
			for (int q = 0; q < 4; q++) {
				if (h->count)
					evd_fmt_ns(evd_pct(h, qs[q]), c[3 + q], 24);
				else
					snprintf(c[3 + q], 24, "-");
				row[4 + q] = c[3 + q];
			}
			if (h->count)
				evd_fmt_ns((double)shm_hist_max_ns(h), c[7], 24);
			else
				snprintf(c[7], 24, "-");
			row[8] = c[7];
			tbl_row(t, row);
		}
	}
}

static void
latency_table(const struct evshm_stats *total, const struct shm_snap *per_worker)
{
	struct tbl t;
	char *hdr[9] = { "HISTOGRAM", "WHO", "COUNT", "MEAN", "P50", "P90", "P99", "P99.9", "MAX<=" };

	tbl_init(&t, 9);
	tbl_row(&t, hdr);
	latency_rows(&t, total, "total");
	if (per_worker)
		for (unsigned i = 0; i < per_worker->nused; i++) {
			char who[32];
			slot_header(per_worker, i, who, sizeof(who));
			latency_rows(&t, &per_worker->slots[i].stats, who);
		}
	if (t.nrows == 1)
		printf("(no observations)\n");
	else
		tbl_print(&t, 2);
}

static void
view_latency(const struct shm_snap *s)
{
	print_instance(s);
	latency_table(&s->total, opt.all ? s : NULL);
	printf("\nPercentiles are interpolated in buckets of at most 1/16 of their value "
	    "(about 3 %%); MAX<= is the top of the highest bucket in use.\n");
}

static void
view_workers(const struct shm_snap *s)
{
	struct tbl t;
	char *hdr[] = { "SLOT", "WORKER", "PID", "GEN", "STATE", "UP", "BEAT", "LAG", "CONNS",
		"READ", "HANDLE", "DB", "WRITE", "IDLE", "SSE", "OLDEST", "REQUESTS" };
	const int ncols = (int)(sizeof(hdr) / sizeof(hdr[0]));
	uint64_t now_mono = shm_now_ns(1);

	print_instance(s);
	tbl_init(&t, ncols);
	tbl_row(&t, hdr);
	for (unsigned i = 0; i < s->nused; i++) {
		const struct shm_snap_slot *sl = &s->slots[i];
		const struct evshm_counters *c = &sl->stats.c;
		char v[17][32], *row[17];
		uint64_t reqs = 0;

		for (int k = 0; k < ncols; k++)
			row[k] = v[k];
		for (unsigned e = 0; e < EVSHM_endpoint_MAX; e++)
			reqs += c->http_requests[e];
		snprintf(v[0], 32, "%u", sl->index);
		snprintf(v[1], 32, "%u", sl->worker);
		snprintf(v[2], 32, "%d", (int)sl->pid);
		snprintf(v[3], 32, "%u", sl->gen);
		snprintf(v[4], 32, "%s%s", shm_wstate_name(sl->state),
		    sl->pid && !sl->alive ? "(dead)" : "");
		if (sl->ready_unix_ns)
			fmt_age((double)(s->taken_unix_ns - sl->ready_unix_ns) / 1e9, v[5], 32);
		else
			snprintf(v[5], 32, "-");
		if (sl->heartbeats)
			fmt_age((double)(now_mono - sl->heartbeat_mono_ns) / 1e9, v[6], 32);
		else
			snprintf(v[6], 32, "-");
		evd_fmt_ns((double)sl->loop_lag_ns, v[7], 32);
		snprintf(v[8], 32, "%lld", (long long)(int64_t)c->connections_open[0]);
		snprintf(v[9], 32, "%lld", (long long)(int64_t)c->connections_reading[0]);
		snprintf(v[10], 32, "%lld", (long long)(int64_t)c->connections_handling[0]);
		snprintf(v[11], 32, "%lld",
		    (long long)((int64_t)c->db_pool_busy[0] + (int64_t)c->db_queue[0]));
		snprintf(v[12], 32, "%lld", (long long)(int64_t)c->connections_writing[0]);
		snprintf(v[13], 32, "%lld", (long long)(int64_t)c->connections_idle[0]);
		snprintf(v[14], 32, "%lld", (long long)(int64_t)c->sse_subscribers[0]);
		if (sl->oldest_req_ns)
			evd_fmt_ns((double)sl->oldest_req_ns, v[15], 32);
		else
			snprintf(v[15], 32, "-");
		snprintf(v[16], 32, "%llu", (unsigned long long)reqs);
		tbl_row(&t, row);
	}
	if (t.nrows == 1)
		printf("(no worker slots in use)\n");
	else
		tbl_print(&t, 0);
	printf("\nBEAT: time since the worker's last heartbeat (every second); LAG: how late that\n"
	    "timer fired; DB: queries in flight or queued (waiting on the database); OLDEST:\n"
	    "age of the oldest request in a handler.  Connection states are refreshed every\n"
	    "heartbeat.\n");
}

static void
view_status(const struct shm_snap *s, const struct shm_reader *r)
{
	char up[32], when[64];
	time_t t = (time_t)(s->master_start_unix_ns / 1000000000u);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fmt_age((double)(s->taken_unix_ns - s->master_start_unix_ns) / 1e9, up, sizeof(up));
	printf("segment     %s, layout %u.%u, %.1f MiB, %u slots\n", s->name, s->major, s->minor,
	    (double)r->size / (1024.0 * 1024.0), s->nslots);
	printf("master      pid %d, %s, state %s, started %s (up %s)\n", (int)s->master_pid,
	    s->master_alive ? "running" : "NOT RUNNING", s->master_state, when, up);
	printf("eventodbd   %s on port %u\n", s->version, s->port);
	printf("workers     %u configured, %d running, %u slots in use, generation %u, "
	    "%llu retired\n", s->nworkers, alive_workers(s), s->nused, s->generation,
	    (unsigned long long)s->retired_workers);
	printf("publishing  %s\n", (s->flags & EVSHM_F_PUBLISHING) ? "on" : "off");
	printf("snapshot    %.3f ms (%.3f ms of CPU), %u retries\n", (double)s->took_ns / 1e6,
	    (double)s->took_cpu_ns / 1e6, s->retries);
}

/* ---- rates ------------------------------------------------------------------------- */

int
evd_rates_compute(struct evd_rates *r, const struct shm_snap *a, const struct shm_snap *b,
    char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	r->a = a;
	r->b = b;
	if (a->master_pid != b->master_pid || a->master_start_unix_ns != b->master_start_unix_ns) {
		snprintf(err, errlen, "the snapshots are of different instances (master pid %d "
		    "and %d)", (int)a->master_pid, (int)b->master_pid);
		return -1;
	}
	if (a->taken_mono_ns && b->taken_mono_ns > a->taken_mono_ns)
		r->dt = (double)(b->taken_mono_ns - a->taken_mono_ns) / 1e9;
	else
		r->dt = ((double)b->taken_unix_ns - (double)a->taken_unix_ns) / 1e9;
	if (r->dt <= 0) {
		snprintf(err, errlen, "the second snapshot is not later than the first");
		return -1;
	}
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++) {
			unsigned w = m->word + l;
			if (m->kind == SHM_GAUGE)
				r->delta.c_raw[w] = b->total.c_raw[w];
			else
				r->delta.c_raw[w] = b->total.c_raw[w] >= a->total.c_raw[w] ?
				    b->total.c_raw[w] - a->total.c_raw[w] : 0;
		}
	}
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		for (unsigned l = 0; l < shm_dims[m->dim].max; l++) {
			const struct evshm_hist *ha = &a->total.h_raw[m->first + l];
			const struct evshm_hist *hb = &b->total.h_raw[m->first + l];
			struct evshm_hist *d = &r->delta.h_raw[m->first + l];
			if (hb->count <= ha->count)
				continue;
			d->count = hb->count - ha->count;
			d->sum_ns = hb->sum_ns - ha->sum_ns;
			for (unsigned i = 0; i < EVSHM_HIST_USED; i++)
				d->bucket[i] = hb->bucket[i] >= ha->bucket[i] ?
				    hb->bucket[i] - ha->bucket[i] : 0;
		}
	}
	r->prev = calloc(b->nused ? b->nused : 1, sizeof(int));
	if (!r->prev) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (unsigned i = 0; i < b->nused; i++) {
		r->prev[i] = -1;
		for (unsigned j = 0; j < a->nused; j++)
			if (a->slots[j].index == b->slots[i].index && a->slots[j].pid == b->slots[i].pid &&
			    a->slots[j].gen == b->slots[i].gen)
				r->prev[i] = (int)j;
	}
	return 0;
}

void
evd_rates_free(struct evd_rates *r)
{
	free(r->prev);
	r->prev = NULL;
}

static void
view_rates(const struct evd_rates *r)
{
	const struct shm_snap *a = r->a, *b = r->b;
	int ncols = 3 + (int)b->nused;
	char **row = calloc((size_t)ncols, sizeof(char *));
	char (*buf)[32] = calloc((size_t)ncols, sizeof(*buf));
	struct tbl t;

	if (!row || !buf)
		die(EVD_EXIT_ERROR, "out of memory");
	print_instance(b);
	printf("over %.3f s%s\n\n", r->dt,
	    b->retired_workers != a->retired_workers ? " (workers were replaced meanwhile)" : "");
	tbl_init(&t, ncols);
	for (int c = 0; c < ncols; c++)
		row[c] = buf[c];
	snprintf(buf[0], 32, "COUNTER");
	snprintf(buf[1], 32, "PER");
	snprintf(buf[2], 32, "TOTAL/S");
	for (unsigned i = 0; i < b->nused; i++) {
		slot_header(b, i, buf[3 + i], 28);
		if (r->prev[i] < 0)
			strcat(buf[3 + i], "*");
	}
	tbl_row(&t, row);
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		unsigned n = shm_dims[m->dim].max;
		for (unsigned l = 0; l < n; l++) {
			unsigned w = m->word + l;
			char name[96];
			uint64_t v = r->delta.c_raw[w];
			if (v == 0 && (!opt.all || l >= shm_dims[m->dim].n))
				continue;
			row_name(m->name, m->dim, l, name, sizeof(name));
			row[0] = name;
			if (m->kind == SHM_GAUGE) {
				snprintf(buf[1], 32, "now");
				snprintf(buf[2], 32, "%lld", (long long)(int64_t)v);
			} else {
				snprintf(buf[1], 32, "%s/s", m->unit);
				fmt_rate((double)v / r->dt, buf[2], 32);
			}
			for (unsigned i = 0; i < b->nused; i++) {
				uint64_t vb = b->slots[i].stats.c_raw[w];
				if (m->kind == SHM_GAUGE)
					snprintf(buf[3 + i], 32, "%lld", (long long)(int64_t)vb);
				else if (r->prev[i] < 0)
					snprintf(buf[3 + i], 32, "-");
				else {
					uint64_t va = a->slots[r->prev[i]].stats.c_raw[w];
					fmt_rate(vb >= va ? (double)(vb - va) / r->dt : 0, buf[3 + i], 32);
				}
			}
			tbl_row(&t, row);
			row[0] = buf[0];
		}
	}
	if (t.nrows == 1)
		printf("(nothing happened)\n");
	else
		tbl_print(&t, 2);
	printf("\n");
	latency_table(&r->delta, NULL);
	for (unsigned i = 0; i < b->nused; i++)
		if (r->prev[i] < 0) {
			printf("\n* started during the interval: no rate\n");
			break;
		}
	free(row);
	free(buf);
}

static void
sleep_s(double s)
{
	struct timespec ts;

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- layout and man page ------------------------------------------------------------ */

static void
view_layout(void)
{
	printf("layout %d.%d, marker \"%s\", page %u bytes\n", EVSHM_MAJOR, EVSHM_MINOR, EVSHM_MAGIC,
	    EVSHM_PAGE);
	printf("segment size: %llu + %llu per slot (2 slots per worker, and 2 more)\n",
	    (unsigned long long)EVSHM_SEG_SIZE(0), (unsigned long long)sizeof(struct evshm_slot));
	printf("histograms: %u buckets, %u per power of two from %u ns to 2^%u ns, %u slots of "
	    "%zu bytes\n", EVSHM_HIST_USED, EVSHM_HIST_SUB, 1u << EVSHM_HIST_MIN_SHIFT,
	    EVSHM_HIST_MAX_SHIFT, EVSHM_HIST_SLOTS, sizeof(struct evshm_hist));
	printf("counters: %u in %zu of %u bytes; label sets method %u/%u, endpoint %u/%u, "
	    "status %u/%u, errcode %u/%u\n\n", shm_ncounters, sizeof(struct evshm_counters),
	    EVSHM_COUNTERS_AREA, EVSHM_method_N, EVSHM_method_MAX, EVSHM_endpoint_N,
	    EVSHM_endpoint_MAX, EVSHM_status_N, EVSHM_status_MAX, EVSHM_errcode_N, EVSHM_errcode_MAX);
	for (unsigned i = 0; i < evd_nlayout; i++) {
		const struct evd_field *f = &evd_layout[i];
		if (!f->field)
			printf("struct %s: %zu bytes\n", f->strct, f->size);
		else
			printf("  %-22s offset %6zu  size %6zu\n", f->field, f->off, f->size);
	}
}

/*
 * mdoc text, filled into lines of at most 72 bytes: backslashes escaped,
 * a line starting with a dot or quote protected with \&.
 */
static void
man_text(const char *s)
{
	size_t col = 0;
	int first = 1;

	while (*s) {
		size_t n = strcspn(s, " ");

		if (col > 0 && col + 1 + n > 72) {
			putchar('\n');
			col = 0;
		} else if (col > 0) {
			putchar(' ');
			col++;
		}
		if (col == 0 && (*s == '.' || *s == '\''))
			fputs("\\&", stdout);
		if (first && n > 0) {
			/* A sentence in the page; a help text in /metrics. */
			putchar(toupper((unsigned char)*s));
			s++;
			n--;
			col++;
			first = 0;
		}
		for (size_t i = 0; i < n; i++) {
			if (s[i] == '\\')
				fputs("\\e", stdout);
			else
				putchar(s[i]);
		}
		col += n;
		s += n;
		while (*s == ' ')
			s++;
	}
}

static void
view_man_counters(void)
{
	printf(".\\\" Generated by `evdump --man-counters` from shm/counters.def and\n"
	    ".\\\" shm/labels.def; run `make man-counters` after changing them.\n");
	printf(".Ss Counters and gauges\n.Bl -tag -width Ds\n");
	for (unsigned k = 0; k < shm_ncounters; k++) {
		const struct shm_counter_meta *m = &shm_counters[k];
		printf(".It Sy %s Pq %s of %s%s%s\n", m->name,
		    m->kind == SHM_GAUGE ? "gauge" : "counter", m->unit,
		    m->dim != SHM_DIM_none ? ", by " : "",
		    m->dim != SHM_DIM_none ? shm_dims[m->dim].set : "");
		man_text(m->desc);
		printf(".\nPrometheus:\n.Ql eventodb_%s%s", m->name, m->kind == SHM_COUNTER ? "_total" : "");
		if (m->dim != SHM_DIM_none)
			printf(" Ns Brq %s", shm_dims[m->dim].prom);
		printf(" .\n");
	}
	printf(".El\n.Ss Histograms\n.Bl -tag -width Ds\n");
	for (unsigned k = 0; k < shm_nhists; k++) {
		const struct shm_hist_meta *m = &shm_hists[k];
		printf(".It Sy %s Pq histogram of %s%s%s\n", m->name, m->unit,
		    m->dim != SHM_DIM_none ? ", by " : "",
		    m->dim != SHM_DIM_none ? shm_dims[m->dim].set : "");
		man_text(m->desc);
		printf(".\nPrometheus:\n.Ql eventodb_%s_%s", m->name, m->unit);
		if (m->dim != SHM_DIM_none)
			printf(" Ns Brq %s", shm_dims[m->dim].prom);
		printf(" .\n");
	}
	printf(".El\n.Ss Label sets\n.Bl -tag -width Ds\n");
	for (int d = 1; d < SHM_NDIMS; d++) {
		printf(".It Sy %s\n(Prometheus label\n.Ql %s ) :\n", shm_dims[d].set, shm_dims[d].prom);
		for (unsigned i = 0; i < shm_dims[d].n; i++)
			printf(".Ql %s%s\n", shm_dims[d].labels[i], i + 1 < shm_dims[d].n ? " ," : " .");
	}
	printf(".El\n");
}

/* ---- main ------------------------------------------------------------------------------ */

static double
parse_secs(const char *s, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0 || v > 86400)
		die(EVD_EXIT_USAGE, "invalid %s \"%s\"", what, s);
	return v;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "port",	required_argument, NULL, 'p' },
		{ "name",	required_argument, NULL, 'n' },
		{ "shm-name",	required_argument, NULL, 'n' },
		{ "json",	no_argument,       NULL, 'j' },
		{ "all",	no_argument,       NULL, 'a' },
		{ "interval",	required_argument, NULL, 'i' },
		{ "output",	required_argument, NULL, 'o' },
		{ "wait",	required_argument, NULL, 'w' },
		{ "stale",	no_argument,       NULL, 'S' },
		{ "layout",	no_argument,       NULL, 'L' },
		{ "man-counters", no_argument,     NULL, 'M' },
		{ "version",	no_argument,       NULL, 'V' },
		{ "help",	no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *cmd = "counters";
	struct shm_reader r;
	struct shm_snap *s;
	int ch, pargc = 0;
	char **pargv = NULL;

	/* `profile ...` takes its own options (evdump_profile.c): cut argv there. */
	for (int i = 1; i < argc; i++) {
		static const char *const valued[] = { "-p", "-n", "-i", "-o", "-w", "--port", "--name",
		    "--shm-name", "--interval", "--output", "--wait" };
		int is_value = 0;

		if (strcmp(argv[i], "profile") != 0)
			continue;
		for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
			if (!strcmp(argv[i - 1], valued[k]))
				is_value = 1;
		if (is_value)
			continue;	/* the value of an option */
		pargc = argc - i;
		pargv = argv + i;
		argc = i;
		break;
	}

	while ((ch = getopt_long(argc, argv, "p:n:jai:o:w:Vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 65535)
				die(EVD_EXIT_USAGE, "invalid port \"%s\"", optarg);
			opt.port = (int)v;
			break;
		}
		case 'n':
			if (!optarg[0])
				die(EVD_EXIT_USAGE, "empty segment name");
			opt.name = optarg;
			break;
		case 'j': opt.json = 1; break;
		case 'a': opt.all = 1; break;
		case 'i': opt.interval = parse_secs(optarg, "interval"); break;
		case 'o': opt.output = optarg; break;
		case 'w': opt.wait = parse_secs(optarg, "wait"); break;
		case 'S': opt.stale = 1; break;
		case 'L': cmd = "layout"; break;
		case 'M': cmd = "man-counters"; break;
		case 'V':
			printf("evdump %s (segment layout %d.%d)\n", PACKAGE_VERSION, EVSHM_MAJOR, EVSHM_MINOR);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EVD_EXIT_USAGE;
		}
	}
	if (pargv) {
		if (optind < argc)
			die(EVD_EXIT_USAGE, "unexpected argument \"%s\"", argv[optind]);
		if (pargc < 2 || !strcmp(pargv[1], "--help") || !strcmp(pargv[1], "-h"))
			return evd_profile(NULL, pargc, pargv, opt.output);
		attach(&r);
		ch = evd_profile(r.hdr, pargc, pargv, opt.output);
		shm_reader_close(&r);
		return ch;
	}
	if (optind < argc)
		cmd = argv[optind++];

	if (!strcmp(cmd, "layout")) {
		if (opt.json)
			evd_json_layout(stdout);
		else
			view_layout();
		return 0;
	}
	if (!strcmp(cmd, "man-counters")) {
		view_man_counters();
		return 0;
	}
	if (!strcmp(cmd, "diff")) {
		struct shm_snap *a, *b;
		struct evd_rates rt;
		char err[1024];

		if (argc - optind != 2)
			die(EVD_EXIT_USAGE, "diff needs two snapshot files");
		a = calloc(1, sizeof(*a));
		b = calloc(1, sizeof(*b));
		if (!a || !b)
			die(EVD_EXIT_ERROR, "out of memory");
		if (evd_json_load(argv[optind], a, err, sizeof(err)) < 0 ||
		    evd_json_load(argv[optind + 1], b, err, sizeof(err)) < 0 ||
		    evd_rates_compute(&rt, a, b, err, sizeof(err)) < 0)
			die(EVD_EXIT_ERROR, "%s", err);
		if (opt.json)
			evd_json_rates(stdout, &rt);
		else
			view_rates(&rt);
		evd_rates_free(&rt);
		free_snap(a);
		free_snap(b);
		return 0;
	}
	if (optind < argc)
		die(EVD_EXIT_USAGE, "unexpected argument \"%s\"", argv[optind]);
	if (strcmp(cmd, "counters") && strcmp(cmd, "latency") && strcmp(cmd, "workers") &&
	    strcmp(cmd, "status") && strcmp(cmd, "rates") && strcmp(cmd, "snapshot")) {
		fprintf(stderr, "%s: unknown command \"%s\"\n", progname, cmd);
		usage(stderr);
		return EVD_EXIT_USAGE;
	}

	attach(&r);
	s = snapshot(&r);
	if (!strcmp(cmd, "rates")) {
		struct shm_snap *b;
		struct evd_rates rt;
		char err[1024];

		sleep_s(opt.interval > 0 ? opt.interval : 1);
		b = snapshot(&r);
		if (evd_rates_compute(&rt, s, b, err, sizeof(err)) < 0)
			die(EVD_EXIT_ERROR, "%s", err);
		if (opt.json)
			evd_json_rates(stdout, &rt);
		else
			view_rates(&rt);
		evd_rates_free(&rt);
		free_snap(b);
	} else if (!strcmp(cmd, "snapshot")) {
		FILE *f = stdout;
		if (opt.output && strcmp(opt.output, "-") && !(f = fopen(opt.output, "w")))
			die(EVD_EXIT_ERROR, "could not open \"%s\": %s", opt.output, strerror(errno));
		evd_json_snapshot(f, s);
		if ((f != stdout && fclose(f) != 0) || (f == stdout && fflush(f) != 0))
			die(EVD_EXIT_ERROR, "could not write \"%s\": %s",
			    opt.output ? opt.output : "standard output", strerror(errno));
	} else if (opt.json)
		evd_json_snapshot(stdout, s);
	else if (!strcmp(cmd, "counters"))
		view_counters(s);
	else if (!strcmp(cmd, "latency"))
		view_latency(s);
	else if (!strcmp(cmd, "workers"))
		view_workers(s);
	else
		view_status(s, &r);
	free_snap(s);
	shm_reader_close(&r);
	if (fflush(stdout) != 0)
		return EVD_EXIT_ERROR;
	return 0;
}
