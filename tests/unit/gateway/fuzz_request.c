/* libFuzzer target: raw bytes as an HTTP request (http-parser), its URL's query
 * string through the PostgREST grammar and the SQL builder over a small schema,
 * its body as a JSON write payload, its Authorization value through JWT
 * verification, and the bytes as a Range header (a range must lie in the file). Built with
 * ASan/UBSan by gateway/gateway.mk. */
#include <http_parser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "byte_range.h"
#include "jwt.h"
#include "query_parse.h"
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
}

typedef struct req
{
	char url[4096];
	size_t url_len;
	char body[4096];
	size_t body_len;
	char auth[1024];
	size_t auth_len;
	int in_auth;
} req;

static int
on_url(http_parser *p, const char *at, size_t n)
{
	req *r = p->data;
	if (r->url_len + n < sizeof r->url)
	{
		memcpy(r->url + r->url_len, at, n);
		r->url_len += n;
	}
	return 0;
}

static int
on_field(http_parser *p, const char *at, size_t n)
{
	req *r = p->data;
	r->in_auth = n == 13 && !strncasecmp(at, "authorization", 13);
	return 0;
}

static int
on_value(http_parser *p, const char *at, size_t n)
{
	req *r = p->data;
	if (r->in_auth && r->auth_len + n < sizeof r->auth)
	{
		memcpy(r->auth + r->auth_len, at, n);
		r->auth_len += n;
	}
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	req *r = p->data;
	if (r->body_len + n < sizeof r->body)
	{
		memcpy(r->body + r->body_len, at, n);
		r->body_len += n;
	}
	return 0;
}

static void
run_query(const char *qs, size_t n, const char *body, size_t blen, int action)
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
		                      .body = body,
		                      .body_len = blen,
		                      .body_is_json = 1,
		                      .rpc_get = action == GW_ACTION_RPC && n % 2,
		                      .output = (int)(n % 3),
		                      .count = (int)(blen % 2),
		                      .return_rep = (int)(n % 2),
		                      .resolution = (int)(blen % 3),
		                      .missing_default = (int)(n % 5 == 1),
		                      .max_affected_set = (int)(blen % 4 == 1),
		                      .max_affected = (long)(n % 7),
		                      .aggregates = (int)(n % 3 != 0)};
		gw_plan plan;
		gw_error e;
		gw_plan_init(&plan);
		gw_build(&a, S, &r, &plan, &e);
		gw_plan_free(&plan);
	}
	gw_arena_free(&a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!S)
		init();
	if (size < 1)
		return 0;
	int action = data[0] % 6;
	data++;
	size--;
	/* the raw bytes as an HTTP request */
	static http_parser_settings st;
	st.on_url = on_url;
	st.on_header_field = on_field;
	st.on_header_value = on_value;
	st.on_body = on_body;
	http_parser p;
	req *r = calloc(1, sizeof *r);
	http_parser_init(&p, HTTP_REQUEST);
	p.data = r;
	http_parser_execute(&p, &st, (const char *)data, size);
	const char *q = memchr(r->url, '?', r->url_len);
	if (q)
		run_query(q + 1, r->url_len - (size_t)(q + 1 - r->url), r->body, r->body_len, action);
	/* the same bytes straight into the grammar, for inputs that are no request */
	run_query((const char *)data, size, (const char *)data, size, action);
	/* and as a Range header */
	{
		char *h = strndup((const char *)data, size);
		long long st, len;
		if (h && gw_parse_byte_range(h, (long long)size * 131, &st, &len) == 1 &&
		    (st < 0 || len <= 0 || st + len > (long long)size * 131))
			abort(); /* a range outside the file must never be accepted */
		gw_byte_range rs[8];
		long long fsize = (long long)size * 131;
		int n = h ? gw_parse_byte_ranges(h, fsize, rs, 8) : 0;
		for (int i = 0; i < n; i++)
			if (rs[i].start < 0 || rs[i].len <= 0 || rs[i].start + rs[i].len > fsize ||
			    (i && rs[i].start <= rs[i - 1].start + rs[i - 1].len + GW_RANGE_GAP))
				abort(); /* inside the file, sorted, coalesced */
		free(h);
	}
	if (r->auth_len)
	{
		r->auth[r->auth_len] = '\0';
		gw_jwt j;
		char err[160];
		if (gw_jwt_verify(r->auth, (const unsigned char *)"k", 1, 0, &j, err, sizeof err) == 0)
			gw_jwt_free(&j);
	}
	free(r);
	return 0;
}
