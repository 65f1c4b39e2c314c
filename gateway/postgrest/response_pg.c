/* What a request's statements returned, read out of libpq's results into the
 * response functions' gw_rest_result (see response.h): the one place that knows
 * the statement's columns by position (sql_build.h) and pgrst_inserted by name. */
#include <libpq-fe.h>
#include <string.h>

#include "response.h"

void
gw_rest_result_from_pg(const struct pg_result *error, const struct pg_result *stmt,
                       const struct pg_result *count, gw_rest_result *out)
{
	memset(out, 0, sizeof *out);
	if (error)
	{
		out->error = 1;
		out->sqlstate = PQresultErrorField(error, PG_DIAG_SQLSTATE);
		out->message = PQresultErrorField(error, PG_DIAG_MESSAGE_PRIMARY);
		out->error_text = PQresultErrorMessage(error);
		out->detail = PQresultErrorField(error, PG_DIAG_MESSAGE_DETAIL);
		out->hint = PQresultErrorField(error, PG_DIAG_MESSAGE_HINT);
		return;
	}
	out->nrows = stmt ? PQntuples(stmt) : 0;
	if (out->nrows != 1 || PQnfields(stmt) < 3)
	{
		out->nrows = out->nrows == 1 ? 0 : out->nrows; /* not the statement's row */
		return;
	}
	int nf = PQnfields(stmt);
	out->total = PQgetisnull(stmt, 0, 0) ? NULL : PQgetvalue(stmt, 0, 0);
	out->page_total = PQgetvalue(stmt, 0, 1);
	out->body = PQgetvalue(stmt, 0, 2);
	out->body_len = (size_t)PQgetlength(stmt, 0, 2);
	if (nf > 3 && !PQgetisnull(stmt, 0, 3))
		out->location = PQgetvalue(stmt, 0, 3);
	if (nf > 5)
	{
		out->response_headers = PQgetisnull(stmt, 0, 4) ? NULL : PQgetvalue(stmt, 0, 4);
		out->response_status = PQgetisnull(stmt, 0, 5) ? NULL : PQgetvalue(stmt, 0, 5);
	}
	int inserted = PQfnumber(stmt, "pgrst_inserted");
	if (inserted >= 0)
		out->inserted = PQgetvalue(stmt, 0, inserted);
	if (count && PQntuples(count) == 1 && PQnfields(count) >= 1)
		out->explain = PQgetvalue(count, 0, 0);
}
