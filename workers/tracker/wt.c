/*
 * wt.c — the WebTorrent tracker protocol over a WebSocket (as webtorrent's
 * bittorrent-tracker server speaks it): JSON messages "announce" (with offers, which
 * are relayed to other WebSocket peers of the swarm, or an answer, relayed to the
 * peer it names) and "scrape". Info hashes and peer ids travel as 20-character
 * strings of code points 0-255. A socket keeps one peer id and a bounded list of the
 * swarms it joined, from which it is removed when it closes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tracker.h"

#define MAX_OFFERS 10

/* A JSON string of 20 code points below 256 into 20 bytes. */
static bool
binary_string(json_t *v, uint8_t out[20])
{
	const unsigned char *s;
	size_t len, n = 0;

	if (!json_is_string(v))
		return false;
	s = (const unsigned char *)json_string_value(v);
	len = json_string_length(v);
	for (size_t i = 0; i < len; n++)
	{
		if (n == 20)
			return false;
		if (s[i] < 0x80)
			out[n] = s[i++];
		else if ((s[i] & 0xe0) == 0xc0 && i + 1 < len && s[i] <= 0xc3)
		{
			out[n] = (uint8_t)((s[i] & 0x1f) << 6 | (s[i + 1] & 0x3f));
			i += 2;
		}
		else
			return false;
	}
	return n == 20;
}

/* 20 bytes as a JSON string of code points 0-255. */
static json_t *
binary_json(const uint8_t in[20])
{
	char s[41];
	size_t n = 0;

	for (int i = 0; i < 20; i++)
	{
		if (in[i] < 0x80)
			s[n++] = (char)in[i];
		else
		{
			s[n++] = (char)(0xc0 | in[i] >> 6);
			s[n++] = (char)(0x80 | (in[i] & 0x3f));
		}
	}
	return json_stringn(s, n);
}

static void
send_json(tk_conn *c, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);

	if (text)
	{
		tk_ws_send_text(c, text, strlen(text));
		free(text);
	}
	json_decref(msg);
}

static void
send_failure(tk_conn *c, const char *action, const uint8_t *hash, const char *reason)
{
	json_t *m = json_object();

	tk_failure(&c->addr, "WebSocket", reason);
	if (action)
		json_object_set_new(m, "action", json_string(action));
	json_object_set_new(m, "failure reason", json_string(reason));
	if (hash)
		json_object_set_new(m, "info_hash", binary_json(hash));
	send_json(c, m);
}

/* Remembers that the socket joined this swarm; false when it joined too many. */
static bool
remember_swarm(tk_conn *c, const uint8_t *hash)
{
	for (int i = 0; i < c->nhashes; i++)
		if (memcmp(c->hashes[i], hash, TK_HASH_LEN) == 0)
			return true;
	if (c->nhashes >= tk_cfg.ws_max_torrents)
		return false;
	if (c->hashes == NULL)
	{
		c->hashes = malloc((size_t)tk_cfg.ws_max_torrents * TK_HASH_LEN);
		if (c->hashes == NULL)
			return false;
	}
	memcpy(c->hashes[c->nhashes++], hash, TK_HASH_LEN);
	return true;
}

static void
forget_swarm(tk_conn *c, const uint8_t *hash)
{
	for (int i = 0; i < c->nhashes; i++)
		if (memcmp(c->hashes[i], hash, TK_HASH_LEN) == 0)
		{
			memmove(c->hashes[i], c->hashes[c->nhashes - 1], TK_HASH_LEN);
			c->nhashes--;
			return;
		}
}

static void
announce(tk_conn *c, json_t *req)
{
	uint8_t hash[20], peer_id[20], to_peer[20];
	json_t *offers = json_object_get(req, "offers"), *answer = json_object_get(req, "answer");
	json_t *left = json_object_get(req, "left"), *event = json_object_get(req, "event");
	const char *ev = json_is_string(event) ? json_string_value(event) : "";
	int evcode = TK_EV_NONE;
	tk_swarm *s;
	tk_peer probe, *peers[MAX_OFFERS];
	size_t want = 0, n = 0;
	json_t *resp;

	tk_count.ws_announces++;
	if (!binary_string(json_object_get(req, "info_hash"), hash))
	{
		send_failure(c, "announce", NULL, "invalid info_hash");
		return;
	}
	if (!binary_string(json_object_get(req, "peer_id"), peer_id))
	{
		send_failure(c, "announce", hash, "invalid peer_id");
		return;
	}
	if (answer && !binary_string(json_object_get(req, "to_peer_id"), to_peer))
	{
		send_failure(c, "announce", hash, "invalid `to_peer_id` (required with `answer`)");
		return;
	}
	if (c->has_peer_id && memcmp(c->peer_id, peer_id, 20) != 0)
	{
		send_failure(c, "announce", hash, "one peer_id per WebSocket connection");
		return;
	}
	if (strcmp(ev, "started") == 0)
		evcode = TK_EV_STARTED;
	else if (strcmp(ev, "completed") == 0)
		evcode = TK_EV_COMPLETED;
	else if (strcmp(ev, "stopped") == 0)
		evcode = TK_EV_STOPPED;
	else if (strcmp(ev, "paused") == 0)
		evcode = TK_EV_PAUSED;
	else if (*ev && strcmp(ev, "update") != 0 && strcmp(ev, "empty") != 0)
	{
		send_failure(c, "announce", hash, "invalid event");
		return;
	}
	if (!tk_ready)
	{
		send_failure(c, "announce", hash, "the tracker is starting; try again shortly");
		return;
	}
	s = tk_swarm_find(hash);
	if (s == NULL)
	{
		send_failure(c, "announce", hash,
		             "unknown info_hash: this tracker serves only this pod's published files");
		return;
	}
	if (evcode != TK_EV_STOPPED && !remember_swarm(c, hash))
	{
		send_failure(c, "announce", hash, "too many torrents on one WebSocket connection");
		return;
	}
	memcpy(c->peer_id, peer_id, 20);
	c->has_peer_id = true;
	memset(&probe, 0, sizeof(probe));
	probe.kind = TK_PEER_WS;
	probe.addr = c->addr;
	memcpy(probe.id, peer_id, 20);
	probe.ws = c;
	/* left may be a number, or absent (an answer carries none): then a known peer
	 * stays what it was, a new one is a leecher. */
	if (json_is_number(left))
		probe.seeder = json_number_value(left) == 0;
	else
	{
		tk_peer *known = tk_swarm_lookup(s, &probe);

		probe.seeder = known ? known->seeder : 0;
	}
	if (!tk_swarm_announce(s, &probe, evcode, ev_now(tk_loop)))
	{
		send_failure(c, "announce", hash, "the tracker is full; try again later");
		return;
	}
	if (evcode == TK_EV_STOPPED)
		forget_swarm(c, hash);

	if (!answer)
	{
		resp = json_object();
		json_object_set_new(resp, "action", json_string("announce"));
		json_object_set_new(resp, "interval", json_integer(tk_cfg.ws_interval));
		json_object_set_new(resp, "info_hash", binary_json(hash));
		json_object_set_new(resp, "complete", json_integer(s->seeders));
		json_object_set_new(resp, "incomplete", json_integer(s->npeers - s->seeders));
		send_json(c, resp);
	}
	if (json_is_array(offers) && evcode != TK_EV_STOPPED)
	{
		want = json_array_size(offers);
		if (want > MAX_OFFERS)
			want = MAX_OFFERS;
		n = tk_swarm_pick(s, TK_PEER_WS, &probe, want, peers);
		for (size_t i = 0; i < n; i++)
		{
			json_t *o = json_array_get(offers, i), *m;

			if (!json_is_object(o) || !json_is_object(json_object_get(o, "offer")) ||
			    !json_is_string(json_object_get(o, "offer_id")))
				continue;
			m = json_object();
			json_object_set_new(m, "action", json_string("announce"));
			json_object_set(m, "offer", json_object_get(o, "offer"));
			json_object_set(m, "offer_id", json_object_get(o, "offer_id"));
			json_object_set_new(m, "peer_id", binary_json(peer_id));
			json_object_set_new(m, "info_hash", binary_json(hash));
			tk_count.offers_relayed++;
			send_json(peers[i]->ws, m);
		}
	}
	wk_log(WK_DEBUG, "WebSocket announce: %zu offers, relayed to %zu peers%s", want, n,
	       answer ? ", with an answer" : "");
	if (answer)
	{
		tk_peer to, *dest;
		json_t *m;

		memset(&to, 0, sizeof(to));
		to.kind = TK_PEER_WS;
		memcpy(to.id, to_peer, 20);
		dest = tk_swarm_lookup(s, &to);
		if (dest == NULL || dest->ws == NULL || dest->ws == c)
		{
			wk_log(WK_DEBUG, "WebSocket answer for a peer that is gone");
			return; /* gone since its offer: its offer simply goes unanswered */
		}
		m = json_object();
		json_object_set_new(m, "action", json_string("announce"));
		json_object_set(m, "answer", answer);
		json_object_set(m, "offer_id", json_object_get(req, "offer_id"));
		json_object_set_new(m, "peer_id", binary_json(peer_id));
		json_object_set_new(m, "info_hash", binary_json(hash));
		tk_count.answers_relayed++;
		send_json(dest->ws, m);
	}
}

static void
scrape(tk_conn *c, json_t *req)
{
	json_t *ih = json_object_get(req, "info_hash"), *files, *resp, *flags;
	size_t n = json_is_array(ih) ? json_array_size(ih) : 1;

	tk_count.ws_scrapes++;
	if (!tk_ready)
	{
		send_failure(c, "scrape", NULL, "the tracker is starting; try again shortly");
		return;
	}
	if (ih == NULL || n == 0 || n > 64)
	{
		send_failure(c, "scrape", NULL, "scrape needs 1 to 64 info_hash");
		return;
	}
	files = json_object();
	for (size_t i = 0; i < n; i++)
	{
		uint8_t hash[20];
		tk_swarm *s;
		json_t *key, *f;

		if (!binary_string(json_is_array(ih) ? json_array_get(ih, i) : ih, hash))
		{
			json_decref(files);
			send_failure(c, "scrape", NULL, "invalid info_hash");
			return;
		}
		s = tk_swarm_find(hash);
		if (s == NULL)
			continue;
		key = binary_json(hash);
		f = json_object();
		json_object_set_new(f, "complete", json_integer(s->seeders));
		json_object_set_new(f, "incomplete", json_integer(s->npeers - s->seeders));
		json_object_set_new(f, "downloaded", json_integer(s->completed));
		json_object_setn_new(files, json_string_value(key), json_string_length(key), f);
		json_decref(key);
	}
	resp = json_object();
	json_object_set_new(resp, "action", json_string("scrape"));
	json_object_set_new(resp, "files", files);
	flags = json_object();
	json_object_set_new(flags, "min_request_interval", json_integer(tk_cfg.ws_interval));
	json_object_set_new(resp, "flags", flags);
	send_json(c, resp);
}

void
tk_wt_message(tk_conn *c, const char *text, size_t len)
{
	json_error_t err;
	json_t *req, *action;

	if (!tk_rate_ok(&c->addr))
	{
		send_failure(c, NULL, NULL, tk_slow_down);
		return;
	}
	/* Binary strings (info hashes, peer and offer ids) may hold U+0000. */
	req = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	if (req == NULL || !json_is_object(req))
	{
		json_decref(req);
		send_failure(c, NULL, NULL, "invalid JSON message");
		return;
	}
	action = json_object_get(req, "action");
	if (json_is_string(action) && strcmp(json_string_value(action), "announce") == 0)
		announce(c, req);
	else if (json_is_string(action) && strcmp(json_string_value(action), "scrape") == 0)
		scrape(c, req);
	else
		send_failure(c, NULL, NULL, "invalid action (announce or scrape)");
	json_decref(req);
}

void
tk_wt_closed(tk_conn *c)
{
	tk_peer probe;

	if (!c->has_peer_id)
		return;
	memset(&probe, 0, sizeof(probe));
	probe.kind = TK_PEER_WS;
	memcpy(probe.id, c->peer_id, 20);
	for (int i = 0; i < c->nhashes; i++)
	{
		tk_swarm *s = tk_swarm_find(c->hashes[i]);
		tk_peer *p = s ? tk_swarm_lookup(s, &probe) : NULL;

		/* Only if the entry is still this socket's (the client may have reconnected). */
		if (p && p->ws == c)
			tk_swarm_remove(s, &probe);
	}
}
