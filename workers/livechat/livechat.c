/*
 * pgpod-livechat — the livechat's clock. Held chat messages (a room's moderation
 * delay) become visible to everyone when their delay is over: something has to write
 * their release event at that moment, and pod.livechat_cleanup() has to run now and
 * then. Both are one SQL call, pod.livechat_tick(), which answers how many seconds
 * until it wants to run again; this daemon runs it then, or at once when a held
 * message arrives (NOTIFY pgpod_chat_held). All state is in the database: killed at
 * any instant, a restarted daemon simply ticks again.
 *
 *   PGPOD_LIVECHAT_MAX_SLEEP_MS (1000): the longest wait between two ticks (a bound in
 *     case a notification is missed while reconnecting).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

typedef struct livechat
{
	struct ev_loop *loop;
	wk_db *db;
	ev_timer timer;
	double max_sleep;
	bool due;     /* a tick is wanted as soon as the connection is idle */
	bool running; /* a tick is in flight */
	bool ready_sent;
} livechat;

static void tick(livechat *lc);

static void
arm(livechat *lc, double seconds)
{
	if (seconds > lc->max_sleep)
		seconds = lc->max_sleep;
	if (seconds < 0.005)
		seconds = 0.005;
	ev_timer_stop(lc->loop, &lc->timer);
	ev_timer_set(&lc->timer, seconds, 0.);
	ev_timer_start(lc->loop, &lc->timer);
}

static void
tick_done(wk_db *db, PGresult *res, void *arg)
{
	livechat *lc = arg;
	double next = lc->max_sleep;

	(void)db;
	lc->running = false;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		if (!PQgetisnull(res, 0, 0))
			next = atof(PQgetvalue(res, 0, 0));
		if (!lc->ready_sent)
		{
			wk_sd_notify("READY=1\nSTATUS=releasing held chat messages");
			lc->ready_sent = true;
		}
	}
	else if (res)
		wk_log(WK_WARN, "livechat tick failed: %s", PQresultErrorMessage(res));
	arm(lc, next);
}

static void
tick(livechat *lc)
{
	if (lc->running || !wk_db_idle(lc->db))
	{
		lc->due = true;
		return;
	}
	lc->due = false;
	if (wk_db_query(lc->db, "SELECT pod.livechat_tick()", 0, NULL, tick_done, lc))
		lc->running = true;
	else
		lc->due = true;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	tick(w->data);
}

static void
db_ready(wk_db *db, void *arg)
{
	livechat *lc = arg;

	(void)db;
	if (lc->due)
		tick(lc);
}

static void
db_notify(wk_db *db, const char *channel, void *arg)
{
	(void)db;
	(void)channel;
	tick(arg);
}

static void
db_lost(wk_db *db, void *arg)
{
	livechat *lc = arg;

	(void)db;
	lc->running = false;
	lc->due = true; /* tick again once reconnected (and listening) */
}

/* SIGTERM (wk_daemon: STOPPING=1 sent): nothing to drain, each tick is one statement. */
static void
stop_cb(void *arg)
{
	(void)arg;
	wk_log(WK_INFO, "stopping");
	wk_daemon_drained();
}

int
main(int argc, char **argv)
{
	static const char *const channels[] = {"pgpod_chat_held", NULL};
	livechat lc = {0};
	char conninfo[256];
	wk_db_callbacks cb = {db_ready, db_notify, db_lost, &lc};

	(void)argc;
	(void)argv;
	wk_log_init("pgpod-livechat");
	lc.max_sleep = wk_env_long("PGPOD_LIVECHAT_MAX_SLEEP_MS", 1000, 10, 3600000) / 1000.0;
	lc.loop = EV_DEFAULT;
	lc.due = true;
	ev_init(&lc.timer, timer_cb);
	lc.timer.data = &lc;
	wk_daemon_start(lc.loop, &(wk_daemon_config){.stop = stop_cb, .drain_seconds = -1});
	snprintf(conninfo, sizeof(conninfo), "application_name=pgpod-livechat%s",
	         getenv("PGUSER") ? "" : " user=pgpod_livechat");
	wk_log(WK_INFO, "starting (at most %.3f s between ticks)", lc.max_sleep);
	lc.db = wk_db_new(lc.loop, conninfo, channels, cb);
	ev_run(lc.loop, 0);
	wk_daemon_stop_watching();
	ev_timer_stop(lc.loop, &lc.timer);
	wk_db_free(lc.db);
	return 0;
}
