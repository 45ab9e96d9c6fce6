/*
 * prof.h - the always-on sampling profiler of a worker.
 *
 * Two samplers write into the worker's slot of the shared-memory segment
 * (layout.h, "Profiling areas"); evdump and /debug/pprof read them:
 *
 *   prof_cpu.c    a profiling timer (setitimer ITIMER_PROF, --profile-hz)
 *                 whose SIGPROF handler unwinds the interrupted stack into
 *                 the slot's CPU ring;
 *   prof_alloc.c  malloc & co. interposed in the executable, sampling one
 *                 allocation per --profile-alloc-rate bytes on average
 *                 (exponential gaps, like Go's MemProfileRate) into the
 *                 slot's allocation table, frees of sampled blocks
 *                 included, so in-use space is known;
 *   prof_unwind.c stack capture for both: libgcc's _Unwind_Backtrace,
 *                 which reads .eh_frame and so walks through libevent,
 *                 json-c and libc (built without frame pointers).
 *
 * Rules: nothing here takes a lock or allocates while sampling; the
 * master never samples (the interposer forwards straight to glibc until
 * a worker calls prof_alloc_start).
 */
#ifndef EVENTODB_PROF_H
#define EVENTODB_PROF_H

#include <stddef.h>
#include <stdint.h>

struct evshm_slot;

#define PROF_DEFAULT_HZ		100
#define PROF_DEFAULT_ALLOC_RATE	(512 * 1024)

/*
 * Warm the unwinder up (its first call initialises libgcc state); call
 * once before forking workers and before any sampler is armed.
 */
void prof_init(void);

/*
 * prof_init(), then mark the caller as the anchor: a function that runs
 * the worker's loop and never returns.  Stacks are unwound only down to
 * its frame; the frames beneath it, the same in every sample, are copied
 * from what is seen here (so they still appear, at no unwinding cost).
 */
void prof_anchor(void);

/*
 * Capture the caller's stack, innermost first, as addresses ready for
 * symbolisation (return addresses minus one).  Frames up to and including
 * the one that returns to `from` (a return address) are skipped when
 * `from` is found; 0 keeps everything.  Returns the number of frames.
 */
int prof_backtrace(uint64_t *pcs, int max, uintptr_t from);

/*
 * From a signal handler: the interrupted stack, innermost first; pcs[0]
 * is the interrupted instruction itself, the others return addresses
 * minus one.  `ip` is the interrupted pc from the ucontext, used when the
 * unwinder cannot find the signal frame.
 */
int prof_backtrace_signal(uint64_t *pcs, int max, uintptr_t ip);

/* CPU sampling into the slot at hz samples per CPU second (0: off). */
int prof_cpu_start(struct evshm_slot *slot, int hz);
void prof_cpu_stop(void);

/* Allocation sampling into the slot, one sample per `rate` bytes (0: off). */
void prof_alloc_start(struct evshm_slot *slot, long rate);
void prof_alloc_stop(void);

/* Sampler statistics of this process (for the worker dump and tests). */
struct prof_alloc_stats {
	uint64_t	samples;	/* allocations sampled */
	uint64_t	tracked;	/* sampled blocks currently live */
	uint64_t	untracked;	/* sampled blocks not tracked: table full */
};
void prof_alloc_stats(struct prof_alloc_stats *st);

#endif
