/*
 * query.c — the HTTP tracker's query strings (BEP 3 announce, BEP 48 scrape):
 * percent-decoding, the fields a tracker needs, and a reason for everything refused.
 * Pure functions (no I/O), so they are unit-tested and fuzzed directly.
 */
#include <stdlib.h>
#include <string.h>

#include "tracker.h"

/* Percent-decodes s[0..n) into out (at most max bytes); -1 when malformed or longer. */
static long
pct_decode(const char *s, size_t n, uint8_t *out, size_t max)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++)
	{
		int c = (unsigned char)s[i];

		if (c == '%')
		{
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = wk_hex_digit((unsigned char)s[i + 1]);
			lo = wk_hex_digit((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = hi * 16 + lo;
			i += 2;
		}
		else if (c == '+')
			c = ' ';
		if (o >= max)
			return -1;
		out[o++] = (uint8_t)c;
	}
	return (long)o;
}

/* A decimal unsigned integer value (at most 19 digits); false when it is not one. */
static bool
parse_u64(const char *s, size_t n, uint64_t *v)
{
	uint64_t r = 0;

	if (n == 0 || n > 19)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		r = r * 10 + (uint64_t)(s[i] - '0');
	}
	*v = r;
	return true;
}

typedef struct field
{
	const char *key, *val;
	size_t klen, vlen;
} field;

/* The next key=value pair of the query, from *pos; false at the end. */
static bool
next_field(const char *q, size_t len, size_t *pos, field *f)
{
	size_t start = *pos, eq, end;

	if (start >= len)
		return false;
	end = start;
	while (end < len && q[end] != '&')
		end++;
	eq = start;
	while (eq < end && q[eq] != '=')
		eq++;
	f->key = q + start;
	f->klen = eq - start;
	f->val = eq < end ? q + eq + 1 : q + end;
	f->vlen = eq < end ? end - eq - 1 : 0;
	*pos = end + 1;
	return true;
}

static bool
key_is(const field *f, const char *k)
{
	return f->klen == strlen(k) && memcmp(f->key, k, f->klen) == 0;
}

const char *
tk_parse_announce(const char *q, size_t len, tk_announce *a, long numwant_max)
{
	size_t pos = 0;
	field f;
	bool have_hash = false, have_id = false, have_port = false;

	memset(a, 0, sizeof(*a));
	a->numwant = 50;
	a->compact = true;
	while (next_field(q, len, &pos, &f))
	{
		uint64_t v;

		if (key_is(&f, "info_hash"))
		{
			if (have_hash)
				return "more than one info_hash in an announce";
			if (pct_decode(f.val, f.vlen, a->hash, TK_HASH_LEN) != TK_HASH_LEN)
				return "invalid info_hash (not 20 bytes)";
			have_hash = true;
		}
		else if (key_is(&f, "peer_id"))
		{
			if (pct_decode(f.val, f.vlen, a->peer_id, 20) != 20)
				return "invalid peer_id (not 20 bytes)";
			have_id = true;
		}
		else if (key_is(&f, "port"))
		{
			if (!parse_u64(f.val, f.vlen, &v) || v > 65535)
				return "invalid port";
			a->addr.port = htons((uint16_t)v);
			have_port = true;
		}
		else if (key_is(&f, "left"))
		{
			if (!parse_u64(f.val, f.vlen, &a->left))
				return "invalid left";
			a->left_known = true;
		}
		else if (key_is(&f, "uploaded") || key_is(&f, "downloaded") || key_is(&f, "corrupt"))
		{
			if (!parse_u64(f.val, f.vlen, &v))
				return "invalid uploaded/downloaded";
		}
		else if (key_is(&f, "numwant"))
		{
			if (!parse_u64(f.val, f.vlen, &v))
				return "invalid numwant";
			a->numwant = v > (uint64_t)numwant_max ? (int)numwant_max : (int)v;
		}
		else if (key_is(&f, "compact"))
			a->compact = !(f.vlen == 1 && f.val[0] == '0');
		else if (key_is(&f, "no_peer_id"))
			a->no_peer_id = !(f.vlen == 1 && f.val[0] == '0');
		else if (key_is(&f, "event"))
		{
#define EV(s) (f.vlen == sizeof(s) - 1 && memcmp(f.val, s, f.vlen) == 0)
			if (EV("started"))
				a->event = TK_EV_STARTED;
			else if (EV("completed"))
				a->event = TK_EV_COMPLETED;
			else if (EV("stopped"))
				a->event = TK_EV_STOPPED;
			else if (EV("paused"))
				a->event = TK_EV_PAUSED;
			else if (f.vlen == 0 || EV("empty"))
				a->event = TK_EV_NONE;
			else
				return "invalid event";
#undef EV
		}
		/* Others (key, ip, supportcrypto, trackerid, ...) are ignored; ip in
		 * particular, so nobody announces an address that is not their own. */
	}
	if (!have_hash)
		return "missing info_hash";
	if (!have_id)
		return "missing peer_id";
	if (!have_port)
		return "missing port";
	if (!a->left_known)
		return "missing left";
	return NULL;
}

int
tk_parse_scrape(const char *q, size_t len, uint8_t *out, int max, const char **reason)
{
	size_t pos = 0;
	field f;
	int n = 0;

	while (next_field(q, len, &pos, &f))
	{
		if (!key_is(&f, "info_hash"))
			continue;
		if (n == max)
		{
			*reason = "too many info_hash in one scrape";
			return -1;
		}
		if (pct_decode(f.val, f.vlen, out + n * TK_HASH_LEN, TK_HASH_LEN) != TK_HASH_LEN)
		{
			*reason = "invalid info_hash (not 20 bytes)";
			return -1;
		}
		n++;
	}
	if (n == 0)
	{
		*reason = "scrape needs at least one info_hash";
		return -1;
	}
	return n;
}

void
tk_bencode_failure(wk_buf *b, const char *reason)
{
	wk_buf_adds(b, "d");
	wk_benc_strz(b, "failure reason");
	wk_benc_strz(b, reason);
	wk_buf_adds(b, "e");
}
