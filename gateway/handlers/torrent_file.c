/* .torrent downloads (see torrent_file.h): the name must be 40 hexadecimal digits
 * and ".torrent"; one read-only transaction reads api.torrents as the caller; the
 * bytea comes back as hex text and is decoded here. */
#include "torrent_file.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "pool.h"
#include "query_parse.h"

typedef struct tf
{
	gw_req *req;
	gw_auth auth;
	gw_buf settings;
	gw_params sp, qp;
	gw_pg_job job;
} tf;

static void
tf_free(gw_req *req, int ok)
{
	(void)ok;
	tf *t = req->handler;
	if (!t)
		return;
	gw_pool_job_clear(&t->job);
	gw_buf_free(&t->settings);
	gw_params_free(&t->sp);
	gw_params_free(&t->qp);
	free(t);
	req->handler = NULL;
}

static void
lookup_done(gw_pg_job *job)
{
	tf *t = job->data;
	gw_req *req = t->req;
	gw_error e;
	if (gw_error_from_job(job, t->auth.anonymous, &e))
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	PGresult *r = job->results[1];
	if (!r || PQntuples(r) != 1)
	{
		gw_respond_simple_error(req, 404, "PGRST116", "Torrent not found");
		return;
	}
	const char *hex = PQgetvalue(r, 0, 0);
	size_t n = strlen(hex);
	if (n < 2 || hex[0] != '\\' || hex[1] != 'x' || n % 2)
	{
		gw_respond_simple_error(req, 500, "PGRST000", "The stored torrent is not readable");
		return;
	}
	size_t len = (n - 2) / 2;
	char *body = malloc(len ? len : 1);
	if (!body)
		abort();
	for (size_t i = 0; i < len; i++)
	{
		int hi = wk_hex_digit(hex[2 + 2 * i]), lo = wk_hex_digit(hex[3 + 2 * i]);
		if (hi < 0 || lo < 0)
		{
			free(body);
			gw_respond_simple_error(req, 500, "PGRST000", "The stored torrent is not readable");
			return;
		}
		body[i] = (char)(hi << 4 | lo);
	}
	gw_respond(req, 200, "application/x-bittorrent", "Cache-Control: public, max-age=300\r\n", body,
	           len);
	free(body);
}

void
gw_torrent_handle(gw_req *req, const char *name)
{
	tf *t = calloc(1, sizeof *t);
	if (!t)
		abort();
	t->req = req;
	gw_buf_init(&t->settings);
	gw_params_init(&t->sp);
	gw_params_init(&t->qp);
	req->handler = t;
	req->on_done = tf_free;
	if (strlen(name) != 48 || strspn(name, "0123456789abcdef") != 40 || strcmp(name + 40, ".torrent"))
	{
		gw_respond_simple_error(req, 404, "PGRST116",
		                        "Torrent not found (the name is <info hash in lower-case hex>.torrent)");
		return;
	}
	gw_error e;
	char www[256];
	if (gw_auth_request_ex(req, &t->auth, &e, www, sizeof www, 1))
	{
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	char *hash = gw_arena_strdup(&req->arena, name);
	hash[40] = '\0';
	gw_params_add(&t->qp, hash);
	gw_auth_settings_sql(req, &t->auth, &t->settings, &t->sp);
	t->job.nstmts = 2;
	t->job.stmts[0].sql = t->settings.data;
	t->job.stmts[0].params = &t->sp;
	t->job.stmts[1].sql = "SELECT torrent FROM api.torrents WHERE info_hash = $1";
	t->job.stmts[1].params = &t->qp;
	t->job.read_only = 1;
	t->job.done = lookup_done;
	t->job.data = t;
	gw_pool_submit(&t->job);
}
