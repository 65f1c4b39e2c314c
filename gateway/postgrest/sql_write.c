/* Writes as SQL (see sql_build_int.h): POST inserts and upserts from a JSON body
 * (json_populate_recordset over the body as one parameter), PATCH updates, DELETE,
 * and PUT as a checked single-row upsert; RETURNING feeds the shared outer
 * select, re-selected with the request's select list for return=representation. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_build_int.h"

/* The columns a write names: ?columns= or the keys of the (first) object; all
 * objects of an array must have the same keys (PGRST102). */
static int
payload_columns(ctx *c, const gw_request_shape *r, const gw_relation *rel, json_t **root,
                const char ***cols, int *ncols)
{
	json_error_t jerr;
	*root =
	    json_loadb(r->body ? r->body : "", r->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!*root || !(json_is_object(*root) || json_is_array(*root)))
	{
		gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
		return -1;
	}
	json_t *first = json_is_array(*root) ? json_array_get(*root, 0) : *root;
	if (c->q->ncolumns)
	{
		*cols = (const char **)c->q->columns;
		*ncols = c->q->ncolumns;
	}
	else if (!first)
	{
		*cols = NULL;
		*ncols = 0;
	}
	else
	{
		if (!json_is_object(first))
		{
			gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
			return -1;
		}
		*ncols = (int)json_object_size(first);
		*cols = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(*ncols + 1));
		int i = 0;
		const char *k;
		json_t *v;
		json_object_foreach(first, k, v)(*cols)[i++] = gw_arena_strdup(c->a, k);
		if (json_is_array(*root))
		{
			size_t idx;
			json_t *o;
			json_array_foreach(*root, idx, o)
			{
				int same = json_is_object(o) && (int)json_object_size(o) == *ncols;
				for (int j = 0; same && j < *ncols; j++)
					same = json_object_get(o, (*cols)[j]) != NULL;
				if (!same)
				{
					gw_error_set(c->e, 400, "PGRST102", "All object keys must match", NULL, NULL);
					return -1;
				}
			}
		}
	}
	for (int i = 0; i < *ncols; i++)
	{
		if (!gw_relation_column(rel, (*cols)[i]))
		{
			char msg[400];
			snprintf(msg, sizeof msg, "Could not find the '%s' column of '%s' in the schema cache",
			         (*cols)[i], rel->name);
			gw_error_set(c->e, 400, "PGRST204", msg, NULL, NULL);
			return -1;
		}
	}
	return 0;
}

static void
ident_list(gw_buf *b, const char *prefix, const char *const *cols, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (i)
			gw_buf_puts(b, ", ");
		if (prefix)
		{
			gw_buf_puts(b, prefix);
			gw_buf_putc(b, '.');
		}
		gw_buf_ident(b, cols[i]);
	}
}

static void
returning_column(ctx *c, const char *alias, const char *col, int n)
{
	if (n)
		gw_buf_puts(c->sql, ", ");
	gw_buf_ident(c->sql, alias);
	gw_buf_putc(c->sql, '.');
	gw_buf_ident(c->sql, col);
}

/* RETURNING and the outer select over what was written. RETURNING names only what
 * the answer needs, as PostgREST does: the rows for return=representation, the key
 * for a Location header and an upsert's conflict columns (its 201 or 200), else a
 * constant (the rows are only counted). A column in
 * RETURNING needs the SELECT privilege and applies the relation's SELECT policies to
 * the written rows (PostgreSQL adds them as checks of an INSERT, filters of an UPDATE
 * or DELETE): with return=minimal a client may write what it may not read, and a
 * chat post does not pay for its room's read policy. */
static int
finish_write(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	p->returns_body = r->return_rep;
	p->insert_location = r->headers_only && r->action == GW_ACTION_INSERT && rel->npk > 0;
	gw_buf_puts(c->sql, " RETURNING ");
	if (r->return_rep)
	{
		gw_buf_ident(c->sql, alias);
		gw_buf_puts(c->sql, ".*)");
	}
	else
	{
		/* the key for Location, the conflict columns an upsert's 201/200 is decided on */
		int n = 0;
		if (p->insert_location)
			for (int i = 0; i < rel->npk; i++)
				returning_column(c, alias, rel->pk[i], n++);
		if (c->upsert_rel)
			for (int i = 0; i < c->nupsert_cols; i++)
			{
				int dup = 0;
				for (int k = 0; p->insert_location && k < rel->npk; k++)
					dup |= !strcmp(rel->pk[k], c->upsert_cols[i]);
				if (!dup)
					returning_column(c, alias, c->upsert_cols[i], n++);
			}
		gw_buf_puts(c->sql, n ? ")" : "1)");
	}
	if (!r->return_rep)
	{
		gw_sb_build_outer(c, r, p, NULL, "pgrst_source");
		return 0;
	}
	/* re-select with the user's select list (embeds included) over pgrst_source */
	gw_buf *b = c->sql;
	gw_buf_puts(b, ", pgrst_written AS (SELECT ");
	if (gw_sb_build_select_list(c, alias, rel, c->q->select, "", NULL))
		return -1;
	const char *group_by = c->group_by;
	gw_buf_puts(b, " FROM pgrst_source AS ");
	gw_buf_ident(b, alias);
	if (group_by)
		gw_buf_puts(b, group_by);
	gw_buf_putc(b, ')');
	gw_sb_build_outer(c, r, p, NULL, "pgrst_written");
	return 0;
}

/* Prefer: missing=default: VALUES rows where a key the row lacks is DEFAULT
 * (evaluated per row, so sequences and now() work) and a present one is read
 * from that row's JSON with json_populate_record, typed by the relation. */
static int
values_with_defaults(ctx *c, const gw_relation *rel, json_t *root, const char **cols, int ncols)
{
	gw_buf *b = c->sql;
	size_t nrows = json_is_array(root) ? json_array_size(root) : 1;
	/* one parameter per row; a huge body shares one jsonb parameter instead */
	int shared = nrows > 30000;
	int shared_param = 0;
	if (shared)
	{
		char *all = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
		shared_param = gw_params_add(c->params, all);
		free(all);
	}
	gw_buf_puts(b, " (");
	ident_list(b, NULL, cols, ncols);
	gw_buf_puts(b, ") VALUES ");
	for (size_t i = 0; i < nrows; i++)
	{
		json_t *row = json_is_array(root) ? json_array_get(root, i) : root;
		if (!json_is_object(row))
		{
			gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
			return -1;
		}
		int param = 0;
		for (int k = 0; k < ncols && !shared && !param; k++)
			if (json_object_get(row, cols[k]))
			{
				char *text = json_dumps(row, JSON_COMPACT);
				param = gw_params_add(c->params, text);
				free(text);
			}
		gw_buf_puts(b, i ? ", (" : "(");
		for (int k = 0; k < ncols; k++)
		{
			if (k)
				gw_buf_puts(b, ", ");
			if (!json_object_get(row, cols[k]))
			{
				gw_buf_puts(b, "DEFAULT");
				continue;
			}
			gw_buf_puts(b, shared ? "(pg_catalog.jsonb_populate_record(NULL::\"api\"."
			                      : "(pg_catalog.json_populate_record(NULL::\"api\".");
			gw_buf_ident(b, rel->name);
			if (shared)
				gw_buf_printf(b, ", $%d::jsonb -> %zu)).", shared_param, i);
			else
				gw_buf_printf(b, ", $%d::json)).", param);
			gw_buf_ident(b, cols[k]);
		}
		gw_buf_putc(b, ')');
	}
	return 0;
}

int
gw_sb_build_insert(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	json_t *root = NULL;
	const char **cols;
	int ncols, rc = -1;
	const char *alias = rel->name;
	if (payload_columns(c, r, rel, &root, &cols, &ncols))
		goto out;
	gw_buf *b = c->sql;
	gw_buf_puts(b, "WITH pgrst_source AS (INSERT INTO \"api\".");
	gw_buf_ident(b, rel->name);
	gw_buf_puts(b, " AS ");
	gw_buf_ident(b, alias);
	if (ncols == 0)
	{
		/* {} is one row of defaults, [] none, [{}, {}] two (as PostgREST's
		 * column-less SELECT over the payload's rows) */
		size_t nrows = json_is_array(root) ? json_array_size(root) : 1;
		char n[32];
		snprintf(n, sizeof n, "%zu", nrows);
		gw_buf_puts(b, " SELECT FROM pg_catalog.generate_series(1, ");
		gw_sb_param(c, n);
		gw_buf_puts(b, "::integer)");
	}
	else if (r->missing_default && !(json_is_array(root) && json_array_size(root) == 0))
	{
		if (values_with_defaults(c, rel, root, cols, ncols))
			goto out;
	}
	else
	{
		gw_buf_puts(b, " (");
		ident_list(b, NULL, cols, ncols);
		gw_buf_puts(b, ") SELECT ");
		ident_list(b, "pgrst_body", cols, ncols);
		gw_buf_puts(b, " FROM pg_catalog.json_populate_recordset(NULL::\"api\".");
		gw_buf_ident(b, rel->name);
		gw_buf_puts(b, ", ");
		char *text = json_is_array(root) ? NULL : json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
		if (text)
		{
			gw_buf wrapped;
			gw_buf_init(&wrapped);
			gw_buf_putc(&wrapped, '[');
			gw_buf_puts(&wrapped, text);
			gw_buf_putc(&wrapped, ']');
			gw_sb_param(c, wrapped.data);
			gw_buf_free(&wrapped);
			free(text);
		}
		else
		{
			gw_params_addn(c->params, r->body, r->body_len);
			gw_buf_printf(b, "$%d", c->params->n);
		}
		gw_buf_puts(b, "::json) AS pgrst_body");
	}
	if (r->resolution != GW_RESOLUTION_NONE || r->action == GW_ACTION_UPSERT_PUT)
	{
		const char *const *conf = (const char *const *)c->q->on_conflict;
		int nconf = c->q->non_conflict;
		if (!nconf)
		{
			conf = (const char *const *)rel->pk;
			nconf = rel->npk;
		}
		if (!nconf)
		{
			gw_error_set(c->e, 400, "PGRST103",
			             "on_conflict is needed: the relation has no primary key", NULL, NULL);
			goto out;
		}
		gw_buf_puts(b, " ON CONFLICT (");
		ident_list(b, NULL, conf, nconf);
		gw_buf_puts(b, ")");
		if (r->resolution == GW_RESOLUTION_MERGE || r->action == GW_ACTION_UPSERT_PUT)
		{
			c->upsert_rel = rel;
			c->upsert_cols = conf;
			c->nupsert_cols = nconf;
		}
		if (r->resolution == GW_RESOLUTION_IGNORE)
		{
			gw_buf_puts(b, " DO NOTHING");
		}
		else if (ncols == 0)
		{
			gw_buf_puts(b, " DO NOTHING");
		}
		else
		{
			gw_buf_puts(b, " DO UPDATE SET ");
			for (int i = 0; i < ncols; i++)
			{
				if (i)
					gw_buf_puts(b, ", ");
				gw_buf_ident(b, cols[i]);
				gw_buf_puts(b, " = EXCLUDED.");
				gw_buf_ident(b, cols[i]);
			}
		}
	}
	rc = finish_write(c, r, rel, p);
out:
	if (root)
		json_decref(root);
	return rc;
}

int
gw_sb_build_update(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	json_t *root = NULL;
	const char **cols;
	int ncols, rc = -1;
	const char *alias = rel->name;
	if (payload_columns(c, r, rel, &root, &cols, &ncols))
		goto out;
	if (!json_is_object(root))
	{
		gw_error_set(c->e, 400, "PGRST102", "A PATCH body must be a JSON object", NULL, NULL);
		goto out;
	}
	gw_buf *b = c->sql;
	if (ncols == 0)
	{
		/* nothing to set: PostgREST answers as if no row matched */
		gw_buf_puts(b, "WITH pgrst_source AS (SELECT ");
		gw_buf_ident(b, alias);
		gw_buf_puts(b, ".* FROM \"api\".");
		gw_buf_ident(b, rel->name);
		gw_buf_puts(b, " AS ");
		gw_buf_ident(b, alias);
		gw_buf_puts(b, " WHERE FALSE)");
		p->returns_body = r->return_rep;
		gw_sb_build_outer(c, r, p, NULL, "pgrst_source");
		rc = 0;
		goto out;
	}
	gw_buf_puts(b, "WITH pgrst_source AS (UPDATE \"api\".");
	gw_buf_ident(b, rel->name);
	gw_buf_puts(b, " AS ");
	gw_buf_ident(b, alias);
	gw_buf_puts(b, " SET ");
	for (int i = 0; i < ncols; i++)
	{
		if (i)
			gw_buf_puts(b, ", ");
		gw_buf_ident(b, cols[i]);
		if (r->missing_default && !json_object_get(root, cols[i]))
		{
			gw_buf_puts(b, " = DEFAULT");
			continue;
		}
		gw_buf_puts(b, " = pgrst_body.");
		gw_buf_ident(b, cols[i]);
	}
	gw_buf_puts(b, " FROM pg_catalog.json_populate_record(NULL::\"api\".");
	gw_buf_ident(b, rel->name);
	gw_buf_puts(b, ", ");
	gw_params_addn(c->params, r->body, r->body_len);
	gw_buf_printf(b, "$%d::json) AS pgrst_body", c->params->n);
	if (gw_sb_build_where(c, alias, rel, NULL))
		goto out;
	rc = finish_write(c, r, rel, p);
out:
	if (root)
		json_decref(root);
	return rc;
}

int
gw_sb_build_delete(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	gw_buf_puts(c->sql, "WITH pgrst_source AS (DELETE FROM \"api\".");
	gw_buf_ident(c->sql, rel->name);
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, alias);
	if (gw_sb_build_where(c, alias, rel, NULL))
		return -1;
	return finish_write(c, r, rel, p);
}

/* PUT: filters must be eq on exactly the primary key, and the body must carry the
 * same values (PGRST105 / PGRST115). */
int
gw_sb_check_put(ctx *c, const gw_request_shape *r, const gw_relation *rel)
{
	const gw_scope *top = gw_sb_scope_for(c, "");
	const gw_logic *w = top->where;
	if (top->limit >= 0 || top->offset > 0)
	{
		gw_error_set(c->e, 400, "PGRST114",
		             "limit/offset querystring parameters are not allowed for PUT", NULL, NULL);
		return -1;
	}
	int ok = rel->npk > 0 && w->nchildren == rel->npk;
	for (int i = 0; ok && i < w->nchildren; i++)
	{
		const gw_logic *l = w->children[i];
		ok = l->is_leaf && l->filter.op == GW_OP_EQ && !l->filter.negate && !l->filter.quant &&
		     !l->filter.field.njson;
		int inpk = 0;
		for (int k = 0; ok && k < rel->npk; k++)
			inpk |= !strcmp(rel->pk[k], l->filter.field.name);
		ok = ok && inpk;
	}
	if (!ok)
	{
		gw_error_set(c->e, 405, "PGRST105",
		             "Filters must include all and only primary key columns with 'eq' operators",
		             NULL, NULL);
		return -1;
	}
	json_error_t jerr;
	json_t *root = json_loadb(r->body ? r->body : "", r->body_len, JSON_DECODE_ANY, &jerr);
	json_t *obj =
	    root && json_is_array(root) && json_array_size(root) == 1 ? json_array_get(root, 0) : root;
	int match = obj && json_is_object(obj);
	for (int i = 0; match && i < w->nchildren; i++)
	{
		const gw_filter *f = &w->children[i]->filter;
		json_t *v = json_object_get(obj, f->field.name);
		char num[64];
		const char *text = NULL;
		if (json_is_string(v))
			text = json_string_value(v);
		else if (json_is_integer(v))
		{
			snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
			text = num;
		}
		match = text && !strcmp(text, f->value);
	}
	if (root)
		json_decref(root);
	if (!match)
	{
		gw_error_set(c->e, 400, "PGRST115",
		             "Payload values do not match URL in primary key column(s)", NULL, NULL);
		return -1;
	}
	return 0;
}
