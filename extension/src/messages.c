/*
 * messages.c — the life cycle of a chat message, as row triggers on pod.messages:
 * DELETE keeps a tombstone (status 'deleted', content removed, history purged) except
 * in secret rooms, where the row really goes; UPDATE of the content keeps the previous
 * version in pod.message_versions and marks the message edited. Both run as the
 * extension owner (SECURITY DEFINER) so row-level security on the caller's side has
 * already decided whether the caller may touch the row at all.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(messages_soft_delete);
PG_FUNCTION_INFO_V1(messages_track_edit);

/* Content keys a tombstone must not keep. */
#define TOMBSTONE_STRIP "'{text,references,attachments,mentions}'::text[]"

/* Fails unless we are the kind of trigger the function was written for. */
static TriggerData *
expect_row_trigger(FunctionCallInfo fcinfo, const char *name, bool for_delete)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		(for_delete ? !TRIGGER_FIRED_BY_DELETE(trigdata->tg_event)
		 : !TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s must be a BEFORE %s row trigger", name,
						for_delete ? "DELETE" : "UPDATE")));
	return trigdata;
}

/* Reads a column by name; raises if the table lost it. */
static Datum
column(TriggerData *trigdata, HeapTuple tuple, const char *name, bool *isnull)
{
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "pod.messages has no column \"%s\"", name);
	return SPI_getbinval(tuple, desc, attnum, isnull);
}

/* BEFORE DELETE: tombstone instead of delete, except in secret or vanished rooms. */
Datum
messages_soft_delete(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = expect_row_trigger(fcinfo, "messages_soft_delete", true);
	HeapTuple	old = trigdata->tg_trigtuple;
	bool		isnull;
	Datum		id = column(trigdata, old, "id", &isnull);
	Datum		room_id = column(trigdata, old, "room_id", &isnull);
	char	   *status = DatumGetCString(DirectFunctionCall1(enum_out,
																   column(trigdata, old, "status", &isnull)));
	Oid			uuid_type[1] = {UUIDOID};
	Oid			int8_type[1] = {INT8OID};
	bool		really_delete;

	SPI_connect();
	if (SPI_execute_with_args("SELECT type::text FROM pod.rooms WHERE id = $1",
							  1, uuid_type, &room_id, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the message's room");

	/*
	 * No room row means the room itself is being deleted and this is its cascade:
	 * keeping a tombstone would leave a row pointing at nothing.
	 */
	if (SPI_processed == 0)
		really_delete = true;
	else
	{
		char	   *type = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		really_delete = strcmp(type, "secret") == 0;
	}

	if (!really_delete && strcmp(status, "deleted") != 0)
	{
		if (SPI_execute_with_args("UPDATE pod.messages SET status = 'deleted', deleted_at = now(), "
								  "data = data - " TOMBSTONE_STRIP " WHERE id = $1",
								  1, int8_type, &id, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not write the message's tombstone");
		/* Earlier versions hold the text the sender just withdrew. */
		if (SPI_execute_with_args("DELETE FROM pod.message_versions WHERE message_id = $1",
								  1, int8_type, &id, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove the message's earlier versions");
	}
	SPI_finish();

	return really_delete ? PointerGetDatum(old) : PointerGetDatum(NULL);
}

/*
 * Is this update the foreign key's ON DELETE SET NULL of author_id (the author's
 * account removed): author_id from a value to NULL, every other column as it was?
 */
static bool
author_removed(TupleDesc desc, HeapTuple old, HeapTuple new)
{
	int			author = SPI_fnumber(desc, "author_id");
	bool		old_null,
				new_null;

	(void) heap_getattr(old, author, desc, &old_null);
	(void) heap_getattr(new, author, desc, &new_null);
	if (old_null || !new_null)
		return false;
	for (int i = 1; i <= desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i - 1);
		Datum		a,
					b;

		if (i == author || att->attisdropped)
			continue;
		a = heap_getattr(old, i, desc, &old_null);
		b = heap_getattr(new, i, desc, &new_null);
		if (old_null != new_null ||
			(!old_null && !datumIsEqual(a, b, att->attbyval, att->attlen)))
			return false;
	}
	return true;
}

/* BEFORE UPDATE: keep the previous content as a version; mark the message edited. */
Datum
messages_track_edit(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = expect_row_trigger(fcinfo, "messages_track_edit", false);
	HeapTuple	old = trigdata->tg_trigtuple;
	HeapTuple	new = trigdata->tg_newtuple;
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	bool		old_null,
				new_null;
	const char *fixed[] = {"id", "room_id", "author_id", "sent_at", "type"};
	char	   *old_status = DatumGetCString(DirectFunctionCall1(enum_out,
																	  column(trigdata, old, "status", &old_null)));
	char	   *new_status = DatumGetCString(DirectFunctionCall1(enum_out,
																	  column(trigdata, new, "status", &new_null)));
	Datum		old_data,
				new_data;

	/* The author's account is removed: the message stays, deleted or not, unattributed
	 * (no version, not marked edited). */
	if (author_removed(desc, old, new))
		return PointerGetDatum(new);

	if (strcmp(old_status, "deleted") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("message is deleted"),
				 errdetail("A deleted message cannot be changed.")));

	for (int i = 0; i < lengthof(fixed); i++)
	{
		int			attnum = SPI_fnumber(desc, fixed[i]);
		Datum		a = column(trigdata, old, fixed[i], &old_null);
		Datum		b = column(trigdata, new, fixed[i], &new_null);
		Form_pg_attribute att = TupleDescAttr(desc, attnum - 1);

		if (old_null != new_null ||
			(!old_null && !datumIsEqual(a, b, att->attbyval, att->attlen)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" of a message cannot be changed", fixed[i]),
					 errhint("Only data can be edited; delete the message to withdraw it.")));
	}

	/* The tombstone written by messages_soft_delete passes through unchanged. */
	if (strcmp(new_status, "deleted") == 0)
		return PointerGetDatum(new);

	old_data = column(trigdata, old, "data", &old_null);
	new_data = column(trigdata, new, "data", &new_null);
	if (!new_null && !DatumGetBool(DirectFunctionCall2(jsonb_eq, old_data, new_data)))
	{
		Datum		args[2];
		Oid			types[2] = {INT8OID, JSONBOID};
		int			cols[2] = {SPI_fnumber(desc, "status"), SPI_fnumber(desc, "edited_at")};
		Datum		values[2];
		bool		nulls[2] = {false, false};

		args[0] = column(trigdata, old, "id", &old_null);
		args[1] = old_data;
		SPI_connect();
		if (SPI_execute_with_args("INSERT INTO pod.message_versions (message_id, version, data, edited_at) "
								  "SELECT $1, coalesce(max(version), 0) + 1, $2, now() "
								  "FROM pod.message_versions WHERE message_id = $1",
								  2, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not keep the message's previous version");
		SPI_finish();

		values[0] = DirectFunctionCall2(enum_in, CStringGetDatum("edited"),
										ObjectIdGetDatum(TupleDescAttr(desc, cols[0] - 1)->atttypid));
		values[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		new = heap_modify_tuple_by_cols(new, desc, 2, cols, values, nulls);
	}
	return PointerGetDatum(new);
}
