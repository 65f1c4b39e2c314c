/*
 * db.c — one asynchronous libpq connection driven by libev: non-blocking connect
 * (PQconnectPoll), LISTEN on the daemon's channels, one query in flight at a time,
 * notifications between queries, and reconnection with wk_backoff_next (0.1 s doubling
 * to 5 s) when the server goes away. Owns the PGconn; callers own nothing of it.
 */
#include <stdlib.h>
#include <string.h>

#include "worker.h"

enum db_state
{
	DB_WAIT, /* disconnected; the retry timer runs */
	DB_CONNECTING,
	DB_LISTENING, /* the LISTEN commands are in flight */
	DB_IDLE,
	DB_BUSY
};

struct wk_db
{
	struct ev_loop *loop;
	char *conninfo;
	char *listen_sql; /* "LISTEN a; LISTEN b" or NULL */
	wk_db_callbacks cb;
	PGconn *conn;
	enum db_state state;
	ev_io io;
	ev_timer retry;
	double retry_delay;
	wk_db_result_cb query_cb;
	wk_db_result_cb each_cb; /* wk_db_query_each: every result as it comes */
	void *query_arg;
	double connect_timeout; /* wk_db_set_connect_timeout; 0: none */
	wk_db_payload_cb notify_payload;
	PGresult *last; /* the result handed to query_cb */
};

static void db_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void db_connect(wk_db *db);

/* Watches the socket for reading, and for writing when libpq has output queued. */
static void
db_watch(wk_db *db, int events)
{
	int fd = PQsocket(db->conn);

	if (ev_is_active(&db->io) && (db->io.fd != fd || db->io.events != events))
		ev_io_stop(db->loop, &db->io);
	if (!ev_is_active(&db->io))
	{
		ev_io_set(&db->io, fd, events);
		ev_io_start(db->loop, &db->io);
	}
}

/* Drops the connection, fails the query in flight, and schedules a reconnect. */
static void
db_lost(wk_db *db, const char *why)
{
	wk_db_result_cb cb = db->query_cb;
	void *arg = db->query_arg;
	bool was_up = db->state == DB_IDLE || db->state == DB_BUSY;

	db->retry_delay = wk_backoff_next(db->retry_delay);
	wk_log(WK_WARN, "database connection lost: %s (retrying in %.1f s)", why, db->retry_delay);
	if (ev_is_active(&db->io))
		ev_io_stop(db->loop, &db->io);
	if (db->conn)
		PQfinish(db->conn);
	db->conn = NULL;
	PQclear(db->last); /* a result collected before the loss belongs to no one now */
	db->last = NULL;
	db->state = DB_WAIT;
	db->query_cb = NULL;
	db->each_cb = NULL;
	if (ev_is_active(&db->retry))
		ev_timer_stop(db->loop, &db->retry); /* a connect timeout still running */
	ev_timer_set(&db->retry, db->retry_delay, 0.);
	ev_timer_start(db->loop, &db->retry);
	if (cb)
		cb(db, NULL, arg);
	if (was_up && db->cb.lost)
		db->cb.lost(db, db->cb.arg);
}

static void
db_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wk_db *db = (wk_db *)w->data;

	(void)loop;
	(void)revents;
	if (db->state == DB_CONNECTING)
		db_lost(db, "timed out connecting to the database");
	else
		db_connect(db);
}

static void
db_deliver_notifies(wk_db *db)
{
	PGnotify *n;

	while (db->conn && (n = PQnotifies(db->conn)) != NULL)
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
		db->retry_delay = 0; /* the next loss waits WK_BACKOFF_FIRST */
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
	if (!PQconsumeInput(db->conn))
	{
		db_lost(db, PQerrorMessage(db->conn));
		return;
	}
	while (db->state == DB_BUSY || db->state == DB_LISTENING)
	{
		PGresult *res;

		if (PQisBusy(db->conn))
			break;
		res = PQgetResult(db->conn);
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
	if (db->conn == NULL)
		return; /* a callback lost the connection */
	if (PQstatus(db->conn) == CONNECTION_BAD)
	{
		db_lost(db, PQerrorMessage(db->conn));
		return;
	}
	db_deliver_notifies(db);
}

static void
db_flush(wk_db *db)
{
	int rc = PQflush(db->conn);

	if (rc < 0)
		db_lost(db, PQerrorMessage(db->conn));
	else
		db_watch(db, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
}

static void
db_start_listening(wk_db *db)
{
	PQsetnonblocking(db->conn, 1);
	if (db->listen_sql == NULL)
	{
		db->state = DB_LISTENING;
		db->last = PQmakeEmptyPGresult(db->conn, PGRES_COMMAND_OK);
		db_watch(db, EV_READ);
		db_finished(db);
		return;
	}
	if (!PQsendQuery(db->conn, db->listen_sql))
	{
		db_lost(db, PQerrorMessage(db->conn));
		return;
	}
	db->state = DB_LISTENING;
	db_flush(db);
}

static void
db_poll_connect(wk_db *db)
{
	switch (PQconnectPoll(db->conn))
	{
	case PGRES_POLLING_READING:
		db_watch(db, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		db_watch(db, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		if (ev_is_active(&db->retry))
			ev_timer_stop(db->loop, &db->retry); /* the connect timeout */
		db_start_listening(db);
		break;
	default:
		db_lost(db, PQerrorMessage(db->conn));
	}
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

static void
db_connect(wk_db *db)
{
	wk_log(WK_DEBUG, "connecting to the database%s%s", db->listen_sql ? " to run " : "",
	       db->listen_sql ? db->listen_sql : "");
	db->conn = PQconnectStart(db->conninfo);
	if (db->conn)
		PQsetNoticeProcessor(db->conn, db_notice, db);
	if (db->conn == NULL)
	{
		db_lost(db, "out of memory");
		return;
	}
	if (PQstatus(db->conn) == CONNECTION_BAD)
	{
		db_lost(db, PQerrorMessage(db->conn));
		return;
	}
	db->state = DB_CONNECTING;
	if (db->connect_timeout > 0)
	{
		/* non-blocking libpq does not enforce connect_timeout: this timer does */
		ev_timer_set(&db->retry, db->connect_timeout, 0.);
		ev_timer_start(db->loop, &db->retry);
	}
	db_poll_connect(db);
}

static void
db_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wk_db *db = (wk_db *)w->data;

	(void)loop;
	if (db->state == DB_CONNECTING)
	{
		db_poll_connect(db);
		return;
	}
	if (revents & EV_WRITE)
	{
		db_flush(db);
		if (db->conn == NULL)
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
	db->loop = loop;
	db->conninfo = strdup(conninfo);
	db->cb = callbacks;
	db->retry_delay = 0;
	for (int i = 0; channels && channels[i]; i++)
		wk_buf_printf(&sql, "%sLISTEN \"%s\"", i ? "; " : "", channels[i]);
	db->listen_sql = sql.data;
	ev_init(&db->io, db_io_cb);
	db->io.data = db;
	ev_init(&db->retry, db_retry_cb);
	db->retry.data = db;
	db_connect(db);
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
	if (!PQsendQueryParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0))
	{
		db_lost(db, PQerrorMessage(db->conn));
		return false;
	}
	db->state = DB_BUSY;
	db->query_cb = cb;
	db->query_arg = arg;
	db_flush(db);
	return true;
}

void
wk_db_free(wk_db *db)
{
	if (db == NULL)
		return;
	if (ev_is_active(&db->io))
		ev_io_stop(db->loop, &db->io);
	if (ev_is_active(&db->retry))
		ev_timer_stop(db->loop, &db->retry);
	PQclear(db->last);
	if (db->conn)
		PQfinish(db->conn);
	free(db->conninfo);
	free(db->listen_sql);
	free(db);
}

bool
wk_db_query_each(wk_db *db, const char *sql, wk_db_result_cb each, wk_db_result_cb done, void *arg)
{
	if (db->state != DB_IDLE)
		return false;
	if (!PQsendQuery(db->conn, sql))
	{
		db_lost(db, PQerrorMessage(db->conn));
		return false;
	}
	db->state = DB_BUSY;
	db->query_cb = done;
	db->each_cb = each;
	db->query_arg = arg;
	db_flush(db);
	return true;
}

void
wk_db_set_connect_timeout(wk_db *db, double seconds)
{
	db->connect_timeout = seconds;
	if (seconds > 0 && db->state == DB_CONNECTING && !ev_is_active(&db->retry))
	{
		ev_timer_set(&db->retry, seconds, 0.);
		ev_timer_start(db->loop, &db->retry);
	}
}

void
wk_db_set_notify_payload(wk_db *db, wk_db_payload_cb cb)
{
	db->notify_payload = cb;
}
