/*
 * log.c - the logger shared by the master and the workers.
 *
 * Each line is formatted into a stack buffer and written with a single
 * write(2), so lines from different processes never interleave.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int log_min_level = LOG_INFO;
static int log_json;
static char log_proc[32] = "master";

static const char *const level_names[] = { "debug", "info", "warn", "error", "fatal" };

void
log_setup(int level, int json)
{
	log_min_level = level;
	log_json = json;
}

void
log_set_proc(const char *proc)
{
	snprintf(log_proc, sizeof(log_proc), "%s", proc);
}

int
log_level_parse(const char *s)
{
	for (int i = 0; i <= LOG_ERROR; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return LOG_WARN;
	return -1;
}

void
log_msg(int level, const char *fmt, ...)
{
	char line[4096], msg[3072];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;

	if (level < log_min_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	if (!log_json) {
		/*
		 * One event, one line: control characters that reached a message
		 * (from a client, a database error) are written as \xNN, so
		 * nothing can forge a second line.
		 */
		char esc[3072];
		size_t j = 0;
		for (const char *p = msg; *p && j < sizeof(esc) - 5; p++) {
			unsigned char c = (unsigned char)*p;
			if (c < 0x20 || c == 0x7f)
				j += (size_t)snprintf(esc + j, 5, "\\x%02x", c);
			else
				esc[j++] = (char)c;
		}
		esc[j] = '\0';
		n = (size_t)snprintf(line, sizeof(line),
		    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: %s\n",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		    level_names[level], log_proc, esc);
	} else {
		char esc[3072 * 2];
		size_t j = 0;
		for (const char *p = msg; *p && j < sizeof(esc) - 8; p++) {
			unsigned char c = (unsigned char)*p;
			if (c == '"' || c == '\\') {
				esc[j++] = '\\';
				esc[j++] = (char)c;
			} else if (c < 0x20) {
				j += (size_t)snprintf(esc + j, 7, "\\u%04x", c);
			} else
				esc[j++] = (char)c;
		}
		esc[j] = '\0';
		n = (size_t)snprintf(line, sizeof(line),
		    "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
		    "\"proc\":\"%s\",\"msg\":\"%s\"}\n",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		    level_names[level], log_proc, esc);
	}
	if (n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	(void)!write(STDERR_FILENO, line, n);
}
