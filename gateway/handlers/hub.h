/* The event hub behind Server-Sent Events streams: a topic per streamed thing (a
 * chat room, a video, ...), read once per gateway process and fanned out from
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
 * exactly once, across reconnects (Last-Event-ID) and lost notifications.
 *
 * Optional, for topics whose events are not all for every subscriber:
 *  - authorize_sql's third column: the stream's head (text, NULL for none), sent as
 *    `event: <head_event>` without an id before anything else when the stream starts;
 *  - authorize_sql's fourth column: the subscriber's viewer (text, opaque to the hub),
 *    asked again with every re-authorisation;
 *  - feed_sql's fourth and fifth columns (an event's audience and author, text or
 *    NULL) and visible(viewer, audience, author): the hub writes a fed event only to
 *    the subscribers it is visible to. visible must agree with what history_sql shows
 *    under the subscriber's role (there, the database filters). */
#ifndef GW_HUB_H
#define GW_HUB_H
#include "error.h"
#include "http.h"

#define GW_HUB_BATCH 500

typedef struct gw_hub_kind
{
	const char *name; /* for logs: "room" */
	const char *authorize_sql;
	const char *history_sql;
	const char *feed_sql;
	/* Optional: sleep_sql / wake_sql ($1: the key) take and give back, on the
	 * listener's connection, the lock that makes the topic's events notify (without
	 * it they need not: pod.room_events_sleep). The topic reads only while it holds
	 * it: taking it waits for the events that did not notify to be committed. */
	const char *sleep_sql;
	const char *wake_sql;
	const char *head_event; /* NULL: authorize_sql has no head column */
	int (*visible)(const char *viewer, const char *audience, const char *author);
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
/* After the listener reconnects: every topic reads what it may have missed (once it
 * holds its lock again). */
void gw_hub_resync_all(void);
/* The listener's connection is gone, and the topics' locks with it. */
void gw_hub_locks_lost(void);

#endif
