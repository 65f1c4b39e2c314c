/* HTTP/1.1 connections on libev with the nodejs http-parser: accept, parse with
 * size limits, keep-alive and pipelined requests (one in flight at a time per
 * connection), timeouts, buffered writes, sendfile and streams. A connection
 * whose request is still at the database when the client leaves is kept (dead)
 * until the handler finishes, so no handler ever sees freed memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"
#include "url.h"
#include "worker.h"

enum conn_state
{
	CS_HEAD,
	CS_BODY,
	CS_HANDLING,
	CS_STREAM,
	CS_LINGER /* answered and shut down for writing: reading what the client still sends */
};

/* Lingering close (as nginx's lingering_close, h2o's): closing a socket with
 * unread input makes the kernel send RST, which can destroy the answer before
 * the client reads it (a client that sends its whole body before reading: fetch,
 * Python's http.client). So the gateway shuts down writing and reads and drops
 * what comes, until the client's EOF, LINGER_IDLE without data, LINGER_TIME in
 * all or LINGER_BYTES. */
#define LINGER_TIME 5.0
#define LINGER_IDLE 2.0
#define LINGER_BYTES (64L << 20)

struct gw_conn
{
	int fd;
	char peer[INET_ADDRSTRLEN]; /* the client's address, for request.client_ip */
	ev_io rio, wio;
	ev_timer timer;
	http_parser parser;
	enum conn_state state;
	gw_buf in; /* unparsed input */
	size_t in_off;
	gw_buf out;
	size_t out_off;
	int file_fd; /* sendfile source after out drains */
	off_t file_off, file_end;
	gw_req *req;
	gw_buf hname, hval; /* header being parsed */
	int hlast_was_value;
	size_t head_bytes;
	int keep_alive;
	int dead;         /* client gone; freed when the handler is done */
	int close_after;  /* close once out drains */
	int error_status; /* set by a parser callback that rejected the request */
	int message_complete;
	int responded;
	int read_eof;        /* the client shut down its sending side */
	double linger_until; /* CS_LINGER: the end of the lingering close */
	long linger_bytes;   /* CS_LINGER: bytes dropped so far */
	gw_conn *prev, *next;
	gw_conn *znext; /* closed, waiting to be freed by the reaper */
};

static http_parser_settings parser_settings;
static ev_io listen_io;
static ev_timer accept_pause;
static int listen_fd = -1;
static gw_conn *conns;
static gw_conn *zombies;
static int nconns;
static ev_check reaper;

static gw_http_handlers handlers; /* the layer above (router.c) */

static void conn_close(gw_conn *c);
static void conn_end(gw_conn *c);
static void conn_flush(gw_conn *c, int from_loop);
static void conn_parse(gw_conn *c);

const char *
gw_req_header(const gw_req *req, const char *name)
{
	for (int i = 0; i < req->nheaders; i++)
		if (!strcmp(req->headers[i].name, name))
			return req->headers[i].value;
	return NULL;
}

/* The client's IPv4 address as text, "" when unknown. */
const char *
gw_req_peer(const gw_req *req)
{
	return req->conn ? req->conn->peer : "";
}

int
gw_req_alive(const gw_req *req)
{
	return req->conn && !req->conn->dead;
}

void
gw_req_pause_body(gw_req *req, int pause)
{
	gw_conn *c = req ? req->conn : NULL;
	if (!c || c->fd < 0 || c->state != CS_BODY)
		return;
	if (pause)
		ev_io_stop(gw_loop, &c->rio);
	else
		ev_io_start(gw_loop, &c->rio);
}

static void
arm_timer(gw_conn *c, double seconds)
{
	ev_timer_stop(gw_loop, &c->timer);
	if (seconds > 0)
	{
		ev_timer_set(&c->timer, seconds, 0);
		ev_timer_start(gw_loop, &c->timer);
	}
}

static gw_spare spare_reqs; /* finished requests, reused */

static void
req_free(gw_req *req)
{
	if (!req)
		return;
	if (req->on_done)
		req->on_done(req, req->status > 0 && req->status < 400);
	if (handlers.on_end)
		handlers.on_end(req);
	gw_buf_free(&req->body);
	gw_arena_free(&req->arena);
	gw_spare_free(&spare_reqs, req);
}

static gw_req *
req_new(gw_conn *c)
{
	gw_req *r = gw_spare_calloc(&spare_reqs, sizeof *r);
	if (!r)
		abort();
	r->conn = c;
	gw_arena_init(&r->arena);
	gw_buf_init(&r->body);
	r->content_length = -1;
	r->started = ev_time();
	return r;
}

static const char *
reason(int status)
{
	switch (status)
	{
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 300:
		return "Multiple Choices";
	case 304:
		return "Not Modified";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 402:
		return "Payment Required";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 406:
		return "Not Acceptable";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 411:
		return "Length Required";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 416:
		return "Range Not Satisfiable";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		return "Status";
	}
}

static void
write_head(gw_conn *c, int status, const char *content_type, const char *extra,
           long long content_length, int chunked_stream)
{
	/* the Date header changes once a second: formatted then, not per response */
	static time_t date_at = (time_t)-1;
	static char date[64];
	time_t t = time(NULL);
	if (t != date_at)
	{
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		date_at = t;
	}
	gw_buf_puts(&c->out, "HTTP/1.1 ");
	gw_buf_put_long(&c->out, status);
	gw_buf_putc(&c->out, ' ');
	gw_buf_puts(&c->out, reason(status));
	gw_buf_puts(&c->out, "\r\nDate: ");
	gw_buf_puts(&c->out, date);
	/* no answer of the gateway is ever to be sniffed into another type */
	gw_buf_puts(&c->out, "\r\nServer: pgpod-gateway\r\nX-Content-Type-Options: nosniff\r\n");
	if (content_type)
	{
		gw_buf_puts(&c->out, "Content-Type: ");
		gw_buf_puts(&c->out, content_type);
		gw_buf_puts(&c->out, "\r\n");
	}
	if (content_length >= 0 && status != 204 && status != 304)
	{
		gw_buf_puts(&c->out, "Content-Length: ");
		gw_buf_put_long(&c->out, content_length);
		gw_buf_puts(&c->out, "\r\n");
	}
	if (extra)
		gw_buf_puts(&c->out, extra);
	if (c->req && gw_req_header(c->req, "origin"))
		/* PostgREST's default CORS answer: any origin, API headers readable */
		gw_buf_puts(
		    &c->out,
		    "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Content-Encoding, "
		    "Content-Location, Content-Range, Content-Type, Date, Location, Server, "
		    "Transfer-Encoding, "
		    "Range-Unit, Preference-Applied, ETag, Upload-Offset, Upload-Length, Upload-Expires, "
		    "Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size\r\n");
	if (chunked_stream)
		gw_buf_puts(&c->out, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
	if (!c->message_complete && !chunked_stream)
		c->keep_alive = 0; /* answered before the body was read: the connection ends */
	if (!c->keep_alive || chunked_stream || gw_draining)
		gw_buf_puts(&c->out, "Connection: close\r\n");
	else
		gw_buf_puts(&c->out, "Connection: keep-alive\r\n");
	gw_buf_puts(&c->out, "\r\n");
	if (gw_draining || chunked_stream)
		c->keep_alive = 0;
}

/* A parameter whose value is a secret: named so (after percent-decoding, in any
 * case), as access_token is for /files and /rooms/<id>/events. */
static int
secret_param(const char *key, size_t n)
{
	static const char *const names[] = {"access_token", "token",  "refresh_token", "id_token",
	                                    "password",     "secret", "jwt"};
	char k[32];
	size_t o = 0;
	for (size_t i = 0; i < n && o + 1 < sizeof k; i++)
	{
		char ch = key[i];
		if (ch == '%' && i + 2 < n)
		{
			unsigned v;
			if (sscanf(key + i + 1, "%2x", &v) == 1)
			{
				ch = (char)v;
				i += 2;
			}
		}
		else if (ch == '+')
			ch = ' ';
		k[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
	}
	if (o + 1 >= sizeof k)
		return 0;
	k[o] = '\0';
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (!strcmp(k, names[i]))
			return 1;
	return 0;
}

/* Appends s, with every JSON Web Token in it (three base64url parts, the first
 * one a JSON object: "eyJ") replaced by (redacted). */
static void
put_without_jwts(gw_buf *out, const char *s, size_t n)
{
#define B64URL(ch) (((ch) >= 'A' && (ch) <= 'Z') || ((ch) >= 'a' && (ch) <= 'z') || ((ch) >= '0' && (ch) <= '9') || (ch) == '-' || (ch) == '_')
	size_t i = 0;
	while (i < n)
	{
		if (i + 3 <= n && !memcmp(s + i, "eyJ", 3))
		{
			size_t j = i, dots = 0;
			while (j < n && (B64URL(s[j]) || (s[j] == '.' && dots < 2 && (dots++, 1))))
				j++;
			if (dots == 2)
			{
				gw_buf_puts(out, "(redacted)");
				i = j;
				continue;
			}
		}
		gw_buf_putc(out, s[i++]);
	}
#undef B64URL
}

/* The request target as the access log shows it: every parameter named as a
 * secret has its value replaced, every occurrence (parameters split at & and ;
 * as PostgREST splits them), and anything shaped like a JWT is removed too. */
void
gw_log_redacted_target(gw_buf *out, const char *path, const char *query)
{
	put_without_jwts(out, path, strlen(path));
	if (!*query)
		return;
	gw_buf_putc(out, '?');
	const char *p = query;
	for (;;)
	{
		size_t n = strcspn(p, "&;");
		const char *eq = memchr(p, '=', n);
		if (eq && secret_param(p, (size_t)(eq - p)))
		{
			gw_buf_append(out, p, (size_t)(eq - p) + 1);
			gw_buf_puts(out, "(redacted)");
		}
		else
			put_without_jwts(out, p, n);
		if (!p[n])
			break;
		gw_buf_putc(out, p[n]);
		p += n + 1;
	}
}

static void
finish_request(gw_req *req, int status)
{
	gw_conn *c = req->conn;
	double elapsed = ev_time() - req->started;
	req->status = status;
	gw_metrics_request(status, elapsed);
	if (gw_cfg.access_log)
	{
		gw_buf line;
		gw_buf_init(&line);
		gw_log_redacted_target(&line, req->path ? req->path : "-", req->query ? req->query : "");
		wk_log(WK_INFO, "%s %s %d %.1f ms", req->method_name ? req->method_name : "-", line.data, status,
		       elapsed * 1000.0);
		gw_buf_free(&line);
	}
	if (c)
		c->responded = 1;
}

void
gw_respond(gw_req *req, int status, const char *content_type, const char *extra, const char *body,
           size_t len)
{
	gw_conn *c = req->conn;
	if (!c || c->responded)
		return;
	finish_request(req, status);
	if (c->dead)
		return;
	write_head(c, status, content_type, extra, (long long)len, 0);
	if (!req->head_only && status != 204 && status != 304 && len)
		gw_buf_append(&c->out, body, len);
	conn_flush(c, 0);
}

void
gw_respond_file(gw_req *req, int status, const char *content_type, const char *extra, int fd,
                off_t offset, off_t len)
{
	gw_conn *c = req->conn;
	if (!c || c->responded)
	{
		close(fd);
		return;
	}
	finish_request(req, status);
	if (c->dead)
	{
		close(fd);
		return;
	}
	write_head(c, status, content_type, extra, (long long)len, 0);
	if (req->head_only || len == 0)
	{
		close(fd);
	}
	else
	{
		c->file_fd = fd;
		c->file_off = offset;
		c->file_end = offset + len;
	}
	conn_flush(c, 0);
}

void
gw_stream_start(gw_req *req, int status, const char *content_type, const char *extra)
{
	gw_conn *c = req->conn;
	if (!c || c->dead || c->responded)
		return;
	finish_request(req, status);
	c->state = CS_STREAM;
	write_head(c, status, content_type, extra, -1, 1);
	arm_timer(c, 0);
	/* read again, only to notice the client leaving */
	ev_io_start(gw_loop, &c->rio);
	conn_flush(c, 0);
}

void
gw_stream_write(gw_req *req, const char *data, size_t len)
{
	gw_conn *c = req->conn;
	if (!c || c->dead || c->state != CS_STREAM)
		return;
	gw_buf_append(&c->out, data, len);
	conn_flush(c, 0);
}

void
gw_stream_end(gw_req *req)
{
	gw_conn *c = req->conn;
	if (!c || c->dead || c->state != CS_STREAM)
		return;
	c->close_after = 1;
	conn_flush(c, 0); /* closes from the loop once written, never inside the caller */
}

int
gw_stream_backlog(const gw_req *req)
{
	const gw_conn *c = req->conn;
	return c ? (int)(c->out.len - c->out_off) : 0;
}

/* Called when everything queued has been written. */
static void
response_done(gw_conn *c)
{
	if (c->state == CS_STREAM && c->close_after)
	{
		conn_close(c); /* gw_stream_end */
		return;
	}
	if (c->state == CS_STREAM || !c->responded)
		return;
	if (!c->keep_alive || c->close_after || !c->message_complete)
	{
		conn_end(c);
		return;
	}
	req_free(c->req);
	c->req = NULL;
	c->state = CS_HEAD;
	c->responded = 0;
	c->message_complete = 0;
	c->head_bytes = 0;
	arm_timer(c, gw_cfg.idle_timeout);
	ev_io_start(gw_loop, &c->rio);
	/* pipelined requests already read continue now */
	if (c->in.len > c->in_off)
		conn_parse(c);
}

static void
conn_flush(gw_conn *c, int from_loop)
{
	while (c->out_off < c->out.len)
	{
		ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
		if (n < 0)
		{
			if (errno == EAGAIN || errno == EINTR)
				break;
			c->dead = 1;
			conn_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len)
	{
		gw_buf_reset(&c->out);
		c->out_off = 0;
		while (c->file_fd >= 0 && c->file_off < c->file_end)
		{
			ssize_t n =
			    sendfile(c->fd, c->file_fd, &c->file_off, (size_t)(c->file_end - c->file_off));
			if (n < 0)
			{
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_close(c);
				return;
			}
			if (n == 0)
			{ /* the file shrank under us: the length already sent is wrong */
				conn_close(c);
				return;
			}
		}
		if (c->file_fd >= 0 && c->file_off >= c->file_end)
		{
			close(c->file_fd);
			c->file_fd = -1;
		}
	}
	int pending = c->out_off < c->out.len || c->file_fd >= 0;
	if (pending)
	{
		ev_io_start(gw_loop, &c->wio);
		if (c->state != CS_STREAM)
			arm_timer(c, gw_cfg.body_timeout);
	}
	else
	{
		ev_io_stop(gw_loop, &c->wio);
		if (c->state == CS_STREAM && !c->close_after)
			return; /* a stream's write finishes nothing (one loop callback per event saved) */
		/* finishing may free the request: never inside a handler's call */
		if (from_loop)
			response_done(c);
		else
			ev_feed_event(gw_loop, &c->wio, EV_WRITE);
	}
}

/* Closes the socket now; the memory goes to the reaper, which frees it once no
 * handler can still be working on the request. */
static void
conn_close(gw_conn *c)
{
	if (c->fd < 0)
		return;
	ev_io_stop(gw_loop, &c->rio);
	ev_io_stop(gw_loop, &c->wio);
	ev_timer_stop(gw_loop, &c->timer);
	close(c->fd);
	c->fd = -1;
	c->dead = 1;
	if (c->file_fd >= 0)
	{
		close(c->file_fd);
		c->file_fd = -1;
	}
	if (c->req && c->req->on_close)
	{
		void (*cb)(gw_req *) = c->req->on_close;
		c->req->on_close = NULL;
		cb(c->req);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns--;
	gw_metrics_connections(-1);
	c->znext = zombies;
	zombies = c;
}

/* Ends a connection whose answer is written: at once when the client has
 * shut down its side (nothing unread can follow), else by a lingering close. */
static void
conn_end(gw_conn *c)
{
	if (c->fd < 0)
		return;
	if (c->read_eof)
	{
		conn_close(c);
		return;
	}
	c->state = CS_LINGER;
	ev_io_stop(gw_loop, &c->wio);
	if (shutdown(c->fd, SHUT_WR))
	{
		conn_close(c);
		return;
	}
	gw_buf_reset(&c->in);
	c->in_off = 0;
	c->linger_until = ev_now(gw_loop) + LINGER_TIME;
	c->linger_bytes = 0;
	arm_timer(c, LINGER_IDLE);
	ev_io_start(gw_loop, &c->rio);
}

/* CS_LINGER: drops what the client still sends; ends at its EOF or a limit. */
static void
linger_read(gw_conn *c)
{
	char buf[65536];
	for (;;)
	{
		ssize_t n = recv(c->fd, buf, sizeof buf, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0)
		{
			conn_close(c);
			return;
		}
		c->linger_bytes += n;
		if (c->linger_bytes > LINGER_BYTES)
		{
			conn_close(c);
			return;
		}
	}
	double left = c->linger_until - ev_now(gw_loop);
	if (left <= 0)
	{
		conn_close(c);
		return;
	}
	arm_timer(c, left < LINGER_IDLE ? left : LINGER_IDLE);
}

static void
reap(struct ev_loop *loop, ev_check *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	gw_conn **pp = &zombies;
	while (*pp)
	{
		gw_conn *c = *pp;
		if (c->state == CS_HANDLING && !c->responded)
		{
			pp = &c->znext;
			continue;
		}
		*pp = c->znext;
		req_free(c->req);
		gw_buf_free(&c->in);
		gw_buf_free(&c->out);
		gw_buf_free(&c->hname);
		gw_buf_free(&c->hval);
		free(c);
	}
}

/* The request will not complete: its handler cleans up now (an upload removes
 * its partial file before the answer goes out) and hears nothing more. */
static void
req_abort_handler(gw_req *req)
{
	if (!req)
		return;
	req->on_body = NULL;
	if (req->on_done)
	{
		void (*done)(gw_req *, int) = req->on_done;
		req->on_done = NULL;
		done(req, 0);
	}
}

static void
reject(gw_conn *c, int status, const char *code, const char *message)
{
	if (!c->req)
		c->req = req_new(c);
	c->close_after = 1;
	c->keep_alive = 0;
	c->message_complete = 1;
	handlers.on_error(c->req, status, code, message);
}

/* --- http-parser callbacks ------------------------------------------------- */

static int
on_message_begin(http_parser *p)
{
	gw_conn *c = p->data;
	c->req = req_new(c);
	c->state = CS_HEAD;
	c->hlast_was_value = 0;
	gw_buf_reset(&c->hname);
	gw_buf_reset(&c->hval);
	return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
	gw_conn *c = p->data;
	c->head_bytes += len;
	if (c->head_bytes > (size_t)gw_cfg.header_max)
	{
		c->error_status = 414;
		return -1;
	}
	gw_buf_append(&c->hname, at, len); /* the URL is gathered in hname until the first header */
	return 0;
}

static void
store_header(gw_conn *c)
{
	gw_req *r = c->req;
	gw_header *h =
	    gw_arena_push(&r->arena, (void **)&r->headers, &r->nheaders, &r->headers_cap, sizeof *h);
	h->name = gw_arena_strndup(&r->arena, c->hname.data ? c->hname.data : "", c->hname.len);
	for (char *s = h->name; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s + 32);
	h->value = gw_arena_strndup(&r->arena, c->hval.data ? c->hval.data : "", c->hval.len);
	gw_buf_reset(&c->hname);
	gw_buf_reset(&c->hval);
}

static int
url_done(gw_conn *c)
{
	gw_req *r = c->req;
	if (r->path)
		return 0;
	const char *u = c->hname.data ? c->hname.data : "";
	size_t n = c->hname.len;
	const char *q = memchr(u, '?', n);
	size_t plen = q ? (size_t)(q - u) : n;
	char *path = gw_url_decode(&r->arena, u, plen, 0);
	if (!path || path[0] != '/')
	{
		c->error_status = 400;
		return -1;
	}
	r->path = path;
	r->target = gw_arena_strndup(&r->arena, u, n);
	r->query =
	    q ? gw_arena_strndup(&r->arena, q + 1, n - plen - 1) : gw_arena_strdup(&r->arena, "");
	gw_buf_reset(&c->hname);
	return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
	gw_conn *c = p->data;
	if (url_done(c))
		return -1;
	c->head_bytes += len;
	if (c->head_bytes > (size_t)gw_cfg.header_max)
	{
		c->error_status = 431;
		return -1;
	}
	if (c->hlast_was_value)
	{
		store_header(c);
		c->hlast_was_value = 0;
	}
	gw_buf_append(&c->hname, at, len);
	return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
	gw_conn *c = p->data;
	c->head_bytes += len;
	if (c->head_bytes > (size_t)gw_cfg.header_max)
	{
		c->error_status = 431;
		return -1;
	}
	c->hlast_was_value = 1;
	gw_buf_append(&c->hval, at, len);
	return 0;
}

static int
on_headers_complete(http_parser *p)
{
	gw_conn *c = p->data;
	gw_req *r = c->req;
	if (url_done(c))
		return -1;
	if (c->hlast_was_value)
		store_header(c);
	r->method = p->method;
	r->method_name = http_method_str(p->method);
	r->head_only = p->method == HTTP_HEAD;
	c->keep_alive = http_should_keep_alive(p);
	/* http-parser keeps ULLONG_MAX when no Content-Length was given; a length past
	 * LONG_MAX is LONG_MAX, over every limit (413), never "no length" */
	if (p->content_length != ULLONG_MAX)
		r->content_length =
		    p->content_length < (uint64_t)LONG_MAX ? (long)p->content_length : LONG_MAX;
	c->state = CS_BODY;
	arm_timer(c, gw_cfg.body_timeout);
	handlers.on_head(r);
	if (c->responded)
	{ /* answered early (auth, size): the body is not read */
		c->close_after = 1;
		c->keep_alive = 0;
		http_parser_pause(p, 1);
		return 0;
	}
	const char *expect = gw_req_header(r, "expect");
	if (expect && !strcasecmp(expect, "100-continue") && p->http_minor >= 1)
	{
		/* the client waits for this before sending a large body (curl, uploads) */
		gw_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
		conn_flush(c, 0);
	}
	/* a bodyless request of a method that never has one */
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
	gw_conn *c = p->data;
	gw_req *r = c->req;
	if (c->responded)
		return 0;
	arm_timer(c, gw_cfg.body_timeout);
	if (r->on_body)
		return r->on_body(r, at, len) ? -1 : 0;
	if ((long)(r->body.len + len) > gw_cfg.body_max)
	{
		c->error_status = 413;
		return -1;
	}
	gw_buf_append(&r->body, at, len);
	return 0;
}

static int
on_message_complete(http_parser *p)
{
	gw_conn *c = p->data;
	c->message_complete = 1;
	http_parser_pause(p, 1);
	return 0;
}

/* --- reading ------------------------------------------------------------- */

static void
handle_parse_error(gw_conn *c)
{
	int status = c->error_status ? c->error_status : 400;
	const char *msg = status == 413   ? "Payload Too Large"
	                  : status == 414 ? "URI Too Long"
	                  : status == 431 ? "Request Header Fields Too Large"
	                                  : "Malformed HTTP request";
	if (c->req && c->req->on_body && status == 400 && c->error_status == 0)
		msg = "The request body could not be stored";
	if (c->responded)
	{
		c->close_after = 1;
		c->keep_alive = 0;
		if (c->out.len == c->out_off && c->file_fd < 0)
			conn_end(c);
		return;
	}
	reject(c, status, "PGRST000", msg);
}

static void
conn_parse(gw_conn *c)
{
	while (c->in_off < c->in.len && c->fd >= 0)
	{
		size_t avail = c->in.len - c->in_off;
		size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.data + c->in_off, avail);
		c->in_off += n;
		enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
		if (err == HPE_PAUSED)
		{
			http_parser_pause(&c->parser, 0);
			if (c->responded && !c->message_complete)
			{
				/* an early answer: stop reading, close after writing */
				ev_io_stop(gw_loop, &c->rio);
				return;
			}
			if (c->message_complete)
			{
				/* the read watcher stays on (stopping and starting it costs an
				 * epoll_ctl per request): on_read only keeps what comes meanwhile */
				c->state = CS_HANDLING;
				arm_timer(c, 0);
				handlers.on_request(c->req);
				return;
			}
			continue;
		}
		if (err != HPE_OK)
		{
			ev_io_stop(gw_loop, &c->rio);
			handle_parse_error(c);
			return;
		}
		if (n < avail)
			break;
	}
	if (c->in_off == c->in.len)
	{
		gw_buf_reset(&c->in);
		c->in_off = 0;
	}
}

static void
on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	gw_conn *c = w->data;
	if (c->state == CS_LINGER)
	{
		linger_read(c);
		return;
	}
	char buf[65536];
	ssize_t n = recv(c->fd, buf, sizeof buf, 0);
	if (n < 0)
	{
		if (errno == EAGAIN || errno == EINTR)
			return;
		conn_close(c);
		return;
	}
	if (n == 0)
		c->read_eof = 1;
	if (n == 0 && c->state == CS_HANDLING)
	{
		/* the client is done sending (half-close): answer, then close */
		ev_io_stop(gw_loop, &c->rio);
		c->keep_alive = 0;
		return;
	}
	if (n == 0)
	{
		ev_io_stop(gw_loop, &c->rio);
		if (!c->responded && (c->state == CS_BODY || (c->state == CS_HEAD && c->req)))
		{
			/* a request cut short by a half-close still gets its answer (the
			 * client may be waiting for it); the handler drops what it stored */
			int body = c->state == CS_BODY;
			req_abort_handler(c->req);
			reject(c, 400, "PGRST000",
			       !body ? "The request ended before its head was complete"
			       : c->req->content_length >= 0 ? "The request body is shorter than Content-Length"
			                                     : "The request body ended before its last chunk");
			return;
		}
		if (c->responded && c->state != CS_STREAM)
		{
			/* answered early: close once the answer is out */
			c->keep_alive = 0;
			c->close_after = 1;
			if (c->out.len == c->out_off && c->file_fd < 0)
				conn_close(c);
			return;
		}
		conn_close(c);
		return;
	}
	if (c->state == CS_STREAM)
		return; /* stream clients send nothing meaningful */
	if (c->in_off > 0 && c->in_off == c->in.len)
	{
		gw_buf_reset(&c->in);
		c->in_off = 0;
	}
	gw_buf_append(&c->in, buf, (size_t)n);
	if (c->state == CS_HANDLING)
	{
		/* a pipelined request: parsed once this one is answered; reading
		 * pauses while that much is waiting */
		if (c->in.len - c->in_off > (size_t)gw_cfg.header_max + sizeof buf)
			ev_io_stop(gw_loop, &c->rio);
		return;
	}
	if (c->state == CS_HEAD && !c->req)
		arm_timer(c, gw_cfg.header_timeout);
	conn_parse(c);
}

static void
on_write(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	conn_flush(w->data, 1);
}

static void
on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	gw_conn *c = w->data;
	if (c->state == CS_LINGER)
	{
		conn_close(c); /* silent for LINGER_IDLE, or LINGER_TIME is over */
		return;
	}
	if (c->state == CS_HEAD && !c->req)
	{
		conn_close(c); /* idle keep-alive */
		return;
	}
	if ((c->state == CS_HEAD || c->state == CS_BODY) && !c->responded)
	{
		ev_io_stop(gw_loop, &c->rio);
		reject(c, 408, "PGRST000", "Request Timeout");
		return;
	}
	conn_close(c); /* a client that does not read its response */
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	for (int i = 0; i < 64; i++)
	{
		struct sockaddr_in peer;
		socklen_t peer_len = sizeof peer;
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
		{
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			{
				/* out of descriptors: the level-triggered watcher would spin; pause
				 * accepting for a second and say so once */
				wk_log(WK_WARN, "accept: %s; pausing new connections for 1 s", strerror(errno));
				ev_io_stop(gw_loop, &listen_io);
				ev_timer_set(&accept_pause, 1.0, 0);
				ev_timer_start(gw_loop, &accept_pause);
			}
			else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				wk_log(WK_WARN, "accept: %s", strerror(errno));
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		gw_conn *c = calloc(1, sizeof *c);
		if (!c)
			abort();
		c->fd = fd;
		if (peer.sin_family != AF_INET || !inet_ntop(AF_INET, &peer.sin_addr, c->peer, sizeof c->peer))
			c->peer[0] = '\0';
		c->file_fd = -1;
		http_parser_init(&c->parser, HTTP_REQUEST);
		c->parser.data = c;
		ev_io_init(&c->rio, on_read, fd, EV_READ);
		ev_io_init(&c->wio, on_write, fd, EV_WRITE);
		ev_init(&c->timer, on_timeout);
		c->rio.data = c->wio.data = c->timer.data = c;
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
		nconns++;
		gw_metrics_connections(1);
		ev_io_start(gw_loop, &c->rio);
		arm_timer(c, gw_cfg.header_timeout);
	}
}

static void
on_accept_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (listen_fd >= 0)
		ev_io_start(gw_loop, &listen_io);
}

int
gw_http_listen(const char *host, int port, int reuseport, char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
	{
		snprintf(err, errlen, "bad listen address %s", host);
		close(fd);
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 1024))
	{
		snprintf(err, errlen, "bind/listen %s:%d: %s", host, port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void
gw_http_init(const gw_http_handlers *h)
{
	handlers = *h;
	http_parser_settings_init(&parser_settings);
	parser_settings.on_message_begin = on_message_begin;
	parser_settings.on_url = on_url;
	parser_settings.on_header_field = on_header_field;
	parser_settings.on_header_value = on_header_value;
	parser_settings.on_headers_complete = on_headers_complete;
	parser_settings.on_body = on_body;
	parser_settings.on_message_complete = on_message_complete;
	ev_check_init(&reaper, reap);
	ev_check_start(gw_loop, &reaper);
	ev_init(&accept_pause, on_accept_pause);
}

void
gw_http_start(int fd)
{
	listen_fd = fd;
	ev_io_init(&listen_io, on_accept, fd, EV_READ);
	ev_io_start(gw_loop, &listen_io);
}

/* Stops accepting and closes idle connections; busy ones close after answering. */
void
gw_http_drain(void)
{
	ev_timer_stop(gw_loop, &accept_pause);
	if (listen_fd >= 0)
	{
		ev_io_stop(gw_loop, &listen_io);
		close(listen_fd);
		listen_fd = -1;
	}
	gw_conn *c = conns;
	while (c)
	{
		gw_conn *next = c->next;
		if ((c->state == CS_HEAD && !c->req) || c->state == CS_STREAM)
			conn_close(c);
		else
			c->keep_alive = 0;
		c = next;
	}
}

int
gw_http_active(void)
{
	int n = nconns;
	for (gw_conn *c = zombies; c; c = c->znext)
		n++;
	return n;
}
