/* Runs the gateway's unit tests and prints TAP: every tests/unit/gateway/test_*.c is
 * compiled in (gateway.mk) and registers its TAP_TEST functions itself. */
#include "tap.h"

int
main(void)
{
	return tap_main();
}
