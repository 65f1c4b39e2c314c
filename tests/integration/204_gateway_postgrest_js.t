#!/bin/bash
# The gateway with the real @supabase/postgrest-js client (tests/js/gateway): installs
# the locked dependencies with npm ci, loads the gateway fixture, signs a user token,
# and runs the client's checks, which print TAP.
set -uo pipefail
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
dir=$top/tests/js/gateway
if ! out=$(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
  echo "1..1"
  echo "not ok 1 - npm ci in tests/js/gateway"
  printf '%s\n' "$out" | sed 's/^/# /'
  exit 1
fi
token=$(perl -I"$top/gateway/testdata" -MGwTest -e 'fixture(); print token({ role => "pgpod_user", sub => "11111111-1111-1111-1111-111111111111", exp => time + 600 })') || {
  echo "1..1"; echo "not ok 1 - fixture and token"; exit 1; }
cd "$dir" && GW_USER_TOKEN=$token exec node postgrest-js.test.mjs
