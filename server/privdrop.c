/*
 * privdrop.c - deciding on and switching to the service user (see
 * privdrop.h).
 *
 * The switch is initgroups + setgid + setuid, in that order, each return
 * checked, then a check that root cannot be regained.  The process is
 * made dumpable again afterwards (the kernel clears that flag on a
 * credential change) so the service user can attach a debugger or a
 * profiler to its own processes and read /proc/PID/maps.
 */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "privdrop.h"
#include "server/cfg.h"

int
srv_privdrop_plan(const struct config *cfg, struct srv_runas *ra, char *err, size_t errlen)
{
	const char *name = cfg->user;
	struct passwd *pw = NULL;

	memset(ra, 0, sizeof(*ra));
	if (geteuid() != 0) {
		if (name[0]) {
			pw = getpwnam(name);
			if (!pw || pw->pw_uid != geteuid())
				snprintf(ra->note, sizeof(ra->note), "not started as root: running as "
				    "uid %ld, not as user \"%s\"", (long)geteuid(), name);
		}
		return 0;
	}
	if (!name[0] && cfg->test_mode) {
		if (getpwnam("postgres"))
			name = "postgres";
		else if (getpwnam("nobody"))
			name = "nobody";
	}
	if (!name[0]) {
		if (cfg->allow_root) {
			snprintf(ra->note, sizeof(ra->note), "running as root (--allow-root); "
			    "give --user to run as an unprivileged user");
			return 0;
		}
		snprintf(err, errlen, "refusing to run as root: give --user USER to run as an "
		    "unprivileged user after binding the port, or --allow-root");
		return -1;
	}
	errno = 0;
	pw = getpwnam(name);
	if (!pw) {
		snprintf(err, errlen, "user \"%s\" does not exist", name);
		return -1;
	}
	if (pw->pw_uid == 0) {
		if (!cfg->allow_root) {
			snprintf(err, errlen, "refusing to run as root (--user %s): use an "
			    "unprivileged user, or --allow-root", name);
			return -1;
		}
		snprintf(ra->note, sizeof(ra->note), "running as root (--allow-root)");
		return 0;
	}
	if (strlen(pw->pw_name) >= sizeof(ra->user)) {
		snprintf(err, errlen, "user name \"%s\" is too long", name);
		return -1;
	}
	ra->drop = 1;
	ra->uid = pw->pw_uid;
	ra->gid = pw->pw_gid;
	strcpy(ra->user, pw->pw_name);
	snprintf(ra->home, sizeof(ra->home), "%s", pw->pw_dir ? pw->pw_dir : "/");
	if (cfg->group[0]) {
		struct group *gr = getgrnam(cfg->group);
		if (!gr) {
			snprintf(err, errlen, "group \"%s\" does not exist", cfg->group);
			return -1;
		}
		ra->gid = gr->gr_gid;
	}
	return 0;
}

int
srv_privdrop_apply(const struct srv_runas *ra, char *err, size_t errlen)
{
	if (!ra->drop)
		return 0;
	if (initgroups(ra->user, ra->gid) != 0) {
		snprintf(err, errlen, "could not set the groups of user \"%s\": %s", ra->user,
		    strerror(errno));
		return -1;
	}
	if (setgid(ra->gid) != 0) {
		snprintf(err, errlen, "could not set group id %ld: %s", (long)ra->gid,
		    strerror(errno));
		return -1;
	}
	if (setuid(ra->uid) != 0) {
		snprintf(err, errlen, "could not set user id %ld (\"%s\"): %s", (long)ra->uid,
		    ra->user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() == 0) {
		snprintf(err, errlen, "could not drop root privileges");
		return -1;
	}
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) {
		/* not fatal: only debugging and profiling need it */
	}
	setenv("HOME", ra->home, 1);
	setenv("USER", ra->user, 1);
	setenv("LOGNAME", ra->user, 1);
	return 0;
}
