/*
 * cli.h - `eventodbd export` and `eventodbd import` (api.md 11.3-11.4):
 * HTTP clients of a running server, and the little they share
 * (cli_http.c): flags in the Go style, a blocking HTTP/1.1 client with an
 * incremental response decoder.
 */
#ifndef EVENTODB_CLI_H
#define EVENTODB_CLI_H

#include <stddef.h>
#include <sys/types.h>

/* The subcommands: argv[0] is the subcommand's name; exit status returned. */
int cli_export(int argc, char **argv);
int cli_import(int argc, char **argv);

/* ---- flags ---------------------------------------------------------------- */

enum cli_ftype { CLI_STR, CLI_BOOL };

struct cli_flag {
	const char	*name;
	enum cli_ftype	 type;
	void		*val;		/* char ** or int * */
	const char	*arg;
	const char	*help;
};

/*
 * Parse Go flag syntax (-name value, --name=value, booleans alone).
 * Returns 0, 1 after -h (usage printed, exit 0), or 2 after an error
 * (message and usage on stderr).
 */
int cli_flags(const char *cmd, const char *about, const struct cli_flag *f, int nf,
    int argc, char **argv);

/* --url and --token are required by both subcommands: 0, or 1 after the original's message. */
int cli_need_url_token(const char *url, const char *token);

/* ---- HTTP ------------------------------------------------------------------ */

struct cli_url {
	char	 host[256];
	char	 port[16];
	char	 prefix[1024];	/* path before /rpc or /import, no trailing '/' */
	char	 hostport[300];	/* for the Host header */
};

int cli_parse_url(const char *url, struct cli_url *u, char *err, size_t errlen);

/* Connected socket (blocking, with send/receive timeouts if timeout_s > 0), or -1. */
int cli_connect(const struct cli_url *u, int timeout_s, char *err, size_t errlen);

/* Write everything (handles EINTR/partial writes; non-blocking sockets poll). */
int cli_write_all(int fd, const void *buf, size_t len);

/* Incremental HTTP/1.1 response decoder. */
enum { HC_HEAD, HC_LENGTH, HC_CHUNK_SIZE, HC_CHUNK_DATA, HC_CHUNK_CRLF, HC_TRAILER,
    HC_UNTIL_CLOSE, HC_DONE };

struct cli_resp {
	int	 state;
	int	 status;
	int	 close;		/* server said Connection: close */
	long	 left;		/* HC_LENGTH / HC_CHUNK_DATA: bytes left */
	char	*raw;		/* undecoded input */
	size_t	 nraw, capraw;
	char	*body;		/* decoded body bytes not yet consumed */
	size_t	 nbody, capbody;
};

void cli_resp_init(struct cli_resp *r);
void cli_resp_free(struct cli_resp *r);
/* Feed bytes read from the socket (n = 0: EOF).  Returns 0, or -1 on a protocol error. */
int cli_resp_feed(struct cli_resp *r, const char *data, size_t n);
/* Drop the first n decoded body bytes. */
void cli_resp_consume(struct cli_resp *r, size_t n);

#endif
