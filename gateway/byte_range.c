/* The Range header of blob downloads: one "bytes=" range (first-last, first-,
 * -suffix) against a file size. Pure, so the unit tests and the fuzzer reach it;
 * several ranges are answered with the whole file, as RFC 9110 allows. */
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
