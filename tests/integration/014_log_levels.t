#!/bin/bash
# PGPOD_LOG_LEVEL changes what every daemon logs: the gateway, federator, transcoder,
# seeder, tracker and livechat all log through workers/lib (wk_log). Each is started
# three times (debug, unset = info, error) beside the supervised ones, on ports of
# the test's own, until it tells systemd's notify socket READY=1 (it connected,
# listened and is serving), then stopped with SIGTERM; what it wrote is compared:
# debug shows debug lines and info lines, the default info lines but no debug, error
# nothing below error.
. "$(dirname "$0")/tap.sh"
top=${PGPOD_TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
daemons=(gateway federator transcoder seeder tracker livechat)
plan $((${#daemons[@]} * 6))

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bin() {
  case $1 in
    gateway) echo "${PGPOD_GATEWAY_BIN:-$top/gateway/pgpod-gateway}" ;;
    federator) echo "${PGPOD_FEDERATOR_BIN:-$top/workers/federator/pgpod-federator}" ;;
    transcoder) echo "${PGPOD_TRANSCODER_BIN:-$top/workers/transcoder/pgpod-transcoder}" ;;
    seeder) echo "${PGPOD_SEEDER_BIN:-$top/workers/seeder/pgpod-seeder}" ;;
    tracker) echo "${PGPOD_TRACKER_BIN:-$top/workers/tracker/pgpod-tracker}" ;;
    livechat) echo "${PGPOD_LIVECHAT_BIN:-$top/workers/livechat/pgpod-livechat}" ;;
  esac
}
role() {
  case $1 in
    gateway) echo pgpod_authenticator ;;
    *) echo "pgpod_$1" ;;
  esac
}
# Ports of this test's own (the supervised daemons hold the usual ones).
base=${PGPOD_HTTP_PORT:?}
run() { # run DAEMON LEVEL ("" = unset): its output in $dir/DAEMON.LEVEL.log
  local d=$1 level=$2 log="$dir/$1.${2:-default}.log" setting=(-u PGPOD_LOG_LEVEL)
  [[ -n $level ]] && setting=("PGPOD_LOG_LEVEL=$level")
  env "${setting[@]}" \
    PGUSER="$(role "$d")" PGPOD_HTTP_PORT=$((base + 47)) PGPOD_GATEWAY_WORKERS=1 PGPOD_GATEWAY_POOL=1 \
    PGPOD_TRACKER_PORT=$((base + 48)) PGPOD_PEER_PORT=$((base + 49)) \
    PGPOD_FEDERATOR_ID="federator@log-levels-$$" PGPOD_STORE_DIR="${PGPOD_STORE_DIR:-$PGPOD_DIR/store}" \
    python3 "$top/tests/integration/lib/until_ready.py" "$log" "$(bin "$d")"
}
lines() { grep -cE "\] $2: " "$1"; } # lines LOG LEVEL-NAME

for d in "${daemons[@]}"; do
  run "$d" debug; ok $? "$d: ready (READY=1) and stopped with PGPOD_LOG_LEVEL=debug" ||
    sed 's/^/#   /' "$dir/$d.debug.log"
  n_debug=$(lines "$dir/$d.debug.log" debug) n_info=$(lines "$dir/$d.debug.log" info)
  ((n_debug > 0 && n_info > 0)); ok $? "$d: debug logs debug lines ($n_debug) and info lines ($n_info)"

  run "$d" ""; ok $? "$d: ready and stopped without PGPOD_LOG_LEVEL"
  n_debug=$(lines "$dir/$d.default.log" debug) n_info=$(lines "$dir/$d.default.log" info)
  ((n_debug == 0 && n_info > 0)); ok $? "$d: the default (info) logs info lines ($n_info) and no debug ($n_debug)"

  run "$d" error; ok $? "$d: ready and stopped with PGPOD_LOG_LEVEL=error"
  below=$(grep -cE '\] (debug|info|warning): ' "$dir/$d.error.log")
  is "$below" 0 "$d: error logs nothing below error" || sed 's/^/#   /' "$dir/$d.error.log"
done
done_testing
