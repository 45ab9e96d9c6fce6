/*
 * prof_test.c - the samplers against a private slot (TAP).
 *
 * Checks what the profiles depend on:
 *   - an allocation made inside json-c (built without frame pointers)
 *     is recorded with a stack that reaches our calling function;
 *   - CPU samples taken while json-c or libevent code runs unwind back
 *     to our functions (through the signal frame);
 *   - frees of sampled blocks return in-use to exactly zero;
 *   - at the default rate the scaled estimate of a known volume is
 *     within 10 % (and the same for a mix of sizes);
 *   - the encoder's output names our functions (symbolised from
 *     /proc/self/maps and our own ELF file);
 *   - the DWARF line table gives a call site's file and line, and a
 *     function's first line (skipped when built without -g).
 * Built with -fno-builtin-malloc so that no malloc/free pair is elided.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <json-c/json.h>

#include "dwarfline.h"
#include "layout.h"
#include "pprof.h"
#include "prof.h"
#include "symbolize.h"

static int ntest, nfail;
static struct sym_ctx *syms;

static void
ok(int cond, const char *fmt, const char *arg)
{
	ntest++;
	if (!cond)
		nfail++;
	printf("%s %d - ", cond ? "ok" : "not ok", ntest);
	printf(fmt, arg);
	printf("\n");
	fflush(stdout);
}

static const char *
fn_of(uint64_t pc)
{
	struct sym_frame fr;

	sym_lookup(syms, pc, &fr);
	return fr.func ? fr.func : "?";
}

static const char *
map_of(uint64_t pc)
{
	struct sym_frame fr;

	sym_lookup(syms, pc, &fr);
	return fr.map ? fr.map->path : "?";
}

static int
stack_has(const uint64_t *pcs, unsigned n, const char *fn)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(fn_of(pcs[i]), fn))
			return 1;
	return 0;
}

static void
clear_slot(struct evshm_slot *s)
{
	memset(s, 0, sizeof(*s));
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- workloads (noinline: they must be frames of their own) ------------------- */

/* Where it was called from (a return address, as a stack holds). */
__attribute__((noinline)) uintptr_t ret_addr(void);
__attribute__((noinline)) uintptr_t
ret_addr(void)
{
	__asm__ volatile("");
	return (uintptr_t)__builtin_return_address(0);
}

static const unsigned line_site_decl = __LINE__ + 3;	/* the line of its name */
__attribute__((noinline)) int line_site(volatile int *x);
__attribute__((noinline)) int
line_site(volatile int *x)
{
	return *x + 1;
}

/* Does this program carry a DWARF line table? */
static int
have_lines(void)
{
	FILE *f = fopen("/proc/self/exe", "rb");
	char *buf = NULL;
	long n;
	struct dwl_table *t = NULL;

	if (!f)
		return 0;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n)) && fread(buf, 1, (size_t)n, f) == (size_t)n)
		t = dwl_load(buf, (size_t)n);
	fclose(f);
	free(buf);
	dwl_free(t);
	return t != NULL;
}

static int
ends_with(const char *s, const char *tail)
{
	size_t a = s ? strlen(s) : 0, b = strlen(tail);

	return a >= b && strcmp(s + a - b, tail) == 0;
}

__attribute__((noinline)) void json_site(void);
__attribute__((noinline)) void
json_site(void)
{
	json_object *o = json_tokener_parse("{\"a\":[1,2,3,{\"b\":\"some text here\"}],\"c\":null}");
	json_object_put(o);
}

__attribute__((noinline)) void cpu_json_site(double secs);
__attribute__((noinline)) void
cpu_json_site(double secs)
{
	double end = now_s() + secs;

	while (now_s() < end)
		json_site();
}

__attribute__((noinline)) void cpu_event_site(double secs);
__attribute__((noinline)) void
cpu_event_site(double secs)
{
	struct evbuffer *b = evbuffer_new();
	double end = now_s() + secs;
	char chunk[512], out[512];

	memset(chunk, 'x', sizeof(chunk));
	while (now_s() < end) {
		for (int i = 0; i < 64; i++)
			evbuffer_add(b, chunk, sizeof(chunk));
		while (evbuffer_get_length(b))
			evbuffer_remove(b, out, sizeof(out));
		(void)evbuffer_search(b, "y", 1, NULL);
	}
	evbuffer_free(b);
}

static void *kept[100000];

__attribute__((noinline)) void alloc_site(size_t total, size_t size, int keep);
__attribute__((noinline)) void
alloc_site(size_t total, size_t size, int keep)
{
	size_t k = 0;

	for (size_t done = 0; done < total; done += size) {
		char *volatile p = malloc(size);
		p[0] = 1;
		if (keep && k < 100000)
			kept[k++] = p;
		else
			free(p);
	}
}

__attribute__((noinline)) void mixed_site(size_t total);
__attribute__((noinline)) void
mixed_site(size_t total)
{
	static const size_t sizes[] = { 16, 100, 1000, 7000, 65536, 300000, 2 << 20 };
	size_t done = 0;

	for (unsigned i = 0; done < total; i++) {
		size_t n = sizes[i % 7];
		char *volatile p = malloc(n);
		p[0] = 1;
		free(p);
		done += n;
	}
}

/* ---- helpers over the slot ----------------------------------------------------- */

/* Sum of the buckets whose stack contains fn. */
static void
alloc_sum(const struct evshm_slot *s, const char *fn, uint64_t *ab, uint64_t *fb, unsigned *nb)
{
	*ab = *fb = 0;
	*nb = 0;
	for (unsigned i = 0; i < EVSHM_ALLOC_BUCKETS; i++) {
		const struct evshm_alloc_bucket *b = &s->alloc[i];
		if (!b->stack_hash || !stack_has(b->pc, b->depth, fn))
			continue;
		*ab += b->alloc_bytes;
		*fb += b->free_bytes;
		(*nb)++;
	}
}

/* CPU samples with the leaf in a file matching lib: how many, and how many reach fn. */
static void
cpu_count(const struct evshm_slot *s, const char *lib, const char *fn, unsigned *nlib,
    unsigned *nreach)
{
	uint64_t head = s->hd.prof.cpu_head;

	*nlib = *nreach = 0;
	for (uint64_t q = head > EVSHM_CPU_RING ? head - EVSHM_CPU_RING : 0; q < head; q++) {
		const struct evshm_cpu_sample *r = &s->cpu[q % EVSHM_CPU_RING];
		if (r->seq != q + 1 || r->depth == 0 || !strstr(map_of(r->pc[0]), lib))
			continue;
		(*nlib)++;
		if (stack_has(r->pc, r->depth, fn))
			(*nreach)++;
	}
}

int
main(void)
{
	struct evshm_slot *slot = calloc(1, sizeof(*slot));
	uint64_t ab, fb;
	unsigned nb, nlib, nreach;
	char msg[256];

	if (!slot)
		return 1;
	printf("1..16\n");
	prof_init();
	syms = sym_open();
	json_site();		/* json-c's own one-time set-up, unsampled */

	/* 1-2: an allocation inside json-c reaches json_site. */
	clear_slot(slot);
	prof_alloc_start(slot, 1);
	json_site();
	prof_alloc_stop();
	sym_add_pid(syms, getpid());
	alloc_sum(slot, "json_site", &ab, &fb, &nb);
	ok(nb > 0, "allocation inside json-c unwinds to json_site (%s)", nb ? "found" : "missing");
	{
		int leaf_in_jsonc = 0;
		for (unsigned i = 0; i < EVSHM_ALLOC_BUCKETS; i++)
			if (slot->alloc[i].stack_hash && slot->alloc[i].depth &&
			    strstr(map_of(slot->alloc[i].pc[0]), "json-c") &&
			    stack_has(slot->alloc[i].pc, slot->alloc[i].depth, "json_site"))
				leaf_in_jsonc = 1;
		ok(leaf_in_jsonc, "its innermost frame is json-c's own caller of malloc%s", "");
	}
	ok(ab > 0 && ab == fb, "every block json_site sampled was freed: in use %s",
	    ab == fb ? "0" : "not 0");

	/* 4-5: kept blocks are in use until freed, then exactly 0. */
	clear_slot(slot);
	prof_alloc_start(slot, 1);
	alloc_site(64 * 1000, 1000, 1);
	alloc_sum(slot, "alloc_site", &ab, &fb, &nb);
	snprintf(msg, sizeof(msg), "%llu of 64000", (unsigned long long)(ab - fb));
	ok(ab - fb >= 64000 && ab - fb < 64000 + 64 * 8, "kept blocks are in use (%s)", msg);
	for (int i = 0; i < 64; i++)
		free(kept[i]);
	prof_alloc_stop();
	alloc_sum(slot, "alloc_site", &ab, &fb, &nb);
	ok(ab == fb, "freed blocks leave in-use at 0%s", "");

	/* 6-7: the default rate's estimate of a known volume. */
	clear_slot(slot);
	prof_alloc_start(slot, PROF_DEFAULT_ALLOC_RATE);
	alloc_site((size_t)1 << 30, 4096, 0);
	alloc_sum(slot, "alloc_site", &ab, &fb, &nb);
	snprintf(msg, sizeof(msg), "%.1f %% of 1 GiB", 100.0 * (double)ab / (double)(1u << 30));
	ok(ab > 0.9 * (1u << 30) && ab < 1.1 * (1u << 30), "4 KiB blocks: estimate %s", msg);
	mixed_site((size_t)1 << 30);
	prof_alloc_stop();
	alloc_sum(slot, "mixed_site", &ab, &fb, &nb);
	snprintf(msg, sizeof(msg), "%.1f %% of 1 GiB", 100.0 * (double)ab / (double)(1u << 30));
	ok(ab > 0.9 * (1u << 30) && ab < 1.1 * (1u << 30), "mixed sizes 16 B..2 MiB: estimate %s", msg);

	/* 8-11: CPU samples inside json-c and libevent reach our functions. */
	clear_slot(slot);
	prof_cpu_start(slot, 1000);
	cpu_json_site(0.4);
	prof_cpu_stop();
	cpu_count(slot, "json-c", "cpu_json_site", &nlib, &nreach);
	snprintf(msg, sizeof(msg), "%u samples", nlib);
	ok(nlib >= 5, "CPU samples land inside json-c (%s)", msg);
	snprintf(msg, sizeof(msg), "%u of %u", nreach, nlib);
	ok(nlib && nreach * 10 >= nlib * 9, "they unwind to cpu_json_site (%s)", msg);
	clear_slot(slot);
	prof_cpu_start(slot, 1000);
	cpu_event_site(0.4);
	prof_cpu_stop();
	cpu_count(slot, "libevent", "cpu_event_site", &nlib, &nreach);
	snprintf(msg, sizeof(msg), "%u samples", nlib);
	ok(nlib >= 5, "CPU samples land inside libevent (%s)", msg);
	snprintf(msg, sizeof(msg), "%u of %u", nreach, nlib);
	ok(nlib && nreach * 10 >= nlib * 9, "they unwind to cpu_event_site (%s)", msg);

	/* 12-13: encoding names our functions. */
	{
		struct pprof *p = pprof_new();
		unsigned char *buf = NULL;
		size_t len = 0;
		int64_t v[2] = { 1, 10000000 };
		int rc;

		pprof_sample_type(p, "samples", "count");
		pprof_sample_type(p, "cpu", "nanoseconds");
		for (uint64_t q = 0; q < slot->hd.prof.cpu_head && q < EVSHM_CPU_RING; q++)
			pprof_add(p, slot->cpu[q].pc, slot->cpu[q].depth, v, NULL, 0, NULL);
		rc = pprof_encode(p, syms, 0, &buf, &len);
		ok(rc == 0 && len > 100, "profile encoded%s", "");
		ok(buf && memmem(buf, len, "cpu_event_site", 14) != NULL,
		    "its function table names cpu_event_site%s", "");
		free(buf);
		pprof_free(p);
	}

	/* 14-16: file and line from the DWARF line table. */
	if (!have_lines()) {
		for (int i = 0; i < 3; i++)
			ok(1, "# skip built without debug information (-g)%s", "");
	} else {
		static const unsigned call_line = __LINE__ + 1;
		uintptr_t ra = ret_addr();
		volatile int x = 1;
		struct sym_frame fr;
		struct pprof *p = pprof_new();
		unsigned char *buf = NULL;
		size_t len = 0;
		int64_t v[1] = { 1 };
		uint64_t pc = ra - 1;

		sym_lookup(syms, ra - 1, &fr);
		snprintf(msg, sizeof(msg), "%s:%u, expected prof_test.c:%u", fr.file ? fr.file : "?", fr.line,
		    call_line);
		ok(ends_with(fr.file, "t/unit/prof_test.c") && fr.line == call_line, "a call site: %s", msg);
		(void)line_site(&x);
		sym_lookup(syms, (uint64_t)(uintptr_t)line_site, &fr);
		snprintf(msg, sizeof(msg), "%s at %s:%u (declared at line %u)", fr.func ? fr.func : "?",
		    fr.func_file ? fr.func_file : "?", fr.func_line, line_site_decl);
		ok(fr.func && !strcmp(fr.func, "line_site") && ends_with(fr.func_file, "prof_test.c") &&
		    fr.func_line >= line_site_decl && fr.func_line <= line_site_decl + 2,
		    "a function's first line: %s", msg);
		pprof_sample_type(p, "samples", "count");
		pprof_add(p, &pc, 1, v, NULL, 0, NULL);
		ok(pprof_encode(p, syms, 0, &buf, &len) == 0 && buf && memmem(buf, len, "t/unit/prof_test.c", 18),
		    "the profile names the source file%s", "");
		free(buf);
		pprof_free(p);
	}
	sym_close(syms);
	free(slot);
	return nfail ? 1 : 0;
}
