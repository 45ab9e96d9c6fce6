/*
 * testpg.h - the private PostgreSQL cluster of test mode.
 *
 * `eventodbd --test-mode` without a database URL runs its own throwaway
 * cluster (decisions.md 2): initdb in a fresh temporary directory, unix
 * socket only (listen_addresses=''), fsync, synchronous_commit and
 * full_page_writes off, started with pg_ctl.  As root, the cluster runs as
 * an unprivileged user (the given one, else "postgres" if it exists, else
 * "nobody").  testpg_stop() stops it (fast shutdown) and removes the
 * directory; the master calls it on every exit path, including SIGINT and
 * SIGTERM.  Two clusters can run at once (distinct directories, sockets
 * inside them).
 *
 * These functions block; they run in the master before any worker
 * exists and after the last one is gone.
 */
#ifndef EVENTODB_TESTPG_H
#define EVENTODB_TESTPG_H

#include <sys/types.h>

struct testpg {
	char	dir[256];	/* temporary directory, "" when not started */
	char	conninfo[512];	/* libpq connection string for the cluster */
	char	bindir[256];	/* where initdb/pg_ctl were found */
	uid_t	uid;		/* owner of the cluster processes */
	gid_t	gid;
	int	started;
	char	user[64];	/* cluster user name when started as root, else "" */
	pid_t	reaper;		/* cleanup child (see below), 0 if none */
	int	reaper_fd;	/* our end of the reaper's socket pair */
	pid_t	owner;		/* process that started it; only it stops it */
};

/*
 * Create and start the cluster.  run_as may be NULL.  On success returns 0
 * and fills pg->conninfo (e.g. "host=/tmp/eventodbd-XXXX dbname=postgres
 * user=postgres").  On failure returns -1, writes a reason to err, and
 * leaves nothing behind.
 */
int testpg_start(struct testpg *pg, const char *run_as, char *err, size_t errlen);

/*
 * Stop the cluster and remove its directory; safe to call twice.  Does
 * nothing in any process but the one that started it (a forked worker
 * running atexit handlers must not stop the master's cluster).
 *
 * testpg_start() forks one long-lived child, pg->reaper, which stops the
 * cluster and removes the directory if the master dies without calling
 * testpg_stop() (e.g. SIGKILL).  testpg_stop() dismisses and reaps it.  A
 * master that reaps children with waitpid(-1, ...) must expect this pid
 * and must not treat it as a worker.
 */
void testpg_stop(struct testpg *pg);

#endif
