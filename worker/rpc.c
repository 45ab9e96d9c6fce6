/*
 * rpc.c - POST /rpc: credentials, auth, envelope, dispatch (api.md 4-5).
 *
 * Order of checks, as the original: auth (401/403 before anything else,
 * even for malformed bodies), then the HTTP method (405), then the body
 * (400), then the method name (404), then the handler's own validation.
 *
 * Auth costs no round trip once the caller's namespace is cached: the
 * token is parsed, its SHA-256 compared in constant time with the cached
 * registry hash.  A cache miss costs one registry lookup.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "shm.h"
#include "token.h"

#define RPC_MAGIC 0x52504343u

const struct rpc_options *rpc_opt;
static struct rpc_options opt_store;

static const struct rpc_method methods[] = {
	{ "category.get",	rpc_category_get },
	{ "ns.categories",	rpc_ns_categories },
	{ "ns.create",		rpc_ns_create },
	{ "ns.delete",		rpc_ns_delete },
	{ "ns.info",		rpc_ns_info },
	{ "ns.list",		rpc_ns_list },
	{ "ns.streams",		rpc_ns_streams },
	{ "stream.get",		rpc_stream_get },
	{ "stream.last",	rpc_stream_last },
	{ "stream.version",	rpc_stream_version },
	{ "stream.write",	rpc_stream_write },
	{ "sys.health",		rpc_sys_health },
	{ "sys.version",	rpc_sys_version },
};

/* Label of each method in the shared-memory counters (shm/labels.def). */
static uint8_t method_label[sizeof(methods) / sizeof(methods[0])];

void
rpc_init(const struct rpc_options *opt)
{
	opt_store = *opt;
	rpc_opt = &opt_store;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		method_label[i] = (uint8_t)shm_label_index(SHM_DIM_method, methods[i].name);
}

/*
 * Depth of the deepest value a method reads: a request is ["method", args...]
 * and options.consumerGroup.member is at 3 (the array, options,
 * consumerGroup, member).  Beneath message.data and metadata (2) json_parse
 * validates but stores nothing: they go on to PostgreSQL as raw text.
 */
#define RPC_KEEP_DEPTH	3

/* Per-connection buffers above this are freed after each request. */
#define RPC_KEEP_BYTES	(64 * 1024)

static void
ctx_free(void *p)
{
	struct rpc_ctx *c = p;

	db_query_reset(&c->q);
	json_doc_free(&c->doc);
	evbuffer_free(c->out);
	nscache_unref(c->ns);
	nscache_unref(c->target);
	c->magic = 0;
	free(c);
}

static struct rpc_ctx *
ctx_get(struct http_req *req)
{
	struct rpc_ctx *c = http_app_ctx(req);

	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return NULL;
		c->magic = RPC_MAGIC;
		json_doc_init(&c->doc);
		c->doc.keep_depth = RPC_KEEP_DEPTH;
		c->out = evbuffer_new();
		if (!c->out) {
			free(c);
			return NULL;
		}
		http_set_app_ctx(req, c, ctx_free);
	}
	c->req = req;
	c->ns = NULL;
	c->target = NULL;
	c->admin = 0;
	c->own = 0;
	c->phase = 0;
	c->m = NULL;
	c->ns_id[0] = '\0';
	c->target_id[0] = '\0';
	c->msgid_given = 0;
	c->has_expected = 0;
	c->q.arg = c;
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	return c;
}

/* Release everything the request held; the response has been sent. */
void
rpc_finish(struct rpc_ctx *c)
{
	unsigned m = c->m ? method_label[c->m - methods] : EVSHM_M_OTHER;

	/* Once per answered request: count it with its latency. */
	SHM_INC_AT(requests, m);
	SHM_OBSERVE(request_duration, m, http_now_ns() - c->req->t_start);
	db_query_reset(&c->q);
	nscache_unref(c->ns);
	nscache_unref(c->target);
	c->ns = c->target = NULL;
	if (c->heap_sql) {
		for (int i = 0; i < c->nheap_sql; i++)
			free(c->heap_sql[i]);
		free(c->heap_sql);
		c->heap_sql = NULL;
		c->nheap_sql = 0;
	}
	free(c->heap_st);
	c->heap_st = NULL;
	/* What a large request grew is not kept for the life of the connection. */
	if (json_doc_bytes(&c->doc) > RPC_KEEP_BYTES)
		json_doc_free(&c->doc);
}

static void
respond(struct rpc_ctx *c, int status)
{
	struct http_req *req = c->req;

	evbuffer_add(c->out, "\n", 1);
	rpc_finish(c);
	http_respond(req, status, c->out);
}

void
rpc_reply(struct rpc_ctx *c)
{
	respond(c, 200);
}

void
rpc_error_details(struct rpc_ctx *c, int status, const char *code, const char *msg,
    const char *details_json)
{
	SHM_INC_AT(errors, shm_errcode_index(code));
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	evbuffer_add_printf(c->out, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	json_write_cstr(c->out, msg);
	if (details_json)
		evbuffer_add_printf(c->out, ",\"details\":%s", details_json);
	evbuffer_add(c->out, "}}", 2);
	if (status >= 500)
		log_warn("request %llu: %s: %s", (unsigned long long)c->req->id, code, msg);
	respond(c, status);
}

void
rpc_error(struct rpc_ctx *c, int status, const char *code, const char *msg)
{
	rpc_error_details(c, status, code, msg, NULL);
}

void
rpc_errorf(struct rpc_ctx *c, int status, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rpc_error(c, status, code, msg);
}

void
rpc_invalid(struct rpc_ctx *c, const char *msg)
{
	rpc_error(c, 400, "INVALID_REQUEST", msg);
}

uint32_t
rpc_arg(struct rpc_ctx *c, uint32_t i)
{
	return i < c->nargs ? json_at(&c->doc, 0, i + 1) : 0;
}

const char *
rpc_num(struct rpc_ctx *c, int slot, int64_t v)
{
	snprintf(c->nbuf[slot], sizeof(c->nbuf[slot]), "%lld", (long long)v);
	return c->nbuf[slot];
}

void
rpc_submit(struct rpc_ctx *c, int nstmts, void (*cb)(struct db_query *))
{
	db_query_reset(&c->q);
	if (!c->heap_st)
		c->q.stmts = c->st;
	else
		c->q.stmts = c->heap_st;
	c->q.nstmts = nstmts;
	c->q.cb = cb;
	c->q.arg = c;
	c->q.t_submit = http_now_ns();
	db_submit(&c->q);
}

/* "2025-01-15 10:30:00.123456" -> "2025-01-15T10:30:00.123456Z" */
void
rpc_write_time(struct evbuffer *out, const char *t)
{
	char buf[48];
	size_t n = strlen(t);

	if (n < 19 || n > 40) {
		json_write_cstr(out, t);
		return;
	}
	buf[0] = '"';
	memcpy(buf + 1, t, n);
	buf[11] = 'T';
	buf[n + 1] = 'Z';
	buf[n + 2] = '"';
	evbuffer_add(out, buf, n + 3);
}

/* Server clock, nanoseconds with trailing zeros trimmed (Go RFC3339Nano). */
void
rpc_write_now(struct evbuffer *out)
{
	struct timespec ts;
	struct tm tm;
	char frac[16] = "";

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	if (ts.tv_nsec) {
		int n = snprintf(frac, sizeof(frac), ".%09ld", ts.tv_nsec);
		while (n > 1 && frac[n - 1] == '0')
			frac[--n] = '\0';
	}
	evbuffer_add_printf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d%sZ\"", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void
rpc_write_unix(struct evbuffer *out, int64_t secs)
{
	time_t t = (time_t)secs;
	struct tm tm;

	gmtime_r(&t, &tm);
	evbuffer_add_printf(out, "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- dispatch after auth ---------------------------------------------- */

static void
dispatch(struct rpc_ctx *c)
{
	struct http_req *req = c->req;
	const char *body, *name;
	size_t len, lo = 0, hi = sizeof(methods) / sizeof(methods[0]);
	uint32_t m;

	if (req->method != HTTP_POST) {
		rpc_error(c, 405, "INVALID_REQUEST", "Only POST method allowed");
		return;
	}
	len = evbuffer_get_length(req->body);
	body = len ? (const char *)evbuffer_pullup(req->body, -1) : "";
	if (json_parse(&c->doc, body, len) < 0) {
		char det[256];
		struct evbuffer *b = evbuffer_new();
		json_write_cstr(b, c->doc.err);
		snprintf(det, sizeof(det), "{\"error\":%.*s}",
		    (int)evbuffer_get_length(b), (const char *)evbuffer_pullup(b, -1));
		evbuffer_free(b);
		rpc_error_details(c, 400, "INVALID_REQUEST", "Malformed JSON request", det);
		return;
	}
	if (json_type_of(&c->doc, 0) == JSON_NULL) {
		rpc_invalid(c, "Missing method name");
		return;
	}
	if (json_type_of(&c->doc, 0) != JSON_ARRAY) {
		rpc_error_details(c, 400, "INVALID_REQUEST", "Malformed JSON request",
		    "{\"error\":\"request must be a JSON array\"}");
		return;
	}
	if (c->doc.nodes[0].count < 1) {
		rpc_invalid(c, "Missing method name");
		return;
	}
	c->nargs = c->doc.nodes[0].count - 1;
	m = json_at(&c->doc, 0, 0);
	if (json_type_of(&c->doc, m) != JSON_STRING) {
		rpc_invalid(c, "Method name must be a string");
		return;
	}
	name = json_str(&c->doc, m, NULL);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int cmp = strcmp(name, methods[mid].name);
		if (cmp == 0) {
			c->m = &methods[mid];
			methods[mid].fn(c);
			return;
		}
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	rpc_errorf(c, 404, "METHOD_NOT_FOUND", "Unknown method: %s", name);
}

/* ---- auth ---------------------------------------------------------------- */

static void auth_with_entry(struct rpc_ctx *c);

static void
auth_fail_ns(struct rpc_ctx *c)
{
	struct evbuffer *b = evbuffer_new();
	char det[600];

	json_write_cstr(b, c->ns_id);
	snprintf(det, sizeof(det), "{\"namespace\":%.*s}", (int)evbuffer_get_length(b),
	    (const char *)evbuffer_pullup(b, -1));
	evbuffer_free(b);
	rpc_error_details(c, 403, "AUTH_UNAUTHORIZED", "Token not authorized for namespace", det);
}

static void
registry_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];

	if (db_failed(q)) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to authenticate: %s", db_errmsg(q));
		return;
	}
	if (r && PQntuples(r) > 0)
		c->ns = nscache_put(r, 0);
	db_query_reset(q);
	auth_with_entry(c);
}

static void
auth_with_entry(struct rpc_ctx *c)
{
	if (!c->ns) {
		if (rpc_opt->test_mode) {
			dispatch(c);	/* data methods then fail: namespace not found */
			return;
		}
		auth_fail_ns(c);
		return;
	}
	if (!tok_equal_ct(c->token_hash, c->ns->token_hash, 64)) {
		if (rpc_opt->test_mode) {
			dispatch(c);	/* test mode never checks the hash */
			return;
		}
		auth_fail_ns(c);
		return;
	}
	c->admin = strcmp(c->ns_id, "default") == 0;
	dispatch(c);
}

/* Resolve the caller's namespace entry (cache, else one registry query). */
static void
resolve_caller(struct rpc_ctx *c)
{
	c->ns = nscache_get(c->ns_id);
	if (c->ns) {
		auth_with_entry(c);
		return;
	}
	c->pv[0] = c->ns_id;
	c->st[0] = (struct db_stmt){ nscache_registry_sql, 1, c->pv, 1 };
	rpc_submit(c, 1, registry_done);
}

/*
 * The credentials of a request (api.md 4.4-4.5), for /rpc, /subscribe and
 * /import.  Returns 0 with ns_id and token_hash set (token_hash all zero:
 * test mode without a usable token, ns_id "default"), or the HTTP status
 * of the error with its code, message and details (JSON, or "").
 */
static int
read_credentials(struct http_req *req, char *ns_id, size_t nslen, char token_hash[65],
    const char **code, const char **msg, char *det, size_t detlen)
{
	char token[TOK_MAX + 64], err[256];
	const char *tok = NULL;
	long tlen;

	det[0] = '\0';
	*code = "AUTH_REQUIRED";
	tlen = http_query_get(req, "token", token, sizeof(token));
	if (tlen > 0) {
		tok = token;
	} else if (req->authorization && req->authorization[0]) {
		const char *a = req->authorization;
		if (strncmp(a, "Bearer ", 7) != 0) {
			if (!rpc_opt->test_mode) {
				*msg = "Authorization header must use Bearer scheme";
				return 401;
			}
		} else if (a[7] == '\0') {
			if (!rpc_opt->test_mode) {
				*msg = "Token required";
				return 401;
			}
		} else
			tok = a + 7;
	} else if (!rpc_opt->test_mode) {
		*msg = "Authorization header required";
		return 401;
	}

	if (tok && tok_parse(tok, strlen(tok), ns_id, nslen, err, sizeof(err)) == 0) {
		tok_hash_hex(tok, strlen(tok), token_hash);
		return 0;
	}
	if (tok && !rpc_opt->test_mode) {
		struct evbuffer *b = evbuffer_new();
		json_write_cstr(b, err);
		snprintf(det, detlen, "{\"error\":%.*s}", (int)evbuffer_get_length(b),
		    (const char *)evbuffer_pullup(b, -1));
		evbuffer_free(b);
		*code = "AUTH_INVALID_TOKEN";
		*msg = "Invalid token format";
		return 401;
	}
	/* Test mode without a usable token: the default namespace. */
	snprintf(ns_id, nslen, "default");
	memset(token_hash, 0, 65);
	return 0;
}

void
rpc_handle(struct http_req *req)
{
	struct rpc_ctx *c = ctx_get(req);
	const char *code, *msg;
	char det[400];
	int status;

	if (!c) {
		http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		return;
	}
	status = read_credentials(req, c->ns_id, sizeof(c->ns_id), c->token_hash, &code, &msg,
	    det, sizeof(det));
	if (status) {
		rpc_error_details(c, status, code, msg, det[0] ? det : NULL);
		return;
	}
	if (c->token_hash[0]) {
		resolve_caller(c);
		return;
	}
	/* Test mode without a usable token: the default namespace. */
	c->ns = nscache_get(c->ns_id);
	if (c->ns) {
		dispatch(c);
		return;
	}
	c->pv[0] = c->ns_id;
	c->st[0] = (struct db_stmt){ nscache_registry_sql, 1, c->pv, 1 };
	rpc_submit(c, 1, registry_done);
}

/* ---- auth for other endpoints (/subscribe, /import) ----------------------- */

static void
auth_check(struct rpc_auth *a)
{
	if (!rpc_opt->test_mode &&
	    (!a->ns || !tok_equal_ct(a->token_hash, a->ns->token_hash, 64))) {
		struct evbuffer *b = evbuffer_new();

		json_write_cstr(b, a->ns_id);
		snprintf(a->details, sizeof(a->details), "{\"namespace\":%.*s}",
		    (int)evbuffer_get_length(b), (const char *)evbuffer_pullup(b, -1));
		evbuffer_free(b);
		nscache_unref(a->ns);
		a->ns = NULL;
		a->status = 403;
		a->code = "AUTH_UNAUTHORIZED";
		snprintf(a->message, sizeof(a->message), "Token not authorized for namespace");
	}
	a->done(a);
}

static void
auth_registry_done(struct db_query *q)
{
	struct rpc_auth *a = q->arg;
	PGresult *r = q->res[0];

	if (db_failed(q)) {
		a->status = 500;
		a->code = "BACKEND_ERROR";
		snprintf(a->message, sizeof(a->message), "Failed to authenticate: %s", db_errmsg(q));
		db_query_reset(q);
		a->done(a);
		return;
	}
	if (r && PQntuples(r) > 0)
		a->ns = nscache_put(r, 0);
	db_query_reset(q);
	auth_check(a);
}

void
rpc_auth(struct http_req *req, struct rpc_auth *a, void (*done)(struct rpc_auth *a), void *arg)
{
	const char *msg = "";

	memset(a, 0, sizeof(*a));
	a->done = done;
	a->arg = arg;
	a->status = read_credentials(req, a->ns_id, sizeof(a->ns_id), a->token_hash, &a->code,
	    &msg, a->details, sizeof(a->details));
	if (a->status) {
		snprintf(a->message, sizeof(a->message), "%s", msg);
		done(a);
		return;
	}
	a->ns = nscache_get(a->ns_id);
	if (a->ns) {
		auth_check(a);
		return;
	}
	a->pv[0] = a->ns_id;
	a->st = (struct db_stmt){ nscache_registry_sql, 1, a->pv, 1 };
	a->q.stmts = &a->st;
	a->q.nstmts = 1;
	a->q.cb = auth_registry_done;
	a->q.arg = a;
	a->q.t_submit = http_now_ns();
	db_submit(&a->q);
}

void
rpc_auth_respond(struct http_req *req, const struct rpc_auth *a)
{
	struct evbuffer *b = evbuffer_new();

	SHM_INC_AT(errors, shm_errcode_index(a->code));
	evbuffer_add_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", a->code);
	json_write_cstr(b, a->message);
	if (a->details[0])
		evbuffer_add_printf(b, ",\"details\":%s", a->details);
	evbuffer_add(b, "}}\n", 3);
	if (a->status >= 500)
		log_warn("request %llu: %s: %s", (unsigned long long)req->id, a->code, a->message);
	http_respond(req, a->status, b);
	evbuffer_free(b);
}

/* ---- target namespace (ns.info, ns.delete) -------------------------------- */

static void
target_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];
	if (db_failed(q)) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to get namespace: %s", db_errmsg(q));
		return;
	}
	if (r && PQntuples(r) > 0)
		c->target = nscache_put(r, 0);
	db_query_reset(q);
	c->cont(c);
}

/*
 * Look up namespace `id` into c->target (NULL when it does not exist) and
 * continue with cont; c->own tells whether it is the caller's namespace
 * with a verified token.
 */
void
rpc_lookup_target(struct rpc_ctx *c, const char *id, void (*cont)(struct rpc_ctx *c))
{
	snprintf(c->target_id, sizeof(c->target_id), "%s", id);
	c->own = strcmp(id, c->ns_id) == 0 && c->ns != NULL &&
	    tok_equal_ct(c->token_hash, c->ns->token_hash, 64);
	c->target = nscache_get(id);
	if (c->target) {
		cont(c);
		return;
	}
	c->cont = cont;
	c->pv[0] = c->target_id;
	c->st[0] = (struct db_stmt){ nscache_registry_sql, 1, c->pv, 1 };
	rpc_submit(c, 1, target_done);
}

/* ---- /health -------------------------------------------------------------- */

static uint64_t health_checked;
static int health_ok = 1, health_running;
static struct db_query health_q;
static const struct db_stmt health_stmt = { "SELECT 1", 0, NULL, 1 };

static void
health_done(struct db_query *q)
{
	health_ok = !db_failed(q);
	health_running = 0;
	db_query_reset(q);
}

void
rpc_health(struct http_req *req)
{
	uint64_t now = http_now_ns();
	char body[160];

	if (!health_running && now - health_checked > 1000000000ull) {
		health_checked = now;
		health_running = 1;
		health_q.stmts = &health_stmt;
		health_q.nstmts = 1;
		health_q.cb = health_done;
		db_submit(&health_q);
	}
	if (!db_available())
		health_ok = 0;
	snprintf(body, sizeof(body),
	    "{\"backend\":\"postgres\",\"connections\":%d,\"status\":\"%s\"}\n",
	    db_open_conns(), health_ok ? "ok" : "unavailable");
	http_respond_str(req, health_ok ? 200 : 503, body);
}
