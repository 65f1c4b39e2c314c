/*
 * test_tracker.c — unit tests of the tracker's pure pieces: bencoded answers, the
 * announce/scrape query parser (bad inputs beside good ones), WebSocket framing and
 * the RFC 6455 accept key, SipHash-2-4 against its reference vector, and swarms
 * (add, update, remove, expiry, the peer limit, picking). Run under ASan/UBSan.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tracker.h"

#include "tap.h"

#define CHECK(cond, name) ok(cond, "%s", name)

static const char *
announce_err(const char *q)
{
	tk_announce a;

	return tk_parse_announce(q, strlen(q), &a, 200);
}

static void
test_bencode(void)
{
	wk_buf b = {0};

	wk_buf_adds(&b, "d");
	wk_benc_key_int(&b, "complete", 3);
	wk_benc_strz(&b, "peers");
	wk_benc_str(&b, "\0\1", 2);
	wk_buf_adds(&b, "e");
	CHECK(b.len == 26 && memcmp(b.data, "d8:completei3e5:peers2:\0\1e", 26) == 0, "bencode: a dictionary with an int and a binary string");
	wk_buf_reset(&b);
	wk_benc_int(&b, -42);
	CHECK(strcmp(b.data, "i-42e") == 0, "bencode: negative integer");
	wk_buf_reset(&b);
	tk_bencode_failure(&b, "nope");
	CHECK(strcmp(b.data, "d14:failure reason4:nopee") == 0, "bencode: failure reason");
	wk_buf_free(&b);
}

static void
test_query(void)
{
	tk_announce a;
	const char *good = "info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13%14"
	                   "&peer_id=-LT2080-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=100"
	                   "&event=started&numwant=999&compact=1&key=x&ip=1.2.3.4";
	uint8_t hashes[4 * TK_HASH_LEN];
	const char *why = NULL;

	CHECK(tk_parse_announce(good, strlen(good), &a, 200) == NULL, "announce: a good query parses");
	CHECK(a.hash[0] == 1 && a.hash[19] == 0x14, "announce: info_hash percent-decoded");
	CHECK(memcmp(a.peer_id, "-LT2080-abcdefghijkl", 20) == 0, "announce: peer_id");
	CHECK(ntohs(a.addr.port) == 6881 && a.left == 100 && a.event == TK_EV_STARTED, "announce: port, left, event");
	CHECK(a.numwant == 200, "announce: numwant capped");
	CHECK(a.compact, "announce: compact");
	CHECK(announce_err("peer_id=-LT2080-abcdefghijkl&port=1&left=0") != NULL, "announce: missing info_hash refused");
	CHECK(strcmp(announce_err("info_hash=abc&peer_id=-LT2080-abcdefghijkl&port=1&left=0"),
	             "invalid info_hash (not 20 bytes)") == 0,
	      "announce: short info_hash refused");
	CHECK(announce_err("info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13%14%15"
	                   "&peer_id=-LT2080-abcdefghijkl&port=1&left=0") != NULL,
	      "announce: 21-byte info_hash refused");
	CHECK(announce_err("info_hash=%zz%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13%14"
	                   "&peer_id=-LT2080-abcdefghijkl&port=1&left=0") != NULL,
	      "announce: bad percent escape refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaa%&peer_id=-LT2080-abcdefghijkl&port=1&left=0") != NULL,
	      "announce: truncated escape refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-LT2080-abcdefghijkl&port=70000&left=0") != NULL,
	      "announce: port out of range refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-LT2080-abcdefghijkl&port=1&left=-1") != NULL,
	      "announce: negative left refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-LT2080-abcdefghijkl&port=1&left=0&event=bogus") != NULL,
	      "announce: unknown event refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-LT2080-abcdefghijkl&port=1") != NULL,
	      "announce: missing left refused");
	CHECK(announce_err("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-LT2080-abcdefghijkl&port=1&left=0") == NULL,
	      "announce: plain 20-character info_hash accepted");
	CHECK(tk_parse_scrape("info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=bbbbbbbbbbbbbbbbbbbb", 61, hashes, 4, &why) == 2,
	      "scrape: two hashes");
	CHECK(tk_parse_scrape("x=1", 3, hashes, 4, &why) == -1 && why != NULL, "scrape: no hash refused");
	CHECK(tk_parse_scrape("info_hash=aaaa", 14, hashes, 4, &why) == -1, "scrape: short hash refused");
	CHECK(tk_parse_scrape("info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa"
	                      "&info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=aaaaaaaaaaaaaaaaaaaa",
	                      154, hashes, 4, &why) == -1,
	      "scrape: more hashes than allowed refused");
}

static void
test_ws(void)
{
	char accept[29];
	uint8_t frame[64] = {0x81, 0x85, 1, 2, 3, 4};
	const char *hello = "hello", *why = NULL;
	tk_ws_frame f;
	uint8_t big[16] = {0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0};
	uint8_t unmasked[8] = {0x81, 0x05, 'h', 'e', 'l', 'l', 'o'};
	uint8_t ping[8] = {0x89, 0xfe, 0, 200};
	wk_buf b = {0};

	CHECK(tk_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept) && strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0,
	      "ws: RFC 6455 sample accept key");
	CHECK(!tk_ws_accept("short", 5, accept), "ws: a key of the wrong length refused");
	for (int i = 0; i < 5; i++)
		frame[6 + i] = (uint8_t)hello[i] ^ frame[2 + i % 4];
	CHECK(tk_ws_parse(frame, 5, 1024, &f, &why) == 0, "ws: incomplete frame waits");
	CHECK(tk_ws_parse(frame, 11, 1024, &f, &why) == 11 && f.len == 5 && memcmp(f.payload, "hello", 5) == 0 && f.fin &&
	          f.opcode == 1,
	      "ws: masked text frame unmasked");
	CHECK(tk_ws_parse(big, 10, 1024, &f, &why) == -2, "ws: oversized frame refused before its payload arrives");
	CHECK(tk_ws_parse(unmasked, 7, 1024, &f, &why) == -1, "ws: unmasked client frame refused");
	CHECK(tk_ws_parse(ping, 4, 1024, &f, &why) == -1, "ws: control frame over 125 bytes refused");
	tk_ws_frame_add(&b, 1, "hi", 2);
	CHECK(b.len == 4 && (uint8_t)b.data[0] == 0x81 && b.data[1] == 2, "ws: small server frame");
	wk_buf_reset(&b);
	{
		char *payload = calloc(1, 70000);

		tk_ws_frame_add(&b, 1, payload, 70000);
		CHECK(b.len == 70010 && (uint8_t)b.data[1] == 127, "ws: 64-bit length server frame");
		free(payload);
	}
	wk_buf_free(&b);
}

static void
test_siphash(void)
{
	uint8_t key[16], msg[15];

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 15; i++)
		msg[i] = (uint8_t)i;
	/* The SipHash paper's test vector (appendix A): 15 bytes 00..0e. */
	CHECK(tk_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL, "siphash-2-4 reference vector");
}

static tk_peer
net_peer(int n, bool seeder)
{
	tk_peer p;

	memset(&p, 0, sizeof(p));
	p.kind = TK_PEER_NET;
	p.addr.family = 4;
	p.addr.ip[0] = 10;
	p.addr.ip[1] = (uint8_t)(n >> 16);
	p.addr.ip[2] = (uint8_t)(n >> 8);
	p.addr.ip[3] = (uint8_t)n;
	p.addr.port = htons(6881);
	p.seeder = seeder;
	return p;
}

static void
test_swarm(void)
{
	uint8_t hashes[2 * TK_HASH_LEN];
	int64_t completed[2] = {5, 0};
	tk_swarm *s;
	tk_peer *out[100];
	bool all_ok = true;

	memset(hashes, 0xaa, TK_HASH_LEN);
	memset(hashes + TK_HASH_LEN, 0xbb, TK_HASH_LEN);
	tk_swarms_init();
	CHECK(tk_swarms_replace(hashes, completed, 2) == 2, "swarm: two tracked");
	s = tk_swarm_find(hashes);
	CHECK(s && s->completed == 5, "swarm: found with its stored completed count");
	memset(hashes + 40 - 1, 0xcc, 1);
	for (int i = 0; i < 50000; i++)
	{
		tk_peer p = net_peer(i, i % 5 == 0);

		all_ok &= tk_swarm_announce(s, &p, TK_EV_STARTED, 100.0);
	}
	CHECK(all_ok && s->npeers == 50000 && s->seeders == 10000, "swarm: 50,000 peers, 10,000 seeders");
	{
		tk_peer p = net_peer(7, false);

		tk_swarm_announce(s, &p, TK_EV_COMPLETED, 101.0);
		p.seeder = 1;
		tk_swarm_announce(s, &p, TK_EV_COMPLETED, 101.0);
		CHECK(s->npeers == 50000 && s->seeders == 10001 && s->completed == 6,
		      "swarm: a peer completing counts once, becomes a seeder");
	}
	for (int i = 0; i < 50000; i += 2)
	{
		tk_peer p = net_peer(i, false);

		tk_swarm_announce(s, &p, TK_EV_STOPPED, 102.0);
	}
	all_ok = true;
	for (int i = 0; i < 50000; i++)
	{
		tk_peer p = net_peer(i, false);

		all_ok &= (tk_swarm_lookup(s, &p) != NULL) == (i % 2 == 1);
	}
	CHECK(all_ok && s->npeers == 25000, "swarm: stopped peers removed, every other one still found");
	{
		tk_peer self = net_peer(1, false);
		size_t n = tk_swarm_pick(s, TK_PEER_NET, &self, 50, out);
		bool none_self = true;

		for (size_t i = 0; i < n; i++)
			none_self &= out[i] != tk_swarm_lookup(s, &self);
		CHECK(n == 50 && none_self, "swarm: 50 peers picked, never the announcer");
		CHECK(tk_swarm_pick(s, TK_PEER_WS, NULL, 50, out) == 0, "swarm: no WebSocket peers among HTTP ones");
	}
	for (int i = 1; i < 50000; i += 2)
	{
		tk_peer p = net_peer(i, false);

		if (i != 3)
			tk_swarm_announce(s, &p, TK_EV_NONE, 105.0);
	}
	CHECK(tk_swarms_expire(104.0, 0) == 1 && s->npeers == 24999, "swarm: expiry drops the peer not heard from");
	tk_max_peers = 25000;
	{
		tk_peer a = net_peer(100000, false), b = net_peer(100001, false);

		CHECK(tk_swarm_announce(s, &a, TK_EV_NONE, 103.0) && !tk_swarm_announce(s, &b, TK_EV_NONE, 103.0),
		      "swarm: the peer limit refuses the peer beyond it");
	}
	CHECK(tk_swarms_replace(hashes + TK_HASH_LEN, completed + 1, 1) == 1 && tk_swarm_find(hashes) == NULL &&
	          tk_peers_total() == 0,
	      "swarm: an unpublished hash's swarm and peers are gone");
	tk_swarms_free();
}

int
main(void)
{
	test_bencode();
	test_query();
	test_ws();
	test_siphash();
	test_swarm();
	return tap_done();
}
