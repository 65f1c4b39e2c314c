/* Function calls as SQL (see sql_build_int.h): the overload whose parameter names
 * fit the request, arguments typed from the catalog through json_to_record, the
 * raw body for a single unnamed json/jsonb/text/bytea/xml parameter, and results
 * filtered, ordered and aggregated like a relation. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_build_int.h"

static int
is_raw_type(const char *t)
{
	return !strcmp(t, "json") || !strcmp(t, "jsonb") || !strcmp(t, "text") || !strcmp(t, "bytea") ||
	       !strcmp(t, "xml") || !strcmp(t, "character varying");
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
	char msg[512];
	if (nfound == 1)
		return found;
	gw_buf list;
	gw_buf_init(&list);
	for (int k = 0; k < nkeys; k++)
	{
		if (k)
			gw_buf_puts(&list, ", ");
		gw_buf_puts(&list, keys[k]);
	}
	if (nfound > 1)
	{
		snprintf(msg, sizeof msg,
		         "Could not choose the best candidate function between overloads of api.%s", name);
		gw_error_set(c->e, 300, "PGRST203", msg, NULL,
		             "Try renaming the parameters or the function itself.");
	}
	else
	{
		if (nkeys)
			snprintf(msg, sizeof msg, "Could not find the function api.%s(%s) in the schema cache",
			         name, list.data);
		else
			snprintf(msg, sizeof msg,
			         "Could not find the function api.%s without parameters in the schema cache",
			         name);
		gw_error_set(
		    c->e, 404, "PGRST202", msg,
		    any ? "Searched for the function with the given parameter names, but no matches were "
		          "found."
		        : "Searched for the function in the schema 'api', but no matches were found.",
		    NULL);
	}
	gw_buf_free(&list);
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
		keys = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(c->q->nargs + 1));
		for (int i = 0; i < c->q->nargs; i++)
			keys[nkeys++] = c->q->args[i].key;
	}
	else if (r->body_is_json && !r->single_object)
	{
		json_error_t jerr;
		root =
		    r->body_len ? json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &jerr) : json_object();
		if (root && json_is_object(root))
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
	gw_buf inner;
	gw_buf_init(&inner);
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
	gw_buf_puts(b, " FROM ");
	int nargs_used = 0;
	if (!raw_call && !r->single_object && nkeys)
	{
		gw_buf_puts(b, "pg_catalog.json_to_record(");
		if (r->rpc_get)
		{
			json_t *o = json_object();
			for (int i = 0; i < c->q->nargs; i++)
				json_object_set_new(o, c->q->args[i].key, json_string(c->q->args[i].value));
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
			if (k)
				gw_buf_puts(b, ", ");
			gw_buf_ident(b, keys[k]);
			gw_buf_puts(b, " := pgrst_args.");
			gw_buf_ident(b, keys[k]);
		}
	}
	gw_buf_puts(b, ") AS pgrst_call");
	{
		const gw_scope *top = gw_sb_scope_for(c, "");
		long limit, offset;
		gw_sb_effective_range(r, top, &limit, &offset);
		gw_buf_puts(b, " WHERE ");
		if (gw_sb_build_logic(c, alias, NULL, top->where))
			goto out_inner;
		if (inner.len)
			gw_buf_append(b, inner.data, inner.len);
		if (group_by)
			gw_buf_puts(b, group_by);
		if (gw_sb_build_order(c, alias, NULL, top))
			goto out_inner;
		gw_sb_build_limit(c, limit, offset);
	}
	gw_buf_putc(b, ')');
	gw_sb_build_outer(c, r, p, NULL, "pgrst_source");
	rc = 0;
out_inner:
	gw_buf_free(&inner);
out:
	if (root)
		json_decref(root);
	return rc;
}
