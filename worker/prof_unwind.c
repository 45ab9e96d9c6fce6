/*
 * prof_unwind.c - stack capture for the samplers (prof.h).
 *
 * Why libgcc's _Unwind_Backtrace (what glibc's backtrace() wraps), called
 * directly:
 *   - Debian's libevent, json-c and libc are built without frame
 *     pointers, so a frame-pointer walk stops at the first library frame:
 *     from a malloc() inside json-c it returns one frame and loses the
 *     allocation site in our code.  _Unwind_Backtrace reads .eh_frame
 *     (-fasynchronous-unwind-tables is the default on x86-64, so the
 *     tables are exact at every instruction) and walks the whole chain,
 *     through the kernel's signal frame too;
 *   - it finds the unwind table of a pc with glibc 2.35+'s
 *     _dl_find_object, which takes no lock on its normal path, so it may
 *     run in a SIGPROF handler; libunwind 1.6 uses dl_iterate_phdr (the
 *     loader lock) and its -dev package conflicts with libc++-dev here;
 *   - referencing it directly links libgcc_s.so.1 at start-up, so there
 *     is no lazy dlopen (and malloc) on the first call as with
 *     backtrace(); prof_init() still makes one call before anything is
 *     armed, to run libgcc's one-time initialisation outside a handler.
 * Cost (bench/sampler_cost; Debian 12 VM, 25 frames): frame pointers
 * ~20 ns but truncated; _Unwind_Backtrace ~3.5 us hot, ~40 us with cold
 * caches, which is what a sample in a busy worker meets (libunwind:
 * ~0.2 us hot, ~85 us cold).  In eventodbd under the default load the
 * samplers account for themselves at about 1 % of a worker's CPU
 * (evdump profile workers, "sampling cost"); prof_anchor() saves the six
 * frames beneath the event loop.  libunwind would not be cheaper cold,
 * takes the loader lock in a signal handler, and is not installable here
 * beside libc++-dev.
 *
 * Addresses are stored ready for symbolisation: a return address minus
 * one (inside the call instruction, so the line is the call's), the
 * interrupted pc of a signal frame as is.
 */
#include "config.h"

#include <stdint.h>
#include <unwind.h>

#include "prof.h"

struct unw_state {
	uint64_t	*pcs;
	int		 max;
	int		 n;
	int		 started;
	uintptr_t	 from;		/* skip until this return address */
	int		 signal;	/* skip until the signal frame */
	uintptr_t	 ip;		/* interrupted pc (signal) */
};

/*
 * The anchor (prof_anchor): the frame of the function that runs the
 * worker's event loop and never returns, identified by its CFA, and the
 * frames beneath it, which are the same in every sample.  Unwinding
 * stops there and appends the copy: a cold-cache unwind costs about
 * 1.5 us a frame here (bench/sampler_cost), and those are 6 of ~25.
 */
#define UNW_TAIL_MAX	16
static uintptr_t anchor_cfa;
static uint64_t anchor_tail[UNW_TAIL_MAX];
static int anchor_ntail;

static _Unwind_Reason_Code
unw_stop_at_anchor(struct _Unwind_Context *ctx, struct unw_state *s)
{
	if (!anchor_cfa || (uintptr_t)_Unwind_GetCFA(ctx) != anchor_cfa)
		return _URC_NO_REASON;
	for (int i = 0; i < anchor_ntail && s->n < s->max; i++)
		s->pcs[s->n++] = anchor_tail[i];
	return _URC_END_OF_STACK;
}

static _Unwind_Reason_Code
unw_cb(struct _Unwind_Context *ctx, void *arg)
{
	struct unw_state *s = arg;
	int before = 0;
	uintptr_t ip = (uintptr_t)_Unwind_GetIPInfo(ctx, &before);

	if (ip == 0)
		return _URC_END_OF_STACK;
	if (!s->started) {
		if (s->signal) {
			/* The interrupted frame is marked "ip before insn". */
			if (!before && ip != s->ip)
				return _URC_NO_REASON;
			s->started = 1;
			s->pcs[s->n++] = ip;
			if (s->n >= s->max)
				return _URC_END_OF_STACK;
			return unw_stop_at_anchor(ctx, s);
		}
		if (ip != s->from)
			return _URC_NO_REASON;
		s->started = 1;
	}
	s->pcs[s->n++] = before ? ip : ip - 1;
	if (s->n >= s->max)
		return _URC_END_OF_STACK;
	return unw_stop_at_anchor(ctx, s);
}

struct anchor_state {
	uintptr_t	 ra;		/* return address into the anchor function */
	int		 found;
};

static _Unwind_Reason_Code
anchor_cb(struct _Unwind_Context *ctx, void *arg)
{
	struct anchor_state *a = arg;
	uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);

	if (ip == 0)
		return _URC_END_OF_STACK;
	if (!a->found) {
		if (ip != a->ra)
			return _URC_NO_REASON;
		/* The anchor function's own frame: its CFA marks it; the tail starts below. */
		a->found = 1;
		anchor_cfa = (uintptr_t)_Unwind_GetCFA(ctx);
		return _URC_NO_REASON;
	}
	if (anchor_ntail >= UNW_TAIL_MAX)
		return _URC_END_OF_STACK;
	anchor_tail[anchor_ntail++] = ip - 1;
	return _URC_NO_REASON;
}

__attribute__((noinline)) void
prof_anchor(void)
{
	struct anchor_state a = { (uintptr_t)__builtin_return_address(0), 0 };

	prof_init();
	anchor_cfa = 0;
	anchor_ntail = 0;
	_Unwind_Backtrace(anchor_cb, &a);
	if (!a.found) {
		anchor_cfa = 0;
		anchor_ntail = 0;
	}
}

__attribute__((noinline)) int
prof_backtrace(uint64_t *pcs, int max, uintptr_t from)
{
	struct unw_state s = { pcs, max, 0, from == 0, from, 0, 0 };

	if (max <= 0)
		return 0;
	_Unwind_Backtrace(unw_cb, &s);
	if (!s.started && from) {
		/* `from` not seen (a tail call?): keep the whole stack. */
		s = (struct unw_state){ pcs, max, 0, 1, 0, 0, 0 };
		_Unwind_Backtrace(unw_cb, &s);
	}
	return s.n;
}

__attribute__((noinline)) int
prof_backtrace_signal(uint64_t *pcs, int max, uintptr_t ip)
{
	struct unw_state s = { pcs, max, 0, 0, 0, 1, ip };

	if (max <= 0)
		return 0;
	_Unwind_Backtrace(unw_cb, &s);
	if (!s.started && ip) {
		pcs[0] = ip;
		return 1;
	}
	return s.n;
}

void
prof_init(void)
{
	uint64_t pcs[8];

	(void)prof_backtrace(pcs, 8, 0);
}
