/*
 * scores.c — friends' scores from delivery outcomes, batched per statement. A row
 * trigger on pod.jobs (its WHEN clause lets only deliveries leaving 'running' through)
 * adds each outcome to a tally in backend memory; the statement trigger then applies
 * the tally with one UPDATE per friend (pod.friends_apply_outcomes), so a busy friend
 * is not a hot row and claims pay no transition tables. The tally lives in
 * TopTransactionContext, tagged with the (sub)transaction that made it: a tally left by
 * a failed statement is never applied.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(jobs_score_outcome);
PG_FUNCTION_INFO_V1(jobs_score_apply);

typedef struct FriendTally
{
	char *target;
	int32 delivered;
	int32 failed;
} FriendTally;

static FriendTally *tally;
static int tally_len;
static int tally_cap;
static LocalTransactionId tally_lxid = InvalidLocalTransactionId;
static SubTransactionId tally_subxid = InvalidSubTransactionId;

/* True when the tally was made by the current (sub)transaction. */
static bool
tally_is_current(void)
{
	return tally_lxid == MyProc->lxid && tally_subxid == GetCurrentSubTransactionId();
}

static void
tally_reset(void)
{
	tally = NULL; /* its memory goes with the transaction */
	tally_len = tally_cap = 0;
	tally_lxid = MyProc->lxid;
	tally_subxid = GetCurrentSubTransactionId();
}

/* Row trigger: AFTER UPDATE ... FOR EACH ROW WHEN (a delivery outcome). */
Datum
jobs_score_outcome(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	TupleDesc desc;
	HeapTuple row;
	char *target;
	char *state;
	int i;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
	    !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		elog(ERROR, "jobs_score_outcome must be an AFTER UPDATE row trigger");
	desc = trigdata->tg_relation->rd_att;
	row = trigdata->tg_newtuple;
	target = SPI_getvalue(row, desc, SPI_fnumber(desc, "target"));
	state = SPI_getvalue(row, desc, SPI_fnumber(desc, "state"));
	if (target == NULL || state == NULL)
		return PointerGetDatum(NULL);

	if (!tally_is_current())
		tally_reset();
	for (i = 0; i < tally_len; i++)
		if (strcmp(tally[i].target, target) == 0)
			break;
	if (i == tally_len)
	{
		if (tally_len == tally_cap)
		{
			tally_cap = tally_cap ? tally_cap * 2 : 16;
			tally =
			    tally ? repalloc(tally, sizeof(FriendTally) * tally_cap)
			          : MemoryContextAlloc(TopTransactionContext, sizeof(FriendTally) * tally_cap);
		}
		tally[i].target = MemoryContextStrdup(TopTransactionContext, target);
		tally[i].delivered = tally[i].failed = 0;
		tally_len++;
	}
	if (strcmp(state, "done") == 0)
		tally[i].delivered++;
	else
		tally[i].failed++;
	return PointerGetDatum(NULL);
}

/* Statement trigger: AFTER UPDATE ... FOR EACH STATEMENT; applies and clears the tally. */
Datum
jobs_score_apply(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	int n;
	Datum *targets, *delivered, *failed;
	Datum args[3];
	Oid types[3] = {TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		elog(ERROR, "jobs_score_apply must be a statement trigger");
	if (!tally_is_current() || tally_len == 0)
	{
		tally_reset();
		return PointerGetDatum(NULL);
	}
	/* Take the tally first: the UPDATE below may fire these triggers again. */
	n = tally_len;
	targets = palloc(sizeof(Datum) * n);
	delivered = palloc(sizeof(Datum) * n);
	failed = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		targets[i] = CStringGetTextDatum(tally[i].target);
		delivered[i] = Int32GetDatum(tally[i].delivered);
		failed[i] = Int32GetDatum(tally[i].failed);
	}
	tally_reset();

	args[0] = PointerGetDatum(construct_array(targets, n, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(delivered, n, INT4OID, 4, true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(failed, n, INT4OID, 4, true, TYPALIGN_INT));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "jobs_score_apply: SPI_connect failed");
	if (SPI_execute_with_args("SELECT pod.friends_apply_outcomes($1, $2, $3)", 3, types, args, NULL,
	                          false, 0) != SPI_OK_SELECT)
		elog(ERROR, "jobs_score_apply: pod.friends_apply_outcomes failed");
	SPI_finish();
	return PointerGetDatum(NULL);
}
