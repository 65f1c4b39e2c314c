/*
 * test_buf.c — unit tests of workers/lib/buf.c: array literals (what carries a batch
 * of ids and error texts to PostgreSQL) and integer settings from the environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

static int failures, count;

static void
is(const char *got, const char *want, const char *name)
{
	count++;
	if (strcmp(got, want) == 0)
		printf("ok %d - %s\n", count, name);
	else
	{
		failures++;
		printf("not ok %d - %s\n#   got:  %s\n#   want: %s\n", count, name, got, want);
	}
}

int
main(void)
{
	wk_buf b = {0};
	char num[32];

	wk_log_init("test_buf");
	printf("1..6\n");
	wk_array_begin(&b);
	wk_array_end(&b);
	is(b.data, "{}", "empty array literal");
	wk_array_begin(&b);
	wk_array_add(&b, "1");
	wk_array_add(&b, "22");
	wk_array_end(&b);
	is(b.data, "{\"1\",\"22\"}", "elements are quoted");
	wk_array_begin(&b);
	wk_array_add(&b, "HTTP 500: \"oops\" \\ {x,y}");
	wk_array_add(&b, NULL);
	wk_array_end(&b);
	is(b.data, "{\"HTTP 500: \\\"oops\\\" \\\\ {x,y}\",NULL}",
	   "quotes and backslashes are escaped; NULL stays NULL");
	wk_buf_reset(&b);
	wk_buf_printf(&b, "%s-%d", "a", 7);
	is(b.data, "a-7", "printf appends");
	setenv("WK_TEST_N", "12", 1);
	snprintf(num, sizeof(num), "%ld", wk_env_long("WK_TEST_N", 5, 1, 100));
	is(num, "12", "an integer setting is read");
	setenv("WK_TEST_N", "12x", 1);
	snprintf(num, sizeof(num), "%ld", wk_env_long("WK_TEST_N", 5, 1, 100));
	is(num, "5", "an invalid one falls back to the default");
	wk_buf_free(&b);
	return failures != 0;
}
