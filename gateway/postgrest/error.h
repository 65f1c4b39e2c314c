/* One error module for the gateway: the PostgREST error (status, code, message,
 * details, hint), PostgreSQL's SQLSTATE -> HTTP status map, a pool job's outcome
 * as an error, and the JSON answer. The map follows PostgREST's documented table,
 * but for P0002 (no_data_found, 404: what pgpod's functions raise for a row the
 * caller may not see); an insufficient privilege error is 401 for the anonymous
 * role and 403 for a signed-in one. */
#ifndef GW_ERROR_H
#define GW_ERROR_H
#include "answer.h"

typedef struct gw_error
{
	int status;
	char code[16];
	char message[512];
	char details[1024];
	int details_json; /* details is a JSON value to send as it is (PGRST201) */
	char hint[512];
} gw_error;

void gw_error_set(gw_error *e, int status, const char *code, const char *message,
                  const char *details, const char *hint);
/* Maps a PostgreSQL error to PostgREST's status and JSON body. */
void gw_error_from_pg(const char *sqlstate, const char *message, const char *detail,
                      const char *hint, int anonymous, gw_error *e);

/* The error as PostgREST's JSON body ({"code","details","hint","message"}) in out
 * (initialised by the caller), after the header lines of extra (NULL: none), with
 * Retry-After for a 429/503 whose details say so. Pure. */
void gw_error_answer(const gw_error *e, const char *extra, gw_answer *out);

/* The rest needs the server (pool and HTTP types); the pure parts above do not. */
struct gw_pg_job;
struct gw_req;
/* When the job got no answer (503 PGRST001, 504 PGRST003 on a timeout) or an error
 * from PostgreSQL (PostgREST's mapping), fills e and returns 1; else 0. */
int gw_error_from_job(const struct gw_pg_job *job, int anonymous, gw_error *e);
/* Sends gw_error_answer's answer. */
void gw_respond_error(struct gw_req *req, const gw_error *e, const char *extra_headers);
void gw_respond_simple_error(struct gw_req *req, int status, const char *code, const char *message);
/* Sends an answer (its warnings are the caller's to log). */
void gw_respond_answer(struct gw_req *req, const gw_answer *a);

#endif
