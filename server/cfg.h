/*
 * cfg.h - every setting of eventodbd, declared once.
 *
 * The option table in cfg.c (name, type, default, flags such as
 * "restart needed", help) drives the command line, the EVENTODB_*
 * environment, the configuration file (--config FILE), validation,
 * --help, --print-config (which also writes etc/eventodbd.conf.sample)
 * and the reload rules.  A test checks that every option appears in
 * eventodbd(8), eventodbd.conf(5) and the sample configuration.
 *
 * Precedence (decisions.md 10): flag > environment > file > default.
 */
#ifndef EVENTODB_CFG_H
#define EVENTODB_CFG_H

#include <stddef.h>
#include <stdio.h>

#define CFG_MAX_OPTIONS	64

/* Where a setting's value came from (for --print-config). */
enum cfg_source { CFG_SRC_DEFAULT = 0, CFG_SRC_FILE, CFG_SRC_ENV, CFG_SRC_FLAG };

struct config {
	int	 port;
	char	*host;
	char	*db_url;
	char	*token;
	int	 test_mode;
	int	 workers;
	char	*log_level;
	char	*log_format;
	int	 db_pool;
	int	 db_timeout;	/* seconds, 0 = no database deadline */
	long	 max_body;
	long	 max_header;
	int	 header_timeout;
	int	 body_timeout;
	int	 idle_timeout;
	int	 max_conns;
	char	*user;
	int	 write_batch_max;
	long	 write_batch_bytes;
	/* operations (issue 7) */
	char	*config;		/* --config FILE, "" = none */
	char	*group;
	int	 allow_root;
	int	 shutdown_timeout;	/* seconds */
	int	 heartbeat_timeout;	/* seconds, 0 = never kill a silent worker */
	int	 spare_worker;		/* keep a forked spare to replace a dead worker */
	int	 check_config;		/* action: validate and exit */
	int	 print_config;		/* action: print the effective settings and exit */
	/* shared memory (issue 4) */
	char	*shm_name;		/* "" = /eventodbd.<port> */
	int	 publish_counters;
	/* subscriptions (issue 3) */
	int	 max_subscriptions;	/* SSE subscriptions per namespace, 0 = no limit */
	int	 sse_keepalive;		/* seconds, 0 = no keepalive comments */
	int	 sse_notify;		/* pokes to other instances through NOTIFY */
	/* sampling profiler (issue 5) */
	int	 profile_hz;		/* CPU samples per CPU second per worker, 0 = off */
	int	 profile_alloc_rate;	/* mean bytes between allocation samples, 0 = off */
	int	 enable_test_rpc;	/* /debug/test/ endpoints (tests only) */
	/* bookkeeping, not options */
	unsigned char src[CFG_MAX_OPTIONS];	/* enum cfg_source, by table index */
	char	 warnings[1024];	/* non-fatal notes for the log ("" if none) */
};

/* cfg_load() results */
#define CFG_OK		 0
#define CFG_EUSAGE	-1	/* bad command line: print the usage too */
#define CFG_EINVALID	-2	/* a value or the file is invalid */
#define CFG_ECHECK	-3	/* everything parsed, but the settings do not validate */

/*
 * Fill cfg from the defaults, the configuration file, the environment and
 * argv (argv[0] is the program; a leading "serve" has been removed by the
 * caller), then validate.  Returns CFG_OK, or CFG_EUSAGE / CFG_EINVALID
 * with one line in err.  cfg is always safe to cfg_free() afterwards.
 * Used at start and again for every reload (the same argv).
 */
int cfg_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen);
/*
 * A private copy of argv (what reloads parse), then the secrets of the
 * real one (--token, --db-url values) overwritten in place, so ps(1) and
 * /proc/PID/cmdline don't show them to other local users.
 */
char **cfg_argv_copy(int argc, char **argv);
void cfg_argv_hide(int argc, char **argv);
void cfg_free(struct config *cfg);

/* --help: the option list. */
void cfg_usage(FILE *out);

/*
 * --print-config: every option as "name = value" with its help and where
 * the value came from; defaults are commented out, secrets are not shown.
 * With nothing set it prints the sample configuration file.
 */
void cfg_print(const struct config *cfg, FILE *out);

/*
 * Reload: newc was loaded and validated.  Options marked "restart" keep
 * their value from oldc (with a warning when the file asked for another);
 * every other change is logged.  Returns the number of changed settings
 * that take effect.
 */
int cfg_reload_merge(struct config *newc, const struct config *oldc);

#endif
