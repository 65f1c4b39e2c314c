/* The request-lifetime arena (see arena.h): a chain of blocks, bump allocation,
 * no individual frees. Large requests get their own block. */
#include "arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_arena_block
{
	gw_arena_block *next;
	size_t used;
	size_t cap;
	max_align_t data[];
};

#define BLOCK_SIZE 8192

/* Blocks of BLOCK_SIZE freed by finished requests, reused by the next ones: a
 * request costs no malloc/free of its first block. Kept per process (a gateway process
 * is single-threaded); not under AddressSanitizer, which should see every
 * block freed. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARE_MAX 0
#endif
#endif
#ifndef SPARE_MAX
#define SPARE_MAX 64
#endif
static gw_arena_block *spare;
static int nspare;

void
gw_arena_init(gw_arena *a)
{
	a->head = NULL;
}

void
gw_arena_free(gw_arena *a)
{
	gw_arena_block *b = a->head;
	while (b)
	{
		gw_arena_block *n = b->next;
		if (b->cap == BLOCK_SIZE && nspare < SPARE_MAX)
		{
			b->next = spare;
			spare = b;
			nspare++;
		}
		else
			free(b);
		b = n;
	}
	a->head = NULL;
}

void *
gw_arena_alloc(gw_arena *a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
	gw_arena_block *b = a->head;
	if (!b || b->cap - b->used < n)
	{
		size_t cap = n > BLOCK_SIZE ? n : BLOCK_SIZE;
		if (cap == BLOCK_SIZE && spare)
		{
			b = spare;
			spare = b->next;
			nspare--;
		}
		else
			b = malloc(sizeof *b + cap);
		if (!b)
		{
			fprintf(stderr, "pgpod-gateway: out of memory (arena %zu bytes)\n", cap);
			abort();
		}
		b->used = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
	}
	void *p = (char *)b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

char *
gw_arena_strndup(gw_arena *a, const char *s, size_t n)
{
	char *d = gw_arena_alloc(a, n + 1);
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *
gw_arena_strdup(gw_arena *a, const char *s)
{
	return gw_arena_strndup(a, s, strlen(s));
}

void *
gw_arena_push(gw_arena *a, void **array, int *n, int *cap, size_t elem)
{
	if (*n == *cap)
	{
		int ncap = *cap ? *cap * 2 : 4;
		void *na = gw_arena_alloc(a, elem * (size_t)ncap);
		if (*n)
			memcpy(na, *array, elem * (size_t)*n);
		*array = na;
		*cap = ncap;
	}
	void *slot = (char *)*array + elem * (size_t)(*n);
	(*n)++;
	return slot;
}

void *
gw_spare_calloc(gw_spare *s, size_t size)
{
	void *p = s->head;
	if (!p)
		return calloc(1, size);
	memcpy(&s->head, p, sizeof s->head);
	s->n--;
	memset(p, 0, size);
	return p;
}

void
gw_spare_free(gw_spare *s, void *p)
{
	if (!p)
		return;
	if (s->n >= SPARE_MAX)
	{
		free(p);
		return;
	}
	memcpy(p, &s->head, sizeof s->head);
	s->head = p;
	s->n++;
}
