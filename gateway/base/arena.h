/* A request-lifetime arena: every node of a parsed query and every string cut from
 * the query string is allocated here and released at once with the request, so
 * the parsers need no per-node cleanup on their many error paths. */
#ifndef GW_ARENA_H
#define GW_ARENA_H
#include <stddef.h>

typedef struct gw_arena_block gw_arena_block;
typedef struct gw_arena
{
	gw_arena_block *head;
} gw_arena;

void gw_arena_init(gw_arena *a);
void gw_arena_free(gw_arena *a);
void *gw_arena_alloc(gw_arena *a, size_t n); /* zeroed */
char *gw_arena_strndup(gw_arena *a, const char *s, size_t n);
char *gw_arena_strdup(gw_arena *a, const char *s);
/* Grows an arena array of elem-sized items to hold *n + 1 and returns the new slot. */
void *gw_arena_push(gw_arena *a, void **array, int *n, int *cap, size_t elem);

/* A free list of objects of one size, reused instead of freed: a request's
 * large structures cost no malloc/free. Per process (a gateway process is
 * single-threaded); kept empty under AddressSanitizer. */
typedef struct gw_spare
{
	void *head;
	int n;
} gw_spare;
/* A zeroed object of size bytes (always the same size for one list). */
void *gw_spare_calloc(gw_spare *s, size_t size);
void gw_spare_free(gw_spare *s, void *p);

#endif
