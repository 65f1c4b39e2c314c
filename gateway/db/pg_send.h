/* Coalesced writes to the pool's PostgreSQL sockets (see pg_send.c): what libpq
 * sends on a registered connection's socket during one event-loop iteration goes
 * out in one write, just before the loop polls. PGPOD_GATEWAY_COALESCE=0 turns it
 * off; so does a libpq version it was not tested with. */
#ifndef GW_PG_SEND_H
#define GW_PG_SEND_H
#include <libpq-fe.h>

/* Reads PGPOD_GATEWAY_COALESCE, checks libpq's version and starts the flush
 * watcher on gw_loop. */
void gw_pgsend_init(void);
/* Whether writes are coalesced (the setting and the libpq version allow it). */
int gw_pgsend_enabled(void);
/* Buffers libpq's writes on conn's socket (a pool connection, once it is up). */
void gw_pgsend_register(PGconn *conn);
/* Stops buffering on fd before libpq closes it: with flush, what is held is
 * written out first (best effort, and only while fd is still the connection's);
 * else it is dropped (the connection is lost). */
void gw_pgsend_release(int fd, int flush);
/* libpq send() calls held and written later with others, since start (this
 * process). */
unsigned long long gw_pgsend_held_sends(void);

#endif
