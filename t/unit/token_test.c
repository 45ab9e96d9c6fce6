/*
 * token_test.c - unit tests for worker/token.c, TAP output.
 *
 * Vectors come from api.md (4.3, 7.2, 7.8, 8.2, 15.2, 15.3), decisions.md
 * section 3, FIPS 180-4 / RFC 1321 test suites and Go's encoding/base64
 * and encoding/hex error texts.  Exits non-zero if any test fails.
 *
 *   gcc -O2 -Wall -Wextra -Iworker t/unit/token_test.c worker/token.c \
 *       -o token_test && ./token_test
 */
#define _GNU_SOURCE 1

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "token.h"
#include "tap.h"



static void
is_str(const char *got, const char *want, const char *name)
{
	int eq = got != NULL && want != NULL && strcmp(got, want) == 0;

	ok(eq, "%s", name);
	if (!eq)
		printf("#   got:  '%s'\n#   want: '%s'\n", got ? got : "(null)",
		    want ? want : "(null)");
}

static void
test_hashes(void)
{
	static const struct {
		const char *in;
		const char *sha256;
		const char *md5;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		  "d41d8cd98f00b204e9800998ecf8427e" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		  "900150983cd24fb0d6963f7d28e17f72" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
		  NULL },
		{ "The quick brown fox jumps over the lazy dog", NULL,
		  "9e107d9d372bb6826bd81d3542a419d6" },
		{ "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
		  NULL, "57edf4a22be3c955ac49da2e2107b67a" },
	};
	/* Padding boundaries: bytes (i*7+3)&255, reference from Python hashlib. */
	static const struct {
		size_t n;
		const char *sha256;
		const char *md5;
	} b[] = {
		{ 55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b", "52c0e574e1198de5fe3f8f11440dcb1b" },
		{ 56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27", "46c9907fc908ee68b1e7b8e71286a518" },
		{ 57, "35df609437dcfea3279283ab79fd554e2bf78f8f7ae2de532d8ee300b09e8f73", "1c805dd236c35cab25fcb1bc73802c51" },
		{ 63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055", "a62f6d59e837867693f042f5b8f5a236" },
		{ 64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241", "7160b8fb5e9e4023d549c3971fbaeead" },
		{ 65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e", "70bd662e7aefbda85a0f7244167b7897" },
		{ 119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e", "e84905d4214f4d1ca56c2cdcc152b143" },
		{ 120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5", "e3eb5a6c8669ea01a8c185b8abc8a5dc" },
		{ 128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6", "10b2da1a82f16d99a81a7203fe9f02cb" },
	};
	uint8_t d[32], buf[128];
	char hex[65];
	char *big;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char name[128];

		if (v[i].sha256) {
			tok_sha256(v[i].in, strlen(v[i].in), d);
			tok_hex(d, 32, hex);
			snprintf(name, sizeof(name), "sha256(\"%.20s\")", v[i].in);
			is_str(hex, v[i].sha256, name);
		}
		if (v[i].md5) {
			tok_md5(v[i].in, strlen(v[i].in), d);
			tok_hex(d, 16, hex);
			snprintf(name, sizeof(name), "md5(\"%.20s\")", v[i].in);
			is_str(hex, v[i].md5, name);
		}
	}
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	for (i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
		char name[64];

		tok_sha256(buf, b[i].n, d);
		tok_hex(d, 32, hex);
		snprintf(name, sizeof(name), "sha256 of %zu bytes", b[i].n);
		is_str(hex, b[i].sha256, name);
		tok_md5(buf, b[i].n, d);
		tok_hex(d, 16, hex);
		snprintf(name, sizeof(name), "md5 of %zu bytes", b[i].n);
		is_str(hex, b[i].md5, name);
	}
	big = malloc(1000000);
	if (big == NULL)
		abort();
	memset(big, 'a', 1000000);
	tok_sha256(big, 1000000, d);
	tok_hex(d, 32, hex);
	is_str(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
	    "sha256 of a million 'a'");
	tok_md5(big, 1000000, d);
	tok_hex(d, 16, hex);
	is_str(hex, "7707d6ae4e027c70eea2a935c2296f21", "md5 of a million 'a'");
	free(big);

	{
		const char *t = "ns_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000";

		tok_hash_hex(t, strlen(t), hex);
		is_str(hex, "6fefedfc989ca8bea8ce1b63672607c06fbd0d8b3c0667164cf4f5a02911fb52",
		    "token_hash of the suites' default token (api.md 4.3)");
	}
	ok(tok_equal_ct("abcdef", "abcdef", 6) == 1, "equal_ct equal");
	ok(tok_equal_ct("abcdef", "abcdeg", 6) == 0, "equal_ct last byte differs");
	ok(tok_equal_ct("xbcdef", "abcdef", 6) == 0, "equal_ct first byte differs");
	ok(tok_equal_ct("", "", 0) == 1, "equal_ct empty");
}

static void
test_base64(void)
{
	static const struct {
		const char *plain;
		const char *enc;
	} v[] = {
		{ "default", "ZGVmYXVsdA" },
		{ "tenant-a", "dGVuYW50LWE" },
		{ "t_0_abc_wxyz", "dF8wX2FiY193eHl6" },
		{ "\xc3\xa9", "w6k" },
		{ "ab?", "YWI_" },
		{ "", "" },
		{ "f", "Zg" },
		{ "fo", "Zm8" },
		{ "foo", "Zm9v" },
		{ "\xff\xfe\xfd", "__79" },
	};
	static const struct {
		const char *in;
		const char *err;	/* NULL: decodes to `out` */
		const char *out;
	} d[] = {
		{ "ZGVmYXVsdA", NULL, "default" },
		{ "ZGVm\nYXVs\r\ndA", NULL, "default" },	/* CR/LF skipped */
		{ "ZGVmYXVsdA\n", NULL, "default" },
		{ "Zh", NULL, "f" },				/* trailing bits ignored */
		{ "Zm9=", "illegal base64 data at input byte 3", NULL },
		{ "ZGVmYXVsdA==", "illegal base64 data at input byte 10", NULL },
		{ "Z", "illegal base64 data at input byte 0", NULL },
		{ "ZGVmY", "illegal base64 data at input byte 4", NULL },
		{ "ZGVmY\n", "illegal base64 data at input byte 5", NULL },
		{ "ZG+m", "illegal base64 data at input byte 2", NULL },
		{ "ZG/m", "illegal base64 data at input byte 2", NULL },
		{ "ZGVm YXVs", "illegal base64 data at input byte 4", NULL },
		{ "dGVz.A", "illegal base64 data at input byte 4", NULL },
	};
	char enc[64], err[128], out[64];
	uint8_t raw[256];
	size_t i, n;
	long r;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		n = tok_b64url_encode((const uint8_t *)v[i].plain, strlen(v[i].plain), enc);
		ok(n == strlen(v[i].enc) && strcmp(enc, v[i].enc) == 0,
		    "b64url encode -> %s (got %s)", v[i].enc, enc);
		r = tok_b64url_decode(v[i].enc, strlen(v[i].enc), (uint8_t *)out,
		    sizeof(out), err, sizeof(err));
		ok(r == (long)strlen(v[i].plain) &&
		    memcmp(out, v[i].plain, (size_t)r) == 0,
		    "b64url decode %s round trip", v[i].enc);
	}
	for (i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
		err[0] = '\0';
		r = tok_b64url_decode(d[i].in, strlen(d[i].in), (uint8_t *)out,
		    sizeof(out) - 1, err, sizeof(err));
		if (d[i].err) {
			ok(r == -1, "b64url decode rejects case %zu", i);
			is_str(err, d[i].err, "  with Go's error text");
		} else {
			ok(r == (long)strlen(d[i].out) &&
			    memcmp(out, d[i].out, (size_t)r) == 0,
			    "b64url decode accepts case %zu", i);
		}
	}
	/* Every length 0..255 of every byte value round-trips. */
	{
		int bad = 0;

		for (n = 0; n < 256; n++) {
			char e[400];
			uint8_t back[256];

			for (i = 0; i < n; i++)
				raw[i] = (uint8_t)(255 - i * 13);
			tok_b64url_encode(raw, n, e);
			r = tok_b64url_decode(e, strlen(e), back, sizeof(back), err,
			    sizeof(err));
			if (r != (long)n || memcmp(raw, back, n) != 0 ||
			    strlen(e) != (n * 4 + 2) / 3 || strchr(e, '='))
				bad++;
		}
		ok(bad == 0, "b64url round trips for lengths 0..255");
	}
	r = tok_b64url_decode("ZGVmYXVsdA", 10, (uint8_t *)out, 3, err, sizeof(err));
	ok(r == -1, "b64url decode reports an output that does not fit");
}

static void
test_tokens(void)
{
	static const struct {
		const char *tok;
		const char *ns;		/* NULL: rejected with err */
		const char *err;
	} v[] = {
		{ "ns_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000", "default", NULL },
		{ "ns_dGVuYW50LWE_ABCDEFabcdef0123456789ABCDEFabcdef0123456789ABCDEFabcdef01234567", "tenant-a", NULL },
		{ "ns_dF8wX2FiY193eHl6_0000000000000000000000000000000000000000000000000000000000000000", "t_0_abc_wxyz", NULL },
		{ "ns_w6k_0000000000000000000000000000000000000000000000000000000000000000", "\xc3\xa9", NULL },
		/* rejected forms of 15.2 */
		{ "ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: missing 'ns_' prefix" },
		{ "", NULL, "invalid token format: missing 'ns_' prefix" },
		{ "ns", NULL, "invalid token format: missing 'ns_' prefix" },
		{ "NS_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: missing 'ns_' prefix" },
		{ "tk_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: missing 'ns_' prefix" },
		{ "ns_ZGVmYXVsdA0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: expected 2 parts after prefix, got 1" },
		{ "ns_dGVzdA", NULL, "invalid token format: expected 2 parts after prefix, got 1" },
		{ "ns_", NULL, "invalid token format: expected 2 parts after prefix, got 1" },
		{ "ns_dGVzdA_abc_def", NULL, "invalid token format: expected 2 parts after prefix, got 3" },
		{ "ns_YWI__0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: expected 2 parts after prefix, got 3" },
		{ "ns_dGVzdA_abc", NULL, "invalid token format: random part must be 64 hex characters, got 3" },
		{ "ns_dGVzdA_0000000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: random part must be 64 hex characters, got 67" },
		{ "ns_dGVzdA_", NULL, "invalid token format: random part must be 64 hex characters, got 0" },
		{ "ns_dGVzdA_gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+0067 'g'" },
		{ "ns_dGVzdA_000000000000000000000000000000000000000000000000000000000000000z", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+007A 'z'" },
		{ "ns_dGVzdA_00000000000000000000000000000000000000000000000000000000000000 0", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+0020 ' '" },
		{ "ns_dGVzdA_\x01" "000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+0001" },
		{ "ns_dGVzdA_\xc3\xa9" "00000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+00C3 '\xc3\x83'" },
		{ "ns_dGVzdA_\xad" "000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: random part is not valid hexadecimal: encoding/hex: invalid byte: U+00AD" },
		{ "ns__0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace is empty" },
		{ "ns_\n_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace is empty" },
		{ "ns_dGVzdA==_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace part is not valid base64url: illegal base64 data at input byte 6" },
		{ "ns_d_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace part is not valid base64url: illegal base64 data at input byte 0" },
		{ "ns_dG+zdA_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace part is not valid base64url: illegal base64 data at input byte 2" },
		{ "ns_AA_0000000000000000000000000000000000000000000000000000000000000000", NULL,
		  "invalid token format: namespace contains a NUL byte" },
	};
	char ns[64], err[256], tok[TOK_MAX], tok2[TOK_MAX];
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int r;

		err[0] = ns[0] = '\0';
		r = tok_parse(v[i].tok, strlen(v[i].tok), ns, sizeof(ns), err,
		    sizeof(err));
		if (v[i].ns) {
			ok(r == 0 && strcmp(ns, v[i].ns) == 0,
			    "token parse accepts case %zu (ns '%s')", i, ns);
		} else {
			ok(r == -1, "token parse rejects case %zu", i);
			is_str(err, v[i].err, "  exact error");
		}
	}
	{
		/* A namespace that does not fit the caller's buffer. */
		const char *t = "ns_ZGVmYXVsdA_0000000000000000000000000000000000000000000000000000000000000000";
		int r = tok_parse(t, strlen(t), ns, 7, err, sizeof(err));

		ok(r == -1, "token parse refuses a namespace longer than the buffer");
		r = tok_parse(t, strlen(t), ns, 8, err, sizeof(err));
		ok(r == 0 && strcmp(ns, "default") == 0, "token parse with an exact-fit buffer");
	}

	ok(tok_generate("default", tok, sizeof(tok)) == 0, "generate for default");
	ok(strncmp(tok, "ns_ZGVmYXVsdA_", 14) == 0 && strlen(tok) == 14 + 64,
	    "generated token has the prefix and 64 hex chars");
	{
		int lower = 1;

		for (i = 14; tok[i]; i++)
			if (!((tok[i] >= '0' && tok[i] <= '9') || (tok[i] >= 'a' && tok[i] <= 'f')))
				lower = 0;
		ok(lower, "random part is lowercase hex");
	}
	ok(tok_parse(tok, strlen(tok), ns, sizeof(ns), err, sizeof(err)) == 0 &&
	    strcmp(ns, "default") == 0, "generated token parses back");
	ok(tok_generate("default", tok2, sizeof(tok2)) == 0 && strcmp(tok, tok2) != 0,
	    "two generated tokens differ");
	ok(tok_generate("tenant-a", tok, sizeof(tok)) == 0 &&
	    strncmp(tok, "ns_dGVuYW50LWE_", 15) == 0, "generate for tenant-a");
	ok(tok_generate("\xc3\xa9", tok, sizeof(tok)) == 0 &&
	    strncmp(tok, "ns_w6k_", 7) == 0, "generate for e-acute");
	ok(tok_generate("", tok, sizeof(tok)) == -1, "generate refuses an empty namespace");
	ok(tok_generate("default", tok, 78) == -1, "generate refuses a too small buffer");
	ok(tok_generate("default", tok, 79) == 0, "generate fits an exact buffer");

	ok(tok_ns_unparseable("ab?") == 1, "ab? is unparseable (YWI_)");
	ok(tok_ns_unparseable("\xff\xfe\xfd") == 1, "0xfffefd is unparseable");
	ok(tok_ns_unparseable("\xfc") == 1, "0xfc is unparseable (first symbol 63)");
	ok(tok_ns_unparseable("x\x7f") == 0, "x DEL at offset 1 is parseable");
	ok(tok_ns_unparseable("xy\x7f") == 1, "DEL at offset 2 is unparseable");
	ok(tok_ns_unparseable("default") == 0, "default is parseable");
	ok(tok_ns_unparseable("t_0_abc_wxyz") == 0, "t_0_abc_wxyz is parseable");
	/* Cross-check against the encoder for many short strings. */
	{
		int bad = 0;
		unsigned a, b2, c;
		char s[4], e[8];

		for (a = 1; a < 256; a += 1)
			for (b2 = 1; b2 < 256; b2 += 7)
				for (c = 1; c < 256; c += 5) {
					s[0] = (char)a; s[1] = (char)b2; s[2] = (char)c; s[3] = 0;
					tok_b64url_encode((uint8_t *)s, 3, e);
					if ((strchr(e, '_') != NULL) != tok_ns_unparseable(s))
						bad++;
					s[2] = 0;
					tok_b64url_encode((uint8_t *)s, 2, e);
					if ((strchr(e, '_') != NULL) != tok_ns_unparseable(s))
						bad++;
				}
		ok(bad == 0, "tok_ns_unparseable agrees with the encoder");
	}
}

static int
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void
test_uuids(void)
{
	static const struct {
		const char *in;
		const char *out;	/* NULL: rejected */
	} v[] = {
		{ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
		{ "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
		{ "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
		{ "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
		{ "A0eEbC999C0B4Ef8bB6D6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" },
		{ "00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000" },
		{ "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", NULL },
		{ "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", NULL },
		{ "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11", NULL },
		{ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", NULL },
		{ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", NULL },
		{ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", NULL },
		{ "a0eebc99+9c0b-4ef8-bb6d-6bb9bd380a11", NULL },
		{ "(a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11)", NULL },
		{ "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", NULL },
		{ " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", NULL },
		{ "", NULL },
		{ "not-a-uuid", NULL },
	};
	char out[37], prev[37];
	size_t i;
	int good = 1, ordered = 1, distinct = 1, n;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int r = tok_uuid_canon(v[i].in, strlen(v[i].in), out);

		if (v[i].out)
			ok(r == 0 && strcmp(out, v[i].out) == 0, "uuid accepts '%s'", v[i].in);
		else
			ok(r == -1, "uuid rejects '%s'", v[i].in);
	}

	prev[0] = '\0';
	for (n = 0; n < 20000; n++) {
		if (tok_uuid7(out) != 0) {
			good = 0;
			break;
		}
		for (i = 0; i < 36; i++) {
			if (i == 8 || i == 13 || i == 18 || i == 23) {
				if (out[i] != '-')
					good = 0;
			} else if (!is_hex(out[i]))
				good = 0;
		}
		if (out[36] != '\0' || out[14] != '7' ||
		    !(out[19] == '8' || out[19] == '9' || out[19] == 'a' || out[19] == 'b'))
			good = 0;
		if (prev[0] && strcmp(prev, out) >= 0) {
			if (strcmp(prev, out) == 0)
				distinct = 0;
			ordered = 0;
		}
		memcpy(prev, out, sizeof(prev));
	}
	ok(good, "uuid7: canonical lowercase, version 7, variant 10 (20000 ids)");
	ok(distinct && ordered, "uuid7: strictly increasing within a process");
	{
		char ts[13];
		unsigned long long ms;
		struct timespec now;

		memcpy(ts, out, 8);
		memcpy(ts + 8, out + 9, 4);
		ts[12] = '\0';
		ms = strtoull(ts, NULL, 16);
		clock_gettime(CLOCK_REALTIME, &now);
		ok(ms / 1000 + 5 >= (unsigned long long)now.tv_sec &&
		    ms / 1000 <= (unsigned long long)now.tv_sec + 5,
		    "uuid7: the first 48 bits are the unix time in ms");
		ok(tok_uuid_canon(out, 36, prev) == 0 && strcmp(prev, out) == 0,
		    "uuid7 output is canonical");
	}
}

static void
test_groups(void)
{
	static const struct {
		const char *cid;
		int64_t hash;
		int m2, m3, m4;
	} v[] = {
		{ "1", -4266524885998034046LL, 0, 0, 2 },
		{ "2", -4026655064267673757LL, 1, 1, 1 },
		{ "3", -1383792015730482434LL, 0, 2, 2 },
		{ "4", -6305049951010035939LL, 1, 0, 3 },
		{ "123", 2318431741638412123LL, 1, 1, 3 },
		{ "456", 2669782135874207551LL, 1, 1, 3 },
		{ "stream0", -870142150276481236LL, 0, 1, 0 },
		{ "alice", 7171105761220348917LL, 1, 0, 1 },
		{ "", -3162216497309240828LL, 0, 2, 0 },
	};
	static const int t4[12] = { 1, 2, 2, 1, 2, 0, 1, 1, 0, 1, 0, 1 };
	char stream[64];
	size_t i, n;
	const char *id;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t len;

		ok(tok_hash64(v[i].cid, strlen(v[i].cid)) == v[i].hash,
		    "hash64('%s') = %lld", v[i].cid, (long long)v[i].hash);
		len = (size_t)snprintf(stream, sizeof(stream), "account-%s", v[i].cid);
		ok(tok_group_member(stream, len, 2) == v[i].m2 &&
		    tok_group_member(stream, len, 3) == v[i].m3 &&
		    tok_group_member(stream, len, 4) == v[i].m4,
		    "members of '%s' for sizes 2/3/4 = %d/%d/%d", stream,
		    v[i].m2, v[i].m3, v[i].m4);
		len = (size_t)snprintf(stream, sizeof(stream), "account-%s+compound", v[i].cid);
		ok(tok_group_member(stream, len, 4) == v[i].m4,
		    "compound id '%s' uses the cardinal id", stream);
		ok(tok_group_member(stream, len, 1) == 0, "size 1 always member 0");
	}
	for (i = 0; i < 12; i++) {
		size_t len = (size_t)snprintf(stream, sizeof(stream), "payment-stream%zu", i);

		ok(tok_group_member(stream, len, 3) == t4[i],
		    "15.3: %s -> member %d of 3", stream, t4[i]);
	}
	/* SSE009: cat-1..cat-4 split {1,3} / {2,4} over two members. */
	ok(tok_group_member("cat-1", 5, 2) == 0 && tok_group_member("cat-3", 5, 2) == 0 &&
	    tok_group_member("cat-2", 5, 2) == 1 && tok_group_member("cat-4", 5, 2) == 1,
	    "7.8: cat-1..4 split {1,3} and {2,4}");
	ok(tok_group_member("account", 7, 2) == -1, "no '-' belongs to no member");
	ok(tok_group_member("account", 7, 1) == -1, "no '-' belongs to no member of size 1");
	ok(tok_group_member("account-1", 9, 0) == -1, "size 0 gives -1");

	/* Anatomy, 7.2 */
	ok(tok_category_len("account-123+abc", 15) == 7, "category of account-123+abc");
	ok(tok_category_len("account-prefix-9", 16) == 7, "category of account-prefix-9");
	ok(tok_category_len("account", 7) == 7, "category of account");
	ok(tok_category_len("account-", 8) == 7, "category of account-");
	ok(tok_category_len("-x", 2) == 0, "category of -x is empty");
	id = tok_cardinal_id("account-123+abc", 15, &n);
	ok(id && n == 3 && memcmp(id, "123", 3) == 0, "cardinal id of account-123+abc");
	id = tok_cardinal_id("account-prefix-9", 16, &n);
	ok(id && n == 8 && memcmp(id, "prefix-9", 8) == 0, "cardinal id of account-prefix-9");
	id = tok_cardinal_id("account", 7, &n);
	ok(id == NULL, "cardinal id of account is none");
	id = tok_cardinal_id("account-", 8, &n);
	ok(id && n == 0, "cardinal id of account- is empty");
	id = tok_cardinal_id("account-+x", 10, &n);
	ok(id && n == 0, "cardinal id of account-+x is empty");
	ok(tok_group_member("account-", 8, 3) == 2, "account- hashes '' (member 2 of 3)");
}

static void
test_schema_names(void)
{
	static const struct {
		const char *id;
		const char *schema;
	} v[] = {
		{ "default", "eventodb_default" },
		{ "tenant-a", "eventodb_tenant_a" },
		{ "test-write-001-1700000000000-abc1234", "eventodb_test_write_001_1700000000000_abc1234" },
		{ "MixedCase_9", "eventodb_MixedCase_9" },
		{ "a-b", "eventodb_a_b" },
		{ "a_b", "eventodb_a_b" },
		{ "\xc3\xa9", "eventodb__" },				/* one code point */
		{ "caf\xc3\xa9-1", "eventodb_caf__1" },
		{ "\xe2\x82\xac", "eventodb__" },			/* euro sign, 3 bytes */
		{ "\xf0\x9f\x98\x80x", "eventodb__x" },			/* emoji, 4 bytes */
		{ "\xff\xfe", "eventodb___" },				/* invalid bytes each one */
		{ "\xe2\x82", "eventodb___" },				/* truncated sequence */
		{ "\xc0\xaf", "eventodb___" },				/* overlong */
		{ "\xed\xa0\x80", "eventodb____" },			/* surrogate */
		{ "\xf4\x90\x80\x80", "eventodb_____" },		/* above U+10FFFF */
		{ "a b.c:d", "eventodb_a_b_c_d" },
		{ "", "eventodb_" },
	};
	char out[128];
	size_t i, n;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		n = tok_schema_name(v[i].id, out, sizeof(out));
		ok(n == strlen(v[i].schema) && strcmp(out, v[i].schema) == 0,
		    "schema name case %zu -> %s (got %s)", i, v[i].schema, out);
	}
	n = tok_schema_name("tenant-a", out, 10);
	ok(n == 17 && strcmp(out, "eventodb_") == 0, "schema name truncates and reports the length");
}

static void
test_ns_ids(void)
{
	static const char *good[] = {
		"default", "tenant-a", "t_0_abc_wxyz", "a", "9", "A-_-_",
		"test-write-001-1700000000000-abc1234",
		"ns_desc_1700000000000_abc123", "duplicate-test-1700000000000",
		"x23456789012345678901234567890123456789012345678901234",	/* 54 */
	};
	static const struct {
		const char *id;
		const char *msg;
	} bad[] = {
		{ "", "namespace ID must be 1 to 54 characters" },
		{ "x234567890123456789012345678901234567890123456789012345",
		  "namespace ID must be 1 to 54 characters" },
		{ "a b", "namespace ID may contain only letters, digits, '_' and '-'" },
		{ "ab?", "namespace ID may contain only letters, digits, '_' and '-'" },
		{ "a.b", "namespace ID may contain only letters, digits, '_' and '-'" },
		{ "\xc3\xa9", "namespace ID may contain only letters, digits, '_' and '-'" },
		{ "a\"b", "namespace ID may contain only letters, digits, '_' and '-'" },
		{ "_abc", "namespace ID must start with a letter or digit" },
		{ "-abc", "namespace ID must start with a letter or digit" },
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		const char *m = tok_ns_id_invalid(good[i], strlen(good[i]));
		char schema[128];

		ok(m == NULL, "ns id '%s' valid%s%s", good[i], m ? ": " : "", m ? m : "");
		ok(tok_schema_name(good[i], schema, sizeof(schema)) <= 63,
		    "  its schema name fits in 63 bytes");
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_str(tok_ns_id_invalid(bad[i].id, strlen(bad[i].id)), bad[i].msg,
		    "ns id rejected with the right reason");
	is_str(tok_ns_id_invalid("a\0b", 3),
	    "namespace ID may contain only letters, digits, '_' and '-'",
	    "ns id with an embedded NUL rejected");
}

int
main(void)
{
	test_hashes();
	test_base64();
	test_tokens();
	test_uuids();
	test_groups();
	test_schema_names();
	test_ns_ids();
	return tap_done();
}
