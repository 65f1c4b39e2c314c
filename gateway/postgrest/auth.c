/* Bearer tokens, transaction settings and the SQLSTATE -> HTTP status map (see
 * auth.h). The map follows PostgREST's documented table, but for P0002
 * (no_data_found, 404: what pgpod's functions raise for a row the caller may not
 * see); an insufficient privilege error is 401 for the anonymous role and 403
 * for a signed-in one. */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

#include "jwt.h"
#include "snapshot.h"
#include "query_parse.h"

/* The value of access_token in the query string (RFC 6750 2.3), decoded into
 * the request's arena; NULL when absent; "" (and *bad set) when malformed. */
static const char *
query_token(gw_req *req, int *bad)
{
	*bad = 0;
	for (const char *p = req->query; p && *p;)
	{
		const char *end = strchr(p, '&');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n >= 13 && !memcmp(p, "access_token=", 13))
		{
			char *v = gw_url_decode(&req->arena, p + 13, n - 13, 1);
			if (!v)
				*bad = 1;
			return v ? v : "";
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

int
gw_auth_request(gw_req *req, gw_auth *a, gw_error *e, char *www, size_t wwwlen)
{
	return gw_auth_request_ex(req, a, e, www, wwwlen, 0);
}

int
gw_auth_request_ex(gw_req *req, gw_auth *a, gw_error *e, char *www, size_t wwwlen,
                   int allow_query_token)
{
	memset(a, 0, sizeof *a);
	www[0] = '\0';
	const char *h = gw_req_header(req, "authorization");
	const char *token = NULL;
	if (allow_query_token)
	{
		int bad;
		token = query_token(req, &bad);
		if (token && h && *h)
		{
			/* RFC 6750: one way per request */
			gw_error_set(e, 400, "PGRST301",
			             "The token is sent both in the Authorization header and as access_token",
			             NULL, NULL);
			snprintf(www, wwwlen, "WWW-Authenticate: Bearer error=\"invalid_request\"\r\n");
			return -1;
		}
		if (token && (bad || !*token))
		{
			gw_error_set(e, 401, "PGRST301", "Invalid access_token parameter", NULL, NULL);
			snprintf(www, wwwlen, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
			return -1;
		}
	}
	if (!token && (!h || !*h))
	{
		a->role = GW_ANON_ROLE;
		a->claims_json = "{}";
		a->anonymous = 1;
		return 0;
	}
	if (!token)
	{
		if (strncasecmp(h, "Bearer ", 7))
		{
			gw_error_set(e, 401, "PGRST301", "Invalid authorization header", NULL, NULL);
			snprintf(www, wwwlen, "WWW-Authenticate: Bearer\r\n");
			return -1;
		}
		token = h + 7;
		while (*token == ' ')
			token++;
	}
	size_t slen;
	const unsigned char *secret = gw_snapshot_secret(req->snapshot, &slen);
	if (!secret)
	{
		gw_error_set(e, 500, "PGRST300", "Server lacks JWT secret", NULL, NULL);
		return -1;
	}
	gw_jwt jwt;
	char why[160];
	if (gw_jwt_verify(token, secret, slen, (long)time(NULL), &jwt, why, sizeof why))
	{
		gw_error_set(e, 401, strstr(why, "expired") ? "PGRST303" : "PGRST301", why, NULL, NULL);
		snprintf(www, wwwlen,
		         "WWW-Authenticate: Bearer error=\"invalid_token\", error_description=\"%s\"\r\n",
		         why);
		return -1;
	}
	a->claims_json = gw_arena_strdup(&req->arena, jwt.claims_json);
	a->role = gw_arena_strdup(&req->arena, jwt.role ? jwt.role : GW_ANON_ROLE);
	a->anonymous = !jwt.role || !strcmp(jwt.role, GW_ANON_ROLE);
	gw_jwt_free(&jwt);
	/* A role the authenticator may not switch to is refused by PostgreSQL when
	 * the settings statement runs, with PostgREST's answers: 401 22023 for a role
	 * that does not exist, 403 42501 for one not granted. pg_* roles are refused
	 * here the same way, without asking. */
	if (!strncmp(a->role, "pg_", 3))
	{
		gw_schema *s = gw_snapshot_schema(req->snapshot);
		if (!s || !gw_schema_role_allowed(s, a->role))
		{
			char msg[200];
			snprintf(msg, sizeof msg, "permission denied to set role \"%.100s\"", a->role);
			gw_error_set(e, 403, "42501", msg, NULL, NULL);
			return -1;
		}
	}
	return 0;
}

static void
cookies_json(const char *h, gw_buf *o)
{
	gw_buf_putc(o, '{');
	int first = 1;
	while (h && *h)
	{
		while (*h == ' ' || *h == ';')
			h++;
		const char *eq = strchr(h, '='), *end = strchr(h, ';');
		if (!end)
			end = h + strlen(h);
		if (!eq || eq > end)
		{
			h = end;
			continue;
		}
		if (!first)
			gw_buf_putc(o, ',');
		first = 0;
		gw_buf_json_strn(o, h, (size_t)(eq - h));
		gw_buf_putc(o, ':');
		gw_buf_json_strn(o, eq + 1, (size_t)(end - eq - 1));
		h = end;
	}
	gw_buf_putc(o, '}');
}

void
gw_auth_settings_sql(gw_req *req, const gw_auth *a, gw_buf *sql, gw_params *p)
{
	gw_buf headers;
	gw_buf_init(&headers);
	gw_buf_putc(&headers, '{');
	for (int i = 0; i < req->nheaders; i++)
	{
		int dup = 0; /* a repeated header keeps its first value, like a JSON object must */
		for (int j = 0; j < i; j++)
			dup |= !strcmp(req->headers[j].name, req->headers[i].name);
		if (dup)
			continue;
		if (headers.len > 1)
			gw_buf_putc(&headers, ',');
		gw_buf_json_str(&headers, req->headers[i].name);
		gw_buf_putc(&headers, ':');
		gw_buf_json_str(&headers, req->headers[i].value);
	}
	gw_buf_putc(&headers, '}');
	gw_buf cookies;
	gw_buf_init(&cookies);
	cookies_json(gw_req_header(req, "cookie"), &cookies);
	int r = gw_params_add(p, a->role);
	int c = gw_params_add(p, a->claims_json);
	int m = gw_params_add(p, req->method_name);
	int pa = gw_params_add(p, req->path);
	int h = gw_params_add(p, headers.data);
	int ck = gw_params_add(p, cookies.data);
	/* Beyond PostgREST: the peer address, for sessions (pod.login records it), and the
	 * request target as sent (raw path and query: what an HTTP signature covers). */
	int ip = gw_params_add(p, gw_req_peer(req));
	int tg = gw_params_add(p, req->target ? req->target : req->path);
	/* the usual case (the first parameters) is one constant text: no formatting,
	 * and the same statement for every request */
#define SETTINGS_SQL(r, c, m, pa, h, ck, ip, tg)                                                   \
	"SELECT pg_catalog.set_config('role', $" r ", true), "                                        \
	"pg_catalog.set_config('request.jwt.claims', $" c ", true),"                                  \
	" pg_catalog.set_config('request.method', $" m ", true), "                                    \
	"pg_catalog.set_config('request.path', $" pa ", true),"                                       \
	" pg_catalog.set_config('request.headers', $" h ", true), "                                   \
	"pg_catalog.set_config('request.cookies', $" ck ", true),"                                    \
	" pg_catalog.set_config('request.client_ip', $" ip ", true),"                                 \
	" pg_catalog.set_config('request.target', $" tg ", true),"                                    \
	" pg_catalog.set_config('search_path', 'api, public', true)"
	if (r == 1 && c == 2 && m == 3 && pa == 4 && h == 5 && ck == 6 && ip == 7 && tg == 8)
	{
		static const char first[] = SETTINGS_SQL("1", "2", "3", "4", "5", "6", "7", "8");
		gw_buf_append(sql, first, sizeof first - 1);
	}
	else
		gw_buf_printf(sql, SETTINGS_SQL("%d", "%d", "%d", "%d", "%d", "%d", "%d", "%d"), r, c, m, pa,
		              h, ck, ip, tg);
#undef SETTINGS_SQL
	gw_buf_free(&headers);
	gw_buf_free(&cookies);
}

