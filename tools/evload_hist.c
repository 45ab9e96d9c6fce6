/*
 * evload_hist.c - log-linear latency histogram for evload.
 *
 * Bucket layout (values v in whole microseconds):
 *   v < 2048:           bucket v (1 us resolution)
 *   2^m <= v < 2^(m+1): 1024 equal buckets per power of two, m = 11..26,
 *                       so the width is 2^(m-10) us, under 0.1 % of v
 *   v >= 2^27:          the last bucket
 * Recording is a shift, a count-leading-zeros and an add: no allocation,
 * no floating point.  A percentile is reported as the upper edge of the
 * bucket that holds it (never below the true value), capped by the exact
 * maximum; mean, min and max are exact.
 */
#include "config.h"

#include <string.h>

#include "evload.h"

static unsigned
bucket_of(uint64_t us)
{
	unsigned msb;

	if (us < EVL_HIST_EXACT)
		return (unsigned)us;
	msb = 63u - (unsigned)__builtin_clzll(us);
	if (msb > EVL_HIST_TOP_MSB)
		return EVL_HIST_BUCKETS - 1;
	return EVL_HIST_EXACT + (msb - EVL_HIST_SUB_BITS - 1) * EVL_HIST_SUB +
	    (unsigned)((us >> (msb - EVL_HIST_SUB_BITS)) - EVL_HIST_SUB);
}

/* Exclusive upper edge of bucket i, in microseconds. */
static uint64_t
bucket_upper_us(unsigned i)
{
	unsigned grp, sub, shift;

	if (i < EVL_HIST_EXACT)
		return (uint64_t)i + 1;
	grp = (i - EVL_HIST_EXACT) / EVL_HIST_SUB;	/* 0 for msb 11 */
	sub = (i - EVL_HIST_EXACT) % EVL_HIST_SUB;
	shift = grp + 1;				/* msb - 10 */
	return ((uint64_t)EVL_HIST_SUB + sub + 1) << shift;
}

void
evl_hist_reset(struct evl_hist *h)
{
	memset(h, 0, sizeof(*h));
}

void
evl_hist_record(struct evl_hist *h, uint64_t ns)
{
	h->bucket[bucket_of(ns / 1000)]++;
	if (h->count == 0 || ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
	h->count++;
	h->sum_ns += ns;
}

void
evl_hist_merge(struct evl_hist *dst, const struct evl_hist *src)
{
	unsigned i;

	if (src->count == 0)
		return;
	for (i = 0; i < EVL_HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	if (dst->count == 0 || src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
}

/*
 * Nearest rank: the smallest value with at least ceil(pct/100 * count)
 * samples at or below it.  0 for an empty histogram.
 */
uint64_t
evl_hist_percentile_ns(const struct evl_hist *h, double pct)
{
	uint64_t rank, seen = 0, v;
	double r;
	unsigned i;

	if (h->count == 0)
		return 0;
	r = pct / 100.0 * (double)h->count;
	rank = (uint64_t)r;
	if ((double)rank < r)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	for (i = 0; i < EVL_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank)
			break;
	}
	if (i >= EVL_HIST_BUCKETS)
		return h->max_ns;
	v = bucket_upper_us(i) * 1000;
	if (v > h->max_ns)
		v = h->max_ns;
	if (v < h->min_ns)
		v = h->min_ns;
	return v;
}

double
evl_hist_mean_ns(const struct evl_hist *h)
{
	return h->count ? (double)h->sum_ns / (double)h->count : 0.0;
}
