/*
 * fuzz_rpc.c - libFuzzer target: POST /rpc without a database.
 *
 * The real worker/rpc.c, rpc_stream.c, rpc_ns.c, json.c and token.c run
 * unchanged: credentials, the JSON-array envelope, method
 * dispatch and every method's argument validation, up to the statements
 * they submit.  What is around them is replaced by stubs in this file:
 *   - the HTTP layer: a fake request whose body is the fuzz input; the
 *     stub checks that each request is answered exactly once, with a
 *     status in 200..599 and a body that is valid JSON;
 *   - the pool (db_submit): queries are answered after the handler
 *     returns, as the real pool does, with an answer chosen by the
 *     input: connection failure, an error with a SQLSTATE, one row of
 *     plausible text values, or no rows;
 *   - the namespace cache: entries "default" and "fuzz" exist, with
 *     the token hashes of fixed tokens; references must balance;
 *   - the group commit (wbatch.c): a validated write goes out alone, as
 *     it does when the write lane is free; its parameters are checked
 *     (canonical id, non-empty stream and type, data and metadata JSON
 *     objects).
 *
 * Input: byte 0 = flags, byte 1 and 2 = database script, then the body.
 *   flags & 1       test mode
 *   flags >> 1 & 7  credentials: 0 none, 1 admin token, 2 token of "fuzz",
 *                   3 token of "nosuch", 4 wrong hash for "default",
 *                   5 "Basic x", 6 "Bearer " (empty), 7 malformed token
 *   flags & 16      credentials in ?token= instead of Authorization
 *   flags & 32      GET instead of POST
 *   flags & 64      the same request twice on the connection (the RPC
 *                   context and its JSON document are reused)
 *   byte 1: 2 bits per query (in order): 0 connection failure, 1 one row,
 *           2 no rows, 3 error result (byte 2 picks SQLSTATE and message)
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "db.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "sse.h"
#include "token.h"
#include "wbatch.h"

/* ---- the HTTP layer ----------------------------------------------------- */

struct http_conn {
	void		*app;
	void		(*app_free)(void *);
	int		 answered;
	int		 status;
};

static struct http_conn fconn;
static struct json_doc check_doc;

uint64_t
http_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void *
http_app_ctx(struct http_req *req)
{
	return req->conn->app;
}

void
http_set_app_ctx(struct http_req *req, void *ctx, void (*free_fn)(void *))
{
	req->conn->app = ctx;
	req->conn->app_free = free_fn;
}

void
http_respond_type(struct http_req *req, int status, const char *ctype, struct evbuffer *body)
{
	size_t len = body ? evbuffer_get_length(body) : 0;
	const char *text = len ? (const char *)evbuffer_pullup(body, -1) : "";

	if (req->conn->answered) {
		fprintf(stderr, "fuzz_rpc: request answered twice (%d, then %d)\n",
		    req->conn->status, status);
		abort();
	}
	if (status < 200 || status > 599) {
		fprintf(stderr, "fuzz_rpc: bad status %d\n", status);
		abort();
	}
	if (strcmp(ctype, "application/json") == 0 && json_parse(&check_doc, text, len) < 0) {
		fprintf(stderr, "fuzz_rpc: response is not JSON (%s): %.*s\n", check_doc.err,
		    (int)(len > 500 ? 500 : len), text);
		abort();
	}
	req->conn->answered = 1;
	req->conn->status = status;
	if (body)
		evbuffer_drain(body, len);
}

void
http_respond(struct http_req *req, int status, struct evbuffer *body)
{
	http_respond_type(req, status, "application/json", body);
}

void
http_respond_str(struct http_req *req, int status, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add(b, json, strlen(json));
	http_respond(req, status, b);
	evbuffer_free(b);
}

void
http_respond_error(struct http_req *req, int status, const char *code, const char *message)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
	json_write_cstr(b, message);
	evbuffer_add(b, "}}\n", 3);
	http_respond(req, status, b);
	evbuffer_free(b);
}

/* The query is one "token=..." parameter, not percent-encoded. */
long
http_query_get(const struct http_req *req, const char *name, char *buf, size_t buflen)
{
	size_t n;

	if (!req->query || strcmp(name, "token") != 0 || strncmp(req->query, "token=", 6) != 0)
		return -1;
	n = strlen(req->query + 6);
	if (n + 1 > buflen)
		return -1;
	memcpy(buf, req->query + 6, n + 1);
	return (long)n;
}

/* ---- the namespace cache ------------------------------------------------ */

const char nscache_registry_sql[] = "SELECT registry";

#define NNS 3
static struct ns_entry ns_tab[NNS];
static const char *const ns_ids[NNS] = { "default", "fuzz", "put" };
static char tokens[NNS][TOK_MAX];
static char *fake_sql[NS_SQL_N];

static struct ns_entry *
ns_ref(int i)
{
	ns_tab[i].refs++;
	return &ns_tab[i];
}

struct ns_entry *
nscache_get(const char *id)
{
	for (int i = 0; i < 2; i++)
		if (strcmp(id, ns_ids[i]) == 0)
			return ns_ref(i);
	return NULL;
}

/* A registry row came back: an entry (the row's text is fake). */
struct ns_entry *
nscache_put(PGresult *res, int row)
{
	(void)res;
	(void)row;
	return ns_ref(2);
}

void
nscache_ref(struct ns_entry *e)
{
	e->refs++;
}

void
nscache_unref(struct ns_entry *e)
{
	if (!e)
		return;
	if (e < ns_tab || e >= ns_tab + NNS || e->refs <= 0) {
		fprintf(stderr, "fuzz_rpc: nscache_unref of a bad entry\n");
		abort();
	}
	e->refs--;
}

void nscache_drop(const char *id) { (void)id; }
void nscache_note_drop(void) { }

/* ---- subscriptions ------------------------------------------------------ */

void
sse_publish(const char *ns, const char *stream, int64_t pos, int64_t gpos)
{
	if (!ns || !stream)
		abort();
}

/* ---- the group commit --------------------------------------------------- */

/* What a validated write hands PostgreSQL: id, stream, type, data, metadata, version. */
static void
check_write(struct rpc_ctx *c)
{
	const char *why = NULL;

	if (!c->ns || !c->pv[0] || !c->pv[1] || !c->pv[2] || !c->pv[3])
		why = "a parameter is missing";
	else if (strlen(c->pv[0]) != 36)
		why = "id is not a canonical UUID";
	else if (!c->pv[1][0] || !c->pv[2][0])
		why = "empty stream name or type";
	else if (!c->pfmt[3] || (c->pv[4] && !c->pfmt[4]))
		why = "data or metadata not sent as a counted span";
	else if (json_parse(&check_doc, c->pv[3], (size_t)c->plen[3]) < 0 ||
	    json_type_of(&check_doc, 0) != JSON_OBJECT)
		why = "data is not a JSON object";
	else if (c->pv[4] && (json_parse(&check_doc, c->pv[4], (size_t)c->plen[4]) < 0 ||
	    json_type_of(&check_doc, 0) != JSON_OBJECT))
		why = "metadata is not a JSON object";
	if (why) {
		fprintf(stderr, "fuzz_rpc: stream.write: %s\n", why);
		abort();
	}
}

void
wb_submit(struct rpc_ctx *c)
{
	check_write(c);
	rpc_write_single(c, rpc_write_done);
}

/* ---- the pool ----------------------------------------------------------- */

#define NPENDQ 8
static struct db_query *pendq[NPENDQ];
static int npendq, nanswered;
static uint8_t script, variant;
static PGresult *row_res, *empty_res, *err_res;

static const char *const states[] = { "23505", "3F000", "42P01", "40001", "42P06", "P0001" };
static const char *const constraints[] = { "messages_id", "namespaces_pkey",
    "namespaces_schema_name_key", "messages_stream" };
static const char *const errmsgs[] = {
	"Wrong expected version: 3 (Stream: a-1, Stream Version: 4)",
	"Wrong expected version: 3 (Stream: Stream Version: 9, Stream Version: x)",
	"duplicate key value violates unique constraint",
	"server closed the connection unexpectedly",
};

void
db_submit(struct db_query *q)
{
	if (npendq == NPENDQ) {
		fprintf(stderr, "fuzz_rpc: too many queries in flight\n");
		abort();
	}
	if (q->nstmts < 1 || q->nstmts > DB_MAX_STMTS)
		abort();
	for (int i = 0; i < q->nstmts; i++) {
		const struct db_stmt *s = &q->stmts[i];
		if (!s->sql || s->nparams < 0 || (s->nparams && !s->values))
			abort();
		for (int k = 0; k < s->nparams; k++)
			if (s->values[k])
				(void)strlen(s->values[k]);	/* ASan: every value readable */
	}
	pendq[npendq++] = q;
}

/* Results are shared, never freed by the handlers (db_query_reset clears). */
void
db_query_reset(struct db_query *q)
{
	for (int i = 0; i < DB_MAX_STMTS; i++)
		q->res[i] = NULL;
	q->err = NULL;
	q->errmsg = NULL;
}

const char *
db_errmsg(const struct db_query *q)
{
	if (q->errmsg)
		return q->errmsg;
	return q->err ? errmsgs[variant % 4] : "";
}

const char *
db_sqlstate(const struct db_query *q)
{
	return q->err ? states[(variant >> 2) % 6] : "";
}

const char *
db_constraint(const struct db_query *q)
{
	return q->err ? constraints[(variant >> 5) % 4] : "";
}

int db_open_conns(void) { return 2; }
int db_available(void) { return !(variant & 1); }

static void
answer_one(void)
{
	struct db_query *q = pendq[0];
	int mode = (script >> (2 * (nanswered % 4))) & 3;

	memmove(pendq, pendq + 1, (size_t)--npendq * sizeof(pendq[0]));
	nanswered++;
	db_query_reset(q);
	switch (mode) {
	case 0:
		q->errmsg = "connection to the database lost";
		break;
	case 1:
	case 2:
		for (int i = 0; i < q->nstmts; i++)
			q->res[i] = mode == 1 ? row_res : empty_res;
		break;
	case 3:
		q->res[0] = err_res;
		q->err = err_res;
		break;
	}
	q->cb(q);
}

/* ---- the target --------------------------------------------------------- */

/* Every namespace reference a request took is released once it is answered. */
static void
check_refs(void)
{
	for (int i = 0; i < NNS; i++)
		if (ns_tab[i].refs != 0) {
			fprintf(stderr, "fuzz_rpc: namespace %s: %d references left\n", ns_ids[i],
			    ns_tab[i].refs);
			abort();
		}
}

static PGresult *
make_result(ExecStatusType st, int rows)
{
	PGresAttDesc att[12];
	PGresult *r = PQmakeEmptyPGresult(NULL, st);

	if (!r)
		abort();
	if (st != PGRES_TUPLES_OK)
		return r;
	memset(att, 0, sizeof(att));
	for (int i = 0; i < 12; i++)
		att[i].name = (char *)"c";
	if (!PQsetResultAttrs(r, 12, att))
		abort();
	for (int k = 0; k < rows; k++)
		for (int i = 0; i < 12; i++)
			if (!PQsetvalue(r, k, i, (char *)"1", 1))
				abort();
	return r;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup(LOG_FATAL, 0);
	for (int i = 0; i < NS_SQL_N; i++)
		fake_sql[i] = (char *)"SELECT per-namespace";
	for (int i = 0; i < NNS; i++) {
		ns_tab[i].id = (char *)ns_ids[i];
		ns_tab[i].cached = 1;
		snprintf(ns_tab[i].schema, sizeof(ns_tab[i].schema), "eventodb_%s", ns_ids[i]);
		memcpy(ns_tab[i].sql, fake_sql, sizeof(fake_sql));
		if (tok_generate(ns_ids[i], tokens[i], sizeof(tokens[i])) < 0)
			abort();
		tok_hash_hex(tokens[i], strlen(tokens[i]), ns_tab[i].token_hash);
	}
	row_res = make_result(PGRES_TUPLES_OK, 1);
	empty_res = make_result(PGRES_TUPLES_OK, 0);
	err_res = make_result(PGRES_FATAL_ERROR, 0);
	json_doc_init(&check_doc);
	return 0;
}

/*
 * The request path parses with keep_depth (RPC_KEEP_DEPTH, import's 2):
 * it must accept and reject exactly what an unlimited parse does, with
 * the same message, and keep the same nodes and strings down to its depth.
 */
static void
check_keep_depth(const char *text, size_t len, uint32_t keep)
{
	static struct json_doc full, part;
	static uint32_t *dep, ndep;
	int rc0, rc1;
	uint32_t k = 0;

	part.keep_depth = keep;
	rc0 = json_parse(&full, text, len);
	rc1 = json_parse(&part, text, len);
	if (rc0 != rc1 || (rc0 < 0 && strcmp(full.err, part.err) != 0)) {
		fprintf(stderr, "fuzz_rpc: keep_depth %u: %d \"%s\" vs %d \"%s\"\n", keep,
		    rc0, full.err, rc1, part.err);
		abort();
	}
	if (rc0 < 0)
		return;
	/* depths from the tree (children follow their parent); kept: depth <= keep */
	if (full.nnodes > ndep) {
		free(dep);
		ndep = full.nnodes;
		if (!(dep = malloc(ndep * sizeof(*dep))))
			abort();
	}
	dep[0] = 0;
	for (uint32_t i = 0; i < full.nnodes; i++)
		for (uint32_t c = full.nodes[i].first; c != 0; c = full.nodes[c].next)
			dep[c] = dep[i] + 1;
	for (uint32_t i = 0; i < full.nnodes; i++) {
		const struct json_node *a = &full.nodes[i];
		size_t la, lb;
		const char *sa, *sb;

		if (dep[i] > keep)
			continue;
		if (k >= part.nnodes || part.nodes[k].start != a->start ||
		    part.nodes[k].len != a->len || part.nodes[k].type != a->type) {
			fprintf(stderr, "fuzz_rpc: keep_depth %u: node %u differs\n", keep, i);
			abort();
		}
		if (a->type == JSON_STRING) {
			sa = json_str(&full, i, &la);
			sb = json_str(&part, k, &lb);
			if (!sa || !sb || la != lb || memcmp(sa, sb, la) != 0) {
				fprintf(stderr, "fuzz_rpc: keep_depth %u: string %u differs\n", keep, i);
				abort();
			}
		}
		k++;
	}
	if (k != part.nnodes) {
		fprintf(stderr, "fuzz_rpc: keep_depth %u: %u nodes kept, %u expected\n", keep,
		    part.nnodes, k);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rpc_options ro = { .version = "0.0.0-fuzz" };
	struct http_req req;
	char cred[TOK_MAX + 16], query[TOK_MAX + 16];
	int flags;

	if (size < 3)
		return 0;
	flags = data[0];
	script = data[1];
	variant = data[2];
	data += 3;
	size -= 3;
	ro.test_mode = flags & 1;
	rpc_init(&ro);

	switch ((flags >> 1) & 7) {
	case 0: cred[0] = '\0'; break;
	case 1: snprintf(cred, sizeof(cred), "%s", tokens[0]); break;
	case 2: snprintf(cred, sizeof(cred), "%s", tokens[1]); break;
	case 3: snprintf(cred, sizeof(cred), "ns_bm9zdWNo_%064d", 0); break;
	case 4: snprintf(cred, sizeof(cred), "ns_ZGVmYXVsdA_%064d", 0); break;
	case 5: snprintf(cred, sizeof(cred), "Basic x"); break;
	case 6: cred[0] = '\0'; break;
	default: snprintf(cred, sizeof(cred), "ns_!!_zz"); break;
	}
	memset(&req, 0, sizeof(req));
	fconn.app = NULL;
	fconn.app_free = NULL;
	req.conn = &fconn;
	req.method = flags & 32 ? HTTP_GET : HTTP_POST;
	req.method_str = flags & 32 ? "GET" : "POST";
	req.path = "/rpc";
	req.keepalive = 1;
	req.id = 1;
	req.t_start = http_now_ns();
	if (flags & 16) {
		if (cred[0] && ((flags >> 1) & 7) != 5) {
			snprintf(query, sizeof(query), "token=%s", cred);
			req.query = query;
		}
	} else if (((flags >> 1) & 7) == 6) {
		req.authorization = "Bearer ";
	} else if (((flags >> 1) & 7) == 5) {
		req.authorization = cred;
	} else if (cred[0]) {
		static char auth[TOK_MAX + 32];
		snprintf(auth, sizeof(auth), "Bearer %s", cred);
		req.authorization = auth;
	}
	req.body = evbuffer_new();
	for (int round = 0; round < (flags & 64 ? 2 : 1); round++) {
		evbuffer_drain(req.body, evbuffer_get_length(req.body));
		evbuffer_add(req.body, data, size);
		fconn.answered = 0;
		npendq = nanswered = 0;
		rpc_handle(&req);
		for (int i = 0; i < 64 && npendq > 0; i++)
			answer_one();
		if (npendq > 0) {
			fprintf(stderr, "fuzz_rpc: queries still pending after 64 answers\n");
			abort();
		}
		if (!fconn.answered) {
			fprintf(stderr, "fuzz_rpc: request never answered\n");
			abort();
		}
		check_refs();
	}
	/* The connection goes away: the RPC context is freed with it. */
	if (fconn.app && fconn.app_free)
		fconn.app_free(fconn.app);
	check_refs();
	evbuffer_free(req.body);
	check_keep_depth((const char *)data, size, 1 + variant % 4);
	return 0;
}
