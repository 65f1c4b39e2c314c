/* The worker's own notification connection: loads the schema cache and the JWT
 * secret at start, LISTENs on pgrst (schema reload) and pgpod_room_events
 * (SSE wake-ups), and reloads everything after a reconnect. */
#ifndef GW_LISTENER_H
#define GW_LISTENER_H
#include <stddef.h>

#include "schema.h"

int gw_listener_start(void);
void gw_listener_stop(void);
/* The current schema cache (NULL until the first load); callers that keep it
 * across a callback take a reference. */
gw_schema *gw_schema_current(void);
const unsigned char *gw_jwt_secret(size_t *len);
/* Runs sql (one $1 text parameter: key) on the listener's connection, in order with
 * the others, when it is idle; done(key, ok) when its result is in (not called for a
 * command the connection lost: gw_hub_locks_lost says so). For session state that
 * must live as long as the listening: the hub's stream locks. */
void gw_listener_command(const char *sql, const char *key, void (*done)(const char *key, int ok));

#endif
