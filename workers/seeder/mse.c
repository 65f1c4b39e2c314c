/*
 * mse.c — Message Stream Encryption, the side that is connected to (see mse.h).
 * Diffie-Hellman and SHA-1 are OpenSSL's (BN_mod_exp, SHA1); RC4 is the few lines
 * below (OpenSSL 3 keeps it in the legacy provider only; tests/test_mse.c checks it
 * against published vectors and against that provider).
 */
#define _GNU_SOURCE
#include <string.h>

#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "mse.h"

/* The 768-bit prime of the MSE specification (generator 2). */
static const char MSE_PRIME_HEX[] =
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

#define PROTOCOL_HEAD "\x13" "BitTorrent protocol"
#define SYNC_WINDOW (MSE_MAX_PAD + 20) /* PadA then HASH('req1', S) */

enum
{
	STEP_YA,     /* waiting for Ya */
	STEP_SYNC,   /* looking for HASH('req1', S) after PadA */
	STEP_HEADER, /* HASH('req2') xor HASH('req3'), VC, crypto_provide, len(PadC) */
	STEP_PAD_C,  /* PadC, len(IA) */
	STEP_IA      /* the initial payload */
};

void
rc4_init(rc4 *r, const uint8_t *key, size_t n, size_t drop)
{
	for (int k = 0; k < 256; k++)
		r->s[k] = (uint8_t)k;
	uint8_t j = 0;
	for (int k = 0; k < 256; k++)
	{
		j = (uint8_t)(j + r->s[k] + key[k % n]);
		uint8_t t = r->s[k];
		r->s[k] = r->s[j];
		r->s[j] = t;
	}
	r->i = r->j = 0;
	uint8_t skip[256];
	while (drop > 0)
	{
		size_t k = drop < sizeof skip ? drop : sizeof skip;
		memset(skip, 0, k);
		rc4_crypt(r, skip, k);
		drop -= k;
	}
}

void
rc4_crypt(rc4 *r, uint8_t *buf, size_t n)
{
	uint8_t i = r->i, j = r->j;
	uint8_t *s = r->s;
	for (size_t k = 0; k < n; k++)
	{
		i = (uint8_t)(i + 1);
		uint8_t si = s[i];
		j = (uint8_t)(j + si);
		uint8_t sj = s[j];
		s[i] = sj;
		s[j] = si;
		buf[k] ^= s[(uint8_t)(si + sj)];
	}
	r->i = i;
	r->j = j;
}

void
mse_hash(const char tag[4], const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[20])
{
	uint8_t buf[4 + MSE_KEY_LEN + 20];
	memcpy(buf, tag, 4);
	memcpy(buf + 4, a, an);
	if (bn)
		memcpy(buf + 4 + an, b, bn);
	SHA1(buf, 4 + an + bn, out);
}

bool
mse_looks_encrypted(const uint8_t *in, size_t len)
{
	size_t n = len < 20 ? len : 20;
	return memcmp(in, PROTOCOL_HEAD, n) != 0;
}

bool
mse_init(mse_hs *h)
{
	memset(h, 0, sizeof *h);
	h->step = STEP_YA;
	/* 160 bits of private exponent, as the specification recommends */
	return RAND_bytes(h->x, sizeof h->x) == 1;
}

/* Yb = 2^Xb mod P into yb, S = Ya^Xb mod P into h->s; false when Ya is not in (1, P-1). */
static bool
mse_dh(mse_hs *h, const uint8_t *ya_bytes, uint8_t yb[MSE_KEY_LEN])
{
	bool ok = false;
	BN_CTX *ctx = BN_CTX_new();
	BIGNUM *p = NULL, *g = BN_new(), *x = BN_bin2bn(h->x, sizeof h->x, NULL);
	BIGNUM *ya = BN_bin2bn(ya_bytes, MSE_KEY_LEN, NULL), *y = BN_new(), *s = BN_new(), *pm1 = BN_new();
	if (!ctx || !g || !x || !ya || !y || !s || !pm1 || !BN_hex2bn(&p, MSE_PRIME_HEX) || !BN_set_word(g, 2) ||
	    !BN_sub(pm1, p, BN_value_one()))
		goto out;
	BN_set_flags(x, BN_FLG_CONSTTIME);
	if (BN_cmp(ya, BN_value_one()) <= 0 || BN_cmp(ya, pm1) >= 0)
		goto out;
	if (!BN_mod_exp(y, g, x, p, ctx) || !BN_mod_exp(s, ya, x, p, ctx) || BN_bn2binpad(y, yb, MSE_KEY_LEN) < 0 ||
	    BN_bn2binpad(s, h->s, MSE_KEY_LEN) < 0)
		goto out;
	ok = true;
out:
	BN_free(p);
	BN_free(g);
	BN_clear_free(x);
	BN_free(ya);
	BN_free(y);
	BN_clear_free(s);
	BN_free(pm1);
	BN_CTX_free(ctx);
	return ok;
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

mse_result
mse_feed(mse_hs *h, uint8_t *in, size_t len, size_t *used, uint8_t *reply, size_t *reply_len,
         mse_lookup_fn lookup, void *arg, const char **err)
{
	size_t off = 0;
	*reply_len = 0;
	*used = 0;
	for (;;)
	{
		size_t avail = len - off;
		uint8_t *at = in + off;
		switch (h->step)
		{
		case STEP_YA:
		{
			if (avail < MSE_KEY_LEN)
				return MSE_MORE;
			uint8_t pad[2];
			if (!mse_dh(h, at, reply) || RAND_bytes(pad, 2) != 1)
			{
				*err = "an encrypted handshake with an invalid Diffie-Hellman key";
				return MSE_FAILED;
			}
			size_t pad_b = ((size_t)pad[0] << 8 | pad[1]) % (MSE_MAX_PAD + 1);
			if (pad_b && RAND_bytes(reply + MSE_KEY_LEN, (int)pad_b) != 1)
				pad_b = 0;
			*reply_len = MSE_KEY_LEN + pad_b;
			mse_hash("req1", h->s, MSE_KEY_LEN, NULL, 0, h->req1);
			off += MSE_KEY_LEN;
			*used = off;
			h->step = STEP_SYNC;
			break;
		}
		case STEP_SYNC:
		{
			size_t window = avail < SYNC_WINDOW ? avail : SYNC_WINDOW;
			const uint8_t *hit = window >= 20 ? memmem(at, window, h->req1, 20) : NULL;
			if (!hit)
			{
				if (avail >= SYNC_WINDOW)
				{
					*err = "an encrypted handshake without its synchronisation hash after 512 bytes of padding";
					return MSE_FAILED;
				}
				return MSE_MORE;
			}
			off += (size_t)(hit - at) + 20;
			*used = off;
			h->step = STEP_HEADER;
			break;
		}
		case STEP_HEADER:
		{
			if (avail < 20 + 14)
				return MSE_MORE;
			uint8_t req3[20], req2[20], key[20];
			mse_hash("req3", h->s, MSE_KEY_LEN, NULL, 0, req3);
			for (int k = 0; k < 20; k++)
				req2[k] = at[k] ^ req3[k];
			if (!lookup(arg, req2, h->skey))
			{
				*err = "an encrypted handshake for an info hash this pod does not seed";
				return MSE_FAILED;
			}
			mse_hash("keyA", h->s, MSE_KEY_LEN, h->skey, 20, key);
			rc4_init(&h->in, key, 20, 1024);
			mse_hash("keyB", h->s, MSE_KEY_LEN, h->skey, 20, key);
			rc4_init(&h->out, key, 20, 1024);
			uint8_t *c = at + 20;
			rc4_crypt(&h->in, c, 14);
			static const uint8_t vc[8] = {0};
			if (memcmp(c, vc, 8) != 0)
			{
				*err = "an encrypted handshake whose verification constant is wrong";
				return MSE_FAILED;
			}
			h->provide = be32(c + 8);
			h->pad_c = (uint16_t)(c[12] << 8 | c[13]);
			if (h->pad_c > MSE_MAX_PAD)
			{
				*err = "an encrypted handshake with more than 512 bytes of padding";
				return MSE_FAILED;
			}
			/* plaintext when offered: the payload then goes out with sendfile, never
			 * copied nor encrypted here (libtorrent, by default, chooses the same) */
			if (h->provide & MSE_CRYPTO_PLAIN)
				h->select = MSE_CRYPTO_PLAIN;
			else if (h->provide & MSE_CRYPTO_RC4)
				h->select = MSE_CRYPTO_RC4;
			else
			{
				*err = "an encrypted handshake offering neither plaintext nor RC4";
				return MSE_FAILED;
			}
			off += 34;
			*used = off;
			h->step = STEP_PAD_C;
			break;
		}
		case STEP_PAD_C:
			if (avail < (size_t)h->pad_c + 2)
				return MSE_MORE;
			rc4_crypt(&h->in, at, (size_t)h->pad_c + 2);
			h->ia_len = (size_t)at[h->pad_c] << 8 | at[h->pad_c + 1];
			off += (size_t)h->pad_c + 2;
			*used = off;
			h->step = STEP_IA;
			break;
		case STEP_IA:
		{
			if (avail < h->ia_len)
				return MSE_MORE;
			rc4_crypt(&h->in, at, h->ia_len); /* stays in the buffer as payload */
			uint8_t *w = reply + *reply_len;
			memset(w, 0, 8);                   /* VC */
			w[8] = w[9] = w[10] = 0;
			w[11] = (uint8_t)h->select;        /* crypto_select */
			w[12] = w[13] = 0;                 /* len(PadD) = 0 */
			rc4_crypt(&h->out, w, 14);
			*reply_len += 14;
			return MSE_DONE;
		}
		}
	}
}
