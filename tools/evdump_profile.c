/*
 * evdump_profile.c - `evdump profile cpu|heap|allocs|workers`: pprof
 * profiles from the segment's profiling areas (tools/profile.c builds
 * them; tools/pprof.c encodes; tools/symbolize.c names the functions
 * from the workers' /proc/PID/maps and ELF symbols).
 *
 *   evdump profile cpu [--seconds N] [--worker N] [-o FILE] [--raw]
 *   evdump profile heap|allocs [--worker N] [-o FILE] [--raw]
 *   evdump profile workers [--worker N] [--pprof [-o FILE] [--raw]]
 *
 * Profiles are gzip-compressed protobuf, as Go writes them, for
 * `go tool pprof` and speedscope; --raw writes the protobuf unzipped.
 * A binary profile is never written to a terminal.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "evdump.h"
#include "profile.h"

static void
profile_usage(FILE *f)
{
	fprintf(f,
	    "usage: evdump [instance options] profile cpu [--seconds N] [--worker N] [-o FILE] [--raw]\n"
	    "       evdump [instance options] profile heap|allocs [--worker N] [-o FILE] [--raw]\n"
	    "       evdump [instance options] profile workers [--worker N] [--pprof [-o FILE] [--raw]]\n"
	    "profiles are gzip-compressed pprof protobuf: read them with go tool pprof\n");
}

static int
write_out(const char *path, const unsigned char *buf, size_t len)
{
	FILE *f = stdout;

	if (path && strcmp(path, "-") != 0) {
		f = fopen(path, "we");
		if (!f) {
			fprintf(stderr, "evdump: could not open \"%s\": %s\n", path, strerror(errno));
			return EVD_EXIT_ERROR;
		}
	}
	if (fwrite(buf, 1, len, f) != len || fflush(f) != 0) {
		fprintf(stderr, "evdump: could not write \"%s\": %s\n", path ? path : "stdout",
		    strerror(errno));
		if (f != stdout)
			fclose(f);
		return EVD_EXIT_ERROR;
	}
	if (f != stdout && fclose(f) != 0) {
		fprintf(stderr, "evdump: could not write \"%s\": %s\n", path, strerror(errno));
		return EVD_EXIT_ERROR;
	}
	return EVD_EXIT_OK;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
evd_profile(const struct evshm_hdr *hdr, int argc, char **argv, const char *out)
{
	const char *kind, *outpath = out;
	double seconds = 30;
	int worker = PROFILE_ALL_WORKERS, gzip = 1, as_pprof = 0, rc;
	unsigned char *buf = NULL;
	size_t len = 0;
	char err[256];

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		profile_usage(stdout);
		return EVD_EXIT_OK;
	}
	if (argc < 2) {
		profile_usage(stderr);
		return EVD_EXIT_USAGE;
	}
	kind = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		char *end;

		if ((!strcmp(a, "--seconds") || !strcmp(a, "-s")) && i + 1 < argc) {
			seconds = strtod(argv[++i], &end);
			if (*end || seconds <= 0 || seconds > 3600) {
				fprintf(stderr, "evdump: --seconds must be between 0 and 3600\n");
				return EVD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--worker") && i + 1 < argc) {
			long w = strtol(argv[++i], &end, 10);
			if (*end || w < 0 || w > 100000) {
				fprintf(stderr, "evdump: --worker must be a worker number\n");
				return EVD_EXIT_USAGE;
			}
			worker = (int)w;
		} else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
			outpath = argv[++i];
		} else if (!strcmp(a, "--raw")) {
			gzip = 0;
		} else if (!strcmp(a, "--pprof")) {
			as_pprof = 1;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			profile_usage(stdout);
			return EVD_EXIT_OK;
		} else {
			fprintf(stderr, "evdump: unknown profile option: %s\n", a);
			profile_usage(stderr);
			return EVD_EXIT_USAGE;
		}
	}

	if (!strcmp(kind, "workers") && !as_pprof) {
		FILE *f = stdout;
		if (outpath && strcmp(outpath, "-") != 0 && !(f = fopen(outpath, "we"))) {
			fprintf(stderr, "evdump: could not open \"%s\": %s\n", outpath, strerror(errno));
			return EVD_EXIT_ERROR;
		}
		rc = profile_workers_text(hdr, worker, f);
		if (f != stdout && fclose(f) != 0)
			rc = -1;
		return rc < 0 ? EVD_EXIT_ERROR : EVD_EXIT_OK;
	}
	if ((!outpath || !strcmp(outpath, "-")) && isatty(STDOUT_FILENO)) {
		fprintf(stderr, "evdump: not writing a binary profile to a terminal: use -o FILE\n");
		return EVD_EXIT_USAGE;
	}

	if (!strcmp(kind, "cpu")) {
		struct profile_cpu *c = profile_cpu_begin(hdr, worker);
		double until = mono_s() + seconds;

		if (!c) {
			fprintf(stderr, "evdump: out of memory\n");
			return EVD_EXIT_ERROR;
		}
		for (;;) {
			double left = until - mono_s();
			if (left <= 0)
				break;
			long step = (long)profile_cpu_poll_ms(c);
			sleep_ms(left * 1000 < step ? (long)(left * 1000) + 1 : step);
			profile_cpu_poll(c);
		}
		rc = profile_cpu_end(c, gzip, &buf, &len, err, sizeof(err));
	} else if (!strcmp(kind, "heap")) {
		rc = profile_heap(hdr, PROFILE_HEAP, worker, gzip, &buf, &len, err, sizeof(err));
	} else if (!strcmp(kind, "allocs")) {
		rc = profile_heap(hdr, PROFILE_ALLOCS, worker, gzip, &buf, &len, err, sizeof(err));
	} else if (!strcmp(kind, "workers")) {
		rc = profile_workers_pprof(hdr, worker, gzip, &buf, &len, err, sizeof(err));
	} else {
		fprintf(stderr, "evdump: unknown profile \"%s\" (cpu, heap, allocs or workers)\n", kind);
		return EVD_EXIT_USAGE;
	}
	if (rc < 0) {
		fprintf(stderr, "evdump: %s\n", err);
		return EVD_EXIT_ERROR;
	}
	rc = write_out(outpath, buf, len);
	free(buf);
	return rc;
}
