/*
 * sse.h - GET /subscribe: Server-Sent Events pokes (api.md 9, decisions.md 7).
 *
 * A subscription follows one stream, one category (optionally one member
 * of a consumer group) or a whole namespace, and receives a "poke"
 * (stream, position, globalPosition) for each message written there.
 * Pokes are published after commit by the worker that handled the write
 * and reach every subscriber of the instance and of other instances on
 * the same database; sse.c explains how.
 */
#ifndef EVENTODB_SSE_H
#define EVENTODB_SSE_H

#include <stdint.h>

struct event_base;
struct http_req;

struct sse_options {
	int	 port;		/* the instance's port (names its worker mesh) */
	int	 keepalive;	/* seconds between keepalive comments, 0 = none */
	int	 max_per_ns;	/* subscriptions per namespace in this instance, 0 = no limit */
	int	 notify;	/* publish pokes to other instances (NOTIFY) */
};

/*
 * In the master, before the workers are forked: the memory the workers
 * of this instance share (mesh membership, subscription counts).
 * Returns 0, or -1 (then each worker works alone: pokes still cross
 * workers through PostgreSQL, and the per-namespace limit is per worker).
 */
int sse_shm_init(void);

/* In each worker, before it accepts connections. */
void sse_init(struct event_base *base, const struct sse_options *opt);

/* The /subscribe handler. */
void sse_handle(struct http_req *req);

/*
 * A message was committed: poke its subscribers everywhere.  Call only
 * after the commit, with the caller's namespace id.
 */
void sse_publish(const char *ns, const char *stream, int64_t pos, int64_t gpos);

/* Shutting down: end every subscription (chunked terminator), leave the mesh. */
void sse_drain(void);

/* The query parameters of api.md 9.1, checked (9.2); sse_params.c. */
struct sse_params {
	char		*stream, *category;	/* heap or NULL; accepted: non-empty UTF-8 without NUL */
	int		 all;
	int64_t		 position, member, size;
	const char	*bad;		/* the validation message, or NULL */
};

/*
 * Decode the query string of a /subscribe request (after '?', or NULL)
 * into *p, always (also when p->bad is set); free with sse_params_free().
 * A pure function: no request, no connection, no globals.
 */
void sse_params_parse(const char *query, struct sse_params *p);
void sse_params_free(struct sse_params *p);

#endif
