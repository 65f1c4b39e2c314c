/*
 * httpsig.h — the RSA keys httpsig.c parses from PEM text and caches per backend
 * (in TopMemoryContext), for the other users of the pod's and its friends' keys
 * (envelope.c). A returned key belongs to the cache: never free it.
 */
#ifndef PGPOD_HTTPSIG_H
#define PGPOD_HTTPSIG_H

#include "postgres.h"

#include <openssl/evp.h>

/* A friend's RSA public key; ERROR 22023 when the text is not a PEM RSA public key. */
EVP_PKEY *httpsig_public_key(text *pem);
/* The pod's RSA private key; ERROR 22023 when the text is not a PEM RSA private key. */
EVP_PKEY *httpsig_private_key(text *pem);

#endif
