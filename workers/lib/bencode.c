/*
 * bencode.c — writing bencoded values (BEP 3) into a wk_buf: integers, byte strings,
 * and the d/l/e markers. The caller orders dictionary keys (bencode wants them
 * sorted as raw byte strings). Decoding lives in the extension, where SQL needs it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "worker.h"

void
wk_benc_int(wk_buf *b, int64_t v)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "i%" PRId64 "e", v);

	wk_buf_add(b, tmp, (size_t)n);
}

void
wk_benc_str(wk_buf *b, const void *s, size_t len)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%zu:", len);

	wk_buf_add(b, tmp, (size_t)n);
	if (len)
		wk_buf_add(b, s, len);
}

void
wk_benc_strz(wk_buf *b, const char *s)
{
	wk_benc_str(b, s, strlen(s));
}

void
wk_benc_key_int(wk_buf *b, const char *key, int64_t v)
{
	wk_benc_strz(b, key);
	wk_benc_int(b, v);
}
