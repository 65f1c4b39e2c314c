/*
 * room_events.c — the rooms' stream wake-ups (NOTIFY pgpod_room_events '<room>:<seq>')
 * only when a gateway listens to the room. Every notifying commit in PostgreSQL 15
 * takes a database-wide lock and holds it through the WAL flush, so chat posts that
 * notify commit one at a time and lose group commit; a room nobody streams needs no
 * notification. As for the job queue's sleep locks (queue.c): a gateway worker with
 * subscribers of a room holds the room's stream lock (an advisory lock, SHARE,
 * session-level, on its listener connection: pod.room_events_sleep), and an event
 * notifies only when its transaction cannot take the same lock in ROW EXCLUSIVE mode
 * at once. When it can, the transaction keeps that lock until it ends, so a gateway
 * starting to listen to the room waits for the event to be committed, then reads the
 * room (the hub reads a room only once it holds the lock): no event is left without a
 * reader. Rooms share a lock when their hashes collide (then they notify more, never
 * less).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parsetree.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "pgpod.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(room_events_sleep);
PG_FUNCTION_INFO_V1(room_event_append);
PG_FUNCTION_INFO_V1(messages_event_new);
PG_FUNCTION_INFO_V1(room_events_wake);
PG_FUNCTION_INFO_V1(room_event_notify);

/* (database, hash of the room, 'pgpod', 113): a tag SQL's advisory functions cannot
 * make (their last field is 1 or 2); pg_locks shows locktype 'advisory', objsubid 113. */
#define ROOM_LOCK_KEY 0x70676f64
#define ROOM_LOCK_FIELD4 113

static void
room_lock_tag_of(LOCKTAG *tag, pg_uuid_t *room)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, hash_bytes(room->data, UUID_LEN), ROOM_LOCK_KEY,
	                     ROOM_LOCK_FIELD4);
}

static void
room_lock_tag(LOCKTAG *tag, FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("room must not be null")));
	room_lock_tag_of(tag, PG_GETARG_UUID_P(0));
}

/* NOTIFY pgpod_room_events '<room>:<seq>' when a gateway listens to the room. */
static bool
notify_if_listened(pg_uuid_t *room, int64 seq)
{
	LOCKTAG tag;
	char payload[64];

	room_lock_tag_of(&tag, room);
	if (!LockHeldByMe(&tag, ShareLock) &&
	    LockAcquire(&tag, RowExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
		return false; /* nobody listens; held until this transaction ends */
	snprintf(payload, sizeof(payload), "%s:" INT64_FORMAT,
	         DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(room))), seq);
	Async_Notify("pgpod_room_events", payload);
	return true;
}

/* pod.room_events_sleep(room): this session listens to the room's events and wants a
 * NOTIFY for each until pod.room_events_wake (first waits for the transactions whose
 * events saw no listener to end). */
Datum
room_events_sleep(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;

	room_lock_tag(&tag, fcinfo);
	(void)LockAcquire(&tag, ShareLock, true, false);
	PG_RETURN_VOID();
}

/* pod.room_events_wake(room): gives back one hold of pod.room_events_sleep; false if
 * this session held none. */
Datum
room_events_wake(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;

	room_lock_tag(&tag, fcinfo);
	if (!LockHeldByMe(&tag, ShareLock))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(LockRelease(&tag, ShareLock, true));
}

/* pod.room_event_notify(room, seq): NOTIFY pgpod_room_events '<room>:<seq>' when a
 * gateway listens to the room; true when it notified. */
Datum
room_event_notify(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;

	room_lock_tag(&tag, fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("seq must not be null")));
	PG_RETURN_BOOL(notify_if_listened(PG_GETARG_UUID_P(0), PG_GETARG_INT64(1)));
}

/*
 * Numbering a room's events (pod.room_event_append, and the trigger of a new message):
 * the room's counter (pod.rooms.event_seq) is advanced under its row lock, so the
 * sequence is gapless and in commit order; then the event row, the stream wake-up and,
 * when other pods follow the room, their push.
 *
 * Without a statement: the row is found by its key and locked as an UPDATE locks it,
 * then updated and the event inserted by the executor's routines for one row that
 * logical replication applies changes with (execReplication.c) — constraints,
 * indexes, triggers and the foreign key's check as a statement would run them,
 * without a statement's plan-cache check and executor setup.
 * The row is locked FOR NO KEY UPDATE, as UPDATE takes it: posters' foreign key checks
 * on the room (FOR KEY SHARE) do not conflict with it. The follow check reads with a
 * snapshot taken after the lock, so a follow committed while this waited for the room
 * is seen (pod.chat_follow reads the counter under the same lock).
 */
static SPIPlanPtr push_plan;

static RangeTblEntry *
rte_for(Relation rel)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	return rte;
}

static AttrNumber
attnum_of(Relation rel, const char *name)
{
	AttrNumber n = get_attnum(RelationGetRelid(rel), name);

	if (n == InvalidAttrNumber)
		elog(ERROR, "%s has no column \"%s\"", RelationGetRelationName(rel), name);
	return n;
}

/* does another pod follow the room? (pod.room_remote_pods, by its key's first column) */
static bool
room_followed(pg_uuid_t *room)
{
	Relation rel = table_open(pgpod_relid("room_remote_pods"), AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	bool found;

	ScanKeyInit(&key, attnum_of(rel, "room_id"), BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(room));
	scan = systable_beginscan(rel, pgpod_relid("room_remote_pods_pkey"), true, GetLatestSnapshot(), 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, NoLock);
	return found;
}

/*
 * The room's row, locked FOR NO KEY UPDATE in its latest version, into slot; false when
 * the room is gone. As an UPDATE in READ COMMITTED: a row being updated by another
 * transaction is waited for in the tuple lock's queue (one waiter wakes at a time),
 * and its newest version is the one locked.
 */
static bool
lock_room(Relation rooms, pg_uuid_t *room, TupleTableSlot *slot)
{
	Relation idx = index_open(pgpod_relid("rooms_pkey"), AccessShareLock);
	Snapshot snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData key;
	IndexScanDesc scan;
	TM_FailureData tmfd;
	TM_Result res;
	bool found;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(room));
	scan = index_beginscan(rooms, idx, snap, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	index_close(idx, NoLock);
	if (!found)
	{
		UnregisterSnapshot(snap);
		return false;
	}
	res = table_tuple_lock(rooms, &slot->tts_tid, snap, slot, GetCurrentCommandId(false), LockTupleNoKeyExclusive,
	                       LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	UnregisterSnapshot(snap);
	switch (res)
	{
		case TM_Ok:
			return true;
		case TM_Deleted:
			return false; /* deleted while this waited */
		default:
			elog(ERROR, "could not lock room %s's row (%d)",
			     DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(room))), (int) res);
	}
	return false;
}

/* Returns the event's seq, or -1 when the room is gone (being deleted). */
static int64
append_event(pg_uuid_t *room, const char *kind, int64 message, const char *audience, pg_uuid_t *author)
{
	Relation rooms = table_open(pgpod_relid("rooms"), RowExclusiveLock);
	Relation events = table_open(pgpod_relid("room_events"), RowExclusiveLock);
	TupleDesc rdesc = RelationGetDescr(rooms), edesc = RelationGetDescr(events);
	AttrNumber a_seq = attnum_of(rooms, "event_seq");
	EState *estate = CreateExecutorState();
	RangeTblEntry *rooms_rte = rte_for(rooms);
	ResultRelInfo *rooms_rri = makeNode(ResultRelInfo), *events_rri = makeNode(ResultRelInfo);
	TupleTableSlot *current, *next, *event;
	EPQState epq;
	MemoryContext old;
	int64 seq = -1;
	int natts, i;

	rooms_rte->updatedCols = bms_make_singleton(a_seq - FirstLowInvalidHeapAttributeNumber);
	ExecInitRangeTable(estate, list_make2(rooms_rte, rte_for(events)));
	InitResultRelInfo(rooms_rri, rooms, 1, NULL, 0);
	InitResultRelInfo(events_rri, events, 2, NULL, 0);
	/* (not in es_result_relations: ExecGetTriggerResultRel finds them here) */
	estate->es_opened_result_relations = list_make2(rooms_rri, events_rri);
	estate->es_output_cid = GetCurrentCommandId(true);
	AfterTriggerBeginQuery();
	EvalPlanQualInit(&epq, estate, NULL, NIL, -1);
	ExecOpenIndices(rooms_rri, false);
	ExecOpenIndices(events_rri, false);
	old = MemoryContextSwitchTo(estate->es_query_cxt);

	/* the room's row, locked (waiting for the transaction holding it) */
	current = table_slot_create(rooms, &estate->es_tupleTable);
	next = table_slot_create(rooms, &estate->es_tupleTable);
	if (lock_room(rooms, room, current))
	{
		bool isnull;
		Datum d = slot_getattr(current, a_seq, &isnull);
		Datum values[7];
		bool nulls[7] = {false, false, false, false, false, false, false};
		const char *names[7] = {"room_id", "seq", "kind", "message_id", "at", "audience", "author"};

		seq = (isnull ? 0 : DatumGetInt64(d)) + 1;
		/* event_seq + 1, the rest of the row as it is */
		slot_getallattrs(current);
		natts = rdesc->natts;
		ExecClearTuple(next);
		memcpy(next->tts_values, current->tts_values, natts * sizeof(Datum));
		memcpy(next->tts_isnull, current->tts_isnull, natts * sizeof(bool));
		next->tts_values[a_seq - 1] = Int64GetDatum(seq);
		next->tts_isnull[a_seq - 1] = false;
		ExecStoreVirtualTuple(next);
		EvalPlanQualSetSlot(&epq, next);
		ExecSimpleRelationUpdate(rooms_rri, estate, &epq, current, next);

		/* the event row (room_id, seq, kind, message_id, at, audience, author) */
		event = table_slot_create(events, &estate->es_tupleTable);
		ExecClearTuple(event);
		for (i = 0; i < edesc->natts; i++)
			event->tts_isnull[i] = true;
		values[0] = UUIDPGetDatum(room);
		values[1] = Int64GetDatum(seq);
		values[2] = DirectFunctionCall2(enum_in, CStringGetDatum(kind),
		                                ObjectIdGetDatum(TupleDescAttr(edesc, attnum_of(events, "kind") - 1)->atttypid));
		values[3] = Int64GetDatum(message);
		values[4] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()); /* the column's now() */
		if (audience != NULL)
			values[5] = CStringGetTextDatum(audience);
		else
			nulls[5] = true;
		if (author != NULL)
			values[6] = UUIDPGetDatum(author);
		else
			nulls[6] = true;
		for (i = 0; i < 7; i++)
		{
			AttrNumber a = attnum_of(events, names[i]);

			event->tts_values[a - 1] = values[i];
			event->tts_isnull[a - 1] = nulls[i];
		}
		ExecStoreVirtualTuple(event);
		ExecSimpleRelationInsert(events_rri, estate, event);
	}
	MemoryContextSwitchTo(old);
	ExecCloseIndices(events_rri);
	ExecCloseIndices(rooms_rri);
	EvalPlanQualEnd(&epq);
	AfterTriggerEndQuery(estate); /* the event's foreign key check */
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(events, NoLock);
	table_close(rooms, NoLock);
	if (seq < 0)
		return -1; /* the room itself is being deleted */
	CommandCounterIncrement(); /* what follows in this transaction sees the event and the counter */

	(void)notify_if_listened(room, seq); /* only when a gateway listens to the room */
	/* other pods with viewers in the room get every event (sql/76_livechat_federation.sql) */
	if (room_followed(room))
	{
		Datum pv[5] = {UUIDPGetDatum(room), Int64GetDatum(seq), CStringGetTextDatum(kind), Int64GetDatum(message),
		               audience != NULL ? CStringGetTextDatum(audience) : (Datum)0};
		char pn[5] = {' ', ' ', ' ', ' ', audience != NULL ? ' ' : 'n'};
		int rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (push_plan == NULL)
		{
			Oid types[5] = {UUIDOID, INT8OID, TEXTOID, INT8OID, TEXTOID};
			SPIPlanPtr plan = SPI_prepare_cursor("SELECT pod.chat_push_event($1, $2, $3::pod.room_event_kind, $4, $5)", 5, types,
			                                     CURSOR_OPT_GENERIC_PLAN);

			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "could not prepare the event push: %s", SPI_result_code_string(SPI_result));
			push_plan = plan;
		}
		rc = SPI_execute_plan(push_plan, pv, pn, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "event push: %s", SPI_result_code_string(rc));
		SPI_finish();
	}
	return seq;
}

/* pod.room_event_append(room, event_kind, message, event_audience, event_author) RETURNS bigint */
Datum
room_event_append(PG_FUNCTION_ARGS)
{
	char *kind;
	int64 seq;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("room, kind and message must not be null")));
	kind = DatumGetCString(DirectFunctionCall1(enum_out, PG_GETARG_DATUM(1)));
	seq = append_event(PG_GETARG_UUID_P(0), kind, PG_GETARG_INT64(2),
	                   PG_ARGISNULL(3) ? NULL : TextDatumGetCString(PG_GETARG_DATUM(3)),
	                   PG_ARGISNULL(4) ? NULL : PG_GETARG_UUID_P(4));
	if (seq < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(seq);
}

/* AFTER INSERT row trigger on pod.messages for a message everyone may see at once
 * (WHEN NEW.held_until IS NULL AND NOT NEW.hidden): its 'new' event. */
Datum
messages_event_new(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	TupleDesc desc;
	HeapTuple row;
	Datum room, id;
	bool room_null, id_null;
	int room_att, id_att;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
	    !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("pod.messages_event_new must be an AFTER INSERT row trigger")));
	desc = RelationGetDescr(trigdata->tg_relation);
	row = trigdata->tg_trigtuple;
	room_att = SPI_fnumber(desc, "room_id");
	id_att = SPI_fnumber(desc, "id");
	if (room_att <= 0 || id_att <= 0)
		elog(ERROR, "pod.messages has no room_id or id");
	room = heap_getattr(row, room_att, desc, &room_null);
	id = heap_getattr(row, id_att, desc, &id_null);
	if (room_null || id_null)
		elog(ERROR, "a message without room or id");
	(void)append_event(DatumGetUUIDP(room), "new", DatumGetInt64(id), NULL, NULL);
	return PointerGetDatum(NULL);
}
