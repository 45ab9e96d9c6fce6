/*
 * signals.h - the master's signal table.
 *
 * One table (signals.c) names every signal the master handles, what it
 * does and its help text; it installs the handlers and feeds --help and
 * the SIGNALS section of eventodbd(8).  Handlers only set flags.
 */
#ifndef EVENTODB_SIGNALS_H
#define EVENTODB_SIGNALS_H

#include <signal.h>
#include <stdio.h>

extern volatile sig_atomic_t sig_stop;		/* SIGTERM or SIGINT */
extern volatile sig_atomic_t sig_stop_signo;
extern volatile sig_atomic_t sig_child;		/* SIGCHLD */
extern volatile sig_atomic_t sig_reload;	/* SIGHUP */

/* Install the handlers with the signals blocked; *old gets the old mask. */
void sig_install(sigset_t *old);
void sig_print_help(FILE *out);

#endif
