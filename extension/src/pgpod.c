/*
 * pgpod.c — the extension's entry point: module magic, library initialisation and
 * the GUCs every other file reads (declared in pgpod.h).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include <sodium.h>

#include "pgpod.h"

PG_MODULE_MAGIC;

int			pgpod_password_opslimit = 2;	/* libsodium's INTERACTIVE */
int			pgpod_password_memlimit_kb = 65536;
bool		pgpod_pubsub_announce = true;

void		_PG_init(void);

/* Library load: libsodium needs one call before use; then the settings. */
void
_PG_init(void)
{
	if (sodium_init() < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libsodium")));

	DefineCustomIntVariable("pgpod.password_opslimit",
							"Argon2id passes used when hashing a new password.",
							NULL, &pgpod_password_opslimit,
							2, 1, 64, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pgpod.password_memlimit",
							"Argon2id memory used when hashing a new password.",
							"Lower it only for tests; the default is libsodium's interactive limit.",
							&pgpod_password_memlimit_kb,
							65536, 8, 4 * 1024 * 1024, PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("pgpod.pubsub_announce",
							 "Announce changes of this pod's own pubsub nodes to friends.",
							 "Turned off while an upgrade fills the cache from existing data.",
							 &pgpod_pubsub_announce, true, PGC_SUSET, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgpod");
}
