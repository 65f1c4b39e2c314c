/* Chat rooms as Server-Sent Events (see sse.h), a kind of topic of the event
 * hub (hub.h): a room's events are read once per worker through
 * pod.room_events_feed (the gateway's login role may call it, nobody else) and
 * fanned out to the room's subscribers, each authorised under its own role by
 * api.rooms when it subscribes and again when its membership changes
 * (NOTIFY pgpod_room_members '<room>:<user>'). */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

static const gw_hub_kind rooms = {
    .name = "room",
    /* a room the caller cannot see (RLS on api.rooms) is a 404, not a silent stream */
    .authorize_sql = "SELECT EXISTS (SELECT 1 FROM api.rooms WHERE id = $1::uuid),"
                     /* the table, not the view: max(seq) is one backward step of its
                      * primary key, where the view would join every message */
                     " (SELECT coalesce(max(seq), 0) FROM pod.room_events WHERE room_id = $1::uuid)",
    .history_sql = "SELECT seq, kind, message::text FROM api.room_events WHERE room_id = $1::uuid"
                   " AND seq > $2::bigint AND seq <= $3::bigint ORDER BY seq LIMIT 500",
    .feed_sql = "SELECT seq, kind, message FROM pod.room_events_feed($1::uuid, $2::bigint, 500)",
};

void
gw_sse_handle(gw_req *req, const char *room)
{
	if (!gw_hub_key_valid(room))
	{
		gw_respond_simple_error(req, 404, "PGRST000", "Not a room id");
		return;
	}
	gw_hub_subscribe(req, &rooms, room);
}

/* "<room>:<seq>" */
void
gw_sse_notify(const char *payload)
{
	gw_hub_notify_payload(&rooms, payload);
}

/* "<room>:<user>" (user empty: everyone in the room; room "*": every room) */
void
gw_sse_members(const char *payload)
{
	char room[40];
	const char *user;
	if (gw_hub_split_payload(payload, room, &user))
		return;
	if (!strcmp(room, "*"))
		gw_hub_reauthorize_user(&rooms, user);
	else
		gw_hub_reauthorize(&rooms, room, user);
}

void
gw_sse_resync_all(void)
{
	gw_hub_resync_all();
}
