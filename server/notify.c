/*
 * notify.c - systemd notifications without libsystemd (see notify.h).
 *
 * sd_notify(3) documents the wire format: one AF_UNIX SOCK_DGRAM message
 * of newline-separated VAR=value assignments sent to $NOTIFY_SOCKET,
 * whose name is a filesystem path or, with a leading '@', an abstract
 * socket.  systemd learns the sender's pid from SO_PASSCRED on its side,
 * so with NotifyAccess=main only the master's messages count; the
 * workers never call this.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_len;	/* 0: no NOTIFY_SOCKET */
static uint64_t watchdog_usec;

void
srv_notify_init(void)
{
	const char *s = getenv("NOTIFY_SOCKET"), *w = getenv("WATCHDOG_USEC");
	const char *wpid = getenv("WATCHDOG_PID");
	size_t n;

	if (w && (!wpid || strtol(wpid, NULL, 10) == (long)getpid()))
		watchdog_usec = strtoull(w, NULL, 10);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	if (!s || (s[0] != '/' && s[0] != '@')) {
		unsetenv("NOTIFY_SOCKET");
		return;
	}
	n = strlen(s);
	if (n < 2 || n >= sizeof(notify_addr.sun_path)) {
		unsetenv("NOTIFY_SOCKET");
		return;
	}
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, s, n);
	if (s[0] == '@')
		notify_addr.sun_path[0] = '\0';	/* abstract: no trailing NUL counted */
	notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (s[0] == '/'));
	unsetenv("NOTIFY_SOCKET");
}

int
srv_notify(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	ssize_t w;
	int fd, n;

	if (!notify_len)
		return 0;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	w = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
	    notify_len);
	n = w == (ssize_t)n ? 0 : -1;
	close(fd);
	return n;
}

int
srv_notify_reloading(const char *status)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return srv_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s",
	    (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000,
	    status);
}

uint64_t
srv_notify_watchdog_usec(void)
{
	return watchdog_usec;
}
