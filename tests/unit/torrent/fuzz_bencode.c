/* libFuzzer target for extension/src/bencode.c and metainfo.c: any input is checked;
 * whatever passes is walked with the accessors and re-encoded, and a torrent that
 * parses is rebuilt and must parse again with the same fields. */
#include <stdlib.h>
#include <string.h>

#include "metainfo.h"

static void *
grow(void *old, size_t size)
{
	void *p = realloc(old, size);
	if (!p)
		abort();
	return p;
}

/* Re-encodes a checked value through the accessors: it must give the same bytes. */
static void
copy(be_span v, be_buf *out, int depth)
{
	long long i;
	const uint8_t *s;
	size_t n;
	if (depth > BE_MAX_DEPTH)
		abort();
	if (be_int(v, &i))
		be_put_int(out, i);
	else if (be_str(v, &s, &n))
		be_put_str(out, s, n);
	else if (be_is_list(v) || be_is_dict(v))
	{
		be_iter it;
		be_span k, e;
		be_put_raw(out, v.p, 1);
		be_iter_init(&it, v);
		while (be_iter_next(&it, &k, &e))
		{
			if (be_is_dict(v))
				copy(k, out, depth + 1);
			copy(e, out, depth + 1);
		}
		be_put_end(out);
	}
	else
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t used;
	if (be_check(data, size, &used) == NULL)
	{
		be_buf b = {NULL, 0, 0, grow};
		be_span v = {data, used};
		if (used == 0 || used > size)
			abort();
		copy(v, &b, 0);
		if (b.len != used || memcmp(b.data, data, used) != 0)
			abort();
		free(b.data);
	}
	mi_torrent t;
	if (mi_parse(data, size, &t) == NULL && t.file_count == 1 && t.piece_length >= 1)
	{
		char name[256];
		size_t nl = t.name_len < 255 ? t.name_len : 255;
		memcpy(name, t.name, nl);
		name[nl] = 0;
		if (strlen(name) != nl || nl == 0)
			return 0; /* a name with a NUL cannot round-trip through a C string */
		be_buf b = {NULL, 0, 0, grow};
		mi_build(&b, name, t.length, t.piece_length, t.pieces, (size_t)t.piece_count * 20, NULL, 0,
		         NULL, 0);
		mi_torrent u;
		if (mi_parse(b.data, b.len, &u) != NULL || u.length != t.length ||
		    u.piece_count != t.piece_count)
			abort();
		free(b.data);
	}
	return 0;
}
