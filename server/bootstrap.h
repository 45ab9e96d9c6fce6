/*
 * bootstrap.h - database work done once by the master at start-up.
 */
#ifndef EVENTODB_BOOTSTRAP_H
#define EVENTODB_BOOTSTRAP_H

#include <stddef.h>

struct boot_opts {
	const char	*token;		/* --token, or NULL */
	int		 test_mode;
};

/*
 * Migrate the database and make sure the default namespace exists.
 * Blocking; returns 0, or -1 with the reason in err.
 */
int srv_bootstrap(const char *conninfo, const struct boot_opts *o, char *err, size_t errlen);

#endif
