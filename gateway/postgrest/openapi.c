/* The OpenAPI (Swagger 2.0) document of schema api (see openapi.h): one path per
 * relation with the verbs its updatability allows, one per function, and a
 * definition per relation with PostgreSQL types as formats. */
#include "openapi.h"

#include <string.h>

static const char *
json_type(const char *pgtype)
{
	if (strstr(pgtype, "[]"))
		return "array";
	if (!strcmp(pgtype, "integer") || !strcmp(pgtype, "bigint") || !strcmp(pgtype, "smallint"))
		return "integer";
	if (!strcmp(pgtype, "numeric") || !strcmp(pgtype, "real") ||
	    !strcmp(pgtype, "double precision"))
		return "number";
	if (!strcmp(pgtype, "boolean"))
		return "boolean";
	if (!strcmp(pgtype, "json") || !strcmp(pgtype, "jsonb"))
		return "object";
	return "string";
}

static void
op(gw_buf *o, int *first, const char *verb, const char *tag, const char *summary)
{
	gw_buf_printf(o, "%s\"%s\":{\"tags\":[", *first ? "" : ",", verb);
	gw_buf_json_str(o, tag);
	gw_buf_puts(o, "],\"summary\":");
	gw_buf_json_str(o, summary);
	gw_buf_puts(o, ",\"responses\":{\"200\":{\"description\":\"OK\"}}}");
	*first = 0;
}

void
gw_openapi_render(const gw_schema *s, gw_buf *o)
{
	gw_buf_puts(o,
	            "{\"swagger\":\"2.0\",\"info\":{\"title\":\"pgpod\",\"description\":\"PostgREST-"
	            "style API of schema api\",\"version\":\"0.1\"},"
	            "\"basePath\":\"/\",\"schemes\":[\"http\"],\"consumes\":[\"application/"
	            "json\",\"application/vnd.pgrst.object+json\",\"text/csv\"],"
	            "\"produces\":[\"application/json\",\"application/vnd.pgrst.object+json\",\"text/"
	            "csv\"],\"paths\":{\"/\":{\"get\":{\"tags\":[\"Introspection\"],"
	            "\"summary\":\"OpenAPI description (this "
	            "document)\",\"responses\":{\"200\":{\"description\":\"OK\"}}}}");
	for (int i = 0; i < s->nrels; i++)
	{
		const gw_relation *r = &s->rels[i];
		gw_buf key;
		gw_buf_init(&key);
		gw_buf_putc(&key, '/');
		gw_buf_puts(&key, r->name);
		gw_buf_putc(o, ',');
		gw_buf_json_str(o, key.data);
		gw_buf_free(&key);
		gw_buf_puts(o, ":{");
		int first = 1;
		op(o, &first, "get", r->name, r->comment[0] ? r->comment : r->name);
		if (r->insertable)
			op(o, &first, "post", r->name, "insert");
		if (r->updatable)
		{
			op(o, &first, "patch", r->name, "update");
			if (r->npk)
				op(o, &first, "put", r->name, "upsert one row");
		}
		if (r->deletable)
			op(o, &first, "delete", r->name, "delete");
		gw_buf_putc(o, '}');
	}
	for (int i = 0; i < s->nfuncs; i++)
	{
		const gw_function *f = &s->funcs[i];
		int dup = 0;
		for (int j = 0; j < i; j++)
			dup |= !strcmp(s->funcs[j].name, f->name);
		if (dup)
			continue;
		gw_buf gwpath;
		gw_buf_init(&gwpath);
		gw_buf_puts(&gwpath, "/rpc/");
		gw_buf_puts(&gwpath, f->name);
		gw_buf_putc(o, ',');
		gw_buf_json_str(o, gwpath.data);
		gw_buf_free(&gwpath);
		gw_buf_puts(o, ":{");
		int first = 1;
		if (f->volatility != 'v')
			op(o, &first, "get", "(rpc) functions", f->name);
		op(o, &first, "post", "(rpc) functions", f->name);
		gw_buf_putc(o, '}');
	}
	gw_buf_puts(o, "},\"definitions\":{");
	for (int i = 0; i < s->nrels; i++)
	{
		const gw_relation *r = &s->rels[i];
		if (i)
			gw_buf_putc(o, ',');
		gw_buf_json_str(o, r->name);
		gw_buf_puts(o, ":{\"type\":\"object\",\"required\":[");
		int first = 1;
		for (int c = 0; c < r->ncols; c++)
		{
			if (r->cols[c].nullable || r->cols[c].has_default)
				continue;
			if (!first)
				gw_buf_putc(o, ',');
			first = 0;
			gw_buf_json_str(o, r->cols[c].name);
		}
		gw_buf_puts(o, "],\"properties\":{");
		for (int c = 0; c < r->ncols; c++)
		{
			if (c)
				gw_buf_putc(o, ',');
			gw_buf_json_str(o, r->cols[c].name);
			gw_buf_puts(o, ":{\"type\":");
			gw_buf_json_str(o, json_type(r->cols[c].type));
			gw_buf_puts(o, ",\"format\":");
			gw_buf_json_str(o, r->cols[c].type);
			gw_buf_putc(o, '}');
		}
		gw_buf_puts(o, "}}");
	}
	gw_buf_puts(o, "}}");
}
