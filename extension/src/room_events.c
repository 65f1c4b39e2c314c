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

#include "commands/async.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(room_events_sleep);
PG_FUNCTION_INFO_V1(room_events_wake);
PG_FUNCTION_INFO_V1(room_event_notify);

/* (database, hash of the room, 'pgpod', 113): a tag SQL's advisory functions cannot
 * make (their last field is 1 or 2); pg_locks shows locktype 'advisory', objsubid 113. */
#define ROOM_LOCK_KEY 0x70676f64
#define ROOM_LOCK_FIELD4 113

static void
room_lock_tag(LOCKTAG *tag, FunctionCallInfo fcinfo)
{
	pg_uuid_t *room;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("room must not be null")));
	room = PG_GETARG_UUID_P(0);
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, hash_bytes(room->data, UUID_LEN), ROOM_LOCK_KEY,
	                     ROOM_LOCK_FIELD4);
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
	char payload[64];

	room_lock_tag(&tag, fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("seq must not be null")));
	if (!LockHeldByMe(&tag, ShareLock) &&
	    LockAcquire(&tag, RowExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
		PG_RETURN_BOOL(false); /* nobody listens; held until this transaction ends */
	snprintf(payload, sizeof(payload), "%s:" INT64_FORMAT,
	         DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(0))), PG_GETARG_INT64(1));
	Async_Notify("pgpod_room_events", payload);
	PG_RETURN_BOOL(true);
}
