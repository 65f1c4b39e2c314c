/* Unit tests of the response functions (gateway/postgrest/response.c) beyond the
 * expected-output files (sql/answer_*.http): hostile result values (NULL, past 64
 * bits, not numbers) through every action end in a well-formed answer, a header
 * never carries a bare CR or LF, and the Location comes from the schema the
 * request holds, not from another one published meanwhile. The ASan/UBSan run of
 * this binary stops on an overflow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_request.h"
#include "request.h"
#include "response.h"
#include "tap.h"

static gw_schema *
schema_with_key(const char *key)
{
	gw_schema *s = gw_schema_new();
	const char *rel[] = {"rel", "items", "r", "28", ""};
	const char *col1[] = {"col", "items", "id", "integer", "0", "1"};
	const char *col2[] = {"col", "items", "code", "text", "0", "0"};
	const char *pk[] = {"pk", "items", key};
	const char *fn[] = {"fn", "f", "100", "s", "1", "0", "1", "items"};
	gw_schema_add_row(s, 5, rel);
	gw_schema_add_row(s, 6, col1);
	gw_schema_add_row(s, 6, col2);
	gw_schema_add_row(s, 3, pk);
	gw_schema_add_row(s, 8, fn);
	return s;
}

typedef struct call
{
	gw_arena a;
	raw_request raw;
	gw_rest_request rq;
	gw_plan plan;
	gw_error e;
	int rc;
} call;

/* head: the request line and headers; body may be NULL */
static call *
read_request(const gw_schema *s, const char *head, const char *body)
{
	call *c = calloc(1, sizeof *c);
	char bytes[2048];
	snprintf(bytes, sizeof bytes, "%s\r\nContent-Length: %zu\r\n\r\n%s", head,
	         body ? strlen(body) : 0, body ? body : "");
	gw_arena_init(&c->a);
	gw_plan_init(&c->plan);
	raw_request_parse(&c->raw, bytes, strlen(bytes));
	gw_rest_input in;
	c->rc = raw_request_input(&c->raw, &in) ? -2 : gw_rest_request_parse(&c->a, s, &in, &c->rq, &c->e);
	if (!c->rc)
		c->rc = gw_build(&c->a, s, &c->rq.shape, &c->plan, &c->e);
	return c;
}

static void
call_free(call *c)
{
	gw_plan_free(&c->plan);
	raw_request_free(&c->raw);
	gw_arena_free(&c->a);
	free(c);
}

/* Every CR is followed by LF and every LF preceded by CR, and the block ends with CRLF. */
static int
header_lines_ok(const gw_buf *h)
{
	for (size_t i = 0; i < h->len; i++)
	{
		if (h->data[i] == '\r' && (i + 1 >= h->len || h->data[i + 1] != '\n'))
			return 0;
		if (h->data[i] == '\n' && (i == 0 || h->data[i - 1] != '\r'))
			return 0;
	}
	return !h->len || (h->len >= 2 && !strcmp(h->data + h->len - 2, "\r\n"));
}

TAP_TEST(response_hostile_values)
{
	gw_schema *s = schema_with_key("id");
	static const char *heads[] = {
	    "GET /items HTTP/1.1\r\nPrefer: count=exact",
	    "GET /items HTTP/1.1\r\nRange: 9223372036854775806-",
	    "GET /items HTTP/1.1\r\nPrefer: count=planned",
	    "GET /items HTTP/1.1\r\nAccept: application/vnd.pgrst.object+json",
	    "POST /items HTTP/1.1\r\nPrefer: return=headers-only",
	    "POST /items HTTP/1.1\r\nPrefer: resolution=merge-duplicates, count=exact",
	    "PUT /items?id=eq.1 HTTP/1.1\r\nPrefer: return=representation",
	    "PATCH /items HTTP/1.1\r\nPrefer: count=exact",
	    "DELETE /items HTTP/1.1\r\nPrefer: return=representation",
	    "POST /rpc/f?offset=3 HTTP/1.1\r\nPrefer: count=exact",
	};
	static const char *numbers[] = {NULL, "", "0", "-1", "-9223372036854775808",
	                                "9223372036854775807", "99999999999999999999999", "12abc",
	                                "1e400"};
	int bad = 0, runs = 0;
	for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++)
	{
		const char *body = heads[h][0] == 'G' || heads[h][0] == 'D' ? NULL
		                   : strstr(heads[h], "/rpc/")             ? "{}"
		                                                           : "{\"id\":1,\"code\":\"x\"}";
		call *c = read_request(s, heads[h], body);
		if (c->rc)
		{
			ok(0, "%s reads (%d %s)", heads[h], c->e.status, c->e.code);
			call_free(c);
			continue;
		}
		for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
			for (size_t j = 0; j < sizeof numbers / sizeof numbers[0]; j++)
			{
				gw_rest_result r = {.nrows = 1,
				                    .total = numbers[i],
				                    .page_total = numbers[j],
				                    .inserted = numbers[i],
				                    .location = numbers[j],
				                    .response_status = numbers[i],
				                    .explain = "[{\"Plan\":{\"Plan Rows\":1e300}}]"};
				gw_response_in in = {.rq = &c->rq, .plan = &c->plan, .schema = s};
				gw_answer a;
				gw_answer_init(&a);
				gw_response(&c->a, &in, &r, &a);
				runs++;
				if (a.status < 100 || a.status > 599 || !header_lines_ok(&a.headers) ||
				    (a.body_len && !a.body))
				{
					bad++;
					printf("# %s total=%s page_total=%s: %d\n", heads[h], numbers[i] ? numbers[i] : "NULL",
					       numbers[j] ? numbers[j] : "NULL", a.status);
				}
				gw_answer_free(&a);
			}
		call_free(c);
	}
	ok(bad == 0, "%d answers to hostile result values: each a status and well-formed headers", runs);
	gw_schema_unref(s);
}

TAP_TEST(response_headers_never_split)
{
	gw_schema *s = schema_with_key("id");
	call *c = read_request(s, "GET /items HTTP/1.1", NULL);
	gw_rest_result r = {
	    .nrows = 1,
	    .page_total = "1",
	    .body = "[]",
	    .body_len = 2,
	    .response_headers = "[{\"X-A\":\"1\\r\\nSet-Cookie: a=1\"},{\"X\\nB\":\"1\"},{\"X-C\":\"ok\"}]"};
	gw_response_in in = {.rq = &c->rq, .plan = &c->plan, .schema = s};
	gw_answer a;
	gw_answer_init(&a);
	gw_response_read(&c->a, &in, &r, &a);
	ok(header_lines_ok(&a.headers) && !strstr(a.headers.data, "Set-Cookie") &&
	       strstr(a.headers.data, "X-C: ok\r\n"),
	   "response.headers with CR/LF are dropped, the others kept");
	gw_answer_free(&a);
	call_free(c);
	gw_schema_unref(s);
}

TAP_TEST(response_location_from_the_request_snapshot)
{
	gw_schema *old = schema_with_key("id"), *reloaded = schema_with_key("code");
	call *c = read_request(old, "POST /items HTTP/1.1\r\nPrefer: return=headers-only", "{\"code\":\"x\"}");
	gw_rest_result r = {.nrows = 1, .page_total = "1", .location = "[\"7\"]"};
	gw_answer a;
	gw_answer_init(&a);
	gw_response_in in = {.rq = &c->rq, .plan = &c->plan, .schema = old};
	gw_response_create(&c->a, &in, &r, &a);
	contains(a.headers.data, "Location: /items?id=eq.7\r\n", "Location names the key of the request's schema");
	ok(a.status == 201 && !a.body_len, "201 without a body");
	gw_answer_free(&a);
	gw_answer_init(&a);
	in.schema = reloaded;
	gw_response_create(&c->a, &in, &r, &a);
	contains(a.headers.data, "Location: /items?code=eq.7\r\n", "... and only that schema's");
	gw_answer_free(&a);
	call_free(c);
	gw_schema_unref(old);
	gw_schema_unref(reloaded);
}

TAP_TEST(response_per_action)
{
	gw_schema *s = schema_with_key("id");
	call *c = read_request(s, "POST /items HTTP/1.1\r\nPrefer: resolution=merge-duplicates",
	                       "{\"id\":1,\"code\":\"x\"}");
	gw_rest_result r = {.nrows = 1, .page_total = "1", .inserted = "0"};
	gw_response_in in = {.rq = &c->rq, .plan = &c->plan, .schema = s};
	gw_answer a;
	gw_answer_init(&a);
	gw_response(&c->a, &in, &r, &a);
	ok(a.status == 200, "POST merging duplicates that only updated: the upsert's 200 (got %d)", a.status);
	gw_answer_free(&a);
	gw_answer_init(&a);
	gw_response_create(&c->a, &in, &r, &a);
	ok(a.status == 201, "the create function alone would say 201 (got %d)", a.status);
	gw_answer_free(&a);
	call_free(c);
	c = read_request(s, "GET /items HTTP/1.1", NULL);
	gw_rest_result fail = {.failed = 1, .failure = "gone"};
	in.rq = &c->rq;
	in.plan = &c->plan;
	gw_answer_init(&a);
	gw_response_read(&c->a, &in, &fail, &a);
	contains(a.body, "\"PGRST001\"", "a failed connection: 503 PGRST001");
	ok(a.status == 503, "... status 503");
	gw_answer_free(&a);
	call_free(c);
	gw_schema_unref(s);
}
