/* Raw request bytes to the dialect's input (see raw_request.h). */
#include "raw_request.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

typedef struct state
{
	raw_request *r;
	int in_value;
	size_t body_cap;
} state;

static char *
grow(char *old, const char *at, size_t n)
{
	size_t had = old ? strlen(old) : 0;
	char *s = realloc(old, had + n + 1);
	if (!s)
		abort();
	memcpy(s + had, at, n);
	s[had + n] = '\0';
	return s;
}

static int
on_url(http_parser *p, const char *at, size_t n)
{
	raw_request *r = ((state *)p->data)->r;
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
	state *st = p->data;
	raw_request *r = st->r;
	if (st->in_value || !r->nheaders)
	{
		if (r->nheaders == RAW_MAX_HEADERS)
			return -1;
		r->nheaders++;
		st->in_value = 0;
	}
	int i = r->nheaders - 1;
	r->names[i] = grow(r->names[i], at, n);
	for (char *c = r->names[i]; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return 0;
}

static int
on_value(http_parser *p, const char *at, size_t n)
{
	state *st = p->data;
	raw_request *r = st->r;
	if (!r->nheaders)
		return 0;
	st->in_value = 1;
	r->values[r->nheaders - 1] = grow(r->values[r->nheaders - 1], at, n);
	return 0;
}

static int
on_headers_complete(http_parser *p)
{
	raw_request *r = ((state *)p->data)->r;
	for (int i = 0; i < r->nheaders; i++)
		if (!r->values[i])
			r->values[i] = grow(NULL, "", 0);
	r->complete_head = 1;
	r->method = p->method;
	r->method_name = http_method_str(p->method);
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	state *st = p->data;
	raw_request *r = st->r;
	if (r->body_len + n + 1 > st->body_cap)
	{
		st->body_cap = (r->body_len + n + 1) * 2;
		r->body = realloc(r->body, st->body_cap);
		if (!r->body)
			abort();
	}
	memcpy(r->body + r->body_len, at, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
	return 0;
}

/* One request: a pipelined second one is not read. */
static int
on_message_complete(http_parser *p)
{
	http_parser_pause(p, 1);
	return 0;
}

size_t
raw_request_parse(raw_request *r, const char *bytes, size_t n)
{
	static http_parser_settings settings = {.on_url = on_url,
	                                        .on_header_field = on_field,
	                                        .on_header_value = on_value,
	                                        .on_headers_complete = on_headers_complete,
	                                        .on_body = on_body,
	                                        .on_message_complete = on_message_complete};
	state st = {.r = r};
	http_parser p;
	http_parser_init(&p, HTTP_REQUEST);
	p.data = &st;
	return http_parser_execute(&p, &settings, bytes, n);
}

const char *
raw_request_header(const raw_request *r, const char *lower_name)
{
	for (int i = 0; i < r->nheaders; i++)
		if (r->names[i] && r->values[i] && !strcmp(r->names[i], lower_name))
			return r->values[i];
	return NULL;
}

int
raw_request_input(raw_request *r, gw_rest_input *in)
{
	memset(in, 0, sizeof *in);
	if (!r->complete_head)
		return -1;
	r->url[r->url_len] = '\0';
	char *q = strchr(r->url, '?');
	size_t path_len = q ? (size_t)(q - r->url) : r->url_len;
	const char *path = r->url;
	int is_rpc = path_len > 5 && !strncmp(path, "/rpc/", 5);
	const char *name = path + (is_rpc ? 5 : 1);
	size_t name_len = path_len - (size_t)(name - path);
	if (path_len < 2 || path[0] != '/' || !name_len || name_len >= sizeof r->target ||
	    memchr(name, '/', name_len))
		return -1;
	memcpy(r->target, name, name_len);
	r->target[name_len] = '\0';
	int nprefer = 0;
	for (int i = 0; i < r->nheaders; i++)
		if (r->names[i] && r->values[i] && !strcmp(r->names[i], "prefer"))
			r->prefer[nprefer++] = r->values[i];
	in->method = r->method;
	in->method_name = r->method_name;
	in->is_rpc = is_rpc;
	in->target = r->target;
	in->query = q ? q + 1 : "";
	in->query_len = q ? r->url_len - (size_t)(q + 1 - r->url) : 0;
	in->accept = raw_request_header(r, "accept");
	in->range = raw_request_header(r, "range");
	in->content_type = raw_request_header(r, "content-type");
	in->accept_profile = raw_request_header(r, "accept-profile");
	in->content_profile = raw_request_header(r, "content-profile");
	in->prefer = r->prefer;
	in->nprefer = nprefer;
	in->body = r->body;
	in->body_len = r->body_len;
	return 0;
}

void
raw_request_free(raw_request *r)
{
	for (int i = 0; i < r->nheaders; i++)
	{
		free(r->names[i]);
		free(r->values[i]);
	}
	free(r->body);
}

int
schema_add_line(gw_schema *s, char *line)
{
	const char *v[16];
	int n = 0;
	for (char *f = line;;)
	{
		if (n == 16)
			return -1;
		v[n++] = f;
		char *tab = strchr(f, '\t');
		if (!tab)
			break;
		*tab = '\0';
		f = tab + 1;
	}
	return gw_schema_add_row(s, n, v);
}
