/* .torrent downloads: GET/HEAD /torrents/<info hash>.torrent answers the stored
 * torrent of a published video file as application/x-bittorrent (api.torrents, read
 * under the caller's role like any view). */
#ifndef GW_TORRENT_FILE_H
#define GW_TORRENT_FILE_H
#include "error.h"
#include "http.h"

void gw_torrent_handle(gw_req *req, const char *name);

#endif
