/*
 * tracker.c — pgpod's tracker daemon: settings, the listening sockets (TCP for HTTP
 * and WebSocket, UDP, on one port), the database side (the tracked info hashes,
 * reloaded on NOTIFY pod_torrents / pod_videos and on a timer; swarm counts written
 * in one pod.tracker_report call per batch), per-address rate limiting, expiry,
 * and SIGTERM (one last report, then exit).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tracker.h"

tk_config tk_cfg;
struct ev_loop *tk_loop;
tk_counters tk_count;
bool tk_ready;

static wk_db *db;
static bool need_refresh = true, flush_in_flight;
static ev_timer flush_timer, refresh_timer, expire_timer;
static ev_idle kick;

/* --- addresses ------------------------------------------------------------------ */
void
tk_addr_from_sockaddr(tk_addr *a, const struct sockaddr_storage *ss)
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(a, 0, sizeof(*a));
	if (ss->ss_family == AF_INET)
	{
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		a->family = 4;
		memcpy(a->ip, &s->sin_addr, 4);
		a->port = s->sin_port;
	}
	else if (ss->ss_family == AF_INET6)
	{
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		a->port = s->sin6_port;
		if (memcmp(&s->sin6_addr, v4mapped, 12) == 0)
		{
			a->family = 4;
			memcpy(a->ip, (const uint8_t *)&s->sin6_addr + 12, 4);
		}
		else
		{
			a->family = 6;
			memcpy(a->ip, &s->sin6_addr, 16);
		}
	}
}

void
tk_addr_format(const tk_addr *a, char *out, size_t size)
{
	if (inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->ip, out, (socklen_t)size) == NULL)
		snprintf(out, size, "?");
}

/* --- rate limiting ---------------------------------------------------------------- */
#define RATE_SLOTS 65536
typedef struct rate_slot
{
	uint64_t tag;
	double tokens, last;
} rate_slot;
static rate_slot *rates;

const char tk_slow_down[] = "too many requests from your address; slow down";

bool
tk_rate_ok(const tk_addr *a)
{
	uint64_t tag = 1469598103934665603ULL;
	rate_slot *r;
	double now;

	if (tk_cfg.rate == 0)
		return true;
	for (int i = 0; i < (a->family == 4 ? 4 : 16); i++)
		tag = (tag ^ a->ip[i]) * 1099511628211ULL;
	tag ^= a->family;
	r = &rates[tag % RATE_SLOTS];
	now = ev_now(tk_loop);
	if (r->tag != tag)
	{
		/* A new address takes the slot (bounded memory; a collision only resets). */
		r->tag = tag;
		r->tokens = (double)tk_cfg.burst;
		r->last = now;
	}
	r->tokens += (now - r->last) * (double)tk_cfg.rate;
	if (r->tokens > (double)tk_cfg.burst)
		r->tokens = (double)tk_cfg.burst;
	r->last = now;
	if (r->tokens < 1.0)
	{
		tk_count.rate_limited++;
		return false;
	}
	r->tokens -= 1.0;
	return true;
}

void
tk_failure(const tk_addr *a, const char *what, const char *reason)
{
	tk_count.failures++;
	if (wk_log_threshold <= WK_DEBUG)
	{
		char ip[64];

		tk_addr_format(a, ip, sizeof(ip));
		wk_log(WK_DEBUG, "%s from %s refused: %s", what, ip, reason);
	}
}

/* --- database ----------------------------------------------------------------------- */
static void db_ready(wk_db *d, void *arg);

static void
refresh_done(wk_db *d, PGresult *res, void *arg)
{
	int n;
	uint8_t *hashes;
	int64_t *completed;
	size_t count = 0;

	(void)d;
	(void)arg;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		wk_log(WK_ERROR, "loading the tracked info hashes failed: %s",
		       res ? PQresultErrorMessage(res) : "connection lost");
		need_refresh = true;
		return;
	}
	n = PQntuples(res);
	hashes = malloc((size_t)n * TK_HASH_LEN + 1);
	completed = malloc((size_t)n * sizeof(int64_t) + 1);
	if (hashes == NULL || completed == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
	for (int i = 0; i < n; i++)
	{
		const char *h = PQgetvalue(res, i, 0);

		/* bytea in text form: \x and 40 hex digits */
		if (strlen(h) != 2 + 2 * TK_HASH_LEN || strncmp(h, "\\x", 2) != 0 ||
		    !wk_hex_decode(hashes + count * TK_HASH_LEN, h + 2, TK_HASH_LEN))
			continue;
		completed[count++] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
	}
	count = tk_swarms_replace(hashes, completed, count);
	free(hashes);
	free(completed);
	if (!tk_ready)
		wk_log(WK_INFO, "tracking %zu info hashes", count);
	else
		wk_log(WK_DEBUG, "tracking %zu info hashes", count);
	tk_ready = true;
}

typedef struct flush_batch
{
	wk_buf hashes, seeders, leechers, completed;
	size_t n;
	struct
	{
		uint8_t hash[TK_HASH_LEN];
		int32_t delta;
	} sent[5000]; /* to put back if the report fails */
} flush_batch;

static void
collect(tk_swarm *s, void *arg)
{
	flush_batch *b = arg;
	char tmp[48];
	uint32_t leechers = s->npeers - s->seeders;

	if (b->n >= 5000)
		return; /* the next batch takes the rest */
	s->dirty = false;
	if (s->seeders == s->reported_seeders && leechers == s->reported_leechers &&
	    s->completed_delta == 0)
		return;
	strcpy(tmp, "\\x");
	for (int i = 0; i < TK_HASH_LEN; i++)
		snprintf(tmp + 2 + 2 * i, 3, "%02x", s->hash[i]);
	wk_array_add(&b->hashes, tmp);
	snprintf(tmp, sizeof(tmp), "%" PRIu32, s->seeders);
	wk_array_add(&b->seeders, tmp);
	snprintf(tmp, sizeof(tmp), "%" PRIu32, leechers);
	wk_array_add(&b->leechers, tmp);
	snprintf(tmp, sizeof(tmp), "%" PRId32, s->completed_delta);
	wk_array_add(&b->completed, tmp);
	s->reported_seeders = s->seeders;
	s->reported_leechers = leechers;
	memcpy(b->sent[b->n].hash, s->hash, TK_HASH_LEN);
	b->sent[b->n].delta = s->completed_delta;
	s->completed_delta = 0;
	b->n++;
}

static flush_batch batch;

static void
flush_done(wk_db *d, PGresult *res, void *arg)
{
	(void)d;
	(void)arg;
	flush_in_flight = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		/* The batch goes back: counts and completed deltas are sent again. */
		wk_log(WK_WARN, "reporting swarm counts failed: %s",
		       res ? PQresultErrorMessage(res) : "connection lost");
		for (size_t i = 0; i < batch.n; i++)
		{
			tk_swarm *s = tk_swarm_find(batch.sent[i].hash);

			if (s == NULL)
				continue;
			s->completed_delta += batch.sent[i].delta;
			s->reported_seeders = UINT32_MAX;
			s->dirty = true;
		}
	}
	else
		wk_log(WK_DEBUG, "reported %zu swarms", batch.n);
	if (wk_daemon_stopping())
		wk_daemon_drained();
}

/* Sends one batch of changed counts; false when there was nothing to send. */
static bool
flush(void)
{
	const char *params[4];

	wk_array_begin(&batch.hashes);
	wk_array_begin(&batch.seeders);
	wk_array_begin(&batch.leechers);
	wk_array_begin(&batch.completed);
	batch.n = 0;
	tk_swarms_each_dirty(collect, &batch);
	if (batch.n == 0)
		return false;
	wk_array_end(&batch.hashes);
	wk_array_end(&batch.seeders);
	wk_array_end(&batch.leechers);
	wk_array_end(&batch.completed);
	params[0] = batch.hashes.data;
	params[1] = batch.seeders.data;
	params[2] = batch.leechers.data;
	params[3] = batch.completed.data;
	if (!wk_db_query(db, "SELECT pod.tracker_report($1::bytea[], $2::integer[], $3::integer[], $4::integer[])",
	                 4, params, flush_done, NULL))
		return false;
	flush_in_flight = true;
	return true;
}

static bool want_flush;

static void
db_ready(wk_db *d, void *arg)
{
	(void)arg;
	if (!wk_db_idle(d))
		return;
	if (need_refresh && !wk_daemon_stopping())
	{
		need_refresh = false;
		if (wk_db_query(d, "SELECT info_hash, completed FROM pod.tracker_info_hashes()", 0, NULL,
		                refresh_done, NULL))
			return;
		need_refresh = true;
	}
	if (want_flush)
	{
		want_flush = false;
		if (flush())
			return;
	}
	if (wk_daemon_stopping())
		wk_daemon_drained();
}

static void
db_notify(wk_db *d, const char *channel, void *arg)
{
	(void)d;
	(void)arg;
	(void)channel;
	need_refresh = true;
	ev_idle_start(tk_loop, &kick);
}

static void
db_lost_cb(wk_db *d, void *arg)
{
	(void)d;
	(void)arg;
	need_refresh = true; /* what changed meanwhile went unnoticed */
}

static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	(void)revents;
	ev_idle_stop(loop, w);
	db_ready(db, NULL);
}

static void
flush_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	want_flush = true;
	ev_idle_start(loop, &kick);
}

static void
refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	need_refresh = true;
	ev_idle_start(loop, &kick);
}

static void
expire_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	double now = ev_now(loop);
	size_t n;

	(void)w;
	(void)revents;
	n = tk_swarms_expire(now - (double)tk_cfg.peer_ttl, now - (double)(tk_cfg.ws_interval * 2 + 30));
	if (n)
		wk_log(WK_DEBUG, "expired %zu peers; %zu left", n, tk_peers_total());
}

/* wk_daemon's drain deadline (PGPOD_TRACKER_DRAIN_MS) */
static double
grace_over_cb(void *arg)
{
	(void)arg;
	wk_log(WK_WARN, "the last report did not finish in time");
	return 0;
}

/* SIGTERM (wk_daemon: STOPPING=1 sent, the drain deadline started). */
static void
stop_cb(void *arg)
{
	struct ev_loop *loop = tk_loop;

	(void)arg;
	wk_log(WK_INFO, "stopping: closing connections, reporting the last counts");
	tk_http_close_all();
	tk_udp_stop();
	ev_timer_stop(loop, &flush_timer);
	ev_timer_stop(loop, &refresh_timer);
	ev_timer_stop(loop, &expire_timer);
	want_flush = true;
	if (!flush_in_flight)
		db_ready(db, NULL);
}

/* --- sockets ---------------------------------------------------------------------- */
static int
bind_socket(int type, const char *address, int port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int one = 1, zero = 0, fd;

	memset(&ss, 0, sizeof(ss));
	if (strchr(address, ':'))
	{
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, address, &s6->sin6_addr) != 1)
			return -2;
		sl = sizeof(*s6);
	}
	else
	{
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, address, &s4->sin_addr) != 1)
			return -2;
		sl = sizeof(*s4);
	}
	fd = socket(ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || (type == SOCK_STREAM && listen(fd, 1024) < 0))
	{
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	if (type == SOCK_DGRAM)
	{
		int size = 4 * 1024 * 1024;

		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
	return fd;
}

static void
make_conninfo(char *out, size_t size)
{
	/* libpq reads PGHOST, PGPORT, PGDATABASE, PGUSER itself. */
	snprintf(out, size, "application_name=pgpod-tracker");
}

int
main(int argc, char **argv)
{
	static const char *const channels[] = {"pod_torrents", "pod_videos", NULL};
	wk_db_callbacks cb = {db_ready, db_notify, db_lost_cb, NULL};
	const char *address = getenv("PGPOD_TRACKER_ADDRESS");
	char conninfo[128];
	int tcp, udp;

	(void)argc;
	(void)argv;
	wk_log_init("pgpod-tracker");
	tk_cfg.port = wk_env_long("PGPOD_TRACKER_PORT", 6969, 1, 65535);
	tk_cfg.interval = wk_env_long("PGPOD_TRACKER_INTERVAL", 1800, 10, 86400);
	tk_cfg.ws_interval = wk_env_long("PGPOD_TRACKER_WS_INTERVAL", 120, 5, 86400);
	tk_cfg.peer_ttl = wk_env_long("PGPOD_TRACKER_PEER_TTL", tk_cfg.interval * 2 + 60, 10, 7 * 86400);
	tk_cfg.numwant_max = wk_env_long("PGPOD_TRACKER_NUMWANT_MAX", 200, 1, 256);
	tk_cfg.max_peers = wk_env_long("PGPOD_TRACKER_MAX_PEERS", 1000000, 1, 100000000);
	tk_cfg.max_connections = wk_env_long("PGPOD_TRACKER_MAX_CONNECTIONS", 10000, 1, 1000000);
	tk_cfg.rate = wk_env_long("PGPOD_TRACKER_RATE", 100, 0, 10000000);
	tk_cfg.burst = wk_env_long("PGPOD_TRACKER_BURST", tk_cfg.rate * 2, 1, 100000000);
	tk_cfg.ws_max_frame = wk_env_long("PGPOD_TRACKER_WS_MAX_FRAME", 65536, 1024, 16 * 1024 * 1024);
	tk_cfg.ws_max_torrents = wk_env_long("PGPOD_TRACKER_WS_MAX_TORRENTS", 100, 1, 100000);
	tk_cfg.flush_ms = wk_env_long("PGPOD_TRACKER_FLUSH_MS", 2000, 10, 3600000);
	tk_cfg.refresh_ms = wk_env_long("PGPOD_TRACKER_REFRESH_MS", 60000, 100, 86400000);
	tk_cfg.idle_ms = wk_env_long("PGPOD_TRACKER_IDLE_MS", 30000, 100, 3600000);
	tk_max_peers = tk_cfg.max_peers;
	if (address == NULL || *address == '\0')
		address = "::";

	tcp = bind_socket(SOCK_STREAM, address, (int)tk_cfg.port);
	udp = tcp >= 0 ? bind_socket(SOCK_DGRAM, address, (int)tk_cfg.port) : -1;
	if ((tcp == -1 || udp == -1) && strcmp(address, "::") == 0 && errno == EAFNOSUPPORT)
	{
		/* No IPv6 on this host: IPv4 only. */
		if (tcp >= 0)
			close(tcp);
		address = "0.0.0.0";
		tcp = bind_socket(SOCK_STREAM, address, (int)tk_cfg.port);
		udp = tcp >= 0 ? bind_socket(SOCK_DGRAM, address, (int)tk_cfg.port) : -1;
	}
	if (tcp < 0 || udp < 0)
	{
		wk_log(WK_ERROR, "cannot listen on [%s]:%ld: %s", address, tk_cfg.port,
		       tcp == -2 || udp == -2 ? "not an IP address" : strerror(errno));
		return 1;
	}
	rates = calloc(RATE_SLOTS, sizeof(*rates));
	if (rates == NULL)
		return 1;
	tk_loop = EV_DEFAULT;
	tk_swarms_init();
	tk_udp_init_key();
	tk_http_listen(tcp);
	tk_udp_listen(udp);
	ev_idle_init(&kick, kick_cb);
	ev_timer_init(&flush_timer, flush_cb, tk_cfg.flush_ms / 1000.0, tk_cfg.flush_ms / 1000.0);
	ev_timer_start(tk_loop, &flush_timer);
	ev_timer_init(&refresh_timer, refresh_cb, tk_cfg.refresh_ms / 1000.0, tk_cfg.refresh_ms / 1000.0);
	ev_timer_start(tk_loop, &refresh_timer);
	{
		double every = tk_cfg.ws_interval < tk_cfg.peer_ttl ? tk_cfg.ws_interval : tk_cfg.peer_ttl;

		ev_timer_init(&expire_timer, expire_cb, every / 2.0, every / 2.0);
		ev_timer_start(tk_loop, &expire_timer);
	}
	wk_daemon_start(tk_loop, &(wk_daemon_config){
	                             .stop = stop_cb,
	                             .deadline = grace_over_cb,
	                             .drain_seconds = wk_env_long("PGPOD_TRACKER_DRAIN_MS", 2000, 0, 600000) / 1000.0});
	make_conninfo(conninfo, sizeof(conninfo));
	db = wk_db_new(tk_loop, conninfo, channels, cb);
	wk_log(WK_INFO, "listening on [%s]:%ld (HTTP, WebSocket and UDP), announce interval %ld s",
	       address, tk_cfg.port, tk_cfg.interval);
	wk_sd_notify("READY=1\nSTATUS=tracking");
	ev_run(tk_loop, 0);
	wk_daemon_stop_watching();

	wk_log(WK_INFO, "stopped (%" PRIu64 " HTTP, %" PRIu64 " UDP, %" PRIu64
	                " WebSocket announces; %" PRIu64 " refused, %" PRIu64 " rate-limited; relayed %" PRIu64
	                " offers, %" PRIu64 " answers)",
	       tk_count.http_announces, tk_count.udp_announces, tk_count.ws_announces,
	       tk_count.failures, tk_count.rate_limited, tk_count.offers_relayed, tk_count.answers_relayed);
	wk_db_free(db);
	tk_http_close_all();
	tk_udp_stop();
	tk_swarms_free();
	wk_buf_free(&batch.hashes);
	wk_buf_free(&batch.seeders);
	wk_buf_free(&batch.leechers);
	wk_buf_free(&batch.completed);
	free(rates);
	return 0;
}
