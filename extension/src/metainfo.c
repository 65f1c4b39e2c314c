/*
 * metainfo.c — reading and writing BEP 3 v1 metainfo (.torrent) with bencode.c. The
 * reader insists on what clients insist on: an info dictionary with a name, a
 * positive piece length, a length or a file list, and exactly 20 bytes of SHA-1 per
 * piece; trackers and web seeds must be strings where present.
 */
#include "metainfo.h"

#include <string.h>

long long
mi_piece_count(long long length, long long piece_length)
{
	if (length <= 0 || piece_length <= 0)
		return 0;
	return (length + piece_length - 1) / piece_length;
}

static bool
all_strings(be_span list)
{
	be_iter it;
	be_span v;
	const uint8_t *s;
	size_t n;

	be_iter_init(&it, list);
	while (be_iter_next(&it, NULL, &v))
		if (!be_str(v, &s, &n))
			return false;
	return true;
}

const char *
mi_parse(const uint8_t *buf, size_t len, mi_torrent *t)
{
	const char *err;
	be_span whole = {buf, len}, v;
	const uint8_t *s;
	size_t n;

	memset(t, 0, sizeof *t);
	if ((err = be_check_all(buf, len)))
		return err;
	if (!be_is_dict(whole))
		return "a torrent must be a dictionary";
	t->whole = whole;
	if (!be_dict_get(whole, "info", &t->info) || !be_is_dict(t->info))
		return "a torrent needs an info dictionary";
	if (!be_dict_get(t->info, "name", &v) || !be_str(v, &t->name, &t->name_len) || t->name_len == 0)
		return "the info dictionary needs a non-empty name";
	if (!be_dict_get(t->info, "piece length", &v) || !be_int(v, &t->piece_length) ||
	    t->piece_length <= 0 || t->piece_length > (1LL << 30))
		return "the info dictionary needs a piece length between 1 byte and 1 GiB";
	if (be_dict_get(t->info, "length", &v))
	{
		if (!be_int(v, &t->length) || t->length < 0)
			return "the file length must be a non-negative integer";
		t->file_count = 1;
		if (be_dict_get(t->info, "files", &v))
			return "a torrent cannot have both a length and a file list";
	}
	else if (be_dict_get(t->info, "files", &v) && be_is_list(v))
	{
		be_iter it;
		be_span f, fl, path;
		be_iter_init(&it, v);
		while (be_iter_next(&it, NULL, &f))
		{
			long long l;
			if (!be_is_dict(f) || !be_dict_get(f, "length", &fl) || !be_int(fl, &l) || l < 0)
				return "every file of the list needs a non-negative length";
			if (!be_dict_get(f, "path", &path) || !be_is_list(path) || !all_strings(path))
				return "every file of the list needs a path of strings";
			if (t->length > (1LL << 62) - l)
				return "the files' lengths add up to too much";
			t->length += l;
			t->file_count++;
		}
		if (t->file_count == 0)
			return "the file list is empty";
	}
	else
		return "the info dictionary needs a length or a file list";
	if (!be_dict_get(t->info, "pieces", &v) || !be_str(v, &s, &n) || n % MI_HASH_LEN != 0)
		return "the pieces must be a string of 20-byte SHA-1 hashes";
	t->pieces = s;
	t->piece_count = (long long)(n / MI_HASH_LEN);
	if (t->piece_count != mi_piece_count(t->length, t->piece_length))
		return "the number of piece hashes does not match the length and piece length";
	if (be_dict_get(whole, "announce", &t->announce) && !be_str(t->announce, &s, &n))
		return "announce must be a string";
	if (be_dict_get(whole, "announce-list", &t->announce_list))
	{
		be_iter it;
		be_span tier;
		if (!be_is_list(t->announce_list))
			return "announce-list must be a list of lists of strings";
		be_iter_init(&it, t->announce_list);
		while (be_iter_next(&it, NULL, &tier))
			if (!be_is_list(tier) || !all_strings(tier))
				return "announce-list must be a list of lists of strings";
		t->has_announce_list = true;
	}
	if (be_dict_get(whole, "url-list", &t->url_list) && !be_str(t->url_list, &s, &n) &&
	    !(be_is_list(t->url_list) && all_strings(t->url_list)))
		return "url-list must be a string or a list of strings";
	return NULL;
}

void
mi_build(be_buf *out, const char *name, long long length, long long piece_length,
         const uint8_t *pieces, size_t pieces_len, const char *const *trackers, int ntrackers,
         const char *const *web_seeds, int nweb_seeds)
{
	be_put_open_dict(out);
	if (ntrackers > 0)
	{
		be_put_cstr(out, "announce");
		be_put_cstr(out, trackers[0]);
		be_put_cstr(out, "announce-list");
		be_put_open_list(out);
		for (int i = 0; i < ntrackers; i++)
		{
			be_put_open_list(out);
			be_put_cstr(out, trackers[i]);
			be_put_end(out);
		}
		be_put_end(out);
	}
	be_put_cstr(out, "created by");
	be_put_cstr(out, "pgpod");
	be_put_cstr(out, "info");
	be_put_open_dict(out);
	be_put_cstr(out, "length");
	be_put_int(out, length);
	be_put_cstr(out, "name");
	be_put_cstr(out, name);
	be_put_cstr(out, "piece length");
	be_put_int(out, piece_length);
	be_put_cstr(out, "pieces");
	be_put_str(out, pieces, pieces_len);
	be_put_end(out);
	if (nweb_seeds > 0)
	{
		be_put_cstr(out, "url-list");
		be_put_open_list(out);
		for (int i = 0; i < nweb_seeds; i++)
			be_put_cstr(out, web_seeds[i]);
		be_put_end(out);
	}
	be_put_end(out);
}
