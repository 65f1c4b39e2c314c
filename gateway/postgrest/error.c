/* The error module's pure half (see error.h): the error record and the SQLSTATE ->
 * HTTP status map, unit-tested and fuzzed with the SQL builder. The half that needs
 * a pool job or a request is error_respond.c. */
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


void
gw_error_set(gw_error *e, int status, const char *code, const char *message, const char *details,
             const char *hint)
{
	e->status = status;
	e->details_json = 0;
	snprintf(e->code, sizeof e->code, "%s", code);
	snprintf(e->message, sizeof e->message, "%s", message ? message : "");
	snprintf(e->details, sizeof e->details, "%s", details ? details : "");
	snprintf(e->hint, sizeof e->hint, "%s", hint ? hint : "");
}

void
gw_error_from_pg(const char *st, const char *message, const char *detail, const char *hint,
                 int anonymous, gw_error *e)
{
	int status = 400;
	if (!st)
		st = "XX000";
	if (!strncmp(st, "08", 2) || !strncmp(st, "53", 2))
		status = 503;
	else if (!strncmp(st, "09", 2) || !strncmp(st, "25", 2) || !strncmp(st, "2D", 2) ||
	         !strncmp(st, "38", 2) || !strncmp(st, "39", 2) || !strncmp(st, "3B", 2) ||
	         !strncmp(st, "40", 2) || !strncmp(st, "55", 2) || !strncmp(st, "57", 2) ||
	         !strncmp(st, "58", 2) || !strncmp(st, "F0", 2) || !strncmp(st, "HV", 2) ||
	         !strncmp(st, "P0", 2) || !strncmp(st, "XX", 2))
		status = 500;
	else if (!strncmp(st, "0L", 2) || !strncmp(st, "0P", 2) || !strncmp(st, "28", 2))
		status = 403;
	else if (!strncmp(st, "54", 2))
		status = 413;
	if (!strcmp(st, "23503") || !strcmp(st, "23505"))
		status = 409;
	else if (!strcmp(st, "25006"))
		status = 405;
	else if (!strcmp(st, "P0001"))
		status = 400;
	else if (!strcmp(st, "P0002"))
		status = 404; /* no_data_found: pgpod's functions raise it for what the caller may not
		                 see or that does not exist (PostgREST: 500); an access refusal is never a 500 */
	else if (!strcmp(st, "42883") || !strcmp(st, "42P01"))
		status = 404;
	else if (!strcmp(st, "42P17"))
		status = 500;
	else if (!strcmp(st, "42501"))
		status = anonymous ? 401 : 403;
	else if (!strcmp(st, "22023") && !strncmp(message, "role ", 5) &&
	         strlen(message) > 15 && !strcmp(message + strlen(message) - 15, " does not exist"))
		status = 401; /* a JWT's role that does not exist (PostgREST v12.2) */
	else if (!strcmp(st, "57014"))
		status = 500; /* statement timeout, as PostgREST answers it */
	if (st[0] == 'P' && st[1] == 'T' && st[2] >= '1' && st[2] <= '5')
	{
		int custom = atoi(st + 2);
		if (custom >= 100 && custom < 600)
			status = custom;
	}
	gw_error_set(e, status, st, message, detail, hint);
}

void
gw_error_answer(const gw_error *e, const char *extra, gw_answer *out)
{
	gw_buf *b = &out->own;
	gw_buf_reset(b);
	gw_buf_puts(b, "{\"code\":");
	gw_buf_json_str(b, e->code);
	gw_buf_puts(b, ",\"details\":");
	if (e->details_json && e->details[0])
		gw_buf_puts(b, e->details);
	else
		gw_buf_json_str(b, e->details[0] ? e->details : NULL);
	gw_buf_puts(b, ",\"hint\":");
	gw_buf_json_str(b, e->hint[0] ? e->hint : NULL);
	gw_buf_puts(b, ",\"message\":");
	gw_buf_json_str(b, e->message);
	gw_buf_putc(b, '}');
	out->status = e->status;
	out->content_type = "application/json; charset=utf-8";
	out->body = b->data;
	out->body_len = b->len;
	gw_buf_reset(&out->headers);
	if (extra)
		gw_buf_puts(&out->headers, extra);
	/* A refusal that says when to come back (SQL: ERRCODE 'PT429' or 'PT503' with
	 * DETAIL 'Retry-After: <seconds>', e.g. chat slow mode) gets the header too. */
	const char *d = e->details;
	if ((e->status == 429 || e->status == 503) && !e->details_json &&
	    !strncmp(d, "Retry-After: ", 13) && d[13] && strspn(d + 13, "0123456789") == strlen(d + 13) &&
	    strlen(d + 13) <= 9 && (!extra || strlen(extra) + 30 < 96))
		gw_buf_printf(&out->headers, "Retry-After: %s\r\n", d + 13);
}
