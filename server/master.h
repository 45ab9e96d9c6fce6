/*
 * master.h - the master process: forks, watches, reloads and replaces
 * workers (the state machine is described in master.c).
 */
#ifndef EVENTODB_MASTER_H
#define EVENTODB_MASTER_H

#include <signal.h>

struct config;
struct heritage;

/*
 * Run the master until it has stopped.  tmpl has listen_fd, conninfo,
 * version and master_pid set; cfg (heap-allocated, owned by the master
 * from now on: a reload replaces it) says how many workers to run.  argc
 * and argv are the original command line, parsed again on every reload.
 * The handlers of signals.c are installed and blocked; waitmask is the
 * mask to sleep with (and the workers' mask).  Returns the exit status.
 */
int srv_master_run(struct heritage *tmpl, struct config *cfg, int argc, char **argv,
    const sigset_t *waitmask);

#endif
