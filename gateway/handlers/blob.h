/* The content store's blobs, shared by every way bytes arrive (POST /upload, and
 * resumable uploads): a temporary file under $PGPOD_STORE_DIR/tmp hashed as it is
 * written, then stored as blobs/<2 hex>/<64 hex> and registered in the database.
 *
 * Ownership: a request owns only its temporary file. A blob in the store belongs
 * to the database (pod.blobs): it is recorded (pod.blob_stored, orphaned until a
 * file uses it) before its bytes are linked into the store, and only the
 * collector removes it (pod.collect_orphaned_blobs). A request that fails, loses
 * a race or is refused removes its temporary file and nothing else; one that
 * succeeds links its copy again after registering, so a collector that took the
 * blob meanwhile cannot leave an acknowledged file without bytes. */
#ifndef GW_BLOB_H
#define GW_BLOB_H
#include <openssl/evp.h>

#include "auth.h"
#include "error.h"
#include "http.h"
#include "pool.h"

typedef struct gw_blob_tmp
{
	int fd;
	char path[4096]; /* "" once removed */
	EVP_MD_CTX *md;
	long long size;
	long long writeback; /* bytes before this are on their way to the disk */
	unsigned char digest[32];
	char hex[65]; /* set by gw_blob_tmp_seal */
	int borrowed; /* the file is its owner's (gw_blob_tmp_borrow): never removed here */
} gw_blob_tmp;

/* Creates the temporary file; 0 or -1 (logged). */
int gw_blob_tmp_open(gw_blob_tmp *t);
/* Appends and hashes; 0 or -1 (logged). */
int gw_blob_tmp_write(gw_blob_tmp *t, const char *data, size_t len);
/* Finishes the digest, puts the bytes on the disk (fdatasync) and closes the file
 * (it stays until discarded); 0, or -1 (logged) when the disk refused. */
int gw_blob_tmp_seal(gw_blob_tmp *t);
/* A sealed temporary file over a file its owner keeps (a resumable upload's bytes,
 * already hashed): a commit links it into the store but neither a failure nor a
 * success removes it; the owner does once the file is registered. */
void gw_blob_tmp_borrow(gw_blob_tmp *t, const char *path, long long size, const unsigned char digest[32]);
/* Removes the temporary file (never a blob, never a borrowed file) and frees the
 * hash state. */
void gw_blob_tmp_discard(gw_blob_tmp *t);

/* Why a user-given filename is refused (NULL: acceptable): empty is fine (the
 * hash names the file); NUL, control characters, DEL, / and \, "." and "..",
 * invalid UTF-8 and more than GW_FILENAME_MAX bytes are not. */
#define GW_FILENAME_MAX 255
const char *gw_filename_problem(const char *name, size_t len);

/* Stores a sealed temporary file as a blob and registers it, in this order:
 * pod.blob_stored (its own transaction), link into the store, then the caller's
 * registration statement (register_sql with register_params, in the caller's
 * transaction settings), then the link again. done() gets the registration's
 * result (NULL and e filled on any failure); the temporary file is gone by then. */
typedef struct gw_blob_commit gw_blob_commit;
struct gw_blob_commit
{
	/* set by the caller */
	gw_req *req;
	const gw_auth *auth;
	gw_blob_tmp *tmp;
	const char *register_sql;
	const gw_params *register_params;
	void (*done)(gw_blob_commit *bc, PGresult *result, const gw_error *e);
	void *data;
	/* internals */
	int step;
	gw_buf settings;
	gw_params sp, bp;
	gw_pg_job job;
};
void gw_blob_commit_start(gw_blob_commit *bc);
/* Frees what the commit holds (safe on a commit never started). */
void gw_blob_commit_clear(gw_blob_commit *bc);

#endif
