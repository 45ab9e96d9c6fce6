/*
 * token.h - hashing, namespace tokens, message ids and consumer groups.
 *
 * Everything here is pure computation with no I/O except the CSPRNG, so
 * both the master (default namespace at start-up) and the workers (auth,
 * stream.write, category.get, /subscribe) use it.  The exact formats and
 * error texts are those of api.md sections 4.1-4.3, 7.6 and 7.8.
 */
#ifndef EVENTODB_TOKEN_H
#define EVENTODB_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256 and MD5 (FIPS 180-4, RFC 1321). */
void tok_sha256(const void *data, size_t len, uint8_t out[32]);
void tok_md5(const void *data, size_t len, uint8_t out[16]);

/* Lowercase hex of `len` bytes into out (2*len+1 bytes, NUL-terminated). */
void tok_hex(const uint8_t *bytes, size_t len, char *out);

/* SHA-256 of `token`, as 64 lowercase hex characters + NUL. */
void tok_hash_hex(const char *token, size_t len, char out[65]);

/* Constant-time comparison of two equal-length buffers: 1 if equal. */
int tok_equal_ct(const void *a, const void *b, size_t len);

/*
 * base64url without padding, alphabet A-Z a-z 0-9 - _.
 * Encode: out needs 4*ceil(len/3)+1 bytes; returns the length written.
 * Decode: like Go's base64.RawURLEncoding: '=' is invalid, CR/LF are
 * skipped, non-zero trailing bits are accepted.  Returns the decoded
 * length, or -1 with a detail message in err (errlen bytes), e.g.
 * "illegal base64 data at input byte 4".
 */
size_t tok_b64url_encode(const uint8_t *in, size_t len, char *out);
long tok_b64url_decode(const char *in, size_t len, uint8_t *out, size_t outcap,
    char *err, size_t errlen);

/*
 * Parse a token `ns_<base64url(ns)>_<64 hex>` exactly as api.md 4.2.
 * On success returns 0 and writes the decoded namespace id (NUL-terminated)
 * into ns (nscap bytes; an id that does not fit is an error).  On failure
 * returns -1 and writes the exact message, e.g.
 * "invalid token format: missing 'ns_' prefix",
 * "invalid token format: expected 2 parts after prefix, got 3",
 * "invalid token format: random part must be 64 hex characters, got 3",
 * "invalid token format: random part is not valid hexadecimal: ...",
 * "invalid token format: namespace part is not valid base64url: ...",
 * "invalid token format: namespace is empty".
 */
int tok_parse(const char *token, size_t len, char *ns, size_t nscap,
    char *err, size_t errlen);

/*
 * Generate a fresh token for namespace `ns` (32 CSPRNG bytes as lowercase
 * hex).  out needs TOK_MAX bytes.  Returns 0, or -1 if ns is empty or the
 * random source fails.
 */
#define TOK_MAX 256
int tok_generate(const char *ns, char *out, size_t outcap);

/* 1 if base64url(ns) contains '_' (such a namespace's tokens cannot parse). */
int tok_ns_unparseable(const char *ns);

/* Fill buf with n CSPRNG bytes (getrandom); 0 or -1. */
int tok_random(void *buf, size_t n);

/*
 * Message ids.  tok_uuid7 writes a fresh RFC 9562 UUIDv7 in canonical
 * lowercase form (36 chars + NUL).  tok_uuid_canon accepts the forms
 * PostgreSQL's uuid input accepts (canonical, any case, with braces,
 * 32 hex digits without hyphens) and writes the canonical lowercase form;
 * returns 0, or -1 if `in` is not a UUID.
 */
int tok_uuid7(char out[37]);
int tok_uuid_canon(const char *in, size_t len, char out[37]);

/*
 * Message DB stream-name anatomy and consumer groups (api.md 7.2, 7.8).
 * tok_category: length of the category prefix (up to the first '-').
 * tok_cardinal_id: pointer/length of the cardinal id, or NULL when the
 * name has no '-' (then no member receives it).
 * tok_hash64: first 8 bytes of MD5 as a big-endian signed int64.
 * tok_group_member: the member (0..size-1) a stream belongs to, or -1
 * when it belongs to none (no '-').
 */
size_t tok_category_len(const char *stream, size_t len);
const char *tok_cardinal_id(const char *stream, size_t len, size_t *idlen);
int64_t tok_hash64(const char *s, size_t len);
int64_t tok_group_member(const char *stream, size_t len, int64_t size);

/*
 * Schema name for a namespace id: "eventodb_" + id with every code point
 * that is not [A-Za-z0-9_] replaced by one '_' (api.md 8.2).  out needs
 * 9 + 4*strlen(id) + 1 bytes at most; returns the length.
 */
size_t tok_schema_name(const char *id, char *out, size_t outcap);

/*
 * Validate an id for ns.create (decisions.md 3): 1..54 characters of
 * A-Z a-z 0-9 _ -, starting with a letter or digit, and tokens for it
 * must be parseable.  Returns NULL if valid, else the reason.
 */
const char *tok_ns_id_invalid(const char *id, size_t len);

#endif
