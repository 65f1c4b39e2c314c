/* The error module's server half (see error.h): a pool job's outcome as an error,
 * and the JSON answer. */
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
gw_respond_error(gw_req *req, const gw_error *e, const char *extra)
{
	gw_buf b;
	gw_buf_init(&b);
	gw_buf_puts(&b, "{\"code\":");
	gw_buf_json_str(&b, e->code);
	gw_buf_puts(&b, ",\"details\":");
	if (e->details_json && e->details[0])
		gw_buf_puts(&b, e->details);
	else
		gw_buf_json_str(&b, e->details[0] ? e->details : NULL);
	gw_buf_puts(&b, ",\"hint\":");
	gw_buf_json_str(&b, e->hint[0] ? e->hint : NULL);
	gw_buf_puts(&b, ",\"message\":");
	gw_buf_json_str(&b, e->message);
	gw_buf_putc(&b, '}');
	/* A refusal that says when to come back (SQL: ERRCODE 'PT429' or 'PT503' with
	 * DETAIL 'Retry-After: <seconds>', e.g. chat slow mode) gets the header too. */
	char retry[96];
	const char *d = e->details;
	if ((e->status == 429 || e->status == 503) && !e->details_json &&
	    !strncmp(d, "Retry-After: ", 13) && d[13] && strspn(d + 13, "0123456789") == strlen(d + 13) &&
	    strlen(d + 13) <= 9 && (!extra || strlen(extra) + 30 < sizeof retry))
	{
		snprintf(retry, sizeof retry, "%sRetry-After: %s\r\n", extra ? extra : "", d + 13);
		extra = retry;
	}
	gw_respond(req, e->status, "application/json; charset=utf-8", extra, b.data, b.len);
	gw_buf_free(&b);
}

void
gw_respond_simple_error(gw_req *req, int status, const char *code, const char *message)
{
	gw_error e;
	gw_error_set(&e, status, code, message, NULL, NULL);
	gw_respond_error(req, &e, NULL);
}
