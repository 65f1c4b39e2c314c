/* Parsing of a single HTTP byte range (see byte_range.c). */
#ifndef GW_BYTE_RANGE_H
#define GW_BYTE_RANGE_H

/* Parses "bytes=a-b" for a file of size; 1 range, 0 whole file, -1 unsatisfiable. */
int gw_parse_byte_range(const char *h, long long size, long long *start, long long *len);

#endif
