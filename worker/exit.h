/*
 * exit.h - the exit-status contract between a worker and the master.
 */
#ifndef EVENTODB_EXIT_H
#define EVENTODB_EXIT_H

#define WRK_EXIT_OK		0	/* asked to stop, stopped */
#define WRK_EXIT_INIT		3	/* could not initialise: back off before respawning */
#define WRK_EXIT_MASTER_GONE	4	/* the master died: nothing to respawn */
#define WRK_EXIT_FATAL		5	/* the configuration cannot work: never respawned
					 * (nginx's "fatal" exit 2); only a reload refills the slot */
#define WRK_EXIT_LEAKS		23	/* eventodbd-asan only: LeakSanitizer found leaks at a
					 * graceful stop (LSan's own exit code) */

#endif
