/*
 * heritage.h - everything a worker inherits from the master.
 *
 * The master fills one struct heritage before fork(); the child closes
 * every other descriptor and builds the rest (event base, database
 * connections, caches) itself after the fork.
 */
#ifndef EVENTODB_HERITAGE_H
#define EVENTODB_HERITAGE_H

#include <stdint.h>
#include <sys/types.h>

struct config;

struct heritage {
	int		 listen_fd;	/* bound, listening, non-blocking */
	int		 death_fd;	/* read end of the master's pipe: EOF = master gone */
	int		 status_fd;	/* write end (non-blocking) of the pipe to the master */
	/*
	 * Worker number, 0..n-1.  During a reload the retiring worker of the
	 * older generation and its replacement briefly share it: per-process
	 * state (e.g. in shared memory) is keyed by (slot, gen), or must wait
	 * for the master to reset it when it reaps the old one.
	 */
	int		 slot;
	unsigned	 gen;		/* generation the worker was forked in */
	int		 shm_slot;	/* its slot in the shared-memory segment (shm/), -1: none */
	int		 spare_fd;	/* the spare: its end of a socket pair to the master, else -1;
				 * slot and listen_fd are -1 until it is promoted */
	pid_t		 master_pid;
	const struct config *cfg;
	const char	*conninfo;	/* PostgreSQL connection string */
	const char	*version;
};

/*
 * Worker -> master messages on status_fd: fixed size, so each write is
 * atomic (< PIPE_BUF) and the master reads whole messages.  READY once
 * the worker accepts connections and a database connection is up; BEAT
 * every second from its event loop
 * (a worker silent for heartbeat-timeout seconds is killed as hung);
 * ACCEPTING when a replacement among serving peers of its generation
 * accepts before its pool has a connection (worker.c; the master counts
 * it as ready only outside a reload).
 */
#define WRK_MSG_READY		1
#define WRK_MSG_BEAT		2
#define WRK_MSG_ACCEPTING	3

/*
 * Master -> spare on spare_fd: the slot it now fills, sent with the
 * listening socket as SCM_RIGHTS (server/master.c).  EOF instead: the
 * spare is not needed and exits.
 */
struct wrk_spare_msg {
	int32_t		 slot;
	uint32_t	 gen;
	int32_t		 shm_slot;
};

struct wrk_msg {
	int32_t		 type;
	int32_t		 slot;
	uint32_t	 gen;
	int32_t		 pid;
};

#endif
