/* pgpod-gateway: settings from the environment, a supervisor process that forks
 * the gateway processes (each with its own SO_REUSEPORT socket, libev loop, pool and
 * notification connection), restarts a process that dies, and turns SIGTERM into
 * a drain: stop accepting, finish requests in flight, exit. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http.h"
#include "listener.h"
#include "tus.h"
#include "metrics.h"
#include "pool.h"
#include "router.h"
#include "blob_download.h"
#include "hub.h"
#include "sse.h"
#include "video_events.h"
#include "settings.h"
#include "worker.h"

static void
load_settings(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	gw_cfg.host = wk_env_str("PGPOD_HTTP_HOST", "127.0.0.1");
	gw_cfg.port = (int)wk_env_long("PGPOD_HTTP_PORT", 8080, 1, 65535);
	gw_cfg.processes = (int)wk_env_long("PGPOD_GATEWAY_WORKERS", ncpu > 0 ? ncpu : 1, 1, 256);
	gw_cfg.pool_size = (int)wk_env_long("PGPOD_GATEWAY_POOL", 8, 1, 512);
	gw_cfg.prepared = (int)wk_env_long("PGPOD_GATEWAY_PREPARED", 256, 0, 65536);
	gw_cfg.pipeline = (int)wk_env_long("PGPOD_GATEWAY_PIPELINE", 16, 1, 64);
	if (gw_cfg.prepared > 0 && gw_cfg.prepared < 16)
		gw_cfg.prepared = 16; /* room for every statement of a job */
	gw_cfg.body_max = wk_env_long("PGPOD_BODY_MAX", 10L << 20, 1024, 1L << 40);
	gw_cfg.upload_max = wk_env_long("PGPOD_UPLOAD_MAX", 1L << 30, 0, 1L << 50);
	gw_cfg.header_max = wk_env_long("PGPOD_HEADER_MAX", 16L << 10, 1024, 1L << 20);
	gw_cfg.header_timeout =
	    (double)wk_env_long("PGPOD_HEADER_TIMEOUT_MS", 10000, 10, 3600000) / 1000.0;
	gw_cfg.idle_timeout = (double)wk_env_long("PGPOD_IDLE_TIMEOUT_MS", 60000, 10, 3600000) / 1000.0;
	gw_cfg.body_timeout = (double)wk_env_long("PGPOD_BODY_TIMEOUT_MS", 30000, 10, 3600000) / 1000.0;
	gw_cfg.queue_timeout = (double)wk_env_long("PGPOD_QUEUE_TIMEOUT_MS", 10000, 10, 3600000) / 1000.0;
	gw_cfg.statement_timeout_ms = wk_env_long("PGPOD_STATEMENT_TIMEOUT_MS", 30000, 0, 86400000);
	gw_cfg.drain_timeout = (double)wk_env_long("PGPOD_DRAIN_TIMEOUT_MS", 10000, 0, 3600000) / 1000.0;
	gw_cfg.access_log = (int)wk_env_long("PGPOD_ACCESS_LOG", 0, 0, 1);
	gw_cfg.file_cache_ms = wk_env_long("PGPOD_FILE_CACHE_MS", 1000, 0, 3600000);
	gw_cfg.upload_sweep = (double)wk_env_long("PGPOD_UPLOAD_SWEEP_MS", 60000, 100, 86400000) / 1000.0;
	gw_cfg.db_user = wk_env_str("PGPOD_DB_USER", "pgpod_authenticator");
	/* PostgREST's db-tx-end and db-aggregates-enabled */
	static const char *const tx_end[] = {"commit", "commit-allow-override", "rollback",
	                                     "rollback-allow-override", NULL};
	int tx = wk_env_choice("PGPOD_GATEWAY_TX_END", tx_end, 0);
	gw_cfg.tx_rollback = tx >= 2;
	gw_cfg.tx_override = tx % 2 == 1;
	static const char *const off_on[] = {"off", "on", NULL};
	gw_cfg.aggregates = wk_env_choice("PGPOD_GATEWAY_AGGREGATES", off_on, 0);
	static char store[4096];
	snprintf(store, sizeof store, "%s/store", wk_env_str("PGPOD_DIR", "."));
	gw_cfg.store_dir = wk_env_str("PGPOD_STORE_DIR", store);
}

/* --- a gateway process -------------------------------------------------------------- */

/* SIGTERM/SIGINT through workers/lib's wk_daemon: stop accepting, finish what is in
 * flight (polled every WK_DAEMON_DRAIN_CHECK s), exit at PGPOD_DRAIN_TIMEOUT_MS
 * regardless. The supervisor tells systemd STOPPING=1, not the processes. */
static void
on_term(void *arg)
{
	(void)arg;
	gw_draining = 1;
	gw_http_drain();
}

static bool
on_drain_check(void *arg)
{
	(void)arg;
	return gw_http_active() == 0 && gw_pool_busy() == 0;
}

static double
on_drain_deadline(void *arg)
{
	(void)arg;
	wk_log(WK_DEBUG, "process %d: drain timeout, %d requests still in flight", gw_process_index,
	       gw_http_active());
	return 0;
}

/* --- readiness ---------------------------------------------------------------
 * A gateway process joins the SO_REUSEPORT group (binds and listens) only once it can
 * answer: schema cache loaded, JWT secret read, a pool connection up. Until then
 * the kernel gives new connections to the processes that are ready, so a restarted
 * process never answers 503 PGRST002 beside a healthy one. When no process is ready
 * (the gateway starts, or the database is away for all) it listens at once, so
 * that clients get a 503 with a reason rather than a refused connection. */
static ev_timer ready_w;
static int listening;
static int ready_reported;

static int
process_ready(void)
{
	size_t n;
	gw_snapshot *snap = gw_snapshot_current();
	return gw_snapshot_schema(snap) && gw_snapshot_secret(snap, &n) && gw_pool_up();
}

static void
on_ready_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	int ready = process_ready();
	if (ready != ready_reported)
	{
		gw_metrics_ready(ready);
		ready_reported = ready;
	}
	if (listening || gw_draining || (!ready && gw_metrics_others_ready() > 0))
		return;
	char err[256];
	int fd = gw_http_listen(gw_cfg.host, gw_cfg.port, 1, err, sizeof err);
	if (fd < 0)
	{
		wk_log(WK_WARN, "process %d: %s", gw_process_index, err);
		ev_break(gw_loop, EVBREAK_ALL);
		return;
	}
	listening = 1;
	gw_http_start(fd);
	/* from now on only this process's readiness, for the others, is followed */
	w->repeat = 0.25;
	ev_timer_again(gw_loop, w);
	if (!ready)
		wk_log(WK_INFO, "process %d: listening before it is ready (no process is): 503 until then",
		       gw_process_index);
	(void)w;
}

static void
on_snapshot(gw_snapshot *now, gw_snapshot *before)
{
	/* statements prepared before a change of the schema may have inferred types
	 * that no longer fit: prepare them afresh */
	if (before && gw_snapshot_schema(before) && gw_snapshot_schema(now) != gw_snapshot_schema(before))
		gw_pool_forget_prepared();
}

static void
on_listener_connection(int up)
{
	if (up)
	{
		gw_sse_resync_all(); /* events committed while away are fetched, never lost */
		gw_blob_download_notify(NULL); /* a privacy change may have been missed */
	}
	else
		gw_hub_locks_lost(); /* the session's holds went with it; asked again later */
}

static int
process_main(int id)
{
	gw_process_index = id;
	gw_metrics_process_start();
	gw_loop = ev_default_loop(EVFLAG_AUTO);
	wk_daemon_start(gw_loop, &(wk_daemon_config){.stop = on_term,
	                                             .drained = on_drain_check,
	                                             .deadline = on_drain_deadline,
	                                             .drain_seconds = gw_cfg.drain_timeout,
	                                             .no_sd_notify = true});
	if (gw_pool_init(gw_cfg.pool_size, gw_cfg.db_user, gw_cfg.statement_timeout_ms,
	                 gw_cfg.prepared, gw_cfg.pipeline))
	{
		wk_log(WK_ERROR, "process %d: cannot create the pool", id);
		return 1;
	}
	/* the listener publishes; the layers above subscribe (it calls none of them) */
	gw_listener_on_notify("pgpod_room_events", gw_sse_notify);
	gw_listener_on_notify("pgpod_room_members", gw_sse_members);
	gw_listener_on_notify("pod_video_events", gw_video_events_notify);
	gw_listener_on_notify("pod_video_events", gw_blob_download_notify);
	gw_listener_on_snapshot(on_snapshot);
	gw_listener_on_connection(on_listener_connection);
	gw_listener_start();
	gw_tus_sweep_start();
	gw_http_init(&gw_router);
	ev_timer_init(&ready_w, on_ready_tick, 0, 0.02);
	ev_timer_start(gw_loop, &ready_w);
	ev_run(gw_loop, 0);
	wk_daemon_stop_watching();
	ev_timer_stop(gw_loop, &ready_w);
	gw_metrics_ready(0);
	gw_listener_stop();
	gw_pool_shutdown();
	return 0;
}

/* --- supervisor ---------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static pid_t
spawn(int id)
{
	pid_t pid = fork();
	if (pid == 0)
	{
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		_exit(process_main(id));
	}
	return pid;
}

int
main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	setvbuf(stderr, NULL, _IOLBF, 0);
	wk_log_init("pgpod-gateway");
	load_settings();
	char err[256];
	int probe = gw_http_listen(gw_cfg.host, gw_cfg.port, 0, err, sizeof err);
	if (probe < 0)
	{
		wk_log(WK_ERROR, "%s", err);
		return 1;
	}
	close(probe);
	if (gw_metrics_init(gw_cfg.processes))
	{
		wk_log(WK_ERROR, "cannot map the shared metrics page");
		return 1;
	}
	wk_log(WK_DEBUG,
	       "settings: pool %d, prepared %d, pipeline %d, body max %ld, upload max %ld, "
	       "statement timeout %ld ms, store %s",
	       gw_cfg.pool_size, gw_cfg.prepared, gw_cfg.pipeline, gw_cfg.body_max, gw_cfg.upload_max,
	       gw_cfg.statement_timeout_ms, gw_cfg.store_dir);
	wk_log(WK_INFO,
	        "listening on http://%s:%d with %d processes x %d database connections "
	        "(user %s)",
	        gw_cfg.host, gw_cfg.port, gw_cfg.processes, gw_cfg.pool_size, gw_cfg.db_user);

	struct sigaction sa = {.sa_handler = on_stop_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGCHLD);
	/* signals stay blocked in the supervisor and are taken with sigtimedwait */
	sigprocmask(SIG_BLOCK, &block, &old);

	pid_t *pids = calloc((size_t)gw_cfg.processes, sizeof *pids);
	if (!pids)
		return 1;
	for (int i = 0; i < gw_cfg.processes; i++)
		pids[i] = spawn(i);

	int alive = gw_cfg.processes, notified = 0;
	double first_ready = 0;
	/* systemd's watchdog (WatchdogSec=) watches the supervisor: it pings from its
	 * loop, which turns at least every 200 ms */
	double watchdog = wk_watchdog_interval(), pinged = 0;
	while (alive > 0)
	{
		if (watchdog > 0 && ev_time() - pinged >= watchdog / 2)
		{
			wk_sd_notify("WATCHDOG=1");
			pinged = ev_time();
		}
		/* systemd (Type=notify): ready once every process serves (a process still
		 * loading beside a ready one answers 503: make start waits the same way), or
		 * 10 s after the first one does; workers/lib's sd_notify */
		int nready = gw_metrics_ready_count();
		if (nready > 0 && first_ready == 0)
			first_ready = ev_time();
		if (!notified && !stop_requested && nready > 0 &&
		    (nready >= gw_cfg.processes || ev_time() - first_ready >= 10))
		{
			notified = 1;
			wk_sd_notify("READY=1\nSTATUS=serving");
			wk_log(WK_DEBUG, "ready: %d of %d processes serve", gw_metrics_ready_count(),
			       gw_cfg.processes);
		}
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		{
			for (int i = 0; i < gw_cfg.processes; i++)
			{
				if (pids[i] != pid)
					continue;
				pids[i] = 0;
				alive--;
				if (!stop_requested)
				{
					wk_log(WK_WARN, "process %d (pid %d) exited (status %d); restarting", i,
					       (int)pid, status);
					sleep(1); /* a process that cannot start must not spin */
					pids[i] = spawn(i);
					alive++;
				}
			}
		}
		if (stop_requested == 1)
		{
			stop_requested = 2;
			wk_sd_notify("STOPPING=1");
			for (int i = 0; i < gw_cfg.processes; i++)
				if (pids[i] > 0)
					kill(pids[i], SIGTERM);
		}
		if (alive > 0)
		{
			struct timespec ts = {0, 200 * 1000 * 1000};
			sigset_t w;
			sigemptyset(&w);
			sigaddset(&w, SIGCHLD);
			sigaddset(&w, SIGTERM);
			sigaddset(&w, SIGINT);
			int sig = sigtimedwait(&w, NULL, &ts);
			if (sig == SIGTERM || sig == SIGINT)
				stop_requested = stop_requested ? stop_requested : 1;
		}
	}
	wk_log(WK_INFO, "stopped");
	free(pids);
	return 0;
}
