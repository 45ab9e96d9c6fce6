/*
 * import.h - POST /import: NDJSON in, Server-Sent-Events-style progress
 * out, both streamed (api.md 10, decisions.md 8).
 */
#ifndef EVENTODB_IMPORT_H
#define EVENTODB_IMPORT_H

#include <stddef.h>
#include <stdint.h>

struct http_req;
struct json_doc;

/* One decoded /import line (api.md 10.2). */
struct imp_rec {
	char		 id[37];	/* canonical UUID */
	const char	*stream, *type, *time;	/* decoded, NUL-terminated ("" if absent) */
	size_t		 stream_len, type_len;
	int64_t		 pos, gpos;
	const char	*data, *meta;	/* raw JSON text of the objects, or NULL */
	size_t		 data_len, meta_len;
};

/*
 * Decode and check one line with `doc` (pure: no I/O; t/fuzz/fuzz_import.c).
 * Returns 1 for a blank line, 0 with *rec filled (pointing into line and
 * doc), or -1 with the error code (INVALID_JSON, INVALID_RECORD,
 * IMPORT_FAILED) in *code and the message, which names line `lineno`.
 */
int imp_decode_line(struct json_doc *doc, const char *line, size_t len, long lineno,
    struct imp_rec *rec, const char **code, char *msg, size_t msglen);

/* The handler; http.c hands it the request before the body is read. */
void imp_handle(struct http_req *req);

/* For http_set_stream_filter: 1 for requests whose body is streamed. */
int imp_wants_stream(const struct http_req *req);

#endif
