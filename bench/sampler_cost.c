/*
 * sampler_cost.c - what the samplers cost, on this machine: one stack
 * capture per unwinder (the measurement behind worker/prof_unwind.c's
 * choice), and malloc+free through the interposer (worker/prof_alloc.c)
 * with sampling off and at the default rate, against glibc's own entry
 * points.
 *
 *   bench/sampler_cost [ITERATIONS]
 *
 * Captures a stack of about 24 frames (a recursion of our own frames)
 * and reports nanoseconds per capture for:
 *   - a frame-pointer walk (cheap, but stops at the first library frame
 *     built without frame pointers: Debian's libevent, json-c, libc);
 *   - prof_backtrace(): libgcc's _Unwind_Backtrace called directly (what
 *     the samplers use);
 *   - glibc's backtrace() (the same unwinder behind a wrapper);
 *   - libunwind's unw_backtrace(), if libunwind.so.8 can be dlopen'ed
 *     (libunwind-dev is not needed, and not installable beside libc++-dev).
 * Whether each method gets through libraries without frame pointers is
 * not measured here: t/unit/prof_test checks that.
 */
#include "config.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "layout.h"
#include "prof.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

#define DEPTH	20

static int (*unw_bt)(void **, int);
static int method;
static long iters = 100000;

static int
fp_walk(void **out, int max)
{
	void **fp = __builtin_frame_address(0);
	int n = 0;

	while (fp && n < max) {
		void **next = fp[0];
		if (!fp[1])
			break;
		out[n++] = fp[1];
		if (next <= fp || (char *)next - (char *)fp > (1 << 20))
			break;
		fp = next;
	}
	return n;
}

static int
capture(void **out, int max)
{
	switch (method) {
	case 0:
		return fp_walk(out, max);
	case 1:
		return prof_backtrace((uint64_t *)out, max, 0);
	case 2:
		return backtrace(out, max);
	default:
		return unw_bt(out, max);
	}
}

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

__attribute__((noinline)) static double
recurse(int level, int *frames)
{
	void *buf[128];
	double t;

	if (level > 0) {
		double r = recurse(level - 1, frames);
		__asm__ volatile("" ::: "memory");
		return r;
	}
	*frames = capture(buf, 128);
	t = now_ns();
	for (long i = 0; i < iters; i++)
		capture(buf, 128);
	return (now_ns() - t) / (double)iters;
}

int
main(int argc, char **argv)
{
	static const char *const names[] = {
		"frame-pointer walk", "prof_backtrace (_Unwind_Backtrace)",
		"glibc backtrace()", "libunwind unw_backtrace()"
	};
	void *h, *warm[4];

	if (argc > 1)
		iters = atol(argv[1]);
	if (iters < 1)
		iters = 1;
	prof_init();
	backtrace(warm, 4);
	h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
	if (h)
		*(void **)&unw_bt = dlsym(h, "unw_backtrace");
	printf("%-38s %10s %7s\n", "method", "ns/capture", "frames");
	for (method = 0; method < 4; method++) {
		double best = 1e18;
		int frames = 0;

		if (method == 3 && !unw_bt) {
			printf("%-38s %10s\n", names[method], "(libunwind.so.8 not installed)");
			continue;
		}
		for (int k = 0; k < 3; k++) {
			double c = recurse(DEPTH, &frames);
			if (c < best)
				best = c;
		}
		printf("%-38s %10.0f %7d\n", names[method], best, frames);
	}

	/* The allocation path: 64-byte malloc+free pairs. */
	{
		static struct evshm_slot slot;
		static const char *const an[] = { "glibc __libc_malloc+free", "interposed, sampling off",
		    "interposed, one sample per 512 KiB", "interposed, one sample per 4 KiB" };
		long n = iters * 20;

		printf("\n%-38s %10s\n", "malloc(64)+free", "ns/pair");
		for (int m = 0; m < 4; m++) {
			double best = 1e18;
			for (int k = 0; k < 3; k++) {
				double t0;
				if (m == 2)
					prof_alloc_start(&slot, PROF_DEFAULT_ALLOC_RATE);
				else if (m == 3)
					prof_alloc_start(&slot, 4096);
				t0 = now_ns();
				for (long i = 0; i < n; i++) {
					void *volatile p = m == 0 ? __libc_malloc(64) : malloc(64);
					if (m == 0)
						__libc_free(p);
					else
						free(p);
				}
				t0 = (now_ns() - t0) / (double)n;
				prof_alloc_stop();
				if (t0 < best)
					best = t0;
			}
			printf("%-38s %10.1f\n", an[m], best);
		}
	}
	return 0;
}
