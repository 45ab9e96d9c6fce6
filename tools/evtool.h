/*
 * evtool.h - what the client tools evload and evcheck share besides
 * their connections (evconn.h): the command-line option tables (one
 * table per tool, the --help list drawn from it, the walk over argv that
 * finds each option and its value; what a value means stays with the
 * tool's set callback) and the JSON string writer of their results.
 * Prefix: evtool_.
 */
#ifndef EVTOOL_H
#define EVTOOL_H

#include <stdio.h>

struct evtool_opt {
	const char	*name;		/* NULL ends the table */
	int		 type;		/* the tool's own kinds */
	void		*target;
	double		 min;		/* smallest value, for the tool's number kinds */
	const char	*arg;		/* shown in --help; NULL: a flag without a value */
	const char	*help;
};

#define EVTOOL_GO	1	/* Go flag syntax: -x or --x, -h, a flag may take =value */

/* The options of the table, one a line as in --help. */
void	evtool_usage(FILE *f, const struct evtool_opt *opts);

/*
 * Walk argv: set(o, value, the argument as given) for each option (value
 * NULL for a flag given without one); die(fmt, arg) for what is wrong
 * (must not return).
 */
void	evtool_parse(int argc, char **argv, const struct evtool_opt *opts, int flags,
	    void (*set)(const struct evtool_opt *o, const char *val, const char *shown),
	    void (*die)(const char *fmt, const char *arg));

/* s as a JSON string (quotes, backslashes and control bytes escaped). */
void	evtool_json_str(FILE *f, const char *s);

#endif
