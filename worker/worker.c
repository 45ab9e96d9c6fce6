/*
 * worker.c - the life of a worker process.
 *
 * Created by fork() in the master; everything event-driven is created
 * here, after the fork (libevent's event_reinit advice).  The worker:
 *   - accepts on the shared listen socket and serves HTTP (http.c),
 *   - routes /rpc, /health, /version, /subscribe, /import, /metrics;
 *     everything else is a JSON 404,
 *   - publishes its counters and scoreboard in its slot of the shared
 *     memory segment (metrics.c, shm/),
 *   - keeps its own PostgreSQL pool and a LISTEN connection (db.c),
 *   - exits when the master goes away (death pipe EOF, PR_SET_PDEATHSIG),
 *   - tells the master when it accepts and has a database connection
 *     (READY) and then once a second from its event loop (BEAT) on
 *     heritage.status_fd: a loop that stops beating is killed and
 *     replaced by the master,
 *   - on SIGTERM/SIGINT (stop, or retirement after a reload) stops
 *     accepting and closes its copy of the listening socket (the master
 *     and the other workers keep it open), lets requests in flight finish
 *     (bounded by shutdown-timeout) and exits 0.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

#include "db.h"
#include "debug_pprof.h"
#include "exit.h"
#include "heritage.h"
#include "http.h"
#include "import.h"
#include "log.h"
#include "metrics.h"
#include "nscache.h"
#include "prof.h"
#include "rpc.h"
#include "wbatch.h"
#include "server/cfg.h"
#include "shm.h"
#include "sse.h"
#include "worker.h"

/*
 * eventodbd-asan (Makefile.am, battery row T15h): a worker ends with
 * _exit(), which skips LeakSanitizer's atexit check, so a graceful stop
 * runs the check itself.
 */
#if defined(__SANITIZE_ADDRESS__)
#define WRK_LSAN	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WRK_LSAN	1
#endif
#endif
#ifdef WRK_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#define ORPHAN_DEADLINE_S	1
#define BEAT_INTERVAL_MS	1000
#define FRESH_GRACE_MS		2000
#define READY_POLL_MS		5
#define ACCEPT_ANYWAY_MS	10000	/* accept without a database connection after this */

static struct event_base *base;
static struct event *accept_ev, *death_ev, *drain_ev, *beat_ev, *ready_ev;
static int drain_deadline_ms;
static const struct heritage *her;
static int stopping;
static int accepting;		/* accept_ev is (meant to be) active */
static uint64_t stop_deadline, stop_started;
static char version_body[64];

static void
route(struct http_req *req)
{
	const char *p = req->path;

	SHM_INC_AT(http_requests, shm_endpoint_index(p));
	if (strcmp(p, "/rpc") == 0)
		rpc_handle(req);
	else if (strcmp(p, "/health") == 0)
		rpc_health(req);
	else if (strcmp(p, "/version") == 0)
		http_respond_str(req, 200, version_body);
	else if (strcmp(p, "/subscribe") == 0)
		sse_handle(req);
	else if (strcmp(p, "/import") == 0)
		imp_handle(req);
	else if (strcmp(p, "/metrics") == 0)
		mtr_handle(req);
	else if (strncmp(p, "/debug/", 7) == 0)
		dbg_handle(req);	/* profiles: loopback or admin token, else 404 */
	else
		http_respond_error(req, 404, "NOT_FOUND", "Endpoint not found");
}

/*
 * Out of file descriptors (EMFILE, ENFILE) or kernel memory: the pending
 * connection stays in the backlog and the listening socket stays
 * readable, so trying again at once loops, logging each time (battery
 * T14c measured 39,000 log lines in 2 s).  Stop accepting for
 * ACCEPT_PAUSE_MS instead, and say so once per episode.
 */
#define ACCEPT_PAUSE_MS	100
static struct event *accept_resume_ev;
static int accept_starved;

static int accept_yielded;	/* paused for balance: accept once before again */

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	if (!stopping && accepting)
		event_add(accept_ev, NULL);
}

static void accept_pause(int ms);

#define ACCEPT_YIELD_MS	2

static void
accept_pause(int ms)
{
	struct timeval tv = { 0, ms * 1000 };

	if (!accept_resume_ev)
		accept_resume_ev = evtimer_new(base, accept_resume, NULL);
	if (accept_resume_ev) {
		event_del(accept_ev);
		evtimer_add(accept_resume_ev, &tv);
	}
}

/*
 * The listening socket is shared, every worker waiting on it is woken for
 * a new connection, and whichever calls accept4() first gets it.  Taken
 * in batches, a burst went all to one worker: the 10 keep-alive
 * connections of a client's pool landed on the first worker to wake, and
 * the other one idled (evload, 2 workers: 183 against 5 ticks of CPU).
 * So a worker takes one connection per wake-up unless it holds fewer
 * than another ready worker (then as many as it is behind, up to 32),
 * and one that holds clearly more than the least loaded ready worker
 * (2 more, plus a quarter of that one's count) leaves the next ones
 * to the others for ACCEPT_YIELD_MS, then takes one (so it still accepts
 * if the others cannot).  Like nginx's accept_disabled, on counts every
 * worker publishes in its shared-memory slot.
 *
 * The price, on a small machine: each worker group-commits its own writes
 * (wbatch.c), so spread writers make smaller batches.  10 write-only
 * clients on 2 workers, 2 cores: 4.7 writes per transaction on one worker,
 * 2.4 spread, 9.8-10.5k against 6.1-7.9k writes/s.  Coalescing writes
 * across workers would win both; a pool held to one worker caps at one
 * core however many the machine has.
 */
#define ACCEPT_BATCH	32

/* Of the other ready workers: how many, and the fewest open connections. */
static int
accept_others(int64_t *fewest)
{
	struct evshm_hdr *hdr = shm_hdr();
	struct evshm_slot *own = shm_own_slot();
	int n = 0;

	*fewest = INT64_MAX;
	if (!hdr || !own)
		return 0;
	for (uint32_t i = 0; i < hdr->nslots; i++) {
		struct evshm_slot *sl = EVSHM_SLOT(hdr, i);
		int64_t open;

		if (sl == own || __atomic_load_n(&sl->hd.pid, __ATOMIC_RELAXED) <= 0 ||
		    __atomic_load_n(&sl->hd.state, __ATOMIC_RELAXED) != EVSHM_W_READY)
			continue;
		open = (int64_t)__atomic_load_n(&sl->stats.c.connections_open[0], __ATOMIC_RELAXED);
		if (open < 0)
			open = 0;
		if (open < *fewest)
			*fewest = open;
		n++;
	}
	return n;
}

/* Connections to take on this wake-up; 0: yield to the others. */
static int
accept_batch(void)
{
	int64_t mine = http_open_conns(), fewest;

	if (accept_others(&fewest) == 0)
		return ACCEPT_BATCH;
	if (mine < fewest)
		return fewest - mine < ACCEPT_BATCH ? (int)(fewest - mine) : ACCEPT_BATCH;
	if (mine >= fewest + 2 + fewest / 4)
		return 0;
	return 1;
}

static void
accept_cb(evutil_socket_t fd, short what, void *arg)
{
	int batch = accept_batch();

	if (batch == 0 && !accept_yielded) {
		accept_yielded = 1;
		accept_pause(ACCEPT_YIELD_MS);
		return;
	}
	accept_yielded = 0;
	if (batch == 0)
		batch = 1;
	for (int i = 0; i < batch; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				if (!accept_starved)
					log_warn("could not accept connection: %s; pausing accepts "
					    "(%d connections open)", strerror(errno), http_open_conns());
				accept_starved = 1;
				accept_pause(ACCEPT_PAUSE_MS);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("could not accept connection: %s", strerror(errno));
			return;
		}
		accept_starved = 0;
		http_accept(c);
	}
}

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = http_now_ns();

	/*
	 * Done when every connection is closed (responses flushed, idle ones
	 * closed by http_drain).  A request in flight or partly received
	 * (its body still arriving) is waited for until the deadline; a
	 * connection with nothing of a request yet - accepted, first request
	 * not sent - is waited for FRESH_GRACE_MS only.
	 */
	if (http_open_conns() == 0 ||
	    (http_pending_conns() == 0 && now > stop_started + FRESH_GRACE_MS * 1000000ull) ||
	    now > stop_deadline) {
		if (http_busy_conns())
			log_warn("stopping with %d requests still in flight", http_busy_conns());
		event_base_loopbreak(base);
	}
}

/* Tell the master something; never blocks (a full pipe drops the note). */
static void
tell_master(int type)
{
	struct wrk_msg m = { .type = type, .slot = her->slot, .gen = her->gen, .pid = (int32_t)getpid() };

	if (her->status_fd >= 0)
		(void)!write(her->status_fd, &m, sizeof(m));
}

/*
 * A new worker starts accepting, and sends READY, once a database
 * connection is up, not when its loop starts: the listening socket is
 * shared, so the workers already serving (the previous generation during
 * a reload, the others after a crash) take the connections meanwhile,
 * and the master retires the previous worker of the slot only on READY.
 * A worker that cannot reach PostgreSQL yet (slow to accept, out of
 * connections, refusing this database) thus neither fails requests nor
 * takes over from one that can (battery T06b).  When no other worker
 * accepts (the first start), or no connection comes within
 * ACCEPT_ANYWAY_MS, it accepts at once, so that clients get answers (or
 * errors) rather than wait in the backlog; READY still waits for the
 * connection.
 *
 * A replacement (a worker of the same generation as one already
 * accepting: the slot's previous worker died, its peers serve) runs the
 * configuration its peers already reached PostgreSQL with, so it accepts
 * as soon as its loop starts, while its pool connects (queries wait in
 * the pool's queue meanwhile): waiting for a backend to start took
 * 50-300 ms of each respawn (battery T03b, T16c: <= 100 ms).  Should
 * every attempt of its pool fail before one gets through (e.g. 53300 too
 * many clients), it stops accepting again and waits for a connection like
 * a new generation does.
 */
static uint64_t ready_poll_start;
static uint64_t t_main_ns;	/* when wrk_main began: the start-up time in the log */
static int early;	/* accepting as a replacement, no connection yet */
static int early_failed;	/* ... and its pool's first attempts failed */

/*
 * Another live worker accepts on the shared socket (shared memory
 * scoreboard); with same_gen, one of this worker's generation.
 */
static int
others_accepting(int same_gen)
{
	struct evshm_hdr *hdr = shm_hdr();
	struct evshm_slot *own = shm_own_slot();

	if (!hdr || !own)
		return 0;	/* cannot tell: behave as if alone */
	for (uint32_t i = 0; i < hdr->nslots; i++) {
		struct evshm_slot *sl = EVSHM_SLOT(hdr, i);
		int32_t pid = __atomic_load_n(&sl->hd.pid, __ATOMIC_RELAXED);

		if (sl == own || pid <= 0 || pid == (int32_t)getpid())
			continue;
		if (same_gen && __atomic_load_n(&sl->hd.gen, __ATOMIC_RELAXED) != her->gen)
			continue;
		if (__atomic_load_n(&sl->hd.state, __ATOMIC_RELAXED) == EVSHM_W_READY &&
		    kill(pid, 0) == 0)
			return 1;
	}
	return 0;
}

static void
start_accepting(void)
{
	if (accepting || stopping)
		return;
	accepting = 1;
	event_add(accept_ev, NULL);
	shm_worker_state(EVSHM_W_READY);
	if (log_min_level <= LOG_DEBUG) {
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		log_debug("accepting %.1f ms after the worker started (cpu %.1f ms, %ld page faults)",
		    (double)(http_now_ns() - t_main_ns) / 1e6,
		    (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
		    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3, ru.ru_minflt);
	}
}

static void
ready_cb(evutil_socket_t fd, short what, void *arg)
{
	if (stopping) {
		event_del(ready_ev);
		return;
	}
	if (db_open_conns() == 0) {
		if (accepting) {
			if (early && !db_available() && others_accepting(0)) {
				/* every first attempt failed: leave the clients to the others */
				log_info("no database connection yet: not accepting until one is up");
				early = 0;
				early_failed = 1;
				accepting = 0;
				event_del(accept_ev);
				shm_worker_state(EVSHM_W_STARTING);
			}
			return;
		}
		if (!others_accepting(0))
			start_accepting();
		else if (!early_failed && db_available() && others_accepting(1)) {
			early = 1;
			start_accepting();
			tell_master(WRK_MSG_ACCEPTING);
		} else if (http_now_ns() - ready_poll_start > ACCEPT_ANYWAY_MS * 1000000ull) {
			log_warn("worker %d: no database connection after %d ms; accepting anyway",
			    her->slot, ACCEPT_ANYWAY_MS);
			start_accepting();
		}
		return;
	}
	early = 0;
	start_accepting();
	tell_master(WRK_MSG_READY);
	event_del(ready_ev);
}

/*
 * A heartbeat outside the timer, for code that blocks the loop on purpose
 * (the /debug/test endpoints); it reports no loop lag.
 */
void
wrk_beat(void)
{
	tell_master(WRK_MSG_BEAT);
	shm_worker_heartbeat(0, 0);
}

static void
beat_cb(evutil_socket_t fd, short what, void *arg)
{
	tell_master(WRK_MSG_BEAT);
	mtr_beat(BEAT_INTERVAL_MS * 1000000ull);
}

static void
begin_stop(int deadline_ms, const char *why)
{
	struct timeval tv = { 0, 20000 };

	if (stopping) {
		uint64_t d = http_now_ns() + (uint64_t)deadline_ms * 1000000ull;
		if (d < stop_deadline)
			stop_deadline = d;
		return;
	}
	stopping = 1;
	shm_worker_state(EVSHM_W_DRAINING);
	log_info("worker %d stopping: %s", her->slot, why);
	stop_started = http_now_ns();
	stop_deadline = stop_started + (uint64_t)deadline_ms * 1000000ull;
	/*
	 * Connections the kernel already completed wait in the backlog; take
	 * them before letting go of the socket, so a client that connected
	 * before the signal is answered (with Connection: close) rather than
	 * reset when the last copy of the socket closes.
	 */
	if (accepting)	/* (one still waiting for the database leaves them to the others) */
		accept_cb(her->listen_fd, EV_READ, NULL);
	event_del(accept_ev);
	close(her->listen_fd);	/* the socket stays open in the master */
	http_drain();
	sse_drain();
	drain_ev = event_new(base, -1, EV_PERSIST, drain_tick, NULL);
	event_add(drain_ev, &tv);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	begin_stop(drain_deadline_ms, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static void
death_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[16];

	if (read(fd, buf, sizeof(buf)) > 0)
		return;
	event_del(death_ev);
	begin_stop(ORPHAN_DEADLINE_S * 1000, "master process gone");
}

static void
ns_notify(const char *payload)
{
	/* NULL: the LISTEN connection was (re)established; start clean. */
	nscache_drop(payload);
}

static void
close_other_fds(const struct heritage *h)
{
	/*
	 * close_range() over the gaps between the three kept descriptors: a
	 * close() per possible descriptor cost 15-40 ms of a respawn on a
	 * loaded machine (4096 system calls; battery T03).
	 */
	int keep[4] = { h->listen_fd, h->death_fd, h->status_fd, h->spare_fd }, from = 3;
	int nkeep = h->spare_fd >= 0 ? 4 : 3;

	for (int i = 0; i < nkeep; i++)
		for (int j = i + 1; j < nkeep; j++)
			if (keep[j] < keep[i]) {
				int x = keep[i];
				keep[i] = keep[j];
				keep[j] = x;
			}
	for (int i = 0; i <= nkeep; i++) {
		int to = i < nkeep ? keep[i] - 1 : 4095;

		if (i < nkeep && keep[i] < from)
			continue;
		if (to >= from && close_range((unsigned)from, i < nkeep ? (unsigned)to : ~0u, 0) < 0)
			for (int fd = from; fd <= to; fd++)
				close(fd);	/* kernel without close_range (before 5.9) */
		if (i < nkeep)
			from = keep[i] + 1;
	}
}

/*
 * Test hook (battery T04, t/battery/11-crash-loop.t): with
 * --enable-test-rpc, while the file named by EVENTODB_TEST_WORKER_CRASH
 * exists, a starting worker does what it says: "segv" crashes (SIGSEGV,
 * with a crash report), "exit N" exits with status N; a trailing "@W"
 * limits it to worker number W.
 */
static void
test_crash_hook(const struct config *cfg)
{
	const char *f = getenv("EVENTODB_TEST_WORKER_CRASH");
	char buf[32], *at;
	FILE *fp;
	size_t n;
	int code;

	if (!cfg->enable_test_rpc || !f || !*f || !(fp = fopen(f, "r")))
		return;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	if ((at = strchr(buf, '@')) && atoi(at + 1) != her->slot)
		return;
	if (strncmp(buf, "segv", 4) == 0)
		raise(SIGSEGV);
	else if (sscanf(buf, "exit %d", &code) == 1)
		_exit(code);
}

/*
 * The graceful way out of a worker or the spare: under the sanitizer build
 * (make eventodbd-asan, battery T15h) LeakSanitizer checks the heap first,
 * since _exit() skips the check it would run at exit().
 */
static void __attribute__((noreturn))
wrk_exit(const char *who, int code)
{
#ifdef WRK_LSAN
	if (__lsan_do_recoverable_leak_check()) {
		log_warn("%s: LeakSanitizer found leaks", who);
		_exit(WRK_EXIT_LEAKS);
	}
#else
	(void)who;
#endif
	_exit(code);
}

static volatile sig_atomic_t spare_term;

static void
spare_term_cb(int sig)
{
	(void)sig;
	spare_term = 1;
}

/*
 * The spare (server/master.c) sleeps here until the master hands it a
 * slot and the listening socket, or closes the socket pair (exit).
 * Blocking is right: there is no loop to serve yet, and SIGTERM ends the
 * wait.
 */
static void
spare_wait(struct heritage *h)
{
	union {
		struct cmsghdr	 h;
		char		 b[CMSG_SPACE(sizeof(int))];
	} u;
	struct wrk_spare_msg m;
	struct iovec iov = { &m, sizeof(m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = u.b, .msg_controllen = sizeof(u.b) };
	struct cmsghdr *c;
	sigset_t term;
	int fd = -1;
	ssize_t n;

	log_set_proc("spare worker");
	/*
	 * SIGTERM (retired, or the master gone; spare_term_cb) ends the wait,
	 * so the spare leaves through wrk_exit() and its leak check like a
	 * worker.  It was blocked since the fork (server/master.c): one sent
	 * during the set-up is taken here.  Should it land just before
	 * recvmsg, the master has closed its end already: recvmsg returns 0.
	 * Blocked again once promoted, until the loop takes it.
	 */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_UNBLOCK, &term, NULL);
	n = -1;
	while (!spare_term) {
		n = recvmsg(h->spare_fd, &mh, MSG_CMSG_CLOEXEC);
		if (n >= 0 || errno != EINTR)
			break;
	}
	sigprocmask(SIG_BLOCK, &term, NULL);	/* the loop's handler replaces spare_term_cb */
	c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
	    c->cmsg_len == CMSG_LEN(sizeof(int)))
		memcpy(&fd, CMSG_DATA(c), sizeof(int));
	if (n != (ssize_t)sizeof(m) || fd < 0 || spare_term)
		wrk_exit("spare worker", WRK_EXIT_OK);
	close(h->spare_fd);
	h->spare_fd = -1;
	h->listen_fd = fd;
	h->slot = m.slot;
	h->gen = m.gen;
	h->shm_slot = m.shm_slot;
	t_main_ns = http_now_ns();
}

void
wrk_main(const struct heritage *h0)
{
	static struct heritage h_own;
	struct heritage *h = &h_own;
	const struct config *cfg = h0->cfg;
	struct http_limits lim;
	struct rpc_options ro;
	struct event *sigterm, *sigint;
	char proc[32], server[64];

	h_own = *h0;	/* a spare learns its slot later */
	her = h;
	t_main_ns = http_now_ns();
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != h->master_pid)
		_exit(WRK_EXIT_MASTER_GONE);
	close_other_fds(h);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (h->spare_fd >= 0) {
		/* SIGTERM, blocked until spare_wait(), ends the spare's wait */
		struct sigaction sa = { .sa_handler = spare_term_cb };

		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
	}
	{
		/* test hook (t/41-spare.t): a slow set-up, to be retired during it */
		const char *ms = getenv(h->spare_fd >= 0 ? "EVENTODB_TEST_SPARE_SETUP_MS" :
		    "EVENTODB_TEST_WORKER_SETUP_MS");

		if (cfg->enable_test_rpc && ms && atoi(ms) > 0) {
			struct timespec ts = { atoi(ms) / 1000, (long)(atoi(ms) % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		}
	}

	/* What does not depend on the slot, done by a spare before it sleeps. */
	base = event_base_new();
	if (!base)
		_exit(WRK_EXIT_INIT);
	ro.test_mode = cfg->test_mode;
	ro.version = h->version;
	rpc_init(&ro);
	wb_init(base, cfg->write_batch_max, (size_t)cfg->write_batch_bytes, cfg->db_pool);
	lim.max_body = cfg->max_body;
	lim.max_header = cfg->max_header;
	lim.header_timeout = cfg->header_timeout;
	lim.body_timeout = cfg->body_timeout;
	lim.idle_timeout = cfg->idle_timeout;
	lim.max_conns = cfg->max_conns;
	snprintf(server, sizeof(server), "eventodbd/%s", h->version);
	snprintf(version_body, sizeof(version_body), "{\"version\":\"%s\"}\n", h->version);
	http_init(base, &lim, route, server);
	dbg_init(base, cfg->enable_test_rpc);
	http_set_stream_filter(imp_wants_stream);
	if (h->spare_fd >= 0)
		spare_wait(h);

	snprintf(proc, sizeof(proc), "worker %d", h->slot);
	log_set_proc(proc);
	mtr_attach(h->shm_slot);	/* shared-memory slot, crash reports */
	test_crash_hook(cfg);
	/* Sampling profiler into the slot (worker/prof.h); the master never samples. */
	prof_anchor();	/* wrk_main never returns: stacks end here plus a fixed tail */
	prof_alloc_start(shm_own_slot(), cfg->profile_alloc_rate);
	if (prof_cpu_start(shm_own_slot(), cfg->profile_hz) < 0)
		log_warn("could not start CPU sampling: %s", strerror(errno));
	db_set_timeout(cfg->db_timeout);
	if (db_init(base, h->conninfo, cfg->db_pool) < 0)
		_exit(WRK_EXIT_INIT);
	nscache_init();
	db_listen(NS_NOTIFY_CHANNEL, ns_notify);
	{
		struct sse_options so = { .port = cfg->port, .keepalive = cfg->sse_keepalive,
		    .max_per_ns = cfg->max_subscriptions, .notify = cfg->sse_notify };
		sse_init(base, &so);
	}

	accept_ev = event_new(base, h->listen_fd, EV_READ | EV_PERSIST, accept_cb, NULL);
	death_ev = event_new(base, h->death_fd, EV_READ | EV_PERSIST, death_cb, NULL);
	sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	if (!accept_ev || !death_ev || !sigterm || !sigint)
		_exit(WRK_EXIT_INIT);
	event_add(death_ev, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	{
		/* blocked since the fork; one sent during the set-up drains us now */
		sigset_t m;

		sigemptyset(&m);
		sigaddset(&m, SIGTERM);
		sigaddset(&m, SIGINT);
		sigprocmask(SIG_UNBLOCK, &m, NULL);
	}
	/* Requests in flight get shutdown-timeout, less a margin so the worker
	 * exits by itself before the master's SIGKILL. */
	drain_deadline_ms = cfg->shutdown_timeout * 1000 - 500;
	if (drain_deadline_ms < 500)
		drain_deadline_ms = 500;
	beat_ev = event_new(base, -1, EV_PERSIST, beat_cb, NULL);
	if (beat_ev) {
		struct timeval tv = { BEAT_INTERVAL_MS / 1000, (BEAT_INTERVAL_MS % 1000) * 1000 };
		event_add(beat_ev, &tv);
	}
	ready_poll_start = http_now_ns();
	ready_ev = event_new(base, -1, EV_PERSIST, ready_cb, NULL);
	if (ready_ev) {
		struct timeval tv = { 0, READY_POLL_MS * 1000 };
		event_add(ready_ev, &tv);
		ready_cb(-1, 0, NULL);	/* a replacement accepts now, not 5 ms later */
	} else {
		start_accepting();
		tell_master(WRK_MSG_READY);
	}

	event_base_dispatch(base);
	shm_worker_state(EVSHM_W_STOPPED);

	db_shutdown();
	log_info("worker %d stopped", h->slot);
	snprintf(proc, sizeof(proc), "worker %d", h->slot);
	wrk_exit(proc, WRK_EXIT_OK);
}
