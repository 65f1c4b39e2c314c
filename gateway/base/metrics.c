/* Prometheus /metrics: requests by status, a latency histogram, open
 * connections, pool size/use/waiters and SSE subscribers, summed over the gateway processes
 * through a shared anonymous mapping (atomic adds, no locks). */
#include "metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "settings.h"
#include "worker.h"

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof buckets / sizeof *buckets)

#define MAX_PROCESSES 256

/* Gauges are kept per process so that a process that dies (and is restarted with
 * its slot cleared) cannot leave its share behind. */
typedef struct gauges
{
	int64_t connections;
	int64_t pool_size, pool_busy, pool_waiting;
	int64_t sse;
	int64_t db_up;
	int64_t ready; /* serving: schema cache, JWT secret and a pool connection */
} gauges;

typedef struct shared
{
	uint64_t status[600];
	uint64_t latency[NBUCKETS + 1];
	uint64_t latency_sum_us;
	uint64_t requests;
	uint64_t prepares, stale_retries, coalesced_sends;
	gauges process[MAX_PROCESSES];
} shared;

static shared *m;

int
gw_metrics_init(int processes)
{
	(void)processes;
	void *p = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	m = p;
	return 0;
}

#define ADD(field, v) (m ? (void)__atomic_fetch_add(&m->field, (v), __ATOMIC_RELAXED) : (void)0)
#define GAUGE(field, v) ADD(process[gw_process_index % MAX_PROCESSES].field, (v))

void
gw_metrics_process_start(void)
{
	if (m)
		memset(&m->process[gw_process_index % MAX_PROCESSES], 0, sizeof(gauges));
}

static long long
total(size_t offset)
{
	long long t = 0;
	for (int i = 0; i < MAX_PROCESSES; i++)
		t += *(int64_t *)((char *)&m->process[i] + offset);
	return t;
}

void
gw_metrics_request(int status, double seconds)
{
	if (!m)
		return;
	if (status >= 100 && status < 600)
		ADD(status[status], 1);
	size_t i = 0;
	while (i < NBUCKETS && seconds > buckets[i])
		i++;
	ADD(latency[i], 1);
	ADD(latency_sum_us, (uint64_t)(seconds * 1e6));
	ADD(requests, 1);
}

void
gw_metrics_connections(int delta)
{
	GAUGE(connections, delta);
}

void
gw_metrics_pool(int size_delta, int busy_delta, int waiting_delta)
{
	GAUGE(pool_size, size_delta);
	GAUGE(pool_busy, busy_delta);
	GAUGE(pool_waiting, waiting_delta);
}

void
gw_metrics_sse(int delta)
{
	GAUGE(sse, delta);
}

void
gw_metrics_prepare(void)
{
	ADD(prepares, 1);
}

void
gw_metrics_stale_retry(void)
{
	ADD(stale_retries, 1);
}

void
gw_metrics_coalesced_sends(unsigned long long n)
{
	ADD(coalesced_sends, n);
}

void
gw_metrics_ready(int ready)
{
	if (m)
		__atomic_store_n(&m->process[gw_process_index % MAX_PROCESSES].ready, ready ? 1 : 0,
		                 __ATOMIC_RELAXED);
}

int
gw_metrics_ready_count(void)
{
	return (int)total(offsetof(gauges, ready));
}

int
gw_metrics_others_ready(void)
{
	int n = 0;
	for (int i = 0; m && i < MAX_PROCESSES; i++)
		if (i != gw_process_index % MAX_PROCESSES && __atomic_load_n(&m->process[i].ready, __ATOMIC_RELAXED))
			n++;
	return n;
}

void
gw_metrics_db_up(int up)
{
	GAUGE(db_up, up ? 1 : -1);
}

void
gw_metrics_render(gw_buf *o)
{
	if (!m)
		return;
	gw_buf_puts(o, "# HELP pgpod_http_requests_total HTTP requests answered, by status.\n"
	               "# TYPE pgpod_http_requests_total counter\n");
	for (int s = 100; s < 600; s++)
		if (m->status[s])
			gw_buf_printf(o, "pgpod_http_requests_total{status=\"%d\"} %llu\n", s,
			              (unsigned long long)m->status[s]);
	gw_buf_puts(o, "# HELP pgpod_http_request_duration_seconds Time from request start to answer.\n"
	               "# TYPE pgpod_http_request_duration_seconds histogram\n");
	uint64_t cum = 0;
	for (size_t i = 0; i < NBUCKETS; i++)
	{
		cum += m->latency[i];
		gw_buf_printf(o, "pgpod_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
		              (unsigned long long)cum);
	}
	cum += m->latency[NBUCKETS];
	gw_buf_printf(o, "pgpod_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
	              (unsigned long long)cum);
	gw_buf_printf(o, "pgpod_http_request_duration_seconds_sum %.6f\n",
	              (double)m->latency_sum_us / 1e6);
	gw_buf_printf(o, "pgpod_http_request_duration_seconds_count %llu\n",
	              (unsigned long long)m->requests);
	gw_buf_printf(o,
	              "# HELP pgpod_http_connections Open client connections.\n# TYPE "
	              "pgpod_http_connections gauge\n"
	              "pgpod_http_connections %lld\n",
	              total(offsetof(gauges, connections)));
	gw_buf_printf(o,
	              "# HELP pgpod_pool_prepares_total Statements prepared on pool connections.\n"
	              "# TYPE pgpod_pool_prepares_total counter\n"
	              "pgpod_pool_prepares_total %llu\n"
	              "# HELP pgpod_pool_stale_retries_total Requests run again after a stale "
	              "prepared statement failed them.\n"
	              "# TYPE pgpod_pool_stale_retries_total counter\n"
	              "pgpod_pool_stale_retries_total %llu\n"
	              "# HELP pgpod_pool_coalesced_sends_total libpq writes to pool connections held "
	              "and sent in one write with others (PGPOD_GATEWAY_COALESCE).\n"
	              "# TYPE pgpod_pool_coalesced_sends_total counter\n"
	              "pgpod_pool_coalesced_sends_total %llu\n",
	              (unsigned long long)m->prepares, (unsigned long long)m->stale_retries,
	              (unsigned long long)m->coalesced_sends);
	gw_buf_printf(o,
	              "# HELP pgpod_pool_connections Database connections that are up.\n# TYPE "
	              "pgpod_pool_connections gauge\n"
	              "pgpod_pool_connections %lld\n",
	              total(offsetof(gauges, pool_size)));
	gw_buf_printf(o,
	              "# HELP pgpod_pool_busy Database connections running a request.\n# TYPE "
	              "pgpod_pool_busy gauge\n"
	              "pgpod_pool_busy %lld\n",
	              total(offsetof(gauges, pool_busy)));
	gw_buf_printf(o,
	              "# HELP pgpod_pool_waiting Requests waiting for a database connection.\n# TYPE "
	              "pgpod_pool_waiting gauge\n"
	              "pgpod_pool_waiting %lld\n",
	              total(offsetof(gauges, pool_waiting)));
	gw_buf_printf(o,
	              "# HELP pgpod_pool_configured Database connections configured over all "
	              "workers.\n# TYPE pgpod_pool_configured gauge\n"
	              "pgpod_pool_configured %d\n",
	              gw_cfg.pool_size * gw_cfg.processes);
	gw_buf_printf(o,
	              "# HELP pgpod_sse_subscribers Open Server-Sent Events streams.\n# TYPE "
	              "pgpod_sse_subscribers gauge\n"
	              "pgpod_sse_subscribers %lld\n",
	              total(offsetof(gauges, sse)));
	gw_buf_printf(o,
	              "# HELP pgpod_db_listeners_up Workers whose notification connection is up.\n# "
	              "TYPE pgpod_db_listeners_up gauge\n"
	              "pgpod_db_listeners_up %lld\n",
	              total(offsetof(gauges, db_up)));
	gw_buf_printf(o,
	              "# HELP pgpod_workers_ready Workers ready to serve (schema cache, JWT secret, "
	              "a pool connection).\n# TYPE pgpod_workers_ready gauge\n"
	              "pgpod_workers_ready %lld\n",
	              total(offsetof(gauges, ready)));
	gw_buf_printf(o,
	              "# HELP pgpod_workers_configured Gateway processes configured "
	              "(PGPOD_GATEWAY_WORKERS).\n# TYPE pgpod_workers_configured gauge\n"
	              "pgpod_workers_configured %d\n",
	              gw_cfg.processes);
}
