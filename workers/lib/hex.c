/*
 * hex.c — hexadecimal text to bytes (PostgreSQL's bytea and encode(..., 'hex') output),
 * for daemons that read binary columns in text results.
 */
#include "worker.h"

int
wk_hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool
wk_hex_decode(uint8_t *out, const char *hex, size_t n)
{
	for (size_t i = 0; i < n; i++)
	{
		int hi = wk_hex_digit((unsigned char)hex[2 * i]), lo = wk_hex_digit((unsigned char)hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}
