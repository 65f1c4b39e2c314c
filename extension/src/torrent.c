/*
 * torrent.c — the SQL face of bencode.c and metainfo.c: pod.torrent_info(bytea) reads
 * a .torrent (refusing a corrupt one with SQLSTATE 22P03), pod.torrent_build(...)
 * writes the single-file torrents pgpod publishes, pod.uri_component(text) escapes a
 * magnet's parameters. Results are palloc'd in the caller's memory context.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include <openssl/sha.h>

#include "metainfo.h"
#include "pgpod.h"

PG_FUNCTION_INFO_V1(torrent_info);
PG_FUNCTION_INFO_V1(torrent_build);
PG_FUNCTION_INFO_V1(uri_component);

/* The encoder grows its buffer in the current memory context. */
static void *
grow_palloc(void *old, size_t size)
{
	return old ? repalloc(old, size) : palloc(size);
}

/* Adds the text of a checked bencoded string to an array being built, once. */
static void
add_unique(ArrayBuildState **acc, be_span v)
{
	const uint8_t *s;
	size_t		n;
	text	   *t;

	if (!be_str(v, &s, &n))
		return;
	if (*acc)
	{
		for (int i = 0; i < (*acc)->nelems; i++)
		{
			text	   *e = DatumGetTextPP((*acc)->dvalues[i]);

			if (VARSIZE_ANY_EXHDR(e) == n && memcmp(VARDATA_ANY(e), s, n) == 0)
				return;
		}
	}
	t = cstring_to_text_with_len((const char *) s, (int) n);
	*acc = accumArrayResult(*acc, PointerGetDatum(t), false, TEXTOID, CurrentMemoryContext);
}

static Datum
text_array(ArrayBuildState *acc)
{
	if (acc == NULL)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	return makeArrayResult(acc, CurrentMemoryContext);
}

/* pod.torrent_info(torrent bytea) → (name, length, piece_length, piece_count,
 * info_hash, trackers, web_seeds). */
Datum
torrent_info(PG_FUNCTION_ARGS)
{
	bytea	   *raw = PG_GETARG_BYTEA_PP(0);
	const uint8_t *buf = (const uint8_t *) VARDATA_ANY(raw);
	size_t		len = VARSIZE_ANY_EXHDR(raw);
	mi_torrent	t;
	const char *err;
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {0};
	bytea	   *hash;
	ArrayBuildState *trackers = NULL,
			   *seeds = NULL;
	be_iter		it,
				tier_it;
	be_span		tier,
				v;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "torrent_info must return a composite type");
	if ((err = mi_parse(buf, len, &t)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("not a valid torrent: %s", err)));
	if (t.piece_count > PG_INT32_MAX || t.piece_length > PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("not a valid torrent: too many pieces")));

	hash = palloc(VARHDRSZ + MI_HASH_LEN);
	SHA1(t.info.p, t.info.n, (unsigned char *) VARDATA(hash));
	SET_VARSIZE(hash, VARHDRSZ + MI_HASH_LEN);

	if (t.announce.n)
		add_unique(&trackers, t.announce);
	if (t.has_announce_list)
	{
		be_iter_init(&it, t.announce_list);
		while (be_iter_next(&it, NULL, &tier))
		{
			be_iter_init(&tier_it, tier);
			while (be_iter_next(&tier_it, NULL, &v))
				add_unique(&trackers, v);
		}
	}
	if (t.url_list.n && be_is_list(t.url_list))
	{
		be_iter_init(&it, t.url_list);
		while (be_iter_next(&it, NULL, &v))
			add_unique(&seeds, v);
	}
	else if (t.url_list.n)
		add_unique(&seeds, t.url_list);

	values[0] = PointerGetDatum(cstring_to_text_with_len((const char *) t.name, (int) t.name_len));
	values[1] = Int64GetDatum(t.length);
	values[2] = Int32GetDatum((int32) t.piece_length);
	values[3] = Int32GetDatum((int32) t.piece_count);
	values[4] = PointerGetDatum(hash);
	values[5] = text_array(trackers);
	values[6] = text_array(seeds);
	desc = BlessTupleDesc(desc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* The non-NULL elements of a text[] as C strings (NULL elements are an error). */
static const char **
text_array_cstrings(ArrayType *arr, const char *what, int *n)
{
	Datum	   *elems;
	bool	   *enulls;
	const char **out;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, n);
	out = palloc(sizeof(char *) * (*n + 1));
	for (int i = 0; i < *n; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", what)));
		out[i] = TextDatumGetCString(elems[i]);
		if (out[i][0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain an empty URL", what)));
	}
	return out;
}

/* pod.torrent_build(name text, length bigint, piece_length integer, pieces bytea,
 * trackers text[], web_seeds text[]) → bytea: a single-file BEP 3 torrent. */
Datum
torrent_build(PG_FUNCTION_ARGS)
{
	char	   *name;
	int64		length;
	int32		piece_length;
	bytea	   *pieces;
	const char **trackers,
			  **seeds;
	int			ntrackers,
				nseeds;
	be_buf		out = {NULL, 0, 0, grow_palloc};
	bytea	   *result;
	long long	want;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("torrent_build needs every argument")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	length = PG_GETARG_INT64(1);
	piece_length = PG_GETARG_INT32(2);
	pieces = PG_GETARG_BYTEA_PP(3);
	if (name[0] == '\0' || strchr(name, '/') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a torrent's name must be a non-empty file name without '/'")));
	if (length < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a torrent's length cannot be negative")));
	if (piece_length < 16384 || (piece_length & (piece_length - 1)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("piece length %d is not a power of two of at least 16 KiB", piece_length)));
	want = mi_piece_count(length, piece_length);
	if ((long long) VARSIZE_ANY_EXHDR(pieces) != want * MI_HASH_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%lld bytes of piece hashes given, %lld expected",
						(long long) VARSIZE_ANY_EXHDR(pieces), want * MI_HASH_LEN),
				 errdetail("A file of %lld bytes in pieces of %d has %lld pieces of 20 bytes of SHA-1 each.",
						   (long long) length, piece_length, want)));
	trackers = text_array_cstrings(PG_GETARG_ARRAYTYPE_P(4), "trackers", &ntrackers);
	seeds = text_array_cstrings(PG_GETARG_ARRAYTYPE_P(5), "web_seeds", &nseeds);

	out.data = palloc(VARHDRSZ + 256 + VARSIZE_ANY_EXHDR(pieces));
	out.cap = VARHDRSZ + 256 + VARSIZE_ANY_EXHDR(pieces);
	out.len = VARHDRSZ;			/* the bytea header is written last */
	mi_build(&out, name, length, piece_length, (const uint8_t *) VARDATA_ANY(pieces),
			 VARSIZE_ANY_EXHDR(pieces), trackers, ntrackers, seeds, nseeds);
	result = (bytea *) out.data;
	SET_VARSIZE(result, out.len);
	PG_RETURN_BYTEA_P(result);
}

/* pod.uri_component(text) → text: RFC 3986 percent-encoding of everything but the
 * unreserved characters, as JavaScript's encodeURIComponent (for magnet links). */
Datum
uri_component(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	const unsigned char *s = (const unsigned char *) VARDATA_ANY(in);
	int			n = VARSIZE_ANY_EXHDR(in);
	StringInfoData out;
	static const char hex[] = "0123456789ABCDEF";

	initStringInfo(&out);
	for (int i = 0; i < n; i++)
	{
		unsigned char c = s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~')
			appendStringInfoChar(&out, (char) c);
		else
		{
			appendStringInfoChar(&out, '%');
			appendStringInfoChar(&out, hex[c >> 4]);
			appendStringInfoChar(&out, hex[c & 15]);
		}
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
