/* The error module's server half (see error.h): a pool job's outcome as an error,
 * and sending an answer (gw_error_answer's, or any of response.h's). */
#include "error.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "pool.h"

int
gw_error_from_job(const gw_pg_job *job, int anonymous, gw_error *e)
{
	if (job->failed)
	{
		if (job->timed_out)
			gw_error_set(e, 504, "PGRST003", job->failure, NULL, NULL);
		else
			gw_error_set(e, 503, "PGRST001", "Database client error. Retrying the connection.",
			             job->failure, NULL);
		return 1;
	}
	if (job->error)
	{
		gw_error_from_pg(PQresultErrorField(job->error, PG_DIAG_SQLSTATE),
		                 PQresultErrorField(job->error, PG_DIAG_MESSAGE_PRIMARY),
		                 PQresultErrorField(job->error, PG_DIAG_MESSAGE_DETAIL),
		                 PQresultErrorField(job->error, PG_DIAG_MESSAGE_HINT), anonymous, e);
		return 1;
	}
	return 0;
}

void
gw_respond_answer(gw_req *req, const gw_answer *a)
{
	gw_respond(req, a->status, a->content_type, a->headers.len ? a->headers.data : NULL, a->body,
	           a->body_len);
}

void
gw_respond_error(gw_req *req, const gw_error *e, const char *extra)
{
	gw_answer a;
	gw_answer_init(&a);
	gw_error_answer(e, extra, &a);
	gw_respond_answer(req, &a);
	gw_answer_free(&a);
}

void
gw_respond_simple_error(gw_req *req, int status, const char *code, const char *message)
{
	gw_error e;
	gw_error_set(&e, status, code, message, NULL, NULL);
	gw_respond_error(req, &e, NULL);
}
