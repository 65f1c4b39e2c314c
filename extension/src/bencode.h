/*
 * bencode.h — BitTorrent's bencoding (BEP 3): a validating decoder that works in place
 * (no allocation: values are spans of the input) and an encoder into a growable
 * buffer. Plain C with no PostgreSQL header, so the extension, the seeder daemon, the
 * unit tests and the fuzzer share this one implementation.
 */
#ifndef PGPOD_BENCODE_H
#define PGPOD_BENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this is refused (no real torrent comes close). */
#define BE_MAX_DEPTH 64

/* A bencoded value: its bytes in the caller's buffer. */
typedef struct be_span
{
	const uint8_t *p;
	size_t n;
} be_span;

/* Checks that buf starts with one well-formed value (integers without leading zeros
 * or "-0", string lengths within the buffer, dictionary keys strictly ascending,
 * depth bounded); its length goes to *used. Returns NULL when valid, else a static
 * message naming what is wrong (and *used is the offset where it was found). */
const char *be_check(const uint8_t *buf, size_t len, size_t *used);
/* The same for a whole buffer: exactly one value, nothing after it. */
const char *be_check_all(const uint8_t *buf, size_t len);

/* Accessors for spans of checked input. */
bool be_is_dict(be_span v);
bool be_is_list(be_span v);
bool be_int(be_span v, long long *out);
bool be_str(be_span v, const uint8_t **s, size_t *n);
/* Looks a key up in a dictionary. */
bool be_dict_get(be_span dict, const char *key, be_span *val);

/* Walks a list (key stays NULL) or a dictionary (key gets each key's string). */
typedef struct be_iter
{
	be_span c;  /* the container */
	size_t pos; /* offset of the next element */
} be_iter;
void be_iter_init(be_iter *it, be_span container);
bool be_iter_next(be_iter *it, be_span *key, be_span *val);

/* --- encoding ----------------------------------------------------------------------
 * A growable output buffer; grow (realloc or PostgreSQL's repalloc) is given by its
 * owner and must not return NULL (it aborts or raises instead). */
typedef struct be_buf
{
	uint8_t *data;
	size_t len;
	size_t cap;
	void *(*grow)(void *old, size_t size);
} be_buf;

void be_put_raw(be_buf *b, const void *p, size_t n);
void be_put_int(be_buf *b, long long v);
void be_put_str(be_buf *b, const void *s, size_t n);
void be_put_cstr(be_buf *b, const char *s);
void be_put_open_list(be_buf *b);
void be_put_open_dict(be_buf *b);
void be_put_end(be_buf *b);

#endif
