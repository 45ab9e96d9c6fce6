/*
 * json.c - strict JSON parser and JSON string writer (see json.h).
 *
 * The parser makes one forward pass without recursion: an explicit stack
 * of at most JSON_MAX_DEPTH open containers, nodes appended in document
 * order to doc->nodes, decoded keys and strings appended NUL-terminated to
 * doc->str.  Both buffers belong to the document and are kept between
 * parses, so a warm document parses without calling malloc.  The one
 * exception is the NUL-terminated copy strtod needs to range-check a
 * number longer than 63 bytes that has an exponent or more than 308
 * integer digits (shorter ones are copied to the stack, and numbers with
 * neither cannot overflow a double, so they are not converted at all).
 *
 * Numbers are converted with strtod and so assume the "C" LC_NUMERIC
 * locale (the default unless the program calls setlocale).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "json.h"

#if defined(__GNUC__)
#define JSON_PRINTF(f, a)	__attribute__((format(printf, f, a)))
#define JSON_COLD		__attribute__((cold, noinline))
#define JSON_LIKELY(x)		__builtin_expect(!!(x), 1)
#define JSON_UNLIKELY(x)	__builtin_expect(!!(x), 0)
#else
#define JSON_PRINTF(f, a)
#define JSON_COLD
#define JSON_LIKELY(x)		(x)
#define JSON_UNLIKELY(x)	(x)
#endif

/* Numbers shorter than this are copied to the stack for strtod. */
#define NUMBUF		64

/* Byte classes inside a string literal, for the parser. */
enum { SC_PLAIN, SC_QUOTE, SC_BSLASH, SC_CTRL, SC_HIGH };

static const unsigned char str_class[256] = {
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
	4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* Byte classes for the writer: safe, needs an escape, non-ASCII. */
enum { WC_SAFE, WC_ESC, WC_HIGH };

static const unsigned char wr_class[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
	2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

static const char hexdig[] = "0123456789abcdef";

/* An open array or object during parsing. */
struct json_frame {
	uint32_t	node;		/* its node (when kept) */
	uint32_t	last;		/* its last child so far, 0 = none */
	uint8_t		type;		/* JSON_ARRAY or JSON_OBJECT */
	uint8_t		kept;		/* has a node (doc->keep_depth) */
};

/* A string decoded on demand by json_str() (not kept in doc->str). */
struct json_lazy {
	struct json_lazy *next;
	uint32_t	node;
	char		s[];
};

static int fail(struct json_doc *, const char *, ...) JSON_PRINTF(2, 3);

static JSON_COLD int
fail(struct json_doc *doc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(doc->err, sizeof(doc->err), fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Length of the well-formed UTF-8 sequence starting with the non-ASCII
 * byte at p (RFC 3629 section 4: no overlongs, no surrogates, nothing
 * above U+10FFFF), or 0 if it is ill-formed or truncated.
 */
static inline size_t
utf8_seq(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned c = p[0], lo = 0x80, hi = 0xBF;

	if (c < 0xC2)
		return 0;
	if (c < 0xE0)
		return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c < 0xF0) {
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
		if (avail < 3 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xC0) != 0x80)
			return 0;
		return 3;
	}
	if (c < 0xF5) {
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
		if (avail < 4 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

size_t
json_utf8_len(const unsigned char *p, size_t avail)
{
	if (avail == 0)
		return 0;
	return p[0] < 0x80 ? 1 : utf8_seq(p, p + avail);
}

/* Code point of a well-formed sequence of n bytes. */
static uint32_t
utf8_decode(const unsigned char *p, size_t n)
{
	switch (n) {
	case 2:
		return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
	case 3:
		return (uint32_t)(p[0] & 0x0F) << 12 |
		    (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
	case 4:
		return (uint32_t)(p[0] & 0x07) << 18 |
		    (uint32_t)(p[1] & 0x3F) << 12 |
		    (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
	}
	return p[0];
}

static inline const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

/* Error for a byte that cannot start or continue what is expected at p. */
static JSON_COLD int
unexpected(struct json_doc *doc, const unsigned char *base,
    const unsigned char *p, const unsigned char *end)
{
	size_t off = (size_t)(p - base), n;
	unsigned c;

	if (p >= end)
		return fail(doc, "unexpected end of input");
	c = *p;
	if (c >= 0x80) {
		if ((n = utf8_seq(p, end)) == 0)
			return fail(doc, "invalid UTF-8 at offset %zu", off);
		return fail(doc, "unexpected character U+%04X at offset %zu",
		    (unsigned)utf8_decode(p, n), off);
	}
	if (c > 0x20 && c < 0x7F)
		return fail(doc, "unexpected character '%c' at offset %zu",
		    (int)c, off);
	return fail(doc, "unexpected byte 0x%02x at offset %zu", c, off);
}

static JSON_COLD int
grow_nodes(struct json_doc *doc)
{
	struct json_node *n;
	uint32_t cap;

	if (doc->capnodes == 0)
		cap = 64;
	else if (doc->capnodes > UINT32_MAX / 2)
		cap = UINT32_MAX;
	else
		cap = doc->capnodes * 2;
	if (cap == doc->capnodes)
		return -1;
	n = realloc(doc->nodes, (size_t)cap * sizeof(*n));
	if (n == NULL)
		return -1;
	doc->nodes = n;
	doc->capnodes = cap;
	return 0;
}

static JSON_COLD int
grow_str(struct json_doc *doc, size_t need)
{
	char *s;

	if (need < 256)
		need = 256;
	s = realloc(doc->str, need);
	if (s == NULL)
		return -1;
	doc->str = s;
	doc->strcap = need;
	return 0;
}

static inline int
hexval(unsigned c)
{
	if (c - '0' < 10)
		return (int)(c - '0');
	c |= 0x20;
	if (c - 'a' < 6)
		return (int)(c - 'a' + 10);
	return -1;
}

/* Value of the 4 hex digits at p (4 bytes must be readable), or -1. */
static inline int32_t
hex4(const unsigned char *p)
{
	int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]),
	    d = hexval(p[3]);

	if ((a | b | c | d) < 0)
		return -1;
	return a << 12 | b << 8 | c << 4 | d;
}

static inline unsigned char *
utf8_encode(unsigned char *o, uint32_t cp)
{
	if (cp < 0x80) {
		*o++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*o++ = (unsigned char)(0xC0 | cp >> 6);
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*o++ = (unsigned char)(0xE0 | cp >> 12);
		*o++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	} else {
		*o++ = (unsigned char)(0xF0 | cp >> 18);
		*o++ = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
		*o++ = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	}
	return o;
}

#define ONES	0x0101010101010101ULL
#define HIGHS	0x8080808080808080ULL

/*
 * Index of the first flagged byte of a special8() mask: its lowest set
 * bit on a little-endian machine, since the tricks below can only raise
 * false flags above a true one.  Elsewhere, go byte by byte.
 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FIRST_SPECIAL(m)	((size_t)__builtin_ctzll(m) >> 3)
#else
#define FIRST_SPECIAL(m)	((void)(m), (size_t)0)
#endif

/*
 * Nonzero if any of the 8 bytes of v is a control character, '"', '\\'
 * or non-ASCII.  (x - ONES) & ~x & HIGHS is nonzero iff x has a zero
 * byte; (v - 0x20 * ONES) & ~v & HIGHS iff v has a byte below 0x20.
 */
static inline uint64_t
special8(uint64_t v)
{
	uint64_t q = v ^ (ONES * '"'), b = v ^ (ONES * '\\');

	return (((v - ONES * 0x20) & ~v) | ((q - ONES) & ~q) |
	    ((b - ONES) & ~b) | v) & HIGHS;
}

/* Same for the writer: also flags '<', '>' and '&'. */
static inline uint64_t
wspecial8(uint64_t v)
{
	uint64_t l = v ^ (ONES * '<'), g = v ^ (ONES * '>'),
	    a = v ^ (ONES * '&');

	return special8(v) |
	    ((((l - ONES) & ~l) | ((g - ONES) & ~g) | ((a - ONES) & ~a)) & HIGHS);
}

/*
 * Decode the string literal whose opening quote is at *pp into doc->str
 * (NUL-terminated); its offset and length go to *off and *olen.  On
 * success *pp is left just past the closing quote.
 */
static int
parse_string(struct json_doc *doc, const unsigned char *base,
    const unsigned char **pp, const unsigned char *end,
    uint32_t *off, uint32_t *olen, int copy)
{
	const unsigned char *p = *pp + 1, *run;
	unsigned char *o0 = NULL;
	uint64_t v, m;
	size_t need, n, o = 0;	/* o: decoded length so far */
	int32_t cp, lo;
	unsigned c;

	/*
	 * The decoded text plus its NUL is never longer than the literal
	 * with its quotes, so room for the rest of the input is enough for
	 * this string and all those after it: at most one growth per parse,
	 * and none on a warm document.  Without `copy` the string is only
	 * validated and measured (json_str decodes it when asked).
	 */
	if (copy) {
		need = doc->strlen_ + (size_t)(end - p) + 1;
		if (JSON_UNLIKELY(need > doc->strcap) && grow_str(doc, need) < 0)
			return fail(doc, "out of memory");
		o0 = (unsigned char *)doc->str + doc->strlen_;
	}
#define PUT(ch)	do { if (copy) o0[o] = (ch); o++; } while (0)

	for (;;) {
		/* A run of bytes that are copied as they are. */
		run = p;
		for (;;) {
			if (end - p >= 8) {
				memcpy(&v, p, 8);
				if ((m = special8(v)) == 0) {
					p += 8;
					continue;
				}
				p += FIRST_SPECIAL(m);
			}
			if (p >= end)
				break;
			c = str_class[*p];
			if (c == SC_PLAIN)
				p++;
			else if (c == SC_HIGH && (n = utf8_seq(p, end)) != 0)
				p += n;
			else
				break;
		}
		if (p > run) {
			if (copy)
				memcpy(o0 + o, run, (size_t)(p - run));
			o += (size_t)(p - run);
		}
		if (p >= end)
			return fail(doc, "unexpected end of input");
		switch (str_class[*p]) {
		case SC_QUOTE:
			if (copy) {
				o0[o] = '\0';
				*off = (uint32_t)doc->strlen_;
				doc->strlen_ += o + 1;
			} else
				*off = JSON_STR_LAZY;
			*olen = (uint32_t)o;
			*pp = p + 1;
			return 0;
		case SC_CTRL:
			if (*p == 0)
				return fail(doc, "U+0000 in string at offset %zu",
				    (size_t)(p - base));
			return fail(doc, "control character 0x%02x in string "
			    "at offset %zu", *p, (size_t)(p - base));
		case SC_HIGH:
			return fail(doc, "invalid UTF-8 at offset %zu",
			    (size_t)(p - base));
		}

		/* Backslash. */
		if (end - p < 2)
			return fail(doc, "unexpected end of input");
		switch (p[1]) {
		case '"':  PUT('"');  p += 2; continue;
		case '\\': PUT('\\'); p += 2; continue;
		case '/':  PUT('/');  p += 2; continue;
		case 'b':  PUT('\b'); p += 2; continue;
		case 'f':  PUT('\f'); p += 2; continue;
		case 'n':  PUT('\n'); p += 2; continue;
		case 'r':  PUT('\r'); p += 2; continue;
		case 't':  PUT('\t'); p += 2; continue;
		case 'u':
			break;
		default:
			if (p[1] >= 0x80 || p[1] < 0x20)
				return unexpected(doc, base, p + 1, end);
			return fail(doc, "invalid escape '\\%c' at offset %zu",
			    p[1], (size_t)(p - base));
		}
		for (n = 2; n < 6; n++) {
			if (p + n >= end)
				return fail(doc, "unexpected end of input");
			if (hexval(p[n]) < 0)
				return fail(doc, "invalid \\u escape at offset %zu",
				    (size_t)(p - base));
		}
		cp = hex4(p + 2);
		if (cp == 0)
			return fail(doc, "U+0000 in string at offset %zu",
			    (size_t)(p - base));
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
			    (lo = hex4(p + 8)) < 0xDC00 || lo > 0xDFFF)
				return fail(doc, "unpaired surrogate \\u%04x at "
				    "offset %zu", (unsigned)cp, (size_t)(p - base));
			cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			p += 12;
		} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
			return fail(doc, "unpaired surrogate \\u%04x at offset %zu",
			    (unsigned)cp, (size_t)(p - base));
		} else
			p += 6;
		if (copy)
			o += (size_t)(utf8_encode(o0 + o, (uint32_t)cp) - (o0 + o));
		else
			o += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
	}
#undef PUT
}

/*
 * strtod of the n bytes at s through a NUL-terminated copy.  Returns -1
 * if the copy cannot be allocated.
 */
static int
num_strtod(const unsigned char *s, size_t n, double *out, int *erange)
{
	char buf[NUMBUF], *b = buf;

	if (n >= sizeof(buf) && (b = malloc(n + 1)) == NULL)
		return -1;
	memcpy(b, s, n);
	b[n] = '\0';
	errno = 0;
	*out = strtod(b, NULL);
	*erange = errno == ERANGE;
	if (b != buf)
		free(b);
	return 0;
}

static inline int
is_digit(const unsigned char *p, const unsigned char *end)
{
	return p < end && (unsigned)(*p - '0') < 10;
}

/*
 * Validate the number at *pp and leave *pp just past it.  *expand adds up
 * the exponents' magnitudes: a bound on how much longer PostgreSQL's
 * plain decimal rendering of the numbers is than their text.
 */
static int
parse_number(struct json_doc *doc, const unsigned char *base,
    const unsigned char **pp, const unsigned char *end, uint64_t *expand)
{
	const unsigned char *s = *pp, *p = *pp, *digits, *frac = NULL;
	int check = 0, erange;
	long exp = 0, fdigits = 0;
	double d;

	if (*p == '-')
		p++;
	digits = p;
	if (!is_digit(p, end))
		return unexpected(doc, base, p, end);
	if (*p++ == '0') {
		if (is_digit(p, end))
			return fail(doc, "leading zero in number at offset %zu",
			    (size_t)(s - base));
	} else
		while (is_digit(p, end))
			p++;
	/* Below 1e308 without an exponent: always a finite double. */
	if (p - digits > 308)
		check = 1;
	if (p < end && *p == '.') {
		frac = ++p;
		if (!is_digit(p, end))
			return unexpected(doc, base, p, end);
		while (is_digit(p, end))
			p++;
		fdigits = (long)(p - frac);
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		int neg = 0;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			neg = *p++ == '-';
		if (!is_digit(p, end))
			return unexpected(doc, base, p, end);
		while (is_digit(p, end)) {
			if (exp < 1000000000L)
				exp = exp * 10 + (*p - '0');
			p++;
		}
		*expand += (uint64_t)exp;
		if (neg)
			exp = -exp;
		check = 1;
	}
	/*
	 * PostgreSQL's numeric keeps at most NUMERIC_DSCALE_MAX digits after
	 * the decimal point ("value overflows numeric format" beyond); its
	 * rendering of a number with a large exponent is that long, so the
	 * exponents' total is bounded too (1e-16383 is 9 bytes that read
	 * back as 16387: 9000 of them poison every read of the row).
	 */
	if (fdigits - exp > JSON_MAX_FRAC_DIGITS)
		return fail(doc, "number with more than %d digits after the decimal "
		    "point at offset %zu", JSON_MAX_FRAC_DIGITS, (size_t)(s - base));

	if (check) {
		if (num_strtod(s, (size_t)(p - s), &d, &erange) < 0)
			return fail(doc, "out of memory");
		if (!isfinite(d) || (erange && (d == HUGE_VAL || d == -HUGE_VAL)))
			return fail(doc, "number out of range at offset %zu",
			    (size_t)(s - base));
		if (*expand > (uint64_t)JSON_EXPAND_FACTOR * doc->textlen + JSON_EXPAND_SLACK)
			return fail(doc, "numbers expand to more than %d times the "
			    "text at offset %zu", JSON_EXPAND_FACTOR, (size_t)(s - base));
	}
	*pp = p;
	return 0;
}

static int
parse_literal(struct json_doc *doc, const unsigned char *base,
    const unsigned char **pp, const unsigned char *end, const char *lit,
    size_t n)
{
	const unsigned char *p = *pp;

	for (size_t i = 0; i < n; i++) {
		if (p + i >= end)
			return fail(doc, "unexpected end of input");
		if (p[i] != (unsigned char)lit[i])
			return unexpected(doc, base, p + i, end);
	}
	*pp = p + n;
	return 0;
}

void
json_doc_init(struct json_doc *doc)
{
	memset(doc, 0, sizeof(*doc));
}

static void
lazy_free(struct json_doc *doc)
{
	struct json_lazy *l, *next;

	for (l = doc->lazy; l != NULL; l = next) {
		next = l->next;
		free(l);
	}
	doc->lazy = NULL;
}

/* Heap bytes the document holds (node array and string space). */
size_t
json_doc_bytes(const struct json_doc *doc)
{
	return doc->strcap + (size_t)doc->capnodes * sizeof(*doc->nodes);
}

void
json_doc_free(struct json_doc *doc)
{
	uint32_t keep = doc->keep_depth;

	lazy_free(doc);
	free(doc->nodes);
	free(doc->str);
	json_doc_init(doc);
	doc->keep_depth = keep;	/* the caller's setting outlives the buffers */
}

int
json_parse(struct json_doc *doc, const char *text, size_t len)
{
	struct json_frame stack[JSON_MAX_DEPTH], *f;
	const unsigned char *base = (const unsigned char *)text;
	const unsigned char *p = base, *end = base + len;
	uint32_t depth = 0, key_off = 0, key_len = 0, idx, str_off, str_len;
	uint32_t keep = doc->keep_depth ? doc->keep_depth : UINT32_MAX;
	uint64_t expand = 0;
	struct json_node *n, scratch;
	uint8_t type;
	int kept;

	lazy_free(doc);
	doc->text = text;
	doc->textlen = len;
	doc->nnodes = 0;
	doc->strlen_ = 0;
	doc->err[0] = '\0';
	if (len >= UINT32_MAX)
		return fail(doc, "input too large");
	p = skip_ws(p, end);
	if (p == end)
		return fail(doc, "empty input");

value:
	/* p is at the first byte of a value, whitespace skipped. */
	if (p >= end)
		return fail(doc, "unexpected end of input");
	/* Deeper than keep_depth: validated, not stored (n is scratch). */
	kept = depth <= keep;
	if (JSON_LIKELY(kept)) {
		if (JSON_UNLIKELY(doc->nnodes == doc->capnodes) && grow_nodes(doc) < 0)
			return fail(doc, "out of memory");
		idx = doc->nnodes++;
		n = &doc->nodes[idx];
	} else {
		idx = 0;
		n = &scratch;
	}
	n->start = (uint32_t)(p - base);
	n->len = 0;
	n->first = n->next = n->count = 0;
	n->key_off = key_off;
	n->key_len = key_len;
	n->str_off = n->str_len = 0;
	key_off = key_len = 0;
	if (depth > 0 && kept) {
		f = &stack[depth - 1];
		if (f->last)
			doc->nodes[f->last].next = idx;
		else
			doc->nodes[f->node].first = idx;
		f->last = idx;
		doc->nodes[f->node].count++;
	}
	switch (*p) {
	case '{':
	case '[':
		if (depth == JSON_MAX_DEPTH)
			return fail(doc, "nesting deeper than %d at offset %zu",
			    JSON_MAX_DEPTH, (size_t)(p - base));
		type = *p == '{' ? JSON_OBJECT : JSON_ARRAY;
		n->type = type;
		stack[depth].node = idx;
		stack[depth].last = 0;
		stack[depth].type = type;
		stack[depth].kept = (uint8_t)kept;
		depth++;
		p = skip_ws(p + 1, end);
		if (p < end && *p == (type == JSON_OBJECT ? '}' : ']'))
			goto close;
		if (type == JSON_ARRAY)
			goto value;
		goto key;
	case '"':
		n->type = JSON_STRING;
		/* at keep_depth itself: measured now, decoded if asked */
		if (parse_string(doc, base, &p, end, &str_off, &str_len, depth < keep) < 0)
			return -1;
		n->str_off = str_off;
		n->str_len = str_len;
		break;
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		n->type = JSON_NUMBER;
		if (parse_number(doc, base, &p, end, &expand) < 0)
			return -1;
		break;
	case 't':
		n->type = JSON_TRUE;
		if (parse_literal(doc, base, &p, end, "true", 4) < 0)
			return -1;
		break;
	case 'f':
		n->type = JSON_FALSE;
		if (parse_literal(doc, base, &p, end, "false", 5) < 0)
			return -1;
		break;
	case 'n':
		n->type = JSON_NULL;
		if (parse_literal(doc, base, &p, end, "null", 4) < 0)
			return -1;
		break;
	default:
		return unexpected(doc, base, p, end);
	}
	n->len = (uint32_t)(p - base) - n->start;

after:
	/* Just past a complete value. */
	if (depth == 0)
		goto done;
	p = skip_ws(p, end);
	if (p >= end)
		return fail(doc, "unexpected end of input");
	f = &stack[depth - 1];
	if (f->type == JSON_ARRAY) {
		if (*p == ',') {
			p = skip_ws(p + 1, end);
			goto value;
		}
		if (*p == ']')
			goto close;
		return unexpected(doc, base, p, end);
	}
	if (*p == ',') {
		p = skip_ws(p + 1, end);
		goto key;
	}
	if (*p == '}')
		goto close;
	return unexpected(doc, base, p, end);

key:
	/* p is where an object member's key must start. */
	if (p >= end || *p != '"')
		return unexpected(doc, base, p, end);
	/* the key of a member at depth `depth`: decoded if the member is kept */
	if (parse_string(doc, base, &p, end, &key_off, &key_len, depth <= keep) < 0)
		return -1;
	p = skip_ws(p, end);
	if (p >= end || *p != ':')
		return unexpected(doc, base, p, end);
	p = skip_ws(p + 1, end);
	goto value;

close:
	/* p is at the bracket closing the innermost open container. */
	idx = stack[--depth].node;
	p++;
	if (stack[depth].kept)
		doc->nodes[idx].len = (uint32_t)(p - base) - doc->nodes[idx].start;
	goto after;

done:
	p = skip_ws(p, end);
	if (p < end) {
		if (*p >= 0x80 && utf8_seq(p, end) == 0)
			return fail(doc, "invalid UTF-8 at offset %zu",
			    (size_t)(p - base));
		return fail(doc, "trailing data at offset %zu",
		    (size_t)(p - base));
	}
	return 0;
}

uint32_t
json_get(const struct json_doc *doc, uint32_t obj, const char *key)
{
	const struct json_node *n;
	size_t klen = strlen(key);
	uint32_t i, found = 0;

	if (obj >= doc->nnodes || doc->nodes[obj].type != JSON_OBJECT)
		return 0;
	for (i = doc->nodes[obj].first; i != 0; i = n->next) {
		n = &doc->nodes[i];
		if (n->key_len == klen &&
		    memcmp(doc->str + n->key_off, key, klen) == 0)
			found = i;
	}
	return found;
}

uint32_t
json_at(const struct json_doc *doc, uint32_t arr, uint32_t n)
{
	uint32_t i;

	if (arr >= doc->nnodes || doc->nodes[arr].type != JSON_ARRAY ||
	    n >= doc->nodes[arr].count)
		return 0;
	for (i = doc->nodes[arr].first; n > 0; n--)
		i = doc->nodes[i].next;
	return i;
}

/*
 * Decode string node i, which the parse only validated and measured, into
 * a block of its own on doc->lazy: pointers json_str returned before stay
 * valid, and a second call finds the block.  NULL if out of memory.
 */
static JSON_COLD const char *
lazy_str(struct json_doc *doc, uint32_t i)
{
	const struct json_node *n = &doc->nodes[i];
	const unsigned char *base = (const unsigned char *)doc->text;
	const unsigned char *p = base + n->start;
	struct json_doc tmp;
	struct json_lazy *l;
	uint32_t off, len;

	for (l = doc->lazy; l != NULL; l = l->next)
		if (l->node == i)
			return l->s;
	/*
	 * The same decoder, on the literal alone, straight into the block:
	 * it asks for the literal's length (the rest of its input), which
	 * the block has, so it never grows the buffer it was lent.
	 */
	if ((l = malloc(sizeof(*l) + (size_t)n->len)) == NULL)
		return NULL;
	json_doc_init(&tmp);
	tmp.str = l->s;
	tmp.strcap = n->len;
	if (parse_string(&tmp, base, &p, base + n->start + n->len, &off, &len, 1) < 0 ||
	    len != n->str_len) {
		free(l);
		return NULL;
	}
	l->node = i;
	l->next = doc->lazy;
	doc->lazy = l;
	return l->s;
}

const char *
json_str(const struct json_doc *doc, uint32_t i, size_t *len)
{
	const char *s;

	if (i >= doc->nnodes || doc->nodes[i].type != JSON_STRING) {
		if (len != NULL)
			*len = 0;
		return NULL;
	}
	if (len != NULL)
		*len = doc->nodes[i].str_len;
	if (JSON_LIKELY(doc->nodes[i].str_off != JSON_STR_LAZY))
		return doc->str + doc->nodes[i].str_off;
	/* logically const: the lazy list is a cache of what the text says */
	s = lazy_str((struct json_doc *)(uintptr_t)doc, i);
	if (s == NULL && len != NULL)
		*len = 0;
	return s;
}

double
json_double(const struct json_doc *doc, uint32_t i)
{
	double d;
	int erange;

	if (i >= doc->nnodes || doc->nodes[i].type != JSON_NUMBER)
		return 0.0;
	if (num_strtod((const unsigned char *)doc->text + doc->nodes[i].start,
	    doc->nodes[i].len, &d, &erange) < 0)
		return 0.0;
	return d;
}

int64_t
json_int(const struct json_doc *doc, uint32_t i)
{
	const unsigned char *p, *q, *e;
	uint64_t acc = 0, lim;
	unsigned dig;
	double d;
	int neg;

	if (i >= doc->nnodes || doc->nodes[i].type != JSON_NUMBER)
		return 0;
	p = (const unsigned char *)doc->text + doc->nodes[i].start;
	e = p + doc->nodes[i].len;
	neg = *p == '-';
	if (neg)
		p++;
	for (q = p; q < e && (unsigned)(*q - '0') < 10; q++)
		;
	if (q == e) {
		/* Plain integer literal: exact, saturating. */
		lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
		for (; p < e; p++) {
			dig = (unsigned)(*p - '0');
			if (acc > (lim - dig) / 10)
				return neg ? INT64_MIN : INT64_MAX;
			acc = acc * 10 + dig;
		}
		if (!neg)
			return (int64_t)acc;
		return acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
	}
	d = json_double(doc, i);
	if (d >= 9223372036854775808.0)
		return INT64_MAX;
	if (d <= -9223372036854775808.0)
		return INT64_MIN;
	return (int64_t)d;
}

/*
 * Writer.  Output is staged in a stack buffer so that a short string
 * costs one evbuffer_add; runs of bytes that need no escaping are copied
 * as a block, straight to the evbuffer when they are long.
 */
struct wbuf {
	struct evbuffer	*out;
	size_t		 n;
	unsigned char	 b[256];
};

static inline void
wbuf_flush(struct wbuf *w)
{
	if (w->n > 0) {
		evbuffer_add(w->out, w->b, w->n);
		w->n = 0;
	}
}

void
json_write_str(struct evbuffer *out, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len, *run;
	struct wbuf w;
	uint64_t v, m;
	size_t n, rl;
	unsigned c;

	w.out = out;
	w.n = 0;
	w.b[w.n++] = '"';
	while (p < end) {
		run = p;
		while (p < end) {
			if (end - p >= 8) {
				memcpy(&v, p, 8);
				if ((m = wspecial8(v)) == 0) {
					p += 8;
					continue;
				}
				p += FIRST_SPECIAL(m);
			}
			c = wr_class[*p];
			if (c == WC_SAFE)
				p++;
			else if (c == WC_HIGH && (n = utf8_seq(p, end)) != 0 &&
			    !(n == 3 && p[0] == 0xE2 && p[1] == 0x80 &&
			    (p[2] == 0xA8 || p[2] == 0xA9)))
				p += n;
			else
				break;
		}
		if (p > run) {
			rl = (size_t)(p - run);
			if (rl <= sizeof(w.b) - w.n) {
				memcpy(w.b + w.n, run, rl);
				w.n += rl;
			} else {
				wbuf_flush(&w);
				evbuffer_add(out, run, rl);
			}
		}
		if (p >= end)
			break;

		/* One character that needs an escape or a replacement. */
		if (sizeof(w.b) - w.n < 8)
			wbuf_flush(&w);
		c = *p;
		if (c >= 0x80) {
			if (utf8_seq(p, end) == 0) {
				/* U+FFFD for each byte that is not UTF-8. */
				w.b[w.n++] = 0xEF;
				w.b[w.n++] = 0xBF;
				w.b[w.n++] = 0xBD;
				p++;
			} else {
				/* U+2028, U+2029 */
				memcpy(w.b + w.n, "\\u202", 5);
				w.b[w.n + 5] = p[2] == 0xA8 ? '8' : '9';
				w.n += 6;
				p += 3;
			}
			continue;
		}
		w.b[w.n++] = '\\';
		switch (c) {
		case '"':  w.b[w.n++] = '"';  break;
		case '\\': w.b[w.n++] = '\\'; break;
		case '\n': w.b[w.n++] = 'n';  break;
		case '\r': w.b[w.n++] = 'r';  break;
		case '\t': w.b[w.n++] = 't';  break;
		case '\b': w.b[w.n++] = 'b';  break;
		case '\f': w.b[w.n++] = 'f';  break;
		default:
			w.b[w.n++] = 'u';
			w.b[w.n++] = '0';
			w.b[w.n++] = '0';
			w.b[w.n++] = (unsigned char)hexdig[c >> 4];
			w.b[w.n++] = (unsigned char)hexdig[c & 0xF];
			break;
		}
		p++;
	}
	if (w.n == sizeof(w.b))
		wbuf_flush(&w);
	w.b[w.n++] = '"';
	wbuf_flush(&w);
}

void
json_write_cstr(struct evbuffer *out, const char *s)
{
	json_write_str(out, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}
