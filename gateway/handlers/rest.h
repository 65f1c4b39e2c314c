/* PostgREST-style handling of /<relation> and /rpc/<function>: the request read
 * by the dialect (postgrest/request.h), the statement from sql_build.c, one
 * pipelined transaction from pool.c, and the answer of postgrest/response.h's
 * function for the action. GET / (OpenAPI) likewise. */
#ifndef GW_REST_H
#define GW_REST_H
#include "error.h"
#include "http.h"

void gw_rest_handle(gw_req *req, const char *name, int is_rpc);
/* GET /: the OpenAPI document of the request's schema snapshot. */
void gw_openapi_handle(gw_req *req);

#endif
