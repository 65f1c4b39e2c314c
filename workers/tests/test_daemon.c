/*
 * test_daemon.c — unit tests of workers/lib's daemon.c (signals and draining) and
 * conn.c (the reconnect loop) on a real libev loop, without a server:
 *  - SIGTERM: STOPPING=1 to $NOTIFY_SOCKET, the stop callback once (a second SIGTERM
 *    is ignored), the drain deadline, its second stage, then the loop ends; SIGHUP
 *    calls reload; wk_daemon_drained ends the loop before the deadline;
 *  - wk_conn against a socket nobody listens on: each failed attempt is reported down
 *    and retried after wk_backoff_next (0.1, 0.2, 0.4 s); against a server that accepts
 *    and never answers, the connect timeout ends the attempt.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "worker.h"

#include "tap.h"

static struct ev_loop *loop;
static int stops, reloads, deadlines;
static double stop_at, end_at;

static void
on_stop(void *arg)
{
	(void)arg;
	stops++;
	stop_at = ev_time();
}

static void
on_reload(void *arg)
{
	(void)arg;
	reloads++;
}

/* first deadline: ask 0.2 s more; second: end */
static double
on_deadline(void *arg)
{
	(void)arg;
	return ++deadlines == 1 ? 0.2 : 0;
}

static void
send_signal(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)revents;
	raise((int)(long)w->data);
}

static void
drain_now(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	wk_daemon_drained();
}

static ev_timer at(double after, int sig)
{
	ev_timer t;
	ev_timer_init(&t, send_signal, after, 0.);
	t.data = (void *)(long)sig;
	return t;
}

/* --- conn.c -------------------------------------------------------------------------- */
static char sock_dir[64];
static int downs, ups;
static double down_at[8], delays[8];
static char last_why[256];

static PGconn *
c_start(wk_conn *c, void *arg)
{
	char ci[160];
	(void)c;
	(void)arg;
	snprintf(ci, sizeof ci, "host=%s port=5999 dbname=x user=x connect_timeout=0", sock_dir);
	return PQconnectStart(ci);
}

static void
c_up(wk_conn *c, void *arg)
{
	(void)c;
	(void)arg;
	ups++;
}

static void
c_down(wk_conn *c, const char *why, bool was_up, void *arg)
{
	(void)was_up;
	(void)arg;
	if (downs < 8)
	{
		down_at[downs] = ev_time();
		delays[downs] = c->backoff;
	}
	downs++;
	snprintf(last_why, sizeof last_why, "%s", why);
	if (downs == 4)
		ev_break(loop, EVBREAK_ALL);
}

static void
give_up(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(l, EVBREAK_ALL);
}

static void
loop_break(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(l, EVBREAK_ALL);
}

int
main(void)
{
	char got[64] = "";

	wk_log_init("test_daemon");
	loop = ev_default_loop(0);

	/* $NOTIFY_SOCKET: a datagram socket of ours */
	snprintf(sock_dir, sizeof sock_dir, "/tmp/test_daemon.XXXXXX");
	if (!mkdtemp(sock_dir))
		return 1;
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s/notify", sock_dir);
	int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (nfd < 0 || bind(nfd, (struct sockaddr *)&a, sizeof a) < 0)
		return 1;
	setenv("NOTIFY_SOCKET", a.sun_path, 1);

	wk_daemon_start(loop, &(wk_daemon_config){.stop = on_stop,
	                                           .deadline = on_deadline,
	                                           .reload = on_reload,
	                                           .drain_seconds = 0.3});
	ok(!wk_daemon_stopping(), "not stopping before a signal");
	ev_timer hup = at(0.01, SIGHUP), term = at(0.05, SIGTERM), term2 = at(0.1, SIGTERM);
	ev_timer_start(loop, &hup);
	ev_timer_start(loop, &term);
	ev_timer_start(loop, &term2);
	double t0 = ev_time();
	ev_run(loop, 0);
	end_at = ev_time();
	ok(reloads == 1, "SIGHUP calls reload, the daemon lives on");
	ok(stops == 1, "SIGTERM calls stop once, a second SIGTERM is ignored (%d)", stops);
	ok(wk_daemon_stopping(), "the stopping flag is set");
	ok(deadlines == 2, "the deadline came, asked for more, came again (%d)", deadlines);
	ok(end_at - stop_at >= 0.45 && end_at - stop_at < 2.0,
	   "the loop ended after the drain deadline and its second stage (%.2f s after the stop, "
	   "0.3 + 0.2 asked)", end_at - stop_at);
	ok(end_at - t0 < 3.0, "in time");
	ssize_t n = recv(nfd, got, sizeof got - 1, 0);
	got[n > 0 ? n : 0] = '\0';
	is_str(got, "STOPPING=1", "STOPPING=1 went to $NOTIFY_SOCKET");
	wk_daemon_stop_watching();

	/* drained before the deadline: the loop ends at once */
	stops = deadlines = 0;
	wk_daemon_start(loop, &(wk_daemon_config){.stop = on_stop, .deadline = on_deadline,
	                                           .drain_seconds = 5, .no_sd_notify = true});
	ev_timer term3 = at(0.01, SIGINT), drain;
	ev_timer_init(&drain, drain_now, 0.1, 0.);
	ev_timer_start(loop, &term3);
	ev_timer_start(loop, &drain);
	t0 = ev_time();
	ev_run(loop, 0);
	ok(stops == 1 && deadlines == 0 && ev_time() - t0 < 1.0,
	   "SIGINT stops too; wk_daemon_drained ends the loop before the deadline (%.2f s)", ev_time() - t0);
	n = recv(nfd, got, sizeof got - 1, 0);
	ok(n < 0, "no_sd_notify: nothing sent to systemd");
	wk_daemon_stop_watching();

	/* --- the watchdog: pings from the loop every half WatchdogSec ------------------- */
	char pid[32];
	setenv("WATCHDOG_USEC", "200000", 1);
	setenv("WATCHDOG_PID", "1", 1);
	ok(wk_watchdog_interval() == 0, "WATCHDOG_PID of another process: no pings from this one");
	snprintf(pid, sizeof pid, "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	setenv("WATCHDOG_USEC", "2x", 1);
	ok(wk_watchdog_interval() == 0, "a malformed WATCHDOG_USEC: no pings (and a warning)");
	setenv("WATCHDOG_USEC", "200000", 1);
	ok(wk_watchdog_interval() == 0.2, "WATCHDOG_USEC=200000 for our pid: 0.2 s");
	wk_daemon_start(loop, &(wk_daemon_config){.stop = on_stop, .no_sd_notify = true});
	ev_timer for_a_while;
	ev_timer_init(&for_a_while, loop_break, 0.55, 0.);
	ev_timer_start(loop, &for_a_while);
	ev_run(loop, 0);
	int pings = 0;
	while ((n = recv(nfd, got, sizeof got - 1, 0)) > 0)
	{
		got[n] = '\0';
		pings += !strcmp(got, "WATCHDOG=1");
	}
	ok(pings >= 4 && pings <= 8, "WATCHDOG=1 every 0.1 s while the loop turns (%d in 0.55 s)", pings);
	wk_daemon_stop_watching();
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	close(nfd);
	unsetenv("NOTIFY_SOCKET");

	/* --- conn.c: nobody listens -------------------------------------------------- */
	wk_conn c;
	ev_timer guard;
	wk_conn_init(&c, loop, (wk_conn_callbacks){.start = c_start, .up = c_up, .down = c_down});
	ev_timer_init(&guard, give_up, 5.0, 0.);
	ev_timer_start(loop, &guard);
	wk_conn_start(&c);
	ev_run(loop, 0);
	ev_timer_stop(loop, &guard);
	ok(downs == 4 && ups == 0, "a server that is not there: every attempt fails (%d)", downs);
	ok(delays[0] == 0.1 && delays[1] == 0.2 && delays[2] == 0.4 && delays[3] == 0.8,
	   "retried after 0.1, 0.2, 0.4, 0.8 s (wk_backoff_next): %.1f %.1f %.1f %.1f", delays[0],
	   delays[1], delays[2], delays[3]);
	ok(down_at[2] - down_at[1] >= 0.19 && down_at[3] - down_at[2] >= 0.39,
	   "the retries wait (%.2f s, %.2f s)", down_at[2] - down_at[1], down_at[3] - down_at[2]);
	ok(c.state == WK_CONN_WAIT && c.pg == NULL, "down between attempts, no PGconn held");
	wk_conn_healthy(&c);
	ok(c.backoff == 0, "wk_conn_healthy: the next loss waits WK_BACKOFF_FIRST again");
	wk_conn_close(&c);
	ok(c.state == WK_CONN_CLOSED && !ev_is_active(&c.timer), "closed: no retry left");

	/* --- conn.c: a server that accepts and never answers: the connect timeout --- */
	char path[128];
	snprintf(path, sizeof path, "%s/.s.PGSQL.5999", sock_dir);
	struct sockaddr_un s = {.sun_family = AF_UNIX};
	snprintf(s.sun_path, sizeof s.sun_path, "%s", path);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&s, sizeof s) < 0 || listen(lfd, 8) < 0)
		return 1;
	downs = 0;
	wk_conn_init(&c, loop, (wk_conn_callbacks){.start = c_start, .up = c_up, .down = c_down});
	wk_conn_set_connect_timeout(&c, 0.2);
	ev_timer_init(&guard, give_up, 1.0, 0.);
	ev_timer_start(loop, &guard);
	t0 = ev_time();
	wk_conn_start(&c);
	ev_run(loop, 0);
	ev_timer_stop(loop, &guard);
	ok(downs >= 1 && down_at[0] - t0 >= 0.19, "a silent server: the attempt ends at the connect timeout (%.2f s)",
	   downs ? down_at[0] - t0 : -1);
	contains(last_why, "timed out connecting", "saying so");
	wk_conn_close(&c);
	close(lfd);
	unlink(path);
	rmdir(sock_dir);
	return tap_done();
}
