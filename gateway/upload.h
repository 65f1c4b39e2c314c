/* POST /upload: the body streams to $PGPOD_STORE_DIR/tmp with SHA-256 computed
 * on the fly, moves to blobs/<2 hex>/<64 hex>, and pod.register_upload records
 * it in the uploader's transaction. A failure leaves no file behind. */
#ifndef GW_UPLOAD_H
#define GW_UPLOAD_H
#include "gw.h"

void gw_upload_head(gw_req *req);
void gw_upload_finish(gw_req *req);

#endif
