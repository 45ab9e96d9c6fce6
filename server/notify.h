/*
 * notify.h - the systemd notification protocol, spoken directly.
 *
 * Under Type=notify systemd passes $NOTIFY_SOCKET, an AF_UNIX datagram
 * socket (a leading '@' names the Linux abstract namespace).  The master
 * sends "READY=1", "RELOADING=1\nMONOTONIC_USEC=...", "STOPPING=1",
 * "STATUS=..." and "WATCHDOG=1" there: one datagram per call.  The
 * protocol is stable and small, so no libsystemd (sd_notify(3)).
 * Without NOTIFY_SOCKET every call does nothing.
 */
#ifndef EVENTODB_NOTIFY_H
#define EVENTODB_NOTIFY_H

#include <stdint.h>

/*
 * Read and unset NOTIFY_SOCKET (so neither workers nor the test-mode
 * PostgreSQL see it) and WATCHDOG_USEC.  Call once, early, in the master.
 */
void srv_notify_init(void);

/* Send one datagram built from fmt; returns 0, or -1 (errno set). */
int srv_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "RELOADING=1" with MONOTONIC_USEC=now, plus a STATUS line. */
int srv_notify_reloading(const char *status);

/* Watchdog interval systemd asked for, in microseconds (0: none). */
uint64_t srv_notify_watchdog_usec(void);

#endif
