/* A minimal TAP producer for the gateway's C unit tests: ok(), is_str(), and a
 * plan printed at the end by test_main.c. */
#ifndef GW_TAP_H
#define GW_TAP_H
#include <stdio.h>
#include <string.h>

extern int tap_n, tap_failed;

#define ok(cond, ...)                                                                              \
	do                                                                                             \
	{                                                                                              \
		int ok_ = !!(cond);                                                                        \
		tap_n++;                                                                                   \
		if (!ok_)                                                                                  \
			tap_failed++;                                                                          \
		printf("%sok %d - ", ok_ ? "" : "not ", tap_n);                                            \
		printf(__VA_ARGS__);                                                                       \
		printf("\n");                                                                              \
		if (!ok_)                                                                                  \
			printf("#   failed at %s:%d\n", __FILE__, __LINE__);                                   \
	} while (0)

#define is_str(got, want, ...)                                                                     \
	do                                                                                             \
	{                                                                                              \
		const char *g_ = (got), *w_ = (want);                                                      \
		int same_ = (g_ && w_) ? !strcmp(g_, w_) : g_ == w_;                                       \
		ok(same_, __VA_ARGS__);                                                                    \
		if (!same_)                                                                                \
			printf("#        got: %s\n#   expected: %s\n", g_ ? g_ : "(null)",                     \
			       w_ ? w_ : "(null)");                                                            \
	} while (0)

#define contains(got, needle, ...)                                                                 \
	do                                                                                             \
	{                                                                                              \
		const char *g_ = (got);                                                                    \
		int has_ = g_ && strstr(g_, (needle)) != NULL;                                             \
		ok(has_, __VA_ARGS__);                                                                     \
		if (!has_)                                                                                 \
			printf("#   %s\n#   does not contain: %s\n", g_ ? g_ : "(null)", (needle));            \
	} while (0)

#endif
