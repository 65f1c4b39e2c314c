/* PostgREST requests as SQL: a parsed query (query_parse.h) plus the schema cache
 * become one statement whose every value is a bound parameter and every
 * identifier is quoted. The statement always returns one row:
 * (total text, page_total bigint, body text, location text, response_headers
 * text, response_status text). Pure. */
#ifndef GW_SQL_BUILD_H
#define GW_SQL_BUILD_H
#include "buf.h"
#include "error.h"
#include "query_parse.h"
#include "schema.h"

enum
{
	GW_OUT_JSON,
	GW_OUT_SINGLE,
	GW_OUT_CSV,
	GW_OUT_NONE
};
enum
{
	GW_COUNT_NONE,
	GW_COUNT_EXACT,
	GW_COUNT_PLANNED,
	GW_COUNT_ESTIMATED
};
enum
{
	GW_RESOLUTION_NONE,
	GW_RESOLUTION_MERGE,
	GW_RESOLUTION_IGNORE
};
enum
{
	GW_ACTION_READ,
	GW_ACTION_INSERT,
	GW_ACTION_UPDATE,
	GW_ACTION_DELETE,
	GW_ACTION_UPSERT_PUT,
	GW_ACTION_RPC
};

typedef struct gw_request_shape
{
	int action;
	const char *target; /* relation or function name in schema api */
	const gw_query *query;
	int output;        /* GW_OUT_* */
	int count;         /* GW_COUNT_* */
	int return_rep;    /* return=representation */
	int resolution;    /* GW_RESOLUTION_* */
	long range_offset; /* from the Range header; -1 when absent */
	long range_limit;  /* -1: unbounded */
	/* request body: JSON text, or the raw bytes for a single-parameter function */
	const char *body;
	size_t body_len;
	int body_is_json;
	const char *content_type; /* the request's Content-Type header, or NULL */
	int rpc_get;       /* RPC arguments came from the query string */
	int single_object; /* Prefer: params=single-object */
	int headers_only;  /* Prefer: return=headers-only (Location of an insert) */
	int missing_default; /* Prefer: missing=default: absent keys take the column default */
	int max_affected_set; /* Prefer: handling=strict, max-affected=N on PATCH/DELETE/RPC */
	long max_affected;
	int aggregates;      /* aggregate functions in select= are allowed (else PGRST123) */
} gw_request_shape;

typedef struct gw_plan
{
	gw_buf sql;
	gw_params params;
	gw_buf count_sql; /* Prefer: count=planned: an EXPLAIN run after sql */
	gw_params count_params;
	int read_only;
	int output;
	int returns_body;    /* 0: the request answers without a body (minimal, void) */
	int rpc_scalar;      /* non-set scalar function: body is one JSON value */
	int rpc_single;      /* non-set composite function: body is one object */
	int rpc_scalar_set;  /* set of scalars: body is an array of values */
	int insert_location; /* column 3 is a JSON array of the first row's key values */
} gw_plan;

void gw_plan_init(gw_plan *p);
void gw_plan_free(gw_plan *p);

/* Builds the statement for a request. Returns 0, or -1 with e filled. */
int gw_build(gw_arena *a, const gw_schema *s, const gw_request_shape *r, gw_plan *out, gw_error *e);

/* The top level's page: the query's limit and offset narrowed by the Range
 * header (range_offset, range_limit). Returns 0, or -1 with 416 PGRST103 in e when
 * offset and Range together start past the largest bigint (no row lies there). */
int gw_page_range(const gw_request_shape *r, long *limit, long *offset, gw_error *e);

/* Makes the text form of a PostgreSQL array literal from items: {"a","b\"c"}. */
void gw_sql_array_literal(gw_buf *b, char *const *items, int n);

#endif
