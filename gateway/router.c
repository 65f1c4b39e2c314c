#define _GNU_SOURCE /* strcasestr */
/* Request routing: which handler owns a path. The head-time hook lets uploads
 * stream their body and refuses oversize bodies before they are read. */
#include <http_parser.h>
#include <string.h>

#include "router.h"

#include "error.h"
#include "http.h"
#include "listener.h"
#include "metrics.h"
#include "pool.h"
#include "rest.h"
#include "sse.h"
#include "blob_download.h"
#include "torrent_file.h"
#include "tus.h"
#include "upload.h"
#include "video_events.h"

static int
is_upload(const gw_req *req)
{
	return req->method == HTTP_POST && !strcmp(req->path, "/upload");
}

static void
route_head(gw_req *req)
{
	/* the request sees one schema from here to its answer, whatever reloads */
	req->snapshot = gw_snapshot_ref(gw_snapshot_current());
	if (is_upload(req))
	{
		gw_upload_head(req);
		return;
	}
	if (gw_tus_match(req))
	{
		gw_tus_head(req);
		return;
	}
	if (req->content_length > gw_cfg.body_max)
		gw_respond_simple_error(req, 413, "PGRST413", "Payload Too Large");
}

/* "/prefix<name>" with a non-empty name and no further slash. */
static const char *
segment_after(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(path, prefix, n))
		return NULL;
	const char *name = path + n;
	if (!*name || strchr(name, '/'))
		return NULL;
	return name;
}

static void
health(gw_req *req)
{
	size_t n; /* ready as main.c means it: schema cache, JWT secret, a pool connection */
	gw_snapshot *snap = gw_snapshot_current();
	int ok = gw_snapshot_schema(snap) && gw_snapshot_secret(snap, &n) && gw_pool_up();
	const char *body = ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}";
	gw_respond(req, ok ? 200 : 503, "application/json; charset=utf-8", NULL, body, strlen(body));
}

static void
metrics(gw_req *req)
{
	gw_buf b;
	gw_buf_init(&b);
	gw_metrics_render(&b);
	gw_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
	gw_buf_free(&b);
}

/* A browser's CORS preflight, answered as PostgREST does by default. */
static void
cors_preflight(gw_req *req)
{
	gw_buf h;
	gw_buf_init(&h);
	const char *asked = gw_req_header(req, "access-control-request-headers");
	gw_buf_puts(&h, "Access-Control-Allow-Methods: GET, POST, PATCH, PUT, DELETE, OPTIONS, HEAD\r\n"
	                "Access-Control-Max-Age: 86400\r\n");
	if (asked && !strpbrk(asked, "\r\n"))
		gw_buf_printf(&h, "Access-Control-Allow-Headers: %s\r\n", asked);
	else
		gw_buf_puts(
		    &h,
		    "Access-Control-Allow-Headers: Authorization, Content-Type, Accept, Prefer, Range\r\n");
	gw_respond(req, 200, NULL, h.data, NULL, 0);
	gw_buf_free(&h);
}

/* Does the Accept header ask for ActivityStreams JSON (what a peer dereferencing a
 * keyId as Mastodon does sends)? */
static int
wants_activity_json(gw_req *req)
{
	const char *a = gw_req_header(req, "accept");
	return a && (strcasestr(a, "application/activity+json") || strcasestr(a, "application/ld+json"));
}

/* GET / for ActivityStreams JSON: the pod's actor document (api.actor(), which names
 * its own Content-Type), the document its keyId "<pod>#main-key" dereferences to. */
static void
actor(gw_req *req)
{
	for (int i = 0; i < req->nheaders; i++)
		if (!strcmp(req->headers[i].name, "accept"))
			req->headers[i].value = gw_arena_strdup(&req->arena, "application/json");
	gw_rest_handle(req, "actor", 1);
}

static void
route(gw_req *req)
{
	const char *p = req->path, *name;
	int get = req->method == HTTP_GET || req->method == HTTP_HEAD;
	if (is_upload(req))
	{
		gw_upload_finish(req);
		return;
	}
	if (req->method == HTTP_OPTIONS && gw_req_header(req, "access-control-request-method"))
	{
		cors_preflight(req);
		return;
	}
	if (!strcmp(p, "/") && get && wants_activity_json(req))
	{
		actor(req);
		return;
	}
	if (gw_tus_match(req))
	{
		gw_tus_finish(req);
		return;
	}
	if (!strcmp(p, "/") && get)
	{
		gw_openapi_handle(req);
		return;
	}
	if (!strcmp(p, "/health") && get)
	{
		health(req);
		return;
	}
	if (!strcmp(p, "/metrics") && get)
	{
		metrics(req);
		return;
	}
	if ((name = segment_after(p, "/rpc/")))
	{
		gw_rest_handle(req, name, 1);
		return;
	}
	if ((name = segment_after(p, "/files/")) && get)
	{
		/* /files/<id>.<ext>: HLS loaders (ffmpeg's) want an extension on segment URLs */
		const char *dot = strchr(name, '.');
		if (dot && dot - name == 36 && strlen(dot) <= 9)
			name = gw_arena_strndup(&req->arena, name, 36);
		gw_blob_download_handle(req, name);
		return;
	}
	if ((name = segment_after(p, "/torrents/")) && get)
	{
		gw_torrent_handle(req, name);
		return;
	}
	if (!strncmp(p, "/rooms/", 7) && get)
	{
		const char *room = p + 7, *slash = strchr(room, '/');
		if (slash && !strcmp(slash, "/events"))
		{
			char id[40];
			size_t n = (size_t)(slash - room);
			if (n < sizeof id)
			{
				memcpy(id, room, n);
				id[n] = '\0';
				gw_sse_handle(req, gw_arena_strdup(&req->arena, id));
				return;
			}
		}
	}
	if (!strncmp(p, "/videos/", 8) && get)
	{
		const char *video = p + 8, *slash = strchr(video, '/');
		if (slash && !strcmp(slash, "/events") && slash - video == 36)
		{
			gw_video_events_handle(req, gw_arena_strndup(&req->arena, video, 36));
			return;
		}
	}
	if ((name = segment_after(p, "/")) && strcmp(name, "rpc") && strcmp(name, "upload"))
	{
		gw_rest_handle(req, name, 0);
		return;
	}
	gw_respond_simple_error(req, 404, "PGRST125", "Invalid path specified in request URL");
}

static void
route_end(gw_req *req)
{
	gw_snapshot_unref(req->snapshot);
	req->snapshot = NULL;
}

const gw_http_handlers gw_router = {
    .on_head = route_head,
    .on_request = route,
    .on_error = gw_respond_simple_error,
    .on_end = route_end,
};
