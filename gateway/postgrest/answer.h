/* An HTTP answer as the dialect makes it, before anything is written: the status,
 * the Content-Type, the other header lines and the body. The pure functions of
 * response.h and error.h fill one; the handler sends it (gw_respond_answer,
 * error_respond.c) and logs its warnings. Header-only: a type and its life. */
#ifndef GW_ANSWER_H
#define GW_ANSWER_H
#include <stddef.h>

#include "buf.h"

typedef struct gw_answer
{
	int status;
	const char *content_type; /* NULL: none */
	gw_buf headers;           /* header lines, each ending with CRLF */
	const char *body;         /* NULL or len bytes: in own, or in the caller's result */
	size_t body_len;
	gw_buf own;      /* a body made by the answer itself */
	gw_buf warnings; /* lines for the log (WARN), each ending with \n */
	int warn_target; /* prefix each warning with the request's method and path */
} gw_answer;

static inline void
gw_answer_init(gw_answer *a)
{
	a->status = 0;
	a->content_type = NULL;
	gw_buf_init(&a->headers);
	a->body = NULL;
	a->body_len = 0;
	gw_buf_init(&a->own);
	gw_buf_init(&a->warnings);
	a->warn_target = 0;
}

static inline void
gw_answer_free(gw_answer *a)
{
	gw_buf_free(&a->headers);
	gw_buf_free(&a->own);
	gw_buf_free(&a->warnings);
}

#endif
