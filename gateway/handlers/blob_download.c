/* Blob downloads (see static.h): one read-only transaction to look the file up
 * under the caller's role, then the blob is opened from the content store and
 * sent with sendfile by http.c; several ranges are sent as multipart/byteranges. */
#define _GNU_SOURCE /* strcasestr */
#include "worker.h"
#include "blob_download.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "byte_range.h"
#include "pool.h"

typedef struct dl
{
	gw_req *req;
	gw_auth auth;
	const char *file_id; /* request arena */
	gw_buf settings;
	gw_params sp, qp;
	gw_pg_job job;
} dl;

void
gw_blob_path(char *out, size_t n, const char *store_dir, const char *hex)
{
	snprintf(out, n, "%s/blobs/%.2s/%s", store_dir, hex, hex);
}

static void
dl_free(gw_req *req, int ok)
{
	(void)ok;
	dl *d = req->handler;
	if (!d)
		return;
	gw_pool_job_clear(&d->job);
	gw_buf_free(&d->settings);
	gw_params_free(&d->sp);
	gw_params_free(&d->qp);
	free(d);
	req->handler = NULL;
}

/* Header-safe copy: no CR, LF or quote from the database reaches the head. */
static void
header_safe(char *dst, size_t n, const char *src)
{
	size_t o = 0;
	for (; *src && o + 1 < n; src++)
		if (*src != '\r' && *src != '\n' && *src != '"' && *src != '\\')
			dst[o++] = *src;
	dst[o] = '\0';
}

/* --- authorization cache -----------------------------------------------------
 * A WebSeed or a video player asks for many ranges of one file in a row; each
 * would cost a transaction. A positive answer of pod.file_download is remembered for
 * PGPOD_FILE_CACHE_MS (default 1000, 0 disables) per (role and claims of the
 * verified token, file id), so a revoked permission takes effect within that time;
 * a video's change of state or privacy empties the cache at once (its NOTIFY,
 * gw_blob_download_notify). The token itself is still verified on every request. */
#define CACHE_SLOTS 512

typedef struct cache_entry
{
	char *key;
	double expires;
	char hex[65];
	char mime[256];
	char name[1024]; /* 255 characters of UTF-8 */
} cache_entry;

static cache_entry cache[CACHE_SLOTS];

static char *
cache_key(gw_req *req, const gw_auth *auth, const char *file_id)
{
	/* who the verified token says the caller is, however it came (header or
	 * access_token), never the raw header */
	size_t n = strlen(auth->role) + strlen(auth->claims_json) + strlen(file_id) + 3;
	char *k = gw_arena_alloc(&req->arena, n);
	snprintf(k, n, "%s\n%s\n%s", auth->role, auth->claims_json, file_id);
	return k;
}

static unsigned
cache_slot(const char *key)
{
	unsigned h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % CACHE_SLOTS;
}

static const cache_entry *
cache_get(gw_req *req, const gw_auth *auth, const char *file_id)
{
	if (gw_cfg.file_cache_ms <= 0)
		return NULL;
	char *key = cache_key(req, auth, file_id);
	cache_entry *e = &cache[cache_slot(key)];
	if (!e->key || strcmp(e->key, key) || e->expires < ev_now(gw_loop))
		return NULL;
	return e;
}

void
gw_blob_download_notify(const char *payload)
{
	if (payload && !strstr(payload, ":state"))
		return; /* progress */
	for (int i = 0; i < CACHE_SLOTS; i++)
	{
		free(cache[i].key);
		cache[i].key = NULL;
	}
}

static void
cache_put(gw_req *req, const gw_auth *auth, const char *file_id, const char *hex, const char *mime, const char *name)
{
	if (gw_cfg.file_cache_ms <= 0)
		return;
	char *key = cache_key(req, auth, file_id);
	cache_entry *e = &cache[cache_slot(key)];
	free(e->key);
	e->key = strdup(key);
	e->expires = ev_now(gw_loop) + (double)gw_cfg.file_cache_ms / 1000.0;
	snprintf(e->hex, sizeof e->hex, "%s", hex);
	snprintf(e->mime, sizeof e->mime, "%s", mime);
	snprintf(e->name, sizeof e->name, "%s", name);
}

/* --- serving user content ----------------------------------------------------
 * Files are what users uploaded, served on the API's own origin, where a page
 * that runs would run as the pod (its tokens, its API). So (gateway/README.md,
 * "Serving user content"): every answer carries X-Content-Type-Options: nosniff
 * and Content-Security-Policy: default-src 'none'; sandbox (a document rendered
 * anyway gets a unique origin and runs nothing); media a player or an <img>
 * needs (raster images, audio, video, HLS playlists, WebVTT) is inline with its
 * type; everything else is an attachment, and a type a browser would render as
 * a document or run (HTML, XML, SVG, scripts, CSS, PDF, other text) is sent as
 * application/octet-stream. */
static int
type_is(const char *mime, const char *prefix)
{
	return !strncasecmp(mime, prefix, strlen(prefix));
}

static int
inline_type(const char *m)
{
	static const char *const images[] = {"image/png", "image/jpeg", "image/gif", "image/webp",
	                                     "image/avif", "image/bmp", "image/apng", "image/x-icon",
	                                     "image/vnd.microsoft.icon"};
	for (size_t i = 0; i < sizeof images / sizeof *images; i++)
		if (!strcasecmp(m, images[i]))
			return 1;
	return type_is(m, "video/") || type_is(m, "audio/") ||
	       !strcasecmp(m, "application/vnd.apple.mpegurl") ||
	       !strcasecmp(m, "application/x-mpegurl") || !strcasecmp(m, "application/mp4") ||
	       !strcasecmp(m, "application/ogg") || !strcasecmp(m, "text/vtt");
}

/* A type some browser renders as a document, runs, or applies to a page. */
static int
active_type(const char *m)
{
	static const char *const words[] = {"html", "xml", "svg", "script", "pdf", "flash", "css", "xsl"};
	for (size_t i = 0; i < sizeof words / sizeof *words; i++)
		if (strcasestr(m, words[i]))
			return 1;
	return type_is(m, "multipart/") || type_is(m, "message/") ||
	       (type_is(m, "image/") && !inline_type(m)) ||
	       (type_is(m, "text/") && strcasecmp(m, "text/plain") && strcasecmp(m, "text/csv"));
}

/* The served type and the policy headers of a file (appended to h). */
static const char *
content_policy(gw_buf *h, const char *mime, const char *name)
{
	int show = inline_type(mime);
	const char *type = show || !active_type(mime) ? mime : "application/octet-stream";
	gw_buf_puts(h, "Content-Security-Policy: default-src 'none'; sandbox\r\n");
	gw_buf_puts(h, show ? "Content-Disposition: inline" : "Content-Disposition: attachment");
	if (name[0])
	{
		/* RFC 6266: an ASCII fallback, then the UTF-8 name percent-encoded */
		gw_buf_puts(h, "; filename=\"");
		for (const unsigned char *p = (const unsigned char *)name; *p; p++)
			gw_buf_putc(h, *p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\' ? (char)*p : '_');
		gw_buf_puts(h, "\"; filename*=UTF-8''");
		for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		{
			if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			    strchr("!#$&+-.^_`|~", *p))
				gw_buf_putc(h, (char)*p);
			else
				gw_buf_printf(h, "%%%02X", *p);
		}
	}
	gw_buf_puts(h, "\r\n");
	return type;
}

#define MAX_RANGES 64
#define MULTIPART_MAX (8LL << 20)

/* If-Range is a strong comparison with our ETag; a date never matches (no
 * Last-Modified is sent), so the whole file follows. */
static int
if_range_matches(const char *v, const char *hex)
{
	while (*v == ' ')
		v++;
	size_t n = strlen(v);
	while (n && v[n - 1] == ' ')
		n--;
	return n == 66 && v[0] == '"' && v[65] == '"' && !strncmp(v + 1, hex, 64);
}

/* 206 multipart/byteranges (RFC 9110 14.6): each part with its Content-Type and
 * Content-Range, read into memory (at most MULTIPART_MAX bytes). */
static void
send_multipart(gw_req *req, int fd, gw_buf *h, const char *mime, long long size,
               const gw_byte_range *rs, int nr)
{
	unsigned char rnd[10];
	char boundary[32];
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
		for (size_t i = 0; i < sizeof rnd; i++)
			rnd[i] = (unsigned char)(rand() & 0xff);
	for (size_t i = 0; i < sizeof rnd; i++)
		snprintf(boundary + 2 * i, 3, "%02x", rnd[i]);
	gw_buf body;
	gw_buf_init(&body);
	for (int i = 0; i < nr; i++)
	{
		gw_buf_printf(&body,
		              "\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %lld-%lld/%lld\r\n\r\n",
		              boundary, mime, rs[i].start, rs[i].start + rs[i].len - 1, size);
		char *part = malloc((size_t)rs[i].len);
		if (!part)
			abort();
		long long got = 0;
		while (got < rs[i].len)
		{
			ssize_t k = pread(fd, part + got, (size_t)(rs[i].len - got), (off_t)(rs[i].start + got));
			if (k <= 0)
			{
				wk_log(WK_WARN, "blob read of %s: %s", req->path, k < 0 ? strerror(errno) : "short file");
				free(part);
				gw_buf_free(&body);
				gw_respond_simple_error(req, 500, "PGRST000", "The file could not be read");
				return;
			}
			got += k;
		}
		gw_buf_append(&body, part, (size_t)got);
		free(part);
	}
	gw_buf_printf(&body, "\r\n--%s--\r\n", boundary);
	char ct[96];
	snprintf(ct, sizeof ct, "multipart/byteranges; boundary=%s", boundary);
	gw_respond(req, 206, ct, h->data, body.data, body.len);
	gw_buf_free(&body);
}

/* Sends the blob of a looked-up file: 304, 416, 206 (one range with sendfile,
 * several as multipart/byteranges) or 200. */
static void
serve(gw_req *req, const char *hex, const char *mime, const char *name)
{
	char path[4096];
	gw_blob_path(path, sizeof path, gw_cfg.store_dir, hex);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
	{
		wk_log(WK_WARN, "blob %s of file %s: %s", path, req->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		gw_respond_simple_error(req, 404, "PGRST000",
		                        "The file's content is not in this pod's store");
		return;
	}
	long long size = st.st_size;
	gw_buf h;
	gw_buf_init(&h);
	gw_buf_printf(&h,
	              "ETag: \"%s\"\r\nAccept-Ranges: bytes\r\nCache-Control: private, "
	              "max-age=31536000, immutable\r\n",
	              hex);
	mime = content_policy(&h, mime, name);
	const char *inm = gw_req_header(req, "if-none-match");
	if (inm && (strstr(inm, hex) || !strcmp(inm, "*")))
	{
		close(fd);
		gw_respond(req, 304, NULL, h.data, NULL, 0);
		gw_buf_free(&h);
		return;
	}
	const char *range = gw_req_header(req, "range");
	const char *if_range = gw_req_header(req, "if-range");
	if (range && if_range && !if_range_matches(if_range, hex))
		range = NULL; /* the client's copy is another version: send it all */
	gw_byte_range rs[MAX_RANGES];
	int nr = gw_parse_byte_ranges(range, size, rs, MAX_RANGES);
	if (nr < 0)
	{
		close(fd);
		gw_buf_printf(&h, "Content-Range: bytes */%lld\r\n", size);
		gw_error e;
		gw_error_set(&e, 416, "PGRST103", "Requested range not satisfiable", NULL, NULL);
		gw_respond_error(req, &e, h.data);
		gw_buf_free(&h);
		return;
	}
	if (nr > 1)
	{
		long long total = 0;
		for (int i = 0; i < nr; i++)
			total += rs[i].len;
		if (total <= MULTIPART_MAX)
		{
			send_multipart(req, fd, &h, mime, size, rs, nr);
			close(fd);
			gw_buf_free(&h);
			return;
		}
		nr = 0; /* too much to hold in memory: the whole file, as RFC 9110 allows */
	}
	long long start = nr == 1 ? rs[0].start : 0, len = nr == 1 ? rs[0].len : size;
	if (nr == 1)
		gw_buf_printf(&h, "Content-Range: bytes %lld-%lld/%lld\r\n", start, start + len - 1, size);
	gw_respond_file(req, nr == 1 ? 206 : 200, mime, h.data, fd, (off_t)start, (off_t)len);
	gw_buf_free(&h);
}

static void
lookup_done(gw_pg_job *job)
{
	dl *d = job->data;
	gw_req *req = d->req;
	gw_error e;
	if (gw_error_from_job(job, d->auth.anonymous, &e))
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	PGresult *r = job->results[1];
	if (!r || PQntuples(r) != 1)
	{
		/* Anonymous callers see only public files (those of published videos, the
		 * WebSeeds): any other file may exist for a signed-in caller, so they are
		 * asked to authenticate, as before files could be public. */
		if (d->auth.anonymous)
		{
			gw_error_set(&e, 401, "42501", "This file is not public: a token may give access to it", NULL,
			             NULL);
			gw_respond_error(req, &e, "WWW-Authenticate: Bearer\r\n");
			return;
		}
		gw_respond_simple_error(req, 404, "PGRST116", "File not found");
		return;
	}
	const char *hex = PQgetvalue(r, 0, 0);
	if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64)
	{
		gw_respond_simple_error(req, 500, "PGRST000", "The file record has no valid sha256");
		return;
	}
	char mime[256], name[1024];
	header_safe(mime, sizeof mime,
	            PQgetisnull(r, 0, 2) ? "application/octet-stream" : PQgetvalue(r, 0, 2));
	/* content_policy() quotes and encodes the name for the header */
	snprintf(name, sizeof name, "%s", PQgetisnull(r, 0, 3) ? "" : PQgetvalue(r, 0, 3));
	cache_put(req, &d->auth, d->file_id, hex, mime, name);
	serve(req, hex, mime, name);
}

void
gw_blob_download_handle(gw_req *req, const char *file_id)
{
	dl *d = calloc(1, sizeof *d);
	if (!d)
		abort();
	d->req = req;
	gw_buf_init(&d->settings);
	gw_params_init(&d->sp);
	gw_params_init(&d->qp);
	req->handler = d;
	req->on_done = dl_free;
	gw_error e;
	char www[256];
	if (gw_auth_request_ex(req, &d->auth, &e, www, sizeof www, 1))
	{
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	const cache_entry *hit = cache_get(req, &d->auth, file_id);
	if (hit)
	{
		serve(req, hit->hex, hit->mime, hit->name);
		return;
	}
	d->file_id = file_id;
	/* a malformed id is PostgreSQL's 22P02, answered as 400 like any filter */
	gw_params_add(&d->qp, file_id);
	gw_auth_settings_sql(req, &d->auth, &d->settings, &d->sp);
	d->job.nstmts = 2;
	d->job.stmts[0].sql = d->settings.data;
	d->job.stmts[0].params = &d->sp;
	/* the database decides (own, granted, a watchable video's file); api.files only
	 * lists the caller's own and granted files */
	d->job.stmts[1].sql = "SELECT sha256, size, mime_type, filename_visible FROM pod.file_download($1::uuid)";
	d->job.stmts[1].params = &d->qp;
	d->job.read_only = 1;
	d->job.done = lookup_done;
	d->job.data = d;
	gw_pool_submit(&d->job);
}
