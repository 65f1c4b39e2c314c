/* Stored blobs over HTTP: GET/HEAD /files/<uuid> with ETag, If-None-Match,
 * single byte ranges (206/416) and sendfile. The api.files row is read under the
 * caller's role, so row-level security decides who may download. */
#ifndef GW_STATIC_H
#define GW_STATIC_H
#include "error.h"
#include "http.h"

void gw_blob_download_handle(gw_req *req, const char *file_id);
/* A video's state or privacy changed (NOTIFY pod_video_events "<uuid>:<seq>:state"),
 * or notifications may have been missed (connection up again, payload NULL): the
 * remembered permissions are forgotten, so a video made private stops being served
 * as soon as the notification arrives, not PGPOD_FILE_CACHE_MS later. */
void gw_blob_download_notify(const char *payload);
/* The blob path of a hex digest under store_dir. */
void gw_blob_path(char *out, size_t n, const char *store_dir, const char *hex);

#endif
