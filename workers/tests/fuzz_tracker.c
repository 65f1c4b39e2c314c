/*
 * fuzz_tracker.c — libFuzzer over the tracker's parsers of untrusted bytes: the
 * HTTP announce and scrape query strings and WebSocket client frames. Each must
 * return a result or a reason, never read or write out of bounds.
 */
#include <stdlib.h>
#include <string.h>

#include "tracker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tk_announce a;
	uint8_t hashes[8 * TK_HASH_LEN];
	const char *why = NULL;
	uint8_t *copy = malloc(size + 1);
	size_t off = 0;

	(void)tk_parse_announce((const char *)data, size, &a, 200);
	(void)tk_parse_scrape((const char *)data, size, hashes, 8, &why);
	memcpy(copy, data, size);
	while (off < size)
	{
		tk_ws_frame f;
		long used = tk_ws_parse(copy + off, size - off, 1024, &f, &why);

		if (used <= 0)
			break;
		if (f.len > (uint64_t)used)
			abort();
		off += (size_t)used;
	}
	free(copy);
	return 0;
}
