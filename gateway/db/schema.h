/* The schema cache: what schema api exposes (relations, their columns, primary
 * keys, the foreign keys between them inferred through base tables, functions)
 * and which roles the authenticator may switch to. Built from catalog rows by
 * gw_schema_add_row so unit tests can build one without a server; immutable once
 * built, reference-counted so requests in flight survive a reload. */
#ifndef GW_SCHEMA_H
#define GW_SCHEMA_H
#include "arena.h"

typedef struct gw_column
{
	char *name;
	char *type; /* format_type(): safe to paste, it comes from the catalog */
	int nullable;
	int has_default;
} gw_column;

typedef struct gw_relation
{
	char *name;
	char kind; /* relkind */
	int insertable, updatable, deletable;
	gw_column *cols;
	int ncols, cols_cap;
	char **pk;
	int npk;
	char *comment;
} gw_relation;

/* A many-to-one link: from.cols reference to.cols. */
typedef struct gw_fk
{
	char *name;
	char *from;
	char **from_cols;
	char *to;
	char **to_cols;
	int ncols;
} gw_fk;

typedef struct gw_func_arg
{
	char *name; /* "" when unnamed */
	char *type;
	int has_default;
	int variadic; /* VARIADIC: called as VARIADIC name := array */
} gw_func_arg;

typedef struct gw_function
{
	char *name;
	char *oid;
	char volatility; /* i, s, v */
	int returns_set;
	int returns_void;
	int returns_composite;
	char *ret_type;
	gw_func_arg *args;
	int nargs, args_cap;
} gw_function;

typedef struct gw_schema
{
	gw_arena arena;
	int refs;
	gw_relation *rels;
	int nrels, rels_cap;
	gw_fk *fks;
	int nfks, fks_cap;
	gw_function *funcs;
	int nfuncs, funcs_cap;
	char **roles;
	int nroles, roles_cap;
	char **timezones; /* pg_timezone_names, in byte order (Prefer: timezone=) */
	int ntimezones, timezones_cap;
} gw_schema;

/* The catalog queries, one statement each; their rows feed gw_schema_add_row. */
extern const char *const gw_schema_queries;

gw_schema *gw_schema_new(void);
void gw_schema_ref(gw_schema *s);
void gw_schema_unref(gw_schema *s);
/* Adds one catalog row: vals[0] is the kind (rel, col, pk, fk, fn, arg, role, tz). */
int gw_schema_add_row(gw_schema *s, int nvals, const char *const *vals);

const gw_relation *gw_schema_relation(const gw_schema *s, const char *name);
const gw_column *gw_relation_column(const gw_relation *r, const char *name);
int gw_schema_role_allowed(const gw_schema *s, const char *role);
/* Whether name is one of pg_timezone_names (exact, case-sensitive, as PostgREST). */
int gw_schema_timezone_valid(const gw_schema *s, const char *name);

/* Relationships between parent (the relation being selected) and a target
 * relation, optionally narrowed by a hint (constraint name, a column, or the
 * junction's name). Direct foreign keys come first; only when there is none are
 * junctions (a relation with a key to each) considered, as PostgREST does. Fills
 * up to max matches and returns the count. */
typedef struct gw_rel_match
{
	const gw_fk *fk;
	int to_one; /* parent holds the fk columns (many-to-one) */
	/* many-to-many through a junction: fk is junction -> parent, fk2 is
	 * junction -> target (both many-to-one from the junction) */
	const gw_fk *fk2;
	const char *junction;
} gw_rel_match;
int gw_schema_relationships(const gw_schema *s, const char *parent, const char *target,
                            const char *hint, gw_rel_match *out, int max);

#endif
