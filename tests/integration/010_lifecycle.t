#!/bin/bash
# make start / make stop on a second instance: .pgpod/env works, the schema and roles
# are there, the migration step is idempotent, stop leaves no process, data survives.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
dir=$(mktemp -d /tmp/pgpod-life.XXXXXX); chmod 755 "$dir"
port=$((PGPOD_PG_PORT + 11))
export PGPOD_DIR=$dir PGPOD_PG_PORT=$port PGPOD_HTTP_PORT=$((PGPOD_HTTP_PORT + 11)) PGPOD_DB=pgpod
export PGPOD_TRACKER_PORT=$((PGPOD_HTTP_PORT + 14)) PGPOD_PEER_PORT=$((PGPOD_HTTP_PORT + 17)) # its own, not the instance's
unset PGHOST PGPORT PGDATABASE PGUSER
trap 'make -s -C "$top" stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
plan 12

make -s -C "$top" start >"$dir/start1.log" 2>&1
ok $? "make start"
ok "$([[ -f $dir/env ]]; echo $?)" "make start writes .pgpod/env"
env_vars=$(grep -o 'export [A-Z_]*' "$dir/env" | awk '{print $2}' | LC_ALL=C sort | tr '\n' ' ')
is "$env_vars" "PGDATABASE PGHOST PGPOD_TRACKER_PORT PGPOD_TRACKER_URL PGPOD_URL PGPORT PGUSER " ".pgpod/env exports PGHOST PGPORT PGDATABASE PGUSER PGPOD_URL PGPOD_TRACKER_PORT PGPOD_TRACKER_URL"
{
  . "$dir/env"
  is "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pgpod'")" "$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$PGPOD_TOP/extension/pgpod.control")" ". .pgpod/env && psql sees the extension"
  is "$(q -c "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname IN ('api', 'pod')")" "api,pod" "schemas pod and api"
  is "$(q -c "SELECT string_agg(rolname, ' ' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'pgpod\_%'")" \
    "pgpod_admin pgpod_anon pgpod_authenticator pgpod_federator pgpod_livechat pgpod_seeder pgpod_tracker pgpod_transcoder pgpod_user pgpod_worker" "the pgpod roles (and the daemons' logins)"
  is "$(q -c "SELECT rolcanlogin AND NOT rolinherit FROM pg_roles WHERE rolname = 'pgpod_authenticator'")" "t" "authenticator is LOGIN NOINHERIT"
  q -c "SET pgpod.password_memlimit = '8MB'; SELECT pod.register('keep@life.test', 'keep me please')" >/dev/null
  is "$(q -w -h 127.0.0.1 -c 'SELECT 1' 2>&1 | grep -o 'no password supplied')" "no password supplied" \
    "loopback TCP wants a password (socket is the trusted path)"
  unset PGHOST PGPORT PGDATABASE PGUSER
}
make -s -C "$top" stop >/dev/null 2>&1
pids=$(pgrep -f -- "-D $dir/data" ; pgrep -f "$dir/data")
is "$pids" "" "make stop leaves no process"
make -s -C "$top" start >"$dir/start2.log" 2>&1
ok "$(grep -q 'is current' "$dir/start2.log"; echo $?)" "second start: the migration tool finds the extension current"
. "$dir/env"
is "$(q -c "SELECT count(*) FROM pod.users WHERE email = 'keep@life.test'")" "1" "data survives stop and start"
is "$(q -c "SELECT count(*) FROM pod.identity")" "1" "the identity is made once"
done_testing
