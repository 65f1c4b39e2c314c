/* The event hub behind Server-Sent Events streams: a topic per streamed thing (a
 * chat room, a video, ...), read once per worker process and fanned out from
 * memory to every subscriber of the topic. The database decides who may listen:
 * each subscriber is authorised under its own role when it subscribes and again
 * whenever a change of its rights is announced (gw_hub_reauthorize); the shared
 * read runs as the gateway's login role through a function made for that.
 *
 * A kind of topic is three statements ($1 is always the topic's key, a uuid):
 *  - authorize_sql, under the subscriber's role: one row (may it listen: boolean,
 *    the topic's current last seq: bigint); not allowed answers 404;
 *  - history_sql, under the subscriber's role: (seq, event, data) with
 *    $2 < seq <= $3, in seq order, at most GW_HUB_BATCH rows (a subscriber that
 *    resumes with Last-Event-ID, or joins while the topic is ahead of it);
 *  - feed_sql, as the login role: (seq, event, data) with seq > $2, in seq order,
 *    at most GW_HUB_BATCH rows.
 * seq is gapless and commit-ordered per topic, so "seq > last" gives each event
 * exactly once, across reconnects (Last-Event-ID) and lost notifications. */
#ifndef GW_HUB_H
#define GW_HUB_H
#include "gw.h"

#define GW_HUB_BATCH 500

typedef struct gw_hub_kind
{
	const char *name; /* for logs: "room" */
	const char *authorize_sql;
	const char *history_sql;
	const char *feed_sql;
} gw_hub_kind;

/* GET .../events of topic key (already a valid uuid): authenticates (header or
 * access_token), honours Last-Event-ID, streams. */
void gw_hub_subscribe(gw_req *req, const gw_hub_kind *kind, const char *key);
/* An event of the topic was committed (seq < 0: unknown): the topic reads once. */
void gw_hub_notify(const gw_hub_kind *kind, const char *key, long long seq);
/* The rights of user (the token's sub claim; NULL or "": everyone) on the topic
 * changed: those subscribers get nothing more until the database says again
 * that they may listen; the ones it refuses are disconnected. */
void gw_hub_reauthorize(const gw_hub_kind *kind, const char *key, const char *user);
/* The same for every topic of the kind (a user's session ended). */
void gw_hub_reauthorize_user(const gw_hub_kind *kind, const char *user);
/* A NOTIFY payload "<key>:<seq>" (or "<key>"): gw_hub_notify. */
void gw_hub_notify_payload(const gw_hub_kind *kind, const char *payload);
/* Splits "<key>:<rest>" into key (NUL-terminated); rest is NULL without a colon.
 * 0, or -1 when the key is too long. */
int gw_hub_split_payload(const char *payload, char key[40], const char **rest);
/* 1 when key is a uuid's text (36 characters, hex and dashes). */
int gw_hub_key_valid(const char *key);
/* After the listener reconnects: every topic reads what it may have missed. */
void gw_hub_resync_all(void);

#endif
