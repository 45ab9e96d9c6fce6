/*
 * signals.c - the master's signal table (see signals.h).
 */
#include "config.h"

#include <string.h>

#include "signals.h"

volatile sig_atomic_t sig_stop;
volatile sig_atomic_t sig_stop_signo;
volatile sig_atomic_t sig_child;
volatile sig_atomic_t sig_reload;

static void
on_stop(int signo)
{
	sig_stop = 1;
	sig_stop_signo = signo;
}

static void
on_child(int signo)
{
	sig_child = 1;
}

static void
on_reload(int signo)
{
	sig_reload = 1;
}

static const struct {
	int	 signo;
	const char *name;
	void	(*handler)(int);
	const char *help;
} signal_table[] = {
	{ SIGTERM, "SIGTERM", on_stop,   "stop accepting, finish requests in flight, exit 0" },
	{ SIGINT,  "SIGINT",  on_stop,   "as SIGTERM" },
	{ SIGHUP,  "SIGHUP",  on_reload, "logged; configuration reload is not implemented yet" },
	{ SIGCHLD, "SIGCHLD", on_child,  "reap and replace exited workers" },
	{ SIGPIPE, "SIGPIPE", NULL,      "ignored" },
};

void
sig_install(sigset_t *old)
{
	sigset_t block;
	struct sigaction sa;

	sigemptyset(&block);
	for (size_t i = 0; i < sizeof(signal_table) / sizeof(signal_table[0]); i++)
		if (signal_table[i].handler)
			sigaddset(&block, signal_table[i].signo);
	sigprocmask(SIG_BLOCK, &block, old);
	for (size_t i = 0; i < sizeof(signal_table) / sizeof(signal_table[0]); i++) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = signal_table[i].handler ? signal_table[i].handler : SIG_IGN;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = signal_table[i].signo == SIGCHLD ? SA_NOCLDSTOP : 0;
		sigaction(signal_table[i].signo, &sa, NULL);
	}
}

void
sig_print_help(FILE *out)
{
	fprintf(out, "\nsignals (to the master process):\n");
	for (size_t i = 0; i < sizeof(signal_table) / sizeof(signal_table[0]); i++)
		fprintf(out, "  %-26s %s\n", signal_table[i].name, signal_table[i].help);
}
