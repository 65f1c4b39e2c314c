/* The per-process pool of non-blocking libpq connections in pipeline mode. A job
 * is a list of statements run as one transaction in one round trip:
 * BEGIN [READ ONLY]; statements...; COMMIT; Sync. After an error the server skips
 * to the Sync (the COMMIT never runs); the job is answered at once and the pool
 * sends ROLLBACK before the connection takes another job. Up to
 * PGPOD_GATEWAY_PIPELINE jobs are in flight on a connection, each with its own
 * Sync; the ones sent behind a failed transaction are skipped by the server and
 * run again after its ROLLBACK.
 *
 * Each connection keeps its statements prepared (stmt_cache.h): the first use
 * of a statement text sends its Parse inside the same pipeline, later uses only
 * bind and execute it. */
#ifndef GW_POOL_H
#define GW_POOL_H
#include <libpq-fe.h>

#include "buf.h"

#define GW_JOB_MAX 6

typedef struct gw_pg_stmt
{
	const char *sql;
	const gw_params *params;
} gw_pg_stmt;

typedef struct gw_pg_job gw_pg_job;
struct gw_pg_job
{
	int nstmts;
	gw_pg_stmt stmts[GW_JOB_MAX];
	int read_only;
	int no_transaction; /* run the statements alone (health checks) */
	int rollback;       /* end with ROLLBACK instead of COMMIT (Prefer: tx=rollback) */
	void (*done)(gw_pg_job *job);
	void *data;
	/* results, owned by the job until gw_pool_job_clear */
	PGresult *results[GW_JOB_MAX];
	PGresult *error;
	int error_stmt; /* index of the failing statement, -1 for BEGIN/COMMIT */
	int failed;     /* no answer: connection lost, pool down or timed out */
	int timed_out;
	char failure[256];
	/* pool internals */
	int retried; /* ran again after a stale prepared statement failed it */
	gw_pg_job *next;
	double queued_at;
};

/* prepared: prepared statements kept per connection (0: none, every statement
 * is parsed each time); pipeline: transactions in flight per connection. */
int gw_pool_init(int size, const char *user, long statement_timeout_ms, int prepared,
                 int pipeline);
/* The schema changed: every connection deallocates its prepared statements
 * before its next job. */
void gw_pool_forget_prepared(void);
void gw_pool_submit(gw_pg_job *job);
/* Clears job's results and submits it as the usual two statements: the
 * transaction's settings (gw_auth_settings_sql), then sql with params. */
void gw_pool_submit_as(gw_pg_job *job, const char *settings, const gw_params *settings_params,
                       const char *sql, const gw_params *params, int read_only,
                       void (*done)(gw_pg_job *), void *data);
void gw_pool_job_clear(gw_pg_job *job);
int gw_pool_busy(void);
int gw_pool_up(void);
void gw_pool_shutdown(void);
/* Connection parameters shared with the listener connection. */
PGconn *gw_pg_connect_start(const char *application_name);
/* The same parameters as a conninfo string (for workers/lib's wk_db). */
void gw_pg_conninfo(const char *application_name, gw_buf *out);

#endif
