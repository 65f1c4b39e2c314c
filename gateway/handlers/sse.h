/* Server-Sent Events for chat rooms: GET /rooms/<uuid>/events streams a room's
 * events (api.room_events' rows: id = seq, event = kind, data = the message) in
 * seq order, woken by NOTIFY pgpod_room_events '<room>:<seq>'; the event hub
 * (hub.h) reads each event once per gateway process and fans it out to the subscribers
 * the database allows (at subscribe time and on NOTIFY pgpod_room_members). */
#ifndef GW_SSE_H
#define GW_SSE_H
#include "error.h"
#include "http.h"

void gw_sse_handle(gw_req *req, const char *room);
void gw_sse_notify(const char *payload);
void gw_sse_members(const char *payload);
void gw_sse_resync_all(void);

#endif
