/* HS256 JSON Web Tokens, verified with OpenSSL's primitives (HMAC-SHA256,
 * base64, constant-time comparison) and jansson: alg, exp/nbf/iat with
 * PostgREST's 30 s clock skew, and the role claim. See jwt.c for the rules. */
#ifndef GW_JWT_H
#define GW_JWT_H
#include <stddef.h>

typedef struct gw_jwt
{
	char *claims_json; /* the payload as JSON text (malloc) */
	char *role;        /* the role claim, or NULL (malloc) */
} gw_jwt;

/* Returns 0 with out filled, or -1 with a message fit for WWW-Authenticate. */
int gw_jwt_verify(const char *token, const unsigned char *secret, size_t secret_len, long now,
                  gw_jwt *out, char *err, size_t errlen);
void gw_jwt_free(gw_jwt *j);
/* Strict base64url (RFC 7515 2: no padding, no other character, unused bits zero):
 * the decoded length, or -1. out must hold n * 3 / 4 + 3 bytes. */
long gw_base64url_decode(const char *in, size_t n, unsigned char *out, size_t cap);

#endif
