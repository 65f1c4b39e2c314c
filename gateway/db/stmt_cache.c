/* Per-connection prepared statement cache (see stmt_cache.h). */
#include "stmt_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum
{
	SC_FREE,
	SC_PENDING,
	SC_READY
};

/* Eight bytes at a time: statement texts are long, lookups happen per statement. */
static uint64_t
hash_bytes(uint64_t h, const void *data, size_t n)
{
	const unsigned char *p = data;
	uint64_t w;
	for (; n >= 8; n -= 8, p += 8)
	{
		memcpy(&w, p, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p, n);
	h = (h ^ w ^ (uint64_t)n << 56) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

int
gw_sc_init(gw_stmt_cache *c, int cap)
{
	memset(c, 0, sizeof *c);
	c->free_head = -1;
	if (cap <= 0)
		return 0;
	int nb = 16;
	while (nb < 2 * cap)
		nb *= 2;
	c->e = calloc((size_t)cap, sizeof *c->e);
	c->buckets = malloc(sizeof *c->buckets * (size_t)nb);
	if (!c->e || !c->buckets)
	{
		free(c->e);
		free(c->buckets);
		memset(c, 0, sizeof *c);
		c->free_head = -1;
		return -1;
	}
	c->cap = cap;
	c->nbuckets = nb;
	gw_sc_clear(c);
	return 0;
}

void
gw_sc_free(gw_stmt_cache *c)
{
	gw_sc_clear(c);
	free(c->e);
	free(c->buckets);
	memset(c, 0, sizeof *c);
	c->free_head = -1;
}

void
gw_sc_clear(gw_stmt_cache *c)
{
	if (!c->cap)
		return;
	for (int i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	c->free_head = -1;
	for (int i = c->cap - 1; i >= 0; i--)
	{
		free(c->e[i].key);
		c->e[i].key = NULL;
		c->e[i].state = SC_FREE;
		c->e[i].next = c->free_head;
		c->free_head = i;
	}
	c->n = 0;
}

void
gw_sc_begin_job(gw_stmt_cache *c)
{
	c->epoch++;
}

static void
unlink_entry(gw_stmt_cache *c, int i)
{
	gw_sc_entry *en = &c->e[i];
	int *pp = &c->buckets[en->hash & (uint64_t)(c->nbuckets - 1)];
	while (*pp != -1 && *pp != i)
		pp = &c->e[*pp].next;
	if (*pp == i)
		*pp = en->next;
	free(en->key);
	en->key = NULL;
	en->state = SC_FREE;
	en->next = c->free_head;
	c->free_head = i;
	c->n--;
}

int
gw_sc_get(gw_stmt_cache *c, const char *sql, int nparams, const unsigned *types, int *created,
          char evicted[GW_SC_NAME_MAX])
{
	*created = 0;
	evicted[0] = '\0';
	if (!c->cap)
		return -1;
	size_t sl = strlen(sql);
	size_t tl = types && nparams > 0 ? sizeof *types * (size_t)nparams : 0;
	uint64_t h = hash_bytes(0xcbf29ce484222325ULL, sql, sl + 1);
	if (tl)
		h = hash_bytes(h, types, tl);
	else
		h = hash_bytes(h, &nparams, sizeof nparams); /* untyped: the count still matters */
	size_t keylen = sl + 1 + (tl ? tl : sizeof nparams);
	int b = (int)(h & (uint64_t)(c->nbuckets - 1));
	for (int i = c->buckets[b]; i != -1; i = c->e[i].next)
	{
		gw_sc_entry *en = &c->e[i];
		if (en->hash == h && en->keylen == keylen && !memcmp(en->key, sql, sl + 1) &&
		    !memcmp(en->key + sl + 1, tl ? (const void *)types : (const void *)&nparams,
		            keylen - sl - 1))
		{
			en->epoch = c->epoch;
			return i;
		}
	}
	if (c->free_head == -1)
	{
		/* full: evict the least recently used ready entry this job does not use */
		int victim = -1;
		for (int i = 0; i < c->cap; i++)
			if (c->e[i].state == SC_READY && c->e[i].epoch != c->epoch &&
			    (victim == -1 || c->e[i].epoch < c->e[victim].epoch))
				victim = i;
		if (victim == -1)
			return -1;
		snprintf(evicted, GW_SC_NAME_MAX, "%s", c->e[victim].name);
		unlink_entry(c, victim);
	}
	char *key = malloc(keylen);
	if (!key)
		return -1;
	memcpy(key, sql, sl + 1);
	memcpy(key + sl + 1, tl ? (const void *)types : (const void *)&nparams, keylen - sl - 1);
	int i = c->free_head;
	gw_sc_entry *en = &c->e[i];
	c->free_head = en->next;
	en->key = key;
	en->keylen = keylen;
	en->hash = h;
	en->state = SC_PENDING;
	en->epoch = c->epoch;
	snprintf(en->name, sizeof en->name, "pgpod_%lu", ++c->seq);
	en->next = c->buckets[b];
	c->buckets[b] = i;
	c->n++;
	*created = 1;
	return i;
}

const char *
gw_sc_name(const gw_stmt_cache *c, int i)
{
	return c->e[i].name;
}

void
gw_sc_ready(gw_stmt_cache *c, int i)
{
	if (c->e[i].state == SC_PENDING)
		c->e[i].state = SC_READY;
}

void
gw_sc_drop(gw_stmt_cache *c, int i)
{
	if (c->e[i].state != SC_FREE)
		unlink_entry(c, i);
}

int
gw_sc_count(const gw_stmt_cache *c)
{
	return c->n;
}
