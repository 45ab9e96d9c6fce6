/*
 * rpc_ns.c - namespace management and system methods (api.md 6.1-6.2,
 * 6.8-6.13, decisions.md 3 and 6).
 *
 * Admin rules (outside test mode): ns.create and ns.list need the admin
 * token (the default namespace's); ns.info and ns.delete need the admin
 * token or the namespace's own token.
 *
 * ns.create and ns.delete are single pipelines, so each is one implicit
 * transaction: the registry row and the schema appear or vanish together.
 * ns.create inserts the registry row first, so an existing id or schema
 * name fails on the unique index before any DDL runs; then a guard refuses
 * (400) a schema that exists outside the registry, and the id "store"
 * (eventodb_store, the registry itself) is refused before any SQL.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "sql.h"
#include "token.h"

static const char registry_insert_sql[] =
    "INSERT INTO eventodb_store.namespaces (id, token_hash, schema_name, description, created_at, metadata) "
    "VALUES ($1, $2, $3, $4, $5, '{}')";
static const char registry_delete_sql[] =
    "DELETE FROM eventodb_store.namespaces WHERE id = $1";
static const char notify_sql[] =
    "SELECT pg_notify('" NS_NOTIFY_CHANNEL "', $1)";
/* The schema name is eventodb_ + [A-Za-z0-9_] only (tok_ns_id_invalid), safe in a literal. */
static const char schema_guard_fmt[] =
    "DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '%s') THEN "
    "RAISE EXCEPTION 'schema already exists' USING ERRCODE = 'duplicate_schema'; "
    "END IF; END$$";
static const char registry_desc_sql[] =
    "SELECT description FROM eventodb_store.namespaces WHERE id = $1";
/*
 * Real message counts for every namespace in one statement: the count of
 * each schema's table is computed server-side (query_to_xml runs the
 * dynamic query, with the identifier quoted by format('%I')).
 */
static const char list_sql[] =
    "SELECT n.id, coalesce(n.description, ''), n.created_at, "
    "CASE WHEN to_regclass(format('%I.messages', n.schema_name)) IS NULL THEN 0 ELSE "
    "substring(query_to_xml(format('SELECT count(*) AS c FROM %I.messages', n.schema_name), "
    "false, true, '')::text from '<c>([0-9]+)</c>')::bigint END "
    "FROM eventodb_store.namespaces n ORDER BY n.created_at DESC, n.id";

static int
forbidden(struct rpc_ctx *c)
{
	struct evbuffer *b;
	char det[600];

	if (rpc_opt->test_mode || c->admin || c->own)
		return 0;
	b = evbuffer_new();
	json_write_cstr(b, c->ns_id);
	snprintf(det, sizeof(det), "{\"namespace\":%.*s}", (int)evbuffer_get_length(b),
	    (const char *)evbuffer_pullup(b, -1));
	evbuffer_free(b);
	rpc_error_details(c, 403, "AUTH_UNAUTHORIZED", "Token not authorized for this operation", det);
	return -1;
}

static const char *
id_arg(struct rpc_ctx *c, const char *need_msg)
{
	uint32_t n;

	if (c->nargs < 1) {
		rpc_invalid(c, need_msg);
		return NULL;
	}
	n = rpc_arg(c, 0);
	if (json_type_of(&c->doc, n) != JSON_STRING || c->doc.nodes[n].str_len == 0) {
		rpc_invalid(c, "namespace ID must be a non-empty string");
		return NULL;
	}
	return json_str(&c->doc, n, NULL);
}

/* ---- sys.* ------------------------------------------------------------- */

void
rpc_sys_version(struct rpc_ctx *c)
{
	json_write_cstr(c->out, rpc_opt->version);
	rpc_reply(c);
}

void
rpc_sys_health(struct rpc_ctx *c)
{
	int up = db_available();

	evbuffer_add_printf(c->out, "{\"backend\":\"postgres\",\"connections\":%d,\"status\":\"%s\"}",
	    db_open_conns(), up ? "ok" : "unavailable");
	if (up)
		rpc_reply(c);
	else {
		evbuffer_add(c->out, "\n", 1);
		rpc_finish(c);
		http_respond(c->req, 503, c->out);
	}
}

/* ---- ns.create -------------------------------------------------------- */

static void
create_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	const char *id = c->pv[0];

	if (db_failed(q)) {
		const char *cons = db_constraint(q);
		if (strcmp(db_sqlstate(q), "23505") == 0 &&
		    (strcmp(cons, "namespaces_pkey") == 0 ||
		    strcmp(cons, "namespaces_schema_name_key") == 0)) {
			rpc_errorf(c, 409, "NAMESPACE_EXISTS", "Namespace '%s' already exists", id);
			return;
		}
		if (strcmp(db_sqlstate(q), "42P06") == 0) {
			/* schema_guard_fmt: a schema of that name exists outside the registry */
			rpc_errorf(c, 400, "INVALID_REQUEST", "Namespace '%s' cannot be created: "
			    "schema \"%s\" already exists", id, c->target_id);
			return;
		}
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to create namespace: %s", db_errmsg(q));
		return;
	}
	log_info("namespace created id=%s", id);
	evbuffer_add(c->out, "{\"createdAt\":", 13);
	rpc_write_now(c->out);
	evbuffer_add(c->out, ",\"namespace\":", 13);
	json_write_cstr(c->out, id);
	evbuffer_add(c->out, ",\"token\":", 9);
	json_write_cstr(c->out, c->token_out);
	evbuffer_add(c->out, "}", 1);
	rpc_reply(c);
}

void
rpc_ns_create(struct rpc_ctx *c)
{
	const char *id, *why, *desc = "";
	long opts = 0;
	uint32_t o, n;
	char schema[128], err[256], tokns[256];
	int nst = 0;

	if (!(id = id_arg(c, "ns.create requires at least 1 argument: namespace ID")))
		return;
	if (c->nargs >= 2) {
		o = rpc_arg(c, 1);
		if (json_type_of(&c->doc, o) != JSON_OBJECT) {
			rpc_invalid(c, "options must be an object");
			return;
		}
		opts = (long)o;
	}
	c->token_out[0] = '\0';
	if (opts) {
		if ((n = json_get(&c->doc, (uint32_t)opts, "description"))) {
			if (json_type_of(&c->doc, n) != JSON_STRING) {
				rpc_invalid(c, "options.description must be a string");
				return;
			}
			desc = json_str(&c->doc, n, NULL);
		}
		if ((n = json_get(&c->doc, (uint32_t)opts, "token"))) {
			size_t len;
			const char *t;
			if (json_type_of(&c->doc, n) != JSON_STRING) {
				rpc_invalid(c, "options.token must be a string");
				return;
			}
			t = json_str(&c->doc, n, &len);
			if (tok_parse(t, len, tokns, sizeof(tokns), err, sizeof(err)) < 0) {
				rpc_errorf(c, 400, "INVALID_REQUEST", "Invalid token format: %s", err);
				return;
			}
			if (strcmp(tokns, id) != 0) {
				rpc_errorf(c, 400, "INVALID_REQUEST", "Token is for namespace '%s', not '%s'",
				    tokns, id);
				return;
			}
			if (len >= sizeof(c->token_out)) {
				rpc_invalid(c, "Invalid token format: token too long");
				return;
			}
			memcpy(c->token_out, t, len + 1);
		}
		if ((n = json_get(&c->doc, (uint32_t)opts, "metadata")) &&
		    json_type_of(&c->doc, n) != JSON_OBJECT) {
			rpc_invalid(c, "options.metadata must be an object");
			return;
		}
	}
	if ((why = tok_ns_id_invalid(id, strlen(id)))) {
		rpc_invalid(c, why);
		return;
	}
	tok_schema_name(id, schema, sizeof(schema));
	if (strcmp(schema, "eventodb_store") == 0) {
		/* The registry's own schema (reliability-security.md 4.1): never a namespace. */
		rpc_errorf(c, 400, "INVALID_REQUEST", "namespace ID '%s' is reserved", id);
		return;
	}
	if (forbidden(c))
		return;
	if (!c->admin && !rpc_opt->test_mode) {
		forbidden(c);
		return;
	}
	if (!c->token_out[0] && tok_generate(id, c->token_out, sizeof(c->token_out)) < 0) {
		rpc_error(c, 500, "INTERNAL_ERROR", "could not generate a token");
		return;
	}
	tok_hash_hex(c->token_out, strlen(c->token_out), c->token_hash);

	/* Statements: the registry row, then every namespace migration. */
	size_t total = 2;
	for (size_t m = 0; m < sql_ns_nmigrations; m++)
		for (const char *const *s = sql_ns_migrations[m].stmts; *s; s++)
			total++;
	if (total > DB_MAX_STMTS) {
		rpc_error(c, 500, "INTERNAL_ERROR", "too many migration statements");
		return;
	}
	c->heap_st = calloc(total, sizeof(*c->heap_st));
	c->heap_sql = calloc(total, sizeof(char *));
	if (!c->heap_st || !c->heap_sql)
		goto oom;
	c->pv[0] = id;
	c->pv[1] = c->token_hash;
	snprintf(c->target_id, sizeof(c->target_id), "%s", schema);
	c->pv[2] = c->target_id;
	c->pv[3] = desc;
	c->pv[4] = rpc_num(c, 4, (int64_t)time(NULL));
	c->heap_st[nst++] = (struct db_stmt){ registry_insert_sql, 5, c->pv, 0 };
	/*
	 * Never adopt a schema that exists outside the registry (created by
	 * hand, or left behind): the namespace migrations use IF NOT EXISTS
	 * and would silently share it.  42P06 -> 400 in create_done.
	 */
	{
		char *guard;
		if (asprintf(&guard, schema_guard_fmt, schema) < 0)
			goto oom;
		c->heap_sql[c->nheap_sql++] = guard;
		c->heap_st[nst++] = (struct db_stmt){ guard, 0, NULL, 0 };
	}
	for (size_t m = 0; m < sql_ns_nmigrations; m++)
		for (const char *const *s = sql_ns_migrations[m].stmts; *s; s++) {
			char *sql = sql_render(*s, schema);
			if (!sql)
				goto oom;
			c->heap_sql[c->nheap_sql++] = sql;
			c->heap_st[nst++] = (struct db_stmt){ sql, 0, NULL, 0 };
		}
	rpc_submit(c, nst, create_done);
	return;
oom:
	rpc_error(c, 500, "INTERNAL_ERROR", "out of memory");
}

/* ---- ns.delete -------------------------------------------------------- */

static void delete_send(struct rpc_ctx *c, int with_count);

static void
delete_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	long long count = 0;
	int last = q->nstmts - 2;	/* the DELETE */

	if (db_failed(q)) {
		const char *st = db_sqlstate(q);
		if (c->phase == 1 && (strcmp(st, "42P01") == 0 || strcmp(st, "3F000") == 0)) {
			/* Registry row without its schema: drop the row alone. */
			delete_send(c, 0);
			return;
		}
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to delete namespace: %s", db_errmsg(q));
		return;
	}
	if (!q->res[last] || strcmp(PQcmdTuples(q->res[last]), "0") == 0) {
		rpc_errorf(c, 404, "NAMESPACE_NOT_FOUND", "Namespace '%s' not found", c->target_id);
		return;
	}
	if (c->phase == 1 && q->res[0] && PQntuples(q->res[0]) == 1)
		count = strtoll(PQgetvalue(q->res[0], 0, 0), NULL, 10);
	nscache_drop(c->target_id);
	nscache_note_drop();
	log_info("namespace deleted id=%s messages=%lld", c->target_id, count);
	evbuffer_add(c->out, "{\"deletedAt\":", 13);
	rpc_write_now(c->out);
	evbuffer_add_printf(c->out, ",\"messagesDeleted\":%lld,\"namespace\":", count);
	json_write_cstr(c->out, c->target_id);
	evbuffer_add(c->out, "}", 1);
	rpc_reply(c);
}

static void
delete_send(struct rpc_ctx *c, int with_count)
{
	int n = 0;
	char *drop;

	c->phase = with_count ? 1 : 2;
	if (!c->heap_sql) {
		size_t len = strlen(c->target->schema) + 48;
		c->heap_sql = calloc(1, sizeof(char *));
		drop = malloc(len);
		if (!c->heap_sql || !drop) {
			free(drop);
			rpc_error(c, 500, "INTERNAL_ERROR", "out of memory");
			return;
		}
		snprintf(drop, len, "DROP SCHEMA IF EXISTS \"%s\" CASCADE", c->target->schema);
		c->heap_sql[0] = drop;
		c->nheap_sql = 1;
	}
	c->pv[0] = c->target_id;
	if (with_count)
		c->st[n++] = (struct db_stmt){ c->target->sql[NS_SQL_COUNT], 0, NULL, 0 };
	c->st[n++] = (struct db_stmt){ c->heap_sql[0], 0, NULL, 0 };
	c->st[n++] = (struct db_stmt){ registry_delete_sql, 1, c->pv, 0 };
	c->st[n++] = (struct db_stmt){ notify_sql, 1, c->pv, 0 };
	rpc_submit(c, n, delete_done);
}

static void
delete_target(struct rpc_ctx *c)
{
	if (!c->target) {
		if (!rpc_opt->test_mode && !c->admin) {
			forbidden(c);
			return;
		}
		rpc_errorf(c, 404, "NAMESPACE_NOT_FOUND", "Namespace '%s' not found", c->target_id);
		return;
	}
	if (forbidden(c))
		return;
	if (strcmp(c->target->schema, "eventodb_store") == 0) {
		/* A row the original let in ("store"): dropping it would drop the registry. */
		rpc_errorf(c, 400, "INVALID_REQUEST", "Namespace '%s' uses the registry's schema "
		    "and cannot be deleted", c->target_id);
		return;
	}
	delete_send(c, 1);
}

void
rpc_ns_delete(struct rpc_ctx *c)
{
	const char *id;

	if (!(id = id_arg(c, "ns.delete requires 1 argument: namespace ID")))
		return;
	rpc_lookup_target(c, id, delete_target);
}

/* ---- ns.list ---------------------------------------------------------- */

static void
list_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];

	if (db_failed(q) || !r) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to list namespaces: %s", db_errmsg(q));
		return;
	}
	evbuffer_add(c->out, "[", 1);
	for (int i = 0; i < PQntuples(r); i++) {
		if (i)
			evbuffer_add(c->out, ",", 1);
		evbuffer_add(c->out, "{\"createdAt\":", 13);
		rpc_write_unix(c->out, strtoll(PQgetvalue(r, i, 2), NULL, 10));
		evbuffer_add(c->out, ",\"description\":", 15);
		json_write_cstr(c->out, PQgetvalue(r, i, 1));
		evbuffer_add_printf(c->out, ",\"messageCount\":%s,\"namespace\":",
		    PQgetisnull(r, i, 3) ? "0" : PQgetvalue(r, i, 3));
		json_write_cstr(c->out, PQgetvalue(r, i, 0));
		evbuffer_add(c->out, "}", 1);
	}
	evbuffer_add(c->out, "]", 1);
	rpc_reply(c);
}

void
rpc_ns_list(struct rpc_ctx *c)
{
	if (!c->admin && !rpc_opt->test_mode) {
		forbidden(c);
		return;
	}
	c->st[0] = (struct db_stmt){ list_sql, 0, NULL, 0 };
	rpc_submit(c, 1, list_done);
}

/* ---- ns.info ---------------------------------------------------------- */

static void
info_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *d = q->res[0], *r = q->res[1];
	const char *count = "0", *streams = "0";

	if (!d || PQresultStatus(d) != PGRES_TUPLES_OK) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to get namespace: %s", db_errmsg(q));
		return;
	}
	if (PQntuples(d) == 0) {
		rpc_errorf(c, 404, "NAMESPACE_NOT_FOUND", "Namespace '%s' not found", c->target_id);
		return;
	}
	evbuffer_add(c->out, "{\"createdAt\":", 13);
	rpc_write_unix(c->out, c->target->created_at);
	evbuffer_add(c->out, ",\"description\":", 15);
	json_write_cstr(c->out, PQgetisnull(d, 0, 0) ? "" : PQgetvalue(d, 0, 0));
	evbuffer_add(c->out, ",\"lastActivity\":", 16);
	if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		count = PQgetvalue(r, 0, 0);
		streams = PQgetvalue(r, 0, 1);
		if (PQgetisnull(r, 0, 2))
			evbuffer_add(c->out, "null", 4);
		else
			json_write_cstr(c->out, PQgetvalue(r, 0, 2));
	} else
		evbuffer_add(c->out, "null", 4);	/* counting failed: 0, as the original */
	evbuffer_add_printf(c->out, ",\"messageCount\":%s,\"namespace\":", count);
	json_write_cstr(c->out, c->target_id);
	evbuffer_add_printf(c->out, ",\"streamCount\":%s}", streams);
	rpc_reply(c);
}

static void
info_target(struct rpc_ctx *c)
{
	if (!c->target) {
		if (!rpc_opt->test_mode && !c->admin) {
			forbidden(c);
			return;
		}
		rpc_errorf(c, 404, "NAMESPACE_NOT_FOUND", "Namespace '%s' not found", c->target_id);
		return;
	}
	if (forbidden(c))
		return;
	c->pv[0] = c->target_id;
	c->st[0] = (struct db_stmt){ registry_desc_sql, 1, c->pv, 1 };
	c->st[1] = (struct db_stmt){ c->target->sql[NS_SQL_INFO], 0, NULL, 1 };
	rpc_submit(c, 2, info_done);
}

void
rpc_ns_info(struct rpc_ctx *c)
{
	const char *id;

	if (!(id = id_arg(c, "ns.info requires 1 argument: namespace ID")))
		return;
	rpc_lookup_target(c, id, info_target);
}

/* ---- ns.streams, ns.categories ----------------------------------------- */

static void
streams_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];

	if (db_failed(q) || !r) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to list streams: %s", db_errmsg(q));
		return;
	}
	evbuffer_add(c->out, "[", 1);
	for (int i = 0; i < PQntuples(r); i++) {
		if (i)
			evbuffer_add(c->out, ",", 1);
		evbuffer_add(c->out, "{\"lastActivity\":", 16);
		json_write_cstr(c->out, PQgetvalue(r, i, 2));
		evbuffer_add(c->out, ",\"stream\":", 10);
		json_write_str(c->out, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
		evbuffer_add_printf(c->out, ",\"version\":%s}", PQgetvalue(r, i, 1));
	}
	evbuffer_add(c->out, "]", 1);
	rpc_reply(c);
}

void
rpc_ns_streams(struct rpc_ctx *c)
{
	uint32_t o = 0, n;
	const char *prefix = "", *cursor = "";
	int64_t limit = 100;

	if (!c->ns) {
		rpc_error(c, 500, "BACKEND_ERROR", "Failed to list streams: namespace not found");
		return;
	}
	if (c->nargs >= 1) {
		o = rpc_arg(c, 0);
		if (json_type_of(&c->doc, o) != JSON_OBJECT) {
			rpc_invalid(c, "options must be an object");
			return;
		}
		if ((n = json_get(&c->doc, o, "prefix"))) {
			if (json_type_of(&c->doc, n) != JSON_STRING) {
				rpc_invalid(c, "prefix must be a string");
				return;
			}
			prefix = json_str(&c->doc, n, NULL);
		}
		if ((n = json_get(&c->doc, o, "cursor"))) {
			if (json_type_of(&c->doc, n) != JSON_STRING) {
				rpc_invalid(c, "cursor must be a string");
				return;
			}
			cursor = json_str(&c->doc, n, NULL);
		}
		if ((n = json_get(&c->doc, o, "limit"))) {
			if (json_type_of(&c->doc, n) != JSON_NUMBER) {
				rpc_invalid(c, "limit must be a number");
				return;
			}
			limit = json_int(&c->doc, n);
			if (limit < 1 || limit > 1000) {
				rpc_invalid(c, "limit must be between 1 and 1000");
				return;
			}
		}
	}
	c->pv[0] = prefix;
	c->pv[1] = cursor;
	c->pv[2] = rpc_num(c, 2, limit);
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_STREAMS], 3, c->pv, 1 };
	rpc_submit(c, 1, streams_done);
}

static void
categories_done(struct db_query *q)
{
	struct rpc_ctx *c = q->arg;
	PGresult *r = q->res[0];

	if (db_failed(q) || !r) {
		rpc_errorf(c, 500, "BACKEND_ERROR", "Failed to list categories: %s", db_errmsg(q));
		return;
	}
	evbuffer_add(c->out, "[", 1);
	for (int i = 0; i < PQntuples(r); i++) {
		if (i)
			evbuffer_add(c->out, ",", 1);
		evbuffer_add(c->out, "{\"category\":", 12);
		json_write_str(c->out, PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
		evbuffer_add_printf(c->out, ",\"messageCount\":%s,\"streamCount\":%s}",
		    PQgetvalue(r, i, 2), PQgetvalue(r, i, 1));
	}
	evbuffer_add(c->out, "]", 1);
	rpc_reply(c);
}

void
rpc_ns_categories(struct rpc_ctx *c)
{
	if (!c->ns) {
		rpc_error(c, 500, "BACKEND_ERROR", "Failed to list categories: namespace not found");
		return;
	}
	c->st[0] = (struct db_stmt){ c->ns->sql[NS_SQL_CATEGORIES], 0, NULL, 1 };
	rpc_submit(c, 1, categories_done);
}
