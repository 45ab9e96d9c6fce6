/*
 * token.c - hashing, namespace tokens, message ids and consumer groups.
 *
 * Pure computation, shared by the master and the workers (see token.h).
 * SHA-256 (FIPS 180-4) and MD5 (RFC 1321) are implemented here so the
 * daemon does not depend on OpenSSL.  Where the original Go server's
 * behaviour is visible to clients (token parse errors, base64url decoding,
 * the consumer-group hash, schema-name sanitising), the code follows Go's
 * standard library exactly, including its error texts:
 *   - encoding/hex:    "encoding/hex: invalid byte: U+0067 'g'"
 *   - encoding/base64: "illegal base64 data at input byte 4"
 *   - for ... range over a string: each invalid UTF-8 byte is one rune.
 *
 * The only I/O is getrandom(2).  tok_uuid7 keeps a little per-process state
 * (last timestamp) and is not thread-safe; workers are single-threaded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "json.h"
#include "token.h"

/* ------------------------------------------------------------------ */
/* SHA-256                                                            */

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

static uint32_t
ror32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void
sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0]; b = h[1]; c = h[2]; d = h[3];
	e = h[4]; f = h[5]; g = h[6]; hh = h[7];
	for (i = 0; i < 64; i++) {
		t1 = hh + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) +
		    ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
		t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) +
		    ((a & b) ^ (a & c) ^ (b & c));
		hh = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d;
	h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void
tok_sha256(const void *data, size_t len, uint8_t out[32])
{
	uint32_t h[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
	};
	const uint8_t *p = data;
	uint8_t tail[128];
	uint64_t bits = (uint64_t)len * 8;
	size_t rest, tlen, i;

	while (len >= 64) {
		sha256_block(h, p);
		p += 64;
		len -= 64;
	}
	rest = len;
	memcpy(tail, p, rest);
	tail[rest] = 0x80;
	tlen = rest + 1 + 8 <= 64 ? 64 : 128;
	memset(tail + rest + 1, 0, tlen - rest - 1);
	for (i = 0; i < 8; i++)
		tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha256_block(h, tail);
	if (tlen == 128)
		sha256_block(h, tail + 64);
	for (i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(h[i] >> 8);
		out[4 * i + 3] = (uint8_t)h[i];
	}
}

/* ------------------------------------------------------------------ */
/* MD5                                                                */

static const uint32_t md5_k[64] = {
	0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
	0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
	0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
	0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
	0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
	0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
	0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
	0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
	0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
	0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
	0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391
};

static const uint8_t md5_r[64] = {
	7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
	5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
	4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
	6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21
};

static void
md5_block(uint32_t h[4], const uint8_t *p)
{
	uint32_t m[16], a = h[0], b = h[1], c = h[2], d = h[3], f, t;
	int i, g;

	for (i = 0; i < 16; i++)
		m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
		    (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
	for (i = 0; i < 64; i++) {
		if (i < 16) {
			f = (b & c) | (~b & d);
			g = i;
		} else if (i < 32) {
			f = (d & b) | (~d & c);
			g = (5 * i + 1) & 15;
		} else if (i < 48) {
			f = b ^ c ^ d;
			g = (3 * i + 5) & 15;
		} else {
			f = c ^ (b | ~d);
			g = (7 * i) & 15;
		}
		t = d;
		d = c;
		c = b;
		f = a + f + md5_k[i] + m[g];
		b = b + ((f << md5_r[i]) | (f >> (32 - md5_r[i])));
		a = t;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d;
}

void
tok_md5(const void *data, size_t len, uint8_t out[16])
{
	uint32_t h[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
	const uint8_t *p = data;
	uint8_t tail[128];
	uint64_t bits = (uint64_t)len * 8;
	size_t rest, tlen, i;

	while (len >= 64) {
		md5_block(h, p);
		p += 64;
		len -= 64;
	}
	rest = len;
	memcpy(tail, p, rest);
	tail[rest] = 0x80;
	tlen = rest + 1 + 8 <= 64 ? 64 : 128;
	memset(tail + rest + 1, 0, tlen - rest - 1);
	for (i = 0; i < 8; i++)
		tail[tlen - 8 + i] = (uint8_t)(bits >> (8 * i));
	md5_block(h, tail);
	if (tlen == 128)
		md5_block(h, tail + 64);
	for (i = 0; i < 4; i++) {
		out[4 * i] = (uint8_t)h[i];
		out[4 * i + 1] = (uint8_t)(h[i] >> 8);
		out[4 * i + 2] = (uint8_t)(h[i] >> 16);
		out[4 * i + 3] = (uint8_t)(h[i] >> 24);
	}
}

/* ------------------------------------------------------------------ */
/* Hex, hashing of tokens, constant-time compare, randomness           */

static const char hexdig[] = "0123456789abcdef";

void
tok_hex(const uint8_t *bytes, size_t len, char *out)
{
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hexdig[bytes[i] >> 4];
		out[2 * i + 1] = hexdig[bytes[i] & 15];
	}
	out[2 * len] = '\0';
}

void
tok_hash_hex(const char *token, size_t len, char out[65])
{
	uint8_t d[32];

	tok_sha256(token, len, d);
	tok_hex(d, sizeof(d), out);
}

int
tok_equal_ct(const void *a, const void *b, size_t len)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t acc = 0;
	size_t i;

	for (i = 0; i < len; i++)
		acc |= x[i] ^ y[i];
	return acc == 0;
}

int
tok_random(void *buf, size_t n)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* base64url (Go's base64.RawURLEncoding)                              */

static const char b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

size_t
tok_b64url_encode(const uint8_t *in, size_t len, char *out)
{
	size_t i, o = 0;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
	}
	out[o] = '\0';
	return o;
}

/*
 * Mirrors Go's Encoding.decodeQuantum with padChar == NoPadding and
 * strict == false: quanta of 4 symbols, CR and LF skipped anywhere, any
 * other byte outside the alphabet (including '=') is an error at its own
 * offset, a lone symbol in the last quantum is an error at (si - 1),
 * leftover low bits are ignored.  The whole input is validated even when
 * the output does not fit, so the error reported is the one Go would give.
 */
long
tok_b64url_decode(const char *in, size_t len, uint8_t *out, size_t outcap,
    char *err, size_t errlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t si = 0, n = 0, k;

	while (si < len) {
		uint8_t q[4] = { 0, 0, 0, 0 };
		uint32_t v;
		int j, dlen = 4;

		for (j = 0; j < 4; j++) {
			int d;

			if (si == len) {
				if (j == 0)
					goto done;
				if (j == 1) {
					snprintf(err, errlen,
					    "illegal base64 data at input byte %zu",
					    si - (size_t)j);
					return -1;
				}
				dlen = j;
				break;
			}
			d = b64url_val(s[si++]);
			if (d >= 0) {
				q[j] = (uint8_t)d;
				continue;
			}
			if (s[si - 1] == '\n' || s[si - 1] == '\r') {
				j--;
				continue;
			}
			snprintf(err, errlen, "illegal base64 data at input byte %zu",
			    si - 1);
			return -1;
		}
		v = (uint32_t)q[0] << 18 | (uint32_t)q[1] << 12 |
		    (uint32_t)q[2] << 6 | q[3];
		for (k = 0; k < (size_t)dlen - 1; k++, n++)
			if (n < outcap)
				out[n] = (uint8_t)(v >> (16 - 8 * k));
	}
done:
	if (n > outcap) {
		snprintf(err, errlen, "decoded data too long (%zu bytes)", n);
		return -1;
	}
	return (long)n;
}

/* ------------------------------------------------------------------ */
/* Tokens                                                             */

/* strconv.IsPrint for runes 0..255 (fmt's %#U quotes only those). */
static int
go_isprint_latin1(unsigned c)
{
	if (c >= 0x20 && c <= 0x7e)
		return 1;
	return c >= 0xa1 && c != 0xad;
}

/* Go's hex.InvalidByteError text: "encoding/hex: invalid byte: %#U". */
static void
go_hex_error(unsigned char b, char *out, size_t outlen)
{
	char ch[3];

	if (!go_isprint_latin1(b)) {
		snprintf(out, outlen, "encoding/hex: invalid byte: U+%04X", b);
		return;
	}
	if (b < 0x80) {
		ch[0] = (char)b;
		ch[1] = '\0';
	} else {
		ch[0] = (char)(0xc0 | (b >> 6));
		ch[1] = (char)(0x80 | (b & 0x3f));
		ch[2] = '\0';
	}
	snprintf(out, outlen, "encoding/hex: invalid byte: U+%04X '%s'", b, ch);
}

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Beyond Go: a namespace that decodes to bytes containing NUL cannot be a
 * C string (nor a PostgreSQL text value), so it is rejected here instead
 * of being silently truncated.
 */
int
tok_parse(const char *token, size_t len, char *ns, size_t nscap,
    char *err, size_t errlen)
{
	const char *rest, *sep = NULL, *rnd;
	size_t restlen, nslen, rndlen, parts = 1, i;
	char detail[128];
	long dn;

	if (len < 3 || memcmp(token, "ns_", 3) != 0) {
		snprintf(err, errlen, "invalid token format: missing 'ns_' prefix");
		return -1;
	}
	rest = token + 3;
	restlen = len - 3;
	for (i = 0; i < restlen; i++) {
		if (rest[i] == '_') {
			parts++;
			if (sep == NULL)
				sep = rest + i;
		}
	}
	if (parts != 2) {
		snprintf(err, errlen,
		    "invalid token format: expected 2 parts after prefix, got %zu",
		    parts);
		return -1;
	}
	nslen = (size_t)(sep - rest);
	rnd = sep + 1;
	rndlen = restlen - nslen - 1;
	if (rndlen != 64) {
		snprintf(err, errlen,
		    "invalid token format: random part must be 64 hex characters, got %zu",
		    rndlen);
		return -1;
	}
	/* hex.Decode checks pairs left to right: first invalid byte wins. */
	for (i = 0; i < rndlen; i++) {
		if (hexval((unsigned char)rnd[i]) < 0) {
			go_hex_error((unsigned char)rnd[i], detail, sizeof(detail));
			snprintf(err, errlen,
			    "invalid token format: random part is not valid hexadecimal: %s",
			    detail);
			return -1;
		}
	}
	if (nscap == 0) {
		snprintf(err, errlen, "invalid token format: namespace is too long");
		return -1;
	}
	dn = tok_b64url_decode(rest, nslen, (uint8_t *)ns, nscap - 1, detail,
	    sizeof(detail));
	if (dn < 0) {
		if (strncmp(detail, "illegal", 7) == 0)
			snprintf(err, errlen,
			    "invalid token format: namespace part is not valid base64url: %s",
			    detail);
		else
			snprintf(err, errlen,
			    "invalid token format: namespace is too long");
		return -1;
	}
	if (dn == 0) {
		snprintf(err, errlen, "invalid token format: namespace is empty");
		return -1;
	}
	if (memchr(ns, '\0', (size_t)dn) != NULL) {
		snprintf(err, errlen,
		    "invalid token format: namespace contains a NUL byte");
		return -1;
	}
	ns[dn] = '\0';
	return 0;
}

int
tok_generate(const char *ns, char *out, size_t outcap)
{
	size_t nslen = strlen(ns), o;
	uint8_t rnd[32];

	if (nslen == 0)
		return -1;
	/* "ns_" + encoded + "_" + 64 hex + NUL */
	if (nslen > (SIZE_MAX - 100) / 2 ||
	    3 + (nslen * 4 + 2) / 3 + 1 + 64 + 1 > outcap)
		return -1;
	if (tok_random(rnd, sizeof(rnd)) != 0)
		return -1;
	memcpy(out, "ns_", 3);
	o = 3 + tok_b64url_encode((const uint8_t *)ns, nslen, out + 3);
	out[o++] = '_';
	tok_hex(rnd, sizeof(rnd), out + o);
	memset(rnd, 0, sizeof(rnd));
	return 0;
}

int
tok_ns_unparseable(const char *ns)
{
	const uint8_t *p = (const uint8_t *)ns;
	size_t len = strlen(ns), i;

	/* '_' is symbol 63: six one-bits at a symbol boundary. */
	for (i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t nsym = 2;

		if (i + 1 < len) {
			v |= (uint32_t)p[i + 1] << 8;
			nsym = 3;
		}
		if (i + 2 < len) {
			v |= p[i + 2];
			nsym = 4;
		}
		if ((v >> 18) == 63 || ((v >> 12) & 63) == 63 ||
		    (nsym >= 3 && ((v >> 6) & 63) == 63) ||
		    (nsym == 4 && (v & 63) == 63))
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* UUIDs                                                              */

static void
uuid_format(const uint8_t b[16], char out[37])
{
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hexdig[b[i] >> 4];
		out[o++] = hexdig[b[i] & 15];
	}
	out[o] = '\0';
}

/*
 * RFC 9562 UUIDv7: unix_ts_ms (48 bits), ver 7, rand_a (12 bits), var 10,
 * rand_b (62 bits).  rand_a holds the sub-millisecond fraction of the
 * clock (RFC 9562 6.2 method 3), bumped when needed so ids generated by
 * one process are strictly increasing even if the clock stalls or steps
 * back; across processes the order follows the clock.
 */
int
tok_uuid7(char out[37])
{
	static uint64_t last_ms;
	static uint32_t last_sub;
	struct timespec ts;
	uint64_t ms;
	uint32_t sub;
	uint8_t b[16];
	int i;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return -1;
	ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	sub = (uint32_t)(((uint64_t)ts.tv_nsec % 1000000) * 4096 / 1000000);
	if (ms < last_ms || (ms == last_ms && sub <= last_sub)) {
		ms = last_ms;
		sub = last_sub + 1;
		if (sub > 0xfff) {
			ms++;
			sub = 0;
		}
	}
	last_ms = ms;
	last_sub = sub;
	if (tok_random(b + 8, 8) != 0)
		return -1;
	for (i = 0; i < 6; i++)
		b[i] = (uint8_t)(ms >> (40 - 8 * i));
	b[6] = (uint8_t)(0x70 | (sub >> 8));
	b[7] = (uint8_t)sub;
	b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
	uuid_format(b, out);
	return 0;
}

/*
 * Accepted: xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, the same in braces, and
 * 32 hex digits; any case.  These are the forms both Go's uuid.Parse (the
 * original's check) and PostgreSQL's uuid input accept; "urn:uuid:..."
 * (Go only) and PostgreSQL's other hyphen placements are refused.
 */
int
tok_uuid_canon(const char *in, size_t len, char out[37])
{
	uint8_t b[16];
	size_t i, nd = 0;
	int hyphens;

	if (len == 38) {
		if (in[0] != '{' || in[37] != '}')
			return -1;
		in++;
		len = 36;
	}
	if (len == 36)
		hyphens = 1;
	else if (len == 32)
		hyphens = 0;
	else
		return -1;
	for (i = 0; i < len; i++) {
		int hi, lo;

		if (hyphens && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (in[i] != '-')
				return -1;
			continue;
		}
		hi = hexval((unsigned char)in[i]);
		lo = i + 1 < len ? hexval((unsigned char)in[i + 1]) : -1;
		if (hi < 0 || lo < 0)
			return -1;
		b[nd++] = (uint8_t)(hi << 4 | lo);
		i++;
	}
	if (nd != 16)
		return -1;
	uuid_format(b, out);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Stream anatomy and consumer groups                                 */

size_t
tok_category_len(const char *stream, size_t len)
{
	const char *d = memchr(stream, '-', len);

	return d ? (size_t)(d - stream) : len;
}

const char *
tok_cardinal_id(const char *stream, size_t len, size_t *idlen)
{
	const char *d = memchr(stream, '-', len), *id, *plus;
	size_t n;

	if (d == NULL) {
		*idlen = 0;
		return NULL;
	}
	id = d + 1;
	n = len - (size_t)(id - stream);
	plus = memchr(id, '+', n);
	*idlen = plus ? (size_t)(plus - id) : n;
	return id;
}

int64_t
tok_hash64(const char *s, size_t len)
{
	uint8_t d[16];
	uint64_t v = 0;
	int i;

	tok_md5(s, len, d);
	for (i = 0; i < 8; i++)
		v = v << 8 | d[i];
	return (int64_t)v;	/* two's complement, as PostgreSQL's bit(64)::bigint */
}

/*
 * abs(INT64_MIN) raises "bigint out of range" in PostgreSQL, so such a
 * stream is delivered to no member (-1), as no category.get could return
 * it either.
 */
int64_t
tok_group_member(const char *stream, size_t len, int64_t size)
{
	const char *id;
	size_t idlen;
	int64_t h;

	if (size <= 0)
		return -1;
	id = tok_cardinal_id(stream, len, &idlen);
	if (id == NULL)
		return -1;
	h = tok_hash64(id, idlen);
	if (h == INT64_MIN)
		return -1;
	if (h < 0)
		h = -h;
	return h % size;
}

/* ------------------------------------------------------------------ */
/* Namespace ids and schema names                                     */

/*
 * Length of the UTF-8 sequence at s (n bytes available) as Go's
 * utf8.DecodeRune sees it: a valid sequence (no overlongs, surrogates or
 * code points above U+10FFFF) counts as its length, anything else as 1.
 */
static size_t
go_rune_len(const unsigned char *s, size_t n)
{
	size_t len = json_utf8_len(s, n);

	return len ? len : 1;
}

/*
 * Writes at most outcap-1 bytes plus NUL and returns the full length of
 * the schema name (like snprintf), so a caller can detect truncation.
 * The result is never longer than 9 + strlen(id).
 */
size_t
tok_schema_name(const char *id, char *out, size_t outcap)
{
	static const char prefix[] = "eventodb_";
	const unsigned char *s = (const unsigned char *)id;
	size_t len = strlen(id), i = 0, o = 0, k;

	for (k = 0; k < sizeof(prefix) - 1; k++, o++)
		if (o + 1 < outcap)
			out[o] = prefix[k];
	while (i < len) {
		unsigned char c = s[i];
		char w;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '_') {
			w = (char)c;
			i++;
		} else {
			w = '_';
			i += go_rune_len(s + i, len - i);
		}
		if (o + 1 < outcap)
			out[o] = w;
		o++;
	}
	if (outcap > 0)
		out[o < outcap ? o : outcap - 1] = '\0';
	return o;
}

const char *
tok_ns_id_invalid(const char *id, size_t len)
{
	size_t i;

	if (len == 0)
		return "namespace ID must be 1 to 54 characters";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)id[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return "namespace ID may contain only letters, digits, '_' and '-'";
	}
	if (len > 54)
		return "namespace ID must be 1 to 54 characters";
	if (id[0] == '_' || id[0] == '-')
		return "namespace ID must start with a letter or digit";
	/* Cannot happen for this alphabet; kept so the rule stays explicit. */
	{
		char tmp[55];

		memcpy(tmp, id, len);
		tmp[len] = '\0';
		if (tok_ns_unparseable(tmp))
			return "namespace ID cannot be encoded in a token";
	}
	return NULL;
}
