/* Test support: raw HTTP request bytes (http-parser, as the gateway reads them)
 * to the pure dialect's input (postgrest/request.h). Used by the libFuzzer target
 * and the SQL builder's expected-output runner. */
#ifndef GW_RAW_REQUEST_H
#define GW_RAW_REQUEST_H
#include <stddef.h>

#include "request.h"

#define RAW_MAX_HEADERS 64

typedef struct raw_request
{
	int complete_head; /* the head parsed (method, URL, headers) */
	int method;
	const char *method_name;
	char url[8192];
	size_t url_len;
	char *names[RAW_MAX_HEADERS], *values[RAW_MAX_HEADERS]; /* lower-cased names */
	int nheaders;
	char *body;
	size_t body_len;
	/* filled by raw_request_input */
	char target[256];
	const char *prefer[RAW_MAX_HEADERS];
} raw_request;

/* Parses bytes into r (which must be zeroed); returns the bytes http-parser took. */
size_t raw_request_parse(raw_request *r, const char *bytes, size_t n);
/* The header's value (the first of that name), or NULL. */
const char *raw_request_header(const raw_request *r, const char *lower_name);
/* The dialect's input for r: /rpc/<fn> or /<relation>, query string, headers, body.
 * Returns -1 when the path names neither. */
int raw_request_input(raw_request *r, gw_rest_input *in);
void raw_request_free(raw_request *r);

/* Adds one catalog row written as sql/schema.rows writes it (fields separated by
 * tabs; line is cut in place) to s. Returns gw_schema_add_row's result, -1 for a
 * line of more than 16 fields. */
int schema_add_line(gw_schema *s, char *line);

#endif
