/*
 * nscache.c - namespace cache (see nscache.h).
 *
 * A small chained hash table keyed by namespace id.  Schema names come
 * from the registry; before one is put into SQL it must be a plain
 * identifier ([A-Za-z0-9_], at most 63 bytes, which is all the original
 * server's derivation can produce), and it is always double-quoted.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nscache.h"
#include "shm.h"

#define NS_MAGIC	0x4e53454eu
#define NBUCKETS	1024
#define MAX_ENTRIES	10000

const char nscache_registry_sql[] =
    "SELECT id, schema_name, token_hash, created_at FROM eventodb_store.namespaces WHERE id = $1";

static struct ns_entry *buckets[NBUCKETS];
static int nentries;

/*
 * Per-namespace statements; %1$s is the quoted schema.  Reads select the
 * columns in wire order so the response writer walks them left to right.
 * Data and metadata parameters are text cast to jsonb, so the write can
 * send them in binary form, the request's own bytes with a length: no
 * NUL-terminated copy of a 16 MiB document (jsonb's binary form would
 * need a version byte in front).
 */
static const char *const sql_tmpl[NS_SQL_N] = {
	[NS_SQL_WRITE] =
	    "SELECT w.pos, currval('%1$s.messages_global_position_seq') FROM "
	    "(SELECT %1$s.write_message($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $6) AS pos OFFSET 0) w",
	[NS_SQL_BYID] =
	    "SELECT stream_name, type, position, global_position, data = $2::text::jsonb, "
	    "metadata IS NOT DISTINCT FROM $3::text::jsonb FROM %1$s.messages WHERE id = $1::uuid",
	[NS_SQL_GET] =
	    "SELECT id, type, position, global_position, data, metadata, time "
	    "FROM %1$s.get_stream_messages($1, $2, $3, NULL)",
	[NS_SQL_GET_GPOS] =
	    "SELECT id, type, position, global_position, data, metadata, time "
	    "FROM %1$s.messages WHERE stream_name = $1 AND global_position >= $2 "
	    "ORDER BY position LIMIT $3",
	[NS_SQL_LAST] =
	    "SELECT id, type, position, global_position, data, metadata, time "
	    "FROM %1$s.get_last_stream_message($1, $2)",
	[NS_SQL_VERSION] =
	    "SELECT %1$s.stream_version($1)",
	[NS_SQL_CATEGORY] =
	    "SELECT id, stream_name, type, position, global_position, data, metadata, time "
	    "FROM %1$s.get_category_messages($1, $2, $3, $4, $5, $6, NULL)",
	[NS_SQL_STREAMS] =
	    "SELECT stream_name, max(position), "
	    "to_char(max(time), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM %1$s.messages "
	    "WHERE ($1 = '' OR stream_name LIKE $1 || '%%') "
	    "AND ($2 = '' OR stream_name COLLATE \"C\" > $2 COLLATE \"C\") "
	    "GROUP BY stream_name ORDER BY stream_name COLLATE \"C\" LIMIT $3",
	[NS_SQL_CATEGORIES] =
	    "SELECT split_part(stream_name, '-', 1) AS c, count(DISTINCT stream_name), count(*) "
	    "FROM %1$s.messages GROUP BY 1 ORDER BY split_part(stream_name, '-', 1) COLLATE \"C\"",
	[NS_SQL_INFO] =
	    "SELECT count(*), count(DISTINCT stream_name), "
	    "to_char(max(time), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM %1$s.messages",
	[NS_SQL_COUNT] =
	    "SELECT count(*) FROM %1$s.messages",
};

static unsigned
hash_id(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h % NBUCKETS;
}

static int
plain_ident(const char *s)
{
	size_t n = 0;
	for (; *s; s++, n++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return n > 0 && n < 64;
}

/*
 * Same-instance invalidation without waiting for NOTIFY.  A worker that
 * committed an ns.delete bumps ns_drops in its own slot before it
 * answers; every worker sums the slots' ns_drops before it trusts its
 * cache, and any change (a delete, or a slot reset by the master) drops
 * the whole cache.  So once ns.delete has answered, no worker of this
 * instance accepts the deleted namespace's token.  Other instances learn
 * it through NOTIFY, a few milliseconds later.
 */
static uint64_t drops_seen;

void
nscache_sync(void)
{
	struct evshm_hdr *h = shm_hdr();
	const struct evshm_slot *slots;
	uint64_t sum = 0;

	if (!h)
		return;
	slots = (const struct evshm_slot *)((const char *)h + h->slots_off);
	for (uint32_t i = 0; i < h->nslots; i++)
		sum += __atomic_load_n(&slots[i].hd.ns_drops, __ATOMIC_ACQUIRE);
	if (sum != drops_seen) {
		drops_seen = sum;
		nscache_drop(NULL);
	}
}

void
nscache_note_drop(void)
{
	struct evshm_slot *own = shm_own_slot();

	if (own)
		__atomic_add_fetch(&own->hd.ns_drops, 1, __ATOMIC_RELEASE);
}

void
nscache_init(void)
{
	memset(buckets, 0, sizeof(buckets));
	nentries = 0;
}

static void
entry_free(struct ns_entry *e)
{
	for (int i = 0; i < NS_SQL_N; i++)
		free(e->sql[i]);
	free(e->id);
	e->magic = 0;
	free(e);
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
	if (e->magic != NS_MAGIC)
		abort();
	if (--e->refs == 0)
		entry_free(e);
}

struct ns_entry *
nscache_get(const char *id)
{
	nscache_sync();
	for (struct ns_entry *e = buckets[hash_id(id)]; e; e = e->next)
		if (strcmp(e->id, id) == 0) {
			e->refs++;
			return e;
		}
	return NULL;
}

static void
unlink_entry(struct ns_entry **pp)
{
	struct ns_entry *e = *pp;
	*pp = e->next;
	e->next = NULL;
	e->cached = 0;
	nentries--;
	nscache_unref(e);
}

void
nscache_drop(const char *id)
{
	for (unsigned b = id ? hash_id(id) : 0; b < NBUCKETS; b++) {
		struct ns_entry **pp = &buckets[b];
		while (*pp) {
			if (!id || strcmp((*pp)->id, id) == 0)
				unlink_entry(pp);
			else
				pp = &(*pp)->next;
		}
		if (id)
			break;
	}
}

struct ns_entry *
nscache_put(PGresult *res, int row)
{
	const char *id = PQgetvalue(res, row, 0);
	const char *schema = PQgetvalue(res, row, 1);
	const char *hash = PQgetvalue(res, row, 2);
	struct ns_entry *e;
	char quoted[80];
	unsigned b;

	if (!plain_ident(schema) || strlen(hash) != 64) {
		log_warn("namespace \"%s\" has an unusable schema name or token hash", id);
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->magic = NS_MAGIC;
	e->refs = 1;
	e->id = strdup(id);
	snprintf(e->schema, sizeof(e->schema), "%s", schema);
	snprintf(e->token_hash, sizeof(e->token_hash), "%s", hash);
	e->created_at = strtoll(PQgetvalue(res, row, 3), NULL, 10);
	snprintf(quoted, sizeof(quoted), "\"%s\"", schema);
	for (int i = 0; i < NS_SQL_N; i++) {
		int n = snprintf(NULL, 0, sql_tmpl[i], quoted);
		e->sql[i] = malloc((size_t)n + 1);
		if (!e->sql[i]) {
			entry_free(e);
			return NULL;
		}
		snprintf(e->sql[i], (size_t)n + 1, sql_tmpl[i], quoted);
	}
	if (!e->id) {
		entry_free(e);
		return NULL;
	}

	if (nentries >= MAX_ENTRIES)
		nscache_drop(NULL);
	nscache_drop(id);
	b = hash_id(id);
	e->next = buckets[b];
	buckets[b] = e;
	e->cached = 1;
	e->refs++;	/* the table's reference */
	nentries++;
	return e;
}
