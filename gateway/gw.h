/* The gateway's shared server types: settings, the HTTP request handed to
 * handlers, and the calls handlers use to answer. Each worker process is single
 * threaded (one libev loop), so nothing here is locked; what workers share
 * (metrics) lives in metrics.c. */
#ifndef GW_H
#define GW_H
#include <ev.h>
#include <stddef.h>
#include <sys/types.h>

#include "arena.h"
#include "buf.h"
#include "schema.h"
#include "sql_build.h"

typedef struct gw_settings
{
	const char *host;
	int port;
	int workers;
	int pool_size;
	int prepared; /* prepared statements per pool connection, 0: none */
	int pipeline; /* transactions in flight per pool connection */
	long body_max;         /* JSON bodies */
	long upload_max;       /* POST /upload */
	long header_max;       /* URL + headers */
	double header_timeout; /* seconds to receive a request's head */
	double idle_timeout;   /* keep-alive idle */
	double body_timeout;   /* seconds without body progress */
	double queue_timeout;  /* waiting for a pool connection */
	long statement_timeout_ms;
	const char *store_dir;
	const char *db_user;
	double drain_timeout;
	long file_cache_ms; /* authorization cache of /files lookups */
	double upload_sweep; /* seconds between two sweeps of expired tus uploads */
	int access_log;     /* one log line per answered request */
	int tx_rollback;    /* PGPOD_GATEWAY_TX_END rollback*: end transactions with ROLLBACK */
	int tx_override;    /* PGPOD_GATEWAY_TX_END *-allow-override: Prefer: tx= decides */
	int aggregates;     /* PGPOD_GATEWAY_AGGREGATES=on: count() sum() ... in select= */
} gw_settings;

extern gw_settings gw_cfg;
extern struct ev_loop *gw_loop;
extern int gw_worker_id;
extern volatile int gw_draining;

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
	double started;
	int status;
	int head_only;
};

const char *gw_req_header(const gw_req *req, const char *lower_name);
const char *gw_req_peer(const gw_req *req);

/* Answers: a whole response; the connection continues per keep-alive. */
void gw_respond(gw_req *req, int status, const char *content_type, const char *extra_headers,
                const char *body, size_t len);
void gw_respond_error(gw_req *req, const gw_error *e, const char *extra_headers);
void gw_respond_simple_error(gw_req *req, int status, const char *code, const char *message);
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
void gw_http_init(void);
/* Accepts on fd from now on (once the worker is ready: main.c). */
void gw_http_start(int fd);
void gw_http_drain(void);
int gw_http_active(void);

/* router.c: called when the head is complete (may set on_body or answer early),
 * and when the whole request has arrived. */
void gw_route_head(gw_req *req);
void gw_route(gw_req *req);

/* The request's path and query for a log line, secrets replaced by (redacted). */
void gw_log_redacted_target(gw_buf *out, const char *path, const char *query);

double gw_now(void);
void gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
