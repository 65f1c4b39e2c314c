/* GET / : a Swagger 2.0 description of schema api, made from the schema cache
 * (as PostgREST serves it). */
#ifndef GW_OPENAPI_H
#define GW_OPENAPI_H
#include "error.h"
#include "http.h"
#include "schema.h"

void gw_openapi_handle(gw_req *req);
void gw_openapi_render(const gw_schema *s, gw_buf *out);

#endif
