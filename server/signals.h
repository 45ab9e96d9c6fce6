/*
 * signals.h - the master's signal table.
 *
 * One table (signals.c) names every signal the master handles, what it
 * does and its help text.  It installs the handlers and feeds --help and
 * the SIGNALS section of eventodbd(8) (t/91-config.t compares them).
 * Handlers only set the flags below; the master loop acts on them.
 */
#ifndef EVENTODB_SIGNALS_H
#define EVENTODB_SIGNALS_H

#include <signal.h>
#include <stdio.h>

extern volatile sig_atomic_t sig_stop;		/* SIGTERM or SIGINT: count received */
extern volatile sig_atomic_t sig_stop_signo;
extern volatile sig_atomic_t sig_child;		/* SIGCHLD */
extern volatile sig_atomic_t sig_reload;	/* SIGHUP */

/* Install the handlers with the signals blocked; *old gets the old mask. */
void sig_install(sigset_t *old);
/* Restore default dispositions in a freshly forked child. */
void sig_reset_child(void);
void sig_print_help(FILE *out);
/* "SIGTERM" for SIGTERM, "signal N" for others. */
const char *sig_name(int signo);

#endif
