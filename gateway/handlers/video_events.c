/* Video event streams (see video_events.h): the hub's "video" kind of topic. */
#include "video_events.h"

#include "hub.h"

static const gw_hub_kind videos = {
    .name = "video",
    /* a video the caller cannot see (RLS on pod.videos) is a 404, not a silent stream;
     * the subscriber starts one event back, so the latest (the current state) comes
     * at once */
    .authorize_sql = "SELECT EXISTS (SELECT 1 FROM api.videos WHERE uuid = $1::uuid),"
                     " (SELECT greatest(coalesce(max(seq), 0) - 1, 0) FROM pod.video_events"
                     " WHERE video_uuid = $1::uuid)",
    .history_sql = "SELECT seq, event, data::text FROM pod.video_events WHERE video_uuid = $1::uuid"
                   " AND seq > $2::bigint AND seq <= $3::bigint ORDER BY seq LIMIT 500",
    .feed_sql = "SELECT seq, event, data FROM pod.video_events_feed($1::uuid, $2::bigint, 500)",
};

void
gw_video_events_handle(gw_req *req, const char *video)
{
	if (!gw_hub_key_valid(video))
	{
		gw_respond_simple_error(req, 404, "PGRST000", "Not a video id");
		return;
	}
	gw_hub_subscribe(req, &videos, video);
}

void
gw_video_events_notify(const char *payload)
{
	gw_hub_notify_payload(&videos, payload);
}
