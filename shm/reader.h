/*
 * reader.h - reading a segment without disturbing its writers.
 *
 * Used by evdump (attaches read-only by name) and by a worker's
 * /metrics (reads the mapping it inherited).  A reader never locks and
 * never writes: it copies under the change counters of access.h and
 * retries a bounded number of times, counting what it had to give up on.
 */
#ifndef EVENTODB_SHM_READER_H
#define EVENTODB_SHM_READER_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

/* Results of shm_reader_open(); evdump's exit codes are derived from them. */
enum shm_attach {
	SHM_ATTACHED = 0,
	SHM_GONE,		/* no such segment */
	SHM_NOT_READY,		/* exists, not initialised (yet) */
	SHM_BAD_VERSION,	/* an eventodbd segment of another layout version */
	SHM_FOREIGN,		/* not an eventodbd segment, or inconsistent sizes */
	SHM_ERROR		/* permission denied, or a system error */
};

struct shm_reader {
	const struct evshm_hdr *hdr;
	size_t		 size;
	int		 owned;		/* mapped by shm_reader_open: unmap on close */
	char		 name[256];
	uint16_t	 major, minor;	/* of the segment (also when BAD_VERSION) */
};

/*
 * Attach read-only (O_RDONLY, PROT_READ) to segment `name`, waiting up
 * to wait_s seconds for it to become ready.  Fills err with a message
 * for the operator on failure.
 */
enum shm_attach shm_reader_open(struct shm_reader *r, const char *name, double wait_s,
    char *err, size_t errlen);
/* Use an existing mapping (a worker's), trusted to be valid. */
void shm_reader_from_base(struct shm_reader *r, const void *base);
void shm_reader_close(struct shm_reader *r);

/* One worker slot as copied. */
struct shm_snap_slot {
	uint32_t	 index, worker, gen, state, publishing;
	int32_t		 pid;
	int		 alive;		/* the pid is a running process */
	uint64_t	 fork_unix_ns, state_unix_ns, ready_unix_ns;
	uint64_t	 heartbeat_mono_ns, heartbeat_unix_ns, heartbeats;
	uint64_t	 loop_lag_ns, oldest_req_ns;
	uint32_t	 hists;		/* bit i: stats.h_raw[i] is in use (the others are zero) */
	struct evshm_stats stats;
};

struct shm_snap {
	char		 name[128], version[32], master_state[16];
	uint16_t	 major, minor;
	int32_t		 master_pid;
	int		 master_alive;
	uint64_t	 master_start_unix_ns;
	uint32_t	 nworkers, generation, port, nslots, flags;
	uint64_t	 retired_workers;
	uint64_t	 taken_unix_ns, taken_mono_ns;	/* when the copy was made */
	uint64_t	 took_ns;	/* how long it took (wall clock) */
	uint64_t	 took_cpu_ns;	/* CPU time it took (without waiting for a CPU) */
	unsigned	 retries;	/* group copies that had to be repeated */
	unsigned	 torn;		/* groups given up on after EVSHM_READ_RETRIES */
	uint32_t	 retired_hists;	/* histograms of `retired` in use */
	struct evshm_stats retired;	/* dead workers' counters */
	struct evshm_stats total;	/* retired + every slot in use */
	unsigned	 nused;		/* slots in use, in slots[] by index */
	struct shm_snap_slot *slots;
	int		 used_before;	/* s holds an earlier snapshot */
};

/*
 * Copy the segment; 0, or -1 (out of memory).  Free with shm_snap_free().
 * s must be zeroed memory (calloc) or a snapshot taken before; fresh
 * memory is cheaper: pages of histograms not in use are never touched.
 */
int shm_snap_take(const struct shm_reader *r, struct shm_snap *s);
void shm_snap_free(struct shm_snap *s);

/*
 * dst += src, every counter, gauge and histogram; hists: bit i set if
 * src->h_raw[i] may be in use (UINT32_MAX: look at all of them).
 */
void shm_stats_add(struct evshm_stats *dst, const struct evshm_stats *src, uint32_t hists);

uint64_t shm_now_ns(int monotonic);

#endif
