/*
 * signals.c - the master's signal table (see signals.h).
 *
 * The handlers are async-signal-safe: each stores into a volatile
 * sig_atomic_t and returns.  The signals stay blocked except while the
 * master sleeps in ppoll(), so a flag is never set behind the loop's back.
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
	sig_stop++;
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
	{ SIGTERM, "SIGTERM", on_stop,   "stop accepting, let requests in flight finish, exit 0; workers still busy after shutdown-timeout are killed; a second SIGTERM or SIGINT kills them at once" },
	{ SIGINT,  "SIGINT",  on_stop,   "as SIGTERM" },
	{ SIGHUP,  "SIGHUP",  on_reload, "re-read and validate the configuration; if valid, start a new generation of workers and retire the old ones gracefully; if not, log why and keep running" },
	{ SIGCHLD, "SIGCHLD", on_child,  "reap exited workers and replace them (with back-off when they keep failing at start)" },
	{ SIGPIPE, "SIGPIPE", NULL,      "ignored" },
};
#define NSIGNALS (sizeof(signal_table) / sizeof(signal_table[0]))

void
sig_install(sigset_t *old)
{
	sigset_t block;
	struct sigaction sa;

	sigemptyset(&block);
	for (size_t i = 0; i < NSIGNALS; i++)
		if (signal_table[i].handler)
			sigaddset(&block, signal_table[i].signo);
	sigprocmask(SIG_BLOCK, &block, old);
	for (size_t i = 0; i < NSIGNALS; i++) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = signal_table[i].handler ? signal_table[i].handler : SIG_IGN;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = signal_table[i].signo == SIGCHLD ? SA_NOCLDSTOP : 0;
		sigaction(signal_table[i].signo, &sa, NULL);
	}
}

void
sig_reset_child(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NSIGNALS; i++)
		if (signal_table[i].handler)
			sigaction(signal_table[i].signo, &sa, NULL);
}

void
sig_print_help(FILE *out)
{
	fprintf(out, "\nsignals (to the master process):\n");
	for (size_t i = 0; i < NSIGNALS; i++)
		fprintf(out, "  %-26s %s\n", signal_table[i].name, signal_table[i].help);
}

const char *
sig_name(int signo)
{
	static char buf[32];

	for (size_t i = 0; i < NSIGNALS; i++)
		if (signal_table[i].signo == signo)
			return signal_table[i].name;
	if (sigabbrev_np(signo)) {
		snprintf(buf, sizeof(buf), "SIG%s", sigabbrev_np(signo));
		return buf;
	}
	snprintf(buf, sizeof(buf), "signal %d", signo);
	return buf;
}
