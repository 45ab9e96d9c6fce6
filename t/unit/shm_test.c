/*
 * shm_test.c - unit tests for shm/: layout, histogram arithmetic, label
 * lookups, segment creation (mode, stale and live segments), and the
 * concurrency contract: writers hammer their slots while a reader
 * hammers snapshots and the "master" (this process) kills writers and
 * folds their counters into the retired totals.  The reader must never
 * see a torn value, an inconsistent histogram or a counter going down,
 * and the final totals must be exact.  TAP output.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "reader.h"
#include "shm.h"
#include "tap.h"



static double
now_s(void)
{
	return (double)shm_now_ns(1) / 1e9;
}

/* ---- layout and arithmetic ------------------------------------------------- */

static void
test_layout(void)
{
	ok(sizeof(struct evshm_hdr) == 4096, "header is one page");
	ok(sizeof(struct evshm_slot) == 712704, "slot size pinned");
	ok(sizeof(struct evshm_stats) == 118784, "stats size pinned");
	ok(sizeof(struct evshm_hist) == 3584, "histogram size pinned");
	ok(strlen(EVSHM_MAGIC) == 8, "magic is 8 bytes");
	ok(shm_ncounters > 20 && shm_nhists >= 3 && shm_nhists <= EVSHM_HIST_SLOTS, "tables from counters.def (%u counters, %u histograms)",
	    shm_ncounters, shm_nhists);
	ok(shm_counter_find("requests") && shm_counter_find("requests")->dim == SHM_DIM_method,
	    "requests is labelled by method");
	ok(shm_hist_find("request_duration") != NULL, "request_duration exists");
}

static void
test_hist_math(void)
{
	int bad = 0;
	uint64_t prev = 0;

	ok(evshm_hist_index(0) == 0 && evshm_hist_index(64) == 0 && evshm_hist_index(65) == 1,
	    "linear buckets of 64 ns below 1024 ns");
	ok(evshm_hist_index(1024) == 15 && evshm_hist_index(1025) == 16,
	    "1024 ns is the top of bucket 15, (lower, upper] like Prometheus le");
	ok(evshm_hist_index((uint64_t)1 << 36) == EVSHM_HIST_OVERFLOW - 1 &&
	    evshm_hist_index(((uint64_t)1 << 36) + 1) == EVSHM_HIST_OVERFLOW &&
	    evshm_hist_index(UINT64_MAX) == EVSHM_HIST_OVERFLOW, "overflow above 2^36 ns");
	for (uint64_t v = 1; v < ((uint64_t)1 << 37); v += 1 + v / 97) {
		unsigned i = evshm_hist_index(v);
		if (!(shm_hist_lower_ns(i) < v && v <= shm_hist_upper_ns(i)) || i < prev)
			bad++;
		prev = i;
	}
	ok(bad == 0, "every value lies in (lower, upper] of its bucket, indexes monotonic (%d bad)", bad);
	bad = 0;
	for (unsigned i = EVSHM_HIST_SUB; i < EVSHM_HIST_OVERFLOW; i++) {
		double w = (double)(shm_hist_upper_ns(i) - shm_hist_lower_ns(i));
		if (w / (double)shm_hist_lower_ns(i) > 1.0 / 16 + 1e-12)
			bad++;
	}
	ok(bad == 0, "bucket width at most 1/16 of its lower bound");
	ok(shm_hist_upper_ns(EVSHM_HIST_SUB + 16 * 10 - 1) == ((uint64_t)1 << 20) &&
	    shm_hist_lower_ns(EVSHM_HIST_SUB + 16 * 10) == ((uint64_t)1 << 20),
	    "octave boundaries at powers of two");
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void
test_quantiles(void)
{
	enum { N = 200000 };
	static uint64_t v[N];
	static struct evshm_hist h;
	const double qs[] = { 0.5, 0.9, 0.99, 0.999 };
	double worst = 0;
	unsigned seed = 12345;

	memset(&h, 0, sizeof(h));
	for (int i = 0; i < N; i++) {
		/* log-uniform from 1 us to 10 s */
		double r = (double)rand_r(&seed) / RAND_MAX;
		v[i] = (uint64_t)(1000.0 * pow(1e7, r));
		evshm_hist_observe(&h, v[i]);
	}
	qsort(v, N, sizeof(v[0]), cmp_u64);
	for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
		double exact = (double)v[(size_t)ceil(qs[k] * N) - 1];
		double est = shm_hist_quantile_ns(&h, qs[k]);
		double err = fabs(est - exact) / exact;
		if (err > worst)
			worst = err;
	}
	ok(worst < 0.035, "p50/p90/p99/p99.9 within 3.5 %% of the exact values (worst %.2f %%)",
	    worst * 100);
	ok(h.count == N && h.seq == 2u * N, "count and change counter");
	ok(shm_hist_max_ns(&h) >= v[N - 1] && shm_hist_max_ns(&h) <= v[N - 1] * 1.07,
	    "max is the top of the highest bucket");
}

static void
test_labels(void)
{
	char buf[16];

	ok(shm_status_index(200) == EVSHM_ST_200 && shm_status_index(503) == EVSHM_ST_503 &&
	    shm_status_index(299) == EVSHM_ST_OTHER && shm_status_index(-1) == 0, "status index");
	ok(shm_errcode_index("BACKEND_ERROR") == EVSHM_E_BACKEND_ERROR &&
	    shm_errcode_index("NOPE") == EVSHM_E_OTHER, "error code index");
	ok(shm_endpoint_index("/rpc") == EVSHM_EP_RPC && shm_endpoint_index("/rpc/") == EVSHM_EP_OTHER &&
	    shm_endpoint_index("/debug/pprof/") == EVSHM_EP_DEBUG &&
	    shm_endpoint_index("/metrics") == EVSHM_EP_METRICS, "endpoint index");
	ok(shm_label_index(SHM_DIM_method, "stream.write") == EVSHM_M_STREAM_WRITE, "method index");
	ok(strcmp(shm_label(SHM_DIM_method, 20, buf, sizeof(buf)), "#20") == 0,
	    "labels unknown to this build print as #N");
}

/* ---- segment life ------------------------------------------------------------ */

static char segname[64];

static int
create(const char *name, int nworkers, char *err, size_t errlen)
{
	struct shm_create_opts o = { name, 0, nworkers, 1, "test" };
	return shm_master_create(&o, err, errlen);
}

static void
test_stale(void)
{
	char name[64], err[512], path[128];
	pid_t pid;
	int st;
	struct stat sb;

	snprintf(name, sizeof(name), "/evshm-unit-stale.%d", (int)getpid());
	/* A "master" creates it and dies without removing it. */
	pid = fork();
	if (pid == 0) {
		_exit(create(name, 1, err, sizeof(err)) == 0 ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0 && stat(path, &sb) == 0,
	    "a dead master leaves its segment behind");
	/* A new master replaces it. */
	pid = fork();
	if (pid == 0) {
		int rc = create(name, 1, err, sizeof(err));
		if (rc < 0)
			fprintf(stderr, "# %s\n", err);
		_exit(rc == 0 && shm_hdr()->master_pid == getpid() ? 0 : 1);
	}
	waitpid(pid, &st, 0);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a stale segment is detected and replaced");
	shm_unlink(name);

	/* Not an eventodbd segment: left alone. */
	{
		int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
		ok(fd >= 0 && write(fd, "NOTOURS!", 8) == 8, "a foreign segment");
		close(fd);
		ok(create(name, 1, err, sizeof(err)) < 0 && strstr(err, "not an eventodbd segment"),
		    "a foreign segment is not replaced: %s", err);
		shm_unlink(name);
	}
}

static void
test_create(void)
{
	char err[512], path[128];
	struct stat sb;
	struct shm_reader r;

	snprintf(segname, sizeof(segname), "/evshm-unit.%d", (int)getpid());
	umask(0);
	ok(create(segname, 4, err, sizeof(err)) == 0, "create %s", segname);
	snprintf(path, sizeof(path), "/dev/shm%s", segname);
	if (stat(path, &sb) < 0)
		sb.st_mode = 0;
	ok((sb.st_mode & 0777) == 0600, "mode 0600 whatever the umask (%o)",
	    (unsigned)(sb.st_mode & 0777));
	umask(022);
	ok(shm_hdr()->nslots == 10 && shm_hdr()->ready == 1, "two slots per worker and two more, ready");
	{
		struct shm_create_opts o = { segname, 0, 1, 1, "test" };
		pid_t pid = fork();
		int st;
		if (pid == 0)
			_exit(shm_master_create(&o, err, sizeof(err)) < 0 &&
			    strstr(err, "in use by the eventodbd master") ? 0 : 1);
		waitpid(pid, &st, 0);
		ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a live master's segment is not replaced");
	}
	ok(shm_reader_open(&r, segname, 1, err, sizeof(err)) == SHM_ATTACHED, "reader attaches");
	ok(r.hdr->master_pid == getpid(), "master pid published");
	shm_reader_close(&r);
	ok(shm_reader_open(&r, "/evshm-unit-none", 0, err, sizeof(err)) == SHM_GONE,
	    "a missing segment: %s", err);
}

/* ---- the hammer ------------------------------------------------------------- */

#define ITERS		2000000
#define WRITERS		3
#define ROUNDS		4		/* writers killed and replaced per slot */
#define TORN_STEP	0x100000001ull	/* carries across the 32-bit halves */

static void
writer(int slot)
{
	shm_worker_attach(slot);
	shm_worker_state(EVSHM_W_READY);
	for (int i = 0; i < ITERS; i++) {
		SHM_INC_AT(requests, EVSHM_M_STREAM_WRITE);
		SHM_ADD(http_sent_bytes, 0, TORN_STEP);
		SHM_OBSERVE(request_duration, EVSHM_M_STREAM_WRITE, 1000);
		SHM_OBSERVE(db_query_duration, 0, 1000 + (uint64_t)(i % 5000) * 1000);
		SHM_GAUGE_ADD(connections_open, (i & 1) ? -1 : 1);
	}
	shm_worker_state(EVSHM_W_STOPPED);
	for (;;)
		pause();
}

static volatile sig_atomic_t stop_reader;

static void
on_term(int signo)
{
	stop_reader = 1;
}

/* Hammer snapshots until SIGTERM; exit status = number of problems. */
static void
reader(void)
{
	struct shm_reader r;
	struct shm_snap *s = calloc(1, sizeof(*s));
	uint64_t prev_req = 0, prev_bytes = 0, prev_hist = 0;
	char err[512];
	int problems = 0, snaps = 0;
	unsigned retries = 0, torn = 0;

	if (!s || shm_reader_open(&r, segname, 1, err, sizeof(err)) != SHM_ATTACHED)
		_exit(100);
	while (!stop_reader) {
		const struct evshm_hist *h, *d;
		uint64_t req, bytes, b = 0;

		if (shm_snap_take(&r, s) < 0)
			_exit(101);
		snaps++;
		retries += s->retries;
		torn += s->torn;
		req = s->total.c.requests[EVSHM_M_STREAM_WRITE];
		bytes = s->total.c.http_sent_bytes[0];
		h = &s->total.h.request_duration[EVSHM_M_STREAM_WRITE];
		d = &s->total.h.db_query_duration[0];
		if (req < prev_req || bytes < prev_bytes || h->count < prev_hist) {
			if (problems++ < 5)
				fprintf(stderr, "# decreasing: req %llu < %llu or bytes or hist\n",
				    (unsigned long long)req, (unsigned long long)prev_req);
		}
		if (bytes % TORN_STEP) {
			if (problems++ < 5)
				fprintf(stderr, "# torn counter %llx\n", (unsigned long long)bytes);
		}
		if (h->sum_ns != h->count * 1000 || h->bucket[evshm_hist_index(1000)] != h->count) {
			if (problems++ < 5)
				fprintf(stderr, "# inconsistent histogram count %llu sum %llu\n",
				    (unsigned long long)h->count, (unsigned long long)h->sum_ns);
		}
		for (unsigned i = 0; i < EVSHM_HIST_USED; i++)
			b += d->bucket[i];
		if (b != d->count) {
			if (problems++ < 5)
				fprintf(stderr, "# histogram buckets %llu != count %llu\n",
				    (unsigned long long)b, (unsigned long long)d->count);
		}
		if (s->torn && problems++ < 5)
			fprintf(stderr, "# reader gave up on %u groups\n", s->torn);
		prev_req = req;
		prev_bytes = bytes;
		prev_hist = h->count;
		shm_snap_free(s);
	}
	fprintf(stderr, "# reader: %d snapshots, %u retries, %u given up\n", snaps, retries, torn);
	_exit(problems > 99 ? 99 : problems);
}

static uint64_t
slot_requests(int slot)
{
	struct evshm_slot *s = EVSHM_SLOT(shm_hdr(), slot);
	return evshm_load(&s->stats.c.requests[EVSHM_M_STREAM_WRITE]);
}

static void
test_hammer(void)
{
	pid_t rd, w[WRITERS];
	int slot[WRITERS], st, spawned = 0, stuck = 0;
	struct shm_reader r;
	struct shm_snap *s = calloc(1, sizeof(*s));
	char err[512];
	double t0 = now_s();

	signal(SIGTERM, on_term);	/* inherited: no window before the reader installs it */
	rd = fork();
	if (rd == 0)
		reader();
	signal(SIGTERM, SIG_DFL);
	for (int round = 0; round < ROUNDS; round++) {
		for (int k = 0; k < WRITERS; k++) {
			slot[k] = shm_master_claim(k, (unsigned)round + 1);
			w[k] = fork();
			if (w[k] == 0)
				writer(slot[k]);
			shm_master_forked(slot[k], w[k]);
			spawned++;
		}
		for (int k = 0; k < WRITERS; k++) {
			double dl = now_s() + 30;
			while (slot_requests(slot[k]) < ITERS && now_s() < dl)
				usleep(1000);
			if (slot_requests(slot[k]) < ITERS)
				stuck++;
			kill(w[k], SIGKILL);
			waitpid(w[k], &st, 0);
			shm_master_reaped(w[k]);
		}
	}
	kill(rd, SIGTERM);
	waitpid(rd, &st, 0);
	ok(stuck == 0, "%d writers did %d iterations each", spawned, ITERS);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	    "reader never saw a torn value, an inconsistent histogram or a decrease");

	ok(shm_reader_open(&r, segname, 1, err, sizeof(err)) == SHM_ATTACHED && shm_snap_take(&r, s) == 0,
	    "final snapshot");
	ok(s->total.c.requests[EVSHM_M_STREAM_WRITE] == (uint64_t)spawned * ITERS,
	    "totals exact across %d killed workers: %llu", spawned,
	    (unsigned long long)s->total.c.requests[EVSHM_M_STREAM_WRITE]);
	ok(s->total.h.request_duration[EVSHM_M_STREAM_WRITE].count == (uint64_t)spawned * ITERS,
	    "histogram totals exact");
	ok(s->retired_workers == (uint64_t)spawned && s->nused == 0, "all folded, slots free");
	ok(s->total.c.connections_open[0] == 0, "gauges are not folded");
	shm_snap_free(s);
	shm_reader_close(&r);
	printf("# hammer took %.2f s\n", now_s() - t0);
	free(s);
}

/*
 * Snapshot time of a 16-worker segment whose every histogram is in use,
 * in a child (a process has one segment): mean over 20 snapshots.
 */
static void
test_snapshot_time(void)
{
	int p[2], st;
	double res[2] = { -1, -1 };
	pid_t pid;

	if (pipe(p) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		struct shm_reader r;
		struct shm_snap *s = calloc(1, sizeof(*s));
		char err[512], name[64];
		double best = 1e9, sum = 0, out[2];

		snprintf(name, sizeof(name), "/evshm-unit-16.%d", (int)getpid());
		if (!s || create(name, 16, err, sizeof(err)) < 0)
			_exit(1);
		for (int k = 0; k < 16; k++) {
			int slot = shm_master_claim(k, 1);
			struct evshm_slot *sl = EVSHM_SLOT(shm_hdr(), slot);
			shm_master_forked(slot, getpid());
			for (unsigned c = 0; c < EVSHM_COUNTERS_AREA / 8; c++)
				sl->stats.c_raw[c] = c;
			for (unsigned m = 0; m < EVSHM_method_N; m++)
				for (int i = 0; i < 50; i++)
					evshm_hist_observe(&sl->stats.h.request_duration[m],
					    (uint64_t)(i + 1) * 1000 * (m + 1));
			for (int i = 0; i < 50; i++) {
				evshm_hist_observe(&sl->stats.h.db_query_duration[0], (uint64_t)i * 7777);
				evshm_hist_observe(&sl->stats.h.db_queue_wait[0], (uint64_t)i * 777);
			}
		}
		if (shm_reader_open(&r, name, 1, err, sizeof(err)) != SHM_ATTACHED)
			_exit(2);
		for (int i = 0; i < 20; i++) {
			double t0 = now_s(), dt;
			shm_snap_take(&r, s);
			dt = now_s() - t0;
			sum += dt;
			if (dt < best)
				best = dt;
			if (s->nused != 16)
				_exit(3);
			shm_snap_free(s);
		}
		out[0] = best;
		out[1] = sum / 20;
		shm_master_remove();
		_exit(write(p[1], out, sizeof(out)) == sizeof(out) ? 0 : 4);
	}
	close(p[1]);
	if (read(p[0], res, sizeof(res)) != sizeof(res))
		res[1] = -1;
	close(p[0]);
	waitpid(pid, &st, 0);
	printf("# snapshot of 16 busy workers: best %.3f ms, mean %.3f ms\n", res[0] * 1e3,
	    res[1] * 1e3);
	ok(WIFEXITED(st) && WEXITSTATUS(st) == 0 && res[1] >= 0 && res[1] < 0.050,
	    "a snapshot of a 16-worker segment takes under 50 ms (mean %.3f ms)", res[1] * 1e3);
}

/* What publishing costs the writer: a counter add, a histogram observation. */
static void
test_cost(void)
{
	static struct evshm_stats st;
	const int n = 20000000;
	double t0, t_add, t_obs;

	t0 = now_s();
	for (int i = 0; i < n; i++) {
		evshm_add(&st.c.requests[i & 7], 1);
		__asm__ volatile("" ::: "memory");
	}
	t_add = (now_s() - t0) / n * 1e9;
	t0 = now_s();
	for (int i = 0; i < n; i++)
		evshm_hist_observe(&st.h.request_duration[i & 7], (uint64_t)(i & 0xffff) * 1000);
	t_obs = (now_s() - t0) / n * 1e9;
	printf("# publishing: %.2f ns per counter add, %.2f ns per histogram observation\n",
	    t_add, t_obs);
	ok(st.c.requests[0] == (uint64_t)n / 8 && t_add < 50 && t_obs < 100,
	    "publishing is a few nanoseconds (add %.2f ns, observe %.2f ns)", t_add, t_obs);
}

int
main(void)
{
	char path[128];
	struct stat sb;

	log_setup(LOG_ERROR, 0);
	test_layout();
	test_hist_math();
	test_quantiles();
	test_labels();
	test_stale();
	test_create();
	test_hammer();
	test_snapshot_time();
	test_cost();
	shm_master_remove();
	snprintf(path, sizeof(path), "/dev/shm%s", segname);
	ok(stat(path, &sb) < 0 && errno == ENOENT, "segment removed");
	return tap_done();
}
