/* Prometheus metrics shared by all gateway processes: counters live in one
 * MAP_SHARED page created before fork and are updated with atomic adds. */
#ifndef GW_METRICS_H
#define GW_METRICS_H
#include "buf.h"

int gw_metrics_init(int processes);
/* Clears the calling process's gauges (a restarted process starts from zero). */
void gw_metrics_process_start(void);
void gw_metrics_request(int status, double seconds);
void gw_metrics_connections(int delta);
void gw_metrics_pool(int size_delta, int busy_delta, int waiting_delta);
void gw_metrics_sse(int delta);
void gw_metrics_prepare(void);     /* a Parse sent for the statement cache */
void gw_metrics_stale_retry(void); /* a job run again after a stale statement */
void gw_metrics_coalesced_sends(unsigned long long n); /* libpq writes held by pg_send.c */
void gw_metrics_db_up(int up);
/* This process serves (or stops serving) fully; how many others do. */
void gw_metrics_ready(int ready);
int gw_metrics_others_ready(void);
/* Gateway processes ready now (the supervisor's READY=1 for systemd). */
int gw_metrics_ready_count(void);
void gw_metrics_render(gw_buf *out);

#endif
