/*
 * tap.h — the one TAP producer of the C unit tests (gateway and daemons): ok(),
 * is_str(), contains(), and TAP_TEST(name) { ... }, which registers a test function
 * so that adding a test file is the only edit (tap_main() runs them all). Programs
 * with their own main() call tap_done() at the end. Counters live in tap.c.
 */
#ifndef PGPOD_TAP_H
#define PGPOD_TAP_H
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

/* TAP_TEST(test_x) { ... } defines test_x and registers it before main() runs. */
void tap_register(const char *name, void (*fn)(void));
#define TAP_TEST(fn)                                                                               \
	static void fn(void);                                                                          \
	__attribute__((constructor)) static void fn##_tap_register(void) { tap_register(#fn, fn); }    \
	static void fn(void)

/* Runs every registered test in name order, then tap_done(). */
int tap_main(void);
/* Prints the plan (and a summary of failures); the exit status: 0 when all passed. */
int tap_done(void);

#endif
