/*
 * notify.c — sd_notify without libsystemd: one datagram to the unix socket named by
 * $NOTIFY_SOCKET (a path, or an abstract name starting with '@'); and systemd's
 * watchdog: when the unit sets WatchdogSec=, systemd passes WATCHDOG_USEC (and
 * WATCHDOG_PID, the process it watches) and restarts the service unless it hears
 * "WATCHDOG=1" within that time. The ping comes from the daemon's event loop, every
 * half interval, so a loop that stops turning (a blocked call, a livelock) stops the
 * pings: that is what the watchdog is for.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "worker.h"

int
wk_sd_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un addr;
	size_t len;
	int fd;
	ssize_t sent;

	if (path == NULL || *path == '\0')
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path))
	{
		wk_log(WK_WARN, "NOTIFY_SOCKET=%s is not a usable socket address", path);
		return -1;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		wk_log(WK_WARN, "sd_notify: socket: %s", strerror(errno));
		return -1;
	}
	sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&addr,
	              (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
	if (sent < 0)
	{
		wk_log(WK_WARN, "sd_notify(%s): %s", state, strerror(errno));
		return -1;
	}
	return 0;
}

double
wk_watchdog_interval(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	char *end;

	if (usec == NULL || *usec == '\0')
		return 0;
	if (pid != NULL && *pid != '\0')
	{
		errno = 0;
		long p = strtol(pid, &end, 10);
		if (errno || *end || p != (long)getpid())
			return 0; /* another process of the unit is the one watched */
	}
	errno = 0;
	unsigned long long us = strtoull(usec, &end, 10);
	if (errno || *end || us == 0 || us > 3600ULL * 1000000ULL * 24)
	{
		wk_log(WK_WARN, "WATCHDOG_USEC=%s is not a number of microseconds; no watchdog pings", usec);
		return 0;
	}
	return (double)us / 1e6;
}

static ev_timer watchdog_timer;

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	wk_sd_notify("WATCHDOG=1");
}

void
wk_watchdog_start(struct ev_loop *loop)
{
	double interval = wk_watchdog_interval();

	if (interval <= 0 || ev_is_active(&watchdog_timer))
		return;
	wk_log(WK_DEBUG, "systemd watchdog: a ping every %.3f s (WatchdogSec %.3f s)", interval / 2, interval);
	ev_timer_init(&watchdog_timer, watchdog_cb, 0, interval / 2);
	ev_timer_start(loop, &watchdog_timer);
	ev_unref(loop); /* the pings alone do not keep a loop running */
}
