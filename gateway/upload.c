/* Uploads (see upload.h). Ownership: the upload struct owns the temporary file
 * until it is renamed into the store; after that it owns the blob only if this
 * upload created it, and removes it again when registration fails. Writes to
 * the local disk are synchronous: they are short, and the store is local. */
#include "upload.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "pool.h"
#include "static.h"

typedef struct upload
{
	gw_req *req;
	gw_auth auth;
	int fd;
	char tmp[4096];
	char blob[4096];
	int created_blob;
	int registered;
	long long size;
	EVP_MD_CTX *md;
	unsigned char digest[32];
	gw_buf settings;
	gw_params sp, qp;
	gw_pg_job job;
} upload;

static void
upload_free(gw_req *req, int ok)
{
	(void)ok;
	upload *u = req->handler;
	if (!u)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->tmp[0])
		unlink(u->tmp);
	if (u->created_blob && !u->registered)
		unlink(u->blob);
	if (u->md)
		EVP_MD_CTX_free(u->md);
	gw_pool_job_clear(&u->job);
	gw_buf_free(&u->settings);
	gw_params_free(&u->sp);
	gw_params_free(&u->qp);
	free(u);
	req->handler = NULL;
}

static int
upload_body(gw_req *req, const char *data, size_t len)
{
	upload *u = req->handler;
	if (u->size + (long long)len > gw_cfg.upload_max)
	{
		/* remove the partial file before answering, not when the socket closes */
		close(u->fd);
		u->fd = -1;
		unlink(u->tmp);
		u->tmp[0] = '\0';
		gw_respond_simple_error(req, 413, "PGRST413", "Payload Too Large");
		return -1;
	}
	EVP_DigestUpdate(u->md, data, len);
	while (len)
	{
		ssize_t n = write(u->fd, data, len);
		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			gw_log("upload to %s: %s", u->tmp, strerror(errno));
			gw_respond_simple_error(req, 507, "PGRST000", "The upload could not be stored");
			return -1;
		}
		data += n;
		len -= (size_t)n;
		u->size += n;
	}
	return 0;
}

void
gw_upload_head(gw_req *req)
{
	upload *u = calloc(1, sizeof *u);
	if (!u)
		abort();
	u->fd = -1;
	u->req = req;
	gw_buf_init(&u->settings);
	gw_params_init(&u->sp);
	gw_params_init(&u->qp);
	req->handler = u;
	req->on_done = upload_free;
	gw_error e;
	char www[256];
	if (gw_auth_request(req, &u->auth, &e, www, sizeof www))
	{
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	if (u->auth.anonymous)
	{
		gw_error_set(&e, 401, "PGRST302", "Anonymous access is disabled", NULL, NULL);
		gw_respond_error(req, &e, "WWW-Authenticate: Bearer\r\n");
		return;
	}
	if (req->content_length > gw_cfg.upload_max)
	{
		gw_respond_simple_error(req, 413, "PGRST413", "Payload Too Large");
		return;
	}
	snprintf(u->tmp, sizeof u->tmp, "%s/tmp", gw_cfg.store_dir);
	mkdir(gw_cfg.store_dir, 0750);
	mkdir(u->tmp, 0750);
	snprintf(u->tmp, sizeof u->tmp, "%s/tmp/upload-XXXXXX", gw_cfg.store_dir);
	u->fd = mkstemp(u->tmp);
	if (u->fd < 0)
	{
		gw_log("upload: cannot create %s: %s", u->tmp, strerror(errno));
		u->tmp[0] = '\0';
		gw_respond_simple_error(req, 500, "PGRST000", "The upload could not be stored");
		return;
	}
	u->md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(u->md, EVP_sha256(), NULL);
	req->on_body = upload_body;
}

static void
register_done(gw_pg_job *job)
{
	upload *u = job->data;
	gw_req *req = u->req;
	gw_error e;
	if (gw_error_from_job(job, u->auth.anonymous, &e))
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	PGresult *r = job->results[1];
	u->registered = 1;
	gw_respond(req, 201, "application/json; charset=utf-8", NULL, PQgetvalue(r, 0, 0),
	           (size_t)PQgetlength(r, 0, 0));
}

/* filename from ?filename= or Content-Disposition: ...; filename="x" */
static char *
upload_filename(gw_req *req)
{
	const char *q = req->query;
	while (q && *q)
	{
		const char *amp = strchr(q, '&');
		size_t n = amp ? (size_t)(amp - q) : strlen(q);
		if (n > 9 && !strncmp(q, "filename=", 9))
		{
			char *v = gw_url_decode(&req->arena, q + 9, n - 9, 1);
			if (v)
				return v;
		}
		q = amp ? amp + 1 : NULL;
	}
	const char *cd = gw_req_header(req, "content-disposition");
	const char *f = cd ? strstr(cd, "filename=") : NULL;
	if (f)
	{
		f += 9;
		int quoted = *f == '"';
		if (quoted)
			f++;
		const char *e = f;
		while (*e && (quoted ? *e != '"' : *e != ';'))
			e++;
		return gw_arena_strndup(&req->arena, f, (size_t)(e - f));
	}
	return NULL;
}

void
gw_upload_finish(gw_req *req)
{
	upload *u = req->handler;
	if (!u || u->fd < 0)
		return;
	unsigned dl = 0;
	EVP_DigestFinal_ex(u->md, u->digest, &dl);
	char hex[65];
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", u->digest[i]);
	close(u->fd);
	u->fd = -1;
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/blobs", gw_cfg.store_dir);
	mkdir(dir, 0750);
	snprintf(dir, sizeof dir, "%s/blobs/%.2s", gw_cfg.store_dir, hex);
	mkdir(dir, 0750);
	gw_blob_path(u->blob, sizeof u->blob, gw_cfg.store_dir, hex);
	struct stat st;
	if (stat(u->blob, &st) == 0)
	{
		unlink(u->tmp); /* the same content is already stored */
	}
	else if (link(u->tmp, u->blob) == 0)
	{
		/* link, not rename: a concurrent identical upload cannot be overwritten */
		unlink(u->tmp);
		u->created_blob = 1;
	}
	else if (errno != EEXIST)
	{
		gw_log("upload: cannot store %s: %s", u->blob, strerror(errno));
		gw_respond_simple_error(req, 500, "PGRST000", "The upload could not be stored");
		return;
	}
	else
	{
		unlink(u->tmp);
	}
	u->tmp[0] = '\0';
	char size[32];
	snprintf(size, sizeof size, "%lld", u->size);
	const char *ct = gw_req_header(req, "content-type");
	gw_params_add_binary(&u->qp, u->digest, 32, 17);
	gw_params_add(&u->qp, size);
	gw_params_add(&u->qp, upload_filename(req));
	gw_params_add(&u->qp, ct && *ct ? ct : "application/octet-stream");
	gw_auth_settings_sql(req, &u->auth, &u->settings, &u->sp);
	u->job.nstmts = 2;
	u->job.stmts[0].sql = u->settings.data;
	u->job.stmts[0].params = &u->sp;
	u->job.stmts[1].sql =
	    "SELECT pod.register_upload($1::bytea, $2::bigint, $3::text, $4::text)::text";
	u->job.stmts[1].params = &u->qp;
	u->job.done = register_done;
	u->job.data = u;
	gw_pool_submit(&u->job);
}
