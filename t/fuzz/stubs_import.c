/*
 * stubs_import.c - link stubs for fuzz_import: worker/import.c's request
 * handling needs the HTTP layer, the pool, the namespace cache and
 * rpc_auth; the line decoder under test needs none of them.  Each stub
 * aborts, so a call would show up as a crash.
 */
#include "config.h"

#include <stdlib.h>

#include "db.h"
#include "http.h"
#include "nscache.h"
#include "rpc.h"

void db_submit(struct db_query *q) { abort(); }
void db_query_reset(struct db_query *q) { abort(); }
const char *db_errmsg(const struct db_query *q) { abort(); }
const char *db_sqlstate(const struct db_query *q) { abort(); }
const char *db_constraint(const struct db_query *q) { abort(); }
void nscache_unref(struct ns_entry *e) { abort(); }
uint64_t http_now_ns(void) { abort(); }
long http_query_get(const struct http_req *req, const char *name, char *buf, size_t buflen) { abort(); }
void http_respond_error(struct http_req *req, int status, const char *code, const char *message) { abort(); }
void http_set_close_cb(struct http_req *req, void (*cb)(void *arg), void *arg) { abort(); }
void http_body_start(struct http_req *req, void (*cb)(void *arg, struct evbuffer *body, int end),
    void *arg) { abort(); }
void http_body_pause(struct http_req *req, int pause) { abort(); }
void http_stream_begin(struct http_req *req, int status, const char *ctype, const char *headers) { abort(); }
void http_stream_write_buf(struct http_req *req, struct evbuffer *buf) { abort(); }
size_t http_stream_pending(const struct http_req *req) { abort(); }
void http_stream_end(struct http_req *req) { abort(); }
void rpc_auth(struct http_req *req, struct rpc_auth *a, void (*done)(struct rpc_auth *a),
    void *arg) { abort(); }
void rpc_auth_respond(struct http_req *req, const struct rpc_auth *a) { abort(); }
