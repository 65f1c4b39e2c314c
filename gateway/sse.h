/* Server-Sent Events for chat rooms: GET /rooms/<uuid>/events streams rows of
 * api.room_events (read under the caller's role, so RLS decides membership) in
 * seq order, woken by NOTIFY pgpod_room_events '<room>:<seq>'. */
#ifndef GW_SSE_H
#define GW_SSE_H
#include "gw.h"

void gw_sse_handle(gw_req *req, const char *room);
void gw_sse_notify(const char *payload);
void gw_sse_resync_all(void);

#endif
