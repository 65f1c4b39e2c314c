/* Fuzzy name matching for error hints, as PostgREST's fuzzyset (see fuzzy.c). */
#ifndef GW_FUZZY_H
#define GW_FUZZY_H

/* fuzzyset's default minimum score, and PostgREST's for table names */
#define GW_FUZZY_MIN 0.33
#define GW_FUZZY_MIN_TABLE 0.75

/* The index of the candidate closest to query (score >= min_score), or -1. */
int gw_fuzzy_best(const char *query, const char *const *candidates, int n, double min_score);

#endif
