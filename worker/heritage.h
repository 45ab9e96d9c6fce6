/*
 * heritage.h - everything a worker inherits from the master.
 *
 * The master fills one struct heritage before fork(); the child closes
 * every other descriptor and builds the rest (event base, database
 * connections, caches) itself after the fork.
 */
#ifndef EVENTODB_HERITAGE_H
#define EVENTODB_HERITAGE_H

#include <sys/types.h>

struct config;

struct heritage {
	int		 listen_fd;	/* bound, listening, non-blocking */
	int		 death_fd;	/* read end of the master's pipe: EOF = master gone */
	int		 slot;		/* worker number, 0..n-1 */
	unsigned	 gen;		/* generation the worker was forked in */
	pid_t		 master_pid;
	const struct config *cfg;
	const char	*conninfo;	/* PostgreSQL connection string */
	const char	*version;
};

#endif
