/*
 * tracker.h — the pod's BitTorrent tracker (HTTP, UDP and WebSocket on one port):
 * shared types of its modules. Single-threaded: everything runs on one ev_loop, so
 * swarms and connections need no locks. Swarms live in memory only; the database
 * holds which info hashes are tracked and receives the counts in batches.
 */
#ifndef PGPOD_TRACKER_H
#define PGPOD_TRACKER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "worker.h"

#define TK_HASH_LEN 20

/* --- config ------------------------------------------------------------------ */
typedef struct tk_config
{
	long port;
	long interval;      /* seconds between announces we ask of HTTP/UDP clients */
	long ws_interval;   /* the same for WebSocket (WebTorrent) clients */
	long peer_ttl;      /* a peer not heard from for this long is dropped */
	long numwant_max;   /* peers returned at most */
	long max_peers;     /* peers in all swarms together */
	long max_connections;
	long rate;          /* requests per second per address (0: no limit) */
	long burst;
	long ws_max_frame;  /* bytes of one WebSocket message */
	long ws_max_torrents; /* torrents one WebSocket connection may announce */
	long flush_ms;
	long refresh_ms;
	long idle_ms;       /* an HTTP connection with no request for this long closes */
} tk_config;

/* --- addresses --------------------------------------------------------------- */
typedef struct tk_addr
{
	uint8_t family; /* 4 or 6 */
	uint8_t ip[16]; /* IPv4 in the first 4 bytes */
	uint16_t port;  /* network order */
} tk_addr;
/* From a socket address; v4-mapped IPv6 becomes IPv4. */
void tk_addr_from_sockaddr(tk_addr *a, const struct sockaddr_storage *ss);
void tk_addr_format(const tk_addr *a, char *out, size_t size);

/* --- swarm.c ----------------------------------------------------------------- */
struct tk_conn;

enum tk_peer_kind
{
	TK_PEER_NET, /* HTTP or UDP client: keyed by address and port */
	TK_PEER_WS   /* WebTorrent client: keyed by peer id, reached through its socket */
};

typedef struct tk_peer
{
	uint8_t kind;
	uint8_t seeder;
	uint8_t counted_completed;
	tk_addr addr;
	uint8_t id[20];
	double last;
	struct tk_conn *ws;
} tk_peer;

typedef struct tk_swarm
{
	uint8_t hash[TK_HASH_LEN];
	tk_peer *peers;
	uint32_t npeers, cap;
	uint32_t *index; /* open addressing: peer position + 1, 0 = empty */
	uint32_t index_cap;
	uint32_t seeders;
	int64_t completed;       /* as stored in SQL plus what we saw since */
	int32_t completed_delta; /* not yet reported */
	bool dirty;              /* counts changed since the last report */
	uint32_t reported_seeders, reported_leechers;
} tk_swarm;

typedef struct tk_announce
{
	uint8_t hash[TK_HASH_LEN];
	uint8_t peer_id[20];
	tk_addr addr;
	uint64_t left;
	bool left_known;
	int event; /* TK_EV_* */
	int numwant;
	bool compact;
	bool no_peer_id;
} tk_announce;

enum
{
	TK_EV_NONE,
	TK_EV_STARTED,
	TK_EV_COMPLETED,
	TK_EV_STOPPED,
	TK_EV_PAUSED
};

/* The table of tracked swarms. */
void tk_swarms_init(void);
tk_swarm *tk_swarm_find(const uint8_t *hash);
/* Replaces the tracked set with these hashes (n × 20 bytes, with their stored
 * completed counts); swarms that stay keep their peers. Returns the count. */
size_t tk_swarms_replace(const uint8_t *hashes, const int64_t *completed, size_t n);
size_t tk_swarms_count(void);
size_t tk_peers_total(void);
/* Adds, updates or removes (stopped) a peer; false when the peer could not be
 * added (the tracker is full). */
bool tk_swarm_announce(tk_swarm *s, const tk_peer *probe, int event, double now);
tk_peer *tk_swarm_lookup(tk_swarm *s, const tk_peer *probe);
void tk_swarm_remove(tk_swarm *s, const tk_peer *probe);
/* Up to want peers of the given kind other than self (random start, in order). */
size_t tk_swarm_pick(tk_swarm *s, uint8_t kind, const tk_peer *self, size_t want,
                     tk_peer **out);
/* Drops peers not heard from since their kind's cutoff. Returns how many. */
size_t tk_swarms_expire(double cutoff_net, double cutoff_ws);
/* Calls fn for each swarm whose counts changed since the last report. */
void tk_swarms_each_dirty(void (*fn)(tk_swarm *s, void *arg), void *arg);
void tk_swarms_free(void);
extern long tk_max_peers;

/* --- query.c: the HTTP announce/scrape query ---------------------------------- */
/* Parses an announce query string; NULL on success, else the failure reason. */
const char *tk_parse_announce(const char *query, size_t len, tk_announce *a, long numwant_max);
/* Parses a scrape query: up to max hashes into out. Returns the count or -1 (reason). */
int tk_parse_scrape(const char *query, size_t len, uint8_t *out, int max, const char **reason);

/* --- bencoded responses (tracker side) ---------------------------------------- */
void tk_bencode_failure(wk_buf *b, const char *reason);

/* --- ws.c: WebSocket framing (RFC 6455) --------------------------------------- */
/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
bool tk_ws_accept(const char *key, size_t keylen, char out[29]);
typedef struct tk_ws_frame
{
	bool fin;
	uint8_t opcode;
	uint8_t *payload; /* unmasked in place, inside the input buffer */
	uint64_t len;
} tk_ws_frame;
/* Parses one client frame at buf: > 0 bytes used (frame complete), 0 need more,
 * -1 protocol error, -2 larger than max. The payload is unmasked in place. */
long tk_ws_parse(uint8_t *buf, size_t len, uint64_t max, tk_ws_frame *f, const char **why);
/* Appends one unmasked server frame. */
void tk_ws_frame_add(wk_buf *b, uint8_t opcode, const void *payload, size_t len);

/* --- connections (http.c), shared with the WebTorrent protocol (wt.c) --------- */
typedef struct tk_conn
{
	ev_io io;
	ev_timer idle;
	int fd;
	tk_addr addr;
	struct tk_conn *prev, *next;
	/* input: HTTP request bytes, or WebSocket frames */
	uint8_t *in;
	size_t inlen, incap;
	void *parser; /* http_parser, NULL once upgraded */
	char url[4096];
	size_t urllen;
	bool url_overflow;
	int header;      /* which header's value is being read */
	char wskey[32];
	size_t wskeylen;
	bool hdr_upgrade_ws, hdr_conn_upgrade, hdr_ws_version13;
	/* output */
	wk_buf out;
	size_t outoff;
	bool close_after_write;
	bool closed;
	/* WebSocket */
	bool ws;
	wk_buf msg; /* a fragmented message being assembled */
	uint8_t msg_opcode;
	bool has_peer_id;
	uint8_t peer_id[20];
	uint8_t (*hashes)[TK_HASH_LEN]; /* the swarms this socket announced in */
	int nhashes;
} tk_conn;

typedef struct tk_counters
{
	uint64_t http_announces, http_scrapes, udp_announces, udp_scrapes, ws_announces,
	    ws_scrapes, failures, rate_limited, offers_relayed, answers_relayed;
} tk_counters;

extern tk_config tk_cfg;
extern struct ev_loop *tk_loop;
extern tk_counters tk_count;
extern bool tk_ready; /* the tracked set was loaded */
/* Token bucket per address (a bounded, direct-mapped table): false (and counted)
 * when over; the client is then told tk_slow_down. */
bool tk_rate_ok(const tk_addr *a);
extern const char tk_slow_down[];
/* A failure answer was sent: counted, and logged at debug level. */
void tk_failure(const tk_addr *a, const char *what, const char *reason);

void tk_http_listen(int fd);
void tk_http_close_all(void);
size_t tk_http_connections(void);
/* Queues bytes on a connection and tries to send them now. */
void tk_conn_write(tk_conn *c, const void *data, size_t len);
void tk_conn_close(tk_conn *c);
/* Sends one WebSocket text message. */
void tk_ws_send_text(tk_conn *c, const char *text, size_t len);

void tk_udp_listen(int fd);
void tk_udp_stop(void);
void tk_udp_init_key(void);

/* wt.c: one WebTorrent tracker message (JSON text) from a socket; its closing. */
void tk_wt_message(tk_conn *c, const char *text, size_t len);
void tk_wt_closed(tk_conn *c);

/* announce.c: an announce from HTTP or UDP, answered into b (bencoded). */
const char *tk_net_announce(const tk_announce *a, tk_swarm **swarm_out, tk_peer **peers,
                            size_t *npeers);

/* --- siphash.c ---------------------------------------------------------------- */
uint64_t tk_siphash(const uint8_t key[16], const void *data, size_t len);

#endif
