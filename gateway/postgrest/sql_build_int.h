/* Internals shared by the SQL builder's files: sql_build.c (reads, select lists,
 * filters, the outer aggregate), sql_write.c (insert, upsert, update,
 * delete, put), sql_rpc.c (function calls) and sql_embed.c (embedded resources).
 * Not for other modules. */
#ifndef GW_SQL_BUILD_INT_H
#define GW_SQL_BUILD_INT_H
#include "sql_build.h"

typedef struct ctx
{
	gw_arena *a;
	const gw_schema *s;
	const gw_query *q;
	const gw_request_shape *shape; /* the request being built */
	gw_buf *sql;
	gw_params *params;
	gw_error *e;
	int alias_seq;
	const gw_select *order_select; /* the level whose order= is being built */
	int aggregates;                /* aggregate functions allowed (else PGRST123) */
	const char *group_by;          /* " GROUP BY 1, 3" of the select list built last, or NULL */
	int group_embeds;              /* embeds of this level are grouped: make them jsonb */
	gw_buf *spread_group;          /* the level's GROUP BY positions, for a spread being built */
	/* the level whose filters are being built: a filter named after one of its
	 * embeds is a null filter on that embed (embed=is.null / not.is.null) */
	const gw_select *filter_select;
	const char *filter_path;
	/* an upsert's conflict columns: the outer counts the rows that were new */
	const gw_relation *upsert_rel;
	const char *const *upsert_cols;
	int nupsert_cols;
} ctx;

void gw_sb_param(ctx *c, const char *value);
int gw_sb_build_select_list(ctx *c, const char *alias, const gw_relation *rel, const gw_select *sel,
                            const char *path, gw_buf *inner_conds);
void gw_sb_build_outer(ctx *c, const gw_request_shape *r, gw_plan *p, const char *count_sql,
                       const char *source);
int gw_sb_build_where(ctx *c, const char *alias, const gw_relation *rel, const gw_buf *inner);
int gw_sb_build_logic(ctx *c, const char *alias, const gw_relation *rel, const gw_logic *l);
int gw_sb_build_order(ctx *c, const char *alias, const gw_relation *rel, const gw_scope *sc);
void gw_sb_build_limit(ctx *c, long limit, long offset);
const gw_scope *gw_sb_scope_for(ctx *c, const char *path);

/* sql_build.c: fields and columns */
void gw_sb_field_expr(ctx *c, const char *alias, const gw_field *f);
const char *gw_sb_field_output_name(const gw_field *f);
int gw_sb_check_column(ctx *c, const gw_relation *rel, const char *col);

/* sql_embed.c */
int gw_sb_resolve_embed(ctx *c, const gw_relation *parent, const gw_select_item *it, gw_rel_match *m,
                        const gw_relation **target);
void gw_sb_embed_from(ctx *c, const gw_rel_match *m, const char *target, const char *child);
void gw_sb_join_condition(ctx *c, const gw_rel_match *m, const char *parent_alias,
                          const char *child_alias);
int gw_sb_embed_null_filter(ctx *c, const char *alias, const gw_relation *rel,
                            const gw_select_item *it, const gw_filter *f);
int gw_sb_build_embed(ctx *c, const char *parent_alias, const gw_relation *parent,
                      const gw_select_item *it, const char *path, gw_buf *inner_conds, int *nout);

int gw_sb_build_insert(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p);
int gw_sb_build_update(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p);
int gw_sb_build_delete(ctx *c, const gw_request_shape *r, const gw_relation *rel, gw_plan *p);
int gw_sb_check_put(ctx *c, const gw_request_shape *r, const gw_relation *rel);
int gw_sb_build_rpc(ctx *c, const gw_request_shape *r, gw_plan *p);

#endif
