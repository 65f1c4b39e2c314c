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

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
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
#include "utils/inval.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "storage/itemptr.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/snapshot.h"
#include "utils/uuid.h"

#include "pgpod.h"

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

/* Is the text all ASCII? Then NFKC leaves it as it is, and its fold is simple. */
static bool
is_ascii_text(text *t)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(t);
	int len = VARSIZE_ANY_EXHDR(t);
	int i;

	for (i = 0; i < len; i++)
		if (p[i] >= 0x80)
			return false;
	return true;
}

/* fold_nfkc of an ASCII text, without the ICU calls: what lower() and [:alnum:] are for
 * ASCII under "und-x-icu" (A-Z lowered; letters and digits kept, every run of anything
 * else one space), trimmed, between two spaces. */
static char *
fold_ascii(text *t)
{
	const char *p = VARDATA_ANY(t);
	int len = VARSIZE_ANY_EXHDR(t);
	char *out = palloc(len + 3);
	int o = 1, i;
	bool gap = false;

	out[0] = ' ';
	for (i = 0; i < len; i++)
	{
		char c = p[i];

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))
		{
			if (gap && o > 1)
				out[o++] = ' ';
			gap = false;
			out[o++] = (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
		}
		else
			gap = true; /* a run of anything else: one space, none at either end */
	}
	out[o++] = ' ';
	out[o] = '\0';
	return out;
}

/* words ->> i (jsonb_array_element_text): an entry as text, or null */
static Datum
word_at(Jsonb *words, int i, bool *isnull)
{
	LOCAL_FCINFO(call, 2);
	Datum w;

	InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
	call->args[0].value = JsonbPGetDatum(words);
	call->args[0].isnull = false;
	call->args[1].value = Int32GetDatum(i);
	call->args[1].isnull = false;
	w = jsonb_array_element_text(call);
	*isnull = call->isnull;
	return w;
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
			bool isnull;
			Datum w = word_at(words, i, &isnull);

			if (isnull || is_regex_entry(DatumGetTextPP(w)))
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
	bool ascii;
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
	ascii = is_ascii_text(t);
	normalized = ascii ? t : nfkc(t);
	for (i = 0; i < n; i++)
	{
		bool isnull;
		Datum w = word_at(words, i, &isnull);
		text *entry;

		if (isnull)
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
				folded = ascii ? fold_ascii(t) : fold_nfkc(normalized);
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
 * who is not a moderator are read by key (pgpod_fetch_one, under a new snapshot as the
 * plpgsql statement had; no executor to set up for five one-row look-ups), and
 * evaluated with the casts the SQL used (boolin, int4in, jsonb's boolean cast), each
 * only when the rule before it passed; guest_id, author_ref, hidden and
 * held_until are granted to no API role, so a row arriving with guest_id set comes
 * from the pod's own code (a remote post, rules applied) and one with author_ref set
 * and no guest is the pod's own (a room event, a remote room's mirror).
 */
PG_FUNCTION_INFO_V1(messages_check_post);

#define ERRCODE_PT401 MAKE_SQLSTATE('P', 'T', '4', '0', '1')
#define ERRCODE_PT429 MAKE_SQLSTATE('P', 'T', '4', '2', '9')

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

/*
 * The OID of pod.<name> (a table or an index), remembered for the backend's life: the
 * look-ups by name (the schema, then the relation) were a tenth of the posting trigger.
 * Any invalidation of a remembered relation (its drop, a re-created extension) or a
 * full reset forgets them all.
 */
#define POD_RELID_SLOTS 16
static struct
{
	const char *name; /* a string literal of the caller's */
	Oid relid;
} pod_relids[POD_RELID_SLOTS];
static bool pod_relids_callback;

static void
pod_relids_forget(Datum arg, Oid relid)
{
	int i;

	for (i = 0; i < POD_RELID_SLOTS; i++)
		if (!OidIsValid(relid) || pod_relids[i].relid == relid)
		{
			memset(pod_relids, 0, sizeof(pod_relids));
			return;
		}
}

Oid
pgpod_relid(const char *name)
{
	Oid relid;
	int i;

	for (i = 0; i < POD_RELID_SLOTS && pod_relids[i].name != NULL; i++)
		if (pod_relids[i].name == name || strcmp(pod_relids[i].name, name) == 0)
			return pod_relids[i].relid;
	relid = get_relname_relid(name, get_namespace_oid("pod", false));
	if (!OidIsValid(relid))
		elog(ERROR, "pod.%s is missing", name);
	if (!pod_relids_callback)
	{
		CacheRegisterRelcacheCallback(pod_relids_forget, (Datum) 0);
		pod_relids_callback = true;
	}
	if (i < POD_RELID_SLOTS)
	{
		pod_relids[i].name = name;
		pod_relids[i].relid = relid;
	}
	return relid;
}

/* A row of pod.<relname> by its unique index (one or two key columns, uuid or bigint, in
 * the index's order), seen by the active snapshot (the transaction's when none is
 * active); a copy, or NULL. As the extension's owner reads it: no row-level security. */
HeapTuple
pgpod_fetch_one(const char *relname, const char *indexname, Datum key1, Datum key2, TupleDesc *desc_out)
{
	Oid relid = pgpod_relid(relname);
	Oid indexid = pgpod_relid(indexname);
	Relation rel, irel;
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple tup, copy = NULL;
	int nkeys, i;
	bool pushed = false;

	if (!OidIsValid(relid) || !OidIsValid(indexid))
		elog(ERROR, "pod.%s or its index %s is missing", relname, indexname);
	rel = table_open(relid, AccessShareLock);
	irel = index_open(indexid, AccessShareLock);
	nkeys = IndexRelationGetNumberOfKeyAttributes(irel);
	if (nkeys > 2)
		elog(ERROR, "index %s has more than two columns", indexname);
	for (i = 0; i < nkeys; i++)
	{
		AttrNumber heap_att = irel->rd_index->indkey.values[i];
		Oid type = TupleDescAttr(RelationGetDescr(rel), heap_att - 1)->atttypid;

		ScanKeyInit(&keys[i], heap_att, BTEqualStrategyNumber, type == UUIDOID ? F_UUID_EQ : F_INT8EQ,
		            i == 0 ? key1 : key2);
		if (type != UUIDOID && type != INT8OID)
			elog(ERROR, "index %s: a key that is neither uuid nor bigint", indexname);
	}
	index_close(irel, NoLock);
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	scan = systable_beginscan(rel, indexid, true, GetActiveSnapshot(), nkeys, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		copy = heap_copytuple(tup);
	systable_endscan(scan);
	if (pushed)
		PopActiveSnapshot();
	if (desc_out != NULL)
		*desc_out = RelationGetDescr(rel);
	table_close(rel, NoLock); /* the lock until the end of the transaction, as a query's */
	return copy;
}

static int
attnum_in(TupleDesc desc, const char *relname, const char *name)
{
	int n = SPI_fnumber(desc, name);

	if (n <= 0)
		elog(ERROR, "pod.%s has no column \"%s\"", relname, name);
	return n;
}

/* json -> key (a jsonb) and json ->> key (a text) */
Datum
pgpod_jsonb_field(Datum json, const char *key, bool as_text, bool *isnull)
{
	LOCAL_FCINFO(call, 2);
	Datum v;

	InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
	call->args[0].value = json;
	call->args[0].isnull = false;
	call->args[1].value = CStringGetTextDatum(key);
	call->args[1].isnull = false;
	v = as_text ? jsonb_object_field_text(call) : jsonb_object_field(call);
	*isnull = call->isnull;
	return v;
}

static Datum
json_field(Datum json, const char *key, bool *isnull)
{
	return pgpod_jsonb_field(json, key, false, isnull);
}

static Datum
json_field_text(Datum json, const char *key, bool *isnull)
{
	return pgpod_jsonb_field(json, key, true, isnull);
}

/* coalesce((options ->> key)::boolean, otherwise) */
static bool
option_bool(Datum opts, const char *key, bool otherwise)
{
	bool n;
	Datum v = json_field_text(opts, key, &n);

	return n ? otherwise : DatumGetBool(DirectFunctionCall1(boolin, CStringGetDatum(TextDatumGetCString(v))));
}

/* coalesce((options ->> key)::integer, 0) */
static int32
option_int(Datum opts, const char *key)
{
	bool n;
	Datum v = json_field_text(opts, key, &n);

	return n ? 0 : DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum(TextDatumGetCString(v))));
}

/* pod.room_permission_defaults(), kept while its definition is the same (pg_proc row) */
static Jsonb *defaults_json;         /* TopMemoryContext */
static TransactionId defaults_xmin;  /* of the pg_proc row it came from */
static ItemPointerData defaults_tid;

static Datum
permission_defaults(void)
{
	Oid fn = LookupFuncName(list_make2(makeString("pod"), makeString("room_permission_defaults")), 0, NULL, false);
	HeapTuple proc = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	TransactionId xmin;
	ItemPointerData tid;

	if (!HeapTupleIsValid(proc))
		elog(ERROR, "cache lookup failed for function %u", fn);
	xmin = HeapTupleHeaderGetRawXmin(proc->t_data);
	tid = proc->t_self;
	ReleaseSysCache(proc);
	if (defaults_json == NULL || defaults_xmin != xmin || !ItemPointerEquals(&defaults_tid, &tid))
	{
		Datum d = OidFunctionCall0(fn);
		Jsonb *j = DatumGetJsonbP(d);
		Jsonb *copy = MemoryContextAlloc(TopMemoryContext, VARSIZE(j));

		memcpy(copy, j, VARSIZE(j));
		if (defaults_json != NULL)
			pfree(defaults_json);
		defaults_json = copy;
		defaults_xmin = xmin;
		defaults_tid = tid;
	}
	return JsonbPGetDatum(defaults_json);
}

/* jsonb #> {a, b, c} as a boolean (NULL: absent); the ::boolean cast's error otherwise */
static bool
json_path_bool(Datum json, const char *a, const char *b, const char *c, bool *isnull)
{
	bool n = false;
	Datum v = json;
	const char *path[3] = {a, b, c};
	int i;

	for (i = 0; i < 3 && path[i] != NULL && !n; i++)
	{
		Jsonb *j = DatumGetJsonbP(v);

		if (!JB_ROOT_IS_OBJECT(j))
		{
			n = true;
			break;
		}
		v = json_field(v, path[i], &n);
	}
	*isnull = n;
	if (n)
		return false;
	return DatumGetBool(DirectFunctionCall1(jsonb_bool, v));
}

/* pod.role_may(room_data, role, 'post') */
static bool
role_may_post(Datum room_data, bool room_data_null, const char *role)
{
	bool n;
	bool v;

	if (strcmp(role, "owner") == 0)
		return true;
	if (strcmp(role, "outcast") == 0)
		return false;
	if (!room_data_null)
	{
		v = json_path_bool(room_data, "permissions", role, "post", &n);
		if (!n)
			return v;
	}
	v = json_path_bool(permission_defaults(), role, "post", NULL, &n);
	return n ? false : v;
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

	/* the rest: the room, the poster's role, mute and right to post, the options (read
	 * by key, as the statement the plpgsql rule ran; no executor to set up) */
	{
		bool data_null;
		Datum data = heap_getattr(row, a_data, desc, &data_null);
		Datum text_d = (Datum)0;
		bool text_null = true;
		HeapTuple r_tup, m_tup = NULL;
		TupleDesc r_desc, m_desc = NULL;
		Datum r_data = (Datum)0;
		bool r_data_null = true;
		char *r_type = NULL;
		bool r_creator_null = true;
		Datum r_creator = (Datum)0;
		bool muted;

		if (!data_null)
			text_d = json_field_text(data, "text", &text_null);
		if (!text_null && DatumGetInt32(DirectFunctionCall1(textlen, text_d)) > 5000)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("a message's text is at most 5000 characters")));

		CommandCounterIncrement();
		PushActiveSnapshot(GetTransactionSnapshot());
		r_tup = pgpod_fetch_one("rooms", "rooms_pkey", room, (Datum)0, &r_desc);
		if (r_tup != NULL)
		{
			bool n;
			Datum t = heap_getattr(r_tup, attnum_in(r_desc, "rooms", "type"), r_desc, &n);

			r_type = n ? NULL : DatumGetCString(DirectFunctionCall1(enum_out, t));
			r_creator = heap_getattr(r_tup, attnum_in(r_desc, "rooms", "created_by"), r_desc, &r_creator_null);
			r_data = heap_getattr(r_tup, attnum_in(r_desc, "rooms", "data"), r_desc, &r_data_null);
		}
		/* another pod's room: a video room of nobody here that mirrors a remote chat */
		if (r_type != NULL && strcmp(r_type, "video") == 0 && r_creator_null &&
		    pgpod_fetch_one("remote_video_chats", "remote_video_chats_room_id_key", room, (Datum)0, NULL) != NULL)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("room %s is another pod's chat", room_text),
			                errhint("Post with POST /rpc/chat_post: the room's pod decides.")));
		if (!uid_null)
		{
			m_tup = pgpod_fetch_one("room_members", "room_members_pkey", room, uid, &m_desc);
			if (r_tup == NULL)
				role = NULL;
			else if (!r_creator_null && memcmp(DatumGetUUIDP(r_creator), DatumGetUUIDP(uid), UUID_LEN) == 0)
				role = "owner";
			else if (m_tup != NULL)
			{
				bool n;
				Datum aff = heap_getattr(m_tup, attnum_in(m_desc, "room_members", "affiliation"), m_desc, &n);

				role = n ? NULL : DatumGetCString(DirectFunctionCall1(enum_out, aff));
			}
			else
				role = r_type != NULL && (strcmp(r_type, "video") == 0 || strcmp(r_type, "channel") == 0) ? "member" : NULL;
		}
		else
			role = guest_role;
		if (role == NULL)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are not a member of room %s", room_text)));
		if (strcmp(role, "outcast") == 0)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are banned from room %s", room_text)));
		/* coalesce((m.data ->> 'is_muted')::boolean, g.is_muted, false) */
		muted = uid_null ? guest_muted : false;
		if (m_tup != NULL)
		{
			bool n, fn;
			Datum md = heap_getattr(m_tup, attnum_in(m_desc, "room_members", "data"), m_desc, &n);
			Datum f = n ? (Datum)0 : json_field_text(md, "is_muted", &fn);

			if (!n && !fn)
				muted = DatumGetBool(DirectFunctionCall1(boolin, CStringGetDatum(TextDatumGetCString(f))));
		}
		if (muted)
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("you are muted in room %s", room_text),
			                errhint("A room owner or admin can unmute you.")));
		if (!role_may_post(r_data_null ? (Datum)0 : r_data, r_data_null, role))
			ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			                errmsg("your role (%s) may not post in room %s", role, room_text)));
		/* moderators: no slow mode, no delay, no word filter */
		if (strcmp(role, "owner") != 0 && strcmp(role, "admin") != 0)
		{
			HeapTuple l_tup = pgpod_fetch_one("livechat_rooms", "livechat_rooms_pkey", room, (Datum)0, &r_desc);
			HeapTuple o_tup = NULL;
			TupleDesc o_desc = NULL;
			Datum opts = (Datum)0;
			bool opts_null = true;

			if (l_tup != NULL)
			{
				bool n;
				Datum ch = heap_getattr(l_tup, attnum_in(r_desc, "livechat_rooms", "channel_id"), r_desc, &n);

				if (!n)
					o_tup = pgpod_fetch_one("channel_chat_options", "channel_chat_options_pkey", ch, (Datum)0, &o_desc);
			}
			if (o_tup != NULL)
				opts = heap_getattr(o_tup, attnum_in(o_desc, "channel_chat_options", "options"), o_desc, &opts_null);
			if (!opts_null && !(JB_ROOT_IS_OBJECT(DatumGetJsonbP(opts)) && JB_ROOT_COUNT(DatumGetJsonbP(opts)) == 0))
			{
				Datum bad;
				bool bad_null;
				int32 slow, delay;

				if (strcmp(role, "anonymous") == 0 &&
				    (option_bool(opts, "mute_anonymous", false) || !option_bool(opts, "anonymous_allowed", true)))
					ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					                errmsg("anonymous viewers may read but not post in room %s", room_text),
					                errhint("Sign in to post.")));
				{
					bool wn;
					Datum words = json_field(opts, "forbidden_words", &wn);
					LOCAL_FCINFO(call, 2);

					InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
					call->args[0].value = text_d;
					call->args[0].isnull = text_null;
					call->args[1].value = words;
					call->args[1].isnull = wn;
					bad = forbidden_word_in(call);
					bad_null = call->isnull;
				}
				if (!bad_null)
				{
					bool an;
					Datum action = json_field_text(opts, "forbidden_words_action", &an);

					if (!an && strcmp(TextDatumGetCString(action), "hide") == 0)
						set_hidden = true;
					else
						ereport(ERROR, (errcode(ERRCODE_CHECK_VIOLATION),
						                errmsg("message refused: it contains the forbidden word %s", TextDatumGetCString(bad)),
						                errhint("This room's moderators do not allow it.")));
				}
				slow = option_int(opts, "slow_mode_seconds");
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
						bool isnull;

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
				delay = option_int(opts, "moderation_delay_seconds");
				if (delay > 0)
				{
					/* now() + make_interval(secs => delay) */
					Interval *span = palloc0(sizeof(Interval));

					span->time = (int64)delay * USECS_PER_SEC;
					held_value = DirectFunctionCall2(timestamptz_pl_interval,
					                                 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
					                                 IntervalPGetDatum(span));
					set_held = true;
				}
			}
		}
		PopActiveSnapshot();
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

/* --- pod.room_role ------------------------------------------------------------------- */

/*
 * pod.room_role(room): the caller's role in a room: owner, admin, member, outcast for
 * local users (any signed-in user is a member of a video or channel room until
 * banned), anonymous or remote for guests (outcast once banned), NULL for nobody. Was
 * plpgsql; every post asks it (the RETURNING of the gateway's insert meets the read
 * policy) and every history page once, each in a transaction of its own. Reads by key
 * under the caller's snapshot (it is STABLE, as it was).
 */
PG_FUNCTION_INFO_V1(room_role);

Datum
room_role(PG_FUNCTION_ARGS)
{
	Datum uid, room;
	bool uid_null, isnull;
	HeapTuple tup;
	TupleDesc desc;
	char *role = NULL;

	uid = call0(current_user_id_cached, &uid_null);
	if (!uid_null)
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		room = PG_GETARG_DATUM(0);
		tup = pgpod_fetch_one("rooms", "rooms_pkey", room, (Datum)0, &desc);
		if (tup == NULL)
			PG_RETURN_NULL();
		{
			bool cn, tn;
			Datum creator = heap_getattr(tup, attnum_in(desc, "rooms", "created_by"), desc, &cn);
			Datum type = heap_getattr(tup, attnum_in(desc, "rooms", "type"), desc, &tn);
			char *type_text = tn ? NULL : DatumGetCString(DirectFunctionCall1(enum_out, type));
			HeapTuple m;
			TupleDesc mdesc;

			if (!cn && memcmp(DatumGetUUIDP(creator), DatumGetUUIDP(uid), UUID_LEN) == 0)
				PG_RETURN_TEXT_P(cstring_to_text("owner"));
			m = pgpod_fetch_one("room_members", "room_members_pkey", room, uid, &mdesc);
			if (m != NULL)
			{
				Datum aff = heap_getattr(m, attnum_in(mdesc, "room_members", "affiliation"), mdesc, &isnull);

				if (!isnull)
					role = DatumGetCString(DirectFunctionCall1(enum_out, aff));
			}
			else if (type_text != NULL && (strcmp(type_text, "video") == 0 || strcmp(type_text, "channel") == 0))
				role = "member";
		}
	}
	else
	{
		/* pod.current_guest_id() refuses an expired or malformed guest token */
		Datum gid = call_named0("current_guest_id", &isnull);

		if (isnull || PG_ARGISNULL(0))
			PG_RETURN_NULL();
		room = PG_GETARG_DATUM(0);
		tup = pgpod_fetch_one("chat_guests", "chat_guests_pkey", gid, (Datum)0, &desc);
		if (tup != NULL)
		{
			bool rn, an, kn;
			Datum g_room = heap_getattr(tup, attnum_in(desc, "chat_guests", "room_id"), desc, &rn);
			Datum aff = heap_getattr(tup, attnum_in(desc, "chat_guests", "affiliation"), desc, &an);
			Datum kind = heap_getattr(tup, attnum_in(desc, "chat_guests", "kind"), desc, &kn);

			if (!rn && memcmp(DatumGetUUIDP(g_room), DatumGetUUIDP(room), UUID_LEN) == 0)
			{
				if (!an && strcmp(DatumGetCString(DirectFunctionCall1(enum_out, aff)), "outcast") == 0)
					role = "outcast";
				else if (!kn)
					role = TextDatumGetCString(kind);
			}
		}
	}
	if (role == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(role));
}
