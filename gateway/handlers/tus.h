/* Resumable uploads: tus 1.0 at /uploads (core, creation, creation-with-upload,
 * creation-defer-length, termination, expiration, checksum with sha256). The upload's state is a row of
 * pod.uploads (offset, length, metadata, expiry: it survives a gateway restart); its
 * bytes are $PGPOD_STORE_DIR/uploads/<id>, written by one PATCH at a time (flock).
 * When the last byte arrives the file is hashed (on the fly across PATCHes), linked
 * into the content store and recorded as a file of the caller in the transaction
 * that marks the upload done; nothing unfinished ever becomes a file. */
#ifndef GW_TUS_H
#define GW_TUS_H
#include "error.h"
#include "http.h"

/* Whether a request is tus's (path /uploads or /uploads/<id>). */
int gw_tus_match(const gw_req *req);
/* Head complete: checks what can be checked and sets up the body's destination. */
void gw_tus_head(gw_req *req);
/* The whole request has arrived. */
void gw_tus_finish(gw_req *req);
/* Starts this process's timer that removes expired uploads (rows and bytes) every
 * PGPOD_UPLOAD_SWEEP_MS, as the login role (pod.uploads_expire). */
void gw_tus_sweep_start(void);

#endif
