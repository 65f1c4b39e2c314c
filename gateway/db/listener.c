/* The notification connection (see listener.h), on workers/lib's wk_db (connect,
 * LISTEN, reconnect with wk_backoff_next, one query at a time). Once connected and
 * listening it loads the schema (one multi-statement query), then the JWT secret,
 * then publishes both as a snapshot. LISTEN comes first so that no change can fall
 * between a load and the LISTEN. A new schema replaces the old only when the whole
 * load succeeded. Between loads it runs the hub's commands, one at a time. */
#include "listener.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "pool.h"
#include "settings.h"
#include "worker.h"

/* gw_listener_command's queue, run one at a time when the connection is idle */
typedef struct lcmd
{
	const char *sql;
	char key[40];
	void (*done)(const char *key, int ok);
	struct lcmd *next;
} lcmd;
static lcmd *cmd_head, *cmd_tail;

static wk_db *db;
static int up;             /* connected and listening (the subscribers were told) */
static int loading_schema; /* a load (schema, then secret) is in flight */
static gw_schema *loading;
static int load_failed;
static int reload_pending;
static unsigned char secret[512];
static size_t secret_len;
static int last_load_failed;
static int warned; /* failures are logged once until a load succeeds */
static ev_timer reload_timer;
static int timer_reload; /* the running load was started by the retry timer */
static gw_snapshot *current; /* the last one published */
static gw_buf listen_sql;

static void next_step(void);

/* Subscribers, registered before gw_listener_start (main.c wires them). */
#define MAX_SUBSCRIBERS 8
static struct
{
	const char *channel;
	void (*cb)(const char *payload);
} notify_subs[MAX_SUBSCRIBERS];
static int n_notify_subs;
static void (*snapshot_subs[MAX_SUBSCRIBERS])(gw_snapshot *now, gw_snapshot *before);
static int n_snapshot_subs;
static void (*connection_subs[MAX_SUBSCRIBERS])(int up);
static int n_connection_subs;

void
gw_listener_on_notify(const char *channel, void (*cb)(const char *payload))
{
	if (n_notify_subs == MAX_SUBSCRIBERS)
		abort();
	notify_subs[n_notify_subs].channel = channel;
	notify_subs[n_notify_subs++].cb = cb;
}

void
gw_listener_on_snapshot(void (*cb)(gw_snapshot *now, gw_snapshot *before))
{
	if (n_snapshot_subs == MAX_SUBSCRIBERS)
		abort();
	snapshot_subs[n_snapshot_subs++] = cb;
}

void
gw_listener_on_connection(void (*cb)(int up))
{
	if (n_connection_subs == MAX_SUBSCRIBERS)
		abort();
	connection_subs[n_connection_subs++] = cb;
}

static void
publish_connection(int is_up)
{
	for (int i = 0; i < n_connection_subs; i++)
		connection_subs[i](is_up);
}

/* Makes (schema, secret) the current snapshot and tells the subscribers. */
static void
publish_snapshot(gw_schema *schema)
{
	gw_snapshot *before = current;
	current = gw_snapshot_new(schema, secret, secret_len);
	for (int i = 0; i < n_snapshot_subs; i++)
		snapshot_subs[i](current, before);
	gw_snapshot_unref(before);
}

gw_snapshot *
gw_snapshot_current(void)
{
	return current;
}

/* The secret just read is not the published one (a rotation, or the first read). */
static int
secret_changed(void)
{
	size_t n;
	const unsigned char *pub = gw_snapshot_secret(current, &n);
	return n != secret_len || (n && memcmp(pub, secret, n));
}

static void
free_commands(void)
{
	while (cmd_head)
	{
		lcmd *c = cmd_head;
		cmd_head = c->next;
		free(c);
	}
	cmd_tail = NULL;
}

/* --- the load: schema, then secret, then publish -------------------------------- */

static void
on_schema_result(wk_db *d, PGresult *r, void *arg)
{
	(void)d;
	(void)arg;
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_TUPLES_OK)
	{
		int nf = PQnfields(r);
		const char *vals[16];
		for (int i = 0; i < PQntuples(r); i++)
		{
			for (int f = 0; f < nf && f < 16; f++)
				vals[f] = PQgetvalue(r, i, f);
			gw_schema_add_row(loading, nf < 16 ? nf : 16, vals);
		}
	}
	else if (st != PGRES_COMMAND_OK)
	{
		if (!warned++)
			wk_log(WK_WARN, "schema cache query failed (retrying every 2 s): %s",
			       PQresultErrorMessage(r));
		load_failed = 1;
	}
}

static void on_secret(wk_db *d, PGresult *r, void *arg);

static void
on_schema_done(wk_db *d, PGresult *r, void *arg)
{
	(void)arg;
	if (!r)
	{
		/* the connection went: the load starts again after the reconnect */
		gw_schema_unref(loading);
		loading = NULL;
		loading_schema = 0;
		return;
	}
	/* published once the JWT secret is read too (below): a ready process
	 * (/health 200) never answers a token with PGRST300 for lack of it */
	if (load_failed)
	{
		gw_schema_unref(loading);
		loading = NULL;
	}
	last_load_failed = load_failed;
	wk_db_query(d, "SELECT encode(pod.jwt_secret(), 'hex')", 0, NULL, on_secret, NULL);
}

static void
on_secret(wk_db *d, PGresult *r, void *arg)
{
	(void)d;
	(void)arg;
	loading_schema = 0;
	if (!r)
	{
		gw_schema_unref(loading);
		loading = NULL;
		return;
	}
	ExecStatusType st = PQresultStatus(r);
	if (st == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
	{
		const char *hex = PQgetvalue(r, 0, 0);
		size_t n = strlen(hex) / 2;
		if (n > sizeof secret)
			n = sizeof secret;
		if (wk_hex_decode(secret, hex, n))
			secret_len = n;
	}
	else if (st != PGRES_TUPLES_OK)
	{
		last_load_failed = 1;
		if (!warned++)
			wk_log(WK_ERROR, "cannot read the JWT secret with pod.jwt_secret(): %s",
			       PQresultErrorMessage(r));
	}
	else
	{
		/* tokens are refused (PGRST300) until a reload finds the secret */
		wk_log(WK_WARN, "pod.jwt_secret() returned no secret: %s",
		       PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : "no row");
	}
	if (loading)
	{
		gw_schema *s = loading;
		loading = NULL;
		publish_snapshot(s);
		gw_schema_unref(s); /* the snapshot holds it now */
		/* periodic retries (secret missing) reload the same schema: say it once */
		static int logged[3] = {-1, -1, -1};
		if (logged[0] != s->nrels || logged[1] != s->nfks || logged[2] != s->nfuncs ||
		    !timer_reload)
			wk_log(WK_INFO, "schema cache loaded: %d relations, %d relationships, %d functions",
			       s->nrels, s->nfks, s->nfuncs);
		logged[0] = s->nrels;
		logged[1] = s->nfks;
		logged[2] = s->nfuncs;
	}
	else if (secret_changed())
		publish_snapshot(gw_snapshot_schema(current)); /* the secret alone changed */
	if (!last_load_failed)
		warned = 0;
	if (last_load_failed && !reload_pending)
	{
		/* retried on a timer: the schema may be half-installed right now */
		ev_timer_stop(gw_loop, &reload_timer);
		ev_timer_set(&reload_timer, 2.0, 0);
		ev_timer_start(gw_loop, &reload_timer);
	}
	/* the next step (a pending reload, a command) follows when wk_db says idle */
}

static void
start_schema_load(int from_timer)
{
	if (!up || !wk_db_idle(db))
	{
		reload_pending = 1;
		return;
	}
	reload_pending = 0;
	load_failed = 0;
	loading = gw_schema_new();
	loading_schema = 1;
	timer_reload = from_timer;
	if (!wk_db_query_each(db, gw_schema_queries, on_schema_result, on_schema_done, NULL))
	{
		gw_schema_unref(loading);
		loading = NULL;
		loading_schema = 0;
		reload_pending = 1;
	}
}

/* --- commands ----------------------------------------------------------------- */

static void
on_command(wk_db *d, PGresult *r, void *arg)
{
	(void)d;
	(void)arg;
	lcmd *c = cmd_head;
	if (!r || !c)
		return; /* lost: the queue is dropped, the connection subscribers hear of it */
	int ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		wk_log(WK_WARN, "listener command %s failed: %s", c->sql, PQresultErrorMessage(r));
	cmd_head = c->next;
	if (!cmd_head)
		cmd_tail = NULL;
	if (c->done)
		c->done(c->key, ok);
	free(c);
}

/* The connection is idle: a reload waiting, else the next command. */
static void
next_step(void)
{
	if (!up || !wk_db_idle(db) || loading_schema)
		return;
	if (reload_pending)
	{
		start_schema_load(0);
		return;
	}
	if (!cmd_head)
		return;
	const char *vals[1] = {cmd_head->key};
	wk_db_query(db, cmd_head->sql, 1, vals, on_command, NULL);
}

void
gw_listener_command(const char *sql, const char *key, void (*done)(const char *key, int ok))
{
	lcmd *c = calloc(1, sizeof *c);
	if (!c)
		abort();
	c->sql = sql;
	snprintf(c->key, sizeof c->key, "%s", key);
	c->done = done;
	if (cmd_tail)
		cmd_tail->next = c;
	else
		cmd_head = c;
	cmd_tail = c;
	next_step();
}

/* --- wk_db's callbacks --------------------------------------------------------- */

static void
on_ready(wk_db *d, void *arg)
{
	(void)d;
	(void)arg;
	if (!up)
	{
		/* listening before loading: a change committed during the load is
		 * announced to us and reloaded, never missed */
		up = 1;
		gw_metrics_db_up(1);
		/* subscribers catch up with what was committed while we were away (the
		 * hub's topics: rooms and videos) */
		publish_connection(1);
		reload_pending = 1;
	}
	next_step();
}

static void
on_lost(wk_db *d, void *arg)
{
	(void)d;
	(void)arg;
	up = 0;
	gw_metrics_db_up(0);
	/* the session's holds went with it; the hub asks again after the reconnect */
	free_commands();
	publish_connection(0);
}

static void
on_notification(wk_db *d, const char *channel, const char *payload, void *arg)
{
	(void)d;
	(void)arg;
	if (!strcmp(channel, "pgrst"))
	{
		if (!payload[0] || !strcmp(payload, "reload schema"))
			start_schema_load(0);
		return;
	}
	for (int i = 0; i < n_notify_subs; i++)
		if (!strcmp(channel, notify_subs[i].channel))
			notify_subs[i].cb(payload);
}

static void
on_reload_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (up && wk_db_idle(db) && !loading_schema)
		start_schema_load(1);
}

int
gw_listener_start(void)
{
	/* pgrst (schema reloads) is the listener's own; the rest are the subscribers' */
	static const char *channels[MAX_SUBSCRIBERS + 2];
	int n = 0;
	channels[n++] = "pgrst";
	for (int i = 0; i < n_notify_subs; i++)
		channels[n++] = notify_subs[i].channel;
	channels[n] = NULL;
	ev_init(&reload_timer, on_reload_timer);
	gw_buf_init(&listen_sql);
	gw_pg_conninfo("pgpod-gateway-listener", &listen_sql);
	wk_db_callbacks cb = {
	    .ready = on_ready,
	    .lost = on_lost,
	    .notify = NULL,
	    .arg = NULL,
	};
	db = wk_db_new(gw_loop, listen_sql.data, channels, cb);
	if (!db)
		return -1;
	wk_db_set_notify_payload(db, on_notification);
	/* non-blocking libpq does not enforce connect_timeout */
	wk_db_set_connect_timeout(db, 5.0);
	return 0;
}

void
gw_listener_stop(void)
{
	ev_timer_stop(gw_loop, &reload_timer);
	wk_db_free(db);
	db = NULL;
	up = 0;
	free_commands();
	gw_buf_free(&listen_sql);
	gw_schema_unref(loading);
	loading = NULL;
	gw_snapshot_unref(current);
	current = NULL;
}
