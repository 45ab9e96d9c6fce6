/*
 * import.c - POST /import (api.md 10, decisions.md 8).
 *
 *   auth --> [force: TRUNCATE ... RESTART IDENTITY] --> 200 event-stream
 *        --> read lines --> batch --> INSERT (one transaction) --> progress
 *        --> ... --> done | error
 *
 * The body is pulled from http.c a piece at a time and never held whole:
 * reading pauses while a batch is in the database, so memory stays at one
 * batch (1000 records or IMP_BATCH_BYTES, whichever comes first), one
 * line (at most IMP_LINE_MAX) and http.c's bounded body buffer, whatever
 * the size of the import.  Each batch is one multi-row INSERT with every
 * column explicit (global positions and times kept), then the sequence is
 * moved to max(current, batch max) in the same transaction, so later
 * writes continue after the imported positions.  A failing batch inserts
 * nothing; earlier batches stay committed.  Records are checked as they
 * are read, so an error names the line that caused it; a unique
 * violation is traced back to its record through PostgreSQL's detail.
 *
 * Events, one "data: <json>\n\n" each, as the original: a progress event
 * per committed batch (skipped while the client is not reading them), then
 * done, or one error.  Imported messages are not poked (api.md 10.4).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "db.h"
#include "http.h"
#include "import.h"
#include "json.h"
#include "log.h"
#include "nscache.h"
#include "rpc.h"
#include "token.h"

#define IMP_MAGIC	0x494d5054u	/* "IMPT" */
#define IMP_BATCH	1000
#define IMP_BATCH_BYTES	(4 * 1024 * 1024)
#define IMP_LINE_MAX	(1024 * 1024)	/* bufio.Scanner's limit in the original */
#define IMP_COLS	8
#define IMP_PROGRESS_HIWAT (256 * 1024)
#define NOFF		((size_t)-1)

struct imp {
	unsigned	 magic;
	struct http_req	*req;
	struct rpc_auth	 auth;
	int		 authing, busy, gone, force, final;
	uint64_t	 t0;
	long		 lines;		/* lines read */
	long long	 imported;
	/* the batch being filled */
	int		 nrec;
	char		*arena;		/* NUL-terminated parameter texts */
	size_t		 narena, caparena;
	size_t		 offs[IMP_BATCH * IMP_COLS];
	long		 recline[IMP_BATCH];
	int64_t		 recgpos[IMP_BATCH];
	int64_t		 maxgpos;
	const char	*pv[IMP_BATCH * IMP_COLS];
	/* the current line */
	char		*line;
	size_t		 linecap;
	struct json_doc	 doc;
	/* queries */
	struct db_query	 q;
	struct db_stmt	 st[2];
	char		*ins_sql, *seq_sql, *clear_sql;
	int		 ins_rows;
	const char	*seq_pv[1];
	char		 seq_nb[24];
	char		 schema[64];
};

static void body_cb(void *arg, struct evbuffer *body, int end);

static void
imp_free(struct imp *m)
{
	nscache_unref(m->auth.ns);
	db_query_reset(&m->q);
	json_doc_free(&m->doc);
	free(m->arena);
	free(m->line);
	free(m->ins_sql);
	free(m->seq_sql);
	free(m->clear_sql);
	m->magic = 0;
	free(m);
}

static void
imp_closed(void *arg)
{
	struct imp *m = arg;

	if (m->magic != IMP_MAGIC)
		abort();
	m->gone = 1;
	if (!m->busy && !m->authing)
		imp_free(m);
}

/* One "data: <json>\n\n" event. */
static void
send_event(struct imp *m, struct evbuffer *json)
{
	struct evbuffer *b = evbuffer_new();

	if (!b)
		return;
	evbuffer_add(b, "data: ", 6);
	evbuffer_add_buffer(b, json);
	evbuffer_add(b, "\n\n", 2);
	http_stream_write_buf(m->req, b);
	evbuffer_free(b);
}

static void
finish_done(struct imp *m)
{
	struct evbuffer *j = evbuffer_new();
	double el = (double)(http_now_ns() - m->t0) / 1e9;

	if (j) {
		evbuffer_add_printf(j, "{\"done\":true,\"imported\":%lld,\"elapsed\":\"%.1fs\"}",
		    m->imported, el);
		send_event(m, j);
		evbuffer_free(j);
	}
	log_info("request %llu: import of %lld messages done in %.1f s",
	    (unsigned long long)m->req->id, m->imported, el);
	http_stream_end(m->req);
	imp_free(m);
}

static void
finish_error(struct imp *m, const char *code, const char *msg, long line)
{
	struct evbuffer *j = evbuffer_new();

	if (j) {
		evbuffer_add_printf(j, "{\"error\":\"%s\",\"message\":", code);
		json_write_cstr(j, msg);
		if (line > 0)
			evbuffer_add_printf(j, ",\"line\":%ld", line);
		evbuffer_add(j, "}", 1);
		send_event(m, j);
		evbuffer_free(j);
	}
	log_info("request %llu: import stopped after %lld messages: %s at line %ld",
	    (unsigned long long)m->req->id, m->imported, code, line);
	http_stream_end(m->req);
	imp_free(m);
}

/* ---- checking a record ---------------------------------------------------- */

static int
is_leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

/*
 * Go's time.Parse(time.RFC3339, s): YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM).
 * Returns 0, or -1 with Go's kind of message in err.
 */
static int
check_time(const char *s, char *err, size_t errlen)
{
	static const char layout[] = "2006-01-02T15:04:05Z07:00";
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	static const struct { int off, n; char sep; const char *elem; } f[] = {
		{ 0, 4, '-', "2006" }, { 5, 2, '-', "01" }, { 8, 2, 'T', "02" },
		{ 11, 2, ':', "15" }, { 14, 2, ':', "04" }, { 17, 2, 0, "05" },
	};
	int v[6], i;
	size_t n = strlen(s);
	const char *p;

	for (i = 0; i < 6; i++) {
		if ((size_t)(f[i].off + f[i].n) > n || digits(s + f[i].off, f[i].n, &v[i]) < 0) {
			snprintf(err, errlen, "parsing time \"%s\" as \"%s\": cannot parse \"%s\" as \"%s\"",
			    s, layout, (size_t)f[i].off <= n ? s + f[i].off : "", f[i].elem);
			return -1;
		}
		if (f[i].sep && ((size_t)(f[i].off + f[i].n) >= n || s[f[i].off + f[i].n] != f[i].sep)) {
			snprintf(err, errlen, "parsing time \"%s\" as \"%s\": cannot parse \"%s\" as \"%c\"",
			    s, layout, s + f[i].off + f[i].n, f[i].sep);
			return -1;
		}
	}
	p = s + 19;
	if (*p == '.') {
		const char *q = p + 1;
		while (*q >= '0' && *q <= '9')
			q++;
		if (q == p + 1) {
			snprintf(err, errlen, "parsing time \"%s\" as \"%s\": cannot parse \"%s\" as \"Z07:00\"",
			    s, layout, p);
			return -1;
		}
		p = q;
	}
	if (*p == 'Z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) >= 6 && p[3] == ':') {
		int zh, zm;
		if (digits(p + 1, 2, &zh) < 0 || digits(p + 4, 2, &zm) < 0) {
			snprintf(err, errlen, "parsing time \"%s\" as \"%s\": cannot parse \"%s\" as \"Z07:00\"",
			    s, layout, p);
			return -1;
		}
		if (zh > 23 || zm > 59) {
			snprintf(err, errlen, "parsing time \"%s\": time zone offset out of range", s);
			return -1;
		}
		p += 6;
	} else {
		snprintf(err, errlen, "parsing time \"%s\" as \"%s\": cannot parse \"%s\" as \"Z07:00\"",
		    s, layout, p);
		return -1;
	}
	if (*p) {
		snprintf(err, errlen, "parsing time \"%s\": extra text: \"%s\"", s, p);
		return -1;
	}
	if (v[1] < 1 || v[1] > 12) {
		snprintf(err, errlen, "parsing time \"%s\": month out of range", s);
		return -1;
	}
	if (v[2] < 1 || v[2] > mdays[v[1] - 1] + (v[1] == 2 && is_leap(v[0]))) {
		snprintf(err, errlen, "parsing time \"%s\": day out of range", s);
		return -1;
	}
	if (v[3] > 23 || v[4] > 59 || v[5] > 59) {
		snprintf(err, errlen, "parsing time \"%s\": %s out of range", s,
		    v[3] > 23 ? "hour" : v[4] > 59 ? "minute" : "second");
		return -1;
	}
	return 0;
}

static const char *
jtype_name(enum json_type t)
{
	switch (t) {
	case JSON_NULL: return "null";
	case JSON_FALSE:
	case JSON_TRUE: return "bool";
	case JSON_NUMBER: return "number";
	case JSON_STRING: return "string";
	case JSON_ARRAY: return "array";
	default: return "object";
	}
}

/* An integer JSON number (no fraction, no exponent) within int64. */
static int
json_i64(const struct json_doc *d, uint32_t n, int64_t *out)
{
	size_t len, i = 0;
	const char *raw = json_raw(d, n, &len);
	uint64_t v = 0, lim;
	int neg = 0;

	if (len > 0 && raw[0] == '-') {
		neg = 1;
		i = 1;
	}
	if (i == len)
		return -1;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; i < len; i++) {
		unsigned dd;
		if (raw[i] < '0' || raw[i] > '9')
			return -1;
		dd = (unsigned)(raw[i] - '0');
		if (v > (lim - dd) / 10)
			return -1;
		v = v * 10 + dd;
	}
	*out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
	return 0;
}

/* Append a parameter text (NUL-terminated) to the arena; its offset. */
static size_t
arena_add(struct imp *m, const char *s, size_t len)
{
	size_t off = m->narena;

	if (m->narena + len + 1 > m->caparena) {
		size_t cap = m->caparena ? m->caparena : 256 * 1024;
		char *n;
		while (cap < m->narena + len + 1)
			cap *= 2;
		if (!(n = realloc(m->arena, cap)))
			return NOFF - 1;
		m->arena = n;
		m->caparena = cap;
	}
	memcpy(m->arena + off, s, len);
	m->arena[off + len] = '\0';
	m->narena += len + 1;
	return off;
}

/*
 * Decode and check one line (api.md 10.2); pure: no I/O, no batch state.
 * Returns 1 for a blank line, 0 with *rec filled (pointers into the line
 * and the document), or -1 with the error code and message.
 */
int
imp_decode_line(struct json_doc *d, const char *line, size_t len, long ln,
    struct imp_rec *rec, const char **code, char *msg, size_t msglen)
{
	static const struct { const char *key; int col; } cols[] = {
		{ "id", 0 }, { "stream", 1 }, { "type", 2 }, { "pos", 3 }, { "gpos", 4 },
		{ "data", 5 }, { "meta", 6 }, { "time", 7 },
	};
	static const char *const gotype[] = {
		"string", "string", "string", "int64", "int64",
		"map[string]interface {}", "map[string]interface {}", "string",
	};
	char terr[400];
	const char *idtxt = "";
	uint32_t node[IMP_COLS] = { 0 };
	size_t i;

	memset(rec, 0, sizeof(*rec));
	rec->stream = rec->type = rec->time = "";
	if (len > 0 && line[len - 1] == '\r')
		len--;
	for (i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n' &&
		    line[i] != '\f' && line[i] != '\v')
			break;
	if (i == len)
		return 1;	/* blank: skipped, still counted */

	*code = "INVALID_JSON";
	if (json_parse(d, line, len) < 0) {
		snprintf(msg, msglen, "malformed JSON at line %ld: %s", ln, d->err);
		return -1;
	}
	if (json_type_of(d, 0) != JSON_OBJECT && json_type_of(d, 0) != JSON_NULL) {
		snprintf(msg, msglen,
		    "malformed JSON at line %ld: json: cannot unmarshal %s into Go value of type Record",
		    ln, jtype_name(json_type_of(d, 0)));
		return -1;
	}
	for (i = 0; i < IMP_COLS && json_type_of(d, 0) == JSON_OBJECT; i++) {
		uint32_t n = json_get(d, 0, cols[i].key);
		enum json_type t;
		int ok;

		if (!n || (t = json_type_of(d, n)) == JSON_NULL)
			continue;	/* absent or null: the zero value, as Go */
		switch (cols[i].col) {
		case 3:
		case 4:
			ok = t == JSON_NUMBER &&
			    json_i64(d, n, cols[i].col == 3 ? &rec->pos : &rec->gpos) == 0;
			break;
		case 5:
		case 6:
			ok = t == JSON_OBJECT;
			break;
		default:
			ok = t == JSON_STRING;
		}
		if (!ok) {
			size_t rl;
			const char *raw = json_raw(d, n, &rl);
			if (t == JSON_NUMBER)
				snprintf(msg, msglen, "malformed JSON at line %ld: json: cannot "
				    "unmarshal number %.*s into Go struct field Record.%s of type %s",
				    ln, (int)(rl > 64 ? 64 : rl), raw, cols[i].key, gotype[i]);
			else
				snprintf(msg, msglen, "malformed JSON at line %ld: json: cannot "
				    "unmarshal %s into Go struct field Record.%s of type %s", ln,
				    jtype_name(t), cols[i].key, gotype[i]);
			return -1;
		}
		node[cols[i].col] = n;
	}
	if (node[7])
		rec->time = json_str(d, node[7], NULL);
	if (check_time(rec->time, terr, sizeof(terr)) < 0) {
		*code = "INVALID_RECORD";
		snprintf(msg, msglen, "invalid record at line %ld: invalid time format: %s", ln, terr);
		return -1;
	}
	*code = "IMPORT_FAILED";
	if (node[0])
		idtxt = json_str(d, node[0], NULL);
	if (tok_uuid_canon(idtxt, strlen(idtxt), rec->id) < 0) {
		snprintf(msg, msglen, "invalid input syntax for type uuid: \"%.100s\"", idtxt);
		return -1;
	}
	if (rec->gpos < 1) {
		snprintf(msg, msglen, "global position must be at least 1, got %lld",
		    (long long)rec->gpos);
		return -1;
	}
	if (node[1])
		rec->stream = json_str(d, node[1], &rec->stream_len);
	if (node[2])
		rec->type = json_str(d, node[2], &rec->type_len);
	if (node[5])
		rec->data = json_raw(d, node[5], &rec->data_len);
	if (node[6])
		rec->meta = json_raw(d, node[6], &rec->meta_len);
	return 0;
}

/*
 * Check one line and add it to the batch.  Returns 0, or -1 after the
 * error event was sent (m is freed then).
 */
static int
take_line(struct imp *m, char *line, size_t len)
{
	struct imp_rec rec;
	const char *code = "";
	char msg[600], nb[24];
	size_t *off = &m->offs[m->nrec * IMP_COLS];
	long ln = m->lines;
	size_t i;
	int r;

	r = imp_decode_line(&m->doc, line, len, ln, &rec, &code, msg, sizeof(msg));
	if (r > 0)
		return 0;
	if (r < 0) {
		finish_error(m, code, msg, ln);
		return -1;
	}
	off[0] = arena_add(m, rec.id, 36);
	off[1] = arena_add(m, rec.stream, rec.stream_len);
	off[2] = arena_add(m, rec.type, rec.type_len);
	snprintf(nb, sizeof(nb), "%lld", (long long)rec.pos);
	off[3] = arena_add(m, nb, strlen(nb));
	snprintf(nb, sizeof(nb), "%lld", (long long)rec.gpos);
	off[4] = arena_add(m, nb, strlen(nb));
	off[5] = rec.data ? arena_add(m, rec.data, rec.data_len) : NOFF;
	off[6] = rec.meta ? arena_add(m, rec.meta, rec.meta_len) : NOFF;
	off[7] = arena_add(m, rec.time, strlen(rec.time));
	for (i = 0; i < IMP_COLS; i++)
		if (off[i] == NOFF - 1) {
			finish_error(m, "IMPORT_FAILED", "out of memory", ln);
			return -1;
		}
	m->recline[m->nrec] = ln;
	m->recgpos[m->nrec] = rec.gpos;
	if (m->nrec == 0 || rec.gpos > m->maxgpos)
		m->maxgpos = rec.gpos;
	m->nrec++;
	return 0;
}

/* ---- batches ----------------------------------------------------------------- */

/* The record a unique violation is about, from PostgreSQL's detail. */
static int
conflict_record(struct imp *m, const char *constraint, const char *detail)
{
	const char *v = detail ? strstr(detail, ")=(") : NULL;
	const char *e;
	char val[512];
	size_t len;

	if (!v)
		return -1;
	v += 3;
	e = strstr(v, ") already exists");
	if (!e || (len = (size_t)(e - v)) >= sizeof(val))
		return -1;
	memcpy(val, v, len);
	val[len] = '\0';
	for (int r = m->nrec - 1; r >= 0; r--) {
		const size_t *off = &m->offs[r * IMP_COLS];
		if (strcmp(constraint, "messages_id") == 0) {
			if (strcmp(m->arena + off[0], val) == 0)
				return r;
		} else if (strcmp(constraint, "messages_stream") == 0) {
			/* "(stream, position)": the position follows the last ", ". */
			char *sep = strrchr(val, ',');
			if (sep && sep[1] == ' ' && strcmp(sep + 2, m->arena + off[3]) == 0 &&
			    strlen(m->arena + off[1]) == (size_t)(sep - val) &&
			    memcmp(m->arena + off[1], val, (size_t)(sep - val)) == 0)
				return r;
		} else if (strcmp(m->arena + off[4], val) == 0)
			return r;
	}
	return -1;
}

static void
batch_done(struct db_query *q)
{
	struct imp *m = q->arg;
	int n = m->nrec;

	m->busy = 0;
	if (m->gone) {
		imp_free(m);
		return;
	}
	if (db_failed(q)) {
		char msg[600];
		long line = m->recline[n - 1];
		int64_t gpos = m->recgpos[n - 1];

		if (strcmp(db_sqlstate(q), "23505") == 0) {
			int r = q->err ? conflict_record(m, db_constraint(q),
			    PQresultErrorField(q->err, PG_DIAG_MESSAGE_DETAIL)) : -1;
			if (r >= 0) {
				line = m->recline[r];
				gpos = m->recgpos[r];
			}
			snprintf(msg, sizeof(msg), "global position already exists: %lld",
			    (long long)gpos);
			db_query_reset(q);
			finish_error(m, "POSITION_EXISTS", msg, line);
			return;
		}
		snprintf(msg, sizeof(msg), "%s", db_errmsg(q));
		db_query_reset(q);
		finish_error(m, "IMPORT_FAILED", msg, line);
		return;
	}
	db_query_reset(q);
	m->imported += n;
	if (m->final) {
		finish_done(m);
		return;
	}
	/* Progress, unless the client is not reading them (the next one counts all). */
	if (http_stream_pending(m->req) < IMP_PROGRESS_HIWAT) {
		struct evbuffer *j = evbuffer_new();
		if (j) {
			evbuffer_add_printf(j, "{\"imported\":%lld,\"gpos\":%lld}", m->imported,
			    (long long)m->recgpos[n - 1]);
			send_event(m, j);
			evbuffer_free(j);
		}
	}
	m->nrec = 0;
	m->narena = 0;
	http_body_pause(m->req, 0);
}

static int
build_insert(struct imp *m, int rows)
{
	struct evbuffer *b;
	size_t len;

	if (m->ins_sql && m->ins_rows == rows)
		return 0;
	if (!(b = evbuffer_new()))
		return -1;
	evbuffer_add_printf(b, "INSERT INTO \"%s\".messages (id, stream_name, type, position, "
	    "global_position, data, metadata, time) VALUES ", m->schema);
	for (int r = 0; r < rows; r++) {
		int p = r * IMP_COLS;
		evbuffer_add_printf(b, "%s($%d::uuid,$%d,$%d,$%d::bigint,$%d::bigint,$%d::jsonb,"
		    "$%d::jsonb,($%d::timestamptz AT TIME ZONE 'UTC'))", r ? "," : "", p + 1, p + 2,
		    p + 3, p + 4, p + 5, p + 6, p + 7, p + 8);
	}
	len = evbuffer_get_length(b);
	free(m->ins_sql);
	m->ins_sql = malloc(len + 1);
	if (m->ins_sql) {
		evbuffer_remove(b, m->ins_sql, len);
		m->ins_sql[len] = '\0';
		m->ins_rows = rows;
	}
	evbuffer_free(b);
	return m->ins_sql ? 0 : -1;
}

static void
submit_batch(struct imp *m, int final)
{
	int n = m->nrec;

	if (build_insert(m, n) < 0) {
		finish_error(m, "IMPORT_FAILED", "out of memory", m->recline[n - 1]);
		return;
	}
	for (int i = 0; i < n * IMP_COLS; i++)
		m->pv[i] = m->offs[i] == NOFF ? NULL : m->arena + m->offs[i];
	snprintf(m->seq_nb, sizeof(m->seq_nb), "%lld", (long long)m->maxgpos);
	m->seq_pv[0] = m->seq_nb;
	/* Full batches share one prepared statement per connection and namespace. */
	m->st[0] = (struct db_stmt){ m->ins_sql, n * IMP_COLS, m->pv, n == IMP_BATCH };
	m->st[1] = (struct db_stmt){ m->seq_sql, 1, m->seq_pv, 0 };
	m->q.stmts = m->st;
	m->q.nstmts = 2;
	m->q.cb = batch_done;
	m->q.arg = m;
	m->q.t_submit = http_now_ns();
	m->final = final;
	m->busy = 1;
	http_body_pause(m->req, 1);
	db_submit(&m->q);
}

/* ---- the body ----------------------------------------------------------------- */

/* Take the next len bytes of body as line number m->lines + 1. */
static int
next_line(struct imp *m, struct evbuffer *body, size_t len, size_t eol)
{
	if (len + 1 > m->linecap) {
		size_t cap = m->linecap ? m->linecap : 4096;
		char *n;
		while (cap < len + 1)
			cap *= 2;
		if (!(n = realloc(m->line, cap))) {
			finish_error(m, "READ_ERROR", "error reading input: out of memory", m->lines + 1);
			return -1;
		}
		m->line = n;
		m->linecap = cap;
	}
	evbuffer_remove(body, m->line, len);
	evbuffer_drain(body, eol);
	m->line[len] = '\0';
	m->lines++;
	return take_line(m, m->line, len);
}

static void
body_cb(void *arg, struct evbuffer *body, int end)
{
	struct imp *m = arg;

	if (m->busy)
		return;
	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(body, "\n", 1, NULL);
		size_t have = evbuffer_get_length(body);

		if (p.pos < 0 && !(end && have > 0)) {
			if (have > IMP_LINE_MAX) {
				finish_error(m, "READ_ERROR",
				    "error reading input: bufio.Scanner: token too long", m->lines + 1);
				return;
			}
			break;
		}
		if ((p.pos >= 0 ? (size_t)p.pos : have) > IMP_LINE_MAX) {
			finish_error(m, "READ_ERROR",
			    "error reading input: bufio.Scanner: token too long", m->lines + 1);
			return;
		}
		if (next_line(m, body, p.pos >= 0 ? (size_t)p.pos : have, p.pos >= 0 ? 1 : 0) < 0)
			return;
		if (m->nrec == IMP_BATCH || m->narena >= IMP_BATCH_BYTES) {
			submit_batch(m, 0);
			return;
		}
	}
	if (!end)
		return;
	if (m->nrec > 0)
		submit_batch(m, 1);
	else
		finish_done(m);
}

/* ---- start ---------------------------------------------------------------------- */

static void
begin(struct imp *m)
{
	m->t0 = http_now_ns();
	http_stream_begin(m->req, 200, "text/event-stream",
	    "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
	http_body_start(m->req, body_cb, m);
}

static void
clear_done(struct db_query *q)
{
	struct imp *m = q->arg;

	m->busy = 0;
	if (m->gone) {
		imp_free(m);
		return;
	}
	if (db_failed(q)) {
		char msg[600];
		snprintf(msg, sizeof(msg), "%s", db_errmsg(q));
		db_query_reset(q);
		http_respond_error(m->req, 500, "CLEAR_FAILED", msg);
		imp_free(m);
		return;
	}
	db_query_reset(q);
	log_info("request %llu: namespace \"%s\" cleared for import", (unsigned long long)m->req->id,
	    m->auth.ns_id);
	begin(m);
}

static void
auth_done(struct rpc_auth *a)
{
	struct imp *m = a->arg;

	m->authing = 0;
	if (m->gone) {
		imp_free(m);
		return;
	}
	if (a->status) {
		rpc_auth_respond(m->req, a);
		imp_free(m);
		return;
	}
	if (!a->ns) {
		http_respond_error(m->req, 500, "BACKEND_ERROR", "Failed to import: namespace not found");
		imp_free(m);
		return;
	}
	snprintf(m->schema, sizeof(m->schema), "%s", a->ns->schema);
	if (asprintf(&m->seq_sql, "SELECT setval('\"%1$s\".messages_global_position_seq', $1::bigint) "
	    "FROM \"%1$s\".messages_global_position_seq "
	    "WHERE $1::bigint > CASE WHEN is_called THEN last_value ELSE last_value - 1 END",
	    m->schema) < 0) {
		m->seq_sql = NULL;
		http_respond_error(m->req, 503, "INTERNAL_ERROR", "out of memory");
		imp_free(m);
		return;
	}
	if (!m->force) {
		begin(m);
		return;
	}
	if (asprintf(&m->clear_sql, "TRUNCATE \"%s\".messages RESTART IDENTITY", m->schema) < 0) {
		m->clear_sql = NULL;
		http_respond_error(m->req, 503, "INTERNAL_ERROR", "out of memory");
		imp_free(m);
		return;
	}
	m->st[0] = (struct db_stmt){ m->clear_sql, 0, NULL, 0 };
	m->q.stmts = m->st;
	m->q.nstmts = 1;
	m->q.cb = clear_done;
	m->q.arg = m;
	m->q.t_submit = http_now_ns();
	m->busy = 1;
	db_submit(&m->q);
}

int
imp_wants_stream(const struct http_req *req)
{
	return strcmp(req->path, "/import") == 0;
}

void
imp_handle(struct http_req *req)
{
	struct imp *m;
	char force[8];

	if (req->method == HTTP_HEAD) {
		http_respond_error(req, 405, "INVALID_REQUEST", "Only POST method allowed");
		return;
	}
	if (!(m = calloc(1, sizeof(*m)))) {
		http_respond_error(req, 503, "INTERNAL_ERROR", "out of memory");
		return;
	}
	m->magic = IMP_MAGIC;
	m->req = req;
	json_doc_init(&m->doc);
	/* a line's columns are at depth 1; data and metadata go on as raw text */
	m->doc.keep_depth = 2;
	m->force = http_query_get(req, "force", force, sizeof(force)) > 0 &&
	    strcmp(force, "true") == 0;
	http_set_close_cb(req, imp_closed, m);
	m->authing = 1;
	rpc_auth(req, &m->auth, auth_done, m);	/* m may be gone when this returns */
}
