/* Fuzzy name matching for error hints ("Perhaps you meant the table ..."), the
 * way PostgREST finds them with Haskell's fuzzyset (a port of fuzzyset.js):
 * n-gram cosine similarity (n = 3, then 2 when nothing scores), the best 50
 * rescored by Levenshtein distance, the best above a minimum score. Pure. */
#include "fuzzy.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FUZZY_RESCORED 50

/* Lower case; for grams also only letters, digits, spaces and commas (fuzzyset
 * makes grams of that, but measures the Levenshtein distance on the lower-cased
 * text). Bytes past ASCII are kept as they are. */
static char *
normalise(const char *s, int for_grams)
{
	size_t n = strlen(s);
	char *out = malloc(n + 1), *o = out;
	if (!out)
		abort();
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (!for_grams || isalnum(*p) || *p == ' ' || *p == '\t' || *p == ',' || *p >= 0x80)
			*o++ = (char)tolower(*p);
	*o = '\0';
	return out;
}

typedef struct grams
{
	char **g; /* distinct grams */
	int *count;
	int n;
	double norm;
} grams;

/* The grams of size k of "-" s "-" (padded with '-' to k), counted. */
static void
grams_of(const char *norm, int k, grams *out)
{
	size_t n = strlen(norm);
	size_t len = n + 2 < (size_t)k ? (size_t)k : n + 2;
	char *padded = malloc(len + 1);
	if (!padded)
		abort();
	memset(padded, '-', len);
	memcpy(padded + 1, norm, n);
	padded[len] = '\0';
	int total = (int)(len - (size_t)k + 1);
	out->g = calloc((size_t)total, sizeof(char *));
	out->count = calloc((size_t)total, sizeof(int));
	if (!out->g || !out->count)
		abort();
	out->n = 0;
	for (int i = 0; i < total; i++)
	{
		int found = -1;
		for (int j = 0; j < out->n && found < 0; j++)
			if (!strncmp(out->g[j], padded + i, (size_t)k))
				found = j;
		if (found >= 0)
		{
			out->count[found]++;
			continue;
		}
		out->g[out->n] = strndup(padded + i, (size_t)k);
		if (!out->g[out->n])
			abort();
		out->count[out->n++] = 1;
	}
	double sq = 0;
	for (int j = 0; j < out->n; j++)
		sq += (double)out->count[j] * out->count[j];
	out->norm = sqrt(sq);
	free(padded);
}

static void
grams_free(grams *g)
{
	for (int j = 0; j < g->n; j++)
		free(g->g[j]);
	free(g->g);
	free(g->count);
}

static size_t
levenshtein(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t *row = malloc((lb + 1) * sizeof *row);
	if (!row)
		abort();
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++)
	{
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++)
		{
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	size_t d = row[lb];
	free(row);
	return d;
}

typedef struct scored
{
	int index;
	double score;
} scored;

static int
by_score_desc(const void *x, const void *y)
{
	const scored *a = x, *b = y;
	if (a->score != b->score)
		return a->score < b->score ? 1 : -1;
	return a->index - b->index; /* ties: the earlier candidate */
}

/* Best match with grams of size k, or -1. query and norms are for grams, lquery
 * and lowers for the distance. */
static int
best_with(const char *query, const char *lquery, char *const *norms, char *const *lowers, int n,
          int k, double min_score)
{
	grams q;
	grams_of(query, k, &q);
	scored *s = calloc((size_t)(n ? n : 1), sizeof *s);
	if (!s)
		abort();
	int ns = 0;
	for (int i = 0; i < n; i++)
	{
		grams c;
		grams_of(norms[i], k, &c);
		double dot = 0;
		for (int a = 0; a < q.n; a++)
			for (int b = 0; b < c.n; b++)
				if (!strcmp(q.g[a], c.g[b]))
					dot += (double)q.count[a] * c.count[b];
		if (dot > 0 && q.norm > 0 && c.norm > 0)
			s[ns++] = (scored){i, dot / (q.norm * c.norm)};
		grams_free(&c);
	}
	grams_free(&q);
	qsort(s, (size_t)ns, sizeof *s, by_score_desc);
	if (ns > FUZZY_RESCORED)
		ns = FUZZY_RESCORED;
	for (int i = 0; i < ns; i++)
	{
		const char *cand = lowers[s[i].index];
		size_t la = strlen(lquery), lb = strlen(cand);
		size_t longest = la > lb ? la : lb;
		s[i].score = longest ? 1.0 - (double)levenshtein(lquery, cand) / (double)longest : 1.0;
	}
	qsort(s, (size_t)ns, sizeof *s, by_score_desc);
	int best = ns > 0 && s[0].score >= min_score ? s[0].index : -1;
	free(s);
	return best;
}

int
gw_fuzzy_best(const char *query, const char *const *candidates, int n, double min_score)
{
	if (n <= 0)
		return -1;
	char *q = normalise(query, 1), *lq = normalise(query, 0);
	char **norms = malloc((size_t)n * sizeof *norms), **lowers = malloc((size_t)n * sizeof *lowers);
	if (!norms || !lowers)
		abort();
	int best = -1;
	for (int i = 0; i < n; i++)
	{
		norms[i] = normalise(candidates[i], 1);
		lowers[i] = normalise(candidates[i], 0);
		if (best < 0 && !strcmp(lowers[i], lq))
			best = i; /* an exact match (ignoring case) scores 1 */
	}
	if (best < 0)
		best = best_with(q, lq, norms, lowers, n, 3, min_score);
	if (best < 0)
		best = best_with(q, lq, norms, lowers, n, 2, min_score);
	for (int i = 0; i < n; i++)
	{
		free(norms[i]);
		free(lowers[i]);
	}
	free(norms);
	free(lowers);
	free(q);
	free(lq);
	return best;
}
