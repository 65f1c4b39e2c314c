/* The gateway process's own notification connection: loads the schema cache and the
 * JWT secret at start and on NOTIFY pgrst, and *publishes* them as a snapshot; it
 * LISTENs on the channels its subscribers registered and hands them the payloads;
 * it tells its subscribers when the connection goes and comes back. It calls no
 * one above it: main.c wires the handlers (SSE, videos) and the pool in. */
#ifndef GW_LISTENER_H
#define GW_LISTENER_H
#include <stddef.h>

#include "snapshot.h"

/* Subscribers, registered before gw_listener_start. */
void gw_listener_on_notify(const char *channel, void (*cb)(const char *payload));
/* A new snapshot is current (before: the previous one, NULL the first time; both
 * valid during the call). */
void gw_listener_on_snapshot(void (*cb)(gw_snapshot *now, gw_snapshot *before));
/* The connection came up (LISTENing: catch up on what was missed) or went down. */
void gw_listener_on_connection(void (*cb)(int up));
int gw_listener_start(void);
void gw_listener_stop(void);
/* The last published snapshot (NULL until the first load); callers that keep it
 * across a callback take a reference (requests do: gw_req.snapshot). */
gw_snapshot *gw_snapshot_current(void);
/* Runs sql (one $1 text parameter: key) on the listener's connection, in order with
 * the others, when it is idle; done(key, ok) when its result is in (not called for a
 * command the connection lost: the connection subscribers hear of the loss). For session state that
 * must live as long as the listening: the hub's stream locks. */
void gw_listener_command(const char *sql, const char *key, void (*done)(const char *key, int ok));

#endif
