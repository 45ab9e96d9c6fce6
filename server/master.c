/*
 * master.c - the master's lifecycle: a state machine over worker processes.
 *
 *   START ---every slot has a ready worker---> READY <-------------+
 *     |                                          |                 |
 *     |                                SIGHUP, new config valid    |
 *     |                                          v                 |
 *     |                                      RELOADING --new generation
 *     |                                          |        ready, old one
 *     |                                          |        told to retire
 *     +------------- SIGTERM / SIGINT (from any state) ----+
 *                                                          v
 *                                  DRAINING --every worker exited--> STOPPED
 *
 * START: the first generation is forked; READY=1 goes to systemd once
 * every worker has said it accepts connections.
 * READY: a worker that exits is replaced at once, and the replacement
 * counts as ready as soon as it accepts (its peers of the same generation
 * reach PostgreSQL: it does not wait for its own pool, worker.c); when
 * workers of a slot keep exiting within QUICK_DEATH_S of their start (or with
 * WRK_EXIT_INIT), the second and later ones in a row are replaced after an
 * exponential back-off (100 ms doubling up to 30 s), so a worker that
 * cannot start does not spin.  A worker that exits with WRK_EXIT_FATAL
 * (its configuration cannot work) is not replaced: the slot stays empty
 * until a reload, and when no worker is left at all the master exits 1.
 * A worker that sends no heartbeat for
 * heartbeat-timeout seconds (its event loop is stuck) gets SIGKILL and is
 * replaced.
 * The spare (spare-worker, on by default): once every slot has a ready
 * worker and SPARE_DELAY_S has passed since the last start, the master
 * forks one more worker that sets up what does not depend on its slot and
 * then sleeps on a socket pair.  A dead worker is replaced by promoting it:
 * the master claims the slot and sends its number with the listening
 * socket (SCM_RIGHTS; the spare does not hold it before, so a stop closes
 * it as before).  A woken
 * sleeper gets the CPU at once where a new process waits its turn behind
 * the load, and it has done its fork and set-up already (battery T03:
 * replacement accepting <= 100 ms after the reap).  A reload retires the
 * spare (it carries the old configuration); the spare holds no database
 * connection and no shared-memory slot, and sends no heartbeats.
 * RELOADING (SIGHUP): the configuration is loaded and validated in full
 * first (cfg_load); an invalid one is logged and changes nothing.  A valid
 * one starts generation G+1.  The listening socket never closes: it stays
 * open in the master, and a worker of generation G keeps accepting until
 * the G+1 worker of its slot reports READY (it accepts and has a database
 * connection: one that cannot reach PostgreSQL does not take over); only
 * then does it
 * get SIGTERM and drain (no connection refused, no request cut off).
 * Older workers still draining when the reload is declared finished are
 * tracked until they exit, and killed after shutdown-timeout.
 * DRAINING (SIGTERM/SIGINT): STOPPING=1; the master closes its copy of the
 * listening socket, every worker gets SIGTERM, stops accepting, finishes
 * its requests in flight and exits; after shutdown-timeout the rest get
 * SIGKILL.  The master exits 0.
 *
 * The master only signals pids it forked, never the process group, and
 * only reaps those pids (the test-mode cluster's reaper is not its
 * business).  Workers hold the read end of a pipe whose write end only
 * the master holds: when the master dies, however it dies, every worker
 * sees EOF (worker.c).  They report READY and heartbeats on a second
 * pipe (struct wrk_msg, heritage.h), read here without blocking.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "exit.h"
#include "heritage.h"
#include "log.h"
#include "master.h"
#include "notify.h"
#include "server/cfg.h"
#include "shm.h"
#include "signals.h"
#include "worker.h"

#define QUICK_DEATH_S		2
#define FIRST_BACKOFF_MS	100
#define MAX_BACKOFF_MS		30000
#define TICK_MS			100
#define KILL_WAIT_S		5	/* after SIGKILL, how long to wait for the reaping */
#define NOT_READY_WARN_S	10	/* log a worker that is not READY after this long */
#define SPARE_DELAY_S		1	/* fork the spare this long after the last start */

enum ms_state { MS_START, MS_READY, MS_RELOADING, MS_DRAINING, MS_STOPPED };
static const char *const ms_names[] = {
	[MS_START] = "start", [MS_READY] = "ready", [MS_RELOADING] = "reloading",
	[MS_DRAINING] = "draining", [MS_STOPPED] = "stopped",
};

/* A worker process, from fork to reaping. */
enum wp_state { WP_STARTING, WP_READY, WP_RETIRING, WP_SPARE };

struct wproc {
	pid_t		 pid;		/* 0 = free entry */
	int		 slot;
	unsigned	 gen;
	enum wp_state	 st;
	double		 t_start;	/* monotonic seconds */
	double		 t_beat;	/* last READY or heartbeat */
	double		 t_retire;	/* when SIGTERM was sent */
	int		 killed;	/* SIGKILL sent */
	int		 slow_noted;	/* "not ready" logged */
	int		 spare_fd;	/* WP_SPARE: the master's end of its socket pair */
};

/* A worker number of the current generation. */
struct wslot {
	double		 next_start;	/* when an empty slot may be refilled */
	int		 backoff_ms;
	int		 quick_deaths;	/* early deaths in a row */
	int		 fatal;		/* its worker exited WRK_EXIT_FATAL: left empty */
};

static enum ms_state state;
static struct heritage *tmpl;
static struct config *cur;		/* the running configuration (owned) */
static int m_argc;
static char **m_argv;
static const sigset_t *origmask;

static struct wproc *procs;
static int nprocs;			/* entries in use or free, <= cap */
static int procs_cap;
static struct wslot *slots;
static int nslots;
static unsigned generation = 1;
static int death_pipe[2] = { -1, -1 };
static int status_pipe[2] = { -1, -1 };
static double stop_at;
static int killed_all;
static double last_watchdog;
static double last_start;		/* a worker forked or a spare promoted */

static double
mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
want_workers(const struct config *c)
{
	long n = c->workers > 0 ? c->workers : sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (int)n;
}

static void
set_status(void)
{
	switch (state) {
	case MS_START:
		srv_notify("STATUS=starting %d workers", nslots);
		break;
	case MS_READY:
		srv_notify("READY=1\nSTATUS=ready: %d workers, generation %u", nslots, generation);
		break;
	case MS_RELOADING:
		srv_notify_reloading("reloading: starting worker generation");
		break;
	case MS_DRAINING:
		srv_notify("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
		break;
	case MS_STOPPED:
		break;
	}
}

static void
set_state(enum ms_state s)
{
	if (s == state)
		return;
	log_info("master state %s -> %s gen=%u", ms_names[state], ms_names[s], generation);
	state = s;
	set_status();
	shm_master_set_state(ms_names[s]);
}

/* ---- the process table */

static struct wproc *
proc_new(void)
{
	for (int i = 0; i < nprocs; i++)
		if (!procs[i].pid)
			return &procs[i];
	if (nprocs == procs_cap) {
		int cap = procs_cap ? procs_cap * 2 : 16;
		struct wproc *p = realloc(procs, (size_t)cap * sizeof(*p));
		if (!p)
			return NULL;
		procs = p;
		procs_cap = cap;
	}
	memset(&procs[nprocs], 0, sizeof(procs[nprocs]));
	return &procs[nprocs++];
}

static int
live_procs(void)
{
	int n = 0;
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid)
			n++;
	return n;
}

/* The current generation's worker for slot, if any. */
static struct wproc *
current(int slot)
{
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid && procs[i].slot == slot && procs[i].gen == generation &&
		    procs[i].st != WP_RETIRING)
			return &procs[i];
	return NULL;
}

/* Every slot's worker exited WRK_EXIT_FATAL and nothing runs any more. */
static int
all_fatal(void)
{
	for (int s = 0; s < nslots; s++)
		if (!slots[s].fatal)
			return 0;
	return nslots > 0 && live_procs() == 0;
}

/* Every slot has a ready worker (slots left empty as fatal do not count,
 * so a start with one unusable worker still reaches READY). */
static int
all_ready(void)
{
	int ready = 0;

	for (int s = 0; s < nslots; s++) {
		struct wproc *p = current(s);
		if (!p && slots[s].fatal)
			continue;
		if (!p || p->st != WP_READY)
			return 0;
		ready++;
	}
	return ready > 0;
}

static int
old_serving(void)
{
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid && procs[i].gen != generation && procs[i].st != WP_RETIRING)
			return 1;
	return 0;
}

static pid_t
fork_worker(struct heritage *h, int keep_fd)
{
	pid_t pid = fork();

	if (pid == 0) {
		sigset_t mask = *origmask;

		sig_reset_child();
		close(death_pipe[1]);
		close(status_pipe[0]);
		if (keep_fd >= 0)
			close(keep_fd);	/* the spare's write end */
		/*
		 * SIGTERM and SIGINT stay blocked until the worker can take
		 * them (wrk_main unblocks them once its loop handles them): a
		 * worker retired during its set-up then drains and exits 0
		 * instead of dying of the default action.
		 */
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
		sigprocmask(SIG_SETMASK, &mask, NULL);
		wrk_main(h);	/* does not return */
		_exit(WRK_EXIT_INIT);
	}
	return pid;
}

static void
heritage_for(struct heritage *h, int slot)
{
	*h = *tmpl;
	h->slot = slot;
	h->gen = generation;
	h->death_fd = death_pipe[0];
	h->status_fd = status_pipe[1];
	h->spare_fd = -1;
	h->shm_slot = -1;
	h->cfg = cur;
}

static void
started(struct wproc *p, pid_t pid, int slot, const char *how)
{
	p->pid = pid;
	p->slot = slot;
	p->gen = generation;
	p->st = WP_STARTING;
	p->t_start = p->t_beat = last_start = mono();
	p->killed = 0;
	log_info("worker %d started pid=%d gen=%u%s", slot, (int)pid, generation, how);
}

static void
spawn(int slot)
{
	struct heritage h;
	struct wproc *p = proc_new();
	pid_t pid;

	if (!p) {
		log_error("could not start worker %d: out of memory", slot);
		slots[slot].next_start = mono() + 1;
		return;
	}
	heritage_for(&h, slot);
	h.shm_slot = shm_master_claim(slot, generation);	/* -1: unpublished */
	pid = fork_worker(&h, -1);
	if (pid < 0) {
		log_error("could not fork worker %d: %s", slot, strerror(errno));
		shm_master_unclaim(h.shm_slot);
		slots[slot].next_start = mono() + 1;
		return;
	}
	shm_master_forked(h.shm_slot, pid);
	started(p, pid, slot, "");
}

/* ---- the spare */

static struct wproc *
spare(void)
{
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid && procs[i].st == WP_SPARE)
			return &procs[i];
	return NULL;
}

static void
spawn_spare(void)
{
	struct heritage h;
	struct wproc *p;
	int fds[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
		log_warn("could not start the spare worker: %s", strerror(errno));
		last_start = mono();
		return;
	}
	if (!(p = proc_new())) {
		close(fds[0]);
		close(fds[1]);
		last_start = mono();
		return;
	}
	heritage_for(&h, -1);
	h.spare_fd = fds[0];
	/* No listening socket until promoted: a sleeping copy would keep it
	 * open after a stop (connections queued that nobody accepts). */
	h.listen_fd = -1;
	pid = fork_worker(&h, fds[1]);
	close(fds[0]);
	if (pid < 0) {
		log_warn("could not fork the spare worker: %s", strerror(errno));
		close(fds[1]);
		last_start = mono();
		return;
	}
	p->pid = pid;
	p->slot = -1;
	p->gen = generation;
	p->st = WP_SPARE;
	p->t_start = p->t_beat = mono();
	p->killed = 0;
	p->spare_fd = fds[1];
	log_info("spare worker started pid=%d gen=%u", (int)pid, generation);
}

/* Ends the spare: closing its socket unblocks it and it exits. */
static void
drop_spare(const char *why)
{
	struct wproc *p = spare();

	if (!p)
		return;
	log_info("spare worker pid=%d retiring: %s", (int)p->pid, why);
	close(p->spare_fd);
	p->spare_fd = -1;
	p->st = WP_RETIRING;
	p->t_retire = mono();
	if (kill(p->pid, SIGTERM) != 0 && errno != ESRCH)
		log_warn("could not signal the spare worker pid=%d: %s", (int)p->pid,
		    strerror(errno));
}

/* One message and, alongside it, a descriptor (SCM_RIGHTS). */
static int
send_with_fd(int sock, const void *buf, size_t len, int fd)
{
	union {
		struct cmsghdr	 h;
		char		 b[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
	struct cmsghdr *c;
	ssize_t n;

	memset(&u, 0, sizeof(u));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

/* Fills the slot with the spare; 0 if there is none (or it is gone). */
static int
promote(int slot)
{
	struct wproc *p = spare();
	struct wrk_spare_msg m;

	if (!p || p->gen != generation)
		return 0;
	m.slot = slot;
	m.gen = generation;
	m.shm_slot = shm_master_claim(slot, generation);
	shm_master_forked(m.shm_slot, p->pid);
	if (send_with_fd(p->spare_fd, &m, sizeof(m), tmpl->listen_fd) < 0) {
		/* it died meanwhile: its exit is reaped as a spare's */
		shm_master_unclaim(m.shm_slot);
		drop_spare("could not hand it a slot");
		return 0;
	}
	close(p->spare_fd);
	p->spare_fd = -1;
	started(p, p->pid, slot, " (the spare)");
	return 1;
}

static void
retire(struct wproc *p, const char *why)
{
	log_info("worker %d retiring pid=%d gen=%u: %s", p->slot, (int)p->pid, p->gen, why);
	p->st = WP_RETIRING;
	p->t_retire = mono();
	if (kill(p->pid, SIGTERM) != 0 && errno != ESRCH)
		log_warn("could not signal worker %d pid=%d: %s", p->slot, (int)p->pid,
		    strerror(errno));
}

static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "status=%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "status=%s%s", sig_name(WTERMSIG(status)),
		    WCOREDUMP(status) ? " core=yes" : "");
	else
		snprintf(buf, len, "status=unknown");
}

static void
exited(struct wproc *p, int status)
{
	char how[64];
	double now = mono(), lived = now - p->t_start;
	struct wslot *s;

	describe_exit(status, how, sizeof(how));
	if (p->slot < 0) {
		/* the spare, never promoted: no slot, nothing published */
		if (p->st == WP_SPARE) {
			log_warn("spare worker exited %s pid=%d gen=%u", how, (int)p->pid, p->gen);
			close(p->spare_fd);
			last_start = now;	/* the next one after SPARE_DELAY_S */
		} else
			log_info("spare worker exited %s pid=%d", how, (int)p->pid);
		p->pid = 0;
		return;
	}
	shm_master_reaped(p->pid);	/* crash report, counters into the retired totals */
	if (state == MS_DRAINING || p->st == WP_RETIRING || p->gen != generation ||
	    p->slot >= nslots) {
		log_info("worker %d exited %s pid=%d gen=%u", p->slot, how, (int)p->pid, p->gen);
		p->pid = 0;
		return;
	}
	s = &slots[p->slot];
	if (WIFEXITED(status) && WEXITSTATUS(status) == WRK_EXIT_FATAL) {
		s->fatal = 1;
		log_error("worker %d exited %s pid=%d gen=%u: fatal configuration error, not "
		    "restarting it (a reload retries)", p->slot, how, (int)p->pid, p->gen);
		p->pid = 0;
		return;
	}
	/*
	 * The first early death is replaced at once like any crash; from the
	 * second one in a row the slot backs off (100 ms doubling).  A worker
	 * that lives QUICK_DEATH_S clears the record.
	 */
	if (lived < QUICK_DEATH_S || (WIFEXITED(status) && WEXITSTATUS(status) == WRK_EXIT_INIT)) {
		if (s->quick_deaths++ == 0)
			s->backoff_ms = 0;
		else
			s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : FIRST_BACKOFF_MS;
		if (s->backoff_ms > MAX_BACKOFF_MS)
			s->backoff_ms = MAX_BACKOFF_MS;
	} else {
		s->quick_deaths = 0;
		s->backoff_ms = 0;
	}
	s->next_start = now + s->backoff_ms / 1000.0;
	log_warn("worker %d exited %s pid=%d gen=%u after %.1f s; restarting in %d ms", p->slot,
	    how, (int)p->pid, p->gen, lived, s->backoff_ms);
	p->pid = 0;
}

/* Reap only the pids we forked. */
static void
reap(void)
{
	for (int i = 0; i < nprocs; i++) {
		int status;
		pid_t r;

		if (!procs[i].pid)
			continue;
		r = waitpid(procs[i].pid, &status, WNOHANG);
		if (r == procs[i].pid)
			exited(&procs[i], status);
		else if (r < 0 && errno == ECHILD) {
			log_warn("worker %d pid=%d vanished", procs[i].slot, (int)procs[i].pid);
			shm_master_reaped(procs[i].pid);
			procs[i].pid = 0;
		}
	}
}

static void
read_status(void)
{
	struct wrk_msg m[64];
	ssize_t n;

	while ((n = read(status_pipe[0], m, sizeof(m))) > 0) {
		double now = mono();
		for (size_t k = 0; k < (size_t)n / sizeof(m[0]); k++) {
			struct wproc *p = NULL;
			for (int i = 0; i < nprocs; i++)
				if (procs[i].pid == (pid_t)m[k].pid) {
					p = &procs[i];
					break;
				}
			if (!p)
				continue;
			p->t_beat = now;
			if (m[k].type == WRK_MSG_READY && p->st == WP_STARTING) {
				p->st = WP_READY;
				log_info("worker %d ready pid=%d gen=%u", p->slot, (int)p->pid, p->gen);
			} else if (m[k].type == WRK_MSG_ACCEPTING && p->st == WP_STARTING &&
			    state == MS_READY && p->gen == generation) {
				/*
				 * A replacement among serving peers: ready once it
				 * accepts.  During a start or a reload only READY
				 * (a database connection) counts.
				 */
				p->st = WP_READY;
				log_info("worker %d ready pid=%d gen=%u (accepting; database pool "
				    "connecting)", p->slot, (int)p->pid, p->gen);
			}
		}
	}
}

static void
kill_all(int signo)
{
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid && kill(procs[i].pid, signo) != 0 && errno != ESRCH)
			log_warn("could not signal worker %d pid=%d: %s", procs[i].slot,
			    (int)procs[i].pid, strerror(errno));
}

/* ---- reload */

static void
reload(void)
{
	struct config *nc;
	char err[1024];
	int rc, n, level;

	log_info("SIGHUP received: reloading the configuration");
	nc = calloc(1, sizeof(*nc));
	if (!nc) {
		log_error("reload failed: out of memory; keeping the current configuration");
		return;
	}
	rc = cfg_load(nc, m_argc, m_argv, err, sizeof(err));
	if (rc != CFG_OK) {
		log_error("reload failed: %s; keeping the current configuration", err);
		srv_notify("STATUS=reload failed (%s); running generation %u", err, generation);
		cfg_free(nc);
		free(nc);
		return;
	}
	for (char *w = nc->warnings, *e; *w; w = e) {
		e = strchr(w, '\n');
		log_warn("%.*s", e ? (int)(e - w) : (int)strlen(w), w);
		e = e ? e + 1 : w + strlen(w);
	}
	cfg_reload_merge(nc, cur);
	level = log_level_parse(nc->log_level);
	log_setup(level < 0 ? LOG_INFO : level, strcmp(nc->log_format, "json") == 0);

	n = want_workers(nc);
	if (n != nslots) {
		struct wslot *ns = realloc(slots, (size_t)n * sizeof(*ns));
		if (!ns) {
			log_error("reload failed: out of memory; keeping the current configuration");
			cfg_free(nc);
			free(nc);
			return;
		}
		slots = ns;
	}
	cfg_free(cur);
	free(cur);
	cur = nc;
	nslots = n;
	memset(slots, 0, (size_t)nslots * sizeof(*slots));
	generation++;
	drop_spare("a reload");
	log_info("reload: configuration valid; starting generation %u with %d workers",
	    generation, nslots);
	if (state == MS_RELOADING)
		srv_notify_reloading("reloading: starting worker generation");
	set_state(MS_RELOADING);
}

/* ---- drain */

static void
begin_drain(int signo)
{
	log_info("%s received: stopping (shutdown-timeout %d s)", sig_name(signo),
	    cur->shutdown_timeout);
	set_state(MS_DRAINING);
	if (tmpl->listen_fd >= 0) {
		close(tmpl->listen_fd);
		tmpl->listen_fd = -1;
	}
	stop_at = mono() + cur->shutdown_timeout;
	kill_all(SIGTERM);
}

/* ---- the loop */

static void
tick(void)
{
	double now = mono();
	int hb = cur->heartbeat_timeout;

	if (state == MS_DRAINING) {
		if (!killed_all && now >= stop_at && live_procs()) {
			log_warn("%d workers still running after shutdown-timeout %d s: sending SIGKILL",
			    live_procs(), cur->shutdown_timeout);
			kill_all(SIGKILL);
			killed_all = 1;
		}
		return;
	}

	/* Fill empty slots of the current generation, with the spare first. */
	for (int s = 0; s < nslots; s++)
		if (!current(s) && !slots[s].fatal && now >= slots[s].next_start && !promote(s))
			spawn(s);
	if (!cur->spare_worker)
		drop_spare("spare-worker is off");
	else if (state == MS_READY && !spare() && all_ready() && now - last_start >= SPARE_DELAY_S)
		spawn_spare();

	/* Retire older workers once their replacement accepts. */
	for (int i = 0; i < nprocs; i++) {
		struct wproc *p = &procs[i], *c;

		if (!p->pid || p->gen == generation || p->st == WP_RETIRING)
			continue;
		if (p->st == WP_STARTING)
			retire(p, "superseded before it was ready");
		else if (p->slot < nslots && (c = current(p->slot)) && c->st == WP_READY)
			retire(p, "replaced by the new generation");
		else if (p->slot >= nslots && all_ready())
			retire(p, "not in the new generation");
	}

	/* Hung workers and slow retirements. */
	now = mono();
	for (int i = 0; i < nprocs; i++) {
		struct wproc *p = &procs[i];

		if (!p->pid || p->killed || p->st == WP_SPARE)
			continue;
		if (p->st == WP_STARTING && !p->slow_noted && now - p->t_start > NOT_READY_WARN_S) {
			log_warn("worker %d pid=%d gen=%u not ready after %d s (no database connection "
			    "yet?)%s", p->slot, (int)p->pid, p->gen, NOT_READY_WARN_S,
			    p->gen != generation ? "" : old_serving() ? "; the previous generation keeps serving" : "");
			p->slow_noted = 1;
		}
		if (p->st == WP_RETIRING) {
			if (now - p->t_retire > cur->shutdown_timeout) {
				log_warn("worker %d pid=%d gen=%u still draining after %d s: sending SIGKILL",
				    p->slot, (int)p->pid, p->gen, cur->shutdown_timeout);
				kill(p->pid, SIGKILL);
				p->killed = 1;
			}
		} else if (hb > 0 && now - p->t_beat > hb) {
			log_warn("worker %d pid=%d gen=%u sent no heartbeat for %d s: sending SIGKILL",
			    p->slot, (int)p->pid, p->gen, hb);
			kill(p->pid, SIGKILL);
			p->killed = 1;
		}
	}

	if (state == MS_START && all_ready())
		set_state(MS_READY);
	else if (state == MS_RELOADING && all_ready() && !old_serving()) {
		log_info("reload finished gen=%u", generation);
		set_state(MS_READY);
	}

	if (srv_notify_watchdog_usec() &&
	    now - last_watchdog >= srv_notify_watchdog_usec() / 2e6) {
		srv_notify("WATCHDOG=1");
		last_watchdog = now;
	}
}

int
srv_master_run(struct heritage *h, struct config *cfg, int argc, char **argv,
    const sigset_t *waitmask)
{
	double gave_up = 0;
	int rc = 0;

	tmpl = h;
	cur = cfg;
	m_argc = argc;
	m_argv = argv;
	origmask = waitmask;
	nslots = want_workers(cur);
	slots = calloc((size_t)nslots, sizeof(*slots));
	if (!slots || pipe2(death_pipe, O_CLOEXEC) < 0 ||
	    pipe2(status_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		log_error("could not set up the worker table: %s", strerror(errno));
		return 1;
	}
	state = MS_START;
	shm_master_set_state(ms_names[state]);
	set_status();

	while (state != MS_STOPPED) {
		struct pollfd pfd = { .fd = status_pipe[0], .events = POLLIN };
		struct timespec ts = { 0, TICK_MS * 1000000L };

		/* Sleep until a signal, a worker message or the tick (signals
		 * are unblocked only inside ppoll). */
		ppoll(&pfd, 1, &ts, waitmask);

		if (sig_child)
			sig_child = 0;
		reap();
		read_status();
		if (sig_stop && state != MS_DRAINING) {
			sig_stop = 0;
			begin_drain(sig_stop_signo);
		} else if (sig_stop && state == MS_DRAINING) {
			sig_stop = 0;
			if (!killed_all && live_procs()) {
				log_warn("%s received again: killing %d workers now",
				    sig_name(sig_stop_signo), live_procs());
				kill_all(SIGKILL);
				killed_all = 1;
			}
		}
		if (sig_reload) {
			sig_reload = 0;
			if (state == MS_DRAINING)
				log_info("SIGHUP received while stopping: ignored");
			else
				reload();
		}
		tick();
		if (state != MS_DRAINING && all_fatal()) {
			log_error("every worker exited with a fatal configuration error: stopping");
			set_state(MS_STOPPED);
			rc = 1;
		}
		if (state == MS_DRAINING) {
			if (!live_procs())
				set_state(MS_STOPPED);
			else if (killed_all) {
				if (!gave_up)
					gave_up = mono() + KILL_WAIT_S;
				else if (mono() > gave_up) {
					log_error("%d workers did not exit after SIGKILL", live_procs());
					set_state(MS_STOPPED);
				}
			}
		}
	}
	close(death_pipe[1]);
	close(death_pipe[0]);
	close(status_pipe[0]);
	close(status_pipe[1]);
	free(slots);
	free(procs);
	return rc;
}
