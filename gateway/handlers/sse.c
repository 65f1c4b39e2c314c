/* Chat rooms as Server-Sent Events (see sse.h), a kind of topic of the event
 * hub (hub.h): a room's events are read once per gateway process through
 * pod.room_events_feed (the gateway's login role may call it, nobody else) and
 * fanned out to the room's subscribers, each authorised under its own role by
 * api.rooms when it subscribes and again when its membership changes
 * (NOTIFY pgpod_room_members '<room>:<user>'). */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

/* May a subscriber whose view is viewer (pod.room_stream_viewer: "all", "staff", or
 * its user/guest ids) see an event of this audience and author? The rule of
 * pod.event_visible, which row-level security applies to api.room_events: 'staff'
 * (a held or hidden message) is for moderators and the author, 'others' (the
 * release of a held message) for everyone else; an unknown audience for nobody. */
static int
room_visible(const char *viewer, const char *audience, const char *author)
{
	if (!strcmp(viewer, "all"))
		return 1;
	int self = !strcmp(viewer, "staff");
	if (!self && author && *author)
	{
		size_t n = strlen(author);
		for (const char *p = viewer; (p = strstr(p, author)); p += n)
			if ((p == viewer || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			{
				self = 1;
				break;
			}
	}
	if (!strcmp(audience, "staff"))
		return self;
	if (!strcmp(audience, "others"))
		return !self;
	return 0;
}

static const gw_hub_kind rooms = {
    .name = "room",
    /* a room the caller cannot see (RLS on api.rooms) is a 404, not a silent stream;
     * the stream's head is the room's info (terms, rules, the caller's role), and the
     * viewer says which of the room's events are for the caller */
    .authorize_sql = "SELECT EXISTS (SELECT 1 FROM api.rooms WHERE id = $1::uuid),"
                     /* one backward step of the events' primary key, not through
                      * the per-viewer policies (they make it a scan of the room) */
                     " coalesce(pod.room_stream_position($1::uuid), 0),"
                     " api.chat_stream_info($1::uuid)::text, pod.room_stream_viewer($1::uuid)",
    .history_sql = "SELECT seq, kind, message::text FROM api.room_events WHERE room_id = $1::uuid"
                   " AND seq > $2::bigint AND seq <= $3::bigint ORDER BY seq LIMIT 500",
    .feed_sql = "SELECT seq, kind, message, audience, author FROM pod.room_events_feed($1::uuid, $2::bigint, 500)",
    /* an event notifies only while some gateway holds its room's lock (see
     * extension/src/room_events.c): the topic holds it as long as it lives */
    .sleep_sql = "SELECT pod.room_events_sleep($1::uuid)",
    .wake_sql = "SELECT pod.room_events_wake($1::uuid)",
    .head_event = "info",
    .visible = room_visible,
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
