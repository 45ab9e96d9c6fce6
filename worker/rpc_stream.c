/*
 * rpc_stream.c - stream.write, stream.get, stream.last, stream.version and
 * category.get (api.md 6.3-6.7, decisions.md 4).
 *
 * Each is one prepared statement in one round trip.  Validation runs in
 * the order api.md lists and returns the first failure with its exact
 * message.  Rows are written straight from PostgreSQL's text output into
 * the response: data and metadata are JSONB text, never re-parsed.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "nscache.h"
#include "rpc.h"
#include "sse.h"
#include "token.h"
#include "wbatch.h"

#define BATCH_MSG	"options.batchSize must be <= 10000 or -1 for unlimited"
#define BATCH_NEG_MSG	"options.batchSize must be between 0 and 10000, or -1 for unlimited"

/* Typed lookup of an optional key: 0 absent, node index, or -1 after an error reply. */
static long
opt_typed(struct rpc_ctx *c, uint32_t obj, const char *key, enum json_type want,
    const char *msg)
{
	uint32_t n;

	if (!obj)
		return 0;
	n = json_get(&c->doc, obj, key);
	if (!n)
		return 0;
	if (json_type_of(&c->doc, n) != want) {
		rpc_invalid(c, msg);
		return -1;
	}
	return (long)n;
}

/* args[i] must be an object if present: 0 absent, node, or -1 after an error. */
static long
options_arg(struct rpc_ctx *c, uint32_t i)
{
	uint32_t o = rpc_arg(c, i);

	if (!o)
		return 0;
	if (json_type_of(&c->doc, o) != JSON_OBJECT) {
		rpc_invalid(c, "options must be an object");
		return -1;
	}
	return (long)o;
}

/* A non-empty string argument, or an error reply (NULL). */
static const char *
name_arg(struct rpc_ctx *c, uint32_t i, const char *msg, int allow_empty)
{
	uint32_t n = rpc_arg(c, i);
	size_t len;
	const char *s;

	if (!n || json_type_of(&c->doc, n) != JSON_STRING) {
		rpc_invalid(c, msg);
		return NULL;
	}
	s = json_str(&c->doc, n, &len);
	if (len == 0 && !allow_empty) {
		rpc_invalid(c, msg);
		return NULL;
	}
	return s;
}

/* batchSize validation shared by stream.get and category.get. */
static int
batch_arg(struct rpc_ctx *c, uint32_t opts, int64_t *batch)
{
	long n = opt_typed(c, opts, "batchSize", JSON_NUMBER, "options.batchSize must be a number");

	*batch = 1000;
	if (n < 0)
		return -1;
	if (n == 0)
		return 0;
	*batch = json_int(&c->doc, (uint32_t)n);
	if (*batch > 10000 && *batch != -1) {
		rpc_invalid(c, BATCH_MSG);
		return -1;
	}
	if (*batch < -1) {
		rpc_invalid(c, BATCH_NEG_MSG);
		return -1;
	}
	return 0;
}

static int
need_ns(struct rpc_ctx *c, const char *what)
{
	if (c->ns)
		return 0;
	rpc_errorf(c, 500, "BACKEND_ERROR", "%s: namespace not found", what);
	return -1;
}

static void
backend_error_q(struct rpc_ctx *c, struct db_query *q, const char *what)
{
	const char *st = db_sqlstate(q);

	/* A schema dropped under us: the namespace is gone. */
	if (strcmp(st, "3F000") == 0 || strcmp(st, "42883") == 0 || strcmp(st, "42P01") == 0)
		rpc_errorf(c, 500, "BACKEND_ERROR", "%s: namespace not found", what);
	else
		rpc_errorf(c, 500, "BACKEND_ERROR", "%s: %s", what, db_errmsg(q));
}

static void
backend_error(struct rpc_ctx *c, const char *what)
{
	backend_error_q(c, &c->q, what);
}

static void
write_nullable_json(struct evbuffer *out, PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		evbuffer_add(out, "null", 4);
	else
		evbuffer_add(out, PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

/*
 * Rows of (id, [stream_name,] type, position, global_position, data,
 * metadata, time) as arrays, in wire order.
 */
static void
write_rows(struct evbuffer *out, PGresult *r, int with_stream, int single)
{
	int n = PQntuples(r);

	if (!single)
		evbuffer_add(out, "[", 1);
	for (int i = 0; i < n; i++) {
		int col = 0;
		if (i)
			evbuffer_add(out, ",", 1);
		evbuffer_add(out, "[", 1);
		json_write_str(out, PQgetvalue(r, i, col), (size_t)PQgetlength(r, i, col));
		col++;
		if (with_stream) {
			evbuffer_add(out, ",", 1);
			json_write_str(out, PQgetvalue(r, i, col), (size_t)PQgetlength(r, i, col));
			col++;
		}
		evbuffer_add(out, ",", 1);
		json_write_str(out, PQgetvalue(r, i, col), (size_t)PQgetlength(r, i, col));
		col++;
		for (int k = 0; k < 2; k++, col++) {
			evbuffer_add(out, ",", 1);
			evbuffer_add(out, PQgetvalue(r, i, col), (size_t)PQgetlength(r, i, col));
		}
		evbuffer_add(out, ",", 1);
		write_nullable_json(out, r, i, col++);
		evbuffer_add(out, ",", 1);
		write_nullable_json(out, r, i, col++);
		evbuffer_add(out, ",", 1);
		rpc_write_time(out, PQgetvalue(r, i, col));
		evbuffer_add(out, "]", 1);
	}
	if (!single)
		evbuffer_add(out, "]", 1);
}

/* ---- stream.write ------------------------------------------------------ */

void
rpc_write_ok(struct rpc_ctx *c, const char *pos, const char *gpos)
{
	/* Committed: poke subscribers (issue 3; after commit, never before). */
	sse_publish(c->ns->id, json_str(&c->doc, rpc_arg(c, 0), NULL), strtoll(pos, NULL, 10),
	    strtoll(gpos, NULL, 10));
	evbuffer_add_printf(c->out, "{\"globalPosition\":%s,\"position\":%s}", gpos, pos);
	rpc_reply(c);
}

static void
conflict(struct rpc_ctx *c, long long actual)
{
	char msg[128], det[96];

	snprintf(msg, sizeof(msg), "Expected version %lld, stream is at version %lld",
	    (long long)c->expected, actual);
	snprintf(det, sizeof(det), "{\"actual\":%lld,\"expected\":%lld}", actual,
	    (long long)c->expected);
	rpc_error_details(c, 409, "STREAM_VERSION_CONFLICT", msg, det);
}

/* "... (Stream: s, Stream Version: 4)" -> 4 */
static long long
conflict_actual(const char *msg)
{
	const char *p = strstr(msg, "Stream Version: ");
	const char *last = NULL;

	while (p) {	/* the stream name may itself contain the marker */
		last = p;
		p = strstr(p + 1, "Stream Version: ");
	}
	return last ? strtoll(last + 16, NULL, 10) : -1;
}

static void
byid_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];
	uint32_t args = rpc_arg(c, 1);
	const char *stream = json_str(&c->doc, rpc_arg(c, 0), NULL);
	const char *type = json_str(&c->doc, json_get(&c->doc, args, "type"), NULL);

	if (db_failed(q)) {
		backend_error(c, "Failed to write message");
		return;
	}
	if (PQntuples(r) == 0) {
		/* The id is free: the failure was a genuine version conflict. */
		if (c->phase == 2) {
			conflict(c, strtoll(c->nbuf[7], NULL, 10));
			return;
		}
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to write message: duplicate id vanished");
		return;
	}
	if (strcmp(PQgetvalue(r, 0, 0), stream) == 0 && strcmp(PQgetvalue(r, 0, 1), type) == 0 &&
	    strcmp(PQgetvalue(r, 0, 4), "t") == 0 && strcmp(PQgetvalue(r, 0, 5), "t") == 0) {
		/* The same write again: answer what the first one got. */
		char pos[24], gpos[24];
		snprintf(pos, sizeof(pos), "%s", PQgetvalue(r, 0, 2));
		snprintf(gpos, sizeof(gpos), "%s", PQgetvalue(r, 0, 3));
		rpc_write_ok(c, pos, gpos);
		return;
	}
	rpc_errorf(c, 409, "MESSAGE_ID_CONFLICT",
	    "Message id %s already exists with different content", c->msgid);
}

static void
lookup_by_id(struct rpc_ctx *c, int phase)
{
	/* Parameters: id, data, metadata (already in pv[0], pv[3], pv[4]). */
	c->phase = phase;
	c->pv[5] = c->pv[0];
	c->pv[6] = c->pv[3];
	c->pv[7] = c->pv[4];
	c->plen[6] = c->plen[3];
	c->plen[7] = c->plen[4];
	c->pfmt[5] = 0;
	c->pfmt[6] = c->pfmt[3];
	c->pfmt[7] = c->pfmt[4];
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_BYID], 3, &c->pv[5], 1, &c->plen[5], &c->pfmt[5] };
	rpc_submit(c, 1, byid_done);
}

/* A version conflict: maybe a retry of a write that already happened. */
void
rpc_write_conflict(struct rpc_ctx *c, long long actual)
{
	if (c->msgid_given) {
		snprintf(c->nbuf[7], sizeof(c->nbuf[7]), "%lld", actual);
		lookup_by_id(c, 2);
		return;
	}
	conflict(c, actual);
}

/* The id exists: the same write again, or a different one. */
void
rpc_write_dup(struct rpc_ctx *c)
{
	lookup_by_id(c, 1);
}

void
rpc_write_failed(struct rpc_ctx *c, struct db_query *q)
{
	backend_error_q(c, q, "Failed to write message");
}

void
rpc_write_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];
	const char *st;

	if (!db_failed(q) && r && PQntuples(r) == 1) {
		rpc_write_ok(c, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
		return;
	}
	st = db_sqlstate(q);
	if (q->err && strstr(db_errmsg(q), "Wrong expected version")) {
		rpc_write_conflict(c, conflict_actual(db_errmsg(q)));
		return;
	}
	if (strcmp(st, "23505") == 0 && strcmp(db_constraint(q), "messages_id") == 0) {
		rpc_write_dup(c);
		return;
	}
	backend_error(c, "Failed to write message");
}

/* One write, one transaction, through the original write_message. */
void
rpc_write_single(struct rpc_ctx *c, void (*cb)(struct db_query *))
{
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_WRITE], 6, c->pv, 1, c->plen, c->pfmt };
	rpc_submit(c, 1, cb);
}

void
rpc_stream_write(struct rpc_ctx *c)
{
	const char *stream;
	uint32_t msg, type, data;
	long meta, opts, idn, evn;
	size_t len;

	if (c->nargs < 2) {
		rpc_invalid(c, "stream.write requires at least 2 arguments: streamName and message");
		return;
	}
	if (!(stream = name_arg(c, 0, "streamName must be a non-empty string", 0)))
		return;
	msg = rpc_arg(c, 1);
	if (json_type_of(&c->doc, msg) != JSON_OBJECT) {
		rpc_invalid(c, "message must be an object");
		return;
	}
	type = json_get(&c->doc, msg, "type");
	if (!type || json_type_of(&c->doc, type) != JSON_STRING || c->doc.nodes[type].str_len == 0) {
		rpc_invalid(c, "message.type must be a non-empty string");
		return;
	}
	data = json_get(&c->doc, msg, "data");
	if (!data || json_type_of(&c->doc, data) != JSON_OBJECT) {
		rpc_invalid(c, "message.data must be an object");
		return;
	}
	if ((meta = opt_typed(c, msg, "metadata", JSON_OBJECT, "message.metadata must be an object")) < 0)
		return;
	if ((opts = options_arg(c, 2)) < 0)
		return;
	if ((idn = opt_typed(c, (uint32_t)opts, "id", JSON_STRING, "options.id must be a string")) < 0)
		return;
	if ((evn = opt_typed(c, (uint32_t)opts, "expectedVersion", JSON_NUMBER,
	    "options.expectedVersion must be a number")) < 0)
		return;

	c->msgid_given = 0;
	if (idn && c->doc.nodes[idn].str_len > 0) {
		size_t idlen;
		const char *s = json_str(&c->doc, (uint32_t)idn, &idlen);
		if (tok_uuid_canon(s, idlen, c->msgid) < 0) {
			rpc_invalid(c, "options.id must be a UUID");
			return;
		}
		c->msgid_given = 1;
	} else if (tok_uuid7(c->msgid) < 0) {
		rpc_error(c, 500, "INTERNAL_ERROR", "could not generate a message id");
		return;
	}
	if (need_ns(c, "Failed to write message") < 0)
		return;

	c->has_expected = evn > 0;
	c->expected = evn ? json_int(&c->doc, (uint32_t)evn) : 0;
	memset(c->pfmt, 0, sizeof(c->pfmt));
	c->pv[0] = c->msgid;
	c->pv[1] = stream;
	c->pv[2] = json_str(&c->doc, type, NULL);
	c->pv[3] = json_raw(&c->doc, data, &len);
	c->plen[3] = (int)len;
	c->pfmt[3] = 1;
	c->pv[4] = NULL;
	if (meta) {
		c->pv[4] = json_raw(&c->doc, (uint32_t)meta, &len);
		c->plen[4] = (int)len;
		c->pfmt[4] = 1;
	}
	c->pv[5] = evn ? rpc_num(c, 0, c->expected) : NULL;
	wb_submit(c);
}

/* ---- reads --------------------------------------------------------------- */

static void
rows_done(struct db_query *q, const char *what, int with_stream)
{
	struct rpc_ctx *c = q->arg;

	if (db_failed(q) || !q->res[0]) {
		backend_error(c, what);
		return;
	}
	write_rows(c->out, q->res[0], with_stream, 0);
	rpc_reply(c);
}

static void
get_done(struct db_query *q)
{
	rows_done(q, "Failed to get messages", 0);
}

static void
category_done(struct db_query *q)
{
	rows_done(q, "Failed to get category messages", 1);
}

void
rpc_stream_get(struct rpc_ctx *c)
{
	const char *stream;
	long opts, posn, gposn;
	int64_t batch;

	if (c->nargs < 1) {
		rpc_invalid(c, "stream.get requires at least 1 argument: streamName");
		return;
	}
	if (!(stream = name_arg(c, 0, "streamName must be a non-empty string", 0)))
		return;
	if ((opts = options_arg(c, 1)) < 0)
		return;
	if ((posn = opt_typed(c, (uint32_t)opts, "position", JSON_NUMBER,
	    "options.position must be a number")) < 0)
		return;
	if ((gposn = opt_typed(c, (uint32_t)opts, "globalPosition", JSON_NUMBER,
	    "options.globalPosition must be a number")) < 0)
		return;
	if (batch_arg(c, (uint32_t)opts, &batch) < 0)
		return;
	if (need_ns(c, "Failed to get messages") < 0)
		return;

	c->pv[0] = stream;
	if (gposn) {
		c->pv[1] = rpc_num(c, 1, json_int(&c->doc, (uint32_t)gposn));
		c->pv[2] = batch > 0 ? rpc_num(c, 2, batch) : NULL;
		c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_GET_GPOS], 3, c->pv, 1 };
	} else {
		c->pv[1] = rpc_num(c, 1, posn ? json_int(&c->doc, (uint32_t)posn) : 0);
		c->pv[2] = rpc_num(c, 2, batch);
		c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_GET], 3, c->pv, 1 };
	}
	rpc_submit(c, 1, get_done);
}

static void
last_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;

	if (db_failed(q) || !q->res[0]) {
		backend_error(c, "Failed to get last message");
		return;
	}
	if (PQntuples(q->res[0]) == 0)
		evbuffer_add(c->out, "null", 4);
	else
		write_rows(c->out, q->res[0], 0, 1);
	rpc_reply(c);
}

void
rpc_stream_last(struct rpc_ctx *c)
{
	const char *stream;
	long opts, typen;

	if (c->nargs < 1) {
		rpc_invalid(c, "stream.last requires at least 1 argument: streamName");
		return;
	}
	if (!(stream = name_arg(c, 0, "streamName must be a non-empty string", 0)))
		return;
	if ((opts = options_arg(c, 1)) < 0)
		return;
	if ((typen = opt_typed(c, (uint32_t)opts, "type", JSON_STRING,
	    "options.type must be a string")) < 0)
		return;
	if (need_ns(c, "Failed to get last message") < 0)
		return;
	c->pv[0] = stream;
	c->pv[1] = typen ? json_str(&c->doc, (uint32_t)typen, NULL) : NULL;
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_LAST], 2, c->pv, 1 };
	rpc_submit(c, 1, last_done);
}

static void
version_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	const char *v;

	if (db_failed(q) || !q->res[0] || PQntuples(q->res[0]) != 1) {
		backend_error(c, "Failed to get stream version");
		return;
	}
	v = PQgetvalue(q->res[0], 0, 0);
	if (PQgetisnull(q->res[0], 0, 0) || strcmp(v, "-1") == 0)
		evbuffer_add(c->out, "null", 4);
	else
		evbuffer_add(c->out, v, strlen(v));
	rpc_reply(c);
}

void
rpc_stream_version(struct rpc_ctx *c)
{
	const char *stream;

	if (c->nargs < 1) {
		rpc_invalid(c, "stream.version requires 1 argument: streamName");
		return;
	}
	if (!(stream = name_arg(c, 0, "streamName must be a non-empty string", 0)))
		return;
	if (need_ns(c, "Failed to get stream version") < 0)
		return;
	c->pv[0] = stream;
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_VERSION], 1, c->pv, 1 };
	rpc_submit(c, 1, version_done);
}

void
rpc_category_get(struct rpc_ctx *c)
{
	const char *cat;
	long opts, posn, gposn, corrn, cgn, membern = 0, sizen = 0;
	int64_t batch, start = 1;

	if (c->nargs < 1) {
		rpc_invalid(c, "category.get requires at least 1 argument: categoryName");
		return;
	}
	if (!(cat = name_arg(c, 0, "categoryName must be a string", 1)))
		return;
	if ((opts = options_arg(c, 1)) < 0)
		return;
	if ((posn = opt_typed(c, (uint32_t)opts, "position", JSON_NUMBER,
	    "options.position must be a number")) < 0)
		return;
	if ((gposn = opt_typed(c, (uint32_t)opts, "globalPosition", JSON_NUMBER,
	    "options.globalPosition must be a number")) < 0)
		return;
	if (batch_arg(c, (uint32_t)opts, &batch) < 0)
		return;
	if ((corrn = opt_typed(c, (uint32_t)opts, "correlation", JSON_STRING,
	    "options.correlation must be a string")) < 0)
		return;
	if ((cgn = opt_typed(c, (uint32_t)opts, "consumerGroup", JSON_OBJECT,
	    "options.consumerGroup must be an object")) < 0)
		return;
	if (cgn) {
		if ((membern = opt_typed(c, (uint32_t)cgn, "member", JSON_NUMBER,
		    "options.consumerGroup.member must be a number")) < 0)
			return;
		if ((sizen = opt_typed(c, (uint32_t)cgn, "size", JSON_NUMBER,
		    "options.consumerGroup.size must be a number")) < 0)
			return;
		if (membern && sizen) {
			int64_t m = json_int(&c->doc, (uint32_t)membern);
			int64_t s = json_int(&c->doc, (uint32_t)sizen);
			if (m < 0) {
				rpc_invalid(c, "options.consumerGroup.member must be non-negative");
				return;
			}
			if (s <= 0) {
				rpc_invalid(c, "options.consumerGroup.size must be positive");
				return;
			}
			if (m >= s) {
				rpc_invalid(c, "options.consumerGroup.member must be < size");
				return;
			}
		} else if (membern || sizen) {
			rpc_invalid(c, "options.consumerGroup requires both member and size");
			return;
		}
	}
	if (need_ns(c, "Failed to get category messages") < 0)
		return;

	if (gposn)
		start = json_int(&c->doc, (uint32_t)gposn);
	else if (posn)
		start = json_int(&c->doc, (uint32_t)posn);
	c->pv[0] = cat;
	c->pv[1] = rpc_num(c, 1, start);
	c->pv[2] = rpc_num(c, 2, batch);
	c->pv[3] = corrn ? json_str(&c->doc, (uint32_t)corrn, NULL) : NULL;
	c->pv[4] = membern ? rpc_num(c, 4, json_int(&c->doc, (uint32_t)membern)) : NULL;
	c->pv[5] = sizen ? rpc_num(c, 5, json_int(&c->doc, (uint32_t)sizen)) : NULL;
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_CATEGORY], 6, c->pv, 1 };
	rpc_submit(c, 1, category_done);
}
