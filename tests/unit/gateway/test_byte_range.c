/* Unit tests of the byte-range parser (gateway/byte_range.c). */
#include "byte_range.h"
#include "tap.h"

static int
range(const char *h, long long size, long long *s, long long *l)
{
	*s = *l = -7;
	return gw_parse_byte_range(h, size, s, l);
}

TAP_TEST(test_byte_range)
{
	long long s, l;
	ok(range("bytes=0-99", 1000, &s, &l) == 1 && s == 0 && l == 100, "first-last");
	ok(range("bytes=100-", 1000, &s, &l) == 1 && s == 100 && l == 900, "first- to the end");
	ok(range("bytes=-10", 1000, &s, &l) == 1 && s == 990 && l == 10, "suffix");
	ok(range("bytes=-5000", 1000, &s, &l) == 1 && s == 0 && l == 1000,
	   "suffix longer than the file");
	ok(range("bytes=900-5000", 1000, &s, &l) == 1 && s == 900 && l == 100,
	   "last past the end is clipped");
	ok(range("bytes=999-999", 1000, &s, &l) == 1 && s == 999 && l == 1, "last byte");
	ok(range("bytes=1000-", 1000, &s, &l) == -1, "first at the size: unsatisfiable");
	ok(range("bytes=-0", 1000, &s, &l) == -1, "empty suffix: unsatisfiable");
	ok(range("bytes=0-", 0, &s, &l) == -1, "any range of an empty file: unsatisfiable");
	ok(range("bytes=5-4", 1000, &s, &l) == 0, "last before first: ignored (whole file)");
	ok(range("bytes=0-1,5-6", 1000, &s, &l) == 0, "several ranges: whole file");
	ok(range("items=0-1", 1000, &s, &l) == 0, "other unit: whole file");
	ok(range("bytes=x-1", 1000, &s, &l) == 0, "garbage: whole file");
	ok(range(NULL, 1000, &s, &l) == 0, "no header: whole file");
	ok(range("bytes=99999999999999999999-", 1000, &s, &l) != 1,
	   "overflowing number is not a range");

	gw_byte_range r[4];
	ok(gw_parse_byte_ranges("bytes=0-1, 500-599", 1000, r, 4) == 2 && r[0].start == 0 &&
	       r[0].len == 2 && r[1].start == 500 && r[1].len == 100,
	   "two ranges");
	ok(gw_parse_byte_ranges("bytes=500-599,0-1", 1000, r, 4) == 2 && r[0].start == 0,
	   "ranges are sorted");
	ok(gw_parse_byte_ranges("bytes=0-99,50-150,-10", 1000, r, 4) == 2 && r[0].len == 151 &&
	       r[1].start == 990,
	   "overlapping ranges are coalesced");
	ok(gw_parse_byte_ranges("bytes=0-9,20-29", 1000, r, 4) == 1 && r[0].len == 30,
	   "ranges closer than a part header become one");
	ok(gw_parse_byte_ranges("bytes=2000-,0-1", 1000, r, 4) == 1 && r[0].len == 2,
	   "an unsatisfiable range among others is dropped");
	ok(gw_parse_byte_ranges("bytes=2000-,3000-3001", 1000, r, 4) == -1, "none satisfiable: 416");
	ok(gw_parse_byte_ranges("bytes=0-1,x", 1000, r, 4) == 0, "a malformed spec: whole file");
	ok(gw_parse_byte_ranges("bytes=0-1,200-201,400-401,600-601,800-801", 1000, r, 4) == 0,
	   "more ranges than allowed: whole file");
	ok(gw_parse_byte_ranges(NULL, 1000, r, 4) == 0, "no header: whole file");
}
