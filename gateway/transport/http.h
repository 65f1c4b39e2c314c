/* The transport layer's interface: the HTTP request handed to the layers above,
 * the calls that answer it, and the server's entry points. It knows nothing of
 * routes or of PostgREST: the layer above registers gw_http_handlers. */
#ifndef GW_HTTP_H
#define GW_HTTP_H
#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

#include "arena.h"
#include "buf.h"
#include "settings.h"

typedef struct gw_header
{
	char *name; /* lower-cased */
	char *value;
} gw_header;

typedef struct gw_conn gw_conn;
typedef struct gw_req gw_req;

/* Streaming body consumer set by a handler at head time (uploads). */
typedef int (*gw_body_cb)(gw_req *req, const char *data, size_t len);

struct gw_req
{
	gw_conn *conn;
	gw_arena arena;
	int method; /* enum http_method */
	const char *method_name;
	char *path;  /* decoded path */
	char *query; /* raw query string, "" when none */
	char *target; /* the request target as sent (raw path and query): request.target */
	gw_header *headers;
	int nheaders, headers_cap;
	gw_buf body;
	long content_length;                  /* -1 when chunked or absent */
	gw_body_cb on_body;                   /* set: the body streams to it instead of body */
	void (*on_done)(gw_req *req, int ok); /* cleanup when the request ends */
	void (*on_close)(gw_req *req);        /* the client went away (streams) */
	void *handler;
	/* The layer above's view of the world while the request lives (the schema
	 * snapshot: db/snapshot.h), set by on_head and dropped by on_end; opaque here. */
	struct gw_snapshot *snapshot;
	double started;
	int status;
	int head_only;
};

const char *gw_req_header(const gw_req *req, const char *lower_name);
const char *gw_req_peer(const gw_req *req);

/* Answers: a whole response; the connection continues per keep-alive. */
void gw_respond(gw_req *req, int status, const char *content_type, const char *extra_headers,
                const char *body, size_t len);
/* A file range with sendfile; takes ownership of fd. */
void gw_respond_file(gw_req *req, int status, const char *content_type, const char *extra_headers,
                     int fd, off_t offset, off_t len);
/* Streams (SSE): send headers, then chunks until gw_stream_end or client close. */
void gw_stream_start(gw_req *req, int status, const char *content_type, const char *extra_headers);
void gw_stream_write(gw_req *req, const char *data, size_t len);
int gw_stream_backlog(const gw_req *req);
/* Ends a stream once what is queued is written (the connection closes). */
void gw_stream_end(gw_req *req);
/* The request was answered elsewhere and nothing more will come. */
int gw_req_alive(const gw_req *req);
/* Stops (1) or resumes (0) reading a request's body from the socket: a handler that
 * must ask the database before it accepts the bytes (tus PATCH). What was already read
 * still reaches on_body. */
void gw_req_pause_body(gw_req *req, int pause);

/* http.c */
/* reuseport 0 binds exclusively: the supervisor's probe fails when another
 * gateway already serves the port, instead of silently sharing it. */
int gw_http_listen(const char *host, int port, int reuseport, char *err, size_t errlen);
/* What the layer above does with requests: on_head when a request's head is
 * complete (may set on_body or answer early), on_request when the whole request
 * has arrived, on_error to answer a request the server refuses itself (bad syntax,
 * too large, timeouts) in the dialect's error format. */
typedef struct gw_http_handlers
{
	void (*on_head)(gw_req *req);
	void (*on_request)(gw_req *req);
	void (*on_error)(gw_req *req, int status, const char *code, const char *message);
	void (*on_end)(gw_req *req); /* the request is freed (after its on_done) */
} gw_http_handlers;
void gw_http_init(const gw_http_handlers *handlers);
/* Accepts on fd from now on (once the process is ready: main.c). */
void gw_http_start(int fd);
void gw_http_drain(void);
int gw_http_active(void);

/* The request's path and query for a log line, secrets replaced by (redacted). */
void gw_log_redacted_target(gw_buf *out, const char *path, const char *query);

#endif
