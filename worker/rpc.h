/*
 * rpc.h - POST /rpc: authentication, the JSON-array envelope, and the
 * method handlers (rpc_stream.c: stream.* and category.get; rpc_ns.c:
 * ns.* and sys.*).
 *
 * A connection's RPC state (struct rpc_ctx) is allocated on its first
 * request and reused: the JSON document, the output buffer and the query
 * keep their memory, so a warm keep-alive connection serves a request
 * without malloc on our side.
 */
#ifndef EVENTODB_RPC_H
#define EVENTODB_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <sys/queue.h>

#include "db.h"
#include "http.h"
#include "json.h"

struct ns_entry;

struct rpc_options {
	int		 test_mode;
	const char	*version;
};

struct rpc_ctx {
	unsigned	 magic;
	struct http_req	*req;
	struct json_doc	 doc;
	struct evbuffer	*out;
	struct db_query	 q;
	struct db_stmt	 st[4];
	struct db_stmt	*heap_st;	/* ns.create: many statements */
	char		**heap_sql;
	int		 nheap_sql;
	const char	*pv[8];		/* parameter values */
	int		 plen[8];	/* their lengths, where pfmt says binary */
	int		 pfmt[8];	/* 1: pv[k] is plen[k] bytes, not NUL-terminated */
	char		 nbuf[8][24];	/* their text when numeric */
	struct ns_entry	*ns;		/* caller's namespace, or NULL */
	struct ns_entry	*target;	/* ns.info / ns.delete target */
	char		 ns_id[256];	/* caller's namespace id */
	char		 target_id[256];
	int		 admin;		/* holds the default namespace's token */
	int		 own;		/* target is the caller's namespace */
	int		 phase;
	uint32_t	 args;		/* node of args[0] (the method name) */
	uint32_t	 nargs;		/* arguments after the method name */
	const struct rpc_method *m;
	char		 token_hash[65];
	char		 msgid[37];
	int		 msgid_given;
	int64_t		 expected;
	int		 has_expected;
	char		 token_out[256];
	void		(*cont)(struct rpc_ctx *c);
	TAILQ_ENTRY(rpc_ctx) wq;	/* write batch queue */
	uint64_t	 wq_since;	/* when it joined the queue (ns) */
	uint64_t	 wcat;		/* hash of the write's category (its lock) */
	void		*wlane;		/* the write lane carrying it, or NULL */
};

typedef void (*rpc_fn)(struct rpc_ctx *c);

struct rpc_method {
	const char	*name;
	rpc_fn		 fn;
};

/*
 * Authentication as /rpc for the other endpoints (/subscribe, /import),
 * without an RPC context.  done(a) runs once, maybe before rpc_auth
 * returns: a->status 0 means authenticated, with a->ns a reference to the
 * caller's namespace (NULL in test mode when it does not exist; release
 * it with nscache_unref); otherwise rpc_auth_respond sends the error.
 */
struct rpc_auth {
	struct ns_entry	*ns;
	char		 ns_id[256];
	int		 status;
	const char	*code;
	char		 message[320];
	char		 details[600];
	void		*arg;
	/* private */
	char		 token_hash[65];
	void		(*done)(struct rpc_auth *a);
	struct db_query	 q;
	struct db_stmt	 st;
	const char	*pv[1];
};

void rpc_auth(struct http_req *req, struct rpc_auth *a, void (*done)(struct rpc_auth *a),
    void *arg);
void rpc_auth_respond(struct http_req *req, const struct rpc_auth *a);

void rpc_init(const struct rpc_options *opt);
void rpc_handle(struct http_req *req);
void rpc_health(struct http_req *req);

/* Helpers for the handlers. */
extern const struct rpc_options *rpc_opt;
uint32_t rpc_arg(struct rpc_ctx *c, uint32_t i);	/* 0 = absent */
void rpc_error(struct rpc_ctx *c, int status, const char *code, const char *msg);
void rpc_errorf(struct rpc_ctx *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rpc_error_details(struct rpc_ctx *c, int status, const char *code, const char *msg,
    const char *details_json);
void rpc_invalid(struct rpc_ctx *c, const char *msg);
void rpc_reply(struct rpc_ctx *c);	/* 200 with c->out (a "\n" is appended) */
void rpc_submit(struct rpc_ctx *c, int nstmts, void (*cb)(struct db_query *));
const char *rpc_num(struct rpc_ctx *c, int slot, int64_t v);
void rpc_write_time(struct evbuffer *out, const char *pgtime);
void rpc_write_now(struct evbuffer *out);
void rpc_write_unix(struct evbuffer *out, int64_t secs);
void rpc_finish(struct rpc_ctx *c);
void rpc_lookup_target(struct rpc_ctx *c, const char *id, void (*cont)(struct rpc_ctx *c));

/* The write path, shared with the group commit in wbatch.c. */
void rpc_write_single(struct rpc_ctx *c, void (*cb)(struct db_query *));
void rpc_write_done(struct db_query *q);
void rpc_write_ok(struct rpc_ctx *c, const char *pos, const char *gpos);
void rpc_write_conflict(struct rpc_ctx *c, long long actual);
void rpc_write_dup(struct rpc_ctx *c);
void rpc_write_failed(struct rpc_ctx *c, struct db_query *q);

/* Method tables. */
void rpc_stream_write(struct rpc_ctx *c);
void rpc_stream_get(struct rpc_ctx *c);
void rpc_stream_last(struct rpc_ctx *c);
void rpc_stream_version(struct rpc_ctx *c);
void rpc_category_get(struct rpc_ctx *c);
void rpc_ns_create(struct rpc_ctx *c);
void rpc_ns_delete(struct rpc_ctx *c);
void rpc_ns_list(struct rpc_ctx *c);
void rpc_ns_info(struct rpc_ctx *c);
void rpc_ns_streams(struct rpc_ctx *c);
void rpc_ns_categories(struct rpc_ctx *c);
void rpc_sys_version(struct rpc_ctx *c);
void rpc_sys_health(struct rpc_ctx *c);

#endif
