/* GET /videos/<uuid>/events: Server-Sent Events of a video's state and transcoding
 * progress, a kind of topic of the event hub (hub.h). Events are pod.video_events'
 * rows (id = seq, numbered per video; event = state | progress; data = the JSON of
 * pod.video_event), woken by NOTIFY pod_video_events '<uuid>:<seq>', read once per
 * gateway process through pod.video_events_feed and fanned out to the subscribers that may
 * see the video (api.videos under their role: its owner, or anyone once it is
 * published). A subscriber without Last-Event-ID gets the video's latest event (its
 * current state) at once; one with Last-Event-ID gets every event after it. */
#ifndef GW_VIDEO_EVENTS_H
#define GW_VIDEO_EVENTS_H
#include "error.h"
#include "http.h"

void gw_video_events_handle(gw_req *req, const char *video);
/* A NOTIFY pod_video_events payload (the listener connection). */
void gw_video_events_notify(const char *payload);

#endif
