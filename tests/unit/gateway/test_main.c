/* Runs the gateway's unit tests (parser, request reading, SQL builder, JWT, byte ranges, fuzzy hints) and prints TAP. */
#include "tap.h"

int tap_n, tap_failed;

void test_query_parse(void);
void test_sql_build(void);
void test_jwt(void);
void test_byte_range(void);
void test_buf(void);
void test_fuzzy(void);
void test_request(void);

int
main(void)
{
	test_query_parse();
	test_sql_build();
	test_jwt();
	test_byte_range();
	test_buf();
	test_fuzzy();
	test_request();
	printf("1..%d\n", tap_n);
	if (tap_failed)
		printf("# %d of %d failed\n", tap_failed, tap_n);
	return tap_failed ? 1 : 0;
}
