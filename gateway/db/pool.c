/* The connection pool (see pool.h): one explicit state per connection
 * (down, connecting, idle, busy), libev watching each socket, a FIFO of waiting
 * jobs with a timeout. Connecting, and reconnecting with backoff when PostgreSQL
 * goes away, is workers/lib's wk_conn (conn.c, the reconnect loop wk_db shares);
 * the pool speaks the protocol once a connection is up.
 * A busy connection has a ring of the transactions it has sent (pslot), read
 * back in order, one Sync each.
 * Jobs that cannot run because no connection is up fail at once (503), so a
 * database restart shows as errors, never as hung clients. */
#include "pool.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings.h"
#include "worker.h"
#include "metrics.h"
#include "pg_send.h"
#include "stmt_cache.h"

enum pstate
{
	P_DOWN,
	P_CONNECTING,
	P_IDLE,
	P_BUSY
};

#define CONNECT_TIMEOUT 5.0

/* What each command sent in the current pipeline is, so that its results are
 * read for what they are: a Parse of a cached statement (its entry), a
 * statement of the job (its index), or the pool's own (BEGIN, COMMIT,
 * DEALLOCATE). */
enum cmd_kind
{
	CMD_OWN,
	CMD_PARSE,
	CMD_STMT
};

typedef struct pcmd
{
	short kind;
	short stmt;  /* the job's statement index, -1 for the pool's own */
	int entry;   /* cache entry, -1 when sent unnamed */
} pcmd;

/* DEALLOCATE ALL, evictions, then a Parse and an execution for each of
 * BEGIN, the statements and COMMIT */
#define PCMD_MAX (1 + 3 * (GW_JOB_MAX + 2))

/* One transaction sent on a connection and not yet answered up to its Sync: a
 * job, or the pool's own ROLLBACK after a job that failed. */
typedef struct pslot
{
	gw_pg_job *job;  /* NULL for the pool's ROLLBACK */
	int qi;          /* index of the command whose results come next */
	int stale;       /* the job failed because of a stale prepared statement */
	int skipped;     /* its first command met a failed transaction: nothing ran */
	double sent_at;
	pcmd cmds[PCMD_MAX];
	int ncmds;
} pslot;

typedef struct pconn
{
	wk_conn wc; /* the PGconn (wc.pg), its socket watcher and reconnect loop */
	enum pstate state;
	/* the transactions in flight, in the order they were sent (a ring) */
	pslot *slots;
	int head, n;
	int aborted;  /* ROLLBACKs in flight after failed transactions: the jobs sent
	               * between are skipped by the server and run again; none is added */
	int dirty;    /* commands buffered in libpq, flushed before the loop sleeps */
	int counted;  /* counted in the pool_size metric */
	int id;
	int send_fd;  /* its socket, registered with pg_send.c while up */
	gw_stmt_cache sc;  /* this session's prepared statements */
	int sc_reset;      /* deallocate them all before the next job */
} pconn;

static pconn *conns;
static int nconns;
static gw_pg_job *queue_head, *queue_tail;
static int queue_len;
static ev_timer queue_timer;
static const char *db_user;
static char options[128];
static int depth = 1;          /* transactions in flight per connection */
static ev_prepare flusher;     /* flushes what libpq kept in its buffer; pg_send.c
                                * then writes each socket's transactions at once */
#define PIPE_MAX_AGE 0.002     /* never queue behind a transaction running longer */

static void dispatch(void);

PGconn *
gw_pg_connect_start(const char *application_name)
{
	const char *keys[] = {"user", "application_name", "options", "connect_timeout", NULL};
	const char *vals[] = {db_user, application_name, options, "5", NULL};
	PGconn *pg = PQconnectStartParams(keys, vals, 1);
	if (pg)
		PQsetnonblocking(pg, 1);
	return pg;
}

void
gw_pg_conninfo(const char *application_name, gw_buf *out)
{
	const char *keys[] = {"user", "application_name", "options", "connect_timeout"};
	const char *vals[] = {db_user, application_name, options, "5"};
	for (int i = 0; i < 4; i++)
	{
		gw_buf_printf(out, "%s%s='", i ? " " : "", keys[i]);
		for (const char *v = vals[i]; *v; v++)
		{
			if (*v == '\'' || *v == '\\')
				gw_buf_putc(out, '\\');
			gw_buf_putc(out, *v);
		}
		gw_buf_putc(out, '\'');
	}
}

static void
quiet_notice(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res;
}

static void
job_finish(gw_pg_job *job)
{
	job->done(job);
}

static void
fail_job(gw_pg_job *job, const char *why, int timed_out)
{
	job->failed = 1;
	job->timed_out = timed_out;
	snprintf(job->failure, sizeof job->failure, "%s", why);
	job_finish(job);
}

static void
set_state(pconn *c, enum pstate s)
{
	if (c->state == P_BUSY && s != P_BUSY)
		gw_metrics_pool(0, -1, 0);
	if (s == P_BUSY && c->state != P_BUSY)
		gw_metrics_pool(0, 1, 0);
	int up = s == P_IDLE || s == P_BUSY;
	if (up && !c->counted)
	{
		gw_metrics_pool(1, 0, 0);
		c->counted = 1;
	}
	else if (!up && c->counted)
	{
		gw_metrics_pool(-1, 0, 0);
		c->counted = 0;
	}
	c->state = s;
}

static int
any_up_or_coming(void)
{
	for (int i = 0; i < nconns; i++)
		if (conns[i].state != P_DOWN)
			return 1;
	return 0;
}

static int
any_up(void)
{
	for (int i = 0; i < nconns; i++)
		if (conns[i].state == P_IDLE || conns[i].state == P_BUSY)
			return 1;
	return 0;
}

/* Fails every waiting job: used when no connection can serve them soon. */
static void
fail_queue(const char *why)
{
	while (queue_head)
	{
		gw_pg_job *j = queue_head;
		queue_head = j->next;
		queue_len--;
		gw_metrics_pool(0, 0, -1);
		fail_job(j, why, 0);
	}
	queue_tail = NULL;
}

static pslot *
slot_at(pconn *c, int i)
{
	return &c->slots[(c->head + i) % depth];
}

/* The connection is unusable: wk_conn closes it (on_closing first) and schedules
 * the retry, then on_down fails what it carried. */
static void
pconn_down(pconn *c, const char *reason)
{
	wk_conn_lost(&c->wc, reason);
}

static void
on_closing(wk_conn *wc, void *arg)
{
	pconn *c = arg;
	(void)wc;
	/* before libpq closes the socket: what is held for it is lost with it */
	gw_pgsend_release(c->send_fd, 0);
	c->send_fd = -1;
}

static void
on_down(wk_conn *wc, const char *reason, bool was_conn_up, void *arg)
{
	pconn *c = arg;
	(void)was_conn_up;
	char why[256];
	snprintf(why, sizeof why, "%s", reason);
	why[strcspn(why, "\n")] = '\0';
	/* every transaction in flight is lost: take the jobs out before answering any */
	gw_pg_job *lost[depth > 0 ? depth : 1];
	int nlost = 0;
	for (int i = 0; i < c->n; i++)
		if (slot_at(c, i)->job)
			lost[nlost++] = slot_at(c, i)->job;
	c->head = c->n = 0;
	c->aborted = 0;
	c->dirty = 0;
	/* a new session has no prepared statements */
	gw_sc_clear(&c->sc);
	c->sc_reset = 0;
	int was_up = c->state == P_IDLE || c->state == P_BUSY;
	set_state(c, P_DOWN);
	if (was_up)
		wk_log(WK_WARN, "database connection %d lost: %s", c->id, why);
	else if (wc->backoff_before == 0 || wc->backoff_before >= WK_BACKOFF_MAX)
		wk_log(WK_WARN, "database connection %d failed: %s", c->id, why);
	for (int i = 0; i < nlost; i++)
		fail_job(lost[i], why, 0);
	if (!any_up())
		fail_queue("no database connection is available");
}

static void
flush_out(pconn *c)
{
	c->dirty = 0;
	wk_conn_flush(&c->wc);
}

/* What was queued on a connection goes out once this loop iteration has
 * dispatched everything it could: several transactions in one write. */
static void
mark_dirty(pconn *c)
{
	c->dirty = 1;
	if (!ev_is_active(&flusher))
		ev_prepare_start(gw_loop, &flusher);
}

static void
on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)revents;
	ev_prepare_stop(gw_loop, w);
	for (int i = 0; i < nconns; i++)
		if (conns[i].dirty && conns[i].wc.pg)
			flush_out(&conns[i]);
	/* what pg_send.c held since the last time, to /metrics */
	static unsigned long long reported;
	unsigned long long held = gw_pgsend_held_sends();
	if (held != reported)
	{
		gw_metrics_coalesced_sends(held - reported);
		reported = held;
	}
}

static int
send_q(pconn *c, const char *sql, const gw_params *p)
{
	return PQsendQueryParams(c->wc.pg, sql, p ? p->n : 0, p ? (const Oid *)p->types : NULL,
	                         p ? (const char *const *)p->values : NULL, p ? p->lengths : NULL,
	                         p ? p->formats : NULL, 0);
}

static void
add_cmd(pslot *s, int kind, int stmt, int entry)
{
	s->cmds[s->ncmds].kind = (short)kind;
	s->cmds[s->ncmds].stmt = (short)stmt;
	s->cmds[s->ncmds].entry = entry;
	s->ncmds++;
}

/* A new slot at the end of the connection's ring. */
static pslot *
push_slot(pconn *c, gw_pg_job *job)
{
	pslot *s = &c->slots[(c->head + c->n) % depth];
	c->n++;
	s->job = job;
	s->qi = 0;
	s->stale = 0;
	s->skipped = 0;
	s->ncmds = 0;
	s->sent_at = ev_now(gw_loop);
	set_state(c, P_BUSY);
	return s;
}

/* Sends one statement of the pipeline: by its prepared name (with the Parse
 * first when the cache has just made room for it), or unnamed when it is not
 * cached. The Parse goes right before the first execution, so that it is
 * analysed under the transaction's role and search_path like the statement. */
static int
send_stmt(pconn *c, pslot *s, const char *sql, const gw_params *p, int stmt, int entry,
          int created)
{
	int n = p ? p->n : 0;
	if (entry < 0)
	{
		add_cmd(s, stmt >= 0 ? CMD_STMT : CMD_OWN, stmt, -1);
		return send_q(c, sql, p);
	}
	const char *name = gw_sc_name(&c->sc, entry);
	if (created)
	{
		add_cmd(s, CMD_PARSE, stmt, entry);
		gw_metrics_prepare();
		if (!PQsendPrepare(c->wc.pg, name, sql, n, p ? (const Oid *)p->types : NULL))
			return 0;
	}
	add_cmd(s, stmt >= 0 ? CMD_STMT : CMD_OWN, stmt, entry);
	return PQsendQueryPrepared(c->wc.pg, name, n, p ? (const char *const *)p->values : NULL,
	                           p ? p->lengths : NULL, p ? p->formats : NULL, 0);
}

static void
start_job(pconn *c, gw_pg_job *job)
{
	pslot *s = push_slot(c, job);
	int ok = 1;
	if (c->sc_reset)
	{
		/* only on an idle connection (dispatch): first in the pipeline, nothing
		 * before it can fail and skip it */
		gw_sc_clear(&c->sc);
		c->sc_reset = 0;
		add_cmd(s, CMD_OWN, -1, -1);
		ok = send_q(c, "DEALLOCATE ALL", NULL);
	}
	/* the pipeline: BEGIN, the job's statements, COMMIT */
	const char *sqls[GW_JOB_MAX + 2];
	const gw_params *params[GW_JOB_MAX + 2];
	int stmt[GW_JOB_MAX + 2], entry[GW_JOB_MAX + 2], created[GW_JOB_MAX + 2];
	int n = 0;
	if (!job->no_transaction)
	{
		sqls[n] = job->read_only ? "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
		                         : "BEGIN ISOLATION LEVEL READ COMMITTED";
		params[n] = NULL;
		stmt[n++] = -1;
	}
	for (int i = 0; i < job->nstmts; i++)
	{
		sqls[n] = job->stmts[i].sql;
		params[n] = job->stmts[i].params;
		stmt[n++] = i;
	}
	if (!job->no_transaction)
	{
		sqls[n] = job->rollback ? "ROLLBACK" : "COMMIT"; /* Prefer: tx=rollback */
		params[n] = NULL;
		stmt[n++] = -1;
	}
	/* look every statement up first: what makes room is deallocated before
	 * BEGIN, where no failure can skip it (the transactions sent before have
	 * used it already: they come first) */
	gw_sc_begin_job(&c->sc);
	for (int i = 0; ok && i < n; i++)
	{
		char evicted[GW_SC_NAME_MAX];
		entry[i] = gw_sc_get(&c->sc, sqls[i], params[i] ? params[i]->n : 0,
		                     params[i] ? params[i]->types : NULL, &created[i], evicted);
		if (evicted[0])
		{
			char sql[GW_SC_NAME_MAX + 16];
			snprintf(sql, sizeof sql, "DEALLOCATE %s", evicted);
			add_cmd(s, CMD_OWN, -1, -1);
			ok = send_q(c, sql, NULL);
		}
	}
	for (int i = 0; ok && i < n; i++)
		ok = send_stmt(c, s, sqls[i], params[i], stmt[i], entry[i], created[i]);
	/* one Sync for the whole transaction: the success path is one round trip;
	 * after an error the block stays open and read_results rolls it back */
	ok = ok && PQpipelineSync(c->wc.pg);
	if (!ok)
	{
		pconn_down(c, PQerrorMessage(c->wc.pg));
		return;
	}
	mark_dirty(c);
}

/* Every connection deallocates its prepared statements before its next job. */
static void
forget_prepared(void)
{
	for (int i = 0; i < nconns; i++)
		conns[i].sc_reset = 1;
}

/* A prepared statement the server no longer has (26000), or whose result type
 * a change of the schema has altered (0A000 "cached plan must not change result
 * type"): the transaction was rolled back, so the job can run again, once, on
 * freshly prepared statements. */
static int
stale_statement(const pcmd *cmd, PGresult *r)
{
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	if (!st || cmd->entry < 0)
		return cmd->kind == CMD_OWN && st && !strcmp(st, "26000"); /* DEALLOCATE */
	return !strcmp(st, "26000") ||
	       (!strcmp(st, "0A000") && msg && strstr(msg, "cached plan must not change result type"));
}

/* Puts a job back at the head of the queue, its results dropped. */
static void
requeue(gw_pg_job *job)
{
	gw_pool_job_clear(job);
	job->error_stmt = -1;
	job->next = queue_head;
	queue_head = job;
	if (!queue_tail)
		queue_tail = job;
	queue_len++;
	gw_metrics_pool(0, 0, 1);
}

/* Answers the job, or runs it again when a stale prepared statement failed it. */
static void
finish_or_retry(gw_pg_job *job, int stale)
{
	if (!stale || job->retried)
	{
		job_finish(job);
		return;
	}
	gw_metrics_stale_retry();
	job->retried = 1;
	requeue(job);
}

/* The Sync of the oldest transaction in flight came back. Returns 0 when the
 * connection went down. PQtransactionStatus only tells the state after the
 * last Sync sent (libpq reports "active" while more are in flight). */
static int
slot_synced(pconn *c)
{
	pslot *s = slot_at(c, 0);
	gw_pg_job *job = s->job;
	int stale = s->stale, skipped = s->skipped, own_cmds = 0;
	/* a Parse that never got its answer left no statement behind */
	for (int i = 0; i < s->ncmds; i++)
	{
		if (s->cmds[i].kind == CMD_PARSE && i >= s->qi)
			gw_sc_drop(&c->sc, s->cmds[i].entry);
		own_cmds |= s->cmds[i].kind == CMD_OWN && s->cmds[i].stmt < 0 && s->cmds[i].entry < 0;
	}
	c->head = (c->head + 1) % depth;
	c->n--;
	int last = c->n == 0;
	PGTransactionStatusType ts = last ? PQtransactionStatus(c->wc.pg) : PQTRANS_UNKNOWN;
	if (last)
		set_state(c, P_IDLE);
	if (!job)
	{
		/* the pool's ROLLBACK */
		c->aborted--;
		if (last && ts != PQTRANS_IDLE)
		{
			pconn_down(c, "ROLLBACK did not end the transaction");
			return 0;
		}
		return 1;
	}
	if (skipped)
	{
		/* sent behind a transaction that failed, before its ROLLBACK: the server
		 * refused its first command and skipped the rest, so it runs again; a
		 * DEALLOCATE it carried did not happen either */
		if (own_cmds)
			c->sc_reset = 1;
		requeue(job);
		return 1;
	}
	/* a failed transaction stays open (aborted) until rolled back; when more is
	 * in flight its state is unknown here: ROLLBACK anyway (a warning if a
	 * failed COMMIT had ended it) */
	if (job->error && !job->no_transaction && (!last || ts == PQTRANS_INERROR))
	{
		/* the answer is known: give it now, clean up behind it */
		push_slot(c, NULL);
		if (!PQsendQueryParams(c->wc.pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) ||
		    !PQpipelineSync(c->wc.pg))
		{
			pconn_down(c, PQerrorMessage(c->wc.pg));
			job_finish(job);
			return 0;
		}
		c->aborted++;
		mark_dirty(c);
		finish_or_retry(job, stale);
		return c->state != P_DOWN;
	}
	if (last && ts != PQTRANS_IDLE)
	{
		pconn_down(c, "connection left inside a transaction");
		job_finish(job);
		return 0;
	}
	finish_or_retry(job, stale);
	return c->state != P_DOWN;
}

static void
read_results(pconn *c)
{
	if (!PQconsumeInput(c->wc.pg))
	{
		pconn_down(c, PQerrorMessage(c->wc.pg));
		return;
	}
	while (c->wc.pg && c->n > 0 && !PQisBusy(c->wc.pg))
	{
		PGresult *r = PQgetResult(c->wc.pg);
		pslot *s = slot_at(c, 0);
		gw_pg_job *job = s->job;
		if (!r)
		{
			s->qi++;
			continue;
		}
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC)
		{
			PQclear(r);
			if (!slot_synced(c))
				return;
			continue;
		}
		if (!job || s->qi >= s->ncmds)
		{
			PQclear(r);
			continue;
		}
		const pcmd *cmd = &s->cmds[s->qi];
		if (st == PGRES_PIPELINE_ABORTED)
		{
			if (cmd->kind == CMD_PARSE)
				gw_sc_drop(&c->sc, cmd->entry);
			PQclear(r);
			continue;
		}
		if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR)
		{
			if (cmd->kind == CMD_PARSE)
				gw_sc_drop(&c->sc, cmd->entry);
			/* behind a failed transaction (its ROLLBACK still to come), the
			 * first command fails (25P02, or 26000 for a statement whose Parse
			 * the failure skipped) and the server skips the rest: nothing ran */
			if (s->qi == 0 && !job->error && c->aborted && !job->no_transaction)
				s->skipped = 1;
			if (!job->error && !s->skipped && stale_statement(cmd, r))
			{
				s->stale = 1;
				forget_prepared();
			}
			if (!job->error)
			{
				job->error = r;
				job->error_stmt = cmd->stmt;
			}
			else
				PQclear(r);
			continue;
		}
		if (cmd->kind == CMD_PARSE)
			gw_sc_ready(&c->sc, cmd->entry);
		else if (cmd->kind == CMD_STMT && !job->results[cmd->stmt])
		{
			job->results[cmd->stmt] = r;
			continue;
		}
		PQclear(r);
	}
	if (!c->wc.pg)
		return;
	if (PQstatus(c->wc.pg) == CONNECTION_BAD)
	{
		pconn_down(c, PQerrorMessage(c->wc.pg));
		return;
	}
	dispatch();
}

/* wk_conn: connected. */
static void
on_up(wk_conn *wc, void *arg)
{
	pconn *c = arg;
	PQsetNoticeReceiver(wc->pg, quiet_notice, NULL);
	if (!PQenterPipelineMode(wc->pg))
	{
		pconn_down(c, "cannot enter pipeline mode");
		return;
	}
	wk_conn_healthy(wc);
	c->send_fd = PQsocket(wc->pg);
	gw_pgsend_register(wc->pg);
	set_state(c, P_IDLE);
	dispatch();
}

static void
on_io(wk_conn *wc, int revents, void *arg)
{
	pconn *c = arg;
	if (c->state == P_DOWN || c->state == P_CONNECTING)
		return;
	if (revents & EV_WRITE)
	{
		flush_out(c);
		if (c->state == P_DOWN)
			return;
	}
	if (revents & EV_READ)
	{
		if (c->n)
			read_results(c);
		else if (!PQconsumeInput(wc->pg) || PQstatus(wc->pg) == CONNECTION_BAD)
			pconn_down(c, "connection closed by the server");
	}
}

/* wk_conn: a new attempt (the first, or a retry). */
static PGconn *
on_start(wk_conn *wc, void *arg)
{
	pconn *c = arg;
	(void)wc;
	set_state(c, P_CONNECTING);
	return gw_pg_connect_start("pgpod-gateway");
}

/* wk_conn: a draining process connects no more. */
static bool
may_connect(wk_conn *wc, void *arg)
{
	(void)wc;
	(void)arg;
	return !gw_draining;
}

/* May a busy connection take this job behind the ones it is running? Only
 * transactions (a statement run alone cannot be told apart from the ones behind
 * it after an error), never behind a failed one or a pending DEALLOCATE ALL,
 * and never behind a transaction that has been running for a while: a slow
 * statement would hold up the jobs queued behind it. */
static int
can_pipeline(pconn *c, const gw_pg_job *job, double now)
{
	if (c->state != P_BUSY || c->n <= 0 || c->n >= depth || c->aborted || c->sc_reset || job->no_transaction)
		return 0;
	if (now - slot_at(c, 0)->sent_at > PIPE_MAX_AGE)
		return 0;
	const pslot *last = slot_at(c, c->n - 1);
	return last->job && !last->job->no_transaction;
}

static void
dispatch(void)
{
	double now = ev_now(gw_loop);
	while (queue_head)
	{
		/* a connection already given a transaction in this loop iteration (it
		 * goes out in the same write), else the least loaded busy one that may
		 * take it (fewer sessions, each woken for several transactions), else an
		 * idle one */
		pconn *best = NULL, *idle = NULL;
		for (int i = 0; i < nconns; i++)
		{
			pconn *c = &conns[i];
			if (c->state == P_IDLE)
			{
				if (!idle)
					idle = c;
				continue;
			}
			if (!can_pipeline(c, queue_head, now))
				continue;
			if (c->dirty)
			{
				best = c;
				break;
			}
			if (!best || c->n < best->n)
				best = c;
		}
		if (!best)
			best = idle;
		if (!best)
			return;
		gw_pg_job *j = queue_head;
		queue_head = j->next;
		if (!queue_head)
			queue_tail = NULL;
		queue_len--;
		gw_metrics_pool(0, 0, -1);
		start_job(best, j);
	}
}

static void
on_queue_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	double now = ev_now(gw_loop);
	while (queue_head && now - queue_head->queued_at > gw_cfg.queue_timeout)
	{
		gw_pg_job *j = queue_head;
		queue_head = j->next;
		if (!queue_head)
			queue_tail = NULL;
		queue_len--;
		gw_metrics_pool(0, 0, -1);
		fail_job(j, "Timed out acquiring connection from connection pool.", 1);
	}
}

void
gw_pool_submit(gw_pg_job *job)
{
	for (int i = 0; i < GW_JOB_MAX; i++)
		job->results[i] = NULL;
	job->error = NULL;
	job->error_stmt = -1;
	job->failed = 0;
	job->timed_out = 0;
	job->retried = 0;
	job->next = NULL;
	job->queued_at = ev_now(gw_loop);
	if (!any_up() && !any_up_or_coming())
	{
		fail_job(job, "no database connection is available", 0);
		return;
	}
	if (!any_up())
	{
		/* connecting: only a fresh start waits, a down database fails fast */
		int connecting_first_time = 0;
		for (int i = 0; i < nconns; i++)
			connecting_first_time |= conns[i].state == P_CONNECTING && conns[i].wc.backoff == 0;
		if (!connecting_first_time)
		{
			fail_job(job, "no database connection is available", 0);
			return;
		}
	}
	if (queue_tail)
		queue_tail->next = job;
	else
		queue_head = job;
	queue_tail = job;
	queue_len++;
	gw_metrics_pool(0, 0, 1);
	dispatch();
}

void
gw_pool_submit_as(gw_pg_job *job, const char *settings, const gw_params *settings_params,
                  const char *sql, const gw_params *params, int read_only,
                  void (*done)(gw_pg_job *), void *data)
{
	gw_pool_job_clear(job);
	memset(job, 0, sizeof *job);
	job->nstmts = 2;
	job->stmts[0].sql = settings;
	job->stmts[0].params = settings_params;
	job->stmts[1].sql = sql;
	job->stmts[1].params = params;
	job->read_only = read_only;
	job->done = done;
	job->data = data;
	gw_pool_submit(job);
}

void
gw_pool_job_clear(gw_pg_job *job)
{
	for (int i = 0; i < GW_JOB_MAX; i++)
	{
		if (job->results[i])
			PQclear(job->results[i]);
		job->results[i] = NULL;
	}
	if (job->error)
		PQclear(job->error);
	job->error = NULL;
}

int
gw_pool_busy(void)
{
	int n = queue_len;
	for (int i = 0; i < nconns; i++)
		n += conns[i].state == P_BUSY;
	return n;
}

void
gw_pool_forget_prepared(void)
{
	forget_prepared();
}

int
gw_pool_init(int size, const char *user, long statement_timeout_ms, int prepared, int pipeline)
{
	db_user = user;
	depth = pipeline > 0 ? pipeline : 1;
	ev_prepare_init(&flusher, on_flush);
	gw_pgsend_init();
	snprintf(options, sizeof options, "-c statement_timeout=%ld", statement_timeout_ms);
	nconns = size;
	conns = calloc((size_t)size, sizeof *conns);
	if (!conns)
		return -1;
	for (int i = 0; i < size; i++)
	{
		pconn *c = &conns[i];
		c->id = i;
		c->send_fd = -1;
		wk_conn_init(&c->wc, gw_loop,
		             (wk_conn_callbacks){.start = on_start, .up = on_up, .io = on_io,
		                                 .closing = on_closing, .down = on_down,
		                                 .may_connect = may_connect, .arg = c});
		/* non-blocking libpq does not enforce connect_timeout: wk_conn does */
		wk_conn_set_connect_timeout(&c->wc, CONNECT_TIMEOUT);
		c->slots = calloc((size_t)depth, sizeof *c->slots);
		if (!c->slots || gw_sc_init(&c->sc, prepared))
			return -1;
		wk_conn_start(&c->wc);
	}
	ev_timer_init(&queue_timer, on_queue_timer, 0.5, 0.5);
	ev_timer_start(gw_loop, &queue_timer);
	return 0;
}

void
gw_pool_shutdown(void)
{
	ev_timer_stop(gw_loop, &queue_timer);
	ev_prepare_stop(gw_loop, &flusher);
	for (int i = 0; i < nconns; i++)
	{
		pconn *c = &conns[i];
		gw_pgsend_release(c->send_fd, c->wc.pg != NULL);
		c->send_fd = -1;
		wk_conn_close(&c->wc);
	}
}

int
gw_pool_up(void)
{
	return any_up();
}

