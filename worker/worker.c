/*
 * worker.c - the life of a worker process.
 *
 * Created by fork() in the master; everything event-driven is created
 * here, after the fork (libevent's event_reinit advice).  The worker:
 *   - accepts on the shared listen socket and serves HTTP (http.c),
 *   - routes /rpc, /health, /version; everything else is a JSON 404,
 *   - keeps its own PostgreSQL pool and a LISTEN connection (db.c),
 *   - exits when the master goes away (death pipe EOF, PR_SET_PDEATHSIG),
 *   - on SIGTERM/SIGINT stops accepting, lets requests in flight finish
 *     (bounded by a deadline) and exits 0.
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
#include "exit.h"
#include "heritage.h"
#include "http.h"
#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "wbatch.h"
#include "server/cfg.h"
#include "worker.h"

#define DRAIN_DEADLINE_S	10
#define ORPHAN_DEADLINE_S	1

static struct event_base *base;
static struct event *accept_ev, *death_ev, *drain_ev;
static const struct heritage *her;
static int stopping;
static uint64_t stop_deadline;
static char version_body[64];

static void
route(struct http_req *req)
{
	const char *p = req->path;

	if (strcmp(p, "/rpc") == 0)
		rpc_handle(req);
	else if (strcmp(p, "/health") == 0)
		rpc_health(req);
	else if (strcmp(p, "/version") == 0)
		http_respond_str(req, 200, version_body);
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
	if (http_busy_conns() == 0 || http_now_ns() > stop_deadline) {
		if (http_busy_conns())
			log_warn("stopping with %d requests still in flight", http_busy_conns());
		event_base_loopbreak(base);
	}
}

static void
begin_stop(int deadline_s, const char *why)
{
	struct timeval tv = { 0, 20000 };

	if (stopping) {
		uint64_t d = http_now_ns() + (uint64_t)deadline_s * 1000000000ull;
		if (d < stop_deadline)
			stop_deadline = d;
		return;
	}
	stopping = 1;
	log_info("worker %d stopping: %s", her->slot, why);
	stop_deadline = http_now_ns() + (uint64_t)deadline_s * 1000000000ull;
	event_del(accept_ev);
	http_drain();
	drain_ev = event_new(base, -1, EV_PERSIST, drain_tick, NULL);
	event_add(drain_ev, &tv);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	begin_stop(DRAIN_DEADLINE_S, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static void
death_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[16];

	if (read(fd, buf, sizeof(buf)) > 0)
		return;
	event_del(death_ev);
	begin_stop(ORPHAN_DEADLINE_S, "master process gone");
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
		if (fd != h->listen_fd && fd != h->death_fd)
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

	event_base_dispatch(base);

	db_shutdown();
	log_info("worker %d stopped", h->slot);
	_exit(WRK_EXIT_OK);
}
