/*
 * mse.h — Message Stream Encryption (MSE/PE, the "encrypted handshake" of BitTorrent
 * clients), the receiving side: what a peer that is connected to (B) does. Pure: no
 * sockets, no loop, no seeder state, so tests/test_mse.c drives it alone.
 *
 *   1 A->B: Ya, PadA                      Ya = 2^Xa mod P (768-bit P), PadA 0..512 bytes
 *   2 B->A: Yb, PadB                      S = Ya^Xb mod P
 *   3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
 *           ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
 *   4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
 *
 * HASH is SHA-1; SKEY is the info hash; ENCRYPT is RC4 keyed by
 * HASH('keyA', S, SKEY) (A to B) or HASH('keyB', S, SKEY) (B to A), its first 1024
 * bytes dropped; VC is 8 zero bytes; crypto_provide/select: 1 plaintext, 2 RC4.
 * ENCRYPT2 is ENCRYPT when RC4 was selected and nothing when plaintext was.
 */
#ifndef PGPOD_SEEDER_MSE_H
#define PGPOD_SEEDER_MSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSE_KEY_LEN 96          /* Ya, Yb, S: 768 bits */
#define MSE_MAX_PAD 512
#define MSE_REPLY_MAX (MSE_KEY_LEN + MSE_MAX_PAD + 14)
#define MSE_CRYPTO_PLAIN 1u
#define MSE_CRYPTO_RC4 2u

typedef struct rc4
{
	uint8_t s[256];
	uint8_t i, j;
} rc4;

/* RC4 keyed by key[0..n), then `drop` bytes of key stream thrown away. */
void rc4_init(rc4 *r, const uint8_t *key, size_t n, size_t drop);
/* Encrypts or decrypts buf in place. */
void rc4_crypt(rc4 *r, uint8_t *buf, size_t n);

/* SHA-1 of a 4-byte tag ('req1', 'keyA', ...) followed by two byte strings. */
void mse_hash(const char tag[4], const uint8_t *a, size_t an, const uint8_t *b, size_t bn, uint8_t out[20]);

/* Looks SKEY up by HASH('req2', SKEY): true and its info hash copied to info_hash, or
 * false when this side has no such torrent. */
typedef bool (*mse_lookup_fn)(void *arg, const uint8_t req2[20], uint8_t info_hash[20]);

typedef enum
{
	MSE_MORE,  /* needs more bytes */
	MSE_DONE,  /* handshake complete (see mse_hs.select, .skey, .ia_len) */
	MSE_FAILED /* refused: *err says why */
} mse_result;

typedef struct mse_hs
{
	int step;
	uint8_t x[20];        /* our private exponent Xb */
	uint8_t s[MSE_KEY_LEN];
	uint8_t req1[20];
	uint16_t pad_c;       /* len(PadC), once read */
	uint32_t provide;     /* crypto_provide, once read */
	/* results */
	uint32_t select;      /* MSE_CRYPTO_PLAIN or MSE_CRYPTO_RC4 */
	uint8_t skey[20];     /* the info hash lookup found */
	size_t ia_len;        /* the initial payload (decrypted) at the start of the buffer */
	rc4 in, out;          /* keyA (decrypts what A sends), keyB (encrypts what we send) */
} mse_hs;

/* True when the first bytes a peer sent cannot be the plain BitTorrent handshake
 * ("\x13BitTorrent protocol"); false when they are (or may still become) it. */
bool mse_looks_encrypted(const uint8_t *in, size_t len);

/* Starts a handshake with a fresh private key. False when the system has no randomness. */
bool mse_init(mse_hs *h);

/* Feeds in[0..len), everything received and not yet consumed (raw bytes). Sets *used to
 * the bytes consumed (the caller drops them) and writes what to send to reply
 * (MSE_REPLY_MAX bytes of room), its length in *reply_len (the bytes are final: step 4
 * comes out encrypted). On MSE_DONE the remaining buffer starts with the initial payload
 * (IA, decrypted in place, h->ia_len bytes); what follows it is the payload stream, to
 * be decrypted with h->in when h->select is RC4. Memory: nothing is kept beyond *h;
 * the caller needs at most 96 + 512 + 20 + 20 + 14 + 512 + 2 + 65535 bytes buffered
 * (a peer that has not synchronised 628 bytes after Ya is refused). */
mse_result mse_feed(mse_hs *h, uint8_t *in, size_t len, size_t *used, uint8_t *reply, size_t *reply_len,
                    mse_lookup_fn lookup, void *arg, const char **err);

#endif
