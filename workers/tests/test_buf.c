/*
 * test_buf.c — unit tests of workers/lib/buf.c: array literals (what carries a batch
 * of ids and error texts to PostgreSQL) and integer settings from the environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker.h"

#include "tap.h"

#define is(got, want, name) is_str(got, want, "%s", name)

int
main(void)
{
	wk_buf b = {0};
	char num[32];

	wk_log_init("test_buf");
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

	/* env.c: string settings and choices, a bad value beside good ones */
	static const char *const modes[] = {"commit", "rollback", NULL};
	unsetenv("WK_TEST_S");
	is(wk_env_str("WK_TEST_S", "dflt"), "dflt", "an unset string setting is the default");
	setenv("WK_TEST_S", "", 1);
	is(wk_env_str("WK_TEST_S", "dflt"), "dflt", "an empty one too");
	setenv("WK_TEST_S", "x y", 1);
	is(wk_env_str("WK_TEST_S", "dflt"), "x y", "a set one is read as it is");
	setenv("WK_TEST_S", "rollback", 1);
	ok(wk_env_choice("WK_TEST_S", modes, 0) == 1, "a choice is read");
	setenv("WK_TEST_S", "Rollback", 1);
	ok(wk_env_choice("WK_TEST_S", modes, 0) == 0, "a value that is none of the choices: the default");
	unsetenv("WK_TEST_S");
	ok(wk_env_choice("WK_TEST_S", modes, 1) == 1, "an unset choice: the default");

	/* backoff.c: 0.1 s, doubling, capped at 5 s */
	double d = 0;
	wk_buf_reset(&b);
	for (int i = 0; i < 8; i++)
		wk_buf_printf(&b, "%s%g", i ? " " : "", d = wk_backoff_next(d));
	is(b.data, "0.1 0.2 0.4 0.8 1.6 3.2 5 5", "the one backoff: 0.1 s doubling to 5 s");
	wk_buf_free(&b);

	/* buf.c: printf longer than the room there is, reserve */
	wk_buf_printf(&b, "%0600d", 7);
	ok(b.len == 600 && b.data[599] == '7' && b.data[600] == '\0', "a printf longer than the first room");
	wk_buf_reserve(&b, 5000);
	ok(b.cap >= 5601 && b.len == 600, "reserve makes room and keeps the content");
	wk_buf_free(&b);
	return tap_done();
}
