/*
 * queue.c — the queue's wake-ups: one NOTIFY per statement and job kind, never one per
 * row. A BEFORE INSERT row trigger on pod.jobs counts the ready rows per kind in
 * backend memory (no transition table, no per-row PL call); the AFTER INSERT statement
 * trigger sends pod_jobs_<kind> with the count as payload and clears the tally. The
 * tally lives in TopTransactionContext, tagged with the (sub)transaction that made it,
 * so a tally left by a failed statement is dropped, not sent.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(jobs_notify_count);
PG_FUNCTION_INFO_V1(jobs_notify_send);

#define KIND_MAX 64

typedef struct KindCount
{
	char kind[KIND_MAX];
	int64 ready;
} KindCount;

static KindCount *counts;
static int counts_len;
static int counts_cap;
static LocalTransactionId counts_lxid = InvalidLocalTransactionId;
static SubTransactionId counts_subxid = InvalidSubTransactionId;

static bool
counts_are_current(void)
{
	return counts_lxid == MyProc->lxid && counts_subxid == GetCurrentSubTransactionId();
}

static void
counts_reset(void)
{
	counts = NULL; /* its memory goes with the transaction */
	counts_len = counts_cap = 0;
	counts_lxid = MyProc->lxid;
	counts_subxid = GetCurrentSubTransactionId();
}

/* BEFORE INSERT row trigger: counts the row when it is ready now; returns it unchanged. */
Datum
jobs_notify_count(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	TupleDesc desc;
	HeapTuple row;
	bool isnull;
	Datum kind_datum;
	Datum run_at;
	char *kind;
	int i;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
	    !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		elog(ERROR, "jobs_notify_count must be a BEFORE INSERT row trigger");
	desc = trigdata->tg_relation->rd_att;
	row = trigdata->tg_trigtuple;
	run_at = heap_getattr(row, SPI_fnumber(desc, "run_at"), desc, &isnull);
	if (!isnull && DatumGetTimestampTz(run_at) > GetCurrentTransactionStartTimestamp())
		return PointerGetDatum(row); /* delayed: the workers' timer finds it */
	kind_datum = heap_getattr(row, SPI_fnumber(desc, "kind"), desc, &isnull);
	if (isnull)
		return PointerGetDatum(row); /* the NOT NULL constraint will refuse it */
	kind = TextDatumGetCString(kind_datum);

	if (!counts_are_current())
		counts_reset();
	for (i = 0; i < counts_len; i++)
		if (strncmp(counts[i].kind, kind, KIND_MAX) == 0)
			break;
	if (i == counts_len)
	{
		if (counts_len == counts_cap)
		{
			counts_cap = counts_cap ? counts_cap * 2 : 8;
			counts =
			    counts ? repalloc(counts, sizeof(KindCount) * counts_cap)
			           : MemoryContextAlloc(TopTransactionContext, sizeof(KindCount) * counts_cap);
		}
		strlcpy(counts[i].kind, kind, KIND_MAX);
		counts[i].ready = 0;
		counts_len++;
	}
	counts[i].ready++;
	return PointerGetDatum(row);
}

/* AFTER INSERT statement trigger: NOTIFY pod_jobs_<kind>, '<ready count>' per kind. */
Datum
jobs_notify_send(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	KindCount *todo;
	int n;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		elog(ERROR, "jobs_notify_send must be a statement trigger");
	if (!counts_are_current() || counts_len == 0)
	{
		counts_reset();
		return PointerGetDatum(NULL);
	}
	todo = counts;
	n = counts_len;
	counts_reset();
	for (int i = 0; i < n; i++)
	{
		char channel[NAMEDATALEN];
		char payload[32];

		snprintf(channel, sizeof(channel), "pod_jobs_%s", todo[i].kind);
		snprintf(payload, sizeof(payload), INT64_FORMAT, todo[i].ready);
		Async_Notify(channel, payload);
	}
	return PointerGetDatum(NULL);
}
