/*
 * worker.h — the small library every pgpod daemon shares: logging, growable buffers
 * and PostgreSQL array literals, one asynchronous libpq connection on a libev loop
 * (connect, reconnect, LISTEN, one query at a time), signals and sd_notify.
 * Single-threaded: everything runs on the daemon's one ev_loop.
 */
#ifndef PGPOD_WORKER_H
#define PGPOD_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <libpq-fe.h>

/* --- log.c ------------------------------------------------------------------- */
enum wk_level
{
	WK_DEBUG,
	WK_INFO,
	WK_WARN,
	WK_ERROR
};
void wk_log_init(const char *name);
void wk_log(enum wk_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern enum wk_level wk_log_threshold;

/* --- buf.c: growable strings, PostgreSQL array literals ----------------------- */
typedef struct wk_buf
{
	char *data; /* always NUL-terminated once anything was added */
	size_t len;
	size_t cap;
} wk_buf;

/* Room for more bytes (and the NUL) without another allocation; aborts without memory. */
void wk_buf_reserve(wk_buf *b, size_t more);
void wk_buf_add(wk_buf *b, const char *s, size_t n);
void wk_buf_adds(wk_buf *b, const char *s);
void wk_buf_printf(wk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wk_buf_reset(wk_buf *b);
void wk_buf_free(wk_buf *b);
/* Appends one element (quoted and escaped, or NULL) to an array literal being built
 * between wk_array_begin and wk_array_end. */
void wk_array_begin(wk_buf *b);
void wk_array_add(wk_buf *b, const char *element);
void wk_array_end(wk_buf *b);
/* Reads an integer from the environment, or the default when unset or invalid. */
long wk_env_long(const char *name, long fallback, long min, long max);

/* --- conn.c: one libpq connection's life (the one reconnect loop) -------------------- */
/* WAIT: down, a retry is scheduled (or nothing, after may_connect said no); CONNECTING:
 * PQconnectPoll runs on the socket; UP: the owner's (io gets the socket's events);
 * CLOSED: wk_conn_close, nothing runs. */
enum wk_conn_state
{
	WK_CONN_WAIT,
	WK_CONN_CONNECTING,
	WK_CONN_UP,
	WK_CONN_CLOSED
};
typedef struct wk_conn wk_conn;
typedef struct wk_conn_callbacks
{
	/* Begins a connection (PQconnectStart or PQconnectStartParams): NULL when out of
	 * memory; a CONNECTION_BAD one counts as a failed attempt. */
	PGconn *(*start)(wk_conn *c, void *arg);
	/* Connected; the socket is watched for reading (wk_conn_watch to change it). */
	void (*up)(wk_conn *c, void *arg);
	/* The socket is ready while up. */
	void (*io)(wk_conn *c, int revents, void *arg);
	/* Optional: just before PQfinish, c->pg still valid. */
	void (*closing)(wk_conn *c, void *arg);
	/* The attempt failed or the connection was lost (was_up): closed, and the retry
	 * is scheduled in c->backoff seconds (c->backoff_before: the delay before it). */
	void (*down)(wk_conn *c, const char *why, bool was_up, void *arg);
	/* Optional: asked at each retry; false leaves the connection down. */
	bool (*may_connect)(wk_conn *c, void *arg);
	void *arg;
} wk_conn_callbacks;
struct wk_conn
{
	struct ev_loop *loop;
	PGconn *pg; /* NULL unless CONNECTING or UP */
	enum wk_conn_state state;
	ev_io io;
	ev_timer timer;         /* the retry, or the connect timeout */
	double backoff;         /* the last retry delay; 0: never failed since healthy */
	double backoff_before;  /* the delay before that one (logging of repeated failures) */
	double connect_timeout; /* 0: none */
	wk_conn_callbacks cb;
};
/* Sets c up (embedded in its owner); nothing starts before wk_conn_start. */
void wk_conn_init(wk_conn *c, struct ev_loop *loop, wk_conn_callbacks cb);
/* The first attempt, now (no-op while connecting or up). */
void wk_conn_start(wk_conn *c);
void wk_conn_set_connect_timeout(wk_conn *c, double seconds);
/* The connection proved good: the next loss retries after WK_BACKOFF_FIRST. */
void wk_conn_healthy(wk_conn *c);
/* Watches the socket for events (EV_READ, EV_WRITE; 0: not at all). */
void wk_conn_watch(wk_conn *c, int events);
/* The connection is unusable (why: a message, copied): closes it, schedules the retry,
 * calls down. No-op unless connecting or up. */
void wk_conn_lost(wk_conn *c, const char *why);
/* Loss detection for the owner: PQflush (then watch for reading, and writing while
 * output is queued), PQconsumeInput, PQstatus; each calls wk_conn_lost on failure.
 * flush: 0 sent, 1 more queued, -1 lost; consume/check: false when lost. */
int wk_conn_flush(wk_conn *c);
bool wk_conn_consume(wk_conn *c);
bool wk_conn_check(wk_conn *c);
/* Closes for good (no callbacks but closing). */
void wk_conn_close(wk_conn *c);

/* --- db.c: one async connection ----------------------------------------------- */
typedef struct wk_db wk_db;
/* A query's outcome: res is the last result (PGRES_TUPLES_OK, COMMAND_OK or an error);
 * NULL when the connection was lost before it finished. The callee must not PQclear. */
typedef void (*wk_db_result_cb)(wk_db *db, PGresult *res, void *arg);
typedef struct wk_db_callbacks
{
	void (*ready)(wk_db *db, void *arg); /* connected (and listening) or a query ended */
	void (*notify)(wk_db *db, const char *channel, void *arg);
	void (*lost)(wk_db *db, void *arg); /* the connection went away */
	void *arg;
} wk_db_callbacks;

wk_db *wk_db_new(struct ev_loop *loop, const char *conninfo, const char *const *channels,
                 wk_db_callbacks callbacks);
/* True when connected, listening and no query is in flight. */
bool wk_db_idle(const wk_db *db);
bool wk_db_connected(const wk_db *db);
/* Sends a query; false (and nothing sent) unless the connection is idle. */
bool wk_db_query(wk_db *db, const char *sql, int nparams, const char *const *params,
                 wk_db_result_cb cb, void *arg);
void wk_db_free(wk_db *db);
/* A query of several statements (simple protocol, no parameters): each(db, res, arg)
 * sees every result as it arrives (res freed after it returns), then done as
 * wk_db_query's callback (NULL when the connection was lost). */
bool wk_db_query_each(wk_db *db, const char *sql, wk_db_result_cb each, wk_db_result_cb done,
                      void *arg);
/* Gives up a connection attempt after seconds (libpq does not time out non-blocking
 * connects); off by default. Set right after wk_db_new, it covers the first attempt. */
void wk_db_set_connect_timeout(wk_db *db, double seconds);
/* Also hands each notification's payload to cb (with callbacks.arg); set right after
 * wk_db_new (nothing arrives before the LISTEN). */
typedef void (*wk_db_payload_cb)(wk_db *db, const char *channel, const char *payload, void *arg);
void wk_db_set_notify_payload(wk_db *db, wk_db_payload_cb cb);

/* --- notify.c: systemd readiness (Type=notify) -------------------------------- */
/* Sends a state string ("READY=1", "STOPPING=1", "STATUS=...") to $NOTIFY_SOCKET;
 * 0 when sent or when not under systemd, -1 on error. */
int wk_sd_notify(const char *state);
/* systemd's watchdog (WatchdogSec=): the interval systemd gave this process
 * (WATCHDOG_USEC, when WATCHDOG_PID is unset or ours), 0 when none; and pings
 * ("WATCHDOG=1") every half interval from loop's timers (wk_daemon_start does it). */
double wk_watchdog_interval(void);
void wk_watchdog_start(struct ev_loop *loop);

/* --- daemon.c: signals and draining (every daemon, each gateway process) ----------- */
/* SIGTERM/SIGINT (the first; later ones are ignored): the stopping flag is set,
 * STOPPING=1 goes to systemd (unless no_sd_notify), stop(arg) begins the daemon's
 * drain (it logs its own "stopping: ..." line), and the drain deadline starts. The
 * daemon calls wk_daemon_drained() once nothing is left (the loop ends); drained(arg),
 * when given, is polled every WK_DAEMON_DRAIN_CHECK s and ends it as well. At the
 * deadline, deadline(arg) may return more seconds (a second stage: it released what
 * was in flight and wants time to report it); 0 ends the loop. Without a deadline
 * callback a warning is logged and the loop ends. SIGHUP calls reload(arg), or is
 * ignored (it used to kill a daemon). SIGPIPE is ignored. */
#define WK_DAEMON_DRAIN_CHECK 0.05
typedef struct wk_daemon_config
{
	void (*stop)(void *arg);
	double (*deadline)(void *arg);
	bool (*drained)(void *arg);
	void (*reload)(void *arg);
	void *arg;
	double drain_seconds; /* the first deadline after the signal; < 0: none */
	bool no_sd_notify;    /* a gateway process: its supervisor talks to systemd */
} wk_daemon_config;
/* Installs the watchers on loop (one daemon per process); call before ev_run. */
void wk_daemon_start(struct ev_loop *loop, const wk_daemon_config *cfg);
/* True once a stop signal came. */
bool wk_daemon_stopping(void);
/* The drain is over (or must end now): stops the deadline, breaks the loop. */
void wk_daemon_drained(void);
/* Stops the watchers (after ev_run returned, before tearing the loop down). */
void wk_daemon_stop_watching(void);

/* --- bencode.c: writing bencoded values (BEP 3), through the extension's bencoder -- */
/* Dictionaries: add "d", then each key (wk_benc_strz) and value in sorted key order,
 * then "e"; lists: "l" ... "e". */
void wk_benc_int(wk_buf *b, int64_t v);
void wk_benc_str(wk_buf *b, const void *s, size_t len);
void wk_benc_strz(wk_buf *b, const char *s);
void wk_benc_key_int(wk_buf *b, const char *key, int64_t v);

/* --- hex.c: hexadecimal text ------------------------------------------------------ */
/* Decodes 2·n hex digits (either case) into n bytes; false at a non-digit. */
bool wk_hex_decode(uint8_t *out, const char *hex, size_t n);
/* The value of one hex digit (either case), -1 for anything else. */
int wk_hex_digit(int c);
/* --- child.c: child processes on the loop (ffmpeg, ffprobe) ------------------------ */
#include <sys/types.h>
typedef struct wk_child wk_child;
/* A line of the child's stdout (without its newline). */
typedef void (*wk_child_line_cb)(wk_child *child, char *line, void *arg);
/* The child exited (status as waitpid gives it) and its pipes are drained; the child
 * is freed when this returns. */
typedef void (*wk_child_exit_cb)(wk_child *child, int status, void *arg);
/* Starts argv[0] (PATH searched) in cwd (NULL: ours) with stdin /dev/null; it is killed
 * if the daemon dies. NULL (errno set) when it cannot be started. loop must be the
 * default loop. */
wk_child *wk_child_spawn(struct ev_loop *loop, char *const argv[], const char *cwd, wk_child_line_cb on_line,
                         wk_child_exit_cb on_exit, void *arg);
void wk_child_kill(wk_child *child, int sig);
pid_t wk_child_pid(const wk_child *child);
/* The last few KiB the child wrote to stderr. */
const char *wk_child_stderr(const wk_child *child);
/* The last non-empty line of text, trimmed to size - 1 bytes. */
void wk_last_line(const char *text, char *out, size_t size);

/* --- env.c, backoff.c: settings and reconnection (the gateway uses them too) ------ */
/* The value of an environment variable, or fallback when unset or empty. */
const char *wk_env_str(const char *name, const char *fallback);
/* The index in choices (NULL-terminated) of the variable's value; fallback, with a
 * warning naming the choices, when it is none of them; fallback when unset. */
int wk_env_choice(const char *name, const char *const *choices, int fallback);
/* Reconnection delays: 0 (never failed) -> WK_BACKOFF_FIRST, then doubling to
 * WK_BACKOFF_MAX. */
#define WK_BACKOFF_FIRST 0.1
#define WK_BACKOFF_MAX 5.0
double wk_backoff_next(double previous);

/* --- durable.c: content-store files on the disk before the database names them --- */
/* Starts (without waiting) the writeback of every whole window of fd between *started
 * and written, and moves *started: the final fdatasync then waits for the tail only. */
#define WK_WRITEBACK_WINDOW (8LL << 20)
void wk_writeback(int fd, long long *started, long long written);
/* fsync of a directory (an entry linked or renamed into it), of the directory that
 * holds path, and fdatasync of the file at path: 0, or -1 with errno. */
int wk_fsync_dir(const char *path);
int wk_fsync_parent(const char *path);
int wk_fdatasync_path(const char *path);

#endif
