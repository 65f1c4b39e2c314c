/*
 * pubsub_search.c — the full-text vector of a cached item (pod.pubsub_items.search, a
 * generated column): its title (weight A), author name (B), summary and content (C)
 * from the parsed JSONB, in one tsvector built in one pass.
 */
#include "postgres.h"

#include "fmgr.h"
#include "tsearch/ts_type.h"
#include "tsearch/ts_utils.h"
#include "utils/jsonb.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(pubsub_search_vector);

/* The text under key in an object container, as ->> gives it for a scalar; NULL (len
 * 0) when absent, null, an object or an array. */
static const char *
string_at(JsonbContainer *c, const char *key, int *len, JsonbValue *v)
{
	const char *s = NULL;

	if (c != NULL && JsonContainerIsObject(c) && getKeyJsonValueFromContainer(c, key, strlen(key), v))
		switch (v->type)
		{
		case jbvString:
			*len = v->val.string.len;
			return v->val.string.val;
		case jbvNumeric:
			s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			break;
		case jbvBool:
			s = v->val.boolean ? "true" : "false";
			break;
		default:
			break;
		}
	*len = s ? strlen(s) : 0;
	return s;
}

/*
 * pod.pubsub_search_vector(config regconfig, parsed jsonb) RETURNS tsvector: the same
 * vector as setweight(to_tsvector(config, title), 'A') || setweight(to_tsvector(config,
 * author.name), 'B') || setweight(to_tsvector(config, summary || ' ' || content), 'C')
 * (positions run on from one part to the next, as || shifts them), made by one
 * parsetext pass per part into one word list instead of three vectors, three weighted
 * copies and two concatenations: that expression was a seventh of the ingest's time.
 */
Datum
pubsub_search_vector(PG_FUNCTION_ARGS)
{
	Oid cfg;
	Jsonb *parsed;
	JsonbValue v, author;
	ParsedText prs;
	const char *s;
	int len;
	int ends[3];
	TSVector out;
	WordEntry *we;

	/* Not strict: an unparsed item (parsed NULL) has an empty vector, as the
	 * expression's coalesce gave it. */
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	cfg = PG_GETARG_OID(0);
	parsed = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	prs.lenwords = 32;
	prs.curwords = 0;
	prs.pos = 0;
	prs.words = palloc(sizeof(ParsedWord) * prs.lenwords);

	/* A: title */
	if (parsed && (s = string_at(&parsed->root, "title", &len, &v)) != NULL)
		parsetext(cfg, &prs, (char *)s, len);
	ends[0] = prs.pos;
	/* B: author.name */
	if (parsed && getKeyJsonValueFromContainer(&parsed->root, "author", 6, &author) && author.type == jbvBinary &&
	    (s = string_at(author.val.binary.data, "name", &len, &v)) != NULL)
		parsetext(cfg, &prs, (char *)s, len);
	ends[1] = prs.pos;
	/* C: summary, then content */
	if (parsed && (s = string_at(&parsed->root, "summary", &len, &v)) != NULL)
		parsetext(cfg, &prs, (char *)s, len);
	if (parsed && (s = string_at(&parsed->root, "content", &len, &v)) != NULL)
		parsetext(cfg, &prs, (char *)s, len);
	ends[2] = prs.pos;

	out = make_tsvector(&prs);
	/* Each position's part gives its weight (A = 3 ... D = 0); positions past the
	 * last one a tsvector holds (MAXENTRYPOS - 1) all fall in the last part. */
	we = ARRPTR(out);
	for (int i = 0; i < out->size; i++)
	{
		WordEntryPos *p;
		int n;

		if (!we[i].haspos)
			continue;
		p = POSDATAPTR(out, &we[i]);
		n = POSDATALEN(out, &we[i]);
		for (int j = 0; j < n; j++)
		{
			int pos = WEP_GETPOS(p[j]);

			WEP_SETWEIGHT(p[j], pos <= ends[0] ? 3 : pos <= ends[1] ? 2 : pos <= ends[2] ? 1 : 0);
		}
	}
	PG_RETURN_TSVECTOR(out);
}
