/* PostgREST requests as SQL (see sql_build.h). Reads, writes and RPC share one
 * shape: a pgrst_source CTE, then an outer SELECT that counts and aggregates it
 * into JSON or CSV, as PostgREST does. Identifiers go through gw_buf_ident,
 * values through gw_params; type names come only from the catalog or from the
 * cast validator in query_parse.c. */
#include "sql_build.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define MAX_MATCHES 8

typedef struct ctx {
	gw_arena *a;
	const gw_schema *s;
	const gw_query *q;
	gw_buf *sql;
	gw_params *params;
	gw_error *e;
	int alias_seq;
} ctx;

void gw_error_set(gw_error *e, int status, const char *code, const char *message,
		  const char *details, const char *hint)
{
	e->status = status;
	snprintf(e->code, sizeof e->code, "%s", code);
	snprintf(e->message, sizeof e->message, "%s", message ? message : "");
	snprintf(e->details, sizeof e->details, "%s", details ? details : "");
	snprintf(e->hint, sizeof e->hint, "%s", hint ? hint : "");
}

void gw_plan_init(gw_plan *p)
{
	memset(p, 0, sizeof *p);
	gw_buf_init(&p->sql);
	gw_params_init(&p->params);
}

void gw_plan_free(gw_plan *p)
{
	gw_buf_free(&p->sql);
	gw_params_free(&p->params);
}

void gw_sql_array_literal(gw_buf *b, char *const *items, int n)
{
	gw_buf_putc(b, '{');
	for (int i = 0; i < n; i++) {
		if (i)
			gw_buf_putc(b, ',');
		gw_buf_putc(b, '"');
		for (const char *c = items[i]; *c; c++) {
			if (*c == '"' || *c == '\\')
				gw_buf_putc(b, '\\');
			gw_buf_putc(b, *c);
		}
		gw_buf_putc(b, '"');
	}
	gw_buf_putc(b, '}');
}

static void param(ctx *c, const char *value)
{
	gw_buf_printf(c->sql, "$%d", gw_params_add(c->params, value));
}

/* "alias"."col"->$n... for a field; JSON keys that are integers index arrays. */
static void field_expr(ctx *c, const char *alias, const gw_field *f)
{
	if (alias) {
		gw_buf_ident(c->sql, alias);
		gw_buf_putc(c->sql, '.');
	}
	gw_buf_ident(c->sql, f->name);
	for (int i = 0; i < f->njson; i++) {
		const char *k = f->json_key[i];
		int is_int = *k != '\0';
		for (const char *p = k[0] == '-' ? k + 1 : k; *p; p++)
			if (*p < '0' || *p > '9')
				is_int = 0;
		if (k[0] == '-' && !k[1])
			is_int = 0;
		gw_buf_puts(c->sql, f->json_text[i] ? "->>" : "->");
		param(c, k);
		gw_buf_puts(c->sql, is_int && strlen(k) < 10 ? "::integer" : "::text");
	}
}

static const char *field_output_name(const gw_field *f)
{
	return f->njson ? f->json_key[f->njson - 1] : f->name;
}

static void column_missing(ctx *c, const char *rel, const char *col)
{
	char msg[300];
	snprintf(msg, sizeof msg, "column %s.%s does not exist", rel, col);
	gw_error_set(c->e, 400, "42703", msg, NULL, NULL);
}

/* Refuses a column the relation does not have; rel NULL (function results) lets
 * PostgreSQL decide. */
static int check_column(ctx *c, const gw_relation *rel, const char *col)
{
	if (rel && !gw_relation_column(rel, col)) {
		column_missing(c, rel->name, col);
		return -1;
	}
	return 0;
}

static const char *const op_sql[] = {
	"=", "<>", ">", ">=", "<", "<=", "LIKE", "ILIKE", "~", "~*", "= ANY", "IS",
	"IS DISTINCT FROM", "@@", "@@", "@@", "@@", "@>", "<@", "&&", "<<", ">>", "&<", "&>", "-|-",
};

static int build_filter(ctx *c, const char *alias, const gw_relation *rel, const gw_filter *f)
{
	if (check_column(c, rel, f->field.name))
		return -1;
	if (f->negate)
		gw_buf_puts(c->sql, "NOT (");
	field_expr(c, alias, &f->field);
	gw_buf_putc(c->sql, ' ');
	if (f->op == GW_OP_IN || f->quant) {
		gw_buf arr;
		gw_buf_init(&arr);
		gw_sql_array_literal(&arr, f->list, f->nlist);
		if (f->op == GW_OP_IN)
			gw_buf_puts(c->sql, "= ANY (");
		else
			gw_buf_printf(c->sql, "%s %s (", op_sql[f->op], f->quant == GW_QUANT_ANY ? "ANY" : "ALL");
		param(c, arr.data);
		gw_buf_putc(c->sql, ')');
		gw_buf_free(&arr);
	} else if (f->op == GW_OP_IS) {
		/* the value was checked against a fixed list in the parser */
		gw_buf_puts(c->sql, "IS ");
		gw_buf_puts(c->sql, !strcmp(f->value, "null") ? "NULL"
			    : !strcmp(f->value, "not_null") ? "NOT NULL"
			    : !strcmp(f->value, "true") ? "TRUE"
			    : !strcmp(f->value, "false") ? "FALSE" : "UNKNOWN");
	} else if (f->op >= GW_OP_FTS && f->op <= GW_OP_WFTS) {
		static const char *const fn[] = {"to_tsquery", "plainto_tsquery", "phraseto_tsquery",
						 "websearch_to_tsquery"};
		gw_buf_printf(c->sql, "@@ pg_catalog.%s(", fn[f->op - GW_OP_FTS]);
		if (f->lang) {
			param(c, f->lang);
			gw_buf_puts(c->sql, "::regconfig, ");
		}
		param(c, f->value);
		gw_buf_puts(c->sql, "::text)");
	} else {
		gw_buf_printf(c->sql, "%s ", op_sql[f->op]);
		param(c, f->value);
	}
	if (f->negate)
		gw_buf_putc(c->sql, ')');
	return 0;
}

/* Appends the tree as a condition; an empty AND is TRUE. */
static int build_logic(ctx *c, const char *alias, const gw_relation *rel, const gw_logic *l)
{
	if (l->is_leaf)
		return build_filter(c, alias, rel, &l->filter);
	if (l->negate)
		gw_buf_puts(c->sql, "NOT ");
	if (!l->nchildren) {
		gw_buf_puts(c->sql, "TRUE");
		return 0;
	}
	gw_buf_putc(c->sql, '(');
	for (int i = 0; i < l->nchildren; i++) {
		if (i)
			gw_buf_puts(c->sql, l->is_or ? " OR " : " AND ");
		if (build_logic(c, alias, rel, l->children[i]))
			return -1;
	}
	gw_buf_putc(c->sql, ')');
	return 0;
}

static int build_order(ctx *c, const char *alias, const gw_relation *rel, const gw_scope *sc)
{
	if (!sc || !sc->norder)
		return 0;
	gw_buf_puts(c->sql, " ORDER BY ");
	for (int i = 0; i < sc->norder; i++) {
		const gw_order_term *t = &sc->order[i];
		if (check_column(c, rel, t->field.name))
			return -1;
		if (i)
			gw_buf_puts(c->sql, ", ");
		field_expr(c, alias, &t->field);
		gw_buf_puts(c->sql, t->desc ? " DESC" : " ASC");
		if (t->nulls)
			gw_buf_puts(c->sql, t->nulls == GW_NULLS_FIRST ? " NULLS FIRST" : " NULLS LAST");
	}
	return 0;
}

static void build_limit(ctx *c, long limit, long offset)
{
	char n[32];
	if (limit >= 0) {
		snprintf(n, sizeof n, "%ld", limit);
		gw_buf_puts(c->sql, " LIMIT ");
		param(c, n);
		gw_buf_puts(c->sql, "::bigint");
	}
	if (offset > 0) {
		snprintf(n, sizeof n, "%ld", offset);
		gw_buf_puts(c->sql, " OFFSET ");
		param(c, n);
		gw_buf_puts(c->sql, "::bigint");
	}
}

static const gw_scope *scope_for(ctx *c, const char *path)
{
	return gw_query_find_scope(c->q, path);
}

static int build_select_list(ctx *c, const char *alias, const gw_relation *rel, const gw_select *sel,
			     const char *path, gw_buf *inner_conds);

/* Resolves an embed to exactly one foreign key, as PostgREST does (PGRST200/201). */
static int resolve_embed(ctx *c, const gw_relation *parent, const gw_select_item *it,
			 gw_rel_match *m, const gw_relation **target)
{
	char msg[400];
	*target = gw_schema_relation(c->s, it->relation);
	gw_rel_match all[MAX_MATCHES];
	int n = (parent && *target)
		? gw_schema_relationships(c->s, parent->name, it->relation, it->hint, all, MAX_MATCHES) : 0;
	if (n == 0) {
		snprintf(msg, sizeof msg, "Could not find a relationship between '%s' and '%s' in the schema cache",
			 parent ? parent->name : "?", it->relation);
		gw_error_set(c->e, 400, "PGRST200", msg,
			     "Searched for a foreign key relationship in the schema 'api', but no matches were found.",
			     "Verify that the relationship exists in the database and reload the schema cache.");
		return -1;
	}
	if (n > 1) {
		snprintf(msg, sizeof msg, "Could not embed because more than one relationship was found for '%s' and '%s'",
			 parent->name, it->relation);
		gw_error_set(c->e, 300, "PGRST201", msg, NULL,
			     "Try changing the embed to name one relationship, e.g. target!constraint_name(...)");
		return -1;
	}
	*m = all[0];
	return 0;
}

static void cols_equal(ctx *c, const char *a1, char *const *c1, const char *a2, char *const *c2, int n)
{
	for (int i = 0; i < n; i++) {
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
static void embed_from(ctx *c, const gw_rel_match *m, const char *target, const char *child)
{
	gw_buf_puts(c->sql, " FROM \"api\".");
	gw_buf_ident(c->sql, target);
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, child);
	if (m->junction) {
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

static void join_condition(ctx *c, const gw_rel_match *m, const char *parent_alias, const char *child_alias)
{
	if (m->junction) {
		char j[48];
		snprintf(j, sizeof j, "%s_j", child_alias);
		cols_equal(c, j, m->fk->from_cols, parent_alias, m->fk->to_cols, m->fk->ncols);
		return;
	}
	for (int i = 0; i < m->fk->ncols; i++) {
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

static const gw_scope *embed_scope(ctx *c, const char *path, const gw_select_item *it, char **child_path)
{
	const char *names[2] = {it->alias, it->relation};
	for (int i = 0; i < 2; i++) {
		if (!names[i])
			continue;
		char *p = gw_arena_alloc(c->a, strlen(path) + strlen(names[i]) + 2);
		sprintf(p, "%s%s%s", path, *path ? "." : "", names[i]);
		*child_path = p;
		const gw_scope *s = scope_for(c, p);
		if (s)
			return s;
	}
	return NULL;
}

static int build_embed(ctx *c, const char *parent_alias, const gw_relation *parent,
		       const gw_select_item *it, const char *path, gw_buf *inner_conds)
{
	gw_rel_match m;
	const gw_relation *target;
	if (resolve_embed(c, parent, it, &m, &target))
		return -1;
	char child[32], row[32];
	snprintf(child, sizeof child, "pgrst_%d", ++c->alias_seq);
	snprintf(row, sizeof row, "pgrst_%d_row", c->alias_seq);
	char *child_path = NULL;
	const gw_scope *sc = embed_scope(c, path, it, &child_path);

	gw_buf_puts(c->sql, m.to_one ? "(SELECT pg_catalog.row_to_json(" : "COALESCE((SELECT pg_catalog.json_agg(");
	gw_buf_ident(c->sql, row);
	gw_buf_puts(c->sql, ") FROM (SELECT ");
	if (build_select_list(c, child, target, it->children, child_path, NULL))
		return -1;
	embed_from(c, &m, target->name, child);
	gw_buf_puts(c->sql, " WHERE ");
	join_condition(c, &m, parent_alias, child);
	if (sc) {
		gw_buf_puts(c->sql, " AND ");
		if (build_logic(c, child, target, sc->where))
			return -1;
		if (!m.to_one) {
			if (build_order(c, child, target, sc))
				return -1;
			build_limit(c, sc->limit, sc->offset);
		}
	}
	gw_buf_puts(c->sql, ") AS ");
	gw_buf_ident(c->sql, row);
	gw_buf_puts(c->sql, m.to_one ? ")" : "), '[]')");
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, it->alias ? it->alias : it->relation);

	if (it->inner && inner_conds) {
		/* !inner keeps only parents with a matching child: build the EXISTS in a
		 * separate buffer that the caller appends to its WHERE */
		gw_buf *saved = c->sql;
		c->sql = inner_conds;
		gw_buf_puts(c->sql, " AND EXISTS (SELECT 1");
		embed_from(c, &m, target->name, child);
		gw_buf_puts(c->sql, " WHERE ");
		join_condition(c, &m, parent_alias, child);
		int rc = 0;
		if (sc) {
			gw_buf_puts(c->sql, " AND ");
			rc = build_logic(c, child, target, sc->where);
		}
		gw_buf_putc(c->sql, ')');
		c->sql = saved;
		return rc;
	}
	return 0;
}

static int build_select_list(ctx *c, const char *alias, const gw_relation *rel, const gw_select *sel,
			     const char *path, gw_buf *inner_conds)
{
	if (!sel || !sel->n) {
		if (sel && !sel->n) { /* rel() embeds with no columns */
			gw_buf_puts(c->sql, "NULL::int AS pgrst_none");
			return 0;
		}
		gw_buf_ident(c->sql, alias);
		gw_buf_puts(c->sql, ".*");
		return 0;
	}
	for (int i = 0; i < sel->n; i++) {
		const gw_select_item *it = &sel->items[i];
		if (i)
			gw_buf_puts(c->sql, ", ");
		switch (it->kind) {
		case GW_SEL_STAR:
			gw_buf_ident(c->sql, alias);
			gw_buf_puts(c->sql, ".*");
			break;
		case GW_SEL_FIELD:
			if (check_column(c, rel, it->field.name))
				return -1;
			if (it->cast)
				gw_buf_puts(c->sql, "CAST(");
			field_expr(c, alias, &it->field);
			if (it->cast)
				gw_buf_printf(c->sql, " AS %s)", it->cast);
			gw_buf_puts(c->sql, " AS ");
			gw_buf_ident(c->sql, it->alias ? it->alias : field_output_name(&it->field));
			break;
		case GW_SEL_EMBED:
			if (build_embed(c, alias, rel, it, path, inner_conds))
				return -1;
			break;
		}
	}
	return 0;
}

/* The body and counts over pgrst_source, as PostgREST aggregates them. */
static void build_outer(ctx *c, const gw_request_shape *r, gw_plan *p, const char *count_sql,
			const char *source)
{
	gw_buf *b = c->sql;
	gw_buf_puts(b, " SELECT ");
	gw_buf_puts(b, count_sql ? count_sql : "NULL::text");
	gw_buf_puts(b, " AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, ");
	if (!p->returns_body) {
		gw_buf_puts(b, "''::text AS body");
	} else if (p->rpc_scalar) {
		gw_buf_puts(b, "(pg_catalog.json_agg(_postgrest_t.pgrst_scalar)->0)::text AS body");
	} else if (p->rpc_scalar_set && p->output != GW_OUT_CSV) {
		gw_buf_puts(b, "coalesce(pg_catalog.json_agg(_postgrest_t.pgrst_scalar), '[]')::text AS body");
	} else if (p->output == GW_OUT_CSV) {
		gw_buf_printf(b, "(SELECT coalesce(string_agg(a.k, ','), '') FROM (SELECT pg_catalog.json_object_keys(r) AS k"
			    " FROM (SELECT pg_catalog.row_to_json(hh) AS r FROM %s AS hh LIMIT 1) AS s) AS a)"
			    " || E'\\n' || coalesce(string_agg(substring(_postgrest_t::text, 2, length(_postgrest_t::text) - 2), E'\\n'), '') AS body", source);
	} else if (p->output == GW_OUT_SINGLE || p->rpc_single) {
		gw_buf_puts(b, "coalesce((pg_catalog.json_agg(_postgrest_t)->0)::text, 'null') AS body");
	} else {
		gw_buf_puts(b, "coalesce(pg_catalog.json_agg(_postgrest_t), '[]')::text AS body");
	}
	if (p->insert_location) {
		/* the first written row's key values, for the Location header */
		const gw_relation *rel = gw_schema_relation(c->s, r->target);
		gw_buf_puts(b, ", (SELECT pg_catalog.json_build_array(");
		for (int i = 0; i < rel->npk; i++) {
			if (i)
				gw_buf_puts(b, ", ");
			gw_buf_puts(b, "k.");
			gw_buf_ident(b, rel->pk[i]);
			gw_buf_puts(b, "::text");
		}
		gw_buf_puts(b, ")::text FROM pgrst_source AS k LIMIT 1) AS location");
	} else {
		gw_buf_puts(b, ", NULL::text AS location");
	}
	if (r->action != GW_ACTION_READ && r->action != GW_ACTION_RPC && r->output == GW_OUT_SINGLE) {
		/* a write that must touch exactly one row fails inside the statement so
		 * that the pipelined COMMIT is skipped and the pool rolls back (PGRST116) */
		gw_buf_puts(b, ", CASE WHEN pg_catalog.count(_postgrest_t) <> 1 THEN ('pgrst_single:' || pg_catalog.count(_postgrest_t))::integer END AS single_check");
	}
	gw_buf_printf(b, " FROM (SELECT * FROM %s) AS _postgrest_t", source);
}

/* WHERE for the top level: filters plus the EXISTS of !inner embeds. */
static int build_where(ctx *c, const char *alias, const gw_relation *rel, const gw_buf *inner)
{
	const gw_scope *top = scope_for(c, "");
	gw_buf_puts(c->sql, " WHERE ");
	if (build_logic(c, alias, rel, top->where))
		return -1;
	if (inner && inner->len)
		gw_buf_append(c->sql, inner->data, inner->len);
	return 0;
}

static void effective_range(const gw_request_shape *r, const gw_scope *top, long *limit, long *offset)
{
	*limit = top->limit;
	*offset = top->offset;
	if (r->range_offset >= 0) {
		*offset += r->range_offset;
		if (r->range_limit >= 0 && (*limit < 0 || r->range_limit < *limit))
			*limit = r->range_limit;
	}
}

static int build_read(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	long limit, offset;
	effective_range(r, scope_for(c, ""), &limit, &offset);
	gw_buf inner;
	gw_buf_init(&inner);
	gw_buf_puts(c->sql, "WITH pgrst_source AS (SELECT ");
	int rc = build_select_list(c, alias, rel, c->q->select, "", &inner);
	if (!rc) {
		gw_buf_puts(c->sql, " FROM \"api\".");
		gw_buf_ident(c->sql, rel->name);
		gw_buf_puts(c->sql, " AS ");
		gw_buf_ident(c->sql, alias);
		rc = build_where(c, alias, rel, &inner);
	}
	if (!rc)
		rc = build_order(c, alias, rel, scope_for(c, ""));
	if (!rc)
		build_limit(c, limit, offset);
	gw_buf_putc(c->sql, ')');
	gw_buf count;
	gw_buf_init(&count);
	if (!rc && r->count == GW_COUNT_EXACT) {
		gw_buf *saved = c->sql;
		c->sql = &count;
		gw_buf_puts(c->sql, "(SELECT pg_catalog.count(*) FROM \"api\".");
		gw_buf_ident(c->sql, rel->name);
		gw_buf_puts(c->sql, " AS ");
		gw_buf_ident(c->sql, alias);
		rc = build_where(c, alias, rel, &inner);
		gw_buf_puts(c->sql, ")::text");
		c->sql = saved;
	}
	if (!rc) {
		p->returns_body = 1;
		build_outer(c, r, p, count.len ? count.data : NULL, "pgrst_source");
	}
	gw_buf_free(&inner);
	gw_buf_free(&count);
	p->read_only = 1;
	return rc;
}

/* The columns a write names: ?columns= or the keys of the (first) object; all
 * objects of an array must have the same keys (PGRST102). */
static int payload_columns(ctx *c, const gw_request_shape *r, const gw_relation *rel, json_t **root,
			   const char ***cols, int *ncols)
{
	json_error_t jerr;
	*root = json_loadb(r->body ? r->body : "", r->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!*root || !(json_is_object(*root) || json_is_array(*root))) {
		gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
		return -1;
	}
	json_t *first = json_is_array(*root) ? json_array_get(*root, 0) : *root;
	if (c->q->ncolumns) {
		*cols = (const char **)c->q->columns;
		*ncols = c->q->ncolumns;
	} else if (!first) {
		*cols = NULL;
		*ncols = 0;
	} else {
		if (!json_is_object(first)) {
			gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
			return -1;
		}
		*ncols = (int)json_object_size(first);
		*cols = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(*ncols + 1));
		int i = 0;
		const char *k;
		json_t *v;
		json_object_foreach(first, k, v) (*cols)[i++] = gw_arena_strdup(c->a, k);
		if (json_is_array(*root)) {
			size_t idx;
			json_t *o;
			json_array_foreach(*root, idx, o) {
				int same = json_is_object(o) && (int)json_object_size(o) == *ncols;
				for (int j = 0; same && j < *ncols; j++)
					same = json_object_get(o, (*cols)[j]) != NULL;
				if (!same) {
					gw_error_set(c->e, 400, "PGRST102", "All object keys must match", NULL, NULL);
					return -1;
				}
			}
		}
	}
	for (int i = 0; i < *ncols; i++) {
		if (!gw_relation_column(rel, (*cols)[i])) {
			char msg[400];
			snprintf(msg, sizeof msg, "Could not find the '%s' column of '%s' in the schema cache",
				 (*cols)[i], rel->name);
			gw_error_set(c->e, 400, "PGRST204", msg, NULL, NULL);
			return -1;
		}
	}
	return 0;
}

static void ident_list(gw_buf *b, const char *prefix, const char *const *cols, int n)
{
	for (int i = 0; i < n; i++) {
		if (i)
			gw_buf_puts(b, ", ");
		if (prefix) {
			gw_buf_puts(b, prefix);
			gw_buf_putc(b, '.');
		}
		gw_buf_ident(b, cols[i]);
	}
}

/* RETURNING and the outer select over what was written. */
static int finish_write(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	gw_buf_puts(c->sql, " RETURNING ");
	gw_buf_ident(c->sql, alias);
	gw_buf_puts(c->sql, ".*)");
	p->returns_body = r->return_rep;
	p->insert_location = r->headers_only && r->action == GW_ACTION_INSERT && rel->npk > 0;
	if (!r->return_rep) {
		build_outer(c, r, p, NULL, "pgrst_source");
		return 0;
	}
	/* re-select with the user's select list (embeds included) over pgrst_source */
	gw_buf *b = c->sql;
	gw_buf_puts(b, ", pgrst_written AS (SELECT ");
	if (build_select_list(c, alias, rel, c->q->select, "", NULL))
		return -1;
	gw_buf_puts(b, " FROM pgrst_source AS ");
	gw_buf_ident(b, alias);
	gw_buf_putc(b, ')');
	build_outer(c, r, p, NULL, "pgrst_written");
	return 0;
}

static int build_insert(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
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
	if (ncols == 0) {
		gw_buf_puts(b, " DEFAULT VALUES");
	} else {
		gw_buf_puts(b, " (");
		ident_list(b, NULL, cols, ncols);
		gw_buf_puts(b, ") SELECT ");
		ident_list(b, "pgrst_body", cols, ncols);
		gw_buf_puts(b, " FROM pg_catalog.json_populate_recordset(NULL::\"api\".");
		gw_buf_ident(b, rel->name);
		gw_buf_puts(b, ", ");
		char *text = json_is_array(root) ? NULL : json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
		if (text) {
			gw_buf wrapped;
			gw_buf_init(&wrapped);
			gw_buf_putc(&wrapped, '[');
			gw_buf_puts(&wrapped, text);
			gw_buf_putc(&wrapped, ']');
			param(c, wrapped.data);
			gw_buf_free(&wrapped);
			free(text);
		} else {
			gw_params_addn(c->params, r->body, r->body_len);
			gw_buf_printf(b, "$%d", c->params->n);
		}
		gw_buf_puts(b, "::json) AS pgrst_body");
	}
	if (r->resolution != GW_RESOLUTION_NONE || r->action == GW_ACTION_UPSERT_PUT) {
		const char *const *conf = (const char *const *)c->q->on_conflict;
		int nconf = c->q->non_conflict;
		if (!nconf) {
			conf = (const char *const *)rel->pk;
			nconf = rel->npk;
		}
		if (!nconf) {
			gw_error_set(c->e, 400, "PGRST103", "on_conflict is needed: the relation has no primary key", NULL, NULL);
			goto out;
		}
		gw_buf_puts(b, " ON CONFLICT (");
		ident_list(b, NULL, conf, nconf);
		gw_buf_puts(b, ")");
		if (r->resolution == GW_RESOLUTION_IGNORE) {
			gw_buf_puts(b, " DO NOTHING");
		} else if (ncols == 0) {
			gw_buf_puts(b, " DO NOTHING");
		} else {
			gw_buf_puts(b, " DO UPDATE SET ");
			for (int i = 0; i < ncols; i++) {
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

static int build_update(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	json_t *root = NULL;
	const char **cols;
	int ncols, rc = -1;
	const char *alias = rel->name;
	if (payload_columns(c, r, rel, &root, &cols, &ncols))
		goto out;
	if (!json_is_object(root)) {
		gw_error_set(c->e, 400, "PGRST102", "A PATCH body must be a JSON object", NULL, NULL);
		goto out;
	}
	gw_buf *b = c->sql;
	if (ncols == 0) {
		/* nothing to set: PostgREST answers as if no row matched */
		gw_buf_puts(b, "WITH pgrst_source AS (SELECT ");
		gw_buf_ident(b, alias);
		gw_buf_puts(b, ".* FROM \"api\".");
		gw_buf_ident(b, rel->name);
		gw_buf_puts(b, " AS ");
		gw_buf_ident(b, alias);
		gw_buf_puts(b, " WHERE FALSE)");
		p->returns_body = r->return_rep;
		build_outer(c, r, p, NULL, "pgrst_source");
		rc = 0;
		goto out;
	}
	gw_buf_puts(b, "WITH pgrst_source AS (UPDATE \"api\".");
	gw_buf_ident(b, rel->name);
	gw_buf_puts(b, " AS ");
	gw_buf_ident(b, alias);
	gw_buf_puts(b, " SET ");
	for (int i = 0; i < ncols; i++) {
		if (i)
			gw_buf_puts(b, ", ");
		gw_buf_ident(b, cols[i]);
		gw_buf_puts(b, " = pgrst_body.");
		gw_buf_ident(b, cols[i]);
	}
	gw_buf_puts(b, " FROM pg_catalog.json_populate_record(NULL::\"api\".");
	gw_buf_ident(b, rel->name);
	gw_buf_puts(b, ", ");
	gw_params_addn(c->params, r->body, r->body_len);
	gw_buf_printf(b, "$%d::json) AS pgrst_body", c->params->n);
	if (build_where(c, alias, rel, NULL))
		goto out;
	rc = finish_write(c, r, rel, p);
out:
	if (root)
		json_decref(root);
	return rc;
}

static int build_delete(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p)
{
	const char *alias = rel->name;
	gw_buf_puts(c->sql, "WITH pgrst_source AS (DELETE FROM \"api\".");
	gw_buf_ident(c->sql, rel->name);
	gw_buf_puts(c->sql, " AS ");
	gw_buf_ident(c->sql, alias);
	if (build_where(c, alias, rel, NULL))
		return -1;
	return finish_write(c, r, rel, p);
}

/* PUT: filters must be eq on exactly the primary key, and the body must carry the
 * same values (PGRST105 / PGRST115). */
static int check_put(ctx *c, const gw_request_shape *r, const gw_relation *rel)
{
	const gw_scope *top = scope_for(c, "");
	const gw_logic *w = top->where;
	int ok = rel->npk > 0 && w->nchildren == rel->npk;
	for (int i = 0; ok && i < w->nchildren; i++) {
		const gw_logic *l = w->children[i];
		ok = l->is_leaf && l->filter.op == GW_OP_EQ && !l->filter.negate && !l->filter.quant &&
		     !l->filter.field.njson;
		int inpk = 0;
		for (int k = 0; ok && k < rel->npk; k++)
			inpk |= !strcmp(rel->pk[k], l->filter.field.name);
		ok = ok && inpk;
	}
	if (!ok) {
		gw_error_set(c->e, 405, "PGRST105", "Filters must include all and only primary key columns with 'eq' operators",
			     NULL, NULL);
		return -1;
	}
	json_error_t jerr;
	json_t *root = json_loadb(r->body ? r->body : "", r->body_len, JSON_DECODE_ANY, &jerr);
	json_t *obj = root && json_is_array(root) && json_array_size(root) == 1 ? json_array_get(root, 0) : root;
	int match = obj && json_is_object(obj);
	for (int i = 0; match && i < w->nchildren; i++) {
		const gw_filter *f = &w->children[i]->filter;
		json_t *v = json_object_get(obj, f->field.name);
		char num[64];
		const char *text = NULL;
		if (json_is_string(v))
			text = json_string_value(v);
		else if (json_is_integer(v)) {
			snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
			text = num;
		}
		match = text && !strcmp(text, f->value);
	}
	if (root)
		json_decref(root);
	if (!match) {
		gw_error_set(c->e, 400, "PGRST115", "Payload values do not match URL in primary key column(s)", NULL, NULL);
		return -1;
	}
	return 0;
}

static int is_raw_type(const char *t)
{
	return !strcmp(t, "json") || !strcmp(t, "jsonb") || !strcmp(t, "text") || !strcmp(t, "bytea") ||
	       !strcmp(t, "xml") || !strcmp(t, "character varying");
}

/* Picks the overload whose parameters fit the given argument names. */
static const gw_function *choose_function(ctx *c, const char *name, const char *const *keys, int nkeys,
					  int raw_body, int single_object)
{
	const gw_function *found = NULL;
	int nfound = 0, any = 0;
	for (int i = 0; i < c->s->nfuncs; i++) {
		const gw_function *f = &c->s->funcs[i];
		if (strcmp(f->name, name))
			continue;
		any = 1;
		int fits = 1;
		if (raw_body && f->nargs == 1 && f->args[0].name[0] == '\0' && is_raw_type(f->args[0].type)) {
			fits = 1;
		} else if (single_object) {
			fits = f->nargs == 1 && (!strcmp(f->args[0].type, "json") || !strcmp(f->args[0].type, "jsonb"));
		} else {
			for (int k = 0; fits && k < nkeys; k++) {
				int has = 0;
				for (int j = 0; j < f->nargs; j++)
					has |= !strcmp(f->args[j].name, keys[k]);
				fits = has;
			}
			for (int j = 0; fits && j < f->nargs; j++) {
				if (f->args[j].has_default)
					continue;
				int given = 0;
				for (int k = 0; k < nkeys; k++)
					given |= !strcmp(f->args[j].name, keys[k]);
				fits = given;
			}
		}
		if (fits) {
			found = f;
			nfound++;
		}
	}
	char msg[512];
	if (nfound == 1)
		return found;
	gw_buf list;
	gw_buf_init(&list);
	for (int k = 0; k < nkeys; k++) {
		if (k)
			gw_buf_puts(&list, ", ");
		gw_buf_puts(&list, keys[k]);
	}
	if (nfound > 1) {
		snprintf(msg, sizeof msg, "Could not choose the best candidate function between overloads of api.%s", name);
		gw_error_set(c->e, 300, "PGRST203", msg, NULL, "Try renaming the parameters or the function itself.");
	} else {
		if (nkeys)
			snprintf(msg, sizeof msg, "Could not find the function api.%s(%s) in the schema cache", name, list.data);
		else
			snprintf(msg, sizeof msg, "Could not find the function api.%s without parameters in the schema cache", name);
		gw_error_set(c->e, 404, "PGRST202", msg,
			     any ? "Searched for the function with the given parameter names, but no matches were found."
				 : "Searched for the function in the schema 'api', but no matches were found.",
			     NULL);
	}
	gw_buf_free(&list);
	return NULL;
}

static int build_rpc(ctx *c, const gw_request_shape *r, gw_plan *p)
{
	json_t *root = NULL;
	const char **keys = NULL;
	int nkeys = 0, rc = -1, raw = 0;
	if (r->rpc_get) {
		keys = gw_arena_alloc(c->a, sizeof(char *) * (size_t)(c->q->nargs + 1));
		for (int i = 0; i < c->q->nargs; i++)
			keys[nkeys++] = c->q->args[i].key;
	} else if (r->body_is_json && !r->single_object) {
		json_error_t jerr;
		root = r->body_len ? json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &jerr) : json_object();
		if (root && json_is_object(root)) {
			keys = gw_arena_alloc(c->a, sizeof(char *) * (json_object_size(root) + 1));
			const char *k;
			json_t *v;
			json_object_foreach(root, k, v) keys[nkeys++] = gw_arena_strdup(c->a, k);
		} else {
			raw = 1;
		}
	} else if (!r->single_object) {
		raw = 1;
	}
	const gw_function *f = choose_function(c, r->target, keys, nkeys, raw || !r->rpc_get, r->single_object);
	if (!f && !raw && !r->rpc_get && nkeys) {
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
	if (root && !json_is_object(root) && !raw) {
		gw_error_set(c->e, 400, "PGRST102", "Empty or invalid json", NULL, NULL);
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
	if (f->returns_composite) {
		if (build_select_list(c, alias, NULL, c->q->select, "", &inner))
			goto out_inner;
	} else {
		gw_buf_puts(b, "pgrst_call AS pgrst_scalar");
	}
	gw_buf_puts(b, " FROM ");
	int nargs_used = 0;
	if (!raw_call && !r->single_object && nkeys) {
		gw_buf_puts(b, "pg_catalog.json_to_record(");
		if (r->rpc_get) {
			json_t *o = json_object();
			for (int i = 0; i < c->q->nargs; i++)
				json_object_set_new(o, c->q->args[i].key, json_string(c->q->args[i].value));
			char *t = json_dumps(o, JSON_COMPACT);
			param(c, t);
			free(t);
			json_decref(o);
		} else {
			gw_params_addn(c->params, r->body, r->body_len);
			gw_buf_printf(b, "$%d", c->params->n);
		}
		gw_buf_puts(b, "::json) AS pgrst_args(");
		for (int k = 0; k < nkeys; k++) {
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
	if (raw_call) {
		const char *t = f->args[0].type;
		if (!strcmp(t, "bytea")) {
			gw_params_add_binary(c->params, r->body, r->body_len, 17);
		} else {
			gw_params_addn(c->params, r->body, r->body_len);
		}
		gw_buf_printf(b, "$%d::%s", c->params->n, t);
	} else if (r->single_object) {
		gw_params_addn(c->params, r->body, r->body_len);
		gw_buf_printf(b, "$%d::%s", c->params->n, f->args[0].type);
	} else {
		for (int k = 0; k < nargs_used; k++) {
			if (k)
				gw_buf_puts(b, ", ");
			gw_buf_ident(b, keys[k]);
			gw_buf_puts(b, " := pgrst_args.");
			gw_buf_ident(b, keys[k]);
		}
	}
	gw_buf_puts(b, ") AS pgrst_call");
	{
		const gw_scope *top = scope_for(c, "");
		long limit, offset;
		effective_range(r, top, &limit, &offset);
		gw_buf_puts(b, " WHERE ");
		if (build_logic(c, alias, NULL, top->where))
			goto out_inner;
		if (inner.len)
			gw_buf_append(b, inner.data, inner.len);
		if (build_order(c, alias, NULL, top))
			goto out_inner;
		build_limit(c, limit, offset);
	}
	gw_buf_putc(b, ')');
	build_outer(c, r, p, NULL, "pgrst_source");
	rc = 0;
out_inner:
	gw_buf_free(&inner);
out:
	if (root)
		json_decref(root);
	return rc;
}

int gw_build(gw_arena *a, const gw_schema *s, const gw_request_shape *r, gw_plan *p, gw_error *e)
{
	ctx c = {.a = a, .s = s, .q = r->query, .sql = &p->sql, .params = &p->params, .e = e};
	p->output = r->output;
	if (r->action == GW_ACTION_RPC)
		return build_rpc(&c, r, p);
	const gw_relation *rel = gw_schema_relation(s, r->target);
	if (!rel) {
		char msg[300];
		snprintf(msg, sizeof msg, "Could not find the table 'api.%s' in the schema cache", r->target);
		gw_error_set(e, 404, "PGRST205", msg, NULL, NULL);
		return -1;
	}
	switch (r->action) {
	case GW_ACTION_READ:
		return build_read(&c, r, rel, p);
	case GW_ACTION_INSERT:
		return build_insert(&c, r, rel, p);
	case GW_ACTION_UPSERT_PUT:
		if (check_put(&c, r, rel))
			return -1;
		return build_insert(&c, r, rel, p);
	case GW_ACTION_UPDATE:
		return build_update(&c, r, rel, p);
	case GW_ACTION_DELETE:
		return build_delete(&c, r, rel, p);
	}
	gw_error_set(e, 405, "PGRST117", "Unsupported HTTP method", NULL, NULL);
	return -1;
}
