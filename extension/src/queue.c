/*
 * queue.c — the queue's wake-ups: one NOTIFY per statement and job kind, never one per
 * row, and none when no worker of the kind is asleep. A BEFORE INSERT row trigger on
 * pod.jobs counts the ready rows per kind in backend memory (no transition table, no
 * per-row PL call); the AFTER INSERT statement trigger sends pod_jobs_<kind> with the
 * count as payload and clears the tally. The tally lives in TopTransactionContext,
 * tagged with the (sub)transaction that made it, so a tally left by a failed statement
 * is dropped, not sent.
 *
 * Sleep locks. Every notifying commit in PostgreSQL 15 takes a database-wide lock and
 * wakes every LISTENing session of the database; a busy worker that will claim again
 * anyway does not need it. So a worker that goes to sleep holds its kind's sleep lock
 * (an advisory lock, SHARE, session-level), and an inserting statement notifies only
 * when it cannot take the same lock in ROW EXCLUSIVE mode at once (some worker is
 * asleep, or about to be). When it can, it keeps that lock until it commits, and a
 * worker that wants to sleep waits for it, then claims once more: the new jobs are
 * committed by then, so none is left without a wake-up (the proof is in the README).
 * pod.job_claim manages the lock for its callers (see job_sleep_prepare); a worker
 * may also hold it explicitly (pod.job_sleep) to be notified of every insert.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "common/hashfn.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(jobs_notify_count);
PG_FUNCTION_INFO_V1(jobs_notify_send);
PG_FUNCTION_INFO_V1(job_sleep);
PG_FUNCTION_INFO_V1(job_wake);
PG_FUNCTION_INFO_V1(job_claim_begin);
PG_FUNCTION_INFO_V1(job_claim_end);

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

/* --- sleep locks ------------------------------------------------------------------- */

/* The advisory lock tag of a kind's sleep lock: (database, hash of the kind, 'pgpod',
 * 112). SQL's advisory functions only make tags whose last field is 1 or 2, so no
 * application lock can be taken for it; pg_locks shows it as locktype 'advisory',
 * classid = hash, objid = 0x70676f64, objsubid = 112. */
#define SLEEP_LOCK_KEY 0x70676f64
#define SLEEP_LOCK_FIELD4 112

static void
sleep_lock_tag(LOCKTAG *tag, const char *kind)
{
	uint32 h = hash_bytes((const unsigned char *)kind, (int)strlen(kind));

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, h, SLEEP_LOCK_KEY, SLEEP_LOCK_FIELD4);
}

/* Whether a worker of the kind may be asleep (then the statement notifies). When none
 * is, this transaction keeps the lock in ROW EXCLUSIVE mode until it ends, so that a
 * worker going to sleep waits for its jobs to be committed before its last claim. */
static bool
job_worker_asleep(const char *kind)
{
	LOCKTAG tag;

	sleep_lock_tag(&tag, kind);
	if (LockHeldByMe(&tag, ShareLock))
		return true; /* this session's own worker sleeps on the kind */
	return LockAcquire(&tag, RowExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL;
}

/* Per kind, this session's holds of the sleep lock. The lock counts each acquisition;
 * the flags say which of them are ours to give back, and are checked against the lock
 * table (pg_advisory_unlock_all or DISCARD ALL release it behind our back). */
typedef struct ClaimState
{
	char kind[KIND_MAX];
	bool last_short;  /* the last claim returned fewer jobs than asked */
	bool claim_holds; /* pod.job_claim took the lock */
	bool sleep_holds; /* pod.job_sleep took the lock */
	struct ClaimState *next;
} ClaimState;

static ClaimState *claim_states;

static char *
kind_arg(FunctionCallInfo fcinfo)
{
	char *kind;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("job kind must not be null")));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(kind) >= KIND_MAX)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("job kind is longer than %d bytes", KIND_MAX - 1)));
	return kind;
}

static ClaimState *
claim_state(FunctionCallInfo fcinfo, LOCKTAG *tag)
{
	char *kind = kind_arg(fcinfo);
	ClaimState *st;

	sleep_lock_tag(tag, kind);
	for (st = claim_states; st; st = st->next)
		if (strcmp(st->kind, kind) == 0)
			break;
	if (st == NULL)
	{
		st = MemoryContextAllocZero(TopMemoryContext, sizeof(ClaimState));
		strlcpy(st->kind, kind, KIND_MAX);
		st->next = claim_states;
		claim_states = st;
	}
	if (!LockHeldByMe(tag, ShareLock))
		st->claim_holds = st->sleep_holds = false;
	return st;
}

/* Gives back one hold of the sleep lock (the flag says it was ours). */
static void
sleep_lock_release(LOCKTAG *tag, bool *holds)
{
	if (*holds)
	{
		*holds = false;
		LockRelease(tag, ShareLock, true);
	}
}

/* pod.job_sleep(kind): this session's worker sleeps on the kind and wants a NOTIFY
 * for every insert until pod.job_wake (first waits for inserting transactions that
 * saw no sleeper to end). Returns false when it already held it this way. */
Datum
job_sleep(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;
	ClaimState *st = claim_state(fcinfo, &tag);

	if (st->sleep_holds)
		PG_RETURN_BOOL(false);
	(void)LockAcquire(&tag, ShareLock, true, false);
	st->sleep_holds = true;
	PG_RETURN_BOOL(true);
}

/* pod.job_wake(kind): gives back what pod.job_sleep took; false if it held nothing. */
Datum
job_wake(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;
	ClaimState *st = claim_state(fcinfo, &tag);
	bool held = st->sleep_holds;

	sleep_lock_release(&tag, &st->sleep_holds);
	PG_RETURN_BOOL(held);
}

/* Called by pod.job_claim before it claims: when the previous claim of the kind in
 * this session came back short (its worker may be about to sleep), take the sleep
 * lock first, so that this claim sees every job whose insert did not notify. */
Datum
job_claim_begin(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;
	ClaimState *st = claim_state(fcinfo, &tag);

	if (!st->last_short || st->claim_holds || st->sleep_holds)
		PG_RETURN_VOID();
	(void)LockAcquire(&tag, ShareLock, true, false);
	st->claim_holds = true;
	PG_RETURN_VOID();
}

/* Called by pod.job_claim after it claimed: a full batch means its worker claims
 * again, so inserts need not wake it (the claim's hold is given back); a short one is
 * remembered for the next claim. */
Datum
job_claim_end(PG_FUNCTION_ARGS)
{
	LOCKTAG tag;
	ClaimState *st = claim_state(fcinfo, &tag);
	bool full = PG_GETARG_BOOL(1);

	st->last_short = !full;
	if (full)
		sleep_lock_release(&tag, &st->claim_holds);
	PG_RETURN_VOID();
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

		if (!job_worker_asleep(todo[i].kind))
			continue; /* every worker of the kind will claim again */
		snprintf(channel, sizeof(channel), "pod_jobs_%s", todo[i].kind);
		snprintf(payload, sizeof(payload), INT64_FORMAT, todo[i].ready);
		Async_Notify(channel, payload);
	}
	return PointerGetDatum(NULL);
}
