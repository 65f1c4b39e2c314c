/* A PostgREST request as the dialect reads it, before any SQL: the method and
 * target, the Accept, Prefer, Range and profile headers, the query grammar and a
 * form body become a gw_request_shape for the SQL builder, or PostgREST's error.
 * Pure (no I/O, no globals): the handler (handlers/rest.c), the libFuzzer target
 * and the expected-output tests of the SQL builder all go through it. */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H
#include <stddef.h>

#include "arena.h"
#include "buf.h"
#include "query_parse.h"
#include "schema.h"
#include "sql_build.h"

typedef struct gw_rest_input
{
	int method;              /* enum http_method (http_parser.h) */
	const char *method_name; /* as sent, for messages */
	int is_rpc;              /* /rpc/<target> */
	const char *target;      /* relation or function name */
	const char *query;       /* raw query string ("" when none) */
	size_t query_len;
	/* headers, NULL when absent */
	const char *accept, *range, *content_type, *accept_profile, *content_profile;
	const char *const *prefer; /* the value of every Prefer header, in order */
	int nprefer;
	const char *body; /* the request body (JSON, a form, or raw bytes) */
	size_t body_len;
	/* the gateway's settings that change how a request reads */
	int tx_override; /* Prefer: tx= is honoured (PGPOD_GATEWAY_TX_END *-allow-override) */
	int tx_rollback; /* transactions end with ROLLBACK by default */
	int aggregates;  /* PGPOD_GATEWAY_AGGREGATES */
} gw_rest_input;

typedef struct gw_rest_request
{
	gw_request_shape shape; /* what gw_build takes */
	const char *allow;      /* OPTIONS: the Allow header line to answer with */
	int tx_rollback;        /* end the transaction with ROLLBACK */
	const char *timezone;   /* Prefer: timezone=, a name of pg_timezone_names */
	long page_offset;       /* the page's first row (offset + Range), for Content-Range */
	const char *query;      /* the raw query string (in->query), for Content-Location */
	size_t query_len;
	char prefer_applied[256];
} gw_rest_request;

/* Reads a request. Returns 0 with out filled (out->allow set: an OPTIONS request,
 * answer 200 with it), or -1 with e filled (the status and PostgREST code to answer
 * with). Everything out points to lives in a, in, or the schema. */
int gw_rest_request_parse(gw_arena *a, const gw_schema *schema, const gw_rest_input *in,
                          gw_rest_request *out, gw_error *e);

/* The Content-Range of a read or a function's answer: n rows from the page's
 * first row, out of total (the count's text, NULL when not counted). Appends the
 * header to h and sets *status to 206 for a partial page (else leaves it).
 * Returns -1 for an offset past the end: 416 PGRST103 in e, and h holds the
 * Content-Range of the total alone, to answer with. */
int gw_rest_content_range(const gw_rest_request *rq, long n, const char *total, gw_buf *h,
                          int *status, gw_error *e);

#endif
