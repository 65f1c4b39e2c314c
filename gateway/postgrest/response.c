/* The answers to PostgREST requests, one function per action (see response.h).
 * Moved out of the handler so that a request's whole answer can be unit-tested
 * and fuzzed from result values alone. */
#include "response.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "openapi.h"
#include "url.h"

/* Percent-encodes everything but unreserved characters: safe in a header. */
static void
url_encode(gw_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    *p == '-' || *p == '_' || *p == '.' || *p == '~')
		{
			gw_buf_putc(b, (char)*p);
		}
		else
		{
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			gw_buf_append(b, e, 3);
		}
	}
}

/* Percent-encodes as Haskell's urlEncode over a byte string read as Latin-1:
 * unreserved characters stay, a byte past ASCII is escaped as the UTF-8 of
 * that code point (what PostgREST's Content-Location shows). */
static void
haskell_url_encode(gw_buf *b, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
	{
		if (*p >= 0x80)
		{
			gw_buf_printf(b, "%%%02X%%%02X", 0xC0 | (*p >> 6), 0x80 | (*p & 0x3F));
			continue;
		}
		char one[2] = {(char)*p, 0};
		url_encode(b, one);
	}
}

static const char *
content_type(int output)
{
	switch (output)
	{
	case GW_OUT_SINGLE:
		return "application/vnd.pgrst.object+json; charset=utf-8";
	case GW_OUT_CSV:
		return "text/csv; charset=utf-8";
	default:
		return "application/json; charset=utf-8";
	}
}

/* The answer is the error e, after the header lines of extra (may be NULL). */
static void
error_answer(const gw_error *e, const char *extra, gw_answer *out)
{
	gw_error_answer(e, extra, out);
}

static void
warn(gw_answer *out, const char *fmt, const char *arg)
{
	gw_buf_printf(&out->warnings, fmt, arg);
	gw_buf_putc(&out->warnings, '\0'); /* one NUL-terminated line after another */
}

/* An error from PostgreSQL: PostgREST's mapping, or a count check of the
 * statement (sql_build.c), which fails a cast of '<marker>:<count>' on purpose:
 * 22P02 carrying the marker and the count. A 5xx but 503 is logged. */
static void
pg_error_answer(const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	gw_error e;
	const char *st = r->sqlstate;
	const char *msg = r->message;
	static const struct
	{
		const char *marker, *code, *message, *details;
		int status;
	} checks[] = {
	    {"pgrst_single:", "PGRST116", "Cannot coerce the result to a single JSON object",
	     "The result contains %ld rows", 406},
	    {"pgrst_max_affected:", "PGRST124", "Query result exceeds max-affected preference constraint",
	     "The query affects %ld rows", 400},
	};
	for (size_t i = 0; st && msg && !strcmp(st, "22P02") && i < sizeof checks / sizeof checks[0]; i++)
	{
		const char *at = strstr(msg, checks[i].marker);
		char details[64];
		if (!at)
			continue;
		snprintf(details, sizeof details, checks[i].details,
		         strtol(at + strlen(checks[i].marker), NULL, 10));
		gw_error_set(&e, checks[i].status, checks[i].code, checks[i].message, details, NULL);
		error_answer(&e, NULL, out);
		return;
	}
	gw_error_from_pg(st, msg ? msg : (r->error_text ? r->error_text : ""), r->detail, r->hint,
	                 in->anonymous, &e);
	if (e.status >= 500 && e.status != 503)
	{
		gw_buf_printf(&out->warnings, "%s %s", e.code, e.message);
		gw_buf_putc(&out->warnings, '\0');
		out->warn_target = 1; /* the handler names the request (its path redacted) */
	}
	error_answer(&e, e.status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL, out);
}

/* response.headers (a JSON array of one-key objects) and response.status, as
 * PostgREST honours them; a header line never carries CR or LF. */
static void
apply_response_gucs(gw_buf *h, int *status, const char *headers_json, const char *status_text,
                    int *own_type, gw_answer *out)
{
	if (status_text)
	{
		char *end;
		long v = strtol(status_text, &end, 10);
		if (!*end && v >= 100 && v <= 599)
			*status = (int)v;
		else
			warn(out, "response.status %.40s is not an HTTP status; ignored", status_text);
	}
	if (!headers_json)
		return;
	json_error_t jerr;
	json_t *arr = json_loads(headers_json, 0, &jerr);
	size_t i;
	json_t *obj;
	if (!arr || !json_is_array(arr))
	{
		warn(out, "%s", "response.headers is not a JSON array of objects; ignored");
		if (arr)
			json_decref(arr);
		return;
	}
	json_array_foreach(arr, i, obj)
	{
		const char *k;
		json_t *v;
		json_object_foreach(obj, k, v)
		{
			const char *val = json_string_value(v);
			if (!val || strpbrk(k, "\r\n:") || strpbrk(val, "\r\n") || !*k)
				continue;
			if (!strcasecmp(k, "content-type"))
				*own_type = 1; /* replaces the gateway's, as in PostgREST */
			gw_buf_printf(h, "%s: %s\r\n", k, val);
		}
	}
	json_decref(arr);
}

/* "Plan Rows" of the top plan node of EXPLAIN (FORMAT JSON). */
static int
planned_rows(const char *explain_json, char *out, size_t n)
{
	json_error_t jerr;
	json_t *j = json_loads(explain_json, 0, &jerr);
	json_t *rows =
	    j ? json_object_get(json_object_get(json_array_get(j, 0), "Plan"), "Plan Rows") : NULL;
	int ok = json_is_number(rows);
	if (ok)
		snprintf(out, n, "%.0f", json_number_value(rows));
	if (j)
		json_decref(j);
	return ok;
}

typedef struct query_pair
{
	const char *key, *value;
	int order;
} query_pair;

static int
by_key(const void *x, const void *y)
{
	const query_pair *a = x, *b = y;
	int c = strcmp(a->key, b->key);
	return c ? c : a->order - b->order; /* stable, as sortOn */
}

/* Content-Location: /name?canonical, PostgREST's canonical query string: the
 * parameters (split at & and ;) sorted by key, a repeated key's values joined
 * with commas, re-encoded. Nothing when the query does not decode. */
static void
add_content_location(gw_buf *h, gw_arena *a, const char *name, const char *query, size_t query_len)
{
	size_t n = 0, cap = 8;
	query_pair *pairs = gw_arena_alloc(a, cap * sizeof *pairs);
	const char *end = query ? query + strnlen(query, query_len) : NULL;
	for (const char *p = query; p && p < end;)
	{
		size_t len = 0;
		while (p + len < end && p[len] != '&' && p[len] != ';')
			len++;
		if (len)
		{
			const char *eq = memchr(p, '=', len);
			char *k = gw_url_decode(a, p, eq ? (size_t)(eq - p) : len, 1);
			char *v = eq ? gw_url_decode(a, eq + 1, len - (size_t)(eq - p) - 1, 1) : "";
			if (!k || !v)
				return;
			if (n == cap)
			{
				query_pair *more = gw_arena_alloc(a, 2 * cap * sizeof *pairs);
				memcpy(more, pairs, cap * sizeof *pairs);
				pairs = more;
				cap *= 2;
			}
			pairs[n] = (query_pair){k, v, (int)n};
			n++;
		}
		p += len;
		if (p < end)
			p++;
	}
	qsort(pairs, n, sizeof *pairs, by_key);
	gw_buf_puts(h, "Content-Location: /");
	url_encode(h, name);
	for (size_t i = 0; i < n; i++)
	{
		if (i && !strcmp(pairs[i].key, pairs[i - 1].key))
		{
			gw_buf_putc(h, ',');
			haskell_url_encode(h, pairs[i].value);
			continue;
		}
		gw_buf_putc(h, i ? '&' : '?');
		haskell_url_encode(h, pairs[i].key);
		gw_buf_putc(h, '=');
		haskell_url_encode(h, pairs[i].value);
	}
	gw_buf_puts(h, "\r\n");
}

/* Location: /rel?pk=eq.value&... from the JSON array of key values, with the
 * primary key of the schema the statement was built on. */
static void
add_location(gw_buf *h, const gw_schema *schema, const char *rel, const char *values_json)
{
	const gw_relation *r = schema ? gw_schema_relation(schema, rel) : NULL;
	json_error_t jerr;
	json_t *vals = r ? json_loads(values_json, 0, &jerr) : NULL;
	if (!r || !vals || !json_is_array(vals) || json_array_size(vals) != (size_t)r->npk)
	{
		if (vals)
			json_decref(vals);
		return;
	}
	gw_buf_puts(h, "Location: /");
	url_encode(h, rel);
	for (int i = 0; i < r->npk; i++)
	{
		const char *v = json_string_value(json_array_get(vals, (size_t)i));
		gw_buf_putc(h, i ? '&' : '?');
		url_encode(h, r->pk[i]);
		gw_buf_puts(h, "=eq.");
		url_encode(h, v ? v : "");
	}
	gw_buf_puts(h, "\r\n");
	json_decref(vals);
}

/* What every action does first: the transaction's failure or error, a result
 * without its row, a singular object of other than one row; then
 * Preference-Applied into h. Returns 1 when out holds the (error) answer, else 0
 * with the page's row count in *n and the total (counted or planned) in *total. */
static int
begin(const gw_response_in *in, const gw_rest_result *r, gw_answer *out, gw_buf *h, long *n,
      const char **total, char *planned, size_t planned_len)
{
	gw_error e;
	if (r->failed)
	{
		if (r->timed_out)
			gw_error_set(&e, 504, "PGRST003", r->failure, NULL, NULL);
		else
			gw_error_set(&e, 503, "PGRST001", "Database client error. Retrying the connection.",
			             r->failure, NULL);
		error_answer(&e, NULL, out);
		return 1;
	}
	if (r->error)
	{
		pg_error_answer(in, r, out);
		return 1;
	}
	if (r->nrows != 1)
	{
		gw_error_set(&e, 500, "PGRST000", "The statement returned no result row", NULL, NULL);
		error_answer(&e, NULL, out);
		return 1;
	}
	*total = r->total;
	if (in->plan->count_sql.len && r->explain && planned_rows(r->explain, planned, planned_len))
		*total = planned;
	*n = strtol(r->page_total ? r->page_total : "", NULL, 10);
	if (in->rq->prefer_applied[0])
		gw_buf_printf(h, "Preference-Applied: %s\r\n", in->rq->prefer_applied);
	if (in->rq->shape.output == GW_OUT_SINGLE && *n != 1 &&
	    !(in->plan->rpc_scalar || in->plan->rpc_single))
	{
		char details[64];
		snprintf(details, sizeof details, "The result contains %ld rows", *n);
		gw_error_set(&e, 406, "PGRST116", "Cannot coerce the result to a single JSON object",
		             details, NULL);
		error_answer(&e, NULL, out);
		return 1;
	}
	return 0;
}

/* What every action does last: response.headers and response.status, then the
 * answer with its body, or without one (minimal, void, 204). h moves into out. */
static void
finish(const gw_response_in *in, const gw_rest_result *r, gw_answer *out, gw_buf *h, int status,
       int is_read, int is_insert)
{
	int own_type = 0;
	int returns_body = in->plan->returns_body;
	apply_response_gucs(h, &status, r->response_headers, r->response_status, &own_type, out);
	gw_buf_free(&out->headers);
	out->headers = *h;
	gw_buf_init(h);
	if (status == 204 || (!returns_body && !is_read))
	{
		/* an upsert that only updated answers 200 without a body, as PostgREST */
		int empty = status == 200 && !returns_body && !is_insert;
		out->status = empty ? 204 : status;
		out->content_type = NULL;
		out->body = NULL;
		out->body_len = 0;
		return;
	}
	out->status = status;
	out->content_type = own_type ? NULL : content_type(in->rq->shape.output);
	out->body = r->body ? r->body : "";
	out->body_len = r->body ? r->body_len : 0;
}

/* The Content-Range of a write (PostgREST v12): an update gives the rows' range,
 * an insert or a delete only the total, star slash n, a PUT none. */
static void
write_content_range(const gw_response_in *in, const gw_rest_result *r, long n, gw_buf *h)
{
	const gw_request_shape *s = &in->rq->shape;
	const char *count = s->count ? (n > 0 ? r->page_total : "0") : "*";
	if (n > 0 && s->action == GW_ACTION_UPDATE)
		gw_buf_printf(h, "Content-Range: 0-%ld/%s\r\n", n - 1, count);
	else if (s->action != GW_ACTION_UPSERT_PUT)
		gw_buf_printf(h, "Content-Range: */%s\r\n", count);
}

static void
add_insert_location(const gw_response_in *in, const gw_rest_result *r, gw_buf *h)
{
	if (in->plan->insert_location && r->location)
		add_location(h, in->schema, in->rq->shape.target, r->location);
}

/* A read or a function: the page's Content-Range, 206 for a part, 416 past the end. */
static int
page_range(const gw_response_in *in, long n, const char *total, gw_buf *h, int *status,
           gw_answer *out)
{
	gw_error e;
	if (gw_rest_content_range(in->rq, n, total, h, status, &e))
	{
		error_answer(&e, h->data, out);
		return 1;
	}
	return 0;
}

void
gw_response_read(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	gw_buf h;
	gw_buf_init(&h);
	long n;
	const char *total;
	char planned[32];
	int status = 200;
	if (!begin(in, r, out, &h, &n, &total, planned, sizeof planned))
	{
		add_content_location(&h, a, in->rq->shape.target, in->rq->query, in->rq->query_len);
		if (!page_range(in, n, total, &h, &status, out))
			finish(in, r, out, &h, status, 1, 0);
	}
	gw_buf_free(&h);
}

void
gw_response_rpc(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	(void)a;
	gw_buf h;
	gw_buf_init(&h);
	long n;
	const char *total;
	char planned[32];
	int status = 200;
	if (!begin(in, r, out, &h, &n, &total, planned, sizeof planned) &&
	    !page_range(in, n, total, &h, &status, out))
	{
		if (!in->plan->returns_body)
			status = 204;
		finish(in, r, out, &h, status, 0, 0);
	}
	gw_buf_free(&h);
}

void
gw_response_create(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	(void)a;
	gw_buf h;
	gw_buf_init(&h);
	long n;
	const char *total;
	char planned[32];
	if (!begin(in, r, out, &h, &n, &total, planned, sizeof planned))
	{
		write_content_range(in, r, n, &h);
		add_insert_location(in, r, &h);
		finish(in, r, out, &h, 201, 0, 1);
	}
	gw_buf_free(&h);
}

void
gw_response_upsert(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	(void)a;
	const gw_request_shape *s = &in->rq->shape;
	gw_buf h;
	gw_buf_init(&h);
	long n;
	const char *total;
	char planned[32];
	if (!begin(in, r, out, &h, &n, &total, planned, sizeof planned))
	{
		write_content_range(in, r, n, &h);
		/* 201 when a row was new (its conflict columns were not there before) */
		long inserted = r->inserted ? strtol(r->inserted, NULL, 10) : 1;
		int status, is_insert = s->action == GW_ACTION_INSERT;
		if (is_insert) /* POST with Prefer: resolution */
			status = inserted > 0 || s->resolution != GW_RESOLUTION_MERGE ? 201 : 200;
		else /* PUT */
			status = s->return_rep ? (inserted > 0 ? 201 : 200) : 204;
		add_insert_location(in, r, &h);
		finish(in, r, out, &h, status, 0, is_insert);
	}
	gw_buf_free(&h);
}

/* PATCH and DELETE answer alike but for Content-Range (write_content_range). */
static void
change_answer(const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	gw_buf h;
	gw_buf_init(&h);
	long n;
	const char *total;
	char planned[32];
	if (!begin(in, r, out, &h, &n, &total, planned, sizeof planned))
	{
		write_content_range(in, r, n, &h);
		add_insert_location(in, r, &h);
		finish(in, r, out, &h, in->rq->shape.return_rep ? 200 : 204, 0, 0);
	}
	gw_buf_free(&h);
}

void
gw_response_update(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	(void)a;
	change_answer(in, r, out);
}

void
gw_response_delete(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	(void)a;
	change_answer(in, r, out);
}

void
gw_response(gw_arena *a, const gw_response_in *in, const gw_rest_result *r, gw_answer *out)
{
	const gw_request_shape *s = &in->rq->shape;
	switch (s->action)
	{
	case GW_ACTION_READ:
		gw_response_read(a, in, r, out);
		break;
	case GW_ACTION_INSERT:
		if (s->resolution == GW_RESOLUTION_NONE)
			gw_response_create(a, in, r, out);
		else
			gw_response_upsert(a, in, r, out);
		break;
	case GW_ACTION_UPSERT_PUT:
		gw_response_upsert(a, in, r, out);
		break;
	case GW_ACTION_UPDATE:
		gw_response_update(a, in, r, out);
		break;
	case GW_ACTION_DELETE:
		gw_response_delete(a, in, r, out);
		break;
	default:
		gw_response_rpc(a, in, r, out);
		break;
	}
}

void
gw_response_openapi(const gw_schema *schema, gw_answer *out)
{
	if (!schema)
	{
		gw_error e;
		gw_error_set(&e, 503, "PGRST002",
		             "Could not query the database for the schema cache. Retrying.", NULL, NULL);
		error_answer(&e, NULL, out);
		return;
	}
	gw_buf_reset(&out->own);
	gw_openapi_render(schema, &out->own);
	out->status = 200;
	out->content_type = "application/openapi+json; charset=utf-8";
	out->body = out->own.data;
	out->body_len = out->own.len;
}
