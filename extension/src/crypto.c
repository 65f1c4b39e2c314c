/*
 * crypto.c — the primitives pgpod's SQL builds on: HMAC-SHA256 (JWTs), strong random
 * bytes (secrets) and RSA key pairs (the pod's identity), all from OpenSSL. Key
 * material is handled in OpenSSL's own buffers and copied once into palloc'd results.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "pgpod.h"

PG_FUNCTION_INFO_V1(hmac_sha256);
PG_FUNCTION_INFO_V1(random_bytes);
PG_FUNCTION_INFO_V1(rsa_generate_keypair);

/* Raises the first OpenSSL error of this thread with what we were doing (shared by
 * every file that calls OpenSSL; declared in pgpod.h). */
void
pgpod_openssl_error(int sqlstate, const char *doing)
{
	unsigned long code = ERR_get_error();
	char		buf[256];

	ERR_error_string_n(code, buf, sizeof(buf));
	ERR_clear_error();
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("could not %s", doing),
			 errdetail("OpenSSL: %s", code ? buf : "unknown error")));
	pg_unreachable();
}

/* pod.hmac_sha256(data bytea, key bytea) → bytea (32 bytes). */
Datum
hmac_sha256(PG_FUNCTION_ARGS)
{
	bytea	   *data = PG_GETARG_BYTEA_PP(0);
	bytea	   *key = PG_GETARG_BYTEA_PP(1);
	bytea	   *result = palloc(VARHDRSZ + EVP_MAX_MD_SIZE);
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
			 (unsigned char *) VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data),
			 (unsigned char *) VARDATA(result), &len) == NULL)
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "compute HMAC-SHA256");
	SET_VARSIZE(result, VARHDRSZ + len);
	PG_RETURN_BYTEA_P(result);
}

/* pod.random_bytes(n int) → bytea from the CSPRNG, 1..1024 bytes. */
Datum
random_bytes(PG_FUNCTION_ARGS)
{
	int32		n = PG_GETARG_INT32(0);
	bytea	   *result;

	if (n < 1 || n > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("random_bytes length must be between 1 and 1024, not %d", n)));
	result = palloc(VARHDRSZ + n);
	if (RAND_bytes((unsigned char *) VARDATA(result), n) != 1)
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "generate random bytes");
	SET_VARSIZE(result, VARHDRSZ + n);
	PG_RETURN_BYTEA_P(result);
}

/* Copies a memory BIO's contents into a palloc'd text. */
static text *
bio_to_text(BIO *bio)
{
	char	   *mem;
	long		len = BIO_get_mem_data(bio, &mem);

	return cstring_to_text_with_len(mem, (int) len);
}

/*
 * pod.rsa_generate_keypair(bits int) → (private_key text, public_key text), PEM
 * (PKCS#8 and SubjectPublicKeyInfo, what HTTP Signature peers expect).
 */
Datum
rsa_generate_keypair(PG_FUNCTION_ARGS)
{
	int32		bits = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	EVP_PKEY   *pkey = NULL;
	BIO		   *priv = NULL;
	BIO		   *pub = NULL;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (bits < 2048 || bits > 8192 || bits % 1024 != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("RSA key size must be 2048, 3072, ... 8192 bits, not %d", bits)));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "rsa_generate_keypair must return a composite type");

	pkey = EVP_RSA_gen((unsigned int) bits);
	if (pkey == NULL)
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "generate an RSA key pair");
	priv = BIO_new(BIO_s_mem());
	pub = BIO_new(BIO_s_mem());
	if (priv == NULL || pub == NULL ||
		!PEM_write_bio_PrivateKey(priv, pkey, NULL, NULL, 0, NULL, NULL) ||
		!PEM_write_bio_PUBKEY(pub, pkey))
	{
		BIO_free(priv);
		BIO_free(pub);
		EVP_PKEY_free(pkey);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "encode the RSA key pair as PEM");
	}
	values[0] = PointerGetDatum(bio_to_text(priv));
	values[1] = PointerGetDatum(bio_to_text(pub));
	BIO_free(priv);
	BIO_free(pub);
	EVP_PKEY_free(pkey);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
