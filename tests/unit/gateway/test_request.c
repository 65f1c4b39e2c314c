/* Unit tests of the dialect's request reading (gateway/postgrest/request.c) from
 * raw request bytes, hostile integers beside good ones: every number a client
 * sends (Range, limit/offset, Prefer: max-affected) ends in a plan or in a clear
 * PostgREST error, never in an overflow (the ASan/UBSan run of this binary stops
 * on one). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_request.h"
#include "request.h"
#include "tap.h"

static gw_schema *S;


typedef struct parsed
{
	gw_arena a;
	raw_request raw;
	gw_rest_request rq;
	gw_error e;
	int rc;
	gw_plan plan;
	int build_rc;
} parsed;

/* head: the request line and headers, without the blank line */
static parsed *
parse(const char *head)
{
	parsed *p = calloc(1, sizeof *p);
	char bytes[2048];
	snprintf(bytes, sizeof bytes, "%s\r\n\r\n", head);
	gw_arena_init(&p->a);
	gw_plan_init(&p->plan);
	raw_request_parse(&p->raw, bytes, strlen(bytes));
	gw_rest_input in;
	if (raw_request_input(&p->raw, &in))
	{
		p->rc = -2;
		return p;
	}
	p->rc = gw_rest_request_parse(&p->a, S, &in, &p->rq, &p->e);
	p->build_rc = p->rc ? -2 : gw_build(&p->a, S, &p->rq.shape, &p->plan, &p->e);
	return p;
}

static void
done(parsed *p)
{
	gw_plan_free(&p->plan);
	raw_request_free(&p->raw);
	gw_arena_free(&p->a);
	free(p);
}

static int
has_param(const parsed *p, const char *v)
{
	for (int i = 0; i < p->plan.params.n; i++)
		if (p->plan.params.values[i] && !strcmp(p->plan.params.values[i], v))
			return 1;
	return 0;
}

static void
is_error(parsed *p, int status, const char *code, const char *what)
{
	ok(p->rc == -1 && p->e.status == status && !strcmp(p->e.code, code), "%s: %d %s (got %d %d %s)",
	   what, status, code, p->rc, p->rc ? p->e.status : 0, p->rc ? p->e.code : "");
}

static void
ranges(void)
{
	parsed *p = parse("GET /items?select=id HTTP/1.1\r\nRange: 0-9");
	ok(p->rc == 0 && p->build_rc == 0 && p->rq.shape.range_offset == 0 &&
	       p->rq.shape.range_limit == 10 && has_param(p, "10"),
	   "Range 0-9: LIMIT 10");
	done(p);
	p = parse("GET /items?offset=5 HTTP/1.1\r\nRange: items=3-");
	ok(p->rc == 0 && p->rq.page_offset == 8 && p->rq.shape.range_limit == -1 && has_param(p, "8"),
	   "offset=5 and Range items=3-: the page starts at row 8");
	done(p);
	/* the request: b - a + 1 overflowed */
	p = parse("GET /items HTTP/1.1\r\nRange: 0-9223372036854775807");
	ok(p->rc == 0 && p->build_rc == 0 && p->rq.shape.range_offset == 0 &&
	       p->rq.shape.range_limit == -1 && !strstr(p->plan.sql.data, "LIMIT"),
	   "Range 0-9223372036854775807: every row (no LIMIT), no overflow");
	done(p);
	p = parse("GET /items HTTP/1.1\r\nRange: 1-9223372036854775807");
	ok(p->rc == 0 && p->rq.shape.range_limit == LONG_MAX && has_param(p, "9223372036854775807"),
	   "Range 1-9223372036854775807: LIMIT of the largest bigint");
	done(p);
	p = parse("GET /items HTTP/1.1\r\nRange: 0-99999999999999999999999");
	ok(p->rc == 0 && p->rq.shape.range_limit == -1,
	   "a last row past the largest bigint means to the end");
	done(p);
	p = parse("GET /items HTTP/1.1\r\nRange: 99999999999999999999999-");
	is_error(p, 416, "PGRST103", "a first row past the largest bigint");
	contains(p->e.details, "past the last possible row", "... says why");
	done(p);
	/* the query's offset plus the Range's first row overflowed */
	p = parse("GET /items?offset=999999999999999999 HTTP/1.1\r\nRange: 9223372036854775807-");
	is_error(p, 416, "PGRST103", "offset + Range past the largest bigint");
	contains(p->e.details, "An offset of 999999999999999999 and a range from row 9223372036854775807",
	         "... naming both");
	done(p);
	p = parse("GET /items?offset=100 HTTP/1.1\r\nRange: 9223372036854775707-");
	ok(p->rc == 0 && p->rq.page_offset == LONG_MAX, "an offset that just fits is kept");
	done(p);
	p = parse("POST /items HTTP/1.1\r\nRange: 99999999999999999999999-\r\n"
	          "Content-Length: 2\r\n\r\n{}");
	ok(p->rc == 0 && p->rq.shape.range_offset == -1, "a write ignores Range, as PostgREST does");
	done(p);
	p = parse("GET /items?limit=999999999999999999&offset=999999999999999999 HTTP/1.1");
	ok(p->rc == 0 && p->build_rc == 0 && has_param(p, "999999999999999999"),
	   "the largest limit and offset the grammar takes");
	done(p);
}

static void
content_ranges(void)
{
	gw_rest_request rq = {.page_offset = LONG_MAX};
	gw_buf h;
	gw_error e;
	int status = 200;
	gw_buf_init(&h);
	ok(gw_rest_content_range(&rq, 5, NULL, &h, &status, &e) == 0 &&
	       !strcmp(h.data, "Content-Range: 9223372036854775807-9223372036854775807/*\r\n"),
	   "Content-Range of rows at the largest offset never overflows");
	gw_buf_reset(&h);
	rq.page_offset = 10;
	ok(gw_rest_content_range(&rq, 5, "100", &h, &status, &e) == 0 && status == 206 &&
	       !strcmp(h.data, "Content-Range: 10-14/100\r\n"),
	   "a page of a counted read: 206 with its range");
	gw_buf_reset(&h);
	status = 200;
	ok(gw_rest_content_range(&rq, 0, "3", &h, &status, &e) == -1 && e.status == 416 &&
	       !strcmp(h.data, "Content-Range: */3\r\n"),
	   "an offset past the count: 416 with the total");
	gw_buf_free(&h);
}

static void
headers(void)
{
	parsed *p = parse("GET /items HTTP/1.1\r\nAccept: text/csv;q=0.5, application/json");
	ok(p->rc == 0 && p->rq.shape.output == GW_OUT_JSON, "Accept: the highest q wins");
	done(p);
	p = parse("GET /items HTTP/1.1\r\nAccept: text/csv;q=1e999");
	ok(p->rc == 0 && p->rq.shape.output == GW_OUT_CSV, "an infinite q is just the highest");
	done(p);
	p = parse("PATCH /items HTTP/1.1\r\nPrefer: handling=strict, "
	          "max-affected=99999999999999999999\r\nContent-Length: 2\r\n\r\n{}");
	ok(p->rc == 0 && !p->rq.shape.max_affected_set,
	   "max-affected past 64 bits is not applied (as PostgREST)");
	done(p);
	p = parse("DELETE /items HTTP/1.1\r\nPrefer: handling=strict, max-affected=-9223372036854775808");
	ok(p->rc == 0 && p->rq.shape.max_affected == LONG_MIN &&
	       strstr(p->rq.prefer_applied, "max-affected=-9223372036854775808"),
	   "the smallest bigint is echoed whole in Preference-Applied");
	done(p);
	p = parse("PATCH /items HTTP/1.1\r\nPrefer: handling=strict\r\nPrefer: "
	          "max-affected=9223372036854775807\r\nContent-Length: 2\r\n\r\n{}");
	ok(p->rc == 0 && p->rq.shape.max_affected_set && p->rq.shape.max_affected == LONG_MAX &&
	       !strcmp(p->rq.prefer_applied, "handling=strict, max-affected=9223372036854775807"),
	   "max-affected of the largest bigint, from a second Prefer header");
	done(p);
	p = parse("OPTIONS /rpc/add HTTP/1.1");
	ok(p->rc == 0 && p->rq.allow && strstr(p->rq.allow, "OPTIONS,GET,HEAD,POST\r\n"),
	   "OPTIONS on a function: Allow");
	done(p);
	p = parse("POST /items HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
	          "Content-Length: 9\r\n\r\nid=1&id=2");
	ok(p->rc == 0 && !strcmp(p->rq.shape.body, "{\"id\":[\"1\",\"2\"]}"),
	   "a form body is one JSON object (a repeated key: an array)");
	done(p);
}

/* Requests answered with an error of their own, nothing built. */
static void
errors(void)
{
	static const struct
	{
		const char *head;
		int status;
		const char *code, *what;
	} cases[] = {
	    {"GET /rpc/add?a=1&b=2&offset=999999999999999999 HTTP/1.1\r\n"
	     "Range: 9223372036854775000-9223372036854775806",
	     416, "PGRST103", "the same on a function read by GET"},
	    {"GET /items HTTP/1.1\r\nRange: 5-3", 416, "PGRST103", "a range ending before it starts"},
	    {"GET /items HTTP/1.1\r\nRange: -5", 416, "PGRST103", "a negative first row"},
	    {"GET /items HTTP/1.1\r\nRange: x-5", 416, "PGRST103", "a malformed range"},
	    {"GET /items?limit=1000000000000000000 HTTP/1.1", 400, "PGRST100", "limit past 18 digits"},
	    {"GET /items?offset=-1 HTTP/1.1", 400, "PGRST100", "a negative offset"},
	    {"GET /items HTTP/1.1\r\n"
	     "Accept: text/csv;q=nan, image/png",
	     406, "PGRST107", "nothing acceptable (q=nan counts as refused)"},
	    {"GET /items HTTP/1.1\r\n"
	     "Prefer: handling=strict, nonsense",
	     400, "PGRST122", "an invalid preference under handling=strict"},
	    {"GET /items HTTP/1.1\r\nAccept-Profile: private", 406, "PGRST106", "another schema"},
	    {"PUT /rpc/add HTTP/1.1", 405, "PGRST101", "PUT on a function"},
	    {"POST /items HTTP/1.1\r\n"
	     "Content-Type: text/plain\r\n"
	     "Content-Length: 1\r\n"
	     "\r\n"
	     "x",
	     415, "PGRST107", "a text body for a relation"},
	    {"POST /items HTTP/1.1\r\n"
	     "Content-Type: application/x-www-form-urlencoded\r\n"
	     "Content-Length: 4\r\n"
	     "\r\n"
	     "a=%0",
	     400, "PGRST102", "a malformed form body"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
	{
		parsed *p = parse(cases[i].head);
		is_error(p, cases[i].status, cases[i].code, cases[i].what);
		done(p);
	}
}

TAP_TEST(test_request)
{
	S = gw_schema_new();
	static const char *const rows[] = {
	    "rel\titems\tv\t28\t",
	    "col\titems\tid\tinteger\t0\t0",
	    "pk\titems\tid",
	    "fn\tadd\t100\ts\t1\t0\t0\tinteger",
	    "arg\t100\ta\tinteger\t0",
	    "arg\t100\tb\tinteger\t0",
	};
	for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
	{
		char line[128];
		snprintf(line, sizeof line, "%s", rows[i]);
		ok(schema_add_line(S, line) == 0, "schema row %zu", i);
	}
	ranges();
	errors();
	content_ranges();
	headers();
	gw_schema_unref(S);
}
