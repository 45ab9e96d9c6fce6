/*
 * testpg_test.c - TAP test of the private test-mode cluster (testpg.c).
 *
 * Starts two clusters at once, queries both over libpq, stops them and
 * checks their directories are gone; checks a failing start leaves nothing
 * behind; and checks that a master killed with SIGKILL does not orphan its
 * cluster (the reaper stops it and removes the directory).
 *
 * Build: gcc -O2 -Wall -Wextra -I server t/unit/testpg_test.c server/testpg.c
 *        $(pkg-config --cflags --libs libpq) -o testpg_test
 * Runs as root (cluster as postgres/nobody) or as any user with a writable
 * $TMPDIR.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "testpg.h"
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static char real_bindir[256];	/* where testpg found the server programs */



static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static int
exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* Reap any orphans reparented to us (we are a subreaper). */
static void
reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* Run a one-value query; copies the value into out. */
static int
query1(PGconn *conn, const char *sql, char *out, size_t outlen)
{
	PGresult   *res = PQexec(conn, sql);
	int			rc = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
		rc = 0;
	}
	else
		diag("query \"%s\" failed: %s", sql, PQerrorMessage(conn));
	PQclear(res);
	return rc;
}

static void
check_cluster(const struct testpg *pg, const char *label)
{
	PGconn	   *conn = PQconnectdb(pg->conninfo);
	char		v[256];

	if (!ok(PQstatus(conn) == CONNECTION_OK, "%s: connect with \"%s\"", label, pg->conninfo))
	{
		diag("%s", PQerrorMessage(conn));
		PQfinish(conn);
		return;
	}
	ok(query1(conn, "SELECT 1", v, sizeof(v)) == 0 && strcmp(v, "1") == 0,
	   "%s: SELECT 1", label);
	ok(query1(conn, "SHOW fsync", v, sizeof(v)) == 0 && strcmp(v, "off") == 0,
	   "%s: fsync is off", label);
	ok(query1(conn, "SHOW synchronous_commit", v, sizeof(v)) == 0 && strcmp(v, "off") == 0,
	   "%s: synchronous_commit is off", label);
	ok(query1(conn, "SHOW listen_addresses", v, sizeof(v)) == 0 && v[0] == '\0',
	   "%s: no TCP listen address", label);
	ok(query1(conn, "SHOW max_connections", v, sizeof(v)) == 0 && strcmp(v, "200") == 0,
	   "%s: max_connections is 200", label);
	ok(query1(conn, "SHOW server_encoding", v, sizeof(v)) == 0 && strcmp(v, "UTF8") == 0,
	   "%s: encoding is UTF8", label);
	if (query1(conn, "SHOW lc_collate", v, sizeof(v)) == 0)
		diag("%s: lc_collate %s", label, v);
	ok(query1(conn, "CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (42); SELECT x FROM t",
			  v, sizeof(v)) == 0 && strcmp(v, "42") == 0,
	   "%s: can create and write a table", label);
	PQfinish(conn);
}

/* Fake bindir whose initdb fails, to test the error path. */
static int
make_fake_bindir(const char *dir)
{
	static const char *const names[] = {"initdb", "pg_ctl", "postgres"};
	char		path[512];
	size_t		i;
	FILE	   *f;

	if (mkdir(dir, 0755) != 0 || chmod(dir, 0755) != 0)
		return -1;
	for (i = 0; i < 3; i++)
	{
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		f = fopen(path, "w");
		if (f == NULL)
			return -1;
		fprintf(f, "#!/bin/sh\necho \"line one of %s\"\necho \"fake %s failure\" >&2\nexit 3\n",
				names[i], names[i]);
		fclose(f);
		if (chmod(path, 0755) != 0)
			return -1;
	}
	return 0;
}

static int
dir_is_empty(const char *dir, const char *except)
{
	DIR		   *d = opendir(dir);
	struct dirent *e;
	int			n = 0;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL)
	{
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
			(except != NULL && strcmp(e->d_name, except) == 0))
			continue;
		diag("left behind: %s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	return n == 0;
}

/* pg_ctl stop fails: testpg_stop() must kill the postmaster itself. */
static void
test_stop_fallback(const char *base)
{
	struct testpg pg;
	char		bin[300],
				path[600],
				err[512],
				dir[256],
				pidfile[320];
	FILE	   *f;
	pid_t		postmaster = 0;
	double		t0;
	int			rc;

	if (real_bindir[0] == '\0')
		return;
	snprintf(bin, sizeof(bin), "%s/stopfails", base);
	rc = mkdir(bin, 0755) == 0 && chmod(bin, 0755) == 0 ? 0 : -1;
	snprintf(path, sizeof(path), "%s/initdb", bin);
	snprintf(err, sizeof(err), "%s/initdb", real_bindir);
	rc |= symlink(err, path);
	snprintf(path, sizeof(path), "%s/postgres", bin);
	snprintf(err, sizeof(err), "%s/postgres", real_bindir);
	rc |= symlink(err, path);
	snprintf(path, sizeof(path), "%s/pg_ctl", bin);
	f = fopen(path, "w");
	if (f != NULL)
	{
		fprintf(f, "#!/bin/sh\nfor a; do [ \"$a\" = stop ] && exit 1; done\nexec %s/pg_ctl \"$@\"\n",
				real_bindir);
		fclose(f);
	}
	rc |= f == NULL || chmod(path, 0755) != 0;
	if (!ok(rc == 0, "bindir with a failing pg_ctl stop created"))
		return;

	setenv("EVENTODB_PG_BINDIR", bin, 1);
	rc = testpg_start(&pg, NULL, err, sizeof(err));
	unsetenv("EVENTODB_PG_BINDIR");
	if (!ok(rc == 0, "start with the wrapped pg_ctl"))
	{
		diag("error: %s", err);
		return;
	}
	snprintf(dir, sizeof(dir), "%s", pg.dir);
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", dir);
	f = fopen(pidfile, "r");
	if (f != NULL)
	{
		long		v;

		if (fscanf(f, "%ld", &v) == 1)
			postmaster = (pid_t) v;
		fclose(f);
	}
	t0 = now();
	testpg_stop(&pg);
	diag("stop with pg_ctl failing took %.3f s", now() - t0);
	reap_orphans();
	ok(!exists(dir), "directory removed although pg_ctl stop failed");
	ok(postmaster > 1 && kill(postmaster, 0) != 0 && errno == ESRCH,
	   "postmaster %ld was killed", (long) postmaster);

	snprintf(path, sizeof(path), "%s/pg_ctl", bin);
	unlink(path);
	snprintf(path, sizeof(path), "%s/initdb", bin);
	unlink(path);
	snprintf(path, sizeof(path), "%s/postgres", bin);
	unlink(path);
	rmdir(bin);
}

static void
test_failure(const char *base)
{
	struct testpg pg;
	char		err[512],
				fake[300];
	char	   *old = getenv("EVENTODB_PG_BINDIR");
	int			rc;

	old = old != NULL ? strdup(old) : NULL;
	snprintf(fake, sizeof(fake), "%s/fakebin", base);
	if (!ok(make_fake_bindir(fake) == 0, "fake bindir created"))
		return;
	setenv("EVENTODB_PG_BINDIR", fake, 1);
	rc = testpg_start(&pg, NULL, err, sizeof(err));
	ok(rc == -1, "start with a failing initdb fails");
	diag("error: %s", err);
	ok(strstr(err, "initdb failed") != NULL && strstr(err, "fake initdb failure") != NULL,
	   "error names initdb and includes the log tail");
	ok(dir_is_empty(base, "fakebin"), "failed start leaves nothing behind");
	ok(pg.reaper == 0, "failed start reaped its cleanup process");

	setenv("EVENTODB_PG_BINDIR", "/nonexistent", 1);
	rc = testpg_start(&pg, NULL, err, sizeof(err));
	ok(rc == -1 && strstr(err, "EVENTODB_PG_BINDIR") != NULL,
	   "bad EVENTODB_PG_BINDIR is reported (%s)", err);

	if (old != NULL)
		setenv("EVENTODB_PG_BINDIR", old, 1);
	else
		unsetenv("EVENTODB_PG_BINDIR");
	free(old);

	if (geteuid() == 0)
	{
		rc = testpg_start(&pg, "no-such-user-xyz", err, sizeof(err));
		ok(rc == -1 && strstr(err, "does not exist") != NULL,
		   "unknown --user is reported (%s)", err);
		ok(dir_is_empty(base, "fakebin"), "nothing left behind");

		/* a TMPDIR the cluster user cannot reach: a clear error */
		snprintf(fake, sizeof(fake), "%s/private", base);
		if (mkdir(fake, 0700) == 0)
		{
			setenv("TMPDIR", fake, 1);
			rc = testpg_start(&pg, NULL, err, sizeof(err));
			diag("error: %s", err);
			ok(rc == -1 && strstr(err, "could not change directory") != NULL &&
			   strstr(err, "as user") != NULL,
			   "unreachable TMPDIR is reported");
			ok(dir_is_empty(fake, NULL), "nothing left behind");
			rmdir(fake);
			setenv("TMPDIR", base, 1);
		}
	}
}

static void
test_two_clusters(void)
{
	struct testpg a,
				b;
	char		err[512],
				dira[256],
				dirb[256];
	struct stat st;
	double		t0,
				t1,
				t2,
				t3;
	const char *b_user = geteuid() == 0 ? "nobody" : NULL;

	t0 = now();
	if (!ok(testpg_start(&a, NULL, err, sizeof(err)) == 0, "start cluster A"))
	{
		diag("error: %s", err);
		return;
	}
	t1 = now();
	snprintf(real_bindir, sizeof(real_bindir), "%s", a.bindir);
	diag("cluster A started in %.3f s (dir %s, bindir %s, user %s)",
		 t1 - t0, a.dir, a.bindir, a.user[0] ? a.user : "(self)");
	ok(t1 - t0 < 5.0, "start takes less than 5 s (%.3f s)", t1 - t0);

	if (!ok(testpg_start(&b, b_user, err, sizeof(err)) == 0, "start cluster B while A runs"))
	{
		diag("error: %s", err);
		testpg_stop(&a);
		return;
	}
	t2 = now();
	diag("cluster B started in %.3f s (dir %s, user %s)",
		 t2 - t1, b.dir, b.user[0] ? b.user : "(self)");
	ok(strcmp(a.dir, b.dir) != 0, "distinct directories");
	ok(strncmp(a.dir, "/", 1) == 0 && strstr(a.dir, "/eventodbd-") != NULL,
	   "directory is named eventodbd-XXXXXX");

	ok(stat(a.dir, &st) == 0 && (st.st_mode & 07777) == 0711, "directory mode is 0711");
	if (geteuid() == 0)
	{
		struct passwd *pw = getpwnam(a.user);

		ok(pw != NULL && st.st_uid == pw->pw_uid && st.st_uid != 0,
		   "A's directory belongs to the cluster user %s", a.user);
		ok(strcmp(a.user, getpwnam("postgres") ? "postgres" : "nobody") == 0,
		   "default cluster user is postgres if it exists, else nobody");
		ok(stat(b.dir, &st) == 0 && st.st_uid == getpwnam("nobody")->pw_uid,
		   "B's directory belongs to run_as user nobody");
	}
	else
		ok(st.st_uid == geteuid(), "directory belongs to us");

	check_cluster(&a, "A");
	check_cluster(&b, "B");

	/* a forked child (a worker running atexit handlers) must not stop it */
	fflush(stdout);
	{
		pid_t		pid = fork();
		PGconn	   *conn;

		if (pid == 0)
		{
			testpg_stop(&a);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		conn = PQconnectdb(a.conninfo);
		ok(exists(a.dir) && PQstatus(conn) == CONNECTION_OK,
		   "testpg_stop() in a forked child leaves the cluster alone");
		PQfinish(conn);
	}

	snprintf(dira, sizeof(dira), "%s", a.dir);
	snprintf(dirb, sizeof(dirb), "%s", b.dir);
	t2 = now();
	testpg_stop(&a);
	t3 = now();
	diag("cluster A stopped and removed in %.3f s", t3 - t2);
	ok(!exists(dira), "A's directory is gone");
	ok(a.dir[0] == '\0' && a.reaper == 0, "A's state is cleared");
	check_cluster(&b, "B after A stopped");
	testpg_stop(&b);
	ok(!exists(dirb), "B's directory is gone");
	testpg_stop(&b);
	ok(1, "second stop is harmless");
	reap_orphans();
}

/*
 * SIGKILL a master that runs a cluster.  With a worker, a grandchild that
 * inherited the master's descriptors outlives it, so the reaper sees no
 * EOF and must notice it was reparented.
 */
static void
test_sigkill(int with_worker)
{
	int			p[2];
	pid_t		child,
				worker = 0,
				postmaster = 0;
	const char *label = with_worker ? " (a worker survives)" : "";
	char		buf[300],
				pidfile[320];
	ssize_t		n;
	size_t		got = 0;
	double		t0;
	int			gone = 0,
				pm_gone = 0;
	FILE	   *f;

	if (pipe(p) != 0)
	{
		ok(0, "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	child = fork();
	if (child == 0)
	{
		struct testpg pg;
		char		err[512];

		close(p[0]);
		if (testpg_start(&pg, NULL, err, sizeof(err)) != 0)
		{
			dprintf(p[1], "ERROR %s\n", err);
			_exit(1);
		}
		if (with_worker)
		{
			worker = fork();
			if (worker == 0)
			{
				close(p[1]);
				for (;;)
					pause();
			}
		}
		dprintf(p[1], "%s %ld\n", pg.dir, (long) worker);
		for (;;)
			pause();
	}
	close(p[1]);
	while (got + 1 < sizeof(buf))
	{
		n = read(p[0], buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t) n;
		if (memchr(buf, '\n', got) != NULL)
			break;
	}
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strchr(buf, ' ') != NULL)
	{
		worker = (pid_t) atol(strchr(buf, ' ') + 1);
		*strchr(buf, ' ') = '\0';
	}
	if (!ok(got > 0 && buf[0] == '/', "child started a cluster in %s", buf))
	{
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		close(p[0]);
		return;
	}
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", buf);
	f = fopen(pidfile, "r");
	if (f != NULL)
	{
		long		v;

		if (fscanf(f, "%ld", &v) == 1)
			postmaster = (pid_t) v;
		fclose(f);
	}
	ok(postmaster > 1 && kill(postmaster, 0) == 0, "postmaster %ld is running", (long) postmaster);

	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	n = read(p[0], pidfile, 1);
	if (!with_worker)
		ok(n == 0, "our pipe got EOF: the reaper did not keep the master's descriptors");
	close(p[0]);

	t0 = now();
	while (now() - t0 < 10.0)
	{
		reap_orphans();
		if (!gone && !exists(buf))
		{
			gone = 1;
			diag("directory removed %.3f s after SIGKILL", now() - t0);
		}
		if (postmaster > 1 && kill(postmaster, 0) != 0 && errno == ESRCH)
			pm_gone = 1;
		if (gone && pm_gone)
			break;
		sleep_ms(20);
	}
	ok(gone, "directory removed after the master was SIGKILLed%s", label);
	ok(pm_gone, "postmaster stopped after the master was SIGKILLed%s", label);
	if (worker > 0)
	{
		kill(worker, SIGKILL);
		reap_orphans();
	}
}

int
main(void)
{
	char		base[256];
	const char *tmp = getenv("TMPDIR");

	setvbuf(stdout, NULL, _IOLBF, 0);
#ifdef __linux__
	/* orphaned postmasters and reapers come back to us, so we can reap them */
	(void) prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
	snprintf(base, sizeof(base), "%s/tpt-XXXXXX", tmp != NULL && tmp[0] == '/' ? tmp : "/tmp");
	if (mkdtemp(base) == NULL || chmod(base, 0711) != 0)
	{
		printf("Bail out! could not create directory \"%s\": %s\n", base, strerror(errno));
		return 1;
	}
	diag("running as uid %ld, TMPDIR for failure test %s", (long) geteuid(), base);

	test_two_clusters();
	setenv("TMPDIR", base, 1);
	test_failure(base);
	test_stop_fallback(base);
	if (tmp != NULL)
		setenv("TMPDIR", tmp, 1);
	else
		unsetenv("TMPDIR");
	test_sigkill(0);
	test_sigkill(1);

	{
		char		fake[300],
					path[320];
		const char *names[] = {"initdb", "pg_ctl", "postgres"};

		snprintf(fake, sizeof(fake), "%s/fakebin", base);
		for (int i = 0; i < 3; i++)
		{
			snprintf(path, sizeof(path), "%s/%s", fake, names[i]);
			unlink(path);
		}
		rmdir(fake);
		rmdir(base);
	}
	return tap_done();
}
