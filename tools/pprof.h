/*
 * pprof.h - build a profile in pprof's protobuf format (profile.proto,
 * google/pprof), gzip-compressed like Go's runtime/pprof.
 *
 * Add samples (stacks of addresses, innermost first, with one value per
 * sample type); identical stacks (and labels) are merged.  On encoding,
 * every distinct address becomes a Location, symbolised through a
 * sym_ctx into a Function with its name, and each executable mapping a
 * Mapping with has_functions set, so readers (go tool pprof, speedscope)
 * need neither the binary nor a symbolizer.
 */
#ifndef EVENTODB_PPROF_H
#define EVENTODB_PPROF_H

#include <stddef.h>
#include <stdint.h>

struct pprof;
struct sym_ctx;

#define PPROF_MAX_TYPES	4
#define PPROF_MAX_DEPTH	128

struct pprof *pprof_new(void);
void pprof_free(struct pprof *p);

/* Sample types, in order (Go's: alloc_objects/count, alloc_space/bytes, ...). */
void pprof_sample_type(struct pprof *p, const char *type, const char *unit);
void pprof_period(struct pprof *p, const char *type, const char *unit, int64_t period);
/* Default sample type by name (unset: readers take the last one). */
void pprof_default_type(struct pprof *p, const char *type);
void pprof_times(struct pprof *p, int64_t time_nanos, int64_t duration_nanos);
void pprof_comment(struct pprof *p, const char *text);
/* Regex (anchored by readers) of frames to drop with everything beneath them. */
void pprof_drop_frames(struct pprof *p, const char *regex);

/*
 * One sample: n addresses innermost first, values[] one per sample type.
 * label_key/num/unit: an optional numeric label (Go puts "bytes" on heap
 * samples); NULL for none.  Samples with the same stack and label merge.
 * Returns 0, -1 on allocation failure.
 */
int pprof_add(struct pprof *p, const uint64_t *addrs, int n, const int64_t *values,
    const char *label_key, int64_t label_num, const char *label_unit);

/*
 * Encode (symbolising with s, which may be NULL) into a malloc'ed buffer;
 * gzip: 1 for gzip (Go's format), 0 for the raw protobuf.  Returns 0 or -1.
 */
int pprof_encode(struct pprof *p, struct sym_ctx *s, int gzip, unsigned char **out, size_t *len);

/* Samples held (after merging). */
size_t pprof_nsamples(const struct pprof *p);

#endif
