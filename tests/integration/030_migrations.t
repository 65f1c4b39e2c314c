#!/bin/bash
# The migration tool: a fresh install of the current version and the oldest released
# version walked up to it step by step give the same schema; a current database is
# left alone; a database without the extension gets roles and CREATE EXTENSION.
. "$(dirname "$0")/tap.sh"
fresh=pgpod_mig_fresh; walked=pgpod_mig_walked
work=$(mktemp -d /tmp/pgpod-mig.XXXXXX)
trap 'dropdb --if-exists $fresh; dropdb --if-exists $walked; rm -rf "$work"' EXIT
plan 5
mig=$PGPOD_TOP/migrations/pgpod-migrate

current=$(q -c "SELECT default_version FROM pg_available_extensions WHERE name = 'pgpod'")
oldest=$(q -c "SELECT version FROM pg_available_extension_versions WHERE name = 'pgpod' ORDER BY string_to_array(version, '.')::int[] LIMIT 1")
echo "# current $current, oldest $oldest"

"$mig" $fresh 2>"$work/fresh.log"
ok $? "fresh database: created and installed"
ok "$(grep -q "installing extension pgpod $current" "$work/fresh.log"; echo $?)" "fresh install says what it does"
"$mig" $walked "$oldest" 2>/dev/null && "$mig" $walked 2>"$work/walk.log"
ok $? "oldest version ($oldest) walked up to $current"
# The extension's members and their definitions (lib/extension_fingerprint.sql), then
# the rest of the schema as pg_dump sees it (\restrict lines carry a random key).
dump() {
  psql -X -At -v ON_ERROR_STOP=1 -d "$1" -f "$PGPOD_TOP/tests/integration/lib/extension_fingerprint.sql"
  pg_dump --schema-only --no-owner -d "$1" | grep -v -e '^--' -e '^\\restrict' -e '^\\unrestrict' | sed '/^$/d'
}
diff <(dump $fresh) <(dump $walked) >"$work/diff"
ok $? "fresh and walked schemas are identical"
[[ -s $work/diff ]] && head -40 "$work/diff" | sed 's/^/# /' >&2
"$mig" $fresh 2>"$work/again.log"
ok "$(grep -q "is current" "$work/again.log"; echo $?)" "a current database is left alone"
done_testing
