/*
 * pgpod.h — what the extension's C files share: settings defined in pgpod.c.
 */
#ifndef PGPOD_H
#define PGPOD_H

extern int	pgpod_password_opslimit;
extern int	pgpod_password_memlimit_kb;

#endif
