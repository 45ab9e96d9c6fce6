/*
 * layout.h - the shared-memory segment of one eventodbd instance.
 *
 * The one definition of the segment's layout, used by eventodbd (the
 * master creates it, each worker writes its own slot, /metrics reads it)
 * and by evdump (reads it).  A separately built evdump must be able to
 * tell whether it understands a segment, hence the rules:
 *
 *   - fixed-width types only, explicit padding, a reserved tail in every
 *     area, offsets instead of pointers, every size pinned below by
 *     _Static_assert (and by t/70-shm.t through `evdump --layout`);
 *   - the 8-byte marker EVSHM_MAGIC carries the major version; major
 *     changes whenever a size or an offset changes; minor changes when a
 *     reserved field or a counter (counters.def) or a label (labels.def)
 *     is added: an older reader of the same major still reads what it
 *     knows;
 *   - the first 48 bytes of the header (magic .. master_start_ticks)
 *     never move, in any version, so that any eventodbd can tell whether
 *     a segment left behind belongs to a live master.
 *
 * Segment:
 *
 *   0                 struct evshm_hdr        one page, master-written
 *   retired_off       struct evshm_stats      totals of dead workers (master)
 *   slots_off         struct evshm_slot [nslots], each written by one worker
 *
 * Writers and readers (see access.h):
 *   - a counter is a naturally aligned uint64_t with a single writer; the
 *     writer adds with a relaxed load and store (no lock prefix), a
 *     reader loads it relaxed: a value is never torn;
 *   - groups that must be read together (a histogram; a slot's identity;
 *     its scoreboard; the retired totals with the slot resets) are
 *     guarded by a change counter that is odd while its writer updates;
 *     readers copy, re-check and retry a bounded number of times;
 *   - `ready` is stored last, with release ordering, once everything
 *     else is initialised.
 *
 * Slots are not tied to worker numbers: the master claims a free slot
 * for each fork, so two generations can overlap during a reload; there
 * are two slots per configured worker, and two more.  Identity = slot index + pid +
 * generation; the master clears a slot when it reaps its worker, after
 * folding its counters into the retired totals.
 */
#ifndef EVENTODB_SHM_LAYOUT_H
#define EVENTODB_SHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define EVSHM_MAGIC		"EVSHM-01"	/* 8 bytes, no NUL: bump with EVSHM_MAJOR */
#define EVSHM_MAGIC_PREFIX	"EVSHM-"	/* any version */
#define EVSHM_MAJOR		1
#define EVSHM_MINOR		5	/* 1.1: evshm_prof.cpu_sampler_ns, alloc_sampler_ns, alloc_samples; 1.2: write_batch* counters; 1.3: slot ns_drops; 1.4: db_recycled; 1.5: http_write_queued */

#define EVSHM_PAGE		4096u	/* areas start on multiples of this */

/* Label sets: the most labels each can ever hold (labels.def). */
#define EVSHM_none_MAX		1
#define EVSHM_method_MAX	24
#define EVSHM_endpoint_MAX	16
#define EVSHM_status_MAX	32
#define EVSHM_errcode_MAX	32

enum evshm_method {
#define EVSHM_METHOD(id, text)	EVSHM_M_##id,
#include "labels.def"
	EVSHM_method_N
};
enum evshm_endpoint {
#define EVSHM_ENDPOINT(id, text) EVSHM_EP_##id,
#include "labels.def"
	EVSHM_endpoint_N
};
enum evshm_status {
#define EVSHM_STATUS(id, text)	EVSHM_ST_##id,
#include "labels.def"
	EVSHM_status_N
};
enum evshm_errcode {
#define EVSHM_ERRCODE(id, text)	EVSHM_E_##id,
#include "labels.def"
	EVSHM_errcode_N
};
#define EVSHM_none_N		1

_Static_assert(EVSHM_method_N <= EVSHM_method_MAX, "too many methods in labels.def");
_Static_assert(EVSHM_endpoint_N <= EVSHM_endpoint_MAX, "too many endpoints in labels.def");
_Static_assert(EVSHM_status_N <= EVSHM_status_MAX, "too many statuses in labels.def");
_Static_assert(EVSHM_errcode_N <= EVSHM_errcode_MAX, "too many error codes in labels.def");

/*
 * Latency histogram: log-linear buckets of nanoseconds, 16 per power of
 * two, so a bucket is at most 1/16 of its values wide (a percentile read
 * from it is within about 3 %).  Buckets hold (lower, upper] like
 * Prometheus' `le`:
 *   0 .. 15       (64 i, 64 (i + 1)] ns: 0 to 1.024 us, linear
 *   16 .. 431     2^e < v <= 2^(e+1) for e = 10 .. 35, 16 sub-buckets each
 *   432           above 2^36 ns (68.7 s)
 */
#define EVSHM_HIST_SUB_BITS	4
#define EVSHM_HIST_SUB		(1u << EVSHM_HIST_SUB_BITS)
#define EVSHM_HIST_MIN_SHIFT	10
#define EVSHM_HIST_MAX_SHIFT	36
#define EVSHM_HIST_OVERFLOW \
	(EVSHM_HIST_SUB + (EVSHM_HIST_MAX_SHIFT - EVSHM_HIST_MIN_SHIFT) * EVSHM_HIST_SUB)
#define EVSHM_HIST_USED		(EVSHM_HIST_OVERFLOW + 1)	/* 433 */
#define EVSHM_HIST_BUCKETS	444				/* with a reserved tail */

struct evshm_hist {
	uint64_t	seq;		/*    0 change counter, odd while updating */
	uint64_t	count;		/*    8 observations (= sum of the buckets) */
	uint64_t	sum_ns;		/*   16 sum of the observed values */
	uint64_t	reserved;	/*   24 */
	uint64_t	bucket[EVSHM_HIST_BUCKETS];	/* 32 */
};

/* The counters of counters.def, one uint64_t per label. */
struct evshm_counters {
#define EVSHM_COUNTER(name, kind, unit, labels, desc) uint64_t name[EVSHM_##labels##_MAX];
#include "counters.def"
};

/* The histograms of counters.def, one per label. */
struct evshm_hists {
#define EVSHM_HISTOGRAM(name, unit, labels, desc) struct evshm_hist name[EVSHM_##labels##_MAX];
#include "counters.def"
};

#define EVSHM_COUNTERS_AREA	4096u	/* bytes: room for 512 counters */
#define EVSHM_HIST_SLOTS	32u	/* histograms */

/* Everything a worker counts; also the layout of the retired totals. */
struct evshm_stats {
	union {
		struct evshm_counters c;
		uint64_t	 c_raw[EVSHM_COUNTERS_AREA / 8];
	};
	union {
		struct evshm_hists h;
		struct evshm_hist h_raw[EVSHM_HIST_SLOTS];
	};
};

/* Worker states in the scoreboard. */
enum evshm_wstate {
	EVSHM_W_EMPTY = 0,	/* slot free */
	EVSHM_W_FORKED,		/* claimed by the master, worker not yet running */
	EVSHM_W_STARTING,	/* worker initialising (database pool, caches) */
	EVSHM_W_READY,		/* serving */
	EVSHM_W_DRAINING,	/* stopping: finishing requests in flight */
	EVSHM_W_STOPPED,	/* left its loop; about to exit */
	EVSHM_W_NSTATES
};

#define EVSHM_PANIC_SIZE	1024u

/*
 * Profiling areas (filled by the sampling profiler of a later version;
 * defined now so that it needs no layout change).
 *
 * CPU samples: a ring of EVSHM_CPU_RING records at 100 Hz (about 5 s).
 * The worker writes record seq % EVSHM_CPU_RING, storing its `seq` last
 * (release); `cpu_head` is the next seq to be written.  A reader that
 * finds a record's seq different from the one it expects was overrun
 * and resynchronises from cpu_head.
 */
#define EVSHM_CPU_RING		512u
#define EVSHM_CPU_DEPTH		60u

struct evshm_cpu_sample {
	uint64_t	seq;		/*   0 sample number + 1 (0 = never written) */
	uint64_t	t_mono_ns;	/*   8 CLOCK_MONOTONIC when taken */
	uint64_t	weight_ns;	/*  16 CPU time this sample stands for */
	uint16_t	depth;		/*  24 frames in pc[] */
	uint16_t	state;		/*  26 what the worker was doing (reserved) */
	uint32_t	reserved;	/*  28 */
	uint64_t	pc[EVSHM_CPU_DEPTH];	/*  32 return addresses, innermost first */
};

/*
 * Allocation samples: a table of call stacks (one sample per 512 KiB
 * allocated on average), each with Go's four sums, so a heap profile
 * (in use = alloc - free) and an allocs profile can be built from it.
 * Each entry is guarded by its own change counter.
 */
#define EVSHM_ALLOC_BUCKETS	1024u
#define EVSHM_ALLOC_DEPTH	32u

struct evshm_alloc_bucket {
	uint64_t	seq;		/*   0 change counter */
	uint64_t	stack_hash;	/*   8 0 = unused entry */
	uint64_t	alloc_objects;	/*  16 estimated, scaled from the samples */
	uint64_t	alloc_bytes;	/*  24 */
	uint64_t	free_objects;	/*  32 */
	uint64_t	free_bytes;	/*  40 */
	uint16_t	depth;		/*  48 */
	uint16_t	reserved16;	/*  50 */
	uint32_t	reserved32;	/*  52 */
	uint64_t	reserved;	/*  56 */
	uint64_t	pc[EVSHM_ALLOC_DEPTH];	/*  64 */
};

/* Profiling state of a slot (inside the slot head). */
struct evshm_prof {
	uint64_t	cpu_head;	/*   0 next CPU sample seq (worker) */
	uint32_t	cpu_hz;		/*   8 sampling rate, 0 = off */
	uint32_t	alloc_rate;	/*  12 mean bytes between allocation samples, 0 = off */
	uint64_t	alloc_used;	/*  16 entries of alloc[] in use */
	uint64_t	alloc_dropped;	/*  24 samples lost to a full table */
	uint64_t	text_start;	/*  32 executable mapping of the worker, for symbols */
	uint64_t	text_end;	/*  40 */
	uint64_t	text_offset;	/*  48 file offset of text_start */
	/* -- issue 5 (sampling profiler), layout 1.1: what sampling cost this worker -- */
	uint64_t	cpu_sampler_ns;	/*  56 CPU time spent in the SIGPROF handler */
	uint64_t	alloc_sampler_ns; /* 64 CPU time spent recording allocation samples */
	uint64_t	alloc_samples;	/*  72 allocations sampled */
	uint64_t	reserved[6];	/*  80 */
};

/*
 * A slot's head: identity (master), scoreboard (worker), crash report
 * (worker's fatal-signal handler, read by the master after waitpid),
 * profiling state.
 */
struct evshm_slot_head {
	/* Identity, written by the master under ident_seq. */
	uint64_t	ident_seq;	/*    0 */
	int32_t		pid;		/*    8 0 = empty */
	uint32_t	gen;		/*   12 generation it was forked in */
	uint32_t	worker;		/*   16 worker number */
	uint32_t	index;		/*   20 this slot's index (constant) */
	uint64_t	fork_unix_ns;	/*   24 */
	/* Scoreboard, written by the worker under sb_seq. */
	uint64_t	sb_seq;		/*   32 */
	uint32_t	state;		/*   40 enum evshm_wstate */
	uint32_t	publishing;	/*   44 1 if stats are published here */
	uint64_t	state_unix_ns;	/*   48 when it entered that state */
	uint64_t	ready_unix_ns;	/*   56 when it started serving */
	uint64_t	heartbeat_mono_ns; /* 64 CLOCK_MONOTONIC of the last heartbeat */
	uint64_t	heartbeat_unix_ns; /* 72 */
	uint64_t	heartbeats;	/*   80 */
	uint64_t	loop_lag_ns;	/*   88 how late the last heartbeat timer fired */
	uint64_t	oldest_req_ns;	/*   96 age of the oldest request in a handler */
	uint64_t	ns_drops;	/*  104 namespaces this worker deleted (nscache.c) */
	uint64_t	reserved_sb[2];	/*  112 */
	/* Crash report. */
	uint32_t	panic_len;	/*  128 bytes in panic[], 0 = none */
	int32_t		panic_signo;	/*  132 */
	char		panic[EVSHM_PANIC_SIZE];	/* 136 NUL-terminated text */
	struct evshm_prof prof;		/* 1160 */
};

/* Slot: head page, stats, CPU ring, allocation table. */
struct evshm_slot {
	union {
		struct evshm_slot_head hd;
		uint8_t		 hd_raw[EVSHM_PAGE];
	};
	struct evshm_stats stats;
	struct evshm_cpu_sample cpu[EVSHM_CPU_RING];
	struct evshm_alloc_bucket alloc[EVSHM_ALLOC_BUCKETS];
};

/* The header page. */
struct evshm_hdr {
	/* Never moves (see the top of this file). */
	char		magic[8];	/*    0 EVSHM_MAGIC */
	uint16_t	major;		/*    8 */
	uint16_t	minor;		/*   10 */
	uint32_t	hdr_size;	/*   12 sizeof(struct evshm_hdr) */
	uint64_t	seg_size;	/*   16 the whole segment */
	int32_t		master_pid;	/*   24 */
	uint32_t	ready;		/*   28 0 until initialised (stored last) */
	uint64_t	master_start_unix_ns;	/* 32 */
	uint64_t	master_start_ticks;	/* 40 start time in /proc/PID/stat: tells a reused pid apart */
	/* Master-written, under seq: retired totals, slot resets, state. */
	uint64_t	seq;		/*   48 */
	uint32_t	slot_size;	/*   56 sizeof(struct evshm_slot) */
	uint32_t	nslots;		/*   60 */
	uint64_t	slots_off;	/*   64 */
	uint64_t	retired_off;	/*   72 */
	uint32_t	stats_size;	/*   80 sizeof(struct evshm_stats) */
	uint32_t	nworkers;	/*   84 configured workers */
	uint32_t	generation;	/*   88 newest generation forked */
	uint32_t	port;		/*   92 */
	uint64_t	retired_workers; /*  96 workers folded into the retired totals */
	uint32_t	counters_size;	/*  104 bytes of struct evshm_counters in use */
	uint32_t	nhist;		/*  108 histograms in use */
	uint32_t	hist_buckets;	/*  112 EVSHM_HIST_USED */
	uint32_t	flags;		/*  116 EVSHM_F_* */
	char		master_state[16]; /* 120 NUL-terminated */
	char		name[128];	/*  136 segment name, NUL-terminated */
	char		version[32];	/*  264 eventodbd version, NUL-terminated */
	uint8_t		reserved[EVSHM_PAGE - 296];	/* 296 */
};

#define EVSHM_F_PUBLISHING	0x1u	/* workers publish their counters */

/*
 * Pinned sizes and offsets: if one of these fails, the layout changed:
 * bump EVSHM_MAJOR and the digits of EVSHM_MAGIC, then update the numbers
 * here and in t/70-shm.t.
 */
_Static_assert(sizeof(struct evshm_hist) == 3584, "evshm_hist size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_counters) <= EVSHM_COUNTERS_AREA, "counters.def outgrew EVSHM_COUNTERS_AREA");
_Static_assert(sizeof(struct evshm_hists) <= EVSHM_HIST_SLOTS * sizeof(struct evshm_hist),
    "counters.def has more than EVSHM_HIST_SLOTS histograms");
_Static_assert(EVSHM_HIST_USED <= EVSHM_HIST_BUCKETS, "histogram buckets do not fit");
_Static_assert(sizeof(struct evshm_stats) == 118784, "evshm_stats size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_stats) % EVSHM_PAGE == 0, "evshm_stats must be whole pages");
_Static_assert(sizeof(struct evshm_cpu_sample) == 512, "evshm_cpu_sample size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_alloc_bucket) == 320, "evshm_alloc_bucket size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_prof) == 128, "evshm_prof size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_slot_head) == 1288, "evshm_slot_head size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_slot_head) <= EVSHM_PAGE, "slot head outgrew its page");
_Static_assert(offsetof(struct evshm_slot, stats) == 4096, "slot stats moved: bump EVSHM version");
_Static_assert(offsetof(struct evshm_slot, cpu) == 122880, "slot cpu ring moved: bump EVSHM version");
_Static_assert(offsetof(struct evshm_slot, alloc) == 385024, "slot alloc table moved: bump EVSHM version");
_Static_assert(sizeof(struct evshm_slot) == 712704, "evshm_slot size changed: bump EVSHM version");
_Static_assert(sizeof(struct evshm_slot) % EVSHM_PAGE == 0, "evshm_slot must be whole pages");
_Static_assert(sizeof(struct evshm_hdr) == EVSHM_PAGE, "evshm_hdr must be one page");
_Static_assert(offsetof(struct evshm_hdr, master_pid) == 24, "the first 48 header bytes never move");
_Static_assert(offsetof(struct evshm_hdr, ready) == 28, "the first 48 header bytes never move");
_Static_assert(offsetof(struct evshm_hdr, master_start_ticks) == 40, "the first 48 header bytes never move");
_Static_assert(offsetof(struct evshm_hdr, seq) == 48, "evshm_hdr changed: bump EVSHM version");
_Static_assert(offsetof(struct evshm_hdr, master_state) == 120, "evshm_hdr changed: bump EVSHM version");
_Static_assert(offsetof(struct evshm_hdr, reserved) == 296, "evshm_hdr changed: bump EVSHM version");
_Static_assert(offsetof(struct evshm_slot_head, panic) == 136, "evshm_slot_head changed: bump EVSHM version");
_Static_assert(offsetof(struct evshm_slot_head, prof) == 1160, "evshm_slot_head changed: bump EVSHM version");

/* Where things are, from the header (sizes already validated). */
#define EVSHM_RETIRED(hdr) \
	((struct evshm_stats *)((char *)(hdr) + (hdr)->retired_off))
#define EVSHM_SLOT(hdr, i) \
	((struct evshm_slot *)((char *)(hdr) + (hdr)->slots_off + (size_t)(i) * (hdr)->slot_size))

/* Segment size for n slots. */
#define EVSHM_SEG_SIZE(n) \
	((uint64_t)EVSHM_PAGE + sizeof(struct evshm_stats) + (uint64_t)(n) * sizeof(struct evshm_slot))

#endif
