/* The PostgREST query-string grammar as a tree: select lists with aliases, casts,
 * JSON paths and embeds; filters with operators, not., (any)/(all); and/or trees;
 * order; limit/offset; on_conflict; columns. Pure: no SQL, no catalog, no I/O. */
#ifndef GW_QUERY_PARSE_H
#define GW_QUERY_PARSE_H
#include "arena.h"
#include "url.h"

#define GW_MAX_JSON_PATH 16
#define GW_MAX_DEPTH 16

typedef enum gw_op
{
	GW_OP_EQ,
	GW_OP_NEQ,
	GW_OP_GT,
	GW_OP_GTE,
	GW_OP_LT,
	GW_OP_LTE,
	GW_OP_LIKE,
	GW_OP_ILIKE,
	GW_OP_MATCH,
	GW_OP_IMATCH,
	GW_OP_IN,
	GW_OP_IS,
	GW_OP_ISDISTINCT,
	GW_OP_FTS,
	GW_OP_PLFTS,
	GW_OP_PHFTS,
	GW_OP_WFTS,
	GW_OP_CS,
	GW_OP_CD,
	GW_OP_OV,
	GW_OP_SL,
	GW_OP_SR,
	GW_OP_NXL,
	GW_OP_NXR,
	GW_OP_ADJ
} gw_op;

enum
{
	GW_QUANT_NONE,
	GW_QUANT_ANY,
	GW_QUANT_ALL
};

/* A column with an optional JSON path: data->a->>b. */
typedef struct gw_field
{
	char *name;
	int njson;
	char *json_key[GW_MAX_JSON_PATH];
	int json_text[GW_MAX_JSON_PATH]; /* 1 for ->>, 0 for -> */
} gw_field;

typedef struct gw_filter
{
	gw_field field;
	int negate;
	gw_op op;
	int quant;
	char *lang;  /* fts configuration, or NULL */
	char *value; /* scalar operand (like/ilike with * already turned into %) */
	char **list; /* in (...) and (any)/(all) {...} operands */
	int nlist;
} gw_filter;

/* An and/or tree; a leaf holds one filter. */
typedef struct gw_logic
{
	int is_leaf;
	gw_filter filter;
	int is_or;
	int negate;
	struct gw_logic **children;
	int nchildren, cap;
} gw_logic;

enum
{
	GW_SEL_STAR,
	GW_SEL_FIELD,
	GW_SEL_EMBED
};

/* Aggregate functions of select= (PostgREST v12): col.sum(), count(). */
enum
{
	GW_AGG_NONE,
	GW_AGG_COUNT,
	GW_AGG_SUM,
	GW_AGG_AVG,
	GW_AGG_MAX,
	GW_AGG_MIN
};
const char *gw_agg_name(int agg);

typedef struct gw_select gw_select;
typedef struct gw_select_item
{
	int kind;
	gw_field field; /* GW_SEL_FIELD */
	char *alias;    /* field or embed alias, or NULL */
	char *cast;     /* validated type name, or NULL */
	char *relation; /* GW_SEL_EMBED: target relation */
	char *hint;     /* !hint: fk constraint name or column */
	int inner;      /* !inner */
	int spread;     /* ...rel(cols): the columns join the parent's */
	int agg;        /* GW_SEL_FIELD: GW_AGG_*, applied to the (cast) field */
	int agg_star;   /* count() without a column: field.name is NULL */
	char *agg_cast; /* ::type after the aggregate, or NULL */
	gw_select *children;
} gw_select_item;

struct gw_select
{
	gw_select_item *items;
	int n, cap;
};

enum
{
	GW_NULLS_DEFAULT,
	GW_NULLS_FIRST,
	GW_NULLS_LAST
};
typedef struct gw_order_term
{
	char *embed; /* order=rel(col): a column of a to-one embed, or NULL */
	gw_field field;
	int desc;
	int nulls;
} gw_order_term;

/* Filters and modifiers that apply to one level: "" is the top relation, "a.b"
 * an embedded one (by alias or relation name). */
typedef struct gw_scope
{
	char *path;
	gw_logic *where; /* an AND node of everything given for this level */
	gw_order_term *order;
	int norder, order_cap;
	long limit; /* -1: none */
	long offset;
} gw_scope;

typedef struct gw_kv
{
	char *key;
	char *value;
} gw_kv;

typedef struct gw_query
{
	gw_select *select; /* NULL: select=* */
	gw_scope *scopes;  /* scopes[0] is the top level */
	int nscopes, scope_cap;
	char **on_conflict;
	int non_conflict;
	char **columns;
	int ncolumns;
	gw_kv *args; /* parameters that are not filters: RPC GET arguments */
	int nargs, args_cap;
} gw_query;

typedef struct gw_parse_error
{
	char message[256];
	char details[256];
} gw_parse_error;

/* Parses a raw (still percent-encoded) query string. As in PostgREST, a
 * parameter that is not reserved, whose key has no '.' and whose value does not
 * start with an operator becomes an arg (a function argument) instead of a
 * filter. Returns 0, or -1 with err filled (PGRST100). */
int gw_query_parse(gw_arena *a, const char *qs, size_t len, gw_query *out, gw_parse_error *err);

/* Single parsers, exposed for the unit tests and the fuzzer. */
int gw_parse_select(gw_arena *a, const char *s, gw_select **out, gw_parse_error *err);
int gw_parse_filter(gw_arena *a, const char *field, const char *value, gw_filter *out,
                    gw_parse_error *err);
int gw_parse_logic(gw_arena *a, int is_or, int negate, const char *value, gw_logic **out,
                   gw_parse_error *err);
int gw_parse_order(gw_arena *a, const char *s, gw_scope *scope, gw_parse_error *err);
/* The scope for an embed path, created when missing. */
gw_scope *gw_query_scope(gw_arena *a, gw_query *q, const char *path);
gw_scope *gw_query_find_scope(const gw_query *q, const char *path);
const char *gw_op_name(gw_op op);

#endif
