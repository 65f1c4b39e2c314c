/* One response function per action: the answer to a PostgREST request (status,
 * headers, body) from the request as the dialect read it, the schema snapshot it
 * holds, and what its transaction returned. Pure: no I/O, no globals, no libpq
 * (gw_rest_result_from_pg reads the result's values out of libpq; the unit tests
 * and the fuzzer write them). The handler (handlers/rest.c) sends the statement,
 * calls gw_response (or the function of its action) and writes the answer. */
#ifndef GW_RESPONSE_H
#define GW_RESPONSE_H
#include <stddef.h>

#include "answer.h"
#include "arena.h"
#include "error.h"
#include "request.h"
#include "schema.h"
#include "sql_build.h"

/* What came back for a request's transaction. */
typedef struct gw_rest_result
{
	/* no answer from the database: the connection failed (503 PGRST001), or the
	 * wait for one timed out (504 PGRST003); failure says why */
	int failed;
	int timed_out;
	const char *failure;
	/* an error from PostgreSQL (any field may be NULL) */
	int error;
	const char *sqlstate;
	const char *message;    /* the primary message */
	const char *error_text; /* the whole error text, used when message is NULL */
	const char *detail, *hint;
	/* the statement's result (sql_build.h): one row */
	int nrows;
	const char *total;      /* total_result_set; NULL for SQL NULL */
	const char *page_total; /* page_total ("" for SQL NULL) */
	const char *body;       /* body_len bytes */
	size_t body_len;
	const char *location;         /* NULL: none */
	const char *response_headers; /* the response.headers setting; NULL: none */
	const char *response_status;  /* the response.status setting; NULL: none */
	const char *inserted;         /* pgrst_inserted of an upsert; NULL: no such column */
	const char *explain;          /* count=planned: the EXPLAIN (FORMAT JSON); NULL: none */
} gw_rest_result;

/* Reads a gw_rest_result out of libpq's results (response_pg.c): error when the
 * transaction failed, else stmt (the statement's result) and count (the
 * count=planned EXPLAIN's, NULL when none). Every pointer in out points into them. */
struct pg_result;
void gw_rest_result_from_pg(const struct pg_result *error, const struct pg_result *stmt,
                            const struct pg_result *count, gw_rest_result *out);

/* The request the answer is for. */
typedef struct gw_response_in
{
	const gw_rest_request *rq; /* as gw_rest_request_parse read it */
	const gw_plan *plan;       /* the statement gw_build made of it */
	const gw_schema *schema;   /* the snapshot's schema, the one the statement was built on */
	int anonymous;             /* no token: a privilege error is 401, not 403 */
} gw_response_in;

/* Each fills out (initialised by the caller: gw_answer_init). The body may point
 * into r, allocations into a (which must outlive out). A failure, an error from
 * PostgreSQL or a count check answers PostgREST's error. */
/* GET/HEAD of a relation: Content-Location, Content-Range (206 for a part, 416
 * past the end), the singular object's 406, the media type asked for. */
void gw_response_read(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out);
/* POST without resolution: 201, Content-Range "star slash count", Location (return=headers-only),
 * the body only with return=representation. */
void gw_response_create(gw_arena *a, const gw_response_in *in, const gw_rest_result *r,
                        gw_answer *out);
/* PATCH: 200 with representation, else 204; Content-Range 0-(n-1)/count. */
void gw_response_update(gw_arena *a, const gw_response_in *in, const gw_rest_result *r,
                        gw_answer *out);
/* PUT, and POST with Prefer: resolution: 201 when a row was new, else 200 (PUT
 * minimal: 204). */
void gw_response_upsert(gw_arena *a, const gw_response_in *in, const gw_rest_result *r,
                        gw_answer *out);
/* DELETE: 200 with representation, else 204. */
void gw_response_delete(gw_arena *a, const gw_response_in *in, const gw_rest_result *r,
                        gw_answer *out);
/* /rpc/<function> by GET or POST: a scalar, a set or nothing (204). */
void gw_response_rpc(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out);
/* The function of the request's action. */
void gw_response(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out);

/* GET /: the OpenAPI document of the schema (503 PGRST002 without one). */
void gw_response_openapi(const gw_schema *schema, gw_answer *out);

#endif
