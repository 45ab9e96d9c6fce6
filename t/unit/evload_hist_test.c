/*
 * evload_hist_test.c - unit tests for tools/evload_hist.c (evload's
 * latency histogram), TAP output.
 *
 * Checks the promises of evload(1): exact below 2.048 ms to 1 us, within
 * 0.1 % above, percentiles never below the true nearest-rank value and
 * capped by the exact maximum, exact count/mean/min/max, merging, and
 * values beyond the top bucket.  Exits non-zero if any test fails.
 */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/evload.h"
#include "tap.h"



static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* True nearest-rank percentile of sorted v[n]. */
static uint64_t
exact_pct(const uint64_t *v, size_t n, double pct)
{
	double r = pct / 100.0 * (double)n;
	size_t rank = (size_t)r;

	if ((double)rank < r)
		rank++;
	if (rank < 1)
		rank = 1;
	return v[rank - 1];
}

int
main(void)
{
	static struct evl_hist h, h2, m;
	static const double pcts[] = { 1, 10, 50, 90, 99, 99.9, 100 };
	uint64_t *v;
	size_t n, i, j;
	int bad;

	evl_hist_reset(&h);
	ok(evl_hist_percentile_ns(&h, 50) == 0 && evl_hist_mean_ns(&h) == 0.0,
	    "empty histogram: percentile and mean are 0");

	/* 1 us resolution below 2048 us: values 0..2047 us, each once */
	for (i = 0; i < 2048; i++)
		evl_hist_record(&h, i * 1000);
	ok(h.count == 2048, "count 2048");
	ok(h.min_ns == 0 && h.max_ns == 2047000, "exact min and max");
	ok(evl_hist_percentile_ns(&h, 50) == 1024000,
	    "p50 of 0..2047 us is the upper edge of the 1023 us bucket (1024 us): %llu",
	    (unsigned long long)evl_hist_percentile_ns(&h, 50));
	ok(evl_hist_percentile_ns(&h, 100) == 2047000, "p100 is capped by the maximum");
	ok(fabs(evl_hist_mean_ns(&h) - 1023500.0) < 1e-6, "exact mean");

	/* a spread of values, percentiles within 0.1 % (+1 us) above the truth */
	n = 200000;
	v = malloc(n * sizeof(*v));
	srand(42);
	evl_hist_reset(&h);
	for (i = 0; i < n; i++) {
		/* log-uniform from 1 us to ~60 s */
		double e = (double)rand() / RAND_MAX * log(60e9 / 1e3);

		v[i] = (uint64_t)(1e3 * exp(e));
		evl_hist_record(&h, v[i]);
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	bad = 0;
	for (j = 0; j < sizeof(pcts) / sizeof(pcts[0]); j++) {
		uint64_t got = evl_hist_percentile_ns(&h, pcts[j]);
		uint64_t want = exact_pct(v, n, pcts[j]);
		double hi = (double)want * 1.001 + 1000.0;

		if (got < want / 1000 * 1000 || (double)got > hi) {
			bad++;
			printf("# p%g: got %llu want %llu\n", pcts[j], (unsigned long long)got,
			    (unsigned long long)want);
		}
	}
	ok(bad == 0, "log-uniform 1 us..60 s: p1..p100 within [truth, truth + 0.1 %% + 1 us]");
	ok(h.max_ns == v[n - 1] && h.min_ns == v[0], "exact min and max over the spread");

	/* merge equals recording everything in one */
	evl_hist_reset(&h2);
	evl_hist_reset(&m);
	for (i = 0; i < n; i += 2)
		evl_hist_record(&h2, v[i]);
	for (i = 1; i < n; i += 2)
		evl_hist_record(&m, v[i]);
	evl_hist_merge(&m, &h2);
	ok(m.count == h.count && m.sum_ns == h.sum_ns && m.min_ns == h.min_ns && m.max_ns == h.max_ns &&
	    memcmp(m.bucket, h.bucket, sizeof(h.bucket)) == 0, "merge of two halves equals the whole");

	/* beyond the top bucket (134 s): counted, percentile capped by max */
	evl_hist_reset(&h);
	evl_hist_record(&h, 500ull * 1000000000u);
	ok(h.count == 1 && h.bucket[EVL_HIST_BUCKETS - 1] == 1, "500 s lands in the last bucket");
	ok(evl_hist_percentile_ns(&h, 99) == 500ull * 1000000000u, "and its percentile is the exact max");

	/* a single value reports itself */
	evl_hist_reset(&h);
	evl_hist_record(&h, 123456789);
	ok(evl_hist_percentile_ns(&h, 50) == 123456789, "one sample: p50 is that sample");

	free(v);
	return tap_done();
}
