/*
 * identity.c — pod.current_user_id(), remembered for the rest of the transaction.
 *
 * Who is calling is asked several times per request: a column default, a policy's
 * check, the posting trigger, the event trigger... Each time the plpgsql lookup
 * (pod.session_user_id(): the claims parsed, the session read by its key) cost tens
 * of microseconds, a large share of a chat post. The answer cannot change within a
 * transaction unless the claims do (compared as text) or a session changes (every
 * UPDATE or DELETE of pod.sessions forgets it: pod.sessions_forget_user, a statement
 * trigger), so the first lookup of a transaction is kept in this backend's memory,
 * where no SQL can write it. Only a user is kept: no claims is answered at once, and
 * errors (PT401) are raised by the lookup each time.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "pgpod.h"
#include "utils/timestamp.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(current_user_id_cached);
PG_FUNCTION_INFO_V1(sessions_forget_user);
PG_FUNCTION_INFO_V1(session_user_id);

static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static char *cached_claims;   /* TopMemoryContext */
static pg_uuid_t cached_user;

Datum
current_user_id_cached(PG_FUNCTION_ARGS)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	FmgrInfo flinfo;
	LOCAL_FCINFO(call, 0);
	Datum user;
	pg_uuid_t *result;
	Oid lookup;
	char *asked;

	if (claims == NULL || claims[0] == '\0')
		PG_RETURN_NULL(); /* no claims: nobody (as pod.session_user_id says) */
	if (cached_claims != NULL && cached_lxid == MyProc->lxid && strcmp(cached_claims, claims) == 0) {
		result = palloc(sizeof(pg_uuid_t));
		*result = cached_user;
		PG_RETURN_UUID_P(result);
	}
	asked = pstrdup(claims);
	lookup = LookupFuncName(list_make2(makeString("pod"), makeString("session_user_id")), 0, NULL, false);
	fmgr_info(lookup, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 0, InvalidOid, NULL, NULL);
	user = FunctionCallInvoke(call);
	if (call->isnull)
		PG_RETURN_NULL();
	/* kept only for the claims it was asked with (nothing the lookup ran changed them) */
	claims = GetConfigOption("request.jwt.claims", true, false);
	if (claims != NULL && strcmp(claims, asked) == 0) {
		char *copy = MemoryContextStrdup(TopMemoryContext, asked);

		if (cached_claims != NULL)
			pfree(cached_claims);
		cached_claims = copy;
		cached_user = *DatumGetUUIDP(user);
		cached_lxid = MyProc->lxid;
	}
	return user;
}

/* Statement trigger on pod.sessions: a session changed, ask again. */
Datum
sessions_forget_user(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("pod.sessions_forget_user() is a trigger function")));
	cached_lxid = InvalidLocalTransactionId;
	return PointerGetDatum(NULL);
}

/*
 * pod.session_user_id(): the user of the claims' live session (sid and sub, in the
 * canonical form pod.login writes), NULL without a sid; PT401 for malformed claims or
 * an ended session. Was plpgsql; in C it skips a plpgsql function's setup, which every
 * request's transaction paid once.
 */
static bool
canonical_uuid(const char *s)
{
	int i;

	if (s == NULL || strlen(s) != 36)
		return false;
	for (i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	}
	return true;
}

/* claims ->> key, as a C string or NULL */
static char *
claim_text(Datum claims, const char *key)
{
	bool isnull;
	Datum v = pgpod_jsonb_field(claims, key, true, &isnull);

	return isnull ? NULL : TextDatumGetCString(v);
}

Datum
session_user_id(PG_FUNCTION_ARGS)
{
	const char *setting = GetConfigOption("request.jwt.claims", true, false);
	Datum claims;
	char *sid, *sub;
	Datum sid_d, sub_d;
	HeapTuple s;
	TupleDesc desc;
	pg_uuid_t *uid;
	bool ok = false;

	/* pod.jwt_claims(): no claims is '{}', which has no sid */
	if (setting == NULL || setting[0] == '\0')
		PG_RETURN_NULL();
	claims = DirectFunctionCall1(jsonb_in, CStringGetDatum(setting));
	sid = claim_text(claims, "sid");
	if (sid == NULL)
		PG_RETURN_NULL();
	sub = claim_text(claims, "sub");
	/* (a missing sub is no match below, as sub::uuid NULL was) */
	if (!canonical_uuid(sid) || (sub != NULL && !canonical_uuid(sub)))
		ereport(ERROR, (errcode(MAKE_SQLSTATE('P', 'T', '4', '0', '1')), errmsg("malformed session claims")));
	if (sub != NULL)
	{
		sid_d = DirectFunctionCall1(uuid_in, CStringGetDatum(sid));
		sub_d = DirectFunctionCall1(uuid_in, CStringGetDatum(sub));
		/* s.id = sid AND s.user_id = sub AND s.revoked_at IS NULL AND s.expires_at > now() */
		s = pgpod_fetch_one("sessions", "sessions_pkey", sid_d, (Datum)0, &desc);
		if (s != NULL)
		{
			bool un, rn, en;
			Datum user = heap_getattr(s, SPI_fnumber(desc, "user_id"), desc, &un);
			Datum expires = heap_getattr(s, SPI_fnumber(desc, "expires_at"), desc, &en);

			(void)heap_getattr(s, SPI_fnumber(desc, "revoked_at"), desc, &rn);
			ok = !un && memcmp(DatumGetUUIDP(user), DatumGetUUIDP(sub_d), UUID_LEN) == 0 && rn && !en &&
			     DatumGetTimestampTz(expires) > GetCurrentTransactionStartTimestamp();
		}
	}
	if (!ok)
		ereport(ERROR, (errcode(MAKE_SQLSTATE('P', 'T', '4', '0', '1')), errmsg("session has ended"),
		                errhint("Log in again.")));
	uid = palloc(sizeof(pg_uuid_t));
	*uid = *DatumGetUUIDP(sub_d);
	PG_RETURN_UUID_P(uid);
}
