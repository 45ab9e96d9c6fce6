/*
 * sql.c - the original EventoDB PostgreSQL layout, as SQL text.
 *
 * The migrations of api.md section 8, one statement per array element,
 * so a database created by the original Go server and one created by
 * eventodbd are interchangeable.  What must match the original exactly,
 * because CREATE OR REPLACE and IF NOT EXISTS from either server meet the
 * other's objects: schema, table, column, index and function names,
 * column types and order, function parameter names, types and defaults,
 * and return types.  Function bodies only have to give the same results.
 *
 * Namespace templates write the schema as "{{SCHEMA_NAME}}" (always inside
 * double quotes); sql_render substitutes it.  Every object is schema-
 * qualified, including calls between the functions, so nothing depends on
 * search_path.
 *
 * Bodies are PL/pgSQL.  Queries inside functions that return TABLE(...)
 * qualify every column with an alias, because the OUT columns (id,
 * stream_name, ...) are PL/pgSQL variables too.  The category filter is
 * written as split_part(stream_name, '-', 1), the expression the
 * messages_category index is built on, so the index is usable; it is the
 * same value as category(stream_name).
 */
#include <stdlib.h>
#include <string.h>

#include "sql.h"

/* ------------------------------------------------------------------ */
/* Metadata: 001_namespace_registry.sql                               */

static const char *const meta_001[] = {
	"CREATE SCHEMA IF NOT EXISTS eventodb_store",

	"CREATE TABLE IF NOT EXISTS eventodb_store.namespaces (\n"
	"    id TEXT PRIMARY KEY,\n"
	"    token_hash TEXT NOT NULL UNIQUE,\n"
	"    schema_name TEXT NOT NULL UNIQUE,\n"
	"    description TEXT,\n"
	"    created_at BIGINT NOT NULL,\n"
	"    metadata JSONB DEFAULT '{}'\n"
	")",

	"CREATE INDEX IF NOT EXISTS idx_namespaces_token_hash\n"
	"    ON eventodb_store.namespaces (token_hash)",

	NULL
};

const struct sql_migration sql_meta_migrations[] = {
	{ "001_namespace_registry.sql", 1, meta_001 },
};
const size_t sql_meta_nmigrations =
    sizeof(sql_meta_migrations) / sizeof(sql_meta_migrations[0]);

/* ------------------------------------------------------------------ */
/* Namespace: 001_message_db.sql                                      */

#define S "\"{{SCHEMA_NAME}}\""

/* The row shape returned by the three read functions. */
#define MSG_TABLE \
	"TABLE (\n" \
	"    id UUID,\n" \
	"    stream_name VARCHAR,\n" \
	"    type VARCHAR,\n" \
	"    \"position\" BIGINT,\n" \
	"    global_position BIGINT,\n" \
	"    data JSONB,\n" \
	"    metadata JSONB,\n" \
	"    \"time\" TIMESTAMP WITHOUT TIME ZONE\n" \
	")"

#define MSG_COLS \
	"m.id, m.stream_name, m.type, m.position, m.global_position,\n" \
	"           m.data, m.metadata, m.time"

/* LIMIT rule of api.md 7.5: -1 unlimited, 0 no rows, < -1 an error. */
#define MSG_LIMIT \
	"LIMIT CASE WHEN _batch_size = -1 THEN NULL ELSE _batch_size END"

#define CATEGORY_PARAMS \
	"    _category_name VARCHAR,\n" \
	"    _position BIGINT DEFAULT 1,\n" \
	"    _batch_size BIGINT DEFAULT 1000,\n" \
	"    _correlation VARCHAR DEFAULT NULL,\n" \
	"    _consumer_group_member BIGINT DEFAULT NULL,\n" \
	"    _consumer_group_size BIGINT DEFAULT NULL,\n" \
	"    _condition VARCHAR DEFAULT NULL\n"

/* The filters shared by both versions of get_category_messages. */
#define CATEGORY_FILTERS \
	"      AND m.global_position >= _position\n" \
	"      AND (_correlation IS NULL OR\n" \
	"           split_part(m.metadata->>'correlationStreamName', '-', 1) = _correlation)\n" \
	"      AND (_consumer_group_member IS NULL OR _consumer_group_size IS NULL OR\n" \
	"           mod(abs(" S ".hash_64(" S ".cardinal_id(m.stream_name))),\n" \
	"               _consumer_group_size) = _consumer_group_member)\n" \
	"    ORDER BY m.global_position ASC\n" \
	"    " MSG_LIMIT ";\n"

static const char *const ns_001[] = {
	"CREATE SCHEMA IF NOT EXISTS " S,

	"CREATE TABLE IF NOT EXISTS " S ".messages (\n"
	"    id UUID NOT NULL DEFAULT gen_random_uuid(),\n"
	"    stream_name VARCHAR NOT NULL,\n"
	"    type VARCHAR NOT NULL,\n"
	"    position BIGINT NOT NULL,\n"
	"    global_position BIGSERIAL NOT NULL PRIMARY KEY,\n"
	"    data JSONB,\n"
	"    metadata JSONB,\n"
	"    time TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT (now() AT TIME ZONE 'utc')\n"
	")",

	"CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON " S ".messages (id)",

	"CREATE UNIQUE INDEX IF NOT EXISTS messages_stream\n"
	"    ON " S ".messages (stream_name, position)",

	"CREATE INDEX IF NOT EXISTS messages_category ON " S ".messages (\n"
	"    split_part(stream_name, '-', 1),\n"
	"    global_position,\n"
	"    (metadata->>'correlationStreamName')\n"
	")",

	"CREATE TABLE IF NOT EXISTS " S "._schema_version (\n"
	"    version INTEGER PRIMARY KEY,\n"
	"    applied_at TIMESTAMP DEFAULT now()\n"
	")",

	"INSERT INTO " S "._schema_version (version) VALUES (1)\n"
	"    ON CONFLICT DO NOTHING",

	/* First 16 hex digits of md5 as a signed big-endian int64. */
	"CREATE OR REPLACE FUNCTION " S ".hash_64(value VARCHAR)\n"
	"RETURNS BIGINT AS $$\n"
	"BEGIN\n"
	"  RETURN left('x' || md5(hash_64.value), 17)::bit(64)::bigint;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql IMMUTABLE",

	"CREATE OR REPLACE FUNCTION " S ".category(stream_name VARCHAR)\n"
	"RETURNS VARCHAR AS $$\n"
	"BEGIN\n"
	"  RETURN split_part(category.stream_name, '-', 1);\n"
	"END;\n"
	"$$ LANGUAGE plpgsql IMMUTABLE",

	"CREATE OR REPLACE FUNCTION " S ".id(stream_name VARCHAR)\n"
	"RETURNS VARCHAR AS $$\n"
	"DECLARE\n"
	"  _separator INTEGER;\n"
	"BEGIN\n"
	"  _separator := strpos(id.stream_name, '-');\n"
	"  IF _separator = 0 THEN\n"
	"    RETURN NULL;\n"
	"  END IF;\n"
	"  RETURN substring(id.stream_name, _separator + 1);\n"
	"END;\n"
	"$$ LANGUAGE plpgsql IMMUTABLE",

	"CREATE OR REPLACE FUNCTION " S ".cardinal_id(stream_name VARCHAR)\n"
	"RETURNS VARCHAR AS $$\n"
	"DECLARE\n"
	"  _id VARCHAR;\n"
	"BEGIN\n"
	"  _id := " S ".id(cardinal_id.stream_name);\n"
	"  IF _id IS NULL THEN\n"
	"    RETURN NULL;\n"
	"  END IF;\n"
	"  RETURN split_part(_id, '+', 1);\n"
	"END;\n"
	"$$ LANGUAGE plpgsql IMMUTABLE",

	"CREATE OR REPLACE FUNCTION " S ".is_category(stream_name VARCHAR)\n"
	"RETURNS BOOLEAN AS $$\n"
	"BEGIN\n"
	"  RETURN strpos(is_category.stream_name, '-') = 0;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql IMMUTABLE",

	"CREATE OR REPLACE FUNCTION " S ".acquire_lock(stream_name VARCHAR)\n"
	"RETURNS BIGINT AS $$\n"
	"DECLARE\n"
	"  _category VARCHAR;\n"
	"  _category_name_hash BIGINT;\n"
	"BEGIN\n"
	"  _category := " S ".category(acquire_lock.stream_name);\n"
	"  _category_name_hash := " S ".hash_64(_category);\n"
	"  PERFORM pg_advisory_xact_lock(_category_name_hash);\n"
	"  RETURN _category_name_hash;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"CREATE OR REPLACE FUNCTION " S ".stream_version(_stream_name VARCHAR)\n"
	"RETURNS BIGINT AS $$\n"
	"DECLARE\n"
	"  _version BIGINT;\n"
	"BEGIN\n"
	"  SELECT coalesce(max(m.position), -1) INTO _version\n"
	"    FROM " S ".messages m\n"
	"    WHERE m.stream_name = _stream_name;\n"
	"  RETURN _version;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"CREATE OR REPLACE FUNCTION " S ".write_message(\n"
	"    _id VARCHAR,\n"
	"    _stream_name VARCHAR,\n"
	"    _type VARCHAR,\n"
	"    _data JSONB,\n"
	"    _metadata JSONB DEFAULT NULL,\n"
	"    _expected_version BIGINT DEFAULT NULL\n"
	")\n"
	"RETURNS BIGINT AS $$\n"
	"DECLARE\n"
	"  _stream_version BIGINT;\n"
	"  _next_position BIGINT;\n"
	"BEGIN\n"
	"  PERFORM " S ".acquire_lock(_stream_name);\n"
	"  _stream_version := " S ".stream_version(_stream_name);\n"
	"  IF _expected_version IS NOT NULL AND\n"
	"     _expected_version <> _stream_version THEN\n"
	"    RAISE EXCEPTION\n"
	"      'Wrong expected version: % (Stream: %, Stream Version: %)',\n"
	"      _expected_version, _stream_name, _stream_version\n"
	"      USING ERRCODE = 'P0003';\n"
	"  END IF;\n"
	"  _next_position := _stream_version + 1;\n"
	"  INSERT INTO " S ".messages\n"
	"      (id, stream_name, type, position, data, metadata)\n"
	"    VALUES\n"
	"      (_id::uuid, _stream_name, _type, _next_position, _data, _metadata);\n"
	"  RETURN _next_position;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"CREATE OR REPLACE FUNCTION " S ".get_stream_messages(\n"
	"    _stream_name VARCHAR,\n"
	"    _position BIGINT DEFAULT 0,\n"
	"    _batch_size BIGINT DEFAULT 1000,\n"
	"    _condition VARCHAR DEFAULT NULL\n"
	")\n"
	"RETURNS " MSG_TABLE " AS $$\n"
	"BEGIN\n"
	"  RETURN QUERY\n"
	"    SELECT " MSG_COLS "\n"
	"    FROM " S ".messages m\n"
	"    WHERE m.stream_name = _stream_name\n"
	"      AND m.position >= _position\n"
	"    ORDER BY m.position ASC\n"
	"    " MSG_LIMIT ";\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	/* Version 001: an empty or NULL category matches no stream with a category. */
	"CREATE OR REPLACE FUNCTION " S ".get_category_messages(\n"
	CATEGORY_PARAMS
	")\n"
	"RETURNS " MSG_TABLE " AS $$\n"
	"BEGIN\n"
	"  RETURN QUERY\n"
	"    SELECT " MSG_COLS "\n"
	"    FROM " S ".messages m\n"
	"    WHERE split_part(m.stream_name, '-', 1) = _category_name\n"
	CATEGORY_FILTERS
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"CREATE OR REPLACE FUNCTION " S ".get_last_stream_message(\n"
	"    _stream_name VARCHAR,\n"
	"    _type VARCHAR DEFAULT NULL\n"
	")\n"
	"RETURNS " MSG_TABLE " AS $$\n"
	"BEGIN\n"
	"  RETURN QUERY\n"
	"    SELECT " MSG_COLS "\n"
	"    FROM " S ".messages m\n"
	"    WHERE m.stream_name = _stream_name\n"
	"      AND (_type IS NULL OR m.type = _type)\n"
	"    ORDER BY m.position DESC\n"
	"    LIMIT 1;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	NULL
};

/* ------------------------------------------------------------------ */
/* Namespace: 002_category_get_all.sql                                */

/*
 * NULL or '' selects every message of the namespace.  Two RETURN QUERY
 * branches rather than one OR, so each keeps a plan that can use the
 * primary key or messages_category.
 */
static const char *const ns_002[] = {
	"CREATE OR REPLACE FUNCTION " S ".get_category_messages(\n"
	CATEGORY_PARAMS
	")\n"
	"RETURNS " MSG_TABLE " AS $$\n"
	"BEGIN\n"
	"  IF _category_name IS NULL OR _category_name = '' THEN\n"
	"    RETURN QUERY\n"
	"    SELECT " MSG_COLS "\n"
	"    FROM " S ".messages m\n"
	"    WHERE TRUE\n"
	CATEGORY_FILTERS
	"    RETURN;\n"
	"  END IF;\n"
	"  RETURN QUERY\n"
	"    SELECT " MSG_COLS "\n"
	"    FROM " S ".messages m\n"
	"    WHERE split_part(m.stream_name, '-', 1) = _category_name\n"
	CATEGORY_FILTERS
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"INSERT INTO " S "._schema_version (version) VALUES (2)\n"
	"    ON CONFLICT DO NOTHING",

	NULL
};

/* ------------------------------------------------------------------ */
/* Namespace: 003_write_messages.sql (eventodbd only)                 */

/*
 * write_messages applies a batch of writes in one transaction with the
 * per-write meaning of write_message (issue 8, group commit):
 *
 *   - every category lock the batch needs is taken first, in key order,
 *     so two batches can never deadlock, and held until commit, so
 *     global positions still follow commit order within a category;
 *   - each write's expected version is checked on its own, against the
 *     stream as the earlier writes of the batch left it; a mismatch
 *     skips that write only (err = 'version', actual = the version);
 *   - an id that already exists skips that write only (err = 'id'),
 *     so the caller can answer an idempotent retry;
 *   - no exception is raised for those cases, so no subtransaction is
 *     needed and one failed write never aborts the others.
 *
 * The batch is one JSON array of {"i": id, "s": stream, "t": type,
 * "d": data, "m": metadata, "e": expected version}; rows come back in
 * input order.  The original's functions and tables are untouched.
 */
static const char *const ns_003[] = {
	"CREATE OR REPLACE FUNCTION " S ".write_messages(_batch JSONB)\n"
	"RETURNS TABLE (pos BIGINT, gpos BIGINT, actual BIGINT, err TEXT) AS $$\n"
	"DECLARE\n"
	"  _k BIGINT;\n"
	"  _r RECORD;\n"
	"  _v BIGINT;\n"
	"BEGIN\n"
	"  FOR _k IN\n"
	"    SELECT DISTINCT " S ".hash_64(split_part(x.s, '-', 1))\n"
	"      FROM jsonb_to_recordset(_batch) AS x(s VARCHAR) ORDER BY 1\n"
	"  LOOP\n"
	"    PERFORM pg_advisory_xact_lock(_k);\n"
	"  END LOOP;\n"
	"  FOR _r IN\n"
	"    SELECT x.i, x.s, x.t, x.d, x.m, x.e\n"
	"      FROM ROWS FROM (jsonb_to_recordset(_batch)\n"
	"        AS (i VARCHAR, s VARCHAR, t VARCHAR, d JSONB, m JSONB, e BIGINT))\n"
	"        WITH ORDINALITY AS x(i, s, t, d, m, e, n)\n"
	"      ORDER BY x.n\n"
	"  LOOP\n"
	"    SELECT coalesce(max(mm.position), -1) INTO _v\n"
	"      FROM " S ".messages mm WHERE mm.stream_name = _r.s;\n"
	"    IF _r.e IS NOT NULL AND _r.e <> _v THEN\n"
	"      pos := NULL; gpos := NULL; actual := _v; err := 'version';\n"
	"      RETURN NEXT;\n"
	"      CONTINUE;\n"
	"    END IF;\n"
	"    INSERT INTO " S ".messages (id, stream_name, type, position, data, metadata)\n"
	"      VALUES (_r.i::uuid, _r.s, _r.t, _v + 1, _r.d,\n"
	"              CASE WHEN jsonb_typeof(_r.m) = 'null' THEN NULL ELSE _r.m END)\n"
	"      ON CONFLICT (id) DO NOTHING\n"
	"      RETURNING " S ".messages.global_position INTO gpos;\n"
	"    IF NOT FOUND THEN\n"
	"      pos := NULL; gpos := NULL; actual := _v; err := 'id';\n"
	"    ELSE\n"
	"      pos := _v + 1; actual := NULL; err := NULL;\n"
	"    END IF;\n"
	"    RETURN NEXT;\n"
	"  END LOOP;\n"
	"END;\n"
	"$$ LANGUAGE plpgsql",

	"INSERT INTO " S "._schema_version (version) VALUES (3)\n"
	"    ON CONFLICT DO NOTHING",

	NULL
};

#undef S

const struct sql_migration sql_ns_migrations[] = {
	{ "001_message_db.sql", 1, ns_001 },
	{ "002_category_get_all.sql", 2, ns_002 },
	{ "003_write_messages.sql", 3, ns_003 },
};
const size_t sql_ns_nmigrations =
    sizeof(sql_ns_migrations) / sizeof(sql_ns_migrations[0]);

/* ------------------------------------------------------------------ */
/* Rendering                                                          */

#define PLACEHOLDER	"{{SCHEMA_NAME}}"
#define PLACEHOLDER_LEN	(sizeof(PLACEHOLDER) - 1)

/*
 * The placeholder always sits inside double quotes, so a '"' in the
 * schema name is doubled to keep it one identifier.  Derived schema names
 * (api.md 8.2) never contain one; this only guards against misuse.
 */
char *
sql_render(const char *tmpl, const char *schema)
{
	size_t slen = strlen(schema), quotes = 0, count = 0, len, i;
	const char *p;
	char *out, *o;

	for (i = 0; i < slen; i++)
		if (schema[i] == '"')
			quotes++;
	for (p = tmpl; (p = strstr(p, PLACEHOLDER)) != NULL; p += PLACEHOLDER_LEN)
		count++;
	len = strlen(tmpl) - count * PLACEHOLDER_LEN + count * (slen + quotes);
	out = malloc(len + 1);
	if (out == NULL)
		return NULL;
	o = out;
	for (p = tmpl;;) {
		const char *q = strstr(p, PLACEHOLDER);

		if (q == NULL) {
			strcpy(o, p);
			break;
		}
		memcpy(o, p, (size_t)(q - p));
		o += q - p;
		for (i = 0; i < slen; i++) {
			if (schema[i] == '"')
				*o++ = '"';
			*o++ = schema[i];
		}
		p = q + PLACEHOLDER_LEN;
	}
	return out;
}

size_t
sql_quote_ident(const char *name, char *out, size_t outcap)
{
	size_t o = 0;

	if (outcap < 3)
		return 0;
	out[o++] = '"';
	for (; *name; name++) {
		if (o + (*name == '"' ? 2 : 1) + 2 > outcap)
			return 0;
		if (*name == '"')
			out[o++] = '"';
		out[o++] = *name;
	}
	out[o++] = '"';
	out[o] = '\0';
	return o;
}
