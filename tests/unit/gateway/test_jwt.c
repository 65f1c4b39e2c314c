/* Unit tests of HS256 verification (gateway/jwt.c) with tokens signed here. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "tap.h"

static const unsigned char KEY[] = "0123456789abcdef0123456789abcdef";

static void
b64url(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3)
	{
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
		             (i + 2 < n ? in[i + 2] : 0);
		out[o++] = t[(v >> 18) & 63];
		out[o++] = t[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = t[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = t[v & 63];
	}
	out[o] = '\0';
}

static char *
sign(const char *header, const char *payload, const unsigned char *key, size_t keylen)
{
	static char tok[2048];
	char h[512], p[1024], s[128];
	b64url((const unsigned char *)header, strlen(header), h);
	b64url((const unsigned char *)payload, strlen(payload), p);
	snprintf(tok, sizeof tok, "%s.%s", h, p);
	unsigned char mac[32];
	unsigned ml;
	HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)tok, strlen(tok), mac, &ml);
	b64url(mac, ml, s);
	strcat(tok, ".");
	strcat(tok, s);
	return tok;
}

TAP_TEST(test_jwt)
{
	const char *hs = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	gw_jwt j;
	char err[160];
	long now = 1700000000;
	char *t = sign(hs, "{\"role\":\"pgpod_user\",\"sub\":\"u1\",\"exp\":1700000100}", KEY, 32);
	ok(gw_jwt_verify(t, KEY, 32, now, &j, err, sizeof err) == 0, "valid token verifies");
	is_str(j.role, "pgpod_user", "role claim");
	contains(j.claims_json, "\"sub\":\"u1\"", "claims kept as JSON");
	gw_jwt_free(&j);
	ok(gw_jwt_verify(t, KEY, 32, 1700000200, &j, err, sizeof err) != 0, "expired token refused");
	is_str(err, "JWT expired", "expiry message");
	ok(gw_jwt_verify(t, (const unsigned char *)"another key 0123456789abcdef0123", 32, now, &j, err,
	                 sizeof err) != 0,
	   "wrong key refused");
	t = sign("{\"alg\":\"none\"}", "{\"role\":\"pgpod_admin\"}", KEY, 32);
	ok(gw_jwt_verify(t, KEY, 32, now, &j, err, sizeof err) != 0, "alg none refused");
	t = sign(hs, "{\"role\":\"pgpod_user\",\"nbf\":1700001000}", KEY, 32);
	ok(gw_jwt_verify(t, KEY, 32, now, &j, err, sizeof err) != 0, "not-yet-valid token refused");
	t = sign(hs, "{\"role\":5}", KEY, 32);
	ok(gw_jwt_verify(t, KEY, 32, now, &j, err, sizeof err) != 0, "non-string role refused");
	t = sign(hs, "{\"sub\":\"x\"}", KEY, 32);
	ok(gw_jwt_verify(t, KEY, 32, now, &j, err, sizeof err) == 0 && j.role == NULL,
	   "token without role is valid");
	gw_jwt_free(&j);
	ok(gw_jwt_verify("a.b", KEY, 32, now, &j, err, sizeof err) != 0, "two parts refused");
	ok(gw_jwt_verify("a.b.c.d", KEY, 32, now, &j, err, sizeof err) != 0, "four parts refused");
	t = sign(hs, "{\"role\":\"pgpod_user\"}", KEY, 32);
	char tampered[2048];
	strcpy(tampered, t);
	char *dot = strchr(tampered, '.');
	dot[2] = dot[2] == 'A' ? 'B' : 'A';
	ok(gw_jwt_verify(tampered, KEY, 32, now, &j, err, sizeof err) != 0, "tampered payload refused");
}
