/* Unit tests of the PostgREST grammar (gateway/query_parse.c): good inputs give
 * the expected tree, bad ones a PGRST100 error, nothing crashes. */
#include <string.h>

#include "query_parse.h"
#include "tap.h"

static gw_arena A;

static int
parse(const char *qs, gw_query *q, gw_parse_error *e)
{
	return gw_query_parse(&A, qs, strlen(qs), q, e);
}

static void
selects(void)
{
	gw_select *s;
	gw_parse_error e;
	ok(gw_parse_select(&A, "id,t:title,data->who->>name,n:num::text,*", &s, &e) == 0,
	   "select list parses");
	ok(s && s->n == 5, "five items");
	is_str(s->items[1].alias, "t", "alias");
	is_str(s->items[1].field.name, "title", "aliased column");
	ok(s->items[2].field.njson == 2 && s->items[2].field.json_text[1] == 1 &&
	       !s->items[2].field.json_text[0],
	   "json path -> then ->>");
	is_str(s->items[2].field.json_key[1], "name", "json key");
	is_str(s->items[3].cast, "text", "cast");
	ok(s->items[4].kind == GW_SEL_STAR, "star");

	ok(gw_parse_select(&A, "id,owner:gw_projects!fk_name!inner(id,name,tasks:gw_tasks(*))", &s,
	                   &e) == 0,
	   "embeds parse");
	gw_select_item *emb = &s->items[1];
	ok(emb->kind == GW_SEL_EMBED && emb->inner, "embed with !inner");
	is_str(emb->hint, "fk_name", "embed hint");
	is_str(emb->alias, "owner", "embed alias");
	ok(emb->children->n == 3 && emb->children->items[2].kind == GW_SEL_EMBED, "nested embed");

	ok(gw_parse_select(&A, "id,...proj(n:name)", &s, &e) == 0 && s->items[1].spread &&
	       s->items[1].kind == GW_SEL_EMBED,
	   "spread embed parses");
	ok(gw_parse_select(&A, "...name", &s, &e) != 0, "spread of a plain column is refused");
	ok(gw_parse_select(&A, "id::text; drop table x", &s, &e) != 0,
	   "a cast with SQL in it is refused");
	ok(gw_parse_select(&A, "id::int)", &s, &e) != 0, "stray parenthesis is refused");
	ok(gw_parse_select(&A, "a(b", &s, &e) != 0, "unclosed embed is refused");
	ok(gw_parse_select(&A, "things()", &s, &e) == 0 && s->items[0].kind == GW_SEL_EMBED,
	   "name() is an embed (an unknown one fails at build time), never a function call");
	ok(gw_parse_select(&A, "count()", &s, &e) == 0 && s->items[0].kind == GW_SEL_FIELD &&
	       s->items[0].agg == GW_AGG_COUNT && s->items[0].agg_star,
	   "count() alone is the count aggregate (PostgREST v12)");
	ok(gw_parse_select(&A, "c:count()::text,project_id", &s, &e) == 0 && s->n == 2 &&
	       s->items[0].agg_star && !strcmp(s->items[0].alias, "c") &&
	       !strcmp(s->items[0].agg_cast, "text"),
	   "aliased count() with a cast after it");
	ok(gw_parse_select(&A, "s:data->>k::integer.sum()::text", &s, &e) == 0 &&
	       s->items[0].agg == GW_AGG_SUM && !strcmp(s->items[0].cast, "integer") &&
	       !strcmp(s->items[0].agg_cast, "text") && !strcmp(s->items[0].alias, "s") &&
	       s->items[0].field.njson == 1,
	   "alias, JSON path, cast before and after an aggregate");
	ok(gw_parse_select(&A, "a.avg(),a.max(),a.min(),a.count()", &s, &e) == 0 && s->n == 4 &&
	       s->items[0].agg == GW_AGG_AVG && s->items[3].agg == GW_AGG_COUNT,
	   "avg, max, min, count on a column");
	ok(gw_parse_select(&A, "a.median()", &s, &e) != 0, "an unknown aggregate is refused");
	ok(gw_parse_select(&A, "a.sum(x)", &s, &e) != 0, "aggregates take no arguments");
	ok(gw_parse_select(&A, "a.sum()::int;drop", &s, &e) != 0, "a cast after an aggregate is checked");
	ok(gw_parse_select(&A, "\"weird \\\"name\",x", &s, &e) == 0 && s->n == 2, "quoted name parses");
	is_str(s->items[0].field.name, "weird \"name", "quoted name with an escaped quote");
	char deep[200] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "a(");
	ok(gw_parse_select(&A, deep, &s, &e) != 0, "deep nesting is refused");
}

static void
filters(void)
{
	gw_filter f;
	gw_parse_error e;
	ok(gw_parse_filter(&A, "age", "gte.18", &f, &e) == 0 && f.op == GW_OP_GTE, "gte");
	is_str(f.value, "18", "gte value");
	ok(gw_parse_filter(&A, "name", "not.like.*ann*", &f, &e) == 0 && f.negate && f.op == GW_OP_LIKE,
	   "not.like");
	is_str(f.value, "%ann%", "like stars become percent");
	ok(gw_parse_filter(&A, "id", "in.(1,2,\"a,b\",\"q\\\"x\")", &f, &e) == 0 && f.nlist == 4,
	   "in list with quotes");
	is_str(f.list[2], "a,b", "quoted comma kept");
	is_str(f.list[3], "q\"x", "escaped quote");
	ok(gw_parse_filter(&A, "id", "in.()", &f, &e) == 0 && f.nlist == 0, "empty in list");
	ok(gw_parse_filter(&A, "x", "is.NULL", &f, &e) == 0 && !strcmp(f.value, "null"),
	   "is null, any case");
	ok(gw_parse_filter(&A, "x", "is.1=1", &f, &e) != 0, "is takes only its keywords");
	ok(gw_parse_filter(&A, "doc", "fts(english).fat cats", &f, &e) == 0 && f.op == GW_OP_FTS,
	   "fts with language");
	is_str(f.lang, "english", "fts language");
	ok(gw_parse_filter(&A, "name", "like(any).{a*,*b}", &f, &e) == 0 && f.quant == GW_QUANT_ANY &&
	       f.nlist == 2,
	   "like(any)");
	is_str(f.list[1], "%b", "quantified like list");
	ok(gw_parse_filter(&A, "n", "eq(all).{1,2}", &f, &e) == 0 && f.quant == GW_QUANT_ALL,
	   "eq(all)");
	ok(gw_parse_filter(&A, "data->a->>b", "eq.1", &f, &e) == 0 && f.field.njson == 2,
	   "json path filter");
	ok(gw_parse_filter(&A, "n", "between.1", &f, &e) != 0, "unknown operator");
	is_str(e.details, "unknown operator", "error details");
	ok(gw_parse_filter(&A, "n", "eq", &f, &e) != 0, "operator without value");
	ok(gw_parse_filter(&A, "n", "fts(x.a", &f, &e) != 0, "broken language");
	ok(gw_parse_filter(&A, "n", "in.1,2", &f, &e) != 0, "in without parentheses");
	ok(gw_parse_filter(&A, "n", "gt(any).1", &f, &e) != 0, "(any) without braces");
	const char *ops[] = {"eq",    "neq",    "gt",         "gte", "lt",    "lte",   "like", "ilike",
	                     "match", "imatch", "isdistinct", "fts", "plfts", "phfts", "wfts", "cs",
	                     "cd",    "ov",     "sl",         "sr",  "nxl",   "nxr",   "adj"};
	int all = 1;
	for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
	{
		char v[32];
		snprintf(v, sizeof v, "%s.x", ops[i]);
		all &= gw_parse_filter(&A, "c", v, &f, &e) == 0 && !strcmp(gw_op_name(f.op), ops[i]);
	}
	ok(all, "every PostgREST operator parses");
}

static void
logic(void)
{
	gw_logic *l;
	gw_parse_error e;
	ok(gw_parse_logic(&A, 1, 0, "(a.eq.1,and(b.gt.2,c.is.null),not.or(d.in.(1,2),e.eq.\"x,y\"))",
	                  &l, &e) == 0,
	   "or tree parses");
	ok(l->is_or && l->nchildren == 3, "three children");
	ok(!l->children[1]->is_or && l->children[1]->nchildren == 2, "nested and");
	ok(l->children[2]->negate && l->children[2]->is_or, "not.or");
	is_str(l->children[2]->children[1]->filter.value, "x,y", "quoted value inside a tree");
	ok(l->children[2]->children[0]->filter.nlist == 2, "in list inside a tree");
	ok(gw_parse_logic(&A, 0, 0, "(a.eq.1", &l, &e) != 0, "unclosed tree");
	ok(gw_parse_logic(&A, 0, 0, "(a.eq.1,)", &l, &e) != 0, "empty element");
	ok(gw_parse_logic(&A, 0, 0, "(a.eq.1))", &l, &e) != 0, "extra parenthesis");
	ok(gw_parse_logic(&A, 0, 0, "(a)", &l, &e) != 0, "element without operator");
}

static void
whole(void)
{
	gw_query q;
	gw_parse_error e;
	ok(parse("select=id,name&id=gt.1&order=name.desc.nullslast,id&limit=10&offset=5&or=(a.eq.1,b."
	         "eq.2)"
	         "&tasks.order=id&tasks.limit=2&tasks.done=is.true&not.and=(x.eq.1,y.eq.2)",
	         &q, &e) == 0,
	   "full query string parses");
	gw_scope *top = gw_query_find_scope(&q, "");
	ok(top && top->where->nchildren == 3, "three top-level conditions");
	ok(top->norder == 2 && top->order[0].desc && top->order[0].nulls == GW_NULLS_LAST,
	   "order terms");
	ok(top->limit == 10 && top->offset == 5, "limit and offset");
	gw_scope *t = gw_query_find_scope(&q, "tasks");
	ok(t && t->limit == 2 && t->norder == 1 && t->where->nchildren == 1, "embedded scope");
	ok(top->where->children[2]->negate && !top->where->children[2]->is_or, "not.and at top level");
	ok(parse("name=eq.a%20b+c&x=eq.%27%3B", &q, &e) == 0, "percent and plus decoding");
	is_str(gw_query_find_scope(&q, "")->where->children[0]->filter.value, "a b c", "decoded value");
	ok(parse("id=eq.1%00", &q, &e) != 0, "NUL byte refused");
	ok(parse("id=eq.%zz", &q, &e) != 0, "bad escape refused");
	ok(parse("limit=-1", &q, &e) != 0, "negative limit refused");
	ok(parse("limit=1;select", &q, &e) != 0, "limit with SQL refused");
	ok(parse("order=id;drop", &q, &e) == 0, "odd order column parses (it is quoted later)");
	ok(parse("order=id.sideways", &q, &e) != 0, "bad order modifier refused");
	ok(parse("order=proj(name).desc,id", &q, &e) == 0, "order by an embed's column parses");
	gw_scope *os = gw_query_find_scope(&q, "");
	ok(os->norder == 2 && os->order[0].embed && !strcmp(os->order[0].embed, "proj") &&
	       !strcmp(os->order[0].field.name, "name") && os->order[0].desc,
	   "embed order term");
	ok(parse("order=proj(name", &q, &e) != 0, "unclosed embed order refused");
	ok(parse("on_conflict=id,name&columns=a,b", &q, &e) == 0 && q.non_conflict == 2 &&
	       q.ncolumns == 2,
	   "on_conflict and columns");
	ok(gw_query_parse(&A, "a=1&b=2&c=eq.3", 14, &q, &e) == 0 && q.nargs == 2,
	   "rpc arguments split off");
	ok(gw_query_find_scope(&q, "")->where->nchildren == 1, "the rest are filters");
	ok(parse("a=eq.1&b.c=1&d=not.x&e=is&f=in&g=fts(english).x&h=eq(any).{1}&i=x.eq.1&j=&k", &q,
	         &e) != 0,
	   "a value starting with an operator or a key with a path is a filter (here: a bad one)");
	ok(parse("a=eq.1&b.c=eq.1&g=fts(english).x&h=eq(any).{1}&i=x.eq.1&j=&k&l=1;drop", &q, &e) == 0 &&
	       q.nargs == 3 && !strcmp(q.args[0].key, "i") && !strcmp(q.args[1].key, "j") &&
	       !strcmp(q.args[2].key, "l"),
	   "any other value is an argument; a key without = is dropped (PostgREST)");
}

TAP_TEST(test_query_parse)
{
	gw_arena_init(&A);
	selects();
	filters();
	logic();
	whole();
	gw_arena_free(&A);
}
