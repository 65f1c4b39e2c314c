/* Who is calling and what the transaction knows about the request: the bearer
 * token becomes a role and claims, and both plus the method, path, headers and
 * cookies become the transaction-local settings PostgREST sets. */
#ifndef GW_AUTH_H
#define GW_AUTH_H
#include "error.h"
#include "http.h"

#define GW_ANON_ROLE "pgpod_anon"

typedef struct gw_auth
{
	char *role;        /* arena */
	char *claims_json; /* arena; "{}" without a token */
	int anonymous;
} gw_auth;

/* Fills a from the Authorization header. On failure fills e (401/500) and
 * the WWW-Authenticate header line in www (may be empty). */
int gw_auth_request(gw_req *req, gw_auth *a, gw_error *e, char *www, size_t wwwlen);
/* The same, and where allow_query_token is set (routes a browser reaches without
 * headers: EventSource, <video src>, WebSeeds) the token may instead come as the
 * query parameter access_token (RFC 6750 2.3); both at once is 400. */
int gw_auth_request_ex(gw_req *req, gw_auth *a, gw_error *e, char *www, size_t wwwlen,
                       int allow_query_token);
/* The statement that sets role and request.* for the transaction. */
void gw_auth_settings_sql(gw_req *req, const gw_auth *a, gw_buf *sql, gw_params *params);

#endif
