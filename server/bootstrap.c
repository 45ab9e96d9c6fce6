/*
 * bootstrap.c - start-up database work in the master (api.md 8.1, 8.7,
 * 4.6; decisions.md 3).
 *
 * Runs once, before any worker exists, with a plain blocking libpq
 * connection: metadata migrations, namespace migrations for every
 * existing namespace, then the default namespace.  A session advisory
 * lock serialises two instances starting on one database at once.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bootstrap.h"
#include "log.h"
#include "sql.h"
#include "token.h"

#define BOOT_LOCK_KEY "7340210918563841"	/* arbitrary, stable */

static int
exec_ok(PGconn *pg, const char *sql, char *err, size_t errlen)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(r);
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok)
		snprintf(err, errlen, "%s", PQerrorMessage(pg));
	PQclear(r);
	return ok ? 0 : -1;
}

static int
exec_params(PGconn *pg, const char *sql, int n, const char *const *vals, char *err,
    size_t errlen)
{
	PGresult *r = PQexecParams(pg, sql, n, NULL, vals, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok)
		snprintf(err, errlen, "%s", PQerrorMessage(pg));
	PQclear(r);
	return ok ? 0 : -1;
}

/* Strip the trailing newline libpq puts on error messages. */
static void
chomp(char *s)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
		s[--n] = '\0';
}

static int
run_stmts(PGconn *pg, const char *const *stmts, const char *schema, char *err, size_t errlen)
{
	for (const char *const *s = stmts; *s; s++) {
		char *sql = schema ? sql_render(*s, schema) : strdup(*s);
		int rc;
		if (!sql) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		rc = exec_ok(pg, sql, err, errlen);
		free(sql);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int
meta_migrations(PGconn *pg, char *err, size_t errlen)
{
	if (exec_ok(pg,
	    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT)",
	    err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < sql_meta_nmigrations; i++) {
		const struct sql_migration *m = &sql_meta_migrations[i];
		const char *v[1] = { m->name };
		PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1",
		    1, NULL, v, NULL, NULL, 0);
		int done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0;
		PQclear(r);
		if (done)
			continue;
		if (exec_ok(pg, "BEGIN", err, errlen) < 0 ||
		    run_stmts(pg, m->stmts, NULL, err, errlen) < 0 ||
		    exec_params(pg, "INSERT INTO schema_migrations (version, applied_at) "
		    "VALUES ($1, extract(epoch from now())::bigint)", 1, v, err, errlen) < 0 ||
		    exec_ok(pg, "COMMIT", err, errlen) < 0) {
			PQclear(PQexec(pg, "ROLLBACK"));
			return -1;
		}
		log_info("applied metadata migration %s", m->name);
	}
	return 0;
}

static int
ns_current_version(PGconn *pg, const char *schema)
{
	char sql[256];
	PGresult *r;
	int v = 0;

	snprintf(sql, sizeof(sql),
	    "SELECT CASE WHEN to_regclass('\"%s\"._schema_version') IS NULL THEN 0 "
	    "ELSE (SELECT coalesce(max(version), 0) FROM \"%s\"._schema_version) END",
	    schema, schema);
	r = PQexec(pg, sql);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		v = atoi(PQgetvalue(r, 0, 0));
	else
		v = -1;
	PQclear(r);
	return v;
}

static int
plain_ident(const char *s)
{
	size_t n = 0;
	for (; *s; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return n > 0 && n < 64;
}

static int
ns_migrations(PGconn *pg, char *err, size_t errlen)
{
	PGresult *r = PQexec(pg,
	    "SELECT id, schema_name FROM eventodb_store.namespaces ORDER BY created_at DESC");
	int applied = 0;

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQerrorMessage(pg));
		PQclear(r);
		return -1;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		const char *schema = PQgetvalue(r, i, 1);
		int cur;

		if (!plain_ident(schema)) {
			log_warn("namespace \"%s\": schema name is not a plain identifier; skipped",
			    PQgetvalue(r, i, 0));
			continue;
		}
		cur = ns_current_version(pg, schema);
		if (cur < 0) {
			snprintf(err, errlen, "%s", PQerrorMessage(pg));
			PQclear(r);
			return -1;
		}
		for (size_t m = 0; m < sql_ns_nmigrations; m++) {
			if (sql_ns_migrations[m].version <= cur)
				continue;
			if (exec_ok(pg, "BEGIN", err, errlen) < 0 ||
			    run_stmts(pg, sql_ns_migrations[m].stmts, schema, err, errlen) < 0 ||
			    exec_ok(pg, "COMMIT", err, errlen) < 0) {
				PQclear(PQexec(pg, "ROLLBACK"));
				PQclear(r);
				return -1;
			}
			applied++;
		}
	}
	PQclear(r);
	if (applied)
		log_info("applied %d namespace migrations", applied);
	return 0;
}

static int
create_namespace(PGconn *pg, const char *id, const char *token, const char *desc, char *err,
    size_t errlen)
{
	char hash[65], schema[128], now[24];
	const char *v[5];

	tok_hash_hex(token, strlen(token), hash);
	tok_schema_name(id, schema, sizeof(schema));
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	v[0] = id;
	v[1] = hash;
	v[2] = schema;
	v[3] = desc;
	v[4] = now;
	if (exec_ok(pg, "BEGIN", err, errlen) < 0)
		return -1;
	for (size_t m = 0; m < sql_ns_nmigrations; m++)
		if (run_stmts(pg, sql_ns_migrations[m].stmts, schema, err, errlen) < 0)
			goto fail;
	if (exec_params(pg, "INSERT INTO eventodb_store.namespaces "
	    "(id, token_hash, schema_name, description, created_at, metadata) "
	    "VALUES ($1, $2, $3, $4, $5, '{}')", 5, v, err, errlen) < 0 ||
	    exec_ok(pg, "COMMIT", err, errlen) < 0)
		goto fail;
	return 0;
fail:
	PQclear(PQexec(pg, "ROLLBACK"));
	return -1;
}

static int
default_namespace(PGconn *pg, const struct boot_opts *o, char *err, size_t errlen)
{
	const char *v[1] = { "default" };
	char ns[256], perr[256], token[TOK_MAX];
	PGresult *r;
	int exists;

	if (o->token && o->token[0]) {
		if (tok_parse(o->token, strlen(o->token), ns, sizeof(ns), perr, sizeof(perr)) < 0) {
			snprintf(err, errlen, "%s", perr);
			return -1;
		}
		if (strcmp(ns, "default") != 0) {
			snprintf(err, errlen, "provided token is for namespace '%s', expected 'default'", ns);
			return -1;
		}
	}
	r = PQexecParams(pg, "SELECT token_hash FROM eventodb_store.namespaces WHERE id = $1",
	    1, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		snprintf(err, errlen, "%s", PQerrorMessage(pg));
		PQclear(r);
		return -1;
	}
	exists = PQntuples(r) > 0;
	if (exists) {
		if (o->token && o->token[0]) {
			char hash[65];
			tok_hash_hex(o->token, strlen(o->token), hash);
			if (!tok_equal_ct(hash, PQgetvalue(r, 0, 0), 64)) {
				PQclear(r);
				if (o->test_mode) {
					log_warn("--token does not match the stored token of namespace "
					    "'default'; test mode does not check tokens");
					return 0;
				}
				snprintf(err, errlen, "--token does not match the token stored for "
				    "namespace 'default' (the token it was created with is still the "
				    "admin token; start without --token or with that token)");
				return -1;
			}
		} else
			log_info("namespace 'default' exists; its existing token remains the admin token");
		PQclear(r);
		return 0;
	}
	PQclear(r);
	if (o->token && o->token[0])
		snprintf(token, sizeof(token), "%s", o->token);
	else if (tok_generate("default", token, sizeof(token)) < 0) {
		snprintf(err, errlen, "could not generate a token");
		return -1;
	}
	if (create_namespace(pg, "default", token, "Default namespace", err, errlen) < 0)
		return -1;
	log_info("created namespace 'default'");
	if (!(o->token && o->token[0])) {
		/* Shown once, on stdout, never through the logger. */
		printf("DEFAULT NAMESPACE TOKEN (admin token, shown once):\n%s\n", token);
		fflush(stdout);
	}
	return 0;
}

/*
 * What a production server should not run with (reliability-security.md
 * 1.4, 4.1): PostgreSQL without fsync, commits acknowledged before they
 * are durable, a superuser role.  Warned about once at start-up, outside
 * test mode (whose private cluster runs without fsync on purpose); the
 * connection has the same settings as the workers' (same conninfo).
 */
static void
settings_check(PGconn *pg, const struct boot_opts *o)
{
	PGresult *r;

	if (o->test_mode)
		return;
	r = PQexec(pg, "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
	    "coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), current_user");
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		if (strcmp(PQgetvalue(r, 0, 0), "on") != 0)
			log_warn("PostgreSQL runs with fsync=%s: an operating system crash or power loss "
			    "can lose acknowledged writes or corrupt the database", PQgetvalue(r, 0, 0));
		if (strcmp(PQgetvalue(r, 0, 1), "off") == 0)
			log_warn("PostgreSQL synchronous_commit=off for role \"%s\": writes acknowledged "
			    "just before a PostgreSQL crash can be lost", PQgetvalue(r, 0, 3));
		if (strcmp(PQgetvalue(r, 0, 2), "t") == 0)
			log_warn("database role \"%s\" is a superuser: run eventodbd with a role that only "
			    "owns its database", PQgetvalue(r, 0, 3));
	} else
		log_warn("could not check the PostgreSQL settings: %s", PQerrorMessage(pg));
	PQclear(r);
}

int
srv_bootstrap(const char *conninfo, const struct boot_opts *o, char *err, size_t errlen)
{
	static const char *const keys[] = { "dbname", "options", "client_encoding",
	    "application_name", "connect_timeout", NULL };
	const char *vals[] = { conninfo, "-c DateStyle=ISO -c TimeZone=UTC", "UTF8",
	    "eventodbd", "10", NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);
	int rc = -1;

	err[0] = '\0';
	if (PQstatus(pg) != CONNECTION_OK) {
		snprintf(err, errlen, "could not connect to PostgreSQL: %s", PQerrorMessage(pg));
		chomp(err);
		PQfinish(pg);
		return -1;
	}
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	settings_check(pg, o);
	if (exec_ok(pg, "SELECT pg_advisory_lock(" BOOT_LOCK_KEY ")", err, errlen) < 0)
		goto out;
	if (meta_migrations(pg, err, errlen) < 0 ||
	    ns_migrations(pg, err, errlen) < 0 ||
	    default_namespace(pg, o, err, errlen) < 0)
		goto out;
	rc = 0;
out:
	chomp(err);
	PQfinish(pg);	/* also releases the advisory lock */
	return rc;
}
