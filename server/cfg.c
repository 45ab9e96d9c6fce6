/*
 * cfg.c - the option table and its parser.
 *
 * Accepted forms, as the original server's Go flag package and GNU:
 * --name value, --name=value, -name value, -name=value; booleans take no
 * separate value (--test-mode, --test-mode=false).  An environment
 * variable EVENTODB_<NAME> (dashes as underscores) sets the default; an
 * empty value counts as unset.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/cfg.h"

enum opt_type { OPT_INT, OPT_LONG, OPT_STR, OPT_BOOL };

struct option_def {
	const char	*name;
	enum opt_type	 type;
	size_t		 off;
	const char	*def;
	const char	*arg;	/* metavariable for --help */
	const char	*help;
};

#define O(f) offsetof(struct config, f)

/* Alphabetical. */
static const struct option_def options[] = {
	{ "body-timeout",   OPT_INT,  O(body_timeout),   "60",       "SECS",  "seconds to receive a request body" },
	{ "db-pool",        OPT_INT,  O(db_pool),        "4",        "N",     "PostgreSQL connections per worker" },
	{ "db-url",         OPT_STR,  O(db_url),         "",         "URL",   "PostgreSQL URL or conninfo (none with --test-mode: private cluster)" },
	{ "header-timeout", OPT_INT,  O(header_timeout), "10",       "SECS",  "seconds to receive a full header block" },
	{ "host",           OPT_STR,  O(host),           "0.0.0.0",  "ADDR",  "address to listen on" },
	{ "idle-timeout",   OPT_INT,  O(idle_timeout),   "120",      "SECS",  "keep-alive idle timeout" },
	{ "log-format",     OPT_STR,  O(log_format),     "console",  "FMT",   "console (key=value lines) or json" },
	{ "log-level",      OPT_STR,  O(log_level),      "info",     "LEVEL", "debug, info, warn or error" },
	{ "max-body",       OPT_LONG, O(max_body),       "16777216", "BYTES", "largest /rpc request body" },
	{ "max-conns",      OPT_INT,  O(max_conns),      "10000",    "N",     "connections per worker" },
	{ "max-header",     OPT_LONG, O(max_header),     "16384",    "BYTES", "largest request header block" },
	{ "port",           OPT_INT,  O(port),           "8080",     "PORT",  "TCP port to listen on" },
	{ "test-mode",      OPT_BOOL, O(test_mode),      "false",    NULL,    "relaxed auth; without --db-url run a private PostgreSQL" },
	{ "token",          OPT_STR,  O(token),          "",         "TOKEN", "token of the default namespace (the admin token)" },
	{ "user",           OPT_STR,  O(user),           "",         "USER",  "unprivileged user for the test-mode cluster when started as root" },
	{ "workers",        OPT_INT,  O(workers),        "0",        "N",     "worker processes (0: one per online CPU)" },
	{ "write-batch-bytes", OPT_LONG, O(write_batch_bytes), "4194304", "BYTES", "most JSON bytes in one group commit" },
	{ "write-batch-max", OPT_INT, O(write_batch_max),  "256",      "N",     "most writes in one group commit (1: one write per transaction)" },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static int
parse_bool(const char *s, int *out)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False" };
	for (size_t i = 0; i < 6; i++) {
		if (strcmp(s, t[i]) == 0) { *out = 1; return 0; }
		if (strcmp(s, f[i]) == 0) { *out = 0; return 0; }
	}
	return -1;
}

static int
set_value(struct config *cfg, const struct option_def *o, const char *val)
{
	char *p = (char *)cfg + o->off, *end;
	long v;

	switch (o->type) {
	case OPT_STR:
		free(*(char **)p);
		*(char **)p = strdup(val);
		return *(char **)p ? 0 : -1;
	case OPT_BOOL:
		return parse_bool(val, (int *)p);
	case OPT_INT:
	case OPT_LONG:
		errno = 0;
		v = strtol(val, &end, 10);
		if (errno || end == val || *end != '\0' || v < 0)
			return -1;
		if (o->type == OPT_INT) {
			if (v > INT_MAX)
				return -1;
			*(int *)p = (int)v;
		} else
			*(long *)p = v;
		return 0;
	}
	return -1;
}

static const struct option_def *
find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
			return &options[i];
	return NULL;
}

void
cfg_usage(FILE *out)
{
	fprintf(out,
	    "usage: eventodbd [serve] [options]\n"
	    "       eventodbd --version | --help\n"
	    "\n"
	    "options (also EVENTODB_<NAME> in the environment):\n");
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "",
		    o->arg ? o->arg : "");
		fprintf(out, "  %-26s %s", left, o->help);
		if (o->def[0] && o->type != OPT_BOOL)
			fprintf(out, " (default %s)", o->def);
		fputc('\n', out);
	}
	fprintf(out,
	    "  --help                     print this help and exit\n"
	    "  --version                  print the version and exit\n");
}

int
cfg_load(struct config *cfg, int argc, char **argv)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];
		char env[64], *ev;
		size_t j;

		set_value(cfg, o, o->def);
		j = (size_t)snprintf(env, sizeof(env), "EVENTODB_");
		for (const char *s = o->name; *s && j < sizeof(env) - 1; s++)
			env[j++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
		env[j] = '\0';
		ev = getenv(env);
		if (ev && *ev && set_value(cfg, o, ev) < 0) {
			/* As the original: a malformed value falls back to the default. */
			set_value(cfg, o, o->def);
		}
	}

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val = NULL;
		const struct option_def *o;
		size_t nlen;

		if (a[0] != '-' || a[1] == '\0') {
			/* A leading non-flag word stops parsing, as Go's flag package. */
			break;
		}
		name = a + 1;
		if (*name == '-')
			name++;
		if (*name == '\0')	/* "--" ends the options */
			break;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		o = find_option(name, nlen);
		if (!o) {
			fprintf(stderr, "eventodbd: unknown option: %s\n", a);
			cfg_usage(stderr);
			return -1;
		}
		if (eq)
			val = eq + 1;
		else if (o->type == OPT_BOOL)
			val = "true";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "eventodbd: option needs a value: %s\n", a);
			cfg_usage(stderr);
			return -1;
		}
		if (set_value(cfg, o, val) < 0) {
			fprintf(stderr, "eventodbd: invalid value \"%s\" for --%s\n", val, o->name);
			cfg_usage(stderr);
			return -1;
		}
	}

	if (cfg->port < 1 || cfg->port > 65535) {
		fprintf(stderr, "eventodbd: --port must be between 1 and 65535\n");
		return -1;
	}
	if (cfg->db_pool < 1 || cfg->db_pool > 64) {
		fprintf(stderr, "eventodbd: --db-pool must be between 1 and 64\n");
		return -1;
	}
	if (cfg->max_header < 1024 || cfg->max_body < 1024 || cfg->max_conns < 1 ||
	    cfg->header_timeout < 1 || cfg->body_timeout < 1 || cfg->idle_timeout < 1) {
		fprintf(stderr, "eventodbd: limits must be positive (max-header, max-body >= 1024)\n");
		return -1;
	}
	if (strcmp(cfg->log_format, "console") != 0 && strcmp(cfg->log_format, "json") != 0) {
		fprintf(stderr, "eventodbd: --log-format must be console or json\n");
		return -1;
	}
	return 0;
}
