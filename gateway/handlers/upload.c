/* Uploads (see upload.h): the body streams into a hashed temporary file of the
 * content store (blob.h), which is then stored as a blob and registered as a
 * file of the uploader by pod.register_upload. Everything is checked that can
 * be before the body is read (token, size, filename): a refusal stores nothing.
 * The upload owns only its temporary file; blobs are the database's (blob.h). */
#include "upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "blob.h"
#include "pool.h"

typedef struct upload
{
	gw_req *req;
	gw_auth auth;
	gw_blob_tmp tmp;
	const char *filename; /* request arena; NULL: none given */
	gw_params qp;
	gw_blob_commit commit;
} upload;

static void
upload_free(gw_req *req, int ok)
{
	(void)ok;
	upload *u = req->handler;
	if (!u)
		return;
	gw_blob_tmp_discard(&u->tmp);
	gw_blob_commit_clear(&u->commit);
	gw_params_free(&u->qp);
	free(u);
	req->handler = NULL;
}

/* An error answer: the temporary file goes first, not when the socket closes. */
static void
upload_refuse(gw_req *req, int status, const char *code, const char *message)
{
	upload *u = req->handler;
	gw_blob_tmp_discard(&u->tmp);
	gw_respond_simple_error(req, status, code, message);
}

static int
upload_body(gw_req *req, const char *data, size_t len)
{
	upload *u = req->handler;
	if (u->tmp.size + (long long)len > gw_cfg.upload_max)
	{
		upload_refuse(req, 413, "PGRST413", "Payload Too Large");
		return -1;
	}
	if (gw_blob_tmp_write(&u->tmp, data, len))
	{
		upload_refuse(req, 507, "PGRST000", "The upload could not be stored");
		return -1;
	}
	return 0;
}

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The filename from ?filename= (the first one) or Content-Disposition's
 * filename="..." / filename=...; *bad set when one is given but unusable. */
static const char *
upload_filename(gw_req *req, const char **bad)
{
	*bad = NULL;
	const char *q = req->query;
	while (q && *q)
	{
		size_t n = strcspn(q, "&");
		if (n >= 9 && !strncmp(q, "filename=", 9))
		{
			/* decoded with its length: a %00 must be seen, not end the string */
			char *v = gw_arena_alloc(&req->arena, n - 9 + 1);
			size_t o = 0;
			for (size_t i = 9; i < n; i++)
			{
				int hi = q[i] == '%' && i + 2 < n ? hexval(q[i + 1]) : -1;
				int lo = hi >= 0 ? hexval(q[i + 2]) : -1;
				if (lo >= 0)
				{
					v[o++] = (char)(hi * 16 + lo);
					i += 2;
				}
				else if (q[i] == '%')
				{
					*bad = "The filename is not correctly percent-encoded";
					return NULL;
				}
				else
					v[o++] = q[i] == '+' ? ' ' : q[i];
			}
			v[o] = '\0';
			*bad = gw_filename_problem(v, o);
			return *bad ? NULL : v;
		}
		q += n;
		if (*q)
			q++;
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
		*bad = gw_filename_problem(f, (size_t)(e - f));
		return *bad ? NULL : gw_arena_strndup(&req->arena, f, (size_t)(e - f));
	}
	return NULL;
}

/* The Content-Type's media type (before any ';', trimmed, any case) must be one
 * pod.files accepts: type/subtype of RFC 6838's characters. Checked before the
 * body is read, so that a refused type stores nothing. */
static const char *
mime_problem(const char *ct)
{
	if (!ct)
		return NULL; /* application/octet-stream */
	while (*ct == ' ' || *ct == '\t')
		ct++;
	size_t n = strcspn(ct, ";");
	while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (!n)
		return NULL;
	static const char extra[] = "!#$&^_.+-";
	int slash = 0;
	for (size_t i = 0; i < n; i++)
	{
		char c = ct[i];
		int first = i == 0 || ct[i - 1] == '/';
		if (c == '/' && !slash && i > 0 && i + 1 < n)
			slash = 1;
		else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		           (!first && strchr(extra, c))))
			return "The Content-Type is not a media type (type/subtype)";
	}
	return slash ? NULL : "The Content-Type is not a media type (type/subtype)";
}

void
gw_upload_head(gw_req *req)
{
	upload *u = calloc(1, sizeof *u);
	if (!u)
		abort();
	u->tmp.fd = -1;
	u->req = req;
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
	const char *bad;
	u->filename = upload_filename(req, &bad);
	if (!bad)
		bad = mime_problem(gw_req_header(req, "content-type"));
	if (bad)
	{
		gw_respond_simple_error(req, 400, "PGRST100", bad);
		return;
	}
	if (gw_blob_tmp_open(&u->tmp))
	{
		gw_respond_simple_error(req, 500, "PGRST000", "The upload could not be stored");
		return;
	}
	req->on_body = upload_body;
}

static void
registered(gw_blob_commit *bc, PGresult *r, const gw_error *e)
{
	upload *u = bc->data;
	if (e)
	{
		gw_respond_error(u->req, e, NULL);
		return;
	}
	gw_respond(u->req, 201, "application/json; charset=utf-8", NULL, PQgetvalue(r, 0, 0),
	           (size_t)PQgetlength(r, 0, 0));
}

void
gw_upload_finish(gw_req *req)
{
	upload *u = req->handler;
	if (!u || u->tmp.fd < 0)
		return;
	if (gw_blob_tmp_seal(&u->tmp))
	{
		gw_blob_tmp_discard(&u->tmp);
		gw_respond_simple_error(req, 507, "PGRST000", "The upload could not be stored");
		return;
	}
	char size[32];
	snprintf(size, sizeof size, "%lld", u->tmp.size);
	const char *ct = gw_req_header(req, "content-type");
	gw_params_add_binary(&u->qp, u->tmp.digest, 32, 17);
	gw_params_add(&u->qp, size);
	gw_params_add(&u->qp, u->filename);
	gw_params_add(&u->qp, ct && *ct ? ct : "application/octet-stream");
	u->commit.req = req;
	u->commit.auth = &u->auth;
	u->commit.tmp = &u->tmp;
	u->commit.register_sql =
	    "SELECT pod.register_upload($1::bytea, $2::bigint, $3::text, $4::text)::text";
	u->commit.register_params = &u->qp;
	u->commit.done = registered;
	u->commit.data = u;
	gw_blob_commit_start(&u->commit);
}
