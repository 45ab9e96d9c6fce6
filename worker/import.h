/*
 * import.h - POST /import: NDJSON in, Server-Sent-Events-style progress
 * out, both streamed (api.md 10, decisions.md 8).
 */
#ifndef EVENTODB_IMPORT_H
#define EVENTODB_IMPORT_H

struct http_req;

/* The handler; http.c hands it the request before the body is read. */
void imp_handle(struct http_req *req);

/* For http_set_stream_filter: 1 for requests whose body is streamed. */
int imp_wants_stream(const struct http_req *req);

#endif
