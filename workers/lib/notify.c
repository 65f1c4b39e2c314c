/*
 * notify.c — sd_notify without libsystemd: one datagram to the unix socket named by
 * $NOTIFY_SOCKET (a path, or an abstract name starting with '@').
 */
#include <errno.h>
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
