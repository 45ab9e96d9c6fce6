/*
 * cfg.h - every setting of eventodbd, declared once.
 *
 * The table in config.c (name, type, default, environment variable,
 * help) drives command-line parsing, the environment, --help and the
 * check that man/eventodbd.8 mentions every option.  Precedence:
 * flag > environment > default (decisions.md 10).
 */
#ifndef EVENTODB_CFG_H
#define EVENTODB_CFG_H

#include <stddef.h>
#include <stdio.h>

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
	long	 max_body;
	long	 max_header;
	int	 header_timeout;
	int	 body_timeout;
	int	 idle_timeout;
	int	 max_conns;
	char	*user;
	int	 write_batch_max;
	long	 write_batch_bytes;
};

/*
 * Fill cfg from defaults, the environment and argv (argv[0] is the
 * program; a leading "serve" has been removed by the caller).  Returns 0,
 * or -1 after printing the error and the usage to stderr (exit 2).
 */
int cfg_load(struct config *cfg, int argc, char **argv);
void cfg_usage(FILE *out);

#endif
