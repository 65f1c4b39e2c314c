/* Unit tests of extension/src/bencode.c and metainfo.c (no server needed): the
 * decoder's acceptance and refusals, accessors, the encoder, and torrents built and
 * read back. TAP output; exit status 1 on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "metainfo.h"

#include "tap.h"

static const char *
chk(const char *s)
{
	return be_check_all((const uint8_t *)s, strlen(s));
}

static void *
grow(void *old, size_t size)
{
	void *p = realloc(old, size);
	if (!p)
		abort();
	return p;
}

static be_span
span(const char *s)
{
	be_span v = {(const uint8_t *)s, strlen(s)};
	return v;
}

static void
test_check(void)
{
	static const char *good[] = {"i0e", "i-1e", "i42e", "i9223372036854775807e", "0:", "4:spam",
	                             "le", "de", "l4:spami42ee", "d3:bar4:spam3:fooi42ee",
	                             "d1:ad1:bli1ei2eeee", NULL};
	static const char *bad[] = {"", "i-0e", "i03e", "ie", "i-e", "i1", "i9223372036854775808e",
	                            "5:spam", "03:abc", "-1:a", "l", "d", "d3:fooe", "di1ei2ee",
	                            "d3:foo1:a3:bar1:be", "d1:a1:b1:a1:ce", "x", "4spam", "i1ei2e",
	                            "l4:spam", NULL};
	for (int i = 0; good[i]; i++)
		ok(chk(good[i]) == NULL, "accepts %s", good[i]);
	for (int i = 0; bad[i]; i++)
		ok(chk(bad[i]) != NULL, "refuses \"%s\" (%s)", bad[i], chk(bad[i]) ? chk(bad[i]) : "accepted");

	/* depth: BE_MAX_DEPTH nested lists pass, one more does not */
	char deep[2 * (BE_MAX_DEPTH + 1) + 1];
	for (int d = BE_MAX_DEPTH; d <= BE_MAX_DEPTH + 1; d++)
	{
		memset(deep, 'l', (size_t)d);
		memset(deep + d, 'e', (size_t)d);
		deep[2 * d] = 0;
		ok((chk(deep) == NULL) == (d <= BE_MAX_DEPTH), "%d nested lists %s", d,
		   d <= BE_MAX_DEPTH ? "pass" : "are refused");
	}
	size_t used;
	ok(be_check((const uint8_t *)"i1etrailing", 11, &used) == NULL && used == 3,
	   "be_check reports the length of the first value");
}

static void
test_access(void)
{
	be_span d = span("d3:bar4:spam3:fooi42e4:listl1:a1:bee"), v;
	long long i;
	const uint8_t *s;
	size_t n;
	ok(chk((const char *)d.p) == NULL, "test dictionary is valid");
	ok(be_dict_get(d, "foo", &v) && be_int(v, &i) && i == 42, "dict_get finds an integer");
	ok(be_dict_get(d, "bar", &v) && be_str(v, &s, &n) && n == 4 && !memcmp(s, "spam", 4),
	   "dict_get finds a string");
	ok(!be_dict_get(d, "baz", &v), "dict_get misses an absent key");
	ok(be_dict_get(d, "list", &v) && be_is_list(v), "a list value");
	be_iter it;
	be_span e;
	int count = 0;
	be_iter_init(&it, v);
	while (be_iter_next(&it, NULL, &e))
		count++;
	ok(count == 2, "the list has two elements");
	ok(!be_int(span("4:spam"), &i), "a string is not an integer");
}

static void
test_encode(void)
{
	be_buf b = {NULL, 0, 0, grow};
	be_put_open_dict(&b);
	be_put_cstr(&b, "a");
	be_put_int(&b, -7);
	be_put_cstr(&b, "b");
	be_put_open_list(&b);
	be_put_str(&b, "x\0y", 3);
	be_put_end(&b);
	be_put_end(&b);
	ok(b.len == 19 && !memcmp(b.data, "d1:ai-7e1:bl3:x\0yee", 19), "encoder output");
	ok(be_check_all(b.data, b.len) == NULL, "encoder output decodes");
	free(b.data);
}

static void
test_torrent(void)
{
	uint8_t pieces[3 * 20];
	for (int i = 0; i < 60; i++)
		pieces[i] = (uint8_t)i;
	const char *trackers[] = {"http://h:1/announce", "udp://h:1/announce", "ws://h:1"};
	const char *seeds[] = {"http://h/files/x"};
	be_buf b = {NULL, 0, 0, grow};
	mi_build(&b, "video.mp4", 40000, 16384, pieces, sizeof pieces, trackers, 3, seeds, 1);
	mi_torrent t;
	const char *err = mi_parse(b.data, b.len, &t);
	ok(err == NULL, "a built torrent parses (%s)", err ? err : "ok");
	ok(t.length == 40000 && t.piece_length == 16384 && t.piece_count == 3 && t.file_count == 1,
	   "length, piece length and count read back");
	ok(t.name_len == 9 && !memcmp(t.name, "video.mp4", 9), "name reads back");
	ok(memcmp(t.pieces, pieces, 60) == 0, "pieces read back");
	/* The info dictionary is exactly what mktorrent writes for the same file. */
	const char *info_prefix = "d6:lengthi40000e4:name9:video.mp412:piece lengthi16384e6:pieces60:";
	ok(t.info.n == strlen(info_prefix) + 60 + 1 && !memcmp(t.info.p, info_prefix, strlen(info_prefix)),
	   "the info dictionary has exactly length, name, piece length, pieces");
	free(b.data);

	b = (be_buf){NULL, 0, 0, grow};
	mi_build(&b, "video.mp4", 40000, 16384, pieces, 40, trackers, 3, seeds, 1);
	ok(mi_parse(b.data, b.len, &t) != NULL, "too few piece hashes are refused");
	free(b.data);

	static const char *bad[] = {
	    "le",
	    "d4:infoi1ee",
	    "d4:infod6:lengthi1e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
	    "d4:infod6:lengthi1e4:name0:12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
	    "d4:infod6:lengthi-1e4:name1:a12:piece lengthi16384e6:pieces0:ee",
	    "d4:infod6:lengthi1e4:name1:a12:piece lengthi0e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
	    "d4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces19:aaaaaaaaaaaaaaaaaaaee",
	    "d8:announcei1e4:infod6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
	    "d4:infod5:filesle4:name1:a12:piece lengthi16384e6:pieces0:ee",
	    NULL};
	for (int i = 0; bad[i]; i++)
	{
		err = mi_parse((const uint8_t *)bad[i], strlen(bad[i]), &t);
		ok(err != NULL, "corrupt torrent %d refused (%s)", i, err ? err : "accepted");
	}
	const char *multi = "d4:infod5:filesld6:lengthi5e4:pathl1:aeed6:lengthi7e4:pathl1:b1:ceee"
	                    "4:name1:d12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
	err = mi_parse((const uint8_t *)multi, strlen(multi), &t);
	ok(err == NULL && t.length == 12 && t.file_count == 2, "a multi-file torrent adds its lengths");
	ok(mi_piece_count(0, 16384) == 0 && mi_piece_count(16384, 16384) == 1 &&
	       mi_piece_count(16385, 16384) == 2,
	   "piece counts");
}

int
main(void)
{
	test_check();
	test_access();
	test_encode();
	test_torrent();
	return tap_done();
}
