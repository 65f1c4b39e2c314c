/*
 * test_mse.c — the seeder's RC4 and its side of the encrypted handshake (seeder/mse.c):
 * RC4 against published vectors and OpenSSL's legacy provider's output; complete
 * handshakes with an initiator written here from the specification (plaintext and RC4
 * selected, the bytes fed in one piece and one byte at a time); hostile handshakes
 * refused; random garbage always refused within the bounded buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/rand.h>

#include "mse.h"
#include "tap.h"

/* The one TAP producer (workers/lib/tap.h); names come as plain strings here. */
#define check(cond, name) ok((cond), "%s", (name))

static void
unhex(const char *h, uint8_t *out)
{
	for (size_t i = 0; h[2 * i]; i++)
		sscanf(h + 2 * i, "%2hhx", &out[i]);
}

static void
rc4_vector(const char *key, const char *plain, const char *want_hex, size_t drop, const char *name)
{
	rc4 r;
	uint8_t buf[64], want[64];
	size_t n = strlen(plain);
	memcpy(buf, plain, n);
	unhex(want_hex, want);
	rc4_init(&r, (const uint8_t *)key, strlen(key), drop);
	rc4_crypt(&r, buf, n);
	check(memcmp(buf, want, n) == 0, name);
}

/* --- an initiator (A) from the specification ------------------------------------------ */
static const char PRIME[] =
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
static const uint8_t SKEY[20] = "0123456789abcdefghij";

static bool
lookup(void *arg, const uint8_t req2[20], uint8_t info_hash[20])
{
	uint8_t want[20];
	(void)arg;
	mse_hash("req2", SKEY, 20, NULL, 0, want);
	if (memcmp(want, req2, 20) != 0)
		return false;
	memcpy(info_hash, SKEY, 20);
	return true;
}

typedef struct initiator
{
	BIGNUM *p, *x;
	uint8_t ya[96], s[96];
	rc4 out, in; /* keyA, keyB */
} initiator;

static void
a_start(initiator *a)
{
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *g = BN_new(), *y = BN_new();
	uint8_t xb[20];
	a->p = NULL;
	BN_hex2bn(&a->p, PRIME);
	RAND_bytes(xb, 20);
	a->x = BN_bin2bn(xb, 20, NULL);
	BN_set_word(g, 2);
	BN_mod_exp(y, g, a->x, a->p, ctx);
	BN_bn2binpad(y, a->ya, 96);
	BN_free(g);
	BN_free(y);
	BN_CTX_free(ctx);
}

static void
a_secret(initiator *a, const uint8_t yb[96], const uint8_t skey[20])
{
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *y = BN_bin2bn(yb, 96, NULL), *s = BN_new();
	uint8_t key[20];
	BN_mod_exp(s, y, a->x, a->p, ctx);
	BN_bn2binpad(s, a->s, 96);
	mse_hash("keyA", a->s, 96, skey, 20, key);
	rc4_init(&a->out, key, 20, 1024);
	mse_hash("keyB", a->s, 96, skey, 20, key);
	rc4_init(&a->in, key, 20, 1024);
	BN_free(y);
	BN_free(s);
	BN_CTX_free(ctx);
	BN_free(a->x);
	BN_free(a->p);
}

/* The receiver's buffer, fed like the seeder does: append, mse_feed, drop what it used. */
typedef struct side
{
	mse_hs h;
	uint8_t in[80000];
	size_t len;
	uint8_t sent[4096];
	size_t sent_len;
	mse_result last;
	const char *err;
} side;

static mse_result
feed(side *b, const uint8_t *data, size_t n, size_t step)
{
	for (size_t k = 0; k < n; k += step)
	{
		size_t m = n - k < step ? n - k : step;
		memcpy(b->in + b->len, data + k, m);
		b->len += m;
		if (b->last == MSE_DONE || b->last == MSE_FAILED)
			continue; /* the payload after the handshake stays in the buffer */
		uint8_t reply[MSE_REPLY_MAX];
		size_t used, rl;
		b->last = mse_feed(&b->h, b->in, b->len, &used, reply, &rl, lookup, NULL, &b->err);
		if (b->last == MSE_FAILED)
			return b->last;
		memcpy(b->sent + b->sent_len, reply, rl);
		b->sent_len += rl;
		memmove(b->in, b->in + used, b->len - used);
		b->len -= used;
	}
	return b->last;
}

/* Step 3 of the handshake into out; returns its length. */
static size_t
a_step3(initiator *a, const uint8_t skey[20], uint32_t provide, size_t pad_c, const uint8_t *ia, size_t ia_len,
        const uint8_t vc[8], uint8_t *out)
{
	uint8_t req3[20];
	size_t n = 0;
	mse_hash("req1", a->s, 96, NULL, 0, out);
	n += 20;
	mse_hash("req2", skey, 20, NULL, 0, out + n);
	mse_hash("req3", a->s, 96, NULL, 0, req3);
	for (int k = 0; k < 20; k++)
		out[n + k] ^= req3[k];
	n += 20;
	uint8_t *c = out + n;
	memcpy(c, vc, 8);
	c[8] = (uint8_t)(provide >> 24);
	c[9] = (uint8_t)(provide >> 16);
	c[10] = (uint8_t)(provide >> 8);
	c[11] = (uint8_t)provide;
	c[12] = (uint8_t)(pad_c >> 8);
	c[13] = (uint8_t)pad_c;
	RAND_bytes(c + 14, (int)pad_c + 1);
	c[14 + pad_c] = (uint8_t)(ia_len >> 8);
	c[15 + pad_c] = (uint8_t)ia_len;
	if (ia_len)
		memcpy(c + 16 + pad_c, ia, ia_len);
	rc4_crypt(&a->out, c, 16 + pad_c + ia_len);
	return n + 16 + pad_c + ia_len;
}

/* A whole handshake; returns the receiver's result. */
static mse_result
handshake(side *b, uint32_t provide, size_t pad_a, size_t pad_c, const uint8_t skey[20], const uint8_t vc[8],
          size_t step, const uint8_t *ia, size_t ia_len, const char *after, initiator *a)
{
	static uint8_t buf[70000];
	memset(b, 0, sizeof *b);
	mse_init(&b->h);
	a_start(a);
	memcpy(buf, a->ya, 96);
	RAND_bytes(buf + 96, (int)pad_a + 1);
	if (feed(b, buf, 96 + pad_a, step) != MSE_MORE || b->sent_len < 96)
		return MSE_FAILED;
	a_secret(a, b->sent, skey);
	size_t n = a_step3(a, skey, provide, pad_c, ia, ia_len, vc, buf);
	if (after)
	{
		memcpy(buf + n, after, strlen(after));
		rc4_crypt(&a->out, buf + n, strlen(after));
		n += strlen(after);
	}
	return feed(b, buf, n, step);
}

int
main(void)
{
	/* RC4: the well-known vectors, RFC 6229's 128-bit key at offset 0, and at offset
	 * 1024 (MSE's drop) as OpenSSL's legacy provider computes it:
	 * head -c 1040 /dev/zero | openssl enc -rc4 -K 0102030405060708090a0b0c0d0e0f10 \
	 *   -provider legacy -provider default -nosalt | tail -c 16 */
	rc4_vector("Key", "Plaintext", "bbf316e8d940af0ad3", 0, "RC4 Key/Plaintext");
	rc4_vector("Wiki", "pedia", "1021bf0420", 0, "RC4 Wiki/pedia");
	rc4_vector("Secret", "Attack at dawn", "45a01f645fc35b383552544b9bf5", 0, "RC4 Secret/Attack at dawn");
	{
		uint8_t key[16], want[16], z[16] = {0};
		unhex("0102030405060708090a0b0c0d0e0f10", key);
		rc4 r;
		rc4_init(&r, key, 16, 0);
		rc4_crypt(&r, z, 16);
		unhex("9ac7cc9a609d1ef7b2932899cde41b97", want);
		check(memcmp(z, want, 16) == 0, "RC4 RFC 6229 128-bit key, offset 0");
		memset(z, 0, 16);
		rc4_init(&r, key, 16, 1024);
		rc4_crypt(&r, z, 8); /* in two calls: the state carries over */
		rc4_crypt(&r, z + 8, 8);
		unhex("bdf0324e6083dcc6d3cedd3ca8c53c16", want);
		check(memcmp(z, want, 16) == 0, "RC4 dropping 1024 bytes (OpenSSL legacy provider's output)");
	}

	static side b;
	initiator a;
	const uint8_t vc[8] = {0};
	uint8_t ia[68];
	memcpy(ia, "\x13" "BitTorrent protocol", 20);
	memset(ia + 20, 0, 8);
	memcpy(ia + 28, SKEY, 20);
	memcpy(ia + 48, "-XX0000-abcdefghijkl", 20);

	/* plaintext and RC4 offered: plaintext selected */
	mse_result r = handshake(&b, 3, 200, 30, SKEY, vc, 100000, ia, sizeof ia, NULL, &a);
	check(r == MSE_DONE, "both offered: handshake done");
	check(b.h.select == MSE_CRYPTO_PLAIN, "both offered: plaintext selected");
	check(b.len == sizeof ia && memcmp(b.in, ia, sizeof ia) == 0, "the initial payload is the decrypted handshake");
	check(memcmp(b.h.skey, SKEY, 20) == 0, "SKEY found by HASH('req2', SKEY)");
	{
		uint8_t *step4 = b.sent + b.sent_len - 14;
		rc4_crypt(&a.in, step4, 14);
		check(memcmp(step4, vc, 8) == 0 && step4[11] == 1 && step4[8] == 0 && step4[12] == 0 && step4[13] == 0,
		      "step 4 decrypts with keyB to VC, crypto_select = plaintext, no PadD");
		check(b.sent_len - 14 >= 96 && b.sent_len - 14 <= 96 + 512, "Yb + PadB of 0..512 bytes");
	}

	/* RC4 only, one byte at a time, payload after the initial one */
	r = handshake(&b, 2, 512, 512, SKEY, vc, 1, ia, sizeof ia, "hello", &a);
	check(r == MSE_DONE, "RC4 only, fed byte by byte, the longest paddings: handshake done");
	check(b.h.select == MSE_CRYPTO_RC4, "RC4 only: RC4 selected");
	check(b.len == sizeof ia + 5 && memcmp(b.in, ia, sizeof ia) == 0, "the initial payload is decrypted in place");
	rc4_crypt(&b.h.in, b.in + sizeof ia, 5);
	check(memcmp(b.in + sizeof ia, "hello", 5) == 0, "what follows decrypts with the receiver's keyA stream");
	{
		uint8_t *step4 = b.sent + b.sent_len - 14;
		rc4_crypt(&a.in, step4, 14);
		check(step4[11] == 2, "step 4 says crypto_select = RC4");
		uint8_t msg[5] = {0, 0, 0, 1, 1};
		rc4_crypt(&b.h.out, msg, 5); /* the receiver's next bytes continue keyB */
		rc4_crypt(&a.in, msg, 5);
		check(memcmp(msg, "\0\0\0\1\1", 5) == 0, "the receiver's payload continues the keyB stream");
	}
	/* an empty initial payload (the BitTorrent handshake comes later, encrypted or not) */
	r = handshake(&b, 3, 0, 0, SKEY, vc, 7, NULL, 0, NULL, &a);
	check(r == MSE_DONE && b.h.ia_len == 0 && b.len == 0, "no padding, no initial payload: done");

	/* hostile */
	r = handshake(&b, 3, 10, 0, (const uint8_t *)"another info hash...", vc, 100000, ia, sizeof ia, NULL, &a);
	check(r == MSE_FAILED && strstr(b.err, "does not seed"), "an unknown SKEY: refused");
	r = handshake(&b, 3, 10, 0, SKEY, (const uint8_t *)"\0\0\0\0\0\0\0\1", 100000, ia, sizeof ia, NULL, &a);
	check(r == MSE_FAILED && strstr(b.err, "verification"), "a wrong VC: refused");
	r = handshake(&b, 4, 10, 0, SKEY, vc, 100000, ia, sizeof ia, NULL, &a);
	check(r == MSE_FAILED && strstr(b.err, "neither"), "crypto_provide without plaintext or RC4: refused");
	r = handshake(&b, 3, 10, 513, SKEY, vc, 100000, ia, sizeof ia, NULL, &a);
	check(r == MSE_FAILED && strstr(b.err, "padding"), "PadC of 513 bytes: refused");
	{
		uint8_t buf[96 + 700];
		memset(&b, 0, sizeof b);
		mse_init(&b.h);
		memset(buf, 0, 96);
		check(feed(&b, buf, 96, 96) == MSE_FAILED && strstr(b.err, "Diffie-Hellman"), "Ya = 0: refused");
		memset(&b, 0, sizeof b);
		mse_init(&b.h);
		unhex(PRIME, buf);
		buf[95] -= 1; /* P - 1 */
		check(feed(&b, buf, 96, 96) == MSE_FAILED, "Ya = P - 1: refused");
		memset(&b, 0, sizeof b);
		mse_init(&b.h);
		a_start(&a);
		memcpy(buf, a.ya, 96);
		RAND_bytes(buf + 96, 700);
		r = feed(&b, buf, sizeof buf, 1);
		check(r == MSE_FAILED && strstr(b.err, "synchronisation") && b.len <= 96 + 512 + 20,
		      "no HASH('req1', S) within 512 bytes of padding: refused with at most 532 bytes buffered");
		BN_free(a.x);
		BN_free(a.p);
	}
	/* random garbage: always refused, never more than the bounded buffer held */
	{
		int refused = 0;
		size_t most = 0;
		for (int round = 0; round < 200; round++)
		{
			uint8_t junk[2048];
			RAND_bytes(junk, sizeof junk);
			memset(&b, 0, sizeof b);
			mse_init(&b.h);
			size_t step = 1 + (size_t)(junk[0] % 97);
			r = feed(&b, junk, sizeof junk, step);
			refused += r == MSE_FAILED;
			most = b.len > most ? b.len : most;
		}
		check(refused == 200 && most <= 96 + 512 + 20 + 96, "200 random 2 KiB streams: all refused, buffers bounded");
	}
	return tap_done();
}
