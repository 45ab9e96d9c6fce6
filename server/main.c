/*
 * main.c - eventodbd: command line, start-up, and hand-over to the master.
 *
 * Start-up order: load and validate the configuration (flags,
 * environment, --config file; --check-config and --print-config stop
 * here); decide who to run as; bind the port (as root if started so, and
 * so a port in use fails fast); drop to the service user; start the
 * private PostgreSQL cluster in test mode without a database URL; migrate
 * the database and ensure the default namespace; listen; hand over to the
 * master (master.c), which forks the workers and tells systemd READY=1
 * once they accept.  /health can only answer once everything is ready.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "cli.h"
#include "heritage.h"
#include "log.h"
#include "master.h"
#include "notify.h"
#include "privdrop.h"
#include "prof.h"
#include "server/cfg.h"
#include "shm.h"
#include "signals.h"
#include "sse.h"
#include "testpg.h"

#define BIND_RETRY_MS		3000
#define BIND_RETRY_STEP_MS	50

static struct testpg testpg;

static int
bind_socket(const char *host, int port, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	char portstr[16];
	int fd = -1, rc, one = 1, e = 0;

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
		e = errno;
		snprintf(err, errlen, "could not bind %s:%d: %s", host, port, strerror(e));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	errno = e;	/* the bind error, for the caller's retry */
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
	struct config *cfgp;
	struct heritage h;
	char **margv;
	struct boot_opts bo;
	struct srv_runas ra;
	sigset_t origmask;
	char err[1024];
	const char *conninfo;
	int fd, nworkers, rc, level, checking = 0, waited_bind = 0;

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
		/* HTTP clients of a running server (api.md 11.3-11.4). */
		if (!strcmp(a, "export"))
			return cli_export(argc - 1, argv + 1);
		if (!strcmp(a, "import"))
			return cli_import(argc - 1, argv + 1);
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
	/* --check-config: any problem, even on the command line, is exit 1. */
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--check-config") || !strcmp(argv[i], "-check-config") ||
		    !strncmp(argv[i], "--check-config=", 15) || !strncmp(argv[i], "-check-config=", 14))
			checking = 1;
	cfgp = calloc(1, sizeof(*cfgp));
	if (!cfgp) {
		fprintf(stderr, "eventodbd: out of memory\n");
		return 1;
	}
	rc = cfg_load(cfgp, argc, argv, err, sizeof(err));
	if (rc == CFG_ECHECK && cfgp->print_config) {
		/* Print what was asked for (e.g. the sample file), then fail. */
		cfg_print(cfgp, stdout);
		fflush(stdout);
	}
	if (rc != CFG_OK) {
		fprintf(stderr, "eventodbd: %s\n", err);
		if (checking || (rc == CFG_ECHECK && cfgp->print_config))
			return 1;	/* documented: --check-config exits 0 or 1 */
		if (rc == CFG_EUSAGE)
			cfg_usage(stderr);
		return 2;
	}
	if (cfgp->warnings[0])
		fprintf(stderr, "eventodbd: warning: %s\n", cfgp->warnings);
	/* Reloads parse a private copy; ps shows no token or database URL. */
	if (!(margv = cfg_argv_copy(argc, argv))) {
		fprintf(stderr, "eventodbd: out of memory\n");
		return 1;
	}
	cfg_argv_hide(argc, argv);
	if (cfgp->check_config) {
		printf("eventodbd: configuration is valid\n");
		return 0;
	}
	if (cfgp->print_config) {
		cfg_print(cfgp, stdout);
		return 0;
	}

	level = log_level_parse(cfgp->log_level);
	log_setup(level < 0 ? LOG_INFO : level, strcmp(cfgp->log_format, "json") == 0);
	log_set_proc("master");
	srv_notify_init();

	sig_install(&origmask);

	if (srv_privdrop_plan(cfgp, &ra, err, sizeof(err)) < 0) {
		log_msg(LOG_FATAL, "%s", err);
		return 1;
	}
	/*
	 * A new master started right after the old one was killed (systemd
	 * Restart=on-failure) can find the port still held by the old
	 * workers: they close their listening socket as soon as they see the
	 * master gone, but on a busy machine that may take a moment.  Retry
	 * EADDRINUSE for BIND_RETRY_MS (battery T05).
	 */
	for (int waited = 0;; waited += BIND_RETRY_STEP_MS) {
		struct timespec ts = { 0, BIND_RETRY_STEP_MS * 1000000L };

		fd = bind_socket(cfgp->host, cfgp->port, err, sizeof(err));
		if (fd >= 0 || errno != EADDRINUSE || waited >= BIND_RETRY_MS)
			break;
		waited_bind = 1;
		if (waited == 0)
			log_warn("port %d is busy; retrying for up to %d ms (workers of a previous "
			    "master may still be exiting)", cfgp->port, BIND_RETRY_MS);
		nanosleep(&ts, NULL);
	}
	if (fd >= 0 && waited_bind)
		log_info("port %d bound after waiting for it", cfgp->port);
	if (fd < 0) {
		log_msg(LOG_FATAL, "%s", err);
		return 1;
	}
	if (srv_privdrop_apply(&ra, err, sizeof(err)) < 0) {
		log_msg(LOG_FATAL, "%s", err);
		return 1;
	}
	if (ra.drop)
		log_info("running as user %s uid=%ld gid=%ld", ra.user, (long)ra.uid, (long)ra.gid);
	if (ra.note[0])
		log_warn("%s", ra.note);
	/*
	 * Nothing eventodbd starts (initdb, pg_ctl, postgres in test mode)
	 * gains privileges through execve(): no_new_privs for this process and
	 * all it forks, as systemd's NoNewPrivileges=yes does.
	 */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		log_warn("could not set no_new_privs: %s", strerror(errno));
	/*
	 * From here on everything runs as the service user: the test-mode
	 * cluster, the shared-memory segment and any file belong to it.
	 */
	{
		struct shm_create_opts so = { cfgp->shm_name, cfgp->port,
		    cfgp->workers > 0 ? cfgp->workers : (int)sysconf(_SC_NPROCESSORS_ONLN),
		    cfgp->publish_counters, PACKAGE_VERSION };
		/* Removed at exit, by this process only (shm/segment.c). */
		if (shm_master_create(&so, err, sizeof(err)) < 0) {
			log_msg(LOG_FATAL, "%s", err);
			return 1;
		}
		log_info("shared memory segment %s: %u slots, counters %s", shm_segment_name(),
		    shm_hdr()->nslots, cfgp->publish_counters ? "published" : "not published");
	}

	conninfo = cfgp->db_url;
	if (!conninfo[0]) {
		if (testpg_start(&testpg, NULL, err, sizeof(err)) < 0) {
			log_msg(LOG_FATAL, "could not start the test-mode PostgreSQL: %s", err);
			return 1;
		}
		atexit(cleanup);
		log_info("test mode: private PostgreSQL cluster in %s", testpg.dir);
		conninfo = testpg.conninfo;
	}

	bo.token = cfgp->token;
	bo.test_mode = cfgp->test_mode;
	if (srv_bootstrap(conninfo, &bo, err, sizeof(err)) < 0) {
		log_msg(LOG_FATAL, "start-up failed: %s", err);
		return 1;
	}
	if (listen(fd, 1024) < 0) {
		log_msg(LOG_FATAL, "could not listen: %s", strerror(errno));
		return 1;
	}

	nworkers = cfgp->workers > 0 ? cfgp->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (nworkers < 1)
		nworkers = 1;
	log_info("eventodbd %s listening on %s:%d workers=%d test_mode=%s", PACKAGE_VERSION,
	    cfgp->host, cfgp->port, nworkers, cfgp->test_mode ? "on" : "off");
	sse_shm_init();	/* shared by the workers: mesh members, subscription counts */

	memset(&h, 0, sizeof(h));
	h.listen_fd = fd;
	h.conninfo = strdup(conninfo);	/* outlives a reload of cfg */
	h.version = PACKAGE_VERSION;
	h.master_pid = getpid();
	if (!h.conninfo) {
		log_msg(LOG_FATAL, "out of memory");
		return 1;
	}
	/* One-time set-up the workers would otherwise each repeat after fork. */
	shm_panic_prepare();
	prof_init();
	rc = srv_master_run(&h, cfgp, argc, margv, &origmask);	/* owns cfgp now */
	if (h.listen_fd >= 0)
		close(h.listen_fd);
	free((void *)h.conninfo);	/* LeakSanitizer's exit check (eventodbd-asan) */
	log_info("eventodbd stopped");
	return rc;
}
