/* The PostgREST handler (see rest.h): glue. It owns one rest_call per request (the
 * request as the dialect read it, the plan, the settings statement, the pool job),
 * sends the statements through the pool, and answers with the response function
 * of the request's action (postgrest/response.h), from the schema snapshot the
 * request holds (req->snapshot) and the values the statements returned. */
#include "worker.h"
#include "rest.h"
#include "snapshot.h"
#include "sql_build.h"

#include <http_parser.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "pool.h"
#include "request.h"
#include "response.h"

typedef struct rest_call
{
	gw_req *req;
	gw_auth auth;
	gw_plan plan;
	gw_buf settings;
	gw_params settings_params;
	gw_pg_job job;
	gw_rest_request rq; /* the request as the dialect read it (request.h) */
} rest_call;

static gw_spare spare_calls; /* finished calls, reused */

static void
call_free(gw_req *req, int ok)
{
	(void)ok;
	rest_call *rc = req->handler;
	if (!rc)
		return;
	gw_plan_free(&rc->plan);
	gw_buf_free(&rc->settings);
	gw_params_free(&rc->settings_params);
	gw_pool_job_clear(&rc->job);
	gw_spare_free(&spare_calls, rc);
	req->handler = NULL;
}

/* The pool job's outcome as the response functions read it (response.h). */
static void
job_result(const rest_call *rc, const gw_pg_job *job, gw_rest_result *out)
{
	if (job->failed)
	{
		memset(out, 0, sizeof *out);
		out->failed = 1;
		out->timed_out = job->timed_out;
		out->failure = job->failure;
		return;
	}
	gw_rest_result_from_pg(job->error, job->results[1],
	                       rc->plan.count_sql.len ? job->results[2] : NULL, out);
}

/* Sends an answer and logs its warnings (a 5xx from PostgreSQL names the request,
 * its path redacted: a JWT pasted into a path stays out of the log). */
static void
send_answer(gw_req *req, const gw_answer *a)
{
	for (size_t at = 0; a->warnings.len && at < a->warnings.len;)
	{
		const char *line = a->warnings.data + at;
		if (a->warn_target)
		{
			gw_buf path;
			gw_buf_init(&path);
			gw_log_redacted_target(&path, req->path, "");
			wk_log(WK_WARN, "%s %s: %s", req->method_name, path.data, line);
			gw_buf_free(&path);
		}
		else
			wk_log(WK_WARN, "%s", line);
		at += strlen(line) + 1;
	}
	gw_respond_answer(req, a);
}

static void
job_done(gw_pg_job *job)
{
	rest_call *rc = job->data;
	gw_req *req = rc->req;
	if (!gw_req_alive(req))
	{
		gw_respond(req, 499, NULL, NULL, NULL, 0); /* counted, nobody listens */
		return;
	}
	gw_rest_result res;
	job_result(rc, job, &res);
	gw_response_in in = {.rq = &rc->rq,
	                     .plan = &rc->plan,
	                     .schema = gw_snapshot_schema(req->snapshot),
	                     .anonymous = rc->auth.anonymous};
	gw_answer a;
	gw_answer_init(&a);
	gw_response(&req->arena, &in, &res, &a);
	send_answer(req, &a);
	gw_answer_free(&a);
}

void
gw_openapi_handle(gw_req *req)
{
	gw_answer a;
	gw_answer_init(&a);
	gw_response_openapi(gw_snapshot_schema(req->snapshot), &a);
	gw_respond_answer(req, &a);
	gw_answer_free(&a);
}

void
gw_rest_handle(gw_req *req, const char *name, int is_rpc)
{
	gw_schema *schema = gw_snapshot_schema(req->snapshot);
	if (!schema)
	{
		gw_respond_simple_error(req, 503, "PGRST002",
		                        "Could not query the database for the schema cache. Retrying.");
		return;
	}
	rest_call *rc = gw_spare_calloc(&spare_calls, sizeof *rc);
	if (!rc)
		abort();
	rc->req = req;
	gw_plan_init(&rc->plan);
	gw_buf_init(&rc->settings);
	gw_params_init(&rc->settings_params);
	req->handler = rc;
	req->on_done = call_free;

	gw_error e;
	char www[256];
	if (gw_auth_request(req, &rc->auth, &e, www, sizeof www))
	{
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	const char **prefer = gw_arena_alloc(&req->arena, sizeof *prefer * (size_t)(req->nheaders + 1));
	int nprefer = 0;
	for (int i = 0; i < req->nheaders; i++)
		if (!strcmp(req->headers[i].name, "prefer"))
			prefer[nprefer++] = req->headers[i].value;
	gw_rest_input in = {.method = req->method,
	                    .method_name = req->method_name,
	                    .is_rpc = is_rpc,
	                    .target = name,
	                    .query = req->query,
	                    .query_len = strlen(req->query),
	                    .accept = gw_req_header(req, "accept"),
	                    .range = gw_req_header(req, "range"),
	                    .content_type = gw_req_header(req, "content-type"),
	                    .accept_profile = gw_req_header(req, "accept-profile"),
	                    .content_profile = gw_req_header(req, "content-profile"),
	                    .prefer = prefer,
	                    .nprefer = nprefer,
	                    .body = req->body.data,
	                    .body_len = req->body.len,
	                    .tx_override = gw_cfg.tx_override,
	                    .tx_rollback = gw_cfg.tx_rollback,
	                    .aggregates = gw_cfg.aggregates};
	if (gw_rest_request_parse(&req->arena, schema, &in, &rc->rq, &e))
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	if (rc->rq.allow)
	{
		gw_respond(req, 200, NULL, rc->rq.allow, NULL, 0);
		return;
	}
	gw_request_shape *s = &rc->rq.shape;
	int failed = gw_build(&req->arena, schema, s, &rc->plan, &e);
	if (failed)
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	gw_auth_settings_sql(req, &rc->auth, &rc->settings, &rc->settings_params);
	if (rc->rq.timezone)
		gw_buf_printf(&rc->settings, ", pg_catalog.set_config('timezone', $%d, true)",
		              gw_params_add(&rc->settings_params, rc->rq.timezone));
	rc->job.nstmts = 2;
	rc->job.stmts[0].sql = rc->settings.data;
	rc->job.stmts[0].params = &rc->settings_params;
	rc->job.stmts[1].sql = rc->plan.sql.data;
	rc->job.stmts[1].params = &rc->plan.params;
	if (rc->plan.count_sql.len)
	{
		rc->job.nstmts = 3;
		rc->job.stmts[2].sql = rc->plan.count_sql.data;
		rc->job.stmts[2].params = &rc->plan.count_params;
	}
	rc->job.read_only = rc->plan.read_only;
	rc->job.rollback = rc->rq.tx_rollback;
	rc->job.done = job_done;
	rc->job.data = rc;
	gw_pool_submit(&rc->job);
}
