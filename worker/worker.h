/*
 * worker.h - a worker process: one libevent loop serving HTTP.
 */
#ifndef EVENTODB_WORKER_H
#define EVENTODB_WORKER_H

struct heritage;

/* Run the worker; never returns. */
void wrk_main(const struct heritage *h) __attribute__((noreturn));
void wrk_beat(void);

#endif
