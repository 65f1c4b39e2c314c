/*
 * bencode.c — BEP 3 bencoding: a strict validating decoder working in place on the
 * caller's bytes, accessors over the spans it vouched for, and an encoder. No
 * allocation in the decoder; the encoder grows its buffer through the owner's
 * function (realloc in the daemon, repalloc in the backend).
 */
#include "bencode.h"

#include <stdio.h>
#include <string.h>

/* Parses a string's length prefix at p[0..n): digits then ':'; the digits' count
 * and the value. Leading zeros are refused ("0:" is the empty string). */
static const char *
str_header(const uint8_t *p, size_t n, size_t *hdr, size_t *slen)
{
	size_t i = 0;
	uint64_t v = 0;

	if (n == 0 || p[0] < '0' || p[0] > '9')
		return "a string length must start with a digit";
	if (p[0] == '0' && n > 1 && p[1] != ':')
		return "a string length has a leading zero";
	while (i < n && p[i] >= '0' && p[i] <= '9')
	{
		if (i >= 18)
			return "a string length is too large";
		v = v * 10 + (uint64_t)(p[i] - '0');
		i++;
	}
	if (i >= n || p[i] != ':')
		return "a string length must end with ':'";
	*hdr = i + 1;
	*slen = (size_t)v;
	if (v > n - *hdr)
		return "a string runs past the end of the data";
	return NULL;
}

/* Parses "i...e" at p[0..n): the value and the bytes used. */
static const char *
int_parse(const uint8_t *p, size_t n, long long *out, size_t *used)
{
	size_t i = 1;
	bool neg = false;
	unsigned long long v = 0;

	if (i < n && p[i] == '-')
	{
		neg = true;
		i++;
	}
	if (i >= n || p[i] < '0' || p[i] > '9')
		return "an integer has no digits";
	if (p[i] == '0' && (neg || (i + 1 < n && p[i + 1] != 'e')))
		return neg ? "an integer is negative zero" : "an integer has a leading zero";
	while (i < n && p[i] >= '0' && p[i] <= '9')
	{
		unsigned d = p[i] - '0';
		if (v > (9223372036854775807ULL - d) / 10)
			return "an integer is out of range";
		v = v * 10 + d;
		i++;
	}
	if (i >= n || p[i] != 'e')
		return "an integer must end with 'e'";
	*out = neg ? -(long long)v : (long long)v;
	*used = i + 1;
	return NULL;
}

static int
key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	if (c)
		return c;
	return an < bn ? -1 : an > bn;
}

static const char *
check(const uint8_t *p, size_t n, size_t *used, int depth)
{
	bool dict;
	size_t i = 1;
	const uint8_t *prev = NULL;
	size_t prevn = 0;

	if (n == 0)
		return "the data ends where a value was expected";
	if (p[0] == 'i')
	{
		long long v;
		return int_parse(p, n, &v, used);
	}
	if (p[0] >= '0' && p[0] <= '9')
	{
		size_t hdr, slen;
		const char *err = str_header(p, n, &hdr, &slen);
		if (err)
		{
			*used = 0;
			return err;
		}
		*used = hdr + slen;
		return NULL;
	}
	if (p[0] != 'l' && p[0] != 'd')
	{
		*used = 0;
		return "a value must start with 'i', 'l', 'd' or a digit";
	}
	if (depth >= BE_MAX_DEPTH)
	{
		*used = 0;
		return "values are nested too deeply";
	}
	dict = p[0] == 'd';
	for (;;)
	{
		size_t u = 0;
		const char *err;
		if (i >= n)
		{
			*used = i;
			return dict ? "a dictionary is not closed" : "a list is not closed";
		}
		if (p[i] == 'e')
		{
			*used = i + 1;
			return NULL;
		}
		if (dict)
		{
			size_t hdr, klen;
			if ((err = str_header(p + i, n - i, &hdr, &klen)))
			{
				*used = i;
				return p[i] >= '0' && p[i] <= '9' ? err : "a dictionary key must be a string";
			}
			if (prev && key_cmp(prev, prevn, p + i + hdr, klen) >= 0)
			{
				*used = i;
				return "dictionary keys are not in strictly ascending order";
			}
			prev = p + i + hdr;
			prevn = klen;
			i += hdr + klen;
		}
		if ((err = check(p + i, n - i, &u, depth + 1)))
		{
			*used = i + u;
			return err;
		}
		i += u;
	}
}

const char *
be_check(const uint8_t *buf, size_t len, size_t *used)
{
	size_t u = 0;
	const char *err = check(buf, len, &u, 0);
	*used = u;
	return err;
}

const char *
be_check_all(const uint8_t *buf, size_t len)
{
	size_t used;
	const char *err = be_check(buf, len, &used);
	if (err)
		return err;
	if (used != len)
		return "there are bytes after the value";
	return NULL;
}

/* The length of the (checked) value at p. */
static size_t
value_len(const uint8_t *p, size_t n)
{
	size_t used = 0;
	check(p, n, &used, 0);
	return used;
}

bool
be_is_dict(be_span v)
{
	return v.n >= 2 && v.p[0] == 'd';
}

bool
be_is_list(be_span v)
{
	return v.n >= 2 && v.p[0] == 'l';
}

bool
be_int(be_span v, long long *out)
{
	size_t used;
	return v.n >= 3 && v.p[0] == 'i' && int_parse(v.p, v.n, out, &used) == NULL;
}

bool
be_str(be_span v, const uint8_t **s, size_t *n)
{
	size_t hdr, slen;
	if (v.n == 0 || str_header(v.p, v.n, &hdr, &slen))
		return false;
	*s = v.p + hdr;
	*n = slen;
	return true;
}

void
be_iter_init(be_iter *it, be_span container)
{
	it->c = container;
	it->pos = 1;
}

bool
be_iter_next(be_iter *it, be_span *key, be_span *val)
{
	const uint8_t *p = it->c.p;
	size_t n = it->c.n;
	size_t vl;

	if (n < 2 || (p[0] != 'l' && p[0] != 'd') || it->pos >= n || p[it->pos] == 'e')
		return false;
	if (p[0] == 'd')
	{
		size_t kl = value_len(p + it->pos, n - it->pos);
		if (key)
		{
			key->p = p + it->pos;
			key->n = kl;
		}
		it->pos += kl;
	}
	else if (key)
	{
		key->p = NULL;
		key->n = 0;
	}
	vl = value_len(p + it->pos, n - it->pos);
	val->p = p + it->pos;
	val->n = vl;
	it->pos += vl;
	return vl > 0;
}

bool
be_dict_get(be_span dict, const char *key, be_span *val)
{
	be_iter it;
	be_span k, v;
	size_t kn = strlen(key);

	if (!be_is_dict(dict))
		return false;
	be_iter_init(&it, dict);
	while (be_iter_next(&it, &k, &v))
	{
		const uint8_t *s;
		size_t n;
		if (be_str(k, &s, &n) && n == kn && memcmp(s, key, kn) == 0)
		{
			*val = v;
			return true;
		}
	}
	return false;
}

/* --- encoding -------------------------------------------------------------------- */

void
be_put_raw(be_buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap)
	{
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		b->data = b->grow(b->data, cap);
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
be_put_int(be_buf *b, long long v)
{
	char tmp[32];
	int k = snprintf(tmp, sizeof tmp, "i%llde", v);
	be_put_raw(b, tmp, (size_t)k);
}

void
be_put_str(be_buf *b, const void *s, size_t n)
{
	char tmp[32];
	int k = snprintf(tmp, sizeof tmp, "%zu:", n);
	be_put_raw(b, tmp, (size_t)k);
	be_put_raw(b, s, n);
}

void
be_put_cstr(be_buf *b, const char *s)
{
	be_put_str(b, s, strlen(s));
}

void
be_put_open_list(be_buf *b)
{
	be_put_raw(b, "l", 1);
}

void
be_put_open_dict(be_buf *b)
{
	be_put_raw(b, "d", 1);
}

void
be_put_end(be_buf *b)
{
	be_put_raw(b, "e", 1);
}
