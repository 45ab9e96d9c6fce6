/*
 * sql.h - the original EventoDB PostgreSQL layout, as SQL text.
 *
 * These are the migrations of api.md section 8, written so that a
 * database created by the original Go server and one created by
 * eventodbd are identical, in both directions.  Namespace migrations are
 * templates: every "{{SCHEMA_NAME}}" is replaced by the schema name (the
 * bare identifier; the templates already put it in double quotes).
 *
 * Each migration is a NULL-terminated array of single SQL statements, so
 * the workers can send them through the extended protocol (one statement
 * per message) and the master can run them one by one.
 */
#ifndef EVENTODB_SQL_H
#define EVENTODB_SQL_H

#include <stddef.h>

struct sql_migration {
	const char	*name;		/* file name as recorded, e.g. "001_namespace_registry.sql" */
	int		 version;	/* leading number */
	const char *const *stmts;	/* NULL-terminated */
};

/* Metadata migrations (schema_migrations + eventodb_store), in order. */
extern const struct sql_migration sql_meta_migrations[];
extern const size_t sql_meta_nmigrations;

/* Namespace migrations (001_message_db.sql, 002_category_get_all.sql). */
extern const struct sql_migration sql_ns_migrations[];
extern const size_t sql_ns_nmigrations;

/*
 * Render a template for schema `schema`: returns a malloc'd string with
 * every {{SCHEMA_NAME}} replaced, or NULL on allocation failure.
 */
char *sql_render(const char *tmpl, const char *schema);

/*
 * Quote an identifier for SQL: writes "name" with embedded quotes
 * doubled into out; returns the length, or 0 if it does not fit.
 */
size_t sql_quote_ident(const char *name, char *out, size_t outcap);

#endif
