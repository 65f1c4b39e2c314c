/* Parsing of a single HTTP byte range (see byte_range.c). */
#ifndef GW_BYTE_RANGE_H
#define GW_BYTE_RANGE_H

/* Parses "bytes=a-b" for a file of size; 1 range, 0 whole file, -1 unsatisfiable. */
int gw_parse_byte_range(const char *h, long long size, long long *start, long long *len);

/* Several ranges: "bytes=a-b, c-, -n" for a file of size. Satisfiable ranges are
 * sorted and coalesced when they overlap or lie closer than GW_RANGE_GAP bytes
 * (RFC 9110 14.6). Returns the number of ranges (1..max) in out, 0 when the header
 * is absent, malformed or asks for more than max ranges (send the whole file), -1
 * when no range is satisfiable (416). */
#define GW_RANGE_GAP 80
typedef struct gw_byte_range
{
	long long start, len;
} gw_byte_range;
int gw_parse_byte_ranges(const char *h, long long size, gw_byte_range *out, int max);

#endif
