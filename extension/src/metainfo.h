/*
 * metainfo.h — BEP 3 v1 .torrent files over bencode.h: reading one (the checks a
 * client would make, so a corrupt file is refused with a reason) and writing the
 * single-file torrents pgpod publishes. Plain C, shared by the extension and the
 * seeder like bencode.c.
 */
#ifndef PGPOD_METAINFO_H
#define PGPOD_METAINFO_H

#include "bencode.h"

#define MI_HASH_LEN 20

typedef struct mi_torrent
{
	be_span whole;
	be_span info; /* the info dictionary's bytes: its SHA-1 is the info hash */
	const uint8_t *name;
	size_t name_len;
	long long length;       /* the single file's, or the sum of the files' */
	long long piece_length;
	long long piece_count;
	const uint8_t *pieces;  /* piece_count × 20 bytes */
	long long file_count;   /* 1 for a single-file torrent */
	bool has_announce_list;
	be_span announce;       /* a string, or n == 0 */
	be_span announce_list;  /* a list of lists of strings, or n == 0 */
	be_span url_list;       /* a string or a list of strings, or n == 0 */
} mi_torrent;

/* Reads a .torrent; NULL when it is valid, else why not. */
const char *mi_parse(const uint8_t *buf, size_t len, mi_torrent *t);

/* The pieces a length makes with a piece length (0 for an empty file). */
long long mi_piece_count(long long length, long long piece_length);

/* Writes a single-file torrent: announce = trackers[0], announce-list = one tier per
 * tracker, info {length, name, piece length, pieces}, url-list = the web seeds. Keys in
 * the order bencoding requires; no creation date, so the same input gives the same
 * bytes. */
void mi_build(be_buf *out, const char *name, long long length, long long piece_length,
              const uint8_t *pieces, size_t pieces_len, const char *const *trackers,
              int ntrackers, const char *const *web_seeds, int nweb_seeds);

#endif
