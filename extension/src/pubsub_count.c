/*
 * pubsub_count.c — each pubsub node's item count (pod.pubsub_nodes.item_count, an RSM
 * page's count) kept by the trigger pod.pubsub_items_count on pod.pubsub_items: per
 * statement, the node ids of its transition table (inserted or deleted items) are
 * sorted and each node is updated once, in id order (two statements over the same
 * nodes lock them in the same order); a row trigger moves an item between nodes; a
 * TRUNCATE sets every count to 0. In C: in plpgsql the trigger was a fifth of a
 * one-item publish. A restore (pg_restore) brings the counts with the nodes.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(pubsub_items_count);

static SPIPlanPtr add_plan;
static SPIPlanPtr zero_plan;

static int
compare_int64(const void *a, const void *b)
{
	int64 x = *(const int64 *) a;
	int64 y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* Adds delta to the count of node id. */
static void
count_add(int64 node_id, int64 delta)
{
	Datum args[2] = {Int64GetDatum(node_id), Int64GetDatum(delta)};
	int rc;

	if (add_plan == NULL)
	{
		Oid types[2] = {INT8OID, INT8OID};
		SPIPlanPtr plan = SPI_prepare_cursor(
			"UPDATE pod.pubsub_nodes n SET item_count = n.item_count + $2 WHERE n.id = $1", 2, types,
			CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the pubsub item count update: %s", SPI_result_code_string(SPI_result));
		add_plan = plan;
	}
	rc = SPI_execute_plan(add_plan, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "updating a pubsub node's item count failed: %s", SPI_result_code_string(rc));
}

/* Applies the items of a transition table to their nodes' counts, sign +1 or -1. */
static void
count_transition_table(Relation rel, Tuplestorestate *rows, int64 sign)
{
	int attnum = SPI_fnumber(RelationGetDescr(rel), "node_id");
	TupleTableSlot *slot;
	int64 *ids;
	int64 n = 0;
	int64 cap = 16;
	int ptr;

	if (attnum <= 0)
		elog(ERROR, "pod.pubsub_items has no node_id column");
	ids = palloc(cap * sizeof(int64));
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
	/* A read pointer of our own: other readers of the same table keep theirs. */
	ptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, ptr);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		bool isnull;
		Datum d = slot_getattr(slot, attnum, &isnull);

		if (isnull)
			continue;
		if (n == cap)
		{
			cap *= 2;
			ids = repalloc_huge(ids, cap * sizeof(int64));
		}
		ids[n++] = DatumGetInt64(d);
	}
	ExecDropSingleTupleTableSlot(slot);
	if (n > 1)
		qsort(ids, n, sizeof(int64), compare_int64);
	for (int64 i = 0; i < n;)
	{
		int64 j = i;

		while (j < n && ids[j] == ids[i])
			j++;
		count_add(ids[i], sign * (j - i));
		i = j;
	}
	pfree(ids);
}

/*
 * Trigger pod.pubsub_items_count(): AFTER INSERT (REFERENCING NEW TABLE) and AFTER
 * DELETE (REFERENCING OLD TABLE) for each statement, AFTER UPDATE OF node_id for each
 * row, AFTER TRUNCATE.
 */
Datum
pubsub_items_count(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TriggerEvent ev;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("pod.pubsub_items_count() is a trigger function")));
	ev = td->tg_event;
	/* A restore brings each node's count with it. */
	if (application_name != NULL && strcmp(application_name, "pg_restore") == 0)
		return PointerGetDatum(NULL);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
	{
		int rc;

		if (zero_plan == NULL)
		{
			SPIPlanPtr plan = SPI_prepare("UPDATE pod.pubsub_nodes n SET item_count = 0 WHERE n.item_count <> 0", 0, NULL);

			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "could not prepare the pubsub item count reset: %s", SPI_result_code_string(SPI_result));
			zero_plan = plan;
		}
		rc = SPI_execute_plan(zero_plan, NULL, NULL, false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "resetting pubsub item counts failed: %s", SPI_result_code_string(rc));
	}
	else if (TRIGGER_FIRED_FOR_ROW(ev) && TRIGGER_FIRED_BY_UPDATE(ev))
	{
		TupleDesc desc = RelationGetDescr(td->tg_relation);
		int attnum = SPI_fnumber(desc, "node_id");
		bool old_null;
		bool new_null;
		Datum old_id;
		Datum new_id;

		if (attnum <= 0)
			elog(ERROR, "pod.pubsub_items has no node_id column");
		old_id = heap_getattr(td->tg_trigtuple, attnum, desc, &old_null);
		new_id = heap_getattr(td->tg_newtuple, attnum, desc, &new_null);
		/* In id order, as the statement case. */
		if (!old_null && !new_null && DatumGetInt64(old_id) > DatumGetInt64(new_id))
		{
			count_add(DatumGetInt64(new_id), 1);
			count_add(DatumGetInt64(old_id), -1);
		}
		else
		{
			if (!old_null)
				count_add(DatumGetInt64(old_id), -1);
			if (!new_null)
				count_add(DatumGetInt64(new_id), 1);
		}
	}
	else if (TRIGGER_FIRED_BY_INSERT(ev) && td->tg_newtable != NULL)
		count_transition_table(td->tg_relation, td->tg_newtable, 1);
	else if (TRIGGER_FIRED_BY_DELETE(ev) && td->tg_oldtable != NULL)
		count_transition_table(td->tg_relation, td->tg_oldtable, -1);
	else
		elog(ERROR, "pod.pubsub_items_count() fired by an event it does not count");
	SPI_finish();
	return PointerGetDatum(NULL);
}
