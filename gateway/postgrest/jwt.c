/* HS256 JWT verification (see jwt.h): a small module over OpenSSL and jansson,
 * kept to one algorithm so that it can be read whole. The rules, in order:
 *  1. exactly three parts; each is strict base64url (no padding, no other
 *     character, the unused bits of the last character zero), decoded by
 *     OpenSSL's EVP_DecodeBlock;
 *  2. the header is one JSON object without duplicate keys whose "alg" is exactly
 *     "HS256" ("none" and every other algorithm are refused before any MAC is
 *     computed, so a token cannot choose how it is checked) and that names no
 *     "crit" extension (RFC 7515 4.1.11: we understand none);
 *  3. the signature is HMAC-SHA256 (EVP_Q_mac) of the exact bytes
 *     "<header>.<payload>" as sent, 32 bytes, compared with CRYPTO_memcmp;
 *  4. only then is the payload read: one JSON object without duplicate keys
 *     (the claims go to PostgreSQL as request.jwt.claims: no key may mean one
 *     thing here and another there); exp, nbf, iat, when present, are numbers,
 *     checked with PostgREST's 30 s of clock skew; role, when present, a string.
 * Nothing of the token reaches SQL but the verified payload, as a bound
 * parameter. Messages are PostgREST's, for WWW-Authenticate and the 401 body. */
#include "jwt.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKEW 30
#define HS256_LEN 32

long
gw_base64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	/* RFC 4648 5 to 4 (-_ to +/) and the padding back, for EVP_DecodeBlock; a
	 * length of 4k+1 is never an encoding */
	if (n % 4 == 1 || n > (size_t)1 << 24 || cap < n / 4 * 3 + 3)
		return -1;
	size_t padded = (n + 3) / 4 * 4;
	char *b = malloc(padded + 1);
	if (!b)
		return -1;
	int last = 0;
	for (size_t i = 0; i < n; i++)
	{
		char c = in[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
		{
			free(b);
			return -1;
		}
		b[i] = c;
		last = c;
	}
	for (size_t i = n; i < padded; i++)
		b[i] = '=';
	b[padded] = '\0';
	int got = padded ? EVP_DecodeBlock(out, (const unsigned char *)b, (int)padded) : 0;
	free(b);
	if (got < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding's zero bytes; the unused bits of the last
	 * character must be zero (one encoding per value) */
	size_t pad = padded - n;
	if (pad)
	{
		static const char alphabet[] =
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		int v = (int)(strchr(alphabet, last) - alphabet);
		if (v & (pad == 2 ? 0x0f : 0x03))
			return -1;
	}
	return (long)((size_t)got - pad);
}

/* A part decoded and read as one JSON object (no duplicate keys); its text too
 * when text is given. */
static json_t *
decode_object(const char *s, size_t n, char **text)
{
	unsigned char *buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return NULL;
	long len = gw_base64url_decode(s, n, buf, n / 4 * 3 + 3);
	json_t *j = NULL;
	if (len >= 0)
	{
		json_error_t e;
		j = json_loadb((char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, &e);
		if (j && !json_is_object(j))
		{
			json_decref(j);
			j = NULL;
		}
	}
	if (j && text)
	{
		*text = malloc((size_t)len + 1);
		if (*text)
		{
			memcpy(*text, buf, (size_t)len);
			(*text)[len] = '\0';
		}
	}
	free(buf);
	return j;
}

void
gw_jwt_free(gw_jwt *j)
{
	free(j->claims_json);
	free(j->role);
	j->claims_json = NULL;
	j->role = NULL;
}

static int
numeric_claim(json_t *claims, const char *name, double *out)
{
	json_t *v = json_object_get(claims, name);
	if (!v)
		return 0;
	if (!json_is_number(v))
		return -1;
	*out = json_number_value(v);
	return 1;
}

int
gw_jwt_verify(const char *token, const unsigned char *secret, size_t secret_len, long now,
              gw_jwt *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	const char *d1 = strchr(token, '.');
	const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	if (!d1 || !d2 || strchr(d2 + 1, '.'))
	{
		snprintf(err, errlen, "Expected 3 parts in JWT; got %d", !d1 ? 1 : !d2 ? 2 : 4);
		return -1;
	}
	if (!secret || !secret_len)
	{
		snprintf(err, errlen, "Server lacks JWT secret");
		return -1;
	}
	/* 2. the header decides nothing but must say HS256 */
	json_t *header = decode_object(token, (size_t)(d1 - token), NULL);
	const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
	int crit = header && json_object_get(header, "crit") != NULL;
	if (!alg || strcmp(alg, "HS256") || crit)
	{
		snprintf(err, errlen,
		         !alg ? "Invalid JWS header"
		         : crit ? "JWSError JWSUnknownCriticalExtension"
		                : "Wrong or unsupported encoding algorithm");
		if (header)
			json_decref(header);
		return -1;
	}
	json_decref(header);
	/* 3. the signature over the bytes as sent */
	unsigned char mac[EVP_MAX_MD_SIZE], sig[HS256_LEN + 3];
	size_t maclen = 0;
	const char *sig_text = d2 + 1;
	size_t sig_n = strlen(sig_text);
	long siglen = sig_n <= 44 ? gw_base64url_decode(sig_text, sig_n, sig, sizeof sig) : -1;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, secret_len,
	               (const unsigned char *)token, (size_t)(d2 - token), mac, sizeof mac, &maclen) ||
	    maclen != HS256_LEN || siglen != HS256_LEN || CRYPTO_memcmp(sig, mac, HS256_LEN) != 0)
	{
		snprintf(err, errlen, "JWSError JWSInvalidSignature");
		return -1;
	}
	/* 4. the claims */
	char *text = NULL;
	json_t *claims = decode_object(d1 + 1, (size_t)(d2 - d1 - 1), &text);
	if (!claims || !text)
	{
		snprintf(err, errlen, "JWT claims are not a JSON object");
		goto bad;
	}
	double t;
	int r = numeric_claim(claims, "exp", &t);
	if (r < 0 || (r > 0 && now > t + SKEW))
	{
		snprintf(err, errlen, r < 0 ? "The JWT 'exp' claim must be a number" : "JWT expired");
		goto bad;
	}
	r = numeric_claim(claims, "nbf", &t);
	if (r < 0 || (r > 0 && now + SKEW < t))
	{
		snprintf(err, errlen, r < 0 ? "The JWT 'nbf' claim must be a number" : "JWT not yet valid");
		goto bad;
	}
	r = numeric_claim(claims, "iat", &t);
	if (r < 0 || (r > 0 && now + SKEW < t))
	{
		snprintf(err, errlen,
		         r < 0 ? "The JWT 'iat' claim must be a number" : "JWT issued at future");
		goto bad;
	}
	json_t *role = json_object_get(claims, "role");
	if (role && !json_is_string(role))
	{
		snprintf(err, errlen, "The JWT 'role' claim must be a string");
		goto bad;
	}
	if (role && !(out->role = strdup(json_string_value(role))))
	{
		snprintf(err, errlen, "Out of memory");
		goto bad;
	}
	out->claims_json = text;
	json_decref(claims);
	return 0;
bad:
	free(text);
	if (claims)
		json_decref(claims);
	return -1;
}
