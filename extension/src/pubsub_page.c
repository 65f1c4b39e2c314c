/*
 * pubsub_page.c — an RSM page (XEP-0059) of a pubsub node's items,
 * pod.pubsub_items_page: at most max items in publication order, read straight from
 * the (node_id, seq) btree (no planner: a generic plan once chose a sequential scan
 * for a node that was the whole table) and written as JSON into the result's buffer
 * (raw payloads through an escaper that copies runs of safe bytes, parsed values
 * walked in their binary JSONB form). count is the node's maintained
 * pod.pubsub_nodes.item_count (pubsub_count.c); index is counted over at most
 * PAGE_INDEX_WINDOW items from either end, so that no page costs more with the size of
 * its node (see page_index). The function is SECURITY DEFINER (the extension's
 * owner), as the SQL it replaces, so reading the tables directly checks no more and no
 * less than that did.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/visibilitymap.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(pubsub_items_page);

/* The largest page a caller may ask for. */
#define PAGE_MAX_ITEMS 1000

/*
 * How far from either end of a node index is counted. XEP-0059 makes the index
 * attribute optional: a page that starts more than this many items from both ends
 * answers index null (unknown) rather than counting the node. A node of up to twice
 * this many items always gets an exact index.
 */
#define PAGE_INDEX_WINDOW 512

/* The relations a page reads, opened for one call. */
typedef struct PageRels
{
	Relation nodes;
	Relation nodes_by_name; /* (service, name) */
	Relation items;
	Relation items_by_name; /* (node_id, name) */
	Relation items_by_seq;  /* (node_id, seq) */
} PageRels;

/* The columns a page reads, by name (a walked-up table may order them otherwise). */
typedef struct ItemCols
{
	AttrNumber name, publisher, data, parsed, created_at, updated_at, version, seq;
} ItemCols;

/* Bytes that a JSON string cannot hold as they are: controls, quote, backslash. */
static const bool json_escaped[256] = {
	[0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true, [0x04] = true, [0x05] = true,
	[0x06] = true, [0x07] = true, [0x08] = true, [0x09] = true, [0x0a] = true, [0x0b] = true,
	[0x0c] = true, [0x0d] = true, [0x0e] = true, [0x0f] = true, [0x10] = true, [0x11] = true,
	[0x12] = true, [0x13] = true, [0x14] = true, [0x15] = true, [0x16] = true, [0x17] = true,
	[0x18] = true, [0x19] = true, [0x1a] = true, [0x1b] = true, [0x1c] = true, [0x1d] = true,
	[0x1e] = true, [0x1f] = true, ['"'] = true, ['\\'] = true,
};

/* Writes byte c of a JSON string at out, escaped when it must be; returns the end. */
static inline char *
escape_json_byte(char *out, unsigned char c, const char *hex)
{
	if (likely(!json_escaped[c]))
	{
		*out++ = (char) c;
		return out;
	}
	*out++ = '\\';
	switch (c)
	{
	case '"':
	case '\\':
		*out++ = (char) c;
		break;
	case '\b':
		*out++ = 'b';
		break;
	case '\f':
		*out++ = 'f';
		break;
	case '\n':
		*out++ = 'n';
		break;
	case '\r':
		*out++ = 'r';
		break;
	case '\t':
		*out++ = 't';
		break;
	default:
		*out++ = 'u';
		*out++ = '0';
		*out++ = '0';
		*out++ = hex[c >> 4];
		*out++ = hex[c & 15];
		break;
	}
	return out;
}

/* Any byte of w below 0x20, a quote or a backslash (bit tricks on 8 bytes at once:
 * a byte b < n for n <= 128 sets its high bit in (w - n * 0x01..) & ~w & 0x80..). */
#define BYTES(b) (UINT64CONST(0x0101010101010101) * (b))
#define HAS_LESS(w, n) (((w) - BYTES(n)) & ~(w) & BYTES(0x80))
#define HAS_BYTE(w, b) HAS_LESS((w) ^ BYTES(b), 1)

/* Escapes [p, end) into out, which has room for 6 bytes per byte; returns its end.
 * Blocks of 8 bytes that need no escape (most of a payload) are copied whole. */
static char *
escape_json_bytes(char *out, const unsigned char *p, const unsigned char *end)
{
	static const char hex[] = "0123456789abcdef";

	while (p < end)
	{
		const unsigned char *stop = end;

		if (end - p >= 8)
		{
			uint64 w;

			memcpy(&w, p, 8);
			if (!(HAS_LESS(w, 0x20) | HAS_BYTE(w, '"') | HAS_BYTE(w, '\\')))
			{
				memcpy(out, p, 8);
				out += 8;
				p += 8;
				continue;
			}
			stop = p + 8;
		}
		for (; p < stop; p++)
			out = escape_json_byte(out, *p, hex);
	}
	return out;
}

/*
 * Appends s[0..len) as a JSON string, escaped exactly as PostgreSQL's escape_json
 * does (which appends byte by byte through the StringInfo calls: a third of a page's
 * time went there): room for the worst case is made once per chunk, then the bytes
 * are written straight into the buffer.
 */
static void
append_json_string(StringInfo buf, const char *s, int len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	appendStringInfoCharMacro(buf, '"');
	while (p < end)
	{
		int chunk = Min(end - p, 16384);

		/* At most 6 bytes per byte (\u00XX), and the terminating NUL. */
		enlargeStringInfo(buf, chunk * 6 + 1);
		buf->len = escape_json_bytes(buf->data + buf->len, p, p + chunk) - buf->data;
		p += chunk;
	}
	appendStringInfoCharMacro(buf, '"');
}

/* Appends a text datum as a JSON string. */
static void
append_json_text(StringInfo buf, Datum d)
{
	text *t = (text *) PG_DETOAST_DATUM_PACKED(d);

	append_json_string(buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	if ((Pointer) t != DatumGetPointer(d))
		pfree(t);
}

static void append_jsonb_container(StringInfo buf, const JsonbContainer *c);

/* Appends the child of container c whose entry is e and data starts at offset off. */
static void
append_jsonb_child(StringInfo buf, const JsonbContainer *c, const char *base, JEntry e, uint32 off, uint32 len)
{
	if (JBE_ISSTRING(e))
		append_json_string(buf, base + off, len);
	else if (JBE_ISNUMERIC(e))
	{
		char *s = DatumGetCString(DirectFunctionCall1(numeric_out, PointerGetDatum(base + INTALIGN(off))));

		appendStringInfoString(buf, s);
		pfree(s);
	}
	else if (JBE_ISBOOL_TRUE(e))
		appendBinaryStringInfo(buf, "true", 4);
	else if (JBE_ISBOOL_FALSE(e))
		appendBinaryStringInfo(buf, "false", 5);
	else if (JBE_ISNULL(e))
		appendBinaryStringInfo(buf, "null", 4);
	else if (JBE_ISCONTAINER(e))
		append_jsonb_container(buf, (const JsonbContainer *) (base + INTALIGN(off)));
	else
		elog(ERROR, "unknown jsonb entry type 0x%08x", (unsigned int) (e & JENTRY_TYPEMASK));
}

/* The length of child i given its entry and its offset (the running sum before it). */
static inline uint32
jsonb_child_length(JEntry e, uint32 off)
{
	return JBE_HAS_OFF(e) ? JBE_OFFLENFLD(e) - off : JBE_OFFLENFLD(e);
}

/*
 * Appends a JSONB container as the same text jsonb_out gives ({"k": v, ...}, [a, b],
 * keys in the stored order), reading the binary form in place: no JsonbValue per
 * element as the generic iterator makes.
 */
static void
append_jsonb_container(StringInfo buf, const JsonbContainer *c)
{
	uint32 n = c->header & JB_CMASK;
	const char *base;
	uint32 off = 0;

	check_stack_depth();
	if (c->header & JB_FOBJECT)
	{
		uint32 value_off = 0;

		base = (const char *) &c->children[n * 2];
		/* Values follow every key: their data starts after all the keys' data. */
		for (uint32 i = 0; i < n; i++)
			value_off += jsonb_child_length(c->children[i], value_off);
		appendStringInfoCharMacro(buf, '{');
		for (uint32 i = 0; i < n; i++)
		{
			JEntry k = c->children[i];
			JEntry v = c->children[n + i];
			uint32 klen = jsonb_child_length(k, off);
			uint32 vlen = jsonb_child_length(v, value_off);

			if (i > 0)
				appendBinaryStringInfo(buf, ", ", 2);
			append_json_string(buf, base + off, klen);
			appendBinaryStringInfo(buf, ": ", 2);
			append_jsonb_child(buf, c, base, v, value_off, vlen);
			off += klen;
			value_off += vlen;
		}
		appendStringInfoCharMacro(buf, '}');
	}
	else
	{
		bool scalar = (c->header & JB_FSCALAR) != 0;

		base = (const char *) &c->children[n];
		if (!scalar)
			appendStringInfoCharMacro(buf, '[');
		for (uint32 i = 0; i < n; i++)
		{
			JEntry e = c->children[i];
			uint32 len = jsonb_child_length(e, off);

			if (i > 0)
				appendBinaryStringInfo(buf, ", ", 2);
			append_jsonb_child(buf, c, base, e, off, len);
			off += len;
		}
		if (!scalar)
			appendStringInfoCharMacro(buf, ']');
	}
}

/* Appends a jsonb datum as JSON text (a raw scalar as itself). */
static void
append_jsonb(StringInfo buf, Datum d)
{
	Jsonb *jb = DatumGetJsonbP(d);

	append_jsonb_container(buf, &jb->root);
	if ((Pointer) jb != DatumGetPointer(d))
		pfree(jb);
}

/* Appends a timestamptz as json_build_object writes it (ISO 8601 in the session's zone). */
static void
append_json_timestamptz(StringInfo buf, Datum d)
{
	char out[MAXDATELEN + 1];

	JsonEncodeDateTime(out, d, TIMESTAMPTZOID, NULL);
	appendStringInfoCharMacro(buf, '"');
	appendStringInfoString(buf, out);
	appendStringInfoCharMacro(buf, '"');
}

/* Appends a bigint, or null. */
static void
append_json_int8(StringInfo buf, Datum d, bool isnull)
{
	char digits[MAXINT8LEN + 1];

	if (isnull)
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}
	appendBinaryStringInfo(buf, digits, pg_lltoa(DatumGetInt64(d), digits));
}

/* Appends one item of the page: name, publisher, data, parsed, created_at, updated_at, version. */
static void
append_item(StringInfo buf, TupleTableSlot *row, const ItemCols *col)
{
	bool isnull;
	Datum d;

	appendBinaryStringInfo(buf, "{\"name\": ", 9);
	append_json_text(buf, slot_getattr(row, col->name, &isnull));
	appendBinaryStringInfo(buf, ", \"publisher\": ", 15);
	d = slot_getattr(row, col->publisher, &isnull);
	if (isnull)
		appendBinaryStringInfo(buf, "null", 4);
	else
		append_json_text(buf, d);
	appendBinaryStringInfo(buf, ", \"data\": ", 10);
	append_json_text(buf, slot_getattr(row, col->data, &isnull));
	appendBinaryStringInfo(buf, ", \"parsed\": ", 12);
	d = slot_getattr(row, col->parsed, &isnull);
	if (isnull)
		appendBinaryStringInfo(buf, "null", 4);
	else
		append_jsonb(buf, d);
	appendBinaryStringInfo(buf, ", \"created_at\": ", 16);
	append_json_timestamptz(buf, slot_getattr(row, col->created_at, &isnull));
	appendBinaryStringInfo(buf, ", \"updated_at\": ", 16);
	append_json_timestamptz(buf, slot_getattr(row, col->updated_at, &isnull));
	appendBinaryStringInfo(buf, ", \"version\": ", 13);
	d = slot_getattr(row, col->version, &isnull);
	append_json_int8(buf, d, isnull);
	appendStringInfoCharMacro(buf, '}');
}

/* A relation of schema pod by name, opened (an index, or a table) AccessShareLock. */
static Relation
open_pod_relation(Oid pod, const char *name, bool index)
{
	Oid relid = get_relname_relid(name, pod);

	if (!OidIsValid(relid))
		elog(ERROR, "relation pod.%s does not exist", name);
	return index ? index_open(relid, AccessShareLock) : table_open(relid, AccessShareLock);
}

static void
open_rels(PageRels *r)
{
	Oid pod = get_namespace_oid("pod", false);

	r->nodes = open_pod_relation(pod, "pubsub_nodes", false);
	r->nodes_by_name = open_pod_relation(pod, "pubsub_nodes_service_name_key", true);
	r->items = open_pod_relation(pod, "pubsub_items", false);
	r->items_by_name = open_pod_relation(pod, "pubsub_items_node_id_name_key", true);
	r->items_by_seq = open_pod_relation(pod, "pubsub_items_node_seq_idx", true);
}

static void
close_rels(PageRels *r)
{
	index_close(r->items_by_seq, AccessShareLock);
	index_close(r->items_by_name, AccessShareLock);
	table_close(r->items, AccessShareLock);
	index_close(r->nodes_by_name, AccessShareLock);
	table_close(r->nodes, AccessShareLock);
}

/* The attribute number of a column; "cannot happen" when the schema lacks it. */
static AttrNumber
column(Relation rel, const char *name)
{
	TupleDesc desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return a->attnum;
	}
	elog(ERROR, "%s has no column %s", RelationGetRelationName(rel), name);
	return InvalidAttrNumber;
}

/* A key on index column attno: equality (or strategy) with a value of the given proc. */
static void
key_init(ScanKey key, Relation index, AttrNumber attno, StrategyNumber strategy, RegProcedure proc, Datum value)
{
	ScanKeyEntryInitialize(key, 0, attno, strategy, InvalidOid, index->rd_indcollation[attno - 1], proc, value);
}

/*
 * Fetches the one row of a unique index lookup on two columns (a text second column)
 * into slot; false when there is none visible to the statement's snapshot.
 */
static bool
fetch_unique(Relation heap, Relation index, RegProcedure first_eq, Datum first, Datum second, TupleTableSlot *slot)
{
	ScanKeyData key[2];
	IndexScanDesc scan;
	bool found;

	key_init(&key[0], index, 1, BTEqualStrategyNumber, first_eq, first);
	key_init(&key[1], index, 2, BTEqualStrategyNumber, F_TEXTEQ, second);
	scan = index_beginscan(heap, index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, key, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	return found;
}

/*
 * How many items of the node lie before seq (strategy BTLessStrategyNumber) or from it
 * on (BTGreaterEqualStrategyNumber), counting at most limit: an index-only walk of the
 * (node_id, seq) btree, visiting the heap only for pages the visibility map does not
 * know all-visible (as an index-only scan does).
 */
static int64
count_items(PageRels *r, int64 node_id, StrategyNumber strategy, int64 seq, int64 limit)
{
	ScanKeyData key[2];
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(r->items, NULL);
	Buffer vm = InvalidBuffer;
	ItemPointer tid;
	int64 n = 0;

	key_init(&key[0], r->items_by_seq, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(node_id));
	key_init(&key[1], r->items_by_seq, 2, strategy, strategy == BTLessStrategyNumber ? F_INT8LT : F_INT8GE,
			 Int64GetDatum(seq));
	scan = index_beginscan(r->items, r->items_by_seq, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, key, 2, NULL, 0);
	while (n < limit && (tid = index_getnext_tid(scan, ForwardScanDirection)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		if (!VM_ALL_VISIBLE(r->items, ItemPointerGetBlockNumber(tid), &vm) && !index_fetch_heap(scan, slot))
			continue;
		n++;
	}
	if (BufferIsValid(vm))
		ReleaseBuffer(vm);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return n;
}

/*
 * The index of the page's first item (seq first_seq) in its node of total items:
 * counted from the start when it is within PAGE_INDEX_WINDOW of it, else from the end
 * (total minus the items from it on) when within the window of that; else unknown
 * (-1, written null). Both counts read the statement's snapshot, as total does.
 */
static int64
page_index(PageRels *r, int64 node_id, int64 first_seq, int64 total)
{
	int64 before = count_items(r, node_id, BTLessStrategyNumber, first_seq, PAGE_INDEX_WINDOW + 1);
	int64 from;

	if (before <= PAGE_INDEX_WINDOW)
		return before;
	from = count_items(r, node_id, BTGreaterEqualStrategyNumber, first_seq, PAGE_INDEX_WINDOW + 1);
	if (from <= PAGE_INDEX_WINDOW)
		return Max(total - from, 0);
	return -1;
}

/* Appends a text value (the first or last item's name) or null. */
static void
append_json_name(StringInfo buf, TupleTableSlot *row, AttrNumber attno)
{
	bool isnull;

	if (row == NULL)
		appendBinaryStringInfo(buf, "null", 4);
	else
		append_json_text(buf, slot_getattr(row, attno, &isnull));
}

/*
 * pod.pubsub_items_page(service, node, max, after, before) → json
 * {"items": [...], "count", "index", "first", "last"}. after: the page after that item;
 * before: the page before it ('' : the last page); an item not in the node is P0002
 * (RSM item-not-found), as is an unknown node; max outside 0..1000, or both after and
 * before, 22023.
 */
Datum
pubsub_items_page(PG_FUNCTION_ARGS)
{
	text *service = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	text *node = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	bool has_after = !PG_ARGISNULL(3);
	bool has_before = !PG_ARGISNULL(4);
	text *after = has_after ? PG_GETARG_TEXT_PP(3) : NULL;
	text *before = has_before ? PG_GETARG_TEXT_PP(4) : NULL;
	bool backward = has_before;
	text *pivot_name;
	int32 max;
	int64 node_id;
	int64 total;
	int64 pivot_seq;
	int64 index = -1;
	bool isnull;
	PageRels r;
	ItemCols col;
	TupleTableSlot *node_row;
	TupleTableSlot *fetched;
	TupleTableSlot *row;
	HeapTuple *rows;
	int n = 0;
	ScanKeyData key[2];
	IndexScanDesc scan;
	StringInfoData buf;

	open_rels(&r);

	/* The node (P0002 before any argument check, as pod.pubsub_node_id has it). */
	node_row = table_slot_create(r.nodes, NULL);
	if (service == NULL || node == NULL ||
		!fetch_unique(r.nodes, r.nodes_by_name, F_TEXTEQ, PointerGetDatum(service), PointerGetDatum(node), node_row))
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("no pubsub node %s at %s", node ? quote_literal_cstr(text_to_cstring(node)) : "NULL",
							   service ? quote_literal_cstr(text_to_cstring(service)) : "NULL")));
	node_id = DatumGetInt64(slot_getattr(node_row, column(r.nodes, "id"), &isnull));
	total = DatumGetInt64(slot_getattr(node_row, column(r.nodes, "item_count"), &isnull));
	ExecDropSingleTupleTableSlot(node_row);

	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 0 || PG_GETARG_INT32(2) > PAGE_MAX_ITEMS)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("max must be between 0 and %d, not %s", PAGE_MAX_ITEMS,
							   PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2)))));
	max = PG_GETARG_INT32(2);
	if (has_after && has_before)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a page is after an item or before one, not both")));

	col.name = column(r.items, "name");
	col.publisher = column(r.items, "publisher");
	col.data = column(r.items, "data");
	col.parsed = column(r.items, "parsed");
	col.created_at = column(r.items, "created_at");
	col.updated_at = column(r.items, "updated_at");
	col.version = column(r.items, "version");
	col.seq = column(r.items, "seq");

	/* The pivot item; none: the first page, or (before = '') the last. */
	pivot_name = has_after ? after : before;
	pivot_seq = backward ? PG_INT64_MAX : -1;
	if (pivot_name != NULL && VARSIZE_ANY_EXHDR(pivot_name) > 0)
	{
		TupleTableSlot *pivot = table_slot_create(r.items, NULL);

		if (!fetch_unique(r.items, r.items_by_name, F_INT8EQ, Int64GetDatum(node_id), PointerGetDatum(pivot_name), pivot))
			ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
							errmsg("item %s is not in node %s", quote_literal_cstr(text_to_cstring(pivot_name)),
								   quote_literal_cstr(text_to_cstring(node))),
							errhint("RSM: item-not-found.")));
		pivot_seq = DatumGetInt64(slot_getattr(pivot, col.seq, &isnull));
		ExecDropSingleTupleTableSlot(pivot);
	}

	/* The page's rows, from the pivot away (a backward page newest first), each copied
	 * (no buffer pin held per row). */
	rows = palloc(Max(max, 1) * sizeof(HeapTuple));
	fetched = table_slot_create(r.items, NULL);
	key_init(&key[0], r.items_by_seq, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(node_id));
	key_init(&key[1], r.items_by_seq, 2, backward ? BTLessStrategyNumber : BTGreaterStrategyNumber,
			 backward ? F_INT8LT : F_INT8GT, Int64GetDatum(pivot_seq));
	scan = index_beginscan(r.items, r.items_by_seq, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, key, 2, NULL, 0);
	while (n < max && index_getnext_slot(scan, backward ? BackwardScanDirection : ForwardScanDirection, fetched))
	{
		CHECK_FOR_INTERRUPTS();
		rows[n++] = ExecCopySlotHeapTuple(fetched);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(fetched);
	if (backward)
		for (int i = 0; i < n / 2; i++)
		{
			HeapTuple t = rows[i];

			rows[i] = rows[n - 1 - i];
			rows[n - 1 - i] = t;
		}
	row = MakeSingleTupleTableSlot(RelationGetDescr(r.items), &TTSOpsHeapTuple);

	if (n > 0)
	{
		if (!backward && pivot_seq < 0)
			index = 0; /* the first page */
		else if (backward && pivot_seq == PG_INT64_MAX)
			index = Max(total - n, 0); /* the last page */
		else
		{
			ExecStoreHeapTuple(rows[0], row, false);
			index = page_index(&r, node_id, DatumGetInt64(slot_getattr(row, col.seq, &isnull)), total);
		}
	}

	/* The result is built in place: a varlena header first, set at the end. */
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	appendBinaryStringInfo(&buf, "{\"items\": [", 11);
	for (int k = 0; k < n; k++)
	{
		if (k > 0)
			appendBinaryStringInfo(&buf, ", ", 2);
		ExecStoreHeapTuple(rows[k], row, false);
		append_item(&buf, row, &col);
	}
	appendBinaryStringInfo(&buf, "], \"count\": ", 12);
	append_json_int8(&buf, Int64GetDatum(total), false);
	appendBinaryStringInfo(&buf, ", \"index\": ", 11);
	append_json_int8(&buf, Int64GetDatum(index), index < 0);
	appendBinaryStringInfo(&buf, ", \"first\": ", 11);
	if (n > 0)
		ExecStoreHeapTuple(rows[0], row, false);
	append_json_name(&buf, n > 0 ? row : NULL, col.name);
	appendBinaryStringInfo(&buf, ", \"last\": ", 10);
	if (n > 0)
		ExecStoreHeapTuple(rows[n - 1], row, false);
	append_json_name(&buf, n > 0 ? row : NULL, col.name);
	appendStringInfoCharMacro(&buf, '}');

	ExecDropSingleTupleTableSlot(row);
	close_rels(&r);
	SET_VARSIZE(buf.data, buf.len);
	PG_RETURN_POINTER(buf.data);
}
