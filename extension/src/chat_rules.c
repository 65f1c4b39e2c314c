/*
 * chat_rules.c — the hot parts of the chat rules (sql/51_livechat_rules.sql) in C.
 *
 * pod.forbidden_word_in(text, words): the first forbidden entry a message contains,
 * as the plpgsql version did it (words match whole words of the folded text, as
 * pod.chat_fold folds it; /regex/ entries match the NFKC text case-insensitively,
 * ICU collation), with the same built-in functions, but the text folded once and the
 * entries folded once per list of words (kept for the next call while the list is the
 * same: every post of a room checks the same list).
 *
 * pod.room_view(room) and pod.guest_view(room): what row-level security asks for every
 * row of a room (may the caller read it, is the caller a moderator), answered once per
 * room and snapshot. The answer comes from pod.room_role / pod.guest_reads (the rule
 * stays in SQL); it is kept while nothing it could read can have changed: the same
 * transaction and subtransaction, the same snapshot contents (xmin, xmax, the in-progress transactions
 * and command id, which decide what an MVCC snapshot sees), claims and role. A page of history, or the RETURNING of a post, thus asks once per
 * room, not once per row.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(forbidden_word_in);
PG_FUNCTION_INFO_V1(room_view);
PG_FUNCTION_INFO_V1(guest_view);

/* --- forbidden words ---------------------------------------------------------------- */

static Oid
icu_collation(void)
{
	static Oid coll = InvalidOid;

	if (!OidIsValid(coll))
		coll = get_collation_oid(list_make2(makeString("pg_catalog"), makeString("und-x-icu")), false);
	return coll;
}

/* normalize(t, NFKC) */
static text *
nfkc(text *t)
{
	return DatumGetTextPP(DirectFunctionCall2(unicode_normalize_func, PointerGetDatum(t),
	                                          CStringGetTextDatum("NFKC")));
}

/* pod.chat_fold of a text already NFKC: ' ' || btrim(regexp_replace(lower(x COLLATE
 * "und-x-icu"), '[^[:alnum:]]+', ' ', 'g')) || ' ' (every call under that collation, as
 * the SQL expression's collation derivation has it). Returns a palloc'd C string. */
static char *
fold_nfkc(text *normalized)
{
	Oid coll = icu_collation();
	Datum lowered = DirectFunctionCall1Coll(lower, coll, PointerGetDatum(normalized));
	Datum replaced = DirectFunctionCall4Coll(textregexreplace, coll, lowered,
	                                         CStringGetTextDatum("[^[:alnum:]]+"),
	                                         CStringGetTextDatum(" "), CStringGetTextDatum("g"));
	text *trimmed = DatumGetTextPP(DirectFunctionCall1Coll(btrim1, coll, replaced));
	int len = VARSIZE_ANY_EXHDR(trimmed);
	char *out = palloc(len + 3);

	out[0] = ' ';
	memcpy(out + 1, VARDATA_ANY(trimmed), len);
	out[len + 1] = ' ';
	out[len + 2] = '\0';
	return out;
}

/* The entries of the last list of words seen, folded (NULL: a regex or a null entry). */
static Jsonb *cached_words;  /* TopMemoryContext copy */
static int cached_nwords;
static char **cached_folded; /* TopMemoryContext */

static bool
is_regex_entry(text *w)
{
	const char *s = VARDATA_ANY(w);
	int len = VARSIZE_ANY_EXHDR(w);

	/* length(w) >= 2 AND left(w, 1) = '/' AND right(w, 1) = '/': '/' is one byte, and
	 * no byte of a multibyte UTF-8 character is '/' */
	return len >= 2 && s[0] == '/' && s[len - 1] == '/';
}

static void
cache_words(Jsonb *words, int n)
{
	char **folded;
	Jsonb *copy;
	int i;

	if (cached_words != NULL && cached_nwords == n && VARSIZE(cached_words) == VARSIZE(words) &&
	    memcmp(cached_words, words, VARSIZE(words)) == 0)
		return;
	/* fold first (this may fail), then replace the cache */
	folded = MemoryContextAllocZero(TopMemoryContext, sizeof(char *) * (n > 0 ? n : 1));
	PG_TRY();
	{
		for (i = 0; i < n; i++)
		{
			Datum w;
			LOCAL_FCINFO(call, 2);

			InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
			call->args[0].value = JsonbPGetDatum(words);
			call->args[0].isnull = false;
			call->args[1].value = Int32GetDatum(i);
			call->args[1].isnull = false;
			w = jsonb_array_element_text(call);
			if (call->isnull || is_regex_entry(DatumGetTextPP(w)))
				continue;
			/* pod.chat_fold(w) */
			{
				char *f = fold_nfkc(nfkc(DatumGetTextPP(w)));

				folded[i] = MemoryContextStrdup(TopMemoryContext, f);
			}
		}
	}
	PG_CATCH();
	{
		for (i = 0; i < n; i++)
			if (folded[i] != NULL)
				pfree(folded[i]);
		pfree(folded);
		PG_RE_THROW();
	}
	PG_END_TRY();
	copy = MemoryContextAlloc(TopMemoryContext, VARSIZE(words));
	memcpy(copy, words, VARSIZE(words));
	if (cached_words != NULL)
	{
		for (i = 0; i < cached_nwords; i++)
			if (cached_folded[i] != NULL)
				pfree(cached_folded[i]);
		pfree(cached_folded);
		pfree(cached_words);
	}
	cached_words = copy;
	cached_nwords = n;
	cached_folded = folded;
}

/* pod.forbidden_word_in(t text, words jsonb) RETURNS text */
Datum
forbidden_word_in(PG_FUNCTION_ARGS)
{
	text *t;
	Jsonb *words;
	text *normalized;
	char *folded = NULL;
	int n, i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	t = PG_GETARG_TEXT_PP(0);
	words = PG_GETARG_JSONB_P(1);
	/* jsonb_array_length: the same error for a list that is not an array */
	n = DatumGetInt32(DirectFunctionCall1(jsonb_array_length, JsonbPGetDatum(words)));
	if (n == 0)
		PG_RETURN_NULL();
	cache_words(words, n);
	normalized = nfkc(t);
	for (i = 0; i < n; i++)
	{
		Datum w;
		text *entry;
		LOCAL_FCINFO(call, 2);

		InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
		call->args[0].value = JsonbPGetDatum(words);
		call->args[0].isnull = false;
		call->args[1].value = Int32GetDatum(i);
		call->args[1].isnull = false;
		w = jsonb_array_element_text(call);
		if (call->isnull)
			continue; /* a null entry matches nothing */
		entry = DatumGetTextPP(w);
		if (is_regex_entry(entry))
		{
			/* (nfkc COLLATE "und-x-icu") ~* substr(w, 2, length(w) - 2) */
			text *pattern = cstring_to_text_with_len(VARDATA_ANY(entry) + 1, VARSIZE_ANY_EXHDR(entry) - 2);

			if (DatumGetBool(DirectFunctionCall2Coll(texticregexeq, icu_collation(),
			                                         PointerGetDatum(normalized), PointerGetDatum(pattern))))
				PG_RETURN_TEXT_P(entry);
		}
		else
		{
			/* strpos(folded, pod.chat_fold(w)) > 0 */
			if (folded == NULL)
				folded = fold_nfkc(normalized);
			if (cached_folded[i] != NULL && strstr(folded, cached_folded[i]) != NULL)
				PG_RETURN_TEXT_P(entry);
		}
	}
	PG_RETURN_NULL();
}

/* --- room views for row-level security --------------------------------------------- */

typedef struct view_memo
{
	bool valid;
	LocalTransactionId lxid;
	SubTransactionId subxact; /* a rolled-back savepoint's changes are not seen */
	/* the snapshot's contents: what an MVCC snapshot sees is decided by these */
	CommandId curcid;
	TransactionId xmin;
	TransactionId xmax;
	uint32 xcnt;
	int32 subxcnt;
	bool suboverflowed;
	TransactionId *xip;    /* TopMemoryContext, xip_size entries */
	TransactionId *subxip; /* TopMemoryContext, subxip_size entries */
	uint32 xip_size;
	int32 subxip_size;
	Oid userid;
	pg_uuid_t room;
	char *claims; /* TopMemoryContext; NULL: no claims */
	int32 result;
} view_memo;

static view_memo memos[2];

/* The snapshot the caller's query reads with, when its contents can be compared. */
static Snapshot
comparable_snapshot(void)
{
	Snapshot snap;

	if (!ActiveSnapshotSet())
		return NULL;
	snap = GetActiveSnapshot();
	if (snap->snapshot_type != SNAPSHOT_MVCC || snap->takenDuringRecovery)
		return NULL;
	return snap;
}

static bool
same_snapshot(view_memo *m, Snapshot snap)
{
	return m->curcid == snap->curcid && m->xmin == snap->xmin && m->xmax == snap->xmax && m->xcnt == snap->xcnt &&
	       m->subxcnt == snap->subxcnt && m->suboverflowed == snap->suboverflowed &&
	       (snap->xcnt == 0 || memcmp(m->xip, snap->xip, sizeof(TransactionId) * snap->xcnt) == 0) &&
	       (snap->subxcnt <= 0 || memcmp(m->subxip, snap->subxip, sizeof(TransactionId) * snap->subxcnt) == 0);
}

static void
remember_snapshot(view_memo *m, Snapshot snap)
{
	if (snap->xcnt > m->xip_size)
	{
		if (m->xip != NULL)
			pfree(m->xip);
		m->xip = MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * snap->xcnt);
		m->xip_size = snap->xcnt;
	}
	if (snap->subxcnt > m->subxip_size)
	{
		if (m->subxip != NULL)
			pfree(m->subxip);
		m->subxip = MemoryContextAlloc(TopMemoryContext, sizeof(TransactionId) * snap->subxcnt);
		m->subxip_size = snap->subxcnt;
	}
	if (snap->xcnt > 0)
		memcpy(m->xip, snap->xip, sizeof(TransactionId) * snap->xcnt);
	if (snap->subxcnt > 0)
		memcpy(m->subxip, snap->subxip, sizeof(TransactionId) * snap->subxcnt);
	m->curcid = snap->curcid;
	m->xmin = snap->xmin;
	m->xmax = snap->xmax;
	m->xcnt = snap->xcnt;
	m->subxcnt = snap->subxcnt;
	m->suboverflowed = snap->suboverflowed;
}

static const char *
current_claims(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);

	return claims != NULL && claims[0] != '\0' ? claims : NULL;
}

static bool
claims_equal(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* pod.<fname>(room) through the function manager (SECURITY DEFINER and all). */
static Datum
call_room_function(const char *fname, Datum room, bool *isnull)
{
	Oid argtypes[1] = {UUIDOID};
	Oid fn = LookupFuncName(list_make2(makeString("pod"), makeString((char *) fname)), 1, argtypes, false);
	FmgrInfo flinfo;
	Datum result;
	LOCAL_FCINFO(call, 1);

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 1, InvalidOid, NULL, NULL);
	call->args[0].value = room;
	call->args[0].isnull = false;
	result = FunctionCallInvoke(call);
	*isnull = call->isnull;
	return result;
}

/* 0: may not read the room, 1: reads it, 2: moderates it (owner or admin), as
 * pod.can_read_room and pod.can_moderate_room say from pod.room_role. */
static int32
compute_room_view(Datum room)
{
	bool isnull;
	Datum role = call_room_function("room_role", room, &isnull);
	char *r;

	if (isnull)
		return 0;
	r = TextDatumGetCString(role);
	if (strcmp(r, "owner") == 0 || strcmp(r, "admin") == 0)
		return 2;
	return strcmp(r, "outcast") == 0 ? 0 : 1;
}

/* 1 if pod.guest_reads(room) (which refuses a reader without a chat token), else 0. */
static int32
compute_guest_view(Datum room)
{
	bool isnull;
	Datum reads = call_room_function("guest_reads", room, &isnull);

	return !isnull && DatumGetBool(reads) ? 1 : 0;
}

/* The answer for the same room and state, or a new one. */
static int32
memo_view(int which, pg_uuid_t *room)
{
	view_memo *m = &memos[which];
	const char *claims = current_claims();
	Snapshot snap = comparable_snapshot();
	int32 result;

	if (snap != NULL && m->valid && m->lxid == MyProc->lxid && m->subxact == GetCurrentSubTransactionId() &&
	    m->userid == GetUserId() &&
	    memcmp(&m->room, room, UUID_LEN) == 0 && same_snapshot(m, snap) && claims_equal(m->claims, claims))
		return m->result;
	m->valid = false;
	if (claims != NULL)
		claims = pstrdup(claims); /* the call may change the setting */
	result = which == 0 ? compute_room_view(UUIDPGetDatum(room)) : compute_guest_view(UUIDPGetDatum(room));
	/* kept only if the call left the claims and the snapshot as they were */
	if (snap != NULL && ActiveSnapshotSet() && snap == GetActiveSnapshot() &&
	    snap->curcid == GetActiveSnapshot()->curcid && claims_equal(claims, current_claims()))
	{
		if (!claims_equal(m->claims, claims))
		{
			char *copy = claims ? MemoryContextStrdup(TopMemoryContext, claims) : NULL;

			if (m->claims != NULL)
				pfree(m->claims);
			m->claims = copy;
		}
		m->lxid = MyProc->lxid;
		m->subxact = GetCurrentSubTransactionId();
		remember_snapshot(m, snap);
		m->userid = GetUserId();
		memcpy(&m->room, room, UUID_LEN);
		m->result = result;
		m->valid = true;
	}
	return result;
}

/* pod.room_view(room uuid) RETURNS integer: 0 none, 1 reader, 2 moderator. */
Datum
room_view(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	PG_RETURN_INT32(memo_view(0, PG_GETARG_UUID_P(0)));
}

/* pod.guest_view(room uuid) RETURNS boolean: pod.guest_reads(room), once per room and state. */
Datum
guest_view(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(memo_view(1, PG_GETARG_UUID_P(0)) == 1);
}

/* --- posting: pod.messages_check_post ------------------------------------------------ */

/*
 * BEFORE INSERT row trigger on pod.messages: every rule a post meets, whoever posts and
 * by whatever path (the gateway, SQL, a remote pod's delivery through
 * pod.chat_remote_post). It was plpgsql; a plpgsql function sets up each of its
 * expressions again in every transaction, and a post is a transaction of its own, so
 * that setup was most of the check. The rules and their order are the same: the room,
 * the poster's role, mute and right to post, and the options in force for a poster
 * who is not a moderator come from one statement (the options read as
 * pod.validate_chat_options admitted them); guest_id, author_ref, hidden and
 * held_until are granted to no API role, so a row arriving with guest_id set comes
 * from the pod's own code (a remote post, rules applied) and one with author_ref set
 * and no guest is the pod's own (a room event, a remote room's mirror).
 */
PG_FUNCTION_INFO_V1(messages_check_post);

#define ERRCODE_PT401 MAKE_SQLSTATE('P', 'T', '4', '0', '1')
#define ERRCODE_PT429 MAKE_SQLSTATE('P', 'T', '4', '2', '9')

static SPIPlanPtr post_rules_plan;
static SPIPlanPtr guest_plan;
static SPIPlanPtr slow_plan;
static SPIPlanPtr slow_wait_plan;

static SPIPlanPtr
keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		*slot = plan;
	}
	return *slot;
}

/* A C function of this library called without arguments through the function manager. */
static Datum
call0(PGFunction fn, bool *isnull)
{
	LOCAL_FCINFO(call, 0);
	Datum d;

	InitFunctionCallInfoData(*call, NULL, 0, InvalidOid, NULL, NULL);
	d = fn(call);
	*isnull = call->isnull;
	return d;
}

/* pod.<fname>() (an SQL or plpgsql function: privileges and SECURITY DEFINER apply) */
static Datum
call_named0(const char *fname, bool *isnull)
{
	Oid fn = LookupFuncName(list_make2(makeString("pod"), makeString((char *) fname)), 0, NULL, false);
	FmgrInfo flinfo;
	Datum d;
	LOCAL_FCINFO(call, 0);

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*call, &flinfo, 0, InvalidOid, NULL, NULL);
	d = FunctionCallInvoke(call);
	*isnull = call->isnull;
	return d;
}

extern Datum current_user_id_cached(PG_FUNCTION_ARGS);

/* pod.jwt_claims() ->> key for claims that are set: a C string or NULL */
static char *
claim_text_of(const char *claims, const char *key)
{
	LOCAL_FCINFO(call, 2);
	Datum v;

	InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
	call->args[0].value = DirectFunctionCall1(jsonb_in, CStringGetDatum(claims));
	call->args[0].isnull = false;
	call->args[1].value = CStringGetTextDatum(key);
	call->args[1].isnull = false;
	v = jsonb_object_field_text(call);
	return call->isnull ? NULL : TextDatumGetCString(v);
}

static int
attnum_of(TupleDesc desc, const char *name)
{
	int n = SPI_fnumber(desc, name);

	if (n <= 0)
		elog(ERROR, "pod.messages has no column \"%s\"", name);
	return n;
}

static Datum
get_col(SPITupleTable *t, int col, bool *isnull)
{
	return SPI_getbinval(t->vals[0], t->tupdesc, col, isnull);
}

static bool
get_bool(SPITupleTable *t, int col)
{
	bool isnull;
	Datum d = get_col(t, col, &isnull);

	return !isnull && DatumGetBool(d);
}

Datum
messages_check_post(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *)fcinfo->context;
	TupleDesc desc;
	HeapTuple row;
	int a_room, a_author, a_guest, a_ref, a_type, a_data, a_hidden, a_held;
	bool isnull, guest_null, author_null, ref_null, enforce;
	const char *enforce_setting;
	Datum room, guest, author, uid = (Datum)0, poster;
	bool uid_null = true;
	char *room_text;
	char guest_role[16] = "";
	bool guest_muted = false;
	Datum new_guest = (Datum)0, new_ref = (Datum)0;
	bool set_guest = false, set_hidden = false, set_held = false;
	Datum held_value = (Datum)0;
	char *role;
	int rc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
	    !TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
		                errmsg("pod.messages_check_post must be a BEFORE INSERT row trigger")));
	desc = RelationGetDescr(trigdata->tg_relation);
	row = trigdata->tg_trigtuple;
	a_room = attnum_of(desc, "room_id");
	a_author = attnum_of(desc, "author_id");
	a_guest = attnum_of(desc, "guest_id");
	a_ref = attnum_of(desc, "author_ref");
	a_type = attnum_of(desc, "type");
	a_data = attnum_of(desc, "data");
	a_hidden = attnum_of(desc, "hidden");
	a_held = attnum_of(desc, "held_until");

	(void)heap_getattr(row, a_ref, desc, &ref_null);
	guest = heap_getattr(row, a_guest, desc, &guest_null);
	if (!ref_null && guest_null)
		return PointerGetDatum(row); /* the pod's own: a room event, a remote room's mirror */
	room = heap_getattr(row, a_room, desc, &isnull);
	if (isnull)
		return PointerGetDatum(row); /* NOT NULL refuses it */
	room_text = DatumGetCString(DirectFunctionCall1(uuid_out, room));
	author = heap_getattr(row, a_author, desc, &author_null);
	enforce_setting = GetConfigOption("pod.chat_enforce", true, false);
	enforce = enforce_setting != NULL && strcmp(enforce_setting, "on") == 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* a remote post (pod.chat_remote_post) is the guest's, whoever runs the delivery */
	if (!(!guest_null && enforce))
		uid = call0(current_user_id_cached, &uid_null);
	if (uid_null && guest_null && !enforce)
	{
		/* the superuser (psql, a restore) or a maintenance job writes as it likes */
		const char *claims = current_claims();
		char *guest_claim = NULL;

		if (claims != NULL)
			guest_claim = claim_text_of(claims, "guest");
		if (guest_claim == NULL)
		{
			Datum admin = call_named0("is_admin", &isnull);

			if (!isnull && DatumGetBool(admin))
			{
				SPI_finish();
				return PointerGetDatum(row);
			}
		}
	}
	if (uid_null)
	{
		Datum gid = guest;
		bool gid_null = guest_null;
		Oid types[1] = {UUIDOID};
		SPITupleTable *t;

		if (gid_null)
			gid = call_named0("current_guest_id", &gid_null);
		if (!gid_null)
		{
			rc = SPI_execute_plan(keep_plan(&guest_plan,
			                                "SELECT id, room_id, kind, name, affiliation::text, is_muted, "
			                                "kind = 'anonymous' AND expires_at <= now() "
			                                "FROM pod.chat_guests WHERE id = $1",
			                                1, types),
			                      &gid, NULL, false, 1);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "guest look-up: %s", SPI_result_code_string(rc));
		}
		if (gid_null || SPI_processed == 0)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("sign in or join the chat to post")));
		t = SPI_tuptable;
		if (!author_null)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("a guest's message has no local author")));
		{
			Datum g_room = get_col(t, 2, &isnull);

			if (isnull || memcmp(DatumGetUUIDP(g_room), DatumGetUUIDP(room), UUID_LEN) != 0)
				ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("your chat token is for another room")));
		}
		if (get_bool(t, 7))
			ereport(ERROR, (errcode(ERRCODE_PT401), errmsg("anonymous chat token has expired")));
		{
			char *kind = TextDatumGetCString(get_col(t, 3, &isnull));
			Datum aff = get_col(t, 5, &isnull);
			bool outcast = !isnull && strcmp(TextDatumGetCString(aff), "outcast") == 0;

			strlcpy(guest_role, outcast ? "outcast" : kind, sizeof(guest_role));
		}
		guest_muted = get_bool(t, 6);
		new_guest = SPI_datumTransfer(get_col(t, 1, &isnull), false, UUID_LEN);
		new_ref = SPI_datumTransfer(get_col(t, 4, &isnull), false, -1);
		set_guest = true;
		poster = new_guest;
	}
	else
	{
		if (!guest_null)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("a signed-in user posts as themselves")));
		if (author_null || memcmp(DatumGetUUIDP(author), DatumGetUUIDP(uid), UUID_LEN) != 0)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("a message's author must be the calling user")));
		poster = uid;
	}
	{
		Datum type = heap_getattr(row, a_type, desc, &isnull);
		char *type_text = isnull ? NULL : DatumGetCString(DirectFunctionCall1(enum_out, type));

		if (type_text != NULL && strcmp(type_text, "message") != 0)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("only the pod writes %s messages", type_text)));
	}

	/* the rest in one statement */
	{
		Oid types[5] = {UUIDOID, UUIDOID, TEXTOID, BOOLOID, JSONBOID};
		Datum values[5];
		char nulls[5] = {' ', ' ', ' ', ' ', ' '};
		SPITupleTable *t;
		Datum data = heap_getattr(row, a_data, desc, &isnull);

		values[0] = room;
		values[1] = uid;
		nulls[1] = uid_null ? 'n' : ' ';
		values[2] = CStringGetTextDatum(guest_role);
		nulls[2] = uid_null ? ' ' : 'n';
		values[3] = BoolGetDatum(guest_muted);
		nulls[3] = uid_null ? ' ' : 'n';
		values[4] = data;
		nulls[4] = isnull ? 'n' : ' ';
		rc = SPI_execute_plan(
			keep_plan(&post_rules_plan,
			          "SELECT length($5 ->> 'text') > 5000, x.remote, x.role, x.muted, "
			          "       pod.role_may(x.data, x.role, 'post'), "
			          "       o.options IS NOT NULL AND o.options <> '{}', "
			          "       coalesce((o.options ->> 'mute_anonymous')::boolean, false) "
			          "         OR NOT coalesce((o.options ->> 'anonymous_allowed')::boolean, true), "
			          "       pod.forbidden_word_in($5 ->> 'text', o.options -> 'forbidden_words'), "
			          "       coalesce(o.options ->> 'forbidden_words_action', 'refuse') = 'hide', "
			          "       coalesce((o.options ->> 'slow_mode_seconds')::integer, 0), "
			          "       coalesce((o.options ->> 'moderation_delay_seconds')::integer, 0), "
			          "       now() + make_interval(secs => coalesce((o.options ->> 'moderation_delay_seconds')::integer, 0)) "
			          "  FROM (SELECT r.data, "
			          "               r.type = 'video' AND r.created_by IS NULL "
			          "                 AND EXISTS (SELECT 1 FROM pod.remote_video_chats v WHERE v.room_id = $1) AS remote, "
			          "               CASE WHEN $2 IS NULL THEN $3 "
			          "                    WHEN r.created_by = $2 THEN 'owner' "
			          "                    ELSE coalesce(m.affiliation::text, CASE WHEN r.type IN ('video', 'channel') THEN 'member' END) "
			          "               END AS role, "
			          "               coalesce((m.data ->> 'is_muted')::boolean, $4, false) AS muted "
			          "          FROM (SELECT $1 AS id) k "
			          "          LEFT JOIN pod.rooms r ON r.id = k.id "
			          "          LEFT JOIN pod.room_members m ON m.room_id = k.id AND m.user_id = $2) x "
			          "  LEFT JOIN LATERAL (SELECT c.options FROM pod.livechat_rooms l JOIN pod.channel_chat_options c USING (channel_id) "
			          "                      WHERE l.room_id = $1 AND x.role NOT IN ('owner', 'admin')) o ON true",
			          5, types),
			values, nulls, false, 0);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "post rules: %s", SPI_result_code_string(rc));
		t = SPI_tuptable;
		if (get_bool(t, 1))
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("a message's text is at most 5000 characters")));
		if (get_bool(t, 2))
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("room %s is another pod's chat", room_text),
			                errhint("Post with POST /rpc/chat_post: the room's pod decides.")));
		{
			Datum r = get_col(t, 3, &isnull);

			role = isnull ? NULL : TextDatumGetCString(r);
		}
		if (role == NULL)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are not a member of room %s", room_text)));
		if (strcmp(role, "outcast") == 0)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are banned from room %s", room_text)));
		if (get_bool(t, 4))
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are muted in room %s", room_text),
			                errhint("A room owner or admin can unmute you.")));
		if (!get_bool(t, 5))
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			                errmsg("your role (%s) may not post in room %s", role, room_text)));
		/* moderators: no slow mode, no delay, no word filter; no options: nothing more */
		if (strcmp(role, "owner") != 0 && strcmp(role, "admin") != 0 && get_bool(t, 6))
		{
			Datum bad;
			int32 slow, delay;

			if (strcmp(role, "anonymous") == 0 && get_bool(t, 7))
				ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				                errmsg("anonymous viewers may read but not post in room %s", room_text),
				                errhint("Sign in to post.")));
			bad = get_col(t, 8, &isnull);
			if (!isnull)
			{
				if (get_bool(t, 9))
					set_hidden = true;
				else
					ereport(ERROR, (errcode(ERRCODE_CHECK_VIOLATION),
					                errmsg("message refused: it contains the forbidden word %s", TextDatumGetCString(bad)),
					                errhint("This room's moderators do not allow it.")));
			}
			slow = DatumGetInt32(get_col(t, 10, &isnull));
			delay = DatumGetInt32(get_col(t, 11, &isnull));
			if (delay > 0)
			{
				held_value = get_col(t, 12, &isnull);
				set_held = true;
			}
			if (slow > 0)
			{
				Oid stypes[3] = {UUIDOID, UUIDOID, INT4OID};
				Datum sv[3] = {room, poster, Int32GetDatum(slow)};

				rc = SPI_execute_plan(
					keep_plan(&slow_plan,
					          "INSERT INTO pod.chat_slow AS s (room_id, poster, last_at) VALUES ($1, $2, clock_timestamp()) "
					          "ON CONFLICT (room_id, poster) DO UPDATE SET last_at = EXCLUDED.last_at "
					          "  WHERE s.last_at <= EXCLUDED.last_at - make_interval(secs => $3) "
					          "RETURNING 0",
					          3, stypes),
					sv, NULL, false, 0);
				if (rc != SPI_OK_INSERT_RETURNING)
					elog(ERROR, "slow mode: %s", SPI_result_code_string(rc));
				if (SPI_processed == 0)
				{
					int32 wait_s;

					rc = SPI_execute_plan(
						keep_plan(&slow_wait_plan,
						          "SELECT greatest(1, ceil(extract(epoch FROM s.last_at + make_interval(secs => $3) - clock_timestamp())))::integer "
						          "  FROM pod.chat_slow s WHERE s.room_id = $1 AND s.poster = $2",
						          3, stypes),
						sv, NULL, false, 1);
					if (rc != SPI_OK_SELECT || SPI_processed != 1)
						elog(ERROR, "slow mode: %s", SPI_result_code_string(rc));
					wait_s = DatumGetInt32(get_col(SPI_tuptable, 1, &isnull));
					ereport(ERROR, (errcode(ERRCODE_PT429), errmsg("slow mode: you may post again in %d seconds", wait_s),
					                errdetail("Retry-After: %d", wait_s),
					                errhint("This room allows one message per %d seconds.", slow)));
				}
			}
		}
	}
	SPI_finish();
	{
		int cols[4];
		Datum vals[4];
		bool nulls[4] = {false, false, false, false};
		int n = 0;

		if (set_guest)
		{
			cols[n] = a_guest;
			vals[n++] = new_guest;
			cols[n] = a_ref;
			vals[n++] = new_ref;
		}
		if (set_hidden)
		{
			cols[n] = a_hidden;
			vals[n++] = BoolGetDatum(true);
		}
		if (set_held)
		{
			cols[n] = a_held;
			vals[n++] = held_value;
		}
		if (n > 0)
			row = heap_modify_tuple_by_cols(row, desc, n, cols, vals, nulls);
	}
	return PointerGetDatum(row);
}
