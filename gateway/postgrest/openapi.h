/* GET / : a Swagger 2.0 description of schema api, made from the schema cache
 * (as PostgREST serves it). Pure: its answer is response.h's gw_response_openapi,
 * sent by the handler (handlers/rest.c). */
#ifndef GW_OPENAPI_H
#define GW_OPENAPI_H
#include "buf.h"
#include "schema.h"

void gw_openapi_render(const gw_schema *s, gw_buf *out);

#endif
