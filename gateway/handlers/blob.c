/* Blobs in the content store (see blob.h): the hashed temporary file, filename
 * rules, and storing + registering a blob so that no request can remove bytes
 * another request's file needs. Local disk writes are synchronous: they are
 * short and the store is local. */
#include "worker.h"
#include "blob.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blob_download.h"

int
gw_blob_tmp_open(gw_blob_tmp *t)
{
	memset(t, 0, sizeof *t);
	t->fd = -1;
	snprintf(t->path, sizeof t->path, "%s/tmp", gw_cfg.store_dir);
	mkdir(gw_cfg.store_dir, 0750);
	mkdir(t->path, 0750);
	snprintf(t->path, sizeof t->path, "%s/tmp/upload-XXXXXX", gw_cfg.store_dir);
	t->fd = mkstemp(t->path);
	if (t->fd < 0)
	{
		wk_log(WK_ERROR, "upload: cannot create %s: %s", t->path, strerror(errno));
		t->path[0] = '\0';
		return -1;
	}
	t->md = EVP_MD_CTX_new();
	if (!t->md || !EVP_DigestInit_ex(t->md, EVP_sha256(), NULL))
	{
		wk_log(WK_ERROR, "upload: cannot start a SHA-256");
		gw_blob_tmp_discard(t);
		return -1;
	}
	return 0;
}

int
gw_blob_tmp_write(gw_blob_tmp *t, const char *data, size_t len)
{
	if (t->fd < 0)
		return -1;
	EVP_DigestUpdate(t->md, data, len);
	while (len)
	{
		ssize_t n = write(t->fd, data, len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			wk_log(WK_WARN, "upload to %s: %s", t->path, strerror(errno));
			return -1;
		}
		data += n;
		len -= (size_t)n;
		t->size += n;
	}
	wk_writeback(t->fd, &t->writeback, t->size);
	return 0;
}

static void
set_hex(gw_blob_tmp *t)
{
	for (int i = 0; i < 32; i++)
		snprintf(t->hex + 2 * i, 3, "%02x", t->digest[i]);
}

int
gw_blob_tmp_seal(gw_blob_tmp *t)
{
	unsigned dl = 0;
	int rc = 0;
	EVP_DigestFinal_ex(t->md, t->digest, &dl);
	set_hex(t);
	/* on the disk before the database may name it (durable.c) */
	if (t->fd >= 0 && fdatasync(t->fd) < 0)
	{
		wk_log(WK_ERROR, "upload to %s: fdatasync: %s", t->path, strerror(errno));
		rc = -1;
	}
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	return rc;
}

void
gw_blob_tmp_borrow(gw_blob_tmp *t, const char *path, long long size, const unsigned char digest[32])
{
	memset(t, 0, sizeof *t);
	t->fd = -1;
	t->borrowed = 1;
	snprintf(t->path, sizeof t->path, "%s", path);
	t->size = size;
	memcpy(t->digest, digest, 32);
	set_hex(t);
}

void
gw_blob_tmp_discard(gw_blob_tmp *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->path[0] && !t->borrowed)
		unlink(t->path);
	t->path[0] = '\0';
	if (t->md)
		EVP_MD_CTX_free(t->md);
	t->md = NULL;
}

/* Valid UTF-8 (no overlongs, no surrogates): the length of the sequence at s, 0 if bad. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	if (s[0] < 0x80)
		return 1;
	size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	if (!len || len > n || (s[0] >= 0xe0 && len == 3 && s[0] > 0xef))
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
		return 0;
	return len;
}

const char *
gw_filename_problem(const char *name, size_t len)
{
	if (len > GW_FILENAME_MAX)
		return "The filename is longer than 255 bytes";
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return "The filename cannot be . or ..";
	const unsigned char *s = (const unsigned char *)name;
	for (size_t i = 0; i < len;)
	{
		if (s[i] < 0x20 || s[i] == 0x7f)
			return "The filename contains a NUL or control character";
		if (s[i] == '/' || s[i] == '\\')
			return "The filename contains a path separator (/ or \\)";
		size_t k = utf8_seq(s + i, len - i);
		if (!k)
			return "The filename is not valid UTF-8";
		i += k;
	}
	return NULL;
}

/* Links the temporary file into the store unless the blob is there; never
 * replaces or removes a blob. 0, or -1 (logged). */
static int
blob_link(const gw_blob_tmp *t)
{
	char path[4096];
	/* every new name on the way to the blob reaches the disk before the database
	 * registers the file (durable.c): the directory that holds it is fsync'ed */
	snprintf(path, sizeof path, "%s/blobs", gw_cfg.store_dir);
	if (mkdir(path, 0750) == 0 && wk_fsync_parent(path) < 0)
		goto failed;
	snprintf(path, sizeof path, "%s/blobs/%.2s", gw_cfg.store_dir, t->hex);
	if (mkdir(path, 0750) == 0 && wk_fsync_parent(path) < 0)
		goto failed;
	gw_blob_path(path, sizeof path, gw_cfg.store_dir, t->hex);
	/* link, not rename: a blob already there (a concurrent identical upload) stays */
	if (link(t->path, path) == 0)
	{
		if (wk_fsync_parent(path) < 0)
			goto failed;
		return 0;
	}
	if (errno == EEXIST)
		return 0;
failed:
	wk_log(WK_ERROR, "upload: cannot store %s: %s", path, strerror(errno));
	return -1;
}

static void commit_step(gw_pg_job *job);

static void
commit_submit(gw_blob_commit *bc, const char *sql, const gw_params *params)
{
	gw_pool_submit_as(&bc->job, bc->settings.data, &bc->sp, sql, params, 0, commit_step, bc);
}

static void
commit_fail(gw_blob_commit *bc, const gw_error *e)
{
	gw_blob_tmp_discard(bc->tmp);
	bc->done(bc, NULL, e);
}

static void
commit_step(gw_pg_job *job)
{
	gw_blob_commit *bc = job->data;
	gw_error e;
	if (gw_error_from_job(job, bc->auth->anonymous, &e))
	{
		commit_fail(bc, &e);
		return;
	}
	if (bc->step == 0)
	{
		/* the database knows the blob: its bytes may go into the store */
		if (blob_link(bc->tmp))
		{
			gw_error_set(&e, 507, "PGRST000", "The upload could not be stored", NULL, NULL);
			commit_fail(bc, &e);
			return;
		}
		bc->step = 1;
		commit_submit(bc, bc->register_sql, bc->register_params);
		return;
	}
	/* registered: a collector that removed the blob between our link and our
	 * registration (it was orphaned) finds it back from our copy */
	if (blob_link(bc->tmp))
		wk_log(WK_ERROR, "upload: blob %s registered but could not be linked again", bc->tmp->hex);
	gw_blob_tmp_discard(bc->tmp);
	bc->done(bc, job->results[1], NULL);
}

void
gw_blob_commit_start(gw_blob_commit *bc)
{
	gw_buf_init(&bc->settings);
	gw_params_init(&bc->sp);
	gw_params_init(&bc->bp);
	memset(&bc->job, 0, sizeof bc->job);
	bc->step = 0;
	char size[32];
	snprintf(size, sizeof size, "%lld", bc->tmp->size);
	gw_params_add_binary(&bc->bp, bc->tmp->digest, 32, 17);
	gw_params_add(&bc->bp, size);
	gw_auth_settings_sql(bc->req, bc->auth, &bc->settings, &bc->sp);
	commit_submit(bc, "SELECT pod.blob_stored($1::bytea, $2::bigint)", &bc->bp);
}

void
gw_blob_commit_clear(gw_blob_commit *bc)
{
	if (!bc->settings.data && !bc->job.done)
		return;
	gw_pool_job_clear(&bc->job);
	gw_buf_free(&bc->settings);
	gw_params_free(&bc->sp);
	gw_params_free(&bc->bp);
	memset(bc, 0, sizeof *bc);
}
