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

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "common/hashfn.h"
#include "fmgr.h"
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
 * the room's counter is advanced under its row lock, so the sequence is gapless and
 * in commit order; the event row, the stream wake-up and, when other pods follow the
 * room, their push. One statement numbers, writes and asks for followers: it was three
 * plpgsql statements in two plpgsql functions, whose per-transaction setup was a large
 * part of a chat post.
 */
static SPIPlanPtr append_plan;
static SPIPlanPtr push_plan;

/* Returns the event's seq, or -1 when the room is gone (being deleted). */
static int64
append_event(pg_uuid_t *room, const char *kind, int64 message, const char *audience, pg_uuid_t *author)
{
	Datum values[5];
	char nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64 seq;
	bool isnull, followed;
	int rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (append_plan == NULL)
	{
		Oid types[5] = {UUIDOID, TEXTOID, INT8OID, TEXTOID, UUIDOID};
		SPIPlanPtr plan = SPI_prepare_cursor(
			"WITH n AS (UPDATE pod.rooms SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq) "
			"INSERT INTO pod.room_events (room_id, seq, kind, message_id, audience, author) "
			"SELECT $1, n.event_seq, $2::pod.room_event_kind, $3, $4, $5 FROM n "
			"RETURNING seq, EXISTS (SELECT 1 FROM pod.room_remote_pods p WHERE p.room_id = $1)",
			5, types, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the room event statement: %s", SPI_result_code_string(SPI_result));
		append_plan = plan;
	}
	values[0] = UUIDPGetDatum(room);
	values[1] = CStringGetTextDatum(kind);
	values[2] = Int64GetDatum(message);
	if (audience != NULL)
		values[3] = CStringGetTextDatum(audience);
	else
		nulls[3] = 'n';
	if (author != NULL)
		values[4] = UUIDPGetDatum(author);
	else
		nulls[4] = 'n';
	rc = SPI_execute_plan(append_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "room event statement: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		SPI_finish();
		return -1; /* the room itself is being deleted */
	}
	seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	followed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	(void)notify_if_listened(room, seq); /* only when a gateway listens to the room */
	/* other pods with viewers in the room get every event (sql/76_livechat_federation.sql) */
	if (followed)
	{
		Datum pv[5] = {UUIDPGetDatum(room), Int64GetDatum(seq), CStringGetTextDatum(kind), Int64GetDatum(message),
		               values[3]};
		char pn[5] = {' ', ' ', ' ', ' ', nulls[3]};

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
	}
	SPI_finish();
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
