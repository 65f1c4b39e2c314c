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

typedef struct rest_call
{
	gw_req *req;
	gw_auth auth;
	gw_plan plan;
	gw_buf settings;
	gw_params settings_params;
	gw_pg_job job;
	gw_request_shape shape;
	long offset; /* first row of the page, for Content-Range */
	int want_count;
	int tx_rollback; /* end the transaction with ROLLBACK */
	const char *timezone; /* Prefer: timezone=, a name of pg_timezone_names */
	char prefer_applied[256];
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

/* The output a media range names, or -1. */
static int
media_output(const char *p, size_t n)
{
#define IS(s) (n == strlen(s) && !strncasecmp(p, s, n))
	if (IS("application/vnd.pgrst.object+json") || IS("application/vnd.pgrst.object"))
		return GW_OUT_SINGLE;
	if (IS("text/csv"))
		return GW_OUT_CSV;
	if (IS("application/json") || IS("*/*") || IS("application/*") ||
	    IS("application/vnd.pgrst.array+json"))
		return GW_OUT_JSON;
#undef IS
	return -1;
}

/* Accept negotiation: the acceptable media range with the highest quality
 * (q=), the first of equals; -1 when nothing acceptable (406 PGRST107). */
static int
negotiate(const char *accept)
{
	if (!accept || !*accept)
		return GW_OUT_JSON;
	int best = -1;
	double best_q = 0;
	const char *p = accept;
	while (*p)
	{
		while (*p == ' ' || *p == ',')
			p++;
		if (!*p)
			break;
		const char *e = p;
		while (*e && *e != ',' && *e != ';')
			e++;
		const char *t = e;
		while (t > p && t[-1] == ' ')
			t--;
		int out = media_output(p, (size_t)(t - p));
		double q = 1;
		while (*e == ';')
		{
			e++;
			while (*e == ' ')
				e++;
			if ((e[0] == 'q' || e[0] == 'Q') && e[1] == '=')
				q = strtod(e + 2, NULL);
			while (*e && *e != ',' && *e != ';')
				e++;
		}
		if (out >= 0 && q > 0 && q > best_q)
		{
			best = out;
			best_q = q;
		}
		while (*e && *e != ',')
			e++;
		p = e;
	}
	return best;
}

/* The preferences of every Prefer header as PostgREST reads them: tokens split
 * at commas and trimmed, the first of each kind wins, anything else is invalid
 * (an error only with handling=strict). The token of each kind is kept so that
 * Preference-Applied can echo what was honoured. */
typedef struct prefs
{
	const char *ret, *count, *resolution, *params, *missing, *handling, *tx;
	char max_affected[32];
	long max_affected_n;
	int max_affected_ok;
	const char *timezone; /* the first timezone= token (with its prefix) */
	int timezone_seen, timezone_ok;
	gw_buf invalid;
} prefs;

static const char *const pref_tokens[] = {
    "return=representation", "return=minimal",   "return=headers-only",
    "count=exact",           "count=planned",    "count=estimated",
    "resolution=merge-duplicates", "resolution=ignore-duplicates",
    "params=single-object",  "tx=commit",        "tx=rollback",
    "missing=default",       "missing=null",     "handling=strict",
    "handling=lenient",
};

static void
pref_token(prefs *p, const char *t, size_t n, gw_arena *a, const gw_schema *schema)
{
	if (!n)
		return;
	if (n >= 9 && !strncmp(t, "timezone=", 9))
	{
		/* PostgREST: the first one counts, and every timezone= token is
		 * invalid unless that first one names a zone of pg_timezone_names */
		if (!p->timezone_seen)
		{
			p->timezone_seen = 1;
			char *tok = gw_arena_strndup(a, t, n);
			p->timezone_ok = schema && gw_schema_timezone_valid(schema, tok + 9);
			if (p->timezone_ok)
				p->timezone = tok;
		}
		if (p->timezone_ok)
			return;
	}
	const char *tok = NULL;
	for (size_t i = 0; i < sizeof pref_tokens / sizeof *pref_tokens; i++)
		if (strlen(pref_tokens[i]) == n && !strncmp(pref_tokens[i], t, n))
			tok = pref_tokens[i];
	if (tok)
	{
		const char **slot = !strncmp(tok, "return=", 7)       ? &p->ret
		                    : !strncmp(tok, "count=", 6)      ? &p->count
		                    : !strncmp(tok, "resolution=", 11) ? &p->resolution
		                    : !strncmp(tok, "params=", 7)     ? &p->params
		                    : !strncmp(tok, "tx=", 3)         ? &p->tx
		                    : !strncmp(tok, "missing=", 8)    ? &p->missing
		                                                      : &p->handling;
		if (!*slot)
			*slot = tok;
		return;
	}
	if (n > 13 && !strncmp(t, "max-affected=", 13))
	{
		/* PostgREST: never invalid, applied when it reads as a 64-bit integer */
		if (!p->max_affected_ok && !p->max_affected[0])
		{
			char *num = gw_arena_strndup(a, t + 13, n - 13), *end;
			errno = 0;
			long v = strtol(num, &end, 10);
			if (!*end && errno == 0 && *num && *num != '+' && *num != ' ')
			{
				p->max_affected_ok = 1;
				p->max_affected_n = v;
				snprintf(p->max_affected, sizeof p->max_affected, "max-affected=%ld", v);
			}
		}
		return;
	}
	if (p->invalid.len)
		gw_buf_puts(&p->invalid, ", ");
	gw_buf_append(&p->invalid, t, n);
}

static void
parse_prefer_headers(gw_req *req, prefs *p, const gw_schema *schema)
{
	for (int i = 0; i < req->nheaders; i++)
	{
		if (strcmp(req->headers[i].name, "prefer"))
			continue;
		const char *h = req->headers[i].value;
		while (*h)
		{
			const char *e = strchr(h, ',');
			if (!e)
				e = h + strlen(h);
			const char *s = h, *t = e;
			while (s < t && (*s == ' ' || *s == '\t'))
				s++;
			while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
				t--;
			pref_token(p, s, (size_t)(t - s), &req->arena, schema);
			h = *e ? e + 1 : e;
		}
	}
}

/* Applies the preferences to the request and builds Preference-Applied with
 * what PostgREST v12 lists for the action, in its order. Returns -1 after
 * answering 400 PGRST122 under handling=strict. */
static int
apply_prefer(rest_call *rc)
{
	gw_req *req = rc->req;
	gw_request_shape *s = &rc->shape;
	prefs p;
	memset(&p, 0, sizeof p);
	gw_buf_init(&p.invalid);
	parse_prefer_headers(req, &p, gw_snapshot_schema(req->snapshot));
	int strict = p.handling && !strcmp(p.handling, "handling=strict");
	if (strict && p.invalid.len)
	{
		char details[sizeof ((gw_error *)0)->details];
		snprintf(details, sizeof details, "Invalid preferences: %s", p.invalid.data);
		gw_error e;
		gw_error_set(&e, 400, "PGRST122", "Invalid preferences given with handling=strict",
		             details, NULL);
		gw_respond_error(req, &e, NULL);
		gw_buf_free(&p.invalid);
		return -1;
	}
	gw_buf_free(&p.invalid);
	if (p.ret)
	{
		s->return_rep = !strcmp(p.ret, "return=representation");
		s->headers_only = !strcmp(p.ret, "return=headers-only");
	}
	if (p.count)
		s->count = !strcmp(p.count, "count=planned") ? GW_COUNT_PLANNED
		                                              : GW_COUNT_EXACT; /* estimated: exact, no
		                                                                   db-max-rows here */
	if (p.resolution)
		s->resolution = !strcmp(p.resolution, "resolution=merge-duplicates") ? GW_RESOLUTION_MERGE
		                                                                      : GW_RESOLUTION_IGNORE;
	if (p.params)
		s->single_object = 1;
	if (p.missing)
		s->missing_default = !strcmp(p.missing, "missing=default");
	/* tx= only counts when the setting allows an override, as db-tx-end does */
	const char *tx = gw_cfg.tx_override ? p.tx : NULL;
	rc->tx_rollback = tx ? !strcmp(tx, "tx=rollback") : gw_cfg.tx_rollback;
	rc->timezone = p.timezone ? p.timezone + 9 : NULL;
	/* max-affected counts the rows a PATCH or DELETE touches and those a
	 * function returns (PGRST128 when it cannot return a set) */
	int mutate_many = s->action == GW_ACTION_UPDATE || s->action == GW_ACTION_DELETE ||
	                  s->action == GW_ACTION_RPC;
	const char *max_affected = NULL;
	if (strict && p.max_affected_ok && mutate_many)
	{
		s->max_affected_set = 1;
		s->max_affected = p.max_affected_n;
		max_affected = p.max_affected;
	}
	/* Preference-Applied: resolution, missing, return, params, count, tx,
	 * handling, timezone, max-affected; each action lists only what it honours */
	const char *resolution = NULL, *missing = NULL, *ret = NULL, *params = NULL;
	switch (s->action)
	{
	case GW_ACTION_INSERT:
	{
		gw_schema *schema = gw_snapshot_schema(req->snapshot);
		const gw_relation *rel = schema ? gw_schema_relation(schema, s->target) : NULL;
		if ((rel && rel->npk > 0) || strstr(req->query, "on_conflict="))
			resolution = p.resolution;
		missing = p.missing;
		ret = p.ret;
		break;
	}
	case GW_ACTION_UPDATE:
		missing = p.missing;
		ret = p.ret;
		break;
	case GW_ACTION_UPSERT_PUT:
	case GW_ACTION_DELETE:
		ret = p.ret;
		break;
	case GW_ACTION_RPC:
		params = p.params;
		break;
	}
	const char *list[] = {resolution, missing, ret,        params,
	                      p.count,    tx,      p.handling, p.timezone, max_affected};
	gw_buf applied;
	gw_buf_init(&applied);
	for (size_t i = 0; i < sizeof list / sizeof *list; i++)
	{
		if (!list[i])
			continue;
		if (applied.len)
			gw_buf_puts(&applied, ", ");
		gw_buf_puts(&applied, list[i]);
	}
	snprintf(rc->prefer_applied, sizeof rc->prefer_applied, "%s", applied.data ? applied.data : "");
	gw_buf_free(&applied);
	return 0;
}

/* Range: [items=]a-b or a- ; 0 when absent, -1 when malformed. */
static int
parse_range(const char *h, long *offset, long *limit)
{
	*offset = -1;
	*limit = -1;
	if (!h)
		return 0;
	if (!strncmp(h, "items=", 6))
		h += 6;
	char *end;
	long a = strtol(h, &end, 10);
	if (end == h || *end != '-' || a < 0)
		return -1;
	h = end + 1;
	if (!*h)
	{
		*offset = a;
		return 0;
	}
	long b = strtol(h, &end, 10);
	if (end == h || *end || b < a)
		return -1;
	*offset = a;
	*limit = b - a + 1;
	return 0;
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
	const gw_request_shape *s = &rc->shape;
	gw_buf h;
	gw_buf_init(&h);
	if (rc->prefer_applied[0])
		gw_buf_printf(&h, "Preference-Applied: %s\r\n", rc->prefer_applied);
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
		long lower = rc->offset;
		if (total)
		{
			long t = strtol(total, NULL, 10);
			if (lower > 0 && lower >= t && n == 0 && (lower > t || t > 0))
			{
				char details[128];
				snprintf(details, sizeof details,
				         "An offset of %ld was requested, but there are only %ld rows.", lower, t);
				gw_error e;
				gw_error_set(&e, 416, "PGRST103", "Requested range not satisfiable", details, NULL);
				gw_buf_printf(&h, "Content-Range: */%ld\r\n", t);
				gw_respond_error(req, &e, h.data);
				gw_buf_free(&h);
				return;
			}
			if (n < t)
				status = 206;
		}
		gw_buf_puts(&h, "Content-Range: ");
		if (n > 0)
		{
			gw_buf_put_long(&h, lower);
			gw_buf_putc(&h, '-');
			gw_buf_put_long(&h, lower + n - 1);
		}
		else
			gw_buf_putc(&h, '*');
		gw_buf_putc(&h, '/');
		gw_buf_puts(&h, total ? total : "*");
		gw_buf_puts(&h, "\r\n");
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

/* key=value&... (percent-encoded, + for space) as a JSON object of strings; a
 * repeated key gives an array of its strings (a variadic parameter's values). */
static char *
form_to_json(gw_req *req, const char *body, size_t len)
{
	json_t *o = json_object();
	const char *p = body, *end = body + len;
	while (p < end)
	{
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		if (pe > p)
		{
			char *k = gw_url_decode(&req->arena, p, (size_t)((eq ? eq : pe) - p), 1);
			char *v = eq ? gw_url_decode(&req->arena, eq + 1, (size_t)(pe - eq - 1), 1) : "";
			json_t *jv = k && v ? json_string(v) : NULL;
			if (!jv)
			{
				json_decref(o);
				return NULL;
			}
			json_t *prev = json_object_get(o, k);
			if (!prev)
				json_object_set_new(o, k, jv);
			else if (json_is_array(prev))
				json_array_append_new(prev, jv);
			else
			{
				json_t *arr = json_array();
				json_array_append(arr, prev);
				json_array_append_new(arr, jv);
				json_object_set_new(o, k, arr);
			}
		}
		p = amp ? amp + 1 : end;
	}
	char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return NULL;
	char *out = gw_arena_strdup(&req->arena, text);
	free(text);
	return out;
}

static int
body_is_json(const gw_req *req)
{
	const char *ct = gw_req_header(req, "content-type");
	return !ct || !*ct || !strncasecmp(ct, "application/json", 16) ||
	       !strncasecmp(ct, "application/vnd.pgrst", 21);
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
	const char *profile =
	    gw_req_header(req, req->method == HTTP_GET || req->method == HTTP_HEAD ? "accept-profile"
	                                                                           : "content-profile");
	if (profile && strcmp(profile, "api"))
	{
		gw_error_set(&e, 406, "PGRST106", "The schema must be one of the following: api", NULL,
		             NULL);
		gw_respond_error(req, &e, NULL);
		return;
	}
	gw_request_shape *s = &rc->shape;
	s->target = name;
	switch (req->method)
	{
	case HTTP_GET:
	case HTTP_HEAD:
		s->action = is_rpc ? GW_ACTION_RPC : GW_ACTION_READ;
		s->rpc_get = is_rpc;
		break;
	case HTTP_POST:
		s->action = is_rpc ? GW_ACTION_RPC : GW_ACTION_INSERT;
		break;
	case HTTP_PATCH:
		s->action = GW_ACTION_UPDATE;
		break;
	case HTTP_DELETE:
		s->action = GW_ACTION_DELETE;
		break;
	case HTTP_PUT:
		s->action = GW_ACTION_UPSERT_PUT;
		break;
	case HTTP_OPTIONS:
		gw_respond(req, 200, NULL,
		           is_rpc ? "Allow: OPTIONS,GET,HEAD,POST\r\n"
		                  : "Allow: OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE\r\n",
		           NULL, 0);
		return;
	default:
		break;
	}
	if (is_rpc && s->action != GW_ACTION_RPC)
	{
		char msg[96];
		snprintf(msg, sizeof msg, "Cannot use the %.40s method on RPC", req->method_name);
		gw_respond_simple_error(req, 405, "PGRST101", msg);
		return;
	}
	if (req->method != HTTP_GET && req->method != HTTP_HEAD && req->method != HTTP_POST &&
	    req->method != HTTP_PATCH && req->method != HTTP_DELETE && req->method != HTTP_PUT)
	{
		char msg[96];
		snprintf(msg, sizeof msg, "Unsupported HTTP method: %.40s", req->method_name);
		gw_respond_simple_error(req, 405, "PGRST117", msg);
		return;
	}
	int out = negotiate(gw_req_header(req, "accept"));
	if (out < 0)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "None of these media types are available: %.200s",
		         gw_req_header(req, "accept"));
		gw_respond_simple_error(req, 406, "PGRST107", msg);
		return;
	}
	s->output = out;
	if (apply_prefer(rc))
		return;
	s->aggregates = gw_cfg.aggregates;
	if (req->method == HTTP_GET || req->method == HTTP_HEAD)
	{
		if (parse_range(gw_req_header(req, "range"), &s->range_offset, &s->range_limit))
		{
			gw_respond_simple_error(req, 416, "PGRST103", "Requested range not satisfiable");
			return;
		}
	}
	else
	{
		s->range_offset = -1;
		s->range_limit = -1;
	}
	gw_query *q = gw_arena_alloc(&req->arena, sizeof *q);
	gw_parse_error perr;
	if (gw_query_parse(&req->arena, req->query, strlen(req->query), q, &perr))
	{
		gw_error_set(&e, 400, "PGRST100", perr.message, perr.details, NULL);
		gw_respond_error(req, &e, NULL);
		return;
	}
	s->query = q;
	s->body = req->body.data ? req->body.data : "";
	s->body_len = req->body.len;
	s->body_is_json = body_is_json(req);
	const char *ct = gw_req_header(req, "content-type");
	s->content_type = ct;
	if (ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33) &&
	    s->action != GW_ACTION_DELETE)
	{
		/* a form is one object of strings, as PostgREST reads it */
		char *json = form_to_json(req, s->body, s->body_len);
		if (!json)
		{
			gw_respond_simple_error(req, 400, "PGRST102", "Malformed form body");
			return;
		}
		s->body = json;
		s->body_len = strlen(json);
		s->body_is_json = 1;
	}
	if (!is_rpc &&
	    (s->action == GW_ACTION_INSERT || s->action == GW_ACTION_UPDATE ||
	     s->action == GW_ACTION_UPSERT_PUT) &&
	    !s->body_is_json)
	{
		gw_respond_simple_error(req, 415, "PGRST107", "Content-Type not acceptable");
		return;
	}
	int failed = gw_build(&req->arena, schema, s, &rc->plan, &e);
	if (failed)
	{
		gw_respond_error(req, &e, NULL);
		return;
	}
	rc->offset = (q->scopes[0].offset > 0 ? q->scopes[0].offset : 0) +
	             (s->range_offset > 0 ? s->range_offset : 0);
	gw_auth_settings_sql(req, &rc->auth, &rc->settings, &rc->settings_params);
	if (rc->timezone)
		gw_buf_printf(&rc->settings, ", pg_catalog.set_config('timezone', $%d, true)",
		              gw_params_add(&rc->settings_params, rc->timezone));
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
	rc->job.rollback = rc->tx_rollback;
	rc->job.done = job_done;
	rc->job.data = rc;
	gw_pool_submit(&rc->job);
}
