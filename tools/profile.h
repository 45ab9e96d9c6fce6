/*
 * profile.h - profiles from the profiling areas of a segment's slots
 * (layout.h): CPU, heap, allocs and the worker-state dump.  Shared by
 * evdump (tools/evdump_profile.c) and a worker's /debug/pprof handler
 * (worker/debug_pprof.c), which read the same bytes the same way.
 *
 * Reading never blocks a worker: ring records and allocation buckets are
 * copied under their change counters and re-read (bounded) when torn.
 */
#ifndef EVENTODB_PROFILE_H
#define EVENTODB_PROFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct evshm_hdr;

#define PROFILE_ALL_WORKERS	(-1)

/*
 * Keep the parsed symbol tables between profiles (a worker serving
 * /debug/pprof: the mappings of one instance do not change; new worker
 * pids are added as they appear).  Off by default (evdump is one-shot).
 */
void profile_keep_symbols(int on);

enum profile_kind { PROFILE_HEAP, PROFILE_ALLOCS };

/*
 * Heap or allocs profile (the same four sample types in Go's order;
 * allocs defaults to alloc_space, heap to inuse_space) of every worker,
 * or of worker number `worker`.  Output as pprof_encode().  0, or -1
 * with err filled.
 */
int profile_heap(const struct evshm_hdr *hdr, enum profile_kind kind, int worker, int gzip,
    unsigned char **out, size_t *len, char *err, size_t errlen);

/*
 * CPU profile over a window: begin, poll at least every
 * PROFILE_CPU_POLL_MS (the rings hold about 5 s of a busy worker), end.
 */
#define PROFILE_CPU_POLL_MS	500

struct profile_cpu;
struct profile_cpu *profile_cpu_begin(const struct evshm_hdr *hdr, int worker);
void profile_cpu_poll(struct profile_cpu *c);
/* How often to poll: PROFILE_CPU_POLL_MS, less at high --profile-hz (a quarter ring). */
unsigned profile_cpu_poll_ms(const struct profile_cpu *c);
/* Poll a last time and encode; frees c.  0, or -1 with err filled. */
int profile_cpu_end(struct profile_cpu *c, int gzip, unsigned char **out, size_t *len,
    char *err, size_t errlen);
void profile_cpu_abort(struct profile_cpu *c);

/*
 * Worker-state dump as text (our analogue of Go's goroutine dump): each
 * worker's identity, state, heartbeat, connections, sampler statistics
 * and its most recent CPU sample, symbolised.
 */
int profile_workers_text(const struct evshm_hdr *hdr, int worker, FILE *out);

/*
 * The same as a pprof profile (sample type workers/count): one sample
 * per worker, its most recent CPU stack.
 */
int profile_workers_pprof(const struct evshm_hdr *hdr, int worker, int gzip,
    unsigned char **out, size_t *len, char *err, size_t errlen);

#endif
