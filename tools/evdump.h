/*
 * evdump.h - shared declarations of evdump, the segment reader.
 *
 *   evdump.c       command line, attaching, the text views (counters,
 *                  latency, workers, rates), --layout, --man-counters
 *   evdump_json.c  the JSON documents: snapshots (written and read back
 *                  for `evdump diff`), rates, layout
 *
 * Prefix: evd_.
 */
#ifndef EVDUMP_H
#define EVDUMP_H

#include <stdint.h>
#include <stdio.h>

#include "layout.h"
#include "reader.h"

/* Exit codes (documented in evdump(1)). */
#define EVD_EXIT_OK		0
#define EVD_EXIT_ERROR		1	/* I/O error, bad snapshot file, out of memory */
#define EVD_EXIT_USAGE		2
#define EVD_EXIT_GONE		3	/* no segment, or its master is not running */
#define EVD_EXIT_NOT_READY	4
#define EVD_EXIT_VERSION	5	/* another layout version, or not an eventodbd segment */

/* The difference of two snapshots (b - a), as `evdump rates` and `diff` show it. */
struct evd_rates {
	const struct shm_snap *a, *b;
	double		 dt;		/* seconds between them */
	struct evshm_stats delta;	/* b.total - a.total (histograms: the interval's) */
	/* per slot of b: index into a.slots of the same worker (same pid and gen), or -1 */
	int		*prev;
};

int evd_rates_compute(struct evd_rates *r, const struct shm_snap *a, const struct shm_snap *b,
    char *err, size_t errlen);
void evd_rates_free(struct evd_rates *r);

/* JSON documents (evdump_json.c). */
void evd_json_snapshot(FILE *out, const struct shm_snap *s);
void evd_json_rates(FILE *out, const struct evd_rates *r);
void evd_json_layout(FILE *out);
/* Read a snapshot document written by evd_json_snapshot(); 0 or -1 (err filled). */
int evd_json_load(const char *path, struct shm_snap *s, char *err, size_t errlen);

/*
 * `evdump profile ...` (evdump_profile.c): argv[0] is "profile"; out is
 * the global --output, or NULL.  Returns the exit code.
 */
int evd_profile(const struct evshm_hdr *hdr, int argc, char **argv, const char *out);

/* Helpers shared by both files. */
double evd_pct(const struct evshm_hist *h, double q);
void evd_fmt_ns(double ns, char *buf, size_t len);

/* The layout table (struct, field, offset, size) printed by --layout. */
struct evd_field {
	const char	*strct;
	const char	*field;		/* NULL: the struct's own size row */
	size_t		 off, size;
};
extern const struct evd_field evd_layout[];
extern const unsigned evd_nlayout;

#endif
