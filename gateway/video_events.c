/* Video event streams (see video_events.h). A subscriber lives from its check to
 * the client's leaving; one fetch (the check, or a resync) at a time per subscriber. */
#include "video_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "metrics.h"
#include "pool.h"

#define HEARTBEAT 15.0
#define MAX_BACKLOG (1 << 20)

typedef struct vsub
{
	gw_req *req; /* NULL once the client left a started stream */
	gw_auth auth;
	char video[37];
	int started, fetching, gone;
	gw_pg_job job;
	gw_buf settings;
	gw_params sp, qp;
	ev_timer heartbeat;
	struct vsub *prev, *next;
} vsub;

static vsub *vsubs;

/* The same shape as pod.video_event's NOTIFY payload, read under the caller's role. */
static const char *const SNAPSHOT_SQL =
    "SELECT json_build_object('event', 'state', 'uuid', uuid, 'state', state, 'progress', progress,"
    " 'failure_reason', failure_reason, 'hls_url', hls_url, 'thumbnail_url', thumbnail_url)::text"
    " FROM api.videos WHERE uuid = $1::uuid";

static void
vsub_free(vsub *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else if (vsubs == s)
		vsubs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	ev_timer_stop(gw_loop, &s->heartbeat);
	gw_pool_job_clear(&s->job);
	gw_buf_free(&s->settings);
	gw_params_free(&s->sp);
	gw_params_free(&s->qp);
	if (s->started)
		gw_metrics_sse(-1);
	free(s);
}

static void
on_close(gw_req *req)
{
	vsub *s = req->handler;
	if (!s)
		return;
	s->gone = 1;
	s->req = NULL;
	req->handler = NULL;
	if (!s->fetching)
		vsub_free(s);
}

static void
on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	vsub *s = w->data;
	if (s->req && !s->gone)
		gw_stream_write(s->req, ": ping\n\n", 8);
}

static void
send_event(vsub *s, const char *payload)
{
	char name[16] = "state";
	const char *e = strstr(payload, "\"event\" : \"");
	if (e && !strncmp(e + 11, "progress\"", 9))
		snprintf(name, sizeof name, "progress");
	/* a client this far behind misses progress, never a change of state */
	if (!strcmp(name, "progress") && gw_stream_backlog(s->req) > MAX_BACKLOG)
		return;
	gw_buf b;
	gw_buf_init(&b);
	gw_buf_printf(&b, "event: %s\ndata: %s\n\n", name, payload);
	gw_stream_write(s->req, b.data, b.len);
	gw_buf_free(&b);
}

static void
fetch_done(gw_pg_job *job)
{
	vsub *s = job->data;
	s->fetching = 0;
	if (s->gone)
	{
		vsub_free(s);
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
			vsub_free(s);
		}
		gw_pool_job_clear(job);
		return;
	}
	PGresult *r = job->results[1];
	if (!s->started && (!r || PQntuples(r) != 1))
	{
		/* a video the caller may not see is a 404, never an empty stream */
		req->handler = NULL;
		req->on_close = NULL;
		gw_respond_simple_error(req, 404, "PGRST205", "Video not found");
		vsub_free(s);
		return;
	}
	if (!s->started)
	{
		gw_stream_start(req, 200, "text/event-stream", "Cache-Control: no-store\r\n");
		s->started = 1;
		gw_metrics_sse(1);
		gw_stream_write(req, "retry: 2000\n\n", 13);
		ev_timer_init(&s->heartbeat, on_heartbeat, HEARTBEAT, HEARTBEAT);
		s->heartbeat.data = s;
		ev_timer_start(gw_loop, &s->heartbeat);
	}
	if (r && PQntuples(r) == 1)
		send_event(s, PQgetvalue(r, 0, 0));
	gw_pool_job_clear(job);
	if (s->gone)
		vsub_free(s);
}

static void
fetch(vsub *s)
{
	if (s->fetching)
		return;
	s->fetching = 1;
	gw_pool_job_clear(&s->job);
	memset(&s->job, 0, sizeof s->job);
	s->job.nstmts = 2;
	s->job.stmts[0].sql = s->settings.data;
	s->job.stmts[0].params = &s->sp;
	s->job.stmts[1].sql = SNAPSHOT_SQL;
	s->job.stmts[1].params = &s->qp;
	s->job.read_only = 1;
	s->job.done = fetch_done;
	s->job.data = s;
	gw_pool_submit(&s->job);
}

void
gw_video_events_handle(gw_req *req, const char *video)
{
	for (int i = 0; i < 36; i++)
	{
		char c = video[i];
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
		{
			gw_respond_simple_error(req, 404, "PGRST000", "Not a video id");
			return;
		}
	}
	vsub *s = calloc(1, sizeof *s);
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
	for (int i = 0; i < 36; i++)
		s->video[i] = (char)(video[i] >= 'A' && video[i] <= 'F' ? video[i] + 32 : video[i]);
	gw_buf_init(&s->settings);
	gw_params_init(&s->sp);
	gw_params_init(&s->qp);
	gw_auth_settings_sql(req, &s->auth, &s->settings, &s->sp);
	gw_params_add(&s->qp, s->video);
	req->handler = s;
	req->on_close = on_close;
	s->next = vsubs;
	if (vsubs)
		vsubs->prev = s;
	vsubs = s;
	fetch(s);
}

void
gw_video_events_notify(const char *payload)
{
	const char *u = strstr(payload, "\"uuid\" : \"");
	if (!u)
		return;
	u += 10;
	for (vsub *s = vsubs; s; s = s->next)
		if (!s->gone && s->started && s->req && !strncasecmp(s->video, u, 36))
			send_event(s, payload);
}

void
gw_video_events_resync_all(void)
{
	for (vsub *s = vsubs; s; s = s->next)
		if (!s->gone && s->started)
			fetch(s);
}
