/*
 * import_cmd.c - `eventodbd import` (api.md 11.4): stream an NDJSON file
 * (plain or gzip) as the chunked body of POST /import on a running
 * server, printing the server's progress events as they come.
 *
 * One poll loop sends the body and reads the response at the same time,
 * so progress shows while the upload runs and an error stops it at once.
 * Differences from the original, on purpose: the --force confirmation is
 * read from the terminal when there is one (so the data may come from
 * standard input), and a response that ends without "done" is an error
 * (exit 1), not a success.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zlib.h>

#include "cli.h"
#include "json.h"

#define CHUNK	(256 * 1024)

/* Ask before --force deletes a namespace; 1 if confirmed. */
static int
confirm(void)
{
	char line[64];
	FILE *in = fopen("/dev/tty", "r");
	int ok = 0;

	fprintf(stderr, "WARNING: --force deletes every message of the namespace before importing.\n"
	    "This action cannot be undone.\n"
	    "Are you sure you want to continue? [y/N]: ");
	fflush(stderr);
	if (fgets(line, sizeof(line), in ? in : stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		ok = !strcasecmp(line, "y") || !strcasecmp(line, "yes");
	}
	if (in)
		fclose(in);
	return ok;
}

/*
 * One "data: {...}" line.  Returns 1 when the import is over (done, or an
 * error: *rc set), else 0.
 */
static int
event(struct json_doc *d, const char *json, size_t len, int *rc)
{
	uint32_t e, n, g;

	if (json_parse(d, json, len) < 0 || json_type_of(d, 0) != JSON_OBJECT)
		return 0;
	if ((e = json_get(d, 0, "error")) != 0) {
		uint32_t m = json_get(d, 0, "message"), l = json_get(d, 0, "line");
		fprintf(stderr, "\nError: %s: %s", json_type_of(d, e) == JSON_STRING ?
		    json_str(d, e, NULL) : "?", m && json_type_of(d, m) == JSON_STRING ?
		    json_str(d, m, NULL) : "");
		if (l && json_type_of(d, l) == JSON_NUMBER)
			fprintf(stderr, " (line %lld)", (long long)json_int(d, l));
		fputc('\n', stderr);
		*rc = 1;
		return 1;
	}
	n = json_get(d, 0, "imported");
	if (json_get(d, 0, "done")) {
		uint32_t el = json_get(d, 0, "elapsed");
		fprintf(stderr, "\rImported: %lld events in %s\n", n ? (long long)json_int(d, n) : 0LL,
		    el && json_type_of(d, el) == JSON_STRING ? json_str(d, el, NULL) : "?");
		*rc = 0;
		return 1;
	}
	g = json_get(d, 0, "gpos");
	if (n)
		fprintf(stderr, "\rImported: %lld events (gpos: %lld)...", (long long)json_int(d, n),
		    g ? (long long)json_int(d, g) : 0LL);
	return 0;
}

int
cli_import(int argc, char **argv)
{
	const char *url = "", *token = "", *input = "";
	int gz = 0, force = 0, rc, fd, in_fd, in_eof = 0, finished = 0, result = 1;
	const struct cli_flag flags[] = {
		{ "force", CLI_BOOL, &force, NULL, "delete every message of the namespace first (asks)" },
		{ "gzip", CLI_BOOL, &gz, NULL, "the input is gzip-compressed" },
		{ "input", CLI_STR, &input, "FILE", "NDJSON input file (default: standard input)" },
		{ "token", CLI_STR, &token, "TOKEN", "token of the namespace to import into (required)" },
		{ "url", CLI_STR, &url, "URL", "server URL, e.g. http://localhost:8080 (required)" },
	};
	struct cli_url u;
	struct cli_resp resp;
	struct json_doc doc;
	char err[1024], head[2048];
	char *out = NULL, *inbuf = NULL;
	size_t nout = 0, offout = 0;
	gzFile gzin = NULL;

	rc = cli_flags("import", "Import NDJSON messages (as written by export) into a running server.",
	    flags, sizeof(flags) / sizeof(flags[0]), argc, argv);
	if (rc)
		return rc == 1 ? 0 : 2;
	if (cli_need_url_token(url, token))
		return 1;
	if (cli_parse_url(url, &u, err, sizeof(err)) < 0) {
		fprintf(stderr, "Error: %s\n", err);
		return 1;
	}
	in_fd = input[0] ? open(input, O_RDONLY | O_CLOEXEC) : dup(0);
	if (in_fd < 0) {
		fprintf(stderr, "Error: could not open \"%s\": %s\n", input, strerror(errno));
		return 1;
	}
	if (gz && !(gzin = gzdopen(in_fd, "rb"))) {
		fprintf(stderr, "Error: could not read the gzip input\n");
		return 1;
	}
	if (force && !confirm()) {
		fprintf(stderr, "Import cancelled.\n");
		return 0;
	}
	fd = cli_connect(&u, 0, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "Error: %s\n", err);
		return 1;
	}
	snprintf(head, sizeof(head),
	    "POST %s/import%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: eventodbd-import/" PACKAGE_VERSION
	    "\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-ndjson\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", u.prefix, force ? "?force=true" : "", u.hostport, token);
	if (cli_write_all(fd, head, strlen(head)) < 0) {
		fprintf(stderr, "Error: sending the request: %s\n", strerror(errno));
		return 1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	out = malloc(CHUNK + 32);
	inbuf = malloc(CHUNK);
	if (!out || !inbuf) {
		fprintf(stderr, "Error: out of memory\n");
		return 1;
	}
	cli_resp_init(&resp);
	json_doc_init(&doc);

	while (!finished) {
		struct pollfd pf = { fd, POLLIN, 0 };

		/* Next piece of the body, as one chunk. */
		if (offout == nout && !in_eof) {
			ssize_t n = gzin ? gzread(gzin, inbuf, CHUNK) : read(in_fd, inbuf, CHUNK);
			if (n < 0 && !gzin && errno == EINTR)
				continue;
			if (n < 0) {
				int e;
				fprintf(stderr, "\nError: reading the input: %s\n",
				    gzin ? gzerror(gzin, &e) : strerror(errno));
				break;
			}
			offout = 0;
			if (n == 0) {
				memcpy(out, "0\r\n\r\n", 5);
				nout = 5;
				in_eof = 1;
			} else {
				int h = snprintf(out, 16, "%zx\r\n", (size_t)n);
				memcpy(out + h, inbuf, (size_t)n);
				memcpy(out + h + n, "\r\n", 2);
				nout = (size_t)h + (size_t)n + 2;
			}
		}
		if (offout < nout)
			pf.events |= POLLOUT;
		if (poll(&pf, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf.revents & POLLOUT) {
			ssize_t w = send(fd, out + offout, nout - offout, MSG_NOSIGNAL);
			if (w > 0)
				offout += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				/* The server stopped reading (e.g. after an error): read what it said. */
				offout = nout;
				in_eof = 1;
			}
		}
		if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[65536];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (cli_resp_feed(&resp, buf, n > 0 ? (size_t)n : 0) < 0 || n <= 0) {
				if (resp.status == 200 || resp.status == 0)
					fprintf(stderr, "\nError: the server closed the connection before the "
					    "import finished\n");
				else
					fprintf(stderr, "Error: server error (HTTP %d): %.*s\n", resp.status,
					    (int)resp.nbody, resp.body);
				break;
			}
			if (resp.status && resp.status != 200) {
				if (resp.state == HC_DONE) {
					fprintf(stderr, "Error: server error (HTTP %d): %.*s\n", resp.status,
					    (int)(resp.nbody && resp.body[resp.nbody - 1] == '\n' ?
					    resp.nbody - 1 : resp.nbody), resp.body);
					break;
				}
				continue;
			}
			/* Events, line by line. */
			for (;;) {
				char *nl = resp.nbody ? memchr(resp.body, '\n', resp.nbody) : NULL;
				size_t len;
				if (!nl)
					break;
				len = (size_t)(nl - resp.body);
				if (len > 6 && !strncmp(resp.body, "data: ", 6) &&
				    event(&doc, resp.body + 6, len - 6, &result)) {
					finished = 1;
					break;
				}
				cli_resp_consume(&resp, len + 1);
			}
			if (!finished && resp.state == HC_DONE) {
				fprintf(stderr, "\nError: the server ended the response before the import "
				    "finished\n");
				break;
			}
		}
	}
	close(fd);
	if (gzin)
		gzclose(gzin);
	else
		close(in_fd);
	free(out);
	free(inbuf);
	cli_resp_free(&resp);
	json_doc_free(&doc);
	return finished ? result : 1;
}
