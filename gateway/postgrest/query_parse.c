/* The PostgREST query-string grammar (see query_parse.h): turns select=, order=,
 * filters and and/or trees into a tree in the request arena. Every length is
 * bounded by the input and every recursion by GW_MAX_DEPTH, because this code
 * reads what any client sends (it is a libFuzzer target). */
#include "query_parse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {
    "eq",     "neq", "gt", "gte",        "lt",  "lte",   "like",  "ilike", "match",
    "imatch", "in",  "is", "isdistinct", "fts", "plfts", "phfts", "wfts",  "cs",
    "cd",     "ov",  "sl", "sr",         "nxl", "nxr",   "adj",
};

const char *
gw_op_name(gw_op op)
{
	return op_names[op];
}

static const char *const agg_names[] = {"", "count", "sum", "avg", "max", "min"};

const char *
gw_agg_name(int agg)
{
	return agg > GW_AGG_NONE && agg <= GW_AGG_MIN ? agg_names[agg] : "";
}

/* name() at *pp for one of the aggregate functions; 0 when there is none. */
static int
parse_agg_call(const char **pp, const char *end)
{
	for (int i = GW_AGG_COUNT; i <= GW_AGG_MIN; i++)
	{
		size_t n = strlen(agg_names[i]);
		if ((size_t)(end - *pp) >= n + 2 && !strncmp(*pp, agg_names[i], n) && (*pp)[n] == '(' &&
		    (*pp)[n + 1] == ')')
		{
			*pp += n + 2;
			return i;
		}
	}
	return 0;
}

static int
fail(gw_parse_error *err, const char *what, const char *input, const char *details)
{
	if (err)
	{
		snprintf(err->message, sizeof err->message, "\"failed to parse %s parameter (%.120s)\"",
		         what, input ? input : "");
		snprintf(err->details, sizeof err->details, "%s", details);
	}
	return -1;
}

/* Characters that end a bare name in select/order/logic contexts. */
static int
name_stop(const char *p, const char *end)
{
	char c = *p;
	if (c == ',' || c == ':' || c == '(' || c == ')' || c == '!' || c == '.')
		return 1;
	if (c == '-' && p + 1 < end && p[1] == '>')
		return 1;
	return 0;
}

/* Reads a bare or "quoted" name at *pp. */
static char *
parse_name(gw_arena *a, const char **pp, const char *end)
{
	const char *p = *pp;
	if (p < end && *p == '"')
	{
		char *d = gw_arena_alloc(a, (size_t)(end - p) + 1), *o = d;
		p++;
		while (p < end && *p != '"')
		{
			if (*p == '\\' && p + 1 < end)
				p++;
			*o++ = *p++;
		}
		if (p >= end)
			return NULL;
		p++;
		*o = '\0';
		if (o == d)
			return NULL;
		*pp = p;
		return d;
	}
	const char *s = p;
	while (p < end && !name_stop(p, end))
		p++;
	*pp = p;
	/* PostgREST strips a bare name's leading and trailing spaces */
	while (s < p && *s == ' ')
		s++;
	while (p > s && p[-1] == ' ')
		p--;
	if (p == s)
		return NULL;
	return gw_arena_strndup(a, s, (size_t)(p - s));
}

/* Reads name[->key|->>key]* at *pp; JSON keys end like names but may hold '.'
 * only when quoted. */
static int
parse_field(gw_arena *a, const char **pp, const char *end, gw_field *f)
{
	const char *p = *pp;
	memset(f, 0, sizeof *f);
	f->name = parse_name(a, &p, end);
	if (!f->name)
		return -1;
	while (p + 1 < end && p[0] == '-' && p[1] == '>')
	{
		int text = 0;
		p += 2;
		if (p < end && *p == '>')
		{
			text = 1;
			p++;
		}
		if (f->njson == GW_MAX_JSON_PATH)
			return -1;
		char *key = parse_name(a, &p, end);
		if (!key)
			return -1;
		f->json_key[f->njson] = key;
		f->json_text[f->njson] = text;
		f->njson++;
	}
	*pp = p;
	return 0;
}

/* A type name for ::cast: letters, digits, underscores, spaces between words
 * (double precision), an optional [] suffix. Anything else is refused. */
static char *
parse_cast(gw_arena *a, const char **pp, const char *end)
{
	const char *p = *pp, *s = p;
	if (p >= end || !(isalpha((unsigned char)*p) || *p == '_'))
		return NULL;
	while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == ' '))
		p++;
	if (p + 1 < end && p[0] == '[' && p[1] == ']')
		p += 2;
	if (p - s > 63 || p[-1] == ' ')
		return NULL;
	*pp = p;
	char *t = gw_arena_strndup(a, s, (size_t)(p - s));
	for (char *c = t; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return t;
}

static void
skip_spaces(const char **pp, const char *end)
{
	while (*pp < end && (**pp == ' ' || **pp == '\t' || **pp == '\n'))
		(*pp)++;
}

static int parse_select_list(gw_arena *a, const char **pp, const char *end, int depth,
                             gw_select **out, const char *input, gw_parse_error *err);

static int
parse_select_item(gw_arena *a, const char **pp, const char *end, int depth, gw_select_item *it,
                  const char *input, gw_parse_error *err)
{
	const char *p = *pp;
	skip_spaces(&p, end);
	if (p < end && *p == '*')
	{
		it->kind = GW_SEL_STAR;
		*pp = p + 1;
		return 0;
	}
	int spread = 0;
	if (p + 2 < end && p[0] == '.' && p[1] == '.' && p[2] == '.')
	{
		spread = 1;
		p += 3;
	}
	const char *save = p;
	if (!spread)
	{
		/* count() alone, optionally aliased: alias:count()::cast */
		const char *q = p;
		char *alias = NULL;
		if (p < end && *p != '"')
		{
			alias = parse_name(a, &q, end);
			if (alias && q < end && *q == ':' && !(q + 1 < end && q[1] == ':'))
				q++;
			else
			{
				alias = NULL;
				q = p;
			}
		}
		if (parse_agg_call(&q, end) == GW_AGG_COUNT && (q == end || *q == ',' || *q == ')' ||
		                                                 (q + 1 < end && q[0] == ':' && q[1] == ':')))
		{
			it->kind = GW_SEL_FIELD;
			it->agg = GW_AGG_COUNT;
			it->agg_star = 1;
			it->alias = alias;
			if (q + 1 < end && q[0] == ':' && q[1] == ':')
			{
				q += 2;
				it->agg_cast = parse_cast(a, &q, end);
				if (!it->agg_cast)
					return fail(err, "select", input, "malformed cast type");
			}
			*pp = q;
			return 0;
		}
	}
	char *first = parse_name(a, &p, end);
	if (!first)
		return fail(err, "select", input, "expected a column or relation name");
	if (p < end && *p == ':' && !(p + 1 < end && p[1] == ':'))
	{
		it->alias = first;
		p++;
		save = p;
		first = parse_name(a, &p, end);
		if (!first)
			return fail(err, "select", input, "expected a name after the alias");
	}
	if (spread && !(p < end && (*p == '!' || *p == '(')))
		return fail(err, "select", input, "... spreads an embedded relation: ...rel(columns)");
	if (p < end && (*p == '!' || *p == '('))
	{
		it->kind = GW_SEL_EMBED;
		it->relation = first;
		it->spread = spread;
		while (p < end && *p == '!')
		{
			p++;
			char *word = parse_name(a, &p, end);
			if (!word)
				return fail(err, "select", input, "expected a hint after !");
			if (!strcmp(word, "inner"))
				it->inner = 1;
			else if (!strcmp(word, "left"))
				it->inner = 0;
			else if (!it->hint)
				it->hint = word;
			else
				return fail(err, "select", input, "more than one embed hint");
		}
		if (p >= end || *p != '(')
			return fail(err, "select", input, "expected ( after the embedded relation");
		if (depth >= GW_MAX_DEPTH)
			return fail(err, "select", input, "embedding nested too deeply");
		p++;
		if (parse_select_list(a, &p, end, depth + 1, &it->children, input, err))
			return -1;
		if (p >= end || *p != ')')
			return fail(err, "select", input, "expected ) to close the embedded select");
		p++;
		*pp = p;
		return 0;
	}
	p = save;
	it->kind = GW_SEL_FIELD;
	if (parse_field(a, &p, end, &it->field))
		return fail(err, "select", input, "malformed column or JSON path");
	if (p + 1 < end && p[0] == ':' && p[1] == ':')
	{
		p += 2;
		it->cast = parse_cast(a, &p, end);
		if (!it->cast)
			return fail(err, "select", input, "malformed cast type");
	}
	if (p < end && *p == '.')
	{
		p++;
		it->agg = parse_agg_call(&p, end);
		if (!it->agg)
			return fail(err, "select", input,
			            "expected an aggregate function: count(), sum(), avg(), max() or min()");
		if (p + 1 < end && p[0] == ':' && p[1] == ':')
		{
			p += 2;
			it->agg_cast = parse_cast(a, &p, end);
			if (!it->agg_cast)
				return fail(err, "select", input, "malformed cast type");
		}
	}
	if (p < end && *p == '(')
		return fail(err, "select", input, "unexpected '(' in select");
	skip_spaces(&p, end);
	*pp = p;
	return 0;
}

static int
parse_select_list(gw_arena *a, const char **pp, const char *end, int depth, gw_select **out,
                  const char *input, gw_parse_error *err)
{
	gw_select *sel = gw_arena_alloc(a, sizeof *sel);
	const char *p = *pp;
	if (p < end && *p == ')')
	{ /* rel() selects nothing but still embeds */
		*out = sel;
		return 0;
	}
	for (;;)
	{
		gw_select_item *it = gw_arena_push(a, (void **)&sel->items, &sel->n, &sel->cap, sizeof *it);
		if (parse_select_item(a, &p, end, depth, it, input, err))
			return -1;
		if (p < end && *p == ',')
		{
			p++;
			continue;
		}
		break;
	}
	*pp = p;
	*out = sel;
	return 0;
}

int
gw_parse_select(gw_arena *a, const char *s, gw_select **out, gw_parse_error *err)
{
	const char *p = s, *end = s + strlen(s);
	if (p == end)
	{
		*out = NULL;
		return 0;
	}
	if (parse_select_list(a, &p, end, 0, out, s, err))
		return -1;
	if (p != end)
		return fail(err, "select", s, "unexpected text after the select list");
	return 0;
}

/* Splits "a,b" / "{a,b}" / "(a,b)" contents into items; "quoted" items keep commas
 * and parentheses, with \" and \\ escapes. */
static int
parse_list(gw_arena *a, const char *s, size_t n, char ***out, int *nout)
{
	int cap = 0;
	*out = NULL;
	*nout = 0;
	if (n == 0)
		return 0;
	const char *p = s, *end = s + n;
	for (;;)
	{
		char *item;
		if (p < end && *p == '"')
		{
			char *d = gw_arena_alloc(a, (size_t)(end - p) + 1), *o = d;
			p++;
			while (p < end && *p != '"')
			{
				if (*p == '\\' && p + 1 < end)
					p++;
				*o++ = *p++;
			}
			if (p >= end)
				return -1;
			p++;
			*o = '\0';
			item = d;
		}
		else
		{
			const char *st = p;
			while (p < end && *p != ',')
				p++;
			item = gw_arena_strndup(a, st, (size_t)(p - st));
		}
		*(char **)gw_arena_push(a, (void **)out, nout, &cap, sizeof(char *)) = item;
		if (p == end)
			return 0;
		if (*p != ',')
			return -1;
		p++;
	}
}

static void
stars_to_percent(char *s)
{
	for (; s && *s; s++)
		if (*s == '*')
			*s = '%';
}

int
gw_parse_filter(gw_arena *a, const char *field, const char *value, gw_filter *f,
                gw_parse_error *err)
{
	memset(f, 0, sizeof *f);
	const char *fp = field, *fend = field + strlen(field);
	if (parse_field(a, &fp, fend, &f->field) || fp != fend)
		return fail(err, "filter", field, "malformed column or JSON path");
	const char *p = value;
	if (!strncmp(p, "not.", 4))
	{
		f->negate = 1;
		p += 4;
	}
	const char *os = p;
	while (*p && *p != '.' && *p != '(')
		p++;
	size_t oplen = (size_t)(p - os);
	int op = -1;
	for (size_t i = 0; i < sizeof op_names / sizeof *op_names; i++)
		if (strlen(op_names[i]) == oplen && !strncmp(op_names[i], os, oplen))
			op = (int)i;
	if (op < 0)
		return fail(err, "filter", value, "unknown operator");
	f->op = (gw_op)op;
	if (!strncmp(p, "(any)", 5) || !strncmp(p, "(all)", 5))
	{
		if (!(op <= GW_OP_IMATCH))
			return fail(
			    err, "filter", value,
			    "(any)/(all) apply to eq, neq, gt, gte, lt, lte, like, ilike, match, imatch");
		f->quant = p[1] == 'a' && p[2] == 'n' ? GW_QUANT_ANY : GW_QUANT_ALL;
		p += 5;
	}
	else if (*p == '(' && op >= GW_OP_FTS && op <= GW_OP_WFTS)
	{
		const char *ls = ++p;
		while (*p && *p != ')')
			p++;
		if (*p != ')' || p == ls)
			return fail(err, "filter", value, "malformed text search language");
		f->lang = gw_arena_strndup(a, ls, (size_t)(p - ls));
		p++;
	}
	if (*p != '.')
		return fail(err, "filter", value, "expected . after the operator");
	p++;
	size_t n = strlen(p);
	if (op == GW_OP_IN)
	{
		if (n < 2 || p[0] != '(' || p[n - 1] != ')' ||
		    parse_list(a, p + 1, n - 2, &f->list, &f->nlist))
			return fail(err, "filter", value, "in takes a list: in.(a,b,\"c,d\")");
	}
	else if (f->quant)
	{
		if (n < 2 || p[0] != '{' || p[n - 1] != '}' ||
		    parse_list(a, p + 1, n - 2, &f->list, &f->nlist))
			return fail(err, "filter", value, "(any)/(all) take a list: {a,b}");
		if (op == GW_OP_LIKE || op == GW_OP_ILIKE)
			for (int i = 0; i < f->nlist; i++)
				stars_to_percent(f->list[i]);
	}
	else if (op == GW_OP_IS)
	{
		static const char *const ok[] = {"null", "not_null", "true", "false", "unknown"};
		int found = 0;
		for (size_t i = 0; i < 5; i++)
			if (!strcasecmp(p, ok[i]))
			{
				f->value = gw_arena_strdup(a, ok[i]);
				found = 1;
			}
		if (!found)
			return fail(err, "filter", value, "is takes null, not_null, true, false or unknown");
	}
	else
	{
		f->value = gw_arena_strdup(a, p);
		if (op == GW_OP_LIKE || op == GW_OP_ILIKE)
			stars_to_percent(f->value);
	}
	return 0;
}

static gw_logic *
new_node(gw_arena *a, int is_or, int negate)
{
	gw_logic *l = gw_arena_alloc(a, sizeof *l);
	l->is_or = is_or;
	l->negate = negate;
	return l;
}

static void
add_child(gw_arena *a, gw_logic *parent, gw_logic *child)
{
	*(gw_logic **)gw_arena_push(a, (void **)&parent->children, &parent->nchildren, &parent->cap,
	                            sizeof child) = child;
}

static int parse_logic_body(gw_arena *a, const char *s, size_t n, gw_logic *node, int depth,
                            const char *input, gw_parse_error *err);

/* One element of an and/or list: a nested tree or field.op.value. */
static int
parse_logic_item(gw_arena *a, const char *s, size_t n, gw_logic *parent, int depth,
                 const char *input, gw_parse_error *err)
{
	int negate = 0;
	if (n >= 4 && !strncmp(s, "not.", 4) &&
	    ((n >= 8 && !strncmp(s + 4, "and(", 4)) || (n >= 7 && !strncmp(s + 4, "or(", 3))))
	{
		negate = 1;
		s += 4;
		n -= 4;
	}
	int is_or = n >= 3 && !strncmp(s, "or(", 3);
	int is_and = n >= 4 && !strncmp(s, "and(", 4);
	if (is_or || is_and)
	{
		size_t skip = is_or ? 2 : 3;
		if (s[n - 1] != ')')
			return fail(err, "logic tree", input, "expected ) to close the tree");
		if (depth >= GW_MAX_DEPTH)
			return fail(err, "logic tree", input, "logic tree nested too deeply");
		gw_logic *child = new_node(a, is_or, negate);
		if (parse_logic_body(a, s + skip + 1, n - skip - 2, child, depth + 1, input, err))
			return -1;
		add_child(a, parent, child);
		return 0;
	}
	const char *p = s, *end = s + n;
	gw_field tmp;
	if (parse_field(a, &p, end, &tmp) || p >= end || *p != '.')
		return fail(err, "logic tree", input, "expected field.operator.value");
	char *field = gw_arena_strndup(a, s, (size_t)(p - s));
	char *value = gw_arena_strndup(a, p + 1, (size_t)(end - p - 1));
	/* field.op."quoted value" keeps commas and parentheses; drop the quotes */
	char *dot = strchr(value, '.');
	if (dot && dot[1] == '"')
	{
		size_t vl = strlen(dot + 1);
		if (vl >= 2 && dot[vl] == '"')
		{
			char *o = dot + 1;
			for (char *q = dot + 2; q < dot + vl; q++)
			{
				if (*q == '\\' && q + 1 < dot + vl)
					q++;
				*o++ = *q;
			}
			*o = '\0';
		}
	}
	gw_logic *leaf = new_node(a, 0, 0);
	leaf->is_leaf = 1;
	if (gw_parse_filter(a, field, value, &leaf->filter, err))
		return -1;
	add_child(a, parent, leaf);
	return 0;
}

static int
parse_logic_body(gw_arena *a, const char *s, size_t n, gw_logic *node, int depth, const char *input,
                 gw_parse_error *err)
{
	size_t i = 0, start = 0;
	int paren = 0, quoted = 0;
	if (n == 0)
		return fail(err, "logic tree", input, "empty logic tree");
	for (i = 0; i <= n; i++)
	{
		if (i < n)
		{
			char c = s[i];
			if (quoted)
			{
				if (c == '\\')
					i++;
				else if (c == '"')
					quoted = 0;
				continue;
			}
			if (c == '"')
			{
				quoted = 1;
				continue;
			}
			if (c == '(')
			{
				paren++;
				continue;
			}
			if (c == ')')
			{
				if (--paren < 0)
					return fail(err, "logic tree", input, "unbalanced parentheses");
				continue;
			}
			if (c != ',' || paren)
				continue;
		}
		if (i > n)
			break;
		if (i == start)
			return fail(err, "logic tree", input, "empty element");
		if (parse_logic_item(a, s + start, i - start, node, depth, input, err))
			return -1;
		start = i + 1;
	}
	if (quoted || paren)
		return fail(err, "logic tree", input, "unbalanced quotes or parentheses");
	return 0;
}

int
gw_parse_logic(gw_arena *a, int is_or, int negate, const char *value, gw_logic **out,
               gw_parse_error *err)
{
	size_t n = strlen(value);
	if (n < 2 || value[0] != '(' || value[n - 1] != ')')
		return fail(err, "logic tree", value, "expected (...)");
	gw_logic *node = new_node(a, is_or, negate);
	if (parse_logic_body(a, value + 1, n - 2, node, 1, value, err))
		return -1;
	*out = node;
	return 0;
}

int
gw_parse_order(gw_arena *a, const char *s, gw_scope *scope, gw_parse_error *err)
{
	const char *p = s, *end = s + strlen(s);
	if (p == end)
		return fail(err, "order", s, "empty order");
	for (;;)
	{
		gw_order_term *t =
		    gw_arena_push(a, (void **)&scope->order, &scope->norder, &scope->order_cap, sizeof *t);
		if (parse_field(a, &p, end, &t->field))
			return fail(err, "order", s, "expected a column");
		if (p < end && *p == '(')
		{ /* rel(col): order by a to-one embed's column */
			if (t->field.njson)
				return fail(err, "order", s, "expected rel(column)");
			t->embed = t->field.name;
			p++;
			if (parse_field(a, &p, end, &t->field) || p >= end || *p != ')')
				return fail(err, "order", s, "expected rel(column)");
			p++;
		}
		while (p < end && *p == '.')
		{
			const char *m = ++p;
			while (p < end && *p != '.' && *p != ',')
				p++;
			size_t ml = (size_t)(p - m);
			if (ml == 3 && !strncmp(m, "asc", 3))
				t->desc = 0;
			else if (ml == 4 && !strncmp(m, "desc", 4))
				t->desc = 1;
			else if (ml == 10 && !strncmp(m, "nullsfirst", 10))
				t->nulls = GW_NULLS_FIRST;
			else if (ml == 9 && !strncmp(m, "nullslast", 9))
				t->nulls = GW_NULLS_LAST;
			else
				return fail(err, "order", s, "expected asc, desc, nullsfirst or nullslast");
		}
		if (p == end)
			return 0;
		if (*p != ',')
			return fail(err, "order", s, "unexpected text in order");
		p++;
	}
}

gw_scope *
gw_query_find_scope(const gw_query *q, const char *path)
{
	for (int i = 0; i < q->nscopes; i++)
		if (!strcmp(q->scopes[i].path, path))
			return &q->scopes[i];
	return NULL;
}

gw_scope *
gw_query_scope(gw_arena *a, gw_query *q, const char *path)
{
	gw_scope *s = gw_query_find_scope(q, path);
	if (s)
		return s;
	s = gw_arena_push(a, (void **)&q->scopes, &q->nscopes, &q->scope_cap, sizeof *s);
	s->path = gw_arena_strdup(a, path);
	s->where = new_node(a, 0, 0);
	s->limit = -1;
	return s;
}

static int
parse_count(const char *s, long *out)
{
	if (!*s || strlen(s) > 18)
		return -1;
	for (const char *p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -1;
	*out = strtol(s, NULL, 10);
	return 0;
}

static int
parse_name_list(gw_arena *a, const char *s, char ***out, int *n)
{
	int cap = 0;
	const char *p = s, *end = s + strlen(s);
	*n = 0;
	for (;;)
	{
		char *name = parse_name(a, &p, end);
		if (!name)
			return -1;
		*(char **)gw_arena_push(a, (void **)out, n, &cap, sizeof(char *)) = name;
		if (p == end)
			return 0;
		if (*p != ',')
			return -1;
		p++;
	}
}

/* Splits "a.b.key" into scope "a.b" and "key" (dots inside a JSON path stay). */
static void
split_scope(gw_arena *a, const char *key, char **scope, const char **rest)
{
	const char *arrow = strstr(key, "->");
	const char *lim = arrow ? arrow : key + strlen(key);
	const char *dot = NULL;
	for (const char *p = key; p < lim; p++)
		if (*p == '.')
			dot = p;
	if (!dot)
	{
		*scope = "";
		*rest = key;
		return;
	}
	*scope = gw_arena_strndup(a, key, (size_t)(dot - key));
	*rest = dot + 1;
}

static int
ends_with(const char *s, const char *suffix, char **prefix, gw_arena *a)
{
	size_t n = strlen(s), m = strlen(suffix);
	if (n == m && !strcmp(s, suffix))
	{
		*prefix = "";
		return 1;
	}
	if (n > m + 1 && s[n - m - 1] == '.' && !strcmp(s + n - m, suffix))
	{
		*prefix = gw_arena_strndup(a, s, n - m - 1);
		return 1;
	}
	return 0;
}

/* PostgREST's test of a filter value: its first word (before the first '.',
 * without a (any)/(all) or fts (config) suffix) is an operator, or it starts
 * with not., is or in. */
static int
has_operator(const char *val)
{
	static const char *const ops[] = {"eq",  "gte", "gt",    "lte",        "lt",    "neq",
	                                  "like", "ilike", "cs",  "cd",         "ov",    "sl",
	                                  "sr",  "nxr", "nxl",   "adj",        "match", "imatch",
	                                  "fts", "plfts", "phfts", "wfts",     "isdistinct"};
	size_t n = strcspn(val, ".");
	if (n == 3 && !strncmp(val, "not", 3) && val[n] == '.')
		return 1;
	if ((n == 2 && !strncmp(val, "is", 2)) || (n == 2 && !strncmp(val, "in", 2)))
		return 1;
	size_t w = strcspn(val, ".(");
	for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
		if (strlen(ops[i]) == w && !strncmp(val, ops[i], w))
			return 1;
	return 0;
}

int
gw_query_parse(gw_arena *a, const char *qs, size_t len, gw_query *q, gw_parse_error *err)
{
	memset(q, 0, sizeof *q);
	gw_query_scope(a, q, "");
	const char *p = qs, *end = qs + len;
	int on_conflict_seen = 0;
	while (p < end)
	{
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		if (pe == p)
		{
			p = pe + 1;
			continue;
		}
		char *key = gw_url_decode(a, p, (size_t)((eq ? eq : pe) - p), 1);
		char *val =
		    eq ? gw_url_decode(a, eq + 1, (size_t)(pe - eq - 1), 1) : gw_arena_strdup(a, "");
		p = amp ? amp + 1 : end;
		if (!key || !val)
			return fail(err, "query", "", "malformed percent-encoding or NUL byte");
		if (!eq)
			continue; /* PostgREST drops a parameter without '=' */
		char *scope;
		/* As PostgREST: a parameter is a filter when its key is a path (a.b) or
		 * its value starts with an operator; any other one (not reserved) is a
		 * function argument, and means nothing to a relation. */
		int reserved = !strcmp(key, "select") || !strcmp(key, "on_conflict") ||
		               !strcmp(key, "columns") || ends_with(key, "order", &scope, a) ||
		               ends_with(key, "limit", &scope, a) || ends_with(key, "offset", &scope, a) ||
		               ends_with(key, "or", &scope, a) || ends_with(key, "and", &scope, a);
		int is_arg = !reserved && !strchr(key, '.') && !has_operator(val);
		if (is_arg)
		{
			gw_kv *kv = gw_arena_push(a, (void **)&q->args, &q->nargs, &q->args_cap, sizeof *kv);
			kv->key = key;
			kv->value = val;
		}
		else if (!strcmp(key, "select"))
		{
			if (gw_parse_select(a, val, &q->select, err))
				return -1;
		}
		else if (!strcmp(key, "on_conflict"))
		{
			if (on_conflict_seen++ || parse_name_list(a, val, &q->on_conflict, &q->non_conflict))
				return fail(err, "on_conflict", val, "expected a list of columns");
		}
		else if (!strcmp(key, "columns"))
		{
			if (parse_name_list(a, val, &q->columns, &q->ncolumns))
				return fail(err, "columns", val, "expected a list of columns");
		}
		else if (ends_with(key, "order", &scope, a))
		{
			gw_scope *s = gw_query_scope(a, q, scope);
			s->norder = 0;
			if (gw_parse_order(a, val, s, err))
				return -1;
		}
		else if (ends_with(key, "limit", &scope, a))
		{
			if (parse_count(val, &gw_query_scope(a, q, scope)->limit))
				return fail(err, "limit", val, "expected a non-negative integer");
		}
		else if (ends_with(key, "offset", &scope, a))
		{
			if (parse_count(val, &gw_query_scope(a, q, scope)->offset))
				return fail(err, "offset", val, "expected a non-negative integer");
		}
		else if (ends_with(key, "not.or", &scope, a) || ends_with(key, "not.and", &scope, a) ||
		         ends_with(key, "or", &scope, a) || ends_with(key, "and", &scope, a))
		{
			size_t kl = strlen(key);
			int is_or = kl >= 2 && !strcmp(key + kl - 2, "or");
			int negate = strstr(key, "not.") &&
			             !strcmp(key + kl - (is_or ? 6 : 7), is_or ? "not.or" : "not.and");
			gw_logic *tree;
			if (gw_parse_logic(a, is_or, negate, val, &tree, err))
				return -1;
			add_child(a, gw_query_scope(a, q, scope)->where, tree);
		}
		else
		{
			const char *field;
			split_scope(a, key, &scope, &field);
			gw_logic *leaf = new_node(a, 0, 0);
			leaf->is_leaf = 1;
			if (gw_parse_filter(a, field, val, &leaf->filter, err))
				return -1;
			add_child(a, gw_query_scope(a, q, scope)->where, leaf);
		}
	}
	return 0;
}
