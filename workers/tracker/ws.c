/*
 * ws.c — WebSocket framing (RFC 6455) for the tracker's WebTorrent face: the
 * handshake's accept key (OpenSSL SHA-1 + base64), parsing one client frame (masked,
 * length-checked before anything is buffered) and writing server frames. No I/O.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "tracker.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool
tk_ws_accept(const char *key, size_t keylen, char out[29])
{
	uint8_t digest[SHA_DIGEST_LENGTH];
	char joined[24 + sizeof(ws_guid)];

	/* The key is base64 of 16 bytes: 24 characters. */
	if (keylen != 24)
		return false;
	memcpy(joined, key, 24);
	memcpy(joined + 24, ws_guid, sizeof(ws_guid) - 1);
	if (!EVP_Digest(joined, 24 + sizeof(ws_guid) - 1, digest, NULL, EVP_sha1(), NULL))
		return false;
	return EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH) == 28;
}

long
tk_ws_parse(uint8_t *buf, size_t len, uint64_t max, tk_ws_frame *f, const char **why)
{
	size_t hdr = 2;
	uint64_t plen;
	uint8_t *mask;

	if (len < 2)
		return 0;
	f->fin = (buf[0] & 0x80) != 0;
	f->opcode = buf[0] & 0x0f;
	if (buf[0] & 0x70)
	{
		*why = "reserved bits set (no extension was negotiated)";
		return -1;
	}
	if (!(buf[1] & 0x80))
	{
		*why = "client frame not masked";
		return -1;
	}
	plen = buf[1] & 0x7f;
	if (plen == 126)
	{
		if (len < 4)
			return 0;
		plen = (uint64_t)buf[2] << 8 | buf[3];
		hdr = 4;
	}
	else if (plen == 127)
	{
		if (len < 10)
			return 0;
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
		hdr = 10;
		if (plen >> 63)
		{
			*why = "invalid frame length";
			return -1;
		}
	}
	if (f->opcode >= 8 && (plen > 125 || !f->fin))
	{
		*why = "invalid control frame";
		return -1;
	}
	if ((f->opcode > 2 && f->opcode < 8) || f->opcode > 10)
	{
		*why = "unknown opcode";
		return -1;
	}
	if (plen > max)
	{
		*why = "frame larger than the tracker accepts";
		return -2;
	}
	if (len < hdr + 4 + plen)
		return 0;
	mask = buf + hdr;
	f->payload = buf + hdr + 4;
	f->len = plen;
	for (uint64_t i = 0; i < plen; i++)
		f->payload[i] ^= mask[i & 3];
	return (long)(hdr + 4 + plen);
}

void
tk_ws_frame_add(wk_buf *b, uint8_t opcode, const void *payload, size_t len)
{
	uint8_t h[10];
	size_t n = 2;

	h[0] = 0x80 | opcode;
	if (len < 126)
		h[1] = (uint8_t)len;
	else if (len < 65536)
	{
		h[1] = 126;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
		n = 4;
	}
	else
	{
		h[1] = 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
		n = 10;
	}
	wk_buf_add(b, (const char *)h, n);
	if (len)
		wk_buf_add(b, payload, len);
}
