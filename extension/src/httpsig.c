/*
 * httpsig.c — the RSA-SHA256 signatures of HTTP Signatures (draft-cavage, as PeerTube
 * and Mastodon send them): sign with the pod's private key, verify with a friend's
 * public key. The SQL in 70_federation.sql builds the signing string and the headers.
 * Parsed keys are cached per backend (PEM text → EVP_PKEY) so that signing a batch
 * does not re-parse the PEM each time; the caches live in TopMemoryContext.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

PG_FUNCTION_INFO_V1(rsa_sha256_sign);
PG_FUNCTION_INFO_V1(rsa_sha256_verify);

#define PUBLIC_KEY_CACHE_SIZE 32

typedef struct CachedKey
{
	char	   *pem;			/* in TopMemoryContext; NULL = empty slot */
	EVP_PKEY   *pkey;
} CachedKey;

static CachedKey private_key_cache;
static CachedKey public_key_cache[PUBLIC_KEY_CACHE_SIZE];
static int	public_key_next;	/* round-robin replacement */

/* Raises the first OpenSSL error of this thread with what we were doing. */
static void
httpsig_openssl_error(int sqlstate, const char *doing)
{
	unsigned long code = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(code, buf, sizeof(buf));
	ERR_clear_error();
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("could not %s", doing),
			 errdetail("OpenSSL: %s", code ? buf : "unknown error")));
}

/* Parses a PEM key (private or public); NULL when it is not one. */
static EVP_PKEY *
parse_pem(const char *pem, size_t len, bool private)
{
	BIO		   *bio = BIO_new_mem_buf(pem, (int) len);
	EVP_PKEY   *pkey;

	if (bio == NULL)
		return NULL;
	pkey = private ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
		: PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return pkey;
}

/* Replaces a cache slot with a freshly parsed key. */
static void
cache_store(CachedKey *slot, const char *pem, size_t len, EVP_PKEY *pkey)
{
	if (slot->pkey)
		EVP_PKEY_free(slot->pkey);
	if (slot->pem)
		pfree(slot->pem);
	slot->pem = MemoryContextAlloc(TopMemoryContext, len + 1);
	memcpy(slot->pem, pem, len);
	slot->pem[len] = '\0';
	slot->pkey = pkey;
}

static bool
cache_matches(const CachedKey *slot, const char *pem, size_t len)
{
	return slot->pem != NULL && strlen(slot->pem) == len && memcmp(slot->pem, pem, len) == 0;
}

/* The parsed private key of a PEM text, from the one-slot cache when it is the same. */
static EVP_PKEY *
private_key_from_text(text *pem)
{
	const char *data = VARDATA_ANY(pem);
	size_t		len = VARSIZE_ANY_EXHDR(pem);
	EVP_PKEY   *pkey;

	if (cache_matches(&private_key_cache, data, len))
		return private_key_cache.pkey;
	pkey = parse_pem(data, len, true);
	if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(pkey);
		ERR_clear_error();
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("private key is not a PEM RSA private key")));
	}
	cache_store(&private_key_cache, data, len, pkey);
	return pkey;
}

/* The parsed public key of a PEM text (cached); NULL when the text is not one. */
static EVP_PKEY *
public_key_from_text(text *pem)
{
	const char *data = VARDATA_ANY(pem);
	size_t		len = VARSIZE_ANY_EXHDR(pem);
	EVP_PKEY   *pkey;
	CachedKey  *slot;

	for (int i = 0; i < PUBLIC_KEY_CACHE_SIZE; i++)
		if (cache_matches(&public_key_cache[i], data, len))
			return public_key_cache[i].pkey;
	pkey = parse_pem(data, len, false);
	if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(pkey);
		ERR_clear_error();
		return NULL;
	}
	slot = &public_key_cache[public_key_next];
	public_key_next = (public_key_next + 1) % PUBLIC_KEY_CACHE_SIZE;
	cache_store(slot, data, len, pkey);
	return pkey;
}

/* Exported for envelope.c: a parsed RSA public key or a 22023 error. */
EVP_PKEY   *httpsig_public_key(text *pem);
EVP_PKEY   *httpsig_private_key(text *pem);

EVP_PKEY *
httpsig_public_key(text *pem)
{
	EVP_PKEY   *pkey = public_key_from_text(pem);

	if (pkey == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("public key is not a PEM RSA public key")));
	return pkey;
}

EVP_PKEY *
httpsig_private_key(text *pem)
{
	return private_key_from_text(pem);
}

/* pod.rsa_sha256_sign(data bytea, private_key text) → bytea: RSASSA-PKCS1-v1_5 over SHA-256. */
Datum
rsa_sha256_sign(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	text	   *pem = PG_GETARG_TEXT_PP(1);
	EVP_PKEY   *pkey = private_key_from_text(pem);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t		siglen = (size_t) EVP_PKEY_get_size(pkey);
	bytea	   *result = palloc(VARHDRSZ + siglen);

	if (ctx == NULL ||
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1 ||
		EVP_DigestSign(ctx, (unsigned char *) VARDATA(result), &siglen,
					   (unsigned char *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data)) != 1)
	{
		EVP_MD_CTX_free(ctx);
		httpsig_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "sign with RSA-SHA256");
	}
	EVP_MD_CTX_free(ctx);
	SET_VARSIZE(result, VARHDRSZ + siglen);
	PG_RETURN_BYTEA_P(result);
}

/*
 * pod.rsa_sha256_verify(data bytea, signature bytea, public_key text) → boolean.
 * False for a wrong signature; an unusable public key is an error (22023), since
 * that is the caller's data, not the signer's.
 */
Datum
rsa_sha256_verify(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	bytea	   *sig = PG_GETARG_BYTEA_PP(1);
	text	   *pem = PG_GETARG_TEXT_PP(2);
	EVP_PKEY   *pkey = httpsig_public_key(pem);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int			rc;

	if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1)
	{
		EVP_MD_CTX_free(ctx);
		httpsig_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "verify with RSA-SHA256");
	}
	rc = EVP_DigestVerify(ctx, (unsigned char *) VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig),
						  (unsigned char *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data));
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	PG_RETURN_BOOL(rc == 1);
}
