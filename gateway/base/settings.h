/* The gateway process's settings (read once from the environment by main.c) and
 * its globals. Each gateway process is single threaded (one libev loop), so
 * nothing here is locked; what the processes share (metrics) lives in metrics.c. */
#ifndef GW_SETTINGS_H
#define GW_SETTINGS_H
#include <ev.h>

typedef struct gw_settings
{
	const char *host;
	int port;
	int processes; /* PGPOD_GATEWAY_WORKERS: gateway processes */
	int pool_size;
	int prepared; /* prepared statements per pool connection, 0: none */
	int pipeline; /* transactions in flight per pool connection */
	long body_max;         /* JSON bodies */
	long upload_max;       /* POST /upload */
	long header_max;       /* URL + headers */
	double header_timeout; /* seconds to receive a request's head */
	double idle_timeout;   /* keep-alive idle */
	double body_timeout;   /* seconds without body progress */
	double queue_timeout;  /* waiting for a pool connection */
	long statement_timeout_ms;
	const char *store_dir;
	const char *db_user;
	double drain_timeout;
	long file_cache_ms; /* authorization cache of /files lookups */
	double upload_sweep; /* seconds between two sweeps of expired tus uploads */
	int access_log;     /* one log line per answered request */
	int tx_rollback;    /* PGPOD_GATEWAY_TX_END rollback*: end transactions with ROLLBACK */
	int tx_override;    /* PGPOD_GATEWAY_TX_END *-allow-override: Prefer: tx= decides */
	int aggregates;     /* PGPOD_GATEWAY_AGGREGATES=on: count() sum() ... in select= */
} gw_settings;

extern gw_settings gw_cfg;
extern struct ev_loop *gw_loop;
extern int gw_process_index;
extern volatile int gw_draining;

/* The loop's time of the current iteration. */
static inline double
gw_now(void)
{
	return ev_now(gw_loop);
}

#endif
