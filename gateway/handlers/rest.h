/* PostgREST-style handling of /<relation> and /rpc/<function>: request
 * headers to a gw_request_shape, the statement from sql_build.c, one pipelined
 * transaction from pool.c, and PostgREST's statuses and headers back. */
#ifndef GW_REST_H
#define GW_REST_H
#include "error.h"
#include "http.h"

void gw_rest_handle(gw_req *req, const char *name, int is_rpc);

#endif
