/* What the listener publishes after each load (see listener.h): the schema cache
 * and the JWT secret, together and immutable. A request takes a reference when its
 * head arrives and drops it when it ends, so everything it parses, builds and
 * answers (statement, Location, Content-Range) comes from one schema even when a
 * reload publishes another meanwhile. */
#ifndef GW_SNAPSHOT_H
#define GW_SNAPSHOT_H
#include <stddef.h>

#include "schema.h"

typedef struct gw_snapshot
{
	int refs;
	gw_schema *schema; /* NULL until a load succeeded */
	size_t secret_len; /* 0: no secret read yet */
	unsigned char secret[512];
} gw_snapshot;

/* A new snapshot (one reference) holding a reference on schema (may be NULL). */
gw_snapshot *gw_snapshot_new(gw_schema *schema, const unsigned char *secret, size_t secret_len);
gw_snapshot *gw_snapshot_ref(gw_snapshot *s); /* NULL stays NULL */
void gw_snapshot_unref(gw_snapshot *s);
/* NULL-safe readers. */
static inline gw_schema *
gw_snapshot_schema(const gw_snapshot *s)
{
	return s ? s->schema : NULL;
}
static inline const unsigned char *
gw_snapshot_secret(const gw_snapshot *s, size_t *len)
{
	*len = s ? s->secret_len : 0;
	return s && s->secret_len ? s->secret : NULL;
}

#endif
