/*
 * pgpod.h — what the extension's C files share: settings defined in pgpod.c.
 */
#ifndef PGPOD_H
#define PGPOD_H

extern int	pgpod_password_opslimit;
extern int	pgpod_password_memlimit_kb;
extern bool pgpod_pubsub_announce;

/* crypto.c: raise the pending OpenSSL error as an ERROR with this SQLSTATE. */
extern void pgpod_openssl_error(int sqlstate, const char *doing) pg_attribute_noreturn();

/* chat_rules.c: a row of pod.<relname> by its unique index (one or two uuid or bigint
 * keys), seen by the active snapshot; a copy, or NULL. */
#include "access/htup.h"
#include "access/tupdesc.h"
/* json -> key (as_text: json ->> key) of a jsonb Datum; *isnull when absent */
extern Datum pgpod_jsonb_field(Datum json, const char *key, bool as_text, bool *isnull);
extern Oid pgpod_relid(const char *name);
extern HeapTuple pgpod_fetch_one(const char *relname, const char *indexname, Datum key1, Datum key2,
                                 TupleDesc *desc_out);

#endif
