/*
 * testpg.c - the private PostgreSQL cluster of test mode (decisions.md 2).
 *
 * testpg_start() finds the server programs, makes a fresh directory
 * eventodbd-XXXXXX under $TMPDIR (or /tmp), runs initdb in <dir>/data and
 * starts the postmaster with pg_ctl.  The postmaster listens only on a unix
 * socket in <dir> itself (no TCP port), so concurrent clusters never clash.
 * As root, initdb and pg_ctl run as an unprivileged user: fork, setgroups,
 * setgid, setuid, execve; we never go through a shell ourselves.
 *
 * Right after the directory exists (so a master killed during initdb is
 * covered too) we fork a reaper child that blocks on a socket pair to the
 * master.  If the master dies without calling testpg_stop() (SIGKILL), the
 * reaper sees EOF, or notices within 0.5 s that it was reparented (a worker
 * still holding the socket), and stops the cluster and removes the
 * directory.  The normal path, testpg_stop(), does that work itself, then
 * sends the reaper one byte ("done"), closes the socket and reaps it.
 * Helpers (initdb, pg_ctl) get PR_SET_PDEATHSIG so they die with their
 * parent instead of racing the reaper.
 *
 * The supplementary groups come from getgrouplist() in the parent and are
 * set with setgroups() in the child: initgroups() is not safe after fork.
 * Children get a fixed environment (PATH, LC_ALL=C, TZ, LD_LIBRARY_PATH):
 * stray PGPORT or PGDATA must not change where the cluster listens.
 *
 * $TMPDIR is used only if it is absolute, made of plain characters (it ends
 * up in a pg_ctl command line and in a conninfo string) and short enough for
 * the socket path (<dir>/.s.PGSQL.5432 must fit in sun_path); else /tmp.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "testpg.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <locale.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define PG_PORT		"5432"
#define SOCKET_NAME	"/.s.PGSQL." PG_PORT
#define DIR_TEMPLATE	"eventodbd-XXXXXX"
#define SUN_PATH_MAX	107	/* sizeof(sun_path) - 1 */
#define MAX_GROUPS	64

extern char **environ;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Close every descriptor >= lowfd except keep (-1: none). */
static void
close_from(int lowfd, int keep)
{
	long		max,
				fd;

#ifdef SYS_close_range
	if (keep < lowfd)
	{
		if (syscall(SYS_close_range, (unsigned int) lowfd, ~0U, 0U) == 0)
			return;
	}
	else if ((keep == lowfd ||
			  syscall(SYS_close_range, (unsigned int) lowfd, (unsigned int) keep - 1, 0U) == 0) &&
			 syscall(SYS_close_range, (unsigned int) keep + 1, ~0U, 0U) == 0)
		return;
#endif
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (fd = lowfd; fd < max; fd++)
	{
		if (fd != keep)
			(void) close((int) fd);
	}
}

/*
 * Move a new descriptor above 2, so that setting up a child's stdin,
 * stdout and stderr cannot clobber it (the master may run with 0-2 closed).
 */
static int
fd_above_stdio(int fd)
{
	int			nfd;

	if (fd < 0 || fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return nfd;
}

static void
format_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit code %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "terminated by signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "wait status %d", status);
}

/*
 * Append the end of a log file to err, newlines turned into "; ", dropping
 * the front rather than the end if it does not fit.
 */
static void
append_log_tail(char *err, size_t errlen, const char *path)
{
	char		buf[1024],
				joined[2048];
	const char *p;
	size_t		used,
				room,
				j = 0,
				len;
	struct stat st;
	off_t		off;
	ssize_t		n;
	int			fd;

	if (err == NULL || errlen == 0)
		return;
	used = strlen(err);
	if (used + 3 >= errlen)
		return;
	room = errlen - used - 3;	/* ": " and the terminator */

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) != 0)
	{
		close(fd);
		return;
	}
	off = st.st_size > (off_t) (sizeof(buf) - 1) ? st.st_size - (off_t) (sizeof(buf) - 1) : 0;
	n = pread(fd, buf, sizeof(buf) - 1, off);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';

	p = buf;
	if (off > 0 && strchr(p, '\n') != NULL)
		p = strchr(p, '\n') + 1;
	while (*p == '\n' || *p == ' ')
		p++;
	for (; *p != '\0' && j + 3 < sizeof(joined); p++)
	{
		if (*p == '\n')
		{
			joined[j++] = ';';
			joined[j++] = ' ';
		}
		else
			joined[j++] = *p;
	}
	while (j > 0 && (joined[j - 1] == ' ' || joined[j - 1] == ';'))
		j--;
	joined[j] = '\0';
	if (j == 0)
		return;

	len = j;
	p = joined;
	if (len > room)
	{
		p = joined + (len - room);
		if (strstr(p, "; ") != NULL && strstr(p, "; ") - p < (ptrdiff_t) (room / 2))
			p = strstr(p, "; ") + 2;
	}
	snprintf(err + used, errlen - used, ": %s", p);
}

static int
has_server_programs(const char *dir)
{
	static const char *const progs[] = {"initdb", "pg_ctl", "postgres"};
	char		path[512];
	size_t		i;

	for (i = 0; i < sizeof(progs) / sizeof(progs[0]); i++)
	{
		if ((size_t) snprintf(path, sizeof(path), "%s/%s", dir, progs[i]) >= sizeof(path))
			return 0;
		if (access(path, X_OK) != 0)
			return 0;
	}
	return 1;
}

/* Find an executable in $PATH; absolute entries only. */
static int
find_in_path(const char *name, char *out, size_t outlen)
{
	const char *path = getenv("PATH");
	const char *p,
			   *end;
	size_t		len;

	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p != '\0'; p = *end != '\0' ? end + 1 : end)
	{
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		len = (size_t) (end - p);
		if (len == 0 || p[0] != '/')
			continue;
		if ((size_t) snprintf(out, outlen, "%.*s/%s", (int) len, p, name) >= outlen)
			continue;
		if (access(out, X_OK) == 0)
			return 0;
	}
	return -1;
}

/* Run `pg_config --bindir` and store its output. */
static int
pg_config_bindir(char *out, size_t outlen)
{
	char		pgconfig[512];
	char	   *const argv[] = {pgconfig, (char *) "--bindir", NULL};
	int			p[2],
				devnull,
				status;
	size_t		got = 0;
	ssize_t		n;
	pid_t		pid;

	if (find_in_path("pg_config", pgconfig, sizeof(pgconfig)) != 0)
		return -1;
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	p[0] = fd_above_stdio(p[0]);
	p[1] = fd_above_stdio(p[1]);
	devnull = fd_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC));
	pid = devnull < 0 || p[0] < 0 || p[1] < 0 ? -1 : fork();
	if (pid == 0)
	{
		if (dup2(devnull, 0) < 0 || dup2(p[1], 1) < 0 || dup2(devnull, 2) < 0)
			_exit(127);
		close_from(3, -1);
		execve(pgconfig, argv, environ);
		_exit(127);
	}
	if (p[1] >= 0)
		close(p[1]);
	if (devnull >= 0)
		close(devnull);
	if (pid < 0)
	{
		if (p[0] >= 0)
			close(p[0]);
		return -1;
	}
	while (got + 1 < outlen)
	{
		n = read(p[0], out + got, outlen - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t) n;
	}
	close(p[0]);
	out[got] = '\0';
	while (waitpid(pid, &status, 0) < 0)
	{
		if (errno != EINTR)
			return -1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	while (got > 0 && (out[got - 1] == '\n' || out[got - 1] == '\r' || out[got - 1] == ' '))
		out[--got] = '\0';
	return got > 0 ? 0 : -1;
}

/*
 * $EVENTODB_PG_BINDIR, else `pg_config --bindir` if it holds the server
 * programs (Debian's points at the client directory), else the highest
 * /usr/lib/postgresql/<version>/bin, else $PATH.
 */
static int
find_bindir(char *out, size_t outlen, char *err, size_t errlen)
{
	const char *env = getenv("EVENTODB_PG_BINDIR");
	const char *best = NULL;
	char		buf[512];
	const char *path,
			   *p,
			   *end;
	glob_t		g;
	size_t		i,
				len;

	if (env != NULL && env[0] != '\0')
	{
		if (strlen(env) >= outlen || !has_server_programs(env))
		{
			set_err(err, errlen,
					"directory \"%s\" (EVENTODB_PG_BINDIR) does not contain initdb, pg_ctl and postgres",
					env);
			return -1;
		}
		strcpy(out, env);
		return 0;
	}

	if (pg_config_bindir(buf, sizeof(buf)) == 0 && strlen(buf) < outlen &&
		has_server_programs(buf))
	{
		strcpy(out, buf);
		return 0;
	}

	if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0)
	{
		for (i = 0; i < g.gl_pathc; i++)
		{
			if (strlen(g.gl_pathv[i]) >= outlen || !has_server_programs(g.gl_pathv[i]))
				continue;
			if (best == NULL || strverscmp(g.gl_pathv[i], best) > 0)
				best = g.gl_pathv[i];
		}
		if (best != NULL)
			strcpy(out, best);
		globfree(&g);
		if (best != NULL)
			return 0;
	}

	path = getenv("PATH");
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p != '\0'; p = *end != '\0' ? end + 1 : end)
	{
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		len = (size_t) (end - p);
		if (len == 0 || p[0] != '/' || len >= outlen || len >= sizeof(buf))
			continue;
		memcpy(buf, p, len);
		buf[len] = '\0';
		if (has_server_programs(buf))
		{
			strcpy(out, buf);
			return 0;
		}
	}

	set_err(err, errlen,
			"could not find the PostgreSQL server programs (initdb, pg_ctl, postgres); set EVENTODB_PG_BINDIR");
	return -1;
}

/* The parent of the temporary directory: $TMPDIR if usable, else /tmp. */
static void
temp_base(char *out, size_t outlen)
{
	const char *t = getenv("TMPDIR");
	size_t		len,
				i;

	snprintf(out, outlen, "/tmp");
	if (t == NULL || t[0] != '/')
		return;
	len = strlen(t);
	while (len > 1 && t[len - 1] == '/')
		len--;
	if (len == 1)
		len = 0;				/* TMPDIR=/ */
	if (len + 1 + strlen(DIR_TEMPLATE) + strlen(SOCKET_NAME) > SUN_PATH_MAX ||
		len >= outlen)
		return;
	for (i = 0; i < len; i++)
	{
		char		c = t[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '/' || c == '.' || c == '_' ||
			  c == '-' || c == '+'))
			return;
	}
	memcpy(out, t, len);
	out[len] = '\0';
}

/* What a child failed to do before execve(), sent back on a pipe. */
enum spawn_step
{
	STEP_SETGROUPS,
	STEP_SETGID,
	STEP_SETUID,
	STEP_PARENT_GONE,
	STEP_CHDIR,
	STEP_OPEN_LOG,
	STEP_DUP2,
	STEP_EXEC
};

struct spawn_failure
{
	int			step;
	int			err;
};

static void
child_fail(int fd, int step)
{
	struct spawn_failure f = {step, errno};

	(void) !write(fd, &f, sizeof(f));
	_exit(126);
}

static void
describe_failure(const struct testpg *pg, const char *const argv[],
				 const char *out_path, const struct spawn_failure *f,
				 char *why, size_t whylen)
{
	char		what[320];

	switch (f->step)
	{
		case STEP_SETGROUPS:
			snprintf(what, sizeof(what), "set the supplementary groups of user \"%s\"", pg->user);
			break;
		case STEP_SETGID:
			snprintf(what, sizeof(what), "set group id %ld", (long) pg->gid);
			break;
		case STEP_SETUID:
			snprintf(what, sizeof(what), "set user id %ld", (long) pg->uid);
			break;
		case STEP_PARENT_GONE:
			snprintf(what, sizeof(what), "run: parent exited");
			break;
		case STEP_CHDIR:
			snprintf(what, sizeof(what), "change directory to \"%s\"", pg->dir);
			break;
		case STEP_OPEN_LOG:
			snprintf(what, sizeof(what), "open file \"%s\"", out_path ? out_path : "");
			break;
		case STEP_DUP2:
			snprintf(what, sizeof(what), "redirect standard descriptors");
			break;
		default:
			snprintf(what, sizeof(what), "execute \"%s\"", argv[0]);
			break;
	}
	if (pg->user[0] != '\0' && geteuid() == 0)
		snprintf(why, whylen, "could not %s as user \"%s\": %s", what, pg->user, strerror(f->err));
	else
		snprintf(why, whylen, "could not %s: %s", what, strerror(f->err));
}

/*
 * Run argv (argv[0] an absolute path) in pg->dir with a small fixed
 * environment, stdin from /dev/null, stdout and stderr to the file out_path
 * (created by the child after it dropped privileges) or to /dev/null.  As
 * root, the child becomes the cluster user first.  Returns the wait status,
 * or -1 with a reason in why.
 */
static int
spawn_wait(const struct testpg *pg, const char *const argv[],
		   const char *out_path, char *why, size_t whylen)
{
	char		path_var[4096],
				tz_var[512],
				ld_var[4096];
	char	   *envp[8];
	const char *v;
	gid_t		groups[MAX_GROUPS];
	int			ngroups = MAX_GROUPS,
				drop = geteuid() == 0,
				nenv = 0,
				devnull,
				ep[2],
				status,
				restore_chld = 0;
	struct sigaction old_chld,
				dfl;
	struct spawn_failure failure;
	ssize_t		n;
	pid_t		pid,
				parent = getpid();

	why[0] = '\0';
	v = getenv("PATH");
	if (v == NULL || (size_t) snprintf(path_var, sizeof(path_var), "PATH=%s", v) >= sizeof(path_var))
		snprintf(path_var, sizeof(path_var), "PATH=/usr/local/bin:/usr/bin:/bin");
	envp[nenv++] = path_var;
	envp[nenv++] = (char *) "LC_ALL=C";
	v = getenv("TZ");
	if (v != NULL && (size_t) snprintf(tz_var, sizeof(tz_var), "TZ=%s", v) < sizeof(tz_var))
		envp[nenv++] = tz_var;
	v = getenv("LD_LIBRARY_PATH");
	if (v != NULL && (size_t) snprintf(ld_var, sizeof(ld_var), "LD_LIBRARY_PATH=%s", v) < sizeof(ld_var))
		envp[nenv++] = ld_var;
	envp[nenv] = NULL;

	if (drop && getgrouplist(pg->user, pg->gid, groups, &ngroups) < 0)
	{
		groups[0] = pg->gid;
		ngroups = 1;
	}

	devnull = fd_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC));
	if (devnull < 0)
	{
		snprintf(why, whylen, "could not open \"/dev/null\": %s", strerror(errno));
		return -1;
	}
	if (pipe2(ep, O_CLOEXEC) != 0 ||
		(ep[0] = fd_above_stdio(ep[0])) < 0 || (ep[1] = fd_above_stdio(ep[1])) < 0)
	{
		snprintf(why, whylen, "could not create pipe: %s", strerror(errno));
		close(devnull);
		return -1;
	}

	/* waitpid() needs SIGCHLD not to be ignored */
	if (sigaction(SIGCHLD, NULL, &old_chld) == 0 &&
		((!(old_chld.sa_flags & SA_SIGINFO) && old_chld.sa_handler == SIG_IGN) ||
		 (old_chld.sa_flags & SA_NOCLDWAIT)))
	{
		memset(&dfl, 0, sizeof(dfl));
		dfl.sa_handler = SIG_DFL;
		sigemptyset(&dfl.sa_mask);
		if (sigaction(SIGCHLD, &dfl, NULL) == 0)
			restore_chld = 1;
	}

	pid = fork();
	if (pid == 0)
	{
		sigset_t	none;
		int			sig,
					out_fd = devnull;

		close(ep[0]);
		sigemptyset(&none);
		(void) sigprocmask(SIG_SETMASK, &none, NULL);
		for (sig = 1; sig < NSIG; sig++)
			(void) signal(sig, SIG_DFL);

		if (drop)
		{
			if (setgroups((size_t) ngroups, groups) != 0)
				child_fail(ep[1], STEP_SETGROUPS);
			if (setgid(pg->gid) != 0)
				child_fail(ep[1], STEP_SETGID);
			if (setuid(pg->uid) != 0)
				child_fail(ep[1], STEP_SETUID);
		}
#ifdef __linux__
		/* a helper outliving a SIGKILLed master would race the reaper */
		(void) prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
		{
			errno = ESRCH;
			child_fail(ep[1], STEP_PARENT_GONE);
		}
#endif
		if (chdir(pg->dir) != 0)
			child_fail(ep[1], STEP_CHDIR);
		if (out_path != NULL)
		{
			out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
			if (out_fd < 0)
				child_fail(ep[1], STEP_OPEN_LOG);
		}
		if (dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			child_fail(ep[1], STEP_DUP2);
		close_from(3, ep[1]);
		execve(argv[0], (char *const *) argv, envp);
		child_fail(ep[1], STEP_EXEC);
	}
	if (pid < 0)
		snprintf(why, whylen, "could not fork: %s", strerror(errno));
	close(devnull);
	close(ep[1]);
	status = -1;
	if (pid > 0)
	{
		/* EOF: execve() succeeded and closed the pipe */
		do
			n = read(ep[0], &failure, sizeof(failure));
		while (n < 0 && errno == EINTR);
		while (waitpid(pid, &status, 0) < 0)
		{
			if (errno != EINTR)
			{
				snprintf(why, whylen, "could not wait for process %ld: %s",
						 (long) pid, strerror(errno));
				status = -1;
				break;
			}
		}
		if (n == (ssize_t) sizeof(failure))
		{
			describe_failure(pg, argv, out_path, &failure, why, whylen);
			status = -1;
		}
	}
	close(ep[0]);
	if (restore_chld)
		(void) sigaction(SIGCHLD, &old_chld, NULL);
	return status;
}

static int
remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void) sb;
	(void) type;
	(void) ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "eventodbd: could not remove \"%s\": %m\n", path);
	return 0;
}

static void
remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0)
		return;
	if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 &&
		errno != ENOENT)
		fprintf(stderr, "eventodbd: could not remove directory \"%s\": %m\n", path);
}

/* Read the postmaster's pid from postmaster.pid; 0 if none. */
static pid_t
read_postmaster_pid(const char *pidfile)
{
	char		buf[32];
	ssize_t		n;
	long		v;
	char	   *end;
	int			fd;

	fd = open(pidfile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno != 0 || end == buf || v <= 1 || (*end != '\n' && *end != '\0'))
		return 0;
	return (pid_t) v;
}

/*
 * Is the process still there?  A zombie is not: the postmaster is not our
 * child, and its new parent may be slow to reap it.
 */
static int
process_alive(pid_t pid)
{
	char		path[64],
				buf[512],
			   *p;
	ssize_t		n;
	int			fd;

	if (kill(pid, 0) != 0 && errno == ESRCH)
		return 0;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long) pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (p != NULL && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
		return 0;
	return 1;
}

/* Send sig, then wait up to ms for the process to be gone. */
static int
signal_and_wait(pid_t pid, int sig, long ms)
{
	long		waited;

	if (kill(pid, sig) != 0)
		return errno == ESRCH ? 0 : -1;
	for (waited = 0; waited <= ms; waited += 20)
	{
		/* if we are its reaper (pid 1, subreaper), collect the zombie */
		(void) waitpid(pid, NULL, WNOHANG);
		if (!process_alive(pid))
			return 0;
		sleep_ms(20);
	}
	return -1;
}

/* Stop the postmaster if there is one: pg_ctl, else SIGQUIT, else SIGKILL. */
static void
shutdown_cluster(const struct testpg *pg)
{
	char		pg_ctl[512],
				datadir[512],
				pidfile[512],
				proc[64],
				what[256];
	const char *argv[] = {pg_ctl, "-D", datadir, "-m", "fast", "-w", "-t", "10", "stop", NULL};
	struct stat st;
	pid_t		pid;
	int			status;

	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bindir);
	snprintf(datadir, sizeof(datadir), "%s/data", pg->dir);
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", pg->dir);
	if (lstat(pidfile, &st) != 0)
		return;

	status = spawn_wait(pg, argv, NULL, what, sizeof(what));
	if (status == 0)
		return;
	if (status >= 0)
		format_status(status, what, sizeof(what));

	pid = read_postmaster_pid(pidfile);
	if (pid <= 1)
		return;
	/* the file is writable by the cluster user: only signal its processes */
	snprintf(proc, sizeof(proc), "/proc/%ld", (long) pid);
	if (stat("/proc/self", &st) == 0)
	{
		if (stat(proc, &st) != 0)
			return;				/* gone */
		if (st.st_uid != pg->uid)
			return;
	}
	fprintf(stderr, "eventodbd: pg_ctl stop failed (%s), killing postmaster %ld\n",
			what, (long) pid);
	if (signal_and_wait(pid, SIGQUIT, 2000) != 0 &&
		signal_and_wait(pid, SIGKILL, 2000) != 0)
		fprintf(stderr, "eventodbd: could not kill postmaster %ld\n", (long) pid);
}

/*
 * The reaper: wait for the master to say "done" (one byte), or to die
 * (EOF, or we got reparented because a worker still holds the socket).  In
 * the latter case stop the cluster and remove the directory.
 */
static void
reaper_main(const struct testpg *pg, int fd, pid_t master)
{
	struct sigaction sa;
	sigset_t	none;
	struct pollfd pfd;
	char		c;
	ssize_t		n;
	int			sig,
				devnull,
				r,
				orig = fd;

	if (fd != 3)
	{
		if (dup2(fd, 3) < 0)
			_exit(1);
		fd = 3;
	}
	(void) fcntl(fd, F_SETFD, FD_CLOEXEC);
	close_from(4, -1);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0)
	{
		(void) dup2(devnull, 0);
		(void) dup2(devnull, 1);
		if (orig == 2 || fcntl(2, F_GETFD) < 0)
			(void) dup2(devnull, 2);
		if (devnull > 2)
			close(devnull);
	}

#ifdef __linux__
	(void) prctl(PR_SET_NAME, "testpg-reaper");
#endif
	/* out of the terminal's process group: ^C must not kill us first */
	(void) setsid();
	sigemptyset(&none);
	(void) sigprocmask(SIG_SETMASK, &none, NULL);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	for (sig = 1; sig < NSIG; sig++)
	{
		sa.sa_handler = (sig == SIGINT || sig == SIGHUP || sig == SIGQUIT ||
						 sig == SIGPIPE || sig == SIGTSTP || sig == SIGTTIN ||
						 sig == SIGTTOU || sig == SIGUSR1 || sig == SIGUSR2)
			? SIG_IGN : SIG_DFL;
		(void) sigaction(sig, &sa, NULL);
	}

	for (;;)
	{
		if (getppid() != master)
			break;
		pfd.fd = fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		r = poll(&pfd, 1, 500);
		if (r < 0)
		{
			if (errno != EINTR)
				sleep_ms(500);
			continue;
		}
		if (r == 0)
			continue;
		n = read(fd, &c, 1);
		if (n == 1)
			_exit(0);			/* the master cleaned up */
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;					/* EOF or reset: the master is gone */
	}
	shutdown_cluster(pg);
	remove_tree(pg->dir);
	_exit(0);
}

static int
start_reaper(struct testpg *pg, char *err, size_t errlen)
{
	int			sv[2];
	pid_t		master = getpid(),
				pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
	{
		set_err(err, errlen, "could not create socket pair: %m");
		return -1;
	}
	pid = fork();
	if (pid < 0)
	{
		set_err(err, errlen, "could not fork cleanup process: %m");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0)
	{
		close(sv[0]);
		reaper_main(pg, sv[1], master);
		_exit(0);
	}
	close(sv[1]);
	pg->reaper = pid;
	pg->reaper_fd = sv[0];
	return 0;
}

static void
dismiss_reaper(struct testpg *pg)
{
	ssize_t		n;

	if (pg->reaper <= 0)
		return;
	do
		n = send(pg->reaper_fd, "q", 1, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	close(pg->reaper_fd);
	while (waitpid(pg->reaper, NULL, 0) < 0 && errno == EINTR)
		;
	pg->reaper = 0;
	pg->reaper_fd = -1;
}

/* Resolve the cluster user: run_as, else postgres, else nobody (as root). */
static int
resolve_user(struct testpg *pg, const char *run_as, char *err, size_t errlen)
{
	const char *name = run_as;
	struct passwd *pw;

	if (geteuid() != 0)
	{
		pg->uid = geteuid();
		pg->gid = getegid();
		pg->user[0] = '\0';
		return 0;
	}
	if (name == NULL || name[0] == '\0')
		name = getpwnam("postgres") != NULL ? "postgres" : "nobody";
	errno = 0;
	pw = getpwnam(name);
	if (pw == NULL)
	{
		if (errno != 0)
			set_err(err, errlen, "could not look up user \"%s\": %m", name);
		else
			set_err(err, errlen, "user \"%s\" does not exist", name);
		return -1;
	}
	if (pw->pw_uid == 0)
	{
		set_err(err, errlen, "cannot run the test cluster as user \"%s\": it is root", name);
		return -1;
	}
	if (strlen(name) >= sizeof(pg->user))
	{
		set_err(err, errlen, "user name \"%s\" is too long", name);
		return -1;
	}
	strcpy(pg->user, name);
	pg->uid = pw->pw_uid;
	pg->gid = pw->pw_gid;
	return 0;
}

static int
run_initdb(struct testpg *pg, char *err, size_t errlen)
{
	static const char *const locales[] = {"--locale=C.UTF-8", "--locale=C"};
	char		initdb[512],
				datadir[512],
				logpath[512],
				what[64],
				why[512];
	const char *argv[] = {initdb, "-D", datadir, "-A", "trust", "-E", "UTF8", NULL,
	"-U", "postgres", "--no-sync", NULL};
	size_t		i = 0;
	locale_t	loc;
	int			status = -1;

	snprintf(initdb, sizeof(initdb), "%s/initdb", pg->bindir);
	snprintf(datadir, sizeof(datadir), "%s/data", pg->dir);
	snprintf(logpath, sizeof(logpath), "%s/initdb.log", pg->dir);

	loc = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t) 0);
	if (loc == (locale_t) 0)
		i = 1;					/* no C.UTF-8 here: go straight to C */
	else
		freelocale(loc);

	for (; i < sizeof(locales) / sizeof(locales[0]); i++)
	{
		argv[7] = locales[i];
		remove_tree(datadir);
		status = spawn_wait(pg, argv, logpath, why, sizeof(why));
		if (status == 0)
			return 0;
		if (status < 0)
		{
			set_err(err, errlen, "could not run initdb: %s", why);
			return -1;
		}
	}
	format_status(status, what, sizeof(what));
	set_err(err, errlen, "initdb failed (%s)", what);
	append_log_tail(err, errlen, logpath);
	return -1;
}

static int
run_pg_ctl_start(struct testpg *pg, char *err, size_t errlen)
{
	char		pg_ctl[512],
				datadir[512],
				logpath[512],
				ctllog[512],
				opts[1024],
				what[64],
				why[512];
	const char *argv[] = {pg_ctl, "-D", datadir, "-w", "-t", "30", "-l", logpath,
	"-o", opts, "start", NULL};
	int			status;

	snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", pg->bindir);
	snprintf(datadir, sizeof(datadir), "%s/data", pg->dir);
	snprintf(logpath, sizeof(logpath), "%s/postgres.log", pg->dir);
	snprintf(ctllog, sizeof(ctllog), "%s/pg_ctl.log", pg->dir);
	/* pg_ctl hands this to /bin/sh; the directory has only plain characters */
	snprintf(opts, sizeof(opts),
			 "-c listen_addresses='' -k '%s' -p " PG_PORT
			 " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
			 " -c max_connections=200 -c shared_buffers=128MB",
			 pg->dir);

	status = spawn_wait(pg, argv, ctllog, why, sizeof(why));
	if (status == 0)
		return 0;
	if (status < 0)
	{
		set_err(err, errlen, "could not run pg_ctl: %s", why);
		return -1;
	}
	format_status(status, what, sizeof(what));
	set_err(err, errlen, "could not start the test cluster (pg_ctl %s)", what);
	append_log_tail(err, errlen, logpath);
	return -1;
}

int
testpg_start(struct testpg *pg, const char *run_as, char *err, size_t errlen)
{
	char		base[128];

	memset(pg, 0, sizeof(*pg));
	pg->reaper_fd = -1;
	pg->owner = getpid();
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	if (find_bindir(pg->bindir, sizeof(pg->bindir), err, errlen) != 0)
		return -1;
	if (resolve_user(pg, run_as, err, errlen) != 0)
		return -1;

	temp_base(base, sizeof(base));
	snprintf(pg->dir, sizeof(pg->dir), "%s/" DIR_TEMPLATE, base);
	if (mkdtemp(pg->dir) == NULL)
	{
		set_err(err, errlen, "could not create directory \"%s\": %m", pg->dir);
		pg->dir[0] = '\0';
		return -1;
	}
	/* searchable by all so the master (root or not) reaches the socket */
	if (chmod(pg->dir, 0711) != 0)
	{
		set_err(err, errlen, "could not change permissions of directory \"%s\": %m", pg->dir);
		remove_tree(pg->dir);
		pg->dir[0] = '\0';
		return -1;
	}
	if (geteuid() == 0 && chown(pg->dir, pg->uid, pg->gid) != 0)
	{
		set_err(err, errlen, "could not change owner of directory \"%s\": %m", pg->dir);
		remove_tree(pg->dir);
		pg->dir[0] = '\0';
		return -1;
	}
	if (start_reaper(pg, err, errlen) != 0)
	{
		remove_tree(pg->dir);
		pg->dir[0] = '\0';
		return -1;
	}

	if (run_initdb(pg, err, errlen) != 0 || run_pg_ctl_start(pg, err, errlen) != 0)
	{
		testpg_stop(pg);
		return -1;
	}

	snprintf(pg->conninfo, sizeof(pg->conninfo),
			 "host=%s port=" PG_PORT " dbname=postgres user=postgres", pg->dir);
	pg->started = 1;
	return 0;
}

void
testpg_stop(struct testpg *pg)
{
	if (pg == NULL || pg->dir[0] == '\0' || pg->owner != getpid())
		return;
	shutdown_cluster(pg);
	remove_tree(pg->dir);
	dismiss_reaper(pg);
	pg->dir[0] = '\0';
	pg->conninfo[0] = '\0';
	pg->started = 0;
}
