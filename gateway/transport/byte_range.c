/* The Range header of blob downloads: "bytes=" ranges (first-last, first-,
 * -suffix) against a file size. Pure, so the unit tests and the fuzzer reach it. */
#include <stdlib.h>
#include <string.h>

#include "byte_range.h"

int
gw_parse_byte_range(const char *h, long long size, long long *start, long long *len)
{
	if (!h || strncmp(h, "bytes=", 6) || strchr(h, ','))
		return 0;
	h += 6;
	char *end;
	if (*h == '-')
	{
		long long n = strtoll(h + 1, &end, 10);
		if (end == h + 1 || *end || n <= 0)
			return size ? -1 : 0;
		if (n > size)
			n = size;
		if (!size)
			return -1;
		*start = size - n;
		*len = n;
		return 1;
	}
	long long a = strtoll(h, &end, 10);
	if (end == h || *end != '-' || a < 0)
		return 0;
	const char *b = end + 1;
	long long last = size - 1;
	if (*b)
	{
		last = strtoll(b, &end, 10);
		if (end == b || *end || last < a)
			return 0;
		if (last > size - 1)
			last = size - 1;
	}
	if (a >= size)
		return -1;
	*start = a;
	*len = last - a + 1;
	return 1;
}

/* One range-spec between p and e; 1 satisfiable, 0 unsatisfiable, -1 malformed. */
static int
one_spec(const char *p, const char *e, long long size, gw_byte_range *r)
{
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	char buf[48];
	size_t n = (size_t)(e - p);
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	char *end;
	if (buf[0] == '-')
	{
		if (buf[1] < '0' || buf[1] > '9')
			return -1;
		long long k = strtoll(buf + 1, &end, 10);
		if (*end || k < 0)
			return -1;
		if (k == 0 || size == 0)
			return 0;
		if (k > size)
			k = size;
		r->start = size - k;
		r->len = k;
		return 1;
	}
	if (buf[0] < '0' || buf[0] > '9')
		return -1;
	long long a = strtoll(buf, &end, 10);
	if (*end != '-' || a < 0)
		return -1;
	const char *b = end + 1;
	long long last = size - 1;
	if (*b)
	{
		if (*b < '0' || *b > '9')
			return -1;
		last = strtoll(b, &end, 10);
		if (*end || last < a)
			return -1;
		if (last > size - 1)
			last = size - 1;
	}
	if (a >= size)
		return 0;
	r->start = a;
	r->len = last - a + 1;
	return 1;
}

int
gw_parse_byte_ranges(const char *h, long long size, gw_byte_range *out, int max)
{
	if (!h || strncmp(h, "bytes=", 6) || max < 1)
		return 0;
	h += 6;
	int n = 0, specs = 0;
	for (;;)
	{
		const char *e = strchr(h, ',');
		if (!e)
			e = h + strlen(h);
		gw_byte_range r;
		int rc = one_spec(h, e, size, &r);
		if (rc < 0 || ++specs > max)
			return 0;
		if (rc == 1)
			out[n++] = r;
		if (!*e)
			break;
		h = e + 1;
	}
	if (!n)
		return -1;
	/* sort by start (insertion: max is small), then coalesce */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && out[j].start < out[j - 1].start; j--)
		{
			gw_byte_range t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	int m = 0;
	for (int i = 1; i < n; i++)
	{
		long long end = out[m].start + out[m].len;
		if (out[i].start <= end + GW_RANGE_GAP)
		{
			long long e2 = out[i].start + out[i].len;
			if (e2 > end)
				out[m].len = e2 - out[m].start;
		}
		else
			out[++m] = out[i];
	}
	return m + 1;
}
