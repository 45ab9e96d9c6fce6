/*
 * meta.h - what the numbers in the segment mean: the counter and
 * histogram tables of counters.def, the label sets of labels.def, and
 * histogram arithmetic.  Shared by eventodbd (/metrics, the publishing
 * call sites) and evdump.
 */
#ifndef EVENTODB_SHM_META_H
#define EVENTODB_SHM_META_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

enum shm_kind { SHM_COUNTER, SHM_GAUGE };

enum shm_dim { SHM_DIM_none, SHM_DIM_method, SHM_DIM_endpoint, SHM_DIM_status,
	SHM_DIM_errcode, SHM_NDIMS };

struct shm_labelset {
	const char	*set;		/* "method" */
	const char	*prom;		/* Prometheus label name, "" for none */
	const char *const *labels;
	unsigned	 n;		/* labels known to this build */
	unsigned	 max;		/* room in the layout */
};

struct shm_counter_meta {
	const char	*name;
	enum shm_kind	 kind;
	const char	*unit;
	enum shm_dim	 dim;
	const char	*desc;
	unsigned	 word;		/* index of label 0 in stats.c_raw[] */
};

struct shm_hist_meta {
	const char	*name;
	const char	*unit;
	enum shm_dim	 dim;
	const char	*desc;
	unsigned	 first;		/* index of label 0 in stats.h_raw[] */
};

extern const struct shm_labelset shm_dims[SHM_NDIMS];
extern const struct shm_counter_meta shm_counters[];
extern const unsigned shm_ncounters;
extern const struct shm_hist_meta shm_hists[];
extern const unsigned shm_nhists;

/* Label text of index i of a set; "#i" (in buf) for labels this build does not know. */
const char *shm_label(enum shm_dim d, unsigned i, char *buf, size_t len);
/* Index of a label by text, or 0 ("other"). */
unsigned shm_label_index(enum shm_dim d, const char *text);

/* Lookups used by the publishing call sites (all return 0 = other when unknown). */
unsigned shm_status_index(int status);
unsigned shm_errcode_index(const char *code);
unsigned shm_endpoint_index(const char *path);

/* Find a counter or histogram by name; NULL if unknown. */
const struct shm_counter_meta *shm_counter_find(const char *name);
const struct shm_hist_meta *shm_hist_find(const char *name);

/* Bucket bounds in ns: bucket i holds (lower, upper]; the overflow bucket's upper is UINT64_MAX. */
uint64_t shm_hist_lower_ns(unsigned i);
uint64_t shm_hist_upper_ns(unsigned i);
/*
 * Quantile q (0..1) of a histogram copy, in ns, interpolated within its
 * bucket; 0 when empty.  mean: sum / count.
 */
double shm_hist_quantile_ns(const struct evshm_hist *h, double q);
/* Largest value the histogram may hold: upper bound of the highest non-empty bucket. */
uint64_t shm_hist_max_ns(const struct evshm_hist *h);

const char *shm_wstate_name(uint32_t state);

/* "/eventodbd.PORT": the segment name of an instance by default. */
void shm_default_name(int port, char *buf, size_t len);

/*
 * 1 if pid is a running process whose start time (field 22 of
 * /proc/PID/stat, clock ticks since boot) is `ticks` (0: not checked);
 * a pid reused by another process counts as not running.
 */
int shm_pid_running(int32_t pid, uint64_t ticks);
/* Start time of a process in clock ticks since boot, 0 if unknown. */
uint64_t shm_proc_start_ticks(int32_t pid);

#endif
