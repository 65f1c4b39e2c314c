/*
 * tap.c — the counters and the test registry of tap.h.
 */
#include <stdlib.h>
#include <string.h>

#include "tap.h"

int tap_n, tap_failed;

static struct
{
	const char *name;
	void (*fn)(void);
} tests[64];
static int ntests;

void
tap_register(const char *name, void (*fn)(void))
{
	if (ntests == (int)(sizeof tests / sizeof *tests))
		abort();
	tests[ntests].name = name;
	tests[ntests++].fn = fn;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int
tap_main(void)
{
	qsort(tests, (size_t)ntests, sizeof *tests, by_name);
	for (int i = 0; i < ntests; i++)
	{
		printf("# %s\n", tests[i].name);
		tests[i].fn();
	}
	return tap_done();
}

int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	if (tap_failed)
		printf("# %d of %d failed\n", tap_failed, tap_n);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}
