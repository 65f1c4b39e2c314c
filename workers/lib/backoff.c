/*
 * backoff.c — the one reconnection backoff of every daemon and of the gateway: the
 * first retry after WK_BACKOFF_FIRST seconds, then doubling up to WK_BACKOFF_MAX.
 */
#include "worker.h"

double
wk_backoff_next(double previous)
{
	if (previous <= 0)
		return WK_BACKOFF_FIRST;
	return previous * 2 > WK_BACKOFF_MAX ? WK_BACKOFF_MAX : previous * 2;
}
