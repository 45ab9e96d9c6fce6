/*
 * debug_pprof.c - GET /debug/pprof/...: the segment's profiles over HTTP,
 * as Go's net/http/pprof serves them, so that
 * `go tool pprof http://127.0.0.1:8080/debug/pprof/heap` works.
 *
 *   /debug/pprof/                 index (text)
 *   /debug/pprof/profile?seconds=N  CPU profile of every worker over N s
 *                                 (default 30, at most 300)
 *   /debug/pprof/heap, /allocs    heap profiles (allocs: alloc_space default)
 *   /debug/pprof/goroutine        one sample per worker, its last CPU stack;
 *                                 ?debug=1 or 2: the worker dump as text
 *   /debug/pprof/workers          the worker dump as text
 *   any of them with ?worker=N: that worker only
 *
 * Only for loopback clients or requests carrying the admin token (the
 * default namespace's, "Authorization: Bearer ..."); anyone else gets the
 * same 404 as an unknown path (decisions.md 9).  The profiles are built
 * by the same code as evdump's (tools/profile.c) from the segment this
 * worker inherited; the CPU window never blocks the event loop: a timer
 * polls the rings every PROFILE_CPU_POLL_MS and answers at the end.
 *
 * With --enable-test-rpc (tests only) /debug/test/ adds allocation and
 * CPU-burning endpoints with known volumes, for the accuracy tests:
 *   /debug/test/alloc?bytes=N&chunk=M&keep=0|1   allocate N bytes in M-byte
 *       blocks in prof_test_alloc_site(), freed at once unless keep=1
 *   /debug/test/free                             free the kept blocks
 *   /debug/test/burn?ms=N                        spin in prof_test_burn_cpu()
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "db.h"
#include "debug_pprof.h"
#include "http.h"
#include "log.h"
#include "nscache.h"
#include "tools/profile.h"
#include "shm.h"
#include "token.h"
#include "worker.h"

static struct event_base *dbg_base;
static int dbg_test_rpc;

struct dbg_req {
	struct http_req	*req;
	char		 path[64];
	int		 worker;
	/* admin check */
	struct db_query	 q;
	struct db_stmt	 st;
	const char	*pv[1];
	char		 hash[65];
	/* CPU window */
	struct profile_cpu *cpu;
	struct event	*tick;
	uint64_t	 end_ns;
};

void
dbg_init(struct event_base *base, int enable_test_rpc)
{
	dbg_base = base;
	dbg_test_rpc = enable_test_rpc;
	profile_keep_symbols(1);	/* parse the ELF files once, not per request */
}


static void
not_found(struct http_req *req)
{
	http_respond_error(req, 404, "NOT_FOUND", "Endpoint not found");
}

static void
respond_bytes(struct http_req *req, const char *ctype, const void *data, size_t len)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		return;
	}
	evbuffer_add(b, data, len);
	http_respond_type(req, 200, ctype, b);
	evbuffer_free(b);
}

static void
respond_profile(struct http_req *req, int rc, unsigned char *buf, size_t len, const char *err)
{
	if (rc < 0)
		http_respond_error(req, 500, "INTERNAL_ERROR", err);
	else
		respond_bytes(req, "application/octet-stream", buf, len);
	free(buf);
}

/* ---- test endpoints -------------------------------------------------------- */

static void **kept;
static size_t nkept, capkept;

/*
 * The test endpoints block the event loop on purpose, for seconds on a busy
 * machine; they keep the heartbeat going so the master's watchdog
 * (--heartbeat-timeout) does not take them for a hung worker and kill them
 * in the middle of the measurement.
 */
static void
test_beat(void)
{
	static uint64_t last;
	uint64_t now = evshm_mono_ns();

	if (now - last >= 250000000u) {
		wrk_beat();
		last = now;
	}
}

/* Allocates `total` bytes in `chunk`-byte blocks; kept blocks are freed by /debug/test/free. */
__attribute__((noinline)) size_t
prof_test_alloc_site(size_t total, size_t chunk, int keep)
{
	size_t done = 0;

	while (done < total) {
		char *volatile p = malloc(chunk);

		if (!p)
			break;
		if ((done / chunk & 1023) == 0)
			test_beat();
		p[0] = 1;
		p[chunk - 1] = 1;
		if (keep) {
			if (nkept == capkept) {
				size_t cap = capkept ? capkept * 2 : 1024;
				void **k = realloc(kept, cap * sizeof(*k));
				if (!k) {
					free(p);
					break;
				}
				kept = k;
				capkept = cap;
			}
			kept[nkept++] = p;
		} else
			free(p);
		done += chunk;
	}
	return done;
}

/* Spins for ms milliseconds of CPU. */
__attribute__((noinline)) double
prof_test_burn_cpu(long ms)
{
	uint64_t until = evshm_mono_ns() + (uint64_t)ms * 1000000u;
	volatile double x = 1.0;

	while (evshm_mono_ns() < until) {
		test_beat();
		for (int i = 0; i < 20000; i++)
			x = x * 1.0000001 + 0.5;
	}
	return x;
}

static long
query_long(const struct http_req *req, const char *name, long def, long min, long max)
{
	char buf[32], *end;
	long v;

	if (http_query_get(req, name, buf, sizeof(buf)) < 0)
		return def;
	v = strtol(buf, &end, 10);
	if (end == buf || *end || v < min || v > max)
		return -1;
	return v;
}

static void
test_endpoint(struct http_req *req, const char *what)
{
	char body[128];

	if (!strcmp(what, "alloc")) {
		long total = query_long(req, "bytes", -1, 1, 8L << 30);
		long chunk = query_long(req, "chunk", 4096, 1, 1L << 30);
		long keep = query_long(req, "keep", 0, 0, 1);
		size_t done;

		if (total < 0 || chunk < 0 || keep < 0) {
			http_respond_error(req, 400, "INVALID_REQUEST", "bytes, chunk or keep out of range");
			return;
		}
		done = prof_test_alloc_site((size_t)total, (size_t)chunk, (int)keep);
		snprintf(body, sizeof(body), "{\"allocated\":%zu,\"kept\":%zu}\n", done, nkept);
	} else if (!strcmp(what, "free")) {
		size_t n = nkept;
		for (size_t i = 0; i < nkept; i++)
			free(kept[i]);
		free(kept);
		kept = NULL;
		nkept = capkept = 0;
		snprintf(body, sizeof(body), "{\"freed\":%zu}\n", n);
	} else if (!strcmp(what, "burn")) {
		long ms = query_long(req, "ms", 1000, 1, 60000);
		if (ms < 0) {
			http_respond_error(req, 400, "INVALID_REQUEST", "ms out of range");
			return;
		}
		prof_test_burn_cpu(ms);
		snprintf(body, sizeof(body), "{\"burned_ms\":%ld}\n", ms);
	} else {
		not_found(req);
		return;
	}
	http_respond_str(req, 200, body);
}

/* ---- profiles -------------------------------------------------------------- */

static void
dbg_free(struct dbg_req *d)
{
	if (d->tick)
		event_free(d->tick);
	profile_cpu_abort(d->cpu);
	free(d);
}

static void
cpu_tick(evutil_socket_t fd, short what, void *arg)
{
	struct dbg_req *d = arg;
	unsigned char *buf = NULL;
	size_t len = 0;
	char err[256];
	int rc;

	if (evshm_mono_ns() < d->end_ns) {
		profile_cpu_poll(d->cpu);
		return;
	}
	rc = profile_cpu_end(d->cpu, 1, &buf, &len, err, sizeof(err));
	d->cpu = NULL;
	respond_profile(d->req, rc, buf, len, err);
	dbg_free(d);
}

static void
index_page(struct http_req *req)
{
	static const char text[] =
	    "eventodbd profiles (pprof format; read with go tool pprof):\n"
	    "  /debug/pprof/profile?seconds=N  CPU of every worker over N seconds (default 30)\n"
	    "  /debug/pprof/heap               sampled allocations in use (inuse_space default)\n"
	    "  /debug/pprof/allocs             sampled allocations since start (alloc_space default)\n"
	    "  /debug/pprof/goroutine          each worker's latest CPU stack (?debug=1: text)\n"
	    "  /debug/pprof/workers            the worker-state dump (text)\n"
	    "  ?worker=N                       one worker only\n"
	    "example: go tool pprof -top http://127.0.0.1:PORT/debug/pprof/heap\n";

	respond_bytes(req, "text/plain; charset=utf-8", text, sizeof(text) - 1);
}

/* Access granted: serve d->path. */
static void
serve(struct dbg_req *d)
{
	struct http_req *req = d->req;
	const struct evshm_hdr *hdr = shm_hdr();
	const char *p = d->path;
	unsigned char *buf = NULL;
	size_t len = 0;
	char err[256];
	long debug;
	int rc;

	if (!strncmp(p, "/debug/test/", 12)) {
		if (!dbg_test_rpc)
			not_found(req);
		else
			test_endpoint(req, p + 12);
		free(d);
		return;
	}
	/* Go's path is /debug/pprof/ (its mux redirects the bare one; here it is unknown). */
	if (!strcmp(p, "/debug/pprof/")) {
		index_page(req);
		free(d);
		return;
	}
	if (strncmp(p, "/debug/pprof/", 13) != 0) {
		not_found(req);
		free(d);
		return;
	}
	p += 13;
	if (!hdr) {
		http_respond_error(req, 503, "UNAVAILABLE", "no shared memory segment: profiles unavailable");
		free(d);
		return;
	}
	d->worker = (int)query_long(req, "worker", PROFILE_ALL_WORKERS, 0, 100000);
	if (d->worker < PROFILE_ALL_WORKERS) {
		http_respond_error(req, 400, "INVALID_REQUEST", "worker must be a worker number");
		free(d);
		return;
	}
	if (!strcmp(p, "profile")) {
		long secs = query_long(req, "seconds", 30, 1, 300);
		struct timeval tv;

		if (secs < 0) {
			http_respond_error(req, 400, "INVALID_REQUEST", "seconds must be 1 to 300");
			free(d);
			return;
		}
		d->cpu = profile_cpu_begin(hdr, d->worker);
		d->tick = event_new(dbg_base, -1, EV_PERSIST, cpu_tick, d);
		if (!d->cpu || !d->tick) {
			http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
			dbg_free(d);
			return;
		}
		d->end_ns = evshm_mono_ns() + (uint64_t)secs * 1000000000u;
		tv.tv_sec = 0;
		tv.tv_usec = (suseconds_t)profile_cpu_poll_ms(d->cpu) * 1000;
		event_add(d->tick, &tv);
		return;
	}
	debug = query_long(req, "debug", 0, 0, 2);
	if (!strcmp(p, "heap") || !strcmp(p, "allocs")) {
		rc = profile_heap(hdr, !strcmp(p, "heap") ? PROFILE_HEAP : PROFILE_ALLOCS, d->worker, 1,
		    &buf, &len, err, sizeof(err));
		respond_profile(req, rc, buf, len, err);
	} else if ((!strcmp(p, "goroutine") && debug > 0) || !strcmp(p, "workers")) {
		char *text = NULL;
		size_t tlen = 0;
		FILE *f = open_memstream(&text, &tlen);

		if (!f) {
			http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		} else {
			rc = profile_workers_text(hdr, d->worker, f);
			if (fclose(f) != 0 || rc < 0)
				http_respond_error(req, 500, "INTERNAL_ERROR", "could not write the dump");
			else
				respond_bytes(req, "text/plain; charset=utf-8", text, tlen);
		}
		free(text);
	} else if (!strcmp(p, "goroutine")) {
		rc = profile_workers_pprof(hdr, d->worker, 1, &buf, &len, err, sizeof(err));
		respond_profile(req, rc, buf, len, err);
	} else {
		not_found(req);
	}
	free(d);
}

/* ---- access ------------------------------------------------------------------ */

/* e: a reference (released here), or NULL. */
static void
admin_checked(struct dbg_req *d, struct ns_entry *e)
{
	int ok = e && tok_equal_ct(d->hash, e->token_hash, 64);

	nscache_unref(e);
	if (ok)
		serve(d);
	else {
		not_found(d->req);
		free(d);
	}
}

static void
registry_done(struct db_query *q)
{
	struct dbg_req *d = q->arg;
	struct ns_entry *e = NULL;

	if (!db_failed(q) && q->res[0] && PQntuples(q->res[0]) > 0)
		e = nscache_put(q->res[0], 0);
	db_query_reset(q);
	admin_checked(d, e);
}

void
dbg_handle(struct http_req *req)
{
	struct dbg_req *d;
	char ns[256], err[160];
	const char *tok;
	size_t toklen;
	struct ns_entry *e;

	if (req->method != HTTP_GET && req->method != HTTP_HEAD) {
		not_found(req);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		return;
	}
	d->req = req;
	snprintf(d->path, sizeof(d->path), "%s", req->path);
	if (http_peer_loopback(req)) {
		serve(d);
		return;
	}
	/* Not loopback: only the admin token opens it. */
	tok = req->authorization;
	if (!tok || strncasecmp(tok, "Bearer ", 7) != 0) {
		not_found(req);
		free(d);
		return;
	}
	tok += 7;
	while (*tok == ' ')
		tok++;
	toklen = strlen(tok);
	while (toklen && tok[toklen - 1] == ' ')
		toklen--;
	if (tok_parse(tok, toklen, ns, sizeof(ns), err, sizeof(err)) < 0 || strcmp(ns, "default") != 0) {
		not_found(req);
		free(d);
		return;
	}
	tok_hash_hex(tok, toklen, d->hash);
	e = nscache_get("default");
	if (e) {
		admin_checked(d, e);
		return;
	}
	d->pv[0] = "default";
	d->st = (struct db_stmt){ nscache_registry_sql, 1, d->pv, 1 };
	d->q.stmts = &d->st;
	d->q.nstmts = 1;
	d->q.cb = registry_done;
	d->q.arg = d;
	db_submit(&d->q);
}
