#!/bin/bash
# Answers given before the body is read (401 no token, 413 over PGPOD_UPLOAD_MAX /
# PGPOD_BODY_MAX, 400 bad filename) reach clients that send their whole body
# without Expect: 100-continue: Python's http.client and requests (/usr/bin/python3)
# and Node's fetch. The gateway shuts down writing and drains before it closes
# (lingering close); closing with unread data would reset the connection and the
# answer with it.
. "$(dirname "$0")/tap.sh"
top=$PGPOD_TOP
lib=$top/tests/integration/lib
port=$((PGPOD_HTTP_PORT + 22))
base=http://127.0.0.1:$port
dir=$(mktemp -d /tmp/pgpod-early.XXXXXX)
gw=
cleanup() { [[ -n $gw ]] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
plan 5

psql -X -q -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -f "$top/gateway/testdata/fixture.sql" >/dev/null
PGPOD_HTTP_PORT=$port PGPOD_GATEWAY_WORKERS=1 PGPOD_GATEWAY_POOL=2 PGPOD_UPLOAD_MAX=1048576 PGPOD_BODY_MAX=1048576 \
  "${PGPOD_GATEWAY_BIN:-$top/gateway/pgpod-gateway}" >"$dir/gateway.log" 2>&1 &
gw=$!
wait_for 20 sh -c "curl -sf $base/gw_items?limit=1 | grep -q id"
ok $? "a gateway with PGPOD_UPLOAD_MAX=PGPOD_BODY_MAX=1 MiB serves on $base"

email="early-$$-$RANDOM@example.org"
curl -s -X POST "$base/rpc/register" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"correct horse battery\"}" >/dev/null
token=$(curl -s -X POST "$base/rpc/login" -H 'Content-Type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"correct horse battery\"}" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[[ -n $token ]]
ok $? "a user logged in"

/usr/bin/python3 "$lib/early_answers.py" "$base" "$token" $((8 << 20)) 5 >"$dir/py.tap" 2>&1 \
  || { sed 's/^/# /' "$dir/py.tap" >&2; false; }
ok $? "Python http.client and requests get every early answer (8 MiB bodies)"
node "$lib/early_answers.mjs" "$base" "$token" $((8 << 20)) 5 >"$dir/node.tap" 2>&1 \
  || { sed 's/^/# /' "$dir/node.tap" >&2; false; }
ok $? "Node's fetch gets every early answer (8 MiB bodies)"
[[ -z $(ls "$PGPOD_DIR/store/tmp" 2>/dev/null) ]]
ok $? "no temporary upload file is left"
done_testing
