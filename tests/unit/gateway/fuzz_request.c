/* libFuzzer target: raw bytes as an HTTP request through what the gateway does
 * with it before the database: http-parser, the dialect's request reading
 * (Accept, Prefer, Range, profiles, the query grammar, form bodies:
 * postgrest/request.c) and the SQL builder over a small schema, the page's
 * Content-Range, the Range header as /files reads it (a range must lie in the
 * file), the answer of the response function of the request's action (its
 * result values taken from the request's own X-Result-* headers, so that the
 * fuzzer mutates them too), and the Authorization value through JWT
 * verification. The first byte
 * picks the gateway's settings (tx override, aggregates). The same bytes also
 * go straight into the query grammar, for inputs that are no request. Built
 * with ASan/UBSan by gateway/gateway.mk: an overflow or an out-of-bounds read
 * anywhere on these paths stops the run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "byte_range.h"
#include "jwt.h"
#include "query_parse.h"
#include "raw_request.h"
#include "request.h"
#include "response.h"
#include "schema.h"
#include "sql_build.h"

static gw_schema *S;

static void
row(int n, const char *a, const char *b, const char *c, const char *d, const char *e, const char *f,
    const char *g, const char *h)
{
	const char *v[8] = {a, b, c, d, e, f, g, h};
	gw_schema_add_row(S, n, v);
}

static void
init(void)
{
	S = gw_schema_new();
	row(5, "rel", "t", "v", "28", "", 0, 0, 0);
	row(5, "rel", "p", "v", "28", "", 0, 0, 0);
	row(6, "col", "t", "id", "integer", "0", "0", 0, 0);
	row(6, "col", "t", "p_id", "integer", "1", "0", 0, 0);
	row(6, "col", "t", "data", "jsonb", "1", "0", 0, 0);
	row(6, "col", "p", "id", "integer", "0", "0", 0, 0);
	row(6, "col", "p", "name", "text", "0", "0", 0, 0);
	row(3, "pk", "t", "id", 0, 0, 0, 0, 0);
	row(3, "pk", "p", "id", 0, 0, 0, 0, 0);
	row(6, "fk", "t_p_fk", "t", "p_id", "p", "id", 0, 0);
	row(8, "fn", "f", "1", "s", "1", "0", "1", "record");
	row(5, "arg", "1", "a", "integer", "0", 0, 0, 0);
	row(2, "tz", "UTC", 0, 0, 0, 0, 0, 0);
}

/* The answer to the request from result values its X-Result-* headers give (the
 * first byte's bits: a failure, an error, no row, anonymous). */
static void
run_response(const raw_request *raw, gw_arena *a, const gw_rest_request *rq, const gw_plan *plan,
             unsigned settings)
{
	const char *body = raw_request_header(raw, "x-result-body");
	gw_rest_result r = {
	    .failed = (settings & 0x18) == 0x18,
	    .timed_out = settings & 0x20,
	    .failure = raw_request_header(raw, "x-result-failure"),
	    .sqlstate = raw_request_header(raw, "x-result-sqlstate"),
	    .message = raw_request_header(raw, "x-result-message"),
	    .error_text = raw_request_header(raw, "x-result-text"),
	    .detail = raw_request_header(raw, "x-result-detail"),
	    .hint = raw_request_header(raw, "x-result-hint"),
	    .nrows = (settings & 0x60) == 0x60 ? 0 : 1,
	    .total = raw_request_header(raw, "x-result-total"),
	    .page_total = raw_request_header(raw, "x-result-page-total"),
	    .body = body,
	    .body_len = body ? strlen(body) : 0,
	    .location = raw_request_header(raw, "x-result-location"),
	    .response_headers = raw_request_header(raw, "x-result-headers"),
	    .response_status = raw_request_header(raw, "x-result-status"),
	    .inserted = raw_request_header(raw, "x-result-inserted"),
	    .explain = raw_request_header(raw, "x-result-explain")};
	r.error = r.sqlstate || r.message || r.error_text;
	gw_response_in in = {.rq = rq, .plan = plan, .schema = S, .anonymous = settings & 0x80};
	gw_answer ans;
	gw_answer_init(&ans);
	gw_response(a, &in, &r, &ans);
	/* an answer always has a status, and its header lines never split it */
	if (ans.status < 100 || ans.status > 599 || (ans.body_len && !ans.body))
		abort();
	for (size_t i = 0; i < ans.headers.len; i++)
		if ((ans.headers.data[i] == '\r') != (i + 1 < ans.headers.len && ans.headers.data[i + 1] == '\n') ||
		    (ans.headers.data[i] == '\n' && (i == 0 || ans.headers.data[i - 1] != '\r')))
			abort();
	gw_answer_free(&ans);
}

/* A request the dialect reads, then the statement and the page's range. */
static void
run_request(raw_request *raw, unsigned settings)
{
	gw_rest_input in;
	if (raw_request_input(raw, &in))
		return;
	in.tx_override = settings & 1;
	in.tx_rollback = (settings >> 1) & 1;
	in.aggregates = (settings >> 2) & 1;
	gw_arena a;
	gw_arena_init(&a);
	gw_rest_request rq;
	gw_error e;
	if (gw_rest_request_parse(&a, S, &in, &rq, &e) == 0 && !rq.allow)
	{
		gw_plan plan;
		gw_plan_init(&plan);
		if (gw_build(&a, S, &rq.shape, &plan, &e) == 0)
		{
			/* the answer's Content-Range for a page of n rows out of total */
			long n = (long)(settings >> 3);
			char total[32];
			snprintf(total, sizeof total, "%ld", (long)(settings >> 4) * 1000);
			gw_buf h;
			gw_buf_init(&h);
			int status = 200;
			gw_rest_content_range(&rq, n, settings & 8 ? total : NULL, &h, &status, &e);
			gw_buf_free(&h);
			run_response(raw, &a, &rq, &plan, settings);
		}
		gw_plan_free(&plan);
	}
	gw_arena_free(&a);
}

/* The bytes as a query string straight into the grammar and the builder. */
static void
run_query(const char *qs, size_t n, int action)
{
	gw_arena a;
	gw_arena_init(&a);
	gw_query q;
	gw_parse_error pe;
	if (gw_query_parse(&a, qs, n, &q, &pe) == 0)
	{
		static const char *targets[] = {"t", "p", "f", "missing"};
		gw_request_shape r = {.action = action,
		                      .target =
		                          targets[action == GW_ACTION_RPC ? 2 : (n % 4 == 2 ? 3 : n % 2)],
		                      .query = &q,
		                      .range_offset = -1,
		                      .range_limit = -1,
		                      .body = qs,
		                      .body_len = n,
		                      .body_is_json = 1,
		                      .rpc_get = action == GW_ACTION_RPC && n % 2,
		                      .output = (int)(n % 3),
		                      .count = (int)(n % 2),
		                      .return_rep = (int)(n % 2),
		                      .resolution = (int)(n % 3),
		                      .missing_default = (int)(n % 5 == 1),
		                      .aggregates = (int)(n % 3 != 0)};
		gw_plan plan;
		gw_error e;
		gw_plan_init(&plan);
		gw_build(&a, S, &r, &plan, &e);
		gw_plan_free(&plan);
	}
	gw_arena_free(&a);
}

/* A Range header as /files reads it, against a file of fsize bytes. */
static void
run_byte_ranges(const char *h, long long fsize)
{
	long long st, len;
	if (gw_parse_byte_range(h, fsize, &st, &len) == 1 && (st < 0 || len <= 0 || st + len > fsize))
		abort(); /* a range outside the file must never be accepted */
	gw_byte_range rs[8];
	int n = gw_parse_byte_ranges(h, fsize, rs, 8);
	for (int i = 0; i < n; i++)
		if (rs[i].start < 0 || rs[i].len <= 0 || rs[i].start + rs[i].len > fsize ||
		    (i && rs[i].start <= rs[i - 1].start + rs[i - 1].len + GW_RANGE_GAP))
			abort(); /* inside the file, sorted, coalesced */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!S)
		init();
	if (size < 1)
		return 0;
	unsigned settings = data[0];
	data++;
	size--;
	raw_request *raw = calloc(1, sizeof *raw);
	raw_request_parse(raw, (const char *)data, size);
	run_request(raw, settings);
	const char *range = raw_request_header(raw, "range");
	if (range)
		run_byte_ranges(range, (long long)size * 131);
	const char *auth = raw_request_header(raw, "authorization");
	if (auth)
	{
		gw_jwt j;
		char err[160];
		if (gw_jwt_verify(auth, (const unsigned char *)"k", 1, 0, &j, err, sizeof err) == 0)
			gw_jwt_free(&j);
	}
	raw_request_free(raw);
	free(raw);
	run_query((const char *)data, size, (int)(settings % 6));
	char *h = strndup((const char *)data, size);
	if (h)
		run_byte_ranges(h, (long long)size * 131);
	free(h);
	return 0;
}
