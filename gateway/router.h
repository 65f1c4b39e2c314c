/* Request routing: which handler owns a path. The transport calls it through
 * these gw_http_handlers (main.c registers them). */
#ifndef GW_ROUTER_H
#define GW_ROUTER_H
#include "http.h"

extern const gw_http_handlers gw_router;

#endif
