/*
 * profile.c - profiles from the segment's profiling areas (profile.h).
 *
 * CPU: each slot's ring (layout.h) holds records numbered by a sequence
 * that only grows while the worker lives (the master clears the slot
 * when it reaps the worker).  A window starts at every slot's cpu_head
 * and takes each record up to the heads found at the end, polling in
 * between so that a ring is never lapped; a record whose seq is not the
 * expected one on either side of the copy was overwritten and is
 * counted as lost.  A slot whose worker changed (pid or generation)
 * during the window is read from its first record.  Sample types are
 * Go's: samples/count and cpu/nanoseconds, period 1e9/hz.
 *
 * Heap and allocs: each slot's allocation table, bucket by bucket under
 * its change counter.  The worker stores scaled estimates already
 * (prof_alloc.c), so values are written as they are; in-use is
 * alloc - free.  The numeric label "bytes" is the mean block size, as
 * Go's.
 *
 * Symbols: every worker's /proc/PID/maps (all workers of one master
 * normally share one layout), then the master's.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "access.h"
#include "layout.h"
#include "meta.h"
#include "pprof.h"
#include "profile.h"
#include "symbolize.h"

struct slot_id {
	int32_t		 pid;
	uint32_t	 gen, worker;
};

/* A slot's identity, copied under its change counter; pid 0 = empty or torn. */
static void
read_ident(const struct evshm_slot *s, struct slot_id *id)
{
	for (int i = 0; i < EVSHM_READ_RETRIES; i++) {
		uint64_t q = evshm_read_begin(&s->hd.ident_seq);
		id->pid = __atomic_load_n(&s->hd.pid, __ATOMIC_RELAXED);
		id->gen = __atomic_load_n(&s->hd.gen, __ATOMIC_RELAXED);
		id->worker = __atomic_load_n(&s->hd.worker, __ATOMIC_RELAXED);
		if (!evshm_read_retry(&s->hd.ident_seq, q))
			return;
		evshm_backoff(i);
	}
	id->pid = 0;
}

static int
wanted(const struct slot_id *id, int worker)
{
	return id->pid > 0 && (worker < 0 || (uint32_t)worker == id->worker);
}

/* A long-lived reader (a worker) keeps the parsed symbol tables (profile_keep_symbols). */
static int keep_symbols;
static struct sym_ctx *kept_symbols;

void
profile_keep_symbols(int on)
{
	keep_symbols = on;
	if (!on) {
		sym_close(kept_symbols);
		kept_symbols = NULL;
	}
}

static void
symbols_done(struct sym_ctx *sc)
{
	if (sc != kept_symbols)
		sym_close(sc);
}

static struct sym_ctx *
symbols_for(const struct evshm_hdr *hdr, int worker)
{
	struct sym_ctx *sc = keep_symbols && kept_symbols ? kept_symbols : sym_open();

	if (!sc)
		return NULL;
	if (keep_symbols)
		kept_symbols = sc;
	for (uint32_t i = 0; i < hdr->nslots; i++) {
		struct slot_id id;
		read_ident(EVSHM_SLOT(hdr, i), &id);
		if (wanted(&id, worker))
			(void)sym_add_pid(sc, id.pid);
	}
	if (hdr->master_pid > 0)
		(void)sym_add_pid(sc, hdr->master_pid);
	return sc;
}

static int64_t
unix_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static int
finish(struct pprof *p, const struct evshm_hdr *hdr, int worker, int gzip, unsigned char **out,
    size_t *len, char *err, size_t errlen)
{
	struct sym_ctx *sc = symbols_for(hdr, worker);
	int rc = pprof_encode(p, sc, gzip, out, len);

	symbols_done(sc);
	pprof_free(p);
	if (rc < 0)
		snprintf(err, errlen, "could not encode the profile: out of memory");
	return rc;
}

/* ---- heap and allocs ---------------------------------------------------- */

int
profile_heap(const struct evshm_hdr *hdr, enum profile_kind kind, int worker, int gzip,
    unsigned char **out, size_t *len, char *err, size_t errlen)
{
	struct pprof *p = pprof_new();
	uint32_t rate = 0;
	uint64_t dropped = 0;
	unsigned torn = 0;
	char note[160];

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pprof_sample_type(p, "alloc_objects", "count");
	pprof_sample_type(p, "alloc_space", "bytes");
	pprof_sample_type(p, "inuse_objects", "count");
	pprof_sample_type(p, "inuse_space", "bytes");
	if (kind == PROFILE_ALLOCS)
		pprof_default_type(p, "alloc_space");

	for (uint32_t i = 0; i < hdr->nslots; i++) {
		const struct evshm_slot *s = EVSHM_SLOT(hdr, i);
		struct slot_id id;
		uint32_t r;

		read_ident(s, &id);
		if (!wanted(&id, worker))
			continue;
		r = __atomic_load_n(&s->hd.prof.alloc_rate, __ATOMIC_RELAXED);
		if (r)
			rate = r;
		dropped += evshm_load(&s->hd.prof.alloc_dropped);
		for (unsigned b = 0; b < EVSHM_ALLOC_BUCKETS; b++) {
			const struct evshm_alloc_bucket *bk = &s->alloc[b];
			uint64_t pcs[EVSHM_ALLOC_DEPTH], ao = 0, ab = 0, fo = 0, fb = 0, h = 0;
			unsigned depth = 0;
			int ok = 0;
			int64_t v[4];

			if (!evshm_load(&bk->stack_hash))
				continue;
			for (int t = 0; t < EVSHM_READ_RETRIES && !ok; t++) {
				uint64_t q = evshm_read_begin(&bk->seq);
				h = evshm_load(&bk->stack_hash);
				depth = __atomic_load_n(&bk->depth, __ATOMIC_RELAXED);
				if (depth > EVSHM_ALLOC_DEPTH)
					depth = EVSHM_ALLOC_DEPTH;
				evshm_copy(pcs, bk->pc, depth);
				ao = evshm_load(&bk->alloc_objects);
				ab = evshm_load(&bk->alloc_bytes);
				fo = evshm_load(&bk->free_objects);
				fb = evshm_load(&bk->free_bytes);
				ok = !evshm_read_retry(&bk->seq, q);
				if (!ok)
					evshm_backoff(t);
			}
			if (!ok) {
				torn++;
				continue;
			}
			if (!h || ao == 0)
				continue;
			v[0] = (int64_t)ao;
			v[1] = (int64_t)ab;
			v[2] = ao >= fo ? (int64_t)(ao - fo) : 0;
			v[3] = ab >= fb ? (int64_t)(ab - fb) : 0;
			if (pprof_add(p, pcs, (int)depth, v, "bytes", (int64_t)(ab / ao), "bytes") < 0) {
				pprof_free(p);
				snprintf(err, errlen, "out of memory");
				return -1;
			}
		}
	}
	pprof_period(p, "space", "bytes", rate ? rate : 524288);
	pprof_times(p, unix_now_ns(), 0);
	if (!rate)
		pprof_comment(p, "allocation sampling is off (--profile-alloc-rate 0) or no worker runs");
	if (dropped) {
		snprintf(note, sizeof(note), "%llu allocation samples dropped: stack table full",
		    (unsigned long long)dropped);
		pprof_comment(p, note);
	}
	if (torn) {
		snprintf(note, sizeof(note), "%u buckets skipped: torn while read", torn);
		pprof_comment(p, note);
	}
	return finish(p, hdr, worker, gzip, out, len, err, errlen);
}

/* ---- CPU ---------------------------------------------------------------- */

struct cpu_slot {
	struct slot_id	 id;
	uint64_t	 next;		/* next seq to read */
};

struct profile_cpu {
	const struct evshm_hdr *hdr;
	int		 worker;
	struct pprof	*p;
	struct cpu_slot	*slots;
	uint32_t	 nslots;
	uint32_t	 hz;
	uint64_t	 lost, torn, samples;
	int64_t		 start_unix_ns;
	uint64_t	 start_mono_ns;
	int		 oom;
};

struct profile_cpu *
profile_cpu_begin(const struct evshm_hdr *hdr, int worker)
{
	struct profile_cpu *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->hdr = hdr;
	c->worker = worker;
	c->nslots = hdr->nslots;
	c->slots = calloc(c->nslots ? c->nslots : 1, sizeof(*c->slots));
	c->p = pprof_new();
	if (!c->slots || !c->p) {
		profile_cpu_abort(c);
		return NULL;
	}
	pprof_sample_type(c->p, "samples", "count");
	pprof_sample_type(c->p, "cpu", "nanoseconds");
	c->start_unix_ns = unix_now_ns();
	c->start_mono_ns = evshm_mono_ns();
	for (uint32_t i = 0; i < c->nslots; i++) {
		const struct evshm_slot *s = EVSHM_SLOT(hdr, i);
		uint32_t hz = __atomic_load_n(&s->hd.prof.cpu_hz, __ATOMIC_RELAXED);

		read_ident(s, &c->slots[i].id);
		c->slots[i].next = __atomic_load_n(&s->hd.prof.cpu_head, __ATOMIC_ACQUIRE);
		if (hz > c->hz)
			c->hz = hz;
	}
	return c;
}

void
profile_cpu_poll(struct profile_cpu *c)
{
	for (uint32_t i = 0; i < c->nslots; i++) {
		const struct evshm_slot *s = EVSHM_SLOT(c->hdr, i);
		struct cpu_slot *cs = &c->slots[i];
		struct slot_id id;
		uint64_t head;
		uint32_t hz;

		read_ident(s, &id);
		if (id.pid != cs->id.pid || id.gen != cs->id.gen) {
			/* A new worker since the window began: all of its samples are in it. */
			cs->id = id;
			cs->next = 0;
		}
		if (!wanted(&id, c->worker))
			continue;
		hz = __atomic_load_n(&s->hd.prof.cpu_hz, __ATOMIC_RELAXED);
		if (hz)
			c->hz = hz;
		head = __atomic_load_n(&s->hd.prof.cpu_head, __ATOMIC_ACQUIRE);
		if (head < cs->next)
			cs->next = 0;	/* cleared under us: a new worker */
		if (head - cs->next > EVSHM_CPU_RING) {
			c->lost += head - cs->next - EVSHM_CPU_RING;
			cs->next = head - EVSHM_CPU_RING;
		}
		for (; cs->next < head; cs->next++) {
			const struct evshm_cpu_sample *r = &s->cpu[cs->next % EVSHM_CPU_RING];
			uint64_t pcs[EVSHM_CPU_DEPTH], w;
			unsigned depth;
			int64_t v[2];

			if (__atomic_load_n(&r->seq, __ATOMIC_ACQUIRE) != cs->next + 1) {
				c->lost++;
				continue;
			}
			w = evshm_load(&r->weight_ns);
			depth = __atomic_load_n(&r->depth, __ATOMIC_RELAXED);
			if (depth > EVSHM_CPU_DEPTH)
				depth = EVSHM_CPU_DEPTH;
			evshm_copy(pcs, r->pc, depth);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (__atomic_load_n(&r->seq, __ATOMIC_RELAXED) != cs->next + 1) {
				c->torn++;
				continue;
			}
			v[0] = 1;
			v[1] = (int64_t)w;
			if (pprof_add(c->p, pcs, (int)depth, v, NULL, 0, NULL) < 0)
				c->oom = 1;
			c->samples++;
		}
	}
}

unsigned
profile_cpu_poll_ms(const struct profile_cpu *c)
{
	unsigned ms = c->hz ? (unsigned)(1000u * EVSHM_CPU_RING / 4 / c->hz) : PROFILE_CPU_POLL_MS;

	if (ms > PROFILE_CPU_POLL_MS)
		ms = PROFILE_CPU_POLL_MS;
	return ms < 20 ? 20 : ms;
}

void
profile_cpu_abort(struct profile_cpu *c)
{
	if (!c)
		return;
	pprof_free(c->p);
	free(c->slots);
	free(c);
}

int
profile_cpu_end(struct profile_cpu *c, int gzip, unsigned char **out, size_t *len, char *err,
    size_t errlen)
{
	char note[160];
	struct pprof *p;
	const struct evshm_hdr *hdr = c->hdr;
	int worker = c->worker;

	profile_cpu_poll(c);
	if (c->oom) {
		snprintf(err, errlen, "out of memory");
		profile_cpu_abort(c);
		return -1;
	}
	pprof_period(c->p, "cpu", "nanoseconds", 1000000000 / (c->hz ? c->hz : 100));
	pprof_times(c->p, c->start_unix_ns, (int64_t)(evshm_mono_ns() - c->start_mono_ns));
	if (!c->hz)
		pprof_comment(c->p, "CPU sampling is off (--profile-hz 0) or no worker runs");
	if (c->lost || c->torn) {
		snprintf(note, sizeof(note), "%llu CPU samples lost (ring lapped or torn)",
		    (unsigned long long)(c->lost + c->torn));
		pprof_comment(c->p, note);
	}
	p = c->p;
	c->p = NULL;
	profile_cpu_abort(c);
	return finish(p, hdr, worker, gzip, out, len, err, errlen);
}

/* ---- worker dump ---------------------------------------------------------- */

/* The most recent CPU record of a slot; depth 0 if none. */
static unsigned
last_stack(const struct evshm_slot *s, uint64_t *pcs, uint64_t *t_mono)
{
	for (int t = 0; t < 16; t++) {
		uint64_t head = __atomic_load_n(&s->hd.prof.cpu_head, __ATOMIC_ACQUIRE);
		const struct evshm_cpu_sample *r;
		unsigned depth;

		if (head == 0)
			return 0;
		r = &s->cpu[(head - 1) % EVSHM_CPU_RING];
		if (__atomic_load_n(&r->seq, __ATOMIC_ACQUIRE) != head)
			continue;
		depth = __atomic_load_n(&r->depth, __ATOMIC_RELAXED);
		if (depth > EVSHM_CPU_DEPTH)
			depth = EVSHM_CPU_DEPTH;
		evshm_copy(pcs, r->pc, depth);
		*t_mono = evshm_load(&r->t_mono_ns);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&r->seq, __ATOMIC_RELAXED) == head)
			return depth;
	}
	return 0;
}

/* User + system CPU seconds of a process, 0 if unknown. */
static double
proc_cpu_seconds(int32_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "re")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p || hz <= 0 ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)hz;
}

static uint64_t
gauge(const struct evshm_slot *s, const char *name)
{
	const struct shm_counter_meta *m = shm_counter_find(name);

	return m ? evshm_load(&s->stats.c_raw[m->word]) : 0;
}

int
profile_workers_text(const struct evshm_hdr *hdr, int worker, FILE *out)
{
	struct sym_ctx *sc = symbols_for(hdr, worker);
	uint64_t now_mono = evshm_mono_ns(), now_unix = (uint64_t)unix_now_ns();
	unsigned n = 0;

	for (uint32_t i = 0; i < hdr->nslots; i++) {
		struct slot_id id;
		read_ident(EVSHM_SLOT(hdr, i), &id);
		if (wanted(&id, worker))
			n++;
	}
	fprintf(out, "workers profile: total %u\n", n);
	fprintf(out, "# eventodbd %.*s, master pid %d, state %.*s\n", (int)sizeof(hdr->version),
	    hdr->version, (int)hdr->master_pid, (int)sizeof(hdr->master_state), hdr->master_state);
	for (uint32_t i = 0; i < hdr->nslots; i++) {
		const struct evshm_slot *s = EVSHM_SLOT(hdr, i);
		const struct evshm_slot_head *hd = &s->hd;
		struct slot_id id;
		uint64_t pcs[EVSHM_CPU_DEPTH], t_last = 0, hb, st_unix;
		unsigned depth;
		uint32_t state;

		read_ident(s, &id);
		if (!wanted(&id, worker))
			continue;
		state = __atomic_load_n(&hd->state, __ATOMIC_RELAXED);
		hb = evshm_load(&hd->heartbeat_mono_ns);
		st_unix = evshm_load(&hd->state_unix_ns);
		fprintf(out, "\nworker %u: pid %d, gen %u, slot %u, state %s", id.worker, (int)id.pid,
		    id.gen, i, shm_wstate_name(state));
		if (st_unix && now_unix >= st_unix)
			fprintf(out, " for %.1f s", (double)(now_unix - st_unix) / 1e9);
		fputc('\n', out);
		fprintf(out, "#\theartbeat %s%.1f s ago, loop lag %.3f ms, oldest request %.3f ms\n",
		    hb ? "" : "never, ", hb && now_mono >= hb ? (double)(now_mono - hb) / 1e9 : 0.0,
		    (double)evshm_load(&hd->loop_lag_ns) / 1e6,
		    (double)evshm_load(&hd->oldest_req_ns) / 1e6);
		fprintf(out, "#\tconnections open %llu: reading %llu, handling %llu, writing %llu, "
		    "idle %llu; db pool %llu open, %llu busy, %llu queued\n",
		    (unsigned long long)gauge(s, "connections_open"),
		    (unsigned long long)gauge(s, "connections_reading"),
		    (unsigned long long)gauge(s, "connections_handling"),
		    (unsigned long long)gauge(s, "connections_writing"),
		    (unsigned long long)gauge(s, "connections_idle"),
		    (unsigned long long)gauge(s, "db_pool_open"),
		    (unsigned long long)gauge(s, "db_pool_busy"),
		    (unsigned long long)gauge(s, "db_queue"));
		fprintf(out, "#\tprofiling: cpu %u Hz, %llu samples; alloc rate %u bytes, "
		    "%llu stacks, %llu samples dropped\n",
		    __atomic_load_n(&hd->prof.cpu_hz, __ATOMIC_RELAXED),
		    (unsigned long long)__atomic_load_n(&hd->prof.cpu_head, __ATOMIC_RELAXED),
		    __atomic_load_n(&hd->prof.alloc_rate, __ATOMIC_RELAXED),
		    (unsigned long long)evshm_load(&hd->prof.alloc_used),
		    (unsigned long long)evshm_load(&hd->prof.alloc_dropped));
		{
			double cpu_s = proc_cpu_seconds(id.pid);
			double smp = (double)(evshm_load(&hd->prof.cpu_sampler_ns) +
			    evshm_load(&hd->prof.alloc_sampler_ns)) / 1e9;
			uint64_t ncpu = __atomic_load_n(&hd->prof.cpu_head, __ATOMIC_RELAXED);
			uint64_t nal = evshm_load(&hd->prof.alloc_samples);
			fprintf(out, "#\tsampling cost: %.3f ms in the SIGPROF handler, %.3f ms recording "
			    "allocations", (double)evshm_load(&hd->prof.cpu_sampler_ns) / 1e6,
			    (double)evshm_load(&hd->prof.alloc_sampler_ns) / 1e6);
			if (cpu_s > 0)
				fprintf(out, ": %.3f %% of the worker's %.2f s of CPU", 100 * smp / cpu_s, cpu_s);
			fprintf(out, " (%.1f us per CPU sample, %.1f us per allocation sample, %llu of them)\n",
			    ncpu ? (double)evshm_load(&hd->prof.cpu_sampler_ns) / 1e3 / (double)ncpu : 0.0,
			    nal ? (double)evshm_load(&hd->prof.alloc_sampler_ns) / 1e3 / (double)nal : 0.0,
			    (unsigned long long)nal);
		}
		depth = last_stack(s, pcs, &t_last);
		if (!depth) {
			fprintf(out, "#\tno CPU sample yet\n");
			continue;
		}
		fprintf(out, "#\tlast CPU sample %.3f s ago:\n",
		    now_mono >= t_last ? (double)(now_mono - t_last) / 1e9 : 0.0);
		for (unsigned k = 0; k < depth; k++) {
			struct sym_frame fr = { 0 };
			if (sc)
				sym_lookup(sc, pcs[k], &fr);
			fprintf(out, "#\t0x%llx\t", (unsigned long long)pcs[k]);
			if (fr.func)
				fprintf(out, "%s+0x%llx", fr.func,
				    (unsigned long long)(pcs[k] - fr.func_addr));
			else if (fr.map)
				fprintf(out, "[%s]", fr.map->path);
			else
				fprintf(out, "?");
			fputc('\n', out);
		}
	}
	symbols_done(sc);
	return ferror(out) ? -1 : 0;
}

int
profile_workers_pprof(const struct evshm_hdr *hdr, int worker, int gzip, unsigned char **out,
    size_t *len, char *err, size_t errlen)
{
	struct pprof *p = pprof_new();

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pprof_sample_type(p, "workers", "count");
	pprof_period(p, "workers", "count", 1);
	pprof_times(p, unix_now_ns(), 0);
	pprof_comment(p, "one sample per worker: its most recent CPU sample");
	for (uint32_t i = 0; i < hdr->nslots; i++) {
		const struct evshm_slot *s = EVSHM_SLOT(hdr, i);
		struct slot_id id;
		uint64_t pcs[EVSHM_CPU_DEPTH], t;
		unsigned depth;
		int64_t one = 1;

		read_ident(s, &id);
		if (!wanted(&id, worker))
			continue;
		depth = last_stack(s, pcs, &t);
		if (pprof_add(p, pcs, (int)depth, &one, "worker", id.worker, NULL) < 0) {
			pprof_free(p);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	return finish(p, hdr, worker, gzip, out, len, err, errlen);
}
