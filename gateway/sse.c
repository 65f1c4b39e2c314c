/* SSE subscribers (see sse.h). Each subscriber remembers the last seq it sent
 * and fetches "seq > last" in order; since seq is gapless and commit-ordered per
 * room, that gives each event exactly once, across reconnects (Last-Event-ID)
 * and across lost notifications (resync after the listener reconnects). One
 * fetch at a time per subscriber; a wake-up during a fetch sets dirty. */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "metrics.h"
#include "pool.h"

#define BATCH 500
#define HEARTBEAT 15.0
#define MAX_BACKLOG (4 << 20)

typedef struct sub
{
	gw_req *req; /* NULL once the client left a started stream */
	gw_auth auth;
	char room[40];
	long long last_seq;
	int have_start; /* last_seq is known */
	int checked;    /* the caller may read the room */
	int started;    /* headers sent */
	int fetching, dirty, gone;
	gw_pg_job job;
	gw_buf settings, sql;
	gw_params sp, qp;
	ev_timer heartbeat;
	struct sub *prev, *next;
} sub;

static sub *subs;

static void fetch(sub *s);

static void
sub_free(sub *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else if (subs == s)
		subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	ev_timer_stop(gw_loop, &s->heartbeat);
	gw_pool_job_clear(&s->job);
	gw_buf_free(&s->settings);
	gw_buf_free(&s->sql);
	gw_params_free(&s->sp);
	gw_params_free(&s->qp);
	if (s->started)
		gw_metrics_sse(-1);
	free(s);
}

static void
on_close(gw_req *req)
{
	sub *s = req->handler;
	if (!s)
		return;
	s->gone = 1;
	if (s->started)
	{
		s->req = NULL;
		req->handler = NULL;
		if (!s->fetching)
			sub_free(s);
	}
}

static void
on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	sub *s = w->data;
	if (s->req && !s->gone)
		gw_stream_write(s->req, ": ping\n\n", 8);
	/* a fetch that failed or waited for a slow client is retried here */
	if (!s->gone && s->dirty && !s->fetching)
		fetch(s);
}

static int
valid_uuid(const char *u)
{
	if (strlen(u) != 36)
		return 0;
	for (int i = 0; i < 36; i++)
	{
		char c = u[i];
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (c != '-')
				return 0;
		}
		else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return 0;
	}
	return 1;
}

static void
fetch_done(gw_pg_job *job)
{
	sub *s = job->data;
	/* fetching stays set while we write: a write that finds the client gone
	 * must not free s under us (on_close defers to here) */
	if (s->gone)
	{
		if (!s->started && s->req)
		{
			s->req->handler = NULL;
			gw_respond(s->req, 499, NULL, NULL, NULL, 0);
		}
		sub_free(s);
		return;
	}
	gw_req *req = s->req;
	if (job->failed || job->error)
	{
		if (!s->started)
		{
			gw_error e;
			gw_error_from_job(job, s->auth.anonymous, &e);
			req->handler = NULL;
			req->on_close = NULL;
			gw_respond_error(req, &e, NULL);
			gw_pool_job_clear(job);
			sub_free(s);
			return;
		}
		/* a started stream retries on the next wake-up or heartbeat resync */
		gw_log("SSE fetch for room %s failed: %s", s->room,
		       job->failed ? job->failure : PQresultErrorMessage(job->error));
		gw_pool_job_clear(job);
		s->dirty = 1;
		s->fetching = 0;
		return;
	}
	PGresult *r = job->results[1];
	gw_buf out;
	gw_buf_init(&out);
	int n = r ? PQntuples(r) : 0;
	int catch_up = 0;
	const char *info = NULL;
	if (!s->checked)
	{
		if (n != 1 || strcmp(PQgetvalue(r, 0, 0), "t"))
		{
			req->handler = NULL;
			req->on_close = NULL;
			gw_respond_simple_error(req, 404, "PGRST205", "Room not found");
			gw_buf_free(&out);
			gw_pool_job_clear(job);
			sub_free(s);
			return;
		}
		s->checked = 1;
		/* the room's info (terms, rules, the caller's role) is the stream's first
		 * event, without an id so that Last-Event-ID is untouched */
		if (!s->started && PQnfields(r) > 2 && !PQgetisnull(r, 0, 2))
			info = PQgetvalue(r, 0, 2);
		long long max = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
		if (!s->have_start)
		{
			s->last_seq = max;
			s->have_start = 1;
		}
		catch_up = max > s->last_seq;
		n = 0;
	}
	if (!s->started)
	{
		gw_stream_start(req, 200, "text/event-stream", NULL);
		s->started = 1;
		gw_metrics_sse(1);
		gw_buf_puts(&out, "retry: 2000\n\n");
		if (info)
			gw_buf_printf(&out, "event: info\ndata: %s\n\n", info);
		ev_timer_init(&s->heartbeat, on_heartbeat, HEARTBEAT, HEARTBEAT);
		s->heartbeat.data = s;
		ev_timer_start(gw_loop, &s->heartbeat);
	}
	for (int i = 0; i < n; i++)
	{
		long long seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		if (seq <= s->last_seq)
			continue;
		gw_buf_printf(&out, "id: %lld\nevent: %s\ndata: %s\n\n", seq, PQgetvalue(r, i, 1),
		              PQgetvalue(r, i, 2));
		s->last_seq = seq;
	}
	if (out.len)
		gw_stream_write(req, out.data, out.len);
	gw_buf_free(&out);
	gw_pool_job_clear(job);
	if (s->gone)
	{ /* the write found the client gone */
		sub_free(s);
		return;
	}
	s->fetching = 0;
	if (gw_stream_backlog(req) > MAX_BACKLOG)
	{
		/* a client this far behind catches up by reconnecting with Last-Event-ID */
		gw_log("SSE client of room %s too slow, waiting for it to drain", s->room);
		s->dirty = 1;
		return;
	}
	if (n == BATCH || s->dirty || catch_up)
	{
		s->dirty = 0;
		fetch(s);
	}
}

static void
fetch(sub *s)
{
	if (s->fetching)
	{
		s->dirty = 1;
		return;
	}
	s->fetching = 1;
	gw_buf_reset(&s->sql);
	gw_params_free(&s->qp);
	gw_params_init(&s->qp);
	int room = gw_params_add(&s->qp, s->room);
	if (!s->checked)
	{
		/* a room the caller cannot see (RLS on api.rooms) is a 404, not a silent stream */
		gw_buf_printf(
		    &s->sql,
		    "SELECT EXISTS (SELECT 1 FROM api.rooms WHERE id = $%d::uuid),"
		    " (SELECT coalesce(max(seq), 0) FROM api.room_events WHERE room_id = $%d::uuid),"
		    " api.chat_stream_info($%d::uuid)::text",
		    room, room, room);
	}
	else
	{
		char seq[32];
		snprintf(seq, sizeof seq, "%lld", s->last_seq);
		int after = gw_params_add(&s->qp, seq);
		gw_buf_printf(
		    &s->sql,
		    "SELECT seq, kind, message::text FROM api.room_events WHERE room_id = $%d::uuid"
		    " AND seq > $%d::bigint ORDER BY seq LIMIT %d",
		    room, after, BATCH);
	}
	memset(&s->job, 0, sizeof s->job);
	s->job.nstmts = 2;
	s->job.stmts[0].sql = s->settings.data;
	s->job.stmts[0].params = &s->sp;
	s->job.stmts[1].sql = s->sql.data;
	s->job.stmts[1].params = &s->qp;
	s->job.read_only = 1;
	s->job.done = fetch_done;
	s->job.data = s;
	gw_pool_submit(&s->job);
}

void
gw_sse_handle(gw_req *req, const char *room)
{
	if (!valid_uuid(room))
	{
		gw_respond_simple_error(req, 404, "PGRST000", "Not a room id");
		return;
	}
	sub *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	gw_error e;
	char www[256];
	if (gw_auth_request_ex(req, &s->auth, &e, www, sizeof www, 1))
	{
		free(s);
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	s->req = req;
	snprintf(s->room, sizeof s->room, "%s", room);
	const char *last = gw_req_header(req, "last-event-id");
	if (last && *last)
	{
		char *end;
		long long v = strtoll(last, &end, 10);
		if (*end || v < 0)
		{
			free(s);
			gw_respond_simple_error(req, 400, "PGRST100",
			                        "Last-Event-ID must be an event id (a seq number)");
			return;
		}
		s->last_seq = v;
		s->have_start = 1;
	}
	gw_buf_init(&s->settings);
	gw_buf_init(&s->sql);
	gw_params_init(&s->sp);
	gw_params_init(&s->qp);
	gw_auth_settings_sql(req, &s->auth, &s->settings, &s->sp);
	/* the auth strings live in the request arena, which outlives the stream */
	req->handler = s;
	req->on_close = on_close;
	s->next = subs;
	if (subs)
		subs->prev = s;
	subs = s;
	fetch(s);
}

void
gw_sse_notify(const char *payload)
{
	const char *colon = strchr(payload, ':');
	size_t rl = colon ? (size_t)(colon - payload) : strlen(payload);
	long long seq = colon ? strtoll(colon + 1, NULL, 10) : -1;
	for (sub *s = subs; s; s = s->next)
	{
		if (s->gone || !s->started || strlen(s->room) != rl || strncasecmp(s->room, payload, rl))
			continue;
		if (seq >= 0 && seq <= s->last_seq)
			continue;
		fetch(s);
	}
}

void
gw_sse_resync_all(void)
{
	for (sub *s = subs; s; s = s->next)
		if (!s->gone && s->started)
			fetch(s);
}
