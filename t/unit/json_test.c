/*
 * json_test.c - unit tests for worker/json.c, TAP output.
 *
 * Covers every rejection rule of json.h, the accepted edge cases (depth
 * 64, int64 limits, escapes and surrogate pairs), the node layout and raw
 * spans, json_get/json_at/json_int/json_double, the string writer, and
 * reuse of one document across many parses.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "json.h"
#include "tap.h"

static struct json_doc D;




/* Printable form of some bytes for test names (static buffer). */
static const char *
show(const char *s, size_t len)
{
	static char buf[4][128];
	static int k;
	char *b = buf[k++ & 3];
	size_t o = 0;

	for (size_t i = 0; i < len && o < 100; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '#')
			b[o++] = (char)c;
		else
			o += (size_t)sprintf(b + o, "\\x%02x", c);
	}
	if (o >= 100)
		o += (size_t)sprintf(b + o, "...");
	b[o] = '\0';
	return b;
}

/* Parse must fail and doc.err must contain `want`. */
static void
rejects_n(const char *text, size_t len, const char *want)
{
	int rc = json_parse(&D, text, len);

	ok(rc == -1 && strstr(D.err, want) != NULL, "reject %s: %s",
	    show(text, len), rc == -1 ? D.err : "(accepted)");
	if (rc != -1 || strstr(D.err, want) == NULL)
		diag("want error containing \"%s\"", want);
}

static void
rejects(const char *text, const char *want)
{
	rejects_n(text, strlen(text), want);
}

/* Parse must fail with exactly the message `want`. */
static void
reject_exact(const char *text, size_t len, const char *want)
{
	int rc = json_parse(&D, text, len);

	ok(rc == -1 && strcmp(D.err, want) == 0, "reject %s: \"%s\"",
	    show(text, len), want);
	if (rc != -1 || strcmp(D.err, want) != 0)
		diag("got rc %d err \"%s\"", rc, D.err);
}

static int
accepts_n(const char *text, size_t len)
{
	int rc = json_parse(&D, text, len);

	ok(rc == 0, "accept %s", show(text, len));
	if (rc != 0)
		diag("err: %s", D.err);
	return rc == 0;
}

static int
accepts(const char *text)
{
	return accepts_n(text, strlen(text));
}

/* Parse `text` whose root is a string and compare the decoded value. */
static void
decodes_to(const char *text, const char *want, size_t wantlen)
{
	size_t len = 0;
	const char *s = NULL;
	int rc = json_parse(&D, text, strlen(text));

	if (rc == 0)
		s = json_str(&D, 0, &len);
	ok(rc == 0 && s != NULL && len == wantlen &&
	    memcmp(s, want, wantlen) == 0 && s[len] == '\0',
	    "decode %s -> %s", show(text, strlen(text)), show(want, wantlen));
	if (rc != 0)
		diag("err: %s", D.err);
}

static char *
repeat(const char *a, int n, const char *mid, const char *b, int m)
{
	size_t la = strlen(a), lm = strlen(mid), lb = strlen(b);
	char *s = malloc(la * (size_t)n + lm + lb * (size_t)m + 1), *p = s;

	for (int i = 0; i < n; i++, p += la)
		memcpy(p, a, la);
	memcpy(p, mid, lm);
	p += lm;
	for (int i = 0; i < m; i++, p += lb)
		memcpy(p, b, lb);
	*p = '\0';
	return s;
}

static void
test_reject_utf8(void)
{
	static const struct { const char *s; size_t len; } bad[] = {
#define B(x) { x, sizeof(x) - 1 }
		B("\"\xC0\x80\""),		/* overlong NUL */
		B("\"\xC1\xBF\""),		/* overlong 2-byte */
		B("\"\xE0\x80\x80\""),		/* overlong 3-byte */
		B("\"\xE0\x9F\xBF\""),
		B("\"\xF0\x80\x80\x80\""),	/* overlong 4-byte */
		B("\"\xF0\x8F\xBF\xBF\""),
		B("\"\xED\xA0\x80\""),		/* U+D800 in UTF-8 */
		B("\"\xED\xBF\xBF\""),		/* U+DFFF in UTF-8 */
		B("\"\xED\xB0\x80\""),
		B("\"\xF4\x90\x80\x80\""),	/* U+110000 */
		B("\"\xF5\x80\x80\x80\""),
		B("\"\xF8\x88\x80\x80\x80\""),
		B("\"\xFF\""),
		B("\"\xFE\""),
		B("\"\x80\""),			/* lone continuation */
		B("\"a\xBF\""),
		B("\"\xE2\x82\""),		/* truncated */
		B("\"\xE2\""),
		B("\"\xF0\x9F\x98\""),
		B("\"\xC3\""),
		B("\"\xC3"),			/* truncated at end of input */
		B("\"\xF0\x9F\x98"),
		B("\"\xC3\x28\""),		/* bad continuation */
		B("\"\xE2\x28\xA1\""),
		B("\"\xF0\x28\x8C\xBC\""),
		B("{\"k\xFF\":1}"),		/* in a key */
		B("\xFF"),			/* outside strings */
		B("[\xC3\x28]"),
		B("1 \xFF"),
		B("\"abcdefghijklmnop\xFFqrstuvwxyz\""),
		B("\"abcdefghijklmnop\xED\xA0\x80qrstuvwxyz\""),
#undef B
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		rejects_n(bad[i].s, bad[i].len, "invalid UTF-8 at offset ");
	reject_exact("[\"ab\", \"x\xC0\x80\"]", 13, "invalid UTF-8 at offset 9");
	reject_exact("\"abcdefghijk\xFF\"", 14, "invalid UTF-8 at offset 12");
	reject_exact("  \xE9", 3, "invalid UTF-8 at offset 2");
	/* Valid UTF-8 outside a string is still not JSON. */
	reject_exact("\xC3\xA9", 2, "unexpected character U+00E9 at offset 0");
}

static void
test_reject_nul_ctrl(void)
{
	char buf[64];

	rejects_n("\"a\0b\"", 5, "U+0000 in string at offset 2");
	rejects_n("\"\0\"", 3, "U+0000 in string at offset 1");
	rejects_n("{\"a\0\":1}", 8, "U+0000 in string at offset 3");
	rejects("\"\\u0000\"", "U+0000 in string at offset 1");
	rejects("\"abc\\u0000\"", "U+0000 in string at offset 4");
	rejects("{\"\\u0000\":1}", "U+0000 in string at offset 2");
	rejects_n("[1,\0]", 5, "unexpected byte 0x00 at offset 3");
	for (int c = 1; c < 0x20; c++) {
		snprintf(buf, sizeof(buf), "\"ab%c\"", c);
		rejects(buf, "control character");
	}
	reject_exact("\"a\nb\"", 5, "control character 0x0a in string at offset 2");
	reject_exact("\"\t\"", 3, "control character 0x09 in string at offset 1");
	reject_exact("{\"k\x1f\":1}", 8, "control character 0x1f in string at offset 3");
	reject_exact("\"0123456789abcdef\x01\"", 19,
	    "control character 0x01 in string at offset 17");
	accepts("\"\x7f\"");
}

static void
test_reject_surrogates(void)
{
	reject_exact("\"\\ud800\"", 8, "unpaired surrogate \\ud800 at offset 1");
	reject_exact("\"\\udc00\"", 8, "unpaired surrogate \\udc00 at offset 1");
	rejects("\"\\uDFFF\"", "unpaired surrogate");
	rejects("\"\\uDBFF\"", "unpaired surrogate");
	rejects("\"\\ud800x\"", "unpaired surrogate");
	rejects("\"\\ud800\\u0041\"", "unpaired surrogate");
	rejects("\"\\ud800\\ud800\"", "unpaired surrogate");
	rejects("\"\\ud800\\n\"", "unpaired surrogate");
	rejects("\"\\ude00\\ud83d\"", "unpaired surrogate");
	rejects("\"\\ud800", "unpaired surrogate");
	rejects("\"ab\\ud83d\\ude0", "unpaired surrogate");
	rejects("{\"\\udc00\":1}", "unpaired surrogate \\udc00 at offset 2");
}

static void
test_reject_numbers(void)
{
	char *s;

	reject_exact("1e400", 5, "number out of range at offset 0");
	reject_exact("[1, 1e400]", 10, "number out of range at offset 4");
	reject_exact("{\"a\":1e131071}", 14, "number out of range at offset 5");
	rejects("-1e309", "number out of range at offset 0");
	rejects("1E+400", "number out of range");
	rejects("1.8e308", "number out of range");
	rejects("-1.7976931348623159e308", "number out of range");
	rejects("123456789e301", "number out of range");
	accepts("123456789e300");
	rejects("1e99999999999999999999999", "number out of range");
	/* 309 nines is above DBL_MAX. */
	s = repeat("9", 309, "", "", 0);
	rejects(s, "number out of range at offset 0");
	free(s);
	/* 400-digit integer, long enough for the heap copy. */
	s = repeat("1", 400, ".5", "", 0);
	rejects(s, "number out of range");
	free(s);
	/* long mantissa with exponent, heap copy */
	s = repeat("0.", 1, "", "0", 100);
	s = realloc(s, strlen(s) + 8);
	strcat(s, "1e400");	/* 1e299 */
	accepts(s);
	strcpy(s + strlen(s) - 3, "410");	/* 1e309 */
	rejects(s, "number out of range");
	free(s);

	reject_exact("01", 2, "leading zero in number at offset 0");
	rejects("-01", "leading zero in number at offset 0");
	rejects("00", "leading zero");
	rejects("[1,00.5]", "leading zero in number at offset 3");
	rejects("+1", "unexpected character '+' at offset 0");
	rejects(".5", "unexpected character '.' at offset 0");
	rejects("1.", "unexpected end of input");
	rejects("1.e5", "unexpected character 'e' at offset 2");
	rejects("[1.]", "unexpected character ']' at offset 3");
	rejects("1e", "unexpected end of input");
	rejects("1e+", "unexpected end of input");
	rejects("1e+x", "unexpected character 'x' at offset 3");
	rejects("-", "unexpected end of input");
	rejects("--1", "unexpected character '-' at offset 1");
	rejects("- 1", "unexpected byte 0x20 at offset 1");
	rejects("0x10", "trailing data at offset 1");
	rejects("1.5.5", "trailing data at offset 3");
	rejects("NaN", "unexpected character 'N' at offset 0");
	rejects("nan", "unexpected character 'a' at offset 1");
	rejects("Infinity", "unexpected character 'I' at offset 0");
	rejects("-Infinity", "unexpected character 'I' at offset 1");
	rejects("[Infinity]", "unexpected character 'I' at offset 1");
	rejects("{\"a\":NaN}", "unexpected character 'N' at offset 5");
}

static void
test_reject_syntax(void)
{
	rejects("", "empty input");
	rejects(" \t\r\n ", "empty input");
	rejects_n("", 0, "empty input");
	rejects("\f1", "unexpected byte 0x0c at offset 0");
	rejects("\v", "unexpected byte 0x0b at offset 0");
	rejects("'a'", "unexpected character ''' at offset 0");
	rejects("{'a':1}", "unexpected character ''' at offset 1");
	rejects("[\"a\",'b']", "unexpected character ''' at offset 5");
	rejects("/* c */ 1", "unexpected character '/' at offset 0");
	rejects("1 // c", "trailing data at offset 2");
	rejects("[1 /*x*/]", "unexpected character '/' at offset 3");
	rejects("{\"a\":1 # c\n}", "unexpected character '#' at offset 7");
	rejects("[1,]", "unexpected character ']' at offset 3");
	rejects("[1, ]", "unexpected character ']' at offset 4");
	rejects("{\"a\":1,}", "unexpected character '}' at offset 7");
	rejects("[,]", "unexpected character ',' at offset 1");
	rejects("[,1]", "unexpected character ',' at offset 1");
	rejects("{,}", "unexpected character ',' at offset 1");
	rejects("[1,,2]", "unexpected character ',' at offset 3");
	rejects("[1 2]", "unexpected character '2' at offset 3");
	rejects("{\"a\" 1}", "unexpected character '1' at offset 5");
	rejects("{\"a\":}", "unexpected character '}' at offset 5");
	rejects("{\"a\"}", "unexpected character '}' at offset 4");
	rejects("{1:2}", "unexpected character '1' at offset 1");
	rejects("{a:2}", "unexpected character 'a' at offset 1");
	rejects("{\"a\":1 \"b\":2}", "unexpected character '\"' at offset 7");
	rejects("[}", "unexpected character '}' at offset 1");
	rejects("{]", "unexpected character ']' at offset 1");
	rejects("[1}", "unexpected character '}' at offset 2");
	rejects("{\"a\":1]", "unexpected character ']' at offset 6");
	rejects("]", "unexpected character ']' at offset 0");
	rejects("1 2", "trailing data at offset 2");
	rejects("{} x", "trailing data at offset 3");
	rejects("[]]", "trailing data at offset 2");
	rejects("nullx", "trailing data at offset 4");
	rejects("truefalse", "trailing data at offset 4");
	rejects("\"a\" \"b\"", "trailing data at offset 4");
	reject_exact("{\"a\": 1} x", 10, "trailing data at offset 9");
	reject_exact("[1]\n\n\t  {}", 10, "trailing data at offset 8");
	rejects("[", "unexpected end of input");
	rejects("[1", "unexpected end of input");
	rejects("[1,", "unexpected end of input");
	rejects("{", "unexpected end of input");
	rejects("{\"a\"", "unexpected end of input");
	rejects("{\"a\":", "unexpected end of input");
	rejects("{\"a\":1", "unexpected end of input");
	rejects("{\"a\":1,", "unexpected end of input");
	rejects("\"abc", "unexpected end of input");
	rejects("\"abcdefghijklmnopqrstuvwxyz", "unexpected end of input");
	rejects("\"abc\\", "unexpected end of input");
	rejects("\"\\u12", "unexpected end of input");
	rejects("tru", "unexpected end of input");
	rejects("nul", "unexpected end of input");
	rejects("True", "unexpected character 'T' at offset 0");
	rejects("nulL", "unexpected character 'L' at offset 3");
	rejects("fals3", "unexpected character '3' at offset 4");
	rejects("undefined", "unexpected character 'u' at offset 0");
	rejects("\"\\x\"", "invalid escape '\\x' at offset 1");
	rejects("\"\\U0041\"", "invalid escape '\\U' at offset 1");
	rejects("\"\\'\"", "invalid escape");
	rejects("\"\\u12G4\"", "invalid \\u escape at offset 1");
	rejects("\"\\u-123\"", "invalid \\u escape at offset 1");
	rejects("\"\\u 123\"", "invalid \\u escape at offset 1");
	rejects("\"a\\\n\"", "unexpected byte 0x0a at offset 3");
	/* A valid prefix followed by a bad value deep inside. */
	rejects("{\"a\":[1,{\"b\":[tru]}]}", "unexpected character ']' at offset 17");
}

static void
test_depth(void)
{
	char *s;
	char want[64];

	s = repeat("[", 64, "", "]", 64);
	if (accepts(s))
		ok(D.nnodes == 64 && D.nodes[63].type == JSON_ARRAY &&
		    D.nodes[63].count == 0 && D.nodes[0].len == 128,
		    "depth 64 arrays: 64 nodes, root spans all");
	free(s);
	s = repeat("[", 64, "1", "]", 64);
	if (accepts(s))
		ok(D.nnodes == 65 && json_int(&D, 64) == 1, "depth 64 with scalar inside");
	free(s);
	s = repeat("{\"a\":", 63, "{}", "}", 63);
	accepts(s);
	free(s);
	s = repeat("[", 65, "", "]", 65);
	reject_exact(s, strlen(s), "nesting deeper than 64 at offset 64");
	free(s);
	s = repeat("{\"a\":", 64, "{}", "}", 64);
	snprintf(want, sizeof(want), "nesting deeper than 64 at offset %d", 64 * 5);
	reject_exact(s, strlen(s), want);
	free(s);
	s = repeat("[{\"k\":", 40, "[", "}]", 40);	/* 81 opened, unterminated */
	rejects(s, "nesting deeper than 64 at offset ");
	free(s);
	/* Deep but closed again, then deep again: depth is per path. */
	s = repeat("[", 64, "", "]", 64);
	{
		/* "[" + 63*"[" + 63*"]" + "," + 63*"[" + 63*"]" + "]" */
		size_t l = strlen(s);
		char *t = malloc(2 * l + 4);
		sprintf(t, "[%.*s,%.*s]", (int)(l - 2), s + 1, (int)(l - 2), s + 1);
		accepts(t);
		free(t);
	}
	free(s);
	/* 100000 levels must fail cleanly (no recursion). */
	s = repeat("[", 100000, "", "", 0);
	rejects(s, "nesting deeper than 64 at offset 64");
	free(s);
}

static void
test_scalars(void)
{
	if (accepts("null"))
		ok(D.nnodes == 1 && json_type_of(&D, 0) == JSON_NULL, "null root");
	if (accepts(" true "))
		ok(json_type_of(&D, 0) == JSON_TRUE && D.nodes[0].start == 1 &&
		    D.nodes[0].len == 4, "true root, span excludes whitespace");
	if (accepts("false"))
		ok(json_type_of(&D, 0) == JSON_FALSE, "false root");
	if (accepts("3"))
		ok(json_type_of(&D, 0) == JSON_NUMBER && json_int(&D, 0) == 3, "3 root");
	if (accepts("\t\r\n\"s\" \n"))
		ok(json_type_of(&D, 0) == JSON_STRING && D.nodes[0].start == 3 &&
		    D.nodes[0].len == 3, "string root span includes quotes");
	accepts("0");
	accepts("-0");
	accepts("0.5");
	accepts("-0.0e-0");
	accepts("0e5");
	accepts("0E+5");
	accepts("1e-400");
	accepts("-1e-400");
	accepts("4.9e-324");
	accepts("1e-320");
	accepts("1.7976931348623157e308");
	accepts("-1.7976931348623157e308");
	accepts("1e308");
	{
		char *s = repeat("9", 308, "", "", 0);	/* < 1e308 */
		accepts(s);
		free(s);
		s = repeat("1", 1, "", "0", 308);	/* exactly 1e308 */
		accepts(s);
		free(s);
		s = repeat("0.", 1, "", "0", 500);	/* long fraction */
		accepts(s);
		free(s);
	}
	accepts("[]");
	accepts("{}");
	accepts(" [ ] ");
	accepts("{ }");
	accepts("[[],{},[{}]]");
	accepts("{\"\":\"\"}");
	accepts("{\"a\":[1,{\"b\":null}],\"c\":true}");
}

static void
test_strings(void)
{
	char *s, *in, *want;

	decodes_to("\"\"", "", 0);
	decodes_to("\"abc\"", "abc", 3);
	decodes_to("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
	decodes_to("\"\\u00e9\"", "\xC3\xA9", 2);
	decodes_to("\"\\u00E9\"", "\xC3\xA9", 2);
	decodes_to("\"caf\\u00e9!\"", "caf\xC3\xA9!", 6);
	decodes_to("\"\\u0001\"", "\x01", 1);
	decodes_to("\"\\u007f\\u0080\\u07ff\\u0800\"", "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80", 8);
	decodes_to("\"\\u20AC\"", "\xE2\x82\xAC", 3);
	decodes_to("\"\\uffff\"", "\xEF\xBF\xBF", 3);
	decodes_to("\"\\ud7ff\\ue000\"", "\xED\x9F\xBF\xEE\x80\x80", 6);
	decodes_to("\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80", 4);
	decodes_to("\"\\uD834\\uDD1E\"", "\xF0\x9D\x84\x9E", 4);
	decodes_to("\"\\ud800\\udc00\"", "\xF0\x90\x80\x80", 4);
	decodes_to("\"\\udbff\\udfff\"", "\xF4\x8F\xBF\xBF", 4);
	decodes_to("\"x\\ud83d\\ude00y\\ud83d\\ude00\"", "x\xF0\x9F\x98\x80y\xF0\x9F\x98\x80", 10);
	decodes_to("\"\\u2028\\u2029\"", "\xE2\x80\xA8\xE2\x80\xA9", 6);
	/* Raw UTF-8 at the boundaries passes through. */
	decodes_to("\"\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF"
	    "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\"",
	    "\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF"
	    "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF", 24);
	decodes_to("\"h\xC3\xA9llo w\xC3\xB6rld, \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 end of line\"",
	    "h\xC3\xA9llo w\xC3\xB6rld, \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 end of line",
	    strlen("h\xC3\xA9llo w\xC3\xB6rld, \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 end of line"));

	/* An escape or a multi-byte character at every position of a long
	 * string, so the 8-byte scan is exercised at every alignment. */
	for (int pos = 0; pos < 40; pos++) {
		static const char *const esc[] = { "\\n", "\\u00e9", "\xC3\xA9", "\\\"", "\\ud83d\\ude00", "\xF0\x9F\x98\x80" };
		static const char *const dec[] = { "\n", "\xC3\xA9", "\xC3\xA9", "\"", "\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80" };
		int bad = 0;
		for (size_t e = 0; e < sizeof(esc) / sizeof(esc[0]); e++) {
			char a[128], b[128];
			int la, lb;
			la = snprintf(a, sizeof(a), "\"%.*s%s%.*s\"", pos,
			    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH", esc[e], 45 - pos,
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijk");
			lb = snprintf(b, sizeof(b), "%.*s%s%.*s", pos,
			    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH", dec[e], 45 - pos,
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijk");
			size_t l;
			const char *r;
			if (json_parse(&D, a, (size_t)la) != 0 ||
			    (r = json_str(&D, 0, &l)) == NULL || l != (size_t)lb ||
			    memcmp(r, b, l) != 0)
				bad++;
			/* and a control character at that position is caught there */
			a[1 + pos] = '\x02';
			if (json_parse(&D, a, (size_t)la) != -1 ||
			    strstr(D.err, "control character 0x02") == NULL)
				bad++;
			a[1 + pos] = '\xFF';
			{
				char w[64];
				snprintf(w, sizeof(w), "invalid UTF-8 at offset %d", 1 + pos);
				if (json_parse(&D, a, (size_t)la) != -1 ||
				    strcmp(D.err, w) != 0)
					bad++;
			}
		}
		ok(bad == 0, "escapes and errors at position %d of a long string", pos);
	}

	/* Long string: 1 MB of mixed content. */
	in = malloc(3 * 1000000 + 16);
	want = malloc(1000000 + 16);
	{
		size_t ip = 0, wp = 0;
		in[ip++] = '"';
		for (int i = 0; i < 1000000; i++) {
			char c = (char)('a' + i % 26);
			if (i % 1000 == 999) {
				memcpy(in + ip, "\\t", 2);
				ip += 2;
				c = '\t';
			} else
				in[ip++] = c;
			want[wp++] = c;
		}
		in[ip++] = '"';
		if (accepts_n(in, ip)) {
			size_t l;
			const char *r = json_str(&D, 0, &l);
			ok(l == wp && memcmp(r, want, l) == 0, "1 MB string decoded");
		}
	}
	free(in);
	free(want);

	/* Keys are decoded too. */
	s = "{\"\\u0061b\":1,\"\\ud83d\\ude00\":2,\"\":3}";
	if (accepts(s)) {
		ok(json_get(&D, 0, "ab") == 1, "escaped key found decoded");
		ok(json_get(&D, 0, "\xF0\x9F\x98\x80") == 2, "surrogate-pair key");
		ok(json_get(&D, 0, "") == 3, "empty key");
		ok(D.nodes[1].key_len == 2 && D.str[D.nodes[1].key_off + 2] == '\0',
		    "key NUL-terminated");
	}
}

static void
test_layout(void)
{
	const char *t = " {\"data\" : {\"x\": [1, 2.50, \"s\"], \"y\":{}} ,\n"
	    "\"metadata\":null, \"n\": -12e1 } ";
	const char *r;
	size_t l;
	uint32_t data, x, meta;

	if (!accepts(t))
		return;
	/* 0 root, 1 data, 2 x, 3 1, 4 2.50, 5 "s", 6 y, 7 metadata, 8 n */
	ok(D.nnodes == 9, "9 nodes (%u)", D.nnodes);
	ok(D.nodes[0].type == JSON_OBJECT && D.nodes[0].count == 3 &&
	    D.nodes[0].first == 1 && D.nodes[0].next == 0, "root object");
	r = json_raw(&D, 0, &l);
	ok(r == t + 1 && l == strlen(t) - 2, "root raw span");
	data = json_get(&D, 0, "data");
	ok(data == 1 && D.nodes[1].next == 7 && D.nodes[7].next == 8 &&
	    D.nodes[8].next == 0, "root members linked in order");
	r = json_raw(&D, data, &l);
	ok(l == strlen("{\"x\": [1, 2.50, \"s\"], \"y\":{}}") &&
	    memcmp(r, "{\"x\": [1, 2.50, \"s\"], \"y\":{}}", l) == 0,
	    "raw span of data object");
	ok(D.nodes[data].count == 2 && D.nodes[data].first == 2, "data has 2 members");
	x = json_get(&D, data, "x");
	ok(x == 2 && D.nodes[x].type == JSON_ARRAY && D.nodes[x].count == 3 &&
	    D.nodes[x].first == 3, "x array");
	r = json_raw(&D, x, &l);
	ok(l == 14 && memcmp(r, "[1, 2.50, \"s\"]", l) == 0, "raw span of array");
	ok(json_at(&D, x, 0) == 3 && json_at(&D, x, 1) == 4 &&
	    json_at(&D, x, 2) == 5 && json_at(&D, x, 3) == 0 &&
	    json_at(&D, x, 1000) == 0, "json_at");
	r = json_raw(&D, 4, &l);
	ok(l == 4 && memcmp(r, "2.50", 4) == 0, "raw number keeps precision text");
	r = json_raw(&D, 5, &l);
	ok(l == 3 && memcmp(r, "\"s\"", 3) == 0, "raw string includes quotes");
	ok(strcmp(json_str(&D, 5, &l), "s") == 0 && l == 1, "json_str");
	ok(json_str(&D, 4, &l) == NULL && l == 0, "json_str on a number is NULL");
	ok(D.nodes[5].next == 0 && D.nodes[3].next == 4 && D.nodes[4].next == 5,
	    "array elements linked");
	ok(D.nodes[6].type == JSON_OBJECT && D.nodes[6].count == 0 &&
	    D.nodes[6].first == 0 && D.nodes[6].len == 2, "empty object node");
	meta = json_get(&D, 0, "metadata");
	ok(meta == 7 && json_type_of(&D, meta) == JSON_NULL, "metadata null");
	r = json_raw(&D, meta, &l);
	ok(l == 4 && memcmp(r, "null", 4) == 0, "raw null");
	ok(json_int(&D, json_get(&D, 0, "n")) == -120 &&
	    json_double(&D, 8) == -120.0, "n = -12e1");
	ok(strcmp(D.str + D.nodes[1].key_off, "data") == 0 &&
	    D.nodes[1].key_len == 4, "member key in str");
	ok(D.nodes[3].key_len == 0, "array element has no key");
	ok(json_get(&D, 0, "missing") == 0 && json_get(&D, 0, "dat") == 0 &&
	    json_get(&D, 0, "datax") == 0, "absent keys give 0");
	ok(json_get(&D, x, "x") == 0 && json_get(&D, 5, "x") == 0,
	    "json_get on non-object gives 0");
	ok(json_at(&D, 0, 0) == 0, "json_at on non-array gives 0");
	ok(json_int(&D, 5) == 0 && json_double(&D, 5) == 0.0,
	    "json_int/json_double on non-number give 0");
}

static void
test_duplicates(void)
{
	if (accepts("{\"a\":1,\"b\":2,\"a\":3}")) {
		uint32_t a = json_get(&D, 0, "a");
		ok(a == 3 && json_int(&D, a) == 3, "last duplicate wins");
		ok(D.nodes[0].count == 3, "duplicates all counted");
		ok(json_int(&D, json_get(&D, 0, "b")) == 2, "other key intact");
	}
	if (accepts("{\"a\":{\"z\":1},\"a\":[2],\"a\":\"three\"}")) {
		uint32_t a = json_get(&D, 0, "a");
		ok(json_type_of(&D, a) == JSON_STRING &&
		    strcmp(json_str(&D, a, NULL), "three") == 0,
		    "last duplicate wins over containers");
	}
	if (accepts("{\"a\":1,\"\\u0061\":2}"))
		ok(json_int(&D, json_get(&D, 0, "a")) == 2,
		    "duplicates compared after decoding");
}

static void
test_ints(void)
{
	static const struct { const char *s; int64_t v; } cases[] = {
		{ "0", 0 }, { "-0", 0 }, { "1", 1 }, { "-1", -1 },
		{ "2.7", 2 }, { "-2.7", -2 }, { "1e3", 1000 }, { "-0.5", 0 },
		{ "0.999", 0 }, { "1E3", 1000 }, { "2.5e1", 25 }, { "1e-5", 0 },
		{ "-1e-400", 0 }, { "123456789012345678", 123456789012345678LL },
		{ "9007199254740993", 9007199254740993LL },	/* not a double */
		{ "-9007199254740993", -9007199254740993LL },
		{ "9223372036854775807", INT64_MAX },
		{ "-9223372036854775808", INT64_MIN },
		{ "9223372036854775806", INT64_MAX - 1 },
		{ "-9223372036854775807", -INT64_MAX },
		{ "9223372036854775808", INT64_MAX },
		{ "-9223372036854775809", INT64_MIN },
		{ "18446744073709551615", INT64_MAX },
		{ "18446744073709551616", INT64_MAX },
		{ "-18446744073709551616", INT64_MIN },
		{ "99999999999999999999999999999999999999", INT64_MAX },
		{ "1e18", 1000000000000000000LL },
		{ "1e19", INT64_MAX }, { "-1e19", INT64_MIN },
		{ "9.2233720368547758e18", INT64_MAX },
		{ "-9.2233720368547758e18", INT64_MIN },
		{ "9.223372036854775e18", 9223372036854774784LL },
		{ "1.5e300", INT64_MAX }, { "-1e300", INT64_MIN },
		{ "1.7976931348623157e308", INT64_MAX },
		{ "4503599627370497.5", 4503599627370498LL },	/* via the double */
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = json_parse(&D, cases[i].s, strlen(cases[i].s));
		int64_t v = rc == 0 ? json_int(&D, 0) : -42;
		ok(rc == 0 && v == cases[i].v, "json_int(%s) = %lld (got %lld)",
		    cases[i].s, (long long)cases[i].v, (long long)v);
	}
	snprintf(buf, sizeof(buf), "[%s, 0.1, -2.5e-3, 1e-400]", "12.5");
	if (accepts(buf)) {
		ok(json_double(&D, 1) == 12.5 && json_double(&D, 2) == 0.1 &&
		    json_double(&D, 3) == -2.5e-3 && json_double(&D, 4) == 0.0,
		    "json_double");
	}
	if (accepts("-0.0"))
		ok(json_double(&D, 0) == 0.0 && signbit(json_double(&D, 0)),
		    "json_double(-0.0) is negative zero");
	{
		/* Long number: heap copy in json_double. */
		char *s = repeat("1", 1, "", "0", 99);
		s = realloc(s, strlen(s) + 8);
		strcat(s, "e-94");	/* 1e99 * 1e-94 */
		if (accepts(s))
			ok(json_double(&D, 0) == 100000.0 && json_int(&D, 0) == 100000,
			    "long mantissa with exponent");
		free(s);
	}
}

static char *
wr(const char *s, size_t len, size_t *outlen)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *r;

	json_write_str(b, s, len);
	n = evbuffer_get_length(b);
	r = malloc(n + 1);
	evbuffer_remove(b, r, n);
	r[n] = '\0';
	evbuffer_free(b);
	*outlen = n;
	return r;
}

static void
writes(const char *s, size_t len, const char *want, size_t wantlen)
{
	size_t n;
	char *r = wr(s, len, &n);

	ok(n == wantlen && memcmp(r, want, n) == 0, "write %s -> %s",
	    show(s, len), show(want, wantlen));
	if (n != wantlen || memcmp(r, want, n) != 0)
		diag("got %s", show(r, n));
	free(r);
}

#define W(in, out) writes(in, sizeof(in) - 1, out, sizeof(out) - 1)

/* Tiny deterministic PRNG for the round-trip test. */
static uint32_t
rnd(void)
{
	static uint32_t x = 2463534242u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return x;
}

static void
test_writer(void)
{
	struct evbuffer *b;
	char *in, *out;
	size_t n;
	int bad;

	W("", "\"\"");
	W("abc", "\"abc\"");
	W("a\"b\\c/d", "\"a\\\"b\\\\c/d\"");
	W("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
	W("\x01\x1f\x0b", "\"\\u0001\\u001f\\u000b\"");
	W("a\0b", "\"a\\u0000b\"");
	W("\x7f", "\"\x7f\"");
	W("<a>&</a>", "\"\\u003ca\\u003e\\u0026\\u003c/a\\u003e\"");
	W("\xE2\x80\xA8x\xE2\x80\xA9", "\"\\u2028x\\u2029\"");
	W("\xE2\x80\xA7\xE2\x80\xAA", "\"\xE2\x80\xA7\xE2\x80\xAA\"");
	W("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
	W("\xFF", "\"\xEF\xBF\xBD\"");
	W("a\xC0\x80z", "\"a\xEF\xBF\xBD\xEF\xBF\xBDz\"");
	W("\xED\xA0\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
	W("\xE2\x82", "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
	W("x\xF4\x90\x80\x80", "\"x\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");
	W("\xC3", "\"\xEF\xBF\xBD\"");

	b = evbuffer_new();
	json_write_cstr(b, "x<y");
	json_write_cstr(b, NULL);
	n = evbuffer_get_length(b);
	out = malloc(n + 1);
	evbuffer_remove(b, out, n);
	out[n] = '\0';
	ok(strcmp(out, "\"x\\u003cy\"\"\"") == 0, "json_write_cstr, NULL as \"\"");
	free(out);
	evbuffer_free(b);

	/* Long runs and many escapes cross the staging buffer boundaries. */
	for (size_t len = 250; len < 270; len++) {
		in = malloc(len * 2 + 1);
		for (size_t i = 0; i < len; i++)
			in[i] = 'a';
		out = wr(in, len, &n);
		bad = n != len + 2 || out[0] != '"' || out[n - 1] != '"' ||
		    memcmp(out + 1, in, len) != 0;
		free(out);
		for (size_t i = 0; i < len; i++)
			in[i] = '<';
		out = wr(in, len, &n);
		bad |= n != len * 6 + 2;
		for (size_t i = 0; i < len && !bad; i++)
			bad |= memcmp(out + 1 + 6 * i, "\\u003c", 6) != 0;
		free(out);
		ok(!bad, "write %zu plain and %zu escaped bytes", len, len);
		free(in);
	}

	/* Each kind of special byte at every alignment of a long string. */
	for (int pos = 0; pos < 40; pos++) {
		static const char *const sp[] = { "<", ">", "&", "\"", "\\",
		    "\n", "\x01", "\x1f", "\xE2\x80\xA8", "\xFF", "\xC3\xA9",
		    "\xF0\x9F\x98\x80", "\xE2\x82" };
		static const char *const esc[] = { "\\u003c", "\\u003e",
		    "\\u0026", "\\\"", "\\\\", "\\n", "\\u0001", "\\u001f",
		    "\\u2028", "\xEF\xBF\xBD", "\xC3\xA9", "\xF0\x9F\x98\x80",
		    "\xEF\xBF\xBD\xEF\xBF\xBD" };
		static const char fill[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP";
		bad = 0;
		for (size_t k = 0; k < sizeof(sp) / sizeof(sp[0]); k++) {
			char a[128], e[128];
			int la = snprintf(a, sizeof(a), "%.*s%s%.*s", pos, fill,
			    sp[k], 44 - pos, fill + pos);
			int le = snprintf(e, sizeof(e), "\"%.*s%s%.*s\"", pos, fill,
			    esc[k], 44 - pos, fill + pos);
			out = wr(a, (size_t)la, &n);
			if (n != (size_t)le || memcmp(out, e, n) != 0) {
				if (bad++ == 0)
					diag("got %s", show(out, n));
			}
			free(out);
		}
		ok(bad == 0, "writer escapes at position %d of a long string", pos);
	}

	/* Round trip random valid UTF-8 (no NUL) through writer and parser. */
	bad = 0;
	for (int iter = 0; iter < 2000; iter++) {
		size_t len = rnd() % 600, o = 0, l;
		const char *d;

		in = malloc(len * 4 + 4);
		while (o < len) {
			uint32_t k = rnd() % 10, cp;
			if (k < 5)
				cp = 0x20 + rnd() % 0x60;
			else if (k < 7)
				cp = 1 + rnd() % 0x40;
			else if (k < 8)
				cp = 0x80 + rnd() % 0x780;
			else if (k < 9) {
				cp = 0x800 + rnd() % 0xF800;
				if (cp >= 0xD800 && cp < 0xE000)
					cp = 0x2028 + (cp & 1);
			} else
				cp = 0x10000 + rnd() % 0x100000;
			if (cp < 0x80)
				in[o++] = (char)cp;
			else if (cp < 0x800) {
				in[o++] = (char)(0xC0 | cp >> 6);
				in[o++] = (char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				in[o++] = (char)(0xE0 | cp >> 12);
				in[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
				in[o++] = (char)(0x80 | (cp & 0x3F));
			} else {
				in[o++] = (char)(0xF0 | cp >> 18);
				in[o++] = (char)(0x80 | (cp >> 12 & 0x3F));
				in[o++] = (char)(0x80 | (cp >> 6 & 0x3F));
				in[o++] = (char)(0x80 | (cp & 0x3F));
			}
		}
		out = wr(in, o, &n);
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)out[i] < 0x20 || out[i] == '<' ||
			    out[i] == '>' || out[i] == '&' ||
			    (i + 2 < n && memcmp(out + i, "\xE2\x80\xA8", 3) == 0))
				bad++;
		if (json_parse(&D, out, n) != 0 ||
		    (d = json_str(&D, 0, &l)) == NULL || l != o ||
		    memcmp(d, in, o) != 0) {
			if (bad++ == 0)
				diag("round trip failed at iteration %d: %s", iter, D.err);
		}
		free(out);
		free(in);
	}
	ok(bad == 0, "2000 random UTF-8 strings round-trip through writer and parser");
}

static void
test_reuse(void)
{
	struct json_doc d;
	struct json_node *nodes;
	char *str;
	char big[16384];
	int bad = 0;
	size_t o = 0;

	/* A document with many nodes and strings. */
	o += (size_t)sprintf(big + o, "{\"list\":[");
	for (int i = 0; i < 200; i++)
		o += (size_t)sprintf(big + o, "%s{\"k%d\":\"v\\u00e9%d\"}", i ? "," : "", i, i);
	o += (size_t)sprintf(big + o, "],\"n\":%d}", 7);

	json_doc_init(&d);
	ok(d.nodes == NULL && d.str == NULL && d.nnodes == 0, "init allocates nothing");
	for (int iter = 0; iter < 3000; iter++) {
		switch (iter % 5) {
		case 0: {
			uint32_t list, e;
			if (json_parse(&d, big, o) != 0) {
				bad++;
				break;
			}
			list = json_get(&d, 0, "list");
			e = json_at(&d, list, 150);
			char k[16], v[16];
			snprintf(k, sizeof(k), "k%d", 150);
			snprintf(v, sizeof(v), "v\xC3\xA9%d", 150);
			if (d.nnodes != 1 + 1 + 200 * 2 + 1 ||
			    d.nodes[list].count != 200 ||
			    strcmp(json_str(&d, json_get(&d, e, k), NULL), v) != 0 ||
			    json_int(&d, json_get(&d, 0, "n")) != 7)
				bad++;
			break;
		}
		case 1:
			if (json_parse(&d, "[1,2", 4) != -1 ||
			    strcmp(d.err, "unexpected end of input") != 0)
				bad++;
			break;
		case 2:
			if (json_parse(&d, "\"x\"", 3) != 0 || d.nnodes != 1 ||
			    strcmp(json_str(&d, 0, NULL), "x") != 0 ||
			    d.strlen_ != 2)
				bad++;
			break;
		case 3:
			if (json_parse(&d, "7", 1) != 0 || d.nnodes != 1 ||
			    json_int(&d, 0) != 7 || d.strlen_ != 0)
				bad++;
			break;
		case 4:
			if (json_parse(&d, "{\"a\":\"\\ud800\"}", 14) != -1)
				bad++;
			break;
		}
	}
	ok(bad == 0, "3000 parses of mixed documents on one doc");
	nodes = d.nodes;
	str = d.str;
	for (int iter = 0; iter < 100; iter++) {
		if (json_parse(&d, big, o) != 0)
			bad++;
		if (json_parse(&d, "[\"short\", {\"a\": \"b\"}]",
		    strlen("[\"short\", {\"a\": \"b\"}]")) != 0)
			bad++;
	}
	ok(bad == 0 && d.nodes == nodes && d.str == str,
	    "warm doc reuses its node and string buffers");
	json_doc_free(&d);
	ok(d.nodes == NULL && d.str == NULL && d.capnodes == 0 && d.strcap == 0,
	    "json_doc_free resets");
	json_doc_free(&d);	/* twice is harmless */

	/* Many nodes: the node array grows. */
	{
		size_t n = 200000, p = 0;
		char *s = malloc(n * 2 + 2);
		s[p++] = '[';
		for (size_t i = 0; i < n; i++) {
			s[p++] = (char)('0' + i % 10);
			s[p++] = i + 1 < n ? ',' : ']';
		}
		json_doc_init(&d);
		if (json_parse(&d, s, p) == 0) {
			ok(d.nnodes == n + 1 && d.nodes[0].count == n &&
			    json_int(&d, json_at(&d, 0, (uint32_t)n - 1)) == (int64_t)((n - 1) % 10) &&
			    json_at(&d, 0, (uint32_t)n) == 0,
			    "array of 200000 elements");
		} else
			ok(0, "array of 200000 elements: %s", d.err);
		json_doc_free(&d);
		free(s);
	}
}


/* ---- keep_depth: the same verdicts, fewer nodes ------------------------ */

static void
depths(const struct json_doc *d, uint32_t i, uint32_t depth, uint32_t *out)
{
	out[i] = depth;
	for (uint32_t c = d->nodes[i].first; c != 0; c = d->nodes[c].next)
		depths(d, c, depth + 1, out);
}

/*
 * Parse `text` without a limit and with keep_depth = keep: the same result
 * and error; the kept document holds exactly the nodes at depth <= keep,
 * each with the same type, span, key and string, containers at keep empty.
 */
static int
same_as_unlimited(const char *text, size_t len, uint32_t keep)
{
	static struct json_doc full, part;
	static uint32_t dep[4096];
	int rc0, rc1, bad = 0;
	uint32_t k = 0;

	full.keep_depth = 0;
	part.keep_depth = keep;
	rc0 = json_parse(&full, text, len);
	rc1 = json_parse(&part, text, len);
	if (rc0 != rc1 || (rc0 < 0 && strcmp(full.err, part.err) != 0)) {
		diag("keep %u: %d \"%s\" vs %d \"%s\"", keep, rc0, full.err, rc1, part.err);
		return 0;
	}
	if (rc0 < 0 || full.nnodes > 4096)
		return 1;
	depths(&full, 0, 0, dep);
	for (uint32_t i = 0; i < full.nnodes && !bad; i++) {
		const struct json_node *a = &full.nodes[i], *b;
		if (dep[i] > keep)
			continue;
		if (k >= part.nnodes) {
			bad = 1;
			break;
		}
		b = &part.nodes[k];
		if (a->type != b->type || a->start != b->start || a->len != b->len ||
		    a->key_len != b->key_len ||
		    (dep[i] > 0 && memcmp(full.str + a->key_off, part.str + b->key_off, a->key_len) != 0) ||
		    (a->type >= JSON_ARRAY && b->count != (dep[i] == keep ? 0 : a->count)))
			bad = 1;
		if (a->type == JSON_STRING) {
			size_t la, lb;
			const char *sa = json_str(&full, i, &la), *sb = json_str(&part, k, &lb);
			if (!sa || !sb || la != lb || memcmp(sa, sb, la) != 0 || sb[lb] != '\0' ||
			    (dep[i] == keep) != (b->str_off == JSON_STR_LAZY))
				bad = 1;
		}
		k++;
	}
	if (!bad && k != part.nnodes)
		bad = 1;
	if (bad)
		diag("keep %u: node %u of %u differs", keep, k, part.nnodes);
	return !bad;
}

static void
test_keep_depth(void)
{
	static const char *const docs[] = {
		"{\"method\":\"stream.write\",\"params\":[\"s-1\",{\"type\":\"T\",\"data\":{\"a\":[1,{\"b\":\"c\\u00e9\\ud83d\\ude00\"}],\"k\\\"q\":\"v\\n\"},\"metadata\":{\"m\":null}},{\"consumerGroup\":{\"member\":1,\"size\":2}}]}",
		"[[[[[[\"deep\",\"\\u0041\",1e5,true,false,null]]]]]]",
		"{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":\"x\"}}}}}",
		"{\"\":\"\",\"x\":[],\"y\":{}}",
		"\"root string\"",
		"[1,2,[3,[4,[5]]]]",
		/* errors beneath the kept depth must still be found, at the same offset */
		"{\"a\":{\"b\":{\"c\":\"\\u0000\"}}}",
		"{\"a\":{\"b\":{\"c\":\"\xff\"}}}",
		"{\"a\":{\"b\":{\"c\":\"\xc0\xaf\"}}}",
		"{\"a\":{\"b\":{\"c\":1e400}}}",
		"{\"a\":{\"b\":{\"c\":[1,]}}}",
		"{\"a\":{\"b\":{\"c\":\"\\ud800\"}}}",
		"{\"a\":{\"b\":{\"\xff\":1}}}",
		"{\"a\":{\"b\":{\"c\":01}}}",
		"{\"a\":{\"b\":{\"c\":tru}}}",
		"{\"a\":{\"b\":{\"c\":\"x\"}}} x",
		"{\"a\":{\"b\":{\"c\":\"x\"}}",
		"{\"a\":{\"b\":{\"c\":\"\\q\"}}}",
		"{\"a\":{\"b\":{\"c\":\"raw\ttab\"}}}",
	};
	int bad = 0;

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
		for (uint32_t keep = 1; keep <= 6; keep++)
			if (!same_as_unlimited(docs[i], strlen(docs[i]), keep)) {
				diag("document %zu: %s", i, show(docs[i], strlen(docs[i])));
				bad++;
			}
	ok(bad == 0, "keep_depth 1-6: same verdicts, errors and kept nodes on %zu documents",
	    sizeof(docs) / sizeof(docs[0]));

	/* Nesting past 64 is rejected beneath the kept depth too. */
	{
		char deep[200];
		memset(deep, '[', 65);
		memset(deep + 65, ']', 65);
		ok(same_as_unlimited(deep, 130, 2), "depth 65 rejected alike under keep_depth 2");
	}

	/* A 1 MB string at keep_depth: not copied, decoded when asked, stably. */
	{
		size_t n = 1 << 20, p = 0;
		char *s = malloc(n + 64);
		struct json_doc d;
		const char *a, *b, *a2;
		size_t la = 0, lb = 0;

		p += (size_t)sprintf(s, "{\"d\":{\"big\":\"");
		for (size_t i = 0; i < n; i++)
			s[p++] = i % 1000 == 0 ? '\\' : (char)('a' + i % 26);
		/* every 1000th byte a backslash: make those escapes \n */
		for (size_t i = 13; i < p; i++)
			if (s[i] == '\\')
				s[++i] = 'n';
		p += (size_t)sprintf(s + p, "\",\"e\":\"small\"}}");
		json_doc_init(&d);
		d.keep_depth = 2;
		if (json_parse(&d, s, p) == 0) {
			uint32_t big = json_get(&d, json_get(&d, 0, "d"), "big");
			uint32_t e = json_get(&d, json_get(&d, 0, "d"), "e");
			ok(d.strlen_ < 64, "a 1 MB string at keep_depth is not copied (%zu bytes of strings)",
			    d.strlen_);
			a = json_str(&d, big, &la);
			b = json_str(&d, e, &lb);
			a2 = json_str(&d, big, NULL);
			ok(a != NULL && a == a2 && b != NULL && lb == 5 && strcmp(b, "small") == 0 &&
			    la == d.nodes[big].str_len && a[la] == '\0' && a[0] == '\n' && a[1] == 'c' &&
			    a[999] == '\n' && strlen(a) == la,
			    "decoded on demand, once, NUL-terminated, escapes applied (%zu bytes)", la);
			json_doc_free(&d);
			ok(d.keep_depth == 2 && d.lazy == NULL, "json_doc_free keeps keep_depth, frees lazies");
		} else
			ok(0, "1 MB string document: %s", d.err);
		json_doc_free(&d);
		free(s);
	}
}

int
main(void)
{
	json_doc_init(&D);
	test_reject_utf8();
	test_reject_nul_ctrl();
	test_reject_surrogates();
	test_reject_numbers();
	test_reject_syntax();
	test_depth();
	test_scalars();
	test_strings();
	test_layout();
	test_duplicates();
	test_ints();
	test_writer();
	test_reuse();
	test_keep_depth();
	json_doc_free(&D);
	return tap_done();
}
