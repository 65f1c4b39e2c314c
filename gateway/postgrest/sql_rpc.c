/* Function calls as SQL (see sql_build_int.h): the overload whose parameter names
 * fit the request, arguments typed from the catalog through json_to_record, the
 * raw body for a single unnamed json/jsonb/text/bytea/xml parameter, and results
 * filtered, ordered and aggregated like a relation. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzzy.h"
#include "sql_build_int.h"

static int
is_raw_type(const char *t)
{
	return !strcmp(t, "json") || !strcmp(t, "jsonb") || !strcmp(t, "text") || !strcmp(t, "bytea") ||
	       !strcmp(t, "xml") || !strcmp(t, "character varying");
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "(a, b)": names sorted, as PostgREST lists parameters in its hints. */
static char *
sorted_list(gw_arena *a, const char *const *names, int n, int parens)
{
	const char **copy = gw_arena_alloc(a, sizeof(char *) * (size_t)(n + 1));
	if (n > 0)
	{
		memcpy(copy, names, sizeof(char *) * (size_t)n);
		qsort(copy, (size_t)n, sizeof(char *), compare_strings);
	}
	gw_buf b;
	gw_buf_init(&b);
	if (parens)
		gw_buf_putc(&b, '(');
	for (int i = 0; i < n; i++)
	{
		if (i)
			gw_buf_puts(&b, ", ");
		gw_buf_puts(&b, copy[i]);
	}
	if (parens)
		gw_buf_putc(&b, ')');
	char *out = gw_arena_strdup(a, b.data ? b.data : "");
	gw_buf_free(&b);
	return out;
}

/* PGRST203: the overloads that fit, as "api.f(a => integer, ...)". */
static void
ambiguous(ctx *c, const char *name)
{
	gw_buf m;
	gw_buf_init(&m);
	gw_buf_puts(&m, "Could not choose the best candidate function between: ");
	int first = 1;
	for (int i = 0; i < c->s->nfuncs; i++)
	{
		const gw_function *f = &c->s->funcs[i];
		if (strcmp(f->name, name))
			continue;
		gw_buf_printf(&m, "%sapi.%s(", first ? "" : ", ", f->name);
		first = 0;
		for (int j = 0; j < f->nargs; j++)
			gw_buf_printf(&m, "%s%s => %s", j ? ", " : "", f->args[j].name, f->args[j].type);
		gw_buf_putc(&m, ')');
	}
	gw_error_set(c->e, 300, "PGRST203", m.data, NULL,
	             "Try renaming the parameters or the function itself in the database so function "
	             "overloading can be resolved");
	gw_buf_free(&m);
}

/* PGRST202 in PostgREST v12's words, with its fuzzy hint: the closest function
 * name, or the closest parameter list of the function's overloads. */
static void
not_found(ctx *c, const char *name, const char *const *keys, int nkeys, int any)
{
	const gw_request_shape *r = c->shape;
	const char *ct = r && r->content_type ? r->content_type : "application/json";
	int post = r && !r->rpc_get;
	const char *single = NULL;
	if (post && !strncasecmp(ct, "text/plain", 10))
		single = " with a single unnamed text parameter";
	else if (post && !strncasecmp(ct, "text/xml", 8))
		single = " with a single unnamed xml parameter";
	else if (post && !strncasecmp(ct, "application/octet-stream", 24))
		single = " with a single unnamed bytea parameter";
	char *list = sorted_list(c->a, keys, nkeys, 0);
	char msg[512], details[512], hint[300] = "";
	if (single)
		snprintf(msg, sizeof msg, "Could not find the function api.%s in the schema cache", name);
	else if (nkeys)
		snprintf(msg, sizeof msg, "Could not find the function api.%s(%s) in the schema cache",
		         name, list);
	else
		snprintf(msg, sizeof msg,
		         "Could not find the function api.%s without parameters in the schema cache", name);
	char params[300];
	if (nkeys)
		snprintf(params, sizeof params, " with parameter%s %s", nkeys > 1 ? "s" : "", list);
	else
		snprintf(params, sizeof params, " without parameters");
	int json = post && !single && (!strncasecmp(ct, "application/json", 16) || !*ct);
	snprintf(details, sizeof details,
	         "Searched for the function api.%s%s%s, but no matches were found in the schema cache.",
	         name, single ? single : params,
	         json ? " or with a single unnamed json/jsonb parameter" : "");
	if (!single)
	{
		const char **cands = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(c->s->nfuncs + 1));
		int n = 0;
		for (int i = 0; i < c->s->nfuncs; i++)
		{
			const gw_function *f = &c->s->funcs[i];
			if (!any)
			{
				cands[n++] = f->name;
				continue;
			}
			if (strcmp(f->name, name))
				continue;
			const char **names = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(f->nargs + 1));
			for (int j = 0; j < f->nargs; j++)
				names[j] = f->args[j].name;
			cands[n++] = sorted_list(c->a, names, f->nargs, 1);
		}
		int best = gw_fuzzy_best(any ? sorted_list(c->a, keys, nkeys, 1) : name, cands, n,
		                         GW_FUZZY_MIN);
		if (best >= 0)
			snprintf(hint, sizeof hint, "Perhaps you meant to call the function api.%s%s",
			         any ? name : cands[best], any ? cands[best] : "");
	}
	gw_error_set(c->e, 404, "PGRST202", msg, details, hint[0] ? hint : NULL);
}

/* Picks the overload whose parameters fit the given argument names. */
static const gw_function *
choose_function(ctx *c, const char *name, const char *const *keys, int nkeys, int raw_body,
                int single_object)
{
	const gw_function *found = NULL;
	int nfound = 0, any = 0;
	for (int i = 0; i < c->s->nfuncs; i++)
	{
		const gw_function *f = &c->s->funcs[i];
		if (strcmp(f->name, name))
			continue;
		any = 1;
		int fits = 1;
		if (raw_body && f->nargs == 1 && f->args[0].name[0] == '\0' && is_raw_type(f->args[0].type))
		{
			fits = 1;
		}
		else if (single_object)
		{
			fits = f->nargs == 1 &&
			       (!strcmp(f->args[0].type, "json") || !strcmp(f->args[0].type, "jsonb"));
		}
		else
		{
			for (int k = 0; fits && k < nkeys; k++)
			{
				int has = 0;
				for (int j = 0; j < f->nargs; j++)
					has |= !strcmp(f->args[j].name, keys[k]);
				fits = has;
			}
			for (int j = 0; fits && j < f->nargs; j++)
			{
				if (f->args[j].has_default)
					continue;
				int given = 0;
				for (int k = 0; k < nkeys; k++)
					given |= !strcmp(f->args[j].name, keys[k]);
				fits = given;
			}
		}
		if (fits)
		{
			found = f;
			nfound++;
		}
	}
	if (nfound == 1)
		return found;
	if (nfound > 1)
		ambiguous(c, name);
	else
		not_found(c, name, keys, nkeys, any);
	return NULL;
}

int
gw_sb_build_rpc(ctx *c, const gw_request_shape *r, gw_plan *p)
{
	json_t *root = NULL;
	const char **keys = NULL;
	int nkeys = 0, rc = -1, raw = 0;
	if (r->rpc_get)
	{
		/* a repeated parameter is one argument (an array when variadic) */
		keys = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(c->q->nargs + 1));
		for (int i = 0; i < c->q->nargs; i++)
		{
			int seen = 0;
			for (int k = 0; k < nkeys && !seen; k++)
				seen = !strcmp(keys[k], c->q->args[i].key);
			if (!seen)
				keys[nkeys++] = c->q->args[i].key;
		}
	}
	else if (r->body_is_json && !r->single_object)
	{
		json_error_t jerr;
		root =
		    r->body_len ? json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &jerr) : json_object();
		if (!root)
		{
			/* PostgREST reads a JSON body before it looks for the function */
			gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
			goto out;
		}
		if (json_is_object(root))
		{
			keys = gw_arena_alloc(c->a, sizeof(char *) * (json_object_size(root) + 1));
			const char *k;
			json_t *v;
			json_object_foreach(root, k, v) keys[nkeys++] = gw_arena_strdup(c->a, k);
		}
		else
		{
			raw = 1;
		}
	}
	else if (!r->single_object)
	{
		raw = 1;
	}
	const gw_function *f =
	    choose_function(c, r->target, keys, nkeys, raw || !r->rpc_get, r->single_object);
	if (!f && !raw && !r->rpc_get && nkeys)
	{
		/* a JSON object can also be the raw body of a single unnamed json parameter */
		c->e->status = 0;
		f = choose_function(c, r->target, NULL, 0, 1, 0);
		if (f && !(f->nargs == 1 && f->args[0].name[0] == '\0'))
			f = NULL;
		if (!f)
			choose_function(c, r->target, keys, nkeys, 0, r->single_object);
		else
			raw = 1;
	}
	if (!f)
		goto out;
	if (root && !json_is_object(root) && !raw)
	{
		gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
		goto out;
	}
	if (r->max_affected_set && !f->returns_set)
	{
		/* PostgREST decides before the call: only a set can be counted */
		gw_error_set(c->e, 400, "PGRST128",
		             "Function must return SETOF or TABLE when max-affected preference is used "
		             "with handling=strict",
		             NULL, NULL);
		goto out;
	}
	int raw_call = f->nargs == 1 && f->args[0].name[0] == '\0' && !r->rpc_get &&
	               (raw || is_raw_type(f->args[0].type));
	p->read_only = r->rpc_get;
	p->returns_body = !f->returns_void;
	p->rpc_scalar = !f->returns_composite && !f->returns_set && !f->returns_void;
	p->rpc_single = f->returns_composite && !f->returns_set;
	p->rpc_scalar_set = !f->returns_composite && f->returns_set;
	gw_buf *b = c->sql;
	char alias[] = "pgrst_call";
	gw_buf_puts(b, "WITH pgrst_source AS (SELECT ");
	gw_buf inner, count;
	gw_buf_init(&inner);
	gw_buf_init(&count);
	const char *group_by = NULL;
	if (f->returns_composite)
	{
		if (gw_sb_build_select_list(c, alias, NULL, c->q->select, "", &inner))
			goto out_inner;
		group_by = c->group_by;
	}
	else
	{
		gw_buf_puts(b, "pgrst_call AS pgrst_scalar");
	}
	size_t from_at = b->len; /* " FROM ... WHERE ..." is reused to count */
	gw_buf_puts(b, " FROM ");
	int nargs_used = 0;
	if (!raw_call && !r->single_object && nkeys)
	{
		gw_buf_puts(b, "pg_catalog.json_to_record(");
		if (r->rpc_get)
		{
			/* PostgREST: the values of a variadic parameter make its array;
			 * any other repeated parameter keeps its last value */
			json_t *o = json_object();
			for (int i = 0; i < c->q->nargs; i++)
			{
				const char *k = c->q->args[i].key;
				const gw_func_arg *arg = NULL;
				for (int j = 0; j < f->nargs; j++)
					if (!strcmp(f->args[j].name, k))
						arg = &f->args[j];
				json_t *v = json_string(c->q->args[i].value);
				if (arg && arg->variadic)
				{
					json_t *arr = json_object_get(o, k);
					if (!arr)
						json_object_set_new(o, k, arr = json_array());
					json_array_append_new(arr, v);
				}
				else
					json_object_set_new(o, k, v);
			}
			char *t = json_dumps(o, JSON_COMPACT);
			gw_sb_param(c, t);
			free(t);
			json_decref(o);
		}
		else
		{
			gw_params_addn(c->params, r->body, r->body_len);
			gw_buf_printf(b, "$%d", c->params->n);
		}
		gw_buf_puts(b, "::json) AS pgrst_args(");
		for (int k = 0; k < nkeys; k++)
		{
			const gw_func_arg *arg = NULL;
			for (int j = 0; j < f->nargs; j++)
				if (!strcmp(f->args[j].name, keys[k]))
					arg = &f->args[j];
			if (k)
				gw_buf_puts(b, ", ");
			gw_buf_ident(b, keys[k]);
			gw_buf_printf(b, " %s", arg->type);
		}
		gw_buf_puts(b, ") CROSS JOIN LATERAL ");
		nargs_used = nkeys;
	}
	gw_buf_puts(b, "\"api\".");
	gw_buf_ident(b, f->name);
	gw_buf_putc(b, '(');
	if (raw_call)
	{
		const char *t = f->args[0].type;
		if (!strcmp(t, "bytea"))
		{
			gw_params_add_binary(c->params, r->body, r->body_len, 17);
		}
		else
		{
			gw_params_addn(c->params, r->body, r->body_len);
		}
		gw_buf_printf(b, "$%d::%s", c->params->n, t);
	}
	else if (r->single_object)
	{
		gw_params_addn(c->params, r->body, r->body_len);
		gw_buf_printf(b, "$%d::%s", c->params->n, f->args[0].type);
	}
	else
	{
		for (int k = 0; k < nargs_used; k++)
		{
			int variadic = 0;
			for (int j = 0; j < f->nargs; j++)
				if (!strcmp(f->args[j].name, keys[k]))
					variadic = f->args[j].variadic;
			if (k)
				gw_buf_puts(b, ", ");
			if (variadic)
				gw_buf_puts(b, "VARIADIC ");
			gw_buf_ident(b, keys[k]);
			gw_buf_puts(b, " := pgrst_args.");
			gw_buf_ident(b, keys[k]);
		}
	}
	gw_buf_puts(b, ") AS pgrst_call");
	{
		const gw_scope *top = gw_sb_scope_for(c, "");
		long limit, offset;
		if (gw_page_range(r, &limit, &offset, c->e))
			goto out_inner;
		gw_buf_puts(b, " WHERE ");
		if (gw_sb_build_logic(c, alias, NULL, top->where))
			goto out_inner;
		if (inner.len)
			gw_buf_append(b, inner.data, inner.len);
		if (r->count == GW_COUNT_EXACT && f->volatility != 'v')
		{
			/* the rows the filters keep, before limit and offset; a volatile
			 * function is not called twice for it (its total stays *) */
			count.len = 0;
			gw_buf_puts(&count, "(SELECT pg_catalog.count(*)");
			gw_buf_append(&count, b->data + from_at, b->len - from_at);
			gw_buf_puts(&count, ")::text");
		}
		if (group_by)
			gw_buf_puts(b, group_by);
		if (gw_sb_build_order(c, alias, NULL, top))
			goto out_inner;
		gw_sb_build_limit(c, limit, offset);
	}
	gw_buf_putc(b, ')');
	gw_sb_build_outer(c, r, p, count.len ? count.data : NULL, "pgrst_source");
	rc = 0;
out_inner:
	gw_buf_free(&inner);
	gw_buf_free(&count);
out:
	if (root)
		json_decref(root);
	return rc;
}
