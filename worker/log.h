/*
 * log.h - one line per event on stderr.
 *
 * Console format:  2026-11-26T02:40:00.123Z info master: worker 3 started pid=12 gen=1
 * JSON format:     {"ts":"...","level":"info","proc":"master","msg":"worker 3 started pid=12 gen=1"}
 *
 * Messages follow the PostgreSQL style (lower case, no trailing period,
 * key=value details).  Tokens are never passed to the logger.
 */
#ifndef EVENTODB_LOG_H
#define EVENTODB_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

void log_setup(int level, int json);
void log_set_proc(const char *proc);
int log_level_parse(const char *s);	/* -1 if unknown */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)	do { if (log_min_level <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...)	log_msg(LOG_ERROR, __VA_ARGS__)

extern int log_min_level;

#endif
