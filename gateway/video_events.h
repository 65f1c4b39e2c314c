/* GET /videos/<uuid>/events: Server-Sent Events of a video's state and transcoding
 * progress. A subscriber is checked once (the caller must see the video in api.videos:
 * its owner, or anyone once it is published) and gets the current state at once; then
 * each NOTIFY pod_video_events (the payload is the event, made by a trigger) fans out
 * to the subscribers of that video as is. Built as a keyed fan-out so that it can move
 * onto a generic in-memory hub: subscribe(key) after a check, publish(key, payload). */
#ifndef GW_VIDEO_EVENTS_H
#define GW_VIDEO_EVENTS_H
#include "gw.h"

void gw_video_events_handle(gw_req *req, const char *video);
/* A NOTIFY pod_video_events payload (the listener connection). */
void gw_video_events_notify(const char *payload);
/* The listener reconnected: notifications may have been missed. */
void gw_video_events_resync_all(void);

#endif
