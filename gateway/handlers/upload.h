/* POST /upload: the token, the size and the filename are checked before the body
 * is read; the body streams into a hashed temporary file of the content store,
 * is stored as blobs/<2 hex>/<64 hex> and recorded by pod.register_upload in the
 * uploader's transaction (blob.h). A refused or failed upload removes its
 * temporary file and never a blob. */
#ifndef GW_UPLOAD_H
#define GW_UPLOAD_H
#include "error.h"
#include "http.h"

void gw_upload_head(gw_req *req);
void gw_upload_finish(gw_req *req);

#endif
