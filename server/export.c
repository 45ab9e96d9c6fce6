/*
 * export.c - `eventodbd export` (api.md 11.3): every message of a
 * namespace (or of some categories) as NDJSON, read from a running server
 * through category.get, 1000 messages a request, over one keep-alive
 * connection.
 *
 * One line per message, keys in the original's order
 *   {"id":..,"stream":..,"type":..,"pos":..,"gpos":..,"data":..,"meta":..,"time":..}
 * with one difference: `time` keeps the server's full precision
 * (microseconds) instead of whole seconds, so export then import gives
 * back exactly the same messages (decisions.md 8).  data and meta are
 * written compact; meta is null when a message has none.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <zlib.h>

#include "cli.h"
#include "json.h"

#define PAGE		1000
#define TIMEOUT_S	30

struct exp {
	struct cli_url	 url;
	const char	*token;
	int		 fd;
	gzFile		 out;
	struct json_doc	 doc;
	struct cli_resp	 resp;
	long long	 n;
	int		 progress;	/* a progress line is on stderr */
	int		 has_since, has_until;
	int64_t		 since, until;	/* microseconds since the epoch, UTC */
	char		*line;
	size_t		 linecap;
};

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/*
 * RFC 3339 (any offset, optional fraction) or YYYY-MM-DD (UTC midnight)
 * to microseconds since the epoch.  -1 if malformed.
 */
static int
parse_when(const char *s, int date_ok, int64_t *us)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
	int64_t frac = 0, off = 0;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
		return -1;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	p = s + 10;
	if (*p == '\0') {
		if (!date_ok)
			return -1;
	} else {
		if ((*p != 'T' && *p != 't') || sscanf(p + 1, "%2d:%2d:%2d%n", &h, &mi, &sec, &n) != 3 ||
		    n != 8 || h > 23 || mi > 59 || sec > 60)
			return -1;
		p += 9;
		if (*p == '.') {
			int digits = 0;
			for (p++; *p >= '0' && *p <= '9'; p++, digits++)
				if (digits < 6)
					frac = frac * 10 + (*p - '0');
			if (digits == 0)
				return -1;
			for (; digits < 6; digits++)
				frac *= 10;
		}
		if (*p == 'Z' || *p == 'z')
			p++;
		else if (*p == '+' || *p == '-') {
			int oh, om;
			if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5)
				return -1;
			off = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
			p += 6;
		} else
			return -1;
		if (*p)
			return -1;
	}
	*us = ((days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec -
	    off) * 1000000) + frac;
	return 0;
}

/* Append raw JSON without insignificant whitespace. */
static void
put_compact(struct evbuffer *b, const char *raw, size_t len)
{
	size_t i = 0, start = 0;
	int in_str = 0;

	for (; i < len; i++) {
		char c = raw[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"')
			in_str = 1;
		else if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
			evbuffer_add(b, raw + start, i - start);
			start = i + 1;
		}
	}
	evbuffer_add(b, raw + start, len - start);
}

static int
reconnect(struct exp *x, char *err, size_t errlen)
{
	if (x->fd >= 0)
		close(x->fd);
	x->fd = cli_connect(&x->url, TIMEOUT_S, err, errlen);
	return x->fd < 0 ? -1 : 0;
}

/* POST /rpc; the whole response in x->resp.  -1 with err on failure. */
static int
rpc(struct exp *x, const char *body, char *err, size_t errlen)
{
	char head[2048];
	char buf[65536];

	for (int attempt = 0; attempt < 2; attempt++) {
		int sent;

		if (x->fd < 0 && reconnect(x, err, errlen) < 0)
			return -1;
		snprintf(head, sizeof(head),
		    "POST %s/rpc HTTP/1.1\r\nHost: %s\r\nUser-Agent: eventodbd-export/" PACKAGE_VERSION
		    "\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n", x->url.prefix, x->url.hostport, x->token, strlen(body));
		sent = cli_write_all(x->fd, head, strlen(head)) == 0 &&
		    cli_write_all(x->fd, body, strlen(body)) == 0;
		cli_resp_free(&x->resp);
		cli_resp_init(&x->resp);
		while (sent && x->resp.state != HC_DONE) {
			ssize_t n = recv(x->fd, buf, sizeof(buf), 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				snprintf(err, errlen, "reading the response: %s",
				    errno == EAGAIN ? "timeout" : strerror(errno));
				return -1;
			}
			if (cli_resp_feed(&x->resp, buf, (size_t)n) < 0)
				break;	/* closed early: a stale keep-alive connection? */
			if (n == 0)
				break;
		}
		if (x->resp.state == HC_DONE) {
			if (x->resp.close) {
				close(x->fd);
				x->fd = -1;
			}
			return 0;
		}
		/* Retry once on a fresh connection, but only if nothing came back. */
		close(x->fd);
		x->fd = -1;
		if (x->resp.status != 0)
			break;
	}
	snprintf(err, errlen, "connection to %s:%s closed unexpectedly", x->url.host, x->url.port);
	return -1;
}

/* One message row [id, stream, type, pos, gpos, data, meta, time] as a line. */
static int
write_row(struct exp *x, struct evbuffer *b, uint32_t row)
{
	static const char *const keys[] = { "id", "stream", "type", "pos", "gpos", "data", "meta",
		"time" };
	struct json_doc *d = &x->doc;
	uint32_t v[8];
	size_t len;
	const char *raw;

	for (int i = 0; i < 8; i++)
		if (!(v[i] = json_at(d, row, (uint32_t)i)))
			return -1;
	if (x->has_since || x->has_until) {
		int64_t t;
		if (json_type_of(d, v[7]) != JSON_STRING || parse_when(json_str(d, v[7], NULL), 0, &t) < 0)
			return -1;
		if ((x->has_since && t < x->since) || (x->has_until && t >= x->until))
			return 0;
	}
	evbuffer_add(b, "{", 1);
	for (int i = 0; i < 8; i++) {
		evbuffer_add_printf(b, "%s\"%s\":", i ? "," : "", keys[i]);
		raw = json_raw(d, v[i], &len);
		put_compact(b, raw, len);
	}
	evbuffer_add(b, "}\n", 2);
	x->n++;
	return 0;
}

static int
export_category(struct exp *x, const char *cat, char *err, size_t errlen)
{
	struct evbuffer *req = evbuffer_new(), *out = evbuffer_new();
	long long pos = 0;
	int rc = -1;

	if (!req || !out) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	for (;;) {
		uint32_t n, last = 0;

		evbuffer_add(req, "[\"category.get\",", 16);
		json_write_cstr(req, cat);
		evbuffer_add_printf(req, ",{\"position\":%lld,\"batchSize\":%d}]", pos, PAGE);
		evbuffer_add(req, "", 1);
		if (rpc(x, (const char *)evbuffer_pullup(req, -1), err, errlen) < 0)
			goto done;
		evbuffer_drain(req, evbuffer_get_length(req));
		if (x->resp.status != 200) {
			snprintf(err, errlen, "HTTP %d: %.*s", x->resp.status,
			    (int)(x->resp.nbody > 2000 ? 2000 : x->resp.nbody), x->resp.body);
			goto done;
		}
		if (json_parse(&x->doc, x->resp.body, x->resp.nbody) < 0 ||
		    json_type_of(&x->doc, 0) != JSON_ARRAY) {
			snprintf(err, errlen, "unexpected response from the server: %s", x->doc.err);
			goto done;
		}
		n = x->doc.nodes[0].count;
		if (n == 0)
			break;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t row = json_at(&x->doc, 0, i);
			if (write_row(x, out, row) < 0) {
				snprintf(err, errlen, "unexpected message in the response");
				goto done;
			}
			last = row;
		}
		pos = json_int(&x->doc, json_at(&x->doc, last, 4)) + 1;
		while (evbuffer_get_length(out) > 0) {
			size_t len = evbuffer_get_length(out);
			int w = gzwrite(x->out, evbuffer_pullup(out, -1), (unsigned)len);
			if (w <= 0) {
				int e;
				snprintf(err, errlen, "writing the output: %s", gzerror(x->out, &e));
				goto done;
			}
			evbuffer_drain(out, (size_t)w);
		}
		fprintf(stderr, "\rExported: %lld events...", x->n);
		x->progress = 1;
	}
	rc = 0;
done:
	if (req)
		evbuffer_free(req);
	if (out)
		evbuffer_free(out);
	return rc;
}

int
cli_export(int argc, char **argv)
{
	const char *url = "", *token = "", *cats = "", *since = "", *until = "", *output = "";
	int gz = 0, rc;
	const struct cli_flag flags[] = {
		{ "categories", CLI_STR, &cats, "LIST", "comma-separated categories (default: all)" },
		{ "gzip", CLI_BOOL, &gz, NULL, "compress the output with gzip" },
		{ "output", CLI_STR, &output, "FILE", "output file (default: standard output)" },
		{ "since", CLI_STR, &since, "TIME", "from this time, inclusive (YYYY-MM-DD or RFC 3339)" },
		{ "token", CLI_STR, &token, "TOKEN", "token of the namespace to export (required)" },
		{ "until", CLI_STR, &until, "TIME", "before this time (YYYY-MM-DD or RFC 3339)" },
		{ "url", CLI_STR, &url, "URL", "server URL, e.g. http://localhost:8080 (required)" },
	};
	struct exp x;
	char err[2048];
	int fd;

	rc = cli_flags("export", "Export a namespace's messages from a running server as NDJSON.",
	    flags, sizeof(flags) / sizeof(flags[0]), argc, argv);
	if (rc)
		return rc == 1 ? 0 : 2;
	if (cli_need_url_token(url, token))
		return 1;
	memset(&x, 0, sizeof(x));
	x.fd = -1;
	x.token = token;
	if (since[0]) {
		if (parse_when(since, 1, &x.since) < 0) {
			fprintf(stderr, "Error: invalid --since: expected YYYY-MM-DD or RFC3339 format\n");
			return 1;
		}
		x.has_since = 1;
	}
	if (until[0]) {
		if (parse_when(until, 1, &x.until) < 0) {
			fprintf(stderr, "Error: invalid --until: expected YYYY-MM-DD or RFC3339 format\n");
			return 1;
		}
		x.has_until = 1;
	}
	if (cli_parse_url(url, &x.url, err, sizeof(err)) < 0) {
		fprintf(stderr, "Error: %s\n", err);
		return 1;
	}
	fd = output[0] ? open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : dup(1);
	if (fd < 0) {
		fprintf(stderr, "Error: could not open \"%s\": %s\n", output, strerror(errno));
		return 1;
	}
	x.out = gzdopen(fd, gz ? "wb" : "wT");
	if (!x.out) {
		fprintf(stderr, "Error: could not set up the output\n");
		return 1;
	}
	json_doc_init(&x.doc);
	cli_resp_init(&x.resp);

	rc = 0;
	if (!cats[0]) {
		rc = export_category(&x, "", err, sizeof(err));
	} else {
		char *list = strdup(cats), *save = NULL;
		for (char *c = strtok_r(list, ",", &save); c && rc == 0; c = strtok_r(NULL, ",", &save)) {
			while (*c == ' ' || *c == '\t')
				c++;
			size_t l = strlen(c);
			while (l > 0 && (c[l - 1] == ' ' || c[l - 1] == '\t'))
				c[--l] = '\0';
			if (l > 0)
				rc = export_category(&x, c, err, sizeof(err));
		}
		free(list);
	}
	if (gzclose(x.out) != Z_OK && rc == 0) {
		snprintf(err, sizeof(err), "writing the output failed");
		rc = -1;
	}
	if (x.fd >= 0)
		close(x.fd);
	json_doc_free(&x.doc);
	cli_resp_free(&x.resp);
	if (rc < 0) {
		fprintf(stderr, "%sError: %s\n", x.progress ? "\n" : "", err);
		return 1;
	}
	fprintf(stderr, "\rExported: %lld events total\n", x.n);
	return 0;
}
