/* Unit test of the gateway's connection pool (gateway/db/pool.c) alone, against a
 * PostgreSQL server of its own: tests/unit/gateway/pool_check.sh runs initdb in a
 * temporary directory, starts the server on a Unix socket only, runs this program
 * with PGHOST/PGPORT/PGDATABASE set and POOL_CHECK_STOP / POOL_CHECK_START (commands
 * that stop the server immediately and start it again), and removes everything on
 * exit (trap). A real server rather than a seam under libpq: what the pool must get
 * right is libpq's pipeline mode and what a real server answers (errors inside a
 * pipeline, aborted transactions, a killed backend, prepared statements a new session
 * does not have); a fake would only replay what we believe the server does.
 *
 * Checked: jobs (parameters, results), many jobs pipelined on few connections, an
 * error in a pipeline (the job gets it, the ROLLBACK follows, the next job runs), the
 * statement cache (a statement prepared once per connection, DEALLOCATE ALL after
 * gw_pool_forget_prepared), a transaction in flight when the server dies (the job
 * fails at once, not at a timeout), fail-fast while the server is away, reconnection
 * (workers/lib's wk_conn) and prepared statements prepared afresh after it, the
 * metrics the pool keeps, and shutdown (ASan: nothing leaked). */
#define _GNU_SOURCE
#include <ev.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"
#include "pool.h"
#include "settings.h"
#include "tap.h"

#define POOL_SIZE 2
#define DEPTH 4

typedef struct done_job
{
	gw_pg_job job;
	gw_params params;
	int done;
} done_job;

static void
on_done(gw_pg_job *job)
{
	((done_job *)job->data)->done = 1;
}

static struct ev_loop *loop;

/* Runs the loop until cond() or the timeout (seconds); true when cond() held. */
static int
run_until(int (*cond)(void *), void *arg, double timeout)
{
	double until = ev_time() + timeout;
	while (!cond(arg))
	{
		if (ev_time() > until)
			return 0;
		ev_now_update(loop);
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		ev_sleep(0.001);
	}
	return 1;
}

static int
pool_up(void *arg)
{
	(void)arg;
	return gw_pool_up();
}

static int
pool_down(void *arg)
{
	(void)arg;
	return !gw_pool_up();
}

static int
job_done(void *arg)
{
	return ((done_job *)arg)->done;
}

static int
all_done(void *arg)
{
	done_job *jobs = arg;
	for (int i = 0; jobs[i].job.done; i++)
		if (!jobs[i].done)
			return 0;
	return 1;
}

/* A job of one statement with one text parameter (NULL: none). */
static void
submit(done_job *d, const char *sql, const char *param, int read_only)
{
	gw_pool_job_clear(&d->job);
	gw_params_free(&d->params);
	gw_params_init(&d->params);
	if (param)
		gw_params_add(&d->params, param);
	memset(&d->job, 0, sizeof d->job);
	d->done = 0;
	d->job.nstmts = 1;
	d->job.stmts[0].sql = sql;
	d->job.stmts[0].params = param ? &d->params : NULL;
	d->job.read_only = read_only;
	d->job.done = on_done;
	d->job.data = d;
	gw_pool_submit(&d->job);
}

static const char *
value(const done_job *d)
{
	PGresult *r = d->job.results[0];
	if (d->job.failed || d->job.error || !r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		return NULL;
	return PQgetvalue(r, 0, 0);
}

static void
release(done_job *d)
{
	gw_pool_job_clear(&d->job);
	gw_params_free(&d->params);
}

/* A number from the pool's metrics (gw_metrics_render), -1 when missing. */
static long long
metric(const char *name)
{
	gw_buf out = {0};
	gw_metrics_render(&out);
	char key[128];
	snprintf(key, sizeof key, "\n%s ", name);
	const char *p = out.data ? strstr(out.data, key) : NULL;
	long long v = p ? atoll(p + strlen(key)) : -1;
	gw_buf_free(&out);
	return v;
}

static void
run_cmd(const char *env)
{
	const char *cmd = getenv(env);
	if (!cmd || system(cmd) != 0)
	{
		printf("Bail out! %s failed\n", env);
		exit(1);
	}
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("POOL_CHECK_STOP") || !getenv("POOL_CHECK_START"))
	{
		printf("1..0 # SKIP run through tests/unit/gateway/pool_check.sh (it starts a server)\n");
		return 0;
	}
	wk_log_init("pool-check");
	loop = gw_loop = ev_default_loop(EVFLAG_AUTO);
	gw_cfg.queue_timeout = 10;
	if (gw_metrics_init(1))
	{
		printf("Bail out! no metrics page\n");
		return 1;
	}
	const char *user = getenv("PGUSER") ? getenv("PGUSER") : "postgres";

	/* --- up ---------------------------------------------------------------------- */
	ok(gw_pool_init(POOL_SIZE, user, 30000, 16, DEPTH) == 0, "the pool is created");
	ok(run_until(pool_up, NULL, 15), "a connection comes up");
	ok(metric("pgpod_pool_connections") >= 1,
	   "pgpod_pool_connections counts it (%lld)", metric("pgpod_pool_connections"));

	done_job one = {0};
	submit(&one, "SELECT $1::int + 1", "41", 1);
	ok(run_until(job_done, &one, 10), "a job is answered");
	is_str(value(&one), "42", "with its result");
	/* a job's statements run inside BEGIN ... COMMIT with the session's settings */
	submit(&one, "SELECT current_setting('statement_timeout')", NULL, 1);
	run_until(job_done, &one, 10);
	is_str(value(&one), "30s", "the pool's statement_timeout is the session's");
	submit(&one, "SELECT current_setting('transaction_read_only')", NULL, 1);
	run_until(job_done, &one, 10);
	is_str(value(&one), "on", "a read-only job runs in a read-only transaction");

	/* --- pipelining: more jobs than connections × depth, all answered ------------- */
	enum { N = 40 };
	static done_job many[N + 1];
	char arg[16];
	long long prepares = metric("pgpod_pool_prepares_total");
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i);
		many[i].job.done = on_done; /* marks the array's end for all_done */
		submit(&many[i], "SELECT $1::int * 2", arg, 0);
	}
	many[N].job.done = NULL;
	ok(run_until(all_done, many, 20), "%d jobs submitted at once are all answered", N);
	int right = 0;
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i * 2);
		right += value(&many[i]) && !strcmp(value(&many[i]), arg);
	}
	ok(right == N, "each with its own result (%d of %d)", right, N);
	prepares = metric("pgpod_pool_prepares_total") - prepares;
	/* BEGIN, the statement and COMMIT, at most once on each connection */
	ok(prepares >= 1 && prepares <= POOL_SIZE * 3,
	   "the statement is prepared once per connection, not per job (%lld Parse for %d jobs)",
	   prepares, N);

	/* --- an error inside a pipeline: the job gets it, the next job runs ------------ */
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i);
		submit(&many[i], i == 3 ? "SELECT 1 / ($1::int - 3)" : "SELECT $1::int", arg, 0);
	}
	ok(run_until(all_done, many, 20), "a pipeline with a failing job is answered");
	const char *st = many[3].job.error ? PQresultErrorField(many[3].job.error, PG_DIAG_SQLSTATE) : NULL;
	is_str(st, "22012", "the failing job has its error (division by zero)");
	ok(many[3].job.error_stmt == 0, "at its statement");
	right = 0;
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i);
		right += i == 3 || (value(&many[i]) && !strcmp(value(&many[i]), arg));
	}
	ok(right == N, "the jobs around it have their results (%d of %d)", right, N);
	submit(&one, "SELECT 'after'", NULL, 0);
	run_until(job_done, &one, 10);
	is_str(value(&one), "after", "the connection is usable after the ROLLBACK");

	/* --- the statement cache reset (a schema change) ------------------------------- */
	gw_pool_forget_prepared();
	prepares = metric("pgpod_pool_prepares_total");
	submit(&one, "SELECT $1::int + 1", "1", 1);
	run_until(job_done, &one, 10);
	is_str(value(&one), "2", "after gw_pool_forget_prepared a cached statement runs");
	ok(metric("pgpod_pool_prepares_total") > prepares, "prepared afresh (DEALLOCATE ALL first)");

	/* --- the server dies with a transaction in flight ------------------------------ */
	submit(&one, "SELECT pg_sleep(30)", NULL, 0);
	ev_run(loop, EVRUN_NOWAIT);
	double t0 = ev_time();
	run_cmd("POOL_CHECK_STOP");
	ok(run_until(job_done, &one, 10), "the job in flight is answered when the server dies");
	ok(one.job.failed && !one.job.timed_out, "as failed (%s), after %.1f s", one.job.failure,
	   ev_time() - t0);
	ok(run_until(pool_down, NULL, 10), "the pool knows it is down");
	ok(metric("pgpod_pool_connections") == 0, "pgpod_pool_connections is 0");
	submit(&one, "SELECT 1", NULL, 0);
	ok(one.done && one.job.failed, "a job while the server is away fails at once");
	contains(one.job.failure, "no database connection is available", "saying why");

	/* --- back: reconnection with backoff, statements prepared afresh ------------- */
	/* away for a while: the retries fail and back off (0.1, 0.2, 0.4 s ...) */
	double away = ev_time() + 0.8;
	while (ev_time() < away)
	{
		ev_now_update(loop);
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		ev_sleep(0.005);
	}
	ok(!gw_pool_up(), "still down while the server is away");
	run_cmd("POOL_CHECK_START");
	t0 = ev_time();
	ok(run_until(pool_up, NULL, 20), "the pool reconnects when the server is back (%.1f s)",
	   ev_time() - t0);
	prepares = metric("pgpod_pool_prepares_total");
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i);
		submit(&many[i], "SELECT $1::int * 2", arg, 0);
	}
	ok(run_until(all_done, many, 20), "jobs run after the reconnection");
	right = 0;
	for (int i = 0; i < N; i++)
	{
		snprintf(arg, sizeof arg, "%d", i * 2);
		right += value(&many[i]) && !strcmp(value(&many[i]), arg);
	}
	ok(right == N, "with their results (%d of %d): no stale prepared statement", right, N);
	ok(metric("pgpod_pool_prepares_total") > prepares, "the new sessions prepared them again");
	ok(metric("pgpod_pool_stale_retries_total") == 0, "without a stale-statement retry");

	/* --- shutdown --------------------------------------------------------------------- */
	for (int i = 0; i < N; i++)
		release(&many[i]);
	release(&one);
	gw_pool_shutdown(); /* then ASan's leak check at exit */
	return tap_done();
}
