/*
 * shm.h - eventodbd's side of the shared-memory segment (layout.h).
 *
 * The master creates the segment before forking, claims a slot for each
 * worker it forks, and on reaping one folds its counters into the
 * retired totals and clears the slot.  A worker attaches to its slot
 * right after the fork and from then on publishes with the SHM_* macros
 * below: each is a relaxed add to a word only this worker writes (no
 * lock, no syscall).  Building with -DEVSHM_NO_PUBLISH compiles them
 * away (bench/shm-cost measures the difference).
 *
 * Prefix: shm_ for functions, SHM_ for the publishing macros.
 */
#ifndef EVENTODB_SHM_H
#define EVENTODB_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "access.h"
#include "layout.h"
#include "meta.h"

/*
 * Where this process counts: its slot's stats in a worker that publishes,
 * private memory otherwise (master, unattached worker, --publish-counters
 * false), so call sites never test for a segment.
 */
extern struct evshm_stats *shm_stats;

#ifndef EVSHM_NO_PUBLISH
#define SHM_ADD(ctr, i, n)	evshm_add(&shm_stats->c.ctr[(i)], (uint64_t)(n))
#define SHM_SET(ctr, v)		evshm_store(&shm_stats->c.ctr[0], (uint64_t)(v))
#define SHM_OBSERVE(hist, i, ns) evshm_hist_observe(&shm_stats->h.hist[(i)], (ns))
#else
/* sizeof: the arguments count as used but are not evaluated. */
#define SHM_ADD(ctr, i, n)	((void)sizeof((i) + (n)))
#define SHM_SET(ctr, v)		((void)sizeof(v))
#define SHM_OBSERVE(hist, i, ns) ((void)sizeof((i) + (ns)))
#endif
#define SHM_INC(ctr)		SHM_ADD(ctr, 0, 1)
#define SHM_INC_AT(ctr, i)	SHM_ADD(ctr, i, 1)
#define SHM_GAUGE_ADD(ctr, d)	SHM_ADD(ctr, 0, (int64_t)(d))

/* ---- master ------------------------------------------------------------ */

struct shm_create_opts {
	const char	*name;		/* "" or NULL: "/eventodbd.<port>" */
	int		 port;
	int		 nworkers;	/* configured; the segment gets 2 slots per worker + 2 */
	int		 publish;	/* workers publish their counters */
	const char	*version;
};

/*
 * Create the segment: exclusive, mode 0600.  A segment of the same name
 * left by a master that is no longer running is removed first; one of a
 * running master, or one that is not an eventodbd segment, is an error.
 * Returns 0, or -1 with err filled.  Registers removal at exit (in this
 * process only, not in forked children).
 */
int shm_master_create(const struct shm_create_opts *o, char *err, size_t errlen);

/* Unlink and unmap (idempotent; only in the process that created it). */
void shm_master_remove(void);

/* Claim a free slot for worker number `worker` of generation `gen` before fork; -1 if none. */
int shm_master_claim(int worker, unsigned gen);
/* Record the pid after a successful fork. */
void shm_master_forked(int slot, pid_t pid);
/* Give a claimed slot back (fork failed). */
void shm_master_unclaim(int slot);
/*
 * A child was reaped: if it had a slot, log its crash report if any,
 * fold its counters into the retired totals and clear the slot.
 */
void shm_master_reaped(pid_t pid);
/* Publish the master's state name ("running", "draining", ...). */
void shm_master_set_state(const char *state);

/* The segment (NULL without one) and its name. */
struct evshm_hdr *shm_hdr(void);
const char *shm_segment_name(void);

/* ---- worker ------------------------------------------------------------ */

/*
 * In the worker right after fork: write-protect everything but the own
 * slot, and point shm_stats at the slot (if publishing).  slot < 0: no
 * slot; the worker counts privately.
 */
void shm_worker_attach(int slot);
/* The worker's own slot after shm_worker_attach(), NULL without one (the profiler writes there). */
struct evshm_slot *shm_own_slot(void);
void shm_worker_state(enum evshm_wstate state);
/* Heartbeat: called by a timer; lag = how late the timer fired. */
void shm_worker_heartbeat(uint64_t lag_ns, uint64_t oldest_req_ns);
/* Install the fatal-signal handler that writes the crash report (panic.c). */
void shm_panic_install(void);
/* Its one-time set-up, done by the master before forking workers. */
void shm_panic_prepare(void);
/* The worker's own slot, NULL before shm_worker_attach() (for panic.c). */
struct evshm_slot *shm_own_slot(void);

#endif
