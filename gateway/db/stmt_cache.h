/* The prepared statements of one database connection: which statement texts
 * (with their parameter types) have a server-side prepared statement, under which
 * name, in a hash table with least-recently-used eviction. It knows nothing of
 * libpq: pool.c sends the Parse, DEALLOCATE and Bind messages and reports back
 * whether a Parse succeeded (gw_sc_ready) or failed or was skipped (gw_sc_drop).
 *
 * An entry is pending from gw_sc_get until its Parse is answered; only ready
 * entries are evicted, and never one used by the job being built (epochs). */
#ifndef GW_STMT_CACHE_H
#define GW_STMT_CACHE_H
#include <stddef.h>
#include <stdint.h>

#define GW_SC_NAME_MAX 24

typedef struct gw_sc_entry
{
	char *key; /* statement text, NUL, then the parameter type oids */
	size_t keylen;
	uint64_t hash;
	int next;  /* hash chain, -1 ends */
	int state; /* 0 free, 1 pending (Parse sent), 2 ready */
	unsigned long epoch;
	char name[GW_SC_NAME_MAX];
} gw_sc_entry;

typedef struct gw_stmt_cache
{
	gw_sc_entry *e;
	int cap, n;
	int *buckets;
	int nbuckets; /* a power of two */
	int free_head;
	unsigned long epoch; /* the job being built */
	unsigned long seq;   /* statement names are never reused on a connection */
} gw_stmt_cache;

/* cap 0: no caching (gw_sc_get always answers -1). */
int gw_sc_init(gw_stmt_cache *c, int cap);
void gw_sc_free(gw_stmt_cache *c);
/* Forgets every entry (the caller deallocates them on the server or the session
 * is gone). */
void gw_sc_clear(gw_stmt_cache *c);
/* A new job: entries looked up from now on are not evicted while it is built. */
void gw_sc_begin_job(gw_stmt_cache *c);
/* The entry for sql and its parameter types, or -1 when it cannot be cached (cache
 * disabled, or full of entries this job uses or still pending). *created: the
 * entry is new and pending, the caller sends its Parse before its first use.
 * When an old entry had to make room, its name is copied to evicted (else
 * evicted[0] is NUL): the caller deallocates it on the server. */
int gw_sc_get(gw_stmt_cache *c, const char *sql, int nparams, const unsigned *types,
              int *created, char evicted[GW_SC_NAME_MAX]);
const char *gw_sc_name(const gw_stmt_cache *c, int i);
void gw_sc_ready(gw_stmt_cache *c, int i);
/* The Parse failed or was skipped: there is no such statement on the server. */
void gw_sc_drop(gw_stmt_cache *c, int i);
int gw_sc_count(const gw_stmt_cache *c);

#endif
