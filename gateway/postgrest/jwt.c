/* HS256 JWT verification (see jwt.h). The token is split by hand, each part is
 * base64url-decoded, the header must say HS256 (never "none"), and claims are
 * read with jansson; nothing of the token reaches SQL except the verified
 * payload, which goes to request.jwt.claims as a bound parameter. */
#include "jwt.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKEW 30

long
gw_base64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	unsigned acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++)
	{
		char c = in[i];
		int v;
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '-')
			v = 62;
		else if (c == '_')
			v = 63;
		else if (c == '=')
			break;
		else
			return -1;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return (long)o;
}

static json_t *
decode_part(const char *s, size_t n, char **text)
{
	unsigned char *buf = malloc(n + 1);
	if (!buf)
		return NULL;
	long len = gw_base64url_decode(s, n, buf, n);
	if (len < 0)
	{
		free(buf);
		return NULL;
	}
	json_error_t e;
	json_t *j = json_loadb((char *)buf, (size_t)len, 0, &e);
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
	json_t *header = decode_part(token, (size_t)(d1 - token), NULL);
	const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
	if (!alg || strcmp(alg, "HS256"))
	{
		snprintf(err, errlen,
		         alg ? "Wrong or unsupported encoding algorithm" : "Invalid JWS header");
		if (header)
			json_decref(header);
		return -1;
	}
	json_decref(header);
	unsigned char mac[EVP_MAX_MD_SIZE], sig[64];
	unsigned maclen = 0;
	HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)token, (size_t)(d2 - token),
	     mac, &maclen);
	long siglen = gw_base64url_decode(d2 + 1, strlen(d2 + 1), sig, sizeof sig);
	if (siglen != (long)maclen || CRYPTO_memcmp(sig, mac, maclen) != 0)
	{
		snprintf(err, errlen, "JWSError JWSInvalidSignature");
		return -1;
	}
	char *text = NULL;
	json_t *claims = decode_part(d1 + 1, (size_t)(d2 - d1 - 1), &text);
	if (!claims || !json_is_object(claims))
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
	if (role)
		out->role = strdup(json_string_value(role));
	out->claims_json = text;
	json_decref(claims);
	return 0;
bad:
	free(text);
	if (claims)
		json_decref(claims);
	return -1;
}
