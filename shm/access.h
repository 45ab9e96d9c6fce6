/*
 * access.h - how the segment is written and read (see layout.h).
 *
 * Every field of the segment has exactly one writer.  That makes a
 * counter update a relaxed load and a relaxed store of an aligned 64-bit
 * word: no lock prefix, no syscall, and a concurrent reader still sees
 * either the old or the new value, never a mix.
 *
 * Groups of fields that must agree (a histogram's buckets, count and
 * sum; a slot's identity; its scoreboard) are guarded by a change counter
 * in the manner of PostgreSQL's st_changecount: the writer makes it odd,
 * updates, makes it even again; a reader copies between two loads of the
 * counter and retries when they differ or are odd.  In C11 terms (Boehm,
 * "Can seqlocks get along with programming language memory models?"):
 * writer: store odd; release fence; data stores; release store even.
 * Reader: acquire load; data loads; acquire fence; relaxed load.
 * On x86-64 all of it compiles to plain moves.
 */
#ifndef EVENTODB_SHM_ACCESS_H
#define EVENTODB_SHM_ACCESS_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "layout.h"

/*
 * Readers give up on a group after this many attempts (and say so).  With
 * evshm_backoff() between attempts that is ~0.2 s: a writer preempted in
 * the middle of its update (a busy machine, more workers than cores) gets
 * the CPU back long before then.
 */
#define EVSHM_READ_RETRIES	10000

/* CLOCK_MONOTONIC in nanoseconds: the one clock of every timestamp and interval. */
static inline uint64_t
evshm_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Between two attempts to read a group: spin a little (the writer is on
 * another core, its update takes nanoseconds), then yield, then sleep 20 us
 * so that a preempted writer can finish.
 */
static inline void
evshm_backoff(int attempt)
{
	if (attempt < 64) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#elif defined(__aarch64__)
		__asm__ __volatile__("yield");
#endif
	} else if (attempt < 128)
		sched_yield();
	else {
		struct timespec ts = { 0, 20000 };
		nanosleep(&ts, NULL);
	}
}

static inline uint64_t
evshm_load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void
evshm_store(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Single-writer add (wraps like unsigned arithmetic: gauges add -1). */
static inline void
evshm_add(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void
evshm_write_begin(uint64_t *seq)
{
	__atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void
evshm_write_end(uint64_t *seq)
{
	__atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
}

static inline uint64_t
evshm_read_begin(const uint64_t *seq)
{
	return __atomic_load_n(seq, __ATOMIC_ACQUIRE);
}

/* 1 if what was read since evshm_read_begin() returned s must be re-read. */
static inline int
evshm_read_retry(const uint64_t *seq, uint64_t s)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return (s & 1) || __atomic_load_n(seq, __ATOMIC_RELAXED) != s;
}

/* Copy n words with relaxed loads (a reader's side of a group). */
static inline void
evshm_copy(uint64_t *dst, const uint64_t *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* Bucket of a value in nanoseconds (layout.h: buckets hold (lower, upper]). */
static inline unsigned
evshm_hist_index(uint64_t ns)
{
	uint64_t v = ns ? ns - 1 : 0;
	unsigned e;

	if (v < (1u << EVSHM_HIST_MIN_SHIFT))
		return (unsigned)(v >> (EVSHM_HIST_MIN_SHIFT - EVSHM_HIST_SUB_BITS));
	e = 63u - (unsigned)__builtin_clzll(v);
	if (e >= EVSHM_HIST_MAX_SHIFT)
		return EVSHM_HIST_OVERFLOW;
	return EVSHM_HIST_SUB + (e - EVSHM_HIST_MIN_SHIFT) * EVSHM_HIST_SUB +
	    (unsigned)((v >> (e - EVSHM_HIST_SUB_BITS)) & (EVSHM_HIST_SUB - 1));
}

/* Record one observation (the histogram's only writer). */
static inline void
evshm_hist_observe(struct evshm_hist *h, uint64_t ns)
{
	unsigned i = evshm_hist_index(ns);

	evshm_write_begin(&h->seq);
	evshm_add(&h->count, 1);
	evshm_add(&h->sum_ns, ns);
	evshm_add(&h->bucket[i], 1);
	evshm_write_end(&h->seq);
}

#endif
