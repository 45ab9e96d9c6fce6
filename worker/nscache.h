/*
 * nscache.h - the worker's cache of namespaces and their SQL.
 *
 * decisions.md 1: namespaces and token hashes are cached in the worker so
 * a hot request costs one PostgreSQL round trip.  An entry holds the
 * registry row and the texts of the per-namespace statements, built once
 * with the schema name validated and quoted.  Entries are dropped when a
 * namespace is deleted, by this worker or any other worker or instance:
 * ns.delete sends NOTIFY eventodb_ns, every worker LISTENs, and a lost
 * LISTEN connection empties the whole cache.
 *
 * Entries are reference counted: a request keeps its entry alive while
 * its statements wait for a connection, even if the entry is dropped.
 */
#ifndef EVENTODB_NSCACHE_H
#define EVENTODB_NSCACHE_H

#include <stdint.h>

#include "db.h"

#define NS_NOTIFY_CHANNEL "eventodb_ns"

enum ns_sql {
	NS_SQL_WRITE,
	NS_SQL_BYID,
	NS_SQL_GET,
	NS_SQL_GET_GPOS,
	NS_SQL_LAST,
	NS_SQL_VERSION,
	NS_SQL_CATEGORY,
	NS_SQL_STREAMS,
	NS_SQL_CATEGORIES,
	NS_SQL_INFO,
	NS_SQL_COUNT,
	NS_SQL_N
};

struct ns_entry {
	unsigned	 magic;
	int		 refs;
	int		 cached;	/* still in the table */
	char		*id;
	char		 schema[64];
	char		 token_hash[65];
	int64_t		 created_at;
	char		*sql[NS_SQL_N];
	struct ns_entry	*next;
};

/* Registry lookup statement (one parameter: the id). */
extern const char nscache_registry_sql[];

void nscache_init(void);
/* Cached entry for id (a new reference), or NULL. */
struct ns_entry *nscache_get(const char *id);
/*
 * Build an entry from a registry row (columns id, schema_name,
 * token_hash, created_at), insert it, and return a new reference; NULL if
 * the row is unusable (schema name not a plain identifier).
 */
struct ns_entry *nscache_put(PGresult *res, int row);
void nscache_ref(struct ns_entry *e);
void nscache_unref(struct ns_entry *e);
/* Before trusting the cache: drop it if any worker deleted a namespace. */
void nscache_sync(void);
/* After committing an ns.delete, before answering. */
void nscache_note_drop(void);
/* Drop one id (NULL: everything). */
void nscache_drop(const char *id);

#endif
