/* The PostgREST handler (see rest.h). It owns one rest_call per request: the
 * plan, the settings statement, the pool job and a reference on the schema
 * cache used to build the statement. */
#include "worker.h"
#include "rest.h"
#include "snapshot.h"
#include "sql_build.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "pool.h"
#include "request.h"

typedef struct rest_call
{
	gw_req *req;
	gw_auth auth;
	gw_plan plan;
	gw_buf settings;
	gw_params settings_params;
	gw_pg_job job;
	gw_rest_request rq; /* the request as the dialect read it (request.h) */
} rest_call;

static gw_spare spare_calls; /* finished calls, reused */

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

static void
call_free(gw_req *req, int ok)
{
	(void)ok;
	rest_call *rc = req->handler;
	if (!rc)
		return;
	gw_plan_free(&rc->plan);
	gw_buf_free(&rc->settings);
	gw_params_free(&rc->settings_params);
	gw_pool_job_clear(&rc->job);
	gw_spare_free(&spare_calls, rc);
	req->handler = NULL;
}

static void
respond_pg_error(rest_call *rc, PGresult *r)
{
	gw_error e;
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	/* A count check in the statement (sql_build.c) fails a cast of
	 * '<marker>:<count>' on purpose: 22P02 carrying the marker and the count. */
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
		gw_respond_error(rc->req, &e, NULL);
		return;
	}
	gw_error_from_pg(st, msg ? msg : PQresultErrorMessage(r),
	                 PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL),
	                 PQresultErrorField(r, PG_DIAG_MESSAGE_HINT), rc->auth.anonymous, &e);
	if (e.status >= 500 && e.status != 503)
	{
		gw_buf path; /* a JWT pasted into a path stays out of the log too */
		gw_buf_init(&path);
		gw_log_redacted_target(&path, rc->req->path, "");
		wk_log(WK_WARN, "%s %s: %s %s", rc->req->method_name, path.data, e.code, e.message);
		gw_buf_free(&path);
	}
	gw_respond_error(rc->req, &e, e.status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
}

/* response.headers (a JSON array of one-key objects) and response.status, as
 * PostgREST honours them; a header line never carries CR or LF. */
static void
apply_response_gucs(gw_buf *h, int *status, const char *headers_json, const char *status_text,
                    int *own_type)
{
	if (status_text)
	{
		char *end;
		long v = strtol(status_text, &end, 10);
		if (!*end && v >= 100 && v <= 599)
			*status = (int)v;
		else
			wk_log(WK_WARN, "response.status %.40s is not an HTTP status; ignored", status_text);
	}
	if (!headers_json)
		return;
	json_error_t jerr;
	json_t *arr = json_loads(headers_json, 0, &jerr);
	size_t i;
	json_t *obj;
	if (!arr || !json_is_array(arr))
	{
		wk_log(WK_WARN, "response.headers is not a JSON array of objects; ignored");
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
add_content_location(gw_buf *h, gw_arena *a, const char *name, const char *query)
{
	size_t n = 0, cap = 8;
	query_pair *pairs = gw_arena_alloc(a, cap * sizeof *pairs);
	for (const char *p = query; *p;)
	{
		size_t len = strcspn(p, "&;");
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
		if (*p)
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

/* Location: /rel?pk=eq.value&... from the JSON array of key values. */
static void
add_location(gw_buf *h, const gw_schema *schema, const char *rel, const char *values_json)
{
	const gw_relation *r = schema ? gw_schema_relation(schema, rel) : NULL;
	json_error_t jerr;
	json_t *vals = json_loads(values_json, 0, &jerr);
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

static void
job_done(gw_pg_job *job)
{
	rest_call *rc = job->data;
	gw_req *req = rc->req;
	if (!gw_req_alive(req))
	{
		gw_respond(req, 499, NULL, NULL, NULL, 0); /* counted, nobody listens */
		return;
	}
	if (job->failed)
	{
		gw_error e;
		gw_error_from_job(job, rc->auth.anonymous, &e);
		gw_respond_error(req, &e, NULL);
		return;
	}
	if (job->error)
	{
		respond_pg_error(rc, job->error);
		return;
	}
	PGresult *r = job->results[1];
	if (!r || PQntuples(r) != 1)
	{
		gw_respond_simple_error(req, 500, "PGRST000", "The statement returned no result row");
		return;
	}
	const char *total = PQgetisnull(r, 0, 0) ? NULL : PQgetvalue(r, 0, 0);
	char planned[32];
	if (rc->plan.count_sql.len && job->results[2] && PQntuples(job->results[2]) == 1 &&
	    planned_rows(PQgetvalue(job->results[2], 0, 0), planned, sizeof planned))
		total = planned;
	long n = strtol(PQgetvalue(r, 0, 1), NULL, 10);
	const char *body = PQgetvalue(r, 0, 2);
	size_t body_len = (size_t)PQgetlength(r, 0, 2);
	const gw_request_shape *s = &rc->rq.shape;
	gw_buf h;
	gw_buf_init(&h);
	if (rc->rq.prefer_applied[0])
		gw_buf_printf(&h, "Preference-Applied: %s\r\n", rc->rq.prefer_applied);
	int status = 200;
	int single = s->output == GW_OUT_SINGLE;
	if (single && n != 1 && !(rc->plan.rpc_scalar || rc->plan.rpc_single))
	{
		char details[64];
		snprintf(details, sizeof details, "The result contains %ld rows", n);
		gw_error e;
		gw_error_set(&e, 406, "PGRST116", "Cannot coerce the result to a single JSON object",
		             details, NULL);
		gw_respond_error(req, &e, NULL);
		gw_buf_free(&h);
		return;
	}
	if (s->action == GW_ACTION_READ)
		add_content_location(&h, &req->arena, s->target, req->query);
	if (s->action == GW_ACTION_READ || s->action == GW_ACTION_RPC)
	{
		gw_error e;
		if (gw_rest_content_range(&rc->rq, n, total, &h, &status, &e))
		{
			gw_respond_error(req, &e, h.data);
			gw_buf_free(&h);
			return;
		}
		if (s->action == GW_ACTION_RPC && !rc->plan.returns_body)
			status = 204;
	}
	else
	{
		/* PostgREST v12: an update gives the rows' range, an insert or a delete
		 * only the total, star slash n, a PUT none */
		const char *count = s->count ? (n > 0 ? PQgetvalue(r, 0, 1) : "0") : "*";
		if (n > 0 && s->action == GW_ACTION_UPDATE)
			gw_buf_printf(&h, "Content-Range: 0-%ld/%s\r\n", n - 1, count);
		else if (s->action != GW_ACTION_UPSERT_PUT)
			gw_buf_printf(&h, "Content-Range: */%s\r\n", count);
		/* an upsert: 201 when a row was new, else 200 (PUT: 204 when minimal) */
		int inserted_col = PQfnumber(r, "pgrst_inserted");
		long inserted = inserted_col >= 0 ? strtol(PQgetvalue(r, 0, inserted_col), NULL, 10) : 1;
		if (s->action == GW_ACTION_INSERT)
			status = inserted > 0 || s->resolution != GW_RESOLUTION_MERGE ? 201 : 200;
		else if (s->action == GW_ACTION_UPSERT_PUT)
			status = s->return_rep ? (inserted > 0 ? 201 : 200) : 204;
		else
			status = s->return_rep ? 200 : 204;
		if (rc->plan.insert_location && PQnfields(r) > 3 && !PQgetisnull(r, 0, 3))
			add_location(&h, gw_snapshot_schema(rc->req->snapshot), s->target, PQgetvalue(r, 0, 3));
	}
	int own_type = 0;
	if (PQnfields(r) > 5)
		apply_response_gucs(&h, &status, PQgetisnull(r, 0, 4) ? NULL : PQgetvalue(r, 0, 4),
		                    PQgetisnull(r, 0, 5) ? NULL : PQgetvalue(r, 0, 5), &own_type);
	if (status == 204 || (!rc->plan.returns_body && s->action != GW_ACTION_READ))
	{
		/* an upsert that only updated answers 200 without a body, as PostgREST */
		int empty = status == 200 && !rc->plan.returns_body && s->action != GW_ACTION_INSERT;
		gw_respond(req, empty ? 204 : status, NULL, h.data, NULL, 0);
	}
	else
		gw_respond(req, status, own_type ? NULL : content_type(s->output), h.data, body, body_len);
	gw_buf_free(&h);
}

void
gw_rest_handle(gw_req *req, const char *name, int is_rpc)
{
	gw_schema *schema = gw_snapshot_schema(req->snapshot);
	if (!schema)
	{
		gw_respond_simple_error(req, 503, "PGRST002",
		                        "Could not query the database for the schema cache. Retrying.");
		return;
	}
	rest_call *rc = gw_spare_calloc(&spare_calls, sizeof *rc);
	if (!rc)
		abort();
	rc->req = req;
	gw_plan_init(&rc->plan);
	gw_buf_init(&rc->settings);
	gw_params_init(&rc->settings_params);
	req->handler = rc;
	req->on_done = call_free;

	gw_error e;
	char www[256];
	if (gw_auth_request(req, &rc->auth, &e, www, sizeof www))
	{
		gw_respond_error(req, &e, www[0] ? www : NULL);
		return;
	}
	const char **prefer = gw_arena_alloc(&req->arena, sizeof *prefer * (size_t)(req->nheaders + 1));
	int nprefer = 0;
	for (int i = 0; i < req->nheaders; i++)
		if (!strcmp(req->headers[i].name, "prefer"))
			prefer[nprefer++] = req->headers[i].value;
	gw_rest_input in = {.method = req->method,
	                    .method_name = req->method_name,
	                    .is_rpc = is_rpc,
	                    .target = name,
	                    .query = req->query,
	                    .query_len = strlen(req->query),
	                    .accept = gw_req_header(req, "accept"),
	                    .range = gw_req_header(req, "range"),
	                    .content_type = gw_req_header(req, "content-type"),
	                    .accept_profile = gw_req_header(req, "accept-profile"),
	                    .content_profile = gw_req_header(req, "content-profile"),
	                    .prefer = prefer,
	                    .nprefer = nprefer,
	                    .body = req->body.data,
	                    .body_len = req->body.len,
	                    .tx_override = gw_cfg.tx_override,
	                    .tx_rollback = gw_cfg.tx_rollback,
	                    .aggregates = gw_cfg.aggregates};
	if (gw_rest_request_parse(&req->arena, schema, &in, &rc->rq, &e))
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	if (rc->rq.allow)
	{
		gw_respond(req, 200, NULL, rc->rq.allow, NULL, 0);
		return;
	}
	gw_request_shape *s = &rc->rq.shape;
	int failed = gw_build(&req->arena, schema, s, &rc->plan, &e);
	if (failed)
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	gw_auth_settings_sql(req, &rc->auth, &rc->settings, &rc->settings_params);
	if (rc->rq.timezone)
		gw_buf_printf(&rc->settings, ", pg_catalog.set_config('timezone', $%d, true)",
		              gw_params_add(&rc->settings_params, rc->rq.timezone));
	rc->job.nstmts = 2;
	rc->job.stmts[0].sql = rc->settings.data;
	rc->job.stmts[0].params = &rc->settings_params;
	rc->job.stmts[1].sql = rc->plan.sql.data;
	rc->job.stmts[1].params = &rc->plan.params;
	if (rc->plan.count_sql.len)
	{
		rc->job.nstmts = 3;
		rc->job.stmts[2].sql = rc->plan.count_sql.data;
		rc->job.stmts[2].params = &rc->plan.count_params;
	}
	rc->job.read_only = rc->plan.read_only;
	rc->job.rollback = rc->rq.tx_rollback;
	rc->job.done = job_done;
	rc->job.data = rc;
	gw_pool_submit(&rc->job);
}
