/* The notification connection (see listener.h). States: connecting, LISTEN,
 * loading the schema (one multi-statement query), loading the secret, listening.
 * LISTEN comes first so that no change can fall between a load and the LISTEN.
 * A new schema replaces the old only when the whole load succeeded. */
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

enum lstate
{
	L_DOWN,
	L_CONNECTING,
	L_LISTEN_CMD,
	L_SCHEMA,
	L_SECRET,
	L_LISTENING,
	L_COMMAND /* a gw_listener_command in flight */
};

/* gw_listener_command's queue, run one at a time when the connection is idle */
typedef struct lcmd
{
	const char *sql;
	char key[40];
	void (*done)(const char *key, int ok);
	struct lcmd *next;
} lcmd;
static lcmd *cmd_head, *cmd_tail;
static int cmd_ok;

static PGconn *pg;
static enum lstate state;
static ev_io io;
static ev_timer retry;
static double backoff;
static gw_schema *loading;
static gw_snapshot *current; /* the last one published */
static int load_failed;
static int reload_pending;
static unsigned char secret[512];
static size_t secret_len;
static int was_up;
static int last_load_failed;
static int warned; /* failures are logged once until a load succeeds */
static ev_timer reload_timer;
static int timer_reload; /* the running load was started by the retry timer */

static gw_buf listen_sql;

/* The secret just read is not the published one (a rotation, or the first read). */
static int
secret_changed(void)
{
	size_t n;
	const unsigned char *pub = gw_snapshot_secret(current, &n);
	return n != secret_len || (n && memcmp(pub, secret, n));
}

static void start_connect(void);
static void start_schema_load(void);

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
publish_connection(int up)
{
	for (int i = 0; i < n_connection_subs; i++)
		connection_subs[i](up);
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

static void
watch(int events)
{
	ev_io_stop(gw_loop, &io);
	if (!pg || PQsocket(pg) < 0)
		return;
	ev_io_set(&io, PQsocket(pg), events);
	ev_io_start(gw_loop, &io);
}

static void
go_down(const char *reason)
{
	/* reason may point into the connection's own error buffer: copy it first */
	char why[256];
	snprintf(why, sizeof why, "%s", reason);
	why[strcspn(why, "\n")] = '\0';
	ev_io_stop(gw_loop, &io);
	if (pg)
		PQfinish(pg);
	pg = NULL;
	if (state >= L_LISTEN_CMD)
		wk_log(WK_WARN, "notification connection lost: %s", why);
	if (was_up)
	{
		gw_metrics_db_up(0);
		was_up = 0;
	}
	state = L_DOWN;
	/* the session's holds went with it; the hub asks again after the reconnect */
	while (cmd_head)
	{
		lcmd *c = cmd_head;
		cmd_head = c->next;
		free(c);
	}
	cmd_tail = NULL;
	publish_connection(0);
	if (loading)
	{
		gw_schema_unref(loading);
		loading = NULL;
	}
	backoff = wk_backoff_next(backoff);
	ev_timer_stop(gw_loop, &retry);
	ev_timer_set(&retry, backoff, 0);
	ev_timer_start(gw_loop, &retry);
}

static void
send_or_down(const char *sql)
{
	if (!PQsendQuery(pg, sql))
	{
		go_down(PQerrorMessage(pg));
		return;
	}
	int r = PQflush(pg);
	watch(EV_READ | (r == 1 ? EV_WRITE : 0));
}

/* The connection is idle (L_LISTENING): a reload waiting, else the next command. */
static void
next_step(void)
{
	if (state != L_LISTENING)
		return;
	if (reload_pending)
	{
		start_schema_load();
		return;
	}
	if (!cmd_head)
		return;
	lcmd *c = cmd_head;
	const char *vals[1] = {c->key};
	state = L_COMMAND;
	cmd_ok = 0;
	if (!PQsendQueryParams(pg, c->sql, 1, NULL, vals, NULL, NULL, 0))
	{
		go_down(PQerrorMessage(pg));
		return;
	}
	int r = PQflush(pg);
	watch(EV_READ | (r == 1 ? EV_WRITE : 0));
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

static void
start_schema_load(void)
{
	timer_reload = 0;
	state = L_SCHEMA;
	reload_pending = 0;
	load_failed = 0;
	loading = gw_schema_new();
	send_or_down(gw_schema_queries);
}

static void
handle_result(PGresult *r)
{
	ExecStatusType st = PQresultStatus(r);
	if (state == L_SCHEMA)
	{
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
	else if (state == L_COMMAND)
	{
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
			cmd_ok = 1;
		else
			wk_log(WK_WARN, "listener command %s failed: %s", cmd_head->sql, PQresultErrorMessage(r));
	}
	else if (state == L_SECRET)
	{
		if (st == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		{
			const char *hex = PQgetvalue(r, 0, 0);
			size_t n = strlen(hex) / 2;
			if (n > sizeof secret)
				n = sizeof secret;
			for (size_t i = 0; i < n; i++)
			{
				unsigned v;
				sscanf(hex + 2 * i, "%2x", &v);
				secret[i] = (unsigned char)v;
			}
			secret_len = n;
		}
		else if (st != PGRES_TUPLES_OK)
		{
			last_load_failed = 1;
			if (!warned++)
				wk_log(WK_ERROR, "cannot read the JWT secret with pod.jwt_secret(): %s",
				       PQresultErrorMessage(r));
		}
		else if (st != PGRES_TUPLES_OK || PQntuples(r) != 1)
		{
			/* tokens are refused (PGRST300) until a reload finds the secret */
			wk_log(WK_WARN, "pod.jwt_secret() returned no secret: %s",
			       PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : "no row");
		}
	}
}

/* Called when the current command's results are all in. */
static void
step_done(void)
{
	switch (state)
	{
	case L_SCHEMA:
		/* published once the JWT secret is read too (below): a ready worker
		 * (/health 200) never answers a token with PGRST300 for lack of it */
		if (load_failed)
		{
			gw_schema_unref(loading);
			loading = NULL;
		}
		last_load_failed = load_failed;
		state = L_SECRET;
		send_or_down("SELECT encode(pod.jwt_secret(), 'hex')");
		break;
	case L_SECRET:
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
		state = L_LISTENING;
		if (!last_load_failed)
			warned = 0;
		if (reload_pending)
			start_schema_load();
		else
		{
			if (last_load_failed)
			{
				/* retried on a timer: the schema may be half-installed right now */
				ev_timer_set(&reload_timer, 2.0, 0);
				ev_timer_start(gw_loop, &reload_timer);
			}
			next_step();
		}
		break;
	case L_COMMAND:
	{
		lcmd *c = cmd_head;
		cmd_head = c->next;
		if (!cmd_head)
			cmd_tail = NULL;
		state = L_LISTENING;
		if (c->done)
			c->done(c->key, cmd_ok);
		free(c);
		next_step();
		break;
	}
	case L_LISTEN_CMD:
		/* listening before loading: a change committed during the load is
		 * announced to us and reloaded, never missed */
		if (!was_up)
		{
			gw_metrics_db_up(1);
			was_up = 1;
		}
		/* subscribers catch up with what was committed while we were away (the
		 * hub's topics: rooms and videos) */
		publish_connection(1);
		start_schema_load();
		break;
	default:
		break;
	}
}

static void
handle_notifies(void)
{
	PGnotify *n;
	while ((n = PQnotifies(pg)))
	{
		if (!strcmp(n->relname, "pgrst"))
		{
			if (!n->extra[0] || !strcmp(n->extra, "reload schema"))
			{
				if (state == L_LISTENING)
					start_schema_load();
				else
					reload_pending = 1;
			}
		}
		else
			for (int i = 0; i < n_notify_subs; i++)
				if (!strcmp(n->relname, notify_subs[i].channel))
					notify_subs[i].cb(n->extra);
		PQfreemem(n);
	}
}

static void
on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)w;
	if (state == L_CONNECTING)
	{
		switch (PQconnectPoll(pg))
		{
		case PGRES_POLLING_READING:
			watch(EV_READ);
			return;
		case PGRES_POLLING_WRITING:
			watch(EV_WRITE);
			return;
		case PGRES_POLLING_OK:
			backoff = 0;
			ev_timer_stop(gw_loop, &retry);
			state = L_LISTEN_CMD;
			send_or_down(listen_sql.data);
			return;
		default:
			go_down(PQerrorMessage(pg));
			return;
		}
	}
	if (revents & EV_WRITE)
	{
		int r = PQflush(pg);
		if (r < 0)
		{
			go_down(PQerrorMessage(pg));
			return;
		}
		watch(EV_READ | (r == 1 ? EV_WRITE : 0));
	}
	if (!(revents & EV_READ))
		return;
	if (!PQconsumeInput(pg))
	{
		go_down(PQerrorMessage(pg));
		return;
	}
	while (state != L_LISTENING && state != L_DOWN && !PQisBusy(pg))
	{
		PGresult *r = PQgetResult(pg);
		if (!r)
		{
			step_done();
			break;
		}
		handle_result(r);
		PQclear(r);
	}
	if (pg)
		handle_notifies();
	if (pg && PQstatus(pg) == CONNECTION_BAD)
		go_down("connection closed");
}

static void
start_connect(void)
{
	pg = gw_pg_connect_start("pgpod-gateway-listener");
	if (!pg || PQstatus(pg) == CONNECTION_BAD)
	{
		go_down(pg ? PQerrorMessage(pg) : "out of memory");
		return;
	}
	state = L_CONNECTING;
	watch(EV_WRITE);
	/* non-blocking libpq does not enforce connect_timeout: the retry timer does */
	ev_timer_stop(gw_loop, &retry);
	ev_timer_set(&retry, 5.0, 0);
	ev_timer_start(gw_loop, &retry);
}

static void
on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (state == L_CONNECTING)
		go_down("timed out connecting to the database");
	else if (state == L_DOWN && !gw_draining)
		start_connect();
}

static void
on_reload_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (state == L_LISTENING)
	{
		start_schema_load();
		timer_reload = 1;
	}
}

int
gw_listener_start(void)
{
	/* pgrst (schema reloads) is the listener's own; the rest are the subscribers' */
	gw_buf_init(&listen_sql);
	gw_buf_puts(&listen_sql, "LISTEN pgrst");
	for (int i = 0; i < n_notify_subs; i++)
		gw_buf_printf(&listen_sql, "; LISTEN \"%s\"", notify_subs[i].channel);
	ev_init(&reload_timer, on_reload_timer);
	ev_init(&io, on_io);
	ev_init(&retry, on_retry);
	start_connect();
	return 0;
}

void
gw_listener_stop(void)
{
	ev_timer_stop(gw_loop, &retry);
	ev_timer_stop(gw_loop, &reload_timer);
	ev_io_stop(gw_loop, &io);
	if (pg)
		PQfinish(pg);
	pg = NULL;
	state = L_DOWN;
	while (cmd_head)
	{
		lcmd *c = cmd_head;
		cmd_head = c->next;
		free(c);
	}
	cmd_tail = NULL;
	gw_buf_free(&listen_sql);
	gw_snapshot_unref(current);
	current = NULL;
}
