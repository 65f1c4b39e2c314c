/*
 * swarm.c — the tracked swarms and their peers, in memory. A table of swarms keyed
 * by info hash (rebuilt whole when the database's set changes), and per swarm an
 * array of peers with an open-addressing index (linear probing, backward-shift
 * deletion) keyed by address+port (HTTP/UDP peers) or peer id (WebTorrent peers).
 * The total number of peers is bounded by tk_max_peers.
 */
#include <stdlib.h>
#include <string.h>

#include "tracker.h"

long tk_max_peers = 1000000;
static tk_swarm **table; /* open addressing by info hash, NULL = empty */
static size_t table_cap, table_count, peers_total;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
	return p;
}

static uint64_t
rng(void)
{
	/* xorshift64*: peer order needs no cryptographic randomness. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static uint32_t
hash_bytes(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static uint32_t
peer_hash(const tk_peer *p)
{
	if (p->kind == TK_PEER_WS)
		return hash_bytes(p->id, 20) ^ 0x5bd1e995u;
	return hash_bytes(p->addr.ip, p->addr.family == 4 ? 4 : 16) ^ (uint32_t)p->addr.port * 2654435761u;
}

static bool
peer_same(const tk_peer *a, const tk_peer *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == TK_PEER_WS)
		return memcmp(a->id, b->id, 20) == 0;
	return a->addr.family == b->addr.family && a->addr.port == b->addr.port &&
	       memcmp(a->addr.ip, b->addr.ip, a->addr.family == 4 ? 4 : 16) == 0;
}

void
tk_swarms_init(void)
{
	table_cap = 16;
	table = xcalloc(table_cap, sizeof(*table));
	rng_state ^= (uint64_t)(uintptr_t)&table_cap;
}

tk_swarm *
tk_swarm_find(const uint8_t *hash)
{
	size_t mask = table_cap - 1;
	uint32_t h;

	memcpy(&h, hash, sizeof(h)); /* info hashes are SHA-1: already uniform */
	for (size_t i = h & mask;; i = (i + 1) & mask)
	{
		if (table[i] == NULL)
			return NULL;
		if (memcmp(table[i]->hash, hash, TK_HASH_LEN) == 0)
			return table[i];
	}
}

static void
table_put(tk_swarm **t, size_t cap, tk_swarm *s)
{
	uint32_t h;

	memcpy(&h, s->hash, sizeof(h));
	for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
		if (t[i] == NULL)
		{
			t[i] = s;
			return;
		}
}

static void
swarm_free(tk_swarm *s)
{
	peers_total -= s->npeers;
	free(s->peers);
	free(s->index);
	free(s);
}

size_t
tk_swarms_replace(const uint8_t *hashes, const int64_t *completed, size_t n)
{
	size_t cap = 16, count = 0;
	tk_swarm **t;

	while (cap < n * 2 + 2)
		cap *= 2;
	t = xcalloc(cap, sizeof(*t));
	for (size_t i = 0; i < n; i++)
	{
		const uint8_t *h = hashes + i * TK_HASH_LEN;
		tk_swarm *s = tk_swarm_find(h);
		uint32_t hv;
		bool dup = false;

		/* Take the swarm over from the old table (its slot emptied below). */
		memcpy(&hv, h, sizeof(hv));
		for (size_t j = hv & (cap - 1); t[j]; j = (j + 1) & (cap - 1))
			if (memcmp(t[j]->hash, h, TK_HASH_LEN) == 0)
				dup = true;
		if (dup)
			continue;
		if (s == NULL)
		{
			s = xcalloc(1, sizeof(*s));
			memcpy(s->hash, h, TK_HASH_LEN);
			/* The stored counts may be a previous run's: report this one's. */
			s->dirty = true;
			s->reported_seeders = UINT32_MAX;
		}
		s->completed = completed[i] + s->completed_delta;
		table_put(t, cap, s);
		count++;
	}
	/* Swarms of the old table that are no longer tracked go. */
	for (size_t i = 0; i < table_cap; i++)
	{
		tk_swarm *s = table[i];
		bool kept = false;
		uint32_t hv;

		if (s == NULL)
			continue;
		memcpy(&hv, s->hash, sizeof(hv));
		for (size_t j = hv & (cap - 1); t[j]; j = (j + 1) & (cap - 1))
			if (t[j] == s)
				kept = true;
		if (!kept)
			swarm_free(s);
	}
	free(table);
	table = t;
	table_cap = cap;
	table_count = count;
	return count;
}

size_t
tk_swarms_count(void)
{
	return table_count;
}

size_t
tk_peers_total(void)
{
	return peers_total;
}

/* The index slot holding probe, or the empty slot where it would go. */
static size_t
index_slot(const tk_swarm *s, const tk_peer *probe)
{
	size_t mask = s->index_cap - 1;

	for (size_t i = peer_hash(probe) & mask;; i = (i + 1) & mask)
	{
		uint32_t v = s->index[i];

		if (v == 0 || peer_same(&s->peers[v - 1], probe))
			return i;
	}
}

static void
index_rebuild(tk_swarm *s, uint32_t cap)
{
	free(s->index);
	s->index = xcalloc(cap, sizeof(uint32_t));
	s->index_cap = cap;
	for (uint32_t p = 0; p < s->npeers; p++)
		s->index[index_slot(s, &s->peers[p])] = p + 1;
}

tk_peer *
tk_swarm_lookup(tk_swarm *s, const tk_peer *probe)
{
	uint32_t v;

	if (s->npeers == 0)
		return NULL;
	v = s->index[index_slot(s, probe)];
	return v ? &s->peers[v - 1] : NULL;
}

/* Removes the index entry at slot i, shifting later entries of its run back. */
static void
index_delete(tk_swarm *s, size_t i)
{
	size_t mask = s->index_cap - 1, j = i;

	s->index[i] = 0;
	for (;;)
	{
		size_t home;

		j = (j + 1) & mask;
		if (s->index[j] == 0)
			return;
		home = peer_hash(&s->peers[s->index[j] - 1]) & mask;
		/* Move j back to i unless its home lies cyclically in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)))
		{
			s->index[i] = s->index[j];
			s->index[j] = 0;
			i = j;
		}
	}
}

void
tk_swarm_remove(tk_swarm *s, const tk_peer *probe)
{
	size_t slot;
	uint32_t pos, last;

	if (s->npeers == 0)
		return;
	slot = index_slot(s, probe);
	if (s->index[slot] == 0)
		return;
	pos = s->index[slot] - 1;
	if (s->peers[pos].seeder)
		s->seeders--;
	index_delete(s, slot);
	last = s->npeers - 1;
	if (pos != last)
	{
		/* The last peer moves into the hole; its index entry follows it. */
		s->index[index_slot(s, &s->peers[last])] = pos + 1;
		s->peers[pos] = s->peers[last];
	}
	s->npeers--;
	peers_total--;
	s->dirty = true;
}

bool
tk_swarm_announce(tk_swarm *s, const tk_peer *probe, int event, double now)
{
	tk_peer *p;

	if (event == TK_EV_STOPPED)
	{
		tk_swarm_remove(s, probe);
		return true;
	}
	if (s->index_cap == 0)
		index_rebuild(s, 8);
	p = tk_swarm_lookup(s, probe);
	if (p == NULL)
	{
		if ((long)peers_total >= tk_max_peers)
			return false;
		if (s->npeers == s->cap)
		{
			s->cap = s->cap ? s->cap * 2 : 8;
			s->peers = realloc(s->peers, s->cap * sizeof(tk_peer));
			if (s->peers == NULL)
			{
				wk_log(WK_ERROR, "out of memory");
				abort();
			}
		}
		if ((s->npeers + 1) * 2 > s->index_cap)
			index_rebuild(s, s->index_cap * 2);
		p = &s->peers[s->npeers];
		*p = *probe;
		p->seeder = 0;
		p->counted_completed = 0;
		s->index[index_slot(s, probe)] = s->npeers + 1;
		s->npeers++;
		peers_total++;
		s->dirty = true;
	}
	else
	{
		/* Same key: the address, port and socket may change (a new WebSocket). */
		p->addr = probe->addr;
		memcpy(p->id, probe->id, 20);
		p->ws = probe->ws;
	}
	if (p->seeder != probe->seeder)
	{
		p->seeder = probe->seeder;
		s->seeders += p->seeder ? 1 : -1;
		s->dirty = true;
	}
	if (event == TK_EV_COMPLETED && !p->counted_completed)
	{
		p->counted_completed = 1;
		s->completed++;
		s->completed_delta++;
		s->dirty = true;
	}
	p->last = now;
	return true;
}

size_t
tk_swarm_pick(tk_swarm *s, uint8_t kind, const tk_peer *self, size_t want, tk_peer **out)
{
	size_t got = 0;
	uint32_t start;

	if (s->npeers == 0 || want == 0)
		return 0;
	start = (uint32_t)(rng() % s->npeers);
	for (uint32_t k = 0; k < s->npeers && got < want; k++)
	{
		tk_peer *p = &s->peers[(start + k) % s->npeers];

		if (p->kind != kind || (self && peer_same(p, self)))
			continue;
		out[got++] = p;
	}
	return got;
}

size_t
tk_swarms_expire(double cutoff_net, double cutoff_ws)
{
	size_t dropped = 0;

	for (size_t i = 0; i < table_cap; i++)
	{
		tk_swarm *s = table[i];

		if (s == NULL)
			continue;
		for (uint32_t p = 0; p < s->npeers;)
		{
			if (s->peers[p].last < (s->peers[p].kind == TK_PEER_WS ? cutoff_ws : cutoff_net))
			{
				tk_peer probe = s->peers[p];

				tk_swarm_remove(s, &probe); /* the last peer moves to p */
				dropped++;
			}
			else
				p++;
		}
		if (s->npeers == 0 && s->index_cap > 8)
		{
			free(s->index);
			s->index = NULL;
			s->index_cap = 0;
			free(s->peers);
			s->peers = NULL;
			s->cap = 0;
		}
	}
	return dropped;
}

void
tk_swarms_each_dirty(void (*fn)(tk_swarm *s, void *arg), void *arg)
{
	for (size_t i = 0; i < table_cap; i++)
		if (table[i] && table[i]->dirty)
			fn(table[i], arg);
}

void
tk_swarms_free(void)
{
	for (size_t i = 0; i < table_cap; i++)
		if (table[i])
			swarm_free(table[i]);
	free(table);
	table = NULL;
	table_cap = table_count = 0;
}
