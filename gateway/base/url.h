/* Percent-decoding of URLs and form bodies into a request arena (see url.c). */
#ifndef GW_URL_H
#define GW_URL_H
#include <stddef.h>

#include "arena.h"

/* Percent-decodes (and + to space); fails on %00 and malformed escapes. */
char *gw_url_decode(gw_arena *a, const char *s, size_t n, int plus_is_space);

#endif
