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

#include "commands/trigger.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(current_user_id_cached);
PG_FUNCTION_INFO_V1(sessions_forget_user);

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
