/*
 * announce.c — the seeder announces itself to the pod's HTTP tracker (BEP 3, with
 * left=0: a seed), one GET per torrent and again after the interval the tracker
 * gives, so clients that ask the tracker find the pod as a peer beside the WebSeed.
 * A tiny non-blocking HTTP/1.0 client on the loop: at most announce_parallel at
 * once, 10 s each; failures are retried later with backoff.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bencode.h"
#include "seeder.h"

#define ANNOUNCE_TIMEOUT 10.0
#define RESPONSE_MAX 65536

typedef struct announce
{
	seeder *s;
	long long torrent_id;
	int fd;
	ev_io io;
	ev_timer timer;
	char req[1024];
	size_t req_len, req_off;
	char *resp;
	size_t resp_len;
	struct announce *next;
} announce;

static announce *in_flight;

bool
announce_configure(seeder *s)
{
	char host[200];
	int port = 80;
	const char *u = s->tracker_url;

	s->tracker_ok = false;
	if (strncmp(u, "http://", 7) != 0)
		return false;
	u += 7;
	const char *slash = strchr(u, '/');
	const char *colon = memchr(u, ':', slash ? (size_t)(slash - u) : strlen(u));
	size_t hl = colon ? (size_t)(colon - u) : slash ? (size_t)(slash - u) : strlen(u);
	if (hl == 0 || hl >= sizeof host)
		return false;
	memcpy(host, u, hl);
	host[hl] = 0;
	if (colon)
		port = atoi(colon + 1);
	snprintf(s->tracker_path, sizeof s->tracker_path, "%s", slash ? slash : "/announce");
	snprintf(s->tracker_host, sizeof s->tracker_host, "%s:%d", host, port);
	/* Resolved once here (blocking, at load), so announces never wait on DNS. */
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
	{
		wk_log(WK_WARN, "tracker %s: cannot resolve %s; not announcing", s->tracker_url, host);
		return false;
	}
	memcpy(&s->tracker_addr, res->ai_addr, sizeof s->tracker_addr);
	s->tracker_addr.sin_port = htons((uint16_t)port);
	freeaddrinfo(res);
	s->tracker_ok = true;
	return true;
}

static void
url_bytes(char *out, const uint8_t *b, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++)
	{
		*out++ = '%';
		*out++ = hex[b[i] >> 4];
		*out++ = hex[b[i] & 15];
	}
	*out = 0;
}

static torrent *
find_by_id(seeder *s, long long id)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->all[i]->id == id)
			return s->all[i];
	return NULL;
}

static void
announce_end(announce *a, bool ok, long interval, const char *why)
{
	seeder *s = a->s;
	torrent *t = find_by_id(s, a->torrent_id);
	double now = seeder_now(s);

	if (t)
	{
		if (ok)
		{
			t->announce_failures = 0;
			t->next_announce = now + (interval > 0 ? (double)interval : 1800.0);
			wk_log(WK_DEBUG, "announced torrent %lld; next in %ld s", t->id, interval);
		}
		else
		{
			int f = t->announce_failures < 11 ? ++t->announce_failures : t->announce_failures;
			/* 0.25 s, 0.5 s, ... up to about 4 min: the first failure is usually the
			 * tracker not having reloaded the newly published hash yet */
			double delay = 0.25 * (1 << (f - 1));
			t->next_announce = now + delay;
			wk_log(f == 3 ? WK_INFO : WK_DEBUG, "announce of torrent %lld to %s failed (%s); retry in %.2f s",
			       t->id, s->tracker_url, why, delay);
		}
	}
	ev_io_stop(s->loop, &a->io);
	ev_timer_stop(s->loop, &a->timer);
	if (a->fd >= 0)
		close(a->fd);
	announce **pp = &in_flight;
	while (*pp && *pp != a)
		pp = &(*pp)->next;
	if (*pp)
		*pp = a->next;
	free(a->resp);
	free(a);
	s->announcing--;
	seeder_schedule(s);
}

static void
parse_response(announce *a)
{
	char *body = a->resp ? strstr(a->resp, "\r\n\r\n") : NULL;
	if (!a->resp || strncmp(a->resp, "HTTP/1.", 7) != 0 || !body)
	{
		announce_end(a, false, 0, "not an HTTP response");
		return;
	}
	int status = atoi(a->resp + 9);
	body += 4;
	size_t n = a->resp_len - (size_t)(body - a->resp);
	be_span d = {(const uint8_t *)body, n}, v;
	const uint8_t *s;
	size_t sl;
	long long interval = 0;
	if (status != 200 || be_check_all(d.p, d.n) != NULL || !be_is_dict(d))
	{
		announce_end(a, false, 0, "the tracker's answer is not a bencoded dictionary");
		return;
	}
	if (be_dict_get(d, "failure reason", &v) && be_str(v, &s, &sl))
	{
		char why[200];
		snprintf(why, sizeof why, "failure reason: %.*s", (int)(sl < 150 ? sl : 150), (const char *)s);
		announce_end(a, false, 0, why);
		return;
	}
	if (be_dict_get(d, "interval", &v))
		be_int(v, &interval);
	if (interval < 10)
		interval = 10;
	if (interval > 86400)
		interval = 86400;
	announce_end(a, true, (long)interval, NULL);
}

static void
announce_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	announce *a = w->data;
	(void)loop;
	if (revents & EV_WRITE)
	{
		if (a->req_off == 0)
		{
			int err = 0;
			socklen_t el = sizeof err;
			getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (err)
			{
				announce_end(a, false, 0, strerror(err));
				return;
			}
		}
		ssize_t k = send(a->fd, a->req + a->req_off, a->req_len - a->req_off, MSG_NOSIGNAL);
		if (k < 0 && errno != EAGAIN && errno != EINTR)
		{
			announce_end(a, false, 0, strerror(errno));
			return;
		}
		if (k > 0)
			a->req_off += (size_t)k;
		if (a->req_off == a->req_len)
		{
			ev_io_stop(a->s->loop, &a->io);
			ev_io_set(&a->io, a->fd, EV_READ);
			ev_io_start(a->s->loop, &a->io);
		}
		return;
	}
	char buf[8192];
	for (;;)
	{
		ssize_t k = recv(a->fd, buf, sizeof buf, 0);
		if (k == 0)
		{
			parse_response(a);
			return;
		}
		if (k < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			announce_end(a, false, 0, strerror(errno));
			return;
		}
		if (a->resp_len + (size_t)k > RESPONSE_MAX)
		{
			announce_end(a, false, 0, "the answer is too long");
			return;
		}
		a->resp = realloc(a->resp, a->resp_len + (size_t)k + 1);
		if (!a->resp)
			abort();
		memcpy(a->resp + a->resp_len, buf, (size_t)k);
		a->resp_len += (size_t)k;
		a->resp[a->resp_len] = 0;
	}
}

static void
announce_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	announce_end(w->data, false, 0, "timed out");
}

static void
announce_start(seeder *s, torrent *t)
{
	char ih[61], pid[61];
	announce *a = calloc(1, sizeof *a);
	if (!a)
		abort();
	a->s = s;
	a->torrent_id = t->id;
	url_bytes(ih, t->info_hash, 20);
	url_bytes(pid, s->peer_id, 20);
	int n = snprintf(a->req, sizeof a->req,
	                 "GET %s%cinfo_hash=%s&peer_id=%s&port=%ld&uploaded=0&downloaded=0&left=0"
	                 "&event=started&compact=1&numwant=0 HTTP/1.0\r\nHost: %s\r\n"
	                 "User-Agent: pgpod-seeder\r\n\r\n",
	                 s->tracker_path, strchr(s->tracker_path, '?') ? '&' : '?', ih, pid,
	                 s->cfg.peer_port, s->tracker_host);
	a->req_len = (size_t)n < sizeof a->req ? (size_t)n : sizeof a->req - 1;
	a->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	a->next = in_flight;
	in_flight = a;
	s->announcing++;
	ev_io_init(&a->io, announce_io_cb, a->fd, EV_WRITE);
	a->io.data = a;
	ev_timer_init(&a->timer, announce_timeout_cb, ANNOUNCE_TIMEOUT, 0.);
	a->timer.data = a;
	/* not due again until this one ends (announce_end sets the next time) */
	t->next_announce = seeder_now(s) + 3600.0;
	if (a->fd < 0 ||
	    (connect(a->fd, (struct sockaddr *)&s->tracker_addr, sizeof s->tracker_addr) != 0 &&
	     errno != EINPROGRESS))
	{
		announce_end(a, false, 0, strerror(errno));
		return;
	}
	ev_io_start(s->loop, &a->io);
	ev_timer_start(s->loop, &a->timer);
}

void
announce_due(seeder *s)
{
	if (!s->tracker_ok || wk_daemon_stopping() || s->n == 0)
		return;
	double now = seeder_now(s);
	/* one round-robin pass over the table from where the last one stopped */
	for (size_t k = 0; k < s->n && s->announcing < s->cfg.announce_parallel; k++)
	{
		size_t i = (s->announce_cursor + k) % s->n;
		torrent *t = s->all[i];
		if (t->next_announce <= now)
		{
			announce_start(s, t);
			s->announce_cursor = (i + 1) % (s->n ? s->n : 1);
		}
	}
}

void
announce_abort_all(seeder *s)
{
	while (in_flight)
	{
		announce *a = in_flight;
		in_flight = a->next;
		ev_io_stop(s->loop, &a->io);
		ev_timer_stop(s->loop, &a->timer);
		if (a->fd >= 0)
			close(a->fd);
		free(a->resp);
		free(a);
		s->announcing--;
	}
}
