/* What the gateway adds to workers/lib's buffer, and bound-parameter lists (see
 * buf.h). Allocation failure aborts: the gateway cannot answer anything sensible without memory, and every
 * caller would otherwise need a path that cannot be tested. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
	{
		wk_log(WK_ERROR, "out of memory (%zu bytes)", n);
		abort();
	}
	return q;
}

void
gw_buf_put_long(gw_buf *b, long long v)
{
	char tmp[24], *e = tmp + sizeof tmp, *p = e;
	unsigned long long u = v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v;
	do
		*--p = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--p = '-';
	gw_buf_append(b, p, (size_t)(e - p));
}

void
gw_buf_ident(gw_buf *b, const char *s)
{
	gw_buf_putc(b, '"');
	for (; *s; s++)
	{
		if (*s == '"')
			gw_buf_putc(b, '"');
		gw_buf_putc(b, *s);
	}
	gw_buf_putc(b, '"');
}

/* Length of the valid UTF-8 sequence at s (lead byte >= 0x80), or 0. */
static size_t
utf8_length(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned min;
	unsigned cp;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
	{
		len = 2;
		min = 0x80;
		cp = s[0] & 0x1f;
	}
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
	{
		len = 3;
		min = 0x800;
		cp = s[0] & 0x0f;
	}
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
	{
		len = 4;
		min = 0x10000;
		cp = s[0] & 0x07;
	}
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++)
	{
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void
gw_buf_json_strn(gw_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	gw_buf_putc(b, '"');
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char)s[i];
		switch (c)
		{
		case '"':
			gw_buf_puts(b, "\\\"");
			break;
		case '\\':
			gw_buf_puts(b, "\\\\");
			break;
		case '\n':
			gw_buf_puts(b, "\\n");
			break;
		case '\r':
			gw_buf_puts(b, "\\r");
			break;
		case '\t':
			gw_buf_puts(b, "\\t");
			break;
		default:
			if (c < 0x20)
			{
				char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
				gw_buf_puts(b, u);
			}
			else if (c < 0x80)
				gw_buf_putc(b, (char)c);
			else
			{
				/* JSON text must be UTF-8 (PostgreSQL refuses anything else, and
				 * headers may be Latin-1): keep valid sequences, replace the rest */
				size_t len = utf8_length((const unsigned char *)s + i, n - i);
				if (len)
				{
					gw_buf_append(b, s + i, len);
					i += len - 1;
				}
				else
					gw_buf_puts(b, "\\ufffd");
			}
		}
	}
	gw_buf_putc(b, '"');
}

void
gw_buf_json_str(gw_buf *b, const char *s)
{
	if (!s)
		gw_buf_puts(b, "null");
	else
		gw_buf_json_strn(b, s, strlen(s));
}

char *
gw_buf_steal(gw_buf *b)
{
	char *d = b->data;
	if (!d)
		d = calloc(1, 1);
	gw_buf_init(b);
	return d;
}

void
gw_params_init(gw_params *p)
{
	memset(p, 0, sizeof *p);
}

void
gw_params_free(gw_params *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->values[i]);
	free(p->values); /* one block with lengths, formats and types (push) */
	gw_params_init(p);
}

static int
push(gw_params *p, char *v, int len, int format, unsigned type)
{
	if (p->n == p->cap)
	{
		/* the four arrays in one allocation: one malloc, not four */
		int cap = p->cap ? p->cap * 2 : 8;
		size_t n = (size_t)cap;
		char *block = xrealloc(NULL, (sizeof(char *) + 2 * sizeof(int) + sizeof(unsigned)) * n);
		char **values = (char **)block;
		int *lengths = (int *)(block + sizeof(char *) * n);
		int *formats = lengths + n;
		unsigned *types = (unsigned *)(formats + n);
		if (p->n)
		{
			memcpy(values, p->values, sizeof(char *) * (size_t)p->n);
			memcpy(lengths, p->lengths, sizeof(int) * (size_t)p->n);
			memcpy(formats, p->formats, sizeof(int) * (size_t)p->n);
			memcpy(types, p->types, sizeof(unsigned) * (size_t)p->n);
		}
		free(p->values);
		p->values = values;
		p->lengths = lengths;
		p->formats = formats;
		p->types = types;
		p->cap = cap;
	}
	p->values[p->n] = v;
	p->lengths[p->n] = len;
	p->formats[p->n] = format;
	p->types[p->n] = type;
	return ++p->n;
}

int
gw_params_addn(gw_params *p, const char *value, size_t n)
{
	char *v = NULL;
	if (value)
	{
		v = xrealloc(NULL, n + 1);
		memcpy(v, value, n);
		v[n] = '\0';
	}
	return push(p, v, 0, 0, 0);
}

int
gw_params_add(gw_params *p, const char *value)
{
	return gw_params_addn(p, value, value ? strlen(value) : 0);
}

int
gw_params_add_binary(gw_params *p, const void *data, size_t n, unsigned type_oid)
{
	char *v = xrealloc(NULL, n + 1);
	if (n)
		memcpy(v, data, n);
	v[n] = '\0';
	return push(p, v, (int)n, 1, type_oid);
}
