/*
 * evtool.c - option tables and JSON strings of the client tools (evload,
 * evcheck); see evtool.h.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "evtool.h"

void
evtool_usage(FILE *f, const struct evtool_opt *opts)
{
	const struct evtool_opt *o;
	char left[64];

	for (o = opts; o->name; o++) {
		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(f, "  %-26s %s\n", left, o->help);
	}
}

static const struct evtool_opt *
find(const struct evtool_opt *opts, const char *name, size_t nl)
{
	const struct evtool_opt *o;

	for (o = opts; o->name; o++)
		if (strlen(o->name) == nl && strncmp(o->name, name, nl) == 0)
			return o;
	return NULL;
}

void
evtool_parse(int argc, char **argv, const struct evtool_opt *opts, int flags,
    void (*set)(const struct evtool_opt *o, const char *val, const char *shown),
    void (*die)(const char *fmt, const char *arg))
{
	int i, go = (flags & EVTOOL_GO) != 0;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val = NULL;
		const struct evtool_opt *o;
		size_t nl;

		if (go ? a[0] != '-' : strncmp(a, "--", 2) != 0)
			die("unexpected argument \"%s\"", a);
		name = a + 1;
		if (*name == '-')
			name++;
		if (*name == '\0')
			die("unexpected argument \"%s\"", a);
		if (go && strcmp(name, "h") == 0) {	/* as Go's flag package */
			o = find(opts, "help", 4);
			if (o)
				set(o, NULL, a);
			continue;
		}
		eq = strchr(name, '=');
		nl = eq ? (size_t)(eq - name) : strlen(name);
		o = find(opts, name, nl);
		if (o == NULL)
			die("unknown option \"%s\"", a);
		if (eq) {
			if (o->arg == NULL && !go)
				die("option \"%s\" takes no value", a);
			val = eq + 1;
		} else if (o->arg) {
			if (i + 1 >= argc)
				die("option \"%s\" needs a value", a);
			val = argv[++i];
		}
		set(o, val, a);
	}
}

void
evtool_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}
