/*
 * httpsig.c — the RSA-SHA256 signatures of HTTP Signatures (draft-cavage, as PeerTube
 * and Mastodon send them): sign with the pod's private key, verify with a friend's
 * public key. The SQL in 70_federation.sql builds the signing string and the headers.
 * Parsed keys are cached per backend (PEM text → EVP_PKEY) so that signing a batch
 * does not re-parse the PEM each time; the caches live in TopMemoryContext.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/base64.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "httpsig.h"
#include "pgpod.h"

PG_FUNCTION_INFO_V1(rsa_sha256_sign);
PG_FUNCTION_INFO_V1(rsa_sha256_verify);
PG_FUNCTION_INFO_V1(httpsig_sign_request);

#define PUBLIC_KEY_CACHE_SIZE 32

typedef struct CachedKey
{
	char *pem; /* in TopMemoryContext; NULL = empty slot */
	EVP_PKEY *pkey;
} CachedKey;

static CachedKey private_key_cache;
static CachedKey public_key_cache[PUBLIC_KEY_CACHE_SIZE];
static int public_key_next; /* round-robin replacement */

/* Parses a PEM key (private or public); NULL when it is not one. */
static EVP_PKEY *
parse_pem(const char *pem, size_t len, bool private)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pkey;

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
	size_t len = VARSIZE_ANY_EXHDR(pem);
	EVP_PKEY *pkey;

	if (cache_matches(&private_key_cache, data, len))
		return private_key_cache.pkey;
	pkey = parse_pem(data, len, true);
	if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
	{
		EVP_PKEY_free(pkey);
		ERR_clear_error();
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
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
	size_t len = VARSIZE_ANY_EXHDR(pem);
	EVP_PKEY *pkey;
	CachedKey *slot;

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

EVP_PKEY *
httpsig_public_key(text *pem)
{
	EVP_PKEY *pkey = public_key_from_text(pem);

	if (pkey == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
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
	bytea *data = PG_GETARG_BYTEA_PP(0);
	text *pem = PG_GETARG_TEXT_PP(1);
	EVP_PKEY *pkey = private_key_from_text(pem);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t siglen = (size_t)EVP_PKEY_get_size(pkey);
	bytea *result = palloc(VARHDRSZ + siglen);

	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(ctx, (unsigned char *)VARDATA(result), &siglen,
	                   (unsigned char *)VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data)) != 1)
	{
		EVP_MD_CTX_free(ctx);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "sign with RSA-SHA256");
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
	bytea *data = PG_GETARG_BYTEA_PP(0);
	bytea *sig = PG_GETARG_BYTEA_PP(1);
	text *pem = PG_GETARG_TEXT_PP(2);
	EVP_PKEY *pkey = httpsig_public_key(pem);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int rc;

	if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1)
	{
		EVP_MD_CTX_free(ctx);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "verify with RSA-SHA256");
	}
	rc = EVP_DigestVerify(ctx, (unsigned char *)VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig),
	                      (unsigned char *)VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data));
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	PG_RETURN_BOOL(rc == 1);
}

/* Base64 of len bytes, palloc'd and NUL-terminated. */
static char *
base64(const unsigned char *data, int len)
{
	char *out = palloc(pg_b64_enc_len(len) + 1);
	int n = pg_b64_encode((const char *)data, len, out, pg_b64_enc_len(len));

	if (n < 0)
		elog(ERROR, "base64 encoding failed");
	out[n] = '\0';
	return out;
}

/* RFC 7231 IMF-fixdate of a timestamptz, e.g. "Mon, 23 Nov 2026 14:15:03 GMT". */
static char *
imf_fixdate(TimestampTz at)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct pg_tm tm;
	fsec_t fsec;

	if (timestamp2tm(at, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR, (errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
		                errmsg("date out of range for an HTTP Date header")));
	return psprintf("%s, %02d %s %04d %02d:%02d:%02d GMT",
	                days[j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday))], tm.tm_mday,
	                months[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * pod.httpsig_sign_request(method text, url text, body text, at timestamptz,
 *                          key_id text, private_key text) → text[]
 * The header lines of a signed request: Host, Date, Digest, Content-Type and
 * Signature over "(request-target) host date digest" (rsa-sha256). What the SQL
 * version did row by row, in one call: signing is the federator's hot path.
 */
Datum
httpsig_sign_request(PG_FUNCTION_ARGS)
{
	char *method = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	text *body = PG_GETARG_TEXT_PP(2);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(3);
	char *key_id = text_to_cstring(PG_GETARG_TEXT_PP(4));
	EVP_PKEY *pkey = private_key_from_text(PG_GETARG_TEXT_PP(5));
	const char *host;
	const char *path;
	char *host_copy;
	unsigned char digest[32];
	unsigned int digest_len = 0;
	char *date;
	char *digest_header;
	StringInfoData signing;
	EVP_MD_CTX *ctx;
	size_t siglen = (size_t)EVP_PKEY_get_size(pkey);
	unsigned char *sig = palloc(siglen);
	Datum lines[5];

	if (strncmp(url, "http://", 7) == 0)
		host = url + 7;
	else if (strncmp(url, "https://", 8) == 0)
		host = url + 8;
	else
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("not an http(s) URL: \"%s\"", url)));
	path = strchr(host, '/');
	host_copy = path ? pnstrdup(host, path - host) : pstrdup(host);
	if (*host_copy == '\0' || strpbrk(host_copy, " ?#\r\n") != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("not an http(s) URL: \"%s\"", url)));
	if (path == NULL)
		path = "/";
	if (strpbrk(path, " \r\n#") != NULL || strpbrk(method, " \r\n") != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("method and URL must not hold spaces or line breaks")));

	if (EVP_Digest(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body), digest, &digest_len, EVP_sha256(),
	               NULL) != 1)
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "compute SHA-256");
	digest_header = psprintf("SHA-256=%s", base64(digest, (int)digest_len));
	date = imf_fixdate(at);

	initStringInfo(&signing);
	appendStringInfoString(&signing, "(request-target): ");
	for (const char *m = method; *m; m++)
		appendStringInfoChar(&signing, pg_tolower((unsigned char)*m));
	appendStringInfo(&signing, " %s\nhost: %s\ndate: %s\ndigest: %s", path, host_copy, date,
	                 digest_header);

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)signing.data, signing.len) != 1)
	{
		EVP_MD_CTX_free(ctx);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "sign with RSA-SHA256");
	}
	EVP_MD_CTX_free(ctx);

	lines[0] = CStringGetTextDatum(psprintf("Host: %s", host_copy));
	lines[1] = CStringGetTextDatum(psprintf("Date: %s", date));
	lines[2] = CStringGetTextDatum(psprintf("Digest: %s", digest_header));
	lines[3] = CStringGetTextDatum("Content-Type: application/json");
	lines[4] = CStringGetTextDatum(
	    psprintf("Signature: keyId=\"%s\",algorithm=\"rsa-sha256\","
	             "headers=\"(request-target) host date digest\",signature=\"%s\"",
	             key_id, base64(sig, (int)siglen)));
	PG_RETURN_ARRAYTYPE_P(construct_array(lines, 5, TEXTOID, -1, false, TYPALIGN_INT));
}
