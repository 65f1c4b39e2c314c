/* The SSE event hub (see hub.h). A topic reads new events once (feed_sql) and
 * writes them to its live subscribers. A subscriber is, in turn: CHECKING (its
 * authorisation is asked under its role; it gets nothing), CATCHUP (it reads
 * history_sql under its role until it reaches the topic's position), LIVE (it
 * gets the topic's events from memory). A subscriber whose rights change goes
 * back to CHECKING. Ownership: the topic owns its subscribers' list; a
 * subscriber whose client left is freed by the reaper (an ev_check) or, when a
 * job of its own is in flight, when that job comes back, never inside a write. */
#include "worker.h"
#include "hub.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "listener.h"
#include "metrics.h"
#include "pool.h"

#define HEARTBEAT 15.0
#define MAX_BACKLOG (4 << 20)
#define TOPIC_BUCKETS 1024

enum sub_state
{
	S_CHECKING,
	S_CATCHUP,
	S_LIVE
};

typedef struct topic topic;

typedef struct sub
{
	topic *t;
	gw_req *req;  /* NULL once the client left */
	gw_req *zreq; /* the client left before the stream started: answered when the check is back */
	gw_auth auth;
	char user[64]; /* the token's sub claim (else its guest claim), "" without one */
	char viewer[128]; /* the kind's view of this subscriber (authorize_sql's 4th column) */
	enum sub_state state;
	long long last_seq;
	long long catchup_to; /* the upper bound of the history read in flight */
	int have_start;       /* last_seq given (Last-Event-ID) */
	int started;    /* the stream's head is sent */
	int busy;       /* a job of this subscriber is in flight */
	int recheck;    /* its rights changed while a job was in flight */
	int gone;
	int on_dead; /* on the reaper's list */
	gw_pg_job job;
	gw_buf settings;
	gw_params sp, qp;
	ev_timer heartbeat;
	struct sub *prev, *next; /* in the topic */
	struct sub *dead_next;   /* waiting for the reaper */
} sub;

struct topic
{
	const gw_hub_kind *kind;
	char key[40];
	long long last_seq; /* the last event written to live subscribers */
	int have_seq;
	int fetching, dirty;
	enum
	{
		LOCK_NONE,
		LOCK_ASKED,
		LOCK_HELD
	} lock; /* the kind's sleep lock (sleep_sql), if it has one */
	sub *subs;
	int nsubs;
	gw_pg_job job;
	gw_params qp;
	topic *hnext;
};

static topic *buckets[TOPIC_BUCKETS];
static sub *dead;
static ev_check reaper;
static int reaper_on;

static void topic_fetch(topic *t);
static void topic_lock(topic *t);
static void sub_check(sub *s);
static void sub_catchup(sub *s);

static unsigned
topic_hash_key(const char *key)
{
	unsigned h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ (unsigned)(*p | 0x20)) * 16777619u; /* uuids compare case-insensitively */
	return h % TOPIC_BUCKETS;
}

static unsigned
topic_hash(const gw_hub_kind *kind, const char *key)
{
	(void)kind; /* keys are uuids: the kind need not spread them */
	return topic_hash_key(key);
}

static topic *
topic_find(const gw_hub_kind *kind, const char *key)
{
	for (topic *t = buckets[topic_hash(kind, key)]; t; t = t->hnext)
		if (t->kind == kind && !strcasecmp(t->key, key))
			return t;
	return NULL;
}

static topic *
topic_get(const gw_hub_kind *kind, const char *key)
{
	topic *t = topic_find(kind, key);
	if (t)
		return t;
	t = calloc(1, sizeof *t);
	if (!t)
		abort();
	t->kind = kind;
	snprintf(t->key, sizeof t->key, "%s", key);
	gw_params_init(&t->qp);
	unsigned b = topic_hash(kind, key);
	t->hnext = buckets[b];
	buckets[b] = t;
	topic_lock(t);
	return t;
}

/* Frees a topic nobody listens to, once its read is back. */
static void
topic_release(topic *t)
{
	if (t->subs || t->fetching || t->lock == LOCK_ASKED)
		return; /* a lock being taken: given back when it is in */
	if (t->lock == LOCK_HELD)
		gw_listener_command(t->kind->wake_sql, t->key, NULL);
	topic **pp = &buckets[topic_hash(t->kind, t->key)];
	while (*pp && *pp != t)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = t->hnext;
	gw_pool_job_clear(&t->job);
	gw_params_free(&t->qp);
	free(t);
}

static void
sub_free(sub *s)
{
	topic *t = s->t;
	if (s->prev)
		s->prev->next = s->next;
	else if (t->subs == s)
		t->subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	t->nsubs--;
	ev_timer_stop(gw_loop, &s->heartbeat);
	gw_pool_job_clear(&s->job);
	gw_buf_free(&s->settings);
	gw_params_free(&s->sp);
	gw_params_free(&s->qp);
	if (s->started)
		gw_metrics_sse(-1);
	free(s);
	topic_release(t);
}

static void
reap(struct ev_loop *loop, ev_check *w, int revents)
{
	(void)loop;
	(void)revents;
	while (dead)
	{
		sub *s = dead;
		dead = s->dead_next;
		s->on_dead = 0;
		if (s->busy)
			continue; /* its job frees it */
		sub_free(s);
	}
	ev_check_stop(gw_loop, w);
	reaper_on = 0;
}

/* The client left (http.c calls this from wherever it noticed): the subscriber
 * is only marked here; the reaper frees it after the current callback. */
static void
on_close(gw_req *req)
{
	sub *s = req->handler;
	if (!s)
		return;
	req->handler = NULL;
	s->req = NULL;
	if (!s->started)
		s->zreq = req; /* its connection waits for an answer to be freed */
	if (s->gone)
		return;
	s->gone = 1;
	s->on_dead = 1;
	s->dead_next = dead;
	dead = s;
	if (!reaper_on)
	{
		ev_check_init(&reaper, reap);
		ev_check_start(gw_loop, &reaper);
		reaper_on = 1;
	}
}

/* Ends a stream (rights withdrawn, client too slow); the client may reconnect. */
static void
sub_end(sub *s, const char *why)
{
	if (s->gone || !s->req)
		return;
	if (why)
		wk_log(WK_WARN, "SSE %s %s: %s", s->t->kind->name, s->t->key, why);
	gw_stream_end(s->req);
}

static void
sub_write(sub *s, const char *data, size_t len)
{
	if (s->gone || !s->req || !len)
		return;
	gw_stream_write(s->req, data, len);
	if (!s->gone && s->req && gw_stream_backlog(s->req) > MAX_BACKLOG)
		sub_end(s, "client too slow; it resumes with Last-Event-ID");
}

static void
on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	sub *s = w->data;
	sub_write(s, ": ping\n\n", 8);
	if (!s->gone && s->t->lock == LOCK_NONE)
		topic_lock(s->t); /* a lock that could not be taken */
	if (!s->gone && s->t->dirty && !s->t->fetching)
		topic_fetch(s->t); /* a shared read that failed */
}

static void
sub_submit(sub *s, const char *sql, void (*done)(gw_pg_job *))
{
	s->busy = 1;
	gw_pool_submit_as(&s->job, s->settings.data, &s->sp, sql, &s->qp, 1, done, s);
}

/* A subscriber's job came back: 1 when it should go on (not gone, no recheck). */
static int
sub_job_back(sub *s)
{
	s->busy = 0;
	if (s->gone)
	{
		if (s->zreq)
		{
			gw_respond(s->zreq, 499, NULL, NULL, NULL, 0);
			s->zreq = NULL;
		}
		if (!s->on_dead)
			sub_free(s); /* else the reaper frees it */
		return 0;
	}
	if (s->recheck)
	{
		s->recheck = 0;
		gw_pool_job_clear(&s->job);
		sub_check(s);
		return 0;
	}
	return 1;
}

/* The subscriber reached the topic (or the topic is behind it): it goes live. */
static void
sub_settle(sub *s)
{
	topic *t = s->t;
	if (s->last_seq < t->last_seq)
	{
		sub_catchup(s);
		return;
	}
	s->state = S_LIVE;
	if (s->last_seq > t->last_seq)
		topic_fetch(t); /* the topic has events to read */
}

static void
catchup_done(gw_pg_job *job)
{
	sub *s = job->data;
	if (!sub_job_back(s))
		return;
	if (job->failed || job->error)
	{
		wk_log(WK_WARN, "SSE history of %s %s failed: %s", s->t->kind->name, s->t->key,
		       job->failed ? job->failure : PQresultErrorMessage(job->error));
		gw_pool_job_clear(job);
		sub_end(s, NULL);
		return;
	}
	PGresult *r = job->results[1];
	int n = r ? PQntuples(r) : 0;
	gw_buf out;
	gw_buf_init(&out);
	for (int i = 0; i < n; i++)
	{
		long long seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		if (seq <= s->last_seq)
			continue;
		gw_buf_printf(&out, "id: %lld\nevent: %s\ndata: %s\n\n", seq, PQgetvalue(r, i, 1),
		              PQgetvalue(r, i, 2));
		s->last_seq = seq;
	}
	gw_pool_job_clear(job);
	sub_write(s, out.data, out.len);
	gw_buf_free(&out);
	if (s->gone)
		return;
	if (n == GW_HUB_BATCH && s->last_seq < s->catchup_to)
		sub_catchup(s);
	else
	{
		/* what the history did not show up to its bound (it cannot, for an
		 * authorised reader) is skipped; what the topic read since is not */
		if (s->last_seq < s->catchup_to)
			s->last_seq = s->catchup_to;
		sub_settle(s);
	}
}

static void
sub_catchup(sub *s)
{
	s->state = S_CATCHUP;
	gw_params_free(&s->qp);
	gw_params_init(&s->qp);
	char a[32], b[32];
	snprintf(a, sizeof a, "%lld", s->last_seq);
	s->catchup_to = s->t->last_seq;
	snprintf(b, sizeof b, "%lld", s->catchup_to);
	gw_params_add(&s->qp, s->t->key);
	gw_params_add(&s->qp, a);
	gw_params_add(&s->qp, b);
	sub_submit(s, s->t->kind->history_sql, catchup_done);
}

static void
check_done(gw_pg_job *job)
{
	sub *s = job->data;
	if (!sub_job_back(s))
		return;
	gw_req *req = s->req;
	int ok = !job->failed && !job->error && job->results[1] && PQntuples(job->results[1]) == 1 &&
	         !strcmp(PQgetvalue(job->results[1], 0, 0), "t");
	if (!s->started)
	{
		if (job->failed || job->error || !ok)
		{
			gw_error e;
			if (!gw_error_from_job(job, s->auth.anonymous, &e))
				gw_error_set(&e, 404, "PGRST205", "Not found", NULL, NULL);
			req->handler = NULL;
			req->on_close = NULL;
			gw_respond_error(req, &e, NULL);
			gw_pool_job_clear(job);
			s->gone = 1; /* not on the dead list: freed here */
			sub_free(s);
			return;
		}
		gw_stream_start(req, 200, "text/event-stream", NULL);
		s->started = 1;
		gw_metrics_sse(1);
		ev_timer_init(&s->heartbeat, on_heartbeat, HEARTBEAT, HEARTBEAT);
		s->heartbeat.data = s;
		ev_timer_start(gw_loop, &s->heartbeat);
		gw_buf head;
		gw_buf_init(&head);
		gw_buf_puts(&head, "retry: 2000\n\n");
		PGresult *r = job->results[1];
		if (s->t->kind->head_event && PQnfields(r) > 2 && !PQgetisnull(r, 0, 2))
		{
			/* the stream's head (a room's info and terms) comes first, without an id */
			gw_buf_printf(&head, "event: %s\ndata: ", s->t->kind->head_event);
			gw_buf_append(&head, PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2));
			gw_buf_puts(&head, "\n\n");
		}
		sub_write(s, head.data, head.len);
		gw_buf_free(&head);
		if (s->gone)
		{
			gw_pool_job_clear(job);
			return;
		}
	}
	else if (!ok)
	{
		const char *st = job->error ? PQresultErrorField(job->error, PG_DIAG_SQLSTATE) : NULL;
		/* a refusal (no row, 42501, PT4xx: the session ended) is expected; the rest is logged */
		if (job->failed || (st && strcmp(st, "42501") && strncmp(st, "PT4", 3)))
			wk_log(WK_WARN, "SSE authorisation of %s %s could not be asked: %s", s->t->kind->name, s->t->key,
			       job->failed ? job->failure : PQresultErrorMessage(job->error));
		gw_pool_job_clear(job);
		sub_end(s, NULL); /* no longer allowed (or cannot be asked): the stream ends */
		return;
	}
	long long max = strtoll(PQgetvalue(job->results[1], 0, 1), NULL, 10);
	if (s->t->kind->visible)
	{
		/* who it is in the room may have changed (a moderator now, or no longer) */
		PGresult *r = job->results[1];
		int ok_viewer = PQnfields(r) > 3 && !PQgetisnull(r, 0, 3) &&
		                (size_t)PQgetlength(r, 0, 3) < sizeof s->viewer;
		snprintf(s->viewer, sizeof s->viewer, "%s", ok_viewer ? PQgetvalue(r, 0, 3) : "");
	}
	gw_pool_job_clear(job);
	topic *t = s->t;
	if (!s->have_start)
	{
		s->last_seq = max;
		s->have_start = 1;
	}
	if (!t->have_seq)
	{
		/* the topic starts here; an event announced while this check ran may be
		 * after its snapshot: read once to be sure */
		t->last_seq = max;
		t->have_seq = 1;
		topic_fetch(t);
	}
	else if (max > t->last_seq)
		topic_fetch(t);
	sub_settle(s);
}

/* Asks the database whether the subscriber may listen; it gets nothing meanwhile. */
static void
sub_check(sub *s)
{
	if (s->busy)
	{
		s->recheck = 1;
		s->state = S_CHECKING;
		return;
	}
	s->state = S_CHECKING;
	gw_params_free(&s->qp);
	gw_params_init(&s->qp);
	gw_params_add(&s->qp, s->t->key);
	sub_submit(s, s->t->kind->authorize_sql, check_done);
}

/* --- the topic's shared read ---------------------------------------------- */

static void
feed_done(gw_pg_job *job)
{
	topic *t = job->data;
	t->fetching = 0;
	if (!t->subs)
	{
		topic_release(t);
		return;
	}
	if (job->failed || job->error)
	{
		/* the next notification, or the listener's resync, reads again */
		wk_log(WK_WARN, "SSE read of %s %s failed: %s", t->kind->name, t->key,
		       job->failed ? job->failure : PQresultErrorMessage(job->error));
		gw_pool_job_clear(job);
		t->dirty = 1; /* read again at the next heartbeat, if no notification comes first */
		return;
	}
	PGresult *r = job->results[0];
	int n = r ? PQntuples(r) : 0;
	if (n)
	{
		/* each event formatted once; a subscriber gets the suffix it lacks */
		long long *seqs = malloc(sizeof *seqs * (size_t)n);
		size_t *offs = malloc(sizeof *offs * (size_t)(n + 1));
		/* events for a part of the subscribers only (audience not NULL) */
		int filtered = 0;
		const gw_hub_kind *kind = t->kind;
		int cols = kind->visible && PQnfields(r) > 4;
		if (!seqs || !offs)
			abort();
		gw_buf text;
		gw_buf_init(&text);
		for (int i = 0; i < n; i++)
		{
			seqs[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
			offs[i] = text.len;
			gw_buf_puts(&text, "id: ");
			gw_buf_put_long(&text, seqs[i]);
			gw_buf_puts(&text, "\nevent: ");
			gw_buf_append(&text, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1));
			gw_buf_puts(&text, "\ndata: ");
			gw_buf_append(&text, PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
			gw_buf_puts(&text, "\n\n");
			if (cols && !PQgetisnull(r, i, 3))
				filtered = 1;
		}
		offs[n] = text.len;
		long long last = seqs[n - 1];
		for (sub *s = t->subs; s; s = s->next)
		{
			if (s->state != S_LIVE || s->gone || s->last_seq >= last)
				continue;
			int i = 0;
			while (i < n && seqs[i] <= s->last_seq)
				i++;
			s->last_seq = last;
			if (!filtered)
			{
				sub_write(s, text.data + offs[i], offs[n] - offs[i]);
				continue;
			}
			/* runs of events this subscriber may see, each written at once */
			while (i < n && !s->gone)
			{
				int j = i;
				while (j < n && (PQgetisnull(r, j, 3) ||
				                 kind->visible(s->viewer, PQgetvalue(r, j, 3),
				                               PQgetisnull(r, j, 4) ? NULL : PQgetvalue(r, j, 4))))
					j++;
				if (j > i)
					sub_write(s, text.data + offs[i], offs[j] - offs[i]);
				i = j + 1; /* j, if any, is not for it */
			}
		}
		if (last > t->last_seq)
			t->last_seq = last;
		gw_buf_free(&text);
		free(seqs);
		free(offs);
	}
	gw_pool_job_clear(job);
	if (n == GW_HUB_BATCH || t->dirty)
	{
		t->dirty = 0;
		topic_fetch(t);
	}
}

static void
topic_fetch(topic *t)
{
	if (!t->have_seq)
		return; /* the first authorisation sets where the topic starts */
	if (t->kind->sleep_sql && t->lock != LOCK_HELD)
	{
		t->dirty = 1; /* read once the lock is held */
		return;
	}
	if (t->fetching)
	{
		t->dirty = 1;
		return;
	}
	t->fetching = 1;
	t->dirty = 0;
	gw_params_free(&t->qp);
	gw_params_init(&t->qp);
	char after[32];
	snprintf(after, sizeof after, "%lld", t->last_seq);
	gw_params_add(&t->qp, t->key);
	gw_params_add(&t->qp, after);
	gw_pool_job_clear(&t->job);
	memset(&t->job, 0, sizeof t->job);
	/* no role switch: the gateway's login role reads through feed_sql's function */
	t->job.nstmts = 1;
	t->job.stmts[0].sql = t->kind->feed_sql;
	t->job.stmts[0].params = &t->qp;
	t->job.read_only = 1;
	t->job.done = feed_done;
	t->job.data = t;
	gw_pool_submit(&t->job);
}

/* --- the topic's sleep lock -------------------------------------------------- */

/* Finds the topic of a lock command's key (the command carries no kind: keys are
 * uuids, and a topic being locked is never freed, so the one asking is found). */
static topic *
topic_of_key(const char *key)
{
	for (topic *t = buckets[topic_hash_key(key)]; t; t = t->hnext)
		if (t->kind->sleep_sql && !strcasecmp(t->key, key) && t->lock == LOCK_ASKED)
			return t;
	return NULL;
}

static void
lock_done(const char *key, int ok)
{
	topic *t = topic_of_key(key);
	if (!t)
		return;
	t->lock = ok ? LOCK_HELD : LOCK_NONE; /* not taken: asked again at a heartbeat */
	if (!t->subs)
	{
		topic_release(t);
		return;
	}
	/* what was committed without a notification is read now */
	if (ok && t->have_seq)
		topic_fetch(t);
}

static void
topic_lock(topic *t)
{
	if (!t->kind->sleep_sql || t->lock != LOCK_NONE)
		return;
	t->lock = LOCK_ASKED;
	gw_listener_command(t->kind->sleep_sql, t->key, lock_done);
}

void
gw_hub_locks_lost(void)
{
	for (int b = 0; b < TOPIC_BUCKETS; b++)
		for (topic *t = buckets[b]; t; t = t->hnext)
			t->lock = LOCK_NONE;
	/* topics that waited only for their lock to be released are freed */
	for (int b = 0; b < TOPIC_BUCKETS; b++)
		for (topic *t = buckets[b], *next; t; t = next)
		{
			next = t->hnext;
			topic_release(t);
		}
}

/* --- entry points ------------------------------------------------------------ */

void
gw_hub_subscribe(gw_req *req, const gw_hub_kind *kind, const char *key)
{
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
	const char *last = gw_req_header(req, "last-event-id");
	if (last && *last)
	{
		char *end;
		errno = 0;
		long long v = strtoll(last, &end, 10);
		if (*end || v < 0 || errno == ERANGE || !(*last >= '0' && *last <= '9'))
		{
			free(s);
			gw_respond_simple_error(req, 400, "PGRST100",
			                        "Last-Event-ID must be an event id (a seq number)");
			return;
		}
		s->last_seq = v;
		s->have_start = 1;
	}
	json_t *claims = json_loads(s->auth.claims_json, 0, NULL);
	const char *who = claims ? json_string_value(json_object_get(claims, "sub")) : NULL;
	if (!who && claims)
		who = json_string_value(json_object_get(claims, "guest")); /* an anonymous viewer */
	snprintf(s->user, sizeof s->user, "%s", who ? who : "");
	json_decref(claims);
	s->req = req;
	gw_buf_init(&s->settings);
	gw_params_init(&s->sp);
	gw_params_init(&s->qp);
	/* the auth strings live in the request's arena, which outlives the stream */
	gw_auth_settings_sql(req, &s->auth, &s->settings, &s->sp);
	topic *t = topic_get(kind, key);
	s->t = t;
	s->next = t->subs;
	if (t->subs)
		t->subs->prev = s;
	t->subs = s;
	t->nsubs++;
	req->handler = s;
	req->on_close = on_close;
	sub_check(s);
}

void
gw_hub_notify(const gw_hub_kind *kind, const char *key, long long seq)
{
	topic *t = topic_find(kind, key);
	if (!t || (seq >= 0 && t->have_seq && seq <= t->last_seq))
		return;
	topic_fetch(t);
}

void
gw_hub_reauthorize(const gw_hub_kind *kind, const char *key, const char *user)
{
	topic *t = topic_find(kind, key);
	if (!t)
		return;
	for (sub *s = t->subs; s; s = s->next)
		if (!s->gone && s->started && (!user || !*user || !strcasecmp(user, s->user)))
			sub_check(s);
}

void
gw_hub_reauthorize_user(const gw_hub_kind *kind, const char *user)
{
	if (!user || !*user)
		return;
	for (int b = 0; b < TOPIC_BUCKETS; b++)
		for (topic *t = buckets[b]; t; t = t->hnext)
			if (t->kind == kind)
				gw_hub_reauthorize(kind, t->key, user);
}

int
gw_hub_key_valid(const char *u)
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

int
gw_hub_split_payload(const char *payload, char key[40], const char **rest)
{
	const char *colon = strchr(payload, ':');
	size_t n = colon ? (size_t)(colon - payload) : strlen(payload);
	if (n >= 40)
		return -1;
	memcpy(key, payload, n);
	key[n] = '\0';
	*rest = colon ? colon + 1 : NULL;
	return 0;
}

void
gw_hub_notify_payload(const gw_hub_kind *kind, const char *payload)
{
	char key[40];
	const char *seq;
	if (!gw_hub_split_payload(payload, key, &seq))
		gw_hub_notify(kind, key, seq ? strtoll(seq, NULL, 10) : -1);
}

void
gw_hub_resync_all(void)
{
	for (int b = 0; b < TOPIC_BUCKETS; b++)
		for (topic *t = buckets[b]; t; t = t->hnext)
		{
			topic_lock(t); /* it reads once the lock is held again */
			topic_fetch(t);
		}
}
