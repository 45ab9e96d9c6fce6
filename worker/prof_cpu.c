/*
 * prof_cpu.c - CPU sampling of a worker into its slot's CPU ring.
 *
 * setitimer(ITIMER_PROF) counts the process's CPU time (user + system),
 * so an idle worker blocked in epoll_wait is not sampled: a sample means
 * "the worker was on a CPU here".  Workers are single-threaded, so the
 * process timer is the thread timer; timers are not inherited across
 * fork, each worker arms its own.
 *
 * The SIGPROF handler (SA_RESTART; epoll_wait still returns EINTR, which
 * libevent treats as a wake-up) unwinds the interrupted stack and writes
 * one record of the ring (layout.h): the record's seq is cleared, the
 * record written, then seq = n + 1 stored with release ordering, then
 * cpu_head = n + 1.  A reader copies a record between two loads of its
 * seq and drops it if either differs from what it expected (overrun).
 * No lock, no allocation, no stdio; errno is preserved.  The signal is
 * blocked while its handler runs, so records never interleave.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>

#include "layout.h"
#include "prof.h"

static struct evshm_slot *cpu_slot;
static uint64_t cpu_period_ns;

static void
cpu_sigprof(int signo, siginfo_t *si, void *ucv)
{
	struct evshm_slot *slot = cpu_slot;
	struct evshm_cpu_sample *rec;
	struct timespec ts, t0;
	uint64_t pcs[EVSHM_CPU_DEPTH], n, now;
	uintptr_t ip = 0;
	int saved = errno, depth;

	(void)signo;
	(void)si;
	if (!slot) {
		errno = saved;
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
#if defined(__x86_64__)
	if (ucv)
		ip = (uintptr_t)((ucontext_t *)ucv)->uc_mcontext.gregs[REG_RIP];
#endif
	depth = prof_backtrace_signal(pcs, EVSHM_CPU_DEPTH, ip);
	clock_gettime(CLOCK_MONOTONIC, &ts);

	n = __atomic_load_n(&slot->hd.prof.cpu_head, __ATOMIC_RELAXED);
	rec = &slot->cpu[n % EVSHM_CPU_RING];
	__atomic_store_n(&rec->seq, 0, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	rec->t_mono_ns = now;
	rec->weight_ns = cpu_period_ns;
	rec->depth = (uint16_t)depth;
	rec->state = 0;
	for (int i = 0; i < depth; i++)
		__atomic_store_n(&rec->pc[i], pcs[i], __ATOMIC_RELAXED);
	__atomic_store_n(&rec->seq, n + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&slot->hd.prof.cpu_head, n + 1, __ATOMIC_RELEASE);
	/*
	 * What this sample cost, by the monotonic clock (vDSO, ~45 ns; the
	 * thread CPU clock is a syscall, ~4 us on this kind of VM): a handler
	 * preempted meanwhile is over-charged, never under-charged.
	 */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	__atomic_store_n(&slot->hd.prof.cpu_sampler_ns, __atomic_load_n(&slot->hd.prof.cpu_sampler_ns,
	    __ATOMIC_RELAXED) + (uint64_t)(ts.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)ts.tv_nsec -
	    (uint64_t)t0.tv_nsec, __ATOMIC_RELAXED);
	errno = saved;
}

int
prof_cpu_start(struct evshm_slot *slot, int hz)
{
	struct sigaction sa;
	struct itimerval it;
	long usec;

	if (!slot || hz <= 0)
		return 0;
	if (hz > 1000)
		hz = 1000;
	usec = 1000000L / hz;
	cpu_period_ns = (uint64_t)usec * 1000u;
	cpu_slot = slot;
	__atomic_store_n(&slot->hd.prof.cpu_hz, (uint32_t)hz, __ATOMIC_RELAXED);

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = cpu_sigprof;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGPROF, &sa, NULL) < 0)
		return -1;
	memset(&it, 0, sizeof(it));
	it.it_interval.tv_usec = usec;
	it.it_value.tv_usec = usec;
	if (setitimer(ITIMER_PROF, &it, NULL) < 0)
		return -1;
	return 0;
}

void
prof_cpu_stop(void)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	(void)setitimer(ITIMER_PROF, &it, NULL);
	if (cpu_slot)
		__atomic_store_n(&cpu_slot->hd.prof.cpu_hz, 0, __ATOMIC_RELAXED);
	cpu_slot = NULL;
}
