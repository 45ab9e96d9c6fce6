/*
 * fuzz_import.c - libFuzzer target: the /import NDJSON line decoder.
 *
 * The input is an NDJSON body: each line goes through imp_decode_line()
 * (worker/import.c, the decode and checks of api.md 10.2 that run before
 * a record joins a batch) with one reused json_doc, as a worker does.
 * Besides the sanitizers, the target checks what the batch builder and
 * the INSERT rely on: a decoded record has a canonical lowercase UUID,
 * gpos >= 1, NUL-terminated stream/type/time texts, and data/metadata
 * spans that are JSON objects; an error has one of the documented codes
 * and a non-empty message naming the line.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "import.h"
#include "json.h"
#include "log.h"

static struct json_doc doc, check;

static void
fail(const char *what, long ln)
{
	fprintf(stderr, "fuzz_import: line %ld: %s\n", ln, what);
	abort();
}

static void
check_object(const char *raw, size_t len, long ln)
{
	if (json_parse(&check, raw, len) < 0 || json_type_of(&check, 0) != JSON_OBJECT)
		fail("data/meta span is not a JSON object", ln);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_setup(LOG_FATAL, 0);
	json_doc_init(&doc);
	json_doc_init(&check);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	long ln = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct imp_rec rec;
		const char *code = NULL;
		char msg[600], *line;
		int r;

		ln++;
		/* A private copy: exactly len bytes, so ASan sees any over-read. */
		line = malloc(len ? len : 1);
		if (!line)
			abort();
		memcpy(line, p, len);
		msg[0] = '\0';
		r = imp_decode_line(&doc, line, len, ln, &rec, &code, msg, sizeof(msg));
		if (r < 0) {
			if (!code || (strcmp(code, "INVALID_JSON") && strcmp(code, "INVALID_RECORD") &&
			    strcmp(code, "IMPORT_FAILED")))
				fail("unknown error code", ln);
			if (!msg[0] || !memchr(msg, '\0', sizeof(msg)))
				fail("empty or unterminated message", ln);
		} else if (r == 0) {
			if (strlen(rec.id) != 36 || rec.id[8] != '-' || rec.id[13] != '-' ||
			    rec.id[18] != '-' || rec.id[23] != '-')
				fail("id not canonical", ln);
			for (int i = 0; i < 36; i++)
				if (rec.id[i] != '-' && !((rec.id[i] >= '0' && rec.id[i] <= '9') ||
				    (rec.id[i] >= 'a' && rec.id[i] <= 'f')))
					fail("id not lowercase hex", ln);
			if (rec.gpos < 1)
				fail("gpos < 1 accepted", ln);
			if (strlen(rec.stream) != rec.stream_len || strlen(rec.type) != rec.type_len)
				fail("stream/type length mismatch", ln);
			(void)strlen(rec.time);
			if (rec.data)
				check_object(rec.data, rec.data_len, ln);
			if (rec.meta)
				check_object(rec.meta, rec.meta_len, ln);
		} else if (r != 1)
			fail("bad return value", ln);
		free(line);
		p = nl ? nl + 1 : end;
	}
	return 0;
}
