/* PostgREST requests as SQL (see sql_build.h): reads, select lists, filters and
 * the dispatcher; writes are in sql_write.c, calls in sql_rpc.c, embeds in
 * sql_embed.c. All
 * share one shape: a pgrst_source CTE, then an outer SELECT that counts and
 * aggregates it into JSON or CSV, as PostgREST does. Identifiers go through gw_buf_ident,
 * values through gw_params; type names come only from the catalog or from the
 * cast validator in query_parse.c. */
#include "sql_build.h"
#include "sql_build_int.h"

#include "fuzzy.h"

#include <stdio.h>
#include <string.h>

void
gw_plan_init(gw_plan *p)
{
	memset(p, 0, sizeof *p);
	gw_buf_init(&p->sql);
	gw_params_init(&p->params);
	gw_buf_init(&p->count_sql);
	gw_params_init(&p->count_params);
}

void
gw_plan_free(gw_plan *p)
{
	gw_buf_free(&p->sql);
	gw_params_free(&p->params);
	gw_buf_free(&p->count_sql);
	gw_params_free(&p->count_params);
}

void
gw_sql_array_literal(gw_buf *b, char *const *items, int n)
{
	gw_buf_putc(b, '{');
	for (int i = 0; i < n; i++)
	{
		if (i)
			gw_buf_putc(b, ',');
		gw_buf_putc(b, '"');
		for (const char *c = items[i]; *c; c++)
		{
			if (*c == '"' || *c == '\\')
				gw_buf_putc(b, '\\');
			gw_buf_putc(b, *c);
		}
		gw_buf_putc(b, '"');
	}
	gw_buf_putc(b, '}');
}

void
gw_sb_param(ctx *c, const char *value)
{
	gw_buf_putc(c->sql, '$'); /* no printf: every parameter of every request */
	gw_buf_put_long(c->sql, gw_params_add(c->params, value));
}

/* "alias"."col"->$n... for a field; JSON keys that are integers index arrays. */
void
gw_sb_field_expr(ctx *c, const char *alias, const gw_field *f)
{
	if (alias)
	{
		gw_buf_ident(c->sql, alias);
		gw_buf_putc(c->sql, '.');
	}
	gw_buf_ident(c->sql, f->name);
	for (int i = 0; i < f->njson; i++)
	{
		const char *k = f->json_key[i];
		int is_int = *k != '\0';
		for (const char *p = k[0] == '-' ? k + 1 : k; *p; p++)
			if (*p < '0' || *p > '9')
				is_int = 0;
		if (k[0] == '-' && !k[1])
			is_int = 0;
		gw_buf_puts(c->sql, f->json_text[i] ? "->>" : "->");
		gw_sb_param(c, k);
		gw_buf_puts(c->sql, is_int && strlen(k) < 10 ? "::integer" : "::text");
	}
}

const char *
gw_sb_field_output_name(const gw_field *f)
{
	return f->njson ? f->json_key[f->njson - 1] : f->name;
}

static void
column_missing(ctx *c, const char *rel, const char *col)
{
	char msg[300];
	snprintf(msg, sizeof msg, "column %s.%s does not exist", rel, col);
	gw_error_set(c->e, 400, "42703", msg, NULL, NULL);
}

/* Refuses a column the relation does not have; rel NULL (function results) lets
 * PostgreSQL decide. */
int
gw_sb_check_column(ctx *c, const gw_relation *rel, const char *col)
{
	if (rel && !gw_relation_column(rel, col))
	{
		column_missing(c, rel->name, col);
		return -1;
	}
	return 0;
}

static const char *const op_sql[] = {
    "=",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "LIKE",
    "ILIKE",
    "~",
    "~*",
    "= ANY",
    "IS",
    "IS DISTINCT FROM",
    "@@",
    "@@",
    "@@",
    "@@",
    "@>",
    "<@",
    "&&",
    "<<",
    ">>",
    "&<",
    "&>",
    "-|-",
};

/* The embed of the level being filtered that a filter names (by alias, else
 * by relation), or NULL. */
static const gw_select_item *
filtered_embed(ctx *c, const gw_filter *f)
{
	const gw_select *sel = c->filter_select;
	if (!sel || f->field.njson)
		return NULL;
	for (int i = 0; i < sel->n; i++)
	{
		const gw_select_item *it = &sel->items[i];
		if (it->kind == GW_SEL_EMBED && !it->spread &&
		    !strcmp(it->alias ? it->alias : it->relation, f->field.name))
			return it;
	}
	return NULL;
}

static int
build_filter(ctx *c, const char *alias, const gw_relation *rel, const gw_filter *f)
{
	const gw_select_item *embed = filtered_embed(c, f);
	if (embed)
		return gw_sb_embed_null_filter(c, alias, rel, embed, f);
	if (gw_sb_check_column(c, rel, f->field.name))
		return -1;
	if (f->negate)
		gw_buf_puts(c->sql, "NOT (");
	gw_sb_field_expr(c, alias, &f->field);
	gw_buf_putc(c->sql, ' ');
	if (f->op == GW_OP_IN || f->quant)
	{
		gw_buf arr;
		gw_buf_init(&arr);
		gw_sql_array_literal(&arr, f->list, f->nlist);
		if (f->op == GW_OP_IN)
			gw_buf_puts(c->sql, "= ANY (");
		else
			gw_buf_printf(c->sql, "%s %s (", op_sql[f->op],
			              f->quant == GW_QUANT_ANY ? "ANY" : "ALL");
		gw_sb_param(c, arr.data);
		gw_buf_putc(c->sql, ')');
		gw_buf_free(&arr);
	}
	else if (f->op == GW_OP_IS)
	{
		/* the value was checked against a fixed list in the parser */
		gw_buf_puts(c->sql, "IS ");
		gw_buf_puts(c->sql, !strcmp(f->value, "null")       ? "NULL"
		                    : !strcmp(f->value, "not_null") ? "NOT NULL"
		                    : !strcmp(f->value, "true")     ? "TRUE"
		                    : !strcmp(f->value, "false")    ? "FALSE"
		                                                    : "UNKNOWN");
	}
	else if (f->op >= GW_OP_FTS && f->op <= GW_OP_WFTS)
	{
		static const char *const fn[] = {"to_tsquery", "plainto_tsquery", "phraseto_tsquery",
		                                 "websearch_to_tsquery"};
		gw_buf_printf(c->sql, "@@ pg_catalog.%s(", fn[f->op - GW_OP_FTS]);
		if (f->lang)
		{
			gw_sb_param(c, f->lang);
			gw_buf_puts(c->sql, "::regconfig, ");
		}
		gw_sb_param(c, f->value);
		gw_buf_puts(c->sql, "::text)");
	}
	else
	{
		gw_buf_puts(c->sql, op_sql[f->op]);
		gw_buf_putc(c->sql, ' ');
		gw_sb_param(c, f->value);
	}
	if (f->negate)
		gw_buf_putc(c->sql, ')');
	return 0;
}

/* Appends the tree as a condition; an empty AND is TRUE. */
int
gw_sb_build_logic(ctx *c, const char *alias, const gw_relation *rel, const gw_logic *l)
{
	if (l->is_leaf)
		return build_filter(c, alias, rel, &l->filter);
	if (l->negate)
		gw_buf_puts(c->sql, "NOT ");
	if (!l->nchildren)
	{
		gw_buf_puts(c->sql, "TRUE");
		return 0;
	}
	gw_buf_putc(c->sql, '(');
	for (int i = 0; i < l->nchildren; i++)
	{
		if (i)
			gw_buf_puts(c->sql, l->is_or ? " OR " : " AND ");
		if (gw_sb_build_logic(c, alias, rel, l->children[i]))
			return -1;
	}
	gw_buf_putc(c->sql, ')');
	return 0;
}

/* order=rel(col): a correlated lookup of the to-one embed's column. The embed is
 * found by alias or name among the level's select items, or by relation name. */
static int
order_by_embed(ctx *c, const char *alias, const gw_relation *rel, const gw_order_term *t)
{
	gw_select_item tmp = {.kind = GW_SEL_EMBED, .relation = t->embed};
	const gw_select_item *it = &tmp;
	const gw_select *sel = c->order_select;
	for (int i = 0; sel && i < sel->n; i++)
	{
		const gw_select_item *s = &sel->items[i];
		if (s->kind == GW_SEL_EMBED &&
		    ((s->alias && !strcmp(s->alias, t->embed)) || !strcmp(s->relation, t->embed)))
			it = s;
	}
	gw_rel_match m;
	const gw_relation *target;
	if (gw_sb_resolve_embed(c, rel, it, &m, &target))
		return -1;
	if (!m.to_one)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "A related order on '%s' is not possible", t->embed);
		gw_error_set(c->e, 400, "PGRST118", msg, "Only to-one relationships can be ordered by.",
		             NULL);
		return -1;
	}
	if (gw_sb_check_column(c, target, t->field.name))
		return -1;
	char child[32];
	snprintf(child, sizeof child, "pgrst_o%d", ++c->alias_seq);
	gw_buf_puts(c->sql, "(SELECT ");
	gw_sb_field_expr(c, child, &t->field);
	gw_sb_embed_from(c, &m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	gw_sb_join_condition(c, &m, alias, child);
	gw_buf_putc(c->sql, ')');
	return 0;
}

int
gw_sb_build_order(ctx *c, const char *alias, const gw_relation *rel, const gw_scope *sc)
{
	if (!sc || !sc->norder)
		return 0;
	gw_buf_puts(c->sql, " ORDER BY ");
	for (int i = 0; i < sc->norder; i++)
	{
		const gw_order_term *t = &sc->order[i];
		if (i)
			gw_buf_puts(c->sql, ", ");
		if (t->embed)
		{
			if (order_by_embed(c, alias, rel, t))
				return -1;
		}
		else
		{
			if (gw_sb_check_column(c, rel, t->field.name))
				return -1;
			gw_sb_field_expr(c, alias, &t->field);
		}
		gw_buf_puts(c->sql, t->desc ? " DESC" : " ASC");
		if (t->nulls)
			gw_buf_puts(c->sql, t->nulls == GW_NULLS_FIRST ? " NULLS FIRST" : " NULLS LAST");
	}
	return 0;
}

void
gw_sb_build_limit(ctx *c, long limit, long offset)
{
	char n[32];
	if (limit >= 0)
	{
		snprintf(n, sizeof n, "%ld", limit);
		gw_buf_puts(c->sql, " LIMIT ");
		gw_sb_param(c, n);
		gw_buf_puts(c->sql, "::bigint");
	}
	if (offset > 0)
	{
		snprintf(n, sizeof n, "%ld", offset);
		gw_buf_puts(c->sql, " OFFSET ");
		gw_sb_param(c, n);
		gw_buf_puts(c->sql, "::bigint");
	}
}

const gw_scope *
gw_sb_scope_for(ctx *c, const char *path)
{
	return gw_query_find_scope(c->q, path);
}

/* PostgREST's legacy count: a selected "count" that is not a column of the
 * relation is count(*), allowed even when aggregate functions are not. */
static int
legacy_count(const gw_relation *rel, const gw_select_item *it)
{
	return it->kind == GW_SEL_FIELD && !it->agg && rel && it->field.name &&
	       !strcmp(it->field.name, "count") && !it->field.njson && !it->cast &&
	       !gw_relation_column(rel, "count");
}

/* An aggregate item: agg(CAST(field AS cast)) [::agg_cast] AS alias. */
static int
build_aggregate(ctx *c, const char *alias, const gw_relation *rel, const gw_select_item *it)
{
	if (legacy_count(rel, it))
	{
		gw_buf_puts(c->sql, "pg_catalog.count(*) AS ");
		gw_buf_ident(c->sql, it->alias ? it->alias : "count");
		return 0;
	}
	if (!c->aggregates)
	{
		gw_error_set(c->e, 400, "PGRST123", "Use of aggregate functions is not allowed", NULL,
		             NULL);
		return -1;
	}
	if (!it->agg_star && gw_sb_check_column(c, rel, it->field.name))
		return -1;
	if (it->agg_cast)
		gw_buf_puts(c->sql, "CAST(");
	gw_buf_printf(c->sql, "pg_catalog.%s(", gw_agg_name(it->agg));
	if (it->agg_star)
		gw_buf_putc(c->sql, '*');
	else
	{
		if (it->cast)
			gw_buf_puts(c->sql, "CAST(");
		gw_sb_field_expr(c, alias, &it->field);
		if (it->cast)
			gw_buf_printf(c->sql, " AS %s)", it->cast);
	}
	gw_buf_putc(c->sql, ')');
	if (it->agg_cast)
		gw_buf_printf(c->sql, " AS %s)", it->agg_cast);
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, it->alias ? it->alias : gw_agg_name(it->agg));
	return 0;
}

/* The select list of one level. With aggregates, every other output column is
 * grouped by its position (c->group_by), as PostgREST groups by the selected
 * columns; * is spelled out as the relation's columns then. */
int
gw_sb_build_select_list(ctx *c, const char *alias, const gw_relation *rel, const gw_select *sel,
                        const char *path, gw_buf *inner_conds)
{
	c->group_by = NULL;
	if (!sel || !sel->n)
	{
		if (sel && !sel->n)
		{ /* rel() embeds with no columns */
			gw_buf_puts(c->sql, "NULL::int AS pgrst_none");
			return 0;
		}
		gw_buf_ident(c->sql, alias);
		gw_buf_puts(c->sql, ".*");
		return 0;
	}
	int has_agg = 0;
	for (int i = 0; i < sel->n; i++)
	{
		const gw_select_item *it = &sel->items[i];
		has_agg |= it->kind == GW_SEL_FIELD && (it->agg || legacy_count(rel, it));
		/* an aggregate inside a spread aggregates this level */
		for (int k = 0; it->kind == GW_SEL_EMBED && it->spread && it->children &&
		                k < it->children->n;
		     k++)
			has_agg |= it->children->items[k].kind == GW_SEL_FIELD && it->children->items[k].agg;
	}
	gw_buf group;
	gw_buf_init(&group);
	int nout = 0;
	for (int i = 0; i < sel->n; i++)
	{
		const gw_select_item *it = &sel->items[i];
		int before = nout;
		if (i)
			gw_buf_puts(c->sql, ", ");
		switch (it->kind)
		{
		case GW_SEL_STAR:
			if (has_agg && !rel)
			{
				gw_error_set(c->e, 400, "PGRST100",
				             "aggregate functions with * need the columns named here", NULL, NULL);
				gw_buf_free(&group);
				return -1;
			}
			if (has_agg)
			{
				for (int k = 0; k < rel->ncols; k++)
				{
					if (k)
						gw_buf_puts(c->sql, ", ");
					gw_buf_ident(c->sql, alias);
					gw_buf_putc(c->sql, '.');
					gw_buf_ident(c->sql, rel->cols[k].name);
					nout++;
				}
				break;
			}
			gw_buf_ident(c->sql, alias);
			gw_buf_puts(c->sql, ".*");
			break;
		case GW_SEL_FIELD:
			if (it->agg || legacy_count(rel, it))
			{
				if (build_aggregate(c, alias, rel, it))
				{
					gw_buf_free(&group);
					return -1;
				}
				nout++;
				before = nout; /* not grouped */
				break;
			}
			if (gw_sb_check_column(c, rel, it->field.name))
			{
				gw_buf_free(&group);
				return -1;
			}
			if (it->cast)
				gw_buf_puts(c->sql, "CAST(");
			gw_sb_field_expr(c, alias, &it->field);
			if (it->cast)
				gw_buf_printf(c->sql, " AS %s)", it->cast);
			gw_buf_puts(c->sql, " AS ");
			gw_buf_ident(c->sql, it->alias ? it->alias : gw_sb_field_output_name(&it->field));
			nout++;
			break;
		case GW_SEL_EMBED:
			c->group_embeds = has_agg;
			/* a spread adds its grouped columns itself (not its aggregates) */
			c->spread_group = it->spread && has_agg ? &group : NULL;
			if (gw_sb_build_embed(c, alias, rel, it, path, inner_conds, &nout))
			{
				c->spread_group = NULL;
				gw_buf_free(&group);
				return -1;
			}
			if (it->spread)
				before = nout;
			c->spread_group = NULL;
			break;
		}
		for (int k = before; k < nout; k++)
			gw_buf_printf(&group, "%s%d", group.len ? ", " : " GROUP BY ", k + 1);
	}
	if (has_agg && group.len)
		c->group_by = gw_arena_strdup(c->a, group.data);
	gw_buf_free(&group);
	return 0;
}

/* The body and counts over pgrst_source, as PostgREST aggregates them. */
void
gw_sb_build_outer(ctx *c, const gw_request_shape *r, gw_plan *p, const char *count_sql,
                  const char *source)
{
	gw_buf *b = c->sql;
	gw_buf_puts(b, " SELECT ");
	gw_buf_puts(b, count_sql ? count_sql : "NULL::text");
	gw_buf_puts(b, " AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, ");
	if (!p->returns_body)
	{
		gw_buf_puts(b, "''::text AS body");
	}
	else if (p->rpc_scalar)
	{
		gw_buf_puts(b, "(pg_catalog.json_agg(_postgrest_t.pgrst_scalar)->0)::text AS body");
	}
	else if (p->rpc_scalar_set && p->output != GW_OUT_CSV)
	{
		gw_buf_puts(b,
		            "coalesce(pg_catalog.json_agg(_postgrest_t.pgrst_scalar), '[]')::text AS body");
	}
	else if (p->output == GW_OUT_CSV)
	{
		gw_buf_printf(
		    b,
		    "(SELECT coalesce(string_agg(a.k, ','), '') FROM (SELECT "
		    "pg_catalog.json_object_keys(r) AS k"
		    " FROM (SELECT pg_catalog.row_to_json(hh) AS r FROM %s AS hh LIMIT 1) AS s) AS a)"
		    " || E'\\n' || coalesce(string_agg(substring(_postgrest_t::text, 2, "
		    "length(_postgrest_t::text) - 2), E'\\n'), '') AS body",
		    source);
	}
	else if (p->output == GW_OUT_SINGLE || p->rpc_single)
	{
		gw_buf_puts(b, "coalesce((pg_catalog.json_agg(_postgrest_t)->0)::text, 'null') AS body");
	}
	else
	{
		gw_buf_puts(b, "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text AS body");
	}
	if (p->insert_location)
	{
		/* the first written row's key values, for the Location header */
		const gw_relation *rel = gw_schema_relation(c->s, r->target);
		gw_buf_puts(b, ", (SELECT pg_catalog.json_build_array(");
		for (int i = 0; i < rel->npk; i++)
		{
			if (i)
				gw_buf_puts(b, ", ");
			gw_buf_puts(b, "k.");
			gw_buf_ident(b, rel->pk[i]);
			gw_buf_puts(b, "::text");
		}
		gw_buf_puts(b, ")::text FROM pgrst_source AS k LIMIT 1) AS location");
	}
	else
	{
		gw_buf_puts(b, ", NULL::text AS location");
	}
	/* what the statement asked for through PostgREST's response GUCs, read after
	 * the aggregate has run the statement */
	gw_buf_puts(b, ", nullif(pg_catalog.current_setting('response.headers', true), '') AS response_headers"
	               ", nullif(pg_catalog.current_setting('response.status', true), '') AS response_status");
	if (r->action != GW_ACTION_READ && r->action != GW_ACTION_RPC && r->output == GW_OUT_SINGLE)
	{
		/* a write that must touch exactly one row fails inside the statement so
		 * that the pipelined COMMIT is skipped and the pool rolls back (PGRST116) */
		gw_buf_puts(b, ", CASE WHEN pg_catalog.count(_postgrest_t) <> 1 THEN ('pgrst_single:' || "
		               "pg_catalog.count(_postgrest_t))::integer END AS single_check");
	}
	if (r->max_affected_set && (r->action == GW_ACTION_UPDATE || r->action == GW_ACTION_DELETE ||
	                            r->action == GW_ACTION_RPC))
	{
		/* Prefer: handling=strict, max-affected=N: more rows (written, or
		 * returned by a function) fail the statement the same way, so nothing
		 * is committed (PGRST124) */
		char n[32];
		snprintf(n, sizeof n, "%ld", r->max_affected);
		gw_buf_puts(b, ", CASE WHEN pg_catalog.count(_postgrest_t) > ");
		gw_sb_param(c, n);
		gw_buf_puts(b, "::bigint THEN ('pgrst_max_affected:' || "
		               "pg_catalog.count(_postgrest_t))::integer END AS max_affected_check");
	}
	if (c->upsert_rel)
	{
		/* the statement sees the relation as it was before the upsert: a
		 * written row whose key was not there yet was inserted (201, else 200) */
		gw_buf_puts(b, ", (SELECT pg_catalog.count(*) FROM pgrst_source AS pgrst_new WHERE NOT EXISTS "
		               "(SELECT 1 FROM \"api\".");
		gw_buf_ident(b, c->upsert_rel->name);
		gw_buf_puts(b, " AS pgrst_old WHERE ");
		for (int i = 0; i < c->nupsert_cols; i++)
		{
			gw_buf_puts(b, i ? " AND pgrst_old." : "pgrst_old.");
			gw_buf_ident(b, c->upsert_cols[i]);
			gw_buf_puts(b, " = pgrst_new.");
			gw_buf_ident(b, c->upsert_cols[i]);
		}
		gw_buf_puts(b, ")) AS pgrst_inserted");
	}
	gw_buf_puts(b, " FROM (SELECT * FROM ");
	gw_buf_puts(b, source);
	gw_buf_puts(b, ") AS _postgrest_t");
}

/* WHERE for the top level: filters plus the EXISTS of !inner embeds. */
int
gw_sb_build_where(ctx *c, const char *alias, const gw_relation *rel, const gw_buf *inner)
{
	const gw_scope *top = gw_sb_scope_for(c, "");
	gw_buf_puts(c->sql, " WHERE ");
	c->filter_select = c->q->select;
	c->filter_path = "";
	int rc = gw_sb_build_logic(c, alias, rel, top->where);
	c->filter_select = NULL;
	if (rc)
		return -1;
	if (inner && inner->len)
		gw_buf_append(c->sql, inner->data, inner->len);
	return 0;
}

int
gw_page_range(const gw_request_shape *r, long *limit, long *offset, gw_error *e)
{
	const gw_scope *top = gw_query_find_scope(r->query, "");
	*limit = top ? top->limit : -1;
	long query_offset = top && top->offset > 0 ? top->offset : 0;
	*offset = query_offset;
	if (r->range_offset >= 0)
	{
		/* checked: offset= and a Range's first row are each at most the largest
		 * bigint, their sum need not be */
		if (__builtin_add_overflow(*offset, r->range_offset, offset))
		{
			char details[160];
			snprintf(details, sizeof details,
			         "An offset of %ld and a range from row %ld start past the last possible row.",
			         query_offset, r->range_offset);
			gw_error_set(e, 416, "PGRST103", "Requested range not satisfiable", details, NULL);
			return -1;
		}
		if (r->range_limit >= 0 && (*limit < 0 || r->range_limit < *limit))
			*limit = r->range_limit;
	}
	return 0;
}

static int
build_read(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	long limit, offset;
	if (gw_page_range(r, &limit, &offset, c->e))
		return -1;
	gw_buf inner;
	gw_buf_init(&inner);
	gw_buf_puts(c->sql, "WITH pgrst_source AS (SELECT ");
	int rc = gw_sb_build_select_list(c, alias, rel, c->q->select, "", &inner);
	const char *group_by = c->group_by;
	if (!rc)
	{
		gw_buf_puts(c->sql, " FROM \"api\".");
		gw_buf_ident(c->sql, rel->name);
		gw_buf_puts(c->sql, " AS ");
		gw_buf_ident(c->sql, alias);
		rc = gw_sb_build_where(c, alias, rel, &inner);
		if (!rc && group_by)
			gw_buf_puts(c->sql, group_by);
	}
	if (!rc)
	{
		c->order_select = c->q->select;
		rc = gw_sb_build_order(c, alias, rel, gw_sb_scope_for(c, ""));
		c->order_select = NULL;
	}
	if (!rc)
		gw_sb_build_limit(c, limit, offset);
	gw_buf_putc(c->sql, ')');
	gw_buf count;
	gw_buf_init(&count);
	if (!rc && r->count == GW_COUNT_EXACT)
	{
		gw_buf *saved = c->sql;
		c->sql = &count;
		gw_buf_puts(c->sql, "(SELECT pg_catalog.count(*) FROM \"api\".");
		gw_buf_ident(c->sql, rel->name);
		gw_buf_puts(c->sql, " AS ");
		gw_buf_ident(c->sql, alias);
		rc = gw_sb_build_where(c, alias, rel, &inner);
		gw_buf_puts(c->sql, ")::text");
		c->sql = saved;
	}
	if (!rc && r->count == GW_COUNT_PLANNED)
	{
		/* the planner's estimate of the filtered relation; !inner embeds are left
		 * out, which an estimate may do */
		ctx c2 = *c;
		c2.sql = &p->count_sql;
		c2.params = &p->count_params;
		gw_buf_puts(c2.sql, "EXPLAIN (FORMAT JSON) SELECT 1 FROM \"api\".");
		gw_buf_ident(c2.sql, rel->name);
		gw_buf_puts(c2.sql, " AS ");
		gw_buf_ident(c2.sql, alias);
		rc = gw_sb_build_where(&c2, alias, rel, NULL);
	}
	if (!rc)
	{
		p->returns_body = 1;
		gw_sb_build_outer(c, r, p, count.len ? count.data : NULL, "pgrst_source");
	}
	gw_buf_free(&inner);
	gw_buf_free(&count);
	p->read_only = 1;
	return rc;
}

int
gw_build(gw_arena *a, const gw_schema *s, const gw_request_shape *r, gw_plan *p, gw_error *e)
{
	ctx c = {.a = a,
	         .s = s,
	         .q = r->query,
	         .shape = r,
	         .sql = &p->sql,
	         .params = &p->params,
	         .e = e,
	         .aggregates = r->aggregates};
	p->output = r->output;
	if (r->action == GW_ACTION_RPC)
		return gw_sb_build_rpc(&c, r, p);
	const gw_relation *rel = gw_schema_relation(s, r->target);
	if (!rel)
	{
		char msg[300], hint[300] = "";
		snprintf(msg, sizeof msg, "Could not find the table 'api.%s' in the schema cache",
		         r->target);
		const char **names = gw_arena_alloc(a, sizeof(char *) * (size_t)(s->nrels + 1));
		for (int i = 0; i < s->nrels; i++)
			names[i] = s->rels[i].name;
		int best = gw_fuzzy_best(r->target, names, s->nrels, GW_FUZZY_MIN_TABLE);
		if (best >= 0)
			snprintf(hint, sizeof hint, "Perhaps you meant the table 'api.%s'", names[best]);
		gw_error_set(e, 404, "PGRST205", msg, NULL, hint[0] ? hint : NULL);
		return -1;
	}
	switch (r->action)
	{
	case GW_ACTION_READ:
		return build_read(&c, r, rel, p);
	case GW_ACTION_INSERT:
		return gw_sb_build_insert(&c, r, rel, p);
	case GW_ACTION_UPSERT_PUT:
		if (gw_sb_check_put(&c, r, rel))
			return -1;
		return gw_sb_build_insert(&c, r, rel, p);
	case GW_ACTION_UPDATE:
		return gw_sb_build_update(&c, r, rel, p);
	case GW_ACTION_DELETE:
		return gw_sb_build_delete(&c, r, rel, p);
	}
	gw_error_set(e, 405, "PGRST117", "Unsupported HTTP method", NULL, NULL);
	return -1;
}
