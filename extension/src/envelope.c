/*
 * envelope.c — the seed's encrypted bodies between pods: a fresh AES-256-GCM key per
 * message encrypts the body; the key is wrapped with the recipient's RSA-OAEP
 * (SHA-256, MGF1-SHA-256) public key. Keys come parsed and cached from httpsig.c.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "httpsig.h"
#include "pgpod.h"

PG_FUNCTION_INFO_V1(envelope_seal);
PG_FUNCTION_INFO_V1(envelope_open);

#define ENVELOPE_KEY_LEN 32
#define ENVELOPE_IV_LEN 12
#define ENVELOPE_TAG_LEN 16

static bytea *
new_bytea(size_t len)
{
	bytea *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	return b;
}

/* Sets RSA-OAEP with SHA-256 for both the digest and MGF1 on a pkey context. */
static bool
set_oaep_sha256(EVP_PKEY_CTX *pctx)
{
	return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	       EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256()) > 0 &&
	       EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
}

/*
 * pod.envelope_seal(plaintext bytea, public_key text)
 *   → (wrapped_key bytea, iv bytea, tag bytea, ciphertext bytea)
 */
Datum
envelope_seal(PG_FUNCTION_ARGS)
{
	bytea *plain = PG_GETARG_BYTEA_PP(0);
	EVP_PKEY *pkey = httpsig_public_key(PG_GETARG_TEXT_PP(1));
	unsigned char key[ENVELOPE_KEY_LEN];
	TupleDesc tupdesc;
	EVP_PKEY_CTX *pctx;
	EVP_CIPHER_CTX *cctx;
	size_t wrapped_len = 0;
	int len = 0, final_len = 0;
	bytea *wrapped, *iv, *tag, *cipher;
	Datum values[4];
	bool nulls[4] = {false, false, false, false};
	size_t plain_len = VARSIZE_ANY_EXHDR(plain);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "envelope_seal must return a composite type");
	if (plain_len > 64 * 1024 * 1024)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("envelope plaintext of %zu bytes exceeds 64 MB", plain_len)));

	iv = new_bytea(ENVELOPE_IV_LEN);
	tag = new_bytea(ENVELOPE_TAG_LEN);
	cipher = new_bytea(plain_len);
	if (RAND_bytes(key, sizeof(key)) != 1 ||
	    RAND_bytes((unsigned char *)VARDATA(iv), ENVELOPE_IV_LEN) != 1)
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "generate an envelope key");

	/* Wrap the key for the recipient. */
	pctx = EVP_PKEY_CTX_new(pkey, NULL);
	if (pctx == NULL || EVP_PKEY_encrypt_init(pctx) != 1 || !set_oaep_sha256(pctx) ||
	    EVP_PKEY_encrypt(pctx, NULL, &wrapped_len, key, sizeof(key)) != 1)
	{
		EVP_PKEY_CTX_free(pctx);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "wrap the envelope key");
	}
	wrapped = new_bytea(wrapped_len);
	if (EVP_PKEY_encrypt(pctx, (unsigned char *)VARDATA(wrapped), &wrapped_len, key, sizeof(key)) !=
	    1)
	{
		EVP_PKEY_CTX_free(pctx);
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "wrap the envelope key");
	}
	EVP_PKEY_CTX_free(pctx);
	SET_VARSIZE(wrapped, VARHDRSZ + wrapped_len);

	/* Encrypt the body. */
	cctx = EVP_CIPHER_CTX_new();
	if (cctx == NULL ||
	    EVP_EncryptInit_ex(cctx, EVP_aes_256_gcm(), NULL, key, (unsigned char *)VARDATA(iv)) != 1 ||
	    EVP_EncryptUpdate(cctx, (unsigned char *)VARDATA(cipher), &len,
	                      (unsigned char *)VARDATA_ANY(plain), (int)plain_len) != 1 ||
	    EVP_EncryptFinal_ex(cctx, (unsigned char *)VARDATA(cipher) + len, &final_len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_GET_TAG, ENVELOPE_TAG_LEN, VARDATA(tag)) != 1)
	{
		EVP_CIPHER_CTX_free(cctx);
		explicit_bzero(key, sizeof(key));
		pgpod_openssl_error(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "encrypt with AES-256-GCM");
	}
	EVP_CIPHER_CTX_free(cctx);
	explicit_bzero(key, sizeof(key));
	SET_VARSIZE(cipher, VARHDRSZ + len + final_len);

	values[0] = PointerGetDatum(wrapped);
	values[1] = PointerGetDatum(iv);
	values[2] = PointerGetDatum(tag);
	values[3] = PointerGetDatum(cipher);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * pod.envelope_open(wrapped_key bytea, iv bytea, tag bytea, ciphertext bytea,
 *                   private_key text) → bytea. A body that does not open (wrong key,
 * tampered ciphertext or tag) is 22023: the sender's data is bad.
 */
Datum
envelope_open(PG_FUNCTION_ARGS)
{
	bytea *wrapped = PG_GETARG_BYTEA_PP(0);
	bytea *iv = PG_GETARG_BYTEA_PP(1);
	bytea *tag = PG_GETARG_BYTEA_PP(2);
	bytea *cipher = PG_GETARG_BYTEA_PP(3);
	EVP_PKEY *pkey = httpsig_private_key(PG_GETARG_TEXT_PP(4));
	unsigned char key[512];
	size_t key_len = sizeof(key);
	EVP_PKEY_CTX *pctx;
	EVP_CIPHER_CTX *cctx;
	size_t cipher_len = VARSIZE_ANY_EXHDR(cipher);
	bytea *plain = new_bytea(cipher_len);
	int len = 0, final_len = 0;
	bool ok;

	if (VARSIZE_ANY_EXHDR(iv) != ENVELOPE_IV_LEN || VARSIZE_ANY_EXHDR(tag) != ENVELOPE_TAG_LEN)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("envelope iv must be %d bytes and tag %d bytes", ENVELOPE_IV_LEN,
		                       ENVELOPE_TAG_LEN)));

	pctx = EVP_PKEY_CTX_new(pkey, NULL);
	ok = pctx != NULL && EVP_PKEY_decrypt_init(pctx) == 1 && set_oaep_sha256(pctx) &&
	     EVP_PKEY_decrypt(pctx, key, &key_len, (unsigned char *)VARDATA_ANY(wrapped),
	                      VARSIZE_ANY_EXHDR(wrapped)) == 1 &&
	     key_len == ENVELOPE_KEY_LEN;
	EVP_PKEY_CTX_free(pctx);
	if (!ok)
	{
		ERR_clear_error();
		explicit_bzero(key, sizeof(key));
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("envelope key cannot be unwrapped with this pod's private key")));
	}

	cctx = EVP_CIPHER_CTX_new();
	ok = cctx != NULL &&
	     EVP_DecryptInit_ex(cctx, EVP_aes_256_gcm(), NULL, key, (unsigned char *)VARDATA_ANY(iv)) ==
	         1 &&
	     EVP_DecryptUpdate(cctx, (unsigned char *)VARDATA(plain), &len,
	                       (unsigned char *)VARDATA_ANY(cipher), (int)cipher_len) == 1 &&
	     EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_TAG, ENVELOPE_TAG_LEN, VARDATA_ANY(tag)) == 1 &&
	     EVP_DecryptFinal_ex(cctx, (unsigned char *)VARDATA(plain) + len, &final_len) == 1;
	EVP_CIPHER_CTX_free(cctx);
	explicit_bzero(key, sizeof(key));
	if (!ok)
	{
		ERR_clear_error();
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("envelope does not authenticate"),
		         errdetail(
		             "The ciphertext or its tag was altered, or it was sealed for another key.")));
	}
	SET_VARSIZE(plain, VARHDRSZ + len + final_len);
	PG_RETURN_BYTEA_P(plain);
}
