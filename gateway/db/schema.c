/* The schema cache (see schema.h): the catalog queries and the structures built
 * from their rows. View columns are mapped to base-table columns through the
 * view's pg_depend entries with the same column name (what PostgREST infers for
 * simple views); ambiguous mappings are dropped rather than guessed. */
#include "schema.h"

#include <stdlib.h>
#include <string.h>

const char *const gw_schema_queries =
    /* relations */
    "SELECT 'rel', c.relname, c.relkind::text, pg_relation_is_updatable(c.oid, true)::text,"
    " coalesce(obj_description(c.oid, 'pg_class'), '')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = 'api' AND c.relkind IN ('r','v','m','f','p')"
    " AND has_schema_privilege(n.oid, 'USAGE') IS NOT NULL ORDER BY c.relname;\n"
    /* columns */
    "SELECT 'col', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),"
    " (NOT a.attnotnull)::int::text, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> "
    "'')::int::text"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE n.nspname = 'api' AND c.relkind IN ('r','v','m','f','p') ORDER BY c.relname, "
    "a.attnum;\n"
    /* exposed column -> base column, then primary keys and foreign keys through it */
    "CREATE OR REPLACE TEMP VIEW gw_cols AS"
    " SELECT c.oid AS rel, c.relname, a.attname AS col, c.oid AS base, a.attnum AS basenum"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " WHERE n.nspname = 'api' AND c.relkind IN ('r','p','f')"
    " UNION ALL SELECT rel, relname, col, base, basenum FROM ("
    "  SELECT DISTINCT v.oid AS rel, v.relname, va.attname AS col, d.refobjid AS base, "
    "d.refobjsubid AS basenum,"
    "   count(*) OVER (PARTITION BY v.oid, va.attname) AS candidates"
    "  FROM pg_class v JOIN pg_namespace n ON n.oid = v.relnamespace"
    "  JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum > 0 AND NOT va.attisdropped"
    "  JOIN pg_rewrite r ON r.ev_class = v.oid"
    "  JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass"
    "   AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.refobjid <> v.oid"
    "  JOIN pg_attribute ba ON ba.attrelid = d.refobjid AND ba.attnum = d.refobjsubid AND "
    "ba.attname = va.attname"
    "  WHERE n.nspname = 'api' AND v.relkind IN ('v','m')) m WHERE candidates = 1;\n"
    "SELECT 'pk', g.relname, string_agg(g.col, ',' ORDER BY k.ord)"
    " FROM pg_constraint con CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)"
    " JOIN pg_temp.gw_cols g ON g.base = con.conrelid AND g.basenum = k.attnum"
    " WHERE con.contype = 'p' GROUP BY g.rel, g.relname, con.oid, con.conkey"
    " HAVING count(*) = cardinality(con.conkey) ORDER BY g.relname;\n"
    "SELECT 'fk', con.conname, c1.relname, string_agg(c1.col, ',' ORDER BY k.ord),"
    " c2.relname, string_agg(c2.col, ',' ORDER BY k.ord)"
    " FROM pg_constraint con"
    " CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY k(a1, a2, ord)"
    " JOIN pg_temp.gw_cols c1 ON c1.base = con.conrelid AND c1.basenum = k.a1"
    " JOIN pg_temp.gw_cols c2 ON c2.base = con.confrelid AND c2.basenum = k.a2"
    " WHERE con.contype = 'f'"
    " GROUP BY con.oid, con.conname, con.conkey, c1.rel, c1.relname, c2.rel, c2.relname"
    " HAVING count(*) = cardinality(con.conkey) ORDER BY 2, 3, 5;\n"
    /* functions and their input arguments */
    "SELECT 'fn', p.proname, p.oid::text, p.provolatile::text, p.proretset::int::text,"
    " (p.prorettype = 'void'::regtype)::int::text,"
    " (t.typrelid <> 0 OR (p.prorettype = 'record'::regtype AND p.proallargtypes IS NOT "
    "NULL))::int::text,"
    " format_type(p.prorettype, NULL)"
    " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_type t ON t.oid = "
    "p.prorettype"
    " WHERE n.nspname = 'api' AND p.prokind = 'f' ORDER BY p.proname, p.oid;\n"
    "SELECT 'arg', p.oid::text, coalesce(a.name, ''), format_type(a.typ, NULL),"
    " (row_number() OVER w > p.pronargs - p.pronargdefaults)::int::text, (a.mode = 'v')::int::text"
    " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " CROSS JOIN LATERAL unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),"
    "  coalesce(p.proargmodes, array_fill('i'::\"char\", ARRAY[p.pronargs::int])), p.proargnames)"
    "  WITH ORDINALITY a(typ, mode, name, ord)"
    " WHERE n.nspname = 'api' AND p.prokind = 'f' AND a.mode IN ('i','b','v')"
    " WINDOW w AS (PARTITION BY p.oid ORDER BY a.ord) ORDER BY p.oid, a.ord;\n"
    "SELECT 'role', rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER') ORDER BY "
    "2;\n"
    /* the time zones Prefer: timezone= accepts, sorted for a binary search */
    "SELECT DISTINCT 'tz', name COLLATE \"C\" FROM pg_timezone_names ORDER BY 2;\n";

gw_schema *
gw_schema_new(void)
{
	gw_schema *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	gw_arena_init(&s->arena);
	s->refs = 1;
	return s;
}

void
gw_schema_ref(gw_schema *s)
{
	s->refs++;
}

void
gw_schema_unref(gw_schema *s)
{
	if (!s || --s->refs > 0)
		return;
	gw_arena_free(&s->arena);
	free(s);
}

static gw_relation *
find_rel(gw_schema *s, const char *name)
{
	for (int i = 0; i < s->nrels; i++)
		if (!strcmp(s->rels[i].name, name))
			return &s->rels[i];
	return NULL;
}

const gw_relation *
gw_schema_relation(const gw_schema *s, const char *name)
{
	return find_rel((gw_schema *)s, name);
}

const gw_column *
gw_relation_column(const gw_relation *r, const char *name)
{
	for (int i = 0; i < r->ncols; i++)
		if (!strcmp(r->cols[i].name, name))
			return &r->cols[i];
	return NULL;
}

int
gw_schema_role_allowed(const gw_schema *s, const char *role)
{
	for (int i = 0; i < s->nroles; i++)
		if (!strcmp(s->roles[i], role))
			return 1;
	return 0;
}

static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
gw_schema_timezone_valid(const gw_schema *s, const char *name)
{
	return s->ntimezones > 0 && bsearch(&name, s->timezones, (size_t)s->ntimezones,
	                                    sizeof(char *), compare_names) != NULL;
}

/* Splits "a,b,c" into an arena array; column names with commas do not reach
 * here because PostgreSQL identifiers of exposed keys are plain in practice, and
 * a wrong split only loses an embedding, never safety. */
static char **
split_commas(gw_arena *a, const char *s, int *n)
{
	int count = 1;
	for (const char *p = s; *p; p++)
		count += *p == ',';
	char **out = gw_arena_alloc(a, sizeof(char *) * (size_t)count);
	*n = 0;
	const char *st = s;
	for (const char *p = s;; p++)
	{
		if (*p == ',' || !*p)
		{
			out[(*n)++] = gw_arena_strndup(a, st, (size_t)(p - st));
			st = p + 1;
			if (!*p)
				break;
		}
	}
	return out;
}

int
gw_schema_add_row(gw_schema *s, int n, const char *const *v)
{
	gw_arena *a = &s->arena;
	if (n < 2)
		return -1;
	if (!strcmp(v[0], "rel") && n >= 5)
	{
		gw_relation *r = gw_arena_push(a, (void **)&s->rels, &s->nrels, &s->rels_cap, sizeof *r);
		int mask = atoi(v[3]);
		r->name = gw_arena_strdup(a, v[1]);
		r->kind = v[2][0];
		r->insertable = (mask & 8) != 0;
		r->updatable = (mask & 4) != 0;
		r->deletable = (mask & 16) != 0;
		r->comment = gw_arena_strdup(a, v[4]);
		return 0;
	}
	if (!strcmp(v[0], "col") && n >= 6)
	{
		gw_relation *r = find_rel(s, v[1]);
		if (!r)
			return -1;
		gw_column *c = gw_arena_push(a, (void **)&r->cols, &r->ncols, &r->cols_cap, sizeof *c);
		c->name = gw_arena_strdup(a, v[2]);
		c->type = gw_arena_strdup(a, v[3]);
		c->nullable = atoi(v[4]);
		c->has_default = atoi(v[5]);
		return 0;
	}
	if (!strcmp(v[0], "pk") && n >= 3)
	{
		gw_relation *r = find_rel(s, v[1]);
		if (!r)
			return -1;
		if (!r->npk) /* a view over several tables: the first key wins */
			r->pk = split_commas(a, v[2], &r->npk);
		return 0;
	}
	if (!strcmp(v[0], "fk") && n >= 6)
	{
		gw_fk *f = gw_arena_push(a, (void **)&s->fks, &s->nfks, &s->fks_cap, sizeof *f);
		int n1, n2;
		f->name = gw_arena_strdup(a, v[1]);
		f->from = gw_arena_strdup(a, v[2]);
		f->from_cols = split_commas(a, v[3], &n1);
		f->to = gw_arena_strdup(a, v[4]);
		f->to_cols = split_commas(a, v[5], &n2);
		f->ncols = n1 < n2 ? n1 : n2;
		return 0;
	}
	if (!strcmp(v[0], "fn") && n >= 8)
	{
		gw_function *f = gw_arena_push(a, (void **)&s->funcs, &s->nfuncs, &s->funcs_cap, sizeof *f);
		f->name = gw_arena_strdup(a, v[1]);
		f->oid = gw_arena_strdup(a, v[2]);
		f->volatility = v[3][0];
		f->returns_set = atoi(v[4]);
		f->returns_void = atoi(v[5]);
		f->returns_composite = atoi(v[6]);
		f->ret_type = gw_arena_strdup(a, v[7]);
		return 0;
	}
	if (!strcmp(v[0], "arg") && n >= 5)
	{
		for (int i = 0; i < s->nfuncs; i++)
		{
			gw_function *f = &s->funcs[i];
			if (strcmp(f->oid, v[1]))
				continue;
			gw_func_arg *g =
			    gw_arena_push(a, (void **)&f->args, &f->nargs, &f->args_cap, sizeof *g);
			g->name = gw_arena_strdup(a, v[2]);
			g->type = gw_arena_strdup(a, v[3]);
			g->has_default = atoi(v[4]);
			g->variadic = n >= 6 && atoi(v[5]);
			return 0;
		}
		return -1;
	}
	if (!strcmp(v[0], "tz"))
	{
		/* the query sorts them in byte order; one out of order would break
		 * the binary search, so it is refused */
		if (s->ntimezones && strcmp(s->timezones[s->ntimezones - 1], v[1]) >= 0)
			return -1;
		*(char **)gw_arena_push(a, (void **)&s->timezones, &s->ntimezones, &s->timezones_cap,
		                        sizeof(char *)) = gw_arena_strdup(a, v[1]);
		return 0;
	}
	if (!strcmp(v[0], "role"))
	{
		*(char **)gw_arena_push(a, (void **)&s->roles, &s->nroles, &s->roles_cap, sizeof(char *)) =
		    gw_arena_strdup(a, v[1]);
		return 0;
	}
	return -1;
}

static int
fk_matches_hint(const gw_fk *f, const char *hint, int parent_side_from)
{
	if (!hint)
		return 1;
	if (!strcmp(f->name, hint))
		return 1;
	/* a column hint names the fk column on either side */
	for (int i = 0; i < f->ncols; i++)
		if (!strcmp(f->from_cols[i], hint) || !strcmp(f->to_cols[i], hint))
			return 1;
	(void)parent_side_from;
	return 0;
}

int
gw_schema_relationships(const gw_schema *s, const char *parent, const char *target,
                        const char *hint, gw_rel_match *out, int max)
{
	int n = 0;
	for (int i = 0; i < s->nfks && n < max; i++)
	{
		const gw_fk *f = &s->fks[i];
		if (!strcmp(f->from, parent) && !strcmp(f->to, target) && fk_matches_hint(f, hint, 1))
		{
			memset(&out[n], 0, sizeof out[n]);
			out[n].fk = f;
			out[n].to_one = 1;
			n++;
		}
		else if (!strcmp(f->to, parent) && !strcmp(f->from, target) && fk_matches_hint(f, hint, 0))
		{
			if (n < max)
			{
				memset(&out[n], 0, sizeof out[n]);
				out[n].fk = f;
				out[n].to_one = 0;
				n++;
			}
		}
	}
	for (int i = 0; n == 0 && i < s->nfks; i++)
	{
		const gw_fk *f1 = &s->fks[i];
		if (strcmp(f1->to, parent) || !strcmp(f1->from, parent) || !strcmp(f1->from, target))
			continue;
		for (int j = 0; j < s->nfks; j++)
		{
			const gw_fk *f2 = &s->fks[j];
			if (j == i || strcmp(f2->from, f1->from) || strcmp(f2->to, target))
				continue;
			if (hint && strcmp(hint, f1->from) && strcmp(hint, f1->name) && strcmp(hint, f2->name))
				continue;
			if (n < max)
			{
				out[n].fk = f1;
				out[n].fk2 = f2;
				out[n].junction = f1->from;
				out[n].to_one = 0;
				n++;
			}
		}
	}
	return n;
}
