/*
 * meta.c - the tables of counters.def and labels.def as data, histogram
 * arithmetic, and the small process facts both sides need (default
 * segment name, is a master still running); see meta.h.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "meta.h"

#define SHM_KIND_counter	SHM_COUNTER
#define SHM_KIND_gauge		SHM_GAUGE

static const char *const none_labels[] = { "" };
static const char *const method_labels[] = {
#define EVSHM_METHOD(id, text)	text,
#include "labels.def"
};
static const char *const endpoint_labels[] = {
#define EVSHM_ENDPOINT(id, text) text,
#include "labels.def"
};
static const char *const status_labels[] = {
#define EVSHM_STATUS(id, text)	text,
#include "labels.def"
};
static const char *const errcode_labels[] = {
#define EVSHM_ERRCODE(id, text)	text,
#include "labels.def"
};

const struct shm_labelset shm_dims[SHM_NDIMS] = {
	[SHM_DIM_none]     = { "none",     "",         none_labels,     1,                  1 },
	[SHM_DIM_method]   = { "method",   "method",   method_labels,   EVSHM_method_N,     EVSHM_method_MAX },
	[SHM_DIM_endpoint] = { "endpoint", "endpoint", endpoint_labels, EVSHM_endpoint_N,   EVSHM_endpoint_MAX },
	[SHM_DIM_status]   = { "status",   "code",     status_labels,   EVSHM_status_N,     EVSHM_status_MAX },
	[SHM_DIM_errcode]  = { "errcode",  "error",    errcode_labels,  EVSHM_errcode_N,    EVSHM_errcode_MAX },
};

const struct shm_counter_meta shm_counters[] = {
#define EVSHM_COUNTER(name, kind, unit, labels, desc) \
	{ #name, SHM_KIND_##kind, #unit, SHM_DIM_##labels, desc, \
	  (unsigned)(offsetof(struct evshm_counters, name) / sizeof(uint64_t)) },
#include "counters.def"
};
const unsigned shm_ncounters = sizeof(shm_counters) / sizeof(shm_counters[0]);

const struct shm_hist_meta shm_hists[] = {
#define EVSHM_HISTOGRAM(name, unit, labels, desc) \
	{ #name, #unit, SHM_DIM_##labels, desc, \
	  (unsigned)(offsetof(struct evshm_hists, name) / sizeof(struct evshm_hist)) },
#include "counters.def"
};
const unsigned shm_nhists = sizeof(shm_hists) / sizeof(shm_hists[0]);

const char *
shm_label(enum shm_dim d, unsigned i, char *buf, size_t len)
{
	if (i < shm_dims[d].n)
		return shm_dims[d].labels[i];
	snprintf(buf, len, "#%u", i);
	return buf;
}

unsigned
shm_label_index(enum shm_dim d, const char *text)
{
	for (unsigned i = 1; i < shm_dims[d].n; i++)
		if (strcmp(shm_dims[d].labels[i], text) == 0)
			return i;
	if (text[0] == '#') {
		char *end;
		unsigned long v = strtoul(text + 1, &end, 10);
		if (*end == '\0' && v < shm_dims[d].max)
			return (unsigned)v;
	}
	return 0;
}

unsigned
shm_status_index(int status)
{
	/* Built on first use from the label texts: no second list to keep in step. */
	static uint8_t map[600];
	static int built;

	if (!built) {
		for (unsigned i = 1; i < EVSHM_status_N; i++) {
			int s = atoi(status_labels[i]);
			if (s > 0 && s < 600)
				map[s] = (uint8_t)i;
		}
		built = 1;
	}
	return status > 0 && status < 600 ? map[status] : 0;
}

unsigned
shm_errcode_index(const char *code)
{
	return code ? shm_label_index(SHM_DIM_errcode, code) : 0;
}

unsigned
shm_endpoint_index(const char *p)
{
	if (p[0] != '/')
		return EVSHM_EP_OTHER;
	switch (p[1]) {
	case 'r':
		return strcmp(p, "/rpc") == 0 ? EVSHM_EP_RPC : EVSHM_EP_OTHER;
	case 'h':
		return strcmp(p, "/health") == 0 ? EVSHM_EP_HEALTH : EVSHM_EP_OTHER;
	case 'v':
		return strcmp(p, "/version") == 0 ? EVSHM_EP_VERSION : EVSHM_EP_OTHER;
	case 'm':
		return strcmp(p, "/metrics") == 0 ? EVSHM_EP_METRICS : EVSHM_EP_OTHER;
	case 's':
		return strcmp(p, "/subscribe") == 0 ? EVSHM_EP_SUBSCRIBE : EVSHM_EP_OTHER;
	case 'i':
		return strcmp(p, "/import") == 0 ? EVSHM_EP_IMPORT : EVSHM_EP_OTHER;
	case 'd':
		return strncmp(p, "/debug/", 7) == 0 ? EVSHM_EP_DEBUG : EVSHM_EP_OTHER;
	default:
		return EVSHM_EP_OTHER;
	}
}

const struct shm_counter_meta *
shm_counter_find(const char *name)
{
	for (unsigned i = 0; i < shm_ncounters; i++)
		if (strcmp(shm_counters[i].name, name) == 0)
			return &shm_counters[i];
	return NULL;
}

const struct shm_hist_meta *
shm_hist_find(const char *name)
{
	for (unsigned i = 0; i < shm_nhists; i++)
		if (strcmp(shm_hists[i].name, name) == 0)
			return &shm_hists[i];
	return NULL;
}

uint64_t
shm_hist_lower_ns(unsigned i)
{
	unsigned e, m;

	if (i < EVSHM_HIST_SUB)
		return (uint64_t)i << (EVSHM_HIST_MIN_SHIFT - EVSHM_HIST_SUB_BITS);
	if (i >= EVSHM_HIST_OVERFLOW)
		return (uint64_t)1 << EVSHM_HIST_MAX_SHIFT;
	e = EVSHM_HIST_MIN_SHIFT + (i - EVSHM_HIST_SUB) / EVSHM_HIST_SUB;
	m = (i - EVSHM_HIST_SUB) % EVSHM_HIST_SUB;
	return ((uint64_t)1 << e) + ((uint64_t)m << (e - EVSHM_HIST_SUB_BITS));
}

uint64_t
shm_hist_upper_ns(unsigned i)
{
	if (i >= EVSHM_HIST_OVERFLOW)
		return UINT64_MAX;
	return shm_hist_lower_ns(i + 1);
}

double
shm_hist_quantile_ns(const struct evshm_hist *h, double q)
{
	uint64_t total = 0, cum = 0;
	double rank;

	for (unsigned i = 0; i < EVSHM_HIST_USED; i++)
		total += h->bucket[i];
	if (total == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	rank = q * (double)total;
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < EVSHM_HIST_USED; i++) {
		uint64_t n = h->bucket[i];
		if (n == 0)
			continue;
		if ((double)(cum + n) >= rank) {
			double lo = (double)shm_hist_lower_ns(i);
			double hi = i >= EVSHM_HIST_OVERFLOW ? lo * 2 : (double)shm_hist_upper_ns(i);
			return lo + (hi - lo) * ((rank - (double)cum) / (double)n);
		}
		cum += n;
	}
	return (double)shm_hist_lower_ns(EVSHM_HIST_OVERFLOW);
}

uint64_t
shm_hist_max_ns(const struct evshm_hist *h)
{
	for (unsigned i = EVSHM_HIST_USED; i-- > 0;)
		if (h->bucket[i]) {
			uint64_t u = shm_hist_upper_ns(i);
			return u == UINT64_MAX ? shm_hist_lower_ns(i) : u;
		}
	return 0;
}

const char *
shm_wstate_name(uint32_t state)
{
	static const char *const names[EVSHM_W_NSTATES] = {
		[EVSHM_W_EMPTY] = "empty", [EVSHM_W_FORKED] = "forked",
		[EVSHM_W_STARTING] = "starting", [EVSHM_W_READY] = "ready",
		[EVSHM_W_DRAINING] = "draining", [EVSHM_W_STOPPED] = "stopped",
	};
	return state < EVSHM_W_NSTATES ? names[state] : "unknown";
}

void
shm_default_name(int port, char *buf, size_t len)
{
	snprintf(buf, len, "/eventodbd.%d", port);
}

uint64_t
shm_proc_start_ticks(int32_t pid)
{
	char path[64], buf[1024], *p;
	FILE *f;
	size_t n;
	unsigned long long v = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* Fields after ")": state is field 3; starttime is field 22. */
	for (int field = 2; field < 22 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p + 1, "%llu", &v) != 1)
		return 0;
	return v;
}

int
shm_pid_running(int32_t pid, uint64_t ticks)
{
	uint64_t t;

	if (pid <= 0)
		return 0;
	if (kill(pid, 0) < 0 && errno != EPERM)
		return 0;
	if (ticks == 0)
		return 1;
	t = shm_proc_start_ticks(pid);
	return t == 0 || t == ticks;	/* unreadable /proc: trust kill() */
}
