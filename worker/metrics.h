/*
 * metrics.h - a worker's side of the shared-memory segment: attaching to
 * its slot, the heartbeat with the connection scoreboard, and GET
 * /metrics (Prometheus text exposition of the whole segment).
 */
#ifndef EVENTODB_METRICS_H
#define EVENTODB_METRICS_H

#include <stdint.h>

struct http_req;

/* Right after fork: attach to shared-memory slot `slot` (-1: none), install the crash reporter. */
void mtr_attach(int slot);
/* From the heartbeat timer, every interval_ns: heartbeat, loop lag, scoreboard. */
void mtr_beat(uint64_t interval_ns);
/* GET /metrics */
void mtr_handle(struct http_req *req);

#endif
