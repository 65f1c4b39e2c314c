/* PostgREST request reading (see request.h): Accept negotiation, the Prefer
 * tokens and Preference-Applied, the Range header, the query grammar and form
 * bodies, in the order PostgREST checks them, so that the first error answered is
 * PostgREST's. */
#include "request.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"

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
	char max_affected[48]; /* "max-affected=" and a 64-bit integer */
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
parse_prefer_headers(const gw_rest_input *in, gw_arena *a, prefs *p, const gw_schema *schema)
{
	for (int i = 0; i < in->nprefer; i++)
	{
		const char *h = in->prefer[i];
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
			pref_token(p, s, (size_t)(t - s), a, schema);
			h = *e ? e + 1 : e;
		}
	}
}


/* Applies the preferences to the request and builds Preference-Applied with
 * what PostgREST v12 lists for the action, in its order. Returns -1 with 400
 * PGRST122 in e under handling=strict. */
static int
apply_prefer(gw_arena *a, const gw_schema *schema, const gw_rest_input *in, gw_rest_request *out,
             gw_error *e)
{
	gw_request_shape *s = &out->shape;
	prefs p;
	memset(&p, 0, sizeof p);
	gw_buf_init(&p.invalid);
	parse_prefer_headers(in, a, &p, schema);
	int strict = p.handling && !strcmp(p.handling, "handling=strict");
	if (strict && p.invalid.len)
	{
		char details[sizeof e->details];
		snprintf(details, sizeof details, "Invalid preferences: %s", p.invalid.data);
		gw_error_set(e, 400, "PGRST122", "Invalid preferences given with handling=strict",
		             details, NULL);
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
	const char *tx = in->tx_override ? p.tx : NULL;
	out->tx_rollback = tx ? !strcmp(tx, "tx=rollback") : in->tx_rollback;
	out->timezone = p.timezone ? p.timezone + 9 : NULL;
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
		const gw_relation *rel = schema ? gw_schema_relation(schema, s->target) : NULL;
		if ((rel && rel->npk > 0) || strstr(in->query, "on_conflict="))
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
	snprintf(out->prefer_applied, sizeof out->prefer_applied, "%s",
	         applied.data ? applied.data : "");
	gw_buf_free(&applied);
	return 0;
}

/* Range: [items=]a-b or a- ; 0 when absent, -1 when malformed or when its first
 * row is past the largest bigint (details say which). A last row past it means
 * "to the end": no row lies beyond. Checked arithmetic: the header is anyone's. */
static int
parse_range(const char *h, long *offset, long *limit, char *details, size_t n)
{
	*offset = -1;
	*limit = -1;
	*details = '\0';
	if (!h)
		return 0;
	if (!strncmp(h, "items=", 6))
		h += 6;
	char *end;
	errno = 0;
	long a = strtol(h, &end, 10);
	if (end == h || *end != '-' || a < 0)
		return -1;
	if (errno == ERANGE)
	{
		snprintf(details, n, "The range starts past the last possible row (%ld).", LONG_MAX);
		return -1;
	}
	h = end + 1;
	if (!*h)
	{
		*offset = a;
		return 0;
	}
	errno = 0;
	long b = strtol(h, &end, 10); /* past LONG_MAX: LONG_MAX, the last possible row */
	if (end == h || *end || b < a)
		return -1;
	*offset = a;
	/* b - a cannot overflow (0 <= a <= b); the + 1 can, for 0-LONG_MAX: every row */
	if (__builtin_add_overflow(b - a, 1, limit))
		*limit = -1;
	return 0;
}


/* key=value&... (percent-encoded, + for space) as a JSON object of strings; a
 * repeated key gives an array of its strings (a variadic parameter's values). */
static char *
form_to_json(gw_arena *a, const char *body, size_t len)
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
			char *k = gw_url_decode(a, p, (size_t)((eq ? eq : pe) - p), 1);
			char *v = eq ? gw_url_decode(a, eq + 1, (size_t)(pe - eq - 1), 1) : "";
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
	char *out = gw_arena_strdup(a, text);
	free(text);
	return out;
}

static int
body_is_json(const char *ct)
{
	return !ct || !*ct || !strncasecmp(ct, "application/json", 16) ||
	       !strncasecmp(ct, "application/vnd.pgrst", 21);
}


int
gw_rest_request_parse(gw_arena *a, const gw_schema *schema, const gw_rest_input *in,
                      gw_rest_request *out, gw_error *e)
{
	memset(out, 0, sizeof *out);
	out->query = in->query;
	out->query_len = in->query_len;
	gw_request_shape *s = &out->shape;
	int reading = in->method == HTTP_GET || in->method == HTTP_HEAD;
	const char *profile = reading ? in->accept_profile : in->content_profile;
	if (profile && strcmp(profile, "api"))
	{
		gw_error_set(e, 406, "PGRST106", "The schema must be one of the following: api", NULL,
		             NULL);
		return -1;
	}
	s->target = in->target;
	switch (in->method)
	{
	case HTTP_GET:
	case HTTP_HEAD:
		s->action = in->is_rpc ? GW_ACTION_RPC : GW_ACTION_READ;
		s->rpc_get = in->is_rpc;
		break;
	case HTTP_POST:
		s->action = in->is_rpc ? GW_ACTION_RPC : GW_ACTION_INSERT;
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
		out->allow = in->is_rpc ? "Allow: OPTIONS,GET,HEAD,POST\r\n"
		                        : "Allow: OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE\r\n";
		return 0;
	default:
		break;
	}
	const char *method = in->method_name ? in->method_name : "?";
	if (in->is_rpc && s->action != GW_ACTION_RPC)
	{
		char msg[96];
		snprintf(msg, sizeof msg, "Cannot use the %.40s method on RPC", method);
		gw_error_set(e, 405, "PGRST101", msg, NULL, NULL);
		return -1;
	}
	if (!reading && in->method != HTTP_POST && in->method != HTTP_PATCH &&
	    in->method != HTTP_DELETE && in->method != HTTP_PUT)
	{
		char msg[96];
		snprintf(msg, sizeof msg, "Unsupported HTTP method: %.40s", method);
		gw_error_set(e, 405, "PGRST117", msg, NULL, NULL);
		return -1;
	}
	int output = negotiate(in->accept);
	if (output < 0)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "None of these media types are available: %.200s", in->accept);
		gw_error_set(e, 406, "PGRST107", msg, NULL, NULL);
		return -1;
	}
	s->output = output;
	if (apply_prefer(a, schema, in, out, e))
		return -1;
	s->aggregates = in->aggregates;
	if (reading)
	{
		char details[128];
		if (parse_range(in->range, &s->range_offset, &s->range_limit, details, sizeof details))
		{
			gw_error_set(e, 416, "PGRST103", "Requested range not satisfiable",
			             details[0] ? details : NULL, NULL);
			return -1;
		}
	}
	else
	{
		s->range_offset = -1;
		s->range_limit = -1;
	}
	gw_query *q = gw_arena_alloc(a, sizeof *q);
	gw_parse_error perr;
	if (gw_query_parse(a, in->query, in->query_len, q, &perr))
	{
		gw_error_set(e, 400, "PGRST100", perr.message, perr.details, NULL);
		return -1;
	}
	s->query = q;
	s->body = in->body ? in->body : "";
	s->body_len = in->body ? in->body_len : 0;
	s->body_is_json = body_is_json(in->content_type);
	s->content_type = in->content_type;
	if (in->content_type &&
	    !strncasecmp(in->content_type, "application/x-www-form-urlencoded", 33) &&
	    s->action != GW_ACTION_DELETE)
	{
		/* a form is one object of strings, as PostgREST reads it */
		char *json = form_to_json(a, s->body, s->body_len);
		if (!json)
		{
			gw_error_set(e, 400, "PGRST102", "Malformed form body", NULL, NULL);
			return -1;
		}
		s->body = json;
		s->body_len = strlen(json);
		s->body_is_json = 1;
	}
	if (!in->is_rpc &&
	    (s->action == GW_ACTION_INSERT || s->action == GW_ACTION_UPDATE ||
	     s->action == GW_ACTION_UPSERT_PUT) &&
	    !s->body_is_json)
	{
		gw_error_set(e, 415, "PGRST107", "Content-Type not acceptable", NULL, NULL);
		return -1;
	}
	long limit;
	return gw_page_range(s, &limit, &out->page_offset, e);
}

int
gw_rest_content_range(const gw_rest_request *rq, long n, const char *total, gw_buf *h,
                      int *status, gw_error *e)
{
	long lower = rq->page_offset;
	if (total)
	{
		long t = strtol(total, NULL, 10);
		if (lower > 0 && lower >= t && n == 0 && (lower > t || t > 0))
		{
			char details[128];
			snprintf(details, sizeof details,
			         "An offset of %ld was requested, but there are only %ld rows.", lower, t);
			gw_error_set(e, 416, "PGRST103", "Requested range not satisfiable", details, NULL);
			gw_buf_printf(h, "Content-Range: */%ld\r\n", t);
			return -1;
		}
		if (n < t)
			*status = 206;
	}
	gw_buf_puts(h, "Content-Range: ");
	if (n > 0)
	{
		gw_buf_put_long(h, lower);
		gw_buf_putc(h, '-');
		long last; /* n rows from lower: no row lies past LONG_MAX */
		gw_buf_put_long(h, __builtin_add_overflow(lower, n - 1, &last) ? LONG_MAX : last);
	}
	else
		gw_buf_putc(h, '*');
	gw_buf_putc(h, '/');
	gw_buf_puts(h, total ? total : "*");
	gw_buf_puts(h, "\r\n");
	return 0;
}
