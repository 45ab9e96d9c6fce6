/*
 * evconn.c - the socket side of the client tools' connections, shared by
 * evload and evcheck; see evconn.h.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "evconn.h"

#define READ_ROOM	4096	/* grow or compact rbuf below this much room */

int
evc_parse_url(const char *u, struct evc_url *out, char *err, size_t errlen)
{
	const char *h, *hend, *pstart;
	size_t hl;

	if (strncmp(u, "http://", 7) != 0) {
		if (strncmp(u, "https://", 8) == 0)
			snprintf(err, errlen, "https is not supported: \"%s\"", u);
		else
			snprintf(err, errlen, "invalid URL \"%s\" (expected http://host[:port])", u);
		return -1;
	}
	h = u + 7;
	pstart = h + strcspn(h, "/?#");
	if (*pstart == '?' || *pstart == '#') {
		snprintf(err, errlen, "invalid URL \"%s\": no query or fragment allowed", u);
		return -1;
	}
	if (*h == '[') {
		hend = memchr(h, ']', (size_t)(pstart - h));
		hl = hend ? (size_t)(hend - h - 1) : 0;
		if (hl == 0 || hl >= sizeof(out->host)) {
			snprintf(err, errlen, "invalid URL \"%s\"", u);
			return -1;
		}
		memcpy(out->host, h + 1, hl);
		out->host[hl] = '\0';
		hend++;
	} else {
		hend = memchr(h, ':', (size_t)(pstart - h));
		if (hend == NULL)
			hend = pstart;
		hl = (size_t)(hend - h);
		if (hl == 0 || hl >= sizeof(out->host)) {
			snprintf(err, errlen, "invalid URL \"%s\": no host", u);
			return -1;
		}
		memcpy(out->host, h, hl);
		out->host[hl] = '\0';
	}
	if (hend < pstart) {
		size_t pl = (size_t)(pstart - hend - 1);
		char *end;
		long port = 0;

		if (*hend == ':' && pl > 0 && pl < sizeof(out->port)) {
			memcpy(out->port, hend + 1, pl);
			out->port[pl] = '\0';
			port = strtol(out->port, &end, 10);
			if (*end)
				port = 0;
		}
		if (port < 1 || port > 65535) {
			snprintf(err, errlen, "invalid port in URL \"%s\"", u);
			return -1;
		}
	} else {
		strcpy(out->port, "80");
	}
	if ((size_t)(pstart - h) >= sizeof(out->authority) || strlen(pstart) >= sizeof(out->path)) {
		snprintf(err, errlen, "URL too long: \"%s\"", u);
		return -1;
	}
	memcpy(out->authority, h, (size_t)(pstart - h));
	out->authority[pstart - h] = '\0';
	strcpy(out->path, pstart);
	hl = strlen(out->path);
	while (hl > 0 && out->path[hl - 1] == '/')
		out->path[--hl] = '\0';
	return 0;
}

int
evc_post_head(char *buf, size_t len, const char *ua, const struct evc_url *u, const char *token)
{
	int auth = token && *token;

	return snprintf(buf, len, "POST %s/rpc HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
	    "%s%s%sContent-Type: application/json\r\nContent-Length: ", u->path, u->authority, ua,
	    auth ? "Authorization: Bearer " : "", auth ? token : "", auth ? "\r\n" : "");
}

int
evc_resolve(const char *host, const char *port, struct sockaddr_storage *addr,
    socklen_t *addrlen, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, errlen, "could not resolve \"%s\": %s", host,
		    rc ? gai_strerror(rc) : "no address");
		return -1;
	}
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	*addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
evc_open(struct evconn *c, struct event_base *base, const struct sockaddr_storage *addr,
    socklen_t addrlen, event_callback_fn rcb, event_callback_fn wcb, void *arg, uint64_t now)
{
	int one = 1;

	c->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->rev = event_new(base, c->fd, EV_READ | EV_PERSIST, rcb, arg);
	c->wev = event_new(base, c->fd, EV_WRITE, wcb, arg);
	if (c->rev == NULL || c->wev == NULL)
		return -2;
	c->t_connect = now;
	if (connect(c->fd, (const struct sockaddr *)addr, addrlen) == 0)
		return 1;
	if (errno != EINPROGRESS)
		return -1;
	c->state = EVC_CONNECTING;
	event_add(c->wev, NULL);
	return 0;
}

int
evc_connected(struct evconn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0)
		return -1;
	return 0;
}

void
evc_close(struct evconn *c)
{
	if (c->rev) {
		event_free(c->rev);
		c->rev = NULL;
	}
	if (c->wev) {
		event_free(c->wev);
		c->wev = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->state = EVC_DOWN;
	c->woff = c->wlen = 0;
	c->rpos = c->rlen = 0;
	memset(&c->p, 0, sizeof(c->p));
}

int
evc_flush(struct evconn *c)
{
	ssize_t n;

	while (c->woff < c->wlen) {
		n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(c->wev, NULL);
			return 1;
		}
		return -1;
	}
	c->woff = c->wlen = 0;
	return 0;
}

int
evc_read(struct evconn *c)
{
	ssize_t n;
	size_t room;

	for (;;) {
		if (c->rcap - c->rlen < READ_ROOM && c->rpos > 0) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		if (c->rcap - c->rlen < READ_ROOM) {
			char *nb;

			if (c->rcap * 2 > HRESP_BODY_MAX)
				return EVC_TOOBIG;
			nb = realloc(c->rbuf, c->rcap * 2);
			if (nb == NULL)
				return EVC_NOMEM;
			c->rbuf = nb;
			c->rcap *= 2;
		}
		room = c->rcap - c->rlen;
		n = read(c->fd, c->rbuf + c->rlen, room);
		if (n > 0) {
			c->rlen += (size_t)n;
			if ((size_t)n < room)
				return 0;	/* drained: a full buffer may have more */
			continue;
		}
		if (n == 0)
			return EVC_EOF;
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : EVC_ERR;
	}
}

int
evc_responses(struct evconn *c, int eof, uint64_t now, evc_response_fn cb, void *arg)
{
	long len;

	while (c->rpos < c->rlen) {
		len = hresp_parse(&c->p, c->rbuf + c->rpos, c->rlen - c->rpos, eof);
		if (len < 0)
			return EVC_MALFORMED;
		if (len == 0)
			break;
		if (c->p.status >= 200 && cb(arg, c->rbuf + c->rpos, (size_t)len, now) < 0)
			return -1;
		c->rpos += (size_t)len;
		memset(&c->p, 0, sizeof(c->p));
	}
	if (c->rpos == c->rlen)
		c->rpos = c->rlen = 0;
	return 0;
}

int
evc_backoff(int *ms, int min_ms, int max_ms)
{
	*ms = *ms ? *ms * 2 : min_ms;
	if (*ms > max_ms)
		*ms = max_ms;
	return *ms;
}

void
evc_timer_ms(struct event *ev, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}
