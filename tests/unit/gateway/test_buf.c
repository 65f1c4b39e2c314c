/* Unit tests of the buffers (gateway/buf.c): identifier quoting and JSON strings,
 * which must stay valid UTF-8 whatever bytes come in. */
#include "buf.h"
#include "tap.h"

static const char *
json(const char *s, size_t n)
{
	static gw_buf b;
	gw_buf_reset(&b);
	gw_buf_json_strn(&b, s, n);
	return b.data;
}

TAP_TEST(test_buf)
{
	gw_buf b;
	gw_buf_init(&b);
	gw_buf_ident(&b, "a\"b");
	is_str(b.data, "\"a\"\"b\"", "identifier quotes are doubled");
	gw_buf_free(&b);
	is_str(json("q\"\\\n\x01", 5), "\"q\\\"\\\\\\n\\u0001\"", "JSON escapes");
	is_str(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14),
	       "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "valid UTF-8 is kept");
	is_str(json("caf\xe9", 4), "\"caf\\ufffd\"", "a Latin-1 byte becomes U+FFFD");
	is_str(json("\xc0\xaf", 2), "\"\\ufffd\\ufffd\"", "an overlong sequence is refused");
	is_str(json("\xed\xa0\x80", 3), "\"\\ufffd\\ufffd\\ufffd\"", "a surrogate is refused");
	is_str(json("\xe2\x82", 2), "\"\\ufffd\\ufffd\"", "a truncated sequence is refused");
}
