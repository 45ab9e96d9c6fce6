/*
 * cli_http.c - what the export and import subcommands share: Go-style
 * flags and a small blocking HTTP/1.1 client (plain http:// only; put a
 * TLS proxy in front for https).  Not used by the server itself.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli.h"

/* ---- flags ---------------------------------------------------------------- */

static void
usage(FILE *out, const char *cmd, const char *about, const struct cli_flag *f, int nf)
{
	fprintf(out, "Usage: eventodbd %s [options]\n\n%s\n\nOptions:\n", cmd, about);
	for (int i = 0; i < nf; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", f[i].name, f[i].arg ? " " : "",
		    f[i].arg ? f[i].arg : "");
		fprintf(out, "  %-22s %s\n", left, f[i].help);
	}
}

static int
parse_bool(const char *s, int *out)
{
	static const char *const t[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const fl[] = { "0", "f", "F", "FALSE", "false", "False" };

	for (size_t i = 0; i < 6; i++) {
		if (!strcmp(s, t[i])) {
			*out = 1;
			return 0;
		}
		if (!strcmp(s, fl[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

int
cli_need_url_token(const char *url, const char *token)
{
	if (!url[0]) {
		fprintf(stderr, "Error: --url is required\n");
		return 1;
	}
	if (!token[0]) {
		fprintf(stderr, "Error: --token is required\n");
		return 1;
	}
	return 0;
}

int
cli_flags(const char *cmd, const char *about, const struct cli_flag *f, int nf, int argc,
    char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val = NULL;
		const struct cli_flag *o = NULL;
		size_t nlen;

		if (a[0] != '-' || a[1] == '\0')
			break;	/* Go: the first non-flag ends the flags */
		name = a + 1 + (a[1] == '-');
		if (*name == '\0')
			break;	/* "--" */
		eq = strchr(name, '=');
		nlen = eq ? (size_t)(eq - name) : strlen(name);
		if ((nlen == 1 && name[0] == 'h') || (nlen == 4 && !strncmp(name, "help", 4))) {
			usage(stdout, cmd, about, f, nf);
			return 1;
		}
		for (int k = 0; k < nf; k++)
			if (strlen(f[k].name) == nlen && !strncmp(f[k].name, name, nlen))
				o = &f[k];
		if (!o) {
			fprintf(stderr, "flag provided but not defined: -%.*s\n", (int)nlen, name);
			usage(stderr, cmd, about, f, nf);
			return 2;
		}
		if (eq)
			val = eq + 1;
		else if (o->type == CLI_BOOL)
			val = "true";
		else if (i + 1 < argc)
			val = argv[++i];
		else {
			fprintf(stderr, "flag needs an argument: -%s\n", o->name);
			usage(stderr, cmd, about, f, nf);
			return 2;
		}
		if (o->type == CLI_BOOL) {
			if (parse_bool(val, (int *)o->val) < 0) {
				fprintf(stderr, "invalid boolean value \"%s\" for -%s: parse error\n", val,
				    o->name);
				usage(stderr, cmd, about, f, nf);
				return 2;
			}
		} else
			*(const char **)o->val = val;
	}
	return 0;
}

/* ---- connections ------------------------------------------------------------- */

int
cli_parse_url(const char *url, struct cli_url *u, char *err, size_t errlen)
{
	const char *p = url, *hs, *he, *slash;

	memset(u, 0, sizeof(*u));
	if (!strncasecmp(p, "https://", 8)) {
		snprintf(err, errlen, "https URLs are not supported: use http:// (or a local TLS proxy)");
		return -1;
	}
	if (!strncasecmp(p, "http://", 7))
		p += 7;
	else if (strstr(p, "://")) {
		snprintf(err, errlen, "unsupported URL scheme in \"%s\" (use http://)", url);
		return -1;
	}
	slash = strchr(p, '/');
	hs = p;
	he = slash ? slash : p + strlen(p);
	if (he == hs) {
		snprintf(err, errlen, "invalid URL \"%s\": no host", url);
		return -1;
	}
	if ((size_t)(he - hs) >= sizeof(u->hostport)) {
		snprintf(err, errlen, "invalid URL \"%s\": host too long", url);
		return -1;
	}
	memcpy(u->hostport, hs, (size_t)(he - hs));
	if (*hs == '[') {	/* [v6]:port */
		const char *rb = memchr(hs, ']', (size_t)(he - hs));
		if (!rb || (size_t)(rb - hs - 1) >= sizeof(u->host)) {
			snprintf(err, errlen, "invalid URL \"%s\"", url);
			return -1;
		}
		memcpy(u->host, hs + 1, (size_t)(rb - hs - 1));
		if (rb + 1 < he && rb[1] == ':')
			snprintf(u->port, sizeof(u->port), "%.*s", (int)(he - rb - 2), rb + 2);
	} else {
		const char *colon = memchr(hs, ':', (size_t)(he - hs));
		const char *hend = colon ? colon : he;
		if ((size_t)(hend - hs) >= sizeof(u->host)) {
			snprintf(err, errlen, "invalid URL \"%s\": host too long", url);
			return -1;
		}
		memcpy(u->host, hs, (size_t)(hend - hs));
		if (colon)
			snprintf(u->port, sizeof(u->port), "%.*s", (int)(he - colon - 1), colon + 1);
	}
	if (!u->port[0])
		snprintf(u->port, sizeof(u->port), "80");
	for (const char *c = u->port; *c; c++)
		if (!isdigit((unsigned char)*c)) {
			snprintf(err, errlen, "invalid port in URL \"%s\"", url);
			return -1;
		}
	if (slash) {
		snprintf(u->prefix, sizeof(u->prefix), "%s", slash);
		size_t n = strlen(u->prefix);
		while (n > 0 && u->prefix[n - 1] == '/')
			u->prefix[--n] = '\0';
	}
	return 0;
}

int
cli_connect(const struct cli_url *u, int timeout_s, char *err, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	int fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(u->host, u->port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "could not resolve \"%s\": %s", u->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		if (timeout_s > 0) {
			struct timeval tv = { timeout_s, 0 };
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		snprintf(err, errlen, "could not connect to %s:%s: %s", u->host, u->port,
		    strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

int
cli_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd pf = { fd, POLLOUT, 0 };
				if (poll(&pf, 1, 30000) <= 0)
					return -1;
				continue;
			}
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* ---- response decoder ------------------------------------------------------------ */

void
cli_resp_init(struct cli_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->state = HC_HEAD;
}

void
cli_resp_free(struct cli_resp *r)
{
	free(r->raw);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

static int
grow(char **buf, size_t *cap, size_t need)
{
	size_t c = *cap ? *cap : 65536;
	char *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	if (!(n = realloc(*buf, c)))
		return -1;
	*buf = n;
	*cap = c;
	return 0;
}

static int
body_add(struct cli_resp *r, const char *p, size_t n)
{
	if (grow(&r->body, &r->capbody, r->nbody + n) < 0)
		return -1;
	memcpy(r->body + r->nbody, p, n);
	r->nbody += n;
	return 0;
}

/* Parse the head at r->raw[0..len); returns -1 if malformed. */
static int
parse_head(struct cli_resp *r, size_t len)
{
	char *h = r->raw, *line, *eol;
	long cl = -1;
	int chunked = 0;

	h[len - 1] = '\0';
	if (sscanf(h, "HTTP/1.%*d %d", &r->status) != 1)
		return -1;
	for (line = strchr(h, '\n'); line && *++line; line = eol) {
		char *colon, *v;
		eol = strchr(line, '\n');
		if (eol)
			*eol = '\0';
		colon = strchr(line, ':');
		if (colon) {
			*colon = '\0';
			for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
				;
			v[strcspn(v, "\r")] = '\0';
			if (!strcasecmp(line, "content-length"))
				cl = strtol(v, NULL, 10);
			else if (!strcasecmp(line, "transfer-encoding") && strcasestr(v, "chunked"))
				chunked = 1;
			else if (!strcasecmp(line, "connection") && strcasestr(v, "close"))
				r->close = 1;
		}
		if (!eol)
			break;
	}
	if (r->status >= 100 && r->status < 200)
		r->state = HC_HEAD;	/* an interim response: the real one follows */
	else if (chunked)
		r->state = HC_CHUNK_SIZE;
	else if (cl >= 0) {
		r->left = cl;
		r->state = cl ? HC_LENGTH : HC_DONE;
	} else
		r->state = HC_UNTIL_CLOSE;
	return 0;
}

int
cli_resp_feed(struct cli_resp *r, const char *data, size_t n)
{
	size_t off = 0;

	if (n == 0) {	/* EOF */
		if (r->state == HC_UNTIL_CLOSE) {
			r->state = HC_DONE;
			return 0;
		}
		return r->state == HC_DONE ? 0 : -1;
	}
	if (grow(&r->raw, &r->capraw, r->nraw + n) < 0)
		return -1;
	memcpy(r->raw + r->nraw, data, n);
	r->nraw += n;

	while (off < r->nraw && r->state != HC_DONE) {
		char *p = r->raw + off;
		size_t avail = r->nraw - off;
		char *e;

		switch (r->state) {
		case HC_HEAD: {
			char *end = memmem(p, avail, "\r\n\r\n", 4);
			if (!end)
				goto out;
			memmove(r->raw, p, avail);	/* head at the start */
			r->nraw = avail;
			off = 0;
			end = memmem(r->raw, r->nraw, "\r\n\r\n", 4);
			if (parse_head(r, (size_t)(end - r->raw) + 4) < 0)
				return -1;
			off = (size_t)(end - r->raw) + 4;
			break;
		}
		case HC_LENGTH:
		case HC_CHUNK_DATA: {
			size_t k = avail < (size_t)r->left ? avail : (size_t)r->left;
			if (body_add(r, p, k) < 0)
				return -1;
			off += k;
			r->left -= (long)k;
			if (r->left == 0)
				r->state = r->state == HC_LENGTH ? HC_DONE : HC_CHUNK_CRLF;
			break;
		}
		case HC_UNTIL_CLOSE:
			if (body_add(r, p, avail) < 0)
				return -1;
			off += avail;
			break;
		case HC_CHUNK_SIZE:
		case HC_CHUNK_CRLF:
		case HC_TRAILER:
			e = memchr(p, '\n', avail);
			if (!e)
				goto out;
			if (r->state == HC_CHUNK_CRLF)
				r->state = HC_CHUNK_SIZE;
			else if (r->state == HC_TRAILER) {
				if (e == p || (e == p + 1 && *p == '\r'))
					r->state = HC_DONE;
			} else {
				char *end;
				r->left = strtol(p, &end, 16);
				if (end == p || r->left < 0)
					return -1;
				r->state = r->left ? HC_CHUNK_DATA : HC_TRAILER;
			}
			off += (size_t)(e - p) + 1;
			break;
		}
	}
out:
	if (off > 0) {
		memmove(r->raw, r->raw + off, r->nraw - off);
		r->nraw -= off;
	}
	return 0;
}

void
cli_resp_consume(struct cli_resp *r, size_t n)
{
	if (n >= r->nbody) {
		r->nbody = 0;
		return;
	}
	memmove(r->body, r->body + n, r->nbody - n);
	r->nbody -= n;
}
