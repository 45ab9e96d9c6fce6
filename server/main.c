/*
 * main.c - eventodbd: command line, start-up, and hand-over to the master.
 *
 * Start-up order: parse options; start the private PostgreSQL cluster in
 * test mode without a database URL; bind the port (so a port in use fails
 * fast); migrate the database and ensure the default namespace; listen;
 * fork the workers.  /health can only answer once everything is ready.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bootstrap.h"
#include "heritage.h"
#include "log.h"
#include "master.h"
#include "server/cfg.h"
#include "signals.h"
#include "testpg.h"

static struct testpg testpg;

static int
bind_socket(const char *host, int port, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	char portstr[16];
	int fd = -1, rc, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "could not resolve \"%s\": %s", host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		snprintf(err, errlen, "could not bind %s:%d: %s", host, port, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static void
print_help(void)
{
	printf("eventodbd %s - EventoDB-compatible event store server on PostgreSQL\n\n",
	    PACKAGE_VERSION);
	cfg_usage(stdout);
	sig_print_help(stdout);
}

static void
cleanup(void)
{
	testpg_stop(&testpg);
}

int
main(int argc, char **argv)
{
	struct config cfg;
	struct heritage h;
	struct boot_opts bo;
	sigset_t origmask;
	char err[1024];
	const char *conninfo;
	int fd, nworkers, rc, level;

	/* Subcommands and the original's invocation forms (api.md 11.1). */
	if (argc >= 2) {
		const char *a = argv[1];
		if (!strcmp(a, "version") || !strcmp(a, "--version") || !strcmp(a, "-v") ||
		    !strcmp(a, "-version")) {
			printf("%s\n", PACKAGE_VERSION);
			return 0;
		}
		if (!strcmp(a, "help") || !strcmp(a, "--help") || !strcmp(a, "-h") ||
		    !strcmp(a, "-help")) {
			print_help();
			return 0;
		}
		if (!strcmp(a, "serve")) {
			argv[1] = argv[0];
			argv++;
			argc--;
		}
	}
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-help") || !strcmp(argv[i], "-h")) {
			print_help();
			return 0;
		} else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-version")) {
			printf("%s\n", PACKAGE_VERSION);
			return 0;
		}
	if (cfg_load(&cfg, argc, argv) < 0)
		return 2;

	level = log_level_parse(cfg.log_level);
	log_setup(level < 0 ? LOG_INFO : level, strcmp(cfg.log_format, "json") == 0);
	log_set_proc("master");
	if (level < 0)
		log_warn("unknown log level \"%s\"; using info", cfg.log_level);

	sig_install(&origmask);

	fd = bind_socket(cfg.host, cfg.port, err, sizeof(err));
	if (fd < 0) {
		log_msg(LOG_FATAL, "%s", err);
		return 1;
	}

	conninfo = cfg.db_url;
	if (!conninfo[0]) {
		if (!cfg.test_mode) {
			log_msg(LOG_FATAL, "--db-url is required (use --test-mode for a private "
			    "throwaway PostgreSQL)");
			return 1;
		}
		if (testpg_start(&testpg, cfg.user[0] ? cfg.user : NULL, err, sizeof(err)) < 0) {
			log_msg(LOG_FATAL, "could not start the test-mode PostgreSQL: %s", err);
			return 1;
		}
		atexit(cleanup);
		log_info("test mode: private PostgreSQL cluster in %s", testpg.dir);
		conninfo = testpg.conninfo;
	} else if (strncmp(conninfo, "postgres://", 11) && strncmp(conninfo, "postgresql://", 13) &&
	    !strchr(conninfo, '=')) {
		log_msg(LOG_FATAL, "unsupported database URL (use postgres://, postgresql:// or "
		    "a libpq connection string)");
		return 1;
	}

	bo.token = cfg.token;
	bo.test_mode = cfg.test_mode;
	if (srv_bootstrap(conninfo, &bo, err, sizeof(err)) < 0) {
		log_msg(LOG_FATAL, "start-up failed: %s", err);
		return 1;
	}
	if (listen(fd, 1024) < 0) {
		log_msg(LOG_FATAL, "could not listen: %s", strerror(errno));
		return 1;
	}

	nworkers = cfg.workers > 0 ? cfg.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (nworkers < 1)
		nworkers = 1;
	log_info("eventodbd %s listening on %s:%d workers=%d test_mode=%s", PACKAGE_VERSION,
	    cfg.host, cfg.port, nworkers, cfg.test_mode ? "on" : "off");

	memset(&h, 0, sizeof(h));
	h.listen_fd = fd;
	h.cfg = &cfg;
	h.conninfo = conninfo;
	h.version = PACKAGE_VERSION;
	h.master_pid = getpid();
	rc = srv_master_run(&h, nworkers, &origmask);
	close(fd);
	log_info("eventodbd stopped");
	return rc;
}
