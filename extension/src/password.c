/*
 * password.c — password hashing with Argon2id (libsodium's crypto_pwhash), a
 * memory-hard KDF. The encoded string carries its own salt and cost parameters, so
 * changing the settings never invalidates stored hashes.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include <sodium.h>

#include "pgpod.h"

PG_FUNCTION_INFO_V1(password_hash);
PG_FUNCTION_INFO_V1(password_verify);

/* pod.password_hash(password text) → text: an encoded $argon2id$ string. */
Datum
password_hash(PG_FUNCTION_ARGS)
{
	text	   *password = PG_GETARG_TEXT_PP(0);
	char		encoded[crypto_pwhash_STRBYTES];

	if (VARSIZE_ANY_EXHDR(password) < 8)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("password is too short"),
				 errdetail("A password needs at least 8 characters.")));
	if (VARSIZE_ANY_EXHDR(password) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("password is too long"),
				 errdetail("A password has at most 1024 bytes.")));

	if (crypto_pwhash_str_alg(encoded, VARDATA_ANY(password), VARSIZE_ANY_EXHDR(password),
							  (unsigned long long) pgpod_password_opslimit,
							  (size_t) pgpod_password_memlimit_kb * 1024,
							  crypto_pwhash_ALG_ARGON2ID13) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not hash password"),
				 errdetail("Argon2id could not allocate %d kB.", pgpod_password_memlimit_kb)));

	PG_RETURN_TEXT_P(cstring_to_text(encoded));
}

/* pod.password_verify(password text, encoded text) → boolean, constant-time. */
Datum
password_verify(PG_FUNCTION_ARGS)
{
	text	   *password = PG_GETARG_TEXT_PP(0);
	char	   *encoded = text_to_cstring(PG_GETARG_TEXT_PP(1));

	if (strlen(encoded) >= crypto_pwhash_STRBYTES)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(crypto_pwhash_str_verify(encoded, VARDATA_ANY(password),
											VARSIZE_ANY_EXHDR(password)) == 0);
}
