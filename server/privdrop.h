/*
 * privdrop.h - who eventodbd runs as.
 *
 * Started as root, eventodbd binds its port and then runs as an
 * unprivileged user: --user (and --group, default that user's primary
 * group); in test mode without --user, "postgres" if it exists, else
 * "nobody" (the same user its private cluster runs as, decisions.md 2).
 * Everything created after the drop - the test-mode cluster, the
 * shared-memory segment - belongs to that user.  Started as root with
 * neither --user nor test mode, it refuses to serve unless --allow-root.
 * Started as another user, --user only has to name that user (a warning
 * otherwise).
 */
#ifndef EVENTODB_PRIVDROP_H
#define EVENTODB_PRIVDROP_H

#include <stddef.h>
#include <sys/types.h>

struct config;

struct srv_runas {
	int	 drop;		/* 1: setuid to uid/gid in srv_privdrop_apply() */
	uid_t	 uid;
	gid_t	 gid;
	char	 user[64];
	char	 home[256];
	char	 note[256];	/* a warning for the log, or "" */
};

/* Decide; returns 0, or -1 with the reason in err (refuse to start). */
int srv_privdrop_plan(const struct config *cfg, struct srv_runas *ra, char *err, size_t errlen);

/* Switch to ra (if ra->drop); returns 0, or -1 with the reason in err. */
int srv_privdrop_apply(const struct srv_runas *ra, char *err, size_t errlen);

#endif
