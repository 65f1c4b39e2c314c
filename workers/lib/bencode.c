/*
 * bencode.c — writing bencoded values (BEP 3) into a wk_buf: integers, byte strings,
 * and the d/l/e markers. The caller orders dictionary keys (bencode wants them
 * sorted as raw byte strings). There is one bencoder in pgpod, the extension's
 * (extension/src/bencode.c, plain C, built into this library as lib/ext_bencode.o):
 * these calls lend it the wk_buf's memory (both grow with realloc) and keep the
 * wk_buf's NUL terminator. Decoding is the extension's too (be_check, be_dict_get).
 */
#include <stdlib.h>
#include <string.h>

#include "../../extension/src/bencode.h"
#include "worker.h"

/* be_buf's capacity is the wk_buf's minus the byte kept for the terminator. */
static void *
grow(void *old, size_t size)
{
	void *p = realloc(old, size + 1);

	if (p == NULL)
	{
		wk_log(WK_ERROR, "out of memory");
		abort();
	}
	return p;
}

static be_buf
lend(wk_buf *b)
{
	return (be_buf){ .data = (uint8_t *)b->data, .len = b->len, .cap = b->cap ? b->cap - 1 : 0, .grow = grow };
}

static void
take_back(wk_buf *b, const be_buf *e)
{
	b->data = (char *)e->data;
	b->len = e->len;
	b->cap = e->cap + 1;
	b->data[b->len] = '\0';
}

void
wk_benc_int(wk_buf *b, int64_t v)
{
	be_buf e = lend(b);

	be_put_int(&e, (long long)v);
	take_back(b, &e);
}

void
wk_benc_str(wk_buf *b, const void *s, size_t len)
{
	be_buf e = lend(b);

	be_put_str(&e, s, len);
	take_back(b, &e);
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
