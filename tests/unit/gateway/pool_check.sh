#!/bin/bash
# Runs the pool's unit test (pool_check.c, the binary given as $1) against a PostgreSQL
# of its own: initdb in a temporary directory (as the unprivileged postgres user when
# run as root), the server on a Unix socket only (no TCP), stopped and removed on exit.
set -euo pipefail
bin=$(realpath "$1")
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$($PG_CONFIG --bindir)
dir=$(mktemp -d /tmp/pool_check.XXXXXX)
as=()
if [[ $(id -u) == 0 ]]; then
  chown postgres "$dir"
  as=(runuser -u postgres --)
fi
pgctl="${as[*]} $bindir/pg_ctl -D $dir/data -l $dir/log"
cleanup() {
  $pgctl -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"${as[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
opts="-c listen_addresses= -k $dir -p 5432 -c fsync=off"
$pgctl -o "$opts" -w start >/dev/null
export PGHOST=$dir PGPORT=5432 PGDATABASE=postgres PGUSER=postgres
export POOL_CHECK_STOP="$pgctl -m immediate -w stop >/dev/null"
export POOL_CHECK_START="$pgctl -o '$opts' -w start >/dev/null"
cd "$dir"
"$bin"
