/* Unit tests of gw_rest_result_from_pg (gateway/postgrest/response_pg.c): result
 * rows built with libpq's own PQmakeEmptyPGresult / PQsetResultAttrs / PQsetvalue,
 * as the statement of sql_build.h returns them, read into a gw_rest_result and
 * answered by the response functions; the whole answer is compared. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_request.h"
#include "request.h"
#include "response.h"
#include "tap.h"

static PGresult *
statement_result(int ncols, const char *const *values)
{
	static const char *names[] = {"total_result_set", "page_total",      "body",          "location",
	                              "response_headers", "response_status", "pgrst_inserted"};
	PGresAttDesc att[7];
	memset(att, 0, sizeof att);
	for (int i = 0; i < ncols; i++)
	{
		att[i].name = (char *)names[i];
		att[i].typid = 25; /* text */
		att[i].typlen = -1;
		att[i].atttypmod = -1;
	}
	PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	if (!r || !PQsetResultAttrs(r, ncols, att))
		abort();
	for (int i = 0; i < ncols; i++)
		if (!PQsetvalue(r, 0, i, (char *)values[i], values[i] ? (int)strlen(values[i]) : -1))
			abort();
	return r;
}

/* The answer as the transport would write it, but the status line and Content-Length. */
static char *
render(const gw_answer *a)
{
	gw_buf b;
	gw_buf_init(&b);
	gw_buf_printf(&b, "%d\n", a->status);
	if (a->content_type)
		gw_buf_printf(&b, "Content-Type: %s\n", a->content_type);
	for (size_t i = 0; i < a->headers.len; i++)
		if (a->headers.data[i] != '\r')
			gw_buf_putc(&b, a->headers.data[i]);
	if (a->body_len)
	{
		gw_buf_putc(&b, '\n');
		gw_buf_append(&b, a->body, a->body_len);
	}
	char *s = strdup(b.data ? b.data : "");
	gw_buf_free(&b);
	return s;
}

/* head: request line and headers; body may be NULL. Returns the rendered answer. */
static char *
answer(const char *head, const char *body, const PGresult *error, const PGresult *stmt,
       const PGresult *count)
{
	gw_schema *s = gw_schema_new();
	const char *rel[] = {"rel", "items", "r", "28", ""};
	const char *col[] = {"col", "items", "id", "integer", "0", "1"};
	const char *pk[] = {"pk", "items", "id"};
	gw_schema_add_row(s, 5, rel);
	gw_schema_add_row(s, 6, col);
	gw_schema_add_row(s, 3, pk);
	char bytes[2048];
	snprintf(bytes, sizeof bytes, "%s\r\nContent-Length: %zu\r\n\r\n%s", head, body ? strlen(body) : 0,
	         body ? body : "");
	gw_arena a;
	gw_arena_init(&a);
	raw_request raw;
	memset(&raw, 0, sizeof raw);
	raw_request_parse(&raw, bytes, strlen(bytes));
	gw_rest_input in;
	gw_rest_request rq;
	gw_plan plan;
	gw_error e;
	gw_plan_init(&plan);
	char *out;
	if (raw_request_input(&raw, &in) || gw_rest_request_parse(&a, s, &in, &rq, &e) ||
	    gw_build(&a, s, &rq.shape, &plan, &e))
		out = strdup("(the request does not read)");
	else
	{
		gw_rest_result r;
		gw_rest_result_from_pg(error, stmt, count, &r);
		gw_response_in rin = {.rq = &rq, .plan = &plan, .schema = s, .anonymous = 1};
		gw_answer ans;
		gw_answer_init(&ans);
		gw_response(&a, &rin, &r, &ans);
		out = render(&ans);
		gw_answer_free(&ans);
	}
	gw_plan_free(&plan);
	raw_request_free(&raw);
	gw_arena_free(&a);
	gw_schema_unref(s);
	return out;
}

TAP_TEST(response_pg_read)
{
	const char *v[] = {"3", "2", "[{\"id\":1},{\"id\":2}]", NULL, "[{\"X-A\":\"1\"}]", NULL};
	PGresult *r = statement_result(6, v);
	char *got = answer("GET /items?select=id HTTP/1.1\r\nPrefer: count=exact", NULL, NULL, r, NULL);
	is_str(got,
	       "206\nContent-Type: application/json; charset=utf-8\nPreference-Applied: count=exact\n"
	       "Content-Location: /items?select=id\nContent-Range: 0-1/3\nX-A: 1\n\n"
	       "[{\"id\":1},{\"id\":2}]",
	       "a read: the row's total, page total, body and response.headers");
	free(got);
	PQclear(r);
}

TAP_TEST(response_pg_upsert)
{
	const char *v[] = {NULL, "1", "", "[\"5\"]", NULL, NULL, "0"};
	PGresult *r = statement_result(7, v);
	char *got = answer("POST /items HTTP/1.1\r\nPrefer: resolution=merge-duplicates, return=headers-only\r\n"
	                   "Content-Type: application/json",
	                   "{\"id\":5}", NULL, r, NULL);
	is_str(got,
	       "200\nPreference-Applied: resolution=merge-duplicates, return=headers-only\n"
	       "Content-Range: */*\nLocation: /items?id=eq.5\n",
	       "an upsert that only updated: pgrst_inserted read by name, the location column");
	free(got);
	PQclear(r);
}

TAP_TEST(response_pg_planned)
{
	const char *v[] = {NULL, "1", "[{\"id\":1}]", NULL, NULL, NULL};
	PGresult *r = statement_result(6, v);
	PGresAttDesc att = {.name = "QUERY PLAN", .typid = 114, .typlen = -1, .atttypmod = -1};
	PGresult *c = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	const char *plan = "[{\"Plan\":{\"Plan Rows\":40}}]";
	if (!c || !PQsetResultAttrs(c, 1, &att) || !PQsetvalue(c, 0, 0, (char *)plan, (int)strlen(plan)))
		abort();
	char *got = answer("GET /items HTTP/1.1\r\nPrefer: count=planned", NULL, NULL, r, c);
	contains(got, "\nContent-Range: 0-0/40\n", "count=planned: the EXPLAIN's rows are the total");
	ok(!strncmp(got, "206\n", 4), "... a part: 206");
	free(got);
	PQclear(c);
	PQclear(r);
}

TAP_TEST(response_pg_odd_results)
{
	PGresult *empty = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	char *got = answer("GET /items HTTP/1.1", NULL, NULL, empty, NULL);
	contains(got, "500\n", "a statement without rows: 500");
	contains(got, "PGRST000", "... PGRST000");
	free(got);
	got = answer("GET /items HTTP/1.1", NULL, NULL, NULL, NULL);
	contains(got, "PGRST000", "no statement result at all: PGRST000");
	free(got);
	const char *v[] = {NULL, "1"};
	PGresult *narrow = statement_result(2, v);
	got = answer("GET /items HTTP/1.1", NULL, NULL, narrow, NULL);
	contains(got, "PGRST000", "a row without the body column: PGRST000, nothing read past it");
	free(got);
	PGresult *err = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);
	got = answer("GET /items HTTP/1.1", NULL, err, NULL, NULL);
	contains(got, "500\n", "an error without fields: 500");
	contains(got, "\"XX000\"", "... XX000");
	free(got);
	PQclear(err);
	PQclear(narrow);
	PQclear(empty);
}
