/*
 * evconn.h - the client side shared by the tools evload and evcheck:
 * the base URL, the RPC request head, and the socket side of their
 * keep-alive HTTP/1.1 connections on a libevent loop (resolve, a
 * non-blocking connect, flushing the output buffer, reading into a
 * growing input buffer, handing out the complete responses, close, the
 * reconnect back-off).
 *
 * A tool embeds a struct evconn in its own connection and keeps its
 * policy: what a failure means, when to reconnect, what an answer does.
 * Nothing here allocates except when the input buffer must grow.
 * Prefix: evc_.
 */
#ifndef EVCONN_H
#define EVCONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "httpresp.h"

/* The server's address from a base URL http://host[:port][/path]. */
struct evc_url {
	char		 host[256];	/* for getaddrinfo */
	char		 port[16];
	char		 authority[300];	/* Host header */
	char		 path[512];	/* base path without trailing slash */
};

/* Parse url into *out; -1 with a message (naming the URL) in err. */
int	evc_parse_url(const char *url, struct evc_url *out, char *err, size_t errlen);

/*
 * The head of a POST to <path>/rpc up to "Content-Length: " (the caller
 * appends the length, CRLF CRLF and the body), with User-Agent ua and,
 * when token is set, its Authorization header.  Returns what snprintf
 * returns: the length it needs.
 */
int	evc_post_head(char *buf, size_t len, const char *ua, const struct evc_url *u,
	    const char *token);

enum evc_state { EVC_DOWN, EVC_CONNECTING, EVC_UP };

struct evconn {
	int		 fd;
	enum evc_state	 state;
	struct event	*rev;		/* persistent read */
	struct event	*wev;		/* one-shot write (connect, full send buffer) */
	uint64_t	 t_connect;
	char		*wbuf;		/* owned by the tool */
	size_t		 woff, wlen;
	char		*rbuf;		/* malloc'd, grown by evc_read */
	size_t		 rpos, rlen, rcap;
	struct hresp	 p;		/* the response at rpos */
};

/* Resolve host:port into *addr; -1 with a message in err. */
int	evc_resolve(const char *host, const char *port, struct sockaddr_storage *addr,
	    socklen_t *addrlen, char *err, size_t errlen);

/*
 * Open a non-blocking TCP_NODELAY socket to addr with rcb (persistent,
 * not yet added) and wcb (armed while connecting) called with arg.
 * Returns 1 when connected at once, 0 when the connect is in progress
 * (state EVC_CONNECTING), -1 when it failed (errno; fd < 0 when no socket
 * could be made; close with evc_close), -2 when events could not be made.
 */
int	evc_open(struct evconn *c, struct event_base *base, const struct sockaddr_storage *addr,
	    socklen_t addrlen, event_callback_fn rcb, event_callback_fn wcb, void *arg,
	    uint64_t now);

/* In the write callback of a connecting socket: 0 connected, -1 failed. */
int	evc_connected(struct evconn *c);

/* Free the events, close the socket, forget the buffers' contents. */
void	evc_close(struct evconn *c);

/* Send wbuf[woff..wlen): 0 all sent, 1 the rest waits for wev, -1 failed. */
int	evc_flush(struct evconn *c);

/* evc_read's result bits. */
#define EVC_EOF		1	/* the peer closed */
#define EVC_ERR		2	/* a read error */
#define EVC_TOOBIG	4	/* a response larger than HRESP_BODY_MAX; nothing read */
#define EVC_NOMEM	8	/* the input buffer could not grow; nothing read */

/* Read what the socket has into rbuf; returns EVC_* bits (0: all is well). */
int	evc_read(struct evconn *c);

/*
 * Called for each complete final (status >= 200) response at b, len
 * bytes, c->p describing it; returns 0 to go on, -1 to stop (c dropped).
 */
typedef int (*evc_response_fn)(void *arg, const char *b, size_t len, uint64_t now);

#define EVC_MALFORMED	(-2)

/*
 * Hand each complete response in rbuf to cb (interim 1xx ones are
 * skipped).  Returns 0; -1 when cb stopped; EVC_MALFORMED when the
 * response at rbuf + rpos cannot be parsed (the caller drops c).
 */
int	evc_responses(struct evconn *c, int eof, uint64_t now, evc_response_fn cb, void *arg);

/* The next back-off delay: *ms doubles from min_ms up to max_ms. */
int	evc_backoff(int *ms, int min_ms, int max_ms);

/* Add the timer ev to fire in ms milliseconds. */
void	evc_timer_ms(struct event *ev, int ms);

#endif
