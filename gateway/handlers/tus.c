/* tus 1.0 uploads (see tus.h). Ownership: a tus struct belongs to its request until
 * the request ends; a database job in flight keeps it alive past that (the job's
 * callback frees it), and so does the offset saved for a client that went away in
 * the middle of a PATCH: the file stays open and locked until that offset is
 * recorded, so a resuming PATCH waits (423, which clients retry) instead of racing
 * it. Locking: flock(LOCK_EX) on the upload's file for the whole PATCH, across
 * gateway processes. The SHA-256 of the bytes so far is kept per process for the
 * next PATCH; a PATCH that finds none (another process, a restart) hashes the file's
 * first bytes again. Durability: the bytes are fsync'ed before their offset is
 * recorded, so an offset a client was told (204, 201) survives a crash. Expired
 * uploads are swept on a timer in every process (PGPOD_UPLOAD_SWEEP_MS). */
#include "worker.h"
#include "tus.h"

#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "blob.h"
#include "pool.h"
#include "blob_download.h"

#define TUS_HEADERS "Tus-Resumable: 1.0.0\r\n"
#define OCTETS "application/offset+octet-stream"

typedef struct tus
{
	gw_req *req; /* NULL once the request ended */
	gw_auth auth;
	int method;
	char id[37];
	char path[4200];
	int fd;
	int locked;
	int created_file; /* POST made the file: removed unless the upload is recorded */
	long long length; /* -1: deferred (Upload-Defer-Length), not known yet */
	long long new_length; /* PATCH: the Upload-Length it gives (-1: none) */
	int set_length;       /* PATCH: it gives a deferred upload its length */
	long long start; /* the offset when this request began */
	long long written;
	long long writeback; /* the file's bytes before this are on their way to the disk */
	int dir_synced;      /* the directory entry of a file POST made is on the disk */
	int checked; /* PATCH: the database agreed and the file is ready */
	int body_complete;
	int responded;
	int has_checksum;
	unsigned char checksum[32];
	EVP_MD_CTX *whole, *part;
	gw_buf pending; /* body bytes that came before the check */
	char *metadata_json;
	gw_buf settings;
	gw_params sp, qp;
	gw_pg_job job;
	int job_busy;
	int done_ok; /* the upload is finished and recorded: its file leaves uploads/ */
	gw_blob_tmp blob; /* the finished upload's bytes, as blob.c stores them */
	gw_blob_commit commit;
	gw_params fp;
	char *expires; /* POST: Upload-Expires, answered once the upload is finished */
	ev_timer wait; /* HEAD: waiting for a writer to finish */
	int waits;
} tus;

/* --- the per-process hash cache ---------------------------------------------- */
#define HASH_SLOTS 64
static struct
{
	char id[37];
	long long offset;
	EVP_MD_CTX *ctx;
} hash_cache[HASH_SLOTS];

static void
hash_cache_put(const char *id, long long offset, const EVP_MD_CTX *ctx)
{
	unsigned h = 0;
	for (const char *p = id; *p; p++)
		h = h * 31 + (unsigned char)*p;
	h %= HASH_SLOTS;
	if (!hash_cache[h].ctx)
		hash_cache[h].ctx = EVP_MD_CTX_new();
	if (!hash_cache[h].ctx || !EVP_MD_CTX_copy_ex(hash_cache[h].ctx, ctx))
		return;
	snprintf(hash_cache[h].id, sizeof hash_cache[h].id, "%s", id);
	hash_cache[h].offset = offset;
}

static int
hash_cache_get(const char *id, long long offset, EVP_MD_CTX *ctx)
{
	unsigned h = 0;
	for (const char *p = id; *p; p++)
		h = h * 31 + (unsigned char)*p;
	h %= HASH_SLOTS;
	return hash_cache[h].ctx && !strcmp(hash_cache[h].id, id) && hash_cache[h].offset == offset &&
	       EVP_MD_CTX_copy_ex(ctx, hash_cache[h].ctx);
}

/* --- helpers --------------------------------------------------------------------- */

int
gw_tus_match(const gw_req *req)
{
	const char *p = req->path;
	return !strcmp(p, "/uploads") || (!strncmp(p, "/uploads/", 9) && p[9] && !strchr(p + 9, '/'));
}

static int
valid_uuid(const char *u)
{
	if (strlen(u) != 36)
		return 0;
	for (int i = 0; i < 36; i++)
	{
		char c = u[i];
		if (i == 8 || i == 13 || i == 18 || i == 23 ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return 0;
	}
	return 1;
}

/* The answer is about to go out: the upload's lock is given back first, so that the
 * client's next PATCH (sent the moment this answer arrives, maybe to another gateway
 * process) never meets it still held (423). Nothing is written after an answer. */
static void
tus_unlock(tus *t)
{
	if (t->fd >= 0 && !t->job_busy)
	{
		close(t->fd);
		t->fd = -1;
	}
}

static void
tus_error(tus *t, int status, const char *message)
{
	gw_error e;
	char code[16];
	gw_req *req = t->req;
	if (!req || t->responded)
		return;
	t->responded = 1;
	tus_unlock(t);
	snprintf(code, sizeof code, "PT%d", status);
	gw_error_set(&e, status, code, message, NULL, NULL);
	gw_respond_error(req, &e, status == 412 ? TUS_HEADERS "Tus-Version: 1.0.0\r\n" : TUS_HEADERS);
}

static void
tus_respond(tus *t, int status, const char *headers)
{
	if (!t->req || t->responded)
		return;
	t->responded = 1;
	tus_unlock(t);
	gw_respond(t->req, status, NULL, headers, NULL, 0);
}

static void
upload_dir(char *out, size_t n)
{
	snprintf(out, n, "%s/uploads", gw_cfg.store_dir);
}

static void
tus_free(tus *t)
{
	ev_timer_stop(gw_loop, &t->wait);
	if (t->fd >= 0)
		close(t->fd); /* gives the lock back too */
	if (t->created_file && !t->done_ok && t->path[0])
		unlink(t->path);
	if (t->whole)
		EVP_MD_CTX_free(t->whole);
	if (t->part)
		EVP_MD_CTX_free(t->part);
	gw_buf_free(&t->pending);
	gw_pool_job_clear(&t->job);
	gw_buf_free(&t->settings);
	gw_params_free(&t->sp);
	gw_params_free(&t->qp);
	gw_params_free(&t->fp);
	gw_blob_commit_clear(&t->commit);
	free(t->expires);
	free(t->metadata_json);
	free(t);
}

static void submit(tus *t, void (*done)(gw_pg_job *));
static int sync_bytes(tus *t);

static void
saved_offset_done(gw_pg_job *job)
{
	tus *t = job->data;
	t->job_busy = 0;
	if (job->failed || job->error)
		wk_log(WK_WARN, "tus %s: the offset of an interrupted PATCH was not saved: %s", t->id,
		       job->failed ? job->failure : PQresultErrorMessage(job->error));
	tus_free(t);
}

/* The request ended (answered, or the client went away). */
static void
req_done(gw_req *req, int ok)
{
	(void)ok;
	tus *t = req->handler;
	req->handler = NULL;
	if (!t)
		return;
	t->req = NULL;
	if (t->job_busy)
		return; /* the job's callback finishes */
	if (t->method == HTTP_PATCH && t->checked && !t->responded && t->written > 0 && !t->has_checksum)
	{
		/* the client went away mid-body: what reached the disk counts, so that it
		 * resumes from there (tus's core: the offset is what the server has) */
		char from[32], to[32];
		if (sync_bytes(t))
		{
			/* bytes not surely on disk: the offset stays where it was (the next
			 * PATCH drops what is past it) */
			tus_free(t);
			return;
		}
		{
			snprintf(from, sizeof from, "%lld", t->start);
			snprintf(to, sizeof to, "%lld", t->start + t->written);
			gw_params_free(&t->qp);
			gw_params_init(&t->qp);
			gw_params_add(&t->qp, t->id);
			gw_params_add(&t->qp, from);
			gw_params_add(&t->qp, to);
			hash_cache_put(t->id, t->start + t->written, t->whole);
			t->job.nstmts = 2;
			t->job.stmts[1].sql = "SELECT pod.upload_advance($1::uuid, $2::bigint, $3::bigint)";
			t->job.stmts[1].params = &t->qp;
			submit(t, saved_offset_done);
			return;
		}
	}
	tus_free(t);
}

static void
submit(tus *t, void (*done)(gw_pg_job *))
{
	gw_pg_job *j = &t->job;
	int n = j->nstmts;
	gw_pg_stmt stmts[GW_JOB_MAX];
	for (int i = 1; i < n; i++)
		stmts[i] = j->stmts[i];
	gw_pool_job_clear(j);
	memset(j, 0, sizeof *j);
	j->nstmts = n;
	j->stmts[0].sql = t->settings.data;
	j->stmts[0].params = &t->sp;
	for (int i = 1; i < n; i++)
		j->stmts[i] = stmts[i];
	j->done = done;
	j->data = t;
	t->job_busy = 1;
	gw_pool_submit(j);
}

/* A job answered: 1 when the request is gone (t freed here), else 0. */
static int
job_back(tus *t)
{
	t->job_busy = 0;
	if (t->req)
		return 0;
	tus_free(t);
	return 1;
}

static int
job_error(tus *t)
{
	gw_error e;
	if (!gw_error_from_job(&t->job, t->auth.anonymous, &e))
		return 0;
	if (t->req && !t->responded)
	{
		t->responded = 1;
		gw_respond_error(t->req, &e, TUS_HEADERS);
	}
	return 1;
}

static int
write_all(tus *t, const char *data, size_t len)
{
	while (len)
	{
		ssize_t n = write(t->fd, data, len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			wk_log(WK_WARN, "tus %s: write: %s", t->id, strerror(errno));
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The bytes written so far reach the disk before their offset is recorded: a 204
 * (or 201) means they survive a crash. 0, or -1 (logged). */
static int
sync_bytes(tus *t)
{
	if (t->fd >= 0 && t->written > 0 && fdatasync(t->fd) < 0)
	{
		wk_log(WK_ERROR, "tus %s: fdatasync: %s", t->id, strerror(errno));
		return -1;
	}
	/* and the name of a file this request created, before the database records it */
	if (t->created_file && !t->dir_synced)
	{
		if (wk_fsync_parent(t->path) < 0)
		{
			wk_log(WK_ERROR, "tus %s: fsync of its directory: %s", t->id, strerror(errno));
			return -1;
		}
		t->dir_synced = 1;
	}
	return 0;
}

static int
consume(tus *t, const char *data, size_t len)
{
	long long limit = t->length >= 0 ? t->length : gw_cfg.upload_max;
	if (t->start + t->written + (long long)len > limit)
	{
		tus_error(t, 413, t->length >= 0 ? "The body goes past Upload-Length" : "The body goes past Tus-Max-Size");
		return -1;
	}
	EVP_DigestUpdate(t->whole, data, len);
	if (t->part)
		EVP_DigestUpdate(t->part, data, len);
	if (write_all(t, data, len))
	{
		tus_error(t, 507, "The upload could not be stored");
		return -1;
	}
	t->written += (long long)len;
	if (t->writeback < t->start)
		t->writeback = t->start;
	wk_writeback(t->fd, &t->writeback, t->start + t->written);
	return 0;
}

static int
on_body(gw_req *req, const char *data, size_t len)
{
	tus *t = req->handler;
	if (!t || t->responded)
		return 0;
	if (!t->checked)
	{
		gw_buf_append(&t->pending, data, len);
		return 0;
	}
	return consume(t, data, len) ? -1 : 0;
}

/* The whole upload is on disk: it becomes a file of the caller through blob.c's
 * protocol (the blob recorded, linked, then pod.upload_finish registers the file in
 * the caller's transaction, then linked again). The upload's own file is borrowed:
 * a failed finish leaves it (and the upload's offset) as they were, so the client
 * may finish again, and never removes a blob. done gets the registration's result
 * or an error; t->job_busy holds t until then. */
static void
finish_upload(tus *t, long long from, void (*done)(gw_blob_commit *, PGresult *, const gw_error *))
{
	unsigned char d[32];
	unsigned dl = 0;
	char off[32];
	EVP_DigestFinal_ex(t->whole, d, &dl);
	gw_blob_tmp_borrow(&t->blob, t->path, t->length, d);
	snprintf(off, sizeof off, "%lld", from);
	gw_params_free(&t->fp);
	gw_params_init(&t->fp);
	gw_params_add(&t->fp, t->id);
	gw_params_add(&t->fp, off);
	gw_params_add(&t->fp, t->blob.hex);
	gw_blob_commit_clear(&t->commit);
	t->commit.req = t->req;
	t->commit.auth = &t->auth;
	t->commit.tmp = &t->blob;
	t->commit.register_sql = "SELECT pod.upload_finish($1::uuid, $2::bigint, decode($3, 'hex'))::text";
	t->commit.register_params = &t->fp;
	t->commit.done = done;
	t->commit.data = t;
	t->job_busy = 1;
	gw_blob_commit_start(&t->commit);
}

/* A finish answered: 1 when the request is gone (t freed) or was answered an error. */
static int
finish_back(tus *t, const gw_error *e)
{
	if (job_back(t))
		return 1;
	if (e)
	{
		if (!t->responded)
		{
			t->responded = 1;
			gw_respond_error(t->req, e, TUS_HEADERS);
		}
		return 1;
	}
	/* recorded as a file: the blob holds the bytes now */
	t->done_ok = 1;
	unlink(t->path);
	return 0;
}

/* --- HEAD, DELETE ------------------------------------------------------------------ */

static char *
metadata_header(const char *json)
{
	json_error_t err;
	json_t *o = json_loads(json, 0, &err), *v;
	const char *k;
	gw_buf b;
	gw_buf_init(&b);
	json_object_foreach(o, k, v)
	{
		const char *s = json_string_value(v);
		if (!s)
			continue;
		size_t n = strlen(s);
		unsigned char *enc = malloc(4 * ((n + 2) / 3) + 1);
		if (!enc)
			abort();
		EVP_EncodeBlock(enc, (const unsigned char *)s, (int)n);
		gw_buf_printf(&b, "%s%s%s%s", b.len ? "," : "", k, n ? " " : "", (char *)enc);
		free(enc);
	}
	json_decref(o);
	return gw_buf_steal(&b);
}

/* The caller's upload as pod.upload_state gave it, or NULL when the request is gone
 * or was answered (404: none of the caller's; 410: expired). */
static PGresult *
state_row(gw_pg_job *job)
{
	tus *t = job->data;
	if (job_back(t) || job_error(t))
		return NULL;
	PGresult *r = job->results[1];
	if (!r || PQntuples(r) != 1)
	{
		tus_error(t, 404, "No such upload");
		return NULL;
	}
	if (!strcmp(PQgetvalue(r, 0, 2), "t"))
	{
		tus_error(t, 410, "The upload expired");
		return NULL;
	}
	return r;
}

static void
head_done(gw_pg_job *job)
{
	tus *t = job->data;
	PGresult *r = state_row(job);
	if (!r)
		return;
	gw_buf h;
	gw_buf_init(&h);
	char *meta = metadata_header(PQgetvalue(r, 0, 4));
	gw_buf_printf(&h, TUS_HEADERS "Upload-Offset: %s\r\nUpload-Expires: %s\r\nCache-Control: no-store\r\n",
	              PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 3));
	if (PQgetisnull(r, 0, 0))
		gw_buf_puts(&h, "Upload-Defer-Length: 1\r\n");
	else
		gw_buf_printf(&h, "Upload-Length: %s\r\n", PQgetvalue(r, 0, 0));
	if (meta && *meta && !strpbrk(meta, "\r\n"))
		gw_buf_printf(&h, "Upload-Metadata: %s\r\n", meta);
	free(meta);
	tus_respond(t, 200, h.data);
	gw_buf_free(&h);
}

static void head_when_unlocked(tus *t);

static void
head_wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	head_when_unlocked(w->data);
}

/* HEAD answers the offset once no PATCH holds the upload (nor the saving of an
 * interrupted one's offset): a client resuming right after an interruption gets every
 * byte that reached the disk, not an offset about to move. At most 5 s of waiting. */
static void
head_when_unlocked(tus *t)
{
	int fd = open(t->path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
	{
		int busy = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
		close(fd);
		if (busy && t->waits++ < 250)
		{
			ev_timer_init(&t->wait, head_wait_cb, 0.02, 0);
			t->wait.data = t;
			ev_timer_start(gw_loop, &t->wait);
			return;
		}
	}
	submit(t, head_done);
}

/* A job whose statement answers one boolean: its tus when the answer is true; NULL
 * when the request is gone or was answered (an error, or status and message). */
static tus *
true_or_error(gw_pg_job *job, int status, const char *message)
{
	tus *t = job->data;
	if (job_back(t) || job_error(t))
		return NULL;
	PGresult *r = job->results[1];
	if (!r || PQntuples(r) != 1 || strcmp(PQgetvalue(r, 0, 0), "t"))
	{
		tus_error(t, status, message);
		return NULL;
	}
	return t;
}

static void
delete_done(gw_pg_job *job)
{
	tus *t = true_or_error(job, 404, "No such upload");
	if (!t)
		return;
	unlink(t->path);
	tus_respond(t, 204, TUS_HEADERS);
}

/* --- PATCH ------------------------------------------------------------------------------ */

static void
patch_final_done(gw_pg_job *job)
{
	tus *t = job->data;
	if (job_back(t) || job_error(t))
		return;
	PGresult *r = job->results[1];
	char h[256];
	long long offset = t->start + t->written;
	if (!r || PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
	{
		tus_error(t, 409, "The upload moved on meanwhile");
		return;
	}
	hash_cache_put(t->id, offset, t->whole);
	snprintf(h, sizeof h, TUS_HEADERS "Upload-Offset: %lld\r\nUpload-Expires: %s\r\n", offset, PQgetvalue(r, 0, 0));
	tus_respond(t, 204, h);
}

static void
patch_finished(gw_blob_commit *bc, PGresult *r, const gw_error *e)
{
	(void)r;
	tus *t = bc->data;
	if (finish_back(t, e))
		return;
	char h[128];
	snprintf(h, sizeof h, TUS_HEADERS "Upload-Offset: %lld\r\n", t->length);
	tus_respond(t, 204, h);
}

static void patch_record(tus *t);

static void
length_set_done(gw_pg_job *job)
{
	tus *t = true_or_error(job, 409, "The upload moved on meanwhile");
	if (!t)
		return;
	t->set_length = 0;
	patch_record(t);
}

/* Body and check both done: verify the checksum, put the bytes on disk, give a
 * deferred upload its length if this PATCH says it, then record the new offset (or
 * the finished upload). */
static void
patch_complete(tus *t)
{
	if (t->has_checksum)
	{
		unsigned char d[32];
		unsigned dl = 0;
		EVP_DigestFinal_ex(t->part, d, &dl);
		if (memcmp(d, t->checksum, 32))
		{
			/* this PATCH's bytes are thrown away */
			if (ftruncate(t->fd, t->start) < 0)
				wk_log(WK_WARN, "tus %s: truncate: %s", t->id, strerror(errno));
			t->written = 0;
			tus_error(t, 460, "Checksum Mismatch");
			return;
		}
	}
	if (sync_bytes(t))
	{
		tus_error(t, 507, "The upload could not be stored");
		return;
	}
	if (t->set_length)
	{
		char from[32], len[32];
		snprintf(from, sizeof from, "%lld", t->start);
		snprintf(len, sizeof len, "%lld", t->length);
		gw_params_free(&t->qp);
		gw_params_init(&t->qp);
		gw_params_add(&t->qp, t->id);
		gw_params_add(&t->qp, from);
		gw_params_add(&t->qp, len);
		t->job.nstmts = 2;
		t->job.stmts[1].sql = "SELECT pod.upload_set_length($1::uuid, $2::bigint, $3::bigint)";
		t->job.stmts[1].params = &t->qp;
		submit(t, length_set_done);
		return;
	}
	patch_record(t);
}

/* Records the new offset, or finishes the upload when its last byte is in. */
static void
patch_record(tus *t)
{
	char from[32], to[32];
	snprintf(from, sizeof from, "%lld", t->start);
	snprintf(to, sizeof to, "%lld", t->start + t->written);
	gw_params_free(&t->qp);
	gw_params_init(&t->qp);
	gw_params_add(&t->qp, t->id);
	gw_params_add(&t->qp, from);
	t->job.nstmts = 2;
	if (t->start + t->written == t->length)
	{
		finish_upload(t, t->start, patch_finished);
		return;
	}
	gw_params_add(&t->qp, to);
	t->job.stmts[1].sql = "SELECT pod.upload_advance($1::uuid, $2::bigint, $3::bigint)";
	t->job.stmts[1].params = &t->qp;
	submit(t, patch_final_done);
}

static void
check_done(gw_pg_job *job)
{
	tus *t = job->data;
	PGresult *r = state_row(job);
	if (!r)
		return;
	long long received = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
	if (received != t->start || !PQgetisnull(r, 0, 5))
	{
		char h[128];
		snprintf(h, sizeof h, "The upload is at offset %lld", received);
		tus_error(t, 409, h);
		return;
	}
	if (PQgetisnull(r, 0, 0))
	{
		/* deferred: this PATCH may give the length (once), not below the offset */
		if (t->new_length >= 0 && t->new_length < t->start)
		{
			tus_error(t, 400, "Upload-Length is below the upload's offset");
			return;
		}
		t->length = t->new_length;
		t->set_length = t->new_length >= 0;
	}
	else
	{
		t->length = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		if (t->new_length >= 0 && t->new_length != t->length)
		{
			tus_error(t, 400, "Upload-Length cannot change once it is known");
			return;
		}
	}
	t->fd = open(t->path, O_RDWR | O_CLOEXEC);
	if (t->fd < 0)
	{
		wk_log(WK_WARN, "tus %s: %s: %s", t->id, t->path, strerror(errno));
		tus_error(t, 410, "The upload's bytes are gone");
		return;
	}
	if (flock(t->fd, LOCK_EX | LOCK_NB) < 0)
	{
		close(t->fd);
		t->fd = -1;
		tus_error(t, 423, "Another request is writing this upload");
		return;
	}
	struct stat st;
	if (fstat(t->fd, &st) < 0 || st.st_size < t->start)
	{
		tus_error(t, 410, "The upload's bytes are gone");
		return;
	}
	/* bytes past the recorded offset (a crash mid-PATCH) are dropped */
	if ((st.st_size > t->start && ftruncate(t->fd, t->start) < 0) || lseek(t->fd, t->start, SEEK_SET) < 0)
	{
		tus_error(t, 500, "The upload could not be stored");
		return;
	}
	t->whole = EVP_MD_CTX_new();
	if (!hash_cache_get(t->id, t->start, t->whole))
	{
		EVP_DigestInit_ex(t->whole, EVP_sha256(), NULL);
		char buf[1 << 16];
		long long left = t->start;
		off_t at = 0;
		while (left > 0)
		{
			ssize_t n = pread(t->fd, buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf, at);
			if (n <= 0)
			{
				tus_error(t, 500, "The upload could not be read");
				return;
			}
			EVP_DigestUpdate(t->whole, buf, (size_t)n);
			left -= n;
			at += n;
		}
	}
	t->checked = 1;
	if (t->pending.len && consume(t, t->pending.data, t->pending.len))
		return;
	gw_buf_free(&t->pending);
	gw_req_pause_body(t->req, 0);
	if (t->body_complete)
		patch_complete(t);
}

/* --- POST (creation, creation-with-upload) ------------------------------------------ */

static void create_answer(tus *t);

static void
create_finished(gw_blob_commit *bc, PGresult *r, const gw_error *e)
{
	(void)r;
	tus *t = bc->data;
	if (!finish_back(t, e))
		create_answer(t);
}

static void
create_done(gw_pg_job *job)
{
	tus *t = job->data;
	if (job_back(t) || job_error(t))
		return;
	t->created_file = 0; /* recorded: the row owns it now */
	t->expires = strdup(PQgetvalue(job->results[1], 0, 0));
	if (!t->expires)
		abort();
	if (t->written == t->length)
	{
		/* creation-with-upload of the whole: finished in a transaction of its own,
		 * after the blob's; if it fails, the upload stays at its full offset and an
		 * empty PATCH finishes it */
		finish_upload(t, t->written, create_finished);
		return;
	}
	create_answer(t);
}

static void
create_answer(tus *t)
{
	gw_buf h;
	gw_buf_init(&h);
	gw_buf_printf(&h, TUS_HEADERS "Location: /uploads/%s\r\nUpload-Expires: %s\r\n", t->id, t->expires);
	if (t->written > 0 || t->length == 0)
		gw_buf_printf(&h, "Upload-Offset: %lld\r\n", t->written);
	tus_respond(t, 201, h.data);
	gw_buf_free(&h);
}

static void
create_finish(tus *t)
{
	char len[32], received[32];
	if (sync_bytes(t))
	{
		tus_error(t, 507, "The upload could not be stored");
		return;
	}
	if (t->length >= 0)
		snprintf(len, sizeof len, "%lld", t->length);
	else
		len[0] = '\0'; /* deferred */
	snprintf(received, sizeof received, "%lld", t->written);
	gw_params_add(&t->qp, t->id);
	gw_params_add(&t->qp, len);
	gw_params_add(&t->qp, t->metadata_json);
	gw_params_add(&t->qp, received);
	int n = 1;
	t->job.stmts[n].params = &t->qp;
	t->job.stmts[n++].sql = "SELECT pod.upload_create($1::uuid, nullif($2, '')::bigint, $3::jsonb, $4::bigint)";
	t->job.nstmts = n;
	submit(t, create_done);
}

/* Upload-Metadata: comma-separated "key base64value" pairs -> a JSON object. */
static char *
parse_metadata(const char *h)
{
	json_t *o = json_object();
	char *copy = strdup(h ? h : ""), *save = NULL, *out = NULL;
	for (char *pair = strtok_r(copy, ",", &save); pair; pair = strtok_r(NULL, ",", &save))
	{
		while (*pair == ' ')
			pair++;
		char *sp = strchr(pair, ' ');
		if (sp)
			*sp++ = '\0';
		if (!*pair || strpbrk(pair, " \t") || json_object_get(o, pair))
			goto bad;
		const char *v = sp ? sp : "";
		size_t n = strlen(v);
		while (n && v[n - 1] == ' ')
			n--;
		if (n % 4)
			goto bad;
		unsigned char *dec = malloc(n / 4 * 3 + 1);
		if (!dec)
			abort();
		int dl = n ? EVP_DecodeBlock(dec, (const unsigned char *)v, (int)n) : 0;
		if (dl < 0)
		{
			free(dec);
			goto bad;
		}
		if (n >= 1 && v[n - 1] == '=')
			dl--;
		if (n >= 2 && v[n - 2] == '=')
			dl--;
		json_t *s = json_stringn((const char *)dec, (size_t)dl);
		free(dec);
		if (!s)
			goto bad; /* not UTF-8 */
		json_object_set_new(o, pair, s);
	}
	out = json_dumps(o, JSON_COMPACT);
bad:
	free(copy);
	json_decref(o);
	return out;
}

static int
parse_offset(const char *v, long long *out)
{
	char *end;
	if (!v || !*v || *v == '-' || *v == '+')
		return -1;
	errno = 0;
	*out = strtoll(v, &end, 10);
	return errno || *end ? -1 : 0;
}

/* --- the sweep of expired uploads ---------------------------------------------------------- */

static ev_timer sweep_timer;
static gw_pg_job sweep_job;
static gw_params sweep_params;
static int sweep_busy;

/* Removes the bytes of the uploads whose rows pod.uploads_expire took. */
static void
sweep_done(gw_pg_job *job)
{
	sweep_busy = 0;
	PGresult *r = job->results[0];
	if (job->failed || job->error)
		wk_log(WK_WARN, "tus: the sweep of expired uploads failed: %s", job->failed ? job->failure : PQresultErrorMessage(job->error));
	else if (r && PQntuples(r) == 1 && *PQgetvalue(r, 0, 0))
	{
		char *ids = strdup(PQgetvalue(r, 0, 0)), *save = NULL, dir[4096], p[4200];
		if (!ids)
			abort();
		upload_dir(dir, sizeof dir);
		for (char *id = strtok_r(ids, ",", &save); id; id = strtok_r(NULL, ",", &save))
			if (valid_uuid(id))
			{
				snprintf(p, sizeof p, "%s/%s", dir, id);
				unlink(p);
			}
		free(ids);
	}
	gw_pool_job_clear(job);
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (sweep_busy || gw_draining)
		return;
	gw_pool_job_clear(&sweep_job);
	memset(&sweep_job, 0, sizeof sweep_job);
	/* no role switch: the login role may run the sweep (it removes only what expired) */
	sweep_job.nstmts = 1;
	sweep_job.stmts[0].sql = "SELECT coalesce(string_agg(e::text, ','), '') FROM pod.uploads_expire(100) e";
	sweep_job.stmts[0].params = &sweep_params;
	sweep_job.done = sweep_done;
	sweep_busy = 1;
	gw_pool_submit(&sweep_job);
}

void
gw_tus_sweep_start(void)
{
	gw_params_init(&sweep_params);
	ev_timer_init(&sweep_timer, sweep_cb, gw_cfg.upload_sweep, gw_cfg.upload_sweep);
	ev_timer_start(gw_loop, &sweep_timer);
	ev_unref(gw_loop); /* it alone does not keep the loop running */
}

/* --- entry points ------------------------------------------------------------------------ */

/* A tus struct for req with the checks every method but OPTIONS shares:
 * Tus-Resumable: 1.0.0 and a signed-in caller. NULL when req was answered (the
 * struct then lives until the request ends). */
static tus *
tus_begin(gw_req *req)
{
	tus *t = calloc(1, sizeof *t);
	if (!t)
		abort();
	t->req = req;
	t->fd = -1;
	t->method = req->method;
	gw_buf_init(&t->settings);
	gw_buf_init(&t->pending);
	gw_params_init(&t->sp);
	gw_params_init(&t->qp);
	gw_params_init(&t->fp);
	req->handler = t;
	req->on_done = req_done;
	const char *tr = gw_req_header(req, "tus-resumable");
	if (!tr || strcmp(tr, "1.0.0"))
	{
		tus_error(t, 412, "Tus-Resumable: 1.0.0 is required");
		return NULL;
	}
	gw_error e;
	char www[256];
	if (gw_auth_request(req, &t->auth, &e, www, sizeof www))
	{
		t->responded = 1;
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return NULL;
	}
	if (t->auth.anonymous)
	{
		t->responded = 1;
		gw_error_set(&e, 401, "PGRST302", "Anonymous access is disabled", NULL, NULL);
		gw_respond_error(req, &e, "WWW-Authenticate: Bearer\r\n" TUS_HEADERS);
		return NULL;
	}
	gw_auth_settings_sql(req, &t->auth, &t->settings, &t->sp);
	return t;
}

void
gw_tus_head(gw_req *req)
{
	if (req->method != HTTP_POST && req->method != HTTP_PATCH)
		return; /* answered once the request is complete: no early close */
	tus *t = tus_begin(req);
	if (!t)
		return;
	const char *ct = gw_req_header(req, "content-type");
	int has_body = req->content_length > 0 || (req->content_length < 0 && gw_req_header(req, "transfer-encoding"));
	if (has_body && (!ct || strncasecmp(ct, OCTETS, strlen(OCTETS))))
	{
		tus_error(t, 415, "The body must be " OCTETS);
		return;
	}
	char dir[4096];
	upload_dir(dir, sizeof dir);
	mkdir(gw_cfg.store_dir, 0750);
	mkdir(dir, 0750);
	if (req->method == HTTP_POST)
	{
		if (strcmp(req->path, "/uploads"))
		{
			tus_error(t, 405, "Uploads are created with POST /uploads");
			return;
		}
		const char *defer = gw_req_header(req, "upload-defer-length");
		const char *length = gw_req_header(req, "upload-length");
		if (defer && (strcmp(defer, "1") || length))
		{
			tus_error(t, 400, length ? "Upload-Length and Upload-Defer-Length exclude each other"
			                         : "Upload-Defer-Length must be 1");
			return;
		}
		if (defer)
			t->length = -1; /* a later PATCH says it */
		else if (parse_offset(length, &t->length))
		{
			tus_error(t, 400, "Upload-Length (or Upload-Defer-Length: 1) must be a number of bytes");
			return;
		}
		if (t->length > gw_cfg.upload_max)
		{
			tus_error(t, 413, "Upload-Length is over Tus-Max-Size");
			return;
		}
		if (req->content_length > (t->length >= 0 ? t->length : gw_cfg.upload_max))
		{
			tus_error(t, 413, t->length >= 0 ? "The body goes past Upload-Length" : "The body goes past Tus-Max-Size");
			return;
		}
		t->metadata_json = parse_metadata(gw_req_header(req, "upload-metadata"));
		if (!t->metadata_json)
		{
			tus_error(t, 400, "Upload-Metadata must be comma-separated \"key base64\" pairs of UTF-8 text");
			return;
		}
		unsigned char b[16];
		if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
		{
			tus_error(t, 500, "No randomness for an upload id");
			return;
		}
		b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
		b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
		snprintf(t->id, sizeof t->id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		         b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
		snprintf(t->path, sizeof t->path, "%s/%s", dir, t->id);
		t->fd = open(t->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (t->fd < 0)
		{
			wk_log(WK_ERROR, "tus: cannot create %s: %s", t->path, strerror(errno));
			tus_error(t, 507, "The upload could not be stored");
			return;
		}
		t->created_file = 1;
		t->whole = EVP_MD_CTX_new();
		EVP_DigestInit_ex(t->whole, EVP_sha256(), NULL);
		t->checked = 1;
		req->on_body = on_body;
		return;
	}
	/* PATCH */
	const char *id = req->path + 9;
	if (strncmp(req->path, "/uploads/", 9) || !valid_uuid(id))
	{
		tus_error(t, 404, "No such upload");
		return;
	}
	snprintf(t->id, sizeof t->id, "%s", id);
	snprintf(t->path, sizeof t->path, "%s/%s", dir, t->id);
	if (!ct)
	{
		tus_error(t, 415, "The body must be " OCTETS);
		return;
	}
	if (parse_offset(gw_req_header(req, "upload-offset"), &t->start))
	{
		tus_error(t, 400, "Upload-Offset must be a number of bytes");
		return;
	}
	/* a deferred upload's length, given by a PATCH (checked against the row later) */
	t->new_length = -1;
	const char *new_length = gw_req_header(req, "upload-length");
	if (new_length && parse_offset(new_length, &t->new_length))
	{
		tus_error(t, 400, "Upload-Length must be a number of bytes");
		return;
	}
	if (t->new_length > gw_cfg.upload_max)
	{
		tus_error(t, 413, "Upload-Length is over Tus-Max-Size");
		return;
	}
	const char *cs = gw_req_header(req, "upload-checksum");
	if (cs)
	{
		const char *sp = strchr(cs, ' ');
		unsigned char dec[48];
		if (!sp || (size_t)(sp - cs) != 6 || strncasecmp(cs, "sha256", 6))
		{
			tus_error(t, 400, "Upload-Checksum: only sha256 is supported");
			return;
		}
		sp++;
		if (strlen(sp) != 44 || EVP_DecodeBlock(dec, (const unsigned char *)sp, 44) != 33)
		{
			tus_error(t, 400, "Upload-Checksum: a sha256 digest is 32 bytes in base64");
			return;
		}
		memcpy(t->checksum, dec, 32);
		t->has_checksum = 1;
		t->part = EVP_MD_CTX_new();
		EVP_DigestInit_ex(t->part, EVP_sha256(), NULL);
	}
	req->on_body = on_body;
	/* the bytes wait until the database says whose upload this is and where it stands */
	gw_req_pause_body(req, 1);
	gw_params_add(&t->qp, t->id);
	t->job.nstmts = 2;
	t->job.stmts[1].sql = "SELECT length, received, expired, expires, metadata::text, file_id FROM pod.upload_state($1::uuid)";
	t->job.stmts[1].params = &t->qp;
	submit(t, check_done);
}

void
gw_tus_finish(gw_req *req)
{
	if (req->method == HTTP_OPTIONS)
	{
		char h[256];
		snprintf(h, sizeof h,
		         TUS_HEADERS "Tus-Version: 1.0.0\r\nTus-Extension: creation,creation-with-upload,termination,expiration,"
		                     "checksum,creation-defer-length\r\nTus-Checksum-Algorithm: sha256\r\nTus-Max-Size: %ld\r\n",
		         gw_cfg.upload_max);
		gw_respond(req, 204, NULL, h, NULL, 0);
		return;
	}
	tus *t = req->handler;
	if (t)
	{
		if (t->responded)
			return;
		t->body_complete = 1;
		if (t->method == HTTP_POST)
			create_finish(t);
		else if (t->checked && !t->job_busy)
			patch_complete(t);
		/* else: check_done completes it */
		return;
	}
	if (req->method != HTTP_HEAD && req->method != HTTP_DELETE)
	{
		gw_respond_simple_error(req, 405, "PGRST117", "Uploads take OPTIONS, POST, HEAD, PATCH and DELETE");
		return;
	}
	t = tus_begin(req);
	if (!t)
		return;
	const char *id = req->path + 9;
	if (strncmp(req->path, "/uploads/", 9) || !valid_uuid(id))
	{
		tus_error(t, 404, "No such upload");
		return;
	}
	snprintf(t->id, sizeof t->id, "%s", id);
	char dir[4096];
	upload_dir(dir, sizeof dir);
	snprintf(t->path, sizeof t->path, "%s/%s", dir, t->id);
	gw_params_add(&t->qp, t->id);
	t->job.nstmts = 2;
	t->job.stmts[1].params = &t->qp;
	if (req->method == HTTP_HEAD)
	{
		t->job.stmts[1].sql =
		    "SELECT length, received, expired, expires, metadata::text, file_id FROM pod.upload_state($1::uuid)";
		head_when_unlocked(t);
	}
	else
	{
		t->job.stmts[1].sql = "SELECT pod.upload_terminate($1::uuid)";
		submit(t, delete_done);
	}
}
