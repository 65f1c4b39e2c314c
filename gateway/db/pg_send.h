/* Coalesced writes to the pool's PostgreSQL sockets (see pg_send.c): what libpq
 * sends on a registered socket during one event-loop iteration goes out in one
 * write, just before the loop polls. PGPOD_GATEWAY_COALESCE=0 turns it off. */
#ifndef GW_PG_SEND_H
#define GW_PG_SEND_H

/* Reads PGPOD_GATEWAY_COALESCE and starts the flush watcher on gw_loop. */
void gw_pgsend_init(void);
/* Buffers libpq's writes on fd (a pool connection, once it is up). */
void gw_pgsend_register(int fd);
/* Stops buffering on fd before libpq closes it: with flush, what is held is
 * written out first (best effort); else it is dropped (the connection is lost). */
void gw_pgsend_release(int fd, int flush);

#endif
