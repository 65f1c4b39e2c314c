/* Published schema snapshots (see snapshot.h). */
#include "snapshot.h"

#include <stdlib.h>
#include <string.h>

gw_snapshot *
gw_snapshot_new(gw_schema *schema, const unsigned char *secret, size_t secret_len)
{
	gw_snapshot *s = calloc(1, sizeof *s);
	if (!s)
		abort();
	s->refs = 1;
	s->schema = schema;
	if (schema)
		gw_schema_ref(schema);
	if (secret_len > sizeof s->secret)
		secret_len = sizeof s->secret;
	if (secret_len)
		memcpy(s->secret, secret, secret_len);
	s->secret_len = secret_len;
	return s;
}

gw_snapshot *
gw_snapshot_ref(gw_snapshot *s)
{
	if (s)
		s->refs++;
	return s;
}

void
gw_snapshot_unref(gw_snapshot *s)
{
	if (!s || --s->refs > 0)
		return;
	if (s->schema)
		gw_schema_unref(s->schema);
	free(s);
}
