/* PostgREST requests as SQL (see sql_build.h): reads, select lists, embeds,
 * filters and the dispatcher; writes are in sql_write.c, calls in sql_rpc.c. All
 * share one shape: a pgrst_source CTE, then an outer SELECT that counts and
 * aggregates it into JSON or CSV, as PostgREST does. Identifiers go through gw_buf_ident,
 * values through gw_params; type names come only from the catalog or from the
 * cast validator in query_parse.c. */
#include "sql_build.h"
#include "sql_build_int.h"

#include "fuzzy.h"

#include <stdio.h>
#include <string.h>

#define MAX_MATCHES 8

void
gw_error_set(gw_error *e, int status, const char *code, const char *message, const char *details,
             const char *hint)
{
	e->status = status;
	e->details_json = 0;
	snprintf(e->code, sizeof e->code, "%s", code);
	snprintf(e->message, sizeof e->message, "%s", message ? message : "");
	snprintf(e->details, sizeof e->details, "%s", details ? details : "");
	snprintf(e->hint, sizeof e->hint, "%s", hint ? hint : "");
}

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
	gw_buf_printf(c->sql, "$%d", gw_params_add(c->params, value));
}

/* "alias"."col"->$n... for a field; JSON keys that are integers index arrays. */
static void
field_expr(ctx *c, const char *alias, const gw_field *f)
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

static const char *
field_output_name(const gw_field *f)
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
static int
check_column(ctx *c, const gw_relation *rel, const char *col)
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

static int embed_null_filter(ctx *c, const char *alias, const gw_relation *rel,
                             const gw_select_item *it, const gw_filter *f);

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
		return embed_null_filter(c, alias, rel, embed, f);
	if (check_column(c, rel, f->field.name))
		return -1;
	if (f->negate)
		gw_buf_puts(c->sql, "NOT (");
	field_expr(c, alias, &f->field);
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
		gw_buf_printf(c->sql, "%s ", op_sql[f->op]);
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

static int resolve_embed(ctx *c, const gw_relation *parent, const gw_select_item *it,
                         gw_rel_match *m, const gw_relation **target);
static void embed_from(ctx *c, const gw_rel_match *m, const char *target, const char *child);
static void join_condition(ctx *c, const gw_rel_match *m, const char *parent_alias,
                           const char *child_alias);

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
	if (resolve_embed(c, rel, it, &m, &target))
		return -1;
	if (!m.to_one)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "A related order on '%s' is not possible", t->embed);
		gw_error_set(c->e, 400, "PGRST118", msg, "Only to-one relationships can be ordered by.",
		             NULL);
		return -1;
	}
	if (check_column(c, target, t->field.name))
		return -1;
	char child[32];
	snprintf(child, sizeof child, "pgrst_o%d", ++c->alias_seq);
	gw_buf_puts(c->sql, "(SELECT ");
	field_expr(c, child, &t->field);
	embed_from(c, &m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	join_condition(c, &m, alias, child);
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
			if (check_column(c, rel, t->field.name))
				return -1;
			field_expr(c, alias, &t->field);
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

int gw_sb_build_select_list(ctx *c, const char *alias, const gw_relation *rel, const gw_select *sel,
                            const char *path, gw_buf *inner_conds);

/* PostgREST's hint for PGRST200: when the parent has relationships, the closest
 * of its related relations that is not the child itself; otherwise the closest
 * relation that has relationships, for the parent. */
static void
no_relationship_hint(ctx *c, const char *parent, const char *child, char *out, size_t n)
{
	const char **related = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(2 * c->s->nfks + 1));
	int nrel = 0;
	for (int i = 0; i < c->s->nfks; i++)
	{
		const gw_fk *f = &c->s->fks[i];
		if (!strcmp(f->from, parent))
			related[nrel++] = f->to;
		if (!strcmp(f->to, parent))
			related[nrel++] = f->from;
	}
	if (nrel)
	{
		int best = gw_fuzzy_best(child, related, nrel, GW_FUZZY_MIN);
		if (best >= 0 && strcmp(related[best], child))
			snprintf(out, n, "Perhaps you meant '%s' instead of '%s'.", related[best], child);
		return;
	}
	for (int i = 0; i < c->s->nfks; i++)
	{
		related[nrel++] = c->s->fks[i].from;
		related[nrel++] = c->s->fks[i].to;
	}
	int best = gw_fuzzy_best(parent, related, nrel, GW_FUZZY_MIN);
	if (best >= 0)
		snprintf(out, n, "Perhaps you meant '%s' instead of '%s'.", related[best], parent);
}

static void
cols_list(gw_buf *b, char *const *cols, int n)
{
	gw_buf_putc(b, '(');
	for (int i = 0; i < n; i++)
		gw_buf_printf(b, "%s%s", i ? ", " : "", cols[i]);
	gw_buf_putc(b, ')');
}

/* PGRST201's details (each relationship as PostgREST describes it, a JSON
 * array) and hint (the embed spelled with each one's name). */
static void
ambiguous_embed(ctx *c, const char *parent, const char *child, const gw_rel_match *all, int n)
{
	gw_buf d, h, rel;
	gw_buf_init(&d);
	gw_buf_init(&h);
	gw_buf_printf(&h, "Try changing '%s' to one of the following: ", child);
	gw_buf_putc(&d, '[');
	for (int i = 0; i < n; i++)
	{
		const gw_rel_match *m = &all[i];
		gw_buf_init(&rel);
		const char *cardinality, *name;
		if (m->junction)
		{
			cardinality = "many-to-many";
			name = m->junction;
			gw_buf_printf(&rel, "%s using %s", m->junction, m->fk->name);
			cols_list(&rel, m->fk->from_cols, m->fk->ncols);
			gw_buf_printf(&rel, " and %s", m->fk2->name);
			cols_list(&rel, m->fk2->from_cols, m->fk2->ncols);
		}
		else if (m->to_one)
		{
			cardinality = "many-to-one";
			name = m->fk->name;
			gw_buf_printf(&rel, "%s using %s", m->fk->name, parent);
			cols_list(&rel, m->fk->from_cols, m->fk->ncols);
			gw_buf_printf(&rel, " and %s", child);
			cols_list(&rel, m->fk->to_cols, m->fk->ncols);
		}
		else
		{
			cardinality = "one-to-many";
			name = m->fk->name;
			gw_buf_printf(&rel, "%s using %s", m->fk->name, parent);
			cols_list(&rel, m->fk->to_cols, m->fk->ncols);
			gw_buf_printf(&rel, " and %s", child);
			cols_list(&rel, m->fk->from_cols, m->fk->ncols);
		}
		char embedding[300];
		snprintf(embedding, sizeof embedding, "%s with %s", parent, child);
		gw_buf_puts(&d, i ? ",{\"cardinality\":" : "{\"cardinality\":");
		gw_buf_json_str(&d, cardinality);
		gw_buf_puts(&d, ",\"embedding\":");
		gw_buf_json_str(&d, embedding);
		gw_buf_puts(&d, ",\"relationship\":");
		gw_buf_json_str(&d, rel.data);
		gw_buf_putc(&d, '}');
		gw_buf_printf(&h, "%s'%s!%s'", i ? ", " : "", child, name);
		gw_buf_free(&rel);
	}
	gw_buf_putc(&d, ']');
	gw_buf_puts(&h, ". Find the desired relationship in the 'details' key.");
	gw_error_set(c->e, 300, "PGRST201", "", NULL, h.data);
	if (d.len < sizeof c->e->details)
	{
		snprintf(c->e->details, sizeof c->e->details, "%s", d.data);
		c->e->details_json = 1;
	}
	gw_buf_free(&d);
	gw_buf_free(&h);
}

/* Resolves an embed to exactly one foreign key, as PostgREST does (PGRST200/201). */
static int
resolve_embed(ctx *c, const gw_relation *parent, const gw_select_item *it, gw_rel_match *m,
              const gw_relation **target)
{
	char msg[400];
	*target = gw_schema_relation(c->s, it->relation);
	gw_rel_match all[MAX_MATCHES];
	int n = (parent && *target) ? gw_schema_relationships(c->s, parent->name, it->relation,
	                                                      it->hint, all, MAX_MATCHES)
	                            : 0;
	if (n == 0)
	{
		const char *pname = parent ? parent->name : "?";
		char details[512], hint[300] = "";
		snprintf(msg, sizeof msg,
		         "Could not find a relationship between '%s' and '%s' in the schema cache", pname,
		         it->relation);
		snprintf(details, sizeof details,
		         "Searched for a foreign key relationship between '%s' and '%s'%s%s%s in the "
		         "schema 'api', but no matches were found.",
		         pname, it->relation, it->hint ? " using the hint '" : "", it->hint ? it->hint : "",
		         it->hint ? "'" : "");
		no_relationship_hint(c, pname, it->relation, hint, sizeof hint);
		gw_error_set(c->e, 400, "PGRST200", msg, details, hint[0] ? hint : NULL);
		return -1;
	}
	if (n > 1)
	{
		snprintf(msg, sizeof msg,
		         "Could not embed because more than one relationship was found for '%s' and '%s'",
		         parent->name, it->relation);
		ambiguous_embed(c, parent->name, it->relation, all, n);
		c->e->status = 300;
		snprintf(c->e->code, sizeof c->e->code, "PGRST201");
		snprintf(c->e->message, sizeof c->e->message, "%s", msg);
		return -1;
	}
	*m = all[0];
	return 0;
}

static void
cols_equal(ctx *c, const char *a1, char *const *c1, const char *a2, char *const *c2, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (i)
			gw_buf_puts(c->sql, " AND ");
		gw_buf_ident(c->sql, a1);
		gw_buf_putc(c->sql, '.');
		gw_buf_ident(c->sql, c1[i]);
		gw_buf_puts(c->sql, " = ");
		gw_buf_ident(c->sql, a2);
		gw_buf_putc(c->sql, '.');
		gw_buf_ident(c->sql, c2[i]);
	}
}

/* FROM "api"."target" AS child [JOIN "api"."junction" AS child_j ON ...] */
static void
embed_from(ctx *c, const gw_rel_match *m, const char *target, const char *child)
{
	gw_buf_puts(c->sql, " FROM \"api\".");
	gw_buf_ident(c->sql, target);
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, child);
	if (m->junction)
	{
		char j[48];
		snprintf(j, sizeof j, "%s_j", child);
		gw_buf_puts(c->sql, " JOIN \"api\".");
		gw_buf_ident(c->sql, m->junction);
		gw_buf_puts(c->sql, " AS ");
		gw_buf_ident(c->sql, j);
		gw_buf_puts(c->sql, " ON ");
		cols_equal(c, j, m->fk2->from_cols, child, m->fk2->to_cols, m->fk2->ncols);
	}
}

static void
join_condition(ctx *c, const gw_rel_match *m, const char *parent_alias, const char *child_alias)
{
	if (m->junction)
	{
		char j[48];
		snprintf(j, sizeof j, "%s_j", child_alias);
		cols_equal(c, j, m->fk->from_cols, parent_alias, m->fk->to_cols, m->fk->ncols);
		return;
	}
	for (int i = 0; i < m->fk->ncols; i++)
	{
		if (i)
			gw_buf_puts(c->sql, " AND ");
		/* to_one: parent.from = child.to; to_many: child.from = parent.to */
		gw_buf_ident(c->sql, child_alias);
		gw_buf_putc(c->sql, '.');
		gw_buf_ident(c->sql, m->to_one ? m->fk->to_cols[i] : m->fk->from_cols[i]);
		gw_buf_puts(c->sql, " = ");
		gw_buf_ident(c->sql, parent_alias);
		gw_buf_putc(c->sql, '.');
		gw_buf_ident(c->sql, m->to_one ? m->fk->from_cols[i] : m->fk->to_cols[i]);
	}
}

static const gw_scope *
embed_scope(ctx *c, const char *path, const gw_select_item *it, char **child_path)
{
	const char *names[2] = {it->alias, it->relation};
	for (int i = 0; i < 2; i++)
	{
		if (!names[i])
			continue;
		char *p = gw_arena_alloc(c->a, strlen(path) + strlen(names[i]) + 2);
		sprintf(p, "%s%s%s", path, *path ? "." : "", names[i]);
		*child_path = p;
		const gw_scope *s = gw_sb_scope_for(c, p);
		if (s)
			return s;
	}
	return NULL;
}

/* " AND <filters of the embed's scope>", with the embed's own embeds known
 * for null filters; the caller's level is restored afterwards. */
static int
embed_where(ctx *c, const char *child, const gw_relation *target, const gw_select_item *it,
            const char *child_path, const gw_scope *sc)
{
	const gw_select *saved_sel = c->filter_select;
	const char *saved_path = c->filter_path;
	c->filter_select = it->children;
	c->filter_path = child_path;
	gw_buf_puts(c->sql, " AND ");
	int rc = gw_sb_build_logic(c, child, target, sc->where);
	c->filter_select = saved_sel;
	c->filter_path = saved_path;
	return rc;
}

/* EXISTS (a child of the parent row that passes the embed's filters): what
 * !inner and embed=not.is.null keep. */
static int
embed_exists(ctx *c, const char *parent_alias, const gw_rel_match *m, const gw_relation *target,
             const gw_select_item *it, const char *child_path, const gw_scope *sc)
{
	char child[32];
	snprintf(child, sizeof child, "pgrst_e%d", ++c->alias_seq);
	gw_buf_puts(c->sql, "EXISTS (SELECT 1");
	embed_from(c, m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	join_condition(c, m, parent_alias, child);
	if (sc && embed_where(c, child, target, it, child_path, sc))
		return -1;
	gw_buf_putc(c->sql, ')');
	return 0;
}

/* embed=is.null / embed=not.is.null (PostgREST v11+): parents without / with a
 * child passing the embed's filters; any other operator is PGRST120. */
static int
embed_null_filter(ctx *c, const char *alias, const gw_relation *rel, const gw_select_item *it,
                  const gw_filter *f)
{
	const char *name = it->alias ? it->alias : it->relation;
	int is_null = f->op == GW_OP_IS && f->value && !strcmp(f->value, "null");
	int not_null = f->op == GW_OP_IS && f->value && !strcmp(f->value, "not_null");
	if (!is_null && !not_null)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "Bad operator on the '%s' embedded resource", name);
		gw_error_set(c->e, 400, "PGRST120", msg,
		             "Only is null or not is null filters are allowed on embedded resources",
		             NULL);
		return -1;
	}
	gw_rel_match m;
	const gw_relation *target;
	if (resolve_embed(c, rel, it, &m, &target))
		return -1;
	char *child_path = NULL;
	const gw_scope *sc = embed_scope(c, c->filter_path ? c->filter_path : "", it, &child_path);
	if (is_null != !!f->negate)
		gw_buf_puts(c->sql, "NOT ");
	return embed_exists(c, alias, &m, target, it, child_path, sc);
}

/* ...rel(cols) of a to-one embed: each column is a correlated lookup named as
 * the parent's own column (PostgREST's spread). An aggregate of a spread column
 * aggregates those lookups at the parent's level, and the other spread columns
 * are grouped by there, as if they were the parent's own (PostgREST v12). */
static int
build_spread(ctx *c, const char *parent_alias, const gw_select_item *it, const gw_rel_match *m,
             const gw_relation *target, int *nout)
{
	if (!m->to_one)
	{
		char msg[300];
		snprintf(msg, sizeof msg, "A spread operation on '%s' is not possible", it->relation);
		gw_error_set(c->e, 400, "PGRST119", msg, "Only to-one relationships can be spread.", NULL);
		return -1;
	}
	const gw_select *sel = it->children;
	int first = 1;
	for (int i = 0; !sel || i < sel->n; i++)
	{
		const gw_select_item *ch = sel ? &sel->items[i] : NULL;
		int star = !ch || ch->kind == GW_SEL_STAR;
		if (ch && ch->kind == GW_SEL_EMBED)
		{
			gw_error_set(c->e, 400, "PGRST100", "embeds inside a spread are not supported", NULL,
			             NULL);
			return -1;
		}
		int agg = ch && ch->agg;
		if (agg && !c->aggregates)
		{
			gw_error_set(c->e, 400, "PGRST123", "Use of aggregate functions is not allowed",
			             NULL, NULL);
			return -1;
		}
		for (int k = 0; k < (star ? target->ncols : 1); k++)
		{
			gw_field col = {0};
			const gw_field *f = star ? &col : &ch->field;
			if (star)
				col.name = target->cols[k].name;
			else if (!(agg && ch->agg_star) && check_column(c, target, f->name))
				return -1;
			char child[32];
			snprintf(child, sizeof child, "pgrst_s%d", ++c->alias_seq);
			if (!first)
				gw_buf_puts(c->sql, ", ");
			first = 0;
			if (agg)
			{
				if (ch->agg_cast)
					gw_buf_puts(c->sql, "CAST(");
				gw_buf_printf(c->sql, "pg_catalog.%s(", gw_agg_name(ch->agg));
			}
			if (agg && ch->agg_star)
			{
				gw_buf_putc(c->sql, '*');
			}
			else
			{
				gw_buf_puts(c->sql, "(SELECT ");
				if (!star && ch->cast)
					gw_buf_puts(c->sql, "CAST(");
				field_expr(c, child, f);
				if (!star && ch->cast)
					gw_buf_printf(c->sql, " AS %s)", ch->cast);
				embed_from(c, m, target->name, child);
				gw_buf_puts(c->sql, " WHERE ");
				join_condition(c, m, parent_alias, child);
				gw_buf_putc(c->sql, ')');
			}
			if (agg)
			{
				gw_buf_putc(c->sql, ')');
				if (ch->agg_cast)
					gw_buf_printf(c->sql, " AS %s)", ch->agg_cast);
			}
			gw_buf_puts(c->sql, " AS ");
			gw_buf_ident(c->sql, agg ? (ch->alias ? ch->alias : gw_agg_name(ch->agg))
			                         : !star && ch->alias ? ch->alias
			                                              : field_output_name(f));
			(*nout)++;
			if (!agg && c->spread_group)
				gw_buf_printf(c->spread_group, "%s%d",
				              c->spread_group->len ? ", " : " GROUP BY ", *nout);
		}
		if (!sel)
			break;
	}
	if (first)
	{
		gw_buf_puts(c->sql, "NULL::int AS pgrst_none");
		(*nout)++;
	}
	return 0;
}

static int
build_embed(ctx *c, const char *parent_alias, const gw_relation *parent, const gw_select_item *it,
            const char *path, gw_buf *inner_conds, int *nout)
{
	gw_rel_match m;
	const gw_relation *target;
	if (resolve_embed(c, parent, it, &m, &target))
		return -1;
	if (it->spread)
		return build_spread(c, parent_alias, it, &m, target, nout);
	(*nout)++;
	/* json has no equality operator: a grouped embed is jsonb */
	int as_jsonb = c->group_embeds;
	char child[32], row[32];
	snprintf(child, sizeof child, "pgrst_%d", ++c->alias_seq);
	snprintf(row, sizeof row, "pgrst_%d_row", c->alias_seq);
	char *child_path = NULL;
	const gw_scope *sc = embed_scope(c, path, it, &child_path);

	if (as_jsonb)
		gw_buf_putc(c->sql, '(');
	gw_buf_puts(c->sql, m.to_one ? "(SELECT pg_catalog.row_to_json("
	                             : "COALESCE((SELECT pg_catalog.json_agg(");
	gw_buf_ident(c->sql, row);
	gw_buf_puts(c->sql, ") FROM (SELECT ");
	if (gw_sb_build_select_list(c, child, target, it->children, child_path, NULL))
		return -1;
	const char *group_by = c->group_by;
	embed_from(c, &m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	join_condition(c, &m, parent_alias, child);
	if (sc && embed_where(c, child, target, it, child_path, sc))
		return -1;
	if (group_by)
		gw_buf_puts(c->sql, group_by);
	if (sc)
	{
		if (!m.to_one)
		{
			if (gw_sb_build_order(c, child, target, sc))
				return -1;
			gw_sb_build_limit(c, sc->limit, sc->offset);
		}
	}
	gw_buf_puts(c->sql, ") AS ");
	gw_buf_ident(c->sql, row);
	gw_buf_puts(c->sql, m.to_one ? ")" : "), '[]')");
	if (as_jsonb)
		gw_buf_puts(c->sql, ")::jsonb");
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, it->alias ? it->alias : it->relation);

	if (it->inner && inner_conds)
	{
		/* !inner keeps only parents with a matching child: build the EXISTS in a
		 * separate buffer that the caller appends to its WHERE */
		gw_buf *saved = c->sql;
		c->sql = inner_conds;
		gw_buf_puts(c->sql, " AND ");
		int rc = embed_exists(c, parent_alias, &m, target, it, child_path, sc);
		c->sql = saved;
		return rc;
	}
	return 0;
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
	if (!it->agg_star && check_column(c, rel, it->field.name))
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
		field_expr(c, alias, &it->field);
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
			if (check_column(c, rel, it->field.name))
			{
				gw_buf_free(&group);
				return -1;
			}
			if (it->cast)
				gw_buf_puts(c->sql, "CAST(");
			field_expr(c, alias, &it->field);
			if (it->cast)
				gw_buf_printf(c->sql, " AS %s)", it->cast);
			gw_buf_puts(c->sql, " AS ");
			gw_buf_ident(c->sql, it->alias ? it->alias : field_output_name(&it->field));
			nout++;
			break;
		case GW_SEL_EMBED:
			c->group_embeds = has_agg;
			/* a spread adds its grouped columns itself (not its aggregates) */
			c->spread_group = it->spread && has_agg ? &group : NULL;
			if (build_embed(c, alias, rel, it, path, inner_conds, &nout))
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
	gw_buf_printf(b, " FROM (SELECT * FROM %s) AS _postgrest_t", source);
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

void
gw_sb_effective_range(const gw_request_shape *r, const gw_scope *top, long *limit, long *offset)
{
	*limit = top->limit;
	*offset = top->offset;
	if (r->range_offset >= 0)
	{
		*offset += r->range_offset;
		if (r->range_limit >= 0 && (*limit < 0 || r->range_limit < *limit))
			*limit = r->range_limit;
	}
}

static int
build_read(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	long limit, offset;
	gw_sb_effective_range(r, gw_sb_scope_for(c, ""), &limit, &offset);
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
