/* Embedded resources as SQL (see sql_build_int.h): relationships resolved to one
 * foreign key (PGRST200/201 with PostgREST's details and hints), embeds as
 * correlated subqueries, spreads, !inner and null filters on embeds as EXISTS. */
#include <stdio.h>
#include <string.h>

#include "fuzzy.h"
#include "sql_build_int.h"

#define MAX_MATCHES 8

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
		else
		{
			/* the parent's columns first: the key's own side when it holds it */
			cardinality = m->to_one ? "many-to-one" : "one-to-many";
			name = m->fk->name;
			gw_buf_printf(&rel, "%s using %s", m->fk->name, parent);
			cols_list(&rel, m->to_one ? m->fk->from_cols : m->fk->to_cols, m->fk->ncols);
			gw_buf_printf(&rel, " and %s", child);
			cols_list(&rel, m->to_one ? m->fk->to_cols : m->fk->from_cols, m->fk->ncols);
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
int
gw_sb_resolve_embed(ctx *c, const gw_relation *parent, const gw_select_item *it, gw_rel_match *m,
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
void
gw_sb_embed_from(ctx *c, const gw_rel_match *m, const char *target, const char *child)
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

void
gw_sb_join_condition(ctx *c, const gw_rel_match *m, const char *parent_alias, const char *child_alias)
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
	gw_sb_embed_from(c, m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	gw_sb_join_condition(c, m, parent_alias, child);
	if (sc && embed_where(c, child, target, it, child_path, sc))
		return -1;
	gw_buf_putc(c->sql, ')');
	return 0;
}

/* embed=is.null / embed=not.is.null (PostgREST v11+): parents without / with a
 * child passing the embed's filters; any other operator is PGRST120. */
int
gw_sb_embed_null_filter(ctx *c, const char *alias, const gw_relation *rel, const gw_select_item *it,
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
	if (gw_sb_resolve_embed(c, rel, it, &m, &target))
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
			else if (!(agg && ch->agg_star) && gw_sb_check_column(c, target, f->name))
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
				gw_sb_field_expr(c, child, f);
				if (!star && ch->cast)
					gw_buf_printf(c->sql, " AS %s)", ch->cast);
				gw_sb_embed_from(c, m, target->name, child);
				gw_buf_puts(c->sql, " WHERE ");
				gw_sb_join_condition(c, m, parent_alias, child);
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
			                                              : gw_sb_field_output_name(f));
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

int
gw_sb_build_embed(ctx *c, const char *parent_alias, const gw_relation *parent, const gw_select_item *it,
            const char *path, gw_buf *inner_conds, int *nout)
{
	gw_rel_match m;
	const gw_relation *target;
	if (gw_sb_resolve_embed(c, parent, it, &m, &target))
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
	gw_sb_embed_from(c, &m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	gw_sb_join_condition(c, &m, parent_alias, child);
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

