/*
 * fuzz_sse.c - libFuzzer target: the GET /subscribe request decoder,
 * sse_params_parse() (worker/sse_params.c, with http_query_get() of
 * worker/http.c doing the percent-decoding).
 *
 * The input is the query string (the bytes after '?'; it stops at the
 * first NUL, as the request's query does).  Three oracles besides the
 * sanitizers:
 *
 *   1. A reference model of api.md 9.1-9.2 written here from the spec,
 *      independently of the server's code (its own query splitting and
 *      percent-decoding, Go's ParseInt by 128-bit arithmetic, a UTF-8
 *      decoder): the decoder must give the same verdict, the same message
 *      and the same values.  Values are byte strings of a known length,
 *      so a %00 that cuts a C string short shows up as a difference.
 *   2. The invariants start() in sse.c relies on: exactly one of stream,
 *      category and all=true; a name is non-empty NUL-free valid UTF-8 no
 *      longer than the query; a consumer group (member > 0 or size > 0)
 *      has 0 < size and member < size; member and size are 0 outside
 *      category mode; a rejection carries one of the messages of
 *      api.md 9.2 (never empty).
 *   3. Round trip: an accepted request re-encoded (every byte of the names
 *      percent-encoded or kept, space as '+' or %20, upper or lower hex,
 *      the parameters in another order, consumer/size under their alias
 *      names) decodes to exactly the same parameters.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sse.h"

static const char *const messages[] = {
	"Either 'stream', 'category', or 'all=true' parameter required",
	"Cannot combine 'all' with 'stream' or 'category'",
	"Cannot specify both 'stream' and 'category'",
	"Invalid stream parameter",
	"Invalid category parameter",
	"Invalid position parameter",
	"Invalid consumer parameter",
	"Invalid size parameter",
	"Invalid consumer group: member must be < size",
	NULL
};

static void
fail(const char *what, const char *query)
{
	fprintf(stderr, "fuzz_sse: %s (query \"%.200s\")\n", what, query);
	abort();
}

/* ---- the reference model ---------------------------------------------------------- */

struct val {
	unsigned char	*b;	/* decoded bytes (NULL: absent or empty) */
	size_t		 len;
};

struct ref {
	struct val	 stream, category;
	int		 all;
	int64_t		 position, member, size;
	const char	*bad;
};

static int
hexdig(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Bytes [from, to) of q decoded: '+' is a space, '%' and two hex digits a byte. */
static size_t
ref_decode(const char *q, size_t from, size_t to, unsigned char *out)
{
	size_t n = 0;

	for (size_t x = from; x < to; x++) {
		if (q[x] == '+')
			out[n++] = ' ';
		else if (q[x] == '%' && x + 2 < to && hexdig(q[x + 1]) >= 0 &&
		    hexdig(q[x + 2]) >= 0) {
			out[n++] = (unsigned char)(hexdig(q[x + 1]) * 16 + hexdig(q[x + 2]));
			x += 2;
		} else
			out[n++] = (unsigned char)q[x];
	}
	return n;
}

/*
 * The first parameter named `name` (pieces split at '&', the key ends at
 * the first '=' and is decoded like the value, as Go's url.ParseQuery),
 * its value decoded: '+' is a space, '%' and two hex digits a byte,
 * anything else itself.  The first occurrence counts even when empty;
 * empty means absent.
 */
static struct val
ref_get(const char *q, const char *name)
{
	struct val v = { NULL, 0 };
	size_t nlen = strlen(name), qlen = strlen(q), i = 0;
	unsigned char *key = malloc(qlen + 1);

	if (!key)
		abort();
	while (i < qlen) {
		size_t j = i, k, kn;
		while (j < qlen && q[j] != '&')
			j++;
		for (k = i; k < j && q[k] != '='; k++)
			;
		kn = ref_decode(q, i, k, key);
		if (kn == nlen && memcmp(key, name, nlen) == 0) {
			size_t vs = k < j ? k + 1 : j;
			free(key);
			if (vs == j)
				return v;
			v.b = malloc(j - vs);
			if (!v.b)
				abort();
			v.len = ref_decode(q, vs, j, v.b);
			return v;
		}
		i = j + 1;
	}
	free(key);
	return v;
}

/* Go's strconv.ParseInt(s, 10, 64) on len bytes: 1 and *out, or 0. */
static int
ref_int(const struct val *v, int64_t *out)
{
	__int128 acc = 0;
	size_t i = 0;
	int neg = 0;

	if (v->len && (v->b[0] == '+' || v->b[0] == '-'))
		neg = v->b[i++] == '-';
	if (i == v->len)
		return 0;
	for (; i < v->len; i++) {
		if (v->b[i] < '0' || v->b[i] > '9')
			return 0;
		acc = acc * 10 + (v->b[i] - '0');
		if (acc > (__int128)INT64_MAX + 1)
			return 0;
	}
	if (neg)
		acc = -acc;
	if (acc > INT64_MAX || acc < INT64_MIN)
		return 0;
	*out = (int64_t)acc;
	return 1;
}

/* Well-formed UTF-8 (RFC 3629: shortest form, no surrogates, <= U+10FFFF), no NUL. */
static int
ref_name_ok(const struct val *v)
{
	for (size_t i = 0; i < v->len;) {
		unsigned c = v->b[i], cp, n, min;
		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07, min = 0x10000;
		else
			return 0;
		if (i + n > v->len)
			return 0;
		for (unsigned k = 1; k < n; k++) {
			if ((v->b[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (v->b[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n;
	}
	return 1;
}

/* An int64 parameter with an optional alias: 1 if absent or valid. */
static int
ref_int_param(const char *q, const char *name, const char *alias, int64_t *out)
{
	struct val v = ref_get(q, name);
	int ok = 1;

	if (!v.b && alias)
		v = ref_get(q, alias);
	if (v.b)
		ok = ref_int(&v, out);
	free(v.b);
	return ok;
}

static void
ref_parse(const char *q, struct ref *r)
{
	struct val all = ref_get(q, "all");

	memset(r, 0, sizeof(*r));
	r->all = all.len == 4 && memcmp(all.b, "true", 4) == 0;
	free(all.b);
	r->stream = ref_get(q, "stream");
	r->category = ref_get(q, "category");
	if (!r->stream.b && !r->category.b && !r->all)
		r->bad = messages[0];
	else if (r->all && (r->stream.b || r->category.b))
		r->bad = messages[1];
	else if (r->stream.b && r->category.b)
		r->bad = messages[2];
	else if (r->stream.b && !ref_name_ok(&r->stream))
		r->bad = messages[3];
	else if (r->category.b && !ref_name_ok(&r->category))
		r->bad = messages[4];
	else if (!ref_int_param(q, "position", NULL, &r->position))
		r->bad = messages[5];
	else if (!r->category.b)
		;
	else if (!ref_int_param(q, "consumer", "consumerGroupMember", &r->member))
		r->bad = messages[6];
	else if (!ref_int_param(q, "size", "consumerGroupSize", &r->size))
		r->bad = messages[7];
	else if ((r->member > 0 || r->size > 0) && (r->size == 0 || r->member >= r->size))
		r->bad = messages[8];
}

/* ---- the checks ------------------------------------------------------------------- */

static int
same_name(const char *got, const struct val *want)
{
	if (!got || !want->b)
		return !got && !want->b;
	return strlen(got) == want->len && memcmp(got, want->b, want->len) == 0;
}

static void
check_invariants(const char *q, const struct sse_params *p)
{
	if (p->bad) {
		int known = 0;
		for (int i = 0; messages[i]; i++)
			known |= strcmp(p->bad, messages[i]) == 0;
		if (!known || !p->bad[0])
			fail("rejected with an unknown or empty message", q);
		return;
	}
	if (!!p->stream + !!p->category + !!p->all != 1)
		fail("accepted without exactly one of stream, category, all", q);
	for (int i = 0; i < 2; i++) {
		const char *n = i ? p->category : p->stream;
		struct val v;
		if (!n)
			continue;
		v.b = (unsigned char *)(uintptr_t)n;
		v.len = strlen(n);
		if (!v.len || v.len > strlen(q) || !ref_name_ok(&v))
			fail("accepted name empty, too long or not UTF-8", q);
	}
	if ((p->member > 0 || p->size > 0) && !(p->size > 0 && p->member < p->size))
		fail("accepted consumer group with member >= size", q);
	if (!p->category && (p->member || p->size))
		fail("consumer group outside category mode", q);
}

static void
compare(const char *q, const struct sse_params *p, const struct ref *r)
{
	if (!p->bad != !r->bad || (p->bad && strcmp(p->bad, r->bad))) {
		fprintf(stderr, "fuzz_sse: decoder says \"%s\", the model \"%s\"\n",
		    p->bad ? p->bad : "(accepted)", r->bad ? r->bad : "(accepted)");
		fail("verdict differs from the reference model", q);
	}
	if (p->bad)
		return;
	if (!same_name(p->stream, &r->stream) || !same_name(p->category, &r->category))
		fail("decoded name differs from the reference model", q);
	if (!p->all != !r->all || p->position != r->position)
		fail("all or position differs from the reference model", q);
	if (p->category && (p->member != r->member || p->size != r->size))
		fail("consumer group differs from the reference model", q);
}

/* Append name=value to *o with value percent-encoded as `how` says. */
static size_t
put(char *o, size_t n, int first, const char *name, const char *value, unsigned how)
{
	static const char lo[] = "0123456789abcdef", up[] = "0123456789ABCDEF";
	const char *hex = how & 1 ? lo : up;

	if (!first)
		o[n++] = '&';
	n += (size_t)sprintf(o + n, "%s=", name);
	for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
		int plain = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.' || *s == '~';
		if (*s == ' ' && (how & 2))
			o[n++] = '+';
		else if (plain && !(how & 4))
			o[n++] = (char)*s;
		else if (*s > 0x20 && *s < 0x7f && !strchr("%&+=#", *s) && (how & 8))
			o[n++] = (char)*s;	/* unreserved enough for this decoder */
		else {
			o[n++] = '%';
			o[n++] = hex[*s >> 4];
			o[n++] = hex[*s & 15];
		}
	}
	return n;
}

static void
round_trip(const char *q, const struct sse_params *p, unsigned how)
{
	size_t cap = 3 * strlen(q) + 256, n = 0;
	char *o = malloc(cap), num[24];
	struct sse_params p2;
	int first = 1;

	if (!o)
		abort();
	if (how & 16) {	/* numbers first */
		snprintf(num, sizeof(num), "%lld", (long long)p->position);
		n = put(o, n, first, "position", num, how), first = 0;
	}
	if (p->all)
		n = put(o, n, first, "all", "true", how), first = 0;
	else if (p->stream)
		n = put(o, n, first, "stream", p->stream, how), first = 0;
	else
		n = put(o, n, first, "category", p->category, how), first = 0;
	if (!(how & 16)) {
		snprintf(num, sizeof(num), "%lld", (long long)p->position);
		n = put(o, n, first, "position", num, how);
	}
	if (p->category) {
		snprintf(num, sizeof(num), "%lld", (long long)p->member);
		n = put(o, n, 0, how & 32 ? "consumerGroupMember" : "consumer", num, how);
		snprintf(num, sizeof(num), "%lld", (long long)p->size);
		n = put(o, n, 0, how & 32 ? "consumerGroupSize" : "size", num, how);
	}
	o[n] = '\0';
	if (n >= cap)
		abort();
	sse_params_parse(o, &p2);
	if (p2.bad)
		fail(p2.bad, o);
	if (strcmp(p->stream ? p->stream : "", p2.stream ? p2.stream : "") ||
	    strcmp(p->category ? p->category : "", p2.category ? p2.category : "") ||
	    !p->stream != !p2.stream || !p->category != !p2.category || p->all != p2.all ||
	    p->position != p2.position || p->member != p2.member || p->size != p2.size)
		fail("re-encoded request decodes differently", o);
	sse_params_free(&p2);
	free(o);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	log_setup(LOG_FATAL, 0);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t len = nul ? (size_t)(nul - data) : size;
	char *q = malloc(len + 1);	/* exactly the query and its NUL, for ASan */
	struct sse_params p;
	struct ref r;
	unsigned how = 0;

	if (!q)
		abort();
	memcpy(q, data, len);
	q[len] = '\0';
	for (size_t i = 0; i < size; i++)
		how = how * 31 + data[i];

	sse_params_parse(q, &p);
	ref_parse(q, &r);
	check_invariants(q, &p);
	compare(q, &p, &r);
	if (!p.bad)
		round_trip(q, &p, how ^ (how >> 8));
	sse_params_free(&p);
	if (p.stream || p.category)
		fail("sse_params_free left pointers behind", q);
	free(r.stream.b);
	free(r.category.b);

	/* No query at all (a bare /subscribe): the first rule. */
	if (size == 0) {
		sse_params_parse(NULL, &p);
		if (!p.bad || strcmp(p.bad, messages[0]))
			fail("no query string accepted", "(null)");
		sse_params_free(&p);
	}
	free(q);
	return 0;
}
