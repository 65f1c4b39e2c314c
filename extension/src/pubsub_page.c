/*
 * pubsub_page.c — an RSM page (XEP-0059) of a pubsub node's items,
 * pod.pubsub_items_page: at most max items in publication order from the (node_id,
 * seq) index, written as JSON straight into the result's buffer (raw payloads through
 * an escaper that copies runs of safe bytes, parsed values walked in their binary
 * JSONB form). count is the node's maintained pod.pubsub_nodes.item_count; index is
 * counted over at most PAGE_INDEX_WINDOW items from either end, so no page costs more
 * with the size of its node (see page_index).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

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

static SPIPlanPtr node_plan;
static SPIPlanPtr pivot_plan;
static SPIPlanPtr forward_plan;
static SPIPlanPtr backward_plan;
static SPIPlanPtr count_before_plan;
static SPIPlanPtr count_from_plan;

/* The page's columns, in the order the page plans select them. */
enum
{
	COL_NAME = 1,
	COL_PUBLISHER,
	COL_DATA,
	COL_PARSED,
	COL_CREATED_AT,
	COL_UPDATED_AT,
	COL_VERSION,
	COL_SEQ
};

/* A plan prepared once per backend (generic: every query here is one index range). */
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

/* Bytes that a JSON string cannot hold as they are: controls, quote, backslash. */
static const bool json_escaped[256] = {
	[0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true, [0x04] = true, [0x05] = true,
	[0x06] = true, [0x07] = true, [0x08] = true, [0x09] = true, [0x0a] = true, [0x0b] = true,
	[0x0c] = true, [0x0d] = true, [0x0e] = true, [0x0f] = true, [0x10] = true, [0x11] = true,
	[0x12] = true, [0x13] = true, [0x14] = true, [0x15] = true, [0x16] = true, [0x17] = true,
	[0x18] = true, [0x19] = true, [0x1a] = true, [0x1b] = true, [0x1c] = true, [0x1d] = true,
	[0x1e] = true, [0x1f] = true, ['"'] = true, ['\\'] = true,
};

/*
 * Appends s[0..len) as a JSON string, escaped exactly as PostgreSQL's escape_json
 * does (which appends byte by byte: a third of a page's time went there), copying the
 * runs between escapes whole.
 */
static void
append_json_string(StringInfo buf, const char *s, int len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	/* Room for the usual case (few escapes) at once. */
	enlargeStringInfo(buf, len + 2);
	appendStringInfoCharMacro(buf, '"');
	while (p < end)
	{
		const unsigned char *run = p;

		while (p < end && !json_escaped[*p])
			p++;
		if (p > run)
			appendBinaryStringInfo(buf, (const char *) run, p - run);
		if (p == end)
			break;
		switch (*p)
		{
		case '"':
			appendBinaryStringInfo(buf, "\\\"", 2);
			break;
		case '\\':
			appendBinaryStringInfo(buf, "\\\\", 2);
			break;
		case '\b':
			appendBinaryStringInfo(buf, "\\b", 2);
			break;
		case '\f':
			appendBinaryStringInfo(buf, "\\f", 2);
			break;
		case '\n':
			appendBinaryStringInfo(buf, "\\n", 2);
			break;
		case '\r':
			appendBinaryStringInfo(buf, "\\r", 2);
			break;
		case '\t':
			appendBinaryStringInfo(buf, "\\t", 2);
			break;
		default:
			appendStringInfo(buf, "\\u%04x", (unsigned int) *p);
			break;
		}
		p++;
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
append_item(StringInfo buf, HeapTuple row, TupleDesc desc)
{
	bool isnull;
	Datum d;

	appendBinaryStringInfo(buf, "{\"name\": ", 9);
	append_json_text(buf, SPI_getbinval(row, desc, COL_NAME, &isnull));
	appendBinaryStringInfo(buf, ", \"publisher\": ", 15);
	d = SPI_getbinval(row, desc, COL_PUBLISHER, &isnull);
	if (isnull)
		appendBinaryStringInfo(buf, "null", 4);
	else
		append_json_text(buf, d);
	appendBinaryStringInfo(buf, ", \"data\": ", 10);
	append_json_text(buf, SPI_getbinval(row, desc, COL_DATA, &isnull));
	appendBinaryStringInfo(buf, ", \"parsed\": ", 12);
	d = SPI_getbinval(row, desc, COL_PARSED, &isnull);
	if (isnull)
		appendBinaryStringInfo(buf, "null", 4);
	else
		append_jsonb(buf, d);
	appendBinaryStringInfo(buf, ", \"created_at\": ", 16);
	append_json_timestamptz(buf, SPI_getbinval(row, desc, COL_CREATED_AT, &isnull));
	appendBinaryStringInfo(buf, ", \"updated_at\": ", 16);
	append_json_timestamptz(buf, SPI_getbinval(row, desc, COL_UPDATED_AT, &isnull));
	appendBinaryStringInfo(buf, ", \"version\": ", 13);
	d = SPI_getbinval(row, desc, COL_VERSION, &isnull);
	append_json_int8(buf, d, isnull);
	appendStringInfoCharMacro(buf, '}');
}

/* How many items of the node lie before seq (plan count_before_plan) or from it on
 * (count_from_plan), counting at most limit. */
static int64
count_items(SPIPlanPtr plan, int64 node_id, int64 seq, int64 limit)
{
	Datum args[3] = {Int64GetDatum(node_id), Int64GetDatum(seq), Int64GetDatum(limit)};
	bool isnull;
	int rc = SPI_execute_plan(plan, args, NULL, true, 1);

	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "counting the items of a pubsub node failed: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The index of the page's first item (seq first_seq) in its node of total items:
 * counted from the start when it is within PAGE_INDEX_WINDOW of it, else from the end
 * (total minus the items from it on) when within the window of that; else unknown
 * (-1, written null). Both counts read the statement's snapshot, as total does.
 */
static int64
page_index(int64 node_id, int64 first_seq, int64 total)
{
	int64 before = count_items(count_before_plan, node_id, first_seq, PAGE_INDEX_WINDOW + 1);
	int64 from;

	if (before <= PAGE_INDEX_WINDOW)
		return before;
	from = count_items(count_from_plan, node_id, first_seq, PAGE_INDEX_WINDOW + 1);
	if (from <= PAGE_INDEX_WINDOW)
		return Max(total - from, 0);
	return -1;
}

static void
prepare_plans(void)
{
	Oid text2[2] = {TEXTOID, TEXTOID};
	Oid id_name[2] = {INT8OID, TEXTOID};
	Oid id_seq_limit[3] = {INT8OID, INT8OID, INT8OID};

	keep_plan(&node_plan, "SELECT n.id, n.item_count FROM pod.pubsub_nodes n WHERE n.service = $1 AND n.name = $2", 2,
			  text2);
	keep_plan(&pivot_plan, "SELECT i.seq FROM pod.pubsub_items i WHERE i.node_id = $1 AND i.name = $2", 2, id_name);
	keep_plan(&forward_plan,
			  "SELECT i.name, i.publisher, i.data, i.parsed, i.created_at, i.updated_at, i.version, i.seq"
			  "  FROM pod.pubsub_items i WHERE i.node_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3",
			  3, id_seq_limit);
	keep_plan(&backward_plan,
			  "SELECT i.name, i.publisher, i.data, i.parsed, i.created_at, i.updated_at, i.version, i.seq"
			  "  FROM pod.pubsub_items i WHERE i.node_id = $1 AND i.seq < $2 ORDER BY i.seq DESC LIMIT $3",
			  3, id_seq_limit);
	keep_plan(&count_before_plan,
			  "SELECT count(*) FROM (SELECT FROM pod.pubsub_items i WHERE i.node_id = $1 AND i.seq < $2 LIMIT $3) x", 3,
			  id_seq_limit);
	keep_plan(&count_from_plan,
			  "SELECT count(*) FROM (SELECT FROM pod.pubsub_items i WHERE i.node_id = $1 AND i.seq >= $2 LIMIT $3) x", 3,
			  id_seq_limit);
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
	text *pivot_name;
	int32 max;
	int64 node_id;
	int64 total;
	int64 pivot_seq;
	int64 index = -1;
	bool isnull;
	bool backward = has_before;
	StringInfoData buf;
	SPITupleTable *page;
	uint64 n;
	Datum args[3];
	int rc;

	/* The result is built in place: a varlena header first, set at the end. */
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	prepare_plans();

	/* The node (P0002 before any argument check, as pod.pubsub_node_id has it). */
	if (service != NULL && node != NULL)
	{
		args[0] = PointerGetDatum(service);
		args[1] = PointerGetDatum(node);
		rc = SPI_execute_plan(node_plan, args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up a pubsub node failed: %s", SPI_result_code_string(rc));
	}
	if (service == NULL || node == NULL || SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
						errmsg("no pubsub node %s at %s", node ? quote_literal_cstr(text_to_cstring(node)) : "NULL",
							   service ? quote_literal_cstr(text_to_cstring(service)) : "NULL")));
	node_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	total = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	if (PG_ARGISNULL(2) || PG_GETARG_INT32(2) < 0 || PG_GETARG_INT32(2) > PAGE_MAX_ITEMS)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("max must be between 0 and %d, not %s", PAGE_MAX_ITEMS,
							   PG_ARGISNULL(2) ? "NULL" : psprintf("%d", PG_GETARG_INT32(2)))));
	max = PG_GETARG_INT32(2);
	if (has_after && has_before)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("a page is after an item or before one, not both")));

	/* The pivot item; none (the first page, or before = '': the last). */
	pivot_name = has_after ? after : before;
	pivot_seq = backward ? PG_INT64_MAX : -1;
	if (pivot_name != NULL && VARSIZE_ANY_EXHDR(pivot_name) > 0)
	{
		args[0] = Int64GetDatum(node_id);
		args[1] = PointerGetDatum(pivot_name);
		rc = SPI_execute_plan(pivot_plan, args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "looking up a pubsub item failed: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR, (errcode(ERRCODE_NO_DATA_FOUND),
							errmsg("item %s is not in node %s", quote_literal_cstr(text_to_cstring(pivot_name)),
								   quote_literal_cstr(text_to_cstring(node))),
							errhint("RSM: item-not-found.")));
		pivot_seq = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}

	args[0] = Int64GetDatum(node_id);
	args[1] = Int64GetDatum(pivot_seq);
	args[2] = Int64GetDatum(max);
	rc = SPI_execute_plan(backward ? backward_plan : forward_plan, args, NULL, true, max);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading a page of a pubsub node failed: %s", SPI_result_code_string(rc));
	page = SPI_tuptable;
	n = SPI_processed;

	appendBinaryStringInfo(&buf, "{\"items\": [", 11);
	for (uint64 k = 0; k < n; k++)
	{
		/* A backward page was read newest first. */
		HeapTuple row = page->vals[backward ? n - 1 - k : k];

		if (k > 0)
			appendBinaryStringInfo(&buf, ", ", 2);
		append_item(&buf, row, page->tupdesc);
	}
	appendBinaryStringInfo(&buf, "], \"count\": ", 12);
	append_json_int8(&buf, Int64GetDatum(total), false);

	if (n > 0)
	{
		HeapTuple first = page->vals[backward ? n - 1 : 0];
		int64 first_seq = DatumGetInt64(SPI_getbinval(first, page->tupdesc, COL_SEQ, &isnull));

		if (!backward && pivot_seq < 0)
			index = 0;  /* the first page */
		else if (backward && pivot_seq == PG_INT64_MAX)
			index = Max(total - (int64) n, 0);  /* the last page */
		else
			index = page_index(node_id, first_seq, total);
	}
	appendBinaryStringInfo(&buf, ", \"index\": ", 11);
	append_json_int8(&buf, Int64GetDatum(index), index < 0);
	appendBinaryStringInfo(&buf, ", \"first\": ", 11);
	if (n > 0)
		append_json_text(&buf, SPI_getbinval(page->vals[backward ? n - 1 : 0], page->tupdesc, COL_NAME, &isnull));
	else
		appendBinaryStringInfo(&buf, "null", 4);
	appendBinaryStringInfo(&buf, ", \"last\": ", 10);
	if (n > 0)
		append_json_text(&buf, SPI_getbinval(page->vals[backward ? 0 : n - 1], page->tupdesc, COL_NAME, &isnull));
	else
		appendBinaryStringInfo(&buf, "null", 4);
	appendStringInfoCharMacro(&buf, '}');

	SPI_finish();
	SET_VARSIZE(buf.data, buf.len);
	PG_RETURN_POINTER(buf.data);
}
