/* HS256 JSON Web Tokens: signature (OpenSSL HMAC, constant-time compare),
 * alg, exp/nbf/iat with PostgREST's 30 s clock skew, and the role claim. */
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
/* base64url without padding; returns the decoded length or -1. */
long gw_base64url_decode(const char *in, size_t n, unsigned char *out, size_t cap);

#endif
