/*
 * httpresp.c - the incremental HTTP/1.1 response parser shared by the
 * client tools (evload, evcheck); see httpresp.h.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "httpresp.h"

static int
parse_uint(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 18)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static int
has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i;

	for (i = 0; i + tl <= n; i++)
		if (strncasecmp(v + i, tok, tl) == 0)
			return 1;
	return 0;
}

/* Status line and headers of the response at b (hlen bytes of head). */
static int
parse_head(struct hresp *p, const char *b, size_t hlen)
{
	const char *line, *eol, *colon, *v, *end = b + hlen - 2;
	size_t nl, vl;
	int have_cl = 0, keep = 0;
	uint64_t cl = 0;

	if (hlen < 16 || memcmp(b, "HTTP/1.", 7) != 0 || b[8] != ' ' ||
	    b[9] < '1' || b[9] > '5' || b[10] < '0' || b[10] > '9' ||
	    b[11] < '0' || b[11] > '9' || (b[12] != ' ' && b[12] != '\r'))
		return -1;
	p->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	line = memchr(b, '\n', hlen);
	if (line == NULL)
		return -1;
	line++;
	while (line < end) {
		eol = memchr(line, '\n', (size_t)(end - line) + 1);
		if (eol == NULL)
			return -1;
		nl = (size_t)(eol - line);
		if (nl > 0 && line[nl - 1] == '\r')
			nl--;
		colon = memchr(line, ':', nl);
		if (colon != NULL) {
			size_t klen = (size_t)(colon - line);

			v = colon + 1;
			vl = nl - klen - 1;
			while (vl > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vl--;
			}
			while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
				vl--;
			if (klen == 14 && strncasecmp(line, "content-length", 14) == 0) {
				uint64_t x;

				if (parse_uint(v, vl, &x) < 0 || (have_cl && x != cl))
					return -1;
				cl = x;
				have_cl = 1;
			} else if (klen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
				if (has_token(v, vl, "chunked"))
					p->chunked = 1;
			} else if (klen == 10 && strncasecmp(line, "connection", 10) == 0) {
				if (has_token(v, vl, "close"))
					p->close = 1;
				if (has_token(v, vl, "keep-alive"))
					keep = 1;
			}
		}
		line = eol + 1;
	}
	if (b[7] == '0' && !keep)
		p->close = 1;	/* HTTP/1.0 without keep-alive */
	p->body_start = hlen;
	if ((p->status >= 100 && p->status < 200) || p->status == 204 || p->status == 304) {
		p->end = hlen;
		p->chunked = 0;
	} else if (p->chunked) {
		p->chunk_pos = hlen;
	} else if (have_cl) {
		if (cl > HRESP_BODY_MAX)
			return -1;
		p->end = hlen + (size_t)cl;
	} else {
		p->until_eof = 1;
	}
	p->have_head = 1;
	return 0;
}

/* Hex size at the start of a chunk-size line ls..le; -1 if malformed. */
static int
chunk_size(const char *ls, const char *le, uint64_t *size)
{
	size_t digits = 0;
	uint64_t v = 0;

	while (ls + digits < le) {
		char ch = ls[digits];
		int d;

		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			break;
		if (++digits > 15)
			return -1;
		v = v * 16 + (uint64_t)d;
	}
	if (digits == 0 || v > HRESP_BODY_MAX)
		return -1;
	*size = v;
	return 0;
}

long
hresp_parse(struct hresp *p, const char *b, size_t n, int eof)
{
	const char *e;

	if (!p->have_head) {
		size_t from = p->scan > 3 ? p->scan - 3 : 0;

		e = n > from ? memmem(b + from, n - from, "\r\n\r\n", 4) : NULL;
		if (e == NULL) {
			p->scan = n;
			return n > HRESP_HEAD_MAX ? -1 : 0;
		}
		if (parse_head(p, b, (size_t)(e - b) + 4) < 0)
			return -1;
	}
	if (p->chunked) {
		for (;;) {
			const char *ls = b + p->chunk_pos, *le;
			uint64_t size;

			if (p->chunk_pos >= n)
				return 0;
			le = memmem(ls, n - p->chunk_pos, "\r\n", 2);
			if (le == NULL)
				return n - p->chunk_pos > 1024 ? -1 : 0;
			if (chunk_size(ls, le, &size) < 0)
				return -1;
			if (size == 0) {
				size_t t = (size_t)(le - b) + 2;

				/* trailers end with an empty line */
				if (n >= t + 2 && b[t] == '\r' && b[t + 1] == '\n')
					return (long)(t + 2);
				e = n > t ? memmem(b + t, n - t, "\r\n\r\n", 4) : NULL;
				if (e == NULL)
					return n - t > HRESP_HEAD_MAX ? -1 : 0;
				return (long)(e - b) + 4;
			}
			p->chunk_pos = (size_t)(le - b) + 2 + (size_t)size + 2;
		}
	}
	if (p->until_eof)
		return eof ? (long)n : 0;
	return p->end <= n ? (long)p->end : 0;
}

const char *
hresp_body(const struct hresp *p, const char *b, size_t len, size_t *blen)
{
	const char *ls, *le, *data, *end = b + len;
	uint64_t size, size2;

	if (!p->chunked) {
		*blen = len - p->body_start;
		return b + p->body_start;
	}
	ls = b + p->body_start;
	le = memmem(ls, (size_t)(end - ls), "\r\n", 2);
	if (le == NULL || chunk_size(ls, le, &size) < 0)
		return NULL;
	data = le + 2;
	if (size == 0) {
		*blen = 0;
		return data;
	}
	if ((uint64_t)(end - data) < size + 2)
		return NULL;
	ls = data + size + 2;
	le = memmem(ls, (size_t)(end - ls), "\r\n", 2);
	if (le == NULL || chunk_size(ls, le, &size2) < 0 || size2 != 0)
		return NULL;	/* more than one chunk */
	*blen = (size_t)size;
	return data;
}
