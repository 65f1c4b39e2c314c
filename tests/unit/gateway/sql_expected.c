/* The SQL builder's expected-output runner (as pgvector compares test/expected files):
 * reads a schema cache from catalog rows (sql/schema.rows: one row a line, fields
 * separated by tabs, as the schema queries return them) and a file of HTTP
 * requests (sql/<name>.http, separated by lines starting with "###"), and prints,
 * for each request, the request and what the gateway would send to PostgreSQL:
 * the statement exactly as built, its parameters, the count statement, the plan's
 * flags; or the error it would answer with. gateway/gateway.mk diffs the output
 * with expected/<name>.out.
 *   sql_expected schema.rows requests.http
 * A first line "#! tx-override aggregates" turns those settings on for the file,
 * as PGPOD_GATEWAY_TX_END=*-allow-override and PGPOD_GATEWAY_AGGREGATES=on do.
 *
 * The response functions (postgrest/response.h) the same way: a request followed
 * by lines "#> field: value" is given those values as what its transaction
 * returned, and the output is then the whole answer (status, Content-Type, the
 * header lines, the body, and what would be logged) instead of the statement.
 * Fields: total, page_total, body, location, headers (response.headers), status
 * (response.status), inserted, explain (the count=planned EXPLAIN), nrows;
 * failed, timed_out, failure (no answer from the database); sqlstate, message,
 * detail, hint, text (an error from PostgreSQL: text is its whole text, used without a
 * message); anonymous (no token). An absent field
 * is SQL NULL (page_total: 0, nrows: 1); "\r" and "\n" in a body are CR and LF.
 * GET / with result lines answers the OpenAPI document (nrows: 0: without a schema). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw_request.h"
#include "request.h"
#include "response.h"
#include "schema.h"
#include "sql_build.h"

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
	{
		perror(path);
		exit(2);
	}
	size_t cap = 4096, n = 0;
	char *s = malloc(cap);
	for (size_t r; s && (r = fread(s + n, 1, cap - n - 1, f)) > 0;)
	{
		n += r;
		if (n + 1 == cap)
			s = realloc(s, cap *= 2);
	}
	if (!s)
		abort();
	fclose(f);
	s[n] = '\0';
	*len = n;
	return s;
}

static gw_schema *
load_schema(const char *path)
{
	size_t len;
	char *text = slurp(path, &len);
	gw_schema *s = gw_schema_new();
	int lineno = 0;
	for (char *line = text, *next; line; line = next)
	{
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		if (!*line || *line == '#')
			continue;
		if (schema_add_line(s, line))
		{
			fprintf(stderr, "%s:%d: not a catalog row\n", path, lineno);
			exit(2);
		}
	}
	free(text);
	return s;
}

static void
print_params(const char *what, const gw_params *p)
{
	for (int i = 0; i < p->n; i++)
	{
		if (p->values[i])
			printf("%s$%d = '%s'\n", what, i + 1, p->values[i]);
		else
			printf("%s$%d = NULL\n", what, i + 1);
	}
}

/* The "#> field: value" lines of a case: what its transaction returned. */
typedef struct case_result
{
	int given; /* any #> line */
	int anonymous;
	gw_rest_result r;
	char *owned[32];
	int nowned;
} case_result;

static const char *
unescape(case_result *c, const char *v)
{
	char *o = malloc(strlen(v) + 1), *w = o;
	if (!o)
		abort();
	for (const char *p = v; *p; p++)
	{
		if (p[0] == '\\' && (p[1] == 'r' || p[1] == 'n'))
		{
			*w++ = p[1] == 'r' ? '\r' : '\n';
			p++;
		}
		else
			*w++ = *p;
	}
	*w = '\0';
	if (c->nowned < 32)
		c->owned[c->nowned++] = o;
	return o;
}

static void
result_field(case_result *c, const char *line)
{
	const char *colon = strstr(line, ": ");
	if (!colon)
	{
		fprintf(stderr, "not a result line: %s\n", line);
		exit(2);
	}
	size_t kl = (size_t)(colon - line);
	/* only a body holds CR and LF (\r, \n); the other values are used as written */
	const char *v = kl == 4 && !strncmp(line, "body", 4) ? unescape(c, colon + 2) : colon + 2;
	gw_rest_result *r = &c->r;
	c->given = 1;
#define FIELD(name) (kl == strlen(name) && !strncmp(line, name, kl))
	if (FIELD("total"))
		r->total = v;
	else if (FIELD("page_total"))
		r->page_total = v;
	else if (FIELD("body"))
	{
		r->body = v;
		r->body_len = strlen(v);
	}
	else if (FIELD("location"))
		r->location = v;
	else if (FIELD("headers"))
		r->response_headers = v;
	else if (FIELD("status"))
		r->response_status = v;
	else if (FIELD("inserted"))
		r->inserted = v;
	else if (FIELD("explain"))
		r->explain = v;
	else if (FIELD("nrows"))
		r->nrows = atoi(v);
	else if (FIELD("failed"))
		r->failed = atoi(v);
	else if (FIELD("timed_out"))
		r->timed_out = atoi(v);
	else if (FIELD("failure"))
		r->failure = v;
	else if (FIELD("sqlstate"))
		r->error = 1, r->sqlstate = v;
	else if (FIELD("message"))
		r->error = 1, r->message = v;
	else if (FIELD("text"))
		r->error = 1, r->error_text = v;
	else if (FIELD("detail"))
		r->detail = v;
	else if (FIELD("hint"))
		r->hint = v;
	else if (FIELD("anonymous"))
		c->anonymous = atoi(v);
	else
	{
		fprintf(stderr, "unknown result field: %s\n", line);
		exit(2);
	}
#undef FIELD
}

/* The answer as it would go out, CRLF shown as line ends; a warning that names
 * the request shows its method and path (the handler redacts the path). */
static void
print_answer(const gw_answer *a, const char *method, const char *url)
{
	int path_len = (int)strcspn(url, "?");
	printf("--- answer\n%d\n", a->status);
	if (a->content_type)
		printf("Content-Type: %s\n", a->content_type);
	for (size_t i = 0; i < a->headers.len; i++)
		if (a->headers.data[i] != '\r')
			putchar(a->headers.data[i]);
	if (a->body_len)
		printf("\n%.*s\n", (int)a->body_len, a->body);
	for (size_t at = 0; at < a->warnings.len;)
	{
		const char *line = a->warnings.data + at;
		if (a->warn_target)
			printf("--- log: %s %.*s: %s\n", method, path_len, url, line);
		else
			printf("--- log: %s\n", line);
		at += strlen(line) + 1;
	}
}

/* One request (text with \n line ends) in, its outcome out. */
static void
run(const gw_schema *schema, const char *text, int tx_override, int aggregates,
    case_result *res)
{
	/* the head's lines end with CRLF on the wire; the body is sent as it is,
	 * with a Content-Length when the file gives none */
	const char *blank = strstr(text, "\n\n");
	size_t head_len = blank ? (size_t)(blank - text) : strlen(text);
	const char *body = blank ? blank + 2 : "";
	size_t body_len = strlen(body);
	size_t cap = 2 * head_len + body_len + 64;
	char *wire = malloc(cap), *w = wire;
	for (size_t i = 0; i < head_len; i++)
	{
		if (text[i] == '\n')
			*w++ = '\r';
		*w++ = text[i];
	}
	if (body_len && !strcasestr(text, "\ncontent-length:"))
		w += sprintf(w, "\r\nContent-Length: %zu", body_len);
	w += sprintf(w, "\r\n\r\n");
	memcpy(w, body, body_len);
	w += body_len;

	raw_request raw;
	memset(&raw, 0, sizeof raw);
	raw_request_parse(&raw, wire, (size_t)(w - wire));
	gw_rest_input in;
	if (raw_request_input(&raw, &in))
	{
		if (res->given && !strcmp(raw.url, "/"))
		{
			/* GET /: the OpenAPI document's answer */
			gw_answer ans;
			gw_answer_init(&ans);
			gw_response_openapi(res->r.nrows ? schema : NULL, &ans);
			print_answer(&ans, raw.method_name, "/");
			gw_answer_free(&ans);
			raw_request_free(&raw);
			free(wire);
			return;
		}
		printf("--- not a PostgREST request\n");
		raw_request_free(&raw);
		free(wire);
		return;
	}
	in.tx_override = tx_override;
	in.aggregates = aggregates;
	gw_arena a;
	gw_arena_init(&a);
	gw_rest_request rq;
	gw_error e;
	gw_plan plan;
	gw_plan_init(&plan);
	int rc = gw_rest_request_parse(&a, schema, &in, &rq, &e);
	if (!rc && rq.allow)
		printf("--- 200 %.*s\n", (int)strcspn(rq.allow, "\r\n"), rq.allow);
	else if (!rc && res->given && !(rc = gw_build(&a, schema, &rq.shape, &plan, &e)))
	{
		gw_response_in rin = {.rq = &rq, .plan = &plan, .schema = schema, .anonymous = res->anonymous};
		gw_answer ans;
		gw_answer_init(&ans);
		gw_response(&a, &rin, &res->r, &ans);
		print_answer(&ans, raw.method_name, raw.url);
		gw_answer_free(&ans);
	}
	else if (!rc && !res->given && !(rc = gw_build(&a, schema, &rq.shape, &plan, &e)))
	{
		printf("--- statement\n%s\n", plan.sql.data);
		print_params("", &plan.params);
		if (plan.count_sql.len)
		{
			printf("--- count statement\n%s\n", plan.count_sql.data);
			print_params("", &plan.count_params);
		}
		printf("--- %s%s%s%s%s%s%s\n", plan.read_only ? "read only" : "read write",
		       plan.returns_body ? ", body" : ", no body", plan.rpc_scalar ? ", scalar" : "",
		       plan.rpc_single ? ", single" : "", plan.rpc_scalar_set ? ", scalar set" : "",
		       plan.insert_location ? ", location" : "", rq.tx_rollback ? ", rollback" : "");
		if (rq.prefer_applied[0])
			printf("Preference-Applied: %s\n", rq.prefer_applied);
		if (rq.shape.action == GW_ACTION_READ || rq.shape.action == GW_ACTION_RPC)
			printf("first row: %ld\n", rq.page_offset);
	}
	if (rc)
	{
		printf("--- error %d %s: %s\n", e.status, e.code, e.message);
		if (e.details[0])
			printf("details: %s\n", e.details);
		if (e.hint[0])
			printf("hint: %s\n", e.hint);
	}
	gw_plan_free(&plan);
	gw_arena_free(&a);
	raw_request_free(&raw);
	free(wire);
}

int
main(int argc, char **argv)
{
	if (argc != 3)
	{
		fprintf(stderr, "usage: %s schema.rows requests.http\n", argv[0]);
		return 2;
	}
	gw_schema *schema = load_schema(argv[1]);
	size_t len;
	char *text = slurp(argv[2], &len);
	int tx_override = 0, aggregates = 0;
	if (!strncmp(text, "#!", 2))
	{
		size_t n = strcspn(text, "\n");
		char *line = strndup(text, n);
		tx_override = strstr(line, "tx-override") != NULL;
		aggregates = strstr(line, "aggregates") != NULL;
		printf("%s\n\n", line);
		free(line);
	}
	/* requests: each starts at a line "### what it shows" */
	char *p = text;
	while ((p = strstr(p, "###")) && (p == text || p[-1] == '\n'))
	{
		char *title_end = strchr(p, '\n');
		if (!title_end)
			break;
		char *next = strstr(title_end, "\n###");
		char *end = next ? next + 1 : text + len;
		size_t n = (size_t)(end - p);
		while (n && p[n - 1] == '\n')
			n--;
		printf("%.*s\n", (int)n, p);
		size_t title_len = (size_t)(title_end + 1 - p);
		char *req = strndup(title_end + 1, n > title_len ? n - title_len : 0);
		/* the "#> " lines are the result, not the request */
		case_result res;
		memset(&res, 0, sizeof res);
		res.r.nrows = 1;
		res.r.page_total = "0";
		req = realloc(req, strlen(req) + 2); /* room for the line end added after the last line */
		if (!req)
			abort();
		char *w = req;
		for (char *line = req, *next; line && *line; line = next)
		{
			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			if (!strncmp(line, "#> ", 3))
				result_field(&res, line + 3);
			else
			{
				size_t l = strlen(line);
				memmove(w, line, l);
				w += l;
				*w++ = '\n';
			}
		}
		*w = '\0';
		while (w > req && w[-1] == '\n')
			*--w = '\0'; /* as the case's end: no line end after the last line */
		run(schema, req, tx_override, aggregates, &res);
		for (int i = 0; i < res.nowned; i++)
			free(res.owned[i]);
		printf("\n");
		free(req);
		p = end;
	}
	gw_schema_unref(schema);
	free(text);
	return 0;
}
