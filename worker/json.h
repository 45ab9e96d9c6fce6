/*
 * json.h - strict JSON parser and writer for the request path.
 *
 * The parser validates RFC 8259 JSON with the extra rules of
 * decisions.md section 5 and builds a flat array of nodes that keep the
 * raw text span of every value, so stream.write can pass `data` and
 * `metadata` to PostgreSQL exactly as the client sent them (full number
 * precision, no re-serialisation).  Node storage and decoded strings live
 * in buffers owned by the json_doc and reused from request to request, so
 * a warm connection parses without calling malloc.
 *
 * Rejected (json_parse returns -1 and fills doc->err):
 *   - anything that is not RFC 8259 (single quotes, NaN, Infinity,
 *     comments, leading zeros, trailing commas, raw control characters
 *     in strings, ...)
 *   - invalid UTF-8 anywhere in the text (overlongs, surrogates encoded
 *     in UTF-8, code points above U+10FFFF, truncated sequences)
 *   - U+0000 in any string, raw or as \u0000
 *   - unpaired UTF-16 surrogate escapes (\ud800 alone, \udc00 alone)
 *   - numbers that are not finite as a double or whose magnitude is
 *     above 1e308 (strtod overflow), e.g. 1e400 or 1e131071
 *   - numbers with more than JSON_MAX_FRAC_DIGITS digits after the
 *     decimal point once the exponent is applied (1e-16384, beyond
 *     PostgreSQL's numeric), and texts whose exponents add up to more
 *     than JSON_EXPAND_FACTOR x the text's length + JSON_EXPAND_SLACK
 *     (what PostgreSQL's plain rendering of the numbers would add:
 *     9000 x 1e-16383 in 81 KB would read back as 147 MB)
 *   - nesting deeper than JSON_MAX_DEPTH arrays/objects
 *   - any non-whitespace after the top-level value; an empty text
 */
#ifndef EVENTODB_JSON_H
#define EVENTODB_JSON_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define JSON_MAX_DEPTH 64
#define JSON_MAX_FRAC_DIGITS 16383	/* PostgreSQL NUMERIC_DSCALE_MAX */
#define JSON_EXPAND_FACTOR 8
#define JSON_EXPAND_SLACK 65536

enum json_type {
	JSON_NULL = 0,
	JSON_FALSE,
	JSON_TRUE,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT
};

/*
 * One value.  Node 0 is the root.  Children of an array or object follow
 * their parent in document order; `next` links siblings (0 = last).
 * For a member of an object, key_off/key_len give its decoded key in
 * doc->str.
 */
struct json_node {
	uint8_t		type;		/* enum json_type */
	uint32_t	start;		/* raw span in the input text */
	uint32_t	len;
	uint32_t	first;		/* first child index, 0 = none */
	uint32_t	next;		/* next sibling index, 0 = none */
	uint32_t	count;		/* number of children (array/object) */
	uint32_t	key_off;	/* object members: decoded key in str */
	uint32_t	key_len;
	uint32_t	str_off;	/* strings: decoded value in str, NUL-terminated, */
	uint32_t	str_len;	/* or JSON_STR_LAZY (json_str decodes it) */
};

#define JSON_STR_LAZY	UINT32_MAX

struct json_lazy;

struct json_doc {
	const char	*text;		/* input, not owned */
	size_t		 textlen;
	struct json_node *nodes;	/* owned, grown as needed, reused */
	uint32_t	 nnodes;
	uint32_t	 capnodes;
	char		*str;		/* owned: decoded keys and strings */
	size_t		 strlen_;
	size_t		 strcap;
	char		 err[160];	/* parse error, e.g. "invalid UTF-8 at offset 12" */
	/*
	 * Set by the caller, kept across parses; 0 = no limit.  Values
	 * deeper than keep_depth (the root is at 0) are validated as fully
	 * as any, but get no node: a container at keep_depth has count 0.
	 * Strings at keep_depth are measured, not copied, and json_str
	 * decodes one when asked.  A request's envelope is shallow and its
	 * data is passed on as raw text: a 16 MiB document of small values
	 * costs no node array and no string copy beneath the envelope.
	 */
	uint32_t	 keep_depth;
	struct json_lazy *lazy;		/* strings json_str decoded on demand */
};

/* Initialise an empty document (no allocation). */
void json_doc_init(struct json_doc *doc);
/* Free the buffers of a document. */
void json_doc_free(struct json_doc *doc);
size_t json_doc_bytes(const struct json_doc *doc);
/*
 * Length of the well-formed UTF-8 sequence at p (avail bytes there): 1 for
 * ASCII (NUL included), 2-4 for a valid sequence (RFC 3629: no overlongs,
 * surrogates or code points above U+10FFFF), 0 if ill-formed or truncated.
 */
size_t json_utf8_len(const unsigned char *p, size_t avail);

/*
 * Parse `len` bytes at `text` (need not be NUL-terminated).  Returns 0 on
 * success, -1 on any error with a human-readable message in doc->err that
 * names the byte offset.  Returns -1 with "out of memory" if allocation
 * fails.  The text must outlive the document's use.
 */
int json_parse(struct json_doc *doc, const char *text, size_t len);

/* Type of node `i`. */
static inline enum json_type json_type_of(const struct json_doc *d, uint32_t i)
{ return (enum json_type)d->nodes[i].type; }

/*
 * Object member lookup: index of the value of key `key` in object `obj`,
 * or 0 if absent (node 0 is the root, never a member).  When a key occurs
 * more than once the last occurrence wins, as in Go's encoding/json.
 */
uint32_t json_get(const struct json_doc *doc, uint32_t obj, const char *key);

/* n-th element (0-based) of array `arr`, or 0 if out of range. */
uint32_t json_at(const struct json_doc *doc, uint32_t arr, uint32_t n);

/* Decoded string of a JSON_STRING node: NUL-terminated, *len if non-NULL. */
const char *json_str(const struct json_doc *doc, uint32_t i, size_t *len);

/* Raw text of any node (pointer into the input; not NUL-terminated). */
static inline const char *json_raw(const struct json_doc *d, uint32_t i, size_t *len)
{ *len = d->nodes[i].len; return d->text + d->nodes[i].start; }

/*
 * Number node as int64, truncated toward zero (2.7 -> 2, -2.7 -> -2,
 * 1e3 -> 1000).  Values beyond the int64 range saturate at INT64_MIN/MAX.
 */
int64_t json_int(const struct json_doc *doc, uint32_t i);

/* Number node as a double. */
double json_double(const struct json_doc *doc, uint32_t i);

/*
 * Writer: append `s` (len bytes of valid UTF-8) as a JSON string literal,
 * with quotes.  Escapes ", \, control characters (\n \r \t \b \f, others
 * \u00XX), and like Go's encoder <, >, & as \u003c \u003e \u0026 and
 * U+2028/U+2029 as \u2028/\u2029.  Invalid UTF-8 is replaced by U+FFFD.
 */
void json_write_str(struct evbuffer *out, const char *s, size_t len);

/* Same, for a NUL-terminated string. */
void json_write_cstr(struct evbuffer *out, const char *s);

#endif
