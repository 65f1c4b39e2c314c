/*
 * http.c — the tracker's TCP face: accepting connections, HTTP/1.1 requests parsed
 * with http-parser (keep-alive, pipelining), GET /announce and /scrape answered in
 * bencode (BEP 3, 23, 7, 48), and the upgrade of a connection to a WebSocket (RFC
 * 6455) whose messages go to wt.c. Owns every tk_conn; a closed connection gives
 * its socket and buffers back at once (after wt.c has taken its peers out of their
 * swarms), its struct at the next loop iteration, so callbacks still on the stack
 * may look at c->closed.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "tracker.h"

#define HTTP_IN_MAX 16384
#define OUT_MAX (4 * 1024 * 1024) /* a slower reader than this is dropped */
#define SCRAPE_MAX 64

enum
{
	H_NONE,
	H_UPGRADE,
	H_CONNECTION,
	H_WS_KEY,
	H_WS_VERSION
};

static ev_io listen_io;
static ev_prepare reaper;
static tk_conn *conns, *dead;
static size_t nconns;
static http_parser_settings settings;

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);

size_t
tk_http_connections(void)
{
	return nconns;
}

void
tk_conn_close(tk_conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	if (c->ws)
		tk_wt_closed(c);
	ev_io_stop(tk_loop, &c->io);
	ev_timer_stop(tk_loop, &c->idle);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	free(c->in);
	c->in = NULL;
	free(c->parser);
	c->parser = NULL;
	free(c->hashes);
	c->hashes = NULL;
	wk_buf_free(&c->out);
	wk_buf_free(&c->msg);
	c->next = dead;
	dead = c;
	ev_prepare_start(tk_loop, &reaper);
}

/* Frees the structs of connections closed during the last iteration. */
static void
reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)revents;
	ev_prepare_stop(loop, w);
	while (dead)
	{
		tk_conn *c = dead;

		dead = c->next;
		free(c);
	}
}

void
tk_http_close_all(void)
{
	if (ev_is_active(&listen_io))
	{
		ev_io_stop(tk_loop, &listen_io);
		close(listen_io.fd);
	}
	while (conns)
		tk_conn_close(conns);
	reap_cb(tk_loop, &reaper, 0);
}

/* Sends what is queued; watches for writability while some is left. */
static void
conn_flush(tk_conn *c)
{
	while (c->outoff < c->out.len)
	{
		ssize_t n = send(c->fd, c->out.data + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			tk_conn_close(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->out.len)
	{
		wk_buf_reset(&c->out);
		c->outoff = 0;
		if (c->close_after_write)
		{
			tk_conn_close(c);
			return;
		}
	}
	else if (c->out.len - c->outoff > OUT_MAX)
	{
		wk_log(WK_DEBUG, "dropping a connection that does not read its answers");
		tk_conn_close(c);
		return;
	}
	{
		int want = EV_READ | (c->outoff < c->out.len ? EV_WRITE : 0);

		if (c->io.events != want)
		{
			ev_io_stop(tk_loop, &c->io);
			ev_io_set(&c->io, c->fd, want);
			ev_io_start(tk_loop, &c->io);
		}
	}
}

void
tk_conn_write(tk_conn *c, const void *data, size_t len)
{
	wk_buf_add(&c->out, data, len);
}

void
tk_ws_send_text(tk_conn *c, const char *text, size_t len)
{
	if (c->closed)
		return;
	tk_ws_frame_add(&c->out, 1, text, len);
	/* Sent from the loop, never from here: a failed send would close the socket
	 * (and change swarms) under a caller that is walking a swarm's peers. */
	if (!(c->io.events & EV_WRITE))
	{
		ev_io_stop(tk_loop, &c->io);
		ev_io_set(&c->io, c->fd, EV_READ | EV_WRITE);
		ev_io_start(tk_loop, &c->io);
	}
}

static void
respond(tk_conn *c, int status, const char *reason, const char *ctype, const wk_buf *body,
        bool keep_alive)
{
	wk_buf_printf(&c->out,
	              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
	              reason, ctype, body->len, keep_alive ? "" : "Connection: close\r\n");
	wk_buf_add(&c->out, body->data ? body->data : "", body->len);
	if (!keep_alive)
		c->close_after_write = true;
}

static void
add_compact(wk_buf *b, tk_peer *const *peers, size_t n, int family)
{
	size_t count = 0, each = family == 4 ? 6 : 18;
	char tmp[24];

	for (size_t i = 0; i < n; i++)
		count += peers[i]->addr.family == family;
	wk_buf_printf(b, "%zu:", count * each);
	for (size_t i = 0; i < n; i++)
	{
		if (peers[i]->addr.family != family)
			continue;
		memcpy(tmp, peers[i]->addr.ip, each - 2);
		memcpy(tmp + each - 2, &peers[i]->addr.port, 2);
		wk_buf_add(b, tmp, each);
	}
}

static void
http_announce(tk_conn *c, const char *query, size_t qlen, wk_buf *body)
{
	tk_announce a;
	const char *err;
	tk_swarm *s;
	tk_peer *peers[256];
	size_t n;

	tk_count.http_announces++;
	if (!tk_rate_ok(&c->addr))
	{
		tk_bencode_failure(body, tk_slow_down);
		return;
	}
	err = tk_parse_announce(query, qlen, &a, tk_cfg.numwant_max);
	if (err == NULL)
	{
		uint16_t port = a.addr.port;

		a.addr = c->addr;
		a.addr.port = port;
		err = tk_net_announce(&a, &s, peers, &n);
	}
	if (err)
	{
		tk_failure(&c->addr, "HTTP announce", err);
		tk_bencode_failure(body, err);
		return;
	}
	/* Keys in byte order: complete, downloaded, incomplete, interval, min interval,
	 * peers, peers6. */
	wk_buf_adds(body, "d");
	wk_benc_key_int(body, "complete", s->seeders);
	wk_benc_key_int(body, "downloaded", s->completed);
	wk_benc_key_int(body, "incomplete", s->npeers - s->seeders);
	wk_benc_key_int(body, "interval", tk_cfg.interval);
	wk_benc_key_int(body, "min interval", tk_cfg.interval / 2);
	wk_benc_strz(body, "peers");
	if (a.compact)
	{
		add_compact(body, peers, n, 4);
		wk_benc_strz(body, "peers6");
		add_compact(body, peers, n, 6);
	}
	else
	{
		wk_buf_adds(body, "l");
		for (size_t i = 0; i < n; i++)
		{
			char ip[64];

			tk_addr_format(&peers[i]->addr, ip, sizeof(ip));
			wk_buf_adds(body, "d");
			wk_benc_strz(body, "ip");
			wk_benc_strz(body, ip);
			if (!a.no_peer_id)
			{
				wk_benc_strz(body, "peer id");
				wk_benc_str(body, peers[i]->id, 20);
			}
			wk_benc_key_int(body, "port", ntohs(peers[i]->addr.port));
			wk_buf_adds(body, "e");
		}
		wk_buf_adds(body, "e");
	}
	wk_buf_adds(body, "e");
}

static int
hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, TK_HASH_LEN);
}

static void
http_scrape(tk_conn *c, const char *query, size_t qlen, wk_buf *body)
{
	uint8_t hashes[SCRAPE_MAX * TK_HASH_LEN];
	const char *err = NULL;
	int n;

	tk_count.http_scrapes++;
	if (!tk_rate_ok(&c->addr))
	{
		tk_bencode_failure(body, tk_slow_down);
		return;
	}
	n = tk_parse_scrape(query, qlen, hashes, SCRAPE_MAX, &err);
	if (n > 0 && !tk_ready)
		err = "the tracker is starting; try again shortly", n = -1;
	if (n < 0)
	{
		tk_failure(&c->addr, "HTTP scrape", err);
		tk_bencode_failure(body, err);
		return;
	}
	/* The files dictionary's keys in byte order, each once; unknown ones left out. */
	qsort(hashes, (size_t)n, TK_HASH_LEN, hash_cmp);
	wk_buf_adds(body, "d");
	wk_benc_strz(body, "files");
	wk_buf_adds(body, "d");
	for (int i = 0; i < n; i++)
	{
		tk_swarm *s;

		if (i > 0 && memcmp(hashes + i * TK_HASH_LEN, hashes + (i - 1) * TK_HASH_LEN, TK_HASH_LEN) == 0)
			continue;
		s = tk_swarm_find(hashes + i * TK_HASH_LEN);
		if (s == NULL)
			continue;
		wk_benc_str(body, s->hash, TK_HASH_LEN);
		wk_buf_adds(body, "d");
		wk_benc_key_int(body, "complete", s->seeders);
		wk_benc_key_int(body, "downloaded", s->completed);
		wk_benc_key_int(body, "incomplete", s->npeers - s->seeders);
		wk_buf_adds(body, "e");
	}
	wk_buf_adds(body, "ee");
}

/* --- http-parser callbacks ------------------------------------------------------ */
static int
on_message_begin(http_parser *p)
{
	tk_conn *c = p->data;

	c->urllen = 0;
	c->url_overflow = false;
	c->header = H_NONE;
	c->wskeylen = 0;
	c->hdr_upgrade_ws = c->hdr_conn_upgrade = c->hdr_ws_version13 = false;
	return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
	tk_conn *c = p->data;

	if (c->urllen + len >= sizeof(c->url))
	{
		c->url_overflow = true;
		return 0;
	}
	memcpy(c->url + c->urllen, at, len);
	c->urllen += len;
	return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
	tk_conn *c = p->data;

	/* Header names arrive whole in practice; a name split across reads is simply
	 * not recognised, which only matters for a WebSocket upgrade. */
#define IS(s) (len == sizeof(s) - 1 && strncasecmp(at, s, len) == 0)
	c->header = IS("upgrade")                 ? H_UPGRADE
	            : IS("connection")            ? H_CONNECTION
	            : IS("sec-websocket-key")     ? H_WS_KEY
	            : IS("sec-websocket-version") ? H_WS_VERSION
	                                          : H_NONE;
#undef IS
	return 0;
}

static bool
has_token(const char *at, size_t len, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i + tl <= len; i++)
		if (strncasecmp(at + i, token, tl) == 0)
			return true;
	return false;
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
	tk_conn *c = p->data;

	switch (c->header)
	{
	case H_UPGRADE:
		c->hdr_upgrade_ws = has_token(at, len, "websocket");
		break;
	case H_CONNECTION:
		c->hdr_conn_upgrade = c->hdr_conn_upgrade || has_token(at, len, "upgrade");
		break;
	case H_WS_KEY:
		if (c->wskeylen + len < sizeof(c->wskey))
		{
			memcpy(c->wskey + c->wskeylen, at, len);
			c->wskeylen += len;
		}
		else
			c->wskeylen = sizeof(c->wskey); /* too long: refused later */
		break;
	case H_WS_VERSION:
		c->hdr_ws_version13 = len == 2 && memcmp(at, "13", 2) == 0;
		break;
	}
	return 0;
}

/* One complete request (not an upgrade): answered into c->out. */
static int
on_message_complete(http_parser *p)
{
	tk_conn *c = p->data;
	wk_buf body = {0};
	bool keep = http_should_keep_alive(p) != 0;
	const char *path = c->url, *q;
	size_t plen, qlen;

	if (p->upgrade)
		return 0; /* handled once the parser stops */
	q = memchr(c->url, '?', c->urllen);
	plen = q ? (size_t)(q - c->url) : c->urllen;
	qlen = q ? c->urllen - plen - 1 : 0;
	q = q ? q + 1 : "";
	if (c->url_overflow)
	{
		tk_bencode_failure(&body, "request line too long");
		respond(c, 414, "URI Too Long", "text/plain", &body, false);
	}
	else if (p->method != HTTP_GET)
	{
		tk_bencode_failure(&body, "only GET /announce and GET /scrape are served here");
		respond(c, 405, "Method Not Allowed", "text/plain", &body, keep);
	}
	else if (plen == 9 && memcmp(path, "/announce", 9) == 0)
	{
		http_announce(c, q, qlen, &body);
		respond(c, 200, "OK", "text/plain", &body, keep);
	}
	else if (plen == 7 && memcmp(path, "/scrape", 7) == 0)
	{
		http_scrape(c, q, qlen, &body);
		respond(c, 200, "OK", "text/plain", &body, keep);
	}
	else
	{
		tk_bencode_failure(&body, "not found: this tracker serves /announce and /scrape");
		respond(c, 404, "Not Found", "text/plain", &body, keep);
	}
	wk_buf_free(&body);
	if (c->close_after_write)
		http_parser_pause(p, 1); /* what follows a closing answer is not read */
	return 0;
}

/* The request asked to become a WebSocket: answer the handshake or refuse it. */
static void
upgrade(tk_conn *c)
{
	char accept[29];
	wk_buf body = {0};
	const char *q = memchr(c->url, '?', c->urllen);
	size_t plen = q ? (size_t)(q - c->url) : c->urllen;
	bool path_ok = plen == 1 || (plen == 9 && memcmp(c->url, "/announce", 9) == 0);

	if (!c->hdr_upgrade_ws || !c->hdr_conn_upgrade || !c->hdr_ws_version13 || !path_ok ||
	    !tk_ws_accept(c->wskey, c->wskeylen, accept))
	{
		tk_failure(&c->addr, "WebSocket handshake", "bad upgrade request");
		tk_bencode_failure(&body, "bad WebSocket upgrade (RFC 6455, version 13, to / or /announce)");
		respond(c, 400, "Bad Request", "text/plain", &body, false);
		wk_buf_free(&body);
		return;
	}
	wk_buf_printf(&c->out,
	              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	              "Sec-WebSocket-Accept: %s\r\n\r\n",
	              accept);
	c->ws = true;
	free(c->parser);
	c->parser = NULL;
	ev_timer_stop(tk_loop, &c->idle);
	ev_timer_set(&c->idle, 0., (double)(tk_cfg.ws_interval * 2 + 30));
	ev_timer_again(tk_loop, &c->idle);
}

/* WebSocket frames in c->in: messages to wt.c, pings answered, close echoed. */
static void
ws_input(tk_conn *c)
{
	size_t off = 0;

	while (!c->closed && !c->close_after_write)
	{
		tk_ws_frame f;
		const char *why = NULL;
		long used = tk_ws_parse(c->in + off, c->inlen - off, (uint64_t)tk_cfg.ws_max_frame, &f, &why);

		if (used == 0)
			break;
		if (used < 0)
		{
			uint8_t code[2] = {used == -2 ? 0x03 : 0x03, used == -2 ? 0xf1 : 0xea}; /* 1009 / 1002 */
			char reason[128];
			size_t rl = (size_t)snprintf(reason, sizeof(reason), "%c%c%s", code[0], code[1], why);

			tk_failure(&c->addr, "WebSocket frame", why);
			tk_ws_frame_add(&c->out, 8, reason, rl > 125 ? 125 : rl);
			c->close_after_write = true;
			break;
		}
		off += (size_t)used;
		switch (f.opcode)
		{
		case 0: /* continuation */
		case 1:
		case 2:
			if ((f.opcode == 0) == (c->msg_opcode == 0) ||
			    c->msg.len + f.len > (uint64_t)tk_cfg.ws_max_frame)
			{
				static const char bad[] = "\x03\xea" "bad fragmentation or message too large";

				tk_failure(&c->addr, "WebSocket message", "bad fragmentation or too large");
				tk_ws_frame_add(&c->out, 8, bad, sizeof(bad) - 1);
				c->close_after_write = true;
				break;
			}
			if (f.opcode)
				c->msg_opcode = f.opcode;
			if (f.fin && c->msg.len == 0)
			{
				c->msg_opcode = 0;
				tk_wt_message(c, (const char *)f.payload, (size_t)f.len);
			}
			else
			{
				wk_buf_add(&c->msg, (const char *)f.payload, (size_t)f.len);
				if (f.fin)
				{
					c->msg_opcode = 0;
					tk_wt_message(c, c->msg.data, c->msg.len);
					wk_buf_free(&c->msg);
				}
			}
			break;
		case 8:
			tk_ws_frame_add(&c->out, 8, f.payload, f.len >= 2 ? 2 : 0);
			c->close_after_write = true;
			break;
		case 9:
			tk_ws_frame_add(&c->out, 10, f.payload, (size_t)f.len);
			break;
		default: /* pong */
			break;
		}
	}
	if (c->closed)
		return;
	memmove(c->in, c->in + off, c->inlen - off);
	c->inlen -= off;
	ev_timer_again(tk_loop, &c->idle);
	conn_flush(c);
}

static void
http_input(tk_conn *c)
{
	http_parser *p = c->parser;
	size_t used = http_parser_execute(p, &settings, (const char *)c->in, c->inlen);

	if (p->upgrade)
	{
		memmove(c->in, c->in + used, c->inlen - used);
		c->inlen -= used;
		upgrade(c);
		if (c->ws && c->inlen)
		{
			ws_input(c);
			return;
		}
	}
	else if (HTTP_PARSER_ERRNO(p) != HPE_OK && HTTP_PARSER_ERRNO(p) != HPE_PAUSED)
	{
		wk_buf body = {0};

		tk_failure(&c->addr, "HTTP", http_errno_description(HTTP_PARSER_ERRNO(p)));
		tk_bencode_failure(&body, "malformed HTTP request");
		respond(c, 400, "Bad Request", "text/plain", &body, false);
		wk_buf_free(&body);
		c->inlen = 0;
	}
	else
		c->inlen = 0;
	ev_timer_again(tk_loop, &c->idle);
	conn_flush(c);
}

static void
conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	tk_conn_close((tk_conn *)w->data);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	tk_conn *c = w->data;

	(void)loop;
	if (revents & EV_WRITE)
	{
		conn_flush(c);
		if (c->closed)
			return;
	}
	if (!(revents & EV_READ))
		return;
	for (int rounds = 0; rounds < 4 && !c->closed; rounds++)
	{
		ssize_t n;

		if (c->inlen == c->incap)
		{
			/* Only a WebSocket frame in progress fills the buffer: grow it up to
			 * the largest frame accepted (its length was checked on parsing). */
			size_t max = c->ws ? (size_t)tk_cfg.ws_max_frame + 14 : HTTP_IN_MAX;

			if (c->incap >= max)
			{
				tk_conn_close(c);
				return;
			}
			c->incap = c->incap * 2 > max ? max : c->incap * 2;
			c->in = realloc(c->in, c->incap);
			if (c->in == NULL)
			{
				wk_log(WK_ERROR, "out of memory");
				abort();
			}
		}
		n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		{
			tk_conn_close(c);
			return;
		}
		if (n < 0)
			return;
		if (c->close_after_write)
			continue; /* a closing connection's input is dropped */
		c->inlen += (size_t)n;
		if (c->ws)
			ws_input(c);
		else
			http_input(c);
		if ((size_t)n < 4096)
			break;
	}
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	for (int i = 0; i < 64; i++)
	{
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		tk_conn *c;

		if (fd < 0)
		{
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				wk_log(WK_WARN, "accept: %s", strerror(errno));
			return;
		}
		if ((long)nconns >= tk_cfg.max_connections)
		{
			close(fd); /* full: the oldest connections keep their place */
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL)
		{
			close(fd);
			continue;
		}
		c->fd = fd;
		tk_addr_from_sockaddr(&c->addr, &ss);
		c->incap = 4096;
		c->in = malloc(c->incap);
		c->parser = malloc(sizeof(http_parser));
		if (c->in == NULL || c->parser == NULL)
		{
			wk_log(WK_ERROR, "out of memory");
			abort();
		}
		http_parser_init(c->parser, HTTP_REQUEST);
		((http_parser *)c->parser)->data = c;
		ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
		c->io.data = c;
		ev_init(&c->idle, conn_idle_cb);
		c->idle.repeat = tk_cfg.idle_ms / 1000.0;
		c->idle.data = c;
		ev_timer_again(loop, &c->idle);
		ev_io_start(loop, &c->io);
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
		nconns++;
	}
}

void
tk_http_listen(int fd)
{
	ev_prepare_init(&reaper, reap_cb);
	settings.on_message_begin = on_message_begin;
	settings.on_url = on_url;
	settings.on_header_field = on_header_field;
	settings.on_header_value = on_header_value;
	settings.on_message_complete = on_message_complete;
	ev_io_init(&listen_io, accept_cb, fd, EV_READ);
	ev_io_start(tk_loop, &listen_io);
}
