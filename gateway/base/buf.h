/* Growable byte buffers and bound-parameter lists: the two things every SQL and
 * HTTP builder in the gateway appends to. A gw_buf is workers/lib's wk_buf (one
 * buffer for the gateway and the daemons), always NUL-terminated once anything was
 * added; the gateway adds SQL identifiers, JSON strings and numbers to it. A
 * gw_params owns copies of its values (NULL means SQL NULL). */
#ifndef GW_BUF_H
#define GW_BUF_H
#include <stdarg.h>
#include <stddef.h>

#include "worker.h"

typedef wk_buf gw_buf;

static inline void
gw_buf_init(gw_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}
static inline void
gw_buf_free(gw_buf *b)
{
	wk_buf_free(b);
}
static inline void
gw_buf_reset(gw_buf *b)
{
	wk_buf_reset(b);
}
static inline void
gw_buf_append(gw_buf *b, const char *s, size_t n)
{
	wk_buf_add(b, s, n);
}
static inline void
gw_buf_puts(gw_buf *b, const char *s)
{
	wk_buf_adds(b, s);
}
static inline void
gw_buf_putc(gw_buf *b, char c)
{
	wk_buf_reserve(b, 1);
	b->data[b->len++] = c;
	b->data[b->len] = '\0';
}
#define gw_buf_printf wk_buf_printf
/* Appends v in decimal, as printf("%lld") would. */
void gw_buf_put_long(gw_buf *b, long long v);
/* Appends s as a double-quoted SQL identifier ("a""b"). */
void gw_buf_ident(gw_buf *b, const char *s);
/* Appends s as a JSON string literal with quotes; NULL appends null. */
void gw_buf_json_str(gw_buf *b, const char *s);
void gw_buf_json_strn(gw_buf *b, const char *s, size_t n);
/* Detaches the data (caller frees) and leaves b empty. */
char *gw_buf_steal(gw_buf *b);

typedef struct gw_params
{
	char **values;
	int *lengths;    /* used for binary params only */
	int *formats;    /* 0 text, 1 binary */
	unsigned *types; /* 0 = let the server infer */
	int n;
	int cap;
} gw_params;

void gw_params_init(gw_params *p);
void gw_params_free(gw_params *p);
/* Adds a text value (copied; NULL = SQL NULL) and returns its $number. */
int gw_params_add(gw_params *p, const char *value);
int gw_params_addn(gw_params *p, const char *value, size_t n);
/* Adds a binary value of the given type oid (copied) and returns its $number. */
int gw_params_add_binary(gw_params *p, const void *data, size_t n, unsigned type_oid);

#endif
