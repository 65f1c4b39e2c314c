/*
 * db.c — one asynchronous libpq connection driven by libev: LISTEN on the daemon's
 * channels, one query in flight at a time, notifications between queries. Connecting
 * and reconnecting with wk_backoff_next (0.1 s doubling to 5 s) when the server goes
 * away are conn.c's (the reconnect loop the gateway's pool shares). Owns the PGconn;
 * callers own nothing of it.
 */
#include <stdlib.h>
#include <string.h>

#include "worker.h"

enum db_state
{
	DB_DOWN, /* conn.c connects or waits to retry */
	DB_LISTENING, /* the LISTEN commands are in flight */
	DB_IDLE,
	DB_BUSY
};

struct wk_db
{
	wk_conn c; /* the connection and its reconnect loop (conn.c) */
	char *conninfo;
	char *listen_sql; /* "LISTEN a; LISTEN b" or NULL */
	wk_db_callbacks cb;
	enum db_state state;
	wk_db_result_cb query_cb;
	wk_db_result_cb each_cb; /* wk_db_query_each: every result as it comes */
	void *query_arg;
	wk_db_payload_cb notify_payload;
	PGresult *last; /* the result handed to query_cb */
};

/* conn.c closed the connection (lost, or an attempt failed) and scheduled the retry:
 * fail the query in flight. */
static void
db_down(wk_conn *c, const char *why, bool was_conn_up, void *arg)
{
	wk_db *db = arg;
	wk_db_result_cb cb = db->query_cb;
	void *qarg = db->query_arg;
	bool was_up = db->state == DB_IDLE || db->state == DB_BUSY;

	(void)was_conn_up;
	wk_log(WK_WARN, "database connection lost: %s (retrying in %.1f s)", why, c->backoff);
	PQclear(db->last); /* a result collected before the loss belongs to no one now */
	db->last = NULL;
	db->state = DB_DOWN;
	db->query_cb = NULL;
	db->each_cb = NULL;
	if (cb)
		cb(db, NULL, qarg);
	if (was_up && db->cb.lost)
		db->cb.lost(db, db->cb.arg);
}

static void
db_lost(wk_db *db, const char *why)
{
	wk_conn_lost(&db->c, why);
}

static void
db_deliver_notifies(wk_db *db)
{
	PGnotify *n;

	while (db->c.pg && (n = PQnotifies(db->c.pg)) != NULL)
	{
		if (db->cb.notify)
			db->cb.notify(db, n->relname, db->cb.arg);
		if (db->notify_payload)
			db->notify_payload(db, n->relname, n->extra, db->cb.arg);
		PQfreemem(n);
	}
}

/* A query (or the LISTENs) ended: hand its result over, then say we are idle. */
static void
db_finished(wk_db *db)
{
	wk_db_result_cb cb = db->query_cb;
	void *arg = db->query_arg;
	PGresult *res = db->last;
	bool listening = db->state == DB_LISTENING;

	db->query_cb = NULL;
	db->each_cb = NULL;
	db->last = NULL;
	db->state = DB_IDLE;
	if (listening)
	{
		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			wk_log(WK_ERROR, "LISTEN failed: %s", res ? PQresultErrorMessage(res) : "no result");
			PQclear(res);
			db_lost(db, "could not listen");
			return;
		}
		wk_log(WK_INFO, "connected to the database and listening");
		wk_conn_healthy(&db->c); /* the next loss waits WK_BACKOFF_FIRST */
	}
	else if (cb)
		cb(db, res, arg);
	PQclear(res);
	db_deliver_notifies(db);
	if (db->state == DB_IDLE && db->cb.ready)
		db->cb.ready(db, db->cb.arg);
}

/* Reads what the server sent; collects results until the query is complete. */
static void
db_read(wk_db *db)
{
	if (!wk_conn_consume(&db->c))
		return;
	while (db->state == DB_BUSY || db->state == DB_LISTENING)
	{
		PGresult *res;

		if (PQisBusy(db->c.pg))
			break;
		res = PQgetResult(db->c.pg);
		if (res == NULL)
		{
			db_finished(db);
			return;
		}
		if (db->each_cb && db->state == DB_BUSY)
			db->each_cb(db, res, db->query_arg);
		/* Keep the first error, else the last result. */
		if (db->last == NULL || PQresultStatus(db->last) == PGRES_TUPLES_OK ||
		    PQresultStatus(db->last) == PGRES_COMMAND_OK)
		{
			PQclear(db->last);
			db->last = res;
		}
		else
			PQclear(res);
	}
	if (db->c.pg == NULL)
		return; /* a callback lost the connection */
	if (!wk_conn_check(&db->c))
		return;
	db_deliver_notifies(db);
}

/* conn.c: connected; LISTEN on the channels before anything else. */
static void
db_up(wk_conn *c, void *arg)
{
	wk_db *db = arg;

	PQsetnonblocking(c->pg, 1);
	if (db->listen_sql == NULL)
	{
		db->state = DB_LISTENING;
		db->last = PQmakeEmptyPGresult(c->pg, PGRES_COMMAND_OK);
		db_finished(db);
		return;
	}
	if (!PQsendQuery(c->pg, db->listen_sql))
	{
		db_lost(db, PQerrorMessage(c->pg));
		return;
	}
	db->state = DB_LISTENING;
	wk_conn_flush(c);
}

/* Server notices go to the daemon's log, not raw to stderr. */
static void
db_notice(void *arg, const char *message)
{
	size_t len = strlen(message);

	(void)arg;
	wk_log(WK_INFO, "server: %.*s", (int)(len && message[len - 1] == '\n' ? len - 1 : len),
	       message);
}

static PGconn *
db_start(wk_conn *c, void *arg)
{
	wk_db *db = arg;
	PGconn *pg;

	(void)c;
	wk_log(WK_DEBUG, "connecting to the database%s%s", db->listen_sql ? " to run " : "",
	       db->listen_sql ? db->listen_sql : "");
	pg = PQconnectStart(db->conninfo);
	if (pg)
		PQsetNoticeProcessor(pg, db_notice, db);
	return pg;
}

static void
db_io(wk_conn *c, int revents, void *arg)
{
	wk_db *db = arg;

	if (revents & EV_WRITE)
	{
		if (wk_conn_flush(c) < 0)
			return;
	}
	if (revents & EV_READ)
		db_read(db);
}

wk_db *
wk_db_new(struct ev_loop *loop, const char *conninfo, const char *const *channels,
          wk_db_callbacks callbacks)
{
	wk_db *db = calloc(1, sizeof(*db));
	wk_buf sql = {0};

	if (db == NULL)
		return NULL;
	db->conninfo = strdup(conninfo);
	db->cb = callbacks;
	db->state = DB_DOWN;
	for (int i = 0; channels && channels[i]; i++)
		wk_buf_printf(&sql, "%sLISTEN \"%s\"", i ? "; " : "", channels[i]);
	db->listen_sql = sql.data;
	wk_conn_init(&db->c, loop,
	             (wk_conn_callbacks){.start = db_start, .up = db_up, .io = db_io, .down = db_down, .arg = db});
	wk_conn_start(&db->c);
	return db;
}

bool
wk_db_idle(const wk_db *db)
{
	return db->state == DB_IDLE;
}

bool
wk_db_connected(const wk_db *db)
{
	return db->state == DB_IDLE || db->state == DB_BUSY;
}

bool
wk_db_query(wk_db *db, const char *sql, int nparams, const char *const *params, wk_db_result_cb cb,
            void *arg)
{
	if (db->state != DB_IDLE)
		return false;
	if (!PQsendQueryParams(db->c.pg, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		db_lost(db, PQerrorMessage(db->c.pg));
		return false;
	}
	db->state = DB_BUSY;
	db->query_cb = cb;
	db->query_arg = arg;
	wk_conn_flush(&db->c);
	return true;
}

void
wk_db_free(wk_db *db)
{
	if (db == NULL)
		return;
	wk_conn_close(&db->c);
	PQclear(db->last);
	free(db->conninfo);
	free(db->listen_sql);
	free(db);
}

bool
wk_db_query_each(wk_db *db, const char *sql, wk_db_result_cb each, wk_db_result_cb done, void *arg)
{
	if (db->state != DB_IDLE)
		return false;
	if (!PQsendQuery(db->c.pg, sql))
	{
		db_lost(db, PQerrorMessage(db->c.pg));
		return false;
	}
	db->state = DB_BUSY;
	db->query_cb = done;
	db->each_cb = each;
	db->query_arg = arg;
	wk_conn_flush(&db->c);
	return true;
}

void
wk_db_set_connect_timeout(wk_db *db, double seconds)
{
	wk_conn_set_connect_timeout(&db->c, seconds);
}

void
wk_db_set_notify_payload(wk_db *db, wk_db_payload_cb cb)
{
	db->notify_payload = cb;
}
