/*
 * master.c - the master's state machine.
 *
 *   STARTING --workers forked--> RUNNING --SIGTERM/SIGINT--> DRAINING --> STOPPED
 *
 * RUNNING: a worker that exits is replaced at once if it had run for a
 * while; one that dies quickly again and again is replaced with
 * exponential back-off (up to 30 s), so a worker that cannot start does
 * not spin.  DRAINING: every worker gets SIGTERM and finishes what it is
 * doing; after the deadline the rest get SIGKILL.  The master only signals
 * pids it forked, never the process group.
 *
 * Workers hold the read end of a pipe whose write end only the master
 * holds: when the master dies, however it dies, every worker sees EOF.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exit.h"
#include "heritage.h"
#include "log.h"
#include "master.h"
#include "signals.h"
#include "worker.h"

#define STOP_DEADLINE_S		15
#define QUICK_DEATH_S		2
#define MAX_BACKOFF_MS		30000

enum master_state { MS_STARTING, MS_RUNNING, MS_DRAINING, MS_STOPPED };
static const char *const state_names[] = { "starting", "running", "draining", "stopped" };

struct wslot {
	pid_t		 pid;		/* 0 = empty */
	unsigned	 gen;
	double		 started;	/* monotonic seconds */
	double		 next_start;	/* when to respawn an empty slot */
	int		 backoff_ms;
};

static enum master_state state;
static struct wslot *slots;
static int nslots;
static unsigned generation = 1;
static int death_pipe[2] = { -1, -1 };

static double
mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
set_state(enum master_state s)
{
	if (s != state)
		log_info("master state %s -> %s", state_names[state], state_names[s]);
	state = s;
}

static void
spawn(struct heritage *tmpl, int i, const sigset_t *origmask)
{
	struct heritage h = *tmpl;
	pid_t pid;

	h.slot = i;
	h.gen = generation;
	h.death_fd = death_pipe[0];
	pid = fork();
	if (pid < 0) {
		log_error("could not fork worker %d: %s", i, strerror(errno));
		slots[i].next_start = mono() + 1;
		return;
	}
	if (pid == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		sigaction(SIGCHLD, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
		close(death_pipe[1]);
		sigprocmask(SIG_SETMASK, origmask, NULL);
		wrk_main(&h);
	}
	slots[i].pid = pid;
	slots[i].gen = generation;
	slots[i].started = mono();
	log_info("worker %d started pid=%d gen=%u", i, (int)pid, generation);
}

static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "status=%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal=%d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status=unknown");
}

static void
reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		char how[64];
		int i;

		for (i = 0; i < nslots; i++)
			if (slots[i].pid == pid)
				break;
		if (i == nslots)
			continue;	/* not a worker (e.g. the test-mode cluster's helper) */
		describe_exit(status, how, sizeof(how));
		slots[i].pid = 0;
		if (state == MS_DRAINING) {
			log_info("worker %d exited pid=%d %s", i, (int)pid, how);
			continue;
		}
		if (mono() - slots[i].started < QUICK_DEATH_S) {
			slots[i].backoff_ms = slots[i].backoff_ms ? slots[i].backoff_ms * 2 : 100;
			if (slots[i].backoff_ms > MAX_BACKOFF_MS)
				slots[i].backoff_ms = MAX_BACKOFF_MS;
		} else
			slots[i].backoff_ms = 0;
		slots[i].next_start = mono() + slots[i].backoff_ms / 1000.0;
		log_warn("worker %d exited pid=%d %s; restarting in %d ms", i, (int)pid, how,
		    slots[i].backoff_ms);
	}
}

static int
alive_workers(void)
{
	int n = 0;
	for (int i = 0; i < nslots; i++)
		if (slots[i].pid)
			n++;
	return n;
}

static void
signal_workers(int signo)
{
	for (int i = 0; i < nslots; i++)
		if (slots[i].pid)
			kill(slots[i].pid, signo);
}

int
srv_master_run(struct heritage *tmpl, int nworkers, const sigset_t *waitmask)
{
	double stop_at = 0;
	int killed = 0;

	nslots = nworkers;
	slots = calloc((size_t)nworkers, sizeof(*slots));
	if (!slots || pipe(death_pipe) < 0) {
		log_error("could not set up the worker table: %s", strerror(errno));
		return 1;
	}
	state = MS_STARTING;
	for (int i = 0; i < nslots; i++)
		spawn(tmpl, i, waitmask);
	set_state(MS_RUNNING);

	for (;;) {
		struct timespec ts = { 0, 100 * 1000 * 1000 };

		/* Sleep until a signal arrives (they are unblocked only here). */
		ppoll(NULL, 0, &ts, waitmask);

		if (sig_child) {
			sig_child = 0;
			reap();
		}
		if (sig_reload) {
			sig_reload = 0;
			log_info("SIGHUP received: configuration reload is not implemented yet");
		}
		if (sig_stop && state == MS_RUNNING) {
			log_info("%s received: stopping", sig_stop_signo == SIGINT ? "SIGINT" : "SIGTERM");
			set_state(MS_DRAINING);
			stop_at = mono() + STOP_DEADLINE_S;
			signal_workers(SIGTERM);
		}
		if (state == MS_RUNNING) {
			double now = mono();
			for (int i = 0; i < nslots; i++)
				if (!slots[i].pid && now >= slots[i].next_start)
					spawn(tmpl, i, waitmask);
		}
		if (state == MS_DRAINING) {
			reap();
			if (alive_workers() == 0)
				break;
			if (!killed && mono() > stop_at) {
				log_warn("workers did not stop within %d s: sending SIGKILL", STOP_DEADLINE_S);
				signal_workers(SIGKILL);
				killed = 1;
			}
		}
	}
	set_state(MS_STOPPED);
	close(death_pipe[1]);
	close(death_pipe[0]);
	free(slots);
	return 0;
}
