/*
 * evload.c - load generator for eventodbd (and any EventoDB server):
 * command line, the run's clock, progress lines and results.
 *
 * It replaces the original project's scripts/load-test.go and keeps its
 * flags (--duration, --workers, --url, --profile-dir, Go flag syntax: one
 * or two dashes, "=value" or a separate argument), its default load (10
 * closed-loop keep-alive connections for 30 s, stream.write of the
 * original ~300-byte body to test-stream-<n % 100>, a stream.get of that
 * stream after every 10th write, success = HTTP 200) and every key of its
 * load-test-results.json.  It adds an open-loop mode (--rate), latency
 * percentiles per operation, errors by kind, a progress line per second
 * and a non-zero exit status when too many requests fail.
 *
 * The connections themselves live in evload_conn.c, the histogram in
 * evload_hist.c.  See evload(1).
 *
 * Exit status: 0 ok; 1 error rate above --max-error-rate or no request
 * succeeded; 2 usage or set-up error (including an unwritable results
 * file); 130 second interrupt.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "evload.h"
#include "evtool.h"

/* load-test.go's last-resort token (namespace "default"). */
#define ORIGINAL_TOKEN \
	"ns_ZGVmYXVsdA_71d7e890c5bb4666a234cc1a9ec3f5f15b67c1a73257a3c92e1c0b0c5e0f8e9a"
#define RESULTS_FILE	"load-test-results.json"
#define EXIT_THRESHOLD	1
#define EXIT_USAGE	2

static struct evl_config cfg = {
	.duration_ns = 30ull * 1000000000u,
	.timeout_ns = 5ull * 1000000000u,
	.workers = 10,
	.pipeline = 1,
	.streams = 100,
	.read_every = 10,
	.batch = 10,
	.payload_size = 62,
	.rate = 0,
	.max_error_pct = 1.0,
	.mix = EVL_MIX_RW,
	.url = "http://localhost:8080",
	.stream_prefix = "test-stream-",
};

static const char *mix_names[] = { "rw", "write", "read", "version", "health" };
static const char *kind_names[EVL_NKINDS] = { "write", "read", "get" };
static const char *fail_names[EVL_F_NKINDS] = { "connect", "timeout", "closed", "protocol" };

static struct event_base *base;
static struct event *stop_ev, *progress_ev, *sigint_ev, *sigterm_ev;
static uint64_t t_start, t_end, t_last_progress;
static uint64_t last_ok[EVL_NKINDS], last_err;
static int interrupted;
static char duration_text[64];

/* ------------------------------------------------------------------ options */

enum opt_type { OT_DURATION, OT_INT, OT_LONG, OT_DOUBLE, OT_PCT, OT_STRING, OT_BOOL, OT_MIX };

static int opt_help, opt_version;

static const struct evtool_opt opts[] = {
	{ "batch", OT_LONG, &cfg.batch, 1, "N",
	  "batchSize of each stream.get (default 10)" },
	{ "duration", OT_DURATION, &cfg.duration_ns, 1, "DURATION",
	  "how long to send requests, e.g. 30s, 1m30s, 500ms (default 30s)" },
	{ "json", OT_BOOL, &cfg.json, 0, NULL,
	  "print the results as JSON on stdout instead of the text block" },
	{ "max-error-rate", OT_PCT, &cfg.max_error_pct, 0, "PCT",
	  "exit 1 when more than PCT % of requests fail (default 1)" },
	{ "mix", OT_MIX, &cfg.mix, 0, "MIX",
	  "rw, write, read, version or health (default rw)" },
	{ "output", OT_STRING, &cfg.output, 0, "FILE",
	  "write the results JSON to FILE" },
	{ "payload-size", OT_LONG, &cfg.payload_size, 0, "BYTES",
	  "length of the data.payload string of each write (default 62)" },
	{ "pipeline", OT_INT, &cfg.pipeline, 1, "N",
	  "requests in flight per connection (default 1)" },
	{ "profile-dir", OT_STRING, &cfg.profile_dir, 0, "DIR",
	  "write " RESULTS_FILE " into DIR (which must exist)" },
	{ "quiet", OT_BOOL, &cfg.quiet, 0, NULL,
	  "no progress lines" },
	{ "rate", OT_DOUBLE, &cfg.rate, 0, "N",
	  "open loop: N requests per second on a fixed schedule (default 0: closed loop)" },
	{ "read-every", OT_LONG, &cfg.read_every, 0, "N",
	  "read the stream after every Nth write, 0 never (default 10)" },
	{ "spread", OT_BOOL, &cfg.spread, 0, NULL,
	  "start each worker on a different stream (the original starts all on stream 0)" },
	{ "stream-prefix", OT_STRING, &cfg.stream_prefix, 0, "PREFIX",
	  "stream names are PREFIX<n> (default test-stream-)" },
	{ "streams", OT_LONG, &cfg.streams, 1, "N",
	  "number of streams (default 100)" },
	{ "timeout", OT_DURATION, &cfg.timeout_ns, 1, "DURATION",
	  "per request and per connect (default 5s)" },
	{ "token", OT_STRING, &cfg.token, 0, "TOKEN",
	  "bearer token (default $EVENTODB_TOKEN, $DEFAULT_TOKEN, then the original's fixed token)" },
	{ "url", OT_STRING, &cfg.url, 0, "URL",
	  "server base URL; requests go to URL/rpc (default http://localhost:8080)" },
	{ "workers", OT_INT, &cfg.workers, 1, "N",
	  "concurrent keep-alive connections (default 10)" },
	{ "help", OT_BOOL, &opt_help, 0, NULL, "print this help and exit" },
	{ "version", OT_BOOL, &opt_version, 0, NULL, "print the version and exit" },
	{ NULL, 0, NULL, 0, NULL, NULL }
};

static void
usage(FILE *f)
{
	fprintf(f, "evload %s - load generator for EventoDB servers\n\n"
	    "usage: evload [options]\n\n"
	    "options (one or two dashes; --name=value or --name value):\n", PACKAGE_VERSION);
	evtool_usage(f, opts);
	fprintf(f, "\nexit status: 0 ok, 1 error rate above --max-error-rate or no successful request,\n"
	    "2 usage or set-up error\n");
}

static void
die_usage(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "evload: ");
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\nTry \"evload --help\".\n");
	exit(EXIT_USAGE);
}

/*
 * Go duration syntax: a sequence of decimal numbers, each with a unit
 * (ns, us, µs, ms, s, m, h), e.g. "1m30s", "1.5s"; a bare number means
 * seconds.
 */
static int
parse_duration(const char *s, uint64_t *out)
{
	double total = 0;
	char *end;

	if (*s == '\0')
		return -1;
	{
		double v = strtod(s, &end);

		if (end != s && *end == '\0') {
			if (!(v >= 0) || v > 1e7)
				return -1;
			*out = (uint64_t)(v * 1e9 + 0.5);
			return 0;
		}
	}
	while (*s) {
		double v, unit;

		if (*s == '+' || *s == '-' || *s == ' ')
			return -1;
		errno = 0;
		v = strtod(s, &end);
		if (end == s || errno || !(v >= 0))
			return -1;
		s = end;
		if (strncmp(s, "ns", 2) == 0) {
			unit = 1;
			s += 2;
		} else if (strncmp(s, "us", 2) == 0) {
			unit = 1e3;
			s += 2;
		} else if (strncmp(s, "\xc2\xb5s", 3) == 0 || strncmp(s, "\xce\xbcs", 3) == 0) {
			unit = 1e3;
			s += 3;
		} else if (strncmp(s, "ms", 2) == 0) {
			unit = 1e6;
			s += 2;
		} else if (*s == 's') {
			unit = 1e9;
			s++;
		} else if (*s == 'm') {
			unit = 60e9;
			s++;
		} else if (*s == 'h') {
			unit = 3600e9;
			s++;
		} else {
			return -1;
		}
		total += v * unit;
	}
	if (total > 1e16)
		return -1;
	*out = (uint64_t)(total + 0.5);
	return 0;
}

/* Go-like duration text: 30s, 1m30s, 1.5s, 250ms. */
static void
format_duration(char *buf, size_t len, double ns)
{
	double s = ns / 1e9;

	if (s < 1)
		snprintf(buf, len, "%gms", ns / 1e6);
	else if (s < 60)
		snprintf(buf, len, "%.9gs", s);
	else if (s < 3600)
		snprintf(buf, len, "%dm%.9gs", (int)(s / 60), fmod(s, 60));
	else
		snprintf(buf, len, "%dh%dm%.9gs", (int)(s / 3600), (int)fmod(s, 3600) / 60, fmod(s, 60));
}

static void
set_option(const struct evtool_opt *o, const char *val, const char *shown)
{
	char *end;
	long l;
	double d;
	int i;

	switch (o->type) {
	case OT_BOOL:
		if (val == NULL || strcmp(val, "true") == 0 || strcmp(val, "1") == 0)
			*(int *)o->target = 1;
		else if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0)
			*(int *)o->target = 0;
		else
			die_usage("invalid boolean value \"%s\" for %s", val, shown);
		return;
	case OT_DURATION:
		if (parse_duration(val, (uint64_t *)o->target) < 0 || *(uint64_t *)o->target == 0)
			die_usage("invalid duration \"%s\" for %s (examples: 30s, 1m30s, 500ms)", val, shown);
		return;
	case OT_INT:
	case OT_LONG:
		errno = 0;
		l = strtol(val, &end, 10);
		if (*val == '\0' || *end || errno || l < o->min || (o->type == OT_INT && l > 1000000))
			die_usage("invalid value \"%s\" for %s", val, shown);
		if (o->type == OT_INT)
			*(int *)o->target = (int)l;
		else
			*(long *)o->target = l;
		return;
	case OT_DOUBLE:
	case OT_PCT:
		errno = 0;
		d = strtod(val, &end);
		if (o->type == OT_PCT && *end == '%')
			end++;
		if (*val == '\0' || *end || errno || !(d >= 0) || (o->type == OT_PCT && d > 100))
			die_usage("invalid value \"%s\" for %s", val, shown);
		*(double *)o->target = d;
		return;
	case OT_STRING:
		*(const char **)o->target = val;
		return;
	case OT_MIX:
		for (i = 0; i < (int)(sizeof(mix_names) / sizeof(mix_names[0])); i++) {
			if (strcmp(val, mix_names[i]) == 0) {
				*(enum evl_mix *)o->target = (enum evl_mix)i;
				return;
			}
		}
		die_usage("invalid mix \"%s\" for %s (rw, write, read, version, health)", val, shown);
	}
}

static void __attribute__((noreturn))
die_arg(const char *fmt, const char *a)
{
	die_usage(fmt, a, NULL);
	exit(EXIT_USAGE);
}

static void
parse_args(int argc, char **argv)
{
	evtool_parse(argc, argv, opts, EVTOOL_GO, set_option, die_arg);
}

/* http://host[:port][/path] */
static void
parse_url(void)
{
	char err[600];

	if (evc_parse_url(cfg.url, &cfg.srv, err, sizeof(err)) < 0)
		die_usage("%s", err, NULL);
}

/* One descriptor per connection: raise the soft limit as far as needed. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)cfg.workers + 32;
	char msg[160];

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		snprintf(msg, sizeof(msg), "%d connections need %llu file descriptors; the limit is %llu",
		    cfg.workers, (unsigned long long)need, (unsigned long long)rl.rlim_max);
		die_usage("%s", msg, NULL);
	}
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		snprintf(msg, sizeof(msg), "could not raise the file descriptor limit to %llu: %s",
		    (unsigned long long)need, strerror(errno));
		die_usage("%s", msg, NULL);
	}
}

static void
check_config(void)
{
	const char *p;
	struct stat st;

	parse_url();
	if (cfg.token == NULL || *cfg.token == '\0') {
		const char *e = getenv("EVENTODB_TOKEN");

		if (e == NULL || *e == '\0')
			e = getenv("DEFAULT_TOKEN");
		cfg.token = e && *e ? e : ORIGINAL_TOKEN;
	}
	for (p = cfg.token; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			die_usage("invalid token: it must be printable ASCII without spaces", NULL, NULL);
	for (p = cfg.stream_prefix; *p; p++)
		if ((unsigned char)*p < ' ' || *p == '"' || *p == '\\' || (unsigned char)*p >= 0x7f)
			die_usage("invalid --stream-prefix \"%s\": printable ASCII without quotes or backslashes",
			    cfg.stream_prefix, NULL);
	if (cfg.payload_size > 16 * 1024 * 1024)
		die_usage("--payload-size is at most 16777216", NULL, NULL);
	if (cfg.profile_dir && (stat(cfg.profile_dir, &st) < 0 || !S_ISDIR(st.st_mode)))
		die_usage("profile directory \"%s\" does not exist", cfg.profile_dir, NULL);
	if (cfg.rate > 10e6)
		die_usage("--rate is at most 10000000", NULL, NULL);
	if (cfg.workers > 100000 || (long)cfg.workers * cfg.pipeline > 10000000)
		die_usage("too many connections or requests in flight", NULL, NULL);
	raise_fd_limit();
}

/* ------------------------------------------------------------------ output helpers */

static uint64_t
total_ok(void)
{
	return evl_stats.ok[EVL_WRITE] + evl_stats.ok[EVL_READ] + evl_stats.ok[EVL_GET];
}

static uint64_t
total_errors(void)
{
	uint64_t n = evl_stats.fail[EVL_F_CONNECT];
	int k;

	for (k = 0; k < EVL_NKINDS; k++)
		n += evl_stats.err[k];
	return n;
}

/*
 * Shortest text that reads back as the same double, without an exponent
 * between 1e-6 and 1e21: what Go's encoding/json writes for a float64.
 */
static void
put_num(FILE *f, double v)
{
	char buf[400], e[40];
	const char *x;
	int prec, exp10, dec;

	if (!isfinite(v)) {
		fputs("null", f);
		return;
	}
	if (v == 0) {
		fputs("0", f);
		return;
	}
	for (prec = 1; prec < 17; prec++) {
		snprintf(e, sizeof(e), "%.*e", prec - 1, v);
		if (strtod(e, NULL) == v)
			break;
	}
	snprintf(e, sizeof(e), "%.*e", prec - 1, v);
	if (fabs(v) >= 1e-6 && fabs(v) < 1e21 && (x = strchr(e, 'e')) != NULL) {
		exp10 = atoi(x + 1);
		dec = prec - 1 - exp10;
		snprintf(buf, sizeof(buf), "%.*f", dec > 0 ? dec : 0, v);
		fputs(buf, f);
		return;
	}
	fputs(e, f);
}

static void
key(FILE *f, int ind, int *first, const char *k)
{
	fputs(*first ? "\n" : ",\n", f);
	*first = 0;
	fprintf(f, "%*s", ind, "");
	evtool_json_str(f, k);
	fputs(": ", f);
}

static void
close_obj(FILE *f, int ind, int first)
{
	if (!first)
		fprintf(f, "\n%*s", ind, "");
	fputc('}', f);
}

static double
ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

/* {"count","max","mean","min","p50","p90","p99","p999"} in ms; null when empty. */
static void
put_hist(FILE *f, int ind, const struct evl_hist *h)
{
	int first = 1;
	static const double pct[] = { 50, 90, 99, 99.9 };
	static const char *pname[] = { "p50", "p90", "p99", "p999" };
	int i;

	fputc('{', f);
	key(f, ind + 2, &first, "count");
	fprintf(f, "%llu", (unsigned long long)h->count);
	key(f, ind + 2, &first, "max");
	h->count ? put_num(f, ms(h->max_ns)) : (void)fputs("null", f);
	key(f, ind + 2, &first, "mean");
	h->count ? put_num(f, evl_hist_mean_ns(h) / 1e6) : (void)fputs("null", f);
	key(f, ind + 2, &first, "min");
	h->count ? put_num(f, ms(h->min_ns)) : (void)fputs("null", f);
	for (i = 0; i < 4; i++) {
		key(f, ind + 2, &first, pname[i]);
		h->count ? put_num(f, ms(evl_hist_percentile_ns(h, pct[i]))) : (void)fputs("null", f);
	}
	close_obj(f, ind, first);
}

static void
rfc3339_now(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;
	long off;
	size_t n;

	localtime_r(&t, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	off = tm.tm_gmtoff;
	if (off == 0)
		snprintf(buf + n, len - n, "Z");
	else
		snprintf(buf + n, len - n, "%c%02ld:%02ld", off < 0 ? '-' : '+',
		    labs(off) / 3600, labs(off) % 3600 / 60);
}

/*
 * The results document: the original's keys (avg_latency_ms only when
 * total_ops > 0, as there) plus ours, every object's keys in byte order
 * like Go's encoding of a map, two-space indent, no trailing newline.
 */
static void
write_results(FILE *f, double elapsed_s, double cpu_s)
{
	uint64_t ops = total_ok(), errs = total_errors();
	struct evl_hist all;
	char ts[64];
	int first = 1, f2, f3, i, k, any;
	static const double pct[] = { 50, 90, 99.9, 99 };
	static const char *pkey[] = { "p50_latency_ms", "p90_latency_ms", "p999_latency_ms",
	    "p99_latency_ms" };

	evl_hist_reset(&all);
	for (k = 0; k < EVL_NKINDS; k++)
		evl_hist_merge(&all, &evl_stats.hist[k]);
	rfc3339_now(ts, sizeof(ts));

	fputc('{', f);
	if (ops > 0) {
		key(f, 2, &first, "avg_latency_ms");
		put_num(f, evl_hist_mean_ns(&all) / 1e6);
	}
	key(f, 2, &first, "client_cpu_s");
	put_num(f, cpu_s);

	key(f, 2, &first, "config");
	fputc('{', f);
	f2 = 1;
	key(f, 4, &f2, "batch");
	fprintf(f, "%ld", cfg.batch);
	key(f, 4, &f2, "duration_s");
	put_num(f, (double)cfg.duration_ns / 1e9);
	key(f, 4, &f2, "max_error_rate_pct");
	put_num(f, cfg.max_error_pct);
	key(f, 4, &f2, "mix");
	evtool_json_str(f, mix_names[cfg.mix]);
	key(f, 4, &f2, "payload_size");
	fprintf(f, "%ld", cfg.payload_size);
	key(f, 4, &f2, "pipeline");
	fprintf(f, "%d", cfg.pipeline);
	key(f, 4, &f2, "rate");
	if (cfg.rate > 0)
		put_num(f, cfg.rate);
	else
		fputs("null", f);
	key(f, 4, &f2, "read_every");
	fprintf(f, "%ld", cfg.read_every);
	key(f, 4, &f2, "spread");
	fputs(cfg.spread ? "true" : "false", f);
	key(f, 4, &f2, "stream_prefix");
	evtool_json_str(f, cfg.stream_prefix);
	key(f, 4, &f2, "streams");
	fprintf(f, "%ld", cfg.streams);
	key(f, 4, &f2, "timeout_s");
	put_num(f, (double)cfg.timeout_ns / 1e9);
	key(f, 4, &f2, "url");
	evtool_json_str(f, cfg.url);
	key(f, 4, &f2, "workers");
	fprintf(f, "%d", cfg.workers);
	close_obj(f, 2, f2);

	key(f, 2, &first, "duration_s");
	put_num(f, elapsed_s);
	key(f, 2, &first, "error_rate");
	put_num(f, ops + errs ? (double)errs / (double)(ops + errs) : 0.0);
	key(f, 2, &first, "errors");
	fprintf(f, "%llu", (unsigned long long)errs);

	key(f, 2, &first, "errors_by_kind");
	fputc('{', f);
	f2 = 1;
	key(f, 4, &f2, "closed");
	fprintf(f, "%llu", (unsigned long long)evl_stats.fail[EVL_F_CLOSED]);
	key(f, 4, &f2, "code");
	{
		/* by name, "other" (codes beyond the table) among them */
		const char *name[EVL_MAX_CODES + 1];
		uint64_t cnt[EVL_MAX_CODES + 1];
		int n = 0, x, y;

		for (x = 0; x < evl_codes.n; x++) {
			name[n] = evl_codes.name[x];
			cnt[n++] = evl_codes.count[x];
		}
		if (evl_codes.other) {
			name[n] = "other";
			cnt[n++] = evl_codes.other;
		}
		for (x = 1; x < n; x++) {
			for (y = x; y > 0 && strcmp(name[y - 1], name[y]) > 0; y--) {
				const char *tn = name[y];
				uint64_t tc = cnt[y];

				name[y] = name[y - 1];
				cnt[y] = cnt[y - 1];
				name[y - 1] = tn;
				cnt[y - 1] = tc;
			}
		}
		fputc('{', f);
		f3 = 1;
		for (x = 0; x < n; x++) {
			key(f, 6, &f3, name[x]);
			fprintf(f, "%llu", (unsigned long long)cnt[x]);
		}
		close_obj(f, 4, f3);
	}
	key(f, 4, &f2, "connect");
	fprintf(f, "%llu", (unsigned long long)evl_stats.fail[EVL_F_CONNECT]);
	key(f, 4, &f2, "protocol");
	fprintf(f, "%llu", (unsigned long long)evl_stats.fail[EVL_F_PROTOCOL]);
	key(f, 4, &f2, "status");
	fputc('{', f);
	f3 = 1;
	for (i = 100; i < 600; i++) {	/* three digits each: numeric order is byte order */
		char sk[8];

		if (evl_stats.status[i] == 0)
			continue;
		snprintf(sk, sizeof(sk), "%d", i);
		key(f, 6, &f3, sk);
		fprintf(f, "%llu", (unsigned long long)evl_stats.status[i]);
	}
	close_obj(f, 4, f3);
	key(f, 4, &f2, "timeout");
	fprintf(f, "%llu", (unsigned long long)evl_stats.fail[EVL_F_TIMEOUT]);
	close_obj(f, 2, f2);

	key(f, 2, &first, "gets");
	fprintf(f, "%llu", (unsigned long long)evl_stats.ok[EVL_GET]);

	key(f, 2, &first, "latency_ms");
	fputc('{', f);
	f2 = 1;
	key(f, 4, &f2, "all");
	put_hist(f, 4, &all);
	key(f, 4, &f2, "get");
	put_hist(f, 4, &evl_stats.hist[EVL_GET]);
	key(f, 4, &f2, "read");
	put_hist(f, 4, &evl_stats.hist[EVL_READ]);
	key(f, 4, &f2, "write");
	put_hist(f, 4, &evl_stats.hist[EVL_WRITE]);
	close_obj(f, 2, f2);

	any = ops > 0;
	if (any) {
		key(f, 2, &first, "max_latency_ms");
		put_num(f, ms(all.max_ns));
	}
	key(f, 2, &first, "mode");
	evtool_json_str(f, cfg.rate > 0 ? "open" : "closed");
	key(f, 2, &first, "ops_per_sec");
	put_num(f, elapsed_s > 0 ? (double)ops / elapsed_s : 0.0);
	if (any) {
		for (i = 0; i < 4; i++) {
			key(f, 2, &first, pkey[i]);
			put_num(f, ms(evl_hist_percentile_ns(&all, pct[i])));
		}
	}
	key(f, 2, &first, "reads");
	fprintf(f, "%llu", (unsigned long long)evl_stats.ok[EVL_READ]);
	key(f, 2, &first, "reads_per_sec");
	put_num(f, elapsed_s > 0 ? (double)evl_stats.ok[EVL_READ] / elapsed_s : 0.0);
	key(f, 2, &first, "requests_sent");
	fprintf(f, "%llu", (unsigned long long)evl_stats.sent);
	key(f, 2, &first, "timestamp");
	evtool_json_str(f, ts);
	key(f, 2, &first, "tool");
	evtool_json_str(f, "evload " PACKAGE_VERSION);
	key(f, 2, &first, "total_ops");
	fprintf(f, "%llu", (unsigned long long)ops);
	key(f, 2, &first, "unsent");
	fprintf(f, "%llu", (unsigned long long)evl_stats.unsent);
	key(f, 2, &first, "writes");
	fprintf(f, "%llu", (unsigned long long)evl_stats.ok[EVL_WRITE]);
	key(f, 2, &first, "writes_per_sec");
	put_num(f, elapsed_s > 0 ? (double)evl_stats.ok[EVL_WRITE] / elapsed_s : 0.0);
	close_obj(f, 0, first);
}

/* Write the document to path through a temporary file; -1 on failure. */
static int
save_results(const char *path, const char *doc, size_t len)
{
	char tmp[4096];
	int fd;
	ssize_t n;
	size_t off = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
		fprintf(stderr, "evload: results path too long: \"%s\"\n", path);
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "evload: could not create file \"%s\": %s\n", tmp, strerror(errno));
		return -1;
	}
	while (off < len) {
		n = write(fd, doc + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "evload: could not write file \"%s\": %s\n", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		off += (size_t)n;
	}
	if (close(fd) < 0) {
		fprintf(stderr, "evload: could not write file \"%s\": %s\n", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0) {
		fprintf(stderr, "evload: could not rename \"%s\" to \"%s\": %s\n", tmp, path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static void
print_hist_row(FILE *f, const char *name, const struct evl_hist *h)
{
	if (h->count == 0) {
		fprintf(f, "  %-8s %10s\n", name, "0");
		return;
	}
	fprintf(f, "  %-8s %10llu %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", name,
	    (unsigned long long)h->count, evl_hist_mean_ns(h) / 1e6,
	    ms(evl_hist_percentile_ns(h, 50)), ms(evl_hist_percentile_ns(h, 90)),
	    ms(evl_hist_percentile_ns(h, 99)), ms(evl_hist_percentile_ns(h, 99.9)), ms(h->max_ns));
}

static void
print_text(FILE *f, double elapsed_s, double cpu_s, const char *saved)
{
	uint64_t ops = total_ok(), errs = total_errors();
	struct evl_hist all;
	char dur[64];
	int k, i, any = 0;

	evl_hist_reset(&all);
	for (k = 0; k < EVL_NKINDS; k++)
		evl_hist_merge(&all, &evl_stats.hist[k]);
	format_duration(dur, sizeof(dur), elapsed_s * 1e9);
	fprintf(f, "\n=== Load Test Results ===\n");
	fprintf(f, "Duration: %s\n", dur);
	fprintf(f, "Total Operations: %llu\n", (unsigned long long)ops);
	fprintf(f, "Writes: %llu\n", (unsigned long long)evl_stats.ok[EVL_WRITE]);
	fprintf(f, "Reads: %llu\n", (unsigned long long)evl_stats.ok[EVL_READ]);
	if (evl_stats.ok[EVL_GET] || cfg.mix == EVL_MIX_VERSION || cfg.mix == EVL_MIX_HEALTH)
		fprintf(f, "Gets: %llu\n", (unsigned long long)evl_stats.ok[EVL_GET]);
	fprintf(f, "Errors: %llu\n", (unsigned long long)errs);
	fprintf(f, "Throughput: %.0f ops/sec\n", elapsed_s > 0 ? (double)ops / elapsed_s : 0.0);
	if (ops > 0)
		fprintf(f, "Avg Latency: %.2f ms\n", evl_hist_mean_ns(&all) / 1e6);

	fprintf(f, "\n  %-8s %10s %9s %9s %9s %9s %9s %9s\n", "ms", "count", "mean", "p50", "p90",
	    "p99", "p99.9", "max");
	if (evl_stats.hist[EVL_WRITE].count || cfg.mix == EVL_MIX_RW || cfg.mix == EVL_MIX_WRITE)
		print_hist_row(f, "write", &evl_stats.hist[EVL_WRITE]);
	if (evl_stats.hist[EVL_READ].count || cfg.mix == EVL_MIX_RW || cfg.mix == EVL_MIX_READ)
		print_hist_row(f, "read", &evl_stats.hist[EVL_READ]);
	if (evl_stats.hist[EVL_GET].count)
		print_hist_row(f, "get", &evl_stats.hist[EVL_GET]);
	print_hist_row(f, "all", &all);

	if (errs) {
		fprintf(f, "\nErrors by kind:");
		for (i = 0; i < EVL_F_NKINDS; i++)
			if (evl_stats.fail[i])
				fprintf(f, " %s %llu;", fail_names[i], (unsigned long long)evl_stats.fail[i]);
		for (i = 100; i < 600; i++)
			if (evl_stats.status[i])
				fprintf(f, " status %d %llu;", i, (unsigned long long)evl_stats.status[i]);
		for (i = 0; i < evl_codes.n; i++)
			fprintf(f, " %s %llu;", evl_codes.name[i], (unsigned long long)evl_codes.count[i]);
		if (evl_codes.other)
			fprintf(f, " other codes %llu;", (unsigned long long)evl_codes.other);
		fputc('\n', f);
		any = 1;
	}
	if (cfg.rate > 0)
		fprintf(f, "%sOpen loop: %llu requests due, %llu never sent (backlog at the end)\n",
		    any ? "" : "\n", (unsigned long long)evl_stats.scheduled,
		    (unsigned long long)evl_stats.unsent);
	fprintf(f, "Client CPU: %.2f s (%.1f %% of one core, %.2f us per request)\n", cpu_s,
	    elapsed_s > 0 ? 100.0 * cpu_s / elapsed_s : 0.0,
	    evl_stats.sent ? cpu_s * 1e6 / (double)evl_stats.sent : 0.0);
	if (saved)
		fprintf(f, "\nResults saved to: %s\n", saved);
}

/* ------------------------------------------------------------------ events */

static void
progress_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = evl_now_ns(), errs = total_errors();
	double dt = (double)(now - t_last_progress) / 1e9;
	const struct evl_hist *h = &evl_stats.interval;
	int k;

	if (!cfg.quiet) {
		fprintf(stderr, "evload: %5.0fs", (double)(now - t_start) / 1e9);
		for (k = 0; k < EVL_NKINDS; k++) {
			int shown = k == EVL_GET ? cfg.mix >= EVL_MIX_VERSION : cfg.mix <= EVL_MIX_READ;

			if (!shown && evl_stats.ok[k] == 0)
				continue;
			fprintf(stderr, "  %ss %llu (%.0f/s)", kind_names[k],
			    (unsigned long long)evl_stats.ok[k],
			    dt > 0 ? (double)(evl_stats.ok[k] - last_ok[k]) / dt : 0.0);
		}
		fprintf(stderr, "  errors %llu (+%llu)", (unsigned long long)errs,
		    (unsigned long long)(errs - last_err));
		if (h->count)
			fprintf(stderr, "  p50 %.3fms p99 %.3fms max %.3fms", ms(evl_hist_percentile_ns(h, 50)),
			    ms(evl_hist_percentile_ns(h, 99)), ms(h->max_ns));
		fprintf(stderr, "  in flight %d\n", evl_run_inflight());
	}
	for (k = 0; k < EVL_NKINDS; k++)
		last_ok[k] = evl_stats.ok[k];
	last_err = errs;
	t_last_progress = now;
	evl_hist_reset(&evl_stats.interval);
}

/*
 * libevent's default timers run on the coarse monotonic clock and may
 * fire a few ms early by ours: wait out the rest so the duration is never
 * short.
 */
static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = evl_now_ns(), left;
	struct timeval tv;

	if (now - t_start < cfg.duration_ns) {
		left = cfg.duration_ns - (now - t_start);
		tv.tv_sec = (time_t)(left / 1000000000u);
		tv.tv_usec = (suseconds_t)(left % 1000000000u / 1000 + 1);
		evtimer_add(stop_ev, &tv);
		return;
	}
	evl_run_stop(now);
}

void
evl_drained(void)
{
	event_base_loopbreak(base);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	if (interrupted++) {
		fprintf(stderr, "evload: interrupted again, exiting without results\n");
		_exit(130);
	}
	fprintf(stderr, "evload: interrupted, finishing requests in flight (again to quit)\n");
	evl_run_stop(evl_now_ns());
}

/* ------------------------------------------------------------------ main */

int
main(int argc, char **argv)
{
	struct event_config *ecfg;
	struct timeval tv;
	struct rusage ru;
	char err[512], path[4096];
	const char *out_path = NULL;
	char *doc = NULL;
	size_t doclen = 0;
	FILE *mf;
	double elapsed_s, cpu_s, err_pct;
	uint64_t ops, errs;
	int status = 0;

	parse_args(argc, argv);
	if (opt_help) {
		usage(stdout);
		return 0;
	}
	if (opt_version) {
		printf("evload %s\n", PACKAGE_VERSION);
		return 0;
	}
	check_config();
	if (cfg.output)
		out_path = cfg.output;
	else if (cfg.profile_dir) {
		snprintf(path, sizeof(path), "%s/%s", cfg.profile_dir, RESULTS_FILE);
		out_path = path;
	}
	signal(SIGPIPE, SIG_IGN);

	ecfg = event_config_new();
	if (ecfg == NULL) {
		fprintf(stderr, "evload: could not create event configuration\n");
		return EXIT_USAGE;
	}
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
	if (cfg.rate > 0)
		event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	if (base == NULL) {
		fprintf(stderr, "evload: could not create event base\n");
		return EXIT_USAGE;
	}
	if (evl_run_init(base, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "evload: %s\n", err);
		return EXIT_USAGE;
	}

	format_duration(duration_text, sizeof(duration_text), (double)cfg.duration_ns);
	{
		FILE *bf = cfg.json ? stderr : stdout;

		fprintf(bf, "Starting load test: duration=%s, workers=%d, url=%s\n", duration_text,
		    cfg.workers, cfg.url);
		if (cfg.mix == EVL_MIX_VERSION || cfg.mix == EVL_MIX_HEALTH)
			fprintf(bf, "  mix %s: GET %s%s", mix_names[cfg.mix], cfg.srv.path,
			    cfg.mix == EVL_MIX_VERSION ? "/version" : "/health");
		else
			fprintf(bf, "  mix %s: streams %s0..%ld, read every %ld, batch %ld, write body %zu bytes",
			    mix_names[cfg.mix], cfg.stream_prefix, cfg.streams - 1, cfg.read_every,
			    cfg.batch, evl_write_body_len(0));
		if (cfg.rate > 0)
			fprintf(bf, ", open loop at %g requests/s", cfg.rate);
		else
			fprintf(bf, ", closed loop");
		if (cfg.pipeline > 1)
			fprintf(bf, ", pipeline %d", cfg.pipeline);
		fputc('\n', bf);
		fflush(bf);
	}

	stop_ev = evtimer_new(base, stop_cb, NULL);
	progress_ev = event_new(base, -1, EV_PERSIST, progress_cb, NULL);
	sigint_ev = evsignal_new(base, SIGINT, signal_cb, NULL);
	sigterm_ev = evsignal_new(base, SIGTERM, signal_cb, NULL);
	if (!stop_ev || !progress_ev || !sigint_ev || !sigterm_ev) {
		fprintf(stderr, "evload: could not create events\n");
		return EXIT_USAGE;
	}
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);

	t_start = t_last_progress = evl_now_ns();
	tv.tv_sec = (time_t)(cfg.duration_ns / 1000000000u);
	tv.tv_usec = (suseconds_t)(cfg.duration_ns % 1000000000u / 1000);
	evtimer_add(stop_ev, &tv);
	tv.tv_sec = 1;
	tv.tv_usec = 0;
	event_add(progress_ev, &tv);
	evl_run_start(t_start);

	event_base_dispatch(base);
	t_end = evl_now_ns();

	elapsed_s = (double)(t_end - t_start) / 1e9;
	getrusage(RUSAGE_SELF, &ru);
	cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;

	mf = open_memstream(&doc, &doclen);
	if (mf == NULL) {
		fprintf(stderr, "evload: out of memory\n");
		return EXIT_USAGE;
	}
	write_results(mf, elapsed_s, cpu_s);
	fclose(mf);

	if (out_path && save_results(out_path, doc, doclen) < 0)
		status = EXIT_USAGE;
	if (cfg.json) {
		fwrite(doc, 1, doclen, stdout);
		fputc('\n', stdout);
	} else {
		print_text(stdout, elapsed_s, cpu_s, status == 0 ? out_path : NULL);
	}
	fflush(stdout);

	ops = total_ok();
	errs = total_errors();
	err_pct = ops + errs ? 100.0 * (double)errs / (double)(ops + errs) : 0.0;
	if (status == 0 && ops == 0) {
		fprintf(stderr, "evload: no request succeeded\n");
		status = EXIT_THRESHOLD;
	} else if (status == 0 && err_pct > cfg.max_error_pct) {
		fprintf(stderr, "evload: error rate %.3f %% is above the limit of %g %%\n", err_pct,
		    cfg.max_error_pct);
		status = EXIT_THRESHOLD;
	}

	free(doc);
	evl_run_free();
	event_free(stop_ev);
	event_free(progress_ev);
	event_free(sigint_ev);
	event_free(sigterm_ev);
	event_base_free(base);
	return status;
}
