/*
 * evcheck.c - evcheck, the history checker of the reliability battery
 * (issue 9; evcheck(1)): command line, start-up, the run's phases (load,
 * final read, check), the summary JSON and the --history file.
 *
 * Exit status: 0 no violations, 1 violations found, 2 usage error or the
 * final read impossible within --final-timeout.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "evcheck.h"
#include "evtool.h"

#define EXIT_CLEAN	0
#define EXIT_VIOLATIONS	1
#define EXIT_USAGE	2

struct ec_state ec;

const char *const ec_inv_names[EC_NINV] = {
	"N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9", "skip"
};
const char *const ec_inject_names[EC_INJ_NKINDS] = {
	"phantom", "lost", "dup", "gap", "fail", "indet", "move", "order", "stale", "skip"
};
static const char *const kind_names[] = { "write", "read", "cread", "version", "forgotten" };
static const char *const outcome_names[] = { "pending", "ok", "fail", "indeterminate" };
static const char *const why_names[EC_W_NKINDS] = { "", "timeout", "closed", "protocol", "5xx" };

/* The decoded data.s of every write: quotes, a backslash, non-ASCII. */
static const char data_string[] = "evcheck \xc3\xa9 \"q\" \\ \xe2\x82\xac";
static const char data_string_json[] = "evcheck \\u00e9 \\\"q\\\" \\\\ \xe2\x82\xac";

/* ------------------------------------------------------------------ helpers */

uint64_t
ec_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
ec_fatal(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "evcheck: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_USAGE);
}

void
ec_uuid_text(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[id[i] >> 4];
		out[o++] = hex[id[i] & 15];
	}
	out[o] = '\0';
}

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int
ec_parse_uuid(const char *s, uint8_t id[16])
{
	int i, o = 0, h, l;

	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -1;
			continue;
		}
		h = hexval(s[i]);
		l = h < 0 ? -1 : hexval(s[++i]);
		if (l < 0)
			return -1;
		id[o++] = (uint8_t)(h << 4 | l);
	}
	return s[36] == '\0' ? 0 : -1;
}

uint32_t
ec_id_op(const uint8_t id[16])
{
	uint64_t n = ec.nonce, i;

	if (id[6] != (uint8_t)(0x70 | ((n >> 30) & 0x0f)) || id[7] != (uint8_t)(n >> 22) ||
	    id[8] != (uint8_t)(0x80 | ((n >> 16) & 0x3f)) || id[9] != (uint8_t)(n >> 8) ||
	    id[10] != (uint8_t)n)
		return EC_NONE;
	i = (uint64_t)id[11] << 32 | (uint64_t)id[12] << 24 | (uint64_t)id[13] << 16 |
	    (uint64_t)id[14] << 8 | id[15];
	if (i >= ec.nops || ec.ops[i].kind != EC_WRITE || memcmp(ec.ops[i].id, id, 16) != 0)
		return EC_NONE;
	return (uint32_t)i;
}

int
ec_stream_index(const char *name)
{
	size_t pl = strlen(ec.cfg.prefix);
	const char *p, *dash;
	char *end;
	long cat, idx;

	if (strncmp(name, ec.cfg.prefix, pl) != 0)
		return -1;
	p = name + pl;
	dash = strchr(p, '-');
	if (dash == NULL || dash == p)
		return -1;
	cat = strtol(p, &end, 10);
	if (end != dash || cat < 0)
		return -1;
	idx = strtol(dash + 1, &end, 10);
	if (*end || dash[1] == '\0' || idx < 0 || idx >= ec.nstreams)
		return -1;
	if (strcmp(ec.stream_name[idx], name) != 0)
		return -1;
	return (int)idx;
}

void
ec_type_name(uint32_t op, char *buf, size_t len)
{
	snprintf(buf, len, "Ev%u", op % 5);
}

const char *
ec_data_string(void)
{
	return data_string;
}

/* The message object of write op: {"type":..,"data":{..},"metadata":{..}}. */
void
ec_expected_data(uint32_t op, char *buf, size_t len)
{
	char type[16];

	ec_type_name(op, type, sizeof(type));
	snprintf(buf, len, "{\"type\":\"%s\",\"data\":{\"c\":%u,\"n\":%u,\"s\":\"%s\"},"
	    "\"metadata\":{\"op\":%u}}", type, ec.ops[op].client, op, data_string_json, op);
}

int
ec_code_index(const char *code, size_t len)
{
	int i;

	if (len == 0)
		return 0;
	if (len > sizeof(ec.codes[0]) - 1)
		len = sizeof(ec.codes[0]) - 1;
	if (ec.ncodes == 0)
		ec.ncodes = 1;	/* index 0 = none */
	for (i = 1; i < ec.ncodes; i++)
		if (strlen(ec.codes[i]) == len && memcmp(ec.codes[i], code, len) == 0)
			return i;
	if (ec.ncodes == (int)(sizeof(ec.codes) / sizeof(ec.codes[0])))
		return 0;
	memcpy(ec.codes[ec.ncodes], code, len);
	ec.codes[ec.ncodes][len] = '\0';
	return ec.ncodes++;
}

/* ------------------------------------------------------------------ options */

enum opt_type { OT_INT, OT_LONG, OT_DOUBLE, OT_U64, OT_STRING, OT_BOOL, OT_WORKLOAD, OT_INJECT };

static int opt_help, opt_version;
static double timeout_ms = 5000;
static char prefix_buf[48];

static const struct evtool_opt opts[] = {
	{ "url", OT_STRING, &ec.cfg.url, 0, "URL",
	  "server base URL; requests go to URL/rpc (default http://127.0.0.1:8080)" },
	{ "token", OT_STRING, &ec.cfg.token, 0, "TOKEN",
	  "bearer token (default $EVENTODB_TOKEN)" },
	{ "workload", OT_WORKLOAD, &ec.cfg.workload, 0, "mixed|conflict",
	  "mixed (T02, default) or conflict (T01)" },
	{ "clients", OT_INT, &ec.cfg.clients, 1, "N",
	  "concurrent client connections (default 8)" },
	{ "duration", OT_DOUBLE, &ec.cfg.duration_s, 0.001, "SECS",
	  "mixed: how long to run the load (default 10)" },
	{ "rounds", OT_LONG, &ec.cfg.rounds, 0, "N",
	  "conflict: number of rounds (default 1000)" },
	{ "streams", OT_INT, &ec.cfg.streams, 1, "N",
	  "mixed: number of streams (default 50)" },
	{ "categories", OT_INT, &ec.cfg.categories, 1, "N",
	  "mixed: number of categories the streams are spread over (default 5)" },
	{ "prefix", OT_STRING, &ec.cfg.prefix, 0, "P",
	  "category names are P0, P1, ...; streams Pc-i (default: random, unique per run)" },
	{ "readers", OT_INT, &ec.cfg.readers, 0, "N",
	  "category followers for the skip check (default: one per category)" },
	{ "timeout", OT_DOUBLE, &timeout_ms, 1, "MS",
	  "per-request deadline; expiry makes a write indeterminate (default 5000)" },
	{ "rate", OT_DOUBLE, &ec.cfg.rate, 0, "N",
	  "cap the clients' requests at N per second (default 0: closed loop)" },
	{ "final-timeout", OT_DOUBLE, &ec.cfg.final_timeout_s, 0, "SECS",
	  "retry the final read until the server answers, at most SECS (default 30)" },
	{ "json", OT_STRING, &ec.cfg.json, 0, "FILE",
	  "write the summary JSON to FILE (default: stdout)" },
	{ "history", OT_STRING, &ec.cfg.history, 0, "FILE",
	  "write every operation to FILE, one JSON object per line" },
	{ "seed", OT_U64, &ec.cfg.seed, 0, "N",
	  "seed of the clients' random choices (default: random)" },
	{ "foreign", OT_STRING, &ec.cfg.foreign, 0, "PREFIX",
	  "streams named PREFIX... are written by others into the run's categories: "
	  "not phantoms, but in the category checks" },
	{ "inject", OT_INJECT, &ec.cfg.inject, 0, "KIND",
	  "self-test: corrupt the history or final read before the check "
	  "(phantom lost dup gap fail indet move order stale skip; repeatable)" },
	{ "retry", OT_BOOL, &ec.cfg.retry, 0, NULL,
	  "mixed: send an indeterminate write again, same id, until it gets an answer" },
	{ "quiet", OT_BOOL, &ec.cfg.quiet, 0, NULL,
	  "no progress lines on stderr" },
	{ "help", OT_BOOL, &opt_help, 0, NULL, "print this help and exit" },
	{ "version", OT_BOOL, &opt_version, 0, NULL, "print the version and exit" },
	{ NULL, 0, NULL, 0, NULL, NULL }
};

static void
usage(FILE *f)
{
	fprintf(f, "evcheck %s - history checker for EventoDB servers (reliability battery)\n\n"
	    "usage: evcheck --url URL --token TOKEN [options]\n\n"
	    "options (--name=value or --name value):\n", PACKAGE_VERSION);
	evtool_usage(f, opts);
	fprintf(f, "\nSIGTERM or SIGINT ends the load phase; the final read and the check follow.\n"
	    "exit status: 0 no violations, 1 violations found, 2 usage error or final read impossible\n");
}

static void __attribute__((noreturn))
die_usage(const char *fmt, const char *a)
{
	fprintf(stderr, "evcheck: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\nTry \"evcheck --help\".\n");
	exit(EXIT_USAGE);
}

static void
set_option(const struct evtool_opt *o, const char *val, const char *shown)
{
	char *end;
	double d;
	int i;

	(void)shown;
	switch (o->type) {
	case OT_BOOL:
		*(int *)o->target = 1;
		return;
	case OT_STRING:
		*(const char **)o->target = val;
		return;
	case OT_WORKLOAD:
		if (strcmp(val, "mixed") == 0)
			*(enum ec_workload *)o->target = EC_MIXED;
		else if (strcmp(val, "conflict") == 0)
			*(enum ec_workload *)o->target = EC_CONFLICT;
		else
			die_usage("invalid --workload \"%s\" (mixed or conflict)", val);
		return;
	case OT_INJECT:
		for (i = 0; i < EC_INJ_NKINDS; i++)
			if (strcmp(val, ec_inject_names[i]) == 0)
				break;
		if (i == EC_INJ_NKINDS)
			die_usage("invalid --inject \"%s\"", val);
		*(unsigned *)o->target |= 1u << i;
		return;
	case OT_U64: {
		unsigned long long u;

		errno = 0;
		u = strtoull(val, &end, 10);
		if (errno || end == val || *end || val[0] == '-')
			die_usage("invalid number \"%s\"", val);
		*(uint64_t *)o->target = u;
		return;
	}
	default:
		break;
	}
	errno = 0;
	d = strtod(val, &end);
	if (errno || end == val || *end || !isfinite(d) || d < o->min)
		die_usage("invalid value \"%s\"", val);
	switch (o->type) {
	case OT_INT:
		if (d != floor(d) || d > INT_MAX)
			die_usage("invalid integer \"%s\"", val);
		*(int *)o->target = (int)d;
		break;
	case OT_LONG:
		if (d != floor(d) || d > (double)LONG_MAX / 2)
			die_usage("invalid integer \"%s\"", val);
		*(long *)o->target = (long)d;
		break;
	default:
		*(double *)o->target = d;
		break;
	}
}

static void
parse_args(int argc, char **argv)
{
	evtool_parse(argc, argv, opts, 0, set_option, die_usage);
}

/* http://host[:port][/path] */
static void
parse_url(void)
{
	char err[600];

	if (evc_parse_url(ec.cfg.url, &ec.cfg.srv, err, sizeof(err)) < 0)
		die_usage("%s", err);
}

static uint64_t
random_u64(void)
{
	uint64_t v;
	struct timespec ts;

	if (getrandom(&v, sizeof(v), 0) == (ssize_t)sizeof(v))
		return v;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_nsec * 6364136223846793005ull ^ (uint64_t)ts.tv_sec ^
	    (uint64_t)getpid() << 32;
}

static void
check_config(void)
{
	const char *p;
	int i;

	if (ec.cfg.token == NULL)
		ec.cfg.token = getenv("EVENTODB_TOKEN");
	if (ec.cfg.token && strpbrk(ec.cfg.token, "\r\n"))
		die_usage("invalid token%s", "");
	parse_url();
	if (ec.cfg.workload == EC_CONFLICT) {
		ec.cfg.streams = 1;
		ec.cfg.categories = 1;
	}
	if (ec.cfg.categories > ec.cfg.streams)
		ec.cfg.categories = ec.cfg.streams;
	if (ec.cfg.streams > 1000000)
		die_usage("too many streams%s", "");
	if (ec.cfg.prefix == NULL) {
		static const char b36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
		uint64_t r = random_u64();

		strcpy(prefix_buf, "evc");
		for (i = 0; i < 8; i++) {
			prefix_buf[3 + i] = b36[r % 36];
			r /= 36;
		}
		prefix_buf[11] = '\0';
		ec.cfg.prefix = prefix_buf;
	}
	if (strlen(ec.cfg.prefix) == 0 || strlen(ec.cfg.prefix) > 40)
		die_usage("--prefix must be 1 to 40 characters%s", "");
	for (p = ec.cfg.prefix; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_'))
			die_usage("--prefix \"%s\": only letters, digits and _", ec.cfg.prefix);
	if (ec.cfg.readers < 0)
		ec.cfg.readers = ec.cfg.categories;
	ec.cfg.timeout_ns = (uint64_t)(timeout_ms * 1e6);
	if (ec.cfg.seed == 0)
		ec.cfg.seed = random_u64() | 1;
	ec.nonce = random_u64() & ((1ull << 34) - 1);
}

static void
setup_names(void)
{
	int i;

	ec.nstreams = ec.cfg.streams;
	ec.ncats = ec.cfg.categories;
	ec.stream_name = calloc((size_t)ec.nstreams, sizeof(*ec.stream_name));
	ec.stream_cat = calloc((size_t)ec.nstreams, sizeof(*ec.stream_cat));
	ec.cat_name = calloc((size_t)ec.ncats, sizeof(*ec.cat_name));
	ec.nfollowers = ec.cfg.readers;
	ec.followers = calloc((size_t)(ec.nfollowers ? ec.nfollowers : 1), sizeof(*ec.followers));
	if (!ec.stream_name || !ec.stream_cat || !ec.cat_name || !ec.followers)
		ec_fatal("out of memory");
	for (i = 0; i < ec.ncats; i++)
		snprintf(ec.cat_name[i], sizeof(ec.cat_name[i]), "%s%d", ec.cfg.prefix, i);
	for (i = 0; i < ec.nstreams; i++) {
		ec.stream_cat[i] = i % ec.ncats;
		snprintf(ec.stream_name[i], sizeof(ec.stream_name[i]), "%s-%d",
		    ec.cat_name[ec.stream_cat[i]], i);
	}
	for (i = 0; i < ec.nfollowers; i++) {
		ec.followers[i].category = i % ec.ncats;
		ec.followers[i].cursor = 1;
	}
}

/* ------------------------------------------------------------------ output */

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct(const uint64_t *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)ceil(p / 100.0 * (double)n);
	if (i > 0)
		i--;
	if (i >= n)
		i = n - 1;
	return (double)v[i] / 1e6;
}

static void
write_summary(FILE *f)
{
	uint64_t writes = 0, reads = 0, ok = 0, fail = 0, indet = 0, other = 0, total = 0;
	uint64_t *lat;
	size_t i, nlat = 0;
	double dur = (double)ec.t_load_ns / 1e9;
	int k, r, shown;

	lat = malloc((ec.nops ? ec.nops : 1) * sizeof(*lat));
	if (lat == NULL)
		ec_fatal("out of memory");
	for (i = 0; i < ec.nops; i++) {
		const struct ec_op *o = &ec.ops[i];

		if (o->kind == EC_WRITE || o->kind == EC_FORGOTTEN)
			writes++;
		else
			reads++;
		total++;
		switch (o->outcome) {
		case EC_OK:
			ok++;
			break;
		case EC_FAIL:
			fail++;
			if (!(o->status == 409 && o->code &&
			    strcmp(ec.codes[o->code], "STREAM_VERSION_CONFLICT") == 0))
				other++;
			break;
		default:
			indet++;
			other++;
			break;
		}
		if (o->outcome == EC_OK || o->outcome == EC_FAIL)
			lat[nlat++] = o->t_done - o->t_inv;
	}
	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	fprintf(f, "{\"workload\":\"%s\",\"ops\":%llu,\"writes\":%llu,\"reads\":%llu,\"ok\":%llu,"
	    "\"conflicts\":%llu,\"fail\":%llu,\"indeterminate\":%llu,\"errors_5xx\":%llu,"
	    "\"reconnects\":%llu,\"connect_failures\":%llu,\"retries\":%llu,\"client_error_rate\":%.6f,",
	    ec.cfg.workload == EC_MIXED ? "mixed" : "conflict", (unsigned long long)total,
	    (unsigned long long)writes, (unsigned long long)reads, (unsigned long long)ok,
	    (unsigned long long)ec.conflicts, (unsigned long long)fail, (unsigned long long)indet,
	    (unsigned long long)ec.errors_5xx, (unsigned long long)ec.reconnects,
	    (unsigned long long)ec.connect_fails, (unsigned long long)ec.retries, total ? (double)other / (double)total : 0.0);
	fprintf(f, "\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},",
	    pct(lat, nlat, 50), pct(lat, nlat, 99), nlat ? (double)lat[nlat - 1] / 1e6 : 0.0);
	fprintf(f, "\"start_unix\":%.6f,", ec.t0_unix);
	fprintf(f, "\"duration_s\":%.3f,\"ops_per_s\":%.1f,\"final_read_s\":%.3f,"
	    "\"final_rereads\":%llu,\"follower_polls\":%llu,\"rounds\":%llu,\"rounds_bad\":%llu,\"prefix\":",
	    dur, dur > 0 ? (double)total / dur : 0.0, (double)ec.t_final_ns / 1e9,
	    (unsigned long long)ec.final_rereads, (unsigned long long)ec.follower_polls, (unsigned long long)ec.rounds,
	    (unsigned long long)ec.rounds_bad);
	evtool_json_str(f, ec.cfg.prefix);
	fprintf(f, ",\"seed\":%llu,\"inject\":[", (unsigned long long)ec.cfg.seed);
	for (k = 0, i = 0; k < EC_INJ_NKINDS; k++) {
		if (ec.cfg.inject & (1u << k)) {
			fprintf(f, "%s\"%s\"", i++ ? "," : "", ec_inject_names[k]);
		}
	}
	fprintf(f, "],\"violations\":{");
	total = 0;
	for (k = 0; k < EC_NINV; k++) {
		fprintf(f, "%s\"%s\":%llu", k ? "," : "", ec_inv_names[k], (unsigned long long)ec.viol[k]);
		total += ec.viol[k];
	}
	fprintf(f, "},\"violations_total\":%llu,\"examples\":[", (unsigned long long)total);
	shown = 0;
	if (ec.round_example[0]) {
		evtool_json_str(f, ec.round_example);
		shown++;
	}
	/* round robin over the invariants, so one of them cannot hide the others */
	for (r = 0; shown < EC_EXAMPLES; r++) {
		int any = 0;

		for (k = 0; k < EC_NINV && shown < EC_EXAMPLES; k++) {
			if (r >= ec.nexamples[k])
				continue;
			any = 1;
			if (shown++)
				fputc(',', f);
			evtool_json_str(f, ec.examples[k][r]);
		}
		if (!any)
			break;
	}
	fprintf(f, "]}\n");
	free(lat);
}

static void
write_history(const char *path)
{
	FILE *f = fopen(path, "w");
	char idt[37];
	size_t i;

	if (f == NULL) {
		fprintf(stderr, "evcheck: could not open \"%s\": %s\n", path, strerror(errno));
		return;
	}
	for (i = 0; i < ec.nops; i++) {
		const struct ec_op *o = &ec.ops[i];

		fprintf(f, "{\"op\":%zu,\"kind\":\"%s\",\"client\":%u,\"t_inv_us\":%llu,"
		    "\"t_done_us\":%llu,", i, kind_names[o->kind], o->client,
		    (unsigned long long)(o->t_inv / 1000), (unsigned long long)(o->t_done / 1000));
		if (o->kind == EC_CREAD)
			fprintf(f, "\"category\":\"%s\",", ec.cat_name[o->key]);
		else
			fprintf(f, "\"stream\":\"%s\",", ec.stream_name[o->key]);
		if (o->kind == EC_WRITE || o->kind == EC_FORGOTTEN) {
			ec_uuid_text(o->id, idt);
			fprintf(f, "\"id\":\"%s\",", idt);
			if (o->ev != EC_NOEV)
				fprintf(f, "\"expectedVersion\":%lld,", (long long)o->ev);
			if (ec.cfg.workload == EC_CONFLICT)
				fprintf(f, "\"round\":%u,", o->round);
		} else if (o->kind != EC_VERSION) {
			fprintf(f, "\"from\":%lld,", (long long)o->ev);
		}
		fprintf(f, "\"outcome\":\"%s\"", outcome_names[o->outcome]);
		if (o->status)
			fprintf(f, ",\"status\":%u", o->status);
		if (o->retries)
			fprintf(f, ",\"retries\":%u", o->retries);
		if (o->code)
			fprintf(f, ",\"code\":\"%s\"", ec.codes[o->code]);
		if (o->why)
			fprintf(f, ",\"why\":\"%s\"", why_names[o->why]);
		if (o->outcome == EC_OK) {
			if (o->kind == EC_WRITE)
				fprintf(f, ",\"position\":%lld,\"globalPosition\":%lld",
				    (long long)o->pos, (long long)o->gpos);
			else if (o->kind == EC_VERSION)
				fprintf(f, ",\"version\":%lld", (long long)o->pos);
			else
				fprintf(f, ",\"last\":%lld,\"count\":%lld%s", (long long)o->pos,
				    (long long)o->gpos, o->full ? ",\"full\":true" : "");
		}
		fputs("}\n", f);
	}
	if (fclose(f) != 0)
		fprintf(stderr, "evcheck: could not write \"%s\": %s\n", path, strerror(errno));
}

/* ------------------------------------------------------------------ main */

volatile sig_atomic_t ec_got_signal;

/* Outside the load phase: remember the signal; the final read and the check go on. */
static void
flag_signal(int sig)
{
	(void)sig;
	ec_got_signal = 1;
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	FILE *out = stdout;
	uint64_t t, total = 0;
	int k;

	ec.cfg.workload = EC_MIXED;
	ec.cfg.clients = 8;
	ec.cfg.duration_s = 10;
	ec.cfg.rounds = 1000;
	ec.cfg.streams = 50;
	ec.cfg.categories = 5;
	ec.cfg.readers = -1;
	ec.cfg.final_timeout_s = 30;
	ec.cfg.url = "http://127.0.0.1:8080";
	parse_args(argc, argv);
	if (opt_help) {
		usage(stdout);
		return EXIT_CLEAN;
	}
	if (opt_version) {
		printf("evcheck %s\n", PACKAGE_VERSION);
		return EXIT_CLEAN;
	}
	check_config();
	setup_names();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = flag_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	if (ec.cfg.json && (out = fopen(ec.cfg.json, "w")) == NULL)
		ec_fatal("could not open \"%s\": %s", ec.cfg.json, strerror(errno));
	if (!ec.cfg.quiet)
		fprintf(stderr, "evcheck: %s workload, %d clients, %d followers, prefix %s, seed %llu\n",
		    ec.cfg.workload == EC_MIXED ? "mixed" : "conflict", ec.cfg.clients,
		    ec.nfollowers, ec.cfg.prefix, (unsigned long long)ec.cfg.seed);
	if (ec_run() < 0)
		return EXIT_USAGE;
	if (ec.cfg.history)
		write_history(ec.cfg.history);
	t = ec_now_ns();
	if (ec_final_read() < 0) {
		fprintf(stderr, "evcheck: the final read failed within --final-timeout\n");
		return EXIT_USAGE;
	}
	ec.t_final_ns = ec_now_ns() - t;
	ec_apply_inject();
	ec_check();
	write_summary(out);
	if (out != stdout && fclose(out) != 0)
		ec_fatal("could not write \"%s\": %s", ec.cfg.json, strerror(errno));
	fflush(stdout);
	for (k = 0; k < EC_NINV; k++)
		total += ec.viol[k];
	if (!ec.cfg.quiet)
		fprintf(stderr, "evcheck: %zu ops, %llu violations\n", ec.nops, (unsigned long long)total);
	return total ? EXIT_VIOLATIONS : EXIT_CLEAN;
}
