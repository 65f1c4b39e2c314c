/* pgpod-gateway: settings from the environment, a supervisor process that forks
 * the workers (each with its own SO_REUSEPORT socket, libev loop, pool and
 * notification connection), restarts a worker that dies, and turns SIGTERM into
 * a drain: stop accepting, finish requests in flight, exit. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw.h"
#include "listener.h"
#include "tus.h"
#include "metrics.h"
#include "pool.h"

gw_settings gw_cfg;
struct ev_loop *gw_loop;
int gw_worker_id;
volatile int gw_draining;

static long
env_long(const char *name, long def, long min, long max)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return def;
	char *end;
	long n = strtol(v, &end, 10);
	if (*end || n < min || n > max)
	{
		fprintf(stderr, "pgpod-gateway: %s=%s is not a number in [%ld, %ld]; using %ld\n", name, v,
		        min, max, def);
		return def;
	}
	return n;
}

static const char *
env_str(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

static void
load_settings(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	gw_cfg.host = env_str("PGPOD_HTTP_HOST", "127.0.0.1");
	gw_cfg.port = (int)env_long("PGPOD_HTTP_PORT", 8080, 1, 65535);
	gw_cfg.workers = (int)env_long("PGPOD_GATEWAY_WORKERS", ncpu > 0 ? ncpu : 1, 1, 256);
	gw_cfg.pool_size = (int)env_long("PGPOD_GATEWAY_POOL", 8, 1, 512);
	gw_cfg.prepared = (int)env_long("PGPOD_GATEWAY_PREPARED", 256, 0, 65536);
	gw_cfg.pipeline = (int)env_long("PGPOD_GATEWAY_PIPELINE", 16, 1, 64);
	if (gw_cfg.prepared > 0 && gw_cfg.prepared < 16)
		gw_cfg.prepared = 16; /* room for every statement of a job */
	gw_cfg.body_max = env_long("PGPOD_BODY_MAX", 10L << 20, 1024, 1L << 40);
	gw_cfg.upload_max = env_long("PGPOD_UPLOAD_MAX", 1L << 30, 0, 1L << 50);
	gw_cfg.header_max = env_long("PGPOD_HEADER_MAX", 16L << 10, 1024, 1L << 20);
	gw_cfg.header_timeout =
	    (double)env_long("PGPOD_HEADER_TIMEOUT_MS", 10000, 10, 3600000) / 1000.0;
	gw_cfg.idle_timeout = (double)env_long("PGPOD_IDLE_TIMEOUT_MS", 60000, 10, 3600000) / 1000.0;
	gw_cfg.body_timeout = (double)env_long("PGPOD_BODY_TIMEOUT_MS", 30000, 10, 3600000) / 1000.0;
	gw_cfg.queue_timeout = (double)env_long("PGPOD_QUEUE_TIMEOUT_MS", 10000, 10, 3600000) / 1000.0;
	gw_cfg.statement_timeout_ms = env_long("PGPOD_STATEMENT_TIMEOUT_MS", 30000, 0, 86400000);
	gw_cfg.drain_timeout = (double)env_long("PGPOD_DRAIN_TIMEOUT_MS", 10000, 0, 3600000) / 1000.0;
	gw_cfg.access_log = (int)env_long("PGPOD_ACCESS_LOG", 0, 0, 1);
	gw_cfg.file_cache_ms = env_long("PGPOD_FILE_CACHE_MS", 1000, 0, 3600000);
	gw_cfg.upload_sweep = (double)env_long("PGPOD_UPLOAD_SWEEP_MS", 60000, 100, 86400000) / 1000.0;
	gw_cfg.db_user = env_str("PGPOD_DB_USER", "pgpod_authenticator");
	/* PostgREST's db-tx-end and db-aggregates-enabled */
	const char *tx = env_str("PGPOD_GATEWAY_TX_END", "commit");
	if (!strcmp(tx, "commit") || !strcmp(tx, "commit-allow-override") || !strcmp(tx, "rollback") ||
	    !strcmp(tx, "rollback-allow-override"))
	{
		gw_cfg.tx_rollback = !strncmp(tx, "rollback", 8);
		gw_cfg.tx_override = strstr(tx, "-allow-override") != NULL;
	}
	else
		fprintf(stderr,
		        "pgpod-gateway: PGPOD_GATEWAY_TX_END=%s is not one of commit, "
		        "commit-allow-override, rollback, rollback-allow-override; using commit\n",
		        tx);
	const char *agg = env_str("PGPOD_GATEWAY_AGGREGATES", "off");
	if (!strcmp(agg, "on") || !strcmp(agg, "off"))
		gw_cfg.aggregates = !strcmp(agg, "on");
	else
		fprintf(stderr, "pgpod-gateway: PGPOD_GATEWAY_AGGREGATES=%s is not on or off; using off\n",
		        agg);
	static char store[4096];
	const char *dir = getenv("PGPOD_DIR");
	snprintf(store, sizeof store, "%s/store", dir && *dir ? dir : ".");
	gw_cfg.store_dir = env_str("PGPOD_STORE_DIR", store);
}

/* --- worker -------------------------------------------------------------- */

static ev_signal sigterm_w, sigint_w;
static ev_timer drain_w;
static double drain_started;

static void
on_drain_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	if ((gw_http_active() == 0 && gw_pool_busy() == 0) ||
	    ev_now(loop) - drain_started > gw_cfg.drain_timeout)
		ev_break(loop, EVBREAK_ALL);
}

static void
on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	if (gw_draining)
		return;
	gw_draining = 1;
	drain_started = ev_now(loop);
	gw_http_drain();
	ev_timer_init(&drain_w, on_drain_tick, 0, 0.05);
	ev_timer_start(loop, &drain_w);
}

/* --- readiness ---------------------------------------------------------------
 * A worker joins the SO_REUSEPORT group (binds and listens) only once it can
 * answer: schema cache loaded, JWT secret read, a pool connection up. Until then
 * the kernel gives new connections to the workers that are ready, so a restarted
 * worker never answers 503 PGRST002 beside a healthy one. When no worker is ready
 * (the gateway starts, or the database is away for all) it listens at once, so
 * that clients get a 503 with a reason rather than a refused connection. */
static ev_timer ready_w;
static int listening;
static int ready_reported;

static int
worker_ready(void)
{
	size_t n;
	return gw_schema_current() != NULL && gw_jwt_secret(&n) != NULL && gw_pool_up();
}

static void
on_ready_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	int ready = worker_ready();
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
		gw_log("worker %d: %s", gw_worker_id, err);
		ev_break(gw_loop, EVBREAK_ALL);
		return;
	}
	listening = 1;
	gw_http_start(fd);
	/* from now on only this worker's readiness, for the others, is followed */
	w->repeat = 0.25;
	ev_timer_again(gw_loop, w);
	if (!ready)
		gw_log("worker %d: listening before it is ready (no worker is): 503 until then",
		       gw_worker_id);
	(void)w;
}

static int
worker_main(int id)
{
	gw_worker_id = id;
	gw_metrics_worker_start();
	gw_loop = ev_default_loop(EVFLAG_AUTO);
	signal(SIGPIPE, SIG_IGN);
	if (gw_pool_init(gw_cfg.pool_size, gw_cfg.db_user, gw_cfg.statement_timeout_ms,
	                 gw_cfg.prepared, gw_cfg.pipeline))
	{
		gw_log("worker %d: cannot create the pool", id);
		return 1;
	}
	gw_listener_start();
	gw_tus_sweep_start();
	gw_http_init();
	ev_timer_init(&ready_w, on_ready_tick, 0, 0.02);
	ev_timer_start(gw_loop, &ready_w);
	ev_signal_init(&sigterm_w, on_term, SIGTERM);
	ev_signal_start(gw_loop, &sigterm_w);
	ev_signal_init(&sigint_w, on_term, SIGINT);
	ev_signal_start(gw_loop, &sigint_w);
	ev_run(gw_loop, 0);
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
		_exit(worker_main(id));
	}
	return pid;
}

int
main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	setvbuf(stderr, NULL, _IOLBF, 0);
	load_settings();
	char err[256];
	int probe = gw_http_listen(gw_cfg.host, gw_cfg.port, 0, err, sizeof err);
	if (probe < 0)
	{
		fprintf(stderr, "pgpod-gateway: %s\n", err);
		return 1;
	}
	close(probe);
	if (gw_metrics_init(gw_cfg.workers))
	{
		fprintf(stderr, "pgpod-gateway: cannot map the shared metrics page\n");
		return 1;
	}
	fprintf(stderr,
	        "pgpod-gateway: listening on http://%s:%d with %d workers x %d database connections "
	        "(user %s)\n",
	        gw_cfg.host, gw_cfg.port, gw_cfg.workers, gw_cfg.pool_size, gw_cfg.db_user);

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

	pid_t *pids = calloc((size_t)gw_cfg.workers, sizeof *pids);
	if (!pids)
		return 1;
	for (int i = 0; i < gw_cfg.workers; i++)
		pids[i] = spawn(i);

	int alive = gw_cfg.workers;
	while (alive > 0)
	{
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		{
			for (int i = 0; i < gw_cfg.workers; i++)
			{
				if (pids[i] != pid)
					continue;
				pids[i] = 0;
				alive--;
				if (!stop_requested)
				{
					fprintf(stderr,
					        "pgpod-gateway: worker %d (pid %d) exited (status %d); restarting\n", i,
					        (int)pid, status);
					sleep(1); /* a worker that cannot start must not spin */
					pids[i] = spawn(i);
					alive++;
				}
			}
		}
		if (stop_requested == 1)
		{
			stop_requested = 2;
			for (int i = 0; i < gw_cfg.workers; i++)
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
	fprintf(stderr, "pgpod-gateway: stopped\n");
	free(pids);
	return 0;
}
