/*
 * debug_pprof.h - GET /debug/pprof/... (and /debug/test/... in test
 * builds): profiles of the shared-memory segment over HTTP, for loopback
 * clients and admin-token holders only.
 */
#ifndef EVENTODB_DEBUG_PPROF_H
#define EVENTODB_DEBUG_PPROF_H

#include <stddef.h>

struct event_base;
struct http_req;

void dbg_init(struct event_base *base, int enable_test_rpc);
/* Any path under /debug/. */
void dbg_handle(struct http_req *req);

/* The known workloads of the accuracy tests (noinline, named for profiles). */
size_t prof_test_alloc_site(size_t total, size_t chunk, int keep);
double prof_test_burn_cpu(long ms);

#endif
