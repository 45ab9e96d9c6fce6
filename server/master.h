/*
 * master.h - the master process: forks, watches and replaces workers.
 */
#ifndef EVENTODB_MASTER_H
#define EVENTODB_MASTER_H

#include <signal.h>

struct heritage;

/*
 * Run the master loop with `nworkers` workers built from `tmpl`
 * (listen_fd, cfg, conninfo, version set).  Returns the process exit
 * status once every worker has stopped.
 */
int srv_master_run(struct heritage *tmpl, int nworkers, const sigset_t *waitmask);

#endif
