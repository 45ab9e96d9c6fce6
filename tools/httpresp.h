/*
 * httpresp.h - an incremental HTTP/1.1 response parser for the client
 * tools (evload, evcheck).
 *
 * The parser finds where one response ends in a byte buffer that grows
 * as data arrives: status line, Content-Length, chunked bodies (sizes,
 * extensions, trailers), bodies delimited by EOF, 1xx interim responses,
 * 204/304 and Connection: close.  It copies nothing and allocates
 * nothing; the caller keeps the bytes.  Chunked bodies are not decoded:
 * hresp_body() hands out the body of a Content-Length or EOF-delimited
 * response, and of a chunked one only when it is a single chunk (what
 * eventodbd sends for RPC answers).  Prefix: hresp_.
 */
#ifndef HTTPRESP_H
#define HTTPRESP_H

#include <stddef.h>
#include <stdint.h>

#define HRESP_HEAD_MAX	(64 * 1024)
#define HRESP_BODY_MAX	(256u * 1024 * 1024)	/* a larger response is refused */

/* Resumable parser state; offsets are from the response's first byte. */
struct hresp {
	int		have_head;
	int		status;
	int		chunked;
	int		until_eof;
	int		close;
	size_t		scan;		/* head: bytes already searched */
	size_t		body_start;
	size_t		end;		/* content-length: end of the response */
	size_t		chunk_pos;	/* chunked: start of the next size line */
};

/*
 * Is a complete response at the start of b (n bytes; eof: the peer has
 * closed)?  Returns its length, 0 when more bytes are needed, -1 when it
 * is malformed.  Zero *p before the first call for each response.
 */
long	hresp_parse(struct hresp *p, const char *b, size_t n, int eof);

/*
 * The body of the complete response b (len bytes, as returned by
 * hresp_parse): for chunked responses the concatenation is not built;
 * a single-chunk body is returned in place, else NULL.
 */
const char *hresp_body(const struct hresp *p, const char *b, size_t len, size_t *blen);

#endif
