/*
 * prof_alloc.c - allocation sampling: malloc & co. interposed in the
 * eventodbd executable.
 *
 * Defining malloc, free, calloc, realloc, memalign, aligned_alloc,
 * posix_memalign, valloc and pvalloc in the executable interposes them
 * for the whole process (glibc manual, "Replacing malloc"): libevent,
 * libpq, json-c and libc's own strdup/fopen all come here.  Each forwards
 * to glibc's exported __libc_* entry points (dlsym(RTLD_NEXT) would
 * recurse through calloc), so the blocks stay glibc's and
 * malloc_usable_size, malloc_trim and mallinfo2 remain valid.
 *
 * Sampling works like Go's MemProfileRate: a per-thread byte budget
 * drawn from an exponential distribution with mean `rate`; the
 * allocation that exhausts it is sampled, so a block of size s is
 * sampled with probability p = 1 - exp(-s/rate).  A sample stands for
 * 1/p blocks and s/p bytes (Horvitz-Thompson); these scaled values are
 * added to the bucket of its call stack in the slot's allocation table,
 * and subtracted again when the block is freed, so in-use = alloc - free
 * (the same rounding both ways: a freed block leaves no residue).
 *
 * The fast path is one thread-local subtraction and a branch; the free
 * path one test of a counter when no sampled block is live, else one
 * 16-bit counter of a filter that stays in L1, and a hash probe only
 * when that is not zero.  While disabled (the master, other threads, rate 0) the
 * budget is INT64_MAX and nothing is ever sampled.  Re-entrance: the
 * sampler sets the budget to INT64_MAX while it works, so an allocation
 * made inside it (there should be none after prof_init) is not sampled;
 * the SIGPROF handler never allocates.
 *
 * Sampled blocks are tracked in a private open-addressing table keyed by
 * address (linear probing, backward-shift deletion); it stays tiny, one
 * entry per live sampled block.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <malloc.h>

#include "access.h"
#include "layout.h"
#include "prof.h"

/*
 * Under AddressSanitizer (eventodbd-asan, battery row T15h) the
 * interposition is compiled out: ASan's allocator must own every block,
 * and ours, forwarding to glibc's, would be handed blocks ASan made (its
 * own interceptors allocate: dlerror() at start-up already ends in a
 * bad-free).  Allocation sampling is then off whatever
 * --profile-alloc-rate says.
 */
#if defined(__SANITIZE_ADDRESS__)
#define PA_INTERPOSE	0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PA_INTERPOSE	0
#endif
#endif
#ifndef PA_INTERPOSE
#define PA_INTERPOSE	1
#endif

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

/* Per-thread budget: bytes until the next sample; INT64_MAX when off. */
static __thread int64_t pa_until = INT64_MAX;
static __thread int pa_on;

static struct evshm_slot *pa_slot;
static double pa_rate;
static uint64_t pa_rng;

/* Live sampled blocks. */
#define PA_TRACK_SIZE	16384u		/* power of two */
#define PA_TRACK_MAX	(PA_TRACK_SIZE / 4 * 3)

struct pa_block {
	uintptr_t	 ptr;		/* 0 = empty */
	uint64_t	 size;
	uint32_t	 bucket;
};

static struct pa_block pa_track[PA_TRACK_SIZE];
static unsigned pa_ntrack;

/*
 * A counting filter in front of the table: free() of a block that was
 * not sampled (nearly all) reads one 16-bit counter, which stays in L1,
 * instead of a probe into the 384 KiB table.
 */
#define PA_FILTER_SIZE	4096u
static uint16_t pa_filter[PA_FILTER_SIZE];

static inline unsigned
pa_filter_slot(uintptr_t p)
{
	return (unsigned)(((uint64_t)p * 0xff51afd7ed558ccdull) >> 52) & (PA_FILTER_SIZE - 1);
}
static uint64_t pa_samples, pa_untracked;

static inline unsigned
pa_hash_ptr(uintptr_t p)
{
	uint64_t h = (uint64_t)p * 0x9e3779b97f4a7c15ull;
	return (unsigned)(h >> 40) & (PA_TRACK_SIZE - 1);
}

static uint64_t
pa_random(void)
{
	/* xorshift64* */
	uint64_t x = pa_rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	pa_rng = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Exponentially distributed gap with mean pa_rate, at least 1. */
static int64_t
pa_next_gap(void)
{
	double u = ((double)(pa_random() >> 11) + 1.0) / 9007199254740993.0;	/* (0, 1] */
	double g = -log(u) * pa_rate;

	if (g < 1)
		g = 1;
	if (g > 1e15)
		g = 1e15;
	return (int64_t)g;
}

#if PA_INTERPOSE
/* Scaled weight of a sample of `size` bytes: objects and bytes it stands for. */
static void
pa_weight(uint64_t size, uint64_t *objs, uint64_t *bytes)
{
	double p = 1.0 - exp(-(double)size / pa_rate);
	double w = p > 0 ? 1.0 / p : 1.0;

	*objs = (uint64_t)llround(w);
	*bytes = (uint64_t)llround(w * (double)size);
}

static uint64_t
pa_stack_hash(const uint64_t *pcs, int n)
{
	uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;

	for (int i = 0; i < n; i++) {
		h ^= pcs[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h ? h : 1;
}

/* Bucket of a stack in the slot's table (inserted if new); -1 if full. */
static int
pa_bucket(const uint64_t *pcs, int n)
{
	struct evshm_alloc_bucket *tab = pa_slot->alloc;
	uint64_t h = pa_stack_hash(pcs, n);
	unsigned i = (unsigned)(h % EVSHM_ALLOC_BUCKETS);

	for (unsigned probe = 0; probe < EVSHM_ALLOC_BUCKETS; probe++) {
		struct evshm_alloc_bucket *b = &tab[i];
		uint64_t bh = __atomic_load_n(&b->stack_hash, __ATOMIC_RELAXED);

		if (bh == h)
			return (int)i;
		if (bh == 0) {
			evshm_write_begin(&b->seq);
			b->depth = (uint16_t)n;
			for (int k = 0; k < n; k++)
				evshm_store(&b->pc[k], pcs[k]);
			evshm_store(&b->alloc_objects, 0);
			evshm_store(&b->alloc_bytes, 0);
			evshm_store(&b->free_objects, 0);
			evshm_store(&b->free_bytes, 0);
			evshm_store(&b->stack_hash, h);
			evshm_write_end(&b->seq);
			evshm_add(&pa_slot->hd.prof.alloc_used, 1);
			return (int)i;
		}
		i = (i + 1) % EVSHM_ALLOC_BUCKETS;
	}
	return -1;
}

static void
pa_track_add(uintptr_t p, uint64_t size, uint32_t bucket)
{
	unsigned i;

	if (pa_ntrack >= PA_TRACK_MAX) {
		pa_untracked++;
		return;
	}
	for (i = pa_hash_ptr(p); pa_track[i].ptr; i = (i + 1) & (PA_TRACK_SIZE - 1))
		if (pa_track[i].ptr == p)
			break;
	if (!pa_track[i].ptr) {
		pa_ntrack++;
		pa_filter[pa_filter_slot(p)]++;
	}
	pa_track[i] = (struct pa_block){ p, size, bucket };
}

/* Remove p if it is a tracked sampled block; record its free. */
static void
pa_untrack(uintptr_t p)
{
	unsigned i, j;
	uint64_t objs, bytes;
	struct evshm_alloc_bucket *b;
	int saved = errno;	/* free() preserves errno; exp() may set it */

	if (!p)
		return;
	for (i = pa_hash_ptr(p); pa_track[i].ptr != p; i = (i + 1) & (PA_TRACK_SIZE - 1))
		if (!pa_track[i].ptr)
			return;
	if (pa_slot && pa_track[i].bucket < EVSHM_ALLOC_BUCKETS) {
		pa_weight(pa_track[i].size, &objs, &bytes);
		b = &pa_slot->alloc[pa_track[i].bucket];
		evshm_write_begin(&b->seq);
		evshm_add(&b->free_objects, objs);
		evshm_add(&b->free_bytes, bytes);
		evshm_write_end(&b->seq);
		errno = saved;
	}
	/* Backward-shift deletion keeps every probe chain unbroken. */
	pa_ntrack--;
	pa_filter[pa_filter_slot(p)]--;
	j = i;
	for (;;) {
		unsigned k;

		pa_track[i].ptr = 0;
		for (;;) {
			j = (j + 1) & (PA_TRACK_SIZE - 1);
			if (!pa_track[j].ptr)
				return;
			k = pa_hash_ptr(pa_track[j].ptr);
			/* Leave j where it is if its home k lies cyclically in (i, j]. */
			if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
				continue;
			break;
		}
		pa_track[i] = pa_track[j];
		i = j;
	}
}

/* The budget ran out: maybe sample the block p of n bytes allocated from ra. */
static __attribute__((noinline)) void
pa_slow(void *p, size_t n, uintptr_t ra)
{
	uint64_t pcs[EVSHM_ALLOC_DEPTH], objs, bytes;
	struct evshm_alloc_bucket *b;
	struct timespec t0, t1;
	int depth, bi, saved = errno;

	if (!pa_on || !pa_slot) {
		pa_until = INT64_MAX;
		return;
	}
	pa_until = INT64_MAX;		/* nothing in here is sampled */
	if (!p) {
		pa_until = pa_next_gap();
		errno = saved;
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	depth = prof_backtrace(pcs, EVSHM_ALLOC_DEPTH, ra);
	bi = pa_bucket(pcs, depth);
	pa_samples++;
	evshm_add(&pa_slot->hd.prof.alloc_samples, 1);
	if (bi < 0) {
		evshm_add(&pa_slot->hd.prof.alloc_dropped, 1);
	} else {
		pa_weight(n, &objs, &bytes);
		b = &pa_slot->alloc[bi];
		evshm_write_begin(&b->seq);
		evshm_add(&b->alloc_objects, objs);
		evshm_add(&b->alloc_bytes, bytes);
		evshm_write_end(&b->seq);
		pa_track_add((uintptr_t)p, n, (uint32_t)bi);
	}
	pa_until = pa_next_gap();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	evshm_add(&pa_slot->hd.prof.alloc_sampler_ns, (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u +
	    (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec);
	errno = saved;
}

#define PA_ACCOUNT(p, n) do {						\
	if (__builtin_expect((pa_until -= (int64_t)(n)) < 0, 0))	\
		pa_slow((p), (n), (uintptr_t)__builtin_return_address(0)); \
} while (0)

#define PA_FORGET(p) do {						\
	if (__builtin_expect(pa_ntrack != 0, 0) && pa_on && (p) &&	\
	    pa_filter[pa_filter_slot((uintptr_t)(p))])			\
		pa_untrack((uintptr_t)(p));				\
} while (0)

void *
malloc(size_t n)
{
	void *p = __libc_malloc(n);

	PA_ACCOUNT(p, n);
	return p;
}

void
free(void *p)
{
	PA_FORGET(p);
	__libc_free(p);		/* preserves errno (glibc >= 2.33) */
}

void *
calloc(size_t nm, size_t sz)
{
	void *p = __libc_calloc(nm, sz);
	size_t n;

	if (__builtin_mul_overflow(nm, sz, &n))
		n = 0;
	PA_ACCOUNT(p, n);
	return p;
}

void *
realloc(void *old, size_t n)
{
	void *p;

	/* Accounted as a free of the old block and an allocation of n. */
	PA_FORGET(old);
	p = __libc_realloc(old, n);
	if (p || n == 0)
		PA_ACCOUNT(p, n);
	return p;
}

void *
memalign(size_t al, size_t n)
{
	void *p = __libc_memalign(al, n);

	PA_ACCOUNT(p, n);
	return p;
}

void *
aligned_alloc(size_t al, size_t n)
{
	void *p = __libc_memalign(al, n);

	PA_ACCOUNT(p, n);
	return p;
}

int
posix_memalign(void **out, size_t al, size_t n)
{
	void *p;
	int saved = errno;

	if (al < sizeof(void *) || (al & (al - 1)) != 0)
		return EINVAL;
	p = __libc_memalign(al, n);
	if (!p) {
		errno = saved;
		return ENOMEM;
	}
	PA_ACCOUNT(p, n);
	*out = p;
	return 0;
}

void *
valloc(size_t n)
{
	void *p = __libc_valloc(n);

	PA_ACCOUNT(p, n);
	return p;
}

void *
pvalloc(size_t n)
{
	void *p = __libc_pvalloc(n);

	PA_ACCOUNT(p, n);
	return p;
}

#endif /* PA_INTERPOSE */

void
prof_alloc_start(struct evshm_slot *slot, long rate)
{
	struct timespec ts;

	pa_on = 0;
	pa_until = INT64_MAX;
	/*
	 * Blocks sampled before (none in the master) are not ours.  Cleared
	 * only if something is tracked: the tables are zero after fork, and
	 * writing them would fault in ~100 pages per worker start (a third
	 * of its start-up CPU).  Filter bits left by freed blocks only cost
	 * a table probe that misses.
	 */
	if (pa_ntrack) {
		memset(pa_track, 0, sizeof(pa_track));
		memset(pa_filter, 0, sizeof(pa_filter));
	}
	pa_ntrack = 0;
	pa_samples = pa_untracked = 0;
	if (!slot || rate <= 0 || !PA_INTERPOSE)
		return;
	pa_slot = slot;
	pa_rate = (double)rate;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	pa_rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ (uint64_t)ts.tv_sec ^
	    0x9e3779b97f4a7c15ull;
	__atomic_store_n(&slot->hd.prof.alloc_rate, (uint32_t)rate, __ATOMIC_RELAXED);
	pa_on = 1;
	pa_until = pa_next_gap();
}

void
prof_alloc_stop(void)
{
	pa_on = 0;
	pa_until = INT64_MAX;
	if (pa_slot)
		__atomic_store_n(&pa_slot->hd.prof.alloc_rate, 0, __ATOMIC_RELAXED);
}

void
prof_alloc_stats(struct prof_alloc_stats *st)
{
	st->samples = pa_samples;
	st->tracked = pa_ntrack;
	st->untracked = pa_untracked;
}
