/*
 * conn.c — the one reconnect loop of every libpq connection the daemons and the gateway
 * hold: a non-blocking connect (the owner's PQconnectStart*) driven by PQconnectPoll on an
 * ev_io, an optional connect timeout (non-blocking libpq does not enforce one), and, when
 * the connection fails or is lost, PQfinish and a retry after wk_backoff_next (0.1 s
 * doubling to 5 s; the owner resets it once the connection proved good). The owner
 * (wk_db's LISTEN connection, a gateway pool connection) speaks the protocol: it gets
 * the socket's events while up and says what to watch.
 */
#include <stdio.h>
#include <string.h>

#include "worker.h"

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

void
wk_conn_init(wk_conn *c, struct ev_loop *loop, wk_conn_callbacks cb)
{
	memset(c, 0, sizeof *c);
	c->loop = loop;
	c->cb = cb;
	c->state = WK_CONN_WAIT;
	ev_init(&c->io, conn_io_cb);
	c->io.data = c;
	ev_init(&c->timer, conn_timer_cb);
	c->timer.data = c;
}

void
wk_conn_watch(wk_conn *c, int events)
{
	int fd = c->pg ? PQsocket(c->pg) : -1;

	if (ev_is_active(&c->io) && (c->io.fd != fd || c->io.events != events))
		ev_io_stop(c->loop, &c->io);
	if (fd < 0 || events == 0 || ev_is_active(&c->io))
		return;
	ev_io_set(&c->io, fd, events);
	ev_io_start(c->loop, &c->io);
}

/* Closes the PGconn (the owner's closing hook first) and stops its watchers. */
static void
conn_close(wk_conn *c)
{
	if (ev_is_active(&c->io))
		ev_io_stop(c->loop, &c->io);
	if (ev_is_active(&c->timer))
		ev_timer_stop(c->loop, &c->timer);
	if (c->pg && c->cb.closing)
		c->cb.closing(c, c->cb.arg);
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
}

void
wk_conn_lost(wk_conn *c, const char *reason)
{
	/* reason may point into the connection's own error buffer: copy it first */
	char why[512];
	bool was_up = c->state == WK_CONN_UP;

	if (c->state != WK_CONN_UP && c->state != WK_CONN_CONNECTING)
		return;
	snprintf(why, sizeof why, "%s", reason ? reason : "");
	conn_close(c);
	c->state = WK_CONN_WAIT;
	c->backoff_before = c->backoff;
	c->backoff = wk_backoff_next(c->backoff);
	ev_timer_set(&c->timer, c->backoff, 0.);
	ev_timer_start(c->loop, &c->timer);
	if (c->cb.down)
		c->cb.down(c, why, was_up, c->cb.arg);
}

static void
conn_poll(wk_conn *c)
{
	switch (PQconnectPoll(c->pg))
	{
	case PGRES_POLLING_READING:
		wk_conn_watch(c, EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		wk_conn_watch(c, EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		if (ev_is_active(&c->timer))
			ev_timer_stop(c->loop, &c->timer); /* the connect timeout */
		c->state = WK_CONN_UP;
		wk_conn_watch(c, EV_READ);
		if (c->cb.up)
			c->cb.up(c, c->cb.arg);
		break;
	default:
		wk_conn_lost(c, PQerrorMessage(c->pg));
	}
}

void
wk_conn_start(wk_conn *c)
{
	if (c->state == WK_CONN_UP || c->state == WK_CONN_CONNECTING)
		return;
	if (ev_is_active(&c->timer))
		ev_timer_stop(c->loop, &c->timer);
	c->state = WK_CONN_CONNECTING;
	c->pg = c->cb.start(c, c->cb.arg);
	if (c->pg == NULL)
	{
		wk_conn_lost(c, "out of memory");
		return;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD)
	{
		wk_conn_lost(c, PQerrorMessage(c->pg));
		return;
	}
	if (c->connect_timeout > 0)
	{
		ev_timer_set(&c->timer, c->connect_timeout, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
	/* libpq: after PQconnectStart, wait until the socket is writable, then poll */
	wk_conn_watch(c, EV_WRITE);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	wk_conn *c = w->data;

	(void)loop;
	(void)revents;
	if (c->state == WK_CONN_CONNECTING)
		wk_conn_lost(c, "timed out connecting to the database");
	else if (c->state == WK_CONN_WAIT && (!c->cb.may_connect || c->cb.may_connect(c, c->cb.arg)))
		wk_conn_start(c);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wk_conn *c = w->data;

	(void)loop;
	if (c->state == WK_CONN_CONNECTING)
		conn_poll(c);
	else if (c->state == WK_CONN_UP && c->cb.io)
		c->cb.io(c, revents, c->cb.arg);
}

void
wk_conn_set_connect_timeout(wk_conn *c, double seconds)
{
	c->connect_timeout = seconds;
	if (seconds > 0 && c->state == WK_CONN_CONNECTING && !ev_is_active(&c->timer))
	{
		ev_timer_set(&c->timer, seconds, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
}

void
wk_conn_healthy(wk_conn *c)
{
	c->backoff = 0;
}

int
wk_conn_flush(wk_conn *c)
{
	int rc = PQflush(c->pg);

	if (rc < 0)
	{
		wk_conn_lost(c, PQerrorMessage(c->pg));
		return -1;
	}
	wk_conn_watch(c, rc == 1 ? EV_READ | EV_WRITE : EV_READ);
	return rc;
}

bool
wk_conn_consume(wk_conn *c)
{
	if (PQconsumeInput(c->pg))
		return true;
	wk_conn_lost(c, PQerrorMessage(c->pg));
	return false;
}

bool
wk_conn_check(wk_conn *c)
{
	if (c->pg == NULL)
		return false;
	if (PQstatus(c->pg) != CONNECTION_BAD)
		return true;
	wk_conn_lost(c, PQerrorMessage(c->pg));
	return false;
}

void
wk_conn_close(wk_conn *c)
{
	conn_close(c);
	c->state = WK_CONN_CLOSED;
}
