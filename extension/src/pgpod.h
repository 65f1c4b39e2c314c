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

#endif
