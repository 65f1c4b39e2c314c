/* Video event streams (see video_events.h): the hub's "video" kind of topic. */
#include "video_events.h"

#include "hub.h"

#include <stdlib.h>
#include <string.h>

static const gw_hub_kind videos = {
    .name = "video",
    /* a video the caller may not watch (pod.video_watchable: others' unpublished or
     * private videos) is a 404, not a silent stream; the subscriber starts one event
     * back, so the latest (the current state) comes at once */
    .authorize_sql = "SELECT pod.video_watchable($1::uuid),"
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

/* "<uuid>:<seq>" or, for a state event (published, failed, privacy changed...),
 * "<uuid>:<seq>:state": then who may watch may have changed, and every subscriber
 * of the video is asked again before it gets more. */
void
gw_video_events_notify(const char *payload)
{
	char key[40];
	const char *rest;
	if (gw_hub_split_payload(payload, key, &rest))
		return;
	if (rest && strstr(rest, ":state"))
		gw_hub_reauthorize(&videos, key, NULL);
	gw_hub_notify(&videos, key, rest ? strtoll(rest, NULL, 10) : -1);
}
