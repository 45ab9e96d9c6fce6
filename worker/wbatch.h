/*
 * wbatch.h - group commit of stream.write (see wbatch.c).
 */
#ifndef EVENTODB_WBATCH_H
#define EVENTODB_WBATCH_H

#include <stddef.h>

struct rpc_ctx;

struct event_base;

/*
 * max writes per batch (1 = one write per transaction) and JSON bytes;
 * pool = PostgreSQL connections of the worker (lanes use all but one).
 */
void wb_init(struct event_base *base, int max, size_t max_bytes, int pool);
/* Queue a validated write (c->ns, c->msgid and c->pv[0..5] set). */
void wb_submit(struct rpc_ctx *c);

#endif
