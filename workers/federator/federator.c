/*
 * federator.c — pgpod's federation daemon: claims deliveries (signed by PostgreSQL at
 * claim time), POSTs them concurrently with libcurl multi (bounded in total and per
 * friend), and reports outcomes back in batches; runs fetch jobs (signed GETs:
 * make_friends asks each pod for its friend list, verify_key a pod for its key;
 * feed_poll a subscribed feed, conditionally; pubsub_sync a page of a friend's node).
 * The database owns every job: this process only holds leases, so killing it at any
 * moment loses nothing (leases expire, jobs are claimed again).
 * Single-threaded on one libev loop; one libpq connection (wk_db) for LISTEN and queries.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "worker.h"

/* --- settings (environment) ------------------------------------------------------- */
typedef struct settings
{
	long max_total;      /* transfers in flight or waiting locally */
	long max_per_friend; /* transfers in flight to one friend */
	long batch;          /* jobs per claim */
	long timeout_ms;     /* one HTTP request */
	long poll_ms;        /* timer wake-up: delayed retries, expired leases */
	long grace_ms;       /* on SIGTERM, how long in-flight requests may finish */
	long prune_ms;       /* how often finished jobs are pruned */
	long report_ms;      /* outcomes wait at most this long to be reported together */
	long connections;    /* database connections (signing runs in their backends) */
} settings;

/* --- one HTTP transfer ------------------------------------------------------------- */
typedef struct friend friend;
typedef struct fetch_job fetch_job;

typedef struct transfer
{
	struct transfer *next;        /* in its friend's waiting queue */
	struct transfer *flight_prev; /* in the federator's in-flight list */
	struct transfer *flight_next;
	struct federator *fed;
	long long job_id; /* the delivery job; 0 for a friend-list fetch */
	friend *friend;
	fetch_job *fetch; /* set for a fetch job's GET */
	int fetch_index;
	bool refused; /* the socket opener refused its address (private, not allowed) */
	char *url;
	char *body;
	struct curl_slist *headers;
	CURL *easy;
	wk_buf response; /* the first bytes of the answer, for errors and lists */
	wk_buf validators; /* a feed poll's ETag and Last-Modified header lines */
} transfer;

/* A target pod: its waiting transfers and how many are in flight. */
struct friend
{
	friend *next;
	char *target;
	int in_flight;
	transfer *queue_head;
	transfer *queue_tail;
};

/* A fetch job (make_friends or verify_key): the pods asked, their answers (NULL = no
 * usable answer). */
struct fetch_job
{
	long long job_id;
	char kind[32];
	int count;
	int pending;
	char **urls;
	char **answers;
	long *statuses; /* each GET's HTTP status; 0: no answer; -1: refused here */
};

/* Outcomes waiting to be reported: done ids, failed ids with their errors, released ids. */
typedef struct outcomes
{
	long long *done;
	size_t ndone, cap_done;
	long long *failed;
	char **errors;
	long *statuses;    /* HTTP status of each failure; 0: no answer; -1: refused here */
	long *retry_after; /* its Retry-After in seconds; -1: none */
	size_t nfailed, cap_failed;
	long long *released;
	size_t nreleased, cap_released;
} outcomes;

typedef struct federator
{
	struct ev_loop *loop;
	settings cfg;
	char worker_id[128];
	bool reclaim_due;   /* a stable identity: end its previous process's leases first */
	bool allow_private; /* PGPOD_FEDERATOR_ALLOW_PRIVATE: loopback/private targets allowed */
	wk_db *dbs[8]; /* dbs[0] listens; every one claims and reports */
	int ndb;
	long claiming;      /* deliveries asked for by claims in flight */
	long claim_size[8]; /* what the claim in flight on dbs[i] asked for */
	/* Short claims in a row on dbs[i] (deliveries, fetch jobs). The federator sleeps
	 * only after two: the second one took the kind's sleep lock before it looked, so
	 * every job inserted since notifies (pod.job_claim, README "Queue wake-ups"). */
	int short_claims[8];
	int short_fetches[8];
	int reports_in_flight;
	bool finishing; /* a fetches_finish is in flight */
	bool claiming_fetch;
	CURLM *multi;
	ev_timer curl_timer;
	ev_timer poll_timer;
	ev_timer prune_timer;
	ev_timer report_timer;
	bool report_due;
	bool more_waiting; /* the last claim was full: more jobs may be ready */
	ev_idle kick; /* runs the scheduler once the current callback returns */
	friend *friends;
	transfer *flight; /* transfers handed to curl */
	bool grace_over;
	long held; /* deliveries claimed and not yet reported */
	long in_flight;
	bool want_deliveries;
	bool want_fetches;
	bool prune_due;
	bool ready_sent;
	fetch_job *fetch_done; /* a fetch job whose GETs all ended */
	fetch_job *fetch_running;
	outcomes out;
	unsigned long long delivered, failed_count;
} federator;

static void schedule(federator *fed);
static void pump(federator *fed);

static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
	return p;
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
	return p;
}

static void
grow(void **array, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return;
	*cap = *cap ? *cap * 2 : 64;
	if (*cap < need)
		*cap = need;
	*array = realloc(*array, *cap * elem);
	if (*array == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
}

static void
outcome_done(outcomes *o, long long id)
{
	grow((void **)&o->done, &o->cap_done, o->ndone + 1, sizeof(*o->done));
	o->done[o->ndone++] = id;
}

static void
outcome_failed(outcomes *o, long long id, const char *error, long status, long retry_after)
{
	size_t cap = o->cap_failed, cap2 = o->cap_failed, cap3 = o->cap_failed;

	grow((void **)&o->failed, &o->cap_failed, o->nfailed + 1, sizeof(*o->failed));
	grow((void **)&o->errors, &cap, o->nfailed + 1, sizeof(*o->errors));
	grow((void **)&o->statuses, &cap2, o->nfailed + 1, sizeof(*o->statuses));
	grow((void **)&o->retry_after, &cap3, o->nfailed + 1, sizeof(*o->retry_after));
	o->failed[o->nfailed] = id;
	o->statuses[o->nfailed] = status;
	o->retry_after[o->nfailed] = retry_after;
	o->errors[o->nfailed++] = xstrdup(error);
}

static void
outcome_released(outcomes *o, long long id)
{
	grow((void **)&o->released, &o->cap_released, o->nreleased + 1, sizeof(*o->released));
	o->released[o->nreleased++] = id;
}

static bool
outcomes_empty(const outcomes *o)
{
	return o->ndone == 0 && o->nfailed == 0 && o->nreleased == 0;
}

static void
outcomes_clear(outcomes *o)
{
	for (size_t i = 0; i < o->nfailed; i++)
		free(o->errors[i]);
	o->ndone = o->nfailed = o->nreleased = 0;
}

/* Moves a batch whose report did not complete back into `out`. */
static void
outcomes_requeue(federator *fed, outcomes *s)
{

	for (size_t i = 0; i < s->ndone; i++)
		outcome_done(&fed->out, s->done[i]);
	for (size_t i = 0; i < s->nfailed; i++)
		outcome_failed(&fed->out, s->failed[i], s->errors[i], s->statuses[i], s->retry_after[i]);
	for (size_t i = 0; i < s->nreleased; i++)
		outcome_released(&fed->out, s->released[i]);
	outcomes_clear(s);
}

static void
ids_literal(wk_buf *b, const long long *ids, size_t n)
{
	char num[32];

	wk_array_begin(b);
	for (size_t i = 0; i < n; i++)
	{
		snprintf(num, sizeof(num), "%lld", ids[i]);
		wk_array_add(b, num);
	}
	wk_array_end(b);
}

/* --- friends ------------------------------------------------------------------------ */

static friend *
friend_get(federator *fed, const char *target)
{
	friend *f;

	for (f = fed->friends; f; f = f->next)
		if (strcmp(f->target, target) == 0)
			return f;
	f = xcalloc(1, sizeof(*f));
	f->target = xstrdup(target);
	f->next = fed->friends;
	fed->friends = f;
	return f;
}

/* --- transfers ---------------------------------------------------------------------- */

static size_t
transfer_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	transfer *t = userp;
	size_t n = size * nmemb;
	size_t limit = t->fetch ? 1024 * 1024 : 512;

	if (t->response.len < limit)
		wk_buf_add(&t->response, data, n < limit - t->response.len ? n : limit - t->response.len);
	return n;
}

static void
transfer_free(transfer *t)
{
	if (t->easy)
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	free(t->url);
	free(t->body);
	wk_buf_free(&t->response);
	wk_buf_free(&t->validators);
	free(t);
}

/* Builds a transfer: a signed POST (delivery) or a GET (friend list). */
static transfer *
transfer_new(federator *fed, long long job_id, const char *url, const char *header_lines,
             const char *body)
{
	transfer *t = xcalloc(1, sizeof(*t));

	t->fed = fed;
	t->job_id = job_id;
	t->url = xstrdup(url);
	if (body)
		t->body = xstrdup(body);
	if (header_lines)
	{
		char *copy = xstrdup(header_lines);
		char *save = NULL;

		for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			t->headers = curl_slist_append(t->headers, line);
		free(copy);
	}
	t->headers = curl_slist_append(t->headers, "Expect:"); /* no 100-continue round trip */
	if (!header_lines || (strncasecmp(header_lines, "accept:", 7) != 0 &&
	                      strcasestr(header_lines, "\naccept:") == NULL))
		t->headers = curl_slist_append(t->headers, "Accept: application/json");
	return t;
}

/* --- feed polls: the validators of the answer ------------------------------------------ */

/* Keeps the ETag and Last-Modified lines of a feed poll's answer (the next poll is
 * conditional on them). */
static size_t
feed_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	transfer *t = userp;
	size_t n = size * nmemb;

	if ((n > 5 && strncasecmp(data, "ETag:", 5) == 0) ||
	    (n > 14 && strncasecmp(data, "Last-Modified:", 14) == 0))
	{
		size_t len = n;

		while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n'))
			len--;
		if (len < 1000)
		{
			wk_buf_add(&t->validators, data, len);
			wk_buf_add(&t->validators, "\n", 1);
		}
	}
	return n;
}

/* A feed poll's answer for SQL: "HTTP <status>", the validator lines, an empty line,
 * the body (or, when the transfer failed, "HTTP 0" and curl's error). */
static char *
feed_answer(transfer *t, long status, CURLcode rc)
{
	wk_buf a = {0};
	char *r;

	if (rc != CURLE_OK)
		wk_buf_printf(&a, "HTTP 0\n\n%s", curl_easy_strerror(rc));
	else
	{
		wk_buf_printf(&a, "HTTP %ld\n", status);
		if (t->validators.len)
			wk_buf_add(&a, t->validators.data, t->validators.len);
		wk_buf_add(&a, "\n", 1);
		if (t->response.len)
			wk_buf_add(&a, t->response.data, t->response.len);
	}
	r = xstrdup(a.data ? a.data : "");
	wk_buf_free(&a);
	return r;
}

/* Is an address one a pod must not be made to reach for a stranger: loopback,
 * link-local, private (RFC 1918, ULA), shared (RFC 6598), unspecified, multicast or
 * broadcast? IPv4-mapped IPv6 addresses are judged as IPv4. */
static bool
address_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		const unsigned char *a = s6->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(a, mapped, 12) == 0)
		{
			struct sockaddr_in s4 = {.sin_family = AF_INET};

			memcpy(&s4.sin_addr, a + 12, 4);
			return address_private((const struct sockaddr *)&s4);
		}
		return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr) ||
		       IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr) || IN6_IS_ADDR_SITELOCAL(&s6->sin6_addr) ||
		       IN6_IS_ADDR_MULTICAST(&s6->sin6_addr) || (a[0] & 0xfe) == 0xfc;
	}
	if (sa->sa_family == AF_INET)
	{
		uint32_t v = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);

		return (v >> 24) == 0 || (v >> 24) == 10 || (v >> 24) == 127 || (v >> 16) == 0xa9fe ||
		       (v >> 20) == 0xac1 || (v >> 16) == 0xc0a8 || (v >> 22) == (0x64400000u >> 22) ||
		       (v >> 28) >= 0xe;
	}
	return true; /* not an internet address */
}

/* curl's socket opener: refuses private targets (checked on the address curl is about
 * to connect to, after DNS: a name cannot smuggle one in) unless allowed. */
static curl_socket_t
open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	transfer *t = clientp;

	(void)purpose;
	if (!t->fed->allow_private && address_private(&addr->addr))
	{
		wk_log(WK_WARN, "%s: refusing to connect to a loopback/link-local/private address "
		                "(PGPOD_FEDERATOR_ALLOW_PRIVATE=1 allows it)", t->url);
		t->refused = true;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

/* Hands a transfer to curl multi. */
static void
transfer_start(federator *fed, transfer *t)
{
	CURLMcode rc;

	t->easy = curl_easy_init();
	if (t->easy == NULL)
	{
		wk_log(WK_ERROR, "curl_easy_init failed");
		abort();
	}
	curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, transfer_write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, fed->cfg.timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, fed->cfg.timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "pgpod-federator/0.1");
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	if (t->fetch && strcmp(t->fetch->kind, "feed_poll") == 0)
	{
		curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, feed_header_cb);
		curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
	}
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer, not a hop */
	if (t->body)
	{
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(t->body));
	}
	rc = curl_multi_add_handle(fed->multi, t->easy);
	if (rc != CURLM_OK)
	{
		wk_log(WK_ERROR, "curl_multi_add_handle: %s", curl_multi_strerror(rc));
		abort();
	}
	fed->in_flight++;
	if (t->friend)
		t->friend->in_flight++;
	t->flight_next = fed->flight;
	if (fed->flight)
		fed->flight->flight_prev = t;
	fed->flight = t;
}

/* Takes a transfer out of curl and of the in-flight list. */
static void
transfer_unlink(federator *fed, transfer *t)
{
	curl_multi_remove_handle(fed->multi, t->easy);
	fed->in_flight--;
	if (t->friend)
		t->friend->in_flight--;
	if (t->flight_prev)
		t->flight_prev->flight_next = t->flight_next;
	else
		fed->flight = t->flight_next;
	if (t->flight_next)
		t->flight_next->flight_prev = t->flight_prev;
	t->flight_prev = t->flight_next = NULL;
}

/* Starts waiting transfers while the per-friend and total bounds allow. */
static void
pump(federator *fed)
{
	if (wk_daemon_stopping())
		return;
	for (friend *f = fed->friends; f; f = f->next)
		while (f->queue_head && f->in_flight < fed->cfg.max_per_friend &&
		       fed->in_flight < fed->cfg.max_total)
		{
			transfer *t = f->queue_head;

			f->queue_head = t->next;
			if (f->queue_head == NULL)
				f->queue_tail = NULL;
			t->next = NULL;
			transfer_start(fed, t);
		}
}

/* A fetch job's GET ended: keep any 2xx body (SQL decides what it is worth). */
static void
fetch_finished(federator *fed, transfer *t, long status, CURLcode rc)
{
	fetch_job *job = t->fetch;
	const char *body = t->response.data ? t->response.data : "";

	while (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')
		body++;
	job->statuses[t->fetch_index] = t->refused ? -1 : rc == CURLE_OK ? status : 0;
	if (strcmp(job->kind, "feed_poll") == 0)
		job->answers[t->fetch_index] = feed_answer(t, status, rc); /* 304 and errors count too */
	else if (rc == CURLE_OK && status / 100 == 2 && *body != '\0')
		job->answers[t->fetch_index] = xstrdup(body);
	else
		wk_log(WK_WARN, "%s job %lld: %s answered nothing usable (%s, HTTP %ld)", job->kind,
		       job->job_id, t->url,
		       rc == CURLE_OK ? "ok" : curl_easy_strerror(rc), status);
	if (--job->pending == 0)
	{
		fed->fetch_running = NULL;
		fed->fetch_done = job;
	}
}

/* Collects finished transfers from curl and records their outcomes. */
static void
check_multi_info(federator *fed)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(fed->multi, &left)) != NULL)
	{
		transfer *t;
		long status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		transfer_unlink(fed, t);
		if (t->fetch)
			fetch_finished(fed, t, status, msg->data.result);
		else if (msg->data.result == CURLE_OK && status / 100 == 2)
		{
			outcome_done(&fed->out, t->job_id);
			fed->delivered++;
		}
		else
		{
			wk_buf err = {0};
			curl_off_t retry_after = -1;

			if (msg->data.result == CURLE_OK &&
			    curl_easy_getinfo(msg->easy_handle, CURLINFO_RETRY_AFTER, &retry_after) != CURLE_OK)
				retry_after = -1;
			if (retry_after == 0 && msg->data.result == CURLE_OK)
				retry_after = -1; /* curl's 0: no Retry-After (or "now") */
			if (t->refused)
				wk_buf_printf(&err, "refused: a loopback/link-local/private address "
				                    "(PGPOD_FEDERATOR_ALLOW_PRIVATE)");
			else if (msg->data.result != CURLE_OK)
				wk_buf_printf(&err, "%s", curl_easy_strerror(msg->data.result));
			else
				wk_buf_printf(&err, "HTTP %ld: %.300s", status,
				              t->response.data ? t->response.data : "");
			wk_log(WK_INFO, "delivery %lld to %s failed: %s", t->job_id, t->url, err.data);
			outcome_failed(&fed->out, t->job_id, err.data,
			               t->refused ? -1 : msg->data.result == CURLE_OK ? status : 0,
			               (long)retry_after);
			wk_buf_free(&err);
			fed->failed_count++;
		}
		transfer_free(t);
	}
	pump(fed);
	schedule(fed);
}

/* --- curl multi on libev (curl's evhiperfifo pattern) ------------------------------ */

typedef struct curl_socket_watch
{
	ev_io io;
	federator *fed;
} curl_socket_watch;

static void
curl_event_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	/* The watch may be freed inside socket_action (CURL_POLL_REMOVE): keep fed. */
	federator *fed = ((curl_socket_watch *)w)->fed;
	int action =
	    (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	(void)loop;
	curl_multi_socket_action(fed->multi, w->fd, action, &running);
	check_multi_info(fed);
}

/* CURLMOPT_SOCKETFUNCTION: watch (or stop watching) one of curl's sockets. */
static int
curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	federator *fed = userp;
	curl_socket_watch *sw = socketp;

	(void)easy;
	if (what == CURL_POLL_REMOVE)
	{
		if (sw)
		{
			ev_io_stop(fed->loop, &sw->io);
			free(sw);
			curl_multi_assign(fed->multi, s, NULL);
		}
		return 0;
	}
	if (sw == NULL)
	{
		sw = xcalloc(1, sizeof(*sw));
		sw->fed = fed;
		curl_multi_assign(fed->multi, s, sw);
	}
	else
		ev_io_stop(fed->loop, &sw->io);
	ev_io_init(&sw->io, curl_event_cb, s,
	           (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0));
	ev_io_start(fed->loop, &sw->io);
	return 0;
}

static void
curl_timer_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
	federator *fed = w->data;
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(fed->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(fed);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back in timeout_ms. */
static int
curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	federator *fed = userp;

	(void)multi;
	ev_timer_stop(fed->loop, &fed->curl_timer);
	if (timeout_ms >= 0)
	{
		ev_timer_set(&fed->curl_timer, timeout_ms / 1000.0, 0.);
		ev_timer_start(fed->loop, &fed->curl_timer);
	}
	return 0;
}

/* --- database work ------------------------------------------------------------------ */

static const char *const CLAIM_SQL = "SELECT job_id, target, url, array_to_string(headers, "
                                     "E'\\n'), body, $2 FROM pod.deliveries_claim($1, $2::integer)";
/* Failures carry their HTTP status and Retry-After: SQL tells a permanent refusal
 * (4xx: dead at once) from a transient one (pod.deliveries_fail). */
static const char *const REPORT_SQL =
    "SELECT pod.job_complete($1::bigint[], $4), "
    "pod.deliveries_fail($2::bigint[], $3::text[], $4, $6::integer[], $7::integer[]), "
    "pod.job_release($5::bigint[], $4)";
/* A worker whose identity survives restarts ends its previous process's leases. */
static const char *const RECLAIM_SQL = "SELECT pod.job_reclaim($1)";
/* Fetch jobs (make_friends: friend lists; verify_key: a pod's identity document):
 * one job at a time, one signed GET per pod, every answer handed back to SQL. */
static const char *const CLAIM_FETCH_SQL =
    "SELECT job_id, kind, pod_url, url, array_to_string(headers, E'\\n') FROM pod.fetch_jobs_claim($1)";
static const char *const FINISH_FETCH_SQL =
    "SELECT pod.fetch_jobs_finish($1::bigint, $2, $3::text[], $4::text[], $5::integer[])";
/* Pruning, and fetching again the keys of friends whose requests stopped verifying. */
static const char *const PRUNE_SQL = "SELECT pod.jobs_prune(), pod.inbox_prune(), pod.friend_keys_refresh()";

static void
result_error(const char *what, PGresult *res)
{
	wk_log(WK_ERROR, "%s failed: %s", what, res ? PQresultErrorMessage(res) : "connection lost");
}

/* One report in flight: its batch, kept until the server has applied it. */
typedef struct report
{
	federator *fed;
	outcomes batch;
} report;

static void
outcomes_free(outcomes *o)
{
	outcomes_clear(o);
	free(o->done);
	free(o->failed);
	free(o->errors);
	free(o->statuses);
	free(o->retry_after);
	free(o->released);
}

static void
report_done(wk_db *db, PGresult *res, void *arg)
{
	report *r = arg;
	federator *fed = r->fed;
	outcomes *b = &r->batch;

	(void)db;
	fed->reports_in_flight--;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		wk_log(WK_DEBUG, "reported %zu done, %zu failed, %zu released (%s/%s/%s applied)", b->ndone,
		       b->nfailed, b->nreleased, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
		       PQgetvalue(res, 0, 2));
		fed->held -= (long)(b->ndone + b->nfailed + b->nreleased);
		if (fed->more_waiting)
			fed->want_deliveries = true;
	}
	else
	{
		result_error("reporting outcomes", res);
		if (res == NULL)
			outcomes_requeue(fed, b); /* not applied: send again once reconnected */
		else                          /* refused (should not happen): the leases expire */
			fed->held -= (long)(b->ndone + b->nfailed + b->nreleased);
	}
	outcomes_free(b);
	free(r);
}

static bool
send_report(federator *fed, wk_db *db)
{
	wk_buf done = {0}, failed = {0}, errors = {0}, released = {0}, statuses = {0}, retry = {0};
	const char *params[7];
	report *r = xcalloc(1, sizeof(*r));
	bool sent;

	r->fed = fed;
	r->batch = fed->out;
	memset(&fed->out, 0, sizeof(fed->out));
	ids_literal(&done, r->batch.done, r->batch.ndone);
	ids_literal(&failed, r->batch.failed, r->batch.nfailed);
	wk_array_begin(&errors);
	for (size_t i = 0; i < r->batch.nfailed; i++)
		wk_array_add(&errors, r->batch.errors[i]);
	wk_array_end(&errors);
	ids_literal(&released, r->batch.released, r->batch.nreleased);
	wk_array_begin(&statuses);
	wk_array_begin(&retry);
	for (size_t i = 0; i < r->batch.nfailed; i++)
	{
		char num[32];

		snprintf(num, sizeof(num), "%ld", r->batch.statuses[i]);
		wk_array_add(&statuses, num);
		snprintf(num, sizeof(num), "%ld", r->batch.retry_after[i]);
		wk_array_add(&retry, r->batch.retry_after[i] >= 0 ? num : NULL);
	}
	wk_array_end(&statuses);
	wk_array_end(&retry);
	params[0] = done.data;
	params[1] = failed.data;
	params[2] = errors.data;
	params[3] = fed->worker_id;
	params[4] = released.data;
	params[5] = statuses.data;
	params[6] = retry.data;
	sent = wk_db_query(db, REPORT_SQL, 7, params, report_done, r);
	wk_buf_free(&statuses);
	wk_buf_free(&retry);
	wk_buf_free(&done);
	wk_buf_free(&failed);
	wk_buf_free(&errors);
	wk_buf_free(&released);
	if (sent)
		fed->reports_in_flight++;
	else
	{
		outcomes_requeue(fed, &r->batch);
		outcomes_free(&r->batch);
		free(r);
	}
	return sent;
}

static int
db_index(federator *fed, wk_db *db)
{
	for (int i = 0; i < fed->ndb; i++)
		if (fed->dbs[i] == db)
			return i;
	abort();
}

static void release_waiting(federator *fed);

static void
claim_done(wk_db *db, PGresult *res, void *arg)
{
	federator *fed = arg;
	int rows, i = db_index(fed, db);
	bool full;

	fed->claiming -= fed->claim_size[i];
	fed->claim_size[i] = 0;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		result_error("claiming deliveries", res);
		return;
	}
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++)
	{
		transfer *t =
		    transfer_new(fed, strtoll(PQgetvalue(res, i, 0), NULL, 10), PQgetvalue(res, i, 2),
		                 PQgetvalue(res, i, 3), PQgetvalue(res, i, 4));
		friend *f = friend_get(fed, PQgetvalue(res, i, 1));

		t->friend = f;
		if (f->queue_tail)
			f->queue_tail->next = t;
		else
			f->queue_head = t;
		f->queue_tail = t;
		fed->held++;
	}
	/* A full batch means there may be more; two short ones in a row on a connection
	 * mean the queue is drained and inserts will notify. */
	full = rows > 0 && rows == atoi(PQgetvalue(res, 0, 5));
	fed->short_claims[i] = full ? 0 : fed->short_claims[i] + 1;
	fed->more_waiting = full || fed->short_claims[i] < 2;
	fed->want_deliveries = fed->more_waiting && fed->held < fed->cfg.max_total;
	if (rows > 0)
		wk_log(WK_DEBUG, "claimed %d deliveries", rows);
	if (wk_daemon_stopping())
	{
		/* The claim was on its way when SIGTERM came: give the jobs straight back. */
		release_waiting(fed);
		schedule(fed);
		return;
	}
	pump(fed);
}

static void
claim_fetch_done(wk_db *db, PGresult *res, void *arg)
{
	federator *fed = arg;
	int rows;
	fetch_job *job;

	int i = db_index(fed, db);

	fed->claiming_fetch = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		result_error("claiming a fetch job", res);
		return;
	}
	rows = PQntuples(res);
	if (rows == 0)
	{
		/* Asleep after the second empty claim in a row (see short_claims). */
		fed->want_fetches = ++fed->short_fetches[i] < 2;
		if (fed->want_fetches)
			schedule(fed);
		return;
	}
	fed->short_fetches[i] = 0;
	fed->want_fetches = true; /* look for the next one once this one is done */
	job = xcalloc(1, sizeof(*job));
	job->job_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(job->kind, sizeof(job->kind), "%s", PQgetvalue(res, 0, 1));
	job->count = job->pending = rows;
	job->urls = xcalloc((size_t)rows, sizeof(char *));
	job->answers = xcalloc((size_t)rows, sizeof(char *));
	job->statuses = xcalloc((size_t)rows, sizeof(long));
	fed->fetch_running = job;
	wk_log(WK_INFO, "%s job %lld: asking %d pods", job->kind, job->job_id, rows);
	for (int i = 0; i < rows; i++)
	{
		transfer *t = transfer_new(fed, 0, PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), NULL);

		job->urls[i] = xstrdup(PQgetvalue(res, i, 2));
		t->fetch = job;
		t->fetch_index = i;
		transfer_start(fed, t);
	}
}

static void
fetch_job_free(fetch_job *job)
{
	for (int i = 0; i < job->count; i++)
	{
		free(job->urls[i]);
		free(job->answers[i]);
	}
	free(job->urls);
	free(job->answers);
	free(job->statuses);
	free(job);
}

static void
finish_fetch_done(wk_db *db, PGresult *res, void *arg)
{
	federator *fed = arg;
	fetch_job *job = fed->fetch_done;

	(void)db;
	fed->finishing = false;
	if (res == NULL)
		return; /* retried after reconnecting */
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		wk_log(WK_INFO, "%s job %lld: %s", job->kind, job->job_id, PQgetvalue(res, 0, 0));
	else
	{
		result_error("fetches_finish", res);
		outcome_failed(&fed->out, job->job_id, PQresultErrorMessage(res), 0, -1);
		fed->held++;
	}
	fed->fetch_done = NULL;
	fetch_job_free(job);
}

static bool
send_finish_fetch(federator *fed, wk_db *db)
{
	fetch_job *job = fed->fetch_done;
	wk_buf urls = {0}, answers = {0}, statuses = {0};
	char id[32];
	const char *params[5];
	bool sent;

	snprintf(id, sizeof(id), "%lld", job->job_id);
	wk_array_begin(&urls);
	wk_array_begin(&answers);
	wk_array_begin(&statuses);
	for (int i = 0; i < job->count; i++)
	{
		char num[32];

		wk_array_add(&urls, job->urls[i]);
		wk_array_add(&answers, job->answers[i]);
		snprintf(num, sizeof(num), "%ld", job->statuses[i]);
		wk_array_add(&statuses, num);
	}
	wk_array_end(&urls);
	wk_array_end(&answers);
	wk_array_end(&statuses);
	params[0] = id;
	params[1] = fed->worker_id;
	params[2] = urls.data;
	params[3] = answers.data;
	params[4] = statuses.data;
	sent = wk_db_query(db, FINISH_FETCH_SQL, 5, params, finish_fetch_done, fed);
	fed->finishing = sent;
	wk_buf_free(&urls);
	wk_buf_free(&answers);
	wk_buf_free(&statuses);
	return sent;
}

static void
prune_done(wk_db *db, PGresult *res, void *arg)
{
	(void)db;
	(void)arg;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
		wk_log(WK_DEBUG, "pruned %s jobs and %s inbox records; %s keys to fetch again",
		       PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	else
		result_error("pruning", res);
}

/* Releases the deliveries that were claimed but never started (on stop). */
static void
release_waiting(federator *fed)
{
	for (friend *f = fed->friends; f; f = f->next)
		while (f->queue_head)
		{
			transfer *t = f->queue_head;

			f->queue_head = t->next;
			outcome_released(&fed->out, t->job_id);
			transfer_free(t);
		}
	for (friend *f = fed->friends; f; f = f->next)
		f->queue_tail = NULL;
}

/* Stops when nothing is in flight and everything has been reported. */
static void
maybe_exit(federator *fed)
{
	bool quiet = true;

	for (int i = 0; i < fed->ndb; i++)
		quiet &= wk_db_idle(fed->dbs[i]) || !wk_db_connected(fed->dbs[i]);
	if (wk_daemon_stopping() && fed->in_flight == 0 && outcomes_empty(&fed->out) &&
	    fed->reports_in_flight == 0 && fed->fetch_done == NULL && quiet)
	{
		wk_log(WK_INFO, "stopped: %llu delivered, %llu failed attempts", fed->delivered,
		       fed->failed_count);
		wk_daemon_drained();
	}
}

/* The one place that decides what the database connection does next. */
static void
schedule(federator *fed)
{
	if (!ev_is_active(&fed->kick))
		ev_idle_start(fed->loop, &fed->kick);
}

/* Sends a claim of up to `room` deliveries on db. */
static void
send_claim(federator *fed, wk_db *db, long room)
{
	char n[32];
	const char *params[2];

	snprintf(n, sizeof(n), "%ld", room);
	params[0] = fed->worker_id;
	params[1] = n;
	/* When the last claim came back full, more jobs are likely ready: another idle
	 * connection claims too (SKIP LOCKED gives it other jobs), so that two backends
	 * sign on two cores at once. Otherwise one claim at a time. */
	fed->want_deliveries = fed->more_waiting;
	if (wk_db_query(db, CLAIM_SQL, 2, params, claim_done, fed))
		for (int i = 0; i < fed->ndb; i++)
			if (fed->dbs[i] == db)
			{
				fed->claim_size[i] = room;
				fed->claiming += room;
			}
}

/* Gives each idle connection its next query: reports first (they free room and
 * move scores), then fetch job results, pruning, claims. */
static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	federator *fed = w->data;
	const char *params[1];

	(void)revents;
	ev_idle_stop(loop, w);
	for (int i = 0; i < fed->ndb; i++)
	{
		wk_db *db = fed->dbs[i];
		long room = fed->cfg.max_total - fed->held - fed->claiming;

		if (!wk_db_idle(db))
			continue;
		if (room > fed->cfg.batch)
			room = fed->cfg.batch;
		if (!outcomes_empty(&fed->out) &&
		    (fed->report_due || wk_daemon_stopping() || !fed->more_waiting ||
		     fed->out.ndone + fed->out.nfailed >= (size_t)fed->cfg.batch / 2))
		{
			fed->report_due = false;
			ev_timer_stop(loop, &fed->report_timer);
			send_report(fed, db);
		}
		else if (fed->fetch_done && !fed->finishing)
			send_finish_fetch(fed, db);
		else if (wk_daemon_stopping())
			continue;
		else if (fed->prune_due)
		{
			fed->prune_due = false;
			wk_db_query(db, PRUNE_SQL, 0, NULL, prune_done, fed);
		}
		else if (fed->want_deliveries && room >= fed->cfg.batch / 4 + 1)
			send_claim(fed, db, room);
		else if (fed->want_fetches && fed->fetch_running == NULL && fed->fetch_done == NULL &&
		         !fed->finishing && !fed->claiming_fetch)
		{
			params[0] = fed->worker_id;
			fed->want_fetches = false;
			fed->claiming_fetch =
			    wk_db_query(db, CLAIM_FETCH_SQL, 1, params, claim_fetch_done, fed);
		}
		else if (fed->want_deliveries && room > 0 && fed->claiming == 0)
			send_claim(fed, db, room);
	}
	/* Outcomes wait a little to join a batch; the timer makes sure they go. */
	if (!outcomes_empty(&fed->out) && !ev_is_active(&fed->report_timer))
	{
		ev_timer_set(&fed->report_timer, fed->cfg.report_ms / 1000.0, 0.);
		ev_timer_start(loop, &fed->report_timer);
	}
	maybe_exit(fed);
}

static void
reclaim_done(wk_db *db, PGresult *res, void *arg)
{
	federator *fed = arg;

	(void)db;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		if (strcmp(PQgetvalue(res, 0, 0), "0") != 0)
			wk_log(WK_INFO, "took back %s jobs leased to %s before this start",
			       PQgetvalue(res, 0, 0), fed->worker_id);
		fed->want_deliveries = fed->want_fetches = fed->more_waiting = true;
	}
	else
	{
		result_error("reclaiming leases", res);
		fed->reclaim_due = true; /* again once reconnected */
	}
}

static void
db_ready(wk_db *db, void *arg)
{
	federator *fed = arg;

	if (fed->reclaim_due && wk_db_idle(db))
	{
		const char *params[1] = {fed->worker_id};

		fed->reclaim_due = false;
		if (wk_db_query(db, RECLAIM_SQL, 1, params, reclaim_done, fed))
			return;
		fed->reclaim_due = true;
	}
	if (!fed->ready_sent)
	{
		fed->ready_sent = true;
		wk_sd_notify("READY=1\nSTATUS=delivering");
		fed->want_deliveries = fed->want_fetches = true;
	}
	schedule(fed);
}

static void
db_notify(wk_db *db, const char *channel, void *arg)
{
	federator *fed = arg;

	(void)db;
	if (strcmp(channel, "pod_jobs_deliver") == 0)
		fed->want_deliveries = fed->more_waiting = true;
	else if (strcmp(channel, "pod_jobs_make_friends") == 0 ||
	         strcmp(channel, "pod_jobs_verify_key") == 0 || strcmp(channel, "pod_jobs_feed_poll") == 0 ||
	         strcmp(channel, "pod_jobs_pubsub_sync") == 0)
		fed->want_fetches = true;
	schedule(fed);
}

static void
db_lost_cb(wk_db *db, void *arg)
{
	federator *fed = arg;
	int i = db_index(fed, db);

	/* After reconnecting, look for work at once (notifications may have been missed);
	 * the new session holds no sleep lock. */
	fed->short_claims[i] = fed->short_fetches[i] = 0;
	fed->want_deliveries = fed->want_fetches = fed->more_waiting = true;
}

/* --- timers and signals ------------------------------------------------------------- */

static void
poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	federator *fed = w->data;

	(void)loop;
	(void)revents;
	fed->want_deliveries = fed->want_fetches = fed->more_waiting = true;
	schedule(fed);
}

static void
report_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	federator *fed = w->data;

	(void)loop;
	(void)revents;
	fed->report_due = true;
	schedule(fed);
}

static void
prune_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	federator *fed = w->data;

	(void)loop;
	(void)revents;
	fed->prune_due = true;
	schedule(fed);
}

/* Grace is over (wk_daemon's drain deadline): abort what is still in flight and
 * release it; one more grace period to report, then exit regardless. */
static double
grace_over_cb(void *arg)
{
	federator *fed = arg;

	if (fed->grace_over)
	{
		wk_log(WK_ERROR, "could not report to the database in time; exiting (leases will expire)");
		return 0;
	}
	fed->grace_over = true;
	if (fed->in_flight > 0)
		wk_log(WK_WARN, "grace period over: releasing %ld requests still in flight",
		       fed->in_flight);
	while (fed->flight)
	{
		transfer *t = fed->flight;

		transfer_unlink(fed, t);
		if (t->fetch == NULL)
			outcome_released(&fed->out, t->job_id);
		transfer_free(t);
	}
	schedule(fed);
	return fed->cfg.grace_ms / 1000.0 + 1.0;
}

/* SIGTERM (wk_daemon: STOPPING=1 sent, the grace period started). */
static void
stop_cb(void *arg)
{
	federator *fed = arg;

	wk_log(WK_INFO,
	       "stopping: %ld requests in flight may finish within %ld ms; waiting ones are released",
	       fed->in_flight, fed->cfg.grace_ms);
	release_waiting(fed);
	ev_timer_stop(fed->loop, &fed->poll_timer);
	ev_timer_stop(fed->loop, &fed->prune_timer);
	schedule(fed);
}

/* The conninfo: libpq's environment (PGHOST, PGPORT, PGDATABASE, ...); the daemon's own
 * login role (pgpod_federator, made by migrations/pgpod-migrate) when PGUSER is unset. */
static void
make_conninfo(char *buf, size_t size)
{
	snprintf(buf, size, "application_name=pgpod-federator%s",
	         getenv("PGUSER") ? "" : " user=pgpod_federator");
}

int
main(int argc, char **argv)
{
	static const char *const channels[] = {"pod_jobs_deliver", "pod_jobs_make_friends",
	                                            "pod_jobs_verify_key", "pod_jobs_feed_poll",
	                                            "pod_jobs_pubsub_sync", NULL};
	federator fed = {0};
	char host[64] = "host";
	char conninfo[256];
	wk_db_callbacks cb = {db_ready, db_notify, db_lost_cb, &fed};

	(void)argc;
	(void)argv;
	wk_log_init("pgpod-federator");
	fed.cfg.max_total = wk_env_long("PGPOD_FEDERATOR_MAX_TOTAL", 64, 1, 10000);
	fed.cfg.max_per_friend = wk_env_long("PGPOD_FEDERATOR_MAX_PER_FRIEND", 8, 1, 10000);
	fed.cfg.batch = wk_env_long("PGPOD_FEDERATOR_BATCH", 100, 1, 10000);
	fed.cfg.timeout_ms = wk_env_long("PGPOD_FEDERATOR_TIMEOUT_MS", 10000, 100, 600000);
	fed.cfg.poll_ms = wk_env_long("PGPOD_FEDERATOR_POLL_MS", 1000, 10, 600000);
	fed.cfg.grace_ms = wk_env_long("PGPOD_FEDERATOR_GRACE_MS", 5000, 0, 600000);
	fed.cfg.prune_ms = wk_env_long("PGPOD_FEDERATOR_PRUNE_MS", 60000, 100, 86400000);
	fed.cfg.report_ms = wk_env_long("PGPOD_FEDERATOR_REPORT_MS", 20, 0, 10000);
	fed.cfg.connections = wk_env_long("PGPOD_FEDERATOR_CONNECTIONS", 2, 1, 8);
	gethostname(host, sizeof(host) - 1);
	fed.allow_private = wk_env_long("PGPOD_FEDERATOR_ALLOW_PRIVATE", 0, 0, 1) == 1;
	/* A stable identity (scripts/pgpod and the systemd unit set one) lets a restarted
	 * federator end its previous process's leases at once (pod.job_reclaim); without
	 * one, the identity is this process's and leases left by a crash wait to expire. */
	if (getenv("PGPOD_FEDERATOR_ID") && *getenv("PGPOD_FEDERATOR_ID"))
	{
		snprintf(fed.worker_id, sizeof(fed.worker_id), "%s", getenv("PGPOD_FEDERATOR_ID"));
		fed.reclaim_due = true;
	}
	else
		snprintf(fed.worker_id, sizeof(fed.worker_id), "federator:%s:%d", host, (int)getpid());

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		wk_log(WK_ERROR, "curl_global_init failed");
		return 1;
	}
	fed.loop = EV_DEFAULT;
	fed.multi = curl_multi_init();
	curl_multi_setopt(fed.multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(fed.multi, CURLMOPT_SOCKETDATA, &fed);
	curl_multi_setopt(fed.multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(fed.multi, CURLMOPT_TIMERDATA, &fed);
	/* Keep-alive: the multi's connection cache defaults to 4 × the handles added at the
	 * moment, so it shrank as transfers ended and closed friends' connections between
	 * bursts (about one new TCP connection per 5 deliveries). Room for every transfer
	 * that may be in flight keeps one connection per concurrent request instead. */
	curl_multi_setopt(fed.multi, CURLMOPT_MAXCONNECTS, fed.cfg.max_total + 8);
	ev_init(&fed.curl_timer, curl_timer_expired);
	fed.curl_timer.data = &fed;
	ev_timer_init(&fed.poll_timer, poll_cb, fed.cfg.poll_ms / 1000.0, fed.cfg.poll_ms / 1000.0);
	fed.poll_timer.data = &fed;
	ev_timer_start(fed.loop, &fed.poll_timer);
	ev_timer_init(&fed.prune_timer, prune_cb, 1.0, fed.cfg.prune_ms / 1000.0);
	fed.prune_timer.data = &fed;
	ev_timer_start(fed.loop, &fed.prune_timer);
	ev_init(&fed.report_timer, report_cb);
	fed.report_timer.data = &fed;
	ev_idle_init(&fed.kick, kick_cb);
	fed.kick.data = &fed;
	wk_daemon_start(fed.loop, &(wk_daemon_config){.stop = stop_cb,
	                                               .deadline = grace_over_cb,
	                                               .arg = &fed,
	                                               .drain_seconds = fed.cfg.grace_ms / 1000.0});

	make_conninfo(conninfo, sizeof(conninfo));
	wk_log(WK_INFO, "starting as %s (at most %ld requests, %ld per friend, batches of %ld)",
	       fed.worker_id, fed.cfg.max_total, fed.cfg.max_per_friend, fed.cfg.batch);
	fed.ndb = (int)fed.cfg.connections;
	for (int i = 0; i < fed.ndb; i++)
		fed.dbs[i] = wk_db_new(fed.loop, conninfo, i == 0 ? channels : NULL, cb);
	ev_run(fed.loop, 0);
	wk_daemon_stop_watching();

	for (int i = 0; i < fed.ndb; i++)
		wk_db_free(fed.dbs[i]);
	curl_multi_cleanup(fed.multi);
	curl_global_cleanup();
	/* Stopped with nothing in flight or queued: what is left is the friend table. */
	while (fed.friends)
	{
		friend *f = fed.friends;

		fed.friends = f->next;
		free(f->target);
		free(f);
	}
	outcomes_free(&fed.out);
	return 0;
}
