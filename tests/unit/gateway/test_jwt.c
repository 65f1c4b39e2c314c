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

	/* good tokens beside bad ones, each bad one with PostgREST's message */
	struct
	{
		const char *header, *payload;
		long now;
		const char *want; /* NULL: valid */
	} cases[] = {
	    {hs, "{\"role\":\"pgpod_user\",\"exp\":1700000029}", now, NULL},
	    {hs, "{\"role\":\"pgpod_user\",\"exp\":1699999970}", now, NULL}, /* within the skew */
	    {hs, "{\"role\":\"pgpod_user\",\"exp\":1699999969}", now, "JWT expired"},
	    {hs, "{\"role\":\"pgpod_user\",\"exp\":\"1800000000\"}", now,
	     "The JWT 'exp' claim must be a number"},
	    {hs, "{\"nbf\":1700000030}", now, NULL},
	    {hs, "{\"nbf\":1700000030.5}", now, "JWT not yet valid"},
	    {hs, "{\"iat\":1700000100}", now, "JWT issued at future"},
	    {hs, "{\"iat\":null}", now, "The JWT 'iat' claim must be a number"},
	    {"{\"typ\":\"JWT\",\"alg\":\"HS256\",\"kid\":\"x\"}", "{\"role\":\"a\"}", now, NULL},
	    {"{\"alg\":\"none\"}", "{\"role\":\"pgpod_admin\"}", now,
	     "Wrong or unsupported encoding algorithm"},
	    {"{\"alg\":\"HS512\"}", "{\"role\":\"pgpod_admin\"}", now,
	     "Wrong or unsupported encoding algorithm"},
	    {"{\"alg\":\"RS256\"}", "{\"role\":\"pgpod_admin\"}", now,
	     "Wrong or unsupported encoding algorithm"},
	    {"{\"alg\":\"hs256\"}", "{}", now, "Wrong or unsupported encoding algorithm"},
	    {"{\"alg\":\"HS256 \"}", "{}", now, "Wrong or unsupported encoding algorithm"},
	    {"{\"typ\":\"JWT\"}", "{}", now, "Invalid JWS header"},
	    {"[\"HS256\"]", "{}", now, "Invalid JWS header"},
	    {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "{}", now, "Invalid JWS header"},
	    {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{}", now, "JWSError JWSUnknownCriticalExtension"},
	    {hs, "[1,2]", now, "JWT claims are not a JSON object"},
	    {hs, "{\"role\":\"pgpod_user\",\"role\":\"pgpod_admin\"}", now,
	     "JWT claims are not a JSON object"},
	    {hs, "{\"role\":\"a\\u0000b\"}", now, "JWT claims are not a JSON object"},
	    {hs, "{\"exp\":1e999}", now, "JWT claims are not a JSON object"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
	{
		t = sign(cases[i].header, cases[i].payload, KEY, 32);
		int rc = gw_jwt_verify(t, KEY, 32, cases[i].now, &j, err, sizeof err);
		if (!cases[i].want)
			ok(rc == 0, "%s . %s: valid", cases[i].header, cases[i].payload);
		else
		{
			ok(rc == -1, "%s . %s: refused", cases[i].header, cases[i].payload);
			is_str(rc ? err : NULL, cases[i].want, "... %s", cases[i].want);
		}
		if (rc == 0)
			gw_jwt_free(&j);
	}

	/* the encoding of the parts and of the signature */
	t = sign(hs, "{\"role\":\"pgpod_user\"}", KEY, 32);
	char tok[2048];
	snprintf(tok, sizeof tok, "%s=", t);
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) && !strcmp(err, "JWSError JWSInvalidSignature"),
	   "a padded signature is refused (base64url has no padding)");
	snprintf(tok, sizeof tok, "%s", t);
	char *last = tok + strlen(tok) - 1;
	/* 43 characters carry 258 bits: the last one's 2 unused bits must be 0 */
	*last = *last == 'A' ? 'B' : *last == 'B' ? 'C' : (char)(*last + 1);
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) != 0,
	   "a signature whose last character differs is refused, even in unused bits only");
	snprintf(tok, sizeof tok, "%s", t);
	tok[strlen(tok) - 5] = '+';
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) != 0, "base64 (not url) characters refused");
	snprintf(tok, sizeof tok, "%.*s", (int)(strrchr(t, '.') - t + 1), t);
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) != 0 &&
	       !strcmp(err, "JWSError JWSInvalidSignature"),
	   "an empty signature is refused");
	snprintf(tok, sizeof tok, "%sAAAA", t);
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) != 0, "a longer signature is refused");
	snprintf(tok, sizeof tok, " %s", t);
	ok(gw_jwt_verify(tok, KEY, 32, now, &j, err, sizeof err) != 0, "a space before the token is refused");
	ok(gw_jwt_verify("..", KEY, 32, now, &j, err, sizeof err) != 0 && !strcmp(err, "Invalid JWS header"),
	   "three empty parts");
	ok(gw_jwt_verify("", KEY, 32, now, &j, err, sizeof err) != 0 &&
	       !strcmp(err, "Expected 3 parts in JWT; got 1"),
	   "an empty token");
	ok(gw_jwt_verify(t, KEY, 0, now, &j, err, sizeof err) != 0 && !strcmp(err, "Server lacks JWT secret"),
	   "no secret: refused");

	/* base64url itself */
	unsigned char b[16];
	ok(gw_base64url_decode("TWFu", 4, b, sizeof b) == 3 && !memcmp(b, "Man", 3), "base64url: 4 chars");
	ok(gw_base64url_decode("TWE", 3, b, sizeof b) == 2 && !memcmp(b, "Ma", 2), "base64url: 3 chars");
	ok(gw_base64url_decode("TQ", 2, b, sizeof b) == 1 && b[0] == 'M', "base64url: 2 chars");
	ok(gw_base64url_decode("TR", 2, b, sizeof b) == -1, "base64url: unused bits set");
	ok(gw_base64url_decode("T", 1, b, sizeof b) == -1, "base64url: one char is no encoding");
	ok(gw_base64url_decode("TQ==", 4, b, sizeof b) == -1, "base64url: padding refused");
	ok(gw_base64url_decode("-_8", 3, b, sizeof b) == 2 && b[0] == 0xfb && b[1] == 0xff,
	   "base64url: - and _");
	ok(gw_base64url_decode("", 0, b, sizeof b) == 0, "base64url: empty");
}

