/*
 * cfg.c - the option table, its parsers and its validation.
 *
 * One table below defines every setting: name, type, where it lands in
 * struct config, default, metavariable, help and flags.  Everything else
 * derives from it: the command line, the EVENTODB_<NAME> environment
 * variables, the configuration file, --help, --print-config (and so the
 * sample configuration), and what a reload may change.
 *
 * Command line, as the original server's Go flag package and GNU:
 * --name value, --name=value, -name value, -name=value; booleans take no
 * separate value (--test-mode, --test-mode=false).  Environment:
 * EVENTODB_<NAME> with dashes as underscores; an empty value counts as
 * unset, a malformed one is ignored with a warning (as the original).
 * Configuration file (--config FILE or EVENTODB_CONFIG): "name = value"
 * lines, '#' starts a comment (at the start of a line or after a blank),
 * a value may be double-quoted ("a # b", \" and \\ inside); an unknown
 * name, a bad value or a name given twice makes the file invalid.
 * Precedence: flag > environment > file > default (decisions.md 10).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "server/cfg.h"

enum opt_type { OPT_INT, OPT_LONG, OPT_STR, OPT_BOOL };

/* flags */
#define CF_RESTART	0x01	/* read at start only: a reload keeps the running value */
#define CF_SECRET	0x02	/* never printed or logged */
#define CF_CLI		0x04	/* an action: command line only */
#define CF_NOFILE	0x08	/* not in the configuration file (the file's own name) */

struct option_def {
	const char	*name;
	enum opt_type	 type;
	size_t		 off;
	const char	*def;
	const char	*arg;	/* metavariable for --help */
	const char	*help;
	int		 flags;	/* CF_*; 0 = reloadable, settable everywhere */
};

#define O(f) offsetof(struct config, f)

/* Alphabetical.  Keep man/eventodbd.8, man/eventodbd.conf.5 and
 * etc/eventodbd.conf.sample (eventodbd --print-config) in step: t/91-config.t checks. */
static const struct option_def options[] = {
	{ "allow-root",     OPT_BOOL, O(allow_root),     "false",    NULL,    "serve as root when started as root without --user (not recommended)", CF_RESTART },
	{ "body-timeout",   OPT_INT,  O(body_timeout),   "60",       "SECS",  "seconds to receive a request body", 0 },
	{ "check-config",   OPT_BOOL, O(check_config),   "false",    NULL,    "validate the configuration (file, environment, flags), exit 0 if valid, 1 if not", CF_CLI },
	{ "config",         OPT_STR,  O(config),         "",         "FILE",  "configuration file of \"name = value\" lines", CF_RESTART | CF_NOFILE },
	{ "db-pool",        OPT_INT,  O(db_pool),        "4",        "N",     "PostgreSQL connections per worker", 0 },
	{ "db-timeout",     OPT_INT,  O(db_timeout),     "10",       "SECS",  "deadline of a request's database work: statement_timeout, and a silent connection is dropped 1 s later (0: none)", 0 },
	{ "db-url",         OPT_STR,  O(db_url),         "",         "URL",   "PostgreSQL URL or conninfo (none with --test-mode: private cluster)", CF_RESTART | CF_SECRET },
	{ "enable-test-rpc", OPT_BOOL, O(enable_test_rpc), "false",  NULL,    "tests only: /debug/test/ endpoints that allocate and burn CPU (loopback or admin token)", CF_RESTART },
	{ "group",          OPT_STR,  O(group),          "",         "GROUP", "group to run as (default: the primary group of --user)", CF_RESTART },
	{ "header-timeout", OPT_INT,  O(header_timeout), "10",       "SECS",  "seconds to receive a full header block", 0 },
	{ "heartbeat-timeout", OPT_INT, O(heartbeat_timeout), "3",   "SECS",  "kill and replace a worker silent for this long (0: never)", 0 },
	{ "host",           OPT_STR,  O(host),           "0.0.0.0",  "ADDR",  "address to listen on", CF_RESTART },
	{ "idle-timeout",   OPT_INT,  O(idle_timeout),   "120",      "SECS",  "keep-alive idle timeout", 0 },
	{ "log-format",     OPT_STR,  O(log_format),     "console",  "FMT",   "console (key=value lines) or json", 0 },
	{ "log-level",      OPT_STR,  O(log_level),      "info",     "LEVEL", "debug, info, warn or error", 0 },
	{ "max-body",       OPT_LONG, O(max_body),       "16777216", "BYTES", "largest /rpc request body", 0 },
	{ "max-conns",      OPT_INT,  O(max_conns),      "10000",    "N",     "connections per worker", 0 },
	{ "max-header",     OPT_LONG, O(max_header),     "16384",    "BYTES", "largest request header block", 0 },
	{ "max-subscriptions", OPT_INT, O(max_subscriptions), "1000", "N",    "SSE subscriptions per namespace in this instance (0: no limit)", 0 },
	{ "port",           OPT_INT,  O(port),           "8080",     "PORT",  "TCP port to listen on", CF_RESTART },
	{ "print-config",   OPT_BOOL, O(print_config),   "false",    NULL,    "print the effective configuration and exit (nothing set: the sample file)", CF_CLI },
	{ "profile-alloc-rate", OPT_INT, O(profile_alloc_rate), "524288", "BYTES", "sample one allocation per this many bytes allocated, on average (0: off)", 0 },
	{ "profile-hz",     OPT_INT,  O(profile_hz),     "100",      "HZ",    "CPU samples per second of CPU time, per worker (0: off; at most 1000)", 0 },
	{ "publish-counters", OPT_BOOL, O(publish_counters), "true",   NULL,    "workers publish counters and latencies in the shared-memory segment (false: only to measure what publishing costs)", CF_RESTART },
	{ "shm-name",       OPT_STR,  O(shm_name),       "",         "NAME",  "shared-memory segment of this instance, read by evdump (default /eventodbd.PORT)", CF_RESTART },
	{ "shutdown-timeout", OPT_INT, O(shutdown_timeout), "15",    "SECS",  "seconds for requests in flight to finish on stop or reload before workers are killed", 0 },
	{ "spare-worker",   OPT_BOOL, O(spare_worker),   "true",     NULL,    "keep one worker forked and set up, asleep, to replace a worker that dies at once", 0 },
	{ "sse-keepalive",  OPT_INT,  O(sse_keepalive),  "15",       "SECS",  "keepalive comment on an idle subscription after this many seconds (0: none)", 0 },
	{ "sse-notify",     OPT_BOOL, O(sse_notify),     "true",     NULL,    "pass pokes to other instances on the same database (PostgreSQL NOTIFY)", 0 },
	{ "test-mode",      OPT_BOOL, O(test_mode),      "false",    NULL,    "relaxed auth; without --db-url run a private PostgreSQL", CF_RESTART },
	{ "token",          OPT_STR,  O(token),          "",         "TOKEN", "token of the default namespace (the admin token)", CF_RESTART | CF_SECRET },
	{ "user",           OPT_STR,  O(user),           "",         "USER",  "user to run as when started as root (test mode: postgres or nobody); also runs the test-mode cluster", CF_RESTART },
	{ "workers",        OPT_INT,  O(workers),        "0",        "N",     "worker processes (0: one per online CPU)", 0 },
	{ "write-batch-bytes", OPT_LONG, O(write_batch_bytes), "4194304", "BYTES", "most JSON bytes in one group commit", 0 },
	{ "write-batch-max", OPT_INT, O(write_batch_max),  "256",      "N",     "most writes in one group commit (1: one write per transaction)", 0 },
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

_Static_assert(NOPTIONS <= CFG_MAX_OPTIONS, "raise CFG_MAX_OPTIONS");

#define MAX_FILE_BYTES	(1024 * 1024)

static int
parse_bool(const char *s, int *out)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True", "yes", "on" };
	static const char *const f[] = { "0", "f", "F", "FALSE", "false", "False", "no", "off" };
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (strcmp(s, t[i]) == 0) { *out = 1; return 0; }
		if (strcmp(s, f[i]) == 0) { *out = 0; return 0; }
	}
	return -1;
}

/* Parse val into the option's field; the field is unchanged on error. */
static int
set_value(struct config *cfg, const struct option_def *o, const char *val)
{
	char *p = (char *)cfg + o->off, *end, *dup;
	long v;
	int b;

	switch (o->type) {
	case OPT_STR:
		if (!(dup = strdup(val)))
			return -1;
		free(*(char **)p);
		*(char **)p = dup;
		return 0;
	case OPT_BOOL:
		if (parse_bool(val, &b) < 0)
			return -1;
		*(int *)p = b;
		return 0;
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

/* The value as text (secrets hidden unless show_secret). */
static void
format_value(const struct config *cfg, const struct option_def *o, char *buf, size_t len,
    int show_secret)
{
	const char *p = (const char *)cfg + o->off;

	switch (o->type) {
	case OPT_STR:
		if ((o->flags & CF_SECRET) && !show_secret)
			snprintf(buf, len, "%s", (*(char *const *)p)[0] ? "(set, not shown)" : "");
		else
			snprintf(buf, len, "%s", *(char *const *)p);
		break;
	case OPT_BOOL:
		snprintf(buf, len, "%s", *(const int *)p ? "true" : "false");
		break;
	case OPT_INT:
		snprintf(buf, len, "%d", *(const int *)p);
		break;
	case OPT_LONG:
		snprintf(buf, len, "%ld", *(const long *)p);
		break;
	}
}

static int
same_value(const struct config *a, const struct config *b, const struct option_def *o)
{
	const char *pa = (const char *)a + o->off, *pb = (const char *)b + o->off;

	switch (o->type) {
	case OPT_STR:
		return strcmp(*(char *const *)pa, *(char *const *)pb) == 0;
	case OPT_BOOL:
	case OPT_INT:
		return *(const int *)pa == *(const int *)pb;
	case OPT_LONG:
		return *(const long *)pa == *(const long *)pb;
	}
	return 0;
}

/* Copy o's value from src to dst. */
static void
copy_value(struct config *dst, const struct config *src, const struct option_def *o)
{
	char buf[4096];

	if (o->type == OPT_STR)
		(void)set_value(dst, o, *(char *const *)((const char *)src + o->off));
	else {
		format_value(src, o, buf, sizeof(buf), 1);
		(void)set_value(dst, o, buf);
	}
}

static const struct option_def *
find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
			return &options[i];
	return NULL;
}

static size_t
opt_index(const struct option_def *o)
{
	return (size_t)(o - options);
}

static void
env_name(const struct option_def *o, char *env, size_t len)
{
	size_t j = (size_t)snprintf(env, len, "EVENTODB_");
	for (const char *s = o->name; *s && j < len - 1; s++)
		env[j++] = *s == '-' ? '_' : (char)toupper((unsigned char)*s);
	env[j] = '\0';
}

static void
add_warning(struct config *cfg, const char *fmt, const char *a, const char *b)
{
	size_t n = strlen(cfg->warnings);
	if (n >= sizeof(cfg->warnings) - 2)
		return;
	if (n)
		cfg->warnings[n++] = '\n';
	snprintf(cfg->warnings + n, sizeof(cfg->warnings) - n, fmt, a, b);
}

void
cfg_usage(FILE *out)
{
	fprintf(out,
	    "usage: eventodbd [serve] [options]\n"
	    "       eventodbd --check-config | --print-config [options]\n"
	    "       eventodbd --version | --help\n"
	    "\n"
	    "options (also EVENTODB_<NAME> in the environment and \"name = value\" in --config FILE;\n"
	    "precedence: flag > environment > file > default; [restart]: not changed by a reload):\n");
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "",
		    o->arg ? o->arg : "");
		fprintf(out, "  %-26s %s", left, o->help);
		if (o->def[0] && o->type != OPT_BOOL)
			fprintf(out, " (default %s)", o->def);
		if ((o->flags & (CF_RESTART | CF_CLI)) == CF_RESTART)
			fprintf(out, " [restart]");
		fputc('\n', out);
	}
	fprintf(out,
	    "  --help                     print this help and exit\n"
	    "  --version                  print the version and exit\n");
}

/* ---- configuration file */

/* Parse one value token at *pp (quoted or bare); returns 0 or -1. */
static int
file_value(char *p, char **out)
{
	char *w, *start;

	if (*p == '"') {
		start = w = ++p;
		for (;;) {
			if (*p == '\0')
				return -1;	/* unterminated */
			if (*p == '"')
				break;
			if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
				p++;
			*w++ = *p++;
		}
		p++;
		*w = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '\0' && *p != '#')
			return -1;	/* junk after the closing quote */
		*out = start;
		return 0;
	}
	start = p;
	for (; *p; p++)
		if (*p == '#' && (p == start || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	w = start + strlen(start);
	while (w > start && (w[-1] == ' ' || w[-1] == '\t'))
		*--w = '\0';
	*out = start;
	return 0;
}

static int
load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
	FILE *f;
	char *buf, *line, *next;
	size_t n;
	int lineno = 0, seen[CFG_MAX_OPTIONS] = { 0 };

	f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "could not open configuration file \"%s\": %s", path,
		    strerror(errno));
		return -1;
	}
	buf = malloc(MAX_FILE_BYTES + 1);
	if (!buf) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
	if (ferror(f) || n > MAX_FILE_BYTES) {
		snprintf(err, errlen, ferror(f) ? "could not read configuration file \"%s\"" :
		    "configuration file \"%s\" is larger than 1 MiB", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	buf[n] = '\0';
	if (memchr(buf, '\0', n)) {
		snprintf(err, errlen, "configuration file \"%s\" contains a NUL byte", path);
		free(buf);
		return -1;
	}

	for (line = buf; line; line = next) {
		char *p, *key, *val, *k;
		const struct option_def *o;
		size_t klen;

		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		p = line;
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		k = p + strlen(p);
		while (k > p && (k[-1] == '\r' || k[-1] == ' ' || k[-1] == '\t'))
			*--k = '\0';
		if (*p == '\0' || *p == '#')
			continue;
		key = p;
		while (isalnum((unsigned char)*p) || *p == '-' || *p == '_')
			p++;
		klen = (size_t)(p - key);
		while (*p == ' ' || *p == '\t')
			p++;
		if (klen == 0 || *p != '=') {
			snprintf(err, errlen, "%s:%d: expected \"name = value\"", path, lineno);
			goto fail;
		}
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		for (size_t i = 0; i < klen; i++)
			if (key[i] == '_')
				key[i] = '-';
		o = find_option(key, klen);
		key[klen] = '\0';
		if (!o) {
			snprintf(err, errlen, "%s:%d: unknown setting \"%s\"", path, lineno, key);
			goto fail;
		}
		if (o->flags & (CF_CLI | CF_NOFILE)) {
			snprintf(err, errlen, "%s:%d: \"%s\" cannot be set in a configuration file",
			    path, lineno, key);
			goto fail;
		}
		if (seen[opt_index(o)]) {
			snprintf(err, errlen, "%s:%d: \"%s\" is already set on line %d", path, lineno,
			    key, seen[opt_index(o)]);
			goto fail;
		}
		seen[opt_index(o)] = lineno;
		if (file_value(p, &val) < 0) {
			snprintf(err, errlen, "%s:%d: badly quoted value for \"%s\"", path, lineno, key);
			goto fail;
		}
		if (set_value(cfg, o, val) < 0) {
			snprintf(err, errlen, "%s:%d: invalid value \"%.200s\" for \"%s\"", path, lineno,
			    (o->flags & CF_SECRET) ? "(not shown)" : val, key);
			goto fail;
		}
		cfg->src[opt_index(o)] = CFG_SRC_FILE;
	}
	free(buf);
	return 0;
fail:
	free(buf);
	return -1;
}

/* ---- validation */

static int
validate(const struct config *cfg, char *err, size_t errlen)
{
	const char *u = cfg->db_url;

	if (cfg->port < 1 || cfg->port > 65535) {
		snprintf(err, errlen, "port must be between 1 and 65535");
		return -1;
	}
	if (cfg->db_timeout < 0 || cfg->db_timeout > 3600) {
		snprintf(err, errlen, "db-timeout must be between 0 and 3600");
		return -1;
	}
	if (cfg->db_pool < 1 || cfg->db_pool > 64) {
		snprintf(err, errlen, "db-pool must be between 1 and 64");
		return -1;
	}
	if (cfg->workers > 1024) {
		snprintf(err, errlen, "workers must be between 0 and 1024");
		return -1;
	}
	if (cfg->max_header < 1024 || cfg->max_body < 1024 || cfg->max_conns < 1 ||
	    cfg->header_timeout < 1 || cfg->body_timeout < 1 || cfg->idle_timeout < 1) {
		snprintf(err, errlen, "limits must be positive (max-header, max-body >= 1024)");
		return -1;
	}
	if (cfg->shutdown_timeout < 1 || cfg->shutdown_timeout > 3600) {
		snprintf(err, errlen, "shutdown-timeout must be between 1 and 3600");
		return -1;
	}
	if (cfg->heartbeat_timeout > 3600 || (cfg->heartbeat_timeout > 0 && cfg->heartbeat_timeout < 2)) {
		snprintf(err, errlen, "heartbeat-timeout must be 0 (off) or between 2 and 3600");
		return -1;
	}
	if (cfg->profile_hz > 1000) {
		snprintf(err, errlen, "profile-hz must be between 0 (off) and 1000");
		return -1;
	}
	if (strcmp(cfg->log_format, "console") != 0 && strcmp(cfg->log_format, "json") != 0) {
		snprintf(err, errlen, "log-format must be console or json");
		return -1;
	}
	if (log_level_parse(cfg->log_level) < 0) {
		snprintf(err, errlen, "log-level must be debug, info, warn or error");
		return -1;
	}
	if (!u[0] && !cfg->test_mode) {
		snprintf(err, errlen, "db-url is required (use --test-mode for a private "
		    "throwaway PostgreSQL)");
		return -1;
	}
	if (u[0] && strncmp(u, "postgres://", 11) && strncmp(u, "postgresql://", 13) &&
	    !strchr(u, '=')) {
		snprintf(err, errlen, "unsupported database URL (use postgres://, postgresql:// or "
		    "a libpq connection string)");
		return -1;
	}
	if (cfg->user[0]) {
		errno = 0;
		if (!getpwnam(cfg->user)) {
			snprintf(err, errlen, "user \"%s\" does not exist", cfg->user);
			return -1;
		}
	}
	if (cfg->group[0]) {
		errno = 0;
		if (!getgrnam(cfg->group)) {
			snprintf(err, errlen, "group \"%s\" does not exist", cfg->group);
			return -1;
		}
	}
	return 0;
}

/* ---- loading */

char **
cfg_argv_copy(int argc, char **argv)
{
	char **v = calloc((size_t)argc + 1, sizeof(*v));

	if (!v)
		return NULL;
	for (int i = 0; i < argc; i++)
		if (!(v[i] = strdup(argv[i])))
			return NULL;	/* start-up: the caller exits */
	return v;
}

void
cfg_argv_hide(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char *a = argv[i], *name, *eq, *val = NULL;
		const struct option_def *o;
		size_t nlen;

		if (a[0] != '-' || a[1] == '\0')
			break;
		name = a + 1;
		if (*name == '-')
			name++;
		if (*name == '\0')
			break;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		if (!(o = find_option(name, nlen)))
			break;
		if (eq)
			val = eq + 1;
		else if (o->type != OPT_BOOL && i + 1 < argc)
			val = argv[++i];
		if (val && (o->flags & CF_SECRET))
			memset(val, 'x', strlen(val));
	}
}

int
cfg_load(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	const struct option_def *flag_opt[256];
	const char *flag_val[256], *file;
	int nflags = 0;

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NOPTIONS; i++)
		if (set_value(cfg, &options[i], options[i].def) < 0) {
			snprintf(err, errlen, "out of memory");
			return CFG_EINVALID;
		}

	/* 1. The command line, parsed first (it may name the file). */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val = NULL;
		const struct option_def *o;
		size_t nlen;

		if (a[0] != '-' || a[1] == '\0')
			break;	/* a leading non-flag word stops parsing, as Go's flag package */
		name = a + 1;
		if (*name == '-')
			name++;
		if (*name == '\0')	/* "--" ends the options */
			break;
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		o = find_option(name, nlen);
		if (!o) {
			snprintf(err, errlen, "unknown option: %s", a);
			return CFG_EUSAGE;
		}
		if (eq)
			val = eq + 1;
		else if (o->type == OPT_BOOL)
			val = "true";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			snprintf(err, errlen, "option needs a value: %s", a);
			return CFG_EUSAGE;
		}
		if (nflags == (int)(sizeof(flag_opt) / sizeof(flag_opt[0]))) {
			snprintf(err, errlen, "too many options");
			return CFG_EUSAGE;
		}
		flag_opt[nflags] = o;
		flag_val[nflags++] = val;
	}

	/* 2. The file: --config, else EVENTODB_CONFIG. */
	file = NULL;
	for (int i = 0; i < nflags; i++)
		if (strcmp(flag_opt[i]->name, "config") == 0)
			file = flag_val[i];
	if (!file && getenv("EVENTODB_CONFIG") && *getenv("EVENTODB_CONFIG"))
		file = getenv("EVENTODB_CONFIG");
	if (file && *file && load_file(cfg, file, err, errlen) < 0)
		return CFG_EINVALID;

	/* 3. The environment. */
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];
		char env[64], *ev;

		if (o->flags & CF_CLI)
			continue;
		env_name(o, env, sizeof(env));
		ev = getenv(env);
		if (!ev || !*ev)
			continue;
		if (set_value(cfg, o, ev) < 0)
			add_warning(cfg, "ignoring %s: invalid value for --%s", env, o->name);
		else
			cfg->src[i] = CFG_SRC_ENV;
	}

	/* 4. Flags win. */
	for (int i = 0; i < nflags; i++) {
		if (set_value(cfg, flag_opt[i], flag_val[i]) < 0) {
			snprintf(err, errlen, "invalid value \"%.200s\" for --%s",
			    (flag_opt[i]->flags & CF_SECRET) ? "(not shown)" : flag_val[i],
			    flag_opt[i]->name);
			return CFG_EUSAGE;
		}
		cfg->src[opt_index(flag_opt[i])] = CFG_SRC_FLAG;
	}

	if (validate(cfg, err, errlen) < 0)
		return CFG_ECHECK;
	return CFG_OK;
}

void
cfg_free(struct config *cfg)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (options[i].type == OPT_STR) {
			char **p = (char **)((char *)cfg + options[i].off);
			free(*p);
			*p = NULL;
		}
}

void
cfg_print(const struct config *cfg, FILE *out)
{
	char val[4096], env[64];

	fprintf(out,
	    "# eventodbd.conf - settings of eventodbd, one \"name = value\" per line.\n"
	    "#\n"
	    "# Written by \"eventodbd --print-config\"; see eventodbd.conf(5).  A\n"
	    "# setting at its default is commented out.  The same settings can be\n"
	    "# given as --name flags and EVENTODB_<NAME> environment variables;\n"
	    "# precedence: flag > environment > this file > default.  SIGHUP (or\n"
	    "# \"systemctl reload eventodbd\") re-reads this file; settings marked\n"
	    "# [restart] keep their running value until the next start.\n"
	    "# Command line only: --config (this file), --check-config, --print-config.\n");
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];

		if (o->flags & (CF_CLI | CF_NOFILE))
			continue;
		format_value(cfg, o, val, sizeof(val), 0);
		fprintf(out, "\n# %s%s\n", o->help, (o->flags & CF_RESTART) ? " [restart]" : "");
		switch (cfg->src[i]) {
		case CFG_SRC_DEFAULT:
			fprintf(out, "#%s =%s%s\n", o->name, val[0] ? " " : "", val);
			continue;
		case CFG_SRC_FILE:
			fprintf(out, "# (from %s)\n", cfg->config);
			break;
		case CFG_SRC_ENV:
			env_name(o, env, sizeof(env));
			fprintf(out, "# (from the environment: %s)\n", env);
			break;
		case CFG_SRC_FLAG:
			fprintf(out, "# (from the command line)\n");
			break;
		}
		if (o->flags & CF_SECRET)
			fprintf(out, "#%s = %s\n", o->name, val);
		else if (o->type == OPT_STR && (!val[0] || strpbrk(val, "#\"\\") ||
		    val[0] == ' ' || val[strlen(val) - 1] == ' ')) {
			fputs(o->name, out);
			fputs(" = \"", out);
			for (const char *c = val; *c; c++) {
				if (*c == '"' || *c == '\\')
					fputc('\\', out);
				fputc(*c, out);
			}
			fputs("\"\n", out);
		} else
			fprintf(out, "%s = %s\n", o->name, val);
	}
}

int
cfg_reload_merge(struct config *newc, const struct config *oldc)
{
	char a[256], b[256];
	int changed = 0;

	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct option_def *o = &options[i];

		if ((o->flags & CF_CLI) || same_value(newc, oldc, o))
			continue;
		format_value(oldc, o, a, sizeof(a), 0);
		format_value(newc, o, b, sizeof(b), 0);
		if (o->flags & CF_RESTART) {
			if (o->flags & CF_SECRET)
				log_warn("reload: %s cannot change without a restart; keeping the "
				    "running value", o->name);
			else
				log_warn("reload: %s cannot change without a restart; keeping %s "
				    "(not %s)", o->name, a, b);
			copy_value(newc, oldc, o);
			newc->src[i] = oldc->src[i];
			continue;
		}
		log_info("reload: %s changed from %s to %s", o->name, a, b);
		changed++;
	}
	return changed;
}
