/* Unit test of the write coalescing (gateway/db/pg_send.c) with real libpq
 * connections to a fake server on a Unix socket (it answers the startup with
 * AuthenticationOk and ReadyForQuery): libpq's writes are held until the loop
 * is about to poll, then go out; and when libpq closes a socket by itself (the
 * server went away) and another socket takes its number, neither a new send()
 * on that number nor the lost connection's held bytes ever reach the new socket.
 * Its own binary (libev, libpq): it defines send() for the whole process. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ev.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "pg_send.h"
#include "tap.h"

/* pg_send.c alone: the one global of the gateway's base it uses. Its log lines go
 * through workers/lib's wk_log (to stderr), its TAP through workers/lib/tap.c. */
struct ev_loop *gw_loop;

static char dir[64];
static int listener = -1;

static void
fake_server(void)
{
	snprintf(dir, sizeof dir, "/tmp/pg_send_check.XXXXXX");
	if (!mkdtemp(dir))
		abort();
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.5432", dir);
	listener = socket(AF_UNIX, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 4))
		abort();
}

static void
read_exact(int fd, void *buf, size_t n)
{
	for (size_t got = 0; got < n;)
	{
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r <= 0)
			abort();
		got += (size_t)r;
	}
}

/* A connection in CONNECTION_OK, registered with pg_send.c; *server is the
 * fake server's end. */
static PGconn *
connect_one(int *server)
{
	const char *keys[] = {"host", "port", "user", "dbname", "sslmode", "gssencmode", NULL};
	const char *vals[] = {dir, "5432", "u", "d", "disable", "disable", NULL};
	PGconn *pg = PQconnectStartParams(keys, vals, 0);
	if (!pg || PQstatus(pg) == CONNECTION_BAD)
		abort();
	PQsetnonblocking(pg, 1);
	*server = accept(listener, NULL, NULL);
	int answered = 0;
	for (;;)
	{
		PostgresPollingStatusType st = PQconnectPoll(pg);
		if (st == PGRES_POLLING_OK)
			break;
		if (st == PGRES_POLLING_FAILED)
		{
			printf("# %s", PQerrorMessage(pg));
			abort();
		}
		if (st == PGRES_POLLING_READING && !answered)
		{
			uint32_t len;
			read_exact(*server, &len, 4);
			char startup[1024];
			read_exact(*server, startup, ntohl(len) - 4);
			static const char ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};
			if (write(*server, ok, sizeof ok) != (ssize_t)sizeof ok)
				abort();
			answered = 1;
		}
		struct pollfd p = {.fd = PQsocket(pg), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
		poll(&p, 1, 1000);
	}
	gw_pgsend_register(pg);
	return pg;
}

/* Bytes waiting on fd now (without blocking), or 0. */
static ssize_t
waiting(int fd, char *buf, size_t n)
{
	ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
	return r < 0 ? 0 : r;
}

/* Whether fd is closed (no longer an open descriptor). */
static int
fcntl_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/* The server went away: libpq reads the EOF and closes its socket itself. Another
 * socket then takes that descriptor number; returns its peer. */
static int
lose_and_reuse(PGconn *pg, int server, int old_fd)
{
	close(server);
	struct pollfd p = {.fd = old_fd, .events = POLLIN};
	poll(&p, 1, 1000);
	PQconsumeInput(pg);
	ok(PQsocket(pg) == -1 && fcntl_closed(old_fd), "libpq closed the socket by itself (EOF)");
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		abort();
	if (sp[0] != old_fd) /* the lowest free number is usually the one just freed */
	{
		if (dup2(sp[0], old_fd) != old_fd)
			abort();
		close(sp[0]);
	}
	return sp[1];
}

int
main(void)
{
	setenv("PGPOD_GATEWAY_COALESCE", "1", 1);
	gw_loop = ev_default_loop(0);
	gw_pgsend_init();
	printf("# libpq %d\n", PQlibVersion());
	ok(gw_pgsend_enabled(), "coalescing is on with this libpq (a tested version)");
	fake_server();
	char buf[256];

	int server;
	PGconn *pg = connect_one(&server);
	int fd = PQsocket(pg);
	ok(PQsendQuery(pg, "SELECT 1") == 1, "libpq sends a query");
	ok(waiting(server, buf, sizeof buf) == 0, "... held: nothing on the wire yet");
	ok(gw_pgsend_held_sends() >= 1, "... counted as held");
	ev_run(gw_loop, EVRUN_NOWAIT);
	ssize_t n = waiting(server, buf, sizeof buf);
	ok(n > 0 && buf[0] == 'Q' && memmem(buf, (size_t)n, "SELECT 1", 8),
	   "written when the loop is about to poll");

	/* a stale entry must not take another socket's bytes */
	int peer = lose_and_reuse(pg, server, fd);
	ssize_t sent = send(fd, "xyz", 3, MSG_NOSIGNAL);
	ok(sent == 3, "send() on the reused number (%zd %s)", sent, sent < 0 ? strerror(errno) : "");
	n = waiting(peer, buf, sizeof buf);
	ok(n == 3 && !memcmp(buf, "xyz", 3), "... goes straight to the new socket (not held)");
	ev_run(gw_loop, EVRUN_NOWAIT);
	ok(waiting(peer, buf, sizeof buf) == 0, "... and nothing else follows it");
	gw_pgsend_release(fd, 0);
	PQfinish(pg);
	close(peer);
	close(fd);

	/* a lost connection's held bytes must not reach the socket that took its number */
	pg = connect_one(&server);
	fd = PQsocket(pg);
	ok(PQsendQuery(pg, "SELECT 'lost'") == 1, "a query held for a second connection");
	ok(waiting(server, buf, sizeof buf) == 0, "... not yet written");
	peer = lose_and_reuse(pg, server, fd);
	ev_run(gw_loop, EVRUN_NOWAIT);
	ok(waiting(peer, buf, sizeof buf) == 0,
	   "the lost connection's held query is dropped, not written to the new socket");
	gw_pgsend_release(fd, 1);
	ok(waiting(peer, buf, sizeof buf) == 0, "... nor by a flushing release");
	PQfinish(pg);
	close(peer);
	close(fd);

	/* a release with flush writes what is held on a live connection */
	pg = connect_one(&server);
	fd = PQsocket(pg);
	PQsendQuery(pg, "SELECT 2");
	gw_pgsend_release(fd, 1);
	n = waiting(server, buf, sizeof buf);
	ok(n > 0 && memmem(buf, (size_t)n, "SELECT 2", 8), "a flushing release writes what is held");
	ok(send(fd, "q", 1, MSG_NOSIGNAL) == 1 && waiting(server, buf, sizeof buf) == 1,
	   "after the release, send() goes straight through");
	PQfinish(pg);
	close(server);

	close(listener);
	char path[128];
	snprintf(path, sizeof path, "%s/.s.PGSQL.5432", dir);
	unlink(path);
	rmdir(dir);
	return tap_done();
}
