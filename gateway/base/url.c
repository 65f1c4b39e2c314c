/* Percent-decoding into a request arena (see url.h): the request path
 * (transport), query strings and form bodies (postgrest), access_token. */
#include "url.h"

#include "worker.h"

char *
gw_url_decode(gw_arena *a, const char *s, size_t n, int plus_is_space)
{
	char *d = gw_arena_alloc(a, n + 1), *o = d;
	for (size_t i = 0; i < n; i++)
	{
		char c = s[i];
		if (c == '%')
		{
			if (i + 2 >= n)
				return NULL;
			int h = wk_hex_digit(s[i + 1]), l = wk_hex_digit(s[i + 2]);
			if (h < 0 || l < 0 || (h == 0 && l == 0))
				return NULL;
			*o++ = (char)(h * 16 + l);
			i += 2;
		}
		else if (c == '+' && plus_is_space)
		{
			*o++ = ' ';
		}
		else if (c == '\0')
		{
			return NULL;
		}
		else
		{
			*o++ = c;
		}
	}
	*o = '\0';
	return d;
}
