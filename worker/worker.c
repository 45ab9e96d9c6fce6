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
 *   - tells the master when it accepts (READY) and then once a second
 *     from its event loop (BEAT) on heritage.status_fd: a loop that stops
 *     beating is killed and replaced by the master,
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
#include <sys/socket.h>
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

#define ORPHAN_DEADLINE_S	1
#define BEAT_INTERVAL_MS	1000
#define FRESH_GRACE_MS		2000

static struct event_base *base;
static struct event *accept_ev, *death_ev, *drain_ev, *beat_ev;
static int drain_deadline_ms;
static const struct heritage *her;
static int stopping;
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

static void
accept_cb(evutil_socket_t fd, short what, void *arg)
{
	/* Take a few per wake-up so one busy worker does not starve. */
	for (int i = 0; i < 32; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("could not accept connection: %s", strerror(errno));
			return;
		}
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
	for (int fd = 3; fd < 4096; fd++)
		if (fd != h->listen_fd && fd != h->death_fd && fd != h->status_fd)
			close(fd);
}

void
wrk_main(const struct heritage *h)
{
	const struct config *cfg = h->cfg;
	struct http_limits lim;
	struct rpc_options ro;
	struct event *sigterm, *sigint;
	char proc[32], server[64];

	her = h;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != h->master_pid)
		_exit(WRK_EXIT_MASTER_GONE);
	close_other_fds(h);
	snprintf(proc, sizeof(proc), "worker %d", h->slot);
	log_set_proc(proc);
	mtr_attach(h->shm_slot);	/* shared-memory slot, crash reports */
	/* Sampling profiler into the slot (worker/prof.h); the master never samples. */
	prof_anchor();	/* wrk_main never returns: stacks end here plus a fixed tail */
	prof_alloc_start(shm_own_slot(), cfg->profile_alloc_rate);
	if (prof_cpu_start(shm_own_slot(), cfg->profile_hz) < 0)
		log_warn("could not start CPU sampling: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);

	base = event_base_new();
	if (!base)
		_exit(WRK_EXIT_INIT);
	if (db_init(base, h->conninfo, cfg->db_pool) < 0)
		_exit(WRK_EXIT_INIT);
	nscache_init();
	db_listen(NS_NOTIFY_CHANNEL, ns_notify);

	ro.test_mode = cfg->test_mode;
	ro.version = h->version;
	rpc_init(&ro);
	wb_init(cfg->write_batch_max, (size_t)cfg->write_batch_bytes);
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
	event_add(accept_ev, NULL);
	event_add(death_ev, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
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
	tell_master(WRK_MSG_READY);
	shm_worker_state(EVSHM_W_READY);

	event_base_dispatch(base);
	shm_worker_state(EVSHM_W_STOPPED);

	db_shutdown();
	log_info("worker %d stopped", h->slot);
	_exit(WRK_EXIT_OK);
}
