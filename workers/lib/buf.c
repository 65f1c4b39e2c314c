/*
 * buf.c — growable strings for building queries and bodies, PostgreSQL array
 * literals (how a daemon passes a batch of ids or errors in one parameter), and
 * integer settings from the environment. Allocation failure aborts: a daemon that
 * cannot allocate a few bytes cannot report anything either.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

void
wk_buf_reserve(wk_buf *b, size_t more)
{
	size_t need = b->len + more + 1;

	if (need <= b->cap)
		return;
	/* 512: a gateway statement or a daemon's query fits at once, without doubling */
	b->cap = b->cap ? b->cap : 512;
	while (b->cap < need)
		b->cap *= 2;
	b->data = realloc(b->data, b->cap);
	if (b->data == NULL)
	{
		wk_log(WK_ERROR, "out of memory (%zu bytes)", b->cap);
		abort();
	}
}

void
wk_buf_add(wk_buf *b, const char *s, size_t n)
{
	wk_buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
wk_buf_adds(wk_buf *b, const char *s)
{
	wk_buf_add(b, s, strlen(s));
}

void
wk_buf_printf(wk_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	size_t room;

	/* formatted once into the room there is, again only when it did not fit */
	wk_buf_reserve(b, 64);
	room = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0)
	{
		b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= room)
	{
		wk_buf_reserve(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void
wk_buf_reset(wk_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void
wk_buf_free(wk_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
wk_array_begin(wk_buf *b)
{
	wk_buf_reset(b);
	wk_buf_adds(b, "{");
}

/* Every element is double-quoted, with " and \ escaped, so any text is safe. */
void
wk_array_add(wk_buf *b, const char *element)
{
	if (b->len > 1)
		wk_buf_adds(b, ",");
	if (element == NULL)
	{
		wk_buf_adds(b, "NULL");
		return;
	}
	wk_buf_adds(b, "\"");
	for (const char *p = element; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			wk_buf_add(b, "\\", 1);
		wk_buf_add(b, p, 1);
	}
	wk_buf_adds(b, "\"");
}

void
wk_array_end(wk_buf *b)
{
	wk_buf_adds(b, "}");
}

long
wk_env_long(const char *name, long fallback, long min, long max)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return fallback;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
	{
		wk_log(WK_WARN, "%s=%s is not an integer in [%ld, %ld]; using %ld", name, s, min, max,
		       fallback);
		return fallback;
	}
	return v;
}
