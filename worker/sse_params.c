/*
 * sse_params.c - the request decoder of GET /subscribe: the query
 * parameters of api.md 9.1, percent-decoded (http_query_get) and checked
 * in the order of api.md 9.2, with the original's messages.
 *
 * A pure function of the query string (no request, no connection), so
 * that t/fuzz/fuzz_sse.c can call it; sse.c calls it once auth is done.
 *
 * Values are byte strings: a %00 must not cut one short.  A number or
 * all=true with a NUL in it is not one (Go's ParseInt and string compare
 * say the same), and a stream or category name that PostgreSQL could
 * never store (a NUL or invalid UTF-8; decisions.md 5) is a 400 here
 * rather than a subscription whose catch-up query fails, or, truncated at
 * the NUL, one that follows another stream.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "sse.h"

/* Go's strconv.ParseInt(s, 10, 64) on len bytes: optional sign, decimal digits, no overflow. */
static int
parse_i64(const char *p, size_t len, int64_t *out)
{
	const char *end = p + len;
	uint64_t v = 0, lim;
	int neg = 0;

	if (p < end && (*p == '+' || *p == '-'))
		neg = *p++ == '-';
	if (p == end)
		return -1;
	lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; p < end; p++) {
		unsigned d;
		if (*p < '0' || *p > '9')
			return -1;
		d = (unsigned)(*p - '0');
		if (v > (lim - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
	return 0;
}

/*
 * Well-formed UTF-8 (RFC 3629: shortest form, no surrogates, nothing
 * above U+10FFFF) without NUL: what a PostgreSQL text value can hold.
 */
static int
name_ok(const unsigned char *s, size_t len)
{
	const unsigned char *end = s + len;
	size_t n;

	for (; s < end; s += n)
		if (*s == 0 || (n = json_utf8_len(s, (size_t)(end - s))) == 0)
			return 0;
	return 1;
}

/*
 * A query parameter, percent-decoded: heap copy (NUL-terminated, *lenp
 * bytes, which may include a decoded NUL), or NULL if absent or empty.
 */
static char *
param(const char *query, const char *name, size_t *lenp)
{
	struct http_req req = { .query = query };	/* http_query_get reads only the query */
	size_t cap = query ? strlen(query) + 1 : 1;
	char *buf = malloc(cap);
	long n;

	if (!buf)
		return NULL;
	n = http_query_get(&req, name, buf, cap);
	if (n <= 0) {
		free(buf);
		return NULL;
	}
	*lenp = (size_t)n;
	return buf;
}

/* An int64 parameter: 0 if absent or valid, -1 if malformed. */
static int
param_i64(const char *query, const char *name, const char *alias, int64_t *out)
{
	size_t len = 0;
	char *v = param(query, name, &len);
	int rc = 0;

	if (!v && alias)
		v = param(query, alias, &len);
	if (v)
		rc = parse_i64(v, len, out);
	free(v);
	return rc;
}

/* api.md 9.1-9.2, with the original's messages (sent as JSON 400 after auth). */
void
sse_params_parse(const char *query, struct sse_params *p)
{
	size_t alen = 0, slen = 0, clen = 0;
	char *all = param(query, "all", &alen);

	memset(p, 0, sizeof(*p));
	p->stream = param(query, "stream", &slen);
	p->category = param(query, "category", &clen);
	p->all = all && alen == 4 && memcmp(all, "true", 4) == 0;
	free(all);
	if (!p->stream && !p->category && !p->all)
		p->bad = "Either 'stream', 'category', or 'all=true' parameter required";
	else if (p->all && (p->stream || p->category))
		p->bad = "Cannot combine 'all' with 'stream' or 'category'";
	else if (p->stream && p->category)
		p->bad = "Cannot specify both 'stream' and 'category'";
	else if (p->stream && !name_ok((const unsigned char *)p->stream, slen))
		p->bad = "Invalid stream parameter";
	else if (p->category && !name_ok((const unsigned char *)p->category, clen))
		p->bad = "Invalid category parameter";
	else if (param_i64(query, "position", NULL, &p->position) < 0)
		p->bad = "Invalid position parameter";
	else if (!p->category)
		return;	/* consumer and size only matter for categories */
	else if (param_i64(query, "consumer", "consumerGroupMember", &p->member) < 0)
		p->bad = "Invalid consumer parameter";
	else if (param_i64(query, "size", "consumerGroupSize", &p->size) < 0)
		p->bad = "Invalid size parameter";
	else if ((p->member > 0 || p->size > 0) && (p->size == 0 || p->member >= p->size))
		p->bad = "Invalid consumer group: member must be < size";
}

void
sse_params_free(struct sse_params *p)
{
	free(p->stream);
	free(p->category);
	p->stream = p->category = NULL;
}
